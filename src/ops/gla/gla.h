/* Internal to the GLA family (simple GLA / RetNet decay, GLA): the per-token
 * update shared by the recurrent form and the decoding step, the job that
 * one API call hands to its (sequence, head) tasks, and the scratch layout.
 *
 * Both ops run through the same code. A "gate row" is either one scalar per
 * token and head (simple GLA: g_t + g_gamma[h], per_key = 0) or K values per
 * token and head (GLA, per_key = 1). */
#ifndef LINATTN_OPS_GLA_H
#define LINATTN_OPS_GLA_H

#include "../../core/internal.h"
#include "../../kernels/isa_builds.h"
#include "../../kernels/kernels.h"
#include "../../kernels/vexp.h"
#include "../../kernels/rowvec.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* One token of one (sequence, head):
 *   S = Diag(a) S + k^T v,  a = exp(g) (per key) or exp(g + g_gamma) (scalar),
 *   o = scale * q S   (skipped when o is NULL; acc [K + V] is work space).
 * The recurrent forward, the recurrent backward's recomputation and
 * the registry decoding step (entry.c) all call this, so decoding equals the recurrent form bit for
 * bit. g is NULL (no decay besides g_gamma), one float, or K floats. */
#define GLA_EXP_BLOCK 16

#if defined(__GNUC__)
#define GLA_INLINE static inline __attribute__((always_inline))
#else
#define GLA_INLINE static inline
#endif

/* ea[l] = e^{g[l]}, l < nb <= GLA_EXP_BLOCK; a full block has a constant
 * trip count so that the compiler vectorises it. */
GLA_INLINE void gla_exp_block(float *restrict ea, const float *restrict g, int64_t nb) {
    if (nb == GLA_EXP_BLOCK)
        for (int l = 0; l < GLA_EXP_BLOCK; l++) LA__EXP_NONPOS(ea[l], g[l]);
    else
        for (int64_t l = 0; l < nb; l++) LA__EXP_NONPOS(ea[l], g[l]);
}

#ifdef LA_ROWVEC
/* Columns [j0, j0 + 16 nv) of the fused update + read-out: o's block in
 * registers while the rows go by (each element of S loaded and stored once). */
GLA_INLINE void gla_block(const int nv, int64_t K, int64_t V, int64_t j0, float scale,
                          float *restrict S, float *restrict o, const float *restrict q,
                          const float *restrict k, const float *restrict v,
                          const float *restrict ea) {
    la__v16 vv[LA_ROWVEC_MAXV], sum[LA_ROWVEC_MAXV];
    const la__v16 zero = {0};
    for (int c = 0; c < nv; c++) {
        LA_V16_LOAD(vv[c], v + j0 + 16 * c);
        sum[c] = zero;
    }
    for (int64_t i = 0; i < K; i++) {
        const float ai = ea[i], ki = k[i], qi = q[i];
        float *restrict row = S + i * V + j0;
        for (int c = 0; c < nv; c++) {
            la__v16 s;
            LA_V16_LOAD(s, row + 16 * c);
            s = ai * s + ki * vv[c];
            LA_V16_STORE(row + 16 * c, s);
            sum[c] = sum[c] + qi * s;
        }
    }
    for (int c = 0; c < nv; c++) {
        const la__v16 out = scale * sum[c];
        LA_V16_STORE(o + j0 + 16 * c, out);
    }
}

GLA_INLINE void gla_block8(const int nv, int64_t K, int64_t V, int64_t j0, float scale,
                          float *restrict S, float *restrict o, const float *restrict q,
                          const float *restrict k, const float *restrict v,
                          const float *restrict ea) {
    la__v8 vv[LA_ROWVEC_MAXV], sum[LA_ROWVEC_MAXV];
    const la__v8 zero = {0};
    for (int c = 0; c < nv; c++) {
        LA_V8_LOAD(vv[c], v + j0 + 8 * c);
        sum[c] = zero;
    }
    for (int64_t i = 0; i < K; i++) {
        const float ai = ea[i], ki = k[i], qi = q[i];
        float *restrict row = S + i * V + j0;
        for (int c = 0; c < nv; c++) {
            la__v8 s;
            LA_V8_LOAD(s, row + 8 * c);
            s = ai * s + ki * vv[c];
            LA_V8_STORE(row + 8 * c, s);
            sum[c] = sum[c] + qi * s;
        }
    }
    for (int c = 0; c < nv; c++) {
        const la__v8 out = scale * sum[c];
        LA_V8_STORE(o + j0 + 8 * c, out);
    }
}
#endif

GLA_INLINE void gla_token_body(const int wide, int per_key, int64_t K, int64_t V, float scale,
                               float *restrict S, float *restrict o, const float *restrict q,
                               const float *restrict k, const float *restrict v,
                               const float *restrict g, float g_gamma, float *restrict acc) {
    const float a = per_key ? 0.0f : expf((g ? g[0] : 0.0f) + g_gamma);
    if (!o) {
        for (int64_t i0 = 0; i0 < K; i0 += GLA_EXP_BLOCK) {
            const int64_t nb = K - i0 < GLA_EXP_BLOCK ? K - i0 : GLA_EXP_BLOCK;
            float ea[GLA_EXP_BLOCK];
            if (per_key)
                gla_exp_block(ea, g + i0, nb);
            else
                for (int64_t l = 0; l < nb; l++) ea[l] = a;
            for (int64_t l = 0; l < nb; l++) {
                const int64_t i = i0 + l;
                const float ai = ea[l], ki = k[i];
                float *restrict row = S + i * V;
                for (int64_t j = 0; j < V; j++) row[j] = ai * row[j] + ki * v[j];
            }
        }
        return;
    }
    /* Per-key decays of all K keys first, 16 at a time with the vectorised
     * e^x of vexp.h (log-gates are <= 0, checked by every caller). */
    float *restrict ea = acc, *restrict tail = acc + K;
    for (int64_t i0 = 0; i0 < K; i0 += GLA_EXP_BLOCK) {
        const int64_t nb = K - i0 < GLA_EXP_BLOCK ? K - i0 : GLA_EXP_BLOCK;
        if (per_key)
            gla_exp_block(ea + i0, g + i0, nb);
        else
            for (int64_t l = 0; l < nb; l++) ea[i0 + l] = a;
    }
    int64_t j0 = 0;
#ifdef LA_ROWVEC
    const int nv8 = wide == LA_ROWVEC_NARROW ? 0 : 4; /* baseline: the plain loop below */
    for (; wide == LA_ROWVEC_WIDE && j0 + 128 <= V; j0 += 128) gla_block(8, K, V, j0, scale, S, o, q, k, v, ea);
    for (; nv8 && j0 + 8 * nv8 <= V; j0 += 8 * nv8)
        gla_block8(nv8, K, V, j0, scale, S, o, q, k, v, ea);
#else
    (void)wide;
#endif
    if (j0 == V) return;
    for (int64_t j = j0; j < V; j++) tail[j] = 0.0f;
    for (int64_t i = 0; i < K; i++) {
        const float ai = ea[i], ki = k[i], qi = q[i];
        float *restrict row = S + i * V;
        /* One pass: the new row is added into the sum while in registers. */
        for (int64_t j = j0; j < V; j++) {
            const float s = ai * row[j] + ki * v[j];
            row[j] = s;
            tail[j] += qi * s;
        }
    }
    for (int64_t j = j0; j < V; j++) o[j] = scale * tail[j];
}

/* Three builds of the same loops: every element sees the same operations in
 * the same order (no contraction, rows in order) at any vector width, so
 * all round alike; la_isa_active() picks one (LINATTN_ISA caps it). */
LA__VECTORISE static inline void gla_token_portable(int per_key, int64_t K, int64_t V, float scale,
                                                    float *S, float *o, const float *q,
                                                    const float *k, const float *v, const float *g,
                                                    float g_gamma, float *acc) {
    gla_token_body(LA_ROWVEC_NARROW, per_key, K, V, scale, S, o, q, k, v, g, g_gamma, acc);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define GLA_TOKEN_AVX2 1
LA__VECTORISE __attribute__((target("avx2"))) static inline void
gla_token_avx2(int per_key, int64_t K, int64_t V, float scale, float *S, float *o, const float *q,
               const float *k, const float *v, const float *g, float g_gamma, float *acc) {
    gla_token_body(LA_ROWVEC_AVX2, per_key, K, V, scale, S, o, q, k, v, g, g_gamma, acc);
}

LA__VECTORISE __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2"))) static inline void
gla_token_avx512(int per_key, int64_t K, int64_t V, float scale, float *S, float *o,
                 const float *q, const float *k, const float *v, const float *g, float g_gamma,
                 float *acc) {
    gla_token_body(LA_ROWVEC_WIDE, per_key, K, V, scale, S, o, q, k, v, g, g_gamma, acc);
}
#endif

static inline void gla_token(int per_key, int64_t K, int64_t V, float scale, float *S, float *o,
                             const float *q, const float *k, const float *v, const float *g,
                             float g_gamma, float *acc) {
#ifdef GLA_TOKEN_AVX2
    const la_isa isa = la_isa_active();
    if (isa == LA_ISA_AVX512) {
        gla_token_avx512(per_key, K, V, scale, S, o, q, k, v, g, g_gamma, acc);
        return;
    }
    if (isa == LA_ISA_AVX2) {
        gla_token_avx2(per_key, K, V, scale, S, o, q, k, v, g, g_gamma, acc);
        return;
    }
#endif
    gla_token_portable(per_key, K, V, scale, S, o, q, k, v, g, g_gamma, acc);
}

/* Everything one forward or backward call needs; task = n * H + h. */
typedef struct gla_job {
    const la_dims *d;
    int64_t H, K, V;
    int64_t C;       /* chunk length (chunk form) or checkpoint interval (recurrent bwd) */
    int64_t group;   /* chunk backward: chunks per state checkpoint */
    int64_t fwd_heads; /* chunk forward: heads per task (la__gla_fwd_heads) */
    int per_key;     /* 1: GLA gates [B,T,H,K]; 0: simple GLA gates [B,T,H] */
    float scale;
    la_ctx *ctx;
    const la__kernels *kr; /* chunk form: micro-kernels, fetched once per call */
    /* forward inputs */
    const float *q, *k, *v, *g, *g_gamma, *s0;
    /* forward outputs (o NULL in backward) */
    float *o, *sT;
    /* backward */
    const float *d_o, *d_sT;
    float *dq, *dk, *dv, *dg, *ds0;
    double *dgamma_part; /* [N*H] per-task sum of the scalar gate gradient, or NULL */
    /* cpu-sgsaved13, la_saved (simple GLA; cpu-glsaved17: GLA; unsplit chunk form): the start
     * state of every chunk, K x V floats at la__sgla_saved_state. save: the
     * forward writes them (NULL: not asked); saved: the backward reads them
     * instead of its state pass (NULL: recompute). sv_cbase [N + 1]: chunks
     * before sequence n (sv_cbase[N]: all of them, per head). */
    float *save;
    const float *saved;
    const int64_t *sv_cbase;
} gla_job;

/* The saved start state of chunk c of sequence n, head h: slot
 * h NC + cbase[n] + c of the states (each head's chunks in order). */
static inline size_t la__sgla_saved_slot(const gla_job *j, int64_t n, int64_t h, int64_t c) {
    const int64_t NC = j->sv_cbase[la__num_seqs(j->d)];
    return (size_t)(h * NC + j->sv_cbase[n] + c) * (size_t)j->K * (size_t)j->V;
}

/* Scratch bytes per thread for each kernel; L = longest sequence. Returns 0
 * when the size would overflow size_t. */
LA_HIDDEN size_t la__gla_recurrent_fwd_bytes(const gla_job *j);
LA_HIDDEN size_t la__gla_recurrent_bwd_bytes(const gla_job *j, int64_t L);
LA_HIDDEN size_t la__gla_chunk_fwd_bytes(const gla_job *j);
LA_HIDDEN size_t la__gla_chunk_bwd_bytes(const gla_job *j, int64_t L);

/* la__task_fn bodies (arg is a gla_job). */
LA_HIDDEN void la__gla_recurrent_fwd_task(void *arg, int64_t task, int tid);
LA_HIDDEN void la__gla_recurrent_bwd_task(void *arg, int64_t task, int tid);
/* The chunk forward's task is (sequence, group of heads): within a task it
 * runs chunk by chunk and head by head, so the heads' rows of a token (one
 * page) are walked once per group; each head's arithmetic is that of a task
 * of its own. LA__GLA_HEAD_GROUP: the heads per task of the grouped
 * backward without la_saved (cpu-sgla19: the forward and the saved
 * backward take la__gla_fwd_heads / LA__GLA_BWD_HEADS, below). */
#define LA__GLA_HEAD_GROUP 4
/* cpu-glafwd18: GLA's (per-key gates) chunk forward takes up to
 * LA__GLA_FWD_HEADS heads per task (at H = 8, K = 128 a token's rows of a
 * tensor are one 4 KiB page, now walked by one task instead of two), fewer
 * where that would leave a thread without a task: N * ceil(H / heads) tasks
 * >= min(threads, N H). cpu-sgla19: simple GLA's forward too, and the
 * grouped backward with a filled la_saved up to LA__GLA_BWD_HEADS the same
 * way (without it, LA__GLA_HEAD_GROUP: its states are kept per head). Each
 * head's arithmetic is that of a task of its own, so the grouping (and with
 * it the thread count) never changes a bit. */
#define LA__GLA_FWD_HEADS 8
#define LA__GLA_BWD_HEADS 8
LA_HIDDEN int64_t la__gla_fwd_heads(const gla_job *j);
LA_HIDDEN void la__gla_chunk_fwd_task(void *arg, int64_t task, int tid);
LA_HIDDEN void la__gla_chunk_bwd_task(void *arg, int64_t task, int tid);
/* The chunk backward keeps the start state of every chunk (one state pass)
 * when they take at most this many bytes per thread (T = 8192, K = V = 128,
 * chunk 64: 8 MiB), else the state before every sqrt(chunks)-th chunk and
 * recomputes the others group by group (two state passes). */
#define LA__GLA_BWD_ALL_STATES_BYTES ((size_t)32 << 20)
/* The limit in use (LA__GLA_BWD_ALL_STATES_BYTES; tests set 0 to run the
 * two-pass path on small cases and compare the two bit for bit). */
LA_HIDDEN extern size_t la__gla_bwd_all_states_bytes;
/* cpu-sglabwd18: simple GLA's chunk forward and grouped backward write o,
 * the saved start states and dq, dk, dv (cpu-glab19: GLA's grouped backward
 * dq, dk, dv and dg too; its forward keeps plain stores) with non-temporal
 * stores (the same floats) when one [B, T, H, max(K, V)] tensor takes at least this many
 * bytes: rows that large are not found in cache by the caller anyway, and
 * plain stores first read every line and evict the rows the next units
 * read. Smaller calls keep plain stores (their outputs may stay cached for
 * the caller). */
#define LA__GLA_STREAM_MIN_BYTES ((size_t)16 << 20)
/* The limit in use (tests set 0 to run the streaming stores on small cases
 * and compare them with plain stores bit for bit). */
LA_HIDDEN extern size_t la__gla_stream_min_bytes;
/* cpu-sgla9: the chunk backward with every state kept (group 1) over
 * groups of heads (simple GLA; cpu-glab15: GLA too): la__gla_bwd_heads = heads per task (<=
 * LA__GLA_HEAD_GROUP, their states within la__gla_bwd_all_states_bytes;
 * with a filled la_saved <= LA__GLA_BWD_HEADS, as the forward's; 1 =
 * use la__gla_chunk_bwd_task), N * ceil(H / heads) tasks, the scratch
 * la__gla_chunk_bwd_group_bytes per thread (0 on overflow); the same bits as
 * la__gla_chunk_bwd_task. L = the longest sequence. */
LA_HIDDEN int64_t la__gla_bwd_heads(const gla_job *j, int64_t L);
LA_HIDDEN size_t la__gla_chunk_bwd_group_bytes(const gla_job *j, int64_t L);
LA_HIDDEN void la__gla_chunk_bwd_group_task(void *arg, int64_t task, int tid);

/* cpu-bwdsplit: one chunk of the chunk backward, rows [r0, r0 + L) of head
 * h, from the state S0 before it and the gradient dS of the state after it
 * (both K x V): the chunk's dq, dk, dv, dg rows, *gamma_sum += its scalar
 * gate gradient, Mc = scale (Q e^G)^T dO (so that the gradient of the state
 * before the chunk is Diag(d) dS + Mc), d = e^{G_L} (K floats for GLA).
 * scratch: per thread,
 * la__gla_chunk_bwd_piece_bytes (a job with group 1); pn > 0 prefetches
 * the pn rows before r0. The same arithmetic as the unsplit backward's
 * chunk (but its fused dS update). */
LA_HIDDEN size_t la__gla_chunk_bwd_piece_bytes(const gla_job *j);
LA_HIDDEN void la__gla_chunk_bwd_piece(const gla_job *j, char *scratch, const float *S0,
                                       const float *dS, int64_t r0, int64_t L, int64_t h,
                                       int64_t pn, double *gamma_sum, float *Mc, float *d);

/* cpu-bwdsplit: the backward split's per-chunk sums for GLA (the same
 * scratch): kind 0, S <- Diag(e^{G_L}) S + (k e^{G_L - G})ᵀ v and
 * GLsum[x] += G_L,x (float64); kind 1, S = Mc as la__gla_chunk_bwd_piece
 * makes it (the same floats) and d = e^{G_L}. */
LA_HIDDEN void la__gla_chunk_bwd_sum_piece(const gla_job *j, char *scratch, int64_t r0,
                                           int64_t L, int64_t h, int kind, float *S, float *d,
                                           double *GLsum);

/* cpu-bwdsplit: one chunk of the GLA (per-key gates) forward, rows
 * [r0, r0 + L) of head h: with outputs, its o rows from the state S before
 * it (not updated); always U = (k e^{G_L - G})ᵀ v, d[x] = e^{G_L,x} and
 * GLsum[x] += G_L,x (float64), so that the state after it is
 * Diag(d) S + U. The same factors and products as the unsplit chunk
 * forward (gla_fwd_chunk_head). scratch: la__gla_chunk_fwd_bytes. */
LA_HIDDEN void la__gla_chunk_fwd_piece(const gla_job *j, char *scratch, const float *S,
                                       int64_t r0, int64_t L, int64_t h, int outputs, float *U,
                                       float *d, double *GLsum);

/* cpu-split2: chunks per segment of the splits over time (split.c,
 * split_gla.c, split_bwd.c), by the shape only (never the thread count, so
 * that every thread count gives the same bits): 16 when the longest
 * sequence has >= 32 chunks of C tokens, 0 (no split) below. Segments of
 * 8 chunks from 16 chunks on were tried and measured slower (bench/NOTES.md,
 * cpu-split2: at T = 1024, C = 64 the 2-thread GLA forward ran at 0.8-0.9x
 * of its one thread). */
static inline int64_t la__gla_seg_chunks(const gla_job *j) {
    return la__max_seq_len(j->d) >= 32 * j->C ? 16 : 0;
}

/* Gate pointer of flattened token r, head h (NULL when g is absent). */
static inline const float *gla_gate_row(const gla_job *j, int64_t r, int64_t h) {
    if (!j->g) return NULL;
    return j->per_key ? j->g + (size_t)(r * j->H + h) * (size_t)j->K : j->g + r * j->H + h;
}

#endif
