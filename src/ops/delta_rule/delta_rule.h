/* Internal to the delta-rule family (DeltaNet, Gated DeltaNet): the per-token
 * arithmetic shared by the recurrent form and the decoder, the L2 norm of q
 * and k, and the form drivers called by api.c once every argument is valid.
 *
 * One (sequence, value head) of the recurrence, fla's order of operations:
 *     S  <- exp(g) S                      (Gated DeltaNet only)
 *     r   = beta (v - k S)                (the delta: new value minus recalled)
 *     S  <- S + k^T r
 *     o   = (scale q) S
 * which is S_t = exp(g)(I - beta k^T k) S_{t-1} + beta k^T v, o_t = scale q S_t.
 * DeltaNet is the same with no gate (g == NULL). */
#ifndef LINATTN_DELTA_RULE_H
#define LINATTN_DELTA_RULE_H

#include "../../core/internal.h"
#include "../registry.h"
#include "../../kernels/kernels.h"

/* Rows of one head in [B,T,H,D] tensors lie H*D floats apart (a new page
 * per row at H*D = 1024): the row loops that gather or scatter them fetch
 * the row LA__DELTA_AHEAD tokens ahead (rw 1: about to be written). Only a
 * hint: no value changes. */
#define LA__DELTA_AHEAD 8
static inline void la__delta_prefetch(const float *p, int64_t n, int rw) {
#if defined(__GNUC__)
    if (rw)
        for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, 1, 3);
    else
        for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, 0, 3);
#else
    (void)p;
    (void)n;
    (void)rw;
#endif
}

/* The same into L2 only (prefetcht1), for rows needed a chunk later. */
static inline void la__delta_prefetch_l2(const float *p, int64_t n) {
#if defined(__GNUC__)
    for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, 0, 2);
#else
    (void)p;
    (void)n;
#endif
}

/* x . y in 16 partial sums (lane l takes i = l mod 16), combined in a fixed
 * tree: deterministic, the same bits on every ISA, and 16 independent
 * addition chains instead of one chain of n dependent additions (the
 * backward's row dot products were latency-bound: ~4 cycles per element). */
static inline float la__delta_dot(const float *x, const float *y, int64_t n) {
    float p[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) p[l] += x[i + l] * y[i + l];
    for (int l = 0; i < n; i++, l++) p[l] += x[i] * y[i];
    for (int l = 0; l < 8; l++) p[l] += p[l + 8];
    for (int l = 0; l < 4; l++) p[l] += p[l + 4];
    return (p[0] + p[2]) + (p[1] + p[3]);
}

/* The L2 norm of q and k (opts.use_qk_l2norm): x / sqrt(sum x^2 + eps), as
 * fla's l2norm (eps = 1e-6); an all-zero row stays zero. */
#define LA__DELTA_L2_EPS 1e-6f

/* y = x * rstd, returns rstd = 1 / sqrt(sum x^2 + eps). y may equal x. */
LA_HIDDEN float la__delta_l2norm(float *y, const float *x, int64_t n);
/* la__delta_l2norm of `rows` rows, x rows xs floats apart, y rows ys apart
 * (the same bits, built per ISA; the rstd are not returned). */
LA_HIDDEN void la__delta_l2norm_rows(float *restrict y, int64_t ys, const float *restrict x,
                                     int64_t xs, int64_t rows, int64_t n);

/* The q and k rows of query head hq for tokens [tok0, tok0 + len) (rows H*K
 * floats apart) copied into qn, kn [len, K], L2-normalised when l2norm (the
 * rstd of each row into rq, rk), the rows LA__DELTA_AHEAD tokens ahead
 * prefetched. The backward drivers of the delta rule and KDA share it. */
LA_HIDDEN void la__delta_gather_qk(const float *q, const float *k, int64_t tok0, int64_t len,
                                   int64_t H, int64_t hq, int64_t K, int l2norm, float *qn,
                                   float *kn, float *rq, float *rk);

/* The same for the query heads [hq0, hq0 + nq) (a backward task's group):
 * qn, kn [nq][len][K], rq, rk [nq][len], head h at h len K (h len); the
 * group's rows of a token are adjacent, so the group shares page walks and
 * prefetch streams. Per row the arithmetic of the one-head call. */
LA_HIDDEN void la__delta_gather_qk_group(const float *q, const float *k, int64_t tok0,
                                         int64_t len, int64_t H, int64_t hq0, int64_t nq,
                                         int64_t K, int l2norm, float *qn, float *kn, float *rq,
                                         float *rk);

/* The backward of that gather: dq, dk rows of heads [hq0, hq0 + nq) of
 * tokens [tok0, tok0 + len) written (not accumulated) from dqn, dkn (the
 * gradients w.r.t. the normalised rows, layout of qn) through the L2 norm
 * (dx = rstd (dy - (y . dy) y); a copy without l2norm). */
LA_HIDDEN void la__delta_scatter_dqk_group(float *dq, float *dk, int64_t tok0, int64_t len,
                                           int64_t H, int64_t hq0, int64_t nq, int64_t K,
                                           int l2norm, const float *qn, const float *kn,
                                           const float *rq, const float *rk, const float *dqn,
                                           const float *dkn);
/* The same with non-temporal stores of the rows (the same bits; the caller
 * ends its task with la__stream_fence, kernels/stream.h). cpu-kda22: KDA's
 * backward where dq, dk are large. */
LA_HIDDEN void la__delta_scatter_dqk_group_stream(float *dq, float *dk, int64_t tok0, int64_t len,
                                                  int64_t H, int64_t hq0, int64_t nq, int64_t K,
                                                  int l2norm, const float *qn, const float *kn,
                                                  const float *rq, const float *rk,
                                                  const float *dqn, const float *dkn);

/* One token of one (sequence, value head): S [K,V] updated in place, o [V]
 * written unless NULL; q, k [K] (normalised here when l2norm), v [V]; g NULL
 * or one log-gate; work >= LA__STEP_WORK_FLOATS(K, V) floats. The recurrent
 * forward and the registry decoding step (entry.c) both run exactly this code. */
LA_HIDDEN void la__delta_token(int64_t K, int64_t V, int l2norm, float scale, float *S,
                               float *o, const float *q, const float *k, const float *v,
                               const float *g, float beta, float *work);

/* Everything an op call needs, validated and resolved by api.c.
 * g == NULL: DeltaNet. HV value heads, H q/k heads, HV % H == 0. */
typedef struct la__delta_args {
    la_ctx *ctx;
    const la__kernels *kr; /* micro-kernels of the chunk form, fetched once per call */
    la_dims dims;
    int64_t N, H, HV, K, V;
    la_form form;
    int64_t chunk;  /* chunk size of LA_FORM_CHUNK (resolved, >= 1) */
    float scale;
    int l2norm;
    /* forward */
    float *o, *final_state;
    const float *q, *k, *v, *g, *beta, *initial_state;
    /* backward */
    float *dq, *dk, *dv, *dg, *dbeta, *d_initial_state;
    const float *d_o, *d_final_state;
    /* saved for backward (la_saved, chunk form): the forward fills `save`,
     * the backward reads `saved` (la__delta_saved_bytes, layout in driver.c);
     * NULL: none */
    void *save;
    const void *saved;
    int64_t saved_chunks; /* chunks of all sequences (set by the drivers) */
} la__delta_args;

/* Bytes of a filled la_saved for this call (chunk form), 0 if a size
 * overflows. */
LA_HIDDEN size_t la__delta_saved_bytes(const la__delta_args *a);

/* Chunk length actually used: opts' chunk size capped at the longest
 * sequence (a longer chunk would be the whole sequence anyway). */
LA_HIDDEN int64_t la__delta_chunk_len(const la__delta_args *a);

/* Scratch bytes per thread, then the computation (cannot fail). */
LA_HIDDEN size_t la__delta_forward_scratch(const la__delta_args *a);
LA_HIDDEN void la__delta_forward(const la__delta_args *a);
LA_HIDDEN size_t la__delta_backward_scratch(const la__delta_args *a);
LA_HIDDEN void la__delta_backward(const la__delta_args *a);

/* The chunkwise (WY / UT-transform) forward of one chunk of one
 * (sequence, value head); see chunk.c. Advances S [K,V] over the chunk and
 * writes o (row stride ostride floats) unless o is NULL. kept (in
 * la__delta_chunk_step): NULL, or la__delta_chunk_kept_floats(L, K, V)
 * floats receiving what la__delta_chunk_keep would keep from the same S,
 * bit for bit (a forward that saves for its backward). */
typedef struct la__delta_chunk_in {
    int64_t L, K, V;       /* chunk length, head dims */
    const float *q, *k;    /* [L,K] rows, already normalised if l2norm */
    const float *v;        /* [L,V] rows, ldv floats apart */
    const float *g;        /* [L] log-gates or NULL */
    const float *beta;     /* [L] */
    float scale;
    const la__kernels *kr; /* micro-kernel table of the op call */
    int64_t ldv;           /* row stride of v in floats; 0: V (contiguous rows) */
} la__delta_chunk_in;

LA_HIDDEN size_t la__delta_chunk_work_floats(int64_t C, int64_t K, int64_t V);
LA_HIDDEN void la__delta_chunk_step(const la__delta_chunk_in *in, float *S, float *o,
                                    int64_t ostride, float *kept, float *work);

/* The backward's forward sweep over one chunk (chunk.c): as
 * la__delta_chunk_step without an output, bit for bit, from S0 (S1 receives
 * S_L unless NULL; S1 may equal S0), keeping in `kept`
 * (la__delta_chunk_kept_floats(L, K, V) floats) the products the chunk's
 * backward would otherwise recompute. work as la__delta_chunk_step's. */
LA_HIDDEN size_t la__delta_chunk_kept_floats(int64_t L, int64_t K, int64_t V);
LA_HIDDEN void la__delta_chunk_keep(const la__delta_chunk_in *in, const float *S0, float *S1,
                                    float *kept, float *work);

/* Backward of one chunk (chunk.c): S0 [K,V] the chunk's start
 * state; kept: NULL (recompute) or what la__delta_chunk_keep kept for this
 * chunk from S0 (same bits either way); G [K,V] holds dL/dS_L on entry and
 * dL/dS_0 on exit; dO [L,V] is scale * d_o (contiguous). dq, dk [L,K] are
 * accumulated (+=); dv [L,V], dbeta [L], dg [L] (gated only) are written. */
LA_HIDDEN size_t la__delta_chunk_bwd_work_floats(int64_t C, int64_t K, int64_t V);
LA_HIDDEN void la__delta_chunk_backward(const la__delta_chunk_in *in, const float *S0,
                                        float *kept, float *G, const float *dO, float *dq,
                                        float *dk, float *dv, float *dbeta, float *dg,
                                        float *work);

#endif
