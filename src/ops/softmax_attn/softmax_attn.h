/* Softmax attention internals: one (sequence, head) view of the tensors and
 * the per-head kernels of the two forms. The public entry points (api.c)
 * validate everything, size and reserve the scratch, then call these kernels
 * from la__parallel_for; a kernel cannot fail and writes only the rows of
 * its own (sequence, head).
 *
 * Precision policy (the same in both forms): q.k and dO.v are accumulated in
 * double (products of two floats are exact in double) and the scaled score is
 * rounded once to float; row sums, output accumulators and gradient
 * accumulators are double, rounded to float when written. */
#ifndef LINATTN_SOFTMAX_ATTN_H
#define LINATTN_SOFTMAX_ATTN_H

#include "../../core/internal.h"

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

/* Scratch layout helper: *total += align64(count * elem), 0 on overflow. */
static inline int sa_add_bytes(size_t *total, uint64_t count, size_t elem) {
    if (count > (SIZE_MAX - 64) / elem) return 0;
    size_t b = ((size_t)count * elem + 63) / 64 * 64;
    if (b > SIZE_MAX - *total) return 0;
    *total += b;
    return 1;
}

/* Carves the next align64(count * elem) bytes out of *p. */
static inline void *sa_take(char **p, uint64_t count, size_t elem) {
    void *r = *p;
    *p += ((size_t)count * elem + 63) / 64 * 64;
    return r;
}

#endif
