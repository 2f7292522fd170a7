/* DeltaNet and Gated DeltaNet on the GPU, chunkwise forward (the WY /
 * UT-transform form of src/ops/delta_rule/chunk.c, same math; these are the
 * fp32 FFMA kernels: fp32 inputs, and 16-bit ones under LINATTN_CUDA_TC=0;
 * bf16 / fp16 inputs otherwise take the tensor-core state pass
 * (delta_state_tc.cu) and, for bf16, the tensor-core prep and output
 * (delta_prep_blk.cu, delta_out_tc.cu)). In a chunk of L <= 64 tokens
 * with gam_t the cumulative log-gate inside the chunk (double),
 * b_t = e^{gam_t}, k and q l2-normalised when asked:
 *   Lo = strictly_lower(diag(beta) K K^T (.) Gamma),  A = (I + Lo)^{-1}
 *   U = A diag(beta) V,  W = A diag(beta b) K                  (prep kernel)
 *   R = U - W S,  S' = b_L S + (diag(e^{gam_L - gam}) K)^T R    (state kernel)
 *   O = scale (diag(b) Q S + (Q K^T (.) Gamma (.) causal) R)     (output kernel)
 * Three kernels: prep is parallel over (chunk, value head) and inverts the
 * unit lower-triangular 64x64 (I + Lo) by columns (4 threads per column, a
 * fixed order); the state kernel walks the chunks of one sequence in order,
 * one CTA per (sequence, value head, VB value columns) with the state tile
 * in shared memory, and writes the state before every chunk; the output
 * kernel is parallel over (chunk, value head) again. Gates only enter as
 * exp of non-positive differences (la_cu_expd), so g = -1e4 gives 0, not
 * Inf. No atomics: every sum has a fixed order. */
#include "common.cuh"
#include "delta_chunk.cuh"

/* x as bf16 hi[i] (+ lo[i] = x - hi where lo is not NULL): the operand
 * parts of the tensor-core state pass (cuda-delta4). */
__device__ __forceinline__ void dc_put_parts(__nv_bfloat16 *hi, __nv_bfloat16 *lo, int64_t i,
                                             float x) {
    const __nv_bfloat16 h = __float2bfloat16_rn(x);
    hi[i] = h;
    if (lo) lo[i] = __float2bfloat16_rn(x - __bfloat162float(h));
}

/* ---- prep: A, U, W, the key scales of the state update, b_L ------------- */
template <typename T> __global__ void __launch_bounds__(256) la_cu_dc_prep(la_cu_dc_args p) {
    __shared__ double gam[LA_CU_C];
    __shared__ float bt[LA_CU_C], be[LA_CU_C], rk[LA_CU_C];
    __shared__ float Lo[LA_CU_C][LA_CU_C + 1], A[LA_CU_C][LA_CU_C + 1];
    __shared__ la_cu_gemm_smem gs;
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int64_t HS = p.HS, H = p.H, K = p.K, V = p.V, hs = blockIdx.y, hq = hs / (HS / H);
    const int L = ch.len, t = threadIdx.x, ty = t >> 4, tx = t & 15;
    const int64_t tok0 = ch.tok0, kst = H * K, vst = HS * V;
    const T *kc = (const T *)p.k + (tok0 * H + hq) * K;
    const T *vc = (const T *)p.v + (tok0 * HS + hs) * V;
    la_cu_chunk_gates(gam, p.g, 0.f, tok0, L, HS, (int)hs);
    la_cu_dc_rnorm<T>(rk, (const T *)p.k, tok0, L, H, hq, K, p.use_l2);
    if (t < LA_CU_C) be[t] = t < L ? p.beta[(tok0 + t) * HS + hs] : 0.f;
    __syncthreads();
    if (t < L) bt[t] = la_cu_expd(gam[t]);
    const int64_t K8 = (K + 7) & ~(int64_t)7; /* row length of the bf16 parts */
    const int KE = p.Kh ? (int)K8 : (int)K;
    for (int e = t; e < L * KE; e += 256) {
        const int r = e / KE, i = e % KE;
        const float x =
            i < K ? (la_cu_expd(gam[L - 1] - gam[r]) * rk[r]) * ldf(kc + r * kst + i) : 0.f;
        if (p.Kd && i < K) p.Kd[((tok0 + r) * HS + hs) * K + i] = x;
        if (p.Kh) dc_put_parts(p.Kh, p.Kl, ((tok0 + r) * HS + hs) * K8 + i, x);
    }
    if (t == 0) p.bL[(int64_t)blockIdx.x * HS + hs] = la_cu_expd(gam[L - 1]);
    float acc[4][4];
    la_cu_zero(acc);
    la_cu_gemm<true>(
        acc, (int)K, [&](int m, int r) -> float { return m < L ? ldf(kc + m * kst + r) : 0.f; },
        [&](int r, int n) -> float { return n < L ? ldf(kc + n * kst + r) : 0.f; }, gs);
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int m = ty + 16 * a, n = tx + 16 * b;
            Lo[m][n] = (n < m && m < L)
                           ? be[m] * (rk[m] * rk[n] * acc[a][b]) * la_cu_expd(gam[m] - gam[n])
                           : 0.f;
        }
    __syncthreads();
    la_cu_dc_inverse(Lo, A,
                     p.AT ? p.AT + ((size_t)blockIdx.x * HS + hs) * LA_CU_C * LA_CU_C : NULL);
    for (int64_t v0 = 0; v0 < V; v0 += 64) {
        la_cu_zero(acc);
        la_cu_gemm(
            acc, LA_CU_C, [&](int m, int r) -> float { return A[m][r]; },
            [&](int r, int n) -> float {
                return (r < L && v0 + n < V) ? be[r] * ldf(vc + r * vst + v0 + n) : 0.f;
            },
            gs);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int m = ty + 16 * a, n = tx + 16 * b;
                if (m < L && v0 + n < V) p.U[((tok0 + m) * HS + hs) * V + v0 + n] = acc[a][b];
            }
    }
    for (int64_t k0 = 0; k0 < K; k0 += 64) {
        la_cu_zero(acc);
        la_cu_gemm(
            acc, LA_CU_C, [&](int m, int r) -> float { return A[m][r]; },
            [&](int r, int n) -> float {
                return (r < L && k0 + n < K)
                           ? (be[r] * bt[r]) * (rk[r] * ldf(kc + r * kst + k0 + n))
                           : 0.f;
            },
            gs);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int m = ty + 16 * a, n = tx + 16 * b;
                if (p.W && m < L && k0 + n < K)
                    p.W[((tok0 + m) * HS + hs) * K + k0 + n] = acc[a][b];
                if (p.Wh && m < L && k0 + n < K8) /* acc is 0 in the padding */
                    dc_put_parts(p.Wh, p.Wl, ((tok0 + m) * HS + hs) * K8 + k0 + n, acc[a][b]);
            }
    }
}

/* ---- state pass: one CTA per (sequence, value head, VB columns) -----------
 * Shared, NB buffers of: W and Kd of the chunk ([64][KP] each, rows >= L and
 * columns >= K zero), U then R ([64][VB]); then the state tile h
 * ([K4][VB]). With NB = 2 the next chunk's tiles load (cp.async, 16 bytes
 * where K and V are multiples of 4) while this one computes. Thread
 * (ri, cj) = (tid / CJ, tid % CJ) with CJ = min(VB, 16) and RI = 256 / CJ:
 * R rows ri + RI u (u < 64 / RI) and state rows ri + RI a (a < KA16 16 / RI),
 * columns cj + CJ w (w < VB / CJ). VB = 8 doubles the CTAs for few heads. */
template <int VB, int NB> static size_t dc_state_smem(int64_t K) {
    const int K4 = la_cu_dc_k4(K), KP = K4 + 4;
    return sizeof(float) * ((size_t)NB * (2 * LA_CU_C * KP + LA_CU_C * VB) + (size_t)K4 * VB);
}
template <int VB, int KA16, int NB>
__global__ void __launch_bounds__(256) la_cu_dc_state(la_cu_dc_args p) {
    extern __shared__ float4 dc_sm4[];
    float *sm = (float *)dc_sm4;
    constexpr int CJ = VB < 16 ? VB : 16, RI = 256 / CJ, TJ = VB / CJ, RU = LA_CU_C / RI;
    constexpr int KA = KA16 * 16 / RI;
    const int64_t K = p.K, V = p.V, HS = p.HS;
    const int K4 = la_cu_dc_k4(K), KP = K4 + 4, BUF = 2 * LA_CU_C * KP + LA_CU_C * VB;
    const bool vec = (K & 3) == 0 && (V & 3) == 0;
    float *Hm = sm + NB * BUF;
    const int t = threadIdx.x, ri = t / CJ, cj = t % CJ;
    const int64_t n = blockIdx.x / HS, hs = blockIdx.x % HS;
    const int64_t v0 = (int64_t)blockIdx.y * VB;
    const int vc = (int)(V - v0 < VB ? V - v0 : VB); /* columns of this block */
    const la_cu_seq s = p.seqs[n];
    const size_t sbase = ((size_t)n * HS + hs) * K * V;
    la_cu_dc_state_in(Hm, p.s0 ? p.s0 + sbase + v0 : nullptr, K, K4, V, VB, vc, t);
    auto issue = [&](int c, int b) {
        const int64_t tok0 = s.start + (int64_t)c * LA_CU_C, rem = s.len - (int64_t)c * LA_CU_C;
        const int L = (int)(rem < LA_CU_C ? rem : LA_CU_C);
        float *Wb = sm + b * BUF, *Kb = Wb + LA_CU_C * KP, *Ub = Kb + LA_CU_C * KP;
        const int64_t ko = (tok0 * HS + hs) * K;
        la_cu_dc_tile(Wb, KP, p.W + ko, HS * K, L, (int)K, K4, vec);
        la_cu_dc_tile(Kb, KP, p.Kd + ko, HS * K, L, (int)K, K4, vec);
        la_cu_dc_tile(Ub, VB, p.U + (tok0 * HS + hs) * V + v0, HS * V, L, vc, VB, vec);
        la_cu_cp_commit();
    };
    if (s.nch > 0) issue(0, 0);
    for (int c = 0; c < s.nch; c++) {
        const int64_t tok0 = s.start + (int64_t)c * LA_CU_C;
        const int L =
            (int)(s.len - (int64_t)c * LA_CU_C < LA_CU_C ? s.len - (int64_t)c * LA_CU_C : LA_CU_C);
        const size_t chk = (size_t)s.chunk0 + c;
        const int b = NB == 2 ? (c & 1) : 0;
        const float *Ws = sm + b * BUF, *Ks = Ws + LA_CU_C * KP;
        float *Us = sm + b * BUF + 2 * LA_CU_C * KP;
        const float bl = p.bL[chk * HS + hs];
        if (NB == 2 && c + 1 < s.nch) {
            issue(c + 1, b ^ 1);
            la_cu_cp_wait<1>();
        } else {
            la_cu_cp_wait<0>();
        }
        __syncthreads(); /* chunk c's tiles and h visible */
        if (p.hst) la_cu_dc_state_out(p.hst + (chk * HS + hs) * K * V + v0, Hm, K, V, VB, vc, t);
        /* R = U - W h */
        float racc[RU][TJ];
        la_cu_dc_rows_state<RU, TJ, RI, CJ>(racc, Ws, KP, Hm, VB, K4, ri, cj);
#pragma unroll
        for (int u = 0; u < RU; u++)
#pragma unroll
            for (int w = 0; w < TJ; w++) {
                const int r = ri + RI * u, j = cj + CJ * w;
                const float x = Us[r * VB + j] - racc[u][w];
                Us[r * VB + j] = x;
                if (r < L && j < vc) p.U[((tok0 + r) * HS + hs) * V + v0 + j] = x;
            }
        __syncthreads();
        /* h = b_L h + Ks^T R */
        float hacc[KA][TJ];
#pragma unroll
        for (int a = 0; a < KA; a++)
#pragma unroll
            for (int w = 0; w < TJ; w++) hacc[a][w] = 0.f;
        for (int r = 0; r < L; r++) {
            float rv[TJ];
#pragma unroll
            for (int w = 0; w < TJ; w++) rv[w] = Us[r * VB + cj + CJ * w];
#pragma unroll
            for (int a = 0; a < KA; a++) {
                const int i = ri + RI * a;
                if (i < K4) {
                    const float kv = Ks[r * KP + i];
#pragma unroll
                    for (int w = 0; w < TJ; w++) hacc[a][w] = fmaf(kv, rv[w], hacc[a][w]);
                }
            }
        }
        la_cu_dc_state_decay_add<KA, TJ, RI, CJ>(Hm, hacc, bl, K4, VB, ri, cj);
        __syncthreads(); /* buffer b and h read: free for the next loads */
        if (NB == 1 && c + 1 < s.nch) issue(c + 1, 0);
    }
    __syncthreads();
    if (p.sT) la_cu_dc_state_out(p.sT + sbase + v0, Hm, K, V, VB, vc, t);
}

/* ---- outputs: O = scale (diag(b) Q h + (Q K^T (.) Gamma (.) causal) R) ---- */
template <typename T> __global__ void __launch_bounds__(256) la_cu_dc_out(la_cu_dc_args p) {
    __shared__ double gam[LA_CU_C];
    __shared__ float bq[LA_CU_C], rq[LA_CU_C], rk[LA_CU_C];
    __shared__ float P[LA_CU_C][LA_CU_C + 1];
    __shared__ la_cu_gemm_smem gs;
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int64_t HS = p.HS, H = p.H, K = p.K, V = p.V, hs = blockIdx.y, hq = hs / (HS / H);
    const int L = ch.len, t = threadIdx.x, ty = t >> 4, tx = t & 15;
    const int64_t tok0 = ch.tok0, kst = H * K;
    const T *qc = (const T *)p.q + (tok0 * H + hq) * K;
    const T *kc = (const T *)p.k + (tok0 * H + hq) * K;
    la_cu_chunk_gates(gam, p.g, 0.f, tok0, L, HS, (int)hs);
    la_cu_dc_rnorm<T>(rq, (const T *)p.q, tok0, L, H, hq, K, p.use_l2);
    la_cu_dc_rnorm<T>(rk, (const T *)p.k, tok0, L, H, hq, K, p.use_l2);
    __syncthreads();
    if (t < L) bq[t] = p.scale * (la_cu_expd(gam[t]) * rq[t]);
    float acc[4][4];
    la_cu_zero(acc);
    la_cu_gemm<true>(
        acc, (int)K, [&](int m, int r) -> float { return m < L ? ldf(qc + m * kst + r) : 0.f; },
        [&](int r, int n) -> float { return n < L ? ldf(kc + n * kst + r) : 0.f; }, gs);
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int m = ty + 16 * a, n = tx + 16 * b;
            P[m][n] = (n <= m && m < L)
                          ? p.scale * (rq[m] * rk[n] * acc[a][b]) * la_cu_expd(gam[m] - gam[n])
                          : 0.f;
        }
    __syncthreads();
    const float *hc = p.hst + ((size_t)blockIdx.x * HS + hs) * K * V;
    const float *R = p.U + (tok0 * HS + hs) * V;
    T *o = (T *)p.o + (tok0 * HS + hs) * V;
    for (int64_t v0 = 0; v0 < V; v0 += 64) {
        la_cu_zero(acc);
        la_cu_gemm(
            acc, (int)K,
            [&](int m, int r) -> float { return m < L ? bq[m] * ldf(qc + m * kst + r) : 0.f; },
            [&](int r, int n) -> float { return v0 + n < V ? hc[r * V + v0 + n] : 0.f; }, gs);
        la_cu_gemm(
            acc, LA_CU_C, [&](int m, int r) -> float { return P[m][r]; },
            [&](int r, int n) -> float {
                return (r < L && v0 + n < V) ? R[r * HS * V + v0 + n] : 0.f;
            },
            gs);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int m = ty + 16 * a, n = tx + 16 * b;
                if (m < L && v0 + n < V) stf(o + m * HS * V + v0 + n, acc[a][b]);
            }
    }
}

/* ---- launchers ------------------------------------------------------------ */
template <int VB, int KA, int NB>
static la_status dc_state_launch(const la__cu_call *c, const la_cu_dc_args &p,
                                 cudaStream_t stream) {
    const size_t smem = dc_state_smem<VB, NB>(c->K);
    LA_CU_TRY(c->op, cudaFuncSetAttribute(la_cu_dc_state<VB, KA, NB>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid((unsigned)(c->N * c->HS), (unsigned)((c->V + VB - 1) / VB));
    la_cu_dc_state<VB, KA, NB><<<grid, 256, smem, stream>>>(p);
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}

/* Double-buffered where it fits the device's shared memory. */
template <int VB, int KA>
static la_status dc_state_nb(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t s) {
    if (dc_state_smem<VB, 2>(c->K) <= (size_t)la__cu_smem_optin(c))
        return dc_state_launch<VB, KA, 2>(c, p, s);
    return dc_state_launch<VB, KA, 1>(c, p, s);
}

/* The column block per CTA (the whole state of a head is split into column
 * blocks, each walked by one CTA): 32 columns where that gives two CTAs per
 * SM, 8 where 16 would leave SMs idle, else 16. */
int la__cu_delta_state_vb(const la__cu_call *c, int64_t nsm, size_t smem32) {
    const int64_t heads = c->N * c->HS;
    if (heads * ((c->V + 31) / 32) >= 2 * nsm && smem32 <= (size_t)la__cu_smem_optin(c)) return 32;
    if (heads * ((c->V + 15) / 16) < nsm) return 8;
    return 16;
}
int64_t la__cu_sm_count(const la__cu_call *c) {
    int v = 0;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, c->device) != cudaSuccess) {
        cudaGetLastError();
        return 132;
    }
    return v;
}
template <int KA>
static la_status dc_state_vb(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t s) {
    switch (la__cu_delta_state_vb(c, la__cu_sm_count(c), dc_state_smem<32, 1>(c->K))) {
    case 32: return dc_state_nb<32, KA>(c, p, s);
    case 8: return dc_state_nb<8, KA>(c, p, s);
    default: return dc_state_nb<16, KA>(c, p, s);
    }
}

int la__cu_smem_optin(const la__cu_call *c) {
    int v = 0;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device) !=
        cudaSuccess) {
        cudaGetLastError();
        return 48 * 1024;
    }
    return v;
}

void la__cu_dc_inputs(const la__cu_call *c, const la_cu_table &tb, la_cu_dc_args &p) {
    p.chunks = tb.chunks, p.seqs = tb.seqs;
    p.q = c->q, p.k = c->k, p.v = c->v, p.g = c->g, p.beta = c->beta, p.s0 = c->s0;
    p.H = c->H, p.HS = c->HS, p.K = c->K, p.V = c->V, p.scale = c->scale, p.use_l2 = c->use_l2;
}

/* ---- cuda-gdnf19: the bf16 forward as a pipeline over time segments ------
 * At one long sequence the state pass has few CTAs (GDN 1,65536,HV8,128: 128
 * cluster CTAs, one per SM) and walks every chunk in order, while prep and
 * the output kernel are parallel over chunks; one after the other they took
 * 460 + 1700 + 450 us. Cut into nseg time segments, prep of segment i + 1
 * and the output of segment i - 1 run while the state pass walks segment i:
 * the state pass on an internal high-priority stream, one launch per
 * segment, each starting from the state the previous one ended with (fp32
 * in, fp32 out: the walk's bits are the unsplit walk's), prep and output on
 * an internal low-priority stream, ordered by events; the caller's stream
 * forks to both and joins them before the call returns (so a graph capture
 * takes all of it, and the arena's blocks are freed after every use). The
 * cluster state kernel leaves about 82 KB of the SM's shared memory at
 * K <= 128 with the exact keys (55 KB with Kd's parts, XK=0): one CTA of
 * prep or output. Every kernel computes what it computed unsplit: the
 * bits are main's. The streams and events belong to the context
 * (la__cu_pipe_get, runtime.cu). */
/* LINATTN_CUDA_DELTA_PIPE: unset by grid and length, 0 off, P: P segments
 * wherever the pipeline applies (read at every call: the tests compare the
 * pipelined and unsplit paths in one process). */
static int dc_pipe_env(void) {
    const char *e = getenv("LINATTN_CUDA_DELTA_PIPE");
    const int mode = e ? atoi(e) : -1;
    return mode > LA_CU_PIPE_MAX ? LA_CU_PIPE_MAX : mode < -1 ? 0 : mode;
}

/* The number of segments of the pipelined forward, 0 where it does not run:
 * bf16 through the tensor-core prep, state pass and output, one sequence,
 * the time split off (cuda-split9), at least two chunks; by default only
 * where the cluster state pass has at most a wave of CTAs and a long walk:
 * 256 chunks for the forward, 1024 for the backward's recompute (prep
 * beside the state pass, no output to hide; H200, GDN HV8 K = V = 128: at
 * 256 chunks the forward gains 23 us, the backward loses 32; at 1024 the
 * backward gains 59). */
static int64_t dc_pipe_segs(const la__cu_call *c, const la_cu_table &tb, int parts, bool fwd) {
    const int mode = dc_pipe_env();
    if (mode == 0 || c->dtype != LA_DTYPE_BF16 || !parts || c->N != 1 || tb.nchunks < 2 ||
        !la__cu_delta_tc_prep() || !la__cu_delta_tc_out() || c->K > 256)
        return 0;
    const int64_t nsm = la__cu_sm_count(c);
    if (la__cu_delta_split_p(c, tb.nchunks, nsm)) return 0;
    if (mode > 0) return mode < tb.nchunks ? mode : tb.nchunks;
    /* the cluster state pass (at most a wave of CTAs: it checks) */
    if (!la__cu_delta_state_cl_takes(c) || tb.nchunks < (fwd ? 256 : 1024)) return 0;
    return 4; /* GDN 1,65536 fwd (H200): P = 2, 3, 4, 5, 6, 8, 16: 2.359, 2.264, 2.247,
               * 2.272, 2.280, 2.316, 2.433 ms; unsplit 2.484 */
}

/* Prep, the state pass and (p.o set) the output in nseg segments as above
 * (the backward's recompute: p.o NULL, prep beside the state pass). */
static la_status dc_pipe(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb,
                         const la_cu_dc_args &p, int64_t nseg, la_cu_pipe *x) {
    const cudaStream_t us = ar->stream;
    /* the segments' sequence entries and the states between them */
    const int64_t KV = c->HS * c->K * c->V, nch = tb.nchunks;
    const size_t tab = ((size_t)nseg * sizeof(la_cu_seq) + 255) & ~(size_t)255;
    char *blk;
    la_status st = la__cu_alloc(ar, (void **)&blk, tab + (size_t)(nseg - 1) * KV * 4);
    if (st) return st;
    /* segment i: chunks cut[i] .. cut[i + 1] of the sequence (the last one
     * ends with it), written as a chunk table's sequence entries */
    int64_t cut[LA_CU_PIPE_MAX + 1], bound[LA_CU_PIPE_MAX + 1];
    const int64_t start = c->cu_seqlens ? c->cu_seqlens[0] : 0;
    const int64_t len = c->cu_seqlens ? c->cu_seqlens[1] - c->cu_seqlens[0] : c->T;
    for (int64_t i = 0; i <= nseg; i++) {
        cut[i] = nch * i / nseg;
        bound[i] = start + (i < nseg ? cut[i] * LA_CU_C : len);
    }
    if ((st = la__cu_put_table(us, c->op, (la_cu_seq *)blk, NULL, nseg, bound, 0))) return st;
    const la_cu_seq *dsegs = (const la_cu_seq *)blk;
    float *mid = (float *)(blk + tab);
    /* fork; from here on every path joins what it forked (a capture ends
     * in error where a forked stream is left unjoined) */
    LA_CU_TRY(c->op, cudaEventRecord(x->fork, us));
    const bool fhi = cudaStreamWaitEvent(x->hi, x->fork, 0) == cudaSuccess;
    const bool flo = fhi && cudaStreamWaitEvent(x->lo, x->fork, 0) == cudaSuccess;
    if (!flo) st = la__cu_error(cudaGetLastError(), c->op, "the pipeline's fork");
    for (int64_t i = 0; i < nseg && !st; i++) {
        la_cu_dc_args q = p;
        q.cb = cut[i];
        st = la__cu_delta_prep_tc(c, q, cut[i + 1] - cut[i], x->lo);
        if (!st && cudaEventRecord(x->prep[i], x->lo) != cudaSuccess)
            st = la__cu_error(cudaGetLastError(), c->op, "cudaEventRecord");
    }
    for (int64_t i = 0; i < nseg && !st; i++) {
        la_cu_dc_args q = p;
        q.seqs = dsegs + i;
        q.s0 = i ? mid + (size_t)(i - 1) * KV : p.s0;
        q.sT = i + 1 < nseg ? mid + (size_t)i * KV : p.sT;
        if (cudaStreamWaitEvent(x->hi, x->prep[i], 0) != cudaSuccess) {
            st = la__cu_error(cudaGetLastError(), c->op, "cudaStreamWaitEvent");
            break;
        }
        st = la__cu_delta_state_tc(c, q, x->hi);
        if (!st && cudaEventRecord(x->state[i], x->hi) != cudaSuccess)
            st = la__cu_error(cudaGetLastError(), c->op, "cudaEventRecord");
    }
    for (int64_t i = 0; i < nseg && !st && p.o; i++) {
        la_cu_dc_args q = p;
        q.cb = cut[i];
        if (cudaStreamWaitEvent(x->lo, x->state[i], 0) != cudaSuccess) {
            st = la__cu_error(cudaGetLastError(), c->op, "cudaStreamWaitEvent");
            break;
        }
        st = la__cu_delta_out_tc(c, q, cut[i + 1] - cut[i], x->lo);
    }
    /* join (also after a failed launch: nothing of this call stays on the
     * internal streams) */
    const bool joined = (!fhi || (cudaEventRecord(x->jhi, x->hi) == cudaSuccess &&
                                  cudaStreamWaitEvent(us, x->jhi, 0) == cudaSuccess)) &&
                        (!flo || (cudaEventRecord(x->jlo, x->lo) == cudaSuccess &&
                                  cudaStreamWaitEvent(us, x->jlo, 0) == cudaSuccess));
    if (!joined && !st) st = la__cu_error(cudaGetLastError(), c->op, "the pipeline's join");
    return st;
}

/* Runs prep and the state pass: p.U holds R afterwards, p.hst the state
 * before every chunk ([nchunks][HS][K][V]). p.hst, p.sT may be NULL.
 * carved: p's product buffers (W, U, Kd, bL, parts) are set already (a
 * forward that saves, cuda-saved7); otherwise they come from the arena.
 * *piped (where not NULL): set where the pipelined forward ran, the output
 * included (p.o set before the call). */
template <typename T>
static la_status dc_states(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb,
                           la_cu_dc_args &p, bool fwd_only = false, bool carved = false,
                           bool *piped = NULL) {
    la_status st;
    la__cu_dc_inputs(c, tb, p);
    /* tensor cores for 16-bit inputs: W, Kd as bf16 parts; the forward alone
     * does not keep their fp32 copies (the backward's kernels read those) */
    const int parts = la__cu_delta_tc_parts(sizeof(T));
    if (!carved) { /* one scratch block (the arena holds 16): la__cu_dc_layout */
        const la_cu_dc_layout l =
            la__cu_dc_layout(c, tb.nchunks, parts, !parts || !fwd_only, false, false);
        char *blk;
        if ((st = la__cu_alloc(ar, (void **)&blk, l.bytes))) return st;
        la__cu_dc_carve(c, l, blk, p);
    }
    if (!la__cu_delta_xk(c)) p.kf = NULL; /* Kd's parts (the layout has room for kf) */
    /* cuda-gdn24: a forward that does not save, whose state pass takes k and
     * Kd's row factor (not split over time), reads Kd's parts nowhere: prep
     * skips them (2 x 2 bytes per key and token) */
    if (fwd_only && p.kf && !la__cu_delta_split_p(c, tb.nchunks, la__cu_sm_count(c)) &&
        la__cu_delta_state_xk(c, p))
        p.Kh = p.Kl = NULL;
    if (piped) {
        const int64_t nseg = dc_pipe_segs(c, tb, parts, p.o != NULL);
        la_cu_pipe *x = nseg > 1 ? la__cu_pipe_get(c) : NULL;
        *piped = x != NULL;
        if (x) return dc_pipe(c, ar, tb, p, nseg, x);
    }
    if (tb.nchunks > 0 && c->dtype == LA_DTYPE_BF16 && la__cu_delta_tc_prep()) {
        if ((st = la__cu_delta_prep_tc(c, p, tb.nchunks, ar->stream))) return st;
    } else if (tb.nchunks > 0) {
        la_cu_dc_prep<T><<<dim3((unsigned)tb.nchunks, (unsigned)c->HS), 256, 0, ar->stream>>>(p);
        LA_CU_LAUNCHED(c->op);
    }
    if (parts) { /* cuda-split9: split over time where the grid is under a wave */
        int taken = 0;
        if ((st = la__cu_delta_state_split(c, ar, tb, p, &taken)) || taken) return st;
        return la__cu_delta_state_tc(c, p, ar->stream);
    }
    if (c->K <= 64) return dc_state_vb<4>(c, p, ar->stream);
    if (c->K <= 128) return dc_state_vb<8>(c, p, ar->stream);
    return dc_state_vb<16>(c, p, ar->stream);
}

template <typename T> static la_status dc_forward(const la__cu_call *c, la_cu_arena *ar) {
    la_cu_table tb = {};
    la_cu_dc_args p = {};
    la_status st;
    /* cuda-saved7: a forward that saves runs the backward's variant (fp32 W,
     * Kd and A^T too) into the saved object's block, hst included. Its
     * block is prepared first, from the host chunk count alone: a block that
     * must grow inside a capture is refused with nothing enqueued
     * (cuda-fix24; before, the chunk table's nodes were left in the graph). */
    const bool save = c->saved != NULL;
    if (save && ((st = la__cu_count_chunks(c, &tb.nchunks)) ||
                 (st = la__cu_delta_save_begin(c, tb, p))))
        return st;
    if ((st = la__cu_make_table(ar, c, &tb))) return st;
    p.sT = c->final_state;
    if (!save && (st = la__cu_alloc(ar, (void **)&p.hst,
                                    (size_t)tb.nchunks * c->HS * c->K * c->V * sizeof(float))))
        return st;
    p.o = c->o;
    bool piped = false;
    if ((st = dc_states<T>(c, ar, tb, p, !save, save, &piped)) || piped) return st;
    if (tb.nchunks > 0 && c->dtype == LA_DTYPE_BF16 && la__cu_delta_tc_out())
        return la__cu_delta_out_tc(c, p, tb.nchunks, ar->stream);
    if (tb.nchunks > 0) {
        la_cu_dc_out<T><<<dim3((unsigned)tb.nchunks, (unsigned)c->HS), 256, 0, ar->stream>>>(p);
        LA_CU_LAUNCHED(c->op);
    }
    return LA_OK;
}

la_status la__cu_delta_chunk_states(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb,
                                    float *hst, la_cu_dc_args *out, int want_A) {
    la_cu_dc_args p = {};
    p.hst = hst;
    la_status st = LA_OK;
    if (want_A && (st = la__cu_alloc(ar, (void **)&p.AT,
                                     (size_t)tb.nchunks * c->HS * LA_CU_C * LA_CU_C * 4)))
        return st;
    bool piped = false; /* (p.o NULL: prep and the state pass pipelined, no output) */
    LA_CU_DTYPE_SWITCH(c->dtype, T, st = dc_states<T>(c, ar, tb, p, false, false, &piped));
    if (out) *out = p;
    return st;
}

extern "C" la_status la__cu_delta_chunk_forward(const la__cu_call *c) {
    LA_CU_TRY(c->op, cudaSetDevice(c->device));
    la_cu_arena ar = {};
    ar.stream = (cudaStream_t)c->stream;
    ar.op = c->op;
    la_status st = LA_OK;
    LA_CU_DTYPE_SWITCH(c->dtype, T, st = dc_forward<T>(c, &ar));
    la__cu_free_all(&ar);
    if (!st && c->saved) la__saved_commit(c->saved); /* every launch issued */
    return st;
}
