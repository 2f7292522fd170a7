/* DeltaNet and Gated DeltaNet on the GPU, chunk-form backward, the token
 * gradients of every chunk at once (one CTA per (chunk, value head)), the
 * same math as la__delta_chunk_backward in src/ops/delta_rule/chunk.c. The
 * state pass and the reverse pass (delta_chunk.cu, delta_chunk_bwd.cu) give
 * per chunk S0 (the state before it), G (the gradient of the state after
 * it), R = U - W S0, A^T = (I + M)^{-T} and dR = P^T dO~ + diag(e) K G
 * (dO~ = scale dO). Notation of chunk.c, q and k l2-normalised (the reduce
 * kernel of delta.cu applies the l2norm backward):
 *   Yu = A^T dR,  dv = diag(beta) Yu,  Yw = -Yu S0^T  (the dW = -dR S0^T
 *     of R = U - W S0 goes through the same solve, so the second triangular
 *     solve is one product), and dM_tj = -(Yu_t.U_j + Yw_t.W_j) = -Yu_t.R_j;
 *   dP = dO~ R^T (lower incl. diagonal), T1 = dP (.) Gamma,
 *   T2 = diag(beta) dM (.) Gamma (strictly lower);
 *   dq = diag(b) dO~ S0^T + T1 K
 *   dk = diag(e) R G^T + diag(beta b) Yw + T1^T Q + (T2 + T2^T) K
 *   dbeta_t = Yu_t.v_t + b_t Yw_t.k_t + sum_j dM_tj (k_t.k_j) Gamma_tj
 *   dgam from the gate factors (Gamma, b, e, b_L), dg its reverse cumsum.
 * fp32 FFMA, its 64x64 products staged through shared memory and read as
 * float4 (dcg_gemm4; LINATTN_CUDA_DCG_V4=0: la_cu_gemm's 4-byte reads, bitwise
 * the same results), products that share an operand in one pass (dcg_gemm4x2:
 * q.k with k.k, dP with dM, dO~ S0^T with Yu S0^T; LINATTN_CUDA_DCG_FUSE=0:
 * one at a time, bitwise the same results; 3, 4: dcg_pgemm, a cp.async pipeline,
 * slower at the GDN shape) (bf16 by default: cuda-dcg7's tensor-core
 * la_cu_dcg_tc2 in delta_grad_tc2.cu, LINATTN_CUDA_DCG_TC=0 keeps this
 * kernel), fixed summation
 * orders, no atomics. Outputs: dv (final), and
 * per value head dq, dk ([tokens][HS][K], fp32), dbeta, dg ([tokens][HS]). */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "delta_chunk.cuh"

/* cuda-delta8: la_cu_gemm (common.cuh) with 16-byte shared loads. Each
 * 16-step tile is stored permuted, index m (0..63) at 4 (m % 16) + m / 16, so
 * the four rows ty + 16 i a thread owns (and the four columns tx + 16 j) are
 * one float4: 2 LDS.128 instead of 8 LDS.32 per 16 FFMA, 3 shared wavefronts
 * per warp instead of 8. Same products, same owners, same order per element
 * as la_cu_gemm, so the results are bitwise the same. */
struct __align__(16) dcg_gsm {
    float a[LA_CU_TR][64 + 4];
    float b[LA_CU_TR][64 + 4];
};
__device__ __forceinline__ int dcg_perm(int m) { return 4 * (m & 15) + (m >> 4); }
template <bool BT, class FA, class FB>
__device__ __forceinline__ void dcg_gemm4(float (&acc)[4][4], int R, FA fa, FB fb, dcg_gsm &sm) {
    const int t = threadIdx.x, ty = t >> 4, tx = t & 15;
    for (int r0 = 0; r0 < R; r0 += LA_CU_TR) {
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int e = t + 256 * u, m = e >> 4, r = e & 15;
            sm.a[r][dcg_perm(m)] = (r0 + r < R) ? fa(m, r0 + r) : 0.f;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int e = t + 256 * u;
            const int r = BT ? (e & 15) : (e >> 6), n = BT ? (e >> 4) : (e & 63);
            sm.b[r][dcg_perm(n)] = (r0 + r < R) ? fb(r0 + r, n) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < LA_CU_TR; r++) {
            const float4 a4 = *(const float4 *)&sm.a[r][4 * ty];
            const float4 b4 = *(const float4 *)&sm.b[r][4 * tx];
            const float av[4] = {a4.x, a4.y, a4.z, a4.w}, bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
}

/* cuda-delta11: two products that share their B operand in one pass,
 * acc += A B and acc2 += A2 B (three tile fills per 16 steps instead of four,
 * half the barriers, 3 LDS.128 per 32 FFMA). Each element is summed exactly
 * as dcg_gemm4 sums it (same staging, same owner, r ascending), so the
 * results are bitwise those of two dcg_gemm4 calls. */
struct __align__(16) dcg_gsm2 {
    float a[LA_CU_TR][64 + 4];
    float a2[LA_CU_TR][64 + 4];
    float b[LA_CU_TR][64 + 4];
};
template <bool BT, class FA, class FA2, class FB>
__device__ __forceinline__ void dcg_gemm4x2(float (&acc)[4][4], float (&acc2)[4][4], int R, FA fa,
                                            FA2 fa2, FB fb, dcg_gsm2 &sm) {
    const int t = threadIdx.x, ty = t >> 4, tx = t & 15;
    for (int r0 = 0; r0 < R; r0 += LA_CU_TR) {
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int e = t + 256 * u, m = e >> 4, r = e & 15;
            const bool in = r0 + r < R;
            sm.a[r][dcg_perm(m)] = in ? fa(m, r0 + r) : 0.f;
            sm.a2[r][dcg_perm(m)] = in ? fa2(m, r0 + r) : 0.f;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int e = t + 256 * u;
            const int r = BT ? (e & 15) : (e >> 6), n = BT ? (e >> 4) : (e & 63);
            sm.b[r][dcg_perm(n)] = (r0 + r < R) ? fb(r0 + r, n) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < LA_CU_TR; r++) {
            const float4 a4 = *(const float4 *)&sm.a[r][4 * ty];
            const float4 c4 = *(const float4 *)&sm.a2[r][4 * ty];
            const float4 b4 = *(const float4 *)&sm.b[r][4 * tx];
            const float av[4] = {a4.x, a4.y, a4.z, a4.w}, cv[4] = {c4.x, c4.y, c4.z, c4.w};
            const float bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
                    acc2[i][j] = fmaf(cv[i], bv[j], acc2[i][j]);
                }
        }
        __syncthreads();
    }
}

/* cuda-delta11: a two-stage pipelined variant. Operands wrapped by dcg_a
 * (raw fp32 in global memory: f returns the element's address, or nullptr
 * outside the operand) are copied by 4-byte cp.async straight into the
 * permuted tile of the next stage while the current one is multiplied;
 * operands wrapped by dcg_s (f returns the value: bf16 widened, scaled) are
 * loaded into registers before the products and stored after them. One
 * barrier per 16 steps. Per element the same r-ascending sum as dcg_gemm4;
 * row factors of raw operands move to the caller's epilogue. */
template <class Fn> struct dcg_sy { Fn f; };
template <class Fn> struct dcg_as { Fn f; };
template <class Fn> __device__ __forceinline__ dcg_sy<Fn> dcg_s(Fn f) { return {f}; }
template <class Fn> __device__ __forceinline__ dcg_as<Fn> dcg_a(Fn f) { return {f}; }
template <class X> struct dcg_isas { static constexpr bool v = false; };
template <class Fn> struct dcg_isas<dcg_as<Fn>> { static constexpr bool v = true; };
struct __align__(16) dcg_gsa {
    float t[2][3][LA_CU_TR][64 + 4]; /* [stage][A, A2, B][r][permuted index] */
};
/* KIND 0: an A operand f(m, r); 1: B read [n][r] (f(r, n), r fastest); 2: B
 * read [r][n] (n fastest). Async: issues the copies; sync: loads into reg. */
template <int KIND, class Op>
__device__ __forceinline__ void dcg_issue(const Op &op, float (*buf)[64 + 4], float (&reg)[4],
                                          int r0, int R, const float *z) {
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int e = threadIdx.x + 256 * u;
        const int r = KIND == 2 ? (e >> 6) : (e & 15), i = KIND == 2 ? (e & 63) : (e >> 4);
        const bool in = r0 + r < R;
        if constexpr (dcg_isas<Op>::v) {
            const float *src = in ? (KIND == 0 ? op.f(i, r0 + r) : op.f(r0 + r, i)) : nullptr;
            la_cu_cp4(&buf[r][dcg_perm(i)], src ? src : z, src != nullptr);
        } else {
            reg[u] = in ? (KIND == 0 ? op.f(i, r0 + r) : op.f(r0 + r, i)) : 0.f;
        }
    }
}
template <int KIND, class Op>
__device__ __forceinline__ void dcg_put(const Op &, float (*buf)[64 + 4], const float (&reg)[4]) {
    if constexpr (!dcg_isas<Op>::v) {
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int e = threadIdx.x + 256 * u;
            const int r = KIND == 2 ? (e >> 6) : (e & 15), i = KIND == 2 ? (e & 63) : (e >> 4);
            buf[r][dcg_perm(i)] = reg[u];
        }
    }
}
/* acc += A B and, if TWO, acc2 += A2 B; KB: 1 B read [n][r], 2 B read [r][n];
 * z: any valid global address (the source of zero-filled copies) */
template <int KB, bool TWO, class OA, class OA2, class OB>
__device__ __forceinline__ void dcg_pgemm(float (&acc)[4][4], float (&acc2)[4][4], int R,
                                          const OA &oa, const OA2 &oa2, const OB &ob,
                                          const float *z, dcg_gsa &sm) {
    const int t = threadIdx.x, ty = t >> 4, tx = t & 15;
    float ra[4], ra2[4], rb[4];
    dcg_issue<0>(oa, sm.t[0][0], ra, 0, R, z);
    if constexpr (TWO) dcg_issue<0>(oa2, sm.t[0][1], ra2, 0, R, z);
    dcg_issue<KB>(ob, sm.t[0][2], rb, 0, R, z);
    la_cu_cp_commit();
    dcg_put<0>(oa, sm.t[0][0], ra);
    if constexpr (TWO) dcg_put<0>(oa2, sm.t[0][1], ra2);
    dcg_put<KB>(ob, sm.t[0][2], rb);
    int st = 0;
    for (int r0 = 0; r0 < R; r0 += LA_CU_TR, st ^= 1) {
        la_cu_cp_wait<0>();
        __syncthreads(); /* stage st complete; stage st ^ 1 no longer read */
        const bool nx = r0 + LA_CU_TR < R;
        if (nx) {
            dcg_issue<0>(oa, sm.t[st ^ 1][0], ra, r0 + LA_CU_TR, R, z);
            if constexpr (TWO) dcg_issue<0>(oa2, sm.t[st ^ 1][1], ra2, r0 + LA_CU_TR, R, z);
            dcg_issue<KB>(ob, sm.t[st ^ 1][2], rb, r0 + LA_CU_TR, R, z);
            la_cu_cp_commit();
        }
#pragma unroll
        for (int r = 0; r < LA_CU_TR; r++) {
            const float4 a4 = *(const float4 *)&sm.t[st][0][r][4 * ty];
            const float4 b4 = *(const float4 *)&sm.t[st][2][r][4 * tx];
            const float av[4] = {a4.x, a4.y, a4.z, a4.w}, bv[4] = {b4.x, b4.y, b4.z, b4.w};
            if constexpr (TWO) {
                const float4 c4 = *(const float4 *)&sm.t[st][1][r][4 * ty];
                const float cv[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc2[i][j] = fmaf(cv[i], bv[j], acc2[i][j]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        if (nx) {
            dcg_put<0>(oa, sm.t[st ^ 1][0], ra);
            if constexpr (TWO) dcg_put<0>(oa2, sm.t[st ^ 1][1], ra2);
            dcg_put<KB>(ob, sm.t[st ^ 1][2], rb);
        }
    }
    __syncthreads(); /* the staging union is free for the next product */
}

struct dcg_smem {
    double gam[LA_CU_C], dgam[LA_CU_C], red[8];
    float bt[LA_CU_C], et[LA_CU_C], be[LA_CU_C], rq[LA_CU_C], rk[LA_CU_C];
    float dbb[LA_CU_C], dee[LA_CU_C], dbt[LA_CU_C];
    float M1[LA_CU_C][LA_CU_C + 1]; /* q.k (lower incl. diagonal), then T2 */
    float M2[LA_CU_C][LA_CU_C + 1]; /* k.k (strictly lower) */
    float T1[LA_CU_C][LA_CU_C + 1];
    float Z[LA_CU_C][LA_CU_C + 1]; /* dGamma (.) Gamma, strictly lower */
    union {
        la_cu_gemm_smem gs; /* la_cu_gemm's staging */
        dcg_gsm gv;         /* dcg_gemm4's */
        dcg_gsm2 gv2;       /* dcg_gemm4x2's (cuda-delta11) */
        dcg_gsa ga;         /* dcg_pgemm's (cuda-delta11) */
    };
};

/* V4: dcg_gemm4 (default), else la_cu_gemm (LINATTN_CUDA_DCG_V4=0) */
template <bool V4, bool BT = false, class FA, class FB>
__device__ __forceinline__ void dcg_mm(float (&acc)[4][4], int R, FA fa, FB fb, dcg_smem &S) {
    if constexpr (V4)
        dcg_gemm4<BT>(acc, R, fa, fb, S.gv);
    else
        la_cu_gemm<BT>(acc, R, fa, fb, S.gs);
}

/* row sums of a 64x64 tile held as acc[a][b] (row ty + 16a) over its 16 tx
 * threads: x[a] summed over columns, added (fixed order) into dst[row] by tx 0 */
__device__ __forceinline__ void dcg_rowadd(float (&x)[4], float *dst) {
    const int t = threadIdx.x, ty = t >> 4, tx = t & 15;
#pragma unroll
    for (int a = 0; a < 4; a++) {
        float s = x[a];
        s += __shfl_xor_sync(0xffffffffu, s, 8);
        s += __shfl_xor_sync(0xffffffffu, s, 4);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        if (tx == 0) dst[ty + 16 * a] += s;
    }
}

/* MINB: CTAs per SM asked of ptxas (2: 128 registers, a few spills; 1: none);
 * F (cuda-delta11, needs V4): products sharing their B operand fused
 * (dcg_gemm4x2), bitwise the same results; 0 none, 1 q.k with k.k and dP with
 * dM, 2 also dO~ S0^T with Yu S0^T (default); 3: dcg_pgemm (cp.async pipeline)
 * for Yu, dP + dM, R G^T; 4: also dO~ S0^T + Yu S0^T (LINATTN_CUDA_DCG_FUSE=0..4) */
template <typename T, int MINB, bool V4, int F>
__global__ void __launch_bounds__(256, MINB)
    la_cu_dcg(la_cu_dc_args p, const void *d_o, const float *hst, const float *dhst, float *dR,
              void *dv_out, float *dqp, float *dkp, float *dbp, float *dgp) {
    extern __shared__ __align__(16) double dcg_raw[];
    dcg_smem &S = *(dcg_smem *)dcg_raw;
    const la_cu_chunk ch = p.chunks[blockIdx.x];
    const int64_t HS = p.HS, H = p.H, K = p.K, V = p.V, hs = blockIdx.y, hq = hs / (HS / H);
    const int L = ch.len, t = threadIdx.x, ty = t >> 4, tx = t & 15;
    const int64_t tok0 = ch.tok0, kst = H * K, vst = HS * V;
    const float sc = p.scale;
    const T *qc = (const T *)p.q + (tok0 * H + hq) * K;
    const T *kc = (const T *)p.k + (tok0 * H + hq) * K;
    const T *vc = (const T *)p.v + (tok0 * HS + hs) * V;
    const T *dOc = (const T *)d_o + (tok0 * HS + hs) * V;
    const float *Rc = p.U + (tok0 * HS + hs) * V; /* R after the state pass */
    float *Yc = dR + (tok0 * HS + hs) * V;        /* dR, then Yu in place */
    const size_t cs = ((size_t)blockIdx.x * HS + hs) * K * V;
    const float *S0 = hst + cs, *G = dhst + cs;
    const float *AT = p.AT + ((size_t)blockIdx.x * HS + hs) * LA_CU_C * LA_CU_C;
    la_cu_chunk_gates(S.gam, p.g, 0.f, tok0, L, HS, (int)hs);
    la_cu_dc_rnorm<T>(S.rq, (const T *)p.q, tok0, L, H, hq, K, p.use_l2);
    la_cu_dc_rnorm<T>(S.rk, (const T *)p.k, tok0, L, H, hq, K, p.use_l2);
    if (t < LA_CU_C) {
        S.be[t] = t < L ? p.beta[(tok0 + t) * HS + hs] : 0.f;
        S.dbb[t] = S.dee[t] = S.dbt[t] = 0.f;
    }
    { /* dbL = <G, S0>, doubles, fixed order */
        double a = 0;
        for (int64_t e = t; e < K * V; e += 256) a += (double)G[e] * (double)S0[e];
        for (int off = 16; off > 0; off >>= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
        if ((t & 31) == 0) S.red[t >> 5] = a;
    }
    __syncthreads();
    if (t < LA_CU_C) {
        S.bt[t] = t < L ? la_cu_expd(S.gam[t]) : 0.f;
        S.et[t] = t < L ? la_cu_expd(S.gam[L - 1] - S.gam[t]) : 0.f;
    }
    auto gm = [&](int m, int n) -> float { return la_cu_expd(S.gam[m] - S.gam[n]); };
    auto qn = [&](int m, int64_t i) -> float { return S.rq[m] * ldf(qc + m * kst + i); };
    auto kn = [&](int m, int64_t i) -> float { return S.rk[m] * ldf(kc + m * kst + i); };
    float acc[4][4], acc2[4][4], xs[4];
    /* ---- q.k and k.k of the chunk (F: one pass, k staged once) ---- */
    auto fq = [&](int m, int r) -> float { return m < L ? ldf(qc + m * kst + r) : 0.f; };
    auto fk = [&](int m, int r) -> float { return m < L ? ldf(kc + m * kst + r) : 0.f; };
    auto fkt = [&](int r, int n) -> float { return n < L ? ldf(kc + n * kst + r) : 0.f; };
    la_cu_zero(acc);
    la_cu_zero(acc2);
    if constexpr (F >= 1) {
        dcg_gemm4x2<true>(acc, acc2, (int)K, fq, fk, fkt, S.gv2);
    } else {
        dcg_mm<V4, true>(acc, (int)K, fq, fkt, S);
        dcg_mm<V4, true>(acc2, (int)K, fk, fkt, S);
    }
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int m = ty + 16 * a, n = tx + 16 * b;
            S.M1[m][n] = (n <= m && m < L) ? S.rq[m] * S.rk[n] * acc[a][b] : 0.f;
            S.M2[m][n] = (n < m && m < L) ? S.rk[m] * S.rk[n] * acc2[a][b] : 0.f;
        }
    auto fdo = [&](int m, int r) -> float { return m < L ? sc * ldf(dOc + m * vst + r) : 0.f; };
    auto fy = [&](int m, int r) -> float { return m < L ? Yc[m * vst + r] : 0.f; };
    auto frt = [&](int r, int n) -> float { return n < L ? Rc[n * vst + r] : 0.f; };
    /* dP = dO~ R^T in d: T1 = dP (.) Gamma, Z = dP (.) qk (.) Gamma */
    auto dp_epi = [&](float(&d)[4][4]) {
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int m = ty + 16 * a, n = tx + 16 * b;
                const bool in = n <= m && m < L;
                const float x = in ? d[a][b] * gm(m, n) : 0.f;
                S.T1[m][n] = x;
                S.Z[m][n] = (in && n < m) ? x * S.M1[m][n] : 0.f;
            }
    };
    /* Yu = A^T dR (in place), dv = beta Yu, dbeta += Yu.v; ends with a barrier */
    auto yu_pass = [&]() {
        for (int64_t v0 = 0; v0 < V; v0 += 64) {
            la_cu_zero(acc);
            if constexpr (F >= 3) {
                const auto oat = dcg_a([&](int m, int r) { return AT + m * LA_CU_C + r; });
                dcg_pgemm<2, false>(
                    acc, acc, LA_CU_C, oat, oat, dcg_a([&](int r, int n) -> const float * {
                        return (r < L && v0 + n < V) ? Yc + r * vst + v0 + n : nullptr;
                    }),
                    AT, S.ga);
            } else {
                dcg_mm<V4>(
                    acc, LA_CU_C, [&](int m, int r) -> float { return AT[m * LA_CU_C + r]; },
                    [&](int r, int n) -> float {
                        return (r < L && v0 + n < V) ? Yc[r * vst + v0 + n] : 0.f;
                    },
                    S);
            }
#pragma unroll
            for (int a = 0; a < 4; a++) {
                const int m = ty + 16 * a;
                xs[a] = 0.f;
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    const int64_t n = v0 + tx + 16 * b;
                    if (m < L && n < V) {
                        const float y = acc[a][b];
                        Yc[m * vst + n] = y;
                        stf((T *)dv_out + (tok0 * HS + hs) * V + m * vst + n, S.be[m] * y);
                        xs[a] = fmaf(y, ldf(vc + m * vst + n), xs[a]);
                    }
                }
            }
            dcg_rowadd(xs, S.dbt);
        }
        __syncthreads(); /* Yu (global) visible to the block */
    };
    /* dM = -Yu R^T in d: T2 = beta dM (.) Gamma, Z += beta dM (.) kk (.) Gamma */
    auto dm_epi = [&](float(&d)[4][4]) {
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int m = ty + 16 * a;
            xs[a] = 0.f;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int n = tx + 16 * b;
                float t2 = 0.f;
                if (n < m && m < L) {
                    const float dm = -d[a][b], g = gm(m, n), x = dm * S.M2[m][n] * g;
                    t2 = dm * S.be[m] * g;
                    S.Z[m][n] += S.be[m] * x;
                    xs[a] += x;
                }
                S.M1[m][n] = t2;
            }
        }
        dcg_rowadd(xs, S.dbt);
    };
    if constexpr (F >= 1) { /* Yu first, then dP and dM in one pass (R staged once) */
        yu_pass();
        la_cu_zero(acc);
        la_cu_zero(acc2);
        if constexpr (F >= 3)
            dcg_pgemm<1, true>(
                acc, acc2, (int)V, dcg_s(fdo),
                dcg_a([&](int m, int r) { return m < L ? Yc + m * vst + r : nullptr; }),
                dcg_a([&](int r, int n) { return n < L ? Rc + n * vst + r : nullptr; }), AT, S.ga);
        else
            dcg_gemm4x2<true>(acc, acc2, (int)V, fdo, fy, frt, S.gv2);
        dp_epi(acc);
        dm_epi(acc2);
    } else {
        la_cu_zero(acc);
        dcg_mm<V4, true>(acc, (int)V, fdo, frt, S);
        dp_epi(acc);
        yu_pass();
        la_cu_zero(acc);
        dcg_mm<V4, true>(acc, (int)V, fy, frt, S);
        dm_epi(acc);
    }
    __syncthreads();
    constexpr bool FK = F >= 2; /* dO~ S0^T with Yu S0^T */
    /* ---- dq, dk by 64-column blocks of K ---- */
    for (int64_t k0 = 0; k0 < K; k0 += 64) {
        auto fdob = [&](int m, int r) -> float {
            return m < L ? (sc * S.bt[m]) * ldf(dOc + m * vst + r) : 0.f;
        };
        auto fyb = [&](int m, int r) -> float { return m < L ? -S.bt[m] * Yc[m * vst + r] : 0.f; };
        auto fs0 = [&](int r, int n) -> float { return k0 + n < K ? S0[(k0 + n) * V + r] : 0.f; };
        /* F: yw = acc2 gets b Yw in the same pass as dO~ S0^T (S0 staged once), rg = acc
         * takes diag(e) R G^T after dq is written; else yw = acc, rg = acc2 */
        float(&yw)[4][4] = FK ? acc2 : acc;
        float(&rg)[4][4] = FK ? acc : acc2;
        /* dq = diag(b) dO~ S0^T + T1 K; (db b)_t += q_t . (b_t dO~_t S0^T) */
        la_cu_zero(acc);
        if constexpr (F >= 4) { /* acc2 = Yu S0^T, times -b in the epilogue below */
            la_cu_zero(acc2);
            dcg_pgemm<1, true>(
                acc, acc2, (int)V, dcg_s(fdob),
                dcg_a([&](int m, int r) { return m < L ? Yc + m * vst + r : nullptr; }),
                dcg_a([&](int r, int n) { return k0 + n < K ? S0 + (k0 + n) * V + r : nullptr; }),
                AT, S.ga);
        } else if constexpr (FK) {
            la_cu_zero(acc2);
            dcg_gemm4x2<true>(acc, acc2, (int)V, fdob, fyb, fs0, S.gv2);
        } else {
            dcg_mm<V4, true>(acc, (int)V, fdob, fs0, S);
        }
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int m = ty + 16 * a;
            xs[a] = 0.f;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int64_t n = k0 + tx + 16 * b;
                if (m < L && n < K) xs[a] = fmaf(acc[a][b], qn(m, n), xs[a]);
            }
        }
        dcg_rowadd(xs, S.dbb);
        dcg_mm<V4>(
            acc, LA_CU_C, [&](int m, int r) -> float { return S.T1[m][r]; },
            [&](int r, int n) -> float { return (r < L && k0 + n < K) ? kn(r, k0 + n) : 0.f; }, S);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int m = ty + 16 * a;
                const int64_t n = k0 + tx + 16 * b;
                if (m < L && n < K) dqp[((tok0 + m) * HS + hs) * K + n] = acc[a][b];
            }
        /* b Yw = -diag(b) Yu S0^T: dbeta += k.(b Yw), (db b) += beta k.(b Yw) */
        if constexpr (!FK) {
            la_cu_zero(acc);
            dcg_mm<V4, true>(acc, (int)V, fyb, fs0, S);
        }
        float ys[4];
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int m = ty + 16 * a;
            xs[a] = 0.f;
            if constexpr (F >= 4) {
#pragma unroll
                for (int b = 0; b < 4; b++) yw[a][b] *= -S.bt[m];
            }
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int64_t n = k0 + tx + 16 * b;
                if (m < L && n < K) xs[a] = fmaf(yw[a][b], kn(m, n), xs[a]);
            }
            ys[a] = S.be[m] * xs[a];
#pragma unroll
            for (int b = 0; b < 4; b++) yw[a][b] *= S.be[m];
        }
        dcg_rowadd(xs, S.dbt);
        dcg_rowadd(ys, S.dbb);
        /* diag(e) R G^T: (de e)_t += k_t . (e_t R_t G^T) */
        la_cu_zero(rg);
        if constexpr (F >= 3) { /* R G^T, times e in the epilogue */
            const auto orr =
                dcg_a([&](int m, int r) { return m < L ? Rc + m * vst + r : nullptr; });
            dcg_pgemm<1, false>(rg, rg, (int)V, orr, orr, dcg_a([&](int r, int n) {
                                    return k0 + n < K ? G + (k0 + n) * V + r : nullptr;
                                }),
                                AT, S.ga);
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) rg[a][b] *= S.et[ty + 16 * a];
        } else {
            dcg_mm<V4, true>(
                rg, (int)V,
                [&](int m, int r) -> float { return m < L ? S.et[m] * Rc[m * vst + r] : 0.f; },
                [&](int r, int n) -> float { return k0 + n < K ? G[(k0 + n) * V + r] : 0.f; }, S);
        }
#pragma unroll
        for (int a = 0; a < 4; a++) {
            const int m = ty + 16 * a;
            xs[a] = 0.f;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int64_t n = k0 + tx + 16 * b;
                if (m < L && n < K) xs[a] = fmaf(rg[a][b], kn(m, n), xs[a]);
                yw[a][b] += rg[a][b];
            }
        }
        dcg_rowadd(xs, S.dee);
        /* + T1^T Q + (T2 + T2^T) K */
        dcg_mm<V4>(
            yw, LA_CU_C, [&](int m, int r) -> float { return S.T1[r][m]; },
            [&](int r, int n) -> float { return (r < L && k0 + n < K) ? qn(r, k0 + n) : 0.f; }, S);
        dcg_mm<V4>(
            yw, LA_CU_C, [&](int m, int r) -> float { return S.M1[m][r] + S.M1[r][m]; },
            [&](int r, int n) -> float { return (r < L && k0 + n < K) ? kn(r, k0 + n) : 0.f; }, S);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int m = ty + 16 * a;
                const int64_t n = k0 + tx + 16 * b;
                if (m < L && n < K) dkp[((tok0 + m) * HS + hs) * K + n] = yw[a][b];
            }
    }
    __syncthreads();
    /* ---- gates: dgam (double, fixed order), dg = reverse cumsum ---- */
    if (t < L) {
        double d = (double)S.dbb[t] - (double)S.dee[t];
        for (int j = 0; j < t; j++) d += (double)S.Z[t][j];
        for (int j = t + 1; j < L; j++) d -= (double)S.Z[j][t];
        if (t == L - 1) {
            double db = 0;
            for (int w = 0; w < 8; w++) db += S.red[w];
            for (int j = 0; j < L; j++) d += (double)S.dee[j];
            d += db * (double)S.bt[L - 1];
        }
        S.dgam[t] = d;
        dbp[(tok0 + t) * HS + hs] = S.dbt[t];
    }
    __syncthreads();
    if (t == 0) {
        double a = 0;
        for (int j = L - 1; j >= 0; j--) {
            a += S.dgam[j];
            dgp[(tok0 + j) * HS + hs] = (float)a;
        }
    }
}

/* cuda-dcg7: the tensor-core kernel with pipelined staging (delta_grad_tc2.cu),
 * the default for bf16 (LINATTN_CUDA_DCG_TC=0 or LINATTN_CUDA_TC=0: this file's
 * FFMA kernel) */
int la__cu_dcg_tc2_fits(const la__cu_call *c);
la_status la__cu_dcg_tc2(const la__cu_call *c, cudaStream_t stream, const la_cu_table &tb,
                         const la_cu_dc_args &p, float *dR, const float *hst, const float *dhst,
                         float *dqp, float *dkp, float *dbp, float *dgp);
int la__cu_dcg_tc2_on(void);

int la__cu_delta_chunk_grads_fits(const la__cu_call *c) {
    return sizeof(dcg_smem) <= (size_t)la__cu_smem_optin(c);
}

la_status la__cu_delta_chunk_grads(const la__cu_call *c, cudaStream_t stream, const la_cu_table &tb,
                                   const la_cu_dc_args &p, float *dR, const float *hst,
                                   const float *dhst, float *dqp, float *dkp, float *dbp,
                                   float *dgp) {
    if (tb.nchunks == 0) return LA_OK;
    if (c->dtype == LA_DTYPE_BF16 && la__cu_dcg_tc2_on() && la__cu_dcg_tc2_fits(c))
        return la__cu_dcg_tc2(c, stream, tb, p, dR, hst, dhst, dqp, dkp, dbp, dgp);
    const size_t smem = sizeof(dcg_smem);
    const dim3 grid((unsigned)tb.nchunks, (unsigned)c->HS);
    const char *e = getenv("LINATTN_CUDA_DCG_MINB"); /* benchmarking knob (FUSE=4 only) */
    const bool one = e && !strcmp(e, "1");
    const char *e4 = getenv("LINATTN_CUDA_DCG_V4"); /* 0: la_cu_gemm's 4-byte loads */
    const bool v4 = !(e4 && !strcmp(e4, "0"));
    const char *ef = getenv("LINATTN_CUDA_DCG_FUSE"); /* 0: no fused products */
    /* default 2: fastest at the GDN shape and bitwise main's results (H200, bench/GPU.md) */
    const int fu = ef && ef[0] >= '0' && ef[0] <= '4' && !ef[1] ? ef[0] - '0' : 2;
    LA_CU_DTYPE_SWITCH(c->dtype, T, {
        void (*f)(la_cu_dc_args, const void *, const float *, const float *, float *, void *,
                  float *, float *, float *, float *) =
            !v4       ? la_cu_dcg<T, 2, false, 0>
            : fu == 0 ? la_cu_dcg<T, 2, true, 0>
            : fu == 1 ? la_cu_dcg<T, 2, true, 1>
            : fu == 3 ? la_cu_dcg<T, 2, true, 3>
            : fu == 4 ? (one ? la_cu_dcg<T, 1, true, 4> : la_cu_dcg<T, 2, true, 4>)
                      : la_cu_dcg<T, 2, true, 2>;
        LA_CU_TRY(c->op,
                  cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        f<<<grid, 256, smem, stream>>>(p, c->d_o, hst, dhst, dR, c->dv, dqp, dkp, dbp, dgp);
    });
    LA_CU_LAUNCHED(c->op);
    return LA_OK;
}
