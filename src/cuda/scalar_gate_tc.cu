/* Kernel linear attention and simple GLA for bf16 / fp16 inputs on tensor
 * cores: the per-chunk kernels of the chunkwise forward and backward (the
 * state passes are in chunk_state_tc.cuh). Same mathematics as the fp32
 * kernels in scalar_gate.cu; every product runs on tensor cores with fp32
 * accumulation, fp32 quantities (states, masked decayed scores) entering as
 * 16-bit parts (tc.cuh). Tiles come in whole by 16-byte cp.async and
 * vector loads (tc_tile.cuh); masks, decays and row scales are applied to
 * the accumulators in registers; results leave through a 16-bit shared tile
 * in 16-byte stores. CTAs of 4 warps. */
#include "chunk_state_tc.cuh"
#include "scalar_gate.cuh"

/* The chunk's cumulative log-gates, each warp its own copy (no barrier). */
__device__ __forceinline__ void la_tc_chunk_gates(double *G, const float *g, float gam,
                                                  int64_t tok0, int L, int64_t H, int h) {
    const int lane = threadIdx.x & 31;
    const float x0 = 2 * lane < L ? (g ? g[(tok0 + 2 * lane) * H + h] : 0.f) + gam : 0.f;
    const float x1 = 2 * lane + 1 < L ? (g ? g[(tok0 + 2 * lane + 1) * H + h] : 0.f) + gam : 0.f;
    la_tc_warp_gates(G, (double)x0, (double)x1);
    __syncwarp();
}

/* DV = false, the output for 64 value columns (blockIdx.z):
 *   o_i = scale e^{G_i} Qf_i S + sum_{j<=i} P_ij v_j,
 * DV = true, the value gradient (dS: the gradient of the chunk-end state):
 *   dv_j = e^{G_L-G_j} Kf_j dS + sum_{i>=j} P_ij do_i,
 * P_ij = scale e^{G_i-G_j} Qf_i.Kf_j (j <= i), Qf = phi(q), Kf = phi(k).
 * Per 64-key block: q, k tiles by cp.async (double-buffered over the key
 * blocks), the state block by vector loads into registers one block ahead,
 * split into parts in shared memory. */
#define LA_TC_FWD_SMEM(elu) (((elu) ? 10 : 8) * LA_TC_TILE_BYTES) /* Ql, Kl for elu+1 */
template <typename T, bool DV>
__global__ void __launch_bounds__(LA_TC_THREADS, 3) la_tc_intra_fwd(la_cu_intra_args p) {
    extern __shared__ __align__(128) unsigned char la_tc_fwd_smem[];
    T *const tiles = (T *)la_tc_fwd_smem; /* Q[2], K[2] */
    T *const Hh = tiles + 4 * LA_TC_TILE, *const Hl = Hh + LA_TC_TILE, *const Hl2 = Hl + LA_TC_TILE;
    T *const Vs = Hl2 + LA_TC_TILE, *const Ql = Vs + LA_TC_TILE, *const Kl = Ql + LA_TC_TILE;
    __shared__ double Gw[LA_TC_THREADS / 32][64];
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int h = blockIdx.y, L = ch.len, t = threadIdx.x;
    const int64_t H = p.H, K = p.K, V = p.V, tok0 = ch.tok0, v0 = (int64_t)blockIdx.z * 64;
    const float scale = p.scale, gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const int fm = p.fm;
    const bool three = la_tc_three<T>::value, elu = fm == LA_FEATURE_ELU1;
    T *const ql = elu ? Ql : (T *)NULL; /* phi(x) not exact in T */
    T *const kl = elu ? Kl : (T *)NULL;
    T *const hl2 = three ? Hl2 : (T *)NULL;
    const T *q = (const T *)p.q, *k = (const T *)p.k;
    const T *v = (const T *)(DV ? p.d_o : p.v);
    T *out = (T *)(DV ? p.dv : p.o);
    const float *S = (DV ? p.dhbuf : p.hbuf) + ((size_t)blockIdx.x * H + h) * K * V;
    const bool vec = ((K | V) & 7) == 0 &&
                     (((uintptr_t)q | (uintptr_t)k | (uintptr_t)v | (uintptr_t)out) & 15) == 0;
    const int bcols = (int)(V - v0 < 64 ? V - v0 : 64);
    float4 hx[8];
    auto fetch_qk = [&](int64_t k0, int buf) {
        const int cols = (int)(K - k0 < 64 ? K - k0 : 64);
        la_tc_tile_fetch(tiles + buf * LA_TC_TILE, q + (tok0 * H + h) * K + k0, H * K, L, cols,
                         vec);
        la_tc_tile_fetch(tiles + (2 + buf) * LA_TC_TILE, k + (tok0 * H + h) * K + k0, H * K, L,
                         cols, vec);
    };
    fetch_qk(0, 0);
    la_tc_tile_fetch(Vs, v + (tok0 * H + h) * V + v0, H * V, L, bcols, vec);
    la_tc_cp_commit();
    la_tc_state_fetch(hx, S, 0, v0, K, V, vec);
    double *G = Gw[t >> 5];
    la_tc_chunk_gates(G, p.g, gam, tok0, L, H, h);
    la_tc_acc accP[4], accO[4];
    la_tc_zero(accP);
    la_tc_zero(accO);
    int buf = 0;
    for (int64_t k0 = 0; k0 < K; k0 += 64, buf ^= 1) {
        T *const Qh = tiles + buf * LA_TC_TILE, *const Kh = tiles + (2 + buf) * LA_TC_TILE;
        const int cols = (int)(K - k0 < 64 ? K - k0 : 64);
        la_tc_cp_wait_all();
        __syncthreads(); /* tiles in; the previous block's products are done */
        if (fm != LA_FEATURE_IDENTITY) {
            const auto f = [&](int r, int c, float x) -> float {
                return (r < L && c < cols) ? la_phi(fm, x) : 0.f;
            };
            la_tc_tile_split(Qh, ql, (T *)NULL, f);
            la_tc_tile_split(Kh, kl, (T *)NULL, f);
        }
        la_tc_state_split(hx, Hh, Hl, hl2);
        __syncthreads();
        if (k0 + 64 < K) {
            fetch_qk(k0 + 64, buf ^ 1);
            la_tc_cp_commit();
            la_tc_state_fetch(hx, S, k0 + 64, v0, K, V, vec);
        }
        la_tc_mma64x<T, false, true>(accP, Qh, ql, NULL, Kh, kl, NULL);
        if (DV)
            la_tc_mma64x<T, false, false>(accO, Kh, kl, NULL, Hh, Hl, hl2);
        else
            la_tc_mma64x<T, false, false>(accO, Qh, ql, NULL, Hh, Hl, hl2);
    }
    __syncthreads(); /* the H parts are free: they take P */
    T *const Ph = Hh, *const Pl = Hl, *const pl2 = hl2;
    const double GL = L > 0 ? G[L - 1] : 0.0;
    la_tc_acc_split(accP, Ph, Pl, pl2, [&](int r, int c, float x) -> float {
        return (c <= r && r < L) ? x * scale * la_cu_expd(G[r] - G[c]) : 0.f;
    });
    float rf[2]; /* the factor of this thread's two rows, once per row */
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
        const int r = 16 * (t >> 5) + ((t & 31) >> 2) + 8 * rh;
        rf[rh] = r < L ? (DV ? la_cu_expd(GL - G[r]) : scale * la_cu_expd(G[r])) : 0.f;
    }
    la_tc_acc_each_rh(accO, [&](int rh, int, int, float &x) { x *= rf[rh]; });
    __syncthreads();
    la_tc_mma64x<T, DV, false>(accO, Ph, Pl, pl2, Vs, NULL, NULL);
    __syncthreads(); /* Q's first buffer takes the result */
    la_tc_acc_split(accO, tiles, (T *)NULL, (T *)NULL, [](int, int, float x) { return x; });
    __syncthreads();
    la_tc_tile_store(out + (tok0 * H + h) * V + v0, H * V, tiles, L, bcols, vec);
}

/* dq, dk of one (chunk, head), as la_cu_scalar_intra_bwd (scalar_gate.cu):
 *   dP = e^{G_i-G_j} do_i.v_j (j < i),  dPd_i = do_i.v_i,
 *   dQf = e^{G_i} do S^T + dP Kf,  dq = scale (dQf + dPd Kf) phi'(q),
 *   dKf = e^{G_L-G_j} v dS^T + scale dP^T Qf,  dk = (dKf + scale dPd Qf) phi'(k);
 * DG: the per-token sums scale Qf.dQf - Kf.dKf (without the diagonal) in
 * float64, reverse-summed over the chunk into dgl, the chunk's total into
 * ctot. phi' is taken from phi (elu+1: min(phi, 1); relu: phi > 0). Tiles:
 * dP (3 parts), do / v (2), the state block (3 parts), q, k (2) and their
 * lo parts for elu+1 (2). Loads run one step ahead of the products: the
 * do / v blocks of dP in two buffer pairs (X0 / X1, then the state tiles),
 * the q, k tiles of a key block during its first state product, each fp32
 * state block (registers) during the products of the block before it (the
 * first of a sweep during the previous sweep's last products). Per-row
 * factors e^{G_i}, e^{G_L-G_j} once per thread row. */
#define LA_TC_DQK_SMEM (12 * LA_TC_TILE_BYTES)
template <typename T, bool DG>
__global__ void __launch_bounds__(LA_TC_THREADS, 2) la_tc_bwd_dqk(la_cu_intra_args p) {
    extern __shared__ __align__(128) unsigned char la_tc_dqk_smem[];
    T *const dPh = (T *)la_tc_dqk_smem, *const dPl = dPh + LA_TC_TILE,
             *const dPl2s = dPl + LA_TC_TILE;
    T *const X0 = dPl2s + LA_TC_TILE, *const X1 = X0 + LA_TC_TILE;
    T *const Sh = X1 + LA_TC_TILE, *const Sl = Sh + LA_TC_TILE, *const Sl2s = Sl + LA_TC_TILE;
    T *const Qh = Sl2s + LA_TC_TILE, *const Kh = Qh + LA_TC_TILE;
    T *const Qls = Kh + LA_TC_TILE, *const Kls = Qls + LA_TC_TILE;
    __shared__ double Gw[LA_TC_THREADS / 32][64];
    __shared__ double rq[64], rk[64];
    __shared__ float dPd[64];
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int h = blockIdx.y, L = ch.len, t = threadIdx.x, lane = t & 31;
    const int64_t H = p.H, K = p.K, V = p.V, tok0 = ch.tok0;
    const int nvb = (int)((V + 63) / 64);
    const float scale = p.scale, gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const int fm = p.fm;
    const bool three = la_tc_three<T>::value, elu = fm == LA_FEATURE_ELU1;
    T *const dPl2 = three ? dPl2s : (T *)NULL, *const Sl2 = three ? Sl2s : (T *)NULL;
    T *const ql = elu ? Qls : (T *)NULL, *const kl = elu ? Kls : (T *)NULL;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    const T *dO = (const T *)p.d_o;
    const float *S = p.hbuf + ((size_t)blockIdx.x * H + h) * K * V;
    const float *dS = p.dhbuf + ((size_t)blockIdx.x * H + h) * K * V;
    const bool vec = ((K | V) & 7) == 0 && (((uintptr_t)q | (uintptr_t)k | (uintptr_t)v |
                                             (uintptr_t)dO | (uintptr_t)p.dq | (uintptr_t)p.dk) &
                                            15) == 0;
    float4 hx[8];
    /* state block (the gradient dS when grad) rows k0.., value block jb */
    const auto sfetch = [&](bool grad, int64_t k0, int jb) {
        la_tc_state_fetch(hx, grad ? dS : S, k0, (int64_t)jb * 64, K, V, vec);
    };
    sfetch(false, 0, 0);
    double *G = Gw[t >> 5];
    la_tc_chunk_gates(G, p.g, gam, tok0, L, H, h);
    const double GL = L > 0 ? G[L - 1] : 0.0;
    float eq[2], ek[2]; /* e^{G_r}, e^{G_L-G_r} of this thread's rows (0 past the chunk) */
    int rows[2];
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
        const int r = 16 * (t >> 5) + (lane >> 2) + 8 * rh;
        rows[rh] = r;
        eq[rh] = r < L ? la_cu_expd(G[r]) : 0.f;
        ek[rh] = r < L ? la_cu_expd(GL - G[r]) : 0.f;
    }
    if (t < 64) rq[t] = 0.0, rk[t] = 0.0;
    const int64_t sq = H * K, sv = H * V;
    const T *qb = q + (tok0 * H + h) * K, *kb = k + (tok0 * H + h) * K;
    const T *vb = v + (tok0 * H + h) * V, *ob = dO + (tok0 * H + h) * V;
    la_tc_acc acc[4], acc2[4];
    /* ---- dP = do v^T, strictly below the diagonal, decayed; dPd its diagonal */
    const auto fetch_dp = [&](int jb, T *a, T *b) {
        const int64_t v0 = (int64_t)jb * 64;
        const int cols = (int)(V - v0 < 64 ? V - v0 : 64);
        la_tc_tile_fetch(a, ob + v0, sv, L, cols, vec);
        la_tc_tile_fetch(b, vb + v0, sv, L, cols, vec);
        la_tc_cp_commit();
    };
    la_tc_zero(acc);
    fetch_dp(0, X0, X1);
    for (int jb = 0; jb < nvb; jb++) {
        T *const A = (jb & 1) ? Sh : X0, *const B = (jb & 1) ? Sl : X1;
        la_tc_cp_wait_all();
        __syncthreads(); /* block jb is in; the products of block jb - 1 are done */
        if (jb + 1 < nvb) fetch_dp(jb + 1, (jb & 1) ? X0 : Sh, (jb & 1) ? X1 : Sl);
        la_tc_mma64<T, false, true>(acc, A, B);
    }
    la_tc_acc_each(acc, [&](int r, int c, float &x) {
        if (r == c) dPd[r] = r < L ? x : 0.f;
    });
    la_tc_acc_split(acc, dPh, dPl, dPl2, [&](int r, int c, float x) -> float {
        return (c < r && r < L) ? x * la_cu_expd(G[r] - G[c]) : 0.f;
    });
    const auto phid = [&](float f) -> float { /* phi'(x) from f = phi(x) */
                                              return fm == LA_FEATURE_ELU1   ? fminf(f, 1.f)
                                                     : fm == LA_FEATURE_RELU ? (f > 0.f ? 1.f : 0.f)
                                                                             : 1.f;
    };
    /* a 16-bit part value of tile X at (r, c) (+ its lo part) */
    const auto tv = [](const T *hi, const T *lo, int r, int c) -> float {
        const float x = la_tc_f(hi[r * LA_TC_LD + c]);
        return lo ? x + la_tc_f(lo[r * LA_TC_LD + c]) : x;
    };
    /* acc += (e^{G} do | e^{G_L - G} v) (S | dS)^T over the value blocks */
    const auto state_sweep = [&](bool grad, int64_t k0) {
        const T *xb = grad ? vb : ob;
        for (int jb = 0; jb < nvb; jb++) {
            const int64_t v0 = (int64_t)jb * 64;
            const int cols = (int)(V - v0 < 64 ? V - v0 : 64);
            __syncthreads(); /* readers of X0 / S parts are done */
            la_tc_tile_fetch(X0, xb + v0, sv, L, cols, vec);
            la_tc_cp_commit();
            la_tc_state_split(hx, Sh, Sl, Sl2);
            if (jb + 1 < nvb) sfetch(grad, k0, jb + 1);
            la_tc_cp_wait_all();
            __syncthreads();
            la_tc_mma64x<T, false, true>(acc, X0, NULL, NULL, Sh, Sl, Sl2);
        }
    };
    for (int64_t k0 = 0; k0 < K; k0 += 64) {
        const int kcols = (int)(K - k0 < 64 ? K - k0 : 64);
        /* the previous key block's readers of Q, K passed the barrier
         * before its dk store */
        la_tc_tile_fetch(Qh, qb + k0, sq, L, kcols, vec);
        la_tc_tile_fetch(Kh, kb + k0, sq, L, kcols, vec);
        la_tc_cp_commit();
        /* ---- dQf[:, k0..] = e^{G_i} do S^T + dP Kf */
        la_tc_zero(acc);
        state_sweep(false, k0); /* Q, K are in and visible after it */
        if (fm != LA_FEATURE_IDENTITY) {
            const auto f = [&](int r, int c, float x) -> float {
                return (r < L && c < kcols) ? la_phi(fm, x) : 0.f;
            };
            la_tc_tile_split(Qh, ql, (T *)NULL, f);
            la_tc_tile_split(Kh, kl, (T *)NULL, f);
            __syncthreads();
        }
        la_tc_acc_each_rh(acc, [&](int rh, int, int, float &x) { x *= eq[rh]; });
        sfetch(true, k0, 0); /* the dk sweep's first block */
        la_tc_mma64x<T, false, false>(acc, dPh, dPl, dPl2, Kh, kl, NULL);
        __syncthreads(); /* X0 takes dq */
        {
            const float dpd[2] = {dPd[rows[0]], dPd[rows[1]]};
            double part[2] = {0.0, 0.0};
            la_tc_acc_each_rh(acc, [&](int rh, int r, int c, float &x) {
                const float qf = tv(Qh, ql, r, c), kf = tv(Kh, kl, r, c);
                if (DG) part[rh] += (double)(scale * qf * x);
                x = fmaf(dpd[rh], kf, x) * scale * phid(qf);
            });
            if (DG) {
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    part[i] += __shfl_xor_sync(0xffffffffu, part[i], 1);
                    part[i] += __shfl_xor_sync(0xffffffffu, part[i], 2);
                }
                if ((lane & 3) == 0) {
                    rq[rows[0]] += part[0];
                    rq[rows[1]] += part[1];
                }
            }
        }
        la_tc_acc_split(acc, X0, (T *)NULL, (T *)NULL, [](int, int, float x) { return x; });
        __syncthreads();
        la_tc_tile_store((T *)p.dq + (tok0 * H + h) * K + k0, sq, X0, L, kcols, vec);
        /* ---- dKf[:, k0..] = e^{G_L-G_j} v dS^T + scale dP^T Qf */
        la_tc_zero(acc);
        state_sweep(true, k0);
        la_tc_acc_each_rh(acc, [&](int rh, int, int, float &x) { x *= ek[rh]; });
        la_tc_zero(acc2);
        la_tc_mma64x<T, true, false>(acc2, dPh, dPl, dPl2, Qh, ql, NULL);
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int i = 0; i < acc[j].num_elements; i++)
                acc[j].x[i] = fmaf(scale, acc2[j].x[i], acc[j].x[i]);
        if (k0 + 64 < K) sfetch(false, k0 + 64, 0); /* the next key block's first block */
        __syncthreads();                            /* X0 takes dk */
        {
            const float dpd[2] = {dPd[rows[0]], dPd[rows[1]]};
            double part[2] = {0.0, 0.0};
            la_tc_acc_each_rh(acc, [&](int rh, int r, int c, float &x) {
                const float qf = tv(Qh, ql, r, c), kf = tv(Kh, kl, r, c);
                if (DG) part[rh] += (double)(kf * x);
                x = fmaf(dpd[rh], scale * qf, x) * phid(kf);
            });
            if (DG) {
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    part[i] += __shfl_xor_sync(0xffffffffu, part[i], 1);
                    part[i] += __shfl_xor_sync(0xffffffffu, part[i], 2);
                }
                if ((lane & 3) == 0) {
                    rk[rows[0]] += part[0];
                    rk[rows[1]] += part[1];
                }
            }
        }
        la_tc_acc_split(acc, X0, (T *)NULL, (T *)NULL, [](int, int, float x) { return x; });
        __syncthreads();
        la_tc_tile_store((T *)p.dk + (tok0 * H + h) * K + k0, sq, X0, L, kcols, vec);
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

template <typename T, bool DV>
static la_status tc_fwd(const char *op, cudaStream_t stream, int64_t nchunks,
                        const la_cu_intra_args &p) {
    const size_t smem = LA_TC_FWD_SMEM(p.fm == LA_FEATURE_ELU1);
    LA_CU_TRY(op, cudaFuncSetAttribute(la_tc_intra_fwd<T, DV>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)nchunks, (unsigned)p.H, (unsigned)((p.V + 63) / 64));
    la_tc_intra_fwd<T, DV><<<grid, LA_TC_THREADS, smem, stream>>>(p);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}

la_status la__tc_intra_fwd(const char *op, cudaStream_t stream, la_dtype dt, int64_t nchunks,
                           const la_cu_intra_args &p) {
    return dt == LA_DTYPE_BF16 ? tc_fwd<__nv_bfloat16, false>(op, stream, nchunks, p)
                               : tc_fwd<__half, false>(op, stream, nchunks, p);
}

template <typename T, bool DG>
static la_status tc_bwd(const char *op, cudaStream_t stream, int64_t nchunks,
                        const la_cu_intra_args &p) {
    la_status st = tc_fwd<T, true>(op, stream, nchunks, p); /* dv */
    if (st) return st;
    const size_t smem = LA_TC_DQK_SMEM;
    LA_CU_TRY(op, cudaFuncSetAttribute(la_tc_bwd_dqk<T, DG>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)nchunks, (unsigned)p.H);
    la_tc_bwd_dqk<T, DG><<<grid, LA_TC_THREADS, smem, stream>>>(p);
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
