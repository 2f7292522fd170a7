#include "ref_util.h"

#include <math.h>
#include <stdlib.h>

void ref_fill_normal(float *x, size_t n, la_rng *rng, double std) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(std * la_rng_normal(rng));
}

void ref_fill_uniform(float *x, size_t n, la_rng *rng, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * la_rng_uniform(rng));
}

double *ref_to_double(const float *x, size_t n) {
    if (!x) return NULL;
    double *y = malloc((n ? n : 1) * sizeof *y);
    if (!y) return NULL;
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

static void seq_bounds(const la_dims *d, int64_t n, int64_t *start, int64_t *len) {
    if (d->cu_seqlens) {
        *start = d->cu_seqlens[n];
        *len = d->cu_seqlens[n + 1] - d->cu_seqlens[n];
    } else {
        *start = n * d->T;
        *len = d->T;
    }
}

int64_t ref_gather(double *dst, const float *x, const la_dims *d, int64_t n, int64_t h,
                   int64_t heads, int64_t D) {
    int64_t start, len;
    seq_bounds(d, n, &start, &len);
    for (int64_t t = 0; t < len; t++)
        for (int64_t i = 0; i < D; i++)
            dst[t * D + i] = x[((start + t) * heads + h) * D + i];
    return len;
}

void ref_scatter(double *y, const double *src, const la_dims *d, int64_t n, int64_t h,
                 int64_t heads, int64_t D) {
    int64_t start, len;
    seq_bounds(d, n, &start, &len);
    for (int64_t t = 0; t < len; t++)
        for (int64_t i = 0; i < D; i++)
            y[((start + t) * heads + h) * D + i] = src[t * D + i];
}

double ref_max_rel_err(const float *got, const double *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= num)) num = e; /* NaN propagates */
        if (fabs(want[i]) > den) den = fabs(want[i]);
    }
    return num / (den > 1e-30 ? den : 1e-30);
}

double ref_rms_rel_err(const float *got, const double *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)got[i] - want[i];
        num += e * e;
        den += want[i] * want[i];
    }
    return sqrt(num / (den > 1e-300 ? den : 1e-300));
}

double ref_max_rel_err_ff(const float *got, const float *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]);
        if (!(e <= num)) num = e;
        if (fabs((double)want[i]) > den) den = fabs((double)want[i]);
    }
    return num / (den > 1e-30 ? den : 1e-30);
}

size_t ref_count_nonfinite(const float *x, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += !isfinite(x[i]);
    return c;
}
