/* The delta rules' prep kernel on tensor cores (bf16 inputs): the same
 * outputs as la_cu_dc_prep (delta_chunk.cu) for a chunk of L <= 64 tokens:
 *   Lo = strictly_lower(diag(beta) K K^T (.) Gamma),  A = (I + Lo)^{-1}
 *   U = A diag(beta) V,  W = A diag(beta b) K,  Kd = diag(e^{gam_L - gam}) K
 * (K row-normalised where asked), plus A^T, b_L, the bf16 parts of W, Kd
 * and Kd's row factor e^{gam_L - gam} / |k| (p.kf) for the tensor-core
 * state pass; fp16 inputs keep the FFMA kernel.
 * cuda-delta12's blocked triangular inverse (cuda-dout9 removed the older
 * column-inverse kernel, delta_prep_tc.cu, and moved its dispatchers here).
 * One CTA of 8 warps per (chunk, value head):
 * - K and V tiles by 16-byte cp.async in two groups (V is waited for only
 *   before U = A diag(beta) V, so its load overlaps the inverse); g and beta
 *   by 64 threads, the chunk's gate prefix sums by thread 0 in double in
 *   token order (as la_cu_chunk_gates), from shared memory.
 * - Lo = strictly_lower(diag(beta) K K^T (.) Gamma) from one tensor-core
 *   product (exact inputs), written into one fp32 64 x 64 tile M that
 *   becomes A = (I + Lo)^{-1} in place, by 16 x 16 blocks (fp32 FFMA):
 *   the four diagonal blocks by forward substitution, one half-warp each
 *   (lane = column, the column in registers), while warps 2..7 write Kd and
 *   its bf16 parts (16-byte stores); then
 *     A10 = -A11 (M10 A00), A32 = -A33 (M32 A22)   (two steps, both at once)
 *     T = M[32:, :32] A[:32, :32],  A[32:, :32] = -A[32:, 32:] T
 *   with P and T parked in M's upper-right 32 x 32 block (zero in A and
 *   never read as A). Each result block overwrites an Lo block that no later
 *   step reads.
 * - U = A diag(beta) V, W = A diag(beta b / |k|) K on tensor cores with the
 *   fp32 factor split into bf16 hi + lo in registers (no part tiles in
 *   shared memory; only the blocks kt <= row block, A being lower
 *   triangular); fp32 pairs stored 8 bytes at a time, the bf16 parts 8
 *   bytes per lane after a lane-pair swap (a quad writes whole 32-byte
 *   sectors; cuda-prep11). A warp takes 64 columns per pass (U: V tile
 *   >= 128; W: K tile 128, 32 at K 256, where 64 spilled once the swap came
 *   in): the A fragments of a k-step made once for them.
 * Shared memory 55 KB at K = V = 128 (the column-inverse kernel: 106 KB), 80 registers:
 * 3 CTAs per SM. The value heads of a chunk are neighbours in the launch
 * order (they share the key tile). No atomics; every sum has a fixed order,
 * so results are bitwise identical run to run. */
#include "delta_chunk.cuh"
#include "delta_tile.cuh"
#include "tc.cuh"

#include <stdlib.h>

typedef __nv_bfloat16 dpb_bf;
#define DPB_MS 72 /* row stride (floats) of the fp32 tile M (Lo, then A) */

template <int KP, int VP> static size_t dpb_smem() {
    return (size_t)64 * (KP + 8) * 2 + (size_t)64 * (VP + 8) * 2 + (size_t)64 * DPB_MS * 4;
}

/* acc (rows 16 rb .., columns c0 + 8 j, j < 4) = (A diag(sc)) B[:, c0 ..],
 * B a [64][LDB] bf16 tile, A (fp32, M) as bf16 hi + lo A-operand fragments
 * made in registers per 16-column block kt; only kt <= rb (A is lower
 * triangular). */
template <int LDB, int NJ>
__device__ __forceinline__ void dpb_prod(float (&acc)[8][4], const float *M, const float *sc,
                                         const dpb_bf *B, int c0, int rb) {
    const int lane = threadIdx.x & 31, m8 = lane >> 3, rr = lane & 7, g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[j][e] = 0.f;
#pragma unroll
    for (int kt = 0; kt < 4; kt++) {
        if (kt > rb) break;
        uint32_t fh[4], fl[4];
        {
            const int k0 = 16 * kt + 2 * q;
            const float2 s0 = *(const float2 *)(sc + k0), s1 = *(const float2 *)(sc + k0 + 8);
            const float *r0 = M + (16 * rb + g) * DPB_MS + k0, *r1 = r0 + 8 * DPB_MS;
            const float2 x0 = *(const float2 *)r0, x1 = *(const float2 *)r1;
            const float2 x2 = *(const float2 *)(r0 + 8), x3 = *(const float2 *)(r1 + 8);
            la_cu_bf16_parts(x0.x * s0.x, x0.y * s0.y, fh[0], fl[0]);
            la_cu_bf16_parts(x1.x * s0.x, x1.y * s0.y, fh[1], fl[1]);
            la_cu_bf16_parts(x2.x * s1.x, x2.y * s1.y, fh[2], fl[2]);
            la_cu_bf16_parts(x3.x * s1.x, x3.y * s1.y, fh[3], fl[3]);
        }
#pragma unroll
        for (int jj = 0; jj < NJ / 2; jj++) {
            uint32_t b[4];
            la_tc_ldsm4<true>(b, B + (16 * kt + (m8 & 1) * 8 + rr) * LDB + c0 + 16 * jj +
                                     (m8 >> 1) * 8);
            la_tc_mma<dpb_bf>(acc[2 * jj], fh, b[0], b[1]);
            la_tc_mma<dpb_bf>(acc[2 * jj + 1], fh, b[2], b[3]);
            la_tc_mma<dpb_bf>(acc[2 * jj], fl, b[0], b[1]);
            la_tc_mma<dpb_bf>(acc[2 * jj + 1], fl, b[2], b[3]);
        }
    }
}

/* flags: 1 K tile by 16-byte copies, 2 V tile likewise, 4 Kd rows as
 * float4 (K % 4 == 0, Kd 16-byte aligned), 8 U rows as float2 (V even),
 * 16 W rows as float2 (K even), 32 grid (HS, chunks). */
template <int KP, int VP>
__global__ void __launch_bounds__(256, 3) la_cu_dc_prep_blk(la_cu_dc_args p, int flags) {
    extern __shared__ __align__(128) unsigned char dpb_sm[];
    constexpr int LK = KP + 8, LV = VP + 8;
    __shared__ double gam[LA_CU_C];
    __shared__ __align__(16) float gr[LA_CU_C], be[LA_CU_C], rk[LA_CU_C], bt[LA_CU_C], sd[LA_CU_C],
        ws[LA_CU_C];
    dpb_bf *const Ks = (dpb_bf *)dpb_sm, *const Vs = Ks + 64 * LK;
    float *const M = (float *)(Vs + 64 * LV);
    /* flags & 32: grid (HS, chunks), the value heads of a chunk neighbours
     * in the launch order (they share the key tile where HS > H); else
     * (chunks, HS) for more than 65535 chunks */
    const bool hx = flags & 32;
    const int64_t cid = p.cb + (hx ? blockIdx.y : blockIdx.x);
    const int64_t HS = p.HS, H = p.H, K = p.K, V = p.V, hs = hx ? blockIdx.x : blockIdx.y;
    const int64_t hq = hs / (HS / H);
    const la_cu_chunk ch = p.chunks[cid];
    const int L = ch.len, t = threadIdx.x, w = t >> 5, lane = t & 31, g = lane >> 2, q = lane & 3;
    const int m8 = lane >> 3, rr = lane & 7, rb = w & 3, cb = 32 * (w >> 2);
    const int64_t tok0 = ch.tok0, kst = H * K, vst = HS * V;
    const int64_t K8 = (K + 7) & ~(int64_t)7;
    la_dt_fetch<KP, 256>(Ks, (const dpb_bf *)p.k + (tok0 * H + hq) * K, kst, L, (int)K, flags & 1);
    la_cu_cp_commit();
    la_dt_fetch<VP, 256>(Vs, (const dpb_bf *)p.v + (tok0 * HS + hs) * V, vst, L, (int)V, flags & 2);
    la_cu_cp_commit();
    if (t < LA_CU_C) {
        be[t] = t < L ? p.beta[(tok0 + t) * HS + hs] : 0.f;
        gr[t] = (t < L && p.g) ? p.g[(tok0 + t) * HS + hs] : 0.f;
    }
    __syncthreads(); /* gr */
    if (t == 0) {    /* as la_cu_chunk_gates: double, token order (8 loads at a time) */
        double acc = 0;
        for (int i0 = 0; i0 < L; i0 += 8) {
            float x[8];
#pragma unroll
            for (int u = 0; u < 8; u++) x[u] = gr[i0 + u];
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (i0 + u < L) {
                    acc += (double)(x[u] + 0.f);
                    gam[i0 + u] = acc;
                }
        }
    }
    la_cu_cp_wait<1>(); /* the K tile */
    __syncthreads();    /* gam, Ks */
    /* row norms of k, in the order of la_cu_dc_rnorm; warp w's eight rows
     * w + 8 u side by side (rows >= L of Ks are 0) */
    if (p.use_l2) {
        float a[8];
#pragma unroll
        for (int u = 0; u < 8; u++) a[u] = 0.f;
        for (int i = lane; i < K; i += 32)
#pragma unroll
            for (int u = 0; u < 8; u++) {
                const float y = __bfloat162float(Ks[(w + 8 * u) * LK + i]);
                a[u] = fmaf(y, y, a[u]);
            }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1)
#pragma unroll
            for (int u = 0; u < 8; u++) a[u] += __shfl_xor_sync(0xffffffffu, a[u], off);
        if (lane == 0)
#pragma unroll
            for (int u = 0; u < 8; u++) rk[w + 8 * u] = 1.f / sqrtf(a[u] + 1e-6f);
    } else if (t < LA_CU_C) {
        rk[t] = 1.f;
    }
    /* every row (rows >= L are 0: W's padding rows multiply be = 0 by bt) */
    if (t < LA_CU_C) bt[t] = t < L ? la_cu_expd(gam[t]) : 0.f;
    if (t == 0) p.bL[(int64_t)cid * HS + hs] = la_cu_expd(gam[L - 1]);
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
            la_tc_mma<dpb_bf>(G[2 * jj], a, b[0], b[1]);
            la_tc_mma<dpb_bf>(G[2 * jj + 1], a, b[2], b[3]);
        }
    }
    __syncthreads(); /* rk, bt */
    if (t < LA_CU_C) {
        sd[t] = t < L ? la_cu_expd(gam[L - 1] - gam[t]) * rk[t] : 0.f;
        if (p.kf && t < L) p.kf[(tok0 + t) * HS + hs] = sd[t];
        ws[t] = (be[t] * bt[t]) * rk[t];
    }
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int m = 16 * rb + g + 8 * h, n = cb + 8 * j + 2 * q;
            float2 x;
            x.x = (n < m && m < L)
                      ? be[m] * (rk[m] * rk[n] * G[j][2 * h]) * la_cu_expd(gam[m] - gam[n])
                      : 0.f;
            x.y = (n + 1 < m && m < L) ? be[m] * (rk[m] * rk[n + 1] * G[j][2 * h + 1]) *
                                             la_cu_expd(gam[m] - gam[n + 1])
                                       : 0.f;
            *(float2 *)(M + m * DPB_MS + n) = x;
        }
    __syncthreads(); /* Lo in M, sd, ws */
    if (w < 2) {
        /* diagonal block b by forward substitution: lane c of the half-warp
         * owns column c, A[i][c] = -sum_{c <= j < i} Lo[i][j] A[j][c] */
        const int b = 2 * w + (lane >> 4), c = lane & 15, o = 16 * b;
        float a[16];
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const float4 *row = (const float4 *)(M + (o + i) * DPB_MS + o);
            float s = 0.f;
#pragma unroll
            for (int j4 = 0; j4 < 4; j4++) {
                if (4 * j4 >= i) break;
                const float4 x = row[j4];
                const float xs[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const int j = 4 * j4 + u;
                    if (j < i && j >= c) s = fmaf(xs[u], a[j], s);
                }
            }
            a[i] = i > c ? -s : (i == c ? 1.f : 0.f);
        }
        __syncwarp();
#pragma unroll
        for (int i = 0; i < 16; i++) M[(o + i) * DPB_MS + o + c] = a[i];
    } else {
        /* Kd = diag(e^{gam_L - gam} / |k|) K as fp32 and bf16 hi + lo, 8
         * columns per thread (Ks is 0 past K, so the parts' padding is 0) */
        const int G8 = (int)(K8 >> 3);
        for (int e = t - 64; e < L * G8; e += 192) {
            const int r = e / G8, c8 = (e - r * G8) * 8;
            const uint4 kv = *(const uint4 *)(Ks + r * LK + c8);
            const float s = sd[r];
            const uint32_t kw[4] = {kv.x, kv.y, kv.z, kv.w};
            float x[8];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float2 f = __bfloat1622float2(*(const __nv_bfloat162 *)&kw[u]);
                x[2 * u] = s * f.x;
                x[2 * u + 1] = s * f.y;
            }
            const int64_t row = (tok0 + r) * HS + hs;
            if (p.Kh) {
                uint32_t hw[4], lw[4];
#pragma unroll
                for (int u = 0; u < 4; u++) la_cu_bf16_parts(x[2 * u], x[2 * u + 1], hw[u], lw[u]);
                *(uint4 *)(p.Kh + row * K8 + c8) = make_uint4(hw[0], hw[1], hw[2], hw[3]);
                if (p.Kl) *(uint4 *)(p.Kl + row * K8 + c8) = make_uint4(lw[0], lw[1], lw[2], lw[3]);
            }
            if (p.Kd) {
                float *d = p.Kd + row * K + c8;
                if (flags & 4) {
                    if (c8 + 4 <= K) *(float4 *)d = make_float4(x[0], x[1], x[2], x[3]);
                    if (c8 + 8 <= K) *(float4 *)(d + 4) = make_float4(x[4], x[5], x[6], x[7]);
                } else {
#pragma unroll
                    for (int u = 0; u < 8; u++)
                        if (c8 + u < K) d[u] = x[u];
                }
            }
        }
    }
    __syncthreads(); /* diagonal blocks of A */
    {                /* P = M_{2s+1,2s} A_{2s,2s} into the scratch block (s, 3) */
        const int s = t >> 7, u = t & 127, i = u >> 3, j = (u & 7) * 2;
        const int r0 = 16 * (2 * s + 1), k0 = 32 * s;
        float p0 = 0.f, p1 = 0.f;
#pragma unroll
        for (int k4 = 0; k4 < 16; k4 += 4) { /* cuda-prep11: the row 4 at a time */
            const float4 m4 = *(const float4 *)(M + (r0 + i) * DPB_MS + k0 + k4);
            const float ms[4] = {m4.x, m4.y, m4.z, m4.w};
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float2 a = *(const float2 *)(M + (k0 + k4 + u) * DPB_MS + k0 + j);
                p0 = fmaf(ms[u], a.x, p0);
                p1 = fmaf(ms[u], a.y, p1);
            }
        }
        *(float2 *)(M + (16 * s + i) * DPB_MS + 48 + j) = make_float2(p0, p1);
    }
    __syncthreads();
    { /* A_{2s+1,2s} = -A_{2s+1,2s+1} P (A_{2s+1,2s+1}[i][k] = 0 for k > i) */
        const int s = t >> 7, u = t & 127, i = u >> 3, j = (u & 7) * 2;
        const int r0 = 16 * (2 * s + 1), k0 = 32 * s, kn = (i | 3) + 1;
        float p0 = 0.f, p1 = 0.f;
#pragma unroll
        for (int k4 = 0; k4 < 16; k4 += 4) { /* kn is a multiple of 4 */
            if (k4 >= kn) break;
            const float4 m4 = *(const float4 *)(M + (r0 + i) * DPB_MS + r0 + k4);
            const float ms[4] = {m4.x, m4.y, m4.z, m4.w};
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float2 a = *(const float2 *)(M + (16 * s + k4 + u) * DPB_MS + 48 + j);
                p0 = fmaf(ms[u], a.x, p0);
                p1 = fmaf(ms[u], a.y, p1);
            }
        }
        *(float2 *)(M + (r0 + i) * DPB_MS + k0 + j) = make_float2(-p0, -p1);
    }
    __syncthreads();
    const int ti = t >> 3, tj = (t & 7) * 4;
    { /* T = M[32:, :32] A[:32, :32] into M[:32, 32:] */
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int k4 = 0; k4 < 32; k4 += 4) {
            const float4 m4 = *(const float4 *)(M + (32 + ti) * DPB_MS + k4);
            const float ms[4] = {m4.x, m4.y, m4.z, m4.w};
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float m = ms[u];
                const float4 a = *(const float4 *)(M + (k4 + u) * DPB_MS + tj);
                acc.x = fmaf(m, a.x, acc.x);
                acc.y = fmaf(m, a.y, acc.y);
                acc.z = fmaf(m, a.z, acc.z);
                acc.w = fmaf(m, a.w, acc.w);
            }
        }
        *(float4 *)(M + ti * DPB_MS + 32 + tj) = acc;
    }
    __syncthreads();
    { /* A[32:, :32] = -A[32:, 32:] T (A[32 + i][32 + k] = 0 for k > i) */
        const int kn = (ti | 3) + 1;
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int k4 = 0; k4 < 32; k4 += 4) { /* kn is a multiple of 4 */
            if (k4 >= kn) break;
            const float4 m4 = *(const float4 *)(M + (32 + ti) * DPB_MS + 32 + k4);
            const float ms[4] = {m4.x, m4.y, m4.z, m4.w};
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float m = ms[u];
                const float4 a = *(const float4 *)(M + (k4 + u) * DPB_MS + 32 + tj);
                acc.x = fmaf(m, a.x, acc.x);
                acc.y = fmaf(m, a.y, acc.y);
                acc.z = fmaf(m, a.z, acc.z);
                acc.w = fmaf(m, a.w, acc.w);
            }
        }
        *(float4 *)(M + (32 + ti) * DPB_MS + tj) = make_float4(-acc.x, -acc.y, -acc.z, -acc.w);
    }
    la_cu_cp_wait<0>(); /* the V tile */
    __syncthreads();    /* A (lower blocks of M), Vs */
    if (p.AT) {         /* A^T for the backward; the upper blocks are 0 */
        float *at = p.AT + ((size_t)cid * HS + hs) * LA_CU_C * LA_CU_C;
        for (int e = t; e < 16 * LA_CU_C; e += 256) {
            const int r = e & 63, m4 = (e >> 6) * 4;
            const float4 x = (m4 >> 4) > (r >> 4) ? make_float4(0.f, 0.f, 0.f, 0.f)
                                                  : *(const float4 *)(M + r * DPB_MS + m4);
            at[(m4 + 0) * 64 + r] = x.x;
            at[(m4 + 1) * 64 + r] = x.y;
            at[(m4 + 2) * 64 + r] = x.z;
            at[(m4 + 3) * 64 + r] = x.w;
        }
    }
    /* U = (A diag(beta)) V, then W = (A diag(beta b / |k|)) K, 64 columns at
     * a time; warp w: rows 16 rb .., columns cu .. (cw ..) of each block */
    /* cuda-prep11: NJ 8-column tiles per warp and pass (the A fragments of a
     * k-step made once for 64 columns where the tile is 128 or more wide) */
    constexpr int NU = VP >= 128 ? 8 : 4, NW = KP == 128 ? 8 : 4;
    float acc[8][4];
    const int cu = 8 * NU * (w >> 2), cw = 8 * NW * (w >> 2);
    for (int cc = 0; cc < VP; cc += 16 * NU) {
        if (cc >= V) break;
        dpb_prod<LV, NU>(acc, M, be, Vs, cc + cu, rb);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int m = 16 * rb + g + 8 * h;
            if (m >= L) continue;
            float *ur = p.U + ((tok0 + m) * HS + hs) * V;
#pragma unroll
            for (int j = 0; j < NU; j++) {
                const int64_t col = cc + cu + 8 * j + 2 * q;
                if (flags & 8) {
                    if (col < V)
                        *(float2 *)(ur + col) = make_float2(acc[j][2 * h], acc[j][2 * h + 1]);
                } else {
                    if (col < V) ur[col] = acc[j][2 * h];
                    if (col + 1 < V) ur[col + 1] = acc[j][2 * h + 1];
                }
            }
        }
    }
    for (int cc = 0; cc < KP; cc += 16 * NW) {
        if (cc >= K8) break;
        dpb_prod<LK, NW>(acc, M, ws, Ks, cc + cw, rb);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int m = 16 * rb + g + 8 * h;
            const int64_t row = (tok0 + m) * HS + hs;
            if (p.Wh) { /* cuda-prep11: the bf16 parts 4 columns (8 bytes) per
                         * lane, a quad's row segment one 32-byte sector: lanes
                         * q, q ^ 1 swap their column pairs of n-tiles j, j + 1
                         * (every lane of the warp takes part; the padding is 0) */
#pragma unroll
                for (int j = 0; j < NW; j += 2) {
                    uint32_t h0, l0, h1, l1;
                    la_cu_bf16_parts(acc[j][2 * h], acc[j][2 * h + 1], h0, l0);
                    la_cu_bf16_parts(acc[j + 1][2 * h], acc[j + 1][2 * h + 1], h1, l1);
                    const bool odd = q & 1;
                    const uint32_t rh = __shfl_xor_sync(0xffffffffu, odd ? h0 : h1, 1);
                    const uint32_t rl = __shfl_xor_sync(0xffffffffu, odd ? l0 : l1, 1);
                    const int64_t col = cc + cw + 8 * j + (odd ? 8 + 2 * (q - 1) : 2 * q);
                    if (m < L && col < K8) {
                        *(uint2 *)(p.Wh + row * K8 + col) =
                            odd ? make_uint2(rh, h1) : make_uint2(h0, rh);
                        if (p.Wl)
                            *(uint2 *)(p.Wl + row * K8 + col) =
                                odd ? make_uint2(rl, l1) : make_uint2(l0, rl);
                    }
                }
            }
            if (m >= L || !p.W) continue;
#pragma unroll
            for (int j = 0; j < NW; j++) {
                const int64_t col = cc + cw + 8 * j + 2 * q;
                const float x0 = acc[j][2 * h], x1 = acc[j][2 * h + 1];
                {
                    float *wr = p.W + row * K;
                    if (flags & 16) {
                        if (col < K) *(float2 *)(wr + col) = make_float2(x0, x1);
                    } else {
                        if (col < K) wr[col] = x0;
                        if (col + 1 < K) wr[col + 1] = x1;
                    }
                }
            }
        }
    }
}

template <int KP, int VP>
static la_status dpb_launch(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                            cudaStream_t stream) {
    const size_t smem = dpb_smem<KP, VP>();
    const auto al = [](const void *x, uintptr_t n) { return ((uintptr_t)x & (n - 1)) == 0; };
    const int flags =
        ((c->K & 7) == 0 && al(p.k, 16) ? 1 : 0) | ((c->V & 7) == 0 && al(p.v, 16) ? 2 : 0) |
        ((c->K & 3) == 0 && al(p.Kd, 16) ? 4 : 0) | ((c->V & 1) == 0 && al(p.U, 8) ? 8 : 0) |
        ((c->K & 1) == 0 && al(p.W, 8) ? 16 : 0) | (nchunks <= 65535 ? 32 : 0);
    if (!al(p.Kh, 16) || !al(p.Kl, 16) || !al(p.Wh, 8) || !al(p.Wl, 8))
        return la__error(LA_ERR_INTERNAL, "%s: bf16 part buffers not aligned", c->op);
    LA_CU_TRY(c->op, cudaFuncSetAttribute(la_cu_dc_prep_blk<KP, VP>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    LA_CU_TRY(c->op, cudaFuncSetAttribute(la_cu_dc_prep_blk<KP, VP>,
                                          cudaFuncAttributePreferredSharedMemoryCarveout,
                                          (int)cudaSharedmemCarveoutMaxShared));
    la_cu_dc_prep_blk<KP, VP><<<(flags & 32) ? dim3((unsigned)c->HS, (unsigned)nchunks)
                                             : dim3((unsigned)nchunks, (unsigned)c->HS),
                                256, smem, stream>>>(p, flags);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}
template <int KP>
static la_status dpb_v(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                       cudaStream_t stream) {
    /* 80 registers: 3 CTAs per SM (shared memory would allow 4 at K, V <=
     * 128; the 64-register build spilled and was not faster: 502 vs 488 us
     * at the GDN shape, H200) */
    if (c->V <= 64) return dpb_launch<KP, 64>(c, p, nchunks, stream);
    if (c->V <= 128) return dpb_launch<KP, 128>(c, p, nchunks, stream);
    return dpb_launch<KP, 256>(c, p, nchunks, stream);
}
/* la_cu_dc_prep_blk for bf16 inputs (delta_chunk.cu calls this where
 * la__cu_delta_tc_prep says so). */
la_status la__cu_delta_prep_tc(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                               cudaStream_t stream) {
    if (c->K <= 64) return dpb_v<64>(c, p, nchunks, stream);
    if (c->K <= 128) return dpb_v<128>(c, p, nchunks, stream);
    return dpb_v<256>(c, p, nchunks, stream);
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
