/* Statistics of the random-feature estimators (the computational core of the
 * approximation lab, ref_rf_kernel_mse): unbiasedness, the closed-form MSE
 * of MATH.md section 3, and orthogonal rows beating i.i.d. rows for m <= d.
 *
 * Every bound is a confidence bound from the sample itself: 5 standard
 * errors (estimated from the per-draw spread over independent seeds; a
 * correct estimator fails such a check with probability < 1e-6), plus a
 * float32 allowance where it matters. Seeds are fixed, so the test is
 * deterministic; a wrong estimator (a missing factor, a biased norm law)
 * is off by many standard errors. */
#include "harness.h"
#include "ref_feature_map.h"

#include <math.h>
#include <stdlib.h>

static const char *KIND[] = {"positive", "hyperbolic", "trig-gauss", "trig-softmax", "relu"};
static const char *PROJ[] = {"iid", "orthogonal"};

static double mean_kernel(la_random_feature kind, const double *X, const double *Y, int64_t P,
                          int64_t d) {
    double s = 0;
    for (int64_t p = 0; p < P; p++) s += fabs(ref_rf_target_kernel(kind, X + p * d, Y + p * d, d));
    return s / (double)P;
}

static void test_unbiased(la_ctx *ctx) {
    const int64_t d = 8, m = 8, P = 4;
    const int R = 3000;
    double X[4 * 8], Y[4 * 8];
    la_rng rng;
    la_rng_seed(&rng, 123);
    ref_random_pairs(X, Y, P, d, 1.5, &rng);
    for (int kind = 0; kind <= LA_RF_RELU; kind++)
        for (int proj = 0; proj < 2; proj++) {
            ref_mse_stats s;
            la_status st = ref_rf_kernel_mse(
                ctx, (la_random_feature)kind, (la_projection_kind)proj, LA_SCALING_CHI, d, m, X, Y,
                P, 1, R, 1000 * (uint64_t)(kind + 1) + 100 * (uint64_t)proj, &s);
            CHECK_STATUS(st, LA_OK, "kernel mse");
            /* float32 features: about 1e-7 relative per product; 1e-6 of the
             * kernel is a generous allowance */
            const double tol =
                5 * s.bias_se + 1e-6 * mean_kernel((la_random_feature)kind, X, Y, P, d);
            CHECK(fabs(s.bias) <= tol, "%s %s: mean error %.3g exceeds 5 SE + float (%.3g)",
                  KIND[kind], PROJ[proj], s.bias, tol);
            printf("unbiased %-12s %-10s bias %+.3e  (5 SE %.3e)\n", KIND[kind], PROJ[proj], s.bias,
                   tol);
        }
}

/* Negative control: rows of fixed norm sqrt(d) are not Gaussian, so the
 * estimators are biased (as the header says); the same 5-SE test must see it.
 * This also shows the unbiasedness test above can fail. */
static void test_sqrt_d_biased(la_ctx *ctx) {
    const int64_t d = 8, m = 8, P = 4;
    double X[4 * 8], Y[4 * 8];
    la_rng rng;
    la_rng_seed(&rng, 5);
    ref_random_pairs(X, Y, P, d, 2.5, &rng);
    const la_random_feature kinds[] = {LA_RF_FAVOR_POSITIVE, LA_RF_TRIG_SOFTMAX};
    for (int i = 0; i < 2; i++) {
        ref_mse_stats s;
        CHECK_STATUS(ref_rf_kernel_mse(ctx, kinds[i], LA_PROJ_ORTHOGONAL, LA_SCALING_SQRT_D, d, m,
                                       X, Y, P, 1, 2000, 77, &s),
                     LA_OK, "kernel mse");
        CHECK(fabs(s.bias) > 5 * s.bias_se, "%s with sqrt(d) rows: bias %.3g within 5 SE (%.3g)",
              KIND[kinds[i]], s.bias, 5 * s.bias_se);
    }
}

static void test_mse_theory(la_ctx *ctx) {
    const int64_t d = 8, P = 6;
    const int R = 4000;
    double X[6 * 8], Y[6 * 8];
    la_rng rng;
    la_rng_seed(&rng, 456);
    ref_random_pairs(X, Y, P, d, 1.5, &rng);
    const int64_t ms[] = {4, 32};
    for (int kind = 0; kind < LA_RF_RELU; kind++)
        for (size_t mi = 0; mi < 2; mi++) {
            ref_mse_stats s;
            CHECK_STATUS(ref_rf_kernel_mse(ctx, (la_random_feature)kind, LA_PROJ_IID,
                                           LA_SCALING_CHI, d, ms[mi], X, Y, P, 1, R,
                                           77 + 10000 * (uint64_t)kind + mi, &s),
                         LA_OK, "kernel mse");
            CHECK(fabs(s.mse - s.theory) <= 5 * s.se,
                  "%s m=%lld: empirical MSE %.4g vs closed form %.4g (5 SE = %.3g)", KIND[kind],
                  (long long)ms[mi], s.mse, s.theory, 5 * s.se);
            printf("mse %-12s m=%-3lld empirical %.4e  theory %.4e  (se %.2e)\n", KIND[kind],
                   (long long)ms[mi], s.mse, s.theory, s.se);
        }
}

/* Orthogonal random features (Yu et al.; Performer Thm. 2) lower the MSE for
 * m <= d. Require the gap to exceed 3 standard errors of the difference of
 * two independent estimates. d = 16, m = 12 (a partial block) and 16. */
static void test_orthogonal_better(la_ctx *ctx) {
    const int64_t d = 16, P = 8;
    const int R = 3000;
    double X[8 * 16], Y[8 * 16];
    la_rng rng;
    la_rng_seed(&rng, 789);
    /* |x'| = 0.7: at larger norms the positive estimator's heavy tail
     * (its fourth moment grows like exp(8|x'+y'|^2)) makes the sampled MSE
     * too noisy to resolve the gain with a few thousand draws. */
    ref_random_pairs(X, Y, P, d, 0.7 * 2.0, &rng);
    const int64_t ms[] = {12, 16};
    for (int kind = 0; kind < LA_RF_RELU; kind++)
        for (size_t mi = 0; mi < 2; mi++) {
            ref_mse_stats a, b;
            ref_rf_kernel_mse(ctx, (la_random_feature)kind, LA_PROJ_IID, LA_SCALING_CHI, d, ms[mi],
                              X, Y, P, 1, R, 5000, &a);
            ref_rf_kernel_mse(ctx, (la_random_feature)kind, LA_PROJ_ORTHOGONAL, LA_SCALING_CHI, d,
                              ms[mi], X, Y, P, 1, R, 9000, &b);
            const double gap_se = sqrt(a.se * a.se + b.se * b.se);
            CHECK(b.mse + 3 * gap_se < a.mse,
                  "%s m=%lld: orthogonal MSE %.4g not below i.i.d. %.4g by 3 SE (%.3g)", KIND[kind],
                  (long long)ms[mi], b.mse, a.mse, 3 * gap_se);
            printf("orth %-12s m=%-3lld iid %.4e  orth %.4e  (ratio %.3f, se of gap %.2e)\n",
                   KIND[kind], (long long)ms[mi], a.mse, b.mse, b.mse / a.mse, gap_se);
        }
}

int main(void) {
    la_ctx *ctx = th_ctx(1);
    test_unbiased(ctx);
    test_sqrt_d_biased(ctx);
    test_mse_theory(ctx);
    test_orthogonal_better(ctx);
    la_ctx_destroy(ctx);
    return th_summary("test_feature_map_stats");
}
