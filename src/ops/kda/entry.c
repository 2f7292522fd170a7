/* Registry entries of KDA (recurrent, chunk) and its decoding step. */
#include "../registry.h"
#include "kda.h"

/* recurrent, per token: the decay of S (KV), the recall (k*a)^T S (2KV), the
 * update a S + k r^T (2KV... counted with the decay: 3KV), o = S^T q (2KV):
 * 7 K V as Gated DeltaNet; backward about twice the forward on top. */
static double flops_recurrent(double T, double K, double V, double C, int backward) {
    (void)C;
    return 7 * T * K * V * (backward ? 3 : 1);
}
/* chunk (WY with per-key gates), per chunk of C tokens: the gated K K^T and
 * Q K^T (C^2 K each, lower halves), the two triangular solves (C^2 (K+V)),
 * R = U - W S (2CKV), o = (Q*B) S + P R (2CKV + C^2 V), the state update
 * (2CKV); per token divide by C (the gate exponentials are not counted). */
static double flops_chunk(double T, double K, double V, double C, int backward) {
    return T * (C * (3 * K + 2 * V) + 6 * K * V) * (backward ? 3 : 1);
}

static la_status run(la_ctx *ctx, const la__op_args *a, la_form form, int bwd) {
    la_gated_opts o = la_gated_opts_default();
    o.form = form;
    o.scale = a->scale;
    o.chunk_size = form == LA_FORM_CHUNK ? a->chunk_size : 0;
    o.use_qk_l2norm = a->use_qk_l2norm;
    o.saved = form == LA_FORM_CHUNK ? a->saved : NULL;
    if (!bwd)
        return la_kda_forward(ctx, &o, &a->dims, a->o, a->final_state, a->q, a->k, a->v, a->g,
                              a->beta, a->initial_state);
    return la_kda_backward(ctx, &o, &a->dims, a->dq, a->dk, a->dv, a->dg, a->dbeta,
                           a->d_initial_state, a->d_o, a->d_final_state, a->q, a->k, a->v, a->g,
                           a->beta, a->initial_state);
}

static la_status fwd_rec(la_ctx *c, const la__op_args *a) {
    return run(c, a, LA_FORM_RECURRENT, 0);
}
static la_status bwd_rec(la_ctx *c, const la__op_args *a) {
    return run(c, a, LA_FORM_RECURRENT, 1);
}
static la_status fwd_chunk(la_ctx *c, const la__op_args *a) { return run(c, a, LA_FORM_CHUNK, 0); }
static la_status bwd_chunk(la_ctx *c, const la__op_args *a) { return run(c, a, LA_FORM_CHUNK, 1); }

#define KDA_NEEDS                                                                                  \
    (LA__NEED_GK | LA__NEED_BETA | LA__NEED_HV | LA__NEED_L2NORM | LA__HAS_STATE | LA__CAUSAL)

const la__op_entry la__entry_kda_recurrent = {LA__OP_KDA_RECURRENT, "kda-recurrent", "kda",
                                              LA_FORM_RECURRENT,    KDA_NEEDS,       LA_OP_KDA,
                                              flops_recurrent,      fwd_rec,         bwd_rec};
const la__op_entry la__entry_kda_chunk = {LA__OP_KDA_CHUNK, "kda-chunk", "kda",
                                          LA_FORM_CHUNK,    KDA_NEEDS | LA__SAVES, LA_OP_KDA,
                                          flops_chunk,      fwd_chunk,   bwd_chunk};

/* ---- decoding: the recurrent form's own per-token update --------------- */

static void step(const la__step_io *io) {
    la__kda_step(io->cfg, io->cfg->scale, io->S, io->o, io->q, io->k, io->v, io->g, io->beta,
                 io->work);
}

const la__decode_entry la__decode_kda = {
    LA_OP_KDA, "kda", LA__NEED_GK | LA__NEED_BETA | LA__NEED_HV | LA__NEED_L2NORM, 7.0, NULL, step};
