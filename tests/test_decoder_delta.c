/* Decoding with the delta rules: la_decoder_step token by token equals the
 * recurrent forward bit for bit (same per-token code), and the chunk form
 * within rounding (relative RMS <= 1e-5, as the forms agree with float64).
 * Also the decoder's checks of beta and g for these ops. */
#include "delta_rule_cases.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* V = 12: the steps' scalar column loop; V = 168: a 128-column vector
 * block (AVX-512 builds), 32-column blocks and a scalar tail of 8
 * (src/kernels/rowvec.h). */
static void test_decode(int gated, int l2norm, int threads, float scale, int64_t V) {
    dcase c = dc_default(gated);
    c.B = 3;
    c.T = 70;
    c.H = 2;
    c.HV = gated ? 4 : 0;
    c.K = 20;
    c.V = V;
    c.l2norm = l2norm;
    c.scale = scale;
    c.k_std = l2norm ? 1.0 : 0.2; /* raw keys with |k|^2 ~ 1: bounded recurrence */
    c.gate = GATE_RESETS;
    c.seed = (uint64_t)(40 + gated * 4 + l2norm * 2 + threads);
    la_ctx *ctx = th_ctx(threads);
    ddata x = dc_data(&c);
    dout rec = dc_alloc_out(&x), chk = dc_alloc_out(&x);
    CHECK_STATUS(dc_forward(ctx, &c, &x, &rec), LA_OK, "recurrent forward");
    dcase cc = c;
    cc.form = LA_FORM_CHUNK;
    cc.chunk = 16;
    CHECK_STATUS(dc_forward(ctx, &cc, &x, &chk), LA_OK, "chunk forward");

    la_decoder_config cfg = {0};
    cfg.op = gated ? LA_OP_GATED_DELTA_RULE : LA_OP_DELTA_RULE;
    cfg.N = c.B;
    cfg.H = c.H;
    cfg.HV = gated ? c.HV : 0;
    cfg.K = c.K;
    cfg.V = c.V;
    cfg.scale = scale;
    cfg.use_qk_l2norm = l2norm;
    la_decoder *dec = NULL;
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_OK, "decoder create");
    CHECK_STATUS(la_decoder_set_state(dec, x.S0, NULL), LA_OK, "set state");
    const int64_t N = c.B, T = c.T, H = c.H, HS = x.HS, K = c.K;
    float *q = th_nan_floats((size_t)(N * H * K)), *k = th_nan_floats((size_t)(N * H * K));
    float *v = th_nan_floats((size_t)(N * HS * V)), *g = th_nan_floats((size_t)(N * HS));
    float *b = th_nan_floats((size_t)(N * HS)), *o = th_nan_floats((size_t)(N * HS * V));
    float *od = th_nan_floats(x.nv), *S = th_nan_floats(x.ns);
    int ok = 1;
    for (int64_t t = 0; t < T && ok; t++) {
        for (int64_t n = 0; n < N; n++) {
            const int64_t tok = n * T + t;
            memcpy(q + n * H * K, x.q + tok * H * K, (size_t)(H * K) * sizeof(float));
            memcpy(k + n * H * K, x.k + tok * H * K, (size_t)(H * K) * sizeof(float));
            memcpy(v + n * HS * V, x.v + tok * HS * V, (size_t)(HS * V) * sizeof(float));
            memcpy(g + n * HS, x.g + tok * HS, (size_t)HS * sizeof(float));
            memcpy(b + n * HS, x.beta + tok * HS, (size_t)HS * sizeof(float));
        }
        ok = la_decoder_step(ctx, dec, o, q, k, v, gated ? g : NULL, NULL, b) == LA_OK;
        for (int64_t n = 0; n < N; n++)
            memcpy(od + (n * T + t) * HS * V, o + n * HS * V, (size_t)(HS * V) * sizeof(float));
    }
    CHECK(ok, "decoder steps succeed: %s", la_last_error());
    CHECK_STATUS(la_decoder_get_state(dec, S, NULL), LA_OK, "get state");
    char what[80];
    snprintf(what, sizeof what, "%s l2norm=%d threads=%d scale=%g", gated ? "gated" : "delta",
             l2norm, threads, (double)scale);
    CHECK(th_bitwise_equal(od, rec.o, x.nv), "%s: decoder outputs == recurrent, bitwise", what);
    CHECK(th_bitwise_equal(S, rec.ST, x.ns), "%s: decoder state == recurrent final state", what);
    double e = dc_rms_ff(od, chk.o, x.nv), es = dc_rms_ff(S, chk.ST, x.ns);
    CHECK(e <= 1e-5 && es <= 1e-5, "%s: decoder vs chunk form: o %.3g, state %.3g > 1e-5", what,
          e, es);

    /* The decoder's own checks for these ops: nothing written on error. */
    float *o2 = th_nan_floats((size_t)(N * HS * V));
    CHECK_STATUS(la_decoder_step(ctx, dec, o2, q, k, v, gated ? g : NULL, NULL, NULL),
                 LA_ERR_NULL_POINTER, "beta missing");
    if (gated)
        CHECK_STATUS(la_decoder_step(ctx, dec, o2, q, k, v, NULL, NULL, b), LA_ERR_NULL_POINTER,
                     "g missing");
    else
        CHECK_STATUS(la_decoder_step(ctx, dec, o2, q, k, v, g, NULL, b), LA_ERR_INVALID_ARGUMENT,
                     "g given to DeltaNet");
    b[1] = 2.5f;
    CHECK_STATUS(la_decoder_step(ctx, dec, o2, q, k, v, gated ? g : NULL, NULL, b),
                 LA_ERR_INVALID_ARGUMENT, "beta out of range");
    CHECK(th_untouched(o2, (size_t)(N * HS * V)), "%s: o untouched on error", what);
    float *S2 = th_nan_floats(x.ns);
    la_decoder_get_state(dec, S2, NULL);
    CHECK(th_bitwise_equal(S, S2, x.ns), "%s: state unchanged by failed steps", what);

    free(o2); free(S2);
    free(q); free(k); free(v); free(g); free(b); free(o); free(od); free(S);
    la_decoder_destroy(dec);
    dc_free_out(&rec);
    dc_free_out(&chk);
    dc_free_data(&x);
    la_ctx_destroy(ctx);
}

int main(void) {
    for (int gated = 0; gated < 2; gated++)
        for (int l2 = 0; l2 < 2; l2++)
            for (int threads = 1; threads <= 2; threads++)
                for (int64_t V = 12; V <= 168; V += 156)
                    test_decode(gated, l2, threads, l2 ? 0.0f : 0.25f, V);
    return th_summary("test_decoder_delta");
}
