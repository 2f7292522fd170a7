/* The decoding API: a state for N sequences and a step that consumes one
 * token per sequence. The per-(sequence, head) arithmetic lives with each op
 * family (la__linear_attn_step, la__gated_step) and is the same code the
 * recurrent forms run, so decoding equals them bit for bit. */
#include "internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct la_decoder {
    la_decoder_config cfg; /* HV resolved, eps and scale resolved */
    float *state;          /* [N, HS, K, V] */
    float *norm;           /* [N, H, K] or NULL */
    size_t state_n, norm_n;
};

static const char *const DEC = "la_decoder_create";

static int64_t state_heads(const la_decoder_config *c) { return c->HV ? c->HV : c->H; }

la_status la_decoder_create(la_decoder **out, const la_decoder_config *cfg) {
    la_status st;
    if ((st = la__check_ptr(DEC, "out", out)) || (st = la__check_ptr(DEC, "cfg", cfg))) return st;
    la_decoder_config c = *cfg;
    if ((unsigned)c.op > LA_OP_GATED_DELTA_RULE)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: cfg.op = %d is not a known la_op", DEC,
                         (int)c.op);
    la_dims d = {.B = c.N, .T = 1, .H = c.H, .K = c.K, .V = c.V, .HV = c.HV};
    if ((st = la__check_dims(DEC, &d, c.op == LA_OP_GATED_DELTA_RULE))) return st;
    if (c.op == LA_OP_LINEAR_ATTN) {
        if ((unsigned)c.feature_map > LA_FEATURE_RELU)
            return la__error(LA_ERR_INVALID_ARGUMENT,
                             "%s: cfg.feature_map = %d is not a known la_feature_map", DEC,
                             (int)c.feature_map);
        if (c.eps == 0) c.eps = LA_LINEAR_ATTN_DEFAULT_EPS;
        if (!(c.eps > 0) || c.eps != c.eps || c.eps > 1e30f)
            return la__error(LA_ERR_INVALID_ARGUMENT, "%s: cfg.eps = %g (must be > 0 and finite)",
                             DEC, (double)c.eps);
    }
    if ((st = la__resolve_scale(DEC, c.scale, c.K, &c.scale))) return st;
    c.HV = state_heads(&c);

    la_decoder *dec = calloc(1, sizeof *dec);
    if (!dec) return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory", DEC);
    dec->cfg = c;
    dec->state_n = (size_t)c.N * (size_t)c.HV * (size_t)c.K * (size_t)c.V;
    dec->state = calloc(dec->state_n, sizeof(float));
    if (c.op == LA_OP_LINEAR_ATTN && c.normalize) {
        dec->norm_n = (size_t)c.N * (size_t)c.H * (size_t)c.K;
        dec->norm = calloc(dec->norm_n, sizeof(float));
    }
    if (!dec->state || (dec->norm_n && !dec->norm)) {
        const size_t floats = dec->state_n + dec->norm_n;
        la_decoder_destroy(dec);
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory for a state of %zu floats",
                         DEC, floats);
    }
    *out = dec;
    return LA_OK;
}

void la_decoder_destroy(la_decoder *dec) {
    if (!dec) return;
    free(dec->state);
    free(dec->norm);
    free(dec);
}

la_status la_decoder_reset(la_decoder *dec) {
    la_status st = la__check_ptr("la_decoder_reset", "dec", dec);
    if (st) return st;
    memset(dec->state, 0, dec->state_n * sizeof(float));
    if (dec->norm) memset(dec->norm, 0, dec->norm_n * sizeof(float));
    return LA_OK;
}

la_status la_decoder_set_state(la_decoder *dec, const float *state, const float *norm) {
    static const char *const op = "la_decoder_set_state";
    la_status st = la__check_ptr(op, "dec", dec);
    if (st) return st;
    if (norm && !dec->norm)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: norm given but this decoder has no normaliser state", op);
    if (state && (st = la__check_finite(op, "state", state, dec->state_n))) return st;
    if (norm && (st = la__check_finite(op, "norm", norm, dec->norm_n))) return st;
    if (state) memcpy(dec->state, state, dec->state_n * sizeof(float));
    if (norm) memcpy(dec->norm, norm, dec->norm_n * sizeof(float));
    return LA_OK;
}

la_status la_decoder_get_state(const la_decoder *dec, float *state, float *norm) {
    static const char *const op = "la_decoder_get_state";
    la_status st = la__check_ptr(op, "dec", dec);
    if (st) return st;
    if (norm && !dec->norm)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: norm asked for but this decoder has no normaliser state", op);
    if (state) memcpy(state, dec->state, dec->state_n * sizeof(float));
    if (norm) memcpy(norm, dec->norm, dec->norm_n * sizeof(float));
    return LA_OK;
}

typedef struct {
    const la_decoder *dec;
    float *o;
    const float *q, *k, *v, *g, *g_gamma, *beta;
    la_ctx *ctx;
} step_job;

static void step_task(void *p, int64_t task, int tid) {
    const step_job *j = p;
    const la_decoder_config *c = &j->dec->cfg;
    const int64_t HS = c->HV, K = c->K, V = c->V, group = HS / c->H;
    const int64_t n = task / HS, h = task % HS, hq = h / group;
    float *S = j->dec->state + (size_t)task * (size_t)(K * V);
    float *o = j->o + (size_t)task * (size_t)V;
    const float *q = j->q + (size_t)(n * c->H + hq) * (size_t)K;
    const float *k = j->k + (size_t)(n * c->H + hq) * (size_t)K;
    const float *v = j->v + (size_t)task * (size_t)V;
    float *work = la__scratch(j->ctx, tid);
    if (c->op == LA_OP_LINEAR_ATTN) {
        float *z = j->dec->norm ? j->dec->norm + (size_t)task * (size_t)K : NULL;
        la__linear_attn_step(c, c->scale, S, z, o, q, k, v, work);
        return;
    }
    const float *g = NULL;
    if (j->g) g = c->op == LA_OP_GLA ? j->g + (size_t)(n * c->H + h) * (size_t)K : j->g + task;
    float g_gamma = j->g_gamma ? j->g_gamma[h] : 0.0f;
    float beta = j->beta ? j->beta[task] : 0.0f;
    la__gated_step(c, c->scale, S, o, q, k, v, g, g_gamma, beta, work);
}

la_status la_decoder_step(la_ctx *ctx, la_decoder *dec, float *o, const float *q,
                          const float *k, const float *v, const float *g, const float *g_gamma,
                          const float *beta) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported("la_decoder_step (use la_state_step)");
    static const char *const op = "la_decoder_step";
    la_status st;
    if ((st = la__check_ptr(op, "ctx", ctx)) || (st = la__check_ptr(op, "dec", dec)) ||
        (st = la__check_ptr(op, "o", o)) || (st = la__check_ptr(op, "q", q)) ||
        (st = la__check_ptr(op, "k", k)) || (st = la__check_ptr(op, "v", v)))
        return st;
    const la_decoder_config *c = &dec->cfg;
    const size_t nqk = (size_t)c->N * (size_t)c->H * (size_t)c->K;
    const size_t nv = (size_t)c->N * (size_t)c->HV * (size_t)c->V;
    const size_t nhs = (size_t)c->N * (size_t)c->HV;
    if ((st = la__check_finite(op, "q", q, nqk)) || (st = la__check_finite(op, "k", k, nqk)) ||
        (st = la__check_finite(op, "v", v, nv)))
        return st;
    const int uses_g = c->op == LA_OP_SIMPLE_GLA || c->op == LA_OP_GLA ||
                       c->op == LA_OP_GATED_DELTA_RULE;
    const int needs_g = c->op == LA_OP_GLA || c->op == LA_OP_GATED_DELTA_RULE;
    const int uses_beta = c->op == LA_OP_DELTA_RULE || c->op == LA_OP_GATED_DELTA_RULE;
    if (needs_g && (st = la__check_ptr(op, "g", g))) return st;
    if (uses_beta && (st = la__check_ptr(op, "beta", beta))) return st;
    if (g && !uses_g)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: g given but op %d takes no gate", op,
                         (int)c->op);
    if (g_gamma && c->op != LA_OP_SIMPLE_GLA)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: g_gamma is only for simple GLA (op %d given)", op, (int)c->op);
    if (beta && !uses_beta)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: beta given but op %d takes none", op,
                         (int)c->op);
    if (g && (st = la__check_log_gate(op, "g", g, c->op == LA_OP_GLA ? nqk : nhs))) return st;
    if (g_gamma && (st = la__check_log_gate(op, "g_gamma", g_gamma, (size_t)c->H))) return st;
    if (beta && (st = la__check_beta(op, "beta", beta, nhs))) return st;
    if ((st = la__scratch_reserve(ctx, LA__STEP_WORK_FLOATS(c->K, c->V) * sizeof(float))))
        return st;
    step_job j = {dec, o, q, k, v, g, g_gamma, beta, ctx};
    la__parallel_for(ctx, (int64_t)nhs, step_task, &j);
    return LA_OK;
}
