/* The lane plan of the split-over-time passes (split_lanes.h runs them;
 * linear_attn/split.c, gla/split_bwd.c, gla/split_gla.c; gla/split.c plans
 * with shared products of its own): lane 0 runs positions [0, k1) from the known
 * state; lane p >= 1 sums [j_p, k_p) (a sum costs r of a run), waits for
 * the state at j_p, adds its sums and runs [k_p, k_{p+1}). The plan picks
 * the k_p and j_p that finish the lanes together. Only the balance depends
 * on it, never the bits. */
#ifndef LINATTN_OPS_SPLIT_PLAN_H
#define LINATTN_OPS_SPLIT_PLAN_H

#include <math.h>
#include <stdint.h>

typedef struct plan {
    int lanes;
    int64_t *k; /* [lanes + 1]: lane p runs the positions [k[p], k[p+1]) */
    int64_t *j; /* [lanes]: lane p >= 1 sums [j[p], k[p]) */
} plan;

/* Lanes that fit a finishing time F (runs as the unit); the number of lanes
 * needed to reach n, or max_lanes + 1. */
static inline int plan_try(int64_t n, int max_lanes, double r, double F, int64_t *k, int64_t *j) {
    double t = 0; /* when the current lane starts running */
    k[0] = 0;
    j[0] = 0;
    for (int p = 0; p < max_lanes; p++) {
        const double room = floor(F - t + 1e-9);
        int64_t len = room < 1 ? 0 : (int64_t)room;
        if (len > n - k[p]) len = n - k[p];
        if (len == 0) return max_lanes + 1;
        k[p + 1] = k[p] + len;
        if (k[p + 1] == n) return p + 1;
        if (p + 1 == max_lanes) break;
        /* the next lane sums [jj, k[p+1]) while lane p reaches jj */
        double best = INFINITY;
        int64_t bj = k[p];
        for (int64_t jj = k[p]; jj <= k[p + 1]; jj++) {
            const double pub = t + (double)(jj - k[p]), sum = r * (double)(k[p + 1] - jj);
            const double start = pub > sum ? pub : sum;
            if (start < best) best = start, bj = jj;
        }
        j[p + 1] = bj;
        t = best;
    }
    return max_lanes + 1;
}

static inline void make_plan(int64_t n, int max_lanes, double r, plan *pl) {
    pl->k[0] = 0;
    pl->k[1] = n;
    pl->lanes = 1;
    if (max_lanes > n) max_lanes = (int)n;
    if (max_lanes < 2) return;
    double lo = (double)n / max_lanes, hi = (double)n;
    for (int it = 0; it < 40; it++) {
        const double mid = 0.5 * (lo + hi);
        if (plan_try(n, max_lanes, r, mid, pl->k, pl->j) <= max_lanes)
            hi = mid;
        else
            lo = mid;
    }
    pl->lanes = plan_try(n, max_lanes, r, hi, pl->k, pl->j);
    if (pl->lanes > max_lanes) { /* cannot happen (F = n fits one lane) */
        pl->lanes = 1;
        pl->k[0] = 0;
        pl->k[1] = n;
    }
}

#endif
