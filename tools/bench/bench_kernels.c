/* Kernel benchmark: this core's FP32 FMA peak, then each kernel of
 * src/kernels at the chunk shapes of the chunkwise forms and at a larger
 * square size, on every path the CPU can run.
 *
 *   make all && build/bench_kernels [--quick] [--budget SECONDS] [--filter TEXT]
 *
 * Peak: a loop of independent AVX2 FMAs (12 accumulators: enough to cover
 * a 4-cycle latency on two FMA pipes) — what one core can do at most on
 * this machine. The core clock is estimated from a chain of dependent
 * integer adds (1 cycle each), since this VM has no cycle counter.
 * Timing: the machine is shared (2 vCPUs, several users), so wall-clock
 * runs are sliced by other processes. Every sample is timed with this
 * thread's CPU clock (CLOCK_THREAD_CPUTIME_ID: time it was not preempted),
 * samples are short (>= 50 us: one or a few calls, data hot in cache as in
 * an op's chunk loop; the peak loop ~40 us), and we report the 90th
 * percentile of their rates (the fast end, robust to outliers) and the
 * median; %peak = kernel p90 / FMA-loop p90, both measured the same way.
 * What time slicing still costs (cache refills after a switch, a busy
 * sibling thread on the host) shows as a lower median. */
#include "kernels/kernels.h"
#include "linattn.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); /* time this thread ran */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static volatile float sink;

#if defined(__x86_64__) && defined(__GNUC__)
/* 12 independent chains of FMAs, 8 lanes each: 192 FLOP per iteration. */
__attribute__((target("avx2,fma"))) static double fma_peak_once(int64_t iters) {
    /* distinct starting values through volatile: the compiler cannot merge chains */
    static volatile float seed[14] = {0.999999f, 1e-7f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    __m256 x = _mm256_set1_ps(seed[0]), y = _mm256_set1_ps(seed[1]);
    __m256 a0 = _mm256_set1_ps(seed[2]), a1 = _mm256_set1_ps(seed[3]);
    __m256 a2 = _mm256_set1_ps(seed[4]), a3 = _mm256_set1_ps(seed[5]);
    __m256 a4 = _mm256_set1_ps(seed[6]), a5 = _mm256_set1_ps(seed[7]);
    __m256 a6 = _mm256_set1_ps(seed[8]), a7 = _mm256_set1_ps(seed[9]);
    __m256 a8 = _mm256_set1_ps(seed[10]), a9 = _mm256_set1_ps(seed[11]);
    __m256 a10 = _mm256_set1_ps(seed[12]), a11 = _mm256_set1_ps(seed[13]);
    double t0 = now();
    for (int64_t i = 0; i < iters; i++) {
        a0 = _mm256_fmadd_ps(a0, x, y);
        a1 = _mm256_fmadd_ps(a1, x, y);
        a2 = _mm256_fmadd_ps(a2, x, y);
        a3 = _mm256_fmadd_ps(a3, x, y);
        a4 = _mm256_fmadd_ps(a4, x, y);
        a5 = _mm256_fmadd_ps(a5, x, y);
        a6 = _mm256_fmadd_ps(a6, x, y);
        a7 = _mm256_fmadd_ps(a7, x, y);
        a8 = _mm256_fmadd_ps(a8, x, y);
        a9 = _mm256_fmadd_ps(a9, x, y);
        a10 = _mm256_fmadd_ps(a10, x, y);
        a11 = _mm256_fmadd_ps(a11, x, y);
    }
    double t = now() - t0;
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float out[8];
    _mm256_storeu_ps(out, s);
    sink = out[0];
    return 192.0 * (double)iters / t * 1e-9; /* GFLOP/s */
}

/* cpu-gemm: the AVX-512 peak, 24 independent chains of 16-lane FMAs
 * (768 FLOP per iteration): the reference for the avx512 path's %peak. */
__attribute__((target("avx512f,fma"))) static double fma_peak512_once(int64_t iters) {
    static volatile float seed[2] = {0.999999f, 1e-7f};
    __m512 x = _mm512_set1_ps(seed[0]), y = _mm512_set1_ps(seed[1]);
    __m512 a[24];
    for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps((float)i + seed[1]);
    double t0 = now();
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 24
        for (int i = 0; i < 24; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
    }
    double t = now() - t0;
    __m512 s = a[0];
    for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, a[i]);
    sink = _mm512_reduce_add_ps(s);
    return 768.0 * (double)iters / t * 1e-9; /* GFLOP/s */
}

/* Core clock in GHz: 10 dependent 1-cycle adds per iteration. */
static double clock_ghz_once(int64_t iters) {
    uint64_t x = 0;
    int64_t n = iters;
    double t0 = now();
    __asm__ volatile("1:\n\t"
                     "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                     "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                     "dec %1\n\tjnz 1b"
                     : "+r"(x), "+r"(n));
    double t = now() - t0;
    sink = (float)x;
    return 10.0 * (double)iters / t * 1e-9;
}
#endif

/* ---- kernels under test -------------------------------------------- */

typedef enum { K_NN, K_NT, K_TN, K_NN_LOWER, K_NT_TRIL, K_TRSM, K_TRINV } kernel_id;

typedef struct bench_case {
    const char *what; /* the op product it stands for */
    kernel_id id;
    int64_t m, n, k; /* gemm sizes; trsm: n=m rows, n rhs columns; trinv: m */
    int64_t h;       /* 0/1: dense rows; h > 1: the operands taken from [B,T,H,D]
                        tensors have row stride h*D, as inside an op with h heads */
} bench_case;

static const char *kernel_name(kernel_id id) {
    switch (id) {
    case K_NN: return "gemm_nn";
    case K_NT: return "gemm_nt";
    case K_TN: return "gemm_tn";
    case K_NN_LOWER: return "gemm_nn_lower";
    case K_NT_TRIL: return "gemm_nt_tril";
    case K_TRSM: return "trsm_llu";
    case K_TRINV: return "trinv_llu";
    }
    return "?";
}

/* Useful FLOPs (masked-out work is not counted). */
static double case_flops(const bench_case *c) {
    double m = (double)c->m, n = (double)c->n, k = (double)c->k;
    switch (c->id) {
    case K_NN:
    case K_NT:
    case K_TN: return 2 * m * n * k;
    case K_NN_LOWER: return m * (m + 1) * n;          /* sum_i 2 (i+1) n */
    case K_NT_TRIL: return m * (m + 1) * k;           /* m(m+1)/2 dots of length k */
    case K_TRSM: return m * (m - 1) * n;              /* sum_i 2 i n */
    case K_TRINV: return m * (m - 1) * (m - 2) / 3.0; /* ~ m^3 / 3 */
    }
    return 0;
}

typedef struct buffers {
    float *A, *B, *C;
} buffers;

static void run_case(const la__kernels *kr, const bench_case *c, buffers *b) {
    int64_t m = c->m, n = c->n, k = c->k, h = c->h > 1 ? c->h : 1;
    switch (c->id) { /* [B,T,H,D] operands: q, k, v rows (and o for nn) */
    case K_NN: kr->gemm_nn(m, n, k, 1.0f, b->A, k * h, b->B, n * h, 0.0f, b->C, n * h); break;
    case K_NT: kr->gemm_nt(m, n, k, 1.0f, b->A, k * h, b->B, k * h, 0.0f, b->C, n); break;
    case K_TN: kr->gemm_tn(m, n, k, 1.0f, b->A, m * h, b->B, n * h, 1.0f, b->C, n); break;
    case K_NN_LOWER:
        kr->gemm_nn_lower(m, n, m, 1.0f, b->A, m, b->B, n * h, 0.0f, b->C, n * h);
        break;
    case K_NT_TRIL: kr->gemm_nt_tril(m, k, 0, 1.0f, b->A, k * h, b->B, k * h, 0.0f, b->C, m); break;
    case K_TRSM: kr->trsm_llu(m, n, b->A, m, b->C, n); break;
    case K_TRINV: kr->trinv_llu(m, b->A, m, b->C, m); break;
    }
}

static void fill(float *x, size_t n, uint64_t seed, double scale) {
    la_rng rng;
    la_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * (la_rng_uniform(&rng) - 0.5));
}

/* q-quantile (0..1) of x[0..n) (sorts x). */
static double quantile(double *x, int n, double q) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    int i = (int)(q * (n - 1) + 0.5);
    return x[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* Rates (GFLOP/s) of many short samples: the median, and the 90th
 * percentile, the fast end that a shared machine still reaches while our
 * thread holds a core, robust to the few lucky or preempted samples. */
typedef struct rates {
    double p50, p90;
} rates;

#define MAX_SAMPLES 4000

static rates peak_rates(int n_samples, int zmm) {
    rates r = {0, 0};
#if defined(__x86_64__) && defined(__GNUC__)
    if (la_cpu_best_isa() < (zmm ? LA_ISA_AVX512 : LA_ISA_AVX2)) return r;
    static double g[MAX_SAMPLES];
    if (n_samples > MAX_SAMPLES) n_samples = MAX_SAMPLES;
    fma_peak_once(100000); /* warm up the clock */
    for (int i = 0; i < n_samples; i++)
        g[i] = zmm ? fma_peak512_once(10000) : fma_peak_once(20000); /* ~40 us each */
    r.p50 = quantile(g, n_samples, 0.5);
    r.p90 = quantile(g, n_samples, 0.9);
#else
    (void)n_samples;
    (void)zmm;
#endif
    return r;
}

/* Samples of `batch` back-to-back calls, each sample >= ~50 us, for about
 * `budget` seconds in all. Data stay in cache between calls, as inside an
 * op's chunk loop. */
static rates time_case(const la__kernels *kr, const bench_case *c, buffers *b, double budget) {
    static double g[MAX_SAMPLES];
    double flops = case_flops(c);
    int in_place = c->id == K_TRSM;
    size_t rhs_bytes = (size_t)(c->m * c->n) * sizeof(float);
    int64_t batch = 1;
    double t1 = 0;
    /* cpu-gemm: the in-place solve restores its right-hand side before every
     * call inside the timed batch (one call per sample was mostly timer
     * overhead on this VM), and a batch of the copies alone is timed right
     * after and subtracted. */
    for (int tries = 0; tries < 30; tries++) { /* calibrate (and warm up) */
        double t0 = now();
        for (int64_t i = 0; i < batch; i++) {
            if (in_place) memcpy(b->C, b->B, rhs_bytes);
            run_case(kr, c, b);
        }
        t1 = now() - t0;
        if (t1 >= 50e-6) break;
        batch *= 2;
    }
    int n = (int)(budget / fmax(t1, 1e-6));
    n = n < 50 ? 50 : n > MAX_SAMPLES ? MAX_SAMPLES : n;
    for (int s = 0; s < n; s++) {
        double t0 = now();
        for (int64_t i = 0; i < batch; i++) {
            if (in_place) memcpy(b->C, b->B, rhs_bytes);
            run_case(kr, c, b);
        }
        double t = now() - t0;
        if (in_place) {
            t0 = now();
            for (int64_t i = 0; i < batch; i++) {
                memcpy(b->C, b->B, rhs_bytes);
                __asm__ volatile("" ::: "memory");
            }
            t -= now() - t0;
        }
        g[s] = flops * (double)batch / t * 1e-9;
    }
    rates r = {quantile(g, n, 0.5), quantile(g, n, 0.9)};
    return r;
}

int main(int argc, char **argv) {
    int quick = 0;
    double budget = 0.3;       /* seconds of samples per case and path */
    const char *filter = NULL; /* only cases whose product or kernel name contains it */
    int only_isa = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--budget") == 0 && i + 1 < argc)
            budget = atof(argv[++i]);
        else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc)
            filter = argv[++i];
        else if (strcmp(argv[i], "--isa") == 0 && i + 1 < argc)
            only_isa = la__isa_from_name(argv[++i]); /* cpu-gemm: one path only */
        else {
            fprintf(stderr, "usage: %s [--quick] [--budget SECONDS] [--filter TEXT] [--isa NAME]\n",
                    argv[0]);
            return 2;
        }
    }
    if (quick) budget = 0.03;
    rates peak = peak_rates(quick ? 500 : 4000, 0);
    rates peak512 = peak_rates(quick ? 500 : 4000, 1);
    if (peak512.p90 > 0)
        printf("FP32 FMA peak (AVX-512, 24 FMA chains, one core): p90 %.1f GFLOP/s, median %.1f "
               "(the avx512 rows' %%peak)\n",
               peak512.p90, peak512.p50);
    double ghz = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (peak.p90 > 0) {
        double f[9];
        for (int r = 0; r < 9; r++) f[r] = clock_ghz_once(200000); /* ~0.7 ms each */
        ghz = quantile(f, 9, 0.9);
        printf("FP32 FMA peak (AVX2, 12 FMA chains, one core): p90 %.1f GFLOP/s, median %.1f; "
               "core clock ~%.2f GHz -> %.1f FLOP/cycle\n",
               peak.p90, peak.p50, ghz, peak.p90 / ghz);
    }
#endif
    if (peak.p90 == 0) printf("no AVX2: %% of peak not reported\n");
    printf("cpu best isa: %s; GFLOP/s = useful FLOP (masked work not counted) / time, over "
           "short samples: p90 (fast end) and median; %%peak = kernel p90 / peak p90\n\n",
           la_isa_name(la_cpu_best_isa()));

    /* Chunk shapes: C = 64 (and 128, 32), K = V = 128 (and 256, 64), dense
     * rows and with the row strides of an 8-head [B,T,H,D] tensor; then
     * square sizes. */
    const bench_case cases[] = {
        {"Q.K^T causal, C=64 K=128", K_NT_TRIL, 64, 64, 128, 1},
        {"Q.K^T full, C=64 K=128", K_NT, 64, 64, 128, 1},
        {"A.V, C=64 V=128", K_NN, 64, 128, 64, 1},
        {"A.V (A lower), C=64 V=128", K_NN_LOWER, 64, 128, 64, 1},
        {"Q.S, C=64 K=V=128", K_NN, 64, 128, 128, 1},
        {"S += K^T.V, C=64 K=V=128", K_TN, 128, 128, 64, 1},
        {"T^-1 rhs (W/U), C=64 r=128", K_TRSM, 64, 128, 0, 1},
        {"unit-lower inverse, C=64", K_TRINV, 64, 0, 0, 1},
        {"Q.K^T causal, C=64 K=128 H=8", K_NT_TRIL, 64, 64, 128, 8},
        {"A.V, C=64 V=128 H=8", K_NN_LOWER, 64, 128, 64, 8},
        {"Q.S, C=64 K=V=128 H=8", K_NN, 64, 128, 128, 8},
        {"S += K^T.V, C=64 K=V=128 H=8", K_TN, 128, 128, 64, 8},
        {"Q.K^T causal, C=128 K=256", K_NT_TRIL, 128, 128, 256, 1},
        {"A.V, C=128 V=256", K_NN, 128, 256, 128, 1},
        {"Q.S, C=128 K=V=256", K_NN, 128, 256, 256, 1},
        {"S += K^T.V, C=128 K=V=256", K_TN, 256, 256, 128, 1},
        {"Q.K^T causal, C=32 K=64", K_NT_TRIL, 32, 32, 64, 1},
        {"Q.S, C=32 K=V=64", K_NN, 32, 64, 64, 1},
        {"S += K^T.V, C=32 K=V=64", K_TN, 64, 64, 32, 1},
        {"square 256", K_NN, 256, 256, 256, 1},
        {"square 256", K_NT, 256, 256, 256, 1},
        {"square 256", K_TN, 256, 256, 256, 1},
        {"square 512", K_NN, 512, 512, 512, 1},
        {"square 512", K_NT, 512, 512, 512, 1},
        {"square 512", K_TN, 512, 512, 512, 1},
    };
    const int n_cases = (int)(sizeof cases / sizeof cases[0]);

    size_t cap = 512 * 512 * 2 + 64; /* >= 64 rows x 8 heads x 256, and 512^2 */
    buffers b = {malloc(cap * sizeof(float)), malloc(cap * sizeof(float)),
                 malloc(cap * sizeof(float))};
    if (!b.A || !b.B || !b.C) return 1;
    fill(b.A, cap, 1, 0.2);
    fill(b.B, cap, 2, 0.2);
    fill(b.C, cap, 3, 0.2);

    printf("%-30s %-14s %5s %5s %5s  %-8s %8s %8s %6s\n", "product", "kernel", "m", "n", "k",
           "path", "GF/s p90", "GF/s med", "%peak");
    /* warm-up: the first timed case otherwise runs a few % slow */
    time_case(la__kernels_for(la_cpu_best_isa()), &cases[0], &b, budget);
    for (int ci = 0; ci < n_cases; ci++) {
        const bench_case *c = &cases[ci];
        if (quick && c->m >= 512) continue;
        if (filter && !strstr(c->what, filter) && !strstr(kernel_name(c->id), filter)) continue;
        const la__kernels *prev = NULL;
        for (int i = LA_ISA_PORTABLE; i <= (int)la_cpu_best_isa(); i++) {
            const la__kernels *kr = la__kernels_for((la_isa)i);
            if (kr == prev || (only_isa >= 0 && (int)kr->isa != only_isa)) continue;
            prev = kr;
            if (c->id == K_TRSM || c->id == K_TRINV) fill(b.A, cap, 1, 0.2);
            rates t = time_case(kr, c, &b, budget);
            char pct[16] = "-";
            double pk = kr->isa == LA_ISA_AVX512 && peak512.p90 > 0 ? peak512.p90 : peak.p90;
            if (pk > 0) snprintf(pct, sizeof pct, "%.0f%%", 100 * t.p90 / pk);
            printf("%-30s %-14s %5lld %5lld %5lld  %-8s %8.1f %8.1f %6s\n", c->what,
                   kernel_name(c->id), (long long)c->m, (long long)c->n, (long long)c->k,
                   la_isa_name(kr->isa), t.p90, t.p50, pct);
            fflush(stdout);
        }
    }
    rates peak2 = peak_rates(quick ? 500 : 4000, 0);
    if (peak.p90 > 0)
        printf("\npeak again at the end: p90 %.1f GFLOP/s, median %.1f\n", peak2.p90, peak2.p50);
    rates peak512b = peak_rates(quick ? 500 : 4000, 1);
    if (peak512b.p90 > 0)
        printf("AVX-512 peak again at the end: p90 %.1f GFLOP/s, median %.1f\n", peak512b.p90,
               peak512b.p50);
    free(b.A);
    free(b.B);
    free(b.C);
    return 0;
}
