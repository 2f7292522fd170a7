/* The delta rules' state pass on tensor cores (bf16 / fp16 inputs): the same
 * update as la_cu_dc_state (delta_chunk.cu), per chunk of L <= 64 tokens
 *     R = U - W S,   S' = b_L S + Kd^T R,
 * with W, Kd as 16-bit parts written by prep (bf16, row length K8 = K
 * rounded up to 8, zero-padded; NP = 2: hi + lo, NP = 1: hi only) and U, R
 * in fp32. One CTA of 4 warps per (sequence, value head, 16 value columns);
 * warp w keeps the transposed state S^T[16 values][KW keys w*KW..] (KW = K
 * rounded up to 64, over 4) in mma.sync m16n8 accumulators, fp32. The
 * accumulator layout of m16n8 is the A-operand layout of m16n8k16, so S^T
 * and R^T go into the next product from registers (split into bf16 hi (+ lo)
 * there), never through shared memory:
 *   partial R^T_w = S^T[:, keys of w] W^T[keys of w, :]   (16 x 64 tokens)
 *   R^T = U^T - (P_0 + P_1 + P_2 + P_3)     (partials through shared memory,
 *                                            every warp sums them in order)
 *   S^T[:, keys of w] = b_L S^T[...] + R^T Kd[:, keys of w]
 * NP = 2 takes three products per product (hi*hi, lo*hi, hi*lo; about 16
 * significant bits per operand), NP = 1 one (bf16 operands, as fla does).
 * The next chunk's W, Kd and U tiles are copied by 16-byte cp.async while
 * this one computes (NB = 2; one buffer where shared memory is short, K =
 * 256 with NP = 2). Two barriers per chunk (tiles in; partials out). The
 * state before every chunk goes to hst straight from the accumulators.
 * Fixed summation order, no atomics: bitwise identical run to run. */
#include "delta_chunk.cuh"
#include "tc.cuh"

#include <stdlib.h>

typedef __nv_bfloat16 dst_bf;

#define DST_SU 20  /* row stride (floats) of the U tile: 16 columns + 4 */
#define DST_PLD 72 /* row stride (floats) of a partial R^T tile [16][64] */

__device__ __forceinline__ void dst_cp16(void *dst, const void *src, int bytes) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void dst_cp4(void *dst, const void *src, int bytes) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(bytes)
                 : "memory");
}

/* (x, y) as a bf16 pair hi (x in the low half) and the pair of remainders. */
__device__ __forceinline__ void dst_pack(float x, float y, uint32_t &hi, uint32_t &lo) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    const __nv_bfloat162 l =
        __floats2bfloat162_rn(x - __bfloat162float(h.x), y - __bfloat162float(h.y));
    hi = *(const uint32_t *)&h;
    lo = *(const uint32_t *)&l;
}

template <int KW, int NP, int NB> static size_t dst_smem() {
    constexpr int LD = 4 * KW + 8;
    return (size_t)NB * 2 * NP * 64 * LD * 2 + (size_t)NB * 64 * DST_SU * 4 +
           (size_t)2 * 4 * 16 * DST_PLD * 4;
}

template <int KW, int NP, int NB>
__global__ void __launch_bounds__(128, 1) la_cu_dc_state_tc(la_cu_dc_args p) {
    extern __shared__ __align__(128) unsigned char dst_sm[];
    constexpr int KP = 4 * KW, LD = KP + 8, TILE = 64 * LD, NT = KW / 8, KQ = KP / 8;
    dst_bf *const tiles = (dst_bf *)dst_sm;              /* [NB][W parts, Kd parts][64][LD] */
    float *const Us = (float *)(tiles + NB * 2 * NP * TILE); /* [NB][64][DST_SU] */
    float *const Ps = Us + NB * 64 * DST_SU;             /* [2][4 warps][16][DST_PLD] */
    const int t = threadIdx.x, w = t >> 5, lane = t & 31, g = lane >> 2, q = lane & 3;
    const int m8 = lane >> 3, rr = lane & 7, kb = w * KW;
    const int64_t K = p.K, V = p.V, HS = p.HS, K8 = (K + 7) & ~(int64_t)7;
    const int64_t n = blockIdx.x / HS, hs = blockIdx.x % HS, v0 = (int64_t)blockIdx.y * 16;
    const int vc = (int)(V - v0 < 16 ? V - v0 : 16);
    const bool uvec = (V & 3) == 0;
    const la_cu_seq s = p.seqs[n];
    const size_t sbase = ((size_t)n * HS + hs) * K * V;

    /* S^T accumulators: S[j][e] = S^T[v][i], v = g + 8 (e >> 1), i = kb + 8 j + 2 q + (e & 1) */
    float S[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int v = g + 8 * (e >> 1);
            const int64_t i = kb + 8 * j + 2 * q + (e & 1);
            S[j][e] = (p.s0 && i < K && v < vc) ? p.s0[sbase + i * V + v0 + v] : 0.f;
        }

    auto issue = [&](int c, int b) {
        const int64_t tok0 = s.start + (int64_t)c * LA_CU_C, rem = s.len - (int64_t)c * LA_CU_C;
        const int L = (int)(rem < LA_CU_C ? rem : LA_CU_C);
        const int64_t ko = (tok0 * HS + hs) * K8, rs = HS * K8;
        dst_bf *tb = tiles + b * 2 * NP * TILE;
        for (int e = t; e < 64 * KQ; e += 128) {
            const int r = e / KQ, c8 = (e - r * KQ) * 8;
            const bool in = r < L && c8 < K8;
            const int64_t off = in ? ko + r * rs + c8 : 0;
            dst_bf *d = tb + r * LD + c8;
            dst_cp16(d, p.Wh + off, in ? 16 : 0);
            dst_cp16(d + NP * TILE, p.Kh + off, in ? 16 : 0);
            if (NP == 2) {
                dst_cp16(d + TILE, p.Wl + off, in ? 16 : 0);
                dst_cp16(d + 3 * TILE, p.Kl + off, in ? 16 : 0);
            }
        }
        float *ub = Us + b * 64 * DST_SU;
        const float *us = p.U + (tok0 * HS + hs) * V + v0;
        if (uvec) {
            for (int e = t; e < 64 * 4; e += 128) {
                const int r = e >> 2, c4 = (e & 3) * 4;
                const bool in = r < L && c4 < vc;
                dst_cp16(ub + r * DST_SU + c4, in ? us + r * HS * V + c4 : us, in ? 16 : 0);
            }
        } else {
            for (int e = t; e < 64 * 16; e += 128) {
                const int r = e >> 4, cc = e & 15;
                const bool in = r < L && cc < vc;
                dst_cp4(ub + r * DST_SU + cc, in ? us + r * HS * V + cc : us, in ? 4 : 0);
            }
        }
        asm volatile("cp.async.commit_group;\n" ::: "memory");
    };

    if (s.nch > 0) issue(0, 0);
    for (int c = 0; c < s.nch; c++) {
        const int64_t tok0 = s.start + (int64_t)c * LA_CU_C, rem = s.len - (int64_t)c * LA_CU_C;
        const int L = (int)(rem < LA_CU_C ? rem : LA_CU_C);
        const size_t chk = (size_t)s.chunk0 + c;
        const int b = NB == 2 ? (c & 1) : 0;
        const float bl = p.bL[chk * HS + hs];
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        __syncthreads(); /* chunk c's tiles in; every warp is past chunk c - 1 */
        if (NB == 2 && c + 1 < s.nch) issue(c + 1, b ^ 1);
        const dst_bf *const Wt = tiles + b * 2 * NP * TILE, *const Kt = Wt + NP * TILE;
        if (p.hst) {
            float *hc = p.hst + (chk * HS + hs) * K * V + v0;
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int v = g + 8 * (e >> 1);
                    const int64_t i = kb + 8 * j + 2 * q + (e & 1);
                    if (i < K && v < vc) hc[i * V + v] = S[j][e];
                }
        }
        /* partial R^T of this warp's keys: P[j] = tokens 8 j .. 8 j + 7 */
        float P[8][4], Px[8][4]; /* Px: the cross terms lo*hi + hi*lo (NP = 2) */
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) P[j][e] = 0.f, Px[j][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < KW / 16; ks++) {
            uint32_t ah[4], al[4];
            dst_pack(S[2 * ks][0], S[2 * ks][1], ah[0], al[0]);
            dst_pack(S[2 * ks][2], S[2 * ks][3], ah[1], al[1]);
            dst_pack(S[2 * ks + 1][0], S[2 * ks + 1][1], ah[2], al[2]);
            dst_pack(S[2 * ks + 1][2], S[2 * ks + 1][3], ah[3], al[3]);
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                const int off = (16 * jj + (m8 >> 1) * 8 + rr) * LD + kb + 16 * ks + (m8 & 1) * 8;
                uint32_t bh[4];
                la_tc_ldsm4<false>(bh, Wt + off);
                la_tc_mma<dst_bf>(P[2 * jj], ah, bh[0], bh[1]);
                la_tc_mma<dst_bf>(P[2 * jj + 1], ah, bh[2], bh[3]);
                if (NP == 2) {
                    uint32_t bw[4];
                    la_tc_ldsm4<false>(bw, Wt + TILE + off);
                    la_tc_mma<dst_bf>(Px[2 * jj], al, bh[0], bh[1]);
                    la_tc_mma<dst_bf>(Px[2 * jj + 1], al, bh[2], bh[3]);
                    la_tc_mma<dst_bf>(Px[2 * jj], ah, bw[0], bw[1]);
                    la_tc_mma<dst_bf>(Px[2 * jj + 1], ah, bw[2], bw[3]);
                }
            }
        }
        if (NP == 2)
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) P[j][e] += Px[j][e];
        float *const pb = Ps + (c & 1) * 4 * 16 * DST_PLD;
        {
            float *pw = pb + w * 16 * DST_PLD;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                *(float2 *)&pw[g * DST_PLD + 8 * j + 2 * q] = make_float2(P[j][0], P[j][1]);
                *(float2 *)&pw[(g + 8) * DST_PLD + 8 * j + 2 * q] = make_float2(P[j][2], P[j][3]);
            }
        }
        __syncthreads(); /* partials out */
        /* R^T = U^T - (((P0 + P1) + P2) + P3), the same in every warp */
        const float *const Ub = Us + b * 64 * DST_SU;
        float R[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int v = g + 8 * hf, tt = 8 * j + 2 * q, o = v * DST_PLD + tt;
                float2 a = *(const float2 *)&pb[o];
#pragma unroll
                for (int ww = 1; ww < 4; ww++) {
                    const float2 y = *(const float2 *)&pb[ww * 16 * DST_PLD + o];
                    a.x += y.x, a.y += y.y;
                }
                R[j][2 * hf] = Ub[tt * DST_SU + v] - a.x;
                R[j][2 * hf + 1] = Ub[(tt + 1) * DST_SU + v] - a.y;
            }
        /* warp w writes R of tokens 16 w .. 16 w + 15 */
#pragma unroll
        for (int j = 0; j < 8; j++) {
            if ((j >> 1) != w) continue; /* constant indices into R (registers) */
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int v = g + 8 * (e >> 1), tt = 8 * j + 2 * q + (e & 1);
                if (tt < L && v < vc) p.U[((tok0 + tt) * HS + hs) * V + v0 + v] = R[j][e];
            }
        }
        /* S^T = b_L S^T + R^T Kd[:, keys of w] (+ the cross terms, NP = 2) */
        float Sx[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) S[j][e] *= bl, Sx[j][e] = 0.f;
#pragma unroll
        for (int kt = 0; kt < 4; kt++) {
            uint32_t ah[4], al[4];
            dst_pack(R[2 * kt][0], R[2 * kt][1], ah[0], al[0]);
            dst_pack(R[2 * kt][2], R[2 * kt][3], ah[1], al[1]);
            dst_pack(R[2 * kt + 1][0], R[2 * kt + 1][1], ah[2], al[2]);
            dst_pack(R[2 * kt + 1][2], R[2 * kt + 1][3], ah[3], al[3]);
#pragma unroll
            for (int jn = 0; jn < KW / 16; jn++) {
                const int off = (16 * kt + (m8 & 1) * 8 + rr) * LD + kb + 16 * jn + (m8 >> 1) * 8;
                uint32_t bh[4];
                la_tc_ldsm4<true>(bh, Kt + off);
                la_tc_mma<dst_bf>(S[2 * jn], ah, bh[0], bh[1]);
                la_tc_mma<dst_bf>(S[2 * jn + 1], ah, bh[2], bh[3]);
                if (NP == 2) {
                    uint32_t bk[4];
                    la_tc_ldsm4<true>(bk, Kt + TILE + off);
                    la_tc_mma<dst_bf>(Sx[2 * jn], al, bh[0], bh[1]);
                    la_tc_mma<dst_bf>(Sx[2 * jn + 1], al, bh[2], bh[3]);
                    la_tc_mma<dst_bf>(Sx[2 * jn], ah, bk[0], bk[1]);
                    la_tc_mma<dst_bf>(Sx[2 * jn + 1], ah, bk[2], bk[3]);
                }
            }
        }
        if (NP == 2)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) S[j][e] += Sx[j][e];
        if (NB == 1 && c + 1 < s.nch) {
            __syncthreads(); /* buffer 0 read by every warp */
            issue(c + 1, 0);
        }
    }
    if (p.sT)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int v = g + 8 * (e >> 1);
                const int64_t i = kb + 8 * j + 2 * q + (e & 1);
                if (i < K && v < vc) p.sT[sbase + i * V + v0 + v] = S[j][e];
            }
}

template <int KW, int NP, int NB>
static la_status dst_launch(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream) {
    const size_t smem = dst_smem<KW, NP, NB>();
    LA_CU_TRY(c->op, cudaFuncSetAttribute(la_cu_dc_state_tc<KW, NP, NB>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)(c->N * c->HS), (unsigned)((c->V + 15) / 16));
    la_cu_dc_state_tc<KW, NP, NB><<<grid, 128, smem, stream>>>(p);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}
template <int KW, int NP>
static la_status dst_nb(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream) {
    if (dst_smem<KW, NP, 2>() <= (size_t)la__cu_smem_optin(c))
        return dst_launch<KW, NP, 2>(c, p, stream);
    if (dst_smem<KW, NP, 1>() <= (size_t)la__cu_smem_optin(c))
        return dst_launch<KW, NP, 1>(c, p, stream);
    return la__error(LA_ERR_UNSUPPORTED, "%s: K = %lld needs more shared memory than the device has",
                     c->op, (long long)c->K);
}
template <int NP>
static la_status dst_k(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream) {
    if (c->K <= 64) return dst_nb<16, NP>(c, p, stream);
    if (c->K <= 128) return dst_nb<32, NP>(c, p, stream);
    return dst_nb<64, NP>(c, p, stream);
}

la_status la__cu_delta_state_tc(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream) {
    return p.Wl ? dst_k<2>(c, p, stream) : dst_k<1>(c, p, stream);
}

/* LINATTN_CUDA_TC = 0: the fp32 FFMA kernels for every dtype (as in
 * scalar_gate.cu); LINATTN_CUDA_DELTA_TC_PARTS = 1: one bf16 part per
 * operand in the tensor-core state pass (benchmarking knobs, read once). */
int la__cu_delta_tc_parts(size_t elem) {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_TC");
        const char *np = getenv("LINATTN_CUDA_DELTA_TC_PARTS");
        mode = (e && e[0] == '0') ? 0 : (np && np[0] == '1') ? 1 : 2;
    }
    return elem == 2 ? mode : 0;
}
