#include "harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int th_passed, th_failed;

int th_check(int ok, const char *file, int line, const char *fmt, ...) {
    if (ok) {
        th_passed++;
        return 1;
    }
    th_failed++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 0;
}

int th_check_err(double err, double tol, const char *file, int line, const char *fmt, ...) {
    if (err <= tol) { /* NaN fails */
        th_passed++;
        return 1;
    }
    th_failed++;
    fprintf(stderr, "FAIL %s:%d: error %.3g > bound %.3g: ", file, line, err, tol);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 0;
}

int th_check_status(la_status got, la_status want, const char *file, int line,
                    const char *what) {
    if (got == want) {
        th_passed++;
        return 1;
    }
    th_failed++;
    fprintf(stderr, "FAIL %s:%d: %s: got %s, want %s (%s)\n", file, line, what,
            la_status_string(got), la_status_string(want), la_last_error());
    return 0;
}

int th_summary(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, th_passed, th_failed);
    return th_failed ? 1 : 0;
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test: out of memory (%zu bytes)\n", bytes);
        abort();
    }
    return p;
}

float *th_nan_floats(size_t n) {
    float *x = xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = NAN;
    return x;
}

float *th_rand_floats(size_t n, la_rng *rng, double std) {
    float *x = xmalloc(n * sizeof *x);
    ref_fill_normal(x, n, rng, std);
    return x;
}

double *th_doubles(size_t n) {
    double *x = xmalloc(n * sizeof *x);
    memset(x, 0, n * sizeof *x);
    return x;
}

int th_bitwise_equal(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof *a) == 0;
}

int th_untouched(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isnan(x[i])) return 0;
    return 1;
}

la_ctx *th_ctx(int n_threads) {
    la_ctx *ctx = NULL;
    if (la_ctx_create(&ctx, n_threads) != LA_OK) {
        fprintf(stderr, "test: la_ctx_create(%d) failed: %s\n", n_threads, la_last_error());
        abort();
    }
    return ctx;
}

la_dims th_dims(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V) {
    la_dims d = {.B = B, .T = T, .H = H, .K = K, .V = V};
    return d;
}
