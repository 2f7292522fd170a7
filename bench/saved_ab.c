/* Forward + backward of the delta rules with and without a saved-for-backward
 * object (la_saved), alternating in one process (bench/NOTES.md, cpu-save6).
 *
 * Shape of issue 12 by default: B = 1, H = 8, T = 8192, K = V = 128, chunk
 * 64, L2-normalised q/k, one thread. Per pair (order swapped every pair):
 *   recompute: forward, backward (opts.saved = NULL)
 *   saved:     forward and backward with one la_saved reused over the run
 *   fresh:     (--fresh) the same with a la_saved created and destroyed per
 *              call (its pages faulted every time)
 * times in thread CPU (the context has one thread, so all work runs on the
 * caller's), an AVX-512 FMA loop of 24 chains (AVX2: 12) timed before each
 * pair for the peak, FLOPs of the registry's chunk model (fwd + bwd = 3x the
 * forward). Prints medians, % of peak and the gradients' hashes (saved vs
 * recompute must be equal).
 *
 * build (from the repository root, after building build/):
 *   gcc -O2 -std=c11 -Iinclude bench/saved_ab.c build/liblinattn.a -lm -lpthread -o saved_ab
 * usage: saved_ab [gated 0|1] [pairs] [T] [--fresh | --saved-only] */
#define _POSIX_C_SOURCE 200809L
#include "linattn.h"

#include "ab_peak.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t hash(const float *x, size_t n) {
    uint64_t h = 1469598103934665603ull;
    const unsigned char *p = (const unsigned char *)x;
    for (size_t i = 0; i < n * 4; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

typedef struct {
    int gated;
    la_dims d;
    float *q, *k, *v, *g, *beta, *o, *dq, *dk, *dv, *dg, *dbeta, *d_o;
} prob;

static float *randf(size_t n, la_rng *r, double s) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(s * la_rng_normal(r));
    return x;
}

static double run(prob *p, la_ctx *ctx, la_saved *s, double *tf, double *tb) {
    la_gated_opts o = la_gated_opts_default();
    o.use_qk_l2norm = 1;
    o.saved = s;
    la_status st;
    double t0 = tcpu();
    if (p->gated)
        st = la_gated_delta_rule_forward(ctx, &o, &p->d, p->o, NULL, p->q, p->k, p->v, p->g,
                                         p->beta, NULL);
    else
        st = la_delta_rule_forward(ctx, &o, &p->d, p->o, NULL, p->q, p->k, p->v, p->beta, NULL);
    double t1 = tcpu();
    if (!st) {
        if (p->gated)
            st = la_gated_delta_rule_backward(ctx, &o, &p->d, p->dq, p->dk, p->dv, p->dg, p->dbeta,
                                              NULL, p->d_o, NULL, p->q, p->k, p->v, p->g, p->beta,
                                              NULL);
        else
            st = la_delta_rule_backward(ctx, &o, &p->d, p->dq, p->dk, p->dv, p->dbeta, NULL, p->d_o,
                                        NULL, p->q, p->k, p->v, p->beta, NULL);
    }
    double t2 = tcpu();
    if (st) {
        fprintf(stderr, "error: %s\n", la_last_error());
        exit(1);
    }
    *tf = t1 - t0;
    *tb = t2 - t1;
    return t2 - t0;
}

int main(int argc, char **argv) {
    prob p = {0};
    p.gated = argc > 1 ? atoi(argv[1]) : 1;
    const int pairs = argc > 2 ? atoi(argv[2]) : 9;
    const int64_t T = argc > 3 ? atoll(argv[3]) : 8192, H = 8, D = 128, C = 64;
    const int fresh = argc > 4 && !strcmp(argv[4], "--fresh");
    const int only = argc > 4 && !strcmp(argv[4], "--saved-only"); /* for perf record */
    p.d.B = 1, p.d.T = T, p.d.H = H, p.d.K = D, p.d.V = D;
    const size_t n = (size_t)(T * H * D), ng = (size_t)(T * H);
    la_rng r;
    la_rng_seed(&r, 7);
    p.q = randf(n, &r, 1), p.k = randf(n, &r, 1), p.v = randf(n, &r, 1), p.d_o = randf(n, &r, 1);
    p.g = malloc(ng * 4), p.beta = malloc(ng * 4);
    for (size_t i = 0; i < ng; i++) {
        p.beta[i] = (float)la_rng_uniform(&r);
        p.g[i] = (float)-log1p(exp(-(2.5 + la_rng_normal(&r))));
    }
    p.o = malloc(n * 4), p.dq = malloc(n * 4), p.dk = malloc(n * 4), p.dv = malloc(n * 4);
    p.dg = malloc(ng * 4), p.dbeta = malloc(ng * 4);
    la_ctx *ctx;
    la_ctx_create(&ctx, 1);
    la_saved *s;
    la_saved_create(ctx, &s);
    const double F = (double)T * (C * (3.0 * D + 2.0 * D) + C * C / 3.0 + 6.0 * D * D) * H;
    double tf, tb, w;
    /* warm-up, and the hashes of both paths */
    run(&p, ctx, NULL, &tf, &tb);
    uint64_t h0 = hash(p.dq, n) ^ hash(p.dk, n) * 3 ^ hash(p.dv, n) * 5 ^ hash(p.dbeta, ng) * 7 ^
                  hash(p.dg, ng) * 11;
    run(&p, ctx, s, &tf, &tb);
    uint64_t h1 = hash(p.dq, n) ^ hash(p.dk, n) * 3 ^ hash(p.dv, n) * 5 ^ hash(p.dbeta, ng) * 7 ^
                  hash(p.dg, ng) * 11;
    printf("%s T=%lld H=%lld D=%lld C=%lld isa=%s; hashes recompute %016llx saved %016llx %s\n",
           p.gated ? "gated_delta_rule" : "delta_rule", (long long)T, (long long)H, (long long)D,
           (long long)C, la_isa_name(la_isa_active()), (unsigned long long)h0,
           (unsigned long long)h1, h0 == h1 ? "EQUAL" : "DIFFER");
    printf("saved bytes %.1f MB = %.0f bytes per head and token\n", la_saved_bytes(s) / 1e6,
           (double)la_saved_bytes(s) / (double)(H * T));
    double *rf = malloc(sizeof(double) * 12 * (size_t)pairs);
    double *of = rf + pairs, *ob = of + pairs, *nf = ob + pairs, *nb = nf + pairs, *ff = nb + pairs,
           *fb = ff + pairs, *ratio = fb + pairs, *pk = ratio + pairs, *bratio = pk + pairs,
           *fratio = bratio + pairs, *pct_o = fratio + pairs;
    double pct_n[256], pct_f[256];
    for (int i = 0; i < pairs; i++) {
        pk[i] = peak();
        for (int j = 0; j < 2; j++) {
            if ((i + j) % 2 == 0) {
                run(&p, ctx, only ? s : NULL, &of[i], &ob[i]);
            } else {
                run(&p, ctx, s, &nf[i], &nb[i]);
            }
        }
        if (fresh) {
            la_saved *f;
            la_saved_create(ctx, &f);
            run(&p, ctx, f, &ff[i], &fb[i]);
            la_saved_destroy(f);
        } else {
            ff[i] = fb[i] = 0;
        }
        ratio[i] = (of[i] + ob[i]) / (nf[i] + nb[i]);
        bratio[i] = ob[i] / nb[i];
        fratio[i] = of[i] / nf[i];
        pct_o[i] = 100 * 3 * F / (of[i] + ob[i]) / (pk[i] * 1e9);
        pct_n[i] = 100 * 3 * F / (nf[i] + nb[i]) / (pk[i] * 1e9);
        pct_f[i] = fresh ? 100 * 3 * F / (ff[i] + fb[i]) / (pk[i] * 1e9) : 0;
        printf("pair %d: peak %.0f GF/s; recompute fwd %.1f bwd %.1f ms; saved fwd %.1f bwd %.1f ms"
               "; fresh %.1f %.1f ms; old/new %.3f\n",
               i, pk[i], of[i] * 1e3, ob[i] * 1e3, nf[i] * 1e3, nb[i] * 1e3, ff[i] * 1e3,
               fb[i] * 1e3, ratio[i]);
        fflush(stdout);
    }
    (void)w;
    double lo = 1e9, hi = 0;
    for (int i = 0; i < pairs; i++)
        lo = ratio[i] < lo ? ratio[i] : lo, hi = ratio[i] > hi ? ratio[i] : hi;
    printf("MEDIAN peak %.0f GF/s; fwd+bwd %%peak recompute %.1f saved %.1f fresh %.1f; "
           "fwd+bwd old/new %.3f (%.3f-%.3f); fwd old/new %.3f; bwd old/new %.3f; "
           "ms recompute %.1f+%.1f saved %.1f+%.1f fresh %.1f+%.1f\n",
           ab_median(pk, pairs, NULL, NULL), ab_median(pct_o, pairs, NULL, NULL),
           ab_median(pct_n, pairs, NULL, NULL), ab_median(pct_f, pairs, NULL, NULL),
           ab_median(ratio, pairs, NULL, NULL), lo, hi, ab_median(fratio, pairs, NULL, NULL),
           ab_median(bratio, pairs, NULL, NULL), ab_median(of, pairs, NULL, NULL) * 1e3,
           ab_median(ob, pairs, NULL, NULL) * 1e3, ab_median(nf, pairs, NULL, NULL) * 1e3,
           ab_median(nb, pairs, NULL, NULL) * 1e3, ab_median(ff, pairs, NULL, NULL) * 1e3,
           ab_median(fb, pairs, NULL, NULL) * 1e3);
    la_saved_destroy(s);
    la_ctx_destroy(ctx);
    return 0;
}
