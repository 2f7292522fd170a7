/* Shared between the model's source files: parameter slots per layer and
 * the saved activations. Not a public header. */
#ifndef LINATTN_MODEL_INTERNAL_H
#define LINATTN_MODEL_INTERNAL_H

#include "model.h"
#include "pool.h"

/* Tensors of one layer, in table order (size 0 when a mixer has none). */
enum {
    S_NORM1 = 0, /* [D] */
    S_WQ,        /* [D, HK] */
    S_WK,        /* [D, HK] */
    S_WV,        /* [D, HK] */
    S_WO,        /* [HK, D] */
    S_CQ,        /* [ks, HK] short conv on q */
    S_CK,        /* [ks, HK] */
    S_CV,        /* [ks, HK] */
    S_WG,        /* [D, G]  gate projection (G = gate_width) */
    S_BG,        /* [G]     gate bias (GLA) / dt_bias (GDN, KDA) */
    S_ALOG,      /* [H]     A_log (GDN, KDA) */
    S_WB,        /* [D, H]  beta projection (delta rules) */
    S_BB,        /* [H]     beta bias */
    S_NORM2,     /* [D] */
    S_W1,        /* [D, F] */
    S_W3,        /* [D, F] */
    S_W2,        /* [F, D] */
    S_COUNT
};
#define T_EMBED 0
#define T_LAYER(l, s) (1 + (l)*S_COUNT + (s))
#define T_NORMF(nl) (1 + (nl)*S_COUNT)

/* Width of the gate projection: per channel (GLA, KDA), per head (GDN), 0. */
int64_t lm_gate_width(const lm_config *c);
int lm_has_beta(const lm_config *c);
/* Floats of all parameters the config implies (no allocation). */
int64_t lm_config_n_params(const lm_config *c);

/* Saved activations of one layer ([BT, *] row-major). */
typedef struct lm_layer_acts {
    float *x_in, *n1, *r1;  /* input, normed, rstd */
    float *qp, *kp, *vp;    /* projections (conv inputs) */
    float *qc, *kc, *vc;    /* conv pre-activations (conv only) */
    float *q, *k, *v;       /* mixer inputs */
    float *gz, *g;          /* gate pre-activation, log gate */
    float *bz, *beta;       /* beta pre-activation, beta */
    float *phq, *phk;       /* Performer features [BT, H, M] */
    float *o;               /* mixer output [BT, HK] */
    float *x_mid, *n2, *r2; /* after the mixer residual */
    float *h1, *h3, *a;     /* MLP [BT, F] */
} lm_layer_acts;

typedef struct lm_acts {
    int64_t B, T, cap; /* cap: rows allocated */
    float *mem, *gmem;
    lm_layer_acts *layers;
    float *x_out, *nf, *rf, *logits;
    int32_t *tokens, *targets;
    int64_t n_counted;
    /* backward scratch */
    float *dx, *dn, *dq, *dk, *dv, *dqp, *dkp, *dvp, *dg, *dbeta, *dphq, *dphk, *dout;
    float *dh1, *dh3, *da, *dlogits, *wt, *xt;
    float *g_gamma; /* RetNet decay [H] */
} lm_acts;

/* Frees the activation buffers (the struct stays). */
void lm_acts_release(lm_acts *a);

/* Mixer forward/backward on one layer's saved activations. */
la_status lm_mixer_forward(lm_model *m, lm_layer_acts *a, int64_t B, int64_t T);
/* From d_o (in acts->dout) to dq, dk, dv, dg, dbeta. */
la_status lm_mixer_backward(lm_model *m, lm_layer_acts *a, int64_t B, int64_t T);

/* Log gates g [rows, G] from pre-activations gz (bias included). */
void lm_gates_forward(const lm_model *m, int l, const float *gz, float *g, int64_t rows);
/* Options of the linear-attention op for LM_LINEAR / LM_PERFORMER. */
la_linear_attn_opts lm_linear_opts(const lm_model *m);

/* Tensor pointer helpers. */
static inline float *lm_p(const lm_model *m, int t) { return m->params + m->table[t].offset; }
static inline float *lm_gp(const lm_model *m, int t) { return m->grads + m->table[t].offset; }

/* Performer features the model uses (query stabilised per token, keys
 * unstabilised so that decoding token by token equals the forward). */
la_rf_opts lm_performer_rf(int role);

/* Sets the thread-local error through a failing public call is not
 * possible, so the model reports its own errors with this. */
la_status lm_fail(la_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
