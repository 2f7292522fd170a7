/* DeltaNet and Gated DeltaNet on the GPU: forward in the recurrent form
 * (token by token, fp32 FFMA). One CTA of 128 threads per (sequence, value
 * head, 32 value columns): the columns of S evolve independently
 * (S_t[:, j] depends on S_{t-1}[:, j] only), so the split is exact; 4 warps
 * share the K rows, each thread keeps up to 64 state entries in registers for
 * the whole sequence. Per token:
 *   r = S^T k, u = beta (v - a r), S = a S + k u^T, o = scale S^T q,
 * with a = e^{g} (Gated DeltaNet) or 1, q and k l2-normalised first when
 * asked. Row sums: per thread in row order, then the warps in order.
 * The chunkwise (WY) form and the backward are not written yet: the backward
 * returns LA_ERR_UNSUPPORTED on a CUDA context. */
#include "common.cuh"

#define DK_KS 4
#define DK_RMAX 64

struct delta_args {
    const la_cu_seq *seqs;
    const void *q, *k, *v;
    void *o;
    const float *g, *beta, *s0;
    float *sT;
    int64_t H, HS, K, V;
    float scale;
    int use_l2;
};

template <typename T>
__global__ void __launch_bounds__(128) la_cu_delta_fwd(delta_args p) {
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
        for (int i = t; i < K; i += 128) {
            qs[i] = ldf(q + (tok * H + hq) * K + i);
            ks[i] = ldf(k + (tok * H + hq) * K + i);
        }
        __syncthreads();
        if (p.use_l2) {
            if (w == 0) {
                float a = 0.f, b = 0.f;
                for (int i = jj; i < K; i += 32) {
                    a = fmaf(qs[i], qs[i], a);
                    b = fmaf(ks[i], ks[i], b);
                }
                for (int off = 16; off > 0; off >>= 1) {
                    a += __shfl_xor_sync(0xffffffffu, a, off);
                    b += __shfl_xor_sync(0xffffffffu, b, off);
                }
                if (jj == 0) {
                    rn[0] = 1.f / sqrtf(a + 1e-6f);
                    rn[1] = 1.f / sqrtf(b + 1e-6f);
                }
            }
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
        if (w == 0 && ok)
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

template <typename T>
static la_status delta_forward(const la__cu_call *c, la_cu_arena *ar) {
    la_cu_table tb;
    la_status st = la__cu_make_table(ar, c, &tb);
    if (st) return st;
    delta_args p = {};
    p.seqs = tb.seqs, p.q = c->q, p.k = c->k, p.v = c->v, p.o = c->o, p.g = c->g;
    p.beta = c->beta, p.s0 = c->s0, p.sT = c->final_state;
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

extern "C" la_status la__cu_delta_backward(const la__cu_call *c) {
    return la__error(LA_ERR_UNSUPPORTED,
                     "%s: the delta-rule backward is not served by the CUDA backend yet", c->op);
}
