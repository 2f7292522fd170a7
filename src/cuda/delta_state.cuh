/* Pieces shared by the delta rule's chunk state passes (delta_state_tc.cu,
 * the one-CTA / wide kernel, and delta_state_cl.cu, the two-CTA cluster
 * kernel): a warp's partial R^T = S^T[its keys] W^T over a chunk's 64
 * tokens, with S in fp32 split into bf16 hi / lo parts. */
#ifndef LA_CUDA_DELTA_STATE_CUH
#define LA_CUDA_DELTA_STATE_CUH

#include "delta_chunk.cuh"
#include "tc.cuh"

/* P[j] += S^T W^T for tokens 8 j .. 8 j + 7 (m16n8k16, keys k0 .. k0 + KW - 1
 * of the W part tiles Wt (hi) and Wt + TILE (lo, NP = 2) with row stride LD),
 * S[2 ks], S[2 ks + 1] this thread's accumulator fragments of the keys; Px
 * gathers the cross terms lo*hi + hi*lo (NP = 2). m8 = lane >> 3, rr = lane & 7. */
template <int KW, int NP, int NS>
__device__ __forceinline__ void la_dst_rt_partial(float (&P)[8][4], float (&Px)[8][4],
                                                  const float (&S)[NS][4],
                                                  const __nv_bfloat16 *Wt, int LD, int TILE,
                                                  int k0, int m8, int rr) {
#pragma unroll
    for (int ks = 0; ks < KW / 16; ks++) {
        uint32_t ah[4], al[4];
        la_cu_bf16_parts(S[2 * ks][0], S[2 * ks][1], ah[0], al[0]);
        la_cu_bf16_parts(S[2 * ks][2], S[2 * ks][3], ah[1], al[1]);
        la_cu_bf16_parts(S[2 * ks + 1][0], S[2 * ks + 1][1], ah[2], al[2]);
        la_cu_bf16_parts(S[2 * ks + 1][2], S[2 * ks + 1][3], ah[3], al[3]);
#pragma unroll
        for (int jj = 0; jj < 4; jj++) {
            const int off = (16 * jj + (m8 >> 1) * 8 + rr) * LD + k0 + 16 * ks + (m8 & 1) * 8;
            uint32_t bh[4];
            la_tc_ldsm4<false>(bh, Wt + off);
            la_tc_mma<__nv_bfloat16>(P[2 * jj], ah, bh[0], bh[1]);
            la_tc_mma<__nv_bfloat16>(P[2 * jj + 1], ah, bh[2], bh[3]);
            if (NP == 2) {
                uint32_t bw[4];
                la_tc_ldsm4<false>(bw, Wt + TILE + off);
                la_tc_mma<__nv_bfloat16>(Px[2 * jj], al, bh[0], bh[1]);
                la_tc_mma<__nv_bfloat16>(Px[2 * jj + 1], al, bh[2], bh[3]);
                la_tc_mma<__nv_bfloat16>(Px[2 * jj], ah, bw[0], bw[1]);
                la_tc_mma<__nv_bfloat16>(Px[2 * jj + 1], ah, bw[2], bw[3]);
            }
        }
    }
}

/* The warp's partial (P + Px) into its [16][PLD] fp32 tile pw: rows g, g + 8
 * (g = lane >> 2), columns 8 j + 2 q (q = lane & 3). */
template <int NP, int PLD>
__device__ __forceinline__ void la_dst_rt_store(float *pw, float (&P)[8][4], const float (&Px)[8][4],
                                                int g, int q) {
#pragma unroll
    for (int j = 0; j < 8; j++) {
        if (NP == 2)
#pragma unroll
            for (int e = 0; e < 4; e++) P[j][e] += Px[j][e];
        *(float2 *)&pw[g * PLD + 8 * j + 2 * q] = make_float2(P[j][0], P[j][1]);
        *(float2 *)&pw[(g + 8) * PLD + 8 * j + 2 * q] = make_float2(P[j][2], P[j][3]);
    }
}

#endif
