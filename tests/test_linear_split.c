/* The chunk forward of kernel linear attention split over time (few
 * sequences x head groups, long sequences: linear_attn.h): outputs, final
 * state and norm against the float64 reference; bit for bit the same for
 * 1, 2 and 3 threads; with and without normaliser, initial state and
 * several sequences of unequal length (cu_seqlens), segments cut in the
 * middle of a sequence and a last partial chunk. */
#include "harness.h"
#include "ref_linear_attn.h"
#include "ref_util.h"

#include <stdlib.h>
#include <string.h>

#define CHECK_TOL(err, tol, fmt, ...) \
    th_check((err) <= (tol), __FILE__, __LINE__, "err %.3g > tol %.3g: " fmt, (double)(err), \
             (double)(tol), __VA_ARGS__)

static void run_case(la_feature_map fm, int normalize, int init, int varlen, uint64_t seed) {
    const int64_t T = 1001, H = 2, K = 24, V = 19, C = 16; /* segments of 16 chunks: 256 tokens */
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
    float *v = th_rand_floats(nv, &rng, 1);
    float *S0 = init ? th_rand_floats(ns, &rng, 1) : NULL, *z0 = NULL;
    if (normalize) { /* positive features: a denominator bounded away from 0 */
        ref_fill_uniform(q, nqk, &rng, 0.1, 1.0);
        ref_fill_uniform(k, nqk, &rng, 0.1, 1.0);
        if (init) {
            ref_fill_uniform(S0, ns, &rng, 0.0, 1.0);
            z0 = th_rand_floats(nz, &rng, 1);
            ref_fill_uniform(z0, nz, &rng, 0.2, 2.0);
        }
    }
    la_linear_attn_opts o = la_linear_attn_opts_default();
    o.feature_map = fm;
    o.normalize = normalize;
    o.form = LA_FORM_CHUNK;
    o.chunk_size = C;
    double *ro = th_doubles(nv), *rS = th_doubles(ns), *rz = th_doubles(nz);
    CHECK(ref_linear_attn_forward_all(&o, &d, ro, rS, normalize ? rz : NULL, q, k, v, S0, z0) == 0,
          "reference");
    float *out[3], *fS[3], *fz[3];
    char lbl[96];
    snprintf(lbl, sizeof lbl, "fm=%d norm=%d init=%d varlen=%d", (int)fm, normalize, init, varlen);
    for (int t = 0; t < 3; t++) {
        la_ctx *ctx = th_ctx(t + 1);
        out[t] = th_nan_floats(nv);
        fS[t] = th_nan_floats(ns);
        fz[t] = th_nan_floats(nz);
        CHECK_STATUS(la_linear_attn_forward(ctx, &o, &d, out[t], fS[t], normalize ? fz[t] : NULL,
                                            q, k, v, S0, z0),
                     LA_OK, "split chunk forward");
        la_ctx_destroy(ctx);
        CHECK_TOL(ref_max_rel_err(out[t], ro, nv), 1e-5, "o vs float64, %d threads, %s", t + 1,
                  lbl);
        CHECK_TOL(ref_max_rel_err(fS[t], rS, ns), 1e-5, "final state vs float64, %d threads, %s",
                  t + 1, lbl);
        if (normalize)
            CHECK_TOL(ref_max_rel_err(fz[t], rz, nz), 1e-5, "final norm vs float64, %d threads, %s",
                      t + 1, lbl);
        if (t > 0) {
            CHECK(th_bitwise_equal(out[t], out[0], nv), "o: %d threads == 1 thread, bitwise, %s",
                  t + 1, lbl);
            CHECK(th_bitwise_equal(fS[t], fS[0], ns),
                  "final state: %d threads == 1 thread, bitwise, %s", t + 1, lbl);
            if (normalize)
                CHECK(th_bitwise_equal(fz[t], fz[0], nz),
                      "final norm: %d threads == 1 thread, bitwise, %s", t + 1, lbl);
        }
    }
    for (int t = 0; t < 3; t++) {
        free(out[t]);
        free(fS[t]);
        free(fz[t]);
    }
    free(q); free(k); free(v); free(S0); free(z0); free(ro); free(rS); free(rz);
}

int main(void) {
    uint64_t seed = 1;
    for (int varlen = 0; varlen < 2; varlen++)
        for (int init = 0; init < 2; init++) {
            run_case(LA_FEATURE_IDENTITY, 0, init, varlen, seed++);
            run_case(LA_FEATURE_ELU1, 1, init, varlen, seed++);
            run_case(LA_FEATURE_RELU, 1, init, varlen, seed++);
        }
    return th_summary("test_linear_split");
}
