/* The delta rules' chunkwise token gradients on tensor cores (bf16 inputs):
 * the same math as la_cu_dcg (delta_chunk_grad.cu, whose header gives the
 * formulas), one CTA of 4 warps per (chunk, value head), every 64x64-class
 * product on mma.sync m16n8k16 (tc.cuh: warp w owns rows 16 w .. 16 w + 15
 * of every 64x64 result, fp32 accumulation). Inputs q, k, dO are exact in
 * bf16 (one part); the fp32 quantities S0, G, R, dR, Yu, A^T, T1, T2 go in
 * as three bf16 parts (hi + lo + lo2, about 24 significant bits), so a
 * product of two fp32 operands is five tensor-core products (tc.cuh's
 * la_tc_mma64x) and one with an input three. The l2 norms of q, k are row
 * factors of the fp32 operands they meet (T1 diag(rk), diag(rq) T1, ...),
 * so q and k stay exact. The gate gradient's sums over Z = dP (.) qk (.)
 * Gamma + diag(beta) dM (.) kk (.) Gamma are taken from the accumulators in
 * double (rows by lane shuffles, columns per warp, warps in order). Fixed
 * orders, no atomics. fp16 keeps la_cu_dcg (its hi part would need fp16's
 * range for the gradients). Opt-in (LINATTN_CUDA_DELTA_TC_GRAD=1): slower
 * than la_cu_dcg as measured, see la__cu_delta_tc_grad. */
#include <stdlib.h>

#include "delta_chunk.cuh"
#include "tc_tile.cuh"

typedef __nv_bfloat16 dgt_bf;

struct dgt_smem {
    float T1[64 * LA_TC_LDF]; /* q.k (masked) until dP's epilogue, then T1 */
    float T2[64 * LA_TC_LDF]; /* k.k (masked) until dM's epilogue, then T2 */
    dgt_bf A[3][LA_TC_TILE];  /* A-operand parts */
    dgt_bf B[3][LA_TC_TILE];  /* B-operand parts */
    dgt_bf X[LA_TC_TILE];     /* q block, or dO block */
    dgt_bf Y[LA_TC_TILE];     /* k block */
    double gam[LA_CU_C], dgam[LA_CU_C], rowZ[LA_CU_C], colZ[4][LA_CU_C], red[4];
    float bt[LA_CU_C], et[LA_CU_C], be[LA_CU_C], rq[LA_CU_C], rk[LA_CU_C];
    float dbb[LA_CU_C], dee[LA_CU_C], dbt[LA_CU_C];
};

/* Row sums of the warp's rows of acc weighted by f(r, c) (fp32, fixed
 * order), added into dst[r] by the row's lane q == 0 (one writer per row). */
template <class F>
__device__ __forceinline__ void dgt_rowadd(const la_tc_acc (&acc)[4], float *dst, F f) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
        const int r = 16 * w + g + 8 * rh;
        float s = 0.f;
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    const int c = 16 * j + 8 * hf + 2 * q + i;
                    s = fmaf(acc[j].x[4 * hf + 2 * rh + i], f(r, c), s);
                }
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        if (q == 0) dst[r] += s;
    }
}

template <bool AT, bool BT>
__device__ __forceinline__ void dgt_mma3(la_tc_acc (&acc)[4], dgt_bf (*A)[LA_TC_TILE],
                                         const dgt_bf *B) {
    la_tc_mma64x<dgt_bf, AT, BT>(acc, A[0], A[1], A[2], B, NULL, NULL);
}
template <bool AT, bool BT>
__device__ __forceinline__ void dgt_mma5(la_tc_acc (&acc)[4], dgt_bf (*A)[LA_TC_TILE],
                                         dgt_bf (*B)[LA_TC_TILE]) {
    la_tc_mma64x<dgt_bf, AT, BT>(acc, A[0], A[1], A[2], B[0], B[1], B[2]);
}

__global__ void __launch_bounds__(LA_TC_THREADS, 2)
    la_cu_dcg_tc(la_cu_dc_args p, const dgt_bf *d_o, const float *hst, const float *dhst, float *dR,
                 dgt_bf *dv_out, float *dqp, float *dkp, float *dbp, float *dgp) {
    extern __shared__ __align__(128) unsigned char dgt_raw[];
    dgt_smem &S = *(dgt_smem *)dgt_raw;
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int64_t HS = p.HS, H = p.H, K = p.K, V = p.V, hs = blockIdx.y, hq = hs / (HS / H);
    const int L = ch.len, t = threadIdx.x, w = t >> 5, lane = t & 31, g = lane >> 2;
    const int64_t tok0 = ch.tok0, kst = H * K, vst = HS * V;
    const float sc = p.scale;
    const dgt_bf *qc = (const dgt_bf *)p.q + (tok0 * H + hq) * K;
    const dgt_bf *kc = (const dgt_bf *)p.k + (tok0 * H + hq) * K;
    const dgt_bf *vc = (const dgt_bf *)p.v + (tok0 * HS + hs) * V;
    const dgt_bf *dOc = d_o + (tok0 * HS + hs) * V;
    dgt_bf *dvc = dv_out + (tok0 * HS + hs) * V;
    const float *Rc = p.U + (tok0 * HS + hs) * V; /* R after the state pass */
    float *Yc = dR + (tok0 * HS + hs) * V;        /* dR, then Yu in place */
    const size_t cs = ((size_t)blockIdx.x * HS + hs) * K * V;
    const float *S0 = hst + cs, *G = dhst + cs;
    const float *ATc = p.AT + ((size_t)blockIdx.x * HS + hs) * LA_CU_C * LA_CU_C;
    dgt_bf *const X = S.X, *const Y = S.Y;
    la_cu_chunk_gates(S.gam, p.g, 0.f, tok0, L, HS, (int)hs);
    la_cu_dc_rnorm<dgt_bf, 4>(S.rq, (const dgt_bf *)p.q, tok0, L, H, hq, K, p.use_l2);
    la_cu_dc_rnorm<dgt_bf, 4>(S.rk, (const dgt_bf *)p.k, tok0, L, H, hq, K, p.use_l2);
    if (t < LA_CU_C) {
        S.be[t] = t < L ? p.beta[(tok0 + t) * HS + hs] : 0.f;
        S.dbb[t] = S.dee[t] = S.dbt[t] = 0.f;
    }
    { /* dbL = <G, S0>, doubles, fixed order */
        double a = 0;
        for (int64_t e = t; e < K * V; e += LA_TC_THREADS) a += (double)G[e] * (double)S0[e];
        for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
        if (lane == 0) S.red[w] = a;
    }
    __syncthreads();
    if (t < LA_CU_C) {
        S.bt[t] = t < L ? la_cu_expd(S.gam[t]) : 0.f;
        S.et[t] = t < L ? la_cu_expd(S.gam[L - 1] - S.gam[t]) : 0.f;
    }
    auto gm = [&](int m, int n) -> float { return la_cu_expd(S.gam[m] - S.gam[n]); };
    la_tc_acc a0[4], a1[4];
    /* ---- q.k, k.k of the chunk (exact inputs), kept masked in T1 / T2 ---- */
    la_tc_zero(a0);
    la_tc_zero(a1);
    for (int64_t k0 = 0; k0 < K; k0 += 64) {
        __syncthreads();
        la_tc_stage<dgt_bf>(X, NULL, NULL, [&](int m, int r) -> float {
            return (m < L && k0 + r < K) ? ldf(qc + m * kst + k0 + r) : 0.f;
        });
        la_tc_stage<dgt_bf>(Y, NULL, NULL, [&](int m, int r) -> float {
            return (m < L && k0 + r < K) ? ldf(kc + m * kst + k0 + r) : 0.f;
        });
        __syncthreads();
        la_tc_mma64<dgt_bf, false, true>(a0, X, Y);
        la_tc_mma64<dgt_bf, false, true>(a1, Y, Y);
    }
    __syncthreads(); /* rq, rk, bt, et visible */
    la_tc_acc_each(a0, [&](int m, int n, float &x) {
        S.T1[m * LA_TC_LDF + n] = (n <= m && m < L) ? S.rq[m] * S.rk[n] * x : 0.f;
    });
    la_tc_acc_each(a1, [&](int m, int n, float &x) {
        S.T2[m * LA_TC_LDF + n] = (n < m && m < L) ? S.rk[m] * S.rk[n] * x : 0.f;
    });
    /* ---- Yu = A^T dR (in place), dv = beta Yu, dbeta += Yu.v ---- */
    for (int64_t v0 = 0; v0 < V; v0 += 64) {
        __syncthreads();
        la_tc_stage<dgt_bf>(S.A[0], S.A[1], S.A[2],
                            [&](int m, int r) -> float { return ATc[m * LA_CU_C + r]; });
        la_tc_stage<dgt_bf>(S.B[0], S.B[1], S.B[2], [&](int r, int n) -> float {
            return (r < L && v0 + n < V) ? Yc[r * vst + v0 + n] : 0.f;
        });
        __syncthreads();
        la_tc_zero(a0);
        dgt_mma5<false, false>(a0, S.A, S.B);
        la_tc_acc_each(a0, [&](int m, int n, float &y) {
            const int64_t c = v0 + n;
            if (m < L && c < V) {
                Yc[m * vst + c] = y;
                stf(dvc + m * vst + c, S.be[m] * y);
            }
        });
        dgt_rowadd(a0, S.dbt, [&](int m, int n) -> float {
            return (m < L && v0 + n < V) ? ldf(vc + m * vst + v0 + n) : 0.f;
        });
    }
    __syncthreads(); /* Yu (global) visible to the block */
    /* ---- dP = dO R^T (a0), dM = -Yu R^T (a1), R's parts shared ---- */
    la_tc_zero(a0);
    la_tc_zero(a1);
    for (int64_t v0 = 0; v0 < V; v0 += 64) {
        __syncthreads();
        la_tc_stage<dgt_bf>(S.B[0], S.B[1], S.B[2], [&](int n, int r) -> float {
            return (n < L && v0 + r < V) ? Rc[n * vst + v0 + r] : 0.f;
        });
        la_tc_stage<dgt_bf>(X, NULL, NULL, [&](int m, int r) -> float {
            return (m < L && v0 + r < V) ? ldf(dOc + m * vst + v0 + r) : 0.f;
        });
        la_tc_stage<dgt_bf>(S.A[0], S.A[1], S.A[2], [&](int m, int r) -> float {
            return (m < L && v0 + r < V) ? Yc[m * vst + v0 + r] : 0.f;
        });
        __syncthreads();
        la_tc_mma64x<dgt_bf, false, true>(a0, X, NULL, NULL, S.B[0], S.B[1], S.B[2]);
        dgt_mma5<false, true>(a1, S.A, S.B);
    }
    /* T1 = scale dP (.) Gamma (lower incl. diagonal); a0 <- Z's dP part */
    la_tc_acc_each(a0, [&](int m, int n, float &x) {
        const bool in = n <= m && m < L;
        const float y = in ? sc * x * gm(m, n) : 0.f;
        const float qk = S.T1[m * LA_TC_LDF + n];
        S.T1[m * LA_TC_LDF + n] = y;
        x = (in && n < m) ? y * qk : 0.f;
    });
    /* T2 = beta dM (.) Gamma (strictly lower); Z += beta dM (.) kk (.) Gamma;
     * dbeta += rows of dM (.) kk (.) Gamma */
    la_tc_acc_each(a1, [&](int m, int n, float &x) {
        float t2 = 0.f, z = 0.f;
        if (n < m && m < L) {
            const float dm = -x, gg = gm(m, n), y = dm * S.T2[m * LA_TC_LDF + n] * gg;
            t2 = dm * S.be[m] * gg;
            z = y;
        }
        S.T2[m * LA_TC_LDF + n] = t2;
        x = z;
    });
    dgt_rowadd(a1, S.dbt, [](int, int) -> float { return 1.f; });
    /* Z = a0 + diag(beta) a1: its row sums (rowZ) and per-warp column sums
     * (colZ) in double, fixed order */
    {
        const int q = lane & 3;
#pragma unroll
        for (int rh = 0; rh < 2; rh++) {
            const int m = 16 * w + g + 8 * rh;
            const float bm = S.be[m];
            double s = 0;
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++)
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        const int e = 4 * hf + 2 * rh + i;
                        a0[j].x[e] += bm * a1[j].x[e];
                        s += (double)a0[j].x[e];
                    }
            s += __shfl_xor_sync(0xffffffffu, s, 1);
            s += __shfl_xor_sync(0xffffffffu, s, 2);
            if (q == 0) S.rowZ[m] = s;
        }
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    double s = (double)a0[j].x[4 * hf + i] + (double)a0[j].x[4 * hf + 2 + i];
                    s += __shfl_xor_sync(0xffffffffu, s, 4);
                    s += __shfl_xor_sync(0xffffffffu, s, 8);
                    s += __shfl_xor_sync(0xffffffffu, s, 16);
                    if (g == 0) S.colZ[w][16 * j + 8 * hf + 2 * q + i] = s;
                }
    }
    /* ---- dq, dk by 64-column blocks of K ---- */
    auto qn = [&](int m, int n) -> float { return S.rq[m] * la_tc_f(X[m * LA_TC_LD + n]); };
    auto kn = [&](int m, int n) -> float { return S.rk[m] * la_tc_f(Y[m * LA_TC_LD + n]); };
    for (int64_t k0 = 0; k0 < K; k0 += 64) {
        float *dkc = dkp + (tok0 * HS + hs) * K + k0;
        /* a0 = diag(e) R G^T (contraction over V): (de e)_t += k_t . a0_t, and
         * a0 parked in dk (read back below: two accumulators live at a time) */
        la_tc_zero(a0);
        for (int64_t v0 = 0; v0 < V; v0 += 64) {
            __syncthreads();
            if (v0 == 0)
                la_tc_stage<dgt_bf>(Y, NULL, NULL, [&](int m, int n) -> float {
                    return (m < L && k0 + n < K) ? ldf(kc + m * kst + k0 + n) : 0.f;
                });
            la_tc_stage<dgt_bf>(S.B[0], S.B[1], S.B[2], [&](int n, int r) -> float {
                return (k0 + n < K && v0 + r < V) ? G[(k0 + n) * V + v0 + r] : 0.f;
            });
            la_tc_stage<dgt_bf>(S.A[0], S.A[1], S.A[2], [&](int m, int r) -> float {
                return (m < L && v0 + r < V) ? Rc[m * vst + v0 + r] : 0.f;
            });
            __syncthreads();
            dgt_mma5<false, true>(a0, S.A, S.B);
        }
        la_tc_acc_each(a0, [&](int m, int, float &x) { x *= S.et[m]; });
        dgt_rowadd(a0, S.dee, kn);
        la_tc_acc_each(a0, [&](int m, int n, float &x) {
            if (m < L && k0 + n < K) dkc[m * HS * K + n] = x;
        });
        /* a0 = dO S0^T, a1 = Yu S0^T (S0's parts shared) */
        la_tc_zero(a0);
        la_tc_zero(a1);
        for (int64_t v0 = 0; v0 < V; v0 += 64) {
            __syncthreads();
            la_tc_stage<dgt_bf>(S.B[0], S.B[1], S.B[2], [&](int n, int r) -> float {
                return (k0 + n < K && v0 + r < V) ? S0[(k0 + n) * V + v0 + r] : 0.f;
            });
            la_tc_stage<dgt_bf>(X, NULL, NULL, [&](int m, int r) -> float {
                return (m < L && v0 + r < V) ? ldf(dOc + m * vst + v0 + r) : 0.f;
            });
            la_tc_stage<dgt_bf>(S.A[0], S.A[1], S.A[2], [&](int m, int r) -> float {
                return (m < L && v0 + r < V) ? Yc[m * vst + v0 + r] : 0.f;
            });
            __syncthreads();
            la_tc_mma64x<dgt_bf, false, true>(a0, X, NULL, NULL, S.B[0], S.B[1], S.B[2]);
            dgt_mma5<false, true>(a1, S.A, S.B);
        }
        __syncthreads();
        /* the q block (exact) and T1 diag(rk) as parts */
        la_tc_stage<dgt_bf>(X, NULL, NULL, [&](int m, int n) -> float {
            return (m < L && k0 + n < K) ? ldf(qc + m * kst + k0 + n) : 0.f;
        });
        la_tc_stage<dgt_bf>(S.A[0], S.A[1], S.A[2], [&](int m, int r) -> float {
            return S.T1[m * LA_TC_LDF + r] * S.rk[r];
        });
        __syncthreads();
        /* dq part: diag(sc b) dO S0^T; (db b)_t += q_t . that */
        la_tc_acc_each(a0, [&](int m, int, float &x) { x *= sc * S.bt[m]; });
        dgt_rowadd(a0, S.dbb, qn);
        /* dq = a0 + T1 K */
        dgt_mma3<false, false>(a0, S.A, Y);
        la_tc_acc_each(a0, [&](int m, int n, float &x) {
            if (m < L && k0 + n < K) dqp[((tok0 + m) * HS + hs) * K + k0 + n] = x;
        });
        /* b Yw = -diag(b) Yu S0^T: dbeta += k.(b Yw), (db b) += beta k.(b Yw) */
        la_tc_acc_each(a1, [&](int m, int, float &x) { x *= -S.bt[m]; });
        {
            float xs[2] = {0.f, 0.f};
            la_tc_acc_each_rh(
                a1, [&](int rh, int m, int n, float &x) { xs[rh] = fmaf(x, kn(m, n), xs[rh]); });
#pragma unroll
            for (int rh = 0; rh < 2; rh++) {
                const int m = 16 * w + g + 8 * rh;
                float s = xs[rh];
                s += __shfl_xor_sync(0xffffffffu, s, 1);
                s += __shfl_xor_sync(0xffffffffu, s, 2);
                if ((lane & 3) == 0) {
                    S.dbt[m] += s;
                    S.dbb[m] += S.be[m] * s;
                }
            }
        }
        /* dk = diag(beta) b Yw + T1^T Q + (T2 + T2^T) K + diag(e) R G^T */
        la_tc_acc_each(a1, [&](int m, int, float &x) { x *= S.be[m]; });
        __syncthreads();
        la_tc_stage<dgt_bf>(S.A[0], S.A[1], S.A[2], [&](int r, int m) -> float {
            return S.T1[r * LA_TC_LDF + m] * S.rq[r];
        });
        __syncthreads();
        dgt_mma3<true, false>(a1, S.A, X);
        __syncthreads();
        la_tc_stage<dgt_bf>(S.A[0], S.A[1], S.A[2], [&](int m, int r) -> float {
            return (S.T2[m * LA_TC_LDF + r] + S.T2[r * LA_TC_LDF + m]) * S.rk[r];
        });
        __syncthreads();
        dgt_mma3<false, false>(a1, S.A, Y);
        la_tc_acc_each(a1, [&](int m, int n, float &x) {
            if (m < L && k0 + n < K) {
                float *d = dkc + m * HS * K + n;
                *d = x + *d;
            }
        });
    }
    __syncthreads();
    /* ---- gates: dgam (double, fixed order), dg = reverse cumsum ---- */
    if (t < L) {
        double d = (double)S.dbb[t] - (double)S.dee[t];
        d += S.rowZ[t];
        d -= ((S.colZ[0][t] + S.colZ[1][t]) + S.colZ[2][t]) + S.colZ[3][t];
        if (t == L - 1) {
            double db = 0;
            for (int i = 0; i < 4; i++) db += S.red[i];
            for (int j = 0; j < L; j++) d += (double)S.dee[j];
            d += db * (double)S.bt[L - 1];
        }
        S.dgam[t] = d;
        dbp[(tok0 + t) * HS + hs] = S.dbt[t];
    }
    __syncthreads();
    if (t == 0) {
        double a = 0;
        for (int j = L - 1; j >= 0; j--) {
            a += S.dgam[j];
            dgp[(tok0 + j) * HS + hs] = (float)a;
        }
    }
}

int la__cu_delta_grads_tc_fits(const la__cu_call *c) {
    return sizeof(dgt_smem) <= (size_t)la__cu_smem_optin(c);
}

la_status la__cu_delta_grads_tc(const la__cu_call *c, cudaStream_t stream, const la_cu_table &tb,
                                const la_cu_dc_args &p, float *dR, const float *hst,
                                const float *dhst, float *dqp, float *dkp, float *dbp, float *dgp) {
    if (tb.nchunks == 0) return LA_OK;
    const size_t smem = sizeof(dgt_smem);
    LA_CU_TRY(c->op, cudaFuncSetAttribute(la_cu_dcg_tc, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)smem));
    la_cu_dcg_tc<<<dim3((unsigned)tb.nchunks, (unsigned)c->HS), LA_TC_THREADS, smem, stream>>>(
        p, (const dgt_bf *)c->d_o, hst, dhst, dR, (dgt_bf *)c->dv, dqp, dkp, dbp, dgp);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}

/* Whether bf16 backwards take this kernel: only with
 * LINATTN_CUDA_DELTA_TC_GRAD = 1 and not LINATTN_CUDA_TC = 0 (read once).
 * Opt-in: on an H100 it took 12.2 ms where la_cu_dcg takes 8.6 ms (GDN
 * 1,65536,2/8,128; bench/GPU.md, cuda-delta5). */
int la__cu_delta_tc_grad(void) {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_TC"), *o = getenv("LINATTN_CUDA_DELTA_TC_GRAD");
        mode = (o && o[0] == '1') && !(e && e[0] == '0');
    }
    return mode;
}
