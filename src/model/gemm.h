/* The model's matrix product (see gemm.c for its rounding contract). */
#ifndef LINATTN_MODEL_GEMM_H
#define LINATTN_MODEL_GEMM_H

#include "pool.h"

#include <stdint.h>

/* y [M,N] = a [M,K] b [K,N] (acc = 0) or y += a b (acc = 1). */
void lm_gemm(lm_pool *pool, float *y, const float *a, const float *b, int64_t M, int64_t K,
             int64_t N, int acc);
/* The same with a[m,k] read at a[m * ars + k * aks] (aks = lda, ars = 1 for
 * a transposed operand). */
void lm_gemm_strided(lm_pool *pool, float *y, const float *a, int64_t ars, int64_t aks,
                     const float *b, int64_t M, int64_t K, int64_t N, int acc);
/* The kernel in use: "avx512", "avx2+fma" or "portable". AVX-512 and AVX2
 * compute the same fused chains, so they give identical bits. */
const char *lm_gemm_isa(void);
/* dst [C,R] = src [R,C]^T */
void lm_transpose(float *dst, const float *src, int64_t R, int64_t C);

#endif
