/* Projection matrices for random features, drawn from an explicit seed.
 *
 * Reproducibility: the stream comes from la_rng_normal (bit-identical on
 * every IEEE-754 machine) and everything after it uses only +, -, *, / and
 * sqrt in double precision, compiled with -ffp-contract=off, so the same seed
 * gives the same W everywhere. The draw is single-threaded: it does not take
 * a context, so the thread count cannot change it.
 *
 * Draw order (part of the contract, so a seed means the same W in every
 * release): one generator seeded with `seed`;
 *   IID         m*d normals, row by row;
 *   ORTHOGONAL  ceil(m/d) blocks, each d*d normals (row by row) for the
 *               Gaussian matrix G of that block;
 *   then, for LA_SCALING_CHI, m*d more normals: row i's norm is the norm of
 *   the i-th fresh d-vector.
 */
#include "../../core/internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Q of G = QR (Householder, double), with the signs fixed so that diag(R) > 0:
 * then Q is Haar-distributed when G is Gaussian, so every row and column of Q
 * is a uniformly random unit vector. g [d,d] row-major is destroyed; q [d,d]
 * row-major out; u [d,d] work (row k holds the k-th reflection vector);
 * sign [d] work. */
static void householder_q(double *g, double *q, double *u, double *sign, int64_t d) {
    for (int64_t k = 0; k < d; k++) {
        double norm2 = 0;
        for (int64_t i = k; i < d; i++) norm2 += g[i * d + k] * g[i * d + k];
        double norm = sqrt(norm2);
        double x0 = g[k * d + k];
        double alpha = x0 >= 0 ? -norm : norm; /* R_kk; avoids cancellation */
        double *uk = u + k * d;
        for (int64_t i = k; i < d; i++) uk[i] = g[i * d + k];
        uk[k] = x0 - alpha;
        double unorm2 = 0;
        for (int64_t i = k; i < d; i++) unorm2 += uk[i] * uk[i];
        if (unorm2 > 0) {
            double inv = 1.0 / sqrt(unorm2);
            for (int64_t i = k; i < d; i++) uk[i] *= inv;
            /* g[k:, k:] -= 2 uk (uk^T g[k:, k:]) */
            for (int64_t j = k; j < d; j++) {
                double s = 0;
                for (int64_t i = k; i < d; i++) s += uk[i] * g[i * d + j];
                s *= 2.0;
                for (int64_t i = k; i < d; i++) g[i * d + j] -= s * uk[i];
            }
        }
        sign[k] = alpha < 0 ? -1.0 : 1.0; /* sign of R_kk (R_kk = 0 only if G is singular) */
    }
    /* Q = H_0 H_1 ... H_{d-1} applied to I, from the right-most reflection. */
    for (int64_t i = 0; i < d * d; i++) q[i] = (i / d == i % d) ? 1.0 : 0.0;
    for (int64_t k = d - 1; k >= 0; k--) {
        const double *uk = u + k * d;
        for (int64_t j = 0; j < d; j++) {
            double s = 0;
            for (int64_t i = k; i < d; i++) s += uk[i] * q[i * d + j];
            s *= 2.0;
            for (int64_t i = k; i < d; i++) q[i * d + j] -= s * uk[i];
        }
    }
    /* Q D with D = sign(diag R): column j times sign[j]. */
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) q[i * d + j] *= sign[j];
}

la_status la_projection_draw(float *W, int64_t m, int64_t d, la_projection_kind kind,
                             la_projection_scaling scaling, uint64_t seed) {
    static const char *op = "la_projection_draw";
    la_status st;
    if ((st = la__check_ptr(op, "W", W))) return st;
    if (m < 1) return la__error(LA_ERR_INVALID_SIZE, "%s: m = %" PRId64 " (must be >= 1)", op, m);
    if (d < 1) return la__error(LA_ERR_INVALID_SIZE, "%s: d = %" PRId64 " (must be >= 1)", op, d);
    if (kind != LA_PROJ_IID && kind != LA_PROJ_ORTHOGONAL)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: kind = %d (must be LA_PROJ_IID or LA_PROJ_ORTHOGONAL)", op,
                         (int)kind);
    if (scaling != LA_SCALING_CHI && scaling != LA_SCALING_SQRT_D)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: scaling = %d (must be LA_SCALING_CHI or LA_SCALING_SQRT_D)", op,
                         (int)scaling);
    size_t n;
    if ((st = la__numel(op, "W", &n, m, d, 1, 1))) return st;
    if ((uint64_t)d > SIZE_MAX / sizeof(double) / (uint64_t)d / 4)
        return la__error(LA_ERR_INVALID_SIZE, "%s: d = %" PRId64 " is too large", op, d);
    const size_t dd = (size_t)d * (size_t)d;
    /* Everything is built in double and copied to W at the end, so W is
     * untouched when an allocation fails. */
    double *w = malloc(n * sizeof *w);
    double *work = kind == LA_PROJ_ORTHOGONAL ? malloc((3 * dd + (size_t)d) * sizeof *work) : NULL;
    if (!w || (kind == LA_PROJ_ORTHOGONAL && !work)) {
        free(w);
        free(work);
        return la__error(LA_ERR_OUT_OF_MEMORY,
                         "%s: out of memory for a %" PRId64 " x %" PRId64 " projection", op, m, d);
    }
    la_rng rng;
    la_rng_seed(&rng, seed);
    if (kind == LA_PROJ_IID) {
        for (size_t i = 0; i < n; i++) w[i] = la_rng_normal(&rng);
    } else {
        double *g = work, *q = work + dd, *u = work + 2 * dd, *sign = work + 3 * dd;
        for (int64_t r0 = 0; r0 < m; r0 += d) {
            for (size_t i = 0; i < dd; i++) g[i] = la_rng_normal(&rng);
            householder_q(g, q, u, sign, d);
            /* Rows of this block: the columns of Q (orthonormal). */
            int64_t rows = m - r0 < d ? m - r0 : d;
            for (int64_t i = 0; i < rows; i++)
                for (int64_t j = 0; j < d; j++) w[(r0 + i) * d + j] = q[j * d + i];
        }
    }
    /* Row norms. IID + CHI keeps the Gaussian rows as drawn. */
    if (kind == LA_PROJ_ORTHOGONAL || scaling == LA_SCALING_SQRT_D) {
        for (int64_t i = 0; i < m; i++) {
            double target;
            if (scaling == LA_SCALING_CHI) {
                double s = 0;
                for (int64_t j = 0; j < d; j++) {
                    double z = la_rng_normal(&rng);
                    s += z * z;
                }
                target = sqrt(s);
            } else {
                target = sqrt((double)d);
            }
            double cur = 0;
            for (int64_t j = 0; j < d; j++) cur += w[i * d + j] * w[i * d + j];
            cur = sqrt(cur);
            double f = cur > 0 ? target / cur : 0;
            for (int64_t j = 0; j < d; j++) w[i * d + j] *= f;
        }
    }
    for (size_t i = 0; i < n; i++) W[i] = (float)w[i];
    free(w);
    free(work);
    return LA_OK;
}
