/* AVX2 + FMA kernels (x86-64). Compiled with per-function target
 * attributes, so the library builds with plain flags and this code only
 * runs where dispatch.c found AVX2, FMA and the OS's YMM state.
 *
 * All products share one driver, a register-blocked micro-kernel in the
 * style of BLIS/GotoBLAS:
 *   - the micro-tile is MR x NR = 6 x 16 floats of C, held in 12 YMM
 *     accumulators; each step over k broadcasts 6 elements of A and loads
 *     two vectors of B (8 loads for 12 FMAs, so the two FMA pipes, not the
 *     load ports, are the limit), and 12 independent accumulators cover
 *     the FMA latency (4 cycles x 2 pipes on Zen 3 / Skylake);
 *   - B is consumed as a k x 16 panel with unit column stride, packed into
 *     an aligned stack buffer before the panel's tiles, full panels too
 *     (rows of B a power of two apart share L1 sets; 8x8 transposes for Bᵀ),
 *     zero-padded so edge tiles need no masked loads in the k loop;
 *   - A is read in place with a row stride and a k stride (gemm_tn reads
 *     Aᵀ by swapping them), so no workspace is needed;
 *   - k is split into KC blocks (the packed panel stays in L1) and m into
 *     MC blocks (the rows of A in use stay in L2); C is written once per k
 *     block, with masked stores at the right edge, never beyond column n.
 * Rounding: each C element is one float32 sum over k in order, by fused
 * multiply-adds, then alpha * sum (+ beta * C). */
#include "kernels.h"

#if defined(LA_KERNELS_HAVE_X86)

#include <immintrin.h>
#include <stdalign.h>
#include <stddef.h>

#define TARGET __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

#define MR 6
#define NR 16
#define KC 256 /* packed panel: KC * NR * 4 bytes = 16 KiB */
#define MC 132 /* 22 micro-tiles of rows; covers chunk sizes <= 132 in one block */
/* gemm_tn reads Aᵀ: row p of the stored A holds 16 consecutive rows of the
 * product in one cache line, so a tile touches kc lines a stride apart, and
 * a power-of-two stride (an op's H*K) puts them all in one L1 set. Those
 * rows are copied into a [KC_T][MC_T] block first (24 KiB of stack). */
#define KC_T 96
_Static_assert(KC_T == LA__TN_FROM_T_MAX_K && LA__TN_FROM_T_MAX_M <= MC,
               "la__tn_from_t_same: gemm_tn_block's one-block case");
#define MC_T 64

/* mask_for(n): lanes [0, n) all ones, the rest zero, 0 <= n <= 8 */
static const int32_t mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
INLINE TARGET __m256i mask_for(int n) {
    return _mm256_loadu_si256((const __m256i *)(mask_table + 8 - n));
}

static inline int clamp8(int64_t x) { return x < 0 ? 0 : x > 8 ? 8 : (int)x; }

/* Stores alpha * acc (+ beta * C) into one vector of a row of C:
 * `present` columns exist (the rest are beyond n: never touched), the first
 * `valid` of them are under the causal mask (the rest get 0). */
INLINE TARGET void store_vec(float *c, __m256 acc, int present, int valid, __m256 valpha,
                             float beta) {
    __m256 val = _mm256_mul_ps(valpha, acc);
    if (beta != 0.0f) {
        __m256 cv = valid == 8 ? _mm256_loadu_ps(c) : _mm256_maskload_ps(c, mask_for(valid));
        if (beta == 1.0f)
            val = _mm256_add_ps(val, cv);
        else
            val = _mm256_fmadd_ps(_mm256_set1_ps(beta), cv, val);
    }
    if (valid < 8) val = _mm256_and_ps(val, _mm256_castsi256_ps(mask_for(valid)));
    if (present == 8)
        _mm256_storeu_ps(c, val);
    else
        _mm256_maskstore_ps(c, mask_for(present), val);
}

/* The micro-kernel: C[mr x nr] tile from A (element (r, p) at
 * a[r*rsa + p*csa]) and a B panel (row p at b + p*bs, 16 columns, of
 * which nv*8 are used). Row r keeps lim0 + r columns (the causal mask;
 * lim0 >= nr when unmasked). mr and nv are compile-time constants after
 * inlining, so acc[][] lives in registers. */
INLINE TARGET void micro_tile(const int mr, const int nv, int64_t kc, const float *a, int64_t rsa,
                              int64_t csa, const float *b, int64_t bs, int nr, float alpha,
                              float beta, float *c, int64_t ldc, int64_t lim0) {
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const float *a_rows[MR];
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) a_rows[r] = a + r * rsa;
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        __m256 b0 = _mm256_loadu_ps(b);
        __m256 b1 = nv > 1 ? _mm256_loadu_ps(b + 8) : _mm256_setzero_ps();
        b += bs;
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            __m256 ar = _mm256_broadcast_ss(a_rows[r]);
            a_rows[r] += csa;
            acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
            if (nv > 1) acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    __m256 valpha = _mm256_set1_ps(alpha);
    if (nr >= 8 * nv && lim0 >= 8 * nv) {
        /* cpu-gemm21: whole vectors, nothing masked (every tile but the
         * causal products' diagonal ones and the n % 16 edges): beta's case
         * picked once per tile, not per vector; the same operations as
         * store_vec (same bits) */
        if (beta == 0.0f) {
#pragma GCC unroll 6
            for (int r = 0; r < mr; r++)
                for (int v = 0; v < nv; v++)
                    _mm256_storeu_ps(c + r * ldc + 8 * v, _mm256_mul_ps(valpha, acc[r][v]));
        } else if (beta == 1.0f) {
#pragma GCC unroll 6
            for (int r = 0; r < mr; r++)
                for (int v = 0; v < nv; v++)
                    _mm256_storeu_ps(c + r * ldc + 8 * v,
                                     _mm256_add_ps(_mm256_mul_ps(valpha, acc[r][v]),
                                                   _mm256_loadu_ps(c + r * ldc + 8 * v)));
        } else {
            const __m256 vbeta = _mm256_set1_ps(beta);
#pragma GCC unroll 6
            for (int r = 0; r < mr; r++)
                for (int v = 0; v < nv; v++)
                    _mm256_storeu_ps(c + r * ldc + 8 * v,
                                     _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(c + r * ldc + 8 * v),
                                                     _mm256_mul_ps(valpha, acc[r][v])));
        }
        return;
    }
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
        int64_t lim = lim0 + r;
        if (lim > nr) lim = nr;
        for (int v = 0; v < nv; v++) {
            int present = clamp8(nr - 8 * v);
            if (present == 0) break;
            store_vec(c + r * ldc + 8 * v, acc[r][v], present, clamp8(lim - 8 * v), valpha, beta);
        }
    }
}

typedef void (*tile_fn)(int64_t kc, const float *a, int64_t rsa, int64_t csa, const float *b,
                        int64_t bs, int nr, float alpha, float beta, float *c, int64_t ldc,
                        int64_t lim0);

#define TILE(mr, nv)                                                                               \
    static TARGET void tile_##mr##_##nv(int64_t kc, const float *a, int64_t rsa, int64_t csa,      \
                                        const float *b, int64_t bs, int nr, float alpha,           \
                                        float beta, float *c, int64_t ldc, int64_t lim0) {         \
        micro_tile(mr, nv, kc, a, rsa, csa, b, bs, nr, alpha, beta, c, ldc, lim0);                 \
    }
/* clang-format off */
TILE(1, 1) TILE(2, 1) TILE(3, 1) TILE(4, 1) TILE(5, 1) TILE(6, 1)
TILE(1, 2) TILE(2, 2) TILE(3, 2) TILE(4, 2) TILE(5, 2) TILE(6, 2)
#undef TILE

static const tile_fn tiles[MR + 1][3] = {
    {0, 0, 0},
    {0, tile_1_1, tile_1_2},
    {0, tile_2_1, tile_2_2},
    {0, tile_3_1, tile_3_2},
    {0, tile_4_1, tile_4_2},
    {0, tile_5_1, tile_5_2},
    {0, tile_6_1, tile_6_2},
};
/* clang-format on */

/* Panel of B [kc x nr] (row p at b + p*ldb) into dst [kc x 16], zero-padded. */
static TARGET void pack_rows(int64_t kc, int nr, const float *b, int64_t ldb, float *dst) {
    if (nr == NR) {
        for (int64_t p = 0; p < kc; p++, b += ldb, dst += NR) {
            _mm256_store_ps(dst, _mm256_loadu_ps(b));
            _mm256_store_ps(dst + 8, _mm256_loadu_ps(b + 8));
        }
        return;
    }
    /* masked loads read only the nr columns that exist and give 0 beyond */
    __m256i m0 = mask_for(clamp8(nr)), m1 = mask_for(clamp8(nr - 8));
    for (int64_t p = 0; p < kc; p++, b += ldb, dst += NR) {
        _mm256_store_ps(dst, _mm256_maskload_ps(b, m0));
        _mm256_store_ps(dst + 8, _mm256_maskload_ps(b + 8, m1));
    }
}

/* kc rows of `width` <= MC_T floats (row p at a + p*lda) into dst [kc x MC_T]. */
static TARGET void pack_rows_wide(int64_t kc, int64_t width, const float *a, int64_t lda,
                                  float *dst) {
    for (int64_t p = 0; p < kc; p++, a += lda, dst += MC_T) {
        int64_t j = 0;
        for (; j + 8 <= width; j += 8) _mm256_store_ps(dst + j, _mm256_loadu_ps(a + j));
        if (j < width)
            _mm256_store_ps(dst + j, _mm256_maskload_ps(a + j, mask_for((int)(width - j))));
    }
}

/* 8x8 transpose of rows r[0..7] in place. */
INLINE TARGET void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

/* Bᵀ panel: B rows j < nr (row j at b + j*ldb, kc floats each) become the
 * columns of dst [kc x 16], zero-padded: dst[p*16 + j] = b[j*ldb + p]. */
static TARGET void pack_transposed(int64_t kc, int nr, const float *b, int64_t ldb, float *dst) {
    for (int h = 0; h < NR; h += 8) {
        int rows = nr - h < 0 ? 0 : nr - h > 8 ? 8 : nr - h;
        int64_t p = 0;
        if (rows == 8) {
            for (; p + 8 <= kc; p += 8) {
                __m256 r[8];
                for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(b + (h + j) * ldb + p);
                transpose8(r);
                for (int q = 0; q < 8; q++) _mm256_store_ps(dst + (p + q) * NR + h, r[q]);
            }
        }
        for (; p < kc; p++) {
            int j = 0;
            for (; j < rows; j++) dst[p * NR + h + j] = b[(h + j) * ldb + p];
            for (; j < 8; j++) dst[p * NR + h + j] = 0.0f;
        }
    }
}

enum { B_ROWS = 0, B_TRANSPOSED = 1 };

/* C[m,n] = alpha * A·B + beta * C with A (i, p) at A[i*rsa + p*csa] and
 * B (p, j) at B[p*ldb + j] (B_ROWS) or B[j*ldb + p] (B_TRANSPOSED).
 * tril >= 0: causal mask, row i keeps columns j < i + tril (tril = 1:
 * inclusive, 0: strict); -1: no mask. lower_a: A[i][p] == 0 for p > i,
 * so the k loop of a tile stops after its last row. */
static TARGET void gemm_driver(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                               int64_t rsa, int64_t csa, const float *B, int64_t ldb, int b_layout,
                               float beta, float *C, int64_t ldc, int tril, int lower_a,
                               float *apack) {
    if (m <= 0 || n <= 0) return;
    alignas(32) float bpack[KC * NR];
    const int pack_a = apack != NULL; /* Aᵀ (gemm_tn): copied to apack [KC_T x MC_T] */
    const int64_t kcb = pack_a ? KC_T : KC, mcb = pack_a ? MC_T : MC;
    int64_t pc = 0;
    do {
        int64_t kc = k - pc < kcb ? k - pc : kcb;
        float beta_k = pc == 0 ? beta : 1.0f; /* later k blocks accumulate */
        for (int64_t ic0 = 0; ic0 < m; ic0 += mcb) {
            int64_t mc_end = m - ic0 < mcb ? m : ic0 + mcb;
            if (pack_a) pack_rows_wide(kc, mc_end - ic0, A + pc * csa + ic0 * rsa, csa, apack);
            for (int64_t jc = 0; jc < n; jc += NR) {
                int nr = n - jc < NR ? (int)(n - jc) : NR;
                const float *bp = bpack;
                const int64_t bs = NR;
                int64_t ic_first = ic0;
                if (tril >= 0) {
                    /* Rows i with i + tril <= jc have nothing under the mask in
                     * this panel: zero them once, on the first k block. */
                    int64_t first_row = jc - tril + 1; /* lim = i - jc + tril >= 1 */
                    if (first_row > mc_end) first_row = mc_end;
                    if (first_row > ic_first) {
                        if (pc == 0)
                            for (int64_t i = ic_first; i < first_row; i++)
                                for (int j = 0; j < nr; j++) C[i * ldc + jc + j] = 0.0f;
                        ic_first = first_row;
                    }
                    if (ic_first >= mc_end) continue;
                }
                if (kc > 0) {
                    if (b_layout == B_TRANSPOSED)
                        pack_transposed(kc, nr, B + jc * ldb + pc, ldb, bpack);
                    else /* copied even when full: rows of B a power of two apart
                            would share a few L1 sets and evict each other */
                        pack_rows(kc, nr, B + pc * ldb + jc, ldb, bpack);
                }
                int nv = nr > 8 ? 2 : 1;
                for (int64_t ic = ic_first; ic < mc_end; ic += MR) {
                    int mr = mc_end - ic < MR ? (int)(mc_end - ic) : MR;
                    int64_t kt = kc;
                    if (lower_a) { /* columns p >= ic + mr of these rows are zero */
                        int64_t kmax = ic + mr - pc;
                        if (kmax < kt) kt = kmax < 0 ? 0 : kmax;
                        if (kt == 0 && pc > 0) continue; /* nothing to add */
                    }
                    int64_t lim0 = tril >= 0 ? ic - jc + tril : NR;
                    int nv_t = nv;
                    if (nv == 2 && lim0 + mr - 1 <= 8) {
                        /* a tile on the diagonal with nothing under the mask
                         * beyond column 8 of the panel: half the FMAs; zero
                         * the right half (once: later k blocks keep it 0) */
                        nv_t = 1;
                        if (pc == 0)
                            for (int r = 0; r < mr; r++)
                                for (int j = 8; j < nr; j++) C[(ic + r) * ldc + jc + j] = 0.0f;
                    }
                    if (pack_a)
                        tiles[mr][nv_t](kt, apack + (ic - ic0), 1, MC_T, bp, bs, nr, alpha, beta_k,
                                        C + ic * ldc + jc, ldc, lim0);
                    else
                        tiles[mr][nv_t](kt, A + ic * rsa + pc * csa, rsa, csa, bp, bs, nr, alpha,
                                        beta_k, C + ic * ldc + jc, ldc, lim0);
                }
            }
        }
        pc += kc;
    } while (pc < k);
}

static void avx2_gemm_nn(int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm_driver(m, n, k, alpha, A, lda, 1, B, ldb, B_ROWS, beta, C, ldc, -1, 0, NULL);
}

static void avx2_gemm_nn_lower(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                               int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                               int64_t ldc) {
    gemm_driver(m, n, k, alpha, A, lda, 1, B, ldb, B_ROWS, beta, C, ldc, -1, 1, NULL);
}

static void avx2_gemm_nt(int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    gemm_driver(m, n, k, alpha, A, lda, 1, B, ldb, B_TRANSPOSED, beta, C, ldc, -1, 0, NULL);
}

static void avx2_gemm_tn(int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    alignas(32) float apack[KC_T * MC_T]; /* only gemm_tn pays for this stack */
    gemm_driver(m, n, k, alpha, A, 1, lda, B, ldb, B_ROWS, beta, C, ldc, -1, 0, apack);
}

/* cpu-gla14: gemm_tn for an A in a small dense block, reading Aᵀ in place
 * (as avx512.c's gemm_tn_block): with m <= MC (132) one row block, so B's
 * panels are packed once, not once per MC_T (64) rows (the GLA and simple
 * GLA / linear-attention state updates, m = K = 128). Each element is the
 * same chain of FMAs over k as in gemm_tn while k <= KC_T (one k block in
 * both): the same bits; beyond that, and for m > MC, gemm_tn itself. */
static void avx2_gemm_tn_block(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                               int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                               int64_t ldc) {
    if (k > KC_T || m > MC) {
        avx2_gemm_tn(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    gemm_driver(m, n, k, alpha, A, 1, lda, B, ldb, B_ROWS, beta, C, ldc, -1, 0, NULL);
}

static void avx2_gemm_nt_tril(int64_t n, int64_t k, int strict, float alpha, const float *A,
                              int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                              int64_t ldc) {
    gemm_driver(n, n, k, alpha, A, lda, 1, B, ldb, B_TRANSPOSED, beta, C, ldc, strict ? 0 : 1, 0,
                NULL);
}

static void avx2_gemm_nn_tril(int64_t n, int64_t k, int strict, float alpha, const float *A,
                              int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                              int64_t ldc) {
    gemm_driver(n, n, k, alpha, A, lda, 1, B, ldb, B_ROWS, beta, C, ldc, strict ? 0 : 1, 0, NULL);
}

/* cpu-kpack22: dst[c*ldd + r] = src[r*lds + c], 8 rows by 8 columns at a
 * time through transpose8 (the AVX-512 table uses it too). */
TARGET void la__transpose_avx2(int64_t rows, int64_t cols, const float *src, int64_t lds,
                               float *dst, int64_t ldd) {
    int64_t r = 0;
    for (; r + 8 <= rows; r += 8) {
        int64_t c = 0;
        for (; c + 8 <= cols; c += 8) {
            __m256 x[8];
            for (int i = 0; i < 8; i++) x[i] = _mm256_loadu_ps(src + (r + i) * lds + c);
            transpose8(x);
            for (int q = 0; q < 8; q++) _mm256_storeu_ps(dst + (c + q) * ldd + r, x[q]);
        }
        for (; c < cols; c++)
            for (int i = 0; i < 8; i++) dst[c * ldd + r + i] = src[(r + i) * lds + c];
    }
    for (; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];
}

/* Loads 8 columns of a row: all present (full) or the first `mask` lanes. */
INLINE TARGET __m256 strip_load(const int full, const float *p, __m256i mask) {
    return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
}

/* Forward substitution inside one diagonal block, 8 columns at a time:
 * the block's rows of the strip live in registers (nb <= 12 YMM), so each
 * of the nb(nb-1)/2 updates is one FMA with a broadcast of L, element
 * (x, y) at L[x*rs + y*cs]. Row 0 is final as loaded (not stored). */
INLINE TARGET void diag_strip(const int nb, const int full, const float *L, int64_t rs, int64_t cs,
                              float *X, int64_t ldx, int cols) {
    __m256 x[LA__TRSM_BLOCK];
    const __m256i mask = mask_for(cols);
#pragma GCC unroll 12
    for (int i = 0; i < nb; i++) x[i] = strip_load(full, X + i * ldx, mask);
#pragma GCC unroll 12
    for (int i = 1; i < nb; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < i; j++)
            x[i] = _mm256_fnmadd_ps(_mm256_broadcast_ss(L + i * rs + j * cs), x[j], x[i]);
        if (full)
            _mm256_storeu_ps(X + i * ldx, x[i]);
        else
            _mm256_maskstore_ps(X + i * ldx, mask, x[i]);
    }
}

/* One diagonal block's 8-column strip, compiled for the two forms of L
 * used: cs == 1 (row-major L: the blocked solves, trsm_llu) and rs == -1
 * (trsm_llu_t's reversed L^T), the known step freeing registers; one strip
 * per call (a loop over strips here had GCC hoist L's 11 row addresses
 * out of it and spill them: 0.87x for the whole solve). */
typedef void (*diag_fn)(const float *L, int64_t rs, int64_t cs, float *X, int64_t ldx, int cols);
#define DIAG(nb, full)                                                                             \
    static TARGET void diag_##nb##_##full(const float *L, int64_t rs, int64_t cs, float *X,        \
                                          int64_t ldx, int cols) {                                 \
        if (cs == 1)                                                                               \
            diag_strip(nb, full, L, rs, 1, X, ldx, cols);                                          \
        else /* rs == -1 */                                                                        \
            diag_strip(nb, full, L, -1, cs, X, ldx, cols);                                         \
    }
#define DIAGS(nb) DIAG(nb, 0) DIAG(nb, 1)
/* clang-format off */
DIAGS(2) DIAGS(3) DIAGS(4) DIAGS(5) DIAGS(6) DIAGS(7) DIAGS(8) DIAGS(9) DIAGS(10) DIAGS(11) DIAGS(12)
#undef DIAGS
#undef DIAG
#define DIAGS(nb) {diag_##nb##_0, diag_##nb##_1}
static const diag_fn diags[LA__TRSM_BLOCK + 1][2] = { /* [nb][full] */
    {0, 0}, {0, 0}, DIAGS(2), DIAGS(3), DIAGS(4), DIAGS(5), DIAGS(6), DIAGS(7), DIAGS(8),
    DIAGS(9), DIAGS(10), DIAGS(11), DIAGS(12)};
#undef DIAGS
/* clang-format on */

/* Substitution in one diagonal block of nb rows (nb <= LA__TRSM_BLOCK),
 * r columns, 8 at a time. */
static TARGET void diag_block(int nb, int64_t r, const float *L, int64_t rs, int64_t cs, float *X,
                              int64_t ldx) {
    if (nb < 2) return; /* one row: nothing to do */
    for (int64_t c = 0; c < r; c += 8) {
        const int cols = clamp8(r - c);
        diags[nb][cols == 8](L, rs, cs, X + c, ldx, cols);
    }
}

static void avx2_trsm_diag(int64_t nb, int64_t r, const float *L, int64_t ldl, float *X,
                           int64_t ldx) {
    diag_block((int)nb, r, L, ldl, 1, X, ldx);
}

/* ---- cpu-avx2trsm23: trsm_llu by 16-column strips, solved in place ----
 * la__trsm_llu_blocked's arithmetic operation for operation (so the same
 * bits as before, and as the AVX-512 path): for each row block of
 * LA__TRSM_BLOCK rows, acc = sum_{p < i0} L[i][p] B[p] (one chain of FMAs
 * in p order from zero, as the gemm's micro-tile), B[i] - acc (= B[i] +
 * (-1 * acc), the gemm's alpha = -1, beta = 1 store), then forward
 * substitution inside the block (diag_strip). What changes is where the
 * data sit: the strip is solved in place, the products reading the solved
 * rows from B itself (no B panel packed per block, as the gemm did), and
 * trsm_llu_t reads L^T and B's rows reversed in place (no copies of the
 * reversal route). The product runs on the gemm's 6 x 16 tile shape (12
 * accumulators, 2 loads of B + 6 broadcasts per 12 FMAs, no spill): a 12 x 8
 * shape keeping the whole block in registers through the substitution, as
 * avx512.c's 12 x 32 does in 24 ZMM, needs 13 loads per 12 FMAs and ran at
 * 78% of the AVX2 peak (64 x 128, Zen 5) against 93% for this one. Strips
 * for n <= TRSM_ROWS (one KC block: i0 < KC, as the blocked solve). */
#define TRSM_ROWS 128

/* Rows [i, i+mr) of a block starting at row i0 (a: L's row i, rows: B's
 * row i), 8 * nv columns of which `cols` present (all when full):
 * B[i] - sum_{p < i0} L[i][p] B[p], stored to B. */
INLINE TARGET void trsm_tile(const int mr, const int nv, const int full, int64_t i0, const float *a,
                             int64_t rs, int64_t cs, const float *B, int64_t sb, float *rows,
                             int cols) {
    const __m256i m0 = mask_for(clamp8(cols)), m1 = mask_for(clamp8(cols - 8));
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const float *b = B;
#pragma GCC unroll 2
    for (int64_t p = 0; p < i0; p++, b += sb) {
        const __m256 b0 = strip_load(full, b, m0);
        const __m256 b1 = nv > 1 ? strip_load(full, b + 8, m1) : _mm256_setzero_ps();
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            const __m256 ar = _mm256_broadcast_ss(a + r * rs + p * cs);
            acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
            if (nv > 1) acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nv; v++) {
            float *x = rows + r * sb + 8 * v;
            const __m256i m = v ? m1 : m0;
            const __m256 val = _mm256_sub_ps(strip_load(full, x, m), acc[r][v]);
            if (full)
                _mm256_storeu_ps(x, val);
            else
                _mm256_maskstore_ps(x, m, val);
        }
}

/* Compiled for the two forms trsm_strips is called with (cs == 1:
 * trsm_llu; rs == -1: trsm_llu_t), as avx512.c's blocks. */
typedef void (*trsm_tile_fn)(int64_t i0, const float *a, int64_t rs, int64_t cs, const float *B,
                             int64_t sb, float *rows, int cols);
#define TRSM_TILE(mr, nv, full)                                                                    \
    static TARGET void trsm_tile_##mr##_##nv##_##full(int64_t i0, const float *a, int64_t rs,      \
                                                      int64_t cs, const float *B, int64_t sb,      \
                                                      float *rows, int cols) {                     \
        if (cs == 1) /* trsm_llu */                                                                \
            trsm_tile(mr, nv, full, i0, a, rs, 1, B, sb, rows, cols);                              \
        else /* trsm_llu_t: rs == -1 */                                                            \
            trsm_tile(mr, nv, full, i0, a, -1, cs, B, sb, rows, cols);                             \
    }
#define TRSM_TILES(mr)                                                                             \
    TRSM_TILE(mr, 1, 0) TRSM_TILE(mr, 1, 1) TRSM_TILE(mr, 2, 0) TRSM_TILE(mr, 2, 1)
/* clang-format off */
TRSM_TILES(1) TRSM_TILES(2) TRSM_TILES(3) TRSM_TILES(4) TRSM_TILES(5) TRSM_TILES(6)
#undef TRSM_TILES
#undef TRSM_TILE
#define TILES(mr) {{trsm_tile_##mr##_1_0, trsm_tile_##mr##_1_1}, {trsm_tile_##mr##_2_0, trsm_tile_##mr##_2_1}}
static const trsm_tile_fn trsm_tiles[MR + 1][2][2] = { /* [mr][nv - 1][full] */
    {{0, 0}, {0, 0}}, TILES(1), TILES(2), TILES(3), TILES(4), TILES(5), TILES(6)};
#undef TILES
/* clang-format on */
_Static_assert(LA__TRSM_BLOCK == 2 * MR, "a block is two tiles of rows");

/* Element (x, y) of the solve's matrix at L[x*rs + y*cs], with cs == 1
 * (trsm_llu) or rs == -1 (trsm_llu_t); B's row i at B + i*sb (sb < 0: rows
 * in reverse order). */
static TARGET void trsm_strips(int64_t n, int64_t r, const float *L, int64_t rs, int64_t cs,
                               float *B, int64_t sb) {
    for (int64_t jc = 0; jc < r; jc += NR) {
        const int cols = r - jc < NR ? (int)(r - jc) : NR, nv = cols > 8 ? 2 : 1;
        const int full = cols == 8 * nv;
        float *Bj = B + jc;
        for (int64_t i0 = 0; i0 < n; i0 += LA__TRSM_BLOCK) {
            const int nb = n - i0 < LA__TRSM_BLOCK ? (int)(n - i0) : LA__TRSM_BLOCK;
            if (i0 > 0) /* the first block has no product (as la__trsm_llu_blocked) */
                for (int h = 0; h < nb; h += MR) {
                    const int mr = nb - h < MR ? nb - h : MR;
                    trsm_tiles[mr][nv - 1][full](i0, L + (i0 + h) * rs, rs, cs, Bj, sb,
                                                 Bj + (i0 + h) * sb, cols);
                }
            diag_block(nb, cols, L + i0 * rs + i0 * cs, rs, cs, Bj + i0 * sb, sb);
        }
    }
}

static void avx2_trsm_llu(int64_t n, int64_t r, const float *L, int64_t ldl, float *B,
                          int64_t ldb) {
    if (n <= 0 || r <= 0) return;
    if (n <= TRSM_ROWS)
        trsm_strips(n, r, L, ldl, 1, B, ldb);
    else
        la__trsm_llu_blocked(avx2_gemm_nn, avx2_trsm_diag, n, r, L, ldl, B, ldb);
}

/* B := L^{-T} B (n <= LA__TRSM_T_ROWS) as la__trsm_llu_transposed's route,
 * trsm_llu on reversed rows with Lrev = J L^T J, without building Lrev or
 * copying B's rows (as avx512_trsm_llu_t): Lrev(x, y) = L[n-1-y][n-1-x] is
 * read in place (row step -1, column step -ldl from L's last element) and
 * B's rows are walked in reverse order. The same bits as the route. */
static void avx2_trsm_llu_t(int64_t n, int64_t r, const float *L, int64_t ldl, float *B,
                            int64_t ldb) {
    if (n <= 0 || r <= 0) return;
    trsm_strips(n, r, L + (n - 1) * ldl + (n - 1), -1, -ldl, B + (n - 1) * ldb, -ldb);
}

static void avx2_trinv_llu(int64_t n, const float *L, int64_t ldl, float *X, int64_t ldx) {
    la__trinv_llu_blocked(avx2_gemm_nn, avx2_trsm_diag, n, L, ldl, X, ldx);
}

const la__kernels la__kernels_avx2 = {
    .isa = LA_ISA_AVX2,
    .gemm_nn = avx2_gemm_nn,
    .gemm_nt = avx2_gemm_nt,
    .gemm_tn = avx2_gemm_tn,
    .gemm_nn_lower = avx2_gemm_nn_lower,
    .gemm_nt_tril = avx2_gemm_nt_tril,
    .gemm_nn_tril = avx2_gemm_nn_tril,
    .transpose = la__transpose_avx2,
    .trsm_llu = avx2_trsm_llu,
    .trsm_llu_t = avx2_trsm_llu_t,
    .trinv_llu = avx2_trinv_llu,
    .gemm_tn_block = avx2_gemm_tn_block,
};

#endif
