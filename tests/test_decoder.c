/* The decoding API's own contract: configuration and per-step validation,
 * state set/get/reset. (Each op family tests that its steps equal its
 * recurrent form in its own test program.) */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static la_decoder_config cfg_for(la_op op) {
    la_decoder_config c = {.op = op, .N = 2, .H = 3, .K = 5, .V = 4};
    c.feature_map = LA_FEATURE_ELU1;
    c.normalize = 1;
    return c;
}

static void test_create(void) {
    la_decoder *dec = NULL;
    la_decoder_config c = cfg_for(LA_OP_LINEAR_ATTN);
    CHECK_STATUS(la_decoder_create(NULL, &c), LA_ERR_NULL_POINTER, "out NULL");
    CHECK_STATUS(la_decoder_create(&dec, NULL), LA_ERR_NULL_POINTER, "cfg NULL");
    c.op = (la_op)17;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_ERR_INVALID_ARGUMENT, "unknown op");
    CHECK(strstr(la_last_error(), "17") != NULL, "names the op: %s", la_last_error());
    c = cfg_for(LA_OP_LINEAR_ATTN);
    c.K = 0;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_ERR_INVALID_SIZE, "K = 0");
    c = cfg_for(LA_OP_LINEAR_ATTN);
    c.feature_map = (la_feature_map)9;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_ERR_INVALID_ARGUMENT, "unknown feature map");
    c = cfg_for(LA_OP_LINEAR_ATTN);
    c.eps = -1;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_ERR_INVALID_ARGUMENT, "negative eps");
    c = cfg_for(LA_OP_LINEAR_ATTN);
    c.normalize = 0;
    c.scale = NAN;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_ERR_INVALID_ARGUMENT, "NaN scale");
    /* the options rule: scale has no effect when normalised, eps none when
     * not, feature_map and eps none for the other ops: ignored */
    c.normalize = 1;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_OK, "NaN scale ignored when normalised");
    la_decoder_destroy(dec);
    c = cfg_for(LA_OP_LINEAR_ATTN);
    c.normalize = 0;
    c.eps = -1;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_OK, "eps ignored when unnormalised");
    la_decoder_destroy(dec);
    c = cfg_for(LA_OP_GLA);
    c.eps = -1;
    c.feature_map = (la_feature_map)9;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_OK, "linear-only fields ignored for GLA");
    la_decoder_destroy(dec);
    dec = NULL;
    c = cfg_for(LA_OP_DELTA_RULE);
    c.HV = 6;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_ERR_SHAPE_MISMATCH, "HV for DeltaNet");
    c.op = LA_OP_GATED_DELTA_RULE;
    c.HV = 4;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_ERR_SHAPE_MISMATCH, "HV not multiple of H");
    CHECK(dec == NULL, "nothing written on error");
    c.HV = 6;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_OK, "gated delta with HV = 2H");
    la_decoder_destroy(dec);
    la_decoder_destroy(NULL);
}

static void test_state(void) {
    la_decoder *dec = NULL;
    la_decoder_config c = cfg_for(LA_OP_LINEAR_ATTN);
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_OK, "create");
    const size_t ns = 2 * 3 * 5 * 4, nz = 2 * 3 * 5;
    la_rng rng;
    la_rng_seed(&rng, 3);
    float *S = th_rand_floats(ns, &rng, 1), *z = th_rand_floats(nz, &rng, 1);
    float *S2 = th_nan_floats(ns), *z2 = th_nan_floats(nz);
    CHECK_STATUS(la_decoder_get_state(dec, S2, z2), LA_OK, "get");
    int zero = 1;
    for (size_t i = 0; i < ns; i++) zero &= S2[i] == 0;
    CHECK(zero, "initial state is zero");
    CHECK_STATUS(la_decoder_set_state(dec, S, z), LA_OK, "set");
    CHECK_STATUS(la_decoder_get_state(dec, S2, z2), LA_OK, "get");
    CHECK(th_bitwise_equal(S, S2, ns) && th_bitwise_equal(z, z2, nz), "round trip");
    S[7] = NAN;
    CHECK_STATUS(la_decoder_set_state(dec, S, NULL), LA_ERR_NON_FINITE, "NaN state");
    CHECK_STATUS(la_decoder_get_state(dec, S2, NULL), LA_OK, "get after failed set");
    CHECK(S2[7] == S2[7], "failed set left the state alone");
    CHECK_STATUS(la_decoder_reset(dec), LA_OK, "reset");
    CHECK_STATUS(la_decoder_get_state(dec, S2, z2), LA_OK, "get");
    zero = 1;
    for (size_t i = 0; i < nz; i++) zero &= z2[i] == 0;
    CHECK(zero, "reset zeroes the normaliser");
    la_decoder_destroy(dec);

    c.normalize = 0;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_OK, "unnormalised");
    CHECK_STATUS(la_decoder_set_state(dec, NULL, z), LA_ERR_INVALID_ARGUMENT,
                 "norm for an unnormalised decoder");
    CHECK_STATUS(la_decoder_get_state(dec, NULL, z2), LA_ERR_INVALID_ARGUMENT,
                 "get norm for an unnormalised decoder");
    la_decoder_destroy(dec);
    free(S), free(z), free(S2), free(z2);
}

static void test_step_validation(void) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 5);
    const size_t nqk = 2 * 3 * 5, nv = 2 * 3 * 4, nh = 2 * 3;
    float *q = th_rand_floats(nqk, &rng, 1), *k = th_rand_floats(nqk, &rng, 1);
    float *v = th_rand_floats(nv, &rng, 1), *o = th_nan_floats(nv);
    float *g = th_rand_floats(nqk, &rng, 1), *beta = th_rand_floats(nh, &rng, 1);
    for (size_t i = 0; i < nqk; i++) g[i] = -fabsf(g[i]);
    for (size_t i = 0; i < nh; i++) beta[i] = fabsf(beta[i]) > 2 ? 1 : fabsf(beta[i]);

    la_decoder *dec = NULL;
    la_decoder_config c = cfg_for(LA_OP_LINEAR_ATTN);
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_OK, "create");
    CHECK_STATUS(la_decoder_step(NULL, dec, o, q, k, v, NULL, NULL, NULL), LA_ERR_NULL_POINTER,
                 "ctx NULL");
    CHECK_STATUS(la_decoder_step(ctx, dec, o, NULL, k, v, NULL, NULL, NULL), LA_ERR_NULL_POINTER,
                 "q NULL");
    CHECK(strstr(la_last_error(), "q is NULL") != NULL, "names q: %s", la_last_error());
    q[4] = INFINITY;
    CHECK_STATUS(la_decoder_step(ctx, dec, o, q, k, v, NULL, NULL, NULL), LA_ERR_NON_FINITE,
                 "Inf in q");
    q[4] = 0.5f;
    CHECK_STATUS(la_decoder_step(ctx, dec, o, q, k, v, g, NULL, NULL), LA_ERR_INVALID_ARGUMENT,
                 "gate for linear attention");
    CHECK_STATUS(la_decoder_step(ctx, dec, o, q, k, v, NULL, NULL, beta),
                 LA_ERR_INVALID_ARGUMENT, "beta for linear attention");
    CHECK(th_untouched(o, nv), "no output written on errors");
    la_decoder_destroy(dec);

    c = cfg_for(LA_OP_GLA);
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_OK, "create GLA");
    CHECK_STATUS(la_decoder_step(ctx, dec, o, q, k, v, NULL, NULL, NULL), LA_ERR_NULL_POINTER,
                 "GLA needs g");
    g[3] = 0.25f;
    CHECK_STATUS(la_decoder_step(ctx, dec, o, q, k, v, g, NULL, NULL), LA_ERR_INVALID_ARGUMENT,
                 "positive log gate");
    g[3] = -0.25f;
    CHECK_STATUS(la_decoder_step(ctx, dec, o, q, k, v, g, g, NULL), LA_ERR_INVALID_ARGUMENT,
                 "g_gamma for GLA");
    la_decoder_destroy(dec);

    c = cfg_for(LA_OP_DELTA_RULE);
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_OK, "create DeltaNet");
    CHECK_STATUS(la_decoder_step(ctx, dec, o, q, k, v, NULL, NULL, NULL), LA_ERR_NULL_POINTER,
                 "DeltaNet needs beta");
    beta[1] = 2.5f;
    CHECK_STATUS(la_decoder_step(ctx, dec, o, q, k, v, NULL, NULL, beta),
                 LA_ERR_INVALID_ARGUMENT, "beta > 2");
    beta[1] = NAN;
    CHECK_STATUS(la_decoder_step(ctx, dec, o, q, k, v, NULL, NULL, beta), LA_ERR_NON_FINITE,
                 "NaN beta");
    CHECK(th_untouched(o, nv), "no output written on errors");
    la_decoder_destroy(dec);
    la_ctx_destroy(ctx);
    free(q), free(k), free(v), free(o), free(g), free(beta);
}

/* Per-slot control: reset/set/get one sequence slot leaves the others
 * alone, and a slot reset mid-stream then decodes exactly as a fresh
 * decoder would (bit for bit), with every op and the normaliser. */
static void test_slots(void) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 5);
    for (int op = 0; op <= (int)LA_OP_GATED_DELTA_RULE; op++) {
        la_decoder_config cfg = cfg_for((la_op)op);
        cfg.N = 3;
        cfg.use_qk_l2norm = 1;
        const int64_t N = cfg.N, H = cfg.H, K = cfg.K, V = cfg.V;
        const size_t slot = (size_t)(H * K * V), zslot = (size_t)(H * K);
        const int norm = op == LA_OP_LINEAR_ATTN;
        la_decoder *dec = NULL, *fresh = NULL;
        CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_OK, "create");
        cfg.N = 1;
        CHECK_STATUS(la_decoder_create(&fresh, &cfg), LA_OK, "create fresh");
        if (!dec || !fresh) continue;
        float *q = th_rand_floats((size_t)(N * H * K), &rng, 1), *k = th_rand_floats((size_t)(N * H * K), &rng, 1);
        float *v = th_rand_floats((size_t)(N * H * V), &rng, 1), *o = th_nan_floats((size_t)(N * H * V));
        float *g = th_rand_floats((size_t)(N * H * K), &rng, 1), *beta = th_rand_floats((size_t)(N * H), &rng, 1);
        float *o1 = th_nan_floats((size_t)(H * V));
        for (size_t i = 0; i < (size_t)(N * H * K); i++) g[i] = -0.1f * fabsf(g[i]);
        for (size_t i = 0; i < (size_t)(N * H); i++) beta[i] = 0.5f * fabsf(beta[i]);
        const float *gg = op == LA_OP_LINEAR_ATTN || op == LA_OP_DELTA_RULE ? NULL : g;
        const float *bb = op == LA_OP_DELTA_RULE || op == LA_OP_GATED_DELTA_RULE ? beta : NULL;
        for (int t = 0; t < 3; t++)
            CHECK_STATUS(la_decoder_step(ctx, dec, o, q, k, v, gg, NULL, bb), LA_OK, "step");
        float *all = th_nan_floats(N * slot), *after = th_nan_floats(N * slot);
        float *z = norm ? th_nan_floats(N * zslot) : NULL, *z2 = norm ? th_nan_floats(N * zslot) : NULL;
        CHECK_STATUS(la_decoder_get_state(dec, all, z), LA_OK, "get state");
        CHECK_STATUS(la_decoder_reset_slot(dec, 1), LA_OK, "reset slot 1");
        CHECK_STATUS(la_decoder_get_state(dec, after, z2), LA_OK, "get state");
        int zero = 1;
        for (size_t i = 0; i < slot; i++) zero &= after[slot + i] == 0.0f;
        CHECK(zero && th_bitwise_equal(after, all, slot) &&
                  th_bitwise_equal(after + 2 * slot, all + 2 * slot, slot),
              "op %d: reset_slot zeroes slot 1 only", op);
        if (norm)
            CHECK(th_bitwise_equal(z2, z, zslot) && z2[zslot] == 0.0f &&
                      th_bitwise_equal(z2 + 2 * zslot, z + 2 * zslot, zslot),
                  "op %d: reset_slot zeroes slot 1's normaliser only", op);
        /* slot 1 now decodes as a fresh decoder fed the same tokens */
        const size_t qo = (size_t)(H * K), vo = (size_t)(H * V);
        for (int t = 0; t < 4; t++) {
            CHECK_STATUS(la_decoder_step(ctx, dec, o, q, k, v, gg, NULL, bb), LA_OK, "step");
            CHECK_STATUS(la_decoder_step(ctx, fresh, o1, q + qo, k + qo, v + vo,
                                         gg ? (op == LA_OP_GLA ? g + qo : g + H) : NULL, NULL,
                                         bb ? beta + H : NULL),
                         LA_OK, "fresh step");
            CHECK(th_bitwise_equal(o + vo, o1, vo), "op %d: slot 1 after reset == fresh decoder",
                  op);
        }
        /* set/get one slot */
        float *s = th_rand_floats(slot, &rng, 0.5), *s_back = th_nan_floats(slot);
        float *zs = norm ? th_rand_floats(zslot, &rng, 0.5) : NULL;
        if (zs)
            for (size_t i = 0; i < zslot; i++) zs[i] = fabsf(zs[i]);
        float *zb = norm ? th_nan_floats(zslot) : NULL;
        CHECK_STATUS(la_decoder_get_state(dec, all, z), LA_OK, "get state");
        CHECK_STATUS(la_decoder_set_slot_state(dec, 2, s, zs), LA_OK, "set slot 2");
        CHECK_STATUS(la_decoder_get_slot_state(dec, 2, s_back, zb), LA_OK, "get slot 2");
        CHECK(th_bitwise_equal(s, s_back, slot) && (!norm || th_bitwise_equal(zs, zb, zslot)),
              "op %d: set/get slot round trip", op);
        CHECK_STATUS(la_decoder_get_state(dec, after, z2), LA_OK, "get state");
        CHECK(th_bitwise_equal(after, all, 2 * slot), "op %d: set slot 2 leaves 0, 1", op);
        /* bad slots and arguments: errors, nothing written */
        float *untouched = th_nan_floats(slot);
        CHECK_STATUS(la_decoder_get_slot_state(dec, 3, untouched, NULL), LA_ERR_INVALID_ARGUMENT,
                     "slot 3 of 3");
        CHECK_STATUS(la_decoder_get_slot_state(dec, -1, untouched, NULL), LA_ERR_INVALID_ARGUMENT,
                     "slot -1");
        CHECK(th_untouched(untouched, slot), "failed get writes nothing");
        CHECK_STATUS(la_decoder_reset_slot(dec, 3), LA_ERR_INVALID_ARGUMENT, "reset slot 3");
        CHECK_STATUS(la_decoder_reset_slot(NULL, 0), LA_ERR_NULL_POINTER, "reset NULL");
        s[1] = NAN;
        CHECK_STATUS(la_decoder_set_slot_state(dec, 0, s, NULL), LA_ERR_NON_FINITE, "NaN state");
        if (!norm)
            CHECK_STATUS(la_decoder_set_slot_state(dec, 0, NULL, s), LA_ERR_INVALID_ARGUMENT,
                         "norm without a normaliser");
        CHECK_STATUS(la_decoder_get_state(dec, after, z2), LA_OK, "get state");
        CHECK(th_bitwise_equal(after, all, 2 * slot), "op %d: failed calls change nothing", op);
        la_decoder_destroy(dec);
        la_decoder_destroy(fresh);
        free(q), free(k), free(v), free(o), free(g), free(beta), free(o1), free(all), free(after);
        free(z), free(z2), free(s), free(s_back), free(zs), free(zb), free(untouched);
    }
    la_ctx_destroy(ctx);
}

int main(void) {
    test_create();
    test_state();
    test_step_validation();
    test_slots();
    return th_summary("test_decoder");
}
