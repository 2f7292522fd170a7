/* The chunk forward and backward of kernel linear attention with one
 * sequence split over time (linear_attn.h: segments of LA__LIN_SEG_CHUNKS
 * chunks, fixed by the shape). The state before segment s is S[s] (S[0] the initial state),
 * S[s+1] = S[s] + Sloc[s], Sloc[s] the segment's local sum K̃ᵀVx (chunk by
 * chunk from zero). Whether a segment's forward produces Sloc[s] as it goes
 * (la__lin_chunk_seg_fwd) or a sum task does (la__lin_chunk_seg_sum), it is
 * the same floats, so every schedule below gives the same bits.
 *
 * Schedule: a dependency pipeline of lanes. Lane 0 runs the segments
 * [0, k1) in order from the initial state, publishing each state it
 * produces. Lane p >= 1 first sums the segments [j_p, k_p) (no state
 * needed), then waits until S[j_p] is published, adds its sums in order to
 * get S[k_p], and runs the segments [k_p, k_{p+1}) in order, publishing as
 * it goes. A sum costs r ~ 0.4 of a segment's forward; the plan picks the
 * k_p and j_p that finish all lanes together. With two lanes of n
 * segments: lane 0 runs k segments, lane 1 sums k - j with j = r (k - j)
 * and runs n - k, so k = n / (2 - r / (1 + r)): a speed-up bound of
 * 2 - r / (1 + r) = 1.71 at r = 0.4 (1.8 at r = 0.25), against
 * 2 / (1 + r / (1 + r)) = 1.56 for sums first, then a prefix, then all
 * forwards (the schedule before). Lane p's task index is
 * above those it waits for, and the pool hands tasks out in index order,
 * so a waiting lane's producer is always already running (or done).
 *
 * The backward is two such passes: the forward sweep (states S[s] as
 * above; dq) and then the reverse sweep over the segments from the last
 * (the gradient of the state after a segment, from d_final_state, plus the
 * segments' local sums of Q̂ᵀGx; dk, dv). Its sums read the G and δ the
 * forward sweep parked in dv and dk, which the sweep of the same segment
 * overwrites: lane p - 1 waits for lane p's sums before running the first
 * segment lane p summed (only a wait on a lane already handed out or about
 * to be: the next task index). */
#include "../split_lanes.h"
#include "linear_attn.h"

#include <string.h>

/* The cost of a segment's local sum relative to running the segment, per
 * pass (thread CPU time, D = 128, C = 64, AVX-512): forward 0.27 ms / 0.70
 * ms ~ 0.4; the backward's sweeps do ~1.6x and ~2x a forward's products
 * for about the same sums, ~0.25. Only the balance depends on them. */
#define SUM_COST_FWD 0.4
#define SUM_COST_BWD 0.25

typedef enum { PASS_FWD, PASS_BWD_FWD, PASS_BWD_REV } pass_kind;

typedef struct split_arg {
    const la__lin_job *j;
    pass_kind kind;
    int64_t seg_len;
} split_arg;

static size_t kvx(const la__lin_job *j) { return (size_t)j->K * (size_t)la__lin_vx(j); }

static int64_t segments(const split_arg *a, int64_t len) {
    return (len + a->seg_len - 1) / a->seg_len;
}

/* The tokens [*tb, *te) of position i (segment i, or n-1-i in reverse). */
static void position(const split_arg *a, int64_t len, int64_t i, int64_t *tb, int64_t *te) {
    const int64_t n = segments(a, len), s = a->kind == PASS_BWD_REV ? n - 1 - i : i;
    *tb = s * a->seg_len;
    *te = len - *tb < a->seg_len ? len : *tb + a->seg_len;
}

/* ---- the pass's callbacks (split_lanes.h) ---------------------------- */

static int64_t pass_count(void *arg, int64_t unit) {
    const split_arg *a = arg;
    int64_t start, len;
    la__seq_bounds(a->j->dims, unit / a->j->H, &start, &len);
    return segments(a, len);
}
static void pass_init(void *arg, int64_t unit, float *S0) {
    const split_arg *a = arg;
    la__lin_unit u;
    la__lin_unit_init(a->j, unit, &u);
    if (a->kind == PASS_BWD_REV)
        la__lin_ext_load(a->j, S0, u.dST, u.dzT);
    else
        la__lin_ext_load(a->j, S0, u.S0, u.z0);
}
static void pass_final(void *arg, int64_t unit, const float *S) {
    const split_arg *a = arg;
    la__lin_unit u;
    la__lin_unit_init(a->j, unit, &u);
    if (a->kind == PASS_FWD) la__lin_ext_store(a->j, S, u.fS, u.fz);
    if (a->kind == PASS_BWD_REV) la__lin_ext_store(a->j, S, u.dS0, u.dz0);
}
static void pass_sum(void *arg, int64_t unit, int64_t i, float *Ssum, int tid) {
    const split_arg *a = arg;
    la__lin_unit u;
    la__lin_unit_init(a->j, unit, &u);
    float *scratch = la__scratch(a->j->ctx, tid);
    int64_t tb, te;
    position(a, u.len, i, &tb, &te);
    if (a->kind == PASS_BWD_REV)
        la__lin_chunk_seg_rsum(a->j, &u, tb, te, Ssum, scratch);
    else
        la__lin_chunk_seg_sum(a->j, &u, tb, te, Ssum, scratch);
}
/* S[i+1] = S[i] + Sloc[i] */
static void pass_add(void *arg, int64_t unit, int64_t i, const float *Sin, const float *Ssum,
                     float *Sout) {
    (void)unit;
    (void)i;
    const size_t n = kvx(((const split_arg *)arg)->j);
    for (size_t x = 0; x < n; x++) Sout[x] = Sin[x] + Ssum[x];
}
static void pass_run(void *arg, int64_t unit, int64_t i, const float *Sin, float *Sout, int tid) {
    const split_arg *a = arg;
    la__lin_unit u;
    la__lin_unit_init(a->j, unit, &u);
    float *scratch = la__scratch(a->j->ctx, tid);
    int64_t tb, te;
    position(a, u.len, i, &tb, &te);
    switch (a->kind) {
    case PASS_FWD: la__lin_chunk_seg_fwd(a->j, &u, tb, te, Sin, Sout, scratch); break;
    case PASS_BWD_FWD: la__lin_chunk_seg_bwd_fwd(a->j, &u, tb, te, Sin, Sout, scratch); break;
    case PASS_BWD_REV: la__lin_chunk_seg_bwd_rev(a->j, &u, tb, te, Sin, Sout, scratch); break;
    }
}
/* One thread: slots 2 and 3 of the scratch's four state slots. */
static void pass_bufs(void *arg, int tid, float **Sa, float **Sb) {
    const split_arg *a = arg;
    float *scratch = la__scratch(a->j->ctx, tid);
    *Sa = scratch + 2 * kvx(a->j);
    *Sb = scratch + 3 * kvx(a->j);
}

int la__lin_split_over_time(const la__lin_job *j) {
    return la__num_seqs(j->dims) * j->H < LA__LIN_SPLIT_BELOW &&
           j->Tmax >= 2 * LA__LIN_SEG_CHUNKS * j->chunk;
}

la_status la__lin_run_split(const char *op, const la__lin_job *j, int backward) {
    split_arg a = {.j = j, .seg_len = LA__LIN_SEG_CHUNKS * j->chunk};
    const int64_t units = la__num_seqs(j->dims) * j->H; /* < LA__LIN_SPLIT_BELOW */
    la__arena tb = {NULL, 0, 0};                        /* a task's scratch */
    float *bufs[LA__LIN_MAX_BUFS];
    la__lin_chunk_layout(j, backward, &tb, bufs);
    la__lanes L;
    char *extra;
    la_status st = la__lanes_open(&L, j->ctx, op, tb.used, units,
                                  (j->Tmax + a.seg_len - 1) / a.seg_len, kvx(j), 1, 0, &extra);
    if (st != LA_OK) return st;
    const la__lane_ops ops = {.arg = &a,
                              .count = pass_count,
                              .init = pass_init,
                              .final = pass_final,
                              .sum = pass_sum,
                              .add = pass_add,
                              .run = pass_run,
                              .serial_bufs = pass_bufs};
    la__lane_ops rev = ops;
    /* the reverse sums read the G and δ rows this lane's sweeps overwrite */
    rev.guard_sums = 1;
    const pass_kind kinds[2] = {backward ? PASS_BWD_FWD : PASS_FWD, PASS_BWD_REV};
    for (int k = 0; k < (backward ? 2 : 1); k++) {
        a.kind = kinds[k];
        la__lanes_plan_all(&L, &ops, a.kind == PASS_FWD ? SUM_COST_FWD : SUM_COST_BWD);
        la__lanes_run(&L, a.kind == PASS_BWD_REV ? &rev : &ops);
    }
    return LA_OK;
}
