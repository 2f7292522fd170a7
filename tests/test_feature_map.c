/* Random-feature maps: forward and backward against the float64 reference,
 * the reference backward against finite differences, the stabiliser, large
 * norms, thread-count invariance and bad arguments. */
#include "harness.h"
#include "ref_feature_map.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *KIND[] = {"positive", "hyperbolic", "trig-gauss", "trig-softmax", "relu"};
static const char *ROLE[] = {"query", "key"};

/* Runs the float32 map and the float64 reference on every (sequence, head)
 * and returns the worst max-relative error of phi (and of stab in *stab_err). */
static double forward_error(la_ctx *ctx, const la_rf_opts *o, const la_dims *dims, int64_t m,
                            const float *x, const float *W, float *phi, float *stab,
                            double *stab_err) {
    const int64_t M = la_rf_num_features(o->kind, m), d = dims->K, H = dims->H;
    const int64_t N = dims->cu_seqlens ? dims->n_seqs : dims->B;
    const size_t n_phi = (size_t)(dims->B * dims->T * H * M);
    if (la_rf_forward(ctx, o, dims, phi, stab, x, W, m) != LA_OK) {
        CHECK(0, "la_rf_forward failed: %s", la_last_error());
        return INFINITY;
    }
    CHECK(ref_count_nonfinite(phi, n_phi) == 0, "phi fully written (%s)", KIND[o->kind]);
    double *Wd = ref_to_double(W, (size_t)(m * d));
    double *xs = th_doubles((size_t)(dims->T * d)), *ps = th_doubles((size_t)(dims->T * M));
    double *want = th_doubles(n_phi), *st = th_doubles((size_t)dims->T);
    double worst_stab = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            int64_t T = ref_gather(xs, x, dims, n, h, H, d);
            ref_rf_forward(o, T, d, m, xs, Wd, ps, st, 0);
            ref_scatter(want, ps, dims, n, h, H, M);
            if (!stab) continue;
            if (o->role == LA_RF_KEY) {
                double e = fabs(stab[n * H + h] - st[0]) / fmax(1, fabs(st[0]));
                worst_stab = fmax(worst_stab, e);
            } else {
                int64_t start = dims->cu_seqlens ? dims->cu_seqlens[n] : n * dims->T;
                for (int64_t t = 0; t < T; t++) {
                    double got = stab[(start + t) * H + h];
                    worst_stab = fmax(worst_stab, fabs(got - st[t]) / fmax(1, fabs(st[t])));
                }
            }
        }
    double err = ref_max_rel_err(phi, want, n_phi);
    /* max-rel is relative to the largest feature; keys' features span many
     * orders of magnitude, so also require a small relative RMS. */
    double rms = ref_rms_rel_err(phi, want, n_phi);
    if (rms > err) err = rms;
    if (stab_err) *stab_err = worst_stab;
    free(Wd);
    free(xs);
    free(ps);
    free(want);
    free(st);
    return err;
}

/* Every kind x role x stabilize, on batched and packed (cu_seqlens) inputs
 * with odd sizes. Bound 2e-6: the map is evaluated in double from float32
 * inputs and rounded once or twice (keys with the stabiliser: core, then the
 * per-token factor), so errors are a few float32 roundings (6e-8 each); the
 * exponent w.x' is exact to double rounding. */
static void test_forward(void) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 2024);
    const int64_t cu[] = {0, 1, 8, 20};
    const struct {
        int64_t B, T, H, d, m;
        const int64_t *cu;
        int64_t ns;
    } cases[] = {{2, 7, 3, 5, 11, NULL, 0},
                 {1, 20, 2, 16, 40, cu, 3},
                 {3, 1, 1, 1, 3, NULL, 0},
                 {1, 65, 2, 33, 17, NULL, 0},
                 {1, 1000, 1, 60, 100, NULL, 0}};
    double worst = 0, worst_stab = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        la_dims dims = {.B = cases[ci].B,
                        .T = cases[ci].T,
                        .H = cases[ci].H,
                        .K = cases[ci].d,
                        .V = 1,
                        .cu_seqlens = cases[ci].cu,
                        .n_seqs = cases[ci].ns};
        const int64_t d = dims.K, m = cases[ci].m, nt = dims.B * dims.T * dims.H;
        float *x = th_rand_floats((size_t)(nt * d), &rng, 0.8);
        float *W = th_nan_floats((size_t)(m * d));
        la_projection_draw(W, m, d, LA_PROJ_ORTHOGONAL, LA_SCALING_CHI, 7 + ci);
        for (int kind = 0; kind <= LA_RF_RELU; kind++)
            for (int role = 0; role < 2; role++)
                for (int stabilize = 0; stabilize < 2; stabilize++) {
                    la_rf_opts o = la_rf_opts_default();
                    o.kind = (la_random_feature)kind;
                    o.role = (la_rf_role)role;
                    o.stabilize = stabilize;
                    o.eps = kind == LA_RF_RELU ? 1e-3f : 0.0f;
                    const int64_t M = la_rf_num_features(o.kind, m);
                    const size_t n_phi = (size_t)(nt * M);
                    const int64_t N = dims.cu_seqlens ? dims.n_seqs : dims.B;
                    const size_t n_stab = (size_t)(role == LA_RF_KEY ? N * dims.H : nt);
                    float *phi = th_nan_floats(n_phi), *phi2 = th_nan_floats(n_phi);
                    float *stab = th_nan_floats(n_stab), *stab2 = th_nan_floats(n_stab);
                    double se = 0;
                    double e = forward_error(c1, &o, &dims, m, x, W, phi, stab, &se);
                    CHECK_ERR(e, 2e-6, "phi %s %s stabilize=%d case %zu", KIND[kind], ROLE[role],
                              stabilize, ci);
                    CHECK_ERR(se, 1e-6, "stab %s %s stabilize=%d case %zu", KIND[kind], ROLE[role],
                              stabilize, ci);
                    CHECK(ref_count_nonfinite(stab, n_stab) == 0, "stab fully written");
                    worst = fmax(worst, e);
                    worst_stab = fmax(worst_stab, se);
                    CHECK_STATUS(la_rf_forward(c2, &o, &dims, phi2, stab2, x, W, m), LA_OK,
                                 "2 threads");
                    CHECK(th_bitwise_equal(phi, phi2, n_phi) &&
                              th_bitwise_equal(stab, stab2, n_stab),
                          "1 and 2 threads agree bit for bit (%s %s)", KIND[kind], ROLE[role]);
                    /* stab is optional */
                    CHECK_STATUS(la_rf_forward(c2, &o, &dims, phi2, NULL, x, W, m), LA_OK,
                                 "no stab");
                    CHECK(th_bitwise_equal(phi, phi2, n_phi), "stab NULL gives the same phi");
                    free(phi);
                    free(phi2);
                    free(stab);
                    free(stab2);
                }
        free(x);
        free(W);
    }
    printf("forward: worst phi error %.3g, worst stab error %.3g\n", worst, worst_stab);
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

/* With the stabiliser the features are the plain ones times exp(-stab), and
 * the largest feature of a token (query) or of a sequence (key) is exactly
 * the scale m^-1/2 (or (2m)^-1/2): nothing can overflow or all underflow. */
static void test_stabiliser(void) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 77);
    const int64_t B = 2, T = 9, H = 2, d = 8, m = 12;
    la_dims dims = {.B = B, .T = T, .H = H, .K = d, .V = 1};
    float *x = th_rand_floats((size_t)(B * T * H * d), &rng, 1.0);
    float *W = th_nan_floats((size_t)(m * d));
    la_projection_draw(W, m, d, LA_PROJ_IID, LA_SCALING_CHI, 3);
    for (int kind = 0; kind <= LA_RF_TRIG_SOFTMAX; kind++) {
        if (kind == LA_RF_TRIG_GAUSSIAN) continue;
        for (int role = 0; role < 2; role++) {
            const int64_t M = la_rf_num_features((la_random_feature)kind, m);
            const size_t n = (size_t)(B * T * H * M);
            float *a = th_nan_floats(n), *b = th_nan_floats(n),
                  *st = th_nan_floats((size_t)(B * T * H));
            la_rf_opts o = la_rf_opts_default();
            o.kind = (la_random_feature)kind;
            o.role = (la_rf_role)role;
            o.stabilize = 0;
            la_rf_forward(ctx, &o, &dims, a, NULL, x, W, m);
            o.stabilize = 1;
            la_rf_forward(ctx, &o, &dims, b, st, x, W, m);
            double worst = 0, top_err = 0;
            const double s = 1.0 / sqrt((double)(kind == LA_RF_FAVOR_HYPERBOLIC ? 2 * m : m));
            for (int64_t bb = 0; bb < B; bb++)
                for (int64_t h = 0; h < H; h++) {
                    double seq_top = 0;
                    for (int64_t t = 0; t < T; t++) {
                        const int64_t row = (bb * T + t) * H + h;
                        const double sv = role == LA_RF_KEY ? st[bb * H + h] : st[row];
                        double tok_top = 0;
                        for (int64_t i = 0; i < M; i++) {
                            double plain = a[row * M + i], stab = b[row * M + i];
                            worst =
                                fmax(worst, fabs(stab * exp(sv) - plain) / (fabs(plain) + 1e-30));
                            tok_top = fmax(tok_top, fabs(stab));
                        }
                        if (role == LA_RF_QUERY) top_err = fmax(top_err, fabs(tok_top - s) / s);
                        seq_top = fmax(seq_top, tok_top);
                    }
                    if (role == LA_RF_KEY) top_err = fmax(top_err, fabs(seq_top - s) / s);
                }
            /* trig softmax: |cos|,|sin| < 1, so its largest value is below s */
            if (kind != LA_RF_TRIG_SOFTMAX)
                CHECK_ERR(top_err, 1e-6, "largest stabilised feature is the scale (%s %s)",
                          KIND[kind], ROLE[role]);
            /* a few float roundings plus the rounding of stab to float32 (the
             * factor exp(sv) with |sv| ~ 3 turns it into ~3 * 2^-24) */
            CHECK_ERR(worst, 1e-5, "stabilised = plain * exp(-stab) (%s %s)", KIND[kind],
                      ROLE[role]);
            free(a);
            free(b);
            free(st);
        }
    }
    free(x);
    free(W);
    la_ctx_destroy(ctx);
}

/* The reference backward against central differences of the reference
 * forward (stabiliser held at its value at x, as the backward treats it),
 * then the float32 backward against the reference backward. */
static void test_backward(void) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 31337);
    const int64_t cu[] = {0, 3, 4, 11};
    const struct {
        int64_t B, T, H, d, m;
        const int64_t *cu;
        int64_t ns;
    } cases[] = {{2, 5, 3, 7, 9, NULL, 0}, {1, 11, 2, 6, 13, cu, 3}};
    double worst_fd = 0, worst = 0;
    for (size_t ci = 0; ci < 2; ci++) {
        la_dims dims = {.B = cases[ci].B,
                        .T = cases[ci].T,
                        .H = cases[ci].H,
                        .K = cases[ci].d,
                        .V = 1,
                        .cu_seqlens = cases[ci].cu,
                        .n_seqs = cases[ci].ns};
        const int64_t d = dims.K, m = cases[ci].m, H = dims.H, nt = dims.B * dims.T * H;
        const int64_t N = dims.cu_seqlens ? dims.n_seqs : dims.B;
        float *x = th_rand_floats((size_t)(nt * d), &rng, 0.9);
        float *W = th_nan_floats((size_t)(m * d));
        la_projection_draw(W, m, d, LA_PROJ_IID, LA_SCALING_CHI, 40 + ci);
        double *Wd = ref_to_double(W, (size_t)(m * d));
        for (int kind = 0; kind <= LA_RF_RELU; kind++)
            for (int role = 0; role < 2; role++)
                for (int stabilize = 0; stabilize < 2; stabilize++) {
                    la_rf_opts o = la_rf_opts_default();
                    o.kind = (la_random_feature)kind;
                    o.role = (la_rf_role)role;
                    o.stabilize = stabilize;
                    o.eps = 1e-3f;
                    const int64_t M = la_rf_num_features(o.kind, m);
                    float *dphi = th_rand_floats((size_t)(nt * M), &rng, 1.0);
                    float *dx = th_nan_floats((size_t)(nt * d)),
                          *dx2 = th_nan_floats((size_t)(nt * d));
                    CHECK_STATUS(la_rf_backward(c1, &o, &dims, dx, dphi, x, W, m), LA_OK,
                                 "backward");
                    CHECK_STATUS(la_rf_backward(c2, &o, &dims, dx2, dphi, x, W, m), LA_OK,
                                 "backward 2");
                    CHECK(th_bitwise_equal(dx, dx2, (size_t)(nt * d)), "dx: 1 and 2 threads agree");
                    double *want = th_doubles((size_t)(nt * d));
                    double *xs = th_doubles((size_t)(dims.T * d)),
                           *gs = th_doubles((size_t)(dims.T * M));
                    double *ds = th_doubles((size_t)(dims.T * d)), *st = th_doubles((size_t)dims.T);
                    double *ph = th_doubles((size_t)(dims.T * M));
                    double fd_err = 0, fd_scale = 0;
                    for (int64_t n = 0; n < N; n++)
                        for (int64_t h = 0; h < H; h++) {
                            const int64_t T = ref_gather(xs, x, &dims, n, h, H, d);
                            ref_gather(gs, dphi, &dims, n, h, H, M);
                            ref_rf_forward(&o, T, d, m, xs, Wd, ph, st, 0);
                            ref_rf_backward(&o, T, d, m, xs, Wd, st, gs, ds);
                            ref_scatter(want, ds, &dims, n, h, H, d);
                            /* central differences of L = sum d_phi . phi */
                            const double hstep = 1e-6;
                            for (int64_t i = 0; i < T * d; i++) {
                                double keep = xs[i], lp = 0, lm = 0;
                                xs[i] = keep + hstep;
                                ref_rf_forward(&o, T, d, m, xs, Wd, ph, st, 1);
                                for (int64_t k = 0; k < T * M; k++) lp += gs[k] * ph[k];
                                xs[i] = keep - hstep;
                                ref_rf_forward(&o, T, d, m, xs, Wd, ph, st, 1);
                                for (int64_t k = 0; k < T * M; k++) lm += gs[k] * ph[k];
                                xs[i] = keep;
                                double fd = (lp - lm) / (2 * hstep);
                                fd_err = fmax(fd_err, fabs(fd - ds[i]));
                                fd_scale = fmax(fd_scale, fabs(ds[i]));
                            }
                        }
                    /* central differences: truncation h^2 |f'''| ~ 1e-12 and
                     * cancellation ~ 1e-16 |L| / h ~ 1e-10 relative */
                    fd_err /= fmax(fd_scale, 1e-30);
                    CHECK_ERR(fd_err, 1e-7, "reference dx vs finite differences (%s %s stab %d)",
                              KIND[kind], ROLE[role], stabilize);
                    worst_fd = fmax(worst_fd, fd_err);
                    /* float32 dx: inputs rounded once, sums in double: a few
                     * float roundings of the result */
                    double e = ref_max_rel_err(dx, want, (size_t)(nt * d));
                    CHECK_ERR(e, 2e-6, "dx vs float64 (%s %s stab %d case %zu)", KIND[kind],
                              ROLE[role], stabilize, ci);
                    worst = fmax(worst, e);
                    free(dphi);
                    free(dx);
                    free(dx2);
                    free(want);
                    free(xs);
                    free(gs);
                    free(ds);
                    free(st);
                    free(ph);
                }
        free(x);
        free(W);
        free(Wd);
    }
    printf("backward: worst reference-vs-FD %.3g, worst float32 dx %.3g\n", worst_fd, worst);
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

/* Norms up to 30 (|x'|^2/2 up to 112 at d = 16: exp would overflow float32
 * without the stabiliser) over T = 65536 tokens: every feature and gradient
 * finite, the top feature of each query exactly the scale; with the
 * stabiliser off, a clear error and nothing written. */
static void test_large_norms(void) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 5);
    const int64_t T = 65536, d = 16, m = 32;
    la_dims dims = {.B = 1, .T = T, .H = 1, .K = d, .V = 1};
    float *x = th_rand_floats((size_t)(T * d), &rng, 1.0);
    for (int64_t t = 0; t < T; t++) { /* norms spread over [0, 30] */
        double n2 = 0;
        for (int64_t a = 0; a < d; a++) n2 += (double)x[t * d + a] * x[t * d + a];
        double f = 30.0 * (double)(t % 31) / 30.0 / sqrt(n2);
        for (int64_t a = 0; a < d; a++) x[t * d + a] = (float)(x[t * d + a] * f);
    }
    float *W = th_nan_floats((size_t)(m * d));
    la_projection_draw(W, m, d, LA_PROJ_ORTHOGONAL, LA_SCALING_CHI, 8);
    float *phi = th_nan_floats((size_t)(T * 2 * m)), *dx = th_nan_floats((size_t)(T * d));
    float *g = th_rand_floats((size_t)(T * 2 * m), &rng, 1.0);
    for (int kind = 0; kind <= LA_RF_TRIG_SOFTMAX; kind++) {
        if (kind == LA_RF_TRIG_GAUSSIAN) continue;
        const int64_t M = la_rf_num_features((la_random_feature)kind, m);
        for (int role = 0; role < 2; role++) {
            la_rf_opts o = la_rf_opts_default();
            o.kind = (la_random_feature)kind;
            o.role = (la_rf_role)role;
            CHECK_STATUS(la_rf_forward(ctx, &o, &dims, phi, NULL, x, W, m), LA_OK, "forward");
            CHECK(ref_count_nonfinite(phi, (size_t)(T * M)) == 0, "finite phi (%s %s)", KIND[kind],
                  ROLE[role]);
            if (role == LA_RF_QUERY) {
                int all_live = 1;
                for (int64_t t = 0; t < T; t++) {
                    float top = 0;
                    for (int64_t i = 0; i < M; i++) top = fmaxf(top, fabsf(phi[t * M + i]));
                    all_live &= top > 0;
                }
                CHECK(all_live, "no query has all features zero (%s)", KIND[kind]);
            }
            CHECK_STATUS(la_rf_backward(ctx, &o, &dims, dx, g, x, W, m), LA_OK, "backward");
            CHECK(ref_count_nonfinite(dx, (size_t)(T * d)) == 0, "finite dx (%s %s)", KIND[kind],
                  ROLE[role]);
        }
        la_rf_opts o = la_rf_opts_default();
        o.kind = (la_random_feature)kind;
        o.stabilize = 0;
        float *untouched = th_nan_floats((size_t)(T * M));
        if (kind == LA_RF_TRIG_SOFTMAX) {
            /* exp(|x'|^2/2) itself overflows */
            CHECK_STATUS(la_rf_forward(ctx, &o, &dims, untouched, NULL, x, W, m),
                         LA_ERR_INVALID_ARGUMENT, "overflow without the stabiliser is refused");
            CHECK(strstr(la_last_error(), "stabilize") != NULL, "message says what to do: %s",
                  la_last_error());
            CHECK(th_untouched(untouched, (size_t)(T * M)), "nothing written");
        } else {
            /* exp(w.x' - |x'|^2/2) <= exp(|w|^2/2): these rows cannot overflow,
             * large norms only underflow; the result is finite */
            CHECK_STATUS(la_rf_forward(ctx, &o, &dims, phi, NULL, x, W, m), LA_OK, "plain map");
            CHECK(ref_count_nonfinite(phi, (size_t)(T * M)) == 0, "finite without stabiliser");
            /* rows 10x longer could overflow: refused before anything is written */
            float *W10 = th_nan_floats((size_t)(m * d));
            for (int64_t i = 0; i < m * d; i++) W10[i] = 10 * W[i];
            CHECK_STATUS(la_rf_forward(ctx, &o, &dims, untouched, NULL, x, W10, m),
                         LA_ERR_INVALID_ARGUMENT, "possible overflow refused");
            CHECK(th_untouched(untouched, (size_t)(T * M)), "nothing written");
            free(W10);
        }
        free(untouched);
    }
    free(x);
    free(W);
    free(phi);
    free(dx);
    free(g);
    la_ctx_destroy(ctx);
}

static void test_bad_args(void) {
    la_ctx *ctx = th_ctx(1);
    la_rng rng;
    la_rng_seed(&rng, 9);
    const int64_t m = 4, d = 3;
    la_dims dims = {.B = 1, .T = 5, .H = 2, .K = d, .V = 1};
    float *x = th_rand_floats(30, &rng, 1.0), *W = th_rand_floats((size_t)(m * d), &rng, 1.0);
    float *phi = th_nan_floats(80), *stab = th_nan_floats(10), *dx = th_nan_floats(30);
    float *g = th_rand_floats(80, &rng, 1.0);
    la_rf_opts o = la_rf_opts_default();
#define BAD(call, want, what)                                                                      \
    do {                                                                                           \
        CHECK_STATUS(call, want, what);                                                            \
        CHECK(th_untouched(phi, 80) && th_untouched(stab, 10) && th_untouched(dx, 30),             \
              "%s: outputs untouched", what);                                                      \
    } while (0)
    BAD(la_rf_forward(NULL, &o, &dims, phi, stab, x, W, m), LA_ERR_NULL_POINTER, "ctx NULL");
    BAD(la_rf_forward(ctx, NULL, &dims, phi, stab, x, W, m), LA_ERR_NULL_POINTER, "opts NULL");
    BAD(la_rf_forward(ctx, &o, NULL, phi, stab, x, W, m), LA_ERR_NULL_POINTER, "dims NULL");
    BAD(la_rf_forward(ctx, &o, &dims, NULL, stab, x, W, m), LA_ERR_NULL_POINTER, "phi NULL");
    BAD(la_rf_forward(ctx, &o, &dims, phi, stab, NULL, W, m), LA_ERR_NULL_POINTER, "x NULL");
    BAD(la_rf_forward(ctx, &o, &dims, phi, stab, x, NULL, m), LA_ERR_NULL_POINTER, "W NULL");
    BAD(la_rf_forward(ctx, &o, &dims, phi, stab, x, W, 0), LA_ERR_INVALID_SIZE, "m = 0");
    CHECK(strstr(la_last_error(), "m = 0") != NULL, "names m: %s", la_last_error());
    la_dims e = dims;
    e.K = 0;
    BAD(la_rf_forward(ctx, &o, &e, phi, stab, x, W, m), LA_ERR_INVALID_SIZE, "d = 0");
    e = dims;
    e.T = -1;
    BAD(la_rf_forward(ctx, &o, &e, phi, stab, x, W, m), LA_ERR_INVALID_SIZE, "T < 0");
    la_rf_opts b = o;
    b.kind = (la_random_feature)9;
    BAD(la_rf_forward(ctx, &b, &dims, phi, stab, x, W, m), LA_ERR_INVALID_ARGUMENT, "kind");
    CHECK(strstr(la_last_error(), "kind = 9") != NULL, "names kind: %s", la_last_error());
    b = o;
    b.role = (la_rf_role)2;
    BAD(la_rf_forward(ctx, &b, &dims, phi, stab, x, W, m), LA_ERR_INVALID_ARGUMENT, "role");
    b = o;
    b.stabilize = 3;
    BAD(la_rf_forward(ctx, &b, &dims, phi, stab, x, W, m), LA_ERR_INVALID_ARGUMENT, "stabilize");
    b = o;
    b.eps = -1e-3f;
    BAD(la_rf_forward(ctx, &b, &dims, phi, stab, x, W, m), LA_ERR_INVALID_ARGUMENT, "eps < 0");
    b.eps = NAN;
    BAD(la_rf_forward(ctx, &b, &dims, phi, stab, x, W, m), LA_ERR_INVALID_ARGUMENT, "eps NaN");
    x[7] = NAN;
    BAD(la_rf_forward(ctx, &o, &dims, phi, stab, x, W, m), LA_ERR_NON_FINITE, "x NaN");
    CHECK(strstr(la_last_error(), "x[7]") != NULL, "names x[7]: %s", la_last_error());
    BAD(la_rf_backward(ctx, &o, &dims, dx, g, x, W, m), LA_ERR_NON_FINITE, "backward x NaN");
    x[7] = 0.5f;
    W[2] = INFINITY;
    BAD(la_rf_forward(ctx, &o, &dims, phi, stab, x, W, m), LA_ERR_NON_FINITE, "W Inf");
    W[2] = 0.5f;
    g[11] = NAN;
    BAD(la_rf_backward(ctx, &o, &dims, dx, g, x, W, m), LA_ERR_NON_FINITE, "d_phi NaN");
    g[11] = 0.5f;
    BAD(la_rf_backward(ctx, &o, &dims, NULL, g, x, W, m), LA_ERR_NULL_POINTER, "dx NULL");
    BAD(la_rf_backward(ctx, &o, &dims, dx, NULL, x, W, m), LA_ERR_NULL_POINTER, "d_phi NULL");
    BAD(la_rf_backward(ctx, &o, &dims, dx, g, x, W, -3), LA_ERR_INVALID_SIZE, "backward m < 0");
    int64_t cu[] = {0, 3, 2};
    e = dims;
    e.cu_seqlens = cu;
    e.n_seqs = 2;
    BAD(la_rf_forward(ctx, &o, &e, phi, stab, x, W, m), LA_ERR_BAD_SEQLENS, "bad cu_seqlens");
    CHECK(la_rf_num_features(LA_RF_FAVOR_POSITIVE, 7) == 7 &&
              la_rf_num_features(LA_RF_RELU, 7) == 7 &&
              la_rf_num_features(LA_RF_FAVOR_HYPERBOLIC, 7) == 14 &&
              la_rf_num_features(LA_RF_TRIG_GAUSSIAN, 7) == 14 &&
              la_rf_num_features(LA_RF_TRIG_SOFTMAX, 7) == 14,
          "feature counts");
    CHECK(la_rf_num_features((la_random_feature)17, 7) == 0 &&
              la_rf_num_features(LA_RF_RELU, 0) == 0,
          "feature count of a bad request is 0");
    la_rf_opts def = la_rf_opts_default();
    CHECK(def.kind == LA_RF_FAVOR_POSITIVE && def.role == LA_RF_QUERY && def.stabilize == 1 &&
              def.eps == 0.0f,
          "defaults");
#undef BAD
    free(x);
    free(W);
    free(phi);
    free(stab);
    free(dx);
    free(g);
    la_ctx_destroy(ctx);
}

/* The float64 normalised kernel attention used as the Performer oracle:
 * its backward against central differences of its forward. */
static void test_kernel_attn_reference(void) {
    la_rng rng;
    la_rng_seed(&rng, 12);
    const int64_t T = 7, M = 5, V = 3;
    double pq[35], pk[35], v[21], g[21], dpq[35], dpk[35], dv[21], o[21];
    for (int i = 0; i < 35; i++) {
        pq[i] = 0.2 + la_rng_uniform(&rng); /* positive features, like FAVOR+ */
        pk[i] = 0.2 + la_rng_uniform(&rng);
    }
    for (int i = 0; i < 21; i++) {
        v[i] = la_rng_normal(&rng);
        g[i] = la_rng_normal(&rng);
    }
    for (int causal = 0; causal < 2; causal++) {
        ref_kernel_attn_backward(T, M, V, pq, pk, v, causal, 1e-6, g, dpq, dpk, dv);
        double *xs[3] = {pq, pk, v}, *an[3] = {dpq, dpk, dv};
        const int n[3] = {35, 35, 21};
        double worst = 0, scale = 0;
        for (int w = 0; w < 3; w++)
            for (int i = 0; i < n[w]; i++) {
                const double keep = xs[w][i], h = 1e-6;
                double l[2];
                for (int sgn = 0; sgn < 2; sgn++) {
                    xs[w][i] = keep + (sgn ? -h : h);
                    ref_kernel_attn(T, M, V, pq, pk, v, causal, 1e-6, o);
                    l[sgn] = 0;
                    for (int j = 0; j < 21; j++) l[sgn] += g[j] * o[j];
                }
                xs[w][i] = keep;
                worst = fmax(worst, fabs((l[0] - l[1]) / (2 * h) - an[w][i]));
                scale = fmax(scale, fabs(an[w][i]));
            }
        /* central differences in double: ~1e-9 relative */
        CHECK_ERR(worst / scale, 1e-7, "kernel attention reference backward, causal=%d", causal);
    }
}

int main(void) {
    test_kernel_attn_reference();
    test_forward();
    test_stabiliser();
    test_backward();
    test_large_norms();
    test_bad_args();
    return th_summary("test_feature_map");
}
