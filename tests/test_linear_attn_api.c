/* Kernel linear attention, the API around the arithmetic: defaults, bad
 * input (status, a message naming the problem, outputs untouched), thread
 * count independence, variable-length batches, processing a sequence in
 * pieces (forward and backward through the states). */
#include "harness.h"
#include "ref_linear_attn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_TOL(err, tol, fmt, ...) \
    th_check((err) <= (tol), __FILE__, __LINE__, "err %.3g > tol %.3g: " fmt, (double)(err), \
             (double)(tol), __VA_ARGS__)

static const char *form_name(int causal, la_form f) {
    if (!causal) return "non-causal";
    return f == LA_FORM_PARALLEL ? "parallel" : f == LA_FORM_RECURRENT ? "recurrent" : "chunk";
}

static void test_defaults(void) {
    la_linear_attn_opts o = la_linear_attn_opts_default();
    CHECK(o.feature_map == LA_FEATURE_ELU1, "default feature map elu1");
    CHECK(o.causal == 0, "default non-causal (every op's default)");
    CHECK(o.form == LA_FORM_CHUNK, "default form chunk");
    CHECK(o.normalize == 1, "default normalised");
    CHECK(o.eps == LA_LINEAR_ATTN_DEFAULT_EPS && o.eps == 1e-6f, "default eps 1e-6");
    CHECK(o.scale == 0, "default scale 0 (K^-1/2)");
    CHECK(o.chunk_size == 0, "default chunk size 0 (64)");
}

/* ---- bad input ----------------------------------------------------------- */

/* Buffers of one small problem; every output NaN so untouched-ness shows. */
typedef struct {
    la_dims d;
    size_t nqk, nv, ns, nz;
    float *q, *k, *v, *S0, *z0, *d_o, *dST, *dzT;
    float *o, *fS, *fz, *dq, *dk, *dv, *dS0, *dz0;
} bufs;

static void bufs_make(bufs *b, la_dims d) {
    la_rng rng;
    la_rng_seed(&rng, 3);
    b->d = d;
    const int64_t N = d.cu_seqlens ? d.n_seqs : d.B;
    b->nqk = (size_t)(d.B * d.T * d.H * d.K);
    b->nv = (size_t)(d.B * d.T * d.H * d.V);
    b->nz = (size_t)(N * d.H * d.K);
    b->ns = b->nz * (size_t)d.V;
    b->q = th_rand_floats(b->nqk, &rng, 1);
    b->k = th_rand_floats(b->nqk, &rng, 1);
    b->v = th_rand_floats(b->nv, &rng, 1);
    b->d_o = th_rand_floats(b->nv, &rng, 1);
    b->S0 = th_rand_floats(b->ns, &rng, 1);
    b->z0 = th_rand_floats(b->nz, &rng, 1);
    ref_fill_uniform(b->z0, b->nz, &rng, 0.5, 1.5);
    b->dST = th_rand_floats(b->ns, &rng, 1);
    b->dzT = th_rand_floats(b->nz, &rng, 1);
    b->o = th_nan_floats(b->nv);
    b->fS = th_nan_floats(b->ns);
    b->fz = th_nan_floats(b->nz);
    b->dq = th_nan_floats(b->nqk);
    b->dk = th_nan_floats(b->nqk);
    b->dv = th_nan_floats(b->nv);
    b->dS0 = th_nan_floats(b->ns);
    b->dz0 = th_nan_floats(b->nz);
}

static void bufs_free(bufs *b) {
    float *p[] = {b->q, b->k, b->v, b->S0, b->z0, b->d_o, b->dST, b->dzT,
                  b->o, b->fS, b->fz, b->dq, b->dk, b->dv, b->dS0, b->dz0};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
}

static int outputs_untouched(const bufs *b) {
    return th_untouched(b->o, b->nv) && th_untouched(b->fS, b->ns) &&
           th_untouched(b->fz, b->nz) && th_untouched(b->dq, b->nqk) &&
           th_untouched(b->dk, b->nqk) && th_untouched(b->dv, b->nv) &&
           th_untouched(b->dS0, b->ns) && th_untouched(b->dz0, b->nz);
}

/* A forward/backward call with every argument overridable. */
typedef struct {
    la_ctx *ctx;
    const la_linear_attn_opts *opts;
    const la_dims *dims;
    float *o, *fS, *fz, *dq, *dk, *dv, *dS0, *dz0;
    const float *q, *k, *v, *S0, *z0, *d_o, *dST, *dzT;
} call;

static call full_call(la_ctx *ctx, const la_linear_attn_opts *opts, bufs *b) {
    call c = {ctx, opts, &b->d, b->o, b->fS, b->fz, b->dq, b->dk, b->dv, b->dS0, b->dz0,
              b->q, b->k, b->v, b->S0, b->z0, b->d_o, b->dST, b->dzT};
    if (!opts->normalize) {
        c.fz = c.dz0 = NULL;
        c.z0 = c.dzT = NULL;
    }
    return c;
}

static la_status run_fwd(const call *c) {
    return la_linear_attn_forward(c->ctx, c->opts, c->dims, c->o, c->fS, c->fz, c->q, c->k, c->v,
                                  c->S0, c->z0);
}

static la_status run_bwd(const call *c) {
    return la_linear_attn_backward(c->ctx, c->opts, c->dims, c->dq, c->dk, c->dv, c->dS0, c->dz0,
                                   c->d_o, c->dST, c->dzT, c->q, c->k, c->v, c->S0, c->z0);
}

/* Expects want from the forward (fwd) and/or backward call, a message that
 * contains `needle`, and every output still NaN. */
static void expect_bad(bufs *b, const call *c, int fwd, int bwd, la_status want,
                       const char *needle, const char *what) {
    if (fwd) {
        CHECK_STATUS(run_fwd(c), want, what);
        CHECK(strstr(la_last_error(), needle) != NULL, "forward %s: message '%s' names '%s'",
              what, la_last_error(), needle);
        CHECK(strstr(la_last_error(), "la_linear_attn_forward") != NULL,
              "forward %s: message names the op", what);
    }
    if (bwd) {
        CHECK_STATUS(run_bwd(c), want, what);
        CHECK(strstr(la_last_error(), needle) != NULL, "backward %s: message '%s' names '%s'",
              what, la_last_error(), needle);
        CHECK(strstr(la_last_error(), "la_linear_attn_backward") != NULL,
              "backward %s: message names the op", what);
    }
    CHECK(outputs_untouched(b), "%s: outputs untouched", what);
}

static void test_bad_input(la_ctx *ctx) {
    la_linear_attn_opts opts = la_linear_attn_opts_default();
    opts.causal = 1; /* the chunk form, which reads every option */
    bufs b;
    bufs_make(&b, th_dims(2, 7, 3, 5, 6));
    call c0 = full_call(ctx, &opts, &b), c;

    /* The valid call works (on copies, so the NaN outputs stay). */
    {
        bufs g;
        bufs_make(&g, b.d);
        call cg = full_call(ctx, &opts, &g);
        CHECK_STATUS(run_fwd(&cg), LA_OK, "valid forward");
        CHECK_STATUS(run_bwd(&cg), LA_OK, "valid backward");
        CHECK(ref_count_nonfinite(g.o, g.nv) == 0 && ref_count_nonfinite(g.dz0, g.nz) == 0,
              "valid call writes every output");
        bufs_free(&g);
    }

    /* NULL pointers. */
    c = c0; c.ctx = NULL; expect_bad(&b, &c, 1, 1, LA_ERR_NULL_POINTER, "ctx", "NULL ctx");
    c = c0; c.opts = NULL; expect_bad(&b, &c, 1, 1, LA_ERR_NULL_POINTER, "opts", "NULL opts");
    c = c0; c.dims = NULL; expect_bad(&b, &c, 1, 1, LA_ERR_NULL_POINTER, "dims", "NULL dims");
    c = c0; c.q = NULL; expect_bad(&b, &c, 1, 1, LA_ERR_NULL_POINTER, "q is NULL", "NULL q");
    c = c0; c.k = NULL; expect_bad(&b, &c, 1, 1, LA_ERR_NULL_POINTER, "k is NULL", "NULL k");
    c = c0; c.v = NULL; expect_bad(&b, &c, 1, 1, LA_ERR_NULL_POINTER, "v is NULL", "NULL v");
    c = c0; c.o = NULL; expect_bad(&b, &c, 1, 0, LA_ERR_NULL_POINTER, "o is NULL", "NULL o");
    c = c0; c.dq = NULL; expect_bad(&b, &c, 0, 1, LA_ERR_NULL_POINTER, "dq", "NULL dq");
    c = c0; c.dk = NULL; expect_bad(&b, &c, 0, 1, LA_ERR_NULL_POINTER, "dk", "NULL dk");
    c = c0; c.dv = NULL; expect_bad(&b, &c, 0, 1, LA_ERR_NULL_POINTER, "dv", "NULL dv");
    c = c0; c.d_o = NULL; expect_bad(&b, &c, 0, 1, LA_ERR_NULL_POINTER, "d_o", "NULL d_o");

    /* Sizes. */
    static const char *const names[] = {"B", "T", "H", "K", "V"};
    for (int f = 0; f < 5; f++)
        for (int64_t bad = 0; bad >= -1; bad--) {
            la_dims d = b.d;
            int64_t *field[] = {&d.B, &d.T, &d.H, &d.K, &d.V};
            *field[f] = bad;
            c = c0;
            c.dims = &d;
            char what[64], needle[32];
            snprintf(what, sizeof what, "dims.%s = %lld", names[f], (long long)bad);
            snprintf(needle, sizeof needle, "dims.%s", names[f]);
            expect_bad(&b, &c, 1, 1, LA_ERR_INVALID_SIZE, needle, what);
        }
    {
        la_dims d = b.d;
        d.B = INT64_C(1) << 40;
        d.T = INT64_C(1) << 20;
        d.K = 1 << 10;
        c = c0;
        c.dims = &d;
        expect_bad(&b, &c, 1, 1, LA_ERR_INVALID_SIZE, "overflows", "size overflow");
        d = b.d;
        d.HV = 2 * d.H;
        c.dims = &d;
        expect_bad(&b, &c, 1, 1, LA_ERR_SHAPE_MISMATCH, "HV", "HV != H");
        d = b.d;
        d.HV = d.H; /* HV == H is allowed */
        bufs g;
        bufs_make(&g, d);
        call cg = full_call(ctx, &opts, &g);
        CHECK_STATUS(run_fwd(&cg), LA_OK, "HV == H accepted");
        bufs_free(&g);
    }

    /* Malformed cu_seqlens, each case. */
    {
        bufs p;
        int64_t cu[4] = {0, 3, 5, 9};
        la_dims d = th_dims(1, 9, 2, 4, 3);
        d.cu_seqlens = cu;
        d.n_seqs = 3;
        bufs_make(&p, d);
        call cp = full_call(ctx, &opts, &p), cc;
        struct { int64_t cu[4]; int64_t B, n_seqs; const char *needle, *what; } bad[] = {
            {{0, 3, 5, 9}, 2, 3, "B == 1", "cu_seqlens with B = 2"},
            {{0, 3, 5, 9}, 1, 0, "n_seqs", "n_seqs = 0"},
            {{1, 3, 5, 9}, 1, 3, "cu_seqlens[0]", "cu_seqlens[0] = 1"},
            {{0, 5, 3, 9}, 1, 3, "decreases", "decreasing offsets"},
            {{0, 3, 5, 8}, 1, 3, "ends at 8", "not ending at T"},
            {{0, 3, 5, 10}, 1, 3, "ends at 10", "ending past T"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            memcpy(cu, bad[i].cu, sizeof cu);
            la_dims e = d;
            e.B = bad[i].B;
            e.n_seqs = bad[i].n_seqs;
            cc = cp;
            cc.dims = &e;
            expect_bad(&p, &cc, 1, 1, LA_ERR_BAD_SEQLENS, bad[i].needle, bad[i].what);
        }
        la_dims e = th_dims(2, 9, 2, 4, 3);
        e.n_seqs = 3; /* without cu_seqlens */
        cc = cp;
        cc.dims = &e;
        expect_bad(&p, &cc, 1, 1, LA_ERR_SHAPE_MISMATCH, "n_seqs", "n_seqs without cu_seqlens");
        bufs_free(&p);
    }

    /* Non-finite inputs, in every input tensor. */
    {
        struct { float *x; size_t n; const char *name; int fwd, bwd; } in[] = {
            {b.q, b.nqk, "q[", 1, 1}, {b.k, b.nqk, "k[", 1, 1}, {b.v, b.nv, "v[", 1, 1},
            {b.d_o, b.nv, "d_o[", 0, 1}, {b.S0, b.ns, "initial_state[", 1, 1},
            {b.z0, b.nz, "initial_norm[", 1, 1}, {b.dST, b.ns, "d_final_state[", 0, 1},
            {b.dzT, b.nz, "d_final_norm[", 0, 1},
        };
        const float badv[2] = {NAN, INFINITY};
        for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
            for (int bv = 0; bv < 2; bv++) {
                const size_t at = in[i].n / 2;
                const float keep = in[i].x[at];
                in[i].x[at] = bv ? -badv[bv] : badv[bv];
                char what[64];
                snprintf(what, sizeof what, "%s%zu] = %s", in[i].name, at, bv ? "-Inf" : "NaN");
                char needle[64];
                snprintf(needle, sizeof needle, "%s%zu] is %s", in[i].name, at,
                         bv ? "Inf" : "NaN");
                expect_bad(&b, &c0, in[i].fwd, in[i].bwd, LA_ERR_NON_FINITE, needle, what);
                in[i].x[at] = keep;
            }
    }

    /* Options. */
    la_linear_attn_opts o;
    c = c0;
    c.opts = &o;
    const int bad_fm[] = {3, -1, 100};
    for (int i = 0; i < 3; i++) {
        o = opts;
        o.feature_map = (la_feature_map)bad_fm[i];
        expect_bad(&b, &c, 1, 1, LA_ERR_INVALID_ARGUMENT, "feature_map", "unknown feature map");
        o = opts;
        o.form = (la_form)bad_fm[i];
        expect_bad(&b, &c, 1, 1, LA_ERR_INVALID_ARGUMENT, "form", "unknown form");
    }
    const float bad_eps[] = {-1e-6f, NAN, INFINITY};
    for (int i = 0; i < 3; i++) {
        o = opts;
        o.eps = bad_eps[i];
        expect_bad(&b, &c, 1, 1, LA_ERR_INVALID_ARGUMENT, "eps", "bad eps");
    }
    const float bad_scale[] = {-0.5f, NAN, INFINITY};
    for (int i = 0; i < 3; i++) {
        o = opts;
        o.normalize = 0;
        o.scale = bad_scale[i];
        call cs = full_call(ctx, &o, &b);
        expect_bad(&b, &cs, 1, 1, LA_ERR_INVALID_ARGUMENT, "scale", "bad scale");
    }
    o = opts;
    o.chunk_size = -1;
    expect_bad(&b, &c, 1, 1, LA_ERR_INVALID_ARGUMENT, "chunk_size = -1", "negative chunk size");

    /* The options rule: options without effect are ignored whatever their
     * value (same bits as with the defaults); 0 means the default. */
    {
        bufs r, g;
        bufs_make(&r, b.d);
        bufs_make(&g, b.d);
        call cr = full_call(ctx, &opts, &r);
        CHECK_STATUS(run_fwd(&cr), LA_OK, "reference call");
        struct { const char *what; int causal, normalize; la_form form; int64_t chunk;
                 float eps, scale; } cases[] = {
            {"chunk_size -1 outside the chunk form", 1, 1, LA_FORM_RECURRENT, -1, 0, 0},
            {"form and chunk_size without causal", 0, 1, (la_form)7, -5, 0, 0},
            {"eps without normalize", 1, 0, LA_FORM_CHUNK, 0, NAN, 0},
            {"scale with normalize", 1, 1, LA_FORM_CHUNK, 0, 0, -3},
            {"eps = 0 means the default", 1, 1, LA_FORM_CHUNK, 0, 0, 0},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            la_linear_attn_opts x = opts, y = opts;
            x.causal = y.causal = cases[i].causal;
            x.normalize = y.normalize = cases[i].normalize;
            x.form = cases[i].form;
            y.form = cases[i].causal ? cases[i].form : LA_FORM_CHUNK;
            x.chunk_size = cases[i].chunk;
            x.eps = cases[i].eps;
            x.scale = cases[i].scale;
            y.chunk_size = 0;
            y.eps = LA_LINEAR_ATTN_DEFAULT_EPS;
            y.scale = 0;
            call cx = full_call(ctx, &x, &r), cy = full_call(ctx, &y, &g);
            if (!cases[i].normalize) cx.fz = cy.fz = NULL, cx.z0 = cy.z0 = NULL;
            if (!cases[i].normalize) cx.dz0 = cy.dz0 = NULL, cx.dzT = cy.dzT = NULL;
            CHECK_STATUS(run_fwd(&cx), LA_OK, cases[i].what);
            CHECK_STATUS(run_fwd(&cy), LA_OK, cases[i].what);
            CHECK(th_bitwise_equal(r.o, g.o, r.nv), "%s: same output as the defaults",
                  cases[i].what);
            CHECK_STATUS(run_bwd(&cx), LA_OK, cases[i].what);
            CHECK_STATUS(run_bwd(&cy), LA_OK, cases[i].what);
            CHECK(th_bitwise_equal(r.dq, g.dq, r.nqk), "%s: same dq as the defaults",
                  cases[i].what);
        }
        /* A zeroed struct is valid: non-causal, identity, unnormalised. */
        la_linear_attn_opts z;
        memset(&z, 0, sizeof z);
        call cz = full_call(ctx, &z, &r);
        cz.fz = NULL, cz.z0 = NULL, cz.dz0 = NULL, cz.dzT = NULL;
        CHECK_STATUS(run_fwd(&cz), LA_OK, "zero-initialised options");
        CHECK_STATUS(run_bwd(&cz), LA_OK, "zero-initialised options (backward)");
        bufs_free(&r);
        bufs_free(&g);
    }

    /* Normaliser arguments without normalisation. */
    o = opts;
    o.normalize = 0;
    {
        call cn = full_call(ctx, &o, &b);
        cn.fz = b.fz;
        expect_bad(&b, &cn, 1, 0, LA_ERR_INVALID_ARGUMENT, "final_norm", "final_norm unnormalised");
        cn = full_call(ctx, &o, &b);
        cn.z0 = b.z0;
        expect_bad(&b, &cn, 1, 1, LA_ERR_INVALID_ARGUMENT, "initial_norm",
                   "initial_norm unnormalised");
        cn = full_call(ctx, &o, &b);
        cn.dz0 = b.dz0;
        expect_bad(&b, &cn, 0, 1, LA_ERR_INVALID_ARGUMENT, "d_initial_norm",
                   "d_initial_norm unnormalised");
        cn = full_call(ctx, &o, &b);
        cn.dzT = b.dzT;
        expect_bad(&b, &cn, 0, 1, LA_ERR_INVALID_ARGUMENT, "d_final_norm",
                   "d_final_norm unnormalised");
    }

    /* Non-causal ignores the form but still checks it; every chunk size
     * >= 0 is valid, however large. */
    {
        bufs g;
        bufs_make(&g, b.d);
        o = opts;
        o.chunk_size = INT64_C(1) << 40;
        call cg = full_call(ctx, &o, &g);
        CHECK_STATUS(run_fwd(&cg), LA_OK, "huge chunk size");
        CHECK_STATUS(run_bwd(&cg), LA_OK, "huge chunk size backward");
        bufs_free(&g);
    }
    bufs_free(&b);
}

/* ---- thread count independence --------------------------------------------- */

static void test_threads(void) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2), *c3 = th_ctx(3);
    int64_t cu[5] = {0, 70, 71, 200, 333};
    la_dims d = th_dims(1, 333, 3, 24, 40);
    d.cu_seqlens = cu;
    d.n_seqs = 4;
    for (int fm = 0; fm < 3; fm++)
        for (int norm = 0; norm < 2; norm++)
            for (int f = 0; f < 4; f++) {
                la_linear_attn_opts o = la_linear_attn_opts_default();
                o.feature_map = (la_feature_map)fm;
                o.normalize = norm;
                o.causal = f < 3;
                o.form = f < 3 ? (la_form)f : LA_FORM_CHUNK;
                o.chunk_size = 32;
                bufs r[3];
                la_ctx *ctxs[3] = {c1, c2, c3};
                for (int t = 0; t < 3; t++) {
                    bufs_make(&r[t], d);
                    call c = full_call(ctxs[t], &o, &r[t]);
                    CHECK_STATUS(run_fwd(&c), LA_OK, "threads fwd");
                    CHECK_STATUS(run_bwd(&c), LA_OK, "threads bwd");
                }
                for (int t = 1; t < 3; t++) {
                    int same = th_bitwise_equal(r[0].o, r[t].o, r[0].nv) &&
                               th_bitwise_equal(r[0].fS, r[t].fS, r[0].ns) &&
                               th_bitwise_equal(r[0].fz, r[t].fz, r[0].nz);
                    CHECK(same, "forward bitwise equal, 1 vs %d threads (%s fm=%d norm=%d)",
                          t + 1, form_name(o.causal, o.form), fm, norm);
                    same = th_bitwise_equal(r[0].dq, r[t].dq, r[0].nqk) &&
                           th_bitwise_equal(r[0].dk, r[t].dk, r[0].nqk) &&
                           th_bitwise_equal(r[0].dv, r[t].dv, r[0].nv) &&
                           th_bitwise_equal(r[0].dS0, r[t].dS0, r[0].ns) &&
                           th_bitwise_equal(r[0].dz0, r[t].dz0, r[0].nz);
                    CHECK(same, "backward bitwise equal, 1 vs %d threads (%s fm=%d norm=%d)",
                          t + 1, form_name(o.causal, o.form), fm, norm);
                }
                for (int t = 0; t < 3; t++) bufs_free(&r[t]);
            }
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
    la_ctx_destroy(c3);
}

/* ---- variable-length batches ------------------------------------------------- */

/* Copies sequence rows [s, s+len) of x [1,T,H,D] into y [1,len,H,D] or back. */
static void rows(float *dst, const float *src, int64_t s, int64_t len, int64_t HD, int back) {
    if (!back) memcpy(dst, src + s * HD, (size_t)(len * HD) * sizeof(float));
    else memcpy(dst + s * HD, src, (size_t)(len * HD) * sizeof(float));
}

/* Packed sequences give exactly (bitwise) what each sequence gives alone:
 * a unit's arithmetic does not depend on its neighbours. */
static void test_cu_seqlens(la_ctx *ctx) {
    int64_t cu[5] = {0, 1, 66, 130, 200};
    const int64_t H = 2, K = 12, V = 9, S = 4;
    la_dims d = th_dims(1, 200, H, K, V);
    d.cu_seqlens = cu;
    d.n_seqs = S;
    for (int norm = 0; norm < 2; norm++)
        for (int f = 0; f < 4; f++) {
            la_linear_attn_opts o = la_linear_attn_opts_default();
            o.normalize = norm;
            o.causal = f < 3;
            o.form = f < 3 ? (la_form)f : LA_FORM_CHUNK;
            bufs p;
            bufs_make(&p, d);
            call cp = full_call(ctx, &o, &p);
            CHECK_STATUS(run_fwd(&cp), LA_OK, "packed fwd");
            CHECK_STATUS(run_bwd(&cp), LA_OK, "packed bwd");
            int same = 1;
            for (int64_t n = 0; n < S; n++) {
                const int64_t s = cu[n], len = cu[n + 1] - cu[n];
                bufs a;
                bufs_make(&a, th_dims(1, len, H, K, V));
                rows(a.q, p.q, s, len, H * K, 0);
                rows(a.k, p.k, s, len, H * K, 0);
                rows(a.v, p.v, s, len, H * V, 0);
                rows(a.d_o, p.d_o, s, len, H * V, 0);
                memcpy(a.S0, p.S0 + n * H * K * V, (size_t)(H * K * V) * sizeof(float));
                memcpy(a.dST, p.dST + n * H * K * V, (size_t)(H * K * V) * sizeof(float));
                memcpy(a.z0, p.z0 + n * H * K, (size_t)(H * K) * sizeof(float));
                memcpy(a.dzT, p.dzT + n * H * K, (size_t)(H * K) * sizeof(float));
                call ca = full_call(ctx, &o, &a);
                CHECK_STATUS(run_fwd(&ca), LA_OK, "alone fwd");
                CHECK_STATUS(run_bwd(&ca), LA_OK, "alone bwd");
                same &= th_bitwise_equal(a.o, p.o + s * H * V, a.nv);
                same &= th_bitwise_equal(a.dq, p.dq + s * H * K, a.nqk);
                same &= th_bitwise_equal(a.dk, p.dk + s * H * K, a.nqk);
                same &= th_bitwise_equal(a.dv, p.dv + s * H * V, a.nv);
                same &= th_bitwise_equal(a.fS, p.fS + n * H * K * V, a.ns);
                same &= th_bitwise_equal(a.dS0, p.dS0 + n * H * K * V, a.ns);
                if (norm) {
                    same &= th_bitwise_equal(a.fz, p.fz + n * H * K, a.nz);
                    same &= th_bitwise_equal(a.dz0, p.dz0 + n * H * K, a.nz);
                }
                bufs_free(&a);
            }
            CHECK(same, "cu_seqlens == each sequence alone, bitwise (%s norm=%d)",
                  form_name(o.causal, o.form), norm);
            bufs_free(&p);
        }
}

/* ---- a sequence in two pieces ------------------------------------------------ */

/* Forward: piece 1 from (S0, z0), its final state feeds piece 2; the
 * outputs and the final state equal the whole sequence's. Backward: piece
 * 2's d_initial_state/norm is piece 1's d_final_state/norm; the gradients
 * equal the whole's. The recurrent form does the same arithmetic either
 * way, so it must match bitwise; the chunk and parallel forms cut their
 * blocks elsewhere, so they match to float32 rounding (1e-5 relative). */
static void test_pieces(la_ctx *ctx) {
    const int64_t T = 150, T1 = 77, T2 = T - T1, B = 2, H = 2, K = 10, V = 14;
    for (int norm = 0; norm < 2; norm++)
        for (int f = 0; f < 3; f++) {
            la_linear_attn_opts o = la_linear_attn_opts_default();
            o.causal = 1;
            o.normalize = norm;
            o.form = (la_form)f;
            o.chunk_size = 32;
            bufs w, p1, p2;
            bufs_make(&w, th_dims(B, T, H, K, V));
            bufs_make(&p1, th_dims(B, T1, H, K, V));
            bufs_make(&p2, th_dims(B, T2, H, K, V));
            for (int64_t bb = 0; bb < B; bb++) {
                float *src[] = {w.q, w.k, w.v, w.d_o};
                float *d1[] = {p1.q, p1.k, p1.v, p1.d_o}, *d2[] = {p2.q, p2.k, p2.v, p2.d_o};
                const int64_t D[] = {K, K, V, V};
                for (int a = 0; a < 4; a++) {
                    const int64_t HD = H * D[a];
                    memcpy(d1[a] + bb * T1 * HD, src[a] + bb * T * HD,
                           (size_t)(T1 * HD) * sizeof(float));
                    memcpy(d2[a] + bb * T2 * HD, src[a] + (bb * T + T1) * HD,
                           (size_t)(T2 * HD) * sizeof(float));
                }
            }
            memcpy(p1.S0, w.S0, w.ns * sizeof(float));
            memcpy(p1.z0, w.z0, w.nz * sizeof(float));
            memcpy(p2.dST, w.dST, w.ns * sizeof(float));
            memcpy(p2.dzT, w.dzT, w.nz * sizeof(float));
            call cw = full_call(ctx, &o, &w), c1 = full_call(ctx, &o, &p1);
            call c2 = full_call(ctx, &o, &p2);
            CHECK_STATUS(run_fwd(&cw), LA_OK, "whole fwd");
            CHECK_STATUS(run_fwd(&c1), LA_OK, "piece 1 fwd");
            c2.S0 = p1.fS;
            c2.z0 = norm ? p1.fz : NULL;
            CHECK_STATUS(run_fwd(&c2), LA_OK, "piece 2 fwd");
            CHECK_STATUS(run_bwd(&cw), LA_OK, "whole bwd");
            CHECK_STATUS(run_bwd(&c2), LA_OK, "piece 2 bwd");
            c1.dST = p2.dS0;
            c1.dzT = norm ? p2.dz0 : NULL;
            CHECK_STATUS(run_bwd(&c1), LA_OK, "piece 1 bwd");
            /* Reassemble the pieces in the whole's layout. */
            float *o_ = th_nan_floats(w.nv), *dq = th_nan_floats(w.nqk);
            float *dk = th_nan_floats(w.nqk), *dv = th_nan_floats(w.nv);
            for (int64_t bb = 0; bb < B; bb++) {
                float *dst[] = {o_, dq, dk, dv};
                const float *s1[] = {p1.o, p1.dq, p1.dk, p1.dv}, *s2[] = {p2.o, p2.dq, p2.dk, p2.dv};
                const int64_t D[] = {V, K, K, V};
                for (int a = 0; a < 4; a++) {
                    const int64_t HD = H * D[a];
                    memcpy(dst[a] + bb * T * HD, s1[a] + bb * T1 * HD,
                           (size_t)(T1 * HD) * sizeof(float));
                    memcpy(dst[a] + (bb * T + T1) * HD, s2[a] + bb * T2 * HD,
                           (size_t)(T2 * HD) * sizeof(float));
                }
            }
            const float *got[] = {o_, p2.fS, p2.fz, dq, dk, dv, p1.dS0, p1.dz0};
            const float *want[] = {w.o, w.fS, w.fz, w.dq, w.dk, w.dv, w.dS0, w.dz0};
            const size_t n[] = {w.nv, w.ns, w.nz, w.nqk, w.nqk, w.nv, w.ns, w.nz};
            static const char *nm[] = {"o", "final_state", "final_norm", "dq", "dk", "dv",
                                       "d_initial_state", "d_initial_norm"};
            for (int a = 0; a < 8; a++) {
                if (!norm && (a == 2 || a == 7)) continue;
                if (f == LA_FORM_RECURRENT)
                    CHECK(th_bitwise_equal(got[a], want[a], n[a]),
                          "two pieces == whole, bitwise: %s (recurrent norm=%d)", nm[a], norm);
                else
                    CHECK_TOL(ref_max_rel_err_ff(got[a], want[a], n[a]), 1e-5,
                              "two pieces == whole: %s (%s norm=%d)", nm[a],
                              form_name(1, o.form), norm);
            }
            free(o_);
            free(dq);
            free(dk);
            free(dv);
            bufs_free(&w);
            bufs_free(&p1);
            bufs_free(&p2);
        }
}

/* final_state may be the very buffer initial_state was read from (a state
 * carried in place from call to call). */
static void test_state_in_place(la_ctx *ctx) {
    for (int f = 0; f < 4; f++) {
        la_linear_attn_opts o = la_linear_attn_opts_default();
        o.causal = f < 3;
        o.form = f < 3 ? (la_form)f : LA_FORM_CHUNK;
        bufs a, b;
        bufs_make(&a, th_dims(2, 40, 3, 8, 5));
        bufs_make(&b, a.d);
        call ca = full_call(ctx, &o, &a), cb = full_call(ctx, &o, &b);
        CHECK_STATUS(run_fwd(&ca), LA_OK, "separate state buffers");
        cb.fS = b.S0;
        cb.fz = b.z0;
        CHECK_STATUS(run_fwd(&cb), LA_OK, "state in place");
        CHECK(th_bitwise_equal(a.o, b.o, a.nv) && th_bitwise_equal(a.fS, b.S0, a.ns) &&
                  th_bitwise_equal(a.fz, b.z0, a.nz),
              "final_state may alias initial_state (%s)", form_name(o.causal, o.form));
        CHECK_STATUS(run_bwd(&ca), LA_OK, "separate gradient buffers");
        memcpy(b.S0, a.S0, a.ns * sizeof(float));
        memcpy(b.z0, a.z0, a.nz * sizeof(float));
        cb = full_call(ctx, &o, &b);
        cb.dS0 = b.dST;
        cb.dz0 = b.dzT;
        CHECK_STATUS(run_bwd(&cb), LA_OK, "gradient in place");
        CHECK(th_bitwise_equal(a.dq, b.dq, a.nqk) && th_bitwise_equal(a.dS0, b.dST, a.ns) &&
                  th_bitwise_equal(a.dz0, b.dzT, a.nz),
              "d_initial_state may alias d_final_state (%s)", form_name(o.causal, o.form));
        bufs_free(&a);
        bufs_free(&b);
    }
}

int main(void) {
    la_ctx *ctx = th_ctx(2);
    test_defaults();
    test_bad_input(ctx);
    test_threads();
    test_cu_seqlens(ctx);
    test_pieces(ctx);
    test_state_in_place(ctx);
    la_ctx_destroy(ctx);
    return th_summary("test_linear_attn_api");
}
