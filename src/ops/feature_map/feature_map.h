/* Causal Performer attention with a state (the RNN view), MATH.md §3.
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
#ifndef LINATTN_OPS_PERFORMER_H
#define LINATTN_OPS_PERFORMER_H

#include "../../kernels/kernels.h"
#include "rf_internal.h"

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
