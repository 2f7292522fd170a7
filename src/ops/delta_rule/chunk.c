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
    /* gam (double) + b + eg + Lo + QK + U/R + W + one row of V */
    return 2 * c + 2 * c + 2 * c * c + c * (size_t)V + c * (size_t)K + (size_t)V + 16;
}

void la__delta_chunk_step(const la__delta_chunk_in *in, float *S, float *o, int64_t ostride,
                          float *work) {
    const int64_t L = in->L, K = in->K, V = in->V;
    const float *q = in->q, *k = in->k, *v = in->v, *beta = in->beta;
    double *gam = (double *)(void *)work; /* work is 64-byte aligned */
    float *b = work + 2 * L, *eg = b + L, *Lo = eg + L, *QK = Lo + L * L, *U = QK + L * L,
          *W = U + L * V, *acc = W + L * K;

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
    for (int64_t t = 0; t < L; t++) {
        const float *kt = k + t * K, *qt = q + t * K;
        for (int64_t j = 0; j <= t; j++) {
            const float *kj = k + j * K;
            const float gm = in->g ? (float)exp(gam[t] - gam[j]) : 1.0f;
            float dq = 0, dk = 0;
            for (int64_t i = 0; i < K; i++) {
                dq += qt[i] * kj[i];
                dk += kt[i] * kj[i];
            }
            QK[t * L + j] = dq * gm;
            Lo[t * L + j] = j < t ? beta[t] * dk * gm : 0.0f;
        }
    }
    /* Forward substitution: rows of U = A diag(beta) V and W = A diag(beta b) K. */
    for (int64_t t = 0; t < L; t++) {
        float *Ut = U + t * V, *Wt = W + t * K;
        const float *vt = v + t * V, *kt = k + t * K;
        const float bb = beta[t] * b[t];
        for (int64_t c = 0; c < V; c++) Ut[c] = beta[t] * vt[c];
        for (int64_t i = 0; i < K; i++) Wt[i] = bb * kt[i];
        for (int64_t j = 0; j < t; j++) {
            const float l = Lo[t * L + j];
            const float *Uj = U + j * V, *Wj = W + j * K;
            for (int64_t c = 0; c < V; c++) Ut[c] -= l * Uj[c];
            for (int64_t i = 0; i < K; i++) Wt[i] -= l * Wj[i];
        }
    }
    /* R = U - W S_0 (in place in U). */
    for (int64_t t = 0; t < L; t++) {
        float *Rt = U + t * V;
        const float *Wt = W + t * K;
        for (int64_t i = 0; i < K; i++) {
            const float w = Wt[i];
            const float *Si = S + i * V;
            for (int64_t c = 0; c < V; c++) Rt[c] -= w * Si[c];
        }
    }
    /* O = scale (diag(b) Q S_0 + (QK (.) Gamma) R), from S_0. */
    if (o) {
        for (int64_t t = 0; t < L; t++) {
            const float *qt = q + t * K;
            for (int64_t c = 0; c < V; c++) acc[c] = 0;
            for (int64_t i = 0; i < K; i++) {
                const float qi = b[t] * qt[i];
                const float *Si = S + i * V;
                for (int64_t c = 0; c < V; c++) acc[c] += qi * Si[c];
            }
            for (int64_t j = 0; j <= t; j++) {
                const float a = QK[t * L + j];
                const float *Rj = U + j * V;
                for (int64_t c = 0; c < V; c++) acc[c] += a * Rj[c];
            }
            float *ot = o + t * ostride;
            for (int64_t c = 0; c < V; c++) ot[c] = in->scale * acc[c];
        }
    }
    /* S_L = b_L S_0 + (diag(eg) K)^T R. */
    if (in->g)
        for (int64_t i = 0; i < K * V; i++) S[i] *= b[L - 1];
    for (int64_t j = 0; j < L; j++) {
        const float *kj = k + j * K, *Rj = U + j * V;
        for (int64_t i = 0; i < K; i++) {
            const float w = eg[j] * kj[i];
            float *Si = S + i * V;
            for (int64_t c = 0; c < V; c++) Si[c] += w * Rj[c];
        }
    }
}
