/* y [M,N] (+)= a [M,K] b [K,N], the one matrix product of the model.
 *
 * Every output element is a chain over k in index order: c = y or 0, then
 * c = c + a[m,k] b[k,n] for k = 0..K-1 — with a fused multiply-add on the
 * AVX2 path, a multiply then an add on the portable path. The chain does not
 * depend on M, on the blocking or on the thread that runs it, so one row
 * (decoding) rounds as the same row inside a batch (training), and results
 * are identical for any thread count. The path follows la_isa_active()
 * (LINATTN_ISA=portable selects the plain C loops). */
#include "gemm.h"

#include "linattn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LM_HAVE_AVX2 1
#endif

typedef struct gemm_job {
    float *y;
    const float *a, *b;
    int64_t M, K, N, rows_per_task;
    int64_t ars, aks; /* a[m,k] is a[m * ars + k * aks] */
    int acc;
} gemm_job;

static void rows_portable(const gemm_job *j, int64_t m0, int64_t m1) {
    const int64_t K = j->K, N = j->N;
    for (int64_t m = m0; m < m1; m++) {
        float *yr = j->y + m * N;
        const float *ar = j->a + m * j->ars;
        if (!j->acc)
            for (int64_t n = 0; n < N; n++) yr[n] = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const float s = ar[k * j->aks];
            const float *br = j->b + k * N;
            for (int64_t n = 0; n < N; n++) yr[n] += s * br[n];
        }
    }
}

#ifdef LM_HAVE_AVX2
/* R rows (1..4) x 16 columns, accumulators in registers. */
#define LM_AVX2 __attribute__((target("avx2,fma")))
static inline LM_AVX2 __attribute__((always_inline)) void block16(const gemm_job *j, int64_t m,
                                                                  int64_t n, const int R) {
    const int64_t K = j->K, N = j->N;
    __m256 c[4][2];
    for (int i = 0; i < R; i++)
        for (int h = 0; h < 2; h++)
            c[i][h] =
                j->acc ? _mm256_loadu_ps(j->y + (m + i) * N + n + 8 * h) : _mm256_setzero_ps();
    const float *bp = j->b + n;
    for (int64_t k = 0; k < K; k++, bp += N) {
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
        for (int i = 0; i < R; i++) {
            const __m256 s = _mm256_broadcast_ss(j->a + (m + i) * j->ars + k * j->aks);
            c[i][0] = _mm256_fmadd_ps(s, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(s, b1, c[i][1]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(j->y + (m + i) * N + n + 8 * h, c[i][h]);
}

static inline LM_AVX2 __attribute__((always_inline)) void block8(const gemm_job *j, int64_t m,
                                                                 int64_t n, const int R) {
    const int64_t K = j->K, N = j->N;
    __m256 c[4];
    for (int i = 0; i < R; i++)
        c[i] = j->acc ? _mm256_loadu_ps(j->y + (m + i) * N + n) : _mm256_setzero_ps();
    const float *bp = j->b + n;
    for (int64_t k = 0; k < K; k++, bp += N) {
        const __m256 b0 = _mm256_loadu_ps(bp);
        for (int i = 0; i < R; i++)
            c[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(j->a + (m + i) * j->ars + k * j->aks), b0,
                                   c[i]);
    }
    for (int i = 0; i < R; i++) _mm256_storeu_ps(j->y + (m + i) * N + n, c[i]);
}

static inline LM_AVX2 __attribute__((always_inline)) void rows_avx2_r(const gemm_job *j, int64_t m,
                                                                      const int R) {
    const int64_t K = j->K, N = j->N;
    int64_t n = 0;
    for (; n + 16 <= N; n += 16) block16(j, m, n, R);
    for (; n + 8 <= N; n += 8) block8(j, m, n, R);
    for (; n < N; n++)
        for (int i = 0; i < R; i++) {
            float c = j->acc ? j->y[(m + i) * N + n] : 0.0f;
            for (int64_t k = 0; k < K; k++)
                c = fmaf(j->a[(m + i) * j->ars + k * j->aks], j->b[k * N + n], c);
            j->y[(m + i) * N + n] = c;
        }
}

static LM_AVX2 void rows_avx2(const gemm_job *j, int64_t m0, int64_t m1) {
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4) rows_avx2_r(j, m, 4);
    for (; m < m1; m++) rows_avx2_r(j, m, 1);
}
#endif

#ifdef LM_HAVE_AVX2
/* AVX-512: R rows (1..8) x 32 columns. The same fused chain per element as
 * the AVX2 path, so both give identical bits. */
#define LM_AVX512 __attribute__((target("avx512f,avx2,fma")))
static inline LM_AVX512 __attribute__((always_inline)) void block32(const gemm_job *j, int64_t m,
                                                                    int64_t n, const int R) {
    const int64_t K = j->K, N = j->N;
    __m512 c[8][2];
    for (int i = 0; i < R; i++)
        for (int h = 0; h < 2; h++)
            c[i][h] =
                j->acc ? _mm512_loadu_ps(j->y + (m + i) * N + n + 16 * h) : _mm512_setzero_ps();
    const float *bp = j->b + n;
    for (int64_t k = 0; k < K; k++, bp += N) {
        const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
        for (int i = 0; i < R; i++) {
            const __m512 s = _mm512_set1_ps(j->a[(m + i) * j->ars + k * j->aks]);
            c[i][0] = _mm512_fmadd_ps(s, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(s, b1, c[i][1]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int h = 0; h < 2; h++) _mm512_storeu_ps(j->y + (m + i) * N + n + 16 * h, c[i][h]);
}

static inline LM_AVX512 __attribute__((always_inline)) void rows_avx512_r(const gemm_job *j,
                                                                          int64_t m, const int R) {
    const int64_t K = j->K, N = j->N;
    int64_t n = 0;
    for (; n + 32 <= N; n += 32) block32(j, m, n, R);
    for (int64_t i0 = 0; i0 < R; i0 += 4) { /* the remaining columns, 4 rows at a time */
        const int r = R - i0 < 4 ? R - i0 : 4;
        int64_t nn = n;
        for (; nn + 16 <= N; nn += 16) {
            if (r == 4)
                block16(j, m + i0, nn, 4);
            else
                for (int i = 0; i < r; i++) block16(j, m + i0 + i, nn, 1);
        }
        for (; nn + 8 <= N; nn += 8)
            for (int i = 0; i < r; i++) block8(j, m + i0 + i, nn, 1);
        for (; nn < N; nn++)
            for (int i = 0; i < r; i++) {
                float c = j->acc ? j->y[(m + i0 + i) * N + nn] : 0.0f;
                for (int64_t k = 0; k < K; k++)
                    c = fmaf(j->a[(m + i0 + i) * j->ars + k * j->aks], j->b[k * N + nn], c);
                j->y[(m + i0 + i) * N + nn] = c;
            }
    }
}

static LM_AVX512 void rows_avx512(const gemm_job *j, int64_t m0, int64_t m1) {
    int64_t m = m0;
    for (; m + 8 <= m1; m += 8) rows_avx512_r(j, m, 8);
    for (; m + 4 <= m1; m += 4) rows_avx512_r(j, m, 4);
    for (; m < m1; m++) rows_avx512_r(j, m, 1);
}

#endif

static int use_avx512(void) {
#ifdef LM_HAVE_AVX2
    static int cached = -1;
    if (cached < 0) { /* the library may have no AVX-512 kernels of its own; the CPU decides,
                         LINATTN_ISA=avx2|portable caps as for the library */
        const char *cap = getenv("LINATTN_ISA");
        cached = la_cpu_best_isa() >= LA_ISA_AVX512 && la_isa_active() >= LA_ISA_AVX2 &&
                 !(cap && (!strcmp(cap, "avx2") || !strcmp(cap, "portable")));
    }
    return cached;
#else
    return 0;
#endif
}

static int use_avx2(void) {
#ifdef LM_HAVE_AVX2
    static int cached = -1;
    if (cached < 0) cached = la_isa_active() >= LA_ISA_AVX2;
    return cached;
#else
    return 0;
#endif
}

static void gemm_task(void *arg, int64_t t) {
    const gemm_job *j = arg;
    const int64_t m0 = t * j->rows_per_task;
    const int64_t m1 = m0 + j->rows_per_task < j->M ? m0 + j->rows_per_task : j->M;
#ifdef LM_HAVE_AVX2
    if (use_avx512()) {
        rows_avx512(j, m0, m1);
        return;
    }
    if (use_avx2()) {
        rows_avx2(j, m0, m1);
        return;
    }
#endif
    rows_portable(j, m0, m1);
}

void lm_gemm_strided(lm_pool *pool, float *y, const float *a, int64_t ars, int64_t aks,
                     const float *b, int64_t M, int64_t K, int64_t N, int acc) {
    if (M <= 0 || N <= 0) return;
    gemm_job j = {y, a, b, M, K, N, 0, ars, aks, acc};
    const int nt = lm_pool_threads(pool);
    /* Tasks of whole multiples of 4 rows, enough for every thread; small
     * products stay on the caller. */
    int64_t rpt = M;
    if (nt > 1 && M * K * N > 65536) {
        rpt = (M + 4 * nt - 1) / (4 * nt);
        rpt = (rpt + 7) / 8 * 8;
        if (rpt < 8) rpt = 8;
    }
    j.rows_per_task = rpt;
    lm_pool_run(pool, (M + rpt - 1) / rpt, gemm_task, &j);
}

void lm_gemm(lm_pool *pool, float *y, const float *a, const float *b, int64_t M, int64_t K,
             int64_t N, int acc) {
    lm_gemm_strided(pool, y, a, K, 1, b, M, K, N, acc);
}

const char *lm_gemm_isa(void) {
    return use_avx512() ? "avx512" : use_avx2() ? "avx2+fma" : "portable";
}

void lm_transpose(float *dst, const float *src, int64_t R, int64_t C) {
    const int64_t TB = 32;
    for (int64_t r0 = 0; r0 < R; r0 += TB)
        for (int64_t c0 = 0; c0 < C; c0 += TB) {
            const int64_t r1 = r0 + TB < R ? r0 + TB : R, c1 = c0 + TB < C ? c0 + TB : C;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) dst[c * R + r] = src[r * C + c];
        }
}
