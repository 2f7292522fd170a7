/* cuda-fused9: the fused chunk-recurrent forward of kernel linear attention
 * and simple GLA for bf16 / fp16 inputs. One CTA (4 warps) per (sequence,
 * head, block of 64 value columns) walks its chunks in order with the fp32
 * state S (K <= 128 rows, 64 columns) in registers; per chunk of L <= 64
 * tokens, with G the chunk's cumulative log-gates (0 for linear attention):
 *   o_i  = scale e^{G_i} Qf_i S + sum_{j<=i} P_ij v_j,
 *   P_ij = scale e^{G_i - G_j} Qf_i . Kf_j,
 *   S   <- e^{G_L} S + Kf^T Vt,  Vt_j = e^{G_L - G_j} v_j,
 * Qf = phi(q), Kf = phi(k) (identity or relu: exact in the 16-bit type).
 * Every product runs on tensor cores (tc.cuh); S, P and Vt enter as 16-bit
 * parts (3 for bf16, 2 for fp16), like the chunk-parallel kernels, so the
 * accuracy matches them. One tile buffer (two CTAs per SM: session 8's
 * double-buffered version held one CTA, 4 warps, per SM and ran at half
 * the speed): the next chunk's q tiles come by cp.async as soon as the
 * current chunk's q products are done, its k, v tiles after the state
 * update, both while the other CTA of the SM computes. No per-chunk
 * state leaves the chip. Sums run in a fixed order: run-to-run identical.
 * cuda-fused11: 8 warps per CTA by default (each half the value columns of
 * its 16 rows, 128 registers: 16 warps per SM), 4 barriers per chunk step,
 * o stored from the accumulators through each warp's own smem region, no
 * gate work in ungated walks; all with the same bits (bench/GPU.md).
 * cuda-occ14: V double-buffered (12 tiles, still two CTAs per SM) and the
 * ungated state update beside Q S, so the next chunk's Q, K, V (gated: Q, V)
 * go out at the step's second barrier, half a step before they are waited
 * on; same bits. ncu: the walk is bound by shared-memory wavefronts (~790
 * per warp and chunk step, 80% ldmatrix; L1 84% busy, tensor 31%), not by
 * occupancy (bench/GPU.md, cuda-occ14). cuda-reuse16: an fp32 operand's
 * 16-bit parts are multiplied per k step together, so the other operand's
 * fragments are loaded once for all of them (-32 of 132 ldmatrix.x4 per
 * warp-step); a new, fixed fp32 sum order (bench/GPU.md, cuda-reuse16).
 * cuda-sfrag18: the ungated unsplit forward walk runs la_lf_sfwd (S^T held
 * as mma A fragments, no S parts through shared memory; same bits); since
 * cuda-lin21 so do the backward's three ungated unsplit walks (same bits).
 * cuda-sgla21: the gated walks' gate work cut (they are bound by instruction
 * issue): P's factors off the diagonal blocks as row x column factors
 * (lf_p_gate), every factor by one ex2 (lf_expd), G and the o / Vt row
 * factors once per CTA by warp 0; new bits, errors against float64 as
 * before (bench/GPU.md, cuda-sgla21). cuda-s2p24: the walks' fp32 operands
 * (S or its gradient, P, Vt) enter as two 16-bit parts for bf16 too (the
 * accuracy policy of session 16), except S and Vt in the gate gradient's
 * walks (cuda-sgdot24: P takes two there too; LINATTN_CUDA_LIN_PARTS=3
 * gives three everywhere back): a third of the S^T Qf^T / P V / gated
 * update mma and of the split work gone; new bf16 bits, errors against
 * float64 in bench/GPU.md, cuda-s2p24 and cuda-sgdot24. */
#include <stdlib.h>

#include "lin_fused.cuh"
#include "scalar_gate.cuh" /* la__cu_state_dot */
#include "tc_tile.cuh"

#define LF_NW 6 /* work tiles: S parts (2 key blocks x 3), then P and Vt parts */
/* Q blocks, K blocks, two V tiles (cuda-occ14: double-buffered), LF_NW work
 * tiles: 12 tiles (110,592 B at NK = 2) + the gated walk's G and row factors
 * (1 KB, static since cuda-sgla21; 4 KB before): two CTAs per SM */
static size_t lf_smem(int nk) { return (size_t)((2 * nk + 2) + LF_NW) * LA_TC_TILE_BYTES; }

struct lf_args {
    const la_cu_seq *seqs;
    const la_cu_chunk *chunks;
    const void *q, *k, *v;
    void *o;
    const float *g, *g_gamma, *s0;
    float *fin;
    int64_t H, K, V;     /* K: the contraction width of q, k; V: the width of v, o */
    float scale;         /* sP: on P (and the forward's scale) */
    float sq, sv;        /* on the state term of o; on the state update's v rows */
    float s0mul, finmul; /* on the initial state as loaded; on the final state as stored */
    const void *m;       /* (backward) o's rows are masked by m > 0 (relu'), width V */
    int fm, nvb;
    int fab, fc, s0t; /* relu on q, k tiles; on v tiles; s0 transposed ([V][K]) */
    int fint;         /* the final state stored transposed ([V][K]; DOT instances) */
    /* cuda-fused12 (the backward's gate gradient): per token, the float64
     * dot of dx's row (same shape as o) with o's fp32 row before rounding,
     * one partial per (value block, column half) at dpart[(tok H + h)
     * nslot + slot]; read by the DOT instances only */
    const void *dx;
    double *dpart;
    int nslot;
    int sfrag; /* cuda-sfrag18: the walk is la_lf_sfwd (ungated, unsplit, sv = 1, no DOT) */
};

/* cuda-fused11: the warp layout. A walk runs with NJ = 4 or 2 of the four
 * 16-column blocks of every 64x64 result per warp: LF_NT(NJ) = 512 / NJ
 * threads, warp wi owns rows 16 (wi % 4) .. + 15 and column blocks
 * (wi / 4) NJ .. + NJ - 1 (NJ = 4: tc.cuh's layout, 4 warps; NJ = 2: 8
 * warps, each half the columns: twice the warps per SM at half the
 * accumulators per thread). Every element of a result is summed in the same
 * order either way (same mma inputs, same k order): same bits. Staged tiles
 * are 512 16-byte pieces, piece e = threadIdx.x + LF_NT u (row e / 8,
 * columns 8 (e % 8) .. + 7), u < 512 / LF_NT. */
#define LF_NT(NJ) (512 / (NJ))
__device__ __forceinline__ int lf_w() { return (threadIdx.x >> 5) & 3; }
template <int NJ> __device__ __forceinline__ int lf_jb() { return (int)(threadIdx.x >> 7) * NJ; }

/* tc.cuh / tc_tile.cuh's element walks on the warp's rows 16 lf_w .. and
 * column blocks lf_jb .. lf_jb + NJ - 1 (the products are below). */
/* Products that share an operand, each fragment loaded once per k step
 * (shared-memory wavefronts are what bound the walk: bench/GPU.md,
 * cuda-occ14). cuda-reuse16: the 16-bit parts of an fp32 operand are taken
 * together per k step (k step kk: hi, lo, lo2), so the other operand's
 * fragment serves all of them; every product is still summed in one fixed
 * order (run-to-run identical), not cuda-occ14's (all of hi's k steps, then
 * lo's). B fragment (k step kk, column block jj) of B ([r][n], or [n][r]
 * when BT). */
template <typename T, bool BT>
__device__ __forceinline__ void lf_ldb(uint32_t (&b)[4], const T *B, int kk, int jj) {
    const int lane = threadIdx.x & 31, m8 = lane >> 3, rr = lane & 7;
    const int lo8 = (m8 & 1) * 8, hi8 = (m8 >> 1) * 8;
    if (BT)
        la_tc_ldsm4<false>(b, B + (16 * jj + hi8 + rr) * LA_TC_LD + 16 * kk + lo8);
    else
        la_tc_ldsm4<true>(b, B + (16 * kk + lo8 + rr) * LA_TC_LD + 16 * jj + hi8);
}
/* A fragment (k step kk) of A ([m][r], or [r][m] when AT), the warp's rows */
template <typename T, bool AT>
__device__ __forceinline__ void lf_lda(uint32_t (&a)[4], const T *A, int kk) {
    const int lane = threadIdx.x & 31, m8 = lane >> 3, rr = lane & 7, w = lf_w();
    const int lo8 = (m8 & 1) * 8, hi8 = (m8 >> 1) * 8;
    if (AT)
        la_tc_ldsm4<true>(a, A + (16 * kk + hi8 + rr) * LA_TC_LD + 16 * w + lo8);
    else
        la_tc_ldsm4<false>(a, A + (16 * w + lo8 + rr) * LA_TC_LD + 16 * kk + hi8);
}
template <typename T>
__device__ __forceinline__ void lf_mma16(la_tc_acc &acc, const uint32_t (&a)[4],
                                         const uint32_t (&b)[4]) {
    la_tc_mma<T>(acc.x, a, b[0], b[1]);
    la_tc_mma<T>(acc.x + 4, a, b[2], b[3]);
}
/* The fp32-accurate number of 16-bit parts of an fp32 operand (3 for bf16,
 * 2 for fp16), taken by the split's local pass (la_lf_local); the parts of
 * X are the tiles X, X + LA_TC_TILE (, X + 2 LA_TC_TILE). The walks take
 * their part count NP as a template argument (cuda-s2p24: 2 for bf16 too by
 * default, lf_parts_bf16 below). */
template <typename T> struct lf_np {
    static const int value = la_tc_three<T>::value ? 3 : 2;
};
/* acc1 += A B1, acc2 += A (B2's parts) (Q K^T and Q S: Q's fragments once
 * per k step) */
template <typename T, int NP, bool BT1, int NJ>
__device__ __forceinline__ void lf_mma_a2(la_tc_acc (&acc1)[NJ], la_tc_acc (&acc2)[NJ], const T *A,
                                          const T *B1, const T *B2) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        uint32_t a[4], b[4];
        lf_lda<T, false>(a, A, kk);
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            lf_ldb<T, BT1>(b, B1, kk, lf_jb<NJ>() + j);
            lf_mma16<T>(acc1[j], a, b);
        }
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int pi = 0; pi < NP; pi++) {
                lf_ldb<T, false>(b, B2 + pi * LA_TC_TILE, kk, lf_jb<NJ>() + j);
                lf_mma16<T>(acc2[j], a, b);
            }
    }
}
/* S[kb][j] += (Kt_kb^T)'s fragments ak[kb] (k step kk) times column block j
 * of Tp's parts when TV, else times b (already loaded) */
template <typename T, int NP, int NK, int NJ, bool TV>
__device__ __forceinline__ void lf_st_step(la_tc_acc (&S)[NK][NJ], const uint32_t (&ak)[NK][4],
                                           const uint32_t (&b)[4], const T *Tp, int kk, int j) {
    if (!TV) {
#pragma unroll
        for (int kb = 0; kb < NK; kb++) lf_mma16<T>(S[kb][j], ak[kb], b);
    } else {
#pragma unroll
        for (int pi = 0; pi < NP; pi++) {
            uint32_t bt[4];
            lf_ldb<T, false>(bt, Tp + pi * LA_TC_TILE, kk, lf_jb<NJ>() + j);
#pragma unroll
            for (int kb = 0; kb < NK; kb++) lf_mma16<T>(S[kb][j], ak[kb], bt);
        }
    }
}
/* acc += (P's NPP parts) V and the state update S[kb] += Kt_kb^T X, kb < NK,
 * X = V (!TV) or Tp's NP parts (TV): V's and K's fragments once per k step
 * (P V and the state update); Kt_kb = K0 + kb LA_TC_TILE */
template <typename T, int NP, int NK, int NJ, bool TV, int NPP = NP>
__device__ __forceinline__ void lf_mma_pv(la_tc_acc (&acc)[NJ], const T *P, const T *Vs,
                                          la_tc_acc (&S)[NK][NJ], const T *K0, const T *Tp) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        uint32_t a[NPP][4], ak[NK][4];
#pragma unroll
        for (int pi = 0; pi < NPP; pi++) lf_lda<T, false>(a[pi], P + pi * LA_TC_TILE, kk);
        if (TV) /* P V first: K's fragments are not live beside P's (registers) */
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                uint32_t b[4];
                lf_ldb<T, false>(b, Vs, kk, lf_jb<NJ>() + j);
#pragma unroll
                for (int pi = 0; pi < NPP; pi++) lf_mma16<T>(acc[j], a[pi], b);
            }
#pragma unroll
        for (int kb = 0; kb < NK; kb++) lf_lda<T, true>(ak[kb], K0 + kb * LA_TC_TILE, kk);
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            uint32_t b[4];
            if (!TV) { /* V's fragment serves P V and the state update */
                lf_ldb<T, false>(b, Vs, kk, lf_jb<NJ>() + j);
#pragma unroll
                for (int pi = 0; pi < NPP; pi++) lf_mma16<T>(acc[j], a[pi], b);
            }
            lf_st_step<T, NP, NK, NJ, TV>(S, ak, b, Tp, kk, j);
        }
    }
}
/* The state update alone (la_lf_local): S[kb] += Kt_kb^T X as above */
template <typename T, int NP, int NK, int NJ, bool TV>
__device__ __forceinline__ void lf_mma_st(la_tc_acc (&S)[NK][NJ], const T *K0, const T *Vs,
                                          const T *Tp) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        uint32_t ak[NK][4];
#pragma unroll
        for (int kb = 0; kb < NK; kb++) lf_lda<T, true>(ak[kb], K0 + kb * LA_TC_TILE, kk);
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            uint32_t b[4];
            if (!TV) lf_ldb<T, false>(b, Vs, kk, lf_jb<NJ>() + j);
            lf_st_step<T, NP, NK, NJ, TV>(S, ak, b, Tp, kk, j);
        }
    }
}
/* Th, Tl (, Tl2) = the parts of f(r) V[r][c] for a 64 x 64 tile V, NT
 * threads with 8 values each (f(r) once per row group of 8). */
template <typename T, int NT, class F>
__device__ __forceinline__ void lf_scaled_parts(T *Th, T *Tl, T *Tl2, const T *V, F f) {
#pragma unroll
    for (int u = 0; u < 512 / NT; u++) {
        const int e = threadIdx.x + NT * u, r = e >> 3, off = r * LA_TC_LD + (e & 7) * 8;
        const float s = f(r);
        uint32_t x[4], y[4], z[4];
        *(uint4 *)x = *(const uint4 *)(V + off);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 in = la_tc_upk(T(), x[i]);
            la_tc_split2<T>(in.x * s, in.y * s, x[i], y[i], z[i]);
        }
        *(uint4 *)(Th + off) = *(const uint4 *)x;
        *(uint4 *)(Tl + off) = *(const uint4 *)y;
        if (Tl2) *(uint4 *)(Tl2 + off) = *(const uint4 *)z;
    }
}
/* f(rh, r, c, x) over the thread's elements of acc. */
template <int NJ, class F> __device__ __forceinline__ void lf_each(la_tc_acc (&acc)[NJ], F f) {
    la_tc_acc_each_part<NJ>(acc, lf_w(), lf_jb<NJ>(), f);
}
template <typename T, int NJ, class F>
__device__ __forceinline__ void lf_acc_split(const la_tc_acc (&acc)[NJ], T *hi, T *lo, T *lo2,
                                             F f) {
    la_tc_acc_split_part<T, NJ>(acc, lf_w(), lf_jb<NJ>(), hi, lo, lo2, f);
}
/* acc <- rows k0.., columns v0.. of S (row-major [K][V] fp32), or of
 * S = src^T (tr: src row-major [V][K]); NULL: zeros; once per CTA. */
template <int NJ>
__device__ __forceinline__ void lf_acc_in(la_tc_acc (&acc)[NJ], const float *src, bool tr,
                                          int64_t k0, int64_t v0, int64_t K, int64_t V) {
    lf_each<NJ>(acc, [&](int, int r, int c, float &x) {
        const int64_t rr = k0 + r, cc = v0 + c;
        x = (src && rr < K && cc < V) ? (tr ? src[cc * K + rr] : src[rr * V + cc]) : 0.f;
    });
}
template <int NJ>
__device__ __forceinline__ void lf_acc_out(float *dst, la_tc_acc (&acc)[NJ], bool tr, int64_t k0,
                                           int64_t v0, int64_t K, int64_t V) {
    lf_each<NJ>(acc, [&](int, int r, int c, float &x) {
        if (k0 + r < K && v0 + c < V) dst[tr ? (v0 + c) * K + k0 + r : (k0 + r) * V + v0 + c] = x;
    });
}
/* relu in place on the pieces this thread fetched (visible to it after the
 * wait, before any barrier). */
template <typename T, int NJ> __device__ __forceinline__ void lf_relu(T *tile) {
#pragma unroll
    for (int u = 0; u < 512 / LF_NT(NJ); u++) {
        const int e = threadIdx.x + LF_NT(NJ) * u, o = (e >> 3) * LA_TC_LD + (e & 7) * 8;
        uint32_t x[4];
        *(uint4 *)x = *(const uint4 *)(tile + o);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 f = la_tc_upk(T(), x[i]);
            x[i] = la_tc_pk(T(), f.x > 0.f ? f.x : 0.f, f.y > 0.f ? f.y : 0.f);
        }
        *(uint4 *)(tile + o) = *(const uint4 *)x;
    }
}

/* cuda-fused11: rows r < rows, columns c < cols of the CTA's 64x64 fp32
 * result (the warps' accumulators) rounded to T and stored to global memory
 * straight from registers (element (0, 0) at dst, row stride `stride`;
 * 4-byte stores of a column pair when vec), each element zeroed where m
 * (same shape, stride) is not > 0 (m == NULL: a plain store). Rounds as
 * la_tc_acc_split's hi part did: same bits as the staged store it replaces. */
template <typename T, int NJ>
__device__ __forceinline__ void lf_acc_store(T *dst, int64_t stride, const la_tc_acc (&acc)[NJ],
                                             int rows, int cols, bool vec, const T *m) {
    const int w = lf_w(), jb = lf_jb<NJ>(), lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
        const int r = 16 * w + g + 8 * rh;
        if (r >= rows) continue;
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int c0 = 16 * (jb + j) + 8 * hf + 2 * q;
                const float a = acc[j].x[4 * hf + 2 * rh], b = acc[j].x[4 * hf + 2 * rh + 1];
                T *d = dst + (int64_t)r * stride + c0;
                const T *mm = m ? m + (int64_t)r * stride + c0 : (const T *)NULL;
                if (vec) { /* cols % 8 == 0: c0 < cols implies c0 + 1 < cols */
                    if (c0 >= cols) continue;
                    uint32_t x = la_tc_pk(T(), a, b);
                    if (mm) {
                        const float2 f = la_tc_upk(T(), *(const uint32_t *)mm);
                        x &= (f.x > 0.f ? 0xffffu : 0u) | (f.y > 0.f ? 0xffff0000u : 0u);
                    }
                    *(uint32_t *)d = x;
                } else {
#pragma unroll
                    for (int i = 0; i < 2; i++)
                        if (c0 + i < cols)
                            d[i] = (mm && !((float)mm[i] > 0.f)) ? la_tc_cvt<T>(0.f)
                                                                 : la_tc_cvt<T>(i ? b : a);
                }
            }
    }
}

/* The same for vec, staged through the warp's own rows 16 w .., columns
 * 16 lf_jb .. of the free tile Wt (no other warp touches that region
 * between the step's last barrier and the next one): 16-byte stores of
 * whole row pieces instead of 4-byte column pairs; same bits. */
template <typename T, int NJ>
__device__ __forceinline__ void lf_acc_store_st(T *dst, int64_t stride, const la_tc_acc (&acc)[NJ],
                                                int rows, int cols, T *Wt, const T *m) {
    const int w = lf_w(), jb = lf_jb<NJ>(), lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int rh = 0; rh < 2; rh++)
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int r = 16 * w + g + 8 * rh, c0 = 16 * (jb + j) + 8 * hf + 2 * q;
                *(uint32_t *)(Wt + r * LA_TC_LD + c0) =
                    la_tc_pk(T(), acc[j].x[4 * hf + 2 * rh], acc[j].x[4 * hf + 2 * rh + 1]);
            }
    __syncwarp();
#pragma unroll
    for (int u = 0; u < NJ; u++) { /* 16 rows x 2 NJ pieces, NJ per lane */
        const int pc = lane + 32 * u, r = 16 * w + pc / (2 * NJ), c = 16 * jb + 8 * (pc % (2 * NJ));
        if (r >= rows || c >= cols) continue;
        uint32_t x[4];
        *(uint4 *)x = *(const uint4 *)(Wt + r * LA_TC_LD + c);
        if (m) {
            uint32_t y[4];
            *(uint4 *)y = *(const uint4 *)(m + (int64_t)r * stride + c);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 f = la_tc_upk(T(), y[i]);
                x[i] &= (f.x > 0.f ? 0xffffu : 0u) | (f.y > 0.f ? 0xffff0000u : 0u);
            }
        }
        *(uint4 *)(dst + (int64_t)r * stride + c) = *(const uint4 *)x;
    }
    __syncwarp();
}

/* cuda-fused12: dst[r nst] = sum over the CTA-half's columns c < cols of
 * x[r, c] acc[r, c] for rows r < rows (float64 products and sums in a fixed
 * order: the thread's 4 NJ elements, then the 4 lanes of a row by
 * shuffles); x: row stride `stride`. (Simple GLA, the only op with a gate
 * gradient, has phi = identity.) */
template <typename T, int NJ>
__device__ __forceinline__ void lf_row_dots(double *dst, int64_t nst, const T *x, int64_t stride,
                                            const la_tc_acc (&acc)[NJ], int rows, int cols) {
    const int w = lf_w(), jb = lf_jb<NJ>(), lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    /* cuda-occ14: a column pair in one 4-byte load where aligned */
    const bool pair = (((uintptr_t)x | (uintptr_t)(stride * (int64_t)sizeof(T))) & 3) == 0;
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
        const int r = 16 * w + g + 8 * rh;
        double s = 0.0;
        if (r < rows)
#pragma unroll
            for (int j = 0; j < NJ; j++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    const int c0 = 16 * (jb + j) + 8 * hf + 2 * q;
                    const T *xr = x + (int64_t)r * stride + c0;
                    float xv[2] = {0.f, 0.f};
                    if (pair && c0 + 1 < cols) {
                        const float2 f = la_tc_upk(T(), *(const uint32_t *)xr);
                        xv[0] = f.x, xv[1] = f.y;
                    } else {
#pragma unroll
                        for (int i = 0; i < 2; i++)
                            if (c0 + i < cols) xv[i] = la_tc_f(xr[i]);
                    }
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        if (c0 + i >= cols) continue;
                        s += (double)xv[i] * (double)acc[j].x[4 * hf + 2 * rh + i];
                    }
                }
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        if (q == 0 && r < rows) dst[(int64_t)r * nst] = s;
    }
}

/* cuda-sgla21: e^x for the gated walk's factors (x <= 0: a difference of
 * cumulative log-gates, or one of them) as 2^(x log2 e) by one ex2.approx
 * (relative error ~2^-22; the argument rounded to float as la_cu_expd
 * rounds x), 0 below e^-100 and, by .ftz, below 2^-126 (~e^-87.3: products
 * of factors <= 1 lose nothing that matters); la_cu_expd's expf took ~8 more instructions
 * per factor in a walk bound by instruction issue (bench/GPU.md,
 * cuda-sgla21: -4..-6% of the gated walk's time). */
__device__ __forceinline__ float lf_expd(double x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"((float)(x * 1.4426950408889634)));
    return x < -100.0 ? 0.f : y;
}

/* cuda-sgla21: P's gate factors in a gated walk, in place on the warp's
 * accumulators (Q K^T) before the split: element (r, c) of the chunk gets
 * x scale e^{G_r - G_c} where c <= r < L (REV: x scale e^{G_c - G_r} where
 * r <= c < L), else 0. With G non-increasing (log-gates <= 0: the contract,
 * not checked on the device), a block of
 * 16 rows I and 16 columns J on the masked side of the diagonal (J < I;
 * REV: J > I) factors through the earlier block's last token m (16 J + 15;
 * REV: 16 I + 15), which lies between c and r:
 *   e^{G_r - G_c} = e^{G_r - G_m} e^{G_m - G_c}   (REV: e^{G_c - G_m} e^{G_m - G_r}),
 * both factors in (0, 1] (no overflow at g = -1e4; a factor flushed to 0
 * stands for a product below e^-87 anyway). cuda-sgdot24: a pair of tokens
 * gets the same factors, multiplied in the same order (x, the later
 * token's factor with scale, then the earlier token's) in both directions,
 * so the simple GLA backward's dq and dk walks (whose Q K^T sums take the
 * same products in the same order) round the same P entry into parts (see
 * lf_run). The warp's rows x column
 * blocks take 16 NJ row factors and its 16 NJ columns 16 NJ column
 * factors: NJ / 2 + NJ / 2 exps per lane, passed to the elements' lanes by
 * shuffles, instead of one exp (double difference, conversion, expf) per
 * element (2,080 per chunk; the gated walk is bound by instruction issue:
 * bench/GPU.md, cuda-sgla19/20). The diagonal blocks keep one exp per
 * element (as before, same expression). Warp-uniform branches per block. */
template <int NJ, bool REV>
__device__ __forceinline__ void lf_p_gate(la_tc_acc (&acc)[NJ], const double *G, int L,
                                          float scale) {
    static_assert(NJ % 2 == 0, "two column blocks per lane group of 16");
    const int w = lf_w(), jb = lf_jb<NJ>(), lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    float rowf[NJ / 2], colf[NJ / 2];
#pragma unroll
    for (int u = 0; u < NJ / 2; u++) { /* lane: block jb + 2u + lane / 16, row / column lane % 16 */
        rowf[u] = colf[u] = 0.f;
        if (!(REV ? jb + 2 * u + 1 > w : jb + 2 * u < w)) continue; /* neither block off the diagonal */
        const int J = jb + 2 * u + (lane >> 4), m = REV ? 16 * w + 15 : 16 * J + 15;
        const int r = 16 * w + (lane & 15), c = 16 * J + (lane & 15);
        const double dr = REV ? G[m] - G[r] : G[r] - G[m], dc = REV ? G[c] - G[m] : G[m] - G[c];
        /* <= 0 where used; clamped for the blocks that do not use them; the
         * later token's factor carries scale */
        rowf[u] = (REV ? 1.f : scale) * lf_expd(dr < 0.0 ? dr : 0.0);
        colf[u] = (REV ? scale : 1.f) * lf_expd(dc < 0.0 ? dc : 0.0);
    }
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        const int J = jb + j, src = 16 * (j & 1);
        if (REV ? J > w : J < w) { /* off the diagonal: row factor x column factor */
            float a[2], b[2][2];
#pragma unroll
            for (int rh = 0; rh < 2; rh++)
                a[rh] = __shfl_sync(0xffffffffu, rowf[j >> 1], src + g + 8 * rh);
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
#pragma unroll
                for (int i = 0; i < 2; i++)
                    b[hf][i] = __shfl_sync(0xffffffffu, colf[j >> 1], src + 8 * hf + 2 * q + i);
#pragma unroll
            for (int rh = 0; rh < 2; rh++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++)
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        const int r = 16 * w + g + 8 * rh, c = 16 * J + 8 * hf + 2 * q + i;
                        float &x = acc[j].x[4 * hf + 2 * rh + i];
                        x = (REV ? c < L : r < L)
                                ? (REV ? x * b[hf][i] * a[rh] : x * a[rh] * b[hf][i])
                                : 0.f;
                    }
        } else if (J == w) { /* the diagonal block: one exp per element */
#pragma unroll
            for (int rh = 0; rh < 2; rh++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++)
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        const int r = 16 * w + g + 8 * rh, c = 16 * J + 8 * hf + 2 * q + i;
                        float &x = acc[j].x[4 * hf + 2 * rh + i];
                        if (REV)
                            x = (r <= c && c < L) ? x * scale * lf_expd(G[c] - G[r]) : 0.f;
                        else
                            x = (c <= r && r < L) ? x * scale * lf_expd(G[r] - G[c]) : 0.f;
                    }
        } else { /* the masked side */
#pragma unroll
            for (int e = 0; e < 8; e++) acc[j].x[e] = 0.f;
        }
    }
}

/* REV (cuda-fusedb10, the backward): the chunks in reverse order, with
 *   o_j  = sq e^{G_L - G_j} Qf_j S + sum_{i>=j} P_ji v_i,
 *   P_ji = sP e^{G_i - G_j} Qf_j . Kf_i,
 *   S   <- e^{G_L} S + Kf^T Vt,  Vt_i = sv e^{G_i} v_i
 * (S: the gradient of the state at the chunk's end; bench/GPU.md,
 * cuda-fusedb10). The forward: sq = sP = scale, sv = 1.
 * cuda-fused11: NJ (above); 4 barriers per chunk step. cuda-sgla21: gated,
 * warp 0 makes the chunk's G and row factors (Ef) before the first barrier;
 * the others read them between the second and third. */
template <typename T, int NP, int NK, bool REV, int NJ, bool DOT, int NPP>
__global__ void __launch_bounds__(LF_NT(NJ), 2) la_lf_fwd(lf_args p) {
    extern __shared__ __align__(128) unsigned char la_lf_smem[];
    T *const base = (T *)la_lf_smem;
    T *const W = base + (2 * NK + 2) * LA_TC_TILE; /* LF_NW work tiles */
    /* cuda-sgla21: the chunk's cumulative log-gates G and the row factors of
     * o (Ef[0]) and of Vt (Ef[1]), made once per chunk by warp 0 before the
     * step's first barrier, read between its second and third barriers */
    __shared__ double G[64];
    __shared__ float Ef[2][64];
    const int64_t H = p.H, K = p.K, V = p.V;
    const int64_t nh = blockIdx.x / p.nvb, n = nh / H;
    const int h = (int)(nh % H), vb = (int)(blockIdx.x % p.nvb), t = threadIdx.x;
    const int64_t v0 = (int64_t)vb * 64;
    const int bcols = (int)(V - v0 < 64 ? V - v0 : 64);
    const la_cu_seq s = p.seqs[n];
    const float scale = p.scale, gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const bool gated = p.g || p.g_gamma, relu = p.fab, reluc = p.fc, vt = gated || p.sv != 1.f;
    const float sq = p.sq, sv = p.sv;
    const bool three = NP == 3; /* S's and Vt's parts; P's: NPP */
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    T *o = (T *)p.o;
    const T *const mk = (const T *)p.m;
    const bool vec =
        ((K | V) & 7) == 0 &&
        (((uintptr_t)q | (uintptr_t)k | (uintptr_t)v | (uintptr_t)o | (uintptr_t)mk) & 15) == 0;
    /* one buffer of Q and K blocks, two of V (two CTAs per SM) */
    auto Qt = [&](int kb) { return base + kb * LA_TC_TILE; };
    auto Kt = [&](int kb) { return base + (NK + kb) * LA_TC_TILE; };
    auto Vb = [&](int ci) { return base + (2 * NK + (ci & 1)) * LA_TC_TILE; };
    /* chunk ci's (in walk order) tiles: Q blocks (what & 1), K blocks
     * (what & 2), V into Vb(ci) (what & 4) */
    auto fetch = [&](int ci, int what) {
        const la_cu_chunk ch = p.chunks[s.chunk0 + (REV ? s.nch - 1 - ci : ci)];
        const int64_t tq = (ch.tok0 * H + h) * K;
#pragma unroll
        for (int kb = 0; kb < NK; kb++) {
            const int64_t k0 = 64 * kb;
            const int cols = (int)(K - k0 < 64 ? K - k0 : 64);
            if (what & 1)
                la_tc_tile_fetch<T, LF_NT(NJ)>(Qt(kb), q + tq + k0, H * K, ch.len, cols, vec);
            if (what & 2)
                la_tc_tile_fetch<T, LF_NT(NJ)>(Kt(kb), k + tq + k0, H * K, ch.len, cols, vec);
        }
        if (what & 4)
            la_tc_tile_fetch<T, LF_NT(NJ)>(Vb(ci), v + (ch.tok0 * H + h) * V + v0, H * V, ch.len,
                                           bcols, vec);
        la_tc_cp_commit();
    };
    /* chunk ci's gates x0, x1 of tokens 2 lane, 2 lane + 1 (0 past it) */
    auto gates = [&](int ci, float &x0, float &x1) {
        const la_cu_chunk ch = p.chunks[s.chunk0 + (REV ? s.nch - 1 - ci : ci)];
        const int l2 = 2 * (threadIdx.x & 31);
        x0 = l2 < ch.len ? (p.g ? p.g[(ch.tok0 + l2) * H + h] : 0.f) + gam : 0.f;
        x1 = l2 + 1 < ch.len ? (p.g ? p.g[(ch.tok0 + l2 + 1) * H + h] : 0.f) + gam : 0.f;
    };
    la_tc_acc S[NK][NJ];
    const size_t sbase = ((size_t)n * H + h) * K * V;
#pragma unroll
    for (int kb = 0; kb < NK; kb++) {
        lf_acc_in<NJ>(S[kb], p.s0 ? p.s0 + sbase : NULL, p.s0t, 64 * kb, v0, K, V);
        if (p.s0mul != 1.f) lf_each<NJ>(S[kb], [&](int, int, int, float &x) { x *= p.s0mul; });
    }
    if (s.nch > 0) fetch(0, 7);
    float gx0 = 0.f, gx1 = 0.f; /* cuda-occ14: the next chunk's gates, loaded a step ahead */
    if (gated && s.nch > 0 && t < 32) gates(0, gx0, gx1);
    const int w = lf_w(), lane = t & 31;
    for (int c = 0; c < s.nch; c++) {
        const la_cu_chunk ch = p.chunks[s.chunk0 + (REV ? s.nch - 1 - c : c)];
        const int L = ch.len;
        T *const Vs = Vb(c);
        if (DOT) { /* cuda-occ14: the step's dx rows (read at its end) into L2 now */
            const T *const dx = (const T *)p.dx + (ch.tok0 * H + h) * V + v0 + 16 * (t & 3);
            for (int r = t >> 2; r < L; r += LF_NT(NJ) / 4) /* 32 bytes a thread */
                if (16 * (t & 3) < bcols)
                    asm volatile("prefetch.global.L2 [%0];" ::"l"(dx + (int64_t)r * H * V));
        }
        /* cuda-fused11: ungated walks read no G (every factor is exactly 1);
         * the previous chunk's G and Ef were last read before its third barrier */
        if (gated && t < 32) {
            double G0, G1;
            la_tc_warp_gates_reg(G0, G1, (double)gx0, (double)gx1);
            const double GLx = __shfl_sync(0xffffffffu, ((L - 1) & 1) ? G1 : G0, (L - 1) >> 1);
            G[2 * lane] = G0, G[2 * lane + 1] = G1;
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int r = 2 * lane + i;
                const double Gr = i ? G1 : G0;
                Ef[0][r] = r < L ? sq * lf_expd(REV ? GLx - Gr : Gr) : 0.f;
                Ef[1][r] = r < L ? sv * lf_expd(REV ? Gr : GLx - Gr) : 0.f;
            }
        }
        /* S's parts into W before the wait (W's last readers, chunk c-1's
         * P V and state update, are behind its last barrier) */
#pragma unroll
        for (int kb = 0; kb < NK; kb++)
            lf_acc_split<T, NJ>(S[kb], W + 3 * kb * LA_TC_TILE, W + (3 * kb + 1) * LA_TC_TILE,
                                three ? W + (3 * kb + 2) * LA_TC_TILE : (T *)NULL,
                                [](int, int, float x) { return x; });
        la_tc_cp_wait_all();
        /* relu on the thread's own fetched pieces: no barrier of its own */
        if (relu) {
#pragma unroll
            for (int kb = 0; kb < NK; kb++) {
                lf_relu<T, NJ>(Qt(kb));
                lf_relu<T, NJ>(Kt(kb));
            }
        }
        if (reluc) lf_relu<T, NJ>(Vs);
        __syncthreads(); /* chunk c's tiles and S's parts in */
        la_tc_acc accP[NJ], accO[NJ];
        lf_each<NJ>(accP, [](int, int, int, float &x) { x = 0.f; });
        lf_each<NJ>(accO, [](int, int, int, float &x) { x = 0.f; });
#pragma unroll
        for (int kb = 0; kb < NK; kb++) { /* Q K^T, then Q S_hi, Q S_lo (, Q S_lo2) */
            T *const Sp = W + 3 * kb * LA_TC_TILE;
            lf_mma_a2<T, NP, true, NJ>(accP, accO, Qt(kb), Kt(kb), Sp);
        }
        __syncthreads(); /* Q and the S parts are free: Q, V take chunk c+1 (V the other
                            buffer, last read before chunk c's first barrier), P and Vt
                            the parts */
        if (c + 1 < s.nch) {
            fetch(c + 1, 5);
            if (gated && t < 32) gates(c + 1, gx0, gx1);
        }
        T *const Ph = W, *const Pl = W + LA_TC_TILE,
                 *const Pl2 = NPP == 3 ? W + 2 * LA_TC_TILE : NULL;
        T *const Th = W + 3 * LA_TC_TILE, *const Tl = W + 4 * LA_TC_TILE,
                 *const Tl2 = three ? W + 5 * LA_TC_TILE : NULL;
        const double GL = gated && L > 0 ? G[L - 1] : 0.0;
        if (gated) { /* cuda-sgla21: the factors in place, then the parts */
            lf_p_gate<NJ, REV>(accP, G, L, scale);
            lf_acc_split<T, NJ>(accP, Ph, Pl, Pl2, [](int, int, float x) { return x; });
        } else {
            lf_acc_split<T, NJ>(accP, Ph, Pl, Pl2, [&](int r, int cc, float x) -> float {
                return (REV ? r <= cc && cc < L : cc <= r && r < L) ? x * scale : 0.f;
            });
        }
        if (vt) /* Vt = sv e^{G_L - G_j} v_j (REV: sv e^{G_j} v_j) as parts; V stays for P V */
            lf_scaled_parts<T, LF_NT(NJ)>(Th, Tl, Tl2, Vs, [&](int r) {
                return gated ? Ef[1][r] : r < L ? sv : 0.f;
            });
        float rf[2];
#pragma unroll
        for (int rh = 0; rh < 2; rh++) {
            const int r = 16 * w + (lane >> 2) + 8 * rh;
            rf[rh] = gated ? Ef[0][r] : r < L ? sq : 0.f;
        }
        lf_each<NJ>(accO, [&](int rh, int, int, float &x) { x *= rf[rh]; });
        __syncthreads();
        if (vt) { /* P V with the state update S <- e^{G_L} S + K^T Vt */
            if (gated) {
                const float eL = lf_expd(GL);
#pragma unroll
                for (int kb = 0; kb < NK; kb++)
                    lf_each<NJ>(S[kb], [&](int, int, int, float &x) { x *= eL; });
            }
            lf_mma_pv<T, NP, NK, NJ, true, NPP>(accO, Ph, Vs, S, Kt(0), Th);
        } else { /* P V with S <- S + K^T V */
            lf_mma_pv<T, NP, NK, NJ, false, NPP>(accO, Ph, Vs, S, Kt(0), NULL);
        }
        __syncthreads(); /* K, V, P, Vt read: K takes chunk c+1, W chunk c+1's S parts */
        if (c + 1 < s.nch) fetch(c + 1, 2);
        if (DOT) /* cuda-fused12: the gate gradient's token dots */
            lf_row_dots<T, NJ>(p.dpart + (ch.tok0 * H + h) * p.nslot + vb * (4 / NJ) + (t >> 7),
                               H * p.nslot, (const T *)p.dx + (ch.tok0 * H + h) * V + v0, H * V,
                               accO, L, bcols);
        /* o: staged through the warp's own region of W tile 0 (free until
         * this warp's S split of chunk c+1) when vec */
        if (vec)
            lf_acc_store_st<T, NJ>(o + (ch.tok0 * H + h) * V + v0, H * V, accO, L, bcols, W,
                                   mk ? mk + (ch.tok0 * H + h) * V + v0 : (const T *)NULL);
        else
            lf_acc_store<T, NJ>(o + (ch.tok0 * H + h) * V + v0, H * V, accO, L, bcols, false,
                                mk ? mk + (ch.tok0 * H + h) * V + v0 : (const T *)NULL);
    }
    if (p.fin)
#pragma unroll
        for (int kb = 0; kb < NK; kb++) {
            if (p.finmul != 1.f)
                lf_each<NJ>(S[kb], [&](int, int, int, float &x) { x *= p.finmul; });
            lf_acc_out<NJ>(p.fin + sbase, S[kb], DOT && p.fint, 64 * kb, v0, K, V);
        }
}

/* cuda-sfrag18: four 8x8 16-bit matrices stored transposed (stmatrix,
 * sm_90): lane l gives the address of row l % 8 of stored matrix l / 8. */
__device__ __forceinline__ void lf_stsm4t(void *p, const uint32_t (&r)[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(a),
                 "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
                 : "memory");
#endif
}

/* cuda-sfrag18: O^T (the warp's value rows 16 w .., token columns in acc[j],
 * j < 4) rounded to T and stored as o's rows r < rows, columns c < cols
 * (element (0, 0) at dst, row stride `stride`): transposed into the warp's
 * 16 columns of the tile Wt ([token][value]; no other warp touches them
 * until the caller's next barrier), then 16-byte pieces of them (vec) or
 * single elements to global memory. Rounds as lf_acc_store does. */
template <typename T, bool MSK>
__device__ __forceinline__ void lf_ot_store(T *dst, int64_t stride, const la_tc_acc (&acc)[4],
                                            int rows, int cols, bool vec, T *Wt, const T *m) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < 4; j++) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        /* matrix i: values 8 (i & 1) .., tokens 8 (i >> 1) .. (the m16n8
         * pair's registers are the ldmatrix / stmatrix fragments) */
        uint32_t r[4];
#pragma unroll
        for (int i = 0; i < 4; i++) r[i] = la_tc_pk(T(), acc[j].x[2 * i], acc[j].x[2 * i + 1]);
        const int mi = lane >> 3;
        lf_stsm4t(Wt + (16 * j + 8 * (mi >> 1) + (lane & 7)) * LA_TC_LD + 16 * w + 8 * (mi & 1), r);
#else
        const int g = lane >> 2, q = lane & 3;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            T *d = Wt + (16 * j + 8 * (i >> 1) + 2 * q) * LA_TC_LD + 16 * w + 8 * (i & 1) + g;
            d[0] = la_tc_cvt<T>(acc[j].x[2 * i]);
            d[LA_TC_LD] = la_tc_cvt<T>(acc[j].x[2 * i + 1]);
        }
#endif
    }
    __syncwarp();
#pragma unroll
    for (int u = 0; u < 4; u++) { /* 64 rows x 2 pieces */
        const int pc = lane + 32 * u, r = pc >> 1, c = 16 * w + 8 * (pc & 1);
        if (r >= rows || c >= cols) continue;
        const T *src = Wt + r * LA_TC_LD + c;
        T *d = dst + (int64_t)r * stride + c;
        const T *mm = MSK && m ? m + (int64_t)r * stride + c : (const T *)NULL;
        if (vec) { /* cols % 8 == 0 */
            uint32_t x[4];
            *(uint4 *)x = *(const uint4 *)src;
            if (MSK && mm) {
                uint32_t y[4];
                *(uint4 *)y = *(const uint4 *)mm;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float2 f = la_tc_upk(T(), y[i]);
                    x[i] &= (f.x > 0.f ? 0xffffu : 0u) | (f.y > 0.f ? 0xffff0000u : 0u);
                }
            }
            *(uint4 *)d = *(const uint4 *)x;
        } else
#pragma unroll
            for (int i = 0; i < 8; i++)
                if (c + i < cols)
                    d[i] = (MSK && mm && !((float)mm[i] > 0.f)) ? la_tc_cvt<T>(0.f) : src[i];
    }
}

/* cuda-sfrag18: the ungated forward walk (la_lf_fwd's !REV, !DOT, no gates,
 * sv = 1, no o mask) with the state held transposed. One CTA of 4 warps per
 * (sequence, head, 64 value columns); warp w owns value rows 16 w .. + 15 of
 *   S^T (values x keys, fp32, 8 NK m16n8 accumulator pairs = 64 registers
 *   at K = 128) and O^T (values x tokens). Per chunk:
 *   P    = scale mask(Qf Kf^T)   (warp w: token rows 16 w .., as parts in smem)
 *   O^T  = sq S^T Qf^T + V^T P^T
 *   S^T += V^T Kf
 * An accumulator pair is the m16k16 A fragment (a_i = pk(x_2i, x_2i+1)), so
 * S^T's 16-bit parts are made in registers per key step and Q S loads only
 * Q's fragments: no S parts go through shared memory (la_lf_fwd: stores and
 * loads of 3 S tiles per step, the walk's largest shared-memory traffic).
 * V^T's fragment serves V^T P^T and the state update; P^T's blocks above
 * the diagonal (all zero) are skipped. O^T leaves through lf_ot_store.
 * Every element of o and S sums the same mma products in the same order as
 * la_lf_fwd (the transposed products of the same 16-key / 16-token steps,
 * the NP parts per step): bitwise la_lf_fwd's o (measured at three shapes).
 * Tiles: Q (NK), two buffers of K (NK) and V, P's NP parts (hi doubles as
 * O's staging tile): 11 at NK = 2, NP = 3 (101,376 B; 10 at NP = 2), 2 CTAs
 * per SM (255 registers;
 * a 168-register build for 3 CTAs per SM measured slower). 3 barriers per
 * step; chunk c+1's K, V go out at the step's first barrier, its Q when
 * Q K^T and Q S are done. Shared wavefronts per step -38% against la_lf_fwd
 * (ncu), but only 8 warps per SM: the walk is latency-bound now, -6..-8%
 * end to end (bench/GPU.md, cuda-sfrag18). Gated, DOT and split walks still
 * run la_lf_fwd (not ported).
 * cuda-lin21: REV (la_lf_fwd's REV, ungated, sv = 1: the chunks in reverse
 * order, P_ji nonzero for i >= j, so P's blocks below the diagonal and
 * P^T's above it are the skipped ones) and MSK (p.fc: relu on the v tiles,
 * p.m: o's rows masked by m > 0; the backward's relu walks), so the
 * backward's three ungated unsplit walks (dk, dq, dv) run here too; same
 * products in the same order as la_lf_fwd: same bits (measured). MSK is a
 * template argument because at 255 registers even unused runtime code moved
 * the forward 10% (measured). PF (the reverse walks): P's key steps first,
 * its parts stored, then S^T Qf^T's (same sums, same order), so P's 32
 * accumulators are dead during S^T Qf^T: ptxas spills of the bf16 reverse
 * walk 168 -> 24 B; with PF it takes 238 us at 8,2048,16,128 against
 * la_lf_fwd's 246 (without PF, runtime mask: 269); the forward-order walks
 * were slower with it (bench/GPU.md, cuda-lin21). */
template <typename T, int NP, int NK, bool REV, bool MSK, bool PF>
__global__ void __launch_bounds__(128, 2) la_lf_sfwd(lf_args p) {
    constexpr int KB = 4 * NK;
    extern __shared__ __align__(128) unsigned char la_lfs_smem[];
    T *const base = (T *)la_lfs_smem; /* Q blocks, 2 x (K blocks, V), P's parts */
    T *const Pp = base + (NK + 2 * (NK + 1)) * LA_TC_TILE;
    auto Qt = [&](int kb) { return base + kb * LA_TC_TILE; };
    auto Kt = [&](int ci, int kb) { return base + (NK + (ci & 1) * (NK + 1) + kb) * LA_TC_TILE; };
    auto Vt = [&](int ci) { return Kt(ci, NK); };
    const int64_t H = p.H, K = p.K, V = p.V;
    const int64_t nh = blockIdx.x / p.nvb, n = nh / H;
    const int h = (int)(nh % H), vb = (int)(blockIdx.x % p.nvb), w = threadIdx.x >> 5;
    const int64_t v0 = (int64_t)vb * 64;
    const int bcols = (int)(V - v0 < 64 ? V - v0 : 64);
    const la_cu_seq s = p.seqs[n];
    const float scale = p.scale, sq = p.sq;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    T *o = (T *)p.o;
    const T *const mk = MSK ? (const T *)p.m : (const T *)NULL;
    const bool vec =
        ((K | V) & 7) == 0 &&
        (((uintptr_t)q | (uintptr_t)k | (uintptr_t)v | (uintptr_t)o | (uintptr_t)mk) & 15) == 0;
    auto fetch = [&](int ci, int what) { /* what: 1 Q, 2 K, 4 V (ci in walk order) */
        const la_cu_chunk ch = p.chunks[s.chunk0 + (REV ? s.nch - 1 - ci : ci)];
        const int64_t tq = (ch.tok0 * H + h) * K;
#pragma unroll
        for (int kb = 0; kb < NK; kb++) {
            const int cols = (int)(K - 64 * kb < 64 ? K - 64 * kb : 64);
            if (what & 1) la_tc_tile_fetch<T, 128>(Qt(kb), q + tq + 64 * kb, H * K, ch.len, cols, vec);
            if (what & 2) la_tc_tile_fetch<T, 128>(Kt(ci, kb), k + tq + 64 * kb, H * K, ch.len, cols, vec);
        }
        if (what & 4)
            la_tc_tile_fetch<T, 128>(Vt(ci), v + (ch.tok0 * H + h) * V + v0, H * V, ch.len, bcols, vec);
        la_tc_cp_commit();
    };
    if (s.nch > 0) fetch(0, 7); /* in flight while the initial state loads */
    la_tc_acc S[KB]; /* S^T: element (r, c) = S[key c][value v0 + r] */
    const size_t sbase = ((size_t)n * H + h) * K * V;
    const float *s0 = p.s0 ? p.s0 + sbase : NULL;
    la_tc_acc_each_part<KB>(S, w, 0, [&](int, int r, int c, float &x) {
        const int64_t vv = v0 + r;
        x = (s0 && c < K && vv < V) ? (p.s0t ? s0[vv * K + c] : s0[c * V + vv]) * p.s0mul : 0.f;
    });
    for (int c = 0; c < s.nch; c++) {
        const la_cu_chunk ch = p.chunks[s.chunk0 + (REV ? s.nch - 1 - c : c)];
        const int L = ch.len;
        T *const Vs = Vt(c);
        la_tc_cp_wait_all();
        if (p.fab) /* relu on the thread's own fetched pieces */
#pragma unroll
            for (int kb = 0; kb < NK; kb++) {
                lf_relu<T, 4>(Qt(kb));
                lf_relu<T, 4>(Kt(c, kb));
            }
        if (MSK && p.fc) lf_relu<T, 4>(Vs);
        __syncthreads(); /* A: chunk c's tiles in; the last step's O staging read */
        /* chunk c+1's K, V into the other buffers (last read in step c-1) */
        if (c + 1 < s.nch) fetch(c + 1, 6);
        la_tc_acc accP[4], accO[4];
        lf_each<4>(accP, [](int, int, int, float &x) { x = 0.f; });
        lf_each<4>(accO, [](int, int, int, float &x) { x = 0.f; });
        /* S^T Qf^T's key step kk of key block kb: the accumulator pair
         * S[4 kb + kk] as NP 16-bit A fragments (hi, lo (, lo2)) */
        auto sq_step = [&](int kb, int kk) {
            uint32_t b[4], sa[3][4];
            const la_tc_acc &x = S[4 * kb + kk];
#pragma unroll
            for (int i = 0; i < 4; i++)
                la_tc_split2<T>(x.x[2 * i], x.x[2 * i + 1], sa[0][i], sa[1][i], sa[2][i]);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                lf_ldb<T, true>(b, Qt(kb), kk, j); /* Qf^T: [token][key] = [n][k] */
#pragma unroll
                for (int pi = 0; pi < NP; pi++) lf_mma16<T>(accO[j], sa[pi], b);
            }
        };
#pragma unroll
        for (int kb = 0; kb < NK; kb++)
#pragma unroll
            for (int kk = 0; kk < 4; kk++) { /* key step: Qf K^T (token rows 16 w), S^T Qf^T */
                uint32_t a[4], b[4];
                lf_lda<T, false>(a, Qt(kb), kk);
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    if (REV ? j < w : j > w) continue; /* P's masked blocks (zero anyway) */
                    lf_ldb<T, true>(b, Kt(c, kb), kk, j);
                    lf_mma16<T>(accP[j], a, b);
                }
                if (!PF) sq_step(kb, kk); /* PF: after P's parts are out (below) */
            }
        lf_acc_split<T, 4>(accP, Pp, Pp + LA_TC_TILE, NP == 3 ? Pp + 2 * LA_TC_TILE : (T *)NULL,
                           [&](int r, int cc, float x) {
                               return (REV ? r <= cc && cc < L : cc <= r && r < L) ? x * scale : 0.f;
                           });
        if (PF) /* cuda-lin21: the key steps of S^T Qf^T with P's accumulators dead */
#pragma unroll
            for (int kb = 0; kb < NK; kb++)
#pragma unroll
                for (int kk = 0; kk < 4; kk++) sq_step(kb, kk);
        lf_each<4>(accO, [&](int, int, int cc, float &x) { x *= cc < L ? sq : 0.f; });
        __syncthreads(); /* B: P's parts in; Q free: chunk c+1's Q goes out */
        if (c + 1 < s.nch) fetch(c + 1, 1);
#pragma unroll
        for (int kt = 0; kt < 4; kt++) { /* token step: V^T P^T and S^T += V^T Kf */
            uint32_t a[4];
            lf_lda<T, true>(a, Vs, kt); /* V^T: [token][value] = [k][m] */
#pragma unroll
            for (int j = 0; j < 4; j++) {
                /* P^T(kt, j) = 0 for kt > j (REV: kt < j): tokens 16 kt .. past
                 * (REV: before) 16 j .. 16 j + 15 */
                if (REV ? j > kt : j < kt) continue;
#pragma unroll
                for (int pi = 0; pi < NP; pi++) {
                    uint32_t b[4];
                    lf_ldb<T, true>(b, Pp + pi * LA_TC_TILE, kt, j); /* P: [i][j] = [n][k] */
                    lf_mma16<T>(accO[j], a, b);
                }
            }
#pragma unroll
            for (int kc = 0; kc < KB; kc++) {
                uint32_t b[4];
                lf_ldb<T, false>(b, Kt(c, kc >> 2), kt, kc & 3); /* Kf: [token][key] = [k][n] */
                lf_mma16<T>(S[kc], a, b);
            }
        }
        __syncthreads(); /* C: K, V, P read */
        lf_ot_store<T, MSK>(o + (ch.tok0 * H + h) * V + v0, H * V, accO, L, bcols, vec, Pp,
                            MSK ? mk + (ch.tok0 * H + h) * V + v0 : (const T *)NULL);
    }
    if (p.fin)
        la_tc_acc_each_part<KB>(S, w, 0, [&](int, int r, int c, float &x) {
            const int64_t vv = v0 + r;
            if (c < K && vv < V) p.fin[sbase + (p.fint ? vv * K + c : c * V + vv)] = x * p.finmul;
        });
}

/* LINATTN_CUDA_LIN_FUSED: 0 never, 1 whenever supported, unset / other:
 * when supported and the grid has >= 1.25 CTAs per SM (one CTA walks a
 * whole sequence: with fewer CTAs the chunk-parallel path is faster). */
static int lf_mode() {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_LIN_FUSED");
        mode = !e ? 2 : e[0] == '0' ? 0 : e[0] == '1' ? 1 : 2;
    }
    return mode;
}

static bool lf_supported(const la__cu_call *c) {
    if (c->dtype != LA_DTYPE_BF16 && c->dtype != LA_DTYPE_F16) return false;
    if (c->K < 1 || c->K > 128 || c->V < 1) return false;
    return c->feature_map == LA_FEATURE_IDENTITY || c->feature_map == LA_FEATURE_RELU;
}

static int64_t lf_sms() {
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        return 0;
    return sms;
}

bool la__lf_use(const la__cu_call *c) {
    const int mode = lf_mode();
    if (mode == 0 || !lf_supported(c)) return false;
    if (mode == 1) return true;
    const int64_t sms = lf_sms();
    const int64_t ctas = c->N * c->H * ((c->V + 63) / 64);
    return sms > 0 && 4 * ctas >= 5 * sms; /* 1.25 waves of one CTA per SM (two fit) */
}

/* cuda-lsplit13: the 16-bit forward split over time where the walk's grid is
 * small. With Gp the segment's total log-decay (sum over its tokens of
 * g + gamma, in double; 0 ungated), the state after a segment is
 * e^{Gp} times its start state plus the segment's local sum (its end state
 * from a zero start, the in-segment decays applied), so
 *   1. cuda-lsplit14: la_lf_local (below: the walk's state update alone,
 *      no q, no o) over the segments (as sequences, la_cu_dss_table) from
 *      zero states leaves each segment's local sum; gated: la_lf_seg_decay,
 *      one warp per (segment, head), e^{Gp};
 *   2. la_lf_seg_scan: start(0) = s0 (or 0), start(p + 1) = e^{Gp}
 *      start(p) + local_p in fp32, p ascending (the starts over the local
 *      sums, in place); the last one is the final state;
 *   3. the walk over the segments from their start states writes o.
 * Segment p holds chunks p cs .. min((p + 1) cs, nch) - 1, cs = ceil(nch /
 * P) (trailing ones may be empty). P depends on the shape and the SM count
 * only, the sums run in a fixed order: bitwise identical run to run (not
 * to the unsplit walk: the states are summed in another order).
 * LINATTN_CUDA_LIN_SPLIT: 0 never; unset / 1 by grid size (where the fused
 * walk is not taken: the smallest power of two P <= 16 with P CTAs >= 1.25
 * SMs, halved while the chunks per sequence are under 8 P); n >= 2 always
 * with P = n where the fused walk is supported (tests). */
static int lsp_env() {
    static int mode = -1;
    if (mode < 0) {
        const char *e = getenv("LINATTN_CUDA_LIN_SPLIT");
        const int v = e ? atoi(e) : 1;
        mode = v < 0 ? 0 : v > 64 ? 64 : v;
    }
    return mode;
}

int la__lf_split_p(const la__cu_call *c, int64_t nchunks) {
    const int mode = lsp_env();
    if (mode == 0 || lf_mode() == 0 || !lf_supported(c)) return 0;
    if (mode >= 2) return mode;
    if (lf_mode() == 1 || c->N <= 0) return 0;
    const int64_t sms = lf_sms(), ctas = c->N * c->H * ((c->V + 63) / 64);
    if (sms <= 0 || ctas <= 0 || 4 * ctas >= 5 * sms) return 0;
    int P = 2;
    while (P < 16 && 4 * ctas * P < 5 * sms) P <<= 1;
    while (P >= 2 && nchunks < 8 * (int64_t)P * c->N) P >>= 1;
    return P >= 2 ? P : 0;
}

/* e^{Gp} of segment (n P + p), head h at dec[(n P + p) H + h]: lane l sums
 * the gates of tokens l, l + 32, .. in double, then a fixed butterfly. */
__global__ void la_lf_seg_decay(const la_cu_seq *segs, const float *g, const float *g_gamma,
                                float *dec, int64_t nseg, int64_t H) {
    const int64_t wi = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (wi >= nseg * H) return; /* whole warps */
    const la_cu_seq s = segs[wi / H];
    const int64_t h = wi % H;
    const float gam = g_gamma ? g_gamma[h] : 0.f;
    double x = 0.0;
    for (int64_t i = lane; i < s.len; i += 32)
        x += (double)((g ? g[(s.start + i) * H + h] : 0.f) + gam);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
    if (lane == 0) dec[wi] = la_cu_expd(x);
}

/* One thread per (sequence, state element): st holds the segments' local
 * sums and takes their start states; dec (NULL: ungated) the segments'
 * e^{Gp} per head; the final state to fin (may be NULL). The loads of 8
 * segments go out before their stores (in place: the compiler could not
 * move a load past a store). cuda-bsplit16: rev walks the segments with p
 * descending (the backward's reverse walks: a segment starts from the sum
 * over the segments after it); the initial state is s0 s0mul, read
 * transposed ([V][K] per head) when s0t, the final state stored times
 * finmul, transposed when fint (the walk's own s0t / s0mul / fint /
 * finmul). In place when fin == s0 and s0t == fint (each thread reads its
 * element before it writes it). cuda-lscan16: the local sums are read from
 * loc (== st: in place), transposed ([V][K] per head) when lt. */
__global__ void la_lf_seg_scan(float *st, const float *loc, int lt, const float *dec, const float *s0,
                               float *fin, int64_t N, int64_t H, int64_t K, int64_t V, int P, int rev,
                               int s0t, float s0mul, int fint, float finmul) {
    const int64_t KV = K * V, HKV = H * KV, e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= N * HKV) return;
    const int64_t n = e / HKV, r = e % HKV, h = r / KV, x = r % KV;
    const int64_t te = e - x + (x % V) * K + x / V; /* the element's transposed place */
    const int64_t se = s0t ? te : e, lr = lt ? te - n * HKV : r;
    float s = s0 ? s0[se] * s0mul : 0.f;
    for (int p0 = 0; p0 < P; p0 += 8) {
        float l[8], d[8];
#pragma unroll
        for (int j = 0; j < 8; j++)
            if (p0 + j < P) {
                const int64_t sg = n * P + (rev ? P - 1 - (p0 + j) : p0 + j);
                l[j] = loc[sg * HKV + lr];
                d[j] = dec ? dec[sg * H + h] : 1.f;
            }
#pragma unroll
        for (int j = 0; j < 8; j++)
            if (p0 + j < P) {
                st[(n * P + (rev ? P - 1 - (p0 + j) : p0 + j)) * HKV + r] = s;
                s = dec ? d[j] * s + l[j] : s + l[j];
            }
    }
    if (fin) fin[fint ? te : e] = s * finmul;
}

/* cuda-lsplit14: the split's local pass. One CTA (8 warps, the walk's NJ = 2
 * layout) per (segment, head, 64 value columns) sums S = Kf^T Vt over the
 * segment's chunks from zero, all K (<= 128) rows at once: per chunk
 * S <- e^{G_L} S + Kf^T Vt with Vt_j = e^{G_L - G_j} v_j as 16-bit parts
 * (ungated: v as copied, one product), the same products in the same order
 * as the walk's state update. k, v tiles double-buffered by cp.async (the
 * next chunk's copy runs during this chunk's products), Vt's parts made
 * once per chunk for both key blocks; no q, no o. Writes S to p.fin.
 * Relu on the k tiles where p.fab, on the v tiles where p.fc (cuda-bsplit16:
 * the backward's walks, whose "k" and "v" are other tensors). REV
 * (cuda-bsplit16): the reverse walk's update (la_lf_fwd's REV), chunks in
 * reverse order, Vt_j = e^{G_j} v_j. */
template <typename T, int NK, bool REV>
__global__ void __launch_bounds__(LF_NT(2), 2) la_lf_local(lf_args p) {
    constexpr int NJ = 2, NT = LF_NT(NJ);
    extern __shared__ __align__(128) unsigned char la_lfl_smem[];
    T *const base = (T *)la_lfl_smem; /* 2 x (NK K tiles, V tile), then Vt's parts */
    __shared__ double Gw[NT / 32][64];
    const int64_t H = p.H, K = p.K, V = p.V;
    const int64_t nh = blockIdx.x / p.nvb, n = nh / H;
    const int h = (int)(nh % H), vb = (int)(blockIdx.x % p.nvb), t = threadIdx.x, lane = t & 31;
    const int64_t v0 = (int64_t)vb * 64;
    const int bcols = (int)(V - v0 < 64 ? V - v0 : 64);
    const la_cu_seq s = p.seqs[n];
    const float gam = p.g_gamma ? p.g_gamma[h] : 0.f;
    const bool gated = p.g || p.g_gamma, three = la_tc_three<T>::value;
    const T *k = (const T *)p.k, *v = (const T *)p.v;
    const bool vec = ((K | V) & 7) == 0 && (((uintptr_t)k | (uintptr_t)v) & 15) == 0;
    auto Kt = [&](int buf, int kb) { return base + (buf * (NK + 1) + kb) * LA_TC_TILE; };
    auto Vs = [&](int buf) { return base + (buf * (NK + 1) + NK) * LA_TC_TILE; };
    T *const Th = base + 2 * (NK + 1) * LA_TC_TILE, *const Tl = Th + LA_TC_TILE;
    T *const Tl2 = three ? Th + 2 * LA_TC_TILE : (T *)NULL;
    auto fetch = [&](int ci, int buf) {
        const la_cu_chunk ch = p.chunks[s.chunk0 + (REV ? s.nch - 1 - ci : ci)];
#pragma unroll
        for (int kb = 0; kb < NK; kb++) {
            const int cols = (int)(K - 64 * kb < 64 ? K - 64 * kb : 64);
            la_tc_tile_fetch<T, NT>(Kt(buf, kb), k + (ch.tok0 * H + h) * K + 64 * kb, H * K, ch.len,
                                    cols, vec);
        }
        la_tc_tile_fetch<T, NT>(Vs(buf), v + (ch.tok0 * H + h) * V + v0, H * V, ch.len, bcols, vec);
        la_tc_cp_commit();
    };
    la_tc_acc S[NK][NJ];
#pragma unroll
    for (int kb = 0; kb < NK; kb++) lf_each<NJ>(S[kb], [](int, int, int, float &x) { x = 0.f; });
    if (s.nch > 0) fetch(0, 0);
    double *G = Gw[t >> 5];
    for (int c = 0; c < s.nch; c++) {
        const int buf = c & 1;
        const la_cu_chunk ch = p.chunks[s.chunk0 + (REV ? s.nch - 1 - c : c)];
        const int L = ch.len;
        if (gated) { /* the walk's gates (la_tc_warp_gates), the warp's own copy */
            __syncwarp();
            const float x0 =
                2 * lane < L ? (p.g ? p.g[(ch.tok0 + 2 * lane) * H + h] : 0.f) + gam : 0.f;
            const float x1 =
                2 * lane + 1 < L ? (p.g ? p.g[(ch.tok0 + 2 * lane + 1) * H + h] : 0.f) + gam : 0.f;
            la_tc_warp_gates(G, (double)x0, (double)x1);
            __syncwarp();
        }
        la_tc_cp_wait_all();
        if (p.fab)
#pragma unroll
            for (int kb = 0; kb < NK; kb++) lf_relu<T, NJ>(Kt(buf, kb));
        if (p.fc) lf_relu<T, NJ>(Vs(buf)); /* cuda-bsplit16: the backward's walks */
        __syncthreads(); /* chunk c's tiles in; chunk c-1's readers (buf ^ 1, parts) done */
        if (c + 1 < s.nch) fetch(c + 1, buf ^ 1);
        if (gated) {
            const double GL = L > 0 ? G[L - 1] : 0.0;
            lf_scaled_parts<T, NT>(Th, Tl, Tl2, Vs(buf),
                                   [&](int r) { return r < L ? la_cu_expd(REV ? G[r] : GL - G[r]) : 0.f; });
            __syncthreads(); /* Vt's parts in */
            const float eL = la_cu_expd(GL);
#pragma unroll
            for (int kb = 0; kb < NK; kb++)
                lf_each<NJ>(S[kb], [&](int, int, int, float &x) { x *= eL; });
            lf_mma_st<T, lf_np<T>::value, NK, NJ, true>(S, Kt(buf, 0), NULL, Th);
        } else {
            lf_mma_st<T, lf_np<T>::value, NK, NJ, false>(S, Kt(buf, 0), Vs(buf), NULL);
        }
    }
    const size_t sbase = ((size_t)n * H + h) * K * V;
#pragma unroll
    for (int kb = 0; kb < NK; kb++) lf_acc_out<NJ>(p.fin + sbase, S[kb], false, 64 * kb, v0, K, V);
}

template <typename T, int NK, bool REV>
static la_status lf_local_launch(const char *op, cudaStream_t stream, int64_t ctas,
                                 const lf_args &a) {
    const size_t smem = (size_t)(2 * (NK + 1) + 3) * LA_TC_TILE_BYTES;
    LA_CU_TRY(op, cudaFuncSetAttribute(la_lf_local<T, NK, REV>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    la_lf_local<T, NK, REV><<<(unsigned)ctas, LF_NT(2), smem, stream>>>(a);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}

/* cuda-fused11: LINATTN_CUDA_LIN_FUSED_WARPS = 4: 4 warps per CTA (each
 * warp all 64 columns of its rows, NJ = 4); unset / other: 8 warps (NJ = 2). */
static int lf_nj() {
    static int nj = 0;
    if (!nj) {
        const char *e = getenv("LINATTN_CUDA_LIN_FUSED_WARPS");
        nj = e && e[0] == '4' && !e[1] ? 4 : 2;
    }
    return nj;
}

template <typename T, int NP, int NK, bool REV, int NJ, bool DOT, int NPP>
static la_status lf_launch(const char *op, cudaStream_t stream, int64_t ctas, const lf_args &a) {
    const size_t smem = lf_smem(NK);
    LA_CU_TRY(op, cudaFuncSetAttribute(la_lf_fwd<T, NP, NK, REV, NJ, DOT, NPP>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    la_lf_fwd<T, NP, NK, REV, NJ, DOT, NPP><<<(unsigned)ctas, LF_NT(NJ), smem, stream>>>(a);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}
template <typename T, int NP, int NK, bool REV, bool DOT, int NPP>
static la_status lf_launch_nj(const char *op, cudaStream_t stream, int64_t ctas, const lf_args &a) {
    return lf_nj() == 4 ? lf_launch<T, NP, NK, REV, 4, DOT, NPP>(op, stream, ctas, a)
                        : lf_launch<T, NP, NK, REV, 2, DOT, NPP>(op, stream, ctas, a);
}

/* cuda-sfrag18: LINATTN_CUDA_LIN_SFRAG = 0: the ungated walks run la_lf_fwd
 * as before (A/B); unset / other: la_lf_sfwd for the forward and (cuda-lin21)
 * the backward's three walks. Whether a walk over P segments (0: unsplit)
 * takes la_lf_sfwd: unsplit walks only (the split's walks from start states
 * measured slower with it: cuda-sfrag18 forward 3%; cuda-lin21 forward and
 * backward 10-14% at 1,16384,16,128). */
static bool lf_sfrag_env(int P) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("LINATTN_CUDA_LIN_SFRAG");
        on = !(e && e[0] == '0' && !e[1]);
    }
    return !P && on;
}
template <typename T, int NP, int NK, bool REV, bool MSK, bool PF>
static la_status lf_sfwd_launch1(const char *op, cudaStream_t stream, int64_t ctas,
                                 const lf_args &a) {
    const size_t smem = (size_t)(3 * NK + 2 + NP) * LA_TC_TILE_BYTES;
    LA_CU_TRY(op, cudaFuncSetAttribute(la_lf_sfwd<T, NP, NK, REV, MSK, PF>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    LA_CU_TRY(op, cudaFuncSetAttribute(la_lf_sfwd<T, NP, NK, REV, MSK, PF>,
                                       cudaFuncAttributePreferredSharedMemoryCarveout,
                                       cudaSharedmemCarveoutMaxShared));
    la_lf_sfwd<T, NP, NK, REV, MSK, PF><<<(unsigned)ctas, 128, smem, stream>>>(a);
    LA_CU_LAUNCHED(op);
    return LA_OK;
}
/* MSK where the walk has an o mask or relu'd v tiles (the backward's relu
 * walks); P first (PF) in the reverse walks only: the forward-order walks
 * measured slower with it (cuda-lin21: forward 0.224 -> 0.233 ms at
 * 8,2048,16,128) */
template <typename T, int NP, int NK, bool REV>
static la_status lf_sfwd_launch(const char *op, cudaStream_t stream, int64_t ctas,
                                const lf_args &a) {
    return a.m || a.fc ? lf_sfwd_launch1<T, NP, NK, REV, true, REV>(op, stream, ctas, a)
                       : lf_sfwd_launch1<T, NP, NK, REV, false, REV>(op, stream, ctas, a);
}

/* cuda-s2p24: the 16-bit parts of an fp32 operand in the bf16 walks (the
 * state S or its gradient, P, Vt): two (16 significant bits, relative
 * rounding <= 2^-17 per element: the accuracy policy of session 16 for
 * 16-bit inputs; errors against float64 in bench/GPU.md, cuda-s2p24), but
 * three of S and Vt in the gate gradient's walks (DOT, lf_run below);
 * LINATTN_CUDA_LIN_PARTS = 3: three everywhere (fp32-accurate, main's
 * walks before session 16). fp16 has two either way (11 + 11 bits). */
static int lf_parts_bf16() {
    /* read once per process (a thread-safe static); any value but "3" is two */
    static const int np = [] {
        const char *e = getenv("LINATTN_CUDA_LIN_PARTS");
        return e && e[0] == '3' && !e[1] ? 3 : 2;
    }();
    return np;
}

/* One walk of element type T with NP parts of S and Vt, NPP of P: a.K
 * (<= 128) picks NK */
template <typename T, int NP, bool REV, bool DOT, int NPP = NP>
static la_status lf_run_t(const char *op, cudaStream_t stream, int64_t ctas, const lf_args &a) {
    if (!DOT && a.sfrag) /* cuda-sfrag18, cuda-lin21 (la__lf_forward / _backward decide) */
        return a.K <= 64 ? lf_sfwd_launch<T, NP, 1, REV>(op, stream, ctas, a)
                         : lf_sfwd_launch<T, NP, 2, REV>(op, stream, ctas, a);
    return a.K <= 64 ? lf_launch_nj<T, NP, 1, REV, DOT, NPP>(op, stream, ctas, a)
                     : lf_launch_nj<T, NP, 2, REV, DOT, NPP>(op, stream, ctas, a);
}

/* One walk: a.K (<= 128) picks NK, a.V the value blocks; DOT: a.dpart is
 * set (cuda-fused12: its own instances, so the other walks' registers and
 * code stay as they were). */
template <bool REV, bool DOT = false>
static la_status lf_run(const la__cu_call *c, cudaStream_t stream, lf_args a, int64_t nseq = -1) {
    a.nvb = (int)((a.V + 63) / 64);
    const int64_t ctas = (nseq < 0 ? c->N : nseq) * c->H * a.nvb;
    if (ctas == 0) return LA_OK;
    if (c->dtype != LA_DTYPE_BF16) return lf_run_t<__half, 2, REV, DOT>(c->op, stream, ctas, a);
    if (lf_parts_bf16() == 3) return lf_run_t<__nv_bfloat16, 3, REV, DOT>(c->op, stream, ctas, a);
    /* cuda-sgdot24: the gate gradient's walks (DOT) take two parts of P but
     * keep three of S and Vt. Their fp32 rows enter float64 token dots
     * whose position-weighted sum over a sequence is dg_gamma: a pair of
     * tokens (i, j <= i) enters q_i.dq_i with weight i + 1 and k_j.dk_j with
     * weight -(j + 1). P's entry of the pair is bitwise the same in both
     * walks (lf_p_gate), so its rounding enters both with the same sign and
     * nets (i - j) times; the state's rounding (S's parts per chunk, Vt's in
     * the sums) is of different sums in the two walks and does not pair up,
     * so it is amplified up to ~T times. Measured (bench/GPU.md,
     * cuda-sgdot24): two parts of S and Vt (P three) dg_gamma 4.8e-3, of
     * all three (cuda-s2p24) 4.5e-3, against its 2e-3 bound; two of P
     * alone 5.6e-4, as three everywhere */
    return lf_run_t<__nv_bfloat16, DOT ? 3 : 2, REV, DOT, 2>(c->op, stream, ctas, a);
}

/* cuda-bsplit16: the segments of the split (segs, N P of them, from
 * la_cu_dss_table) and one state buffer of N P H K V floats (the local
 * sums, then the start states), gated: the segments' e^{Gp} (N P H).
 * cuda-lscan16: keep: a second buffer (loc) that keeps one walk's local
 * sums for a later walk (the backward's dv walk, below). */
struct lf_split {
    la_cu_seq *segs;
    float *starts, *dec, *loc;
    int P;
};
static la_status lf_split_make(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb, int P,
                               bool keep, lf_split *sp) {
    const bool gated = c->g || c->g_gamma;
    const int64_t nseg = c->N * P, HKV = c->H * c->K * c->V;
    const size_t tab = ((size_t)nseg * sizeof(la_cu_seq) + 255) & ~(size_t)255;
    const size_t sb = ((size_t)nseg * HKV * 4 + 255) & ~(size_t)255, nb = keep ? 2 : 1;
    char *blk;
    la_status st;
    if ((st = la__cu_alloc(ar, (void **)&blk,
                           tab + nb * sb + (gated ? (size_t)nseg * c->H * 4 : 0))))
        return st;
    sp->segs = (la_cu_seq *)blk, sp->P = P;
    sp->starts = (float *)(blk + tab), sp->loc = keep ? (float *)(blk + tab + sb) : NULL;
    sp->dec = gated ? (float *)(blk + tab + nb * sb) : NULL;
    la_cu_dss_table<<<(unsigned)((nseg + 255) / 256), 256, 0, ar->stream>>>(tb.seqs, sp->segs, c->N,
                                                                           P);
    LA_CU_LAUNCHED(c->op);
    if (gated) {
        la_lf_seg_decay<<<(unsigned)((nseg * c->H + 7) / 8), 256, 0, ar->stream>>>(
            sp->segs, c->g, c->g_gamma, sp->dec, nseg, c->H);
        LA_CU_LAUNCHED(c->op);
    }
    return LA_OK;
}

/* The walk a (REV or not; DOT: with the gate gradient's token dots) over
 * the segments of sp (above): the local sums of a's state update
 * (la_lf_local<REV>: a.k, a.v with their relus; sv = 1), the scan (p
 * descending where REV) from a's initial state to a's final state, then
 * the walks from the start states. cuda-lscan16: lm = LF_LOC_KEEP: the
 * local sums go to sp.loc and stay there; LF_LOC_T: no local pass, the
 * scan reads sp.loc transposed (a walk whose local sums are the transpose
 * of the kept ones: same segments, same gates). */
enum { LF_LOC_OWN = 0, LF_LOC_KEEP = 1, LF_LOC_T = 2 };
template <bool REV, bool DOT = false>
static la_status lf_split_walk(const la__cu_call *c, cudaStream_t stream, const lf_args &a,
                               const lf_split &sp, int lm = LF_LOC_OWN) {
    const int64_t nseg = c->N * sp.P, nvb = (a.V + 63) / 64;
    const float *loc = lm == LF_LOC_OWN ? sp.starts : sp.loc;
    if (lm != LF_LOC_T) {
        lf_args l = a;
        l.seqs = sp.segs, l.fin = (float *)loc, l.nvb = (int)nvb;
        const int64_t ctas = nseg * c->H * nvb;
        la_status st =
            c->dtype == LA_DTYPE_BF16
                ? (a.K <= 64 ? lf_local_launch<__nv_bfloat16, 1, REV>(c->op, stream, ctas, l)
                             : lf_local_launch<__nv_bfloat16, 2, REV>(c->op, stream, ctas, l))
                : (a.K <= 64 ? lf_local_launch<__half, 1, REV>(c->op, stream, ctas, l)
                             : lf_local_launch<__half, 2, REV>(c->op, stream, ctas, l));
        if (st) return st;
    }
    la_lf_seg_scan<<<(unsigned)((c->N * c->H * a.K * a.V + 255) / 256), 256, 0, stream>>>(
        sp.starts, loc, lm == LF_LOC_T, sp.dec, a.s0, a.fin, c->N, c->H, a.K, a.V, sp.P, REV,
        a.s0t, a.s0mul, DOT && a.fint, a.finmul);
    LA_CU_LAUNCHED(c->op);
    lf_args b = a;
    b.seqs = sp.segs, b.s0 = sp.starts, b.s0t = 0, b.s0mul = 1.f, b.fin = NULL;
    return lf_run<REV, DOT>(c, stream, b, nseg);
}

/* A walk split over time where sp was made (sp.P > 0), else the unsplit one. */
template <bool REV, bool DOT = false>
static la_status lf_walk(const la__cu_call *c, cudaStream_t stream, const lf_args &a,
                         const lf_split &sp, int lm = LF_LOC_OWN) {
    return sp.P ? lf_split_walk<REV, DOT>(c, stream, a, sp, lm) : lf_run<REV, DOT>(c, stream, a);
}

la_status la__lf_forward(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb) {
    lf_args a = {};
    a.seqs = tb.seqs, a.chunks = tb.chunks, a.q = c->q, a.k = c->k, a.v = c->v, a.o = c->o;
    a.g = c->g, a.g_gamma = c->g_gamma, a.s0 = c->s0, a.fin = c->final_state;
    a.H = c->H, a.K = c->K, a.V = c->V, a.scale = c->scale, a.fm = c->feature_map;
    a.sq = c->scale, a.sv = 1.f, a.s0mul = a.finmul = 1.f,
    a.fab = c->feature_map == LA_FEATURE_RELU;
    /* cuda-lsplit13: split over time where the grid is small (above) */
    const int P = c->N <= 0 ? 0 : la__lf_split_p(c, tb.nchunks);
    /* cuda-sfrag18: the ungated walk (v rows unscaled) with S^T in
     * registers where it measured faster: unsplit (at 1,16384,16,128 the
     * split's walks from start states were 3% slower with it) */
    a.sfrag = !c->g && !c->g_gamma && lf_sfrag_env(P);
    lf_split sp = {};
    la_status st = P ? lf_split_make(c, ar, tb, P, false, &sp) : LA_OK;
    return st ? st : lf_walk<false>(c, ar->stream, a, sp);
}

/* ---- cuda-fusedb10: the backward as three walks of the same kernel ------ */

/* cuda-bsplit16: the backward's walks split over time like the forward
 * (la__lf_split_p's P and switch) where the reverse walks' state is divided
 * by scale (their v rows unscaled, as the local pass sums them); else 0
 * (the unsplit walks). */
static int lf_bwd_split_p(const la__cu_call *c, int64_t nchunks) {
    const float inv = 1.f / c->scale;
    if (c->V > 128 || c->scale == 0.f || !isfinite(inv) || !isfinite(c->scale)) return 0;
    return la__lf_split_p(c, nchunks);
}

/* cuda-fused12: with a gate gradient too (the walks' token dots; phi =
 * identity, as simple GLA always has). */
bool la__lf_bwd_use(const la__cu_call *c, int64_t nchunks) {
    const bool dg = c->dg || c->dg_gamma;
    return c->V <= 128 && (!dg || c->feature_map == LA_FEATURE_IDENTITY) &&
           (la__lf_use(c) || lf_bwd_split_p(c, nchunks));
}

int la__lf_dg_slots(const la__cu_call *c) { return (int)((c->K + 63) / 64) * (4 / lf_nj()); }

/* With Qf = phi(q), Kf = phi(k) and S0 / dS_T the initial state / the
 * final state's gradient (bench/lin_fused_identities.py):
 *   dk = phi'(k) * rev(A = v,  B = dO, C = Qf; S = dS_T^T)  (sq 1, sv scale)
 *   dq = phi'(q) * fwd(A = dO, B = v,  C = Kf; S = S0^T)    (sq scale, sv 1)
 *   dv, dS0 = rev(A = Kf, B = Qf, C = dO; S = dS_T)         (sq 1, sv scale)
 * (the reverse walks run as sq scale, sv 1 on S / scale, below)
 * in this order: d_initial_state may alias d_final_state. */
la_status la__lf_backward(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb,
                          const la_lf_dg *dg) {
    cudaStream_t stream = ar->stream;
    /* cuda-bsplit16: each walk split over time where the grid is small */
    const int P = c->N <= 0 ? 0 : lf_bwd_split_p(c, tb.nchunks);
    lf_split sp = {};
    la_status st;
    if (P && (st = lf_split_make(c, ar, tb, P, true, &sp))) return st;
    const bool relu = c->feature_map == LA_FEATURE_RELU;
    lf_args a = {};
    a.seqs = tb.seqs, a.chunks = tb.chunks, a.g = c->g, a.g_gamma = c->g_gamma, a.H = c->H;
    a.scale = c->scale, a.fm = c->feature_map, a.s0mul = a.finmul = 1.f;
    /* The reverse walks carry S' = S / scale (sq = scale, sv = 1: v rows
     * enter unsplit unless gated), the initial dS_T divided, the end state
     * multiplied; with sv = scale where 1 / scale is not finite. */
    const float inv = 1.f / c->scale;
    const bool div = c->scale != 0.f && isfinite(inv) && isfinite(c->scale);
    const float rsq = div ? c->scale : 1.f, rsv = div ? 1.f : c->scale, rin = div ? inv : 1.f;
    /* cuda-lin21: ungated unsplit walks without gate gradient (sv = 1 in all
     * three where div) run la_lf_sfwd, as the forward does */
    a.sfrag = !dg && !c->g && !c->g_gamma && div && lf_sfrag_env(P);
    lf_args b = a;
    b.q = c->v, b.k = c->d_o, b.v = c->q, b.o = c->dk, b.m = relu ? c->k : NULL;
    b.K = c->V, b.V = c->K, b.sq = rsq, b.sv = rsv, b.fc = relu;
    b.s0 = c->dsT, b.s0t = 1, b.s0mul = rin;
    if (dg) b.dx = c->k, b.dpart = dg->pk, b.nslot = dg->nslot;
    /* cuda-lscan16: its local sums (sum over a segment of the reverse
     * decays times dO^T Qf, [V][K]) kept for the dv walk's (Qf^T dO) */
    if ((st = dg ? lf_walk<true, true>(c, stream, b, sp, LF_LOC_KEEP)
                 : lf_walk<true>(c, stream, b, sp, LF_LOC_KEEP)))
        return st;
    b = a;
    b.q = c->d_o, b.k = c->v, b.v = c->k, b.o = c->dq, b.m = relu ? c->q : NULL;
    b.K = c->V, b.V = c->K, b.sq = c->scale, b.sv = 1.f, b.fc = relu;
    b.s0 = c->s0, b.s0t = 1;
    if (dg) { /* its state is S^T: S_T stored back as [K][V] */
        b.dx = c->q, b.dpart = dg->pq, b.nslot = dg->nslot;
        if (dg->fin) b.fin = dg->sT, b.fint = 1;
    }
    if ((st = dg ? lf_walk<false, true>(c, stream, b, sp) : lf_walk<false>(c, stream, b, sp)))
        return st;
    if (dg && dg->fin) { /* before the dv walk: d_initial_state may alias d_final_state */
        if ((st = la__cu_state_dot(c->op, stream, c->dsT, dg->sT, dg->fin, c->N * c->H,
                                   c->K * c->V)))
            return st;
    }
    b = a;
    b.q = c->k, b.k = c->q, b.v = c->d_o, b.o = c->dv, b.fab = relu;
    b.K = c->K, b.V = c->V, b.sq = rsq, b.sv = rsv;
    b.s0 = c->dsT, b.fin = c->ds0, b.s0mul = rin, b.finmul = div ? c->scale : 1.f;
    return lf_walk<true>(c, stream, b, sp, LF_LOC_T);
}
