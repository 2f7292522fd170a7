/* Deterministic random numbers: xoshiro256** seeded through splitmix64, and
 * normals by Marsaglia's polar method with a logarithm written here from
 * +, -, *, / only. libm's log may differ in the last bit between machines;
 * this one cannot (the library is compiled with -ffp-contract=off), so the
 * same seed gives the same projection matrix everywhere. */
#include "internal.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void la_rng_seed(la_rng *rng, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&x);
    rng->spare = 0;
    rng->has_spare = 0;
}

uint64_t la_rng_u64(la_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double la_rng_uniform(la_rng *rng) { return (double)(la_rng_u64(rng) >> 11) * 0x1.0p-53; }

/* log(x) for finite x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), then
 * log m = 2 atanh(f), f = (m-1)/(m+1), |f| < 0.172, by its odd series. */
static double det_log(double x) {
    int e;
    double m = frexp(x, &e); /* exact: m in [0.5, 1) */
    if (m < 0.70710678118654752440) {
        m *= 2.0;
        e -= 1;
    }
    double f = (m - 1.0) / (m + 1.0);
    double f2 = f * f, term = f, sum = 0.0;
    for (int n = 1; n <= 41; n += 2) {
        sum += term / n;
        term *= f2;
    }
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    return (double)e * ln2_hi + ((double)e * ln2_lo + 2.0 * sum);
}

double la_rng_normal(la_rng *rng) {
    if (rng->has_spare) {
        rng->has_spare = 0;
        return rng->spare;
    }
    for (;;) {
        double u = 2.0 * la_rng_uniform(rng) - 1.0;
        double v = 2.0 * la_rng_uniform(rng) - 1.0;
        double s = u * u + v * v;
        if (s >= 1.0 || s == 0.0) continue;
        double factor = sqrt(-2.0 * det_log(s) / s);
        rng->spare = v * factor;
        rng->has_spare = 1;
        return u * factor;
    }
}
