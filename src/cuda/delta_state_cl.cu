/* The delta rules' tensor-core state pass split over the keys of a 2-CTA
 * cluster (sm_90; cuda-state7, cuda-state8, cuda-gdn12). The same update as
 * la_cu_dc_state_tc (delta_state_tc.cu), per chunk R = U - W S,
 * S' = b_L S + Kd^T R, one cluster of two CTAs per (sequence, value head, 16
 * value columns): CTA r of the cluster owns keys r KC .. r KC + KC - 1
 * (KC = 8 warps of KW = 8 keys, the W product by m16n8k8; KW = 16 for
 * K <= 256) and copies only those columns of the W, Kd part tiles per
 * chunk: half the bytes and half the copy instructions per SM of the
 * one-CTA kernel, on twice the SMs. Per chunk:
 *   partial R^T_w = S^T[:, keys of w] W^T[keys of w, :]   (CTA barrier)
 *   Q_r = ((P_0 + P_1) + P_2) + ...  (the CTA's warps, in warp order; each
 *         thread sums its own R^T slots, keeps them in registers and sends
 *         them to the peer's shared memory by st.async, which counts the
 *         bytes on the peer's mbarrier)
 *   wait on this CTA's mbarrier for the peer's Q
 *   R^T = U^T - (Q_0 + Q_1)  (both CTAs, the same bits; each writes half
 *         of the tokens to global memory)   (CTA barrier)
 *   S^T[:, keys of w] = b_L S^T[...] + R^T Kd[:, keys of w]
 * Q is double-buffered by chunk parity (one mbarrier each): the peer's store
 * into buffer b in chunk c + 2 comes after it received this CTA's Q of chunk
 * c + 1, which this CTA sends only after its reads of buffer b in chunk c.
 * Until cuda-gdn12 the exchange was a cluster barrier (arrive.release /
 * wait.acquire) per chunk: ncu put 21% of the stall samples on it, mostly
 * the memory barrier of the release, which also waits for the next chunk's
 * cp.async copies in flight. The W, Kd, U tiles run in a ring of NB = 3
 * buffers where shared memory allows (K <= 128): chunk c + 2 is issued
 * while the peer's Q is on its way, and no barrier opens the chunk (NB = 2:
 * chunk c + 1 issued after that barrier). 2217 -> 1727 us per pass at the
 * GDN shape (H200, bench/GPU.md). Fixed summation order, no atomics: bitwise
 * identical run to run (not to the one-CTA kernel: its partials are summed
 * in one run of NW * 2 terms). cuda-state7's first versions (64-bit
 * addressing; a 4-warp variant) were removed in cuda-split9 (bench/GPU.md
 * has their numbers). Launched with a cluster dimension of 2
 * (cudaLaunchKernelEx); the body is empty below sm_90, where the host never
 * launches it.
 * cuda-gdn24 (XK, the default for bf16 with K % 8 == 0): the S update takes
 * the keys exact, k itself as one bf16 part, and Kd's row factor
 * e^{gam_L - gam_t} rk_t (rk_t = 1/sqrt(|k_t|^2 + 1e-6) under
 * use_qk_l2norm, 1 otherwise; p.kf, from prep, copied into the U tile's
 * padding column) on R's rows before R is split into hi + lo: two mma per
 * product instead of three (hi*hi, lo*hi, hi*lo of R and Kd's parts), one
 * tile copy less per chunk, 27 KB less shared memory; the global R stays
 * unscaled. GDN 1,65536 H200: the pass 470 -> 443 us per segment, the
 * forward 2.217 -> 2.083 ms (with prep writing no Kd parts), errors against
 * float64 as before (bench/GPU.md). */
#include "delta_state.cuh"
#include "cluster.cuh"
#include "tc.cuh"

#include <stdlib.h>

typedef __nv_bfloat16 dcl_bf;

#define DCL_SU 20  /* row stride (floats) of the U tile: 16 columns + 4 */
#define DCL_PLD 72 /* row stride (floats) of a partial R^T tile [16][64] */
#define DCL_RLD 72 /* row stride (bf16) of the R^T part tiles [16][64] */

/* Shared memory: NB buffers of the W and Kd part tiles ([64][KC + 8] bf16
 * each, this CTA's keys; under XK the W parts and one k tile) and the U
 * tile ([64][DCL_SU] fp32); the warps' partial R^T ([NW][16][DCL_PLD]
 * fp32); the peer's sum Q ([2 chunk
 * parities][2][NW * 32] float2: thread t's two slots at [.][hf][t], which
 * the peer's thread t fills; no padding, so that with K <= 128 one CTA of
 * the bf16 prep or output kernel fits beside this one on an SM, cuda-gdnf19;
 * the lane-contiguous float2 also made the pass faster: 1717 -> 1620 us at
 * GDN 1,65536,HV8,128, H200, same bits);
 * R^T as bf16 hi, lo; two mbarriers. */
template <int NW, int KW, int NP, int NB, bool XK> static size_t dcl_smem() {
    constexpr int LD = NW * KW + 8, NK = XK ? 1 : NP;
    return (size_t)NB * (NP + NK) * 64 * LD * 2 + (size_t)NB * 64 * DCL_SU * 4 +
           (size_t)NW * 16 * DCL_PLD * 4 + (size_t)2 * 2 * NW * 32 * 8 +
           (size_t)2 * 16 * DCL_RLD * 2 + 16;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
/* d += a b, m16n8k8, bf16 operands (a: rows g, g + 8 of the A tile; b: the
 * B fragment of one 8 x 8 tile), fp32 accumulate. */
__device__ __forceinline__ void dcl_mma8(float *d, uint32_t a0, uint32_t a1, uint32_t b) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5}, "
                 "{%6}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(b));
}
#endif

/* cuda-state8: the kernel with a short instruction stream per chunk
 * (bitwise the results of cuda-state7's 64-bit version). Every element
 * offset is 32-bit (the host takes this kernel only where every tensor it
 * touches has fewer than 2^31 elements) and computed once: each thread's
 * copy rows, copy column, hst slots and R slots are fixed for the whole
 * sequence, so a chunk adds c times a constant stride; the column
 * predicates are per-thread constants; the row predicates (r < L) run only
 * on a sequence's last, partial chunk (a separate branch, uniform over the
 * block). Measured (H200, GDN shape, bench/GPU.md cuda-state8): 565 -> 372
 * instructions per warp per chunk but only 4100 -> 3880 cycles per chunk
 * (2371 -> 2231 us per pass): the step is a latency chain (barriers, mma
 * chains, the DSMEM round trip), not issue. */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void dcl_cp16(unsigned d, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void dcl_cp4(unsigned d, const void *src, int bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(bytes)
                 : "memory");
}
#endif

template <int KW, int NP, int NB, bool XK>
__global__ void __launch_bounds__(256, 1) la_cu_dc_state_cl8(la_cu_dc_args p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    static_assert(KW == 8 || KW == 16, "keys per warp");
    extern __shared__ __align__(128) unsigned char dcl_sm[];
    static_assert(!XK || NP == 2, "exact keys with two parts of W");
    constexpr int NW = 8, NTH = 256, KC = NW * KW, LD = KC + 8, TILE = 64 * LD, NT = KW / 8;
    constexpr int NK = XK ? 1 : NP, BUF = (NP + NK) * TILE; /* Kd's parts; one buffer's tiles */
    constexpr int KQ = KC / 8;                      /* 16-byte copies per tile row */
    constexpr int RPI = NTH / KQ, NIT = 64 / RPI;   /* tile rows per copy round, rounds */
    dcl_bf *const tiles = (dcl_bf *)dcl_sm;
    float *const Us = (float *)(tiles + NB * BUF);
    float *const Ps = Us + NB * 64 * DCL_SU;
    float *const Qs = Ps + NW * 16 * DCL_PLD;
    dcl_bf *const Rh = (dcl_bf *)(Qs + 2 * 2 * NTH * 2), *const Rl = Rh + 16 * DCL_RLD;
    /* one mbarrier per Q parity; the peer's Q arrives by st.async */
    const unsigned bar_me = (unsigned)__cvta_generic_to_shared(Rl + 16 * DCL_RLD);
    const int t = threadIdx.x, w = t >> 5, lane = t & 31, g = lane >> 2, q = lane & 3;
    const int m8 = lane >> 3, rr = lane & 7;
    const unsigned rank = la_cl_rank();
    const int kc0 = (int)rank * KC, kbl = w * KW, kb = kc0 + kbl;
    const unsigned K = (unsigned)p.K, V = (unsigned)p.V, HS = (unsigned)p.HS, K8 = (K + 7) & ~7u;
    const unsigned nvb = (V + 15) / 16, ci = blockIdx.x >> 1, nh = ci / nvb;
    const unsigned n = nh / HS, hs = nh % HS, v0 = (ci % nvb) * 16;
    const int vc = (int)(V - v0 < 16 ? V - v0 : 16);
    const bool uvec = (V & 3) == 0;
    const la_cu_seq s = p.seqs[n];
    const unsigned st0 = (unsigned)s.start, HV = HS * V, sbase = (n * HS + hs) * K * V;
    const unsigned qs_me = (unsigned)__cvta_generic_to_shared(Qs);
    const unsigned qs_peer = la_cl_mapa(qs_me, rank ^ 1u), bar_peer = la_cl_mapa(bar_me, rank ^ 1u);
    const int nch = s.nch, lastL = (int)(s.len - (int64_t)(nch - 1) * LA_CU_C);

    /* this thread's slots: S^T[v][i], v = g + 8 (e >> 1), i = kb + 8 j + 2 q + (e & 1) */
    bool sok[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            sok[j][e] = kb + 8 * j + 2 * q + (e & 1) < (int)K && g + 8 * (e >> 1) < vc;
    /* slot (j, e) at so + (8 j + (e & 1)) V + 8 (e >> 1) */
    const unsigned so = (unsigned)(kb + 2 * q) * V + v0 + g;
    float S[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            S[j][e] = (p.s0 && sok[j][e])
                          ? p.s0[sbase + so + (unsigned)(8 * j + (e & 1)) * V + 8 * (e >> 1)]
                          : 0.f;

    /* W, Kd part copies: rows r0 + RPI i, columns c8 .. c8 + 7 of this CTA's keys */
    const int c8 = (t % KQ) * 8, r0 = t / KQ;
    const bool cin = kc0 + c8 < (int)K8;
    const int cby = cin ? 16 : 0;
    const unsigned rs = HS * K8, rstep = cin ? RPI * rs : 0u, wstep = cin ? LA_CU_C * rs : 0u;
    const unsigned w0 = cin ? (st0 * HS + hs) * K8 + kc0 + r0 * rs + c8 : 0u;
    const unsigned tsm = (unsigned)__cvta_generic_to_shared(tiles) + 2u * (r0 * LD + c8);
    /* XK: the key tile from k itself ([tokens][H][K], K % 8 == 0: K8 = K),
     * and Kd's row factor of token t into column 16 of the U tile's row t */
    const unsigned H = (unsigned)p.H, hq = hs / (HS / H), krs = H * K;
    const unsigned krstep = cin ? RPI * krs : 0u, kstep = cin ? LA_CU_C * krs : 0u;
    const unsigned k0 = cin ? (st0 * H + hq) * K + kc0 + r0 * krs + c8 : 0u;
    const dcl_bf *const kx = (const dcl_bf *)p.k;
    const unsigned fsm = (unsigned)__cvta_generic_to_shared(Us) + 4u * (t * DCL_SU + 16);
    const unsigned kfo = (st0 + t) * HS + hs, fstep = LA_CU_C * HS;
    /* U copies: 16 bytes (V % 4 == 0: row t / 4, columns 4 (t % 4) ..) or 4
     * bytes (rows t / 16 + 16 i, column t % 16) */
    const int ur0 = uvec ? t >> 2 : t >> 4, uc = uvec ? (t & 3) * 4 : t & 15;
    const bool ucin = uc < vc;
    const unsigned ustep = ucin ? LA_CU_C * HV : 0u, urstep = ucin ? 16u * HV : 0u;
    const unsigned u0 = ucin ? (st0 * HS + hs) * V + v0 + ur0 * HV + uc : 0u;
    const unsigned usm = (unsigned)__cvta_generic_to_shared(Us) + 4u * (ur0 * DCL_SU + uc);

    auto issue = [&](int c, int b) {
        const unsigned d = tsm + (unsigned)(b * BUF * 2), o = w0 + (unsigned)c * wstep;
        const unsigned du = usm + (unsigned)(b * 64 * DCL_SU * 4), ou = u0 + (unsigned)c * ustep;
        const unsigned ok = k0 + (unsigned)c * kstep;
        const unsigned df = fsm + (unsigned)(b * 64 * DCL_SU * 4), of = kfo + (unsigned)c * fstep;
        if (c + 1 < nch) { /* a full chunk: only the per-thread column predicates */
#pragma unroll
            for (int i = 0; i < NIT; i++) {
                const unsigned di = d + 2u * (i * RPI * LD), oi = o + i * rstep;
                dcl_cp16(di, p.Wh + oi, cby);
                if (XK) dcl_cp16(di + 2 * NP * TILE, kx + (ok + i * krstep), cby);
                else dcl_cp16(di + 2 * NP * TILE, p.Kh + oi, cby);
                if (NP == 2) {
                    dcl_cp16(di + 2 * TILE, p.Wl + oi, cby);
                    if (!XK) dcl_cp16(di + 2 * 3 * TILE, p.Kl + oi, cby);
                }
            }
            if (XK && t < LA_CU_C) dcl_cp4(df, p.kf + of, 4);
            if (uvec)
                dcl_cp16(du, p.U + ou, ucin ? 16 : 0);
            else
#pragma unroll
                for (int i = 0; i < 4; i++)
                    dcl_cp4(du + 4u * (16 * i * DCL_SU), p.U + ou + i * urstep, ucin ? 4 : 0);
        } else { /* the last chunk: rows r >= L zero-filled */
#pragma unroll
            for (int i = 0; i < NIT; i++) {
                const bool in = cin && r0 + RPI * i < lastL;
                const unsigned di = d + 2u * (i * RPI * LD), oi = in ? o + i * rstep : 0u;
                const int by = in ? 16 : 0;
                dcl_cp16(di, p.Wh + oi, by);
                if (XK) dcl_cp16(di + 2 * NP * TILE, kx + (in ? ok + i * krstep : 0u), by);
                else dcl_cp16(di + 2 * NP * TILE, p.Kh + oi, by);
                if (NP == 2) {
                    dcl_cp16(di + 2 * TILE, p.Wl + oi, by);
                    if (!XK) dcl_cp16(di + 2 * 3 * TILE, p.Kl + oi, by);
                }
            }
            if (XK && t < LA_CU_C) dcl_cp4(df, p.kf + (t < lastL ? of : 0u), t < lastL ? 4 : 0);
            if (uvec) {
                const bool in = ucin && ur0 < lastL;
                dcl_cp16(du, p.U + (in ? ou : 0u), in ? 16 : 0);
            } else
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const bool in = ucin && ur0 + 16 * i < lastL;
                    dcl_cp4(du + 4u * (16 * i * DCL_SU), p.U + (in ? ou + i * urstep : 0u),
                            in ? 4 : 0);
                }
        }
        asm volatile("cp.async.commit_group;\n" ::: "memory");
    };

    /* R^T slots of this warp (tokens tt, tt + 1 of 8 w .. 8 w + 7, columns g, g + 8) */
    const int tt = 8 * w + 2 * q;
    const bool mine = (w >> 2) == (int)rank;
    const bool rin0 = g < vc, rin1 = g + 8 < vc;
    const unsigned ro0 = ((st0 + tt) * HS + hs) * V + v0 + g, rstp = LA_CU_C * HV;
    const unsigned ho0 = ((unsigned)s.chunk0 * HS + hs) * K * V + so, hstp = HS * K * V;
    const float *bLp = p.bL + (unsigned)s.chunk0 * HS + hs;

    if (t == 0) la_cl_mbar_init2(bar_me);
    la_cl_sync();
    if (nch > 0) issue(0, 0);
    if (NB == 3) { /* chunk 1 in flight too (an empty group where there is none) */
        if (nch > 1) issue(1, 1);
        else asm volatile("cp.async.commit_group;\n" ::: "memory");
        asm volatile("cp.async.wait_group 1;\n" ::: "memory");
        __syncthreads(); /* chunk 0's tiles in */
    }
    for (int c = 0, b = 0; c < nch; c++, b = NB == 3 ? (b == 2 ? 0 : b + 1) : NB == 2 ? b ^ 1 : 0) {
        const int qb = c & 1;
        const float bl = bLp[(unsigned)c * HS];
        if (NB < 3) {
            asm volatile("cp.async.wait_group 0;\n" ::: "memory");
            __syncthreads(); /* chunk c's tiles in; every warp is past chunk c - 1 */
        }
        if (NB == 2 && c + 1 < nch) issue(c + 1, b ^ 1);
        const dcl_bf *const Wt = tiles + b * BUF, *const Kt = Wt + NP * TILE;
        if (p.hst) {
            float *const hc = p.hst + (ho0 + (unsigned)c * hstp);
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (sok[j][e]) hc[(unsigned)(8 * j + (e & 1)) * V + 8 * (e >> 1)] = S[j][e];
        }
        /* partial R^T of this warp's keys: P[j] = tokens 8 j .. 8 j + 7 */
        float P[8][4], Px[8][4]; /* Px: the cross terms lo*hi + hi*lo (NP = 2) */
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) P[j][e] = 0.f, Px[j][e] = 0.f;
        if (KW == 8) { /* m16n8k8: S^T's one accumulator tile is the A fragment */
            uint32_t ah0, al0, ah1, al1;
            la_cu_bf16_parts(S[0][0], S[0][1], ah0, al0);
            la_cu_bf16_parts(S[0][2], S[0][3], ah1, al1);
#pragma unroll
            for (int jh = 0; jh < 2; jh++) { /* token tiles 4 jh .. 4 jh + 3 */
                const int off = (32 * jh + 8 * m8 + rr) * LD + kbl;
                uint32_t bh[4], bw[4];
                la_tc_ldsm4<false>(bh, Wt + off);
                if (NP == 2) la_tc_ldsm4<false>(bw, Wt + TILE + off);
#pragma unroll
                for (int m = 0; m < 4; m++) {
                    dcl_mma8(P[4 * jh + m], ah0, ah1, bh[m]);
                    if (NP == 2) {
                        dcl_mma8(Px[4 * jh + m], al0, al1, bh[m]);
                        dcl_mma8(Px[4 * jh + m], ah0, ah1, bw[m]);
                    }
                }
            }
        }
        la_dst_rt_partial<KW, NP>(P, Px, S, Wt, LD, TILE, kbl, m8, rr);
        la_dst_rt_store<NP, DCL_PLD>(Ps + w * 16 * DCL_PLD, P, Px, g, q);
        __syncthreads(); /* partials out; every warp is past chunk c - 1 */
        /* Q of this CTA at this thread's R^T slots (columns g, g + 8, tokens
         * tt, tt + 1): the warps' partials summed in warp order, kept in
         * registers and stored into the peer's Qs[qb] by st.async, each with
         * a complete_tx of 8 bytes on the peer's barrier qb */
        float2 qm[2];
        {
            const unsigned bp = bar_peer + 8u * (unsigned)qb;
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int o = (g + 8 * hf) * DCL_PLD + tt;
                float2 a = *(const float2 *)&Ps[o];
#pragma unroll
                for (int ww = 1; ww < NW; ww++) {
                    const float2 y = *(const float2 *)&Ps[ww * 16 * DCL_PLD + o];
                    a.x += y.x, a.y += y.y;
                }
                qm[hf] = a;
                la_cl_st_async2(qs_peer + 8u * (unsigned)((2 * qb + hf) * NTH + t), a, bp);
            }
        }
        {
            /* the peer's Q: this CTA's barrier qb takes one arrival (thread
             * 0, expecting 16 x 64 floats); its phase c >> 1 completes when
             * they are in. The peer stores into Qs[qb] again (chunk c + 2)
             * only after it has this CTA's Q of chunk c + 1, sent after the
             * barrier "R^T parts out" below, which follows every read of
             * Qs[qb] here. */
            const unsigned bq = bar_me + 8u * (unsigned)qb;
            if (t == 0) la_cl_mbar_arm(bq, 16 * 64 * 4);
            /* NB = 3: chunk c + 2 into chunk c - 1's buffer (every warp is
             * past chunk c - 1), while the peer's Q is on its way (issued
             * before the Q sum instead: 1727 -> 1917 us per pass, H200) */
            if (NB == 3) {
                if (c + 2 < nch) issue(c + 2, b == 0 ? 2 : b - 1);
                else asm volatile("cp.async.commit_group;\n" ::: "memory");
            }
            la_cl_mbar_wait(bq, (unsigned)(c >> 1) & 1u);
        }
        /* warp w: R^T of tokens 8 w .. 8 w + 7: U^T - (Q_0 + Q_1); to Rh, Rl,
         * and to global memory (fp32) for the tokens of this rank */
        {
            const float *const Ub = Us + b * 64 * DCL_SU;
            const float2 *const Qp = (const float2 *)Qs + 2 * qb * NTH + t;
            float *const u = p.U + (ro0 + (unsigned)c * rstp);
            const int L = c + 1 < nch ? LA_CU_C : lastL;
            /* XK: R's rows times Kd's row factor for the S update (R itself
             * goes to global memory) */
            const float f0 = XK ? Ub[tt * DCL_SU + 16] : 1.f,
                        f1 = XK ? Ub[(tt + 1) * DCL_SU + 16] : 1.f;
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int v = g + 8 * hf;
                const float2 a = qm[hf], y = Qp[hf * NTH]; /* (Q_0 + Q_1): + commutes */
                const float r0 = Ub[tt * DCL_SU + v] - (a.x + y.x),
                            r1 = Ub[(tt + 1) * DCL_SU + v] - (a.y + y.y);
                uint32_t hi, lo;
                if (XK) la_cu_bf16_parts(r0 * f0, r1 * f1, hi, lo);
                else la_cu_bf16_parts(r0, r1, hi, lo);
                *(uint32_t *)&Rh[v * DCL_RLD + tt] = hi;
                *(uint32_t *)&Rl[v * DCL_RLD + tt] = lo;
                if (mine && (hf ? rin1 : rin0)) {
                    if (L == LA_CU_C) {
                        u[8 * hf] = r0;
                        u[HV + 8 * hf] = r1;
                    } else {
                        if (tt < L) u[8 * hf] = r0;
                        if (tt + 1 < L) u[HV + 8 * hf] = r1;
                    }
                }
            }
        }
        if (NB == 3) asm volatile("cp.async.wait_group 1;\n" ::: "memory");
        __syncthreads(); /* R^T parts out (NB = 3: and chunk c + 1's tiles in) */
        /* S^T = b_L S^T + R^T Kd[:, keys of w] (+ the cross terms, NP = 2) */
        float Sx[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) S[j][e] *= bl, Sx[j][e] = 0.f;
        if (KW == 8) /* Kd of tokens 32 kp .. 32 kp + 31 for two token steps at once */
#pragma unroll
            for (int kp = 0; kp < 2; kp++) {
                const int off = (32 * kp + 8 * m8 + rr) * LD + kbl;
                uint32_t bh[4], bk[4];
                la_tc_ldsm4<true>(bh, Kt + off);
                if (NK == 2) la_tc_ldsm4<true>(bk, Kt + TILE + off);
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int ao =
                        ((m8 & 1) * 8 + rr) * DCL_RLD + 16 * (2 * kp + h) + (m8 >> 1) * 8;
                    uint32_t ah[4], al[4];
                    la_tc_ldsm4<false>(ah, Rh + ao);
                    la_tc_mma<dcl_bf>(S[0], ah, bh[2 * h], bh[2 * h + 1]);
                    if (NP == 2) {
                        la_tc_ldsm4<false>(al, Rl + ao);
                        la_tc_mma<dcl_bf>(Sx[0], al, bh[2 * h], bh[2 * h + 1]);
                        if (NK == 2) la_tc_mma<dcl_bf>(Sx[0], ah, bk[2 * h], bk[2 * h + 1]);
                    }
                }
            }
#pragma unroll
        for (int kt = 0; kt < (KW == 8 ? 0 : 4); kt++) {
            const int ao = ((m8 & 1) * 8 + rr) * DCL_RLD + 16 * kt + (m8 >> 1) * 8;
            uint32_t ah[4], al[4];
            la_tc_ldsm4<false>(ah, Rh + ao);
            if (NP == 2) la_tc_ldsm4<false>(al, Rl + ao);
#pragma unroll
            for (int jn = 0; jn < KW / 16; jn++) {
                const int off = (16 * kt + (m8 & 1) * 8 + rr) * LD + kbl + 16 * jn + (m8 >> 1) * 8;
                uint32_t bh[4];
                la_tc_ldsm4<true>(bh, Kt + off);
                la_tc_mma<dcl_bf>(S[2 * jn], ah, bh[0], bh[1]);
                la_tc_mma<dcl_bf>(S[2 * jn + 1], ah, bh[2], bh[3]);
                if (NP == 2) {
                    la_tc_mma<dcl_bf>(Sx[2 * jn], al, bh[0], bh[1]);
                    la_tc_mma<dcl_bf>(Sx[2 * jn + 1], al, bh[2], bh[3]);
                }
                if (NK == 2) {
                    uint32_t bk[4];
                    la_tc_ldsm4<true>(bk, Kt + TILE + off);
                    la_tc_mma<dcl_bf>(Sx[2 * jn], ah, bk[0], bk[1]);
                    la_tc_mma<dcl_bf>(Sx[2 * jn + 1], ah, bk[2], bk[3]);
                }
            }
        }
        if (NP == 2)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) S[j][e] += Sx[j][e];
        if (NB == 1 && c + 1 < nch) {
            __syncthreads(); /* buffer 0 read by every warp */
            issue(c + 1, 0);
        }
    }
    la_cl_sync(); /* no CTA leaves while the peer's st.async may be in flight */
    if (p.sT)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (sok[j][e])
                    p.sT[sbase + so + (unsigned)(8 * j + (e & 1)) * V + 8 * (e >> 1)] = S[j][e];
#endif
}

/* Launches kern (NTH threads, smem bytes) in clusters of 2 CTAs, two per
 * (sequence, value head, 16 value columns). */
static la_status dcl_go(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                        void (*kern)(la_cu_dc_args), int nth, size_t smem) {
    const unsigned grid = (unsigned)(2 * ((c->V + 15) / 16) * c->N * c->HS);
    /* all of the SM's shared memory, so that a prep or output CTA of the
     * pipelined forward (cuda-gdnf19) can run beside this one */
    LA_CU_TRY(c->op, cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout,
                                          (int)cudaSharedmemCarveoutMaxShared));
    LA_CU_TRY(c->op, la_cl_launch(kern, grid, 2, nth, smem, stream, p));
    return LA_OK;
}
template <int KW, int NP, bool XK>
static la_status dcl_nb(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream) {
    const size_t lim = (size_t)la__cu_smem_optin(c);
    if (dcl_smem<8, KW, NP, 3, XK>() <= lim)
        return dcl_go(c, p, stream, la_cu_dc_state_cl8<KW, NP, 3, XK>, 256,
                      dcl_smem<8, KW, NP, 3, XK>());
    if (dcl_smem<8, KW, NP, 2, XK>() <= lim)
        return dcl_go(c, p, stream, la_cu_dc_state_cl8<KW, NP, 2, XK>, 256,
                      dcl_smem<8, KW, NP, 2, XK>());
    return dcl_go(c, p, stream, la_cu_dc_state_cl8<KW, NP, 1, XK>, 256,
                  dcl_smem<8, KW, NP, 1, XK>());
}
/* Whether the bf16 prep writes Kd's row factor (cuda-gdn24; delta_chunk.cuh) */
int la__cu_delta_xk(const la__cu_call *c) {
    const char *e = getenv("LINATTN_CUDA_DELTA_XK");
    return !(e && e[0] == '0') && c->dtype == LA_DTYPE_BF16 && la__cu_delta_tc_prep() &&
           la__cu_delta_tc_parts(2) == 2;
}

/* Exact keys (cuda-gdn24) where prep wrote Kd's row factor and k can be
 * copied 16 bytes at a time (K % 8 == 0, k 16-byte aligned). */
int la__cu_delta_state_xk(const la__cu_call *c, const la_cu_dc_args &p) {
    return p.kf && p.Wl && (c->K & 7) == 0 && ((uintptr_t)p.k & 15) == 0;
}
template <int KW>
static la_status dcl_np(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream) {
    return la__cu_delta_state_xk(c, p) ? dcl_nb<KW, 2, true>(c, p, stream)
              : p.Wl ? dcl_nb<KW, 2, false>(c, p, stream) : dcl_nb<KW, 1, false>(c, p, stream);
}

/* cuda-state8's kernel takes 32-bit element offsets: every tensor it
 * touches (W, Kd parts [tokens][HS][K8], U [tokens][HS][V], hst
 * [chunks][HS][K][V], s0 / sT [N][HS][K][V]) below 2^31 elements, with a
 * chunk of margin. */
static int dcl_fits32(const la__cu_call *c) {
    const int64_t lim = (int64_t)1 << 31, K8 = (c->K + 7) & ~(int64_t)7;
    const int64_t tok = c->B * c->T + LA_CU_C, nch = tok / LA_CU_C + c->N + 1;
    const int64_t KV = c->K * c->V, KM = K8 > c->V ? K8 : c->V;
    return tok < lim / (c->HS * KM) && nch < lim / (c->HS * KV) && c->N < lim / (c->HS * KV);
}

/* LINATTN_CUDA_DELTA_STATE=old: never the cluster kernel; =cl: also where
 * the grid takes more than one wave (A/B knobs, read once). 0 off, 1 by
 * grid size, 2 always. */
static int dcl_mode(void) {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_DELTA_STATE");
        mode = !e ? 1 : e[0] == 'o' ? 0 : e[0] == 'c' ? 2 : 1;
    }
    return mode;
}

/* The cluster kernel where it pays: 64 < K <= 256 (8 warps of 8 or 16 keys
 * per CTA), compute capability 9+, sizes within 32-bit offsets, and twice
 * the one-CTA kernel's grid still fits one wave (one CTA per SM);
 * elsewhere the one-CTA kernel, which does half the copies per chunk in
 * total. Returns 0 where not taken. */
int la__cu_delta_state_cl_takes(const la__cu_call *c) {
    const int mode = dcl_mode();
    if (!mode || c->K <= 64 || c->K > 256) return 0;
    const int64_t ctas = 2 * ((c->V + 15) / 16) * c->N * c->HS;
    if (mode != 2 && ctas > la__cu_sm_count(c)) return 0;
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device) !=
        cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return major >= 9 && dcl_fits32(c);
}

int la__cu_delta_state_cl(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                          la_status *st) {
    if (!la__cu_delta_state_cl_takes(c)) return 0;
    *st = c->K <= 128 ? dcl_np<8>(c, p, stream) : dcl_np<16>(c, p, stream);
    return 1;
}
