/* The decoding step of KDA: one token of one (sequence, value head), the
 * recurrent form's arithmetic (la__kda_token) after the same L2 norm, so
 * decoding equals the recurrent forward bit for bit. */
#include "kda.h"

void la__kda_step(const la_decoder_config *cfg, float scale, float *S, float *o, const float *q,
                  const float *k, const float *v, const float *g, float beta, float *work) {
    const int64_t K = cfg->K, V = cfg->V;
    float *qn = work, *kn = work + K;
    if (cfg->use_qk_l2norm) {
        la__delta_l2norm(qn, q, K);
        la__delta_l2norm(kn, k, K);
        q = qn;
        k = kn;
    }
    la__kda_token(K, V, scale, S, o, q, k, v, g, beta, work + 2 * K);
}
