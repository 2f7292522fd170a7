/* Simple GLA (per-token scalar decay) and the RetNet preset: recurrent and
 * chunk forms against the float64 reference, forward and backward, with g
 * only, g_gamma only, both, and neither (plain linear attention). */
#include "gla_cases.h"

#include <math.h>

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

int main(void) {
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
