/* The delta rules' output kernel on tensor cores (bf16 inputs): the same
 *     O = diag(b q_scale) Q S + (scale Q K^T (.) Gamma (.) causal) R
 * as la_cu_dc_out (delta_chunk.cu), S the state before the chunk (hst,
 * fp32) and R the state pass's R (fp32). One CTA of 4 warps per (chunk,
 * value head); warp w owns the chunk's rows 16 w .. 16 w + 15. Q and K are
 * exact in bf16 and go to the tensor cores as copied (16-byte cp.async);
 * S and R are split into bf16 hi + lo in shared memory, P = the masked,
 * gated Q K^T is split in registers (the m16n8 accumulator layout is the
 * A-operand layout of m16n8k16), so every product is hi*hi + lo*hi + hi*lo
 * (about 16 significant bits per fp32 operand; mma.sync m16n8k16, fp32
 * accumulation). l2 norms of q, k rows come from the copied tiles, in the
 * order of la_cu_dc_rnorm. Value columns in blocks of 64. No atomics. fp16
 * inputs keep the FFMA kernel (their hi part would need fp16's range). */
#include "delta_chunk.cuh"
#include "delta_tile.cuh"
#include "tc.cuh"

#include <stdlib.h>
#include <string.h>

typedef __nv_bfloat16 dot_bf;

#define DOT_SLD 72 /* row stride (bf16) of the S and R part tiles ([.][64]) */
#define DOT_NB 8   /* staging rows per thread loaded before any split ((KP + 64) / 8 % 8 == 0) */

/* Shared memory: Q, K tiles [64][KP + 8], S parts [KP][DOT_SLD] x 2, R parts
 * [64][DOT_SLD] x 2 (bf16). */
template <int KP> static size_t dot_smem() {
    return (size_t)2 * 64 * (KP + 8) * 2 + (size_t)2 * KP * DOT_SLD * 2 +
           (size_t)2 * 64 * DOT_SLD * 2;
}

template <int KP> __global__ void __launch_bounds__(128) la_cu_dc_out_tc(la_cu_dc_args p) {
    extern __shared__ __align__(128) unsigned char dot_sm[];
    constexpr int LD = KP + 8;
    __shared__ double gam[LA_CU_C];
    __shared__ float bq[LA_CU_C], rq[LA_CU_C], rk[LA_CU_C];
    dot_bf *const Qs = (dot_bf *)dot_sm, *const Ks = Qs + 64 * LD;
    dot_bf *const Sh = Ks + 64 * LD, *const Sl = Sh + KP * DOT_SLD;
    dot_bf *const Rh = Sl + KP * DOT_SLD, *const Rl = Rh + 64 * DOT_SLD;
    const la_cu_chunk ch = p.chunks[p.cb + blockIdx.x];
    const int64_t HS = p.HS, H = p.H, K = p.K, V = p.V, hs = blockIdx.y, hq = hs / (HS / H);
    const int L = ch.len, t = threadIdx.x, w = t >> 5, lane = t & 31, g = lane >> 2, q = lane & 3;
    const int m8 = lane >> 3, rr = lane & 7;
    const int64_t tok0 = ch.tok0, kst = H * K;
    const dot_bf *qc = (const dot_bf *)p.q + (tok0 * H + hq) * K;
    const dot_bf *kc = (const dot_bf *)p.k + (tok0 * H + hq) * K;
    const bool vec = (K & 7) == 0 && (((uintptr_t)p.q | (uintptr_t)p.k) & 15) == 0;
    la_dt_fetch<KP>(Qs, qc, kst, L, (int)K, vec);
    la_dt_fetch<KP>(Ks, kc, kst, L, (int)K, vec);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    la_cu_chunk_gates(gam, p.g, 0.f, tok0, L, HS, (int)hs);
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    __syncthreads();
    la_dt_rnorm<KP>(rq, Qs, L, (int)K, p.use_l2);
    la_dt_rnorm<KP>(rk, Ks, L, (int)K, p.use_l2);
    __syncthreads();
    if (t < LA_CU_C) bq[t] = t < L ? p.scale * (la_cu_expd(gam[t]) * rq[t]) : 0.f;
    /* Q K^T, rows 16 w .., columns 8 j .. (j < 8) */
    float A[8][4];
    la_dt_xyt<KP / 16>(A, Qs, Ks, LD, w, m8, rr);
    __syncthreads(); /* bq visible */
    /* P (masked, gated, scaled) as A fragments over s: k-step kt covers
     * columns 16 kt .. 16 kt + 15 */
    uint32_t ph[4][4], pl[4][4];
    {
        float P[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int m = 16 * w + g + 8 * (e >> 1), n = 8 * j + 2 * q + (e & 1);
                P[j][e] = (n <= m && m < L)
                              ? p.scale * (rq[m] * rk[n] * A[j][e]) * la_cu_expd(gam[m] - gam[n])
                              : 0.f;
            }
        la_dt_parts(P, ph, pl);
    }
    const float b0 = bq[16 * w + g], b1 = bq[16 * w + g + 8];
    const float *hc = p.hst + ((size_t)(p.cb + blockIdx.x) * HS + hs) * K * V;
    const float *R = p.U + (tok0 * HS + hs) * V;
    dot_bf *o = (dot_bf *)p.o + (tok0 * HS + hs) * V;
    const bool v4 = (V & 3) == 0;
    for (int64_t v0 = 0; v0 < V; v0 += 64) {
        if (v0 > 0) __syncthreads(); /* the previous block's parts are read */
        /* S rows i < K, R rows < L, columns v0 .. v0 + 63 (< V) as parts.
         * Thread t's elements are rows t / 16 + 8 i, columns c4 .. c4 + 3
         * (c4 fixed); DOT_NB rows' loads are issued before any is split
         * (cuda-delta9: one exposed load latency per batch, not per row). */
        const int c4 = (t & 15) * 4, r0 = t >> 4;
        const bool cin = v0 + c4 < V, cv = v4 && cin;
        for (int b = 0; b < (KP + 64) / 8; b += DOT_NB) {
            float4 y[DOT_NB];
#pragma unroll
            for (int u = 0; u < DOT_NB; u++) {
                const int r = r0 + 8 * (b + u);
                const bool isS = r < KP;
                const int rw = isS ? r : r - KP;
                const bool rin = isS ? rw < K : rw < L;
                const float *src = isS ? hc + (int64_t)rw * V + v0 + c4 : R + rw * HS * V + v0 + c4;
                if (cv && rin) {
                    y[u] = __ldg((const float4 *)src);
                } else {
                    y[u].x = (rin && cin) ? src[0] : 0.f;
                    y[u].y = (rin && v0 + c4 + 1 < V) ? src[1] : 0.f;
                    y[u].z = (rin && v0 + c4 + 2 < V) ? src[2] : 0.f;
                    y[u].w = (rin && v0 + c4 + 3 < V) ? src[3] : 0.f;
                }
            }
#pragma unroll
            for (int u = 0; u < DOT_NB; u++) {
                const int r = r0 + 8 * (b + u);
                const bool isS = r < KP;
                const int rw = isS ? r : r - KP;
                uint32_t h0, l0, h1, l1;
                la_cu_bf16_parts(y[u].x, y[u].y, h0, l0);
                la_cu_bf16_parts(y[u].z, y[u].w, h1, l1);
                dot_bf *dh = isS ? Sh + rw * DOT_SLD + c4 : Rh + rw * DOT_SLD + c4;
                dot_bf *dl = isS ? Sl + rw * DOT_SLD + c4 : Rl + rw * DOT_SLD + c4;
                *(uint2 *)dh = make_uint2(h0, h1);
                *(uint2 *)dl = make_uint2(l0, l1);
            }
        }
        __syncthreads();
        float O[8][4], X[8][4]; /* X: the P R product, added after the row scale of Q S */
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) O[j][e] = 0.f, X[j][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KP / 16; kk++) {
            uint32_t a[4];
            la_tc_ldsm4<false>(a, Qs + (16 * w + (m8 & 1) * 8 + rr) * LD + 16 * kk + (m8 >> 1) * 8);
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                const int off = (16 * kk + (m8 & 1) * 8 + rr) * DOT_SLD + 16 * jj + (m8 >> 1) * 8;
                uint32_t bh[4], bl[4];
                la_tc_ldsm4<true>(bh, Sh + off);
                la_tc_ldsm4<true>(bl, Sl + off);
                la_tc_mma<dot_bf>(O[2 * jj], a, bh[0], bh[1]);
                la_tc_mma<dot_bf>(O[2 * jj + 1], a, bh[2], bh[3]);
                la_tc_mma<dot_bf>(X[2 * jj], a, bl[0], bl[1]);
                la_tc_mma<dot_bf>(X[2 * jj + 1], a, bl[2], bl[3]);
            }
        }
#pragma unroll
        for (int j = 0; j < 8; j++) {
            O[j][0] = b0 * (O[j][0] + X[j][0]), O[j][1] = b0 * (O[j][1] + X[j][1]);
            O[j][2] = b1 * (O[j][2] + X[j][2]), O[j][3] = b1 * (O[j][3] + X[j][3]);
#pragma unroll
            for (int e = 0; e < 4; e++) X[j][e] = 0.f;
        }
#pragma unroll
        for (int kt = 0; kt < 4; kt++)
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                const int off = (16 * kt + (m8 & 1) * 8 + rr) * DOT_SLD + 16 * jj + (m8 >> 1) * 8;
                uint32_t bh[4], bl[4];
                la_tc_ldsm4<true>(bh, Rh + off);
                la_tc_ldsm4<true>(bl, Rl + off);
                la_tc_mma<dot_bf>(X[2 * jj], ph[kt], bh[0], bh[1]);
                la_tc_mma<dot_bf>(X[2 * jj + 1], ph[kt], bh[2], bh[3]);
                la_tc_mma<dot_bf>(X[2 * jj], pl[kt], bh[0], bh[1]);
                la_tc_mma<dot_bf>(X[2 * jj + 1], pl[kt], bh[2], bh[3]);
                la_tc_mma<dot_bf>(X[2 * jj], ph[kt], bl[0], bl[1]);
                la_tc_mma<dot_bf>(X[2 * jj + 1], ph[kt], bl[2], bl[3]);
            }
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int m = 16 * w + g + 8 * hf;
                const int64_t col = v0 + 8 * j + 2 * q;
                if (m >= L) continue;
                dot_bf *d = o + (int64_t)m * HS * V + col;
                const float x0 = O[j][2 * hf] + X[j][2 * hf],
                            x1 = O[j][2 * hf + 1] + X[j][2 * hf + 1];
                if (!(V & 1) && col + 1 < V) {
                    *(__nv_bfloat162 *)d = __floats2bfloat162_rn(x0, x1);
                } else {
                    if (col < V) d[0] = __float2bfloat16_rn(x0);
                    if (col + 1 < V) d[1] = __float2bfloat16_rn(x1);
                }
            }
    }
}

/* cuda-dout9: the same O with the work split by value columns, S and R
 * never staged. Warp w takes 16-column blocks cb = w, w + 4, ... and all 64
 * rows (4 m-tiles x 2 n-tiles of m16n8 accumulators). It reads its columns
 * of S (rows < K) and R (rows < L) straight from global memory into
 * registers, 16 rows (one k-step) at a time, D steps ahead of the mma
 * (lane (g, q) reads rows 2q, 2q+1, 2q+8, 2q+9 of the step, columns 2g,
 * 2g+1 as float2: a warp's load covers 4 rows x 64 contiguous bytes) and
 * splits them into bf16 hi + lo B fragments in registers. The two n-tiles
 * are interleaved: n-tile j's column n is the block's column 2n + j, so
 * lane (g, q)'s float2 gives column g of both n-tiles and its accumulators
 * hold the block's columns 4q .. 4q+3 (one 8-byte bf16 store per row). P
 * (masked, gated, scaled Q K^T; cuda-par12: its 10 tiles on or below the
 * diagonal spread over the warps by la_dt_tri_parts, no gate factors formed
 * without gates) is split once into bf16 hi + lo tiles in shared memory
 * that every warp reads by ldmatrix. A warp's last D k-steps load its next
 * block's first D (no pipeline restart between blocks); each step's
 * products are issued accumulator after accumulator (mma.sync is volatile
 * asm, issued in program order), the per-accumulator order unchanged.
 * Products as in la_cu_dc_out_tc: Q Sh + Q Sl, scaled by the row factor
 * b q_scale, then + Ph Rh + Pl Rh + Ph Rl (tiles where P = 0, above the
 * diagonal, skipped), one fp32 accumulator per element, fixed order.
 * Offsets inside S and R are 32-bit (the launcher checks). Row norms by
 * 16-byte shared loads (la_dt_rnorm_v), the gates loaded by 64 threads.
 * cuda-outg13: instantiated with and without gates (G = p.g != NULL,
 * chosen at launch); without, no gate load, sum or factor. */
#define DO2_PLD 72 /* row stride (bf16) of the P part tiles */
template <int KP> static size_t do2_smem() {
    return (size_t)2 * 64 * (KP + 8) * 2 + (size_t)2 * 64 * DO2_PLD * 2;
}

/* k-step s's four float2 of lane (g, q) (column c = block start + 2g):
 * rows 16 s' + 2q + {0, 1, 8, 9} of S (s < KP / 16, s' = s, rows < K, row
 * stride V) or of R (s' = s - KP / 16, rows < L, row stride rst); 0
 * outside. v2: 8-byte loads (V even, aligned, c < V); fs / fr (warp-uniform):
 * S / R steps need no bounds checks (K = KP / L = 64, V % 16 == 0, v2). */
template <int KP>
__device__ __forceinline__ void do2_load(float2 (&y)[4], int s, const float *hc, const float *R,
                                         int rst, int K, int L, int c, int V, bool v2, int q,
                                         bool fs, bool fr) {
    constexpr int KS = KP / 16;
    const bool isS = s < KS;
    const int r0 = 16 * (isS ? s : s - KS) + 2 * q, lim = isS ? K : L;
    const float *base = isS ? hc : R;
    const int st = isS ? V : rst;
    if (isS ? fs : fr) { /* every row in range, every lane's columns too */
#pragma unroll
        for (int i = 0; i < 4; i++)
            y[i] = __ldg((const float2 *)(base + ((r0 + (i & 1) + 8 * (i >> 1)) * st + c)));
        return;
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int r = r0 + (i & 1) + 8 * (i >> 1);
        const float *src = base + (r * st + c);
        if (r < lim && v2) {
            y[i] = __ldg((const float2 *)src);
        } else {
            y[i].x = (r < lim && c < V) ? src[0] : 0.f;
            y[i].y = (r < lim && c + 1 < V) ? src[1] : 0.f;
        }
    }
}

template <int KP, int D, bool G>
__global__ void __launch_bounds__(128, 4) la_cu_dc_out_tc2(la_cu_dc_args p) {
    extern __shared__ __align__(128) unsigned char do2_sm[];
    constexpr int LD = KP + 8, KS = KP / 16, NS = KS + 4;
    static_assert(NS % D == 0, "the next block's step d lands in y[d % D]");
    __shared__ double gam[LA_CU_C];
    __shared__ float gsm[LA_CU_C];
    __shared__ float bq[LA_CU_C], rq[LA_CU_C], rk[LA_CU_C];
    dot_bf *const Qs = (dot_bf *)do2_sm, *const Ks = Qs + 64 * LD;
    dot_bf *const Ph = Ks + 64 * LD, *const Pl = Ph + 64 * DO2_PLD;
    const int64_t HS = p.HS, H = p.H, K = p.K;
    const int64_t bx = blockIdx.x / HS, cid = p.cb + bx, hs = blockIdx.x - bx * HS;
    const int64_t hq = hs / (HS / H);
    const la_cu_chunk ch = p.chunks[cid];
    const int V = (int)p.V, L = ch.len, t = threadIdx.x, w = t >> 5, lane = t & 31;
    const int g = lane >> 2, q = lane & 3, m8 = lane >> 3, rr = lane & 7;
    const int64_t tok0 = ch.tok0, kst = H * K;
    const dot_bf *qc = (const dot_bf *)p.q + (tok0 * H + hq) * K;
    const dot_bf *kc = (const dot_bf *)p.k + (tok0 * H + hq) * K;
    const bool vec = (K & 7) == 0 && (((uintptr_t)p.q | (uintptr_t)p.k) & 15) == 0;
    la_dt_fetch<KP>(Qs, qc, kst, L, (int)K, vec);
    la_dt_fetch<KP>(Ks, kc, kst, L, (int)K, vec);
    la_cu_cp_commit();
    const float *hc = p.hst + ((size_t)cid * HS + hs) * K * V;
    const float *R = p.U + (tok0 * HS + hs) * V;
    const int rst = (int)HS * V;
    const bool al2 = (V & 1) == 0 && (((uintptr_t)p.hst | (uintptr_t)p.U) & 7) == 0;
    const bool ov4 = (V & 3) == 0 && ((uintptr_t)p.o & 7) == 0;
    const int nblk = (V + 15) / 16;
    const bool fs = al2 && (V & 15) == 0 && K == KP, fr = al2 && (V & 15) == 0 && L == 64;
    float2 y[D][4];
    /* the first D k-steps of block cb, in flight during what follows */
    auto prologue = [&](int cb) {
        const int c = 16 * cb + 2 * g;
#pragma unroll
        for (int d = 0; d < D; d++)
            do2_load<KP>(y[d], d, hc, R, rst, (int)K, L, c, V, al2 && c < V, q, fs, fr);
    };
    if (w < nblk) prologue(w);
    if (G) la_dt_gates_load(gsm, p.g, tok0, L, HS, hs);
    la_cu_cp_wait<0>();
    __syncthreads();
    if (G) {
        la_dt_gates_sum(gam, gsm, L, 96); /* (warp 3; visible after the next barrier) */
        if (t >= L && t < LA_CU_C)
            gam[t] = 0.0; /* (rows >= L: read below for masked elements, not used) */
    }
    la_dt_rnorm_v<KP>(rq, Qs, L, p.use_l2);
    la_dt_rnorm_v<KP>(rk, Ks, L, p.use_l2);
    __syncthreads();
    /* without gates the factor e^0 = 1 (exactly) is not formed: the same bits */
    if (t < LA_CU_C) bq[t] = t < L ? p.scale * (G ? la_cu_expd(gam[t]) * rq[t] : rq[t]) : 0.f;
    /* P = masked, gated, scaled Q K^T into Ph, Pl: the 10 tiles on or below
     * the diagonal over the 4 warps (cuda-par12). cuda-outg13: every
     * element's value formed without a branch, the mask applied last (a
     * select of the same value: the same bits, and the exps of a warp's
     * 24 elements can overlap); without gates no e^0 = 1 factor. */
    la_dt_tri_parts<KS, false>(Ph, Pl, DO2_PLD, Qs, Ks, LD, false, [&](int m, int n, float a) {
        const float x = p.scale * (rq[m] * rk[n] * a);
        const float y = G ? x * la_dt_expd_nb(gam[m] - gam[n]) : x;
        return (n <= m && m < L) ? y : 0.f;
    });
    __syncthreads(); /* Ph, Pl, bq visible */
    dot_bf *const o = (dot_bf *)p.o + (tok0 * HS + hs) * V;
    for (int cb = w; cb < nblk; cb += 4) {
        const int c = 16 * cb + 2 * g, cn = c + 64; /* cn: the warp's next block */
        const bool v2 = al2 && c < V, vn = al2 && cn < V, more = cb + 4 < nblk;
        float acc[4][2][4];
#pragma unroll
        for (int mt = 0; mt < 4; mt++)
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[mt][j][e] = 0.f;
#pragma unroll
        for (int s = 0; s < NS; s++) {
            uint32_t bh[2][2], bl[2][2];
            la_cu_bf16_parts(y[s % D][0].x, y[s % D][1].x, bh[0][0], bl[0][0]);
            la_cu_bf16_parts(y[s % D][2].x, y[s % D][3].x, bh[0][1], bl[0][1]);
            la_cu_bf16_parts(y[s % D][0].y, y[s % D][1].y, bh[1][0], bl[1][0]);
            la_cu_bf16_parts(y[s % D][2].y, y[s % D][3].y, bh[1][1], bl[1][1]);
            /* D steps ahead; the last D steps load the next block's first
             * ones (cuda-par12: no pipeline restart between blocks) */
            if (s + D < NS)
                do2_load<KP>(y[s % D], s + D, hc, R, rst, (int)K, L, c, V, v2, q, fs, fr);
            else if (more)
                do2_load<KP>(y[s % D], s + D - NS, hc, R, rst, (int)K, L, cn, V, vn, q, fs, fr);
            /* each accumulator's order is hi then lo (then Pl Rh, Ph Rl),
             * k-steps ascending; the products of a step are issued
             * accumulator after accumulator so that neighbours are
             * independent (mma.sync is volatile asm: program order) */
            if (s < KS) {
                uint32_t a[4][4];
#pragma unroll
                for (int mt = 0; mt < 4; mt++)
                    la_tc_ldsm4<false>(a[mt], Qs + (16 * mt + (m8 & 1) * 8 + rr) * LD + 16 * s +
                                                  (m8 >> 1) * 8);
#pragma unroll
                for (int mt = 0; mt < 4; mt++)
#pragma unroll
                    for (int j = 0; j < 2; j++)
                        la_tc_mma<dot_bf>(acc[mt][j], a[mt], bh[j][0], bh[j][1]);
#pragma unroll
                for (int mt = 0; mt < 4; mt++)
#pragma unroll
                    for (int j = 0; j < 2; j++)
                        la_tc_mma<dot_bf>(acc[mt][j], a[mt], bl[j][0], bl[j][1]);
                if (s == KS - 1)
#pragma unroll
                    for (int mt = 0; mt < 4; mt++) {
                        const float b0 = bq[16 * mt + g], b1 = bq[16 * mt + g + 8];
#pragma unroll
                        for (int j = 0; j < 2; j++) {
                            acc[mt][j][0] *= b0, acc[mt][j][1] *= b0;
                            acc[mt][j][2] *= b1, acc[mt][j][3] *= b1;
                        }
                    }
            } else {
                const int kt = s - KS;
                /* m-tiles kt .. 3 in pairs (fragments of 2 at a time) */
#pragma unroll
                for (int m0 = kt; m0 < 4; m0 += 2) {
                    const int nm = m0 + 1 < 4 ? 2 : 1;
                    uint32_t ah[2][4], al[2][4];
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        if (i >= nm) continue;
                        const int off =
                            (16 * (m0 + i) + (m8 & 1) * 8 + rr) * DO2_PLD + 16 * kt + (m8 >> 1) * 8;
                        la_tc_ldsm4<false>(ah[i], Ph + off);
                        la_tc_ldsm4<false>(al[i], Pl + off);
                    }
#pragma unroll
                    for (int i = 0; i < 2; i++)
#pragma unroll
                        for (int j = 0; j < 2; j++)
                            if (i < nm)
                                la_tc_mma<dot_bf>(acc[m0 + i][j], ah[i], bh[j][0], bh[j][1]);
#pragma unroll
                    for (int i = 0; i < 2; i++)
#pragma unroll
                        for (int j = 0; j < 2; j++)
                            if (i < nm)
                                la_tc_mma<dot_bf>(acc[m0 + i][j], al[i], bh[j][0], bh[j][1]);
#pragma unroll
                    for (int i = 0; i < 2; i++)
#pragma unroll
                        for (int j = 0; j < 2; j++)
                            if (i < nm)
                                la_tc_mma<dot_bf>(acc[m0 + i][j], ah[i], bl[j][0], bl[j][1]);
                }
            }
        }
        /* lane (g, q): rows 16 mt + g (+ 8), columns 4q .. 4q + 3 of the block */
        const int col = 16 * cb + 4 * q;
#pragma unroll
        for (int mt = 0; mt < 4; mt++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int m = 16 * mt + g + 8 * hf;
                if (m >= L) continue;
                const float x[4] = {acc[mt][0][2 * hf], acc[mt][1][2 * hf], acc[mt][0][2 * hf + 1],
                                    acc[mt][1][2 * hf + 1]};
                dot_bf *d = o + ((int64_t)m * HS * V + col);
                if (ov4 && col < V) {
                    uint2 u;
                    __nv_bfloat162 b;
                    b = __floats2bfloat162_rn(x[0], x[1]), u.x = *(const uint32_t *)&b;
                    b = __floats2bfloat162_rn(x[2], x[3]), u.y = *(const uint32_t *)&b;
                    *(uint2 *)d = u;
                } else {
#pragma unroll
                    for (int u = 0; u < 4; u++)
                        if (col + u < V) d[u] = __float2bfloat16_rn(x[u]);
                }
            }
    }
}

template <int KP>
static la_status dot_launch(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                            cudaStream_t stream) {
    const size_t smem = dot_smem<KP>();
    LA_CU_TRY(c->op, cudaFuncSetAttribute(la_cu_dc_out_tc<KP>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    la_cu_dc_out_tc<KP><<<dim3((unsigned)nchunks, (unsigned)c->HS), 128, smem, stream>>>(p);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}

template <int KP, int D>
static la_status do2_launch(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                            cudaStream_t stream) {
    const size_t smem = do2_smem<KP>();
    const int64_t nb = nchunks * c->HS;
    /* (32-bit offsets inside S and R, one CTA per (chunk, value head)) */
    if (nb > 0x7fffffff || 256 * c->V > 0x7fffffff || 64 * c->HS * c->V > 0x7fffffff)
        return dot_launch<KP>(c, p, nchunks, stream);
    /* cuda-outg13: with and without gates instantiated (no per-element
     * test of p.g; measured 5% at GDN for P^T dO, cuda-par12) */
    auto k = p.g ? la_cu_dc_out_tc2<KP, D, true> : la_cu_dc_out_tc2<KP, D, false>;
    LA_CU_TRY(c->op,
              cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    /* (the state pass's carveout: a CTA beside it in the pipelined forward) */
    LA_CU_TRY(c->op, cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout,
                                          (int)cudaSharedmemCarveoutMaxShared));
    k<<<(unsigned)nb, 128, smem, stream>>>(p);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}
template <int KP>
static la_status do2_pick(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                          cudaStream_t stream) {
    /* cuda-dout9: LINATTN_CUDA_DELTA_OUT = old: la_cu_dc_out_tc (for A/B);
     * = d2: two k-steps in flight instead of 4 (read at each launch; six
     * measured slower, H200) */
    const char *e = getenv("LINATTN_CUDA_DELTA_OUT");
    if (e && !strcmp(e, "old")) return dot_launch<KP>(c, p, nchunks, stream);
    if (e && !strcmp(e, "d2")) return do2_launch<KP, 2>(c, p, nchunks, stream);
    return do2_launch<KP, 4>(c, p, nchunks, stream);
}

la_status la__cu_delta_out_tc(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                              cudaStream_t stream) {
    if (c->K <= 64) return do2_pick<64>(c, p, nchunks, stream);
    if (c->K <= 128) return do2_pick<128>(c, p, nchunks, stream);
    return do2_pick<256>(c, p, nchunks, stream);
}

/* Whether bf16 forwards take this kernel: yes unless LINATTN_CUDA_TC = 0
 * (every delta kernel FFMA) or LINATTN_CUDA_DELTA_TC_OUT = 0 (this one
 * FFMA; benchmarking knobs, read once). */
int la__cu_delta_tc_out(void) {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_TC"), *o = getenv("LINATTN_CUDA_DELTA_TC_OUT");
        mode = !((e && e[0] == '0') || (o && o[0] == '0'));
    }
    return mode;
}
