/* GLA (per-key decay): recurrent and chunk forms against the float64
 * reference, forward and backward, with the structural and extreme-gate
 * tests of the family. */
#include "test_gla_common.h"

int main(void) {
    test_ref_fd(1);
    test_sweep(1, GC_S0 | GC_DST, 1100, 1);
    test_sweep(1, 0, 1101, 0);
    test_long(1, GC_S0 | GC_DST, 1200, 2);
    test_varlen(1, GC_S0 | GC_DST, 1300);
    test_threads(1, GC_S0 | GC_DST, 1400);
    test_pieces(1, 0, 1500);
    test_extreme(1, 1600);
    test_odd_chunks(1, GC_S0 | GC_DST, 1700);
    test_bad(1);
    gc_print_worst("GLA");
    return th_summary("gla");
}
