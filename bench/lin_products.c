/* The matrix products of one linear-attention chunk step (L = 64, K = V =
 * 128: the issue-12 shape) timed one by one on the best kernel path, with
 * the FMA peak measured in the same run (bench/NOTES.md, cpu-lin11).
 *
 * Every operand and C in small dense blocks (as the op's per-thread chunk
 * blocks: the kernel alone), and once more for gemm_nn with C in [T, H, V]
 * rows ("rows": row stride H·V = 1024 floats, the next chunk of a 128 MiB
 * tensor each call, so C's lines are cold, as when the op writes o or dq
 * straight into the rows; "rows1040": the same with rows 1040 floats
 * apart, so that they do not all fall in the same L1 sets, cpu-rows12).
 * Thread CPU time of 200 calls, 15 samples,
 * medians; GFLOP/s on the useful FLOPs (masked work not counted).
 *
 * Built with the tools (CMake target lin_products).
 * usage: lin_products */
#define _POSIX_C_SOURCE 200809L
#include "kernels/kernels.h"

#include "ab_peak.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { P_NN, P_NT, P_TRIL, P_NN_TRIL, P_LOWER, P_TN_BLOCK, P_TN, P_TN_LOWER, P_KT, P_KROWS };

typedef struct prod {
    const char *name;
    int kind, m, n, k, rows;
    const char *use;
} prod;

static void run(const la__kernels *kr, const prod *p, const float *A, const float *B, float *C,
                float *big, int64_t nbig_chunks, int64_t *next) {
    const int m = p->m, n = p->n, k = p->k;
    float *c = C;
    int64_t ldc = n;
    if (p->rows) { /* the next chunk's rows of a [T, 8, 128] tensor (row stride
                    * p->rows floats: 1024, or 1040 = not a multiple of 4 KiB) */
        c = big + *next * 64 * p->rows;
        ldc = p->rows;
        *next = (*next + 1) % (nbig_chunks * 1024 / p->rows);
    }
    switch (p->kind) {
    case P_NN: kr->gemm_nn(m, n, k, 1.0f, A, k, B, n, 0.0f, c, ldc); break;
    case P_NT: kr->gemm_nt(m, n, k, 1.0f, A, k, B, k, 0.0f, c, ldc); break;
    case P_TRIL: kr->gemm_nt_tril(m, k, 0, 1.0f, A, k, B, k, 0.0f, c, m); break;
    case P_LOWER: kr->gemm_nn_lower(m, n, m, 1.0f, A, m, B, n, 1.0f, c, ldc); break;
    case P_TN_BLOCK: la__gemm_tn_block(kr, m, n, k, 1.0f, A, m, B, n, 1.0f, c, ldc); break;
    case P_TN: kr->gemm_tn(m, n, k, 1.0f, A, m, B, n, 1.0f, c, ldc); break;
    /* cpu-kpack22: B = Kᵀ [k, m] (row stride m, 64-byte aligned) */
    case P_NN_TRIL: kr->gemm_nn_tril(m, k, 0, 1.0f, A, k, B, m, 0.0f, c, m); break;
    case P_KT:      /* a chunk's K̃ᵀ [n, m] from m rows of [T, 8, n] (cold) */
    case P_KROWS: { /* the same rows copied as they stand */
        const float *x = big + *next * 64 * 1024;
        *next = (*next + 1) % nbig_chunks;
        if (p->kind == P_KT)
            kr->transpose(m, n, x, 1024, C, m);
        else
            for (int i = 0; i < m; i++) memcpy(C + i * n, x + i * 1024, (size_t)n * sizeof(float));
        break;
    }
    default: la__gemm_tn_lower_acc(kr, m, n, A, m, B, n, c, ldc); break;
    }
}

int main(void) {
    const la__kernels *kr = la__kernels_default();
    const size_t nbuf = 256 * 256;
    const int64_t nbig_chunks = 512; /* 512 chunks x 64 rows x 1024 floats: 128 MiB */
    float *A = aligned_alloc(64, nbuf * sizeof(float)),
          *B = aligned_alloc(64, nbuf * sizeof(float));
    float *C = aligned_alloc(64, nbuf * sizeof(float));
    float *big = malloc((size_t)nbig_chunks * 64 * 1024 * sizeof(float));
    if (!A || !B || !C || !big) return 1;
    for (size_t i = 0; i < nbuf; i++) {
        A[i] = (float)rand() / (float)RAND_MAX - 0.5f;
        B[i] = (float)rand() / (float)RAND_MAX - 0.5f;
        C[i] = 0.0f;
    }
    for (size_t i = 0; i < (size_t)nbig_chunks * 64 * 1024; i++) big[i] = 0.0f; /* first touch */
    /* lower operands: exact zeros above the diagonal, as the op's A and dA */
    float *Al = malloc(64 * 64 * sizeof(float));
    if (!Al) return 1;
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < 64; j++) Al[i * 64 + j] = j <= i ? A[i * 64 + j] : 0.0f;
    const prod ps[] = {
        {"gemm_nt_tril 64x64x128", P_TRIL, 64, 64, 128, 0, "A = Q K^T (M), dA = G V^T (M)"},
        {"gemm_nn_tril 64x64x128", P_NN_TRIL, 64, 64, 128, 0, "A = Q K^T from K^T (cpu-kpack22)"},
        {"gemm_nn 128x128x64", P_NN, 128, 128, 64, 0, "S += K^T V from K^T (cpu-kpack22)"},
        {"transpose 64 rows x 128", P_KT, 64, 128, 0, 0, "K^T from [T,8,128] rows (cold)"},
        {"copy 64 rows x 128", P_KROWS, 64, 128, 0, 0, "K's rows as they stand (cold)"},
        {"gemm_nn 64x128x128", P_NN, 64, 128, 128, 0, "Q S, K dS, G S^T"},
        {"gemm_nn 64x128x128 rows", P_NN, 64, 128, 128, 1024, "o = Q S, dq = G S^T (C in rows)"},
        {"gemm_nn 64x128x128 rows1040", P_NN, 64, 128, 128, 1040, "(rows not 4 KiB apart)"},
        {"gemm_nn_lower 64x128x64", P_LOWER, 64, 128, 64, 0, "A V, dA K"},
        {"gemm_tn_block 128x128x64", P_TN_BLOCK, 128, 128, 64, 0, "S += K^T V, dS += Q^T G"},
        {"gemm_tn 128x128x64", P_TN, 128, 128, 64, 0, "(gemm_tn_block's fallback)"},
        {"gemm_nt 64x128x128", P_NT, 64, 128, 128, 0, "V dS^T (G S^T normalised)"},
        {"tn_lower_acc 64x128 (L=64)", P_TN_LOWER, 64, 128, 64, 0, "dA^T Q, A^T G"},
    };
    const double pk = peak();
    printf("isa %s, FMA peak %.1f GFLOP/s (best of 5, this run)\n", la_isa_name(kr->isa), pk);
    printf("%-28s %9s %8s %6s  %s\n", "product", "us/call", "GFLOP/s", "%peak", "in the op");
    int64_t next = 0;
    for (size_t c = 0; c < sizeof ps / sizeof ps[0]; c++) {
        const prod *p = ps + c;
        const float *a = p->kind == P_LOWER || p->kind == P_TN_LOWER ? Al : A;
        double s[15];
        for (int r = 0; r < 15; r++) {
            const double t0 = tcpu();
            for (int i = 0; i < 200; i++) run(kr, p, a, B, C, big, nbig_chunks, &next);
            s[r] = (tcpu() - t0) / 200;
        }
        const double t = ab_median(s, 15, NULL, NULL);
        double fl = 2.0 * p->m * p->n * p->k;
        if (p->kind == P_TRIL || p->kind == P_NN_TRIL) fl = 2.0 * p->m * (p->m + 1) / 2 * p->k;
        if (p->kind == P_LOWER || p->kind == P_TN_LOWER) fl = 2.0 * p->m * (p->m + 1) / 2 * p->n;
        printf("%-28s %9.2f %8.1f %5.1f%%  %s\n", p->name, 1e6 * t, fl / t / 1e9,
               100 * fl / t / 1e9 / pk, p->use);
    }
    free(A), free(B), free(C), free(big), free(Al);
    return 0;
}
