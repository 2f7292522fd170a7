/* cuda-dcg7: the delta rules' chunkwise token gradients on tensor cores for
 * bf16 inputs, the default for bf16 (LINATTN_CUDA_DCG_TC=0: la_cu_dcg's
 * FFMA kernel). Same math as la_cu_dcg (delta_chunk_grad.cu's header gives
 * the formulas) and the same products as cuda-delta5's la_cu_dcg_tc
 * (delta_grad_tc.cu, removed once this kernel replaced it): q, k, dO exact in one bf16 part; the
 * fp32 quantities S0, G, R, dR, Yu, A^T, T1, T2 as two bf16 parts (hi + lo, about 16 significant
 * bits; a product of two fp32 operands is three m16n8k16 products hi*hi + lo*hi + hi*lo, one with
 * an input two). What differs from la_cu_dcg_tc is how the operands reach shared memory (the
 * staging made it slow, bench/GPU.md cuda-delta5):
 * - 8 warps per CTA (2 CTAs per SM: 16 warps), warp w owns rows
 *   16 (w % 4) .. +15 and columns 32 (w / 4) .. +31 of every 64x64 result;
 * - fp32 tiles read as float4 (4 per thread per tile, every load of a step
 *   issued before any use), split into parts in registers and stored as
 *   8-byte words; bf16 tiles (q, k, dO, v) by 16-byte cp.async;
 * - A^T staged once for every value block; the q.k / k.k blocks at once;
 *   the prologue's loads (q, k norms, <G, S0>) issued together.
 * - cuda-dcg8: Yu, dv, dq and dk written through an fp32 tile W in the two
 *   free part tiles as coalesced rows, and diag(e) R G^T parked there
 *   instead of in dk (no global read-back).
 * - GM (cuda-dcg9): GM 2 without gates (DeltaNet: every gate factor is 1,
 *   the work that only feeds dg is skipped), GM 3 gated; both: the gate
 *   factor Gamma once per element for T1 and T2, v by cp.async,
 *   evict-first loads of tiles read for the last time (A^T, G, S0) and
 *   streaming stores of dq, dk, dv, a head-major grid. GM 3 (cuda-dcg11):
 *   <G, S0> summed in the R G^T phase from the fetched tiles (G, S0 read
 *   once). An L2 prefetch of each next phase's tiles was measured slower
 *   and removed (bench/GPU.md).
 * - cuda-dcg12: GM 1 (<G, S0> in a pass of its own, opt-in =1) removed: its
 *   dg was bitwise identical with GM 3's at GDN 1,65536,H2,HV8,128 and it
 *   was 5% slower; a cp.async double buffer of the fp32 tiles was measured
 *   slower (7-10%) and not kept (bench/GPU.md cuda-dcg12).
 * - cuda-dcg11: the older variants removed (three parts, =3; three parts
 *   with a register prefetch, =2; direct stores, =4; cuda-dcg8's kernel
 *   without GM, =8: each measured slower at both standard shapes,
 *   bench/GPU.md cuda-dcg7 .. cuda-dcg9; kept in the git history).
 * - cuda-dbf19: at NP 1 (opt-in, LINATTN_CUDA_DCG_PARTS=1) every fp32
 *   operand is its bf16 hi part alone, as fla rounds its states: one mma per
 *   product (28 instead of 64 units per CTA at K = V = 128), half the part
 *   stores, 1.47-1.56x faster; gradients inside the float64 tests' bf16 bounds
 *   (worst dk 3.75e-3 of 4e-3; two parts ~2e-4), and no single operand's lo
 *   part buys the error back for its cost (bench/GPU.md cuda-dbf19). NP 1
 *   without gates issues the next step's loads before this step's products
 *   (PF).
 * - cuda-dcg21: NP replaced by LOM, one bit per fp32 operand that keeps two
 *   parts (DG2_LO_*): NP 2 = DG2_LO_ALL, NP 1 = 0, same kernels. Measured
 *   masks' costs and errors: the only one inside half the 4e-3 bound (A^T
 *   one part) gains nothing; Yu one part (LINATTN_CUDA_DCG_PARTS=mixed,
 *   opt-in) 2.09e-3 and -7% of the kernel; the errors grow faster than the
 *   time falls (bench/GPU.md cuda-dcg21).
 * Row sums over the two column halves go through per-half partials summed
 * in a fixed order; the gate gradient's sums over Z in double as in
 * la_cu_dcg_tc. Fixed orders, no atomics (bitwise identical run to run). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "delta_chunk.cuh"
#include "tc_tile.cuh"

typedef __nv_bfloat16 dg2_bf;
#define DG2_THREADS 256

struct dg2_smem {
    float T1[64 * LA_TC_LDF]; /* q.k (masked) until dP's epilogue, then T1 */
    float T2[64 * LA_TC_LDF]; /* k.k (masked) until dM's epilogue, then T2 */
    /* part tiles: A-operand parts P[0 .. 1], B-operand parts P[2 .. 3];
     * P[4 .. 5] is the fp32 tile W (cuda-dcg8) */
    dg2_bf P[6][LA_TC_TILE];
    dg2_bf X[LA_TC_TILE]; /* q block, or dO block */
    dg2_bf Y[LA_TC_TILE]; /* k block */
    /* rowZ: Z's row sums over columns 0..31; dgam holds those over 32..63
     * until the end, where each thread turns its own row into dgam */
    double gam[LA_CU_C], dgam[LA_CU_C], rowZ[LA_CU_C], colZ[4][LA_CU_C], red[8];
    float bt[LA_CU_C], et[LA_CU_C], be[LA_CU_C], rq[LA_CU_C], rk[LA_CU_C];
    float dbb[LA_CU_C], dee[LA_CU_C], dbt[LA_CU_C];
    float rp[2][2][LA_CU_C]; /* row-sum partials [slot][column half][row] */
};
/* two CTAs per SM on sm_90 (228 KB, 1 KB reserved per CTA) */
static_assert(sizeof(dg2_smem) <= 115712, "dg2_smem too large for 2 CTAs per SM");

/* The warp's 16x32 block of a 64x64 result: acc[j] holds columns 32 cw +
 * 16 j .. +15 in tc.cuh's la_tc_acc layout. */
typedef la_tc_acc dg2_acc[2];

__device__ __forceinline__ void dg2_zero(dg2_acc &a) {
#pragma unroll
    for (int j = 0; j < 2; j++)
#pragma unroll
        for (int i = 0; i < 8; i++) a[j].x[i] = 0.f;
}

/* f(rh, m, n, x) for the warp's elements (row m = 16 rw + lane / 4 + 8 rh) */
template <class F> __device__ __forceinline__ void dg2_each(dg2_acc &a, F f) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int rw = w & 3, cw = w >> 2;
#pragma unroll
    for (int rh = 0; rh < 2; rh++)
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
#pragma unroll
                for (int i = 0; i < 2; i++)
                    f(rh, 16 * rw + g + 8 * rh, 32 * cw + 16 * j + 8 * hf + 2 * q + i,
                      a[j].x[4 * hf + 2 * rh + i]);
}

/* cuda-dcg9: f(m, n, x, y) for the same element of two accumulators */
template <class F> __device__ __forceinline__ void dg2_each2(dg2_acc &a, dg2_acc &b, F f) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int rw = w & 3, cw = w >> 2;
#pragma unroll
    for (int rh = 0; rh < 2; rh++)
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    const int e = 4 * hf + 2 * rh + i;
                    f(16 * rw + g + 8 * rh, 32 * cw + 16 * j + 8 * hf + 2 * q + i, a[j].x[e],
                      b[j].x[e]);
                }
}

/* acc += A B over r < 64 (steps of 16, ascending). AT: A stored [r][m]; BT:
 * B stored [n][r]. tc.cuh's la_tc_mma64 for a 16x32 block per warp. */
template <bool AT, bool BT>
__device__ __forceinline__ void dg2_mma(dg2_acc &acc, const dg2_bf *A, const dg2_bf *B) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, m8 = lane >> 3, rr = lane & 7;
    const int lo8 = (m8 & 1) * 8, hi8 = (m8 >> 1) * 8, rw = w & 3, cw = w >> 2;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        uint32_t a[4];
        if (AT)
            la_tc_ldsm4<true>(a, A + (16 * kk + hi8 + rr) * LA_TC_LD + 16 * rw + lo8);
        else
            la_tc_ldsm4<false>(a, A + (16 * rw + lo8 + rr) * LA_TC_LD + 16 * kk + hi8);
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int n0 = 32 * cw + 16 * j;
            uint32_t b[4];
            if (BT)
                la_tc_ldsm4<false>(b, B + (n0 + hi8 + rr) * LA_TC_LD + 16 * kk + lo8);
            else
                la_tc_ldsm4<true>(b, B + (16 * kk + lo8 + rr) * LA_TC_LD + n0 + hi8);
            la_tc_mma<dg2_bf>(acc[j].x, a, b[0], b[1]);
            la_tc_mma<dg2_bf>(acc[j].x + 4, a, b[2], b[3]);
        }
    }
}
/* A = Ah + Al, B = Bh + Bl (lo parts may be NULL): hi*hi, lo*hi, hi*lo
 * (la_tc_mma64x's order) */
template <bool AT, bool BT>
__device__ __forceinline__ void dg2_mmax(dg2_acc &acc, const dg2_bf *Ah, const dg2_bf *Al,
                                         const dg2_bf *Bh, const dg2_bf *Bl) {
    dg2_mma<AT, BT>(acc, Ah, Bh);
    if (Al) dg2_mma<AT, BT>(acc, Al, Bh);
    if (Bl) dg2_mma<AT, BT>(acc, Ah, Bl);
}

/* An fp32 64x64 tile in registers: piece e = threadIdx.x + 256 u (u < 4) is
 * row e / 16, columns 4 (e % 16) .. +3. */
struct dg2_ft {
    float4 v[4];
};
/* cuda-dcg9: evict-first (.cs) loads without asm volatile (cuda's __ldcs
 * is volatile, which pinned the loads' order and spilled registers); only
 * for operands no thread writes during the kernel (A^T, S0, G) */
__device__ __forceinline__ float4 dg2_ldcs(const float *p) {
    float4 r;
    asm("ld.global.cs.v4.f32 {%0,%1,%2,%3}, [%4];"
        : "=f"(r.x), "=f"(r.y), "=f"(r.z), "=f"(r.w)
        : "l"(p));
    return r;
}
/* rows r < rows, columns c < cols of the operand at src (row stride
 * `stride`), 0 elsewhere; vec: cols % 4 == 0 and src, stride 16-byte
 * aligned (float4 loads), else scalar loads */
template <bool CSL = false>
__device__ __forceinline__ void dg2_fetch(dg2_ft &x, const float *src, int stride, int rows,
                                          int cols, bool vec) {
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int e = threadIdx.x + DG2_THREADS * u, r = e >> 4, c = 4 * (e & 15);
        const float *p = src + r * stride + c;
        if (vec) {
            const bool in = r < rows && c < cols;
            if (CSL) { /* unconditional load (src itself when out), then select */
                const float4 y = dg2_ldcs(in ? p : src);
                x.v[u] = in ? y : make_float4(0, 0, 0, 0);
            } else {
                x.v[u] = in ? *(const float4 *)p : make_float4(0, 0, 0, 0);
            }
        } else {
            const bool in = r < rows;
            x.v[u].x = (in && c < cols) ? p[0] : 0.f;
            x.v[u].y = (in && c + 1 < cols) ? p[1] : 0.f;
            x.v[u].z = (in && c + 2 < cols) ? p[2] : 0.f;
            x.v[u].w = (in && c + 3 < cols) ? p[3] : 0.f;
        }
    }
}
/* four values as two bf16 parts (hi, lo) at element i of the part tiles P
 * (8-byte stores); lo false (cuda-dbf19): the hi part alone (RN bf16) */
__device__ __forceinline__ void dg2_put4(dg2_bf (*P)[LA_TC_TILE], int i, float4 v, bool lo) {
    uint32_t h0, l0, m0, h1, l1, m1;
    la_tc_split2<dg2_bf>(v.x, v.y, h0, l0, m0);
    la_tc_split2<dg2_bf>(v.z, v.w, h1, l1, m1);
    *(uint2 *)(P[0] + i) = make_uint2(h0, h1);
    if (lo) *(uint2 *)(P[1] + i) = make_uint2(l0, l1);
}
__device__ __forceinline__ void dg2_put(dg2_bf (*P)[LA_TC_TILE], const dg2_ft &x, bool lo) {
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int e = threadIdx.x + DG2_THREADS * u, r = e >> 4, c = 4 * (e & 15);
        dg2_put4(P, r * LA_TC_LD + c, x.v[u], lo);
    }
}
/* parts of f(r, c) (a float4: columns c .. c + 3) for the whole tile */
template <class F>
__device__ __forceinline__ void dg2_put_fn(dg2_bf (*P)[LA_TC_TILE], bool lo, F f) {
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int e = threadIdx.x + DG2_THREADS * u, r = e >> 4, c = 4 * (e & 15);
        dg2_put4(P, r * LA_TC_LD + c, f(r, c), lo);
    }
}
/* A bf16 tile (rows < rows, columns < cols, 0 elsewhere): piece e =
 * threadIdx.x + 256 u (u < 2) is row e / 8, columns 8 (e % 8) .. +7; vec
 * (cols % 8 == 0, 16-byte aligned rows): cp.async, complete at
 * la_tc_cp_wait_all; else scalar loads. */
__device__ __forceinline__ void dg2_tile(dg2_bf *dst, const dg2_bf *src, int stride, int rows,
                                         int cols, bool vec) {
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int e = threadIdx.x + DG2_THREADS * u, r = e >> 3, c = (e & 7) * 8;
        dg2_bf *d = dst + r * LA_TC_LD + c;
        if (vec) {
            const bool ok = r < rows && c < cols;
            la_tc_cp16(d, ok ? (const void *)(src + r * stride + c) : (const void *)src,
                       ok ? 16 : 0);
        } else {
            __align__(16) dg2_bf x[8];
#pragma unroll
            for (int i = 0; i < 8; i++)
                x[i] =
                    (r < rows && c + i < cols) ? src[r * stride + c + i] : __float2bfloat16_rn(0.f);
            *(uint4 *)d = *(const uint4 *)x;
        }
    }
    la_tc_cp_commit();
}

/* Row sums: xs[rh] += sum over the thread's columns of x * f(m, n) */
template <class F> __device__ __forceinline__ void dg2_rowacc(dg2_acc &a, float (&xs)[2], F f) {
    dg2_each(a, [&](int rh, int m, int n, float &x) { xs[rh] = fmaf(x, f(m, n), xs[rh]); });
}
/* the warp's row sums (over its 32 columns) into rp[slot][column half][row] */
__device__ __forceinline__ void dg2_rowput(float (*rp)[LA_CU_C], const float (&xs)[2]) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
        float s = xs[rh];
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        if ((lane & 3) == 0) rp[w >> 2][16 * (w & 3) + (lane >> 2) + 8 * rh] = s;
    }
}

/* cuda-dcg8: outputs through shared memory. W is an fp32 64 x DG2_LDW tile
 * (the two free part tiles of the two-part kernel; stride 72: the float2
 * stores of a half warp hit distinct banks). dg2_wput: the warp's
 * accumulator elements f(m, x) into W (own positions); dg2_out: rows < rows,
 * columns < cols of W, each value through f(r, x), to dst (row stride
 * `stride`) as coalesced rows: piece e = threadIdx.x + 256 u is row e / 16,
 * columns 4 (e % 16) .. +3; vec: 4-value stores (cols % 4 == 0, rows
 * aligned), else scalar. Callers sync between the two. */
#define DG2_LDW 72
static_assert(64 * DG2_LDW * 4 <= 2 * LA_TC_TILE * 2, "W does not fit two part tiles");
template <class F> __device__ __forceinline__ void dg2_wput(float *W, const dg2_acc &a, F f) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int rw = w & 3, cw = w >> 2;
#pragma unroll
    for (int rh = 0; rh < 2; rh++)
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int m = 16 * rw + g + 8 * rh, n = 32 * cw + 16 * j + 8 * hf + 2 * q;
                const int e = 4 * hf + 2 * rh;
                *(float2 *)&W[m * DG2_LDW + n] = make_float2(f(m, a[j].x[e]), f(m, a[j].x[e + 1]));
            }
}
template <bool CSS = false> __device__ __forceinline__ void dg2_st4(float *d, float4 x) {
    if (CSS)
        __stcs((float4 *)d, x);
    else
        *(float4 *)d = x;
}
template <bool CSS = false> __device__ __forceinline__ void dg2_st4(dg2_bf *d, float4 x) {
    __nv_bfloat162 a = __floats2bfloat162_rn(x.x, x.y), b = __floats2bfloat162_rn(x.z, x.w);
    const uint2 u = make_uint2(*(uint32_t *)&a, *(uint32_t *)&b);
    if (CSS)
        __stcs((uint2 *)d, u);
    else
        *(uint2 *)d = u;
}
/* CSS (cuda-dcg9): streaming (evict-first) stores for outputs read only by
 * a later kernel (dq, dk, dv), so that L2 keeps the tiles this CTA reads
 * again (Yu, R) */
template <bool CSS = false, class T, class F>
__device__ __forceinline__ void dg2_out(T *dst, int stride, const float *W, int rows, int cols,
                                        bool vec, F f) {
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int e = threadIdx.x + DG2_THREADS * u, r = e >> 4, c = 4 * (e & 15);
        if (r >= rows || c >= cols) continue;
        float4 x = *(const float4 *)&W[r * DG2_LDW + c];
        x = make_float4(f(r, x.x), f(r, x.y), f(r, x.z), f(r, x.w));
        T *d = dst + r * stride + c;
        if (vec) {
            dg2_st4<CSS>(d, x);
        } else {
            stf(d, x.x);
            if (c + 1 < cols) stf(d + 1, x.y);
            if (c + 2 < cols) stf(d + 2, x.z);
            if (c + 3 < cols) stf(d + 3, x.w);
        }
    }
}

/* One phase of steps j < n: fetch(j, wh, xa, xb) loads step j's fp32 tiles
 * into registers (wh & 1: xa, wh & 2: xb), put(j, xa, xb) stores them as
 * parts (and issues the cp.async of its bf16 tiles), comp(j) multiplies from
 * shared memory. Starts with a barrier (the previous phase's shared tiles and global writes are
 * done); the caller syncs after. */
template <bool PF, class Fe, class Pu, class Co>
__device__ __forceinline__ void dg2_phase(int n, Fe fetch, Pu put, Co comp) {
    dg2_ft xa, xb;
    __syncthreads();
    fetch(0, 3, xa, xb);
    put(0, xa, xb);
    la_tc_cp_wait_all();
    __syncthreads();
    for (int j = 0; j < n; j++) {
        /* PF: step j + 1's loads in flight during step j's products */
        if (PF && j + 1 < n) fetch(j + 1, 3, xa, xb);
        comp(j);
        if (j + 1 < n) {
            __syncthreads();
            if (!PF) fetch(j + 1, 3, xa, xb);
            put(j + 1, xa, xb);
            la_tc_cp_wait_all();
            __syncthreads();
        }
    }
}

/* la_cu_dc_rnorm (delta_chunk.cuh) for q and k at once, the loads of a
 * warp's 8 rows issued together (same per-lane order, same bits): warp w
 * owns rows w + 8 r. */
__device__ __forceinline__ void dg2_rnorm(float *rq, float *rk, const dg2_bf *q, const dg2_bf *k,
                                          int64_t tok0, int L, int H, int hq, int K, int use_l2) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float aq[8], ak[8];
#pragma unroll
    for (int r = 0; r < 8; r++) aq[r] = ak[r] = 0.f;
    if (use_l2)
        for (int i0 = lane; i0 < K; i0 += 128) {
            float yq[8][4], yk[8][4];
#pragma unroll
            for (int r = 0; r < 8; r++)
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const int t = w + 8 * r, i = i0 + 32 * u;
                    const bool in = t < L && i < K;
                    const int64_t o = ((tok0 + t) * H + hq) * K + i;
                    yq[r][u] = in ? ldf(q + o) : 0.f;
                    yk[r][u] = in ? ldf(k + o) : 0.f;
                }
#pragma unroll
            for (int r = 0; r < 8; r++)
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    if (i0 + 32 * u < K) {
                        aq[r] = fmaf(yq[r][u], yq[r][u], aq[r]);
                        ak[r] = fmaf(yk[r][u], yk[r][u], ak[r]);
                    }
                }
        }
#pragma unroll
    for (int r = 0; r < 8; r++) {
        for (int off = 16; off > 0; off >>= 1) {
            aq[r] += __shfl_xor_sync(0xffffffffu, aq[r], off);
            ak[r] += __shfl_xor_sync(0xffffffffu, ak[r], off);
        }
        if (lane == 0) {
            rq[w + 8 * r] = use_l2 ? 1.f / sqrtf(aq[r] + 1e-6f) : 1.f;
            rk[w + 8 * r] = use_l2 ? 1.f / sqrtf(ak[r] + 1e-6f) : 1.f;
        }
    }
}

struct dg2_flags {
    int vf;   /* fp32 tiles by float4 (V % 4 == 0, aligned) */
    int vqk;  /* q, k tiles by cp.async (K % 8 == 0, aligned) */
    int vdo;  /* dO tiles by cp.async (V % 8 == 0, aligned) */
    int vat;  /* A^T by float4 (aligned) */
    int vdv;  /* dv by 8-byte stores (V % 4 == 0, aligned) */
    int vqo;  /* dq, dk by float4 stores (K % 4 == 0, aligned) */
    int vv;   /* v tiles by cp.async (V % 8 == 0, aligned) */
    int hmaj; /* grid (HS, chunks) instead of (chunks, HS) */
};

/* cuda-dcg21: the fp32 operands, one bit each in LOM when it keeps its lo
 * part (hi + lo: a product with it costs two or three mma instead of one) */
enum {
    DG2_LO_AT = 1,  /* A^T (Yu = A^T dR) */
    DG2_LO_DR = 2,  /* dR (Yu = A^T dR) */
    DG2_LO_R = 4,   /* R (dP = dO R^T, dM = -Yu R^T, R G^T) */
    DG2_LO_YU = 8,  /* Yu (dM, Yu S0^T) */
    DG2_LO_G = 16,  /* G (R G^T) */
    DG2_LO_S0 = 32, /* S0 (dO S0^T, Yu S0^T) */
    DG2_LO_T = 64,  /* T1 diag(rk), diag(rq) T1, (T2 + T2^T) diag(rk) */
    DG2_LO_ALL = 127
};

/* GM: 2 without gates, 3 gated (<G, S0> in the R G^T phase; file header).
 * LOM (cuda-dcg21; cuda-dbf19's NP 2 = DG2_LO_ALL, NP 1 = 0): the DG2_LO_*
 * operands stored and multiplied as hi + lo parts, the others as their hi
 * part alone. PF (cuda-dbf19): each
 * phase step's fp32 loads issued before the previous step's products
 * (dg2_phase); the host takes it where the registers allow it (GM 3 or two
 * parts everywhere spill with it: GDN's kernel measured 2286 -> 2698 us) */
template <int GM, int LOM, bool PF>
__global__ void __launch_bounds__(DG2_THREADS, 2)
    la_cu_dcg_tc2(la_cu_dc_args p, const dg2_bf *d_o, const float *hst, const float *dhst,
                  float *dR, dg2_bf *dv_out, float *dqp, float *dkp, float *dbp, float *dgp,
                  dg2_flags fl) {
    extern __shared__ __align__(128) unsigned char dg2_raw[];
    dg2_smem &S = *(dg2_smem *)dg2_raw;
    /* cuda-dcg9: head-major grid (blockIdx.x = value head) when the
     * chunks fit gridDim.y, so a chunk's value heads run together (GDN's
     * shared q, k from L2) */
    const int cb = fl.hmaj ? (int)blockIdx.y : (int)blockIdx.x;
    const int hs = fl.hmaj ? (int)blockIdx.x : (int)blockIdx.y;
    const la_cu_chunk ch = p.chunks[cb];
    /* dims as int (small), token offsets int64; operand pointers are formed
     * at their use from the kernel parameters (fewer long-lived registers) */
    const int HS = (int)p.HS, H = (int)p.H, K = (int)p.K, V = (int)p.V, hq = hs / (HS / H);
    const int L = ch.len, t = threadIdx.x, w = t >> 5, lane = t & 31, g = lane >> 2;
    const int rw = w & 3, cw = w >> 2;
    const int kst = H * K, vst = HS * V;
    const int64_t tok0 = ch.tok0, ko = (tok0 * H + hq) * K, vo = (tok0 * HS + hs) * V;
    const float sc = p.scale;
    const bool vf = fl.vf, vqk = fl.vqk, vdo = fl.vdo;
#define qc ((const dg2_bf *)p.q + ko)
#define kc ((const dg2_bf *)p.k + ko)
#define vc ((const dg2_bf *)p.v + vo)
#define dOc (d_o + vo)
#define dvc (dv_out + vo)
#define Rc ((const float *)p.U + vo) /* R after the state pass */
#define Yc (dR + vo)                 /* dR, then Yu in place */
#define CS (((size_t)cb * HS + hs) * K * V)
#define S0 (hst + CS)
#define G (dhst + CS)
#define ATc (p.AT + ((size_t)cb * HS + hs) * LA_CU_C * LA_CU_C)
    dg2_bf *const X = S.X, *const Y = S.Y;
    dg2_bf(*const SA)[LA_TC_TILE] = S.P, (*const SB)[LA_TC_TILE] = S.P + 2;
    float *const W = (float *)S.P[4];
    const int nk = (K + 63) / 64, nv = (V + 63) / 64;
    /* cuda-dcg21: which fp32 operands keep their lo part (LOM's DG2_LO_* bits; a
     * part tile P1 is read only where its bit is set) */
    constexpr bool lAT = LOM & DG2_LO_AT, lDR = LOM & DG2_LO_DR, lR = LOM & DG2_LO_R,
                   lYU = LOM & DG2_LO_YU, lG = LOM & DG2_LO_G, lS0 = LOM & DG2_LO_S0,
                   lT = LOM & DG2_LO_T;
    auto lp = [](bool on, const dg2_bf *P1) -> const dg2_bf * { return on ? P1 : NULL; };
    /* the chunk's gate prefix sums by a two-warp scan (tc.cuh; dgam as its
     * scratch, written only at the end) */
    /* NG (cuda-dcg9, no gates: DeltaNet): gam = 0, so Gamma = b = e = 1 and
     * every gate factor below is the constant 1 (expf(0) = 1: the same bits),
     * and dg (not asked for) with its sums is skipped; dgp gets zeros */
    constexpr bool NG = GM == 2;
    /* evict-first loads of the tiles read for the last time (A^T, G, S0;
     * not dR, whose lines Yu overwrites and is read again) and stores of dq,
     * dk, dv (cuda-dcg9) */
    constexpr bool CSL = true;
    if (!NG)
        la_tc_gate_scan(S.gam, S.dgam, (t < L && p.g) ? (double)p.g[(tok0 + t) * HS + hs] : 0.0);
    dg2_rnorm(S.rq, S.rk, (const dg2_bf *)p.q, (const dg2_bf *)p.k, tok0, L, H, hq, K, p.use_l2);
    if (t < LA_CU_C) {
        S.be[t] = t < L ? p.beta[(tok0 + t) * HS + hs] : 0.f;
        S.dbb[t] = S.dee[t] = S.dbt[t] = 0.f;
    }
    __syncthreads();
    if (t < LA_CU_C) {
        S.bt[t] = t < L ? (NG ? 1.f : la_cu_expd(S.gam[t])) : 0.f;
        S.et[t] = t < L ? (NG ? 1.f : la_cu_expd(S.gam[L - 1] - S.gam[t])) : 0.f;
    }
    auto gm = [&](int m, int n) -> float { return NG ? 1.f : la_cu_expd(S.gam[m] - S.gam[n]); };
    dg2_acc a0, a1;
    float xs[2];
    /* ---- q.k, k.k of the chunk (exact inputs), kept masked in T1 / T2 ---- */
    dg2_zero(a0);
    dg2_zero(a1);
    if (nk <= 3) { /* K <= 192: every block at once, q in A's tiles, k in B's */
        for (int j = 0; j < nk; j++) {
            const int k0 = 64 * j;
            dg2_tile(S.P[j], qc + k0, kst, L, (K - k0 < 64 ? K - k0 : 64), vqk);
            dg2_tile(S.P[3 + j], kc + k0, kst, L, (K - k0 < 64 ? K - k0 : 64), vqk);
        }
        la_tc_cp_wait_all();
        __syncthreads();
        for (int j = 0; j < nk; j++) {
            dg2_mma<false, true>(a0, S.P[j], S.P[3 + j]);
            dg2_mma<false, true>(a1, S.P[3 + j], S.P[3 + j]);
        }
    } else {
        dg2_phase<PF>(
            nk, [&](int, int, dg2_ft &, dg2_ft &) {},
            [&](int j, dg2_ft &, dg2_ft &) {
                const int k0 = 64 * j;
                dg2_tile(X, qc + k0, kst, L, (K - k0 < 64 ? K - k0 : 64), vqk);
                dg2_tile(Y, kc + k0, kst, L, (K - k0 < 64 ? K - k0 : 64), vqk);
            },
            [&](int) {
                dg2_mma<false, true>(a0, X, Y);
                dg2_mma<false, true>(a1, Y, Y);
            });
    }
    dg2_each(a0, [&](int, int m, int n, float &x) {
        S.T1[m * LA_TC_LDF + n] = (n <= m && m < L) ? S.rq[m] * S.rk[n] * x : 0.f;
    });
    dg2_each(a1, [&](int, int m, int n, float &x) {
        S.T2[m * LA_TC_LDF + n] = (n < m && m < L) ? S.rk[m] * S.rk[n] * x : 0.f;
    });
    /* ---- Yu = A^T dR (in place), dv = beta Yu, dbeta += Yu.v; A^T staged once ---- */
    xs[0] = xs[1] = 0.f;
    dg2_phase<PF>(
        nv,
        [&](int j, int wh, dg2_ft &xa, dg2_ft &xb) {
            const int v0 = 64 * j;
            if (j == 0 && (wh & 1)) dg2_fetch<CSL>(xa, ATc, LA_CU_C, LA_CU_C, LA_CU_C, fl.vat);
            if (wh & 2) dg2_fetch(xb, Yc + v0, vst, L, (V - v0 < 64 ? V - v0 : 64), vf);
        },
        [&](int j, dg2_ft &xa, dg2_ft &xb) {
            if (j == 0) dg2_put(SA, xa, lAT);
            dg2_put(SB, xb, lDR);
            { /* cuda-dcg9: the v block by cp.async into Y (free here) */
                const int v0 = 64 * j;
                dg2_tile(Y, vc + v0, vst, L, (V - v0 < 64 ? V - v0 : 64), fl.vv);
            }
        },
        [&](int j) {
            const int v0 = 64 * j;
            dg2_zero(a0);
            dg2_mmax<false, false>(a0, SA[0], lp(lAT, SA[1]), SB[0], lp(lDR, SB[1]));
            dg2_each(a0, [&](int rh, int m, int n, float &y) {
                const int c = v0 + n;
                if (m < L && c < V) xs[rh] = fmaf(y, la_tc_f(Y[m * LA_TC_LD + n]), xs[rh]);
            });
            { /* Yu and dv as rows through W */
                dg2_wput(W, a0, [](int, float x) { return x; });
                __syncthreads();
                const int cols = (V - v0 < 64 ? V - v0 : 64);
                dg2_out(Yc + v0, vst, W, L, cols, vf, [](int, float x) { return x; });
                dg2_out<CSL>(dvc + v0, vst, W, L, cols, fl.vdv,
                             [&](int r, float x) { return S.be[r] * x; });
            }
        });
    dg2_rowput(S.rp[0], xs);
    /* ---- dP = dO R^T (a0), dM = -Yu R^T (a1), R's parts shared ---- */
    dg2_zero(a0);
    dg2_zero(a1);
    dg2_phase<PF>(
        nv,
        [&](int j, int wh, dg2_ft &xa, dg2_ft &xb) {
            const int v0 = 64 * j;
            const int cols = (V - v0 < 64 ? V - v0 : 64);
            if (wh & 1) dg2_fetch(xa, Yc + v0, vst, L, cols, vf);
            if (wh & 2) dg2_fetch(xb, Rc + v0, vst, L, cols, vf);
        },
        [&](int j, dg2_ft &xa, dg2_ft &xb) {
            const int v0 = 64 * j;
            dg2_put(SA, xa, lYU);
            dg2_put(SB, xb, lR);
            dg2_tile(X, dOc + v0, vst, L, (V - v0 < 64 ? V - v0 : 64), vdo);
        },
        [&](int) {
            dg2_mmax<false, true>(a0, X, NULL, SB[0], lp(lR, SB[1]));
            dg2_mmax<false, true>(a1, SA[0], lp(lYU, SA[1]), SB[0], lp(lR, SB[1]));
        });
    /* rp[0] was written before the phase's barriers */
    if (t < LA_CU_C) S.dbt[t] += S.rp[0][0][t] + S.rp[0][1][t];
    /* T1 = scale dP (.) Gamma (lower incl. diagonal); a0 <- Z's dP part;
     * T2 = beta dM (.) Gamma (strictly lower); a1 <- dM (.) kk (.) Gamma;
     * dbeta += its rows. cuda-dcg9: both in one pass, Gamma_mn computed
     * once per element (the same value, the same bits); NG: no Z */
    {
        dg2_each2(a0, a1, [&](int m, int n, float &x, float &x1) {
            const bool in = n <= m && m < L;
            const float gg = in ? gm(m, n) : 0.f;
            const float y = in ? sc * x * gg : 0.f;
            const float qk = S.T1[m * LA_TC_LDF + n];
            S.T1[m * LA_TC_LDF + n] = y;
            if (!NG) x = (in && n < m) ? y * qk : 0.f;
            float t2 = 0.f, z = 0.f;
            if (n < m && m < L) {
                const float dm = -x1;
                z = dm * S.T2[m * LA_TC_LDF + n] * gg;
                t2 = dm * S.be[m] * gg;
            }
            S.T2[m * LA_TC_LDF + n] = t2;
            x1 = z;
        });
    }
    xs[0] = xs[1] = 0.f;
    dg2_rowacc(a1, xs, [](int, int) -> float { return 1.f; });
    dg2_rowput(S.rp[1], xs);
    /* Z = a0 + diag(beta) a1: row sums (columns 0..31 in rowZ, 32..63 in
     * dgam) and per-row-block column sums (colZ), in double, fixed order */
    if (!NG) {
        const int q = lane & 3;
#pragma unroll
        for (int rh = 0; rh < 2; rh++) {
            const int m = 16 * rw + g + 8 * rh;
            const float bm = S.be[m];
            double s = 0;
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++)
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        const int e = 4 * hf + 2 * rh + i;
                        a0[j].x[e] += bm * a1[j].x[e];
                        s += (double)a0[j].x[e];
                    }
            s += __shfl_xor_sync(0xffffffffu, s, 1);
            s += __shfl_xor_sync(0xffffffffu, s, 2);
            if (q == 0) (cw == 0 ? S.rowZ : S.dgam)[m] = s;
        }
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    double s = (double)a0[j].x[4 * hf + i] + (double)a0[j].x[4 * hf + 2 + i];
                    s += __shfl_xor_sync(0xffffffffu, s, 4);
                    s += __shfl_xor_sync(0xffffffffu, s, 8);
                    s += __shfl_xor_sync(0xffffffffu, s, 16);
                    if (g == 0) S.colZ[rw][32 * cw + 16 * j + 8 * hf + 2 * q + i] = s;
                }
    }
    __syncthreads();
    if (t < LA_CU_C) S.dbt[t] += S.rp[1][0][t] + S.rp[1][1][t];
    /* GM 3 (gated): dbL = <G, S0> summed in the R G^T
     * phase from the fetched G tile and the S0 tile at the same positions (G and S0 read from DRAM
     * once, not twice): per K block, each thread its pieces in (value block, piece) order, the
     * warp's tree, added to the warp's slot red[w] in K-block order; the 8 slots summed at the end
     * as before. Double, fixed order. */
    /* ---- dq, dk by 64-column blocks of K ---- */
    auto qn = [&](int m, int n) -> float { return S.rq[m] * la_tc_f(X[m * LA_TC_LD + n]); };
    auto kn = [&](int m, int n) -> float { return S.rk[m] * la_tc_f(Y[m * LA_TC_LD + n]); };
    for (int k0 = 0; k0 < K; k0 += 64) {
        const int kcols = (K - k0 < 64 ? K - k0 : 64);
        float *dkc = dkp + (tok0 * HS + hs) * K + k0;
        /* diag(e) R G^T (value blocks in order), parked in W by its owner
         * (read back below by the same thread: two accumulators live) */
        dg2_zero(a0);
        double dga = 0;
        dg2_phase<PF>(
            nv,
            [&](int j, int wh, dg2_ft &xa, dg2_ft &xb) {
                const int v0 = 64 * j;
                const int cols = (V - v0 < 64 ? V - v0 : 64);
                if (wh & 1) dg2_fetch(xa, Rc + v0, vst, L, cols, vf);
                if (wh & 2) dg2_fetch<CSL>(xb, G + k0 * V + v0, V, kcols, cols, vf);
            },
            [&](int j, dg2_ft &xa, dg2_ft &xb) {
                dg2_put(SA, xa, lR);
                if (GM == 3) { /* S0 at G's positions (xa's registers free now) */
                    const int v0 = 64 * j;
                    dg2_fetch(xa, S0 + k0 * V + v0, V, kcols, (V - v0 < 64 ? V - v0 : 64), vf);
#pragma unroll
                    for (int u = 0; u < 4; u++) {
                        const float4 gv = xb.v[u], sv = xa.v[u];
                        dga += (double)gv.x * (double)sv.x + (double)gv.y * (double)sv.y +
                               (double)gv.z * (double)sv.z + (double)gv.w * (double)sv.w;
                    }
                }
                dg2_put(SB, xb, lG);
            },
            [&](int) { dg2_mmax<false, true>(a0, SA[0], lp(lR, SA[1]), SB[0], lp(lG, SB[1])); });
        if (GM == 3) {
            for (int off = 16; off > 0; off >>= 1) dga += __shfl_xor_sync(0xffffffffu, dga, off);
            if (lane == 0) S.red[w] = (k0 == 0 ? 0.0 : S.red[w]) + dga;
        }
        /* parked in W (own positions) */
        dg2_wput(W, a0, [&](int m, float x) { return x * S.et[m]; });
        /* a0 = dO S0^T, a1 = Yu S0^T (S0's parts shared) */
        dg2_zero(a0);
        dg2_zero(a1);
        dg2_phase<PF>(
            nv,
            [&](int j, int wh, dg2_ft &xa, dg2_ft &xb) {
                const int v0 = 64 * j;
                const int cols = (V - v0 < 64 ? V - v0 : 64);
                if (wh & 1) dg2_fetch(xa, Yc + v0, vst, L, cols, vf);
                if (wh & 2) dg2_fetch<CSL>(xb, S0 + k0 * V + v0, V, kcols, cols, vf);
            },
            [&](int j, dg2_ft &xa, dg2_ft &xb) {
                const int v0 = 64 * j;
                dg2_put(SA, xa, lYU);
                dg2_put(SB, xb, lS0);
                dg2_tile(X, dOc + v0, vst, L, (V - v0 < 64 ? V - v0 : 64), vdo);
            },
            [&](int) {
                dg2_mmax<false, true>(a0, X, NULL, SB[0], lp(lS0, SB[1]));
                dg2_mmax<false, true>(a1, SA[0], lp(lYU, SA[1]), SB[0], lp(lS0, SB[1]));
            });
        __syncthreads(); /* the products are done with A, B, X */
        /* the q block, the k block (exact) and T1 diag(rk) as parts */
        dg2_tile(X, qc + k0, kst, L, kcols, vqk);
        dg2_tile(Y, kc + k0, kst, L, kcols, vqk);
        dg2_put_fn(SA, lT, [&](int r, int c) -> float4 {
            const float4 a = *(const float4 *)&S.T1[r * LA_TC_LDF + c];
            return make_float4(a.x * S.rk[c], a.y * S.rk[c + 1], a.z * S.rk[c + 2],
                               a.w * S.rk[c + 3]);
        });
        la_tc_cp_wait_all();
        __syncthreads();
        /* (de e)_t += k_t . (diag(e) R G^T)_t (read back from W, own elements);
         * NG: de, db only feed dg (not asked for), skipped */
        if (!NG) {
            xs[0] = xs[1] = 0.f;
            dg2_each(a1, [&](int rh, int m, int n, float &) {
                if (m < L && k0 + n < K) xs[rh] = fmaf(W[m * DG2_LDW + n], kn(m, n), xs[rh]);
            });
            dg2_rowput(S.rp[0], xs);
        }
        /* dq part: diag(sc b) dO S0^T; (db b)_t += q_t . that */
        xs[0] = xs[1] = 0.f;
        dg2_each(a0, [&](int rh, int m, int n, float &x) {
            x *= sc * S.bt[m];
            if (!NG) xs[rh] = fmaf(x, qn(m, n), xs[rh]);
        });
        if (!NG) dg2_rowput(S.rp[1], xs);
        /* b Yw = -diag(b) Yu S0^T: dbeta += k.(b Yw), (db b) += beta k.(b Yw);
         * here, with dk's first two terms, so that W is free for dq */
        {
            xs[0] = xs[1] = 0.f;
            dg2_each(a1, [&](int rh, int m, int n, float &x) {
                x *= -S.bt[m];
                xs[rh] = fmaf(x, kn(m, n), xs[rh]);
                x *= S.be[m];
                if (m < L && k0 + n < K) x += W[m * DG2_LDW + n];
            });
        }
        /* dq = a0 + T1 K */
        dg2_mmax<false, false>(a0, SA[0], lp(lT, SA[1]), Y, NULL);
        dg2_wput(W, a0, [](int, float x) { return x; });
        __syncthreads(); /* rp[0], rp[1] complete; A (T1 diag(rk)) no longer read */
        /* dq rows from W */
        dg2_out<CSL>(dqp + (tok0 * HS + hs) * K + k0, HS * K, W, L, kcols, fl.vqo,
                     [](int, float x) { return x; });
        if (!NG && t < LA_CU_C) {
            S.dee[t] += S.rp[0][0][t] + S.rp[0][1][t];
            S.dbb[t] += S.rp[1][0][t] + S.rp[1][1][t];
        }
        /* dk = diag(beta) b Yw + diag(e) R G^T + T1^T Q + (T2 + T2^T) K */
        /* stored [r][m]: diag(rq) T1 */
        dg2_put_fn(SA, lT, [&](int r, int c) -> float4 {
            const float4 a = *(const float4 *)&S.T1[r * LA_TC_LDF + c];
            const float f = S.rq[r];
            return make_float4(a.x * f, a.y * f, a.z * f, a.w * f);
        });
        __syncthreads(); /* rp[0] free again (read above), A complete */
        dg2_rowput(S.rp[0], xs);
        dg2_mma<true, false>(a1, SA[0], X);
        if (lT) dg2_mma<true, false>(a1, SA[1], X);
        __syncthreads();
        if (t < LA_CU_C) {
            const float s = S.rp[0][0][t] + S.rp[0][1][t];
            S.dbt[t] += s;
            if (!NG) S.dbb[t] += S.be[t] * s;
        }
        dg2_put_fn(SA, lT, [&](int r, int c) -> float4 {
            const float *a = &S.T2[r * LA_TC_LDF + c];
            float y[4];
#pragma unroll
            for (int i = 0; i < 4; i++) y[i] = (a[i] + S.T2[(c + i) * LA_TC_LDF + r]) * S.rk[c + i];
            return make_float4(y[0], y[1], y[2], y[3]);
        });
        __syncthreads();
        dg2_mmax<false, false>(a1, SA[0], lp(lT, SA[1]), Y, NULL);
        /* dk rows from W (dq's rows were read before two barriers) */
        dg2_wput(W, a1, [](int, float x) { return x; });
        __syncthreads();
        dg2_out<CSL>(dkc, HS * K, W, L, kcols, fl.vqo, [](int, float x) { return x; });
    }
    __syncthreads();
    /* ---- gates: dgam (double, fixed order), dg = reverse cumsum ---- */
    if (NG) { /* no gates: dbeta, and zeros for the reduce's unused dg sum */
        if (t < L) {
            dbp[(tok0 + t) * HS + hs] = S.dbt[t];
            dgp[(tok0 + t) * HS + hs] = 0.f;
        }
        return;
    }
    if (t < L) {
        double d = (double)S.dbb[t] - (double)S.dee[t];
        d += S.rowZ[t] + S.dgam[t];
        d -= ((S.colZ[0][t] + S.colZ[1][t]) + S.colZ[2][t]) + S.colZ[3][t];
        if (t == L - 1) {
            double db = 0;
            for (int i = 0; i < 8; i++) db += S.red[i];
            for (int j = 0; j < L; j++) d += (double)S.dee[j];
            d += db * (double)S.bt[L - 1];
        }
        S.dgam[t] = d;
        dbp[(tok0 + t) * HS + hs] = S.dbt[t];
    }
    __syncthreads();
    if (t == 0) {
        double a = 0;
        for (int j = L - 1; j >= 0; j--) {
            a += S.dgam[j];
            dgp[(tok0 + j) * HS + hs] = (float)a;
        }
    }
}
#undef qc
#undef kc
#undef vc
#undef dOc
#undef dvc
#undef Rc
#undef Yc
#undef CS
#undef S0
#undef G
#undef ATc

static bool dg2_al(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

int la__cu_dcg_tc2_on(void);

/* cuda-dcg21: LINATTN_CUDA_DCG_PARTS=mixed: two parts for every fp32 operand
 * but Yu (one). Of the per-operand masks measured (bench/GPU.md cuda-dcg21) the
 * one with the smallest worst error that gains time: 16-bit gradient errors
 * against float64 up to 2.09e-3 (dk; two parts 0.23e-3, one part 3.75e-3;
 * bounds 4e-3), the kernel -7% (DeltaNet 8,2048: 1476 -> 1367 us). */
#define DG2_LO_MIXED (DG2_LO_ALL & ~DG2_LO_YU)

/* cuda-dbf19, cuda-dcg21: the fp32 operands' bf16 parts, read at each call
 * (a test section forces the opt-in values): LINATTN_CUDA_DCG_PARTS unset
 * or 2: hi + lo for every operand (the default); 1: the hi part alone (as fla
 * rounds its states; 16-bit gradient errors 2.8e-3 .. 3.75e-3 in the float64
 * tests against their 4e-3 bounds, above python/tests' 3e-3 for DeltaNet);
 * mixed: DG2_LO_MIXED. Returns the DG2_LO_* mask. */
static int la__cu_dcg_mask(void) {
    const char *e = getenv("LINATTN_CUDA_DCG_PARTS");
    if (e && strcmp(e, "1") == 0) return 0;
    if (e && strcmp(e, "mixed") == 0) return DG2_LO_MIXED;
    return DG2_LO_ALL;
}

typedef void (*dg2_kern)(la_cu_dc_args, const dg2_bf *, const float *, const float *, float *,
                         dg2_bf *, float *, float *, float *, float *, dg2_flags);
/* the kernel for gates (GM 3) or none (GM 2) and operand mask m (one of
 * la__cu_dcg_mask's); PF where the registers allow it: one part everywhere,
 * no gates (with any lo part kept it spills 84-100 bytes) */
static dg2_kern dg2_pick(bool gated, int m) {
    if (m == 0) return gated ? la_cu_dcg_tc2<3, 0, false> : la_cu_dcg_tc2<2, 0, true>;
    if (m == DG2_LO_MIXED)
        return gated ? la_cu_dcg_tc2<3, DG2_LO_MIXED, false>
                     : la_cu_dcg_tc2<2, DG2_LO_MIXED, false>;
    return gated ? la_cu_dcg_tc2<3, DG2_LO_ALL, false> : la_cu_dcg_tc2<2, DG2_LO_ALL, false>;
}

int la__cu_dcg_tc2_fits(const la__cu_call *c) {
    return sizeof(dg2_smem) <= (size_t)la__cu_smem_optin(c);
}

la_status la__cu_dcg_tc2(const la__cu_call *c, cudaStream_t stream, const la_cu_table &tb,
                         const la_cu_dc_args &p, float *dR, const float *hst, const float *dhst,
                         float *dqp, float *dkp, float *dbp, float *dgp) {
    if (tb.nchunks == 0) return LA_OK;
    const size_t smem = sizeof(dg2_smem);
    dg2_flags fl;
    fl.vf =
        p.V % 4 == 0 && dg2_al(p.U, 16) && dg2_al(dR, 16) && dg2_al(hst, 16) && dg2_al(dhst, 16);
    fl.vat = dg2_al(p.AT, 16);
    fl.vqk = p.K % 8 == 0 && dg2_al(p.q, 16) && dg2_al(p.k, 16);
    fl.vdo = p.V % 8 == 0 && dg2_al(c->d_o, 16);
    fl.vdv = p.V % 4 == 0 && dg2_al(c->dv, 8);
    fl.vqo = p.K % 4 == 0 && dg2_al(dqp, 16) && dg2_al(dkp, 16);
    fl.vv = p.V % 8 == 0 && dg2_al(p.v, 16);
    const dg2_kern f = dg2_pick(p.g != NULL, la__cu_dcg_mask());
    LA_CU_TRY(c->op,
              cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    /* two CTAs per SM need the largest shared-memory carveout */
    LA_CU_TRY(c->op, cudaFuncSetAttribute(f, cudaFuncAttributePreferredSharedMemoryCarveout,
                                          (int)cudaSharedmemCarveoutMaxShared));
    /* cuda-dcg9: head-major grid where the chunks fit gridDim.y */
    fl.hmaj = tb.nchunks <= 65535;
    const dim3 grid = fl.hmaj ? dim3((unsigned)c->HS, (unsigned)tb.nchunks)
                              : dim3((unsigned)tb.nchunks, (unsigned)c->HS);
    f<<<grid, DG2_THREADS, smem, stream>>>(p, (const dg2_bf *)c->d_o, hst, dhst, dR,
                                           (dg2_bf *)c->dv, dqp, dkp, dbp, dgp, fl);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}

/* Whether bf16 backwards take this kernel (read once): LINATTN_CUDA_DCG_TC=0
 * or LINATTN_CUDA_TC=0: no (0, la_cu_dcg's FFMA); else (1) GM 3 gated, GM 2
 * without gates. The older variants (=1 by cuda-dcg12; =2, =3, =4, =8 by
 * cuda-dcg11) were removed: an old setting selects the default. H200
 * (bench/GPU.md): cuda-dcg12 GM 3 3.32-3.55 ms, GM 1 3.72 (GDN, one
 * process); cuda-dcg11 GM 3 3.29 ms, GM 1 3.60 (GDN), GM 2 1.49-1.52
 * (DeltaNet); cuda-dcg8 (=8)
 * 3.64-3.68 / 1.88-1.89;
 * =4 3.95 / 2.03; cuda-dcg7: three parts 4.55 / 2.33, three + prefetch
 * 4.69 / 2.39, FFMA 7.30 / 4.11; the errors against float64 of two and
 * three parts are alike (worst bf16 dq 1.9e-4 both; bound 4e-3). */
int la__cu_dcg_tc2_on(void) {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_TC"), *o = getenv("LINATTN_CUDA_DCG_TC");
        mode = (o && o[0] == '0') || (e && e[0] == '0') ? 0 : 1;
    }
    return mode;
}
