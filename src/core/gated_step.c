/* Routes a gated-family decoding step to its op family. */
#include "internal.h"

void la__gated_step(const la_decoder_config *cfg, float scale, float *S, float *o,
                    const float *q, const float *k, const float *v, const float *g,
                    float g_gamma, float beta, float *work) {
    if (cfg->op == LA_OP_SIMPLE_GLA || cfg->op == LA_OP_GLA)
        la__gla_step(cfg, scale, S, o, q, k, v, g, g_gamma, work);
    else
        la__delta_rule_step(cfg, scale, S, o, q, k, v, g, beta, work);
}
