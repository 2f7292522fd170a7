/* Causal Performer as an RNN (la_performer_attn_forward_state / _backward_state
 * and the decoder): the running key maximum against the float64 reference
 * ref_performer_causal (same definition), chunk == recurrent == parallel ==
 * split calls == token-by-token decoding, keys whose largest exponent grows
 * (and jumps far enough that an unrescaled state would overflow), gradients
 * (incl. d_initial_state / d_initial_norm) against central differences of
 * the reference with the stabilisers held, threads, bad arguments. Outputs
 * are NaN-poisoned before every call. */
#include "harness.h"
#include "ref_feature_map.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *KIND[] = {"positive", "hyperbolic", "trig-gauss", "trig-softmax", "relu"};
static const char *FORM[] = {"parallel", "recurrent", "chunk"};

typedef struct problem {
    la_dims dims;
    int64_t m, M, N;
    size_t nqk, nv, ns, nz, nh;
    float *q, *k, *v, *W, *d_o, *S0, *z0, *mu0, *dST, *dzT;
} problem;

static void make_problem(problem *p, int64_t B, int64_t T, int64_t H, int64_t d, int64_t V,
                         int64_t m, la_random_feature kind, const int64_t *cu, int64_t ns,
                         la_rng *rng, double qk_std) {
    memset(p, 0, sizeof *p);
    p->dims = (la_dims){.B = B, .T = T, .H = H, .K = d, .V = V, .cu_seqlens = cu, .n_seqs = ns};
    p->m = m;
    p->M = la_rf_num_features(kind, m);
    p->N = cu ? ns : B;
    p->nqk = (size_t)(B * T * H * d);
    p->nv = (size_t)(B * T * H * V);
    p->nh = (size_t)(p->N * H);
    p->nz = p->nh * (size_t)p->M;
    p->ns = p->nz * (size_t)V;
    p->q = th_rand_floats(p->nqk, rng, qk_std);
    p->k = th_rand_floats(p->nqk, rng, qk_std);
    p->v = th_rand_floats(p->nv, rng, 1.0);
    p->d_o = th_rand_floats(p->nv, rng, 1.0);
    p->W = th_nan_floats((size_t)(m * d));
    la_projection_draw(p->W, m, d, LA_PROJ_ORTHOGONAL, LA_SCALING_CHI, 17);
    /* a state as a previous piece of the sequence could leave it: z > 0 */
    p->S0 = th_rand_floats(p->ns, rng, 0.3);
    p->z0 = th_nan_floats(p->nz);
    ref_fill_uniform(p->z0, p->nz, rng, 0.2, 1.0);
    p->mu0 = th_nan_floats(p->nh);
    ref_fill_uniform(p->mu0, p->nh, rng, -1.0, 0.5);
    p->dST = th_rand_floats(p->ns, rng, 1.0);
    p->dzT = th_rand_floats(p->nz, rng, 1.0);
}

static void free_problem(problem *p) {
    float *all[] = {p->q, p->k, p->v, p->W, p->d_o, p->S0, p->z0, p->mu0, p->dST, p->dzT};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
}

static la_rf_opts rf_of(int kind) {
    la_rf_opts rf = la_rf_opts_default();
    rf.kind = (la_random_feature)kind;
    rf.eps = kind == LA_RF_RELU ? 1e-3f : kind == LA_RF_FAVOR_POSITIVE ? 1e-4f : 0.0f;
    return rf;
}

static la_linear_attn_opts attn_of(la_form form, int64_t chunk) {
    la_linear_attn_opts a = la_linear_attn_opts_default();
    a.feature_map = LA_FEATURE_IDENTITY;
    a.normalize = 1;
    a.causal = 1;
    a.form = form;
    a.chunk_size = chunk;
    return a;
}

/* float64 reference over every (sequence, head). with_state: S0/z0/mu0 of
 * the problem; outputs in library layouts (fS, fz, fmu optional). Returns
 * the worst conditioning of the normalisation. */
static double ref_all(const problem *p, const la_rf_opts *rf, double eps, int with_state, double *o,
                      double *fS, double *fz, double *fmu) {
    const la_dims *dm = &p->dims;
    const int64_t H = dm->H, d = dm->K, V = dm->V, M = p->M, T = dm->T;
    double *Wd = ref_to_double(p->W, (size_t)(p->m * d));
    double *qs = th_doubles((size_t)(T * d)), *ks = th_doubles((size_t)(T * d));
    double *vs = th_doubles((size_t)(T * V)), *os = th_doubles((size_t)(T * V));
    double *sq = th_doubles((size_t)T), *mu = th_doubles((size_t)T);
    double *S0 = th_doubles((size_t)(M * V)), *z0 = th_doubles((size_t)M);
    double *ST = th_doubles((size_t)(M * V)), *zT = th_doubles((size_t)M);
    double worst = 1;
    for (int64_t n = 0; n < p->N; n++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t u = n * H + h;
            const int64_t L = ref_gather(qs, p->q, dm, n, h, H, d);
            ref_gather(ks, p->k, dm, n, h, H, d);
            ref_gather(vs, p->v, dm, n, h, H, V);
            for (int64_t i = 0; i < M * V; i++) S0[i] = p->S0[u * M * V + i];
            for (int64_t i = 0; i < M; i++) z0[i] = p->z0[u * M + i];
            double muT, cond = 1;
            ref_performer_causal(rf, eps, L, d, V, p->m, qs, ks, vs, Wd, with_state ? S0 : NULL,
                                 with_state ? z0 : NULL, with_state ? p->mu0[u] : -INFINITY, sq, mu,
                                 0, os, ST, zT, &muT, &cond);
            worst = fmax(worst, cond);
            ref_scatter(o, os, dm, n, h, H, V);
            if (fS)
                for (int64_t i = 0; i < M * V; i++) fS[u * M * V + i] = ST[i];
            if (fz)
                for (int64_t i = 0; i < M; i++) fz[u * M + i] = zT[i];
            if (fmu) fmu[u] = muT;
        }
    free(Wd);
    free(qs);
    free(ks);
    free(vs);
    free(os);
    free(sq);
    free(mu);
    free(S0);
    free(z0);
    free(ST);
    free(zT);
    return worst;
}

/* Relative error of a state against the reference, measured per (sequence,
 * head) slot against that slot's largest entry (slots have unrelated
 * scales: each is relative to its own key maximum). */
static double slot_err(const float *got, const double *want, size_t slots, size_t per) {
    double e = 0;
    for (size_t s = 0; s < slots; s++)
        e = fmax(e, ref_max_rel_err(got + s * per, want + s * per, per));
    return e;
}

static la_status fwd(la_ctx *ctx, const problem *p, const la_rf_opts *rf,
                     const la_linear_attn_opts *a, int with_state, float *o, float *fS, float *fz,
                     float *fmu) {
    return la_performer_attn_forward_state(ctx, rf, a, &p->dims, o, fS, fz, fmu, p->q, p->k, p->v,
                                           p->W, p->m, with_state ? p->S0 : NULL,
                                           with_state ? p->z0 : NULL, with_state ? p->mu0 : NULL);
}

/* Every kind x form (chunk 5 and 16, recurrent, parallel), with and without
 * an initial state, batched and packed: o, final state, norm and key max
 * against the reference; 1 == 2 threads bitwise. Bound 1e-5 times the
 * conditioning of the normalisation (as test_performer). */
static void test_forward(void) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 2024);
    const int64_t cu[] = {0, 5, 6, 29};
    double worst_o = 0, worst_s = 0;
    for (int kind = 0; kind <= LA_RF_RELU; kind++)
        for (int pi = 0; pi < 2; pi++) {
            problem p;
            if (pi == 0)
                make_problem(&p, 2, 23, 3, 8, 5, 11, kind, NULL, 0, &rng, 0.8);
            else
                make_problem(&p, 1, 29, 2, 6, 7, 9, kind, cu, 3, &rng, 0.8);
            const la_rf_opts rf = rf_of(kind);
            for (int ws = 0; ws < 2; ws++) {
                double *wo = th_doubles(p.nv), *wS = th_doubles(p.ns), *wz = th_doubles(p.nz);
                double *wmu = th_doubles(p.nh);
                const double cond =
                    ref_all(&p, &rf, LA_LINEAR_ATTN_DEFAULT_EPS, ws, wo, wS, wz, wmu);
                const struct {
                    la_form f;
                    int64_t c;
                } forms[] = {{LA_FORM_CHUNK, 5},
                             {LA_FORM_CHUNK, 16},
                             {LA_FORM_RECURRENT, 0},
                             {LA_FORM_PARALLEL, 0}};
                for (int fi = 0; fi < 4; fi++) {
                    const la_linear_attn_opts a = attn_of(forms[fi].f, forms[fi].c);
                    float *o = th_nan_floats(p.nv), *fS = th_nan_floats(p.ns);
                    float *fz = th_nan_floats(p.nz), *fmu = th_nan_floats(p.nh);
                    float *o2 = th_nan_floats(p.nv), *fS2 = th_nan_floats(p.ns);
                    CHECK_STATUS(fwd(c1, &p, &rf, &a, ws, o, fS, fz, fmu), LA_OK, "forward");
                    CHECK_STATUS(fwd(c2, &p, &rf, &a, ws, o2, fS2, NULL, NULL), LA_OK, "2 threads");
                    CHECK(th_bitwise_equal(o, o2, p.nv) && th_bitwise_equal(fS, fS2, p.ns),
                          "1 and 2 threads agree (%s %s)", KIND[kind], FORM[forms[fi].f]);
                    const double eo = ref_max_rel_err(o, wo, p.nv) / cond;
                    const double eS = slot_err(fS, wS, p.nh, (size_t)(p.M * p.dims.V));
                    const double ez = slot_err(fz, wz, p.nh, (size_t)p.M);
                    const double em = ref_max_rel_err(fmu, wmu, p.nh);
                    CHECK_ERR(eo, 1e-5, "o %s %s c%lld state=%d case %d", KIND[kind],
                              FORM[forms[fi].f], (long long)forms[fi].c, ws, pi);
                    CHECK_ERR(eS, 1e-5, "final_state %s %s state=%d case %d", KIND[kind],
                              FORM[forms[fi].f], ws, pi);
                    CHECK_ERR(ez, 1e-5, "final_norm %s %s state=%d case %d", KIND[kind],
                              FORM[forms[fi].f], ws, pi);
                    CHECK(em == 0, "final_key_max %s %s: exact (err %g)", KIND[kind],
                          FORM[forms[fi].f], em);
                    worst_o = fmax(worst_o, eo);
                    worst_s = fmax(worst_s, fmax(eS, ez));
                    free(o);
                    free(fS);
                    free(fz);
                    free(fmu);
                    free(o2);
                    free(fS2);
                }
                free(wo);
                free(wS);
                free(wz);
                free(wmu);
            }
            free_problem(&p);
        }
    printf("forward: worst o error / conditioning %.3g, worst state error %.3g\n", worst_o,
           worst_s);
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

/* A [B,T,H,D] tensor's tokens [t0, t0+L) of every batch row into a [B,L,H,D] one. */
static float *slice_t(const float *x, int64_t B, int64_t T, int64_t HD, int64_t t0, int64_t L) {
    float *y = th_nan_floats((size_t)(B * L * HD));
    for (int64_t b = 0; b < B; b++)
        memcpy(y + b * L * HD, x + (b * T + t0) * HD, (size_t)(L * HD) * sizeof(float));
    return y;
}

/* Two calls with the state carried (in place) == one call, for each form
 * and a split inside a chunk; and the key max grows between the pieces. */
static void test_split(void) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 51);
    double worst = 0;
    for (int kind = 0; kind <= LA_RF_RELU; kind++) {
        problem p;
        const int64_t B = 2, T = 31, H = 2, d = 6, V = 5;
        make_problem(&p, B, T, H, d, V, 7, kind, NULL, 0, &rng, 0.9);
        const la_rf_opts rf = rf_of(kind);
        for (int fi = 0; fi < 3; fi++) {
            const la_linear_attn_opts a = attn_of((la_form)fi, 8);
            float *o = th_nan_floats(p.nv), *fS = th_nan_floats(p.ns), *fz = th_nan_floats(p.nz);
            float *fmu = th_nan_floats(p.nh);
            CHECK_STATUS(fwd(ctx, &p, &rf, &a, 1, o, fS, fz, fmu), LA_OK, "whole");
            const int64_t T1 = 13, T2 = T - T1;
            float *S = th_nan_floats(p.ns), *z = th_nan_floats(p.nz), *mu = th_nan_floats(p.nh);
            memcpy(S, p.S0, p.ns * sizeof(float));
            memcpy(z, p.z0, p.nz * sizeof(float));
            memcpy(mu, p.mu0, p.nh * sizeof(float));
            float *oo = th_nan_floats(p.nv);
            int64_t t0 = 0;
            for (int piece = 0; piece < 2; piece++) {
                const int64_t L = piece ? T2 : T1;
                la_dims dd = th_dims(B, L, H, d, V);
                float *q = slice_t(p.q, B, T, H * d, t0, L), *k = slice_t(p.k, B, T, H * d, t0, L);
                float *v = slice_t(p.v, B, T, H * V, t0, L),
                      *ob = th_nan_floats((size_t)(B * L * H * V));
                CHECK_STATUS(la_performer_attn_forward_state(ctx, &rf, &a, &dd, ob, S, z, mu, q, k,
                                                             v, p.W, p.m, S, z, mu),
                             LA_OK, "piece");
                for (int64_t b = 0; b < B; b++)
                    memcpy(oo + (b * T + t0) * H * V, ob + b * L * H * V,
                           (size_t)(L * H * V) * sizeof(float));
                free(q);
                free(k);
                free(v);
                free(ob);
                t0 += L;
            }
            const double e =
                fmax(ref_max_rel_err_ff(oo, o, p.nv),
                     fmax(ref_max_rel_err_ff(S, fS, p.ns), ref_max_rel_err_ff(z, fz, p.nz)));
            CHECK_ERR(e, 1e-5, "split == whole (%s %s)", KIND[kind], FORM[fi]);
            CHECK(th_bitwise_equal(mu, fmu, p.nh), "split key max == whole (%s)", KIND[kind]);
            worst = fmax(worst, e);
            free(o);
            free(fS);
            free(fz);
            free(fmu);
            free(S);
            free(z);
            free(mu);
            free(oo);
        }
        free_problem(&p);
    }
    printf("split: worst difference two calls vs one %.3g\n", worst);
    la_ctx_destroy(ctx);
}

/* L = sum o.d_o + sum S_T.dST + sum z_T.dzT of one unit by the reference
 * with the stabilisers (sq, mu) held. */
static double unit_loss(const la_rf_opts *rf, double eps, int64_t T, int64_t d, int64_t V,
                        int64_t m, int64_t M, const double *q, const double *k, const double *v,
                        const double *W, const double *S0, const double *z0, double mu0, double *sq,
                        double *mu, const double *g, const double *dST, const double *dzT,
                        double *os, double *ST, double *zT) {
    ref_performer_causal(rf, eps, T, d, V, m, q, k, v, W, S0, z0, mu0, sq, mu, 1, os, ST, zT, NULL,
                         NULL);
    double l = 0;
    for (int64_t i = 0; i < T * V; i++) l += g[i] * os[i];
    for (int64_t i = 0; i < M * V; i++) l += dST[i] * ST[i];
    for (int64_t i = 0; i < M; i++) l += dzT[i] * zT[i];
    return l;
}

/* Gradients (dq, dk, dv, d_initial_state, d_initial_norm, with d_final_*
 * given) against central differences of the reference, stabilisers held;
 * chunk sizes 1, 3 and whole; 1 == 2 threads; d_initial aliasing d_final. */
static void test_backward(void) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 777);
    const int64_t cu[] = {0, 4, 11};
    double worst = 0, worst_ref = 0;
    for (int kind = 0; kind <= LA_RF_RELU; kind++)
        for (int pi = 0; pi < 2; pi++) {
            problem p;
            if (pi == 0)
                make_problem(&p, 2, 9, 2, 5, 3, 4, kind, NULL, 0, &rng, 0.8);
            else
                make_problem(&p, 1, 11, 2, 4, 3, 5, kind, cu, 2, &rng, 0.8);
            const la_dims *dm = &p.dims;
            const int64_t H = dm->H, d = dm->K, V = dm->V, M = p.M, T = dm->T;
            const la_rf_opts rf = rf_of(kind);
            const double eps = LA_LINEAR_ATTN_DEFAULT_EPS;
            /* reference gradients by central differences */
            double *wq = th_doubles(p.nqk), *wk = th_doubles(p.nqk), *wv = th_doubles(p.nv);
            double *wS = th_doubles(p.ns), *wz = th_doubles(p.nz);
            double *Wd = ref_to_double(p.W, (size_t)(p.m * d));
            double *qs = th_doubles((size_t)(T * d)), *ks = th_doubles((size_t)(T * d));
            double *vs = th_doubles((size_t)(T * V)), *gs = th_doubles((size_t)(T * V));
            double *os = th_doubles((size_t)(T * V)), *sq = th_doubles((size_t)T);
            double *mu = th_doubles((size_t)T), *g1 = th_doubles((size_t)(T * (d > V ? d : V)));
            double *S0 = th_doubles((size_t)(M * V)), *z0 = th_doubles((size_t)M);
            double *dS = th_doubles((size_t)(M * V)), *dz = th_doubles((size_t)M);
            double *ST = th_doubles((size_t)(M * V)), *zT = th_doubles((size_t)M);
            /* the analytic float64 backward, checked against the differences */
            double *aq = th_doubles(p.nqk), *ak = th_doubles(p.nqk), *av = th_doubles(p.nv);
            double *aS = th_doubles(p.ns), *az = th_doubles(p.nz);
            double *g2 = th_doubles((size_t)(T * d)), *g3 = th_doubles((size_t)(T * d));
            double *g4 = th_doubles((size_t)(T * V));
            for (int64_t n = 0; n < p.N; n++)
                for (int64_t h = 0; h < H; h++) {
                    const int64_t u = n * H + h;
                    const int64_t L = ref_gather(qs, p.q, dm, n, h, H, d);
                    ref_gather(ks, p.k, dm, n, h, H, d);
                    ref_gather(vs, p.v, dm, n, h, H, V);
                    ref_gather(gs, p.d_o, dm, n, h, H, V);
                    for (int64_t i = 0; i < M * V; i++) {
                        S0[i] = p.S0[u * M * V + i];
                        dS[i] = p.dST[u * M * V + i];
                    }
                    for (int64_t i = 0; i < M; i++) {
                        z0[i] = p.z0[u * M + i];
                        dz[i] = p.dzT[u * M + i];
                    }
                    const double mu0 = p.mu0[u];
                    ref_performer_causal(&rf, eps, L, d, V, p.m, qs, ks, vs, Wd, S0, z0, mu0, sq,
                                         mu, 0, os, NULL, NULL, NULL, NULL);
                    ref_performer_causal_backward(&rf, eps, L, d, V, p.m, qs, ks, vs, Wd, S0, z0,
                                                  mu0, sq, mu, gs, dS, dz, g2, g3, g4,
                                                  aS + u * M * V, az + u * M);
                    ref_scatter(aq, g2, dm, n, h, H, d);
                    ref_scatter(ak, g3, dm, n, h, H, d);
                    ref_scatter(av, g4, dm, n, h, H, V);
                    double *xs[5] = {qs, ks, vs, S0, z0};
                    const int64_t D[5] = {L * d, L * d, L * V, M * V, M};
                    for (int w = 0; w < 5; w++) {
                        for (int64_t i = 0; i < D[w]; i++) {
                            const double hs = 1e-6, keep = xs[w][i];
                            double l[2];
                            for (int sg = 0; sg < 2; sg++) {
                                xs[w][i] = keep + (sg ? -hs : hs);
                                l[sg] = unit_loss(&rf, eps, L, d, V, p.m, M, qs, ks, vs, Wd, S0, z0,
                                                  mu0, sq, mu, gs, dS, dz, os, ST, zT);
                            }
                            xs[w][i] = keep;
                            const double gval = (l[0] - l[1]) / (2 * hs);
                            if (w == 3)
                                wS[u * M * V + i] = gval;
                            else if (w == 4)
                                wz[u * M + i] = gval;
                            else
                                g1[i] = gval;
                        }
                        if (w < 3)
                            ref_scatter(w == 0   ? wq
                                        : w == 1 ? wk
                                                 : wv,
                                        g1, dm, n, h, H, w == 2 ? V : d);
                    }
                }
            {
                const double *an[5] = {aq, ak, av, aS, az}, *fd[5] = {wq, wk, wv, wS, wz};
                const size_t nn[5] = {p.nqk, p.nqk, p.nv, p.ns, p.nz};
                double e = 0, scale = 0;
                for (int w = 0; w < 5; w++) {
                    /* relative to the largest finite-difference gradient */
                    for (size_t i = 0; i < nn[w]; i++) scale = fmax(scale, fabs(fd[w][i]));
                    for (size_t i = 0; i < nn[w]; i++) e = fmax(e, fabs(an[w][i] - fd[w][i]));
                }
                CHECK_ERR(e / scale, 1e-6, "float64 analytic backward vs differences (%s case %d)",
                          KIND[kind], pi);
                worst_ref = fmax(worst_ref, e / scale);
            }
            for (int ci = 0; ci < 3; ci++) {
                const int64_t chunk = ci == 0 ? 1 : ci == 1 ? 3 : 0;
                const la_linear_attn_opts a =
                    attn_of(ci == 2 ? LA_FORM_PARALLEL : LA_FORM_CHUNK, chunk);
                float *dq = th_nan_floats(p.nqk), *dk = th_nan_floats(p.nqk),
                      *dv = th_nan_floats(p.nv);
                float *dS0 = th_nan_floats(p.ns), *dz0 = th_nan_floats(p.nz);
                float *dq2 = th_nan_floats(p.nqk), *dk2 = th_nan_floats(p.nqk),
                      *dv2 = th_nan_floats(p.nv);
                float *dSa = th_nan_floats(p.ns), *dza = th_nan_floats(p.nz);
                memcpy(dSa, p.dST, p.ns * sizeof(float));
                memcpy(dza, p.dzT, p.nz * sizeof(float));
                CHECK_STATUS(la_performer_attn_backward_state(c1, &rf, &a, dm, dq, dk, dv, dS0, dz0,
                                                              p.d_o, p.dST, p.dzT, p.q, p.k, p.v,
                                                              p.W, p.m, p.S0, p.z0, p.mu0),
                             LA_OK, "backward");
                /* 2 threads, d_initial_* in place of d_final_* */
                CHECK_STATUS(la_performer_attn_backward_state(c2, &rf, &a, dm, dq2, dk2, dv2, dSa,
                                                              dza, p.d_o, dSa, dza, p.q, p.k, p.v,
                                                              p.W, p.m, p.S0, p.z0, p.mu0),
                             LA_OK, "backward, 2 threads, aliased");
                CHECK(th_bitwise_equal(dq, dq2, p.nqk) && th_bitwise_equal(dk, dk2, p.nqk) &&
                          th_bitwise_equal(dv, dv2, p.nv) && th_bitwise_equal(dS0, dSa, p.ns) &&
                          th_bitwise_equal(dz0, dza, p.nz),
                      "backward: 1 == 2 threads, aliasing (%s)", KIND[kind]);
                const double e[5] = {ref_max_rel_err(dq, wq, p.nqk), ref_max_rel_err(dk, wk, p.nqk),
                                     ref_max_rel_err(dv, wv, p.nv), ref_max_rel_err(dS0, wS, p.ns),
                                     ref_max_rel_err(dz0, wz, p.nz)};
                static const char *NM[5] = {"dq", "dk", "dv", "d_initial_state", "d_initial_norm"};
                const double ea[5] = {ref_max_rel_err(dq, aq, p.nqk),
                                      ref_max_rel_err(dk, ak, p.nqk), ref_max_rel_err(dv, av, p.nv),
                                      ref_max_rel_err(dS0, aS, p.ns),
                                      ref_max_rel_err(dz0, az, p.nz)};
                for (int w = 0; w < 5; w++) {
                    CHECK_ERR(e[w], 1e-5, "%s %s chunk %lld case %d", NM[w], KIND[kind],
                              (long long)chunk, pi);
                    CHECK_ERR(ea[w], 1e-5, "%s vs analytic %s chunk %lld case %d", NM[w],
                              KIND[kind], (long long)chunk, pi);
                    worst = fmax(worst, fmax(e[w], ea[w]));
                }
                free(dq);
                free(dk);
                free(dv);
                free(dS0);
                free(dz0);
                free(dq2);
                free(dk2);
                free(dv2);
                free(dSa);
                free(dza);
            }
            double *fr[] = {wq, wk, wv, wS, wz, Wd, qs, ks, vs, gs, os, sq, mu, g1,
                            S0, z0, dS, dz, ST, zT, aq, ak, av, aS, az, g2, g3, g4};
            for (size_t i = 0; i < sizeof fr / sizeof *fr; i++) free(fr[i]);
            free_problem(&p);
        }
    printf("backward: worst gradient error vs finite differences / analytic float64 %.3g; "
           "analytic float64 vs differences %.3g\n",
           worst, worst_ref);
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

/* Scales token t of x [T,d] (one head) to norm nrm(t). */
static void set_norms(float *x, int64_t T, int64_t H, int64_t d, double (*nrm)(int64_t, int64_t),
                      int64_t Ttot) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            float *r = x + (t * H + h) * d;
            double n2 = 0;
            for (int64_t a = 0; a < d; a++) n2 += (double)r[a] * r[a];
            const double f = nrm(t, Ttot) / sqrt(n2);
            for (int64_t a = 0; a < d; a++) r[a] = (float)(r[a] * f);
        }
}
/* positive / hyperbolic: the largest exponent w.x' - |x'|^2/2 is very
 * negative for large |x'| and near its top for |x'| ~ |w|: norms that fall
 * from 60 to 4 make the running max grow by hundreds, and the jump at T/2
 * (60 -> 4) alone is ~400 (d = 16, x' = x/2). */
static double norm_falling(int64_t t, int64_t T) { return t < T / 2 ? 60.0 - 20.0 * t / T : 4.0; }
/* trig softmax: the exponent |x'|^2/2 grows with the norm: 1 -> 40, with a
 * jump at T/2 of ~150. */
static double norm_rising(int64_t t, int64_t T) { return t < T / 2 ? 1.0 + 10.0 * t / T : 40.0; }

/* Keys whose largest exponent grows over the sequence, with a jump that an
 * unrescaled state could not hold (exp(400) overflows float32; so would
 * exp(150)): the running max really grows (final key max minus the first
 * token's is checked), every form stays finite and matches the reference;
 * the chunk form with chunk 64 cuts its chunk at the jump. */
static void test_growing_keys(void) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 1234);
    const int kinds[] = {LA_RF_FAVOR_POSITIVE, LA_RF_FAVOR_HYPERBOLIC, LA_RF_TRIG_SOFTMAX};
    double worst = 0;
    for (int ki = 0; ki < 3; ki++) {
        const int kind = kinds[ki];
        problem p;
        const int64_t T = 150, H = 2, d = 16, V = 4;
        make_problem(&p, 1, T, H, d, V, 24, kind, NULL, 0, &rng, 1.0);
        set_norms(p.k, T, H, d, kind == LA_RF_TRIG_SOFTMAX ? norm_rising : norm_falling, T);
        set_norms(p.q, T, H, d, norm_falling, T);
        const la_rf_opts rf = rf_of(kind);
        double *wo = th_doubles(p.nv), *wS = th_doubles(p.ns), *wz = th_doubles(p.nz);
        double *wmu = th_doubles(p.nh);
        const double cond = ref_all(&p, &rf, LA_LINEAR_ATTN_DEFAULT_EPS, 0, wo, wS, wz, wmu);
        /* the first token's key max: the max after one token */
        la_dims d1 = th_dims(1, 1, H, d, V);
        float o1[2 * 4], mu1[2];
        CHECK_STATUS(la_performer_attn_forward_state(ctx, &rf, &(la_linear_attn_opts){0}, &d1, o1,
                                                     NULL, NULL, mu1, p.q, p.k, p.v, p.W, p.m, NULL,
                                                     NULL, NULL),
                     LA_ERR_INVALID_ARGUMENT, "zeroed attn opts: normalize 0 rejected");
        la_linear_attn_opts a1 = attn_of(LA_FORM_RECURRENT, 0);
        CHECK_STATUS(la_performer_attn_forward_state(ctx, &rf, &a1, &d1, o1, NULL, NULL, mu1, p.q,
                                                     p.k, p.v, p.W, p.m, NULL, NULL, NULL),
                     LA_OK, "first token");
        const struct {
            la_form f;
            int64_t c;
        } forms[] = {
            {LA_FORM_CHUNK, 64}, {LA_FORM_CHUNK, 7}, {LA_FORM_RECURRENT, 0}, {LA_FORM_PARALLEL, 0}};
        for (int fi = 0; fi < 4; fi++) {
            const la_linear_attn_opts a = attn_of(forms[fi].f, forms[fi].c);
            float *o = th_nan_floats(p.nv), *fS = th_nan_floats(p.ns), *fz = th_nan_floats(p.nz);
            float *fmu = th_nan_floats(p.nh);
            CHECK_STATUS(fwd(ctx, &p, &rf, &a, 0, o, fS, fz, fmu), LA_OK, "forward");
            CHECK(ref_count_nonfinite(o, p.nv) == 0 && ref_count_nonfinite(fS, p.ns) == 0,
                  "finite (%s %s)", KIND[kind], FORM[forms[fi].f]);
            for (int64_t h = 0; h < H; h++)
                CHECK(fmu[h] - mu1[h] > 100, "key max grew by %g (%s)", fmu[h] - mu1[h],
                      KIND[kind]);
            const double eo = ref_max_rel_err(o, wo, p.nv) / cond;
            const double eS = slot_err(fS, wS, p.nh, (size_t)(p.M * V));
            CHECK_ERR(eo, 1e-5, "o with growing keys (%s %s c%lld)", KIND[kind], FORM[forms[fi].f],
                      (long long)forms[fi].c);
            CHECK_ERR(eS, 1e-5, "final state with growing keys (%s %s)", KIND[kind],
                      FORM[forms[fi].f]);
            CHECK(ref_max_rel_err(fmu, wmu, p.nh) == 0, "key max (%s)", KIND[kind]);
            worst = fmax(worst, fmax(eo, eS));
            if (forms[fi].f == LA_FORM_CHUNK) { /* gradients stay finite too */
                float *dq = th_nan_floats(p.nqk), *dk = th_nan_floats(p.nqk),
                      *dv = th_nan_floats(p.nv);
                CHECK_STATUS(la_performer_attn_backward_state(ctx, &rf, &a, &p.dims, dq, dk, dv,
                                                              NULL, NULL, p.d_o, NULL, NULL, p.q,
                                                              p.k, p.v, p.W, p.m, NULL, NULL, NULL),
                             LA_OK, "backward");
                CHECK(ref_count_nonfinite(dq, p.nqk) == 0 && ref_count_nonfinite(dk, p.nqk) == 0 &&
                          ref_count_nonfinite(dv, p.nv) == 0,
                      "finite gradients (%s)", KIND[kind]);
                free(dq);
                free(dk);
                free(dv);
            }
            free(o);
            free(fS);
            free(fz);
            free(fmu);
        }
        free(wo);
        free(wS);
        free(wz);
        free(wmu);
        free_problem(&p);
    }
    printf("growing keys: worst error %.3g\n", worst);
    la_ctx_destroy(ctx);
}

/* Token-by-token decoding == the recurrent form bit for bit (o, state,
 * norm, key max), starting from a set state; == the chunk form and the
 * reference within rounding; reset; key max get/set. */
static void test_decoder(void) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 606);
    for (int kind = 0; kind <= LA_RF_RELU; kind++) {
        problem p;
        const int64_t B = 3, T = 17, H = 2, d = 8, V = 5;
        make_problem(&p, B, T, H, d, V, 9, kind, NULL, 0, &rng, 1.0);
        if (kind != LA_RF_TRIG_GAUSSIAN && kind != LA_RF_RELU) /* the max grows mid-sequence */
            set_norms(p.k, B * T, H, d, kind == LA_RF_TRIG_SOFTMAX ? norm_rising : norm_falling,
                      B * T);
        const la_rf_opts rf = rf_of(kind);
        const la_linear_attn_opts ar = attn_of(LA_FORM_RECURRENT, 0),
                                  ac = attn_of(LA_FORM_CHUNK, 6);
        float *o = th_nan_floats(p.nv), *fS = th_nan_floats(p.ns), *fz = th_nan_floats(p.nz);
        float *fmu = th_nan_floats(p.nh), *oc = th_nan_floats(p.nv);
        CHECK_STATUS(fwd(ctx, &p, &rf, &ar, 1, o, fS, fz, fmu), LA_OK, "recurrent");
        CHECK_STATUS(fwd(ctx, &p, &rf, &ac, 1, oc, NULL, NULL, NULL), LA_OK, "chunk");
        la_decoder_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.op = LA_OP_PERFORMER;
        cfg.N = B;
        cfg.H = H;
        cfg.K = d;
        cfg.V = V;
        cfg.rf = rf;
        cfg.rf_W = p.W;
        cfg.rf_m = p.m;
        la_decoder *dec = NULL;
        CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_OK, "create");
        if (!dec) continue;
        float *mu = th_nan_floats(p.nh);
        CHECK_STATUS(la_decoder_get_key_max(dec, mu), LA_OK, "get key max");
        const int stab = kind != LA_RF_TRIG_GAUSSIAN && kind != LA_RF_RELU;
        CHECK(mu[0] == (stab ? -INFINITY : 0.0f), "fresh key max %g (%s)", mu[0], KIND[kind]);
        CHECK_STATUS(la_decoder_set_state(dec, p.S0, p.z0), LA_OK, "set state");
        CHECK_STATUS(la_decoder_set_key_max(dec, p.mu0), LA_OK, "set key max");
        float *od = th_nan_floats(p.nv);
        float *qt = th_nan_floats((size_t)(B * H * d)), *kt = th_nan_floats((size_t)(B * H * d));
        float *vt = th_nan_floats((size_t)(B * H * V)), *ot = th_nan_floats((size_t)(B * H * V));
        for (int64_t t = 0; t < T; t++) {
            for (int64_t b = 0; b < B; b++) {
                memcpy(qt + b * H * d, p.q + (b * T + t) * H * d, (size_t)(H * d) * sizeof(float));
                memcpy(kt + b * H * d, p.k + (b * T + t) * H * d, (size_t)(H * d) * sizeof(float));
                memcpy(vt + b * H * V, p.v + (b * T + t) * H * V, (size_t)(H * V) * sizeof(float));
            }
            CHECK_STATUS(la_decoder_step(ctx, dec, ot, qt, kt, vt, NULL, NULL, NULL), LA_OK,
                         "step");
            for (int64_t b = 0; b < B; b++)
                memcpy(od + (b * T + t) * H * V, ot + b * H * V, (size_t)(H * V) * sizeof(float));
        }
        float *S = th_nan_floats(p.ns), *z = th_nan_floats(p.nz);
        CHECK_STATUS(la_decoder_get_state(dec, S, z), LA_OK, "get state");
        CHECK_STATUS(la_decoder_get_key_max(dec, mu), LA_OK, "get key max");
        CHECK(th_bitwise_equal(od, o, p.nv) && th_bitwise_equal(S, fS, p.ns) &&
                  th_bitwise_equal(z, fz, p.nz) && th_bitwise_equal(mu, fmu, p.nh),
              "decoding == recurrent form, bit for bit (%s)", KIND[kind]);
        double *wo = th_doubles(p.nv);
        const double cond = ref_all(&p, &rf, LA_LINEAR_ATTN_DEFAULT_EPS, 1, wo, NULL, NULL, NULL);
        CHECK_ERR(ref_max_rel_err(od, wo, p.nv) / cond, 1e-5, "decoding vs reference (%s)",
                  KIND[kind]);
        CHECK_ERR(ref_max_rel_err(oc, wo, p.nv) / cond, 1e-5, "chunk vs reference (%s)",
                  KIND[kind]);
        { /* prefill T1 tokens with the chunk form, decode the rest from its state */
            const int64_t T1 = 9;
            la_dims d1 = th_dims(B, T1, H, d, V);
            float *q1 = slice_t(p.q, B, T, H * d, 0, T1), *k1 = slice_t(p.k, B, T, H * d, 0, T1);
            float *v1 = slice_t(p.v, B, T, H * V, 0, T1);
            float *o1 = th_nan_floats((size_t)(B * T1 * H * V));
            CHECK_STATUS(la_performer_attn_forward_state(ctx, &rf, &ac, &d1, o1, S, z, mu, q1, k1,
                                                         v1, p.W, p.m, p.S0, p.z0, p.mu0),
                         LA_OK, "prefill");
            CHECK_STATUS(la_decoder_set_state(dec, S, z), LA_OK, "set state");
            CHECK_STATUS(la_decoder_set_key_max(dec, mu), LA_OK, "set key max");
            float *op = th_nan_floats(p.nv);
            for (int64_t b = 0; b < B; b++)
                memcpy(op + b * T * H * V, o1 + b * T1 * H * V,
                       (size_t)(T1 * H * V) * sizeof(float));
            for (int64_t t = T1; t < T; t++) {
                for (int64_t b = 0; b < B; b++) {
                    memcpy(qt + b * H * d, p.q + (b * T + t) * H * d,
                           (size_t)(H * d) * sizeof(float));
                    memcpy(kt + b * H * d, p.k + (b * T + t) * H * d,
                           (size_t)(H * d) * sizeof(float));
                    memcpy(vt + b * H * V, p.v + (b * T + t) * H * V,
                           (size_t)(H * V) * sizeof(float));
                }
                CHECK_STATUS(la_decoder_step(ctx, dec, ot, qt, kt, vt, NULL, NULL, NULL), LA_OK,
                             "step");
                for (int64_t b = 0; b < B; b++)
                    memcpy(op + (b * T + t) * H * V, ot + b * H * V,
                           (size_t)(H * V) * sizeof(float));
            }
            CHECK_ERR(ref_max_rel_err(op, wo, p.nv) / cond, 1e-5,
                      "chunk prefill + decoding vs reference (%s)", KIND[kind]);
            free(q1);
            free(k1);
            free(v1);
            free(o1);
            free(op);
        }
        CHECK_STATUS(la_decoder_reset(dec), LA_OK, "reset");
        CHECK_STATUS(la_decoder_get_key_max(dec, mu), LA_OK, "get key max");
        CHECK_STATUS(la_decoder_get_state(dec, S, z), LA_OK, "get state");
        CHECK(mu[p.nh - 1] == (stab ? -INFINITY : 0.0f) && S[0] == 0 && z[p.nz - 1] == 0,
              "reset (%s)", KIND[kind]);
        { /* one slot moved in (state, norm, key max) decodes as if the whole
           * decoder held that state: slot B-1's outputs bit for bit */
            const int64_t n = B - 1, M = p.M;
            const size_t sn = (size_t)(H * M * V), zn = (size_t)(H * M);
            float *mus = th_nan_floats((size_t)H), *o1 = th_nan_floats((size_t)(B * H * V));
            CHECK_STATUS(la_decoder_set_slot_state(dec, n, fS + n * sn, fz + n * zn), LA_OK,
                         "set slot state");
            CHECK_STATUS(la_decoder_set_slot_key_max(dec, n, fmu + n * H), LA_OK,
                         "set slot key max");
            CHECK_STATUS(la_decoder_get_slot_key_max(dec, n, mus), LA_OK, "get slot key max");
            CHECK(th_bitwise_equal(mus, fmu + n * H, (size_t)H), "slot key max round trip (%s)",
                  KIND[kind]);
            CHECK_STATUS(la_decoder_get_key_max(dec, mu), LA_OK, "get key max");
            CHECK(mu[0] == (stab ? -INFINITY : 0.0f), "other slots untouched (%s)", KIND[kind]);
            CHECK_STATUS(la_decoder_step(ctx, dec, o1, qt, kt, vt, NULL, NULL, NULL), LA_OK,
                         "step slot");
            CHECK_STATUS(la_decoder_set_state(dec, fS, fz), LA_OK, "set state");
            CHECK_STATUS(la_decoder_set_key_max(dec, fmu), LA_OK, "set key max");
            CHECK_STATUS(la_decoder_step(ctx, dec, ot, qt, kt, vt, NULL, NULL, NULL), LA_OK,
                         "step all");
            CHECK(th_bitwise_equal(o1 + n * H * V, ot + n * H * V, (size_t)(H * V)),
                  "moved slot decodes like the whole state, bit for bit (%s)", KIND[kind]);
            /* refused: bad slot, NULL, NaN / +Inf (slot unchanged) */
            CHECK_STATUS(la_decoder_set_slot_key_max(dec, B, mus), LA_ERR_INVALID_ARGUMENT,
                         "slot N");
            CHECK_STATUS(la_decoder_get_slot_key_max(dec, -1, mus), LA_ERR_INVALID_ARGUMENT,
                         "slot -1");
            CHECK_STATUS(la_decoder_set_slot_key_max(dec, n, NULL), LA_ERR_NULL_POINTER, "NULL");
            CHECK_STATUS(la_decoder_get_slot_key_max(dec, n, mus), LA_OK, "get slot key max");
            const float keep = mus[H - 1];
            mus[H - 1] = NAN;
            CHECK_STATUS(la_decoder_set_slot_key_max(dec, n, mus), LA_ERR_NON_FINITE, "NaN");
            mus[H - 1] = INFINITY;
            CHECK_STATUS(la_decoder_set_slot_key_max(dec, n, mus), LA_ERR_NON_FINITE, "+Inf");
            CHECK_STATUS(la_decoder_get_slot_key_max(dec, n, mus), LA_OK, "get slot key max");
            CHECK(mus[H - 1] == keep, "slot key max unchanged after refused sets (%s)", KIND[kind]);
            CHECK_STATUS(la_decoder_reset_slot(dec, n), LA_OK, "reset slot");
            CHECK_STATUS(la_decoder_get_slot_key_max(dec, n, mus), LA_OK, "get slot key max");
            CHECK(mus[0] == (stab ? -INFINITY : 0.0f), "reset_slot resets the key max (%s)",
                  KIND[kind]);
            CHECK_STATUS(la_decoder_reset(dec), LA_OK, "reset");
            free(mus);
            free(o1);
        }
        /* bad calls leave the state alone */
        float bad[6] = {0, 0, 0, NAN, 0, 0};
        CHECK_STATUS(la_decoder_set_key_max(dec, bad), LA_ERR_NON_FINITE, "key max NaN");
        bad[3] = INFINITY;
        CHECK_STATUS(la_decoder_set_key_max(dec, bad), LA_ERR_NON_FINITE, "key max +Inf");
        CHECK_STATUS(la_decoder_get_key_max(dec, mu), LA_OK, "get key max");
        CHECK(mu[3] == (stab ? -INFINITY : 0.0f), "unchanged after a refused set");
        CHECK_STATUS(la_decoder_step(ctx, dec, ot, qt, kt, vt, qt, NULL, NULL),
                     LA_ERR_INVALID_ARGUMENT, "g given to Performer");
        la_decoder_destroy(dec);
        float *fr[] = {o, fS, fz, fmu, oc, mu, od, qt, kt, vt, ot, S, z};
        for (size_t i = 0; i < sizeof fr / sizeof *fr; i++) free(fr[i]);
        free(wo);
        free_problem(&p);
    }
    /* creation errors; key max of another op */
    la_decoder_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.op = LA_OP_PERFORMER;
    cfg.N = 1;
    cfg.H = 1;
    cfg.K = 4;
    cfg.V = 2;
    cfg.rf = la_rf_opts_default();
    cfg.rf_m = 3;
    float W[12] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 1.0f, 1.1f, 1.2f};
    la_decoder *dec = NULL;
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_ERR_NULL_POINTER, "rf_W NULL");
    CHECK(strstr(la_last_error(), "rf_W") != NULL, "names rf_W: %s", la_last_error());
    cfg.rf_W = W;
    cfg.rf_m = 0;
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_ERR_INVALID_SIZE, "rf_m 0");
    cfg.rf_m = 3;
    W[5] = NAN;
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_ERR_NON_FINITE, "W NaN");
    W[5] = 0.6f;
    cfg.rf.kind = (la_random_feature)9;
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_ERR_INVALID_ARGUMENT, "rf kind");
    cfg.rf.kind = LA_RF_FAVOR_POSITIVE;
    cfg.HV = 2;
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_ERR_SHAPE_MISMATCH, "value heads");
    cfg.HV = 0;
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_OK, "create");
    W[0] = 1e6f; /* the decoder owns a copy of W */
    float q[4] = {0.1f, 0.2f, -0.3f, 0.4f}, v[2] = {1, 2}, o[2] = {NAN, NAN};
    CHECK_STATUS(la_decoder_step(ctx, dec, o, q, q, v, NULL, NULL, NULL), LA_OK, "step");
    CHECK(isfinite(o[0]) && isfinite(o[1]), "step after the caller's W changed: finite");
    la_decoder_destroy(dec);
    cfg.op = LA_OP_LINEAR_ATTN;
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_OK, "linear");
    float mu1[1];
    CHECK_STATUS(la_decoder_get_key_max(dec, mu1), LA_ERR_INVALID_ARGUMENT, "no key max");
    CHECK_STATUS(la_decoder_set_slot_key_max(dec, 0, mu1), LA_ERR_INVALID_ARGUMENT,
                 "no slot key max");
    la_decoder_destroy(dec);
    cfg.op = (la_op)(LA_OP_PERFORMER + 1);
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_ERR_INVALID_ARGUMENT, "an la_op past the last");
    la_ctx_destroy(ctx);
}

/* Bad arguments: an error naming the argument, and nothing written. */
static void test_bad_args(void) {
    la_ctx *ctx = th_ctx(1);
    la_rng rng;
    la_rng_seed(&rng, 8);
    problem p;
    make_problem(&p, 1, 6, 2, 4, 3, 5, LA_RF_FAVOR_POSITIVE, NULL, 0, &rng, 1.0);
    const la_rf_opts rf = rf_of(LA_RF_FAVOR_POSITIVE);
    la_linear_attn_opts a = attn_of(LA_FORM_CHUNK, 4);
    float *o = th_nan_floats(p.nv), *fS = th_nan_floats(p.ns), *fz = th_nan_floats(p.nz);
    float *fmu = th_nan_floats(p.nh), *dq = th_nan_floats(p.nqk), *dk = th_nan_floats(p.nqk);
    float *dv = th_nan_floats(p.nv), *dS = th_nan_floats(p.ns), *dz = th_nan_floats(p.nz);
#define UNTOUCHED()                                                                                \
    CHECK(th_untouched(o, p.nv) && th_untouched(fS, p.ns) && th_untouched(fz, p.nz) &&             \
              th_untouched(fmu, p.nh) && th_untouched(dq, p.nqk) && th_untouched(dk, p.nqk) &&     \
              th_untouched(dv, p.nv) && th_untouched(dS, p.ns) && th_untouched(dz, p.nz),          \
          "outputs untouched")
#define BOTH(attnp, S0, z0, mu0, want, name, what)                                                 \
    do {                                                                                           \
        CHECK_STATUS(la_performer_attn_forward_state(ctx, &rf, attnp, &p.dims, o, fS, fz, fmu,     \
                                                     p.q, p.k, p.v, p.W, p.m, S0, z0, mu0),        \
                     want, what " (forward)");                                                     \
        CHECK(strstr(la_last_error(), name) != NULL, "names %s: %s", name, la_last_error());       \
        CHECK_STATUS(la_performer_attn_backward_state(ctx, &rf, attnp, &p.dims, dq, dk, dv, dS,    \
                                                      dz, p.d_o, p.dST, p.dzT, p.q, p.k, p.v, p.W, \
                                                      p.m, S0, z0, mu0),                           \
                     want, what " (backward)");                                                    \
        CHECK(strstr(la_last_error(), name) != NULL, "names %s: %s", name, la_last_error());       \
        UNTOUCHED();                                                                               \
    } while (0)
    BOTH(&a, p.S0, p.z0, NULL, LA_ERR_NULL_POINTER, "initial_key_max", "state without key max");
    BOTH(&a, NULL, p.z0, NULL, LA_ERR_NULL_POINTER, "initial_key_max", "norm without key max");
    p.mu0[1] = NAN;
    BOTH(&a, p.S0, p.z0, p.mu0, LA_ERR_NON_FINITE, "initial_key_max", "key max NaN");
    p.mu0[1] = INFINITY;
    BOTH(&a, p.S0, p.z0, p.mu0, LA_ERR_NON_FINITE, "initial_key_max", "key max +Inf");
    p.mu0[1] = 0.25f;
    p.S0[7] = NAN;
    BOTH(&a, p.S0, p.z0, p.mu0, LA_ERR_NON_FINITE, "initial_state", "S0 NaN");
    p.S0[7] = 0.5f;
    p.z0[2] = INFINITY;
    BOTH(&a, p.S0, p.z0, p.mu0, LA_ERR_NON_FINITE, "initial_norm", "z0 Inf");
    p.z0[2] = 0.5f;
    p.q[3] = NAN;
    BOTH(&a, p.S0, p.z0, p.mu0, LA_ERR_NON_FINITE, "q", "q NaN");
    p.q[3] = 0.5f;
    la_linear_attn_opts b = a;
    b.causal = 0;
    BOTH(&b, p.S0, p.z0, p.mu0, LA_ERR_INVALID_ARGUMENT, "causal", "state with causal = 0");
    b = a;
    b.eps = -1;
    BOTH(&b, p.S0, p.z0, p.mu0, LA_ERR_INVALID_ARGUMENT, "eps", "eps -1");
    b = a;
    b.chunk_size = -1;
    BOTH(&b, p.S0, p.z0, p.mu0, LA_ERR_INVALID_ARGUMENT, "chunk_size", "chunk_size -1");
    b = a;
    b.form = (la_form)7;
    BOTH(&b, p.S0, p.z0, p.mu0, LA_ERR_INVALID_ARGUMENT, "form", "form 7");
    p.dST[4] = NAN;
    CHECK_STATUS(la_performer_attn_backward_state(ctx, &rf, &a, &p.dims, dq, dk, dv, dS, dz, p.d_o,
                                                  p.dST, p.dzT, p.q, p.k, p.v, p.W, p.m, p.S0, p.z0,
                                                  p.mu0),
                 LA_ERR_NON_FINITE, "d_final_state NaN");
    CHECK(strstr(la_last_error(), "d_final_state") != NULL, "names d_final_state");
    UNTOUCHED();
    p.dST[4] = 0.5f;
    /* -INFINITY is a legal key max: the initial state is empty */
    for (size_t i = 0; i < p.nh; i++) p.mu0[i] = -INFINITY;
    float *o2 = th_nan_floats(p.nv);
    CHECK_STATUS(la_performer_attn_forward_state(ctx, &rf, &a, &p.dims, o, NULL, NULL, NULL, p.q,
                                                 p.k, p.v, p.W, p.m, p.S0, p.z0, p.mu0),
                 LA_OK, "key max -inf");
    CHECK_STATUS(la_performer_attn_forward(ctx, &rf, &a, &p.dims, o2, p.q, p.k, p.v, p.W, p.m),
                 LA_OK, "no state");
    CHECK(th_bitwise_equal(o, o2, p.nv), "an initial state at key max -inf is empty");
    /* without a stabiliser initial_key_max is not read (0 is the max) */
    la_rf_opts r0 = rf;
    r0.stabilize = 0;
    CHECK_STATUS(la_performer_attn_forward_state(ctx, &r0, &a, &p.dims, o, NULL, NULL, fmu, p.q,
                                                 p.k, p.v, p.W, p.m, p.S0, p.z0, NULL),
                 LA_OK, "stabilize 0: no key max needed");
    CHECK(fmu[0] == 0 && fmu[p.nh - 1] == 0, "stabilize 0: final key max 0");
#undef BOTH
#undef UNTOUCHED
    float *fr[] = {o, o2, fS, fz, fmu, dq, dk, dv, dS, dz};
    for (size_t i = 0; i < sizeof fr / sizeof *fr; i++) free(fr[i]);
    free_problem(&p);
    la_ctx_destroy(ctx);
}

/* Zero-length sequences in cu_seqlens: nothing written for them, final
 * state, norm and key max = initial; d_initial_* = d_final_*; the other
 * sequences match the reference. */
static void test_zero_length(void) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 90);
    const int64_t cu[] = {0, 0, 7, 7, 12};
    problem p;
    make_problem(&p, 1, 12, 2, 4, 3, 5, LA_RF_FAVOR_POSITIVE, cu, 4, &rng, 0.8);
    const la_rf_opts rf = rf_of(LA_RF_FAVOR_POSITIVE);
    const la_linear_attn_opts a = attn_of(LA_FORM_CHUNK, 3);
    float *o = th_nan_floats(p.nv), *fS = th_nan_floats(p.ns), *fz = th_nan_floats(p.nz);
    float *fmu = th_nan_floats(p.nh);
    CHECK_STATUS(fwd(ctx, &p, &rf, &a, 1, o, fS, fz, fmu), LA_OK, "zero-length sequences");
    double *wo = th_doubles(p.nv);
    const double cond = ref_all(&p, &rf, LA_LINEAR_ATTN_DEFAULT_EPS, 1, wo, NULL, NULL, NULL);
    CHECK_ERR(ref_max_rel_err(o, wo, p.nv) / cond, 1e-5, "o with empty sequences");
    const int64_t H = 2, MV = p.M * 3;
    const int64_t empty[] = {0, 2};
    for (int e = 0; e < 2; e++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t u = empty[e] * H + h;
            CHECK(th_bitwise_equal(fS + u * MV, p.S0 + u * MV, (size_t)MV) &&
                      th_bitwise_equal(fz + u * p.M, p.z0 + u * p.M, (size_t)p.M) &&
                      fmu[u] == p.mu0[u],
                  "empty sequence %lld: final = initial", (long long)empty[e]);
        }
    float *dq = th_nan_floats(p.nqk), *dk = th_nan_floats(p.nqk), *dv = th_nan_floats(p.nv);
    float *dS = th_nan_floats(p.ns), *dz = th_nan_floats(p.nz);
    CHECK_STATUS(la_performer_attn_backward_state(ctx, &rf, &a, &p.dims, dq, dk, dv, dS, dz, p.d_o,
                                                  p.dST, p.dzT, p.q, p.k, p.v, p.W, p.m, p.S0, p.z0,
                                                  p.mu0),
                 LA_OK, "backward with empty sequences");
    for (int e = 0; e < 2; e++) {
        const int64_t u = empty[e] * H;
        CHECK(th_bitwise_equal(dS + u * MV, p.dST + u * MV, (size_t)(H * MV)) &&
                  th_bitwise_equal(dz + u * p.M, p.dzT + u * p.M, (size_t)(H * p.M)),
              "empty sequence: d_initial = d_final");
    }
    CHECK(ref_count_nonfinite(dq, p.nqk) == 0 && ref_count_nonfinite(dv, p.nv) == 0,
          "gradients written");
    float *fr[] = {o, fS, fz, fmu, dq, dk, dv, dS, dz};
    for (size_t i = 0; i < sizeof fr / sizeof *fr; i++) free(fr[i]);
    free(wo);
    free_problem(&p);
    la_ctx_destroy(ctx);
}

int main(void) {
    test_forward();
    test_split();
    test_backward();
    test_growing_keys();
    test_decoder();
    test_bad_args();
    test_zero_length();
    return th_summary("test_performer_rnn");
}
