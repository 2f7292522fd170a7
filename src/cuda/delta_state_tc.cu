/* The delta rules' state pass on tensor cores (bf16 / fp16 inputs): the same
 * update as la_cu_dc_state (delta_chunk.cu), per chunk of L <= 64 tokens
 *     R = U - W S,   S' = b_L S + Kd^T R,
 * with W, Kd as 16-bit parts written by prep (bf16, row length K8 = K
 * rounded up to 8, zero-padded; NP = 2: hi + lo, NP = 1: hi only) and U, R
 * in fp32. One CTA of NW warps per (sequence, value head, 16 value
 * columns); warp w keeps the transposed state S^T[16 values][KW keys from
 * w KW] (NW KW = K rounded up to 64) in mma.sync m16n8 accumulators, fp32.
 * The accumulator layout of m16n8 is the A-operand layout of m16n8k16, so
 * S^T goes into the next product from registers (split into bf16 hi (+ lo)
 * there):
 *   partial R^T_w = S^T[:, keys of w] W^T[keys of w, :]   (16 x 64 tokens)
 *   R^T = U^T - (P_0 + ... + P_{NW-1})   (partials through shared memory,
 *         summed in warp order; warp w sums 64 / NW tokens, writes them to
 *         global memory (fp32) and as bf16 parts to shared memory)
 *   S^T[:, keys of w] = b_L S^T[...] + R^T Kd[:, keys of w]
 * NP = 2 takes three products per product (hi*hi, lo*hi, hi*lo, the cross
 * terms in their own accumulators; about 16 significant bits per operand),
 * NP = 1 one (bf16 operands, as fla does; LINATTN_CUDA_DELTA_TC_PARTS=1,
 * outside the 16-bit error bounds of the tests: bench/GPU.md). The next
 * chunk's W, Kd and U tiles are copied by 16-byte cp.async while this one
 * computes (NB = 2; one buffer where shared memory is short, K = 256 with
 * NP = 2). Three barriers per chunk (tiles in; partials out; R parts out).
 * The state before every chunk goes to hst straight from the accumulators.
 * The value blocks of a head are neighbours in the launch order (they read
 * the same tiles, from L2). Fixed summation order, no atomics: bitwise
 * identical run to run. */
#include "delta_state.cuh"

#include <stdlib.h>

typedef __nv_bfloat16 dst_bf;

#define DST_SU 20  /* row stride (floats) of the U tile: 16 columns + 4 */
#define DST_PLD 72 /* row stride (floats) of a partial R^T tile [16][64] */
#define DST_RLD 72 /* row stride (bf16) of the R^T part tiles [16][64] */

/* Shared memory: NB buffers of the W and Kd part tiles ([64][KP + 8] bf16
 * each) and the U tile ([64][DST_SU] fp32); the warps' partial R^T
 * ([NW][16][DST_PLD] fp32); R^T as bf16 hi, lo ([16][DST_RLD] each). */
template <int NW, int KW, int NP, int NB, int PLD = DST_PLD, int MT = 1, bool XK = false>
static size_t dst_smem() {
    constexpr int LD = NW * KW + 8, NK = XK ? 1 : NP;
    return (size_t)NB * (NP + NK) * 64 * LD * 2 + (MT == 1 ? (size_t)NB * 64 * DST_SU * 4 : 0) +
           (size_t)MT * NW * 16 * PLD * 4 + (size_t)MT * 2 * 16 * DST_RLD * 2;
}

/* NW warps, warp w owns keys w KW .. w KW + KW - 1 (KW a multiple of 16).
 * cuda-split9 (delta_state_split.cu): p.seqs may be the segments of the
 * sequences (then p.s0 holds each segment's start state and p.sT is NULL);
 * MODE = 1 is the split's local pass: no R (U is only read) and no hst;
 * after the ceil(V / 16) value blocks of a head come ceil(K / 16)
 * transition blocks, whose columns start as the identity's and read U = 0,
 * so the same step computes A_c M with A_c = b_L I - Kd^T W; the end state
 * of value blocks goes to p.sT ([segments][HS][K][V]), of transition blocks
 * to the transition M ([segments][HS][K][K], right after). MINB = 2: two
 * CTAs per SM (one buffer, partial rows of 68 floats).
 * cuda-state11: MT = 2 (MODE 0 only) gives a CTA 32 value columns: two
 * groups of NW warps, group m owning columns 16 m .. 16 m + 15 of the block
 * with the one-CTA kernel's steps and summation order unchanged (the same
 * bits), sharing one copy of the W, Kd tiles per chunk (half the copies per
 * head); U is read from global memory into registers at the top of each
 * chunk instead of through shared memory (the tiles, partials and R parts
 * of two groups fill the rest).
 * cuda-gdn24: XK (MODE 0, two parts) takes the keys exact, k itself, and
 * Kd's row factor p.kf on R's rows before they are split into parts, as the
 * cluster kernel does (delta_state_cl.cu). */
template <int NW, int KW, int NP, int NB, int MODE = 0, int MINB = 1, int MT = 1, bool XK = false>
__global__ void __launch_bounds__(NW * 32 * MT, MINB) la_cu_dc_state_tc(la_cu_dc_args p) {
    static_assert(MT == 1 || (MT == 2 && MODE == 0 && MINB == 1 && NW <= 8), "MT");
    static_assert(!XK || (MODE == 0 && NP == 2), "exact keys: MODE 0, two parts of W");
    extern __shared__ __align__(128) unsigned char dst_sm[];
    constexpr int NTH = NW * 32 * MT, KP = NW * KW, LD = KP + 8, TILE = 64 * LD, NT = KW / 8;
    constexpr int PLD = MINB == 2 ? 68 : DST_PLD; /* partial row stride */
    constexpr int KQ = KP / 8, JW = 8 / NW;       /* R^T column tiles (8 tokens) reduced per warp */
    constexpr bool UR = MT > 1;                   /* U through registers */
    constexpr int NK = XK ? 1 : NP, BUF = (NP + NK) * TILE; /* Kd's parts; one buffer's tiles */
    dst_bf *const tiles = (dst_bf *)dst_sm;       /* [NB][W, Kd parts][64][LD] */
    float *const Us = (float *)(tiles + NB * BUF); /* [NB][64][DST_SU] (MT = 1) */
    const int t = threadIdx.x, w = MT == 1 ? t >> 5 : (t >> 5) % NW, lane = t & 31;
    const int mt = MT == 1 ? 0 : (t >> 5) / NW; /* constant 0 for MT = 1 (same code as before) */
    const int g = lane >> 2, q = lane & 3;
    /* group mt's partials [NW][16][PLD] and R^T parts */
    float *const Ps = Us + (UR ? 0 : NB * 64 * DST_SU) + mt * NW * 16 * PLD;
    dst_bf *const Rh = (dst_bf *)(Us + (UR ? 0 : NB * 64 * DST_SU) + MT * NW * 16 * PLD) +
                       mt * 2 * 16 * DST_RLD,
                  *const Rl = Rh + 16 * DST_RLD;
    const int m8 = lane >> 3, rr = lane & 7, kb = w * KW;
    const int64_t K = p.K, V = p.V, HS = p.HS, K8 = (K + 7) & ~(int64_t)7;
    /* value blocks of one head are neighbours in the launch order (they
     * share the W, Kd tiles in L2) */
    const int64_t nvb = (V + 16 * MT - 1) / (16 * MT), nvt = nvb + (MODE ? (K + 15) / 16 : 0);
    const int64_t nh = blockIdx.x / nvt, jb = blockIdx.x % nvt;
    const bool tr = MODE && jb >= nvb; /* a transition block (MODE 1) */
    const int64_t VW = tr ? K : V;     /* columns of the block's matrix */
    const int64_t n = nh / HS, hs = nh % HS, v0 = (tr ? jb - nvb : jb) * 16 * MT + 16 * mt;
    const int vc = (int)(VW - v0 < 16 ? VW - v0 : 16);
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
            S[j][e] = tr                          ? (i == v0 + v && v < vc ? 1.f : 0.f)
                      : (p.s0 && i < K && v < vc) ? p.s0[sbase + i * V + v0 + v]
                                                  : 0.f;
        }

    auto issue = [&](int c, int b) {
        const int64_t tok0 = s.start + (int64_t)c * LA_CU_C, rem = s.len - (int64_t)c * LA_CU_C;
        const int L = (int)(rem < LA_CU_C ? rem : LA_CU_C);
        const int64_t ko = (tok0 * HS + hs) * K8, rs = HS * K8;
        /* XK: k's rows ([tokens][H][K], K % 8 == 0) */
        const dst_bf *const kx = (const dst_bf *)p.k + (tok0 * p.H + hs / (HS / p.H)) * K;
        dst_bf *tb = tiles + b * BUF;
        for (int e = t; e < 64 * KQ; e += NTH) {
            const int r = e / KQ, c8 = (e - r * KQ) * 8;
            const bool in = r < L && c8 < K8;
            const int64_t off = in ? ko + r * rs + c8 : 0;
            dst_bf *d = tb + r * LD + c8;
            la_cu_cpb16(d, p.Wh + off, in ? 16 : 0);
            if (XK) la_cu_cpb16(d + NP * TILE, in ? kx + r * p.H * K + c8 : kx, in ? 16 : 0);
            else la_cu_cpb16(d + NP * TILE, p.Kh + off, in ? 16 : 0);
            if (NP == 2) {
                la_cu_cpb16(d + TILE, p.Wl + off, in ? 16 : 0);
                if (!XK) la_cu_cpb16(d + 3 * TILE, p.Kl + off, in ? 16 : 0);
            }
        }
        float *ub = Us + b * 64 * DST_SU;
        const float *us = p.U + (tok0 * HS + hs) * V + (tr ? 0 : v0);
        if (UR) {
        } else if (uvec) {
            for (int e = t; e < 64 * 4; e += NTH) {
                const int r = e >> 2, c4 = (e & 3) * 4;
                const bool in = !tr && r < L && c4 < vc;
                la_cu_cpb16(ub + r * DST_SU + c4, in ? us + r * HS * V + c4 : us, in ? 16 : 0);
            }
        } else {
            for (int e = t; e < 64 * 16; e += NTH) {
                const int r = e >> 4, cc = e & 15;
                const bool in = !tr && r < L && cc < vc;
                la_cu_cpb4(ub + r * DST_SU + cc, in ? us + r * HS * V + cc : us, in ? 4 : 0);
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
        float ur[JW][2][2]; /* MT = 2: U^T of this thread's R slots (0 outside) */
        float fk[JW][2];    /* XK: Kd's row factors of this thread's R slots */
        if (XK)
#pragma unroll
            for (int jw = 0; jw < JW; jw++) {
                const int tt = 8 * (JW * w + jw) + 2 * q;
                const float *f = p.kf + (tok0 + tt) * HS + hs;
                fk[jw][0] = tt < L ? f[0] : 0.f;
                fk[jw][1] = tt + 1 < L ? f[HS] : 0.f;
            }
        if (UR)
#pragma unroll
            for (int jw = 0; jw < JW; jw++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const int v = g + 8 * hf, tt = 8 * (JW * w + jw) + 2 * q;
                    const float *u = p.U + ((tok0 + tt) * HS + hs) * V + v0 + v;
                    ur[jw][hf][0] = v < vc && tt < L ? u[0] : 0.f;
                    ur[jw][hf][1] = v < vc && tt + 1 < L ? u[HS * V] : 0.f;
                }
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        __syncthreads(); /* chunk c's tiles in; every warp is past chunk c - 1 */
        if (NB == 2 && c + 1 < s.nch) issue(c + 1, b ^ 1);
        const dst_bf *const Wt = tiles + b * BUF, *const Kt = Wt + NP * TILE;
        if (!MODE && p.hst) {
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
        la_dst_rt_partial<KW, NP>(P, Px, S, Wt, LD, TILE, kb, m8, rr);
        la_dst_rt_store<NP, PLD>(Ps + w * 16 * PLD, P, Px, g, q);
        __syncthreads(); /* partials out */
        /* warp w: R^T of tokens 8 j .. 8 j + 7, j = JW w ..: U^T minus the
         * partials summed in warp order; to global (fp32) and to Rh, Rl */
        {
            const float *const Ub = Us + b * 64 * DST_SU;
#pragma unroll
            for (int jw = 0; jw < JW; jw++) {
                const int j = JW * w + jw;
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const int v = g + 8 * hf, tt = 8 * j + 2 * q, o = v * PLD + tt;
                    float2 a = *(const float2 *)&Ps[o];
#pragma unroll
                    for (int ww = 1; ww < NW; ww++) {
                        const float2 y = *(const float2 *)&Ps[ww * 16 * PLD + o];
                        a.x += y.x, a.y += y.y;
                    }
                    const float r0 = (UR ? ur[jw][hf][0] : Ub[tt * DST_SU + v]) - a.x,
                                r1 = (UR ? ur[jw][hf][1] : Ub[(tt + 1) * DST_SU + v]) - a.y;
                    uint32_t hi, lo;
                    if (XK) la_cu_bf16_parts(r0 * fk[jw][0], r1 * fk[jw][1], hi, lo);
                    else la_cu_bf16_parts(r0, r1, hi, lo);
                    *(uint32_t *)&Rh[v * DST_RLD + tt] = hi;
                    *(uint32_t *)&Rl[v * DST_RLD + tt] = lo;
                    if (!MODE && v < vc) {
                        float *u = p.U + ((tok0 + tt) * HS + hs) * V + v0 + v;
                        if (tt < L) u[0] = r0;
                        if (tt + 1 < L) u[HS * V] = r1;
                    }
                }
            }
        }
        __syncthreads(); /* R^T parts out */
        /* S^T = b_L S^T + R^T Kd[:, keys of w] (+ the cross terms, NP = 2) */
        float Sx[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) S[j][e] *= bl, Sx[j][e] = 0.f;
#pragma unroll
        for (int kt = 0; kt < 4; kt++) {
            const int ao = ((m8 & 1) * 8 + rr) * DST_RLD + 16 * kt + (m8 >> 1) * 8;
            uint32_t ah[4], al[4];
            la_tc_ldsm4<false>(ah, Rh + ao);
            if (NP == 2) la_tc_ldsm4<false>(al, Rl + ao);
#pragma unroll
            for (int jn = 0; jn < KW / 16; jn++) {
                const int off = (16 * kt + (m8 & 1) * 8 + rr) * LD + kb + 16 * jn + (m8 >> 1) * 8;
                uint32_t bh[4];
                la_tc_ldsm4<true>(bh, Kt + off);
                la_tc_mma<dst_bf>(S[2 * jn], ah, bh[0], bh[1]);
                la_tc_mma<dst_bf>(S[2 * jn + 1], ah, bh[2], bh[3]);
                if (NP == 2) {
                    la_tc_mma<dst_bf>(Sx[2 * jn], al, bh[0], bh[1]);
                    la_tc_mma<dst_bf>(Sx[2 * jn + 1], al, bh[2], bh[3]);
                }
                if (NK == 2) {
                    uint32_t bk[4];
                    la_tc_ldsm4<true>(bk, Kt + TILE + off);
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
    if (p.sT) {
        /* MODE 1: transition blocks write M after the segments' states */
        float *const so = tr ? p.sT + (size_t)(gridDim.x / nvt) * K * V + nh * K * K : p.sT + sbase;
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int v = g + 8 * (e >> 1);
                const int64_t i = kb + 8 * j + 2 * q + (e & 1);
                if (i < K && v < vc) so[i * VW + v0 + v] = S[j][e];
            }
    }
}

template <int NW, int KW, int NP, int NB, bool XK>
static la_status dst_launch(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream) {
    const size_t smem = dst_smem<NW, KW, NP, NB, DST_PLD, 1, XK>();
    auto kern = la_cu_dc_state_tc<NW, KW, NP, NB, 0, 1, 1, XK>;
    LA_CU_TRY(c->op,
              cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)((c->V + 15) / 16 * c->N * c->HS));
    kern<<<grid, NW * 32, smem, stream>>>(p);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}
template <int NW, int KW, int NP, bool XK>
static la_status dst_nb(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream) {
    if (dst_smem<NW, KW, NP, 2, DST_PLD, 1, XK>() <= (size_t)la__cu_smem_optin(c))
        return dst_launch<NW, KW, NP, 2, XK>(c, p, stream);
    if (dst_smem<NW, KW, NP, 1, DST_PLD, 1, XK>() <= (size_t)la__cu_smem_optin(c))
        return dst_launch<NW, KW, NP, 1, XK>(c, p, stream);
    return la__error(LA_ERR_UNSUPPORTED,
                     "%s: K = %lld needs more shared memory than the device has", c->op,
                     (long long)c->K);
}
/* K <= 64: 4 warps of 16 keys; K <= 128: 8 warps of 16; K <= 256: 8 of 32. */
template <int NP, bool XK>
static la_status dst_k(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream) {
    if (c->K <= 64) return dst_nb<4, 16, NP, XK>(c, p, stream);
    if (c->K <= 128) return dst_nb<8, 16, NP, XK>(c, p, stream);
    return dst_nb<8, 32, NP, XK>(c, p, stream);
}

/* ---- cuda-state11: 32 value columns per CTA (MT = 2) ------------------- */
/* LINATTN_CUDA_DELTA_WIDE=0: never; unset / 1: where 64 < K <= 128 and the
 * wide grid still fills a wave (one CTA per SM) or the 16-column grid would
 * take more than one wave (cuda-drsplit18: one wave of wide steps beats two
 * of narrow ones; same bits either way); 2: wherever 64 < K <= 128 (the
 * tests). Read once. */
static int dst_wide_mode(void) {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_DELTA_WIDE");
        mode = !e ? 1 : e[0] == '0' ? 0 : e[0] == '2' ? 2 : 1;
    }
    return mode;
}
template <int NW, int KW, int NP, int NB, bool XK>
static la_status dst_wide_go(const la__cu_call *c, const la_cu_dc_args &p, int64_t ctas,
                             size_t smem, cudaStream_t stream) {
    auto kern = la_cu_dc_state_tc<NW, KW, NP, NB, 0, 1, 2, XK>;
    LA_CU_TRY(c->op,
              cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    kern<<<dim3((unsigned)ctas), NW * 32 * 2, smem, stream>>>(p);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}
template <int NP, bool XK>
static int dst_wide(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                    la_status *st) {
    constexpr int NW = 8, KW = 16, NB = 2;
    const int mode = dst_wide_mode();
    const int64_t ctas = (c->V + 31) / 32 * c->N * c->HS;
    if (!mode || c->K <= 64 || c->K > 128) return 0;
    const int64_t sm = la__cu_sm_count(c);
    if (mode == 1 && ctas < sm && (c->V + 15) / 16 * c->N * c->HS <= sm) return 0;
    const size_t smem = dst_smem<NW, KW, NP, NB, DST_PLD, 2, XK>();
    if (smem > (size_t)la__cu_smem_optin(c)) return 0;
    *st = dst_wide_go<NW, KW, NP, NB, XK>(c, p, ctas, smem, stream);
    return 1;
}

la_status la__cu_delta_state_tc(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream) {
    la_status st = LA_OK; /* cuda-state7: the 2-CTA cluster kernel where it pays */
    if (la__cu_delta_state_cl(c, p, stream, &st)) return st;
    if (la__cu_delta_state_xk(c, p)) /* cuda-gdn24: exact keys */
        return dst_wide<2, true>(c, p, stream, &st) ? st : dst_k<2, true>(c, p, stream);
    if (p.Wl ? dst_wide<2, false>(c, p, stream, &st) : dst_wide<1, false>(c, p, stream, &st))
        return st;
    return p.Wl ? dst_k<2, false>(c, p, stream) : dst_k<1, false>(c, p, stream);
}

/* ---- cuda-split9: the one-CTA kernel over segments ---------------------- */
template <int NW, int KW, int NP, int NB, int MODE, int MINB>
static la_status dst_seg_go(const la__cu_call *c, const la_cu_dc_args &p, int64_t nseq,
                            cudaStream_t stream) {
    const size_t smem = dst_smem<NW, KW, NP, NB, MINB == 2 ? 68 : DST_PLD>();
    auto kern = la_cu_dc_state_tc<NW, KW, NP, NB, MODE, MINB>;
    LA_CU_TRY(c->op,
              cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const int64_t blocks = (c->V + 15) / 16 + (MODE ? (c->K + 15) / 16 : 0);
    kern<<<dim3((unsigned)(blocks * nseq * c->HS)), NW * 32, smem, stream>>>(p);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}
template <int NW, int KW, int NP, int MODE>
static la_status dst_seg_nb(const la__cu_call *c, const la_cu_dc_args &p, int64_t nseq,
                            cudaStream_t stream) {
    if (dst_smem<NW, KW, NP, 2>() <= (size_t)la__cu_smem_optin(c))
        return dst_seg_go<NW, KW, NP, 2, MODE, 1>(c, p, nseq, stream);
    if (dst_smem<NW, KW, NP, 1>() <= (size_t)la__cu_smem_optin(c))
        return dst_seg_go<NW, KW, NP, 1, MODE, 1>(c, p, nseq, stream);
    return la__error(LA_ERR_UNSUPPORTED,
                     "%s: K = %lld needs more shared memory than the device has", c->op,
                     (long long)c->K);
}
template <int NP, int MODE>
static la_status dst_seg_k(const la__cu_call *c, const la_cu_dc_args &p, int64_t nseq, int occ,
                           cudaStream_t stream) {
    if (c->K <= 64) return dst_seg_nb<4, 16, NP, MODE>(c, p, nseq, stream);
    if (c->K <= 128)
        return occ == 2 && dst_smem<8, 16, NP, 1, 68>() <= (size_t)la__cu_smem_optin(c)
                   ? dst_seg_go<8, 16, NP, 1, MODE, 2>(c, p, nseq, stream)
                   : dst_seg_nb<8, 16, NP, MODE>(c, p, nseq, stream);
    return dst_seg_nb<8, 32, NP, MODE>(c, p, nseq, stream);
}
la_status la__cu_delta_state_tc_seg(const la__cu_call *c, const la_cu_dc_args &p, int64_t nseq,
                                    int mode, int occ, cudaStream_t stream) {
    if (mode) return p.Wl ? dst_seg_k<2, 1>(c, p, nseq, occ, stream)
                          : dst_seg_k<1, 1>(c, p, nseq, occ, stream);
    return p.Wl ? dst_seg_k<2, 0>(c, p, nseq, occ, stream)
                : dst_seg_k<1, 0>(c, p, nseq, occ, stream);
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
