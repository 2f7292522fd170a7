/* Kernel linear attention and simple GLA for bf16 / fp16 inputs on tensor
 * cores: the per-chunk kernels of the chunkwise forward and backward (the
 * state passes are in chunk_state_tc.cuh). Same mathematics and summation
 * structure as the fp32 kernels in scalar_gate.cu; every product runs on
 * tensor cores with fp32 accumulation, fp32 quantities (states, masked
 * decayed scores, decayed or scaled rows) entering as 16-bit parts (tc.cuh).
 * One CTA of 4 warps per (chunk, head[, 64 value columns]). */
#include "chunk_state_tc.cuh"
#include "scalar_gate.cuh"

/* o_i = scale e^{G_i} phi(q_i) S + sum_{j<=i} scale e^{G_i-G_j} (phi(q_i).phi(k_j)) v_j
 * for 64 value columns (blockIdx.z). */
template <typename T>
__global__ void __launch_bounds__(LA_TC_THREADS) la_tc_intra_fwd(la_cu_intra_args p) {
    extern __shared__ __align__(128) unsigned char la_tc_fwd_smem[];
    T *Qh = (T *)la_tc_fwd_smem, *Ql = Qh + LA_TC_TILE, *Kh = Ql + LA_TC_TILE,
      *Kl = Kh + LA_TC_TILE, *Hh = Kl + LA_TC_TILE, *Hl = Hh + LA_TC_TILE, *Hl2 = Hl + LA_TC_TILE;
    float *Pf = (float *)(Hl2 + LA_TC_TILE), *Of = Pf + LA_TC_TILEF;
    __shared__ double G[64], part[64];
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int h = blockIdx.y, L = ch.len, t = threadIdx.x;
    const int64_t H = p.H, K = p.K, V = p.V, tok0 = ch.tok0, v0 = (int64_t)blockIdx.z * 64;
    const float scale = p.scale, gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const int fm = p.fm;
    const bool three = la_tc_three<T>::value;
    T *ql = fm == LA_FEATURE_ELU1 ? Ql : (T *)NULL; /* phi(x) not exact in T */
    T *kl = ql ? Kl : (T *)NULL;
    T *hl2 = three ? Hl2 : (T *)NULL;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    const float *S = p.hbuf + ((size_t)blockIdx.x * H + h) * K * V;
    const double gv = t < L ? (double)((p.g ? p.g[(tok0 + t) * H + h] : 0.f) + gam) : 0.0;
    la_tc_gate_scan(G, part, gv);
    la_tc_acc accP[4], accO[4];
    la_tc_zero(accP);
    la_tc_zero(accO);
    const auto same = [](int, int, float y) { return y; };
    for (int64_t k0 = 0; k0 < K; k0 += 64) {
        if (k0) __syncthreads(); /* the previous block's products are done */
        float xq[LA_TC_PER], xk[LA_TC_PER], xh[LA_TC_PER];
        const int col = t & 63, r0 = t >> 6;
        const bool okk = k0 + col < K;
        la_tc_fetch_rows(xq, q + ((tok0 + r0) * H + h) * K + k0 + col, H * K, L, okk);
        la_tc_phi_rows(xq, fm, L, okk);
        la_tc_fetch_rows(xk, k + ((tok0 + r0) * H + h) * K + k0 + col, H * K, L, okk);
        la_tc_phi_rows(xk, fm, L, okk);
        la_tc_fetch_rows(xh, S + (k0 + r0) * V + v0 + col, V, K - k0, v0 + col < V);
        la_tc_put_all(Qh, ql, (T *)NULL, xq, same);
        la_tc_put_all(Kh, kl, (T *)NULL, xk, same);
        la_tc_put_all(Hh, Hl, hl2, xh, same);
        __syncthreads();
        la_tc_mma64x<T, false, true>(accP, Qh, ql, NULL, Kh, kl, NULL);
        la_tc_mma64x<T, false, false>(accO, Qh, ql, NULL, Hh, Hl, hl2);
    }
    la_tc_store(Pf, accP);
    la_tc_store(Of, accO);
    __syncthreads();
    /* masked, decayed scores into (Kh, Kl, Ql); inter-chunk rows scaled */
    T *pl2 = three ? Ql : (T *)NULL;
    for (int e = t; e < 64 * 64; e += LA_TC_THREADS) {
        const int r = e >> 6, c = e & 63;
        const float x =
            (c <= r && r < L) ? Pf[r * LA_TC_LDF + c] * scale * la_cu_expd(G[r] - G[c]) : 0.f;
        la_tc_put(Kh, Kl, pl2, r * LA_TC_LD + c, x);
        Of[r * LA_TC_LDF + c] *= r < L ? scale * la_cu_expd(G[r]) : 0.f;
    }
    {
        float xv[LA_TC_PER];
        const int col = t & 63, r0 = t >> 6;
        la_tc_fetch_rows(xv, v + ((tok0 + r0) * H + h) * V + v0 + col, H * V, L, v0 + col < V);
        la_tc_put_all(Qh, (T *)NULL, (T *)NULL, xv, same);
    }
    __syncthreads();
    la_tc_load(accO, Of);
    la_tc_mma64x<T, false, false>(accO, Kh, Kl, pl2, Qh, NULL, NULL);
    la_tc_store(Of, accO);
    __syncthreads();
    T *o = (T *)p.o;
    for (int e = t; e < 64 * 64; e += LA_TC_THREADS) {
        const int r = e >> 6, c = e & 63;
        if (r < L && v0 + c < V) stf(o + ((tok0 + r) * H + h) * V + v0 + c, Of[r * LA_TC_LDF + c]);
    }
}

/* Tiles of the backward kernel: P and dP (fp32 quantities: n2 parts each),
 * X (an input: 1 part, 2 for phi of elu+1), Y (n2 parts), then one fp32
 * tile. n2 = 3 for bf16, 2 for fp16. */
static inline size_t la_tc_bwd_bytes(int three, int elu) {
    const int n2 = three ? 3 : 2;
    return (size_t)(3 * n2 + 1 + (elu ? 1 : 0)) * LA_TC_TILE_BYTES + LA_TC_TILEF_BYTES;
}

/* Backward of one (chunk, head), as la_cu_scalar_intra_bwd (scalar_gate.cu):
 *   P   = e^{G_i-G_j} Qf_i.Kf_j (j <= i),  dP = e^{G_i-G_j} do_i.v_j (j < i),
 *   dPd_i = do_i.v_i,   Qf = scale phi(q), Kf = phi(k),
 *   dQf = e^{G_i} do S^T + dP Kf + dPd Kf,   dKf = e^{G_L-G_j} v dS^T + dP^T Qf + dPd Qf,
 *   dv  = e^{G_L-G_j} Kf dS + P^T do;
 * DG: the per-token sums Qf.dQf - Kf.dKf (without the diagonal) in float64,
 * reverse-summed over the chunk into dgl, the chunk's total into ctot. */
template <typename T, bool DG>
__global__ void __launch_bounds__(LA_TC_THREADS) la_tc_intra_bwd(la_cu_intra_args p) {
    extern __shared__ __align__(128) unsigned char la_tc_bwd_smem[];
    const bool three = la_tc_three<T>::value;
    const int fm = p.fm;
    const bool elu = fm == LA_FEATURE_ELU1;
    T *Ph = (T *)la_tc_bwd_smem, *Pl = Ph + LA_TC_TILE, *Pl2 = three ? Pl + LA_TC_TILE : NULL;
    T *dPh = (three ? Pl2 : Pl) + LA_TC_TILE, *dPl = dPh + LA_TC_TILE;
    T *dPl2 = three ? dPl + LA_TC_TILE : NULL;
    T *Xh = (three ? dPl2 : dPl) + LA_TC_TILE, *Xl = elu ? Xh + LA_TC_TILE : NULL;
    T *Yh = (elu ? Xl : Xh) + LA_TC_TILE, *Yl = Yh + LA_TC_TILE;
    T *Yl2 = three ? Yl + LA_TC_TILE : NULL;
    float *F = (float *)((three ? Yl2 : Yl) + LA_TC_TILE);
    __shared__ double G[64], part[64], rq[64], rk[64];
    __shared__ float eG[64], eL[64], dPd[64];
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int h = blockIdx.y, L = ch.len, t = threadIdx.x;
    const int64_t H = p.H, K = p.K, V = p.V, tok0 = ch.tok0;
    const float scale = p.scale, gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    const T *dO = (const T *)p.d_o;
    const float *S = p.hbuf + ((size_t)blockIdx.x * H + h) * K * V;
    const float *dS = p.dhbuf + ((size_t)blockIdx.x * H + h) * K * V;
    const double gv = t < L ? (double)((p.g ? p.g[(tok0 + t) * H + h] : 0.f) + gam) : 0.0;
    la_tc_gate_scan(G, part, gv);
    if (t < 64) {
        eG[t] = t < L ? la_cu_expd(G[t]) : 0.f;
        eL[t] = t < L ? la_cu_expd(G[L - 1] - G[t]) : 0.f;
        rq[t] = 0.0;
        rk[t] = 0.0;
    }
    const auto same = [](int, int, float y) { return y; };
    const int col = t & 63, r0 = t >> 6;
    /* input tile (phi applied for q, k; fm = identity for v, do) */
    auto in_tile = [&](float(&x)[LA_TC_PER], const T *src, int64_t c0, int64_t D, int f) {
        la_tc_fetch_rows(x, src + ((tok0 + r0) * H + h) * D + c0 + col, H * D, L, c0 + col < D);
        la_tc_phi_rows(x, f, L, c0 + col < D);
    };
    /* state tile rows k0.., columns v0.. of an fp32 [K][V] state */
    auto st_tile = [&](float(&x)[LA_TC_PER], const float *src, int64_t k0, int64_t v0) {
        la_tc_fetch_rows(x, src + (k0 + r0) * V + v0 + col, V, K - k0, v0 + col < V);
    };
    la_tc_acc acc[4], acc2[4];
    float x1[LA_TC_PER], x2[LA_TC_PER];
    /* ---- P = Qf Kf^T, masked and decayed */
    la_tc_zero(acc);
    for (int64_t k0 = 0; k0 < K; k0 += 64) {
        if (k0) __syncthreads();
        in_tile(x1, q, k0, K, fm);
        in_tile(x2, k, k0, K, fm);
        la_tc_put_all(Xh, Xl, (T *)NULL, x1, same);
        la_tc_put_all(Yh, elu ? Yl : (T *)NULL, (T *)NULL, x2, same);
        __syncthreads();
        la_tc_mma64x<T, false, true>(acc, Xh, Xl, NULL, Yh, elu ? Yl : NULL, NULL);
    }
    la_tc_store(F, acc);
    __syncthreads();
    for (int e = t; e < 64 * 64; e += LA_TC_THREADS) {
        const int r = e >> 6, c = e & 63;
        la_tc_put(Ph, Pl, Pl2, r * LA_TC_LD + c,
                  (c <= r && r < L) ? F[r * LA_TC_LDF + c] * scale * la_cu_expd(G[r] - G[c]) : 0.f);
    }
    /* ---- dP = do v^T (strictly below the diagonal, decayed), dPd its diagonal */
    la_tc_zero(acc);
    for (int64_t v0 = 0; v0 < V; v0 += 64) {
        __syncthreads(); /* readers of F / X / Y are done */
        in_tile(x1, dO, v0, V, LA_FEATURE_IDENTITY);
        in_tile(x2, v, v0, V, LA_FEATURE_IDENTITY);
        la_tc_put_all(Xh, (T *)NULL, (T *)NULL, x1, same);
        la_tc_put_all(Yh, (T *)NULL, (T *)NULL, x2, same);
        __syncthreads();
        la_tc_mma64<T, false, true>(acc, Xh, Yh);
    }
    la_tc_store(F, acc);
    __syncthreads();
    for (int e = t; e < 64 * 64; e += LA_TC_THREADS) {
        const int r = e >> 6, c = e & 63;
        const float x = F[r * LA_TC_LDF + c];
        la_tc_put(dPh, dPl, dPl2, r * LA_TC_LD + c,
                  (c < r && r < L) ? x * la_cu_expd(G[r] - G[c]) : 0.f);
        if (c == r) dPd[r] = r < L ? x : 0.f;
    }
    for (int64_t k0 = 0; k0 < K; k0 += 64) {
        /* ---- dQf[:, k0..] = e^{G_i} do S^T + dP Kf */
        la_tc_zero(acc);
        for (int64_t v0 = 0; v0 < V; v0 += 64) {
            __syncthreads();
            in_tile(x1, dO, v0, V, LA_FEATURE_IDENTITY);
            st_tile(x2, S, k0, v0);
            la_tc_put_all(Xh, (T *)NULL, (T *)NULL, x1, same);
            la_tc_put_all(Yh, Yl, Yl2, x2, same);
            __syncthreads();
            la_tc_mma64x<T, false, true>(acc, Xh, NULL, NULL, Yh, Yl, Yl2);
        }
        la_tc_store(F, acc);
        __syncthreads();
        for (int e = t; e < 64 * 64; e += LA_TC_THREADS)
            F[(e >> 6) * LA_TC_LDF + (e & 63)] *= eG[e >> 6];
        in_tile(x1, k, k0, K, fm);
        la_tc_put_all(Xh, Xl, (T *)NULL, x1, same);
        __syncthreads();
        la_tc_load(acc, F);
        la_tc_mma64x<T, false, false>(acc, dPh, dPl, dPl2, Xh, Xl, NULL);
        la_tc_store(F, acc);
        __syncthreads();
        {
            /* dq (coalesced: thread t, column t % 64, rows t / 64 + 2u); with DG
             * the products Qf dQf replace F, then one thread per row sums them */
            float kx[LA_TC_PER], qx[LA_TC_PER];
            const bool okc = k0 + col < K;
            la_tc_fetch_rows(kx, k + ((tok0 + r0) * H + h) * K + k0 + col, H * K, L, okc);
            la_tc_fetch_rows(qx, q + ((tok0 + r0) * H + h) * K + k0 + col, H * K, L, okc);
#pragma unroll
            for (int u = 0; u < LA_TC_PER; u++) {
                const int r = r0 + 2 * u;
                float *f = F + r * LA_TC_LDF + col;
                if (r < L && okc) {
                    const float a = *f;
                    if (DG) *f = scale * la_phi(fm, qx[u]) * a;
                    const float d = fmaf(dPd[r], la_phi(fm, kx[u]), a);
                    stf((T *)p.dq + ((tok0 + r) * H + h) * K + k0 + col,
                        d * scale * la_dphi(fm, qx[u]));
                } else if (DG) {
                    *f = 0.f;
                }
            }
            if (DG) {
                __syncthreads();
                if (t < 64) {
                    double sum = 0.0;
                    for (int c = 0; c < 64; c++) sum += (double)F[t * LA_TC_LDF + c];
                    rq[t] += sum;
                }
            }
        }
        /* ---- dKf[:, k0..] = e^{G_L-G_j} v dS^T + scale dP^T phi(q) */
        la_tc_zero(acc);
        for (int64_t v0 = 0; v0 < V; v0 += 64) {
            __syncthreads();
            in_tile(x1, v, v0, V, LA_FEATURE_IDENTITY);
            st_tile(x2, dS, k0, v0);
            la_tc_put_all(Xh, (T *)NULL, (T *)NULL, x1, same);
            la_tc_put_all(Yh, Yl, Yl2, x2, same);
            __syncthreads();
            la_tc_mma64x<T, false, true>(acc, Xh, NULL, NULL, Yh, Yl, Yl2);
        }
        la_tc_store(F, acc);
        __syncthreads();
        for (int e = t; e < 64 * 64; e += LA_TC_THREADS)
            F[(e >> 6) * LA_TC_LDF + (e & 63)] *= eL[e >> 6];
        in_tile(x1, q, k0, K, fm);
        la_tc_put_all(Xh, Xl, (T *)NULL, x1, same);
        __syncthreads();
        la_tc_load(acc, F);
        la_tc_zero(acc2);
        la_tc_mma64x<T, true, false>(acc2, dPh, dPl, dPl2, Xh, Xl, NULL);
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int i = 0; i < acc[j].num_elements; i++)
                acc[j].x[i] = fmaf(scale, acc2[j].x[i], acc[j].x[i]);
        la_tc_store(F, acc);
        __syncthreads();
        {
            float kx[LA_TC_PER], qx[LA_TC_PER];
            const bool okc = k0 + col < K;
            la_tc_fetch_rows(kx, k + ((tok0 + r0) * H + h) * K + k0 + col, H * K, L, okc);
            la_tc_fetch_rows(qx, q + ((tok0 + r0) * H + h) * K + k0 + col, H * K, L, okc);
#pragma unroll
            for (int u = 0; u < LA_TC_PER; u++) {
                const int r = r0 + 2 * u;
                float *f = F + r * LA_TC_LDF + col;
                if (r < L && okc) {
                    const float a = *f;
                    if (DG) *f = la_phi(fm, kx[u]) * a;
                    const float d = fmaf(dPd[r], scale * la_phi(fm, qx[u]), a);
                    stf((T *)p.dk + ((tok0 + r) * H + h) * K + k0 + col, d * la_dphi(fm, kx[u]));
                } else if (DG) {
                    *f = 0.f;
                }
            }
            if (DG) {
                __syncthreads();
                if (t < 64) {
                    double sum = 0.0;
                    for (int c = 0; c < 64; c++) sum += (double)F[t * LA_TC_LDF + c];
                    rk[t] += sum;
                }
            }
        }
    }
    for (int64_t v0 = 0; v0 < V; v0 += 64) {
        /* ---- dv[:, v0..] = e^{G_L-G_j} Kf dS + P^T do */
        la_tc_zero(acc);
        for (int64_t k0 = 0; k0 < K; k0 += 64) {
            __syncthreads();
            in_tile(x1, k, k0, K, fm);
            st_tile(x2, dS, k0, v0);
            la_tc_put_all(Xh, Xl, (T *)NULL, x1, same);
            la_tc_put_all(Yh, Yl, Yl2, x2, same);
            __syncthreads();
            la_tc_mma64x<T, false, false>(acc, Xh, Xl, NULL, Yh, Yl, Yl2);
        }
        la_tc_store(F, acc);
        __syncthreads();
        for (int e = t; e < 64 * 64; e += LA_TC_THREADS)
            F[(e >> 6) * LA_TC_LDF + (e & 63)] *= eL[e >> 6];
        in_tile(x1, dO, v0, V, LA_FEATURE_IDENTITY);
        la_tc_put_all(Xh, (T *)NULL, (T *)NULL, x1, same);
        __syncthreads();
        la_tc_load(acc, F);
        la_tc_mma64x<T, true, false>(acc, Ph, Pl, Pl2, Xh, NULL, NULL);
        la_tc_store(F, acc);
        __syncthreads();
        for (int e = t; e < 64 * 64; e += LA_TC_THREADS) {
            const int r = e >> 6, c = e & 63;
            if (r < L && v0 + c < V)
                stf((T *)p.dv + ((tok0 + r) * H + h) * V + v0 + c, F[r * LA_TC_LDF + c]);
        }
    }
    if (DG) {
        __syncthreads();
        if (t == 0) {
            double run = 0.0;
            for (int i = L - 1; i >= 0; i--) {
                run += rq[i] - rk[i];
                p.dgl[(tok0 + i) * H + h] = run;
            }
            p.ctot[(size_t)blockIdx.x * H + h] = run;
        }
    }
}

/* ---- launchers ------------------------------------------------------------ */

la_status la__tc_state_pass(const char *op, cudaStream_t stream, la_dtype dt, int rev, int64_t N,
                            const la_cu_sp_args &a) {
    if (dt == LA_DTYPE_BF16)
        return rev ? la_tc_launch_state_pass<__nv_bfloat16, true>(op, stream, N, a)
                   : la_tc_launch_state_pass<__nv_bfloat16, false>(op, stream, N, a);
    return rev ? la_tc_launch_state_pass<__half, true>(op, stream, N, a)
               : la_tc_launch_state_pass<__half, false>(op, stream, N, a);
}

template <typename T>
static la_status tc_fwd(const char *op, cudaStream_t stream, int64_t nchunks,
                        const la_cu_intra_args &p) {
    const size_t smem = 7 * LA_TC_TILE_BYTES + 2 * LA_TC_TILEF_BYTES;
    LA_CU_TRY(op, cudaFuncSetAttribute(la_tc_intra_fwd<T>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)nchunks, (unsigned)p.H, (unsigned)((p.V + 63) / 64));
    la_tc_intra_fwd<T><<<grid, LA_TC_THREADS, smem, stream>>>(p);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}

la_status la__tc_intra_fwd(const char *op, cudaStream_t stream, la_dtype dt, int64_t nchunks,
                           const la_cu_intra_args &p) {
    return dt == LA_DTYPE_BF16 ? tc_fwd<__nv_bfloat16>(op, stream, nchunks, p)
                               : tc_fwd<__half>(op, stream, nchunks, p);
}

template <typename T, bool DG>
static la_status tc_bwd(const char *op, cudaStream_t stream, int64_t nchunks,
                        const la_cu_intra_args &p) {
    const size_t smem = la_tc_bwd_bytes(la_tc_three<T>::value, p.fm == LA_FEATURE_ELU1);
    LA_CU_TRY(op, cudaFuncSetAttribute(la_tc_intra_bwd<T, DG>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)nchunks, (unsigned)p.H);
    la_tc_intra_bwd<T, DG><<<grid, LA_TC_THREADS, smem, stream>>>(p);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}

la_status la__tc_intra_bwd(const char *op, cudaStream_t stream, la_dtype dt, int64_t nchunks,
                           int dg, const la_cu_intra_args &p) {
    if (dt == LA_DTYPE_BF16)
        return dg ? tc_bwd<__nv_bfloat16, true>(op, stream, nchunks, p)
                  : tc_bwd<__nv_bfloat16, false>(op, stream, nchunks, p);
    return dg ? tc_bwd<__half, true>(op, stream, nchunks, p)
              : tc_bwd<__half, false>(op, stream, nchunks, p);
}
