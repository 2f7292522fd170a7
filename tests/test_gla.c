/* GLA (per-key decay): recurrent and chunk forms against the float64
 * reference, forward and backward, with the structural and extreme-gate
 * tests of the family. */
#include "gla_cases.h"

#include <stdio.h>
#include <stdlib.h>

/* Strong gates: the chunk form's sub-blocks of 16 tokens take their own
 * pairs as one product of pre-scaled rows when the block's gate span (the
 * largest decay of a key over the block, in log space) is <= 30, with
 * factors up to e^30, and pair by pair above. Log-gates uniform in
 * [-lo, 0) put spans on both sides of the limit (lo = 4: mean span ~30 over
 * 15 steps, i.e. many blocks each way); one key per token at -1e4 in the
 * second half mixes a reset into blocks whose other keys are mild. Same
 * bounds against float64 as everywhere, forward and backward. */
static void test_strong_gates(uint64_t seed) {
    la_ctx *ctx = th_ctx(2);
    la_rng rng;
    la_rng_seed(&rng, seed);
    /* cpu-gla14: 1.8 puts the 32-token spans around 30 (chunk 32 / 64
     * choose sub-blocks of 32 or 16 chunk by chunk, gla_sub_size) */
    static const double lo[] = {1.0, 1.8, 2.0, 4.0, 8.0};
    for (int a = 0; a < 5; a++) {
        gcase c = gc_make(1, 1, 150, 2, 40, 24, NULL, 0, GC_ALL, &rng);
        for (size_t i = 0; i < c.ng; i++) c.g[i] = (float)(-lo[a] * la_rng_uniform(&rng));
        char label[64];
        snprintf(label, sizeof label, "GLA gates in [-%g, 0)", lo[a]);
        gc_check_forms(&c, ctx, label);
        for (int64_t t = 75; t < 150; t += 7) c.g[(size_t)((t * 2 + t % 2) * 40 + t % 40)] = -1e4f;
        snprintf(label, sizeof label, "GLA gates in [-%g, 0), one key reset", lo[a]);
        gc_check_forms(&c, ctx, label);
        gc_free(&c);
    }
    la_ctx_destroy(ctx);
}

/* cpu-glafwd18: the chunk forward's head groups (la__gla_fwd_heads) depend
 * on the thread count: one sequence of 11 heads runs as 8 + 3 heads per task
 * at 1 thread, 6 + 5 at 2, 4 + 4 + 3 at 3 (and 3 sequences of 11 as 8 + 3
 * at any count). Against float64 at 2 threads, and the forward's output and
 * final state bit for bit equal at 1, 2, 3 threads (NaN-poisoned), chunks
 * 16 and 64 (the last chunk short), with a key reset and a stretch of g = 0. */
static void test_fwd_head_groups(uint64_t seed) {
    la_ctx *ctx[3] = {th_ctx(1), th_ctx(2), th_ctx(3)};
    la_rng rng;
    la_rng_seed(&rng, seed);
    for (int b = 1; b <= 3; b += 2) {
        gcase c = gc_make(1, b, 150, 11, 24, 20, NULL, 0, GC_ALL, &rng);
        for (int64_t t = 0; t < c.d.T; t += 13) c.g[(size_t)((t * 11 + t % 11) * 24 + t % 24)] = -1e4f;
        for (int64_t t = 60; t < 80; t++)
            for (int64_t x = 0; x < 24; x++) c.g[(size_t)((t * 11 + 5) * 24 + x)] = 0.0f;
        char label[64];
        snprintf(label, sizeof label, "GLA head groups, B = %d, H = 11", b);
        gc_check_forms(&c, ctx[1], label);
        for (int64_t chunk = 16; chunk <= 64; chunk *= 4) {
            la_gated_opts o = gc_opts(LA_FORM_CHUNK, chunk);
            gc_check_fwd_threads(&c, ctx, 3, &o, label, chunk);
        }
        gc_free(&c);
    }
    for (int t = 0; t < 3; t++) la_ctx_destroy(ctx[t]);
}

/* cpu-bwdsplit: the chunk forward with one sequence split over time
 * (src/ops/gla/split_gla.c: N*H < 8 and >= 2 segments of 16 chunks).
 * Chunks 16 and 32 at T = 1100 (5 and 3 segments) and T = 4111 (17, 9 and,
 * chunk 64 in the float64 check, 5: the last one a chunk of 15 tokens).
 * Every form against float64 with 3 threads (three lanes), and the
 * forward's outputs and final state, the backward's gradients (split_bwd.c)
 * bit for bit equal at 1, 2, 3, 4 threads (NaN-poisoned). Cases: initial and final state with a reset of
 * every key (-1e4) on segment boundaries, one key reset elsewhere and a
 * stretch of g = 0; g = 0 everywhere; varlen with an empty sequence
 * (H = 2); odd T, no initial state; mild gates that differ per key (the
 * state carried across segments matters, per key). */
static void test_split(void) {
    la_ctx *ctx[4] = {th_ctx(1), th_ctx(2), th_ctx(3), th_ctx(4)};
    la_rng rng;
    la_rng_seed(&rng, 1900);
    const int64_t cu[] = {0, 37, 37, 1100};
    for (int v = 0; v < 7; v++) {
        /* cpu-split2: the backward splits only 1..3 (sequence, head) pairs:
         * case 5 is varlen with an empty sequence at H = 1 (3 pairs), case
         * 6 one sequence of 3 heads */
        gcase c = v == 6   ? gc_make(1, 1, 1100, 3, 24, 20, NULL, 0, GC_ALL, &rng)
                  : v == 5 ? gc_make(1, 1, 1100, 1, 24, 20, cu, 3, GC_ALL, &rng)
                  : v == 4 ? gc_make(1, 1, 1100, 1, 24, 20, NULL, 0, GC_ALL, &rng)
                  : v == 3 ? gc_make(1, 1, 4111, 1, 16, 12, NULL, 0, GC_DST, &rng)
                  : v == 2 ? gc_make(1, 1, 1100, 2, 24, 20, cu, 3, GC_ALL, &rng)
                           : gc_make(1, 1, 1100, 1, 24, 20, NULL, 0, GC_ALL, &rng);
        const int64_t K = c.K, T = c.d.T, H = c.H;
        if (v == 0)
            for (int64_t t = 0; t < T; t++)
                for (int64_t x = 0; x < K; x++) {
                    float *g = &c.g[(t * H) * K + x];
                    if (t % 256 == 0 || (t % 97 == 5 && x == t % K)) *g = -1e4f;
                    if (t >= 500 && t < 800) *g = 0.0f;
                }
        if (v == 1)
            for (size_t i = 0; i < c.ng; i++) c.g[i] = 0.0f;
        if (v == 2)
            for (int64_t t = 300; t < T; t += 211) c.g[(t * H + 1) * K + t % K] = -1e4f;
        if (v == 5)
            for (int64_t t = 300; t < T; t += 211) c.g[t * K + t % K] = -1e4f;
        if (v == 4) /* mild gates, different per key: segment decays 0.03-0.8 */
            for (int64_t t = 0; t < T; t++)
                for (int64_t x = 0; x < K; x++) c.g[t * K + x] *= 0.003f * (float)(1 + x % 5);
        char label[64];
        snprintf(label, sizeof label, "GLA split over time, case %d", v);
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
    gla_test_ref_fd(1);
    gla_test_sweep(1, GC_S0 | GC_DST, 1100, 1);
    gla_test_sweep(1, 0, 1101, 0);
    gla_test_long(1, GC_S0 | GC_DST, 1200, 2);
    gla_test_varlen(1, GC_S0 | GC_DST, 1300);
    gla_test_threads(1, GC_S0 | GC_DST, 1400);
    gla_test_pieces(1, 0, 1500);
    gla_test_extreme(1, 1600);
    gla_test_ckpt_paths(1, 1610);
    test_strong_gates(1650);
    test_fwd_head_groups(1660);
    gla_test_odd_chunks(1, GC_S0 | GC_DST, 1700);
    gla_test_bad(1);
    gc_print_worst("GLA");
    return th_summary("gla");
}
