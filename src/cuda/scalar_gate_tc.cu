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
 * for 64 value columns (blockIdx.z). Per 64-key block: q, k tiles by
 * 16-byte cp.async (double-buffered over the key blocks), the state block
 * (fp32) by vector loads into registers one block ahead and split into parts
 * in shared memory; P = phi(q) phi(k)^T and phi(q) S accumulate in
 * registers; the mask and decay of P and the row scales of the state term
 * are applied in registers; o goes out through a 16-bit shared tile in
 * 16-byte stores. */
#define LA_TC_FWD_SMEM (10 * LA_TC_TILE_BYTES)
template <typename T>
__global__ void __launch_bounds__(LA_TC_THREADS, 2) la_tc_intra_fwd(la_cu_intra_args p) {
    extern __shared__ __align__(128) unsigned char la_tc_fwd_smem[];
    T *const tiles = (T *)la_tc_fwd_smem; /* Q[2], K[2] */
    T *const Hh = tiles + 4 * LA_TC_TILE, *const Hl = Hh + LA_TC_TILE, *const Hl2 = Hl + LA_TC_TILE;
    T *const Ql = Hl2 + LA_TC_TILE, *const Kl = Ql + LA_TC_TILE, *const Vs = Kl + LA_TC_TILE;
    __shared__ double Gw[LA_TC_THREADS / 32][64];
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int h = blockIdx.y, L = ch.len, t = threadIdx.x, w = t >> 5, lane = t & 31;
    const int64_t H = p.H, K = p.K, V = p.V, tok0 = ch.tok0, v0 = (int64_t)blockIdx.z * 64;
    const float scale = p.scale, gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const int fm = p.fm;
    const bool three = la_tc_three<T>::value, elu = fm == LA_FEATURE_ELU1;
    T *const ql = elu ? Ql : (T *)NULL; /* phi(x) not exact in T */
    T *const kl = elu ? Kl : (T *)NULL;
    T *const hl2 = three ? Hl2 : (T *)NULL;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    const float *S = p.hbuf + ((size_t)blockIdx.x * H + h) * K * V;
    const bool vec = ((K | V) & 7) == 0 &&
                     (((uintptr_t)q | (uintptr_t)k | (uintptr_t)v | (uintptr_t)p.o) & 15) == 0;
    const int bcols = (int)(V - v0 < 64 ? V - v0 : 64);
    /* the state block: piece e = t + 128 u (u < 8) is row e / 16, columns 4 (e % 16) .. +3 */
    float4 hx[8];
    auto fetch_h = [&](int64_t k0) {
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int e = t + LA_TC_THREADS * u, r = e >> 4, c = (e & 15) * 4;
            const float *s = S + (k0 + r) * V + v0 + c;
            if (vec) {
                hx[u] = (k0 + r < K && c < bcols) ? *(const float4 *)s : make_float4(0, 0, 0, 0);
            } else {
                float y[4];
#pragma unroll
                for (int i = 0; i < 4; i++) y[i] = (k0 + r < K && c + i < bcols) ? s[i] : 0.f;
                hx[u] = make_float4(y[0], y[1], y[2], y[3]);
            }
        }
    };
    auto fetch_qk = [&](int64_t k0, int buf) {
        const int cols = (int)(K - k0 < 64 ? K - k0 : 64);
        la_tc_tile_fetch(tiles + buf * LA_TC_TILE, q + (tok0 * H + h) * K + k0, H * K, L, cols, vec);
        la_tc_tile_fetch(tiles + (2 + buf) * LA_TC_TILE, k + (tok0 * H + h) * K + k0, H * K, L,
                         cols, vec);
    };
    fetch_qk(0, 0);
    la_tc_tile_fetch(Vs, v + (tok0 * H + h) * V + v0, H * V, L, bcols, vec);
    la_tc_cp_commit();
    fetch_h(0);
    double *G = Gw[w];
    {
        const float x0 = 2 * lane < L ? (p.g ? p.g[(tok0 + 2 * lane) * H + h] : 0.f) + gam : 0.f;
        const float x1 =
            2 * lane + 1 < L ? (p.g ? p.g[(tok0 + 2 * lane + 1) * H + h] : 0.f) + gam : 0.f;
        la_tc_warp_gates(G, (double)x0, (double)x1);
        __syncwarp();
    }
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
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int e = t + LA_TC_THREADS * u, r = e >> 4, c = (e & 15) * 4;
            const float y[4] = {hx[u].x, hx[u].y, hx[u].z, hx[u].w};
            __align__(8) T a[4];
            __align__(8) T b[4];
            __align__(8) T d[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                a[i] = la_tc_cvt<T>(y[i]);
                const float res = y[i] - la_tc_f(a[i]);
                b[i] = la_tc_cvt<T>(res);
                d[i] = la_tc_cvt<T>(res - la_tc_f(b[i]));
            }
            *(uint2 *)(Hh + r * LA_TC_LD + c) = *(const uint2 *)a;
            *(uint2 *)(Hl + r * LA_TC_LD + c) = *(const uint2 *)b;
            if (hl2) *(uint2 *)(hl2 + r * LA_TC_LD + c) = *(const uint2 *)d;
        }
        __syncthreads();
        if (k0 + 64 < K) {
            fetch_qk(k0 + 64, buf ^ 1);
            la_tc_cp_commit();
            fetch_h(k0 + 64);
        }
        la_tc_mma64x<T, false, true>(accP, Qh, ql, NULL, Kh, kl, NULL);
        la_tc_mma64x<T, false, false>(accO, Qh, ql, NULL, Hh, Hl, hl2);
    }
    __syncthreads(); /* the H parts are free: they take P */
    T *const Ph = Hh, *const Pl = Hl, *const pl2 = hl2;
    {
        const int g8 = lane >> 2, q4 = lane & 3;
#pragma unroll
        for (int rh = 0; rh < 2; rh++) {
            const int r = 16 * w + g8 + 8 * rh;
            const float ro = r < L ? scale * la_cu_expd(G[r]) : 0.f;
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    __align__(4) T a[2];
                    __align__(4) T b[2];
                    __align__(4) T d[2];
                    const int c0 = 16 * j + 8 * hf + 2 * q4;
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        const int c = c0 + i;
                        float &x = accP[j].x[4 * hf + 2 * rh + i];
                        const float y = (c <= r && r < L) ? x * scale * la_cu_expd(G[r] - G[c]) : 0.f;
                        a[i] = la_tc_cvt<T>(y);
                        const float res = y - la_tc_f(a[i]);
                        b[i] = la_tc_cvt<T>(res);
                        d[i] = la_tc_cvt<T>(res - la_tc_f(b[i]));
                        accO[j].x[4 * hf + 2 * rh + i] *= ro;
                    }
                    *(uint32_t *)(Ph + r * LA_TC_LD + c0) = *(const uint32_t *)a;
                    *(uint32_t *)(Pl + r * LA_TC_LD + c0) = *(const uint32_t *)b;
                    if (pl2) *(uint32_t *)(pl2 + r * LA_TC_LD + c0) = *(const uint32_t *)d;
                }
        }
    }
    __syncthreads();
    la_tc_mma64x<T, false, false>(accO, Ph, Pl, pl2, Vs, NULL, NULL);
    /* o through a 16-bit tile (Q's first buffer: its readers are done) */
    __syncthreads();
    T *const Os = tiles;
    {
        const int g8 = lane >> 2, q4 = lane & 3;
#pragma unroll
        for (int rh = 0; rh < 2; rh++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const int r = 16 * w + g8 + 8 * rh, c0 = 16 * j + 8 * hf + 2 * q4;
                    __align__(4) T a[2];
                    a[0] = la_tc_cvt<T>(accO[j].x[4 * hf + 2 * rh]);
                    a[1] = la_tc_cvt<T>(accO[j].x[4 * hf + 2 * rh + 1]);
                    *(uint32_t *)(Os + r * LA_TC_LD + c0) = *(const uint32_t *)a;
                }
    }
    __syncthreads();
    T *o = (T *)p.o;
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int e = t + LA_TC_THREADS * u, r = e >> 3, c = (e & 7) * 8;
        if (r >= L) continue;
        T *d = o + ((tok0 + r) * H + h) * V + v0 + c;
        if (vec) {
            if (c < bcols) *(uint4 *)d = *(const uint4 *)(Os + r * LA_TC_LD + c);
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++)
                if (c + i < bcols) d[i] = Os[r * LA_TC_LD + c + i];
        }
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
    const size_t smem = LA_TC_FWD_SMEM;
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
