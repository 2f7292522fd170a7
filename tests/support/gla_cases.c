/* Shared by the simple-GLA, GLA and GLA-decoder tests (gla_cases.h):
 * random cases, the float64 reference run over every (sequence, head), the
 * library calls, and error bookkeeping. */

#include "gla_cases.h"

#include "ref_gla.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gc_check_err(double err, double tol, const char *file, int line, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    th_check(err <= tol, file, line, "err %.3g > tol %.3g: %s", err, tol, msg);
    /* cpu-sgla19: every error against its bound, to compare two builds */
    if (getenv("GC_VERBOSE")) printf("  err %.3e tol %.1e %s\n", err, tol, msg);
}

/* Log-gates in [-0.3, 0): decays between 0.74 and 1, so a 1000-token
 * sequence still remembers its recent past. */
static float *gc_gates(size_t n, la_rng *rng) {
    float *g = malloc(n * sizeof *g);
    ref_fill_uniform(g, n, rng, -0.3, 0.0);
    return g;
}

/* cu (nseq + 1 entries) may be NULL; then B sequences of T tokens. */
gcase gc_make(int per_key, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                     const int64_t *cu, int64_t nseq, int flags, la_rng *rng) {
    gcase c;
    memset(&c, 0, sizeof c);
    c.per_key = per_key;
    c.d = (la_dims){.B = B, .T = T, .H = H, .K = K, .V = V};
    if (cu) {
        c.cu = malloc((size_t)(nseq + 1) * sizeof *cu);
        memcpy(c.cu, cu, (size_t)(nseq + 1) * sizeof *cu);
        c.d.cu_seqlens = c.cu;
        c.d.n_seqs = nseq;
    }
    c.N = cu ? nseq : B;
    c.H = H;
    c.K = K;
    c.V = V;
    const size_t bth = (size_t)(B * T * H);
    c.nqk = bth * (size_t)K;
    c.nv = bth * (size_t)V;
    c.ng = per_key ? c.nqk : bth;
    c.ns = (size_t)(c.N * H * K * V);
    c.q = th_rand_floats(c.nqk, rng, 1.0);
    c.k = th_rand_floats(c.nqk, rng, 1.0);
    c.v = th_rand_floats(c.nv, rng, 1.0);
    if (per_key || (flags & GC_G)) c.g = gc_gates(c.ng, rng);
    if (!per_key && (flags & GC_GAMMA)) {
        c.gamma = malloc((size_t)H * sizeof *c.gamma);
        la_retnet_decay(c.gamma, H);
    }
    if (flags & GC_S0) c.s0 = th_rand_floats(c.ns, rng, 0.5);
    c.d_o = th_rand_floats(c.nv, rng, 1.0);
    if (flags & GC_DST) c.d_sT = th_rand_floats(c.ns, rng, 0.5);
    return c;
}

void gc_free(gcase *c) {
    free(c->cu);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->g);
    free(c->gamma);
    free(c->s0);
    free(c->d_o);
    free(c->d_sT);
}

la_gated_opts gc_opts(la_form form, int64_t chunk) {
    la_gated_opts o = la_gated_opts_default();
    o.form = form;
    o.chunk_size = chunk;
    return o;
}

la_status gc_fwd(const gcase *c, la_ctx *ctx, const la_gated_opts *o, float *out,
                        float *sT) {
    if (c->per_key)
        return la_gla_forward(ctx, o, &c->d, out, sT, c->q, c->k, c->v, c->g, c->s0);
    return la_simple_gla_forward(ctx, o, &c->d, out, sT, c->q, c->k, c->v, c->g, c->gamma,
                                 c->s0);
}

la_status gc_bwd(const gcase *c, la_ctx *ctx, const la_gated_opts *o, float *dq,
                        float *dk, float *dv, float *dg, float *dgam, float *ds0) {
    if (c->per_key)
        return la_gla_backward(ctx, o, &c->d, dq, dk, dv, dg, ds0, c->d_o, c->d_sT, c->q, c->k,
                               c->v, c->g, c->s0);
    return la_simple_gla_backward(ctx, o, &c->d, dq, dk, dv, dg, dgam, ds0, c->d_o, c->d_sT,
                                  c->q, c->k, c->v, c->g, c->gamma, c->s0);
}

static void gc_slice_state(double *dst, const float *s, int64_t idx, size_t KV) {
    for (size_t i = 0; i < KV; i++) dst[i] = s ? (double)s[(size_t)idx * KV + i] : 0.0;
}

static gref gc_ref(const gcase *c, int backward) {
    gref r;
    memset(&r, 0, sizeof r);
    const int64_t K = c->K, V = c->V, H = c->H, T = c->d.T, gw = c->per_key ? K : 1;
    const size_t KV = (size_t)(K * V);
    const double scale = 1.0 / sqrt((double)K);
    r.o = th_doubles(c->nv);
    r.sT = th_doubles(c->ns);
    if (backward) {
        r.dq = th_doubles(c->nqk);
        r.dk = th_doubles(c->nqk);
        r.dv = th_doubles(c->nv);
        r.dg = th_doubles(c->ng);
        r.dgam = th_doubles((size_t)H);
        r.dgam_abs = th_doubles((size_t)H);
        r.ds0 = th_doubles(c->ns);
    }
    double *q = th_doubles((size_t)(T * K)), *k = th_doubles((size_t)(T * K));
    double *v = th_doubles((size_t)(T * V)), *g = th_doubles((size_t)(T * gw));
    double *o = th_doubles((size_t)(T * V)), *dout = th_doubles((size_t)(T * V));
    double *dq = th_doubles((size_t)(T * K)), *dk = th_doubles((size_t)(T * K));
    double *dv = th_doubles((size_t)(T * V)), *dg = th_doubles((size_t)(T * gw));
    double *s0 = th_doubles(KV), *sT = th_doubles(KV), *dsT = th_doubles(KV),
           *ds0 = th_doubles(KV);
    for (int64_t n = 0; n < c->N; n++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t idx = n * H + h;
            const int64_t len = ref_gather(q, c->q, &c->d, n, h, H, K);
            ref_gather(k, c->k, &c->d, n, h, H, K);
            ref_gather(v, c->v, &c->d, n, h, H, V);
            if (c->g) ref_gather(g, c->g, &c->d, n, h, H, gw);
            gc_slice_state(s0, c->s0, idx, KV);
            const double gam = c->gamma ? (double)c->gamma[h] : 0.0;
            ref_gla_forward(c->per_key, len, K, V, scale, q, k, v, c->g ? g : NULL, gam, s0, o,
                            sT);
            ref_scatter(r.o, o, &c->d, n, h, H, V);
            memcpy(r.sT + (size_t)idx * KV, sT, KV * sizeof *sT);
            if (!backward) continue;
            ref_gather(dout, c->d_o, &c->d, n, h, H, V);
            gc_slice_state(dsT, c->d_sT, idx, KV);
            double dgam = 0;
            if (ref_gla_backward(c->per_key, len, K, V, scale, q, k, v, c->g ? g : NULL, gam,
                                 s0, dout, dsT, dq, dk, dv, dg, &dgam, ds0)) {
                fprintf(stderr, "reference out of memory\n");
                abort();
            }
            ref_scatter(r.dq, dq, &c->d, n, h, H, K);
            ref_scatter(r.dk, dk, &c->d, n, h, H, K);
            ref_scatter(r.dv, dv, &c->d, n, h, H, V);
            if (c->g) ref_scatter(r.dg, dg, &c->d, n, h, H, gw);
            r.dgam[h] += dgam;
            if (!c->per_key)
                for (int64_t t = 0; t < len; t++) r.dgam_abs[h] += fabs(dg[t]);
            memcpy(r.ds0 + (size_t)idx * KV, ds0, KV * sizeof *ds0);
        }
    free(q); free(k); free(v); free(g); free(o); free(dout); free(dq); free(dk); free(dv);
    free(dg); free(s0); free(sT); free(dsT); free(ds0);
    return r;
}

static void gref_free(gref *r) {
    free(r->o); free(r->sT); free(r->dq); free(r->dk); free(r->dv); free(r->dg);
    free(r->dgam); free(r->ds0);
    free(r->dgam_abs);
}

gout gout_alloc(const gcase *c) {
    gout r;
    r.o = th_nan_floats(c->nv);
    r.sT = th_nan_floats(c->ns);
    r.dq = th_nan_floats(c->nqk);
    r.dk = th_nan_floats(c->nqk);
    r.dv = th_nan_floats(c->nv);
    r.dg = th_nan_floats(c->ng);
    r.dgam = th_nan_floats((size_t)c->H);
    r.ds0 = th_nan_floats(c->ns);
    return r;
}

void gout_free(gout *r) {
    free(r->o); free(r->sT); free(r->dq); free(r->dk); free(r->dv); free(r->dg);
    free(r->dgam); free(r->ds0);
}

/* Runs forward and backward; returns 0 if both returned LA_OK. */
static int gc_run(const gcase *c, la_ctx *ctx, const la_gated_opts *o, gout *r) {
    la_status st = gc_fwd(c, ctx, o, r->o, r->sT);
    if (st) {
        CHECK_STATUS(st, LA_OK, "forward");
        return 1;
    }
    st = gc_bwd(c, ctx, o, r->dq, r->dk, r->dv, c->g ? r->dg : NULL,
                c->per_key ? NULL : r->dgam, r->ds0);
    if (st) {
        CHECK_STATUS(st, LA_OK, "backward");
        return 1;
    }
    return 0;
}

/* Worst errors seen, printed at the end of a test program. */
static double gc_worst_rms[8], gc_worst_max[8], gc_worst_cond;
static const char *const gc_names[8] = {"o", "final_state", "dq", "dk", "dv", "dg",
                                        "dg_gamma", "d_initial_state"};

/* Relative RMS <= rms_tol and max-relative <= max_tol (see the callers for
 * why those bounds). */
static void gc_cmp(int which, const float *got, const double *want, size_t n, double rms_tol,
                   double max_tol, const char *what) {
    const double e_rms = ref_rms_rel_err(got, want, n), e_max = ref_max_rel_err(got, want, n);
    if (!(e_rms <= gc_worst_rms[which])) gc_worst_rms[which] = e_rms;
    if (!(e_max <= gc_worst_max[which])) gc_worst_max[which] = e_max;
    GC_CHECK_ERR(e_rms, rms_tol, "%s %s rel-RMS", what, gc_names[which]);
    GC_CHECK_ERR(e_max, max_tol, "%s %s max-rel", what, gc_names[which]);
    CHECK(ref_count_nonfinite(got, n) == 0, "%s %s all finite", what, gc_names[which]);
}

/* Every output of the case against the reference. */
static void gc_cmp_all(const gcase *c, const gout *r, const gref *w, int backward,
                       double rms_tol, double max_tol, const char *what) {
    gc_cmp(0, r->o, w->o, c->nv, rms_tol, max_tol, what);
    gc_cmp(1, r->sT, w->sT, c->ns, rms_tol, max_tol, what);
    if (!backward) return;
    gc_cmp(2, r->dq, w->dq, c->nqk, rms_tol, max_tol, what);
    gc_cmp(3, r->dk, w->dk, c->nqk, rms_tol, max_tol, what);
    gc_cmp(4, r->dv, w->dv, c->nv, rms_tol, max_tol, what);
    if (c->g) gc_cmp(5, r->dg, w->dg, c->ng, rms_tol, max_tol, what);
    if (!c->per_key) {
        /* dg_gamma sums the gate gradient over every token: where those terms
         * cancel, the float32 error of each term stays while the sum shrinks,
         * so it is measured against sum_t |dg_t| (the sum's condition), with
         * the same bound; plain relative errors are recorded for the report. */
        double cond = 0;
        for (int64_t h = 0; h < c->H; h++) {
            const double e = fabs((double)r->dgam[h] - w->dgam[h]) /
                             (w->dgam_abs[h] > 1e-300 ? w->dgam_abs[h] : 1e-300);
            if (!(e <= cond)) cond = e;
        }
        GC_CHECK_ERR(cond, rms_tol, "%s dg_gamma error / sum_t |dg_t|", what);
        const double e_rms = ref_rms_rel_err(r->dgam, w->dgam, (size_t)c->H),
                     e_max = ref_max_rel_err(r->dgam, w->dgam, (size_t)c->H);
        if (!(e_rms <= gc_worst_rms[6])) gc_worst_rms[6] = e_rms;
        if (!(e_max <= gc_worst_max[6])) gc_worst_max[6] = e_max;
        if (!(cond <= gc_worst_cond)) gc_worst_cond = cond;
    }
    gc_cmp(7, r->ds0, w->ds0, c->ns, rms_tol, max_tol, what);
}

void gc_print_worst(const char *suite) {
    printf("%s: worst errors against float64 (rel-RMS / max-rel):\n", suite);
    for (int i = 0; i < 8; i++)
        printf("  %-16s %.3g / %.3g\n", gc_names[i], gc_worst_rms[i], gc_worst_max[i]);
    printf("  dg_gamma error / sum_t |dg_t|: %.3g\n", gc_worst_cond);
}

/* ---- the float64 reference against central finite differences ------- */

static double fd_loss(int per_key, int64_t T, int64_t K, int64_t V, const double *q,
                      const double *k, const double *v, const double *g, double gamma,
                      const double *s0, const double *d_o, const double *d_sT) {
    double o[64 * 8], sT[8 * 8];
    ref_gla_forward(per_key, T, K, V, 0.7, q, k, v, g, gamma, s0, o, sT);
    double L = 0;
    for (int64_t i = 0; i < T * V; i++) L += o[i] * d_o[i];
    for (int64_t i = 0; i < K * V; i++) L += sT[i] * d_sT[i];
    return L;
}

/* Every input element perturbed by +-1e-5: central differences are exact to
 * about 1e-10 relative here (third derivative times eps^2, plus rounding
 * 1e-16/eps; measured 2e-11 .. 3.4e-10), so 1e-8 relative to the largest
 * gradient leaves a margin of 30 and still catches any wrong term. */
void gla_test_ref_fd(int per_key) {
    enum { T = 7, K = 3, V = 4 };
    la_rng rng;
    la_rng_seed(&rng, 11 + (uint64_t)per_key);
    const int64_t gw = per_key ? K : 1;
    double q[T * K], k[T * K], v[T * V], g[T * K], s0[K * V], d_o[T * V], d_sT[K * V];
    double gamma = -0.1;
    for (int i = 0; i < T * K; i++) q[i] = la_rng_normal(&rng);
    for (int i = 0; i < T * K; i++) k[i] = la_rng_normal(&rng);
    for (int i = 0; i < T * V; i++) v[i] = la_rng_normal(&rng);
    for (int i = 0; i < T * gw; i++) g[i] = -0.5 * la_rng_uniform(&rng);
    for (int i = 0; i < K * V; i++) s0[i] = la_rng_normal(&rng);
    for (int i = 0; i < T * V; i++) d_o[i] = la_rng_normal(&rng);
    for (int i = 0; i < K * V; i++) d_sT[i] = la_rng_normal(&rng);
    double dq[T * K], dk[T * K], dv[T * V], dg[T * K], ds0[K * V], dgam = 0;
    CHECK(ref_gla_backward(per_key, T, K, V, 0.7, q, k, v, g, gamma, s0, d_o, d_sT, dq, dk, dv,
                           dg, &dgam, ds0) == 0, "reference backward");
    struct { double *x, *dx; int n; const char *name; } p[] = {
        {q, dq, T * K, "q"}, {k, dk, T * K, "k"}, {v, dv, T * V, "v"},
        {g, dg, (int)(T * gw), "g"}, {s0, ds0, K * V, "s0"}, {&gamma, &dgam, per_key ? 0 : 1,
        "gamma"}};
    const double eps = 1e-5;
    for (size_t a = 0; a < sizeof p / sizeof p[0]; a++) {
        double num = 0, den = 0;
        for (int i = 0; i < p[a].n; i++) {
            const double x0 = p[a].x[i];
            p[a].x[i] = x0 + eps;
            const double lp = fd_loss(per_key, T, K, V, q, k, v, g, gamma, s0, d_o, d_sT);
            p[a].x[i] = x0 - eps;
            const double lm = fd_loss(per_key, T, K, V, q, k, v, g, gamma, s0, d_o, d_sT);
            p[a].x[i] = x0;
            const double fd = (lp - lm) / (2 * eps);
            if (fabs(fd - p[a].dx[i]) > num) num = fabs(fd - p[a].dx[i]);
            if (fabs(fd) > den) den = fabs(fd);
        }
        if (p[a].n) GC_CHECK_ERR(num / den, 1e-8, "%s reference d%s vs finite differences",
                              per_key ? "GLA" : "simple GLA", p[a].name);
    }
}

/* ---- float32 forms against the float64 reference --------------------- */

/* Bounds of the sweeps: every output and gradient within 5e-6 relative RMS
 * and 1e-5 max-relative (normalised by the largest reference element) of
 * float64. Float32 rounding of the O(K), O(V) and O(C) dot products and of
 * the state carried over up to 1000 tokens gives at most about 8e-7 on both
 * measures (see the worst errors printed at the end). */
#define GC_RMS 5e-6
#define GC_MAX 1e-5

static const la_form gc_forms[] = {LA_FORM_RECURRENT, LA_FORM_CHUNK, LA_FORM_CHUNK,
                                   LA_FORM_CHUNK};
static const int64_t gc_chunks[] = {0, 16, 32, 64};

void gc_check_forms(const gcase *c, la_ctx *ctx, const char *label) {
    gref w = gc_ref(c, 1);
    for (int f = 0; f < 4; f++) {
        la_gated_opts o = gc_opts(gc_forms[f], gc_chunks[f]);
        gout r = gout_alloc(c);
        char what[160];
        snprintf(what, sizeof what, "%s %s T=%lld K=%lld V=%lld C=%lld", label,
                 f ? "chunk" : "recurrent", (long long)c->d.T, (long long)c->K,
                 (long long)c->V, (long long)gc_chunks[f]);
        if (!gc_run(c, ctx, &o, &r)) gc_cmp_all(c, &r, &w, 1, GC_RMS, GC_MAX, what);
        gout_free(&r);
    }
    gref_free(&w);
}

/* Small T: every K, V in {16, 60, 64, 100, 128} (K != V included) at
 * T = 65, and at T in {1, 63, 64, 65} for K = V and (60, 100), (100, 60);
 * B = 2, H = 1 (H > 1 elsewhere). full = 0 keeps two pairs, (16, 16)
 * and (60, 100), for the extra gate combinations (keeps the sanitizer run
 * short). */
void gla_test_sweep(int per_key, int flags, uint64_t seed, int full) {
    static const int64_t dims[] = {16, 60, 64, 100, 128};
    static const int64_t Ts[] = {1, 63, 64, 65};
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, seed);
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 5; b++) {
            /* All T for the diagonal and a few off-diagonal pairs; T = 65 elsewhere. */
            const int all_t = a == b || (a == 1 && b == 3) || (a == 3 && b == 1);
            if (!full && !((a == 0 && b == 0) || (a == 1 && b == 3))) continue;
            for (int t = all_t ? 0 : 3; t < 4; t++) {
                gcase c = gc_make(per_key, 2, Ts[t], 1, dims[a], dims[b], NULL, 0, flags, &rng);
                gc_check_forms(&c, ctx, per_key ? "GLA" : "simple GLA");
                gc_free(&c);
            }
        }
    la_ctx_destroy(ctx);
}

/* T = 1000 at the first n_sizes of (64, 64), (60, 100), (16, 128)
 * (B = 1, H = 2). */
void gla_test_long(int per_key, int flags, uint64_t seed, int n_sizes) {
    static const int64_t kv[][2] = {{64, 64}, {60, 100}, {16, 128}};
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, seed);
    for (int i = 0; i < n_sizes && i < 3; i++) {
        gcase c = gc_make(per_key, 1, 1000, 2, kv[i][0], kv[i][1], NULL, 0, flags, &rng);
        gc_check_forms(&c, ctx, per_key ? "GLA long" : "simple GLA long");
        gc_free(&c);
    }
    la_ctx_destroy(ctx);
}

/* Odd chunk sizes (1, 7, larger than T) and a sequence long enough (5000)
 * for the recurrent backward to checkpoint every ceil(sqrt(T)) = 71 tokens
 * instead of 64: same bounds against float64. */
void gla_test_odd_chunks(int per_key, int flags, uint64_t seed) {
    static const int64_t chunks[] = {1, 7, 100};
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, seed);
    gcase c = gc_make(per_key, 2, 37, 2, 12, 20, NULL, 0, flags, &rng);
    gref w = gc_ref(&c, 1);
    for (int i = 0; i < 3; i++) {
        la_gated_opts o = gc_opts(LA_FORM_CHUNK, chunks[i]);
        gout r = gout_alloc(&c);
        char what[96];
        snprintf(what, sizeof what, "%s chunk T=37 C=%lld", per_key ? "GLA" : "simple GLA",
                 (long long)chunks[i]);
        if (!gc_run(&c, ctx, &o, &r)) gc_cmp_all(&c, &r, &w, 1, GC_RMS, GC_MAX, what);
        gout_free(&r);
    }
    gref_free(&w);
    gc_free(&c);
    c = gc_make(per_key, 1, 5000, 2, 8, 8, NULL, 0, flags, &rng);
    gc_check_forms(&c, ctx, per_key ? "GLA T=5000" : "simple GLA T=5000");
    gc_free(&c);
    la_ctx_destroy(ctx);
}

/* ---- structure: varlen, pieces, threads ------------------------------ */

/* Copies rows [t0, t0 + n) of every head of a [1, T, H, D] tensor. */
static float *rows(const float *x, int64_t t0, int64_t n, int64_t H, int64_t D) {
    if (!x) return NULL;
    float *y = malloc((size_t)(n * H * D) * sizeof *y);
    memcpy(y, x + (size_t)(t0 * H * D), (size_t)(n * H * D) * sizeof *y);
    return y;
}

/* A single sequence [t0, t0 + n) of a packed case, as its own B = 1 case;
 * state slot `slot` of s0 / d_sT. */
static gcase gc_sub(const gcase *c, int64_t t0, int64_t n, int64_t slot) {
    gcase s = *c;
    const int64_t H = c->H, K = c->K, V = c->V, gw = c->per_key ? K : 1;
    s.d = (la_dims){.B = 1, .T = n, .H = H, .K = K, .V = V};
    s.cu = NULL;
    s.N = 1;
    s.nqk = (size_t)(n * H * K);
    s.nv = (size_t)(n * H * V);
    s.ng = (size_t)(n * H * gw);
    s.ns = (size_t)(H * K * V);
    s.q = rows(c->q, t0, n, H, K);
    s.k = rows(c->k, t0, n, H, K);
    s.v = rows(c->v, t0, n, H, V);
    s.g = rows(c->g, t0, n, H, gw);
    s.d_o = rows(c->d_o, t0, n, H, V);
    s.s0 = c->s0 ? rows(c->s0, slot, 1, H, K * V) : NULL;
    s.d_sT = c->d_sT ? rows(c->d_sT, slot, 1, H, K * V) : NULL;
    if (c->gamma) {
        s.gamma = malloc((size_t)H * sizeof *s.gamma);
        memcpy(s.gamma, c->gamma, (size_t)H * sizeof *s.gamma);
    }
    return s;
}

/* A packed batch equals running each sequence alone, bit for bit: the work
 * of one (sequence, head) does not depend on the others (chunks start at each
 * sequence's first token). */
void gla_test_varlen(int per_key, int flags, uint64_t seed) {
    static const int64_t cu[] = {0, 5, 70, 71, 150};
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, seed);
    const int64_t H = 2, K = 20, V = 12;
    gcase c = gc_make(per_key, 1, 150, H, K, V, cu, 4, flags, &rng);
    for (int f = 0; f < 4; f++) {
        la_gated_opts o = gc_opts(gc_forms[f], gc_chunks[f]);
        gout r = gout_alloc(&c);
        if (gc_run(&c, ctx, &o, &r)) {
            gout_free(&r);
            continue;
        }
        int same = 1;
        double gsum[2] = {0, 0};
        for (int64_t n = 0; n < 4; n++) {
            const int64_t t0 = cu[n], len = cu[n + 1] - cu[n];
            gcase s = gc_sub(&c, t0, len, n);
            gout a = gout_alloc(&s);
            if (!gc_run(&s, ctx, &o, &a)) {
                const int64_t gw = per_key ? K : 1;
                same &= th_bitwise_equal(a.o, r.o + t0 * H * V, s.nv);
                same &= th_bitwise_equal(a.sT, r.sT + n * H * K * V, s.ns);
                same &= th_bitwise_equal(a.dq, r.dq + t0 * H * K, s.nqk);
                same &= th_bitwise_equal(a.dk, r.dk + t0 * H * K, s.nqk);
                same &= th_bitwise_equal(a.dv, r.dv + t0 * H * V, s.nv);
                if (c.g) same &= th_bitwise_equal(a.dg, r.dg + t0 * H * gw, s.ng);
                same &= th_bitwise_equal(a.ds0, r.ds0 + n * H * K * V, s.ns);
                if (!per_key)
                    for (int h = 0; h < 2; h++) gsum[h] += a.dgam[h];
            }
            gout_free(&a);
            gc_free(&s);
        }
        CHECK(same, "%s varlen form %d equals each sequence alone (bitwise)",
              per_key ? "GLA" : "simple GLA", f);
        if (!per_key) /* dg_gamma sums over the sequences: float sum of partials. */
            for (int h = 0; h < 2; h++)
                CHECK(fabs(r.dgam[h] - gsum[h]) <= 1e-5 * (fabs(gsum[h]) + 1),
                      "varlen dg_gamma[%d] %g vs sum of parts %g", h, r.dgam[h], gsum[h]);
        gout_free(&r);
    }
    gc_free(&c);
    la_ctx_destroy(ctx);
}

/* Two pieces (final state -> initial state, and d_initial_state of the second
 * -> d_final_state of the first) equal the whole, bit for bit, when the cut
 * falls on a chunk boundary (64 is a multiple of every chunk size used). */
void gla_test_pieces(int per_key, int flags, uint64_t seed) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, seed);
    const int64_t H = 3, K = 16, V = 24, T = 150, cut = 64;
    gcase c = gc_make(per_key, 1, T, H, K, V, NULL, 0, flags | GC_S0 | GC_DST, &rng);
    for (int f = 0; f < 4; f++) {
        la_gated_opts o = gc_opts(gc_forms[f], gc_chunks[f]);
        gout r = gout_alloc(&c);
        if (gc_run(&c, ctx, &o, &r)) {
            gout_free(&r);
            continue;
        }
        gcase p1 = gc_sub(&c, 0, cut, 0), p2 = gc_sub(&c, cut, T - cut, 0);
        gout a = gout_alloc(&p1), b = gout_alloc(&p2);
        CHECK_STATUS(gc_fwd(&p1, ctx, &o, a.o, a.sT), LA_OK, "piece 1 forward");
        free(p2.s0);
        p2.s0 = malloc(p2.ns * sizeof(float));
        memcpy(p2.s0, a.sT, p2.ns * sizeof(float));
        CHECK_STATUS(gc_fwd(&p2, ctx, &o, b.o, b.sT), LA_OK, "piece 2 forward");
        CHECK_STATUS(gc_bwd(&p2, ctx, &o, b.dq, b.dk, b.dv, p2.g ? b.dg : NULL,
                            per_key ? NULL : b.dgam, b.ds0), LA_OK, "piece 2 backward");
        free(p1.d_sT);
        p1.d_sT = malloc(p1.ns * sizeof(float));
        memcpy(p1.d_sT, b.ds0, p1.ns * sizeof(float));
        CHECK_STATUS(gc_bwd(&p1, ctx, &o, a.dq, a.dk, a.dv, p1.g ? a.dg : NULL,
                            per_key ? NULL : a.dgam, a.ds0), LA_OK, "piece 1 backward");
        const int64_t gw = per_key ? K : 1;
        int same = th_bitwise_equal(a.o, r.o, p1.nv) &&
                   th_bitwise_equal(b.o, r.o + cut * H * V, p2.nv) &&
                   th_bitwise_equal(b.sT, r.sT, c.ns) &&
                   th_bitwise_equal(a.dq, r.dq, p1.nqk) &&
                   th_bitwise_equal(b.dq, r.dq + cut * H * K, p2.nqk) &&
                   th_bitwise_equal(a.dk, r.dk, p1.nqk) &&
                   th_bitwise_equal(b.dk, r.dk + cut * H * K, p2.nqk) &&
                   th_bitwise_equal(a.dv, r.dv, p1.nv) &&
                   th_bitwise_equal(b.dv, r.dv + cut * H * V, p2.nv) &&
                   th_bitwise_equal(a.ds0, r.ds0, c.ns);
        if (c.g)
            same = same && th_bitwise_equal(a.dg, r.dg, p1.ng) &&
                   th_bitwise_equal(b.dg, r.dg + cut * H * gw, p2.ng);
        CHECK(same, "%s form %d: two pieces equal the whole (bitwise)",
              per_key ? "GLA" : "simple GLA", f);
        gout_free(&a);
        gout_free(&b);
        gc_free(&p1);
        gc_free(&p2);
        gout_free(&r);
    }
    gc_free(&c);
    la_ctx_destroy(ctx);
}

/* 1 and 2 threads give bit-identical results (dg_gamma included). */
void gla_test_threads(int per_key, int flags, uint64_t seed) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, seed);
    gcase c = gc_make(per_key, 3, 77, 3, 24, 20, NULL, 0, flags, &rng);
    for (int f = 0; f < 4; f++) {
        la_gated_opts o = gc_opts(gc_forms[f], gc_chunks[f]);
        gout a = gout_alloc(&c), b = gout_alloc(&c);
        if (!gc_run(&c, c1, &o, &a) && !gc_run(&c, c2, &o, &b)) {
            int same = th_bitwise_equal(a.o, b.o, c.nv) && th_bitwise_equal(a.sT, b.sT, c.ns) &&
                       th_bitwise_equal(a.dq, b.dq, c.nqk) &&
                       th_bitwise_equal(a.dk, b.dk, c.nqk) &&
                       th_bitwise_equal(a.dv, b.dv, c.nv) &&
                       th_bitwise_equal(a.ds0, b.ds0, c.ns) &&
                       (!c.g || th_bitwise_equal(a.dg, b.dg, c.ng)) &&
                       (per_key || th_bitwise_equal(a.dgam, b.dgam, (size_t)c.H));
            CHECK(same, "%s form %d: 1 and 2 threads bitwise equal",
                  per_key ? "GLA" : "simple GLA", f);
        }
        gout_free(&a);
        gout_free(&b);
    }
    gc_free(&c);
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

/* ---- chunk backward: every state kept vs two-level checkpoints (cpu-gla3) */

/* The chunk backward keeps every chunk's start state when they fit
 * (la__gla_bwd_all_states_bytes, 32 MiB: every case of these tests) and
 * otherwise recomputes them group by group. With the limit set to 0 the
 * second path runs: against float64 (every form, varlen, s0, d_sT, resets)
 * and bit for bit equal to the first (the recomputation is exact). */
extern size_t la__gla_bwd_all_states_bytes;

void gla_test_ckpt_paths(int per_key, uint64_t seed) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, seed);
    const size_t keep = la__gla_bwd_all_states_bytes;
    const int64_t cu[] = {0, 37, 200, 389};
    for (int v = 0; v < 2; v++) {
        gcase c = v ? gc_make(per_key, 1, 389, 2, 24, 20, cu, 3, GC_ALL, &rng)
                    : gc_make(per_key, 2, 333, 2, 24, 20, NULL, 0, GC_ALL, &rng);
        if (v) /* resets inside the second sequence */
            for (int64_t t = 90; t < 200; t += 31)
                for (size_t x = 0; x < (per_key ? 24u : 1u); x++)
                    c.g[(size_t)(t * 2) * (per_key ? 24u : 1u) + x] = -1e4f;
        la__gla_bwd_all_states_bytes = 0;
        gc_check_forms(&c, ctx, per_key ? "GLA two-level checkpoints" : "simple GLA two-level checkpoints");
        for (int f = 1; f < 4; f++) {
            la_gated_opts o = gc_opts(gc_forms[f], gc_chunks[f]);
            gout a = gout_alloc(&c), b = gout_alloc(&c);
            la__gla_bwd_all_states_bytes = 0;
            const int fa = gc_run(&c, ctx, &o, &a);
            la__gla_bwd_all_states_bytes = keep;
            if (!fa && !gc_run(&c, ctx, &o, &b)) {
                int same = th_bitwise_equal(a.dq, b.dq, c.nqk) &&
                           th_bitwise_equal(a.dk, b.dk, c.nqk) &&
                           th_bitwise_equal(a.dv, b.dv, c.nv) &&
                           th_bitwise_equal(a.ds0, b.ds0, c.ns) &&
                           th_bitwise_equal(a.dg, b.dg, c.ng) &&
                           (per_key || th_bitwise_equal(a.dgam, b.dgam, (size_t)c.H));
                CHECK(same, "%s chunk %d varlen %d: every state kept = two-level, bit for bit",
                      per_key ? "GLA" : "simple GLA", (int)gc_chunks[f], v);
            }
            gout_free(&a);
            gout_free(&b);
        }
        la__gla_bwd_all_states_bytes = keep;
        gc_free(&c);
    }
    la_ctx_destroy(ctx);
}

/* ---- extreme gates ---------------------------------------------------- */

/* g = 0 everywhere (no decay: plain linear attention, states grow) and
 * g = -1e4 (full reset) at random positions: same bounds against float64,
 * nothing non-finite, and after a reset the output equals a fresh start. */
void gla_test_extreme(int per_key, uint64_t seed) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, seed);
    const int64_t H = 2, K = 32, V = 24, T = 200, gw = per_key ? K : 1;
    const char *name = per_key ? "GLA" : "simple GLA";
    /* g = 0 */
    gcase c = gc_make(per_key, 1, T, H, K, V, NULL, 0, GC_ALL, &rng);
    for (size_t i = 0; i < c.ng; i++) c.g[i] = 0.0f;
    gc_check_forms(&c, ctx, per_key ? "GLA g=0" : "simple GLA g=0");
    /* resets: about 3% of the tokens (every key of the token for GLA) */
    for (size_t i = 0; i < c.ng; i++) c.g[i] = (float)(-0.3 * la_rng_uniform(&rng));
    const int64_t reset_at = 100; /* one sure reset, mid-chunk for every chunk size */
    for (int64_t t = 0; t < T; t++) {
        const int reset = t == reset_at || la_rng_uniform(&rng) < 0.03;
        if (!reset) continue;
        for (int64_t h = 0; h < H; h++)
            for (int64_t x = 0; x < gw; x++) c.g[(size_t)((t * H + h) * gw + x)] = -1e4f;
    }
    gc_check_forms(&c, ctx, per_key ? "GLA resets" : "simple GLA resets");
    /* After the reset at token 100, outputs equal a fresh start from there. */
    gcase tail = gc_sub(&c, reset_at, T - reset_at, 0);
    free(tail.s0);
    tail.s0 = NULL;
    for (int f = 0; f < 4; f++) {
        la_gated_opts o = gc_opts(gc_forms[f], gc_chunks[f]);
        float *whole = th_nan_floats(c.nv), *fresh = th_nan_floats(tail.nv);
        CHECK_STATUS(gc_fwd(&c, ctx, &o, whole, NULL), LA_OK, "reset whole");
        CHECK_STATUS(gc_fwd(&tail, ctx, &o, fresh, NULL), LA_OK, "reset fresh");
        /* exp(-1e4) is exactly 0 in float, so the past contributes exact
         * zeros; only the summation order (chunk boundaries) differs. */
        const double err = ref_max_rel_err_ff(whole + reset_at * H * V, fresh, tail.nv);
        GC_CHECK_ERR(err, f == 0 ? 0.0 : 1e-5, "%s form %d: output after a reset = fresh start",
                  name, f);
        free(whole);
        free(fresh);
    }
    gc_free(&tail);
    gc_free(&c);
    la_ctx_destroy(ctx);
}

/* ---- bad input --------------------------------------------------------- */

/* Each bad call must return `want`, leave every output NaN, and set a
 * message naming the op. */
static void gc_expect_bad(const gcase *c, la_ctx *ctx, const la_gated_opts *o, int backward,
                          la_status want, const char *what) {
    gout r = gout_alloc(c);
    la_status st = backward ? gc_bwd(c, ctx, o, r.dq, r.dk, r.dv, r.dg, c->per_key ? NULL : r.dgam,
                                     r.ds0)
                            : gc_fwd(c, ctx, o, r.o, r.sT);
    CHECK_STATUS(st, want, what);
    CHECK(strstr(la_last_error(), c->per_key ? "la_gla_" : "la_simple_gla_") != NULL,
          "%s: message names the op: %s", what, la_last_error());
    const int untouched = th_untouched(r.o, c->nv) && th_untouched(r.sT, c->ns) &&
                          th_untouched(r.dq, c->nqk) && th_untouched(r.dk, c->nqk) &&
                          th_untouched(r.dv, c->nv) && th_untouched(r.dg, c->ng) &&
                          th_untouched(r.dgam, (size_t)c->H) && th_untouched(r.ds0, c->ns);
    CHECK(untouched, "%s: outputs untouched", what);
    gout_free(&r);
}

void gla_test_bad(int per_key) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 99);
    gcase c = gc_make(per_key, 1, 10, 2, 8, 8, NULL, 0, GC_ALL, &rng);
    la_gated_opts ok = gc_opts(LA_FORM_CHUNK, 0);
    for (int bw = 0; bw < 2; bw++) {
        gcase b = c;
        la_gated_opts o = ok;
        /* options */
        o.form = LA_FORM_PARALLEL; /* 0 means the chunk form: it reads chunk_size */
        o.chunk_size = -1;
        gc_expect_bad(&b, ctx, &o, bw, LA_ERR_INVALID_ARGUMENT, "form 0 with chunk_size -1");
        o.chunk_size = ok.chunk_size;
        o.form = (la_form)7;
        gc_expect_bad(&b, ctx, &o, bw, LA_ERR_INVALID_ARGUMENT, "form unknown");
        o = ok;
        o.chunk_size = -1;
        gc_expect_bad(&b, ctx, &o, bw, LA_ERR_INVALID_ARGUMENT, "chunk_size -1");
        o = ok;
        o.scale = NAN;
        gc_expect_bad(&b, ctx, &o, bw, LA_ERR_INVALID_ARGUMENT, "scale NaN");
        /* tensors */
        b.q = NULL;
        gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_NULL_POINTER, "q NULL");
        b = c;
        b.v = NULL;
        gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_NULL_POINTER, "v NULL");
        b = c;
        if (per_key) {
            b.g = NULL;
            gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_NULL_POINTER, "GLA g NULL");
        }
        b = c;
        float *g2 = malloc(c.ng * sizeof *g2);
        memcpy(g2, c.g, c.ng * sizeof *g2);
        b.g = g2;
        g2[c.ng / 2] = NAN;
        gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_NON_FINITE, "g NaN");
        g2[c.ng / 2] = 0.25f;
        gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_INVALID_ARGUMENT, "g positive");
        g2[c.ng / 2] = -INFINITY;
        gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_NON_FINITE, "g -Inf");
        free(g2);
        b = c;
        float *k2 = malloc(c.nqk * sizeof *k2);
        memcpy(k2, c.k, c.nqk * sizeof *k2);
        k2[3] = INFINITY;
        b.k = k2;
        gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_NON_FINITE, "k Inf");
        free(k2);
        b = c;
        float *s2 = malloc(c.ns * sizeof *s2);
        memcpy(s2, c.s0, c.ns * sizeof *s2);
        s2[c.ns - 1] = NAN;
        b.s0 = s2;
        gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_NON_FINITE, "initial_state NaN");
        free(s2);
        /* shapes */
        b = c;
        b.d.HV = 4;
        gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_SHAPE_MISMATCH, "HV != H");
        b = c;
        b.d.K = 0;
        gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_INVALID_SIZE, "K = 0");
        b = c;
        static const int64_t bad_cu[] = {0, 6, 5, 10};
        b.d.cu_seqlens = bad_cu;
        b.d.n_seqs = 3;
        gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_BAD_SEQLENS, "cu_seqlens decreasing");
        static const int64_t short_cu[] = {0, 4, 9};
        b.d.cu_seqlens = short_cu;
        b.d.n_seqs = 2;
        gc_expect_bad(&b, ctx, &ok, bw, LA_ERR_BAD_SEQLENS, "cu_seqlens ends before T");
        {
            gout r = gout_alloc(&c);
            la_status st = per_key
                ? la_gla_forward(NULL, &ok, &c.d, r.o, r.sT, c.q, c.k, c.v, c.g, c.s0)
                : la_simple_gla_forward(ctx, NULL, &c.d, r.o, r.sT, c.q, c.k, c.v, c.g,
                                        c.gamma, c.s0);
            CHECK_STATUS(st, LA_ERR_NULL_POINTER, "ctx / opts NULL");
            st = per_key ? la_gla_forward(ctx, &ok, &c.d, NULL, r.sT, c.q, c.k, c.v, c.g, c.s0)
                         : la_simple_gla_forward(ctx, &ok, &c.d, NULL, r.sT, c.q, c.k, c.v, c.g,
                                                 c.gamma, c.s0);
            CHECK_STATUS(st, LA_ERR_NULL_POINTER, "o NULL");
            CHECK(th_untouched(r.sT, c.ns), "o NULL: final_state untouched");
            gout_free(&r);
        }
    }
    /* backward-only arguments */
    {
        gout r = gout_alloc(&c);
        la_status st;
        if (per_key) {
            st = la_gla_backward(ctx, &ok, &c.d, r.dq, r.dk, r.dv, NULL, r.ds0, c.d_o, c.d_sT,
                                 c.q, c.k, c.v, c.g, c.s0);
            CHECK_STATUS(st, LA_ERR_NULL_POINTER, "GLA dg NULL");
        } else {
            st = la_simple_gla_backward(ctx, &ok, &c.d, r.dq, r.dk, r.dv, NULL, r.dgam, r.ds0,
                                        c.d_o, c.d_sT, c.q, c.k, c.v, c.g, c.gamma, c.s0);
            CHECK_STATUS(st, LA_ERR_NULL_POINTER, "simple GLA g given, dg NULL");
            st = la_simple_gla_backward(ctx, &ok, &c.d, r.dq, r.dk, r.dv, r.dg, r.dgam, r.ds0,
                                        c.d_o, c.d_sT, c.q, c.k, c.v, NULL, c.gamma, c.s0);
            CHECK_STATUS(st, LA_ERR_INVALID_ARGUMENT, "simple GLA dg given without g");
            float gam[2] = {-0.1f, 0.5f};
            st = la_simple_gla_forward(ctx, &ok, &c.d, r.o, r.sT, c.q, c.k, c.v, c.g, gam, c.s0);
            CHECK_STATUS(st, LA_ERR_INVALID_ARGUMENT, "simple GLA g_gamma positive");
        }
        st = per_key ? la_gla_backward(ctx, &ok, &c.d, r.dq, r.dk, r.dv, r.dg, r.ds0, NULL,
                                       c.d_sT, c.q, c.k, c.v, c.g, c.s0)
                     : la_simple_gla_backward(ctx, &ok, &c.d, r.dq, r.dk, r.dv, r.dg, r.dgam,
                                              r.ds0, NULL, c.d_sT, c.q, c.k, c.v, c.g, c.gamma,
                                              c.s0);
        CHECK_STATUS(st, LA_ERR_NULL_POINTER, "d_o NULL");
        float *dst = malloc(c.ns * sizeof *dst);
        memcpy(dst, c.d_sT, c.ns * sizeof *dst);
        dst[1] = NAN;
        st = per_key ? la_gla_backward(ctx, &ok, &c.d, r.dq, r.dk, r.dv, r.dg, r.ds0, c.d_o, dst,
                                       c.q, c.k, c.v, c.g, c.s0)
                     : la_simple_gla_backward(ctx, &ok, &c.d, r.dq, r.dk, r.dv, r.dg, r.dgam,
                                              r.ds0, c.d_o, dst, c.q, c.k, c.v, c.g, c.gamma,
                                              c.s0);
        CHECK_STATUS(st, LA_ERR_NON_FINITE, "d_final_state NaN");
        free(dst);
        CHECK(th_untouched(r.o, c.nv) && th_untouched(r.sT, c.ns) &&
              th_untouched(r.dq, c.nqk) && th_untouched(r.dk, c.nqk) &&
              th_untouched(r.dv, c.nv) && th_untouched(r.dg, c.ng) &&
              th_untouched(r.dgam, (size_t)c.H) && th_untouched(r.ds0, c.ns),
              "backward-only bad arguments: outputs untouched");
        gout_free(&r);
    }
    gc_free(&c);
    la_ctx_destroy(ctx);
}

void gc_check_fwd_threads(const gcase *c, la_ctx *const *ctx, int nctx, const la_gated_opts *o,
                          const char *label, int64_t chunk) {
    float *o1 = th_nan_floats(c->nv), *s1 = th_nan_floats(c->ns);
    CHECK_STATUS(gc_fwd(c, ctx[0], o, o1, s1), LA_OK, "forward, first context");
    for (int t = 1; t < nctx; t++) {
        float *ot = th_nan_floats(c->nv), *st = th_nan_floats(c->ns);
        CHECK_STATUS(gc_fwd(c, ctx[t], o, ot, st), LA_OK, "forward");
        CHECK(th_bitwise_equal(o1, ot, c->nv) && th_bitwise_equal(s1, st, c->ns),
              "%s chunk %d: %d threads = 1 thread, bit for bit", label, (int)chunk, t + 1);
        free(ot);
        free(st);
    }
    free(o1);
    free(s1);
}

/* cpu-bwdsplit: the backward gives the same bits at the thread counts of
 * ctx[0..3] (1, 2, 3, 4): dq, dk, dv, dg, dg_gamma (simple GLA),
 * d_initial_state, NaN-poisoned before each call. */
void gc_check_bwd_threads(const gcase *c, la_ctx *const *ctx, const la_gated_opts *o,
                          const char *label, int64_t chunk) {
    const size_t n[6] = {c->nqk, c->nqk, c->nv, c->ng, (size_t)c->H, c->ns};
    static const char *const names[6] = {"dq", "dk", "dv", "dg", "dg_gamma", "d_initial_state"};
    float *r[4][6];
    for (int t = 0; t < 4; t++) {
        for (int i = 0; i < 6; i++) r[t][i] = th_nan_floats(n[i]);
        CHECK_STATUS(gc_bwd(c, ctx[t], o, r[t][0], r[t][1], r[t][2], c->g ? r[t][3] : NULL,
                            c->gamma ? r[t][4] : NULL, r[t][5]),
                     LA_OK, "split backward");
    }
    for (int t = 1; t < 4; t++)
        for (int i = 0; i < 6; i++) {
            if ((i == 3 && !c->g) || (i == 4 && !c->gamma)) continue;
            CHECK(th_bitwise_equal(r[0][i], r[t][i], n[i]),
                  "%s chunk %d backward %s: %d threads = 1 thread, bit for bit", label, (int)chunk,
                  names[i], t + 1);
        }
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 6; i++) free(r[t][i]);
}
