/* Projection matrices: orthonormal blocks, the row-norm laws, partial blocks,
 * reproducibility from the seed, isotropy, and bad arguments. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* max |Q Q^T - I| over the rows r0..r1-1 of W [*, d], each row normalised. */
static double block_orthonormality(const float *W, int64_t d, int64_t r0, int64_t r1) {
    double worst = 0;
    for (int64_t i = r0; i < r1; i++) {
        double ni = 0;
        for (int64_t a = 0; a < d; a++) ni += (double)W[i * d + a] * W[i * d + a];
        for (int64_t j = r0; j < r1; j++) {
            double nj = 0, ij = 0;
            for (int64_t a = 0; a < d; a++) {
                nj += (double)W[j * d + a] * W[j * d + a];
                ij += (double)W[i * d + a] * W[j * d + a];
            }
            double g = ij / sqrt(ni * nj) - (i == j ? 1.0 : 0.0);
            if (fabs(g) > worst) worst = fabs(g);
        }
    }
    return worst;
}

static void test_orthogonal_blocks(void) {
    const int64_t ds[] = {1, 3, 16, 64};
    for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
        const int64_t d = ds[di];
        const int64_t ms[] = {1, d > 1 ? d - 1 : 1, d, 2 * d + 3};
        for (size_t mi = 0; mi < 4; mi++) {
            const int64_t m = ms[mi];
            for (int sc = 0; sc < 2; sc++) {
                float *W = th_nan_floats((size_t)(m * d) + 8);
                CHECK_STATUS(la_projection_draw(W, m, d, LA_PROJ_ORTHOGONAL,
                                                (la_projection_scaling)sc, 11 + (uint64_t)m),
                             LA_OK, "orthogonal draw");
                CHECK(ref_count_nonfinite(W, (size_t)(m * d)) == 0, "every entry written");
                CHECK(th_untouched(W + m * d, 8), "nothing written past m*d");
                /* Rows of a block are orthonormal up to float32 storage:
                 * each entry carries a relative rounding of 2^-24, so an
                 * inner product of unit rows is off by about sqrt(d) 2^-24;
                 * 1e-5 leaves room for d = 64. The last, partial block too. */
                double worst = 0;
                for (int64_t r0 = 0; r0 < m; r0 += d) {
                    double e = block_orthonormality(W, d, r0, r0 + d < m ? r0 + d : m);
                    worst = e > worst ? e : worst;
                }
                CHECK_ERR(worst, 1e-5, "|QQ^T - I| d=%lld m=%lld scaling %d", (long long)d,
                          (long long)m, sc);
                if (sc == LA_SCALING_SQRT_D) {
                    double werr = 0;
                    for (int64_t i = 0; i < m; i++) {
                        double n2 = 0;
                        for (int64_t a = 0; a < d; a++) n2 += (double)W[i * d + a] * W[i * d + a];
                        werr = fmax(werr, fabs(sqrt(n2) / sqrt((double)d) - 1));
                    }
                    /* float32 entries: the norm is exact to about 2^-24 */
                    CHECK_ERR(werr, 1e-6, "row norms sqrt(d), d=%lld m=%lld", (long long)d,
                              (long long)m);
                }
                free(W);
            }
        }
    }
}

/* Squared row norms follow chi^2_d (mean d) for CHI scaling and for i.i.d.
 * rows: the sample mean must lie within 5 standard errors (from the sample
 * variance) of d. The sample variance must be near 2d too (5 standard
 * errors, its SE estimated from the sample fourth moment). */
static void test_chi_norms(void) {
    const int64_t d = 10, m = 4000;
    for (int kind = 0; kind < 2; kind++) {
        float *W = th_nan_floats((size_t)(m * d));
        CHECK_STATUS(la_projection_draw(W, m, d, (la_projection_kind)kind, LA_SCALING_CHI, 5),
                     LA_OK, "draw");
        double s1 = 0, s2 = 0, s4 = 0;
        for (int64_t i = 0; i < m; i++) {
            double n2 = 0;
            for (int64_t a = 0; a < d; a++) n2 += (double)W[i * d + a] * W[i * d + a];
            s1 += n2;
            s2 += n2 * n2;
        }
        const double mean = s1 / m, var = s2 / m - mean * mean;
        for (int64_t i = 0; i < m; i++) {
            double n2 = 0;
            for (int64_t a = 0; a < d; a++) n2 += (double)W[i * d + a] * W[i * d + a];
            s4 += pow(n2 - mean, 4);
        }
        const double se_mean = sqrt(var / m);
        const double se_var = sqrt(fmax(s4 / m - var * var, 0) / m);
        CHECK(fabs(mean - d) <= 5 * se_mean, "kind %d: mean squared norm %g vs d = %lld (se %g)",
              kind, mean, (long long)d, se_mean);
        CHECK(fabs(var - 2.0 * d) <= 5 * se_var,
              "kind %d: variance of squared norms %g vs 2d (se %g)", kind, var, se_var);
        free(W);
    }
    /* i.i.d. + SQRT_D: Gaussian directions rescaled to sqrt(d) exactly. */
    float *W = th_nan_floats(7 * 5);
    CHECK_STATUS(la_projection_draw(W, 7, 5, LA_PROJ_IID, LA_SCALING_SQRT_D, 3), LA_OK, "iid sqrt");
    double werr = 0;
    for (int i = 0; i < 7; i++) {
        double n2 = 0;
        for (int a = 0; a < 5; a++) n2 += (double)W[i * 5 + a] * W[i * 5 + a];
        werr = fmax(werr, fabs(sqrt(n2 / 5) - 1));
    }
    CHECK_ERR(werr, 1e-6, "iid rows rescaled to sqrt(d)");
    free(W);
}

/* Each row direction is uniform on the sphere (Q is Haar: the signs of R's
 * diagonal are fixed). Without that fix the first coordinate of row 0 would
 * always have one sign. Mean of W[r][a] over independent seeds: 0 within 5
 * standard errors; mean of W[r][a]^2: 1 (CHI scaling: E[w w^T] = I). */
static void test_isotropy(void) {
    const int64_t d = 6, m = 8; /* second block partial */
    const int n = 3000;
    float *W = th_nan_floats((size_t)(m * d));
    double s1[8][6] = {{0}}, s2[8][6] = {{0}}, s4[8][6] = {{0}};
    for (int r = 0; r < n; r++) {
        if (la_projection_draw(W, m, d, LA_PROJ_ORTHOGONAL, LA_SCALING_CHI, 1000 + (uint64_t)r))
            CHECK(0, "draw %d failed: %s", r, la_last_error());
        for (int i = 0; i < m; i++)
            for (int a = 0; a < d; a++) {
                double w = W[i * d + a];
                s1[i][a] += w;
                s2[i][a] += w * w;
                s4[i][a] += w * w * w * w;
            }
    }
    int ok_mean = 1, ok_var = 1;
    for (int i = 0; i < m; i++)
        for (int a = 0; a < d; a++) {
            double mean = s1[i][a] / n, m2 = s2[i][a] / n, m4 = s4[i][a] / n;
            double se1 = sqrt((m2 - mean * mean) / n), se2 = sqrt((m4 - m2 * m2) / n);
            if (fabs(mean) > 5 * se1) {
                ok_mean = 0;
                fprintf(stderr, "row %d coord %d: mean %g (se %g)\n", i, a, mean, se1);
            }
            if (fabs(m2 - 1) > 5 * se2) {
                ok_var = 0;
                fprintf(stderr, "row %d coord %d: E[w^2] %g (se %g)\n", i, a, m2, se2);
            }
        }
    CHECK(ok_mean, "orthogonal rows have mean zero");
    CHECK(ok_var, "orthogonal CHI rows have E[w w^T] = I on the diagonal");
    free(W);
}

static void test_seed(void) {
    const int64_t m = 37, d = 12;
    for (int kind = 0; kind < 2; kind++)
        for (int sc = 0; sc < 2; sc++) {
            float *a = th_nan_floats((size_t)(m * d)), *b = th_nan_floats((size_t)(m * d));
            la_projection_draw(a, m, d, (la_projection_kind)kind, (la_projection_scaling)sc, 99);
            la_projection_draw(b, m, d, (la_projection_kind)kind, (la_projection_scaling)sc, 99);
            CHECK(th_bitwise_equal(a, b, (size_t)(m * d)), "same seed, same W (%d,%d)", kind, sc);
            la_projection_draw(b, m, d, (la_projection_kind)kind, (la_projection_scaling)sc, 100);
            size_t same = 0;
            for (int64_t i = 0; i < m * d; i++) same += a[i] == b[i];
            CHECK(same == 0, "a new seed redraws every entry (%zu equal)", same);
            free(a);
            free(b);
        }
}

static void test_bad_args(void) {
    float *W = th_nan_floats(64);
    CHECK_STATUS(la_projection_draw(NULL, 4, 4, LA_PROJ_IID, LA_SCALING_CHI, 1),
                 LA_ERR_NULL_POINTER, "W NULL");
    CHECK_STATUS(la_projection_draw(W, 0, 4, LA_PROJ_IID, LA_SCALING_CHI, 1), LA_ERR_INVALID_SIZE,
                 "m = 0");
    CHECK(strstr(la_last_error(), "m = 0") != NULL, "message names m: %s", la_last_error());
    CHECK_STATUS(la_projection_draw(W, 4, -2, LA_PROJ_ORTHOGONAL, LA_SCALING_CHI, 1),
                 LA_ERR_INVALID_SIZE, "d < 0");
    CHECK_STATUS(la_projection_draw(W, 4, 4, (la_projection_kind)7, LA_SCALING_CHI, 1),
                 LA_ERR_INVALID_ARGUMENT, "unknown kind");
    CHECK(strstr(la_last_error(), "kind = 7") != NULL, "message names kind: %s", la_last_error());
    CHECK_STATUS(la_projection_draw(W, 4, 4, LA_PROJ_IID, (la_projection_scaling)-1, 1),
                 LA_ERR_INVALID_ARGUMENT, "unknown scaling");
    CHECK_STATUS(
        la_projection_draw(W, INT64_C(1) << 40, INT64_C(1) << 30, LA_PROJ_IID, LA_SCALING_CHI, 1),
        LA_ERR_INVALID_SIZE, "m*d overflows");
    CHECK(th_untouched(W, 64), "W untouched by failing calls");
    free(W);
}

int main(void) {
    test_orthogonal_blocks();
    test_chi_norms();
    test_isotropy();
    test_seed();
    test_bad_args();
    return th_summary("test_projection");
}
