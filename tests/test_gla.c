/* GLA (per-key decay): recurrent and chunk forms against the float64
 * reference, forward and backward, with the structural and extreme-gate
 * tests of the family. */
#include "gla_cases.h"

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
    static const double lo[] = {1.0, 2.0, 4.0, 8.0};
    for (int a = 0; a < 4; a++) {
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

int main(void) {
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
    gla_test_odd_chunks(1, GC_S0 | GC_DST, 1700);
    gla_test_bad(1);
    gc_print_worst("GLA");
    return th_summary("gla");
}
