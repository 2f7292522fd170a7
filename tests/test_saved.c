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
 *   leaves it empty; bad arguments of la_saved_create.
 * - cpu-sgsaved13: simple GLA's chunk form (CPU) the same way: g, g_gamma
 *   or both, initial state, varlen with empty sequences, chunks 7-64,
 *   1-5 heads (the per-head and the grouped backward), resets g = -1e4 and
 *   g = 0; saved vs the one-pass and the two-pass (checkpoint) recompute;
 *   the split-over-time form (long T, few heads) leaves the object empty;
 *   mismatches by name; stale states read. cpu-sglabwd18: the same bits
 *   with o, the saved states and dq, dk, dv written by non-temporal stores.
 * - cpu-glsaved17: GLA (per-key gates) the same way (its own family name,
 *   the split-over-time forward leaves it empty).
 * - cpu-saved16: linear attention's causal chunk form (CPU) the same way:
 *   elu1 / relu / identity features, normalised or not, initial state,
 *   varlen with an empty sequence, chunks 7-64, 3-5 heads (head groups),
 *   the split-over-time form leaves it empty, the recurrent forward too;
 *   mismatches (features, normalize, chunk, form, pointers, context) by
 *   name, nothing written; stale states read.
 * - cpu-linbwd18: 11 heads (groups of 8 + 3 at 1-2 threads, 4 + 4 + 3 at
 *   3: the group size depends on the threads, the bits must not). */
#include "delta_rule_cases.h"
#include "gla_cases.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int same_grads(const ddata *x, const dout *a, const dout *b, int gated) {
    return th_bitwise_equal(a->dq, b->dq, x->nqk) && th_bitwise_equal(a->dk, b->dk, x->nqk) &&
           th_bitwise_equal(a->dv, b->dv, x->nv) && th_bitwise_equal(a->dbeta, b->dbeta, x->ng) &&
           th_bitwise_equal(a->dS0, b->dS0, x->ns) &&
           (!gated || th_bitwise_equal(a->dg, b->dg, x->ng));
}

/* The bytes the delta rules' saved layout needs (cpu-dfwd24's: per value
 * head and chunk the start state K V and the kept K K^T, U, R: C^2 + 2 C V
 * floats; C = the chunk clamped to the longest sequence), plus the chunk
 * bases: la_saved_bytes must hold it with at most alignment to spare. */
static double dc_saved_payload(const dcase *c, const ddata *x) {
    int64_t C = c->chunk ? c->chunk : 64, longest = 0, nc = 0;
    for (int64_t n = 0; n < x->N; n++) {
        const int64_t len = c->cu ? c->cu[n + 1] - c->cu[n] : c->T;
        longest = len > longest ? len : longest;
    }
    if (C > longest) C = longest > 0 ? longest : 1;
    for (int64_t n = 0; n < x->N; n++) {
        const int64_t len = c->cu ? c->cu[n + 1] - c->cu[n] : c->T;
        nc += (len + C - 1) / C;
    }
    const double slot = (double)(c->K * c->V + C * C + 2 * C * c->V);
    return 4.0 * slot * (double)(nc * x->HS) + 8.0 * (double)(x->N + 1);
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
        const double bytes = (double)la_saved_bytes(s), payload = dc_saved_payload(c, &x);
        CHECK(bytes >= payload && bytes <= payload + 4096,
              "%s: la_saved_bytes %.0f for a payload of %.0f", label, bytes, payload);
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

/* A backward given a filled object scans only d_o and d_final_state (the
 * forward that filled it checked q, k, v, g, beta, initial_state, which the
 * caller keeps unchanged, include/linattn.h): a NaN / Inf in either is still
 * LA_ERR_NON_FINITE naming it, nothing written, and the object stays usable. */
static void test_saved_values(void) {
    for (int gated = 0; gated <= 1; gated++) {
        dcase c = dc_default(gated);
        c.form = LA_FORM_CHUNK;
        c.chunk = 16;
        c.with_dfinal = 1;
        ddata x = dc_data(&c);
        la_ctx *ctx = th_ctx(2);
        la_saved *s = NULL;
        CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
        dout a = dc_alloc_out(&x);
        CHECK_STATUS(dc_forward_saved(ctx, &c, &x, &a, s), LA_OK, "forward");
        float *bad[] = {x.d_o + x.nv / 2, x.dST + x.ns - 1};
        const char *name[] = {"d_o", "d_final_state"};
        for (int i = 0; i < 2; i++) {
            const float keep = *bad[i];
            dout y = dc_alloc_out(&x); /* fresh: each error writes nothing */
            *bad[i] = i ? INFINITY : NAN;
            CHECK_STATUS(dc_backward_saved(ctx, &c, &x, &y, s), LA_ERR_NON_FINITE, name[i]);
            CHECK(strstr(la_last_error(), name[i]) != NULL, "%s: message names %s: %s",
                  gated ? "gdn" : "delta", name[i], la_last_error());
            CHECK(th_untouched(y.dq, x.nqk) && th_untouched(y.dk, x.nqk) &&
                      th_untouched(y.dv, x.nv) && th_untouched(y.dbeta, x.ng) &&
                      th_untouched(y.dg, x.ng) && th_untouched(y.dS0, x.ns),
                  "%s: non-finite %s: nothing written", gated ? "gdn" : "delta", name[i]);
            dc_free_out(&y);
            *bad[i] = keep;
        }
        CHECK_STATUS(dc_backward_saved(ctx, &c, &x, &a, s), LA_OK, "backward after the errors");
        { /* a failed forward empties the object: its backward scans q again */
            float *q = x.q + x.nqk / 3;
            const float keep = *q;
            *q = NAN;
            dout z = dc_alloc_out(&x);
            CHECK_STATUS(dc_forward_saved(ctx, &c, &x, &z, s), LA_ERR_NON_FINITE, "NaN q forward");
            CHECK(la_saved_filled(s) == 0, "%s: a failed forward empties the object",
                  gated ? "gdn" : "delta");
            CHECK_STATUS(dc_backward_saved(ctx, &c, &x, &z, s), LA_ERR_NON_FINITE,
                         "backward after a failed forward");
            CHECK(th_untouched(z.dq, x.nqk) && th_untouched(z.dv, x.nv),
                  "%s: backward after a failed forward: nothing written", gated ? "gdn" : "delta");
            dc_free_out(&z);
            *q = keep;
        }
        dc_free_out(&a);
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

/* ---- simple GLA (cpu-sgsaved13) ----------------------------------------- */

extern size_t la__gla_bwd_all_states_bytes; /* src/ops/gla: 0 = the two-pass backward */
extern size_t la__gla_stream_min_bytes;     /* src/ops/gla: 0 = non-temporal row stores */

static int sg_same_grads(const gcase *c, const gout *a, const gout *b) {
    return th_bitwise_equal(a->dq, b->dq, c->nqk) && th_bitwise_equal(a->dk, b->dk, c->nqk) &&
           th_bitwise_equal(a->dv, b->dv, c->nv) && th_bitwise_equal(a->ds0, b->ds0, c->ns) &&
           th_bitwise_equal(a->dgam, b->dgam, (size_t)c->H) &&
           (!c->g || th_bitwise_equal(a->dg, b->dg, c->ng));
}

static la_status sg_fwd(la_ctx *ctx, const gcase *c, la_gated_opts o, gout *r, la_saved *s) {
    o.saved = s;
    return gc_fwd(c, ctx, &o, r->o, r->sT);
}

static la_status sg_bwd(la_ctx *ctx, const gcase *c, la_gated_opts o, gout *r, la_saved *s) {
    o.saved = s;
    return gc_bwd(c, ctx, &o, r->dq, r->dk, r->dv, c->g ? r->dg : NULL, r->dgam, r->ds0);
}

/* Saved vs recomputed, bit for bit, at 1-3 threads; `filled`: whether the
 * forward keeps the states (0: the split form, which must leave it empty). */
static void sg_check_bits(const gcase *c, int64_t chunk, int filled, const char *label) {
    const la_gated_opts o = gc_opts(LA_FORM_CHUNK, chunk);
    la_ctx *c1 = th_ctx(1);
    gout want = gout_alloc(c), two = gout_alloc(c);
    CHECK_STATUS(sg_fwd(c1, c, o, &want, NULL), LA_OK, label);
    CHECK_STATUS(sg_bwd(c1, c, o, &want, NULL), LA_OK, label);
    /* the two-pass (checkpoint) recompute gives the same bits */
    const size_t keep = la__gla_bwd_all_states_bytes;
    la__gla_bwd_all_states_bytes = 0;
    CHECK_STATUS(sg_bwd(c1, c, o, &two, NULL), LA_OK, label);
    la__gla_bwd_all_states_bytes = keep;
    CHECK(sg_same_grads(c, &two, &want), "%s: two-pass == one-pass recompute", label);
    for (int thr = 1; thr <= 3; thr++) {
        la_ctx *ctx = th_ctx(thr);
        la_saved *s = NULL;
        CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, label);
        gout got = gout_alloc(c);
        CHECK_STATUS(sg_fwd(ctx, c, o, &got, s), LA_OK, label);
        CHECK(la_saved_filled(s) == filled, "%s, %d threads: filled %d after the forward",
              label, thr, la_saved_filled(s));
        CHECK(th_bitwise_equal(got.o, want.o, c->nv) && th_bitwise_equal(got.sT, want.sT, c->ns),
              "%s, %d threads: forward output with saving == without", label, thr);
        CHECK_STATUS(sg_bwd(ctx, c, o, &got, s), LA_OK, label);
        CHECK(sg_same_grads(c, &got, &want), "%s, %d threads: gradients from saved == recomputed",
              label, thr);
        /* a second backward reads the same states; under the two-pass limit too */
        gout again = gout_alloc(c);
        la__gla_bwd_all_states_bytes = 0;
        CHECK_STATUS(sg_bwd(ctx, c, o, &again, s), LA_OK, label);
        la__gla_bwd_all_states_bytes = keep;
        CHECK(sg_same_grads(c, &again, &want), "%s: second backward", label);
        gout_free(&again);
        /* cpu-sglabwd18: o, the saved states and dq, dk, dv written by
         * non-temporal stores (simple GLA; cpu-glab19: GLA's backward, dg too; forced here): the same
         * bits, saved and recomputed (rows at odd K, V: aligned and not) */
        const size_t keep_nt = la__gla_stream_min_bytes;
        la__gla_stream_min_bytes = 0;
        la_saved *s2 = NULL;
        CHECK_STATUS(la_saved_create(ctx, &s2), LA_OK, label);
        gout nt = gout_alloc(c), ntr = gout_alloc(c);
        CHECK_STATUS(sg_fwd(ctx, c, o, &nt, s2), LA_OK, label);
        CHECK_STATUS(sg_bwd(ctx, c, o, &nt, s2), LA_OK, label);
        CHECK_STATUS(sg_bwd(ctx, c, o, &ntr, NULL), LA_OK, label);
        la__gla_stream_min_bytes = keep_nt;
        CHECK(th_bitwise_equal(nt.o, want.o, c->nv) && th_bitwise_equal(nt.sT, want.sT, c->ns),
              "%s, %d threads: forward with streamed rows == plain", label, thr);
        CHECK(sg_same_grads(c, &nt, &want) && sg_same_grads(c, &ntr, &want),
              "%s, %d threads: gradients with streamed rows == plain", label, thr);
        gout_free(&nt);
        gout_free(&ntr);
        la_saved_destroy(s2);
        gout_free(&got);
        la_saved_destroy(s);
        la_ctx_destroy(ctx);
    }
    la_ctx_destroy(c1);
    gout_free(&want);
    gout_free(&two);
}

static void test_sgla_bits(void) {
    la_rng rng;
    la_rng_seed(&rng, 1313);
    static const int flag_sets[] = {GC_G, GC_GAMMA, GC_G | GC_GAMMA};
    static const int64_t cu[] = {0, 0, 40, 40, 107, 150, 150};
    for (int i = 0; i < 9; i++) {
        const int flags = flag_sets[i % 3] | (i % 2 ? GC_S0 : 0) | (i % 4 < 2 ? GC_DST : 0);
        const int64_t H = 1 + i % 5, K = 9 + 8 * (i % 3), V = 7 + 12 * (i % 4);
        const int64_t chunk = i % 4 == 0 ? 7 : i % 4 == 1 ? 16 : i % 4 == 2 ? 64 : 0;
        const int varlen = i % 3 == 2;
        /* N H >= 8 or short: the unsplit forward (the split one saves nothing) */
        gcase c = varlen ? gc_make(0, 1, 150, H + 1, K, V, cu, 6, flags, &rng)
                         : gc_make(0, 1 + i % 2, 75 + 37 * i, H, K, V, NULL, 0, flags, &rng);
        if (c.g && i % 3 == 0) /* resets and stretches of g = 0 */
            for (size_t t = 0; t < c.ng; t++)
                c.g[t] = t % 53 == 5 ? -1e4f : t % 97 < 20 ? 0.0f : c.g[t];
        char label[96];
        snprintf(label, sizeof label, "simple GLA case %d (H %d, K %d, V %d, chunk %d%s)", i,
                 (int)c.H, (int)K, (int)V, (int)chunk, varlen ? ", varlen" : "");
        if (i < 3) gc_check_forms(&c, th_ctx(2), label); /* against float64, every form */
        sg_check_bits(&c, chunk, 1, label);
        gc_free(&c);
    }
    /* cpu-sgla19: 11 heads: forward and saved backward in groups of 8 + 3
     * at 1 thread, 6 + 5 at 2, 4 + 4 + 3 at 3 (the recompute: 4 + 4 + 3) */
    {
        gcase c = gc_make(0, 1, 230, 11, 24, 20, NULL, 0, GC_ALL, &rng);
        for (size_t t = 0; t < c.ng; t++)
            c.g[t] = t % 61 == 7 ? -1e4f : t % 89 < 15 ? 0.0f : c.g[t];
        sg_check_bits(&c, 64, 1, "simple GLA, 11 heads");
        gc_free(&c);
    }
    /* long T: 8 (sequence, head) pairs keep the unsplit forward (states
     * saved); 5 pairs split the forward, 1 pair splits both directions:
     * the object stays empty and the backward recomputes */
    static const struct {
        int64_t B, H;
        int filled;
    } lt[] = {{2, 4, 1}, {1, 5, 0}, {1, 1, 0}};
    for (int i = 0; i < 3; i++) {
        gcase c = gc_make(0, lt[i].B, 1100, lt[i].H, 16, 12, NULL, 0, GC_ALL, &rng);
        char label[96];
        snprintf(label, sizeof label, "simple GLA T = 1100, B %d, H %d", (int)lt[i].B,
                 (int)lt[i].H);
        sg_check_bits(&c, 16, lt[i].filled, label);
        gc_free(&c);
    }
    /* cpu-glsaved17: GLA (per-key gates) the same way: 1-5 heads (the
     * per-head and the grouped backward), chunks 7-64, initial state,
     * varlen with empty sequences, resets g = -1e4 and stretches of g = 0 */
    for (int i = 0; i < 6; i++) {
        const int flags = GC_G | (i % 2 ? GC_S0 : 0) | (i % 4 < 2 ? GC_DST : 0);
        const int64_t H = 1 + i % 5, K = 9 + 8 * (i % 3), V = 7 + 12 * (i % 4);
        const int64_t chunk = i % 4 == 0 ? 7 : i % 4 == 1 ? 16 : i % 4 == 2 ? 64 : 0;
        const int varlen = i % 3 == 2;
        gcase c = varlen ? gc_make(1, 1, 150, H + 1, K, V, cu, 6, flags, &rng)
                         : gc_make(1, 1 + i % 2, 75 + 37 * i, H, K, V, NULL, 0, flags, &rng);
        if (i % 3 == 0)
            for (size_t t = 0; t < c.ng; t++)
                c.g[t] = t % 53 == 5 ? -1e4f : t % 97 < 20 ? 0.0f : c.g[t];
        char label[96];
        snprintf(label, sizeof label, "GLA case %d (H %d, K %d, V %d, chunk %d%s)", i, (int)c.H,
                 (int)K, (int)V, (int)chunk, varlen ? ", varlen" : "");
        if (i < 2) gc_check_forms(&c, th_ctx(2), label); /* against float64, every form */
        sg_check_bits(&c, chunk, 1, label);
        gc_free(&c);
    }
    /* long T: as above; GLA's split forward (split_gla.c) keeps no states */
    for (int i = 0; i < 3; i++) {
        gcase c = gc_make(1, lt[i].B, 1100, lt[i].H, 16, 12, NULL, 0, GC_G | GC_S0 | GC_DST, &rng);
        char label[96];
        snprintf(label, sizeof label, "GLA T = 1100, B %d, H %d", (int)lt[i].B, (int)lt[i].H);
        sg_check_bits(&c, 16, lt[i].filled, label);
        gc_free(&c);
    }
}

/* Stale states (v changed in place after the forward) give other gradients
 * than a recompute: the backward reads them (simple GLA; cpu-glsaved17: GLA). */
static void test_sgla_really_read(void) {
    la_rng rng;
    la_rng_seed(&rng, 1314);
    for (int pk = 0; pk < 2; pk++)
    for (int64_t H = 1; H <= 3; H += 2) { /* the per-head and the grouped backward */
        gcase c = gc_make(pk, 1, 90, H, 16, 12, NULL, 0, GC_ALL, &rng);
        const la_gated_opts o = gc_opts(LA_FORM_CHUNK, 16);
        la_ctx *ctx = th_ctx(2);
        la_saved *s = NULL;
        CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
        gout a = gout_alloc(&c), b = gout_alloc(&c);
        CHECK_STATUS(sg_fwd(ctx, &c, o, &a, s), LA_OK, "forward");
        for (size_t i = 0; i < c.nv; i++) c.v[i] *= 0.5f;
        CHECK_STATUS(sg_bwd(ctx, &c, o, &a, s), LA_OK, "stale backward");
        CHECK_STATUS(sg_bwd(ctx, &c, o, &b, NULL), LA_OK, "recompute");
        CHECK(!th_bitwise_equal(a.dq, b.dq, c.nqk), "%s H %d: the backward reads the "
              "saved states", pk ? "GLA" : "simple GLA", (int)H);
        gout_free(&a);
        gout_free(&b);
        la_saved_destroy(s);
        la_ctx_destroy(ctx);
        gc_free(&c);
    }
}

/* cpu-scan18: as test_saved_values for simple GLA and GLA: a backward given
 * a filled object scans only d_o and d_final_state; a NaN / Inf there is
 * still LA_ERR_NON_FINITE naming it, nothing written, the object usable.
 * An empty object vouches for nothing: a NaN in q is still caught. */
static void test_sgla_saved_values(void) {
    la_rng rng;
    la_rng_seed(&rng, 1316);
    for (int pk = 0; pk < 2; pk++) {
        gcase c = gc_make(pk, 1, 70, 3, 16, 12, NULL, 0, pk ? GC_G | GC_S0 | GC_DST : GC_ALL,
                          &rng);
        const la_gated_opts o = gc_opts(LA_FORM_CHUNK, 16);
        const char *fam = pk ? "GLA" : "simple GLA";
        la_ctx *ctx = th_ctx(2);
        la_saved *s = NULL, *empty = NULL;
        CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
        CHECK_STATUS(la_saved_create(ctx, &empty), LA_OK, "create");
        gout a = gout_alloc(&c);
        CHECK_STATUS(sg_fwd(ctx, &c, o, &a, s), LA_OK, "forward");
        CHECK(la_saved_filled(s) == 1, "%s: filled", fam);
        float *bad[] = {c.d_o + c.nv / 2, c.d_sT + c.ns - 1, c.q + c.nqk / 3};
        const char *name[] = {"d_o", "d_final_state", "q"};
        for (int i = 0; i < 3; i++) {
            const float keep = *bad[i];
            gout y = gout_alloc(&c); /* fresh: each error writes nothing */
            *bad[i] = i == 1 ? INFINITY : NAN;
            CHECK_STATUS(sg_bwd(ctx, &c, o, &y, i == 2 ? empty : s), LA_ERR_NON_FINITE, name[i]);
            CHECK(strstr(la_last_error(), name[i]) != NULL, "%s: message names %s: %s", fam,
                  name[i], la_last_error());
            CHECK(th_untouched(y.dq, c.nqk) && th_untouched(y.dv, c.nv) &&
                      th_untouched(y.ds0, c.ns) && th_untouched(y.dg, c.ng),
                  "%s: non-finite %s: nothing written", fam, name[i]);
            gout_free(&y);
            *bad[i] = keep;
        }
        CHECK_STATUS(sg_bwd(ctx, &c, o, &a, s), LA_OK, "backward after the errors");
        { /* a failed forward empties the object: its backward scans q again */
            float *q = c.q + c.nqk / 3;
            const float keep = *q;
            *q = NAN;
            gout z = gout_alloc(&c);
            CHECK_STATUS(sg_fwd(ctx, &c, o, &z, s), LA_ERR_NON_FINITE, "NaN q forward");
            CHECK(la_saved_filled(s) == 0, "%s: a failed forward empties the object", fam);
            CHECK_STATUS(sg_bwd(ctx, &c, o, &z, s), LA_ERR_NON_FINITE,
                         "backward after a failed forward");
            CHECK(th_untouched(z.dq, c.nqk) && th_untouched(z.dv, c.nv),
                  "%s: backward after a failed forward: nothing written", fam);
            gout_free(&z);
            *q = keep;
        }
        gout_free(&a);
        la_saved_destroy(s);
        la_saved_destroy(empty);
        la_ctx_destroy(ctx);
        gc_free(&c);
    }
}

static void sg_expect_mismatch(la_ctx *ctx, const gcase *c, la_gated_opts o, la_saved *s,
                               const char *what) {
    gout y = gout_alloc(c);
    CHECK_STATUS(sg_bwd(ctx, c, o, &y, s), LA_ERR_INVALID_ARGUMENT, what);
    CHECK(strstr(la_last_error(), what) != NULL, "message names '%s': %s", what, la_last_error());
    CHECK(th_untouched(y.dq, c->nqk) && th_untouched(y.dv, c->nv) &&
              th_untouched(y.ds0, c->ns) && th_untouched(y.dgam, (size_t)c->H),
          "%s: nothing written", what);
    gout_free(&y);
}

static void test_sgla_mismatch(void) {
    la_rng rng;
    la_rng_seed(&rng, 1315);
    static const int64_t cu1[] = {0, 20, 66}, cu2[] = {0, 21, 66};
    la_ctx *ctx = th_ctx(2), *other = th_ctx(1);
    gcase c = gc_make(0, 1, 66, 2, 16, 12, cu1, 2, GC_ALL, &rng);
    const la_gated_opts o = gc_opts(LA_FORM_CHUNK, 16);
    la_saved *s = NULL;
    CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
    gout y = gout_alloc(&c), z = gout_alloc(&c);
    CHECK_STATUS(sg_fwd(ctx, &c, o, &y, s), LA_OK, "forward");
    CHECK(la_saved_filled(s) && la_saved_bytes(s) >= 2 * 5 * 16 * 12 * sizeof(float),
          "filled, 2 heads x 5 chunks of states: %zu bytes", la_saved_bytes(s));
    la_gated_opts p = o;
    p.form = LA_FORM_RECURRENT;
    sg_expect_mismatch(ctx, &c, p, s, "opts.form");
    p = o, p.chunk_size = 32;
    sg_expect_mismatch(ctx, &c, p, s, "chunk length");
    p = o, p.scale = 0.5f;
    sg_expect_mismatch(ctx, &c, p, s, "opts.scale");
    gcase x = c; /* the same tensors, other offsets */
    x.d.cu_seqlens = cu2;
    sg_expect_mismatch(ctx, &x, o, s, "cu_seqlens");
    x = c, x.s0 = NULL;
    sg_expect_mismatch(ctx, &x, o, s, "initial_state");
    x = c, x.gamma = NULL;
    sg_expect_mismatch(ctx, &x, o, s, "g_gamma");
    x = c, x.g = NULL;
    sg_expect_mismatch(ctx, &x, o, s, "(g differs");
    x = c; /* same values, another k buffer */
    x.k = th_nan_floats(c.nqk);
    memcpy(x.k, c.k, c.nqk * sizeof(float));
    sg_expect_mismatch(ctx, &x, o, s, "k");
    free(x.k);
    x = c, x.d.H = 1; /* the same buffers read as one head */
    sg_expect_mismatch(ctx, &x, o, s, "dims.H");
    /* the delta rule's backward given simple GLA's object, and the reverse */
    {
        dcase d = dc_default(0);
        d.form = LA_FORM_CHUNK;
        d.chunk = 16;
        ddata dx = dc_data(&d);
        dout dy = dc_alloc_out(&dx);
        CHECK_STATUS(dc_backward_saved(ctx, &d, &dx, &dy, s), LA_ERR_INVALID_ARGUMENT, "delta");
        CHECK(strstr(la_last_error(), "filled by the simple_gla forward") != NULL,
              "names the op: %s", la_last_error());
        la_saved *t = NULL;
        CHECK_STATUS(la_saved_create(ctx, &t), LA_OK, "create");
        CHECK_STATUS(dc_forward_saved(ctx, &d, &dx, &dy, t), LA_OK, "delta forward");
        sg_expect_mismatch(ctx, &c, o, t, "filled by the delta_rule forward");
        la_saved_destroy(t);
        dc_free_out(&dy);
        dc_free_data(&dx);
    }
    /* another context */
    CHECK_STATUS(sg_bwd(other, &c, o, &z, s), LA_ERR_INVALID_ARGUMENT, "other context");
    CHECK(strstr(la_last_error(), "opts->saved") != NULL, "names opts->saved: %s", la_last_error());
    CHECK_STATUS(sg_fwd(other, &c, o, &z, s), LA_ERR_INVALID_ARGUMENT, "forward, other context");
    CHECK(th_untouched(z.o, c.nv), "forward on another context writes nothing");
    /* the matching call works; the recurrent form leaves it empty; an empty
     * one recomputes */
    CHECK_STATUS(sg_bwd(ctx, &c, o, &z, s), LA_OK, "matching backward");
    p = o, p.form = LA_FORM_RECURRENT;
    CHECK_STATUS(sg_fwd(ctx, &c, p, &y, s), LA_OK, "recurrent forward");
    CHECK(la_saved_filled(s) == 0, "the recurrent forward leaves it empty");
    gout e = gout_alloc(&c), f = gout_alloc(&c);
    CHECK_STATUS(sg_bwd(ctx, &c, o, &e, s), LA_OK, "empty saved");
    CHECK_STATUS(sg_bwd(ctx, &c, o, &f, NULL), LA_OK, "no saved");
    CHECK(sg_same_grads(&c, &e, &f) && sg_same_grads(&c, &z, &f), "empty saved == none == saved");
    /* cpu-glsaved17: GLA fills the object too, under its own name: simple
     * GLA's backward given it is an error naming it, and the reverse; GLA's
     * forward on another context is an error */
    CHECK_STATUS(sg_fwd(ctx, &c, o, &y, s), LA_OK, "refill");
    gcase gk = gc_make(1, 1, 66, 2, 16, 12, cu1, 2, GC_G | GC_S0 | GC_DST, &rng);
    gout gy = gout_alloc(&gk);
    CHECK_STATUS(sg_fwd(other, &gk, o, &gy, s), LA_ERR_INVALID_ARGUMENT, "GLA, other context");
    CHECK(th_untouched(gy.o, gk.nv), "GLA forward on another context writes nothing");
    la_saved *t = NULL;
    CHECK_STATUS(la_saved_create(ctx, &t), LA_OK, "create");
    CHECK_STATUS(sg_fwd(ctx, &gk, o, &gy, t), LA_OK, "GLA forward");
    CHECK(la_saved_filled(t) == 1, "GLA fills the object");
    sg_expect_mismatch(ctx, &c, o, t, "filled by the gla forward");
    sg_expect_mismatch(ctx, &gk, o, s, "filled by the simple_gla forward");
    x = gk; /* GLA's gate tensor is in the key: same values, another buffer */
    x.g = th_nan_floats(gk.ng);
    memcpy(x.g, gk.g, gk.ng * sizeof(float));
    sg_expect_mismatch(ctx, &x, o, t, "(g differs");
    free(x.g);
    p = o, p.chunk_size = 32;
    sg_expect_mismatch(ctx, &gk, p, t, "chunk length");
    CHECK_STATUS(sg_bwd(ctx, &gk, o, &gy, t), LA_OK, "GLA matching backward");
    la_saved_destroy(t);
    CHECK_STATUS(sg_bwd(ctx, &c, o, &e, s), LA_OK, "backward after the GLA calls");
    CHECK(sg_same_grads(&c, &e, &f), "still this call's states");
    gout_free(&gy);
    gc_free(&gk);
    gout_free(&e);
    gout_free(&f);
    gout_free(&y);
    gout_free(&z);
    la_saved_destroy(s);
    la_ctx_destroy(other);
    la_ctx_destroy(ctx);
    gc_free(&c);
}

/* ---- cpu-saved16: linear attention's causal chunk form (CPU) ---------- */

typedef struct {
    la_dims d;
    size_t nqk, nv, ns, nz;
    float *q, *k, *v, *s0, *z0, *d_o, *dsT, *dzT;
} lcase;

typedef struct {
    float *o, *sT, *zT, *dq, *dk, *dv, *ds0, *dz0;
} lout;

static lcase lc_make(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, const int64_t *cu,
                     int64_t nseq, la_rng *rng) {
    lcase c;
    c.d = th_dims(B, T, H, K, V);
    if (cu) c.d.cu_seqlens = cu, c.d.n_seqs = nseq;
    const size_t N = (size_t)(cu ? nseq : B);
    c.nqk = (size_t)(B * T * H * K);
    c.nv = (size_t)(B * T * H * V);
    c.nz = N * (size_t)(H * K);
    c.ns = c.nz * (size_t)V;
    c.q = th_rand_floats(c.nqk, rng, 1.0);
    c.k = th_rand_floats(c.nqk, rng, 1.0);
    c.v = th_rand_floats(c.nv, rng, 1.0);
    c.s0 = th_rand_floats(c.ns, rng, 0.5);
    c.z0 = th_rand_floats(c.nz, rng, 0.5);
    for (size_t i = 0; i < c.nz; i++) c.z0[i] = fabsf(c.z0[i]); /* a non-negative normaliser */
    c.d_o = th_rand_floats(c.nv, rng, 1.0);
    c.dsT = th_rand_floats(c.ns, rng, 0.5);
    c.dzT = th_rand_floats(c.nz, rng, 0.5);
    return c;
}

static void lc_free(lcase *c) {
    float *p[] = {c->q, c->k, c->v, c->s0, c->z0, c->d_o, c->dsT, c->dzT};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
}

static lout lout_alloc(const lcase *c) {
    lout r = {th_nan_floats(c->nv), th_nan_floats(c->ns), th_nan_floats(c->nz),
              th_nan_floats(c->nqk), th_nan_floats(c->nqk), th_nan_floats(c->nv),
              th_nan_floats(c->ns), th_nan_floats(c->nz)};
    return r;
}

static void lout_free(lout *r) {
    float *p[] = {r->o, r->sT, r->zT, r->dq, r->dk, r->dv, r->ds0, r->dz0};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
}

static la_linear_attn_opts lc_opts(la_feature_map fm, int normalize, int64_t chunk) {
    la_linear_attn_opts o = la_linear_attn_opts_default();
    o.feature_map = fm;
    o.normalize = normalize;
    o.causal = 1;
    o.form = LA_FORM_CHUNK;
    o.chunk_size = chunk;
    return o;
}

/* init: initial state (and normaliser) given; normalised calls pass the
 * normaliser's arguments too */
static la_status lc_fwd(la_ctx *ctx, const lcase *c, la_linear_attn_opts o, int init, lout *r,
                        la_saved *s) {
    o.saved = s;
    const int nz = o.normalize;
    return la_linear_attn_forward(ctx, &o, &c->d, r->o, r->sT, nz ? r->zT : NULL, c->q, c->k,
                                  c->v, init ? c->s0 : NULL, init && nz ? c->z0 : NULL);
}

static la_status lc_bwd(la_ctx *ctx, const lcase *c, la_linear_attn_opts o, int init, lout *r,
                        la_saved *s) {
    o.saved = s;
    const int nz = o.normalize;
    return la_linear_attn_backward(ctx, &o, &c->d, r->dq, r->dk, r->dv, r->ds0,
                                   nz ? r->dz0 : NULL, c->d_o, c->dsT, nz ? c->dzT : NULL, c->q,
                                   c->k, c->v, init ? c->s0 : NULL, init && nz ? c->z0 : NULL);
}

static int lc_same_grads(const lcase *c, int normalize, const lout *a, const lout *b) {
    return th_bitwise_equal(a->dq, b->dq, c->nqk) && th_bitwise_equal(a->dk, b->dk, c->nqk) &&
           th_bitwise_equal(a->dv, b->dv, c->nv) && th_bitwise_equal(a->ds0, b->ds0, c->ns) &&
           (!normalize || th_bitwise_equal(a->dz0, b->dz0, c->nz));
}

/* Saved vs recomputed, bit for bit, at 1-3 threads; `filled`: whether the
 * forward keeps the states (0: one sequence split over time). */
static void lc_check_bits(const lcase *c, la_linear_attn_opts o, int init, int filled,
                          const char *label) {
    la_ctx *c1 = th_ctx(1);
    lout want = lout_alloc(c);
    CHECK_STATUS(lc_fwd(c1, c, o, init, &want, NULL), LA_OK, label);
    CHECK_STATUS(lc_bwd(c1, c, o, init, &want, NULL), LA_OK, label);
    for (int thr = 1; thr <= 3; thr++) {
        la_ctx *ctx = th_ctx(thr);
        la_saved *s = NULL;
        CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, label);
        lout got = lout_alloc(c);
        CHECK_STATUS(lc_fwd(ctx, c, o, init, &got, s), LA_OK, label);
        CHECK(la_saved_filled(s) == filled, "%s, %d threads: filled %d after the forward", label,
              thr, la_saved_filled(s));
        CHECK(th_bitwise_equal(got.o, want.o, c->nv) && th_bitwise_equal(got.sT, want.sT, c->ns) &&
                  (!o.normalize || th_bitwise_equal(got.zT, want.zT, c->nz)),
              "%s, %d threads: forward output with saving == without", label, thr);
        CHECK_STATUS(lc_bwd(ctx, c, o, init, &got, s), LA_OK, label);
        CHECK(lc_same_grads(c, o.normalize, &got, &want),
              "%s, %d threads: gradients from saved == recomputed", label, thr);
        lout again = lout_alloc(c); /* a second backward reads the same states */
        CHECK_STATUS(lc_bwd(ctx, c, o, init, &again, s), LA_OK, label);
        CHECK(lc_same_grads(c, o.normalize, &again, &want), "%s: second backward", label);
        lout_free(&again);
        lout_free(&got);
        la_saved_destroy(s);
        la_ctx_destroy(ctx);
    }
    la_ctx_destroy(c1);
    lout_free(&want);
}

static void test_lin_bits(void) {
    la_rng rng;
    la_rng_seed(&rng, 1601);
    static const int64_t cu[] = {0, 0, 30, 95}; /* an empty sequence first */
    const struct {
        int64_t B, T, H, K, V, chunk, nseq;
        const int64_t *cu;
        la_feature_map fm;
        int normalize, init, filled;
    } cases[] = {
        {2, 77, 3, 16, 12, 16, 0, NULL, LA_FEATURE_ELU1, 1, 1, 1},
        {2, 77, 3, 16, 12, 16, 0, NULL, LA_FEATURE_IDENTITY, 0, 1, 1},
        {2, 77, 3, 16, 12, 16, 0, NULL, LA_FEATURE_ELU1, 0, 0, 1},
        {1, 95, 3, 9, 14, 7, 3, cu, LA_FEATURE_RELU, 1, 1, 1},
        {1, 95, 3, 9, 14, 7, 3, cu, LA_FEATURE_IDENTITY, 0, 0, 1},
        {1, 64, 5, 8, 8, 64, 0, NULL, LA_FEATURE_IDENTITY, 0, 1, 1}, /* head groups 4 + 1 */
        /* cpu-linbwd18: groups 8 + 3 at 1-2 threads, 4 + 4 + 3 at 3 */
        {1, 70, 11, 8, 12, 16, 0, NULL, LA_FEATURE_ELU1, 1, 1, 1},
        {2, 33, 4, 20, 7, 0, 0, NULL, LA_FEATURE_ELU1, 1, 1, 1},    /* default chunk */
        {1, 300, 2, 8, 8, 8, 0, NULL, LA_FEATURE_ELU1, 1, 1, 0},    /* split over time */
        {1, 300, 2, 8, 8, 8, 0, NULL, LA_FEATURE_IDENTITY, 0, 1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lcase c = lc_make(cases[i].B, cases[i].T, cases[i].H, cases[i].K, cases[i].V, cases[i].cu,
                          cases[i].nseq, &rng);
        char label[64];
        snprintf(label, sizeof label, "linear case %zu", i);
        lc_check_bits(&c, lc_opts(cases[i].fm, cases[i].normalize, cases[i].chunk),
                      cases[i].init, cases[i].filled, label);
        lc_free(&c);
    }
}

static void test_lin_really_read(void) {
    la_rng rng;
    la_rng_seed(&rng, 1602);
    for (int nz = 0; nz <= 1; nz++) {
        lcase c = lc_make(1, 90, 3, 16, 12, NULL, 0, &rng);
        const la_linear_attn_opts o = lc_opts(LA_FEATURE_ELU1, nz, 16);
        la_ctx *ctx = th_ctx(2);
        la_saved *s = NULL;
        CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
        lout a = lout_alloc(&c), b = lout_alloc(&c);
        CHECK_STATUS(lc_fwd(ctx, &c, o, 1, &a, s), LA_OK, "forward");
        for (size_t i = 0; i < c.nv; i++) c.v[i] *= 0.5f;
        CHECK_STATUS(lc_bwd(ctx, &c, o, 1, &a, s), LA_OK, "stale backward");
        CHECK_STATUS(lc_bwd(ctx, &c, o, 1, &b, NULL), LA_OK, "recompute");
        CHECK(!th_bitwise_equal(a.dq, b.dq, c.nqk),
              "linear normalize %d: the backward reads the saved states", nz);
        lout_free(&a);
        lout_free(&b);
        la_saved_destroy(s);
        la_ctx_destroy(ctx);
        lc_free(&c);
    }
}

/* cpu-scan18: as test_saved_values for linear attention: a backward given a
 * filled object scans only d_o, d_final_state, d_final_norm; a NaN / Inf
 * there is still LA_ERR_NON_FINITE naming it, nothing written, the object
 * usable. An empty object vouches for nothing: a NaN in q is still caught. */
static void test_lin_saved_values(void) {
    la_rng rng;
    la_rng_seed(&rng, 1604);
    for (int nz = 0; nz <= 1; nz++) {
        lcase c = lc_make(1, 70, 3, 16, 12, NULL, 0, &rng);
        const la_linear_attn_opts o = lc_opts(LA_FEATURE_ELU1, nz, 16);
        la_ctx *ctx = th_ctx(2);
        la_saved *s = NULL, *empty = NULL;
        CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
        CHECK_STATUS(la_saved_create(ctx, &empty), LA_OK, "create");
        lout a = lout_alloc(&c);
        CHECK_STATUS(lc_fwd(ctx, &c, o, 1, &a, s), LA_OK, "forward");
        CHECK(la_saved_filled(s) == 1, "linear normalize %d: filled", nz);
        float *bad[] = {c.d_o + c.nv / 2, c.dsT + c.ns - 1, c.q + c.nqk / 3, c.dzT + c.nz / 2};
        const char *name[] = {"d_o", "d_final_state", "q", "d_final_norm"};
        for (int i = 0; i < 3 + nz; i++) {
            const float keep = *bad[i];
            lout y = lout_alloc(&c); /* fresh: each error writes nothing */
            *bad[i] = i % 2 ? INFINITY : NAN;
            CHECK_STATUS(lc_bwd(ctx, &c, o, 1, &y, i == 2 ? empty : s), LA_ERR_NON_FINITE,
                         name[i]);
            CHECK(strstr(la_last_error(), name[i]) != NULL, "linear: message names %s: %s",
                  name[i], la_last_error());
            CHECK(th_untouched(y.dq, c.nqk) && th_untouched(y.dk, c.nqk) &&
                      th_untouched(y.dv, c.nv) && th_untouched(y.ds0, c.ns) &&
                      th_untouched(y.dz0, c.nz),
                  "linear normalize %d: non-finite %s: nothing written", nz, name[i]);
            lout_free(&y);
            *bad[i] = keep;
        }
        CHECK_STATUS(lc_bwd(ctx, &c, o, 1, &a, s), LA_OK, "backward after the errors");
        { /* a failed forward empties the object: its backward scans q again */
            float *q = c.q + c.nqk / 3;
            const float keep = *q;
            *q = NAN;
            lout z = lout_alloc(&c);
            CHECK_STATUS(lc_fwd(ctx, &c, o, 1, &z, s), LA_ERR_NON_FINITE, "NaN q forward");
            CHECK(la_saved_filled(s) == 0, "linear normalize %d: a failed forward empties the object",
                  nz);
            CHECK_STATUS(lc_bwd(ctx, &c, o, 1, &z, s), LA_ERR_NON_FINITE,
                         "backward after a failed forward");
            CHECK(th_untouched(z.dq, c.nqk) && th_untouched(z.dv, c.nv),
                  "linear normalize %d: backward after a failed forward: nothing written", nz);
            lout_free(&z);
            *q = keep;
        }
        lout_free(&a);
        la_saved_destroy(s);
        la_saved_destroy(empty);
        la_ctx_destroy(ctx);
        lc_free(&c);
    }
}

static void lc_expect_mismatch(la_ctx *ctx, const lcase *c, la_linear_attn_opts o, int init,
                               la_saved *s, const char *what) {
    lout y = lout_alloc(c);
    CHECK_STATUS(lc_bwd(ctx, c, o, init, &y, s), LA_ERR_INVALID_ARGUMENT, what);
    CHECK(strstr(la_last_error(), what) != NULL, "message names '%s': %s", what, la_last_error());
    CHECK(th_untouched(y.dq, c->nqk) && th_untouched(y.dk, c->nqk) && th_untouched(y.dv, c->nv) &&
              th_untouched(y.ds0, c->ns),
          "%s: nothing written", what);
    lout_free(&y);
}

static void test_lin_mismatch(void) {
    la_rng rng;
    la_rng_seed(&rng, 1603);
    la_ctx *ctx = th_ctx(2), *other = th_ctx(1);
    lcase c = lc_make(2, 40, 2, 8, 6, NULL, 0, &rng);
    const la_linear_attn_opts o = lc_opts(LA_FEATURE_ELU1, 1, 16);
    la_saved *s = NULL;
    CHECK_STATUS(la_saved_create(ctx, &s), LA_OK, "create");
    lout y = lout_alloc(&c);
    CHECK_STATUS(lc_fwd(ctx, &c, o, 1, &y, s), LA_OK, "forward");
    CHECK(la_saved_filled(s) == 1, "linear: filled");
    lc_expect_mismatch(ctx, &c, lc_opts(LA_FEATURE_RELU, 1, 16), 1, s, "this is the linear_attn (relu features, normalised)");
    lc_expect_mismatch(ctx, &c, lc_opts(LA_FEATURE_ELU1, 0, 16), 0, s, "this is the linear_attn (elu1 features, unnormalised)");
    lc_expect_mismatch(ctx, &c, lc_opts(LA_FEATURE_ELU1, 1, 8), 1, s, "chunk length");
    la_linear_attn_opts rec = o;
    rec.form = LA_FORM_RECURRENT;
    lc_expect_mismatch(ctx, &c, rec, 1, s, "opts.form");
    lc_expect_mismatch(ctx, &c, o, 0, s, "initial_state");
    float *k0 = c.k;
    c.k = th_rand_floats(c.nqk, &rng, 1.0);
    lc_expect_mismatch(ctx, &c, o, 1, s, "(k differs");
    free(c.k);
    c.k = k0;
    lout z = lout_alloc(&c); /* another context */
    CHECK_STATUS(lc_bwd(other, &c, o, 1, &z, s), LA_ERR_INVALID_ARGUMENT, "other context");
    lout_free(&z);
    /* the recurrent forward leaves it empty: its backward recomputes */
    CHECK_STATUS(lc_fwd(ctx, &c, rec, 1, &y, s), LA_OK, "recurrent forward");
    CHECK(la_saved_filled(s) == 0, "linear: the recurrent forward leaves it empty");
    lout_free(&y);
    la_saved_destroy(s);
    la_ctx_destroy(ctx);
    la_ctx_destroy(other);
    lc_free(&c);
}

int main(void) {
    test_bad_args();
    test_mismatch();
    test_really_read();
    test_saved_values();
    test_bits();
    test_sgla_mismatch();
    test_sgla_really_read();
    test_sgla_saved_values();
    test_sgla_bits();
    test_lin_mismatch();
    test_lin_really_read();
    test_lin_saved_values();
    test_lin_bits();
    return th_summary("test_saved");
}
