/* Softmax attention internals: one (sequence, head) view of the tensors and
 * the per-head kernels of the two forms. The public entry points (api.c)
 * validate everything, size and reserve the scratch, then call these kernels
 * from la__parallel_for; a kernel cannot fail and writes only the rows of
 * its own (sequence, head).
 *
 * Precision policy. Textbook form: q.k and dO.v are accumulated in double
 * (products of two floats are exact in double) and the scaled score is
 * rounded once to float; row sums, output accumulators and gradient
 * accumulators are double, rounded to float when written.
 * Streaming form, forward and backward: the products of one (query block,
 * key block) pair (scores, P·V, dO·Vᵀ, Pᵀ·dO, dSᵀ·Q, dS·K) are float32
 * micro-kernel calls (src/kernels, FMA) on contiguous copies of the blocks;
 * e^x is the vectorised float exp of src/kernels/vexp.h; row sums,
 * D = rowsum(dO ⊙ O) and every accumulator across blocks stay in double.
 * Measured max-rel error vs float64 <= 1.3e-6 for o, lse and the gradients
 * (tests assert 2e-6). A row whose float scores overflow (|q|, |k| ~ 1e20)
 * is recomputed in double with saturation (sa_scores). */
#ifndef LINATTN_SOFTMAX_ATTN_H
#define LINATTN_SOFTMAX_ATTN_H

#include "../../core/internal.h"
#include "../../kernels/kernels.h"

#include <float.h>
#include <stddef.h>
#include <stdint.h>

/* One sequence and one head. Token t of the sequence lives at row t of each
 * pointer below with the given row stride (in floats). */
typedef struct sa_head {
    int64_t len;      /* tokens in the sequence (queries and keys) */
    int64_t kv_len;   /* keys j >= kv_len are padding */
    int causal;
    float scale;
    int64_t K, V;
    int64_t block;    /* streaming block size, 1 <= block <= len */
    int64_t qk_stride, v_stride, lse_stride; /* H*K, H*V, H */
    const float *q, *k, *v, *d_o;
    float *o, *lse;   /* forward outputs (lse may be NULL) */
    float *dq, *dk, *dv;
    const la__kernels *kr; /* micro-kernels of this call (streaming form) */
} sa_head;

/* Keys visible to query t are j < sa_visible(hd, t) (always >= 1). */
static inline int64_t sa_visible(const sa_head *hd, int64_t t) {
    if (hd->causal && t + 1 < hd->kv_len) return t + 1;
    return hd->kv_len;
}

/* sum_i a[i]*b[i] in double. */
static inline double sa_dot(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

/* out[r] = a . rows[r * stride ...] for r < n_rows, each in double and summed
 * in the same order as sa_dot (so bitwise equal to it); four rows are
 * interleaved so their independent sums overlap in the pipeline. */
static inline void sa_dots(const float *a, const float *rows, int64_t stride, int64_t n_rows,
                           int64_t len, double *out) {
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) {
        const float *b0 = rows + r * stride, *b1 = b0 + stride, *b2 = b1 + stride,
                    *b3 = b2 + stride;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (int64_t i = 0; i < len; i++) {
            const double x = a[i];
            s0 += x * (double)b0[i];
            s1 += x * (double)b1[i];
            s2 += x * (double)b2[i];
            s3 += x * (double)b3[i];
        }
        out[r] = s0;
        out[r + 1] = s1;
        out[r + 2] = s2;
        out[r + 3] = s3;
    }
    for (; r < n_rows; r++) out[r] = sa_dot(a, rows + r * stride, len);
}

/* A score rounded to float. Finite inputs can still give a score beyond the
 * float range (|q|, |k| ~ 1e20); it saturates at +-FLT_MAX instead of
 * becoming Inf, so "score - max" never turns into Inf - Inf = NaN. */
static inline float sa_score(double x) {
    return (float)(x > FLT_MAX ? FLT_MAX : x < -FLT_MAX ? -FLT_MAX : x);
}

/* s[j] = sa_score(scale * q . k_j) for the n keys starting at k (row stride
 * `stride`), four at a time through sa_dots. */
static inline void sa_scores(const float *q, const float *k, int64_t stride, int64_t n,
                             int64_t len, double scale, float *s) {
    double d[4];
    for (int64_t j = 0; j < n; j += 4) {
        const int64_t m = n - j < 4 ? n - j : 4;
        sa_dots(q, k + j * stride, stride, m, len, d);
        for (int64_t r = 0; r < m; r++) s[j + r] = sa_score(scale * d[r]);
    }
}

/* Scratch bytes each kernel needs for a head of up to Tmax tokens; each
 * returns 0 if the size overflows size_t (the caller reports it). */
LA_HIDDEN int sa_textbook_forward_bytes(int64_t Tmax, int64_t K, int64_t V, size_t *bytes);
LA_HIDDEN int sa_textbook_backward_bytes(int64_t Tmax, int64_t K, int64_t V, size_t *bytes);
LA_HIDDEN int sa_streaming_forward_bytes(int64_t block, int64_t K, int64_t V, size_t *bytes);
LA_HIDDEN int sa_streaming_backward_bytes(int64_t Tmax, int64_t block, int64_t K, int64_t V,
                                          size_t *bytes);

/* Textbook: materialise the len x len matrix of the head, then O = P V. */
LA_HIDDEN void sa_textbook_forward(const sa_head *hd, void *scratch);
LA_HIDDEN void sa_textbook_backward(const sa_head *hd, void *scratch);
/* Streaming forward of query rows [r0, r0 + n) (n <= block). */
LA_HIDDEN void sa_streaming_forward_rows(const sa_head *hd, int64_t r0, int64_t n,
                                         void *scratch);
LA_HIDDEN void sa_streaming_backward(const sa_head *hd, void *scratch);

#endif
