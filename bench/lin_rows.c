/* What a chunk's cold [T, H, D] rows cost one core, apart from the op
 * (bench/NOTES.md, cpu-rows12). Two measurements, thread CPU time, medians:
 *
 * 1. copy: 3 tensors x 32 KiB (a chunk's q, k, v rows of one head) from
 *    memory not touched since the last pass (3 x 64 MiB, walked in order)
 *    into dense blocks, read as runs of `run` bytes 4 KiB apart: 512 (one
 *    head of 128 floats, as the op reads them at H = 8), 2048 (a 4-head
 *    group), 4096 (a token's 8 heads: the whole page) or one contiguous
 *    32 KiB block (a head-major layout).
 * 2. prefetch during a product: an 8 x 32 AVX-512 micro-tile over k = 128
 *    (the op's gemm_nn tile), its A rows and B panel taken from a set that
 *    fits L1+L2 lightly ("small": 32 + 64 KiB) or loads L2 ("large": 256 +
 *    512 KiB), with `per` cold lines prefetched after each tile (512-byte
 *    rows 4 KiB apart, as the next head's rows). ns per tile: what the
 *    prefetches cost the product.
 *
 * Built with the tools (CMake target lin_rows, x86-64; part 2 needs
 * AVX-512F). usage: lin_rows */
#define _POSIX_C_SOURCE 200809L
#include "ab_peak.h"

#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SRC_BYTES ((size_t)64 << 20)

static char *src[3];
static size_t pass;
static float dst[3][64 * 128] __attribute__((aligned(64)));

/* one pass: 96 KiB in runs of `run` bytes, 4 KiB apart (run 32768: one block) */
static double copy_pass(size_t run) {
    const size_t nrun = 32768 / run, span = run == 32768 ? 32768 : nrun * 4096;
    const size_t base = (pass++ * span) % (SRC_BYTES - span);
    const double t0 = tcpu();
    for (int s = 0; s < 3; s++)
        for (size_t i = 0; i < nrun; i++)
            memcpy((char *)dst[s] + i * run, src[s] + base + i * (run == 32768 ? 0 : 4096), run);
    return tcpu() - t0;
}

static volatile float sink;
static float cbuf[8][8 * 32] __attribute__((aligned(64))); /* the tiles' C, kept */

__attribute__((target("avx512f,fma"))) static double tiles(const float *a0, const float *b0,
                                                             int sets, int per, int ntile,
                                                             size_t *line) {
    const double t0 = tcpu();
    for (int t = 0; t < ntile; t++) {
        const float *a = a0 + (size_t)(t % (8 * sets)) * 8 * 128;
        const float *b = b0 + (size_t)(t % (4 * sets)) * 128 * 32;
        __m512 acc[8][2];
        for (int r = 0; r < 8; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int k = 0; k < 128; k++) {
            const __m512 x0 = _mm512_load_ps(b + k * 32), x1 = _mm512_load_ps(b + k * 32 + 16);
#pragma GCC unroll 8
            for (int r = 0; r < 8; r++) {
                const __m512 ar = _mm512_set1_ps(a[r * 128 + k]);
                acc[r][0] = _mm512_fmadd_ps(ar, x0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(ar, x1, acc[r][1]);
            }
        }
        float *c = cbuf[t % 8];
        for (int r = 0; r < 8; r++) {
            _mm512_store_ps(c + r * 32, acc[r][0]);
            _mm512_store_ps(c + r * 32 + 16, acc[r][1]);
        }
        for (int l = 0; l < per; l++, ++*line) /* 8 lines a row, rows 4 KiB apart */
            __builtin_prefetch(src[0] + (*line / 8 * 4096 + *line % 8 * 64) % SRC_BYTES, 0, 3);
    }
    const double dt = tcpu() - t0;
    float x = 0;
    for (int i = 0; i < 8 * 8 * 32; i++) x += cbuf[i / 256][i % 256];
    sink = x;
    return dt;
}

int main(void) {
    for (int s = 0; s < 3; s++) {
        src[s] = aligned_alloc(4096, SRC_BYTES);
        if (!src[s]) return 1;
        memset(src[s], 1, SRC_BYTES);
    }
    printf("1. copy 3 x 32 KiB of cold rows into blocks (us per 96 KiB, median of 25 x 40)\n");
    const size_t runs[] = {512, 2048, 4096, 32768};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        double s[25];
        for (int i = 0; i < 25; i++) {
            double t = 0;
            for (int n = 0; n < 40; n++) t += copy_pass(runs[r]);
            s[i] = t / 40;
        }
        printf("   runs of %5zu B: %.2f us\n", runs[r], 1e6 * ab_median(s, 25, NULL, NULL));
    }
    if (!__builtin_cpu_supports("avx512f")) {
        printf("2. skipped (no AVX-512F)\n");
        return 0;
    }
    printf("2. 8x32 tile, k = 128, with cold lines prefetched per tile (ns per tile, median of "
           "9 x 4000)\n");
    for (int sets = 1; sets <= 8; sets += 7) {
        float *a = aligned_alloc(64, (size_t)sets * 8 * 8 * 128 * sizeof(float));
        float *b = aligned_alloc(64, (size_t)sets * 4 * 128 * 32 * sizeof(float));
        if (!a || !b) return 1;
        for (size_t i = 0; i < (size_t)sets * 8 * 8 * 128; i++) a[i] = 1e-3f * (float)(i % 77);
        for (size_t i = 0; i < (size_t)sets * 4 * 128 * 32; i++) b[i] = 1e-3f;
        printf("   operands %s (A %d KiB, B %d KiB):", sets == 1 ? "small" : "large", 32 * sets,
               64 * sets);
        const int pers[] = {0, 4, 8, 16, 32};
        size_t line = 0;
        for (int p = 0; p < 5; p++) {
            double s[9];
            for (int i = 0; i < 9; i++) s[i] = tiles(a, b, sets, pers[p], 4000, &line) / 4000;
            printf("  %d lines %.0f", pers[p], 1e9 * ab_median(s, 9, NULL, NULL));
        }
        printf("\n");
        free(a), free(b);
    }
    for (int s = 0; s < 3; s++) free(src[s]);
    return 0;
}
