/* la_state_step: one decoding step on states the caller owns (host memory
 * on a CPU context, device memory on a CUDA context). On the CPU it is the
 * decoder's own step over a view of the caller's state
 * (la__decoder_view_step in decoder.c: the registry's per-family steps);
 * on a GPU the arguments are checked here (device memory cannot be read for
 * value checks) and the CUDA backend's batched step kernel runs. */
#include "registry.h"
#include "../cuda/cuda_backend.h"

#include <inttypes.h>

la_status la_state_step(la_ctx *ctx, const la_decoder_config *cfg, la_dtype dtype, float *state,
                        float *norm, float *o, const float *q, const float *k, const float *v,
                        const float *g, const float *g_gamma, const float *beta) {
    static const char *const op = "la_state_step";
    la_status st;
    if ((st = la__check_ptr(op, "ctx", ctx)) || (st = la__check_ptr(op, "cfg", cfg)) ||
        (st = la__check_ptr(op, "state", state)) || (st = la__check_ptr(op, "o", o)) ||
        (st = la__check_ptr(op, "q", q)) || (st = la__check_ptr(op, "k", k)) ||
        (st = la__check_ptr(op, "v", v)))
        return st;
    if (!la_ctx_is_cuda(ctx)) {
        la_dims d = {.B = 1, .T = 1, .H = 1, .K = 1, .V = 1, .dtype = dtype};
        if ((st = la__check_dtype_known(op, &d)) || (st = la__check_dtype_cpu(op, &d))) return st;
        return la__decoder_view_step(op, ctx, cfg, state, norm, o, q, k, v, g, g_gamma, beta);
    }
    la_decoder_config c = *cfg;
    if ((unsigned)c.op >= (unsigned)LA__DECODE_COUNT)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: cfg.op = %d is not a known la_op", op,
                         (int)c.op);
    if ((unsigned)c.op > LA_OP_GATED_DELTA_RULE)
        return la__error(LA_ERR_UNSUPPORTED,
                         "%s: cfg.op = %d has no CUDA decoding step (linear attention, simple GLA, "
                         "GLA, DeltaNet and Gated DeltaNet do)",
                         op, (int)c.op);
    la_dims d = {.B = c.N, .T = 1, .H = c.H, .K = c.K, .V = c.V, .HV = c.HV, .dtype = dtype};
    if ((st = la__check_shape(op, &d, c.op == LA_OP_GATED_DELTA_RULE)) ||
        (st = la__check_dtype_known(op, &d)))
        return st;
    const int lin = c.op == LA_OP_LINEAR_ATTN;
    if (lin) {
        if ((unsigned)c.feature_map > LA_FEATURE_RELU)
            return la__error(LA_ERR_INVALID_ARGUMENT,
                             "%s: cfg.feature_map = %d is not a known la_feature_map", op,
                             (int)c.feature_map);
        if (c.eps == 0) c.eps = LA_LINEAR_ATTN_DEFAULT_EPS;
        if (!(c.eps > 0) || c.eps > 1e30f)
            return la__error(LA_ERR_INVALID_ARGUMENT, "%s: cfg.eps = %g (must be > 0 and finite)",
                             op, (double)c.eps);
    }
    if ((st = la__resolve_scale(op, c.scale, c.K, &c.scale))) return st;
    c.HV = la__value_heads(&d);
    const int normalized = lin && c.normalize;
    if (normalized && (st = la__check_ptr(op, "norm", norm))) return st;
    if (!normalized && norm)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: norm given but only normalised linear attention has one", op);
    const int uses_g =
        c.op == LA_OP_SIMPLE_GLA || c.op == LA_OP_GLA || c.op == LA_OP_GATED_DELTA_RULE;
    const int needs_g = c.op == LA_OP_GLA || c.op == LA_OP_GATED_DELTA_RULE;
    const int uses_beta = c.op == LA_OP_DELTA_RULE || c.op == LA_OP_GATED_DELTA_RULE;
    if (needs_g && (st = la__check_ptr(op, "g", g))) return st;
    if (uses_beta && (st = la__check_ptr(op, "beta", beta))) return st;
    if (g && !uses_g)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: g given but op %d takes no gate", op,
                         (int)c.op);
    if (g_gamma && c.op != LA_OP_SIMPLE_GLA)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: g_gamma is only for simple GLA", op);
    if (beta && !uses_beta)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: beta given but op %d takes none", op,
                         (int)c.op);
    return la__cuda_state_step(ctx, &c, dtype, state, norm, o, q, k, v, g, g_gamma, beta);
}
