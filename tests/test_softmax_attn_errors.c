/* Softmax attention: every bad input gives the right status, a message that
 * names the problem, and leaves every output exactly as it was (NaN-filled).
 * Each case runs through the forward and, where it applies, the backward, in
 * both forms. */
#include "harness.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static la_rng rng;

/* Buffers big enough for every dims used below (B*T*H <= 2*9*2 rows). */
#define ROWS 64
#define DMAX 8

typedef struct call {
    la_ctx *ctx;
    const la_softmax_opts *opts;
    const la_dims *dims;
    float *o, *lse, *dq, *dk, *dv;
    const float *q, *k, *v, *d_o;
} call;

static float *o_buf, *lse_buf, *dq_buf, *dk_buf, *dv_buf;
static float *q_buf, *k_buf, *v_buf, *do_buf;

static void refill(void) {
    for (size_t i = 0; i < ROWS * DMAX; i++) o_buf[i] = dq_buf[i] = dk_buf[i] = dv_buf[i] = NAN;
    for (size_t i = 0; i < ROWS; i++) lse_buf[i] = NAN;
}

static int outputs_untouched(void) {
    return th_untouched(o_buf, ROWS * DMAX) && th_untouched(lse_buf, ROWS) &&
           th_untouched(dq_buf, ROWS * DMAX) && th_untouched(dk_buf, ROWS * DMAX) &&
           th_untouched(dv_buf, ROWS * DMAX);
}

static call base_call(la_ctx *ctx, const la_softmax_opts *opts, const la_dims *dims) {
    call c = {ctx, opts, dims, o_buf, lse_buf, dq_buf, dk_buf, dv_buf,
              q_buf, k_buf, v_buf, do_buf};
    return c;
}

/* The call fails with `want`, the message contains `needle`, nothing written. */
static void expect(la_status got, la_status want, const char *needle, const char *what) {
    CHECK_STATUS(got, want, what);
    CHECK(strstr(la_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", what,
          la_last_error(), needle);
    CHECK(outputs_untouched(), "%s: outputs untouched", what);
    refill();
}

static la_status fwd(const call *c) {
    return la_softmax_attn_forward(c->ctx, c->opts, c->dims, c->o, c->lse, c->q, c->k, c->v);
}

static la_status bwd(const call *c) {
    return la_softmax_attn_backward(c->ctx, c->opts, c->dims, c->dq, c->dk, c->dv, c->d_o, c->q,
                                    c->k, c->v);
}

/* Both ops, both forms. */
static void expect_both(la_ctx *ctx, const la_softmax_opts *opts, const la_dims *dims,
                        la_status want, const char *needle, const char *what) {
    la_softmax_opts o = *opts;
    for (int f = 0; f < 2; f++) {
        o.form = (la_softmax_form)f;
        call c = base_call(ctx, &o, dims);
        char label[160];
        snprintf(label, sizeof label, "%s (forward, %s)", what, f ? "streaming" : "textbook");
        expect(fwd(&c), want, needle, label);
        snprintf(label, sizeof label, "%s (backward, %s)", what, f ? "streaming" : "textbook");
        expect(bwd(&c), want, needle, label);
    }
}

static void test_null(la_ctx *ctx, const la_softmax_opts *opts, const la_dims *dims) {
    for (int f = 0; f < 2; f++) {
        la_softmax_opts o = *opts;
        o.form = (la_softmax_form)f;
        call c = base_call(ctx, &o, dims);
        call x;
        x = c; x.ctx = NULL;
        expect(fwd(&x), LA_ERR_NULL_POINTER, "ctx is NULL", "fwd ctx NULL");
        expect(bwd(&x), LA_ERR_NULL_POINTER, "ctx is NULL", "bwd ctx NULL");
        x = c; x.opts = NULL;
        expect(fwd(&x), LA_ERR_NULL_POINTER, "opts is NULL", "fwd opts NULL");
        expect(bwd(&x), LA_ERR_NULL_POINTER, "opts is NULL", "bwd opts NULL");
        x = c; x.dims = NULL;
        expect(fwd(&x), LA_ERR_NULL_POINTER, "dims is NULL", "fwd dims NULL");
        expect(bwd(&x), LA_ERR_NULL_POINTER, "dims is NULL", "bwd dims NULL");
        x = c; x.o = NULL;
        expect(fwd(&x), LA_ERR_NULL_POINTER, "o is NULL", "fwd o NULL");
        x = c; x.q = NULL;
        expect(fwd(&x), LA_ERR_NULL_POINTER, "q is NULL", "fwd q NULL");
        expect(bwd(&x), LA_ERR_NULL_POINTER, "q is NULL", "bwd q NULL");
        x = c; x.k = NULL;
        expect(fwd(&x), LA_ERR_NULL_POINTER, "k is NULL", "fwd k NULL");
        expect(bwd(&x), LA_ERR_NULL_POINTER, "k is NULL", "bwd k NULL");
        x = c; x.v = NULL;
        expect(fwd(&x), LA_ERR_NULL_POINTER, "v is NULL", "fwd v NULL");
        expect(bwd(&x), LA_ERR_NULL_POINTER, "v is NULL", "bwd v NULL");
        x = c; x.dq = NULL;
        expect(bwd(&x), LA_ERR_NULL_POINTER, "dq is NULL", "bwd dq NULL");
        x = c; x.dk = NULL;
        expect(bwd(&x), LA_ERR_NULL_POINTER, "dk is NULL", "bwd dk NULL");
        x = c; x.dv = NULL;
        expect(bwd(&x), LA_ERR_NULL_POINTER, "dv is NULL", "bwd dv NULL");
        x = c; x.d_o = NULL;
        expect(bwd(&x), LA_ERR_NULL_POINTER, "d_o is NULL", "bwd d_o NULL");
        /* lse is optional */
        x = c; x.lse = NULL;
        CHECK_STATUS(fwd(&x), LA_OK, "lse NULL is fine");
        CHECK(th_untouched(lse_buf, ROWS), "lse NULL: nothing else written");
        refill();
    }
}

static void test_sizes(la_ctx *ctx, const la_softmax_opts *opts, const la_dims *good) {
    const struct { const char *name; size_t off; int64_t val; const char *needle; } cases[] = {
        {"B = 0", offsetof(la_dims, B), 0, "dims.B = 0"},
        {"T = -1", offsetof(la_dims, T), -1, "dims.T = -1"},
        {"H = 0", offsetof(la_dims, H), 0, "dims.H = 0"},
        {"K = 0", offsetof(la_dims, K), 0, "dims.K = 0"},
        {"V = -5", offsetof(la_dims, V), -5, "dims.V = -5"},
        {"HV != H", offsetof(la_dims, HV), 4, "dims.HV = 4"},
        {"HV < 0", offsetof(la_dims, HV), -1, "dims.HV = -1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        la_dims d = *good;
        memcpy((char *)&d + cases[i].off, &cases[i].val, sizeof(int64_t));
        la_status want = cases[i].off == offsetof(la_dims, HV) && cases[i].val > 0
                             ? LA_ERR_SHAPE_MISMATCH
                             : LA_ERR_INVALID_SIZE;
        expect_both(ctx, opts, &d, want, cases[i].needle, cases[i].name);
    }
    /* tensor sizes that overflow size_t */
    la_dims d = *good;
    d.B = INT64_C(1) << 40;
    d.T = INT64_C(1) << 20;
    d.K = 1 << 10;
    expect_both(ctx, opts, &d, LA_ERR_INVALID_SIZE, "overflows", "tensor size overflow");
    /* the textbook T x T matrix overflows size_t while the tensors fit: fails
     * before any tensor is read (the buffers here are far smaller than T) */
    la_dims big = {.B = 1, .T = INT64_C(1) << 31, .H = 1, .K = 1, .V = 1};
    la_softmax_opts o = *opts;
    o.form = LA_SOFTMAX_TEXTBOOK;
    call c = base_call(ctx, &o, &big);
    expect(fwd(&c), LA_ERR_INVALID_SIZE, "score matrix", "textbook T x T overflow (forward)");
    expect(bwd(&c), LA_ERR_INVALID_SIZE, "score matrix", "textbook T x T overflow (backward)");
#if !defined(__SANITIZE_ADDRESS__)
    /* 2^25 x 2^25 floats = 4 PiB cannot be allocated: out of memory, reported
     * before any tensor is read; the context still works afterwards. (ASan
     * aborts on such a request instead of returning NULL, so not there.) */
    big.T = INT64_C(1) << 25;
    expect(fwd(&c), LA_ERR_OUT_OF_MEMORY, "LA_SOFTMAX_STREAMING", "textbook out of memory");
    call ok = base_call(ctx, opts, good);
    CHECK_STATUS(fwd(&ok), LA_OK, "context usable after out of memory");
    refill();
#endif
}

static void test_options(la_ctx *ctx, const la_softmax_opts *good, const la_dims *dims) {
    la_softmax_opts o = *good;
    o.form = (la_softmax_form)7;
    call c = base_call(ctx, &o, dims);
    expect(fwd(&c), LA_ERR_INVALID_ARGUMENT, "opts->form = 7", "unknown form (forward)");
    expect(bwd(&c), LA_ERR_INVALID_ARGUMENT, "opts->form = 7", "unknown form (backward)");
    o.form = (la_softmax_form)-1;
    expect(fwd(&c), LA_ERR_INVALID_ARGUMENT, "opts->form = -1", "negative form");

    o = *good;
    o.block_size = -3;
    o.form = LA_SOFTMAX_STREAMING;
    {
        call cb = base_call(ctx, &o, dims);
        expect(fwd(&cb), LA_ERR_INVALID_ARGUMENT, "block_size = -3", "negative block (forward)");
        expect(bwd(&cb), LA_ERR_INVALID_ARGUMENT, "block_size = -3", "negative block (backward)");
    }
    /* the options rule: the textbook form has no blocks, block_size is ignored */
    o.form = LA_SOFTMAX_TEXTBOOK;
    {
        call cb = base_call(ctx, &o, dims);
        CHECK_STATUS(fwd(&cb), LA_OK, "block_size ignored by the textbook form");
        CHECK_STATUS(bwd(&cb), LA_OK, "block_size ignored by the textbook form (backward)");
        refill(); /* the outputs were written */
    }
    o = *good;
    o.scale = NAN;
    expect_both(ctx, &o, dims, LA_ERR_INVALID_ARGUMENT, "scale = nan", "NaN scale");
    o.scale = -1;
    expect_both(ctx, &o, dims, LA_ERR_INVALID_ARGUMENT, "scale = -1", "negative scale");

    /* kv_lens out of range, naming the batch index and the value */
    int64_t lens[2] = {dims->T, 0};
    o = *good;
    o.kv_lens = lens;
    expect_both(ctx, &o, dims, LA_ERR_INVALID_ARGUMENT, "kv_lens[1] = 0", "kv_lens = 0");
    lens[1] = dims->T + 1;
    char needle[64];
    snprintf(needle, sizeof needle, "kv_lens[1] = %lld", (long long)(dims->T + 1));
    expect_both(ctx, &o, dims, LA_ERR_INVALID_ARGUMENT, needle, "kv_lens > T");
    lens[0] = -2;
    expect_both(ctx, &o, dims, LA_ERR_INVALID_ARGUMENT, "kv_lens[0] = -2", "kv_lens < 0");

    /* kv_lens together with cu_seqlens */
    const int64_t cu[3] = {0, 4, 9};
    la_dims packed = {.B = 1, .T = 9, .H = dims->H, .K = dims->K, .V = dims->V,
                      .cu_seqlens = cu, .n_seqs = 2};
    const int64_t one[1] = {9};
    o = *good;
    o.kv_lens = one;
    expect_both(ctx, &o, &packed, LA_ERR_INVALID_ARGUMENT, "kv_lens and dims->cu_seqlens",
                "kv_lens with cu_seqlens");
}

static void test_cu_seqlens(la_ctx *ctx, const la_softmax_opts *opts, const la_dims *good) {
    int64_t cu[3] = {0, 4, 9};
    la_dims d = {.B = 1, .T = 9, .H = good->H, .K = good->K, .V = good->V, .cu_seqlens = cu,
                 .n_seqs = 2};
    {
        call c = base_call(ctx, opts, &d);
        CHECK_STATUS(fwd(&c), LA_OK, "well-formed cu_seqlens");
        refill();
    }
    d.B = 2;
    expect_both(ctx, opts, &d, LA_ERR_BAD_SEQLENS, "B == 1", "cu_seqlens with B = 2");
    d.B = 1;
    cu[0] = 1;
    expect_both(ctx, opts, &d, LA_ERR_BAD_SEQLENS, "cu_seqlens[0] = 1", "cu_seqlens[0] != 0");
    cu[0] = 0;
    cu[1] = 10;
    expect_both(ctx, opts, &d, LA_ERR_BAD_SEQLENS, "decreases", "decreasing");
    cu[1] = 4;
    cu[2] = 8;
    expect_both(ctx, opts, &d, LA_ERR_BAD_SEQLENS, "ends at 8", "not ending at T");
    cu[2] = 9;
    d.n_seqs = 0;
    expect_both(ctx, opts, &d, LA_ERR_BAD_SEQLENS, "n_seqs = 0", "n_seqs = 0");
    la_dims e = *good;
    e.n_seqs = 3;
    expect_both(ctx, opts, &e, LA_ERR_SHAPE_MISMATCH, "n_seqs = 3", "n_seqs without cu_seqlens");
}

static void test_non_finite(la_ctx *ctx, const la_softmax_opts *opts, const la_dims *dims) {
    float *bufs[4] = {q_buf, k_buf, v_buf, do_buf};
    const char *names[4] = {"q", "k", "v", "d_o"};
    const float bad[2] = {NAN, INFINITY};
    for (int t = 0; t < 4; t++)
        for (int b = 0; b < 2; b++) {
            const size_t idx = 5 + (size_t)t;
            const float keep = bufs[t][idx];
            bufs[t][idx] = bad[b];
            char needle[32], what[64];
            snprintf(needle, sizeof needle, "%s[%zu] is %s", names[t], idx, b ? "Inf" : "NaN");
            snprintf(what, sizeof what, "%s in %s", b ? "Inf" : "NaN", names[t]);
            for (int f = 0; f < 2; f++) {
                la_softmax_opts o = *opts;
                o.form = (la_softmax_form)f;
                call c = base_call(ctx, &o, dims);
                if (t < 3) expect(fwd(&c), LA_ERR_NON_FINITE, needle, what);
                expect(bwd(&c), LA_ERR_NON_FINITE, needle, what);
            }
            bufs[t][idx] = keep;
        }
    /* d_o is not read by the forward */
    do_buf[0] = NAN;
    call c = base_call(ctx, opts, dims);
    CHECK_STATUS(fwd(&c), LA_OK, "forward ignores d_o");
    do_buf[0] = 1;
    refill();
}

int main(void) {
    la_rng_seed(&rng, 7);
    la_ctx *ctx = th_ctx(2);
    o_buf = th_nan_floats(ROWS * DMAX);
    lse_buf = th_nan_floats(ROWS);
    dq_buf = th_nan_floats(ROWS * DMAX);
    dk_buf = th_nan_floats(ROWS * DMAX);
    dv_buf = th_nan_floats(ROWS * DMAX);
    q_buf = th_rand_floats(ROWS * DMAX, &rng, 1);
    k_buf = th_rand_floats(ROWS * DMAX, &rng, 1);
    v_buf = th_rand_floats(ROWS * DMAX, &rng, 1);
    do_buf = th_rand_floats(ROWS * DMAX, &rng, 1);

    const la_dims dims = {.B = 2, .T = 9, .H = 2, .K = 5, .V = 7};
    la_softmax_opts opts = la_softmax_opts_default();
    opts.causal = 1;
    {
        call c = base_call(ctx, &opts, &dims);
        CHECK_STATUS(fwd(&c), LA_OK, "valid forward");
        CHECK_STATUS(bwd(&c), LA_OK, "valid backward");
        refill();
    }
    test_null(ctx, &opts, &dims);
    test_sizes(ctx, &opts, &dims);
    test_options(ctx, &opts, &dims);
    test_cu_seqlens(ctx, &opts, &dims);
    test_non_finite(ctx, &opts, &dims);

    free(o_buf); free(lse_buf); free(dq_buf); free(dk_buf); free(dv_buf);
    free(q_buf); free(k_buf); free(v_buf); free(do_buf);
    la_ctx_destroy(ctx);
    return th_summary("test_softmax_attn_errors");
}
