/* Registry entries of simple GLA (RetNet decay) and GLA, and their decoding
 * steps. */
#include "../registry.h"
#include "gla.h"

/* linear recurrent + the decay of the state (KV multiplies) per token */
static double flops_recurrent(double T, double K, double V, double C, int backward) {
    (void)C;
    return 5 * T * K * V * (backward ? 3 : 1);
}
/* as linear chunk (gate factors are O(C K) per chunk) */
static double flops_chunk(double T, double K, double V, double C, int backward) {
    return T * ((C + 1) * (K + V) + 4 * K * V) * (backward ? 3 : 1);
}

static la_gated_opts opts_of(const la__op_args *a, la_form form) {
    la_gated_opts o = la_gated_opts_default();
    o.form = form;
    o.scale = a->scale;
    o.chunk_size = form == LA_FORM_CHUNK ? a->chunk_size : 0;
    o.saved = form == LA_FORM_CHUNK ? a->saved : NULL;
    return o;
}

static la_status sgla(la_ctx *ctx, const la__op_args *a, la_form form, int bwd) {
    la_gated_opts o = opts_of(a, form);
    if (!bwd)
        return la_simple_gla_forward(ctx, &o, &a->dims, a->o, a->final_state, a->q, a->k, a->v,
                                     a->g, a->g_gamma, a->initial_state);
    return la_simple_gla_backward(ctx, &o, &a->dims, a->dq, a->dk, a->dv, a->dg, a->dg_gamma,
                                  a->d_initial_state, a->d_o, a->d_final_state, a->q, a->k, a->v,
                                  a->g, a->g_gamma, a->initial_state);
}

static la_status gla(la_ctx *ctx, const la__op_args *a, la_form form, int bwd) {
    la_gated_opts o = opts_of(a, form);
    if (!bwd)
        return la_gla_forward(ctx, &o, &a->dims, a->o, a->final_state, a->q, a->k, a->v, a->g,
                              a->initial_state);
    return la_gla_backward(ctx, &o, &a->dims, a->dq, a->dk, a->dv, a->dg, a->d_initial_state,
                           a->d_o, a->d_final_state, a->q, a->k, a->v, a->g, a->initial_state);
}

static la_status sgla_fr(la_ctx *c, const la__op_args *a) {
    return sgla(c, a, LA_FORM_RECURRENT, 0);
}
static la_status sgla_br(la_ctx *c, const la__op_args *a) {
    return sgla(c, a, LA_FORM_RECURRENT, 1);
}
static la_status sgla_fc(la_ctx *c, const la__op_args *a) { return sgla(c, a, LA_FORM_CHUNK, 0); }
static la_status sgla_bc(la_ctx *c, const la__op_args *a) { return sgla(c, a, LA_FORM_CHUNK, 1); }
static la_status gla_fr(la_ctx *c, const la__op_args *a) { return gla(c, a, LA_FORM_RECURRENT, 0); }
static la_status gla_br(la_ctx *c, const la__op_args *a) { return gla(c, a, LA_FORM_RECURRENT, 1); }
static la_status gla_fc(la_ctx *c, const la__op_args *a) { return gla(c, a, LA_FORM_CHUNK, 0); }
static la_status gla_bc(la_ctx *c, const la__op_args *a) { return gla(c, a, LA_FORM_CHUNK, 1); }

#define SGLA_NEEDS (LA__NEED_G_OPT | LA__NEED_G_GAMMA | LA__HAS_STATE | LA__CAUSAL)
#define GLA_NEEDS (LA__NEED_GK | LA__HAS_STATE | LA__CAUSAL)

const la__op_entry la__entry_simple_gla_recurrent = {LA__OP_SIMPLE_GLA_RECURRENT,
                                                     "simple_gla-recurrent",
                                                     "simple_gla",
                                                     LA_FORM_RECURRENT,
                                                     SGLA_NEEDS,
                                                     LA_OP_SIMPLE_GLA,
                                                     flops_recurrent,
                                                     sgla_fr,
                                                     sgla_br};
const la__op_entry la__entry_simple_gla_chunk = {
    LA__OP_SIMPLE_GLA_CHUNK, "simple_gla-chunk", "simple_gla", LA_FORM_CHUNK, SGLA_NEEDS | LA__SAVES,
    LA_OP_SIMPLE_GLA,        flops_chunk,        sgla_fc,      sgla_bc};
const la__op_entry la__entry_gla_recurrent = {LA__OP_GLA_RECURRENT, "gla-recurrent", "gla",
                                              LA_FORM_RECURRENT,    GLA_NEEDS,       LA_OP_GLA,
                                              flops_recurrent,      gla_fr,          gla_br};
const la__op_entry la__entry_gla_chunk = {LA__OP_GLA_CHUNK, "gla-chunk", "gla",
                                          LA_FORM_CHUNK,    GLA_NEEDS | LA__SAVES, LA_OP_GLA,
                                          flops_chunk,      gla_fc,      gla_bc};

/* ---- decoding: the recurrent form's own per-token update --------------- */

static void step_sgla(const la__step_io *io) {
    const la_decoder_config *c = io->cfg;
    gla_token(0, c->K, c->V, c->scale, io->S, io->o, io->q, io->k, io->v, io->g, io->g_gamma,
              io->work);
}
static void step_gla(const la__step_io *io) {
    const la_decoder_config *c = io->cfg;
    gla_token(1, c->K, c->V, c->scale, io->S, io->o, io->q, io->k, io->v, io->g, 0.0f, io->work);
}

const la__decode_entry la__decode_simple_gla = {
    LA_OP_SIMPLE_GLA, "simple_gla", LA__NEED_G_OPT | LA__NEED_G_GAMMA, 5.0, NULL, step_sgla};
const la__decode_entry la__decode_gla = {LA_OP_GLA, "gla", LA__NEED_GK, 5.0, NULL, step_gla};
