/* The delta rules' prep kernel on tensor cores (bf16 inputs): the same
 * outputs as la_cu_dc_prep (delta_chunk.cu) for a chunk of L <= 64 tokens:
 *   Lo = strictly_lower(diag(beta) K K^T (.) Gamma),  A = (I + Lo)^{-1}
 *   U = A diag(beta) V,  W = A diag(beta b) K,  Kd = diag(e^{gam_L - gam}) K
 * (K row-normalised where asked), plus A^T, b_L and the bf16 parts of W, Kd
 * for the tensor-core state pass. One CTA of 8 warps per (chunk, value
 * head); K and V tiles come by 16-byte cp.async and are exact in bf16, so
 * K K^T is one tensor-core product; A is inverted in fp32 exactly as in
 * la_cu_dc_prep (same order); A diag(beta) and A diag(beta b |k|^-1) are
 * split into bf16 hi + lo, so U and W take two products each (about 16
 * significant bits for the fp32 factor, fp32 accumulation). Warp w
 * computes rows 16 (w % 4) .., columns 32 (w / 4) .. of each 64 x 64 block.
 * fp16 inputs keep the FFMA kernel. No atomics. */
#include "delta_chunk.cuh"
#include "tc.cuh"

#include <stdlib.h>

/* cuda-delta12: the bf16 prep with a blocked triangular inverse
 * (delta_prep_blk.cu), taken below unless LINATTN_CUDA_DELTA_PREP_BLK = 0
 * (this file's column-inverse kernel then runs, for A/B). */
la_status la__cu_delta_prep_blk(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                                cudaStream_t stream);
int la__cu_delta_prep_blk_on(void);

typedef __nv_bfloat16 dpt_bf;

#define DPT_ALD 72 /* row stride (bf16) of the A-factor part tiles */

/* A 64 x CP tile (row stride CP + 8) of rows < L, columns < C of src (row
 * stride `stride`), 0 elsewhere; 256 threads. */
template <int CP>
__device__ __forceinline__ void dpt_fetch(dpt_bf *dst, const dpt_bf *src, int64_t stride, int L,
                                          int C, bool vec) {
    constexpr int LD = CP + 8, CQ = CP / 8;
    for (int e = threadIdx.x; e < 64 * CQ; e += 256) {
        const int r = e / CQ, c8 = (e - r * CQ) * 8;
        dpt_bf *d = dst + r * LD + c8;
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
__device__ __forceinline__ void dpt_split(float x, dpt_bf &h, dpt_bf &l) {
    h = __float2bfloat16_rn(x);
    l = __float2bfloat16_rn(x - __bfloat162float(h));
}

template <int KP, int VP> static size_t dpt_smem() {
    return (size_t)64 * (KP + 8) * 2 + (size_t)64 * (VP + 8) * 2 + (size_t)4 * 64 * DPT_ALD * 2;
}

/* acc (rows 16 rb .., columns c0 + 8 j, j < 4) += F B[:, c0 ..] over 64 rows
 * of B, F as parts fh, fl ([64][DPT_ALD]), B a [64][LDB] tile. */
template <int LDB>
__device__ __forceinline__ void dpt_prod(float (&acc)[4][4], const dpt_bf *fh, const dpt_bf *fl,
                                         const dpt_bf *B, int c0) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, m8 = lane >> 3, rr = lane & 7;
    const int rb = w & 3;
#pragma unroll
    for (int kt = 0; kt < 4; kt++) {
        const int ao = (16 * rb + (m8 & 1) * 8 + rr) * DPT_ALD + 16 * kt + (m8 >> 1) * 8;
        uint32_t ah[4], al[4];
        la_tc_ldsm4<false>(ah, fh + ao);
        la_tc_ldsm4<false>(al, fl + ao);
#pragma unroll
        for (int jj = 0; jj < 2; jj++) {
            uint32_t b[4];
            la_tc_ldsm4<true>(b, B + (16 * kt + (m8 & 1) * 8 + rr) * LDB + c0 + 16 * jj +
                                     (m8 >> 1) * 8);
            la_tc_mma<dpt_bf>(acc[2 * jj], ah, b[0], b[1]);
            la_tc_mma<dpt_bf>(acc[2 * jj + 1], ah, b[2], b[3]);
            la_tc_mma<dpt_bf>(acc[2 * jj], al, b[0], b[1]);
            la_tc_mma<dpt_bf>(acc[2 * jj + 1], al, b[2], b[3]);
        }
    }
}

template <int KP, int VP> __global__ void __launch_bounds__(256) la_cu_dc_prep_tc(la_cu_dc_args p) {
    extern __shared__ __align__(128) unsigned char dpt_sm[];
    constexpr int LK = KP + 8, LV = VP + 8;
    __shared__ double gam[LA_CU_C];
    __shared__ float bt[LA_CU_C], be[LA_CU_C], rk[LA_CU_C];
    __shared__ float Lo[LA_CU_C][LA_CU_C + 1], A[LA_CU_C][LA_CU_C + 1];
    dpt_bf *const Ks = (dpt_bf *)dpt_sm, *const Vs = Ks + 64 * LK;
    dpt_bf *const Uh = Vs + 64 * LV, *const Ul = Uh + 64 * DPT_ALD;      /* A diag(beta) */
    dpt_bf *const Wh = Ul + 64 * DPT_ALD, *const Wl = Wh + 64 * DPT_ALD; /* A diag(beta b / |k|) */
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int64_t HS = p.HS, H = p.H, K = p.K, V = p.V, hs = blockIdx.y, hq = hs / (HS / H);
    const int L = ch.len, t = threadIdx.x, w = t >> 5, lane = t & 31, g = lane >> 2, q = lane & 3;
    const int m8 = lane >> 3, rr = lane & 7, rb = w & 3, cb = 32 * (w >> 2);
    const int64_t tok0 = ch.tok0, kst = H * K, vst = HS * V;
    const dpt_bf *kc = (const dpt_bf *)p.k + (tok0 * H + hq) * K;
    const dpt_bf *vc = (const dpt_bf *)p.v + (tok0 * HS + hs) * V;
    dpt_fetch<KP>(Ks, kc, kst, L, (int)K, (K & 7) == 0 && ((uintptr_t)p.k & 15) == 0);
    dpt_fetch<VP>(Vs, vc, vst, L, (int)V, (V & 7) == 0 && ((uintptr_t)p.v & 15) == 0);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    la_cu_chunk_gates(gam, p.g, 0.f, tok0, L, HS, (int)hs);
    if (t < LA_CU_C) be[t] = t < L ? p.beta[(tok0 + t) * HS + hs] : 0.f;
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    __syncthreads();
    /* row norms of k, in the order of la_cu_dc_rnorm */
    for (int r = w; r < LA_CU_C; r += 8) {
        float a = 0.f;
        if (p.use_l2 && r < L)
            for (int64_t i = lane; i < K; i += 32) {
                const float y = __bfloat162float(Ks[r * LK + i]);
                a = fmaf(y, y, a);
            }
        for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
        if (lane == 0) rk[r] = p.use_l2 ? 1.f / sqrtf(a + 1e-6f) : 1.f;
    }
    /* every row: W's padding rows r >= L multiply be[r] = 0 by bt[r], and an
     * unwritten bt[r] (NaN or Inf bits left in shared memory) would make 0 * bt NaN */
    if (t < LA_CU_C) bt[t] = t < L ? la_cu_expd(gam[t]) : 0.f;
    /* K K^T on tensor cores (exact inputs) */
    float G[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) G[j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KP / 16; kk++) {
        uint32_t a[4];
        la_tc_ldsm4<false>(a, Ks + (16 * rb + (m8 & 1) * 8 + rr) * LK + 16 * kk + (m8 >> 1) * 8);
#pragma unroll
        for (int jj = 0; jj < 2; jj++) {
            uint32_t b[4];
            la_tc_ldsm4<false>(b, Ks + (cb + 16 * jj + (m8 >> 1) * 8 + rr) * LK + 16 * kk +
                                      (m8 & 1) * 8);
            la_tc_mma<dpt_bf>(G[2 * jj], a, b[0], b[1]);
            la_tc_mma<dpt_bf>(G[2 * jj + 1], a, b[2], b[3]);
        }
    }
    __syncthreads(); /* rk, bt visible */
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int m = 16 * rb + g + 8 * (e >> 1), n = cb + 8 * j + 2 * q + (e & 1);
            Lo[m][n] = (n < m && m < L)
                           ? be[m] * (rk[m] * rk[n] * G[j][e]) * la_cu_expd(gam[m] - gam[n])
                           : 0.f;
        }
    __syncthreads();
    la_cu_dc_inverse(Lo, A,
                     p.AT ? p.AT + ((size_t)blockIdx.x * HS + hs) * LA_CU_C * LA_CU_C : NULL);
    for (int e = t; e < LA_CU_C * LA_CU_C; e += 256) {
        const int m = e >> 6, r = e & 63;
        const float a = A[m][r];
        dpt_split(a * be[r], Uh[m * DPT_ALD + r], Ul[m * DPT_ALD + r]);
        dpt_split(a * ((be[r] * bt[r]) * rk[r]), Wh[m * DPT_ALD + r], Wl[m * DPT_ALD + r]);
    }
    const int64_t K8 = (K + 7) & ~(int64_t)7;
    const int KE = p.Kh ? (int)K8 : (int)K;
    for (int e = t; e < L * KE; e += 256) {
        const int r = e / KE, i = e % KE;
        const float x =
            i < K ? (la_cu_expd(gam[L - 1] - gam[r]) * rk[r]) * __bfloat162float(Ks[r * LK + i])
                  : 0.f;
        if (p.Kd && i < K) p.Kd[((tok0 + r) * HS + hs) * K + i] = x;
        if (p.Kh) {
            dpt_bf h, l;
            dpt_split(x, h, l);
            const int64_t o = ((tok0 + r) * HS + hs) * K8 + i;
            p.Kh[o] = h;
            if (p.Kl) p.Kl[o] = l;
        }
    }
    if (t == 0) p.bL[(int64_t)blockIdx.x * HS + hs] = la_cu_expd(gam[L - 1]);
    __syncthreads(); /* parts visible */
    /* U = (A diag(beta)) V and W = (A diag(beta b / |k|)) K, 64 columns at a time */
    for (int c0 = 0; c0 < VP + KP; c0 += 64) {
        const bool isU = c0 < VP;
        const int cc = isU ? c0 : c0 - VP;
        if (cc >= (isU ? V : K8)) continue;
        float acc[4][4];
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[j][e] = 0.f;
        if (isU)
            dpt_prod<LV>(acc, Uh, Ul, Vs, cc + cb);
        else
            dpt_prod<LK>(acc, Wh, Wl, Ks, cc + cb);
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int m = 16 * rb + g + 8 * (e >> 1);
                const int64_t col = cc + cb + 8 * j + 2 * q + (e & 1);
                if (m >= L) continue;
                const float x = acc[j][e];
                if (isU) {
                    if (col < V) p.U[((tok0 + m) * HS + hs) * V + col] = x;
                } else {
                    if (p.W && col < K) p.W[((tok0 + m) * HS + hs) * K + col] = x;
                    if (p.Wh && col < K8) { /* x is 0 in the padding */
                        dpt_bf h, l;
                        dpt_split(x, h, l);
                        const int64_t o = ((tok0 + m) * HS + hs) * K8 + col;
                        p.Wh[o] = h;
                        if (p.Wl) p.Wl[o] = l;
                    }
                }
            }
    }
}

template <int KP, int VP>
static la_status dpt_launch(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                            cudaStream_t stream) {
    const size_t smem = dpt_smem<KP, VP>();
    LA_CU_TRY(c->op, cudaFuncSetAttribute(la_cu_dc_prep_tc<KP, VP>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    la_cu_dc_prep_tc<KP, VP><<<dim3((unsigned)nchunks, (unsigned)c->HS), 256, smem, stream>>>(p);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}
template <int KP>
static la_status dpt_v(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                       cudaStream_t stream) {
    if (c->V <= 64) return dpt_launch<KP, 64>(c, p, nchunks, stream);
    if (c->V <= 128) return dpt_launch<KP, 128>(c, p, nchunks, stream);
    return dpt_launch<KP, 256>(c, p, nchunks, stream);
}
la_status la__cu_delta_prep_tc(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                               cudaStream_t stream) {
    if (la__cu_delta_prep_blk_on()) return la__cu_delta_prep_blk(c, p, nchunks, stream);
    if (c->K <= 64) return dpt_v<64>(c, p, nchunks, stream);
    if (c->K <= 128) return dpt_v<128>(c, p, nchunks, stream);
    return dpt_v<256>(c, p, nchunks, stream);
}

/* Whether bf16 calls take this kernel: yes unless LINATTN_CUDA_TC = 0 or
 * LINATTN_CUDA_DELTA_TC_PREP = 0 (benchmarking knobs, read once). */
int la__cu_delta_tc_prep(void) {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_TC"), *o = getenv("LINATTN_CUDA_DELTA_TC_PREP");
        mode = !((e && e[0] == '0') || (o && o[0] == '0'));
    }
    return mode;
}
