/* Shared by the bench A/B harnesses (saved_ab.c, gla_ab.c, lin_ab.c,
 * delta_ab.c): thread CPU time, hashes and medians of the results, and the
 * FMA peak of one core, timed in the same process as the work it is
 * compared with (x86: AVX-512 where the CPU has it, else AVX2). Not part of the
 * library; header-only so each harness stays one file plus this. */
#ifndef LA_BENCH_AB_PEAK_H
#define LA_BENCH_AB_PEAK_H

#include <dlfcn.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* dlopen of one library build (RTLD_NOW | RTLD_LOCAL, so two builds of the
 * same symbols coexist); NULL with dlerror() printed. */
static inline void *ab_dlopen(const char *path) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) fprintf(stderr, "%s\n", dlerror());
    return h;
}

#define AB_FNV0 1469598103934665603ull /* FNV-1a offset basis */

/* FNV-1a over the bytes of n floats, continuing from h (start at AB_FNV0):
 * equal hashes of old and new results = the same bits. */
static inline uint64_t ab_fnv(uint64_t h, const float *x, size_t n) {
    const unsigned char *p = (const unsigned char *)x;
    for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static inline int ab_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of x[0 .. n) (sorted in place); with lo, hi also the extremes. */
static inline double ab_median(double *x, int n, double *lo, double *hi) {
    qsort(x, (size_t)n, sizeof *x, ab_cmp);
    if (lo) *lo = x[0], *hi = x[n - 1];
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static inline double tcpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

__attribute__((target("avx512f,fma"))) static double peak512(void) {
    static volatile float seed[2] = {0.999999f, 1e-7f};
    __m512 a[24], x = _mm512_set1_ps(seed[0]), y = _mm512_set1_ps(seed[1]);
    for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps((float)i + seed[1]);
    const int64_t it = 20000;
    double t0 = tcpu();
    for (int64_t n = 0; n < it; n++) {
#pragma GCC unroll 24
        for (int i = 0; i < 24; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
    }
    double t = tcpu() - t0;
    float s = 0;
    for (int i = 0; i < 24; i++) s += _mm512_reduce_add_ps(a[i]);
    if (s == 12345.f) puts("");
    return (double)it * 24 * 16 * 2 / t / 1e9;
}

/* The same loop on 8-wide AVX2 registers, for CPUs without AVX-512 (Zen 3). */
__attribute__((target("avx2,fma"))) static double peak256(void) {
    static volatile float seed[2] = {0.999999f, 1e-7f};
    __m256 a[12], x = _mm256_set1_ps(seed[0]), y = _mm256_set1_ps(seed[1]);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i + seed[1]);
    const int64_t it = 40000;
    double t0 = tcpu();
    for (int64_t n = 0; n < it; n++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], x, y);
    }
    double t = tcpu() - t0;
    float buf[8], s = 0;
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(buf, a[i]);
        for (int j = 0; j < 8; j++) s += buf[j];
    }
    if (s == 12345.f) puts("");
    return (double)it * 12 * 8 * 2 / t / 1e9;
}

/* Best of five runs of the widest loop the kernels use, GFLOP/s: the AVX2
 * loop where the CPU lacks AVX-512 or LINATTN_ISA picks a narrower path
 * (cpu-avx2trsm23: LINATTN_ISA=avx2 runs report % of the AVX2 peak). */
static inline double peak(void) {
    const char *isa = getenv("LINATTN_ISA");
    char low[8] = {0};
    for (int i = 0; isa && isa[i] && i < 7; i++) low[i] = (char)(isa[i] | 0x20);
    const int wide =
        __builtin_cpu_supports("avx512f") && strcmp(low, "avx2") && strcmp(low, "portable");
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double p = wide ? peak512() : peak256();
        best = p > best ? p : best;
    }
    return best;
}

#endif
