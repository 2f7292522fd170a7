/* Simple GLA (per-token scalar decay) and the RetNet preset: recurrent and
 * chunk forms against the float64 reference, forward and backward, with g
 * only, g_gamma only, both, and neither (plain linear attention). */
#include "gla_cases.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* la_retnet_decay against log(1 - 2^(-5-h)) computed another way (float
 * rounding only: 1 ulp), and its argument checks. */
static void test_retnet(void) {
    enum { H = 40 };
    float g[H];
    CHECK_STATUS(la_retnet_decay(g, H), LA_OK, "retnet decay");
    int ok = 1;
    for (int h = 0; h < H; h++) {
        const double want = log(1.0 - 1.0 / (32.0 * pow(2.0, h)));
        ok &= fabs((double)g[h] - want) <= 2e-7 * fabs(want) && g[h] < 0;
    }
    CHECK(ok, "retnet decay = log(1 - 2^(-5-h))");
    CHECK(fabs(g[0] - log(31.0 / 32.0)) < 1e-7, "head 0 decays by 31/32: %g", (double)g[0]);
    float b[2] = {NAN, NAN};
    CHECK_STATUS(la_retnet_decay(b, 0), LA_ERR_INVALID_SIZE, "H = 0");
    CHECK(th_untouched(b, 2), "H = 0 writes nothing");
    CHECK_STATUS(la_retnet_decay(NULL, 3), LA_ERR_NULL_POINTER, "NULL g_gamma");
}

/* cpu-glasplit: the chunk forward with one sequence split over time
 * (src/ops/gla/split.c: N*H < 8 and >= 2 segments of 16 chunks). Chunks of
 * 16 and 32 at T = 1100 split (5 and 3 segments). Every form against
 * float64 (3 threads: three lanes), and the forward's outputs and final
 * state bit for bit equal at 1, 2, 3 and 4 threads. Cases: initial and
 * final state with resets g = -1e4 and a stretch of g = 0; g = 0
 * everywhere; RetNet (g_gamma only, no initial state); varlen with an
 * empty sequence (H = 2); cpu-bwdsplit: odd T = 4111 (17, 9, 5 segments at chunks
 * 16, 32, 64: the last one a chunk of 15 tokens)
 * with resets on segment boundaries, mild gates (segment decays ~0.5), and
 * the backward (same checks). */
static void test_split(void) {
    la_ctx *ctx[4] = {th_ctx(1), th_ctx(2), th_ctx(3), th_ctx(4)};
    la_rng rng;
    la_rng_seed(&rng, 800);
    const int64_t cu[] = {0, 37, 37, 1100};
    for (int v = 0; v < 8; v++) {
        /* cpu-split2: the backward splits only 1..3 (sequence, head) pairs:
         * case 6 is varlen with an empty sequence at H = 1 (3 pairs), case
         * 7 one sequence of 3 heads */
        gcase c = v == 7   ? gc_make(0, 1, 1100, 3, 24, 20, NULL, 0, GC_ALL, &rng)
                  : v == 6 ? gc_make(0, 1, 1100, 1, 24, 20, cu, 3, GC_ALL, &rng)
                  : v == 5 ? gc_make(0, 1, 1100, 1, 24, 20, NULL, 0, GC_ALL, &rng)
                  : v == 4 ? gc_make(0, 1, 4111, 1, 16, 12, NULL, 0, GC_ALL, &rng)
                  : v == 3 ? gc_make(0, 1, 1100, 2, 24, 20, cu, 3, GC_ALL, &rng)
                  : v == 2 ? gc_make(0, 1, 1100, 1, 24, 20, NULL, 0, GC_GAMMA | GC_DST, &rng)
                           : gc_make(0, 1, 1100, 1, 24, 20, NULL, 0, GC_ALL, &rng);
        if (v == 0) {
            for (int64_t t = 100; t < 1100; t += 197) c.g[t] = -1e4f;
            for (int64_t t = 500; t < 800; t++) c.g[t] = 0.0f;
        }
        if (v == 1)
            for (size_t t = 0; t < c.ng; t++) c.g[t] = 0.0f;
        if (v == 3)
            for (int64_t t = 300; t < 1100; t += 211) c.g[t * 2 + 1] = -1e4f;
        if (v == 6)
            for (int64_t t = 300; t < 1100; t += 211) c.g[t] = -1e4f;
        if (v == 5) /* mild gates: segment decays ~0.5, the carried state matters */
            for (size_t t = 0; t < c.ng; t++) c.g[t] *= 0.01f;
        if (v == 4) /* resets on segment boundaries (chunks 16 and 32), a stretch of g = 0 */
            for (int64_t t = 0; t < 4111; t++)
                c.g[t] = t % 256 == 0 || t % 512 == 511 ? -1e4f : t / 256 == 5 ? 0.0f : c.g[t];
        char label[64];
        snprintf(label, sizeof label, "simple GLA split over time, case %d", v);
        gc_check_forms(&c, ctx[2], label);
        /* chunk 64: T = 4111 splits (65 chunks), T = 1100 does not (cpu-split2) */
        for (int64_t chunk = 16; chunk <= 64; chunk *= 2) {
            la_gated_opts o = gc_opts(LA_FORM_CHUNK, chunk);
            gc_check_fwd_threads(&c, ctx, 4, &o, label, chunk);
            gc_check_bwd_threads(&c, ctx, &o, label, chunk);
        }
        gc_free(&c);
    }
    for (int t = 0; t < 4; t++) la_ctx_destroy(ctx[t]);
}

int main(void) {
    test_split();
    test_retnet();
    gla_test_ref_fd(0);
    /* gates: g only, g_gamma only (RetNet), both, neither */
    const int gate_sets[] = {GC_G, GC_GAMMA, GC_G | GC_GAMMA, 0};
    for (int i = 0; i < 4; i++) {
        const int f = gate_sets[i] | GC_S0 | GC_DST;
        gla_test_sweep(0, i == 2 ? f : (f & ~GC_S0), 100 + (uint64_t)i, i == 2);
        gla_test_varlen(0, f, 200 + (uint64_t)i);
        gla_test_threads(0, f, 300 + (uint64_t)i);
    }
    gla_test_long(0, GC_G | GC_GAMMA | GC_S0 | GC_DST, 400, 3);
    gla_test_long(0, GC_GAMMA, 401, 1);
    gla_test_pieces(0, GC_G | GC_GAMMA, 500);
    gla_test_pieces(0, GC_GAMMA, 501);
    gla_test_extreme(0, 600);
    gla_test_ckpt_paths(0, 610);
    gla_test_odd_chunks(0, GC_ALL, 700);
    gla_test_bad(0);
    gc_print_worst("simple GLA");
    return th_summary("simple_gla");
}
