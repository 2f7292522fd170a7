/* DeltaNet and Gated DeltaNet on the GPU: forward in the recurrent form
 * (token by token, fp32 FFMA). One CTA of 128 threads per (sequence, value
 * head, 32 value columns): the columns of S evolve independently
 * (S_t[:, j] depends on S_{t-1}[:, j] only), so the split is exact; 4 warps
 * share the K rows, each thread keeps up to 64 state entries in registers for
 * the whole sequence. Per token:
 *   r = S^T k, u = beta (v - a r), S = a S + k u^T, o = scale S^T q,
 * with a = e^{g} (Gated DeltaNet) or 1, q and k l2-normalised first when
 * asked. Row sums: per thread in row order, then the warps in order.
 * Backward (recurrent, fp32): the forward stores the state before every
 * 64th token; a reverse kernel (same CTA split) recomputes the 64 states of
 * a chunk into its own scratch, then walks the chunk backwards with dS in
 * registers. Per-column quantities (dv) are final; per-row sums over the
 * columns (dq, dk) and per-token sums (dbeta, dg) are written per column
 * block and summed afterwards in a fixed order (over column blocks, then the
 * value heads of a q/k head), followed by the l2norm backward. No atomics.
 * The chunkwise (WY) forward is delta_chunk.cu; in the chunk form this
 * backward takes its checkpoints from that form's state pass. */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "delta_chunk.cuh"

#define DK_KS 4
#define DK_RMAX 64

struct delta_args {
    const la_cu_seq *seqs;
    const void *q, *k, *v;
    void *o;
    const float *g, *beta, *s0;
    float *sT;
    float *ckpt; /* [nchunks, HS, K, V]: the state before every 64th token (backward) */
    int64_t H, HS, K, V;
    float scale;
    int use_l2;
};

template <typename T> __global__ void __launch_bounds__(128) la_cu_delta_fwd(delta_args p) {
    __shared__ float qs[256], ks[256];
    __shared__ float red[DK_KS][32];
    __shared__ float rn[2];
    const int t = threadIdx.x, jj = t & 31, w = t >> 5;
    const int64_t K = p.K, V = p.V, HS = p.HS, H = p.H;
    const int64_t n = blockIdx.x / HS, hs = blockIdx.x % HS, hq = hs / (HS / H);
    const int64_t j = (int64_t)blockIdx.y * 32 + jj;
    const bool ok = j < V;
    const la_cu_seq s = p.seqs[n];
    const size_t sbase = ((size_t)n * HS + hs) * K * V;
    float st[DK_RMAX];
#pragma unroll
    for (int r = 0; r < DK_RMAX; r++) {
        const int64_t i = w + DK_KS * r;
        st[r] = (ok && i < K && p.s0) ? p.s0[sbase + i * V + j] : 0.f;
    }
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    T *o = (T *)p.o;
    for (int64_t tt = 0; tt < s.len; tt++) {
        const int64_t tok = s.start + tt;
        if (p.ckpt && tt % LA_CU_C == 0 && ok) {
            float *cp = p.ckpt + ((size_t)(s.chunk0 + tt / LA_CU_C) * HS + hs) * K * V + j;
#pragma unroll
            for (int r = 0; r < DK_RMAX; r++) {
                const int64_t i = w + DK_KS * r;
                if (i < K) cp[i * V] = st[r];
            }
        }
        for (int i = t; i < K; i += 128) {
            qs[i] = ldf(q + (tok * H + hq) * K + i);
            ks[i] = ldf(k + (tok * H + hq) * K + i);
        }
        __syncthreads();
        if (p.use_l2) {
            if (w == 0) la_cu_l2_inv_pair(qs, ks, K, jj, &rn[0], &rn[1]);
            __syncthreads();
        }
        const float rq = p.use_l2 ? rn[0] * p.scale : p.scale, rk = p.use_l2 ? rn[1] : 1.f;
        const size_t vi = (size_t)(tok * HS + hs);
        const float a = p.g ? expf(p.g[vi]) : 1.f;
        const float beta = p.beta[vi];
        const float vj = ok ? ldf(v + vi * V + j) : 0.f;
        float part = 0.f;
#pragma unroll
        for (int r = 0; r < DK_RMAX; r++) {
            const int64_t i = w + DK_KS * r;
            if (i < K) part = fmaf(ks[i] * rk, st[r], part);
        }
        red[w][jj] = part;
        __syncthreads();
        const float rj = ((red[0][jj] + red[1][jj]) + red[2][jj]) + red[3][jj];
        const float u = beta * (vj - a * rj);
        __syncthreads();
        part = 0.f;
#pragma unroll
        for (int r = 0; r < DK_RMAX; r++) {
            const int64_t i = w + DK_KS * r;
            if (i < K) {
                st[r] = fmaf(ks[i] * rk, u, a * st[r]);
                part = fmaf(qs[i] * rq, st[r], part);
            }
        }
        red[w][jj] = part;
        __syncthreads();
        if (w == 0 && ok && o)
            stf(o + vi * V + j, ((red[0][jj] + red[1][jj]) + red[2][jj]) + red[3][jj]);
        __syncthreads();
    }
    if (p.sT && ok) {
#pragma unroll
        for (int r = 0; r < DK_RMAX; r++) {
            const int64_t i = w + DK_KS * r;
            if (i < K) p.sT[sbase + i * V + j] = st[r];
        }
    }
}

template <typename T> static la_status delta_forward(const la__cu_call *c, la_cu_arena *ar) {
    la_cu_table tb;
    la_status st = la__cu_make_table(ar, c, &tb);
    if (st) return st;
    delta_args p = {};
    p.seqs = tb.seqs, p.q = c->q, p.k = c->k, p.v = c->v, p.o = c->o, p.g = c->g;
    p.beta = c->beta, p.s0 = c->s0, p.sT = c->final_state, p.ckpt = NULL;
    p.H = c->H, p.HS = c->HS, p.K = c->K, p.V = c->V, p.scale = c->scale, p.use_l2 = c->use_l2;
    const dim3 grid((unsigned)(c->N * c->HS), (unsigned)((c->V + 31) / 32));
    la_cu_delta_fwd<T><<<grid, 128, 0, ar->stream>>>(p);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}

extern "C" la_status la__cu_delta_forward(const la__cu_call *c) {
    LA_CU_TRY(c->op, cudaSetDevice(c->device));
    la_cu_arena ar = {};
    ar.stream = (cudaStream_t)c->stream;
    ar.op = c->op;
    la_status st = LA_OK;
    LA_CU_DTYPE_SWITCH(c->dtype, T, st = delta_forward<T>(c, &ar));
    la__cu_free_all(&ar);
    return st;
}

struct delta_bwd_args {
    const la_cu_seq *seqs;
    const void *q, *k, *v, *d_o;
    void *dv;
    const float *g, *beta, *ckpt, *dsT;
    float *ds0;
    float *sbuf;               /* [CTAs][C][K][32] */
    const la_cu_chunk *chunks; /* chunk form: one chunk per item, dS from dhst */
    const float *dhst;         /* [chunks][HS][K][V]: dL/d(state after each chunk) */
    int64_t nitems, nvb;
    float *dqp, *dkp; /* [nvb][tokens][HS][K] */
    float *dbp, *dgp; /* [nvb][tokens][HS] */
    int64_t H, HS, K, V, ntok;
    float scale;
    int use_l2;
};

/* q, k of one token into qs, ks (l2-normalised when asked); every thread
 * takes part; ends with a barrier. */
template <typename T>
__device__ __forceinline__ void delta_load_qk(const T *q, const T *k, int64_t K, int use_l2,
                                              float *qs, float *ks, float *rn) {
    const int t = threadIdx.x, jj = t & 31, w = t >> 5;
    for (int i = t; i < K; i += 128) {
        qs[i] = ldf(q + i);
        ks[i] = ldf(k + i);
    }
    __syncthreads();
    if (use_l2) {
        if (w == 0) la_cu_l2_inv_pair(qs, ks, K, jj, &rn[0], &rn[1]);
        __syncthreads();
        for (int i = t; i < K; i += 128) {
            qs[i] *= rn[0];
            ks[i] *= rn[1];
        }
        __syncthreads();
    }
}

/* RMAX: state rows per thread (K <= 4 RMAX); 32 where K <= 128 (202
 * registers, no spills; 64 needs 255 and spills). */
template <typename T, int RMAX>
__global__ void __launch_bounds__(128) la_cu_delta_bwd(delta_bwd_args p) {
    __shared__ float qs[256], ks[256], rn[2];
    __shared__ float red[DK_KS][32];
    __shared__ float tr[256][33];
    const int t = threadIdx.x, jj = t & 31, w = t >> 5;
    const int64_t K = p.K, V = p.V, HS = p.HS, H = p.H;
    float *sb = p.sbuf + (size_t)blockIdx.x * LA_CU_C * K * 32;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    const T *dO = (const T *)p.d_o;
    T *dv = (T *)p.dv;
    /* item = (a, column block); recurrent: a = (sequence, value head), all
     * its chunks from the last, dS from d_final_state; chunk form: a =
     * (chunk, value head), that chunk alone, dS from dhst. */
    for (int64_t item = blockIdx.x; item < p.nitems; item += gridDim.x) {
        const int64_t a = item / p.nvb, vb = item % p.nvb, j = vb * 32 + jj;
        const bool ok = j < V;
        const int64_t hs = a % HS, hq = hs / (HS / H);
        la_cu_chunk ch = {};
        if (p.chunks) ch = p.chunks[a / HS];
        const int64_t n = p.chunks ? ch.seq : a / HS;
        const la_cu_seq s = p.seqs[n];
        const size_t sbase = ((size_t)n * HS + hs) * K * V;
        const float *dinit = p.chunks ? p.dhst + ((size_t)(a / HS) * HS + hs) * K * V
                                      : (p.dsT ? p.dsT + sbase : NULL);
        const int c_hi = p.chunks ? ch.idx : s.nch - 1, c_lo = p.chunks ? ch.idx : 0;
        float dS[RMAX], st[RMAX];
#pragma unroll
        for (int r = 0; r < RMAX; r++) {
            const int64_t i = w + DK_KS * r;
            dS[r] = (ok && i < K && dinit) ? dinit[i * V + j] : 0.f;
        }
        for (int c = c_hi; c >= c_lo; c--) {
            const int64_t t0 = (int64_t)c * LA_CU_C;
            const int L = (int)(s.len - t0 < LA_CU_C ? s.len - t0 : LA_CU_C);
            const float *cp = p.ckpt + ((size_t)(s.chunk0 + c) * HS + hs) * K * V + j;
#pragma unroll
            for (int r = 0; r < RMAX; r++) {
                const int64_t i = w + DK_KS * r;
                st[r] = (ok && i < K) ? cp[i * V] : 0.f;
            }
            /* recompute: sb[tt] = the state before token tt of the chunk */
            for (int tt = 0; tt < L; tt++) {
                const int64_t tok = s.start + t0 + tt;
#pragma unroll
                for (int r = 0; r < RMAX; r++) {
                    const int64_t i = w + DK_KS * r;
                    if (i < K) sb[((size_t)tt * K + i) * 32 + jj] = st[r];
                }
                delta_load_qk(q + (tok * H + hq) * K, k + (tok * H + hq) * K, K, p.use_l2, qs, ks,
                              rn);
                const size_t vi = (size_t)(tok * HS + hs);
                const float a = p.g ? expf(p.g[vi]) : 1.f, beta = p.beta[vi];
                const float vj = ok ? ldf(v + vi * V + j) : 0.f;
                float part = 0.f;
#pragma unroll
                for (int r = 0; r < RMAX; r++) {
                    const int64_t i = w + DK_KS * r;
                    if (i < K) part = fmaf(ks[i], st[r], part);
                }
                red[w][jj] = part;
                __syncthreads();
                const float rj = ((red[0][jj] + red[1][jj]) + red[2][jj]) + red[3][jj];
                const float u = beta * (vj - a * rj);
#pragma unroll
                for (int r = 0; r < RMAX; r++) {
                    const int64_t i = w + DK_KS * r;
                    if (i < K) st[r] = fmaf(ks[i], u, a * st[r]);
                }
                __syncthreads();
            }
            /* reverse through the chunk */
            for (int tt = L - 1; tt >= 0; tt--) {
                const int64_t tok = s.start + t0 + tt;
                delta_load_qk(q + (tok * H + hq) * K, k + (tok * H + hq) * K, K, p.use_l2, qs, ks,
                              rn);
                const size_t vi = (size_t)(tok * HS + hs);
                const float a = p.g ? expf(p.g[vi]) : 1.f, beta = p.beta[vi];
                const float vj = ok ? ldf(v + vi * V + j) : 0.f;
                const float doj = ok ? ldf(dO + vi * V + j) : 0.f;
                float part = 0.f;
#pragma unroll
                for (int r = 0; r < RMAX; r++) {
                    const int64_t i = w + DK_KS * r;
                    st[r] = i < K ? sb[((size_t)tt * K + i) * 32 + jj] : 0.f; /* S_{t-1} */
                    if (i < K) part = fmaf(ks[i], st[r], part);
                }
                red[w][jj] = part;
                __syncthreads();
                const float rj = ((red[0][jj] + red[1][jj]) + red[2][jj]) + red[3][jj];
                const float u = beta * (vj - a * rj);
                __syncthreads();
                /* dS_t += scale q do^T; dq_i = scale sum_j S_t[i,j] do_j (to tr) */
                part = 0.f;
#pragma unroll
                for (int r = 0; r < RMAX; r++) {
                    const int64_t i = w + DK_KS * r;
                    if (i < K) {
                        const float sti = fmaf(ks[i], u, a * st[r]);
                        tr[i][jj] = sti * doj;
                        dS[r] = fmaf(p.scale * qs[i], doj, dS[r]);
                        part = fmaf(ks[i], dS[r], part);
                    }
                }
                red[w][jj] = part;
                __syncthreads();
                const float du = ((red[0][jj] + red[1][jj]) + red[2][jj]) + red[3][jj];
                float *dqp = p.dqp + ((size_t)vb * p.ntok * HS + vi) * K;
                for (int i = t; i < K; i += 128) {
                    float x = 0.f;
                    for (int c2 = 0; c2 < 32; c2++) x += tr[i][c2];
                    dqp[i] = p.scale * x;
                }
                if (ok && w == 0) stf(dv + vi * V + j, beta * du);
                const float dr = -beta * a * du;
                __syncthreads();
                /* dk_i = sum_j dS[i,j] u_j + S_{t-1}[i,j] dr_j; da = <S_{t-1}, dS> - sum_j beta r_j
                 * du_j */
                float pa = 0.f;
#pragma unroll
                for (int r = 0; r < RMAX; r++) {
                    const int64_t i = w + DK_KS * r;
                    if (i < K) {
                        tr[i][jj] = ok ? fmaf(dS[r], u, st[r] * dr) : 0.f;
                        pa = fmaf(st[r], dS[r], pa);
                    }
                }
                red[w][jj] = ok ? pa : 0.f;
                __syncthreads();
                float *dkp = p.dkp + ((size_t)vb * p.ntok * HS + vi) * K;
                for (int i = t; i < K; i += 128) {
                    float x = 0.f;
                    for (int c2 = 0; c2 < 32; c2++) x += tr[i][c2];
                    dkp[i] = x;
                }
                if (w == 0) {
                    float da = ok ? (((red[0][jj] + red[1][jj]) + red[2][jj]) + red[3][jj]) -
                                        beta * rj * du
                                  : 0.f;
                    float db = ok ? (vj - a * rj) * du : 0.f;
                    for (int off = 16; off > 0; off >>= 1) {
                        da += __shfl_xor_sync(0xffffffffu, da, off);
                        db += __shfl_xor_sync(0xffffffffu, db, off);
                    }
                    if (jj == 0) {
                        p.dbp[(size_t)vb * p.ntok * HS + vi] = db;
                        p.dgp[(size_t)vb * p.ntok * HS + vi] = da * a;
                    }
                }
                /* dS_{t-1} = a dS_t + k dr^T */
#pragma unroll
                for (int r = 0; r < RMAX; r++) {
                    const int64_t i = w + DK_KS * r;
                    if (i < K) dS[r] = fmaf(ks[i], dr, a * dS[r]);
                }
                __syncthreads();
            }
        }
        if (!p.chunks && p.ds0 && ok) {
#pragma unroll
            for (int r = 0; r < RMAX; r++) {
                const int64_t i = w + DK_KS * r;
                if (i < K) p.ds0[sbase + i * V + j] = dS[r];
            }
        }
        __syncthreads();
    }
}

/* Sums the partials of one (token, q/k head) in a fixed order (column
 * blocks, then the value heads of the group), then the l2norm backward
 * dx = rstd (dy - y (y.dy)); dbeta, dg of the group's value heads. */
template <typename T>
__global__ void __launch_bounds__(128)
    la_cu_delta_bwd_reduce(delta_bwd_args p, int nvb, void *dq_out, void *dk_out, float *dbeta,
                           float *dg) {
    __shared__ float xs[256], ys[256], red[4], rstd;
    const int t = threadIdx.x;
    const int64_t tok = blockIdx.x, hq = blockIdx.y, K = p.K, HS = p.HS, G = HS / p.H;
    for (int which = 0; which < 2; which++) {
        const float *part = which ? p.dkp : p.dqp;
        const T *x = (const T *)(which ? p.k : p.q) + (tok * p.H + hq) * K;
        T *out = (T *)(which ? dk_out : dq_out) + (tok * p.H + hq) * K;
        for (int i = t; i < K; i += 128) {
            float acc = 0.f;
            for (int64_t gi = 0; gi < G; gi++)
                for (int b = 0; b < nvb; b++)
                    acc += part[(((size_t)b * p.ntok + tok) * HS + hq * G + gi) * K + i];
            ys[i] = acc;
            xs[i] = ldf(x + i);
        }
        __syncthreads();
        if (p.use_l2) {
            if (t < 32) {
                float ss = 0.f, dot = 0.f;
                for (int i = t; i < K; i += 32) {
                    ss = fmaf(xs[i], xs[i], ss);
                }
                for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
                const float rs = 1.f / sqrtf(ss + 1e-6f);
                for (int i = t; i < K; i += 32) dot = fmaf(xs[i] * rs, ys[i], dot);
                for (int off = 16; off > 0; off >>= 1)
                    dot += __shfl_xor_sync(0xffffffffu, dot, off);
                if (t == 0) {
                    rstd = rs;
                    red[0] = dot;
                }
            }
            __syncthreads();
            for (int i = t; i < K; i += 128) stf(out + i, rstd * (ys[i] - xs[i] * rstd * red[0]));
        } else {
            for (int i = t; i < K; i += 128) stf(out + i, ys[i]);
        }
        __syncthreads();
    }
    if (t < G) {
        const size_t vi = (size_t)tok * HS + hq * G + t;
        float b = 0.f, gg = 0.f;
        for (int bb = 0; bb < nvb; bb++) {
            b += p.dbp[(size_t)bb * p.ntok * HS + vi];
            gg += p.dgp[(size_t)bb * p.ntok * HS + vi];
        }
        dbeta[vi] = b;
        if (dg) dg[vi] = gg;
    }
}

/* cuda-red8: the same reduce with one warp per (token, q/k head), 8 warps a
 * CTA, a grid-stride loop over the rows; no shared memory, no barriers.
 * Lane l holds the elements i = l + 32 m (m < NPL, i < K) in registers, so
 * every sum is the old kernel's: each element over the value heads (outer)
 * and column blocks (inner) from 0.f; ss and y.dy per lane in increasing i,
 * then the same xor tree; the output expression as above with lane 0's rstd
 * and dot (the old kernel's warp-0 values); dbeta, dg over the blocks in
 * order. Loads stay scalar: the warp's 32 consecutive elements are one
 * coalesced 128-byte (fp32) or 64-byte (16-bit) access, and a 16-byte load
 * would put consecutive elements in one lane, changing the lane sums. */
template <typename T, int NPL>
__global__ void __launch_bounds__(256)
    la_cu_delta_bwd_reduce_w(delta_bwd_args p, int nvb, void *dq_out, void *dk_out, float *dbeta,
                             float *dg) {
    const int lane = threadIdx.x & 31;
    const int64_t K = p.K, HS = p.HS, H = p.H, G = HS / H, ntok = p.ntok, rows = ntok * H;
    const int64_t nw = (int64_t)gridDim.x * (blockDim.x >> 5);
    const size_t plane = (size_t)ntok * HS; /* one column block's partials, in rows */
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows;
         r += nw) {
        const int64_t tok = r / H, hq = r % H;
        for (int which = 0; which < 2; which++) {
            const float *part = (which ? p.dkp : p.dqp) + ((size_t)tok * HS + hq * G) * K + lane;
            const T *x = (const T *)(which ? p.k : p.q) + r * K + lane;
            T *out = (T *)(which ? dk_out : dq_out) + r * K + lane;
            float y[NPL], xv[NPL];
#pragma unroll
            for (int m = 0; m < NPL; m++) y[m] = 0.f;
            if (nvb == 1) {
#pragma unroll 4
                for (int64_t gi = 0; gi < G; gi++) {
                    const float *pp = part + (size_t)gi * K;
#pragma unroll
                    for (int m = 0; m < NPL; m++)
                        if (lane + 32 * m < K) y[m] += __ldcs(pp + 32 * m);
                }
            } else {
                for (int64_t gi = 0; gi < G; gi++)
                    for (int b = 0; b < nvb; b++) {
                        const float *pp = part + ((size_t)b * plane + gi) * K;
#pragma unroll
                        for (int m = 0; m < NPL; m++)
                            if (lane + 32 * m < K) y[m] += __ldcs(pp + 32 * m);
                    }
            }
#pragma unroll
            for (int m = 0; m < NPL; m++) xv[m] = lane + 32 * m < K ? ldf(x + 32 * m) : 0.f;
            if (p.use_l2) {
                float ss = 0.f, dot = 0.f;
#pragma unroll
                for (int m = 0; m < NPL; m++)
                    if (lane + 32 * m < K) ss = fmaf(xv[m], xv[m], ss);
                for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
                const float rs = 1.f / sqrtf(ss + 1e-6f);
#pragma unroll
                for (int m = 0; m < NPL; m++)
                    if (lane + 32 * m < K) dot = fmaf(xv[m] * rs, y[m], dot);
                for (int off = 16; off > 0; off >>= 1)
                    dot += __shfl_xor_sync(0xffffffffu, dot, off);
                const float rstd = __shfl_sync(0xffffffffu, rs, 0);
                const float d0 = __shfl_sync(0xffffffffu, dot, 0);
#pragma unroll
                for (int m = 0; m < NPL; m++)
                    if (lane + 32 * m < K) stf(out + 32 * m, rstd * (y[m] - xv[m] * rstd * d0));
            } else {
#pragma unroll
                for (int m = 0; m < NPL; m++)
                    if (lane + 32 * m < K) stf(out + 32 * m, y[m]);
            }
        }
        for (int64_t gi = lane; gi < G; gi += 32) {
            const size_t vi = (size_t)tok * HS + hq * G + gi;
            float b = 0.f, gg = 0.f;
            for (int bb = 0; bb < nvb; bb++) {
                b += p.dbp[(size_t)bb * plane + vi];
                gg += p.dgp[(size_t)bb * plane + vi];
            }
            dbeta[vi] = b;
            if (dg) dg[vi] = gg;
        }
    }
}

/* Launches the reduce: the warp kernel unless LINATTN_CUDA_DELTA_REDUCE=old
 * asks for the CTA-per-row kernel above (the A/B). */
template <typename T>
static void delta_reduce_launch(const la__cu_call *c, cudaStream_t stream, const delta_bwd_args &b,
                                int nvb) {
    const int64_t ntok = c->B * c->T, rows = ntok * c->H;
    const char *e = getenv("LINATTN_CUDA_DELTA_REDUCE");
    if (e && !strcmp(e, "old")) {
        la_cu_delta_bwd_reduce<T><<<dim3((unsigned)ntok, (unsigned)c->H), 128, 0, stream>>>(
            b, nvb, c->dq, c->dk, c->dbeta, c->dg);
        return;
    }
    int64_t ctas = (rows + 7) / 8;
    if (ctas > (1 << 22)) ctas = 1 << 22;
    void (*kern)(delta_bwd_args, int, void *, void *, float *, float *) =
        c->K <= 32    ? la_cu_delta_bwd_reduce_w<T, 1>
        : c->K <= 64  ? la_cu_delta_bwd_reduce_w<T, 2>
        : c->K <= 128 ? la_cu_delta_bwd_reduce_w<T, 4>
                      : la_cu_delta_bwd_reduce_w<T, 8>;
    kern<<<(unsigned)ctas, 256, 0, stream>>>(b, nvb, c->dq, c->dk, c->dbeta, c->dg);
}

/* The chunk form with the chunkwise token gradients: states and state
 * gradients at every chunk boundary, then every chunk's dq, dk, dv, dbeta,
 * dg at once, then the reduce (over value heads, l2norm backward). */
template <typename T>
static la_status delta_backward_wy(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb) {
    la_status st;
    const int64_t ntok = c->B * c->T;
    const size_t KV = (size_t)c->K * c->V, nckpt = (size_t)(tb.nchunks ? tb.nchunks : 1);
    const size_t nt = (size_t)ntok * c->HS;
    /* cuda-saved7: the per-chunk states of a saving forward (la_saved) */
    float *hst = la__cu_delta_saved_hst(c, tb.nchunks), *dhst, *dqp, *dkp, *dbp, *dgp, *dR = NULL;
    if ((!hst && (st = la__cu_alloc(ar, (void **)&hst, nckpt * c->HS * KV * 4))) ||
        (st = la__cu_alloc(ar, (void **)&dhst, nckpt * c->HS * KV * 4)) ||
        (st = la__cu_alloc(ar, (void **)&dqp, nt * c->K * 4)) ||
        (st = la__cu_alloc(ar, (void **)&dkp, nt * c->K * 4)) ||
        (st = la__cu_alloc(ar, (void **)&dbp, nt * 4)) ||
        (st = la__cu_alloc(ar, (void **)&dgp, nt * 4)))
        return st;
    la_cu_dc_args p;
    if ((st = la__cu_delta_chunk_dstates(c, ar, tb, hst, dhst, &p, &dR)) ||
        (st = la__cu_delta_chunk_grads(c, ar->stream, tb, p, dR, hst, dhst, dqp, dkp, dbp, dgp)))
        return st;
    delta_bwd_args b = {};
    b.q = c->q, b.k = c->k, b.dqp = dqp, b.dkp = dkp, b.dbp = dbp, b.dgp = dgp;
    b.H = c->H, b.HS = c->HS, b.K = c->K, b.V = c->V, b.ntok = ntok, b.use_l2 = c->use_l2;
    if (ntok > 0) {
        delta_reduce_launch<T>(c, ar->stream, b, 1);
        LA_CU_LAUNCHED(c->op);
    }
    return LA_OK;
}

template <typename T> static la_status delta_backward(const la__cu_call *c, la_cu_arena *ar) {
    if (c->HS / c->H > 128)
        return la__error(LA_ERR_UNSUPPORTED, "%s: HV / H > 128 on the GPU", c->op);
    la_cu_table tb;
    la_status st = la__cu_make_table(ar, c, &tb);
    if (st) return st;
    const int64_t nvb = (c->V + 31) / 32, ntok = c->B * c->T;
    /* the chunk form where its reverse pass fits the device's shared memory */
    const bool chunk = c->chunk_form && la__cu_delta_chunk_bwd_fits(c);
    /* chunk form: the chunkwise token gradients (delta_chunk_grad.cu) unless
     * LINATTN_CUDA_DELTA_BWD=token asks for the token backward per chunk */
    bool wy = chunk && la__cu_delta_chunk_grads_fits(c);
    if (wy) {
        const char *e = getenv("LINATTN_CUDA_DELTA_BWD");
        if (e && !strcmp(e, "token")) wy = false;
    }
    if (wy) return delta_backward_wy<T>(c, ar, tb);
    const size_t KV = (size_t)c->K * c->V, nckpt = (size_t)(tb.nchunks ? tb.nchunks : 1);
    /* work items: (sequence, value head, column block) in the recurrent form,
     * (chunk, value head, column block) in the chunk form, where a
     * persistent grid of at most `resident` CTAs loops over them (sbuf is per
     * CTA) */
    void (*kern)(delta_bwd_args) = c->K <= 128 ? la_cu_delta_bwd<T, 32> : la_cu_delta_bwd<T, 64>;
    const int64_t nitems = (chunk ? tb.nchunks : c->N) * c->HS * nvb;
    int64_t ctas = chunk ? 0 : nitems;
    if (chunk) {
        int dev = 0, sms = 0, per = 0;
        LA_CU_TRY(c->op, cudaGetDevice(&dev));
        LA_CU_TRY(c->op, cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        LA_CU_TRY(c->op, cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kern, 128, 0));
        const int64_t resident = (int64_t)sms * (per > 0 ? per : 1);
        ctas = nitems < resident ? nitems : resident;
    }
    /* cuda-saved7: the chunk form's states from a saving forward (la_saved) */
    float *ckpt = chunk ? la__cu_delta_saved_hst(c, tb.nchunks) : NULL;
    float *sbuf, *dqp, *dkp, *dbp, *dgp, *dhst = NULL;
    if ((!ckpt && (st = la__cu_alloc(ar, (void **)&ckpt, nckpt * c->HS * KV * 4))) ||
        (st = la__cu_alloc(ar, (void **)&sbuf, (size_t)ctas * LA_CU_C * c->K * 32 * 4)) ||
        (st = la__cu_alloc(ar, (void **)&dqp, (size_t)nvb * ntok * c->HS * c->K * 4)) ||
        (st = la__cu_alloc(ar, (void **)&dkp, (size_t)nvb * ntok * c->HS * c->K * 4)) ||
        (st = la__cu_alloc(ar, (void **)&dbp, (size_t)nvb * ntok * c->HS * 4)) ||
        (st = la__cu_alloc(ar, (void **)&dgp, (size_t)nvb * ntok * c->HS * 4)) ||
        (chunk && (st = la__cu_alloc(ar, (void **)&dhst, nckpt * c->HS * KV * 4))))
        return st;
    if (chunk) { /* states and state gradients at every chunk boundary */
        if ((st = la__cu_delta_chunk_dstates(c, ar, tb, ckpt, dhst))) return st;
    } else {
        delta_args f = {};
        f.seqs = tb.seqs, f.q = c->q, f.k = c->k, f.v = c->v, f.o = NULL, f.g = c->g;
        f.beta = c->beta, f.s0 = c->s0, f.sT = NULL, f.ckpt = ckpt;
        f.H = c->H, f.HS = c->HS, f.K = c->K, f.V = c->V, f.scale = c->scale;
        f.use_l2 = c->use_l2;
        la_cu_delta_fwd<T>
            <<<dim3((unsigned)(c->N * c->HS), (unsigned)nvb), 128, 0, ar->stream>>>(f);
        LA_CU_LAUNCHED(c->op);
    }
    delta_bwd_args b = {};
    b.seqs = tb.seqs, b.q = c->q, b.k = c->k, b.v = c->v, b.d_o = c->d_o, b.dv = c->dv;
    b.g = c->g, b.beta = c->beta, b.ckpt = ckpt, b.dsT = c->dsT, b.ds0 = c->ds0, b.sbuf = sbuf;
    b.dqp = dqp, b.dkp = dkp, b.dbp = dbp, b.dgp = dgp;
    b.H = c->H, b.HS = c->HS, b.K = c->K, b.V = c->V, b.ntok = ntok, b.scale = c->scale;
    b.use_l2 = c->use_l2;
    b.chunks = chunk ? tb.chunks : NULL, b.dhst = dhst, b.nitems = nitems, b.nvb = nvb;
    if (ctas > 0) {
        kern<<<(unsigned)ctas, 128, 0, ar->stream>>>(b);
        LA_CU_LAUNCHED(c->op);
    }
    if (ntok > 0) {
        delta_reduce_launch<T>(c, ar->stream, b, (int)nvb);
        LA_CU_LAUNCHED(c->op);
    }
    return LA_OK;
}

extern "C" la_status la__cu_delta_backward(const la__cu_call *c) {
    LA_CU_TRY(c->op, cudaSetDevice(c->device));
    la_cu_arena ar = {};
    ar.stream = (cudaStream_t)c->stream;
    ar.op = c->op;
    la_status st = LA_OK;
    LA_CU_DTYPE_SWITCH(c->dtype, T, st = delta_backward<T>(c, &ar));
    la__cu_free_all(&ar);
    return st;
}
