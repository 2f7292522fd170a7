/* Saved for backward (la_saved): DeltaNet and Gated DeltaNet chunk forms.
 *
 * - A forward given a saved object writes the same output bits, and the
 *   backward that reads it gives gradients bitwise identical to the
 *   backward that recomputes (1, 2, 3 threads; odd sizes, chunks 7-64,
 *   varlen with an empty sequence, HV = 2H, gates random / 0 / -1e4 resets,
 *   beta 0 / 1 / up to 1.99, raw and L2-normalised keys); ctest runs it on
 *   every SIMD path (_avx2, _portable repeats).
 * - The saved products are really read: after the forward, v is changed in
 *   place (same pointer), and the saved backward then differs from the
 *   recomputing one.
 * - A saved object filled by another call (op, form, dims, cu_seqlens,
 *   chunk, scale, l2norm, an input pointer, context) is an error naming the
 *   mismatch, nothing written; an empty one recomputes; the recurrent form
 *   leaves it empty; bad arguments of la_saved_create. */
#include "delta_rule_cases.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int same_grads(const ddata *x, const dout *a, const dout *b, int gated) {
    return th_bitwise_equal(a->dq, b->dq, x->nqk) && th_bitwise_equal(a->dk, b->dk, x->nqk) &&
           th_bitwise_equal(a->dv, b->dv, x->nv) && th_bitwise_equal(a->dbeta, b->dbeta, x->ng) &&
           th_bitwise_equal(a->dS0, b->dS0, x->ns) &&
           (!gated || th_bitwise_equal(a->dg, b->dg, x->ng));
}

/* Saved vs recomputed, bit for bit, at 1-3 threads; and against float64. */
static void check_bits(const dcase *c, const char *label) {
    ddata x = dc_data(c);
    dout want = dc_alloc_out(&x);
    la_ctx *c1 = th_ctx(1);
    CHECK_STATUS(dc_forward(c1, c, &x, &want), LA_OK, label);
    CHECK_STATUS(dc_backward(c1, c, &x, &want), LA_OK, label);
    dref r = dc_reference(c, &x, 1);
    CHECK_ERR(dc_err(want.dk, r.dk, x.nqk), 1e-4, "%s: dk vs float64", label);
    dc_free_ref(&r);
    for (int thr = 1; thr <= 3; thr++) {
        la_ctx *ctx = th_ctx(thr);
        la_saved *s = NULL;
        CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, label);
        dout got = dc_alloc_out(&x);
        CHECK_STATUS(dc_forward_saved(ctx, c, &x, &got, s), LA_OK, label);
        CHECK(la_saved_filled(s) == 1, "%s, %d threads: filled after the forward", label, thr);
        CHECK(la_saved_bytes(s) > 0, "%s: bytes", label);
        CHECK(th_bitwise_equal(got.o, want.o, x.nv) && th_bitwise_equal(got.ST, want.ST, x.ns),
              "%s, %d threads: forward output with saving == without", label, thr);
        CHECK_STATUS(dc_backward_saved(ctx, c, &x, &got, s), LA_OK, label);
        CHECK(same_grads(&x, &got, &want, c->gated),
              "%s, %d threads: gradients from saved == recomputed", label, thr);
        /* a second backward reads the same saved products */
        dout again = dc_alloc_out(&x);
        CHECK_STATUS(dc_backward_saved(ctx, c, &x, &again, s), LA_OK, label);
        CHECK(same_grads(&x, &again, &want, c->gated), "%s: second backward", label);
        dc_free_out(&again);
        dc_free_out(&got);
        la_saved_destroy(s);
        la_ctx_destroy(ctx);
    }
    la_ctx_destroy(c1);
    dc_free_out(&want);
    dc_free_data(&x);
}

static void test_bits(void) {
    static const int64_t cu[] = {0, 40, 40, 107, 150};
    for (int gated = 0; gated <= 1; gated++)
        for (int i = 0; i < 8; i++) {
            dcase c = dc_default(gated);
            c.form = LA_FORM_CHUNK;
            c.T = 75 + 37 * i;
            c.K = 9 + 8 * (i % 3);
            c.V = 7 + 12 * (i % 4);
            c.H = 1 + i % 3;
            c.HV = gated && i % 2 ? 2 * c.H : 0;
            c.chunk = i % 4 == 0 ? 7 : i % 4 == 1 ? 16 : i % 4 == 2 ? 64 : 0;
            c.l2norm = i % 3 != 1;
            if (!c.l2norm) c.k_std = 0.5 / sqrt((double)c.K); /* beta |k|^2 < 2 */
            c.with_init = i % 2;
            c.with_dfinal = (i / 2) % 2;
            c.gate = (gate_mode)(i % 3);
            if (i % 4 == 3) c.beta_lo = c.beta_hi = (i == 3 ? 0.0 : 1.0);
            if (i == 5) c.beta_lo = 0, c.beta_hi = 1.99;
            if (i == 6) { /* varlen with an empty sequence */
                c.B = 1;
                c.T = 150;
                c.cu = cu;
                c.n_seqs = 4;
            }
            c.seed = (uint64_t)(900 + 10 * gated + i);
            char label[96];
            snprintf(label, sizeof label, "%s case %d", gated ? "gdn" : "delta", i);
            check_bits(&c, label);
        }
    /* H = 8 on one thread: grouped forward and backward tasks (4 heads) */
    for (int gated = 0; gated <= 1; gated++) {
        dcase c = dc_default(gated);
        c.form = LA_FORM_CHUNK;
        c.B = 1;
        c.T = 300;
        c.H = 8;
        c.K = 32;
        c.V = 24;
        c.seed = 77;
        check_bits(&c, gated ? "gdn H=8" : "delta H=8");
    }
}

/* The saved products are read: stale ones (v changed after the forward)
 * give other gradients than a recompute from the new v. */
static void test_really_read(void) {
    for (int gated = 0; gated <= 1; gated++) {
        dcase c = dc_default(gated);
        c.form = LA_FORM_CHUNK;
        c.chunk = 16;
        ddata x = dc_data(&c);
        la_ctx *ctx = th_ctx(2);
        la_saved *s = NULL;
        CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
        dout a = dc_alloc_out(&x), b = dc_alloc_out(&x);
        CHECK_STATUS(dc_forward_saved(ctx, &c, &x, &a, s), LA_OK, "forward");
        for (size_t i = 0; i < x.nv; i++) x.v[i] *= 0.5f;
        CHECK_STATUS(dc_backward_saved(ctx, &c, &x, &a, s), LA_OK, "stale backward");
        CHECK_STATUS(dc_backward(ctx, &c, &x, &b), LA_OK, "recompute");
        CHECK(!th_bitwise_equal(a.dk, b.dk, x.nqk), "%s: the backward reads the saved products",
              gated ? "gdn" : "delta");
        dc_free_out(&a);
        dc_free_out(&b);
        la_saved_destroy(s);
        la_ctx_destroy(ctx);
        dc_free_data(&x);
    }
}

/* One mismatching backward: the status, a message naming `what`, nothing
 * written. */
static void expect_mismatch(la_ctx *ctx, const dcase *c, const ddata *x, la_saved *s,
                            const char *what) {
    dout y = dc_alloc_out(x);
    CHECK_STATUS(dc_backward_saved(ctx, c, x, &y, s), LA_ERR_INVALID_ARGUMENT, what);
    CHECK(strstr(la_last_error(), what) != NULL, "message names '%s': %s", what, la_last_error());
    CHECK(th_untouched(y.dq, x->nqk) && th_untouched(y.dv, x->nv) && th_untouched(y.dS0, x->ns),
          "%s: nothing written", what);
    dc_free_out(&y);
}

static void test_mismatch(void) {
    static const int64_t cu1[] = {0, 20, 66}, cu2[] = {0, 21, 66};
    la_ctx *ctx = th_ctx(2), *other = th_ctx(1);
    dcase c = dc_default(1);
    c.form = LA_FORM_CHUNK;
    c.chunk = 16;
    c.B = 1;
    c.T = 66;
    c.cu = cu1;
    c.n_seqs = 2;
    ddata x = dc_data(&c);
    la_saved *s = NULL;
    CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
    dout y = dc_alloc_out(&x);
    CHECK_STATUS(dc_forward_saved(ctx, &c, &x, &y, s), LA_OK, "forward");
    dcase d = c;
    d.gated = 0;
    expect_mismatch(ctx, &d, &x, s, "op");
    d = c, d.form = LA_FORM_RECURRENT;
    expect_mismatch(ctx, &d, &x, s, "opts.form");
    d = c, d.chunk = 32;
    expect_mismatch(ctx, &d, &x, s, "chunk length");
    d = c, d.scale = 0.5f;
    expect_mismatch(ctx, &d, &x, s, "opts.scale");
    d = c, d.l2norm = 0;
    expect_mismatch(ctx, &d, &x, s, "use_qk_l2norm");
    ddata x2 = x; /* the same tensors, other offsets */
    x2.d.cu_seqlens = cu2;
    expect_mismatch(ctx, &c, &x2, s, "cu_seqlens");
    d = c, d.with_init = 0;
    expect_mismatch(ctx, &d, &x, s, "initial_state");
    x2 = x; /* same values, another q buffer */
    x2.q = th_nan_floats(x.nqk);
    memcpy(x2.q, x.q, x.nqk * sizeof(float));
    expect_mismatch(ctx, &c, &x2, s, "q");
    free(x2.q);
    x2 = x, x2.d.T = 65, x2.d.cu_seqlens = NULL, x2.d.n_seqs = 0;
    d = c, d.cu = NULL, d.T = 65;
    expect_mismatch(ctx, &d, &x2, s, "dims.T");
    /* another context */
    dout z = dc_alloc_out(&x);
    CHECK_STATUS(dc_backward_saved(other, &c, &x, &z, s), LA_ERR_INVALID_ARGUMENT, "other context");
    CHECK(strstr(la_last_error(), "opts->saved") != NULL, "names opts->saved: %s", la_last_error());
    CHECK_STATUS(dc_forward_saved(other, &c, &x, &z, s), LA_ERR_INVALID_ARGUMENT,
                 "forward, other context");
    CHECK(th_untouched(z.o, x.nv), "forward on another context writes nothing");
    /* the matching call still works, and a later forward replaces the content */
    CHECK_STATUS(dc_backward_saved(ctx, &c, &x, &z, s), LA_OK, "matching backward");
    d = c, d.chunk = 32;
    CHECK_STATUS(dc_forward_saved(ctx, &d, &x, &y, s), LA_OK, "refill");
    expect_mismatch(ctx, &c, &x, s, "chunk length");
    CHECK_STATUS(dc_backward_saved(ctx, &d, &x, &z, s), LA_OK, "backward of the refill");
    /* the recurrent form leaves it empty; an empty one recomputes */
    d = c, d.form = LA_FORM_RECURRENT;
    CHECK_STATUS(dc_forward_saved(ctx, &d, &x, &y, s), LA_OK, "recurrent forward");
    CHECK(la_saved_filled(s) == 0, "recurrent forward leaves it empty");
    dout e = dc_alloc_out(&x), f = dc_alloc_out(&x);
    CHECK_STATUS(dc_backward_saved(ctx, &c, &x, &e, s), LA_OK, "empty saved");
    CHECK_STATUS(dc_backward(ctx, &c, &x, &f), LA_OK, "no saved");
    CHECK(same_grads(&x, &e, &f, 1), "empty saved == none");
    /* a context destroyed after the create */
    la_saved *orphan = NULL;
    CHECK_STATUS(la_saved_create(other, &orphan), LA_OK, "create on other");
    la_ctx_destroy(other);
    la_ctx *third = th_ctx(1);
    CHECK_STATUS(dc_backward_saved(third, &c, &x, &z, orphan), LA_ERR_INVALID_ARGUMENT, "orphan");
    CHECK(strstr(la_last_error(), "destroyed") != NULL, "names the destroyed context: %s",
          la_last_error());
    la_saved_destroy(orphan);
    la_ctx_destroy(third);
    dc_free_out(&e);
    dc_free_out(&f);
    dc_free_out(&y);
    dc_free_out(&z);
    la_saved_destroy(s);
    la_ctx_destroy(ctx);
    dc_free_data(&x);
}

static void test_bad_args(void) {
    la_ctx *ctx = th_ctx(1);
    la_saved *s = NULL;
    CHECK_STATUS(la_saved_create(ctx, NULL), LA_ERR_NULL_POINTER, "NULL out");
    CHECK(strstr(la_last_error(), "out") != NULL, "names out: %s", la_last_error());
    CHECK_STATUS(la_saved_create(NULL, &s), LA_ERR_NULL_POINTER, "NULL ctx");
    CHECK(s == NULL && strstr(la_last_error(), "ctx") != NULL, "names ctx: %s", la_last_error());
    la_saved_destroy(NULL);
    CHECK(la_saved_bytes(NULL) == 0 && la_saved_filled(NULL) == 0, "NULL queries");
    CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
    CHECK(la_saved_filled(s) == 0, "a new object is empty");
    la_saved_destroy(s);
    la_ctx_destroy(ctx);
}

int main(void) {
    test_bad_args();
    test_mismatch();
    test_really_read();
    test_bits();
    return th_summary("test_saved");
}
