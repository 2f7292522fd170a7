/* The float64 reference of every registry entry (src/ops/registry.h), over
 * whole tensors: the table the check tool, tests/test_registry_ops.c and
 * the fuzzer compare the library with. It lives with the references (not in
 * the shipped library, which carries no float64 code); one row per
 * la__op_id, in the same order (a _Static_assert ties the two). */
#ifndef LINATTN_REF_OPS_H
#define LINATTN_REF_OPS_H

#include "ops/registry.h"

/* float64 outputs in the library's layouts; NULL skips one. */
typedef struct ref_op_out {
    double *o, *final_state, *final_norm, *lse;
    double *dq, *dk, *dv, *dg, *dg_gamma, *dbeta, *d_initial_state, *d_initial_norm;
    double *final_key_max; /* random features: the running key maximum [N,H] */
} ref_op_out;

/* The same arguments as the entry's adapters take (float32 inputs). The
 * forward fills o, final_state, final_norm, lse; the backward the gradients
 * of sum(o d_o) + sum(final_state d_final_state) + sum(final_norm
 * d_final_norm). Return 0, or -1 when out of memory or when the reference
 * does not cover a request. */
typedef int (*ref_op_fn)(const la__op_args *a, const ref_op_out *out);

typedef struct ref_op_entry {
    ref_op_fn forward, backward;
} ref_op_entry;

/* The reference of registry id (NULL when out of range). */
const ref_op_entry *ref_op_get(int id);

/* The float32 scale the library resolves scale = 0 to, as a double. */
double ref_resolved_scale(float scale, int64_t K);

/* ---- one random case of an entry (check tool, tests) -------------------- */

#include "linattn.h"

enum {
    REF_CASE_STATE = 1,    /* initial state / normaliser and d_final_* given */
    REF_CASE_EXTREME = 2,  /* gates at -1e4 and 0, beta in {0, 1, 1.99} mixed in */
    REF_CASE_NO_GGAMMA = 4 /* leave g_gamma out (else given where the op takes it) */
};

/* Inputs (random, from seed) and outputs (float32, NaN-poisoned) of one call
 * of entry id on dims, wired into `a`, and the reference outputs `want`. */
#define REF_CASE_MAX_BUFS 16
typedef struct ref_op_case {
    const la__op_entry *e;
    la__op_args a;
    la_dims dims;
    int64_t cu[64];
    size_t n_qk, n_v, n_g, n_hs, n_state, n_norm, n_lse, H;
    size_t n_mu;                   /* key maxima [N,H] (random features), else 0 */
    float *in[REF_CASE_MAX_BUFS];  /* every input buffer (freed by ref_op_case_free) */
    float *out[REF_CASE_MAX_BUFS]; /* every output buffer */
    ref_op_out want;
    double *wbuf[REF_CASE_MAX_BUFS];
} ref_op_case;

/* Builds a case; dims->cu_seqlens (up to 63 sequences) is copied. Options:
 * feature map elu1 + normalize (linear attention), use_qk_l2norm where
 * read, chunk_size `chunk` (0: default); random features (the causal
 * Performer): FAVOR+ (stabilised, eps 1e-4), m = K/2 + 3 rows of W ~ N(0,1),
 * initial key maxima in [0, 2] with the initial state. Returns 0, -1 when out of memory. */
int ref_op_case_init(ref_op_case *c, int id, const la_dims *dims, int64_t chunk, uint64_t seed,
                     unsigned flags);
/* NaN-fills every float32 output. */
void ref_op_case_poison(ref_op_case *c);
/* Runs the reference forward and backward into c->want; 0 on success. */
int ref_op_case_reference(ref_op_case *c);
void ref_op_case_free(ref_op_case *c);

/* The outputs a call of the case writes: name, the float32 buffer, the
 * reference (NULL where the reference gives none) and the count. */
typedef struct ref_op_output {
    const char *name;
    float *got;
    const double *want;
    size_t n;
    int backward;
} ref_op_output;
/* Fills list (up to 16 entries) and returns how many. */
int ref_op_case_outputs(const ref_op_case *c, ref_op_output *list);

#endif
