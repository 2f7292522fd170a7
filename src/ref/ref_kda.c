/* float64 reference of KDA (see ref_kda.h). */
#include "ref_kda.h"
#include "ref_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define L2_EPS 1e-6

static double *alloc0(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

/* y = x / sqrt(sum x^2 + eps) (or a copy). */
static void normalise_row(int64_t K, int l2norm, const double *x, double *y) {
    double ss = 0;
    for (int64_t i = 0; i < K; i++) ss += x[i] * x[i];
    const double r = l2norm ? 1 / sqrt(ss + L2_EPS) : 1;
    for (int64_t i = 0; i < K; i++) y[i] = x[i] * r;
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

/* S = (I - beta k k^T) Diag(a) P + beta k v^T, element by element:
 * S_ij = a_i P_ij - beta k_i (sum_m k_m a_m P_mj) + beta k_i v_j. */
static void update(int64_t K, int64_t V, double *S, const double *P, const double *k,
                   const double *v, const double *a, double beta) {
    for (int64_t j = 0; j < V; j++) {
        double u = 0;
        for (int64_t m = 0; m < K; m++) u += k[m] * a[m] * P[m * V + j];
        for (int64_t i = 0; i < K; i++)
            S[i * V + j] = a[i] * P[i * V + j] - beta * k[i] * u + beta * k[i] * v[j];
    }
}

int ref_kda_forward(const ref_kda_in *in, double *o, double *ST) {
    const int64_t T = in->T, K = in->K, V = in->V;
    double *qn = alloc0((size_t)K), *kn = alloc0((size_t)K), *a = alloc0((size_t)K);
    double *S = alloc0((size_t)(K * V)), *P = alloc0((size_t)(K * V));
    int rc = -1;
    if (!qn || !kn || !a || !S || !P) goto done;
    if (in->S0) memcpy(S, in->S0, (size_t)(K * V) * sizeof(double));
    for (int64_t t = 0; t < T; t++) {
        normalise_row(K, in->l2norm, in->q + t * K, qn);
        normalise_row(K, in->l2norm, in->k + t * K, kn);
        for (int64_t i = 0; i < K; i++) a[i] = exp(in->g[t * K + i]);
        memcpy(P, S, (size_t)(K * V) * sizeof(double));
        update(K, V, S, P, kn, in->v + t * V, a, in->beta[t]);
        for (int64_t j = 0; j < V; j++) {
            double acc = 0;
            for (int64_t i = 0; i < K; i++) acc += qn[i] * S[i * V + j];
            o[t * V + j] = in->scale * acc;
        }
    }
    if (ST) memcpy(ST, S, (size_t)(K * V) * sizeof(double));
    rc = 0;
done:
    free(qn);
    free(kn);
    free(a);
    free(S);
    free(P);
    return rc;
}

/* Per token, with P = S_{t-1}, S' = Diag(a) P, u = S'^T k, r = beta (v - u),
 * S_t = S' + k r^T, o = scale S_t^T q, and G = dL/dS_t:
 *   dq = scale S_t do, G += scale q do^T, w = G^T k,
 *   dv = beta w, dbeta = w . (v - u),
 *   dk_i = G_i . r - beta a_i (P_i . w),
 *   dS' = G - beta k w^T, dg_i = a_i (dS'_i . P_i), dS_{t-1} = Diag(a) dS'. */
int ref_kda_backward(const ref_kda_in *in, const double *d_o, const double *dST, double *dq,
                     double *dk, double *dv, double *dbeta, double *dg, double *dS0) {
    const int64_t T = in->T, K = in->K, V = in->V;
    const size_t KV = (size_t)(K * V);
    double *qn = alloc0((size_t)(T * K)), *kn = alloc0((size_t)(T * K));
    double *S = alloc0((size_t)(T + 1) * KV), *G = alloc0(KV), *a = alloc0((size_t)K);
    double *dqn = alloc0((size_t)(T * K)), *dkn = alloc0((size_t)(T * K));
    double *u = alloc0((size_t)V), *w = alloc0((size_t)V), *r = alloc0((size_t)V);
    int rc = -1;
    if (!qn || !kn || !S || !G || !a || !dqn || !dkn || !u || !w || !r) goto done;
    for (int64_t t = 0; t < T; t++) {
        normalise_row(K, in->l2norm, in->q + t * K, qn + t * K);
        normalise_row(K, in->l2norm, in->k + t * K, kn + t * K);
    }
    /* S + t*KV is the state after t tokens. */
    if (in->S0) memcpy(S, in->S0, KV * sizeof(double));
    for (int64_t t = 0; t < T; t++) {
        for (int64_t i = 0; i < K; i++) a[i] = exp(in->g[t * K + i]);
        update(K, V, S + (size_t)(t + 1) * KV, S + (size_t)t * KV, kn + t * K, in->v + t * V, a,
               in->beta[t]);
    }
    if (dST) memcpy(G, dST, KV * sizeof(double));
    for (int64_t t = T - 1; t >= 0; t--) {
        const double *St = S + (size_t)(t + 1) * KV, *P = S + (size_t)t * KV;
        const double *q = qn + t * K, *k = kn + t * K, *v = in->v + t * V, *dot = d_o + t * V;
        const double b = in->beta[t];
        for (int64_t i = 0; i < K; i++) a[i] = exp(in->g[t * K + i]);
        for (int64_t i = 0; i < K; i++) {
            double acc = 0;
            for (int64_t j = 0; j < V; j++) {
                acc += St[i * V + j] * dot[j];
                G[i * V + j] += in->scale * q[i] * dot[j];
            }
            dqn[t * K + i] = in->scale * acc;
        }
        for (int64_t j = 0; j < V; j++) {
            u[j] = w[j] = 0;
            for (int64_t m = 0; m < K; m++) {
                u[j] += k[m] * a[m] * P[m * V + j];
                w[j] += k[m] * G[m * V + j];
            }
            r[j] = b * (v[j] - u[j]);
        }
        double db = 0;
        for (int64_t j = 0; j < V; j++) {
            dv[t * V + j] = b * w[j];
            db += w[j] * (v[j] - u[j]);
        }
        dbeta[t] = db;
        for (int64_t i = 0; i < K; i++) {
            double gr = 0, pw = 0, da = 0;
            for (int64_t j = 0; j < V; j++) {
                gr += G[i * V + j] * r[j];
                pw += P[i * V + j] * w[j];
            }
            dkn[t * K + i] = gr - b * a[i] * pw;
            for (int64_t j = 0; j < V; j++) {
                const double ds = G[i * V + j] - b * k[i] * w[j]; /* dS'_ij */
                da += ds * P[i * V + j];
                G[i * V + j] = a[i] * ds;
            }
            dg[t * K + i] = a[i] * da;
        }
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
    free(a);
    free(dqn);
    free(dkn);
    free(u);
    free(w);
    free(r);
    return rc;
}

/* ---- whole tensors ---------------------------------------------------- */

/* y[rows of sequence n, head h] += src [len, D]. */
static void scatter_add(double *y, const double *src, const la_dims *d, int64_t n, int64_t h,
                        int64_t heads, int64_t D) {
    const int64_t start = d->cu_seqlens ? d->cu_seqlens[n] : n * d->T;
    const int64_t len = d->cu_seqlens ? d->cu_seqlens[n + 1] - d->cu_seqlens[n] : d->T;
    for (int64_t t = 0; t < len; t++)
        for (int64_t i = 0; i < D; i++) y[((start + t) * heads + h) * D + i] += src[t * D + i];
}

typedef struct {
    const float *d_o, *dST;
    double *dq, *dk, *dv, *dg, *dbeta, *dS0;
} bwd_io;

static int kda_all(const la_dims *d, double scale, int l2norm, const float *q, const float *k,
                   const float *v, const float *g, const float *beta, const float *S0, double *o,
                   double *ST, const bwd_io *b) {
    const int64_t N = d->cu_seqlens ? d->n_seqs : d->B, H = d->H, K = d->K, V = d->V;
    const int64_t HV = d->HV ? d->HV : H, group = HV / H, T = d->T;
    const size_t KV = (size_t)(K * V), tl = (size_t)(d->B * T) + 1;
    /* per sequence: q, k, g, dq, dk, dg [T,K]; v, d_o, o, dv [T,V]; beta, dbeta [T]; S0, dST */
    double *tmp = malloc((tl * (size_t)(6 * K + 4 * V + 2) + 2 * KV) * sizeof(double));
    if (!tmp) return -1;
    double *tq = tmp, *tk = tq + tl * K, *tg = tk + tl * K, *tdq = tg + tl * K, *tdk = tdq + tl * K,
           *tdg = tdk + tl * K, *tv = tdg + tl * K, *tdo = tv + tl * V, *to = tdo + tl * V,
           *tdv = to + tl * V, *tb = tdv + tl * V, *tdb = tb + tl, *tS0 = tdb + tl,
           *tdST = tS0 + KV;
    const size_t nqk = (size_t)(d->B * T * H * K);
    if (b && b->dq) memset(b->dq, 0, nqk * sizeof(double));
    if (b && b->dk) memset(b->dk, 0, nqk * sizeof(double));
    int ok = 1;
    for (int64_t n = 0; n < N && ok; n++)
        for (int64_t h = 0; h < HV && ok; h++) {
            const int64_t hq = h / group;
            const int64_t len = ref_gather(tq, q, d, n, hq, H, K);
            ref_gather(tk, k, d, n, hq, H, K);
            ref_gather(tv, v, d, n, h, HV, V);
            ref_gather(tg, g, d, n, h, HV, K);
            ref_gather(tb, beta, d, n, h, HV, 1);
            const size_t so = (size_t)(n * HV + h) * KV;
            for (size_t i = 0; i < KV; i++) {
                tS0[i] = S0 ? (double)S0[so + i] : 0.0;
                tdST[i] = b && b->dST ? (double)b->dST[so + i] : 0.0;
            }
            ref_kda_in in = {len, K, V, scale, l2norm, tq, tk, tv, tg, tb, tS0};
            if (!b) {
                ok = ref_kda_forward(&in, to, ST ? ST + so : NULL) == 0;
                if (o) ref_scatter(o, to, d, n, h, HV, V);
                continue;
            }
            ref_gather(tdo, b->d_o, d, n, h, HV, V);
            ok = ref_kda_backward(&in, tdo, tdST, tdq, tdk, tdv, tdb, tdg,
                                  b->dS0 ? b->dS0 + so : NULL) == 0;
            if (b->dv) ref_scatter(b->dv, tdv, d, n, h, HV, V);
            if (b->dg) ref_scatter(b->dg, tdg, d, n, h, HV, K);
            if (b->dbeta) ref_scatter(b->dbeta, tdb, d, n, h, HV, 1);
            if (b->dq) scatter_add(b->dq, tdq, d, n, hq, H, K);
            if (b->dk) scatter_add(b->dk, tdk, d, n, hq, H, K);
        }
    free(tmp);
    return ok ? 0 : -1;
}

int ref_kda_forward_all(const la_dims *d, double scale, int l2norm, const float *q, const float *k,
                        const float *v, const float *g, const float *beta, const float *S0,
                        double *o, double *ST) {
    return kda_all(d, scale, l2norm, q, k, v, g, beta, S0, o, ST, NULL);
}

int ref_kda_backward_all(const la_dims *d, double scale, int l2norm, const float *q, const float *k,
                         const float *v, const float *g, const float *beta, const float *S0,
                         const float *d_o, const float *dST, double *dq, double *dk, double *dv,
                         double *dg, double *dbeta, double *dS0) {
    const bwd_io b = {d_o, dST, dq, dk, dv, dg, dbeta, dS0};
    return kda_all(d, scale, l2norm, q, k, v, g, beta, S0, NULL, NULL, &b);
}
