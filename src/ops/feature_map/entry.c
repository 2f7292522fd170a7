/* The registry's op entries of the causal Performer (recurrent and chunk
 * forms, with state and the running key maximum) and its decoding entry
 * (LA_OP_PERFORMER):
 * the decoder keeps a copy of W and the resolved feature map as family
 * data, states of M = la_rf_num_features rows per head and a running key
 * maximum; the step is la__performer_token, the recurrent form's
 * arithmetic, so decoding equals that form bit for bit. */
#include "../registry.h"
#include "feature_map.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct pf_decode {
    la__rf_map map;
    la_rf_opts rf;
    float *W; /* [m, K], owned */
} pf_decode;

static la_status configure(const char *fn, la_decoder_config *c) {
    if (c->eps == 0) c->eps = LA_LINEAR_ATTN_DEFAULT_EPS;
    if (!(c->eps > 0) || c->eps != c->eps || c->eps > 1e30f)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: cfg.eps = %g (must be > 0 and finite)", fn,
                         (double)c->eps);
    c->normalize = 1; /* Performer attention is normalised: the decoder keeps z */
    return LA_OK;
}

static void destroy(void *data) {
    pf_decode *d = data;
    if (!d) return;
    free(d->W);
    free(d);
}

static la_status create(const char *fn, const la_decoder_config *cfg, void **out, int64_t *rows) {
    la_status st;
    if ((st = la__check_ptr(fn, "cfg.rf_W", cfg->rf_W))) return st;
    if (cfg->rf_m < 1)
        return la__error(LA_ERR_INVALID_SIZE, "%s: cfg.rf_m = %" PRId64 " (must be >= 1)", fn,
                         cfg->rf_m);
    size_t nw;
    if ((st = la__numel(fn, "cfg.rf_W", &nw, cfg->rf_m, cfg->K, 1, 1))) return st;
    pf_decode *d = calloc(1, sizeof *d);
    float *x0 = calloc((size_t)cfg->K, sizeof *x0);
    if (d) d->W = malloc(nw * sizeof *d->W);
    if (!d || !x0 || !d->W) {
        destroy(d);
        free(x0);
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory for cfg.rf_W (%zu floats)", fn,
                         nw);
    }
    memcpy(d->W, cfg->rf_W, nw * sizeof *d->W);
    d->rf = cfg->rf;
    d->rf.role = LA_RF_KEY;
    /* validates rf and W (a zero token passes every input bound) */
    la_dims one = {.B = 1, .T = 1, .H = 1, .K = cfg->K, .V = 1};
    st = la__rf_map_check(fn, &d->rf, &one, x0, d->W, cfg->rf_m, &d->map);
    free(x0);
    if (st) {
        destroy(d);
        return st;
    }
    *rows = d->map.M;
    *out = d;
    return LA_OK;
}

/* The op's input checks on one step's q, k (finite, and the float32
 * overflow bound when not stabilised). */
static la_status check_step(const char *fn, const void *data, const float *q, const float *k,
                            int64_t N, int64_t H) {
    const pf_decode *d = data;
    la_dims dims = {.B = N, .T = 1, .H = H, .K = d->map.d, .V = 1};
    la__rf_map tmp;
    la_status st = la__rf_map_check(fn, &d->rf, &dims, q, d->W, d->map.m, &tmp);
    if (st) return st;
    return la__rf_map_check(fn, &d->rf, &dims, k, d->W, d->map.m, &tmp);
}

static size_t work_bytes(const la_decoder_config *cfg, const void *data) {
    const pf_decode *d = data;
    (void)cfg;
    return LA__RF_ROW_DOUBLES(d->map.d, d->map.m) * sizeof(double) +
           LA__PF_TOKEN_FLOATS(d->map.M) * sizeof(float);
}

static float key_max_reset(const void *data) {
    const pf_decode *d = data;
    return d->map.stabilized ? -INFINITY : 0.0f;
}

static void step(const la__step_io *io) {
    const pf_decode *d = io->data;
    double *dw = (double *)(void *)io->work;
    float *fw = (float *)(dw + LA__RF_ROW_DOUBLES(d->map.d, d->map.m));
    la__performer_token(&d->map, io->cfg->eps, io->cfg->V, io->S, io->z, io->key_max, io->o, io->q,
                        io->k, io->v, fw, dw);
}

/* Per token and head, in units of K*V with M = m = K: the state update and
 * read-out (4 M V) and two projections (4 m K). */
const la__decode_entry la__decode_performer = {
    LA_OP_PERFORMER, "performer", LA__NEED_NORMALIZER | LA__NEED_RF, 8.0, configure, step};

const la__decode_ext la__decode_ext_performer = {create, destroy, check_step, work_bytes,
                                                 key_max_reset};

/* ---- op entries: la_performer_attn_{forward,backward}_state ------------ */

/* Per token and head, with M = m = K (the registry's convention): the two
 * projections (2 m K each), then normalised linear attention on M
 * features: recurrent 4 M V (+ 4 M for z); chunk as the linear-attention
 * chunk form. The exponentials are not counted. Backward about twice the
 * forward on top. */
static double flops_recurrent(double T, double K, double V, double C, int backward) {
    (void)C;
    return T * (4 * K * K + 4 * K * V + 4 * K) * (backward ? 3 : 1);
}
static double flops_chunk(double T, double K, double V, double C, int backward) {
    return T * (4 * K * K + (C + 1) * (K + V + 1) + 4 * K * (V + 1)) * (backward ? 3 : 1);
}

static la_status run(la_ctx *ctx, const la__op_args *a, la_form form, int bwd) {
    la_linear_attn_opts o = la_linear_attn_opts_default();
    o.causal = 1;
    o.form = form;
    o.normalize = 1;
    o.feature_map = LA_FEATURE_IDENTITY;
    o.eps = a->eps ? a->eps : LA_LINEAR_ATTN_DEFAULT_EPS;
    o.chunk_size = form == LA_FORM_CHUNK ? a->chunk_size : 0;
    if (!bwd)
        return la_performer_attn_forward_state(
            ctx, &a->rf, &o, &a->dims, a->o, a->final_state, a->final_norm, a->final_key_max, a->q,
            a->k, a->v, a->rf_W, a->rf_m, a->initial_state, a->initial_norm, a->initial_key_max);
    return la_performer_attn_backward_state(
        ctx, &a->rf, &o, &a->dims, a->dq, a->dk, a->dv, a->d_initial_state, a->d_initial_norm,
        a->d_o, a->d_final_state, a->d_final_norm, a->q, a->k, a->v, a->rf_W, a->rf_m,
        a->initial_state, a->initial_norm, a->initial_key_max);
}

static la_status fwd_rec(la_ctx *c, const la__op_args *a) {
    return run(c, a, LA_FORM_RECURRENT, 0);
}
static la_status bwd_rec(la_ctx *c, const la__op_args *a) {
    return run(c, a, LA_FORM_RECURRENT, 1);
}
static la_status fwd_chunk(la_ctx *c, const la__op_args *a) { return run(c, a, LA_FORM_CHUNK, 0); }
static la_status bwd_chunk(la_ctx *c, const la__op_args *a) { return run(c, a, LA_FORM_CHUNK, 1); }

#define PF_NEEDS (LA__NEED_RF | LA__NEED_NORMALIZER | LA__HAS_STATE | LA__CAUSAL)

const la__op_entry la__entry_performer_recurrent = {LA__OP_PERFORMER_RECURRENT,
                                                    "performer-recurrent",
                                                    "performer",
                                                    LA_FORM_RECURRENT,
                                                    PF_NEEDS,
                                                    LA_OP_PERFORMER,
                                                    flops_recurrent,
                                                    fwd_rec,
                                                    bwd_rec};
const la__op_entry la__entry_performer_chunk = {
    LA__OP_PERFORMER_CHUNK, "performer-chunk", "performer", LA_FORM_CHUNK, PF_NEEDS,
    LA_OP_PERFORMER,        flops_chunk,       fwd_chunk,   bwd_chunk};
