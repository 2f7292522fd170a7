/* Saved for backward (la_saved, include/linattn.h): a buffer a forward fills
 * with what its backward would recompute, and the key of the call that
 * filled it, so a backward of any other call refuses it by name instead of
 * reading products of other inputs.
 *
 * The buffer only grows (a training loop reuses the object for the same
 * shapes: its pages are touched once, not per step; a first touch costs
 * ~13 us per 4 KiB page on the VMs here, see bench/NOTES.md cpu-lane5).
 *
 * cuda-saved7: an object of a CUDA context keeps its products in one device
 * block instead (la__saved_prepare_dev; the CUDA backend allocates it with
 * cudaMallocAsync on the context's stream, so no per-step cudaMalloc once it
 * is large enough). It is freed with cudaFreeAsync on that same stream by
 * la_saved_destroy, by la_ctx_destroy (the object is orphaned then), or when
 * a larger block replaces it: stream-ordered, so work already queued on the
 * stream that reads it finishes first, and no call synchronises. The caller
 * guarantees what a context already requires: its stream exists until the
 * object or its context is destroyed. */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct la_saved {
    la_ctx *ctx; /* owner; NULL once la_ctx_destroy ran */
    int filled;
    la__saved_key key;
    int64_t *cu;     /* copy of the key's cu_seqlens offsets (key.dims points here) */
    size_t cu_cap;   /* entries */
    void *data;
    size_t cap;      /* bytes */
    /* cuda-saved7: a CUDA context's products, in device memory (dev_cap
     * bytes from dev_ops->alloc on dev_stream / dev_device); filled_dev: the
     * object was filled by a CUDA forward (dev), not a CPU one (data) */
    void *dev;
    size_t dev_cap;
    const la__saved_dev_ops *dev_ops;
    void *dev_stream;
    int dev_device;
    int filled_dev;
};

/* Frees the device block (stream-ordered on the stream that allocated it). */
static void dev_release(la_saved *s) {
    if (s->dev) s->dev_ops->release(s->dev, s->dev_stream, s->dev_device);
    s->dev = NULL;
    s->dev_cap = 0;
}

la_status la_saved_create(la_ctx *ctx, la_saved **out) {
    static const char *const op = "la_saved_create";
    la_status st;
    if ((st = la__check_ptr(op, "out", out)) || (st = la__check_ptr(op, "ctx", ctx))) return st;
    la_saved *s = calloc(1, sizeof *s);
    if (!s) return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory", op);
    s->ctx = ctx;
    if ((st = la__ctx_saved_add(ctx, s))) {
        free(s);
        return st;
    }
    *out = s;
    return LA_OK;
}

void la_saved_destroy(la_saved *s) {
    if (!s) return;
    if (s->ctx) la__ctx_saved_remove(s->ctx, s);
    dev_release(s);
    free(s->data);
    free(s->cu);
    free(s);
}

size_t la_saved_bytes(const la_saved *s) {
    return s ? s->cap + s->dev_cap + s->cu_cap * sizeof(int64_t) + sizeof *s : 0;
}

int la_saved_filled(const la_saved *s) { return s ? s->filled : 0; }

/* la_ctx_destroy: the context's stream still exists here, so the device
 * block is freed now (a later la_saved_destroy may come after the caller
 * destroyed the stream). */
void la__saved_orphan(la_saved *s) {
    dev_release(s);
    s->ctx = NULL;
    s->filled = 0;
}

la__saved_key la__saved_delta_key(const char *family, la_form form, int64_t chunk,
                                  float scale, int l2norm, const la_dims *dims, const void *q,
                                  const void *k, const void *v, const void *g, const void *beta,
                                  const void *s0) {
    la__saved_key key;
    memset(&key, 0, sizeof key);
    key.family = family;
    key.form = form;
    key.chunk = form == LA_FORM_CHUNK ? chunk : 0;
    key.scale = scale;
    key.l2norm = l2norm;
    key.dims = *dims;
    const void *p[LA__SAVED_NPTR] = {q, k, v, g, beta, s0};
    static const char *const names[LA__SAVED_NPTR] = {"q", "k", "v", "g", "beta", "initial_state"};
    for (int i = 0; i < LA__SAVED_NPTR; i++) key.ptr[i] = p[i], key.ptr_name[i] = names[i];
    return key;
}

la_status la__saved_check(const char *op, la_ctx *ctx, const la_saved *s) {
    if (!s) return LA_OK;
    if (!s->ctx)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts->saved belongs to a context that was destroyed", op);
    if (s->ctx != ctx && la_ctx_is_cuda(s->ctx) != la_ctx_is_cuda(ctx))
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts->saved was created for a %s context, this call runs in a %s "
                         "one (la_saved_create with this call's context)",
                         op, la_ctx_is_cuda(s->ctx) ? "CUDA" : "CPU",
                         la_ctx_is_cuda(ctx) ? "CUDA" : "CPU");
    if (s->ctx != ctx)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts->saved was created for another context (la_saved_create)",
                         op);
    return LA_OK;
}

int64_t la__saved_chunk_bases(const la_dims *d, int64_t N, int64_t C, int64_t *cbase) {
    int64_t NC = 0;
    for (int64_t n = 0; n < N; n++) {
        if (cbase) cbase[n] = NC;
        int64_t start, len;
        la__seq_bounds(d, n, &start, &len);
        NC += (len + C - 1) / C;
    }
    if (cbase) cbase[N] = NC;
    return NC;
}

size_t la__saved_states_layout(const la_dims *d, int64_t C, int64_t H, size_t state_floats,
                               const void *base, int64_t **cbase, float **states, int64_t *nc) {
    const int64_t N = la__num_seqs(d), NC = la__saved_chunk_bases(d, N, C, NULL);
    if ((double)H * (double)NC * (double)state_floats * sizeof(float) > 0x1p62) return 0;
    la__arena ar = {(char *)(uintptr_t)base, 0, 0};
    *cbase = la__arena_take(&ar, (size_t)N + 1, sizeof(int64_t));
    *states = la__arena_floats(&ar, (size_t)(H * NC) * state_floats);
    if (nc) *nc = NC;
    return la__arena_size(&ar);
}

la_status la__saved_prepare_states(const char *op, la_saved *s, const la__saved_key *key,
                                   const la_dims *d, int64_t C, int64_t H, size_t state_floats,
                                   int64_t **cbase, float **states, int64_t *nc) {
    const size_t bytes = la__saved_states_layout(d, C, H, state_floats, NULL, cbase, states, nc);
    if (!bytes)
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: opts->saved: the saved size overflows", op);
    void *data;
    const la_status st = la__saved_prepare(op, s, key, bytes, &data);
    if (st) return st;
    la__saved_states_layout(d, C, H, state_floats, data, cbase, states, nc);
    la__saved_chunk_bases(d, la__num_seqs(d), C, *cbase);
    return LA_OK;
}

void la__saved_clear(la_saved *s) {
    if (s) s->filled = 0;
}

/* Makes s->cu hold the key's offsets (ncu entries) from a block that grows
 * only: *grown is the new block to install (NULL: the old one is large
 * enough); nothing in s changes here. */
static la_status cu_reserve(const char *op, const la_saved *s, size_t ncu, int64_t **grown) {
    *grown = NULL;
    if (ncu > s->cu_cap && !(*grown = malloc(ncu * sizeof **grown)))
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory for opts->saved", op);
    return LA_OK;
}

/* Records key (its offsets copied into s->cu, grown to cu_new when set) and
 * marks s empty until la__saved_commit. */
static void set_key(la_saved *s, const la__saved_key *key, int64_t *cu_new, size_t ncu) {
    if (cu_new) {
        free(s->cu);
        s->cu = cu_new;
        s->cu_cap = ncu;
    }
    s->filled = 0;
    s->key = *key;
    if (ncu) {
        memcpy(s->cu, key->dims.cu_seqlens, ncu * sizeof *s->cu);
        s->key.dims.cu_seqlens = s->cu;
    }
}

static size_t key_ncu(const la__saved_key *key) {
    return key->dims.cu_seqlens ? (size_t)key->dims.n_seqs + 1 : 0;
}

la_status la__saved_prepare(const char *op, la_saved *s, const la__saved_key *key, size_t bytes,
                            void **data) {
    const size_t ncu = key_ncu(key);
    if (bytes > SIZE_MAX - 63)
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: opts->saved: %zu bytes overflow", op, bytes);
    bytes = (bytes + 63) & ~(size_t)63;
    void *nd = NULL;
    int64_t *ncu_p = NULL;
    if (bytes > s->cap && posix_memalign(&nd, 64, bytes) != 0)
        return la__error(LA_ERR_OUT_OF_MEMORY,
                         "%s: out of memory allocating %zu bytes for opts->saved", op, bytes);
    la_status st = cu_reserve(op, s, ncu, &ncu_p);
    if (st) {
        free(nd);
        return st;
    }
    if (nd) {
        free(s->data);
        s->data = nd;
        s->cap = bytes;
    }
    set_key(s, key, ncu_p, ncu);
    s->filled_dev = 0;
    *data = s->data;
    return LA_OK;
}

/* cuda-saved7: the device twin of la__saved_prepare (growth only; the old
 * block is released stream-ordered after the new one is allocated, so a
 * failure leaves s unchanged). */
la_status la__saved_prepare_dev(const char *op, la_saved *s, const la__saved_key *key, size_t bytes,
                                const la__saved_dev_ops *ops, void **data) {
    const size_t ncu = key_ncu(key);
    if (bytes > SIZE_MAX - 255)
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: opts->saved: %zu bytes overflow", op, bytes);
    bytes = (bytes + 255) & ~(size_t)255;
    void *nd = NULL, *stream = la__ctx_stream(s->ctx);
    const int device = la__ctx_device(s->ctx);
    la_status st;
    if (bytes > s->dev_cap && (st = ops->alloc(op, &nd, bytes, stream, device))) return st;
    int64_t *ncu_p = NULL;
    if ((st = cu_reserve(op, s, ncu, &ncu_p))) {
        if (nd) ops->release(nd, stream, device);
        return st;
    }
    if (nd) {
        dev_release(s);
        s->dev = nd;
        s->dev_cap = bytes;
        s->dev_ops = ops;
        s->dev_stream = stream;
        s->dev_device = device;
    }
    set_key(s, key, ncu_p, ncu);
    s->filled_dev = 1;
    *data = s->dev;
    return LA_OK;
}

void la__saved_commit(la_saved *s) { s->filled = 1; }

static la_status differs(const char *op, const char *what, const char *detail) {
    return la__error(LA_ERR_INVALID_ARGUMENT,
                     "%s: opts->saved was filled by a different call (%s differs%s); pass the "
                     "saved object of this call's forward, or an empty one to recompute",
                     op, what, detail);
}

/* LA_OK when s's key equals key; else the error naming the first field
 * that differs. */
static la_status match_key(const char *op, const la_saved *s, const la__saved_key *key) {
    const la__saved_key *f = &s->key;
    char buf[160];
    if (strcmp(f->family, key->family) != 0) {
        snprintf(buf, sizeof buf, ": filled by the %s forward, this is the %s backward",
                 f->family, key->family);
        return differs(op, "op", buf);
    }
    if (f->form != key->form) return differs(op, "opts.form", "");
    const la_dims *a = &f->dims, *b = &key->dims;
    const struct {
        const char *name;
        int64_t x, y;
    } ints[] = {{"dims.B", a->B, b->B},
                {"dims.T", a->T, b->T},
                {"dims.H", a->H, b->H},
                {"dims.HV", la__value_heads(a), la__value_heads(b)},
                {"dims.K", a->K, b->K},
                {"dims.V", a->V, b->V},
                {"dims.dtype", a->dtype, b->dtype},
                {"cu_seqlens (given or not)", !a->cu_seqlens, !b->cu_seqlens},
                {"dims.n_seqs", a->cu_seqlens ? a->n_seqs : 0, b->cu_seqlens ? b->n_seqs : 0},
                {"the chunk length used (opts.chunk_size)", f->chunk, key->chunk},
                {"opts.use_qk_l2norm", f->l2norm, key->l2norm}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (ints[i].x != ints[i].y) {
            snprintf(buf, sizeof buf, ": %" PRId64 " in the forward, %" PRId64 " now", ints[i].x,
                     ints[i].y);
            return differs(op, ints[i].name, buf);
        }
    if (a->cu_seqlens)
        for (int64_t n = 0; n <= a->n_seqs; n++)
            if (a->cu_seqlens[n] != b->cu_seqlens[n]) {
                snprintf(buf, sizeof buf, ": entry %" PRId64 " is %" PRId64 " in the forward, %" PRId64
                         " now", n, a->cu_seqlens[n], b->cu_seqlens[n]);
                return differs(op, "cu_seqlens", buf);
            }
    if (memcmp(&f->scale, &key->scale, sizeof f->scale) != 0) {
        snprintf(buf, sizeof buf, ": %g in the forward, %g now", (double)f->scale,
                 (double)key->scale);
        return differs(op, "opts.scale (resolved)", buf);
    }
    for (int i = 0; i < LA__SAVED_NPTR; i++)
        if (f->ptr[i] != key->ptr[i])
            return differs(op, key->ptr_name[i] ? key->ptr_name[i] : "an input pointer",
                           " (another tensor)");
    return LA_OK;
}

/* cuda-saved7: a host backward given products in device memory, or a
 * device backward given host ones (not reachable through the context
 * binding, which la__saved_check names first; kept as a guard). */
static la_status wrong_memory(const char *op, int dev) {
    return la__error(LA_ERR_INVALID_ARGUMENT,
                     "%s: opts->saved was filled by a %s forward (its products are in %s "
                     "memory); this is a %s backward",
                     op, dev ? "CUDA" : "CPU", dev ? "device" : "host", dev ? "CPU" : "CUDA");
}

la_status la__saved_match(const char *op, const la_saved *s, const la__saved_key *key,
                          const void **data) {
    *data = NULL;
    if (!s || !s->filled) return LA_OK;
    if (s->filled_dev) return wrong_memory(op, 1);
    la_status st = match_key(op, s, key);
    if (!st) *data = s->data;
    return st;
}

la_status la__saved_match_dev(const char *op, const la_saved *s, const la__saved_key *key,
                              const void **data) {
    *data = NULL;
    if (!s || !s->filled) return LA_OK;
    if (!s->filled_dev) return wrong_memory(op, 0);
    la_status st = match_key(op, s, key);
    if (!st) *data = s->dev;
    return st;
}
