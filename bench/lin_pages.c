/* Linear attention (causal chunk, identity map, unnormalised, one thread)
 * of one liblinattn.so build on the same problem laid out five ways,
 * alternating in one process (bench/NOTES.md, cpu-rows12):
 *   H=8          malloc'ed tensors (glibc: 16 bytes past a page), rows
 *                4 KiB apart: the issue-12 shape, as lin_ab runs it;
 *   H=9, H=7     rows 4608 / 3584 bytes apart: not a multiple of 4 KiB, so
 *                a chunk's rows do not all fall in the same L1 sets;
 *   H=8 aligned  2 MiB-aligned tensors, MADV_NOHUGEPAGE (4 KiB pages);
 *   H=8 THP      2 MiB-aligned tensors, MADV_HUGEPAGE (2 MiB pages where
 *                the kernel grants them; AnonHugePages is printed).
 * T = 8192, K = V = 128, chunk 64. Per configuration: forward and backward
 * thread CPU time per (chunk, head), % of the FMA peak (ab_peak.h, timed
 * before each round) on the registry's chunk FLOPs, and the minor page
 * faults per forward + backward call (getrusage, RUSAGE_THREAD).
 *
 * Built with the tools (CMake target lin_pages, Linux).
 * usage: lin_pages LIB.so [rounds] */
#define _GNU_SOURCE
#include "linattn.h"
#include "ab_api.h"

#include "ab_peak.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>


enum { MALLOC, ALIGNED_4K, ALIGNED_THP };
#define NCFG 5
#define MAX_ROUNDS 64
static const struct {
    const char *name;
    int64_t H;
    int alloc;
} cfgs[NCFG] = {{"H=8", 8, MALLOC},
                {"H=9", 9, MALLOC},
                {"H=7", 7, MALLOC},
                {"H=8 aligned", 8, ALIGNED_4K},
                {"H=8 THP", 8, ALIGNED_THP}};

static float *tensor(size_t n, int alloc) {
    float *x;
    if (alloc == MALLOC) {
        x = malloc(n * sizeof(float));
    } else {
        const size_t huge = (size_t)2 << 20, bytes = (n * sizeof(float) + huge - 1) / huge * huge;
        x = aligned_alloc(huge, bytes);
        if (x) madvise(x, bytes, alloc == ALIGNED_THP ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    }
    if (!x) exit(1);
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * (float)rand() / (float)RAND_MAX - 1.0f;
    return x;
}

static long minor_faults(void) {
    struct rusage r;
    getrusage(RUSAGE_THREAD, &r);
    return r.ru_minflt;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: lin_pages LIB.so [rounds]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 11;
    rounds = rounds < 1 ? 1 : rounds > MAX_ROUNDS ? MAX_ROUNDS : rounds;
    void *h = ab_dlopen(argv[1]);
    if (!h) return 1;
    ctx_create_fn cc = (ctx_create_fn)(uintptr_t)dlsym(h, "la_ctx_create");
    lin_def_fn ldef = (lin_def_fn)(uintptr_t)dlsym(h, "la_linear_attn_opts_default");
    lin_fwd_fn lfwd = (lin_fwd_fn)(uintptr_t)dlsym(h, "la_linear_attn_forward");
    lin_bwd_fn lbwd = (lin_bwd_fn)(uintptr_t)dlsym(h, "la_linear_attn_backward");
    la_ctx *ctx;
    if (!cc || !ldef || !lfwd || !lbwd || cc(&ctx, 1) != LA_OK) return 1;
    const int64_t T = 8192, K = 128, V = 128, C = 64;
    float *x[NCFG][8]; /* q, k, v, dO, o, dq, dk, dv */
    for (int c = 0; c < NCFG; c++)
        for (int t = 0; t < 8; t++) x[c][t] = tensor((size_t)(T * cfgs[c].H * K), cfgs[c].alloc);
    la_linear_attn_opts o = ldef();
    o.feature_map = LA_FEATURE_IDENTITY;
    o.causal = 1;
    o.form = LA_FORM_CHUNK;
    o.normalize = 0;
    static double tf[NCFG][MAX_ROUNDS], tb[NCFG][MAX_ROUNDS], pk[MAX_ROUNDS];
    long faults[NCFG] = {0};
    for (int r = -1; r < rounds; r++) { /* round -1: warm-up, not counted */
        if (r >= 0) pk[r] = peak();
        for (int s = 0; s < NCFG; s++) {
            const int c = r % 2 ? NCFG - 1 - s : s; /* order reversed every round */
            const la_dims d = {.B = 1, .T = T, .H = cfgs[c].H, .K = K, .V = V};
            float **b = x[c];
            const long f0 = minor_faults();
            const double t0 = tcpu();
            la_status st = lfwd(ctx, &o, &d, b[4], NULL, NULL, b[0], b[1], b[2], NULL, NULL);
            const double t1 = tcpu();
            if (st == LA_OK)
                st = lbwd(ctx, &o, &d, b[5], b[6], b[7], NULL, NULL, b[3], NULL, NULL, b[0], b[1],
                          b[2], NULL, NULL);
            const double t2 = tcpu();
            if (st != LA_OK) return 1;
            if (r >= 0) {
                tf[c][r] = t1 - t0, tb[c][r] = t2 - t1;
                faults[c] += minor_faults() - f0;
            }
        }
    }
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "AnonHugePages")) printf("%s", line);
    if (f) fclose(f);
    const double P = ab_median(pk, rounds, NULL, NULL);
    printf("linear chunk T=%lld K=V=%lld, one thread, %d rounds, peak median %.1f GFLOP/s\n",
           (long long)T, (long long)K, rounds, P);
    for (int c = 0; c < NCFG; c++) {
        const double H = (double)cfgs[c].H, units = (double)T / (double)C * H;
        const double fl = (double)T * H * ((double)(C + 1) * (double)(K + V) + 4.0 * K * V);
        const double fw = ab_median(tf[c], rounds, NULL, NULL);
        const double bw = ab_median(tb[c], rounds, NULL, NULL);
        printf("%-12s fwd %5.1f us/chunk-head (%.1f%%)  bwd %6.1f us (%.1f%%)  minor faults/call "
               "%.1f\n",
               cfgs[c].name, 1e6 * fw / units, 100 * fl / fw / (P * 1e9), 1e6 * bw / units,
               100 * 2 * fl / bw / (P * 1e9), (double)faults[c] / rounds);
    }
    return 0;
}
