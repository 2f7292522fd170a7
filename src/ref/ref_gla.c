/* float64 reference of simple GLA and GLA (see ref_gla.h): a direct
 * recurrence, and its reverse-mode derivative that keeps every state. */
#include "ref_gla.h"
#include "ref_util.h"

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

/* ---- whole tensors ------------------------------------------------------- */

typedef struct gla_tmp {
    double *q, *k, *v, *g, *o, *dout, *dq, *dk, *dv, *dg, *s0, *sT, *dsT, *ds0;
} gla_tmp;

static void gla_tmp_free(gla_tmp *t) {
    free(t->q); free(t->k); free(t->v); free(t->g); free(t->o); free(t->dout); free(t->dq);
    free(t->dk); free(t->dv); free(t->dg); free(t->s0); free(t->sT); free(t->dsT); free(t->ds0);
}

static int gla_tmp_alloc(gla_tmp *t, int64_t T, int64_t K, int64_t V, int64_t gw) {
    const size_t tk = (size_t)(T * K) + 1, tv = (size_t)(T * V) + 1, kv = (size_t)(K * V);
    memset(t, 0, sizeof *t);
    t->q = calloc(tk, sizeof(double)); t->k = calloc(tk, sizeof(double));
    t->v = calloc(tv, sizeof(double)); t->g = calloc((size_t)(T * gw) + 1, sizeof(double));
    t->o = calloc(tv, sizeof(double)); t->dout = calloc(tv, sizeof(double));
    t->dq = calloc(tk, sizeof(double)); t->dk = calloc(tk, sizeof(double));
    t->dv = calloc(tv, sizeof(double)); t->dg = calloc((size_t)(T * gw) + 1, sizeof(double));
    t->s0 = calloc(kv, sizeof(double)); t->sT = calloc(kv, sizeof(double));
    t->dsT = calloc(kv, sizeof(double)); t->ds0 = calloc(kv, sizeof(double));
    if (!t->q || !t->k || !t->v || !t->g || !t->o || !t->dout || !t->dq || !t->dk || !t->dv ||
        !t->dg || !t->s0 || !t->sT || !t->dsT || !t->ds0) {
        gla_tmp_free(t);
        return -1;
    }
    return 0;
}

static void load_state(double *dst, const float *src, size_t idx, size_t KV) {
    for (size_t i = 0; i < KV; i++) dst[i] = src ? (double)src[idx * KV + i] : 0.0;
}

static int gla_all(int per_key, const la_dims *d, double scale, const float *q, const float *k,
                   const float *v, const float *g, const float *g_gamma, const float *s0,
                   double *o, double *sT, int backward, const float *d_o, const float *d_sT,
                   double *dq, double *dk, double *dv, double *dg, double *dg_gamma,
                   double *ds0, double *dg_abs) {
    const int64_t N = d->cu_seqlens ? d->n_seqs : d->B, H = d->H, K = d->K, V = d->V;
    const int64_t gw = per_key ? K : 1;
    const size_t KV = (size_t)(K * V);
    gla_tmp t;
    if (gla_tmp_alloc(&t, d->T, K, V, gw)) return -1;
    if (dg_gamma)
        for (int64_t h = 0; h < H; h++) dg_gamma[h] = 0;
    if (dg_abs)
        for (int64_t h = 0; h < H; h++) dg_abs[h] = 0;
    int bad = 0;
    for (int64_t n = 0; n < N && !bad; n++)
        for (int64_t h = 0; h < H && !bad; h++) {
            const size_t idx = (size_t)(n * H + h);
            const int64_t len = ref_gather(t.q, q, d, n, h, H, K);
            ref_gather(t.k, k, d, n, h, H, K);
            ref_gather(t.v, v, d, n, h, H, V);
            if (g) ref_gather(t.g, g, d, n, h, H, gw);
            load_state(t.s0, s0, idx, KV);
            const double gam = g_gamma ? (double)g_gamma[h] : 0.0;
            const double *gp = g ? t.g : NULL;
            if (!backward) {
                ref_gla_forward(per_key, len, K, V, scale, t.q, t.k, t.v, gp, gam, t.s0, t.o,
                                t.sT);
                if (o) ref_scatter(o, t.o, d, n, h, H, V);
                if (sT) memcpy(sT + idx * KV, t.sT, KV * sizeof(double));
                continue;
            }
            ref_gather(t.dout, d_o, d, n, h, H, V);
            load_state(t.dsT, d_sT, idx, KV);
            double dgam = 0;
            bad |= ref_gla_backward(per_key, len, K, V, scale, t.q, t.k, t.v, gp, gam, t.s0,
                                    t.dout, t.dsT, t.dq, t.dk, t.dv, t.dg, &dgam, t.ds0) != 0;
            if (dq) ref_scatter(dq, t.dq, d, n, h, H, K);
            if (dk) ref_scatter(dk, t.dk, d, n, h, H, K);
            if (dv) ref_scatter(dv, t.dv, d, n, h, H, V);
            if (dg && g) ref_scatter(dg, t.dg, d, n, h, H, gw);
            if (ds0) memcpy(ds0 + idx * KV, t.ds0, KV * sizeof(double));
            if (dg_gamma) dg_gamma[h] += dgam;
            if (dg_abs && !per_key)
                for (int64_t i = 0; i < len; i++) dg_abs[h] += fabs(t.dg[i]);
        }
    gla_tmp_free(&t);
    return bad ? -1 : 0;
}

int ref_gla_forward_all(int per_key, const la_dims *d, double scale, const float *q,
                        const float *k, const float *v, const float *g, const float *g_gamma,
                        const float *s0, double *o, double *sT) {
    return gla_all(per_key, d, scale, q, k, v, g, g_gamma, s0, o, sT, 0, NULL, NULL, NULL, NULL,
                   NULL, NULL, NULL, NULL, NULL);
}

int ref_gla_backward_all(int per_key, const la_dims *d, double scale, const float *q,
                         const float *k, const float *v, const float *g, const float *g_gamma,
                         const float *s0, const float *d_o, const float *d_sT, double *dq,
                         double *dk, double *dv, double *dg, double *dg_gamma, double *ds0,
                         double *dg_abs) {
    return gla_all(per_key, d, scale, q, k, v, g, g_gamma, s0, NULL, NULL, 1, d_o, d_sT, dq, dk,
                   dv, dg, dg_gamma, ds0, dg_abs);
}
