/* Kernel linear attention's chunk forward and backward split over time
 * (few sequences x heads, long sequences: linear_attn.h, split.c):
 * outputs, final state and norm, and every gradient against the float64
 * reference; bit for bit the same for 1, 2, 3 and 4 threads (the lanes of
 * the pipeline differ with the thread count: one head gives 2-4 lanes, two
 * heads 1-2); with and without normaliser, initial state, d_final_state,
 * several sequences of unequal length (cu_seqlens), segments cut in the
 * middle of a sequence and a last partial chunk. */
#include "harness.h"
#include "ref_linear_attn.h"
#include "ref_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_TOL(err, tol, fmt, ...) \
    th_check((err) <= (tol), __FILE__, __LINE__, "err %.3g > tol %.3g: " fmt, (double)(err), \
             (double)(tol), __VA_ARGS__)

#define NTHR 4

/* max |got - want| / max(|want|, magnitude) (as test_linear_attn.c) */
static double grad_err(const float *got, const double *want, const double *mag, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - want[i]);
        if (!(e <= num)) num = e;
        if (fabs(want[i]) > den) den = fabs(want[i]);
        if (mag && mag[i] > den) den = mag[i];
    }
    return num / (den > 1e-30 ? den : 1e-30);
}

static void run_case(la_feature_map fm, int normalize, int init, int varlen, int64_t H,
                     uint64_t seed) {
    const int64_t T = 1001, K = 24, V = 19, C = 16; /* segments of 16 chunks: 256 tokens */
    int64_t cu[3] = {0, 300, T};
    la_dims d = th_dims(1, T, H, K, V);
    if (varlen) {
        d.cu_seqlens = cu;
        d.n_seqs = 2;
    }
    const int64_t N = varlen ? 2 : 1;
    const size_t nqk = (size_t)(T * H * K), nv = (size_t)(T * H * V);
    const size_t ns = (size_t)(N * H * K * V), nz = (size_t)(N * H * K);
    la_rng rng;
    la_rng_seed(&rng, seed);
    float *q = th_rand_floats(nqk, &rng, 1), *k = th_rand_floats(nqk, &rng, 1);
    float *v = th_rand_floats(nv, &rng, 1), *d_o = th_rand_floats(nv, &rng, 1);
    float *S0 = init ? th_rand_floats(ns, &rng, 1) : NULL, *z0 = NULL;
    float *dST = init ? th_rand_floats(ns, &rng, 1) : NULL, *dzT = NULL;
    if (normalize) { /* positive features: a denominator bounded away from 0 */
        ref_fill_uniform(q, nqk, &rng, 0.1, 1.0);
        ref_fill_uniform(k, nqk, &rng, 0.1, 1.0);
        if (init) {
            ref_fill_uniform(S0, ns, &rng, 0.0, 1.0);
            z0 = th_rand_floats(nz, &rng, 1);
            ref_fill_uniform(z0, nz, &rng, 0.2, 2.0);
            dzT = th_rand_floats(nz, &rng, 1);
        }
    }
    la_linear_attn_opts o = la_linear_attn_opts_default();
    o.feature_map = fm;
    o.normalize = normalize;
    o.causal = 1;
    o.form = LA_FORM_CHUNK;
    o.chunk_size = C;
    double *ro = th_doubles(nv), *rS = th_doubles(ns), *rz = th_doubles(nz);
    double *rg[5] = {th_doubles(nqk), th_doubles(nqk), th_doubles(nv), th_doubles(ns),
                     th_doubles(nz)};
    double *mg[5] = {th_doubles(nqk), th_doubles(nqk), th_doubles(nv), th_doubles(ns),
                     th_doubles(nz)};
    const size_t gn[5] = {nqk, nqk, nv, ns, nz};
    static const char *const gname[5] = {"dq", "dk", "dv", "d_initial_state", "d_initial_norm"};
    CHECK(ref_linear_attn_forward_all(&o, &d, ro, rS, normalize ? rz : NULL, q, k, v, S0, z0) == 0,
          "reference");
    CHECK(ref_linear_attn_backward_all(&o, &d, 0, rg[0], rg[1], rg[2], rg[3],
                                       normalize ? rg[4] : NULL, d_o, dST, dzT, q, k, v, S0,
                                       z0) == 0,
          "reference backward");
    CHECK(ref_linear_attn_backward_all(&o, &d, 1, mg[0], mg[1], mg[2], mg[3],
                                       normalize ? mg[4] : NULL, d_o, dST, dzT, q, k, v, S0,
                                       z0) == 0,
          "reference backward magnitudes");
    float *out[NTHR], *fS[NTHR], *fz[NTHR], *gr[NTHR][5];
    char lbl[128];
    snprintf(lbl, sizeof lbl, "fm=%d norm=%d init=%d varlen=%d H=%lld", (int)fm, normalize, init,
             varlen, (long long)H);
    const int ng = normalize ? 5 : 4;
    for (int t = 0; t < NTHR; t++) {
        la_ctx *ctx = th_ctx(t + 1);
        out[t] = th_nan_floats(nv);
        fS[t] = th_nan_floats(ns);
        fz[t] = th_nan_floats(nz);
        for (int g = 0; g < 5; g++) gr[t][g] = th_nan_floats(gn[g]);
        CHECK_STATUS(la_linear_attn_forward(ctx, &o, &d, out[t], fS[t], normalize ? fz[t] : NULL,
                                            q, k, v, S0, z0),
                     LA_OK, "split chunk forward");
        CHECK_STATUS(la_linear_attn_backward(ctx, &o, &d, gr[t][0], gr[t][1], gr[t][2], gr[t][3],
                                             normalize ? gr[t][4] : NULL, d_o, dST, dzT, q, k, v,
                                             S0, z0),
                     LA_OK, "split chunk backward");
        la_ctx_destroy(ctx);
        CHECK_TOL(ref_max_rel_err(out[t], ro, nv), 1e-5, "o vs float64, %d threads, %s", t + 1,
                  lbl);
        CHECK_TOL(ref_max_rel_err(fS[t], rS, ns), 1e-5, "final state vs float64, %d threads, %s",
                  t + 1, lbl);
        if (normalize)
            CHECK_TOL(ref_max_rel_err(fz[t], rz, nz), 1e-5, "final norm vs float64, %d threads, %s",
                      t + 1, lbl);
        for (int g = 0; g < ng; g++)
            CHECK_TOL(grad_err(gr[t][g], rg[g], mg[g], gn[g]), 1e-5,
                      "%s vs float64, %d threads, %s", gname[g], t + 1, lbl);
        if (t > 0) {
            CHECK(th_bitwise_equal(out[t], out[0], nv), "o: %d threads == 1 thread, bitwise, %s",
                  t + 1, lbl);
            CHECK(th_bitwise_equal(fS[t], fS[0], ns),
                  "final state: %d threads == 1 thread, bitwise, %s", t + 1, lbl);
            if (normalize)
                CHECK(th_bitwise_equal(fz[t], fz[0], nz),
                      "final norm: %d threads == 1 thread, bitwise, %s", t + 1, lbl);
            for (int g = 0; g < ng; g++)
                CHECK(th_bitwise_equal(gr[t][g], gr[0][g], gn[g]),
                      "%s: %d threads == 1 thread, bitwise, %s", gname[g], t + 1, lbl);
        }
    }
    for (int t = 0; t < NTHR; t++) {
        free(out[t]);
        free(fS[t]);
        free(fz[t]);
        for (int g = 0; g < 5; g++) free(gr[t][g]);
    }
    for (int g = 0; g < 5; g++) {
        free(rg[g]);
        free(mg[g]);
    }
    free(q); free(k); free(v); free(d_o); free(S0); free(z0); free(dST); free(dzT);
    free(ro); free(rS); free(rz);
}

int main(void) {
    uint64_t seed = 1;
    for (int64_t H = 1; H <= 2; H++)
        for (int varlen = 0; varlen < 2; varlen++)
            for (int init = 0; init < 2; init++) {
                run_case(LA_FEATURE_IDENTITY, 0, init, varlen, H, seed++);
                run_case(LA_FEATURE_ELU1, 1, init, varlen, H, seed++);
                run_case(LA_FEATURE_RELU, 1, init, varlen, H, seed++);
            }
    return th_summary("test_linear_split");
}
