/* The decoding API: a state for N sequences and a step that consumes one
 * token per sequence. The per-(sequence, head) arithmetic is each family's
 * registry step (src/ops/registry.h), the same code its recurrent form runs,
 * so decoding equals it bit for bit. Nothing here names a family: what a
 * step reads (gates, beta, a normaliser, value heads) comes from its
 * entry's needs. */
#include "registry.h"
#include "../cuda/cuda_backend.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct la_decoder {
    la_decoder_config cfg; /* HV resolved, eps and scale resolved */
    const la__decode_entry *entry;
    const la__decode_ext *ext; /* optional hooks, or NULL */
    float *state;              /* [N, HS, R, V], R = rows (K, or the entry's) */
    float *norm;               /* [N, H, R] or NULL */
    size_t state_n, norm_n;
    int64_t rows;
    void *data;     /* the entry's family data (entry->create), or NULL */
    float *key_max; /* [N, H] when the entry keeps one, else NULL */
    float key_max0; /* its reset value */
};

static const char *const DEC = "la_decoder_create";

static int64_t state_heads(const la_decoder_config *c) { return c->HV ? c->HV : c->H; }

/* Checks cfg and resolves it into *c (HV, scale and the family's own
 * fields) with its decoding entry *e; fn names the public function. */
static la_status resolve_config(const char *fn, const la_decoder_config *cfg,
                                la_decoder_config *c, const la__decode_entry **e) {
    la_status st;
    *c = *cfg;
    *e = la__decode_get((int)c->op);
    if (!*e)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: cfg.op = %d is not a known la_op", fn,
                         (int)c->op);
    la_dims d = {.B = c->N, .T = 1, .H = c->H, .K = c->K, .V = c->V, .HV = c->HV};
    if ((st = la__check_dims(fn, &d, ((*e)->needs & LA__NEED_HV) != 0))) return st;
    if ((*e)->configure && (st = (*e)->configure(fn, c))) return st;
    if ((st = la__resolve_scale(fn, c->scale, c->K, &c->scale))) return st;
    c->HV = state_heads(c);
    return LA_OK;
}

la_status la_decoder_create(la_decoder **out, const la_decoder_config *cfg) {
    la_status st;
    if ((st = la__check_ptr(DEC, "out", out)) || (st = la__check_ptr(DEC, "cfg", cfg))) return st;
    la_decoder_config c;
    const la__decode_entry *e;
    if ((st = resolve_config(DEC, cfg, &c, &e))) return st;

    la_decoder *dec = calloc(1, sizeof *dec);
    if (!dec) return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory", DEC);
    dec->cfg = c;
    dec->entry = e;
    dec->ext = la__decode_ext_get((int)c.op);
    const la__decode_ext *x = dec->ext;
    dec->rows = c.K;
    if (x && x->create && (st = x->create(DEC, &dec->cfg, &dec->data, &dec->rows))) {
        la_decoder_destroy(dec);
        return st;
    }
    if ((st = la__numel(DEC, "state", &dec->state_n, c.N, c.HV, dec->rows, c.V))) {
        la_decoder_destroy(dec);
        return st;
    }
    dec->state = calloc(dec->state_n, sizeof(float));
    if ((e->needs & LA__NEED_NORMALIZER) && c.normalize) {
        dec->norm_n = (size_t)c.N * (size_t)c.H * (size_t)dec->rows;
        dec->norm = calloc(dec->norm_n, sizeof(float));
    }
    const int keeps_max = x && x->key_max_reset;
    if (keeps_max) {
        dec->key_max0 = x->key_max_reset(dec->data);
        dec->key_max = malloc((size_t)(c.N * c.H) * sizeof(float));
        if (dec->key_max)
            for (int64_t i = 0; i < c.N * c.H; i++) dec->key_max[i] = dec->key_max0;
    }
    if (!dec->state || (dec->norm_n && !dec->norm) || (keeps_max && !dec->key_max)) {
        const size_t floats = dec->state_n + dec->norm_n;
        la_decoder_destroy(dec);
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory for a state of %zu floats", DEC,
                         floats);
    }
    *out = dec;
    return LA_OK;
}

void la_decoder_destroy(la_decoder *dec) {
    if (!dec) return;
    free(dec->state);
    free(dec->norm);
    free(dec->key_max);
    if (dec->ext && dec->ext->destroy) dec->ext->destroy(dec->data);
    free(dec);
}

la_status la_decoder_reset(la_decoder *dec) {
    la_status st = la__check_ptr("la_decoder_reset", "dec", dec);
    if (st) return st;
    memset(dec->state, 0, dec->state_n * sizeof(float));
    if (dec->norm) memset(dec->norm, 0, dec->norm_n * sizeof(float));
    if (dec->key_max)
        for (int64_t i = 0; i < dec->cfg.N * dec->cfg.H; i++) dec->key_max[i] = dec->key_max0;
    return LA_OK;
}

la_status la_decoder_set_key_max(la_decoder *dec, const float *key_max) {
    static const char *const op = "la_decoder_set_key_max";
    la_status st;
    if ((st = la__check_ptr(op, "dec", dec)) || (st = la__check_ptr(op, "key_max", key_max)))
        return st;
    if (!dec->key_max)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: op %d (%s) keeps no key maximum (LA_OP_PERFORMER only)", op,
                         (int)dec->cfg.op, dec->entry->family);
    const int64_t n = dec->cfg.N * dec->cfg.H;
    for (int64_t i = 0; i < n; i++)
        if (key_max[i] != key_max[i] || key_max[i] == INFINITY)
            return la__error(LA_ERR_NON_FINITE,
                             "%s: key_max[%" PRId64 "] = %g (must be finite or -INFINITY)", op, i,
                             (double)key_max[i]);
    if (dec->key_max0 == 0.0f) return LA_OK; /* no stabiliser: the max stays 0 */
    memcpy(dec->key_max, key_max, (size_t)n * sizeof(float));
    return LA_OK;
}

la_status la_decoder_get_key_max(const la_decoder *dec, float *key_max) {
    static const char *const op = "la_decoder_get_key_max";
    la_status st;
    if ((st = la__check_ptr(op, "dec", dec)) || (st = la__check_ptr(op, "key_max", key_max)))
        return st;
    if (!dec->key_max)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: op %d (%s) keeps no key maximum (LA_OP_PERFORMER only)", op,
                         (int)dec->cfg.op, dec->entry->family);
    memcpy(key_max, dec->key_max, (size_t)(dec->cfg.N * dec->cfg.H) * sizeof(float));
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

/* ---- one sequence slot -------------------------------------------------- */

static la_status check_slot(const char *op, const la_decoder *dec, int64_t n) {
    la_status st = la__check_ptr(op, "dec", dec);
    if (st) return st;
    if (n < 0 || n >= dec->cfg.N)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: slot n = %" PRId64 " (must be in 0..%" PRId64
                         ", the decoder's N - 1)",
                         op, n, dec->cfg.N - 1);
    return LA_OK;
}

static size_t slot_state_n(const la_decoder *dec) { return dec->state_n / (size_t)dec->cfg.N; }
static size_t slot_norm_n(const la_decoder *dec) { return dec->norm_n / (size_t)dec->cfg.N; }

la_status la_decoder_reset_slot(la_decoder *dec, int64_t n) {
    la_status st = check_slot("la_decoder_reset_slot", dec, n);
    if (st) return st;
    memset(dec->state + (size_t)n * slot_state_n(dec), 0, slot_state_n(dec) * sizeof(float));
    if (dec->norm)
        memset(dec->norm + (size_t)n * slot_norm_n(dec), 0, slot_norm_n(dec) * sizeof(float));
    if (dec->key_max)
        for (int64_t h = 0; h < dec->cfg.H; h++) dec->key_max[n * dec->cfg.H + h] = dec->key_max0;
    return LA_OK;
}

la_status la_decoder_set_slot_state(la_decoder *dec, int64_t n, const float *state,
                                    const float *norm) {
    static const char *const op = "la_decoder_set_slot_state";
    la_status st = check_slot(op, dec, n);
    if (st) return st;
    if (norm && !dec->norm)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: norm given but this decoder has no normaliser state", op);
    if (state && (st = la__check_finite(op, "state", state, slot_state_n(dec)))) return st;
    if (norm && (st = la__check_finite(op, "norm", norm, slot_norm_n(dec)))) return st;
    if (state)
        memcpy(dec->state + (size_t)n * slot_state_n(dec), state,
               slot_state_n(dec) * sizeof(float));
    if (norm)
        memcpy(dec->norm + (size_t)n * slot_norm_n(dec), norm, slot_norm_n(dec) * sizeof(float));
    return LA_OK;
}

la_status la_decoder_get_slot_state(const la_decoder *dec, int64_t n, float *state, float *norm) {
    static const char *const op = "la_decoder_get_slot_state";
    la_status st = check_slot(op, dec, n);
    if (st) return st;
    if (norm && !dec->norm)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: norm asked for but this decoder has no normaliser state", op);
    if (state)
        memcpy(state, dec->state + (size_t)n * slot_state_n(dec),
               slot_state_n(dec) * sizeof(float));
    if (norm)
        memcpy(norm, dec->norm + (size_t)n * slot_norm_n(dec), slot_norm_n(dec) * sizeof(float));
    return LA_OK;
}

static la_status check_slot_key_max(const char *op, const la_decoder *dec, int64_t n,
                                    const void *key_max) {
    la_status st = check_slot(op, dec, n);
    if (!st) st = la__check_ptr(op, "key_max", key_max);
    if (!st && !dec->key_max)
        st = la__error(LA_ERR_INVALID_ARGUMENT,
                       "%s: op %d (%s) keeps no key maximum (LA_OP_PERFORMER only)", op,
                       (int)dec->cfg.op, dec->entry->family);
    return st;
}

la_status la_decoder_set_slot_key_max(la_decoder *dec, int64_t n, const float *key_max) {
    static const char *const op = "la_decoder_set_slot_key_max";
    la_status st = check_slot_key_max(op, dec, n, key_max);
    if (st) return st;
    for (int64_t h = 0; h < dec->cfg.H; h++)
        if (key_max[h] != key_max[h] || key_max[h] == INFINITY)
            return la__error(LA_ERR_NON_FINITE,
                             "%s: key_max[%" PRId64 "] = %g (must be finite or -INFINITY)", op, h,
                             (double)key_max[h]);
    if (dec->key_max0 == 0.0f) return LA_OK; /* no stabiliser: the max stays 0 */
    memcpy(dec->key_max + n * dec->cfg.H, key_max, (size_t)dec->cfg.H * sizeof(float));
    return LA_OK;
}

la_status la_decoder_get_slot_key_max(const la_decoder *dec, int64_t n, float *key_max) {
    static const char *const op = "la_decoder_get_slot_key_max";
    la_status st = check_slot_key_max(op, dec, n, key_max);
    if (st) return st;
    memcpy(key_max, dec->key_max + n * dec->cfg.H, (size_t)dec->cfg.H * sizeof(float));
    return LA_OK;
}

/* ---- the step ----------------------------------------------------------- */

typedef struct {
    const la_decoder *dec;
    float *o;
    const float *q, *k, *v, *g, *g_gamma, *beta;
    la_ctx *ctx;
} step_job;

static void step_task(void *p, int64_t task, int tid) {
    const step_job *j = p;
    const la_decoder_config *c = &j->dec->cfg;
    const unsigned needs = j->dec->entry->needs;
    const int64_t HS = c->HV, K = c->K, V = c->V, group = HS / c->H;
    const int64_t n = task / HS, h = task % HS, hq = h / group;
    la__step_io io;
    io.cfg = c;
    const int64_t R = j->dec->rows;
    io.S = j->dec->state + (size_t)task * (size_t)(R * V);
    io.z = j->dec->norm ? j->dec->norm + (size_t)task * (size_t)R : NULL;
    io.o = j->o + (size_t)task * (size_t)V;
    io.q = j->q + (size_t)(n * c->H + hq) * (size_t)K;
    io.k = j->k + (size_t)(n * c->H + hq) * (size_t)K;
    io.v = j->v + (size_t)task * (size_t)V;
    io.g = NULL;
    if (j->g) io.g = (needs & LA__NEED_GK) ? j->g + (size_t)task * (size_t)K : j->g + task;
    io.g_gamma = j->g_gamma ? j->g_gamma[h] : 0.0f;
    io.beta = j->beta ? j->beta[task] : 0.0f;
    io.work = la__scratch(j->ctx, tid);
    io.data = j->dec->data;
    io.key_max = j->dec->key_max ? j->dec->key_max + task : NULL;
    j->dec->entry->step(&io);
}

/* la_decoder_step, with op naming the public function in messages. */
static la_status decoder_step(const char *op, la_ctx *ctx, la_decoder *dec, float *o,
                              const float *q, const float *k, const float *v, const float *g,
                              const float *g_gamma, const float *beta) {
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
    const unsigned needs = dec->entry->needs;
    const int uses_g = (needs & (LA__NEED_G | LA__NEED_G_OPT | LA__NEED_GK)) != 0;
    const int needs_g = (needs & (LA__NEED_G | LA__NEED_GK)) != 0;
    const int uses_beta = (needs & LA__NEED_BETA) != 0;
    const char *fam = dec->entry->family;
    if (needs_g && (st = la__check_ptr(op, "g", g))) return st;
    if (uses_beta && (st = la__check_ptr(op, "beta", beta))) return st;
    if (g && !uses_g)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: g given but op %d (%s) takes no gate", op,
                         (int)c->op, fam);
    if (g_gamma && !(needs & LA__NEED_G_GAMMA))
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: g_gamma given but op %d (%s) takes none", op,
                         (int)c->op, fam);
    if (beta && !uses_beta)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: beta given but op %d (%s) takes none", op,
                         (int)c->op, fam);
    if (g &&
        (st = la__check_log_gate(op, "g", g, (needs & LA__NEED_GK) ? nhs * (size_t)c->K : nhs)))
        return st;
    if (g_gamma && (st = la__check_log_gate(op, "g_gamma", g_gamma, (size_t)c->H))) return st;
    if (beta && (st = la__check_beta(op, "beta", beta, nhs))) return st;
    const la__decode_ext *x = dec->ext;
    if (x && x->check_step && (st = x->check_step(op, dec->data, q, k, c->N, c->H))) return st;
    const size_t work = x && x->work_bytes ? x->work_bytes(c, dec->data)
                                           : LA__STEP_WORK_FLOATS(c->K, c->V) * sizeof(float);
    if ((st = la__scratch_reserve(ctx, work))) return st;
    step_job j = {dec, o, q, k, v, g, g_gamma, beta, ctx};
    /* a task reads and writes one head's state (twice for the delta rules) */
    la__parallel_for_sized(ctx, (int64_t)nhs, 2 * c->K * c->V * (int64_t)sizeof(float),
                           step_task, &j);
    return LA_OK;
}

la_status la_decoder_step(la_ctx *ctx, la_decoder *dec, float *o, const float *q, const float *k,
                          const float *v, const float *g, const float *g_gamma, const float *beta) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported("la_decoder_step (use la_state_step)");
    return decoder_step("la_decoder_step", ctx, dec, o, q, k, v, g, g_gamma, beta);
}

/* la_state_step on the CPU: the step above over a decoder that views the
 * caller's state instead of owning one. Families whose decoder keeps data
 * of its own (hooks: the causal Performer's W and key maximum) need a
 * la_decoder. */
la_status la__decoder_view_step(const char *fn, la_ctx *ctx, const la_decoder_config *cfg,
                                float *state, float *norm, float *o, const float *q,
                                const float *k, const float *v, const float *g,
                                const float *g_gamma, const float *beta) {
    la_status st;
    la_decoder view;
    memset(&view, 0, sizeof view);
    if ((st = resolve_config(fn, cfg, &view.cfg, &view.entry))) return st;
    const la_decoder_config *c = &view.cfg;
    if (la__decode_ext_get((int)c->op))
        return la__error(LA_ERR_UNSUPPORTED,
                         "%s: op %d (%s) keeps family data in its decoder: use la_decoder_step",
                         fn, (int)c->op, view.entry->family);
    const int normalized = (view.entry->needs & LA__NEED_NORMALIZER) && c->normalize;
    if (normalized && (st = la__check_ptr(fn, "norm", norm))) return st;
    if (!normalized && norm)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: norm given but only normalised linear attention has one", fn);
    view.rows = c->K;
    view.state = state;
    view.state_n = (size_t)c->N * (size_t)c->HV * (size_t)c->K * (size_t)c->V;
    view.norm = normalized ? norm : NULL;
    view.norm_n = normalized ? (size_t)c->N * (size_t)c->H * (size_t)c->K : 0;
    if ((st = la__check_finite(fn, "state", state, view.state_n)) ||
        (normalized && (st = la__check_finite(fn, "norm", norm, view.norm_n))))
        return st;
    return decoder_step(fn, ctx, &view, o, q, k, v, g, g_gamma, beta);
}
