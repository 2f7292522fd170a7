/* STUB — replaced by the delta-rule implementation. */
#include "../../core/internal.h"

void la__delta_rule_step(const la_decoder_config *cfg, float scale, float *S, float *o,
                         const float *q, const float *k, const float *v, const float *g,
                         float beta, float *work) {
    (void)scale; (void)S; (void)q; (void)k; (void)v; (void)g; (void)beta; (void)work;
    for (int64_t i = 0; i < cfg->V; i++) o[i] = 0;
}
