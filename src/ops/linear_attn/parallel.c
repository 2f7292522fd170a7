/* Causal kernel linear attention, parallel form: the masked quadratic
 *
 *   o_t = (q̂_t S_0 + Σ_{j≤t} (q̂_t·k̃_j) v_j) / (q̂_t·z_0 + Σ_{j≤t} q̂_t·k̃_j + ε)
 *
 * computed in P×P tiles (P = LA__LIN_PAR_BLOCK): each query block meets
 * every key block at or before it, so nothing of size T×T is ever held.
 * O(T²(K+V)) per head. The final state is S_0 + Σ_j k̃_jᵀ v_j.
 *
 * Backward (formulas in linear_attn.h), with dA[i][j] = g_i·v_j + δ_i:
 *   query blocks: rebuild o and den, then g, δ and
 *     dq̂_i = S_0 g_i + δ_i z_0 + Σ_{j≤i} dA[i][j] k̃_j,
 *     dS_0 = dS_T + Σ_i q̂_iᵀ g_i,  dz_0 = dz_T + Σ_i δ_i q̂_i;
 *   key blocks (ascending, so the g and δ parked in dv, dk are read before
 *   their rows are overwritten):
 *     dk̃_j = dS_T v_j + dz_T + Σ_{i≥j} dA[i][j] q̂_i,
 *     dv_j = k̃_j dS_T + Σ_{i≥j} (q̂_i·k̃_j) g_i. */
#include "linear_attn.h"

#include <string.h>

enum { P_QH, P_KH, P_VB, P_A, P_NUM, P_DEN, P_S, P_Z, P_G, P_DD, P_DA, P_DQH, P_DVB };

static int64_t block(const la__lin_job *j) {
    return j->Tmax < LA__LIN_PAR_BLOCK ? j->Tmax : LA__LIN_PAR_BLOCK;
}

void la__lin_parallel_layout(const la__lin_job *j, int backward, la__bump *b, float **p) {
    const size_t K = (size_t)j->K, V = (size_t)j->V, P = (size_t)block(j);
    p[P_QH] = la__take(b, la__mul(P, K));
    p[P_KH] = la__take(b, la__mul(P, K));
    p[P_VB] = la__take(b, la__mul(P, V));
    p[P_A] = la__take(b, la__mul(P, P));
    p[P_NUM] = la__take(b, la__mul(P, V));
    p[P_DEN] = la__take(b, P);
    p[P_S] = la__take(b, la__mul(K, V)); /* final state; dS_0 in the backward */
    p[P_Z] = la__take(b, K);
    if (!backward) return;
    p[P_G] = la__take(b, la__mul(P, V));
    p[P_DD] = la__take(b, P);
    p[P_DA] = la__take(b, la__mul(P, P));
    p[P_DQH] = la__take(b, la__mul(P, K));
    p[P_DVB] = la__take(b, la__mul(P, V));
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* rows [t0, t0+L) of x (row stride s, width D) through c·φ into dst. */
static void load_phi(const la__lin_job *j, float c, const float *x, int64_t s, int64_t t0,
                     int64_t L, float *dst) {
    for (int64_t i = 0; i < L; i++) la__phi_row(j->fm, c, dst + i * j->K, x + (t0 + i) * s, j->K);
}

static void load_rows(const float *x, int64_t s, int64_t D, int64_t t0, int64_t L, float *dst) {
    for (int64_t i = 0; i < L; i++) memcpy(dst + i * D, x + (t0 + i) * s, (size_t)D * sizeof(float));
}

/* Key rows a query row i (block qb) sees inside key block kb: all of them
 * before the diagonal block, rows 0..i on it. */
static int64_t seen(int64_t qb, int64_t kb, int64_t i, int64_t Lk) {
    return kb < qb ? Lk : i + 1;
}

/* Output rows of the query block at q0 (Lq rows, Q̂ already in qh): num
 * (then o when normalised) and den. */
static void query_block(const la__lin_job *j, const la__lin_unit *u, int64_t q0, int64_t Lq,
                        const float *qh, float *kh, float *vb, float *A, float *num,
                        float *den) {
    const int64_t K = j->K, V = j->V, P = block(j), qb = q0 / P;
    for (int64_t i = 0; i < Lq; i++) {
        float *n = num + i * V;
        for (int64_t x = 0; x < V; x++) n[x] = 0;
        if (u->S0)
            for (int64_t kk = 0; kk < K; kk++) la__axpy(n, qh[i * K + kk], u->S0 + kk * V, V);
        den[i] = j->normalize && u->z0 ? la__dot(qh + i * K, u->z0, K) : 0.0f;
    }
    for (int64_t kb = 0; kb <= qb; kb++) {
        const int64_t k0 = kb * P, Lk = min64(P, u->len - k0);
        load_phi(j, 1.0f, u->k, u->sqk, k0, Lk, kh);
        load_rows(u->v, u->sv, V, k0, Lk, vb);
        for (int64_t i = 0; i < Lq; i++) {
            const int64_t m = seen(qb, kb, i, Lk);
            float *a = A + i * P, *n = num + i * V, r = 0;
            for (int64_t jj = 0; jj < m; jj++) a[jj] = la__dot(qh + i * K, kh + jj * K, K);
            for (int64_t jj = 0; jj < m; jj++) la__axpy(n, a[jj], vb + jj * V, V);
            for (int64_t jj = 0; jj < m; jj++) r += a[jj];
            den[i] += r;
        }
    }
    for (int64_t i = 0; i < Lq; i++) {
        if (!j->normalize) {
            den[i] = 1.0f;
            continue;
        }
        den[i] += j->eps;
        for (int64_t x = 0; x < V; x++) num[i * V + x] = num[i * V + x] / den[i];
    }
}

/* S_0 + Σ_j k̃_jᵀ v_j (and z), token after token. */
static void final_state(const la__lin_job *j, const la__lin_unit *u, float *S, float *z,
                        float *kf) {
    la__lin_state_init(j, u, S, z);
    for (int64_t t = 0; t < u->len; t++) {
        la__phi_row(j->fm, 1.0f, kf, u->k + t * u->sqk, j->K);
        for (int64_t kk = 0; kk < j->K; kk++) la__axpy(S + kk * j->V, kf[kk], u->v + t * u->sv, j->V);
        if (j->normalize)
            for (int64_t kk = 0; kk < j->K; kk++) z[kk] += kf[kk];
    }
}

void la__lin_parallel_fwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__bump b = {scratch, 0, 0};
    la__lin_parallel_layout(j, 0, &b, p);
    const int64_t P = block(j), V = j->V;
    for (int64_t q0 = 0; q0 < u->len; q0 += P) {
        const int64_t Lq = min64(P, u->len - q0);
        load_phi(j, j->qscale, u->q, u->sqk, q0, Lq, p[P_QH]);
        query_block(j, u, q0, Lq, p[P_QH], p[P_KH], p[P_VB], p[P_A], p[P_NUM], p[P_DEN]);
        for (int64_t i = 0; i < Lq; i++)
            memcpy(u->o + (q0 + i) * u->sv, p[P_NUM] + i * V, (size_t)V * sizeof(float));
    }
    if (u->fS || u->fz) {
        final_state(j, u, p[P_S], p[P_Z], p[P_KH]);
        la__lin_state_store(j, u, p[P_S], p[P_Z]);
    }
}

void la__lin_parallel_bwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__bump b = {scratch, 0, 0};
    la__lin_parallel_layout(j, 1, &b, p);
    const int64_t P = block(j), K = j->K, V = j->V;
    const int norm = j->normalize;
    float *qh = p[P_QH], *kh = p[P_KH], *vb = p[P_VB], *A = p[P_A], *num = p[P_NUM];
    float *den = p[P_DEN], *dS = p[P_S], *dz = p[P_Z], *g = p[P_G], *dd = p[P_DD];
    float *dA = p[P_DA], *dqh = p[P_DQH], *dvb = p[P_DVB];
    if (u->dST) memcpy(dS, u->dST, (size_t)K * (size_t)V * sizeof(float));
    else memset(dS, 0, (size_t)K * (size_t)V * sizeof(float));
    if (norm && u->dzT) memcpy(dz, u->dzT, (size_t)K * sizeof(float));
    else memset(dz, 0, (size_t)K * sizeof(float));

    /* Query blocks: g, δ, dq and dS_0, dz_0. */
    for (int64_t q0 = 0; q0 < u->len; q0 += P) {
        const int64_t Lq = min64(P, u->len - q0), qb = q0 / P;
        load_phi(j, j->qscale, u->q, u->sqk, q0, Lq, qh);
        query_block(j, u, q0, Lq, qh, kh, vb, A, num, den);
        for (int64_t i = 0; i < Lq; i++) {
            const float *d_o = u->d_o + (q0 + i) * u->sv;
            float *dq = dqh + i * K;
            if (norm) {
                for (int64_t x = 0; x < V; x++) g[i * V + x] = d_o[x] / den[i];
                dd[i] = -la__dot(d_o, num + i * V, V) / den[i];
            } else {
                memcpy(g + i * V, d_o, (size_t)V * sizeof(float));
                dd[i] = 0;
            }
            for (int64_t kk = 0; kk < K; kk++) {
                dq[kk] = u->S0 ? la__dot(u->S0 + kk * V, g + i * V, V) : 0.0f;
                if (norm && u->z0) dq[kk] += dd[i] * u->z0[kk];
            }
        }
        for (int64_t kb = 0; kb <= qb; kb++) {
            const int64_t k0 = kb * P, Lk = min64(P, u->len - k0);
            load_phi(j, 1.0f, u->k, u->sqk, k0, Lk, kh);
            load_rows(u->v, u->sv, V, k0, Lk, vb);
            for (int64_t i = 0; i < Lq; i++) {
                const int64_t m = seen(qb, kb, i, Lk);
                float *da = dA + i * P;
                for (int64_t jj = 0; jj < m; jj++)
                    da[jj] = la__dot(g + i * V, vb + jj * V, V) + dd[i];
                for (int64_t jj = 0; jj < m; jj++) la__axpy(dqh + i * K, da[jj], kh + jj * K, K);
            }
        }
        for (int64_t i = 0; i < Lq; i++) {
            const int64_t row = (q0 + i) * u->sqk;
            la__dphi_row(j->fm, j->qscale, u->dq + row, dqh + i * K, u->q + row, K);
            for (int64_t kk = 0; kk < K; kk++) la__axpy(dS + kk * V, qh[i * K + kk], g + i * V, V);
            if (norm) {
                la__axpy(dz, dd[i], qh + i * K, K);
                memcpy(u->dv + (q0 + i) * u->sv, g + i * V, (size_t)V * sizeof(float));
                u->dk[row] = dd[i];
            }
        }
    }

    /* Key blocks, ascending: dk, dv. */
    for (int64_t k0 = 0; k0 < u->len; k0 += P) {
        const int64_t Lk = min64(P, u->len - k0), kb = k0 / P;
        load_phi(j, 1.0f, u->k, u->sqk, k0, Lk, kh);
        load_rows(u->v, u->sv, V, k0, Lk, vb);
        float *dkh = dqh;
        for (int64_t jj = 0; jj < Lk; jj++) {
            float *dk = dkh + jj * K, *dv = dvb + jj * V;
            for (int64_t kk = 0; kk < K; kk++)
                dk[kk] = (u->dST ? la__dot(u->dST + kk * V, vb + jj * V, V) : 0.0f) +
                         (norm && u->dzT ? u->dzT[kk] : 0.0f);
            for (int64_t x = 0; x < V; x++) dv[x] = 0;
            if (u->dST)
                for (int64_t kk = 0; kk < K; kk++) la__axpy(dv, kh[jj * K + kk], u->dST + kk * V, V);
        }
        for (int64_t q0 = k0; q0 < u->len; q0 += P) {
            const int64_t Lq = min64(P, u->len - q0), qb = q0 / P;
            load_phi(j, j->qscale, u->q, u->sqk, q0, Lq, qh);
            for (int64_t i = 0; i < Lq; i++) {
                const int64_t rv = (q0 + i) * u->sv;
                if (norm) {
                    memcpy(g + i * V, u->dv + rv, (size_t)V * sizeof(float));
                    dd[i] = u->dk[(q0 + i) * u->sqk];
                } else {
                    memcpy(g + i * V, u->d_o + rv, (size_t)V * sizeof(float));
                    dd[i] = 0;
                }
            }
            for (int64_t i = 0; i < Lq; i++) {
                const int64_t m = seen(qb, kb, i, Lk);
                for (int64_t jj = 0; jj < m; jj++) {
                    const float a = la__dot(qh + i * K, kh + jj * K, K);
                    const float da = la__dot(g + i * V, vb + jj * V, V) + dd[i];
                    la__axpy(dkh + jj * K, da, qh + i * K, K);
                    la__axpy(dvb + jj * V, a, g + i * V, V);
                }
            }
        }
        for (int64_t jj = 0; jj < Lk; jj++) {
            const int64_t row = (k0 + jj) * u->sqk;
            la__dphi_row(j->fm, 1.0f, u->dk + row, dkh + jj * K, u->k + row, K);
            memcpy(u->dv + (k0 + jj) * u->sv, dvb + jj * V, (size_t)V * sizeof(float));
        }
    }
    if (u->dS0) memcpy(u->dS0, dS, (size_t)K * (size_t)V * sizeof(float));
    if (u->dz0) memcpy(u->dz0, dz, (size_t)K * sizeof(float));
}
