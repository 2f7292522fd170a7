/* quickstart — prefill a prompt with the chunkwise Gated DeltaNet forward,
 * then generate token by token with the decoder at constant cost per token,
 * and show that both give the same outputs.
 *
 *   cc quickstart.c $(pkg-config --cflags --libs linattn) && ./a.out */
#include <linattn.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum {
    NB = 1,  /* sequences */
    NT = 48, /* tokens */
    NH = 2,  /* q/k heads */
    NHV = 4, /* value heads (two per q/k head) */
    NK = 32, /* q/k head dimension */
    NV = 32  /* value head dimension */
};

static float frand(la_rng *rng, float s) { return s * (float)la_rng_normal(rng); }

static int fail(const char *what) {
    fprintf(stderr, "quickstart: %s: %s\n", what, la_last_error());
    return 1;
}

int main(void) {
    static float q[NT][NH][NK], k[NT][NH][NK], v[NT][NHV][NV], g[NT][NHV], beta[NT][NHV];
    static float o[NT][NHV][NV], o_dec[NT][NHV][NV], state[NHV][NK][NV];
    la_rng rng;
    la_rng_seed(&rng, 2024);
    for (int t = 0; t < NT; t++) {
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < NK; i++) q[t][h][i] = frand(&rng, 1), k[t][h][i] = frand(&rng, 1);
        for (int h = 0; h < NHV; h++) {
            for (int i = 0; i < NV; i++) v[t][h][i] = frand(&rng, 1);
            g[t][h] = -0.1f * fabsf(frand(&rng, 1));            /* log decay <= 0 */
            beta[t][h] = 1.0f / (1.0f + expf(-frand(&rng, 1))); /* in (0, 1) */
        }
    }

    la_ctx *ctx;
    if (la_ctx_create(&ctx, 0) != LA_OK) return fail("la_ctx_create");

    /* The whole sequence at once (chunkwise WY form). */
    la_dims dims = {.B = NB, .T = NT, .H = NH, .HV = NHV, .K = NK, .V = NV};
    la_gated_opts opts = la_gated_opts_default();
    opts.use_qk_l2norm = 1;
    if (la_gated_delta_rule_forward(ctx, &opts, &dims, &o[0][0][0], &state[0][0][0], &q[0][0][0],
                                    &k[0][0][0], &v[0][0][0], &g[0][0], &beta[0][0], NULL) != LA_OK)
        return fail("la_gated_delta_rule_forward");

    /* The same tokens one at a time: O(NK*NV) work per head and token. */
    la_decoder_config cfg = {.op = LA_OP_GATED_DELTA_RULE,
                             .N = NB,
                             .H = NH,
                             .HV = NHV,
                             .K = NK,
                             .V = NV,
                             .use_qk_l2norm = 1};
    la_decoder *dec;
    if (la_decoder_create(&dec, &cfg) != LA_OK) return fail("la_decoder_create");
    for (int t = 0; t < NT; t++)
        if (la_decoder_step(ctx, dec, &o_dec[t][0][0], &q[t][0][0], &k[t][0][0], &v[t][0][0],
                            &g[t][0], NULL, &beta[t][0]) != LA_OK)
            return fail("la_decoder_step");

    double diff = 0, size = 0;
    for (int t = 0; t < NT; t++)
        for (int h = 0; h < NHV; h++)
            for (int i = 0; i < NV; i++) {
                diff = fmax(diff, fabs((double)o[t][h][i] - o_dec[t][h][i]));
                size = fmax(size, fabs((double)o[t][h][i]));
            }
    printf("Gated DeltaNet, T=%d, HV=%d, K=V=%d: chunkwise vs token-by-token max |diff| = %.2e "
           "(max |o| = %.2f)\n",
           NT, NHV, NK, diff, size);

    /* A bad call: the error names the problem and nothing is written. */
    dims.K = 0;
    la_status st =
        la_gated_delta_rule_forward(ctx, &opts, &dims, &o[0][0][0], NULL, &q[0][0][0], &k[0][0][0],
                                    &v[0][0][0], &g[0][0], &beta[0][0], NULL);
    printf("with K = 0: %s: %s\n", la_status_string(st), la_last_error());

    la_decoder_destroy(dec);
    la_ctx_destroy(ctx);
    return diff <= 1e-5 * size ? 0 : 1;
}
