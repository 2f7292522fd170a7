/* Non-causal kernel linear attention (the kernel trick): per sequence,
 * S = S_0 + φ(K)ᵀV and z = z_0 + φ(K)ᵀ1 are summed first, then every query
 * reads them: o_t = q̂_t S / (q̂_t·z + ε), or q̂_t S unnormalised. The final
 * state is (S, z). O(T·K·V) per head.
 *
 * Both passes go in blocks of tokens through the micro-kernels, on the
 * extended state Sx = [S, z] and values Vx = [V, 1] (linear_attn.h):
 * Sx += K̃ᵀ Vx per key block, Numx = Q̂ Sx per query block.
 *
 * Backward (formulas in linear_attn.h with S_t = S, z_t = z for every t),
 * with Gx = [G, δ]: dQ̂ = Gx Sxᵀ per query block and dSx = dSx_T + Σ Q̂ᵀ Gx
 * (the same for every token); then per key block dK̃ = Vx dSxᵀ
 * (= V dSᵀ + 1 dzᵀ) and dV = K̃ dS; dS_0, dz_0 = dSx. */
#include "linear_attn.h"

#include <string.h>

enum { N_S, N_QH, N_VB, N_NUM, N_DS, N_G, N_DQH, N_DVB };

static int64_t block(const la__lin_job *j) {
    return j->Tmax < LA__LIN_PAR_BLOCK ? j->Tmax : LA__LIN_PAR_BLOCK;
}

void la__lin_noncausal_layout(const la__lin_job *j, int backward, la__arena *b, float **p) {
    const size_t K = (size_t)j->K, V = (size_t)j->V, P = (size_t)block(j);
    const size_t Vx = (size_t)la__lin_vx(j);
    p[N_S] = la__arena_floats(b, la__mul(K, Vx));
    p[N_QH] = la__arena_floats(b, la__mul(P, K)); /* Q̂ or K̃ block */
    p[N_VB] = la__arena_floats(b, la__mul(P, Vx));
    p[N_NUM] = la__arena_floats(b, la__mul(P, Vx));
    if (!backward) return;
    p[N_DS] = la__arena_floats(b, la__mul(K, Vx));
    p[N_G] = la__arena_floats(b, la__mul(P, Vx));
    p[N_DQH] = la__arena_floats(b, la__mul(P, K)); /* dQ̂, then dK̃ */
    p[N_DVB] = la__arena_floats(b, la__mul(P, V));
}

/* Sx = [S_0, z_0] + Σ_t k̃_tᵀ [v_t, 1], key block by key block. */
static void sum_state(const la__lin_job *j, const la__lin_unit *u, float *Sx, float *kh,
                      float *vb) {
    const int64_t K = j->K, P = block(j), Vx = la__lin_vx(j);
    la__lin_ext_load(j, Sx, u->S0, u->z0);
    for (int64_t t0 = 0; t0 < u->len; t0 += P) {
        const int64_t L = u->len - t0 < P ? u->len - t0 : P;
        la__lin_phi_rows(j, 1.0f, u->k, u->sqk, t0, L, kh);
        la__lin_load_vx(j, u->v, u->sv, t0, L, vb);
        j->kr->gemm_tn(K, Vx, L, 1.0f, kh, K, vb, Vx, 1.0f, Sx, Vx);
    }
}

void la__lin_noncausal_fwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_noncausal_layout(j, 0, &b, p);
    const int64_t K = j->K, P = block(j), Vx = la__lin_vx(j);
    float *Sx = p[N_S], *qh = p[N_QH], *num = p[N_NUM];
    sum_state(j, u, Sx, qh, p[N_VB]);
    for (int64_t t0 = 0; t0 < u->len; t0 += P) {
        const int64_t L = u->len - t0 < P ? u->len - t0 : P;
        la__lin_phi_rows(j, j->qscale, u->q, u->sqk, t0, L, qh);
        j->kr->gemm_nn(L, Vx, K, 1.0f, qh, K, Sx, Vx, 0.0f, num, Vx);
        la__lin_out_rows(j, L, num, u->o, u->sv, t0);
    }
    la__lin_ext_store(j, Sx, u->fS, u->fz);
}

void la__lin_noncausal_bwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_noncausal_layout(j, 1, &b, p);
    const la__kernels *kr = j->kr;
    const int64_t K = j->K, V = j->V, P = block(j), Vx = la__lin_vx(j);
    float *Sx = p[N_S], *qh = p[N_QH], *vb = p[N_VB], *num = p[N_NUM], *dSx = p[N_DS];
    float *g = p[N_G], *dqh = p[N_DQH], *dvb = p[N_DVB];
    sum_state(j, u, Sx, qh, vb);
    la__lin_ext_load(j, dSx, u->dST, u->dzT);
    /* Queries: dq, and dSx. */
    for (int64_t t0 = 0; t0 < u->len; t0 += P) {
        const int64_t L = u->len - t0 < P ? u->len - t0 : P;
        la__lin_phi_rows(j, j->qscale, u->q, u->sqk, t0, L, qh);
        kr->gemm_nn(L, Vx, K, 1.0f, qh, K, Sx, Vx, 0.0f, num, Vx);
        la__lin_gx_rows(j, L, num, u->d_o, u->sv, t0, g);
        kr->gemm_tn(K, Vx, L, 1.0f, qh, K, g, Vx, 1.0f, dSx, Vx);
        kr->gemm_nt(L, K, Vx, 1.0f, g, Vx, Sx, Vx, 0.0f, dqh, K);
        la__lin_dphi_rows(j, j->qscale, u->dq, u->sqk, t0, L, dqh, u->q);
    }
    /* Keys and values. */
    for (int64_t t0 = 0; t0 < u->len; t0 += P) {
        const int64_t L = u->len - t0 < P ? u->len - t0 : P;
        float *kh = qh, *dkh = dqh;
        la__lin_phi_rows(j, 1.0f, u->k, u->sqk, t0, L, kh);
        la__lin_load_vx(j, u->v, u->sv, t0, L, vb);
        kr->gemm_nn(L, V, K, 1.0f, kh, K, dSx, Vx, 0.0f, dvb, V);
        for (int64_t i = 0; i < L; i++)
            memcpy(u->dv + (t0 + i) * u->sv, dvb + i * V, (size_t)V * sizeof(float));
        kr->gemm_nt(L, K, Vx, 1.0f, vb, Vx, dSx, Vx, 0.0f, dkh, K);
        la__lin_dphi_rows(j, 1.0f, u->dk, u->sqk, t0, L, dkh, u->k);
    }
    la__lin_ext_store(j, dSx, u->dS0, u->dz0);
}
