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
#include "../split_plan.h"
#include "linear_attn.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
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
    int64_t seg_len, nseg_max, units;
    int max_lanes;
    float *W;           /* [units, nseg_max + 1, K, Vx]: the state before position i */
    float *Ws;          /* [units, nseg_max, K, Vx]: local sums of summed positions */
    float *Wd;          /* [units, max_lanes, K, Vx]: a lane's last state when the next
                           lane makes that state (every slot of W has one writer) */
    atomic_int *ready;  /* [units, nseg_max + 1]: W[i] published */
    atomic_int *summed; /* [units, max_lanes]: lane p's sums done */
    plan *plans;        /* [units] */
} split_arg;

static size_t kvx(const la__lin_job *j) { return (size_t)j->K * (size_t)la__lin_vx(j); }

static float *state_slot(const split_arg *a, int64_t unit, int64_t i) {
    return a->W + ((size_t)unit * (size_t)(a->nseg_max + 1) + (size_t)i) * kvx(a->j);
}
static float *sum_slot(const split_arg *a, int64_t unit, int64_t i) {
    return a->Ws + ((size_t)unit * (size_t)a->nseg_max + (size_t)i) * kvx(a->j);
}
static float *discard_slot(const split_arg *a, int64_t unit, int p) {
    return a->Wd + ((size_t)unit * (size_t)a->max_lanes + (size_t)p) * kvx(a->j);
}
static void publish(atomic_int *flag) { atomic_store_explicit(flag, 1, memory_order_release); }
static void wait_for(atomic_int *flag) {
    while (!atomic_load_explicit(flag, memory_order_acquire)) sched_yield();
}

static int64_t segments(const split_arg *a, int64_t len) {
    return (len + a->seg_len - 1) / a->seg_len;
}

/* The tokens [*tb, *te) of position i (segment i, or n-1-i in reverse). */
static void position(const split_arg *a, int64_t len, int64_t i, int64_t *tb, int64_t *te) {
    const int64_t n = segments(a, len), s = a->kind == PASS_BWD_REV ? n - 1 - i : i;
    *tb = s * a->seg_len;
    *te = len - *tb < a->seg_len ? len : *tb + a->seg_len;
}

static void pass_init(const split_arg *a, const la__lin_unit *u, float *S0) {
    if (a->kind == PASS_BWD_REV)
        la__lin_ext_load(a->j, S0, u->dST, u->dzT);
    else
        la__lin_ext_load(a->j, S0, u->S0, u->z0);
}
static void pass_final(const split_arg *a, const la__lin_unit *u, const float *S) {
    if (a->kind == PASS_FWD) la__lin_ext_store(a->j, S, u->fS, u->fz);
    if (a->kind == PASS_BWD_REV) la__lin_ext_store(a->j, S, u->dS0, u->dz0);
}
static void pass_sum(const split_arg *a, const la__lin_unit *u, int64_t i, float *Ssum,
                     float *scratch) {
    int64_t tb, te;
    position(a, u->len, i, &tb, &te);
    if (a->kind == PASS_BWD_REV)
        la__lin_chunk_seg_rsum(a->j, u, tb, te, Ssum, scratch);
    else
        la__lin_chunk_seg_sum(a->j, u, tb, te, Ssum, scratch);
}
static void pass_run(const split_arg *a, const la__lin_unit *u, int64_t i, const float *Sin,
                     float *Sout, float *scratch) {
    int64_t tb, te;
    position(a, u->len, i, &tb, &te);
    switch (a->kind) {
    case PASS_FWD: la__lin_chunk_seg_fwd(a->j, u, tb, te, Sin, Sout, scratch); break;
    case PASS_BWD_FWD: la__lin_chunk_seg_bwd_fwd(a->j, u, tb, te, Sin, Sout, scratch); break;
    case PASS_BWD_REV: la__lin_chunk_seg_bwd_rev(a->j, u, tb, te, Sin, Sout, scratch); break;
    }
}

/* Task (unit, lane p). */
static void lane_task(void *arg, int64_t task, int tid) {
    const split_arg *a = arg;
    const la__lin_job *j = a->j;
    const int64_t unit = task / a->max_lanes;
    const int p = (int)(task % a->max_lanes);
    const plan *pl = &a->plans[unit];
    if (p >= pl->lanes) return;
    atomic_int *ready = a->ready + (size_t)unit * (size_t)(a->nseg_max + 1);
    atomic_int *summed = a->summed + (size_t)unit * (size_t)a->max_lanes;
    la__lin_unit u;
    la__lin_unit_init(j, unit, &u);
    float *scratch = la__scratch(j->ctx, tid);
    const int64_t nseg = segments(a, u.len), k0 = pl->k[p], k1 = pl->k[p + 1];
    if (p == 0) {
        pass_init(a, &u, state_slot(a, unit, 0));
        publish(&ready[0]);
    } else {
        const int64_t jp = pl->j[p];
        for (int64_t i = jp; i < k0; i++) pass_sum(a, &u, i, sum_slot(a, unit, i), scratch);
        publish(&summed[p]);
        wait_for(&ready[jp]);
        /* S[i+1] = S[i] + Sloc[i], the states between in this lane's own sum
         * slots (lane p - 1 writes those of W); S[k0] into W */
        const size_t n = kvx(j);
        const float *Sin = state_slot(a, unit, jp);
        for (int64_t i = jp; i < k0; i++) {
            float *Ss = sum_slot(a, unit, i);
            float *Sout = i + 1 == k0 ? state_slot(a, unit, k0) : Ss;
            for (size_t x = 0; x < n; x++) Sout[x] = Sin[x] + Ss[x];
            Sin = Sout;
        }
        publish(&ready[k0]);
    }
    /* the reverse sums read rows this lane's sweeps overwrite */
    const int guard = a->kind == PASS_BWD_REV && p + 1 < pl->lanes;
    /* the next lane makes S[k1] itself when it summed anything */
    const int next_makes_k1 = p + 1 < pl->lanes && pl->j[p + 1] < k1;
    for (int64_t i = k0; i < k1; i++) {
        if (guard && i == pl->j[p + 1]) wait_for(&summed[p + 1]);
        if (next_makes_k1 && i + 1 == k1) {
            pass_run(a, &u, i, state_slot(a, unit, i), discard_slot(a, unit, p), scratch);
        } else {
            pass_run(a, &u, i, state_slot(a, unit, i), state_slot(a, unit, i + 1), scratch);
            publish(&ready[i + 1]);
        }
    }
    if (k1 == nseg) pass_final(a, &u, state_slot(a, unit, nseg));
}

/* One thread: every unit's positions in order, each producing the next
 * state (slots 2 and 3 of the scratch's four state slots). */
static void serial_task(void *arg, int64_t unit, int tid) {
    const split_arg *a = arg;
    const la__lin_job *j = a->j;
    const int64_t KVx = j->K * la__lin_vx(j);
    la__lin_unit u;
    la__lin_unit_init(j, unit, &u);
    float *scratch = la__scratch(j->ctx, tid);
    float *Sin = scratch + 2 * KVx, *Sout = scratch + 3 * KVx;
    pass_init(a, &u, Sin);
    const int64_t nseg = segments(a, u.len);
    for (int64_t i = 0; i < nseg; i++) {
        pass_run(a, &u, i, Sin, Sout, scratch);
        float *t = Sin;
        Sin = Sout;
        Sout = t;
    }
    pass_final(a, &u, Sin); /* the initial state for an empty sequence */
}

int la__lin_split_over_time(const la__lin_job *j) {
    return la__num_seqs(j->dims) * j->H < LA__LIN_SPLIT_BELOW &&
           j->Tmax >= 2 * LA__LIN_SEG_CHUNKS * j->chunk;
}

static void run_pass(split_arg *a, pass_kind kind) {
    a->kind = kind;
    if (la_ctx_threads(a->j->ctx) == 1) {
        la__parallel_for(a->j->ctx, a->units, serial_task, a);
        return;
    }
    const size_t slots = (size_t)a->units * (size_t)(a->nseg_max + 1);
    for (size_t i = 0; i < slots; i++) atomic_init(&a->ready[i], 0);
    for (size_t i = 0; i < (size_t)a->units * (size_t)a->max_lanes; i++)
        atomic_init(&a->summed[i], 0);
    for (int64_t unit = 0; unit < a->units; unit++) {
        int64_t start, len;
        la__seq_bounds(a->j->dims, unit / a->j->H, &start, &len);
        make_plan(segments(a, len), a->max_lanes, kind == PASS_FWD ? SUM_COST_FWD : SUM_COST_BWD,
                  &a->plans[unit]);
    }
    la__parallel_for(a->j->ctx, a->units * a->max_lanes, lane_task, a);
}

la_status la__lin_run_split(const char *op, const la__lin_job *j, int backward) {
    split_arg a;
    memset(&a, 0, sizeof a);
    a.j = j;
    a.units = la__num_seqs(j->dims) * j->H; /* < LA__LIN_SPLIT_BELOW */
    a.seg_len = LA__LIN_SEG_CHUNKS * j->chunk;
    a.nseg_max = (j->Tmax + a.seg_len - 1) / a.seg_len;
    const int threads = la_ctx_threads(j->ctx);
    if (threads > 1) {
        /* lanes per unit: the threads shared out over the units */
        a.max_lanes = (int)((threads + a.units - 1) / a.units);
        if (a.max_lanes > a.nseg_max) a.max_lanes = (int)a.nseg_max;
        const size_t n = kvx(j), slots = (size_t)a.units * (size_t)(a.nseg_max + 1);
        const size_t lim = SIZE_MAX / sizeof(float) / n / 3;
        const size_t nl = (size_t)a.units * (size_t)a.max_lanes;
        a.W = slots <= lim ? malloc((2 * slots + nl) * n * sizeof(float)) : NULL;
        a.Ws = a.W ? a.W + slots * n : NULL;
        a.Wd = a.W ? a.Ws + slots * n : NULL;
        a.ready = malloc(slots * sizeof *a.ready);
        a.summed = malloc(nl * sizeof *a.summed);
        a.plans = calloc((size_t)a.units, sizeof *a.plans);
        int64_t *kj = calloc((size_t)a.units * (2 * (size_t)a.max_lanes + 1), sizeof *kj);
        if (!a.W || !a.ready || !a.summed || !a.plans || !kj) {
            free(a.W);
            free(a.ready);
            free(a.summed);
            free(a.plans);
            free(kj);
            return la__error(LA_ERR_OUT_OF_MEMORY,
                             "%s: out of memory for %zu segment states of %zu floats (one "
                             "sequence split over time)",
                             op, 2 * slots + nl, n);
        }
        for (int64_t unit = 0; unit < a.units; unit++) {
            a.plans[unit].k = kj + (size_t)unit * (2 * (size_t)a.max_lanes + 1);
            a.plans[unit].j = a.plans[unit].k + a.max_lanes + 1;
        }
    }
    if (backward) {
        run_pass(&a, PASS_BWD_FWD);
        run_pass(&a, PASS_BWD_REV);
    } else {
        run_pass(&a, PASS_FWD);
    }
    free(a.W);
    free(a.ready);
    free(a.summed);
    if (a.plans) free(a.plans[0].k);
    free(a.plans);
    return LA_OK;
}
