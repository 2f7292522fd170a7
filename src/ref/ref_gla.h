/* float64 reference of simple GLA (RetNet decay) and GLA: the token-by-token
 * recurrence for one sequence and one head, forward and reverse-mode
 * backward, written to be obviously correct (the test oracle).
 *
 *   S_t = Diag(a_t) S_{t-1} + k_t^T v_t,   o_t = scale q_t S_t,
 *   a_t = exp(g_t + gamma)      simple GLA: g [T] (NULL = 0), gamma scalar
 *   a_t = exp(g_t)              GLA: g [T, K]
 *
 * q, k [T, K]; v, o, d_o [T, V]; states [K, V]. s0 / d_sT NULL = zeros. */
#ifndef LINATTN_REF_GLA_H
#define LINATTN_REF_GLA_H

#include "linattn.h"

#include <stdint.h>

/* per_key = 0: simple GLA (g has T entries or is NULL); 1: GLA (g has T*K). */
void ref_gla_forward(int per_key, int64_t T, int64_t K, int64_t V, double scale,
                     const double *q, const double *k, const double *v, const double *g,
                     double gamma, const double *s0, double *o, double *s_final);

/* Gradients of sum(o * d_o) + sum(S_T * d_sT). dg (same shape as g) and
 * dgamma (one double: sum over tokens of the scalar gate gradient) and ds0
 * may be NULL. Returns 0, or -1 when out of memory (it stores every state). */
int ref_gla_backward(int per_key, int64_t T, int64_t K, int64_t V, double scale,
                     const double *q, const double *k, const double *v, const double *g,
                     double gamma, const double *s0, const double *d_o, const double *d_sT,
                     double *dq, double *dk, double *dv, double *dg, double *dgamma,
                     double *ds0);

/* Every (sequence, head) of float32 tensors laid out as for
 * la_simple_gla_* (per_key 0: g [B,T,H] or NULL, g_gamma [H] or NULL) or
 * la_gla_* (per_key 1: g [B,T,H,K]); s0 / d_sT [N,H,K,V] or NULL (zeros);
 * scale already resolved. float64 outputs in the same layouts; any output
 * may be NULL. dg_gamma [H] sums over every token and sequence; dg_abs [H]
 * (scalar gates) the sum of |dg_t| over the same terms, the scale of its
 * rounding. Return 0, or -1 when out of memory. */
int ref_gla_forward_all(int per_key, const la_dims *d, double scale, const float *q,
                        const float *k, const float *v, const float *g, const float *g_gamma,
                        const float *s0, double *o, double *sT);
int ref_gla_backward_all(int per_key, const la_dims *d, double scale, const float *q,
                         const float *k, const float *v, const float *g, const float *g_gamma,
                         const float *s0, const float *d_o, const float *d_sT, double *dq,
                         double *dk, double *dv, double *dg, double *dg_gamma, double *ds0,
                         double *dg_abs);

#endif
