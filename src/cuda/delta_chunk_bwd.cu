/* DeltaNet and Gated DeltaNet on the GPU, chunk-form backward: the state
 * gradients at every chunk boundary by a reverse chunk pass, after which
 * every chunk's token-level backward (la_cu_delta_bwd in delta.cu, one
 * chunk per work item) runs in parallel. Per chunk, with the forward's
 *   O = Qt h + P R,  R = U - W h,  h' = b_L h + Ks^T R
 * (Qt = scale diag(b / |q|) Q, P = scale (Q K^T (.) Gamma (.) causal) / norms,
 * Ks = diag(e^{gam_L - gam} / |k|) K), the gradient of the state before the
 * chunk from the one after it (dh') and dO is
 *   dR = P^T dO + Ks dh',  dh = b_L dh' + Qt^T dO - W^T dR.
 * P^T dO is parallel over chunks (first kernel, which also writes the row
 * scales of Qt); the reverse pass is sequential per (sequence, value head,
 * VB value columns) like the forward's state pass, columns being
 * independent. fp32 FFMA, fixed summation orders, no atomics; for bf16
 * inputs the reverse pass runs on tensor cores instead (delta_rev_tc.cu,
 * cuda-delta7; LINATTN_CUDA_DELTA_TC_REV=0 keeps this one). */
#include "common.cuh"
#include "delta_chunk.cuh"

/* dRo = P^T dO ([tokens][HS][V], fp32); Qd = Qt (rows scale b_t q_t / |q_t|),
 * dOf = dO in fp32 (the reverse pass loads fp32 tiles asynchronously).
 * cuda-delta7: with Qb (the tensor-core reverse pass, bf16) instead Qb = q
 * as bf16 ([tokens][H][K8], zero-padded; written by the first value head of
 * each q head), dOf = qsc_t dO_t, and Qd is not written. */
template <typename T>
__global__ void __launch_bounds__(256) la_cu_dcb_pto(la_cu_dc_args p, const void *d_o, float *dRo,
                                                     float *Qd, float *dOf, __nv_bfloat16 *Qb) {
    __shared__ float qsc[LA_CU_C];
    __shared__ double gam[LA_CU_C];
    __shared__ float rq[LA_CU_C], rk[LA_CU_C];
    __shared__ float P[LA_CU_C][LA_CU_C + 1];
    __shared__ la_cu_gemm_smem gs;
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int64_t HS = p.HS, H = p.H, K = p.K, V = p.V, hs = blockIdx.y, hq = hs / (HS / H);
    const int L = ch.len, t = threadIdx.x, ty = t >> 4, tx = t & 15;
    const int64_t tok0 = ch.tok0, kst = H * K;
    const T *qc = (const T *)p.q + (tok0 * H + hq) * K;
    const T *kc = (const T *)p.k + (tok0 * H + hq) * K;
    const T *dOc = (const T *)d_o + (tok0 * HS + hs) * V;
    la_cu_chunk_gates(gam, p.g, 0.f, tok0, L, HS, (int)hs);
    la_cu_dc_rnorm<T>(rq, (const T *)p.q, tok0, L, H, hq, K, p.use_l2);
    la_cu_dc_rnorm<T>(rk, (const T *)p.k, tok0, L, H, hq, K, p.use_l2);
    __syncthreads();
    if (t < L) qsc[t] = p.scale * (la_cu_expd(gam[t]) * rq[t]);
    __syncthreads();
    if (Qb) {
        const int K8 = ((int)K + 7) & ~7;
        if (hs % (HS / H) == 0)
            for (int e = t; e < L * K8; e += 256) {
                const int r = e / K8, i = e % K8;
                Qb[((tok0 + r) * H + hq) * K8 + i] =
                    __float2bfloat16_rn(i < (int)K ? ldf(qc + r * kst + i) : 0.f);
            }
    } else {
        for (int e = t; e < L * (int)K; e += 256) {
            const int r = e / (int)K, i = e % (int)K;
            Qd[((tok0 + r) * HS + hs) * K + i] = qsc[r] * ldf(qc + r * kst + i);
        }
    }
    for (int e = t; e < L * (int)V; e += 256) {
        const int r = e / (int)V, j = e % (int)V;
        const float x = ldf(dOc + r * HS * V + j);
        dOf[((tok0 + r) * HS + hs) * V + j] = Qb ? qsc[r] * x : x;
    }
    float acc[4][4];
    la_cu_zero(acc);
    la_cu_gemm<true>(
        acc, (int)K, [&](int m, int r) -> float { return m < L ? ldf(qc + m * kst + r) : 0.f; },
        [&](int r, int n) -> float { return n < L ? ldf(kc + n * kst + r) : 0.f; }, gs);
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int m = ty + 16 * a, n = tx + 16 * b;
            P[m][n] = (n <= m && m < L)
                          ? p.scale * (rq[m] * rk[n] * acc[a][b]) * la_cu_expd(gam[m] - gam[n])
                          : 0.f;
        }
    __syncthreads();
    for (int64_t v0 = 0; v0 < V; v0 += 64) {
        la_cu_zero(acc);
        la_cu_gemm(
            acc, LA_CU_C, [&](int m, int r) -> float { return P[r][m]; },
            [&](int r, int n) -> float {
                return (r < L && v0 + n < V) ? ldf(dOc + r * HS * V + v0 + n) : 0.f;
            },
            gs);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int m = ty + 16 * a, n = tx + 16 * b;
                if (m < L && v0 + n < V) dRo[((tok0 + m) * HS + hs) * V + v0 + n] = acc[a][b];
            }
    }
}

/* Reverse pass. Shared, NB buffers of: W, Kd, Qd of the chunk ([64][KP]
 * each, zero outside), dO and dRo then dR ([64][VB] each); then dh
 * ([K4][VB]). Writes dh' (the gradient of the state after chunk c) into
 * dhst[c] before stepping through chunk c, and d_initial_state at the end. */
template <int VB, int NB> static size_t dcb_rev_smem(int64_t K) {
    const int K4 = la_cu_dc_k4(K), KP = K4 + 4;
    return sizeof(float) * ((size_t)NB * (3 * LA_CU_C * KP + 2 * LA_CU_C * VB) + (size_t)K4 * VB);
}
template <int VB, int KA16, int NB>
__global__ void __launch_bounds__(256)
    la_cu_dcb_rev(la_cu_dc_args p, const float *Qd, const float *dOf, const float *dsT, float *ds0,
                  float *dRo, float *dhst) {
    extern __shared__ float4 dcb_sm4[];
    float *sm = (float *)dcb_sm4;
    constexpr int CJ = VB < 16 ? VB : 16, RI = 256 / CJ, TJ = VB / CJ, RU = LA_CU_C / RI;
    constexpr int KA = KA16 * 16 / RI;
    const int64_t K = p.K, V = p.V, HS = p.HS;
    const int K4 = la_cu_dc_k4(K), KP = K4 + 4, BUF = 3 * LA_CU_C * KP + 2 * LA_CU_C * VB;
    const bool vec = (K & 3) == 0 && (V & 3) == 0;
    float *Dm = sm + NB * BUF;
    const int t = threadIdx.x, ri = t / CJ, cj = t % CJ;
    const int64_t n = blockIdx.x / HS, hs = blockIdx.x % HS;
    const int64_t v0 = (int64_t)blockIdx.y * VB;
    const int vc = (int)(V - v0 < VB ? V - v0 : VB);
    const la_cu_seq s = p.seqs[n];
    const size_t sbase = ((size_t)n * HS + hs) * K * V;
    la_cu_dc_state_in(Dm, dsT ? dsT + sbase + v0 : nullptr, K, K4, V, VB, vc, t);
    auto issue = [&](int c, int b) {
        const int64_t tok0 = s.start + (int64_t)c * LA_CU_C, rem = s.len - (int64_t)c * LA_CU_C;
        const int L = (int)(rem < LA_CU_C ? rem : LA_CU_C);
        float *Wb = sm + b * BUF, *Kb = Wb + LA_CU_C * KP, *Qb = Kb + LA_CU_C * KP;
        float *Ob = Qb + LA_CU_C * KP, *Rb = Ob + LA_CU_C * VB;
        const int64_t ko = (tok0 * HS + hs) * K, vo = (tok0 * HS + hs) * V + v0;
        la_cu_dc_tile(Wb, KP, p.W + ko, HS * K, L, (int)K, K4, vec);
        la_cu_dc_tile(Kb, KP, p.Kd + ko, HS * K, L, (int)K, K4, vec);
        la_cu_dc_tile(Qb, KP, Qd + ko, HS * K, L, (int)K, K4, vec);
        la_cu_dc_tile(Ob, VB, dOf + vo, HS * V, L, vc, VB, vec);
        la_cu_dc_tile(Rb, VB, dRo + vo, HS * V, L, vc, VB, vec);
        la_cu_cp_commit();
    };
    if (s.nch > 0) issue(s.nch - 1, 0);
    for (int c = s.nch - 1, it = 0; c >= 0; c--, it++) {
        const int L =
            (int)(s.len - (int64_t)c * LA_CU_C < LA_CU_C ? s.len - (int64_t)c * LA_CU_C : LA_CU_C);
        const size_t chk = (size_t)s.chunk0 + c;
        const int b = NB == 2 ? (it & 1) : 0;
        const float *Ws = sm + b * BUF, *Ks = Ws + LA_CU_C * KP, *Qs = Ks + LA_CU_C * KP;
        const float *Os = Qs + LA_CU_C * KP;
        float *Rs = sm + b * BUF + 3 * LA_CU_C * KP + LA_CU_C * VB;
        const float bl = p.bL[chk * HS + hs];
        if (NB == 2 && c > 0) {
            issue(c - 1, b ^ 1);
            la_cu_cp_wait<1>();
        } else {
            la_cu_cp_wait<0>();
        }
        __syncthreads();
        la_cu_dc_state_out(dhst + (chk * HS + hs) * K * V + v0, Dm, K, V, VB, vc, t);
        /* dR = dRo + Ks dh' */
        float racc[RU][TJ];
        la_cu_dc_rows_state<RU, TJ, RI, CJ>(racc, Ks, KP, Dm, VB, K4, ri, cj);
#pragma unroll
        for (int u = 0; u < RU; u++)
#pragma unroll
            for (int w = 0; w < TJ; w++) {
                const int r = ri + RI * u, j = cj + CJ * w;
                const float x = Rs[r * VB + j] + racc[u][w];
                Rs[r * VB + j] = x;
                if (r < L && j < vc) /* dR for the chunkwise token gradients */
                    dRo[((s.start + (int64_t)c * LA_CU_C + r) * HS + hs) * V + v0 + j] = x;
            }
        __syncthreads();
        /* dh = b_L dh' + Qt^T dO - W^T dR */
        float hacc[KA][TJ];
#pragma unroll
        for (int a = 0; a < KA; a++)
#pragma unroll
            for (int w = 0; w < TJ; w++) hacc[a][w] = 0.f;
        for (int r = 0; r < L; r++) {
            float ov[TJ], rv[TJ];
#pragma unroll
            for (int w = 0; w < TJ; w++) {
                ov[w] = Os[r * VB + cj + CJ * w];
                rv[w] = Rs[r * VB + cj + CJ * w];
            }
#pragma unroll
            for (int a = 0; a < KA; a++) {
                const int i = ri + RI * a;
                if (i < K4) {
                    const float qv = Qs[r * KP + i], wv = Ws[r * KP + i];
#pragma unroll
                    for (int w = 0; w < TJ; w++)
                        hacc[a][w] = fmaf(-wv, rv[w], fmaf(qv, ov[w], hacc[a][w]));
                }
            }
        }
        la_cu_dc_state_decay_add<KA, TJ, RI, CJ>(Dm, hacc, bl, K4, VB, ri, cj);
        __syncthreads(); /* buffer b and dh read: free for the next loads */
        if (NB == 1 && c > 0) issue(c - 1, 0);
    }
    __syncthreads();
    if (ds0) la_cu_dc_state_out(ds0 + sbase + v0, Dm, K, V, VB, vc, t);
}

template <int VB, int KA, int NB>
static la_status dcb_rev_launch(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                                const float *Qd, const float *dOf, float *dRo, float *dhst) {
    const size_t smem = dcb_rev_smem<VB, NB>(c->K);
    LA_CU_TRY(c->op, cudaFuncSetAttribute(la_cu_dcb_rev<VB, KA, NB>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)(c->N * c->HS), (unsigned)((c->V + VB - 1) / VB));
    la_cu_dcb_rev<VB, KA, NB><<<grid, 256, smem, stream>>>(p, Qd, dOf, c->dsT, c->ds0, dRo, dhst);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}

/* Double-buffered where it fits; 32-column blocks where there are enough. */
template <int VB, int KA>
static la_status dcb_rev_nb(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t s,
                            const float *Qd, const float *dOf, float *dRo, float *dhst) {
    if (dcb_rev_smem<VB, 2>(c->K) <= (size_t)la__cu_smem_optin(c))
        return dcb_rev_launch<VB, KA, 2>(c, p, s, Qd, dOf, dRo, dhst);
    return dcb_rev_launch<VB, KA, 1>(c, p, s, Qd, dOf, dRo, dhst);
}
template <int KA>
static la_status dcb_rev_vb(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t s,
                            const float *Qd, const float *dOf, float *dRo, float *dhst) {
    switch (la__cu_delta_state_vb(c, la__cu_sm_count(c), dcb_rev_smem<32, 1>(c->K))) {
    case 32: return dcb_rev_nb<32, KA>(c, p, s, Qd, dOf, dRo, dhst);
    case 8: return dcb_rev_nb<8, KA>(c, p, s, Qd, dOf, dRo, dhst);
    default: return dcb_rev_nb<16, KA>(c, p, s, Qd, dOf, dRo, dhst);
    }
}

int la__cu_delta_chunk_bwd_fits(const la__cu_call *c) {
    return dcb_rev_smem<16, 1>(c->K) <= (size_t)la__cu_smem_optin(c);
}

/* After la__cu_delta_chunk_states filled p (W, Kd, bL; p.hst unused here):
 * dhst[c] = gradient of the state after chunk c, c->ds0 written. */
template <typename T>
static la_status dcb_dstates(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb,
                             const la_cu_dc_args &p, float *dhst, float **dRout) {
    la_status st;
    const size_t nt = (size_t)c->B * c->T * c->HS;
    /* cuda-delta7: the tensor-core reverse pass (bf16) takes q as bf16
     * ([tokens][H][K8]) in Qd's place, and dO scaled by qsc */
    const bool tc = la__cu_delta_tc_rev(c, p) != 0;
    const size_t qbytes =
        tc ? (size_t)c->B * c->T * c->H * (size_t)((c->K + 7) & ~(int64_t)7) * 2 : nt * c->K * 4;
    float *dRo, *Qd, *dOf;
    if ((st = la__cu_alloc(ar, (void **)&dRo, nt * c->V * 4)) ||
        (st = la__cu_alloc(ar, (void **)&Qd, qbytes)) ||
        (st = la__cu_alloc(ar, (void **)&dOf, nt * c->V * 4)))
        return st;
    if (dRout) *dRout = dRo;
    if (tb.nchunks > 0 && tc && la__cu_delta_pto_tc_on(c, tb.nchunks)) {
        /* cuda-dout9: P^T dO on tensor cores (delta_pto_tc.cu) */
        if ((st = la__cu_delta_pto_tc(c, p, tb.nchunks, ar->stream, dRo, dOf, (__nv_bfloat16 *)Qd)))
            return st;
    } else if (tb.nchunks > 0) {
        la_cu_dcb_pto<T><<<dim3((unsigned)tb.nchunks, (unsigned)c->HS), 256, 0, ar->stream>>>(
            p, c->d_o, dRo, Qd, dOf, tc ? (__nv_bfloat16 *)Qd : NULL);
        LA_CU_LAUNCHED(c->op);
    }
    if (tc) return la__cu_delta_rev_tc(c, p, ar->stream, Qd, dOf, dRo, dhst);
    if (c->K <= 64) return dcb_rev_vb<4>(c, p, ar->stream, Qd, dOf, dRo, dhst);
    if (c->K <= 128) return dcb_rev_vb<8>(c, p, ar->stream, Qd, dOf, dRo, dhst);
    return dcb_rev_vb<16>(c, p, ar->stream, Qd, dOf, dRo, dhst);
}

la_status la__cu_delta_chunk_dstates(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb,
                                     float *hst, float *dhst, la_cu_dc_args *pout, float **dR) {
    la_cu_dc_args p;
    la_status st = LA_OK;
    /* cuda-saved7: the forward's products where it saved them (la_saved; hst
     * is then la__cu_delta_saved_hst), else prep and the state pass again */
    if (!la__cu_delta_saved_args(c, tb, p))
        st = la__cu_delta_chunk_states(c, ar, tb, hst, &p, pout != NULL);
    if (st) return st;
    LA_CU_DTYPE_SWITCH(c->dtype, T, st = dcb_dstates<T>(c, ar, tb, p, dhst, dR));
    if (pout) *pout = p;
    return st;
}
