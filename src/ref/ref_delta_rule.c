/* float64 reference of the delta rules (see ref_delta_rule.h). */
#include "ref_delta_rule.h"
#include "ref_util.h"

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

/* ---- whole tensors ------------------------------------------------------- */

static void add_group(double *dst, const double *src, const la_dims *d, int64_t n, int64_t h,
                      int64_t heads, int64_t D) {
    const int64_t start = d->cu_seqlens ? d->cu_seqlens[n] : n * d->T;
    const int64_t len = d->cu_seqlens ? d->cu_seqlens[n + 1] - start : d->T;
    for (int64_t t = 0; t < len; t++)
        for (int64_t i = 0; i < D; i++) dst[((start + t) * heads + h) * D + i] += src[t * D + i];
}

static int delta_all(const la_dims *d, double scale, int l2norm, const float *q, const float *k,
                     const float *v, const float *g, const float *beta, const float *S0,
                     double *o, double *ST, int backward, const float *d_o, const float *dST,
                     double *dq, double *dk, double *dv, double *dg, double *dbeta,
                     double *dS0) {
    const int64_t N = d->cu_seqlens ? d->n_seqs : d->B, H = d->H, K = d->K, V = d->V;
    const int64_t HS = d->HV ? d->HV : H, group = HS / H, T = d->T;
    const size_t KV = (size_t)(K * V), tl = (size_t)T + 1;
    double *tmp = malloc((tl * (size_t)(4 * K + 4 * V + 4) + 2 * KV) * sizeof(double));
    if (!tmp) return -1;
    double *tq = tmp, *tk = tq + tl * K, *tdq = tk + tl * K, *tdk = tdq + tl * K,
           *tv = tdk + tl * K, *tdo = tv + tl * V, *to = tdo + tl * V, *tdv = to + tl * V,
           *tg = tdv + tl * V, *tb = tg + tl, *tdg = tb + tl, *tdb = tdg + tl, *tS0 = tdb + tl,
           *tdST = tS0 + KV;
    const size_t nqk = (size_t)(d->B * T * H * K);
    if (backward) {
        if (dq) memset(dq, 0, nqk * sizeof(double));
        if (dk) memset(dk, 0, nqk * sizeof(double));
    }
    int ok = 1;
    for (int64_t n = 0; n < N && ok; n++)
        for (int64_t h = 0; h < HS && ok; h++) {
            const int64_t hq = h / group;
            const int64_t len = ref_gather(tq, q, d, n, hq, H, K);
            ref_gather(tk, k, d, n, hq, H, K);
            ref_gather(tv, v, d, n, h, HS, V);
            if (g) ref_gather(tg, g, d, n, h, HS, 1);
            ref_gather(tb, beta, d, n, h, HS, 1);
            const size_t so = (size_t)(n * HS + h) * KV;
            for (size_t i = 0; i < KV; i++) {
                tS0[i] = S0 ? (double)S0[so + i] : 0.0;
                tdST[i] = dST ? (double)dST[so + i] : 0.0;
            }
            ref_delta_in in = {len, K, V, scale, l2norm, tq, tk, tv, g ? tg : NULL, tb, tS0};
            if (!backward) {
                ok = ref_delta_rule_forward(&in, to, ST ? ST + so : NULL) == 0;
                if (o) ref_scatter(o, to, d, n, h, HS, V);
                continue;
            }
            ref_gather(tdo, d_o, d, n, h, HS, V);
            ok = ref_delta_rule_backward(&in, tdo, tdST, tdq, tdk, tdv, tdb, tdg,
                                         dS0 ? dS0 + so : NULL) == 0;
            if (dv) ref_scatter(dv, tdv, d, n, h, HS, V);
            if (dg && g) ref_scatter(dg, tdg, d, n, h, HS, 1);
            if (dbeta) ref_scatter(dbeta, tdb, d, n, h, HS, 1);
            if (dq) add_group(dq, tdq, d, n, hq, H, K);
            if (dk) add_group(dk, tdk, d, n, hq, H, K);
        }
    free(tmp);
    return ok ? 0 : -1;
}

int ref_delta_rule_forward_all(const la_dims *d, double scale, int l2norm, const float *q,
                               const float *k, const float *v, const float *g,
                               const float *beta, const float *S0, double *o, double *ST) {
    return delta_all(d, scale, l2norm, q, k, v, g, beta, S0, o, ST, 0, NULL, NULL, NULL, NULL,
                     NULL, NULL, NULL, NULL);
}

int ref_delta_rule_backward_all(const la_dims *d, double scale, int l2norm, const float *q,
                                const float *k, const float *v, const float *g,
                                const float *beta, const float *S0, const float *d_o,
                                const float *dST, double *dq, double *dk, double *dv,
                                double *dg, double *dbeta, double *dS0) {
    return delta_all(d, scale, l2norm, q, k, v, g, beta, S0, NULL, NULL, 1, d_o, dST, dq, dk, dv,
                     dg, dbeta, dS0);
}
