/*
 * model.h — a small decoder-only language model written on the public
 * linattn API (linattn.h) only, as any user of the library would.
 *
 *   B batch   T time steps   D d_model   H heads   K = V head dimension
 *   F d_ff (SwiGLU hidden)   Vt vocabulary size   BT = B*T rows
 *
 * Model: x = E[tok]; per layer: x += Wo mixer(conv(RMSNorm(x) W{q,k,v}));
 * x += W2 (silu(n W1) * (n W3)) with n = RMSNorm(x); logits = RMSNorm(x) E^T
 * (tied head). Every weight is float32 and lives in one allocation pointed
 * into by a size table (lm_model.table), so a checkpoint and the optimizer
 * are flat loops. The forward keeps exactly what the backward needs.
 *
 * Determinism: the dense kernels here compute every output element in a fixed
 * order (independent of the number of rows or threads), and the mixers run
 * on linattn ops that are bitwise identical for any thread count.
 */
#ifndef LINATTN_MODEL_H
#define LINATTN_MODEL_H

#include "linattn.h"

#include <stddef.h>
#include <stdint.h>

/* Errors: model functions return la_status; lm_error() is the message of the
 * last failure on this thread (it includes la_last_error() of a failing
 * linattn call). The model never prints, aborts or exits. */
const char *lm_error(void);

typedef enum lm_mixer {
    LM_SOFTMAX = 0,   /* exact causal softmax attention (streaming form) */
    LM_LINEAR = 1,    /* kernel linear attention (feature_map below) */
    LM_PERFORMER = 2, /* FAVOR+ positive random features, normalised */
    LM_RETNET = 3,    /* simple GLA with RetNet's fixed per-head decay */
    LM_GLA = 4,       /* GLA: g = logsigmoid(x Wg + bg) / 16 per channel */
    LM_DELTANET = 5,  /* DeltaNet: beta = sigmoid(x Wb + bb), l2-normed q/k */
    LM_GDN = 6,       /* Gated DeltaNet: g = -exp(A_log) softplus(x Wg + dt) */
    LM_KDA = 7,       /* Kimi delta attention (needs la_kda_*; see lm_mixer_available) */
    LM_MIXER_COUNT = 8
} lm_mixer;

/* "softmax", "linear", ... ; NULL for an unknown value. */
const char *lm_mixer_name(int mixer);
/* The mixer with that name, or -1. */
int lm_mixer_from_name(const char *name);
/* 1 if this build can run the mixer (KDA needs the la_kda_* functions). */
int lm_mixer_available(int mixer);

/* Everything that fixes the parameter shapes (saved in checkpoints). */
typedef struct lm_config {
    int32_t vocab;   /* Vt */
    int32_t d_model; /* D */
    int32_t n_layers;
    int32_t n_heads;     /* H */
    int32_t head_dim;    /* K = V */
    int32_t d_ff;        /* F */
    int32_t mixer;       /* lm_mixer */
    int32_t feature_map; /* LM_LINEAR: la_feature_map (elu1 is normalised,
                            relu/identity are unnormalised, scale K^-1/2) */
    int32_t conv;        /* short causal depthwise conv width on q,k,v
                            (then SiLU); 0 = none */
    int32_t performer_m; /* LM_PERFORMER: projection rows m (features M = m) */
    uint64_t seed;       /* weight init and Performer projection */
    float norm_eps;      /* RMSNorm epsilon */
} lm_config;

/* Small defaults: Vt 64, D 64, 2 layers, 4 heads of 16, F 128, conv 4. */
lm_config lm_config_default(int mixer, int vocab);
/* LA_OK or an error naming the bad field (sizes must be positive, bounded
 * so that every product fits comfortably in int64). */
la_status lm_config_validate(const lm_config *c);

/* One named tensor in the flat parameter buffer. */
typedef struct lm_tensor {
    char name[32];
    int64_t size;   /* floats */
    int64_t offset; /* floats from the start of params */
} lm_tensor;

typedef struct lm_model {
    lm_config cfg;
    la_form form; /* form for linear ops (CHUNK default; RECURRENT
                     makes training forward == decoder bit for bit) */
    int n_tensors;
    lm_tensor *table;
    int64_t n_params;
    float *params;        /* [n_params] */
    float *grads;         /* [n_params], written by lm_backward */
    float *performer_W;   /* [performer_m, K] fixed random projection */
    la_ctx *ctx;          /* borrowed */
    struct lm_pool *pool; /* threads of the dense layers (as many as ctx) */
    struct lm_acts *acts;
} lm_model;

/* Allocates and initialises from cfg.seed (same seed, same weights). */
la_status lm_model_create(lm_model **out, const lm_config *cfg, la_ctx *ctx);
void lm_model_destroy(lm_model *m);
/* The tensor called name, or NULL. */
const lm_tensor *lm_find_tensor(const lm_model *m, const char *name);

/* Forward over tokens [B,T] (values in [0, vocab)); targets [B,T] with -1 =
 * ignored. Writes *loss (mean cross-entropy over counted targets, 0 if none),
 * *n_counted, *n_correct (argmax == target). logits_out [B,T,Vt] optional.
 * Keeps activations for lm_backward. */
la_status lm_forward(lm_model *m, const int32_t *tokens, const int32_t *targets, int64_t B,
                     int64_t T, double *loss, int64_t *n_counted, int64_t *n_correct,
                     float *logits_out);
/* Gradients of the last forward's mean loss into m->grads (overwritten). */
la_status lm_backward(lm_model *m);

/* ---- tasks ---- */
typedef enum lm_task {
    LM_TASK_MQAR = 0,
    LM_TASK_COPY = 1,
    LM_TASK_LISTOPS = 2,
    LM_TASK_BYTES = 3
} lm_task;
const char *lm_task_name(int task);
int lm_task_from_name(const char *name);

typedef struct lm_task_cfg {
    int task;
    int64_t T;                 /* sequence length */
    int pairs;                 /* MQAR: key-value pairs */
    int n_keys;                /* MQAR: key vocabulary (values use as many) */
    int copy_tokens;           /* copy: tokens to copy */
    int copy_vocab;            /* copy: data vocabulary */
    int listops_depth;         /* listops: maximum nesting */
    const unsigned char *text; /* bytes: the corpus */
    int64_t text_len;
    int64_t text_split; /* bytes: held-out data starts here */
} lm_task_cfg;

/* Vocabulary the task needs. */
int lm_task_vocab(const lm_task_cfg *t);
/* Fills tokens/targets [B,T] (targets -1 where not scored). heldout selects
 * the evaluation split for bytes (others draw from a different seed). */
la_status lm_task_batch(const lm_task_cfg *t, la_rng *rng, int heldout, int64_t B, int32_t *tokens,
                        int32_t *targets);

typedef struct lm_train_state {
    int64_t step;
    la_rng data_rng; /* training data stream */
    int has_opt;     /* set by lm_checkpoint_load */
} lm_train_state;

/* ---- optimizer ---- */
typedef struct lm_adamw {
    float lr_max, lr_min, beta1, beta2, eps, weight_decay, clip;
    int64_t warmup, total_steps;
    int64_t step;   /* steps taken */
    float *m1, *m2; /* [n_params] moments */
    int64_t n;
} lm_adamw;

la_status lm_adamw_init(lm_adamw *opt, int64_t n_params, float lr, int64_t warmup,
                        int64_t total_steps);
void lm_adamw_free(lm_adamw *opt);
/* Learning rate at step s: linear warm-up to lr_max, cosine to lr_min. */
float lm_lr_at(const lm_adamw *opt, int64_t s);
/* Clips the global gradient norm to opt->clip (if > 0), then one AdamW step
 * (decoupled weight decay on matrices only, not on norms/biases). Returns
 * the gradient norm before clipping in *grad_norm (optional). */
la_status lm_adamw_step(lm_adamw *opt, lm_model *m, double *grad_norm);

/* ---- training ---- */
/* Draws a batch from ts->data_rng, forward, backward, AdamW; ts->step++.
 * *acc (optional): fraction of scored targets predicted (argmax). */
la_status lm_train_step(lm_model *m, lm_adamw *opt, const lm_task_cfg *task, lm_train_state *ts,
                        int64_t B, double *loss, double *acc);
/* Mean loss and accuracy over n_batches held-out batches drawn from seed
 * (the bytes task reads its held-out split). */
la_status lm_evaluate(lm_model *m, const lm_task_cfg *task, uint64_t seed, int64_t B, int n_batches,
                      double *loss, double *acc);

/* ---- checkpoints (format: docs/CHECKPOINT.md) ---- */
/* Writes atomically: path.tmp.<pid> in the same folder, fsync, rename,
 * fsync of the folder. opt may be NULL (weights only). */
la_status lm_checkpoint_save(const char *path, const lm_model *m, const lm_adamw *opt,
                             const lm_train_state *ts);
/* Validates everything (magic, version, sizes against the file's real size,
 * checksum, config, tensor table) before creating anything; LA_ERR_IO with
 * a message otherwise. Creates *out (with ctx); fills opt (moments and
 * hyperparameters) if non-NULL and the file has them, and ts if non-NULL. */
la_status lm_checkpoint_load(const char *path, lm_model **out, la_ctx *ctx, lm_adamw *opt,
                             lm_train_state *ts);

/* ---- generation ---- */
typedef struct lm_gen lm_gen;
/* State for N sequences decoded in lock step: la_decoder per layer for the
 * linear mixers, a KV cache of max_len tokens for softmax. */
la_status lm_gen_create(lm_gen **out, lm_model *m, int64_t N, int64_t max_len);
void lm_gen_destroy(lm_gen *g);
/* Feeds tokens[N] (one per sequence), writes logits [N,Vt]. */
la_status lm_gen_step(lm_gen *g, const int32_t *tokens, float *logits);
/* Bytes of recurrent state / KV cache (+ conv buffers) held now. */
int64_t lm_gen_state_bytes(const lm_gen *g);

#endif
