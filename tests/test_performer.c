/* Performer attention: the composition random features -> normalised kernel
 * linear attention against a float64 composition (ref_rf_forward +
 * ref_kernel_attn), its backward against central differences of that
 * composition, per-sequence key stabilisers, large norms, threads, and bad
 * arguments. */
#include "harness.h"
#include "ref_feature_map.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *KIND[] = {"positive", "hyperbolic", "trig-gauss", "trig-softmax", "relu"};
static const char *FORM[] = {"parallel", "recurrent", "chunk"};

/* float64 Performer attention of one (sequence, head): non-causal, the
 * composition ref_rf_forward -> ref_kernel_attn (key stabiliser over the
 * sequence, stab_k [1]); causal, ref_performer_causal (running key maximum,
 * stab_k [T] holds it). stab_q [T]; both used as constants when stab_given.
 * Returns the conditioning of the normalisation, max over queries of
 * sum_j |a_tj| / |sum_j a_tj + eps| (1 for non-negative features; large when
 * signed trig features nearly cancel in the denominator). */
static double ref_performer(const la_rf_opts *rf, double eps, int causal, int64_t T, int64_t d,
                            int64_t V, int64_t m, const double *q, const double *k, const double *v,
                            const double *W, double *stab_q, double *stab_k, int stab_given,
                            double *o) {
    if (causal) {
        double cond = 1;
        ref_performer_causal(rf, eps, T, d, V, m, q, k, v, W, NULL, NULL, -INFINITY, stab_q, stab_k,
                             stab_given, o, NULL, NULL, NULL, &cond);
        return cond;
    }
    const int64_t M = la_rf_num_features(rf->kind, m);
    double *pq = malloc((size_t)(T * M) * sizeof *pq), *pk = malloc((size_t)(T * M) * sizeof *pk);
    la_rf_opts oq = *rf, ok = *rf;
    oq.role = LA_RF_QUERY;
    ok.role = LA_RF_KEY;
    ref_rf_forward(&oq, T, d, m, q, W, pq, stab_q, stab_given);
    ref_rf_forward(&ok, T, d, m, k, W, pk, stab_k, stab_given);
    ref_kernel_attn(T, M, V, pq, pk, v, causal, eps, o);
    double cond = 1;
    for (int64_t t = 0; t < T; t++) {
        double sa = 0, s = 0;
        for (int64_t j = 0; j < (causal ? t + 1 : T); j++) {
            double a = 0;
            for (int64_t i = 0; i < M; i++) a += pq[t * M + i] * pk[j * M + i];
            sa += fabs(a);
            s += a;
        }
        cond = fmax(cond, sa / fabs(s + eps));
    }
    free(pq);
    free(pk);
    return cond;
}

typedef struct problem {
    la_dims dims;
    int64_t m;
    float *q, *k, *v, *W, *d_o;
} problem;

static void make_problem(problem *p, int64_t B, int64_t T, int64_t H, int64_t d, int64_t V,
                         int64_t m, const int64_t *cu, int64_t ns, la_rng *rng, double qk_std) {
    p->dims = (la_dims){.B = B, .T = T, .H = H, .K = d, .V = V, .cu_seqlens = cu, .n_seqs = ns};
    p->m = m;
    p->q = th_rand_floats((size_t)(B * T * H * d), rng, qk_std);
    p->k = th_rand_floats((size_t)(B * T * H * d), rng, qk_std);
    p->v = th_rand_floats((size_t)(B * T * H * V), rng, 1.0);
    p->d_o = th_rand_floats((size_t)(B * T * H * V), rng, 1.0);
    p->W = th_nan_floats((size_t)(m * d));
    la_projection_draw(p->W, m, d, LA_PROJ_ORTHOGONAL, LA_SCALING_CHI, 17);
}

static void free_problem(problem *p) {
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->d_o);
    free(p->W);
}

/* Worst max-relative error of o against the float64 composition, divided by
 * the conditioning of the normalisation (see ref_performer). */
static double forward_error(la_ctx *ctx, const problem *p, const la_rf_opts *rf,
                            const la_linear_attn_opts *attn, float *o) {
    const la_dims *dm = &p->dims;
    const int64_t H = dm->H, d = dm->K, V = dm->V, N = dm->cu_seqlens ? dm->n_seqs : dm->B;
    const size_t no = (size_t)(dm->B * dm->T * H * V);
    la_status st = la_performer_attn_forward(ctx, rf, attn, dm, o, p->q, p->k, p->v, p->W, p->m);
    if (st != LA_OK) {
        CHECK(0, "performer forward: %s", la_last_error());
        return INFINITY;
    }
    double *want = th_doubles(no), *Wd = ref_to_double(p->W, (size_t)(p->m * d));
    double *qs = th_doubles((size_t)(dm->T * d)), *ks = th_doubles((size_t)(dm->T * d));
    double *vs = th_doubles((size_t)(dm->T * V)), *os = th_doubles((size_t)(dm->T * V));
    double *sq = th_doubles((size_t)dm->T), *sk = th_doubles((size_t)dm->T), cond = 1;
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            int64_t T = ref_gather(qs, p->q, dm, n, h, H, d);
            ref_gather(ks, p->k, dm, n, h, H, d);
            ref_gather(vs, p->v, dm, n, h, H, V);
            cond = fmax(cond, ref_performer(rf, attn->eps, attn->causal, T, d, V, p->m, qs, ks, vs,
                                            Wd, sq, sk, 0, os));
            ref_scatter(want, os, dm, n, h, H, V);
        }
    double e = ref_max_rel_err(o, want, no) / cond;
    free(want);
    free(Wd);
    free(qs);
    free(ks);
    free(vs);
    free(os);
    free(sq);
    free(sk);
    return e;
}

/* Every kind, non-causal and the three causal forms, batched and packed.
 * Bound 1e-5 (the project's float32 bound) times the conditioning of the
 * normalisation: features carry ~1e-7 relative error and the normalised
 * linear attention adds float32 sums over T*M terms; with signed (trig)
 * features the denominator can nearly cancel, which amplifies those
 * roundings by sum|a|/|sum a| (measured up to ~6 here: 5.6e-6 unscaled with
 * an exact float64 attention behind float32 features). */
static void test_forward(void) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 4242);
    const int64_t cu[] = {0, 5, 6, 40};
    problem ps[2];
    make_problem(&ps[0], 2, 37, 3, 8, 5, 16, NULL, 0, &rng, 0.7);
    make_problem(&ps[1], 1, 40, 2, 6, 7, 9, cu, 3, &rng, 0.7);
    double worst = 0;
    for (int pi = 0; pi < 2; pi++) {
        const problem *p = &ps[pi];
        const size_t no = (size_t)(p->dims.B * p->dims.T * p->dims.H * p->dims.V);
        for (int kind = 0; kind <= LA_RF_RELU; kind++)
            for (int variant = 0; variant < 4; variant++) { /* non-causal, 3 causal forms */
                la_rf_opts rf = la_rf_opts_default();
                rf.kind = (la_random_feature)kind;
                rf.eps = kind == LA_RF_RELU ? 1e-3f : 0.0f;
                la_linear_attn_opts attn = la_linear_attn_opts_default();
                attn.feature_map = LA_FEATURE_IDENTITY;
                attn.normalize = 1;
                attn.causal = variant > 0;
                attn.form = variant > 0 ? (la_form)(variant - 1) : LA_FORM_RECURRENT;
                attn.chunk_size = 16;
                float *o = th_nan_floats(no), *o2 = th_nan_floats(no);
                double e = forward_error(c1, p, &rf, &attn, o);
                CHECK_ERR(e, 1e-5, "o %s %s case %d", KIND[kind],
                          variant ? FORM[variant - 1] : "non-causal", pi);
                worst = fmax(worst, e);
                CHECK(ref_count_nonfinite(o, no) == 0, "o fully written");
                CHECK_STATUS(la_performer_attn_forward(c2, &rf, &attn, &p->dims, o2, p->q, p->k,
                                                       p->v, p->W, p->m),
                             LA_OK, "2 threads");
                CHECK(th_bitwise_equal(o, o2, no), "1 and 2 threads agree (%s)", KIND[kind]);
                free(o);
                free(o2);
            }
    }
    printf("forward: worst o error %.3g\n", worst);
    free_problem(&ps[0]);
    free_problem(&ps[1]);
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

/* Packed sequences whose key norms differ wildly: a stabiliser shared by the
 * whole packed batch would underflow every key feature of the small-norm
 * sequence (its output would collapse to 0); per-sequence stabilisers keep
 * it exact. */
static void test_key_stabiliser_per_sequence(void) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 99);
    const int64_t cu[] = {0, 12, 30};
    problem p;
    make_problem(&p, 1, 30, 1, 16, 4, 32, cu, 2, &rng, 0.5);
    for (int64_t i = 0; i < 12 * 16; i++) p.k[i] *= 12.0f; /* |k| ~ 24 in sequence 0 */
    la_rf_opts rf = la_rf_opts_default();
    la_linear_attn_opts attn = la_linear_attn_opts_default();
    attn.feature_map = LA_FEATURE_IDENTITY;
    attn.normalize = 1;
    attn.causal = 1;
    float *o = th_nan_floats(30 * 4);
    double e = forward_error(ctx, &p, &rf, &attn, o);
    CHECK_ERR(e, 1e-5, "packed sequences with different key scales (%s)", "positive");
    free(o);
    free_problem(&p);
    la_ctx_destroy(ctx);
}

/* Gradients: central differences of the float64 composition (stabilisers
 * held at their values, as the backward defines them) against the float32
 * backward. The FD reference is accurate to ~1e-8; bound 1e-5 relative to
 * the largest gradient entry. */
static void test_backward(void) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 777);
    const int64_t cu[] = {0, 4, 11};
    problem ps[2];
    make_problem(&ps[0], 2, 9, 2, 5, 3, 7, NULL, 0, &rng, 0.7);
    make_problem(&ps[1], 1, 11, 2, 4, 3, 6, cu, 2, &rng, 0.7);
    double worst = 0;
    for (int pi = 0; pi < 2; pi++) {
        const problem *p = &ps[pi];
        const la_dims *dm = &p->dims;
        const int64_t H = dm->H, d = dm->K, V = dm->V, N = dm->cu_seqlens ? dm->n_seqs : dm->B;
        const size_t nqk = (size_t)(dm->B * dm->T * H * d), nv = (size_t)(dm->B * dm->T * H * V);
        double *Wd = ref_to_double(p->W, (size_t)(p->m * d));
        for (int kind = 0; kind <= LA_RF_RELU; kind++)
            for (int causal = 0; causal < 2; causal++) {
                la_rf_opts rf = la_rf_opts_default();
                rf.kind = (la_random_feature)kind;
                rf.eps = kind == LA_RF_RELU ? 1e-3f : 0.0f;
                la_linear_attn_opts attn = la_linear_attn_opts_default();
                attn.feature_map = LA_FEATURE_IDENTITY;
                attn.normalize = 1;
                attn.causal = causal;
                attn.form = LA_FORM_CHUNK;
                attn.chunk_size = 4;
                float *dq = th_nan_floats(nqk), *dk = th_nan_floats(nqk), *dv = th_nan_floats(nv);
                float *dq2 = th_nan_floats(nqk), *dk2 = th_nan_floats(nqk),
                      *dv2 = th_nan_floats(nv);
                CHECK_STATUS(la_performer_attn_backward(c1, &rf, &attn, dm, dq, dk, dv, p->d_o,
                                                        p->q, p->k, p->v, p->W, p->m),
                             LA_OK, "backward");
                CHECK_STATUS(la_performer_attn_backward(c2, &rf, &attn, dm, dq2, dk2, dv2, p->d_o,
                                                        p->q, p->k, p->v, p->W, p->m),
                             LA_OK, "backward 2");
                CHECK(th_bitwise_equal(dq, dq2, nqk) && th_bitwise_equal(dk, dk2, nqk) &&
                          th_bitwise_equal(dv, dv2, nv),
                      "backward: 1 and 2 threads agree");
                double *wq = th_doubles(nqk), *wk = th_doubles(nqk), *wv = th_doubles(nv);
                double *qs = th_doubles((size_t)(dm->T * d)), *ks = th_doubles((size_t)(dm->T * d));
                double *vs = th_doubles((size_t)(dm->T * V)), *gs = th_doubles((size_t)(dm->T * V));
                double *os = th_doubles((size_t)(dm->T * V)), *sq = th_doubles((size_t)dm->T);
                double *g1 = th_doubles((size_t)(dm->T * (d > V ? d : V)));
                double *sk = th_doubles((size_t)dm->T);
                for (int64_t n = 0; n < N; n++)
                    for (int64_t h = 0; h < H; h++) {
                        const int64_t T = ref_gather(qs, p->q, dm, n, h, H, d);
                        ref_gather(ks, p->k, dm, n, h, H, d);
                        ref_gather(vs, p->v, dm, n, h, H, V);
                        ref_gather(gs, p->d_o, dm, n, h, H, V);
                        ref_performer(&rf, attn.eps, causal, T, d, V, p->m, qs, ks, vs, Wd, sq, sk,
                                      0, os);
                        double *xs[3] = {qs, ks, vs};
                        double *outs[3] = {wq, wk, wv};
                        const int64_t D[3] = {d, d, V};
                        for (int which = 0; which < 3; which++) {
                            for (int64_t i = 0; i < T * D[which]; i++) {
                                const double hstep = 1e-6, keep = xs[which][i];
                                double l[2];
                                for (int sgn = 0; sgn < 2; sgn++) {
                                    xs[which][i] = keep + (sgn ? -hstep : hstep);
                                    ref_performer(&rf, attn.eps, causal, T, d, V, p->m, qs, ks, vs,
                                                  Wd, sq, sk, 1, os);
                                    l[sgn] = 0;
                                    for (int64_t j = 0; j < T * V; j++) l[sgn] += gs[j] * os[j];
                                }
                                xs[which][i] = keep;
                                g1[i] = (l[0] - l[1]) / (2 * hstep);
                            }
                            ref_scatter(outs[which], g1, dm, n, h, H, D[which]);
                        }
                    }
                double eq = ref_max_rel_err(dq, wq, nqk), ek = ref_max_rel_err(dk, wk, nqk);
                double ev = ref_max_rel_err(dv, wv, nv);
                CHECK_ERR(eq, 1e-5, "dq %s causal=%d case %d", KIND[kind], causal, pi);
                CHECK_ERR(ek, 1e-5, "dk %s causal=%d case %d", KIND[kind], causal, pi);
                CHECK_ERR(ev, 1e-5, "dv %s causal=%d case %d", KIND[kind], causal, pi);
                worst = fmax(worst, fmax(eq, fmax(ek, ev)));
                free(dq);
                free(dk);
                free(dv);
                free(dq2);
                free(dk2);
                free(dv2);
                free(wq);
                free(wk);
                free(wv);
                free(qs);
                free(ks);
                free(vs);
                free(gs);
                free(os);
                free(sq);
                free(sk);
                free(g1);
            }
        free(Wd);
    }
    printf("backward: worst gradient error vs finite differences %.3g\n", worst);
    free_problem(&ps[0]);
    free_problem(&ps[1]);
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

/* Norms up to 30 with the stabiliser: finite output and gradients. */
static void test_large_norms(void) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 3);
    problem p;
    const int64_t T = 4096, d = 16;
    make_problem(&p, 1, T, 1, d, 8, 32, NULL, 0, &rng, 1.0);
    float *xs[2] = {p.q, p.k};
    for (int w = 0; w < 2; w++)
        for (int64_t t = 0; t < T; t++) {
            double n2 = 0;
            for (int64_t a = 0; a < d; a++) n2 += (double)xs[w][t * d + a] * xs[w][t * d + a];
            double f = 30.0 * (double)((t + 7 * w) % 31) / 30.0 / sqrt(n2);
            for (int64_t a = 0; a < d; a++) xs[w][t * d + a] = (float)(xs[w][t * d + a] * f);
        }
    for (int kind = 0; kind <= LA_RF_TRIG_SOFTMAX; kind++) {
        if (kind == LA_RF_TRIG_GAUSSIAN) continue;
        la_rf_opts rf = la_rf_opts_default();
        rf.kind = (la_random_feature)kind;
        la_linear_attn_opts attn = la_linear_attn_opts_default();
        attn.feature_map = LA_FEATURE_IDENTITY;
        attn.normalize = 1;
        attn.causal = 1;
        attn.form = LA_FORM_CHUNK;
        float *o = th_nan_floats((size_t)(T * 8)), *dq = th_nan_floats((size_t)(T * d));
        float *dk = th_nan_floats((size_t)(T * d)), *dv = th_nan_floats((size_t)(T * 8));
        CHECK_STATUS(
            la_performer_attn_forward(ctx, &rf, &attn, &p.dims, o, p.q, p.k, p.v, p.W, p.m), LA_OK,
            "forward at large norms");
        CHECK(ref_count_nonfinite(o, (size_t)(T * 8)) == 0, "finite o (%s)", KIND[kind]);
        if (kind != LA_RF_TRIG_SOFTMAX) { /* trig-softmax denominators can cross 0 */
            CHECK_STATUS(la_performer_attn_backward(ctx, &rf, &attn, &p.dims, dq, dk, dv, p.d_o,
                                                    p.q, p.k, p.v, p.W, p.m),
                         LA_OK, "backward");
            CHECK(ref_count_nonfinite(dq, (size_t)(T * d)) == 0 &&
                      ref_count_nonfinite(dk, (size_t)(T * d)) == 0 &&
                      ref_count_nonfinite(dv, (size_t)(T * 8)) == 0,
                  "finite gradients (%s)", KIND[kind]);
        }
        free(o);
        free(dq);
        free(dk);
        free(dv);
    }
    free_problem(&p);
    la_ctx_destroy(ctx);
}

static void test_bad_args(void) {
    la_ctx *ctx = th_ctx(1);
    la_rng rng;
    la_rng_seed(&rng, 8);
    problem p;
    make_problem(&p, 1, 6, 2, 4, 3, 5, NULL, 0, &rng, 1.0);
    const size_t no = 36, nq = 48;
    float *o = th_nan_floats(no), *dq = th_nan_floats(nq), *dk = th_nan_floats(nq);
    float *dv = th_nan_floats(no);
    la_rf_opts rf = la_rf_opts_default();
    la_linear_attn_opts attn = la_linear_attn_opts_default();
    attn.feature_map = LA_FEATURE_IDENTITY;
    attn.normalize = 1;
#define UNTOUCHED()                                                                                \
    CHECK(th_untouched(o, no) && th_untouched(dq, nq) && th_untouched(dk, nq) &&                   \
              th_untouched(dv, no),                                                                \
          "outputs untouched")
#define BOTH(rfp, attnp, dims, q, k, v, W, m, want, what)                                          \
    do {                                                                                           \
        CHECK_STATUS(la_performer_attn_forward(ctx, rfp, attnp, dims, o, q, k, v, W, m), want,     \
                     what " (forward)");                                                           \
        CHECK_STATUS(                                                                              \
            la_performer_attn_backward(ctx, rfp, attnp, dims, dq, dk, dv, p.d_o, q, k, v, W, m),   \
            want, what " (backward)");                                                             \
        UNTOUCHED();                                                                               \
    } while (0)
    BOTH(NULL, &attn, &p.dims, p.q, p.k, p.v, p.W, p.m, LA_ERR_NULL_POINTER, "rf NULL");
    BOTH(&rf, NULL, &p.dims, p.q, p.k, p.v, p.W, p.m, LA_ERR_NULL_POINTER, "attn NULL");
    BOTH(&rf, &attn, NULL, p.q, p.k, p.v, p.W, p.m, LA_ERR_NULL_POINTER, "dims NULL");
    BOTH(&rf, &attn, &p.dims, NULL, p.k, p.v, p.W, p.m, LA_ERR_NULL_POINTER, "q NULL");
    BOTH(&rf, &attn, &p.dims, p.q, p.k, p.v, NULL, p.m, LA_ERR_NULL_POINTER, "W NULL");
    BOTH(&rf, &attn, &p.dims, p.q, p.k, p.v, p.W, 0, LA_ERR_INVALID_SIZE, "m = 0");
    la_linear_attn_opts a2 = attn;
    a2.feature_map = LA_FEATURE_ELU1;
    BOTH(&rf, &a2, &p.dims, p.q, p.k, p.v, p.W, p.m, LA_ERR_INVALID_ARGUMENT, "feature map");
    CHECK(strstr(la_last_error(), "feature_map") != NULL, "names feature_map: %s", la_last_error());
    a2 = attn;
    a2.normalize = 0;
    BOTH(&rf, &a2, &p.dims, p.q, p.k, p.v, p.W, p.m, LA_ERR_INVALID_ARGUMENT, "normalize 0");
    la_rf_opts r2 = rf;
    r2.kind = (la_random_feature)11;
    BOTH(&r2, &attn, &p.dims, p.q, p.k, p.v, p.W, p.m, LA_ERR_INVALID_ARGUMENT, "rf kind");
    r2 = rf;
    r2.stabilize = 5;
    BOTH(&r2, &attn, &p.dims, p.q, p.k, p.v, p.W, p.m, LA_ERR_INVALID_ARGUMENT, "stabilize");
    p.v[3] = NAN;
    BOTH(&rf, &attn, &p.dims, p.q, p.k, p.v, p.W, p.m, LA_ERR_NON_FINITE, "v NaN");
    p.v[3] = 0.1f;
    p.k[5] = INFINITY;
    BOTH(&rf, &attn, &p.dims, p.q, p.k, p.v, p.W, p.m, LA_ERR_NON_FINITE, "k Inf");
    p.k[5] = 0.1f;
    p.d_o[2] = NAN;
    CHECK_STATUS(la_performer_attn_backward(ctx, &rf, &attn, &p.dims, dq, dk, dv, p.d_o, p.q, p.k,
                                            p.v, p.W, p.m),
                 LA_ERR_NON_FINITE, "d_o NaN");
    UNTOUCHED();
    p.d_o[2] = 0.1f;
    la_dims e = p.dims;
    e.V = 0;
    BOTH(&rf, &attn, &e, p.q, p.k, p.v, p.W, p.m, LA_ERR_INVALID_SIZE, "V = 0");
#undef BOTH
#undef UNTOUCHED
    free(o);
    free(dq);
    free(dk);
    free(dv);
    free_problem(&p);
    la_ctx_destroy(ctx);
}

int main(void) {
    test_forward();
    test_key_stabiliser_per_sequence();
    test_backward();
    test_large_norms();
    test_bad_args();
    return th_summary("test_performer");
}
