/* linattn check: softmax attention, textbook and streaming, causal and not,
 * forward (o, lse) and backward (dq, dk, dv), against the float64 reference.
 * Bound 1e-5 max relative error for every output: both forms round each
 * score once to float and accumulate in double (see src/ops/softmax_attn). */
#include "check.h"
#include "ref_softmax_attn.h"
#include "ref_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define SOFTMAX_CHECK_TOL 1e-5

void check_softmax_attn(check_report *r) {
    /* odd sizes: T does not divide the streaming block, K != V */
    la_dims d = {.B = 2, .T = r->quick ? 65 : 300, .H = 2, .K = r->quick ? 16 : 64,
                 .V = r->quick ? 24 : 48};
    const size_t nqk = (size_t)(d.B * d.T * d.H * d.K), nv = (size_t)(d.B * d.T * d.H * d.V),
                 nl = (size_t)(d.B * d.T * d.H);
    la_rng rng;
    la_rng_seed(&rng, r->seed ^ UINT64_C(0x50f7a7));
    float *in = malloc((2 * nqk + 2 * nv) * sizeof *in);
    float *out = malloc((2 * nqk + 2 * nv + nl) * sizeof *out);
    double *ref = malloc((2 * nqk + 2 * nv + nl) * sizeof *ref);
    if (!in || !out || !ref) {
        check_call_failed(r, "softmax_attn", "setup", LA_ERR_OUT_OF_MEMORY);
        free(in);
        free(out);
        free(ref);
        return;
    }
    float *q = in, *k = q + nqk, *v = k + nqk, *d_o = v + nv;
    float *o = out, *lse = o + nv, *dq = lse + nl, *dk = dq + nqk, *dv = dk + nqk;
    double *ro = ref, *rl = ro + nv, *rdq = rl + nl, *rdk = rdq + nqk, *rdv = rdk + nqk;
    ref_fill_normal(in, 2 * nqk + 2 * nv, &rng, 1.0);
    const double scale = (double)(float)(1.0 / sqrt((double)d.K));

    for (int causal = 0; causal < 2; causal++) {
        char op[48];
        snprintf(op, sizeof op, "softmax_attn %s", causal ? "causal" : "full");
        if (!ref_softmax_attn_batch(&d, causal, scale, NULL, q, k, v, d_o, ro, rl, rdq, rdk,
                                    rdv)) {
            check_call_failed(r, op, "reference", LA_ERR_OUT_OF_MEMORY);
            continue;
        }
        for (int f = 0; f < 2; f++) {
            la_softmax_opts opts = la_softmax_opts_default();
            opts.causal = causal;
            opts.form = (la_softmax_form)f;
            const char *form = f ? "streaming(64)" : "textbook";
            for (size_t i = 0; i < 2 * nqk + 2 * nv + nl; i++) out[i] = NAN;
            la_status st = la_softmax_attn_forward(r->ctx, &opts, &d, o, lse, q, k, v);
            if (st != LA_OK) {
                check_call_failed(r, op, form, st);
                continue;
            }
            check_add(r, op, form, "o", ref_max_rel_err(o, ro, nv), SOFTMAX_CHECK_TOL);
            check_add(r, op, form, "lse", ref_max_rel_err(lse, rl, nl), SOFTMAX_CHECK_TOL);
            st = la_softmax_attn_backward(r->ctx, &opts, &d, dq, dk, dv, d_o, q, k, v);
            if (st != LA_OK) {
                check_call_failed(r, op, form, st);
                continue;
            }
            check_add(r, op, form, "dq", ref_max_rel_err(dq, rdq, nqk), SOFTMAX_CHECK_TOL);
            check_add(r, op, form, "dk", ref_max_rel_err(dk, rdk, nqk), SOFTMAX_CHECK_TOL);
            check_add(r, op, form, "dv", ref_max_rel_err(dv, rdv, nv), SOFTMAX_CHECK_TOL);
        }
    }
    free(in);
    free(out);
    free(ref);
}
