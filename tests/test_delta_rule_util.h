/* Shared by the delta-rule test programs (header-only, static functions):
 * random problem instances, one call of the library's forward and backward,
 * the float64 reference over every (sequence, value head), and errors. */
#ifndef TEST_DELTA_RULE_UTIL_H
#define TEST_DELTA_RULE_UTIL_H

#include "core/internal.h"
#include "harness.h"
#include "ref_delta_rule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum { GATE_RANDOM = 0, GATE_ZERO, GATE_RESETS } gate_mode;

typedef struct dcase {
    int gated;
    int64_t B, T, H, HV, K, V; /* HV 0: H */
    const int64_t *cu;         /* cu_seqlens or NULL */
    int64_t n_seqs;
    la_form form;
    int64_t chunk;
    int l2norm;
    float scale;
    int with_init, with_dfinal; /* pass an initial state / d_final_state */
    gate_mode gate;
    double beta_lo, beta_hi;  /* beta ~ U(lo, hi); lo == hi: constant */
    double k_std;             /* std of k (q, v have std 1) */
    uint64_t seed;
} dcase;

static dcase dc_default(int gated) {
    dcase c = {0};
    c.gated = gated;
    c.B = 2; c.T = 33; c.H = 2; c.K = 16; c.V = 16;
    c.form = LA_FORM_RECURRENT;
    c.l2norm = 1;
    c.with_init = c.with_dfinal = 1;
    c.beta_lo = 0.05; c.beta_hi = 1.0;
    c.k_std = 1.0;
    c.seed = 1;
    return c;
}

typedef struct ddata {
    la_dims d;
    int64_t N, HS;
    size_t nqk, nv, ng, ns;
    float *q, *k, *v, *g, *beta, *S0, *d_o, *dST;
} ddata;

typedef struct dout {
    float *o, *ST, *dq, *dk, *dv, *dg, *dbeta, *dS0;
} dout;

typedef struct dref {
    double *o, *ST, *dq, *dk, *dv, *dg, *dbeta, *dS0;
} dref;

static ddata dc_data(const dcase *c) {
    ddata x;
    memset(&x, 0, sizeof x);
    x.d.B = c->B; x.d.T = c->T; x.d.H = c->H; x.d.K = c->K; x.d.V = c->V;
    x.d.HV = c->gated ? c->HV : 0;
    x.d.cu_seqlens = c->cu; x.d.n_seqs = c->cu ? c->n_seqs : 0;
    x.N = c->cu ? c->n_seqs : c->B;
    x.HS = c->gated && c->HV ? c->HV : c->H;
    const size_t BT = (size_t)(c->B * c->T);
    x.nqk = BT * (size_t)(c->H * c->K);
    x.nv = BT * (size_t)(x.HS * c->V);
    x.ng = BT * (size_t)x.HS;
    x.ns = (size_t)(x.N * x.HS * c->K * c->V);
    la_rng rng;
    la_rng_seed(&rng, c->seed);
    x.q = th_rand_floats(x.nqk, &rng, 1.0);
    x.k = th_rand_floats(x.nqk, &rng, c->k_std);
    x.v = th_rand_floats(x.nv, &rng, 1.0);
    x.d_o = th_rand_floats(x.nv, &rng, 1.0);
    x.S0 = th_rand_floats(x.ns, &rng, 0.5);
    x.dST = th_rand_floats(x.ns, &rng, 0.5);
    x.beta = th_nan_floats(x.ng);
    for (size_t i = 0; i < x.ng; i++)
        x.beta[i] = (float)(c->beta_lo + (c->beta_hi - c->beta_lo) * la_rng_uniform(&rng));
    x.g = th_nan_floats(x.ng);
    for (size_t i = 0; i < x.ng; i++) {
        double u = la_rng_uniform(&rng);
        /* logsigmoid of N(2.5, 1): typical forget gates around -0.08 */
        double z = 2.5 + la_rng_normal(&rng);
        double g = -log1p(exp(-z));
        if (c->gate == GATE_ZERO) g = 0;
        if (c->gate == GATE_RESETS && u < 0.1) g = -1e4;
        x.g[i] = (float)g;
    }
    return x;
}

static void dc_free_data(ddata *x) {
    free(x->q); free(x->k); free(x->v); free(x->g); free(x->beta);
    free(x->S0); free(x->d_o); free(x->dST);
}

static la_gated_opts dc_opts(const dcase *c) {
    la_gated_opts o = la_gated_opts_default();
    o.form = c->form;
    o.chunk_size = c->chunk;
    o.use_qk_l2norm = c->l2norm;
    o.scale = c->scale;
    return o;
}

static dout dc_alloc_out(const ddata *x) {
    dout y;
    y.o = th_nan_floats(x->nv); y.ST = th_nan_floats(x->ns);
    y.dq = th_nan_floats(x->nqk); y.dk = th_nan_floats(x->nqk);
    y.dv = th_nan_floats(x->nv); y.dg = th_nan_floats(x->ng);
    y.dbeta = th_nan_floats(x->ng); y.dS0 = th_nan_floats(x->ns);
    return y;
}

static void dc_free_out(dout *y) {
    free(y->o); free(y->ST); free(y->dq); free(y->dk); free(y->dv); free(y->dg);
    free(y->dbeta); free(y->dS0);
}

static la_status dc_forward(la_ctx *ctx, const dcase *c, const ddata *x, dout *y) {
    la_gated_opts o = dc_opts(c);
    const float *S0 = c->with_init ? x->S0 : NULL;
    if (c->gated)
        return la_gated_delta_rule_forward(ctx, &o, &x->d, y->o, y->ST, x->q, x->k, x->v, x->g,
                                           x->beta, S0);
    return la_delta_rule_forward(ctx, &o, &x->d, y->o, y->ST, x->q, x->k, x->v, x->beta, S0);
}

static la_status dc_backward(la_ctx *ctx, const dcase *c, const ddata *x, dout *y) {
    la_gated_opts o = dc_opts(c);
    const float *S0 = c->with_init ? x->S0 : NULL;
    const float *dST = c->with_dfinal ? x->dST : NULL;
    if (c->gated)
        return la_gated_delta_rule_backward(ctx, &o, &x->d, y->dq, y->dk, y->dv, y->dg,
                                            y->dbeta, y->dS0, x->d_o, dST, x->q, x->k, x->v,
                                            x->g, x->beta, S0);
    return la_delta_rule_backward(ctx, &o, &x->d, y->dq, y->dk, y->dv, y->dbeta, y->dS0,
                                  x->d_o, dST, x->q, x->k, x->v, x->beta, S0);
}

/* Gathers rows of x [B*T, heads, D] of sequence n, head h into dst [len, D]. */
static int64_t dc_gather(double *dst, const float *x, const la_dims *d, int64_t n, int64_t h,
                         int64_t heads, int64_t D) {
    return ref_gather(dst, x, d, n, h, heads, D);
}

/* y[rows of (n, h)] += src (so dq, dk sum over a group of value heads). */
static void dc_scatter_add(double *y, const double *src, const la_dims *d, int64_t n,
                           int64_t h, int64_t heads, int64_t D) {
    int64_t start, len;
    la__seq_bounds(d, n, &start, &len);
    for (int64_t t = 0; t < len; t++)
        for (int64_t i = 0; i < D; i++) y[((start + t) * heads + h) * D + i] += src[t * D + i];
}

/* The float64 reference of the whole call; backward too when bwd. */
static dref dc_reference(const dcase *c, const ddata *x, int bwd) {
    dref r;
    r.o = th_doubles(x->nv); r.ST = th_doubles(x->ns);
    r.dq = th_doubles(x->nqk); r.dk = th_doubles(x->nqk); r.dv = th_doubles(x->nv);
    r.dg = th_doubles(x->ng); r.dbeta = th_doubles(x->ng); r.dS0 = th_doubles(x->ns);
    const int64_t K = c->K, V = c->V, T = c->B * c->T, group = x->HS / c->H;
    const size_t KV = (size_t)(K * V);
    double *q = th_doubles((size_t)(T * K)), *k = th_doubles((size_t)(T * K));
    double *v = th_doubles((size_t)(T * V)), *g = th_doubles((size_t)T);
    double *b = th_doubles((size_t)T), *o = th_doubles((size_t)(T * V));
    double *dq = th_doubles((size_t)(T * K)), *dk = th_doubles((size_t)(T * K));
    double *dv = th_doubles((size_t)(T * V)), *dg = th_doubles((size_t)T);
    double *db = th_doubles((size_t)T), *dot = th_doubles((size_t)(T * V));
    double *S0 = th_doubles(KV), *dST = th_doubles(KV);
    for (int64_t n = 0; n < x->N; n++)
        for (int64_t h = 0; h < x->HS; h++) {
            const int64_t hq = h / group;
            const int64_t len = dc_gather(q, x->q, &x->d, n, hq, c->H, K);
            dc_gather(k, x->k, &x->d, n, hq, c->H, K);
            dc_gather(v, x->v, &x->d, n, h, x->HS, V);
            dc_gather(g, x->g, &x->d, n, h, x->HS, 1);
            dc_gather(b, x->beta, &x->d, n, h, x->HS, 1);
            dc_gather(dot, x->d_o, &x->d, n, h, x->HS, V);
            const size_t so = (size_t)(n * x->HS + h) * KV;
            for (size_t i = 0; i < KV; i++) {
                S0[i] = x->S0[so + i];
                dST[i] = x->dST[so + i];
            }
            float sc = 0;
            la__resolve_scale("test", c->scale, K, &sc);
            ref_delta_in in = {len, K, V, sc, c->l2norm, q, k, v, c->gated ? g : NULL, b,
                               c->with_init ? S0 : NULL};
            if (ref_delta_rule_forward(&in, o, r.ST + so)) abort();
            ref_scatter(r.o, o, &x->d, n, h, x->HS, V);
            if (!bwd) continue;
            if (ref_delta_rule_backward(&in, dot, c->with_dfinal ? dST : NULL, dq, dk, dv, db,
                                        dg, r.dS0 + so))
                abort();
            dc_scatter_add(r.dq, dq, &x->d, n, hq, c->H, K);
            dc_scatter_add(r.dk, dk, &x->d, n, hq, c->H, K);
            ref_scatter(r.dv, dv, &x->d, n, h, x->HS, V);
            ref_scatter(r.dbeta, db, &x->d, n, h, x->HS, 1);
            ref_scatter(r.dg, dg, &x->d, n, h, x->HS, 1);
        }
    free(q); free(k); free(v); free(g); free(b); free(o); free(dq); free(dk); free(dv);
    free(dg); free(db); free(dot); free(S0); free(dST);
    return r;
}

static void dc_free_ref(dref *r) {
    free(r->o); free(r->ST); free(r->dq); free(r->dk); free(r->dv); free(r->dg);
    free(r->dbeta); free(r->dS0);
}

static const char *dc_form_name(const dcase *c) {
    return c->form == LA_FORM_CHUNK ? "chunk" : "recurrent";
}



/* Relative-RMS error of one output against the reference; also fails on
 * any non-finite (e.g. unwritten, NaN-prefilled) element. */
static double dc_err(const float *got, const double *want, size_t n) {
    if (ref_count_nonfinite(got, n)) return INFINITY;
    return ref_rms_rel_err(got, want, n);
}

/* Worst errors measured over a program (printed at the end). */
static double dc_worst_fwd, dc_worst_bwd, dc_worst_fwd_max, dc_worst_bwd_max;

/* Runs forward (and backward when bwd_tol > 0) of case c and compares every
 * output with the float64 reference: relative RMS <= fwd_tol / bwd_tol. */
static void dc_check_case(la_ctx *ctx, const dcase *c, double fwd_tol, double bwd_tol) {
    ddata x = dc_data(c);
    dout y = dc_alloc_out(&x);
    const int bwd = bwd_tol > 0;
    dref r = dc_reference(c, &x, bwd);
    char what[160];
    snprintf(what, sizeof what, "%s %s T=%lld H=%lld HV=%lld K=%lld V=%lld C=%lld l2=%d",
             c->gated ? "gated" : "delta", dc_form_name(c), (long long)c->T, (long long)c->H,
             (long long)x.HS, (long long)c->K, (long long)c->V, (long long)c->chunk, c->l2norm);
    if (CHECK_STATUS(dc_forward(ctx, c, &x, &y), LA_OK, what)) {
        const struct { const char *n; const float *g; const double *w; size_t len; } f[] = {
            {"o", y.o, r.o, x.nv}, {"final_state", y.ST, r.ST, x.ns}};
        for (int i = 0; i < 2; i++) {
            double e = dc_err(f[i].g, f[i].w, f[i].len);
            double m = ref_max_rel_err(f[i].g, f[i].w, f[i].len);
            if (e > dc_worst_fwd) dc_worst_fwd = e;
            if (m > dc_worst_fwd_max) dc_worst_fwd_max = m;
            CHECK(e <= fwd_tol, "%s: %s rel rms %.3g > tol %.3g (max rel %.2e)", what, f[i].n, e,
                  fwd_tol, m);
        }
    }
    if (bwd && CHECK_STATUS(dc_backward(ctx, c, &x, &y), LA_OK, what)) {
        const struct { const char *n; const float *g; const double *w; size_t len; } b[] = {
            {"dq", y.dq, r.dq, x.nqk}, {"dk", y.dk, r.dk, x.nqk}, {"dv", y.dv, r.dv, x.nv},
            {"dbeta", y.dbeta, r.dbeta, x.ng}, {"dg", y.dg, r.dg, x.ng},
            {"d_initial_state", y.dS0, r.dS0, x.ns}};
        for (int i = 0; i < 6; i++) {
            if (i == 4 && !c->gated) {
                CHECK(th_untouched(y.dg, x.ng), "%s: DeltaNet has no dg", what);
                continue;
            }
            double e = dc_err(b[i].g, b[i].w, b[i].len);
            double m = ref_max_rel_err(b[i].g, b[i].w, b[i].len);
            if (e > dc_worst_bwd) dc_worst_bwd = e;
            if (m > dc_worst_bwd_max) dc_worst_bwd_max = m;
            CHECK(e <= bwd_tol, "%s: %s rel rms %.3g > tol %.3g (max rel %.2e)", what, b[i].n, e,
                  bwd_tol, m);
        }
    }
    dc_free_ref(&r);
    dc_free_out(&y);
    dc_free_data(&x);
}

static void dc_print_worst(const char *suite) {
    printf("%s: worst relative RMS error forward %.2e backward %.2e; worst max-relative "
           "forward %.2e backward %.2e\n", suite, dc_worst_fwd, dc_worst_bwd, dc_worst_fwd_max,
           dc_worst_bwd_max);
}
#endif
