/* STUB — replaced by the GLA-family implementation. */
#include "../../core/internal.h"

void la__gla_step(const la_decoder_config *cfg, float scale, float *S, float *o,
                  const float *q, const float *k, const float *v, const float *g, float g_gamma,
                  float *work) {
    (void)scale; (void)S; (void)q; (void)k; (void)v; (void)g; (void)g_gamma; (void)work;
    for (int64_t i = 0; i < cfg->V; i++) o[i] = 0;
}
