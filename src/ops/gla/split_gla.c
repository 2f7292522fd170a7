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
 * Schedule: the lanes of split_lanes.h (every state slot has one writer).
 * One thread: the segments in order. */
#include "../split_lanes.h"
#include "gla.h"

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
    int64_t seg_len, nseg_max;
    float *Ds; /* [units, nseg_max, K]: decays of summed segments */
} sg_arg;

static size_t kv(const gla_job *j) { return (size_t)j->K * (size_t)j->V; }
static int64_t nseg_of(const sg_arg *a, int64_t unit, int64_t *start, int64_t *len) {
    la__seq_bounds(a->j->d, unit / a->j->H, start, len);
    return (*len + a->seg_len - 1) / a->seg_len;
}
static void seg_range(const sg_arg *a, int64_t len, int64_t s, int64_t *tb, int64_t *te) {
    *tb = s * a->seg_len;
    *te = len - *tb < a->seg_len ? len : *tb + a->seg_len;
}
static float *dec(const sg_arg *a, int64_t unit, int64_t i) {
    return a->Ds + ((size_t)unit * (size_t)a->nseg_max + (size_t)i) * (size_t)a->j->K;
}

/* ---- the pass's callbacks (split_lanes.h) ---------------------------- */

static int64_t sg_count(void *arg, int64_t unit) {
    int64_t start, len;
    return nseg_of(arg, unit, &start, &len);
}
static void sg_init(void *arg, int64_t unit, float *S) {
    const gla_job *j = ((const sg_arg *)arg)->j;
    if (j->s0)
        memcpy(S, j->s0 + (size_t)unit * kv(j), kv(j) * sizeof(float));
    else
        memset(S, 0, kv(j) * sizeof(float));
}
static void sg_final(void *arg, int64_t unit, const float *S) {
    const gla_job *j = ((const sg_arg *)arg)->j;
    if (j->sT) memcpy(j->sT + (size_t)unit * kv(j), S, kv(j) * sizeof(float));
}
static void sg_sum(void *arg, int64_t unit, int64_t i, float *Ssum, int tid) {
    const sg_arg *a = arg;
    int64_t start, len, tb, te;
    nseg_of(a, unit, &start, &len);
    seg_range(a, len, i, &tb, &te);
    segment(a->j, start, unit % a->j->H, tb, te, NULL, NULL, Ssum, dec(a, unit, i),
            la__scratch(a->j->ctx, tid));
}
/* S[i+1] = Diag(D) S[i] + L */
static void sg_add(void *arg, int64_t unit, int64_t i, const float *Sin, const float *Ls,
                   float *So) {
    const sg_arg *a = arg;
    const int64_t K = a->j->K, V = a->j->V;
    const float *D = dec(a, unit, i);
    for (int64_t x = 0; x < K; x++)
        for (int64_t y = 0; y < V; y++) So[x * V + y] = D[x] * Sin[x * V + y] + Ls[x * V + y];
}
static void sg_run(void *arg, int64_t unit, int64_t i, const float *Sin, float *Sout, int tid) {
    const sg_arg *a = arg;
    int64_t start, len, tb, te;
    nseg_of(a, unit, &start, &len);
    seg_range(a, len, i, &tb, &te);
    segment(a->j, start, unit % a->j->H, tb, te, Sin, Sout, NULL, NULL,
            la__scratch(a->j->ctx, tid));
}
static void sg_bufs_of(void *arg, int tid, float **Sa, float **Sb) {
    const sg_arg *a = arg;
    sg_bufs b;
    sg_layout(a->j, la__scratch(a->j->ctx, tid), &b);
    *Sa = b.Sa;
    *Sb = b.Sb;
}

int la__gla_split_gla_over_time(const gla_job *j) {
    return j->per_key && j->g && la__num_seqs(j->d) * j->H < GLA_SPLIT_BELOW &&
           la__gla_seg_chunks(j) > 0;
}

la_status la__gla_run_split_gla(const char *op, const gla_job *j) {
    sg_arg a = {.j = j, .seg_len = la__gla_seg_chunks(j) * j->C};
    a.nseg_max = (la__max_seq_len(j->d) + a.seg_len - 1) / a.seg_len;
    const int64_t units = la__num_seqs(j->d) * j->H; /* < GLA_SPLIT_BELOW */
    /* the decays of summed segments (several threads) */
    const size_t slots = (size_t)units * (size_t)a.nseg_max, K = (size_t)j->K;
    const size_t ds = la_ctx_threads(j->ctx) == 1            ? 0
                      : slots > SIZE_MAX / sizeof(float) / K ? SIZE_MAX
                                                             : slots * K * sizeof(float);
    la__lanes L;
    char *extra;
    la_status st = la__lanes_open(&L, j->ctx, op, la__gla_split_gla_bytes(j), units, a.nseg_max,
                                  kv(j), 1, ds, &extra);
    if (st != LA_OK) return st;
    a.Ds = (float *)(void *)extra;
    const la__lane_ops ops = {.arg = &a,
                              .count = sg_count,
                              .init = sg_init,
                              .final = sg_final,
                              .sum = sg_sum,
                              .add = sg_add,
                              .run = sg_run,
                              .serial_bufs = sg_bufs_of};
    la__lanes_plan_all(&L, &ops, SUM_COST);
    la__lanes_run(&L, &ops);
    return LA_OK;
}
