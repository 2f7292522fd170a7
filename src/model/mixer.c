/* Token mixers of the model, each on the public linattn ops. The gates'
 * parametrisations follow the papers: GLA g = logsigmoid(z) / 16 per
 * channel; Gated DeltaNet (and KDA) g = -exp(A_log) softplus(z + dt_bias);
 * delta rules beta = sigmoid(z) with L2-normalised q and k inside the op. */
#include "dense.h"
#include "internal.h"

#include <math.h>

#define GLA_GATE_NORMALIZER 16.0f

#define TRY(call, what)                                                                            \
    do {                                                                                           \
        la_status st_ = (call);                                                                    \
        if (st_) return lm_fail(st_, "%s: %s", (what), la_last_error());                           \
    } while (0)

static float softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
static float logsigmoidf(float x) { return x >= 0.0f ? -log1pf(expf(-x)) : x - log1pf(expf(x)); }

static la_dims dims_of(const lm_model *m, int64_t B, int64_t T, int64_t K) {
    la_dims d = {0};
    d.B = B, d.T = T, d.H = m->cfg.n_heads, d.K = K, d.V = m->cfg.head_dim;
    return d;
}

la_linear_attn_opts lm_linear_opts(const lm_model *m) {
    la_linear_attn_opts o = la_linear_attn_opts_default();
    o.causal = 1;
    o.form = m->form;
    if (m->cfg.mixer == LM_PERFORMER) {
        o.feature_map = LA_FEATURE_IDENTITY;
        o.normalize = 1;
    } else {
        o.feature_map = (la_feature_map)m->cfg.feature_map;
        o.normalize = m->cfg.feature_map == LA_FEATURE_ELU1;
    }
    return o;
}

static la_gated_opts gated_opts(const lm_model *m) {
    la_gated_opts o = la_gated_opts_default();
    o.form = m->form == LA_FORM_RECURRENT ? LA_FORM_RECURRENT : LA_FORM_CHUNK;
    o.use_qk_l2norm =
        m->cfg.mixer == LM_DELTANET || m->cfg.mixer == LM_GDN || m->cfg.mixer == LM_KDA;
    return o;
}

/* Log gates from their pre-activations (per row of gz). */
void lm_gates_forward(const lm_model *m, int l, const float *gz, float *g, int64_t BT) {
    const lm_config *c = &m->cfg;
    const int64_t G = lm_gate_width(c), K = c->head_dim;
    if (c->mixer == LM_GLA) {
        for (int64_t i = 0; i < BT * G; i++) g[i] = logsigmoidf(gz[i]) / GLA_GATE_NORMALIZER;
    } else if (c->mixer == LM_GDN || c->mixer == LM_KDA) {
        /* gz already holds z + dt_bias (the bias is added in the forward) */
        const float *alog = lm_p(m, T_LAYER(l, S_ALOG));
        for (int64_t i = 0; i < BT; i++)
            for (int64_t j = 0; j < G; j++) {
                const int64_t h = c->mixer == LM_GDN ? j : j / K;
                g[i * G + j] = -expf(alog[h]) * softplusf(gz[i * G + j]);
            }
    }
}

static int layer_index(const lm_model *m, const lm_layer_acts *L) {
    return (int)(L - m->acts->layers);
}

la_status lm_mixer_forward(lm_model *m, lm_layer_acts *L, int64_t B, int64_t T) {
    const lm_config *c = &m->cfg;
    la_ctx *ctx = m->ctx;
    const int64_t K = c->head_dim;
    la_dims d = dims_of(m, B, T, K);
    lm_gates_forward(m, layer_index(m, L), L->gz, L->g, B * T);
    switch (c->mixer) {
    case LM_SOFTMAX: {
        la_softmax_opts o = la_softmax_opts_default();
        o.causal = 1;
        o.form = LA_SOFTMAX_STREAMING;
        TRY(la_softmax_attn_forward(ctx, &o, &d, L->o, NULL, L->q, L->k, L->v), "softmax forward");
        return LA_OK;
    }
    case LM_LINEAR: {
        la_linear_attn_opts o = lm_linear_opts(m);
        TRY(la_linear_attn_forward(ctx, &o, &d, L->o, NULL, NULL, L->q, L->k, L->v, NULL, NULL),
            "linear attention forward");
        return LA_OK;
    }
    case LM_PERFORMER: {
        const int64_t M = c->performer_m;
        la_rf_opts rq = lm_performer_rf(0), rk = lm_performer_rf(1);
        TRY(la_rf_forward(ctx, &rq, &d, L->phq, NULL, L->q, m->performer_W, M), "performer phi(q)");
        TRY(la_rf_forward(ctx, &rk, &d, L->phk, NULL, L->k, m->performer_W, M), "performer phi(k)");
        la_linear_attn_opts o = lm_linear_opts(m);
        la_dims dm = dims_of(m, B, T, M);
        TRY(la_linear_attn_forward(ctx, &o, &dm, L->o, NULL, NULL, L->phq, L->phk, L->v, NULL,
                                   NULL),
            "performer attention forward");
        return LA_OK;
    }
    case LM_RETNET: {
        la_gated_opts o = gated_opts(m);
        TRY(la_simple_gla_forward(ctx, &o, &d, L->o, NULL, L->q, L->k, L->v, NULL, m->acts->g_gamma,
                                  NULL),
            "retnet forward");
        return LA_OK;
    }
    case LM_GLA: {
        la_gated_opts o = gated_opts(m);
        TRY(la_gla_forward(ctx, &o, &d, L->o, NULL, L->q, L->k, L->v, L->g, NULL), "gla forward");
        return LA_OK;
    }
    case LM_DELTANET: {
        la_gated_opts o = gated_opts(m);
        TRY(la_delta_rule_forward(ctx, &o, &d, L->o, NULL, L->q, L->k, L->v, L->beta, NULL),
            "deltanet forward");
        return LA_OK;
    }
    case LM_GDN: {
        la_gated_opts o = gated_opts(m);
        TRY(la_gated_delta_rule_forward(ctx, &o, &d, L->o, NULL, L->q, L->k, L->v, L->g, L->beta,
                                        NULL),
            "gated deltanet forward");
        return LA_OK;
    }
    case LM_KDA: {
#ifdef LA_HAVE_KDA
        la_gated_opts o = gated_opts(m);
        TRY(la_kda_forward(ctx, &o, &d, L->o, NULL, L->q, L->k, L->v, L->g, L->beta, NULL),
            "kda forward");
        return LA_OK;
#else
        return lm_fail(LA_ERR_UNSUPPORTED, "mixer kda is not in this build (no la_kda_forward)");
#endif
    }
    default: return lm_fail(LA_ERR_INVALID_ARGUMENT, "mixer %d unknown", c->mixer);
    }
}

/* d_o is in acts->dout; writes acts->dq/dk/dv (mixer inputs), acts->dg
 * (d gate pre-activation, gz) and acts->dbeta (d beta pre-activation). */
la_status lm_mixer_backward(lm_model *m, lm_layer_acts *L, int64_t B, int64_t T) {
    const lm_config *c = &m->cfg;
    lm_acts *A = m->acts;
    la_ctx *ctx = m->ctx;
    const int64_t K = c->head_dim, BT = B * T, H = c->n_heads, G = lm_gate_width(c);
    const int l = layer_index(m, L);
    la_dims d = dims_of(m, B, T, K);
    switch (c->mixer) {
    case LM_SOFTMAX: {
        la_softmax_opts o = la_softmax_opts_default();
        o.causal = 1;
        o.form = LA_SOFTMAX_STREAMING;
        TRY(la_softmax_attn_backward(ctx, &o, &d, A->dq, A->dk, A->dv, A->dout, L->q, L->k, L->v),
            "softmax backward");
        break;
    }
    case LM_LINEAR: {
        la_linear_attn_opts o = lm_linear_opts(m);
        TRY(la_linear_attn_backward(ctx, &o, &d, A->dq, A->dk, A->dv, NULL, NULL, A->dout, NULL,
                                    NULL, L->q, L->k, L->v, NULL, NULL),
            "linear attention backward");
        break;
    }
    case LM_PERFORMER: {
        const int64_t M = c->performer_m;
        la_linear_attn_opts o = lm_linear_opts(m);
        la_dims dm = dims_of(m, B, T, M);
        TRY(la_linear_attn_backward(ctx, &o, &dm, A->dphq, A->dphk, A->dv, NULL, NULL, A->dout,
                                    NULL, NULL, L->phq, L->phk, L->v, NULL, NULL),
            "performer attention backward");
        la_rf_opts rq = lm_performer_rf(0), rk = lm_performer_rf(1);
        TRY(la_rf_backward(ctx, &rq, &d, A->dq, A->dphq, L->q, m->performer_W, M),
            "performer phi(q) backward");
        TRY(la_rf_backward(ctx, &rk, &d, A->dk, A->dphk, L->k, m->performer_W, M),
            "performer phi(k) backward");
        break;
    }
    case LM_RETNET: {
        la_gated_opts o = gated_opts(m);
        TRY(la_simple_gla_backward(ctx, &o, &d, A->dq, A->dk, A->dv, NULL, NULL, NULL, A->dout,
                                   NULL, L->q, L->k, L->v, NULL, A->g_gamma, NULL),
            "retnet backward");
        break;
    }
    case LM_GLA: {
        la_gated_opts o = gated_opts(m);
        TRY(la_gla_backward(ctx, &o, &d, A->dq, A->dk, A->dv, A->dg, NULL, A->dout, NULL, L->q,
                            L->k, L->v, L->g, NULL),
            "gla backward");
        break;
    }
    case LM_DELTANET: {
        la_gated_opts o = gated_opts(m);
        TRY(la_delta_rule_backward(ctx, &o, &d, A->dq, A->dk, A->dv, A->dbeta, NULL, A->dout, NULL,
                                   L->q, L->k, L->v, L->beta, NULL),
            "deltanet backward");
        break;
    }
    case LM_GDN: {
        la_gated_opts o = gated_opts(m);
        TRY(la_gated_delta_rule_backward(ctx, &o, &d, A->dq, A->dk, A->dv, A->dg, A->dbeta, NULL,
                                         A->dout, NULL, L->q, L->k, L->v, L->g, L->beta, NULL),
            "gated deltanet backward");
        break;
    }
    case LM_KDA: {
#ifdef LA_HAVE_KDA
        la_gated_opts o = gated_opts(m);
        TRY(la_kda_backward(ctx, &o, &d, A->dq, A->dk, A->dv, A->dg, A->dbeta, NULL, A->dout, NULL,
                            L->q, L->k, L->v, L->g, L->beta, NULL),
            "kda backward");
        break;
#else
        return lm_fail(LA_ERR_UNSUPPORTED, "mixer kda is not in this build (no la_kda_backward)");
#endif
    }
    default: return lm_fail(LA_ERR_INVALID_ARGUMENT, "mixer %d unknown", c->mixer);
    }
    /* Through the gate parametrisations to the pre-activations. */
    if (c->mixer == LM_GLA) {
        for (int64_t i = 0; i < BT * G; i++)
            A->dg[i] = A->dg[i] / GLA_GATE_NORMALIZER * lm_sigmoidf(-L->gz[i]);
    } else if (c->mixer == LM_GDN || c->mixer == LM_KDA) {
        const float *alog = lm_p(m, T_LAYER(l, S_ALOG));
        float *dalog = lm_gp(m, T_LAYER(l, S_ALOG));
        for (int64_t i = 0; i < BT; i++)
            for (int64_t j = 0; j < G; j++) {
                const int64_t h = c->mixer == LM_GDN ? j : j / K;
                const float dg = A->dg[i * G + j];
                dalog[h] += dg * L->g[i * G + j];
                A->dg[i * G + j] = dg * -expf(alog[h]) * lm_sigmoidf(L->gz[i * G + j]);
            }
    }
    if (lm_has_beta(c))
        for (int64_t i = 0; i < BT * H; i++) A->dbeta[i] *= L->beta[i] * (1.0f - L->beta[i]);
    return LA_OK;
}
