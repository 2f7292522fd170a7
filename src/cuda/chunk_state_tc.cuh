/* State passing across chunks on tensor cores (16-bit inputs), the same
 * update as la_cu_state_pass (chunk_state.cuh):
 *     S_end = e^{G_L} S_start + sum_s A_s^T B_s
 * forward: A = phi(k), B = v e^{G_L - G_s}, the state at each chunk start
 * stored; backward (REV): A = scale phi(q) e^{G_s}, B = d_o, chunks in
 * reverse, the gradient of each chunk-end state stored. One CTA (4 warps)
 * per (sequence, head, 64 value columns, 64 key rows) keeps its 64x64 fp32
 * state tile in tensor-core accumulators and walks the chunks of its
 * sequence; A^T B is one 64x64x64 product per chunk (more with the parts
 * of fp32 quantities, tc.cuh). The next chunk's inputs are loaded into
 * registers while the current chunk's product runs. Fixed order, no atomics. GLA and
 * KDA can reuse it by scaling A's rows per key instead of by e^{G_L}. */
#ifndef LINATTN_CUDA_CHUNK_STATE_TC_CUH
#define LINATTN_CUDA_CHUNK_STATE_TC_CUH

#include "chunk_state.cuh"
#include "tc.cuh"

/* Copies the state tile (fp32, staged in F) to dst [K][V] at (k0, v0). */
__device__ __forceinline__ void la_tc_tile_out(float *dst, const float *F, int64_t k0, int64_t v0,
                                               int64_t K, int64_t V) {
#pragma unroll 4
    for (int e = threadIdx.x; e < 64 * 64; e += LA_TC_THREADS) {
        const int r = e >> 6, c = e & 63;
        if (k0 + r < K && v0 + c < V) dst[(k0 + r) * V + v0 + c] = F[r * LA_TC_LDF + c];
    }
}

template <typename T, bool REV>
__global__ void __launch_bounds__(LA_TC_THREADS) la_tc_state_pass(la_cu_sp_args p) {
    extern __shared__ __align__(128) unsigned char la_tc_sp_smem[];
    T *Ah = (T *)la_tc_sp_smem, *Al = Ah + LA_TC_TILE, *Al2 = Al + LA_TC_TILE,
      *Bh = Al2 + LA_TC_TILE, *Bl = Bh + LA_TC_TILE, *Bl2 = Bl + LA_TC_TILE;
    float *F = (float *)(Bl2 + LA_TC_TILE);
    __shared__ double G[64], part[64];
    const int t = threadIdx.x;
    const int64_t H = p.H, K = p.K, V = p.V;
    const int64_t n = blockIdx.x / H;
    const int h = (int)(blockIdx.x % H);
    const int64_t v0 = (int64_t)blockIdx.y * 64, k0 = (int64_t)blockIdx.z * 64;
    const la_cu_seq s = p.seqs[n];
    const float gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const T *A = (const T *)p.a_src, *Bv = (const T *)p.b_src;
    const size_t sbase = ((size_t)n * H + h) * K * V;
    const float scale = p.scale;
    const int fm = p.fm;
    /* parts per operand: fp32 quantities (scaled / decayed rows) take lo
     * (and lo2 for bf16); phi of elu+1 takes lo; exact inputs hi alone */
    const bool three = la_tc_three<T>::value;
    T *al = (REV || fm == LA_FEATURE_ELU1) ? Al : (T *)NULL;
    T *al2 = (REV && three) ? Al2 : (T *)NULL;
    T *bl = (!REV && (p.g || p.g_gamma)) ? Bl : (T *)NULL;
    T *bl2 = (bl && three) ? Bl2 : (T *)NULL;
    for (int e = t; e < 64 * 64; e += LA_TC_THREADS) {
        const int r = e >> 6, c = e & 63;
        F[r * LA_TC_LDF + c] =
            (p.init && k0 + r < K && v0 + c < V) ? p.init[sbase + (k0 + r) * V + v0 + c] : 0.f;
    }
    __syncthreads();
    la_tc_acc acc[4];
    la_tc_load(acc, F);
    /* the next chunk's inputs, loaded while the current chunk's product runs */
    float ra[LA_TC_PER], rb[LA_TC_PER];
    double gnext = 0.0;
    auto fetch = [&](int c) {
        /* chunk c of the sequence, as la__cu_make_table cuts it (no table load) */
        const int64_t tok0 = s.start + (int64_t)c * LA_CU_C;
        const int L =
            (int)(s.len - (int64_t)c * LA_CU_C < LA_CU_C ? s.len - (int64_t)c * LA_CU_C : LA_CU_C);
        const int col = t & 63, r0 = t >> 6;
        la_tc_fetch_rows(ra, A + ((tok0 + r0) * H + h) * K + k0 + col, H * K, L, k0 + col < K);
        la_tc_fetch_rows(rb, Bv + ((tok0 + r0) * H + h) * V + v0 + col, H * V, L, v0 + col < V);
        gnext = t < L ? (double)((p.g ? p.g[(tok0 + t) * H + h] : 0.f) + gam) : 0.0;
    };
    if (s.nch > 0) fetch(REV ? s.nch - 1 : 0);
    for (int cc = 0; cc < s.nch; cc++) {
        const int c = REV ? s.nch - 1 - cc : cc;
        const int L =
            (int)(s.len - (int64_t)c * LA_CU_C < LA_CU_C ? s.len - (int64_t)c * LA_CU_C : LA_CU_C);
        if (p.hbuf) {
            __syncthreads(); /* earlier readers of F are done */
            la_tc_store(F, acc);
            __syncthreads();
            la_tc_tile_out(p.hbuf + ((size_t)(s.chunk0 + c) * H + h) * K * V, F, k0, v0, K, V);
        }
        la_tc_gate_scan(G, part, gnext); /* also: every reader of the tiles is done */
        const double GL = G[L - 1];
        la_tc_put_all(Ah, al, al2, ra, [&](int r, int col, float x) -> float {
            if (r >= L || k0 + col >= K) return 0.f;
            float y = la_phi(fm, x);
            if (REV) y *= scale * la_cu_expd(G[r]);
            return y;
        });
        la_tc_put_all(Bh, bl, bl2, rb, [&](int r, int, float y) -> float {
            return REV ? y : y * la_cu_expd(GL - G[r]);
        });
        __syncthreads();
        if (cc + 1 < s.nch) fetch(REV ? c - 1 : c + 1);
        const float decay = la_cu_expd(GL);
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int i = 0; i < acc[j].num_elements; i++) acc[j].x[i] *= decay;
        la_tc_mma64x<T, true, false>(acc, Ah, al, al2, Bh, bl, bl2);
    }
    if (p.fin) {
        __syncthreads();
        la_tc_store(F, acc);
        __syncthreads();
        la_tc_tile_out(p.fin + sbase, F, k0, v0, K, V);
    }
}

template <typename T, bool REV>
static la_status la_tc_launch_state_pass(const char *op, cudaStream_t stream, int64_t N,
                                         const la_cu_sp_args &a) {
    const size_t smem = 6 * LA_TC_TILE_BYTES + LA_TC_TILEF_BYTES;
    LA_CU_TRY(op, cudaFuncSetAttribute(la_tc_state_pass<T, REV>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((unsigned)(N * a.H), (unsigned)((a.V + 63) / 64), (unsigned)((a.K + 63) / 64));
    la_tc_state_pass<T, REV><<<grid, LA_TC_THREADS, smem, stream>>>(a);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}

#endif
