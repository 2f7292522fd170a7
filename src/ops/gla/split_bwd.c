/* The chunk backward of simple GLA / RetNet and of GLA with one sequence
 * split over time, for calls with few (sequence, head) pairs (issue 12;
 * the forwards' splits are split.c and split_gla.c). Segments of
 * la__gla_seg_chunks (gla.h) chunks, fixed by the shape. GLA: every decay below is a
 * per-key diagonal (d_c, D_s: K values; D_s[x] = e^{sum_c G_L,x(c)}), the
 * products are chunk.c's (la__gla_chunk_bwd_sum_piece); simple GLA's sums
 * are written here with the same kernels.
 *
 * The rule (what the bits are). For segment s (chunks c = 1..m, d_c =
 * e^{G_L} of chunk c, D_s = e^{sum_c G_L(c)}: chunk sums added in float64,
 * one exponential):
 *   forward states   S[s+1] = D_s S[s] + L_s,  S[0] the initial state,
 *                    L_s = d_m (... (d_1 0 + U_1) ...) + U_m,
 *                    U_c = (k e^{G_L - G})ᵀ v (added by the product's beta);
 *   state gradients  E[s] = D_s E[s+1] + M_s, E[nseg] = d_final_state,
 *                    M_s = d_1 (... (d_m 0 + Mc_m) ...) + Mc_1,
 *                    Mc_c = scale (q e^{G})ᵀ dO,
 * E[s] the gradient of the state before segment s (E[0] is
 * d_initial_state). Inside a segment the chunk states run from S[s]
 * (R_1 = S[s], R_{c+1} = d_c R_c + U_c, the product's beta again) and
 * the state gradients from
 * E[s+1] (dS_m = E[s+1], dS_{c-1} = d_c dS_c + Mc_c); each chunk's dq, dk,
 * dv, dg are those of the unsplit backward's chunk from (R_c, dS_c)
 * (la__gla_chunk_bwd_piece). The gate gradient has no term that crosses
 * chunks other than through R_c and dS_c (chunk.c's identity: the state
 * term is e^{G_L} rowsum(dS ⊙ S0), the rest is chunk-local), so segments
 * meet only through S[s] and E[s+1]; dg_gamma is summed per segment in
 * float64, the segments then added in order 0, 1, ... Every thread count
 * (1 included) computes these same floats; against the unsplit backward
 * the bits differ (segment boundary states, dS updates without the gemm's
 * fused beta).
 *
 * Schedule: (1) the L_s, one task per (unit, segment), all in parallel;
 * (2) the S[s] chain, one task per (unit, block of 16 state rows: each
 * element's chain is on its own); (3) the reverse sweep as linear
 * attention's pipeline of lanes over positions i = nseg - 1 - s: lane 0
 * runs positions [0, k1) from d_final_state; lane p >= 1 sums M over
 * [j_p, k_p) (a sum costs SUM_COST of running the segment), waits for
 * E at j_p, adds its sums and runs [k_p, k_{p+1}) (split_lanes.h: every
 * state slot has one writer). One thread: (3) runs the positions in order
 * with the same formula. */
#include "../split_lanes.h"
#include "gla.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#define BWD_SEG_CHUNKS 16 /* the most chunks of a segment (la__gla_seg_chunks) */
/* cpu-split2: the backward splits only 1..3 (sequence, head) pairs. From 4
 * on, the unsplit backward's one task per pair already keeps 2-4 threads
 * busy, and the split cost +4-8% (simple GLA) and +17-22% (GLA) of one
 * thread's time at B*H = 4, T = 16384 and ran 4-13% slower on 2 threads
 * (bench/NOTES.md, cpu-bwdsplit); it only gains there from 8 threads. */
#define BWD_SPLIT_BELOW 4
/* The M sum (gates, one K V C product per chunk) against running a
 * segment (the state recomputation, the chunk backward's ~7 products of
 * that size); only the balance depends on it. */
#define SUM_COST 0.15
#define ROW_BLOCK 16

LA_HIDDEN int la__gla_split_bwd_over_time(const gla_job *j);
LA_HIDDEN size_t la__gla_split_bwd_bytes(const gla_job *j);
LA_HIDDEN la_status la__gla_run_split_bwd(const char *op, const gla_job *j);

typedef struct sb_bufs {
    double *G;       /* [C] */
    float *eG, *eLm; /* [C] */
    float *X;        /* [C,K]: k e^{G_L - G} or q e^{G} */
    float *Oc;       /* [C,V]: the chunk's dO rows */
    float *U;        /* [K,V]: Mc_c */
    float *R, *M;    /* [K,V]: running state (gradient), local sum */
    float *Sa, *Sb;  /* [K,V]: one thread, E before and after a segment */
    float *states;   /* [BWD_SEG_CHUNKS,K,V]: the chunk states of a segment */
    float *dk;       /* [K]: GLA, a chunk's per-key decay */
    double *GLs;     /* [K]: GLA, a segment's per-key gate sums */
    char *piece;     /* la__gla_chunk_bwd_piece's scratch */
} sb_bufs;

static size_t sb_layout(const gla_job *j, char *base, sb_bufs *b) {
    const size_t K = (size_t)j->K, V = (size_t)j->V, C = (size_t)j->C, KV = K * V;
    la__arena a = {.base = base};
    b->G = la__arena_take(&a, C, sizeof(double));
    b->eG = la__arena_take(&a, C, sizeof(float));
    b->eLm = la__arena_take(&a, C, sizeof(float));
    b->X = la__arena_take(&a, C * K, sizeof(float));
    b->Oc = la__arena_take(&a, C * V, sizeof(float));
    b->U = la__arena_take(&a, KV, sizeof(float));
    b->R = la__arena_take(&a, KV, sizeof(float));
    b->M = la__arena_take(&a, KV, sizeof(float));
    b->Sa = la__arena_take(&a, KV, sizeof(float));
    b->Sb = la__arena_take(&a, KV, sizeof(float));
    b->states = la__arena_take(&a, (size_t)BWD_SEG_CHUNKS * KV, sizeof(float));
    b->dk = la__arena_take(&a, K, sizeof(float));
    b->GLs = la__arena_take(&a, K, sizeof(double));
    const size_t pb = la__gla_chunk_bwd_piece_bytes(j);
    b->piece = pb ? la__arena_take(&a, pb, 1) : NULL;
    return pb ? la__arena_size(&a) : 0;
}

size_t la__gla_split_bwd_bytes(const gla_job *j) {
    sb_bufs b;
    return sb_layout(j, NULL, &b);
}

/* ---- per-segment work (the three ISA builds below) --------------------- */

/* Cumulative gates of tokens [r0, r0 + n) of head h from the chunk start and
 * their exponentials, as chunk.c's chunk_gates (scalar gates); returns G_L. */
GLA_INLINE double sb_gates(const gla_job *j, sb_bufs *b, int64_t r0, int64_t n, int64_t h) {
    const double gamma = j->g_gamma ? (double)j->g_gamma[h] : 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *gr = gla_gate_row(j, r0 + i, h);
        const double gi = (gr ? (double)gr[0] : 0.0) + gamma;
        b->G[i] = (i ? b->G[i - 1] : 0.0) + gi;
    }
    for (int64_t i = 0; i < n; i++) {
        b->eG[i] = la__exp_nonpos((float)b->G[i]);
        b->eLm[i] = la__exp_nonpos((float)(b->G[n - 1] - b->G[i]));
    }
    return b->G[n - 1];
}

/* S <- beta S + (k e^{G_L - G})ᵀ v of the chunk at row r0 (gates filled;
 * the product's beta). */
GLA_INLINE void sb_state_product(const gla_job *j, sb_bufs *b, int64_t r0, int64_t n, int64_t h,
                                 float beta, float *S) {
    const int64_t H = j->H, K = j->K, V = j->V;
    for (int64_t i = 0; i < n; i++) {
        const float *restrict k = j->k + (size_t)((r0 + i) * H + h) * (size_t)K;
        float *restrict X = b->X + i * K;
        const float e = b->eLm[i];
        for (int64_t x = 0; x < K; x++) X[x] = k[x] * e;
    }
    j->kr->gemm_tn(K, V, n, 1.0f, b->X, K, j->v + (size_t)(r0 * H + h) * (size_t)V, H * V, beta, S,
                   V);
}

/* Mc = scale (q e^G)ᵀ dO of the chunk at row r0 (gates filled), with the
 * operands gathered as la__gla_chunk_bwd_piece gathers them (the same
 * products in the same order: the same floats). */
GLA_INLINE void sb_grad_product(const gla_job *j, sb_bufs *b, int64_t r0, int64_t n, int64_t h) {
    const int64_t H = j->H, K = j->K, V = j->V;
    for (int64_t i = 0; i < n; i++) {
        const float *restrict q = j->q + (size_t)((r0 + i) * H + h) * (size_t)K;
        float *restrict X = b->X + i * K;
        const float e = b->eG[i];
        for (int64_t x = 0; x < K; x++) X[x] = q[x] * e;
        memcpy(b->Oc + i * V, j->d_o + (size_t)((r0 + i) * H + h) * (size_t)V,
               (size_t)V * sizeof(float));
    }
    j->kr->gemm_tn(K, V, n, j->scale, b->X, K, b->Oc, V, 0.0f, b->U, V);
}

/* y = d y + x over K V floats. */
GLA_INLINE void sb_axpy(float *restrict y, float d, const float *restrict x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = d * y[i] + x[i];
}

/* GLA: y = Diag(d) y + x, row by row (K rows of V). */
GLA_INLINE void sb_axpy_rows(float *restrict y, const float *restrict d, const float *restrict x,
                             int64_t K, int64_t V) {
    for (int64_t r = 0; r < K; r++) sb_axpy(y + r * V, d[r], x + r * V, V);
}

/* L_s and D_s of the segment [tb, te) of the sequence at `start`, head h. */
GLA_INLINE void sb_fwd_sum_body(const gla_job *j, int64_t start, int64_t h, int64_t tb, int64_t te,
                                float *L, float *D, char *scratch) {
    sb_bufs b;
    sb_layout(j, scratch, &b);
    const int64_t KV = j->K * j->V;
    memset(L, 0, (size_t)KV * sizeof(float));
    if (j->per_key) { /* GLA: chunk.c's state update, per-key decays */
        for (int64_t x = 0; x < j->K; x++) b.GLs[x] = 0.0;
        for (int64_t c0 = tb; c0 < te; c0 += j->C) {
            const int64_t n = te - c0 < j->C ? te - c0 : j->C;
            la__gla_chunk_bwd_sum_piece(j, b.piece, start + c0, n, h, 0, L, NULL, b.GLs);
        }
        for (int64_t x = 0; x < j->K; x++) D[x] = la__exp_nonpos((float)b.GLs[x]);
        return;
    }
    double Dsum = 0.0;
    for (int64_t c0 = tb; c0 < te; c0 += j->C) {
        const int64_t n = te - c0 < j->C ? te - c0 : j->C, r0 = start + c0;
        Dsum += sb_gates(j, &b, r0, n, h);
        sb_state_product(j, &b, r0, n, h, b.eG[n - 1], L);
    }
    *D = la__exp_nonpos((float)Dsum);
}

/* M_s of the segment [tb, te): the chunks in reverse. */
GLA_INLINE void sb_rev_sum_body(const gla_job *j, int64_t start, int64_t h, int64_t tb, int64_t te,
                                float *M, char *scratch) {
    sb_bufs b;
    sb_layout(j, scratch, &b);
    const int64_t KV = j->K * j->V, C = j->C;
    memset(M, 0, (size_t)KV * sizeof(float));
    for (int64_t c0 = tb + (te - tb - 1) / C * C; c0 >= tb; c0 -= C) {
        const int64_t n = te - c0 < C ? te - c0 : C, r0 = start + c0;
        if (j->per_key) {
            la__gla_chunk_bwd_sum_piece(j, b.piece, r0, n, h, 1, b.U, b.dk, NULL);
            sb_axpy_rows(M, b.dk, b.U, j->K, j->V);
            continue;
        }
        sb_gates(j, &b, r0, n, h);
        sb_grad_product(j, &b, r0, n, h);
        sb_axpy(M, b.eG[n - 1], b.U, KV);
    }
}

/* The backward of the segment [tb, te) from S = S[s] and Ein = E[s+1]:
 * its gradient rows, *gsum = its dg_gamma part, Eout = D Ein + M_s. */
GLA_INLINE void sb_run_body(const gla_job *j, int64_t start, int64_t h, int64_t tb, int64_t te,
                            const float *S, const float *D, const float *Ein, float *Eout,
                            double *gsum, char *scratch) {
    sb_bufs b;
    sb_layout(j, scratch, &b);
    const int64_t KV = j->K * j->V, C = j->C, m = (te - tb + C - 1) / C;
    /* the chunk states R_c from S */
    memcpy(b.states, S, (size_t)KV * sizeof(float));
    for (int64_t c = 0; c + 1 < m; c++) {
        const int64_t r0 = start + tb + c * C;
        float *Rn = b.states + (size_t)(c + 1) * (size_t)KV;
        memcpy(Rn, Rn - KV, (size_t)KV * sizeof(float));
        if (j->per_key) {
            la__gla_chunk_bwd_sum_piece(j, b.piece, r0, C, h, 0, Rn, NULL, b.GLs);
            continue;
        }
        sb_gates(j, &b, r0, C, h);
        sb_state_product(j, &b, r0, C, h, b.eG[C - 1], Rn);
    }
    /* the chunks in reverse with the running state gradient */
    memcpy(b.R, Ein, (size_t)KV * sizeof(float));
    memset(b.M, 0, (size_t)KV * sizeof(float));
    double gs = 0.0;
    for (int64_t c = m - 1; c >= 0; c--) {
        const int64_t c0 = tb + c * C, n = te - c0 < C ? te - c0 : C;
        float d;
        la__gla_chunk_bwd_piece(j, b.piece, b.states + (size_t)c * (size_t)KV, b.R, start + c0, n,
                                h, c0 > 0 ? C : 0, &gs, b.U, j->per_key ? b.dk : &d);
        if (j->per_key) {
            if (c > 0) sb_axpy_rows(b.R, b.dk, b.U, j->K, j->V);
            sb_axpy_rows(b.M, b.dk, b.U, j->K, j->V);
        } else if (c > 0) { /* both in one pass over Mc */
            float *restrict R = b.R, *restrict M = b.M;
            const float *restrict U = b.U;
            for (int64_t x = 0; x < KV; x++) {
                R[x] = d * R[x] + U[x];
                M[x] = d * M[x] + U[x];
            }
        } else {
            sb_axpy(b.M, d, b.U, KV);
        }
    }
    for (int64_t x = 0; x < KV; x++) Eout[x] = D[j->per_key ? x / j->V : 0] * Ein[x] + b.M[x];
    *gsum = gs;
}

/* Built for the baseline ISA, AVX2 and AVX-512 (elementwise operations in a
 * fixed order, no contraction: the same bits; the kernels dispatch on their
 * own). */
LA_ISA_BUILDS(static, sb_fwd_sum, sb_fwd_sum_body,
              (const gla_job *j, int64_t st, int64_t h, int64_t tb, int64_t te, float *L, float *D,
               char *s),
              (j, st, h, tb, te, L, D, s))
LA_ISA_BUILDS(static, sb_rev_sum, sb_rev_sum_body,
              (const gla_job *j, int64_t st, int64_t h, int64_t tb, int64_t te, float *M, char *s),
              (j, st, h, tb, te, M, s))
LA_ISA_BUILDS(static, sb_run, sb_run_body,
              (const gla_job *j, int64_t st, int64_t h, int64_t tb, int64_t te, const float *S,
               const float *D, const float *Ein, float *Eout, double *gs, char *s),
              (j, st, h, tb, te, S, D, Ein, Eout, gs, s))

/* ---- the passes ---------------------------------------------------------- */

typedef struct sb_arg {
    const gla_job *j;
    int64_t seg_len, nseg_max, units;
    float *S;   /* [units, nseg_max + 1, K, V]: S[s] */
    float *L;   /* [units, nseg_max, K, V]: L_s */
    float *D;   /* [units, nseg_max, 1 or K]: D_s */
    double *gp; /* [units, nseg_max]: dg_gamma part of segment s */
} sb_arg;

static size_t kv(const gla_job *j) { return (size_t)j->K * (size_t)j->V; }
static float *slot(float *W, const sb_arg *a, int64_t unit, int64_t per, int64_t i) {
    return W + ((size_t)unit * (size_t)per + (size_t)i) * kv(a->j);
}
/* D_s of unit (K floats for GLA, one for simple GLA). */
static float *dec(const sb_arg *a, int64_t unit, int64_t s) {
    const size_t gw = a->j->per_key ? (size_t)a->j->K : 1;
    return a->D + ((size_t)unit * (size_t)a->nseg_max + (size_t)s) * gw;
}
static int64_t nseg_of(const sb_arg *a, int64_t unit, int64_t *start, int64_t *len) {
    la__seq_bounds(a->j->d, unit / a->j->H, start, len);
    return (*len + a->seg_len - 1) / a->seg_len;
}
static void seg_range(const sb_arg *a, int64_t len, int64_t s, int64_t *tb, int64_t *te) {
    *tb = s * a->seg_len;
    *te = len - *tb < a->seg_len ? len : *tb + a->seg_len;
}

/* (1) task (unit, segment): L_s, D_s. */
static void fwd_sum_task(void *arg, int64_t task, int tid) {
    const sb_arg *a = arg;
    const gla_job *j = a->j;
    const int64_t unit = task / a->nseg_max, s = task % a->nseg_max;
    int64_t start, len, tb, te;
    if (s >= nseg_of(a, unit, &start, &len)) return;
    seg_range(a, len, s, &tb, &te);
    sb_fwd_sum(j, start, unit % j->H, tb, te, slot(a->L, a, unit, a->nseg_max, s), dec(a, unit, s),
               la__scratch(j->ctx, tid));
}

/* (2) task (unit, block of ROW_BLOCK rows of the state): the S[s] chain. */
static void chain_task(void *arg, int64_t task, int tid) {
    (void)tid;
    const sb_arg *a = arg;
    const gla_job *j = a->j;
    const int64_t nb = (j->K + ROW_BLOCK - 1) / ROW_BLOCK, unit = task / nb;
    const int64_t x0 = task % nb * ROW_BLOCK, x1 = j->K - x0 < ROW_BLOCK ? j->K : x0 + ROW_BLOCK;
    const size_t o = (size_t)x0 * (size_t)j->V, n = (size_t)(x1 - x0) * (size_t)j->V;
    int64_t start, len;
    const int64_t nseg = nseg_of(a, unit, &start, &len);
    float *S0 = slot(a->S, a, unit, a->nseg_max + 1, 0) + o;
    if (j->s0)
        memcpy(S0, j->s0 + (size_t)unit * kv(j) + o, n * sizeof(float));
    else
        memset(S0, 0, n * sizeof(float));
    for (int64_t s = 0; s + 1 < nseg; s++) {
        const float *Si = slot(a->S, a, unit, a->nseg_max + 1, s) + o;
        const float *Ls = slot(a->L, a, unit, a->nseg_max, s) + o;
        float *So = slot(a->S, a, unit, a->nseg_max + 1, s + 1) + o;
        const float *D = dec(a, unit, s);
        for (size_t x = 0; x < n; x++)
            So[x] = D[j->per_key ? x0 + (int64_t)x / j->V : 0] * Si[x] + Ls[x];
    }
}

/* ---- (3): the reverse sweep's callbacks (split_lanes.h); position i is
 * segment nseg - 1 - i, its state E[nseg - i] ----------------------------- */

static int64_t rev_count(void *arg, int64_t unit) {
    int64_t start, len;
    return nseg_of(arg, unit, &start, &len);
}
static void rev_init(void *arg, int64_t unit, float *E) {
    const gla_job *j = ((const sb_arg *)arg)->j;
    if (j->d_sT)
        memcpy(E, j->d_sT + (size_t)unit * kv(j), kv(j) * sizeof(float));
    else
        memset(E, 0, kv(j) * sizeof(float));
}
static void rev_final(void *arg, int64_t unit, const float *E) {
    const gla_job *j = ((const sb_arg *)arg)->j;
    if (j->ds0) memcpy(j->ds0 + (size_t)unit * kv(j), E, kv(j) * sizeof(float));
}
static void rev_sum(void *arg, int64_t unit, int64_t i, float *M, int tid) {
    const sb_arg *a = arg;
    const gla_job *j = a->j;
    int64_t start, len, tb, te;
    const int64_t nseg = nseg_of(a, unit, &start, &len);
    seg_range(a, len, nseg - 1 - i, &tb, &te);
    sb_rev_sum(j, start, unit % j->H, tb, te, M, la__scratch(j->ctx, tid));
}
/* E before the segment = D E after it + M */
static void rev_add(void *arg, int64_t unit, int64_t i, const float *Ein, const float *Ms,
                    float *Eo) {
    const sb_arg *a = arg;
    const gla_job *j = a->j;
    int64_t start, len;
    const float *D = dec(a, unit, nseg_of(a, unit, &start, &len) - 1 - i);
    const size_t n = kv(j);
    for (size_t x = 0; x < n; x++) Eo[x] = D[j->per_key ? (int64_t)x / j->V : 0] * Ein[x] + Ms[x];
}
static void rev_run(void *arg, int64_t unit, int64_t i, const float *Ein, float *Eout, int tid) {
    const sb_arg *a = arg;
    const gla_job *j = a->j;
    int64_t start, len, tb, te;
    const int64_t s = nseg_of(a, unit, &start, &len) - 1 - i;
    seg_range(a, len, s, &tb, &te);
    sb_run(j, start, unit % j->H, tb, te, slot(a->S, a, unit, a->nseg_max + 1, s), dec(a, unit, s),
           Ein, Eout, &a->gp[unit * a->nseg_max + s], la__scratch(j->ctx, tid));
}
static void rev_bufs(void *arg, int tid, float **Sa, float **Sb) {
    const sb_arg *a = arg;
    sb_bufs b;
    sb_layout(a->j, la__scratch(a->j->ctx, tid), &b);
    *Sa = b.Sa;
    *Sb = b.Sb;
}

/* S, L, D, gp from the arena (base NULL: only counted). */
static void sb_take(sb_arg *a, la__arena *ar) {
    const size_t slots = (size_t)a->units * (size_t)(a->nseg_max + 1);
    a->S = la__arena_take(ar, slots, kv(a->j) * sizeof(float));
    a->L = la__arena_take(ar, slots, kv(a->j) * sizeof(float));
    a->D = la__arena_take(ar, slots, (a->j->per_key ? (size_t)a->j->K : 1) * sizeof(float));
    a->gp = la__arena_take(ar, slots, sizeof(double));
}

int la__gla_split_bwd_over_time(const gla_job *j) {
    return la__num_seqs(j->d) * j->H < BWD_SPLIT_BELOW && la__gla_seg_chunks(j) > 0;
}

la_status la__gla_run_split_bwd(const char *op, const gla_job *j) {
    sb_arg a;
    memset(&a, 0, sizeof a);
    a.j = j;
    a.units = la__num_seqs(j->d) * j->H; /* < BWD_SPLIT_BELOW */
    a.seg_len = la__gla_seg_chunks(j) * j->C;
    a.nseg_max = (la__max_seq_len(j->d) + a.seg_len - 1) / a.seg_len;
    const size_t n = kv(j);
    la__arena ar = {NULL, 0, 0};
    sb_take(&a, &ar);
    if (ar.overflow)
        return la__error(LA_ERR_OUT_OF_MEMORY,
                         "%s: the segment states of %" PRId64 " x %" PRId64
                         " segments overflow size_t (one sequence split over time)",
                         op, a.units, a.nseg_max);
    la__lanes L;
    char *mem;
    la_status st = la__lanes_open(&L, j->ctx, op, la__gla_split_bwd_bytes(j), a.units, a.nseg_max,
                                  n, 0, la__arena_size(&ar), &mem);
    if (st != LA_OK) return st;
    ar = (la__arena){mem, 0, 0};
    sb_take(&a, &ar);
    L.Ws = a.L; /* L_s is read by (2) only, before the lanes' sums */
    la__parallel_for(j->ctx, a.units * a.nseg_max, fwd_sum_task, &a);
    la__parallel_for(j->ctx, a.units * ((j->K + ROW_BLOCK - 1) / ROW_BLOCK), chain_task, &a);
    const la__lane_ops ops = {.arg = &a,
                              .count = rev_count,
                              .init = rev_init,
                              .final = rev_final,
                              .sum = rev_sum,
                              .add = rev_add,
                              .run = rev_run,
                              .serial_bufs = rev_bufs};
    la__lanes_plan_all(&L, &ops, SUM_COST);
    la__lanes_run(&L, &ops);
    if (j->dgamma_part)
        for (int64_t unit = 0; unit < a.units; unit++) {
            int64_t start, len;
            const int64_t nseg = nseg_of(&a, unit, &start, &len);
            double s = 0.0;
            for (int64_t i = 0; i < nseg; i++) s += a.gp[unit * a.nseg_max + i];
            j->dgamma_part[unit] = s;
        }
    return LA_OK;
}
