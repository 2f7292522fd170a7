/* Decoding step of simple GLA and GLA: one token, one (sequence, head). It is
 * the recurrent form's own per-token update (gla_token), so la_decoder_step
 * equals the recurrent forward bit for bit. */
#include "gla_internal.h"

void la__gla_step(const la_decoder_config *cfg, float scale, float *S, float *o,
                  const float *q, const float *k, const float *v, const float *g, float g_gamma,
                  float *work) {
    const int per_key = cfg->op == LA_OP_GLA;
    gla_token(per_key, cfg->K, cfg->V, scale, S, o, q, k, v, g, per_key ? 0.0f : g_gamma, work);
}
