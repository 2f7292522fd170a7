/* Every entry of the op registry, with no per-family code: at odd sizes
 * (dense batches, packed sequences, head counts that fill no whole group,
 * value heads where the op takes them) against the entry's whole-tensor
 * float64 reference, forward and backward, with NaN-poisoned outputs (an
 * unwritten element shows up as NaN); 1 thread == 3 threads bit for bit;
 * the chunk form == the recurrent form (float32 rounding); decoding through
 * the decoder == the recurrent form bit for bit; a failing call writes
 * nothing. Also the table itself: ids in order, names unique, a decoding
 * entry for every family that names one. A family that registers itself is
 * tested here with no change to this file. */
#include "harness.h"
#include "ref_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Float32 rounding of sums over at most T(K+V) terms; measured ~3e-7. */
#define TOL 1e-5

static void check_table(void) {
    for (int i = 0; i < LA__OP_COUNT; i++) {
        const la__op_entry *e = la__op_get(i);
        CHECK(e && (int)e->id == i, "registry entry %d has id %d", i, e ? (int)e->id : -1);
        if (!e) continue;
        CHECK(e->forward && e->backward && e->flops, "%s: adapters and FLOP formula", e->name);
        CHECK(la__op_find(e->name) == i, "%s: name is unique and found", e->name);
        CHECK(ref_op_get(i) != NULL, "%s: has a reference", e->name);
        CHECK(e->flops(100, 16, 16, 64, 0) > 0 &&
                  e->flops(100, 16, 16, 64, 1) > e->flops(100, 16, 16, 64, 0),
              "%s: FLOPs positive, backward more", e->name);
        if (e->decode_op >= 0) {
            const la__decode_entry *de = la__decode_get(e->decode_op);
            CHECK(de && !strcmp(de->family, e->family), "%s: decoding entry %d is its family's",
                  e->name, e->decode_op);
        }
    }
    CHECK(la__op_get(-1) == NULL && la__op_get(LA__OP_COUNT) == NULL, "out-of-range ids");
    CHECK(la__op_find("no-such-op") == -1, "unknown name");
    for (int op = 0; op < LA__DECODE_COUNT; op++) {
        const la__decode_entry *de = la__decode_get(op);
        CHECK(de && (int)de->op == op && de->step, "decoding entry %d", op);
    }
    CHECK(la__decode_get(LA__DECODE_COUNT) == NULL, "decoding entry past the end");
}

/* Runs forward + backward of case c on ctx; 1 if both returned LA_OK. */
static int run(la_ctx *ctx, ref_op_case *c) {
    la_status st = c->e->forward(ctx, &c->a);
    if (!st) st = c->e->backward(ctx, &c->a);
    if (st) th_check_status(st, LA_OK, __FILE__, __LINE__, c->e->name);
    return st == LA_OK;
}

/* Copies of every output of c (for comparisons between runs). */
static float *snapshot(const ref_op_case *c, size_t *total) {
    ref_op_output l[16];
    const int n = ref_op_case_outputs(c, l);
    size_t tot = 0;
    for (int i = 0; i < n; i++) tot += l[i].n;
    float *s = malloc((tot ? tot : 1) * sizeof *s);
    if (!s) abort();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        memcpy(s + off, l[i].got, l[i].n * sizeof *s);
        off += l[i].n;
    }
    *total = tot;
    return s;
}

static void against_reference(int id, const la_dims *d, const char *what, unsigned flags,
                              la_ctx *c1, la_ctx *c3, uint64_t seed) {
    const la__op_entry *e = la__op_get(id);
    ref_op_case c;
    if (ref_op_case_init(&c, id, d, 16, seed, flags) || ref_op_case_reference(&c)) {
        CHECK(0, "%s %s: case or reference out of memory", e->name, what);
        ref_op_case_free(&c);
        return;
    }
    if (run(c1, &c)) {
        ref_op_output l[16];
        const int n = ref_op_case_outputs(&c, l);
        for (int i = 0; i < n; i++) {
            CHECK(ref_count_nonfinite(l[i].got, l[i].n) == 0, "%s %s: %s fully written, finite",
                  e->name, what, l[i].name);
            CHECK_ERR(ref_max_rel_err(l[i].got, l[i].want, l[i].n), TOL, "%s %s: %s vs float64",
                      e->name, what, l[i].name);
        }
        size_t tot;
        float *one = snapshot(&c, &tot);
        ref_op_case_poison(&c);
        if (run(c3, &c)) {
            float *three = snapshot(&c, &tot);
            CHECK(th_bitwise_equal(one, three, tot), "%s %s: 1 thread == 3 threads bitwise",
                  e->name, what);
            free(three);
        }
        free(one);
    }
    ref_op_case_free(&c);
}

/* Zero-length sequences in cu_seqlens: against the reference, and for an
 * empty sequence final state == initial state and d_initial_state ==
 * d_final_state, bit for bit. */
static void zero_length_sequences(int id, la_ctx *ctx) {
    const la__op_entry *e = la__op_get(id);
    int64_t cu[6] = {0, 0, 17, 17, 40, 40};
    la_dims d = {.B = 1, .T = 40, .H = 3, .K = 12, .V = 10, .HV = 6, .cu_seqlens = cu, .n_seqs = 5};
    against_reference(id, &d, "zero-length sequences", REF_CASE_STATE, ctx, ctx, 4242);
    if (!(e->needs & LA__HAS_STATE)) return;
    ref_op_case c;
    if (ref_op_case_init(&c, id, &d, 16, 4243, REF_CASE_STATE) || !run(ctx, &c)) {
        ref_op_case_free(&c);
        return;
    }
    const size_t slot = c.n_state / 5, zslot = c.n_norm / 5;
    for (int n = 0; n < 5; n += 2) {
        CHECK(th_bitwise_equal(c.a.final_state + n * slot, c.a.initial_state + n * slot, slot),
              "%s: empty sequence %d: final state == initial state", e->name, n);
        CHECK(th_bitwise_equal(c.a.d_initial_state + n * slot, c.a.d_final_state + n * slot, slot),
              "%s: empty sequence %d: d_initial_state == d_final_state", e->name, n);
        if (c.a.final_norm)
            CHECK(th_bitwise_equal(c.a.final_norm + n * zslot, c.a.initial_norm + n * zslot, zslot),
                  "%s: empty sequence %d: final norm == initial norm", e->name, n);
        if (c.a.final_key_max)
            CHECK(th_bitwise_equal(c.a.final_key_max + n * d.H, c.a.initial_key_max + n * d.H,
                                   (size_t)d.H),
                  "%s: empty sequence %d: final key max == initial key max", e->name, n);
    }
    ref_op_case_free(&c);
}

/* A zero-initialised argument struct (all options 0 = defaults) is a valid
 * call of every entry. */
static void zero_options(int id, la_ctx *ctx) {
    const la__op_entry *e = la__op_get(id);
    la_dims d = {.B = 2, .T = 11, .H = 2, .K = 6, .V = 5, .HV = 4};
    ref_op_case c;
    if (ref_op_case_init(&c, id, &d, 0, 99, 0)) {
        ref_op_case_free(&c);
        return;
    }
    la__op_args a = c.a;
    a.use_qk_l2norm = 0;
    a.normalize = 0;
    a.final_norm = NULL;
    a.d_initial_norm = NULL;
    a.feature_map = LA_FEATURE_IDENTITY;
    CHECK_STATUS(e->forward(ctx, &a), LA_OK, e->name);
    CHECK_STATUS(e->backward(ctx, &a), LA_OK, e->name);
    ref_op_case_free(&c);
}

/* A failing call (one input NULL, then one input NaN) writes nothing. */
static void failure_writes_nothing(int id, la_ctx *ctx) {
    const la__op_entry *e = la__op_get(id);
    la_dims d = {.B = 2, .T = 9, .H = 2, .K = 5, .V = 3, .HV = 4};
    ref_op_case c;
    if (ref_op_case_init(&c, id, &d, 4, 5, REF_CASE_STATE)) {
        CHECK(0, "%s: case out of memory", e->name);
        ref_op_case_free(&c);
        return;
    }
    ref_op_output l[16];
    const int n = ref_op_case_outputs(&c, l);
    la__op_args a = c.a;
    a.k = NULL;
    CHECK_STATUS(e->forward(ctx, &a), LA_ERR_NULL_POINTER, e->name);
    CHECK_STATUS(e->backward(ctx, &a), LA_ERR_NULL_POINTER, e->name);
    c.in[1][c.n_qk - 1] = NAN; /* the last element of k */
    CHECK_STATUS(e->forward(ctx, &c.a), LA_ERR_NON_FINITE, e->name);
    CHECK_STATUS(e->backward(ctx, &c.a), LA_ERR_NON_FINITE, e->name);
    for (int i = 0; i < n; i++)
        CHECK(th_untouched(l[i].got, l[i].n), "%s: %s untouched by failing calls", e->name,
              l[i].name);
    ref_op_case_free(&c);
}

/* The chunk form of every family == its recurrent form (same inputs: a
 * case depends only on the entry's needs, which the forms share). */
static void chunk_equals_recurrent(int id, la_ctx *ctx) {
    const la__op_entry *e = la__op_get(id);
    int rid = -1;
    for (int j = 0; j < LA__OP_COUNT; j++) {
        const la__op_entry *f = la__op_get(j);
        if (!strcmp(f->family, e->family) && f->form == LA_FORM_RECURRENT) rid = j;
    }
    if (e->form != LA_FORM_CHUNK || rid < 0) return;
    int64_t cu[4] = {0, 17, 50, 83};
    la_dims d = {.B = 1, .T = 83, .H = 3, .K = 12, .V = 10, .HV = 6, .cu_seqlens = cu, .n_seqs = 3};
    for (int chunk = 1; chunk <= 64; chunk *= 4) {
        ref_op_case a, b;
        if (ref_op_case_init(&a, id, &d, chunk, 77, REF_CASE_STATE) ||
            ref_op_case_init(&b, rid, &d, 0, 77, REF_CASE_STATE)) {
            CHECK(0, "%s: case out of memory", e->name);
        } else if (run(ctx, &a) && run(ctx, &b)) {
            ref_op_output la[16], lb[16];
            const int n = ref_op_case_outputs(&a, la);
            CHECK(n == ref_op_case_outputs(&b, lb), "%s: same outputs as recurrent", e->name);
            for (int i = 0; i < n; i++)
                CHECK_ERR(ref_max_rel_err_ff(la[i].got, lb[i].got, la[i].n), TOL,
                          "%s chunk %d: %s vs recurrent", e->name, chunk, la[i].name);
        }
        ref_op_case_free(&a);
        ref_op_case_free(&b);
    }
}

/* x [B,T,heads,D] at token t -> y [B,heads,D] */
static void take_token(float *y, const float *x, int64_t B, int64_t T, int64_t t, int64_t heads,
                       int64_t D) {
    for (int64_t b = 0; b < B; b++)
        memcpy(y + (size_t)(b * heads * D), x + (size_t)(((b * T + t) * heads) * D),
               (size_t)(heads * D) * sizeof *y);
}

/* Decoding token by token through la_decoder_step == the recurrent form,
 * outputs and final state bit for bit, from a random initial state. */
static void decoding_equals_recurrent(int id, la_ctx *ctx) {
    const la__op_entry *e = la__op_get(id);
    if (e->form != LA_FORM_RECURRENT || e->decode_op < 0) return;
    const la__decode_entry *de = la__decode_get(e->decode_op);
    const int64_t B = 3, T = 29, H = 3, K = 13, V = 7;
    la_dims d = {.B = B, .T = T, .H = H, .K = K, .V = V, .HV = 6};
    ref_op_case c;
    if (ref_op_case_init(&c, id, &d, 0, 31, REF_CASE_STATE | REF_CASE_EXTREME)) {
        CHECK(0, "%s: case out of memory", e->name);
        ref_op_case_free(&c);
        return;
    }
    const int64_t HS = c.dims.HV ? c.dims.HV : H;
    CHECK_STATUS(e->forward(ctx, &c.a), LA_OK, e->name);
    la_decoder_config cfg = {.op = (la_op)e->decode_op,
                             .N = B,
                             .H = H,
                             .HV = c.dims.HV,
                             .K = K,
                             .V = V,
                             .feature_map = c.a.feature_map,
                             .normalize = c.a.normalize,
                             .use_qk_l2norm = c.a.use_qk_l2norm,
                             .rf_W = c.a.rf_W,
                             .rf_m = c.a.rf_m,
                             .rf = c.a.rf};
    la_decoder *dec = NULL;
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_OK, de->family);
    if (!dec) {
        ref_op_case_free(&c);
        return;
    }
    CHECK_STATUS(la_decoder_set_state(dec, c.a.initial_state, c.a.initial_norm), LA_OK,
                 "set state");
    if (c.a.initial_key_max) /* random features: the state is relative to it */
        CHECK_STATUS(la_decoder_set_key_max(dec, c.a.initial_key_max), LA_OK, "set key max");
    const int64_t gw = (de->needs & LA__NEED_GK) ? K : 1;
    float *qt = th_nan_floats((size_t)(B * H * K)), *kt = th_nan_floats((size_t)(B * H * K));
    float *vt = th_nan_floats((size_t)(B * HS * V)), *gt = th_nan_floats((size_t)(B * HS * gw));
    float *bt = th_nan_floats((size_t)(B * HS)), *ot = th_nan_floats((size_t)(B * HS * V));
    float *o_dec = th_nan_floats(c.n_v);
    for (int64_t t = 0; t < T; t++) {
        take_token(qt, c.a.q, B, T, t, H, K);
        take_token(kt, c.a.k, B, T, t, H, K);
        take_token(vt, c.a.v, B, T, t, HS, V);
        if (c.a.g) take_token(gt, c.a.g, B, T, t, HS, gw);
        if (c.a.beta) take_token(bt, c.a.beta, B, T, t, HS, 1);
        CHECK_STATUS(la_decoder_step(ctx, dec, ot, qt, kt, vt, c.a.g ? gt : NULL, c.a.g_gamma,
                                     c.a.beta ? bt : NULL),
                     LA_OK, "decoder step");
        for (int64_t b = 0; b < B; b++)
            memcpy(o_dec + (size_t)(((b * T + t) * HS) * V), ot + (size_t)(b * HS * V),
                   (size_t)(HS * V) * sizeof *ot);
    }
    float *s_dec = th_nan_floats(c.n_state);
    float *z_dec = c.a.final_norm ? th_nan_floats(c.n_norm) : NULL;
    CHECK_STATUS(la_decoder_get_state(dec, s_dec, z_dec), LA_OK, "get state");
    CHECK(th_bitwise_equal(o_dec, c.a.o, c.n_v), "%s: decoding == recurrent outputs, bitwise",
          e->name);
    CHECK(th_bitwise_equal(s_dec, c.a.final_state, c.n_state),
          "%s: decoder state == recurrent final state, bitwise", e->name);
    if (z_dec)
        CHECK(th_bitwise_equal(z_dec, c.a.final_norm, c.n_norm),
              "%s: decoder normaliser == recurrent final_norm, bitwise", e->name);
    if (c.a.final_key_max) {
        float *mu_dec = th_nan_floats(c.n_mu);
        CHECK_STATUS(la_decoder_get_key_max(dec, mu_dec), LA_OK, "get key max");
        CHECK(th_bitwise_equal(mu_dec, c.a.final_key_max, c.n_mu),
              "%s: decoder key max == recurrent final_key_max, bitwise", e->name);
        free(mu_dec);
    }
    la_decoder_destroy(dec);
    free(qt), free(kt), free(vt), free(gt), free(bt), free(ot), free(o_dec), free(s_dec);
    free(z_dec);
    ref_op_case_free(&c);
}

int main(void) {
    la_ctx *c1 = th_ctx(1), *c3 = th_ctx(3);
    check_table();
    for (int id = 0; id < LA__OP_COUNT; id++) {
        uint64_t seed = 1000 + (uint64_t)id * 17;
        la_dims dense = {.B = 2, .T = 37, .H = 3, .K = 13, .V = 11, .HV = 6};
        against_reference(id, &dense, "dense", REF_CASE_STATE, c1, c3, seed++);
        against_reference(id, &dense, "dense, no state", 0, c1, c3, seed++);
        against_reference(id, &dense, "dense, extreme gates/beta",
                          REF_CASE_STATE | REF_CASE_EXTREME, c1, c3, seed++);
        /* packed sequences; head counts that fill no whole group of the
         * chunk forms, and more than one group */
        int64_t cu[4] = {0, 17, 50, 83};
        const int64_t heads[] = {1, 3, 5, 6, 9};
        for (size_t h = 0; h < sizeof heads / sizeof heads[0]; h++) {
            la_dims d = {.B = 1,
                         .T = 83,
                         .H = heads[h],
                         .K = 12,
                         .V = 10,
                         .HV = 2 * heads[h],
                         .cu_seqlens = cu,
                         .n_seqs = 3};
            char what[48];
            snprintf(what, sizeof what, "cu_seqlens, H=%lld", (long long)heads[h]);
            against_reference(id, &d, what, REF_CASE_STATE, c1, c3, seed++);
        }
        zero_length_sequences(id, c3);
        zero_options(id, c1);
        failure_writes_nothing(id, c1);
        chunk_equals_recurrent(id, c3);
        decoding_equals_recurrent(id, c1);
        decoding_equals_recurrent(id, c3);
    }
    la_ctx_destroy(c1);
    la_ctx_destroy(c3);
    return th_summary("test_registry_ops");
}
