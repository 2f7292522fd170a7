/* Tensor-core pieces for 16-bit inputs (bf16 / fp16), shared by the chunk
 * kernels: 64x64 operand tiles in shared memory, the split of an fp32 value
 * into 16-bit parts (x = hi + lo (+ lo2)), a 64x64x64 block product on
 * tensor cores (mma.sync m16n8k16 with ldmatrix loads, fp32 accumulation;
 * sm_80 and later), and a chunk's log-gate prefix sums by a warp scan.
 *
 * Inputs q, k, v, do are exact in their 16-bit type, so a product of two
 * inputs needs one tensor-core product; a product with an fp32 quantity
 * (a state, a decayed or masked value) takes its parts: hi, lo (and lo2 for
 * bf16), one product each, so the sums keep fp32-like accuracy (two parts
 * of bf16 were measured too coarse for the gate gradient dg_gamma, a sum
 * with cancellation). Scales such as 1/sqrt(K) are applied to fp32 results,
 * so phi(q), phi(k) stay exact (one part) for identity and relu. CTAs of these kernels have
 * LA_TC_THREADS = 128 threads (4 warps); warp w owns rows 16w..16w+15 of every 64x64 result. */
#ifndef LINATTN_CUDA_TC_CUH
#define LINATTN_CUDA_TC_CUH

#include "common.cuh"

#define LA_TC_THREADS 128
#define LA_TC_LD 72                  /* row stride of a 16-bit tile (elements) */
#define LA_TC_LDF 68                 /* row stride of an fp32 tile */
#define LA_TC_TILE (64 * LA_TC_LD)   /* elements of a 16-bit tile */
#define LA_TC_TILEF (64 * LA_TC_LDF) /* elements of an fp32 tile */
#define LA_TC_TILE_BYTES (LA_TC_TILE * 2)
#define LA_TC_TILEF_BYTES (LA_TC_TILEF * 4)

/* The warp's 16x16 fp32 block of a result, as two m16n8 mma.sync
 * accumulators: x[0..3] columns 0-7, x[4..7] columns 8-15; lane l holds
 * rows l/4 (x[0], x[1]; x[4], x[5]) and l/4 + 8 (x[2], x[3]; x[6], x[7]),
 * columns 2 (l%4) and 2 (l%4) + 1. */
struct la_tc_acc {
    enum { num_elements = 8 };
    float x[8];
};

template <typename T> __device__ __forceinline__ T la_tc_cvt(float x);
template <> __device__ __forceinline__ __nv_bfloat16 la_tc_cvt<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ __half la_tc_cvt<__half>(float x) {
    return __float2half_rn(x);
}
__device__ __forceinline__ float la_tc_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float la_tc_f(__half x) { return __half2float(x); }

/* x = hi[i] + lo[i] (+ lo2[i]): two 16-bit parts carry about 16 significant
 * bits for bf16 (22 for fp16), three about 24 for bf16. lo == NULL: hi only
 * (values exact in T); lo2 == NULL: two parts. */
template <typename T>
__device__ __forceinline__ void la_tc_put(T *hi, T *lo, T *lo2, int i, float x) {
    const T h = la_tc_cvt<T>(x);
    hi[i] = h;
    if (lo) {
        const float r = x - la_tc_f(h);
        const T l = la_tc_cvt<T>(r);
        lo[i] = l;
        if (lo2) lo2[i] = la_tc_cvt<T>(r - la_tc_f(l));
    }
}

/* A 64x64 tile is staged by 128 threads, 32 elements each: element
 * e = threadIdx.x + 128 u (row e / 64, column e % 64), u < 32. Loads are
 * gathered into registers first (la_tc_fetch), then converted and stored
 * (la_tc_put_all), so the 32 global loads are in flight together (a store
 * through a generic pointer between loads would serialise them). */
#define LA_TC_PER 32
template <class F> __device__ __forceinline__ void la_tc_fetch(float (&x)[LA_TC_PER], F f) {
#pragma unroll
    for (int u = 0; u < LA_TC_PER; u++) {
        const int e = threadIdx.x + LA_TC_THREADS * u;
        x[u] = f(e >> 6, e & 63);
    }
}
/* x[u] = p[2u * stride] (as fp32) for rows r0 + 2u < rows, r0 = threadIdx.x / 64,
 * 0 elsewhere or when !ok: the thread's 32 elements of a tile whose row r0,
 * column threadIdx.x % 64 starts at p (one pointer, no per-element index). */
template <typename S>
__device__ __forceinline__ void la_tc_fetch_rows(float (&x)[LA_TC_PER], const S *p, int64_t stride,
                                                 int64_t rows, bool ok) {
    const int r0 = threadIdx.x >> 6;
#pragma unroll
    for (int u = 0; u < LA_TC_PER; u++)
        x[u] = (ok && r0 + 2 * u < rows) ? ldf(p + (int64_t)(2 * u) * stride) : 0.f;
}
/* x[u] = phi(x[u]) inside the operand (rows < rows, ok), 0 outside. */
__device__ __forceinline__ void la_tc_phi_rows(float (&x)[LA_TC_PER], int fm, int64_t rows,
                                               bool ok) {
    const int r0 = threadIdx.x >> 6;
    if (fm == LA_FEATURE_IDENTITY) return;
#pragma unroll
    for (int u = 0; u < LA_TC_PER; u++) x[u] = (ok && r0 + 2 * u < rows) ? la_phi(fm, x[u]) : 0.f;
}

/* tile[r][c] = g(r, c, x[u]) as hi (+ lo (+ lo2)). */
template <typename T, class G>
__device__ __forceinline__ void la_tc_put_all(T *hi, T *lo, T *lo2, const float (&x)[LA_TC_PER],
                                              G g) {
#pragma unroll
    for (int u = 0; u < LA_TC_PER; u++) {
        const int e = threadIdx.x + LA_TC_THREADS * u, r = e >> 6, c = e & 63;
        la_tc_put(hi, lo, lo2, r * LA_TC_LD + c, g(r, c, x[u]));
    }
}
/* Fills the 64x64 tile with f(r, c) (0 outside the operand). Every thread
 * of the CTA calls it; the caller syncs after. */
template <typename T, class F>
__device__ __forceinline__ void la_tc_stage(T *hi, T *lo, T *lo2, F f) {
    float x[LA_TC_PER];
    la_tc_fetch(x, f);
    la_tc_put_all(hi, lo, lo2, x, [](int, int, float y) { return y; });
}

/* ldmatrix: four 8x8 16-bit matrices; lane l gives the address of row l%8
 * of matrix l/8 (TR: transposed on the way). */
template <bool TR> __device__ __forceinline__ void la_tc_ldsm4(uint32_t (&r)[4], const void *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    if (TR)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
}
/* d (m16n8, fp32) += a (m16k16) b (k16n8) */
template <typename T>
__device__ __forceinline__ void la_tc_mma(float *d, const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1);
template <>
__device__ __forceinline__ void la_tc_mma<__nv_bfloat16>(float *d, const uint32_t (&a)[4],
                                                         uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void la_tc_mma<__half>(float *d, const uint32_t (&a)[4], uint32_t b0,
                                                  uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* acc[j] (rows 16w.., columns 16(jb + j).. of a 64x64 result, j < NJ) +=
 * sum_{r<64} A(m, r) B(r, n), r in steps of 16, ascending. AT: A is stored
 * [r][m] (a transposed operand); BT: B is stored [n][r]. mma.sync m16n8k16
 * with ldmatrix operand loads. The 4-warp kernels use la_tc_mma64 (warp w =
 * threadIdx.x / 32, all four column blocks); a kernel with more warps per
 * 16 rows gives each its w and column blocks (lin_fused.cu). */
template <typename T, bool AT, bool BT, int NJ>
__device__ __forceinline__ void la_tc_mma64_part(la_tc_acc (&acc)[NJ], const T *A, const T *B,
                                                 int w, int jb) {
    const int lane = threadIdx.x & 31, m8 = lane >> 3, rr = lane & 7;
    const int lo8 = (m8 & 1) * 8, hi8 = (m8 >> 1) * 8;
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        uint32_t
            a[4]; /* matrices: (m 0-7, r 0-7), (m 8-15, r 0-7), (m 0-7, r 8-15), (m 8-15, r 8-15) */
        if (AT)
            la_tc_ldsm4<true>(a, A + (16 * kk + hi8 + rr) * LA_TC_LD + 16 * w + lo8);
        else
            la_tc_ldsm4<false>(a, A + (16 * w + lo8 + rr) * LA_TC_LD + 16 * kk + hi8);
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            const int jj = jb + j;
            uint32_t b[4]; /* (r 0-7, n 0-7), (r 8-15, n 0-7), (r 0-7, n 8-15), (r 8-15, n 8-15) */
            if (BT)
                la_tc_ldsm4<false>(b, B + (16 * jj + hi8 + rr) * LA_TC_LD + 16 * kk + lo8);
            else
                la_tc_ldsm4<true>(b, B + (16 * kk + lo8 + rr) * LA_TC_LD + 16 * jj + hi8);
            la_tc_mma<T>(acc[j].x, a, b[0], b[1]);
            la_tc_mma<T>(acc[j].x + 4, a, b[2], b[3]);
        }
    }
}
template <typename T, bool AT, bool BT>
__device__ __forceinline__ void la_tc_mma64(la_tc_acc (&acc)[4], const T *A, const T *B) {
    la_tc_mma64_part<T, AT, BT, 4>(acc, A, B, threadIdx.x >> 5, 0);
}

/* acc += A B with A = Ah + Al + Al2, B = Bh + Bl + Bl2 (the lo parts may be
 * NULL): hi*hi, then lo*hi, hi*lo, lo2*hi, hi*lo2, in that order (the
 * products of two lo parts are left out: below the parts' own precision). */
template <typename T, bool AT, bool BT, int NJ>
__device__ __forceinline__ void la_tc_mma64x_part(la_tc_acc (&acc)[NJ], const T *Ah, const T *Al,
                                                  const T *Al2, const T *Bh, const T *Bl,
                                                  const T *Bl2, int w, int jb) {
    la_tc_mma64_part<T, AT, BT, NJ>(acc, Ah, Bh, w, jb);
    if (Al) la_tc_mma64_part<T, AT, BT, NJ>(acc, Al, Bh, w, jb);
    if (Bl) la_tc_mma64_part<T, AT, BT, NJ>(acc, Ah, Bl, w, jb);
    if (Al2) la_tc_mma64_part<T, AT, BT, NJ>(acc, Al2, Bh, w, jb);
    if (Bl2) la_tc_mma64_part<T, AT, BT, NJ>(acc, Ah, Bl2, w, jb);
}
template <typename T, bool AT, bool BT>
__device__ __forceinline__ void la_tc_mma64x(la_tc_acc (&acc)[4], const T *Ah, const T *Al,
                                             const T *Al2, const T *Bh, const T *Bl, const T *Bl2) {
    la_tc_mma64x_part<T, AT, BT, 4>(acc, Ah, Al, Al2, Bh, Bl, Bl2, threadIdx.x >> 5, 0);
}

/* Three parts for fp32 quantities in bf16, two in fp16 (22 bits suffice). */
template <typename T> struct la_tc_three { static const bool value = false; };
template <> struct la_tc_three<__nv_bfloat16> { static const bool value = true; };

__device__ __forceinline__ void la_tc_zero(la_tc_acc (&acc)[4]) {
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int i = 0; i < 8; i++) acc[j].x[i] = 0.f;
}
/* The warp's rows of a 64x64 fp32 tile F (row stride LA_TC_LDF) to / from acc. */
__device__ __forceinline__ void la_tc_store(float *F, const la_tc_acc (&acc)[4]) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    float *f = F + (16 * w + g) * LA_TC_LDF + 2 * q;
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            float *p = f + 16 * j + 8 * hf;
            *(float2 *)p = make_float2(acc[j].x[4 * hf], acc[j].x[4 * hf + 1]);
            *(float2 *)(p + 8 * LA_TC_LDF) =
                make_float2(acc[j].x[4 * hf + 2], acc[j].x[4 * hf + 3]);
        }
}
__device__ __forceinline__ void la_tc_load(la_tc_acc (&acc)[4], const float *F) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const float *f = F + (16 * w + g) * LA_TC_LDF + 2 * q;
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const float *p = f + 16 * j + 8 * hf;
            const float2 u = *(const float2 *)p, v = *(const float2 *)(p + 8 * LA_TC_LDF);
            acc[j].x[4 * hf] = u.x, acc[j].x[4 * hf + 1] = u.y;
            acc[j].x[4 * hf + 2] = v.x, acc[j].x[4 * hf + 3] = v.y;
        }
}

/* G[i] = sum_{s<=i} (g_s + g_gamma) for the chunk's L <= 64 tokens, in
 * double, by a scan over two warps (fixed order: run to run identical).
 * gv: this thread's g + g_gamma (threads < L; others pass 0). part: 64
 * doubles of scratch. Every thread calls it; it starts and ends with a
 * barrier. */
__device__ __forceinline__ void la_tc_gate_scan(double *G, double *part, double gv) {
    const int t = threadIdx.x, lane = t & 31;
    __syncthreads();
    if (t < 64) {
        double x = gv;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const double y = __shfl_up_sync(0xffffffffu, x, off);
            if (lane >= off) x += y;
        }
        part[t] = x;
    }
    __syncthreads();
    if (t < 64) G[t] = t < 32 ? part[t] : part[t] + part[31];
    __syncthreads();
}

#endif
