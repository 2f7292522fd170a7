/* Whole-tile machinery for the tensor-core kernels (16-bit inputs): a
 * 64-row x 64-column tile of a [tokens, H, D] input copied into shared
 * memory with 16-byte cp.async (zero-filled outside the operand; a scalar
 * fallback when D % 8 != 0 or a pointer is not 16-byte aligned), an
 * in-place pass over a staged tile that applies a per-element function and
 * splits the result into 16-bit parts (hi in place, lo / lo2 in other
 * tiles, 16-byte shared accesses), and fp32 state tiles moved between mma
 * accumulators and global memory without staging. CTAs of LA_TC_THREADS
 * (128) threads; a tile is 512 16-byte pieces, 4 per thread: piece
 * e = threadIdx.x + 128 u is row e / 8, columns 8 (e % 8) .. +7. */
#ifndef LINATTN_CUDA_TC_TILE_CUH
#define LINATTN_CUDA_TC_TILE_CUH

#include "tc.cuh"

__device__ __forceinline__ void la_tc_cp16(void *dst, const void *src, int bytes) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void la_tc_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void la_tc_cp_wait_all() {
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

/* Two fp32 values as 16-bit parts, packed in pairs (element 0 in the low
 * half): hi = rn(y), lo = rn(y - hi), lo2 = rn(y - hi - lo). One paired
 * conversion (cvt.rn.bf16x2.f32 / cvt.rn.f16x2.f32) per part instead of
 * one per element; every element rounds as la_tc_cvt does (same bits). */
__device__ __forceinline__ uint32_t la_tc_pk(__nv_bfloat16, float a, float b) {
    const __nv_bfloat162 r = __floats2bfloat162_rn(a, b);
    return *(const uint32_t *)&r;
}
__device__ __forceinline__ uint32_t la_tc_pk(__half, float a, float b) {
    const __half2 r = __floats2half2_rn(a, b);
    return *(const uint32_t *)&r;
}
__device__ __forceinline__ float2 la_tc_upk(__nv_bfloat16, uint32_t u) {
    return __bfloat1622float2(*(const __nv_bfloat162 *)&u);
}
__device__ __forceinline__ float2 la_tc_upk(__half, uint32_t u) {
    return __half22float2(*(const __half2 *)&u);
}
template <typename T>
__device__ __forceinline__ void la_tc_split2(float a, float b, uint32_t &hi, uint32_t &lo,
                                             uint32_t &lo2) {
    hi = la_tc_pk(T(), a, b);
    const float2 h = la_tc_upk(T(), hi);
    const float ra = a - h.x, rb = b - h.y;
    lo = la_tc_pk(T(), ra, rb);
    const float2 l = la_tc_upk(T(), lo);
    lo2 = la_tc_pk(T(), ra - l.x, rb - l.y);
}

/* dst (a 64 x LA_TC_LD tile) <- rows r < rows, columns c < cols of the
 * operand whose element (0, 0) is src (row stride `stride` elements); 0
 * elsewhere. vec: cols % 8 == 0, src and stride 16-byte aligned (cp.async,
 * completes at la_tc_cp_wait_all); otherwise scalar loads, done on return.
 * NT: the CTA's threads (a divisor of 512), each fetching the 16-byte
 * pieces threadIdx.x + NT u (cuda-fused12: lin_fused.cu's 256-thread CTAs). */
template <typename T, int NT = LA_TC_THREADS>
__device__ __forceinline__ void la_tc_tile_fetch(T *dst, const T *src, int64_t stride, int rows,
                                                 int cols, bool vec) {
#pragma unroll
    for (int u = 0; u < 512 / NT; u++) {
        const int e = threadIdx.x + NT * u, r = e >> 3, c = (e & 7) * 8;
        T *d = dst + r * LA_TC_LD + c;
        if (vec) {
            const bool ok = r < rows && c < cols;
            la_tc_cp16(d, ok ? (const void *)(src + (int64_t)r * stride + c) : (const void *)src,
                       ok ? 16 : 0);
        } else {
            __align__(16) T x[8];
#pragma unroll
            for (int i = 0; i < 8; i++)
                x[i] = (r < rows && c + i < cols) ? src[(int64_t)r * stride + c + i]
                                                  : la_tc_cvt<T>(0.f);
            *(uint4 *)d = *(const uint4 *)x;
        }
    }
}

/* hi[r][c] <- f(u, r, c, hi[r][c]) split into hi (in place), lo, lo2 (each
 * may be NULL: fewer parts); u < 4: the thread's piece (row r =
 * threadIdx.x / 8 + 16 u). Each thread rewrites its own 4 pieces; the caller
 * syncs before other threads read the parts. */
template <typename T, class F>
__device__ __forceinline__ void la_tc_tile_split_u(T *hi, T *lo, T *lo2, F f) {
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int e = threadIdx.x + LA_TC_THREADS * u, r = e >> 3, c = (e & 7) * 8;
        const int o = r * LA_TC_LD + c;
        uint32_t x[4], y[4], z[4];
        *(uint4 *)x = *(const uint4 *)(hi + o);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 in = la_tc_upk(T(), x[i]);
            la_tc_split2<T>(f(u, r, c + 2 * i, in.x), f(u, r, c + 2 * i + 1, in.y), x[i], y[i],
                            z[i]);
        }
        *(uint4 *)(hi + o) = *(const uint4 *)x;
        if (lo) *(uint4 *)(lo + o) = *(const uint4 *)y;
        if (lo2) *(uint4 *)(lo2 + o) = *(const uint4 *)z;
    }
}

/* The same with f(r, c, x). */
template <typename T, class F>
__device__ __forceinline__ void la_tc_tile_split(T *hi, T *lo, T *lo2, F f) {
    la_tc_tile_split_u(hi, lo, lo2, [&](int, int r, int c, float x) { return f(r, c, x); });
}

/* acc (the CTA's 64x64 fp32 tile, tc.cuh layout) <-> rows k0.., columns
 * v0.. of a row-major [K][V] fp32 matrix, straight from / to registers
 * (8-byte accesses when V is even); src == NULL reads zeros. */
__device__ __forceinline__ void la_tc_acc_in(la_tc_acc (&acc)[4], const float *src, int64_t k0,
                                             int64_t v0, int64_t K, int64_t V) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++)
#pragma unroll
            for (int rh = 0; rh < 2; rh++) {
                const int64_t r = k0 + 16 * w + g + 8 * rh, c = v0 + 16 * j + 8 * hf + 2 * q;
                float a = 0.f, b = 0.f;
                if (src && r < K) {
                    const float *s = src + r * V + c;
                    if (!(V & 1) && c + 1 < V) {
                        const float2 u = *(const float2 *)s;
                        a = u.x, b = u.y;
                    } else {
                        if (c < V) a = s[0];
                        if (c + 1 < V) b = s[1];
                    }
                }
                acc[j].x[4 * hf + 2 * rh] = a;
                acc[j].x[4 * hf + 2 * rh + 1] = b;
            }
}
__device__ __forceinline__ void la_tc_acc_out(float *dst, const la_tc_acc (&acc)[4], int64_t k0,
                                              int64_t v0, int64_t K, int64_t V) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++)
#pragma unroll
            for (int rh = 0; rh < 2; rh++) {
                const int64_t r = k0 + 16 * w + g + 8 * rh, c = v0 + 16 * j + 8 * hf + 2 * q;
                const float a = acc[j].x[4 * hf + 2 * rh], b = acc[j].x[4 * hf + 2 * rh + 1];
                if (r >= K) continue;
                float *d = dst + r * V + c;
                if (!(V & 1) && c + 1 < V) {
                    *(float2 *)d = make_float2(a, b);
                } else {
                    if (c < V) d[0] = a;
                    if (c + 1 < V) d[1] = b;
                }
            }
}

/* The chunk's cumulative log-gates of tokens 2 lane, 2 lane + 1 (G0, G1) in
 * registers, by a warp scan of the gates x0, x1 of those tokens (0 past
 * the chunk), in the order of la_tc_warp_gates. */
__device__ __forceinline__ void la_tc_warp_gates_reg(double &G0, double &G1, double x0, double x1) {
    const int lane = threadIdx.x & 31;
    double s = x0 + x1;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const double y = __shfl_up_sync(0xffffffffu, s, off);
        if (lane >= off) s += y;
    }
    double ex = __shfl_up_sync(0xffffffffu, s, 1);
    if (lane == 0) ex = 0.0;
    G0 = ex + x0;
    G1 = G0 + x1;
}
/* The value of row r (< 64) of a per-row quantity held as (a: row 2 lane,
 * b: row 2 lane + 1); every lane of the warp calls it. */
__device__ __forceinline__ float la_tc_row_get(float a, float b, int r) {
    const float x = __shfl_sync(0xffffffffu, a, r >> 1), y = __shfl_sync(0xffffffffu, b, r >> 1);
    return (r & 1) ? y : x;
}

/* The chunk's cumulative log-gates in double, computed by each warp alone
 * (no CTA barrier): lane l holds the gates of tokens 2l, 2l+1 (x0, x1; 0
 * past the chunk); writes G[0..63] (the warp's own copy) with the fixed
 * order G[2l] = (sum over lanes < l of x0 + x1) + x0, G[2l+1] = G[2l] + x1.
 * The caller __syncwarp()s before reading G. */
__device__ __forceinline__ void la_tc_warp_gates(double *G, double x0, double x1) {
    const int lane = threadIdx.x & 31;
    double G0, G1;
    la_tc_warp_gates_reg(G0, G1, x0, x1);
    G[2 * lane] = G0;
    G[2 * lane + 1] = G1;
}

/* The 64x64 fp32 block rows k0.., columns v0.. of a row-major [K][V] state
 * into registers (piece e = threadIdx.x + 128 u, u < 8: row e / 16, columns
 * 4 (e % 16) .. +3; 16-byte loads when vec: V % 8 == 0 and S 16-byte
 * aligned), 0 outside; then split into parts hi, lo (, lo2) in shared tiles. */
__device__ __forceinline__ void la_tc_state_fetch(float4 (&hx)[8], const float *S, int64_t k0,
                                                  int64_t v0, int64_t K, int64_t V, bool vec) {
    const int cols = (int)(V - v0 < 64 ? V - v0 : 64);
#pragma unroll
    for (int u = 0; u < 8; u++) {
        const int e = threadIdx.x + LA_TC_THREADS * u, r = e >> 4, c = (e & 15) * 4;
        const float *s = S + (k0 + r) * V + v0 + c;
        if (vec) {
            hx[u] = (k0 + r < K && c < cols) ? *(const float4 *)s : make_float4(0, 0, 0, 0);
        } else {
            float y[4];
#pragma unroll
            for (int i = 0; i < 4; i++) y[i] = (k0 + r < K && c + i < cols) ? s[i] : 0.f;
            hx[u] = make_float4(y[0], y[1], y[2], y[3]);
        }
    }
}
template <typename T>
__device__ __forceinline__ void la_tc_state_split(const float4 (&hx)[8], T *hi, T *lo, T *lo2) {
#pragma unroll
    for (int u = 0; u < 8; u++) {
        const int e = threadIdx.x + LA_TC_THREADS * u, r = e >> 4, c = (e & 15) * 4;
        uint2 a, b, d;
        la_tc_split2<T>(hx[u].x, hx[u].y, a.x, b.x, d.x);
        la_tc_split2<T>(hx[u].z, hx[u].w, a.y, b.y, d.y);
        *(uint2 *)(hi + r * LA_TC_LD + c) = a;
        *(uint2 *)(lo + r * LA_TC_LD + c) = b;
        if (lo2) *(uint2 *)(lo2 + r * LA_TC_LD + c) = d;
    }
}

/* f(rh, r, c, x) for every element of the warp's rows of acc[j], column
 * blocks jb + j (r = 16 w + lane / 4 + 8 rh = row in the 64x64 tile, c =
 * column, x = the accumulator, by reference; per-row factors computed once
 * per thread (two rows) are taken by rh). */
template <int NJ, class F>
__device__ __forceinline__ void la_tc_acc_each_part(la_tc_acc (&acc)[NJ], int w, int jb, F f) {
    const int lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int rh = 0; rh < 2; rh++)
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
#pragma unroll
                for (int i = 0; i < 2; i++)
                    f(rh, 16 * w + g + 8 * rh, 16 * (jb + j) + 8 * hf + 2 * q + i,
                      acc[j].x[4 * hf + 2 * rh + i]);
}
/* The 4-warp layout: f(rh, r, c, x) / f(r, c, x) over all four column blocks. */
template <class F> __device__ __forceinline__ void la_tc_acc_each_rh(la_tc_acc (&acc)[4], F f) {
    la_tc_acc_each_part<4>(acc, threadIdx.x >> 5, 0, f);
}
template <class F> __device__ __forceinline__ void la_tc_acc_each(la_tc_acc (&acc)[4], F f) {
    la_tc_acc_each_part<4>(acc, threadIdx.x >> 5, 0,
                           [&](int, int r, int c, float &x) { f(r, c, x); });
}
/* tile[r][c] <- f(r, c, acc) as 16-bit parts hi (, lo (, lo2)); 4-byte
 * stores; the warp's rows, column blocks jb + j. */
template <typename T, int NJ, class F>
__device__ __forceinline__ void la_tc_acc_split_part(const la_tc_acc (&acc)[NJ], int w, int jb,
                                                     T *hi, T *lo, T *lo2, F f) {
    const int lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int rh = 0; rh < 2; rh++)
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int r = 16 * w + g + 8 * rh, c0 = 16 * (jb + j) + 8 * hf + 2 * q;
                uint32_t a, b, d;
                la_tc_split2<T>(f(r, c0, acc[j].x[4 * hf + 2 * rh]),
                                f(r, c0 + 1, acc[j].x[4 * hf + 2 * rh + 1]), a, b, d);
                *(uint32_t *)(hi + r * LA_TC_LD + c0) = a;
                if (lo) *(uint32_t *)(lo + r * LA_TC_LD + c0) = b;
                if (lo2) *(uint32_t *)(lo2 + r * LA_TC_LD + c0) = d;
            }
}
template <typename T, class F>
__device__ __forceinline__ void la_tc_acc_split(const la_tc_acc (&acc)[4], T *hi, T *lo, T *lo2,
                                                F f) {
    la_tc_acc_split_part<T, 4>(acc, threadIdx.x >> 5, 0, hi, lo, lo2, f);
}
/* rows r < rows, columns c < cols of a staged 16-bit tile to global memory
 * (element (0, 0) at dst, row stride `stride`): 16-byte stores when vec. */
template <typename T>
__device__ __forceinline__ void la_tc_tile_store(T *dst, int64_t stride, const T *tile, int rows,
                                                 int cols, bool vec) {
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int e = threadIdx.x + LA_TC_THREADS * u, r = e >> 3, c = (e & 7) * 8;
        if (r >= rows) continue;
        T *d = dst + (int64_t)r * stride + c;
        if (vec) {
            if (c < cols) *(uint4 *)d = *(const uint4 *)(tile + r * LA_TC_LD + c);
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++)
                if (c + i < cols) d[i] = tile[r * LA_TC_LD + c + i];
        }
    }
}

#endif
