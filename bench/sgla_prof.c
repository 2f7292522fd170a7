/* Where the simple GLA chunk backward's time goes, section by section
 * (bench/NOTES.md, cpu-sgla12): TSC ticks between marks in gla/chunk.c's
 * grouped backward, per (chunk, head), issue-12 shape (B = 1, H = 8,
 * T = 8192, K = V = 128, chunk 64, one thread). The marks are not in the
 * library: apply bench/sgla_prof.patch (against cpu-sgla12's chunk.c) and
 * build the library with -DLA_SGLA_PROF in a separate build folder:
 *   git apply bench/sgla_prof.patch
 *   cmake -S . -B /tmp/bprof -DCMAKE_BUILD_TYPE=Release -DLINATTN_CUDA=OFF \
 *     -DCMAKE_C_FLAGS=-DLA_SGLA_PROF && cmake --build /tmp/bprof --target linattn_shared
 *   git checkout src/ops/gla/chunk.c
 *   gcc -O2 -Iinclude -o /tmp/sgla_prof bench/sgla_prof.c -ldl
 *   /tmp/sgla_prof /tmp/bprof/liblinattn.so 5
 * Wall time (TSC): on a loaded machine every section inflates; compare
 * runs taken close together. usage: sgla_prof LIB.so [reps] */
#define _POSIX_C_SOURCE 200809L
#include "linattn.h"
#include "ab_api.h"
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float *rnd(size_t n, float lo, float hi) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)rand() / (float)RAND_MAX;
    return x;
}
int main(int argc, char **argv) {
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    ctx_create_fn cc = (ctx_create_fn)(uintptr_t)dlsym(h, "la_ctx_create");
    sg_fwd_fn f = (sg_fwd_fn)(uintptr_t)dlsym(h, "la_simple_gla_forward");
    sg_bwd_fn bw = (sg_bwd_fn)(uintptr_t)dlsym(h, "la_simple_gla_backward");
    unsigned long long *pr = dlsym(h, "la__sgla_prof");
    if (!pr) { fprintf(stderr, "no prof\n"); return 1; }
    la_ctx *ctx; cc(&ctx, 1);
    const int64_t T = 8192, H = 8, K = 128, V = 128;
    size_t nk = T * H * K, nv = T * H * V, ng = T * H;
    float *q = rnd(nk, -1, 1), *k = rnd(nk, -1, 1), *v = rnd(nv, -1, 1), *g = rnd(ng, -0.1f, -0.01f), *d_o = rnd(nv, -1, 1);
    float *o = malloc(nv * 4), *dq = malloc(nk * 4), *dk = malloc(nk * 4), *dv = malloc(nv * 4), *dg = malloc(ng * 4);
    la_dims d = {.B = 1, .T = T, .H = H, .K = K, .V = V};
    la_gated_opts op = {.form = LA_FORM_CHUNK};
    f(ctx, &op, &d, o, NULL, q, k, v, g, NULL, NULL);
    bw(ctx, &op, &d, dq, dk, dv, dg, NULL, NULL, d_o, NULL, q, k, v, g, NULL, NULL);
    memset(pr, 0, 32 * sizeof *pr);
    double t0 = now(); unsigned long long c0 = __rdtsc();
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double a = now();
        bw(ctx, &op, &d, dq, dk, dv, dg, NULL, NULL, d_o, NULL, q, k, v, g, NULL, NULL);
        double e = now() - a; if (e < best) best = e;
    }
    double hz = (__rdtsc() - c0) / (now() - t0);
    double tot = (now() - t0) / reps;
    const char *nm[32] = {0};
    nm[1]="gather q,k,v,dO"; nm[2]="misc (prefetch issue etc.)"; nm[3]="gemm_nt dO S0^T"; nm[4]="gemm_nt V dS^T";
    nm[5]="dqc/dkc gate scale + Ks rows"; nm[6]="gemm_nn Ks dS"; nm[7]="tril dO V^T"; nm[8]="tril Q K^T";
    nm[9]="pair decay exps (A, dA)"; nm[10]="nn_lower dA K"; nm[11]="memset+tn_lower dA^T Q"; nm[12]="prefetch dO + tn_lower A^T dO";
    nm[13]="prefetch dq + gate grad"; nm[14]="dg rows"; nm[15]="prefetch dk + diagonal pair"; nm[16]="dS decay+Qs+gemm_tn_block Qs^T dO";
    nm[17]="dq,dk,dv row copies"; nm[18]="state pass: S0 copy to ckpt"; nm[19]="state pass: gates"; nm[20]="state pass: Ks + gemm_tn_block";
    nm[21]="rev: gate exps"; nm[22]="prefetch_w dk"; nm[23]="prefetch_w dq"; nm[24]="prefetch_w dv";
    double units = (double)reps * H * (T / 64);
    double sum = 0;
    printf("TSC %.2f GHz, wall per bwd %.1f ms (best %.1f), per chunk-head %.1f us\n", hz / 1e9, 1e3 * tot, 1e3 * best, 1e6 * tot * reps / units);
    for (int i = 1; i < 32; i++) if (nm[i]) { double us = 1e6 * pr[i] / hz / units; sum += us; printf("%2d %-36s %7.2f us\n", i, nm[i], us); }
    printf("   sum of sections %.1f us\n", sum);
    return 0;
}
