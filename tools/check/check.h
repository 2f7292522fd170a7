/* `linattn check`: every op and form against the float64 reference.
 * Each op family contributes one function that adds rows to the report. */
#ifndef LINATTN_CHECK_H
#define LINATTN_CHECK_H

#include "linattn.h"

#include <stdint.h>

typedef struct check_row {
    char op[48];      /* "linear_attn elu1 causal" */
    char form[32];    /* "chunk(64)" */
    char what[24];    /* "o", "dq", "final_state" */
    double err;       /* max relative error against the float64 reference */
    double tol;
    int pass;
} check_row;

typedef struct check_report {
    check_row *rows;
    int n, cap;
    la_ctx *ctx;
    uint64_t seed;
    int quick;        /* smaller sizes (used by the test suite) */
    int failed_calls; /* calls that returned an error status */
} check_report;

/* Adds a row; pass = err <= tol (NaN fails). */
void check_add(check_report *r, const char *op, const char *form, const char *what,
               double err, double tol);
/* Records a call that returned an error (counts as a failure). */
void check_call_failed(check_report *r, const char *op, const char *form, la_status st);

/* One per op family (tools/check_<family>.c). */
void check_softmax_attn(check_report *r);
void check_linear_attn(check_report *r);
void check_feature_maps(check_report *r);
void check_gla(check_report *r);        /* simple GLA, RetNet, GLA */
void check_delta_rule(check_report *r); /* DeltaNet, Gated DeltaNet */
/* Every registry entry against its whole-tensor reference. */
void check_registry(check_report *r);

#endif
