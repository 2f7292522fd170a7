/* One token of causal kernel linear attention for one (sequence, head): the
 * recurrent form runs exactly this per token, and so does the decoder, so
 * decoding equals the recurrent form bit for bit. */
#include "linear_attn.h"

void la__lin_token(la_feature_map fm, int normalize, float eps, float c, int64_t K,
                   int64_t V, float *S, float *z, float *o, const float *q, const float *k,
                   const float *v, float *qf, float *kf, float *den) {
    la__phi_row(fm, 1.0f, kf, k, K);
    la__phi_row(fm, c, qf, q, K);
    /* S_t = S_{t-1} + kfᵀ v, row by row (the chunk forms update S in this
     * same order, token after token). */
    for (int64_t i = 0; i < K; i++) la__axpy(S + i * V, kf[i], v, V);
    /* o = qf S_t */
    for (int64_t x = 0; x < V; x++) o[x] = 0;
    for (int64_t i = 0; i < K; i++) la__axpy(o, qf[i], S + i * V, V);
    if (!normalize) {
        *den = 1.0f;
        return;
    }
    for (int64_t i = 0; i < K; i++) z[i] += kf[i];
    /* No clamping: the op computes exactly o = qf S / (qf·z + eps). With
     * non-negative features (elu1, relu) qf·z >= 0 and den >= eps. */
    float d = la__dot(qf, z, K) + eps;
    *den = d;
    for (int64_t x = 0; x < V; x++) o[x] = o[x] / d;
}

void la__linear_attn_step(const la_decoder_config *cfg, float scale, float *S, float *z,
                          float *o, const float *q, const float *k, const float *v,
                          float *work) {
    const int64_t K = cfg->K, V = cfg->V;
    const int normalize = cfg->normalize != 0;
    float den;
    la__lin_token(cfg->feature_map, normalize, cfg->eps, normalize ? 1.0f : scale, K, V, S,
                  normalize ? z : NULL, o, q, k, v, work, work + K, &den);
}
