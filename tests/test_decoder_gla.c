/* Decoding with simple GLA and GLA: la_decoder_step token by token equals
 * the recurrent forward bit for bit (same per-token arithmetic), outputs and
 * final state, from a given initial state, for 1 and 2 threads; and the
 * decoder's gate checks for these ops. */
#include "gla_cases.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x [B,T,H,D] at token t -> y [B,H,D] */
static void take_token(float *y, const float *x, int64_t B, int64_t T, int64_t t, int64_t H,
                       int64_t D) {
    for (int64_t b = 0; b < B; b++)
        memcpy(y + (size_t)(b * H * D), x + (size_t)(((b * T + t) * H) * D),
               (size_t)(H * D) * sizeof *y);
}

/* V = 10 runs the steps' scalar column loop only; V = 168 a 128-column block
 * (AVX-512 builds), 32-column blocks and a scalar tail of 8 (src/kernels/rowvec.h). */
static void run_decoder(int per_key, int flags, float scale, int threads, uint64_t seed,
                        int64_t V) {
    const int64_t B = 3, T = 70, H = 2, K = 12, gw = per_key ? K : 1;
    la_ctx *ctx = th_ctx(threads);
    la_rng rng;
    la_rng_seed(&rng, seed);
    gcase c = gc_make(per_key, B, T, H, K, V, NULL, 0, flags | GC_S0, &rng);
    const char *name = per_key ? "GLA" : "simple GLA";
    la_gated_opts o = gc_opts(LA_FORM_RECURRENT, 0);
    o.scale = scale;
    float *o_rec = th_nan_floats(c.nv), *sT = th_nan_floats(c.ns);
    CHECK_STATUS(gc_fwd(&c, ctx, &o, o_rec, sT), LA_OK, "recurrent forward");
    la_gated_opts oc = gc_opts(LA_FORM_CHUNK, 16);
    oc.scale = scale;
    float *o_chunk = th_nan_floats(c.nv);
    CHECK_STATUS(gc_fwd(&c, ctx, &oc, o_chunk, NULL), LA_OK, "chunk forward");

    la_decoder_config cfg = {.op = per_key ? LA_OP_GLA : LA_OP_SIMPLE_GLA, .N = B, .H = H,
                             .K = K, .V = V, .scale = scale};
    la_decoder *dec = NULL;
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_OK, "decoder create");
    if (!dec) return;
    CHECK_STATUS(la_decoder_set_state(dec, c.s0, NULL), LA_OK, "set initial state");
    float *qt = malloc((size_t)(B * H * K) * sizeof *qt), *kt = malloc((size_t)(B * H * K) * sizeof *kt);
    float *vt = malloc((size_t)(B * H * V) * sizeof *vt), *gt = malloc((size_t)(B * H * gw) * sizeof *gt);
    float *ot = th_nan_floats((size_t)(B * H * V)), *o_dec = th_nan_floats(c.nv);
    for (int64_t t = 0; t < T; t++) {
        take_token(qt, c.q, B, T, t, H, K);
        take_token(kt, c.k, B, T, t, H, K);
        take_token(vt, c.v, B, T, t, H, V);
        if (c.g) take_token(gt, c.g, B, T, t, H, gw);
        CHECK_STATUS(la_decoder_step(ctx, dec, ot, qt, kt, vt, c.g ? gt : NULL, c.gamma, NULL),
                     LA_OK, "decoder step");
        for (int64_t b = 0; b < B; b++)
            memcpy(o_dec + (size_t)(((b * T + t) * H) * V), ot + (size_t)(b * H * V),
                   (size_t)(H * V) * sizeof *ot);
    }
    float *s_dec = th_nan_floats(c.ns);
    CHECK_STATUS(la_decoder_get_state(dec, s_dec, NULL), LA_OK, "get state");
    CHECK(th_bitwise_equal(o_dec, o_rec, c.nv), "%s (flags %d, %d threads): decoding = recurrent "
          "outputs, bitwise", name, flags, threads);
    CHECK(th_bitwise_equal(s_dec, sT, c.ns), "%s (flags %d, %d threads): decoder state = "
          "recurrent final state, bitwise", name, flags, threads);
    /* The chunk form computes the same thing in another order. */
    const double e = ref_max_rel_err_ff(o_chunk, o_dec, c.nv);
    GC_CHECK_ERR(e, 1e-5, "%s: chunk form vs decoding (float32 rounding only)", name);

    /* Bad gates: nothing written. */
    float *ob = th_nan_floats((size_t)(B * H * V));
    if (per_key)
        CHECK_STATUS(la_decoder_step(ctx, dec, ob, qt, kt, vt, NULL, NULL, NULL),
                     LA_ERR_NULL_POINTER, "GLA step without g");
    for (int64_t i = 0; i < B * H * gw; i++) gt[i] = -0.1f;
    gt[1] = 0.5f;
    CHECK_STATUS(la_decoder_step(ctx, dec, ob, qt, kt, vt, gt, NULL, NULL),
                 LA_ERR_INVALID_ARGUMENT, "positive gate");
    gt[1] = NAN;
    CHECK_STATUS(la_decoder_step(ctx, dec, ob, qt, kt, vt, gt, NULL, NULL), LA_ERR_NON_FINITE,
                 "NaN gate");
    CHECK(th_untouched(ob, (size_t)(B * H * V)), "bad steps write nothing");
    float *s_after = th_nan_floats(c.ns);
    la_decoder_get_state(dec, s_after, NULL);
    CHECK(th_bitwise_equal(s_after, sT, c.ns), "bad steps leave the state alone");

    la_decoder_destroy(dec);
    free(qt); free(kt); free(vt); free(gt); free(ot); free(o_dec); free(s_dec); free(ob);
    free(s_after); free(o_rec); free(o_chunk); free(sT);
    gc_free(&c);
    la_ctx_destroy(ctx);
}

int main(void) {
    for (int threads = 1; threads <= 2; threads++)
        for (int64_t V = 10; V <= 168; V += 158) {
            run_decoder(0, GC_G | GC_GAMMA, 0.0f, threads, 1, V);
            run_decoder(0, GC_G, 0.0f, threads, 2, V);
            run_decoder(0, GC_GAMMA, 0.3f, threads, 3, V);
            run_decoder(0, 0, 0.0f, threads, 4, V);
            run_decoder(1, 0, 0.0f, threads, 5, V);
            run_decoder(1, 0, 0.7f, threads, 6, V);
        }
    return th_summary("decoder_gla");
}
