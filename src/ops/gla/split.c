/* The chunk forward of simple GLA / RetNet (one scalar decay per token and
 * head) with one sequence split over time, for calls with few (sequence,
 * head) pairs (issue 12). The scheme is that of kernel linear attention
 * (src/ops/linear_attn/split.c): segments of la__gla_seg_chunks (gla.h) chunks, fixed by
 * the shape, and a pipeline of lanes.
 *
 * A segment s (chunks c = 1..m) with start state S[s] runs the chunks as the
 * one-thread form does: gates G_i summed from the chunk start in float64
 * (chunk.c's chunk_gates), d_c = e^{G_L} of chunk c, U_c = (k e^{G_L - G})ᵀ v,
 * R_c = d_c R_{c-1} + U_c from R_0 = S[s] (the outputs read R_{c-1}). Its
 * local sum L = d_m (... (d_1 0 + U_1) ...) + U_m and its decay
 * D = e^{sum_c G_L(c)} (the chunk sums added in float64, one exponential)
 * give the next segment's start state, always
 *   S[s+1] = D S[s] + L,
 * whether the segment's forward made L as it went or a sum task made it
 * (the same floats, the same products in the same order), so every thread
 * count and schedule gives the same bits (1 thread included: it runs the
 * segments in order with the same formula). Against the unsplit form the
 * bits differ at the segment boundaries (S[s+1] instead of R_m; U added
 * without the gemm's fused beta), not the gate sums.
 *
 * Schedule (as linear_attn/split.c): lane 0 runs the segments [0, k1) from
 * the initial state; lane p >= 1 sums [j_p, k_p), waits for S[j_p], adds its
 * sums, runs [k_p, k_{p+1}). Tasks are handed out in index order, so a
 * waiting lane's producer is always already running. */
#include "gla.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define GLA_SPLIT_BELOW 8
/* A segment's local sum against its forward (the state update against the
 * whole chunk: K V C of K V C (2 + ...) products); only the balance depends
 * on it. */
#define SUM_COST 0.4
#define SHARE_BYTES ((size_t)24 << 20)
/* What a forward saves with a summed segment's products: r less the
 * reading of them (measured 0.14 of 0.73 ms at D = 128 without reusing L). */
#define SHARE_SAVE 0.3

LA_HIDDEN int la__gla_split_over_time(const gla_job *j);
LA_HIDDEN size_t la__gla_split_bytes(const gla_job *j);
LA_HIDDEN la_status la__gla_run_split(const char *op, const gla_job *j);

/* ---- per-chunk work (simple GLA) --------------------------------------- */

typedef struct seg_bufs {
    double *G;        /* [C] */
    float *eG, *eLm;  /* [C] */
    float *Qs, *Ks;   /* [C,K] */
    float *A;         /* [C,C] */
    float *U, *R, *L; /* [K,V] */
    float *Sa, *Sb;   /* [K,V] one thread: the states before and after a segment */
} seg_bufs;

static size_t seg_layout(const gla_job *j, char *base, seg_bufs *b) {
    const size_t K = (size_t)j->K, V = (size_t)j->V, C = (size_t)j->C;
    la__arena a = {.base = base};
    b->G = la__arena_take(&a, C, sizeof(double));
    b->eG = la__arena_take(&a, C, sizeof(float));
    b->eLm = la__arena_take(&a, C, sizeof(float));
    b->Qs = la__arena_take(&a, C * K, sizeof(float));
    b->Ks = la__arena_take(&a, C * K, sizeof(float));
    b->A = la__arena_take(&a, C * C, sizeof(float));
    b->U = la__arena_take(&a, K * V, sizeof(float));
    b->R = la__arena_take(&a, K * V, sizeof(float));
    b->L = la__arena_take(&a, K * V, sizeof(float));
    b->Sa = la__arena_take(&a, K * V, sizeof(float));
    b->Sb = la__arena_take(&a, K * V, sizeof(float));
    return la__arena_size(&a);
}

size_t la__gla_split_bytes(const gla_job *j) {
    seg_bufs b;
    return seg_layout(j, NULL, &b);
}

/* Cumulative gates of tokens [r0, r0 + n) of head h from the chunk start and
 * their exponentials, as chunk.c's chunk_gates (scalar gates); returns G_L. */
GLA_INLINE double seg_gates(const gla_job *j, seg_bufs *b, int64_t r0, int64_t n, int64_t h) {
    const double gamma = j->g_gamma ? (double)j->g_gamma[h] : 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *gr = gla_gate_row(j, r0 + i, h);
        const double gi = (gr ? (double)gr[0] : 0.0) + gamma;
        b->G[i] = (i ? b->G[i - 1] : 0.0) + gi;
    }
    const double GL = b->G[n - 1];
    for (int64_t i = 0; i < n; i++) {
        b->eG[i] = la__exp_nonpos((float)b->G[i]);
        b->eLm[i] = la__exp_nonpos((float)(GL - b->G[i]));
    }
    return GL;
}

/* U = (k e^{G_L - G})ᵀ v of the chunk at row r0 (gates filled; k and v
 * read in place: the kernels pack their operands, the bits do not depend
 * on the strides), then L = d L + U. */
GLA_INLINE void seg_local(const gla_job *j, seg_bufs *b, int64_t r0, int64_t n, int64_t h,
                          float *Uc, int fuse_R) {
    const int64_t H = j->H, K = j->K, V = j->V;
    b->U = Uc ? Uc : b->U;
    for (int64_t i = 0; i < n; i++) {
        const float *restrict k = j->k + (size_t)((r0 + i) * H + h) * (size_t)K;
        float *restrict Ks = b->Ks + i * K;
        const float e = b->eLm[i];
        for (int64_t x = 0; x < K; x++) Ks[x] = k[x] * e;
    }
    j->kr->gemm_tn(K, V, n, 1.0f, b->Ks, K, j->v + (size_t)(r0 * H + h) * (size_t)V, H * V, 0.0f,
                   b->U, V);
    const float d = b->eG[n - 1];
    float *restrict Lr = b->L, *restrict Rr = b->R;
    const float *restrict U = b->U;
    if (fuse_R) /* the forward's running state too, in the same pass over U */
        for (int64_t x = 0; x < K * V; x++) {
            Lr[x] = d * Lr[x] + U[x];
            Rr[x] = d * Rr[x] + U[x];
        }
    else
        for (int64_t x = 0; x < K * V; x++) Lr[x] = d * Lr[x] + U[x];
}

/* The local sum of the segment [tb, te) of unit (n, h): L and D; the
 * chunks' U into Uc (chunk by chunk, K V floats each) unless NULL. */
GLA_INLINE void seg_sum_body(const gla_job *j, int64_t start, int64_t h, int64_t tb, int64_t te,
                             float *Lout, float *Dout, float *Uc, char *scratch) {
    seg_bufs b;
    seg_layout(j, scratch, &b);
    const int64_t KV = j->K * j->V;
    b.L = Lout;
    memset(b.L, 0, (size_t)KV * sizeof(float));
    double Dsum = 0.0;
    for (int64_t c0 = tb; c0 < te; c0 += j->C) {
        const int64_t n = te - c0 < j->C ? te - c0 : j->C, r0 = start + c0;
        Dsum += seg_gates(j, &b, r0, n, h);
        seg_local(j, &b, r0, n, h, Uc ? Uc + (c0 - tb) / j->C * KV : NULL, 0);
    }
    *Dout = la__exp_nonpos((float)Dsum);
}

/* A segment a sum task summed: its chunks' U, its L and D (the floats the
 * forward would make). */
typedef struct seg_sum_out {
    const float *U, *L;
    float D;
} seg_sum_out;

/* The forward of the segment [tb, te) from Sin: the output rows, and
 * Sout = D Sin + L (L, D: the segment's local sum, as seg_sum_body, or
 * those of ss when not NULL). Sin and Sout may be the scratch's Sa / Sb,
 * not its other buffers. */
GLA_INLINE void seg_fwd_body(const gla_job *j, int64_t start, int64_t h, int64_t tb, int64_t te,
                             const float *Sin, float *Sout, const seg_sum_out *ss, char *scratch) {
    seg_bufs b;
    seg_layout(j, scratch, &b);
    const int64_t H = j->H, K = j->K, V = j->V, C = j->C, KV = K * V;
    memset(b.L, 0, (size_t)KV * sizeof(float));
    memcpy(b.R, Sin, (size_t)KV * sizeof(float));
    double Dsum = 0.0;
    for (int64_t c0 = tb; c0 < te; c0 += C) {
        const int64_t n = te - c0 < C ? te - c0 : C, r0 = start + c0;
        Dsum += seg_gates(j, &b, r0, n, h);
        const size_t rq = (size_t)(r0 * H + h) * (size_t)K, rv = (size_t)(r0 * H + h) * (size_t)V;
        const float *q = j->q + rq, *k = j->k + rq, *v = j->v + rv;
        float *o = j->o + rv;
        /* inter-chunk: o = scale (q e^{G_i}) R (rows read and written in place) */
        for (int64_t i = 0; i < n; i++) {
            const float *restrict qi = q + i * H * K;
            float *restrict Qs = b.Qs + i * K;
            const float e = b.eG[i];
            for (int64_t x = 0; x < K; x++) Qs[x] = qi[x] * e;
        }
        j->kr->gemm_nn(n, V, K, j->scale, b.Qs, K, b.R, V, 0.0f, o, H * V);
        /* intra-chunk: o += scale A v, A_ij = q_i k_j e^{G_i - G_j} (j <= i) */
        j->kr->gemm_nt_tril(n, K, 0, 1.0f, q, H * K, k, H * K, 0.0f, b.A, C);
        for (int64_t i = 0; i < n; i++) {
            float *Ai = b.A + i * C;
            for (int64_t jj = 0; jj <= i; jj++) Ai[jj] *= la__exp_nonpos((float)(b.G[i] - b.G[jj]));
        }
        j->kr->gemm_nn_lower(n, V, n, j->scale, b.A, C, v, H * V, 1.0f, o, H * V);
        if (!ss) {
            seg_local(j, &b, r0, n, h, NULL, c0 + C < te);
        } else if (c0 + C < te) {
            b.U = (float *)ss->U + (c0 - tb) / C * KV;
            const float d = b.eG[n - 1];
            float *restrict R = b.R;
            const float *restrict U = b.U;
            for (int64_t x = 0; x < KV; x++) R[x] = d * R[x] + U[x];
        }
    }
    const float D = ss ? ss->D : la__exp_nonpos((float)Dsum);
    const float *L = ss ? ss->L : b.L;
    for (int64_t x = 0; x < KV; x++) Sout[x] = D * Sin[x] + L[x];
}

/* Built for the baseline ISA, AVX2 and AVX-512 (elementwise operations in
 * a fixed order, no contraction: the same bits; the kernels dispatch on
 * their own). */
static void seg_sum_portable(const gla_job *j, int64_t st, int64_t h, int64_t tb, int64_t te,
                             float *L, float *D, float *U, char *s) {
    seg_sum_body(j, st, h, tb, te, L, D, U, s);
}
static void seg_fwd_portable(const gla_job *j, int64_t st, int64_t h, int64_t tb, int64_t te,
                             const float *Sin, float *Sout, const seg_sum_out *U, char *s) {
    seg_fwd_body(j, st, h, tb, te, Sin, Sout, U, s);
}
#if defined(__GNUC__) && defined(__x86_64__)
#define GLA_SPLIT_ISA 1
__attribute__((target("avx2"))) static void seg_sum_avx2(const gla_job *j, int64_t st, int64_t h,
                                                         int64_t tb, int64_t te, float *L, float *D,
                                                         float *U, char *s) {
    seg_sum_body(j, st, h, tb, te, L, D, U, s);
}
__attribute__((target("avx2"))) static void seg_fwd_avx2(const gla_job *j, int64_t st, int64_t h,
                                                         int64_t tb, int64_t te, const float *Sin,
                                                         float *Sout, const seg_sum_out *U,
                                                         char *s) {
    seg_fwd_body(j, st, h, tb, te, Sin, Sout, U, s);
}
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2"))) static void
seg_sum_avx512(const gla_job *j, int64_t st, int64_t h, int64_t tb, int64_t te, float *L, float *D,
               float *U, char *s) {
    seg_sum_body(j, st, h, tb, te, L, D, U, s);
}
__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2"))) static void
seg_fwd_avx512(const gla_job *j, int64_t st, int64_t h, int64_t tb, int64_t te, const float *Sin,
               float *Sout, const seg_sum_out *U, char *s) {
    seg_fwd_body(j, st, h, tb, te, Sin, Sout, U, s);
}
#endif

static void seg_sum(const gla_job *j, int64_t st, int64_t h, int64_t tb, int64_t te, float *L,
                    float *D, float *U, char *s) {
#ifdef GLA_SPLIT_ISA
    const la_isa isa = la_isa_active();
    if (isa == LA_ISA_AVX512)
        seg_sum_avx512(j, st, h, tb, te, L, D, U, s);
    else if (isa == LA_ISA_AVX2)
        seg_sum_avx2(j, st, h, tb, te, L, D, U, s);
    else
#endif
        seg_sum_portable(j, st, h, tb, te, L, D, U, s);
}

static void seg_fwd(const gla_job *j, int64_t st, int64_t h, int64_t tb, int64_t te,
                    const float *Sin, float *Sout, const seg_sum_out *U, char *s) {
#ifdef GLA_SPLIT_ISA
    const la_isa isa = la_isa_active();
    if (isa == LA_ISA_AVX512)
        seg_fwd_avx512(j, st, h, tb, te, Sin, Sout, U, s);
    else if (isa == LA_ISA_AVX2)
        seg_fwd_avx2(j, st, h, tb, te, Sin, Sout, U, s);
    else
#endif
        seg_fwd_portable(j, st, h, tb, te, Sin, Sout, U, s);
}

/* ---- the plan (as linear_attn/split.c) --------------------------------- */

typedef struct plan {
    int lanes;
    int64_t *k; /* [lanes + 1]: lane p runs the segments [k[p], k[p+1]) */
    int64_t *j; /* [lanes]: lane p >= 1 sums [j[p], k[p]) */
} plan;

/* Lanes that fit a finishing time F (segment forwards as the unit); returns
 * the number of lanes needed to reach n (or max_lanes + 1). Lane p reuses
 * the products U of the first ms segments of [j_{p+1}, k_{p+1}) that lane
 * p + 1 summed, running them at 1 - SHARE_SAVE of a forward. Lane p (start t) that cannot
 * finish the rest takes the (k, j) with the earliest next start relative
 * to k: start = max(t + j - k_p, r (k - j)) (S[j] published, sums done),
 * its best j the crossing of the two, within lane p's finishing time. */
static double lane_finish(double t, int64_t kp, int64_t k, int64_t j, int64_t ms) {
    const int64_t sh = k - j < ms ? k - j : ms;
    return t + (double)(j - kp) + (1 - SHARE_SAVE) * (double)sh + (double)(k - j - sh);
}

static int plan_try(int64_t n, int max_lanes, double r, int64_t ms, double F, int64_t *k,
                    int64_t *j) {
    double t = 0;
    k[0] = 0;
    j[0] = 0;
    for (int p = 0; p < max_lanes; p++) {
        const int64_t kp = k[p];
        if (t + (double)(n - kp) <= F + 1e-9) {
            k[p + 1] = n;
            return p + 1;
        }
        if (p + 1 == max_lanes) break;
        double best = INFINITY, bstart = 0;
        int64_t bk = -1, bj = -1;
        for (int64_t kk = kp + 1; kk < n; kk++) {
            /* the largest j that lets lane p finish by F (non-decreasing in j) */
            if (lane_finish(t, kp, kk, kp, ms) > F + 1e-9) break;
            int64_t jlo = kp, jhi = kk;
            while (jlo < jhi) {
                const int64_t mid = jlo + (jhi - jlo + 1) / 2;
                if (lane_finish(t, kp, kk, mid, ms) <= F + 1e-9)
                    jlo = mid;
                else
                    jhi = mid - 1;
            }
            const int64_t jmax = jlo;
            const double jc = (r * (double)kk + (double)kp - t) / (1 + r);
            const int64_t cand[2] = {(int64_t)floor(jc), (int64_t)ceil(jc)};
            for (int c = 0; c < 2; c++) {
                int64_t jj = cand[c] < kp ? kp : cand[c];
                if (jj > jmax) jj = jmax;
                const double pub = t + (double)(jj - kp), sum = r * (double)(kk - jj);
                const double start = pub > sum ? pub : sum;
                if (start - (double)kk < best)
                    best = start - (double)kk, bk = kk, bj = jj, bstart = start;
            }
        }
        if (bk < 0) break;
        k[p + 1] = bk;
        j[p + 1] = bj;
        t = bstart;
    }
    return max_lanes + 1;
}

static void make_plan(int64_t n, int max_lanes, double r, int64_t ms, plan *pl) {
    pl->k[0] = 0;
    pl->k[1] = n;
    pl->lanes = 1;
    if (max_lanes > n) max_lanes = (int)n;
    if (max_lanes < 2) return;
    double lo = 0.5 * (double)n / max_lanes, hi = (double)n;
    for (int it = 0; it < 40; it++) {
        const double mid = 0.5 * (lo + hi);
        if (plan_try(n, max_lanes, r, ms, mid, pl->k, pl->j) <= max_lanes)
            hi = mid;
        else
            lo = mid;
    }
    pl->lanes = plan_try(n, max_lanes, r, ms, hi, pl->k, pl->j);
    if (pl->lanes > max_lanes) { /* cannot happen (F = n fits one lane) */
        pl->lanes = 1;
        pl->k[0] = 0;
        pl->k[1] = n;
    }
}

/* ---- the pass ----------------------------------------------------------- */

typedef struct split_arg {
    const gla_job *j;
    int64_t seg_len, nseg_max, units;
    int max_lanes;
    float *W;          /* [units, nseg_max + 1, K, V]: S[i] */
    float *Ws;         /* [units, nseg_max, K, V]: local sums */
    float *Ds;         /* [units, nseg_max]: segment decays */
    atomic_int *ready; /* [units, nseg_max + 1]: S[i] published */
    atomic_int *sdone; /* [units, nseg_max]: segment i summed (its U cached) */
    float *Ucache;     /* the summed segments' chunk products U, or NULL */
    int64_t *Uoff;     /* [units, nseg_max]: segment i's U in Ucache (floats), or -1 */
    plan *plans;       /* [units] */
} split_arg;

static size_t kv(const gla_job *j) { return (size_t)j->K * (size_t)j->V; }
static float *state_slot(const split_arg *a, int64_t unit, int64_t i) {
    return a->W + ((size_t)unit * (size_t)(a->nseg_max + 1) + (size_t)i) * kv(a->j);
}
static float *sum_slot(const split_arg *a, int64_t unit, int64_t i) {
    return a->Ws + ((size_t)unit * (size_t)a->nseg_max + (size_t)i) * kv(a->j);
}
static float *ucache(const split_arg *a, int64_t unit, int64_t i) {
    if (!a->Ucache) return NULL;
    const int64_t off = a->Uoff[unit * a->nseg_max + i];
    return off < 0 ? NULL : a->Ucache + off;
}
static void publish(atomic_int *flag) { atomic_store_explicit(flag, 1, memory_order_release); }
static void wait_for(atomic_int *flag) {
    while (!atomic_load_explicit(flag, memory_order_acquire)) sched_yield();
}
static int64_t segments(const split_arg *a, int64_t len) {
    return (len + a->seg_len - 1) / a->seg_len;
}
static void seg_range(const split_arg *a, int64_t len, int64_t i, int64_t *tb, int64_t *te) {
    *tb = i * a->seg_len;
    *te = len - *tb < a->seg_len ? len : *tb + a->seg_len;
}
static void load_init(const gla_job *j, int64_t unit, float *S) {
    if (j->s0)
        memcpy(S, j->s0 + (size_t)unit * kv(j), kv(j) * sizeof(float));
    else
        memset(S, 0, kv(j) * sizeof(float));
}
static void store_final(const gla_job *j, int64_t unit, const float *S) {
    if (j->sT) memcpy(j->sT + (size_t)unit * kv(j), S, kv(j) * sizeof(float));
}

/* Task (unit, lane p). Every slot has one writer: lane p writes S[i + 1]
 * for the segments i it runs and the sums of [j_p, k_p); the states it
 * derives from S[j_p] stay in its scratch (Sa, Sb). */
static void lane_task(void *arg, int64_t task, int tid) {
    const split_arg *a = arg;
    const gla_job *j = a->j;
    const int64_t unit = task / a->max_lanes, n = unit / j->H, h = unit % j->H;
    const int p = (int)(task % a->max_lanes);
    const plan *pl = &a->plans[unit];
    if (p >= pl->lanes) return;
    atomic_int *ready = a->ready + (size_t)unit * (size_t)(a->nseg_max + 1);
    float *Ds = a->Ds + (size_t)unit * (size_t)a->nseg_max;
    char *scratch = la__scratch(j->ctx, tid);
    seg_bufs b;
    seg_layout(j, scratch, &b);
    int64_t start, len, tb, te;
    la__seq_bounds(j->d, n, &start, &len);
    const int64_t nseg = segments(a, len), k0 = pl->k[p], k1 = pl->k[p + 1];
    const float *Sin = state_slot(a, unit, 0);
    if (p == 0) {
        load_init(j, unit, state_slot(a, unit, 0));
        publish(&ready[0]);
    } else {
        const int64_t jp = pl->j[p];
        for (int64_t i = jp; i < k0; i++) {
            seg_range(a, len, i, &tb, &te);
            seg_sum(j, start, h, tb, te, sum_slot(a, unit, i), &Ds[i], ucache(a, unit, i), scratch);
            publish(&a->sdone[unit * a->nseg_max + i]);
        }
        wait_for(&ready[jp]);
        const size_t m = kv(j);
        Sin = state_slot(a, unit, jp);
        float *S = b.Sa, *T = b.Sb;
        for (int64_t i = jp; i < k0; i++) {
            const float *Ss = sum_slot(a, unit, i);
            const float D = Ds[i];
            for (size_t x = 0; x < m; x++) S[x] = D * Sin[x] + Ss[x];
            Sin = S;
            S = T;
            T = (float *)Sin;
        }
    }
    for (int64_t i = k0; i < k1; i++) {
        seg_range(a, len, i, &tb, &te);
        /* lane p + 1 summed this segment with its products kept */
        seg_sum_out ss = {.U = ucache(a, unit, i)};
        if (ss.U) {
            wait_for(&a->sdone[unit * a->nseg_max + i]);
            ss.L = sum_slot(a, unit, i);
            ss.D = Ds[i];
        }
        seg_fwd(j, start, h, tb, te, i == k0 ? Sin : state_slot(a, unit, i),
                state_slot(a, unit, i + 1), ss.U ? &ss : NULL, scratch);
        publish(&ready[i + 1]);
    }
    if (k1 == nseg) store_final(j, unit, state_slot(a, unit, nseg));
}

/* One thread: every unit's segments in order (the same formula). */
static void serial_task(void *arg, int64_t unit, int tid) {
    const split_arg *a = arg;
    const gla_job *j = a->j;
    char *scratch = la__scratch(j->ctx, tid);
    seg_bufs b;
    seg_layout(j, scratch, &b);
    float *Sin = b.Sa, *Sout = b.Sb;
    int64_t start, len, tb, te;
    la__seq_bounds(j->d, unit / j->H, &start, &len);
    load_init(j, unit, Sin);
    for (int64_t i = 0; i < segments(a, len); i++) {
        seg_range(a, len, i, &tb, &te);
        seg_fwd(j, start, unit % j->H, tb, te, Sin, Sout, NULL, scratch);
        float *t = Sin;
        Sin = Sout;
        Sout = t;
    }
    store_final(j, unit, Sin);
}

int la__gla_split_over_time(const gla_job *j) {
    return !j->per_key && la__num_seqs(j->d) * j->H < GLA_SPLIT_BELOW &&
           la__gla_seg_chunks(j) > 0;
}

la_status la__gla_run_split(const char *op, const gla_job *j) {
    split_arg a;
    memset(&a, 0, sizeof a);
    a.j = j;
    a.units = la__num_seqs(j->d) * j->H; /* < GLA_SPLIT_BELOW */
    a.seg_len = la__gla_seg_chunks(j) * j->C;
    a.nseg_max = (la__max_seq_len(j->d) + a.seg_len - 1) / a.seg_len;
    const int threads = la_ctx_threads(j->ctx);
    if (threads == 1) {
        la__parallel_for(j->ctx, a.units, serial_task, &a);
        return LA_OK;
    }
    a.max_lanes = (int)((threads + a.units - 1) / a.units);
    if (a.max_lanes > a.nseg_max) a.max_lanes = (int)a.nseg_max;
    const size_t n = kv(j), slots = (size_t)a.units * (size_t)(a.nseg_max + 1);
    const size_t lim = SIZE_MAX / sizeof(float) / n / 2;
    a.W = slots <= lim ? malloc(2 * slots * n * sizeof(float)) : NULL;
    a.Ws = a.W ? a.W + slots * n : NULL;
    a.Ds = malloc(slots * sizeof *a.Ds);
    a.ready = malloc(slots * sizeof *a.ready);
    a.sdone = malloc(slots * sizeof *a.sdone);
    a.Uoff = malloc(slots * sizeof *a.Uoff);
    a.plans = calloc((size_t)a.units, sizeof *a.plans);
    int64_t *kj = calloc((size_t)a.units * (2 * (size_t)a.max_lanes + 1), sizeof *kj);
    la_status st = LA_OK;
    if (!a.W || !a.Ds || !a.ready || !a.sdone || !a.Uoff || !a.plans || !kj) {
        st = la__error(LA_ERR_OUT_OF_MEMORY,
                       "%s: out of memory for %zu segment states of %zu floats (one sequence "
                       "split over time)",
                       op, 2 * slots, n);
        goto done;
    }
    for (size_t i = 0; i < slots; i++) atomic_init(&a.ready[i], 0);
    for (size_t i = 0; i < slots; i++) atomic_init(&a.sdone[i], 0);
    /* plans that share up to SHARE_BYTES of summed products (kept below
     * glibc's largest mmap threshold, 32 MiB, so that the heap keeps the
     * pages from call to call: a fresh mapping's page faults cost as much
     * as the work saved); without the memory, plans that recompute them.
     * Same bits either way. */
    const size_t seg_bytes = (size_t)la__gla_seg_chunks(j) * n * sizeof(float);
    const size_t per_lane =
        SHARE_BYTES / (size_t)a.units / (size_t)(a.max_lanes > 1 ? a.max_lanes - 1 : 1);
    for (int64_t ms = (int64_t)(per_lane / seg_bytes);; ms = 0) {
        size_t cache = 0;
        for (int64_t unit = 0; unit < a.units; unit++) {
            int64_t start, len;
            la__seq_bounds(j->d, unit / j->H, &start, &len);
            plan *pl = &a.plans[unit];
            pl->k = kj + (size_t)unit * (2 * (size_t)a.max_lanes + 1);
            pl->j = pl->k + a.max_lanes + 1;
            make_plan(segments(&a, len), a.max_lanes, SUM_COST, ms, pl);
            for (int64_t i = 0; i < a.nseg_max; i++) a.Uoff[unit * a.nseg_max + i] = -1;
            for (int p = 1; p < pl->lanes; p++)
                for (int64_t i = pl->j[p]; i < pl->k[p] && i < pl->j[p] + ms; i++) {
                    int64_t tb, te;
                    seg_range(&a, len, i, &tb, &te);
                    a.Uoff[unit * a.nseg_max + i] = (int64_t)(cache * n);
                    cache += (size_t)((te - tb + j->C - 1) / j->C);
                }
        }
        if (ms == 0 || cache == 0) break;
        a.Ucache = malloc(cache * n * sizeof(float)); /* <= SHARE_BYTES */
        if (a.Ucache) break;
    }
    la__parallel_for(j->ctx, a.units * a.max_lanes, lane_task, &a);
done:
    free(a.W);
    free(a.Ds);
    free(a.ready);
    free(a.sdone);
    free(a.Uoff);
    free(a.Ucache);
    free(a.plans);
    free(kj);
    return st;
}
