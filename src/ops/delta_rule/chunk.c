/* The chunkwise form of the delta rules: the WY (UT-transform)
 * representation of one chunk.
 *
 * Inside a chunk of L tokens with cumulative log-gates gam_t = sum_{s<=t} g_s,
 * b_t = exp(gam_t), the recurrence S_t = a_t S_{t-1} + k_t^T r_t with
 * r_t = beta_t (v_t - a_t k_t S_{t-1}) unrolls to
 *     S_t = b_t S_0 + sum_{j<=t} exp(gam_t - gam_j) k_j^T r_j
 *     r_t + beta_t sum_{j<t} exp(gam_t - gam_j)(k_t.k_j) r_j
 *         = beta_t v_t - beta_t b_t k_t S_0.
 * With Lo = strictly_lower(diag(beta) K K^T (.) Gamma), A = (I + Lo)^{-1}:
 *     R = U - W S_0,   U = A diag(beta) V,   W = A diag(beta b) K
 *     O = scale (diag(b) Q S_0 + (Q K^T (.) Gamma (.) causal mask incl. diagonal) R)
 *     S_L = b_L S_0 + (diag(exp(gam_L - gam)) K)^T R.
 * A is never formed: U and W come from forward substitution with (I + Lo).
 * Gates appear only as exp of differences gam_t - gam_j (t >= j) or of gam_t
 * itself, all <= 0, so a log-gate of -1e4 (a full reset) underflows to 0
 * instead of overflowing. gam is summed in double: differences of large
 * cumulative sums (after a reset) would otherwise lose float precision. */
#include "delta_rule.h"

#include <math.h>

size_t la__delta_chunk_work_floats(int64_t C, int64_t K, int64_t V) {
    const size_t c = (size_t)C;
    /* gam (double) + b + eg + Lo + QK + U/R + W (also b Q, then eg K) */
    return 2 * c + 2 * c + 2 * c * c + c * (size_t)V + c * (size_t)K + (size_t)V + 16;
}

/* All products run on the micro-kernels (q, k, v rows are contiguous here):
 * K K^T and Q K^T by gemm_nt_tril, then each entry times beta_t Gamma_tj or
 * Gamma_tj; U and W by trsm_llu with (I + Lo); R = U - W S_0 and b Q S_0 by
 * gemm_nn; (Q K^T (.) Gamma) R by gemm_nn_lower; the state update by gemm_tn
 * on the rows eg_j k_j. */
void la__delta_chunk_step(const la__delta_chunk_in *in, float *S, float *o, int64_t ostride,
                          float *work) {
    const int64_t L = in->L, K = in->K, V = in->V;
    const float *q = in->q, *k = in->k, *v = in->v, *beta = in->beta;
    const la__kernels *kr = in->kr;
    double *gam = (double *)(void *)work; /* work is 64-byte aligned */
    float *b = work + 2 * L, *eg = b + L, *Lo = eg + L, *QK = Lo + L * L, *U = QK + L * L,
          *W = U + L * V;

    double cum = 0;
    for (int64_t t = 0; t < L; t++) {
        if (in->g) cum += (double)in->g[t];
        gam[t] = cum;
    }
    for (int64_t t = 0; t < L; t++) {
        b[t] = (float)exp(gam[t]);
        eg[t] = (float)exp(gam[L - 1] - gam[t]);
    }
    /* Lo (strictly lower) and QK (lower incl. diagonal), both times Gamma. */
    kr->gemm_nt_tril(L, K, 1, 1.0f, k, K, k, K, 0.0f, Lo, L);
    if (o) kr->gemm_nt_tril(L, K, 0, 1.0f, q, K, k, K, 0.0f, QK, L);
    for (int64_t t = 0; t < L; t++) {
        float *Lot = Lo + t * L, *QKt = QK + t * L;
        for (int64_t j = 0; j <= t; j++) {
            const float gm = in->g ? (float)exp(gam[t] - gam[j]) : 1.0f;
            if (o) QKt[j] *= gm;
            if (j < t) Lot[j] = beta[t] * Lot[j] * gm;
        }
    }
    /* U = (I + Lo)^{-1} diag(beta) V, W = (I + Lo)^{-1} diag(beta b) K. */
    for (int64_t t = 0; t < L; t++) {
        float *Ut = U + t * V, *Wt = W + t * K;
        const float *vt = v + t * V, *kt = k + t * K;
        const float bb = beta[t] * b[t];
        for (int64_t c = 0; c < V; c++) Ut[c] = beta[t] * vt[c];
        for (int64_t i = 0; i < K; i++) Wt[i] = bb * kt[i];
    }
    kr->trsm_llu(L, V, Lo, L, U, V);
    kr->trsm_llu(L, K, Lo, L, W, K);
    /* R = U - W S_0 (in place in U). */
    kr->gemm_nn(L, V, K, -1.0f, W, K, S, V, 1.0f, U, V);
    /* O = scale (diag(b) Q S_0 + (QK (.) Gamma) R), from S_0. */
    if (o) {
        for (int64_t t = 0; t < L; t++)
            for (int64_t i = 0; i < K; i++) W[t * K + i] = b[t] * q[t * K + i];
        kr->gemm_nn(L, V, K, in->scale, W, K, S, V, 0.0f, o, ostride);
        kr->gemm_nn_lower(L, V, L, in->scale, QK, L, U, V, 1.0f, o, ostride);
    }
    /* S_L = b_L S_0 + (diag(eg) K)^T R. */
    if (in->g)
        for (int64_t i = 0; i < K * V; i++) S[i] *= b[L - 1];
    for (int64_t t = 0; t < L; t++)
        for (int64_t i = 0; i < K; i++) W[t * K + i] = eg[t] * k[t * K + i];
    kr->gemm_tn(K, V, L, 1.0f, W, K, U, V, 1.0f, S, V);
}
