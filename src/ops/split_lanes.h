/* The lanes of the split-over-time passes in one place (linear_attn/split.c,
 * gla/split.c, split_gla.c, split_bwd.c): a pass carries a state through the
 * positions 0, 1, ..., n-1 of every unit (a (sequence, head) pair; a
 * position is a segment, or one in reverse order), S[i+1] = run(S[i]), and
 * the pass can also make S[i+1] from S[i] and a sum of position i that
 * needs no state: S[i+1] = add(S[i], sum(i)), the same floats as run's.
 *
 * Lane p of a unit (split_plan.h): lane 0 runs [0, k1) from the initial
 * state; lane p >= 1 sums [j_p, k_p), waits for S[j_p], adds its sums in
 * order (the states between in two slots of its own) to make S[k_p] and
 * runs [k_p, k_{p+1}). Every slot has one writer: the lane before sends its
 * last state to a slot of its own when the next lane makes that state. One
 * thread: every unit's positions in order, run after run. The task of
 * (unit, lane p) has index unit * max_lanes + p, and the pool hands tasks
 * out in index order, so a lane waits only for lanes already running. */
#ifndef LINATTN_OPS_SPLIT_LANES_H
#define LINATTN_OPS_SPLIT_LANES_H

#include "../core/internal.h"
#include "split_plan.h"

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

static inline void la__lanes_publish(atomic_int *flag) {
    atomic_store_explicit(flag, 1, memory_order_release);
}
static inline void la__lanes_wait(atomic_int *flag) {
    while (!atomic_load_explicit(flag, memory_order_acquire)) sched_yield();
}

/* What a pass does; every callback gets `arg`. Callbacks that compute take
 * the thread's id for its scratch (la__scratch). */
typedef struct la__lane_ops {
    void *arg;
    int64_t (*count)(void *arg, int64_t unit);              /* positions of unit */
    void (*init)(void *arg, int64_t unit, float *S);        /* S[0] */
    void (*final)(void *arg, int64_t unit, const float *S); /* S[n] */
    void (*sum)(void *arg, int64_t unit, int64_t i, float *Ssum, int tid);
    void (*add)(void *arg, int64_t unit, int64_t i, const float *Sin, const float *Ssum,
                float *Sout);
    void (*run)(void *arg, int64_t unit, int64_t i, const float *Sin, float *Sout, int tid);
    /* one thread: two state buffers of the thread's scratch */
    void (*serial_bufs)(void *arg, int tid, float **Sa, float **Sb);
    /* lane p waits for lane p + 1's sums before running position j_{p+1}
     * (the sums read rows that run overwrites) */
    int guard_sums;
} la__lane_ops;

typedef struct la__lanes {
    la_ctx *ctx;
    int64_t units, nseg_max;
    int max_lanes;              /* 0: one thread, nothing allocated */
    size_t n;                   /* floats of a state */
    float *W;                   /* [units, nseg_max + 1, n]: S[i] */
    float *Wp;                  /* [units, max_lanes, 2, n]: a lane's own slots */
    float *Ws;                  /* [units, nseg_max, n]: the sums of a lane */
    atomic_int *ready, *summed; /* [units, nseg_max + 1], [units, max_lanes] */
    plan *plans;                /* [units] */
    int64_t *kj;
} la__lanes;

/* The memory of a split call: the part of thread 0's scratch after its
 * first task_bytes (what a task on thread 0 uses), grown by
 * la__scratch_reserve and never shrunk, so that the next call finds its
 * pages mapped. Fresh pages cost ~13 us each on first touch on the 2-vCPU
 * VM of bench/NOTES.md (a 32 MiB malloc'd block: ~100 ms), more than the
 * lanes' work. NULL (the error set, naming op) when it cannot grow. Call
 * from the caller's thread before la__parallel_for; it may move every
 * thread's scratch. */
LA_HIDDEN char *la__split_mem(la_ctx *ctx, const char *op, size_t task_bytes, size_t bytes);
/* Lanes per unit with more than one thread (the threads shared out over
 * the units, at most nseg_max; 0: one thread, nothing taken) and the
 * slots, flags and plans' storage taken from `a` (a->base NULL: only
 * counted, the same sequence sizes la__split_mem's request). take_sums 0:
 * the caller sets L->Ws ([units, nseg_max, n], memory it no longer needs). */
LA_HIDDEN void la__lanes_take(la__lanes *L, la__arena *a, la_ctx *ctx, int64_t units,
                              int64_t nseg_max, size_t n, int take_sums);
/* The lanes and `extra` bytes more for the caller (*extra_mem, 64-byte
 * aligned; NULL when 0) in one la__split_mem request. */
LA_HIDDEN la_status la__lanes_open(la__lanes *L, la_ctx *ctx, const char *op, size_t task_bytes,
                                   int64_t units, int64_t nseg_max, size_t n, int take_sums,
                                   size_t extra, char **extra_mem);
/* Every unit's plan from split_plan.h's make_plan with sum cost r (or fill
 * L->plans[unit] yourself with at most L->max_lanes lanes). */
LA_HIDDEN void la__lanes_plan_all(la__lanes *L, const la__lane_ops *ops, double r);
/* One pass over every unit (the plans made). */
LA_HIDDEN void la__lanes_run(la__lanes *L, const la__lane_ops *ops);
/* The slot S[i] of unit (the lanes' states, for a run that reads them). */
LA_HIDDEN float *la__lanes_state(const la__lanes *L, int64_t unit, int64_t i);
/* The slot of the sum of position i of unit (written by the lane that sums
 * it, before it publishes its sums). */
LA_HIDDEN float *la__lanes_sum(const la__lanes *L, int64_t unit, int64_t i);

#endif
