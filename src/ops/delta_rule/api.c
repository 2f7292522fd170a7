/* Public entry points of DeltaNet and Gated DeltaNet: validate every
 * argument, size the scratch, then run the form (driver.c).
 *
 * Policies (see also include/linattn.h):
 * - Forms: LA_FORM_RECURRENT (token by token, the decoder's arithmetic) and
 *   LA_FORM_CHUNK (WY representation, chunk_size 0 -> 64). LA_FORM_PARALLEL
 *   is LA_ERR_INVALID_ARGUMENT: the delta rule has no masked quadratic form
 *   (its T x T form is the chunk form with one chunk: chunk_size >= T).
 * - beta must lie in [0, 2] (la__check_beta). With L2-normalised keys
 *   (use_qk_l2norm) each step I - beta k^T k has eigenvalues 1 and
 *   1 - beta|k|^2 in [-1, 1], so the state stays bounded. With raw keys and
 *   beta |k|^2 > 2 the recurrence expands (|1 - beta|k|^2| > 1): the op
 *   computes the formula as given, without clamping; outputs then grow
 *   geometrically and can overflow to Inf for long sequences.
 * - use_qk_l2norm: q and k are replaced by x / sqrt(sum x^2 + 1e-6) per token
 *   and head before anything else (fla's use_qk_l2norm_in_kernel); the
 *   backward goes through it. */
#include "../options.h"
#include "delta_rule.h"
#include "../../cuda/cuda_backend.h"

#include <inttypes.h>
#include <string.h>

typedef struct {
    const la_gated_opts *opts;
    const la_dims *dims;
    int gated;
    const float *q, *k, *v, *g, *beta, *initial_state;
    const float *d_o, *d_final_state; /* backward only */
    int backward;
} delta_call;

static la_status validate(const char *op, la_ctx *ctx, const delta_call *c, la__delta_args *a) {
    la_status st;
    if ((st = la__check_ptr(op, "ctx", ctx)) || (st = la__check_ptr(op, "opts", c->opts)))
        return st;
    if ((st = la__check_dims(op, c->dims, c->gated))) return st;
    const la_gated_opts *o = c->opts;
    if ((st = la__saved_check(op, ctx, o->saved))) return st;
    /* a forward empties the object first (internal.h, la__saved_clear) */
    if (!c->backward) la__saved_clear(o->saved);
    la_form form;
    int64_t chunk;
    if ((st = la__gated_form(op, o, &form, &chunk))) return st;
    const la_dims *d = c->dims;
    a->ctx = ctx;
    a->dims = *d;
    a->N = la__num_seqs(d);
    a->H = d->H;
    a->HV = la__value_heads(d);
    a->K = d->K;
    a->V = d->V;
    a->form = form;
    a->chunk = chunk ? chunk : LA_DEFAULT_CHUNK_SIZE; /* recurrent form: unused */
    a->l2norm = o->use_qk_l2norm != 0; /* as the decoder: any non-zero */
    if ((st = la__resolve_scale(op, o->scale, d->K, &a->scale))) return st;

    if ((st = la__check_ptr(op, "q", c->q)) || (st = la__check_ptr(op, "k", c->k)) ||
        (st = la__check_ptr(op, "v", c->v)) || (st = la__check_ptr(op, "beta", c->beta)))
        return st;
    if (c->gated && (st = la__check_ptr(op, "g", c->g))) return st;
    if (c->backward && (st = la__check_ptr(op, "d_o", c->d_o))) return st;

    a->q = c->q;
    a->k = c->k;
    a->v = c->v;
    a->g = c->gated ? c->g : NULL;
    a->beta = c->beta;
    a->initial_state = c->initial_state;
    a->d_o = c->d_o;
    a->d_final_state = c->d_final_state;
    return LA_OK;
}

/* The values: finite q, k, v (and initial_state), log-gates <= 0, beta in
 * [0, 2]; in the backward also finite d_o, d_final_state. inputs == 0 (a
 * backward given a filled, matching la_saved): the forward that filled it
 * checked these same tensors, which the caller keeps unchanged between the
 * two calls (include/linattn.h), so only d_o, d_final_state are scanned:
 * q, k, v are 3 x 32 MiB at the issue-12 shape, ~1.5% of a fwd+bwd. */
static la_status check_values(const char *op, const delta_call *c, const la__delta_args *a,
                              int inputs) {
    la_status st;
    const la_dims *d = c->dims;
    const size_t BT = (size_t)d->B * (size_t)d->T;
    const size_t nqk = BT * (size_t)a->H * (size_t)a->K, nv = BT * (size_t)a->HV * (size_t)a->V;
    const size_t ngate = BT * (size_t)a->HV;
    const size_t nstate = (size_t)a->N * (size_t)a->HV * (size_t)a->K * (size_t)a->V;
    if (inputs) {
        if ((st = la__check_finite(op, "q", c->q, nqk)) ||
            (st = la__check_finite(op, "k", c->k, nqk)) ||
            (st = la__check_finite(op, "v", c->v, nv)))
            return st;
        if (c->gated && (st = la__check_log_gate(op, "g", c->g, ngate))) return st;
        if ((st = la__check_beta(op, "beta", c->beta, ngate))) return st;
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

/* The call a la_saved records (see la__saved_match). */
static la__saved_key saved_key(const delta_call *c, const la__delta_args *a) {
    return la__saved_delta_key(c->gated ? "gated_delta_rule" : "delta_rule", a->form,
                               a->form == LA_FORM_CHUNK ? la__delta_chunk_len(a) : 0, a->scale,
                               a->l2norm, &a->dims, a->q, a->k, a->v, a->g, a->beta,
                               a->initial_state);
}

static la_status forward(const char *op, la_ctx *ctx, const delta_call *c, float *o,
                         float *final_state) {
    la__delta_args a = {0};
    la_status st = validate(op, ctx, c, &a);
    if (st || (st = check_values(op, c, &a, 1))) return st;
    a.kr = la__kernels_default();
    if ((st = la__check_ptr(op, "o", o))) return st;
    a.o = o;
    a.final_state = final_state;
    if ((st = la__scratch_reserve(ctx, la__delta_forward_scratch(&a)))) return st;
    la_saved *sv = c->opts->saved;
    if (sv && a.form == LA_FORM_CHUNK) {
        const size_t bytes = la__delta_saved_bytes(&a);
        const la__saved_key key = saved_key(c, &a);
        if (!bytes)
            return la__error(LA_ERR_OUT_OF_MEMORY, "%s: opts->saved: the saved size overflows",
                             op);
        if ((st = la__saved_prepare(op, sv, &key, bytes, &a.save))) return st;
    }
    la__delta_forward(&a);
    if (sv && a.save) la__saved_commit(sv); /* the recurrent form saves nothing */
    return LA_OK;
}

static la_status backward(const char *op, la_ctx *ctx, const delta_call *c, float *dq, float *dk,
                          float *dv, float *dg, float *dbeta, float *d_initial_state) {
    la__delta_args a = {0};
    la_status st = validate(op, ctx, c, &a);
    if (st) return st;
    a.kr = la__kernels_default();
    if ((st = la__check_ptr(op, "dq", dq)) || (st = la__check_ptr(op, "dk", dk)) ||
        (st = la__check_ptr(op, "dv", dv)) || (st = la__check_ptr(op, "dbeta", dbeta)))
        return st;
    if (c->gated && (st = la__check_ptr(op, "dg", dg))) return st;
    a.dq = dq;
    a.dk = dk;
    a.dv = dv;
    a.dg = c->gated ? dg : NULL;
    a.dbeta = dbeta;
    a.d_initial_state = d_initial_state;
    const la__saved_key key = saved_key(c, &a);
    if ((st = la__saved_match(op, c->opts->saved, &key, &a.saved))) return st;
    if ((st = check_values(op, c, &a, a.saved == NULL))) return st;
    if ((st = la__scratch_reserve(ctx, la__delta_backward_scratch(&a)))) return st;
    la__delta_backward(&a);
    return LA_OK;
}

la_status la_delta_rule_forward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                float *o, float *final_state, const float *q, const float *k,
                                const float *v, const float *beta, const float *initial_state) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_delta_forward(ctx, 0, opts, dims, o, final_state, q, k, v, NULL, beta, initial_state);
    delta_call c = {opts, dims, 0, q, k, v, NULL, beta, initial_state, NULL, NULL, 0};
    return forward("la_delta_rule_forward", ctx, &c, o, final_state);
}

la_status la_delta_rule_backward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                 float *dq, float *dk, float *dv, float *dbeta,
                                 float *d_initial_state, const float *d_o,
                                 const float *d_final_state, const float *q, const float *k,
                                 const float *v, const float *beta,
                                 const float *initial_state) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_delta_backward(ctx, 0, opts, dims, dq, dk, dv, NULL, dbeta, d_initial_state, d_o, d_final_state, q, k, v, NULL, beta, initial_state);
    delta_call c = {opts, dims, 0, q, k, v, NULL, beta, initial_state, d_o, d_final_state, 1};
    return backward("la_delta_rule_backward", ctx, &c, dq, dk, dv, NULL, dbeta,
                    d_initial_state);
}

la_status la_gated_delta_rule_forward(la_ctx *ctx, const la_gated_opts *opts,
                                      const la_dims *dims, float *o, float *final_state,
                                      const float *q, const float *k, const float *v,
                                      const float *g, const float *beta,
                                      const float *initial_state) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_delta_forward(ctx, 1, opts, dims, o, final_state, q, k, v, g, beta, initial_state);
    delta_call c = {opts, dims, 1, q, k, v, g, beta, initial_state, NULL, NULL, 0};
    return forward("la_gated_delta_rule_forward", ctx, &c, o, final_state);
}

la_status la_gated_delta_rule_backward(la_ctx *ctx, const la_gated_opts *opts,
                                       const la_dims *dims, float *dq, float *dk, float *dv,
                                       float *dg, float *dbeta, float *d_initial_state,
                                       const float *d_o, const float *d_final_state,
                                       const float *q, const float *k, const float *v,
                                       const float *g, const float *beta,
                                       const float *initial_state) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_delta_backward(ctx, 1, opts, dims, dq, dk, dv, dg, dbeta, d_initial_state, d_o, d_final_state, q, k, v, g, beta, initial_state);
    delta_call c = {opts, dims, 1, q, k, v, g, beta, initial_state, d_o, d_final_state, 1};
    return backward("la_gated_delta_rule_backward", ctx, &c, dq, dk, dv, dg, dbeta,
                    d_initial_state);
}
