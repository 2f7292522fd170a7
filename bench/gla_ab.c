/* GLA forward of two liblinattn.so builds, alternating in one process
 * (bench/NOTES.md, cpu-gla7): old vs new library, chunk and recurrent form.
 *
 * Shape of issue 12 by default: B = 1, H = 8, T = 8192, K = V = 128, chunk
 * 64, per-key log-gates in [-0.1, -0.01], one thread. Per pair (order swapped
 * every pair): old chunk, new chunk (and, with --rec, the new library's
 * recurrent form once per pair). Times in thread CPU (each context has one
 * thread, so all work runs on the caller's); the FMA peak (AVX-512, 24
 * chains; AVX2, 12) timed before each pair; FLOPs of the registry's model
 * (5.38 GFLOP at the default shape, as `linattn bench`). Prints the medians,
 * % of peak, new/old speed and an FNV hash of o for each library (equal
 * when the change keeps the bits).
 *
 * built with the tools (CMake target gla_ab), or by hand from the repository root:
 *   gcc -O2 -std=c11 -Iinclude bench/gla_ab.c -ldl -lm -o gla_ab
 * usage: gla_ab OLD.so NEW.so [pairs] [T] [--rec | --bwd]   (env GLA_AB_H: heads, default 8;
 * GLA_AB_THREADS: threads, default 1, wall-clock timed above 1)
 * --bwd (cpu-gla14): each timed call is the chunk forward + la_gla_backward
 * (d_o random), FLOPs three times the forward's, and the hash covers o, dq,
 * dk, dv and dg.
 * cpu-glsaved17: env GLA_AB_SAVED = new | old | both gives that side a
 * saved-for-backward object (la_saved, reused over the run; the library
 * must have GLA's): with OLD.so = NEW.so, the A/B of saved vs recompute in
 * one library (`both` or unset: its A/A). */
#define _POSIX_C_SOURCE 200809L
#include "linattn.h"

#include "ab_peak.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef la_status (*ctx_create_fn)(la_ctx **, int);
typedef la_status (*gla_fwd_fn)(la_ctx *, const la_gated_opts *, const la_dims *, float *, float *,
                                const float *, const float *, const float *, const float *,
                                const float *);
typedef __typeof__(&la_gla_backward) gla_bwd_fn;
typedef __typeof__(&la_saved_create) saved_create_fn;
typedef struct lib {
    la_ctx *ctx;
    la_saved *saved; /* opts.saved (NULL: recompute) */
    gla_fwd_fn fwd;
    gla_bwd_fn bwd;
} lib;

/* cpu-glab19: env GLA_AB_THREADS (default 1): the contexts' threads; above
 * 1 the calls are timed by the wall clock (the helpers' work is not on the
 * caller's CPU clock) and "% pk" is of one core's peak times the threads. */
static int ab_threads(void) {
    const char *e = getenv("GLA_AB_THREADS");
    const int n = e ? atoi(e) : 1;
    return n < 1 ? 1 : n;
}

static double ab_time(void) {
    if (ab_threads() == 1) return tcpu();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int open_lib(const char *path, lib *l) {
    void *h = ab_dlopen(path);
    if (!h) return 1;
    ctx_create_fn cc = (ctx_create_fn)(uintptr_t)dlsym(h, "la_ctx_create");
    l->fwd = (gla_fwd_fn)(uintptr_t)dlsym(h, "la_gla_forward");
    l->bwd = (gla_bwd_fn)(uintptr_t)dlsym(h, "la_gla_backward");
    if (!cc || !l->fwd || !l->bwd || cc(&l->ctx, ab_threads()) != LA_OK) return 1;
    l->saved = NULL;
    return 0;
}

/* The side's la_saved, in its own context (the library must have it). */
static int open_saved(const char *path, lib *l) {
    saved_create_fn sc = (saved_create_fn)(uintptr_t)dlsym(ab_dlopen(path), "la_saved_create");
    return !sc || sc(l->ctx, &l->saved) != LA_OK;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: gla_ab OLD.so NEW.so [pairs] [T] [--rec]\n");
        return 2;
    }
    const int pairs = argc > 3 ? atoi(argv[3]) : 7;
    const char *hs = getenv("GLA_AB_H"); /* heads (default 8) */
    const int64_t T = argc > 4 ? atoll(argv[4]) : 8192, H = hs ? atoll(hs) : 8, K = 128, V = 128;
    const int rec = argc > 5 && !strcmp(argv[5], "--rec");
    const int bwd = argc > 5 && !strcmp(argv[5], "--bwd");
    lib L[2];
    if (open_lib(argv[1], &L[0]) || open_lib(argv[2], &L[1])) return 1;
    const char *sv = getenv("GLA_AB_SAVED");
    sv = sv ? sv : "none";
    const int sv_old = !strcmp(sv, "old") || !strcmp(sv, "both");
    const int sv_new = !strcmp(sv, "new") || !strcmp(sv, "both");
    if ((sv_old && open_saved(argv[1], &L[0])) || (sv_new && open_saved(argv[2], &L[1]))) {
        fprintf(stderr, "gla_ab: la_saved_create failed\n");
        return 1;
    }
    const size_t nk = (size_t)(T * H * K), nv = (size_t)(T * H * V);
    float *q = malloc(nk * 4), *k = malloc(nk * 4), *v = malloc(nv * 4), *g = malloc(nk * 4);
    float *o = malloc(nv * 4), *d_o = malloc(nv * 4), *dv = malloc(nv * 4);
    float *dq = malloc(nk * 4), *dk = malloc(nk * 4), *dg = malloc(nk * 4);
    if (!q || !k || !v || !g || !o || !d_o || !dv || !dq || !dk || !dg) return 1;
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < nk; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        const float u = (float)((s >> 40) * (1.0 / 16777216.0));
        q[i] = u - 0.5f;
        k[i] = 0.5f - u * u;
        g[i] = -0.01f - 0.09f * (float)((s >> 20 & 0xfffff) * (1.0 / 1048576.0));
    }
    for (size_t i = 0; i < nv; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        v[i] = (float)((s >> 40) * (1.0 / 16777216.0)) - 0.5f;
        d_o[i] = (float)((s >> 16 & 0xffffff) * (1.0 / 16777216.0)) - 0.5f;
    }
    const la_dims d = {.B = 1, .T = T, .H = H, .K = K, .V = V};
    la_gated_opts oc = {.form = LA_FORM_CHUNK}, orr = oc;
    orr.form = LA_FORM_RECURRENT;
    const char *isa = getenv("LINATTN_ISA"); /* the AVX2 path's % is of the AVX2 peak */
    const int has512 = __builtin_cpu_supports("avx512f") && !(isa && strcmp(isa, "avx512"));
    /* the registry's model of the GLA forward (both forms): per token and
     * head 4 K V (state read and update) + the chunk's intra products */
    const char *fl = getenv("GLA_AB_GFLOP");
    const double gflop =
        (bwd ? 3.0 : 1.0) * (fl ? atof(fl) : 5.38 * (double)T / 8192.0 * (double)H / 8.0);
    double t[3][64], pk[64];
    uint64_t hash[2] = {0, 0};
    for (int w = 0; w < 2; w++) L[w].fwd(L[w].ctx, &oc, &d, o, NULL, q, k, v, g, NULL); /* warm */
    for (int p = 0; p < pairs && p < 64; p++) {
        pk[p] = has512 ? peak512() : peak256();
        for (int u = 0; u < 2; u++) {
            const int w = (p & 1) ? 1 - u : u;
            memset(o, 0xff, nv * 4);
            la_gated_opts os = oc;
            if (L[w].saved) os.saved = L[w].saved; /* only on a side given one */
            double t0 = ab_time();
            if (L[w].fwd(L[w].ctx, &os, &d, o, NULL, q, k, v, g, NULL) != LA_OK) return 1;
            if (bwd && L[w].bwd(L[w].ctx, &os, &d, dq, dk, dv, dg, NULL, d_o, NULL, q, k, v, g,
                                NULL) != LA_OK)
                return 1;
            t[w][p] = ab_time() - t0;
            hash[w] = ab_fnv(AB_FNV0, o, nv);
            if (bwd) {
                hash[w] = ab_fnv(ab_fnv(hash[w], dq, nk), dk, nk);
                hash[w] = ab_fnv(ab_fnv(hash[w], dv, nv), dg, nk);
            }
        }
        if (rec) {
            double t0 = tcpu();
            L[1].fwd(L[1].ctx, &orr, &d, o, NULL, q, k, v, g, NULL);
            t[2][p] = tcpu() - t0;
        }
    }
    const int n = pairs < 64 ? pairs : 64;
    double ratio[64];
    for (int p = 0; p < n; p++) ratio[p] = t[0][p] / t[1][p];
    const double peak = ab_threads() * ab_median(pk, n, NULL, NULL), r = ab_median(ratio, n, NULL, NULL);
    const double to = ab_median(t[0], n, NULL, NULL), tn = ab_median(t[1], n, NULL, NULL);
    printf("T=%lld pairs=%d peak %.1f GFLOP/s (%s, x %d threads); la_saved on: %s\n",
           (long long)T, n, peak, has512 ? "avx512 loop" : "avx2 loop", ab_threads(), sv);
    printf(bwd ? "fwd+bwd: " : "");
    printf("old chunk %.2f ms (%.1f%% pk)  new chunk %.2f ms (%.1f%% pk)  new/old speed %.3fx\n",
           1e3 * to, 100 * gflop / to / peak, 1e3 * tn, 100 * gflop / tn / peak, r);
    if (rec) {
        const double tr = ab_median(t[2], n, NULL, NULL);
        printf("new recurrent %.2f ms (%.1f%% pk)  chunk/recurrent speed %.2fx\n", 1e3 * tr,
               100 * gflop / tr / peak, tr / tn);
    }
    printf("hash old %016llx new %016llx %s\n", (unsigned long long)hash[0],
           (unsigned long long)hash[1], hash[0] == hash[1] ? "same bits" : "BITS DIFFER");
    return 0;
}
