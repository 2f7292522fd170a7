/* `linattn check` rows of the GLA family: simple GLA with per-token gates,
 * the RetNet preset (constant per-head g_gamma) and GLA (per-key gates), in
 * the recurrent and chunk forms; forward (o, final_state) and backward (dq,
 * dk, dv, dg, dg_gamma, d_initial_state) against the float64 reference.
 *
 * Bounds: 1e-5 max-relative (float32 rounding of dot products and of the
 * state carried over the sequence measures below 1e-6). dg_gamma sums the
 * gate gradient over every token and sequence; where those terms cancel, the
 * sum shrinks but the rounding of each term stays, so its row ("dg_gamma
 * (cond)") divides the error by sum_t |dg_t| instead of |dg_gamma|. */
#include "check.h"
#include "ref_gla.h"
#include "ref_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct variant {
    const char *name;
    int per_key, use_g, use_gamma;
} variant;

typedef struct bufs {
    float *q, *k, *v, *g, *gamma, *s0, *d_o, *d_sT;
    float *o, *sT, *dq, *dk, *dv, *dg, *dgam, *ds0;
    double *ro, *rsT, *rdq, *rdk, *rdv, *rdg, *rdgam, *rds0;
    double *rdgam_abs; /* [H] sum over tokens of |scalar gate gradient| */
} bufs;

static float *fbuf(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }
static double *dbuf(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

/* The whole-tensor float64 reference; returns 0 on success. */
static int reference(const variant *vr, const la_dims *d, const bufs *b) {
    const double scale = 1.0 / sqrt((double)d->K);
    const float *g = vr->use_g ? b->g : NULL, *gamma = vr->use_gamma ? b->gamma : NULL;
    if (ref_gla_forward_all(vr->per_key, d, scale, b->q, b->k, b->v, g, gamma, b->s0, b->ro,
                            b->rsT))
        return 1;
    return ref_gla_backward_all(vr->per_key, d, scale, b->q, b->k, b->v, g, gamma, b->s0, b->d_o,
                                b->d_sT, b->rdq, b->rdk, b->rdv, vr->use_g ? b->rdg : NULL,
                                b->rdgam, b->rds0, b->rdgam_abs) != 0;
}

static void run_variant(check_report *r, const variant *vr) {
    const int64_t B = 2, H = 2, T = r->quick ? 70 : 300, K = r->quick ? 16 : 64,
                  V = r->quick ? 24 : 48, gw = vr->per_key ? K : 1;
    la_dims d = {.B = B, .T = T, .H = H, .K = K, .V = V};
    const size_t nqk = (size_t)(B * T * H * K), nv = (size_t)(B * T * H * V),
                 ng = (size_t)(B * T * H * gw), ns = (size_t)(B * H * K * V);
    la_rng rng;
    la_rng_seed(&rng, r->seed ^ (0x91a0u + (uint64_t)(vr->per_key * 4 + vr->use_g * 2 +
                                                      vr->use_gamma)));
    bufs b;
    memset(&b, 0, sizeof b);
    b.q = fbuf(nqk); b.k = fbuf(nqk); b.v = fbuf(nv); b.g = fbuf(ng); b.gamma = fbuf((size_t)H);
    b.s0 = fbuf(ns); b.d_o = fbuf(nv); b.d_sT = fbuf(ns);
    b.o = fbuf(nv); b.sT = fbuf(ns); b.dq = fbuf(nqk); b.dk = fbuf(nqk); b.dv = fbuf(nv);
    b.dg = fbuf(ng); b.dgam = fbuf((size_t)H); b.ds0 = fbuf(ns);
    b.ro = dbuf(nv); b.rsT = dbuf(ns); b.rdq = dbuf(nqk); b.rdk = dbuf(nqk); b.rdv = dbuf(nv);
    b.rdg = dbuf(ng); b.rdgam = dbuf((size_t)H); b.rds0 = dbuf(ns);
    b.rdgam_abs = dbuf((size_t)H);
    char form[32];
    if (!b.q || !b.k || !b.v || !b.g || !b.gamma || !b.s0 || !b.d_o || !b.d_sT || !b.o ||
        !b.sT || !b.dq || !b.dk || !b.dv || !b.dg || !b.dgam || !b.ds0 || !b.ro || !b.rsT ||
        !b.rdq || !b.rdk || !b.rdv || !b.rdg || !b.rdgam || !b.rds0 || !b.rdgam_abs) {
        check_call_failed(r, vr->name, "alloc", LA_ERR_OUT_OF_MEMORY);
        goto done;
    }
    ref_fill_normal(b.q, nqk, &rng, 1.0);
    ref_fill_normal(b.k, nqk, &rng, 1.0);
    ref_fill_normal(b.v, nv, &rng, 1.0);
    ref_fill_uniform(b.g, ng, &rng, -0.3, 0.0);
    la_retnet_decay(b.gamma, H);
    ref_fill_normal(b.s0, ns, &rng, 0.5);
    ref_fill_normal(b.d_o, nv, &rng, 1.0);
    ref_fill_normal(b.d_sT, ns, &rng, 0.5);
    if (reference(vr, &d, &b)) {
        check_call_failed(r, vr->name, "reference", LA_ERR_OUT_OF_MEMORY);
        goto done;
    }
    const float *g = vr->use_g ? b.g : NULL, *gamma = vr->use_gamma ? b.gamma : NULL;
    for (int f = 0; f < 3; f++) {
        la_gated_opts o = la_gated_opts_default();
        o.form = f == 0 ? LA_FORM_RECURRENT : LA_FORM_CHUNK;
        o.chunk_size = f == 1 ? 64 : 16;
        if (f == 0)
            snprintf(form, sizeof form, "recurrent");
        else
            snprintf(form, sizeof form, "chunk(%d)", (int)o.chunk_size);
        la_status st = vr->per_key
            ? la_gla_forward(r->ctx, &o, &d, b.o, b.sT, b.q, b.k, b.v, b.g, b.s0)
            : la_simple_gla_forward(r->ctx, &o, &d, b.o, b.sT, b.q, b.k, b.v, g, gamma, b.s0);
        if (st) {
            check_call_failed(r, vr->name, form, st);
            continue;
        }
        check_add(r, vr->name, form, "o", ref_max_rel_err(b.o, b.ro, nv), 1e-5);
        check_add(r, vr->name, form, "final_state", ref_max_rel_err(b.sT, b.rsT, ns), 1e-5);
        st = vr->per_key
            ? la_gla_backward(r->ctx, &o, &d, b.dq, b.dk, b.dv, b.dg, b.ds0, b.d_o, b.d_sT, b.q,
                              b.k, b.v, b.g, b.s0)
            : la_simple_gla_backward(r->ctx, &o, &d, b.dq, b.dk, b.dv, vr->use_g ? b.dg : NULL,
                                     b.dgam, b.ds0, b.d_o, b.d_sT, b.q, b.k, b.v, g, gamma,
                                     b.s0);
        if (st) {
            check_call_failed(r, vr->name, form, st);
            continue;
        }
        check_add(r, vr->name, form, "dq", ref_max_rel_err(b.dq, b.rdq, nqk), 1e-5);
        check_add(r, vr->name, form, "dk", ref_max_rel_err(b.dk, b.rdk, nqk), 1e-5);
        check_add(r, vr->name, form, "dv", ref_max_rel_err(b.dv, b.rdv, nv), 1e-5);
        if (vr->use_g) check_add(r, vr->name, form, "dg", ref_max_rel_err(b.dg, b.rdg, ng), 1e-5);
        if (vr->use_gamma) {
            double e = 0;
            for (int64_t h = 0; h < H; h++) {
                const double eh = fabs((double)b.dgam[h] - b.rdgam[h]) /
                                  (b.rdgam_abs[h] > 1e-300 ? b.rdgam_abs[h] : 1e-300);
                if (!(eh <= e)) e = eh;
            }
            check_add(r, vr->name, form, "dg_gamma (cond)", e, 1e-5);
        }
        check_add(r, vr->name, form, "d_initial_state", ref_max_rel_err(b.ds0, b.rds0, ns), 1e-5);
    }
done:
    free(b.q); free(b.k); free(b.v); free(b.g); free(b.gamma); free(b.s0); free(b.d_o);
    free(b.d_sT); free(b.o); free(b.sT); free(b.dq); free(b.dk); free(b.dv); free(b.dg);
    free(b.dgam); free(b.ds0); free(b.ro); free(b.rsT); free(b.rdq); free(b.rdk); free(b.rdv);
    free(b.rdg); free(b.rdgam); free(b.rds0); free(b.rdgam_abs);
}

void check_gla(check_report *r) {
    static const variant vs[] = {
        {"simple_gla g", 0, 1, 0},
        {"simple_gla retnet (g_gamma)", 0, 0, 1},
        {"simple_gla g + retnet", 0, 1, 1},
        {"gla", 1, 1, 0},
    };
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) run_variant(r, &vs[i]);
}
