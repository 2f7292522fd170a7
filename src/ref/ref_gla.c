/* float64 reference of simple GLA and GLA (see ref_gla.h): a direct
 * recurrence, and its reverse-mode derivative that keeps every state. */
#include "ref_gla.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Decay of key row i at token t. */
static double decay(int per_key, int64_t K, const double *g, double gamma, int64_t t,
                    int64_t i) {
    if (per_key) return exp(g[t * K + i]);
    return exp((g ? g[t] : 0.0) + gamma);
}

void ref_gla_forward(int per_key, int64_t T, int64_t K, int64_t V, double scale,
                     const double *q, const double *k, const double *v, const double *g,
                     double gamma, const double *s0, double *o, double *s_final) {
    double *S = calloc((size_t)(K * V), sizeof *S);
    if (!S) return;
    if (s0) memcpy(S, s0, (size_t)(K * V) * sizeof *S);
    for (int64_t t = 0; t < T; t++) {
        for (int64_t i = 0; i < K; i++) {
            const double a = decay(per_key, K, g, gamma, t, i);
            for (int64_t j = 0; j < V; j++)
                S[i * V + j] = a * S[i * V + j] + k[t * K + i] * v[t * V + j];
        }
        for (int64_t j = 0; j < V; j++) {
            double s = 0;
            for (int64_t i = 0; i < K; i++) s += q[t * K + i] * S[i * V + j];
            o[t * V + j] = scale * s;
        }
    }
    if (s_final) memcpy(s_final, S, (size_t)(K * V) * sizeof *S);
    free(S);
}

int ref_gla_backward(int per_key, int64_t T, int64_t K, int64_t V, double scale,
                     const double *q, const double *k, const double *v, const double *g,
                     double gamma, const double *s0, const double *d_o, const double *d_sT,
                     double *dq, double *dk, double *dv, double *dg, double *dgamma,
                     double *ds0) {
    const size_t KV = (size_t)(K * V);
    /* All states S_0 .. S_T. */
    double *S = calloc((size_t)(T + 1) * KV, sizeof *S);
    double *dS = calloc(KV, sizeof *dS);
    if (!S || !dS) {
        free(S);
        free(dS);
        return -1;
    }
    if (s0) memcpy(S, s0, KV * sizeof *S);
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < K; i++) {
            const double a = decay(per_key, K, g, gamma, t, i);
            for (int64_t j = 0; j < V; j++)
                S[(size_t)(t + 1) * KV + (size_t)(i * V + j)] =
                    a * S[(size_t)t * KV + (size_t)(i * V + j)] + k[t * K + i] * v[t * V + j];
        }
    if (d_sT) memcpy(dS, d_sT, KV * sizeof *dS);
    double dgam = 0;
    for (int64_t t = T - 1; t >= 0; t--) {
        const double *St = S + (size_t)(t + 1) * KV, *Sp = S + (size_t)t * KV;
        /* o_t = scale q_t S_t */
        for (int64_t i = 0; i < K; i++) {
            double s = 0;
            for (int64_t j = 0; j < V; j++) {
                s += St[i * V + j] * d_o[t * V + j];
                dS[i * V + j] += scale * q[t * K + i] * d_o[t * V + j];
            }
            dq[t * K + i] = scale * s;
        }
        /* S_t = Diag(a_t) S_{t-1} + k_t^T v_t */
        for (int64_t i = 0; i < K; i++) {
            double s = 0;
            for (int64_t j = 0; j < V; j++) s += dS[i * V + j] * v[t * V + j];
            dk[t * K + i] = s;
        }
        for (int64_t j = 0; j < V; j++) {
            double s = 0;
            for (int64_t i = 0; i < K; i++) s += k[t * K + i] * dS[i * V + j];
            dv[t * V + j] = s;
        }
        double dgt = 0; /* scalar gate (simple GLA) */
        for (int64_t i = 0; i < K; i++) {
            const double a = decay(per_key, K, g, gamma, t, i);
            double s = 0;
            for (int64_t j = 0; j < V; j++) s += dS[i * V + j] * a * Sp[i * V + j];
            if (per_key) {
                if (dg) dg[t * K + i] = s;
            } else {
                dgt += s;
            }
            for (int64_t j = 0; j < V; j++) dS[i * V + j] *= a;
        }
        if (!per_key) {
            if (dg) dg[t] = dgt;
            dgam += dgt;
        }
    }
    if (dgamma) *dgamma = dgam;
    if (ds0) memcpy(ds0, dS, KV * sizeof *dS);
    free(S);
    free(dS);
    return 0;
}
