/* Thread-block cluster primitives (sm_90+), shared by the kernels that split
 * one problem over the CTAs of a cluster and exchange partial products
 * through distributed shared memory (delta_state_cl.cu, delta_rev_tc.cu;
 * first written by cuda-rev9 for a cluster reverse pass that lost). Device
 * functions exist only for __CUDA_ARCH__ >= 900; callers guard their bodies
 * the same way and their hosts launch them only on compute capability 9+. */
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
/* This CTA's rank in its cluster. */
__device__ __forceinline__ unsigned la_cl_rank() {
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}
/* The shared::cluster address, in CTA r, of the shared::cta address a. */
__device__ __forceinline__ unsigned la_cl_mapa(unsigned a, unsigned r) {
    unsigned d;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(r));
    return d;
}
/* The shared::cluster address of this CTA's shared memory at p in CTA r. */
__device__ __forceinline__ unsigned la_cl_map(const void *p, unsigned r) {
    return la_cl_mapa((unsigned)__cvta_generic_to_shared(p), r);
}
/* Stores to a shared::cluster address (8 / 16 bytes, aligned). */
__device__ __forceinline__ void la_cl_st2(unsigned a, float x, float y) {
    asm volatile("st.shared::cluster.v2.f32 [%0], {%1, %2};\n" ::"r"(a), "f"(x), "f"(y) : "memory");
}
__device__ __forceinline__ void la_cl_st4(unsigned a, float4 v) {
    asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "f"(v.x), "f"(v.y),
                 "f"(v.z), "f"(v.w)
                 : "memory");
}
/* Cluster barrier, every thread of every CTA: arrive releases this thread's
 * earlier memory operations (shared::cluster stores included), wait acquires
 * the others'. la_cl_sync is both. */
__device__ __forceinline__ void la_cl_arrive() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void la_cl_wait() {
    asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void la_cl_sync() {
    la_cl_arrive();
    la_cl_wait();
}
/* cuda-gdn12: exchanges through mbarriers (moved here from
 * delta_state_cl.cu by cuda-gdnrev15 for the reverse pass's cluster form).
 * Two mbarriers of one arrival at shared addresses a, a + 8 (before the
 * cluster barrier that publishes them to the peer). */
__device__ __forceinline__ void la_cl_mbar_init2(unsigned a) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(a) : "memory");
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(a + 8) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
/* x, y to shared::cluster address d, with a complete_tx of 8 bytes on the
 * (peer's) mbarrier at shared::cluster address bar */
__device__ __forceinline__ void la_cl_st_async2(unsigned d, float2 v, unsigned bar) {
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [%0], {%1, %2}, "
                 "[%3];\n" ::"r"(d),
                 "f"(v.x), "f"(v.y), "r"(bar)
                 : "memory");
}
/* The one arrival of the mbarrier at a, expecting bytes from st.async. */
__device__ __forceinline__ void la_cl_mbar_arm(unsigned a, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(a), "r"(bytes)
                 : "memory");
}
/* Waits until the phase of parity par of the mbarrier at a has completed.
 * Acquire at CTA scope (cuda-gdnst14; as CUTLASS's cluster pipelines wait):
 * the peer's st.async bytes are counted by complete_tx on this CTA's own
 * mbarrier, so the phase completing makes them visible to the CTA's
 * threads; the cluster-scope acquire compiled to an L1 invalidate
 * (CCTL.IVALL, 5% of the stall samples) that the shared-memory reads after
 * it do not need. Same bits; GDN forward 2.589 -> 2.575 ms (H200,
 * bench/GPU.md). */
__device__ __forceinline__ void la_cl_mbar_wait(unsigned a, unsigned par) {
    uint32_t done = 0;
    while (!done)
        asm volatile("{\n .reg .pred p;\n"
                     " mbarrier.try_wait.parity.acquire.cta.shared::cta.b64 p, [%1], %2;\n"
                     " selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(a), "r"(par)
                     : "memory");
}
#endif

/* Launches kern(args...) with grid x CTAs in clusters of cx along x (grid a
 * multiple of cx), nth threads, smem bytes of dynamic shared memory (the
 * kernel's limit raised to it first). Returns the CUDA error. */
template <typename... A, typename... B>
static cudaError_t la_cl_launch(void (*kern)(A...), unsigned grid, unsigned cx, int nth,
                                size_t smem, cudaStream_t stream, B... args) {
    cudaError_t e =
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = cx, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid), cfg.blockDim = dim3(nth), cfg.dynamicSmemBytes = smem;
    cfg.stream = stream, cfg.attrs = at, cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, kern, args...);
}
