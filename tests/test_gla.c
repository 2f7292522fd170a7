/* GLA (per-key decay): recurrent and chunk forms against the float64
 * reference, forward and backward, with the structural and extreme-gate
 * tests of the family. */
#include "gla_cases.h"

int main(void) {
    gla_test_ref_fd(1);
    gla_test_sweep(1, GC_S0 | GC_DST, 1100, 1);
    gla_test_sweep(1, 0, 1101, 0);
    gla_test_long(1, GC_S0 | GC_DST, 1200, 2);
    gla_test_varlen(1, GC_S0 | GC_DST, 1300);
    gla_test_threads(1, GC_S0 | GC_DST, 1400);
    gla_test_pieces(1, 0, 1500);
    gla_test_extreme(1, 1600);
    gla_test_odd_chunks(1, GC_S0 | GC_DST, 1700);
    gla_test_bad(1);
    gc_print_worst("GLA");
    return th_summary("gla");
}
