/* Dense float32 micro-kernels for the chunkwise forms: the small matrix
 * products inside one chunk (Q·Kᵀ, A·V, Q·S, Kᵀ·V, the delta-rule W/U
 * products) and the unit-lower-triangular solve, in one table per
 * instruction set (portable C, AVX2+FMA, AVX-512), picked at run time.
 *
 * Conventions (BLAS-like, row-major):
 *   - Every matrix is float32, row-major, with an explicit leading dimension
 *     (distance in floats between the starts of two rows, >= the row width).
 *     Elements beyond the width of a row are never read or written.
 *   - Products write C = alpha * op(A)·op(B) + beta * C.
 *     beta == 0 overwrites: C is not read (it may hold NaN or garbage);
 *     beta == 1 accumulates (state updates); other values scale.
 *   - Sizes may be 0 (nothing happens except, for k == 0, C = beta * C,
 *     or C = 0 when beta == 0). Sizes are small (chunk 16..128, head dim
 *     16..256) but any size works.
 *   - C must not overlap A or B (trsm/trinv say what may alias).
 *   - No heap: the AVX2 path packs into stack buffers (16 KiB, 40 KiB for
 *     gemm_tn), so tasks need a few ten KiB of thread stack.
 *   - Single-threaded and deterministic: the same inputs give the same bits
 *     on every call, whatever thread runs it. The portable and SIMD paths
 *     round differently (different summation order, fused multiply-add), so
 *     compare paths with a float32 error bound, not bit for bit.
 *
 * Usage in an op (one chunk of C tokens, one head; q, k [C, K] and v, o
 * [C, V] with row strides ldq, ldk, ldv, ldo — H*K and H*V when pointing into
 * [B,T,H,D] tensors; A [C, C] scratch; S [K, V] the state):
 *     const la__kernels *kr = la__kernels_default();              // once per op call
 *     kr->gemm_nt_tril(C, K, 0, scale, q, ldq, k, ldk, 0.f, A, C);  // A = causal Q·Kᵀ
 *     kr->gemm_nn_lower(C, V, C, 1.f, A, C, v, ldv, 0.f, o, ldo);   // o = A·V
 *     kr->gemm_nn(C, V, K, scale, q, ldq, S, V, 1.f, o, ldo);       // o += Q·S
 *     kr->gemm_tn(K, V, C, 1.f, k, ldk, v, ldv, 1.f, S, V);         // S += Kᵀ·V
 * Delta rule: with T the unit-lower [C, C] matrix of the chunk, solve
 * W = T⁻¹(β⊙K) and U = T⁻¹(β⊙V) in place with trsm_llu (r = K or V columns)
 * rather than forming T⁻¹ (trinv_llu is there when the inverse itself is
 * needed, e.g. for the backward pass).
 * Fetch the table once per op call (outside the parallel loop) and pass it
 * to the tasks, so every task of one call uses the same path.
 * Speed (bench/NOTES.md): 75-90% of the AVX2 FMA peak with dense rows; rows a
 * power of two apart cost 10-30% of that, so an op that copies a chunk's
 * q/k/v into contiguous per-thread scratch first gets the most out of them. */
#ifndef LINATTN_KERNELS_H
#define LINATTN_KERNELS_H

#include "linattn.h"

#include <stdint.h>

#if defined(__GNUC__)
#define LA_KERNEL_HIDDEN __attribute__((visibility("hidden")))
#else
#define LA_KERNEL_HIDDEN
#endif

/* C[m,n] = alpha * A[m,k] · B[k,n] + beta * C          (gemm_nn)
 * C[m,n] = alpha * A[m,k] · B[n,k]ᵀ + beta * C         (gemm_nt: Q·Kᵀ)
 * C[m,n] = alpha * A[k,m]ᵀ · B[k,n] + beta * C         (gemm_tn: Kᵀ·V)
 * The shapes in brackets are the stored shapes; lda, ldb, ldc are the row
 * strides of the stored matrices. */
typedef void (*la__gemm_fn)(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                            int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                            int64_t ldc);

/* Causal Q·Kᵀ: C[n,n] with
 *   C[i][j] = alpha * A[i,:]·B[j,:] + beta * C[i][j]   for j <= i (strict == 0)
 *                                                       or j <  i (strict == 1)
 *   C[i][j] = 0                                        otherwise (above the mask);
 * A [n,k], B [n,k]. Above-mask entries of C are written, never read. */
typedef void (*la__gemm_nt_tril_fn)(int64_t n, int64_t k, int strict, float alpha, const float *A,
                                    int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                    int64_t ldc);

/* cpu-kpack22: transposing copy, dst[c*ldd + r] = src[r*lds + c] for
 * r < rows, c < cols (no overlap). An op that keeps a chunk's Kᵀ (for
 * gemm_nn_tril and a state update through gemm_nn) forms it while it copies
 * the rows in, instead of each Q·Kᵀ product transposing K into its panels. */
typedef void (*la__transpose_fn)(int64_t rows, int64_t cols, const float *src, int64_t lds,
                                 float *dst, int64_t ldd);

/* Unit-lower-triangular solve, in place: B[n,r] := L⁻¹ · B, where L [n,n]
 * has an implicit unit diagonal; only its strictly lower part is read (the
 * diagonal and upper part may hold anything). B must not overlap L. */
typedef void (*la__trsm_fn)(int64_t n, int64_t r, const float *L, int64_t ldl, float *B,
                            int64_t ldb);

/* Inverse of a unit-lower-triangular matrix: X[n,n] = L⁻¹ (lower, unit
 * diagonal, zeros above — every element of X is written). Only the strictly
 * lower part of L is read. X must not overlap L. */
typedef void (*la__trinv_fn)(int64_t n, const float *L, int64_t ldl, float *X, int64_t ldx);

typedef struct la__kernels {
    la_isa isa; /* the path this table runs */
    la__gemm_fn gemm_nn;
    la__gemm_fn gemm_nt;
    la__gemm_fn gemm_tn;
    /* gemm_nn for a lower-triangular A (m == k, e.g. the masked attention
     * matrix of a chunk times V): A[i][p] for p > i must be zero — they may
     * be read (and multiply B), or skipped. Saves about half the work. */
    la__gemm_fn gemm_nn_lower;
    la__gemm_nt_tril_fn gemm_nt_tril;
    /* cpu-kpack22: gemm_nt_tril with B given transposed, Bt [k,n] (ldb its
     * row stride): C[i][j] = alpha * A[i,:]·Bt[:,j] (+ beta C) under the same
     * mask. The same values in the same operations as gemm_nt_tril on
     * B = Btᵀ: the same bits, on every path. */
    la__gemm_nt_tril_fn gemm_nn_tril;
    la__transpose_fn transpose;
    la__trsm_fn trsm_llu;
    la__trinv_fn trinv_llu;
    /* cpu-lin8: gemm_tn for an A that sits in a small dense block (a
     * per-thread chunk block, lda the row width): the same bits as gemm_tn;
     * NULL where the path has none (la__gemm_tn_block picks gemm_tn). */
    la__gemm_fn gemm_tn_block;
    /* cpu-dbwd15: B[n,r] := L^{-T} B for n <= LA__TRSM_T_ROWS (L unit lower,
     * only its strictly lower part read), the bits of
     * la__trsm_llu_transposed's reversal route; NULL where the path has none
     * (call la__trsm_llu_transposed, which picks it when it can). */
    la__trsm_fn trsm_llu_t;
} la__kernels;
#define LA__TRSM_T_ROWS 128

/* The table for `isa`, or for the best path below it that this CPU and build
 * can run (never NULL). Tests use it to force each path. */
LA_KERNEL_HIDDEN const la__kernels *la__kernels_for(la_isa isa);
/* The table the library uses: la_isa_active() (LINATTN_ISA read once,
 * thread-safely). */
LA_KERNEL_HIDDEN const la__kernels *la__kernels_default(void);

/* "portable" / "avx2" / "avx512" (ASCII case-insensitive) -> la_isa value;
 * -1 for NULL or anything else (how LINATTN_ISA is parsed). */
LA_KERNEL_HIDDEN int la__isa_from_name(const char *s);

/* ---- per-path tables and shared drivers (not for op code) ---------- */

LA_KERNEL_HIDDEN extern const la__kernels la__kernels_portable;
#if defined(__x86_64__) && defined(__GNUC__)
#define LA_KERNELS_HAVE_X86 1
LA_KERNEL_HIDDEN extern const la__kernels la__kernels_avx2;
LA_KERNEL_HIDDEN extern const la__kernels la__kernels_avx512;
LA_KERNEL_HIDDEN void la__transpose_avx2(int64_t rows, int64_t cols, const float *src, int64_t lds,
                                         float *dst, int64_t ldd);
#endif

/* Blocked triangular solve / inverse built on a path's gemm_nn, so that each
 * path gets a fast solve from its own product (src/kernels/trsm.c). Rows go
 * in blocks of LA__TRSM_BLOCK (two 6-row micro-tiles of the AVX2 gemm);
 * `diag` solves one diagonal block in place: X[nb, r] := L_bb⁻¹ X with
 * nb <= LA__TRSM_BLOCK, L_bb unit lower (strictly lower part read). */
#define LA__TRSM_BLOCK 12
typedef void (*la__trsm_diag_fn)(int64_t nb, int64_t r, const float *L, int64_t ldl, float *X,
                                 int64_t ldx);
LA_KERNEL_HIDDEN void la__trsm_diag_portable(int64_t nb, int64_t r, const float *L, int64_t ldl,
                                             float *X, int64_t ldx);
LA_KERNEL_HIDDEN void la__trsm_llu_blocked(la__gemm_fn gemm_nn, la__trsm_diag_fn diag, int64_t n,
                                           int64_t r, const float *L, int64_t ldl, float *B,
                                           int64_t ldb);
/* The transposed solve, B[n,r] := L^{-T} B for L [n,n] unit lower (strictly
 * lower part read, row stride n): with J the row reversal, J L^T J is unit
 * lower, so it is kr->trsm_llu on reversed rows. Lrev [n,n] and Brev [n,r]
 * are work space (no overlap with L or B), unused where kr->trsm_llu_t
 * does the same solve in place. Used by the backward passes of
 * the WY (delta-rule) chunk forms. */
LA_KERNEL_HIDDEN void la__trsm_llu_transposed(const la__kernels *kr, int64_t n, int64_t r,
                                              const float *L, float *Lrev, float *B, float *Brev);
LA_KERNEL_HIDDEN void la__trinv_llu_blocked(la__gemm_fn gemm_nn, la__trsm_diag_fn diag, int64_t n,
                                            const float *L, int64_t ldl, float *X, int64_t ldx);

/* ---- cpu-bwd6, cpu-dbwd15 ---------------------------------------------
 * C[L,n] += Aᵀ B for A [L,L] lower triangular (row stride lda, exact zeros
 * above the diagonal): row i of the result only sums A's rows p >= i, so
 * the rows [h, h + 16) take k in [h, L) only, skipping terms that are exact
 * zeros. Each element is then the same sum in the same order less leading
 * zero products (0·b with b finite leaves the +0 start unchanged; a
 * non-finite B row would have made the full product NaN), so the bits do
 * not change while L is within one k block of gemm_tn on every path (96 on
 * AVX2/AVX-512, unblocked on the portable path): only L <= 64 takes the
 * blocks. Four 16-row calls of gemm_tn_block (A read in place) do 5/8 of
 * the full product; cpu-bwd6's two gemm_tn halves did 3/4 (64x64 A, n 128,
 * Zen 5: AVX-512 4.1 -> 3.55 us, AVX2 7.2 -> 6.2 us, same bits; 8-row
 * blocks: 3.65 / 6.8 us, the B panels packed once per 8 rows). */
static inline void la__gemm_tn_lower_acc(const la__kernels *kr, int64_t L, int64_t n,
                                         const float *A, int64_t lda, const float *B, int64_t ldb,
                                         float *C, int64_t ldc) {
    if (L > 64) {
        kr->gemm_tn(L, n, L, 1.0f, A, lda, B, ldb, 1.0f, C, ldc);
        return;
    }
    for (int64_t h = 0; h < L; h += 16) {
        const int64_t m = L - h < 16 ? L - h : 16;
        (kr->gemm_tn_block ? kr->gemm_tn_block : kr->gemm_tn)(
            m, n, L - h, 1.0f, A + h * lda + h, lda, B + h * ldb, ldb, 1.0f, C + h * ldc, ldc);
    }
}

/* ---- cpu-lin8 ---------------------------------------------------------
 * kr->gemm_tn_block where the path has it, else kr->gemm_tn (same bits). */
static inline void la__gemm_tn_block(const la__kernels *kr, int64_t m, int64_t n, int64_t k,
                                     float alpha, const float *A, int64_t lda, const float *B,
                                     int64_t ldb, float beta, float *C, int64_t ldc) {
    (kr->gemm_tn_block ? kr->gemm_tn_block : kr->gemm_tn)(m, n, k, alpha, A, lda, B, ldb, beta, C,
                                                          ldc);
}

/* ---- cpu-kpack22 -------------------------------------------------------
 * C = alpha * Kᵀ·B + beta * C from Kt = Kᵀ [m,k] kept by the op (row
 * stride ldkt), by gemm_nn: the same bits as la__gemm_tn_block on K while
 * la__tn_from_t_same(m, k) (one k block of gemm_tn and one row block of
 * gemm_tn_block: every path then sums each element over k in order in one
 * chain and applies alpha and beta once; test_kernels checks it). */
#define LA__TN_FROM_T_MAX_K 96 /* KC_T of the AVX2 / AVX-512 paths */
#define LA__TN_FROM_T_MAX_M 128
static inline int la__tn_from_t_same(int64_t m, int64_t k) {
    return m <= LA__TN_FROM_T_MAX_M && k <= LA__TN_FROM_T_MAX_K;
}

#endif
