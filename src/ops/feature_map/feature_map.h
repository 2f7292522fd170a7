/* The feature-map family's internal header: the random-feature maps
 * (random_features.c, projection.c) one token at a time, then causal
 * Performer attention with a state (the RNN view), MATH.md §3:
 * api.c (entry points), chunk.c (chunk form and recurrent forward), step.c
 * (one token, shared with the decoder), entry.c (registry entries).
 *
 * Causal Performer:
 *
 * One work unit is one (sequence n, head h). Per key token j: a_j, its
 * largest exponent, rounded to float; the running maximum
 * mu_j = max(mu_{j-1}, a_j) (mu_0 from the initial state, -inf when none);
 * without a stabiliser mu = 0 throughout. The state S [M,V], z [M] is kept
 * relative to the current mu and multiplied by exp(mu_old - mu_new) when
 * mu grows. Key j enters as s exp(e_j - mu_j) + eps, so query t sees it as
 *   k~_j(t) = s exp(e_j - mu_t) + eps exp(mu_j - mu_t),
 * and o_t = q^_t S_t / (q^_t . z_t + eps_attn), q^_t the query's features
 * (per-token stabiliser).
 *
 * Chunk form: in a chunk with running max mu_C at its end, the keys are
 * written relative to mu_C (k~_j(C) above with t -> C), the carried state is
 * rescaled by exp(mu_prev - mu_C) before the chunk, and row i's output is
 * num_i / (den_i + eps_attn exp(mu_i - mu_C)): the chunk-relative numerator
 * and denominator are exp(mu_i - mu_C) times row i's own, so this is the
 * same o_i, exactly, and nothing overflows however far mu jumps (every
 * factor is <= 1); a chunk is cut short where mu jumps by more than
 * LA__PF_CHUNK_GROWTH inside it, so nothing underflows either. The products are the normalised
 * linear-attention chunk products (linear_attn.h, chunk.c), on the SIMD
 * kernels.
 *
 * Backward (stabilisers constant): the linear-attention chunk backward with
 * the per-row eps, dSx multiplied by the chunk's rescale factor on the way
 * back, dq through the query features (own stabiliser), dk through
 * s exp(e_j - mu_C) (the eps term has no x-dependence). */
#ifndef LINATTN_OPS_FEATURE_MAP_H
#define LINATTN_OPS_FEATURE_MAP_H

#include "../../core/internal.h"
#include "../../kernels/kernels.h"

/* ---- the random-feature maps (shared with Performer attention) --------- */

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

/* ---- causal Performer --------------------------------------------------- */

/* A chunk of the chunk form ends early where the running key maximum has
 * grown by more than this (natural log) since the chunk's first token:
 * rows are computed relative to the max at the chunk's end, a factor
 * exp(mu_i - mu_C) >= exp(-32) ~ 1e-14 below their own, so nothing a row
 * needs underflows in float32 (a jump of hundreds inside a fixed chunk
 * would flush whole rows to 0/0). Data-dependent, deterministic. */
#define LA__PF_CHUNK_GROWTH 32.0

typedef struct la__pf_job {
    la_ctx *ctx;
    const la__kernels *kr;
    const la_dims *dims;
    la__rf_map map;
    int64_t H, d, V, M, Vx;
    int64_t chunk; /* resolved chunk size */
    int64_t Tmax;  /* longest sequence */
    float eps;     /* attention eps */
    const float *q, *k, *v, *S0, *z0, *mu0;
    float *o, *fS, *fz, *fmu;
    /* backward */
    const float *d_o, *dST, *dzT;
    float *dq, *dk, *dv, *dS0, *dz0;
} la__pf_job;

/* Bytes of per-thread scratch of the chunk form (forward or backward), or
 * of the recurrent form; SIZE_MAX if it overflows. */
size_t la__pf_chunk_scratch(const la__pf_job *j, int backward);
size_t la__pf_recurrent_scratch(const la__pf_job *j);

/* Task bodies for la__parallel_for (arg = const la__pf_job *). */
void la__pf_chunk_fwd_task(void *arg, int64_t task, int tid);
void la__pf_chunk_bwd_task(void *arg, int64_t task, int tid);
void la__pf_recurrent_fwd_task(void *arg, int64_t task, int tid);

/* One token of one (sequence, head): S [M,V], z [M], *mu updated; o [V];
 * q, k [d], v [V]. The recurrent form and the decoder run exactly this.
 * fw: LA__PF_TOKEN_FLOATS(M) floats, dw: LA__RF_ROW_DOUBLES(d, m) doubles. */
#define LA__PF_TOKEN_FLOATS(M) (4 * (size_t)(M))
void la__performer_token(const la__rf_map *map, float eps, int64_t V, float *S, float *z, float *mu,
                         float *o, const float *q, const float *k, const float *v, float *fw,
                         double *dw);

#endif
