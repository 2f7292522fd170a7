/* Softmax attention: public entry points. Everything is validated and the
 * scratch is reserved before any output is written; then the per-head
 * kernels of textbook.c / streaming.c run over (sequence, head) tasks (the
 * streaming forward also splits each head into query blocks, each task
 * writing only its own rows, so the result never depends on the thread
 * count). */
#include "softmax_attn.h"
#include "../../cuda/cuda_backend.h"

#include <inttypes.h>

la_softmax_opts la_softmax_opts_default(void) {
    la_softmax_opts o;
    o.causal = 0;
    o.form = LA_SOFTMAX_TEXTBOOK;
    o.scale = 0;      /* K^-1/2 */
    o.block_size = 0; /* LA_DEFAULT_CHUNK_SIZE */
    o.kv_lens = NULL;
    return o;
}

#define SA_DEFAULT_BLOCK LA_DEFAULT_CHUNK_SIZE

typedef struct sa_call {
    const la_dims *dims;
    la_softmax_form form;
    int causal;
    float scale;
    int64_t block;   /* streaming block, clamped to the longest sequence */
    const int64_t *kv_lens;
    int64_t H, K, V, max_len, n_qblocks;
    la_ctx *ctx;
    const float *q, *k, *v, *d_o;
    float *o, *lse, *dq, *dk, *dv;
    const la__kernels *kr;
} sa_call;

static const char *form_name(la_softmax_form f) {
    return f == LA_SOFTMAX_TEXTBOOK ? "textbook" : "streaming";
}

/* Checks ctx, opts, dims and the options (nothing that reads tensor data),
 * and fills in c. */
static la_status check_call(const char *op, la_ctx *ctx, const la_softmax_opts *opts,
                            const la_dims *dims, sa_call *c) {
    la_status st;
    if ((st = la__check_ptr(op, "ctx", ctx))) return st;
    if ((st = la__check_ptr(op, "opts", opts))) return st;
    if ((st = la__check_ptr(op, "dims", dims))) return st;
    if ((st = la__check_dims(op, dims, 0))) return st;
    if (opts->form != LA_SOFTMAX_TEXTBOOK && opts->form != LA_SOFTMAX_STREAMING)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts->form = %d (must be LA_SOFTMAX_TEXTBOOK = 0 or "
                         "LA_SOFTMAX_STREAMING = 1)", op, (int)opts->form);
    if (opts->form == LA_SOFTMAX_STREAMING && opts->block_size < 0)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts->block_size = %" PRId64 " (must be >= 0; 0 means %d)", op,
                         opts->block_size, SA_DEFAULT_BLOCK);
    if ((st = la__resolve_scale(op, opts->scale, dims->K, &c->scale))) return st;
    if (opts->kv_lens) {
        if (dims->cu_seqlens)
            return la__error(LA_ERR_INVALID_ARGUMENT,
                             "%s: opts->kv_lens and dims->cu_seqlens are both given (padding "
                             "masks are for [B, T] batches; packed sequences need none)", op);
        for (int64_t b = 0; b < dims->B; b++)
            if (opts->kv_lens[b] < 1 || opts->kv_lens[b] > dims->T)
                return la__error(LA_ERR_INVALID_ARGUMENT,
                                 "%s: opts->kv_lens[%" PRId64 "] = %" PRId64
                                 " (must be in 1..T = %" PRId64 ")", op, b, opts->kv_lens[b],
                                 dims->T);
    }
    c->ctx = ctx;
    c->kr = la__kernels_default();
    c->dims = dims;
    c->form = opts->form;
    c->causal = opts->causal != 0;
    c->kv_lens = opts->kv_lens;
    c->H = dims->H;
    c->K = dims->K;
    c->V = dims->V;
    c->max_len = la__max_seq_len(dims);
    c->block = opts->form == LA_SOFTMAX_STREAMING && opts->block_size ? opts->block_size
                                                                      : SA_DEFAULT_BLOCK;
    if (c->block > c->max_len) c->block = c->max_len;
    c->n_qblocks = (c->max_len + c->block - 1) / c->block;
    return LA_OK;
}

/* Sizes and reserves the per-thread scratch of the chosen form. */
static la_status reserve_scratch(const char *op, sa_call *c, int backward) {
    size_t bytes = 0;
    int ok;
    if (c->form == LA_SOFTMAX_TEXTBOOK)
        ok = backward ? sa_textbook_backward_bytes(c->max_len, c->K, c->V, &bytes)
                      : sa_textbook_forward_bytes(c->max_len, c->K, c->V, &bytes);
    else
        ok = backward ? sa_streaming_backward_bytes(c->max_len, c->block, c->K, c->V, &bytes)
                      : sa_streaming_forward_bytes(c->block, c->K, c->V, &bytes);
    if (!ok) {
        if (c->form == LA_SOFTMAX_TEXTBOOK)
            return la__error(LA_ERR_INVALID_SIZE,
                             "%s: the textbook form needs a %" PRId64 " x %" PRId64
                             " score matrix per thread, which overflows size_t "
                             "(use LA_SOFTMAX_STREAMING)", op, c->max_len, c->max_len);
        return la__error(LA_ERR_INVALID_SIZE,
                         "%s: streaming scratch for T = %" PRId64 ", block %" PRId64
                         ", K = %" PRId64 ", V = %" PRId64 " overflows size_t", op,
                         c->max_len, c->block, c->K, c->V);
    }
    if (la__scratch_reserve(c->ctx, bytes) != LA_OK) {
        if (c->form == LA_SOFTMAX_TEXTBOOK)
            return la__error(LA_ERR_OUT_OF_MEMORY,
                             "%s: out of memory allocating %zu bytes of scratch per thread for "
                             "the textbook form's %" PRId64 " x %" PRId64
                             " score matrix (use LA_SOFTMAX_STREAMING)", op, bytes, c->max_len,
                             c->max_len);
        return la__error(LA_ERR_OUT_OF_MEMORY,
                         "%s: out of memory allocating %zu bytes of scratch per thread for "
                         "the %s form", op, bytes, form_name(c->form));
    }
    return LA_OK;
}

static void head_init(const sa_call *c, int64_t n, int64_t h, sa_head *hd) {
    int64_t start, len;
    la__seq_bounds(c->dims, n, &start, &len);
    const size_t H = (size_t)c->H, K = (size_t)c->K, V = (size_t)c->V;
    const size_t row = (size_t)start * H + (size_t)h;
    hd->len = len;
    hd->kv_len = c->kv_lens ? c->kv_lens[n] : len;
    hd->causal = c->causal;
    hd->scale = c->scale;
    hd->K = c->K;
    hd->V = c->V;
    hd->block = c->block < len ? c->block : len;
    hd->qk_stride = (int64_t)(H * K);
    hd->v_stride = (int64_t)(H * V);
    hd->lse_stride = (int64_t)H;
    hd->q = c->q + row * K;
    hd->k = c->k + row * K;
    hd->v = c->v + row * V;
    hd->d_o = c->d_o ? c->d_o + row * V : NULL;
    hd->o = c->o ? c->o + row * V : NULL;
    hd->lse = c->lse ? c->lse + row : NULL;
    hd->dq = c->dq ? c->dq + row * K : NULL;
    hd->dk = c->dk ? c->dk + row * K : NULL;
    hd->dv = c->dv ? c->dv + row * V : NULL;
    hd->kr = c->kr;
}

static void textbook_forward_task(void *arg, int64_t task, int tid) {
    const sa_call *c = arg;
    sa_head hd;
    head_init(c, task / c->H, task % c->H, &hd);
    sa_textbook_forward(&hd, la__scratch(c->ctx, tid));
}

static void streaming_forward_task(void *arg, int64_t task, int tid) {
    const sa_call *c = arg;
    const int64_t qb = task % c->n_qblocks, nh = task / c->n_qblocks;
    sa_head hd;
    head_init(c, nh / c->H, nh % c->H, &hd);
    const int64_t r0 = qb * c->block;
    if (r0 >= hd.len) return; /* a shorter packed sequence */
    const int64_t n = hd.len - r0 < hd.block ? hd.len - r0 : hd.block;
    sa_streaming_forward_rows(&hd, r0, n, la__scratch(c->ctx, tid));
}

static void backward_task(void *arg, int64_t task, int tid) {
    const sa_call *c = arg;
    sa_head hd;
    head_init(c, task / c->H, task % c->H, &hd);
    if (c->form == LA_SOFTMAX_TEXTBOOK)
        sa_textbook_backward(&hd, la__scratch(c->ctx, tid));
    else
        sa_streaming_backward(&hd, la__scratch(c->ctx, tid));
}

/* q, k, v are given (checked in this order, after the outputs). */
static la_status check_qkv_ptrs(const char *op, const float *q, const float *k, const float *v) {
    la_status st;
    if ((st = la__check_ptr(op, "q", q)) || (st = la__check_ptr(op, "k", k)) ||
        (st = la__check_ptr(op, "v", v)))
        return st;
    return LA_OK;
}

/* q, k, v are finite (checked in this order, after d_o in the backward). */
static la_status check_qkv_finite(const char *op, const la_dims *dims, const float *q,
                                  const float *k, const float *v) {
    const size_t nqk = (size_t)(dims->B * dims->T * dims->H * dims->K);
    const size_t nv = (size_t)(dims->B * dims->T * dims->H * dims->V);
    la_status st;
    if ((st = la__check_finite(op, "q", q, nqk)) || (st = la__check_finite(op, "k", k, nqk)) ||
        (st = la__check_finite(op, "v", v, nv)))
        return st;
    return LA_OK;
}

la_status la_softmax_attn_forward(la_ctx *ctx, const la_softmax_opts *opts, const la_dims *dims,
                                  float *o, float *lse, const float *q, const float *k,
                                  const float *v) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported("la_softmax_attn_forward");
    const char *op = "la_softmax_attn_forward";
    sa_call c = {0};
    la_status st;
    if ((st = check_call(op, ctx, opts, dims, &c))) return st;
    if ((st = la__check_ptr(op, "o", o))) return st;
    if ((st = check_qkv_ptrs(op, q, k, v))) return st;
    /* Scratch before reading any data: a size that cannot be served fails
     * without touching the tensors. */
    if ((st = reserve_scratch(op, &c, 0))) return st;
    if ((st = check_qkv_finite(op, dims, q, k, v))) return st;
    c.q = q;
    c.k = k;
    c.v = v;
    c.o = o;
    c.lse = lse;
    const int64_t heads = la__num_seqs(dims) * dims->H;
    if (c.form == LA_SOFTMAX_TEXTBOOK)
        la__parallel_for(ctx, heads, textbook_forward_task, &c);
    else
        la__parallel_for(ctx, heads * c.n_qblocks, streaming_forward_task, &c);
    return LA_OK;
}

la_status la_softmax_attn_backward(la_ctx *ctx, const la_softmax_opts *opts,
                                   const la_dims *dims, float *dq, float *dk, float *dv,
                                   const float *d_o, const float *q, const float *k,
                                   const float *v) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported("la_softmax_attn_backward");
    const char *op = "la_softmax_attn_backward";
    sa_call c = {0};
    la_status st;
    if ((st = check_call(op, ctx, opts, dims, &c))) return st;
    if ((st = la__check_ptr(op, "dq", dq))) return st;
    if ((st = la__check_ptr(op, "dk", dk))) return st;
    if ((st = la__check_ptr(op, "dv", dv))) return st;
    if ((st = la__check_ptr(op, "d_o", d_o))) return st;
    if ((st = check_qkv_ptrs(op, q, k, v))) return st;
    if ((st = reserve_scratch(op, &c, 1))) return st;
    const size_t nv = (size_t)(dims->B * dims->T * dims->H * dims->V);
    if ((st = la__check_finite(op, "d_o", d_o, nv))) return st;
    if ((st = check_qkv_finite(op, dims, q, k, v))) return st;
    c.q = q;
    c.k = k;
    c.v = v;
    c.d_o = d_o;
    c.dq = dq;
    c.dk = dk;
    c.dv = dv;
    la__parallel_for(ctx, la__num_seqs(dims) * dims->H, backward_task, &c);
    return LA_OK;
}
