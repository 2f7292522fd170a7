/* Backward of one chunk of the WY (UT-transform) form (see chunk.c for the
 * forward and its notation). Given the chunk's start state S_0, dO and the
 * gradient G = dL/dS_L of its end state, it recomputes the chunk's forward
 * quantities and returns the gradients of q, k, v, beta, g and of S_0:
 *
 *   S_L = b_L S_0 + sum_j e_j k_j^T R_j        e_j = exp(gam_L - gam_j)
 *     dS_0 += b_L G, dR_j += e_j k_j G, dk_j += e_j G R_j^T, de_j = k_j G R_j^T
 *   O = s (diag(b) Q S_0 + P R),  P = (Q K^T) (.) Gamma (.) mask (incl. diag)
 *     dS_0 += (diag(b) Q)^T dO~, dq_t += b_t S_0 dO~_t, db_t += q_t S_0 dO~_t,
 *     dP_tj = dO~_t . R_j, dR += P^T dO~  (dO~ = s dO)
 *   R = U - W S_0:  dU = dR, dW = -dR S_0^T, dS_0 -= W^T dR
 *   (I + M) U = diag(beta) V, (I + M) W = diag(beta b) K, M strictly lower:
 *     Yu = (I + M)^{-T} dU, Yw = (I + M)^{-T} dW  (back substitution)
 *     dM_tj = -(Yu_t . U_j + Yw_t . W_j)  (j < t)
 *     dv_t = beta_t Yu_t, dk_t += beta_t b_t Yw_t,
 *     dbeta_t += Yu_t . v_t + b_t Yw_t . k_t, db_t += beta_t Yw_t . k_t
 *   M_tj = beta_t (k_t . k_j) Gamma_tj, P_tj = (q_t . k_j) Gamma_tj:
 *     the products' gradients go to k, q, beta and to Gamma
 *   gates: Gamma_tj = exp(gam_t - gam_j), b_t = exp(gam_t), e_j, b_L give
 *     dgam; gam is the cumulative sum of g, so dg is the reverse cumulative
 *     sum of dgam. Only exponentials of differences <= 0 appear, as in the
 *     forward, so -1e4 resets neither overflow nor give NaN.
 * Cost O(L^2 (K + V) + L K V) per chunk, at matrix-product shapes. */
#include "delta_rule.h"

#include <math.h>
#include <string.h>

size_t la__delta_chunk_bwd_work_floats(int64_t C, int64_t K, int64_t V) {
    const size_t c = (size_t)C, k = (size_t)K, v = (size_t)V;
    /* gam, dgam (double); b, e, db, de; Gm, KKd, QKd, dGm (C x C);
     * U, R, dR, Yu (C x V); W, dW, Yw (C x K); a row of K; S_0^T, G^T */
    return 4 * c + 4 * c + 4 * c * c + 4 * c * v + 3 * c * k + k + 2 * k * v + 16;
}

void la__delta_chunk_backward(const la__delta_chunk_in *in, const float *S0, float *G,
                              const float *dO, float *dq, float *dk, float *dv, float *dbeta,
                              float *dg, float *work) {
    const int64_t L = in->L, K = in->K, V = in->V;
    const float *q = in->q, *k = in->k, *v = in->v, *beta = in->beta;
    const int gated = in->g != NULL;
    double *gam = (double *)(void *)work, *dgam = gam + L;
    float *b = work + 4 * L, *e = b + L, *db = e + L, *de = db + L;
    float *Gm = de + L, *KKd = Gm + L * L, *QKd = KKd + L * L, *dGm = QKd + L * L;
    float *U = dGm + L * L, *R = U + L * V, *dR = R + L * V, *Yu = dR + L * V;
    float *W = Yu + L * V, *dW = W + L * K, *Yw = dW + L * K;
    float *rowK = Yw + L * K;
    /* Transposed copies [V,K]: products with S_0 and G over the value axis
     * become row updates (contiguous, vectorisable) instead of reductions. */
    float *S0T = rowK + K, *GT = S0T + K * V;
    for (int64_t i = 0; i < K; i++)
        for (int64_t c = 0; c < V; c++) {
            S0T[c * K + i] = S0[i * V + c];
            GT[c * K + i] = G[i * V + c];
        }

    /* ---- recompute the forward of the chunk ---- */
    double cum = 0;
    for (int64_t t = 0; t < L; t++) {
        if (gated) cum += (double)in->g[t];
        gam[t] = cum;
        dgam[t] = 0;
    }
    for (int64_t t = 0; t < L; t++) {
        b[t] = gated ? (float)exp(gam[t]) : 1.0f;
        e[t] = gated ? (float)exp(gam[L - 1] - gam[t]) : 1.0f;
        db[t] = de[t] = 0;
    }
    for (int64_t t = 0; t < L; t++) {
        const float *kt = k + t * K, *qt = q + t * K;
        for (int64_t j = 0; j <= t; j++) {
            const float *kj = k + j * K;
            float sq = 0, sk = 0;
            for (int64_t i = 0; i < K; i++) {
                sq += qt[i] * kj[i];
                sk += kt[i] * kj[i];
            }
            QKd[t * L + j] = sq;
            KKd[t * L + j] = sk;
            Gm[t * L + j] = gated ? (float)exp(gam[t] - gam[j]) : 1.0f;
            dGm[t * L + j] = 0;
        }
    }
#define M_(t, j) (beta[t] * KKd[(t) * L + (j)] * Gm[(t) * L + (j)])
    for (int64_t t = 0; t < L; t++) {
        float *Ut = U + t * V, *Wt = W + t * K;
        const float bb = beta[t] * b[t];
        for (int64_t c = 0; c < V; c++) Ut[c] = beta[t] * v[t * V + c];
        for (int64_t i = 0; i < K; i++) Wt[i] = bb * k[t * K + i];
        for (int64_t j = 0; j < t; j++) {
            const float m = M_(t, j);
            for (int64_t c = 0; c < V; c++) Ut[c] -= m * U[j * V + c];
            for (int64_t i = 0; i < K; i++) Wt[i] -= m * W[j * K + i];
        }
    }
    for (int64_t t = 0; t < L; t++) {
        float *Rt = R + t * V;
        memcpy(Rt, U + t * V, (size_t)V * sizeof(float));
        for (int64_t i = 0; i < K; i++) {
            const float w = W[t * K + i];
            for (int64_t c = 0; c < V; c++) Rt[c] -= w * S0[i * V + c];
        }
    }

    /* ---- S_L = b_L S_0 + sum_j e_j k_j^T R_j ---- */
    double dbL = 0;
    for (int64_t i = 0; i < K * V; i++) dbL += (double)G[i] * S0[i];
    for (int64_t j = 0; j < L; j++) {
        const float *kj = k + j * K, *Rj = R + j * V;
        float *dRj = dR + j * V, *dkj = dk + j * K;
        for (int64_t c = 0; c < V; c++) dRj[c] = 0;
        for (int64_t i = 0; i < K; i++) {
            const float *Gi = G + i * V;
            const float ki = kj[i];
            for (int64_t c = 0; c < V; c++) dRj[c] += ki * Gi[c];
        }
        for (int64_t c = 0; c < V; c++) dRj[c] *= e[j];
        /* rowK = G R_j^T */
        for (int64_t i = 0; i < K; i++) rowK[i] = 0;
        for (int64_t c = 0; c < V; c++) {
            const float r = Rj[c];
            const float *GTc = GT + c * K;
            for (int64_t i = 0; i < K; i++) rowK[i] += r * GTc[i];
        }
        float dej = 0;
        for (int64_t i = 0; i < K; i++) {
            dkj[i] += e[j] * rowK[i];
            dej += kj[i] * rowK[i];
        }
        de[j] = dej;
    }
    if (gated)
        for (int64_t i = 0; i < K * V; i++) G[i] *= b[L - 1];
    /* From here G accumulates dS_0. */

    /* ---- O = s (diag(b) Q S_0 + P R) ---- */
    for (int64_t t = 0; t < L; t++) {
        const float *dOt = dO + t * V, *qt = q + t * K;
        float *dqt = dq + t * K;
        /* rowK = S_0 dO~_t */
        for (int64_t i = 0; i < K; i++) rowK[i] = 0;
        for (int64_t c = 0; c < V; c++) {
            const float d = dOt[c];
            const float *STc = S0T + c * K;
            for (int64_t i = 0; i < K; i++) rowK[i] += d * STc[i];
        }
        float qs = 0;
        for (int64_t i = 0; i < K; i++) {
            dqt[i] += b[t] * rowK[i];
            qs += qt[i] * rowK[i];
            const float bq = b[t] * qt[i];
            float *Gi = G + i * V;
            for (int64_t c = 0; c < V; c++) Gi[c] += bq * dOt[c];
        }
        db[t] += qs;
        for (int64_t j = 0; j <= t; j++) {
            const float *Rj = R + j * V;
            float dp = 0;
            for (int64_t c = 0; c < V; c++) dp += dOt[c] * Rj[c];
            const float p = QKd[t * L + j] * Gm[t * L + j];
            float *dRj = dR + j * V;
            for (int64_t c = 0; c < V; c++) dRj[c] += p * dOt[c];
            const float dpg = dp * Gm[t * L + j];
            const float *kj = k + j * K;
            float *dkj = dk + j * K;
            for (int64_t i = 0; i < K; i++) {
                dqt[i] += dpg * kj[i];
                dkj[i] += dpg * qt[i];
            }
            dGm[t * L + j] += dp * QKd[t * L + j];
        }
    }

    /* ---- R = U - W S_0 ---- */
    for (int64_t t = 0; t < L; t++) {
        const float *dRt = dR + t * V, *Wt = W + t * K;
        float *dWt = dW + t * K;
        for (int64_t i = 0; i < K; i++) dWt[i] = 0;
        for (int64_t c = 0; c < V; c++) {
            const float d = dRt[c];
            const float *STc = S0T + c * K;
            for (int64_t i = 0; i < K; i++) dWt[i] -= d * STc[i];
        }
        for (int64_t i = 0; i < K; i++) {
            const float w = Wt[i];
            float *Gi = G + i * V;
            for (int64_t c = 0; c < V; c++) Gi[c] -= w * dRt[c];
        }
    }

    /* ---- triangular solves: Y = (I + M)^{-T} dX, by back substitution ---- */
    for (int64_t t = L - 1; t >= 0; t--) {
        float *Yut = Yu + t * V, *Ywt = Yw + t * K;
        memcpy(Yut, dR + t * V, (size_t)V * sizeof(float));
        memcpy(Ywt, dW + t * K, (size_t)K * sizeof(float));
        for (int64_t j = t + 1; j < L; j++) {
            const float m = M_(j, t);
            for (int64_t c = 0; c < V; c++) Yut[c] -= m * Yu[j * V + c];
            for (int64_t i = 0; i < K; i++) Ywt[i] -= m * Yw[j * K + i];
        }
    }
    for (int64_t t = 0; t < L; t++) {
        const float *Yut = Yu + t * V, *Ywt = Yw + t * K, *vt = v + t * V, *kt = k + t * K;
        float yv = 0, yk = 0;
        for (int64_t c = 0; c < V; c++) {
            dv[t * V + c] = beta[t] * Yut[c];
            yv += Yut[c] * vt[c];
        }
        const float bb = beta[t] * b[t];
        for (int64_t i = 0; i < K; i++) {
            dk[t * K + i] += bb * Ywt[i];
            yk += Ywt[i] * kt[i];
        }
        float dbt = yv + b[t] * yk;
        db[t] += beta[t] * yk;
        /* M_tj = beta_t (k_t . k_j) Gamma_tj, dM_tj = -(Yu_t . U_j + Yw_t . W_j) */
        for (int64_t j = 0; j < t; j++) {
            float du = 0, dw = 0;
            for (int64_t c = 0; c < V; c++) du += Yut[c] * U[j * V + c];
            for (int64_t i = 0; i < K; i++) dw += Ywt[i] * W[j * K + i];
            const float dm = -(du + dw);
            const float kk = KKd[t * L + j], gm = Gm[t * L + j];
            dbt += dm * kk * gm;
            dGm[t * L + j] += dm * beta[t] * kk;
            const float c1 = dm * beta[t] * gm;
            const float *kj = k + j * K;
            float *dkt = dk + t * K, *dkj = dk + j * K;
            for (int64_t i = 0; i < K; i++) {
                dkt[i] += c1 * kj[i];
                dkj[i] += c1 * kt[i];
            }
        }
        dbeta[t] = dbt;
    }
#undef M_

    /* ---- gates ---- */
    if (!gated) return;
    for (int64_t t = 0; t < L; t++) {
        for (int64_t j = 0; j < t; j++) { /* the diagonal Gamma_tt = 1 is constant */
            const double x = (double)dGm[t * L + j] * Gm[t * L + j];
            dgam[t] += x;
            dgam[j] -= x;
        }
        dgam[t] += (double)db[t] * b[t];
        const double y = (double)de[t] * e[t];
        dgam[L - 1] += y;
        dgam[t] -= y;
    }
    dgam[L - 1] += dbL * b[L - 1];
    double acc = 0;
    for (int64_t t = L - 1; t >= 0; t--) {
        acc += dgam[t];
        dg[t] = (float)acc;
    }
}
