/* Dense layers of the model: matrix products, RMSNorm, SwiGLU, short causal
 * convolution, cross-entropy. Each output element is computed in a fixed
 * order that does not depend on the number of rows, so one row (decoding)
 * rounds exactly as the same row inside a batch (training). */
#ifndef LINATTN_MODEL_DENSE_H
#define LINATTN_MODEL_DENSE_H

#include "pool.h"

#include <math.h>
#include <stdint.h>

/* y [M,N] = x [M,Kin] w [Kin,N] */
void lm_matmul(lm_pool *p, float *y, const float *x, const float *w, int64_t M, int64_t Kin,
               int64_t N);
/* dx [M,Kin] (+)= dy [M,N] w^T; wt is scratch [N,Kin]. acc: 1 adds into dx. */
void lm_matmul_dx(lm_pool *p, float *dx, const float *dy, const float *w, float *wt, int64_t M,
                  int64_t Kin, int64_t N, int acc);
/* dw [Kin,N] (+)= x^T dy; xt is scratch [Kin,M]. acc: 1 adds into dw. */
void lm_matmul_dw(lm_pool *p, float *dw, const float *x, const float *dy, float *xt, int64_t M,
                  int64_t Kin, int64_t N, int acc);

/* y [M,D] = x * rstd * w; rstd [M] saved for the backward. */
void lm_rmsnorm(float *y, float *rstd, const float *x, const float *w, int64_t M, int64_t D,
                float eps);
/* dx [M,D] (+)= ..., dw [D] += ... (acc_dx: 1 adds into dx). */
void lm_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                         const float *rstd, int64_t M, int64_t D, int acc_dx);

/* a [M,F] = silu(h1) * h3 */
void lm_swiglu(float *a, const float *h1, const float *h3, int64_t n);
void lm_swiglu_backward(float *dh1, float *dh3, const float *da, const float *h1, const float *h3,
                        int64_t n);

/* Depthwise causal conv then SiLU over [B,T,C]: pre[b,t,c] =
 * sum_j w[j,c] x[b,t-(ks-1)+j,c] (zero before t = 0), y = silu(pre).
 * w [ks,C]. pre optional (saved for the backward). */
void lm_conv(float *y, float *pre, const float *x, const float *w, int64_t B, int64_t T, int64_t C,
             int64_t ks);
/* dx [B,T,C] = ..., dw [ks,C] += ... */
void lm_conv_backward(float *dx, float *dw, const float *dy, const float *x, const float *pre,
                      const float *w, int64_t B, int64_t T, int64_t C, int64_t ks);

/* Cross-entropy over rows of logits [M,Vt]; targets [M] (-1 ignored).
 * Returns the summed loss (double) and counts; if dlogits is non-NULL
 * writes (softmax - onehot) * inv_count there (0 on ignored rows). */
double lm_cross_entropy(float *dlogits, const float *logits, const int32_t *targets, int64_t M,
                        int64_t Vt, double inv_count, int64_t *n_counted, int64_t *n_correct);

static inline float lm_sigmoidf(float x) {
    return x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

#endif
