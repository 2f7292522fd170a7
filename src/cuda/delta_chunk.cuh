/* Shared pieces of the chunkwise (WY) delta-rule kernels: their argument
 * block and the state pass that the recurrent backward also uses for its
 * per-chunk checkpoints. */
#ifndef LINATTN_CUDA_DELTA_CHUNK_CUH
#define LINATTN_CUDA_DELTA_CHUNK_CUH

#include "common.cuh"

struct la_cu_dc_args {
    const la_cu_chunk *chunks;
    const la_cu_seq *seqs;
    const void *q, *k, *v;
    void *o;
    const float *g, *beta, *s0;
    float *sT;
    float *W;   /* [tokens][HS][K]: A diag(beta b) K */
    float *U;   /* [tokens][HS][V]: A diag(beta) V, then R = U - W S (state pass) */
    float *Kd;  /* [tokens][HS][K]: e^{gam_L - gam_t} rk_t k_t, rk_t = 1/sqrt(|k_t|^2 + 1e-6)
                 * under use_qk_l2norm, 1 otherwise */
    float *bL;  /* [chunks][HS]: e^{gam_L} */
    float *hst; /* [chunks][HS][K][V]: the state before each chunk */
    float *AT;  /* [chunks][HS][64][64]: A^T (written by prep where not NULL) */
    int64_t H, HS, K, V;
    float scale;
    int use_l2;
    /* cuda-delta4: W and Kd as bf16 parts for the tensor-core state pass
     * ([tokens][HS][K8], K8 = K rounded up to 8, zero-padded; written by
     * prep where not NULL; Wl, Kl NULL: one part) */
    __nv_bfloat16 *Wh, *Wl, *Kh, *Kl;
    /* cuda-gdn24: [tokens][HS] e^{gam_L - gam_t} rk_t, Kd's row factor
     * (rk_t as for Kd; written by the bf16 prep where not NULL): the cluster
     * and one-CTA state passes then take k itself (exact in bf16) and this
     * factor on R's rows instead of Kd's two parts (la__cu_delta_xk) */
    float *kf;
    /* cuda-gdnf19: the chunk of the bf16 prep's and output kernel's first CTA
     * (a time segment of the pipelined forward; 0 otherwise) */
    int64_t cb;
};

/* rn[t] = 1 / sqrt(|x_t|^2 + 1e-6) for the chunk's rows (1 without l2);
 * NW warps, one row per warp at a time. */
template <typename T, int NW = 8>
__device__ __forceinline__ void la_cu_dc_rnorm(float *rn, const T *x, int64_t tok0, int L,
                                               int64_t H, int64_t hq, int64_t K, int use_l2) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int t = w; t < LA_CU_C; t += NW) {
        float a = 0.f;
        if (use_l2 && t < L) {
            const T *r = x + ((tok0 + t) * H + hq) * K;
            for (int64_t i = lane; i < K; i += 32) {
                const float y = ldf(r + i);
                a = fmaf(y, y, a);
            }
        }
        for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
        if (lane == 0) rn[t] = use_l2 ? 1.f / sqrtf(a + 1e-6f) : 1.f;
    }
}

/* A = (I + Lo)^{-1} for a chunk's strictly lower Lo (256 threads), then,
 * where at is not NULL, at = A^T for the backward (at[m][r] = A[r][m]).
 * By columns: column c, rows i ascending, A[i][c] = -sum_{c<=j<i} Lo[i][j]
 * A[j][c]; lane pp of the column's four sums (and owns) the rows j = pp
 * (mod 4), so it only reads what it wrote itself. Lo must be visible to
 * every thread before the call; A is on return. */
__device__ __forceinline__ void la_cu_dc_inverse(const float (*Lo)[LA_CU_C + 1],
                                                 float (*A)[LA_CU_C + 1], float *at) {
    const int t = threadIdx.x, c = t >> 2, pp = t & 3;
    for (int i = 0; i < LA_CU_C; i++) {
        float s = 0.f;
        for (int j = c + ((pp - c) & 3); j < i; j += 4) s = fmaf(Lo[i][j], A[j][c], s);
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        if ((i & 3) == pp) A[i][c] = i < c ? 0.f : (i == c ? 1.f : -s);
    }
    __syncthreads();
    if (at)
        for (int e = t; e < LA_CU_C * LA_CU_C; e += 256) at[e] = A[e & 63][e >> 6];
}

/* K rounded up to a multiple of 4 (the float4 reads of the tile rows). */
__host__ __device__ constexpr int la_cu_dc_k4(int64_t K) { return ((int)K + 3) & ~3; }

/* 4-byte asynchronous copy global -> shared (sm_80+); in = 0 writes a zero
 * (src is not read). Completed by la_cu_cp_commit + la_cu_cp_wait<N> and a
 * barrier. */
__device__ __forceinline__ void la_cu_cp4(float *dst, const float *src, bool in) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src),
                 "r"(in ? 4 : 0)
                 : "memory");
}
/* 16-byte asynchronous copy (dst, src 16-byte aligned); in = 0 zero-fills. */
__device__ __forceinline__ void la_cu_cp16(float *dst, const float *src, bool in) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
                 "r"(in ? 16 : 0)
                 : "memory");
}
/* Issues the copy of a [64][W4] fp32 tile into shared rows of SP floats:
 * element (r, c) from src[r * rs + c] where r < L and c < C, zero elsewhere.
 * vec: 16-byte copies (C, rs, src and SP multiples of 4 floats / 16 bytes). */
__device__ __forceinline__ void la_cu_dc_tile(float *dst, int SP, const float *src, int64_t rs,
                                              int L, int C, int W4, bool vec) {
    const int t = threadIdx.x;
    if (vec) {
        const int q4 = W4 >> 2;
        for (int e = t; e < LA_CU_C * q4; e += 256) {
            const int r = e / q4, c = (e - r * q4) << 2;
            const bool in = r < L && c < C;
            la_cu_cp16(dst + r * SP + c, in ? src + r * rs + c : src, in);
        }
    } else {
        for (int e = t; e < LA_CU_C * W4; e += 256) {
            const int r = e / W4, c = e - r * W4;
            const bool in = r < L && c < C;
            la_cu_cp4(dst + r * SP + c, in ? src + r * rs + c : src, in);
        }
    }
}
__device__ __forceinline__ void la_cu_cp_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void la_cu_cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
/* ---- the FFMA state pass and reverse pass (delta_chunk.cu, delta_chunk_bwd.cu):
 * a state tile X in shared ([K4][VB], the value block's VB columns, vc of
 * them real), 256 threads, thread (ri, cj) = (tid / CJ, tid % CJ) owning
 * columns cj + CJ w (w < TJ) of rows ri + RI u. */
/* X = src's [K][vc] block (row stride V), zero elsewhere and where src is NULL. */
__device__ __forceinline__ void la_cu_dc_state_in(float *X, const float *src, int64_t K, int K4,
                                                  int64_t V, int VB, int vc, int t) {
    for (int e = t; e < K4 * VB; e += 256) {
        const int i = e / VB, j = e % VB;
        X[e] = (src && i < K && j < vc) ? src[i * V + j] : 0.f;
    }
}
/* dst's [K][vc] block (row stride V) = X's. */
__device__ __forceinline__ void la_cu_dc_state_out(float *dst, const float *X, int64_t K, int64_t V,
                                                   int VB, int vc, int t) {
    for (int e = t; e < (int)K * VB; e += 256) {
        const int i = e / VB, j = e % VB;
        if (j < vc) dst[(int64_t)i * V + j] = X[e];
    }
}
/* acc[u][w] = sum over i < K4 of A[r][i] X[i][j], r = ri + RI u, j = cj + CJ w:
 * rows of a chunk tile A ([64][KP]) times the state tile, one fma chain per
 * element in i order. */
template <int RU, int TJ, int RI, int CJ>
__device__ __forceinline__ void la_cu_dc_rows_state(float (&acc)[RU][TJ], const float *A, int KP,
                                                    const float *X, int VB, int K4, int ri,
                                                    int cj) {
#pragma unroll
    for (int u = 0; u < RU; u++)
#pragma unroll
        for (int w = 0; w < TJ; w++) acc[u][w] = 0.f;
    for (int i = 0; i < K4; i += 4) {
        float4 av[RU];
#pragma unroll
        for (int u = 0; u < RU; u++) av[u] = *(const float4 *)&A[(ri + RI * u) * KP + i];
#pragma unroll
        for (int ii = 0; ii < 4; ii++) {
            float xv[TJ];
#pragma unroll
            for (int w = 0; w < TJ; w++) xv[w] = X[(i + ii) * VB + cj + CJ * w];
#pragma unroll
            for (int u = 0; u < RU; u++) {
                const float a = ii == 0   ? av[u].x
                                : ii == 1 ? av[u].y
                                : ii == 2 ? av[u].z
                                          : av[u].w;
#pragma unroll
                for (int w = 0; w < TJ; w++) acc[u][w] = fmaf(a, xv[w], acc[u][w]);
            }
        }
    }
}
/* X[i][j] = bl X[i][j] + acc[a][w] for the state rows i = ri + RI a < K4. */
template <int KA, int TJ, int RI, int CJ>
__device__ __forceinline__ void la_cu_dc_state_decay_add(float *X, const float (&acc)[KA][TJ],
                                                         float bl, int K4, int VB, int ri, int cj) {
#pragma unroll
    for (int a = 0; a < KA; a++) {
        const int i = ri + RI * a;
        if (i < K4)
#pragma unroll
            for (int w = 0; w < TJ; w++) {
                float *x = &X[i * VB + cj + CJ * w];
                *x = fmaf(bl, *x, acc[a][w]);
            }
    }
}
/* The tensor-core delta kernels' copies of 16-bit tiles: `bytes` (0..16, or
 * 0..4) are read from src into dst, the rest of the 16 (4) bytes zero-filled
 * (bytes = 0 reads nothing). */
__device__ __forceinline__ void la_cu_cpb16(void *dst, const void *src, int bytes) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void la_cu_cpb4(void *dst, const void *src, int bytes) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(bytes)
                 : "memory");
}
/* (x, y) as a bf16 pair hi (x in the low half) and the pair of remainders
 * lo = (x, y) - hi rounded to bf16: the two parts of an fp32 mma operand. */
__device__ __forceinline__ void la_cu_bf16_parts(float x, float y, uint32_t &hi, uint32_t &lo) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    const __nv_bfloat162 l =
        __floats2bfloat162_rn(x - __bfloat162float(h.x), y - __bfloat162float(h.y));
    hi = *(const uint32_t *)&h;
    lo = *(const uint32_t *)&l;
}
/* The largest dynamic shared memory a block may opt in to on c's device. */
int la__cu_smem_optin(const la__cu_call *c);
/* The number of SMs of c's device; the value columns per CTA of the state
 * and reverse passes (32, 16 or 8; smem32: shared memory at 32). */
int64_t la__cu_sm_count(const la__cu_call *c);
int la__cu_delta_state_vb(const la__cu_call *c, int64_t nsm, size_t smem32);
/* Whether the chunk form's backward fits this device (its reverse pass
 * needs 3 [64][K] tiles in shared memory); otherwise the recurrent one runs. */
int la__cu_delta_chunk_bwd_fits(const la__cu_call *c);

/* Prep and state pass of the chunk form on c's inputs (any dtype): writes
 * the state before every chunk into hst ([tb.nchunks][HS][K][V], fp32; may
 * be NULL), scratch from ar; *out (may be NULL) gets the filled arguments
 * (W, R in U, ks, bL) for the backward. */
la_status la__cu_delta_chunk_states(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb,
                                    float *hst, la_cu_dc_args *out, int want_A = 0);
/* The chunk form's state gradients: dhst[c] = dL/d(state after chunk c)
 * ([chunks][HS][K][V]), c->ds0 written; runs la__cu_delta_chunk_states
 * (writing hst) first. Where pout is not NULL it gets the forward's
 * arguments (with A^T) and *dR the gradient of R ([tokens][HS][V], fp32). */
la_status la__cu_delta_chunk_dstates(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb,
                                     float *hst, float *dhst, la_cu_dc_args *pout = NULL,
                                     float **dR = NULL);
/* The chunkwise token gradients (delta_chunk_grad.cu) from the outputs of
 * la__cu_delta_chunk_dstates: dv written; per value head dq, dk
 * ([tokens][HS][K]), dbeta, dg ([tokens][HS]) for delta.cu's reduce. */
int la__cu_delta_chunk_grads_fits(const la__cu_call *c);
la_status la__cu_delta_chunk_grads(const la__cu_call *c, cudaStream_t stream,
                                   const la_cu_table &tb, const la_cu_dc_args &p, float *dR,
                                   const float *hst, const float *dhst, float *dqp, float *dkp,
                                   float *dbp, float *dgp);

/* cuda-delta4: the state pass on tensor cores (delta_state_tc.cu) for
 * 16-bit inputs, from p.Wh, p.Kh (and p.Wl, p.Kl: two parts); and which
 * path a call takes: 0 the fp32 FFMA kernels, else the number of bf16
 * parts per operand (LINATTN_CUDA_TC, LINATTN_CUDA_DELTA_TC_PARTS). */
la_status la__cu_delta_state_tc(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream);
int la__cu_delta_tc_parts(size_t elem);
/* cuda-state7: the state pass split over the keys of a 2-CTA cluster
 * (delta_state_cl.cu); returns 0 (nothing launched) where it does not apply
 * or LINATTN_CUDA_DELTA_STATE=old, else 1 with the launch's status in *st. */
int la__cu_delta_state_cl(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                          la_status *st);
/* Whether la__cu_delta_state_cl takes call c (launches nothing). */
int la__cu_delta_state_cl_takes(const la__cu_call *c);
/* Whether la__cu_delta_state_tc (the cluster kernel or the one-CTA kernel
 * outside the time split) takes exact keys and Kd's row factor for call c
 * (p.kf set; Kd's parts not read; cuda-gdn24). */
int la__cu_delta_state_xk(const la__cu_call *c, const la_cu_dc_args &p);
/* ---- cuda-split9: the state pass split over time (delta_state_split.cu) --
 * la__cu_delta_state_split runs it where la__cu_delta_split_p gives P >= 2
 * segments per sequence (*taken = 1), else launches nothing (*taken = 0);
 * la__cu_delta_state_tc_seg launches the one-CTA tensor-core kernel over
 * nseq entries of p.seqs: mode 0 the full pass, 1 the local pass (end
 * states and transitions into p.sT); occ 2: two CTAs per SM (K <= 128). */
int la__cu_delta_split_p(const la__cu_call *c, int64_t nchunks, int64_t nsm);
la_status la__cu_delta_state_split(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb,
                                   const la_cu_dc_args &p, int *taken);
la_status la__cu_delta_state_tc_seg(const la__cu_call *c, const la_cu_dc_args &p, int64_t nseq,
                                    int mode, int occ, cudaStream_t stream);
/* cuda-delta4: the output kernel on tensor cores for bf16 inputs
 * (delta_out_tc.cu), and whether it runs (LINATTN_CUDA_TC,
 * LINATTN_CUDA_DELTA_TC_OUT). */
la_status la__cu_delta_out_tc(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                              cudaStream_t stream);
int la__cu_delta_tc_out(void);
/* cuda-delta4: prep on tensor cores for bf16 inputs (delta_prep_blk.cu), and
 * whether it runs (LINATTN_CUDA_TC, LINATTN_CUDA_DELTA_TC_PREP). */
la_status la__cu_delta_prep_tc(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                               cudaStream_t stream);
int la__cu_delta_tc_prep(void);

/* cuda-delta7: the backward's reverse pass on tensor cores for bf16 inputs
 * (delta_rev_tc.cu), from p's bf16 parts of W, Kd, q as bf16 in Qb
 * ([tokens][H][K8]) and dOq = qsc dO, dRo = P^T dO (overwritten by dR);
 * and whether it runs (LINATTN_CUDA_TC, LINATTN_CUDA_DELTA_TC_REV). */
la_status la__cu_delta_rev_tc(const la__cu_call *c, const la_cu_dc_args &p, cudaStream_t stream,
                              const void *Qb, const float *dOq, float *dRo, float *dhst);
int la__cu_delta_tc_rev(const la__cu_call *c, const la_cu_dc_args &p);

/* ---- cuda-saved7: la_saved for the chunk form (delta_saved.cu) -----------
 * Where prep and the state pass keep their products: W, R (in U), Kd, bL,
 * A^T, the bf16 parts Wh, Kh (, Wl, Kl) and the per-chunk states hst, cut
 * from one block at 256-byte offsets (absent: SIZE_MAX). The same layout
 * serves the arena (dc_states of a call that does not save), the saved
 * object's device block (a forward that saves: the backward's variant, fp32
 * W and Kd, A^T and hst included) and the backward reading that block. */
struct la_cu_dc_layout {
    size_t W, U, Kd, bL, AT, Wh, hst, kf; /* byte offsets */
    size_t bytes;
    int parts;
};
la_cu_dc_layout la__cu_dc_layout(const la__cu_call *c, int64_t nchunks, int parts, bool fp32wk,
                                 bool want_A, bool want_hst);
/* Sets p's pointers of the products present in l (others untouched). */
void la__cu_dc_carve(const la__cu_call *c, const la_cu_dc_layout &l, char *base, la_cu_dc_args &p);
/* p's inputs (tables, tensors, sizes) for prep and the state pass. */
void la__cu_dc_inputs(const la__cu_call *c, const la_cu_table &tb, la_cu_dc_args &p);
/* A forward with c->saved: grows and marks empty the saved object's device
 * block for c->saved_key (la__saved_prepare_dev) and carves p from it; the
 * caller commits (la__saved_commit) once every launch was issued. */
la_status la__cu_delta_save_begin(const la__cu_call *c, const la_cu_table &tb, la_cu_dc_args &p);
/* A backward with c->saved_dev: p (inputs and products) from the saved
 * block, true; false (p untouched) when there is none. */
bool la__cu_delta_saved_args(const la__cu_call *c, const la_cu_table &tb, la_cu_dc_args &p);
/* Whether the state pass takes exact keys and Kd's row factor (p.kf) for
 * this call: bf16 through the tensor-core prep, two parts, unless
 * LINATTN_CUDA_DELTA_XK=0 (read at every call). */
int la__cu_delta_xk(const la__cu_call *c);
/* The saved per-chunk states ([max(nchunks, 1)][HS][K][V]), NULL if none. */
float *la__cu_delta_saved_hst(const la__cu_call *c, int64_t nchunks);

/* cuda-dout9: the backward's P^T dO (and dOf, bf16 q) on tensor cores for
 * bf16 inputs (delta_pto_tc.cu), for the tensor-core reverse pass; whether
 * it runs (LINATTN_CUDA_DELTA_PTO = old keeps la_cu_dcb_pto). */
int la__cu_delta_pto_tc_on(const la__cu_call *c, int64_t nchunks);
la_status la__cu_delta_pto_tc(const la__cu_call *c, const la_cu_dc_args &p, int64_t nchunks,
                              cudaStream_t stream, float *dRo, float *dOf, __nv_bfloat16 *Qb);

#endif
