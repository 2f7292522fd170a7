/* Delta-rule test cases shared by test_delta_rule, test_gated_delta_rule
 * and test_decoder_delta (tests/support/delta_rule_cases.c): a case
 * description, its random data, one library call, and checks against the
 * float64 reference (errors counted by the harness). */
#ifndef LINATTN_TEST_DELTA_RULE_CASES_H
#define LINATTN_TEST_DELTA_RULE_CASES_H

#include "harness.h"

typedef enum { GATE_RANDOM = 0, GATE_ZERO, GATE_RESETS } gate_mode;

typedef struct dcase {
    int gated;
    int64_t B, T, H, HV, K, V; /* HV 0: H */
    const int64_t *cu;         /* cu_seqlens or NULL */
    int64_t n_seqs;
    la_form form;
    int64_t chunk;
    int l2norm;
    float scale;
    int with_init, with_dfinal; /* pass an initial state / d_final_state */
    gate_mode gate;
    double beta_lo, beta_hi; /* beta ~ U(lo, hi); lo == hi: constant */
    double k_std;            /* std of k (q, v have std 1) */
    uint64_t seed;
} dcase;

typedef struct ddata {
    la_dims d;
    int64_t N, HS;
    size_t nqk, nv, ng, ns;
    float *q, *k, *v, *g, *beta, *S0, *d_o, *dST;
} ddata;

typedef struct dout {
    float *o, *ST, *dq, *dk, *dv, *dg, *dbeta, *dS0;
} dout;

typedef struct dref {
    double *o, *ST, *dq, *dk, *dv, *dg, *dbeta, *dS0;
} dref;

dcase dc_default(int gated);
ddata dc_data(const dcase *c);
void dc_free_data(ddata *x);
la_gated_opts dc_opts(const dcase *c);
dout dc_alloc_out(const ddata *x);
void dc_free_out(dout *y);
la_status dc_forward(la_ctx *ctx, const dcase *c, const ddata *x, dout *y);
la_status dc_backward(la_ctx *ctx, const dcase *c, const ddata *x, dout *y);
/* the same with opts.saved = s (la_saved; NULL: none) */
la_status dc_forward_saved(la_ctx *ctx, const dcase *c, const ddata *x, dout *y, la_saved *s);
la_status dc_backward_saved(la_ctx *ctx, const dcase *c, const ddata *x, dout *y, la_saved *s);
dref dc_reference(const dcase *c, const ddata *x, int bwd);
void dc_free_ref(dref *r);
const char *dc_form_name(const dcase *c);
double dc_err(const float *got, const double *want, size_t n);
void dc_check_case(la_ctx *ctx, const dcase *c, double fwd_tol, double bwd_tol);
void dc_print_worst(const char *suite);
double dc_rms_ff(const float *got, const float *want, size_t n);
void dc_check_threads(const dcase *c);
void dc_check_varlen(la_ctx *ctx, const dcase *base);
void dc_check_pieces(la_ctx *ctx, const dcase *base, double tol);
void dc_check_bad_inputs(la_ctx *ctx, int gated);
void dc_check_inplace(la_ctx *ctx, const dcase *base);
void dc_check_head_groups(int gated);

#endif
