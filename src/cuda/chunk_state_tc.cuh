/* State passing across chunks on tensor cores (16-bit inputs), the same
 * update as la_cu_state_pass (chunk_state.cuh):
 *     S_end = e^{G_L} S_start + sum_s A_s^T B_s
 * forward: A = phi(k), B = v e^{G_L - G_s}, the state at each chunk start
 * stored; backward (REV): A = scale phi(q) e^{G_s}, B = d_o, chunks in
 * reverse, the gradient of each chunk-end state stored. One CTA (4 warps)
 * per (sequence, head, 64 value columns, 64 key rows) keeps its 64x64 fp32
 * state tile in tensor-core accumulators and walks the chunks of its
 * sequence; A^T B is one 64x64x64 product per chunk (more with the parts
 * of fp32 quantities, tc.cuh). The next chunk's A and B tiles are copied
 * into shared memory by 16-byte cp.async (tc_tile.cuh, double-buffered)
 * while the current chunk's product runs; exact operands go to the tensor
 * cores straight from the copied tile, the others are rewritten in place
 * into parts; each warp scans the chunk's gates itself; the states go to
 * global memory straight from the accumulators. Per chunk: one barrier
 * (two when an operand is converted). Fixed order, no atomics. GLA and KDA
 * can reuse it by scaling A's rows per key instead of by e^{G_L}. */
#ifndef LINATTN_CUDA_CHUNK_STATE_TC_CUH
#define LINATTN_CUDA_CHUNK_STATE_TC_CUH

#include "chunk_state.cuh"
#include "tc_tile.cuh"

/* Extra part tiles (beyond A and B, double-buffered): fp32 quantities
 * (scaled / decayed rows) take lo (and lo2 for bf16), phi of elu+1 takes lo,
 * exact inputs are used as copied. */
static inline int la_tc_sp_parts(bool rev, bool gated, int fm, bool three) {
    const int a = rev ? (three ? 2 : 1) : (fm == LA_FEATURE_ELU1 ? 1 : 0);
    const int b = (!rev && gated) ? (three ? 2 : 1) : 0;
    return a + b;
}

/* Forward: 4 CTAs per SM (1 wave of 512 CTAs on 132 SMs at 8,2048,16,128)
 * where the shared memory allows (6 tiles or fewer); the reverse pass, 3 (it
 * spills at 128 registers). */
template <typename T, bool REV>
__global__ void __launch_bounds__(LA_TC_THREADS, REV ? 3 : 4) la_tc_state_pass(la_cu_sp_args p) {
    extern __shared__ __align__(128) unsigned char la_tc_sp_smem[];
    T *const tiles = (T *)la_tc_sp_smem;
    const int t = threadIdx.x, lane = t & 31;
    const int64_t H = p.H, K = p.K, V = p.V;
    const int64_t n = blockIdx.x / H;
    const int h = (int)(blockIdx.x % H);
    const int64_t v0 = (int64_t)blockIdx.y * 64, k0 = (int64_t)blockIdx.z * 64;
    const la_cu_seq s = p.seqs[n];
    const float gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const bool gated = p.g || p.g_gamma;
    const T *A = (const T *)p.a_src, *Bv = (const T *)p.b_src;
    const size_t sbase = ((size_t)n * H + h) * K * V;
    const float scale = p.scale;
    const int fm = p.fm;
    const bool vec = ((K | V) & 7) == 0 && (((uintptr_t)A | (uintptr_t)Bv) & 15) == 0;
    const int acols = (int)(K - k0 < 64 ? K - k0 : 64), bcols = (int)(V - v0 < 64 ? V - v0 : 64);
    const bool three = la_tc_three<T>::value;
    const bool convA = REV || fm != LA_FEATURE_IDENTITY, convB = !REV && gated;
    T *P = tiles + 4 * LA_TC_TILE; /* the part tiles in use, in order (la_tc_sp_parts) */
    T *const al = (REV || fm == LA_FEATURE_ELU1) ? P : (T *)NULL;
    if (al) P += LA_TC_TILE;
    T *const al2 = (REV && three) ? P : (T *)NULL;
    if (al2) P += LA_TC_TILE;
    T *const bl = convB ? P : (T *)NULL;
    if (bl) P += LA_TC_TILE;
    T *const bl2 = (convB && three) ? P : (T *)NULL;
    la_tc_acc acc[4];
    la_tc_acc_in(acc, p.init ? p.init + sbase : (const float *)NULL, k0, v0, K, V);
    float g0 = 0.f, g1 = 0.f; /* this lane's gates of the next chunk (tokens 2 lane, +1) */
    auto issue = [&](int c, int buf) {
        const int64_t tok0 = s.start + (int64_t)c * LA_CU_C;
        const int L =
            (int)(s.len - (int64_t)c * LA_CU_C < LA_CU_C ? s.len - (int64_t)c * LA_CU_C : LA_CU_C);
        la_tc_tile_fetch(tiles + buf * LA_TC_TILE, A + (tok0 * H + h) * K + k0, H * K, L, acols,
                         vec);
        la_tc_tile_fetch(tiles + (2 + buf) * LA_TC_TILE, Bv + (tok0 * H + h) * V + v0, H * V, L,
                         bcols, vec);
        la_tc_cp_commit();
        if (gated) {
            g0 = 2 * lane < L ? (p.g ? p.g[(tok0 + 2 * lane) * H + h] : 0.f) + gam : 0.f;
            g1 = 2 * lane + 1 < L ? (p.g ? p.g[(tok0 + 2 * lane + 1) * H + h] : 0.f) + gam : 0.f;
        }
    };
    if (s.nch > 0) issue(REV ? s.nch - 1 : 0, 0);
    for (int cc = 0; cc < s.nch; cc++) {
        const int c = REV ? s.nch - 1 - cc : cc, buf = cc & 1;
        const int L =
            (int)(s.len - (int64_t)c * LA_CU_C < LA_CU_C ? s.len - (int64_t)c * LA_CU_C : LA_CU_C);
        T *const Ah = tiles + buf * LA_TC_TILE, *const Bh = tiles + (2 + buf) * LA_TC_TILE;
        /* per-row factors of this lane's rows 2 lane, 2 lane + 1 (0 past the
         * chunk): forward e^{G_L - G_s} on B, backward scale e^{G_s} on A */
        float decay = 1.f, f0 = 2 * lane < L ? 1.f : 0.f, f1 = 2 * lane + 1 < L ? 1.f : 0.f;
        if (gated) {
            double G0, G1;
            la_tc_warp_gates_reg(G0, G1, (double)g0, (double)g1);
            const int sl = (L - 1) >> 1;
            const double a = __shfl_sync(0xffffffffu, G0, sl), b = __shfl_sync(0xffffffffu, G1, sl);
            const double GL = ((L - 1) & 1) ? b : a;
            decay = la_cu_expd(GL);
            f0 *= REV ? la_cu_expd(G0) : la_cu_expd(GL - G0);
            f1 *= REV ? la_cu_expd(G1) : la_cu_expd(GL - G1);
        }
        if (REV) f0 *= scale, f1 *= scale;
        float fr[4]; /* the factors of this thread's tile pieces (rows t / 8 + 16 u) */
#pragma unroll
        for (int u = 0; u < 4; u++) fr[u] = la_tc_row_get(f0, f1, (t >> 3) + 16 * u);
        la_tc_cp_wait_all();
        __syncthreads(); /* chunk c's tiles are in; the previous chunk's readers are done */
        if (cc + 1 < s.nch) issue(REV ? c - 1 : c + 1, buf ^ 1);
        if (p.hbuf)
            la_tc_acc_out(p.hbuf + ((size_t)(s.chunk0 + c) * H + h) * K * V, acc, k0, v0, K, V);
        if (convA)
            la_tc_tile_split_u(Ah, al, al2, [&](int u, int r, int col, float x) -> float {
                if (r >= L || col >= acols) return 0.f;
                const float y = la_phi(fm, x);
                return REV ? y * fr[u] : y;
            });
        if (convB)
            la_tc_tile_split_u(Bh, bl, bl2,
                               [&](int u, int, int, float x) -> float { return x * fr[u]; });
        if (convA || convB) __syncthreads();
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int i = 0; i < acc[j].num_elements; i++) acc[j].x[i] *= decay;
        la_tc_mma64x<T, true, false>(acc, Ah, al, al2, Bh, bl, bl2);
    }
    if (p.fin) la_tc_acc_out(p.fin + sbase, acc, k0, v0, K, V);
}

/* ---- cuda-lin4: the pass in two levels, for grids too small to fill the
 * GPU (few sequences x heads, long sequences). la_tc_state_local: one CTA
 * per (chunk, head, 64 value columns, 64 key rows) computes the chunk's own
 * term U_c = A_c^T B_c (same operands, factors and parts as the pass above)
 * into the chunk's hbuf slot; la_tc_state_scan: each thread walks the
 * chunks of its sequence for 4 state entries, slot c <- R (the state before
 * the chunk: forward at its start, backward at its end), R <- e^{G_L} R +
 * U_c, in the chunk order of the pass above; fin <- R. The decay e^{G_L} is
 * computed as in the pass above (each warp scans the chunk's gates), by the
 * local kernel into p.decay where given (cuda-lin5), else by the scan. */
template <typename T, bool REV>
__global__ void __launch_bounds__(LA_TC_THREADS, 4) la_tc_state_local(la_cu_sp_args p) {
    extern __shared__ __align__(128) unsigned char la_tc_sl_smem[];
    T *const Ah = (T *)la_tc_sl_smem, *const Bh = Ah + LA_TC_TILE;
    const int t = threadIdx.x, lane = t & 31;
    const int64_t H = p.H, K = p.K, V = p.V;
    const int64_t cg = blockIdx.x / H;
    const int h = (int)(blockIdx.x % H);
    const int64_t v0 = (int64_t)blockIdx.y * 64, k0 = (int64_t)blockIdx.z * 64;
    const la_cu_chunk ch = p.chunks[cg];
    const int64_t tok0 = ch.tok0;
    const int L = ch.len;
    const float gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const bool gated = p.g || p.g_gamma;
    const T *A = (const T *)p.a_src, *Bv = (const T *)p.b_src;
    const float scale = p.scale;
    const int fm = p.fm;
    const bool vec = ((K | V) & 7) == 0 && (((uintptr_t)A | (uintptr_t)Bv) & 15) == 0;
    const int acols = (int)(K - k0 < 64 ? K - k0 : 64), bcols = (int)(V - v0 < 64 ? V - v0 : 64);
    const bool three = la_tc_three<T>::value;
    const bool convA = REV || fm != LA_FEATURE_IDENTITY, convB = !REV && gated;
    T *P = Bh + LA_TC_TILE; /* the part tiles in use, in order (la_tc_sp_parts) */
    T *const al = (REV || fm == LA_FEATURE_ELU1) ? P : (T *)NULL;
    if (al) P += LA_TC_TILE;
    T *const al2 = (REV && three) ? P : (T *)NULL;
    if (al2) P += LA_TC_TILE;
    T *const bl = convB ? P : (T *)NULL;
    if (bl) P += LA_TC_TILE;
    T *const bl2 = (convB && three) ? P : (T *)NULL;
    la_tc_tile_fetch(Ah, A + (tok0 * H + h) * K + k0, H * K, L, acols, vec);
    la_tc_tile_fetch(Bh, Bv + (tok0 * H + h) * V + v0, H * V, L, bcols, vec);
    la_tc_cp_commit();
    float f0 = 2 * lane < L ? 1.f : 0.f, f1 = 2 * lane + 1 < L ? 1.f : 0.f;
    if (gated) {
        const float g0 = 2 * lane < L ? (p.g ? p.g[(tok0 + 2 * lane) * H + h] : 0.f) + gam : 0.f;
        const float g1 =
            2 * lane + 1 < L ? (p.g ? p.g[(tok0 + 2 * lane + 1) * H + h] : 0.f) + gam : 0.f;
        double G0, G1;
        la_tc_warp_gates_reg(G0, G1, (double)g0, (double)g1);
        const int sl = (L - 1) >> 1;
        const double a = __shfl_sync(0xffffffffu, G0, sl), b = __shfl_sync(0xffffffffu, G1, sl);
        const double GL = ((L - 1) & 1) ? b : a;
        f0 *= REV ? la_cu_expd(G0) : la_cu_expd(GL - G0);
        f1 *= REV ? la_cu_expd(G1) : la_cu_expd(GL - G1);
        if (p.decay && t == 0 && blockIdx.y == 0 && blockIdx.z == 0)
            p.decay[cg * H + h] = la_cu_expd(GL); /* the scan's factor, as it computed it */
    }
    if (REV) f0 *= scale, f1 *= scale;
    float fr[4];
#pragma unroll
    for (int u = 0; u < 4; u++) fr[u] = la_tc_row_get(f0, f1, (t >> 3) + 16 * u);
    la_tc_cp_wait_all();
    __syncthreads();
    if (convA)
        la_tc_tile_split_u(Ah, al, al2, [&](int u, int r, int col, float x) -> float {
            if (r >= L || col >= acols) return 0.f;
            const float y = la_phi(fm, x);
            return REV ? y * fr[u] : y;
        });
    if (convB)
        la_tc_tile_split_u(Bh, bl, bl2,
                           [&](int u, int, int, float x) -> float { return x * fr[u]; });
    if (convA || convB) __syncthreads();
    la_tc_acc acc[4];
    la_tc_zero(acc);
    la_tc_mma64x<T, true, false>(acc, Ah, al, al2, Bh, bl, bl2);
    la_tc_acc_out(p.hbuf + ((size_t)cg * H + h) * K * V, acc, k0, v0, K, V);
}

/* 128 threads x 4 entries per CTA; grid (N H, ceil(K V / 512)). The U
 * entries (and decays) of the next three chunks are loaded while the
 * current chunk's run. The decay e^{G_L} is read from p.decay (written by the local
 * kernel, cuda-lin5) where given, else each warp scans the chunk's gates. */
template <bool REV> __global__ void __launch_bounds__(128) la_tc_state_scan(la_cu_sp_args p) {
    const int lane = threadIdx.x & 31;
    const int64_t H = p.H, KV = p.K * p.V;
    const int64_t n = blockIdx.x / H;
    const int h = (int)(blockIdx.x % H);
    const int64_t e = ((int64_t)blockIdx.y * 128 + threadIdx.x) * 4;
    const la_cu_seq s = p.seqs[n];
    const float gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const bool gated = p.g || p.g_gamma, stored = gated && p.decay;
    const size_t sbase = ((size_t)n * H + h) * KV;
    const int m = e < KV ? (int)(KV - e < 4 ? KV - e : 4) : 0; /* entries of this thread */
    const bool v4 = m == 4 && !(KV & 3);
    float R[4] = {0.f, 0.f, 0.f, 0.f};
    if (p.init)
        for (int i = 0; i < m; i++) R[i] = p.init[sbase + e + i];
    struct ld {
        float u[4], g0, g1, d; /* U entries; gates of tokens 2 lane, +1 or the stored decay */
    };
    /* chunk cc (in walking order): its U entries and gates / decay */
    const auto load = [&](int cc, ld &x) {
        const int c = REV ? s.nch - 1 - cc : cc;
        const int64_t tok0 = s.start + (int64_t)c * LA_CU_C;
        const int L =
            (int)(s.len - (int64_t)c * LA_CU_C < LA_CU_C ? s.len - (int64_t)c * LA_CU_C : LA_CU_C);
        x.g0 = x.g1 = 0.f, x.d = 1.f;
        if (stored)
            x.d = p.decay[(size_t)(s.chunk0 + c) * H + h];
        else if (gated) {
            x.g0 = 2 * lane < L ? (p.g ? p.g[(tok0 + 2 * lane) * H + h] : 0.f) + gam : 0.f;
            x.g1 = 2 * lane + 1 < L ? (p.g ? p.g[(tok0 + 2 * lane + 1) * H + h] : 0.f) + gam : 0.f;
        }
        const float *slot = p.hbuf + ((size_t)(s.chunk0 + c) * H + h) * KV + e;
        if (v4) {
            const float4 y = *(const float4 *)slot;
            x.u[0] = y.x, x.u[1] = y.y, x.u[2] = y.z, x.u[3] = y.w;
        } else {
            for (int i = 0; i < 4; i++) x.u[i] = i < m ? slot[i] : 0.f;
        }
    };
    constexpr int D = 4; /* chunks in flight: q[0] the current one */
    ld q[D];
#pragma unroll
    for (int i = 0; i < D - 1; i++) {
        q[i] = ld{};
        if (i < s.nch) load(i, q[i]);
    }
    for (int cc = 0; cc < s.nch; cc++) {
        const int c = REV ? s.nch - 1 - cc : cc;
        const int L =
            (int)(s.len - (int64_t)c * LA_CU_C < LA_CU_C ? s.len - (int64_t)c * LA_CU_C : LA_CU_C);
        q[D - 1] = ld{};
        if (cc + D - 1 < s.nch) load(cc + D - 1, q[D - 1]);
        const ld &cur = q[0];
        float decay = cur.d;
        if (gated && !stored) {
            double G0, G1;
            la_tc_warp_gates_reg(G0, G1, (double)cur.g0, (double)cur.g1);
            const int sl = (L - 1) >> 1;
            const double a = __shfl_sync(0xffffffffu, G0, sl), b = __shfl_sync(0xffffffffu, G1, sl);
            decay = la_cu_expd(((L - 1) & 1) ? b : a);
        }
        float *slot = p.hbuf + ((size_t)(s.chunk0 + c) * H + h) * KV + e;
        if (v4)
            *(float4 *)slot = make_float4(R[0], R[1], R[2], R[3]);
        else
            for (int i = 0; i < m; i++) slot[i] = R[i];
#pragma unroll
        for (int i = 0; i < 4; i++) R[i] = decay * R[i] + cur.u[i];
#pragma unroll
        for (int i = 0; i < D - 1; i++) q[i] = q[i + 1];
    }
    if (p.fin)
        for (int i = 0; i < m; i++) p.fin[sbase + e + i] = R[i];
}

/* Whether the two-level pass runs: LINATTN_CUDA_SPLIT_STATE = 0 never, 1
 * always (testing), unset: when the one-kernel pass would have fewer CTAs
 * than 2 per SM and converts an operand per chunk (gated forward, every
 * backward). Needs the hbuf slots and the chunk count. */
static inline bool la_tc_split_state(bool rev, int64_t N, const la_cu_sp_args &a) {
    static int mode = -2; /* -1 automatic */
    if (mode == -2) {
        const char *e = getenv("LINATTN_CUDA_SPLIT_STATE");
        mode = !e ? -1 : e[0] == '0' ? 0 : e[0] == '1' ? 1 : -1;
    }
    if (!a.hbuf || a.nchunks <= 0 || mode == 0) return false;
    if (mode == 1) return true;
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    const int64_t ctas = N * a.H * ((a.V + 63) / 64) * ((a.K + 63) / 64);
    return ctas < 2 * (int64_t)sms && (rev || a.g || a.g_gamma);
}

template <typename T, bool REV>
static la_status la_tc_launch_state_split(const char *op, cudaStream_t stream, int64_t N,
                                          const la_cu_sp_args &a) {
    const int parts = la_tc_sp_parts(REV, a.g || a.g_gamma, a.fm, la_tc_three<T>::value);
    const size_t smem = (size_t)(2 + parts) * LA_TC_TILE_BYTES;
    LA_CU_TRY(op, cudaFuncSetAttribute(la_tc_state_local<T, REV>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)(a.nchunks * a.H), (unsigned)((a.V + 63) / 64),
                    (unsigned)((a.K + 63) / 64));
    la_tc_state_local<T, REV><<<grid, LA_TC_THREADS, smem, stream>>>(a);
    LA_CU_LAUNCHED(op);
    const int64_t KV = a.K * a.V;
    la_tc_state_scan<REV>
        <<<dim3((unsigned)(N * a.H), (unsigned)((KV + 511) / 512)), 128, 0, stream>>>(a);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}

template <typename T, bool REV>
static la_status la_tc_launch_state_pass(const char *op, cudaStream_t stream, int64_t N,
                                         const la_cu_sp_args &a) {
    if (N > 0 && la_tc_split_state(REV, N, a))
        return la_tc_launch_state_split<T, REV>(op, stream, N, a);
    const int parts = la_tc_sp_parts(REV, a.g || a.g_gamma, a.fm, la_tc_three<T>::value);
    const size_t smem = (size_t)(4 + parts) * LA_TC_TILE_BYTES;
    LA_CU_TRY(op, cudaFuncSetAttribute(la_tc_state_pass<T, REV>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((unsigned)(N * a.H), (unsigned)((a.V + 63) / 64), (unsigned)((a.K + 63) / 64));
    la_tc_state_pass<T, REV><<<grid, LA_TC_THREADS, smem, stream>>>(a);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}

#endif
