/* The decoder with LA_OP_LINEAR_ATTN: T steps one token at a time equal the
 * recurrent form bit for bit (the same step function) and the chunk form
 * within float32 rounding; state set/get round trip and reset; N > 1 and
 * H > 1 sequences and heads stepping together. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_TOL(err, tol, fmt, ...) \
    th_check((err) <= (tol), __FILE__, __LINE__, "err %.3g > tol %.3g: " fmt, (double)(err), \
             (double)(tol), __VA_ARGS__)

static const char *fm_name(la_feature_map f) {
    return f == LA_FEATURE_IDENTITY ? "identity" : f == LA_FEATURE_ELU1 ? "elu1" : "relu";
}

/* Token t of x [N,T,H,D] into y [N,H,D]. */
static void token(float *y, const float *x, int64_t N, int64_t T, int64_t H, int64_t D,
                  int64_t t) {
    for (int64_t n = 0; n < N; n++)
        memcpy(y + n * H * D, x + (n * T + t) * H * D, (size_t)(H * D) * sizeof(float));
}

static void test_decode_equals_forms(la_ctx *ctx) {
    const int64_t N = 3, T = 70, H = 2, K = 12, V = 17;
    const size_t nqk = (size_t)(N * T * H * K), nv = (size_t)(N * T * H * V);
    const size_t ns = (size_t)(N * H * K * V), nz = (size_t)(N * H * K);
    la_rng rng;
    la_rng_seed(&rng, 21);
    for (int fm = 0; fm < 3; fm++)
        for (int norm = 0; norm < 2; norm++)
            for (int init = 0; init < 2; init++) {
                float *q = th_rand_floats(nqk, &rng, 1), *k = th_rand_floats(nqk, &rng, 1);
                if (norm && fm == LA_FEATURE_IDENTITY) { /* keep the denominator positive */
                    ref_fill_uniform(q, nqk, &rng, 0.1, 1.0);
                    ref_fill_uniform(k, nqk, &rng, 0.1, 1.0);
                }
                float *v = th_rand_floats(nv, &rng, 1), *S0 = th_rand_floats(ns, &rng, 1);
                float *z0 = th_rand_floats(nz, &rng, 1);
                ref_fill_uniform(z0, nz, &rng, 0.2, 2.0);

                la_linear_attn_opts o = la_linear_attn_opts_default();
                o.feature_map = (la_feature_map)fm;
                o.normalize = norm;
                o.causal = 1;
                o.form = LA_FORM_RECURRENT;
                o.scale = init ? 0.37f : 0; /* explicit or K^-1/2 */
                o.eps = init ? 1e-3f : LA_LINEAR_ATTN_DEFAULT_EPS;
                la_dims d = {.B = N, .T = T, .H = H, .K = K, .V = V};
                float *o_rec = th_nan_floats(nv), *S_rec = th_nan_floats(ns);
                float *z_rec = th_nan_floats(nz), *o_chk = th_nan_floats(nv);
                float *S_chk = th_nan_floats(ns);
                CHECK_STATUS(la_linear_attn_forward(ctx, &o, &d, o_rec, S_rec, norm ? z_rec : NULL,
                                                    q, k, v, init ? S0 : NULL,
                                                    init && norm ? z0 : NULL),
                             LA_OK, "recurrent forward");
                o.form = LA_FORM_CHUNK;
                o.chunk_size = 16;
                CHECK_STATUS(la_linear_attn_forward(ctx, &o, &d, o_chk, S_chk, NULL, q, k, v,
                                                    init ? S0 : NULL, init && norm ? z0 : NULL),
                             LA_OK, "chunk forward");

                la_decoder_config cfg;
                memset(&cfg, 0, sizeof cfg);
                cfg.op = LA_OP_LINEAR_ATTN;
                cfg.N = N;
                cfg.H = H;
                cfg.K = K;
                cfg.V = V;
                cfg.feature_map = (la_feature_map)fm;
                cfg.normalize = norm;
                cfg.eps = init ? o.eps : 0; /* 0: the default, as the op's */
                cfg.scale = o.scale;
                la_decoder *dec = NULL;
                CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_OK, "decoder create");
                if (!dec) continue;
                if (init)
                    CHECK_STATUS(la_decoder_set_state(dec, S0, norm ? z0 : NULL), LA_OK,
                                 "set state");
                float *o_dec = th_nan_floats(nv), *qt = th_nan_floats((size_t)(N * H * K));
                float *kt = th_nan_floats((size_t)(N * H * K)), *vt = th_nan_floats((size_t)(N * H * V));
                float *ot = th_nan_floats((size_t)(N * H * V));
                for (int64_t t = 0; t < T; t++) {
                    token(qt, q, N, T, H, K, t);
                    token(kt, k, N, T, H, K, t);
                    token(vt, v, N, T, H, V, t);
                    CHECK_STATUS(la_decoder_step(ctx, dec, ot, qt, kt, vt, NULL, NULL, NULL), LA_OK,
                                 "step");
                    for (int64_t n = 0; n < N; n++)
                        memcpy(o_dec + (n * T + t) * H * V, ot + n * H * V,
                               (size_t)(H * V) * sizeof(float));
                }
                float *S_dec = th_nan_floats(ns), *z_dec = th_nan_floats(nz);
                CHECK_STATUS(la_decoder_get_state(dec, S_dec, norm ? z_dec : NULL), LA_OK,
                             "get state");
                CHECK(th_bitwise_equal(o_dec, o_rec, nv),
                      "decoder == recurrent, bitwise: o (%s norm=%d init=%d)",
                      fm_name((la_feature_map)fm), norm, init);
                CHECK(th_bitwise_equal(S_dec, S_rec, ns),
                      "decoder == recurrent, bitwise: state (%s norm=%d init=%d)",
                      fm_name((la_feature_map)fm), norm, init);
                if (norm)
                    CHECK(th_bitwise_equal(z_dec, z_rec, nz),
                          "decoder == recurrent, bitwise: norm (%s init=%d)",
                          fm_name((la_feature_map)fm), init);
                /* Chunk form: float32 rounding, both against the same sums. */
                CHECK_TOL(ref_max_rel_err_ff(o_dec, o_chk, nv), 1e-5,
                          "decoder vs chunk: o (%s norm=%d init=%d)", fm_name((la_feature_map)fm),
                          norm, init);
                CHECK_TOL(ref_max_rel_err_ff(S_dec, S_chk, ns), 1e-5,
                          "decoder vs chunk: state (%s norm=%d init=%d)",
                          fm_name((la_feature_map)fm), norm, init);

                /* Reset: back to zero, and the first step matches a fresh run. */
                CHECK_STATUS(la_decoder_reset(dec), LA_OK, "reset");
                float *S_zero = th_nan_floats(ns);
                CHECK_STATUS(la_decoder_get_state(dec, S_zero, NULL), LA_OK, "get after reset");
                int zero = 1;
                for (size_t i = 0; i < ns; i++) zero &= S_zero[i] == 0;
                CHECK(zero, "reset zeroes the state");
                la_decoder_destroy(dec);
                free(q); free(k); free(v); free(S0); free(z0); free(o_rec); free(S_rec);
                free(z_rec); free(o_chk); free(S_chk); free(o_dec); free(qt); free(kt); free(vt);
                free(ot); free(S_dec); free(z_dec); free(S_zero);
            }
}

static void test_state_round_trip(void) {
    const int64_t N = 2, H = 3, K = 5, V = 4;
    const size_t ns = (size_t)(N * H * K * V), nz = (size_t)(N * H * K);
    la_decoder_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.op = LA_OP_LINEAR_ATTN;
    cfg.N = N;
    cfg.H = H;
    cfg.K = K;
    cfg.V = V;
    cfg.feature_map = LA_FEATURE_ELU1;
    cfg.normalize = 1;
    la_decoder *dec = NULL;
    CHECK_STATUS(la_decoder_create(&dec, &cfg), LA_OK, "create");
    if (!dec) return;
    la_rng rng;
    la_rng_seed(&rng, 5);
    float *S = th_rand_floats(ns, &rng, 1), *z = th_rand_floats(nz, &rng, 1);
    float *S2 = th_nan_floats(ns), *z2 = th_nan_floats(nz);
    CHECK_STATUS(la_decoder_set_state(dec, S, z), LA_OK, "set");
    CHECK_STATUS(la_decoder_get_state(dec, S2, z2), LA_OK, "get");
    CHECK(th_bitwise_equal(S, S2, ns) && th_bitwise_equal(z, z2, nz), "set/get round trip");
    /* Unnormalised decoders have no normaliser state. */
    cfg.normalize = 0;
    la_decoder *d2 = NULL;
    CHECK_STATUS(la_decoder_create(&d2, &cfg), LA_OK, "create unnormalised");
    if (d2) {
        CHECK_STATUS(la_decoder_set_state(d2, S, z), LA_ERR_INVALID_ARGUMENT,
                     "norm given to an unnormalised decoder");
        la_decoder_destroy(d2);
    }
    /* A bad feature map / eps is refused. */
    cfg.feature_map = (la_feature_map)7;
    CHECK_STATUS(la_decoder_create(&d2, &cfg), LA_ERR_INVALID_ARGUMENT, "bad feature map");
    cfg.feature_map = LA_FEATURE_RELU;
    cfg.normalize = 1; /* eps is read only when normalised */
    cfg.eps = -1;
    CHECK_STATUS(la_decoder_create(&d2, &cfg), LA_ERR_INVALID_ARGUMENT, "bad eps");
    la_decoder_destroy(dec);
    free(S); free(z); free(S2); free(z2);
}

/* 1 and 2 threads step identically. */
static void test_decoder_threads(void) {
    const int64_t N = 4, H = 3, K = 9, V = 11;
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    la_decoder_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.op = LA_OP_LINEAR_ATTN;
    cfg.N = N;
    cfg.H = H;
    cfg.K = K;
    cfg.V = V;
    cfg.feature_map = LA_FEATURE_ELU1;
    cfg.normalize = 1;
    la_decoder *a = NULL, *b = NULL;
    CHECK_STATUS(la_decoder_create(&a, &cfg), LA_OK, "create a");
    CHECK_STATUS(la_decoder_create(&b, &cfg), LA_OK, "create b");
    la_rng rng;
    la_rng_seed(&rng, 8);
    int same = 1;
    for (int t = 0; t < 20 && a && b; t++) {
        float *q = th_rand_floats((size_t)(N * H * K), &rng, 1);
        float *k = th_rand_floats((size_t)(N * H * K), &rng, 1);
        float *v = th_rand_floats((size_t)(N * H * V), &rng, 1);
        float *oa = th_nan_floats((size_t)(N * H * V)), *ob = th_nan_floats((size_t)(N * H * V));
        CHECK_STATUS(la_decoder_step(c1, a, oa, q, k, v, NULL, NULL, NULL), LA_OK, "step 1");
        CHECK_STATUS(la_decoder_step(c2, b, ob, q, k, v, NULL, NULL, NULL), LA_OK, "step 2");
        same &= th_bitwise_equal(oa, ob, (size_t)(N * H * V));
        free(q); free(k); free(v); free(oa); free(ob);
    }
    CHECK(same, "decoder: 1 thread == 2 threads, bitwise");
    la_decoder_destroy(a);
    la_decoder_destroy(b);
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

int main(void) {
    la_ctx *ctx = th_ctx(2);
    test_decode_equals_forms(ctx);
    test_state_round_trip();
    test_decoder_threads();
    la_ctx_destroy(ctx);
    return th_summary("test_decoder_linear");
}
