/* Lab 2: the kernel trick. Non-causal normalised kernel attention with
 * phi = elu + 1, computed two ways:
 *   quadratic: A = phi(Q) phi(K)^T (the T x T matrix, materialised here per
 *              head), then o_t = A_t V / (A_t 1 + eps)            O(T^2 (K+V))
 *   linear:    S = phi(K)^T V, z = phi(K)^T 1, o_t = phi(q_t) S / (phi(q_t).z + eps)
 *              (la_linear_attn_forward, causal = 0)               O(T K V)
 * The two agree to float32 rounding; their time vs T has slope 2 and 1. Both
 * run on one thread so the comparison is like for like. */
#include "bench_core.h"
#include "linattn.h"
#include "report.h"
#include "svg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NT 12

typedef struct kt_res {
    int64_t Ts[NT];
    int nT;
    double quad[NT], lin[NT], maxdiff[NT], maxrel[NT];
    int64_t H, D;
} kt_res;

static float elu1(float x) { return x > 0 ? x + 1.0f : expf(x); }

/* The quadratic form for all heads of x [T,H,D] layout; A is T*T scratch. */
static void quadratic(int64_t T, int64_t H, int64_t D, const float *q, const float *k,
                      const float *v, float *o, float *pq, float *pk, float *A, float eps) {
    for (int64_t h = 0; h < H; h++) {
        for (int64_t t = 0; t < T; t++)
            for (int64_t d = 0; d < D; d++) {
                pq[t * D + d] = elu1(q[(t * H + h) * D + d]);
                pk[t * D + d] = elu1(k[(t * H + h) * D + d]);
            }
        for (int64_t t = 0; t < T; t++) /* A = phi(Q) phi(K)^T */
            for (int64_t j = 0; j < T; j++) {
                float s = 0;
                for (int64_t d = 0; d < D; d++) s += pq[t * D + d] * pk[j * D + d];
                A[t * T + j] = s;
            }
        for (int64_t t = 0; t < T; t++) { /* o = A V / (A 1 + eps) */
            float *ot = o + (t * H + h) * D, den = 0;
            for (int64_t d = 0; d < D; d++) ot[d] = 0;
            for (int64_t j = 0; j < T; j++) {
                const float a = A[t * T + j], *vj = v + (j * H + h) * D;
                den += a;
                for (int64_t d = 0; d < D; d++) ot[d] += a * vj[d];
            }
            for (int64_t d = 0; d < D; d++) ot[d] /= den + eps;
        }
    }
}

int lab_kernel_trick(const lab_opts *opts, lab_output *out) {
    kt_res R;
    memset(&R, 0, sizeof R);
    R.H = 2;
    R.D = 32;
    const int64_t Tq[] = {64, 128, 256, 512, 1024},
                  Td[] = {128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
    R.nT = opts->quick ? 5 : 9;
    memcpy(R.Ts, opts->quick ? Tq : Td, (size_t)R.nT * sizeof(int64_t));
    const double max_run = opts->quick ? 0.05 : 1.0;
    const int64_t Tmax = R.Ts[R.nT - 1], H = R.H, D = R.D;
    const size_t n = (size_t)(Tmax * H * D);
    float *q = malloc(n * sizeof *q), *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
    float *o1 = malloc(n * sizeof *o1), *o2 = malloc(n * sizeof *o2);
    float *pq = malloc((size_t)(Tmax * D) * sizeof *pq), *pk = malloc((size_t)(Tmax * D) * 4);
    float *A = NULL;
    la_ctx *ctx = NULL;
    int rc = 0;
    if (!q || !k || !v || !o1 || !o2 || !pq || !pk || la_ctx_create(&ctx, 1)) {
        fprintf(stderr, "lab kernel_trick: setup failed\n");
        rc = 1;
        goto done;
    }
    bench_fill(q, n, opts->seed * 3 + 1, 1.0f);
    bench_fill(k, n, opts->seed * 3 + 2, 1.0f);
    bench_fill(v, n, opts->seed * 3 + 3, 1.0f);
    la_linear_attn_opts lo = la_linear_attn_opts_default();
    lo.causal = 0;
    lo.feature_map = LA_FEATURE_ELU1;
    lo.normalize = 1;
    double qrate = NAN;
    for (int i = 0; i < R.nT && !rc; i++) {
        const int64_t T = R.Ts[i];
        la_dims dims = {.B = 1, .T = T, .H = H, .K = D, .V = D};
        /* linear: median of 5 */
        double ts[5];
        for (int r = 0; r < 5 && !rc; r++) {
            double t0 = bench_wall();
            rc = la_linear_attn_forward(ctx, &lo, &dims, o2, NULL, NULL, q, k, v, NULL, NULL) !=
                 LA_OK;
            ts[r] = bench_wall() - t0;
        }
        if (rc) {
            fprintf(stderr, "lab kernel_trick: %s\n", la_last_error());
            break;
        }
        R.lin[i] = bench_median(ts, 5);
        /* quadratic: skipped when the estimate from the previous T is too long */
        const double fl = 2.0 * (double)(T * T) * (double)(2 * D) * (double)H;
        R.quad[i] = R.maxdiff[i] = R.maxrel[i] = NAN;
        if (!(isfinite(qrate) && fl / qrate > max_run)) {
            free(A);
            A = malloc((size_t)(T * T) * sizeof *A);
            if (!A) {
                fprintf(stderr, "lab kernel_trick: out of memory for the %lld x %lld matrix\n",
                        (long long)T, (long long)T);
                rc = 1;
                break;
            }
            const int reps = T <= 512 ? 3 : 1;
            for (int r = 0; r < reps; r++) {
                double t0 = bench_wall();
                quadratic(T, H, D, q, k, v, o1, pq, pk, A, lo.eps);
                ts[r] = bench_wall() - t0;
            }
            R.quad[i] = bench_median(ts, reps);
            qrate = fl / R.quad[i];
            double md = 0, mx = 0;
            for (size_t e = 0; e < (size_t)(T * H * D); e++) {
                md = fmax(md, fabs((double)o1[e] - o2[e]));
                mx = fmax(mx, fabs((double)o1[e]));
            }
            R.maxdiff[i] = md;
            R.maxrel[i] = md / mx;
        }
        if (opts->progress) opts->progress(opts->progress_arg, (i + 1.0) / R.nT, "two orders");
    }
    if (rc) goto done;

    out->id = "kernel_trick";
    out->title = "Lab 2: the kernel trick, (phi(Q)phi(K)^T)V = phi(Q)(phi(K)^T V)";
    sb_addf(&out->intro,
            "Kernel attention with a feature map phi (here elu(x) + 1, normalised, "
            "non-causal) can be evaluated in either order. Left to right, (phi(Q)phi(K)^T)V "
            "builds the T x T matrix of kernel values, as softmax attention does: O(T^2 (K+V)) "
            "time and O(T^2) memory (computed here with plain loops). Right to left, "
            "phi(Q)(phi(K)^T V) first sums the keys and values into one K x V matrix (and the "
            "keys into a K-vector for the denominator), then reads it once per query: O(T K V) "
            "time and O(K V) memory (la_linear_attn_forward with causal = 0). The outputs agree "
            "to float32 rounding (max difference below); only the cost differs. On the log-log "
            "plot the quadratic order has slope 2, the linear one slope 1 (dashed guides). "
            "Both run on one thread.");
    strbuf *t = &out->table;
    sb_addf(t, "Non-causal, phi = elu+1, normalised, B*H = %lld, K = V = %lld, one thread\n",
            (long long)H, (long long)D);
    sb_addf(t, "%7s | %14s | %14s | %8s | %11s %11s\n", "T", "(QK^T)V ms", "Q(K^T V) ms",
            "speed-up", "max |diff|", "rel. diff");
    for (int i = 0; i < R.nT; i++) {
        if (isfinite(R.quad[i]))
            sb_addf(t, "%7lld | %14.3f | %14.3f | %7.1fx | %11.3g %11.3g\n", (long long)R.Ts[i],
                    R.quad[i] * 1e3, R.lin[i] * 1e3, R.quad[i] / R.lin[i], R.maxdiff[i],
                    R.maxrel[i]);
        else
            sb_addf(t, "%7lld | %14s | %14.3f | %8s | %11s %11s\n", (long long)R.Ts[i],
                    "skipped", R.lin[i] * 1e3, "", "", "");
    }
    sb_addf(t, "(rel. diff = max |diff| / max |o|; skipped: the quadratic order would take "
               "more than %.2g s)\n",
            max_run);
    strbuf *j = &out->json;
    sb_addf(j,
            "{\n  \"lab\": \"kernel_trick\",\n  \"feature_map\": \"elu1\",\n  \"BH\": %lld,\n"
            "  \"D\": %lld,\n  \"points\": [\n",
            (long long)H, (long long)D);
    for (int i = 0; i < R.nT; i++) {
        sb_addf(j, "    {\"T\": %lld, \"quadratic_s\": ", (long long)R.Ts[i]);
        sb_json_num(j, R.quad[i]);
        sb_addf(j, ", \"kernel_trick_s\": ");
        sb_json_num(j, R.lin[i]);
        sb_addf(j, ", \"max_abs_diff\": ");
        sb_json_num(j, R.maxdiff[i]);
        sb_addf(j, ", \"max_rel_diff\": ");
        sb_json_num(j, R.maxrel[i]);
        sb_addf(j, "}%s\n", i + 1 < R.nT ? "," : "");
    }
    sb_addf(j, "  ]\n}\n");
    /* plot with slope guides through the first point of each series */
    double xs[NT], yq[NT], yl[NT], g2[NT], g1[NT];
    int nq = 0;
    for (int i = 0; i < R.nT; i++) {
        xs[i] = (double)R.Ts[i];
        yq[i] = R.quad[i] * 1e3;
        yl[i] = R.lin[i] * 1e3;
        nq += isfinite(R.quad[i]);
        g2[i] = 0.5 * yq[0] * pow(xs[i] / xs[0], 2);
        g1[i] = 0.5 * yl[0] * (xs[i] / xs[0]);
    }
    svg_series s[4] = {{"(phi(Q)phi(K)^T)V, quadratic", xs, yq, R.nT, 0, SVG_MARKER_CIRCLE, 0},
                       {"phi(Q)(phi(K)^T V), kernel trick", xs, yl, R.nT, 0, SVG_MARKER_SQUARE, 3},
                       {"slope 2", xs, g2, nq, 1, SVG_MARKER_NONE, 0},
                       {"slope 1", xs, g1, R.nT, 1, SVG_MARKER_NONE, 3}};
    char sub[160];
    snprintf(sub, sizeof sub, "non-causal, phi = elu+1, B*H = %lld, K = V = %lld, one thread",
             (long long)H, (long long)D);
    svg_plot p = {"Same result, different cost: time vs T", "T (tokens)", "median time (ms)", sub,
                  SVG_LOG, SVG_LOG, 860, 520, s, 4};
    if (lab_add_figure(out, "kernel_trick_time.svg", svg_render(&p),
                       "Time of the two evaluation orders vs T (log-log); dashed guides have "
                       "slope 2 and 1.")) {
        rc = 1;
        goto done;
    }
    double worst = 0;
    int last = 0;
    for (int i = 0; i < R.nT; i++)
        if (isfinite(R.maxrel[i])) {
            worst = fmax(worst, R.maxrel[i]);
            last = i;
        }
    sb_addf(&out->summary,
            "max rel. difference %.2g; T=%lld: quadratic %.1f ms vs kernel trick %.2f ms (%.0fx)",
            worst, (long long)R.Ts[last], R.quad[last] * 1e3, R.lin[last] * 1e3,
            R.quad[last] / R.lin[last]);
    rc = out->table.oom || out->json.oom || out->summary.oom;
done:
    la_ctx_destroy(ctx);
    free(q);
    free(k);
    free(v);
    free(o1);
    free(o2);
    free(pq);
    free(pk);
    free(A);
    return rc;
}
