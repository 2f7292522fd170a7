/* `linattn check` rows for kernel (feature-map) linear attention: every form
 * (non-causal, parallel, recurrent, chunk) with elu1, identity and relu in
 * one form each besides, normalised and unnormalised, from a given initial
 * state and with a final-state gradient; one row per output and gradient
 * against the float64 reference.
 *
 * Bound 1e-5 max relative error: float32 sums over at most T·(K+V) terms
 * here (sqrt(n)·2^-24 ~ 1e-6); the test suite measures below 2e-6. */
#include "check.h"
#include "ref_linear_attn.h"
#include "ref_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double BOUND = 1e-5;

static const char *fm_name(la_feature_map f) {
    return f == LA_FEATURE_IDENTITY ? "identity" : f == LA_FEATURE_ELU1 ? "elu1" : "relu";
}

static void check_one(check_report *r, la_feature_map fm, int causal, la_form form, int norm,
                      uint64_t seed) {
    const int64_t B = 2, H = 2, T = r->quick ? 40 : 200, K = r->quick ? 16 : 32,
                  V = r->quick ? 24 : 48;
    la_linear_attn_opts o = la_linear_attn_opts_default();
    o.feature_map = fm;
    o.causal = causal;
    o.form = form;
    o.normalize = norm;
    o.chunk_size = r->quick ? 16 : 0;
    la_dims d;
    memset(&d, 0, sizeof d);
    d.B = B;
    d.T = T;
    d.H = H;
    d.K = K;
    d.V = V;
    const size_t nqk = (size_t)(B * T * H * K), nv = (size_t)(B * T * H * V);
    const size_t nz = (size_t)(B * H * K), ns = nz * (size_t)V;

    char op[48], fs[32];
    snprintf(op, sizeof op, "linear_attn %s %s", fm_name(fm), norm ? "norm" : "unnorm");
    if (!causal) snprintf(fs, sizeof fs, "non-causal");
    else if (form == LA_FORM_CHUNK)
        snprintf(fs, sizeof fs, "chunk(%lld)", (long long)(o.chunk_size ? o.chunk_size : 64));
    else snprintf(fs, sizeof fs, "%s", form == LA_FORM_PARALLEL ? "parallel" : "recurrent");

    float *f[16] = {0};
    double *w[16] = {0};
    /* inputs */
    float *q = f[0] = malloc(nqk * sizeof(float)), *k = f[1] = malloc(nqk * sizeof(float));
    float *v = f[2] = malloc(nv * sizeof(float)), *d_o = f[3] = malloc(nv * sizeof(float));
    float *S0 = f[4] = malloc(ns * sizeof(float)), *z0 = f[5] = malloc(nz * sizeof(float));
    float *dST = f[6] = malloc(ns * sizeof(float)), *dzT = f[7] = malloc(nz * sizeof(float));
    /* outputs */
    float *out = f[8] = malloc(nv * sizeof(float)), *fS = f[9] = malloc(ns * sizeof(float));
    float *fz = f[10] = malloc(nz * sizeof(float)), *dq = f[11] = malloc(nqk * sizeof(float));
    float *dk = f[12] = malloc(nqk * sizeof(float)), *dv = f[13] = malloc(nv * sizeof(float));
    float *dS0 = f[14] = malloc(ns * sizeof(float)), *dz0 = f[15] = malloc(nz * sizeof(float));
    const size_t wn[8] = {nv, ns, nz, nqk, nqk, nv, ns, nz};
    int ok = 1;
    for (int i = 0; i < 16; i++) ok &= f[i] != NULL;
    for (int i = 0; i < 8; i++) ok &= (w[i] = malloc(wn[i] * sizeof(double))) != NULL;
    if (!ok) {
        check_call_failed(r, op, fs, LA_ERR_OUT_OF_MEMORY);
        goto done;
    }
    la_rng rng;
    la_rng_seed(&rng, r->seed * 1000003u + seed);
    if (norm && fm == LA_FEATURE_IDENTITY) { /* a denominator away from zero */
        ref_fill_uniform(q, nqk, &rng, 0.1, 1.0);
        ref_fill_uniform(k, nqk, &rng, 0.1, 1.0);
    } else {
        ref_fill_normal(q, nqk, &rng, 1.0);
        ref_fill_normal(k, nqk, &rng, 1.0);
    }
    ref_fill_normal(v, nv, &rng, 1.0);
    ref_fill_normal(d_o, nv, &rng, 1.0);
    ref_fill_normal(S0, ns, &rng, 1.0);
    ref_fill_uniform(z0, nz, &rng, 0.2, 2.0);
    ref_fill_normal(dST, ns, &rng, 1.0);
    ref_fill_normal(dzT, nz, &rng, 1.0);

    la_status st = la_linear_attn_forward(r->ctx, &o, &d, out, fS, norm ? fz : NULL, q, k, v, S0,
                                          norm ? z0 : NULL);
    if (st) {
        check_call_failed(r, op, fs, st);
        goto done;
    }
    st = la_linear_attn_backward(r->ctx, &o, &d, dq, dk, dv, dS0, norm ? dz0 : NULL, d_o, dST,
                                 norm ? dzT : NULL, q, k, v, S0, norm ? z0 : NULL);
    if (st) {
        check_call_failed(r, op, fs, st);
        goto done;
    }
    if (ref_linear_attn_forward_all(&o, &d, w[0], w[1], norm ? w[2] : NULL, q, k, v, S0,
                                    norm ? z0 : NULL) ||
        ref_linear_attn_backward_all(&o, &d, 0, w[3], w[4], w[5], w[6], norm ? w[7] : NULL, d_o,
                                     dST, norm ? dzT : NULL, q, k, v, S0, norm ? z0 : NULL)) {
        check_call_failed(r, op, fs, LA_ERR_OUT_OF_MEMORY);
        goto done;
    }
    static const char *const names[8] = {"o", "final_state", "final_norm", "dq",
                                         "dk", "dv", "d_initial_state", "d_initial_norm"};
    for (int i = 0; i < 8; i++) {
        if (!norm && (i == 2 || i == 7)) continue;
        check_add(r, op, fs, names[i], ref_max_rel_err(f[8 + i], w[i], wn[i]), BOUND);
    }
done:
    for (int i = 0; i < 16; i++) free(f[i]);
    for (int i = 0; i < 8; i++) free(w[i]);
}

void check_linear_attn(check_report *r) {
    uint64_t seed = 1;
    for (int norm = 1; norm >= 0; norm--) {
        check_one(r, LA_FEATURE_ELU1, 0, LA_FORM_CHUNK, norm, seed++);
        check_one(r, LA_FEATURE_ELU1, 1, LA_FORM_PARALLEL, norm, seed++);
        check_one(r, LA_FEATURE_ELU1, 1, LA_FORM_RECURRENT, norm, seed++);
        check_one(r, LA_FEATURE_ELU1, 1, LA_FORM_CHUNK, norm, seed++);
        check_one(r, LA_FEATURE_IDENTITY, 1, LA_FORM_CHUNK, norm, seed++);
        check_one(r, LA_FEATURE_RELU, 1, LA_FORM_RECURRENT, norm, seed++);
    }
    /* Performer's path: normalised identity, non-causal. */
    check_one(r, LA_FEATURE_IDENTITY, 0, LA_FORM_CHUNK, 1, seed++);
}
