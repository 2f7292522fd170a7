/* DeltaNet: recurrent and chunk forms, forward and backward, against the
 * float64 reference. */
#include "test_delta_rule_util.h"

static void test_sweep(la_ctx *ctx) {
    const int64_t dims[] = {16, 60, 64, 100, 128};
    const int64_t Ts[] = {1, 63, 64, 65};
    for (int form = 1; form <= 2; form++)
        for (int ik = 0; ik < 5; ik++)
            for (int iv = 0; iv < 5; iv++) {
                dcase c = dc_default(0);
                c.form = (la_form)form;
                c.K = dims[ik];
                c.V = dims[iv];
                c.T = Ts[(ik + iv) % 4];
                c.chunk = (ik + iv) % 3 == 0 ? 16 : (ik + iv) % 3 == 1 ? 32 : 64;
                c.seed = (uint64_t)(100 + ik * 5 + iv);
                dc_check_case(ctx, &c, 1e-5, 1e-5);
            }
}

int main(void) {
    la_ctx *ctx = th_ctx(2);
    test_sweep(ctx);
    la_ctx_destroy(ctx);
    dc_print_worst("test_delta_rule");
    return th_summary("test_delta_rule");
}
