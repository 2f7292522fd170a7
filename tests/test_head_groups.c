/* The chunk forwards of linear attention and the GLA family process heads in
 * fixed groups (several heads per task). This checks head counts that do not
 * fill a whole group and more than one group, with packed sequences: chunk ==
 * recurrent within float32 rounding, and 1 thread == 2 threads bit for bit. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>

/* Chunk and recurrent forms of one op agree to float32 rounding of sums over
 * at most a few hundred terms: relative error <= 1e-5 (measured ~1e-6). */
#define TOL 1e-5

typedef la_status (*run_fn)(la_ctx *ctx, la_form form, const la_dims *d, float *o, float *S,
                            const float *q, const float *k, const float *v, const float *g);

static la_status run_linear(la_ctx *ctx, la_form form, const la_dims *d, float *o, float *S,
                            const float *q, const float *k, const float *v, const float *g) {
    (void)g;
    la_linear_attn_opts opts = la_linear_attn_opts_default();
    opts.form = form;
    opts.chunk_size = 16;
    return la_linear_attn_forward(ctx, &opts, d, o, S, NULL, q, k, v, NULL, NULL);
}

static la_status run_sgla(la_ctx *ctx, la_form form, const la_dims *d, float *o, float *S,
                          const float *q, const float *k, const float *v, const float *g) {
    la_gated_opts opts = la_gated_opts_default();
    opts.form = form;
    opts.chunk_size = 16;
    return la_simple_gla_forward(ctx, &opts, d, o, S, q, k, v, g, NULL, NULL);
}

static la_status run_gla(la_ctx *ctx, la_form form, const la_dims *d, float *o, float *S,
                         const float *q, const float *k, const float *v, const float *g) {
    la_gated_opts opts = la_gated_opts_default();
    opts.form = form;
    opts.chunk_size = 16;
    return la_gla_forward(ctx, &opts, d, o, S, q, k, v, g, NULL);
}

static void check_op(const char *name, run_fn run, int per_key_gate, int64_t H, la_ctx *c1,
                     la_ctx *c2, la_rng *rng) {
    int64_t cu[4] = {0, 17, 50, 83};
    const int64_t T = 83, K = 12, V = 10, N = 3;
    la_dims d = {.B = 1, .T = T, .H = H, .K = K, .V = V, .cu_seqlens = cu, .n_seqs = N};
    const size_t nqk = (size_t)(T * H * K), nv = (size_t)(T * H * V);
    const size_t ns = (size_t)(N * H * K * V), ng = (size_t)(T * H * (per_key_gate ? K : 1));
    float *q = th_rand_floats(nqk, rng, 0.5), *k = th_rand_floats(nqk, rng, 0.5);
    float *v = th_rand_floats(nv, rng, 1), *g = th_rand_floats(ng, rng, 1);
    for (size_t i = 0; i < ng; i++) g[i] = -0.2f * fabsf(g[i]);
    float *o_rec = th_nan_floats(nv), *o1 = th_nan_floats(nv), *o2 = th_nan_floats(nv);
    float *S_rec = th_nan_floats(ns), *S1 = th_nan_floats(ns), *S2 = th_nan_floats(ns);
    CHECK_STATUS(run(c1, LA_FORM_RECURRENT, &d, o_rec, S_rec, q, k, v, g), LA_OK, name);
    CHECK_STATUS(run(c1, LA_FORM_CHUNK, &d, o1, S1, q, k, v, g), LA_OK, name);
    CHECK_STATUS(run(c2, LA_FORM_CHUNK, &d, o2, S2, q, k, v, g), LA_OK, name);
    CHECK_ERR(ref_max_rel_err_ff(o1, o_rec, nv), TOL, "%s H=%lld: chunk o vs recurrent", name,
              (long long)H);
    CHECK_ERR(ref_max_rel_err_ff(S1, S_rec, ns), TOL, "%s H=%lld: chunk state vs recurrent",
              name, (long long)H);
    CHECK(th_bitwise_equal(o1, o2, nv) && th_bitwise_equal(S1, S2, ns),
          "%s H=%lld: 1 and 2 threads differ", name, (long long)H);
    free(q), free(k), free(v), free(g), free(o_rec), free(o1), free(o2);
    free(S_rec), free(S1), free(S2);
}

int main(void) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, 99);
    const int64_t heads[] = {1, 3, 5, 6, 9};
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        check_op("linear_attn", run_linear, 0, heads[i], c1, c2, &rng);
        check_op("simple_gla", run_sgla, 0, heads[i], c1, c2, &rng);
        check_op("gla", run_gla, 1, heads[i], c1, c2, &rng);
    }
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
    return th_summary("test_head_groups");
}
