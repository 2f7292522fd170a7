/* A tiny test harness: CHECK macros that count, a closing summary line in
 * the form "N passed, N failed" and an exit status that reflects it. */
#ifndef LINATTN_HARNESS_H
#define LINATTN_HARNESS_H

#include "linattn.h"
#include "ref_util.h"

#include <stddef.h>
#include <stdio.h>

extern int th_passed, th_failed;

/* Records one assertion; prints the failing ones with file:line. */
int th_check(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define CHECK(cond, ...) th_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* err <= tol, printing both on failure. */
#define CHECK_ERR(err, tol, ...) th_check_err((err), (tol), __FILE__, __LINE__, __VA_ARGS__)
int th_check_err(double err, double tol, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* A call returned `want`; prints la_last_error() otherwise. */
#define CHECK_STATUS(call, want, what) \
    th_check_status((call), (want), __FILE__, __LINE__, (what))
int th_check_status(la_status got, la_status want, const char *file, int line,
                    const char *what);

/* Prints "N passed, N failed" and returns the process exit code. */
int th_summary(const char *suite);

/* malloc'd float buffers, NaN-filled so unwritten outputs show up; abort on
 * OOM (tests only). */
float *th_nan_floats(size_t n);
float *th_rand_floats(size_t n, la_rng *rng, double std);
double *th_doubles(size_t n); /* zero-filled */
/* 1 if every float in a is bit-identical to b. */
int th_bitwise_equal(const float *a, const float *b, size_t n);
/* 1 if every float in x still has the NaN prefill (nothing was written). */
int th_untouched(const float *x, size_t n);

/* Dense [B,T,H,*] shapes: HV = 0, no cu_seqlens. */
la_dims th_dims(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V);

/* A context with n threads (abort on failure). */
la_ctx *th_ctx(int n_threads);

#endif
