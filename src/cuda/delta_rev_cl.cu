/* The delta rules' reverse state-gradient pass (delta_rev_tc.cu's
 * la_cu_dcb_rev_tc9, bf16, 64 < K <= 128) split over a cluster of 2 CTAs
 * for grids under one wave (cuda-rev9): CTA r of the pair keeps dh^T[16
 * values][keys 64 r .. 64 r + 63] (4 warps of 16 keys) and copies only
 * those keys' columns of the Kd, W and q tiles, so each SM moves half the
 * bytes and issues half the products per chunk. The warps' partial
 * dR^T = dh^T Kd^T of both CTAs go to both CTAs' shared memory (slot
 * 4 r + w, two chunk parities), one cluster barrier per chunk takes the
 * place of the CTA barrier after the partials, and each CTA sums the eight
 * partials in slot order: the same dR^T bits in both (dR of an 8-token
 * group stored by the CTA whose rank is the group's parity). Fixed orders,
 * no atomics: bitwise identical run to run (not to the one-CTA kernel,
 * whose partials are four of 32 keys). Opt-in (LINATTN_CUDA_DELTA_REV=cl):
 * slower than the one-CTA kernel at the GDN shape, the cluster barrier's
 * release draining the chunk's global stores (bench/GPU.md, cuda-rev9).
 * Launched with a cluster dimension of 2; the body is empty below sm_90,
 * where the host never launches it. */
#include "cluster.cuh"
#include "delta_chunk.cuh"
#include "tc.cuh"

typedef __nv_bfloat16 drc_bf;

#define DRC_SU 20  /* row stride (floats) of the dRo / dO tiles */
#define DRC_PLD 72 /* row stride (floats) of a partial dR^T tile [16][64] */
#define DRC_RLD 72 /* row stride (bf16) of the dR^T / dO^T part tiles [16][64] */
#define DRC_NT 5   /* 16-bit tiles per buffer: Kd hi, lo, W hi, lo, q */
#define DRC_LD 72  /* row stride (bf16) of a 16-bit tile: 64 keys + 8 */
#define DRC_NS 8   /* partial slots: 2 CTAs x 4 warps */

/* NB buffers of the 16-bit tiles ([64][DRC_LD]) and of the dRo, dO tiles;
 * partials [2 parities][DRC_NS][16][DRC_PLD]; -dR^T, dO^T parts. */
template <int NB> static size_t drc_smem() {
    return (size_t)NB * DRC_NT * 64 * DRC_LD * 2 + (size_t)NB * 2 * 64 * DRC_SU * 4 +
           (size_t)2 * DRC_NS * 16 * DRC_PLD * 4 + (size_t)4 * 16 * DRC_RLD * 2;
}

template <int NB>
__global__ void __launch_bounds__(128, 1)
    la_cu_dcb_rev_cl(la_cu_dc_args p, const drc_bf *Qb, const float *dOq, const float *dsT,
                     float *ds0, float *dRo, float *dhst) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(128) unsigned char drc_sm[];
    constexpr int NW = 4, KW = 16, NTH = 128, LD = DRC_LD, TILE = 64 * LD, NT = KW / 8;
    constexpr int KQ = 8, JW = 2, RS = NTH / KQ, NI = 64 * KQ / NTH;
    static_assert(NW * KW == 64 && NW * 32 == NTH, "64 keys per CTA");
    constexpr int RSV = NTH / 4, NIV = 256 / NTH, RS1 = NTH / 16, NI1 = 1024 / NTH;
    drc_bf *const tiles = (drc_bf *)drc_sm;
    float *const Fs = (float *)(tiles + NB * DRC_NT * TILE);
    float *const Ps = Fs + NB * 2 * 64 * DRC_SU;
    drc_bf *const Rh = (drc_bf *)(Ps + 2 * DRC_NS * 16 * DRC_PLD), *const Rl = Rh + 16 * DRC_RLD;
    drc_bf *const Oh = Rl + 16 * DRC_RLD, *const Ol = Oh + 16 * DRC_RLD;
    const int t = threadIdx.x, w = t >> 5, lane = t & 31, g = lane >> 2, q = lane & 3;
    const int m8 = lane >> 3, rr = lane & 7, kb = w * KW;
    const unsigned rank = la_cl_rank();
    const int kr = (int)rank * 64; /* this CTA's first key */
    const int K = (int)p.K, V = (int)p.V, HS = (int)p.HS, H = (int)p.H, K8 = (K + 7) & ~7;
    const int nvb = (V + 15) / 16, blk = (int)(blockIdx.x >> 1), nh = blk / nvb;
    const int n = nh / HS, hs = nh % HS, hq = hs / (HS / H);
    const int v0 = (blk % nvb) * 16;
    const int vc = V - v0 < 16 ? V - v0 : 16;
    const bool uvec = (V & 3) == 0;
    const la_cu_seq s = p.seqs[n];
    const size_t sbase = ((size_t)n * HS + hs) * K * V;
    const unsigned HSV = (unsigned)HS * V, rs = (unsigned)HS * K8, qs = (unsigned)H * K8;
    const unsigned st0 = (unsigned)s.start;
    /* the peer's partial slots: this warp's slot 4 rank + w there */
    const unsigned psr = la_cl_map(Ps, rank ^ 1u);

    const int r0 = t / KQ, c8 = (t % KQ) * 8;
    const bool cin = kr + c8 < K8;
    const unsigned ko0 = (st0 + r0) * rs + hs * K8 + kr + c8;
    const unsigned qo0 = (st0 + r0) * qs + hq * K8 + kr + c8;
    const int so0 = r0 * LD + c8;
    const int rv0 = uvec ? t >> 2 : t >> 4, cv = uvec ? (t & 3) * 4 : t & 15;
    const bool vin = cv < vc;
    const unsigned vo0 = (st0 + rv0) * HSV + hs * V + v0 + cv;
    const int fo0 = rv0 * DRC_SU + cv;

    /* D[j][e] = dh^T[v][i], v = g + 8 (e >> 1), i = kr + kb + 8 j + 2 q + (e & 1) */
    float D[NT][4];
    unsigned dmask = 0;
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int v = g + 8 * (e >> 1), i = kr + kb + 8 * j + 2 * q + (e & 1);
            const bool in = i < K && v < vc;
            dmask |= (in ? 1u : 0u) << (4 * j + e);
            D[j][e] = (dsT && in) ? dsT[sbase + (size_t)i * V + v0 + v] : 0.f;
        }
    const unsigned KV = (unsigned)K * V;
    const unsigned ho0 = ((unsigned)s.chunk0 * HS + hs) * KV + (kr + kb + 2 * q) * V + v0 + g;
    const unsigned ro0 = (st0 + 8 * JW * w + 2 * q) * HSV + hs * V + v0 + g;

    auto issue = [&](int c, int b, bool last) {
        const int L = last ? (int)(s.len - (int64_t)c * LA_CU_C) : LA_CU_C;
        const unsigned kc = ko0 + (unsigned)c * (LA_CU_C * rs);
        const unsigned qc = qo0 + (unsigned)c * (LA_CU_C * qs);
        drc_bf *tb = tiles + b * DRC_NT * TILE + so0;
#pragma unroll
        for (int i = 0; i < NI; i++) {
            const bool in = cin && (!last || r0 + RS * i < L);
            const unsigned off = in ? kc + (unsigned)(RS * i) * rs : 0u;
            const unsigned qf = in ? qc + (unsigned)(RS * i) * qs : 0u;
            drc_bf *d = tb + RS * i * LD;
            la_cu_cpb16(d, p.Kh + off, in ? 16 : 0);
            la_cu_cpb16(d + TILE, p.Kl + off, in ? 16 : 0);
            la_cu_cpb16(d + 2 * TILE, p.Wh + off, in ? 16 : 0);
            la_cu_cpb16(d + 3 * TILE, p.Wl + off, in ? 16 : 0);
            la_cu_cpb16(d + 4 * TILE, Qb + qf, in ? 16 : 0);
        }
        float *rb = Fs + b * 2 * 64 * DRC_SU + fo0, *ob = rb + 64 * DRC_SU;
        const unsigned vcb = vo0 + (unsigned)c * (LA_CU_C * HSV);
        if (uvec) {
#pragma unroll
            for (int i = 0; i < NIV; i++) {
                const bool in = vin && (!last || rv0 + RSV * i < L);
                const unsigned off = in ? vcb + (unsigned)(RSV * i) * HSV : 0u;
                la_cu_cpb16(rb + RSV * i * DRC_SU, dRo + off, in ? 16 : 0);
                la_cu_cpb16(ob + RSV * i * DRC_SU, dOq + off, in ? 16 : 0);
            }
        } else {
#pragma unroll
            for (int i = 0; i < NI1; i++) {
                const bool in = vin && (!last || rv0 + RS1 * i < L);
                const unsigned off = in ? vcb + (unsigned)(RS1 * i) * HSV : 0u;
                la_cu_cpb4(rb + RS1 * i * DRC_SU, dRo + off, in ? 4 : 0);
                la_cu_cpb4(ob + RS1 * i * DRC_SU, dOq + off, in ? 4 : 0);
            }
        }
        asm volatile("cp.async.commit_group;\n" ::: "memory");
    };

    const float *const blp = p.bL + ((unsigned)s.chunk0 * HS + hs);
    float bln = s.nch > 0 ? blp[(unsigned)(s.nch - 1) * HS] : 0.f;
    if (s.nch > 0) issue(s.nch - 1, 0, true);
    la_cl_sync(); /* the peer has started: its shared memory may be written */
    for (int c = s.nch - 1, it = 0; c >= 0; c--, it++) {
        const bool last = c == s.nch - 1;
        const int L = last ? (int)(s.len - (int64_t)c * LA_CU_C) : LA_CU_C;
        const int b = NB == 2 ? (it & 1) : 0, par = it & 1;
        const float bl = bln;
        if (c > 0) bln = blp[(unsigned)(c - 1) * HS];
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        __syncthreads(); /* chunk c's tiles in; every warp is past chunk c + 1 */
        if (NB == 2 && c > 0) issue(c - 1, b ^ 1, false);
        const drc_bf *const Kt = tiles + b * DRC_NT * TILE, *const Wt = Kt + 2 * TILE;
        const drc_bf *const Qt = Kt + 4 * TILE;
        if (dhst) {
            float *hc = dhst + (ho0 + (unsigned)c * (HS * KV));
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (dmask >> (4 * j + e) & 1u)
                        hc[(8 * j + (e & 1)) * V + 8 * (e >> 1)] = D[j][e];
        }
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
                la_tc_mma<drc_bf>(P[2 * jj], ah, bh[0], bh[1]);
                la_tc_mma<drc_bf>(P[2 * jj + 1], ah, bh[2], bh[3]);
                la_tc_mma<drc_bf>(Px[2 * jj], al, bh[0], bh[1]);
                la_tc_mma<drc_bf>(Px[2 * jj + 1], al, bh[2], bh[3]);
                la_tc_mma<drc_bf>(Px[2 * jj], ah, bw[0], bw[1]);
                la_tc_mma<drc_bf>(Px[2 * jj + 1], ah, bw[2], bw[3]);
            }
        }
        { /* this warp's partial to slot 4 rank + w of parity par, here and in the peer */
            const int so = ((par * DRC_NS + 4 * (int)rank + w) * 16) * DRC_PLD;
            float *pw = Ps + so;
            const unsigned pr = psr + 4u * (unsigned)so;
#pragma unroll
            for (int j = 0; j < 8; j++) {
#pragma unroll
                for (int e = 0; e < 4; e++) P[j][e] += Px[j][e];
                const int o0 = g * DRC_PLD + 8 * j + 2 * q, o1 = o0 + 8 * DRC_PLD;
                *(float2 *)&pw[o0] = make_float2(P[j][0], P[j][1]);
                *(float2 *)&pw[o1] = make_float2(P[j][2], P[j][3]);
                la_cl_st2(pr + 4u * o0, P[j][0], P[j][1]);
                la_cl_st2(pr + 4u * o1, P[j][2], P[j][3]);
            }
        }
        la_cl_sync(); /* both CTAs' partials out */
        {
            const float *const Rb = Fs + b * 2 * 64 * DRC_SU, *const Ob = Rb + 64 * DRC_SU;
            const float *const Pp = Ps + par * DRC_NS * 16 * DRC_PLD;
            float *const rc = dRo + (ro0 + (unsigned)c * (LA_CU_C * HSV));
#pragma unroll
            for (int jw = 0; jw < JW; jw++) {
                const int j = JW * w + jw;
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const int v = g + 8 * hf, tt = 8 * j + 2 * q, o = v * DRC_PLD + tt;
                    float2 a = *(const float2 *)&Pp[o];
#pragma unroll
                    for (int ww = 1; ww < DRC_NS; ww++) {
                        const float2 y = *(const float2 *)&Pp[ww * 16 * DRC_PLD + o];
                        a.x += y.x, a.y += y.y;
                    }
                    const float r0f = Rb[tt * DRC_SU + v] + a.x,
                                r1f = Rb[(tt + 1) * DRC_SU + v] + a.y;
                    uint32_t hi, lo;
                    la_cu_bf16_parts(-r0f, -r1f, hi, lo);
                    *(uint32_t *)&Rh[v * DRC_RLD + tt] = hi;
                    *(uint32_t *)&Rl[v * DRC_RLD + tt] = lo;
                    la_cu_bf16_parts(Ob[tt * DRC_SU + v], Ob[(tt + 1) * DRC_SU + v], hi, lo);
                    *(uint32_t *)&Oh[v * DRC_RLD + tt] = hi;
                    *(uint32_t *)&Ol[v * DRC_RLD + tt] = lo;
                    if (jw == (int)rank && v < vc) {
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
            const int ao = ((m8 & 1) * 8 + rr) * DRC_RLD + 16 * kt + (m8 >> 1) * 8;
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
                la_tc_mma<drc_bf>(D[2 * jn], ah, bh[0], bh[1]);
                la_tc_mma<drc_bf>(D[2 * jn + 1], ah, bh[2], bh[3]);
                la_tc_mma<drc_bf>(D[2 * jn], oh, bq[0], bq[1]);
                la_tc_mma<drc_bf>(D[2 * jn + 1], oh, bq[2], bq[3]);
                la_tc_mma<drc_bf>(Dx[2 * jn], al, bh[0], bh[1]);
                la_tc_mma<drc_bf>(Dx[2 * jn + 1], al, bh[2], bh[3]);
                la_tc_mma<drc_bf>(Dx[2 * jn], ah, bw[0], bw[1]);
                la_tc_mma<drc_bf>(Dx[2 * jn + 1], ah, bw[2], bw[3]);
                la_tc_mma<drc_bf>(Dx[2 * jn], ol, bq[0], bq[1]);
                la_tc_mma<drc_bf>(Dx[2 * jn + 1], ol, bq[2], bq[3]);
            }
        }
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) D[j][e] += Dx[j][e];
        if (NB == 1 && c > 0) {
            __syncthreads();
            issue(c - 1, 0, false);
        }
    }
    if (ds0)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int v = g + 8 * (e >> 1), i = kr + kb + 8 * j + 2 * q + (e & 1);
                if (dmask >> (4 * j + e) & 1u) ds0[sbase + (size_t)i * V + v0 + v] = D[j][e];
            }
#endif
}

/* cuda-rev9: the cluster reverse pass where it pays and fits: 64 < K <= 128,
 * compute capability 9+, twice the one-CTA grid within one wave (one CTA
 * per SM), its shared memory within the opt-in limit. Returns 0 where not
 * taken (the caller launches the one-CTA kernel), else 1 with *st set. */
int la__cu_delta_rev_cl(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                        const void *Qb, const float *dOq, float *dRo, float *dhst, la_status *st) {
    if (c->K <= 64 || c->K > 128) return 0;
    const int64_t ctas = 2 * ((c->V + 15) / 16) * c->N * c->HS;
    if (ctas > la__cu_sm_count(c)) return 0;
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device) !=
        cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    if (major < 9 || drc_smem<2>() > (size_t)la__cu_smem_optin(c)) return 0;
    cudaError_t e =
        la_cl_launch(la_cu_dcb_rev_cl<2>, (unsigned)ctas, 2u, 128, drc_smem<2>(), stream, p,
                     (const drc_bf *)Qb, dOq, (const float *)c->dsT, c->ds0, dRo, dhst);
    if (e == cudaSuccess) e = cudaGetLastError();
    *st = e == cudaSuccess ? LA_OK : la__cu_error(e, c->op, "la_cu_dcb_rev_cl launch");
    return 1;
}
