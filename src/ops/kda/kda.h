/* Internal to Kimi Delta Attention (KDA): the gated delta rule with a
 * per-key (per-channel) log-gate. One (sequence, value head), fla's kda
 * order of operations (decay first, then the delta correction):
 *     S  <- Diag(a) S,  a = exp(g) [K]        (row i of S [K,V] decays by a_i)
 *     r   = beta (v - S^T k)                  (new value minus decayed recall)
 *     S  <- S + k r^T
 *     o   = scale S^T q
 * i.e. S_t = (I - beta k k^T) Diag(exp g_t) S_{t-1} + beta k v^T.
 *
 * Files: api.c (public entry points, validation), driver.c (the tasks:
 * forward per (sequence, value head), backward per (sequence, q/k head)
 * with state checkpoints), recurrent.c (one token forward and backward),
 * chunk.c (the chunkwise WY form, forward and backward), pairs.c (the
 * per-key-gated products inside a chunk), step.c (decoding). */
#ifndef LINATTN_KDA_H
#define LINATTN_KDA_H

#include "../../core/internal.h"
#include "../../kernels/isa_builds.h"
#include "../../kernels/kernels.h"
#include "../delta_rule/delta_rule.h" /* la__delta_l2norm: the same L2 norm as the delta rules */

/* Everything an op call needs, validated and resolved by api.c.
 * HV value heads, H q/k heads, HV % H == 0; g [B,T,HV,K], beta [B,T,HV]. */
typedef struct la__kda_args {
    la_ctx *ctx;
    const la__kernels *kr; /* micro-kernels of the chunk form, fetched once per call */
    la_dims dims;
    int64_t N, H, HV, K, V;
    la_form form;
    int64_t longest; /* the longest sequence */
    int64_t chunk;   /* chunk length used (opts capped at the longest sequence, >= 1) */
    float scale;
    int l2norm;
    /* forward */
    float *o, *final_state;
    const float *q, *k, *v, *g, *beta, *initial_state;
    /* backward */
    float *dq, *dk, *dv, *dg, *dbeta, *d_initial_state;
    const float *d_o, *d_final_state;
    /* la_saved (chunk form, cpu-kdasaved19; layout la__kda_saved_layout):
     * the forward fills save (NULL: not saving), the backward reads saved
     * (NULL: it recomputes); sv_cbase [N+1] the chunks before sequence n */
    float *save;
    const float *saved;
    const int64_t *sv_cbase;
} la__kda_args;

/* la_saved of the chunk form (cpu-kdasaved19): per (sequence n, value head
 * hv, chunk c) one slot of la__kda_saved_slot_floats floats at
 * ((cbase[n] HV + hv nc_n + c) slot floats) after cbase [N+1] int64 (nc_n
 * the chunks of sequence n): the chunk's start state S_0 [K,V] (rounded up
 * to 16 floats), then the products la__kda_chunk_step keeps (M, U, W, R and
 * P, kda.h below). Everything the backward's checkpoint sweep recomputes,
 * so with it the backward runs no forward at all, and P, which its chunk
 * backward would recompute. driver.c. */
LA_HIDDEN size_t la__kda_saved_slot_floats(const la__kda_args *a);
/* The layout above over base (NULL: only the size): cbase and the first
 * slot; the bytes, 0 when they overflow. */
LA_HIDDEN size_t la__kda_saved_layout(const la__kda_args *a, const void *base, int64_t **cbase,
                                      float **slots);

/* Scratch bytes per thread (SIZE_MAX where it would overflow: reported as
 * out of memory), then the computation (cannot fail). driver.c. */
LA_HIDDEN size_t la__kda_forward_scratch(const la__kda_args *a);
LA_HIDDEN void la__kda_forward(const la__kda_args *a);
LA_HIDDEN size_t la__kda_backward_scratch(const la__kda_args *a);
LA_HIDDEN void la__kda_backward(const la__kda_args *a);
/* The chunk backward writes dv and dg with non-temporal stores when each
 * is at least this many bytes (cpu-kda22; a variable so that tests can
 * force it with 0 and compare the bits with the plain copies). */
#define LA__KDA_STREAM_MIN_BYTES ((size_t)16 << 20)
LA_HIDDEN extern size_t la__kda_stream_min_bytes;

/* ---- one token (recurrent.c) ---------------------------------------- */

/* Work floats of la__kda_token (2K + V + alignment slack) and
 * la__kda_token_backward (K + 3V + slack). */
#define LA__KDA_TOKEN_WORK(K, V) (2 * (size_t)(K) + 3 * (size_t)(V) + 64)

/* One token of one (sequence, value head): S [K,V] updated in place, o [V]
 * written unless NULL; q, k, g [K] (q, k already normalised), v [V]. The
 * recurrent forward, its backward's recomputation and the decoding step all
 * run exactly this code (decoding == recurrent, bit for bit). */
LA_HIDDEN void la__kda_token(int64_t K, int64_t V, float scale, float *S, float *o, const float *q,
                             const float *k, const float *v, const float *g, float beta,
                             float *work);

/* Reverse of one token: P = S_{t-1}, St = S_t; G [K,V] holds dL/dS_t on
 * entry and dL/dS_{t-1} on exit; dq, dk [K] accumulated (+=); dv [V], dg [K]
 * and *dbeta written. dot = d_o of the token (unscaled). */
LA_HIDDEN void la__kda_token_backward(int64_t K, int64_t V, float scale, const float *P,
                                      const float *St, float *G, const float *q, const float *k,
                                      const float *v, const float *g, float beta, const float *dot,
                                      float *dq, float *dk, float *dv, float *dg, float *dbeta,
                                      float *work);

/* Decoding step (step.c): q, k [K] raw (normalised here when
 * cfg->use_qk_l2norm), g [K], v [V]; S [K,V] updated, o [V] written; work:
 * 4K + V + 64 floats (qn, kn, then the forward token's a, ka, r), which is
 * within the decoder's LA__STEP_WORK_FLOATS(K, V). */
LA_HIDDEN void la__kda_step(const la_decoder_config *cfg, float scale, float *S, float *o,
                            const float *q, const float *k, const float *v, const float *g,
                            float beta, float *work);

/* ---- one chunk (chunk.c, pairs.c) ------------------------------------ */

typedef struct la__kda_chunk_in {
    int64_t L, K, V;    /* chunk length, head dims */
    const float *q, *k; /* [L,K] rows, already normalised */
    const float *v;     /* [L,V] */
    const float *g;     /* [L,K] log-gates */
    const float *beta;  /* [L] */
    float scale;
    const la__kernels *kr;
    /* backward only, optional (zero: none): n floats the next call will
     * read first (la_saved's next slot), prefetched into L2 a piece per
     * token while this chunk's gradient rows are made (cpu-kda23) */
    const float *next;
    size_t next_n;
} la__kda_chunk_in;

/* Forward of one chunk: advances S [K,V] over it and writes o (row stride
 * ostride floats) unless o is NULL, and keeps the chunk's products into keep
 * unless it is NULL (la__kda_chunk_keep below; la_saved's forward). work:
 * la__kda_chunk_work_floats floats, 64-byte aligned. */
LA_HIDDEN size_t la__kda_chunk_work_floats(int64_t C, int64_t K, int64_t V);
LA_HIDDEN void la__kda_chunk_step(const la__kda_chunk_in *in, float *S, float *o, int64_t ostride,
                                  float *keep, float *work);
/* With o and keep, la__kda_chunk_step keeps P [L,L] (pairs.c) too, at
 * keep + la__kda_chunk_keep_floats(L, K, V): la__kda_chunk_saved_floats
 * per chunk. */
static inline size_t la__kda_chunk_saved_floats(int64_t C, int64_t K, int64_t V);

/* The chunk products the backward would recompute, kept from the backward's
 * checkpoint pass (or by the forward, into la_saved): M [L,L] (the gated K K^T, strictly lower), U = A Diag(beta)
 * V [L,V], W = A Diag(beta) (K * B) [L,K], R = U - W S_0 [L,V];
 * la__kda_chunk_keep_floats(C, K, V) floats per chunk. la__kda_chunk_keep
 * runs la__kda_chunk_step (o NULL) and stores them into keep; the same code
 * on the same inputs, so the backward that reads them gives the same bits
 * as one that recomputes them (M does not depend on whether P is formed
 * too: pairs.c takes them as separate products). */
LA_HIDDEN size_t la__kda_chunk_keep_floats(int64_t C, int64_t K, int64_t V);
LA_HIDDEN void la__kda_chunk_keep(const la__kda_chunk_in *in, float *S, float *keep, float *work);

static inline size_t la__kda_chunk_saved_floats(int64_t C, int64_t K, int64_t V) {
    return la__kda_chunk_keep_floats(C, K, V) + ((size_t)C * (size_t)C + 15) / 16 * 16;
}

/* Backward of one chunk: S0 its start state; G [K,V] holds dL/dS_L on entry
 * and dL/dS_0 on exit; dO [L,V] is scale * d_o (contiguous). dq, dk [L,K]
 * accumulated (+=); dv [L,V], dbeta [L], dg [L,K] written. kept: the
 * chunk's la__kda_chunk_keep products, or NULL (recomputed); keptP: its P
 * (la_saved), or NULL (recomputed). */
LA_HIDDEN size_t la__kda_chunk_bwd_work_floats(int64_t C, int64_t K, int64_t V);
LA_HIDDEN void la__kda_chunk_backward(const la__kda_chunk_in *in, const float *S0, float *G,
                                      const float *dO, const float *kept, const float *keptP,
                                      float *dq, float *dk, float *dv, float *dbeta, float *dg,
                                      float *work);

/* The per-key-gated products of a chunk (pairs.c). With gam [L,K] the
 * cumulative log-gates (float64, non-increasing along the chunk):
 *     P_tj = sum_i q_ti k_ji exp(gam_ti - gam_ji)   j <= t   (0 above)
 *     M_tj = sum_i k_ti k_ji exp(gam_ti - gam_ji)   j <  t   (0 on and above)
 * Both [L,L] with row stride L. Only exponentials of numbers <= 0, or
 * <= LA__KDA_SPAN inside a sub-block, are taken (see pairs.c); work must
 * hold la__kda_pairs_prepare's factors of this chunk. P is skipped when
 * NULL. */
#define LA__KDA_SUB 16
/* The largest sub-block span (log space) whose own pairs are taken as a
 * matrix product of rows scaled by factors in [e^-span, e^span] (pairs.c);
 * a chunk whose span is within it is one block (cpu-kda21). */
#define LA__KDA_SPAN 30.0
LA_HIDDEN size_t la__kda_pairs_work_floats(int64_t C, int64_t K);
/* First, once per chunk: the per-token factors R_t = exp(gam_t - gam_b(t)),
 * Pe_t = exp(gam_e(t) - gam_t) (b, e: first and last token of t's
 * sub-block) and q * R (q may be NULL when P is not needed), k * R into
 * work, which the two calls below read; and the chunk's gate factors
 * b_t = exp(gam_t) = exp(gam_b) R_t, e_t = exp(gam_L - gam_t) =
 * exp(gam_L - gam_e) Pe_t [L,K] (products of factors <= 1: no overflow). */
LA_HIDDEN void la__kda_pairs_prepare(int64_t L, int64_t K, const float *q, const float *k,
                                     const double *gam, float *b, float *e, float *work);
LA_HIDDEN void la__kda_pairs_forward(const la__kernels *kr, int64_t L, int64_t K, const float *q,
                                     const float *k, const double *gam, float *P, float *M,
                                     float *work);
/* Reverse of la__kda_pairs_forward for given dP (lower incl. diagonal) and
 * dM (strictly lower): dq, dk [L,K] accumulated (+=); dgam [L,K] (float64)
 * written: the gradient through the exponentials plus that through the
 * chunk's gate factors b, e (upstream db, de [L,K]; see close_rows). */
LA_HIDDEN void la__kda_pairs_backward(const la__kernels *kr, int64_t L, int64_t K, const float *q,
                                      const float *k, const double *gam, const float *dP,
                                      const float *dM, const float *db, const float *b,
                                      const float *de, const float *e, float *dq, float *dk,
                                      double *dgam, float *work);

/* out[x] = exp(a[x] - b[x]) for a[x] - b[x] <= 0, or <= LA__KDA_SPAN
 * where pairs.c takes a sub-block's own factor (b NULL: exp(a[x]),
 * a <= 0), vectorised, the same bits on every ISA path (pairs.c). */
LA_HIDDEN void la__kda_exp_diff(float *out, const double *a, const double *b, int64_t K);

/* cpu-fwd5: the chunk step and the chunk backward (chunk.c) are built for
 * the baseline ISA, AVX2 and AVX-512 (their element loops: gate sums, row
 * scalings, gradient rows); every helper they call in their file is inlined
 * into each build (KDA_INLINE). (The same builds of pairs.c' entry points
 * measured 1.00x: not kept; cpu-kdab19 builds two of its loops per ISA
 * instead, restrict bodies that vectorise: pairs_backward's closing rows,
 * scalar float64 before, and before_block's row scalings.)
 * Elementwise float operations in a fixed order and no contraction: every
 * build gives the same bits, as the GLA chunk's (gla/chunk.c);
 * la_isa_active() picks one, as for the kernels (LA_ISA_BUILDS). */
#if defined(__GNUC__)
#define KDA_INLINE static inline __attribute__((always_inline))
#else
#define KDA_INLINE static inline
#endif

/* p rounded up to 64 bytes. */
static inline float *la__kda_align(float *p) {
    return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

#endif
