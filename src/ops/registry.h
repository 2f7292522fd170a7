/* The op registry: one entry per (family, form) and one decoding step per
 * family, so that every tool, test and the decoder iterate one table instead
 * of keeping lists of their own. Internal (la__ prefix, hidden symbols);
 * `linattn check`, `linattn bench`, tests/test_registry_ops.c, the fuzzer
 * (tests/fuzz/) and la_decoder_* all go through it.
 *
 * How to add an op family
 * -----------------------
 *  1. Write the family under src/ops/<family>/ (public API in linattn.h).
 *  2. In src/ops/<family>/entry.c define one `const la__op_entry` per form:
 *     name "<family>-<form>", what it needs (LA__NEED_* flags), its FLOP
 *     formula per head (forward; forward+backward), and two adapters that
 *     call the public forward/backward with the fields of la__op_args.
 *     If the family decodes, also define a `const la__decode_entry` with a
 *     la__step_fn that runs one token of one (sequence, head) with exactly
 *     the recurrent form's arithmetic.
 *  3. Here: add LA__OP_<FAMILY>_<FORM> to la__op_id (before LA__OP_COUNT)
 *     and declare the entries; in registry.c put them in the tables (the
 *     _Static_asserts there fail until the table and the enum agree). A
 *     decoding family appends its la_op value to linattn.h's la_op.
 *  4. In src/ref/ref_ops.c add the whole-tensor float64 reference (forward,
 *     backward) of the new ids (another _Static_assert checks the count).
 * Then `linattn check` (registry section), `linattn bench` (including the
 * decoding step), tests/test_registry_ops.c and the fuzzer cover the new
 * ops with no other list to edit. Family-specific tests stay in tests/.
 *
 * Dependencies run one way: tools -> ops (this table) -> kernels -> core.
 * core/ names no family. */
#ifndef LINATTN_OPS_REGISTRY_H
#define LINATTN_OPS_REGISTRY_H

#include "../core/internal.h"

#include <stddef.h>
#include <stdint.h>

typedef enum la__op_id {
    LA__OP_SOFTMAX_TEXTBOOK = 0,
    LA__OP_SOFTMAX_STREAMING,
    LA__OP_LINEAR_ATTN_PARALLEL,
    LA__OP_LINEAR_ATTN_RECURRENT,
    LA__OP_LINEAR_ATTN_CHUNK,
    LA__OP_LINEAR_ATTN_NONCAUSAL,
    LA__OP_SIMPLE_GLA_RECURRENT,
    LA__OP_SIMPLE_GLA_CHUNK,
    LA__OP_GLA_RECURRENT,
    LA__OP_GLA_CHUNK,
    LA__OP_DELTA_RULE_RECURRENT,
    LA__OP_DELTA_RULE_CHUNK,
    LA__OP_GATED_DELTA_RULE_RECURRENT,
    LA__OP_GATED_DELTA_RULE_CHUNK,
    LA__OP_KDA_RECURRENT,
    LA__OP_KDA_CHUNK,
    LA__OP_PERFORMER_RECURRENT,
    LA__OP_PERFORMER_CHUNK,
    LA__OP_COUNT
} la__op_id;

/* What an op reads besides q, k, v (flags of la__op_entry.needs and
 * la__decode_entry.needs). Gate and beta tensors are laid out over the
 * state heads HS (HV when the op takes value heads, else H). */
enum {
    LA__NEED_G = 1u << 0,           /* scalar log-gate g [B,T,HS], required */
    LA__NEED_G_OPT = 1u << 1,       /* scalar log-gate g [B,T,HS], optional */
    LA__NEED_GK = 1u << 2,          /* per-key log-gate g [B,T,HS,K], required */
    LA__NEED_G_GAMMA = 1u << 3,     /* constant log-decay g_gamma [H], optional */
    LA__NEED_BETA = 1u << 4,        /* delta-rule beta [B,T,HS] in [0, 2] */
    LA__NEED_HV = 1u << 5,          /* accepts value heads HV != H */
    LA__NEED_FEATURE_MAP = 1u << 6, /* reads feature_map (linear attention) */
    LA__NEED_NORMALIZER = 1u << 7,  /* reads normalize; state z [N,H,K] when on */
    LA__NEED_L2NORM = 1u << 8,      /* reads use_qk_l2norm */
    LA__HAS_STATE = 1u << 9,        /* initial/final state [N,HS,K,V] */
    LA__CAUSAL = 1u << 10,          /* causal (else every token sees the whole sequence) */
    LA__QUADRATIC = 1u << 11,       /* O(T^2) per head */
    LA__HAS_LSE = 1u << 12,         /* optional log-sum-exp output lse [B,T,H] */
    LA__NEED_RF = 1u << 13,         /* random features: rf, rf_W [rf_m, K], rf_m; the state
                                       has M = la_rf_num_features rows (la__op_state_rows)
                                       and a running key maximum [N,H] */
    LA__SAVES = 1u << 14            /* passes la__op_args.saved to its forward and backward
                                       (the chunk forms that fill la_saved on a CPU context,
                                       include/linattn.h "Saved for backward") */
};

/* Uniform arguments of every op; what an entry does not need stays
 * zero/NULL. Options hold 0 for "default" as in the public structs. */
typedef struct la__op_args {
    la_dims dims;
    /* options */
    float scale;                /* 0: K^-1/2 */
    int64_t chunk_size;         /* chunk forms; 0: LA_DEFAULT_CHUNK */
    int use_qk_l2norm;          /* LA__NEED_L2NORM */
    la_feature_map feature_map; /* LA__NEED_FEATURE_MAP */
    int normalize;              /* LA__NEED_NORMALIZER */
    float eps;                  /* normalised linear attention; 0: default */
    /* forward */
    float *o, *final_state, *final_norm, *lse;
    const float *q, *k, *v, *g, *g_gamma, *beta, *initial_state, *initial_norm;
    /* backward (inputs as in the forward) */
    float *dq, *dk, *dv, *dg, *dg_gamma, *dbeta, *d_initial_state, *d_initial_norm;
    const float *d_o, *d_final_state, *d_final_norm;
    /* random features (LA__NEED_RF, the causal Performer): the feature map
     * (role ignored), the projection W [rf_m, K]; the running key maximum
     * [N,H] the state is relative to: initial (NULL = -INFINITY, no key
     * yet; required with an initial state) and final (optional). */
    la_rf_opts rf;
    const float *rf_W;
    int64_t rf_m;
    const float *initial_key_max;
    float *final_key_max;
    /* saved for backward (LA__SAVES; ignored otherwise): given to the forward
     * and the backward, as opts.saved */
    la_saved *saved;
} la__op_args;

typedef la_status (*la__op_fn)(la_ctx *ctx, const la__op_args *a);

typedef struct la__op_entry {
    la__op_id id;
    const char *name;   /* "<family>-<form>", e.g. "simple_gla-chunk" */
    const char *family; /* "simple_gla" */
    int form;           /* la_form, or -1 (softmax forms, the non-causal kernel trick) */
    unsigned needs;     /* LA__NEED_* / LA__HAS_* / LA__CAUSAL / LA__QUADRATIC */
    int decode_op;      /* la_op of the family's decoding step, or -1 */
    /* FLOPs of one call for one head (multiply-add = 2; the table in
     * tools/bench/bench_core.c); backward = forward + backward. C = chunk size. */
    double (*flops)(double T, double K, double V, double C, int backward);
    la__op_fn forward, backward;
} la__op_entry;

/* The entry of id (NULL when id is not in [0, LA__OP_COUNT)). */
LA_HIDDEN const la__op_entry *la__op_get(int id);
/* The id named `name`, or -1. */
LA_HIDDEN int la__op_find(const char *name);
/* Rows of one head's state (and normaliser) for entry e called with a: K,
 * or M = la_rf_num_features(a->rf.kind, a->rf_m) for LA__NEED_RF (0 when
 * that is invalid). */
LA_HIDDEN int64_t la__op_state_rows(const la__op_entry *e, const la__op_args *a);

/* ---- decoding -------------------------------------------------------- */

/* Floats of work space a step may use (the decoder reserves it). */
#define LA__STEP_WORK_FLOATS(K, V) (4 * (size_t)(K) + 2 * (size_t)(V) + 64)

/* One token of one (sequence n, state head h). The decoder slices every
 * tensor: S [K,V], z [K] (normaliser or NULL), o [V]; q, k [K] of q/k head
 * h / (HS/H); v [V]; g NULL, one float or [K] (as the entry's needs say);
 * g_gamma = g_gamma[h] or 0; beta = beta[n, h] or 0. cfg has HV, scale and
 * eps resolved. Must be the recurrent form's own arithmetic, so decoding
 * equals it bit for bit. */
typedef struct la__step_io {
    const la_decoder_config *cfg;
    float *S, *z, *o;
    const float *q, *k, *v, *g;
    float g_gamma, beta;
    float *work; /* LA__STEP_WORK_FLOATS(K, V) floats, or the entry's work_bytes */
    /* families with decoding hooks (la__decode_ext; else NULL): */
    const void *data; /* the decoder's family data */
    float *key_max;   /* this (sequence, head)'s running key maximum */
} la__step_io;

typedef struct la__decode_entry {
    la_op op;
    const char *family;  /* as the op entries' family */
    unsigned needs;      /* LA__NEED_G/_G_OPT/_GK/_G_GAMMA/_BETA/_HV/_NORMALIZER/... */
    double flops_per_kv; /* per head and token, in units of K*V */
    /* Checks and resolves the family's own config fields (may be NULL). */
    la_status (*configure)(const char *fn, la_decoder_config *cfg);
    void (*step)(const la__step_io *io);
} la__decode_entry;

/* Optional decoding hooks, for a family whose state is not [K,V] per head
 * or that owns data (the causal Performer); a plain family has none
 * (la__decode_ext_get returns NULL). create builds the family data from the
 * resolved cfg (after configure) and sets *rows, the rows of one head's
 * state and normaliser (K without hooks); destroy frees it. check_step
 * adds checks of one step's q, k [N,H,K]; work_bytes: the bytes of work a
 * step needs. key_max_reset non-NULL: the decoder keeps a running key
 * maximum [N,H] (the state is relative to it; la_decoder_get/set_key_max),
 * reset to this value; the step gets it in io->key_max. */
typedef struct la__decode_ext {
    la_status (*create)(const char *fn, const la_decoder_config *cfg, void **data, int64_t *rows);
    void (*destroy)(void *data);
    la_status (*check_step)(const char *fn, const void *data, const float *q, const float *k,
                            int64_t N, int64_t H);
    size_t (*work_bytes)(const la_decoder_config *cfg, const void *data);
    float (*key_max_reset)(const void *data);
} la__decode_ext;

/* Number of la_op values (one more than the last): the decoding table has
 * exactly this many entries. A family that decodes moves it on. */
#define LA__DECODE_COUNT ((int)LA_OP_PERFORMER + 1)

/* la_state_step's CPU path (decoder.c): la_decoder_step over caller-owned
 * state [N,HS,K,V] (and norm [N,H,K]); fn names the public function. */
LA_HIDDEN la_status la__decoder_view_step(const char *fn, la_ctx *ctx, const la_decoder_config *cfg,
                                          float *state, float *norm, float *o, const float *q,
                                          const float *k, const float *v, const float *g,
                                          const float *g_gamma, const float *beta);

/* The decoding entry of op (NULL for an unknown op). */
LA_HIDDEN const la__decode_entry *la__decode_get(int op);
/* Its optional hooks (NULL for a plain family or an unknown op). */
LA_HIDDEN const la__decode_ext *la__decode_ext_get(int op);

/* ---- the entries (defined in src/ops/<family>/entry.c) ---------------- */
extern const la__op_entry la__entry_softmax_textbook, la__entry_softmax_streaming;
extern const la__op_entry la__entry_linear_attn_parallel, la__entry_linear_attn_recurrent,
    la__entry_linear_attn_chunk, la__entry_linear_attn_noncausal;
extern const la__op_entry la__entry_simple_gla_recurrent, la__entry_simple_gla_chunk,
    la__entry_gla_recurrent, la__entry_gla_chunk;
extern const la__op_entry la__entry_delta_rule_recurrent, la__entry_delta_rule_chunk,
    la__entry_gated_delta_rule_recurrent, la__entry_gated_delta_rule_chunk;
extern const la__op_entry la__entry_kda_recurrent, la__entry_kda_chunk;
extern const la__op_entry la__entry_performer_recurrent, la__entry_performer_chunk;
extern const la__decode_entry la__decode_linear_attn, la__decode_simple_gla, la__decode_gla,
    la__decode_delta_rule, la__decode_gated_delta_rule, la__decode_kda, la__decode_performer;
extern const la__decode_ext la__decode_ext_performer;

#endif
