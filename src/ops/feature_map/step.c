/* One token of the causal Performer for one (sequence, head): the
 * recurrent form runs exactly this per token, and so does the decoder, so
 * decoding equals the recurrent form bit for bit. The rule (feature_map.h):
 * grow the running key max, rescale the state if it grew, add the key's
 * features relative to the new max, read out with the query's features
 * through the linear-attention token step (identity features, normalised). */
#include "feature_map.h"

#include "../linear_attn/linear_attn.h"

#include <math.h>

void la__performer_token(const la__rf_map *mp, float eps, int64_t V, float *S, float *z, float *mu,
                         float *o, const float *q, const float *k, const float *v, float *fw,
                         double *dw) {
    const int64_t M = mp->M;
    double *xs = dw, *u = dw + mp->d;
    float *qf = fw, *kf = fw + M;
    double a;
    double n = la__rf_row_project(mp, k, xs, u, &a);
    double stab = 0;
    if (mp->stabilized) {
        const float old = *mu;
        if ((float)a > old) {
            const float r = (float)exp((double)old - (double)(float)a); /* 0 from -inf */
            for (int64_t i = 0; i < M * V; i++) S[i] *= r;
            for (int64_t i = 0; i < M; i++) z[i] *= r;
            *mu = (float)a;
        }
        stab = (double)*mu;
    }
    la__rf_row_features(mp, kf, u, n, stab, 1.0);
    n = la__rf_row_project(mp, q, xs, u, &a);
    la__rf_row_features(mp, qf, u, n, mp->stabilized ? a : 0.0, 1.0);
    float den;
    la__lin_token(LA_FEATURE_IDENTITY, 1, eps, 1.0f, M, V, S, z, o, qf, kf, v, fw + 2 * M,
                  fw + 3 * M, &den);
}
