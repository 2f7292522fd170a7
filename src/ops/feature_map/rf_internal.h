/* Shared between the random-feature maps and Performer attention. */
#ifndef LINATTN_RF_INTERNAL_H
#define LINATTN_RF_INTERNAL_H

#include "../../core/internal.h"

/* Reserves the per-thread scratch la_rf_backward needs for K = d and m
 * rows, so that a caller which reserves it first knows the backward cannot
 * fail for lack of memory. */
LA_HIDDEN la_status la__rf_backward_reserve(la_ctx *ctx, const char *op, int64_t d, int64_t m);

/* ---- one token at a time (the causal Performer and its decoding step) -- */

/* A resolved feature map: what la_rf_forward computes per token. */
typedef struct la__rf_map {
    la_random_feature kind;
    int exp_kind;   /* FAVOR positive / hyperbolic, trig softmax */
    int stabilized; /* exp_kind && opts.stabilize */
    int64_t d, m, M;
    double c, s, eps; /* x' = c x, scale s, eps (0 where the kind adds none) */
    const float *W;   /* [m, d] */
} la__rf_map;

/* Validates opts, dims (V and HV ignored), x [B,T,H,d] and W [m,d] exactly
 * as la_rf_forward does (finite inputs, the float32 overflow bound when not
 * stabilised), errors naming op, and fills map. */
LA_HIDDEN la_status la__rf_map_check(const char *op, const la_rf_opts *opts, const la_dims *dims,
                                     const float *x, const float *W, int64_t m, la__rf_map *map);

/* Doubles of scratch the row functions below need: xs [d], u [m], acc [d]. */
#define LA__RF_ROW_DOUBLES(d, m) (2 * (size_t)(d) + (size_t)(m))

/* Projects one token x [d]: xs = c x, u_i = w_i.xs; returns n = |xs|^2/2
 * and sets *a to the token's largest exponent (0 for non-exp kinds). */
LA_HIDDEN double la__rf_row_project(const la__rf_map *map, const float *x, double *xs, double *u,
                                    double *a);

/* phi [M] of one projected token with stabiliser stab (ignored by non-exp
 * kinds) and eps_factor times the map's eps added, each feature computed in
 * double and rounded once: e.g. positive s exp(u_i - n - stab) + eps
 * eps_factor. la_rf_forward is this with eps_factor 1. */
LA_HIDDEN void la__rf_row_features(const la__rf_map *map, float *phi, const double *u, double n,
                                   double stab, double eps_factor);

/* dx [d] = d_phi [M] . d phi / d x for one token x, stab held constant
 * (la_rf_backward per token). scratch: LA__RF_ROW_DOUBLES(d, m) doubles. */
LA_HIDDEN void la__rf_row_backward(const la__rf_map *map, float *dx, const float *d_phi,
                                   const float *x, double stab, double *scratch);

#endif
