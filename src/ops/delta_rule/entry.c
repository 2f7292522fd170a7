/* Registry entries of DeltaNet and Gated DeltaNet, and their decoding steps. */
#include "../registry.h"
#include "delta_rule.h"

/* DeltaNet recurrent: kS (2KV), rank-1 update (2KV), o = qS (2KV) per token */
static double flops_delta_rec(double T, double K, double V, double C, int backward) {
    (void)C;
    return 6 * T * K * V * (backward ? 3 : 1);
}
/* Gated DeltaNet: DeltaNet + the decay of the state (KV) */
static double flops_gdelta_rec(double T, double K, double V, double C, int backward) {
    (void)C;
    return 7 * T * K * V * (backward ? 3 : 1);
}
/* chunk (WY): per chunk KK^T (C^2 K), triangular inverse (C^3/3), W, U
 * (C^2 (K+V)), U - W S (2CKV), QK^T (C^2 K), intra (C^2 V), Q S (2CKV),
 * S += K^T U' (2CKV); per token divide by C. The count of round 1's
 * two-solve step, kept fixed so % of peak stays comparable across
 * sessions: since cpu-dfwd24 the forward without la_saved solves once
 * (R = A (beta V - beta b K S_0)), C^2 K fewer per chunk (~5.8% of the
 * forward's count at C = 64, K = V = 128). */
static double flops_chunk(double T, double K, double V, double C, int backward) {
    return T * (C * (3 * K + 2 * V) + C * C / 3 + 6 * K * V) * (backward ? 3 : 1);
}

static la_gated_opts opts_of(const la__op_args *a, la_form form) {
    la_gated_opts o = la_gated_opts_default();
    o.form = form;
    o.scale = a->scale;
    o.chunk_size = form == LA_FORM_CHUNK ? a->chunk_size : 0;
    o.use_qk_l2norm = a->use_qk_l2norm;
    o.saved = form == LA_FORM_CHUNK ? a->saved : NULL;
    return o;
}

static la_status delta(la_ctx *ctx, const la__op_args *a, la_form form, int bwd) {
    la_gated_opts o = opts_of(a, form);
    if (!bwd)
        return la_delta_rule_forward(ctx, &o, &a->dims, a->o, a->final_state, a->q, a->k, a->v,
                                     a->beta, a->initial_state);
    return la_delta_rule_backward(ctx, &o, &a->dims, a->dq, a->dk, a->dv, a->dbeta,
                                  a->d_initial_state, a->d_o, a->d_final_state, a->q, a->k, a->v,
                                  a->beta, a->initial_state);
}

static la_status gdelta(la_ctx *ctx, const la__op_args *a, la_form form, int bwd) {
    la_gated_opts o = opts_of(a, form);
    if (!bwd)
        return la_gated_delta_rule_forward(ctx, &o, &a->dims, a->o, a->final_state, a->q, a->k,
                                           a->v, a->g, a->beta, a->initial_state);
    return la_gated_delta_rule_backward(ctx, &o, &a->dims, a->dq, a->dk, a->dv, a->dg, a->dbeta,
                                        a->d_initial_state, a->d_o, a->d_final_state, a->q, a->k,
                                        a->v, a->g, a->beta, a->initial_state);
}

static la_status d_fr(la_ctx *c, const la__op_args *a) { return delta(c, a, LA_FORM_RECURRENT, 0); }
static la_status d_br(la_ctx *c, const la__op_args *a) { return delta(c, a, LA_FORM_RECURRENT, 1); }
static la_status d_fc(la_ctx *c, const la__op_args *a) { return delta(c, a, LA_FORM_CHUNK, 0); }
static la_status d_bc(la_ctx *c, const la__op_args *a) { return delta(c, a, LA_FORM_CHUNK, 1); }
static la_status g_fr(la_ctx *c, const la__op_args *a) {
    return gdelta(c, a, LA_FORM_RECURRENT, 0);
}
static la_status g_br(la_ctx *c, const la__op_args *a) {
    return gdelta(c, a, LA_FORM_RECURRENT, 1);
}
static la_status g_fc(la_ctx *c, const la__op_args *a) { return gdelta(c, a, LA_FORM_CHUNK, 0); }
static la_status g_bc(la_ctx *c, const la__op_args *a) { return gdelta(c, a, LA_FORM_CHUNK, 1); }

#define DELTA_NEEDS (LA__NEED_BETA | LA__NEED_L2NORM | LA__HAS_STATE | LA__CAUSAL)
#define GDELTA_NEEDS (DELTA_NEEDS | LA__NEED_G | LA__NEED_HV)

const la__op_entry la__entry_delta_rule_recurrent = {LA__OP_DELTA_RULE_RECURRENT,
                                                     "delta_rule-recurrent",
                                                     "delta_rule",
                                                     LA_FORM_RECURRENT,
                                                     DELTA_NEEDS,
                                                     LA_OP_DELTA_RULE,
                                                     flops_delta_rec,
                                                     d_fr,
                                                     d_br};
const la__op_entry la__entry_delta_rule_chunk = {
    LA__OP_DELTA_RULE_CHUNK, "delta_rule-chunk", "delta_rule", LA_FORM_CHUNK, DELTA_NEEDS | LA__SAVES,
    LA_OP_DELTA_RULE,        flops_chunk,        d_fc,         d_bc};
const la__op_entry la__entry_gated_delta_rule_recurrent = {LA__OP_GATED_DELTA_RULE_RECURRENT,
                                                           "gated_delta_rule-recurrent",
                                                           "gated_delta_rule",
                                                           LA_FORM_RECURRENT,
                                                           GDELTA_NEEDS,
                                                           LA_OP_GATED_DELTA_RULE,
                                                           flops_gdelta_rec,
                                                           g_fr,
                                                           g_br};
const la__op_entry la__entry_gated_delta_rule_chunk = {LA__OP_GATED_DELTA_RULE_CHUNK,
                                                       "gated_delta_rule-chunk",
                                                       "gated_delta_rule",
                                                       LA_FORM_CHUNK,
                                                       GDELTA_NEEDS | LA__SAVES,
                                                       LA_OP_GATED_DELTA_RULE,
                                                       flops_chunk,
                                                       g_fc,
                                                       g_bc};

/* ---- decoding: the recurrent form's own per-token update --------------- */

static void step(const la__step_io *io) {
    const la_decoder_config *c = io->cfg;
    la__delta_token(c->K, c->V, c->use_qk_l2norm != 0, c->scale, io->S, io->o, io->q, io->k, io->v,
                    io->g, io->beta, io->work);
}

const la__decode_entry la__decode_delta_rule = {
    LA_OP_DELTA_RULE, "delta_rule", LA__NEED_BETA | LA__NEED_L2NORM, 6.0, NULL, step};
const la__decode_entry la__decode_gated_delta_rule = {LA_OP_GATED_DELTA_RULE,
                                                      "gated_delta_rule",
                                                      LA__NEED_G | LA__NEED_BETA | LA__NEED_HV |
                                                          LA__NEED_L2NORM,
                                                      7.0,
                                                      NULL,
                                                      step};
