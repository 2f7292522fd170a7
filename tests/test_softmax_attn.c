/* Softmax attention, both forms, forward and backward, against the float64
 * reference (src/ref/ref_softmax_attn.c), whose own backward is checked by
 * central finite differences here first.
 *
 * Bounds (max relative error: max |err| / max |reference| over the tensor).
 * Both forms round the scaled score once to float, take expf in float, and
 * accumulate dot products, row sums, outputs and gradients in double, so the
 * error is a few float roundings per element, independent of T (measured
 * <= 3e-7 for o, lse, dq, dk, dv at every size here, T = 1000 included). The
 * project's bound is 1e-5 (what `linattn check` asserts, and what a kernel
 * accumulating in float over T = 1000 terms may need); these tests hold this
 * implementation to 2e-6 so that a lost rounding shows:
 *   o, lse, dq, dk, dv  <= 2e-6
 * textbook vs streaming: different summation order and where the max is
 * subtracted, both within float rounding of the reference: <= 2e-6.
 * Large logits (scores ~ 1e3): the score rounded to float carries an
 * absolute error ~|s| 2^-24 ~ 1e-4 that exp turns into a relative error of
 * the same size in p, so those cases use 2e-3 (still catches overflow,
 * NaN, or a wrong max subtraction, which give errors of order 1). */
#include "harness.h"
#include "ref_softmax_attn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL_FWD 2e-6
#define TOL_GRAD 2e-6
#define TOL_FORMS 2e-6
#define TOL_LARGE 2e-3

/* harness.h's CHECK_ERR puts its own arguments after the caller's, so it only
 * takes a plain message; this one takes a format. */
#define CHECK_LE(err, tol, fmt, ...)                                                      \
    do {                                                                                  \
        const double e_ = (err), t_ = (tol);                                              \
        CHECK(e_ <= t_, fmt " (err %.3g > tol %.3g)", __VA_ARGS__, e_, t_);               \
    } while (0)

static la_rng rng;
static double worst[2][5]; /* [form][o, lse, dq, dk, dv] over the accuracy sweeps */
static double worst_long[2][5];  /* the T = 1000 cases alone */
static int in_long;
static double worst_large[2][5]; /* [ties][output], both forms */
static const char *out_names[5] = {"o", "lse", "dq", "dk", "dv"};

typedef struct problem {
    la_dims d;
    size_t nqk, nv, nl;
    float *q, *k, *v, *d_o;
} problem;

static problem make_problem(la_dims d, double std) {
    problem p;
    p.d = d;
    p.nqk = (size_t)(d.B * d.T * d.H * d.K);
    p.nv = (size_t)(d.B * d.T * d.H * d.V);
    p.nl = (size_t)(d.B * d.T * d.H);
    p.q = th_rand_floats(p.nqk, &rng, std);
    p.k = th_rand_floats(p.nqk, &rng, std);
    p.v = th_rand_floats(p.nv, &rng, 1.0);
    p.d_o = th_rand_floats(p.nv, &rng, 1.0);
    return p;
}

static void free_problem(problem *p) {
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->d_o);
}

typedef struct outputs {
    float *o, *lse, *dq, *dk, *dv;
} outputs;

static outputs nan_outputs(const problem *p) {
    outputs r = {th_nan_floats(p->nv), th_nan_floats(p->nl), th_nan_floats(p->nqk),
                 th_nan_floats(p->nqk), th_nan_floats(p->nv)};
    return r;
}

static void free_outputs(outputs *r) {
    free(r->o);
    free(r->lse);
    free(r->dq);
    free(r->dk);
    free(r->dv);
}

typedef struct reference {
    double *o, *lse, *dq, *dk, *dv;
} reference;

static reference run_ref(const problem *p, int causal, double scale, const int64_t *kv_lens) {
    reference r = {th_doubles(p->nv), th_doubles(p->nl), th_doubles(p->nqk),
                   th_doubles(p->nqk), th_doubles(p->nv)};
    if (!ref_softmax_attn_batch(&p->d, causal, scale, kv_lens, p->q, p->k, p->v, p->d_o, r.o,
                                r.lse, r.dq, r.dk, r.dv)) {
        fprintf(stderr, "reference out of memory\n");
        abort();
    }
    return r;
}

static void free_ref(reference *r) {
    free(r->o);
    free(r->lse);
    free(r->dq);
    free(r->dk);
    free(r->dv);
}

static double resolved_scale(const la_softmax_opts *o, int64_t K) {
    return o->scale != 0 ? (double)o->scale : (double)(float)(1.0 / sqrt((double)K));
}

/* Runs forward (with lse) and backward into fresh NaN-filled outputs. */
static int run_lib(la_ctx *ctx, const la_softmax_opts *opts, const problem *p, outputs *out,
                   const char *label) {
    *out = nan_outputs(p);
    int ok = CHECK_STATUS(la_softmax_attn_forward(ctx, opts, &p->d, out->o, out->lse, p->q, p->k,
                                                  p->v),
                          LA_OK, label);
    ok &= CHECK_STATUS(la_softmax_attn_backward(ctx, opts, &p->d, out->dq, out->dk, out->dv,
                                                p->d_o, p->q, p->k, p->v),
                       LA_OK, label);
    return ok;
}

/* Compares every output with the reference at tolerance tol (grads: tolg). */
static void compare(const outputs *out, const reference *ref, const problem *p,
                    la_softmax_form form, double tol, double tolg, const char *label) {
    const size_t n[5] = {p->nv, p->nl, p->nqk, p->nqk, p->nv};
    const float *got[5] = {out->o, out->lse, out->dq, out->dk, out->dv};
    const double *want[5] = {ref->o, ref->lse, ref->dq, ref->dk, ref->dv};
    for (int i = 0; i < 5; i++) {
        double e = ref_max_rel_err(got[i], want[i], n[i]);
        CHECK_LE(e, i < 2 ? tol : tolg, "%s: %s", label, out_names[i]);
        if (tol == TOL_FWD && !(e <= worst[form][i])) worst[form][i] = e;
        if (in_long && !(e <= worst_long[form][i])) worst_long[form][i] = e;
    }
}

static void run_case_scaled(la_ctx *ctx, la_dims d, int causal, int64_t block,
                            const int64_t *kv_lens, float scale, const char *what) {
    problem p = make_problem(d, 1.0);
    la_softmax_opts o = la_softmax_opts_default();
    o.scale = scale;
    o.causal = causal;
    o.block_size = block;
    o.kv_lens = kv_lens;
    reference ref = run_ref(&p, causal, resolved_scale(&o, d.K), kv_lens);
    outputs out[2];
    for (int f = 0; f < 2; f++) {
        o.form = (la_softmax_form)f;
        char label[160];
        snprintf(label, sizeof label, "%s %s B=%lld T=%lld H=%lld K=%lld V=%lld %s block=%lld",
                 what, f ? "streaming" : "textbook", (long long)d.B, (long long)d.T,
                 (long long)d.H, (long long)d.K, (long long)d.V, causal ? "causal" : "full",
                 (long long)block);
        run_lib(ctx, &o, &p, &out[f], label);
        compare(&out[f], &ref, &p, o.form, TOL_FWD, TOL_GRAD, label);
    }
    /* textbook == streaming within rounding */
    CHECK_LE(ref_max_rel_err_ff(out[1].o, out[0].o, p.nv), TOL_FORMS, "%s: forms agree (o)", what);
    CHECK_LE(ref_max_rel_err_ff(out[1].dq, out[0].dq, p.nqk), TOL_FORMS, "%s: forms (dq)", what);
    CHECK_LE(ref_max_rel_err_ff(out[1].dk, out[0].dk, p.nqk), TOL_FORMS, "%s: forms (dk)", what);
    CHECK_LE(ref_max_rel_err_ff(out[1].dv, out[0].dv, p.nv), TOL_FORMS, "%s: forms (dv)", what);
    if (kv_lens) { /* padding keys: dk = dv = 0 exactly */
        int zero = 1;
        for (int f = 0; f < 2; f++)
            for (int64_t b = 0; b < d.B; b++)
                for (int64_t t = kv_lens[b]; t < d.T; t++)
                    for (int64_t h = 0; h < d.H; h++) {
                        const size_t r = (size_t)((b * d.T + t) * d.H + h);
                        for (int64_t c = 0; c < d.K; c++) zero &= out[f].dk[r * d.K + c] == 0;
                        for (int64_t c = 0; c < d.V; c++) zero &= out[f].dv[r * d.V + c] == 0;
                    }
        CHECK(zero, "%s: padding keys get dk = dv = 0", what);
    }
    free_outputs(&out[0]);
    free_outputs(&out[1]);
    free_ref(&ref);
    free_problem(&p);
}

static void run_case(la_ctx *ctx, la_dims d, int causal, int64_t block, const int64_t *kv_lens,
                     const char *what) {
    run_case_scaled(ctx, d, causal, block, kv_lens, 0, what);
}

/* ---- float64 reference backward vs central finite differences ---- */

static double ref_loss(const double *q, const double *k, const double *v, const double *d_o,
                       int64_t T, int64_t K, int64_t V, double scale, int causal, int64_t kv) {
    double *o = th_doubles((size_t)(T * V)), *lse = th_doubles((size_t)T);
    ref_softmax_attn_forward(o, lse, q, k, v, T, K, V, scale, causal, kv);
    double L = 0;
    for (int64_t i = 0; i < T * V; i++) L += o[i] * d_o[i];
    free(o);
    free(lse);
    return L;
}

static void test_ref_finite_differences(void) {
    const int64_t T = 7, K = 3, V = 4;
    const double scale = 0.7, h = 1e-5;
    for (int causal = 0; causal < 2; causal++)
        for (int64_t kv = 4; kv <= T; kv += T - 4) {
            double *x[4];
            const int64_t sz[4] = {T * K, T * K, T * V, T * V};
            for (int i = 0; i < 4; i++) {
                x[i] = th_doubles((size_t)sz[i]);
                for (int64_t j = 0; j < sz[i]; j++) x[i][j] = la_rng_normal(&rng);
            }
            double *g[3] = {th_doubles((size_t)(T * K)), th_doubles((size_t)(T * K)),
                            th_doubles((size_t)(T * V))};
            ref_softmax_attn_backward(g[0], g[1], g[2], x[3], x[0], x[1], x[2], T, K, V, scale,
                                      causal, kv);
            for (int a = 0; a < 3; a++) {
                double num = 0, den = 0;
                for (int64_t j = 0; j < sz[a]; j++) {
                    const double keep = x[a][j];
                    x[a][j] = keep + h;
                    const double lp = ref_loss(x[0], x[1], x[2], x[3], T, K, V, scale, causal, kv);
                    x[a][j] = keep - h;
                    const double lm = ref_loss(x[0], x[1], x[2], x[3], T, K, V, scale, causal, kv);
                    x[a][j] = keep;
                    const double fd = (lp - lm) / (2 * h);
                    if (fabs(fd - g[a][j]) > num) num = fabs(fd - g[a][j]);
                    if (fabs(fd) > den) den = fabs(fd);
                }
                /* O(h^2) truncation ~1e-10 plus roundoff 1e-16/h ~1e-11 */
                CHECK_LE(num / den, 1e-7, "ref backward vs finite differences: d%s, %s, kv=%lld",
                          a == 0 ? "q" : a == 1 ? "k" : "v", causal ? "causal" : "full",
                          (long long)kv);
            }
            for (int i = 0; i < 4; i++) free(x[i]);
            for (int i = 0; i < 3; i++) free(g[i]);
        }
}

/* The reference's own lse against a direct log-sum-exp (one row). */
static void test_ref_lse(void) {
    const double q[2] = {0.3, -1.2}, k[6] = {1, 2, -0.5, 0.25, 3, -1}, v[3] = {1, 2, 3};
    double o[3], lse[3];
    ref_softmax_attn_forward(o, lse, q, k, v, 1, 2, 1, 1.0, 0, 1);
    CHECK(fabs(lse[0] - (0.3 * 1 - 1.2 * 2)) < 1e-15 && fabs(o[0] - 1) < 1e-15,
          "one key: lse = score, o = v");
    double qq[6] = {0.3, -1.2, 0.5, 0.5, -1, 2}, vv[3] = {1, 2, 3};
    ref_softmax_attn_forward(o, lse, qq, k, vv, 3, 2, 1, 0.5, 0, 3);
    double s[3], l = 0, ov = 0;
    for (int j = 0; j < 3; j++) s[j] = 0.5 * (qq[4] * k[2 * j] + qq[5] * k[2 * j + 1]);
    for (int j = 0; j < 3; j++) l += exp(s[j]);
    for (int j = 0; j < 3; j++) ov += exp(s[j]) / l * vv[j];
    CHECK(fabs(lse[2] - log(l)) < 1e-14 && fabs(o[2] - ov) < 1e-14, "lse and o of one row");
}

/* ---- the sweeps ---- */

static void test_sweeps(la_ctx *ctx) {
    static const int64_t dimsz[6] = {1, 16, 60, 64, 100, 128};
    /* every K x V at T = 1 and T = 65 (does not divide the default block) */
    static const int64_t Ts[2] = {1, 65};
    for (int ti = 0; ti < 2; ti++)
        for (int a = 0; a < 6; a++)
            for (int b = 0; b < 6; b++)
                for (int causal = 0; causal < 2; causal++) {
                    la_dims d = {.B = 2, .T = Ts[ti], .H = 1, .K = dimsz[a], .V = dimsz[b]};
                    run_case(ctx, d, causal, 0, NULL, "sweep");
                }
    /* T = 2, 63, 64 at a few K, V */
    static const int64_t kv[5][2] = {{1, 1}, {16, 60}, {64, 64}, {100, 128}, {128, 16}};
    static const int64_t Ts2[3] = {2, 63, 64};
    for (int ti = 0; ti < 3; ti++)
        for (int i = 0; i < 5; i++)
            for (int causal = 0; causal < 2; causal++) {
                la_dims d = {.B = 1, .T = Ts2[ti], .H = 3, .K = kv[i][0], .V = kv[i][1]};
                run_case(ctx, d, causal, 0, NULL, "sizes");
            }
}

static void test_long(la_ctx *ctx) {
    /* K, V, causal (kept to two: the float64 reference is O(T^2 D) and the
     * suite must stay fast under the sanitizers) */
    static const int64_t cases[2][3] = {{16, 60, 0}, {64, 64, 1}};
    in_long = 1;
    for (int i = 0; i < 2; i++) {
        la_dims d = {.B = 1, .T = 1000, .H = 2, .K = cases[i][0], .V = cases[i][1]};
        run_case(ctx, d, (int)cases[i][2], 0, NULL, "T=1000");
    }
    in_long = 0;
}

static void test_blocks(la_ctx *ctx) {
    static const int64_t blocks[5] = {1, 7, 64, 100, 1000};
    for (int i = 0; i < 5; i++)
        for (int causal = 0; causal < 2; causal++) {
            la_dims d = {.B = 2, .T = 100, .H = 2, .K = 16, .V = 60};
            run_case_scaled(ctx, d, causal, blocks[i], NULL, 0.37f, "block, scale 0.37");
        }
}

static void test_kv_lens(la_ctx *ctx) {
    const int64_t lens[3] = {65, 1, 33};
    for (int causal = 0; causal < 2; causal++)
        for (int64_t block = 0; block <= 7; block += 7) {
            la_dims d = {.B = 3, .T = 65, .H = 2, .K = 16, .V = 60};
            run_case(ctx, d, causal, block, lens, "kv_lens");
        }
}

/* Packed sequences give exactly what each sequence gives alone. */
static void test_cu_seqlens(la_ctx *ctx) {
    const int64_t cu[5] = {0, 1, 65, 72, 172};
    la_dims d = {.B = 1, .T = 172, .H = 2, .K = 16, .V = 60, .cu_seqlens = cu, .n_seqs = 4};
    problem p = make_problem(d, 1.0);
    for (int f = 0; f < 2; f++)
        for (int causal = 0; causal < 2; causal++) {
            la_softmax_opts o = la_softmax_opts_default();
            o.form = (la_softmax_form)f;
            o.causal = causal;
            o.block_size = 7;
            outputs packed;
            run_lib(ctx, &o, &p, &packed, "packed");
            reference ref = run_ref(&p, causal, resolved_scale(&o, d.K), NULL);
            compare(&packed, &ref, &p, o.form, TOL_FWD, TOL_GRAD, "cu_seqlens vs reference");
            int same = 1;
            for (int64_t n = 0; n < 4; n++) {
                const int64_t len = cu[n + 1] - cu[n], r = cu[n] * d.H;
                problem s = p;
                s.d = (la_dims){.B = 1, .T = len, .H = d.H, .K = d.K, .V = d.V};
                s.nqk = (size_t)(len * d.H * d.K);
                s.nv = (size_t)(len * d.H * d.V);
                s.nl = (size_t)(len * d.H);
                s.q = p.q + r * d.K;
                s.k = p.k + r * d.K;
                s.v = p.v + r * d.V;
                s.d_o = p.d_o + r * d.V;
                outputs alone;
                run_lib(ctx, &o, &s, &alone, "alone");
                same &= th_bitwise_equal(alone.o, packed.o + r * d.V, s.nv);
                same &= th_bitwise_equal(alone.lse, packed.lse + r, s.nl);
                same &= th_bitwise_equal(alone.dq, packed.dq + r * d.K, s.nqk);
                same &= th_bitwise_equal(alone.dk, packed.dk + r * d.K, s.nqk);
                same &= th_bitwise_equal(alone.dv, packed.dv + r * d.V, s.nv);
                free_outputs(&alone);
            }
            CHECK(same, "cu_seqlens == each sequence alone, bitwise (%s, %s)",
                  f ? "streaming" : "textbook", causal ? "causal" : "full");
            free_outputs(&packed);
            free_ref(&ref);
        }
    free_problem(&p);
}

static void test_threads(void) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    const int64_t lens[3] = {50, 9, 1};
    for (int f = 0; f < 2; f++)
        for (int causal = 0; causal < 2; causal++)
            for (int pad = 0; pad < 2; pad++) {
                la_dims d = {.B = 3, .T = 50, .H = 2, .K = 16, .V = 60};
                problem p = make_problem(d, 1.0);
                la_softmax_opts o = la_softmax_opts_default();
                o.form = (la_softmax_form)f;
                o.causal = causal;
                o.block_size = 7;
                o.kv_lens = pad ? lens : NULL;
                outputs a, b;
                run_lib(c1, &o, &p, &a, "1 thread");
                run_lib(c2, &o, &p, &b, "2 threads");
                CHECK(th_bitwise_equal(a.o, b.o, p.nv) && th_bitwise_equal(a.lse, b.lse, p.nl) &&
                          th_bitwise_equal(a.dq, b.dq, p.nqk) &&
                          th_bitwise_equal(a.dk, b.dk, p.nqk) && th_bitwise_equal(a.dv, b.dv, p.nv),
                      "1 vs 2 threads bitwise (%s, %s, kv_lens %d)", f ? "streaming" : "textbook",
                      causal ? "causal" : "full", pad);
                free_outputs(&a);
                free_outputs(&b);
                free_problem(&p);
            }
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)x[i]) > m) m = fabs((double)x[i]);
    return m;
}

/* max |got - want| / max(max |want|, floor) */
static double err_floor(const float *got, const double *want, size_t n, double floor) {
    double num = 0, den = floor;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - want[i]);
        if (!(e <= num)) num = e;
        if (fabs(want[i]) > den) den = fabs(want[i]);
    }
    return num / den;
}

/* |q|, |k| ~ 30 with scale 1: scores in the thousands. A naive exp would
 * overflow to Inf and give NaN.
 * ties = 0: every row is one-hot to within e^-30, so the exact gradients
 *   are ~1e-14 and what both sides compute is double-rounding noise of that
 *   size; the gradients are judged against their natural magnitude (what an
 *   unsaturated row gives: scale max|dO| max|v| max|k| for dq, and so on).
 * ties = 1: every other key is its neighbour plus N(0, 0.01^2), so rows mix
 *   two keys with O(1) weights at scores ~1e3: plain max relative error for
 *   o, lse, dk, dv. dq = sum_j dS_j k_j then sums two nearly equal keys with
 *   opposite weights (dS_a ~ -dS_b), so it is ill-conditioned by |k|/|k_a -
 *   k_b| ~ 3e3 against the score rounding (which any float32 implementation
 *   has); it keeps the natural-magnitude floor.
 * Bound: scores up to ~1.2e4 are rounded to float with absolute error up to
 * ~5e-4; for two tied keys that moves p by <= 0.25 * 1e-3, and o by that
 * times |v_a - v_b|, ~5e-4 of max|v|: TOL_LARGE = 2e-3. */
static void test_large_logits(la_ctx *ctx) {
    for (int ties = 0; ties < 2; ties++)
        for (int f = 0; f < 2; f++)
            for (int causal = 0; causal < 2; causal++)
                for (int64_t block = 1; block <= 64; block += 63) {
                    la_dims d = {.B = 1, .T = 65, .H = 2, .K = 16, .V = 16};
                    problem p = make_problem(d, 30.0);
                    if (ties)
                        for (int64_t t = 1; t < d.T; t += 2)
                            for (int64_t i = 0; i < d.H * d.K; i++)
                                p.k[t * d.H * d.K + i] = p.k[(t - 1) * d.H * d.K + i] +
                                                         (float)(0.01 * la_rng_normal(&rng));
                    la_softmax_opts o = la_softmax_opts_default();
                    o.form = (la_softmax_form)f;
                    o.causal = causal;
                    o.scale = 1;
                    o.block_size = block;
                    outputs out;
                    run_lib(ctx, &o, &p, &out, "large logits");
                    CHECK(ref_count_nonfinite(out.o, p.nv) == 0 &&
                              ref_count_nonfinite(out.lse, p.nl) == 0 &&
                              ref_count_nonfinite(out.dq, p.nqk) == 0 &&
                              ref_count_nonfinite(out.dk, p.nqk) == 0 &&
                              ref_count_nonfinite(out.dv, p.nv) == 0,
                          "large logits: finite outputs");
                    reference ref = run_ref(&p, causal, 1.0, NULL);
                    char label[96];
                    snprintf(label, sizeof label, "large logits%s %s %s block %lld",
                             ties ? " (near ties)" : "", f ? "streaming" : "textbook",
                             causal ? "causal" : "full", (long long)block);
                    const double gq = max_abs(p.d_o, p.nv) * max_abs(p.v, p.nv),
                                 fq = gq * max_abs(p.k, p.nqk),
                                 fk = ties ? 0 : gq * max_abs(p.q, p.nqk),
                                 fv = ties ? 0 : max_abs(p.d_o, p.nv);
                    const double e[5] = {ref_max_rel_err(out.o, ref.o, p.nv),
                                         ref_max_rel_err(out.lse, ref.lse, p.nl),
                                         err_floor(out.dq, ref.dq, p.nqk, fq),
                                         err_floor(out.dk, ref.dk, p.nqk, fk),
                                         err_floor(out.dv, ref.dv, p.nv, fv)};
                    for (int i = 0; i < 5; i++) {
                        CHECK_LE(e[i], TOL_LARGE, "%s: %s", label, out_names[i]);
                        if (!(e[i] <= worst_large[ties][i])) worst_large[ties][i] = e[i];
                    }
                    free_outputs(&out);
                    free_ref(&ref);
                    free_problem(&p);
                }
}

/* Finite inputs whose scores exceed the float range (|q|, |k| ~ 1e20, so
 * s ~ 1e40): scores saturate at FLT_MAX, outputs stay finite and o stays a
 * convex combination of the values. (Which of the saturated keys wins is
 * then arbitrary, so there is no reference comparison.) */
static void test_huge_scores(la_ctx *ctx) {
    for (int f = 0; f < 2; f++)
        for (int causal = 0; causal < 2; causal++) {
            la_dims d = {.B = 1, .T = 9, .H = 2, .K = 1, .V = 3};
            problem p = make_problem(d, 1e20);
            la_softmax_opts o = la_softmax_opts_default();
            o.form = (la_softmax_form)f;
            o.causal = causal;
            o.scale = 1;
            o.block_size = 2;
            outputs out;
            run_lib(ctx, &o, &p, &out, "huge scores");
            CHECK(ref_count_nonfinite(out.o, p.nv) == 0 &&
                      ref_count_nonfinite(out.lse, p.nl) == 0 &&
                      ref_count_nonfinite(out.dq, p.nqk) == 0 &&
                      ref_count_nonfinite(out.dk, p.nqk) == 0 &&
                      ref_count_nonfinite(out.dv, p.nv) == 0,
                  "huge scores: finite outputs (%s, %s)", f ? "streaming" : "textbook",
                  causal ? "causal" : "full");
            CHECK(max_abs(out.o, p.nv) <= max_abs(p.v, p.nv) * (1 + 1e-6),
                  "huge scores: |o| <= max |v|");
            free_outputs(&out);
            free_problem(&p);
        }
}

/* lse may be NULL; o is then the same as with lse. */
static void test_optional_lse(la_ctx *ctx) {
    la_dims d = {.B = 2, .T = 20, .H = 2, .K = 8, .V = 5};
    problem p = make_problem(d, 1.0);
    for (int f = 0; f < 2; f++) {
        la_softmax_opts o = la_softmax_opts_default();
        o.form = (la_softmax_form)f;
        float *a = th_nan_floats(p.nv), *b = th_nan_floats(p.nv), *l = th_nan_floats(p.nl);
        CHECK_STATUS(la_softmax_attn_forward(ctx, &o, &d, a, NULL, p.q, p.k, p.v), LA_OK,
                     "lse NULL");
        CHECK_STATUS(la_softmax_attn_forward(ctx, &o, &d, b, l, p.q, p.k, p.v), LA_OK, "lse");
        CHECK(th_bitwise_equal(a, b, p.nv), "o does not depend on asking for lse");
        free(a);
        free(b);
        free(l);
    }
    free_problem(&p);
}

static void test_defaults(void) {
    la_softmax_opts o = la_softmax_opts_default();
    CHECK(o.causal == 0 && o.form == LA_SOFTMAX_TEXTBOOK && o.scale == 0 && o.block_size == 0 &&
              o.kv_lens == NULL,
          "default options");
}

int main(void) {
    la_rng_seed(&rng, 20261126);
    la_ctx *ctx = th_ctx(2);
    test_defaults();
    test_ref_lse();
    test_ref_finite_differences();
    test_sweeps(ctx);
    test_blocks(ctx);
    test_kv_lens(ctx);
    test_cu_seqlens(ctx);
    test_threads();
    test_large_logits(ctx);
    test_huge_scores(ctx);
    test_optional_lse(ctx);
    test_long(ctx);
    la_ctx_destroy(ctx);
    for (int f = 0; f < 2; f++)
        for (int i = 0; i < 5; i++)
            printf("max rel err %-9s %-3s %.3g\n", f ? "streaming" : "textbook", out_names[i],
                   worst[f][i]);
    for (int f = 0; f < 2; f++)
        for (int i = 0; i < 5; i++)
            printf("T=1000: max rel err %-9s %-3s %.3g\n", f ? "streaming" : "textbook",
                   out_names[i], worst_long[f][i]);
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < 5; i++)
            printf("large logits%s: max err %-3s %.3g\n", t ? " (near ties)" : "", out_names[i],
                   worst_large[t][i]);
    return th_summary("test_softmax_attn");
}
