/* Kernel A/B of the triangular solves (trsm_llu, trsm_llu_t) of two builds
 * of one ISA's kernel file, alternating in one process, with the FMA peak
 * timed in the same run (cpu-trsm24; the throwaway harness of cpu-trsm22 and
 * cpu-avx2trsm23, kept). bench/trsm_ab.sh compiles the old file (a git
 * revision's) and the working tree's under two table names and links them
 * with build/liblinattn.a; see there for the usage.
 *
 * Per shape and solve: `samples` samples, each old and new in turn (order
 * swapped every sample), each the best of 5 batches of ~200 calls (64 x 128
 * equivalents) on a hot L (n x n) and B (n x r, row stride r); B is reset
 * from its start values before each batch (the solves are in place; L's
 * off-diagonal entries are ~1e-3, so B stays O(1) within a batch). Thread
 * CPU time; medians and the range of the per-sample ratio old/new; % on the
 * useful FLOPs n(n-1)r of the median FMA peak (peak512, or peak256 for the
 * AVX2 tables) timed before each sample of the first shape.
 *
 * fresh = 1: B is rewritten before every call (from a 4 KB pattern, so L
 * stays in L1) and a batch of the rewrites alone, timed right after, is
 * subtracted: B fresh from stores, as in the ops (scaled rows, then the
 * solve). fresh = 2: B copied from a second n x r buffer before every call
 * (bench_kernels' way; the copy also pushes L out of L1 at 64 x 128).
 *
 * Each line ends with "bits equal" or "bits DIFFER": old and new once from
 * the same B (random L entries ~1e-3), compared bit for bit.
 *
 * usage: trsm_ab [samples] [fresh 0|1|2] [n r]... (default 64 128, 64 64,
 *        128 128, 100 77); AB_SAME=old|new runs one table against itself (A/A). */
#define _POSIX_C_SOURCE 200809L
#include "kernels/kernels.h"

#include "ab_peak.h"

extern const la__kernels trsm_ab_old, trsm_ab_new;

static int fresh;

static void refill(float *B, const float *B0, size_t n) {
    if (fresh == 1)
        for (size_t i = 0; i < n; i += 1024) memcpy(B + i, B0, sizeof(float) * (n - i < 1024 ? n - i : 1024));
    else
        memcpy(B, B0, sizeof(float) * n);
}

static double run(const la__kernels *k, int t, int n, int r, const float *L, float *B,
                  const float *B0, int calls) {
    const size_t nb = (size_t)n * (size_t)r;
    double best = 1e9;
    for (int b = 0; b < 5; b++) {
        memcpy(B, B0, sizeof(float) * nb);
        double t0 = tcpu();
        for (int c = 0; c < calls; c++) {
            if (fresh) refill(B, B0, nb);
            (t ? k->trsm_llu_t : k->trsm_llu)(n, r, L, n, B, r);
        }
        double dt = tcpu() - t0;
        if (fresh) {
            t0 = tcpu();
            for (int c = 0; c < calls; c++) {
                refill(B, B0, nb);
                __asm__ volatile("" ::: "memory");
            }
            dt -= tcpu() - t0;
        }
        dt /= calls;
        best = dt < best ? dt : best;
    }
    return best;
}

int main(int argc, char **argv) {
    enum { MAXS = 101 };
    int samples = argc > 1 ? atoi(argv[1]) : 11;
    fresh = argc > 2 ? atoi(argv[2]) : 0;
    samples = samples < 1 ? 1 : samples > MAXS ? MAXS : samples;
    int shapes[16][2] = {{64, 128}, {64, 64}, {128, 128}, {100, 77}}, nsh = 4;
    if (argc > 4)
        for (nsh = 0; nsh < 16 && 4 + 2 * nsh < argc; nsh++)
            shapes[nsh][0] = atoi(argv[3 + 2 * nsh]), shapes[nsh][1] = atoi(argv[4 + 2 * nsh]);
    const la__kernels *kt[2] = {&trsm_ab_old, &trsm_ab_new};
    const char *same = getenv("AB_SAME");
    if (same) kt[0] = kt[1] = strcmp(same, "old") ? &trsm_ab_new : &trsm_ab_old;
    const int wide = kt[1]->isa == LA_ISA_AVX512;
    printf("trsm_ab: %s tables%s, fresh %d, %d samples\n", wide ? "AVX-512" : "AVX2",
           same ? " (A/A)" : "", fresh, samples);
    double pk[MAXS];
    int npk = 0;
    for (int s = 0; s < nsh; s++) {
        const int n = shapes[s][0], r = shapes[s][1];
        float *L = malloc(sizeof(float) * (size_t)n * n), *B = malloc(sizeof(float) * (size_t)n * r),
              *B0 = malloc(sizeof(float) * (size_t)n * r);
        if (!L || !B || !B0) return 1;
        srand(1);
        for (int i = 0; i < n * n; i++) L[i] = ((float)rand() / (float)RAND_MAX - 0.5f) * 2e-3f;
        for (int i = 0; i < n * r; i++) B0[i] = (float)rand() / (float)RAND_MAX - 0.5f;
        const int calls = (int)(200.0 * 64 * 128 / ((double)n * r)) + 1;
        for (int t = 0; t < 2; t++) {
            double ts[2][MAXS], ratio[MAXS];
            for (int i = 0; i < samples; i++) {
                if (s == 0 && t == 0) pk[npk++] = wide ? peak512() : peak256();
                for (int o = 0; o < 2; o++) {
                    const int w = (i + o) & 1;
                    ts[w][i] = run(kt[w], t, n, r, L, B, B0, calls);
                }
                ratio[i] = ts[0][i] / ts[1][i];
            }
            double lo, hi, p[MAXS];
            memcpy(p, pk, sizeof(double) * (size_t)npk);
            const double m0 = ab_median(ts[0], samples, 0, 0), m1 = ab_median(ts[1], samples, 0, 0);
            const double mr = ab_median(ratio, samples, &lo, &hi), pm = ab_median(p, npk, 0, 0);
            const double gf = (double)n * (n - 1) * r / 1e9;
            const size_t nbytes = sizeof(float) * (size_t)n * r;
            float *B1 = malloc(nbytes);
            if (!B1) return 1;
            memcpy(B, B0, nbytes), memcpy(B1, B0, nbytes);
            (t ? kt[0]->trsm_llu_t : kt[0]->trsm_llu)(n, r, L, n, B, r);
            (t ? kt[1]->trsm_llu_t : kt[1]->trsm_llu)(n, r, L, n, B1, r);
            const int same_bits = !memcmp(B, B1, nbytes);
            free(B1);
            printf("%-10s %3dx%-3d old %7.3f us %5.1f%%  new %7.3f us %5.1f%%  new/old speed %.3f "
                   "[%.3f-%.3f]  peak %.1f GF/s  bits %s\n",
                   t ? "trsm_llu_t" : "trsm_llu", n, r, m0 * 1e6, 100 * gf / m0 / pm, m1 * 1e6,
                   100 * gf / m1 / pm, mr, lo, hi, pm, same_bits ? "equal" : "DIFFER");
            fflush(stdout);
        }
        free(L), free(B), free(B0);
    }
    return 0;
}
