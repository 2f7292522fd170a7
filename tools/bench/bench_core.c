/* Benchmark core (see bench_core.h).
 *
 * FLOP counts. One multiply-add = 2 FLOPs; only the matrix-product terms are
 * counted (feature maps, exponentials, gates, softmax normalisation and the
 * O(T*D) vector work are left out, so GFLOP/s is "useful matmul work per
 * second"). All ops are causal; a causal T x T (or C x C) product counts the
 * T(T+1)/2 pairs at and below the diagonal, not the full square. Per head,
 * K = q/k dimension, V = value dimension, C = chunk size:
 *
 *   form                          forward                  forward+backward
 *   softmax textbook/streaming    T(T+1)(K+V)              T(T+1)(4K+3V)
 *       S = QK^T (K), O = PV (V); backward recomputes S (K) and forms
 *       dP = dO V^T (V), dV = P^T dO (V), dQ = dS K (K), dK = dS^T Q (K)
 *   linear parallel               T(T+1)(K+V)              T(T+1)(4K+3V)
 *       the same products with A = QK^T masked instead of softmax(S)
 *   linear recurrent              4TKV                     3 x forward
 *       S += k^T v (2KV), o = q S (2KV) per token; the backward has four
 *       KV products per token (dq, dS, dk, dv) = 2 x forward
 *   linear chunk                  T[(C+1)(K+V) + 4KV]      3 x forward
 *       per chunk: triangle QK^T (C(C+1)K), A V (C(C+1)V), Q S (2CKV),
 *       S += K^T V (2CKV); divided by C tokens
 *   simple GLA / GLA recurrent    5TKV                     3 x forward
 *       linear recurrent + the decay of the state (KV multiplies) per token
 *   simple GLA / GLA chunk        T[(C+1)(K+V) + 4KV]      3 x forward
 *       as linear chunk (gate factors are O(C K) per chunk)
 *   DeltaNet recurrent            6TKV                     3 x forward
 *       kS (2KV), rank-1 update k^T (beta(v - kS)) (2KV), o = qS (2KV)
 *   Gated DeltaNet recurrent      7TKV                     3 x forward
 *       DeltaNet + the decay of the state (KV)
 *   DeltaNet / Gated chunk (WY)   T[C(3K+2V) + C^2/3 + 6KV]  3 x forward
 *       per chunk: A = KK^T (C^2 K), triangular inverse (C^3/3),
 *       W = T(beta K) (C^2 K), U = T(beta V) (C^2 V), U - W S (2CKV),
 *       QK^T (C^2 K), intra (C^2 V), Q S (2CKV), S += K^T U' (2CKV)
 *   linear non-causal (kernel trick)  4TKV                 3 x forward
 *   decoding step, per token      4KV linear, 5KV simple GLA / GLA,
 *                                 6KV DeltaNet, 7KV Gated DeltaNet
 * "3 x forward" is the usual rule that every forward product yields two
 * gradient products; recomputation an implementation does is not counted.
 */
#define _GNU_SOURCE
#include "bench_core.h"
#include "ops/registry.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define BENCH_HAVE_AVX2 1
#endif

double bench_wall(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double bench_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *x, int n) {
    if (n <= 0) return NAN;
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* ---- FMA peak ------------------------------------------------------------ */

#ifdef BENCH_HAVE_AVX2
/* 12 independent 8-wide chains: Zen 3 and Intel cores have 2 FMA pipes of
 * latency 4-5, so >= 10 chains keep both busy. 2 * 8 * 12 FLOPs per step. */
__attribute__((target("avx2,fma"))) static double fma_loop_avx2(int64_t iters, float *sink) {
    __m256 a[12];
    const __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps(1.0f + 0.01f * (float)i);
    for (int64_t it = 0; it < iters; it++) {
        a[0] = _mm256_fmadd_ps(a[0], m, c);
        a[1] = _mm256_fmadd_ps(a[1], m, c);
        a[2] = _mm256_fmadd_ps(a[2], m, c);
        a[3] = _mm256_fmadd_ps(a[3], m, c);
        a[4] = _mm256_fmadd_ps(a[4], m, c);
        a[5] = _mm256_fmadd_ps(a[5], m, c);
        a[6] = _mm256_fmadd_ps(a[6], m, c);
        a[7] = _mm256_fmadd_ps(a[7], m, c);
        a[8] = _mm256_fmadd_ps(a[8], m, c);
        a[9] = _mm256_fmadd_ps(a[9], m, c);
        a[10] = _mm256_fmadd_ps(a[10], m, c);
        a[11] = _mm256_fmadd_ps(a[11], m, c);
    }
    __m256 s = a[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    *sink += out[0] + out[7];
    return 2.0 * 8 * 12 * (double)iters;
}
#endif

#ifdef BENCH_HAVE_AVX2
/* 24 independent 16-wide chains: two 512-bit FMA pipes (Xeon) of latency 4,
 * or 256-bit pipes fed two halves at a time (Zen 4). 2 * 16 * 24 FLOPs per
 * step. */
__attribute__((target("avx512f"))) static double fma_loop_avx512(int64_t iters, float *sink) {
    __m512 a[24];
    const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps(1.0f + 0.01f * (float)i);
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 24
        for (int i = 0; i < 24; i++) a[i] = _mm512_fmadd_ps(a[i], m, c);
    }
    __m512 s = a[0];
    for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, a[i]);
    *sink += _mm512_reduce_add_ps(s);
    return 2.0 * 16 * 24 * (double)iters;
}
#endif

/* Portable: 16 independent scalar multiply-add chains (the compiler may
 * vectorise them; -ffp-contract=off keeps multiply and add separate). */
static double fma_loop_portable(int64_t iters, float *sink) {
    /* m, c and the start values read through volatile: with compile-time
     * constants gcc 12 folded the whole loop into one constant (the
     * portable peak read ~5e18 GFLOP/s) */
    static volatile float seed[3] = {0.9999999f, 1e-7f, 0.01f};
    float a[16];
    const float m = seed[0], c = seed[1], d = seed[2];
    for (int i = 0; i < 16; i++) a[i] = 1.0f + d * (float)i;
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < 16; i++) a[i] = a[i] * m + c;
    float s = 0;
    for (int i = 0; i < 16; i++) s += a[i];
    *sink += s;
    return 2.0 * 16 * (double)iters;
}

double bench_fma_peak(double seconds, const char **isa) {
    return bench_fma_peak_for(seconds, la_isa_active(), isa);
}

double bench_fma_peak_for(double seconds, la_isa want, const char **isa) {
    double (*loop)(int64_t, float *) = fma_loop_portable;
    *isa = "portable";
#ifdef BENCH_HAVE_AVX2
    __builtin_cpu_init();
    if (want >= LA_ISA_AVX2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        loop = fma_loop_avx2;
        *isa = "avx2+fma";
    }
    if (want >= LA_ISA_AVX512 && __builtin_cpu_supports("avx512f")) {
        loop = fma_loop_avx512;
        *isa = "avx512f";
    }
#endif
    float sink = 0;
    int64_t iters = 1 << 16;
    double best = 0, spent = 0;
    while (spent < seconds) {
        double t0 = bench_wall();
        double fl = loop(iters, &sink);
        double dt = bench_wall() - t0;
        spent += dt;
        if (dt > 0 && fl / dt > best) best = fl / dt; /* short runs count too (slow machines) */
        if (dt < 0.02) iters *= 2;
    }
    if (sink == 12345.0f) fprintf(stderr, " "); /* keep the loops alive */
    return best * 1e-9;
}

double bench_memcpy_time(size_t bytes, int repeats) {
    /* one block, 64-byte aligned, destination offset by half a page from the
     * source so the copy does not suffer 4K aliasing between loads and stores */
    const size_t span = (bytes + 4095) / 4096 * 4096 + 2048 + 64;
    char *blk = aligned_alloc(64, (span + bytes + 63) / 64 * 64);
    if (!blk) return NAN;
    char *a = blk, *b = blk + span;
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double ts[64];
    if (repeats > 64) repeats = 64;
    if (repeats < 1) repeats = 1;
    /* time batches of copies so the clock resolution does not matter */
    int batch = 1;
    for (;;) {
        double t0 = bench_wall();
        for (int i = 0; i < batch; i++) {
            memcpy(i & 1 ? a : b, i & 1 ? b : a, bytes);
            __asm__ volatile("" ::: "memory");
        }
        if (bench_wall() - t0 > 2e-3 || batch > (1 << 20)) break;
        batch *= 2;
    }
    for (int r = 0; r < repeats; r++) {
        double t0 = bench_wall();
        for (int i = 0; i < batch; i++) {
            memcpy(i & 1 ? a : b, i & 1 ? b : a, bytes);
            __asm__ volatile("" ::: "memory");
        }
        ts[r] = (bench_wall() - t0) / batch;
    }
    free(blk);
    return bench_median(ts, repeats);
}

void bench_cpu_model(char *buf, size_t n) {
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                p++;
                while (*p == ' ') p++;
                p[strcspn(p, "\n")] = 0;
                snprintf(buf, n, "%s", p);
            }
            break;
        }
    }
    fclose(f);
}

/* ---- ops ---------------------------------------------------------------- */

static const la__op_entry *entry(bench_op op) { return la__op_get(op); }

const char *bench_op_name(bench_op op) {
    const la__op_entry *e = entry(op);
    return e ? e->name : "?";
}

int bench_op_from_name(const char *name) { return la__op_find(name); }

int bench_op_is_softmax(bench_op op) {
    const la__op_entry *e = entry(op);
    return e && !strcmp(e->family, "softmax");
}

int bench_op_is_quadratic(bench_op op) {
    const la__op_entry *e = entry(op);
    return e && (e->needs & LA__QUADRATIC);
}

int bench_op_count(void) { return LA__OP_COUNT; }

int bench_op_in_default_sweep(bench_op op) {
    const la__op_entry *e = entry(op);
    return e && (e->needs & LA__CAUSAL);
}

int bench_op_saves(bench_op op) {
    const la__op_entry *e = entry(op);
    return e && (e->needs & LA__SAVES);
}

double bench_op_flops(bench_op op, int64_t T, int64_t K, int64_t V, int64_t BH, int64_t C,
                      int backward) {
    const la__op_entry *e = entry(op);
    if (!e) return NAN;
    return (double)BH * e->flops((double)T, (double)K, (double)V, (double)(C > 0 ? C : 64),
                                 backward);
}

void bench_fill(float *x, size_t n, uint64_t seed, float a) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = a * (2.0f * (float)((s >> 40) * (1.0 / 16777216.0)) - 1.0f);
    }
}

typedef struct need {
    int g, gk, beta, rf;
} need;

static need op_needs(bench_op op) {
    need n = {0, 0, 0, 0};
    const la__op_entry *e = entry(op);
    if (!e) return n;
    n.g = (e->needs & (LA__NEED_G | LA__NEED_G_OPT)) != 0;
    n.gk = (e->needs & LA__NEED_GK) != 0;
    n.beta = (e->needs & LA__NEED_BETA) != 0;
    n.rf = (e->needs & LA__NEED_RF) != 0;
    return n;
}

double bench_bufs_bytes(bench_op op, int64_t T, int64_t H, int64_t K, int64_t V, int backward) {
    need n = op_needs(op);
    double th = (double)T * (double)H;
    double fl = th * (2.0 * K + 2.0 * V) + th * (n.g + n.beta) + th * K * n.gk;
    if (backward) fl = 2 * fl + th * K; /* gradients of everything, dg sized T*H*K */
    return 4 * (fl + n.rf * (double)K * K);
}

static float *alloc_floats(size_t n, int *bad) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) *bad = 1;
    return p;
}

int bench_bufs_alloc(bench_bufs *b, bench_op op, int64_t T, int64_t H, int64_t K, int64_t V,
                     int backward, uint64_t seed) {
    memset(b, 0, sizeof *b);
    b->dims = (la_dims){.B = 1, .T = T, .H = H, .K = K, .V = V};
    need n = op_needs(op);
    const size_t tk = (size_t)(T * H * K), tv = (size_t)(T * H * V), th = (size_t)(T * H);
    const size_t ng = n.gk ? tk : th;
    int bad = 0;
    b->q = alloc_floats(tk, &bad);
    b->k = alloc_floats(tk, &bad);
    b->v = alloc_floats(tv, &bad);
    b->o = alloc_floats(tv, &bad);
    if (n.g || n.gk) b->g = alloc_floats(ng, &bad);
    if (n.beta) b->beta = alloc_floats(th, &bad);
    if (n.rf) b->rf_W = alloc_floats((size_t)(K * K), &bad);
    if (backward) {
        b->dq = alloc_floats(tk, &bad);
        b->dk = alloc_floats(tk, &bad);
        b->dv = alloc_floats(tv, &bad);
        b->d_o = alloc_floats(tv, &bad);
        if (n.g || n.gk) b->dg = alloc_floats(ng, &bad);
        if (n.beta) b->dbeta = alloc_floats(th, &bad);
    }
    if (bad) {
        bench_bufs_free(b);
        return 1;
    }
    bench_fill(b->q, tk, seed + 1, 1.0f);
    bench_fill(b->k, tk, seed + 2, 1.0f);
    bench_fill(b->v, tv, seed + 3, 1.0f);
    memset(b->o, 0, tv * sizeof *b->o);
    if (b->g) { /* log-decays in [-0.1, -0.01] */
        bench_fill(b->g, ng, seed + (n.gk ? 5 : 4), 0.045f);
        for (size_t i = 0; i < ng; i++) b->g[i] -= 0.055f;
    }
    if (b->beta) { /* in [0.1, 0.9] */
        bench_fill(b->beta, th, seed + 6, 0.4f);
        for (size_t i = 0; i < th; i++) b->beta[i] += 0.5f;
    }
    if (b->rf_W) bench_fill(b->rf_W, (size_t)(K * K), seed + 8, 1.0f);
    if (backward) {
        bench_fill(b->d_o, tv, seed + 7, 1.0f);
        memset(b->dq, 0, tk * sizeof(float));
        memset(b->dk, 0, tk * sizeof(float));
        memset(b->dv, 0, tv * sizeof(float));
        if (b->dg) memset(b->dg, 0, ng * sizeof(float));
        if (b->dbeta) memset(b->dbeta, 0, th * sizeof(float));
    }
    return 0;
}

void bench_bufs_free(bench_bufs *b) {
    float *ps[] = {b->q,  b->k,  b->v,   b->o,  b->g,  b->beta, b->dq,
                   b->dk, b->dv, b->d_o, b->dg, b->dbeta, b->rf_W};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) free(ps[i]);
    memset(b, 0, sizeof *b);
}

la_status bench_op_run(la_ctx *ctx, bench_op op, const bench_bufs *b, int backward) {
    const la__op_entry *e = entry(op);
    if (!e) return LA_ERR_INVALID_ARGUMENT;
    /* identity features, unnormalised linear attention: the pure matmul
     * structure (the feature map and normaliser add O(T K) work); delta
     * rules with L2-normalised q/k as in real use */
    la__op_args a;
    memset(&a, 0, sizeof a);
    a.dims = b->dims;
    a.chunk_size = b->chunk;
    a.feature_map = LA_FEATURE_IDENTITY;
    a.use_qk_l2norm = (e->needs & LA__NEED_L2NORM) != 0;
    a.o = b->o;
    a.q = b->q;
    a.k = b->k;
    a.v = b->v;
    a.g = b->g;
    a.beta = b->beta;
    a.dq = b->dq;
    a.dk = b->dk;
    a.dv = b->dv;
    a.dg = b->dg;
    a.dbeta = b->dbeta;
    a.d_o = b->d_o;
    a.saved = b->saved;
    if (e->needs & LA__NEED_RF) { /* Performer: FAVOR+, m = K rows (M = K features) */
        a.rf = la_rf_opts_default();
        a.rf_W = b->rf_W;
        a.rf_m = b->dims.K;
    }
    la_status st = e->forward(ctx, &a);
    if (!st && backward) st = e->backward(ctx, &a);
    return st;
}

/* ---- isolated runner ---------------------------------------------------- */

/* VmRSS / VmHWM of this process in bytes (-1 if unreadable). */
static double proc_status_bytes(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = 1024.0 * strtod(line + kl + 1, NULL);
            break;
        }
    fclose(f);
    return v;
}

static int reset_hwm(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    ok &= fclose(f) == 0;
    return ok;
}

static void child_run(const bench_cfg *c, bench_result *r) {
    /* fixed mmap threshold: large blocks come from (and return to) mmap, so a
     * freed block of the parent's heap cannot hide an allocation */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    malloc_trim(0);
    bench_bufs b;
    if (bench_bufs_alloc(&b, c->op, c->T, c->H, c->K, c->V, c->backward, c->seed)) {
        snprintf(r->err, sizeof r->err, "out of memory for the inputs");
        return;
    }
    b.chunk = c->chunk;
    /* the context (thread pool) is created before the baseline: the memory
     * reported is what the call itself adds (its scratch, its temporaries) */
    la_ctx *ctx = NULL;
    la_saved *saved = NULL;
    la_status st = la_ctx_create(&ctx, c->threads);
    if (!st && c->saved) {
        if (!c->backward || !bench_op_saves(c->op)) {
            snprintf(r->err, sizeof r->err, "%s takes no la_saved (forward+backward only)",
                     bench_op_name(c->op));
            la_ctx_destroy(ctx);
            bench_bufs_free(&b);
            return;
        }
        st = la_saved_create(ctx, &saved);
        b.saved = saved;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double maxrss0 = 1024.0 * (double)ru.ru_maxrss;
    const int have_hwm = reset_hwm();
    const double rss0 = proc_status_bytes("VmRSS");
    if (!st) st = bench_op_run(ctx, c->op, &b, c->backward); /* warm-up + memory */
    if (st || (saved && !la_saved_filled(saved))) {
        if (st)
            snprintf(r->err, sizeof r->err, "%s: %s", la_status_string(st), la_last_error());
        else /* the backward would recompute: not the path this row names */
            snprintf(r->err, sizeof r->err, "the forward left la_saved empty at this "
                                             "shape (one sequence split over time?)");
        la_saved_destroy(saved);
        la_ctx_destroy(ctx);
        bench_bufs_free(&b);
        return;
    }
    if (have_hwm && rss0 > 0)
        r->mem_extra = proc_status_bytes("VmHWM") - rss0;
    else {
        getrusage(RUSAGE_SELF, &ru);
        r->mem_extra = 1024.0 * (double)ru.ru_maxrss - maxrss0;
    }
    double wt[256], ct[256];
    int n = 0;
    double spent = 0;
    while (n < 256 && (n < c->repeats || spent < c->min_time)) {
        double w0 = bench_wall(), c0 = bench_cpu();
        st = bench_op_run(ctx, c->op, &b, c->backward);
        ct[n] = bench_cpu() - c0;
        wt[n] = bench_wall() - w0;
        spent += wt[n];
        n++;
        if (st) break;
    }
    if (st)
        snprintf(r->err, sizeof r->err, "%s: %s", la_status_string(st), la_last_error());
    else {
        r->wall = bench_median(wt, n);
        r->cpu = bench_median(ct, n);
        r->runs = n;
        r->ok = 1;
    }
    la_saved_destroy(saved);
    la_ctx_destroy(ctx);
    bench_bufs_free(&b);
}

int bench_run_isolated(const bench_cfg *c, bench_result *r) {
    memset(r, 0, sizeof *r);
    r->mem_extra = -1;
    int fd[2];
    if (pipe(fd)) return 1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return 1;
    }
    if (pid == 0) {
        close(fd[0]);
        bench_result cr;
        memset(&cr, 0, sizeof cr);
        cr.mem_extra = -1;
        child_run(c, &cr);
        ssize_t w = write(fd[1], &cr, sizeof cr);
        close(fd[1]);
        _exit(w == (ssize_t)sizeof cr ? 0 : 1);
    }
    close(fd[1]);
    size_t got = 0;
    while (got < sizeof *r) {
        ssize_t k = read(fd[0], (char *)r + got, sizeof *r - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got != sizeof *r) {
        memset(r, 0, sizeof *r);
        r->mem_extra = -1;
        snprintf(r->err, sizeof r->err, "child process failed (%s)",
                 WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "no result");
    }
    return 0;
}
