/* Kernel linear attention (unnormalised; identity, elu+1, relu) and simple
 * GLA (per-token g and/or per-head g_gamma) on the GPU: chunkwise forward
 * and backward in fp32 FFMA math (this file); bf16 / fp16 inputs run on
 * tensor cores (chunk_state_tc.cuh, scalar_gate_tc.cu; see use_tc below).
 *
 * Forward:  la_cu_state_pass (chunk_state.cuh) stores the state at each chunk
 *           start, then one CTA per (chunk, head) computes
 *             o_i = e^{G_i} Qf_i S + sum_{j<=i} e^{G_i-G_j} (Qf_i.Kf_j) v_j
 *           with Qf = scale phi(q), Kf = phi(k).
 * Backward: the forward state pass again, a reverse state pass for the
 *           gradient of each chunk-end state, then one CTA per (chunk, head)
 *           for dq, dk, dv, and the gate gradient as fla's identity
 *           dg_t = sum_{u>=t} (Qf_u.dQf_u - Kf_u.dKf_u) + [final] <dS_T, S_T>
 *           with the diagonal pair left out of both dots (it cancels), the
 *           sums in float64 and in a fixed order. dg_gamma (fp32 path) does
 *           not sum that dg (its dots cancel, weighted by positions up to T):
 *           per chunk, with weights <= 64 (bench/GPU.md, cuda-glue section),
 *             L e^{G_e} <dS_e,S'> + sum_j (L-1-j) e^{G_e-G_j} (Kf_j dS_e).v_j
 *             + sum_i (i+1) e^{G_i} (Qf_i S').do_i
 *             + sum_{j<i} (i-j) e^{G_i-G_j} (Qf_i.Kf_j)(do_i.v_j),
 *           one float64 per (chunk, head), summed over chunks in order. */
#include "scalar_gate.cuh"
#include "lin_fused.cuh" /* cuda-fused9 */

#include <stdlib.h>

#define LA_TILE_IDX                                                                                \
    const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;                                        \
    (void)ty, (void)tx;

template <typename T>
__global__ void __launch_bounds__(256) la_cu_scalar_intra_fwd(la_cu_intra_args p) {
    __shared__ la_cu_gemm_smem gs;
    __shared__ float P[LA_CU_C][LA_CU_C + 1];
    __shared__ double G[LA_CU_C];
    __shared__ float eG[LA_CU_C];
    LA_TILE_IDX
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int h = blockIdx.y, L = ch.len;
    const int64_t H = p.H, K = p.K, V = p.V, tok0 = ch.tok0;
    const float scale = p.scale;
    const int fm = p.fm;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    T *o = (T *)p.o;
    const float *S = p.hbuf + ((size_t)blockIdx.x * H + h) * K * V;
    la_cu_chunk_gates_par(G, p.g, p.g_gamma ? p.g_gamma[h] : 0.f, tok0, L, H, h);
    if (threadIdx.x < LA_CU_C) eG[threadIdx.x] = threadIdx.x < L ? la_cu_expd(G[threadIdx.x]) : 0.f;
    auto Qf = [&](int m, int r) -> float {
        return (m < L && r < K) ? scale * la_phi(fm, ldf(q + ((tok0 + m) * H + h) * K + r)) : 0.f;
    };
    auto KfT = [&](int r, int nn) -> float {
        return (nn < L && r < K) ? la_phi(fm, ldf(k + ((tok0 + nn) * H + h) * K + r)) : 0.f;
    };
    float acc[4][4];
    la_cu_zero(acc);
    la_cu_gemm<true>(acc, (int)K, Qf, KfT, gs);
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int m = ty + 16 * a, nn = tx + 16 * b;
            P[m][nn] = (nn <= m && m < L) ? acc[a][b] * la_cu_expd(G[m] - G[nn]) : 0.f;
        }
    __syncthreads();
    for (int64_t vb = 0; vb < V; vb += 64) {
        la_cu_zero(acc);
        la_cu_gemm(
            acc, (int)K, Qf,
            [&](int r, int nn) -> float {
                const int64_t col = vb + nn;
                return (r < K && col < V) ? S[r * V + col] : 0.f;
            },
            gs);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) acc[a][b] *= eG[ty + 16 * a];
        la_cu_gemm(
            acc, L, [&](int m, int r) -> float { return P[m][r]; },
            [&](int r, int nn) -> float {
                const int64_t col = vb + nn;
                return (r < L && col < V) ? ldf(v + ((tok0 + r) * H + h) * V + col) : 0.f;
            },
            gs);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int m = ty + 16 * a;
                const int64_t col = vb + tx + 16 * b;
                if (m < L && col < V) stf(o + ((tok0 + m) * H + h) * V + col, acc[a][b]);
            }
    }
}

/* Sum of x over the 16 threads of one tile row (same ty), fixed order. */
__device__ __forceinline__ float la_cu_rowsum16(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 8);
    x += __shfl_xor_sync(0xffffffffu, x, 4);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x;
}

template <typename T, bool DG>
__global__ void __launch_bounds__(256) la_cu_scalar_intra_bwd(la_cu_intra_args p) {
    __shared__ la_cu_gemm_smem gs;
    __shared__ float P[LA_CU_C][LA_CU_C + 1];
    __shared__ float dP[LA_CU_C][LA_CU_C + 1];
    __shared__ float dPd[LA_CU_C];
    __shared__ double G[LA_CU_C];
    __shared__ float eG[LA_CU_C], eL[LA_CU_C];
    __shared__ double rq[LA_CU_C], rk[LA_CU_C];
    __shared__ double red[256];
    double gam = 0.0; /* this thread's share of the chunk's dg_gamma terms (DG) */
    LA_TILE_IDX
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int h = blockIdx.y, L = ch.len;
    const int64_t H = p.H, K = p.K, V = p.V, tok0 = ch.tok0;
    const float scale = p.scale;
    const int fm = p.fm;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    const T *dO = (const T *)p.d_o;
    T *dq = (T *)p.dq, *dk = (T *)p.dk, *dv = (T *)p.dv;
    const float *S = p.hbuf + ((size_t)blockIdx.x * H + h) * K * V;
    const float *dS = p.dhbuf + ((size_t)blockIdx.x * H + h) * K * V;
    la_cu_chunk_gates_par(G, p.g, p.g_gamma ? p.g_gamma[h] : 0.f, tok0, L, H, h);
    if (threadIdx.x < LA_CU_C) {
        const int i = threadIdx.x;
        eG[i] = i < L ? la_cu_expd(G[i]) : 0.f;
        eL[i] = i < L ? la_cu_expd(G[L - 1] - G[i]) : 0.f;
        dPd[i] = 0.f;
        rq[i] = 0.0;
        rk[i] = 0.0;
    }
    auto Qf = [&](int m, int r) -> float {
        return (m < L && r < K) ? scale * la_phi(fm, ldf(q + ((tok0 + m) * H + h) * K + r)) : 0.f;
    };
    auto Kf = [&](int m, int r) -> float {
        return (m < L && r < K) ? la_phi(fm, ldf(k + ((tok0 + m) * H + h) * K + r)) : 0.f;
    };
    auto DO = [&](int m, int r) -> float {
        return (m < L && r < V) ? ldf(dO + ((tok0 + m) * H + h) * V + r) : 0.f;
    };
    auto Vv = [&](int m, int r) -> float {
        return (m < L && r < V) ? ldf(v + ((tok0 + m) * H + h) * V + r) : 0.f;
    };
    float acc[4][4];
    /* P = e^{G_i-G_j} Qf_i.Kf_j (j <= i), dP = e^{G_i-G_j} do_i.v_j (j < i),
     * dPd_i = do_i.v_i (the diagonal, no decay). */
    la_cu_zero(acc);
    la_cu_gemm<true>(
        acc, (int)K, Qf, [&](int r, int nn) { return Kf(nn, r); }, gs);
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int m = ty + 16 * a, nn = tx + 16 * b;
            P[m][nn] = (nn <= m && m < L) ? acc[a][b] * la_cu_expd(G[m] - G[nn]) : 0.f;
        }
    la_cu_zero(acc);
    la_cu_gemm<true>(
        acc, (int)V, DO, [&](int r, int nn) { return Vv(nn, r); }, gs);
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int m = ty + 16 * a, nn = tx + 16 * b;
            dP[m][nn] = (nn < m && m < L) ? acc[a][b] * la_cu_expd(G[m] - G[nn]) : 0.f;
            if (nn == m && m < L) dPd[m] = acc[a][b];
            /* (T4); P[m][nn] was written by this thread above */
            if (DG && nn < m && m < L) gam += (double)(m - nn) * ((double)P[m][nn] * acc[a][b]);
        }
    __syncthreads();
    for (int64_t kb = 0; kb < K; kb += 64) {
        /* dQf = e^{G_i} do_i S^T + dP Kf (+ the diagonal) */
        la_cu_zero(acc);
        la_cu_gemm<true>(
            acc, (int)V, DO,
            [&](int r, int nn) -> float {
                const int64_t col = kb + nn;
                return (r < V && col < K) ? S[col * V + r] : 0.f;
            },
            gs);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                acc[a][b] *= eG[ty + 16 * a];
                if (DG) /* (T3) */
                    gam += (double)(ty + 16 * a + 1) *
                           ((double)Qf(ty + 16 * a, (int)kb + tx + 16 * b) * acc[a][b]);
            }
        la_cu_gemm(
            acc, L, [&](int m, int r) -> float { return dP[m][r]; },
            [&](int r, int nn) { return Kf(r, (int)(kb + nn)); }, gs);
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int m = ty + 16 * a;
            float part = 0.f;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int col = (int)kb + tx + 16 * b;
                if (DG) part = fmaf(Qf(m, col), acc[a][b], part);
                acc[a][b] = fmaf(dPd[m < L ? m : 0], Kf(m, col), acc[a][b]);
                if (m < L && col < K) {
                    const float x = ldf(q + ((tok0 + m) * H + h) * K + col);
                    stf(dq + ((tok0 + m) * H + h) * K + col, acc[a][b] * scale * la_dphi(fm, x));
                }
            }
            if (DG) {
                part = la_cu_rowsum16(part);
                if (tx == 0) rq[m] += (double)part;
            }
        }
        /* dKf = e^{G_L-G_j} v_j dS^T + dP^T Qf (+ the diagonal) */
        la_cu_zero(acc);
        la_cu_gemm<true>(
            acc, (int)V, Vv,
            [&](int r, int nn) -> float {
                const int64_t col = kb + nn;
                return (r < V && col < K) ? dS[col * V + r] : 0.f;
            },
            gs);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                acc[a][b] *= eL[ty + 16 * a];
                if (DG && ty + 16 * a < L) /* (T2) */
                    gam += (double)(L - 1 - (ty + 16 * a)) *
                           ((double)Kf(ty + 16 * a, (int)kb + tx + 16 * b) * acc[a][b]);
            }
        la_cu_gemm(
            acc, L, [&](int m, int r) -> float { return dP[r][m]; },
            [&](int r, int nn) { return Qf(r, (int)(kb + nn)); }, gs);
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int m = ty + 16 * a;
            float part = 0.f;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int col = (int)kb + tx + 16 * b;
                if (DG) part = fmaf(Kf(m, col), acc[a][b], part);
                acc[a][b] = fmaf(dPd[m < L ? m : 0], Qf(m, col), acc[a][b]);
                if (m < L && col < K) {
                    const float x = ldf(k + ((tok0 + m) * H + h) * K + col);
                    stf(dk + ((tok0 + m) * H + h) * K + col, acc[a][b] * la_dphi(fm, x));
                }
            }
            if (DG) {
                part = la_cu_rowsum16(part);
                if (tx == 0) rk[m] += (double)part;
            }
        }
    }
    for (int64_t vb = 0; vb < V; vb += 64) {
        /* dv = e^{G_L-G_j} Kf_j dS + P^T do */
        la_cu_zero(acc);
        la_cu_gemm(
            acc, (int)K, Kf,
            [&](int r, int nn) -> float {
                const int64_t col = vb + nn;
                return (r < K && col < V) ? dS[r * V + col] : 0.f;
            },
            gs);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) acc[a][b] *= eL[ty + 16 * a];
        la_cu_gemm(
            acc, L, [&](int m, int r) -> float { return P[r][m]; },
            [&](int r, int nn) { return DO(r, (int)(vb + nn)); }, gs);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int m = ty + 16 * a;
                const int64_t col = vb + tx + 16 * b;
                if (m < L && col < V) stf(dv + ((tok0 + m) * H + h) * V + col, acc[a][b]);
            }
    }
    if (DG) {
        /* (T1) and the chunk's dg_gamma total (fixed tree) */
        double sd = 0.0;
        for (int64_t i = threadIdx.x; i < K * V; i += 256) sd += (double)S[i] * (double)dS[i];
        gam += (double)L * (double)eG[L - 1] * sd;
        red[threadIdx.x] = gam;
        __syncthreads();
        for (int w = 128; w > 0; w >>= 1) {
            if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
            __syncthreads();
        }
        if (threadIdx.x == 0) p.cgam[(size_t)blockIdx.x * H + h] = red[0];
        if (threadIdx.x == 0) {
            double run = 0.0;
            for (int i = L - 1; i >= 0; i--) {
                run += rq[i] - rk[i];
                p.dgl[(tok0 + i) * H + h] = run;
            }
            p.ctot[(size_t)blockIdx.x * H + h] = run;
        }
    }
}

/* fin[n, h] = <dS_T, S_T> (float64, fixed order), one CTA per (n, h). */
__global__ void __launch_bounds__(256)
    la_cu_state_dot(const float *a, const float *b, double *out, int64_t KV) {
    __shared__ double red[256];
    const float *x = a + (size_t)blockIdx.x * KV, *y = b + (size_t)blockIdx.x * KV;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < KV; i += 256) s += (double)x[i] * (double)y[i];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int w = 128; w > 0; w >>= 1) {
        if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = red[0];
}

la_status la__cu_state_dot(const char *op, cudaStream_t stream, const float *a, const float *b,
                           double *out, int64_t NH, int64_t KV) {
    if (NH == 0) return LA_OK;
    la_cu_state_dot<<<(unsigned)NH, 256, 0, stream>>>(a, b, out, KV);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}

/* cuda-fused12 (the fused backward): per (chunk, head), token i's
 * phi(q).dq - phi(k).dk from the walks' nslot partials (summed in slot
 * order), reverse-summed over the chunk into dgl, the chunk's total into
 * ctot (as la_tc_bwd_dqk leaves them; float64). */
__global__ void la_cu_dg_tokens(const la_cu_chunk *chunks, const double *pq, const double *pk,
                                int nslot, int64_t H, double *dgl, double *ctot) {
    __shared__ double r[LA_CU_C];
    const la_cu_chunk ch = chunks[blockIdx.x];
    const int h = blockIdx.y, i = threadIdx.x;
    if (i < ch.len) {
        const size_t row = ((size_t)(ch.tok0 + i) * H + h) * nslot;
        double a = 0.0, b = 0.0;
        for (int s = 0; s < nslot; s++) a += pq[row + s], b += pk[row + s];
        r[i] = a - b;
    }
    __syncthreads();
    if (i == 0) {
        double run = 0.0;
        for (int j = ch.len - 1; j >= 0; j--) {
            run += r[j];
            dgl[(ch.tok0 + j) * H + h] = run;
        }
        ctot[(size_t)blockIdx.x * H + h] = run;
    }
}

/* dg of the chunk's tokens: local reverse sum + later chunks + final term. */
__global__ void la_cu_dg_finish(const la_cu_seq *seqs, const la_cu_chunk *chunks,
                                const double *ctot, const double *fin, double *dgl, float *dg,
                                int64_t H) {
    __shared__ double suffix;
    const la_cu_chunk ch = chunks[blockIdx.x];
    const int h = blockIdx.y;
    if (threadIdx.x == 0) {
        const la_cu_seq s = seqs[ch.seq];
        double acc = fin ? fin[(size_t)ch.seq * H + h] : 0.0;
        for (int c = s.nch - 1; c > ch.idx; c--) acc += ctot[(size_t)(s.chunk0 + c) * H + h];
        suffix = acc;
    }
    __syncthreads();
    if ((int)threadIdx.x < ch.len) {
        const size_t i = (size_t)(ch.tok0 + threadIdx.x) * H + h;
        const double x = dgl[i] + suffix;
        dgl[i] = x;
        if (dg) dg[i] = (float)x;
    }
}

/* dg_gamma[h] = sum over n of x[n * H + h] (float64, fixed tree): x = the
 * per-token dg (tensor-core path) or the per-chunk totals (fp32 path). */
__global__ void __launch_bounds__(256)
    la_cu_dg_gamma(const double *dgl, float *dg_gamma, int64_t ntok, int64_t H) {
    __shared__ double red[256];
    const int h = blockIdx.x;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < ntok; i += 256) s += dgl[i * H + h];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int w = 128; w > 0; w >>= 1) {
        if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) dg_gamma[h] = (float)red[0];
}

/* ---- launchers ------------------------------------------------------------ */

/* Which kernels take bf16 / fp16 inputs: by default all on tensor cores
 * (chunk_state_tc.cuh, scalar_gate_tc.cu: whole tiles by cp.async; bench/GPU.md
 * "cuda-lin (round 2, session 3)"). LINATTN_CUDA_TC = 0: fp32 FFMA kernels
 * for everything; = 2: tensor-core state passes and output kernel, FFMA
 * backward kernel (benchmarking and testing knobs, read once).
 * what: 0 state pass, 1 output kernel, 2 backward kernels. */
static bool use_tc(size_t elem, int what) {
    static int mode = -1; /* 0 none, 1 all, 2 all but the backward kernel */
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_TC");
        mode = !e ? 1 : e[0] == '0' ? 0 : e[0] == '2' ? 2 : 1;
    }
    return elem == 2 && (mode == 1 || (mode == 2 && what < 2));
}

template <typename T> static la_status scalar_forward(const la__cu_call *c, la_cu_arena *ar) {
    la_cu_table tb;
    la_status st = la__cu_make_table(ar, c, &tb);
    if (st) return st;
    if (sizeof(T) == 2 && use_tc(sizeof(T), 1) &&
        (la__lf_use(c) || la__lf_split_p(c, tb.nchunks))) /* cuda-fused9, cuda-lsplit13 */
        return la__lf_forward(c, ar, tb);
    const size_t KV = (size_t)c->K * (size_t)c->V;
    float *hbuf = NULL;
    const size_t nh = (size_t)tb.nchunks * c->H; /* hbuf + the decays of the two-level pass */
    if ((st = la__cu_alloc(ar, (void **)&hbuf, nh * (KV + 1) * sizeof(float)))) return st;
    la_cu_sp_args a = {tb.seqs,        tb.chunks, c->k, c->v, c->g, c->g_gamma, c->s0,
                       c->final_state, hbuf,      c->H, c->K, c->V, c->scale,   c->feature_map};
    a.nchunks = tb.nchunks, a.decay = hbuf + nh * KV;
    const bool tcs = use_tc(sizeof(T), 0), tc = use_tc(sizeof(T), 1);
    if ((st = tcs ? la__tc_state_pass(c->op, ar->stream, c->dtype, 0, c->N, a)
                  : la_cu_launch_state_pass<T, false>(c->op, ar->stream, c->N, a)))
        return st;
    if (tb.nchunks == 0) return LA_OK;
    la_cu_intra_args p = {};
    p.chunks = tb.chunks, p.q = c->q, p.k = c->k, p.v = c->v, p.o = c->o, p.g = c->g;
    p.g_gamma = c->g_gamma, p.hbuf = hbuf, p.H = c->H, p.K = c->K, p.V = c->V;
    p.scale = c->scale, p.fm = c->feature_map;
    if (tc) return la__tc_intra_fwd(c->op, ar->stream, c->dtype, tb.nchunks, p);
    la_cu_scalar_intra_fwd<T>
        <<<dim3((unsigned)tb.nchunks, (unsigned)c->H), 256, 0, ar->stream>>>(p);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}

template <typename T> static la_status scalar_backward(const la__cu_call *c, la_cu_arena *ar) {
    la_cu_table tb;
    la_status st = la__cu_make_table(ar, c, &tb);
    if (st) return st;
    const size_t KV = (size_t)c->K * (size_t)c->V, NH = (size_t)c->N * c->H;
    const size_t ntok = (size_t)c->B * c->T;
    const bool DG = c->dg || c->dg_gamma;
    const bool fused = sizeof(T) == 2 && use_tc(sizeof(T), 2) &&
                       la__lf_bwd_use(c, tb.nchunks); /* cuda-fusedb10, cuda-bsplit16 */
    float *hbuf = NULL, *dhbuf = NULL, *sT = NULL;
    double *dgl = NULL, *ctot = NULL, *fin = NULL, *cgam = NULL;
    const size_t nc = (size_t)(tb.nchunks ? tb.nchunks : 1) * c->H;
    if (DG) {
        if ((st = la__cu_alloc(ar, (void **)&dgl, ntok * c->H * sizeof(double))) ||
            (st = la__cu_alloc(ar, (void **)&ctot, nc * sizeof(double))) ||
            (!fused && (st = la__cu_alloc(ar, (void **)&cgam, nc * sizeof(double)))))
            return st;
        if (c->dsT && ((st = la__cu_alloc(ar, (void **)&sT, NH * KV * sizeof(float))) ||
                       (st = la__cu_alloc(ar, (void **)&fin, NH * sizeof(double)))))
            return st;
    }
    const dim3 grid((unsigned)(tb.nchunks ? tb.nchunks : 1), (unsigned)c->H);
    const bool tc = use_tc(sizeof(T), 2);
    if (fused) { /* cuda-fused12: dg from the dq / dk walks' token dots */
        if (!DG) return la__lf_backward(c, ar, tb, NULL);
        la_lf_dg d = {};
        d.nslot = la__lf_dg_slots(c), d.fin = fin, d.sT = sT;
        const size_t np = ntok * c->H * (size_t)d.nslot * sizeof(double);
        if ((st = la__cu_alloc(ar, (void **)&d.pq, np)) ||
            (st = la__cu_alloc(ar, (void **)&d.pk, np)) ||
            (st = la__lf_backward(c, ar, tb, &d)))
            return st;
        if (tb.nchunks > 0) {
            la_cu_dg_tokens<<<grid, LA_CU_C, 0, ar->stream>>>(tb.chunks, d.pq, d.pk, d.nslot, c->H,
                                                              dgl, ctot);
            LA_CU_LAUNCHED(c->op);
        }
    } else {
        const size_t nh = (size_t)tb.nchunks * c->H; /* hbuf + the decays of the two-level pass */
        const size_t hb = nh * (KV + 1) * sizeof(float);
        if ((st = la__cu_alloc(ar, (void **)&hbuf, hb)) ||
            (st = la__cu_alloc(ar, (void **)&dhbuf, hb)))
            return st;
        la_cu_sp_args a = {tb.seqs, tb.chunks, c->k, c->v, c->g, c->g_gamma, c->s0,
                           sT,      hbuf,      c->H, c->K, c->V, c->scale,   c->feature_map};
        a.nchunks = tb.nchunks, a.decay = hbuf + nh * KV;
        const bool tcs = use_tc(sizeof(T), 0);
        if ((st = tcs ? la__tc_state_pass(c->op, ar->stream, c->dtype, 0, c->N, a)
                      : la_cu_launch_state_pass<T, false>(c->op, ar->stream, c->N, a)))
            return st;
        /* before the reverse pass: d_initial_state may alias d_final_state */
        if (fin && (st = la__cu_state_dot(c->op, ar->stream, c->dsT, sT, fin, (int64_t)NH,
                                          (int64_t)KV)))
            return st;
        la_cu_sp_args r = {tb.seqs, tb.chunks, c->q, c->d_o, c->g, c->g_gamma, c->dsT,
                           c->ds0,  dhbuf,     c->H, c->K,   c->V, c->scale,   c->feature_map};
        r.nchunks = tb.nchunks, r.decay = dhbuf + nh * KV;
        if ((st = tcs ? la__tc_state_pass(c->op, ar->stream, c->dtype, 1, c->N, r)
                      : la_cu_launch_state_pass<T, true>(c->op, ar->stream, c->N, r)))
            return st;
        if (tb.nchunks > 0) {
            la_cu_intra_args p = {};
            p.chunks = tb.chunks, p.q = c->q, p.k = c->k, p.v = c->v, p.d_o = c->d_o;
            p.dq = c->dq, p.dk = c->dk, p.dv = c->dv, p.g = c->g, p.g_gamma = c->g_gamma;
            p.hbuf = hbuf, p.dhbuf = dhbuf, p.dgl = dgl, p.ctot = ctot, p.cgam = cgam;
            p.H = c->H, p.K = c->K, p.V = c->V, p.scale = c->scale, p.fm = c->feature_map;
            if (tc) {
                if ((st = la__tc_intra_bwd(c->op, ar->stream, c->dtype, tb.nchunks, DG, p)))
                    return st;
            } else if (DG) {
                la_cu_scalar_intra_bwd<T, true><<<grid, 256, 0, ar->stream>>>(p);
            } else {
                la_cu_scalar_intra_bwd<T, false><<<grid, 256, 0, ar->stream>>>(p);
            }
            LA_CU_LAUNCHED(c->op);
        }
    }
    if (tb.nchunks == 0) {
        if (c->dg_gamma)
            LA_CU_TRY(c->op, cudaMemsetAsync(c->dg_gamma, 0, c->H * sizeof(float), ar->stream));
        return LA_OK;
    }
    if (DG) {
        la_cu_dg_finish<<<grid, LA_CU_C, 0, ar->stream>>>(tb.seqs, tb.chunks, ctot, fin, dgl, c->dg,
                                                          c->H);
        LA_CU_LAUNCHED(c->op);
        if (c->dg_gamma) {
            if (tc) /* per-token dg summed (its bf16/fp16 bounds are met) */
                la_cu_dg_gamma<<<(unsigned)c->H, 256, 0, ar->stream>>>(dgl, c->dg_gamma,
                                                                       (int64_t)ntok, c->H);
            else /* the per-chunk totals of the exact chunk formula */
                la_cu_dg_gamma<<<(unsigned)c->H, 256, 0, ar->stream>>>(cgam, c->dg_gamma,
                                                                       (int64_t)tb.nchunks, c->H);
            LA_CU_LAUNCHED(c->op);
        }
    }
    return LA_OK;
}

extern "C" la_status la__cu_scalar_forward(const la__cu_call *c) {
    LA_CU_TRY(c->op, cudaSetDevice(c->device));
    la_cu_arena ar = {};
    ar.stream = (cudaStream_t)c->stream;
    ar.op = c->op;
    la_status st = LA_OK;
    LA_CU_DTYPE_SWITCH(c->dtype, T, st = scalar_forward<T>(c, &ar));
    la__cu_free_all(&ar);
    return st;
}

extern "C" la_status la__cu_scalar_backward(const la__cu_call *c) {
    LA_CU_TRY(c->op, cudaSetDevice(c->device));
    la_cu_arena ar = {};
    ar.stream = (cudaStream_t)c->stream;
    ar.op = c->op;
    la_status st = LA_OK;
    LA_CU_DTYPE_SWITCH(c->dtype, T, st = scalar_backward<T>(c, &ar));
    la__cu_free_all(&ar);
    return st;
}
