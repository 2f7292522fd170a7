/* Saved for backward (la_saved, include/linattn.h): a buffer a forward fills
 * with what its backward would recompute, and the key of the call that
 * filled it, so a backward of any other call refuses it by name instead of
 * reading products of other inputs.
 *
 * The buffer only grows (a training loop reuses the object for the same
 * shapes: its pages are touched once, not per step; a first touch costs
 * ~13 us per 4 KiB page on the VMs here, see bench/NOTES.md cpu-lane5). */
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
};

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
    free(s->data);
    free(s->cu);
    free(s);
}

size_t la_saved_bytes(const la_saved *s) {
    return s ? s->cap + s->cu_cap * sizeof(int64_t) + sizeof *s : 0;
}

int la_saved_filled(const la_saved *s) { return s ? s->filled : 0; }

void la__saved_orphan(la_saved *s) {
    s->ctx = NULL;
    s->filled = 0;
}

la_status la__saved_check(const char *op, la_ctx *ctx, const la_saved *s) {
    if (!s) return LA_OK;
    if (!s->ctx)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts->saved belongs to a context that was destroyed", op);
    if (s->ctx != ctx)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts->saved was created for another context (la_saved_create)",
                         op);
    return LA_OK;
}

void la__saved_clear(la_saved *s) {
    if (s) s->filled = 0;
}

la_status la__saved_prepare(const char *op, la_saved *s, const la__saved_key *key, size_t bytes,
                            void **data) {
    const la_dims *d = &key->dims;
    const size_t ncu = d->cu_seqlens ? (size_t)d->n_seqs + 1 : 0;
    if (bytes > SIZE_MAX - 63)
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: opts->saved: %zu bytes overflow", op, bytes);
    bytes = (bytes + 63) & ~(size_t)63;
    void *nd = NULL;
    int64_t *ncu_p = NULL;
    if (bytes > s->cap && posix_memalign(&nd, 64, bytes) != 0)
        return la__error(LA_ERR_OUT_OF_MEMORY,
                         "%s: out of memory allocating %zu bytes for opts->saved", op, bytes);
    if (ncu > s->cu_cap && !(ncu_p = malloc(ncu * sizeof *ncu_p))) {
        free(nd);
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory for opts->saved", op);
    }
    if (nd) {
        free(s->data);
        s->data = nd;
        s->cap = bytes;
    }
    if (ncu_p) {
        free(s->cu);
        s->cu = ncu_p;
        s->cu_cap = ncu;
    }
    s->filled = 0;
    s->key = *key;
    if (ncu) {
        memcpy(s->cu, d->cu_seqlens, ncu * sizeof *s->cu);
        s->key.dims.cu_seqlens = s->cu;
    }
    *data = s->data;
    return LA_OK;
}

void la__saved_commit(la_saved *s) { s->filled = 1; }

static la_status differs(const char *op, const char *what, const char *detail) {
    return la__error(LA_ERR_INVALID_ARGUMENT,
                     "%s: opts->saved was filled by a different call (%s differs%s); pass the "
                     "saved object of this call's forward, or an empty one to recompute",
                     op, what, detail);
}

la_status la__saved_match(const char *op, const la_saved *s, const la__saved_key *key,
                          const void **data) {
    *data = NULL;
    if (!s || !s->filled) return LA_OK;
    const la__saved_key *f = &s->key;
    char buf[160];
    if (strcmp(f->family, key->family) != 0) {
        snprintf(buf, sizeof buf, ": filled by the %s forward", f->family);
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
    *data = s->data;
    return LA_OK;
}
