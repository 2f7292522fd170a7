/* linattn check: random-feature maps (forward phi and stab, backward dx)
 * against the float64 reference. */
#include "check.h"
#include "ref_feature_map.h"
#include "ref_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const char *KIND[] = {"positive", "hyperbolic", "trig_gauss", "trig_softmax", "relu"};

/* Bound for every row: the maps are evaluated in double from float32
 * inputs and rounded once or twice, so errors are ~1e-7 (measured); 1e-5
 * is the project's float32-vs-float64 bound. */
#define RF_TOL 1e-5

static void check_map(check_report *r, la_random_feature kind, la_rf_role role, const la_dims *dims,
                      const float *x, const float *W, int64_t m, const float *g) {
    const int64_t d = dims->K, H = dims->H, M = la_rf_num_features(kind, m);
    const int64_t N = dims->B, nt = dims->B * dims->T * H;
    char name[48], form[32];
    snprintf(name, sizeof name, "rf %s %s", KIND[kind], role == LA_RF_KEY ? "key" : "query");
    const int has_stab = kind != LA_RF_TRIG_GAUSSIAN && kind != LA_RF_RELU;
    snprintf(form, sizeof form, "m=%lld%s", (long long)m, has_stab ? " stabilised" : "");
    la_rf_opts o = la_rf_opts_default();
    o.kind = kind;
    o.role = role;
    o.eps = kind == LA_RF_RELU ? 1e-3f : 0.0f;
    const size_t n_stab = (size_t)(role == LA_RF_KEY ? N * H : nt);
    float *phi = malloc((size_t)(nt * M) * sizeof *phi), *stab = malloc(n_stab * sizeof *stab);
    float *dx = malloc((size_t)(nt * d) * sizeof *dx);
    double *wphi = malloc((size_t)(nt * M) * sizeof *wphi), *wstab = malloc(n_stab * sizeof *wstab);
    double *wdx = malloc((size_t)(nt * d) * sizeof *wdx);
    double *Wd = ref_to_double(W, (size_t)(m * d));
    double *xs = malloc((size_t)(dims->T * d) * sizeof *xs);
    double *gs = malloc((size_t)(dims->T * M) * sizeof *gs);
    double *ps = malloc((size_t)(dims->T * M) * sizeof *ps);
    double *ds = malloc((size_t)(dims->T * d) * sizeof *ds);
    double *ss = malloc((size_t)dims->T * sizeof *ss);
    if (!phi || !stab || !dx || !wphi || !wstab || !wdx || !Wd || !xs || !gs || !ps || !ds || !ss) {
        check_call_failed(r, name, form, LA_ERR_OUT_OF_MEMORY);
        goto done;
    }
    la_status st = la_rf_forward(r->ctx, &o, dims, phi, stab, x, W, m);
    if (st) {
        check_call_failed(r, name, form, st);
        goto done;
    }
    st = la_rf_backward(r->ctx, &o, dims, dx, g, x, W, m);
    if (st) {
        check_call_failed(r, name, form, st);
        goto done;
    }
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t T = ref_gather(xs, x, dims, n, h, H, d);
            ref_gather(gs, g, dims, n, h, H, M);
            ref_rf_forward(&o, T, d, m, xs, Wd, ps, ss, 0);
            ref_rf_backward(&o, T, d, m, xs, Wd, ss, gs, ds);
            ref_scatter(wphi, ps, dims, n, h, H, M);
            ref_scatter(wdx, ds, dims, n, h, H, d);
            if (role == LA_RF_KEY) {
                wstab[n * H + h] = ss[0];
            } else {
                for (int64_t t = 0; t < T; t++) wstab[(n * T + t) * H + h] = ss[t];
            }
        }
    check_add(r, name, form, "phi", ref_max_rel_err(phi, wphi, (size_t)(nt * M)), RF_TOL);
    if (has_stab) check_add(r, name, form, "stab", ref_max_rel_err(stab, wstab, n_stab), RF_TOL);
    check_add(r, name, form, "dx", ref_max_rel_err(dx, wdx, (size_t)(nt * d)), RF_TOL);
done:
    free(phi);
    free(stab);
    free(dx);
    free(wphi);
    free(wstab);
    free(wdx);
    free(Wd);
    free(xs);
    free(gs);
    free(ps);
    free(ds);
    free(ss);
}

/* A tiny run of the approximation lab's core: the sampled MSE of the plain
 * estimator must match the closed form of MATH.md 3 within 5 standard
 * errors of the sample (the row's bound, relative to the theory). */
static void check_approx(check_report *r) {
    const int64_t d = 8, m = 32, P = 4;
    const int draws = r->quick ? 400 : 1500;
    double X[4 * 8], Y[4 * 8];
    la_rng rng;
    la_rng_seed(&rng, r->seed ^ 0xa99u);
    ref_random_pairs(X, Y, P, d, 1.2, &rng);
    const la_random_feature kinds[] = {LA_RF_FAVOR_POSITIVE, LA_RF_FAVOR_HYPERBOLIC,
                                       LA_RF_TRIG_SOFTMAX, LA_RF_TRIG_GAUSSIAN};
    for (int i = 0; i < 4; i++) {
        char name[48];
        snprintf(name, sizeof name, "approx %s iid", KIND[kinds[i]]);
        ref_mse_stats s;
        la_status st = ref_rf_kernel_mse(r->ctx, kinds[i], LA_PROJ_IID, LA_SCALING_CHI, d, m, X, Y,
                                         P, 1, draws, r->seed * 7777u + (uint64_t)i, &s);
        if (st) {
            check_call_failed(r, name, "m=32", st);
            continue;
        }
        check_add(r, name, "m=32 mse/theory", "mse", fabs(s.mse - s.theory) / s.theory,
                  5 * s.se / s.theory);
    }
}

void check_feature_maps(check_report *r) {
    check_approx(r);
    const int64_t B = 2, H = 2;
    const int64_t T = r->quick ? 17 : 128, d = r->quick ? 8 : 32, m = r->quick ? 12 : 64;
    la_dims dims = {.B = B, .T = T, .H = H, .K = d, .V = 1};
    la_rng rng;
    la_rng_seed(&rng, r->seed ^ 0xfea7u);
    const size_t nx = (size_t)(B * T * H * d), ng = (size_t)(B * T * H * 2 * m);
    float *x = malloc(nx * sizeof *x), *W = malloc((size_t)(m * d) * sizeof *W);
    float *g = malloc(ng * sizeof *g);
    if (!x || !W || !g) {
        check_call_failed(r, "rf", "setup", LA_ERR_OUT_OF_MEMORY);
        goto done;
    }
    ref_fill_normal(x, nx, &rng, 1.0);
    ref_fill_normal(g, ng, &rng, 1.0);
    la_status st = la_projection_draw(W, m, d, LA_PROJ_ORTHOGONAL, LA_SCALING_CHI, r->seed);
    if (st) {
        check_call_failed(r, "la_projection_draw", "orthogonal", st);
        goto done;
    }
    for (int kind = 0; kind <= LA_RF_RELU; kind++)
        for (int role = 0; role < 2; role++)
            check_map(r, (la_random_feature)kind, (la_rf_role)role, &dims, x, W, m, g);
done:
    free(x);
    free(W);
    free(g);
}
