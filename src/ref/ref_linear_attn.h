/* float64 reference of kernel (feature-map) linear attention (MATH.md §2):
 * the quadratic formula, written for clarity, for one sequence and one head,
 * forward and backward; and drivers that run it over every (sequence, head)
 * of float32 tensors laid out as the library's. The test oracle. */
#ifndef LINATTN_REF_LINEAR_ATTN_H
#define LINATTN_REF_LINEAR_ATTN_H

#include "linattn.h"

#include <stdint.h>

typedef struct ref_linear_attn_cfg {
    la_feature_map feature_map;
    int causal;
    int normalize;
    double eps;   /* normalised only */
    double scale; /* unnormalised only: multiplies phi(q) */
    /* 1: the backward returns the magnitude of every gradient instead, the
     * same sums taken over absolute values of every term (with |phi|,
     * |phi'| and the inputs passed as absolute values). Any float32
     * evaluation of the sums errs by about 2^-24 * sqrt(terms) times this
     * magnitude, whatever cancellation the true gradient has. */
    int magnitude;
} ref_linear_attn_cfg;

/* The configuration the library uses for opts (scale 0 -> the float32
 * value of K^-1/2 the library resolves to, eps as a double). */
ref_linear_attn_cfg ref_linear_attn_cfg_from(const la_linear_attn_opts *opts, int64_t K);

double ref_phi(la_feature_map fm, double x);
double ref_dphi(la_feature_map fm, double x);

/* One sequence, one head. q,k [T,K], v [T,V]; S0 [K,V], z0 [K] optional
 * (NULL = zeros; z0 only when normalised).
 *   o_t = (q̂_t S0 + Σ_{j∈M(t)} (q̂_t·k̃_j) v_j) / (q̂_t·z0 + Σ_{j∈M(t)} q̂_t·k̃_j + eps)
 * with q̂ = φ(q) (times scale when unnormalised, and then no division),
 * k̃ = φ(k), M(t) = {j <= t} when causal, every j otherwise.
 * o [T,V] out; S_T [K,V], z_T [K] out, optional: S0 + Σ_j k̃_jᵀ v_j, z0 + Σ_j k̃_j. */
void ref_linear_attn_forward(const ref_linear_attn_cfg *c, int64_t T, int64_t K, int64_t V,
                             double *o, double *S_T, double *z_T, const double *q,
                             const double *k, const double *v, const double *S0,
                             const double *z0);

/* Gradients of L = Σ o·d_o + Σ S_T·dS_T + Σ z_T·dz_T (dS_T, dz_T optional)
 * with respect to q, k, v [T,K/V] and S0, z0 (dS0, dz0 optional outputs). */
void ref_linear_attn_backward(const ref_linear_attn_cfg *c, int64_t T, int64_t K, int64_t V,
                              double *dq, double *dk, double *dv, double *dS0, double *dz0,
                              const double *d_o, const double *dS_T, const double *dz_T,
                              const double *q, const double *k, const double *v,
                              const double *S0, const double *z0);

/* Every (sequence, head) of float32 tensors shaped as for
 * la_linear_attn_forward / _backward; float64 outputs in the same layouts
 * (optional ones may be NULL). magnitude: the gradient magnitudes (see the
 * cfg), from absolute values of the inputs. Return 0, or -1 if out of
 * memory. The single-head functions abort on out of memory (test oracle). */
int ref_linear_attn_forward_all(const la_linear_attn_opts *opts, const la_dims *dims, double *o,
                                double *final_state, double *final_norm, const float *q,
                                const float *k, const float *v, const float *initial_state,
                                const float *initial_norm);
int ref_linear_attn_backward_all(const la_linear_attn_opts *opts, const la_dims *dims,
                                 int magnitude, double *dq, double *dk, double *dv, double *d_initial_state,
                                 double *d_initial_norm, const float *d_o,
                                 const float *d_final_state, const float *d_final_norm,
                                 const float *q, const float *k, const float *v,
                                 const float *initial_state, const float *initial_norm);

#endif
