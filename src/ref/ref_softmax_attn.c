#include "ref_softmax_attn.h"

#include "ref_util.h"

#include <math.h>
#include <stdlib.h>

static int64_t visible(int64_t t, int causal, int64_t kv_len) {
    return causal && t + 1 < kv_len ? t + 1 : kv_len;
}

/* P [T,T]: row t holds p_tj for the visible keys, 0 elsewhere; lse [T]. */
static void probabilities(double *P, double *lse, const double *q, const double *k, int64_t T,
                          int64_t K, double scale, int causal, int64_t kv_len) {
    for (int64_t t = 0; t < T; t++) {
        const int64_t hi = visible(t, causal, kv_len);
        double *row = P + t * T;
        double m = -INFINITY;
        for (int64_t j = 0; j < T; j++) {
            row[j] = 0;
            if (j >= hi) continue;
            double s = 0;
            for (int64_t c = 0; c < K; c++) s += q[t * K + c] * k[j * K + c];
            row[j] = scale * s;
            if (row[j] > m) m = row[j];
        }
        double l = 0;
        for (int64_t j = 0; j < hi; j++) l += exp(row[j] - m);
        for (int64_t j = 0; j < hi; j++) row[j] = exp(row[j] - m) / l;
        if (lse) lse[t] = m + log(l);
    }
}

int ref_softmax_attn_forward(double *o, double *lse, const double *q, const double *k,
                             const double *v, int64_t T, int64_t K, int64_t V, double scale,
                             int causal, int64_t kv_len) {
    double *P = malloc((size_t)(T * T) * sizeof *P);
    if (!P) return 0;
    probabilities(P, lse, q, k, T, K, scale, causal, kv_len);
    /* o_t = sum_j p_tj v_j (loops ordered to walk rows) */
    for (int64_t i = 0; i < T * V; i++) o[i] = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < T; j++)
            for (int64_t d = 0; d < V; d++) o[t * V + d] += P[t * T + j] * v[j * V + d];
    free(P);
    return 1;
}

int ref_softmax_attn_backward(double *dq, double *dk, double *dv, const double *d_o,
                              const double *q, const double *k, const double *v, int64_t T,
                              int64_t K, int64_t V, double scale, int causal, int64_t kv_len) {
    double *P = malloc((size_t)(T * T) * sizeof *P);
    double *dS = malloc((size_t)(T * T) * sizeof *dS);
    if (!P || !dS) {
        free(P);
        free(dS);
        return 0;
    }
    probabilities(P, NULL, q, k, T, K, scale, causal, kv_len);
    for (int64_t t = 0; t < T; t++) {
        double rowdot = 0;
        for (int64_t j = 0; j < T; j++) {
            double dp = 0;
            for (int64_t d = 0; d < V; d++) dp += d_o[t * V + d] * v[j * V + d];
            dS[t * T + j] = dp;
            rowdot += P[t * T + j] * dp;
        }
        for (int64_t j = 0; j < T; j++) dS[t * T + j] = P[t * T + j] * (dS[t * T + j] - rowdot);
    }
    /* dv_j = sum_t p_tj d_o_t, dk_j = scale sum_t ds_tj q_t, dq_t = scale sum_j ds_tj k_j */
    for (int64_t i = 0; i < T * V; i++) dv[i] = 0;
    for (int64_t i = 0; i < T * K; i++) dk[i] = dq[i] = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < T; j++) {
            for (int64_t d = 0; d < V; d++) dv[j * V + d] += P[t * T + j] * d_o[t * V + d];
            for (int64_t c = 0; c < K; c++) {
                dk[j * K + c] += scale * dS[t * T + j] * q[t * K + c];
                dq[t * K + c] += scale * dS[t * T + j] * k[j * K + c];
            }
        }
    free(P);
    free(dS);
    return 1;
}

int ref_softmax_attn_batch(const la_dims *d, int causal, double scale, const int64_t *kv_lens,
                           const float *q, const float *k, const float *v, const float *d_o,
                           double *o, double *lse, double *dq, double *dk, double *dv) {
    const int64_t N = d->cu_seqlens ? d->n_seqs : d->B, H = d->H, K = d->K, V = d->V;
    const int64_t T = d->T; /* every sequence is at most T long */
    const size_t tk = (size_t)(T * K), tv = (size_t)(T * V);
    double *qs = malloc(tk * sizeof *qs), *ks = malloc(tk * sizeof *ks);
    double *vs = malloc(tv * sizeof *vs), *dos = malloc(tv * sizeof *dos);
    double *os = malloc(tv * sizeof *os), *ls = malloc((size_t)T * sizeof *ls);
    double *dqs = malloc(tk * sizeof *dqs), *dks = malloc(tk * sizeof *dks);
    double *dvs = malloc(tv * sizeof *dvs);
    int ok = qs && ks && vs && dos && os && ls && dqs && dks && dvs;
    for (int64_t n = 0; ok && n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t len = ref_gather(qs, q, d, n, h, H, K);
            ref_gather(ks, k, d, n, h, H, K);
            ref_gather(vs, v, d, n, h, H, V);
            const int64_t kv_len = kv_lens ? kv_lens[n] : len;
            ok = ref_softmax_attn_forward(os, ls, qs, ks, vs, len, K, V, scale, causal, kv_len);
            if (!ok) break;
            if (o) ref_scatter(o, os, d, n, h, H, V);
            if (lse) ref_scatter(lse, ls, d, n, h, H, 1);
            if (d_o) {
                ref_gather(dos, d_o, d, n, h, H, V);
                ok = ref_softmax_attn_backward(dqs, dks, dvs, dos, qs, ks, vs, len, K, V,
                                               scale, causal, kv_len);
                if (!ok) break;
                if (dq) ref_scatter(dq, dqs, d, n, h, H, K);
                if (dk) ref_scatter(dk, dks, d, n, h, H, K);
                if (dv) ref_scatter(dv, dvs, d, n, h, H, V);
            }
        }
    free(qs); free(ks); free(vs); free(dos); free(os); free(ls); free(dqs); free(dks); free(dvs);
    return ok;
}
