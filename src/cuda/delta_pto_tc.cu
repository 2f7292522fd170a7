/* cuda-dout9: the delta rules' backward P^T dO on tensor cores (bf16
 * inputs, the tensor-core reverse pass's inputs; la_cu_dcb_pto in
 * delta_chunk_bwd.cu computes the same with FFMA):
 *   dRo = P^T dO  ([tokens][HS][V], fp32),  dOf = qsc_t dO_t  (fp32),
 *   Qb = q as bf16 ([tokens][H][K8], zero-padded; first value head of each
 *   q head), qsc_t = scale b_t / |q_t|,
 * P = scale (Q K^T (.) Gamma (.) causal) / (|q| |k|). One CTA of 4 warps per
 * (chunk, value head); the value heads of a chunk are neighbours in the
 * launch order (they share q, k). Q, K by 16-byte cp.async (exact in bf16);
 * warp w forms rows s = 16w .. of P^T = (K Q^T)^T-masked (one tensor-core
 * product), splits them into bf16 hi + lo A fragments in registers (the
 * m16n8 accumulator layout is the A layout), and multiplies them with dO
 * (exact, a 64 x 64-column bf16 tile by cp.async, double-buffered over the
 * value blocks): Ph dO + Pl dO, fp32 accumulation, the k-steps left of the
 * diagonal (P^T = 0 there) skipped. dOf and Qb come from the shared tiles
 * with 16-byte accesses. Row norms by 16-byte shared loads (la_dt_rnorm_v:
 * a fixed order, not la_cu_dcb_pto's), so qsc, dOf and dRo differ from
 * la_cu_dcb_pto's by rounding; Qb is bitwise the same. No atomics; fixed
 * orders. cuda-par12: instantiated with and without gates (G = p.g !=
 * NULL); without, the serial gate sum and the e^0 = 1 factors are not
 * formed (same bits). dO block 1 is fetched with block 0 (cuda-par12
 * without gates, cuda-outg13 with them too). */
#include "delta_chunk.cuh"
#include "delta_tile.cuh"
#include "tc.cuh"

#include <stdlib.h>
#include <string.h>

#define DPO_LD 72 /* row stride (bf16) of the dO tiles */
template <int KP> static size_t dpo_smem() {
    return (size_t)2 * 64 * (KP + 8) * 2 + (size_t)2 * 64 * DPO_LD * 2;
}

template <int KP, bool G>
__global__ void __launch_bounds__(128, 4)
    la_cu_dcb_pto_tc(la_cu_dc_args p, const la_dt_bf *d_o, float *dRo, float *dOf, la_dt_bf *Qb) {
    extern __shared__ __align__(128) unsigned char dpo_sm[];
    constexpr int LD = KP + 8, KS = KP / 16;
    __shared__ double gam[LA_CU_C];
    __shared__ float gsm[LA_CU_C];
    __shared__ float qsc[LA_CU_C], rq[LA_CU_C], rk[LA_CU_C];
    la_dt_bf *const Qs = (la_dt_bf *)dpo_sm, *const Ks = Qs + 64 * LD, *const Ob = Ks + 64 * LD;
    const int64_t HS = p.HS, H = p.H, K = p.K, V = p.V;
    const int64_t cid = blockIdx.x / HS, hs = blockIdx.x - cid * HS, hq = hs / (HS / H);
    const la_cu_chunk ch = p.chunks[cid];
    const int L = ch.len, t = threadIdx.x, w = t >> 5, lane = t & 31, g = lane >> 2, q = lane & 3;
    const int m8 = lane >> 3, rr = lane & 7;
    const int64_t tok0 = ch.tok0, kst = H * K, vst = HS * V;
    const la_dt_bf *qc = (const la_dt_bf *)p.q + (tok0 * H + hq) * K;
    const la_dt_bf *kc = (const la_dt_bf *)p.k + (tok0 * H + hq) * K;
    const la_dt_bf *dOc = d_o + (tok0 * HS + hs) * V;
    const bool vec = (K & 7) == 0 && (((uintptr_t)p.q | (uintptr_t)p.k) & 15) == 0;
    const bool ovec = (V & 7) == 0 && ((uintptr_t)d_o & 15) == 0;
    la_dt_fetch<KP>(Qs, qc, kst, L, (int)K, vec);
    la_dt_fetch<KP>(Ks, kc, kst, L, (int)K, vec);
    la_cu_cp_commit();
    la_dt_fetch<64>(Ob, dOc, vst, L, (int)V, ovec);
    la_cu_cp_commit();
    /* dO block 1 fetched now, not after P (cuda-par12 without gates,
     * cuda-outg13 with them too); block vb + 1 >= 2 still goes into block
     * vb - 1's buffer at block vb */
    const int nvb = (int)((V + 63) / 64);
    if (nvb > 1) {
        la_dt_fetch<64>(Ob + 64 * DPO_LD, dOc + 64, vst, L, (int)(V - 64), ovec);
        la_cu_cp_commit();
    }
    la_dt_gates_load(gsm, p.g, tok0, L, HS, hs);
    if (nvb > 1)
        la_cu_cp_wait<2>();
    else
        la_cu_cp_wait<1>();
    __syncthreads();
    if (G)
        la_dt_gates_sum(gam, gsm, L, 96); /* (warp 3; visible after the next barrier) */
    else if (t < LA_CU_C)
        gam[t] = 0.0; /* the sums of zeros (the same bits), no serial loop */
    la_dt_rnorm_v<KP>(rq, Qs, L, p.use_l2);
    la_dt_rnorm_v<KP>(rk, Ks, L, p.use_l2);
    if (Qb && hs % (HS / H) == 0) {
        const int K8 = ((int)K + 7) & ~7, KQ = K8 / 8;
        for (int e = t; e < L * KQ; e += 128) {
            const int r = e / KQ, c8 = (e - r * KQ) * 8;
            *(uint4 *)(Qb + ((tok0 + r) * H + hq) * K8 + c8) = *(const uint4 *)(Qs + r * LD + c8);
        }
    }
    __syncthreads();
    if (t < LA_CU_C) qsc[t] = t < L ? p.scale * (la_cu_expd(gam[t]) * rq[t]) : 0.f;
    /* P^T rows s = 16 w + .., columns t = 8 j + ..: K Q^T masked, as bf16
     * hi + lo A fragments over t (k-step kt covers t = 16 kt ..) */
    uint32_t ph[4][4], pl[4][4];
    {
        float A[8][4];
        la_dt_xyt<KS>(A, Ks, Qs, LD, w, m8, rr);
        float P[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int s = 16 * w + g + 8 * (e >> 1), tq = 8 * j + 2 * q + (e & 1);
                /* without gates the factor is e^0 = 1: not formed (same bits) */
                const float x = p.scale * (rq[tq] * rk[s] * A[j][e]);
                P[j][e] = (s <= tq && tq < L) ? (G ? x * la_cu_expd(gam[tq] - gam[s]) : x) : 0.f;
            }
        la_dt_parts(P, ph, pl);
    }
    const bool f4 = (V & 3) == 0 && ((uintptr_t)dOf & 15) == 0;
    const bool r2 = (V & 1) == 0 && ((uintptr_t)dRo & 7) == 0;
    for (int vb = 0; vb < nvb; vb++) {
        const int64_t v0 = 64 * (int64_t)vb;
        la_dt_bf *const Oc = Ob + (vb & 1) * 64 * DPO_LD;
        const bool issue = vb > 0 && vb + 1 < nvb; /* block vb + 1 not yet fetched */
        if (issue) {
            __syncthreads(); /* block vb - 1's tile (the other buffer) is read */
            la_dt_fetch<64>(Ob + ((vb + 1) & 1) * 64 * DPO_LD, dOc + v0 + 64, vst, L,
                            (int)(V - v0 - 64), ovec);
            la_cu_cp_commit();
        }
        if (vb + 1 < nvb)
            la_cu_cp_wait<1>();
        else
            la_cu_cp_wait<0>();
        __syncthreads(); /* block vb's tile visible (vb = 0: qsc too) */
        /* dOf = qsc dO, 8 columns per thread and step */
        for (int e = t; e < 64 * 8; e += 128) {
            const int r = e >> 3, c8 = (e & 7) * 8;
            if (r >= L || v0 + c8 >= V) continue;
            const uint4 u = *(const uint4 *)(Oc + r * DPO_LD + c8);
            const __nv_bfloat162 *b2 = (const __nv_bfloat162 *)&u;
            const float s = qsc[r];
            float x[8];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                x[2 * i] = s * __bfloat162float(b2[i].x);
                x[2 * i + 1] = s * __bfloat162float(b2[i].y);
            }
            float *d = dOf + (tok0 + r) * vst + hs * V + v0 + c8;
            if (f4 && v0 + c8 + 7 < V) {
                *(float4 *)d = make_float4(x[0], x[1], x[2], x[3]);
                *(float4 *)(d + 4) = make_float4(x[4], x[5], x[6], x[7]);
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++)
                    if (v0 + c8 + i < V) d[i] = x[i];
            }
        }
        /* dRo rows 16 w .., this block's 64 columns */
        float acc[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[j][e] = 0.f;
#pragma unroll
        for (int kt = 0; kt < 4; kt++) {
            if (kt < w) continue; /* P^T rows >= 16 w are 0 left of column 16 w */
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                uint32_t b[4];
                la_tc_ldsm4<true>(b, Oc + (16 * kt + (m8 & 1) * 8 + rr) * DPO_LD + 16 * jj +
                                         (m8 >> 1) * 8);
                la_tc_mma<la_dt_bf>(acc[2 * jj], ph[kt], b[0], b[1]);
                la_tc_mma<la_dt_bf>(acc[2 * jj + 1], ph[kt], b[2], b[3]);
                la_tc_mma<la_dt_bf>(acc[2 * jj], pl[kt], b[0], b[1]);
                la_tc_mma<la_dt_bf>(acc[2 * jj + 1], pl[kt], b[2], b[3]);
            }
        }
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int s = 16 * w + g + 8 * hf;
                const int64_t col = v0 + 8 * j + 2 * q;
                if (s >= L) continue;
                float *d = dRo + (tok0 + s) * vst + hs * V + col;
                if (r2 && col < V) {
                    *(float2 *)d = make_float2(acc[j][2 * hf], acc[j][2 * hf + 1]);
                } else {
                    if (col < V) d[0] = acc[j][2 * hf];
                    if (col + 1 < V) d[1] = acc[j][2 * hf + 1];
                }
            }
    }
}

template <int KP, bool G>
static la_status dpo_launch1(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                             cudaStream_t stream, float *dRo, float *dOf, __nv_bfloat16 *Qb) {
    const size_t smem = dpo_smem<KP>();
    LA_CU_TRY(c->op, cudaFuncSetAttribute(la_cu_dcb_pto_tc<KP, G>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    la_cu_dcb_pto_tc<KP, G><<<(unsigned)(nchunks * c->HS), 128, smem, stream>>>(
        p, (const la_dt_bf *)c->d_o, dRo, dOf, Qb);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}
template <int KP>
static la_status dpo_launch(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                            cudaStream_t stream, float *dRo, float *dOf, __nv_bfloat16 *Qb) {
    return p.g ? dpo_launch1<KP, true>(c, p, nchunks, stream, dRo, dOf, Qb)
               : dpo_launch1<KP, false>(c, p, nchunks, stream, dRo, dOf, Qb);
}

int la__cu_delta_pto_tc_on(const la__cu_call *c, int64_t nchunks) {
    /* LINATTN_CUDA_DELTA_PTO = old: la_cu_dcb_pto (for A/B; read at each
     * launch) */
    const char *e = getenv("LINATTN_CUDA_DELTA_PTO");
    if (e && !strcmp(e, "old")) return 0;
    return c->dtype == LA_DTYPE_BF16 && c->K <= 256 && nchunks * c->HS <= 0x7fffffff;
}

la_status la__cu_delta_pto_tc(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                              cudaStream_t stream, float *dRo, float *dOf, __nv_bfloat16 *Qb) {
    if (((uintptr_t)Qb & 15) != 0)
        return la__error(LA_ERR_INTERNAL, "%s: bf16 q buffer not aligned", c->op);
    if (c->K <= 64) return dpo_launch<64>(c, p, nchunks, stream, dRo, dOf, Qb);
    if (c->K <= 128) return dpo_launch<128>(c, p, nchunks, stream, dRo, dOf, Qb);
    return dpo_launch<256>(c, p, nchunks, stream, dRo, dOf, Qb);
}
