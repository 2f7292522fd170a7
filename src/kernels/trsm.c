/* Unit-lower-triangular solve and inverse, blocked so that almost all of
 * the work is a product on the calling path's gemm_nn: rows are taken in
 * blocks of TRSM_BLOCK; a block first subtracts L[block, before]·X[before]
 * (one gemm), then finishes with forward substitution inside the block
 * (row axpys along contiguous rows of X). */
#include "kernels.h"

#define TRSM_BLOCK 16

/* x[0, len) -= l * y[0, len) */
static void axpy_sub(float *x, const float *y, float l, int64_t len) {
    for (int64_t c = 0; c < len; c++) x[c] -= l * y[c];
}

void la__trsm_llu_blocked(la__gemm_fn gemm_nn, int64_t n, int64_t r, const float *L,
                          int64_t ldl, float *B, int64_t ldb) {
    if (n <= 0 || r <= 0) return;
    for (int64_t i0 = 0; i0 < n; i0 += TRSM_BLOCK) {
        int64_t i1 = n - i0 < TRSM_BLOCK ? n : i0 + TRSM_BLOCK;
        if (i0 > 0) /* B[i0:i1] -= L[i0:i1, 0:i0] · B[0:i0] (rows already solved) */
            gemm_nn(i1 - i0, r, i0, -1.0f, L + i0 * ldl, ldl, B, ldb, 1.0f, B + i0 * ldb, ldb);
        for (int64_t i = i0 + 1; i < i1; i++)
            for (int64_t j = i0; j < i; j++)
                axpy_sub(B + i * ldb, B + j * ldb, L[i * ldl + j], r);
    }
}

void la__trinv_llu_blocked(la__gemm_fn gemm_nn, int64_t n, const float *L, int64_t ldl,
                           float *X, int64_t ldx) {
    if (n <= 0) return;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) X[i * ldx + j] = i == j ? 1.0f : 0.0f;
    /* X = L⁻¹ solves L·X = I row block by row block; row i of X is zero
     * beyond column i, so each block only touches columns [0, i1). */
    for (int64_t i0 = 0; i0 < n; i0 += TRSM_BLOCK) {
        int64_t i1 = n - i0 < TRSM_BLOCK ? n : i0 + TRSM_BLOCK;
        if (i0 > 0) /* X[i0:i1, 0:i0] = -L[i0:i1, 0:i0] · X[0:i0, 0:i0] */
            gemm_nn(i1 - i0, i0, i0, -1.0f, L + i0 * ldl, ldl, X, ldx, 0.0f, X + i0 * ldx, ldx);
        for (int64_t i = i0 + 1; i < i1; i++)
            for (int64_t j = i0; j < i; j++)
                axpy_sub(X + i * ldx, X + j * ldx, L[i * ldl + j], j + 1);
    }
}
