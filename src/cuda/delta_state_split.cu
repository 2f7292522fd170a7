/* The delta rules' state pass split over time (cuda-split9): where the
 * (sequence, value head, 16 value columns) problems of the tensor-core state
 * pass do not fill the device, every sequence is cut into P segments of
 * whole chunks that run in parallel. Per chunk the pass computes
 *     S' = b_L S + Kd^T (U - W S) = A_c S + Kd^T U,  A_c = b_L I - Kd^T W,
 * so a segment's end state is M S_start + local with M = A_last .. A_first
 * and local its end state from a zero start. Three steps on the stream:
 *   1. local pass (la_cu_dc_state_tc, MODE 1): every segment from a zero
 *      state, plus ceil(K / 16) transition blocks per head that start from
 *      the identity's columns and read U = 0 (the same step then computes
 *      A_c M); writes local ([segments][HS][K][V]) and M ([segments][HS][K]
 *      [K]) only (no R, no per-chunk states);
 *   2. scan (la_cu_dss_scan, fp32 FFMA, keys in ascending order, one CTA
 *      per (sequence, value head, 16 value columns)): start(0) = s0 (or 0),
 *      start(p + 1) = M_p start(p) + local_p; the last one is the final
 *      state;
 *   3. the full pass (MODE 0) per segment from its start state: R into U
 *      and the per-chunk states as without the split (the output kernel and
 *      the backward read the same buffers).
 * Segment p of a sequence of nch chunks holds chunks p cs .. min((p + 1) cs,
 * nch) - 1, cs = ceil(nch / P) (trailing segments may be empty: local = 0,
 * M = I). Work: about three passes (V + K + V columns per head), on P times
 * the CTAs. Fixed partition and summation order, no atomics: bitwise
 * identical run to run (not to the unsplit pass: the states carry other
 * rounding). The reverse pass (dS over chunks, delta_rev_tc.cu) could reuse
 * steps 1 and 2 with the transposed transitions: dS_end(p - 1) =
 * M_p^T dS_end(p) + local'_p, M_p^T = A_first^T .. A_last^T, its transition
 * blocks starting from the identity, the scan running p downwards (the
 * scan kernel's loop order and M's transposition are its only changes);
 * its algebra is checked in float64 (bench/delta_rsplit_check.py), but its
 * phases timed with the existing reverse kernel already lose 1.27-1.85x at
 * the GDN and DeltaNet 1,16384 shapes (cuda-drsplit18), so it is not built.
 * Measured (H200, GDN 1,65536,H2,HV8,128, bench/GPU.md cuda-split9): P = 8
 * takes 2074 + 190 + 1248 us per pass against the cluster kernel's 2215: a
 * chunk step costs an SM as much with two CTAs per SM (single-buffered) as
 * with one (double-buffered), each copying the 68 KB of W, Kd part tiles
 * per chunk per 16-column block, so the split's threefold work over twice
 * the SMs is a loss at any P. Off by default:
 * LINATTN_CUDA_DELTA_SPLIT: unset or 0 never, 1 by grid size, n >= 2 always
 * with P = n (tests reach the split at odd sizes that way);
 * LINATTN_CUDA_DELTA_SPLIT_OCC=1: the double-buffered one-CTA-per-SM kernel
 * for K <= 128 instead of the single-buffered two-per-SM one (A/B knobs). */
#include "delta_chunk.cuh"

#include <stdlib.h>

/* Segment p of sequence n at segs[n P + p]. */
__global__ void la_cu_dss_table(const la_cu_seq *seqs, la_cu_seq *segs, int64_t N, int P) {
    const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= N * P) return;
    const la_cu_seq s = seqs[e / P];
    const int p = (int)(e % P), cs = (s.nch + P - 1) / P;
    const int c0 = p * cs < s.nch ? p * cs : s.nch;
    const int c1 = c0 + cs < s.nch ? c0 + cs : s.nch;
    const int64_t t0 = (int64_t)c0 * LA_CU_C, t1 = (int64_t)c1 * LA_CU_C;
    la_cu_seq g;
    g.start = s.start + t0;
    g.len = (t1 < s.len ? t1 : s.len) - (t0 < s.len ? t0 : s.len);
    g.chunk0 = s.chunk0 + c0, g.nch = c1 - c0;
    segs[e] = g;
}

#define DSS_KT 16 /* keys per staged tile of M */

/* One CTA (256 threads) per (sequence, value head, 16 value columns): the
 * state block S[K][16] in shared memory; per segment start(p) = S is
 * written, then S = M_p S + local_p (thread t: rows t / 16 + 16 r, column
 * t % 16; sums over keys ascending, fmaf, then + local). M is staged by
 * tiles of DSS_KT keys, the next tile's loads issued before this tile's
 * products. K <= 256. */
__global__ void __launch_bounds__(256) la_cu_dss_scan(const float *loc, const float *M,
                                                      float *starts, const float *s0, float *sT,
                                                      int64_t HS, int64_t K, int64_t V, int P) {
    __shared__ float Ss[256][16];
    __shared__ float Ms[256][DSS_KT + 1];
    const int t = threadIdx.x, tv = t & 15, ti = t >> 4;
    const int64_t nh = blockIdx.x, v0 = (int64_t)blockIdx.y * 16, n = nh / HS, hs = nh % HS;
    const int vc = (int)(V - v0 < 16 ? V - v0 : 16);
    const int NR = (int)((K + 15) / 16); /* rows per thread */
    for (int r = 0; r < 16; r++) {
        const int64_t i = ti + 16 * r;
        Ss[i][tv] = (s0 && i < K && tv < vc) ? s0[(nh * K + i) * V + v0 + tv] : 0.f;
    }
    float mr[16];
    auto ldm = [&](int64_t mb, int k0) { /* tile k0 of M (base mb) into mr */
#pragma unroll
        for (int r = 0; r < 16; r++) {
            const int64_t i = ti + 16 * r;
            mr[r] = (r < NR && i < K && k0 + tv < K) ? M[(mb + i) * K + k0 + tv] : 0.f;
        }
    };
    const int nkt = (int)((K + DSS_KT - 1) / DSS_KT);
    ldm(((n * P) * HS + hs) * K, 0);
    for (int p = 0; p < P; p++) {
        const int64_t sb = ((n * P + p) * HS + hs) * K; /* row base of this segment */
        __syncthreads(); /* S complete */
        float acc[16];
#pragma unroll
        for (int r = 0; r < 16; r++) {
            const int64_t i = ti + 16 * r;
            acc[r] = 0.f;
            if (r < NR && i < K && tv < vc) starts[(sb + i) * V + v0 + tv] = Ss[i][tv];
        }
        for (int kt = 0; kt < nkt; kt++) {
            __syncthreads(); /* the previous tile's reads done */
#pragma unroll
            for (int r = 0; r < 16; r++) Ms[ti + 16 * r][tv] = mr[r];
            __syncthreads();
            if (kt + 1 < nkt) ldm(sb, (kt + 1) * DSS_KT);
            else if (p + 1 < P) ldm(sb + HS * K, 0);
            const int k0 = kt * DSS_KT;
#pragma unroll
            for (int r = 0; r < 16; r++)
                if (r < NR)
#pragma unroll
                    for (int kk = 0; kk < DSS_KT; kk++)
                        acc[r] = fmaf(Ms[ti + 16 * r][kk], Ss[k0 + kk][tv], acc[r]);
        }
        __syncthreads(); /* every read of S done */
#pragma unroll
        for (int r = 0; r < 16; r++) {
            const int64_t i = ti + 16 * r;
            if (r < NR && i < K)
                Ss[i][tv] = tv < vc ? acc[r] + loc[(sb + i) * V + v0 + tv] : 0.f;
        }
    }
    __syncthreads();
    if (sT)
        for (int r = 0; r < NR; r++) {
            const int64_t i = ti + 16 * r;
            if (i < K && tv < vc) sT[(nh * K + i) * V + v0 + tv] = Ss[i][tv];
        }
}

/* 0 off, 1 by grid size, n >= 2 forced P = n; occupancy variant 1 or 2. */
static int dss_env(int *occ) {
    static int mode = -1, oc = 2;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_DELTA_SPLIT");
        const char *o = getenv("LINATTN_CUDA_DELTA_SPLIT_OCC");
        const int v = e ? atoi(e) : 0;
        mode = v < 0 ? 0 : v > 64 ? 64 : v;
        oc = (o && o[0] == '1') ? 1 : 2;
    }
    *occ = oc;
    return mode;
}

/* P by grid size: the problems G = N HS ceil(V / 16) under one wave of SMs;
 * P the power of two nearest below 4 SMs / G (two CTAs per SM, the local
 * pass with twice the blocks of the full one: about 4 and 2 waves), at most
 * 16, halved while the chunks per sequence are under 8 P; 0 where not
 * split. */
int la__cu_delta_split_p(const la__cu_call *c, int64_t nchunks, int64_t nsm) {
    int occ;
    const int mode = dss_env(&occ);
    if (mode == 0 || c->K > 256) return 0;
    if (mode >= 2) return mode;
    const int64_t G = c->N * c->HS * ((c->V + 15) / 16);
    if (G <= 0 || G >= nsm) return 0;
    int P = 16;
    while (P >= 2 && (G * P > 4 * nsm || nchunks < 8 * (int64_t)P * c->N)) P >>= 1;
    return P >= 2 ? P : 0;
}

la_status la__cu_delta_state_split(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb,
                                   const la_cu_dc_args &p, int *taken) {
    *taken = 0;
    int occ;
    if (!dss_env(&occ)) return LA_OK; /* off: no device attribute query */
    const int P = la__cu_delta_split_p(c, tb.nchunks, la__cu_sm_count(c));
    if (!P || c->N <= 0) return LA_OK;
    const int64_t nseg = c->N * P, KV = c->K * c->V;
    const size_t tab = ((size_t)nseg * sizeof(la_cu_seq) + 255) & ~(size_t)255;
    const size_t lb = (size_t)nseg * c->HS * (KV + c->K * c->K) * 4;
    const size_t sb = (size_t)nseg * c->HS * KV * 4;
    char *blk;
    la_status st;
    if ((st = la__cu_alloc(ar, (void **)&blk, tab + lb + sb))) return st;
    la_cu_seq *segs = (la_cu_seq *)blk;
    float *loc = (float *)(blk + tab), *starts = (float *)(blk + tab + lb);
    la_cu_dss_table<<<(unsigned)((nseg + 255) / 256), 256, 0, ar->stream>>>(tb.seqs, segs, c->N, P);
    LA_CU_LAUNCHED(c->op);
    la_cu_dc_args q = p;
    q.seqs = segs, q.s0 = NULL, q.sT = loc, q.hst = NULL;
    if ((st = la__cu_delta_state_tc_seg(c, q, nseg, 1, occ, ar->stream))) return st;
    la_cu_dss_scan<<<dim3((unsigned)(c->N * c->HS), (unsigned)((c->V + 15) / 16)), 256, 0,
                     ar->stream>>>(loc, loc + (size_t)nseg * c->HS * KV, starts, p.s0, p.sT,
                                   c->HS, c->K, c->V, P);
    LA_CU_LAUNCHED(c->op);
    q = p;
    q.seqs = segs, q.s0 = starts, q.sT = NULL;
    if ((st = la__cu_delta_state_tc_seg(c, q, nseg, 0, occ, ar->stream))) return st;
    *taken = 1;
    return LA_OK;
}
