/* The chunk forward of GLA (per-key gates) with one sequence split over
 * time, for calls with few (sequence, head) pairs (issue 12): simple GLA's
 * scheme (split.c) with a per-key diagonal decay. Segments of
 * la__gla_seg_chunks (gla.h) chunks, fixed by the shape.
 *
 * The rule. Segment s (chunks c = 1..m) from its start state S[s] runs its
 * chunks with la__gla_chunk_fwd_piece (the unsplit chunk's factors and
 * products): the outputs read R_c, R_1 = S[s], R_{c+1} = Diag(d_c) R_c +
 * U_c (d_c = e^{G_L} per key, U_c = (k e^{G_L - G})ᵀ v). Its local sum
 * L = Diag(d_m) (... (Diag(d_1) 0 + U_1) ...) + U_m and decay
 * D_x = e^{sum_c G_L,x(c)} (float64 sums, one exponential per key) give
 *   S[s+1] = Diag(D) S[s] + L,
 * whether the segment's run made L as it went or a sum task made it (the
 * same floats). Every thread count (1 included) gives the same bits;
 * against the unsplit form they differ at segment boundaries and in the
 * state update (U added by a multiply-add, not the gemm's beta).
 *
 * Schedule: the lanes of split_plan.h, as split_bwd.c's reverse sweep
 * (every state slot has one writer). One thread: the segments in order. */
#include "gla.h"
#include "../split_plan.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define GLA_SPLIT_BELOW 8
/* A segment's local sum (the gate factors, two exponentials per key and
 * token, and the state product) against its run (also the inter- and
 * intra-chunk outputs); only the balance depends on it. Measured at
 * B*H = 1, T = 65536, D = 128, 2 threads: 0.4 gave 1.25-1.35x, 0.6
 * 1.48-1.65x, 0.8 1.33-1.45x (CPU-time critical path, shared machine). */
#define SUM_COST 0.6

LA_HIDDEN int la__gla_split_gla_over_time(const gla_job *j);
LA_HIDDEN size_t la__gla_split_gla_bytes(const gla_job *j);
LA_HIDDEN la_status la__gla_run_split_gla(const char *op, const gla_job *j);

typedef struct sg_bufs {
    float *U, *R, *L; /* [K,V] */
    float *Sa, *Sb;   /* [K,V] one thread: the states before and after a segment */
    float *d;         /* [K] */
    double *GL;       /* [K] */
    char *piece;      /* la__gla_chunk_fwd_piece's scratch */
} sg_bufs;

static size_t sg_layout(const gla_job *j, char *base, sg_bufs *b) {
    const size_t K = (size_t)j->K, KV = K * (size_t)j->V;
    la__arena a = {.base = base};
    b->U = la__arena_take(&a, KV, sizeof(float));
    b->R = la__arena_take(&a, KV, sizeof(float));
    b->L = la__arena_take(&a, KV, sizeof(float));
    b->Sa = la__arena_take(&a, KV, sizeof(float));
    b->Sb = la__arena_take(&a, KV, sizeof(float));
    b->d = la__arena_take(&a, K, sizeof(float));
    b->GL = la__arena_take(&a, K, sizeof(double));
    const size_t pb = la__gla_chunk_fwd_bytes(j);
    b->piece = pb ? la__arena_take(&a, pb, 1) : NULL;
    return pb ? la__arena_size(&a) : 0;
}

size_t la__gla_split_gla_bytes(const gla_job *j) {
    sg_bufs b;
    return sg_layout(j, NULL, &b);
}

/* The segment [tb, te) of the sequence at `start`, head h: with Sin, its
 * outputs and Sout = Diag(D) Sin + L; without, L and D into Lout, Dout (a
 * sum: the same pieces without outputs, the same floats). The
 * elementwise updates in a fixed order, no contraction: the same bits on
 * every ISA (the piece dispatches on its own). */
static void segment(const gla_job *j, int64_t start, int64_t h, int64_t tb, int64_t te,
                    const float *Sin, float *Sout, float *Lout, float *Dout, char *scratch) {
    sg_bufs b;
    sg_layout(j, scratch, &b);
    const int64_t K = j->K, V = j->V, C = j->C;
    float *L = Sin ? b.L : Lout;
    memset(L, 0, (size_t)(K * V) * sizeof(float));
    if (Sin) memcpy(b.R, Sin, (size_t)(K * V) * sizeof(float));
    for (int64_t x = 0; x < K; x++) b.GL[x] = 0.0;
    for (int64_t c0 = tb; c0 < te; c0 += C) {
        const int64_t n = te - c0 < C ? te - c0 : C;
        la__gla_chunk_fwd_piece(j, b.piece, b.R, start + c0, n, h, Sin != NULL, b.U, b.d, b.GL);
        const int upd_R = Sin && c0 + C < te;
        for (int64_t x = 0; x < K; x++) {
            const float dx = b.d[x];
            float *Lr = L + x * V, *Rr = b.R + x * V;
            const float *Ur = b.U + x * V;
            if (upd_R)
                for (int64_t y = 0; y < V; y++) {
                    Lr[y] = dx * Lr[y] + Ur[y];
                    Rr[y] = dx * Rr[y] + Ur[y];
                }
            else
                for (int64_t y = 0; y < V; y++) Lr[y] = dx * Lr[y] + Ur[y];
        }
    }
    if (!Sin) {
        for (int64_t x = 0; x < K; x++) Dout[x] = la__exp_nonpos((float)b.GL[x]);
        return;
    }
    for (int64_t x = 0; x < K; x++) {
        const float D = la__exp_nonpos((float)b.GL[x]);
        for (int64_t y = 0; y < V; y++) Sout[x * V + y] = D * Sin[x * V + y] + L[x * V + y];
    }
}

typedef struct sg_arg {
    const gla_job *j;
    int64_t seg_len, nseg_max, units;
    int max_lanes;
    float *W;          /* [units, nseg_max + 1, K, V]: S[s] */
    float *Ws;         /* [units, nseg_max, K, V]: a lane's sums (and states between) */
    float *Wd;         /* [units, max_lanes, K, V]: discard slots */
    float *Ds;         /* [units, nseg_max, K]: decays of summed segments */
    atomic_int *ready; /* [units, nseg_max + 1] */
    plan *plans;
} sg_arg;

static size_t kv(const gla_job *j) { return (size_t)j->K * (size_t)j->V; }
static float *slot(float *W, int64_t unit, int64_t per, int64_t i, size_t n) {
    return W + ((size_t)unit * (size_t)per + (size_t)i) * n;
}
static int64_t nseg_of(const sg_arg *a, int64_t unit, int64_t *start, int64_t *len) {
    la__seq_bounds(a->j->d, unit / a->j->H, start, len);
    return (*len + a->seg_len - 1) / a->seg_len;
}
static void seg_range(const sg_arg *a, int64_t len, int64_t s, int64_t *tb, int64_t *te) {
    *tb = s * a->seg_len;
    *te = len - *tb < a->seg_len ? len : *tb + a->seg_len;
}
static void publish(atomic_int *f) { atomic_store_explicit(f, 1, memory_order_release); }
static void wait_for(atomic_int *f) {
    while (!atomic_load_explicit(f, memory_order_acquire)) sched_yield();
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

static void lane_task(void *arg, int64_t task, int tid) {
    const sg_arg *a = arg;
    const gla_job *j = a->j;
    const int64_t unit = task / a->max_lanes, h = unit % j->H, per = a->nseg_max + 1;
    const int p = (int)(task % a->max_lanes);
    const plan *pl = &a->plans[unit];
    if (p >= pl->lanes) return;
    atomic_int *ready = a->ready + (size_t)unit * (size_t)per;
    char *scratch = la__scratch(j->ctx, tid);
    const size_t n = kv(j);
    int64_t start, len, tb, te;
    const int64_t nseg = nseg_of(a, unit, &start, &len), k0 = pl->k[p], k1 = pl->k[p + 1];
    if (p == 0) {
        load_init(j, unit, slot(a->W, unit, per, 0, n));
        publish(&ready[0]);
    } else {
        const int64_t jp = pl->j[p];
        for (int64_t i = jp; i < k0; i++) {
            seg_range(a, len, i, &tb, &te);
            segment(j, start, h, tb, te, NULL, NULL, slot(a->Ws, unit, a->nseg_max, i, n),
                    a->Ds + ((size_t)unit * (size_t)a->nseg_max + (size_t)i) * (size_t)j->K,
                    scratch);
        }
        wait_for(&ready[jp]);
        const float *Sin = slot(a->W, unit, per, jp, n);
        for (int64_t i = jp; i < k0; i++) {
            float *Ls = slot(a->Ws, unit, a->nseg_max, i, n);
            float *So = i + 1 == k0 ? slot(a->W, unit, per, k0, n) : Ls;
            const float *D =
                a->Ds + ((size_t)unit * (size_t)a->nseg_max + (size_t)i) * (size_t)j->K;
            for (int64_t x = 0; x < j->K; x++)
                for (int64_t y = 0; y < j->V; y++)
                    So[x * j->V + y] = D[x] * Sin[x * j->V + y] + Ls[x * j->V + y];
            Sin = So;
        }
        publish(&ready[k0]);
    }
    const int next_makes_k1 = p + 1 < pl->lanes && pl->j[p + 1] < k1;
    for (int64_t i = k0; i < k1; i++) {
        seg_range(a, len, i, &tb, &te);
        const float *Sin = slot(a->W, unit, per, i, n);
        if (next_makes_k1 && i + 1 == k1) {
            segment(j, start, h, tb, te, Sin, slot(a->Wd, unit, a->max_lanes, p, n), NULL, NULL,
                    scratch);
        } else {
            segment(j, start, h, tb, te, Sin, slot(a->W, unit, per, i + 1, n), NULL, NULL, scratch);
            publish(&ready[i + 1]);
        }
    }
    if (k1 == nseg) store_final(j, unit, slot(a->W, unit, per, nseg, n));
}

static void serial_task(void *arg, int64_t unit, int tid) {
    const sg_arg *a = arg;
    const gla_job *j = a->j;
    char *scratch = la__scratch(j->ctx, tid);
    sg_bufs b;
    sg_layout(j, scratch, &b);
    float *Sin = b.Sa, *Sout = b.Sb;
    int64_t start, len, tb, te;
    const int64_t nseg = nseg_of(a, unit, &start, &len);
    load_init(j, unit, Sin);
    for (int64_t i = 0; i < nseg; i++) {
        seg_range(a, len, i, &tb, &te);
        segment(j, start, unit % j->H, tb, te, Sin, Sout, NULL, NULL, scratch);
        float *t = Sin;
        Sin = Sout;
        Sout = t;
    }
    store_final(j, unit, Sin);
}

int la__gla_split_gla_over_time(const gla_job *j) {
    return j->per_key && j->g && la__num_seqs(j->d) * j->H < GLA_SPLIT_BELOW &&
           la__gla_seg_chunks(j) > 0;
}

la_status la__gla_run_split_gla(const char *op, const gla_job *j) {
    sg_arg a;
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
    const size_t nl = (size_t)a.units * (size_t)a.max_lanes;
    const size_t lim = SIZE_MAX / sizeof(float) / n / 3;
    a.W = slots <= lim ? malloc((2 * slots + nl) * n * sizeof(float)) : NULL;
    a.Ws = a.W ? a.W + slots * n : NULL;
    a.Wd = a.W ? a.Ws + slots * n : NULL;
    a.Ds = slots <= lim ? malloc(slots * (size_t)j->K * sizeof(float)) : NULL;
    a.ready = malloc(slots * sizeof *a.ready);
    a.plans = calloc((size_t)a.units, sizeof *a.plans);
    int64_t *kj = calloc((size_t)a.units * (2 * (size_t)a.max_lanes + 1), sizeof *kj);
    la_status st = LA_OK;
    if (!a.W || !a.Ds || !a.ready || !a.plans || !kj) {
        st = la__error(LA_ERR_OUT_OF_MEMORY,
                       "%s: out of memory for %zu segment states of %zu floats (one sequence "
                       "split over time)",
                       op, 2 * slots + nl, n);
        goto done;
    }
    for (size_t i = 0; i < slots; i++) atomic_init(&a.ready[i], 0);
    for (int64_t unit = 0; unit < a.units; unit++) {
        int64_t start, len;
        plan *pl = &a.plans[unit];
        pl->k = kj + (size_t)unit * (2 * (size_t)a.max_lanes + 1);
        pl->j = pl->k + a.max_lanes + 1;
        make_plan(nseg_of(&a, unit, &start, &len), a.max_lanes, SUM_COST, pl);
    }
    la__parallel_for(j->ctx, a.units * a.max_lanes, lane_task, &a);
done:
    free(a.W);
    free(a.Ds);
    free(a.ready);
    free(a.plans);
    free(kj);
    return st;
}
