/* Unit-lower-triangular solve and inverse, blocked so that almost all of
 * the work is a product on the calling path's gemm_nn: rows are taken in
 * blocks of LA__TRSM_BLOCK; a block first subtracts L[block, before]·X[before]
 * (one gemm), then finishes with forward substitution inside the block (the
 * path's `diag` solver). */
#include "kernels.h"

#include <string.h>

void la__trsm_diag_portable(int64_t nb, int64_t r, const float *L, int64_t ldl, float *X,
                            int64_t ldx) {
    for (int64_t i = 1; i < nb; i++) {
        float *xi = X + i * ldx;
        for (int64_t j = 0; j < i; j++) {
            const float *xj = X + j * ldx;
            float l = L[i * ldl + j];
            for (int64_t c = 0; c < r; c++) xi[c] -= l * xj[c];
        }
    }
}

void la__trsm_llu_blocked(la__gemm_fn gemm_nn, la__trsm_diag_fn diag, int64_t n, int64_t r,
                          const float *L, int64_t ldl, float *B, int64_t ldb) {
    if (n <= 0 || r <= 0) return;
    for (int64_t i0 = 0; i0 < n; i0 += LA__TRSM_BLOCK) {
        int64_t nb = n - i0 < LA__TRSM_BLOCK ? n - i0 : LA__TRSM_BLOCK;
        if (i0 > 0) /* B[i0:i0+nb] -= L[i0:i0+nb, 0:i0] · B[0:i0] (rows already solved) */
            gemm_nn(nb, r, i0, -1.0f, L + i0 * ldl, ldl, B, ldb, 1.0f, B + i0 * ldb, ldb);
        diag(nb, r, L + i0 * ldl + i0, ldl, B + i0 * ldb, ldb);
    }
}

void la__trinv_llu_blocked(la__gemm_fn gemm_nn, la__trsm_diag_fn diag, int64_t n, const float *L,
                           int64_t ldl, float *X, int64_t ldx) {
    if (n <= 0) return;
    for (int64_t i = 0; i < n; i++) { /* X = I (a plain loop: the compiler makes it a memset) */
        for (int64_t j = 0; j < n; j++) X[i * ldx + j] = 0.0f;
        X[i * ldx + i] = 1.0f;
    }
    /* X = L⁻¹ solves L·X = I row block by row block; row i of X is zero
     * beyond column i, so block [i0, i1) only involves columns [0, i1). */
    for (int64_t i0 = 0; i0 < n; i0 += LA__TRSM_BLOCK) {
        int64_t nb = n - i0 < LA__TRSM_BLOCK ? n - i0 : LA__TRSM_BLOCK;
        if (i0 > 0) /* X[i0:i1, 0:i0] = -L[i0:i1, 0:i0] · X[0:i0, 0:i0] */
            gemm_nn(nb, i0, i0, -1.0f, L + i0 * ldl, ldl, X, ldx, 0.0f, X + i0 * ldx, ldx);
        diag(nb, i0 + nb, L + i0 * ldl + i0, ldl, X + i0 * ldx, ldx);
    }
}

void la__trsm_llu_transposed(const la__kernels *kr, int64_t n, int64_t r, const float *L,
                             float *Lrev, float *B, float *Brev) {
    if (kr->trsm_llu_t && n <= LA__TRSM_T_ROWS) {
        kr->trsm_llu_t(n, r, L, n, B, r);
        return;
    }
    for (int64_t a = 0; a < n; a++)
        for (int64_t b = 0; b < a; b++) Lrev[a * n + b] = L[(n - 1 - b) * n + (n - 1 - a)];
    for (int64_t a = 0; a < n; a++)
        memcpy(Brev + a * r, B + (n - 1 - a) * r, (size_t)r * sizeof(float));
    kr->trsm_llu(n, r, Lrev, n, Brev, r);
    for (int64_t a = 0; a < n; a++)
        memcpy(B + (n - 1 - a) * r, Brev + a * r, (size_t)r * sizeof(float));
}
