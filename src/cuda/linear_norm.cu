/* Normalised kernel linear attention on the GPU (identity, elu+1, relu):
 *     o_t = phi(q_t) S_t / (phi(q_t).z_t + eps),  S_t = S_0 + sum_{j<=t} phi(k_j)^T v_j,
 *                                                  z_t = z_0 + sum_{j<=t} phi(k_j)
 * chunkwise (C = 64), forward and backward, fp32 FFMA for every input type.
 *
 * The normaliser is one more value column: with v_aug = [v, 1] (VA = V + 1
 * columns) the state is [S | z] and phi(q) [S | z] = [num, den - eps]. So
 * every pass below is the unnormalised chunk algorithm over VA columns:
 *   forward:  state pass (the [S | z] state at each chunk start), then one
 *             CTA per (chunk, head): num and den, o = num / den;
 *   backward: the same forward, whose epilogue writes the gradient of the
 *             augmented output d_aug = [do / den, -(do.o) / den] instead of o;
 *             a reverse state pass (d[S | z] at each chunk end, from
 *             d_final_state / d_final_norm); one CTA per (chunk, head) for
 *             dq, dk (over VA columns) and dv (the first V).
 * Every sum has a fixed order; no atomics (bitwise identical run to run). */
#include "common.cuh"

struct ln_args {
    const la_cu_seq *seqs;
    const la_cu_chunk *chunks;
    const void *q, *k, *v, *d_o;
    void *o, *dq, *dk, *dv;
    float *hbuf, *dhbuf; /* [nchunks, H, K, VA]: state at chunk start / its gradient at chunk end */
    float *daug;         /* [tokens, H, VA] */
    int64_t H, K, V;
    float eps;
    int fm;
};

/* ---- state pass over the augmented columns ------------------------------------
 * One CTA per (sequence, head, 32 augmented columns); thread: column cj of
 * rows rg, rg + 8, ... (K <= 256: 32 registers). Forward: A = phi(k),
 * B = [v, 1], state before each chunk stored. Reverse (REV): A = phi(q),
 * B = d_aug, chunks last to first, the state gradient after each chunk
 * stored. init / fin: [S | z] split into a [.., K, V] and a [.., K] tensor. */
struct ln_sp_args {
    const la_cu_seq *seqs;
    const la_cu_chunk *chunks;
    const void *a_src; /* [tokens, H, K] */
    const void *b_src; /* forward: v [tokens, H, V]; reverse: d_aug [tokens, H, VA] */
    const float *init_s, *init_z;
    float *fin_s, *fin_z;
    float *buf;
    int64_t H, K, V;
    int fm;
};

template <typename T, bool REV> __global__ void __launch_bounds__(256) ln_state_pass(ln_sp_args p) {
    extern __shared__ float ln_sp_smem[];
    const int t = threadIdx.x, cj = t & 31, rg = t >> 5;
    const int64_t H = p.H, K = p.K, V = p.V, VA = V + 1;
    const int64_t n = blockIdx.x / H;
    const int h = (int)(blockIdx.x % H);
    const int64_t j = (int64_t)blockIdx.y * 32 + cj;
    float *As = ln_sp_smem;               /* [C][K] */
    float *Bs = ln_sp_smem + LA_CU_C * K; /* [C][32] */
    const la_cu_seq s = p.seqs[n];
    const size_t sb = ((size_t)n * H + h) * K * V, zb = ((size_t)n * H + h) * K;
    float st[32];
#pragma unroll
    for (int r = 0; r < 32; r++) {
        const int64_t i = rg + 8 * r;
        float x = 0.f;
        if (i < K && j < V && p.init_s) x = p.init_s[sb + i * V + j];
        if (i < K && j == V && p.init_z) x = p.init_z[zb + i];
        st[r] = x;
    }
    const T *A = (const T *)p.a_src;
    for (int cc = 0; cc < s.nch; cc++) {
        const int c = REV ? s.nch - 1 - cc : cc;
        const la_cu_chunk ch = p.chunks[s.chunk0 + c];
        const int L = ch.len;
        float *hb = p.buf + ((size_t)(s.chunk0 + c) * H + h) * K * VA;
#pragma unroll
        for (int r = 0; r < 32; r++) {
            const int64_t i = rg + 8 * r;
            if (i < K && j < VA) hb[i * VA + j] = st[r];
        }
        for (int idx = t; idx < L * (int)K; idx += 256) {
            const int row = idx / (int)K, col = idx - row * (int)K;
            As[idx] = la_phi(p.fm, ldf(A + ((ch.tok0 + row) * H + h) * K + col));
        }
        for (int idx = t; idx < L * 32; idx += 256) {
            const int row = idx >> 5;
            const int64_t col = (int64_t)blockIdx.y * 32 + (idx & 31), tok = ch.tok0 + row;
            float y = 0.f;
            if (REV) {
                if (col < VA) y = ((const float *)p.b_src)[(tok * H + h) * VA + col];
            } else {
                if (col < V)
                    y = ldf((const T *)p.b_src + (tok * H + h) * V + col);
                else if (col == V)
                    y = 1.f;
            }
            Bs[idx] = y;
        }
        __syncthreads();
        for (int q = 0; q < L; q++) {
            const float b = Bs[q * 32 + cj];
#pragma unroll
            for (int r = 0; r < 32; r++) {
                const int64_t i = rg + 8 * r;
                if (i < K) st[r] = fmaf(As[q * K + i], b, st[r]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 32; r++) {
        const int64_t i = rg + 8 * r;
        if (i < K && j < V && p.fin_s) p.fin_s[sb + i * V + j] = st[r];
        if (i < K && j == V && p.fin_z) p.fin_z[zb + i] = st[r];
    }
}

template <typename T, bool REV>
static la_status ln_launch_state_pass(const char *op, cudaStream_t stream, int64_t N,
                                      const ln_sp_args &a) {
    const size_t smem = (size_t)(LA_CU_C * a.K + LA_CU_C * 32) * sizeof(float);
    LA_CU_TRY(op, cudaFuncSetAttribute(ln_state_pass<T, REV>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)(N * a.H), (unsigned)((a.V + 1 + 31) / 32));
    ln_state_pass<T, REV><<<grid, 256, smem, stream>>>(a);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}

#define LN_TILE                                                                                    \
    const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;                                        \
    (void)ty, (void)tx;

/* Sum of x over the 16 threads of one tile row (same ty), fixed order. */
__device__ __forceinline__ float ln_rowsum16(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 8);
    x += __shfl_xor_sync(0xffffffffu, x, 4);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x;
}

/* ---- forward of one chunk: o, or (DAUG) the augmented output gradient ---------- */
template <typename T, bool DAUG> __global__ void __launch_bounds__(256) ln_intra_fwd(ln_args p) {
    __shared__ la_cu_gemm_smem gs;
    __shared__ float P[LA_CU_C][LA_CU_C + 1];
    __shared__ float den[LA_CU_C], dot[LA_CU_C];
    LN_TILE
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int h = blockIdx.y, L = ch.len;
    const int64_t H = p.H, K = p.K, V = p.V, VA = V + 1, tok0 = ch.tok0;
    const int fm = p.fm;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    const float *S = p.hbuf + ((size_t)blockIdx.x * H + h) * K * VA;
    auto Qf = [&](int m, int r) -> float {
        return (m < L && r < K) ? la_phi(fm, ldf(q + ((tok0 + m) * H + h) * K + r)) : 0.f;
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
            P[m][nn] = (nn <= m && m < L) ? acc[a][b] : 0.f;
        }
    __syncthreads();
    /* den_i = phi(q_i).z_start + sum_{j<=i} P_ij + eps (r ascending, then j) */
    if ((int)threadIdx.x < L) {
        const int i = threadIdx.x;
        float d = 0.f;
        for (int r = 0; r < (int)K; r++) d = fmaf(Qf(i, r), S[(int64_t)r * VA + V], d);
        for (int jj = 0; jj <= i; jj++) d += P[i][jj];
        den[i] = d + p.eps;
        dot[i] = 0.f;
    }
    __syncthreads();
    for (int64_t vb = 0; vb < V; vb += 64) {
        la_cu_zero(acc);
        la_cu_gemm(
            acc, (int)K, Qf,
            [&](int r, int nn) -> float {
                const int64_t col = vb + nn;
                return (r < K && col < V) ? S[r * VA + col] : 0.f;
            },
            gs);
        la_cu_gemm(
            acc, L, [&](int m, int r) -> float { return P[m][r]; },
            [&](int r, int nn) -> float {
                const int64_t col = vb + nn;
                return (r < L && col < V) ? ldf(v + ((tok0 + r) * H + h) * V + col) : 0.f;
            },
            gs);
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int m = ty + 16 * a;
            const float dn = m < L ? den[m] : 1.f;
            float part = 0.f;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int64_t col = vb + tx + 16 * b;
                if (m < L && col < V) {
                    const float o = acc[a][b] / dn;
                    const size_t at = (size_t)((tok0 + m) * H + h);
                    if (DAUG) {
                        const float g = ldf((const T *)p.d_o + at * V + col);
                        p.daug[at * VA + col] = g / dn;
                        part = fmaf(g, o, part);
                    } else {
                        stf((T *)p.o + at * V + col, o);
                    }
                }
            }
            if (DAUG) {
                part = ln_rowsum16(part);
                if (tx == 0 && m < L) dot[m] += part;
            }
        }
    }
    if (DAUG) {
        __syncthreads();
        if ((int)threadIdx.x < L) {
            const int i = threadIdx.x;
            p.daug[(size_t)((tok0 + i) * H + h) * VA + V] = -dot[i] / den[i];
        }
    }
}

/* ---- backward of one chunk over the augmented columns ----------------------------
 * With D = d_aug and W = [v, 1]:
 *   dQf = D S_start^T + dP Kf (+ diagonal),  dP_ij = D_i.W_j (j < i)
 *   dKf = W dS_end^T + dP^T Qf (+ diagonal)
 *   dv  = Kf dS_end + P^T D   (first V columns), P_ij = Qf_i.Kf_j (j <= i). */
template <typename T> __global__ void __launch_bounds__(256) ln_intra_bwd(ln_args p) {
    __shared__ la_cu_gemm_smem gs;
    __shared__ float P[LA_CU_C][LA_CU_C + 1];
    __shared__ float dP[LA_CU_C][LA_CU_C + 1];
    __shared__ float dPd[LA_CU_C];
    LN_TILE
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int h = blockIdx.y, L = ch.len;
    const int64_t H = p.H, K = p.K, V = p.V, VA = V + 1, tok0 = ch.tok0;
    const int fm = p.fm;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    T *dq = (T *)p.dq, *dk = (T *)p.dk, *dv = (T *)p.dv;
    const float *S = p.hbuf + ((size_t)blockIdx.x * H + h) * K * VA;
    const float *dS = p.dhbuf + ((size_t)blockIdx.x * H + h) * K * VA;
    const float *D = p.daug;
    if (threadIdx.x < LA_CU_C) dPd[threadIdx.x] = 0.f;
    auto Qf = [&](int m, int r) -> float {
        return (m < L && r < K) ? la_phi(fm, ldf(q + ((tok0 + m) * H + h) * K + r)) : 0.f;
    };
    auto Kf = [&](int m, int r) -> float {
        return (m < L && r < K) ? la_phi(fm, ldf(k + ((tok0 + m) * H + h) * K + r)) : 0.f;
    };
    auto DA = [&](int m, int r) -> float {
        return (m < L && r < VA) ? D[((tok0 + m) * H + h) * VA + r] : 0.f;
    };
    auto W = [&](int m, int r) -> float {
        if (m >= L) return 0.f;
        if (r < V) return ldf(v + ((tok0 + m) * H + h) * V + r);
        return r == V ? 1.f : 0.f;
    };
    float acc[4][4];
    la_cu_zero(acc);
    la_cu_gemm<true>(
        acc, (int)K, Qf, [&](int r, int nn) { return Kf(nn, r); }, gs);
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int m = ty + 16 * a, nn = tx + 16 * b;
            P[m][nn] = (nn <= m && m < L) ? acc[a][b] : 0.f;
        }
    la_cu_zero(acc);
    la_cu_gemm<true>(
        acc, (int)VA, DA, [&](int r, int nn) { return W(nn, r); }, gs);
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int m = ty + 16 * a, nn = tx + 16 * b;
            dP[m][nn] = (nn < m && m < L) ? acc[a][b] : 0.f;
            if (nn == m && m < L) dPd[m] = acc[a][b];
        }
    __syncthreads();
    /* One 64-column block of dq (A = DA, M = S, dP as is, F = Kf) or dk
     * (A = W, M = dS, dP transposed, F = Qf): dx = phi'(x) * (A M^T[kb..] +
     * dP F + dPd F). */
    auto grad_block = [&](int64_t kb, auto A, const float *M, bool dPT, auto F, T *dx,
                          const T *x) {
        la_cu_zero(acc);
        la_cu_gemm<true>(
            acc, (int)VA, A,
            [&](int r, int nn) -> float {
                const int64_t col = kb + nn;
                return (r < VA && col < K) ? M[col * VA + r] : 0.f;
            },
            gs);
        la_cu_gemm(
            acc, L, [&](int m, int r) -> float { return dPT ? dP[r][m] : dP[m][r]; },
            [&](int r, int nn) { return F(r, (int)(kb + nn)); }, gs);
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int m = ty + 16 * a;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int col = (int)kb + tx + 16 * b;
                if (m < L && col < K) {
                    const float g = fmaf(dPd[m], F(m, col), acc[a][b]);
                    const size_t at = (size_t)((tok0 + m) * H + h) * K + col;
                    stf(dx + at, g * la_dphi(fm, ldf(x + at)));
                }
            }
        }
    };
    for (int64_t kb = 0; kb < K; kb += 64) {
        grad_block(kb, DA, S, false, Kf, dq, q);
        grad_block(kb, W, dS, true, Qf, dk, k);
    }
    for (int64_t vb = 0; vb < V; vb += 64) {
        la_cu_zero(acc);
        la_cu_gemm(
            acc, (int)K, Kf,
            [&](int r, int nn) -> float {
                const int64_t col = vb + nn;
                return (r < K && col < V) ? dS[r * VA + col] : 0.f;
            },
            gs);
        la_cu_gemm(
            acc, L, [&](int m, int r) -> float { return P[r][m]; },
            [&](int r, int nn) { return (vb + nn < V) ? DA(r, (int)(vb + nn)) : 0.f; }, gs);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int m = ty + 16 * a;
                const int64_t col = vb + tx + 16 * b;
                if (m < L && col < V) stf(dv + ((tok0 + m) * H + h) * V + col, acc[a][b]);
            }
    }
}

/* ---- launchers ------------------------------------------------------------------- */

template <typename T>
static la_status ln_forward(const la__cu_call *c, const la__cu_norm *z, la_cu_arena *ar) {
    la_cu_table tb;
    la_status st = la__cu_make_table(ar, c, &tb);
    if (st) return st;
    const size_t KVA = (size_t)c->K * (size_t)(c->V + 1);
    float *hbuf = NULL;
    if ((st = la__cu_alloc(ar, (void **)&hbuf, (size_t)tb.nchunks * c->H * KVA * sizeof(float))))
        return st;
    ln_sp_args a = {tb.seqs, tb.chunks, c->k, c->v, c->s0, z->z0,         c->final_state,
                    z->zT,   hbuf,      c->H, c->K, c->V,  c->feature_map};
    if ((st = ln_launch_state_pass<T, false>(c->op, ar->stream, c->N, a))) return st;
    if (tb.nchunks == 0) return LA_OK;
    ln_args p = {};
    p.chunks = tb.chunks, p.q = c->q, p.k = c->k, p.v = c->v, p.o = c->o, p.hbuf = hbuf;
    p.H = c->H, p.K = c->K, p.V = c->V, p.eps = z->eps, p.fm = c->feature_map;
    ln_intra_fwd<T, false><<<dim3((unsigned)tb.nchunks, (unsigned)c->H), 256, 0, ar->stream>>>(p);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}

template <typename T>
static la_status ln_backward(const la__cu_call *c, const la__cu_norm *z, la_cu_arena *ar) {
    la_cu_table tb;
    la_status st = la__cu_make_table(ar, c, &tb);
    if (st) return st;
    const size_t KVA = (size_t)c->K * (size_t)(c->V + 1);
    const size_t ntok = (size_t)c->B * (size_t)c->T;
    float *hbuf = NULL, *dhbuf = NULL, *daug = NULL;
    const size_t hb = (size_t)tb.nchunks * c->H * KVA * sizeof(float);
    if ((st = la__cu_alloc(ar, (void **)&hbuf, hb)) ||
        (st = la__cu_alloc(ar, (void **)&dhbuf, hb)) ||
        (st = la__cu_alloc(ar, (void **)&daug, ntok * c->H * (size_t)(c->V + 1) * sizeof(float))))
        return st;
    ln_sp_args a = {tb.seqs, tb.chunks, c->k, c->v, c->s0, z->z0,         NULL,
                    NULL,    hbuf,      c->H, c->K, c->V,  c->feature_map};
    if ((st = ln_launch_state_pass<T, false>(c->op, ar->stream, c->N, a))) return st;
    ln_args p = {};
    p.chunks = tb.chunks, p.q = c->q, p.k = c->k, p.v = c->v, p.d_o = c->d_o;
    p.dq = c->dq, p.dk = c->dk, p.dv = c->dv, p.hbuf = hbuf, p.dhbuf = dhbuf, p.daug = daug;
    p.H = c->H, p.K = c->K, p.V = c->V, p.eps = z->eps, p.fm = c->feature_map;
    const dim3 grid((unsigned)tb.nchunks, (unsigned)c->H);
    if (tb.nchunks) {
        ln_intra_fwd<T, true><<<grid, 256, 0, ar->stream>>>(p);
        LA_CU_LAUNCHED(c->op);
    }
    ln_sp_args r = {tb.seqs, tb.chunks, c->q, daug, c->dsT, z->dzT,        c->ds0,
                    z->dz0,  dhbuf,     c->H, c->K, c->V,   c->feature_map};
    if ((st = ln_launch_state_pass<T, true>(c->op, ar->stream, c->N, r))) return st;
    if (tb.nchunks) {
        ln_intra_bwd<T><<<grid, 256, 0, ar->stream>>>(p);
        LA_CU_LAUNCHED(c->op);
    }
    return LA_OK;
}

extern "C" la_status la__cu_linear_norm_forward(const la__cu_call *c, const la__cu_norm *z) {
    LA_CU_TRY(c->op, cudaSetDevice(c->device));
    la_cu_arena ar = {};
    ar.stream = (cudaStream_t)c->stream;
    ar.op = c->op;
    la_status st = LA_OK;
    LA_CU_DTYPE_SWITCH(c->dtype, T, st = ln_forward<T>(c, z, &ar));
    la__cu_free_all(&ar);
    return st;
}

extern "C" la_status la__cu_linear_norm_backward(const la__cu_call *c, const la__cu_norm *z) {
    LA_CU_TRY(c->op, cudaSetDevice(c->device));
    la_cu_arena ar = {};
    ar.stream = (cudaStream_t)c->stream;
    ar.op = c->op;
    la_status st = LA_OK;
    LA_CU_DTYPE_SWITCH(c->dtype, T, st = ln_backward<T>(c, z, &ar));
    la__cu_free_all(&ar);
    return st;
}
