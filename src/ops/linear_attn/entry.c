/* Registry entries of kernel linear attention (three causal forms and the
 * non-causal kernel trick) and its decoding step. */
#include "../registry.h"
#include "linear_attn.h"

static double flops_parallel(double T, double K, double V, double C, int backward) {
    (void)C;
    return T * (T + 1) * (backward ? 4 * K + 3 * V : K + V);
}
/* recurrent and non-causal: S += k^T v (2KV), o = q S (2KV) per token */
static double flops_recurrent(double T, double K, double V, double C, int backward) {
    (void)C;
    return 4 * T * K * V * (backward ? 3 : 1);
}
static double flops_chunk(double T, double K, double V, double C, int backward) {
    return T * ((C + 1) * (K + V) + 4 * K * V) * (backward ? 3 : 1);
}

static la_linear_attn_opts opts_of(const la__op_args *a, int causal, la_form form) {
    la_linear_attn_opts o = la_linear_attn_opts_default();
    o.feature_map = a->feature_map;
    o.causal = causal;
    o.form = form;
    o.normalize = a->normalize;
    o.eps = a->eps ? a->eps : LA_LINEAR_ATTN_DEFAULT_EPS;
    o.scale = a->scale;
    o.chunk_size = form == LA_FORM_CHUNK ? a->chunk_size : 0;
    o.saved = causal && form == LA_FORM_CHUNK ? a->saved : NULL;
    return o;
}

static la_status run(la_ctx *ctx, const la__op_args *a, int causal, la_form form, int bwd) {
    la_linear_attn_opts o = opts_of(a, causal, form);
    if (!bwd)
        return la_linear_attn_forward(ctx, &o, &a->dims, a->o, a->final_state, a->final_norm, a->q,
                                      a->k, a->v, a->initial_state, a->initial_norm);
    return la_linear_attn_backward(ctx, &o, &a->dims, a->dq, a->dk, a->dv, a->d_initial_state,
                                   a->d_initial_norm, a->d_o, a->d_final_state, a->d_final_norm,
                                   a->q, a->k, a->v, a->initial_state, a->initial_norm);
}

static la_status fwd_par(la_ctx *c, const la__op_args *a) {
    return run(c, a, 1, LA_FORM_PARALLEL, 0);
}
static la_status bwd_par(la_ctx *c, const la__op_args *a) {
    return run(c, a, 1, LA_FORM_PARALLEL, 1);
}
static la_status fwd_rec(la_ctx *c, const la__op_args *a) {
    return run(c, a, 1, LA_FORM_RECURRENT, 0);
}
static la_status bwd_rec(la_ctx *c, const la__op_args *a) {
    return run(c, a, 1, LA_FORM_RECURRENT, 1);
}
static la_status fwd_chk(la_ctx *c, const la__op_args *a) { return run(c, a, 1, LA_FORM_CHUNK, 0); }
static la_status bwd_chk(la_ctx *c, const la__op_args *a) { return run(c, a, 1, LA_FORM_CHUNK, 1); }
static la_status fwd_nc(la_ctx *c, const la__op_args *a) {
    return run(c, a, 0, LA_FORM_PARALLEL, 0);
}
static la_status bwd_nc(la_ctx *c, const la__op_args *a) {
    return run(c, a, 0, LA_FORM_PARALLEL, 1);
}

#define LIN_NEEDS (LA__NEED_FEATURE_MAP | LA__NEED_NORMALIZER | LA__HAS_STATE)

const la__op_entry la__entry_linear_attn_parallel = {LA__OP_LINEAR_ATTN_PARALLEL,
                                                     "linear_attn-parallel",
                                                     "linear_attn",
                                                     LA_FORM_PARALLEL,
                                                     LIN_NEEDS | LA__CAUSAL | LA__QUADRATIC,
                                                     LA_OP_LINEAR_ATTN,
                                                     flops_parallel,
                                                     fwd_par,
                                                     bwd_par};
const la__op_entry la__entry_linear_attn_recurrent = {LA__OP_LINEAR_ATTN_RECURRENT,
                                                      "linear_attn-recurrent",
                                                      "linear_attn",
                                                      LA_FORM_RECURRENT,
                                                      LIN_NEEDS | LA__CAUSAL,
                                                      LA_OP_LINEAR_ATTN,
                                                      flops_recurrent,
                                                      fwd_rec,
                                                      bwd_rec};
const la__op_entry la__entry_linear_attn_chunk = {LA__OP_LINEAR_ATTN_CHUNK,
                                                  "linear_attn-chunk",
                                                  "linear_attn",
                                                  LA_FORM_CHUNK,
                                                  LIN_NEEDS | LA__CAUSAL | LA__SAVES,
                                                  LA_OP_LINEAR_ATTN,
                                                  flops_chunk,
                                                  fwd_chk,
                                                  bwd_chk};
const la__op_entry la__entry_linear_attn_noncausal = {LA__OP_LINEAR_ATTN_NONCAUSAL,
                                                      "linear_attn-noncausal",
                                                      "linear_attn",
                                                      -1,
                                                      LIN_NEEDS,
                                                      -1,
                                                      flops_recurrent,
                                                      fwd_nc,
                                                      bwd_nc};

/* ---- decoding ------------------------------------------------------------ */

static la_status configure(const char *fn, la_decoder_config *c) {
    if ((unsigned)c->feature_map > LA_FEATURE_RELU)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: cfg.feature_map = %d is not a known la_feature_map", fn,
                         (int)c->feature_map);
    /* options rule: eps is read only when normalised, scale only when not */
    if (c->eps == 0 || !c->normalize) c->eps = LA_LINEAR_ATTN_DEFAULT_EPS;
    if (c->normalize) c->scale = 0;
    if (!(c->eps > 0) || c->eps != c->eps || c->eps > 1e30f)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: cfg.eps = %g (must be > 0 and finite)", fn,
                         (double)c->eps);
    return LA_OK;
}

static void step(const la__step_io *io) {
    la__linear_attn_step(io->cfg, io->cfg->scale, io->S, io->z, io->o, io->q, io->k, io->v,
                         io->work);
}

const la__decode_entry la__decode_linear_attn = {
    LA_OP_LINEAR_ATTN, "linear_attn", LA__NEED_FEATURE_MAP | LA__NEED_NORMALIZER, 4.0,
    configure,         step};
