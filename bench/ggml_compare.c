/* Side-by-side timing of ggml's CPU ops and ours at the same shapes and
 * threads, in one process (bench/OPS.md "ggml"): ggml_gated_linear_attn
 * against our GLA (chunk and recurrent forms), ggml_gated_delta_net against
 * our Gated DeltaNet (chunk and recurrent). Built only when CMake is given
 * GGML_DIR (a ggml source tree) and GGML_LIB_DIR (its build's src/ folder
 * with libggml*.a); ggml is never part of this repository.
 *
 * Semantics matched (read from ggml's CPU kernels):
 *  - GLA: ggml takes the multiplicative per-key gate a = exp(g) where we
 *    take the log gate g; S_t = diag(a_t) S_{t-1} + k_tᵀ v_t and
 *    o_t = scale q_t S_t in both; both get scale = K^-1/2.
 *  - Gated DeltaNet: ggml takes the scalar log gate g and beta as we do and
 *    scales the output by S_v^-1/2 (our default K^-1/2, K = V here); it does
 *    not L2-normalise q and k, so both get rows normalised beforehand (ours
 *    with use_qk_l2norm = 0).
 *  - Layout: ggml's [S, H, T] (ne0 fastest) is our [B = 1, T, H, D].
 * The outputs are compared (max abs difference, printed) so a mismatch of
 * semantics shows. Times: median wall and process CPU time of --repeats
 * calls, ggml and ours alternating in every repetition.
 *
 * usage: ggml_compare [--T N] [--bh N] [--D N] [--threads LIST] [--repeats N] */
#include "ggml-cpu.h"
#include "ggml.h"
#include "linattn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static void fill(float *x, size_t n, uint64_t s, float lo, float hi) {
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
}

static void l2norm_rows(float *x, size_t rows, int64_t D) {
    for (size_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t i = 0; i < D; i++) s += (double)x[r * D + i] * x[r * D + i];
        const float inv = (float)(1.0 / sqrt(s + 1e-12));
        for (int64_t i = 0; i < D; i++) x[r * D + i] *= inv;
    }
}

typedef struct shape {
    int64_t T, H, D;
    int threads, repeats;
} shape;

enum { OP_GLA, OP_GDN };
#define MAX_REP 32

/* One op at one shape: ggml, ours chunk, ours recurrent. */
static int compare(int op, const shape *s) {
    const int64_t T = s->T, H = s->H, D = s->D;
    const size_t n = (size_t)(T * H * D), nh = (size_t)(T * H);
    const float scale = 1.0f / sqrtf((float)D);
    float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *g = malloc(n * 4);
    float *beta = malloc(nh * 4), *o = malloc(n * 4);
    if (!q || !k || !v || !g || !beta || !o) return 1;
    fill(q, n, 1, -1, 1);
    fill(k, n, 2, -1, 1);
    fill(v, n, 3, -1, 1);
    fill(g, op == OP_GLA ? n : nh, 4, -0.1f, -0.01f); /* log gates */
    fill(beta, nh, 5, 0.1f, 0.9f);
    if (op == OP_GDN) {
        l2norm_rows(q, nh, D);
        l2norm_rows(k, nh, D);
    }
    /* ggml graph */
    const size_t data = (4 * n + nh + (size_t)(H * D * D) + n + 2 * (size_t)(H * D * D)) * 4;
    struct ggml_init_params ip = {data + 64 * ggml_tensor_overhead() + ggml_graph_overhead() +
                                      ((size_t)64 << 20),
                                  NULL, false};
    struct ggml_context *gc = ggml_init(ip);
    if (!gc) return 1;
    struct ggml_tensor *tq, *tk, *tv, *tg, *tb = NULL, *ts, *out;
    if (op == OP_GLA) {
        tq = ggml_new_tensor_3d(gc, GGML_TYPE_F32, D, H, T);
        tk = ggml_new_tensor_3d(gc, GGML_TYPE_F32, D, H, T);
        tv = ggml_new_tensor_3d(gc, GGML_TYPE_F32, D, H, T);
        tg = ggml_new_tensor_3d(gc, GGML_TYPE_F32, D, H, T);
        ts = ggml_new_tensor_2d(gc, GGML_TYPE_F32, D * D * H, 1);
        float *ga = tg->data;
        for (size_t i = 0; i < n; i++) ga[i] = expf(g[i]); /* ggml: the gate itself */
        out = ggml_gated_linear_attn(gc, tk, tv, tq, tg, ts, scale);
    } else {
        tq = ggml_new_tensor_4d(gc, GGML_TYPE_F32, D, H, T, 1);
        tk = ggml_new_tensor_4d(gc, GGML_TYPE_F32, D, H, T, 1);
        tv = ggml_new_tensor_4d(gc, GGML_TYPE_F32, D, H, T, 1);
        tg = ggml_new_tensor_4d(gc, GGML_TYPE_F32, 1, H, T, 1);
        tb = ggml_new_tensor_4d(gc, GGML_TYPE_F32, 1, H, T, 1);
        ts = ggml_new_tensor_4d(gc, GGML_TYPE_F32, D, D, H, 1);
        memcpy(tg->data, g, nh * 4);
        memcpy(tb->data, beta, nh * 4);
        out = ggml_gated_delta_net(gc, tq, tk, tv, tg, tb, ts, 1);
    }
    memcpy(tq->data, q, n * 4);
    memcpy(tk->data, k, n * 4);
    memcpy(tv->data, v, n * 4);
    memset(ts->data, 0, ggml_nbytes(ts));
    struct ggml_cgraph *gf = ggml_new_graph(gc);
    ggml_build_forward_expand(gf, out);

    la_ctx *ctx = NULL;
    if (la_ctx_create(&ctx, s->threads)) return 1;
    la_dims dims = {.B = 1, .T = T, .H = H, .K = D, .V = D};
    la_gated_opts oc = la_gated_opts_default(), orr = oc;
    oc.form = LA_FORM_CHUNK;
    orr.form = LA_FORM_RECURRENT;
    oc.scale = orr.scale = scale;
    double tw[3][MAX_REP], tc[3][MAX_REP], diff[2] = {0, 0};
    la_status st = LA_OK;
    for (int r = -1; r < s->repeats && !st; r++) {
        for (int w = 0; w < 3 && !st; w++) {
            const double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
            if (w == 0) {
                if (ggml_graph_compute_with_ctx(gc, gf, s->threads) != GGML_STATUS_SUCCESS)
                    st = LA_ERR_INVALID_ARGUMENT;
            } else {
                const la_gated_opts *oo = w == 1 ? &oc : &orr;
                st = op == OP_GLA ? la_gla_forward(ctx, oo, &dims, o, NULL, q, k, v, g, NULL)
                                  : la_gated_delta_rule_forward(ctx, oo, &dims, o, NULL, q, k, v, g,
                                                                beta, NULL);
                if (r < 0) { /* outputs against ggml's, once */
                    const float *go = out->data;
                    for (size_t i = 0; i < n; i++) {
                        const double d = fabs((double)o[i] - go[i]);
                        if (!(d <= diff[w - 1])) diff[w - 1] = d;
                    }
                }
            }
            if (r >= 0) {
                tw[w][r] = now(CLOCK_MONOTONIC) - w0;
                tc[w][r] = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
            }
        }
    }
    if (st) {
        fprintf(stderr, "ggml_compare: failed: %s\n", la_last_error());
        return 1;
    }
    double mw[3], mc[3];
    for (int w = 0; w < 3; w++) {
        mw[w] = median(tw[w], s->repeats);
        mc[w] = median(tc[w], s->repeats);
    }
    printf("%-5s %3lld %6lld %4lld %3d | ggml %9.2f ms (cpu %9.2f) | ours chunk %9.2f (cpu %9.2f)"
           " x%5.2f (cpu x%5.2f) | ours recurrent %9.2f (cpu %9.2f) x%5.2f (cpu x%5.2f) | "
           "max|diff| %.2g %.2g\n",
           op == OP_GLA ? "GLA" : "GDN", (long long)H, (long long)T, (long long)D, s->threads,
           mw[0] * 1e3, mc[0] * 1e3, mw[1] * 1e3, mc[1] * 1e3, mw[0] / mw[1], mc[0] / mc[1],
           mw[2] * 1e3, mc[2] * 1e3, mw[0] / mw[2], mc[0] / mc[2], diff[0], diff[1]);
    fflush(stdout);
    la_ctx_destroy(ctx);
    ggml_free(gc);
    free(q), free(k), free(v), free(g), free(beta), free(o);
    return 0;
}

int main(int argc, char **argv) {
    shape s = {4096, 8, 128, 1, 5};
    int thr[8] = {1}, nthr = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *b = argv[i + 1];
        if (!strcmp(a, "--T"))
            s.T = atoll(b);
        else if (!strcmp(a, "--bh"))
            s.H = atoll(b);
        else if (!strcmp(a, "--D"))
            s.D = atoll(b);
        else if (!strcmp(a, "--repeats"))
            s.repeats = atoi(b);
        else if (!strcmp(a, "--threads")) {
            nthr = 0;
            for (const char *p = b; *p && nthr < 8; p = strchr(p, ',') ? strchr(p, ',') + 1 : "")
                thr[nthr++] = atoi(p);
        } else {
            fprintf(stderr, "ggml_compare: unknown option %s\n", a);
            return 2;
        }
    }
    if (s.T < 1 || s.H < 1 || s.D < 1 || s.repeats < 1 || s.repeats > MAX_REP || nthr < 1) {
        fprintf(stderr, "ggml_compare: bad --T/--bh/--D/--repeats (1..%d)/--threads\n", MAX_REP);
        return 2;
    }
    ggml_cpu_init();
    printf("ggml vs linattn, forward, B = 1, H = %lld, T = %lld, K = V = %lld, library path %s;\n"
           "x = ggml time / ours (> 1: ours faster); median of %d, alternating\n",
           (long long)s.H, (long long)s.T, (long long)s.D, la_isa_name(la_isa_active()), s.repeats);
    int rc = 0;
    for (int t = 0; t < nthr; t++) {
        s.threads = thr[t] < 1 ? 1 : thr[t];
        rc |= compare(OP_GLA, &s);
        rc |= compare(OP_GDN, &s);
    }
    return rc;
}
