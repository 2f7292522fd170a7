/* Forward and backward of linear attention (causal chunk, identity map,
 * unnormalised, scale K^-1/2) and simple GLA (chunk, per-token log-gates in
 * [-0.1, -0.01]) of two liblinattn.so builds, alternating in one process
 * (bench/NOTES.md, cpu-lin8).
 *
 * Shape of issue 12 by default: B = 1, H = 8, T = 8192, K = V = 128, chunk
 * 64, one thread. Per pair (order swapped every pair): old forward +
 * backward, new forward + backward, each timed in thread CPU (each context
 * has one thread); the FMA peak (ab_peak.h) timed before each pair; FLOPs of
 * the registry's chunk model (forward T((C+1)(K+V) + 4KV) per head, fwd+bwd
 * three times that). Prints medians and ranges, % of peak, new/old speed and
 * FNV hashes of o, dq, dk, dv and (simple GLA) dg (equal when a change keeps
 * the bits; dg hashed since cpu-sgla12).
 *
 * cpu-sgsaved13: simple GLA (cpu-saved16: or linear attention) with a
 * saved-for-backward object (la_saved, reused over the run) on the side(s)
 * the last argument names (a side's library must have it): `new`,
 * `old`, `both` or `none` (default). With OLD.so = NEW.so that is the A/B
 * of saved vs recompute in one library (and `both` / `none` its A/A).
 *
 * cpu-linbwd18: LIN_AB_NORM=1 in the environment times linear attention
 * normalised with elu1 features instead (identity features, unnormalised
 * by default).
 *
 * cpu-sgla19: AB_THREADS=n runs both sides on n threads, timed by the wall
 * clock (% of peak then against one core's peak).
 *
 * cpu-fwd21: LIN_AB_FWD=1 skips the backward (forward-only pairs; the bwd
 * columns then read 0).
 *
 * Built with the tools (CMake target lin_ab).
 * usage: lin_ab OLD.so NEW.so [pairs] [T] [op: lin | sgla] [saved: none|new|old|both] */
#define _POSIX_C_SOURCE 200809L
#include "linattn.h"
#include "ab_api.h"

#include "ab_peak.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* cpu-sgla19: AB_THREADS=n in the environment gives each context n threads
 * (default 1) and then times wall-clock (CLOCK_MONOTONIC), since the
 * caller's thread CPU time no longer covers the call. */
static int ab_threads = 1;

static double ab_clock(void) {
    if (ab_threads == 1) return tcpu();
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct lib {
    la_ctx *ctx;
    la_saved *saved; /* opts.saved (NULL: recompute) */
    lin_def_fn ldef;
    lin_fwd_fn lfwd;
    lin_bwd_fn lbwd;
    sg_fwd_fn sfwd;
    sg_bwd_fn sbwd;
} lib;

static int open_lib(const char *path, lib *l) {
    void *h = ab_dlopen(path);
    if (!h) return 1;
    ctx_create_fn cc = (ctx_create_fn)(uintptr_t)dlsym(h, "la_ctx_create");
    l->ldef = (lin_def_fn)(uintptr_t)dlsym(h, "la_linear_attn_opts_default");
    l->lfwd = (lin_fwd_fn)(uintptr_t)dlsym(h, "la_linear_attn_forward");
    l->lbwd = (lin_bwd_fn)(uintptr_t)dlsym(h, "la_linear_attn_backward");
    l->sfwd = (sg_fwd_fn)(uintptr_t)dlsym(h, "la_simple_gla_forward");
    l->sbwd = (sg_bwd_fn)(uintptr_t)dlsym(h, "la_simple_gla_backward");
    if (!cc || !l->ldef || !l->lfwd || !l->lbwd || !l->sfwd || !l->sbwd || cc(&l->ctx, ab_threads) != LA_OK)
        return 1;
    l->saved = NULL;
    return 0;
}

/* The side's la_saved, in its own context (the library must have it). */
static int open_saved(const char *path, lib *l) {
    saved_create_fn sc = (saved_create_fn)(uintptr_t)dlsym(ab_dlopen(path), "la_saved_create");
    return !sc || sc(l->ctx, &l->saved) != LA_OK;
}

/* cpu-sglabwd18: the tensors 64-byte aligned (as torch allocates them) with
 * AB_ALIGN64=1 in the environment; else malloc's alignment (16 bytes past a
 * page for these sizes) */
static float *ab_alloc(size_t bytes) {
    const char *e = getenv("AB_ALIGN64");
    if (e && *e == '1') return aligned_alloc(64, (bytes + 63) / 64 * 64);
    return malloc(bytes);
}

static float *rnd(size_t n, float lo, float hi) {
    float *x = ab_alloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)rand() / (float)RAND_MAX;
    return x;
}

typedef struct bufs {
    const float *q, *k, *v, *g, *d_o;
    float *o, *dq, *dk, *dv, *dg;
} bufs;

static int fwd_only(void) {
    const char *e = getenv("LIN_AB_FWD");
    return e && *e == '1';
}

/* forward then backward; returns 0 on success, times in t[0] (fwd), t[1] (bwd) */
static int run(const lib *l, int sgla, const la_dims *d, bufs *b, double t[2]) {
    double t0 = ab_clock();
    la_status st;
    if (sgla) {
        la_gated_opts o = {.form = LA_FORM_CHUNK, .saved = l->saved};
        st = l->sfwd(l->ctx, &o, d, b->o, NULL, b->q, b->k, b->v, b->g, NULL, NULL);
        t[0] = ab_clock() - t0;
        t0 = ab_clock();
        if (st == LA_OK && !fwd_only())
            st = l->sbwd(l->ctx, &o, d, b->dq, b->dk, b->dv, b->dg, NULL, NULL, b->d_o, NULL, b->q,
                         b->k, b->v, b->g, NULL, NULL);
    } else {
        la_linear_attn_opts o = l->ldef();
        const char *nm = getenv("LIN_AB_NORM");
        const int norm = nm && atoi(nm) != 0;
        o.feature_map = norm ? LA_FEATURE_ELU1 : LA_FEATURE_IDENTITY;
        o.causal = 1;
        o.form = LA_FORM_CHUNK;
        o.normalize = norm;
        o.saved = l->saved; /* set only on a side given one: a library from
                               before cpu-saved16 has no such field */
        st = l->lfwd(l->ctx, &o, d, b->o, NULL, NULL, b->q, b->k, b->v, NULL, NULL);
        t[0] = ab_clock() - t0;
        t0 = ab_clock();
        if (st == LA_OK && !fwd_only())
            st = l->lbwd(l->ctx, &o, d, b->dq, b->dk, b->dv, NULL, NULL, b->d_o, NULL, NULL, b->q,
                         b->k, b->v, NULL, NULL);
    }
    t[1] = ab_clock() - t0;
    return st != LA_OK;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: lin_ab OLD.so NEW.so [pairs] [T] [lin|sgla] [none|new|old|both]\n");
        return 2;
    }
    const int pairs = argc > 3 ? atoi(argv[3]) : 9;
    const char *th = getenv("AB_THREADS");
    if (th && atoi(th) > 1) ab_threads = atoi(th);
    const int64_t T = argc > 4 ? atoll(argv[4]) : 8192, H = 8, K = 128, V = 128, C = 64;
    const int sgla = argc > 5 && !strcmp(argv[5], "sgla");
    lib L[2];
    if (open_lib(argv[1], &L[0]) || open_lib(argv[2], &L[1])) return 1;
    const char *sv = argc > 6 ? argv[6] : "none";
    const int sv_old = !strcmp(sv, "old") || !strcmp(sv, "both");
    const int sv_new = !strcmp(sv, "new") || !strcmp(sv, "both");
    if ((sv_old && open_saved(argv[1], &L[0])) || (sv_new && open_saved(argv[2], &L[1]))) {
        fprintf(stderr, "lin_ab: la_saved_create failed\n");
        return 1;
    }
    const size_t nk = (size_t)(T * H * K), nv = (size_t)(T * H * V), ng = (size_t)(T * H);
    bufs b[2];
    const float *q = rnd(nk, -1, 1), *k = rnd(nk, -1, 1), *v = rnd(nv, -1, 1);
    const float *g = rnd(ng, -0.1f, -0.01f), *d_o = rnd(nv, -1, 1);
    for (int i = 0; i < 2; i++) {
        b[i] = (bufs){q,
                      k,
                      v,
                      g,
                      d_o,
                      ab_alloc(nv * 4),
                      ab_alloc(nk * 4),
                      ab_alloc(nk * 4),
                      ab_alloc(nv * 4),
                      ab_alloc(ng * 4)};
        memset(b[i].o, 0, nv * 4);
    }
    la_dims d = {.B = 1, .T = T, .H = H, .K = K, .V = V};
    const double fl = (double)T * (double)H * ((double)(C + 1) * (K + V) + 4.0 * K * V);
    double *tf[2], *tb[2], *ts[2], *pk = malloc((size_t)pairs * sizeof(double));
    for (int i = 0; i < 2; i++) {
        tf[i] = malloc((size_t)pairs * sizeof(double));
        tb[i] = malloc((size_t)pairs * sizeof(double));
        ts[i] = malloc((size_t)pairs * sizeof(double));
    }
    double warm[2];
    for (int i = 0; i < 2; i++)
        if (run(&L[i], sgla, &d, &b[i], warm)) return 1;
    double ratio[64], bratio[64], fratio[64];
    for (int p = 0; p < pairs; p++) {
        pk[p] = peak();
        for (int s = 0; s < 2; s++) {
            const int i = (p % 2) ^ s;
            double t[2];
            if (run(&L[i], sgla, &d, &b[i], t)) return 1;
            tf[i][p] = t[0];
            tb[i][p] = t[1];
            ts[i][p] = t[0] + t[1];
        }
        if (p < 64)
            ratio[p] = ts[0][p] / ts[1][p], bratio[p] = tb[0][p] / tb[1][p],
            fratio[p] = tf[0][p] / tf[1][p];
    }
    const int nr = pairs < 64 ? pairs : 64;
    const double rmed = ab_median(ratio, nr, NULL, NULL), rlo = ratio[0], rhi = ratio[nr - 1];
    const double P = ab_median(pk, pairs, NULL, NULL);
    printf("%s T=%lld H=%lld K=V=%lld, %d pairs, peak median %.1f GFLOP/s; la_saved on: %s\n",
           sgla ? "simple GLA" : "linear", (long long)T, (long long)H, (long long)K, pairs, P, sv);
    for (int i = 0; i < 2; i++) {
        double lo = ts[i][0], hi = ts[i][0];
        for (int p = 0; p < pairs; p++)
            lo = ts[i][p] < lo ? ts[i][p] : lo, hi = ts[i][p] > hi ? ts[i][p] : hi;
        const double f = ab_median(tf[i], pairs, NULL, NULL),
                     bw = ab_median(tb[i], pairs, NULL, NULL),
                     s = ab_median(ts[i], pairs, NULL, NULL);
        printf("%s: fwd %.1f ms (%.1f%%)  bwd %.1f ms (%.1f%%)  fwd+bwd %.1f ms [%.1f-%.1f] "
               "(%.1f%% of peak)\n",
               i ? "new" : "old", 1e3 * f, 100 * fl / f / (P * 1e9), 1e3 * bw,
               100 * 2 * fl / bw / (P * 1e9), 1e3 * s, 1e3 * lo, 1e3 * hi,
               100 * 3 * fl / s / (P * 1e9));
    }
    printf("fwd+bwd new/old speed: median %.3fx, range %.3f-%.3f\n", rmed, rlo, rhi);
    const double fmed = ab_median(fratio, nr, NULL, NULL);
    printf("fwd new/old speed: median %.3fx, range %.3f-%.3f\n", fmed, fratio[0], fratio[nr - 1]);
    const double bmed = ab_median(bratio, nr, NULL, NULL);
    printf("bwd new/old speed: median %.3fx, range %.3f-%.3f\n", bmed, bratio[0], bratio[nr - 1]);
    for (int i = 0; i < 2; i++)
        printf("%s hashes o %016llx dq %016llx dk %016llx dv %016llx dg %016llx\n",
               i ? "new" : "old", (unsigned long long)ab_fnv(AB_FNV0, b[i].o, nv),
               (unsigned long long)ab_fnv(AB_FNV0, b[i].dq, nk),
               (unsigned long long)ab_fnv(AB_FNV0, b[i].dk, nk),
               (unsigned long long)ab_fnv(AB_FNV0, b[i].dv, nv),
               (unsigned long long)(sgla ? ab_fnv(AB_FNV0, b[i].dg, ng) : 0));
    return 0;
}
