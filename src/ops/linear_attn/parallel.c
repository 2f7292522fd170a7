/* Causal kernel linear attention, parallel form: the masked quadratic
 *
 *   o_t = (q̂_t S_0 + Σ_{j≤t} (q̂_t·k̃_j) v_j) / (q̂_t·z_0 + Σ_{j≤t} q̂_t·k̃_j + ε)
 *
 * computed in P×P tiles (P = LA__LIN_PAR_BLOCK): each query block meets
 * every key block at or before it, so nothing of size T×T is ever held.
 * O(T²(K+V)) per head. The final state is S_0 + Σ_j k̃_jᵀ v_j.
 *
 * Every tile product is a micro-kernel call (src/kernels) on contiguous
 * copies of the blocks, with values Vx = [V, 1] and states Sx = [S, z]
 * (linear_attn.h), so one product gives numerator and denominator:
 *   Numx = Q̂ S0x + Σ_kb A_kb Vx_kb,  A_kb = Q̂ K̃_kbᵀ (causal on the diagonal
 *   block: gemm_nt_tril, then gemm_nn_lower).
 *
 * Backward (formulas in linear_attn.h), with Gx = [G, δ] and
 * dA = Gx Vxᵀ (= G Vᵀ + δ 1ᵀ), masked on the diagonal block:
 *   query blocks: rebuild Numx, then Gx and
 *     dQ̂ = Gx S0xᵀ + Σ_kb dA_kb K̃_kb,   dS0x = dSTx + Σ Q̂ᵀ Gx;
 *   key blocks (ascending, so the G and δ parked in dv, dk are read before
 *   their rows are overwritten):
 *     dK̃ = Vx dSTxᵀ + Σ_qb dA_qbᵀ Q̂_qb,   dV = K̃ dST + Σ_qb A_qbᵀ G_qb. */
#include "linear_attn.h"

#include <string.h>

enum { P_QH, P_KH, P_VB, P_A, P_NUM, P_S, P_S0, P_G, P_DA, P_DQH, P_DVB, P_DST };

static int64_t block(const la__lin_job *j) {
    return j->Tmax < LA__LIN_PAR_BLOCK ? j->Tmax : LA__LIN_PAR_BLOCK;
}

void la__lin_parallel_layout(const la__lin_job *j, int backward, la__arena *b, float **p) {
    const size_t K = (size_t)j->K, V = (size_t)j->V, P = (size_t)block(j);
    const size_t Vx = (size_t)la__lin_vx(j);
    p[P_QH] = la__arena_floats(b, la__mul(P, K));
    p[P_KH] = la__arena_floats(b, la__mul(P, K));
    p[P_VB] = la__arena_floats(b, la__mul(P, Vx));
    p[P_A] = la__arena_floats(b, la__mul(P, P));
    p[P_NUM] = la__arena_floats(b, la__mul(P, Vx));
    p[P_S] = la__arena_floats(b, la__mul(K, Vx)); /* final state; dS0x in the backward */
    p[P_S0] = la__arena_floats(b, la__mul(K, Vx));
    if (!backward) return;
    p[P_G] = la__arena_floats(b, la__mul(P, Vx));
    p[P_DA] = la__arena_floats(b, la__mul(P, P));
    p[P_DQH] = la__arena_floats(b, la__mul(P, K));
    p[P_DVB] = la__arena_floats(b, la__mul(P, V));
    p[P_DST] = la__arena_floats(b, la__mul(K, Vx));
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* K̃ and Vx rows of the key block at k0. */
static void load_keys(const la__lin_job *j, const la__lin_unit *u, int64_t k0, int64_t Lk,
                      float *kh, float *vb) {
    la__lin_phi_rows(j, 1.0f, u->k, u->sqk, k0, Lk, kh);
    la__lin_load_vx(j, u->v, u->sv, k0, Lk, vb);
}

/* out [Lq, Lk] (row stride P) = X Yᵀ over width w, causal (j <= i) on the
 * diagonal block. */
static void tile_nt(const la__lin_job *j, int diag, int64_t Lq, int64_t Lk, int64_t w,
                    const float *X, int64_t ldx, const float *Y, int64_t ldy, float *out) {
    const int64_t P = block(j);
    if (diag) j->kr->gemm_nt_tril(Lq, w, 0, 1.0f, X, ldx, Y, ldy, 0.0f, out, P);
    else j->kr->gemm_nt(Lq, Lk, w, 1.0f, X, ldx, Y, ldy, 0.0f, out, P);
}

/* Numx of the query block at q0 (Lq rows, Q̂ already in qh): Q̂ S0x plus
 * the tiles A Vx of every key block at or before it. */
static void query_block(const la__lin_job *j, const la__lin_unit *u, int64_t q0, int64_t Lq,
                        const float *qh, const float *S0x, float *kh, float *vb, float *A,
                        float *num) {
    const la__kernels *kr = j->kr;
    const int64_t K = j->K, P = block(j), qb = q0 / P, Vx = la__lin_vx(j);
    if (S0x) kr->gemm_nn(Lq, Vx, K, 1.0f, qh, K, S0x, Vx, 0.0f, num, Vx);
    else memset(num, 0, (size_t)Lq * (size_t)Vx * sizeof(float));
    for (int64_t kb = 0; kb <= qb; kb++) {
        const int64_t k0 = kb * P, Lk = min64(P, u->len - k0);
        load_keys(j, u, k0, Lk, kh, vb);
        tile_nt(j, kb == qb, Lq, Lk, K, qh, K, kh, K, A);
        if (kb == qb) kr->gemm_nn_lower(Lq, Vx, Lk, 1.0f, A, P, vb, Vx, 1.0f, num, Vx);
        else kr->gemm_nn(Lq, Vx, Lk, 1.0f, A, P, vb, Vx, 1.0f, num, Vx);
    }
}

/* S0x, or NULL when there is no initial state or norm (then Q̂ S0x = 0). */
static const float *initial_ext(const la__lin_job *j, const la__lin_unit *u, float *buf) {
    if (!u->S0 && !(j->normalize && u->z0)) return NULL;
    la__lin_ext_load(j, buf, u->S0, u->z0);
    return buf;
}

void la__lin_parallel_fwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_parallel_layout(j, 0, &b, p);
    const int64_t P = block(j), K = j->K, Vx = la__lin_vx(j);
    const float *S0x = initial_ext(j, u, p[P_S0]);
    for (int64_t q0 = 0; q0 < u->len; q0 += P) {
        const int64_t Lq = min64(P, u->len - q0);
        la__lin_phi_rows(j, j->qscale, u->q, u->sqk, q0, Lq, p[P_QH]);
        query_block(j, u, q0, Lq, p[P_QH], S0x, p[P_KH], p[P_VB], p[P_A], p[P_NUM]);
        la__lin_out_rows(j, Lq, p[P_NUM], u->o, u->sv, q0);
    }
    if (u->fS || u->fz) { /* Sx = S0x + Σ K̃ᵀ Vx */
        float *Sx = p[P_S];
        la__lin_ext_load(j, Sx, u->S0, u->z0);
        for (int64_t k0 = 0; k0 < u->len; k0 += P) {
            const int64_t Lk = min64(P, u->len - k0);
            load_keys(j, u, k0, Lk, p[P_KH], p[P_VB]);
            j->kr->gemm_tn(K, Vx, Lk, 1.0f, p[P_KH], K, p[P_VB], Vx, 1.0f, Sx, Vx);
        }
        la__lin_ext_store(j, Sx, u->fS, u->fz);
    }
}

void la__lin_parallel_bwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_parallel_layout(j, 1, &b, p);
    const la__kernels *kr = j->kr;
    const int64_t P = block(j), K = j->K, V = j->V, Vx = la__lin_vx(j);
    const int norm = j->normalize;
    float *qh = p[P_QH], *kh = p[P_KH], *vb = p[P_VB], *A = p[P_A], *num = p[P_NUM];
    float *dSx = p[P_S], *g = p[P_G], *dA = p[P_DA], *dqh = p[P_DQH], *dvb = p[P_DVB];
    float *dSTx = p[P_DST];
    const float *S0x = initial_ext(j, u, p[P_S0]);
    la__lin_ext_load(j, dSTx, u->dST, u->dzT);
    memcpy(dSx, dSTx, (size_t)K * (size_t)Vx * sizeof(float));

    /* Query blocks: Gx, dq and dS0x. */
    for (int64_t q0 = 0; q0 < u->len; q0 += P) {
        const int64_t Lq = min64(P, u->len - q0), qb = q0 / P;
        la__lin_phi_rows(j, j->qscale, u->q, u->sqk, q0, Lq, qh);
        query_block(j, u, q0, Lq, qh, S0x, kh, vb, A, num);
        la__lin_gx_rows(j, Lq, num, u->d_o, u->sv, q0, g);
        if (S0x) kr->gemm_nt(Lq, K, Vx, 1.0f, g, Vx, S0x, Vx, 0.0f, dqh, K);
        else memset(dqh, 0, (size_t)Lq * (size_t)K * sizeof(float));
        for (int64_t kb = 0; kb <= qb; kb++) {
            const int64_t k0 = kb * P, Lk = min64(P, u->len - k0);
            load_keys(j, u, k0, Lk, kh, vb);
            tile_nt(j, kb == qb, Lq, Lk, Vx, g, Vx, vb, Vx, dA);
            if (kb == qb) kr->gemm_nn_lower(Lq, K, Lk, 1.0f, dA, P, kh, K, 1.0f, dqh, K);
            else kr->gemm_nn(Lq, K, Lk, 1.0f, dA, P, kh, K, 1.0f, dqh, K);
        }
        la__lin_dphi_rows(j, j->qscale, u->dq, u->sqk, q0, Lq, dqh, u->q);
        kr->gemm_tn(K, Vx, Lq, 1.0f, qh, K, g, Vx, 1.0f, dSx, Vx);
        if (norm) /* park G and δ for the key blocks */
            for (int64_t i = 0; i < Lq; i++) {
                memcpy(u->dv + (q0 + i) * u->sv, g + i * Vx, (size_t)V * sizeof(float));
                u->dk[(q0 + i) * u->sqk] = g[i * Vx + V];
            }
    }

    /* Key blocks, ascending: dk, dv. */
    for (int64_t k0 = 0; k0 < u->len; k0 += P) {
        const int64_t Lk = min64(P, u->len - k0), kb = k0 / P;
        float *dkh = dqh;
        load_keys(j, u, k0, Lk, kh, vb);
        kr->gemm_nt(Lk, K, Vx, 1.0f, vb, Vx, dSTx, Vx, 0.0f, dkh, K);
        kr->gemm_nn(Lk, V, K, 1.0f, kh, K, dSTx, Vx, 0.0f, dvb, V);
        for (int64_t q0 = k0; q0 < u->len; q0 += P) {
            const int64_t Lq = min64(P, u->len - q0), diag = q0 / P == kb;
            la__lin_phi_rows(j, j->qscale, u->q, u->sqk, q0, Lq, qh);
            for (int64_t i = 0; i < Lq; i++) {
                const int64_t rv = (q0 + i) * u->sv;
                if (norm) {
                    memcpy(g + i * Vx, u->dv + rv, (size_t)V * sizeof(float));
                    g[i * Vx + V] = u->dk[(q0 + i) * u->sqk];
                } else {
                    memcpy(g + i * Vx, u->d_o + rv, (size_t)V * sizeof(float));
                }
            }
            /* A, dA are zero above the diagonal on the diagonal block */
            tile_nt(j, (int)diag, Lq, Lk, K, qh, K, kh, K, A);
            tile_nt(j, (int)diag, Lq, Lk, Vx, g, Vx, vb, Vx, dA);
            kr->gemm_tn(Lk, K, Lq, 1.0f, dA, P, qh, K, 1.0f, dkh, K);
            kr->gemm_tn(Lk, V, Lq, 1.0f, A, P, g, Vx, 1.0f, dvb, V);
        }
        la__lin_dphi_rows(j, 1.0f, u->dk, u->sqk, k0, Lk, dkh, u->k);
        for (int64_t i = 0; i < Lk; i++)
            memcpy(u->dv + (k0 + i) * u->sv, dvb + i * V, (size_t)V * sizeof(float));
    }
    la__lin_ext_store(j, dSx, u->dS0, u->dz0);
}
