/* The input finiteness scan of two liblinattn.so builds, alternating in one
 * process (cpu-fwd19): a linear attention forward at issue 12's shape (B =
 * 1, T = 8192, H = 8, K = V = 128, one thread) whose v holds a NaN in its
 * last value, so the call reads all of q, k and v (96 MiB) and returns
 * LA_ERR_NON_FINITE before any product: its thread CPU time is the scan's.
 * Before each call 256 MiB of other memory is read, so q, k, v come from
 * DRAM as in a forward. Prints the median per build and new/old speed.
 * Built with the tools (CMake target scan_ab), or by hand from the
 * repository root:
 *   gcc -O2 -std=c11 -Iinclude bench/scan_ab.c -ldl -lm -o scan_ab
 * usage: scan_ab OLD.so NEW.so [pairs] */
#define _POSIX_C_SOURCE 200809L
#include "linattn.h"
#include "ab_api.h"

#include "ab_peak.h"

#include <math.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: scan_ab OLD.so NEW.so [pairs]\n");
        return 2;
    }
    const int pairs = argc > 3 ? atoi(argv[3]) : 21;
    if (pairs < 1 || pairs > 1000) return 2;
    la_dims d = {.B = 1, .T = 8192, .H = 8, .K = 128, .V = 128};
    const size_t n = (size_t)d.T * (size_t)d.H * (size_t)d.K, nf = (size_t)64 << 20;
    float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *o = malloc(n * 4);
    float *fl = malloc(nf * 4);
    if (!q || !k || !v || !o || !fl) return 1;
    for (size_t i = 0; i < n; i++)
        q[i] = (float)(i % 97) * 0.01f, k[i] = (float)(i % 89) * 0.01f, v[i] = (float)(i % 83);
    v[n - 1] = NAN;
    memset(fl, 1, nf * 4);
    la_ctx *ctx[2];
    lin_def_fn def[2];
    lin_fwd_fn fwd[2];
    for (int i = 0; i < 2; i++) {
        void *h = ab_dlopen(argv[1 + i]);
        if (!h) return 1;
        ctx_create_fn cc = (ctx_create_fn)(uintptr_t)dlsym(h, "la_ctx_create");
        def[i] = (lin_def_fn)(uintptr_t)dlsym(h, "la_linear_attn_opts_default");
        fwd[i] = (lin_fwd_fn)(uintptr_t)dlsym(h, "la_linear_attn_forward");
        if (!cc || !def[i] || !fwd[i] || cc(&ctx[i], 1) != LA_OK) return 1;
    }
    double *t[2] = {malloc((size_t)pairs * sizeof(double)), malloc((size_t)pairs * sizeof(double))};
    double *r = malloc((size_t)pairs * sizeof(double));
    volatile float sink = 0;
    for (int p = 0; p < pairs; p++)
        for (int s = 0; s < 2; s++) {
            const int i = (p % 2) ^ s;
            float acc = 0;
            for (size_t j = 0; j < nf; j += 16) acc += fl[j];
            sink += acc;
            la_linear_attn_opts op = def[i]();
            op.form = LA_FORM_CHUNK;
            const double t0 = tcpu();
            const la_status st = fwd[i](ctx[i], &op, &d, o, NULL, NULL, q, k, v, NULL, NULL);
            t[i][p] = tcpu() - t0;
            if (st != LA_ERR_NON_FINITE) {
                fprintf(stderr, "scan_ab: status %d, want LA_ERR_NON_FINITE\n", (int)st);
                return 1;
            }
        }
    for (int p = 0; p < pairs; p++) r[p] = t[0][p] / t[1][p];
    const double mo = ab_median(t[0], pairs, NULL, NULL), mn = ab_median(t[1], pairs, NULL, NULL);
    double lo, hi;
    const double mr = ab_median(r, pairs, &lo, &hi);
    printf("scan of q, k, v (96 MiB), %d pairs: old %.2f ms (%.1f GB/s), new %.2f ms (%.1f GB/s), "
           "new/old speed median %.3fx [%.3f-%.3f]\n",
           pairs, 1e3 * mo, 3.0 * n * 4 / mo / 1e9, 1e3 * mn, 3.0 * n * 4 / mn / 1e9, mr, lo, hi);
    return 0;
}
