/* The decoding step on the GPU (la_state_step): one token for every
 * (sequence, state head), state fp32 in device memory updated in place.
 * One CTA of 256 threads per (sequence, state head, 32 value columns): a
 * warp reads 32 consecutive floats of a state row (128-byte transactions),
 * the 8 warps split the K rows, each thread keeps its up to 32 entries in
 * registers between the recall and the update (one read and one write of S).
 * Sums over rows: per thread in row order, then the 8 warps in order (no
 * atomics). No allocation and no synchronisation: capturable in a graph. */
#include "common.cuh"

#include <stdlib.h>

#define STEP_KS 8
#define STEP_RMAX 32 /* K <= 256 */
#define STEP_THREADS (32 * STEP_KS)

__device__ __forceinline__ float red_sum(const float (*red)[32], int jj) {
    float x = red[0][jj];
#pragma unroll
    for (int w = 1; w < STEP_KS; w++) x += red[w][jj];
    return x;
}

struct step_args {
    float *S, *z;
    void *o;
    const void *q, *k, *v;
    const float *g, *g_gamma, *beta;
    int64_t H, HS, K, V;
    float scale, eps;
    int op, fm, normalize, use_l2;
};

/* Both kernels' prologue (NT threads, all take part): q, k of the task into
 * qs, ks (l2-normalised when asked, feature-mapped or q scaled), the decay a
 * (per key in gk for GLA), beta, and for normalised linear attention zrow and
 * den = qf.(z + kf) + eps in *den_s. Ends with a barrier. */
template <typename T, int NT>
__device__ __forceinline__ void step_prologue(const step_args &p, int64_t task, float *qs,
                                              float *ks, float *gk, float *den_s, float *rq_s,
                                              float *rk_s, float &a, float &beta, float *&zrow) {
    const int t = threadIdx.x, jj = t & 31, w = t >> 5;
    const int64_t K = p.K, HS = p.HS, H = p.H;
    const int64_t n = task / HS, hs = task % HS, hq = hs / (HS / H);
    const T *q = (const T *)p.q + (n * H + hq) * K;
    const T *k = (const T *)p.k + (n * H + hq) * K;
    for (int i = t; i < K; i += NT) {
        qs[i] = ldf(q + i);
        ks[i] = ldf(k + i);
    }
    __syncthreads();
    const bool lin = p.op == LA_OP_LINEAR_ATTN;
    const bool delta = p.op == LA_OP_DELTA_RULE || p.op == LA_OP_GATED_DELTA_RULE;
    if (delta && p.use_l2) {
        if (w == 0) la_cu_l2_inv_pair(qs, ks, K, jj, rq_s, rk_s);
        __syncthreads();
        for (int i = t; i < K; i += NT) {
            qs[i] *= *rq_s;
            ks[i] *= *rk_s;
        }
    }
    if (lin)
        for (int i = t; i < K; i += NT) {
            qs[i] = la_phi(p.fm, qs[i]) * (p.normalize ? 1.f : p.scale);
            ks[i] = la_phi(p.fm, ks[i]);
        }
    else
        for (int i = t; i < K; i += NT) qs[i] *= p.scale;
    /* decay: per row for GLA, else one scalar */
    a = 1.f;
    if (p.op == LA_OP_SIMPLE_GLA)
        a = expf((p.g ? p.g[task] : 0.f) + (p.g_gamma ? p.g_gamma[hs] : 0.f));
    else if (p.op == LA_OP_GATED_DELTA_RULE)
        a = expf(p.g[task]);
    if (p.op == LA_OP_GLA)
        for (int i = t; i < K; i += NT) gk[i] = expf(p.g[(n * H + hs) * K + i]);
    beta = delta ? p.beta[task] : 0.f;
    zrow = (lin && p.normalize) ? p.z + (n * H + hs) * K : NULL;
    __syncthreads();
    if (zrow) {
        /* den = qf.(z + kf) + eps, z written back once every block has read it */
        if (w == 0) {
            float d = 0.f;
            for (int i = jj; i < K; i += 32) d = fmaf(qs[i], zrow[i] + ks[i], d);
            for (int off = 16; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
            if (jj == 0) *den_s = d + p.eps;
        }
        __syncthreads();
    }
}

template <typename T>
__global__ void __launch_bounds__(STEP_THREADS) la_cu_step_kernel(step_args p) {
    __shared__ float qs[256], ks[256], gk[256];
    __shared__ float red[STEP_KS][32];
    __shared__ float den_s, rq_s, rk_s;
    const int t = threadIdx.x, jj = t & 31, w = t >> 5;
    const int64_t K = p.K, V = p.V, task = blockIdx.x;
    float a, beta, *zrow;
    step_prologue<T, STEP_THREADS>(p, task, qs, ks, gk, &den_s, &rq_s, &rk_s, a, beta, zrow);
    const bool delta = p.op == LA_OP_DELTA_RULE || p.op == LA_OP_GATED_DELTA_RULE;
    const int64_t base = task * K * V;
    const T *vv = (const T *)p.v + task * V;
    T *o = (T *)p.o + task * V;
    for (int64_t vb = blockIdx.y; vb * 32 < V; vb += gridDim.y) {
        const int64_t j = vb * 32 + jj;
        const bool ok = j < V;
        float *S = p.S + base + j;
        float st[STEP_RMAX];
#pragma unroll
        for (int r = 0; r < STEP_RMAX; r++) {
            const int64_t i = w + STEP_KS * r;
            st[r] = (ok && i < K) ? S[i * V] : 0.f;
        }
        const float vj = ok ? ldf(vv + j) : 0.f;
        float u = vj;
        if (delta) {
            float part = 0.f;
#pragma unroll
            for (int r = 0; r < STEP_RMAX; r++) {
                const int64_t i = w + STEP_KS * r;
                if (i < K) part = fmaf(ks[i], st[r], part);
            }
            red[w][jj] = part;
            __syncthreads();
            const float rj = red_sum(red, jj);
            u = beta * (vj - a * rj);
            __syncthreads();
        }
        float part = 0.f;
#pragma unroll
        for (int r = 0; r < STEP_RMAX; r++) {
            const int64_t i = w + STEP_KS * r;
            if (i < K) {
                const float ai = p.op == LA_OP_GLA ? gk[i] : a;
                const float s = fmaf(ks[i], u, ai * st[r]);
                if (ok) S[i * V] = s;
                part = fmaf(qs[i], s, part);
            }
        }
        red[w][jj] = part;
        __syncthreads();
        if (w == 0 && ok) {
            float oj = red_sum(red, jj);
            if (zrow) oj = oj / den_s;
            stf(o + j, oj);
        }
        __syncthreads();
    }
    if (zrow && blockIdx.y == 0)
        for (int i = t; i < K; i += STEP_THREADS) zrow[i] += ks[i];
}

/* The bandwidth path (V % 4 == 0): a thread owns 4 adjacent columns (16-byte
 * loads and stores) of every RG-th row; a CTA covers 4 CQ columns and all K
 * rows (RG = 256 / CQ row groups, RMAX = ceil(K / RG) float4 per thread).
 * The state loads are issued first, before q, k and the gates are read, so
 * their latency overlaps the prologue. CQ = 32 (128 columns) for large
 * batches; narrower tiles (CQ = 16, 8, 4) give small batches more CTAs.
 * Same arithmetic per element as above; row sums: per thread in row order,
 * then the row groups of a warp by a fixed shuffle tree, then the 8 warps in
 * order (no atomics, the same order every run). */
template <int CQ> __device__ __forceinline__ float4 step_warp_rows(float4 x) {
#pragma unroll
    for (int off = CQ; off < 32; off <<= 1) {
        x.x += __shfl_xor_sync(0xffffffffu, x.x, off);
        x.y += __shfl_xor_sync(0xffffffffu, x.y, off);
        x.z += __shfl_xor_sync(0xffffffffu, x.z, off);
        x.w += __shfl_xor_sync(0xffffffffu, x.w, off);
    }
    return x;
}
__device__ __forceinline__ float4 f4add(float4 a, float4 b) {
    return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

/* CS: cache-streaming loads and stores of the state (ld/st.global.cs: read
 * once, written once, evict first), used for the large-batch tile. */
template <bool CS> __device__ __forceinline__ float4 step_ld(const float4 *p) {
    return CS ? __ldcs(p) : *p;
}
template <bool CS> __device__ __forceinline__ void step_st(float4 *p, float4 x) {
    if (CS)
        __stcs(p, x);
    else
        *p = x;
}

template <typename T, int CQ, int RMAX, bool CS>
__global__ void __launch_bounds__(256, RMAX <= 8 ? 3 : (RMAX == 16 ? 2 : 1))
    la_cu_step_vec(step_args p) {
    constexpr int RG = 256 / CQ;
    __shared__ float qs[256], ks[256], gk[256];
    __shared__ float4 red[8][CQ];
    __shared__ float den_s, rq_s, rk_s;
    const int t = threadIdx.x, cq = t % CQ, rg = t / CQ, lane = t & 31, wp = t >> 5;
    const int64_t K = p.K, V = p.V, task = blockIdx.x;
    /* 32-bit offsets inside one head's state (K V <= 2^18): fewer live
     * registers than 64-bit addresses per row */
    const int c4 = (int)blockIdx.y * CQ + cq, V4 = (int)(V / 4), Ki = (int)K;
    const int64_t j0 = (int64_t)c4 * 4;
    const bool ok = j0 < V;
    float4 *S = (float4 *)(p.S + task * K * V) + c4;
    float4 st[RMAX];
#pragma unroll
    for (int r = 0; r < RMAX; r++) {
        const int i = rg + RG * r;
        st[r] = (ok && i < Ki) ? step_ld<CS>(S + i * V4) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
    float a, beta, *zrow;
    step_prologue<T, 256>(p, task, qs, ks, gk, &den_s, &rq_s, &rk_s, a, beta, zrow);
    const bool delta = p.op == LA_OP_DELTA_RULE || p.op == LA_OP_GATED_DELTA_RULE;
    const T *vv = (const T *)p.v + task * V + j0;
    float4 u = ok ? make_float4(ldf(vv), ldf(vv + 1), ldf(vv + 2), ldf(vv + 3))
                  : make_float4(0.f, 0.f, 0.f, 0.f);
    if (delta) {
        float4 part = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int r = 0; r < RMAX; r++) {
            const int i = rg + RG * r;
            if (i < Ki) {
                const float ki = ks[i];
                part.x = fmaf(ki, st[r].x, part.x);
                part.y = fmaf(ki, st[r].y, part.y);
                part.z = fmaf(ki, st[r].z, part.z);
                part.w = fmaf(ki, st[r].w, part.w);
            }
        }
        part = step_warp_rows<CQ>(part);
        if (lane < CQ) red[wp][cq] = part;
        __syncthreads();
        float4 rr = red[0][cq];
#pragma unroll
        for (int w = 1; w < 8; w++) rr = f4add(rr, red[w][cq]);
        u.x = beta * (u.x - a * rr.x), u.y = beta * (u.y - a * rr.y);
        u.z = beta * (u.z - a * rr.z), u.w = beta * (u.w - a * rr.w);
        __syncthreads();
    }
    float4 part = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int r = 0; r < RMAX; r++) {
        const int i = rg + RG * r;
        if (i < Ki) {
            const float ai = p.op == LA_OP_GLA ? gk[i] : a, ki = ks[i], qi = qs[i];
            float4 x;
            x.x = fmaf(ki, u.x, ai * st[r].x);
            x.y = fmaf(ki, u.y, ai * st[r].y);
            x.z = fmaf(ki, u.z, ai * st[r].z);
            x.w = fmaf(ki, u.w, ai * st[r].w);
            if (ok) step_st<CS>(S + i * V4, x);
            part.x = fmaf(qi, x.x, part.x);
            part.y = fmaf(qi, x.y, part.y);
            part.z = fmaf(qi, x.z, part.z);
            part.w = fmaf(qi, x.w, part.w);
        }
    }
    part = step_warp_rows<CQ>(part);
    if (lane < CQ) red[wp][cq] = part;
    __syncthreads();
    if (t < CQ && ok) {
        float4 oo = red[0][cq];
#pragma unroll
        for (int w = 1; w < 8; w++) oo = f4add(oo, red[w][cq]);
        if (zrow) oo.x /= den_s, oo.y /= den_s, oo.z /= den_s, oo.w /= den_s;
        T *o = (T *)p.o + task * V + j0;
        stf(o, oo.x), stf(o + 1, oo.y), stf(o + 2, oo.z), stf(o + 3, oo.w);
    }
    if (zrow && blockIdx.y == 0) {
        __syncthreads();
        for (int i = t; i < K; i += 256) zrow[i] += ks[i];
    }
}

/* Multiprocessors of a device (cached; 132 if the query fails). */
static int step_sms(int device) {
    static int cache[64];
    if (device < 0 || device >= 64) return 132;
    if (!cache[device]) {
        int n = 0;
        if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
            n <= 0) {
            cudaGetLastError();
            n = 132;
        }
        cache[device] = n;
    }
    return cache[device];
}

/* Columns per CTA of the bandwidth path: 128 when that gives at least two
 * CTAs per multiprocessor, else the widest narrower tile that fills the
 * multiprocessors once (down to 16). LINATTN_CUDA_STEP_COLS = 128, 64, 32 or
 * 16 forces one (a benchmarking knob, read once). The normalised op keeps
 * one CTA per head (z is shared by its columns), so 128 only. */
static int step_cols(const la__cu_call *c, int normalize) {
    static int forced = -1;
    if (forced < 0) {
        const char *e = getenv("LINATTN_CUDA_STEP_COLS");
        const int f = e ? atoi(e) : 0;
        forced = (f == 128 || f == 64 || f == 32 || f == 16) ? f : 0;
    }
    if (normalize) return 128;
    if (forced) return forced;
    const int64_t heads = c->N * c->HS, sms = step_sms(c->device);
    int cols = 128;
    while (cols > 16 && heads * ((c->V + cols - 1) / cols) < (cols == 128 ? 2 * sms : sms))
        cols /= 2;
    return cols;
}

/* LINATTN_CUDA_STEP_CS = 0 turns the streaming loads and stores of the
 * 128-column tile off (a benchmarking knob, read once). */
static bool step_cs(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("LINATTN_CUDA_STEP_CS");
        on = !(e && e[0] == '0');
    }
    return on != 0;
}

template <typename T, int CQ>
static void step_vec_launch(const la__cu_call *c, const step_args &p, cudaStream_t s) {
    const dim3 grid((unsigned)(c->N * c->HS), (unsigned)((c->V + 4 * CQ - 1) / (4 * CQ)));
    constexpr int RG = 256 / CQ;
    constexpr int R1 = (128 + RG - 1) / RG, R2 = (256 + RG - 1) / RG;
    if (CQ == 32 && step_cs()) {
        if (c->K <= 128)
            la_cu_step_vec<T, CQ, R1, CQ == 32><<<grid, 256, 0, s>>>(p);
        else
            la_cu_step_vec<T, CQ, R2, CQ == 32><<<grid, 256, 0, s>>>(p);
    } else if (c->K <= 128) {
        la_cu_step_vec<T, CQ, R1, false><<<grid, 256, 0, s>>>(p);
    } else {
        la_cu_step_vec<T, CQ, R2, false><<<grid, 256, 0, s>>>(p);
    }
}

extern "C" la_status la__cu_step(const la__cu_call *c, const la_decoder_config *cfg, float *state,
                                 float *norm) {
    int cur = -1; /* cudaSetDevice only when needed: this path is latency-bound at small N */
    if (cudaGetDevice(&cur) != cudaSuccess || cur != c->device)
        LA_CU_TRY(c->op, cudaSetDevice(c->device));
    step_args p = {};
    p.S = state, p.z = norm, p.o = c->o, p.q = c->q, p.k = c->k, p.v = c->v;
    p.g = c->g, p.g_gamma = c->g_gamma, p.beta = c->beta;
    p.H = c->H, p.HS = c->HS, p.K = c->K, p.V = c->V;
    p.scale = c->scale, p.eps = cfg->eps;
    p.op = (int)cfg->op, p.fm = (int)cfg->feature_map;
    p.normalize = cfg->op == LA_OP_LINEAR_ATTN && cfg->normalize;
    p.use_l2 = cfg->use_qk_l2norm != 0;
    cudaStream_t s = (cudaStream_t)c->stream;
    if (c->V % 4 == 0 && (!p.normalize || c->V <= 128)) {
        const int cols = step_cols(c, p.normalize);
        LA_CU_DTYPE_SWITCH(
            c->dtype, T, switch (cols) {
                case 16: step_vec_launch<T, 4>(c, p, s); break;
                case 32: step_vec_launch<T, 8>(c, p, s); break;
                case 64: step_vec_launch<T, 16>(c, p, s); break;
                default: step_vec_launch<T, 32>(c, p, s); break;
            });
        LA_CU_LAUNCHED(c->op);
        return LA_OK;
    }
    const unsigned nvb = (unsigned)((c->V + 31) / 32);
    /* normalised: one CTA per head walks every column block (z is shared) */
    const dim3 grid((unsigned)(c->N * c->HS), p.normalize ? 1u : nvb);
    LA_CU_DTYPE_SWITCH(c->dtype, T, la_cu_step_kernel<T><<<grid, STEP_THREADS, 0, s>>>(p));
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}
