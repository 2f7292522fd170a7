/* linattn approx — the feature-map lab (lab 3): how well random features
 * approximate the softmax kernel and softmax attention.
 *
 * (a) Kernel estimation: for random pairs (x, y) at several input norms, the
 *     empirical MSE of phi(x).phi(y) against the exact kernel (softmax, or
 *     Gaussian for the trig-Gaussian map) over independent draws of W, as a
 *     function of m, for i.i.d. and orthogonal rows, beside the closed-form
 *     i.i.d. MSE of MATH.md section 3.
 * (b) Attention: relative error of Performer attention against exact softmax
 *     attention (float64) on random Q, K, V, as a function of m and T,
 *     causal and non-causal.
 * The computation lives in lab_feature_maps (shared with `linattn labs`); the
 * per-pair statistics in ref_rf_kernel_mse (src/ref, run by the tests). */
#include "cli.h"
#include "linattn.h"
#include "ref_feature_map.h"
#include "ref_util.h"
#include "report.h"
#include "svg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct estimator {
    la_random_feature kind;
    la_projection_kind proj;
    const char *name;  /* "positive", ... */
    const char *pname; /* "iid" | "orth" */
} estimator;

static const estimator KERNEL_EST[] = {
    {LA_RF_FAVOR_POSITIVE, LA_PROJ_IID, "positive", "iid"},
    {LA_RF_FAVOR_POSITIVE, LA_PROJ_ORTHOGONAL, "positive", "orth"},
    {LA_RF_FAVOR_HYPERBOLIC, LA_PROJ_IID, "hyperbolic", "iid"},
    {LA_RF_FAVOR_HYPERBOLIC, LA_PROJ_ORTHOGONAL, "hyperbolic", "orth"},
    {LA_RF_TRIG_SOFTMAX, LA_PROJ_IID, "trig", "iid"},
    {LA_RF_TRIG_SOFTMAX, LA_PROJ_ORTHOGONAL, "trig", "orth"},
    {LA_RF_TRIG_GAUSSIAN, LA_PROJ_IID, "trig-gauss", "iid"},
    {LA_RF_TRIG_GAUSSIAN, LA_PROJ_ORTHOGONAL, "trig-gauss", "orth"},
};
#define N_KEST ((int)(sizeof KERNEL_EST / sizeof KERNEL_EST[0]))

static const estimator ATTN_EST[] = {
    {LA_RF_FAVOR_POSITIVE, LA_PROJ_IID, "positive", "iid"},
    {LA_RF_FAVOR_POSITIVE, LA_PROJ_ORTHOGONAL, "positive", "orth"},
    {LA_RF_FAVOR_HYPERBOLIC, LA_PROJ_ORTHOGONAL, "hyperbolic", "orth"},
    {LA_RF_TRIG_SOFTMAX, LA_PROJ_ORTHOGONAL, "trig", "orth"},
};
#define N_AEST ((int)(sizeof ATTN_EST / sizeof ATTN_EST[0]))

#define MAX_LIST 16

typedef struct approx_cfg {
    lab_opts lab;
    int64_t d;      /* head dimension */
    int draws;      /* draws of W per kernel point */
    int attn_draws; /* draws of W per attention point */
    double qk_std;  /* std of the entries of Q and K */
    int64_t ms[MAX_LIST], Ts[MAX_LIST], attn_ms[MAX_LIST];
    double norms[MAX_LIST];
    int n_m, n_T, n_attn_m, n_norm;
} approx_cfg;

typedef struct approx_res {
    ref_mse_stats kernel[N_KEST][MAX_LIST][MAX_LIST]; /* [est][norm][m] */
    double attn[N_AEST][2][MAX_LIST][MAX_LIST];       /* [est][causal][T][m] rel. error */
    double attn_sd[N_AEST][2][MAX_LIST][MAX_LIST];    /* spread over draws */
    double seconds;
} approx_res;

static void cfg_defaults(approx_cfg *c, const lab_opts *lab) {
    memset(c, 0, sizeof *c);
    c->lab = *lab;
    c->d = 16;
    c->qk_std = 0.5;
    const double norms[] = {1, 2, 3};
    c->n_norm = 3;
    memcpy(c->norms, norms, sizeof norms);
    if (lab->quick) {
        const int64_t ms[] = {16, 64, 256}, Ts[] = {64, 256}, ams[] = {16, 64};
        c->n_m = 3;
        c->n_T = 2;
        c->n_attn_m = 2;
        memcpy(c->ms, ms, sizeof ms);
        memcpy(c->Ts, Ts, sizeof Ts);
        memcpy(c->attn_ms, ams, sizeof ams);
        c->draws = 40;
        c->attn_draws = 2;
    } else {
        const int64_t ms[] = {16, 32, 64, 128, 256, 512, 1024}, Ts[] = {128, 512, 2048};
        const int64_t ams[] = {16, 32, 64, 128, 256};
        c->n_m = 7;
        c->n_T = 3;
        c->n_attn_m = 5;
        memcpy(c->ms, ms, sizeof ms);
        memcpy(c->Ts, Ts, sizeof Ts);
        memcpy(c->attn_ms, ams, sizeof ams);
        c->draws = 120;
        c->attn_draws = 3;
    }
}

static void progress(const approx_cfg *c, double f, const char *what) {
    if (c->lab.progress) c->lab.progress(c->lab.progress_arg, f, what);
}

static int compute_kernel(const approx_cfg *c, la_ctx *ctx, approx_res *r, double *done,
                          double total) {
    const int64_t d = c->d, per = 8, P = per * c->n_norm;
    double *X = malloc((size_t)(P * d) * sizeof *X), *Y = malloc((size_t)(P * d) * sizeof *Y);
    if (!X || !Y) {
        free(X);
        free(Y);
        fprintf(stderr, "linattn approx: out of memory\n");
        return 1;
    }
    la_rng rng;
    la_rng_seed(&rng, c->lab.seed);
    for (int g = 0; g < c->n_norm; g++)
        ref_random_pairs(X + g * per * d, Y + g * per * d, per, d, c->norms[g], &rng);
    int rc = 0;
    for (int e = 0; e < N_KEST && !rc; e++)
        for (int mi = 0; mi < c->n_m && !rc; mi++) {
            ref_mse_stats out[MAX_LIST];
            const uint64_t seed =
                c->lab.seed * 1000003u + (uint64_t)e * 100000u + (uint64_t)mi * 10000u;
            la_status st =
                ref_rf_kernel_mse(ctx, KERNEL_EST[e].kind, KERNEL_EST[e].proj, LA_SCALING_CHI, d,
                                  c->ms[mi], X, Y, P, c->n_norm, c->draws, seed, out);
            if (st) {
                fprintf(stderr, "linattn approx: kernel experiment failed: %s (%s)\n",
                        la_status_string(st), la_last_error());
                rc = 1;
                break;
            }
            for (int g = 0; g < c->n_norm; g++) r->kernel[e][g][mi] = out[g];
            *done += (double)c->ms[mi] * c->draws;
            progress(c, *done / total, "kernel estimation");
        }
    free(X);
    free(Y);
    return rc;
}

static int compute_attention(const approx_cfg *c, la_ctx *ctx, approx_res *r, double *done,
                             double total) {
    const int64_t d = c->d, V = c->d;
    const int64_t Tmax = c->Ts[c->n_T - 1];
    int64_t mmax = 0;
    for (int i = 0; i < c->n_attn_m; i++) mmax = c->attn_ms[i] > mmax ? c->attn_ms[i] : mmax;
    float *q = malloc((size_t)(Tmax * d) * sizeof *q), *k = malloc((size_t)(Tmax * d) * sizeof *k);
    float *vf = malloc((size_t)(Tmax * V) * sizeof *vf),
          *W = malloc((size_t)(mmax * d) * sizeof *W);
    float *o = malloc((size_t)(Tmax * V) * sizeof *o);
    double *qd = malloc((size_t)(Tmax * d) * sizeof *qd),
           *kd = malloc((size_t)(Tmax * d) * sizeof *kd);
    double *vd = malloc((size_t)(Tmax * V) * sizeof *vd);
    double *exact = malloc((size_t)(2 * Tmax * V) * sizeof *exact);
    int rc = 0;
    if (!q || !k || !vf || !W || !o || !qd || !kd || !vd || !exact) {
        fprintf(stderr, "linattn approx: out of memory\n");
        rc = 1;
        goto done;
    }
    la_rng rng;
    la_rng_seed(&rng, c->lab.seed ^ 0xa77e27u);
    for (int ti = 0; ti < c->n_T && !rc; ti++) {
        const int64_t T = c->Ts[ti];
        ref_fill_normal(q, (size_t)(T * d), &rng, c->qk_std);
        ref_fill_normal(k, (size_t)(T * d), &rng, c->qk_std);
        ref_fill_normal(vf, (size_t)(T * V), &rng, 1.0);
        for (int64_t i = 0; i < T * d; i++) {
            qd[i] = q[i];
            kd[i] = k[i];
        }
        for (int64_t i = 0; i < T * V; i++) vd[i] = vf[i];
        double ex_norm[2];
        for (int causal = 0; causal < 2; causal++) {
            ref_softmax_attn_exact(T, d, V, qd, kd, vd, causal, exact + causal * Tmax * V);
            double s = 0;
            for (int64_t i = 0; i < T * V; i++)
                s += exact[causal * Tmax * V + i] * exact[causal * Tmax * V + i];
            ex_norm[causal] = sqrt(s);
        }
        for (int e = 0; e < N_AEST && !rc; e++)
            for (int mi = 0; mi < c->n_attn_m && !rc; mi++) {
                const int64_t m = c->attn_ms[mi], M = la_rf_num_features(ATTN_EST[e].kind, m);
                double s1[2] = {0, 0}, s2[2] = {0, 0};
                for (int rdraw = 0; rdraw < c->attn_draws; rdraw++) {
                    const uint64_t seed =
                        c->lab.seed * 7919u + (uint64_t)(e * 1000 + mi * 100 + rdraw);
                    la_rf_opts rf = la_rf_opts_default();
                    rf.kind = ATTN_EST[e].kind;
                    la_dims dims = {.B = 1, .T = T, .H = 1, .K = d, .V = V};
                    la_status st =
                        la_projection_draw(W, m, d, ATTN_EST[e].proj, LA_SCALING_CHI, seed);
                    for (int causal = 0; causal < 2 && !rc; causal++) {
                        /* the library's Performer attention: float32 features and
                         * normalised linear attention (chunkwise when causal) */
                        la_linear_attn_opts attn = la_linear_attn_opts_default();
                        attn.feature_map = LA_FEATURE_IDENTITY;
                        attn.normalize = 1;
                        attn.causal = causal;
                        attn.form = LA_FORM_CHUNK;
                        if (!st)
                            st = la_performer_attn_forward(ctx, &rf, &attn, &dims, o, q, k, vf, W,
                                                           m);
                        if (st) {
                            fprintf(stderr,
                                    "linattn approx: attention experiment failed: %s (%s)\n",
                                    la_status_string(st), la_last_error());
                            rc = 1;
                            break;
                        }
                        double s = 0;
                        for (int64_t i = 0; i < T * V; i++) {
                            double diff = (double)o[i] - exact[causal * Tmax * V + i];
                            s += diff * diff;
                        }
                        double rel = sqrt(s) / ex_norm[causal];
                        s1[causal] += rel;
                        s2[causal] += rel * rel;
                    }
                }
                for (int causal = 0; causal < 2; causal++) {
                    double mean = s1[causal] / c->attn_draws;
                    r->attn[e][causal][ti][mi] = mean;
                    r->attn_sd[e][causal][ti][mi] =
                        sqrt(fmax(s2[causal] / c->attn_draws - mean * mean, 0));
                }
                *done += (double)T * (double)M * 0.05 * c->attn_draws;
                progress(c, *done / total, "attention error");
            }
    }
done:
    free(q);
    free(k);
    free(vf);
    free(W);
    free(o);
    free(qd);
    free(kd);
    free(vd);
    free(exact);
    return rc;
}

static int approx_compute(const approx_cfg *c, approx_res *r) {
    la_ctx *ctx = NULL;
    if (la_ctx_create(&ctx, c->lab.threads) != LA_OK) {
        fprintf(stderr, "linattn approx: %s\n", la_last_error());
        return 1;
    }
    /* work units for the progress indicator (rough cost model) */
    double total = 0, done = 0;
    for (int mi = 0; mi < c->n_m; mi++) total += N_KEST * (double)c->ms[mi] * c->draws;
    for (int ti = 0; ti < c->n_T; ti++)
        for (int e = 0; e < N_AEST; e++)
            for (int mi = 0; mi < c->n_attn_m; mi++)
                total += (double)c->Ts[ti] * la_rf_num_features(ATTN_EST[e].kind, c->attn_ms[mi]) *
                         0.05 * c->attn_draws;
    int rc = compute_kernel(c, ctx, r, &done, total);
    if (!rc) rc = compute_attention(c, ctx, r, &done, total);
    la_ctx_destroy(ctx);
    return rc;
}

/* ---- output ----------------------------------------------------------- */

static void table_kernel(const approx_cfg *c, const approx_res *r, strbuf *b) {
    sb_addf(b,
            "(a) Kernel estimation: mean squared error of phi(x).phi(y) over %d draws of W,\n"
            "    8 random pairs per norm, d = %lld; 'theory' is the closed-form i.i.d. MSE\n"
            "    (MATH.md 3). Exact kernel: softmax exp(x.y/sqrt d); Gaussian for trig-gauss.\n"
            "    m = projection rows (features: m positive, 2m hyperbolic/trig).\n",
            c->draws, (long long)c->d);
    const char *kinds[] = {"positive", "hyperbolic", "trig", "trig-gauss"};
    for (int g = 0; g < c->n_norm; g++) {
        sb_addf(b, "\n  |x| = |y| = %g  (|x'| = %.3g)\n", c->norms[g],
                c->norms[g] / pow((double)c->d, 0.25));
        sb_addf(b, "  %5s", "m");
        for (int kk = 0; kk < 4; kk++) sb_addf(b, kk < 3 ? " | %-29s" : " | %s", kinds[kk]);
        sb_addf(b, "\n  %5s", "");
        for (int kk = 0; kk < 4; kk++) sb_addf(b, " | %9s %9s %9s", "iid", "orth", "theory");
        sb_addf(b, "\n");
        for (int mi = 0; mi < c->n_m; mi++) {
            sb_addf(b, "  %5lld", (long long)c->ms[mi]);
            for (int kk = 0; kk < 4; kk++) {
                const ref_mse_stats *a = &r->kernel[2 * kk][g][mi],
                                    *o = &r->kernel[2 * kk + 1][g][mi];
                sb_addf(b, " | %9.2e %9.2e %9.2e", a->mse, o->mse, a->theory);
            }
            sb_addf(b, "\n");
        }
    }
}

static void table_attn(const approx_cfg *c, const approx_res *r, strbuf *b) {
    sb_addf(b,
            "\n(b) Attention: relative error |O_performer - O_softmax|_F / |O_softmax|_F\n"
            "    (mean over %d draws of W), d = V = %lld, q,k ~ N(0, %g^2);\n"
            "    la_performer_attn_forward (float32, stabilised features, chunkwise when\n"
            "    causal) against exact softmax attention in float64.\n",
            c->attn_draws, (long long)c->d, c->qk_std);
    for (int causal = 0; causal < 2; causal++) {
        sb_addf(b, "\n  %s\n  %5s", causal ? "causal" : "non-causal", "m");
        for (int e = 0; e < N_AEST; e++) {
            char h[32];
            snprintf(h, sizeof h, "%s %s", ATTN_EST[e].name, ATTN_EST[e].pname);
            sb_addf(b, e + 1 < N_AEST ? " | %-*s" : " | %.*s", e + 1 < N_AEST ? 8 * c->n_T - 1 : 32,
                    h);
        }
        sb_addf(b, "\n  %5s", "");
        for (int e = 0; e < N_AEST; e++) {
            sb_addf(b, " |");
            for (int ti = 0; ti < c->n_T; ti++) {
                char h[16];
                snprintf(h, sizeof h, "T=%lld", (long long)c->Ts[ti]);
                sb_addf(b, "%s%7s", ti ? " " : "", h);
            }
        }
        sb_addf(b, "\n");
        for (int mi = 0; mi < c->n_attn_m; mi++) {
            sb_addf(b, "  %5lld", (long long)c->attn_ms[mi]);
            for (int e = 0; e < N_AEST; e++) {
                sb_addf(b, " |");
                for (int ti = 0; ti < c->n_T; ti++)
                    sb_addf(b, "%s%7.4f", ti ? " " : "", r->attn[e][causal][ti][mi]);
            }
            sb_addf(b, "\n");
        }
    }
}

static void json_out(const approx_cfg *c, const approx_res *r, strbuf *b) {
    sb_addf(b,
            "{\n  \"lab\": \"feature_maps\",\n  \"seed\": %llu,\n  \"d\": %lld,\n"
            "  \"draws\": %d,\n  \"attn_draws\": %d,\n  \"qk_std\": %g,\n  \"kernel\": [\n",
            (unsigned long long)c->lab.seed, (long long)c->d, c->draws, c->attn_draws, c->qk_std);
    int first = 1;
    for (int e = 0; e < N_KEST; e++)
        for (int g = 0; g < c->n_norm; g++)
            for (int mi = 0; mi < c->n_m; mi++) {
                const ref_mse_stats *s = &r->kernel[e][g][mi];
                sb_addf(b,
                        "%s    {\"estimator\": \"%s\", \"projection\": \"%s\", \"norm\": %g, "
                        "\"m\": %lld, \"mse\": ",
                        first ? "" : ",\n", KERNEL_EST[e].name, KERNEL_EST[e].pname, c->norms[g],
                        (long long)c->ms[mi]);
                sb_json_num(b, s->mse);
                sb_addf(b, ", \"se\": ");
                sb_json_num(b, s->se);
                sb_addf(b, ", \"theory_iid\": ");
                sb_json_num(b, s->theory);
                sb_addf(b, ", \"bias\": ");
                sb_json_num(b, s->bias);
                sb_addf(b, "}");
                first = 0;
            }
    sb_addf(b, "\n  ],\n  \"attention\": [\n");
    first = 1;
    for (int e = 0; e < N_AEST; e++)
        for (int causal = 0; causal < 2; causal++)
            for (int ti = 0; ti < c->n_T; ti++)
                for (int mi = 0; mi < c->n_attn_m; mi++) {
                    sb_addf(b,
                            "%s    {\"estimator\": \"%s\", \"projection\": \"%s\", \"causal\": %s, "
                            "\"T\": %lld, \"m\": %lld, \"rel_err\": ",
                            first ? "" : ",\n", ATTN_EST[e].name, ATTN_EST[e].pname,
                            causal ? "true" : "false", (long long)c->Ts[ti],
                            (long long)c->attn_ms[mi]);
                    sb_json_num(b, r->attn[e][causal][ti][mi]);
                    sb_addf(b, ", \"sd\": ");
                    sb_json_num(b, r->attn_sd[e][causal][ti][mi]);
                    sb_addf(b, "}");
                    first = 0;
                }
    sb_addf(b, "\n  ]\n}\n");
}

static char *svg_kernel(const approx_cfg *c, const approx_res *r, int g) {
    double xs[MAX_LIST], ys[N_KEST + 4][MAX_LIST];
    svg_series s[N_KEST + 4];
    char labels[N_KEST + 4][48];
    int n = 0;
    for (int mi = 0; mi < c->n_m; mi++) xs[mi] = (double)c->ms[mi];
    for (int kk = 0; kk < 4; kk++) {
        for (int v = 0; v < 3; v++) { /* iid, orth, theory */
            const int e = 2 * kk + (v == 1);
            for (int mi = 0; mi < c->n_m; mi++)
                ys[n][mi] = v == 2 ? r->kernel[e][g][mi].theory : r->kernel[e][g][mi].mse;
            snprintf(labels[n], sizeof labels[n], "%s %s", KERNEL_EST[e].name,
                     v == 2 ? "theory (iid)"
                     : v    ? "orthogonal"
                            : "i.i.d.");
            s[n] = (svg_series){
                labels[n],
                xs,
                ys[n],
                c->n_m,
                v == 2,
                v == 0 ? SVG_MARKER_CIRCLE : v == 1 ? SVG_MARKER_SQUARE : SVG_MARKER_NONE,
                kk};
            n++;
        }
    }
    char title[128], sub[160];
    snprintf(title, sizeof title, "Random-feature kernel estimates: MSE vs m (|x| = |y| = %g)",
             c->norms[g]);
    snprintf(sub, sizeof sub,
             "d = %lld, %d draws of W, 8 random pairs; dashed: closed-form "
             "i.i.d. MSE (MATH.md 3)",
             (long long)c->d, c->draws);
    svg_plot p = {title,
                  "m (random projections; hyperbolic and trig use 2m features)",
                  "mean squared error of phi(x).phi(y)",
                  sub,
                  SVG_LOG,
                  SVG_LOG,
                  900,
                  520,
                  s,
                  n};
    return svg_render(&p);
}

static char *svg_attn(const approx_cfg *c, const approx_res *r) {
    const int ti = c->n_T - 1;
    double xs[MAX_LIST], ys[2 * N_AEST][MAX_LIST];
    svg_series s[2 * N_AEST];
    char labels[2 * N_AEST][48];
    int n = 0;
    for (int mi = 0; mi < c->n_attn_m; mi++) xs[mi] = (double)c->attn_ms[mi];
    const svg_marker mk[] = {SVG_MARKER_CIRCLE, SVG_MARKER_SQUARE, SVG_MARKER_TRIANGLE,
                             SVG_MARKER_DIAMOND};
    for (int e = 0; e < N_AEST; e++)
        for (int causal = 0; causal < 2; causal++) {
            for (int mi = 0; mi < c->n_attn_m; mi++) ys[n][mi] = r->attn[e][causal][ti][mi];
            snprintf(labels[n], sizeof labels[n], "%s %s, %s", ATTN_EST[e].name, ATTN_EST[e].pname,
                     causal ? "causal" : "non-causal");
            s[n] = (svg_series){labels[n], xs, ys[n], c->n_attn_m, causal, mk[e], e};
            n++;
        }
    char title[128], sub[160];
    snprintf(title, sizeof title, "Performer attention vs exact softmax (T = %lld)",
             (long long)c->Ts[ti]);
    snprintf(sub, sizeof sub,
             "d = V = %lld, q,k ~ N(0, %g^2), mean of %d draws of W; dashed: causal",
             (long long)c->d, c->qk_std, c->attn_draws);
    svg_plot p = {title,
                  "m (random projections)",
                  "relative error |O - O_softmax| / |O_softmax|",
                  sub,
                  SVG_LOG,
                  SVG_LOG,
                  900,
                  520,
                  s,
                  n};
    return svg_render(&p);
}

/* Fills out from a finished computation. */
static int fill_output(const approx_cfg *c, const approx_res *r, lab_output *out) {
    out->id = "feature_maps";
    out->title = "Lab 3: random features approximate the softmax kernel";
    sb_addf(&out->intro,
            "Performer's FAVOR+ features (positive and hyperbolic) and random Fourier "
            "(trigonometric) features estimate the softmax kernel exp(x.y/sqrt d) by an inner "
            "product of m random features. The measured mean squared error follows the "
            "closed-form 1/m law of MATH.md section 3 (dashed); orthogonal projection rows lower "
            "it further. In attention, positive features are accurate where the kernel is large, "
            "which is what attention weights need; trigonometric estimates can go negative: at "
            "the small query/key norms used here they are the most accurate, but at larger norms "
            "(linattn approx --qk-std 1) their normaliser can cross zero and the error explodes.");
    table_kernel(c, r, &out->table);
    table_attn(c, r, &out->table);
    json_out(c, r, &out->json);
    char file[64], cap[256];
    for (int g = 0; g < c->n_norm; g++) {
        snprintf(file, sizeof file, "feature_maps_kernel_norm%g.svg", c->norms[g]);
        snprintf(cap, sizeof cap,
                 "Kernel-estimation MSE vs m at input norm %g: measured "
                 "(solid, markers) and the i.i.d. closed form (dashed).",
                 c->norms[g]);
        if (lab_add_figure(out, file, svg_kernel(c, r, g), cap)) return 1;
    }
    snprintf(cap, sizeof cap,
             "Relative error of Performer attention against exact softmax "
             "attention vs m, T = %lld.",
             (long long)c->Ts[c->n_T - 1]);
    if (lab_add_figure(out, "feature_maps_attention.svg", svg_attn(c, r), cap)) return 1;
    /* summary: the positive-feature fit at the middle norm and the attention error at the
     * largest m and T */
    const int g = c->n_norm / 2, mi = c->n_m - 1;
    const ref_mse_stats *pos = &r->kernel[0][g][mi];
    sb_addf(&out->summary,
            "kernel MSE at m=%lld, |x|=%g: positive iid %.3g (theory %.3g), orth %.3g; "
            "attention rel. error at m=%lld, T=%lld: positive orth %.3f (non-causal)",
            (long long)c->ms[mi], c->norms[g], pos->mse, pos->theory, r->kernel[1][g][mi].mse,
            (long long)c->attn_ms[c->n_attn_m - 1], (long long)c->Ts[c->n_T - 1],
            r->attn[1][0][c->n_T - 1][c->n_attn_m - 1]);
    return out->table.oom || out->json.oom || out->summary.oom;
}

int lab_feature_maps(const lab_opts *opts, lab_output *out) {
    approx_cfg c;
    cfg_defaults(&c, opts);
    approx_res *r = calloc(1, sizeof *r);
    if (!r) return 1;
    int rc = approx_compute(&c, r);
    if (!rc) rc = fill_output(&c, r, out);
    free(r);
    return rc;
}

/* ---- the command ------------------------------------------------------ */

static void usage(FILE *f) {
    fprintf(f,
            "usage: linattn approx [--seed N] [--threads N] [--quick] [--draws N]\n"
            "                      [--json FILE] [--svg FILE] [--svg-prefix PREFIX]\n"
            "\n"
            "The feature-map lab. (a) For random pairs (x, y) at input norms 1, 2, 3, the\n"
            "mean squared error of the random-feature estimate phi(x).phi(y) of the softmax\n"
            "kernel (Gaussian kernel for trig-gauss) as a function of m, for i.i.d. and\n"
            "orthogonal projections x positive / hyperbolic / trigonometric features, beside\n"
            "the closed-form MSE of MATH.md section 3. (b) The relative error of Performer\n"
            "attention against exact softmax attention as a function of m and T, causal\n"
            "and non-causal. Prints both tables.\n"
            "\n"
            "  --seed N           seed of the inputs and projections (default 1)\n"
            "  --threads N        worker threads (default: all CPUs)\n"
            "  --quick            small sizes (a few seconds)\n"
            "  --draws N          draws of W per kernel point (default 120, quick 40)\n"
            "  --qk-std X         std of the entries of Q and K in (b) (default 0.5)\n"
            "  --json FILE        write every number as JSON\n"
            "  --svg FILE         write the kernel-MSE plot at |x| = 2 (log-log)\n"
            "  --svg-prefix P     write P<name>.svg for every plot: kernel_norm1/2/3, attention\n"
            "\n"
            "example: linattn approx --svg-prefix docs/approx_ --json approx.json\n");
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "linattn approx: cannot write %s\n", path);
        return 1;
    }
    int bad = fputs(text, f) < 0;
    bad |= fclose(f) != 0;
    if (bad) fprintf(stderr, "linattn approx: error writing %s\n", path);
    return bad;
}

static void print_progress(void *arg, double f, const char *what) {
    (void)arg;
    fprintf(stderr, "\r  %-20s %3.0f%%", what, 100 * (f > 1 ? 1 : f));
    fflush(stderr);
}

int cmd_approx(int argc, char **argv) {
    lab_opts lab = {.seed = 1};
    long threads = 0, draws = 0;
    const char *json = NULL, *svg = NULL, *prefix = NULL, *qk = NULL;
    const cli_opt opts[] = {CLI_OPT_SEED(&lab.seed),
                            CLI_OPT_THREADS(&threads),
                            CLI_OPT_QUICK(&lab.quick),
                            CLI_OPT_JSON(&json),
                            {"--draws", CLI_INT, &draws, 2, 100000, NULL},
                            {"--svg", CLI_STR, &svg, 0, 0, NULL},
                            {"--svg-prefix", CLI_STR, &prefix, 0, 0, NULL},
                            {"--qk-std", CLI_STR, &qk, 0, 0, NULL}};
    const int parsed = cli_parse("approx", argc, argv, opts, CLI_COUNT(opts));
    if (parsed == CLI_HELP) usage(stdout);
    if (parsed != CLI_OK) return parsed == CLI_HELP ? 0 : 2;
    lab.threads = (int)threads;
    if (isatty(fileno(stderr))) lab.progress = print_progress;
    approx_cfg c;
    cfg_defaults(&c, &lab);
    if (draws) c.draws = (int)draws;
    if (qk) {
        char *end;
        double v = strtod(qk, &end);
        if (*qk == '\0' || *end != '\0' || !(v > 0 && v <= 4)) {
            fprintf(stderr, "linattn approx: --qk-std expects a number in (0, 4], got '%s'\n", qk);
            return 2;
        }
        c.qk_std = v;
    }
    approx_res *r = calloc(1, sizeof *r);
    lab_output out = {0};
    int rc = r ? approx_compute(&c, r) : 1;
    if (lab.progress) fprintf(stderr, "\r%40s\r", "");
    if (!rc) rc = fill_output(&c, r, &out);
    if (!rc) {
        fputs(out.table.s, stdout);
        if (json) rc |= write_text(json, out.json.s);
        if (svg) rc |= write_text(svg, out.figs[c.n_norm / 2].svg);
        if (prefix) {
            char path[4096];
            for (int g = 0; g < c.n_norm; g++) {
                snprintf(path, sizeof path, "%skernel_norm%g.svg", prefix, c.norms[g]);
                rc |= write_text(path, out.figs[g].svg);
            }
            snprintf(path, sizeof path, "%sattention.svg", prefix);
            rc |= write_text(path, out.figs[c.n_norm].svg);
        }
    }
    lab_output_free(&out);
    free(r);
    return rc;
}
