/* The chunk table of a call (its sequences and their 64-token chunks),
 * written on the device (cuda-graph24). Reached only from the CUDA ops'
 * .cu files, never from C: its kernel's host stub needs the C++ runtime
 * (runtime.cu's comment). */
#include "common.cuh"

#include <string.h>

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
