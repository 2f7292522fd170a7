/* Kernel (feature-map) linear attention: what the forms share.
 *
 * One work unit is one (sequence n, head h). Notation for one unit (MATH.md
 * §2, §5), rows are tokens:
 *
 *   q̂_t = c·φ(q_t)   c = 1 when normalised, else the scale
 *   k̃_t = φ(k_t)
 *   S_t = S_0 + Σ_{j≤t} k̃_jᵀ v_j          [K,V]
 *   z_t = z_0 + Σ_{j≤t} k̃_j               [K]
 *   num_t = q̂_t S_t,  den_t = q̂_t·z_t + ε
 *   o_t = num_t / den_t (normalised) or num_t (unnormalised)
 *
 * Non-causal: S_t, z_t are replaced by the sums over the whole sequence.
 *
 * Backward. With g_t = ∂L/∂num_t and δ_t = ∂L/∂den_t:
 *
 *   normalised:   g_t = do_t / den_t,   δ_t = -(do_t · o_t) / den_t
 *   unnormalised: g_t = do_t,           δ_t = 0
 *
 *   dq̂_t = S_t g_t + δ_t z_t                      (needs the forward S_t, z_t)
 *   dS̄_t = dS_T + Σ_{i≥t} q̂_iᵀ g_i                (reverse prefix sums)
 *   dz̄_t = dz_T + Σ_{i≥t} δ_i q̂_i
 *   dk̃_t = dS̄_t v_tᵀ + dz̄_t,   dv_t = k̃_t dS̄_t
 *   dS_0 = dS̄_1,  dz_0 = dz̄_1
 *   dq_t = c · dq̂_t ⊙ φ'(q_t),  dk_t = dk̃_t ⊙ φ'(k_t)
 *
 * In a block of tokens with scores A[i][j] = q̂_i·k̃_j (j ≤ i when causal):
 *   dA[i][j] = g_i·v_j + δ_i, so Σ_{i≥j} dA[i][j] q̂_i is the in-block part of
 *   dk̃_j, Σ_{j≤i} dA[i][j] k̃_j the in-block part of dq̂_i and
 *   Σ_{i≥j} A[i][j] g_i the in-block part of dv_j.
 *
 * Every backward runs as two sweeps, so no form stores a state per token or
 * per chunk: a forward sweep that rebuilds S_t, z_t, o_t exactly as the
 * forward does and produces g, δ and dq; then a reverse sweep that carries
 * dS̄, dz̄ and produces dk, dv. Between the sweeps the normalised form parks
 * g_t in the dv output rows and δ_t in dk[t][0] (the unit owns those rows,
 * each row is read back before it is overwritten; unnormalised, g_t = do_t
 * is read from d_o), so the scratch does not grow with T. The non-causal
 * form needs no parking: dS̄, dz̄ are complete before any key is visited.
 */
#ifndef LINATTN_OPS_LINEAR_ATTN_H
#define LINATTN_OPS_LINEAR_ATTN_H

#include "../../core/internal.h"
#include "../registry.h"
#include "../../kernels/kernels.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* Query/key block of the parallel form (tokens). */
#define LA__LIN_PAR_BLOCK 64

typedef struct la__lin_job {
    const la_dims *dims;
    int64_t H, K, V;
    la_feature_map fm;
    int normalize;
    float eps;
    float qscale;  /* c above: 1 when normalised, else the resolved scale */
    float scale;   /* the resolved scale (the decoding step takes it) */
    int64_t chunk; /* resolved chunk size (chunk form) */
    int64_t Tmax;  /* longest sequence */
    /* forward */
    float *o, *final_state, *final_norm;
    const float *q, *k, *v, *S0, *z0;
    /* backward (outputs; o/final_* above unused) */
    float *dq, *dk, *dv, *dS0, *dz0;
    const float *d_o, *dST, *dzT;
    la_ctx *ctx;
    const la__kernels *kr; /* the micro-kernel table of this call */
    /* cpu-saved16, la_saved (causal chunk form, one sequence not split over
     * time): the start state Sx [K, Vx] of every chunk, head h's chunks of
     * sequence n from slot h NC + cbase[n] on (NC chunks in all). save: the
     * forward writes them; saved: the backward reads them; NULL: neither. */
    float *save;
    const float *saved;
    const int64_t *sv_cbase;
    int64_t sv_nc;
} la__lin_job;

/* One unit's view of the tensors: token t of the unit is row t. */
typedef struct la__lin_unit {
    int64_t len;                 /* tokens */
    int64_t sqk, sv;             /* row strides (H*K, H*V) */
    const float *q, *k, *v, *d_o;
    float *o, *dq, *dk, *dv;
    const float *S0, *z0, *dST, *dzT; /* NULL when not given */
    float *fS, *fz, *dS0, *dz0;       /* NULL when not wanted */
    float *save_S;                    /* la_saved: this unit's chunk states */
    const float *saved_S;             /* (la__lin_job.save / saved), or NULL */
} la__lin_unit;

void la__lin_unit_init(const la__lin_job *j, int64_t task, la__lin_unit *u);

/* ---- feature maps ----------------------------------------------------- */

/* elu(x)+1 is x+1 for x > 0 and e^x otherwise (computed as e^x, exact to
 * rounding, rather than expm1(x)+1). relu'(0) = 0. */
static inline float la__phi(la_feature_map fm, float x) {
    switch (fm) {
    case LA_FEATURE_ELU1: return x > 0 ? x + 1.0f : expf(x);
    case LA_FEATURE_RELU: return x > 0 ? x : 0.0f;
    default: return x;
    }
}

static inline float la__dphi(la_feature_map fm, float x) {
    switch (fm) {
    case LA_FEATURE_ELU1: return x > 0 ? 1.0f : expf(x);
    case LA_FEATURE_RELU: return x > 0 ? 1.0f : 0.0f;
    default: return 1.0f;
    }
}

/* y[i] = c * phi(x[i]) (c = 1 is exact, so the same code serves both). */
static inline void la__phi_row(la_feature_map fm, float c, float *y, const float *x,
                               int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = c * la__phi(fm, x[i]);
}

/* y[i] = c * dy[i] * phi'(x[i]) */
static inline void la__dphi_row(la_feature_map fm, float c, float *y, const float *dy,
                                const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = c * dy[i] * la__dphi(fm, x[i]);
}

/* Rows of one head sit H·K floats apart in [B,T,H,K] tensors far larger
 * than the caches, and the hardware prefetchers do not follow that stride
 * across pages: the row loaders below prefetch a few rows ahead. */
#define LA__LIN_PREFETCH_AHEAD 4
static inline void la__prefetch_row(const float *p, int64_t n) {
#if defined(__GNUC__)
    for (int64_t i = 0; i < n; i += 16) __builtin_prefetch(p + i, 0, 3);
#else
    (void)p;
    (void)n;
#endif
}

/* Row versions for the kernel forms (phi.c: vectorised, own expf, the same
 * bits on every path). dst[i][:] = c·φ(x[(t0+i)·sx][:]) for L rows of K
 * (dst row stride K); y[(t0+i)·sy][:] = c·dy[i][:]⊙φ'(x[(t0+i)·sy][:])
 * (dy row stride K). */
void la__lin_phi_rows(const la__lin_job *j, float c, const float *x, int64_t sx, int64_t t0,
                      int64_t L, float *dst);
void la__lin_dphi_rows(const la__lin_job *j, float c, float *y, int64_t sy, int64_t t0,
                       int64_t L, const float *dy, const float *x);

/* From Numx rows (row stride Vx: num_i and, normalised, den_i - ε in column
 * V) and the rows [t0, t0+L) of d_o: Gx rows (stride Vx) = [g_i, δ_i] with
 * g = dO/den, δ = -(dO·o)/den, o = num/den as the forward writes it; or
 * g = dO unnormalised (no δ column). */
static inline void la__lin_gx_rows(const la__lin_job *j, int64_t L, const float *num,
                                   const float *d_o, int64_t sv, int64_t t0, float *g) {
    const int64_t V = j->V, Vx = j->V + (j->normalize ? 1 : 0);
    for (int64_t i = 0; i < L; i++) {
        const float *dOi = d_o + (t0 + i) * sv, *n = num + i * Vx;
        float *gi = g + i * Vx;
        if (!j->normalize) {
            for (int64_t x = 0; x < V; x++) gi[x] = dOi[x];
            continue;
        }
        const float d = n[V] + j->eps;
        float dot = 0;
        for (int64_t x = 0; x < V; x++) {
            gi[x] = dOi[x] / d;
            dot += dOi[x] * (n[x] / d);
        }
        gi[V] = -dot / d;
    }
}

/* Output rows [t0, t0+L) of o from Numx rows: num / den, or num. */
static inline void la__lin_out_rows(const la__lin_job *j, int64_t L, const float *num, float *o,
                                    int64_t sv, int64_t t0) {
    const int64_t V = j->V, Vx = j->V + (j->normalize ? 1 : 0);
    for (int64_t i = 0; i < L; i++) {
        const float *n = num + i * Vx;
        float *oi = o + (t0 + i) * sv;
        if (j->normalize) {
            const float d = n[V] + j->eps;
            for (int64_t x = 0; x < V; x++) oi[x] = n[x] / d;
        } else {
            for (int64_t x = 0; x < V; x++) oi[x] = n[x];
        }
    }
}

/* ---- small dense kernels (contiguous inner loops) ---------------------- */

/* Eight interleaved partial sums, combined pairwise at the end: a fixed
 * order (so results never depend on threads or callers) that the compiler
 * can keep in SIMD lanes without reassociating anything. */
static inline float la__dot(const float *a, const float *b, int64_t n) {
    float p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) p[l] += a[i + l] * b[i + l];
    for (int l = 0; i < n; i++, l++) p[l] += a[i] * b[i];
    return ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
}

static inline void la__axpy(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* The per-token arithmetic of the recurrent form, shared by the recurrent
 * forward (through la__linear_attn_step), its backward and the decoder:
 *   kf = phi(k), qf = c*phi(q), S += kfᵀv, z += kf (normalised),
 *   o = qf S, den = qf·z + eps, o /= den (normalised).
 * den is written when normalised (else 1); qf, kf [K] are outputs too. */
void la__lin_token(la_feature_map fm, int normalize, float eps, float c, int64_t K,
                   int64_t V, float *S, float *z, float *o, const float *q, const float *k,
                   const float *v, float *qf, float *kf, float *den);

/* One token of one (sequence, head) as the decoder runs it: S [K,V], z [K]
 * (normalize only, else NULL), o [V]; q,k [K], v [V]; work >=
 * LA__STEP_WORK_FLOATS(K, V). The recurrent form calls it per token, so
 * decoding equals that form bit for bit. */
LA_HIDDEN void la__linear_attn_step(const la_decoder_config *cfg, float scale, float *S,
                                    float *z, float *o, const float *q, const float *k,
                                    const float *v, float *work);

/* ---- scratch layout ----------------------------------------------------- */

/* n = a*b, or SIZE_MAX on overflow (then la__arena_floats flags it). */
static inline size_t la__mul(size_t a, size_t b) {
    if (a && b > SIZE_MAX / a) return SIZE_MAX;
    return a * b;
}

/* Per form: lay out (or size, with b->base == NULL) the scratch of one unit,
 * and run the unit. */
void la__lin_noncausal_layout(const la__lin_job *j, int backward, la__arena *b, float **bufs);
void la__lin_noncausal_fwd(const la__lin_job *j, const la__lin_unit *u, float *scratch);
void la__lin_noncausal_bwd(const la__lin_job *j, const la__lin_unit *u, float *scratch);

void la__lin_recurrent_layout(const la__lin_job *j, int backward, la__arena *b, float **bufs);
void la__lin_recurrent_fwd(const la__lin_job *j, const la__lin_unit *u, float *scratch);
void la__lin_recurrent_bwd(const la__lin_job *j, const la__lin_unit *u, float *scratch);

void la__lin_chunk_layout(const la__lin_job *j, int backward, la__arena *b, float **bufs);
void la__lin_chunk_fwd(const la__lin_job *j, const la__lin_unit *u, float *scratch);
/* The chunk forward of n units of one sequence (heads h..h+n-1, n <= the
 * group size), chunk by chunk and head by head within a chunk: the heads'
 * rows of a token share a page, so each page of q/k/v/o is walked once per
 * group instead of once per head. Each head's arithmetic is exactly that of
 * la__lin_chunk_fwd on its own. */
#define LA__LIN_HEAD_GROUP 8 /* at most; api.c's group_size picks 8 or 4 */
void la__lin_chunk_fwd_group(const la__lin_job *j, const la__lin_unit *u, int64_t n,
                             float *scratch);
void la__lin_chunk_bwd(const la__lin_job *j, const la__lin_unit *u, float *scratch);
/* The chunk backward of n units of one sequence, grouped as the forward. */
void la__lin_chunk_bwd_group(const la__lin_job *j, const la__lin_unit *u, int64_t n,
                             float *scratch);

/* The chunk forward of one long sequence split over time (few sequences x
 * heads for the threads, split.c): segments of LA__LIN_SEG_CHUNKS chunks, a
 * split fixed by the shape alone (used when sequences x heads <
 * LA__LIN_SPLIT_BELOW and the longest sequence has >= 2 segments), so the
 * results are the same bits for any thread count: the state before a
 * segment is the one before the previous segment plus that segment's local
 * sum, whether its forward (seg_fwd) or a sum task (seg_sum) produced the
 * sum. split.c schedules the segments as a dependency pipeline. Sx states
 * [K, Vx]; Sout (may be NULL) = Sin + local sum. */
#define LA__LIN_SEG_CHUNKS 16
#define LA__LIN_SPLIT_BELOW 8
int la__lin_split_over_time(const la__lin_job *j);
la_status la__lin_run_split(const char *op, const la__lin_job *j, int backward);
/* The backward's two sweeps over a segment (chunk.c): forward (dq, parks G
 * and δ; Sout = Sin + local K̃ᵀVx) and reverse (dk, dv; dSout = dSin +
 * local Q̂ᵀGx, summed from the last chunk), and the reverse local sum
 * alone. */
void la__lin_chunk_seg_bwd_fwd(const la__lin_job *j, const la__lin_unit *u, int64_t tb,
                               int64_t te, const float *Sin, float *Sout, float *scratch);
void la__lin_chunk_seg_bwd_rev(const la__lin_job *j, const la__lin_unit *u, int64_t tb,
                               int64_t te, const float *dSin, float *dSout, float *scratch);
void la__lin_chunk_seg_rsum(const la__lin_job *j, const la__lin_unit *u, int64_t tb, int64_t te,
                            float *dSsum, float *scratch);
void la__lin_chunk_seg_sum(const la__lin_job *j, const la__lin_unit *u, int64_t tb, int64_t te,
                           float *Ssum, float *scratch);
void la__lin_chunk_seg_fwd(const la__lin_job *j, const la__lin_unit *u, int64_t tb, int64_t te,
                           const float *Sin, float *Sout, float *scratch);

void la__lin_parallel_layout(const la__lin_job *j, int backward, la__arena *b, float **bufs);
void la__lin_parallel_fwd(const la__lin_job *j, const la__lin_unit *u, float *scratch);
void la__lin_parallel_bwd(const la__lin_job *j, const la__lin_unit *u, float *scratch);

/* Most scratch pieces any layout carves. */
#define LA__LIN_MAX_BUFS 24

/* Shared pieces of the state handling. */
/* S = S0 (or 0), z = z0 (or 0, normalised only). */
void la__lin_state_init(const la__lin_job *j, const la__lin_unit *u, float *S, float *z);
/* Writes the unit's final state / norm if asked. */
void la__lin_state_store(const la__lin_job *j, const la__lin_unit *u, const float *S,
                         const float *z);

/* The extended state of the kernel forms: Sx [K, Vx] (row stride Vx) holds
 * S in its first V columns and, when normalised, z in column V (Vx = V + 1;
 * Vx = V unnormalised). Values get a ones column to match (Vx = [V, 1]), so
 * one product gives numerator and denominator: Q̂ Sx = [Q̂ S, Q̂ z] and
 * K̃ᵀ Vx = [K̃ᵀ V, K̃ᵀ 1]; in the backward Gx = [G, δ] plays the same role. */
static inline int64_t la__lin_vx(const la__lin_job *j) { return j->V + (j->normalize ? 1 : 0); }
/* Sx = [S, z] from two [K,V] / [K] tensors (either NULL: zeros). */
void la__lin_ext_load(const la__lin_job *j, float *Sx, const float *S, const float *z);
/* S, z (either NULL: skipped) from Sx. */
void la__lin_ext_store(const la__lin_job *j, const float *Sx, float *S, float *z);
/* Rows [t0, t0+L) of v into vx (row stride Vx), ones in column V when
 * normalised. */
void la__lin_load_vx(const la__lin_job *j, const float *v, int64_t sv, int64_t t0, int64_t L,
                     float *vx);

#endif
