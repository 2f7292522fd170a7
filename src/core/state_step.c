/* la_state_step: one decoding step on states the caller owns (host memory
 * on a CPU context, device memory on a CUDA context). The per-(sequence,
 * head) arithmetic is the decoder's (la__linear_attn_step, la__gated_step). */
#include "../cuda/cuda_backend.h"

#include <inttypes.h>

typedef struct {
    const la_decoder_config *c;
    float *state, *norm, *o;
    const float *q, *k, *v, *g, *g_gamma, *beta;
    la_ctx *ctx;
} sstep_job;

static void sstep_task(void *p, int64_t task, int tid) {
    const sstep_job *j = p;
    const la_decoder_config *c = j->c;
    const int64_t HS = c->HV, K = c->K, V = c->V, group = HS / c->H;
    const int64_t n = task / HS, h = task % HS, hq = h / group;
    float *S = j->state + (size_t)task * (size_t)(K * V);
    float *o = j->o + (size_t)task * (size_t)V;
    const float *q = j->q + (size_t)(n * c->H + hq) * (size_t)K;
    const float *k = j->k + (size_t)(n * c->H + hq) * (size_t)K;
    const float *v = j->v + (size_t)task * (size_t)V;
    float *work = la__scratch(j->ctx, tid);
    if (c->op == LA_OP_LINEAR_ATTN) {
        float *z = c->normalize ? j->norm + (size_t)task * (size_t)K : NULL;
        la__linear_attn_step(c, c->scale, S, z, o, q, k, v, work);
        return;
    }
    const float *g = NULL;
    if (j->g) g = c->op == LA_OP_GLA ? j->g + (size_t)(n * c->H + h) * (size_t)K : j->g + task;
    const float g_gamma = j->g_gamma ? j->g_gamma[h] : 0.0f;
    const float beta = j->beta ? j->beta[task] : 0.0f;
    la__gated_step(c, c->scale, S, o, q, k, v, g, g_gamma, beta, work);
}

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
    la_decoder_config c = *cfg;
    if ((unsigned)c.op > LA_OP_GATED_DELTA_RULE)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: cfg.op = %d is not a known la_op", op,
                         (int)c.op);
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
    if (la_ctx_is_cuda(ctx))
        return la__cuda_state_step(ctx, &c, dtype, state, norm, o, q, k, v, g, g_gamma, beta);
    if ((st = la__check_dtype_cpu(op, &d))) return st;
    const size_t nqk = (size_t)c.N * (size_t)c.H * (size_t)c.K;
    const size_t nv = (size_t)c.N * (size_t)c.HV * (size_t)c.V;
    const size_t nhs = (size_t)c.N * (size_t)c.HV;
    if ((st = la__check_finite(op, "q", q, nqk)) || (st = la__check_finite(op, "k", k, nqk)) ||
        (st = la__check_finite(op, "v", v, nv)) ||
        (st = la__check_finite(op, "state", state, nhs * (size_t)(c.K * c.V))))
        return st;
    if (normalized &&
        (st = la__check_finite(op, "norm", norm, (size_t)c.N * (size_t)c.H * (size_t)c.K)))
        return st;
    if (g && (st = la__check_log_gate(op, "g", g, c.op == LA_OP_GLA ? nqk : nhs))) return st;
    if (g_gamma && (st = la__check_log_gate(op, "g_gamma", g_gamma, (size_t)c.H))) return st;
    if (beta && (st = la__check_beta(op, "beta", beta, nhs))) return st;
    if ((st = la__scratch_reserve(ctx, LA__STEP_WORK_FLOATS(c.K, c.V) * sizeof(float)))) return st;
    sstep_job j = {&c, state, norm, o, q, k, v, g, g_gamma, beta, ctx};
    la__parallel_for(ctx, (int64_t)nhs, sstep_task, &j);
    return LA_OK;
}
