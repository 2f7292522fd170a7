/* Causal kernel linear attention, chunk form. The sequence is cut into
 * chunks of C tokens (the last one may be shorter). For a chunk with rows
 * Q̂ = c·φ(Q), K̃ = φ(K), V and the state (S, z) before it:
 *
 *   A   = (Q̂ K̃ᵀ) ⊙ M               M lower triangular, diagonal included
 *   Num = Q̂ S + A V                 inter-chunk + intra-chunk
 *   den = Q̂ z + A 1 + ε             (normalised)
 *   O   = Num / den  (row-wise), or Num
 *   S  += K̃ᵀ V,  z += K̃ᵀ 1
 *
 * All chunk matrices live in per-thread scratch of O(C² + C(K+V) + KV)
 * floats; the state is updated token after token in the order the recurrent
 * form uses, so the two forms' states agree closely.
 *
 * Backward, chunk by chunk (formulas in linear_attn.h):
 *   forward sweep, with (S, z) before the chunk:
 *     G = dO / den, δ = -rowsum(dO ⊙ O) / den   (G = dO, δ = 0 unnormalised)
 *     dA  = (G Vᵀ + δ 1ᵀ) ⊙ M
 *     dQ̂  = G Sᵀ + δ zᵀ + dA K̃
 *   reverse sweep, with (dS, dz) the gradient of the state after the chunk
 *   (d_final_state, d_final_norm for the last one):
 *     dK̃ = dAᵀ Q̂ + V dSᵀ + 1 dzᵀ,   dV = Aᵀ G + K̃ dS
 *     dS += Q̂ᵀ G,   dz += Q̂ᵀ δ
 *   and d_initial_state, d_initial_norm = (dS, dz) after the first chunk.
 * The forward sweep needs only the running state, the reverse sweep only
 * the running dS, so no per-chunk state is stored. */
#include "linear_attn.h"

#include <string.h>

enum { C_S, C_Z, C_QH, C_KH, C_VB, C_A, C_NUM, C_DEN, C_G, C_DA, C_DQH, C_DVB, C_DD };

void la__lin_chunk_layout(const la__lin_job *j, int backward, la__bump *b, float **p) {
    const size_t K = (size_t)j->K, V = (size_t)j->V, C = (size_t)j->chunk;
    p[C_S] = la__take(b, la__mul(K, V));
    p[C_Z] = la__take(b, K);
    p[C_QH] = la__take(b, la__mul(C, K));
    p[C_KH] = la__take(b, la__mul(C, K));
    p[C_VB] = la__take(b, la__mul(C, V));
    p[C_A] = la__take(b, la__mul(C, C));
    p[C_NUM] = la__take(b, la__mul(C, V));
    p[C_DEN] = la__take(b, C);
    if (!backward) return;
    /* S, z hold dS, dz in the reverse sweep */
    p[C_G] = la__take(b, la__mul(C, V));
    p[C_DA] = la__take(b, la__mul(C, C));
    p[C_DQH] = la__take(b, la__mul(C, K));
    p[C_DVB] = la__take(b, la__mul(C, V));
    p[C_DD] = la__take(b, C);
}

/* Q̂, K̃ and V rows of the chunk [t0, t0+L) into contiguous blocks, and the
 * masked scores A (row stride C). */
static void load_chunk(const la__lin_job *j, const la__lin_unit *u, int64_t t0, int64_t L,
                       float *qh, float *kh, float *vb, float *A) {
    const int64_t K = j->K, V = j->V, C = j->chunk;
    for (int64_t i = 0; i < L; i++) {
        la__phi_row(j->fm, j->qscale, qh + i * K, u->q + (t0 + i) * u->sqk, K);
        la__phi_row(j->fm, 1.0f, kh + i * K, u->k + (t0 + i) * u->sqk, K);
        memcpy(vb + i * V, u->v + (t0 + i) * u->sv, (size_t)V * sizeof(float));
    }
    for (int64_t i = 0; i < L; i++)
        for (int64_t jj = 0; jj <= i; jj++) A[i * C + jj] = la__dot(qh + i * K, kh + jj * K, K);
}

/* Num (then O when normalised) and den of the chunk from the state before it. */
static void chunk_output(const la__lin_job *j, int64_t L, const float *S, const float *z,
                         const float *qh, const float *vb, const float *A, float *num,
                         float *den) {
    const int64_t K = j->K, V = j->V, C = j->chunk;
    for (int64_t i = 0; i < L; i++) {
        float *n = num + i * V;
        const float *a = A + i * C;
        for (int64_t x = 0; x < V; x++) n[x] = 0;
        for (int64_t kk = 0; kk < K; kk++) la__axpy(n, qh[i * K + kk], S + kk * V, V);
        for (int64_t jj = 0; jj <= i; jj++) la__axpy(n, a[jj], vb + jj * V, V);
        if (!j->normalize) {
            den[i] = 1.0f;
            continue;
        }
        float r = 0;
        for (int64_t jj = 0; jj <= i; jj++) r += a[jj];
        const float d = (la__dot(qh + i * K, z, K) + r) + j->eps;
        den[i] = d;
        for (int64_t x = 0; x < V; x++) n[x] = n[x] / d;
    }
}

/* S += K̃ᵀ V, z += K̃ᵀ 1, token after token (the recurrent form's order). */
static void chunk_state_update(const la__lin_job *j, int64_t L, float *S, float *z,
                               const float *kh, const float *vb) {
    const int64_t K = j->K, V = j->V;
    for (int64_t jj = 0; jj < L; jj++) {
        for (int64_t kk = 0; kk < K; kk++) la__axpy(S + kk * V, kh[jj * K + kk], vb + jj * V, V);
        if (j->normalize)
            for (int64_t kk = 0; kk < K; kk++) z[kk] += kh[jj * K + kk];
    }
}

void la__lin_chunk_fwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__bump b = {scratch, 0, 0};
    la__lin_chunk_layout(j, 0, &b, p);
    const int64_t V = j->V, C = j->chunk;
    float *S = p[C_S], *z = p[C_Z];
    la__lin_state_init(j, u, S, z);
    for (int64_t t0 = 0; t0 < u->len; t0 += C) {
        const int64_t L = u->len - t0 < C ? u->len - t0 : C;
        load_chunk(j, u, t0, L, p[C_QH], p[C_KH], p[C_VB], p[C_A]);
        chunk_output(j, L, S, z, p[C_QH], p[C_VB], p[C_A], p[C_NUM], p[C_DEN]);
        for (int64_t i = 0; i < L; i++)
            memcpy(u->o + (t0 + i) * u->sv, p[C_NUM] + i * V, (size_t)V * sizeof(float));
        chunk_state_update(j, L, S, z, p[C_KH], p[C_VB]);
    }
    la__lin_state_store(j, u, S, z);
}

/* dA = (G Vᵀ + δ 1ᵀ) ⊙ M (row stride C). */
static void chunk_dA(const la__lin_job *j, int64_t L, const float *g, const float *dd,
                     const float *vb, float *dA) {
    const int64_t V = j->V, C = j->chunk;
    for (int64_t i = 0; i < L; i++)
        for (int64_t jj = 0; jj <= i; jj++)
            dA[i * C + jj] = la__dot(g + i * V, vb + jj * V, V) + dd[i];
}

void la__lin_chunk_bwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__bump b = {scratch, 0, 0};
    la__lin_chunk_layout(j, 1, &b, p);
    const int64_t K = j->K, V = j->V, C = j->chunk;
    const int norm = j->normalize;
    float *S = p[C_S], *z = p[C_Z], *qh = p[C_QH], *kh = p[C_KH], *vb = p[C_VB], *A = p[C_A];
    float *num = p[C_NUM], *den = p[C_DEN], *g = p[C_G], *dA = p[C_DA], *dqh = p[C_DQH];
    float *dvb = p[C_DVB], *dd = p[C_DD];

    /* Forward sweep: rebuild each chunk's output, then G, δ, dQ. */
    la__lin_state_init(j, u, S, z);
    for (int64_t t0 = 0; t0 < u->len; t0 += C) {
        const int64_t L = u->len - t0 < C ? u->len - t0 : C;
        load_chunk(j, u, t0, L, qh, kh, vb, A);
        chunk_output(j, L, S, z, qh, vb, A, num, den);
        for (int64_t i = 0; i < L; i++) {
            const float *d_o = u->d_o + (t0 + i) * u->sv;
            if (norm) {
                for (int64_t x = 0; x < V; x++) g[i * V + x] = d_o[x] / den[i];
                dd[i] = -la__dot(d_o, num + i * V, V) / den[i];
            } else {
                memcpy(g + i * V, d_o, (size_t)V * sizeof(float));
                dd[i] = 0;
            }
        }
        chunk_dA(j, L, g, dd, vb, dA);
        for (int64_t i = 0; i < L; i++) {
            float *dq = dqh + i * K;
            for (int64_t kk = 0; kk < K; kk++) {
                dq[kk] = la__dot(S + kk * V, g + i * V, V);
                if (norm) dq[kk] += dd[i] * z[kk];
            }
            for (int64_t jj = 0; jj <= i; jj++) la__axpy(dq, dA[i * C + jj], kh + jj * K, K);
            const int64_t row = (t0 + i) * u->sqk;
            la__dphi_row(j->fm, j->qscale, u->dq + row, dq, u->q + row, K);
            if (norm) { /* park G and δ for the reverse sweep */
                memcpy(u->dv + (t0 + i) * u->sv, g + i * V, (size_t)V * sizeof(float));
                u->dk[row] = dd[i];
            }
        }
        chunk_state_update(j, L, S, z, kh, vb);
    }

    /* Reverse sweep: S, z now carry dS, dz. */
    float *dS = S, *dz = z;
    if (u->dST) memcpy(dS, u->dST, (size_t)K * (size_t)V * sizeof(float));
    else memset(dS, 0, (size_t)K * (size_t)V * sizeof(float));
    if (norm && u->dzT) memcpy(dz, u->dzT, (size_t)K * sizeof(float));
    else memset(dz, 0, (size_t)K * sizeof(float));
    const int64_t n_chunks = (u->len + C - 1) / C;
    for (int64_t ci = n_chunks - 1; ci >= 0; ci--) {
        const int64_t t0 = ci * C;
        const int64_t L = u->len - t0 < C ? u->len - t0 : C;
        load_chunk(j, u, t0, L, qh, kh, vb, A);
        for (int64_t i = 0; i < L; i++) {
            const int64_t rv = (t0 + i) * u->sv;
            if (norm) {
                memcpy(g + i * V, u->dv + rv, (size_t)V * sizeof(float));
                dd[i] = u->dk[(t0 + i) * u->sqk];
            } else {
                memcpy(g + i * V, u->d_o + rv, (size_t)V * sizeof(float));
                dd[i] = 0;
            }
        }
        chunk_dA(j, L, g, dd, vb, dA);
        float *dkh = dqh;
        for (int64_t jj = 0; jj < L; jj++) {
            float *dk = dkh + jj * K, *dv = dvb + jj * V;
            const float *v = vb + jj * V;
            for (int64_t kk = 0; kk < K; kk++) dk[kk] = la__dot(dS + kk * V, v, V) + dz[kk];
            for (int64_t i = jj; i < L; i++) la__axpy(dk, dA[i * C + jj], qh + i * K, K);
            for (int64_t x = 0; x < V; x++) dv[x] = 0;
            for (int64_t kk = 0; kk < K; kk++) la__axpy(dv, kh[jj * K + kk], dS + kk * V, V);
            for (int64_t i = jj; i < L; i++) la__axpy(dv, A[i * C + jj], g + i * V, V);
        }
        for (int64_t i = 0; i < L; i++) {
            for (int64_t kk = 0; kk < K; kk++) la__axpy(dS + kk * V, qh[i * K + kk], g + i * V, V);
            if (norm) la__axpy(dz, dd[i], qh + i * K, K);
        }
        for (int64_t jj = 0; jj < L; jj++) {
            const int64_t row = (t0 + jj) * u->sqk;
            la__dphi_row(j->fm, 1.0f, u->dk + row, dkh + jj * K, u->k + row, K);
            memcpy(u->dv + (t0 + jj) * u->sv, dvb + jj * V, (size_t)V * sizeof(float));
        }
    }
    if (u->dS0) memcpy(u->dS0, dS, (size_t)K * (size_t)V * sizeof(float));
    if (u->dz0) memcpy(u->dz0, dz, (size_t)K * sizeof(float));
}
