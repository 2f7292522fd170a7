/* float64 reference of Kimi Delta Attention (KDA) for one (sequence, value
 * head): the token-by-token recurrence of MATH.md section "KDA", written for
 * clarity (the test oracle).
 *   S_t = (I - beta_t k_t k_t^T) Diag(exp g_t) S_{t-1} + beta_t k_t v_t^T
 *   o_t = scale S_t^T q_t
 * with the per-key log-gate g_t [K] applied to the rows of S before the
 * delta correction (fla's kda order). With l2norm, q and k are first
 * replaced by x / sqrt(sum x^2 + 1e-6) per token (as the library does).
 * Shapes: q, k, g [T,K]; v, o [T,V]; beta [T]; states [K,V]. */
#ifndef LINATTN_REF_KDA_H
#define LINATTN_REF_KDA_H

#include "linattn.h"

#include <stdint.h>

typedef struct ref_kda_in {
    int64_t T, K, V;
    double scale;
    int l2norm;
    const double *q, *k, *v;
    const double *g;    /* [T,K] per-key log-gates */
    const double *beta; /* [T] */
    const double *S0;   /* [K,V] or NULL (zeros) */
} ref_kda_in;

/* o [T,V] out; ST [K,V] out (optional). Returns 0, or -1 when out of memory. */
int ref_kda_forward(const ref_kda_in *in, double *o, double *ST);

/* Reverse mode through the recurrence (and the L2 norm) for the loss
 * sum(o . d_o) + sum(S_T . dST). d_o [T,V]; dST [K,V] or NULL (zero).
 * Outputs: dq, dk, dg [T,K], dv [T,V], dbeta [T], dS0 [K,V] (optional).
 * Stores every state ((T+1) K V doubles). Returns 0, or -1 when out of
 * memory. */
int ref_kda_backward(const ref_kda_in *in, const double *d_o, const double *dST, double *dq,
                     double *dk, double *dv, double *dbeta, double *dg, double *dS0);

/* Every (sequence, value head) of float32 tensors laid out as for
 * la_kda_*: q, k [B,T,H,K], v, d_o [B,T,HV,V], g [B,T,HV,K], beta
 * [B,T,HV], states [N,HV,K,V] (S0, dST NULL = zeros); scale resolved.
 * float64 outputs in the same layouts, any may be NULL; dq and dk sum the
 * value heads that share a q/k head. Return 0, or -1 when out of memory. */
int ref_kda_forward_all(const la_dims *d, double scale, int l2norm, const float *q, const float *k,
                        const float *v, const float *g, const float *beta, const float *S0,
                        double *o, double *ST);
int ref_kda_backward_all(const la_dims *d, double scale, int l2norm, const float *q, const float *k,
                         const float *v, const float *g, const float *beta, const float *S0,
                         const float *d_o, const float *dST, double *dq, double *dk, double *dv,
                         double *dg, double *dbeta, double *dS0);

#endif
