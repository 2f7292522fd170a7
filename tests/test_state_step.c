/* la_state_step on the CPU: a decoding step on states the caller owns must
 * be the decoder's step bit for bit (it runs the same registry step over a
 * view of the caller's state), for every family whose decoder keeps no data
 * of its own; the causal Performer (W and a running key maximum in its
 * decoder) is refused; bad arguments are errors that name them, with
 * nothing written. (tests/test_cuda_ops.c compares the GPU step with it.) */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N = 3, H = 2, HV = 4, K = 7, V = 5, STEPS = 4 };

static la_decoder_config cfg_for(la_op op) {
    la_decoder_config c = {.op = op, .N = N, .H = H, .K = K, .V = V};
    if (op == LA_OP_GATED_DELTA_RULE || op == LA_OP_KDA) c.HV = HV;
    if (op == LA_OP_LINEAR_ATTN) {
        c.feature_map = LA_FEATURE_ELU1;
        c.normalize = 1;
    }
    if (op == LA_OP_DELTA_RULE || op == LA_OP_GATED_DELTA_RULE || op == LA_OP_KDA)
        c.use_qk_l2norm = 1;
    return c;
}

/* Per-step inputs of op (NULL where it reads none), in la_rng order. */
typedef struct step_in {
    float *q, *k, *v, *g, *g_gamma, *beta;
} step_in;

static step_in make_inputs(la_op op, la_rng *rng) {
    const int64_t HS = (op == LA_OP_GATED_DELTA_RULE || op == LA_OP_KDA) ? HV : H;
    step_in in = {0};
    in.q = th_rand_floats((size_t)(N * H * K), rng, 1.0);
    in.k = th_rand_floats((size_t)(N * H * K), rng, 1.0);
    in.v = th_rand_floats((size_t)(N * HS * V), rng, 1.0);
    const int per_key = op == LA_OP_GLA || op == LA_OP_KDA;
    const int gated = per_key || op == LA_OP_SIMPLE_GLA || op == LA_OP_GATED_DELTA_RULE;
    if (gated) {
        const size_t ng = (size_t)(N * HS) * (per_key ? (size_t)K : 1);
        in.g = th_rand_floats(ng, rng, 1.0);
        for (size_t i = 0; i < ng; i++) in.g[i] = -fabsf(in.g[i]) * 0.3f;
        in.g[0] = -1e4f; /* a full reset somewhere */
    }
    if (op == LA_OP_SIMPLE_GLA) {
        in.g_gamma = malloc(H * sizeof(float));
        la_retnet_decay(in.g_gamma, H);
    }
    if (op == LA_OP_DELTA_RULE || op == LA_OP_GATED_DELTA_RULE || op == LA_OP_KDA) {
        in.beta = th_rand_floats((size_t)(N * HS), rng, 1.0);
        for (int64_t i = 0; i < N * HS; i++) in.beta[i] = (float)(i % 3) * 0.995f; /* 0, 1, 1.99 */
    }
    return in;
}

static void free_inputs(step_in *in) {
    free(in->q);
    free(in->k);
    free(in->v);
    free(in->g);
    free(in->g_gamma);
    free(in->beta);
}

static void test_equals_decoder(la_ctx *ctx, la_op op) {
    const la_decoder_config c = cfg_for(op);
    const int64_t HS = c.HV ? c.HV : H;
    const size_t ns = (size_t)(N * HS * K * V), nz = (size_t)(N * H * K), no = (size_t)(N * HS * V);
    la_decoder *dec = NULL;
    if (!CHECK(la_decoder_create(&dec, &c) == LA_OK, "op %d: decoder: %s", (int)op,
               la_last_error()))
        return;
    la_rng rng;
    la_rng_seed(&rng, 40 + (uint64_t)op);
    /* start both from the same non-zero state */
    float *S = th_rand_floats(ns, &rng, 0.5), *z = NULL;
    if (c.normalize) {
        z = th_rand_floats(nz, &rng, 0.5);
        for (size_t i = 0; i < nz; i++) z[i] = fabsf(z[i]);
    }
    CHECK_STATUS(la_decoder_set_state(dec, S, z), LA_OK, "set_state");
    float *o1 = th_nan_floats(no), *o2 = th_nan_floats(no), *S1 = th_nan_floats(ns);
    float *z1 = c.normalize ? th_nan_floats(nz) : NULL;
    int same = 1;
    for (int t = 0; t < STEPS; t++) {
        step_in in = make_inputs(op, &rng);
        CHECK_STATUS(la_decoder_step(ctx, dec, o1, in.q, in.k, in.v, in.g, in.g_gamma, in.beta),
                     LA_OK, "decoder step");
        CHECK_STATUS(la_state_step(ctx, &c, LA_DTYPE_F32, S, z, o2, in.q, in.k, in.v, in.g,
                                   in.g_gamma, in.beta),
                     LA_OK, "state step");
        same &= th_bitwise_equal(o1, o2, no);
        free_inputs(&in);
    }
    CHECK_STATUS(la_decoder_get_state(dec, S1, z1), LA_OK, "get_state");
    CHECK(same, "op %d: la_state_step o == la_decoder_step o, bit for bit", (int)op);
    CHECK(th_bitwise_equal(S, S1, ns), "op %d: the caller's state == the decoder's", (int)op);
    if (c.normalize) CHECK(th_bitwise_equal(z, z1, nz), "op %d: normaliser", (int)op);
    la_decoder_destroy(dec);
    free(S);
    free(z);
    free(o1);
    free(o2);
    free(S1);
    free(z1);
}

static void test_errors(la_ctx *ctx) {
    la_decoder_config c = cfg_for(LA_OP_GATED_DELTA_RULE);
    la_rng rng;
    la_rng_seed(&rng, 7);
    step_in in = make_inputs(LA_OP_GATED_DELTA_RULE, &rng);
    const size_t ns = (size_t)(N * HV * K * V), no = (size_t)(N * HV * V);
    float *S = th_rand_floats(ns, &rng, 0.5), *S0 = malloc(ns * sizeof(float));
    memcpy(S0, S, ns * sizeof(float));
    float *o = th_nan_floats(no);
    CHECK_STATUS(
        la_state_step(ctx, &c, LA_DTYPE_F32, S, NULL, o, in.q, in.k, in.v, NULL, NULL, in.beta),
        LA_ERR_NULL_POINTER, "gated delta rule without g");
    CHECK(strstr(la_last_error(), "la_state_step") && strstr(la_last_error(), "g"),
          "names the function and g: %s", la_last_error());
    CHECK_STATUS(
        la_state_step(ctx, &c, LA_DTYPE_BF16, S, NULL, o, in.q, in.k, in.v, in.g, NULL, in.beta),
        LA_ERR_UNSUPPORTED, "bf16 on the CPU");
    CHECK_STATUS(
        la_state_step(ctx, NULL, LA_DTYPE_F32, S, NULL, o, in.q, in.k, in.v, in.g, NULL, in.beta),
        LA_ERR_NULL_POINTER, "cfg NULL");
    float z[N * H * K] = {0};
    CHECK_STATUS(
        la_state_step(ctx, &c, LA_DTYPE_F32, S, z, o, in.q, in.k, in.v, in.g, NULL, in.beta),
        LA_ERR_INVALID_ARGUMENT, "norm for a gated op");
    S[5] = NAN;
    CHECK_STATUS(
        la_state_step(ctx, &c, LA_DTYPE_F32, S, NULL, o, in.q, in.k, in.v, in.g, NULL, in.beta),
        LA_ERR_NON_FINITE, "NaN in the state");
    S[5] = S0[5];
    in.beta[1] = 2.5f;
    CHECK_STATUS(
        la_state_step(ctx, &c, LA_DTYPE_F32, S, NULL, o, in.q, in.k, in.v, in.g, NULL, in.beta),
        LA_ERR_INVALID_ARGUMENT, "beta > 2");
    c.HV = 3;
    CHECK_STATUS(
        la_state_step(ctx, &c, LA_DTYPE_F32, S, NULL, o, in.q, in.k, in.v, in.g, NULL, in.beta),
        LA_ERR_SHAPE_MISMATCH, "HV not a multiple of H");
    c = cfg_for(LA_OP_PERFORMER);
    CHECK_STATUS(
        la_state_step(ctx, &c, LA_DTYPE_F32, S, NULL, o, in.q, in.k, in.v, NULL, NULL, NULL),
        LA_ERR_UNSUPPORTED, "Performer keeps its data in a la_decoder");
    c.op = (la_op)99;
    CHECK_STATUS(
        la_state_step(ctx, &c, LA_DTYPE_F32, S, NULL, o, in.q, in.k, in.v, NULL, NULL, NULL),
        LA_ERR_INVALID_ARGUMENT, "unknown op");
    CHECK(th_bitwise_equal(S, S0, ns) && th_untouched(o, no), "nothing written on failure");
    free_inputs(&in);
    free(S);
    free(S0);
    free(o);
}

int main(void) {
    la_ctx *ctx = th_ctx(2);
    const la_op ops[] = {LA_OP_LINEAR_ATTN, LA_OP_SIMPLE_GLA,       LA_OP_GLA,
                         LA_OP_DELTA_RULE,  LA_OP_GATED_DELTA_RULE, LA_OP_KDA};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) test_equals_decoder(ctx, ops[i]);
    test_errors(ctx);
    la_ctx_destroy(ctx);
    return th_summary("test_state_step");
}
