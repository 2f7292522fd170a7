/* float64 reference of DeltaNet and Gated DeltaNet for one (sequence, value
 * head): the token-by-token recurrence of MATH.md section 4, written for
 * clarity (the test oracle).
 *   S_t = a_t (I - beta_t k_t^T k_t) S_{t-1} + beta_t k_t^T v_t,  a_t = exp(g_t)
 *   o_t = scale q_t S_t
 * g == NULL gives DeltaNet (a_t = 1). With l2norm, q and k are first replaced
 * by x / sqrt(sum x^2 + 1e-6) per token (as the library does).
 * Shapes: q, k [T,K]; v, o [T,V]; g, beta [T]; states [K,V]. */
#ifndef LINATTN_REF_DELTA_RULE_H
#define LINATTN_REF_DELTA_RULE_H

#include "linattn.h"

#include <stdint.h>

typedef struct ref_delta_in {
    int64_t T, K, V;
    double scale;
    int l2norm;
    const double *q, *k, *v;
    const double *g;      /* [T] or NULL (DeltaNet) */
    const double *beta;   /* [T] */
    const double *S0;     /* [K,V] or NULL (zeros) */
} ref_delta_in;

/* o [T,V] out; ST [K,V] out (optional). Returns 0, or -1 when out of memory. */
int ref_delta_rule_forward(const ref_delta_in *in, double *o, double *ST);

/* Reverse mode through the recurrence (and the L2 norm) for the loss
 * sum(o . d_o) + sum(S_T . dST). d_o [T,V]; dST [K,V] or NULL (zero).
 * Outputs: dq, dk [T,K], dv [T,V], dbeta [T], dg [T] (ignored when g is
 * NULL; may be NULL then), dS0 [K,V] (optional). Stores every state
 * ((T+1) K V doubles). Returns 0, or -1 when out of memory. */
int ref_delta_rule_backward(const ref_delta_in *in, const double *d_o, const double *dST,
                            double *dq, double *dk, double *dv, double *dbeta, double *dg,
                            double *dS0);

/* Every (sequence, value head) of float32 tensors laid out as for
 * la_delta_rule_* (g NULL) / la_gated_delta_rule_*: q, k [B,T,H,K], v, d_o
 * [B,T,HS,V], g, beta [B,T,HS], states [N,HS,K,V] (S0, dST NULL = zeros);
 * scale resolved. float64 outputs in the same layouts, any may be NULL; dq
 * and dk sum the value heads that share a q/k head. Return 0, or -1 when
 * out of memory. */
int ref_delta_rule_forward_all(const la_dims *d, double scale, int l2norm, const float *q,
                               const float *k, const float *v, const float *g,
                               const float *beta, const float *S0, double *o, double *ST);
int ref_delta_rule_backward_all(const la_dims *d, double scale, int l2norm, const float *q,
                                const float *k, const float *v, const float *g,
                                const float *beta, const float *S0, const float *d_o,
                                const float *dST, double *dq, double *dk, double *dv,
                                double *dg, double *dbeta, double *dS0);

#endif
