/* Model configuration, parameter table and initialisation. */
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char lm_err_msg[512];

la_status lm_fail(la_status st, const char *fmt, ...) {
    char tmp[sizeof lm_err_msg]; /* the arguments may include lm_error() itself */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(lm_err_msg, tmp, sizeof tmp);
    return st;
}
const char *lm_error(void) { return lm_err_msg; }

static const char *const MIXER_NAMES[LM_MIXER_COUNT] = {
    "softmax", "linear", "performer", "retnet", "gla", "deltanet", "gdn", "kda"};

const char *lm_mixer_name(int mixer) {
    return mixer >= 0 && mixer < LM_MIXER_COUNT ? MIXER_NAMES[mixer] : NULL;
}
int lm_mixer_from_name(const char *name) {
    for (int i = 0; name && i < LM_MIXER_COUNT; i++)
        if (!strcmp(name, MIXER_NAMES[i])) return i;
    return -1;
}
int lm_mixer_available(int mixer) {
#ifdef LA_HAVE_KDA
    return mixer >= 0 && mixer < LM_MIXER_COUNT;
#else
    return mixer >= 0 && mixer < LM_MIXER_COUNT && mixer != LM_KDA;
#endif
}

lm_config lm_config_default(int mixer, int vocab) {
    lm_config c;
    memset(&c, 0, sizeof c);
    c.vocab = vocab;
    c.d_model = 64;
    c.n_layers = 2;
    c.n_heads = 4;
    c.head_dim = 16;
    c.d_ff = 128;
    c.mixer = mixer;
    c.feature_map = LA_FEATURE_ELU1;
    c.conv = 4;
    c.performer_m = 32;
    c.seed = 1;
    c.norm_eps = 1e-5f;
    return c;
}

la_status lm_config_validate(const lm_config *c) {
    if (!c) return lm_fail(LA_ERR_NULL_POINTER, "config is NULL");
#define RANGE(f, lo, hi)                                                                           \
    if (c->f < (lo) || c->f > (hi))                                                                \
        return lm_fail(LA_ERR_INVALID_ARGUMENT, "config %s = %ld is outside [%ld, %ld]", #f,       \
                       (long)c->f, (long)(lo), (long)(hi));
    RANGE(vocab, 2, 1 << 20);
    RANGE(d_model, 1, 1 << 14);
    RANGE(n_layers, 1, 256);
    RANGE(n_heads, 1, 1024);
    RANGE(head_dim, 1, 1024);
    RANGE(d_ff, 1, 1 << 16);
    RANGE(mixer, 0, LM_MIXER_COUNT - 1);
    RANGE(feature_map, 0, 2);
    RANGE(conv, 0, 64);
    RANGE(performer_m, 1, 1 << 14);
#undef RANGE
    if (!(c->norm_eps > 0.0f && c->norm_eps < 1.0f))
        return lm_fail(LA_ERR_INVALID_ARGUMENT, "config norm_eps = %g is outside (0, 1)",
                       (double)c->norm_eps);
    if ((int64_t)c->n_heads * c->head_dim > (1 << 16))
        return lm_fail(LA_ERR_INVALID_ARGUMENT, "config n_heads * head_dim = %ld exceeds 65536",
                       (long)c->n_heads * c->head_dim);
    return LA_OK;
}

int64_t lm_gate_width(const lm_config *c) {
    const int64_t HK = (int64_t)c->n_heads * c->head_dim;
    switch (c->mixer) {
    case LM_GLA:
    case LM_KDA: return HK;
    case LM_GDN: return c->n_heads;
    default: return 0;
    }
}
int lm_has_beta(const lm_config *c) {
    return c->mixer == LM_DELTANET || c->mixer == LM_GDN || c->mixer == LM_KDA;
}

static const char *const SLOT_NAMES[S_COUNT] = {
    "attn_norm", "wq",    "wk", "wv", "wo",       "conv_q", "conv_k", "conv_v", "wg",
    "bg",        "a_log", "wb", "bb", "mlp_norm", "w1",     "w3",     "w2"};

static void slot_sizes(const lm_config *c, int64_t *sz) {
    const int64_t D = c->d_model, HK = (int64_t)c->n_heads * c->head_dim, F = c->d_ff;
    const int64_t G = lm_gate_width(c), ks = c->conv, H = c->n_heads;
    sz[S_NORM1] = D;
    sz[S_WQ] = sz[S_WK] = sz[S_WV] = D * HK;
    sz[S_WO] = HK * D;
    sz[S_CQ] = sz[S_CK] = sz[S_CV] = ks * HK;
    sz[S_WG] = D * G;
    sz[S_BG] = G;
    sz[S_ALOG] = (c->mixer == LM_GDN || c->mixer == LM_KDA) ? H : 0;
    sz[S_WB] = lm_has_beta(c) ? D * H : 0;
    sz[S_BB] = lm_has_beta(c) ? H : 0;
    sz[S_NORM2] = D;
    sz[S_W1] = sz[S_W3] = D * F;
    sz[S_W2] = F * D;
}

int64_t lm_config_n_params(const lm_config *c) {
    int64_t sz[S_COUNT], per = 0;
    slot_sizes(c, sz);
    for (int s = 0; s < S_COUNT; s++) per += sz[s];
    return (int64_t)c->vocab * c->d_model + per * c->n_layers + c->d_model;
}

const lm_tensor *lm_find_tensor(const lm_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->table[i].name, name)) return &m->table[i];
    return NULL;
}

static void fill_normal(float *p, int64_t n, double std, la_rng *rng) {
    for (int64_t i = 0; i < n; i++) p[i] = (float)(std * la_rng_normal(rng));
}

/* Weight init from cfg.seed: matrices N(0, 1/fan_in) (output projections
 * scaled by 1/sqrt(2 L)), norms 1, embeddings N(0, 1/D), gates as their
 * papers (GLA bias 0; GDN/KDA A = 1..16 and dt in [1e-3, 0.1] log-spaced;
 * beta bias 0 so beta starts at 0.5). */
static void init_params(lm_model *m) {
    const lm_config *c = &m->cfg;
    la_rng rng;
    la_rng_seed(&rng, c->seed);
    const double D = c->d_model, HK = (double)c->n_heads * c->head_dim, F = c->d_ff;
    const double out_scale = 1.0 / sqrt(2.0 * c->n_layers);
    fill_normal(lm_p(m, T_EMBED), m->table[T_EMBED].size, 1.0 / sqrt(D), &rng);
    for (int l = 0; l < c->n_layers; l++) {
        for (int s = 0; s < S_COUNT; s++) {
            const int t = T_LAYER(l, s);
            float *p = lm_p(m, t);
            const int64_t n = m->table[t].size;
            switch (s) {
            case S_NORM1:
            case S_NORM2:
                for (int64_t i = 0; i < n; i++) p[i] = 1.0f;
                break;
            case S_WQ:
            case S_WK:
            case S_WV:
            case S_WG:
            case S_WB:
            case S_W1:
            case S_W3: fill_normal(p, n, 1.0 / sqrt(D), &rng); break;
            case S_WO: fill_normal(p, n, out_scale / sqrt(HK), &rng); break;
            case S_W2: fill_normal(p, n, out_scale / sqrt(F), &rng); break;
            case S_CQ:
            case S_CK:
            case S_CV: fill_normal(p, n, 1.0 / sqrt((double)c->conv), &rng); break;
            case S_BG:
                for (int64_t i = 0; i < n; i++) {
                    if (c->mixer == LM_GLA) {
                        p[i] = 0.0f;
                    } else { /* dt_bias = softplus^-1(dt), dt log-spaced in [1e-3, 0.1] */
                        double dt = exp(log(1e-3) + (log(0.1) - log(1e-3)) * la_rng_uniform(&rng));
                        p[i] = (float)(dt + log(-expm1(-dt)));
                    }
                }
                break;
            case S_ALOG:
                for (int64_t i = 0; i < n; i++)
                    p[i] = (float)log(1.0 + 15.0 * la_rng_uniform(&rng));
                break;
            case S_BB:
                for (int64_t i = 0; i < n; i++) p[i] = 0.0f;
                break;
            default: break;
            }
        }
    }
    float *nf = lm_p(m, T_NORMF(c->n_layers));
    for (int64_t i = 0; i < c->d_model; i++) nf[i] = 1.0f;
}

la_status lm_model_create(lm_model **out, const lm_config *cfg, la_ctx *ctx) {
    if (!out || !ctx) return lm_fail(LA_ERR_NULL_POINTER, "lm_model_create: out or ctx is NULL");
    la_status st = lm_config_validate(cfg);
    if (st) return st;
    if (!lm_mixer_available(cfg->mixer))
        return lm_fail(LA_ERR_UNSUPPORTED,
                       "mixer %d (%s) is not in this build (needs the la_kda_* functions)",
                       cfg->mixer, cfg->mixer == LM_KDA ? "kda" : "?");
    lm_model *m = calloc(1, sizeof *m);
    if (!m) return lm_fail(LA_ERR_OUT_OF_MEMORY, "lm_model_create: out of memory");
    m->cfg = *cfg;
    m->ctx = ctx;
    m->form = LA_FORM_CHUNK;
    m->n_tensors = 2 + cfg->n_layers * S_COUNT;
    m->table = calloc((size_t)m->n_tensors, sizeof *m->table);
    if (!m->table) goto oom;
    int64_t off = 0;
    snprintf(m->table[T_EMBED].name, 32, "embed");
    m->table[T_EMBED].size = (int64_t)cfg->vocab * cfg->d_model;
    off = m->table[T_EMBED].size;
    int64_t sz[S_COUNT];
    slot_sizes(cfg, sz);
    for (int l = 0; l < cfg->n_layers; l++)
        for (int s = 0; s < S_COUNT; s++) {
            lm_tensor *t = &m->table[T_LAYER(l, s)];
            snprintf(t->name, 32, "l%d.%s", l, SLOT_NAMES[s]);
            t->size = sz[s];
            t->offset = off;
            off += sz[s];
        }
    lm_tensor *tf = &m->table[T_NORMF(cfg->n_layers)];
    snprintf(tf->name, 32, "norm_f");
    tf->size = cfg->d_model;
    tf->offset = off;
    off += tf->size;
    m->n_params = off;
    m->params = malloc((size_t)off * sizeof(float));
    m->grads = calloc((size_t)off, sizeof(float));
    m->acts = calloc(1, sizeof *m->acts);
    if (!m->params || !m->grads || !m->acts) goto oom;
    if (cfg->mixer == LM_PERFORMER) {
        m->performer_W = malloc((size_t)cfg->performer_m * cfg->head_dim * sizeof(float));
        if (!m->performer_W) goto oom;
        st = la_projection_draw(m->performer_W, cfg->performer_m, cfg->head_dim, LA_PROJ_ORTHOGONAL,
                                LA_SCALING_CHI, cfg->seed ^ 0x9e3779b97f4a7c15ull);
        if (st) {
            lm_model_destroy(m);
            return lm_fail(st, "performer projection: %s", la_last_error());
        }
    }
    m->pool = lm_pool_create(la_ctx_threads(ctx));
    if (!m->pool) goto oom;
    init_params(m);
    *out = m;
    return LA_OK;
oom:
    lm_model_destroy(m);
    return lm_fail(LA_ERR_OUT_OF_MEMORY, "lm_model_create: out of memory");
}

void lm_model_destroy(lm_model *m) {
    if (!m) return;
    lm_acts_release(m->acts);
    free(m->acts);
    free(m->table);
    free(m->params);
    free(m->grads);
    free(m->performer_W);
    lm_pool_destroy(m->pool);
    free(m);
}

la_rf_opts lm_performer_rf(int role) {
    la_rf_opts o = la_rf_opts_default();
    o.kind = LA_RF_FAVOR_POSITIVE;
    o.role = role ? LA_RF_KEY : LA_RF_QUERY;
    o.stabilize = role ? 0 : 1;
    o.eps = 0.0f;
    return o;
}
