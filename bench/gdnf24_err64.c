/* Gated DeltaNet chunk forward (o, S_T) of one or more liblinattn.so builds against a float64
 * token recurrence (cpu-gdnf24): T, H = 2, K = V = 128, l2norm q/k, gates in [gmin, 0) with 1% at
 * -1e4, beta in (0, bmax). gcc -O2 -std=c11 -Iinclude bench/gdnf24_err64.c -ldl -lm -o err64;
 * ./err64 T gmin bmax A.so [B.so ...] */
#define _POSIX_C_SOURCE 200809L
#include "linattn.h"
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef la_status (*ctx_create_fn)(la_ctx **, int);
typedef la_gated_opts (*opts_fn)(void);
typedef la_status (*gfwd_fn)(la_ctx *, const la_gated_opts *, const la_dims *, float *, float *,
                             const float *, const float *, const float *, const float *,
                             const float *, const float *);
static double urand(unsigned *s) { return (rand_r(s) + 0.5) / ((double)RAND_MAX + 1); }
int main(int argc, char **argv) {
    int T = atoi(argv[1]), H = 2, K = 128, V = 128; double gmin = atof(argv[2]), bmax = atof(argv[3]);
    size_t nq = (size_t)T * H * K, nv = (size_t)T * H * V;
    float *q = malloc(nq * 4), *k = malloc(nq * 4), *v = malloc(nv * 4), *g = malloc((size_t)T * H * 4),
          *be = malloc((size_t)T * H * 4), *o = malloc(nv * 4), *S = malloc((size_t)H * K * V * 4);
    unsigned s = 1234;
    for (size_t i = 0; i < nq; i++) { q[i] = urand(&s) - 0.5; k[i] = urand(&s) - 0.5; }
    for (size_t i = 0; i < nv; i++) v[i] = urand(&s) - 0.5;
    for (int i = 0; i < T * H; i++) { g[i] = gmin * urand(&s); be[i] = bmax * urand(&s); if (urand(&s) < 0.01) g[i] = -1e4; }
    /* float64 reference, l2norm q,k, scale K^-1/2 */
    double *O = calloc(nv, 8), *ST = calloc((size_t)H * K * V, 8), *Sd = malloc((size_t)K * V * 8), *qn = malloc(K * 8), *kn = malloc(K * 8), *u = malloc(V * 8);
    for (int h = 0; h < H; h++) {
        memset(Sd, 0, (size_t)K * V * 8);
        for (int t = 0; t < T; t++) {
            const float *qt = q + ((size_t)t * H + h) * K, *kt = k + ((size_t)t * H + h) * K, *vt = v + ((size_t)t * H + h) * V;
            double a = exp((double)g[t * H + h]), b = be[t * H + h], nq2 = 0, nk2 = 0;
            for (int i = 0; i < K; i++) { nq2 += (double)qt[i] * qt[i]; nk2 += (double)kt[i] * kt[i]; }
            for (int i = 0; i < K; i++) { qn[i] = qt[i] / sqrt(nq2 + 1e-6); kn[i] = kt[i] / sqrt(nk2 + 1e-6); }
            for (int i = 0; i < K * V; i++) Sd[i] *= a;
            for (int j = 0; j < V; j++) { double acc = 0; for (int i = 0; i < K; i++) acc += kn[i] * Sd[i * V + j]; u[j] = b * (vt[j] - acc); }
            for (int i = 0; i < K; i++) for (int j = 0; j < V; j++) Sd[i * V + j] += kn[i] * u[j];
            for (int j = 0; j < V; j++) { double acc = 0; for (int i = 0; i < K; i++) acc += qn[i] * Sd[i * V + j]; O[((size_t)t * H + h) * V + j] = acc / sqrt((double)K); }
        }
        memcpy(ST + (size_t)h * K * V, Sd, (size_t)K * V * 8);
    }
    for (int L = 4; L < argc; L++) {
        void *hd = dlopen(argv[L], RTLD_NOW | RTLD_LOCAL);
        ctx_create_fn cc = (ctx_create_fn)(uintptr_t)dlsym(hd, "la_ctx_create");
        opts_fn of = (opts_fn)(uintptr_t)dlsym(hd, "la_gated_opts_default");
        gfwd_fn gf = (gfwd_fn)(uintptr_t)dlsym(hd, "la_gated_delta_rule_forward");
        la_ctx *c; if (!cc || cc(&c, 1)) { printf("ctx fail %s\n", argv[L]); return 1; }
        la_gated_opts op = of(); op.use_qk_l2norm = 1;
        la_dims d; memset(&d, 0, sizeof d); d.B = 1; d.T = T; d.H = H; d.K = K; d.V = V;
        if (gf(c, &op, &d, o, S, q, k, v, g, be, NULL)) { printf("fwd fail\n"); return 1; }
        double e2 = 0, r2 = 0, em = 0, rm = 0, se2 = 0, sr2 = 0;
        for (size_t i = 0; i < nv; i++) { double e = o[i] - O[i]; e2 += e * e; r2 += O[i] * O[i]; if (fabs(e) > em) em = fabs(e); if (fabs(O[i]) > rm) rm = fabs(O[i]); }
        for (size_t i = 0; i < (size_t)H * K * V; i++) { double e = S[i] - ST[i]; se2 += e * e; sr2 += ST[i] * ST[i]; }
        printf("%s T=%d gmin=%g beta<%g: o relRMS %.3e max %.3e  S_T relRMS %.3e\n", argv[L], T, gmin, bmax, sqrt(e2 / r2), em / rm, sqrt(se2 / sr2));
    }
    return 0;
}
