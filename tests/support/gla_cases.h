/* GLA test cases shared by test_simple_gla, test_gla and test_decoder_gla
 * (tests/support/gla_cases.c): a random case, the library calls, and whole
 * test sweeps against the float64 reference (errors counted by the
 * harness). per_key: 0 simple GLA, 1 GLA; flags: GC_* below. */
#ifndef LINATTN_TEST_GLA_CASES_H
#define LINATTN_TEST_GLA_CASES_H

#include "harness.h"

typedef struct gcase {
    int per_key; /* 0 simple GLA, 1 GLA */
    la_dims d;
    int64_t *cu; /* cu_seqlens storage (malloc'd) or NULL */
    int64_t N, H, K, V;
    size_t nqk, nv, ng, ns;
    float *q, *k, *v, *g, *gamma, *s0, *d_o, *d_sT; /* g, gamma, s0, d_sT may be NULL */
} gcase;

enum { GC_G = 1, GC_GAMMA = 2, GC_S0 = 4, GC_DST = 8, GC_ALL = 15 };

/* float64 results of the whole case. */
typedef struct gref {
    double *o, *sT, *dq, *dk, *dv, *dg, *dgam, *ds0;
    double *dgam_abs; /* [H] sum over tokens of |scalar gate gradient| */
} gref;

/* Library outputs of one case. */
typedef struct gout {
    float *o, *sT, *dq, *dk, *dv, *dg, *dgam, *ds0;
} gout;

/* harness.h's CHECK_ERR passes err and tol after the caller's arguments, so
 * it only works with a message without arguments; this one formats first. */
#define GC_CHECK_ERR(err, tol, ...) gc_check_err((err), (tol), __FILE__, __LINE__, __VA_ARGS__)

/* Every output of a case, poisoned (NaN) until written; gout_free frees them. */
gout gout_alloc(const gcase *c);
void gout_free(gout *r);

void gc_check_err(double err, double tol, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
gcase gc_make(int per_key, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, const int64_t *cu,
              int64_t nseq, int flags, la_rng *rng);
void gc_free(gcase *c);
/* Every form (recurrent; chunk 16, 32, 64) against the float64 reference,
 * forward and backward. */
void gc_check_forms(const gcase *c, la_ctx *ctx, const char *label);
la_gated_opts gc_opts(la_form form, int64_t chunk);
la_status gc_fwd(const gcase *c, la_ctx *ctx, const la_gated_opts *o, float *out, float *sT);
la_status gc_bwd(const gcase *c, la_ctx *ctx, const la_gated_opts *o, float *dq, float *dk,
                 float *dv, float *dg, float *dgam, float *ds0);
void gc_print_worst(const char *suite);
void gla_test_ref_fd(int per_key);
void gla_test_sweep(int per_key, int flags, uint64_t seed, int full);
void gla_test_long(int per_key, int flags, uint64_t seed, int n_sizes);
void gla_test_odd_chunks(int per_key, int flags, uint64_t seed);
void gla_test_varlen(int per_key, int flags, uint64_t seed);
void gla_test_pieces(int per_key, int flags, uint64_t seed);
void gla_test_threads(int per_key, int flags, uint64_t seed);
void gla_test_extreme(int per_key, uint64_t seed);
void gla_test_ckpt_paths(int per_key, uint64_t seed); /* cpu-gla3 */
void gla_test_bad(int per_key);
/* The forward's output and final state (NaN-poisoned) bit for bit equal
 * at the threads of ctx[1..nctx-1] and ctx[0]'s. */
void gc_check_fwd_threads(const gcase *c, la_ctx *const *ctx, int nctx, const la_gated_opts *o,
                          const char *label, int64_t chunk);
/* cpu-bwdsplit: the backward bit for bit at the threads of ctx[0..3]. */
void gc_check_bwd_threads(const gcase *c, la_ctx *const *ctx, const la_gated_opts *o,
                          const char *label, int64_t chunk);

#endif
