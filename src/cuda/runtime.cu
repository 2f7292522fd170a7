/* CUDA context set-up, error conversion, device-pointer checks, per-call
 * scratch and the chunk table. */
#include "common.cuh"

#include <stdlib.h>
#include <string.h>

extern "C" la_status la__cuda_init(const char *op, int device, void *stream) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return la__error(LA_ERR_UNSUPPORTED, "%s: no CUDA device (%s)", op,
                         e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
    if (device < 0 || device >= n)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: device = %d (this machine has %d)", op,
                         device, n);
    if ((e = cudaSetDevice(device)) != cudaSuccess) return la__cu_error(e, op, "cudaSetDevice");
    int pools = 0;
    cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
    if (!pools)
        return la__error(LA_ERR_UNSUPPORTED,
                         "%s: device %d has no stream-ordered allocator (cudaMallocAsync)", op,
                         device);
    (void)stream;
    return LA_OK;
}

la_status la__cu_error(cudaError_t e, const char *op, const char *what) {
    const la_status st =
        e == cudaErrorMemoryAllocation ? LA_ERR_OUT_OF_MEMORY : LA_ERR_INTERNAL;
    return la__error(st, "%s: CUDA error %d (%s: %s) in %s", op, (int)e, cudaGetErrorName(e),
                     cudaGetErrorString(e), what);
}

/* Pointers already found to be device memory, per thread: a decoding loop
 * passes the same buffers every step, and cudaPointerGetAttributes costs
 * about a microsecond, so a hit in this small direct-mapped table skips it.
 * The check stays what it was: a guard against host pointers, not against
 * freed or too-small device buffers. (A cached address is accepted again
 * after its buffer is freed; device allocations come from virtual ranges
 * CUDA reserves, which host allocations do not reuse in practice.) */
#define LA_CU_PTR_SLOTS 64
static thread_local const void *ptr_seen[LA_CU_PTR_SLOTS];

extern "C" int la__cu_is_device_ptr(const void *p) {
    const uintptr_t u = (uintptr_t)p;
    const unsigned slot = (unsigned)((u >> 8) ^ (u >> 17) ^ (u >> 29)) % LA_CU_PTR_SLOTS;
    if (ptr_seen[slot] == p) return 1;
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky-free error */
        return 0;
    }
    const int dev = a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
    if (dev) ptr_seen[slot] = p;
    return dev;
}

la_status la__cu_alloc(la_cu_arena *a, void **p, size_t bytes) {
    *p = NULL;
    if (bytes == 0) return LA_OK;
    if (a->n >= 16) return la__error(LA_ERR_INTERNAL, "%s: too many scratch blocks", a->op);
    cudaError_t e = cudaMallocAsync(p, bytes, a->stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: cudaMallocAsync of %zu bytes failed (%s)",
                         a->op, bytes, cudaGetErrorString(e));
    }
    a->blocks[a->n++] = *p;
    return LA_OK;
}

void la__cu_free_all(la_cu_arena *a) {
    for (int i = a->n - 1; i >= 0; i--) cudaFreeAsync(a->blocks[i], a->stream);
    a->n = 0;
}

la_status la__cu_make_table(la_cu_arena *a, const la__cu_call *c, la_cu_table *t) {
    const int64_t N = c->N;
    int64_t nch = 0;
    for (int64_t n = 0; n < N; n++) {
        const int64_t len = c->cu_seqlens ? c->cu_seqlens[n + 1] - c->cu_seqlens[n] : c->T;
        nch += (len + LA_CU_C - 1) / LA_CU_C;
    }
    if (N > INT32_MAX || nch > INT32_MAX)
        return la__error(LA_ERR_INVALID_SIZE, "%s: too many sequences or chunks", c->op);
    const size_t sbytes = (size_t)N * sizeof(la_cu_seq);
    const size_t cbytes = (size_t)(nch ? nch : 1) * sizeof(la_cu_chunk);
    char *host = (char *)malloc(sbytes + cbytes);
    if (!host) return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory (chunk table)", c->op);
    la_cu_seq *hs = (la_cu_seq *)host;
    la_cu_chunk *hc = (la_cu_chunk *)(host + sbytes);
    int64_t ci = 0;
    for (int64_t n = 0; n < N; n++) {
        const int64_t start = c->cu_seqlens ? c->cu_seqlens[n] : n * c->T;
        const int64_t len = c->cu_seqlens ? c->cu_seqlens[n + 1] - c->cu_seqlens[n] : c->T;
        const int64_t k = (len + LA_CU_C - 1) / LA_CU_C;
        hs[n].start = start;
        hs[n].len = len;
        hs[n].chunk0 = (int32_t)ci;
        hs[n].nch = (int32_t)k;
        for (int64_t i = 0; i < k; i++, ci++) {
            hc[ci].tok0 = start + i * LA_CU_C;
            hc[ci].len = (int32_t)(len - i * LA_CU_C < LA_CU_C ? len - i * LA_CU_C : LA_CU_C);
            hc[ci].seq = (int32_t)n;
            hc[ci].idx = (int32_t)i;
            hc[ci].pad = 0;
        }
    }
    void *dev = NULL;
    la_status st = la__cu_alloc(a, &dev, sbytes + cbytes);
    if (st) {
        free(host);
        return st;
    }
    /* From pageable memory: the call returns once the bytes are staged, so
     * the host buffer can go at once; no device synchronisation. */
    cudaError_t e = cudaMemcpyAsync(dev, host, sbytes + cbytes, cudaMemcpyHostToDevice,
                                    a->stream);
    free(host);
    if (e != cudaSuccess) return la__cu_error(e, c->op, "cudaMemcpyAsync (chunk table)");
    t->seqs = (la_cu_seq *)dev;
    t->chunks = (la_cu_chunk *)((char *)dev + sbytes);
    t->nchunks = nch;
    return LA_OK;
}

/* ---- the pipelined delta-rule forward's streams and events (cuda-gdnf19) --
 * They belong to the context (one call at a time per context), so two
 * contexts on different streams never order each other's work or share a
 * graph capture; la_ctx_destroy frees them. Kept in this file, which every
 * CUDA context links already, so la_ctx_destroy pulls nothing more into a
 * static link. */

/* Destroys what was made (pending work finishes first: the CUDA runtime
 * releases a stream or event whose work is still queued once it completes). */
extern "C" void la__cuda_pipe_free(void *pipe) {
    la_cu_pipe *x = (la_cu_pipe *)pipe;
    if (!x) return;
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != x->device) cudaSetDevice(x->device);
    cudaEvent_t *ev[] = {&x->fork, &x->jhi, &x->jlo};
    for (int i = 0; i < 3; i++)
        if (*ev[i]) cudaEventDestroy(*ev[i]);
    for (int i = 0; i < LA_CU_PIPE_MAX; i++) {
        if (x->prep[i]) cudaEventDestroy(x->prep[i]);
        if (x->state[i]) cudaEventDestroy(x->state[i]);
    }
    if (x->hi) cudaStreamDestroy(x->hi);
    if (x->lo) cudaStreamDestroy(x->lo);
    cudaGetLastError();
    if (cur >= 0 && cur != x->device) cudaSetDevice(cur);
    free(x);
}

/* The context's streams and events (made on first use on the call's
 * device, current here; NULL where that fails: the call then takes the
 * unsplit path, and so do the context's later calls). */
la_cu_pipe *la__cu_pipe_get(const la__cu_call *c) {
    if (!c->pipe) return NULL;
    la_cu_pipe *x = (la_cu_pipe *)*c->pipe;
    if (x) return x->ok > 0 ? x : NULL;
    if (!(x = (la_cu_pipe *)calloc(1, sizeof *x))) return NULL;
    *c->pipe = x;
    x->device = c->device;
    int least = 0, greatest = 0;
    bool good = cudaDeviceGetStreamPriorityRange(&least, &greatest) == cudaSuccess &&
                cudaStreamCreateWithPriority(&x->hi, cudaStreamNonBlocking, greatest) ==
                    cudaSuccess &&
                cudaStreamCreateWithPriority(&x->lo, cudaStreamNonBlocking, least) == cudaSuccess;
    cudaEvent_t *ev[] = {&x->fork, &x->jhi, &x->jlo};
    for (int i = 0; good && i < 3; i++)
        good = cudaEventCreateWithFlags(ev[i], cudaEventDisableTiming) == cudaSuccess;
    for (int i = 0; good && i < LA_CU_PIPE_MAX; i++)
        good = cudaEventCreateWithFlags(&x->prep[i], cudaEventDisableTiming) == cudaSuccess &&
               cudaEventCreateWithFlags(&x->state[i], cudaEventDisableTiming) == cudaSuccess;
    if (!good) cudaGetLastError();
    x->ok = good ? 1 : -1;
    return good ? x : NULL;
}

