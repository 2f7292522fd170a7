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
    c.scale = NAN;
    CHECK_STATUS(la_decoder_create(&dec, &c), LA_ERR_INVALID_ARGUMENT, "NaN scale");
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

int main(void) {
    test_create();
    test_state();
    test_step_validation();
    return th_summary("test_decoder");
}
