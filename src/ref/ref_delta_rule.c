/* float64 reference of the delta rules (see ref_delta_rule.h). */
#include "ref_delta_rule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define L2_EPS 1e-6

/* The normalised copies of q and k (or plain copies). */
static void normalise(const ref_delta_in *in, double *qn, double *kn) {
    const int64_t T = in->T, K = in->K;
    for (int64_t t = 0; t < T; t++) {
        double sq = 0, sk = 0;
        for (int64_t i = 0; i < K; i++) {
            sq += in->q[t * K + i] * in->q[t * K + i];
            sk += in->k[t * K + i] * in->k[t * K + i];
        }
        const double rq = in->l2norm ? 1 / sqrt(sq + L2_EPS) : 1;
        const double rk = in->l2norm ? 1 / sqrt(sk + L2_EPS) : 1;
        for (int64_t i = 0; i < K; i++) {
            qn[t * K + i] = in->q[t * K + i] * rq;
            kn[t * K + i] = in->k[t * K + i] * rk;
        }
    }
}

/* S = a (I - beta k^T k) P + beta k^T v, written out element by element. */
static void update(int64_t K, int64_t V, double *S, const double *P, const double *k,
                   const double *v, double a, double beta) {
    for (int64_t j = 0; j < V; j++) {
        double kP = 0; /* (k P)_j */
        for (int64_t m = 0; m < K; m++) kP += k[m] * P[m * V + j];
        for (int64_t i = 0; i < K; i++)
            S[i * V + j] = a * (P[i * V + j] - beta * k[i] * kP) + beta * k[i] * v[j];
    }
}

static double *alloc0(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

int ref_delta_rule_forward(const ref_delta_in *in, double *o, double *ST) {
    const int64_t T = in->T, K = in->K, V = in->V;
    double *qn = alloc0((size_t)(T * K)), *kn = alloc0((size_t)(T * K));
    double *S = alloc0((size_t)(K * V)), *P = alloc0((size_t)(K * V));
    int rc = -1;
    if (!qn || !kn || !S || !P) goto done;
    normalise(in, qn, kn);
    if (in->S0) memcpy(S, in->S0, (size_t)(K * V) * sizeof(double));
    for (int64_t t = 0; t < T; t++) {
        memcpy(P, S, (size_t)(K * V) * sizeof(double));
        const double a = in->g ? exp(in->g[t]) : 1;
        update(K, V, S, P, kn + t * K, in->v + t * V, a, in->beta[t]);
        for (int64_t j = 0; j < V; j++) {
            double acc = 0;
            for (int64_t i = 0; i < K; i++) acc += qn[t * K + i] * S[i * V + j];
            o[t * V + j] = in->scale * acc;
        }
    }
    if (ST) memcpy(ST, S, (size_t)(K * V) * sizeof(double));
    rc = 0;
done:
    free(qn);
    free(kn);
    free(S);
    free(P);
    return rc;
}

/* dx of y = x / sqrt(sum x^2 + eps): dx = rstd (dy - (y . dy) y). */
static void l2norm_backward(int64_t K, const double *x, const double *dy, double *dx) {
    double ss = 0;
    for (int64_t i = 0; i < K; i++) ss += x[i] * x[i];
    const double r = 1 / sqrt(ss + L2_EPS);
    double yd = 0;
    for (int64_t i = 0; i < K; i++) yd += x[i] * r * dy[i];
    for (int64_t i = 0; i < K; i++) dx[i] = r * (dy[i] - yd * x[i] * r);
}

int ref_delta_rule_backward(const ref_delta_in *in, const double *d_o, const double *dST,
                            double *dq, double *dk, double *dv, double *dbeta, double *dg,
                            double *dS0) {
    const int64_t T = in->T, K = in->K, V = in->V;
    const size_t KV = (size_t)(K * V);
    double *qn = alloc0((size_t)(T * K)), *kn = alloc0((size_t)(T * K));
    double *S = alloc0((size_t)(T + 1) * KV), *G = alloc0(KV), *Gp = alloc0(KV);
    double *dqn = alloc0((size_t)(T * K)), *dkn = alloc0((size_t)(T * K));
    double *kP = alloc0((size_t)V), *kG = alloc0((size_t)V);
    int rc = -1;
    if (!qn || !kn || !S || !G || !Gp || !dqn || !dkn || !kP || !kG) goto done;
    normalise(in, qn, kn);
    /* S + t*KV is the state after t tokens. */
    if (in->S0) memcpy(S, in->S0, KV * sizeof(double));
    for (int64_t t = 0; t < T; t++)
        update(K, V, S + (size_t)(t + 1) * KV, S + (size_t)t * KV, kn + t * K, in->v + t * V,
               in->g ? exp(in->g[t]) : 1, in->beta[t]);
    if (dST) memcpy(G, dST, KV * sizeof(double));
    for (int64_t t = T - 1; t >= 0; t--) {
        const double *St = S + (size_t)(t + 1) * KV, *P = S + (size_t)t * KV;
        const double *q = qn + t * K, *k = kn + t * K, *v = in->v + t * V, *dot = d_o + t * V;
        const double a = in->g ? exp(in->g[t]) : 1, b = in->beta[t];
        /* o_t = scale q S_t */
        for (int64_t i = 0; i < K; i++) {
            double acc = 0;
            for (int64_t j = 0; j < V; j++) {
                acc += St[i * V + j] * dot[j];
                G[i * V + j] += in->scale * q[i] * dot[j];
            }
            dqn[t * K + i] = in->scale * acc;
        }
        /* S_t[i][j] = a P_ij - a b k_i (kP)_j + b k_i v_j */
        for (int64_t j = 0; j < V; j++) {
            kP[j] = kG[j] = 0;
            for (int64_t m = 0; m < K; m++) {
                kP[j] += k[m] * P[m * V + j];
                kG[j] += k[m] * G[m * V + j];
            }
        }
        double da = 0, db = 0;
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++) {
                da += G[i * V + j] * (P[i * V + j] - b * k[i] * kP[j]);
                db += G[i * V + j] * k[i] * (v[j] - a * kP[j]);
            }
        if (in->g) dg[t] = a * da;
        dbeta[t] = db;
        for (int64_t j = 0; j < V; j++) dv[t * V + j] = b * kG[j];
        for (int64_t m = 0; m < K; m++) {
            double acc = 0;
            for (int64_t j = 0; j < V; j++)
                acc += -a * b * G[m * V + j] * kP[j] - a * b * kG[j] * P[m * V + j] +
                       b * G[m * V + j] * v[j];
            dkn[t * K + m] = acc;
        }
        for (int64_t m = 0; m < K; m++)
            for (int64_t j = 0; j < V; j++)
                Gp[m * V + j] = a * G[m * V + j] - a * b * k[m] * kG[j];
        memcpy(G, Gp, KV * sizeof(double));
    }
    if (dS0) memcpy(dS0, G, KV * sizeof(double));
    for (int64_t t = 0; t < T; t++) {
        if (in->l2norm) {
            l2norm_backward(K, in->q + t * K, dqn + t * K, dq + t * K);
            l2norm_backward(K, in->k + t * K, dkn + t * K, dk + t * K);
        } else {
            memcpy(dq + t * K, dqn + t * K, (size_t)K * sizeof(double));
            memcpy(dk + t * K, dkn + t * K, (size_t)K * sizeof(double));
        }
    }
    rc = 0;
done:
    free(qn);
    free(kn);
    free(S);
    free(G);
    free(Gp);
    free(dqn);
    free(dkn);
    free(kP);
    free(kG);
    return rc;
}
