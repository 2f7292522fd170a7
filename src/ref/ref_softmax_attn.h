/* float64 reference of softmax attention (the test oracle): textbook loops
 * for one sequence and one head, plus a driver over a whole [B,T,H,D] batch.
 *
 * Query t sees keys j < kv_len, and j <= t when causal:
 *   s_tj = scale q_t.k_j,  p_tj = exp(s_tj - lse_t),  lse_t = log sum_j exp(s_tj),
 *   o_t = sum_j p_tj v_j.
 * Backward of L with dL/do = d_o:
 *   dv_j = sum_t p_tj d_o_t,  dp_tj = d_o_t.v_j,  ds_tj = p_tj (dp_tj - sum_l p_tl dp_tl),
 *   dq_t = scale sum_j ds_tj k_j,  dk_j = scale sum_t ds_tj q_t. */
#ifndef LINATTN_REF_SOFTMAX_ATTN_H
#define LINATTN_REF_SOFTMAX_ATTN_H

#include "linattn.h"

#include <stdint.h>

/* q,k [T,K], v [T,V]; o [T,V] out, lse [T] out (may be NULL). Returns 0 if
 * out of memory (a T x T matrix). */
int ref_softmax_attn_forward(double *o, double *lse, const double *q, const double *k,
                             const double *v, int64_t T, int64_t K, int64_t V, double scale,
                             int causal, int64_t kv_len);

/* dq,dk [T,K], dv [T,V] out (padding keys get 0); d_o [T,V] in. Returns 0
 * if out of memory. */
int ref_softmax_attn_backward(double *dq, double *dk, double *dv, const double *d_o,
                               const double *q, const double *k, const double *v, int64_t T,
                               int64_t K, int64_t V, double scale, int causal, int64_t kv_len);

/* Whole batch in the library's layout (q,k [B,T,H,K], v,d_o [B,T,H,V], float)
 * gathered per (sequence, head) with ref_gather: o [B,T,H,V], lse [B,T,H]
 * (each may be NULL); with d_o also dq, dk [B,T,H,K], dv [B,T,H,V]. scale is the
 * resolved one (not 0). kv_lens [B] or NULL. Returns 0 if out of memory. */
int ref_softmax_attn_batch(const la_dims *d, int causal, double scale, const int64_t *kv_lens,
                           const float *q, const float *k, const float *v, const float *d_o,
                           double *o, double *lse, double *dq, double *dk, double *dv);

#endif
