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
 * Schedule (split_lanes.h): lane 0 runs the segments [0, k1) from the
 * initial state; lane p >= 1 sums [j_p, k_p), waits for S[j_p], adds its
 * sums, runs [k_p, k_{p+1}); a lane that runs a segment the next lane
 * summed with its products kept waits for them and reuses them. */
#include "../split_lanes.h"
#include "gla.h"

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
LA_ISA_BUILDS(static, seg_sum, seg_sum_body,
              (const gla_job *j, int64_t st, int64_t h, int64_t tb, int64_t te, float *L, float *D,
               float *U, char *s),
              (j, st, h, tb, te, L, D, U, s))
LA_ISA_BUILDS(static, seg_fwd, seg_fwd_body,
              (const gla_job *j, int64_t st, int64_t h, int64_t tb, int64_t te, const float *Sin,
               float *Sout, const seg_sum_out *U, char *s),
              (j, st, h, tb, te, Sin, Sout, U, s))

/* ---- the plan (split_plan.h's, with shared products) ----------------- */

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

static int share_plan_try(int64_t n, int max_lanes, double r, int64_t ms, double F, int64_t *k,
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

static void share_make_plan(int64_t n, int max_lanes, double r, int64_t ms, plan *pl) {
    pl->k[0] = 0;
    pl->k[1] = n;
    pl->lanes = 1;
    if (max_lanes > n) max_lanes = (int)n;
    if (max_lanes < 2) return;
    double lo = 0.5 * (double)n / max_lanes, hi = (double)n;
    for (int it = 0; it < 40; it++) {
        const double mid = 0.5 * (lo + hi);
        if (share_plan_try(n, max_lanes, r, ms, mid, pl->k, pl->j) <= max_lanes)
            hi = mid;
        else
            lo = mid;
    }
    pl->lanes = share_plan_try(n, max_lanes, r, ms, hi, pl->k, pl->j);
    if (pl->lanes > max_lanes) { /* cannot happen (F = n fits one lane) */
        pl->lanes = 1;
        pl->k[0] = 0;
        pl->k[1] = n;
    }
}

/* ---- the pass (split_lanes.h) ------------------------------------------- */

typedef struct split_arg {
    const gla_job *j;
    const la__lanes *L;
    int64_t seg_len, nseg_max;
    float *Ds;         /* [units, nseg_max]: segment decays */
    atomic_int *sdone; /* [units, nseg_max]: segment i summed (its U cached) */
    float *Ucache;     /* the summed segments' chunk products U, or NULL */
    int64_t *Uoff;     /* [units, nseg_max]: segment i's U in Ucache (floats), or -1 */
} split_arg;

static size_t kv(const gla_job *j) { return (size_t)j->K * (size_t)j->V; }
static float *ucache(const split_arg *a, int64_t unit, int64_t i) {
    if (!a->Ucache) return NULL;
    const int64_t off = a->Uoff[unit * a->nseg_max + i];
    return off < 0 ? NULL : a->Ucache + off;
}
static int64_t segments(const split_arg *a, int64_t len) {
    return (len + a->seg_len - 1) / a->seg_len;
}
static void seg_range(const split_arg *a, int64_t len, int64_t i, int64_t *tb, int64_t *te) {
    *tb = i * a->seg_len;
    *te = len - *tb < a->seg_len ? len : *tb + a->seg_len;
}

static int64_t sp_count(void *arg, int64_t unit) {
    const split_arg *a = arg;
    int64_t start, len;
    la__seq_bounds(a->j->d, unit / a->j->H, &start, &len);
    return segments(a, len);
}
static void sp_init(void *arg, int64_t unit, float *S) {
    const gla_job *j = ((const split_arg *)arg)->j;
    if (j->s0)
        memcpy(S, j->s0 + (size_t)unit * kv(j), kv(j) * sizeof(float));
    else
        memset(S, 0, kv(j) * sizeof(float));
}
static void sp_final(void *arg, int64_t unit, const float *S) {
    const gla_job *j = ((const split_arg *)arg)->j;
    if (j->sT) memcpy(j->sT + (size_t)unit * kv(j), S, kv(j) * sizeof(float));
}
/* L, D of segment i (and its chunks' U when cached: the lane before
 * waits for them) */
static void sp_sum(void *arg, int64_t unit, int64_t i, float *Ls, int tid) {
    const split_arg *a = arg;
    const gla_job *j = a->j;
    int64_t start, len, tb, te;
    la__seq_bounds(j->d, unit / j->H, &start, &len);
    seg_range(a, len, i, &tb, &te);
    seg_sum(j, start, unit % j->H, tb, te, Ls, &a->Ds[unit * a->nseg_max + i], ucache(a, unit, i),
            la__scratch(j->ctx, tid));
    la__lanes_publish(&a->sdone[unit * a->nseg_max + i]);
}
/* S[i+1] = D S[i] + L */
static void sp_add(void *arg, int64_t unit, int64_t i, const float *Sin, const float *Ls,
                   float *S) {
    const split_arg *a = arg;
    const size_t m = kv(a->j);
    const float D = a->Ds[unit * a->nseg_max + i];
    for (size_t x = 0; x < m; x++) S[x] = D * Sin[x] + Ls[x];
}
static void sp_run(void *arg, int64_t unit, int64_t i, const float *Sin, float *Sout, int tid) {
    const split_arg *a = arg;
    const gla_job *j = a->j;
    int64_t start, len, tb, te;
    la__seq_bounds(j->d, unit / j->H, &start, &len);
    seg_range(a, len, i, &tb, &te);
    /* the next lane summed this segment with its products kept */
    seg_sum_out ss = {.U = ucache(a, unit, i)};
    if (ss.U) {
        la__lanes_wait(&a->sdone[unit * a->nseg_max + i]);
        ss.L = la__lanes_sum(a->L, unit, i);
        ss.D = a->Ds[unit * a->nseg_max + i];
    }
    seg_fwd(j, start, unit % j->H, tb, te, Sin, Sout, ss.U ? &ss : NULL, la__scratch(j->ctx, tid));
}
static void sp_bufs(void *arg, int tid, float **Sa, float **Sb) {
    const split_arg *a = arg;
    seg_bufs b;
    seg_layout(a->j, la__scratch(a->j->ctx, tid), &b);
    *Sa = b.Sa;
    *Sb = b.Sb;
}

/* Ds, sdone, Uoff from the arena (base NULL: only counted). */
static void sp_take(split_arg *a, la__arena *ar, size_t slots) {
    a->Ds = la__arena_take(ar, slots, sizeof *a->Ds);
    a->sdone = la__arena_take(ar, slots, sizeof *a->sdone);
    a->Uoff = la__arena_take(ar, slots, sizeof *a->Uoff);
}

int la__gla_split_over_time(const gla_job *j) {
    return !j->per_key && la__num_seqs(j->d) * j->H < GLA_SPLIT_BELOW && la__gla_seg_chunks(j) > 0;
}

la_status la__gla_run_split(const char *op, const gla_job *j) {
    split_arg a;
    memset(&a, 0, sizeof a);
    a.j = j;
    const int64_t units = la__num_seqs(j->d) * j->H; /* < GLA_SPLIT_BELOW */
    a.seg_len = la__gla_seg_chunks(j) * j->C;
    a.nseg_max = (la__max_seq_len(j->d) + a.seg_len - 1) / a.seg_len;
    const size_t n = kv(j), slots = (size_t)units * (size_t)a.nseg_max;
    /* Ds, sdone, Uoff, then up to SHARE_BYTES of summed products (several
     * threads): plans that share them; without the memory, plans that
     * recompute them. Same bits either way. */
    const int threads = la_ctx_threads(j->ctx);
    const size_t seg_bytes = (size_t)la__gla_seg_chunks(j) * n * sizeof(float);
    la__arena ar = {NULL, 0, 0};
    sp_take(&a, &ar, slots);
    size_t cache = slots > SHARE_BYTES / seg_bytes ? SHARE_BYTES : slots * seg_bytes;
    la__lanes L;
    char *mem;
    la_status st = LA_ERR_OUT_OF_MEMORY;
    if (threads > 1)
        st = la__lanes_open(&L, j->ctx, op, la__gla_split_bytes(j), units, a.nseg_max, n, 1,
                            la__arena_size(&ar) + cache, &mem);
    if (st != LA_OK) {
        cache = 0;
        st = la__lanes_open(&L, j->ctx, op, la__gla_split_bytes(j), units, a.nseg_max, n, 1,
                            threads > 1 ? la__arena_size(&ar) : 0, &mem);
    }
    if (st != LA_OK) return st;
    a.L = &L;
    const la__lane_ops ops = {.arg = &a,
                              .count = sp_count,
                              .init = sp_init,
                              .final = sp_final,
                              .sum = sp_sum,
                              .add = sp_add,
                              .run = sp_run,
                              .serial_bufs = sp_bufs};
    if (!L.max_lanes) { /* one thread */
        la__lanes_run(&L, &ops);
        return LA_OK;
    }
    ar = (la__arena){mem, 0, 0};
    sp_take(&a, &ar, slots);
    a.Ucache = cache ? (float *)(void *)(mem + la__arena_size(&ar)) : NULL;
    for (size_t i = 0; i < slots; i++) atomic_init(&a.sdone[i], 0);
    const size_t per_lane =
        SHARE_BYTES / (size_t)units / (size_t)(L.max_lanes > 1 ? L.max_lanes - 1 : 1);
    const int64_t ms = cache ? (int64_t)(per_lane / seg_bytes) : 0;
    size_t used = 0;
    for (int64_t unit = 0; unit < units; unit++) {
        int64_t start, len;
        la__seq_bounds(j->d, unit / j->H, &start, &len);
        plan *pl = &L.plans[unit];
        share_make_plan(segments(&a, len), L.max_lanes, SUM_COST, ms, pl);
        for (int64_t i = 0; i < a.nseg_max; i++) a.Uoff[unit * a.nseg_max + i] = -1;
        for (int p = 1; p < pl->lanes; p++)
            for (int64_t i = pl->j[p]; i < pl->k[p] && i < pl->j[p] + ms; i++) {
                int64_t tb, te;
                seg_range(&a, len, i, &tb, &te);
                a.Uoff[unit * a.nseg_max + i] = (int64_t)(used * n);
                used += (size_t)((te - tb + j->C - 1) / j->C); /* <= SHARE_BYTES */
            }
    }
    la__lanes_run(&L, &ops);
    return LA_OK;
}
