/* Lab 4: causal linear attention is an RNN. The parallel (masked quadratic),
 * recurrent (token by token) and chunkwise forms of la_linear_attn_forward
 * compute the same outputs (max differences printed) at different cost (time
 * vs T), and decoding the sequence one token at a time with la_decoder_step
 * reproduces the parallel forward and its final state. */
#include "bench_core.h"
#include "linattn.h"
#include "report.h"
#include "svg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NT 12
static const la_form FORMS[3] = {LA_FORM_PARALLEL, LA_FORM_RECURRENT, LA_FORM_CHUNK};
static const char *const FORM_NAMES[3] = {"parallel", "recurrent", "chunk"};

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

int lab_causal(const lab_opts *opts, lab_output *out) {
    const int64_t H = 2, D = 32, Tcheck = opts->quick ? 300 : 1000;
    const int64_t Tq[] = {64, 128, 256, 512, 1024},
                  Td[] = {128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
    const int nT = opts->quick ? 5 : 9;
    const int64_t *Ts = opts->quick ? Tq : Td;
    const int64_t Tmax = Ts[nT - 1] > Tcheck ? Ts[nT - 1] : Tcheck;
    const double max_run = opts->quick ? 0.05 : 0.5;
    const size_t n = (size_t)(Tmax * H * D), ns = (size_t)(H * D * D);
    float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4);
    float *o[3] = {malloc(n * 4), malloc(n * 4), malloc(n * 4)}, *od = malloc(n * 4);
    float *st[3] = {malloc(ns * 4), malloc(ns * 4), malloc(ns * 4)}, *std_ = malloc(ns * 4);
    la_ctx *ctx = NULL, *ctx1 = NULL; /* ctx1: one thread for decoding (one token of
                                         B*H = 2 heads is too little work to hand out) */
    la_decoder *dec = NULL;
    double tm[3][NT], diff[3], sdiff[3], dec_diff = NAN, dec_sdiff = NAN, omax = 0, smax = 0;
    int rc = 0;
    if (!q || !k || !v || !o[0] || !o[1] || !o[2] || !od || !st[0] || !st[1] || !st[2] ||
        !std_ || la_ctx_create(&ctx, opts->threads) || la_ctx_create(&ctx1, 1)) {
        fprintf(stderr, "lab causal: setup failed\n");
        rc = 1;
        goto done;
    }
    bench_fill(q, n, opts->seed * 5 + 1, 1.0f);
    bench_fill(k, n, opts->seed * 5 + 2, 1.0f);
    bench_fill(v, n, opts->seed * 5 + 3, 1.0f);
    la_linear_attn_opts lo = la_linear_attn_opts_default(); /* elu+1, normalised */
    lo.causal = 1;
    /* (a) agreement at T = Tcheck (not a multiple of the chunk size 64) */
    la_dims dims = {.B = 1, .T = Tcheck, .H = H, .K = D, .V = D};
    for (int f = 0; f < 3 && !rc; f++) {
        lo.form = FORMS[f];
        rc = la_linear_attn_forward(ctx, &lo, &dims, o[f], st[f], NULL, q, k, v, NULL, NULL) !=
             LA_OK;
    }
    if (rc) {
        fprintf(stderr, "lab causal: %s\n", la_last_error());
        goto done;
    }
    const size_t no = (size_t)(Tcheck * H * D);
    omax = max_abs(o[0], no);
    smax = max_abs(st[0], ns);
    for (int f = 0; f < 3; f++) {
        diff[f] = max_diff(o[f], o[(f + 1) % 3], no);
        sdiff[f] = max_diff(st[f], st[(f + 1) % 3], ns);
    }
    /* (b) decoding token by token */
    la_decoder_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.op = LA_OP_LINEAR_ATTN;
    cfg.N = 1;
    cfg.H = H;
    cfg.K = D;
    cfg.V = D;
    cfg.feature_map = lo.feature_map;
    cfg.normalize = lo.normalize;
    cfg.eps = lo.eps;
    if (la_decoder_create(&dec, &cfg)) {
        fprintf(stderr, "lab causal: %s\n", la_last_error());
        rc = 1;
        goto done;
    }
    double dec_time = bench_wall();
    for (int64_t t = 0; t < Tcheck && !rc; t++)
        rc = la_decoder_step(ctx1, dec, od + t * H * D, q + t * H * D, k + t * H * D,
                             v + t * H * D, NULL, NULL, NULL) != LA_OK;
    dec_time = (bench_wall() - dec_time) / (double)Tcheck;
    if (!rc) rc = la_decoder_get_state(dec, std_, NULL) != LA_OK;
    if (rc) {
        fprintf(stderr, "lab causal: decoding: %s\n", la_last_error());
        goto done;
    }
    dec_diff = max_diff(od, o[0], no);
    dec_sdiff = max_diff(std_, st[0], ns);
    if (opts->progress) opts->progress(opts->progress_arg, 0.1, "forms agree");
    /* (c) cost vs T */
    for (int f = 0; f < 3 && !rc; f++) {
        lo.form = FORMS[f];
        double prev = NAN;
        for (int i = 0; i < nT && !rc; i++) {
            const int64_t T = Ts[i];
            tm[f][i] = NAN;
            const double grow = f == 0 ? (double)T * T / ((double)Ts[i - (i > 0)] * Ts[i - (i > 0)])
                                       : (double)T / Ts[i - (i > 0)];
            if (isfinite(prev) && prev * grow > max_run) continue;
            la_dims d2 = {.B = 1, .T = T, .H = H, .K = D, .V = D};
            double ts[5];
            const int reps = T <= 4096 ? 5 : 3;
            for (int r = 0; r < reps && !rc; r++) {
                double t0 = bench_wall();
                rc = la_linear_attn_forward(ctx, &lo, &d2, o[f], NULL, NULL, q, k, v, NULL,
                                            NULL) != LA_OK;
                ts[r] = bench_wall() - t0;
            }
            if (rc) fprintf(stderr, "lab causal: %s\n", la_last_error());
            tm[f][i] = prev = bench_median(ts, reps);
            if (opts->progress)
                opts->progress(opts->progress_arg, 0.1 + 0.9 * (f * nT + i + 1) / (3.0 * nT),
                               "cost vs T");
        }
    }
    if (rc) goto done;

    out->id = "causal";
    out->title = "Lab 4: causal linear attention is an RNN: parallel = recurrent = chunk";
    sb_addf(&out->intro,
            "Causal linear attention (phi = elu + 1, normalised) has three exact forms. The "
            "parallel form applies a causal mask to the T x T matrix phi(Q)phi(K)^T (quadratic "
            "cost, the training view of a Transformer). The recurrent form carries a K x V "
            "state S_t = S_{t-1} + phi(k_t)^T v_t and a normaliser z_t, one token at a time "
            "(linear cost, the RNN view). The chunkwise form mixes them: the masked quadratic "
            "form inside chunks of 64 tokens and the state between chunks. All three give the "
            "same outputs and final state up to float32 rounding, and decoding the sequence one "
            "token at a time with the constant-size state (la_decoder_step) reproduces the "
            "parallel forward: differences below. Their costs differ: on the log-log plot the "
            "parallel form grows with slope 2, the others with slope 1.");
    strbuf *t = &out->table;
    sb_addf(t,
            "(a) Agreement at T = %lld (chunk 64), B*H = %lld, K = V = %lld; max |o| = %.3g, "
            "max |S| = %.3g\n",
            (long long)Tcheck, (long long)H, (long long)D, omax, smax);
    sb_addf(t, "  %-24s %14s %14s\n", "pair", "max |diff o|", "max |diff S_T|");
    for (int f = 0; f < 3; f++) {
        char pair[48];
        snprintf(pair, sizeof pair, "%s vs %s", FORM_NAMES[f], FORM_NAMES[(f + 1) % 3]);
        sb_addf(t, "  %-24s %14.3g %14.3g\n", pair, diff[f], sdiff[f]);
    }
    sb_addf(t, "  %-24s %14.3g %14.3g\n", "decoding vs parallel", dec_diff, dec_sdiff);
    sb_addf(t, "  (decoding: %lld calls of la_decoder_step on one thread, %.2f us per token)\n",
            (long long)Tcheck, dec_time * 1e6);
    sb_addf(t, "\n(b) Forward time vs T (median ms), B*H = %lld, K = V = %lld\n%7s", (long long)H,
            (long long)D, "T");
    for (int f = 0; f < 3; f++) sb_addf(t, " | %10s", FORM_NAMES[f]);
    sb_addf(t, "\n");
    for (int i = 0; i < nT; i++) {
        sb_addf(t, "%7lld", (long long)Ts[i]);
        for (int f = 0; f < 3; f++) {
            if (isfinite(tm[f][i]))
                sb_addf(t, " | %10.3f", tm[f][i] * 1e3);
            else
                sb_addf(t, " | %10s", "skipped");
        }
        sb_addf(t, "\n");
    }
    strbuf *j = &out->json;
    sb_addf(j,
            "{\n  \"lab\": \"causal\",\n  \"T_check\": %lld,\n  \"BH\": %lld,\n  \"D\": %lld,\n"
            "  \"max_abs_o\": %.6g,\n  \"diff\": {",
            (long long)Tcheck, (long long)H, (long long)D, omax);
    for (int f = 0; f < 3; f++)
        sb_addf(j, "\"%s_vs_%s\": {\"o\": %.6g, \"state\": %.6g}, ", FORM_NAMES[f],
                FORM_NAMES[(f + 1) % 3], diff[f], sdiff[f]);
    sb_addf(j, "\"decoding_vs_parallel\": {\"o\": %.6g, \"state\": %.6g}},\n", dec_diff,
            dec_sdiff);
    sb_addf(j, "  \"decode_step_s\": %.6g,\n  \"time\": [\n", dec_time);
    for (int i = 0; i < nT; i++) {
        sb_addf(j, "    {\"T\": %lld", (long long)Ts[i]);
        for (int f = 0; f < 3; f++) {
            sb_addf(j, ", \"%s_s\": ", FORM_NAMES[f]);
            sb_json_num(j, tm[f][i]);
        }
        sb_addf(j, "}%s\n", i + 1 < nT ? "," : "");
    }
    sb_addf(j, "  ]\n}\n");
    double xs[NT], ys[3][NT];
    svg_series s[3];
    for (int i = 0; i < nT; i++) xs[i] = (double)Ts[i];
    for (int f = 0; f < 3; f++) {
        for (int i = 0; i < nT; i++) ys[f][i] = tm[f][i] * 1e3;
        s[f] = (svg_series){FORM_NAMES[f], xs, ys[f], nT, f == 0, (svg_marker)(f + 1), f};
    }
    char sub[160];
    snprintf(sub, sizeof sub,
             "causal, phi = elu+1, normalised, B*H = %lld, K = V = %lld, chunk 64; dashed: O(T^2)",
             (long long)H, (long long)D);
    svg_plot p = {"Three forms of causal linear attention: time vs T", "T (tokens)",
                  "median forward time (ms)", sub, SVG_LOG, SVG_LOG, 860, 520, s, 3};
    if (lab_add_figure(out, "causal_time.svg", svg_render(&p),
                       "Forward time of the parallel, recurrent and chunkwise forms vs T "
                       "(log-log).")) {
        rc = 1;
        goto done;
    }
    double worst = fmax(fmax(diff[0], diff[1]), diff[2]);
    sb_addf(&out->summary,
            "forms agree to %.2g (max |o| %.2g); decoding vs parallel %.2g; %.1f us per decoded "
            "token",
            worst, omax, dec_diff, dec_time * 1e6);
    rc = out->table.oom || out->json.oom || out->summary.oom;
done:
    la_decoder_destroy(dec);
    la_ctx_destroy(ctx);
    la_ctx_destroy(ctx1);
    free(q);
    free(k);
    free(v);
    for (int f = 0; f < 3; f++) {
        free(o[f]);
        free(st[f]);
    }
    free(od);
    free(std_);
    return rc;
}
