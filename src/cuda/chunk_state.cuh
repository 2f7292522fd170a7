/* State passing across chunks for ops whose update is
 *     S_end = e^{G_L} S_start + sum_s A_s^T B_s      (A_s: K-row, B_s: V-row)
 * (kernel linear attention, simple GLA; GLA/KDA can reuse it with a per-key
 * decay). One CTA per (sequence, head, 32 value columns) walks the chunks of
 * its sequence in order (forward: A = phi(k), B = v e^{G_L - G_s}; the state
 * at each chunk start is stored) or in reverse (backward: A = scale phi(q)
 * e^{G_s}, B = d_o; the gradient of the state at each chunk end is stored).
 * Each thread keeps 4 adjacent columns of every 32nd row in registers; sums
 * run over s in order (deterministic, no atomics). */
#ifndef LINATTN_CUDA_CHUNK_STATE_CUH
#define LINATTN_CUDA_CHUNK_STATE_CUH

#include "common.cuh"

/* The chunk's cumulative log-gates G[i] = sum_{s<=i} (g_s + g_gamma) in
 * double: the L gates are loaded by L threads at once, then thread 0 adds
 * them up in order. Every thread of the block must call it; it ends with a
 * barrier. */
__device__ __forceinline__ void la_cu_chunk_gates_par(double *G, const float *g, float gam,
                                                      int64_t tok0, int L, int64_t H, int h) {
    __syncthreads(); /* earlier readers of G are done */
    if ((int)threadIdx.x < L)
        G[threadIdx.x] = (double)((g ? g[(tok0 + threadIdx.x) * H + h] : 0.f) + gam);
    __syncthreads();
    if (threadIdx.x == 0) {
        double acc = 0;
        for (int i = 0; i < L; i++) {
            acc += G[i];
            G[i] = acc;
        }
    }
    __syncthreads();
}

struct la_cu_sp_args {
    const la_cu_seq *seqs;
    const la_cu_chunk *chunks;
    const void *a_src; /* [tokens, H, K] */
    const void *b_src; /* [tokens, H, V] */
    const float *g, *g_gamma;
    const float *init; /* [N, H, K, V] or NULL (zeros) */
    float *fin;        /* [N, H, K, V] or NULL */
    float *hbuf;       /* [nchunks, H, K, V] or NULL */
    int64_t H, K, V;
    float scale;
    int fm;
    int64_t nchunks; /* chunks of all sequences (0: not given; the 16-bit
                      * passes then walk the chunks in one kernel) */
    float *decay;    /* cuda-lin5: [nchunks, H] workspace for e^{G_L} of the
                      * two-level pass (NULL: its scan recomputes them) */
};

template <typename T, bool REV>
__global__ void __launch_bounds__(256) la_cu_state_pass(la_cu_sp_args p) {
    extern __shared__ float la_sp_smem[];
    __shared__ double G[LA_CU_C];
    /* thread: 4 adjacent columns (cq) of every 32nd row (rg): 4 x K/32 state
     * entries; per token one float4 of B and K/32 scalars of A feed 4 K/32 FMAs */
    const int t = threadIdx.x, cq = t & 7, rg = t >> 3;
    const int64_t H = p.H, K = p.K, V = p.V;
    const int64_t n = blockIdx.x / H;
    const int h = (int)(blockIdx.x % H);
    const int64_t j0 = (int64_t)blockIdx.y * 32 + 4 * cq;
    float *As = la_sp_smem;               /* [C][K] */
    float *Bs = la_sp_smem + LA_CU_C * K; /* [C][32] */
    const la_cu_seq s = p.seqs[n];
    const float gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const T *A = (const T *)p.a_src;
    const T *Bv = (const T *)p.b_src;
    const size_t sbase = ((size_t)n * H + h) * K * V;
    float st[8][4];
#pragma unroll
    for (int r = 0; r < 8; r++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const int64_t i = rg + 32 * r, j = j0 + c;
            st[r][c] = (i < K && j < V && p.init) ? p.init[sbase + i * V + j] : 0.f;
        }
    for (int cc = 0; cc < s.nch; cc++) {
        const int c = REV ? s.nch - 1 - cc : cc;
        const la_cu_chunk ch = p.chunks[s.chunk0 + c];
        const int L = ch.len;
        if (p.hbuf) {
            float *hb = p.hbuf + ((size_t)(s.chunk0 + c) * H + h) * K * V;
#pragma unroll
            for (int r = 0; r < 8; r++)
#pragma unroll
                for (int cl = 0; cl < 4; cl++) {
                    const int64_t i = rg + 32 * r, j = j0 + cl;
                    if (i < K && j < V) hb[i * V + j] = st[r][cl];
                }
        }
        la_cu_chunk_gates_par(G, p.g, gam, ch.tok0, L, H, h);
        const double GL = G[L - 1];
        const int KK = (int)K;
#pragma unroll 4
        for (int idx = t; idx < L * KK; idx += 256) {
            const int row = idx / KK, col = idx - row * KK;
            float x = la_phi(p.fm, ldf(A + ((ch.tok0 + row) * H + h) * K + col));
            if (REV) x *= p.scale * la_cu_expd(G[row]);
            As[idx] = x;
        }
        for (int idx = t; idx < L * 32; idx += 256) {
            const int row = idx >> 5, cj = idx & 31;
            const int64_t col = (int64_t)blockIdx.y * 32 + cj;
            float y = col < V ? ldf(Bv + ((ch.tok0 + row) * H + h) * V + col) : 0.f;
            if (!REV) y *= la_cu_expd(GL - G[row]);
            Bs[idx] = y;
        }
        __syncthreads();
        const float decay = la_cu_expd(GL);
#pragma unroll
        for (int r = 0; r < 8; r++)
#pragma unroll
            for (int cl = 0; cl < 4; cl++) st[r][cl] *= decay;
        for (int q = 0; q < L; q++) {
            const float4 b = *(const float4 *)(Bs + q * 32 + 4 * cq);
#pragma unroll
            for (int r = 0; r < 8; r++) {
                const int64_t i = rg + 32 * r;
                if (i < K) {
                    const float av = As[q * K + i];
                    st[r][0] = fmaf(av, b.x, st[r][0]);
                    st[r][1] = fmaf(av, b.y, st[r][1]);
                    st[r][2] = fmaf(av, b.z, st[r][2]);
                    st[r][3] = fmaf(av, b.w, st[r][3]);
                }
            }
        }
        __syncthreads();
    }
    if (p.fin) {
#pragma unroll
        for (int r = 0; r < 8; r++)
#pragma unroll
            for (int cl = 0; cl < 4; cl++) {
                const int64_t i = rg + 32 * r, j = j0 + cl;
                if (i < K && j < V) p.fin[sbase + i * V + j] = st[r][cl];
            }
    }
}

template <typename T, bool REV>
static la_status la_cu_launch_state_pass(const char *op, cudaStream_t stream, int64_t N,
                                         const la_cu_sp_args &a) {
    const size_t smem = (size_t)(LA_CU_C * a.K + LA_CU_C * 32) * sizeof(float);
    LA_CU_TRY(op, cudaFuncSetAttribute(la_cu_state_pass<T, REV>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((unsigned)(N * a.H), (unsigned)((a.V + 31) / 32));
    la_cu_state_pass<T, REV><<<grid, 256, smem, stream>>>(a);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}

#endif
