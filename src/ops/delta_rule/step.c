/* The per-token arithmetic of the delta rules, shared by the recurrent form
 * and the decoder (la__delta_rule_step) so that decoding equals the
 * recurrent forward bit for bit. */
#include "delta_rule.h"

#include <math.h>

float la__delta_l2norm(float *y, const float *x, int64_t n) {
    float ss = 0;
    for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];
    const float rstd = 1.0f / sqrtf(ss + LA__DELTA_L2_EPS);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * rstd;
    return rstd;
}

void la__delta_token(int64_t K, int64_t V, int l2norm, float scale, float *S, float *o,
                     const float *q, const float *k, const float *v, const float *g,
                     float beta, float *work) {
    float *qn = work, *kn = work + K, *r = work + 2 * K; /* [K], [K], [V] */
    if (l2norm) {
        la__delta_l2norm(qn, q, K);
        la__delta_l2norm(kn, k, K);
        q = qn;
        k = kn;
    }
    /* Two passes over S: decay and recall (r = k S after the decay), then
     * the write and the read-out (o = q S after the write). */
    const float a = g ? expf(*g) : 1.0f;
    for (int64_t j = 0; j < V; j++) r[j] = 0;
    for (int64_t i = 0; i < K; i++) {
        const float ki = k[i];
        float *Si = S + i * V;
        if (g)
            for (int64_t j = 0; j < V; j++) Si[j] *= a;
        for (int64_t j = 0; j < V; j++) r[j] += ki * Si[j];
    }
    for (int64_t j = 0; j < V; j++) r[j] = beta * (v[j] - r[j]);
    if (o)
        for (int64_t j = 0; j < V; j++) o[j] = 0;
    for (int64_t i = 0; i < K; i++) {
        const float ki = k[i], qi = scale * q[i];
        float *Si = S + i * V;
        for (int64_t j = 0; j < V; j++) Si[j] += ki * r[j];
        if (o)
            for (int64_t j = 0; j < V; j++) o[j] += qi * Si[j];
    }
}

void la__delta_rule_step(const la_decoder_config *cfg, float scale, float *S, float *o,
                         const float *q, const float *k, const float *v, const float *g,
                         float beta, float *work) {
    la__delta_token(cfg->K, cfg->V, cfg->use_qk_l2norm != 0, scale, S, o, q, k, v, g, beta,
                    work);
}
