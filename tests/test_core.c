/* Core: status text, errors, context and thread pool, RNG, shape validation. */
#include "core/internal.h"
#include "harness.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void count_task(void *arg, int64_t task, int tid) {
    (void)tid;
    int *hits = arg;
    hits[task]++; /* each task index is handed out once: no race */
}

/* hits[task] counts runs; tids[task] = the thread that ran it */
typedef struct {
    int hits[64];
    int tids[64];
} tid_log;

static void log_task(void *arg, int64_t task, int tid) {
    tid_log *l = arg;
    l->hits[task]++;
    l->tids[task] = tid;
}

/* Small work stays on the calling thread; work worth sharing still runs
 * each task exactly once. */
static void test_parallel_for_sized(void) {
    la_ctx *ctx = th_ctx(3);
    const int64_t sizes[] = {16, LA__PARALLEL_MIN_BYTES / 64, LA__PARALLEL_MIN_BYTES,
                             4 * LA__PARALLEL_MIN_BYTES};
    for (int si = 0; si < 4; si++) {
        for (int64_t n = 0; n <= 64; n += 16) {
            tid_log l;
            memset(&l, 0, sizeof l);
            la__parallel_for_sized(ctx, n, sizes[si], log_task, &l);
            int once = 1, caller = 1;
            for (int64_t t = 0; t < 64; t++) {
                once &= l.hits[t] == (t < n);
                caller &= l.tids[t] == 0;
            }
            CHECK(once, "parallel_for_sized: each of %lld tasks of %lld bytes once", (long long)n,
                  (long long)sizes[si]);
            /* fewer than two threads' worth of bytes: the caller runs all */
            if (n * sizes[si] < 2 * LA__PARALLEL_MIN_BYTES)
                CHECK(caller, "parallel_for_sized: %lld tasks of %lld bytes on the caller",
                      (long long)n, (long long)sizes[si]);
        }
    }
    la_ctx_destroy(ctx);
}

static void test_status(void) {
    for (int s = LA_OK; s <= LA_ERR_INTERNAL; s++)
        CHECK(strncmp(la_status_string((la_status)s), "LA_", 3) == 0, "status %d has a name", s);
    CHECK(strcmp(la_status_string((la_status)999), "LA_ERR_UNKNOWN_STATUS") == 0,
          "unknown status");
    CHECK(strcmp(la_version(), LINATTN_VERSION_STRING) == 0, "version string");
}

static void test_ctx(void) {
    la_ctx *ctx = NULL;
    CHECK_STATUS(la_ctx_create(NULL, 1), LA_ERR_NULL_POINTER, "ctx out NULL");
    CHECK_STATUS(la_ctx_create(&ctx, -1), LA_ERR_INVALID_ARGUMENT, "negative threads");
    CHECK(strstr(la_last_error(), "n_threads = -1") != NULL, "message names the value: %s",
          la_last_error());
    CHECK(ctx == NULL, "nothing written on error");
    for (int nt = 1; nt <= 3; nt++) {
        CHECK_STATUS(la_ctx_create(&ctx, nt), LA_OK, "create");
        CHECK(la_ctx_threads(ctx) == nt, "thread count %d", nt);
        int hits[1000] = {0};
        for (int rep = 0; rep < 20; rep++) la__parallel_for(ctx, 1000, count_task, hits);
        int ok = 1;
        for (int i = 0; i < 1000; i++) ok &= hits[i] == 20;
        CHECK(ok, "parallel_for runs each task exactly once (%d threads)", nt);
        CHECK_STATUS(la__scratch_reserve(ctx, 1000), LA_OK, "scratch");
        for (int t = 0; t < nt; t++) {
            void *p = la__scratch(ctx, t);
            CHECK(p && ((uintptr_t)p % 64) == 0, "scratch aligned");
        }
        la_ctx_destroy(ctx);
        ctx = NULL;
    }
    CHECK_STATUS(la_ctx_create(&ctx, 0), LA_OK, "all CPUs");
    CHECK(la_ctx_threads(ctx) >= 1, "at least one thread");
    la_ctx_destroy(ctx);
    la_ctx_destroy(NULL);
}

static void test_rng(void) {
    la_rng a, b;
    la_rng_seed(&a, 42);
    la_rng_seed(&b, 42);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= la_rng_u64(&a) == la_rng_u64(&b);
    CHECK(same, "same seed, same stream");
    la_rng_seed(&b, 43);
    CHECK(la_rng_u64(&a) != la_rng_u64(&b), "different seeds differ");
    /* Moments of the normal generator within 5 standard errors. */
    const int n = 200000;
    double s1 = 0, s2 = 0, s4 = 0;
    la_rng_seed(&a, 7);
    for (int i = 0; i < n; i++) {
        double x = la_rng_normal(&a);
        s1 += x;
        s2 += x * x;
        s4 += x * x * x * x;
    }
    double mean = s1 / n, var = s2 / n, kurt = s4 / n;
    CHECK(fabs(mean) < 5 * sqrt(1.0 / n), "normal mean %g", mean);
    CHECK(fabs(var - 1) < 5 * sqrt(2.0 / n), "normal variance %g", var);
    CHECK(fabs(kurt - 3) < 5 * sqrt(96.0 / n), "normal 4th moment %g", kurt);
    double u = 0;
    la_rng_seed(&a, 9);
    int in_range = 1;
    for (int i = 0; i < n; i++) {
        double x = la_rng_uniform(&a);
        in_range &= x >= 0 && x < 1;
        u += x;
    }
    CHECK(in_range, "uniform in [0,1)");
    CHECK(fabs(u / n - 0.5) < 5 * sqrt(1.0 / 12 / n), "uniform mean %g", u / n);
}

static void test_dims(void) {
    const char *op = "test";
    la_dims d = {.B = 2, .T = 5, .H = 3, .K = 4, .V = 6};
    CHECK_STATUS(la__check_dims(op, &d, 0), LA_OK, "valid dims");
    CHECK_STATUS(la__check_dims(op, NULL, 0), LA_ERR_NULL_POINTER, "NULL dims");
    la_dims e = d;
    e.T = 0;
    CHECK_STATUS(la__check_dims(op, &e, 0), LA_ERR_INVALID_SIZE, "T = 0");
    CHECK(strstr(la_last_error(), "dims.T = 0") != NULL, "names T: %s", la_last_error());
    e = d;
    e.K = -3;
    CHECK_STATUS(la__check_dims(op, &e, 0), LA_ERR_INVALID_SIZE, "K < 0");
    e = d;
    e.B = INT64_C(1) << 40;
    e.T = INT64_C(1) << 20;
    e.K = 1 << 10;
    CHECK_STATUS(la__check_dims(op, &e, 0), LA_ERR_INVALID_SIZE, "size overflow");
    CHECK(strstr(la_last_error(), "overflows") != NULL, "says overflow: %s", la_last_error());
    e = d;
    e.HV = 6;
    CHECK_STATUS(la__check_dims(op, &e, 0), LA_ERR_SHAPE_MISMATCH, "HV without allow");
    CHECK_STATUS(la__check_dims(op, &e, 1), LA_OK, "HV multiple of H");
    e.HV = 4;
    CHECK_STATUS(la__check_dims(op, &e, 1), LA_ERR_SHAPE_MISMATCH, "HV not a multiple");
    int64_t cu[4] = {0, 2, 5, 9};
    e = d;
    e.B = 1;
    e.T = 9;
    e.cu_seqlens = cu;
    e.n_seqs = 3;
    CHECK_STATUS(la__check_dims(op, &e, 0), LA_OK, "cu_seqlens");
    CHECK(la__num_seqs(&e) == 3, "N from cu_seqlens");
    int64_t s, l;
    la__seq_bounds(&e, 1, &s, &l);
    CHECK(s == 2 && l == 3, "seq bounds");
    e.B = 2;
    CHECK_STATUS(la__check_dims(op, &e, 0), LA_ERR_BAD_SEQLENS, "cu_seqlens with B != 1");
    e.B = 1;
    cu[0] = 1;
    CHECK_STATUS(la__check_dims(op, &e, 0), LA_ERR_BAD_SEQLENS, "cu_seqlens[0] != 0");
    cu[0] = 0;
    cu[2] = 1;
    CHECK_STATUS(la__check_dims(op, &e, 0), LA_ERR_BAD_SEQLENS, "decreasing");
    cu[2] = 2; /* equal offsets: a zero-length sequence is legal */
    CHECK_STATUS(la__check_dims(op, &e, 0), LA_OK, "zero-length sequence");
    la__seq_bounds(&e, 1, &s, &l);
    CHECK(s == 2 && l == 0, "zero-length sequence bounds");
    cu[2] = 5;
    cu[3] = 8;
    CHECK_STATUS(la__check_dims(op, &e, 0), LA_ERR_BAD_SEQLENS, "not ending at T");
    cu[3] = 9;
    e.n_seqs = 0;
    CHECK_STATUS(la__check_dims(op, &e, 0), LA_ERR_BAD_SEQLENS, "n_seqs = 0");
    float x[3] = {1, NAN, 2};
    CHECK_STATUS(la__check_finite(op, "q", x, 3), LA_ERR_NON_FINITE, "NaN");
    CHECK(strstr(la_last_error(), "q[1] is NaN") != NULL, "names index: %s", la_last_error());
    x[1] = INFINITY;
    CHECK_STATUS(la__check_finite(op, "q", x, 3), LA_ERR_NON_FINITE, "Inf");
    float sc;
    CHECK_STATUS(la__resolve_scale(op, 0, 16, &sc), LA_OK, "default scale");
    CHECK(sc == 0.25f, "K^-1/2 = %g", (double)sc);
    CHECK_STATUS(la__resolve_scale(op, NAN, 16, &sc), LA_ERR_INVALID_ARGUMENT, "NaN scale");
    float g[2] = {-1e4f, 0.5f};
    CHECK_STATUS(la__check_log_gate(op, "g", g, 2), LA_ERR_INVALID_ARGUMENT, "g > 0");
    float beta[2] = {0, 2.5f};
    CHECK_STATUS(la__check_beta(op, "beta", beta, 2), LA_ERR_INVALID_ARGUMENT, "beta > 2");
}

/* The threaded scan gives the serial scan's answer and message: the first
 * bad index, in the first, a middle and the last block, and none. */
static void test_check_finite_ctx(void) {
    const size_t n = (size_t)3 << 20 | 123; /* above the threaded size, a partial last block */
    float *x = calloc(n, sizeof *x);
    CHECK(x != NULL, "alloc");
    if (!x) return;
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 97) - 48.0f;
    const size_t at[] = {0, 70000, (size_t)2 << 20, n - 1};
    for (int t = 1; t <= 3; t++) {
        la_ctx *ctx = th_ctx(t);
        CHECK(la__check_finite_ctx(ctx, "op", "q", x, n) == LA_OK, "all finite, %d threads", t);
        for (size_t a = 0; a < sizeof at / sizeof at[0]; a++) {
            x[at[a]] = a % 2 ? INFINITY : NAN;
            if (at[a] + 5 < n) x[at[a] + 5] = NAN; /* a later one is not the one named */
            char want[96];
            snprintf(want, sizeof want, "op: q[%zu] is %s", at[a], a % 2 ? "Inf" : "NaN");
            CHECK(la__check_finite_ctx(ctx, "op", "q", x, n) == LA_ERR_NON_FINITE,
                  "bad at %zu, %d threads", at[a], t);
            CHECK(strstr(la_last_error(), want) != NULL, "message '%s' names %s", la_last_error(),
                  want);
            x[at[a]] = 1.0f;
            if (at[a] + 5 < n) x[at[a] + 5] = 1.0f;
        }
        la_ctx_destroy(ctx);
    }
    free(x);
}

/* cpu-fwd19: la__check_finite's scan (x * 0 summed per block, built per
 * ISA; ctest repeats this program on each): every finite kind (±FLT_MAX,
 * ±0, denormals) passes at lengths around the 32-lane step and the
 * 2048-value block; each bad kind (±Inf, NaN of either sign) in the first,
 * a middle and the last position is named at its index, not a later one. */
static void test_check_finite_kinds(void) {
    const size_t lens[] = {1, 31, 32, 33, 95, 2047, 2048, 2049, 3 * 2048 + 77};
    const float ok[6] = {FLT_MAX, -FLT_MAX, 0.0f, -0.0f, 1e-45f, -1e-45f};
    const float bad[4] = {INFINITY, -INFINITY, NAN, -NAN};
    for (size_t L = 0; L < sizeof lens / sizeof lens[0]; L++) {
        const size_t n = lens[L];
        float *x = malloc(n * sizeof *x);
        CHECK(x != NULL, "alloc");
        if (!x) return;
        for (size_t i = 0; i < n; i++) x[i] = ok[i % 6];
        CHECK(la__check_finite("op", "q", x, n) == LA_OK, "finite kinds pass, n = %zu", n);
        const size_t at[3] = {0, n / 2, n - 1};
        for (int b = 0; b < 4; b++)
            for (int a = 0; a < 3; a++) {
                const float keep = x[at[a]];
                x[at[a]] = bad[b];
                if (at[a] + 3 < n) x[at[a] + 3] = NAN; /* a later one is not the one named */
                char want[64];
                snprintf(want, sizeof want, "op: q[%zu] is %s", at[a], b < 2 ? "Inf" : "NaN");
                CHECK(la__check_finite("op", "q", x, n) == LA_ERR_NON_FINITE,
                      "bad kind %d at %zu of %zu", b, at[a], n);
                CHECK(strstr(la_last_error(), want) != NULL, "message '%s' names %s",
                      la_last_error(), want);
                x[at[a]] = keep;
                if (at[a] + 3 < n) x[at[a] + 3] = ok[(at[a] + 3) % 6];
            }
        free(x);
    }
}

/* cpu-fwd5: la__check_log_gate's block scan: every valid kind (+0, -0, a
 * reset, a negative denormal) passes; each bad kind (a positive denormal,
 * 0.5, +-Inf, NaN of either sign), in the first, a middle and the last
 * block, is named at its index, not a later bad one. */
static void test_check_log_gate_scan(void) {
    const size_t n = 3 * 2048 + 77;
    float *g = malloc(n * sizeof *g);
    CHECK(g != NULL, "alloc");
    if (!g) return;
    const float ok[4] = {0.0f, -0.0f, -1e4f, -1e-45f};
    for (size_t i = 0; i < n; i++) g[i] = i % 5 == 4 ? -0.01f * (float)(i % 13) : ok[i % 5 % 4];
    CHECK(la__check_log_gate("op", "g", g, n) == LA_OK, "valid gates pass");
    const float bad[6] = {1e-45f, 0.5f, INFINITY, -INFINITY, NAN, -NAN};
    const size_t at[3] = {3, 2048 + 1000, n - 1};
    for (int b = 0; b < 6; b++)
        for (int a = 0; a < 3; a++) {
            const float keep = g[at[a]];
            g[at[a]] = bad[b];
            if (at[a] + 3 < n) g[at[a] + 3] = 0.25f; /* a later one is not the one named */
            char want[48];
            snprintf(want, sizeof want, "op: g[%zu]", at[a]);
            const la_status st = la__check_log_gate("op", "g", g, n);
            CHECK(st == (b >= 2 ? LA_ERR_NON_FINITE : LA_ERR_INVALID_ARGUMENT),
                  "bad kind %d at %zu: status %d", b, at[a], (int)st);
            CHECK(strstr(la_last_error(), want) != NULL, "message '%s' names %s", la_last_error(),
                  want);
            g[at[a]] = keep;
            if (at[a] + 3 < n) g[at[a] + 3] = -0.5f;
        }
    free(g);
}

int main(void) {
    test_check_finite_kinds();
    test_check_log_gate_scan();
    test_check_finite_ctx();
    test_parallel_for_sized();
    test_status();
    test_ctx();
    test_rng();
    test_dims();
    return th_summary("test_core");
}
