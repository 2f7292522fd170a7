/* Shared by the delta-rule test programs (tests/support/delta_rule_cases.h):
 * random problem instances, one call of the library's forward and backward,
 * the float64 reference over every (sequence, value head), and errors. */
#include "delta_rule_cases.h"

#include "core/internal.h"
#include "ref_delta_rule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

dcase dc_default(int gated) {
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


ddata dc_data(const dcase *c) {
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

void dc_free_data(ddata *x) {
    free(x->q); free(x->k); free(x->v); free(x->g); free(x->beta);
    free(x->S0); free(x->d_o); free(x->dST);
}

la_gated_opts dc_opts(const dcase *c) {
    la_gated_opts o = la_gated_opts_default();
    o.form = c->form;
    o.chunk_size = c->chunk;
    o.use_qk_l2norm = c->l2norm;
    o.scale = c->scale;
    return o;
}

dout dc_alloc_out(const ddata *x) {
    dout y;
    y.o = th_nan_floats(x->nv); y.ST = th_nan_floats(x->ns);
    y.dq = th_nan_floats(x->nqk); y.dk = th_nan_floats(x->nqk);
    y.dv = th_nan_floats(x->nv); y.dg = th_nan_floats(x->ng);
    y.dbeta = th_nan_floats(x->ng); y.dS0 = th_nan_floats(x->ns);
    return y;
}

void dc_free_out(dout *y) {
    free(y->o); free(y->ST); free(y->dq); free(y->dk); free(y->dv); free(y->dg);
    free(y->dbeta); free(y->dS0);
}

la_status dc_forward(la_ctx *ctx, const dcase *c, const ddata *x, dout *y) {
    return dc_forward_saved(ctx, c, x, y, NULL);
}

la_status dc_forward_saved(la_ctx *ctx, const dcase *c, const ddata *x, dout *y, la_saved *s) {
    la_gated_opts o = dc_opts(c);
    o.saved = s;
    const float *S0 = c->with_init ? x->S0 : NULL;
    if (c->gated)
        return la_gated_delta_rule_forward(ctx, &o, &x->d, y->o, y->ST, x->q, x->k, x->v, x->g,
                                           x->beta, S0);
    return la_delta_rule_forward(ctx, &o, &x->d, y->o, y->ST, x->q, x->k, x->v, x->beta, S0);
}

la_status dc_backward(la_ctx *ctx, const dcase *c, const ddata *x, dout *y) {
    return dc_backward_saved(ctx, c, x, y, NULL);
}

la_status dc_backward_saved(la_ctx *ctx, const dcase *c, const ddata *x, dout *y, la_saved *s) {
    la_gated_opts o = dc_opts(c);
    o.saved = s;
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
dref dc_reference(const dcase *c, const ddata *x, int bwd) {
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

void dc_free_ref(dref *r) {
    free(r->o); free(r->ST); free(r->dq); free(r->dk); free(r->dv); free(r->dg);
    free(r->dbeta); free(r->dS0);
}

const char *dc_form_name(const dcase *c) {
    return c->form == LA_FORM_CHUNK ? "chunk" : "recurrent";
}



/* Relative-RMS error of one output against the reference; also fails on
 * any non-finite (e.g. unwritten, NaN-prefilled) element. */
double dc_err(const float *got, const double *want, size_t n) {
    if (ref_count_nonfinite(got, n)) return INFINITY;
    return ref_rms_rel_err(got, want, n);
}

/* Worst errors measured over a program (printed at the end). */
static double dc_worst_fwd, dc_worst_bwd, dc_worst_fwd_max, dc_worst_bwd_max;

/* Runs forward (and backward when bwd_tol > 0) of case c and compares every
 * output with the float64 reference: relative RMS <= fwd_tol / bwd_tol. */
void dc_check_case(la_ctx *ctx, const dcase *c, double fwd_tol, double bwd_tol) {
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
            if (getenv("DELTA_VERBOSE")) printf("  %-60s %-16s rms %.2e max %.2e\n", what, f[i].n, e, m);
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
            if (getenv("DELTA_VERBOSE")) printf("  %-60s %-16s rms %.2e max %.2e\n", what, b[i].n, e, m);
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

void dc_print_worst(const char *suite) {
    printf("%s: worst relative RMS error forward %.2e backward %.2e; worst max-relative "
           "forward %.2e backward %.2e\n", suite, dc_worst_fwd, dc_worst_bwd, dc_worst_fwd_max,
           dc_worst_bwd_max);
}
/* Relative RMS of float against float. */
double dc_rms_ff(const float *got, const float *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    return sqrt(num / (den > 1e-300 ? den : 1e-300));
}

/* The same case with 1 and 2 threads gives bit-identical outputs. */
void dc_check_threads(const dcase *c) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    ddata x = dc_data(c);
    dout a = dc_alloc_out(&x), b = dc_alloc_out(&x);
    int ok = dc_forward(c1, c, &x, &a) == LA_OK && dc_forward(c2, c, &x, &b) == LA_OK &&
             dc_backward(c1, c, &x, &a) == LA_OK && dc_backward(c2, c, &x, &b) == LA_OK;
    CHECK(ok, "%s threads: calls succeed (%s)", dc_form_name(c), la_last_error());
    CHECK(th_bitwise_equal(a.o, b.o, x.nv) && th_bitwise_equal(a.ST, b.ST, x.ns),
          "%s: forward bitwise equal with 1 and 2 threads", dc_form_name(c));
    CHECK(th_bitwise_equal(a.dq, b.dq, x.nqk) && th_bitwise_equal(a.dk, b.dk, x.nqk) &&
              th_bitwise_equal(a.dv, b.dv, x.nv) && th_bitwise_equal(a.dbeta, b.dbeta, x.ng) &&
              th_bitwise_equal(a.dS0, b.dS0, x.ns) &&
              (!c->gated || th_bitwise_equal(a.dg, b.dg, x.ng)),
          "%s: backward bitwise equal with 1 and 2 threads", dc_form_name(c));
    dc_free_out(&a);
    dc_free_out(&b);
    dc_free_data(&x);
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

/* A packed (cu_seqlens) batch equals each sequence run alone, bit for bit
 * (chunks and backward segments start at each sequence's first token). */
void dc_check_varlen(la_ctx *ctx, const dcase *base) {
    static const int64_t cu[] = {0, 5, 70, 71, 200};
    dcase c = *base;
    c.B = 1;
    c.T = 200;
    c.cu = cu;
    c.n_seqs = 4;
    ddata x = dc_data(&c);
    dout y = dc_alloc_out(&x);
    int ok = CHECK_STATUS(dc_forward(ctx, &c, &x, &y), LA_OK, "varlen forward") &&
             CHECK_STATUS(dc_backward(ctx, &c, &x, &y), LA_OK, "varlen backward");
    const int64_t K = c.K, V = c.V, H = c.H, HS = x.HS;
    for (int64_t n = 0; ok && n < 4; n++) {
        const int64_t t0 = cu[n], len = cu[n + 1] - cu[n];
        dcase s = c;
        s.cu = NULL;
        s.n_seqs = 0;
        s.T = len;
        ddata z = dc_data(&s); /* same sizes; overwrite with the slice */
        memcpy(z.q, x.q + t0 * H * K, (size_t)(len * H * K) * sizeof(float));
        memcpy(z.k, x.k + t0 * H * K, (size_t)(len * H * K) * sizeof(float));
        memcpy(z.v, x.v + t0 * HS * V, (size_t)(len * HS * V) * sizeof(float));
        memcpy(z.d_o, x.d_o + t0 * HS * V, (size_t)(len * HS * V) * sizeof(float));
        memcpy(z.g, x.g + t0 * HS, (size_t)(len * HS) * sizeof(float));
        memcpy(z.beta, x.beta + t0 * HS, (size_t)(len * HS) * sizeof(float));
        memcpy(z.S0, x.S0 + n * (int64_t)z.ns, z.ns * sizeof(float));
        memcpy(z.dST, x.dST + n * (int64_t)z.ns, z.ns * sizeof(float));
        dout w = dc_alloc_out(&z);
        if (dc_forward(ctx, &s, &z, &w) == LA_OK && dc_backward(ctx, &s, &z, &w) == LA_OK) {
            CHECK(th_bitwise_equal(w.o, y.o + t0 * HS * V, (size_t)(len * HS * V)) &&
                      th_bitwise_equal(w.ST, y.ST + n * (int64_t)z.ns, z.ns),
                  "%s varlen: sequence %lld forward equals it alone", dc_form_name(&c),
                  (long long)n);
            CHECK(th_bitwise_equal(w.dq, y.dq + t0 * H * K, (size_t)(len * H * K)) &&
                      th_bitwise_equal(w.dk, y.dk + t0 * H * K, (size_t)(len * H * K)) &&
                      th_bitwise_equal(w.dv, y.dv + t0 * HS * V, (size_t)(len * HS * V)) &&
                      th_bitwise_equal(w.dbeta, y.dbeta + t0 * HS, (size_t)(len * HS)) &&
                      (!c.gated || th_bitwise_equal(w.dg, y.dg + t0 * HS, (size_t)(len * HS))) &&
                      th_bitwise_equal(w.dS0, y.dS0 + n * (int64_t)z.ns, z.ns),
                  "%s varlen: sequence %lld backward equals it alone", dc_form_name(&c),
                  (long long)n);
        } else {
            CHECK(0, "single-sequence call failed: %s", la_last_error());
        }
        dc_free_out(&w);
        dc_free_data(&z);
    }
    dc_free_out(&y);
    dc_free_data(&x);
}

/* Two pieces (final state -> initial state; d_initial_state of the second
 * -> d_final_state of the first) equal the whole sequence: bit for bit in
 * the recurrent form (same token arithmetic), within tol in the chunk form
 * (chunk boundaries move). */
void dc_check_pieces(la_ctx *ctx, const dcase *base, double tol) {
    dcase c = *base;
    c.B = 1;
    c.T = 150;
    c.cu = NULL;
    c.with_init = c.with_dfinal = 1;
    const int64_t T1 = 37, T2 = c.T - T1;
    ddata x = dc_data(&c);
    dout y = dc_alloc_out(&x);
    dc_forward(ctx, &c, &x, &y);
    dc_backward(ctx, &c, &x, &y);
    const int64_t K = c.K, V = c.V, H = c.H, HS = x.HS;
    dcase c1 = c, c2 = c;
    c1.T = T1;
    c2.T = T2;
    ddata p1 = dc_data(&c1), p2 = dc_data(&c2);
    ddata *ps[2] = {&p1, &p2};
    const int64_t off[2] = {0, T1}, lens[2] = {T1, T2};
    for (int i = 0; i < 2; i++) {
        memcpy(ps[i]->q, x.q + off[i] * H * K, (size_t)(lens[i] * H * K) * sizeof(float));
        memcpy(ps[i]->k, x.k + off[i] * H * K, (size_t)(lens[i] * H * K) * sizeof(float));
        memcpy(ps[i]->v, x.v + off[i] * HS * V, (size_t)(lens[i] * HS * V) * sizeof(float));
        memcpy(ps[i]->d_o, x.d_o + off[i] * HS * V, (size_t)(lens[i] * HS * V) * sizeof(float));
        memcpy(ps[i]->g, x.g + off[i] * HS, (size_t)(lens[i] * HS) * sizeof(float));
        memcpy(ps[i]->beta, x.beta + off[i] * HS, (size_t)(lens[i] * HS) * sizeof(float));
    }
    memcpy(p1.S0, x.S0, x.ns * sizeof(float));
    memcpy(p2.dST, x.dST, x.ns * sizeof(float));
    dout y1 = dc_alloc_out(&p1), y2 = dc_alloc_out(&p2);
    dc_forward(ctx, &c1, &p1, &y1);
    memcpy(p2.S0, y1.ST, x.ns * sizeof(float));
    dc_forward(ctx, &c2, &p2, &y2);
    dc_backward(ctx, &c2, &p2, &y2);
    memcpy(p1.dST, y2.dS0, x.ns * sizeof(float));
    dc_backward(ctx, &c1, &p1, &y1);
    /* Reassemble the pieces and compare with the whole. */
    dout z = dc_alloc_out(&x);
    for (int i = 0; i < 2; i++) {
        dout *yi = i ? &y2 : &y1;
        memcpy(z.o + off[i] * HS * V, yi->o, (size_t)(lens[i] * HS * V) * sizeof(float));
        memcpy(z.dq + off[i] * H * K, yi->dq, (size_t)(lens[i] * H * K) * sizeof(float));
        memcpy(z.dk + off[i] * H * K, yi->dk, (size_t)(lens[i] * H * K) * sizeof(float));
        memcpy(z.dv + off[i] * HS * V, yi->dv, (size_t)(lens[i] * HS * V) * sizeof(float));
        memcpy(z.dg + off[i] * HS, yi->dg, (size_t)(lens[i] * HS) * sizeof(float));
        memcpy(z.dbeta + off[i] * HS, yi->dbeta, (size_t)(lens[i] * HS) * sizeof(float));
    }
    memcpy(z.ST, y2.ST, x.ns * sizeof(float));
    memcpy(z.dS0, y1.dS0, x.ns * sizeof(float));
    const float *got[] = {z.o, z.ST, z.dq, z.dk, z.dv, z.dbeta, z.dg, z.dS0};
    const float *want[] = {y.o, y.ST, y.dq, y.dk, y.dv, y.dbeta, y.dg, y.dS0};
    const size_t len[] = {x.nv, x.ns, x.nqk, x.nqk, x.nv, x.ng, x.ng, x.ns};
    const char *names[] = {"o", "final_state", "dq", "dk", "dv", "dbeta", "dg", "d_initial_state"};
    for (int i = 0; i < 8; i++) {
        if (i == 6 && !c.gated) continue;
        if (c.form == LA_FORM_RECURRENT) {
            CHECK(th_bitwise_equal(got[i], want[i], len[i]), "recurrent pieces: %s bitwise",
                  names[i]);
        } else {
            double e = dc_rms_ff(got[i], want[i], len[i]);
            CHECK(e <= tol, "chunk pieces: %s rel rms %.3g > %.3g", names[i], e, tol);
        }
    }
    dc_free_out(&z);
    dc_free_out(&y1);
    dc_free_out(&y2);
    dc_free_out(&y);
    dc_free_data(&p1);
    dc_free_data(&p2);
    dc_free_data(&x);
}
/* Bad inputs: each call returns the status, names the culprit in its
 * message and leaves every output untouched (NaN prefill). */
typedef enum {
    BAD_NULL_BETA, BAD_NULL_G, BAD_BETA_HIGH, BAD_BETA_NEG, BAD_BETA_NAN, BAD_G_POS, BAD_G_NAN,
    BAD_Q_NAN, BAD_V_INF, BAD_S0_NAN, BAD_DO_NAN, BAD_DST_INF, BAD_HV, BAD_CU_ORDER, BAD_CU_END,
    BAD_CU_B, BAD_FORM_PARALLEL, BAD_FORM_UNKNOWN, BAD_CHUNK, BAD_SCALE, BAD_K0, BAD_NULL_O,
    BAD_COUNT
} bad_kind;

void dc_check_bad_inputs(la_ctx *ctx, int gated) {
    static const struct { la_status st; const char *msg; } want[BAD_COUNT] = {
        {LA_ERR_NULL_POINTER, "beta"}, {LA_ERR_NULL_POINTER, "g is NULL"},
        {LA_ERR_INVALID_ARGUMENT, "beta[3] = 2.5"}, {LA_ERR_INVALID_ARGUMENT, "beta[3] = -0.1"},
        {LA_ERR_NON_FINITE, "beta[3] is NaN"}, {LA_ERR_INVALID_ARGUMENT, "g[5] = 0.5"},
        {LA_ERR_NON_FINITE, "g[5] is NaN"}, {LA_ERR_NON_FINITE, "q[7] is NaN"},
        {LA_ERR_NON_FINITE, "v[2] is Inf"}, {LA_ERR_NON_FINITE, "initial_state[1] is NaN"},
        {LA_ERR_NON_FINITE, "d_o[4] is NaN"}, {LA_ERR_NON_FINITE, "d_final_state[0] is Inf"},
        {LA_ERR_SHAPE_MISMATCH, "HV"}, {LA_ERR_BAD_SEQLENS, "decreases"},
        {LA_ERR_BAD_SEQLENS, "cu_seqlens ends"}, {LA_ERR_BAD_SEQLENS, "B == 1"},
        {LA_ERR_INVALID_ARGUMENT, "chunk_size = -1"}, {LA_ERR_INVALID_ARGUMENT, "form = 9"},
        {LA_ERR_INVALID_ARGUMENT, "chunk_size = -1"}, {LA_ERR_INVALID_ARGUMENT, "scale = -1"},
        {LA_ERR_INVALID_SIZE, "dims.K = 0"}, {LA_ERR_NULL_POINTER, "o is NULL"}};
    dcase c = dc_default(gated);
    c.B = 1;
    c.T = 10;
    c.H = 2;
    c.HV = gated ? 4 : 0;
    ddata x0 = dc_data(&c);
    for (int kind = 0; kind < BAD_COUNT; kind++) {
        if (kind == BAD_NULL_G && !gated) continue;
        if (kind == BAD_G_POS && !gated) continue;
        if (kind == BAD_G_NAN && !gated) continue;
        for (int bwd = 0; bwd < 2; bwd++) {
            if (!bwd && (kind == BAD_DO_NAN || kind == BAD_DST_INF)) continue;
            if (bwd && kind == BAD_NULL_O) continue;
            dcase cc = c;
            ddata x = dc_data(&c);
            int64_t cu[3] = {0, 6, 10};
            const float *beta = x.beta, *g = x.g, *o_ok = NULL;
            (void)o_ok;
            switch ((bad_kind)kind) {
            case BAD_NULL_BETA: beta = NULL; break;
            case BAD_NULL_G: g = NULL; break;
            case BAD_BETA_HIGH: x.beta[3] = 2.5f; break;
            case BAD_BETA_NEG: x.beta[3] = -0.1f; break;
            case BAD_BETA_NAN: x.beta[3] = NAN; break;
            case BAD_G_POS: x.g[5] = 0.5f; break;
            case BAD_G_NAN: x.g[5] = NAN; break;
            case BAD_Q_NAN: x.q[7] = NAN; break;
            case BAD_V_INF: x.v[2] = INFINITY; break;
            case BAD_S0_NAN: x.S0[1] = NAN; break;
            case BAD_DO_NAN: x.d_o[4] = NAN; break;
            case BAD_DST_INF: x.dST[0] = INFINITY; break;
            case BAD_HV: x.d.HV = gated ? 3 : 4; break;
            case BAD_CU_ORDER: cu[1] = 11; x.d.cu_seqlens = cu; x.d.n_seqs = 2; break;
            case BAD_CU_END: cu[2] = 9; x.d.cu_seqlens = cu; x.d.n_seqs = 2; break;
            case BAD_CU_B: x.d.B = 2; x.d.T = 5; x.d.cu_seqlens = cu; x.d.n_seqs = 2;
                cu[1] = 2; cu[2] = 5; break;
            case BAD_FORM_PARALLEL: /* form 0 means chunk: it reads chunk_size */
                cc.form = LA_FORM_PARALLEL; cc.chunk = -1; break;
            case BAD_FORM_UNKNOWN: cc.form = (la_form)9; break;
            case BAD_CHUNK: cc.form = LA_FORM_CHUNK; cc.chunk = -1; break;
            case BAD_SCALE: cc.scale = -1; break;
            case BAD_K0: x.d.K = 0; break;
            case BAD_NULL_O: break;
            case BAD_COUNT: break;
            }
            dout y = dc_alloc_out(&x0);
            la_gated_opts o = dc_opts(&cc);
            const float *S0 = x.S0, *dST = x.dST;
            la_status st;
            if (!bwd) {
                float *out = kind == BAD_NULL_O ? NULL : y.o;
                st = gated ? la_gated_delta_rule_forward(ctx, &o, &x.d, out, y.ST, x.q, x.k, x.v,
                                                         g, beta, S0)
                           : la_delta_rule_forward(ctx, &o, &x.d, out, y.ST, x.q, x.k, x.v,
                                                   beta, S0);
            } else {
                st = gated ? la_gated_delta_rule_backward(ctx, &o, &x.d, y.dq, y.dk, y.dv, y.dg,
                                                          y.dbeta, y.dS0, x.d_o, dST, x.q, x.k,
                                                          x.v, g, beta, S0)
                           : la_delta_rule_backward(ctx, &o, &x.d, y.dq, y.dk, y.dv, y.dbeta,
                                                    y.dS0, x.d_o, dST, x.q, x.k, x.v, beta, S0);
            }
            char what[96];
            snprintf(what, sizeof what, "%s %s bad input %d", gated ? "gated" : "delta",
                     bwd ? "backward" : "forward", kind);
            CHECK_STATUS(st, want[kind].st, what);
            CHECK(strstr(la_last_error(), want[kind].msg) != NULL,
                  "%s: message '%s' names '%s'", what, la_last_error(), want[kind].msg);
            CHECK(th_untouched(y.o, x0.nv) && th_untouched(y.ST, x0.ns) &&
                      th_untouched(y.dq, x0.nqk) && th_untouched(y.dk, x0.nqk) &&
                      th_untouched(y.dv, x0.nv) && th_untouched(y.dg, x0.ng) &&
                      th_untouched(y.dbeta, x0.ng) && th_untouched(y.dS0, x0.ns),
                  "%s: outputs untouched", what);
            dc_free_out(&y);
            dc_free_data(&x);
        }
    }
    dc_free_data(&x0);
}

/* final_state may be the initial_state buffer (an in-place state update),
 * and d_initial_state the d_final_state buffer: each (sequence, head) slot
 * is read before it is written. */
void dc_check_inplace(la_ctx *ctx, const dcase *base) {
    dcase c = *base;
    c.with_init = c.with_dfinal = 1;
    ddata x = dc_data(&c);
    dout y = dc_alloc_out(&x), z = dc_alloc_out(&x);
    dc_forward(ctx, &c, &x, &y);
    dc_backward(ctx, &c, &x, &y);
    float *S0 = x.S0, *dST = x.dST;
    free(z.ST);
    free(z.dS0);
    z.ST = th_nan_floats(x.ns);
    z.dS0 = th_nan_floats(x.ns);
    memcpy(z.ST, S0, x.ns * sizeof(float));
    memcpy(z.dS0, dST, x.ns * sizeof(float));
    x.S0 = z.ST; /* the state buffer is both input and output */
    dc_forward(ctx, &c, &x, &z);
    x.S0 = S0;
    x.dST = z.dS0;
    dc_backward(ctx, &c, &x, &z);
    x.dST = dST;
    CHECK(th_bitwise_equal(z.o, y.o, x.nv) && th_bitwise_equal(z.ST, y.ST, x.ns),
          "%s: forward with final_state == initial_state", dc_form_name(&c));
    CHECK(th_bitwise_equal(z.dq, y.dq, x.nqk) && th_bitwise_equal(z.dS0, y.dS0, x.ns),
          "%s: backward with d_initial_state == d_final_state", dc_form_name(&c));
    dc_free_out(&y);
    dc_free_out(&z);
    dc_free_data(&x);
}

/* Head groups: on one thread a backward task takes a group of q/k heads
 * (up to 4, N H / 2 of them: H = 5 -> groups 2 + 2 + 1, H = 6 -> 3 + 3,
 * H = 8 -> 4 + 4) and the chunk forward a group of value heads; every head
 * has its own random data, so a group that mixed up the heads' rows, norms
 * or gradients fails the float64 comparison. Both forms; HV = H, and for
 * the gated rule also HV = 2H. */
void dc_check_head_groups(int gated) {
    la_ctx *c1 = th_ctx(1);
    const int64_t Hs[] = {5, 6, 8};
    for (int form = 1; form <= 2; form++)
        for (int i = 0; i < 3; i++)
            for (int gqa = 0; gqa <= (gated ? 1 : 0); gqa++) {
                dcase c = dc_default(gated);
                c.form = (la_form)form;
                c.B = 1;
                c.T = 70;
                c.H = Hs[i];
                c.HV = gqa ? 2 * c.H : c.H;
                c.K = 24;
                c.V = 20;
                c.chunk = 16;
                c.l2norm = i != 1; /* raw keys (the copy path), |k|^2 ~ 0.4, beta < 1 */
                if (!c.l2norm) {
                    c.k_std = 1.0 / 8;
                    c.beta_hi = 0.9;
                }
                c.seed = (uint64_t)(900 + 10 * i + 2 * form + gqa);
                dc_check_case(c1, &c, 1e-5, 1e-5);
            }
    la_ctx_destroy(c1);
}
