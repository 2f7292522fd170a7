/* Public entry points of Kimi Delta Attention (KDA): validate every
 * argument, size the scratch, then run the form (driver.c).
 *
 * Policies (see also include/linattn.h), the same as Gated DeltaNet's:
 * - Forms (the shared options rule, la__gated_form): LA_FORM_RECURRENT (token
 *   by token, the decoder's arithmetic) and LA_FORM_CHUNK (WY representation
 *   with per-key gates, chunk_size 0 -> LA_DEFAULT_CHUNK_SIZE); form 0 (a
 *   zeroed struct) means the chunk form; chunk_size is ignored by the
 *   recurrent form.
 * - g [B,T,HV,K]: finite log-gates <= 0 (-1e4 is a full reset of a key).
 * - beta in [0, 2]; the formula is not clamped (see la_delta_rule_forward).
 * - use_qk_l2norm: q and k are replaced by x / sqrt(sum x^2 + 1e-6) per token
 *   and head before anything else; the backward goes through it.
 * - la_saved (opts->saved, cpu-kdasaved19): as the delta rules'. The chunk
 *   forward on a CPU context fills it (driver.c: chunk start states and
 *   products); the recurrent forward leaves it empty; a failed forward
 *   leaves it empty. The backward given a filled object checks its key (a
 *   mismatch is LA_ERR_INVALID_ARGUMENT naming it), reads it (same bits)
 *   and scans only d_o and d_final_state. A CUDA context ignores the
 *   field (KDA has no CUDA kernels; it neither fills, reads nor checks it). */
#include "kda.h"

#include "../options.h"

#include <inttypes.h>
#include <string.h>

typedef struct {
    const la_gated_opts *opts;
    const la_dims *dims;
    const float *q, *k, *v, *g, *beta, *initial_state;
    const float *d_o, *d_final_state; /* backward only */
    int backward;
} kda_call;

/* The object a CPU call uses (NULL on a CUDA context, which ignores it). */
static la_saved *call_saved(la_ctx *ctx, const la_gated_opts *o) {
    return la_ctx_is_cuda(ctx) ? NULL : o->saved;
}

static la_status validate(const char *op, la_ctx *ctx, const kda_call *c, la__kda_args *a) {
    la_status st;
    if ((st = la__check_ptr(op, "ctx", ctx)) || (st = la__check_ptr(op, "opts", c->opts)))
        return st;
    la_saved *sv = call_saved(ctx, c->opts);
    if ((st = la__saved_check(op, ctx, sv))) return st;
    /* a forward empties the object first (internal.h, la__saved_clear) */
    if (!c->backward) la__saved_clear(sv);
    if ((st = la__check_ptr(op, "dims", c->dims))) return st;
    if ((st = la__check_dims(op, c->dims, 1))) return st;
    const la_gated_opts *o = c->opts;
    la_form form;
    int64_t want;
    if ((st = la__gated_form(op, o, &form, &want))) return st;
    const la_dims *d = c->dims;
    a->ctx = ctx;
    a->dims = *d;
    a->N = la__num_seqs(d);
    a->H = d->H;
    a->HV = la__value_heads(d);
    a->K = d->K;
    a->V = d->V;
    a->form = form;
    a->longest = la__max_seq_len(d);
    if (!want) want = LA_DEFAULT_CHUNK_SIZE; /* recurrent form: unused */
    a->chunk = want < a->longest ? want : (a->longest > 0 ? a->longest : 1);
    a->l2norm = o->use_qk_l2norm != 0;
    if ((st = la__resolve_scale(op, o->scale, d->K, &a->scale))) return st;

    if ((st = la__check_ptr(op, "q", c->q)) || (st = la__check_ptr(op, "k", c->k)) ||
        (st = la__check_ptr(op, "v", c->v)) || (st = la__check_ptr(op, "g", c->g)) ||
        (st = la__check_ptr(op, "beta", c->beta)))
        return st;
    if (c->backward && (st = la__check_ptr(op, "d_o", c->d_o))) return st;
    a->q = c->q;
    a->k = c->k;
    a->v = c->v;
    a->g = c->g;
    a->beta = c->beta;
    a->initial_state = c->initial_state;
    a->d_o = c->d_o;
    a->d_final_state = c->d_final_state;
    a->kr = la__kernels_default();
    return LA_OK;
}

/* The call a la_saved records (la__saved_match compares every field). */
static la__saved_key saved_key(const la__kda_args *a) {
    return la__saved_delta_key("kda", a->form, a->chunk, a->scale, a->l2norm, &a->dims, a->q,
                               a->k, a->v, a->g, a->beta, a->initial_state);
}

/* The values: finite q, k, v (and initial_state), log-gates <= 0, beta in
 * [0, 2]; in the backward also finite d_o, d_final_state. inputs == 0 (a
 * backward given a filled, matching la_saved): the forward that filled it
 * checked these same tensors, which the caller keeps unchanged between the
 * two calls (include/linattn.h), so only d_o, d_final_state are scanned. */
static la_status check_values(const char *op, const kda_call *c, const la__kda_args *a,
                              int inputs) {
    la_status st;
    const la_dims *d = c->dims;
    const size_t BT = (size_t)d->B * (size_t)d->T;
    const size_t nqk = BT * (size_t)a->H * (size_t)a->K, nv = BT * (size_t)a->HV * (size_t)a->V;
    const size_t nb = BT * (size_t)a->HV;
    const size_t nstate = (size_t)a->N * (size_t)a->HV * (size_t)a->K * (size_t)a->V;
    if (nb > SIZE_MAX / sizeof(float) / (size_t)a->K)
        return la__error(LA_ERR_INVALID_SIZE, "%s: g [B,T,HV,K] has too many elements", op);
    if (inputs) {
        if ((st = la__check_finite(op, "q", c->q, nqk)) ||
            (st = la__check_finite(op, "k", c->k, nqk)) ||
            (st = la__check_finite(op, "v", c->v, nv)))
            return st;
        if ((st = la__check_log_gate(op, "g", c->g, nb * (size_t)a->K))) return st;
        if ((st = la__check_beta(op, "beta", c->beta, nb))) return st;
        if (c->initial_state &&
            (st = la__check_finite(op, "initial_state", c->initial_state, nstate)))
            return st;
    }
    if (c->backward) {
        if ((st = la__check_finite(op, "d_o", c->d_o, nv))) return st;
        if (c->d_final_state &&
            (st = la__check_finite(op, "d_final_state", c->d_final_state, nstate)))
            return st;
    }
    return LA_OK;
}

la_status la_kda_forward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims, float *o,
                         float *final_state, const float *q, const float *k, const float *v,
                         const float *g, const float *beta, const float *initial_state) {
    static const char *const op = "la_kda_forward";
    kda_call c = {opts, dims, q, k, v, g, beta, initial_state, NULL, NULL, 0};
    la__kda_args a = {0};
    la_status st = validate(op, ctx, &c, &a);
    if (st || (st = check_values(op, &c, &a, 1)) || (st = la__check_ptr(op, "o", o))) return st;
    a.o = o;
    a.final_state = final_state;
    if ((st = la__scratch_reserve(ctx, la__kda_forward_scratch(&a)))) return st;
    la_saved *sv = call_saved(ctx, opts);
    if (sv && a.form == LA_FORM_CHUNK) { /* the recurrent form saves nothing */
        int64_t *cbase;
        const size_t bytes = la__kda_saved_layout(&a, NULL, &cbase, &a.save);
        if (!bytes)
            return la__error(LA_ERR_OUT_OF_MEMORY, "%s: opts->saved: the saved size overflows",
                             op);
        const la__saved_key key = saved_key(&a);
        void *data;
        if ((st = la__saved_prepare(op, sv, &key, bytes, &data))) return st;
        la__kda_saved_layout(&a, data, &cbase, &a.save);
        la__saved_chunk_bases(&a.dims, a.N, a.chunk, cbase);
        a.sv_cbase = cbase;
    }
    la__kda_forward(&a);
    if (a.save) la__saved_commit(sv);
    return LA_OK;
}

la_status la_kda_backward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims, float *dq,
                          float *dk, float *dv, float *dg, float *dbeta, float *d_initial_state,
                          const float *d_o, const float *d_final_state, const float *q,
                          const float *k, const float *v, const float *g, const float *beta,
                          const float *initial_state) {
    static const char *const op = "la_kda_backward";
    kda_call c = {opts, dims, q, k, v, g, beta, initial_state, d_o, d_final_state, 1};
    la__kda_args a = {0};
    la_status st = validate(op, ctx, &c, &a);
    if (st) return st;
    if ((st = la__check_ptr(op, "dq", dq)) || (st = la__check_ptr(op, "dk", dk)) ||
        (st = la__check_ptr(op, "dv", dv)) || (st = la__check_ptr(op, "dg", dg)) ||
        (st = la__check_ptr(op, "dbeta", dbeta)))
        return st;
    a.dq = dq;
    a.dk = dk;
    a.dv = dv;
    a.dg = dg;
    a.dbeta = dbeta;
    a.d_initial_state = d_initial_state;
    const la__saved_key key = saved_key(&a);
    const void *data = NULL;
    if ((st = la__saved_match(op, call_saved(ctx, opts), &key, &data))) return st;
    if (data) { /* a filled object of this call's forward (chunk form only) */
        int64_t *cbase;
        float *slots;
        la__kda_saved_layout(&a, data, &cbase, &slots);
        a.saved = slots;
        a.sv_cbase = cbase;
    }
    if ((st = check_values(op, &c, &a, a.saved == NULL))) return st;
    if ((st = la__scratch_reserve(ctx, la__kda_backward_scratch(&a)))) return st;
    la__kda_backward(&a);
    return LA_OK;
}
