/* cuda-dout9: pieces shared by the delta rules' bf16 output kernels
 * (delta_out_tc.cu) and the backward's P^T dO kernel (delta_pto_tc.cu):
 * a 64-row bf16 tile of a [tokens][heads][C] input by 16-byte cp.async, and
 * the l2 row norms of such a tile in the order of la_cu_dc_rnorm. CTAs of
 * 128 threads (4 warps). */
#ifndef LINATTN_CUDA_DELTA_TILE_CUH
#define LINATTN_CUDA_DELTA_TILE_CUH

#include "delta_chunk.cuh"
#include "tc.cuh"

typedef __nv_bfloat16 la_dt_bf;

/* A 64 x CP tile (row stride CP + 8) of rows < L, columns < C of src (row
 * stride `stride`), 0 elsewhere: 16-byte cp.async where vec (C % 8 == 0,
 * src 16-byte aligned), else 2-byte loads, by NTH threads (delta_prep_blk.cu
 * uses 256). The caller commits / waits. */
template <int CP, int NTH = 128>
__device__ __forceinline__ void la_dt_fetch(la_dt_bf *dst, const la_dt_bf *src, int64_t stride,
                                            int L, int C, bool vec) {
    constexpr int LD = CP + 8, CQ = CP / 8;
    for (int e = threadIdx.x; e < 64 * CQ; e += NTH) {
        const int r = e / CQ, c8 = (e - r * CQ) * 8;
        la_dt_bf *d = dst + r * LD + c8;
        if (vec) {
            const bool in = r < L && c8 < C;
            la_cu_cpb16(d, in ? src + r * stride + c8 : src, in ? 16 : 0);
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++)
                d[i] = (r < L && c8 + i < C) ? src[r * stride + c8 + i] : __float2bfloat16_rn(0.f);
        }
    }
}
/* rn[r] = 1 / sqrt(|x_r|^2 + 1e-6) of the tile's rows (1 without l2), in the
 * order of la_cu_dc_rnorm; warp w takes rows w, w + 4, ... */
template <int CP>
__device__ __forceinline__ void la_dt_rnorm(float *rn, const la_dt_bf *tile, int L, int K,
                                            int use_l2) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int r = w; r < 64; r += 4) {
        float a = 0.f;
        if (use_l2 && r < L)
            for (int i = lane; i < K; i += 32) {
                const float y = __bfloat162float(tile[r * (CP + 8) + i]);
                a = fmaf(y, y, a);
            }
        for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
        if (lane == 0) rn[r] = use_l2 ? 1.f / sqrtf(a + 1e-6f) : 1.f;
    }
}

/* The same norms with 16-byte shared loads: a row's CP / 8 chunks of 8
 * elements go to CP / 8 neighbouring lanes (32 / (CP / 8) rows a pass; warp
 * w takes rows w, w + 4, ...); each lane sums its 8 squares in order, then
 * an xor tree over the row's lanes. A fixed order (deterministic), but not
 * la_cu_dc_rnorm's: the norms may differ from it in the last bit. Columns
 * >= K must be 0 in the tile (la_dt_fetch zero-fills them). */
template <int CP>
__device__ __forceinline__ void la_dt_rnorm_v(float *rn, const la_dt_bf *tile, int L, int use_l2) {
    constexpr int CH = CP / 8, RP = 32 / CH;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, sub = lane / CH, ch = lane % CH;
#pragma unroll
    for (int ps = 0; ps < 16 / RP; ps++) {
        const int r = w + 4 * (ps * RP + sub);
        float a = 0.f;
        if (use_l2 && r < L) {
            const uint4 u = *(const uint4 *)(tile + r * (CP + 8) + 8 * ch);
            const __nv_bfloat162 *b = (const __nv_bfloat162 *)&u;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float y0 = __low2float(b[i]), y1 = __high2float(b[i]);
                a = fmaf(y0, y0, a);
                a = fmaf(y1, y1, a);
            }
        }
#pragma unroll
        for (int off = CH / 2; off > 0; off >>= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
        if (ch == 0) rn[r] = use_l2 ? 1.f / sqrtf(a + 1e-6f) : 1.f;
    }
}

/* la_cu_chunk_gates in two steps, the loads side by side: la_dt_gates_load
 * (threads t < L: gs[t] = g_t, 0 without gates), a barrier, then
 * la_dt_gates_sum (thread t0: the prefix sums in double in token order, as
 * la_cu_chunk_gates with gam = 0: the same bits); a barrier before G is
 * read. */
__device__ __forceinline__ void la_dt_gates_load(float *gs, const float *g, int64_t tok0, int L,
                                                 int64_t H, int64_t h) {
    const int t = threadIdx.x;
    if (t < L) gs[t] = g ? g[(tok0 + t) * H + h] : 0.f;
}
__device__ __forceinline__ void la_dt_gates_sum(double *G, const float *gs, int L, int t0) {
    if (threadIdx.x == t0) {
        double acc = 0;
        for (int i = 0; i < L; i++) {
            acc += (double)(gs[i] + 0.f);
            G[i] = acc;
        }
    }
}

/* cuda-outg13: la_cu_expd's value (0 below -100, else expf of x as a
 * float) with the expf formed unconditionally and the cut applied as a
 * select (the same bits; no branch, so neighbouring elements' exps can
 * overlap). */
__device__ __forceinline__ float la_dt_expd_nb(double x) {
    const float e = expf((float)x);
    return x < -100.0 ? 0.f : e;
}

/* Warp w's rows 16 w .. 16 w + 15 of X Yᵀ (X, Y: 64 x 16 KS bf16 tiles, row
 * stride LD) into A[8][4], the m16n8 accumulator fragments of its 8 column
 * blocks (block j: columns 8 j ..); m8 = lane / 8, rr = lane % 8. */
template <int KS>
__device__ __forceinline__ void la_dt_xyt(float (*A)[4], const la_dt_bf *X, const la_dt_bf *Y,
                                          int LD, int w, int m8, int rr) {
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) A[j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        uint32_t a[4];
        la_tc_ldsm4<false>(a, X + (16 * w + (m8 & 1) * 8 + rr) * LD + 16 * kk + (m8 >> 1) * 8);
#pragma unroll
        for (int jj = 0; jj < 4; jj++) {
            uint32_t b[4];
            la_tc_ldsm4<false>(b, Y + (16 * jj + (m8 >> 1) * 8 + rr) * LD + 16 * kk + (m8 & 1) * 8);
            la_tc_mma<la_dt_bf>(A[2 * jj], a, b[0], b[1]);
            la_tc_mma<la_dt_bf>(A[2 * jj + 1], a, b[2], b[3]);
        }
    }
}

/* The accumulator fragments P[8][4] of a warp's 16 x 64 block as bf16 hi +
 * lo A fragments over its 64 columns (k-step kt: columns 16 kt ..). */
__device__ __forceinline__ void la_dt_parts(const float (*P)[4], uint32_t (*ph)[4],
                                            uint32_t (*pl)[4]) {
#pragma unroll
    for (int kt = 0; kt < 4; kt++) {
        la_cu_bf16_parts(P[2 * kt][0], P[2 * kt][1], ph[kt][0], pl[kt][0]);
        la_cu_bf16_parts(P[2 * kt][2], P[2 * kt][3], ph[kt][1], pl[kt][1]);
        la_cu_bf16_parts(P[2 * kt + 1][0], P[2 * kt + 1][1], ph[kt][2], pl[kt][2]);
        la_cu_bf16_parts(P[2 * kt + 1][2], P[2 * kt + 1][3], ph[kt][3], pl[kt][3]);
    }
}

/* cuda-par12: the 10 lower (UPPER: upper) triangular 16 x 16 tiles of the
 * 64 x 64 product X Yᵀ (X, Y: 64 x 16 KS bf16 tiles, row stride LD) spread
 * over the 4 warps (tile i = w, w + 4, w + 8 of the triangle in row order),
 * so no warp forms more than 3 (with la_dt_xyt every warp forms a whole
 * 16-row band, 4 tiles, and the masked band's elements are all worked
 * out). Every element is accumulated as in la_dt_xyt (k-steps ascending,
 * one accumulator: the same bits). Then, after a barrier where `sync` (the
 * caller writes Ph / Pl over X or Y), f(m, n, x) gives element (m, n)'s
 * value from its product x, and the tile goes to Ph, Pl (row stride pld) as
 * bf16 hi + lo parts (pairs n, n + 1, as la_dt_parts). Tiles outside the
 * triangle are not written. */
template <int KS, bool UPPER, class F>
__device__ __forceinline__ void la_dt_tri_parts(la_dt_bf *Ph, la_dt_bf *Pl, int pld,
                                                const la_dt_bf *X, const la_dt_bf *Y, int LD,
                                                bool sync, F f) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int m8 = lane >> 3, rr = lane & 7;
    const int nu = w < 2 ? 3 : 2; /* tiles w, w + 4 (, w + 8) */
    int mt[3], nt[3];
    float A[3][2][4];
#pragma unroll
    for (int u = 0; u < 3; u++) {
        const int i = w + 4 * u, a = i >= 6 ? 3 : i >= 3 ? 2 : i >= 1 ? 1 : 0;
        const int b = i - a * (a + 1) / 2;
        mt[u] = UPPER ? b : a, nt[u] = UPPER ? a : b;
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) A[u][j][e] = 0.f;
    }
    /* k-step outermost: the up to 6 accumulators of a step are independent
     * (mma.sync is volatile asm: issued in program order) */
#pragma unroll
    for (int kk = 0; kk < KS; kk++)
#pragma unroll
        for (int u = 0; u < 3; u++) {
            if (u >= nu) continue;
            uint32_t a[4], b[4];
            la_tc_ldsm4<false>(a,
                               X + (16 * mt[u] + (m8 & 1) * 8 + rr) * LD + 16 * kk + (m8 >> 1) * 8);
            la_tc_ldsm4<false>(b,
                               Y + (16 * nt[u] + (m8 >> 1) * 8 + rr) * LD + 16 * kk + (m8 & 1) * 8);
            la_tc_mma<la_dt_bf>(A[u][0], a, b[0], b[1]);
            la_tc_mma<la_dt_bf>(A[u][1], a, b[2], b[3]);
        }
    if (sync) __syncthreads();
#pragma unroll
    for (int u = 0; u < 3; u++) {
        if (u >= nu) continue;
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int m = 16 * mt[u] + g + 8 * hf, n = 16 * nt[u] + 8 * j + 2 * q;
                uint32_t h, l;
                la_cu_bf16_parts(f(m, n, A[u][j][2 * hf]), f(m, n + 1, A[u][j][2 * hf + 1]), h, l);
                *(uint32_t *)(Ph + m * pld + n) = h;
                *(uint32_t *)(Pl + m * pld + n) = l;
            }
    }
}

#endif
