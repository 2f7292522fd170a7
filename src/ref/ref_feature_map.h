/* float64 reference of the random-feature maps (one sequence, one head), the
 * exact kernels they estimate, the closed-form MSE of MATH.md section 3, and
 * the computational core of the approximation lab (`linattn approx`), kept
 * here so the test suite can run it. Not part of the installed library. */
#ifndef LINATTN_REF_FEATURE_MAP_H
#define LINATTN_REF_FEATURE_MAP_H

#include "linattn.h"

#include <stdint.h>

/* phi [T, M] out (M = la_rf_num_features(o->kind, m)); x [T, d]; W [m, d].
 * stab: [T] for a query, [1] for a key; NULL allowed when !stab_given.
 * stab_given = 0: the stabiliser is computed (0 when o->stabilize is off or
 * the kind has none) and written to stab if non-NULL; stab_given = 1: the
 * values in stab are used as constants (for finite differences). */
void ref_rf_forward(const la_rf_opts *o, int64_t T, int64_t d, int64_t m, const double *x,
                    const double *W, double *phi, double *stab, int stab_given);

/* dx [T, d] out; d_phi [T, M]; stab as written by ref_rf_forward (NULL when
 * the kind/options have no stabiliser): treated as constant. */
void ref_rf_backward(const la_rf_opts *o, int64_t T, int64_t d, int64_t m, const double *x,
                     const double *W, const double *stab, const double *d_phi, double *dx);

/* Kernels the maps estimate, for x, y [d]. */
double ref_softmax_kernel(const double *x, const double *y, int64_t d);  /* exp(x.y/sqrt d) */
double ref_gaussian_kernel(const double *x, const double *y, int64_t d); /* exp(-|x-y|^2/2) */
/* E_w[relu(w.x) relu(w.y)], w ~ N(0, I): the order-1 arc-cosine kernel
 * |x||y| (sin t + (pi - t) cos t) / (2 pi). */
double ref_arccos_kernel(const double *x, const double *y, int64_t d);
/* The kernel that kind estimates with i.i.d. Gaussian rows (unstabilised,
 * eps = 0). */
double ref_rf_target_kernel(la_random_feature kind, const double *x, const double *y, int64_t d);
/* Closed-form MSE of phi(x).phi(y) with m i.i.d. Gaussian rows (MATH.md 3,
 * Performer Lemma 2, and the hyperbolic and Gaussian-RFF analogues);
 * NAN for the ReLU map (no closed form here). */
double ref_rf_mse_theory(la_random_feature kind, const double *x, const double *y, int64_t d,
                         int64_t m);

/* Normalised kernel attention in double, one sequence and head:
 * o [T, V] = sum_j (pq_t . pk_j) v_j / (sum_j pq_t . pk_j + eps), j <= t when
 * causal. pq, pk [T, M]. */
void ref_kernel_attn(int64_t T, int64_t M, int64_t V, const double *pq, const double *pk,
                     const double *v, int causal, double eps, double *o);
/* Its backward: dpq, dpk [T, M], dv [T, V] out (written with =); d_o [T, V]. */
void ref_kernel_attn_backward(int64_t T, int64_t M, int64_t V, const double *pq, const double *pk,
                              const double *v, int causal, double eps, const double *d_o,
                              double *dpq, double *dpk, double *dv);
/* Causal Performer attention with the running key maximum (MATH.md §3),
 * one sequence and head, the quadratic formula in double. With a_j the
 * largest exponent of key j rounded to float and mu_j = max(mu0, a_1..a_j)
 * (mu = 0 throughout without a stabiliser; mu0 = -INFINITY: no key yet):
 *   k~_j(t) = s exp(e_j - mu_t) + rf_eps exp(mu_j - mu_t)     (j <= t)
 *   o_t = (q^_t S0 e^{mu0-mu_t} + sum_j (q^_t.k~_j(t)) v_j)
 *         / (q^_t.z0 e^{mu0-mu_t} + sum_j q^_t.k~_j(t) + eps)
 * q^_t the query features (per-token stabiliser). q, k [T,d], v [T,V],
 * W [m,d]; S0 [M,V], z0 [M] optional (NULL = zeros). stab_q [T] and mu [T]:
 * written (given = 0) or read as constants (given = 1, for finite
 * differences with the stabilisers held). o [T,V] out; S_T [M,V], z_T [M],
 * mu_T out, optional (the state relative to mu_T). cond out, optional: the
 * conditioning of the normalisation, max over t of the sum of |terms| of
 * the denominator over its |value| (1 for non-negative features). */
void ref_performer_causal(const la_rf_opts *rf, double eps, int64_t T, int64_t d, int64_t V,
                          int64_t m, const double *q, const double *k, const double *v,
                          const double *W, const double *S0, const double *z0, double mu0,
                          double *stab_q, double *mu, int given, double *o, double *S_T,
                          double *z_T, double *mu_T, double *cond);

/* Its backward, written from the formula above with the stabilisers held
 * (stab_q [T] and mu [T] as ref_performer_causal wrote them): gradients of
 * L = sum o.d_o + sum S_T.dS_T + sum z_T.dz_T (dS_T, dz_T optional) with
 * respect to q, k [T,d], v [T,V] and, optional, S0 [M,V], z0 [M]. */
void ref_performer_causal_backward(const la_rf_opts *rf, double eps, int64_t T, int64_t d,
                                   int64_t V, int64_t m, const double *q, const double *k,
                                   const double *v, const double *W, const double *S0,
                                   const double *z0, double mu0, const double *stab_q,
                                   const double *mu, const double *d_o, const double *dS_T,
                                   const double *dz_T, double *dq, double *dk, double *dv,
                                   double *dS0, double *dz0);

/* Exact softmax attention in double, scale d^-1/2: o [T, V]. */
void ref_softmax_attn_exact(int64_t T, int64_t d, int64_t V, const double *q, const double *k,
                            const double *v, int causal, double *o);

/* ---- the approximation lab (computational core) ---------------------- */

typedef struct ref_mse_stats {
    double mse;    /* mean over pairs and draws of (phi(x).phi(y) - kernel)^2 */
    double se;     /* its standard error (over the independent draws) */
    double theory; /* mean over pairs of the closed-form i.i.d. MSE */
    double bias;   /* mean over pairs and draws of (phi(x).phi(y) - kernel) */
    double bias_se;
} ref_mse_stats;

/* Kernel-estimation error: X, Y [n_pairs, d] fixed pairs, split into
 * n_groups consecutive groups of equal size (e.g. one per input norm) with
 * one result each in out [n_groups]; n_draws independent projections W
 * (seeds seed, seed+1, ...), each used for every pair; features from
 * la_rf_forward (float32, unstabilised, eps 0: the plain estimator), the
 * pairs laid out as heads so the context's threads share the work.
 * Returns LA_OK or the failing call's status. */
la_status ref_rf_kernel_mse(la_ctx *ctx, la_random_feature kind, la_projection_kind proj,
                            la_projection_scaling scaling, int64_t d, int64_t m, const double *X,
                            const double *Y, int64_t n_pairs, int64_t n_groups, int n_draws,
                            uint64_t seed, ref_mse_stats *out);

/* Random pairs with |x| = |y| = norm and directions uniform (from rng). */
void ref_random_pairs(double *X, double *Y, int64_t n_pairs, int64_t d, double norm, la_rng *rng);

#endif
