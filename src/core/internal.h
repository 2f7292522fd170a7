/* Internal helpers shared by every part of the library: error reporting,
 * argument validation, the thread pool and per-thread scratch memory. No
 * op family is named here (families register in src/ops/registry.h).
 * Names start with la__ (two underscores) and are not exported. */
#ifndef LINATTN_INTERNAL_H
#define LINATTN_INTERNAL_H

#include "linattn.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define LA_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define LA_HIDDEN __attribute__((visibility("hidden")))
#else
#define LA_PRINTF(a, b)
#define LA_HIDDEN
#endif

/* ---- errors ------------------------------------------------------- */

/* Records "fmt" as this thread's last error and returns status. */
LA_HIDDEN la_status la__error(la_status status, const char *fmt, ...) LA_PRINTF(2, 3);

/* ---- validation (each returns LA_OK or an error naming `op`) ------- */

LA_HIDDEN la_status la__check_ptr(const char *op, const char *name, const void *p);

/* Every float finite; the message names the tensor and the first bad index. */
LA_HIDDEN la_status la__check_finite(const char *op, const char *name, const float *x,
                                     size_t n);

/* la__check_finite shared over the context's threads for large tensors
 * (the same answer and message; serial when small or out of memory). */
LA_HIDDEN la_status la__check_finite_ctx(la_ctx *ctx, const char *op, const char *name,
                                         const float *x, size_t n);

/* *n = a*b*c*d with every factor >= 1 and the byte count fitting size_t. */
LA_HIDDEN la_status la__numel(const char *op, const char *name, size_t *n, int64_t a,
                              int64_t b, int64_t c, int64_t d);

/* Checks B, T, H, K, V >= 1, HV (0 or a positive multiple of H when
 * allow_hv, else 0 or H), cu_seqlens well formed, and that every tensor size
 * derived from them fits size_t. */
LA_HIDDEN la_status la__check_dims(const char *op, const la_dims *d, int allow_hv);

/* Number of sequences N (B, or n_seqs with cu_seqlens). */
LA_HIDDEN int64_t la__num_seqs(const la_dims *d);
/* Value heads: HV, or H when HV == 0. */
LA_HIDDEN int64_t la__value_heads(const la_dims *d);
/* Sequence n covers flattened tokens [*start, *start + *len) of the B*T axis. */
LA_HIDDEN void la__seq_bounds(const la_dims *d, int64_t n, int64_t *start, int64_t *len);
/* The longest sequence: T, or the largest cu_seqlens difference. */
LA_HIDDEN int64_t la__max_seq_len(const la_dims *d);

/* Log-space gates: finite and <= 0 (-1e4 is a full reset). */
LA_HIDDEN la_status la__check_log_gate(const char *op, const char *name, const float *g,
                                       size_t n);
/* Delta-rule beta: finite and in [0, 2] (the policy; MATH.md says (0, 2),
 * we also accept the closed ends: 0 skips a write, 2 reflects). */
LA_HIDDEN la_status la__check_beta(const char *op, const char *name, const float *beta,
                                   size_t n);

/* scale == 0 -> K^-1/2; a NaN/Inf/negative scale is an error. */
LA_HIDDEN la_status la__resolve_scale(const char *op, float scale, int64_t K, float *out);

/* dtype == LA_DTYPE_F32 (the CPU backend's only type), else
 * LA_ERR_UNSUPPORTED (LA_ERR_INVALID_ARGUMENT for an unknown value). */
LA_HIDDEN la_status la__check_dtype_cpu(const char *op, const la_dims *d);
/* A known la_dtype value. */
LA_HIDDEN la_status la__check_dtype_known(const char *op, const la_dims *d);
/* la__check_dims without the dtype test (the CUDA backend's shape check). */
LA_HIDDEN la_status la__check_shape(const char *op, const la_dims *d, int allow_hv);

/* ---- CUDA contexts (src/cuda/) -------------------------------------- */

/* Checks that `device` exists and can be used (LA_ERR_UNSUPPORTED in a
 * build without CUDA). */
LA_HIDDEN la_status la__cuda_init(const char *op, int device, void *stream);
LA_HIDDEN int la__ctx_device(const la_ctx *ctx);
/* The answer of an op the CUDA backend does not serve (LA_ERR_UNSUPPORTED). */
LA_HIDDEN la_status la__cuda_unsupported(const char *op);
LA_HIDDEN void *la__ctx_stream(const la_ctx *ctx);
/* The CUDA backend's per-context resources of the pipelined delta-rule
 * forward (internal streams and events, made on first use; src/cuda/
 * delta_chunk.cu), released by la_ctx_destroy through la__cuda_pipe_free. */
LA_HIDDEN void **la__ctx_cuda_pipe(la_ctx *ctx);
LA_HIDDEN void la__cuda_pipe_free(void *pipe);

/* ---- saved for backward (la_saved; src/core/saved.c) -------------- */

/* What identifies the call that filled a saved object. Every field is
 * compared by la__saved_match; each op fills what it has (unused pointers
 * NULL). */
#define LA__SAVED_NPTR 6
typedef struct la__saved_key {
    const char *family;  /* e.g. "delta_rule", "gated_delta_rule" */
    la_form form;
    int64_t chunk;       /* chunk length used */
    float scale;
    int l2norm;
    la_dims dims;        /* cu_seqlens compared by its offsets */
    const void *ptr[LA__SAVED_NPTR];
    const char *ptr_name[LA__SAVED_NPTR];
} la__saved_key;

/* The key of a delta-rule-like call (DeltaNet, Gated DeltaNet on CPU and
 * CUDA, KDA): inputs q, k, v, g, beta, initial_state; chunk 0 unless the
 * chunk form. */
LA_HIDDEN la__saved_key la__saved_delta_key(const char *family, la_form form, int64_t chunk,
                                            float scale, int l2norm, const la_dims *dims,
                                            const void *q, const void *k, const void *v,
                                            const void *g, const void *beta, const void *s0);
/* NULL saved: LA_OK. Else it must belong to ctx (not another context, not
 * one destroyed since); the message names `opts->saved`. */
LA_HIDDEN la_status la__saved_check(const char *op, la_ctx *ctx, const la_saved *s);
/* Forward: makes s hold at least `bytes` (64-byte aligned, content
 * undefined) for `key`, marked empty until la__saved_commit. On failure s
 * is unchanged. */
LA_HIDDEN la_status la__saved_prepare(const char *op, la_saved *s, const la__saved_key *key,
                                      size_t bytes, void **data);
LA_HIDDEN void la__saved_commit(la_saved *s);
/* Chunks of C tokens of the N sequences of d, the layout the CPU saved
 * objects index by (chunk c of sequence n is the cbase[n] + c-th): returns
 * their total; cbase non-NULL also gets cbase[n] = chunks before sequence
 * n, for n = 0..N (N + 1 entries, cbase[N] the total). */
LA_HIDDEN int64_t la__saved_chunk_bases(const la_dims *d, int64_t N, int64_t C, int64_t *cbase);
/* The layout of an object of chunk start states (simple GLA, GLA, linear
 * attention): cbase [N + 1] int64 (la__saved_chunk_bases), then H x (total
 * chunks) states of state_floats floats each, carved from base (NULL:
 * sizes only). Returns the bytes, 0 on overflow; *nc: the total chunks. */
LA_HIDDEN size_t la__saved_states_layout(const la_dims *d, int64_t C, int64_t H,
                                         size_t state_floats, const void *base, int64_t **cbase,
                                         float **states, int64_t *nc);
/* Forward of a chunk-start-state family: la__saved_prepare for the
 * la__saved_states_layout of (d, C, H, state_floats), carved, with the
 * chunk bases filled; the overflow of the size is an error naming op. */
LA_HIDDEN la_status la__saved_prepare_states(const char *op, la_saved *s,
                                             const la__saved_key *key, const la_dims *d,
                                             int64_t C, int64_t H, size_t state_floats,
                                             int64_t **cbase, float **states, int64_t *nc);
/* Marks s empty (NULL: nothing). Every CPU forward taking a saved object
 * calls it right after la__saved_check, before any other check can fail:
 * a failed forward must not leave an earlier step's fill (same pointers,
 * same key) for a backward that trusts it and skips its input scans.
 * It stays empty unless la__saved_prepare + la__saved_commit fill it. */
LA_HIDDEN void la__saved_clear(la_saved *s);
/* Backward: *data = NULL when s is NULL or empty; the data when s was
 * filled by the call `key` describes; else LA_ERR_INVALID_ARGUMENT naming
 * the first field that differs. */
LA_HIDDEN la_status la__saved_match(const char *op, const la_saved *s, const la__saved_key *key,
                                    const void **data);
/* The context's list of its saved objects (ctx.c): add may fail (OOM);
 * la_ctx_destroy orphans those left (la__saved_orphan). */
LA_HIDDEN la_status la__ctx_saved_add(la_ctx *ctx, la_saved *s);
LA_HIDDEN void la__ctx_saved_remove(la_ctx *ctx, la_saved *s);
LA_HIDDEN void la__saved_orphan(la_saved *s);
/* cuda-saved7: a CUDA context's saved object keeps its products in device
 * memory. The CUDA backend passes how it allocates (on the context's stream
 * and device) and frees (stream-ordered: cudaFreeAsync on that stream);
 * saved.c keeps the block (growth only) and frees it through `release` at
 * la_saved_destroy, at la_ctx_destroy (orphaning), or when a larger block
 * replaces it. prepare_dev is la__saved_prepare for that block; match_dev
 * is la__saved_match giving the device block. Either kind of object used
 * by the other backend's call is LA_ERR_INVALID_ARGUMENT naming it. */
typedef struct la__saved_dev_ops {
    la_status (*alloc)(const char *op, void **p, size_t bytes, void *stream, int device);
    void (*release)(void *p, void *stream, int device);
} la__saved_dev_ops;
LA_HIDDEN la_status la__saved_prepare_dev(const char *op, la_saved *s, const la__saved_key *key,
                                          size_t bytes, const la__saved_dev_ops *ops, void **data);
LA_HIDDEN la_status la__saved_match_dev(const char *op, const la_saved *s,
                                        const la__saved_key *key, const void **data);

/* ---- threads and scratch ------------------------------------------ */

/* fn(arg, task, tid) for task in [0, n_tasks), tid in [0, threads). Every task
 * must write only its own outputs, so the result never depends on which
 * thread ran it. */
typedef void (*la__task_fn)(void *arg, int64_t task, int tid);
LA_HIDDEN void la__parallel_for(la_ctx *ctx, int64_t n_tasks, la__task_fn fn, void *arg);

/* la__parallel_for for work that may be too small to share: `bytes_per_task`
 * is about the memory a task touches (its cost). Threads join only while
 * each gets at least LA__PARALLEL_MIN_BYTES of it; below that the tasks run
 * on the calling thread, so a small decoding step never pays the wake-up of
 * the pool and its state never leaves the caller's cache. Which tasks run
 * where still never changes what they compute. */
#define LA__PARALLEL_MIN_BYTES ((int64_t)1 << 20)
LA_HIDDEN void la__parallel_for_sized(la_ctx *ctx, int64_t n_tasks, int64_t bytes_per_task,
                                      la__task_fn fn, void *arg);

/* Work statistics of the context since the last reset, for benchmarks
 * (`linattn bench --scaling`): the tasks handed out, the parallel regions,
 * and the CPU-time critical path beyond the caller's own thread: for every
 * threaded region, (the busiest thread's CPU time) - (the caller's CPU time
 * in it). Caller thread CPU time over a call + crit_extra_s estimates the
 * call's wall time on an otherwise idle machine (CPU clocks do not count
 * time a thread spent preempted or blocked). */
typedef struct la__ctx_stats {
    int64_t tasks, regions;
    double crit_extra_s;
} la__ctx_stats;
LA_HIDDEN void la__ctx_stats_get(const la_ctx *ctx, la__ctx_stats *out);
LA_HIDDEN void la__ctx_stats_reset(la_ctx *ctx);

/* Makes sure every thread has at least `bytes` of 64-byte-aligned scratch;
 * call before la__parallel_for (tasks cannot fail). Grows, never shrinks. */
LA_HIDDEN la_status la__scratch_reserve(la_ctx *ctx, size_t bytes);
LA_HIDDEN void *la__scratch(la_ctx *ctx, int tid);

/* The one scratch arena: a bump allocator over one thread's scratch, handing
 * out 64-byte-aligned pieces. With base == NULL it only counts, so the same
 * layout code sizes the reservation (la__arena_size) and carves the
 * scratch. A size that does not fit size_t sets `overflow`. */
typedef struct la__arena {
    char *base;
    size_t used; /* bytes */
    int overflow;
} la__arena;

static inline void *la__arena_take(la__arena *a, size_t count, size_t elem) {
    if (count != 0 && elem > (SIZE_MAX - 64 - a->used) / count) {
        a->overflow = 1;
        return NULL;
    }
    const size_t bytes = (count * elem + 63) & ~(size_t)63;
    void *p = a->base ? a->base + a->used : NULL;
    a->used += bytes;
    return p;
}
static inline float *la__arena_floats(la__arena *a, size_t n) {
    return (float *)la__arena_take(a, n, sizeof(float));
}
/* Bytes the pieces took, or 0 when a size overflowed. */
static inline size_t la__arena_size(const la__arena *a) { return a->overflow ? 0 : a->used; }

#endif
