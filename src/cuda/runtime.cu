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

/* 1 for the errors of a stream capture (an operation it does not allow, a
 * capture already invalidated, streams of two captures mixed). */
static int capture_error(cudaError_t e) {
    switch (e) {
    case cudaErrorStreamCaptureUnsupported:
    case cudaErrorStreamCaptureInvalidated:
    case cudaErrorStreamCaptureMerge:
    case cudaErrorStreamCaptureUnmatched:
    case cudaErrorStreamCaptureUnjoined:
    case cudaErrorStreamCaptureIsolation:
    case cudaErrorStreamCaptureImplicit:
    case cudaErrorCapturedEvent:
    case cudaErrorStreamCaptureWrongThread: return 1;
    default: return 0;
    }
}

la_status la__cu_error(cudaError_t e, const char *op, const char *what) {
    const la_status st = e == cudaErrorMemoryAllocation ? LA_ERR_OUT_OF_MEMORY : LA_ERR_INTERNAL;
    return la__error(st, "%s: CUDA error %d (%s: %s) in %s%s", op, (int)e, cudaGetErrorName(e),
                     cudaGetErrorString(e), what,
                     capture_error(e) ? "; a CUDA graph capture refused it (README, \"CUDA "
                                        "graphs\"; e.g. a call on the legacy default stream "
                                        "while another stream captures: capture on the "
                                        "context's own stream)"
                                      : "");
}

extern "C" int la__cu_capturing(void *stream) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing((cudaStream_t)stream, &cs) != cudaSuccess) {
        cudaGetLastError();
        return 1; /* the legacy stream beside a global-mode capture: treat as capturing */
    }
    return cs != cudaStreamCaptureStatusNone;
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
        if (e != cudaErrorMemoryAllocation) /* e.g. a capture's refusal: named as such */
            return la__cu_error(e, a->op, "cudaMallocAsync (scratch)");
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

/* ---- the chunk table, written on the device (cuda-graph24) ---------------
 * No host buffer is copied: the sequence bounds travel as kernel parameters
 * (at most LA_CU_TAB_MAX sequences a launch, so a few launches for very
 * many sequences; one for equal lengths), which the launch copies when it
 * is enqueued, or a graph capture keeps in its kernel node. So a call reads
 * no host memory after it returns, needs no pinned staging buffer, and is
 * legal inside a stream capture; the table's bytes are the host-built
 * table's of before. */
#define LA_CU_TAB_MAX 480
struct la_cu_tab_args {
    la_cu_seq *seqs;     /* written [n0, n0 + ns) */
    la_cu_chunk *chunks; /* NULL: sequences only */
    int64_t T;           /* >= 0: every sequence T tokens from n T (b unused); -1: b */
    int64_t chunk0;      /* the first chunk of sequence n0 */
    int32_t n0, ns;
    int64_t b[LA_CU_TAB_MAX + 1]; /* sequence n0 + i is [b[i], b[i + 1]) */
};
/* kernel parameters: at most 4 KB before CUDA 12.1 (and so on every driver) */
static_assert(sizeof(la_cu_tab_args) <= 4096, "la_cu_tab_args over the 4 KB parameter limit");

/* One CTA per sequence of the launch. */
__global__ void __launch_bounds__(128)
    la_cu_table_kernel(const __grid_constant__ la_cu_tab_args a) {
    const int i = blockIdx.x, t = threadIdx.x;
    int64_t start, len, c0;
    if (a.T >= 0) {
        start = (int64_t)(a.n0 + i) * a.T, len = a.T;
        c0 = a.chunk0 + (int64_t)i * la_cu_nchunks(a.T);
    } else { /* c0: the chunks of the launch's sequences before this one */
        __shared__ int64_t part[4];
        int64_t s = 0;
        for (int j = t; j < i; j += 128) s += la_cu_nchunks(a.b[j + 1] - a.b[j]);
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if ((t & 31) == 0) part[t >> 5] = s;
        __syncthreads();
        c0 = a.chunk0 + part[0] + part[1] + part[2] + part[3];
        start = a.b[i], len = a.b[i + 1] - a.b[i];
    }
    const int64_t k = la_cu_nchunks(len);
    if (t == 0) {
        la_cu_seq s;
        s.start = start, s.len = len, s.chunk0 = (int32_t)c0, s.nch = (int32_t)k;
        a.seqs[a.n0 + i] = s;
    }
    for (int64_t j = t; a.chunks && j < k; j += 128) {
        la_cu_chunk ch;
        ch.tok0 = start + j * LA_CU_C;
        ch.len = (int32_t)(len - j * LA_CU_C < LA_CU_C ? len - j * LA_CU_C : LA_CU_C);
        ch.seq = a.n0 + i;
        ch.idx = (int32_t)j;
        ch.pad = 0;
        a.chunks[c0 + j] = ch;
    }
}

la_status la__cu_put_table(cudaStream_t stream, const char *op, la_cu_seq *seqs,
                           la_cu_chunk *chunks, int64_t n, const int64_t *b, int64_t T) {
    la_cu_tab_args a;
    memset(&a, 0, sizeof a); /* no stale stack bytes (padding, unused b[]) in launches or nodes */
    a.seqs = seqs, a.chunks = chunks, a.T = b ? -1 : T, a.chunk0 = 0;
    if (n <= 0) return LA_OK;
    if (!b) { /* equal lengths: one launch (n <= INT32_MAX: la__cu_make_table) */
        a.n0 = 0, a.ns = (int32_t)n;
        la_cu_table_kernel<<<(unsigned)n, 128, 0, stream>>>(a);
        LA_CU_LAUNCHED(op);
        return LA_OK;
    }
    for (int64_t n0 = 0; n0 < n; n0 += LA_CU_TAB_MAX) {
        const int64_t ns = n - n0 < LA_CU_TAB_MAX ? n - n0 : LA_CU_TAB_MAX;
        a.n0 = (int32_t)n0, a.ns = (int32_t)ns;
        for (int64_t i = 0; i <= ns; i++) a.b[i] = b[n0 + i];
        la_cu_table_kernel<<<(unsigned)ns, 128, 0, stream>>>(a);
        LA_CU_LAUNCHED(op);
        for (int64_t i = 0; i < ns; i++) a.chunk0 += la_cu_nchunks(b[n0 + i + 1] - b[n0 + i]);
    }
    return LA_OK;
}

la_status la__cu_count_chunks(const la__cu_call *c, int64_t *nchunks) {
    const int64_t N = c->N;
    int64_t nch = 0;
    for (int64_t n = 0; n < N; n++) {
        const int64_t len = c->cu_seqlens ? c->cu_seqlens[n + 1] - c->cu_seqlens[n] : c->T;
        nch += la_cu_nchunks(len);
    }
    *nchunks = nch;
    if (N > INT32_MAX || nch > INT32_MAX)
        return la__error(LA_ERR_INVALID_SIZE, "%s: too many sequences or chunks", c->op);
    return LA_OK;
}

la_status la__cu_make_table(la_cu_arena *a, const la__cu_call *c, la_cu_table *t) {
    const int64_t N = c->N;
    int64_t nch = 0;
    la_status st = la__cu_count_chunks(c, &nch);
    if (st) return st;
    const size_t sbytes = ((size_t)(N ? N : 1) * sizeof(la_cu_seq) + 255) & ~(size_t)255;
    const size_t cbytes = (size_t)(nch ? nch : 1) * sizeof(la_cu_chunk);
    void *dev = NULL;
    if ((st = la__cu_alloc(a, &dev, sbytes + cbytes))) return st;
    t->seqs = (la_cu_seq *)dev;
    t->chunks = (la_cu_chunk *)((char *)dev + sbytes);
    t->nchunks = nch;
    return la__cu_put_table(a->stream, c->op, t->seqs, t->chunks, N, c->cu_seqlens, c->T);
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
    bool good =
        cudaDeviceGetStreamPriorityRange(&least, &greatest) == cudaSuccess &&
        cudaStreamCreateWithPriority(&x->hi, cudaStreamNonBlocking, greatest) == cudaSuccess &&
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
