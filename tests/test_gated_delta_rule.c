/* Gated DeltaNet: recurrent and chunk forms, forward and backward, against
 * the float64 reference; HV = 2H value heads, gates from 0 to -1e4 (full
 * resets), varlen, pieces, threads, bad input.
 *
 * Bounds: relative RMS <= 1e-5 against float64 for every output and
 * gradient (o, final_state, dq, dk, dv, dbeta, dg, d_initial_state) with
 * L2-normalised keys. The gates only shrink the state, so rounding does not
 * grow along the sequence; the chunk form exponentiates only differences of
 * double-summed log-gates (<= 0), so -1e4 resets cost no accuracy. Measured
 * worst ~1e-6 (printed at the end). */
#include "delta_rule_cases.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_sweep(la_ctx *ctx) {
    const int64_t dims[] = {16, 60, 64, 100, 128};
    const int64_t Ts[] = {1, 63, 64, 65};
    for (int form = 1; form <= 2; form++)
        for (int ik = 0; ik < 5; ik++)
            for (int iv = 0; iv < 5; iv++) {
                dcase c = dc_default(1);
                c.form = (la_form)form;
                c.K = dims[ik];
                c.V = dims[iv];
                c.T = Ts[(ik + 2 * iv) % 4];
                c.H = 1 + (ik + iv) % 2;
                c.HV = 2 * c.H;
                c.chunk = (ik + iv) % 3 == 0 ? 16 : (ik + iv) % 3 == 1 ? 32 : 64;
                c.with_init = (ik + iv + 1) % 2;
                c.with_dfinal = iv % 2;
                c.seed = (uint64_t)(300 + ik * 5 + iv);
                dc_check_case(ctx, &c, 1e-5, 1e-5);
            }
}

static void test_long(la_ctx *ctx) {
    const int64_t kv[][2] = {{64, 64}, {60, 100}, {128, 128}};
    for (int i = 0; i < 3; i++)
        for (int form = 1; form <= 2; form++) {
            dcase c = dc_default(1);
            c.B = 1;
            c.T = 1000;
            c.H = 1;
            c.HV = 2;
            c.K = kv[i][0];
            c.V = kv[i][1];
            c.form = (la_form)form;
            c.chunk = i == 1 ? 32 : 0;
            c.gate = i == 1 ? GATE_RESETS : GATE_RANDOM;
            c.seed = (uint64_t)(17 + i);
            dc_check_case(ctx, &c, 1e-5, i == 2 ? 0 : 1e-5);
        }
}

static void test_extremes(la_ctx *ctx) {
    const double betas[] = {0, 1, 1.99};
    for (int form = 1; form <= 2; form++) {
        for (int gate = 0; gate < 3; gate++)
            for (int i = 0; i < 3; i++) {
                dcase c = dc_default(1);
                c.form = (la_form)form;
                c.T = 100;
                c.HV = 4;
                c.chunk = 32;
                c.gate = (gate_mode)gate;
                c.beta_lo = c.beta_hi = betas[i];
                c.seed = (uint64_t)(50 + 3 * gate + i);
                dc_check_case(ctx, &c, 1e-5, 1e-5);
            }
        /* Raw keys with |k|^2 ~ 1 and beta < 1 (bounded, see test_delta_rule). */
        dcase c = dc_default(1);
        c.form = (la_form)form;
        c.l2norm = 0;
        c.T = 200;
        c.K = 64;
        c.V = 32;
        c.k_std = 1.0 / 8;
        c.beta_hi = 0.9;
        c.gate = GATE_RESETS;
        dc_check_case(ctx, &c, 1e-5, 1e-5);
        /* A custom scale. */
        c = dc_default(1);
        c.form = (la_form)form;
        c.scale = 0.3f;
        dc_check_case(ctx, &c, 1e-5, 1e-5);
    }
}

/* Chunk sizes 1, 7 and longer than the sequence (capped: one chunk; also a
 * huge value), with resets. */
static void test_chunk_edges(la_ctx *ctx) {
    const int64_t chunks[] = {1, 7, 500, (int64_t)1 << 40};
    for (int i = 0; i < 4; i++) {
        dcase c = dc_default(1);
        c.form = LA_FORM_CHUNK;
        c.T = 70;
        c.HV = 4;
        c.chunk = chunks[i];
        c.gate = GATE_RESETS;
        dc_check_case(ctx, &c, 1e-5, 1e-5);
    }
}

int main(void) {
    la_ctx *ctx = th_ctx(2);
    test_sweep(ctx);
    test_chunk_edges(ctx);
    test_long(ctx);
    test_extremes(ctx);
    dc_check_head_groups(1);
    for (int form = 1; form <= 2; form++) {
        dcase c = dc_default(1);
        c.form = (la_form)form;
        c.chunk = 16;
        c.K = 24;
        c.V = 20;
        c.H = 2;
        c.HV = 6;
        c.gate = GATE_RESETS;
        dc_check_threads(&c);
        dc_check_varlen(ctx, &c);
        dc_check_pieces(ctx, &c, 1e-5);
        dc_check_inplace(ctx, &c);
    }
    dc_check_bad_inputs(ctx, 1);
    la_ctx_destroy(ctx);
    dc_print_worst("test_gated_delta_rule");
    return th_summary("test_gated_delta_rule");
}
