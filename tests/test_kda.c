/* KDA (Kimi Delta Attention): the float64 reference against finite
 * differences, then the recurrent and chunk forms, forward and backward,
 * against the reference: odd sizes, HV = 2H value heads, varlen, initial and
 * final states, d_final_state, use_qk_l2norm on and off, gates from 0 to
 * -1e4 at random (token, head, key) positions and strong per-key decays,
 * beta in {0, 1, 1.99}, NaN-prefilled outputs; bitwise determinism across
 * thread counts; decoding step == recurrent forward bit for bit; bad input.
 * cpu-kdasaved19, la_saved of the chunk form (test_saved_*): forward output
 * with saving == without, and the backward reading the object == the one
 * recomputing, bit for bit at 1-3 threads (odd sizes, chunks 7-64, HV = 2H,
 * varlen with empty sequences, initial state and d_final_state on and off,
 * resets / zero / strong gates, beta 0 / 1 / 1.99, raw keys); outputs
 * NaN-prefilled; la_saved_bytes against the layout's payload; the object
 * really read (stale products give other gradients); a failed forward
 * leaves it empty; d_o / d_final_state still scanned; a mismatching call is
 * an error naming what differs, nothing written; the recurrent form leaves
 * it empty.
 *
 * Bounds: relative RMS <= 1e-5 against float64 for every output and
 * gradient with L2-normalised keys (the same bound as Gated DeltaNet); the
 * measured worst is printed at the end (KDA_VERBOSE=1 prints every case). */
#include "core/internal.h"
#include "harness.h"
#include "ref_kda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the reference against finite differences ------------------------ */

static double fd_worst;

static double ref_loss(const ref_kda_in *in, const double *d_o, const double *dST) {
    const int64_t T = in->T, K = in->K, V = in->V;
    double *o = th_doubles((size_t)(T * V)), *ST = th_doubles((size_t)(K * V));
    if (ref_kda_forward(in, o, ST)) abort();
    double L = 0;
    for (int64_t i = 0; i < T * V; i++) L += o[i] * d_o[i];
    for (int64_t i = 0; i < K * V; i++) L += ST[i] * dST[i];
    free(o);
    free(ST);
    return L;
}

/* Central differences (h = 1e-5): truncation ~1e-10, rounding ~1e-11
 * relative, so analytic and numerical gradients agree to 1e-7 (max error
 * relative to the tensor's largest gradient). */
static void test_reference_fd(int l2norm, uint64_t seed) {
    enum { T = 7, K = 5, V = 4 };
    la_rng rng;
    la_rng_seed(&rng, seed);
    double q[T * K], k[T * K], v[T * V], g[T * K], beta[T], S0[K * V], d_o[T * V], dST[K * V];
    for (int i = 0; i < T * K; i++) q[i] = la_rng_normal(&rng);
    for (int i = 0; i < T * K; i++) k[i] = la_rng_normal(&rng) * (l2norm ? 1 : 0.4);
    for (int i = 0; i < T * V; i++) v[i] = la_rng_normal(&rng);
    for (int i = 0; i < T * K; i++) g[i] = -0.02 - 1.5 * la_rng_uniform(&rng);
    for (int i = 0; i < T; i++) beta[i] = 0.1 + 1.5 * la_rng_uniform(&rng);
    for (int i = 0; i < K * V; i++) S0[i] = 0.5 * la_rng_normal(&rng);
    for (int i = 0; i < T * V; i++) d_o[i] = la_rng_normal(&rng);
    for (int i = 0; i < K * V; i++) dST[i] = la_rng_normal(&rng);
    ref_kda_in in = {T, K, V, 0.7, l2norm, q, k, v, g, beta, S0};
    double dq[T * K], dk[T * K], dv[T * V], dg[T * K], db[T], dS0[K * V];
    CHECK(ref_kda_backward(&in, d_o, dST, dq, dk, dv, db, dg, dS0) == 0, "reference backward");
    const struct {
        const char *name;
        double *x;
        size_t n;
        const double *grad;
    } t[] = {{"dq", q, T * K, dq},   {"dk", k, T * K, dk}, {"dv", v, T * V, dv},
             {"dbeta", beta, T, db}, {"dg", g, T * K, dg}, {"d_initial_state", S0, K * V, dS0}};
    for (int i = 0; i < 6; i++) {
        const double h = 1e-5;
        double num = 0, den = 0;
        for (size_t j = 0; j < t[i].n; j++) {
            const double x0 = t[i].x[j];
            t[i].x[j] = x0 + h;
            const double lp = ref_loss(&in, d_o, dST);
            t[i].x[j] = x0 - h;
            const double lm = ref_loss(&in, d_o, dST);
            t[i].x[j] = x0;
            const double fd = (lp - lm) / (2 * h);
            if (fabs(fd - t[i].grad[j]) > num) num = fabs(fd - t[i].grad[j]);
            if (fabs(t[i].grad[j]) > den) den = fabs(t[i].grad[j]);
        }
        const double e = num / (den > 1e-300 ? den : 1e-300);
        if (e > fd_worst) fd_worst = e;
        CHECK(e <= 1e-7, "reference l2norm=%d: %s vs finite differences %.3g > 1e-7", l2norm,
              t[i].name, e);
    }
}

/* ---- cases: the library against the reference ------------------------ */

/* GATE_SPAN: g uniform in [-span_gate, 0) (test_spans). */
typedef enum { GATE_RANDOM = 0, GATE_ZERO, GATE_RESETS, GATE_STRONG, GATE_SPAN } gate_mode;

typedef struct kcase {
    int64_t B, T, H, HV, K, V;
    const int64_t *cu;
    int64_t n_seqs;
    la_form form;
    int64_t chunk;
    int l2norm;
    float scale;
    int with_init, with_dfinal;
    gate_mode gate;
    double span_gate; /* GATE_SPAN only */
    double beta_lo, beta_hi;
    double k_std;
    uint64_t seed;
} kcase;

static kcase kc_default(void) {
    kcase c = {0};
    c.B = 2, c.T = 33, c.H = 2, c.HV = 4, c.K = 16, c.V = 16;
    c.form = LA_FORM_RECURRENT;
    c.l2norm = 1;
    c.with_init = c.with_dfinal = 1;
    c.beta_lo = 0.05, c.beta_hi = 1.0;
    c.k_std = 1.0;
    c.seed = 1;
    return c;
}

typedef struct {
    la_dims d;
    int64_t N;
    size_t nqk, nv, ng, nb, ns;
    float *q, *k, *v, *g, *beta, *S0, *d_o, *dST;
} kdata;

typedef struct {
    float *o, *ST, *dq, *dk, *dv, *dg, *dbeta, *dS0;
} kout;

static kdata kc_data(const kcase *c) {
    kdata x;
    memset(&x, 0, sizeof x);
    x.d.B = c->B, x.d.T = c->T, x.d.H = c->H, x.d.K = c->K, x.d.V = c->V, x.d.HV = c->HV;
    x.d.cu_seqlens = c->cu;
    x.d.n_seqs = c->cu ? c->n_seqs : 0;
    x.N = c->cu ? c->n_seqs : c->B;
    const size_t BT = (size_t)(c->B * c->T);
    x.nqk = BT * (size_t)(c->H * c->K);
    x.nv = BT * (size_t)(c->HV * c->V);
    x.nb = BT * (size_t)c->HV;
    x.ng = x.nb * (size_t)c->K;
    x.ns = (size_t)(x.N * c->HV * c->K * c->V);
    la_rng rng;
    la_rng_seed(&rng, c->seed);
    x.q = th_rand_floats(x.nqk, &rng, 1.0);
    x.k = th_rand_floats(x.nqk, &rng, c->k_std);
    x.v = th_rand_floats(x.nv, &rng, 1.0);
    x.d_o = th_rand_floats(x.nv, &rng, 1.0);
    x.S0 = th_rand_floats(x.ns, &rng, 0.5);
    x.dST = th_rand_floats(x.ns, &rng, 0.5);
    x.beta = th_nan_floats(x.nb);
    for (size_t i = 0; i < x.nb; i++)
        x.beta[i] = (float)(c->beta_lo + (c->beta_hi - c->beta_lo) * la_rng_uniform(&rng));
    x.g = th_nan_floats(x.ng);
    for (size_t i = 0; i < x.ng; i++) {
        const double u = la_rng_uniform(&rng);
        const double z = 2.5 + la_rng_normal(&rng);
        double g = -log1p(exp(-z)); /* logsigmoid of N(2.5, 1): around -0.08 */
        if (c->gate == GATE_ZERO) g = 0;
        if (c->gate == GATE_RESETS && u < 0.05) g = -1e4;
        if (c->gate == GATE_STRONG) g = -6.0 * u * u; /* keys that forget within a few tokens */
        if (c->gate == GATE_SPAN) g = -c->span_gate * u;
        x.g[i] = (float)g;
    }
    return x;
}

static void kc_free_data(kdata *x) {
    free(x->q), free(x->k), free(x->v), free(x->g), free(x->beta);
    free(x->S0), free(x->d_o), free(x->dST);
}

static kout kc_alloc(const kdata *x) {
    kout y;
    y.o = th_nan_floats(x->nv), y.ST = th_nan_floats(x->ns);
    y.dq = th_nan_floats(x->nqk), y.dk = th_nan_floats(x->nqk);
    y.dv = th_nan_floats(x->nv), y.dg = th_nan_floats(x->ng);
    y.dbeta = th_nan_floats(x->nb), y.dS0 = th_nan_floats(x->ns);
    return y;
}

static void kc_free(kout *y) {
    free(y->o), free(y->ST), free(y->dq), free(y->dk), free(y->dv), free(y->dg);
    free(y->dbeta), free(y->dS0);
}

static la_gated_opts kc_opts(const kcase *c) {
    la_gated_opts o = la_gated_opts_default();
    o.form = c->form;
    o.chunk_size = c->chunk;
    o.use_qk_l2norm = c->l2norm;
    o.scale = c->scale;
    return o;
}

static la_status kc_forward(la_ctx *ctx, const kcase *c, const kdata *x, kout *y) {
    la_gated_opts o = kc_opts(c);
    return la_kda_forward(ctx, &o, &x->d, y->o, y->ST, x->q, x->k, x->v, x->g, x->beta,
                          c->with_init ? x->S0 : NULL);
}

static la_status kc_backward(la_ctx *ctx, const kcase *c, const kdata *x, kout *y) {
    la_gated_opts o = kc_opts(c);
    return la_kda_backward(ctx, &o, &x->d, y->dq, y->dk, y->dv, y->dg, y->dbeta, y->dS0, x->d_o,
                           c->with_dfinal ? x->dST : NULL, x->q, x->k, x->v, x->g, x->beta,
                           c->with_init ? x->S0 : NULL);
}

typedef struct {
    double *o, *ST, *dq, *dk, *dv, *dg, *dbeta, *dS0;
} kref;

/* The float64 reference of the whole call (forward and backward). */
static kref kc_reference(const kcase *c, const kdata *x) {
    kref r;
    r.o = th_doubles(x->nv), r.ST = th_doubles(x->ns), r.dq = th_doubles(x->nqk);
    r.dk = th_doubles(x->nqk), r.dv = th_doubles(x->nv), r.dg = th_doubles(x->ng);
    r.dbeta = th_doubles(x->nb), r.dS0 = th_doubles(x->ns);
    float sc = 0;
    la__resolve_scale("test", c->scale, c->K, &sc);
    const float *S0 = c->with_init ? x->S0 : NULL, *dST = c->with_dfinal ? x->dST : NULL;
    if (ref_kda_forward_all(&x->d, sc, c->l2norm, x->q, x->k, x->v, x->g, x->beta, S0, r.o, r.ST) ||
        ref_kda_backward_all(&x->d, sc, c->l2norm, x->q, x->k, x->v, x->g, x->beta, S0, x->d_o, dST,
                             r.dq, r.dk, r.dv, r.dg, r.dbeta, r.dS0))
        abort();
    return r;
}

static void kc_free_ref(kref *r) {
    free(r->o), free(r->ST), free(r->dq), free(r->dk), free(r->dv), free(r->dg);
    free(r->dbeta), free(r->dS0);
}

static const char *form_name(la_form f) { return f == LA_FORM_CHUNK ? "chunk" : "recurrent"; }

static double worst_fwd, worst_bwd;

/* Relative RMS error; the reference's RMS is floored at 1e-30 (a tensor
 * that small, e.g. a state after hundreds of strong decays with beta = 0, is
 * below what float32 represents: it is compared in absolute terms). Fails
 * on any non-finite (e.g. unwritten, NaN-prefilled) element. */
static double rel_err(const float *got, const double *want, size_t n) {
    if (ref_count_nonfinite(got, n)) return INFINITY;
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)got[i] - want[i];
        num += d * d;
        den += want[i] * want[i];
    }
    return sqrt(num / fmax(den, 1e-60 * (double)n));
}

/* Forward and backward of case c against the float64 reference. */
static void kc_check(la_ctx *ctx, const kcase *c, double tol) {
    kdata x = kc_data(c);
    kout y = kc_alloc(&x);
    kref r = kc_reference(c, &x);
    char what[200];
    snprintf(what, sizeof what, "kda %s T=%lld H=%lld HV=%lld K=%lld V=%lld C=%lld l2=%d gate=%d",
             form_name(c->form), (long long)c->T, (long long)c->H, (long long)c->HV,
             (long long)c->K, (long long)c->V, (long long)c->chunk, c->l2norm, (int)c->gate);
    if (CHECK_STATUS(kc_forward(ctx, c, &x, &y), LA_OK, what)) {
        const double eo = rel_err(y.o, r.o, x.nv), es = rel_err(y.ST, r.ST, x.ns);
        if (getenv("KDA_VERBOSE")) printf("  %-70s o %.2e final_state %.2e\n", what, eo, es);
        worst_fwd = fmax(worst_fwd, fmax(eo, es));
        CHECK(eo <= tol && es <= tol, "%s: o rel rms %.3g, final_state %.3g (tol %.3g)", what, eo,
              es, tol);
    }
    if (CHECK_STATUS(kc_backward(ctx, c, &x, &y), LA_OK, what)) {
        const struct {
            const char *n;
            const float *g;
            const double *w;
            size_t len;
        } b[] = {{"dq", y.dq, r.dq, x.nqk}, {"dk", y.dk, r.dk, x.nqk},
                 {"dv", y.dv, r.dv, x.nv},  {"dbeta", y.dbeta, r.dbeta, x.nb},
                 {"dg", y.dg, r.dg, x.ng},  {"d_initial_state", y.dS0, r.dS0, x.ns}};
        for (int i = 0; i < 6; i++) {
            const double e = rel_err(b[i].g, b[i].w, b[i].len);
            if (getenv("KDA_VERBOSE")) printf("  %-70s %s %.2e\n", what, b[i].n, e);
            worst_bwd = fmax(worst_bwd, e);
            CHECK(e <= tol, "%s: %s rel rms %.3g > tol %.3g", what, b[i].n, e, tol);
        }
    }
    kc_free_ref(&r);
    kc_free(&y);
    kc_free_data(&x);
}

/* Odd sizes, both forms, several chunk lengths. */
static void test_sweep(la_ctx *ctx) {
    const int64_t dims[] = {16, 60, 100, 128};
    const int64_t Ts[] = {1, 63, 65, 200};
    for (int form = 1; form <= 2; form++)
        for (int ik = 0; ik < 4; ik++)
            for (int iv = 0; iv < 4; iv++) {
                if (ik + iv > 4) continue; /* 2 shared cores: skip the largest pairs */
                kcase c = kc_default();
                c.form = (la_form)form;
                c.K = dims[ik];
                c.V = dims[iv];
                c.T = Ts[(ik + 2 * iv) % 4];
                c.B = c.T > 100 ? 1 : 2;
                c.H = 1 + (ik + iv) % 2;
                c.HV = 2 * c.H;
                c.chunk = (ik + iv) % 3 == 0 ? 16 : (ik + iv) % 3 == 1 ? 32 : 0;
                c.with_init = (ik + iv + 1) % 2;
                c.with_dfinal = iv % 2;
                c.l2norm = (ik + iv) % 4 != 3;
                if (!c.l2norm) c.k_std = 1.0 / sqrt((double)c.K);
                c.gate = (gate_mode)((ik + iv) % 4);
                c.seed = (uint64_t)(300 + ik * 5 + iv + 100 * form);
                kc_check(ctx, &c, 1e-5);
            }
}

/* Gates 0, -1e4 resets at random (token, head, key) positions, strong
 * per-key decays; beta 0, 1, 1.99; raw keys; a custom scale. */
static void test_extremes(la_ctx *ctx) {
    const double betas[] = {0, 1, 1.99};
    for (int form = 1; form <= 2; form++) {
        for (int gate = 0; gate < 4; gate++)
            for (int i = 0; i < 3; i++) {
                kcase c = kc_default();
                c.form = (la_form)form;
                c.T = 100;
                c.B = 1;
                c.chunk = 32;
                c.gate = (gate_mode)gate;
                c.beta_lo = c.beta_hi = betas[i];
                c.seed = (uint64_t)(50 + 3 * gate + i);
                kc_check(ctx, &c, 1e-5);
            }
        kcase c = kc_default();
        c.form = (la_form)form;
        c.l2norm = 0;
        c.T = 200;
        c.B = 1;
        c.K = 64;
        c.V = 32;
        c.k_std = 1.0 / 8;
        c.beta_hi = 0.9;
        c.gate = GATE_RESETS;
        kc_check(ctx, &c, 1e-5);
        c = kc_default();
        c.form = (la_form)form;
        c.scale = 0.3f;
        kc_check(ctx, &c, 1e-5);
    }
}

/* The chunk form takes a sub-block's own gated pairs as one matrix product
 * of rows scaled by e^{+-span} only when the block's largest per-key decay
 * (span, log space) is <= LA__KDA_SPAN (30), else pair by pair. Gates
 * uniform in [-s, 0) give 16-token spans around 8 s: s = 1, 2 below the
 * limit, 4 on both sides of it, 8 and 12 above it and beyond float's e^88
 * (where taking them as a product would give Inf and NaN: raising the limit
 * to 1e9 makes this test fail); resets are test_extremes's;
 * chunks 16, 32, 64 (and 48: blocks cut by the chunk end), forward and
 * backward against float64. */
static void test_spans(la_ctx *ctx) {
    const double spans[] = {1, 2, 4, 8, 12};
    const int64_t chunks[] = {16, 32, 64, 48};
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) {
            kcase c = kc_default();
            c.form = LA_FORM_CHUNK;
            c.B = 1;
            c.T = 150;
            c.K = 32;
            c.V = 24;
            c.chunk = chunks[j];
            c.gate = GATE_SPAN;
            c.span_gate = spans[i];
            c.seed = (uint64_t)(700 + 4 * i + j);
            kc_check(ctx, &c, 1e-5);
        }
}

/* Long sequences: rounding must not grow along 1000 tokens. */
static void test_long(la_ctx *ctx) {
    const int64_t kv[][2] = {{64, 64}, {60, 100}};
    for (int i = 0; i < 2; i++)
        for (int form = 1; form <= 2; form++) {
            kcase c = kc_default();
            c.B = 1;
            c.T = 1000;
            c.H = 1;
            c.HV = 2;
            c.K = kv[i][0];
            c.V = kv[i][1];
            c.form = (la_form)form;
            c.chunk = i == 1 ? 32 : 0;
            c.gate = i == 1 ? GATE_RESETS : GATE_RANDOM;
            c.seed = (uint64_t)(17 + i);
            kc_check(ctx, &c, 1e-5);
        }
}

/* Lopsided heads: K = 1 or V = 1 (scratch sized for each piece). */
static void test_lopsided(la_ctx *ctx) {
    const int64_t kv[][2] = {{128, 1}, {1, 128}, {1, 1}};
    for (int i = 0; i < 3; i++)
        for (int form = 1; form <= 2; form++) {
            kcase c = kc_default();
            c.form = (la_form)form;
            c.T = 37;
            c.K = kv[i][0];
            c.V = kv[i][1];
            c.chunk = 16;
            c.gate = GATE_RESETS;
            c.seed = (uint64_t)(70 + i);
            /* K = 1 with the L2 norm makes k = +-1 and its gradient the
             * rounding noise of 1 - y^2 (ill-conditioned in any precision
             * below float64): raw keys there, small enough to contract */
            c.l2norm = c.K > 1;
            if (c.K == 1) c.k_std = 0.5;
            kc_check(ctx, &c, 1e-5);
        }
}

/* Chunk sizes 1, 7, longer than the sequence and huge (capped). */
static void test_chunk_edges(la_ctx *ctx) {
    const int64_t chunks[] = {1, 7, 500, (int64_t)1 << 40};
    for (int i = 0; i < 4; i++) {
        kcase c = kc_default();
        c.form = LA_FORM_CHUNK;
        c.T = 70;
        c.B = 1;
        c.chunk = chunks[i];
        c.gate = GATE_RESETS;
        kc_check(ctx, &c, 1e-5);
    }
}

/* cpu-fwd5: head groups on one thread, where they are largest: the chunk
 * forward's tasks take up to 4 value heads (groups 4 + 1, 3 + 3, 4 + 4 + 2
 * here) and the backward's up to 4 q/k heads (4 + 1, 3 + 3, 3), each
 * against float64 with its own random data per head. */
static void test_head_groups(void) {
    la_ctx *ctx = th_ctx(1);
    const int64_t hs[][3] = {{5, 5, 2}, {6, 6, 1}, {5, 10, 2}, {3, 6, 2}}; /* H, HV, B */
    for (int i = 0; i < 4; i++)
        for (int form = 1; form <= 2; form++) {
            kcase c = kc_default();
            c.form = (la_form)form;
            c.H = hs[i][0];
            c.HV = hs[i][1];
            c.B = hs[i][2];
            c.T = 45;
            c.K = 20;
            c.V = 12;
            c.chunk = 16;
            c.with_init = 1;
            c.with_dfinal = 1;
            c.gate = (gate_mode)(i % 4);
            c.seed = (uint64_t)(900 + 10 * i + form);
            kc_check(ctx, &c, 1e-5);
        }
    la_ctx_destroy(ctx);
}

/* Packed sequences (cu_seqlens) against the reference, also with
 * zero-length sequences (final state = initial state). */
static void test_varlen(la_ctx *ctx) {
    static const int64_t cu[] = {0, 5, 70, 71, 200}, cu0[] = {0, 0, 17, 17, 200};
    for (int form = 1; form <= 4; form++) {
        kcase c = kc_default();
        c.form = (la_form)(form > 2 ? form - 2 : form);
        c.B = 1;
        c.T = 200;
        c.cu = form > 2 ? cu0 : cu;
        c.n_seqs = 4;
        c.K = 24;
        c.V = 20;
        c.H = 2;
        c.HV = 6;
        c.chunk = 16;
        c.gate = GATE_RESETS;
        kc_check(ctx, &c, 1e-5);
    }
}

/* The chunk form against the recurrent form directly (float32 against
 * float32), every output and gradient, relative RMS <= 2e-6. */
static double worst_chunk_vs_rec;
static void test_chunk_vs_recurrent(la_ctx *ctx) {
    const int64_t Ts[] = {1, 63, 65, 200};
    for (int i = 0; i < 4; i++) {
        kcase c = kc_default();
        c.B = 1;
        c.T = Ts[i];
        c.K = i % 2 ? 60 : 100;
        c.V = i % 2 ? 100 : 60;
        c.H = 1;
        c.HV = 3;
        c.chunk = i == 3 ? 0 : 16;
        c.gate = (gate_mode)i;
        c.seed = (uint64_t)(900 + i);
        kdata x = kc_data(&c);
        kout r = kc_alloc(&x), k = kc_alloc(&x);
        kcase cr = c;
        cr.form = LA_FORM_RECURRENT;
        c.form = LA_FORM_CHUNK;
        const int ok =
            kc_forward(ctx, &cr, &x, &r) == LA_OK && kc_backward(ctx, &cr, &x, &r) == LA_OK &&
            kc_forward(ctx, &c, &x, &k) == LA_OK && kc_backward(ctx, &c, &x, &k) == LA_OK;
        CHECK(ok, "chunk vs recurrent T=%lld: calls succeed (%s)", (long long)c.T, la_last_error());
        const struct {
            const char *n;
            const float *a, *b;
            size_t len;
        } o[] = {{"o", k.o, r.o, x.nv},
                 {"final_state", k.ST, r.ST, x.ns},
                 {"dq", k.dq, r.dq, x.nqk},
                 {"dk", k.dk, r.dk, x.nqk},
                 {"dv", k.dv, r.dv, x.nv},
                 {"dg", k.dg, r.dg, x.ng},
                 {"dbeta", k.dbeta, r.dbeta, x.nb},
                 {"d_initial_state", k.dS0, r.dS0, x.ns}};
        for (int j = 0; ok && j < 8; j++) {
            double num = 0, den = 0;
            for (size_t e = 0; e < o[j].len; e++) {
                const double d = (double)o[j].a[e] - o[j].b[e];
                num += d * d;
                den += (double)o[j].b[e] * o[j].b[e];
            }
            const double err = sqrt(num / fmax(den, 1e-60 * (double)o[j].len));
            worst_chunk_vs_rec = fmax(worst_chunk_vs_rec, err);
            CHECK(err <= 2e-6, "chunk vs recurrent T=%lld gate=%d: %s rel rms %.3g > 2e-6",
                  (long long)c.T, (int)c.gate, o[j].n, err);
        }
        kc_free(&r);
        kc_free(&k);
        kc_free_data(&x);
    }
}

/* A zeroed options struct is the default chunk form (the shared options
 * rule), bit for bit; chunk_size is ignored by the recurrent form. */
static void test_default_opts(la_ctx *ctx) {
    kcase c = kc_default();
    c.T = 150;
    c.B = 1;
    kdata x = kc_data(&c);
    kout a = kc_alloc(&x), b = kc_alloc(&x), r1 = kc_alloc(&x), r2 = kc_alloc(&x);
    la_gated_opts zero = {0}, chunk = la_gated_opts_default(), rec = {0}, rec2 = {0};
    chunk.form = LA_FORM_CHUNK;
    chunk.chunk_size = LA_DEFAULT_CHUNK_SIZE;
    rec.form = rec2.form = LA_FORM_RECURRENT;
    rec2.chunk_size = -5; /* ignored */
    const int ok =
        la_kda_forward(ctx, &zero, &x.d, a.o, a.ST, x.q, x.k, x.v, x.g, x.beta, x.S0) == LA_OK &&
        la_kda_forward(ctx, &chunk, &x.d, b.o, b.ST, x.q, x.k, x.v, x.g, x.beta, x.S0) == LA_OK &&
        la_kda_forward(ctx, &rec, &x.d, r1.o, r1.ST, x.q, x.k, x.v, x.g, x.beta, x.S0) == LA_OK &&
        la_kda_forward(ctx, &rec2, &x.d, r2.o, r2.ST, x.q, x.k, x.v, x.g, x.beta, x.S0) == LA_OK;
    CHECK(ok, "default options: calls succeed (%s)", la_last_error());
    CHECK(th_bitwise_equal(a.o, b.o, x.nv) && th_bitwise_equal(a.ST, b.ST, x.ns),
          "zeroed options == chunk form with the default chunk, bit for bit");
    CHECK(th_bitwise_equal(r1.o, r2.o, x.nv), "recurrent form ignores chunk_size");
    kc_free(&a), kc_free(&b), kc_free(&r1), kc_free(&r2);
    kc_free_data(&x);
}

/* 1 and 2 threads give bit-identical outputs and gradients. */
static void test_threads(void) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    for (int form = 1; form <= 2; form++) {
        kcase c = kc_default();
        c.form = (la_form)form;
        c.chunk = 16;
        c.K = 24;
        c.V = 20;
        c.H = 2;
        c.HV = 6;
        c.gate = GATE_RESETS;
        kdata x = kc_data(&c);
        kout a = kc_alloc(&x), b = kc_alloc(&x);
        const int ok = kc_forward(c1, &c, &x, &a) == LA_OK && kc_forward(c2, &c, &x, &b) == LA_OK &&
                       kc_backward(c1, &c, &x, &a) == LA_OK && kc_backward(c2, &c, &x, &b) == LA_OK;
        CHECK(ok, "%s threads: calls succeed (%s)", form_name(c.form), la_last_error());
        CHECK(th_bitwise_equal(a.o, b.o, x.nv) && th_bitwise_equal(a.ST, b.ST, x.ns),
              "%s: forward bitwise equal with 1 and 2 threads", form_name(c.form));
        CHECK(th_bitwise_equal(a.dq, b.dq, x.nqk) && th_bitwise_equal(a.dk, b.dk, x.nqk) &&
                  th_bitwise_equal(a.dv, b.dv, x.nv) && th_bitwise_equal(a.dg, b.dg, x.ng) &&
                  th_bitwise_equal(a.dbeta, b.dbeta, x.nb) && th_bitwise_equal(a.dS0, b.dS0, x.ns),
              "%s: backward bitwise equal with 1 and 2 threads", form_name(c.form));
        kc_free(&a);
        kc_free(&b);
        kc_free_data(&x);
    }
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

/* The decoder (la_decoder_*, op LA_OP_KDA, through the registry), token by
 * token from the initial state, equals the recurrent forward bit for bit
 * (outputs and final state); HV = 2H value heads, resets, both l2norm
 * settings. */
static void test_decoder_equals_recurrent(la_ctx *ctx) {
    for (int l2 = 0; l2 < 2; l2++) {
        kcase c = kc_default();
        c.T = 40;
        c.K = 36;
        c.V = 20;
        c.l2norm = l2;
        c.gate = GATE_RESETS;
        kdata x = kc_data(&c);
        kout y = kc_alloc(&x);
        CHECK_STATUS(kc_forward(ctx, &c, &x, &y), LA_OK, "recurrent forward");
        const int64_t N = x.N, K = c.K, V = c.V, HV = c.HV, H = c.H, T = c.T;
        la_decoder_config cfg = {0};
        cfg.op = LA_OP_KDA;
        cfg.N = N, cfg.H = H, cfg.HV = HV, cfg.K = K, cfg.V = V, cfg.use_qk_l2norm = l2;
        la_decoder *dec = NULL;
        if (!CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_OK, "kda decoder")) continue;
        CHECK_STATUS(la_decoder_set_state(dec, x.S0, NULL), LA_OK, "set_state");
        float *q = th_nan_floats((size_t)(N * H * K)), *k = th_nan_floats((size_t)(N * H * K));
        float *v = th_nan_floats((size_t)(N * HV * V)), *g = th_nan_floats((size_t)(N * HV * K));
        float *b = th_nan_floats((size_t)(N * HV)), *ot = th_nan_floats((size_t)(N * HV * V));
        float *o = th_nan_floats(x.nv), *S = th_nan_floats(x.ns);
        int ok = 1;
        for (int64_t t = 0; t < T && ok; t++) {
            for (int64_t n = 0; n < N; n++) {
                const int64_t r = n * T + t;
                memcpy(q + n * H * K, x.q + r * H * K, (size_t)(H * K) * sizeof(float));
                memcpy(k + n * H * K, x.k + r * H * K, (size_t)(H * K) * sizeof(float));
                memcpy(v + n * HV * V, x.v + r * HV * V, (size_t)(HV * V) * sizeof(float));
                memcpy(g + n * HV * K, x.g + r * HV * K, (size_t)(HV * K) * sizeof(float));
                memcpy(b + n * HV, x.beta + r * HV, (size_t)HV * sizeof(float));
            }
            ok = la_decoder_step(ctx, dec, ot, q, k, v, g, NULL, b) == LA_OK;
            for (int64_t n = 0; n < N; n++)
                memcpy(o + (n * T + t) * HV * V, ot + n * HV * V, (size_t)(HV * V) * sizeof(float));
        }
        CHECK(ok, "decoder steps succeed (%s)", la_last_error());
        CHECK_STATUS(la_decoder_get_state(dec, S, NULL), LA_OK, "get_state");
        CHECK(th_bitwise_equal(o, y.o, x.nv) && th_bitwise_equal(S, y.ST, x.ns),
              "decoder == recurrent forward bit for bit (l2norm=%d)", l2);
        /* the step needs g: NULL is refused, nothing written */
        float *o2 = th_nan_floats((size_t)(N * HV * V));
        CHECK_STATUS(la_decoder_step(ctx, dec, o2, q, k, v, NULL, NULL, b), LA_ERR_NULL_POINTER,
                     "kda decoder without g");
        CHECK(th_untouched(o2, (size_t)(N * HV * V)), "kda decoder without g: o untouched");
        la_decoder_destroy(dec);
        free(q), free(k), free(v), free(g), free(b), free(ot), free(o), free(S), free(o2);
        kc_free(&y);
        kc_free_data(&x);
    }
}

/* Bad input: the status, a message naming the culprit, nothing written. */
static void test_bad_inputs(la_ctx *ctx) {
    enum {
        NULL_G,
        NULL_BETA,
        G_POS,
        G_NAN,
        BETA_HIGH,
        BETA_NAN,
        Q_NAN,
        S0_NAN,
        DO_NAN,
        BAD_HV,
        BAD_CU,
        PARALLEL,
        BAD_CHUNK,
        NULL_O,
        NULL_DG,
        NKIND
    };
    static const struct {
        la_status st;
        const char *msg;
    } want[NKIND] = {{LA_ERR_NULL_POINTER, "g is NULL"},
                     {LA_ERR_NULL_POINTER, "beta is NULL"},
                     {LA_ERR_INVALID_ARGUMENT, "g[37] = 0.5"},
                     {LA_ERR_NON_FINITE, "g[37] is NaN"},
                     {LA_ERR_INVALID_ARGUMENT, "beta[3] = 2.5"},
                     {LA_ERR_NON_FINITE, "beta[3] is NaN"},
                     {LA_ERR_NON_FINITE, "q[7] is NaN"},
                     {LA_ERR_NON_FINITE, "initial_state[1] is NaN"},
                     {LA_ERR_NON_FINITE, "d_o[4] is NaN"},
                     {LA_ERR_SHAPE_MISMATCH, "HV"},
                     {LA_ERR_BAD_SEQLENS, "cu_seqlens"},
                     {LA_ERR_INVALID_ARGUMENT, "form = 9"},
                     {LA_ERR_INVALID_ARGUMENT, "chunk_size = -1"},
                     {LA_ERR_NULL_POINTER, "o is NULL"},
                     {LA_ERR_NULL_POINTER, "dg is NULL"}};
    kcase c = kc_default();
    c.B = 1, c.T = 10, c.H = 2, c.HV = 4, c.K = 8, c.V = 8;
    for (int kind = 0; kind < NKIND; kind++)
        for (int bwd = 0; bwd < 2; bwd++) {
            if (!bwd && (kind == DO_NAN || kind == NULL_DG)) continue;
            if (bwd && kind == NULL_O) continue;
            kcase cc = c;
            kdata x = kc_data(&c);
            kout y = kc_alloc(&x);
            int64_t cu[3] = {0, 6, 10};
            const float *g = x.g, *beta = x.beta;
            float *o = y.o, *dg = y.dg;
            switch (kind) {
            case NULL_G: g = NULL; break;
            case NULL_BETA: beta = NULL; break;
            case G_POS: x.g[37] = 0.5f; break;
            case G_NAN: x.g[37] = NAN; break;
            case BETA_HIGH: x.beta[3] = 2.5f; break;
            case BETA_NAN: x.beta[3] = NAN; break;
            case Q_NAN: x.q[7] = NAN; break;
            case S0_NAN: x.S0[1] = NAN; break;
            case DO_NAN: x.d_o[4] = NAN; break;
            case BAD_HV: x.d.HV = 3; break;
            case BAD_CU:
                cu[1] = 11;
                x.d.cu_seqlens = cu;
                x.d.n_seqs = 2;
                break;
            case PARALLEL: cc.form = (la_form)9; break;
            case BAD_CHUNK:
                cc.form = LA_FORM_CHUNK;
                cc.chunk = -1;
                break;
            case NULL_O: o = NULL; break;
            case NULL_DG: dg = NULL; break;
            }
            la_gated_opts op = kc_opts(&cc);
            la_status st =
                bwd ? la_kda_backward(ctx, &op, &x.d, y.dq, y.dk, y.dv, dg, y.dbeta, y.dS0, x.d_o,
                                      x.dST, x.q, x.k, x.v, g, beta, x.S0)
                    : la_kda_forward(ctx, &op, &x.d, o, y.ST, x.q, x.k, x.v, g, beta, x.S0);
            char what[80];
            snprintf(what, sizeof what, "kda %s bad input %d", bwd ? "backward" : "forward", kind);
            CHECK_STATUS(st, want[kind].st, what);
            CHECK(strstr(la_last_error(), want[kind].msg) != NULL, "%s: message '%s' names '%s'",
                  what, la_last_error(), want[kind].msg);
            CHECK(th_untouched(y.o, x.nv) && th_untouched(y.ST, x.ns) &&
                      th_untouched(y.dq, x.nqk) && th_untouched(y.dk, x.nqk) &&
                      th_untouched(y.dv, x.nv) && th_untouched(y.dg, x.ng) &&
                      th_untouched(y.dbeta, x.nb) && th_untouched(y.dS0, x.ns),
                  "%s: outputs untouched", what);
            kc_free(&y);
            kc_free_data(&x);
        }
}

/* ---- la_saved (cpu-kdasaved19) ----------------------------------------- */

static la_status kc_forward_saved(la_ctx *ctx, const kcase *c, const kdata *x, kout *y,
                                  la_saved *s) {
    la_gated_opts o = kc_opts(c);
    o.saved = s;
    return la_kda_forward(ctx, &o, &x->d, y->o, y->ST, x->q, x->k, x->v, x->g, x->beta,
                          c->with_init ? x->S0 : NULL);
}

static la_status kc_backward_saved(la_ctx *ctx, const kcase *c, const kdata *x, kout *y,
                                   la_saved *s) {
    la_gated_opts o = kc_opts(c);
    o.saved = s;
    return la_kda_backward(ctx, &o, &x->d, y->dq, y->dk, y->dv, y->dg, y->dbeta, y->dS0, x->d_o,
                           c->with_dfinal ? x->dST : NULL, x->q, x->k, x->v, x->g, x->beta,
                           c->with_init ? x->S0 : NULL);
}

static int kc_same_grads(const kdata *x, const kout *a, const kout *b) {
    return th_bitwise_equal(a->dq, b->dq, x->nqk) && th_bitwise_equal(a->dk, b->dk, x->nqk) &&
           th_bitwise_equal(a->dv, b->dv, x->nv) && th_bitwise_equal(a->dg, b->dg, x->ng) &&
           th_bitwise_equal(a->dbeta, b->dbeta, x->nb) && th_bitwise_equal(a->dS0, b->dS0, x->ns);
}

/* The bytes the slots need (driver.c's layout, written out here): per
 * (sequence, value head, chunk) the start state K V and M, U, W, R, P (2 C^2
 * + C (2V + K)), each rounded up to 16 floats; plus cbase. */
static double kc_saved_payload(const kcase *c, const kdata *x) {
    const int64_t T = c->T, B = c->B;
    int64_t C = c->chunk ? c->chunk : 64, longest = 0, nc = 0;
    for (int64_t n = 0; n < x->N; n++) {
        const int64_t len = c->cu ? c->cu[n + 1] - c->cu[n] : T;
        longest = len > longest ? len : longest;
    }
    if (C > longest) C = longest > 0 ? longest : 1;
    for (int64_t n = 0; n < (c->cu ? x->N : B); n++) {
        const int64_t len = c->cu ? c->cu[n + 1] - c->cu[n] : T;
        nc += (len + C - 1) / C;
    }
#define UP16(n) (((n) + 15) / 16 * 16)
    const double slot = (double)(UP16(c->K * c->V) + 2 * UP16(C * C) + 2 * UP16(C * c->V) +
                                 UP16(C * c->K));
#undef UP16
    return 4.0 * slot * (double)(nc * c->HV) + 8.0 * (double)(x->N + 1);
}

/* Saved vs recomputed, bit for bit, at 1-3 threads (and the recomputing
 * call against float64 once). */
static void kc_check_saved(const kcase *c, const char *label) {
    kdata x = kc_data(c);
    kout want = kc_alloc(&x);
    la_ctx *c1 = th_ctx(1);
    CHECK_STATUS(kc_forward(c1, c, &x, &want), LA_OK, label);
    CHECK_STATUS(kc_backward(c1, c, &x, &want), LA_OK, label);
    kref r = kc_reference(c, &x);
    const double e = rel_err(want.dg, r.dg, x.ng);
    CHECK(e <= 1e-5, "%s: dg vs float64 %.3g", label, e);
    kc_free_ref(&r);
    const double payload = kc_saved_payload(c, &x);
    for (int thr = 1; thr <= 3; thr++) {
        la_ctx *ctx = th_ctx(thr);
        la_saved *s = NULL;
        CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, label);
        kout got = kc_alloc(&x);
        CHECK_STATUS(kc_forward_saved(ctx, c, &x, &got, s), LA_OK, label);
        CHECK(la_saved_filled(s) == 1, "%s, %d threads: filled after the forward", label, thr);
        const double bytes = (double)la_saved_bytes(s);
        CHECK(bytes >= payload && bytes <= payload + 4096,
              "%s: la_saved_bytes %.0f for a payload of %.0f", label, bytes, payload);
        CHECK(th_bitwise_equal(got.o, want.o, x.nv) && th_bitwise_equal(got.ST, want.ST, x.ns),
              "%s, %d threads: forward output with saving == without", label, thr);
        CHECK_STATUS(kc_backward_saved(ctx, c, &x, &got, s), LA_OK, label);
        CHECK(kc_same_grads(&x, &got, &want), "%s, %d threads: gradients from saved == recomputed",
              label, thr);
        kout again = kc_alloc(&x); /* a second backward reads the same object */
        CHECK_STATUS(kc_backward_saved(ctx, c, &x, &again, s), LA_OK, label);
        CHECK(kc_same_grads(&x, &again, &want), "%s: second backward", label);
        kc_free(&again);
        kc_free(&got);
        la_saved_destroy(s);
        la_ctx_destroy(ctx);
    }
    la_ctx_destroy(c1);
    kc_free(&want);
    kc_free_data(&x);
}

static void test_saved_bits(void) {
    static const int64_t cu[] = {0, 40, 40, 107, 150}, cu0[] = {0, 0, 33, 33, 150};
    for (int i = 0; i < 10; i++) {
        kcase c = kc_default();
        c.form = LA_FORM_CHUNK;
        c.T = 75 + 37 * i;
        c.B = 1 + i % 2;
        c.K = 9 + 8 * (i % 3);
        c.V = 7 + 12 * (i % 4);
        c.H = 1 + i % 3;
        c.HV = i % 2 ? 2 * c.H : c.H;
        c.chunk = i % 4 == 0 ? 7 : i % 4 == 1 ? 16 : i % 4 == 2 ? 64 : 0;
        c.l2norm = i % 3 != 1;
        if (!c.l2norm) c.k_std = 0.5 / sqrt((double)c.K); /* beta |k|^2 < 2 */
        c.with_init = i % 2;
        c.with_dfinal = (i / 2) % 2;
        c.gate = (gate_mode)(i % 4);
        if (i % 4 == 3) c.beta_lo = c.beta_hi = (i == 3 ? 0.0 : 1.0);
        if (i == 5) c.beta_lo = 0, c.beta_hi = 1.99;
        if (i == 6 || i == 9) { /* varlen with empty sequences */
            c.B = 1;
            c.T = 150;
            c.cu = i == 6 ? cu : cu0;
            c.n_seqs = 4;
        }
        c.seed = (uint64_t)(700 + i);
        char label[96];
        snprintf(label, sizeof label, "kda saved case %d", i);
        kc_check_saved(&c, label);
    }
    /* H = 8 on one thread: grouped forward (4 value heads) and backward tasks */
    kcase c = kc_default();
    c.form = LA_FORM_CHUNK;
    c.B = 1, c.T = 300, c.H = 8, c.HV = 8, c.K = 32, c.V = 24, c.seed = 77;
    kc_check_saved(&c, "kda saved H=8");
}

/* cpu-kda22: the chunk backward's dv and dg rows, and dq, dk through the
 * L2 norm, with non-temporal stores (forced by a threshold of 0 bytes: the
 * default shapes here are too small to reach it) give the same bits as the
 * plain copies, with and without la_saved, at 1 and 2 threads; odd V and K
 * leave rows not 16-byte aligned (memcpy) next to aligned ones (streamed,
 * with a scalar tail). */
extern size_t la__kda_stream_min_bytes; /* src/ops/kda/driver.c */
static void test_stream_rows(void) {
    for (int i = 0; i < 3; i++) {
        kcase c = kc_default();
        c.form = LA_FORM_CHUNK;
        c.T = 130 + 17 * i;
        c.K = 16 + 3 * i;
        c.V = 8 + 7 * i;
        c.H = 2, c.HV = i == 1 ? 4 : 2;
        c.chunk = i == 2 ? 16 : 0;
        c.with_dfinal = i != 0;
        c.gate = (gate_mode)i;
        c.seed = (uint64_t)(900 + i);
        char label[64];
        snprintf(label, sizeof label, "kda streamed dv/dg case %d", i);
        kdata x = kc_data(&c);
        kout want = kc_alloc(&x);
        la_ctx *c1 = th_ctx(1);
        CHECK_STATUS(kc_forward(c1, &c, &x, &want), LA_OK, label);
        CHECK_STATUS(kc_backward(c1, &c, &x, &want), LA_OK, label);
        const size_t keep = la__kda_stream_min_bytes;
        la__kda_stream_min_bytes = 0;
        for (int thr = 1; thr <= 2; thr++) {
            la_ctx *ctx = th_ctx(thr);
            kout got = kc_alloc(&x), sv = kc_alloc(&x);
            CHECK_STATUS(kc_forward(ctx, &c, &x, &got), LA_OK, label);
            CHECK_STATUS(kc_backward(ctx, &c, &x, &got), LA_OK, label);
            CHECK(kc_same_grads(&x, &got, &want), "%s, %d threads: streamed == plain", label, thr);
            la_saved *s = NULL;
            CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, label);
            CHECK_STATUS(kc_forward_saved(ctx, &c, &x, &sv, s), LA_OK, label);
            CHECK_STATUS(kc_backward_saved(ctx, &c, &x, &sv, s), LA_OK, label);
            CHECK(kc_same_grads(&x, &sv, &want), "%s, %d threads: streamed with la_saved == plain",
                  label, thr);
            la_saved_destroy(s);
            kc_free(&sv);
            kc_free(&got);
            la_ctx_destroy(ctx);
        }
        la__kda_stream_min_bytes = keep;
        la_ctx_destroy(c1);
        kc_free(&want);
        kc_free_data(&x);
    }
}

/* The saved products are read: stale ones (v changed in place after the
 * forward) give other gradients than a recompute from the new v. */
static void test_saved_really_read(void) {
    kcase c = kc_default();
    c.form = LA_FORM_CHUNK;
    c.chunk = 16;
    kdata x = kc_data(&c);
    la_ctx *ctx = th_ctx(2);
    la_saved *s = NULL;
    CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
    kout a = kc_alloc(&x), b = kc_alloc(&x);
    CHECK_STATUS(kc_forward_saved(ctx, &c, &x, &a, s), LA_OK, "forward");
    for (size_t i = 0; i < x.nv; i++) x.v[i] *= 0.5f;
    CHECK_STATUS(kc_backward_saved(ctx, &c, &x, &a, s), LA_OK, "stale backward");
    CHECK_STATUS(kc_backward(ctx, &c, &x, &b), LA_OK, "recompute");
    CHECK(!th_bitwise_equal(a.dk, b.dk, x.nqk), "kda: the backward reads the saved products");
    kc_free(&a);
    kc_free(&b);
    la_saved_destroy(s);
    la_ctx_destroy(ctx);
    kc_free_data(&x);
}

/* A backward given a filled object scans only d_o and d_final_state: a NaN /
 * Inf there is still LA_ERR_NON_FINITE naming it, nothing written, and the
 * object stays usable. A failed forward empties the object (its backward
 * scans q again). */
static void test_saved_values(void) {
    kcase c = kc_default();
    c.form = LA_FORM_CHUNK;
    c.chunk = 16;
    kdata x = kc_data(&c);
    la_ctx *ctx = th_ctx(2);
    la_saved *s = NULL;
    CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
    kout a = kc_alloc(&x), want = kc_alloc(&x);
    CHECK_STATUS(kc_forward(ctx, &c, &x, &want), LA_OK, "forward");
    CHECK_STATUS(kc_backward(ctx, &c, &x, &want), LA_OK, "backward");
    CHECK_STATUS(kc_forward_saved(ctx, &c, &x, &a, s), LA_OK, "forward");
    float *bad[] = {x.d_o + x.nv / 2, x.dST + x.ns - 1};
    const char *name[] = {"d_o", "d_final_state"};
    for (int i = 0; i < 2; i++) {
        const float keep = *bad[i];
        kout y = kc_alloc(&x);
        *bad[i] = i ? INFINITY : NAN;
        CHECK_STATUS(kc_backward_saved(ctx, &c, &x, &y, s), LA_ERR_NON_FINITE, name[i]);
        CHECK(strstr(la_last_error(), name[i]) != NULL, "kda: message names %s: %s", name[i],
              la_last_error());
        CHECK(th_untouched(y.dq, x.nqk) && th_untouched(y.dk, x.nqk) && th_untouched(y.dv, x.nv) &&
                  th_untouched(y.dg, x.ng) && th_untouched(y.dbeta, x.nb) &&
                  th_untouched(y.dS0, x.ns),
              "kda: non-finite %s: nothing written", name[i]);
        kc_free(&y);
        *bad[i] = keep;
    }
    CHECK_STATUS(kc_backward_saved(ctx, &c, &x, &a, s), LA_OK, "backward after the errors");
    CHECK(kc_same_grads(&x, &a, &want), "kda: backward after the errors == recomputed");
    { /* a failed forward empties the object: its backward scans q again */
        float *q = x.q + x.nqk / 3;
        const float keep = *q;
        *q = NAN;
        kout z = kc_alloc(&x);
        CHECK_STATUS(kc_forward_saved(ctx, &c, &x, &z, s), LA_ERR_NON_FINITE, "NaN q forward");
        CHECK(la_saved_filled(s) == 0, "kda: a failed forward empties the object");
        CHECK_STATUS(kc_backward_saved(ctx, &c, &x, &z, s), LA_ERR_NON_FINITE,
                     "backward after a failed forward");
        CHECK(th_untouched(z.dq, x.nqk) && th_untouched(z.dv, x.nv),
              "kda: backward after a failed forward: nothing written");
        *q = keep;
        /* ... also when the forward fails on a later argument (o NULL) */
        CHECK_STATUS(kc_forward_saved(ctx, &c, &x, &a, s), LA_OK, "refill");
        la_gated_opts o = kc_opts(&c);
        o.saved = s;
        CHECK_STATUS(la_kda_forward(ctx, &o, &x.d, NULL, NULL, x.q, x.k, x.v, x.g, x.beta, x.S0),
                     LA_ERR_NULL_POINTER, "forward without o");
        CHECK(la_saved_filled(s) == 0, "kda: a forward failing on o empties the object");
        kc_free(&z);
    }
    kc_free(&a);
    kc_free(&want);
    la_saved_destroy(s);
    la_ctx_destroy(ctx);
    kc_free_data(&x);
}

/* One mismatching backward: the status, a message naming `what`, nothing
 * written. */
static void kc_expect_mismatch(la_ctx *ctx, const kcase *c, const kdata *x, la_saved *s,
                               const char *what) {
    kout y = kc_alloc(x);
    CHECK_STATUS(kc_backward_saved(ctx, c, x, &y, s), LA_ERR_INVALID_ARGUMENT, what);
    CHECK(strstr(la_last_error(), what) != NULL, "kda: message names '%s': %s", what,
          la_last_error());
    CHECK(th_untouched(y.dq, x->nqk) && th_untouched(y.dv, x->nv) && th_untouched(y.dg, x->ng) &&
              th_untouched(y.dS0, x->ns),
          "kda %s: nothing written", what);
    kc_free(&y);
}

static void test_saved_mismatch(void) {
    static const int64_t cu1[] = {0, 20, 66}, cu2[] = {0, 21, 66};
    la_ctx *ctx = th_ctx(2), *other = th_ctx(1);
    kcase c = kc_default();
    c.form = LA_FORM_CHUNK;
    c.chunk = 16;
    c.B = 1;
    c.T = 66;
    c.cu = cu1;
    c.n_seqs = 2;
    kdata x = kc_data(&c);
    la_saved *s = NULL;
    CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
    kout y = kc_alloc(&x), z = kc_alloc(&x);
    CHECK_STATUS(kc_forward_saved(ctx, &c, &x, &y, s), LA_OK, "forward");
    kcase d = c;
    d.form = LA_FORM_RECURRENT;
    kc_expect_mismatch(ctx, &d, &x, s, "opts.form");
    d = c, d.chunk = 32;
    kc_expect_mismatch(ctx, &d, &x, s, "chunk length");
    d = c, d.scale = 0.5f;
    kc_expect_mismatch(ctx, &d, &x, s, "opts.scale");
    d = c, d.l2norm = 0;
    kc_expect_mismatch(ctx, &d, &x, s, "use_qk_l2norm");
    kdata x2 = x; /* the same tensors, other offsets */
    x2.d.cu_seqlens = cu2;
    kc_expect_mismatch(ctx, &c, &x2, s, "cu_seqlens");
    d = c, d.with_init = 0;
    kc_expect_mismatch(ctx, &d, &x, s, "initial_state");
    x2 = x; /* same values, another g buffer */
    x2.g = th_nan_floats(x.ng);
    memcpy(x2.g, x.g, x.ng * sizeof(float));
    kc_expect_mismatch(ctx, &c, &x2, s, "g");
    free(x2.g);
    x2 = x, x2.d.T = 65, x2.d.cu_seqlens = NULL, x2.d.n_seqs = 0;
    d = c, d.cu = NULL, d.T = 65;
    kc_expect_mismatch(ctx, &d, &x2, s, "dims.T");
    /* another context */
    CHECK_STATUS(kc_backward_saved(other, &c, &x, &z, s), LA_ERR_INVALID_ARGUMENT, "other context");
    CHECK(strstr(la_last_error(), "opts->saved") != NULL, "names opts->saved: %s", la_last_error());
    /* filled by Gated DeltaNet (g, beta [B,T,HV]: the first elements of KDA's) */
    la_gated_opts go = kc_opts(&c);
    go.saved = s;
    CHECK_STATUS(la_gated_delta_rule_forward(ctx, &go, &x.d, z.o, NULL, x.q, x.k, x.v, x.g, x.beta,
                                             x.S0),
                 LA_OK, "gated delta rule forward");
    CHECK(la_saved_filled(s) == 1, "filled by the gated delta rule");
    kc_expect_mismatch(ctx, &c, &x, s, "op");
    /* the matching call still works, and a later forward replaces the content */
    CHECK_STATUS(kc_forward_saved(ctx, &c, &x, &y, s), LA_OK, "refill");
    CHECK_STATUS(kc_backward_saved(ctx, &c, &x, &z, s), LA_OK, "matching backward");
    /* the recurrent form leaves it empty; an empty one recomputes */
    d = c, d.form = LA_FORM_RECURRENT;
    CHECK_STATUS(kc_forward_saved(ctx, &d, &x, &y, s), LA_OK, "recurrent forward");
    CHECK(la_saved_filled(s) == 0, "kda: the recurrent forward leaves it empty");
    kout e = kc_alloc(&x), f = kc_alloc(&x);
    CHECK_STATUS(kc_backward_saved(ctx, &c, &x, &e, s), LA_OK, "empty saved");
    CHECK_STATUS(kc_backward(ctx, &c, &x, &f), LA_OK, "no saved");
    CHECK(kc_same_grads(&x, &e, &f), "kda: empty saved == none");
    kc_free(&e);
    kc_free(&f);
    kc_free(&y);
    kc_free(&z);
    la_saved_destroy(s);
    la_ctx_destroy(ctx);
    la_ctx_destroy(other);
    kc_free_data(&x);
}

int main(void) {
    test_reference_fd(0, 11);
    test_reference_fd(1, 12);
    la_ctx *ctx = th_ctx(2);
    test_sweep(ctx);
    test_extremes(ctx);
    test_spans(ctx);
    test_chunk_edges(ctx);
    test_long(ctx);
    test_lopsided(ctx);
    test_varlen(ctx);
    test_head_groups();
    test_chunk_vs_recurrent(ctx);
    test_default_opts(ctx);
    test_threads();
    test_decoder_equals_recurrent(ctx);
    test_bad_inputs(ctx);
    la_ctx_destroy(ctx);
    test_saved_bits();
    test_stream_rows();
    test_saved_really_read();
    test_saved_values();
    test_saved_mismatch();
    printf("test_kda: reference vs finite differences %.2e; worst relative RMS error forward "
           "%.2e backward %.2e; chunk vs recurrent %.2e\n",
           fd_worst, worst_fwd, worst_bwd, worst_chunk_vs_rec);
    return th_summary("test_kda");
}
