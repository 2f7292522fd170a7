/* The lanes of the split-over-time passes (split_lanes.h). */
#include "split_lanes.h"

#include <inttypes.h>
#include <string.h>

typedef struct lane_run {
    const la__lanes *L;
    const la__lane_ops *ops;
} lane_run;

float *la__lanes_state(const la__lanes *L, int64_t unit, int64_t i) {
    return L->W + ((size_t)unit * (size_t)(L->nseg_max + 1) + (size_t)i) * L->n;
}
float *la__lanes_sum(const la__lanes *L, int64_t unit, int64_t i) {
    return L->Ws + ((size_t)unit * (size_t)L->nseg_max + (size_t)i) * L->n;
}
static float *own_slot(const la__lanes *L, int64_t unit, int p, int which) {
    return L->Wp + (((size_t)unit * (size_t)L->max_lanes + (size_t)p) * 2 + (size_t)which) * L->n;
}

/* Task (unit, lane p). */
static void lane_task(void *arg, int64_t task, int tid) {
    const lane_run *r = arg;
    const la__lanes *L = r->L;
    const la__lane_ops *o = r->ops;
    const int64_t unit = task / L->max_lanes;
    const int p = (int)(task % L->max_lanes);
    const plan *pl = &L->plans[unit];
    if (p >= pl->lanes) return;
    atomic_int *ready = L->ready + (size_t)unit * (size_t)(L->nseg_max + 1);
    atomic_int *summed = L->summed + (size_t)unit * (size_t)L->max_lanes;
    const int64_t n = o->count(o->arg, unit), k0 = pl->k[p], k1 = pl->k[p + 1];
    if (p == 0) {
        o->init(o->arg, unit, la__lanes_state(L, unit, 0));
        la__lanes_publish(&ready[0]);
    } else {
        const int64_t jp = pl->j[p];
        for (int64_t i = jp; i < k0; i++) o->sum(o->arg, unit, i, la__lanes_sum(L, unit, i), tid);
        la__lanes_publish(&summed[p]);
        la__lanes_wait(&ready[jp]);
        /* S[jp + 1 .. k0 - 1] in this lane's own slots (the lane before
         * writes those of W), S[k0] into W */
        const float *Sin = la__lanes_state(L, unit, jp);
        for (int64_t i = jp; i < k0; i++) {
            float *Sout =
                i + 1 == k0 ? la__lanes_state(L, unit, k0) : own_slot(L, unit, p, (int)(i & 1));
            o->add(o->arg, unit, i, Sin, la__lanes_sum(L, unit, i), Sout);
            Sin = Sout;
        }
        la__lanes_publish(&ready[k0]);
    }
    const int guard = o->guard_sums && p + 1 < pl->lanes;
    /* the next lane makes S[k1] itself when it summed anything */
    const int next_makes_k1 = p + 1 < pl->lanes && pl->j[p + 1] < k1;
    for (int64_t i = k0; i < k1; i++) {
        if (guard && i == pl->j[p + 1]) la__lanes_wait(&summed[p + 1]);
        const float *Sin = la__lanes_state(L, unit, i);
        if (next_makes_k1 && i + 1 == k1) {
            o->run(o->arg, unit, i, Sin, own_slot(L, unit, p, 0), tid);
        } else {
            o->run(o->arg, unit, i, Sin, la__lanes_state(L, unit, i + 1), tid);
            la__lanes_publish(&ready[i + 1]);
        }
    }
    if (k1 == n) o->final(o->arg, unit, la__lanes_state(L, unit, n));
}

/* One thread: the unit's positions in order. */
static void serial_task(void *arg, int64_t unit, int tid) {
    const lane_run *r = arg;
    const la__lane_ops *o = r->ops;
    float *Sin, *Sout;
    o->serial_bufs(o->arg, tid, &Sin, &Sout);
    o->init(o->arg, unit, Sin);
    const int64_t n = o->count(o->arg, unit);
    for (int64_t i = 0; i < n; i++) {
        o->run(o->arg, unit, i, Sin, Sout, tid);
        float *t = Sin;
        Sin = Sout;
        Sout = t;
    }
    o->final(o->arg, unit, Sin); /* the initial state for an empty sequence */
}

char *la__split_mem(la_ctx *ctx, const char *op, size_t task_bytes, size_t bytes) {
    const size_t off = (task_bytes + 63) / 64 * 64;
    if (off < task_bytes || bytes > SIZE_MAX - off || la__scratch_reserve(ctx, off + bytes)) {
        la__error(LA_ERR_OUT_OF_MEMORY,
                  "%s: out of memory for %zu bytes of segment states (one sequence split over "
                  "time)",
                  op, bytes);
        return NULL;
    }
    return (char *)la__scratch(ctx, 0) + off;
}

void la__lanes_take(la__lanes *L, la__arena *a, la_ctx *ctx, int64_t units, int64_t nseg_max,
                    size_t n, int take_sums) {
    memset(L, 0, sizeof *L);
    L->ctx = ctx;
    L->units = units;
    L->nseg_max = nseg_max;
    L->n = n;
    const int threads = la_ctx_threads(ctx);
    if (threads == 1) return;
    int64_t lanes = (threads + units - 1) / units;
    if (lanes > nseg_max) lanes = nseg_max;
    if (lanes < 1) lanes = 1;
    L->max_lanes = (int)lanes;
    const size_t slots = (size_t)units * (size_t)(nseg_max + 1);
    const size_t own = (size_t)units * (size_t)L->max_lanes;
    L->W = la__arena_floats(a, slots > SIZE_MAX / n ? SIZE_MAX : slots * n);
    L->Wp = la__arena_floats(a, 2 * own > SIZE_MAX / n ? SIZE_MAX : 2 * own * n);
    if (take_sums) L->Ws = la__arena_floats(a, slots > SIZE_MAX / n ? SIZE_MAX : slots * n);
    L->ready = la__arena_take(a, slots, sizeof *L->ready);
    L->summed = la__arena_take(a, own, sizeof *L->summed);
    L->plans = la__arena_take(a, (size_t)units, sizeof *L->plans);
    L->kj = la__arena_take(a, (size_t)units * (2 * (size_t)L->max_lanes + 1), sizeof *L->kj);
    for (int64_t unit = 0; L->plans && unit < units; unit++) {
        L->plans[unit].k = L->kj + (size_t)unit * (2 * (size_t)L->max_lanes + 1);
        L->plans[unit].j = L->plans[unit].k + L->max_lanes + 1;
    }
}

la_status la__lanes_open(la__lanes *L, la_ctx *ctx, const char *op, size_t task_bytes,
                         int64_t units, int64_t nseg_max, size_t n, int take_sums, size_t extra,
                         char **extra_mem) {
    la__arena a = {NULL, 0, 0};
    la__lanes_take(L, &a, ctx, units, nseg_max, n, take_sums);
    const size_t lanes = la__arena_size(&a);
    *extra_mem = NULL;
    if (a.overflow || extra > SIZE_MAX - lanes)
        return la__error(LA_ERR_OUT_OF_MEMORY,
                         "%s: the segment states of %" PRId64 " x %" PRId64
                         " segments overflow size_t (one sequence split over time)",
                         op, units, nseg_max);
    if (lanes + extra == 0) return LA_OK;
    char *mem = la__split_mem(ctx, op, task_bytes, lanes + extra);
    if (!mem) return LA_ERR_OUT_OF_MEMORY;
    a.base = mem;
    a.used = 0;
    la__lanes_take(L, &a, ctx, units, nseg_max, n, take_sums);
    *extra_mem = extra ? mem + lanes : NULL;
    return LA_OK;
}

void la__lanes_plan_all(la__lanes *L, const la__lane_ops *ops, double r) {
    for (int64_t unit = 0; L->max_lanes && unit < L->units; unit++)
        make_plan(ops->count(ops->arg, unit), L->max_lanes, r, &L->plans[unit]);
}

void la__lanes_run(la__lanes *L, const la__lane_ops *ops) {
    lane_run r = {L, ops};
    if (!L->max_lanes) {
        la__parallel_for(L->ctx, L->units, serial_task, &r);
        return;
    }
    const size_t slots = (size_t)L->units * (size_t)(L->nseg_max + 1);
    for (size_t i = 0; i < slots; i++) atomic_init(&L->ready[i], 0);
    for (size_t i = 0; i < (size_t)L->units * (size_t)L->max_lanes; i++)
        atomic_init(&L->summed[i], 0);
    la__parallel_for(L->ctx, L->units * L->max_lanes, lane_task, &r);
}
