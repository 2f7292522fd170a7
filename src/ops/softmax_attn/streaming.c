/* Streaming (flash-attention style) softmax attention: O(T*D) memory.
 *
 * Forward: a block of queries walks over key blocks of the same size, keeping
 * per query the running max m, the running sum l of exp(s - m) and the
 * unnormalised output acc; when a key block raises the max, l and acc are
 * rescaled by exp(m_old - m_new) first, so no exp ever sees a positive
 * argument and large logits cannot overflow. o = acc / l, lse = m + log l.
 *
 * Backward (flash-attention-2): pass 1 recomputes lse_i and
 * D_i = dO_i . O_i per query (O in double, never stored); pass 2 walks over
 * key blocks, keeps dK, dV of the block in double accumulators, and for every
 * query that sees the block recomputes p = exp(s - lse) and
 * dS = p (dO_i . v_j - D_i). dQ is summed over key blocks in a per-head
 * [len, K] accumulator (flash-attention uses atomics there; one task per
 * head needs none, and the order is fixed, so nothing depends on the thread
 * count). Extra memory O(len (K + 2) + block (block + 2K + 2V)). */
#include "softmax_attn.h"

#include <math.h>
#include <string.h>

int sa_streaming_forward_bytes(int64_t block, int64_t K, int64_t V, size_t *bytes) {
    (void)K;
    size_t total = 0;
    uint64_t b = (uint64_t)block;
    if (b > UINT64_MAX / b || (uint64_t)V > UINT64_MAX / b) return 0;
    if (!sa_add_bytes(&total, b * b, sizeof(float))) return 0;          /* score tile */
    if (!sa_add_bytes(&total, b * (uint64_t)V, sizeof(double))) return 0; /* acc */
    if (!sa_add_bytes(&total, b, sizeof(float))) return 0;              /* m */
    if (!sa_add_bytes(&total, b, sizeof(double))) return 0;             /* l */
    *bytes = total;
    return 1;
}

int sa_streaming_backward_bytes(int64_t Tmax, int64_t block, int64_t K, int64_t V,
                                size_t *bytes) {
    size_t total = 0;
    uint64_t t = (uint64_t)Tmax, b = (uint64_t)block;
    if (!sa_streaming_forward_bytes(block, K, V, &total)) return 0;
    if ((uint64_t)K > UINT64_MAX / t || (uint64_t)K > UINT64_MAX / b ||
        (uint64_t)V > UINT64_MAX / b)
        return 0;
    if (!sa_add_bytes(&total, t, sizeof(double))) return 0;              /* lse */
    if (!sa_add_bytes(&total, t, sizeof(double))) return 0;              /* D */
    if (!sa_add_bytes(&total, t * (uint64_t)K, sizeof(double))) return 0; /* dq */
    if (!sa_add_bytes(&total, b * (uint64_t)K, sizeof(double))) return 0; /* dk block */
    if (!sa_add_bytes(&total, b * (uint64_t)V, sizeof(double))) return 0; /* dv block */
    if (!sa_add_bytes(&total, b, sizeof(double))) return 0;              /* s row */
    if (!sa_add_bytes(&total, b, sizeof(double))) return 0;              /* dp row */
    *bytes = total;
    return 1;
}

typedef struct stream_work {
    float *S;    /* [block, block] scores of the current tile */
    double *acc; /* [n, V] unnormalised outputs */
    float *m;    /* [n] running max */
    double *l;   /* [n] running sum of exp(s - m) */
} stream_work;

static stream_work take_stream_work(char **p, int64_t block, int64_t V) {
    stream_work w;
    w.S = sa_take(p, (uint64_t)block * (uint64_t)block, sizeof(float));
    w.acc = sa_take(p, (uint64_t)block * (uint64_t)V, sizeof(double));
    w.m = sa_take(p, (uint64_t)block, sizeof(float));
    w.l = sa_take(p, (uint64_t)block, sizeof(double));
    return w;
}

/* Online softmax of query rows [r0, r0 + n) over every visible key: leaves
 * acc, m, l in w. */
static void stream_rows(const sa_head *hd, int64_t r0, int64_t n, const stream_work *w) {
    const int64_t B = hd->block, K = hd->K, V = hd->V;
    const double scale = hd->scale;
    const int64_t kv_end = sa_visible(hd, r0 + n - 1); /* visibility grows with t */
    for (int64_t i = 0; i < n; i++) {
        w->m[i] = -INFINITY;
        w->l[i] = 0;
    }
    memset(w->acc, 0, (size_t)n * (size_t)V * sizeof *w->acc);

    for (int64_t kb = 0; kb < kv_end; kb += B) {
        const int64_t ke = kb + B < kv_end ? kb + B : kv_end;
        /* Score tile: row i holds the keys kb .. hi-1 that query r0+i sees. */
        for (int64_t i = 0; i < n; i++) {
            const int64_t vis = sa_visible(hd, r0 + i);
            const int64_t hi = vis < ke ? vis : ke;
            if (hi > kb)
                sa_scores(hd->q + (r0 + i) * hd->qk_stride, hd->k + kb * hd->qk_stride,
                          hd->qk_stride, hi - kb, K, scale, w->S + i * B);
        }
        for (int64_t i = 0; i < n; i++) {
            const int64_t vis = sa_visible(hd, r0 + i);
            const int64_t cnt = (vis < ke ? vis : ke) - kb;
            if (cnt <= 0) continue;
            float *s = w->S + i * B;
            double *acc = w->acc + i * V;
            float mt = s[0];
            for (int64_t j = 1; j < cnt; j++)
                if (s[j] > mt) mt = s[j];
            if (mt > w->m[i]) { /* new max: rescale what was summed so far */
                if (w->m[i] != -INFINITY) {
                    const double alpha = exp((double)w->m[i] - (double)mt);
                    w->l[i] *= alpha;
                    for (int64_t d = 0; d < V; d++) acc[d] *= alpha;
                }
                w->m[i] = mt;
            }
            const float m = w->m[i];
            double l = 0;
            for (int64_t j = 0; j < cnt; j++) {
                const float e = expf(s[j] - m);
                const float *vj = hd->v + (kb + j) * hd->v_stride;
                l += e;
                for (int64_t d = 0; d < V; d++) acc[d] += (double)e * (double)vj[d];
            }
            w->l[i] += l;
        }
    }
}

void sa_streaming_forward_rows(const sa_head *hd, int64_t r0, int64_t n, void *scratch) {
    char *p = scratch;
    const stream_work w = take_stream_work(&p, hd->block, hd->V);
    const int64_t V = hd->V;
    stream_rows(hd, r0, n, &w);
    for (int64_t i = 0; i < n; i++) {
        float *oi = hd->o + (r0 + i) * hd->v_stride;
        const double *acc = w.acc + i * V;
        for (int64_t d = 0; d < V; d++) oi[d] = (float)(acc[d] / w.l[i]);
        if (hd->lse) hd->lse[(r0 + i) * hd->lse_stride] = (float)((double)w.m[i] + log(w.l[i]));
    }
}

void sa_streaming_backward(const sa_head *hd, void *scratch) {
    const int64_t L = hd->len, B = hd->block, K = hd->K, V = hd->V, kv = hd->kv_len;
    const double scale = hd->scale;
    char *p = scratch;
    const stream_work w = take_stream_work(&p, B, V);
    double *lse = sa_take(&p, (uint64_t)L, sizeof(double));
    double *D = sa_take(&p, (uint64_t)L, sizeof(double));
    double *dq_acc = sa_take(&p, (uint64_t)L * (uint64_t)K, sizeof(double));
    double *dk_acc = sa_take(&p, (uint64_t)B * (uint64_t)K, sizeof(double));
    double *dv_acc = sa_take(&p, (uint64_t)B * (uint64_t)V, sizeof(double));
    double *s_row = sa_take(&p, (uint64_t)B, sizeof(double));
    double *dp_row = sa_take(&p, (uint64_t)B, sizeof(double));

    /* Pass 1: lse and D = rowsum(dO o O), O kept in double (never stored). */
    for (int64_t r0 = 0; r0 < L; r0 += B) {
        const int64_t n = r0 + B < L ? B : L - r0;
        stream_rows(hd, r0, n, &w);
        for (int64_t i = 0; i < n; i++) {
            const double *acc = w.acc + i * V;
            const float *doi = hd->d_o + (r0 + i) * hd->v_stride;
            double dot = 0;
            for (int64_t d = 0; d < V; d++) dot += (double)doi[d] * acc[d];
            D[r0 + i] = dot / w.l[i];
            lse[r0 + i] = (double)w.m[i] + log(w.l[i]);
        }
    }

    /* Pass 2: key blocks outer, visible queries inner. */
    memset(dq_acc, 0, (size_t)L * (size_t)K * sizeof *dq_acc);
    for (int64_t kb = 0; kb < kv; kb += B) {
        const int64_t ke = kb + B < kv ? kb + B : kv;
        memset(dk_acc, 0, (size_t)B * (size_t)K * sizeof *dk_acc);
        memset(dv_acc, 0, (size_t)B * (size_t)V * sizeof *dv_acc);
        /* Causal: queries before kb see none of these keys. */
        for (int64_t i = hd->causal ? kb : 0; i < L; i++) {
            const int64_t vis = sa_visible(hd, i);
            const int64_t hi = vis < ke ? vis : ke;
            if (hi <= kb) continue;
            const float *qi = hd->q + i * hd->qk_stride;
            const float *doi = hd->d_o + i * hd->v_stride;
            double *dqi = dq_acc + i * K;
            sa_dots(qi, hd->k + kb * hd->qk_stride, hd->qk_stride, hi - kb, K, s_row);
            sa_dots(doi, hd->v + kb * hd->v_stride, hd->v_stride, hi - kb, V, dp_row);
            for (int64_t j = kb; j < hi; j++) {
                const float *kj = hd->k + j * hd->qk_stride;
                const float s = sa_score(scale * s_row[j - kb]);
                const double pij = exp((double)s - lse[i]);
                double *dvj = dv_acc + (j - kb) * V, *dkj = dk_acc + (j - kb) * K;
                for (int64_t d = 0; d < V; d++) dvj[d] += pij * (double)doi[d];
                const double ds = pij * (dp_row[j - kb] - D[i]);
                for (int64_t c = 0; c < K; c++) {
                    dqi[c] += ds * (double)kj[c];
                    dkj[c] += ds * (double)qi[c];
                }
            }
        }
        for (int64_t j = kb; j < ke; j++) {
            float *dkj = hd->dk + j * hd->qk_stride, *dvj = hd->dv + j * hd->v_stride;
            for (int64_t c = 0; c < K; c++) dkj[c] = (float)(scale * dk_acc[(j - kb) * K + c]);
            for (int64_t d = 0; d < V; d++) dvj[d] = (float)dv_acc[(j - kb) * V + d];
        }
    }
    for (int64_t j = kv; j < L; j++) { /* padding keys take no part */
        float *dkj = hd->dk + j * hd->qk_stride, *dvj = hd->dv + j * hd->v_stride;
        for (int64_t c = 0; c < K; c++) dkj[c] = 0;
        for (int64_t d = 0; d < V; d++) dvj[d] = 0;
    }
    for (int64_t i = 0; i < L; i++) {
        float *dqi = hd->dq + i * hd->qk_stride;
        for (int64_t c = 0; c < K; c++) dqi[c] = (float)(scale * dq_acc[i * K + c]);
    }
}
