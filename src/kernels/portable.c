/* Portable C kernels: any CPU, any compiler. Written to be read first and
 * to vectorise where the compiler can without reassociating sums: the
 * products accumulate a block of a row of C over k in a local buffer
 * (row-times-panel form, an axpy along contiguous B rows), and write it
 * once, so C is read only when beta != 0. gemm_nt (dot products along k)
 * cannot be vectorised without reassociation and stays scalar, blocked
 * four columns at a time for register reuse of A. */
#include "kernels.h"

#include <stddef.h>

#define ROW_BLOCK 256 /* columns of C accumulated per pass */

/* C = alpha * acc + beta * C on one row segment. */
static void write_row(float *c, const float *acc, int64_t n, float alpha, float beta) {
    if (beta == 0.0f)
        for (int64_t j = 0; j < n; j++) c[j] = alpha * acc[j];
    else
        for (int64_t j = 0; j < n; j++) c[j] = alpha * acc[j] + beta * c[j];
}

/* Row i of C from A's row i taken with element stride `as` (1 for A, lda for
 * Aᵀ), over p < kmax. */
static void row_times_b(int64_t n, int64_t kmax, float alpha, const float *a, int64_t as,
                        const float *B, int64_t ldb, float beta, float *c) {
    float acc[ROW_BLOCK];
    for (int64_t j0 = 0; j0 < n; j0 += ROW_BLOCK) {
        int64_t nb = n - j0 < ROW_BLOCK ? n - j0 : ROW_BLOCK;
        for (int64_t j = 0; j < nb; j++) acc[j] = 0.0f;
        for (int64_t p = 0; p < kmax; p++) {
            float ap = a[p * as];
            const float *b = B + p * ldb + j0;
            for (int64_t j = 0; j < nb; j++) acc[j] += ap * b[j];
        }
        write_row(c + j0, acc, nb, alpha, beta);
    }
}

static void portable_gemm_nn(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                             int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                             int64_t ldc) {
    for (int64_t i = 0; i < m; i++)
        row_times_b(n, k, alpha, A + i * lda, 1, B, ldb, beta, C + i * ldc);
}

static void portable_gemm_nn_lower(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                                   int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                   int64_t ldc) {
    for (int64_t i = 0; i < m; i++) {
        int64_t kmax = i + 1 < k ? i + 1 : k; /* A[i][p] == 0 for p > i */
        row_times_b(n, kmax, alpha, A + i * lda, 1, B, ldb, beta, C + i * ldc);
    }
}

static void portable_gemm_tn(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                             int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                             int64_t ldc) {
    for (int64_t i = 0; i < m; i++) row_times_b(n, k, alpha, A + i, lda, B, ldb, beta, C + i * ldc);
}

/* C[i][j] for j in [j0, j1) as dot products of A's row i with B's rows j. */
static void row_dots(int64_t j0, int64_t j1, int64_t k, float alpha, const float *a, const float *B,
                     int64_t ldb, float beta, float *c) {
    int64_t j = j0;
    for (; j + 4 <= j1; j += 4) {
        const float *b0 = B + j * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t p = 0; p < k; p++) {
            s[0] += a[p] * b0[p];
            s[1] += a[p] * b1[p];
            s[2] += a[p] * b2[p];
            s[3] += a[p] * b3[p];
        }
        write_row(c + j, s, 4, alpha, beta);
    }
    for (; j < j1; j++) {
        const float *b = B + j * ldb;
        float s = 0.0f;
        for (int64_t p = 0; p < k; p++) s += a[p] * b[p];
        write_row(c + j, &s, 1, alpha, beta);
    }
}

static void portable_gemm_nt(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                             int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                             int64_t ldc) {
    for (int64_t i = 0; i < m; i++)
        row_dots(0, n, k, alpha, A + i * lda, B, ldb, beta, C + i * ldc);
}

static void portable_gemm_nt_tril(int64_t n, int64_t k, int strict, float alpha, const float *A,
                                  int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                  int64_t ldc) {
    for (int64_t i = 0; i < n; i++) {
        float *c = C + i * ldc;
        int64_t jend = strict ? i : i + 1; /* columns [0, jend) are under the mask */
        row_dots(0, jend, k, alpha, A + i * lda, B, ldb, beta, c);
        for (int64_t j = jend; j < n; j++) c[j] = 0.0f;
    }
}

/* B given transposed (Bt [k,n]): row i as row_times_b over its columns
 * under the mask, the same products and sums in the same order as
 * row_dots on B (same bits). */
static void portable_gemm_nn_tril(int64_t n, int64_t k, int strict, float alpha, const float *A,
                                  int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                  int64_t ldc) {
    for (int64_t i = 0; i < n; i++) {
        float *c = C + i * ldc;
        int64_t jend = strict ? i : i + 1;
        if (jend > 0) row_times_b(jend, k, alpha, A + i * lda, 1, B, ldb, beta, c);
        for (int64_t j = jend; j < n; j++) c[j] = 0.0f;
    }
}

static void portable_transpose(int64_t rows, int64_t cols, const float *src, int64_t lds,
                               float *dst, int64_t ldd) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];
}

static void portable_trsm_llu(int64_t n, int64_t r, const float *L, int64_t ldl, float *B,
                              int64_t ldb) {
    la__trsm_llu_blocked(portable_gemm_nn, la__trsm_diag_portable, n, r, L, ldl, B, ldb);
}

static void portable_trinv_llu(int64_t n, const float *L, int64_t ldl, float *X, int64_t ldx) {
    la__trinv_llu_blocked(portable_gemm_nn, la__trsm_diag_portable, n, L, ldl, X, ldx);
}

const la__kernels la__kernels_portable = {
    .isa = LA_ISA_PORTABLE,
    .gemm_nn = portable_gemm_nn,
    .gemm_nt = portable_gemm_nt,
    .gemm_tn = portable_gemm_tn,
    .gemm_nn_lower = portable_gemm_nn_lower,
    .gemm_nt_tril = portable_gemm_nt_tril,
    .gemm_nn_tril = portable_gemm_nn_tril,
    .transpose = portable_transpose,
    .trsm_llu = portable_trsm_llu,
    .trinv_llu = portable_trinv_llu,
};
