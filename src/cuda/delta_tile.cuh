/* cuda-dout9: pieces shared by the delta rules' bf16 output kernels
 * (delta_out_tc.cu) and the backward's P^T dO kernel (delta_pto_tc.cu):
 * a 64-row bf16 tile of a [tokens][heads][C] input by 16-byte cp.async, and
 * the l2 row norms of such a tile in the order of la_cu_dc_rnorm. CTAs of
 * 128 threads (4 warps). */
#ifndef LINATTN_CUDA_DELTA_TILE_CUH
#define LINATTN_CUDA_DELTA_TILE_CUH

#include "delta_chunk.cuh"

typedef __nv_bfloat16 la_dt_bf;

/* A 64 x CP tile (row stride CP + 8) of rows < L, columns < C of src (row
 * stride `stride`), 0 elsewhere: 16-byte cp.async where vec (C % 8 == 0,
 * src 16-byte aligned), else 2-byte loads. The caller commits / waits. */
template <int CP>
__device__ __forceinline__ void la_dt_fetch(la_dt_bf *dst, const la_dt_bf *src, int64_t stride,
                                            int L, int C, bool vec) {
    constexpr int LD = CP + 8, CQ = CP / 8;
    for (int e = threadIdx.x; e < 64 * CQ; e += 128) {
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

#endif
