/* Textbook softmax attention: per (sequence, head) the len x len matrix of
 * scores is materialised in per-thread scratch, turned into probabilities
 * row by row (max subtracted before exp), and multiplied by V. The backward
 * goes through the same probability matrix:
 *   dV = P^T dO,  dP = dO V^T,  dS = P o (dP - rowsum(P o dP)),
 *   dQ = s dS K,  dK = s dS^T Q.
 * O(len^2) memory by design: this is the baseline the streaming form and the
 * linear-attention family are measured against. */
#include "softmax_attn.h"

#include <math.h>
#include <string.h>

/* The buffers of one head: [len, len] scores (P in the backward), and the
 * forward's output row or the backward's dP row, dq row, dk and dv. */
typedef struct tb_work {
    float *S;
    double *acc, *dp, *dq_row, *dk_acc, *dv_acc;
} tb_work;

static tb_work take_tb_work(la__arena *a, int64_t len, int64_t K, int64_t V, int backward) {
    const uint64_t L = (uint64_t)len;
    tb_work w = {NULL, NULL, NULL, NULL, NULL, NULL};
    w.S = la__arena_take(a, L * L, sizeof(float));
    if (!backward) {
        w.acc = la__arena_take(a, (uint64_t)V, sizeof(double));
        return w;
    }
    w.dp = la__arena_take(a, L, sizeof(double));
    w.dq_row = la__arena_take(a, (uint64_t)K, sizeof(double));
    w.dk_acc = la__arena_take(a, L * (uint64_t)K, sizeof(double));
    w.dv_acc = la__arena_take(a, L * (uint64_t)V, sizeof(double));
    return w;
}

static int tb_bytes(int64_t Tmax, int64_t K, int64_t V, int backward, size_t *bytes) {
    const uint64_t t = (uint64_t)Tmax;
    if (t > UINT64_MAX / t || (uint64_t)K > UINT64_MAX / t || (uint64_t)V > UINT64_MAX / t)
        return 0;
    la__arena a = {NULL, 0, 0};
    take_tb_work(&a, Tmax, K, V, backward);
    *bytes = a.used;
    return !a.overflow;
}

int sa_textbook_forward_bytes(int64_t Tmax, int64_t K, int64_t V, size_t *bytes) {
    return tb_bytes(Tmax, K, V, 0, bytes);
}

int sa_textbook_backward_bytes(int64_t Tmax, int64_t K, int64_t V, size_t *bytes) {
    return tb_bytes(Tmax, K, V, 1, bytes);
}

/* Scaled scores of row i (keys j < hi) into s. */
static void score_row(const sa_head *hd, int64_t i, int64_t hi, float *s) {
    sa_scores(hd->q + i * hd->qk_stride, hd->k, hd->qk_stride, hi, hd->K, hd->scale, s);
}

/* s[j] <- exp(s[j] - max); returns the max, *l = sum of the exps. */
static float exp_row(float *s, int64_t n, double *l) {
    float m = s[0];
    for (int64_t j = 1; j < n; j++)
        if (s[j] > m) m = s[j];
    double sum = 0;
    for (int64_t j = 0; j < n; j++) {
        s[j] = expf(s[j] - m);
        sum += s[j];
    }
    *l = sum;
    return m;
}

void sa_textbook_forward(const sa_head *hd, void *scratch) {
    const int64_t L = hd->len, V = hd->V;
    la__arena p = {(char *)scratch, 0, 0};
    const tb_work tw = take_tb_work(&p, L, hd->K, V, 0);
    float *S = tw.S;
    double *acc = tw.acc;

    for (int64_t i = 0; i < L; i++) score_row(hd, i, sa_visible(hd, i), S + i * L);

    for (int64_t i = 0; i < L; i++) {
        const int64_t hi = sa_visible(hd, i);
        float *e = S + i * L;
        double l;
        const float m = exp_row(e, hi, &l);
        for (int64_t d = 0; d < V; d++) acc[d] = 0;
        for (int64_t j = 0; j < hi; j++) {
            const double w = e[j];
            const float *vj = hd->v + j * hd->v_stride;
            for (int64_t d = 0; d < V; d++) acc[d] += w * (double)vj[d];
        }
        float *oi = hd->o + i * hd->v_stride;
        for (int64_t d = 0; d < V; d++) oi[d] = (float)(acc[d] / l);
        if (hd->lse) hd->lse[i * hd->lse_stride] = (float)((double)m + log(l));
    }
}

void sa_textbook_backward(const sa_head *hd, void *scratch) {
    const int64_t L = hd->len, K = hd->K, V = hd->V, kv = hd->kv_len;
    la__arena p = {(char *)scratch, 0, 0};
    const tb_work tw = take_tb_work(&p, L, K, V, 1);
    float *P = tw.S;
    double *dp = tw.dp, *dq_row = tw.dq_row, *dk_acc = tw.dk_acc, *dv_acc = tw.dv_acc;

    /* The probability matrix, row-normalised. */
    for (int64_t i = 0; i < L; i++) {
        const int64_t hi = sa_visible(hd, i);
        float *row = P + i * L;
        score_row(hd, i, hi, row);
        double l;
        exp_row(row, hi, &l);
        for (int64_t j = 0; j < hi; j++) row[j] = (float)((double)row[j] / l);
    }

    memset(dk_acc, 0, (size_t)kv * (size_t)K * sizeof *dk_acc);
    memset(dv_acc, 0, (size_t)kv * (size_t)V * sizeof *dv_acc);
    for (int64_t i = 0; i < L; i++) {
        const int64_t hi = sa_visible(hd, i);
        const float *row = P + i * L;
        const float *qi = hd->q + i * hd->qk_stride;
        const float *doi = hd->d_o + i * hd->v_stride;
        double D = 0; /* rowsum(P o dP) = dO_i . O_i */
        for (int64_t j = 0; j < hi; j++) {
            double *dvj = dv_acc + j * V;
            const double pij = row[j];
            for (int64_t d = 0; d < V; d++) dvj[d] += pij * (double)doi[d];
        }
        sa_dots(doi, hd->v, hd->v_stride, hi, V, dp);
        for (int64_t j = 0; j < hi; j++) D += (double)row[j] * dp[j];
        for (int64_t c = 0; c < K; c++) dq_row[c] = 0;
        for (int64_t j = 0; j < hi; j++) {
            const double ds = (double)row[j] * (dp[j] - D);
            const float *kj = hd->k + j * hd->qk_stride;
            double *dkj = dk_acc + j * K;
            for (int64_t c = 0; c < K; c++) {
                dq_row[c] += ds * (double)kj[c];
                dkj[c] += ds * (double)qi[c];
            }
        }
        float *dqi = hd->dq + i * hd->qk_stride;
        for (int64_t c = 0; c < K; c++) dqi[c] = (float)((double)hd->scale * dq_row[c]);
    }
    for (int64_t j = 0; j < L; j++) {
        float *dkj = hd->dk + j * hd->qk_stride, *dvj = hd->dv + j * hd->v_stride;
        if (j < kv) {
            for (int64_t c = 0; c < K; c++) dkj[c] = (float)((double)hd->scale * dk_acc[j * K + c]);
            for (int64_t d = 0; d < V; d++) dvj[d] = (float)dv_acc[j * V + d];
        } else { /* padding keys take no part */
            for (int64_t c = 0; c < K; c++) dkj[c] = 0;
            for (int64_t d = 0; d < V; d++) dvj[d] = 0;
        }
    }
}
