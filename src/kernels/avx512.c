/* AVX-512 (F/VL/BW/DQ) kernels (x86-64): the AVX2 path's design (avx2.c)
 * at twice the vector width, compiled with per-function target attributes
 * and run only where dispatch.c found AVX-512 F/DQ/BW/VL and the OS's ZMM
 * state.
 *   - micro-tile MR x NR = 12 x 32 floats of C in 24 ZMM accumulators (8 x 32
 *     where 12 leaves a short edge, see gemm_driver); each
 *     step over k broadcasts 12 elements of A and loads two vectors of B
 *     (14 loads for 24 FMAs), 24 independent chains cover the FMA latency
 *     of two 512-bit pipes (or one, on CPUs that split ZMM FMAs);
 *   - B as a k x 32 panel packed into an aligned stack buffer (Bᵀ through
 *     8x8 transposes before the panel's tiles; B's rows by the panel's
 *     first tile as it computes), zero-padded; edges use AVX-512 mask
 *     registers (masked loads and stores, never beyond column n);
 *   - k in blocks of KC and m in blocks of MC, gemm_tn's Aᵀ copied into a
 *     [KC_T x MC_T] block, as on the AVX2 path.
 * Rounding: each C element is one float32 sum over k in order by fused
 * multiply-adds per KC block, then alpha * sum (+ beta * C) — the same
 * operations as the AVX2 path (KC and KC_T are the same), so both paths
 * give the same bits. */
#include "kernels.h"

#if defined(LA_KERNELS_HAVE_X86)

#include <immintrin.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>

#define TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

#define MR 12
#define NR 32
#define KC 256 /* as avx2.c: the same k blocks, the same rounding */
#define MC 132 /* 11 micro-tiles of rows */
#define KC_T 96
#define MC_T 72
_Static_assert(KC_T == LA__TN_FROM_T_MAX_K && LA__TN_FROM_T_MAX_M <= 128,
               "la__tn_from_t_same: gemm_tn_block's one-block case");

/* lanes [0, n) of a 16-lane vector, 0 <= n <= 16 */
static inline __mmask16 lanes(int n) { return (__mmask16)((1u << n) - 1u); }
static inline int clamp16(int64_t x) { return x < 0 ? 0 : x > 16 ? 16 : (int)x; }

/* cpu-gemm21: the tile's epilogue, C = alpha * acc (+ beta * C), row r of
 * the tile keeping columns [0, min(lim0 + r, nr)) (the causal mask; the
 * present columns beyond it get 0, columns >= nr are never touched). Whole
 * unmasked tiles (all but the causal products' diagonal tiles and the
 * n % 32 edges) take straight vector loads and stores with beta's case
 * picked once per tile; the rest build each row's lane masks from one
 * 32-bit mask. The same operations per element as before (bits unchanged):
 * the old per-vector store (clamps, shifts and a beta test for each of the
 * 16 vectors) cost ~60 ns per 8 x 32 tile on Zen 5 (64x128x128: 86 -> 89%
 * of peak, 128x128x64 84 -> 93%; bench/NOTES.md). */
INLINE TARGET void store_tile(const int mr, const int nv, __m512 acc[MR][2], int nr, float alpha,
                              float beta, float *c, int64_t ldc, int64_t lim0) {
    __m512 valpha = _mm512_set1_ps(alpha);
    if (nr >= 16 * nv && lim0 >= 16 * nv) { /* whole vectors, nothing masked */
        if (beta == 0.0f) {
#pragma GCC unroll 12
            for (int r = 0; r < mr; r++)
                for (int v = 0; v < nv; v++)
                    _mm512_storeu_ps(c + r * ldc + 16 * v, _mm512_mul_ps(valpha, acc[r][v]));
        } else if (beta == 1.0f) {
#pragma GCC unroll 12
            for (int r = 0; r < mr; r++)
                for (int v = 0; v < nv; v++)
                    _mm512_storeu_ps(c + r * ldc + 16 * v,
                                     _mm512_add_ps(_mm512_mul_ps(valpha, acc[r][v]),
                                                   _mm512_loadu_ps(c + r * ldc + 16 * v)));
        } else {
            const __m512 vbeta = _mm512_set1_ps(beta);
#pragma GCC unroll 12
            for (int r = 0; r < mr; r++)
                for (int v = 0; v < nv; v++)
                    _mm512_storeu_ps(c + r * ldc + 16 * v,
                                     _mm512_fmadd_ps(vbeta, _mm512_loadu_ps(c + r * ldc + 16 * v),
                                                     _mm512_mul_ps(valpha, acc[r][v])));
        }
        return;
    }
    /* edges and the causal mask: row r keeps lanes [0, min(lim0 + r, nr))
     * of its nr present columns (the rest of the present ones get 0) */
    const uint32_t present = nr >= 32 ? 0xffffffffu : (1u << nr) - 1u;
    const __mmask16 p0 = (__mmask16)present, p1 = (__mmask16)(present >> 16);
    const __m512 vbeta = _mm512_set1_ps(beta);
#pragma GCC unroll 12
    for (int r = 0; r < mr; r++) {
        const int64_t lim = lim0 + r;
        const uint32_t keep = present & (lim >= 32 ? 0xffffffffu : lim <= 0 ? 0u : (1u << lim) - 1u);
        for (int v = 0; v < nv; v++) {
            const __mmask16 mv = (__mmask16)(keep >> (16 * v)), pv = v ? p1 : p0;
            float *cv = c + r * ldc + 16 * v;
            __m512 val = _mm512_maskz_mul_ps(mv, valpha, acc[r][v]);
            if (beta == 1.0f)
                val = _mm512_maskz_add_ps(mv, val, _mm512_maskz_loadu_ps(mv, cv));
            else if (beta != 0.0f)
                val = _mm512_maskz_fmadd_ps(mv, vbeta, _mm512_maskz_loadu_ps(mv, cv), val);
            _mm512_mask_storeu_ps(cv, pv, val);
        }
    }
}

/* C[mr x nr] tile from A (element (r, p) at a[r*rsa + p*csa]) and a B panel
 * (row p at b + p*bs, 32 columns, nv*16 of them used). Row r keeps
 * lim0 + r columns (causal mask; lim0 >= nr when unmasked).
 * cpu-gemm21: with pk, b is B itself (row p at b + p*bs, nr columns) and
 * the tile packs the panel as it goes: row p is loaded (zero beyond nr, as
 * pack_rows), used, and stored to dst + p*NR for the panel's other tiles,
 * so the copy's loads overlap the first tile's FMAs instead of running as a
 * pass of their own before it (the same values in the same FMAs). */
INLINE TARGET void micro_tile(const int mr, const int nv, const int pk, int64_t kc, const float *a,
                              int64_t rsa, int64_t csa, const float *b, int64_t bs, int nr,
                              float alpha, float beta, float *c, int64_t ldc, int64_t lim0,
                              float *dst) {
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int r = 0; r < mr; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const float *a_rows[MR];
#pragma GCC unroll 12
    for (int r = 0; r < mr; r++) a_rows[r] = a + r * rsa;
    const __mmask16 m0 = lanes(clamp16(nr)), m1 = lanes(clamp16(nr - 16));
#pragma GCC unroll 2
    for (int64_t p = 0; p < kc; p++) {
        __m512 b0, b1 = _mm512_setzero_ps();
        if (pk) {
            b0 = _mm512_maskz_loadu_ps(m0, b);
            _mm512_store_ps(dst, b0);
            if (nv > 1) {
                b1 = _mm512_maskz_loadu_ps(m1, b + 16);
                _mm512_store_ps(dst + 16, b1);
            }
            dst += NR;
        } else {
            b0 = _mm512_load_ps(b);
            if (nv > 1) b1 = _mm512_load_ps(b + 16);
        }
        b += bs;
#pragma GCC unroll 12
        for (int r = 0; r < mr; r++) {
            __m512 ar = _mm512_set1_ps(*a_rows[r]);
            a_rows[r] += csa;
            acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
            if (nv > 1) acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    store_tile(mr, nv, acc, nr, alpha, beta, c, ldc, lim0);
}

typedef void (*tile_fn)(int64_t kc, const float *a, int64_t rsa, int64_t csa, const float *b,
                        int64_t bs, int nr, float alpha, float beta, float *c, int64_t ldc,
                        int64_t lim0, float *dst);

#define TILE_PK(mr, nv, pk, name)                                                                  \
    static TARGET void name(int64_t kc, const float *a, int64_t rsa, int64_t csa, const float *b,  \
                            int64_t bs, int nr, float alpha, float beta, float *c, int64_t ldc,    \
                            int64_t lim0, float *dst) {                                            \
        micro_tile(mr, nv, pk, kc, a, rsa, csa, b, bs, nr, alpha, beta, c, ldc, lim0, dst);        \
    }
#define TILE(mr, nv)                                                                               \
    TILE_PK(mr, nv, 0, tile_##mr##_##nv) TILE_PK(mr, nv, 1, tile_pk_##mr##_##nv)
/* clang-format off */
TILE(1, 1) TILE(2, 1) TILE(3, 1) TILE(4, 1) TILE(5, 1) TILE(6, 1)
TILE(7, 1) TILE(8, 1) TILE(9, 1) TILE(10, 1) TILE(11, 1) TILE(12, 1)
TILE(1, 2) TILE(2, 2) TILE(3, 2) TILE(4, 2) TILE(5, 2) TILE(6, 2)
TILE(7, 2) TILE(8, 2) TILE(9, 2) TILE(10, 2) TILE(11, 2) TILE(12, 2)
#undef TILE

#undef TILE_PK

/* tiles[pk][mr][nv] */
static const tile_fn tiles[2][MR + 1][3] = {{
    {0, 0, 0},
    {0, tile_1_1, tile_1_2},   {0, tile_2_1, tile_2_2},   {0, tile_3_1, tile_3_2},
    {0, tile_4_1, tile_4_2},   {0, tile_5_1, tile_5_2},   {0, tile_6_1, tile_6_2},
    {0, tile_7_1, tile_7_2},   {0, tile_8_1, tile_8_2},   {0, tile_9_1, tile_9_2},
    {0, tile_10_1, tile_10_2}, {0, tile_11_1, tile_11_2}, {0, tile_12_1, tile_12_2},
}, {
    {0, 0, 0},
    {0, tile_pk_1_1, tile_pk_1_2},   {0, tile_pk_2_1, tile_pk_2_2},
    {0, tile_pk_3_1, tile_pk_3_2},   {0, tile_pk_4_1, tile_pk_4_2},
    {0, tile_pk_5_1, tile_pk_5_2},   {0, tile_pk_6_1, tile_pk_6_2},
    {0, tile_pk_7_1, tile_pk_7_2},   {0, tile_pk_8_1, tile_pk_8_2},
    {0, tile_pk_9_1, tile_pk_9_2},   {0, tile_pk_10_1, tile_pk_10_2},
    {0, tile_pk_11_1, tile_pk_11_2}, {0, tile_pk_12_1, tile_pk_12_2},
}};
/* clang-format on */

/* Panel of B [kc x nr] (row p at b + p*ldb) into dst [kc x 32], zero-padded. */
static TARGET void pack_rows(int64_t kc, int nr, const float *b, int64_t ldb, float *dst) {
    if (nr == NR) {
        for (int64_t p = 0; p < kc; p++, b += ldb, dst += NR) {
            _mm512_store_ps(dst, _mm512_loadu_ps(b));
            _mm512_store_ps(dst + 16, _mm512_loadu_ps(b + 16));
        }
        return;
    }
    const __mmask16 m0 = lanes(clamp16(nr)), m1 = lanes(clamp16(nr - 16));
    for (int64_t p = 0; p < kc; p++, b += ldb, dst += NR) {
        _mm512_store_ps(dst, _mm512_maskz_loadu_ps(m0, b));
        _mm512_store_ps(dst + 16, _mm512_maskz_loadu_ps(m1, b + 16));
    }
}

/* kc rows of `width` <= MC_T floats (row p at a + p*lda) into dst [kc x MC_T]. */
static TARGET void pack_rows_wide(int64_t kc, int64_t width, const float *a, int64_t lda,
                                  float *dst) {
    for (int64_t p = 0; p < kc; p++, a += lda, dst += MC_T) {
        int64_t j = 0;
        for (; j + 16 <= width; j += 16) _mm512_storeu_ps(dst + j, _mm512_loadu_ps(a + j));
        if (j < width) { /* masked both ways: the last row ends the block (MC_T = 72) */
            const __mmask16 m = lanes((int)(width - j));
            _mm512_mask_storeu_ps(dst + j, m, _mm512_maskz_loadu_ps(m, a + j));
        }
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

/* Bᵀ panel: rows j < nr of B (row j at b + j*ldb, kc floats each) become
 * the columns of dst [kc x 32], zero-padded: dst[p*32 + j] = b[j*ldb + p]. */
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

/* As gemm_driver in avx2.c: C[m,n] = alpha * A·B + beta * C with A (i, p)
 * at A[i*rsa + p*csa], B (p, j) at B[p*ldb + j] (B_ROWS) or B[j*ldb + p]
 * (B_TRANSPOSED); tril >= 0: row i keeps columns j < i + tril; lower_a:
 * A[i][p] == 0 for p > i; apack != NULL: Aᵀ copied block by block. */
static TARGET void gemm_driver(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                               int64_t rsa, int64_t csa, const float *B, int64_t ldb, int b_layout,
                               float beta, float *C, int64_t ldc, int tril, int lower_a,
                               float *apack) {
    if (m <= 0 || n <= 0) return;
    alignas(64) float bpack[KC * NR];
    const int pack_a = apack != NULL;
    const int64_t kcb = pack_a ? KC_T : KC;
    /* cpu-gemm: row step 8 (8 x 32 tiles, 16 accumulators) where 12 leaves
     * a short edge tile (m = 64: 5 x 12 + 4) and 8 does not, and for the
     * causal product (finer steps along the diagonal: less masked work).
     * Measured on the chunk shapes: +2-7% of peak. The tiling does not
     * change any element's sum (same bits). */
    const int ms = tril >= 0 || (m % MR != 0 && m % 8 == 0) ? 8 : MR;
    const int64_t mcb = pack_a ? MC_T : ms == 8 ? 128 : MC;
    int64_t pc = 0;
    do {
        int64_t kc = k - pc < kcb ? k - pc : kcb;
        float beta_k = pc == 0 ? beta : 1.0f;
        for (int64_t ic0 = 0; ic0 < m; ic0 += mcb) {
            int64_t mc_end = m - ic0 < mcb ? m : ic0 + mcb;
            if (pack_a) pack_rows_wide(kc, mc_end - ic0, A + pc * csa + ic0 * rsa, csa, apack);
            for (int64_t jc = 0; jc < n; jc += NR) {
                int nr = n - jc < NR ? (int)(n - jc) : NR;
                int64_t ic_first = ic0;
                if (tril >= 0) {
                    int64_t first_row = jc - tril + 1;
                    if (first_row > mc_end) first_row = mc_end;
                    if (first_row > ic_first) {
                        if (pc == 0)
                            for (int64_t i = ic_first; i < first_row; i++)
                                for (int j = 0; j < nr; j++) C[i * ldc + jc + j] = 0.0f;
                        ic_first = first_row;
                    }
                    if (ic_first >= mc_end) continue;
                }
                /* cpu-gemm21: a panel of B's rows is packed by its first tile
                 * (micro_tile's pk); Bᵀ panels (8x8 transposes) before the tiles.
                 * cpu-kpack22: the causal product's B as rows (gemm_nn_tril: an
                 * op's Kᵀ block) is read in place when the panel is whole and
                 * 64-byte aligned row by row, else copied (its first tile may
                 * use only 16 of the columns, so it cannot pack for the rest) */
                const float *brows = B + pc * ldb + jc;
                const int fuse = b_layout == B_ROWS && tril < 0 && kc > 0;
                const int in_place = b_layout == B_ROWS && tril >= 0 && nr == NR && ldb % 16 == 0 &&
                                     (uintptr_t)brows % 64 == 0;
                if (kc > 0 && !fuse && !in_place) {
                    if (b_layout == B_TRANSPOSED)
                        pack_transposed(kc, nr, B + jc * ldb + pc, ldb, bpack);
                    else
                        pack_rows(kc, nr, brows, ldb, bpack);
                }
                const float *bsrc = fuse || in_place ? brows : bpack;
                int64_t bs = fuse || in_place ? ldb : NR;
                int nv = nr > 16 ? 2 : 1;
                /* lower_a: the last tile first, the one that reads all kc rows
                 * of the panel (the order of the tiles changes no sum) */
                const int64_t ntiles = (mc_end - ic_first + ms - 1) / ms;
                for (int64_t t = 0; t < ntiles; t++) {
                    const int64_t ic = ic_first + (lower_a ? ntiles - 1 - t : t) * ms;
                    int mr = mc_end - ic < ms ? (int)(mc_end - ic) : ms;
                    int64_t kt = kc;
                    if (lower_a) {
                        int64_t kmax = ic + mr - pc;
                        if (kmax < kt) kt = kmax < 0 ? 0 : kmax;
                        /* kt is largest for t = 0 and falls with t: once a tile has
                         * nothing to add, neither has any later one (and the panel
                         * packing of t = 0 may not have run) */
                        if (kt == 0 && pc > 0) break;
                    }
                    int64_t lim0 = tril >= 0 ? ic - jc + tril : NR;
                    int nv_t = nv;
                    if (nv == 2 && lim0 + mr - 1 <= 16) {
                        /* nothing under the mask beyond column 16 of the panel */
                        nv_t = 1;
                        if (pc == 0)
                            for (int r = 0; r < mr; r++)
                                for (int j = 16; j < nr; j++) C[(ic + r) * ldc + jc + j] = 0.0f;
                    }
                    const int pk = fuse && t == 0;
                    if (pack_a)
                        tiles[pk][mr][nv_t](kt, apack + (ic - ic0), 1, MC_T, bsrc, bs, nr, alpha,
                                            beta_k, C + ic * ldc + jc, ldc, lim0, bpack);
                    else
                        tiles[pk][mr][nv_t](kt, A + ic * rsa + pc * csa, rsa, csa, bsrc, bs, nr,
                                            alpha, beta_k, C + ic * ldc + jc, ldc, lim0, bpack);
                    if (pk) bsrc = bpack, bs = NR; /* the panel the first tile packed */
                }
            }
        }
        pc += kc;
    } while (pc < k);
}

static void avx512_gemm_nn(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                           int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                           int64_t ldc) {
    gemm_driver(m, n, k, alpha, A, lda, 1, B, ldb, B_ROWS, beta, C, ldc, -1, 0, NULL);
}

static void avx512_gemm_nn_lower(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                                 int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                 int64_t ldc) {
    gemm_driver(m, n, k, alpha, A, lda, 1, B, ldb, B_ROWS, beta, C, ldc, -1, 1, NULL);
}

static void avx512_gemm_nt(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                           int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                           int64_t ldc) {
    gemm_driver(m, n, k, alpha, A, lda, 1, B, ldb, B_TRANSPOSED, beta, C, ldc, -1, 0, NULL);
}

static void avx512_gemm_tn(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                           int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                           int64_t ldc) {
    alignas(64) float apack[KC_T * MC_T];
    gemm_driver(m, n, k, alpha, A, 1, lda, B, ldb, B_ROWS, beta, C, ldc, -1, 0, apack);
}

static void avx512_gemm_nt_tril(int64_t n, int64_t k, int strict, float alpha, const float *A,
                                int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                int64_t ldc) {
    gemm_driver(n, n, k, alpha, A, lda, 1, B, ldb, B_TRANSPOSED, beta, C, ldc, strict ? 0 : 1, 0,
                NULL);
}

static void avx512_gemm_nn_tril(int64_t n, int64_t k, int strict, float alpha, const float *A,
                                int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                int64_t ldc) {
    gemm_driver(n, n, k, alpha, A, lda, 1, B, ldb, B_ROWS, beta, C, ldc, strict ? 0 : 1, 0, NULL);
}

/* Forward substitution inside one diagonal block, 16 columns at a time, the
 * block's rows of the strip in registers (nb <= 12 ZMM). */
INLINE TARGET void diag_strip(const int nb, const float *L, int64_t ldl, float *X, int64_t ldx,
                              int cols) {
    __m512 x[LA__TRSM_BLOCK];
    const __mmask16 mask = lanes(cols);
#pragma GCC unroll 12
    for (int i = 0; i < nb; i++) x[i] = _mm512_maskz_loadu_ps(mask, X + i * ldx);
#pragma GCC unroll 12
    for (int i = 1; i < nb; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < i; j++)
            x[i] = _mm512_fnmadd_ps(_mm512_set1_ps(L[i * ldl + j]), x[j], x[i]);
        _mm512_mask_storeu_ps(X + i * ldx, mask, x[i]);
    }
}

#define DIAG(nb)                                                                                   \
    static TARGET void diag_##nb(int64_t r, const float *L, int64_t ldl, float *X, int64_t ldx) {  \
        for (int64_t c = 0; c < r; c += 16) diag_strip(nb, L, ldl, X + c, ldx, clamp16(r - c));    \
    }
/* clang-format off */
DIAG(2) DIAG(3) DIAG(4) DIAG(5) DIAG(6) DIAG(7) DIAG(8) DIAG(9) DIAG(10) DIAG(11) DIAG(12)
#undef DIAG

static void avx512_trsm_diag(int64_t nb, int64_t r, const float *L, int64_t ldl, float *X,
                             int64_t ldx) {
    typedef void (*diag_fn)(int64_t, const float *, int64_t, float *, int64_t);
    static const diag_fn fns[LA__TRSM_BLOCK + 1] = {0, 0, diag_2, diag_3, diag_4, diag_5,
                                                    diag_6, diag_7, diag_8, diag_9, diag_10,
                                                    diag_11, diag_12};
    if (nb >= 2) fns[nb](r, L, ldl, X, ldx);
}
/* clang-format on */

/* ---- cpu-gemm: trsm_llu by 32-column strips, solved in place ----------
 * la__trsm_llu_blocked's arithmetic, operation for operation (so the same
 * bits as the AVX2 path): for each row block of LA__TRSM_BLOCK rows,
 * acc = sum_{p < i0} L[i][p] B[p] (one chain of FMAs in p order), B[i] :=
 * B[i] + (-1 * acc), then forward substitution inside the block. What
 * changes is where the data sit: a block's rows stay in registers from the
 * product through the substitution, and a 32-column strip of B is solved in
 * place (the product reads the solved rows from B itself). cpu-trsm22: the
 * strip used to be copied into an aligned [n x 32] panel and back (512
 * extra 64-byte stores per 64 x 128 solve, ~0.5 us of 2.5 on Zen 5); in
 * place: 64 x 128 at 76% -> 86% of the FMA peak (trsm_llu_t 70% -> 86%).
 * Strips for n <= TRSM_ROWS. */
#define TRSM_ROWS 128 /* one KC block (i0 < KC), as the blocked solve */

INLINE TARGET void trsm_block(const int nb, const int nv, int64_t i0, const float *L, int64_t rs,
                              int64_t cs, float *B, int64_t sb, __mmask16 m0, __mmask16 m1) {
    /* x = B - acc with acc = 0 for the first block (B + -0 = B: the same
     * bits), so that the block's rows are loaded after the product: with a
     * separate i0 == 0 path GCC hoisted the loads common to both paths above
     * the product loop and spilled the 24 rows to the stack. */
    __m512 x[LA__TRSM_BLOCK][2];
#pragma GCC unroll 12
    for (int r = 0; r < nb; r++) x[r][0] = x[r][1] = _mm512_setzero_ps();
    const float *a = L + i0 * rs, *b = B;
#pragma GCC unroll 2
    for (int64_t p = 0; p < i0; p++, b += sb) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b);
        __m512 b1 = nv > 1 ? _mm512_maskz_loadu_ps(m1, b + 16) : _mm512_setzero_ps();
#pragma GCC unroll 12
        for (int r = 0; r < nb; r++) {
            __m512 ar = _mm512_set1_ps(a[r * rs + p * cs]);
            x[r][0] = _mm512_fmadd_ps(ar, b0, x[r][0]);
            if (nv > 1) x[r][1] = _mm512_fmadd_ps(ar, b1, x[r][1]);
        }
    }
    float *rows = B + i0 * sb;
#pragma GCC unroll 12
    for (int r = 0; r < nb; r++) { /* B[i] + (-1 * acc), as la__trsm_llu_blocked's gemm */
        x[r][0] = _mm512_sub_ps(_mm512_maskz_loadu_ps(m0, rows + r * sb), x[r][0]);
        if (nv > 1) x[r][1] = _mm512_sub_ps(_mm512_maskz_loadu_ps(m1, rows + r * sb + 16), x[r][1]);
    }
    const float *Lb = L + i0 * rs + i0 * cs;
#pragma GCC unroll 12
    for (int i = 1; i < nb; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < i; j++) {
            __m512 l = _mm512_set1_ps(Lb[i * rs + j * cs]);
            x[i][0] = _mm512_fnmadd_ps(l, x[j][0], x[i][0]);
            if (nv > 1) x[i][1] = _mm512_fnmadd_ps(l, x[j][1], x[i][1]);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < nb; r++) {
        _mm512_mask_storeu_ps(rows + r * sb, m0, x[r][0]);
        if (nv > 1) _mm512_mask_storeu_ps(rows + r * sb + 16, m1, x[r][1]);
    }
}

typedef void (*trsm_block_fn)(int64_t i0, const float *L, int64_t rs, int64_t cs, float *B,
                              int64_t sb, __mmask16 m0, __mmask16 m1);
#define TRSM_BLOCK(nb, nv)                                                                         \
    static TARGET void trsm_block_##nb##_##nv(int64_t i0, const float *L, int64_t rs, int64_t cs,  \
                                              float *B, int64_t sb, __mmask16 m0, __mmask16 m1) {  \
        if (cs == 1) /* trsm_llu */                                                                \
            trsm_block(nb, nv, i0, L, rs, 1, B, sb, m0, m1);                                       \
        else /* trsm_llu_t: rs == -1 */                                                            \
            trsm_block(nb, nv, i0, L, -1, cs, B, sb, m0, m1);                                      \
    }
/* clang-format off */
TRSM_BLOCK(1, 1) TRSM_BLOCK(2, 1) TRSM_BLOCK(3, 1) TRSM_BLOCK(4, 1) TRSM_BLOCK(5, 1)
TRSM_BLOCK(6, 1) TRSM_BLOCK(7, 1) TRSM_BLOCK(8, 1) TRSM_BLOCK(9, 1) TRSM_BLOCK(10, 1)
TRSM_BLOCK(11, 1) TRSM_BLOCK(12, 1)
TRSM_BLOCK(1, 2) TRSM_BLOCK(2, 2) TRSM_BLOCK(3, 2) TRSM_BLOCK(4, 2) TRSM_BLOCK(5, 2)
TRSM_BLOCK(6, 2) TRSM_BLOCK(7, 2) TRSM_BLOCK(8, 2) TRSM_BLOCK(9, 2) TRSM_BLOCK(10, 2)
TRSM_BLOCK(11, 2) TRSM_BLOCK(12, 2)
#undef TRSM_BLOCK

static const trsm_block_fn trsm_blocks[LA__TRSM_BLOCK + 1][3] = {
    {0, 0, 0},
    {0, trsm_block_1_1, trsm_block_1_2},   {0, trsm_block_2_1, trsm_block_2_2},
    {0, trsm_block_3_1, trsm_block_3_2},   {0, trsm_block_4_1, trsm_block_4_2},
    {0, trsm_block_5_1, trsm_block_5_2},   {0, trsm_block_6_1, trsm_block_6_2},
    {0, trsm_block_7_1, trsm_block_7_2},   {0, trsm_block_8_1, trsm_block_8_2},
    {0, trsm_block_9_1, trsm_block_9_2},   {0, trsm_block_10_1, trsm_block_10_2},
    {0, trsm_block_11_1, trsm_block_11_2}, {0, trsm_block_12_1, trsm_block_12_2},
};
/* clang-format on */

/* Element (x, y) of the solve's matrix at L[x*rs + y*cs], with cs == 1
 * (trsm_llu) or rs == -1 (trsm_llu_t): the blocks are compiled for these
 * two forms, the known step making L's broadcasts one pointer's constant
 * offsets (trsm_llu_t) or freeing GPRs (64 x 128: 1.02x / 1.04x). B's row
 * i at B + i*sb (sb < 0: rows in reverse order). */
static TARGET void trsm_strips(int64_t n, int64_t r, const float *L, int64_t rs, int64_t cs,
                               float *B, int64_t sb) {
    for (int64_t jc = 0; jc < r; jc += NR) {
        const int nr = r - jc < NR ? (int)(r - jc) : NR, nv = nr > 16 ? 2 : 1;
        const __mmask16 m0 = lanes(clamp16(nr)), m1 = lanes(clamp16(nr - 16));
        for (int64_t i0 = 0; i0 < n; i0 += LA__TRSM_BLOCK) {
            const int nb = n - i0 < LA__TRSM_BLOCK ? (int)(n - i0) : LA__TRSM_BLOCK;
            trsm_blocks[nb][nv](i0, L, rs, cs, B + jc, sb, m0, m1);
        }
    }
}

static void avx512_trsm_llu(int64_t n, int64_t r, const float *L, int64_t ldl, float *B,
                            int64_t ldb) {
    if (n <= 0 || r <= 0) return;
    if (n <= TRSM_ROWS)
        trsm_strips(n, r, L, ldl, 1, B, ldb);
    else
        la__trsm_llu_blocked(avx512_gemm_nn, avx512_trsm_diag, n, r, L, ldl, B, ldb);
}

/* cpu-dbwd15: B := L^{-T} B (n <= LA__TRSM_T_ROWS) as la__trsm_llu_transposed's
 * route, trsm_llu on reversed rows with Lrev = J L^T J, without building
 * Lrev or copying B's rows: Lrev(x, y) = L[n-1-y][n-1-x] is read in place
 * (row step -1, column step -ldl from L's last element) and B's rows are
 * walked in reverse order (row step -ldb). The same values in the same
 * operations: the same bits as the route (test_kernels); 64 x 128 on Zen 5:
 * 4.25 -> 2.9 us. */
static void avx512_trsm_llu_t(int64_t n, int64_t r, const float *L, int64_t ldl, float *B,
                              int64_t ldb) {
    if (n <= 0 || r <= 0) return;
    trsm_strips(n, r, L + (n - 1) * ldl + (n - 1), -1, -ldl, B + (n - 1) * ldb, -ldb);
}

static void avx512_trinv_llu(int64_t n, const float *L, int64_t ldl, float *X, int64_t ldx) {
    la__trinv_llu_blocked(avx512_gemm_nn, avx512_trsm_diag, n, L, ldl, X, ldx);
}

/* ---- cpu-lin8: gemm_tn reading Aᵀ in place ---------------------------
 * For an A in a small dense block (a chunk's rows in per-thread scratch),
 * copying Aᵀ block by block (MC_T rows at a time) costs more than it saves,
 * and with m > MC_T the B panels are packed once per row block. The tiles
 * broadcast A's elements from its rows directly; one row block (m <= 128).
 * Each element is the same chain of FMAs over k as in gemm_tn while k <=
 * KC_T (gemm_tn's k block): the same bits; beyond that, and for m > 128,
 * gemm_tn itself. Measured (L = 64, K = V = 128, L1-resident, Zen 5):
 * 13.1 -> 12.2 us per call. */
static void avx512_gemm_tn_block(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                                 int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                                 int64_t ldc) {
    if (k > KC_T || m > 128) {
        avx512_gemm_tn(m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    gemm_driver(m, n, k, alpha, A, 1, lda, B, ldb, B_ROWS, beta, C, ldc, -1, 0, NULL);
}

const la__kernels la__kernels_avx512 = {
    .isa = LA_ISA_AVX512,
    .gemm_nn = avx512_gemm_nn,
    .gemm_nt = avx512_gemm_nt,
    .gemm_tn = avx512_gemm_tn,
    .gemm_nn_lower = avx512_gemm_nn_lower,
    .gemm_nt_tril = avx512_gemm_nt_tril,
    .gemm_nn_tril = avx512_gemm_nn_tril,
    .transpose = la__transpose_avx2, /* 8x8 YMM transposes (avx2.c) */
    .trsm_llu = avx512_trsm_llu,
    .trsm_llu_t = avx512_trsm_llu_t,
    .trinv_llu = avx512_trinv_llu,
    .gemm_tn_block = avx512_gemm_tn_block,
};

#endif
