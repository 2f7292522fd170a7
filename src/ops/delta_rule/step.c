/* The per-token arithmetic of the delta rules, shared by the recurrent form
 * and the decoder (its registry step, entry.c) so that decoding equals the
 * recurrent forward bit for bit. */
#include "delta_rule.h"

#include <string.h>
#include "../../kernels/rowvec.h"
#include "../../kernels/stream.h"
#include "../../kernels/isa_builds.h"

#if defined(__GNUC__)
#define DELTA_INLINE static inline __attribute__((always_inline))
#else
#define DELTA_INLINE static inline
#endif

#include <math.h>

/* The sum of squares in eight partial sums (fixed order, so deterministic):
 * one serial chain of n additions would cost more than the rest of a
 * decoding step's O(K) work. */
DELTA_INLINE float l2norm_row(float *y, const float *x, int64_t n) {
#if defined(__GNUC__)
    /* the eight partial sums as one vector: left to itself, GCC's AVX-512
     * build of the rows below shuffled 16 of them into lanes (0.94x the
     * DeltaNet forward); lane by lane the same sums */
    typedef float v8 __attribute__((vector_size(32)));
    v8 p = {0, 0, 0, 0, 0, 0, 0, 0};
#else
    float p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#endif
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
#if defined(__GNUC__)
        v8 xv;
        memcpy(&xv, x + i, sizeof xv);
        p += xv * xv;
#else
        for (int l = 0; l < 8; l++) p[l] += x[i + l] * x[i + l];
#endif
    }
    for (int l = 0; i < n; i++, l++) p[l] += x[i] * x[i];
    const float ss = ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
    const float rstd = 1.0f / sqrtf(ss + LA__DELTA_L2_EPS);
    for (i = 0; i < n; i++) y[i] = x[i] * rstd;
    return rstd;
}

float la__delta_l2norm(float *y, const float *x, int64_t n) { return l2norm_row(y, x, n); }

/* la__delta_l2norm of `rows` rows (x rows xs floats apart, y rows ys apart),
 * built per ISA (cpu-fwd24): the chunk forward's gather normalises a token's
 * rows of all its heads in one call; the baseline build ran 4 floats at a
 * time. The same operations in the same order, no contraction: the same
 * bits as la__delta_l2norm on every path. */
DELTA_INLINE void l2norm_rows_body(float *restrict y, int64_t ys, const float *restrict x,
                                   int64_t xs, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++) (void)l2norm_row(y + r * ys, x + r * xs, n);
}
LA_ISA_BUILDS(, la__delta_l2norm_rows, l2norm_rows_body,
              (float *restrict y, int64_t ys, const float *restrict x, int64_t xs, int64_t rows,
               int64_t n),
              (y, ys, x, xs, rows, n))

void la__delta_gather_qk(const float *q, const float *k, int64_t tok0, int64_t len, int64_t H,
                         int64_t hq, int64_t K, int l2norm, float *qn, float *kn, float *rq,
                         float *rk) {
    la__delta_gather_qk_group(q, k, tok0, len, H, hq, 1, K, l2norm, qn, kn, rq, rk);
}

/* Token by token, the group's q (then k) rows are adjacent in memory: one
 * page walk and one prefetch stream per token for the whole group. Each
 * row's arithmetic is that of la__delta_l2norm alone, so the group size
 * changes no bit. */
void la__delta_gather_qk_group(const float *q, const float *k, int64_t tok0, int64_t len, int64_t H,
                               int64_t hq0, int64_t nq, int64_t K, int l2norm, float *qn, float *kn,
                               float *rq, float *rk) {
    const size_t hs = (size_t)(len * K); /* head stride of qn, kn */
    for (int64_t t = 0; t < len; t++) {
        const size_t qh = (size_t)((tok0 + t) * H + hq0) * (size_t)K;
        if (t + LA__DELTA_AHEAD < len) {
            la__delta_prefetch(q + qh + (size_t)(LA__DELTA_AHEAD * H * K), nq * K, 0);
            la__delta_prefetch(k + qh + (size_t)(LA__DELTA_AHEAD * H * K), nq * K, 0);
        }
        for (int64_t h = 0; h < nq; h++) {
            const size_t src = qh + (size_t)(h * K), dst = (size_t)h * hs + (size_t)(t * K);
            if (l2norm) {
                rq[h * len + t] = la__delta_l2norm(qn + dst, q + src, K);
                rk[h * len + t] = la__delta_l2norm(kn + dst, k + src, K);
            } else {
                memcpy(qn + dst, q + src, (size_t)K * sizeof(float));
                memcpy(kn + dst, k + src, (size_t)K * sizeof(float));
            }
        }
    }
}

/* Through the L2 norm y = x rstd: dx = rstd (dy - (y . dy) y), one token's
 * rows of the whole group after another (adjacent in dq and dk); all of
 * dq's rows, then all of dk's.
 * cpu-delta8: a head's rows lie H K floats apart (4 KiB at H = 8, K = 128),
 * so the rows of dq and dk written (and prefetched) together fell into the
 * same few L1 sets and evicted each other before they were written; one
 * tensor at a time halves that. The row itself is built for AVX2 /
 * AVX-512 where active (the baseline loop stored 16 bytes at a time and
 * stalled on its stores: 9 in 10 of the scatter's samples). Elementwise
 * the same operations, no contraction: the same bits on every path.
 * Alone (T = 8192, H = 8, K = 128, the fused backward's chunk calls):
 * 30 -> 15 ms. */
#define SCATTER_ROW_BODY                                                                           \
    for (int64_t i = 0; i < n; i++) dx[i] = rs * (dy[i] - yd * y[i])

static void scatter_row_base(float *restrict dx, const float *restrict dy, const float *restrict y,
                             float yd, float rs, int64_t n) {
    SCATTER_ROW_BODY;
}

#if defined(__GNUC__) && defined(__x86_64__)
#define DELTA_SCATTER_512 1
__attribute__((target("avx512f"))) static void
scatter_row_512(float *restrict dx, const float *restrict dy, const float *restrict y, float yd,
                float rs, int64_t n) {
    SCATTER_ROW_BODY;
}
__attribute__((target("avx2"))) static void
scatter_row_256(float *restrict dx, const float *restrict dy, const float *restrict y, float yd,
                float rs, int64_t n) {
    SCATTER_ROW_BODY;
}
#endif

static void scatter_row(float *dx, const float *dy, const float *y, float yd, float rs, int64_t n) {
#ifdef DELTA_SCATTER_512
    if (la_isa_active() == LA_ISA_AVX512) {
        scatter_row_512(dx, dy, y, yd, rs, n);
        return;
    }
    if (la_isa_active() == LA_ISA_AVX2) {
        scatter_row_256(dx, dy, y, yd, rs, n);
        return;
    }
#endif
    scatter_row_base(dx, dy, y, yd, rs, n);
}

/* stream (cpu-kda22): the rows with non-temporal stores (kernels/stream.h),
 * each built in a small L1 row first (the same elementwise operations:
 * the same bits), and no write prefetches; the caller fences. */
static void scatter_group(float *dq, float *dk, int64_t tok0, int64_t len, int64_t H, int64_t hq0,
                          int64_t nq, int64_t K, int l2norm, const float *qn, const float *kn,
                          const float *rq, const float *rk, const float *dqn, const float *dkn,
                          int stream) {
    enum { PIECE = 256 };
    float tmp[PIECE];
    const size_t hs = (size_t)(len * K);
    for (int m = 0; m < 2; m++) {
        float *dx0 = m ? dk : dq;
        const float *y0 = m ? kn : qn, *dy0 = m ? dkn : dqn, *r0 = m ? rk : rq;
        for (int64_t t = 0; t < len; t++) {
            const size_t qh = (size_t)((tok0 + t) * H + hq0) * (size_t)K;
            if (!stream && t + LA__DELTA_AHEAD < len)
                la__delta_prefetch(dx0 + qh + (size_t)(LA__DELTA_AHEAD * H * K), nq * K, 1);
            for (int64_t h = 0; h < nq; h++) {
                const size_t o = (size_t)h * hs + (size_t)(t * K);
                const float *y = y0 + o, *dy = dy0 + o;
                float *dx = dx0 + qh + (size_t)(h * K);
                if (!l2norm) {
                    if (stream)
                        la__stream_copy(dx, dy, (size_t)K);
                    else
                        memcpy(dx, dy, (size_t)K * sizeof(float));
                    continue;
                }
                const float rs = r0[h * len + t];
                const float yd = la__delta_dot(y, dy, K);
                if (!stream) {
                    scatter_row(dx, dy, y, yd, rs, K);
                    continue;
                }
                for (int64_t i = 0; i < K; i += PIECE) {
                    const int64_t n = K - i < PIECE ? K - i : PIECE;
                    scatter_row(tmp, dy + i, y + i, yd, rs, n);
                    la__stream_copy(dx + i, tmp, (size_t)n);
                }
            }
        }
    }
}

void la__delta_scatter_dqk_group(float *dq, float *dk, int64_t tok0, int64_t len, int64_t H,
                                 int64_t hq0, int64_t nq, int64_t K, int l2norm, const float *qn,
                                 const float *kn, const float *rq, const float *rk,
                                 const float *dqn, const float *dkn) {
    scatter_group(dq, dk, tok0, len, H, hq0, nq, K, l2norm, qn, kn, rq, rk, dqn, dkn, 0);
}

void la__delta_scatter_dqk_group_stream(float *dq, float *dk, int64_t tok0, int64_t len, int64_t H,
                                        int64_t hq0, int64_t nq, int64_t K, int l2norm,
                                        const float *qn, const float *kn, const float *rq,
                                        const float *rk, const float *dqn, const float *dkn) {
    scatter_group(dq, dk, tok0, len, H, hq0, nq, K, l2norm, qn, kn, rq, rk, dqn, dkn, 1);
}

/* Two passes over S, the first read-only:
 *   r = k S_{t-1}                       (recall before the decay)
 *   u = beta (v - a r)                  (a r = k (a S_{t-1}), the decayed recall)
 *   S_t = a S_{t-1} + kᵀ u,  o = scale q S_t   (one read+write pass, o from
 *                                         each freshly written row)
 * Every element sees the same operations in the same order at any vector
 * width (no contraction), so the AVX2 build rounds exactly as the portable
 * one. */
#ifdef LA_ROWVEC
/* Columns [j0, j0 + 16 nv), with an output: both passes over the block
 * before the next one (its row pieces are still in L1 for the second pass),
 * r's and o's blocks in registers. */
DELTA_INLINE void delta_block(const int nv, int64_t K, int64_t V, int64_t j0, float a, float beta,
                              float scale, float *restrict S, float *restrict o,
                              const float *restrict q, const float *restrict k,
                              const float *restrict v) {
    la__v16 rr[LA_ROWVEC_MAXV], sum[LA_ROWVEC_MAXV];
    const la__v16 zero = {0};
    for (int c = 0; c < nv; c++) rr[c] = sum[c] = zero;
    for (int64_t i = 0; i < K; i++) {
        const float ki = k[i];
        const float *restrict row = S + i * V + j0;
        for (int c = 0; c < nv; c++) {
            la__v16 x;
            LA_V16_LOAD(x, row + 16 * c);
            rr[c] = rr[c] + ki * x;
        }
    }
    for (int c = 0; c < nv; c++) {
        la__v16 vv;
        LA_V16_LOAD(vv, v + j0 + 16 * c);
        rr[c] = beta * (vv - a * rr[c]);
    }
    for (int64_t i = 0; i < K; i++) {
        const float ki = k[i], qi = scale * q[i];
        float *restrict row = S + i * V + j0;
        for (int c = 0; c < nv; c++) {
            la__v16 x;
            LA_V16_LOAD(x, row + 16 * c);
            x = a * x + ki * rr[c];
            LA_V16_STORE(row + 16 * c, x);
            sum[c] = sum[c] + qi * x;
        }
    }
    for (int c = 0; c < nv; c++) LA_V16_STORE(o + j0 + 16 * c, sum[c]);
}

DELTA_INLINE void delta_block8(const int nv, int64_t K, int64_t V, int64_t j0, float a, float beta,
                              float scale, float *restrict S, float *restrict o,
                              const float *restrict q, const float *restrict k,
                              const float *restrict v) {
    la__v8 rr[LA_ROWVEC_MAXV], sum[LA_ROWVEC_MAXV];
    const la__v8 zero = {0};
    for (int c = 0; c < nv; c++) rr[c] = sum[c] = zero;
    for (int64_t i = 0; i < K; i++) {
        const float ki = k[i];
        const float *restrict row = S + i * V + j0;
        for (int c = 0; c < nv; c++) {
            la__v8 x;
            LA_V8_LOAD(x, row + 8 * c);
            rr[c] = rr[c] + ki * x;
        }
    }
    for (int c = 0; c < nv; c++) {
        la__v8 vv;
        LA_V8_LOAD(vv, v + j0 + 8 * c);
        rr[c] = beta * (vv - a * rr[c]);
    }
    for (int64_t i = 0; i < K; i++) {
        const float ki = k[i], qi = scale * q[i];
        float *restrict row = S + i * V + j0;
        for (int c = 0; c < nv; c++) {
            la__v8 x;
            LA_V8_LOAD(x, row + 8 * c);
            x = a * x + ki * rr[c];
            LA_V8_STORE(row + 8 * c, x);
            sum[c] = sum[c] + qi * x;
        }
    }
    for (int c = 0; c < nv; c++) LA_V8_STORE(o + j0 + 8 * c, sum[c]);
}
#endif

DELTA_INLINE void delta_rows(const int wide, int64_t K, int64_t V, float a, float beta,
                             float scale, float *restrict S, float *restrict o,
                             const float *restrict q, const float *restrict k,
                             const float *restrict v, float *restrict r) {
    int64_t j0 = 0;
#ifdef LA_ROWVEC
    if (o) {
        const int nv8 = wide == LA_ROWVEC_NARROW ? 0 : 4; /* baseline: the plain loop below */
        for (; wide == LA_ROWVEC_WIDE && j0 + 128 <= V; j0 += 128)
            delta_block(8, K, V, j0, a, beta, scale, S, o, q, k, v);
        for (; nv8 && j0 + 8 * nv8 <= V; j0 += 8 * nv8)
            delta_block8(nv8, K, V, j0, a, beta, scale, S, o, q, k, v);
    }
    if (j0 == V) return;
#else
    (void)wide;
#endif
    /* The remaining columns [j0, V) (all of them without an output). */
    for (int64_t j = j0; j < V; j++) r[j] = 0;
    int64_t i = 0;
    /* Four rows per sweep of r (r read and written once per four rows);
     * each r[j] still adds its terms in row order. */
    for (; i + 4 <= K; i += 4) {
        const float k0 = k[i], k1 = k[i + 1], k2 = k[i + 2], k3 = k[i + 3];
        const float *restrict S0 = S + i * V, *restrict S1 = S0 + V, *restrict S2 = S1 + V,
                              *restrict S3 = S2 + V;
        for (int64_t j = j0; j < V; j++)
            r[j] = (((r[j] + k0 * S0[j]) + k1 * S1[j]) + k2 * S2[j]) + k3 * S3[j];
    }
    for (; i < K; i++) {
        const float ki = k[i];
        const float *restrict Si = S + i * V;
        for (int64_t j = j0; j < V; j++) r[j] += ki * Si[j];
    }
    for (int64_t j = j0; j < V; j++) r[j] = beta * (v[j] - a * r[j]);
    if (!o) {
        for (i = 0; i < K; i++) {
            const float ki = k[i];
            float *restrict Si = S + i * V;
            for (int64_t j = j0; j < V; j++) Si[j] = a * Si[j] + ki * r[j];
        }
        return;
    }
    for (int64_t j = j0; j < V; j++) o[j] = 0;
    for (i = 0; i < K; i++) {
        const float ki = k[i], qi = scale * q[i];
        float *restrict Si = S + i * V;
        for (int64_t j = j0; j < V; j++) {
            const float s = a * Si[j] + ki * r[j];
            Si[j] = s;
            o[j] += qi * s;
        }
    }
}

static void delta_rows_portable(int64_t K, int64_t V, float a, float beta, float scale, float *S,
                                float *o, const float *q, const float *k, const float *v,
                                float *r) {
    delta_rows(LA_ROWVEC_NARROW, K, V, a, beta, scale, S, o, q, k, v, r);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define DELTA_ROWS_AVX2 1
__attribute__((target("avx2"))) static void
delta_rows_avx2(int64_t K, int64_t V, float a, float beta, float scale, float *S, float *o,
                const float *q, const float *k, const float *v, float *r) {
    delta_rows(LA_ROWVEC_AVX2, K, V, a, beta, scale, S, o, q, k, v, r);
}

__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2"))) static void
delta_rows_avx512(int64_t K, int64_t V, float a, float beta, float scale, float *S, float *o,
                  const float *q, const float *k, const float *v, float *r) {
    delta_rows(LA_ROWVEC_WIDE, K, V, a, beta, scale, S, o, q, k, v, r);
}
#endif

void la__delta_token(int64_t K, int64_t V, int l2norm, float scale, float *S, float *o,
                     const float *q, const float *k, const float *v, const float *g, float beta,
                     float *work) {
    float *qn = work, *kn = work + K, *r = work + 2 * K; /* [K], [K], [V] */
    if (l2norm) {
        if (o) la__delta_l2norm(qn, q, K);
        la__delta_l2norm(kn, k, K);
        q = qn;
        k = kn;
    }
    const float a = g ? expf(*g) : 1.0f; /* a = 1: a x == x exactly */
#ifdef DELTA_ROWS_AVX2
    const la_isa isa = la_isa_active();
    if (isa == LA_ISA_AVX512) {
        delta_rows_avx512(K, V, a, beta, scale, S, o, q, k, v, r);
        return;
    }
    if (isa == LA_ISA_AVX2) {
        delta_rows_avx2(K, V, a, beta, scale, S, o, q, k, v, r);
        return;
    }
#endif
    delta_rows_portable(K, V, a, beta, scale, S, o, q, k, v, r);
}
