/* The float64 reference of the delta rules: its backward against central
 * finite differences of its forward (all in float64).
 *
 * Loss L = sum(o . d_o) + sum(S_T . dS_T). Central differences with step
 * h = 1e-5 have truncation error O(h^2 |L'''|) ~ 1e-10 and rounding error
 * ~ eps |L| / h ~ 1e-11 relative, so the analytic and numerical gradients
 * must agree to 1e-7 relative (max error over a tensor, relative to the
 * tensor's largest gradient). */
#include "harness.h"
#include "ref_delta_rule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double loss(const ref_delta_in *in, const double *d_o, const double *dST) {
    const int64_t T = in->T, K = in->K, V = in->V;
    double *o = th_doubles((size_t)(T * V)), *ST = th_doubles((size_t)(K * V));
    if (ref_delta_rule_forward(in, o, ST)) abort();
    double L = 0;
    for (int64_t i = 0; i < T * V; i++) L += o[i] * d_o[i];
    for (int64_t i = 0; i < K * V; i++) L += ST[i] * dST[i];
    free(o);
    free(ST);
    return L;
}

/* Max relative difference between grad and the central difference of the
 * loss with respect to x[0..n). */
static double fd_err(ref_delta_in *in, double *x, size_t n, const double *grad,
                     const double *d_o, const double *dST) {
    const double h = 1e-5;
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double x0 = x[i];
        x[i] = x0 + h;
        const double lp = loss(in, d_o, dST);
        x[i] = x0 - h;
        const double lm = loss(in, d_o, dST);
        x[i] = x0;
        const double fd = (lp - lm) / (2 * h);
        if (fabs(fd - grad[i]) > num) num = fabs(fd - grad[i]);
        if (fabs(grad[i]) > den) den = fabs(grad[i]);
    }
    return num / (den > 1e-300 ? den : 1e-300);
}

static double worst;

static void test_fd(int gated, int l2norm, uint64_t seed) {
    enum { T = 7, K = 5, V = 4 }; /* array sizes: no VLAs */
    la_rng rng;
    la_rng_seed(&rng, seed);
    double q[T * K], k[T * K], v[T * V], g[T], beta[T], S0[K * V], d_o[T * V], dST[K * V];
    for (int i = 0; i < T * K; i++) q[i] = la_rng_normal(&rng);
    for (int i = 0; i < T * K; i++) k[i] = la_rng_normal(&rng) * (l2norm ? 1 : 0.4);
    for (int i = 0; i < T * V; i++) v[i] = la_rng_normal(&rng);
    for (int i = 0; i < T; i++) g[i] = -0.05 - 0.5 * la_rng_uniform(&rng);
    for (int i = 0; i < T; i++) beta[i] = 0.1 + 1.5 * la_rng_uniform(&rng);
    for (int i = 0; i < K * V; i++) S0[i] = 0.5 * la_rng_normal(&rng);
    for (int i = 0; i < T * V; i++) d_o[i] = la_rng_normal(&rng);
    for (int i = 0; i < K * V; i++) dST[i] = la_rng_normal(&rng);
    ref_delta_in in = {T, K, V, 0.7, l2norm, q, k, v, gated ? g : NULL, beta, S0};
    double dq[T * K], dk[T * K], dv[T * V], dg[T], db[T], dS0[K * V];
    CHECK(ref_delta_rule_backward(&in, d_o, dST, dq, dk, dv, db, dg, dS0) == 0, "backward");
    const struct { const char *name; double *x; size_t n; const double *grad; } t[] = {
        {"dq", q, T * K, dq}, {"dk", k, T * K, dk}, {"dv", v, T * V, dv},
        {"dbeta", beta, T, db}, {"dg", g, T, dg}, {"d_initial_state", S0, K * V, dS0}};
    for (int i = 0; i < 6; i++) {
        if (i == 4 && !gated) continue;
        double e = fd_err(&in, t[i].x, t[i].n, t[i].grad, d_o, dST);
        if (e > worst) worst = e;
        CHECK(e <= 1e-7, "%s l2norm=%d: %s vs finite differences: %.3g > 1e-7",
              gated ? "gated" : "delta", l2norm, t[i].name, e);
    }
}

int main(void) {
    for (int gated = 0; gated < 2; gated++)
        for (int l2 = 0; l2 < 2; l2++) test_fd(gated, l2, (uint64_t)(11 + 2 * gated + l2));
    printf("test_delta_rule_ref: worst gradient vs finite differences %.2e\n", worst);
    return th_summary("test_delta_rule_ref");
}
