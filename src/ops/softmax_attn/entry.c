/* Registry entries of softmax attention (causal; the exact baseline). */
#include "../registry.h"

static double flops(double T, double K, double V, double C, int backward) {
    (void)C;
    return T * (T + 1) * (backward ? 4 * K + 3 * V : K + V);
}

static la_softmax_opts opts_of(const la__op_args *a, la_softmax_form form) {
    la_softmax_opts o = la_softmax_opts_default();
    o.causal = 1;
    o.form = form;
    o.scale = a->scale;
    return o;
}

static la_status fwd_textbook(la_ctx *ctx, const la__op_args *a) {
    la_softmax_opts o = opts_of(a, LA_SOFTMAX_TEXTBOOK);
    return la_softmax_attn_forward(ctx, &o, &a->dims, a->o, a->lse, a->q, a->k, a->v);
}
static la_status bwd_textbook(la_ctx *ctx, const la__op_args *a) {
    la_softmax_opts o = opts_of(a, LA_SOFTMAX_TEXTBOOK);
    return la_softmax_attn_backward(ctx, &o, &a->dims, a->dq, a->dk, a->dv, a->d_o, a->q, a->k,
                                    a->v);
}
static la_status fwd_streaming(la_ctx *ctx, const la__op_args *a) {
    la_softmax_opts o = opts_of(a, LA_SOFTMAX_STREAMING);
    return la_softmax_attn_forward(ctx, &o, &a->dims, a->o, a->lse, a->q, a->k, a->v);
}
static la_status bwd_streaming(la_ctx *ctx, const la__op_args *a) {
    la_softmax_opts o = opts_of(a, LA_SOFTMAX_STREAMING);
    return la_softmax_attn_backward(ctx, &o, &a->dims, a->dq, a->dk, a->dv, a->d_o, a->q, a->k,
                                    a->v);
}

#define SOFTMAX_NEEDS (LA__CAUSAL | LA__QUADRATIC | LA__HAS_LSE)

const la__op_entry la__entry_softmax_textbook = {LA__OP_SOFTMAX_TEXTBOOK,
                                                 "softmax-textbook",
                                                 "softmax",
                                                 -1,
                                                 SOFTMAX_NEEDS,
                                                 -1,
                                                 flops,
                                                 fwd_textbook,
                                                 bwd_textbook};
const la__op_entry la__entry_softmax_streaming = {LA__OP_SOFTMAX_STREAMING,
                                                  "softmax-streaming",
                                                  "softmax",
                                                  -1,
                                                  SOFTMAX_NEEDS,
                                                  -1,
                                                  flops,
                                                  fwd_streaming,
                                                  bwd_streaming};
