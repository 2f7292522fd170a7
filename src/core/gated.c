/* Shared by the gated families: default options and the decoding-step router. */
#include "internal.h"

void la__gated_step(const la_decoder_config *cfg, float scale, float *S, float *o,
                    const float *q, const float *k, const float *v, const float *g,
                    float g_gamma, float beta, float *work) {
    if (cfg->op == LA_OP_SIMPLE_GLA || cfg->op == LA_OP_GLA)
        la__gla_step(cfg, scale, S, o, q, k, v, g, g_gamma, work);
    else
        la__delta_rule_step(cfg, scale, S, o, q, k, v, g, beta, work);
}

la_gated_opts la_gated_opts_default(void) {
    la_gated_opts o = {.form = LA_FORM_CHUNK, .scale = 0, .chunk_size = 64, .use_qk_l2norm = 0};
    return o;
}
