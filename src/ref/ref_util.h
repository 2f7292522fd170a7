/* Utilities shared by the float64 references, the tests and `linattn check`:
 * random inputs, float<->double copies, slicing one (sequence, head) out of a
 * [B,T,H,D] tensor, and error metrics. Not part of the installed library. */
#ifndef LINATTN_REF_UTIL_H
#define LINATTN_REF_UTIL_H

#include "linattn.h"

#include <stddef.h>
#include <stdint.h>

/* x[i] ~ N(0, std^2) / U(lo, hi), from rng. */
void ref_fill_normal(float *x, size_t n, la_rng *rng, double std);
void ref_fill_uniform(float *x, size_t n, la_rng *rng, double lo, double hi);

/* malloc'd float64 copy of x (NULL stays NULL). */
double *ref_to_double(const float *x, size_t n);

/* Copies sequence n, head h of x [B,T,heads,D] (token layout from dims:
 * batch rows or cu_seqlens) into dst [len, D]; returns len. */
int64_t ref_gather(double *dst, const float *x, const la_dims *d, int64_t n, int64_t h,
                   int64_t heads, int64_t D);
/* The reverse: writes src [len, D] into sequence n, head h of y [B,T,heads,D]. */
void ref_scatter(double *y, const double *src, const la_dims *d, int64_t n, int64_t h,
                 int64_t heads, int64_t D);

/* max_i |got_i - want_i| / max(max_i |want_i|, 1e-30) */
double ref_max_rel_err(const float *got, const double *want, size_t n);
/* sqrt(sum (got-want)^2 / max(sum want^2, 1e-300)) */
double ref_rms_rel_err(const float *got, const double *want, size_t n);
/* Same metrics, float against float. */
double ref_max_rel_err_ff(const float *got, const float *want, size_t n);
/* Number of non-finite values (catches unwritten NaN-prefilled outputs). */
size_t ref_count_nonfinite(const float *x, size_t n);

#endif
