/* Generation == teacher-forced forward: token-by-token logits through
 * la_decoder (linear mixers) or the KV cache (softmax) against the training
 * forward's logits on the same tokens. Bit for bit for the linear mixers
 * when the forward runs the recurrent form; within float rounding for the
 * chunk form and for softmax (streaming tiles vs a double-accumulated cache). */
#include "harness.h"
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_mixer(la_ctx *ctx, int mixer) {
    enum { N = 3, T = 29 };
    lm_config c = lm_config_default(mixer, 23);
    c.d_model = 24, c.n_heads = 3, c.head_dim = 8, c.d_ff = 40, c.performer_m = 12;
    c.seed = 100 + (uint64_t)mixer;
    lm_model *m = NULL;
    if (!CHECK(lm_model_create(&m, &c, ctx) == LA_OK, "create: %s", lm_error())) return;
    /* Move the weights off their initial values (gates, biases, conv) so the
     * comparison exercises everything. */
    la_rng rng;
    la_rng_seed(&rng, 4);
    for (int64_t i = 0; i < m->n_params; i++) m->params[i] += (float)(0.05 * la_rng_normal(&rng));
    int32_t tok[N * T], tgt[N * T];
    for (int64_t i = 0; i < N * T; i++) tok[i] = (int32_t)(la_rng_u64(&rng) % 23), tgt[i] = -1;
    float *ref = malloc((size_t)(N * T * 23) * sizeof(float));
    float *gen = th_nan_floats((size_t)(N * T * 23));
    float *step = malloc((size_t)(N * 23) * sizeof(float));
    for (int form = 0; form < 2; form++) {
        if (mixer == LM_SOFTMAX && form == 1) break;
        m->form = form ? LA_FORM_CHUNK : LA_FORM_RECURRENT;
        double loss;
        CHECK(lm_forward(m, tok, tgt, N, T, &loss, NULL, NULL, ref) == LA_OK, "forward: %s",
              lm_error());
        lm_gen *g = NULL;
        if (!CHECK(lm_gen_create(&g, m, N, T) == LA_OK, "gen create: %s", lm_error())) break;
        const int64_t bytes0 = lm_gen_state_bytes(g);
        int ok = 1;
        for (int64_t t = 0; t < T && ok; t++) {
            int32_t col[N];
            for (int64_t n = 0; n < N; n++) col[n] = tok[n * T + t];
            ok = lm_gen_step(g, col, step) == LA_OK;
            for (int64_t n = 0; n < N; n++)
                memcpy(gen + (n * T + t) * 23, step + n * 23, 23 * sizeof(float));
        }
        CHECK(ok, "%ld generation steps: %s", (long)T, lm_error());
        const int64_t bytes1 = lm_gen_state_bytes(g);
        double maxd = 0, maxr = 0;
        for (int64_t i = 0; i < N * T * 23; i++) {
            const double d = fabs((double)gen[i] - ref[i]);
            if (!(d <= maxd)) maxd = d;
            if (fabs(ref[i]) > maxr) maxr = fabs(ref[i]);
        }
        const int bitwise = th_bitwise_equal(gen, ref, (size_t)(N * T * 23));
        printf("  %-9s forward %-9s max |gen - forward| = %.3g (logits up to %.3g)%s; state "
               "%ld -> %ld bytes\n",
               lm_mixer_name(mixer),
               form                  ? "chunk"
               : mixer == LM_SOFTMAX ? "streaming"
                                     : "recurrent",
               maxd, maxr, bitwise ? ", bitwise equal" : "", (long)bytes0, (long)bytes1);
        if (mixer != LM_SOFTMAX && form == 0)
            CHECK(bitwise, "%s: generate == recurrent forward bit for bit", lm_mixer_name(mixer));
        else
            CHECK_ERR(maxd, 1e-4 * (1.0 + maxr), "%s: generate vs forward", lm_mixer_name(mixer));
        if (mixer == LM_SOFTMAX)
            CHECK(bytes1 > bytes0, "softmax cache grows with the position");
        else
            CHECK(bytes1 == bytes0, "%s: state does not grow", lm_mixer_name(mixer));
        int32_t bad[N] = {0, 23, 0};
        CHECK(lm_gen_step(g, bad, step) != LA_OK, "step past max_len or bad token refused");
        lm_gen_destroy(g);
    }
    free(ref);
    free(gen);
    free(step);
    lm_model_destroy(m);
}

int main(void) {
    la_ctx *ctx = th_ctx(2);
    for (int mix = 0; mix < LM_MIXER_COUNT; mix++)
        if (lm_mixer_available(mix)) test_mixer(ctx, mix);
    la_ctx_destroy(ctx);
    return th_summary("model_generate");
}
