/* DeltaNet / Gated DeltaNet / KDA forward + backward through a saved-for-backward
 * object (la_saved) of two liblinattn.so builds, alternating in one process
 * (bench/NOTES.md, cpu-delta8): old vs new library, the path users run.
 *
 * Shape of issue 12 by default: B = 1, H = 8, T = 8192, K = V = 128, chunk
 * 64, L2-normalised q/k, one thread. Per pair (order swapped every pair):
 * old forward + backward, new forward + backward, each library with its own
 * context (one thread: all work on the caller's) and its own la_saved reused
 * over the run. Thread CPU time; the FMA peak (AVX-512, 24 chains; AVX2, 12)
 * timed before each pair; FLOPs of the registry's chunk model (fwd + bwd =
 * 3x the forward, as bench/saved_ab.c). Prints medians, ranges, % of peak
 * and an FNV hash of o, dq, dk, dv, dbeta (dg) per library (equal when the
 * change keeps the bits).
 *
 * gated = 2 runs KDA (per-key gates g [T,H,K], dg likewise; cpu-kda18): its
 * FLOPs are the kda-chunk model, T (C (3K + 2V) + 6KV) per head. KDA takes
 * la_saved since cpu-kdasaved19 (a library before it ignores the field).
 *
 * saved: 1 (default) both libraries pass their la_saved, 0 neither; two
 * digits set it per library (cpu-kdasaved19): "01" = OLD without, NEW with
 * (one build A/B'd against itself, with and without la_saved).
 *
 * built with the tools (CMake target delta_ab), or by hand from the repository root:
 *   gcc -O2 -std=c11 -Iinclude bench/delta_ab.c -ldl -lm -o delta_ab
 * usage: delta_ab OLD.so NEW.so [gated 0|1|2=kda] [pairs] [T] [threads] [saved 1|0|01|10]
 * (env DELTA_AB_FWD=1: forward only, cpu-fwd24) */
#define _POSIX_C_SOURCE 200809L
#include "linattn.h"

#include "ab_peak.h"

#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

typedef la_status (*ctx_create_fn)(la_ctx **, int);
typedef la_status (*saved_create_fn)(la_ctx *, la_saved **);
typedef la_gated_opts (*opts_fn)(void);
typedef la_status (*dfwd_fn)(la_ctx *, const la_gated_opts *, const la_dims *, float *, float *,
                             const float *, const float *, const float *, const float *,
                             const float *);
typedef la_status (*gfwd_fn)(la_ctx *, const la_gated_opts *, const la_dims *, float *, float *,
                             const float *, const float *, const float *, const float *,
                             const float *, const float *);
typedef la_status (*dbwd_fn)(la_ctx *, const la_gated_opts *, const la_dims *, float *, float *,
                             float *, float *, float *, const float *, const float *, const float *,
                             const float *, const float *, const float *, const float *);
typedef la_status (*gbwd_fn)(la_ctx *, const la_gated_opts *, const la_dims *, float *, float *,
                             float *, float *, float *, float *, const float *, const float *,
                             const float *, const float *, const float *, const float *,
                             const float *, const float *);
typedef const char *(*err_fn)(void);

typedef struct lib {
    la_ctx *ctx;
    la_saved *s;
    opts_fn opts;
    dfwd_fn dfwd;
    gfwd_fn gfwd;
    dbwd_fn dbwd;
    gbwd_fn gbwd;
    err_fn err;
} lib;

#define SYM(h, name) (void)(*(void **)(&name##_p) = dlsym(h, #name))

static int open_lib(const char *path, lib *l, int threads, int kda) {
    void *h = ab_dlopen(path);
    if (!h) return 1;
    ctx_create_fn cc = (ctx_create_fn)(uintptr_t)dlsym(h, "la_ctx_create");
    saved_create_fn sc = (saved_create_fn)(uintptr_t)dlsym(h, "la_saved_create");
    l->opts = (opts_fn)(uintptr_t)dlsym(h, "la_gated_opts_default");
    l->dfwd = (dfwd_fn)(uintptr_t)dlsym(h, "la_delta_rule_forward");
    l->gfwd = (gfwd_fn)(uintptr_t)dlsym(h, kda ? "la_kda_forward" : "la_gated_delta_rule_forward");
    l->dbwd = (dbwd_fn)(uintptr_t)dlsym(h, "la_delta_rule_backward");
    l->gbwd = (gbwd_fn)(uintptr_t)dlsym(h, kda ? "la_kda_backward" : "la_gated_delta_rule_backward");
    l->err = (err_fn)(uintptr_t)dlsym(h, "la_last_error");
    if (!cc || !sc || !l->opts || !l->dfwd || !l->gfwd || !l->dbwd || !l->gbwd || !l->err) return 1;
    if (cc(&l->ctx, threads) != LA_OK || sc(l->ctx, &l->s) != LA_OK) return 1;
    return 0;
}

typedef struct {
    int gated, saved[2];
    int fwd_only; /* env DELTA_AB_FWD=1: forward only (the backward's times are 0) */
    la_dims d;
    float *q, *k, *v, *g, *beta, *o, *dq, *dk, *dv, *dg, *dbeta, *d_o;
} prob;

static void run(const lib *l, int which, prob *p, double *tf, double *tb) {
    la_gated_opts o = l->opts();
    o.use_qk_l2norm = 1;
    o.saved = p->saved[which] ? l->s : NULL;
    la_status st;
    double t0 = tcpu();
    if (p->gated)
        st = l->gfwd(l->ctx, &o, &p->d, p->o, NULL, p->q, p->k, p->v, p->g, p->beta, NULL);
    else
        st = l->dfwd(l->ctx, &o, &p->d, p->o, NULL, p->q, p->k, p->v, p->beta, NULL);
    double t1 = tcpu();
    if (!st && !p->fwd_only) {
        if (p->gated)
            st = l->gbwd(l->ctx, &o, &p->d, p->dq, p->dk, p->dv, p->dg, p->dbeta, NULL, p->d_o,
                         NULL, p->q, p->k, p->v, p->g, p->beta, NULL);
        else
            st = l->dbwd(l->ctx, &o, &p->d, p->dq, p->dk, p->dv, p->dbeta, NULL, p->d_o, NULL, p->q,
                         p->k, p->v, p->beta, NULL);
    }
    double t2 = tcpu();
    if (st) {
        fprintf(stderr, "error: %s\n", l->err());
        exit(1);
    }
    *tf = t1 - t0;
    *tb = t2 - t1;
}

static uint64_t hash_all(const prob *p, size_t n, size_t ng, size_t ngk) {
    uint64_t h = AB_FNV0;
    h = ab_fnv(h, p->o, n), h = ab_fnv(h, p->dq, n), h = ab_fnv(h, p->dk, n),
    h = ab_fnv(h, p->dv, n);
    h = ab_fnv(h, p->dbeta, ng);
    return p->gated ? ab_fnv(h, p->dg, ngk) : h;
}

static float *randn(size_t n, unsigned *seed) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) { /* sum of 4 uniforms, centred: roughly normal */
        double s = 0;
        for (int j = 0; j < 4; j++) s += (double)rand_r(seed) / RAND_MAX;
        x[i] = (float)((s - 2.0) * 1.7);
    }
    return x;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr,
                "usage: delta_ab OLD.so NEW.so [gated 0|1|2=kda] [pairs] [T] [threads] [saved 1|0|01|10]\n");
        return 2;
    }
    prob p = {0};
    p.gated = argc > 3 ? atoi(argv[3]) : 1;
    const char *fo = getenv("DELTA_AB_FWD");
    p.fwd_only = fo && *fo == '1';
    int pairs = argc > 4 ? atoi(argv[4]) : 7;
    if (pairs < 1) pairs = 1;
    if (pairs > 256) pairs = 256;
    const int64_t T = argc > 5 ? atoll(argv[5]) : 8192, H = 8, D = 128, C = 64;
    const int threads = argc > 6 ? atoi(argv[6]) : 1; /* > 1: hashes only (CPU time is per thread) */
    /* 0: the backward recomputes the forward sweep; two digits: per library */
    const char *sv = argc > 7 ? argv[7] : "1";
    p.saved[0] = sv[0] != '0';
    p.saved[1] = (sv[0] && sv[1] ? sv[1] : sv[0]) != '0';
    lib L[2];
    const int kda = p.gated == 2;
    if (open_lib(argv[1], &L[0], threads, kda) || open_lib(argv[2], &L[1], threads, kda)) return 1;
    p.d.B = 1, p.d.T = T, p.d.H = H, p.d.K = D, p.d.V = D;
    const size_t n = (size_t)(T * H * D), ng = (size_t)(T * H);
    unsigned seed = 7;
    p.q = randn(n, &seed), p.k = randn(n, &seed), p.v = randn(n, &seed), p.d_o = randn(n, &seed);
    const size_t ngk = kda ? n : ng; /* KDA: a log-gate per key */
    p.g = malloc(ngk * 4), p.beta = malloc(ng * 4);
    for (size_t i = 0; i < ng; i++) p.beta[i] = (float)rand_r(&seed) / (float)RAND_MAX;
    for (size_t i = 0; i < ngk; i++)
        p.g[i] = (float)-log1p(exp(-(2.5 + 2.0 * rand_r(&seed) / RAND_MAX - 1.0)));
    p.o = malloc(n * 4), p.dq = malloc(n * 4), p.dk = malloc(n * 4), p.dv = malloc(n * 4);
    p.dg = malloc(ngk * 4), p.dbeta = malloc(ng * 4);
    const double F = (double)T * (C * (3.0 * D + 2.0 * D) + (kda ? 0 : C * C / 3.0) + 6.0 * D * D) * H;
    double tf, tb;
    uint64_t hs[2];
    float *outs[6] = {p.o, p.dq, p.dk, p.dv, p.dbeta, p.dg}, *first[6];
    const size_t lens[6] = {n, n, n, n, ng, ngk};
    for (int l = 0; l < 2; l++) { /* warm-up (the saved objects grow), hashes */
        run(&L[l], l, &p, &tf, &tb);
        hs[l] = hash_all(&p, n, ng, ngk);
        for (int i = 0; i < 6 && l == 0; i++) {
            first[i] = malloc(lens[i] * sizeof(float));
            memcpy(first[i], outs[i], lens[i] * sizeof(float));
        }
    }
    if (hs[0] != hs[1]) { /* which outputs differ, in how many elements, by how much */
        static const char *const nm[6] = {"o", "dq", "dk", "dv", "dbeta", "dg"};
        for (int i = 0; i < (p.gated ? 6 : 5); i++) {
            size_t nd = 0;
            double mx = 0, ss = 0, sd = 0;
            for (size_t j = 0; j < lens[i]; j++) {
                const double a = first[i][j], b = outs[i][j];
                ss += a * a;
                if (memcmp(&first[i][j], &outs[i][j], sizeof(float))) {
                    nd++;
                    sd += (a - b) * (a - b);
                    if (fabs(a - b) > mx) mx = fabs(a - b);
                }
            }
            const double rms = sqrt(ss / (double)lens[i]);
            printf("  %s: %zu of %zu elements differ; max |old - new| %.2e = %.2e x RMS(old); "
                   "relative RMS difference %.2e\n",
                   nm[i], nd, lens[i], mx, mx / rms, sqrt(sd / ss));
        }
    }
    for (int i = 0; i < 6; i++) free(first[i]);
    printf("%s T=%lld H=%lld D=%lld C=%lld %s; hashes old %016llx new %016llx %s\n",
           kda ? "kda" : p.gated ? "gated_delta_rule" : "delta_rule", (long long)T, (long long)H, (long long)D,
           (long long)C,
           p.saved[0] == p.saved[1] ? (p.saved[0] ? "saved" : "recomputed")
                                    : (p.saved[0] ? "old saved, new recomputed"
                                                  : "old recomputed, new saved"),
           (unsigned long long)hs[0],
           (unsigned long long)hs[1], hs[0] == hs[1] ? "EQUAL" : "DIFFER");
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    double pk[256], of[256], ob[256], nf[256], nb[256], r[256], rf[256], rb[256], po[256], pn[256],
        pfo[256], pfn[256];
    for (int i = 0; i < pairs; i++) {
        pk[i] = peak();
        for (int j = 0; j < 2; j++) {
            if ((i + j) % 2 == 0)
                run(&L[0], 0, &p, &of[i], &ob[i]);
            else
                run(&L[1], 1, &p, &nf[i], &nb[i]);
        }
        r[i] = (of[i] + ob[i]) / (nf[i] + nb[i]);
        rf[i] = of[i] / nf[i];
        rb[i] = ob[i] / nb[i];
        po[i] = 100 * 3 * F / (of[i] + ob[i]) / (pk[i] * 1e9);
        pn[i] = 100 * 3 * F / (nf[i] + nb[i]) / (pk[i] * 1e9);
        pfo[i] = 100 * F / of[i] / (pk[i] * 1e9);
        pfn[i] = 100 * F / nf[i] / (pk[i] * 1e9);
        printf("pair %d: peak %.0f GF/s; old fwd %.1f bwd %.1f ms; new fwd %.1f bwd %.1f ms; "
               "old/new %.3f\n",
               i, pk[i], of[i] * 1e3, ob[i] * 1e3, nf[i] * 1e3, nb[i] * 1e3, r[i]);
        fflush(stdout);
    }
    getrusage(RUSAGE_SELF, &ru1);
    printf("minor page faults in the timed pairs: %ld\n", ru1.ru_minflt - ru0.ru_minflt);
    double lo, hi, lo2, hi2, lo3, hi3;
    const double mr = ab_median(r, pairs, &lo, &hi);
    const double mpo = ab_median(po, pairs, NULL, NULL), mpn = ab_median(pn, pairs, &lo2, &hi2);
    const double mfn = ab_median(pfn, pairs, &lo3, &hi3);
    printf("MEDIAN peak %.0f GF/s; fwd+bwd %%peak old %.1f new %.1f (%.1f-%.1f); fwd %%peak old "
           "%.1f new %.1f (%.1f-%.1f); fwd+bwd old/new %.3f (%.3f-%.3f); fwd old/new %.3f; bwd "
           "old/new %.3f; ms old %.1f+%.1f new %.1f+%.1f\n",
           ab_median(pk, pairs, NULL, NULL), mpo, mpn, lo2, hi2, ab_median(pfo, pairs, NULL, NULL),
           mfn, lo3, hi3, mr, lo, hi, ab_median(rf, pairs, NULL, NULL),
           ab_median(rb, pairs, NULL, NULL), ab_median(of, pairs, NULL, NULL) * 1e3,
           ab_median(ob, pairs, NULL, NULL) * 1e3, ab_median(nf, pairs, NULL, NULL) * 1e3,
           ab_median(nb, pairs, NULL, NULL) * 1e3);
    return 0;
}
