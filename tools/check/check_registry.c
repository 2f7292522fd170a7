/* `linattn check` rows for every entry of the op registry: one random case
 * per (family, form) at odd sizes with an initial state, its forward and
 * backward outputs against the entry's whole-tensor float64 reference
 * (src/ref/ref_ops.c). An op family that registers itself appears here with
 * no change to this file. The rows above it (one file per family) cover
 * the variants specific to a family (feature maps, RetNet decay, ...).
 *
 * Bound 1e-5 max-relative, as the family rows: float32 rounding of sums over
 * at most T(K+V) terms (the delta rules with L2-normalised q/k). */
#include "check.h"
#include "ref_ops.h"
#include "ref_util.h"

#include <stdio.h>

#define REGISTRY_TOL 1e-5

static void run_entry(check_report *r, int id) {
    const la__op_entry *e = la__op_get(id);
    const int64_t T = r->quick ? 45 : 157;
    la_dims d = {.B = 2, .T = T, .H = 2, .K = r->quick ? 12 : 40, .V = r->quick ? 10 : 24, .HV = 4};
    ref_op_case c;
    char op[48];
    snprintf(op, sizeof op, "registry %s", e->name);
    const char *form = e->form == LA_FORM_CHUNK ? "chunk(16)" : "default";
    if (ref_op_case_init(&c, id, &d, 16, r->seed * 1000003u + (uint64_t)id, REF_CASE_STATE) ||
        ref_op_case_reference(&c)) {
        ref_op_case_free(&c);
        check_call_failed(r, op, "reference", LA_ERR_OUT_OF_MEMORY);
        return;
    }
    la_status st = e->forward(r->ctx, &c.a);
    if (!st) st = e->backward(r->ctx, &c.a);
    if (st) {
        check_call_failed(r, op, form, st);
        ref_op_case_free(&c);
        return;
    }
    ref_op_output l[16];
    const int n = ref_op_case_outputs(&c, l);
    for (int i = 0; i < n; i++)
        check_add(r, op, form, l[i].name, ref_max_rel_err(l[i].got, l[i].want, l[i].n),
                  REGISTRY_TOL);
    ref_op_case_free(&c);
}

void check_registry(check_report *r) {
    for (int id = 0; id < LA__OP_COUNT; id++) run_entry(r, id);
}
