/* cuda-saved7: la_saved for the delta rules' chunk form on the GPU. A
 * forward given opts->saved runs the backward's variant of prep and the
 * state pass (fp32 W and Kd besides the bf16 parts, A^T) with every product
 * in the saved object's device block, and the per-chunk states hst there
 * too; its output kernel reads them as usual, so o and the final state are
 * bitwise what they are without saving. The backward given the filled
 * object carves the same layout from the block and skips prep and the state
 * pass (la__cu_delta_chunk_dstates, delta.cu's hst).
 *
 * Memory: one block per object (growth only), cudaMallocAsync on the
 * context's stream, cudaFreeAsync on that stream when the object is
 * destroyed, its context destroyed, or a larger block replaces it
 * (src/core/saved.c). Bytes per value head and token at K = V = 128 (bf16,
 * two parts): hst K V / 64 * 4 = 1024, W, Kd, R 3 * 512, A^T 256, parts
 * 1024, Kd's row factor 4 (cuda-gdn24): 3844 B (fp32 inputs, no parts: 2816
 * B). */
#include "delta_chunk.cuh"

#include <stdint.h>

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

la_cu_dc_layout la__cu_dc_layout(const la__cu_call *c, int64_t nchunks, int parts, bool fp32wk,
                                 bool want_A, bool want_hst) {
    const size_t nt = (size_t)c->B * c->T * c->HS, nch = (size_t)nchunks;
    const size_t k8 = (size_t)((c->K + 7) & ~(int64_t)7);
    const size_t nckpt = nch ? nch : 1; /* the backward's hst size */
    la_cu_dc_layout l;
    size_t at = 0;
    const auto put = [&](bool present, size_t bytes) -> size_t {
        if (!present) return SIZE_MAX;
        const size_t o = at;
        at = align256(at + bytes);
        return o;
    };
    l.W = put(fp32wk, nt * c->K * 4);
    l.U = put(true, nt * c->V * 4);
    l.Kd = put(fp32wk, nt * c->K * 4);
    l.bL = put(true, nch * c->HS * 4);
    l.AT = put(want_A, nch * c->HS * LA_CU_C * LA_CU_C * 4);
    l.Wh = put(parts > 0, (size_t)2 * parts * nt * k8 * 2); /* Wh, Kh (, Wl, Kl) */
    l.hst = put(want_hst, nckpt * c->HS * c->K * c->V * 4);
    /* Kd's row factor (cuda-gdn24): wherever bf16 takes parts, whatever
     * LINATTN_CUDA_DELTA_XK says, so that a saved block's layout does not
     * depend on the switch */
    l.kf = put(parts == 2 && c->dtype == LA_DTYPE_BF16, nt * 4);
    l.bytes = at;
    l.parts = parts;
    return l;
}

void la__cu_dc_carve(const la__cu_call *c, const la_cu_dc_layout &l, char *base, la_cu_dc_args &p) {
    const size_t nt = (size_t)c->B * c->T * c->HS, k8 = (size_t)((c->K + 7) & ~(int64_t)7);
    if (l.W != SIZE_MAX) p.W = (float *)(base + l.W);
    if (l.U != SIZE_MAX) p.U = (float *)(base + l.U);
    if (l.Kd != SIZE_MAX) p.Kd = (float *)(base + l.Kd);
    if (l.bL != SIZE_MAX) p.bL = (float *)(base + l.bL);
    if (l.AT != SIZE_MAX) p.AT = (float *)(base + l.AT);
    if (l.hst != SIZE_MAX) p.hst = (float *)(base + l.hst);
    if (l.kf != SIZE_MAX) p.kf = (float *)(base + l.kf);
    if (l.Wh != SIZE_MAX) {
        p.Wh = (__nv_bfloat16 *)(base + l.Wh);
        p.Kh = p.Wh + nt * k8;
        if (l.parts == 2) p.Wl = p.Kh + nt * k8, p.Kl = p.Wl + nt * k8;
    }
}

/* The layout of a saved block: the backward's recompute variant. */
static la_cu_dc_layout saved_layout(const la__cu_call *c, int64_t nchunks) {
    const int parts = la__cu_delta_tc_parts(c->dtype == LA_DTYPE_F32 ? 4 : 2);
    return la__cu_dc_layout(c, nchunks, parts, true, true, true);
}

static la_status saved_alloc(const char *op, void **p, size_t bytes, void *stream, int device) {
    *p = NULL;
    /* cuda-graph24: a block allocated in a capture would belong to the
     * graph (valid only while it runs) and outlive it unfreed; the object's
     * block is allocated outside, by an eager call of the same shapes */
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess && la__cu_capturing(stream))
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts->saved: the object needs a device block of %zu bytes, "
                         "larger than the one it holds, and a CUDA graph capture cannot "
                         "allocate it; run the call once outside the capture first (README, "
                         "\"CUDA graphs\")",
                         op, bytes);
    if (e == cudaSuccess) e = cudaMallocAsync(p, bytes, (cudaStream_t)stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *p = NULL;
        return la__error(LA_ERR_OUT_OF_MEMORY,
                         "%s: opts->saved: cudaMallocAsync of %zu bytes failed (%s)", op, bytes,
                         cudaGetErrorString(e));
    }
    return LA_OK;
}

/* Stream-ordered on the stream that allocated it, with that device current
 * (the caller's current device is restored); errors are dropped (a destroy
 * has no status). */
static void saved_release(void *p, void *stream, int device) {
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess) cur = -1;
    if (cur != device) cudaSetDevice(device);
    cudaFreeAsync(p, (cudaStream_t)stream);
    if (cur >= 0 && cur != device) cudaSetDevice(cur);
    cudaGetLastError();
}

static const la__saved_dev_ops saved_ops = {saved_alloc, saved_release};

la_status la__cu_delta_save_begin(const la__cu_call *c, const la_cu_table &tb, la_cu_dc_args &p) {
    const la_cu_dc_layout l = saved_layout(c, tb.nchunks);
    void *base = NULL;
    la_status st = la__saved_prepare_dev(c->op, c->saved, c->saved_key, l.bytes, &saved_ops, &base);
    if (st) return st;
    la__cu_dc_carve(c, l, (char *)base, p);
    return LA_OK;
}

bool la__cu_delta_saved_args(const la__cu_call *c, const la_cu_table &tb, la_cu_dc_args &p) {
    if (!c->saved_dev) return false;
    p = la_cu_dc_args{};
    la__cu_dc_inputs(c, tb, p);
    la__cu_dc_carve(c, saved_layout(c, tb.nchunks), (char *)c->saved_dev, p);
    p.kf = NULL; /* nothing reads it; after an XK=0 forward nothing wrote it either */
    return true;
}

float *la__cu_delta_saved_hst(const la__cu_call *c, int64_t nchunks) {
    if (!c->saved_dev) return NULL;
    return (float *)((char *)c->saved_dev + saved_layout(c, nchunks).hst);
}
