/* The delta rules' reverse state-gradient pass on tensor cores (bf16 inputs):
 * the same recurrence as la_cu_dcb_rev (delta_chunk_bwd.cu), per chunk of
 * L <= 64 tokens, walking the chunks of a sequence backwards,
 *     dR = dRo + Kd dh',   dh = b_L dh' + Qt^T dO - W^T dR
 * (dRo = P^T dO from la_cu_dcb_pto; Qt^T dO = Q^T diag(qsc) dO with
 * qsc_t = scale b_t / |q_t|). Transposed, it is the forward state pass
 * (delta_state_tc.cu, whose layout this kernel takes over) with the roles of
 * W and Kd swapped:
 *     partial dR^T_w = dh^T[:, keys of w] Kd^T[keys of w, :]   (16 x 64)
 *     dR^T = dRo^T + (P_0 + ... + P_{NW-1})   (warp order)
 *     dh^T[:, keys of w] = b_L dh^T + (-dR^T) W[:, keys of w]
 *                                    + (diag(qsc) dO)^T Q[:, keys of w]
 * One CTA of NW warps per (sequence, value head, 16 value columns); warp w
 * keeps dh^T[16 values][KW keys] in mma.sync m16n8 accumulators (fp32),
 * which are the A-operand layout of m16n8k16, split there into bf16 hi + lo.
 * W, Kd come as prep's bf16 parts (hi + lo), q as its exact bf16 values
 * (one part, [tokens][H][K8] written by la_cu_dcb_pto), dRo and the scaled
 * dO (fp32, written by la_cu_dcb_pto) are split into hi + lo in the
 * reduction step. Every fp32 x fp32 product is hi*hi + lo*hi + hi*lo (cross
 * terms in their own accumulators), fp32 x exact is hi*x + lo*x. The next
 * (earlier) chunk's tiles are copied by 16-byte cp.async while this one
 * computes (NB = 2; one buffer at K > 128), with the dRo and scaled dO
 * tiles. MT = 2 (cuda-rev12): two groups of NW warps per CTA, 32 value
 * columns, sharing one copy of the 16-bit tiles; each thread loads the dRo
 * and scaled dO values of its dR slots into registers one chunk ahead in
 * place of their tiles (two groups' tiles would not fit 227 KB). Three
 * barriers per chunk. Writes dh' of every chunk to dhst straight from the
 * accumulators, dR over dRo (for la_cu_dcg) and d_initial_state at the end.
 * Fixed summation orders, no atomics: bitwise identical run to run. bf16
 * only (the q tile is exact only there); fp16 and fp32 keep the FFMA pass. */
#include <stdlib.h>
#include <string.h>

#include "cluster.cuh"
#include "delta_chunk.cuh"
#include "tc.cuh"

typedef __nv_bfloat16 drt_bf;

#define DRT_SU 20  /* row stride (floats) of the dRo / dO tiles: 16 columns + 4 */
#define DRT_PLD 72 /* row stride (floats) of a partial dR^T tile [16][64] */
#define DRT_RLD 72 /* row stride (bf16) of the dR^T / dO^T part tiles [16][64] */
#define DRT_NT 5   /* 16-bit tiles per buffer: Kd hi, lo, W hi, lo, q */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define DRT_SM90 1 /* the cluster form's exchange (cluster.cuh) compiles */
#else
#define DRT_SM90 0
#endif

/* Shared memory: NB buffers of DRT_NT 16-bit tiles ([64][KP + 8] each) and
 * (MT = 1) of the dRo, dO tiles ([64][DRT_SU] fp32 each); per group of NW
 * warps, the warps' partial dR^T ([NW][16][DRT_PLD] fp32) and -dR^T, dO^T
 * as bf16 hi, lo ([16][DRT_RLD] each). K = 128, NB = 2: 217 KB (MT = 1),
 * 224 KB (MT = 2). CL = 1: the peer's dR^T partial sums ([2 parities][MT][16]
 * [DRT_PLD] fp32) and two mbarriers. */
template <int NW, int KW, int NB, int MT = 1, int CL = 0> static size_t drt_smem() {
    constexpr int LD = NW * KW + 8;
    return (size_t)NB * DRT_NT * 64 * LD * 2 + (MT == 1 ? (size_t)NB * 2 * 64 * DRT_SU * 4 : 0) +
           (size_t)MT * NW * 16 * DRT_PLD * 4 + (size_t)MT * 4 * 16 * DRT_RLD * 2 +
           (CL ? (size_t)2 * MT * 16 * DRT_PLD * 4 + 16 : 0);
}

/* NW warps per group, warp w of a group owns keys w KW .. w KW + KW - 1 (KW a
 * multiple of 16); group m (MT groups) the value columns 16 m .. 16 m + 15 of
 * the CTA's 16 MT. Each group runs MT = 1's steps, partials and summation
 * order on its columns (the same bits); the CTA's threads copy the tiles.
 * Qb: q as bf16 [tokens][H][K8]; dOq: qsc_t dO_t ([tokens][HS][V] fp32).
 * Addressing (cuda-rev9's short instruction stream): every per-thread
 * offset is 32-bit and computed once (its copy rows and column of the 16-bit
 * tiles, its dh' slots and dR slots); CB = 0: from
 * the tensors' starts, chunk c adding c times a constant stride; CB = 1
 * (cuda-rev11): from 64-bit bases of chunk c (its first token times the
 * row stride, its (chunk, head) block of dh'), for tensors of any size (the
 * host's choice: drt_launch). Column predicates
 * (padding keys, the last value block's columns) are per-thread constants;
 * row predicates (r < L) run only on a sequence's last chunk, the only one
 * shorter than LA_CU_C.
 * CL = 1 (cuda-gdnrev15): the keys split over the 2 CTAs of a cluster, as
 * the state pass's cluster form (delta_state_cl.cu): CTA r owns keys
 * r NW KW .. (r + 1) NW KW - 1 and copies only those columns of the Kd, W,
 * q tiles. After "partials out" each thread sums its dR^T slots over the
 * CTA's warps (warp order), keeps them in registers and sends them into
 * the peer's shared memory by st.async (complete_tx on the peer's mbarrier
 * of the chunk's parity: no release of the earlier dh' / dR global stores,
 * which cuda-rev9's cluster barrier per chunk drained), then waits on its
 * own mbarrier for the peer's sums: dR^T = dRo^T + (Q_0 + Q_1) (+ commutes:
 * both CTAs get the same bits). Each CTA writes dR of half of the tokens
 * (warps 2 w / NW == r) and dh' of its keys. The peer's store into parity
 * b in step it + 2 comes after it received this CTA's sums of step it + 1,
 * sent after every read of parity b in step it. dR overwrites dRo: the
 * peer's cp.async copies of chunk c's dRo were waited for at the top of
 * chunk c, before it sends the sums of chunk c that this CTA waits for
 * before its dR stores of chunk c. The host launches CL = 1 with MT = 1
 * only (with MT = 2 the dRo values are register loads, which no wait
 * orders before the peer's stores; it also measured slower). */
template <int NW, int KW, int NB, int CB, int MT, int CL>
__global__ void __launch_bounds__(NW * 32 * MT, 1)
    la_cu_dcb_rev_tc9(la_cu_dc_args p, const drt_bf *Qb, const float *dOq, const float *dsT,
                      float *ds0, float *dRo, float *dhst) {
    extern __shared__ __align__(128) unsigned char drt_sm[];
    static_assert(MT == 1 || MT == 2, "MT");
    constexpr int NTH = NW * 32 * MT, KP = NW * KW, LD = KP + 8, TILE = 64 * LD, NT = KW / 8;
    constexpr int KQ = KP / 8, JW = 8 / NW;
    static_assert(NTH % KQ == 0 && (64 * KQ) % NTH == 0, "copy layout");
    constexpr int RS = NTH / KQ, NI = 64 * KQ / NTH; /* 16-bit tiles: row step, trips */
    constexpr int RSV = NTH / 4, NIV = 256 / NTH;    /* dRo / dO, 16-byte copies (MT = 1) */
    constexpr int RS1 = NTH / 16, NI1 = 1024 / NTH;  /* dRo / dO, 4-byte copies (MT = 1) */
    constexpr bool FR = MT > 1;                      /* dRo / dO through registers, not tiles */
    const int t = threadIdx.x, lane = t & 31, g = lane >> 2, q = lane & 3;
    /* warp w of group mt (the constant 0 for MT = 1: MT = 1's code as before) */
    const int w = MT == 1 ? t >> 5 : (t >> 5) % NW, mt = MT == 1 ? 0 : (t >> 5) / NW;
    const int m8 = lane >> 3, rr = lane & 7, kb = w * KW;
#if DRT_SM90
    const unsigned rank = CL ? la_cl_rank() : 0u;
#else
    const unsigned rank = 0u;
    if (CL) return; /* never launched below sm_90 */
#endif
    const int kc0 = (int)rank * KP; /* CL: the CTA's first key */
    drt_bf *const tiles = (drt_bf *)drt_sm;
    float *const Fs = (float *)(tiles + NB * DRT_NT * TILE); /* [NB][2][64][DRT_SU] (MT = 1) */
    float *const Ps0 = Fs + (FR ? 0 : NB * 2 * 64 * DRT_SU); /* the groups' partials */
    float *const Ps = Ps0 + mt * NW * 16 * DRT_PLD;
    drt_bf *const Rh = (drt_bf *)(Ps0 + MT * NW * 16 * DRT_PLD) + mt * 4 * 16 * DRT_RLD;
    drt_bf *const Rl = Rh + 16 * DRT_RLD, *const Oh = Rl + 16 * DRT_RLD,
                  *const Ol = Oh + 16 * DRT_RLD;
    /* CL: the peer's sums [2][MT][16][DRT_PLD], then two mbarriers */
    float *const Qs = (float *)((drt_bf *)(Ps0 + MT * NW * 16 * DRT_PLD) + MT * 4 * 16 * DRT_RLD);
    const unsigned qs_me = (unsigned)__cvta_generic_to_shared(Qs) + 4u * (mt * 16 * DRT_PLD);
    const unsigned bar_me = (unsigned)__cvta_generic_to_shared(Qs + 2 * MT * 16 * DRT_PLD);
    const int K = (int)p.K, V = (int)p.V, HS = (int)p.HS, H = (int)p.H, K8 = (K + 7) & ~7;
    const int bx = CL ? (int)(blockIdx.x >> 1) : (int)blockIdx.x; /* CL: the cluster's block */
    const int nvb = (V + 16 * MT - 1) / (16 * MT), nh = bx / nvb;
    const int n = nh / HS, hs = nh % HS, hq = hs / (HS / H);
    const int v0 = (bx % nvb) * 16 * MT + 16 * mt;
    const int vc = V - v0 < 16 ? V - v0 : 16; /* <= 0: an empty second group */
    const bool uvec = (V & 3) == 0;
    const la_cu_seq s = p.seqs[n];
    const size_t sbase = ((size_t)n * HS + hs) * K * V;
    const unsigned HSV = (unsigned)HS * V, rs = (unsigned)HS * K8, qs = (unsigned)H * K8;

    /* per-thread copy slots: 16-bit tiles (row t / KQ + RS i, column c8) */
    const int r0 = t / KQ, c8 = (t % KQ) * 8;
    const bool cin = kc0 + c8 < K8;
    /* CB = 0: whole-tensor 32-bit offsets (the sequence's first token st0
     * folded in, chunk c adds c times a 32-bit stride); CB = 1: in-chunk */
    const unsigned st0 = CB ? 0u : (unsigned)s.start;
    const unsigned ko0 = (st0 + r0) * rs + hs * K8 + kc0 + c8;
    const unsigned qo0 = (st0 + r0) * qs + hq * K8 + kc0 + c8;
    const int so0 = r0 * LD + c8;
    /* MT = 1: dRo / dO tiles: 16-byte copies (row t / 4 + RSV i, column c4) or
     * 4-byte ones (row t / 16 + RS1 i, column cc) */
    const int rv0 = uvec ? t >> 2 : t >> 4, cv = uvec ? (t & 3) * 4 : t & 15;
    const bool vin = cv < vc;
    const unsigned vo0 = (st0 + rv0) * HSV + hs * V + v0 + cv;
    const int fo0 = rv0 * DRT_SU + cv;

    /* dh^T accumulators: D[j][e] = dh^T[v][i], v = g + 8 (e >> 1), i = kb + 8 j + 2 q + (e & 1) */
    float D[NT][4];
    unsigned dmask = 0; /* bit 4 j + e: slot (j, e) inside K x vc */
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int v = g + 8 * (e >> 1), i = kc0 + kb + 8 * j + 2 * q + (e & 1);
            const bool in = i < K && v < vc;
            dmask |= (in ? 1u : 0u) << (4 * j + e);
            D[j][e] = (dsT && in) ? dsT[sbase + (size_t)i * V + v0 + v] : 0.f;
        }
    const unsigned KV = (unsigned)K * V;
    const unsigned ho0 =
        (CB ? 0u : ((unsigned)s.chunk0 * HS + hs) * KV) + (kc0 + kb + 2 * q) * V + v0 + g;
    /* dR slots of phase 2: token 8 (JW w + jw) + 2 q (+ 1), column g + 8 hf */
    const unsigned ro0 = (st0 + 8 * JW * w + 2 * q) * HSV + hs * V + v0 + g;
    /* CB = 1: 64-bit bases of chunk c: its first token's rows, its block of dh' */
    auto tokb = [&](int c) { return (size_t)(s.start + (int64_t)c * LA_CU_C); };
    auto chkb = [&](int c) { return (size_t)s.chunk0 + (size_t)c; };
    /* MT = 2: dRo and qsc dO at this thread's dR slots (0 outside): fr / fo
     * [jw][hf][0 / 1] = token tt / tt + 1, column v of chunk c; fnr / fno the
     * same of chunk c - 1, loaded at the top of chunk c, a whole step before
     * their use (loaded after chunk c's reduction, half a step ahead, the
     * wide kernel took 585 us at DeltaNet instead of 480, and MT = 1 with
     * that placement in place of its tiles 3.20 ms at GDN instead of 2.79) */
    float fr[JW][2][2], fo[JW][2][2], fnr[JW][2][2], fno[JW][2][2];
    auto fetch = [&](int c, bool last, float(&xr)[JW][2][2], float(&xo)[JW][2][2]) {
        const int L = last ? (int)(s.len - (int64_t)c * LA_CU_C) : LA_CU_C;
        const size_t vc64 = CB ? tokb(c) * HSV : 0;
        const unsigned v32 = ro0 + (CB ? 0u : (unsigned)c * (LA_CU_C * HSV));
        const float *const rg = dRo + vc64 + v32, *const og = dOq + vc64 + v32;
#pragma unroll
        for (int jw = 0; jw < JW; jw++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int v = g + 8 * hf, tt = 8 * (JW * w + jw) + 2 * q;
                const unsigned o = (unsigned)(8 * jw) * HSV + 8 * hf;
                const bool i0 = v < vc && (!last || tt < L), i1 = v < vc && (!last || tt + 1 < L);
                xr[jw][hf][0] = i0 ? rg[o] : 0.f;
                xr[jw][hf][1] = i1 ? rg[o + HSV] : 0.f;
                xo[jw][hf][0] = i0 ? og[o] : 0.f;
                xo[jw][hf][1] = i1 ? og[o + HSV] : 0.f;
            }
    };

    auto issue = [&](int c, int b, bool last) {
        const int L = last ? (int)(s.len - (int64_t)c * LA_CU_C) : LA_CU_C;
        const size_t tk = CB ? tokb(c) : 0, kc = tk * rs, qc = tk * qs;
        const drt_bf *const kh = p.Kh + kc, *const kl = p.Kl + kc, *const wh = p.Wh + kc;
        const drt_bf *const wl = p.Wl + kc, *const qb = Qb + qc;
        const unsigned k32 = ko0 + (CB ? 0u : (unsigned)c * (LA_CU_C * rs));
        const unsigned q32 = qo0 + (CB ? 0u : (unsigned)c * (LA_CU_C * qs));
        drt_bf *tb = tiles + b * DRT_NT * TILE + so0;
#pragma unroll
        for (int i = 0; i < NI; i++) {
            const bool in = cin && (!last || r0 + RS * i < L);
            const unsigned off = in ? k32 + (unsigned)(RS * i) * rs : 0u;
            const unsigned qf = in ? q32 + (unsigned)(RS * i) * qs : 0u;
            drt_bf *d = tb + RS * i * LD;
            la_cu_cpb16(d, kh + off, in ? 16 : 0);
            la_cu_cpb16(d + TILE, kl + off, in ? 16 : 0);
            la_cu_cpb16(d + 2 * TILE, wh + off, in ? 16 : 0);
            la_cu_cpb16(d + 3 * TILE, wl + off, in ? 16 : 0);
            la_cu_cpb16(d + 4 * TILE, qb + qf, in ? 16 : 0);
        }
        if (!FR) {
            float *rb = Fs + b * 2 * 64 * DRT_SU + fo0, *ob = rb + 64 * DRT_SU;
            const size_t vc64 = CB ? tokb(c) * HSV : 0;
            const float *const rg = dRo + vc64, *const og = dOq + vc64;
            const unsigned v32 = vo0 + (CB ? 0u : (unsigned)c * (LA_CU_C * HSV));
            if (uvec) {
#pragma unroll
                for (int i = 0; i < NIV; i++) {
                    const bool in = vin && (!last || rv0 + RSV * i < L);
                    const unsigned off = in ? v32 + (unsigned)(RSV * i) * HSV : 0u;
                    la_cu_cpb16(rb + RSV * i * DRT_SU, rg + off, in ? 16 : 0);
                    la_cu_cpb16(ob + RSV * i * DRT_SU, og + off, in ? 16 : 0);
                }
            } else {
#pragma unroll
                for (int i = 0; i < NI1; i++) {
                    const bool in = vin && (!last || rv0 + RS1 * i < L);
                    const unsigned off = in ? v32 + (unsigned)(RS1 * i) * HSV : 0u;
                    la_cu_cpb4(rb + RS1 * i * DRT_SU, rg + off, in ? 4 : 0);
                    la_cu_cpb4(ob + RS1 * i * DRT_SU, og + off, in ? 4 : 0);
                }
            }
        }
        asm volatile("cp.async.commit_group;\n" ::: "memory");
    };

    /* CL: dR of the tokens of warps w with 2 w / NW == rank */
    const bool mine = !CL || (2 * w) / NW == (int)rank;
#if DRT_SM90
    if (CL) {
        if (t == 0) la_cl_mbar_init2(bar_me);
        la_cl_sync(); /* the peer's mbarriers initialised */
    }
#endif
    if (s.nch > 0) {
        issue(s.nch - 1, 0, true);
        if (FR) fetch(s.nch - 1, true, fr, fo);
    }
    for (int c = s.nch - 1, it = 0; c >= 0; c--, it++) {
        const bool last = c == s.nch - 1;
        const int L = last ? (int)(s.len - (int64_t)c * LA_CU_C) : LA_CU_C;
        const int b = NB == 2 ? (it & 1) : 0;
        const float bl = CB ? p.bL[chkb(c) * HS + hs] : p.bL[((unsigned)s.chunk0 + c) * HS + hs];
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        __syncthreads(); /* chunk c's tiles in; every warp is past chunk c + 1 */
        if (NB == 2 && c > 0) issue(c - 1, b ^ 1, false);
        if (FR) { /* chunk c's values (fetched a step ago), then chunk c - 1's */
            if (it > 0)
#pragma unroll
                for (int jw = 0; jw < JW; jw++)
#pragma unroll
                    for (int hf = 0; hf < 2; hf++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                            fr[jw][hf][e] = fnr[jw][hf][e], fo[jw][hf][e] = fno[jw][hf][e];
            if (c > 0) fetch(c - 1, false, fnr, fno);
        }
        const drt_bf *const Kt = tiles + b * DRT_NT * TILE, *const Wt = Kt + 2 * TILE;
        const drt_bf *const Qt = Kt + 4 * TILE;
        if (dhst) { /* dh' of chunk c */
            float *hc =
                CB ? dhst + (chkb(c) * HS + hs) * KV + ho0 : dhst + (ho0 + (unsigned)c * (HS * KV));
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (dmask >> (4 * j + e) & 1u)
                        hc[(8 * j + (e & 1)) * V + 8 * (e >> 1)] = D[j][e];
        }
        /* partial dR^T of this warp's keys: P[j] = tokens 8 j .. 8 j + 7 */
        float P[8][4], Px[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) P[j][e] = 0.f, Px[j][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < KW / 16; ks++) {
            uint32_t ah[4], al[4];
            la_cu_bf16_parts(D[2 * ks][0], D[2 * ks][1], ah[0], al[0]);
            la_cu_bf16_parts(D[2 * ks][2], D[2 * ks][3], ah[1], al[1]);
            la_cu_bf16_parts(D[2 * ks + 1][0], D[2 * ks + 1][1], ah[2], al[2]);
            la_cu_bf16_parts(D[2 * ks + 1][2], D[2 * ks + 1][3], ah[3], al[3]);
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                const int off = (16 * jj + (m8 >> 1) * 8 + rr) * LD + kb + 16 * ks + (m8 & 1) * 8;
                uint32_t bh[4], bw[4];
                la_tc_ldsm4<false>(bh, Kt + off);
                la_tc_ldsm4<false>(bw, Kt + TILE + off);
                la_tc_mma<drt_bf>(P[2 * jj], ah, bh[0], bh[1]);
                la_tc_mma<drt_bf>(P[2 * jj + 1], ah, bh[2], bh[3]);
                la_tc_mma<drt_bf>(Px[2 * jj], al, bh[0], bh[1]);
                la_tc_mma<drt_bf>(Px[2 * jj + 1], al, bh[2], bh[3]);
                la_tc_mma<drt_bf>(Px[2 * jj], ah, bw[0], bw[1]);
                la_tc_mma<drt_bf>(Px[2 * jj + 1], ah, bw[2], bw[3]);
            }
        }
        {
            float *pw = Ps + w * 16 * DRT_PLD;
#pragma unroll
            for (int j = 0; j < 8; j++) {
#pragma unroll
                for (int e = 0; e < 4; e++) P[j][e] += Px[j][e];
                *(float2 *)&pw[g * DRT_PLD + 8 * j + 2 * q] = make_float2(P[j][0], P[j][1]);
                *(float2 *)&pw[(g + 8) * DRT_PLD + 8 * j + 2 * q] = make_float2(P[j][2], P[j][3]);
            }
        }
        __syncthreads(); /* partials out */
        /* this CTA's sums over its warps at this thread's dR^T slots (CL:
         * sent to the peer, the peer's added below) */
        float2 am[JW][2];
#pragma unroll
        for (int jw = 0; jw < JW; jw++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int o = (g + 8 * hf) * DRT_PLD + 8 * (JW * w + jw) + 2 * q;
                float2 a = *(const float2 *)&Ps[o];
#pragma unroll
                for (int ww = 1; ww < NW; ww++) {
                    const float2 y = *(const float2 *)&Ps[ww * 16 * DRT_PLD + o];
                    a.x += y.x, a.y += y.y;
                }
                am[jw][hf] = a;
#if DRT_SM90
                if (CL) {
                    const unsigned qo = qs_me + 4u * ((it & 1) * MT * 16 * DRT_PLD + o);
                    la_cl_st_async2(la_cl_mapa(qo, rank ^ 1u), a,
                                    la_cl_mapa(bar_me + 8u * (it & 1), rank ^ 1u));
                }
#endif
            }
#if DRT_SM90
        if (CL) { /* the peer's sums of this step: MT x 16 x 64 floats */
            const unsigned bq = bar_me + 8u * (it & 1);
            if (t == 0) la_cl_mbar_arm(bq, MT * 16 * 64 * 4);
            la_cl_mbar_wait(bq, (unsigned)(it >> 1) & 1u);
        }
#endif
        {
            const float *const Qp = Qs + (it & 1) * MT * 16 * DRT_PLD + mt * 16 * DRT_PLD;
            const float *const Rb = Fs + b * 2 * 64 * DRT_SU, *const Ob = Rb + 64 * DRT_SU;
            float *const rc =
                CB ? dRo + tokb(c) * HSV + ro0 : dRo + (ro0 + (unsigned)c * (LA_CU_C * HSV));
#pragma unroll
            for (int jw = 0; jw < JW; jw++) {
                const int j = JW * w + jw;
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const int v = g + 8 * hf, tt = 8 * j + 2 * q, o = v * DRT_PLD + tt;
                    float2 a = am[jw][hf];
                    if (CL) {
                        const float2 y = *(const float2 *)&Qp[o];
                        a.x += y.x, a.y += y.y;
                    }
                    const float r0f = (FR ? fr[jw][hf][0] : Rb[tt * DRT_SU + v]) + a.x,
                                r1f = (FR ? fr[jw][hf][1] : Rb[(tt + 1) * DRT_SU + v]) + a.y;
                    uint32_t hi, lo;
                    la_cu_bf16_parts(-r0f, -r1f, hi, lo);
                    *(uint32_t *)&Rh[v * DRT_RLD + tt] = hi;
                    *(uint32_t *)&Rl[v * DRT_RLD + tt] = lo;
                    la_cu_bf16_parts(FR ? fo[jw][hf][0] : Ob[tt * DRT_SU + v],
                                     FR ? fo[jw][hf][1] : Ob[(tt + 1) * DRT_SU + v], hi, lo);
                    *(uint32_t *)&Oh[v * DRT_RLD + tt] = hi;
                    *(uint32_t *)&Ol[v * DRT_RLD + tt] = lo;
                    if (mine && v < vc) {
                        float *u = rc + (unsigned)(8 * jw) * HSV + 8 * hf;
                        if (!last || tt < L) u[0] = r0f;
                        if (!last || tt + 1 < L) u[HSV] = r1f;
                    }
                }
            }
        }
        __syncthreads(); /* parts out */
        float Dx[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) D[j][e] *= bl, Dx[j][e] = 0.f;
#pragma unroll
        for (int kt = 0; kt < 4; kt++) {
            const int ao = ((m8 & 1) * 8 + rr) * DRT_RLD + 16 * kt + (m8 >> 1) * 8;
            uint32_t ah[4], al[4], oh[4], ol[4];
            la_tc_ldsm4<false>(ah, Rh + ao);
            la_tc_ldsm4<false>(al, Rl + ao);
            la_tc_ldsm4<false>(oh, Oh + ao);
            la_tc_ldsm4<false>(ol, Ol + ao);
#pragma unroll
            for (int jn = 0; jn < KW / 16; jn++) {
                const int off = (16 * kt + (m8 & 1) * 8 + rr) * LD + kb + 16 * jn + (m8 >> 1) * 8;
                uint32_t bh[4], bw[4], bq[4];
                la_tc_ldsm4<true>(bh, Wt + off);
                la_tc_ldsm4<true>(bw, Wt + TILE + off);
                la_tc_ldsm4<true>(bq, Qt + off);
                la_tc_mma<drt_bf>(D[2 * jn], ah, bh[0], bh[1]);
                la_tc_mma<drt_bf>(D[2 * jn + 1], ah, bh[2], bh[3]);
                la_tc_mma<drt_bf>(D[2 * jn], oh, bq[0], bq[1]);
                la_tc_mma<drt_bf>(D[2 * jn + 1], oh, bq[2], bq[3]);
                la_tc_mma<drt_bf>(Dx[2 * jn], al, bh[0], bh[1]);
                la_tc_mma<drt_bf>(Dx[2 * jn + 1], al, bh[2], bh[3]);
                la_tc_mma<drt_bf>(Dx[2 * jn], ah, bw[0], bw[1]);
                la_tc_mma<drt_bf>(Dx[2 * jn + 1], ah, bw[2], bw[3]);
                la_tc_mma<drt_bf>(Dx[2 * jn], ol, bq[0], bq[1]);
                la_tc_mma<drt_bf>(Dx[2 * jn + 1], ol, bq[2], bq[3]);
            }
        }
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) D[j][e] += Dx[j][e];
        if (NB == 1 && c > 0) {
            __syncthreads(); /* buffer 0 read by every warp */
            issue(c - 1, 0, false);
        }
    }
#if DRT_SM90
    if (CL) la_cl_sync(); /* no CTA leaves while the peer's st.async may be in flight */
#endif
    if (ds0)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int v = g + 8 * (e >> 1), i = kc0 + kb + 8 * j + 2 * q + (e & 1);
                if (dmask >> (4 * j + e) & 1u) ds0[sbase + (size_t)i * V + v0 + v] = D[j][e];
            }
}

/* Addressing (cuda-rev11, round 2 session 9). CB = 0 (cuda-rev9's): every
 * offset is a whole-tensor 32-bit one, taken where every tensor the kernel
 * steps through has fewer than 2^31 elements with a chunk of margin
 * (drt_fits32: W, Kd parts and q as bf16: tokens x HS x K8; dRo, qsc dO:
 * tokens x HS x V; dh': chunks x HS x K x V). CB = 1 (any token count):
 * 64-bit chunk bases plus 32-bit in-chunk offsets, which stay below
 * 64 HS max(K8, V) (rows of a chunk times the row stride, plus the head's
 * columns) and K V (a thread's dh' slot in its (chunk, head) block); taken
 * where 64 HS max(K8, V) < 2^31 (131072 heads of 256 keys) and the grid is
 * below 2^31 CTAs (drt_fits); beyond that the FFMA pass (64-bit offsets)
 * runs (la__cu_delta_tc_rev returns 0). bench/drt_index64.py emulates CB =
 * 1's index math at tensors of 2^31 .. 2^35 elements. The two give the same
 * bits; CB = 1 costs ~130 more instructions per warp and chunk (64-bit
 * pointer arithmetic: DeltaNet 965 vs 835, +5% time on the H200), so CB = 0
 * stays where it fits. This replaced cuda-delta7's kernel (64-bit offsets
 * everywhere, kept until now for the tensors above 2^31 elements and as
 * LINATTN_CUDA_DELTA_REV=old; same bits, removed with that switch). */
static int drt_fits32(const la__cu_call *c) {
    const int64_t lim = (int64_t)1 << 31, K8 = (c->K + 7) & ~(int64_t)7;
    const int64_t tok = c->B * c->T + LA_CU_C, nch = tok / LA_CU_C + c->N + 1;
    const int64_t KV = c->K * c->V, KM = K8 > c->V ? K8 : c->V;
    return tok < lim / (c->HS * KM) && nch < lim / (c->HS * KV);
}
static int drt_fits(const la__cu_call *c) {
    const int64_t K8 = (c->K + 7) & ~(int64_t)7, KM = K8 > c->V ? K8 : c->V;
    return c->HS <= ((int64_t)1 << 25) / KM &&
           (c->V + 15) / 16 * c->N < (((int64_t)1 << 31) - 1) / c->HS;
}

/* LINATTN_CUDA_DELTA_REV=b64 (read once): CB = 1 at every size (to test
 * the 64-bit path on small tensors). cuda-rev11 also tried the W / Q
 * product's lo x q cross terms in their own accumulators (mma chains of 8
 * instead of 12): within 1% at DeltaNet and GDN fwd+bwd (bench/GPU.md),
 * removed. */
static int drt_b64() {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_DELTA_REV");
        mode = e && !strcmp(e, "b64");
    }
    return mode;
}
/* cuda-rev12: 32 value columns per CTA (MT = 2) at 64 < K <= 128, as the
 * state pass (cuda-state11, which reads the same switch):
 * LINATTN_CUDA_DELTA_WIDE=0 never; unset / 1 where the wide grid still
 * fills a wave (one CTA per SM) or the 16-column grid would take more than
 * one wave (cuda-drsplit18: one wave of wide steps beats two of narrow
 * ones; same bits either way); 2 wherever 64 < K <= 128 (the tests). */
static int drt_wide_mode() {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_DELTA_WIDE");
        mode = !e ? 1 : e[0] == '0' ? 0 : e[0] == '2' ? 2 : 1;
    }
    return mode;
}

template <int NW, int KW, int NB, int CB, int MT, int CL>
static la_status drt_go(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                        const void *Qb, const float *dOq, float *dRo, float *dhst) {
    const size_t smem = drt_smem<NW, KW, NB, MT, CL>();
    const unsigned ng = (unsigned)((c->V + 16 * MT - 1) / (16 * MT) * c->N * c->HS);
    auto kern = la_cu_dcb_rev_tc9<NW, KW, NB, CB, MT, CL>;
    if (CL) {
        LA_CU_TRY(c->op, la_cl_launch(kern, 2 * ng, 2, NW * 32 * MT, smem, stream, p,
                                      (const drt_bf *)Qb, dOq, c->dsT, c->ds0, dRo, dhst));
        return LA_OK;
    }
    const dim3 grid(ng);
    LA_CU_TRY(c->op,
              cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    kern<<<grid, NW * 32 * MT, smem, stream>>>(p, (const drt_bf *)Qb, dOq, c->dsT, c->ds0, dRo,
                                               dhst);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}
template <int NW, int KW, int NB, int MT = 1, int CL = 0>
static la_status drt_launch(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                            const void *Qb, const float *dOq, float *dRo, float *dhst) {
    if (drt_b64() || !drt_fits32(c))
        return drt_go<NW, KW, NB, 1, MT, CL>(c, p, stream, Qb, dOq, dRo, dhst);
    return drt_go<NW, KW, NB, 0, MT, CL>(c, p, stream, Qb, dOq, dRo, dhst);
}
/* cuda-gdnrev15: the cluster form (CL = 1, MT = 1: 4 warps of 16 keys per
 * CTA, 16 value columns) at 64 < K <= 128, compute capability 9+.
 * LINATTN_CUDA_DELTA_REV=cl: wherever that holds; =one: never; else (unset,
 * b64) where its grid (two CTAs per value block) fits one wave. Measured
 * (H200, bench/GPU.md): GDN shape (128 CTAs) 2759 -> 2172 us; MT = 2 in
 * the cluster lost at both shapes (GDN 3281 us, DeltaNet 823 vs 492 us)
 * and is not built. Returns 0 where not taken. */
static int drt_cl_mode() {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_DELTA_REV");
        mode = !e ? 1 : !strcmp(e, "cl") ? 2 : !strcmp(e, "one") ? 0 : 1;
    }
    return mode;
}
static int drt_cl(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                  const void *Qb, const float *dOq, float *dRo, float *dhst, la_status *st) {
    const int mode = drt_cl_mode();
    const int64_t ctas = 2 * ((c->V + 15) / 16) * c->N * c->HS;
    if (!mode || (mode == 1 && ctas > la__cu_sm_count(c))) return 0;
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device) !=
        cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    if (major < 9 || drt_smem<4, 16, 2, 1, 1>() > (size_t)la__cu_smem_optin(c)) return 0;
    *st = drt_launch<4, 16, 2, 1, 1>(c, p, stream, Qb, dOq, dRo, dhst);
    return 1;
}
/* K <= 64: 4 warps of 16 keys; K <= 128: 4 warps of 32 (two buffers fit),
 * two groups of them where the wide grid fills a wave; K <= 256: 8 warps
 * of 32, one buffer. */
template <int NW, int KW>
static la_status drt_nb(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                        const void *Qb, const float *dOq, float *dRo, float *dhst) {
    if (drt_smem<NW, KW, 2>() <= (size_t)la__cu_smem_optin(c))
        return drt_launch<NW, KW, 2>(c, p, stream, Qb, dOq, dRo, dhst);
    return drt_launch<NW, KW, 1>(c, p, stream, Qb, dOq, dRo, dhst);
}

la_status la__cu_delta_rev_tc(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                              const void *Qb, const float *dOq, float *dRo, float *dhst) {
    if (c->K <= 64) return drt_nb<4, 16>(c, p, stream, Qb, dOq, dRo, dhst);
    if (c->K <= 128) {
        la_status st = LA_OK;
        if (drt_cl(c, p, stream, Qb, dOq, dRo, dhst, &st)) return st;
        const int wide = drt_wide_mode(), optin = la__cu_smem_optin(c);
        const int64_t ctas = (c->V + 31) / 32 * c->N * c->HS, sm = la__cu_sm_count(c);
        if (wide && (wide == 2 || ctas >= sm || (c->V + 15) / 16 * c->N * c->HS > sm) &&
            drt_smem<4, 32, 2, 2>() <= (size_t)optin)
            return drt_launch<4, 32, 2, 2>(c, p, stream, Qb, dOq, dRo, dhst);
        return drt_nb<4, 32>(c, p, stream, Qb, dOq, dRo, dhst);
    }
    return drt_nb<8, 32>(c, p, stream, Qb, dOq, dRo, dhst);
}

/* Whether the reverse pass runs on tensor cores: bf16 inputs with the
 * two-part W, Kd of prep (p.Wl set), LINATTN_CUDA_DELTA_TC_REV not 0 (and
 * LINATTN_CUDA_TC not 0, which leaves p.Wl NULL), and its shared memory
 * fits. */
int la__cu_delta_tc_rev(const la__cu_call *c, const la_cu_dc_args &p) {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_TC"), *o = getenv("LINATTN_CUDA_DELTA_TC_REV");
        mode = !((e && e[0] == '0') || (o && o[0] == '0'));
    }
    if (!mode || c->dtype != LA_DTYPE_BF16 || !p.Wh || !p.Wl || c->K > 256 || !drt_fits(c))
        return 0;
    const size_t need = c->K <= 64    ? drt_smem<4, 16, 1>()
                        : c->K <= 128 ? drt_smem<4, 32, 1>()
                                      : drt_smem<8, 32, 1>();
    return need <= (size_t)la__cu_smem_optin(c);
}
