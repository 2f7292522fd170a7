/* Decoding the causal Performer: what la_decoder keeps for LA_OP_PERFORMER
 * (a copy of W and the resolved feature map) and its per-(sequence, head)
 * step, which is la__performer_token, the recurrent form's arithmetic. */
#include "performer.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct la__pf_decode {
    la__rf_map map;
    la_rf_opts rf;
    float *W; /* [m, K], owned */
};

la_status la__performer_dec_create(const char *op, const la_decoder_config *cfg,
                                   la__pf_decode **out, int64_t *M) {
    la_status st;
    if ((st = la__check_ptr(op, "cfg.rf_W", cfg->rf_W))) return st;
    if (cfg->rf_m < 1)
        return la__error(LA_ERR_INVALID_SIZE, "%s: cfg.rf_m = %" PRId64 " (must be >= 1)", op,
                         cfg->rf_m);
    size_t nw;
    if ((st = la__numel(op, "cfg.rf_W", &nw, cfg->rf_m, cfg->K, 1, 1))) return st;
    la__pf_decode *d = calloc(1, sizeof *d);
    if (!d) return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory", op);
    d->W = malloc(nw * sizeof *d->W);
    if (!d->W) {
        free(d);
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory for cfg.rf_W (%zu floats)", op,
                         nw);
    }
    memcpy(d->W, cfg->rf_W, nw * sizeof *d->W);
    d->rf = cfg->rf;
    d->rf.role = LA_RF_KEY;
    /* validates rf and W (a zero x of one token passes every bound) */
    float *x0 = calloc((size_t)cfg->K, sizeof *x0);
    la_dims one = {.B = 1, .T = 1, .H = 1, .K = cfg->K, .V = 1};
    st = x0 ? la__rf_map_check(op, &d->rf, &one, x0, d->W, cfg->rf_m, &d->map)
            : la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory", op);
    free(x0);
    if (st) {
        la__performer_dec_destroy(d);
        return st;
    }
    *M = d->map.M;
    *out = d;
    return LA_OK;
}

void la__performer_dec_destroy(la__pf_decode *d) {
    if (!d) return;
    free(d->W);
    free(d);
}

int la__performer_dec_stabilized(const la__pf_decode *d) { return d->map.stabilized; }

la_status la__performer_dec_check(const char *op, const la__pf_decode *d, const float *q,
                                  const float *k, int64_t N, int64_t H) {
    la_dims dims = {.B = N, .T = 1, .H = H, .K = d->map.d, .V = 1};
    la__rf_map tmp;
    la_status st = la__rf_map_check(op, &d->rf, &dims, q, d->W, d->map.m, &tmp);
    if (st) return st;
    return la__rf_map_check(op, &d->rf, &dims, k, d->W, d->map.m, &tmp);
}

size_t la__performer_dec_work(const la__pf_decode *d) {
    return 2 * LA__RF_ROW_DOUBLES(d->map.d, d->map.m) * sizeof(float) +
           LA__PF_TOKEN_FLOATS(d->map.M) * sizeof(float);
}

void la__performer_dec_step(const la__pf_decode *d, float eps, int64_t V, float *S, float *z,
                            float *mu, float *o, const float *q, const float *k, const float *v,
                            void *work) {
    double *dw = work;
    float *fw = (float *)(dw + LA__RF_ROW_DOUBLES(d->map.d, d->map.m));
    la__performer_token(&d->map, eps, V, S, z, mu, o, q, k, v, fw, dw);
}
