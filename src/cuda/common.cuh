/* Pieces every CUDA kernel file shares: the element types, error handling,
 * per-call device scratch, the chunk table, the log-gate prefix sums and a
 * 64x64 block product (fp32 FFMA, fixed summation order). */
#ifndef LINATTN_CUDA_COMMON_CUH
#define LINATTN_CUDA_COMMON_CUH

#include "cuda_backend.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>

/* ---- element types: loads widen to fp32, stores round to nearest ------- */
template <typename T> __device__ __forceinline__ float ldf(const T *p);
template <> __device__ __forceinline__ float ldf<float>(const float *p) { return *p; }
template <> __device__ __forceinline__ float ldf<__nv_bfloat16>(const __nv_bfloat16 *p) {
    return __bfloat162float(*p);
}
template <> __device__ __forceinline__ float ldf<__half>(const __half *p) { return __half2float(*p); }
template <typename T> __device__ __forceinline__ void stf(T *p, float x);
template <> __device__ __forceinline__ void stf<float>(float *p, float x) { *p = x; }
template <> __device__ __forceinline__ void stf<__nv_bfloat16>(__nv_bfloat16 *p, float x) {
    *p = __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ void stf<__half>(__half *p, float x) { *p = __float2half_rn(x); }

/* Calls F.template operator()<T>() for the element type of dtype. */
#define LA_CU_DTYPE_SWITCH(dtype, T, ...)                                                    \
    switch (dtype) {                                                                       \
    case LA_DTYPE_BF16: {                                                                  \
        typedef __nv_bfloat16 T;                                                           \
        __VA_ARGS__;                                                                       \
    } break;                                                                               \
    case LA_DTYPE_F16: {                                                                   \
        typedef __half T;                                                                  \
        __VA_ARGS__;                                                                       \
    } break;                                                                               \
    default: {                                                                             \
        typedef float T;                                                                   \
        __VA_ARGS__;                                                                       \
    } break;                                                                               \
    }

/* ---- feature maps (kernel linear attention) ---------------------------- */
__device__ __forceinline__ float la_phi(int fm, float x) {
    if (fm == LA_FEATURE_ELU1) return x > 0.f ? x + 1.f : expf(x);
    if (fm == LA_FEATURE_RELU) return x > 0.f ? x : 0.f;
    return x;
}
__device__ __forceinline__ float la_dphi(int fm, float x) {
    if (fm == LA_FEATURE_ELU1) return x > 0.f ? 1.f : expf(x);
    if (fm == LA_FEATURE_RELU) return x > 0.f ? 1.f : 0.f;
    return 1.f;
}

/* ---- use_qk_l2norm ------------------------------------------------------ */
/* One warp: *rq = 1 / sqrt(|qs|^2 + 1e-6), *rk = the same of ks (K floats in
 * shared memory; lane = this thread's lane; lane 0 writes). */
__device__ __forceinline__ void la_cu_l2_inv_pair(const float *qs, const float *ks, int64_t K,
                                                  int lane, float *rq, float *rk) {
    float a = 0.f, b = 0.f;
    for (int i = lane; i < K; i += 32) {
        a = fmaf(qs[i], qs[i], a);
        b = fmaf(ks[i], ks[i], b);
    }
    for (int off = 16; off > 0; off >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, off);
        b += __shfl_xor_sync(0xffffffffu, b, off);
    }
    if (lane == 0) {
        *rq = 1.f / sqrtf(a + 1e-6f);
        *rk = 1.f / sqrtf(b + 1e-6f);
    }
}

/* ---- errors -------------------------------------------------------------- */
/* la_status for a CUDA error, with the call site and CUDA's message. */
la_status la__cu_error(cudaError_t e, const char *op, const char *what);
#define LA_CU_TRY(op, call)                                                                  \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) return la__cu_error(e_, op, #call);                         \
    } while (0)
/* After a launch: the launch's own error (bad configuration), not a sync. */
#define LA_CU_LAUNCHED(op) LA_CU_TRY(op, cudaGetLastError())

/* ---- chunk table ------------------------------------------------------------
 * Sequences cut into chunks of LA_CU_C tokens. seqs[n]: first token, length,
 * index of its first chunk; chunks[c]: first token, length, sequence.
 * Written on the device by a kernel whose parameters carry the sequence
 * bounds (cu_seqlens is host memory): no host buffer is copied, so a call
 * is legal inside a CUDA graph capture and reads no host memory once it
 * has returned (cuda-graph24, runtime.cu). */
#define LA_CU_C 64
/* The chunks of a sequence of len tokens (the last one may be short). */
__host__ __device__ inline int64_t la_cu_nchunks(int64_t len) {
    return (len + LA_CU_C - 1) / LA_CU_C;
}
struct la_cu_seq {
    int64_t start, len;
    int32_t chunk0, nch;
};
struct la_cu_chunk {
    int64_t tok0;
    int32_t len, seq, idx; /* idx: chunk number inside its sequence */
    int32_t pad;
};

/* Per-call device memory: stream-ordered (cudaMallocAsync), freed on the
 * same stream at the end of the call (no device synchronisation). */
struct la_cu_arena {
    void *blocks[16];
    int n;
    cudaStream_t stream;
    const char *op;
};
la_status la__cu_alloc(la_cu_arena *a, void **p, size_t bytes);
void la__cu_free_all(la_cu_arena *a);

struct la_cu_table {
    la_cu_seq *seqs;     /* device [N] */
    la_cu_chunk *chunks; /* device [nchunks] */
    int64_t nchunks;
};
/* The call's chunk count (host arithmetic on T / cu_seqlens; an error past
 * INT32_MAX sequences or chunks). */
la_status la__cu_count_chunks(const la__cu_call *c, int64_t *nchunks);
la_status la__cu_make_table(la_cu_arena *a, const la__cu_call *c, la_cu_table *t);
/* Writes seqs[0, n) and (chunks not NULL) their chunks on `stream`: sequence
 * i is [b[i], b[i + 1]) (b: n + 1 host offsets, read before the call
 * returns), or i T .. (i + 1) T where b is NULL; chunk numbers from 0. */
la_status la__cu_put_table(cudaStream_t stream, const char *op, la_cu_seq *seqs,
                           la_cu_chunk *chunks, int64_t n, const int64_t *b, int64_t T);

/* ---- gates of one chunk -------------------------------------------------------
 * G[i] = sum_{s<=i} (g_s + g_gamma), in double (differences of large sums such
 * as -1e4 + small stay exact). Written by thread 0; the caller syncs. */
__device__ __forceinline__ void la_cu_chunk_gates(double *G, const float *g, float gam,
                                                  int64_t tok0, int L, int64_t H, int h) {
    if (threadIdx.x == 0) {
        double acc = 0;
        for (int i = 0; i < L; i++) {
            acc += (double)((g ? g[(tok0 + i) * H + h] : 0.f) + gam);
            G[i] = acc;
        }
    }
}
/* exp of a non-positive double difference, as float (0 below -100). */
__device__ __forceinline__ float la_cu_expd(double x) { return x < -100.0 ? 0.f : expf((float)x); }

/* ---- block product --------------------------------------------------------------
 * acc[a][b] (row ty + 16a, column tx + 16b of a 64x64 tile; 256 threads,
 * ty = tid/16, tx = tid%16) += sum_{r<R} A(row, r) B(r, col), r ascending.
 * fa(m, r) and fb(r, n) return 0 outside their operands. */
#define LA_CU_TR 16
struct la_cu_gemm_smem {
    float a[LA_CU_TR][64 + 1];
    float b[LA_CU_TR][64 + 4];
};
/* BT: fb(r, n) reads memory laid out [n][r] (a transposed operand such as
 * k^T), so consecutive threads take consecutive r (coalesced); otherwise
 * consecutive n. Either way the same products are summed in the same order. */
template <bool BT = false, class FA, class FB>
__device__ __forceinline__ void la_cu_gemm(float (&acc)[4][4], int R, FA fa, FB fb,
                                           la_cu_gemm_smem &sm) {
    const int t = threadIdx.x, ty = t >> 4, tx = t & 15;
    for (int r0 = 0; r0 < R; r0 += LA_CU_TR) {
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int e = t + 256 * u, m = e >> 4, r = e & 15;
            sm.a[r][m] = (r0 + r < R) ? fa(m, r0 + r) : 0.f;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int e = t + 256 * u;
            const int r = BT ? (e & 15) : (e >> 6), n = BT ? (e >> 4) : (e & 63);
            sm.b[r][n] = (r0 + r < R) ? fb(r0 + r, n) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < LA_CU_TR; r++) {
            float av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                av[i] = sm.a[r][ty + 16 * i];
                bv[i] = sm.b[r][tx + 16 * i];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
}
__device__ __forceinline__ void la_cu_zero(float (&acc)[4][4]) {
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
}

/* cuda-gdnf19: the pipelined delta-rule forward's internal streams and
 * events, per context (runtime.cu): la__cu_pipe_get makes them on first use
 * on the call's (current) device, NULL where that fails (the call then
 * takes the unsplit path, and so do the context's later calls). */
#define LA_CU_PIPE_MAX 32
struct la_cu_pipe {
    int device, ok; /* ok: 1 made, -1 failed */
    cudaStream_t hi, lo;
    cudaEvent_t fork, prep[LA_CU_PIPE_MAX], state[LA_CU_PIPE_MAX], jhi, jlo;
};
la_cu_pipe *la__cu_pipe_get(const la__cu_call *c);

#endif
