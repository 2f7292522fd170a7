/* `linattn check` rows for DeltaNet and Gated DeltaNet: recurrent and chunk
 * forms with L2-normalised q/k (use_qk_l2norm, as in real use), forward
 * (o, final_state) and backward (dq, dk, dv, dbeta, dg, d_initial_state)
 * against the float64 reference, max relative error per output.
 * Bound 1e-5: with normalised keys the recurrence is contractive and both
 * forms stay at float32 rounding (measured ~1e-6). */
#include "check.h"
#include "ref_delta_rule.h"
#include "ref_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DELTA_TOL 1e-5

typedef struct {
    int64_t B, T, H, HV, K, V, chunk;
} sizes;

static void run_case(check_report *r, int gated, la_form form, const sizes *s) {
    const char *op = gated ? "gated_delta_rule l2norm" : "delta_rule l2norm";
    char fname[32];
    if (form == LA_FORM_CHUNK) snprintf(fname, sizeof fname, "chunk(%lld)", (long long)s->chunk);
    else snprintf(fname, sizeof fname, "recurrent");
    const int64_t HS = gated ? s->HV : s->H, N = s->B, K = s->K, V = s->V;
    const size_t nqk = (size_t)(s->B * s->T * s->H * K), nv = (size_t)(s->B * s->T * HS * V);
    const size_t ng = (size_t)(s->B * s->T * HS), ns = (size_t)(N * HS * K * V);
    la_dims d = {.B = s->B, .T = s->T, .H = s->H, .K = K, .V = V, .HV = gated ? s->HV : 0};
    la_gated_opts o = la_gated_opts_default();
    o.form = form;
    o.chunk_size = s->chunk;
    o.use_qk_l2norm = 1;

    /* inputs and outputs, one allocation each */
    float *q = malloc(nqk * sizeof(float)), *k = malloc(nqk * sizeof(float));
    float *dq = malloc(nqk * sizeof(float)), *dk = malloc(nqk * sizeof(float));
    float *v = malloc(nv * sizeof(float)), *d_o = malloc(nv * sizeof(float));
    float *out = malloc(nv * sizeof(float)), *dv = malloc(nv * sizeof(float));
    float *g = malloc(ng * sizeof(float)), *beta = malloc(ng * sizeof(float));
    float *dg = malloc(ng * sizeof(float)), *dbeta = malloc(ng * sizeof(float));
    float *S0 = malloc(ns * sizeof(float)), *dST = malloc(ns * sizeof(float));
    float *ST = malloc(ns * sizeof(float)), *dS0 = malloc(ns * sizeof(float));
    void *fl[] = {q, k, dq, dk, v, d_o, out, dv, g, beta, dg, dbeta, S0, dST, ST, dS0};
    const size_t n_fl = sizeof fl / sizeof fl[0];
    double *w = calloc(2 * nqk + 2 * nv + 2 * ng + 2 * ns, sizeof(double));
    int have = w != NULL;
    for (size_t i = 0; i < n_fl; i++) have &= fl[i] != NULL;
    if (!have) {
        for (size_t i = 0; i < n_fl; i++) free(fl[i]);
        free(w);
        check_call_failed(r, op, fname, LA_ERR_OUT_OF_MEMORY);
        return;
    }
    la_rng rng;
    la_rng_seed(&rng, r->seed + (uint64_t)(gated * 2 + (form == LA_FORM_CHUNK)));
    ref_fill_normal(q, nqk, &rng, 1);
    ref_fill_normal(k, nqk, &rng, 1);
    ref_fill_normal(v, nv, &rng, 1);
    ref_fill_normal(d_o, nv, &rng, 1);
    ref_fill_normal(S0, ns, &rng, 0.5);
    ref_fill_normal(dST, ns, &rng, 0.5);
    ref_fill_uniform(beta, ng, &rng, 0.05, 1.0);
    for (size_t i = 0; i < ng; i++) {
        const double z = 2.5 + la_rng_normal(&rng);
        g[i] = (float)-log1p(exp(-z)); /* logsigmoid */
    }

    la_status st = gated ? la_gated_delta_rule_forward(r->ctx, &o, &d, out, ST, q, k, v, g, beta, S0)
                         : la_delta_rule_forward(r->ctx, &o, &d, out, ST, q, k, v, beta, S0);
    if (st == LA_OK)
        st = gated ? la_gated_delta_rule_backward(r->ctx, &o, &d, dq, dk, dv, dg, dbeta, dS0,
                                                  d_o, dST, q, k, v, g, beta, S0)
                   : la_delta_rule_backward(r->ctx, &o, &d, dq, dk, dv, dbeta, dS0, d_o, dST,
                                            q, k, v, beta, S0);
    if (st != LA_OK) {
        check_call_failed(r, op, fname, st);
        for (size_t i = 0; i < n_fl; i++) free(fl[i]);
        free(w);
        return;
    }

    /* float64 reference over the whole tensors */
    double *Wq = w, *Wk = Wq + nqk, *Wo = Wk + nqk, *Wdv = Wo + nv, *Wdg = Wdv + nv,
           *Wdb = Wdg + ng, *WST = Wdb + ng, *WdS0 = WST + ns;
    const double scale = 1.0 / sqrt((double)K);
    const float *gp = gated ? g : NULL;
    int ok = ref_delta_rule_forward_all(&d, scale, 1, q, k, v, gp, beta, S0, Wo, WST) == 0 &&
             ref_delta_rule_backward_all(&d, scale, 1, q, k, v, gp, beta, S0, d_o, dST, Wq, Wk,
                                         Wdv, Wdg, Wdb, WdS0) == 0;
    if (!ok) {
        check_call_failed(r, op, fname, LA_ERR_OUT_OF_MEMORY);
    } else {
        check_add(r, op, fname, "o", ref_max_rel_err(out, Wo, nv), DELTA_TOL);
        check_add(r, op, fname, "final_state", ref_max_rel_err(ST, WST, ns), DELTA_TOL);
        check_add(r, op, fname, "dq", ref_max_rel_err(dq, Wq, nqk), DELTA_TOL);
        check_add(r, op, fname, "dk", ref_max_rel_err(dk, Wk, nqk), DELTA_TOL);
        check_add(r, op, fname, "dv", ref_max_rel_err(dv, Wdv, nv), DELTA_TOL);
        check_add(r, op, fname, "dbeta", ref_max_rel_err(dbeta, Wdb, ng), DELTA_TOL);
        if (gated) check_add(r, op, fname, "dg", ref_max_rel_err(dg, Wdg, ng), DELTA_TOL);
        check_add(r, op, fname, "d_initial_state", ref_max_rel_err(dS0, WdS0, ns), DELTA_TOL);
    }
    for (size_t i = 0; i < n_fl; i++) free(fl[i]);
    free(w);
}

void check_delta_rule(check_report *r) {
    const sizes full = {2, 300, 2, 4, 64, 48, 64}, quick = {2, 40, 2, 4, 16, 12, 16};
    const sizes *s = r->quick ? &quick : &full;
    for (int gated = 0; gated < 2; gated++) {
        run_case(r, gated, LA_FORM_RECURRENT, s);
        run_case(r, gated, LA_FORM_CHUNK, s);
    }
}
