/* linattn bench — speed and memory of every op and form over a sweep of T.
 *
 * For each thread count, head dimension D (K = V = D), forward or
 * forward+backward, op and T: the median wall time (and process CPU time) of
 * repeated calls in a fresh child process, GFLOP/s on the FLOP count of
 * bench_core.c (table there and in bench/OPS.md), the percentage of the FP32
 * FMA peak measured in the same run, and the peak extra memory of a call (RSS
 * high-water growth, bench_run_isolated). With --saved, a third pass "saved":
 * forward+backward with an la_saved object, the path autograd runs, for the
 * ops that take one (bench_op_saves). Configurations whose estimated time
 * (FLOPs / the rate measured at the previous T) exceeds --max-run are
 * skipped and printed as "skipped (est. Ns)". Then the crossover T at which
 * each linear form beats streaming softmax, and the decoding step
 * (B = 1, H = 8, K = V = D) against a memcpy of its state. */
#include "bench_core.h"
#include "bench_scaling.h"
#include "cli.h"
#include "linattn.h"
#include "ops/registry.h"
#include "report.h"
#include "svg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_T 32
#define MAX_D 8
#define MAX_THR 8

/* The decoding steps: every entry of the registry's decoding table. */
#define N_DECODE LA__DECODE_COUNT
static const char *decode_name(int op) { return la__decode_get(op)->family; }

typedef struct entry {
    bench_op op;
    int64_t T, D;
    int fb, threads; /* fb: 0 forward, 1 forward+backward, 2 the same with la_saved */
    int status; /* 0 measured, 1 skipped (estimate), 2 skipped (memory), 3 skipped (budget), 4 failed */
    double est, flops;
    bench_result r;
} entry;

/* decoding shapes: one sequence (latency) and a batch (throughput) */
static const struct {
    int64_t N, H;
} DECODE_SHAPES[] = {{1, 8}, {64, 16}};
#define N_DECODE_SHAPES ((int)(sizeof DECODE_SHAPES / sizeof DECODE_SHAPES[0]))

typedef struct decode_entry {
    int op, threads;
    int64_t D, N, H;
    double step, copy, ratio, flops; /* ratio: median of per-repetition step/copy */
    int ok;
} decode_entry;

typedef struct opts {
    int64_t Ts[MAX_T], Ds[MAX_D];
    int threads[MAX_THR];
    int nT, nD, nthr;
    int ops[LA__OP_COUNT];
    int nops;
    int fwd_only, quick, no_decode, decode_only, repeats, scaling, have_bh, saved;
    int64_t bh, chunk;
    double budget, max_run, max_gb;
    const char *json, *svg;
} opts;

/* op names or family prefixes ("softmax", "gla", "delta_rule-chunk") */
typedef struct {
    int *sel, *seen;
} ops_sel;

static int parse_ops(const char *cmd, const char *name, const char *s, void *out) {
    int *sel = ((ops_sel *)out)->sel;
    *((ops_sel *)out)->seen = 1;
    (void)cmd;
    (void)name;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    int any = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int hit = 0;
        for (int i = 0; i < LA__OP_COUNT; i++) {
            const char *nm = bench_op_name((bench_op)i);
            size_t l = strlen(tok);
            if (!strcmp(nm, tok) || (!strncmp(nm, tok, l) && nm[l] == '-') ||
                (!strcmp(tok, "all") && bench_op_in_default_sweep(i))) {
                sel[i] = 1;
                hit = 1;
            }
        }
        if (!hit) {
            fprintf(stderr, "linattn bench: unknown op '%s'; known:", tok);
            for (int i = 0; i < LA__OP_COUNT; i++) fprintf(stderr, " %s", bench_op_name((bench_op)i));
            fprintf(stderr, " (or a family prefix such as 'gla', or 'all')\n");
            return 1;
        }
        any = 1;
    }
    if (!any) {
        fprintf(stderr, "linattn bench: --ops needs at least one op name\n");
        return 1;
    }
    return 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: linattn bench [--T LIST] [--D LIST] [--ops LIST] [--threads LIST]\n"
            "                     [--bh N] [--chunk N] [--fwd-only] [--repeats N] [--quick]\n"
            "                     [--budget S] [--max-run S] [--max-gb G] [--no-decode]\n"
            "                     [--decode-only] [--scaling] [--saved]\n"
            "                     [--json FILE] [--svg PREFIX]\n"
            "\n"
            "Times every op and form (causal; K = V = D; B = 1, H = B*H) over a sweep of T,\n"
            "forward and forward+backward: median wall and CPU time, GFLOP/s on the FLOP\n"
            "count of bench/OPS.md, the percentage of the FP32 FMA peak measured in the\n"
            "same run, the peak extra memory of a call (RSS high-water growth in a fresh\n"
            "child process), the T at which each linear form beats streaming softmax, and\n"
            "the decoding step (B = 1, H = 8, K = V = D) against a memcpy of its state.\n"
            "\n"
            "  --T LIST        sequence lengths (default 128,512,2048,8192,32768,65536)\n"
            "  --D LIST        head dimensions (default 64,128)\n"
            "  --ops LIST      op names or family prefixes (default all):\n"
            "                 ");
    for (int i = 0; i < LA__OP_COUNT; i++)
        fprintf(f, " %s%s", bench_op_name((bench_op)i), i % 4 == 3 ? "\n                 " : "");
    fprintf(f, "\n"
               "  --threads LIST  worker-thread counts (default 1)\n"
               "  --bh N          B*H heads (default 8)\n"
               "  --chunk N       chunk size of the chunk forms (default 64)\n"
               "  --fwd-only      forward only\n"
               "  --saved         also pass \"saved\": forward+backward with an la_saved (the\n"
               "                  forward keeps per-chunk products, the backward reads them;\n"
               "                  the path autograd runs) for the ops that take one: the\n"
               "                  chunk forms of linear_attn, simple_gla, gla, delta_rule,\n"
               "                  gated_delta_rule, kda; same FLOP count as fwd+bwd\n"
               "  --repeats N     timed calls per configuration, median (default 3)\n"
               "  --quick         small sweep (seconds)\n"
               "  --budget S      stop measuring after S seconds (default 300)\n"
               "  --max-run S     skip a configuration whose estimated call exceeds S\n"
               "                  seconds (default 1.5; quick 0.05)\n"
               "  --max-gb G      skip a configuration whose inputs exceed G GB (default 2)\n"
               "  --no-decode     skip the decoding-step measurement\n"
               "  --decode-only   only the decoding-step measurement\n"
               "  --scaling       thread scaling of the chunk forms instead: threads 1..N\n"
               "                  (N = the largest --threads, default all CPUs), B*H in\n"
               "                  1,8,16 (or --bh), T 8192 and D 128 unless given; wall and\n"
               "                  CPU critical-path speed-up, tasks per thread, %% of peak\n"
               "  --json FILE     write every number as JSON\n"
               "  --svg PREFIX    write PREFIXtime_D<d>_fwd.svg, ..._fwdbwd.svg, PREFIXmem_D<d>.svg\n"
               "\n"
               "example: linattn bench --T 1024,8192 --D 128 --ops softmax,linear_attn --threads 1,2\n"
               "         linattn bench --saved --T 8192 --D 128 --ops gla,kda --no-decode\n"
               "         linattn bench --scaling --T 65536 --bh 1 --ops linear_attn-chunk --json s.json\n");
}

static const char *fb_name(int fb) { return fb == 2 ? "saved" : fb ? "fwd+bwd" : "fwd"; }

/* the passes: forward, forward+backward, and with --saved the same with la_saved */
static int n_passes(const opts *o) { return o->fwd_only ? 1 : o->saved ? 3 : 2; }
/* a pass the op has: "saved" only for the ops that take an la_saved */
static int has_pass(bench_op op, int fb) { return fb < 2 || bench_op_saves(op); }

static const entry *find(const entry *E, int n, bench_op op, int64_t T, int64_t D, int fb,
                         int thr) {
    for (int i = 0; i < n; i++)
        if (E[i].op == op && E[i].T == T && E[i].D == D && E[i].fb == fb &&
            E[i].threads == thr && E[i].status == 0)
            return &E[i];
    return NULL;
}

/* crossover T of op against streaming softmax: NAN when unknown; -1 when
 * faster at every measured T; +Inf when never faster */
static double crossover(const opts *o, const entry *E, int n, bench_op op, int64_t D, int fb,
                        int thr, int64_t *lo_T) {
    double prev_lr = NAN, prev_T = NAN;
    int seen = 0;
    *lo_T = 0;
    for (int ti = 0; ti < o->nT; ti++) {
        const entry *a = find(E, n, op, o->Ts[ti], D, fb, thr),
                    *s = find(E, n, LA__OP_SOFTMAX_STREAMING, o->Ts[ti], D, fb ? 1 : 0, thr);
        if (!a || !s) continue;
        double lr = log(a->r.wall / s->r.wall);
        if (lr < 0) {
            if (!seen) return -1;
            /* log-log interpolation between the last slower and this point */
            double lt0 = log(prev_T), lt1 = log((double)o->Ts[ti]);
            return exp(lt0 + (lt1 - lt0) * prev_lr / (prev_lr - lr));
        }
        seen = 1;
        prev_lr = lr;
        prev_T = (double)o->Ts[ti];
        *lo_T = o->Ts[ti];
    }
    return seen ? INFINITY : NAN;
}

static void run_decode(const opts *o, decode_entry *DE, int *nde) {
    for (int si = 0; si < N_DECODE_SHAPES; si++)
    for (int ti = 0; ti < o->nthr; ti++)
        for (int di = 0; di < o->nD; di++)
            for (int oi = 0; oi < N_DECODE; oi++) {
                const int64_t D = o->Ds[di], N = DECODE_SHAPES[si].N;
                const int64_t H = N * DECODE_SHAPES[si].H; /* N sequences of H heads */
                decode_entry *e = &DE[(*nde)++];
                memset(e, 0, sizeof *e);
                e->op = oi;
                e->threads = o->threads[ti];
                e->D = D;
                const la__decode_entry *de = la__decode_get(oi);
                e->N = N;
                e->H = DECODE_SHAPES[si].H;
                e->flops = de->flops_per_kv * (double)(H * D * D);
                la_decoder_config cfg;
                memset(&cfg, 0, sizeof cfg);
                cfg.op = de->op;
                cfg.N = N;
                cfg.H = e->H;
                cfg.K = D;
                cfg.V = D;
                cfg.feature_map = LA_FEATURE_IDENTITY;
                cfg.use_qk_l2norm = (de->needs & LA__NEED_L2NORM) != 0;
                la_decoder *dec = NULL;
                la_ctx *ctx = NULL;
                float *buf = malloc((size_t)(5 * H * D + 2 * H) * sizeof *buf);
                float *W = NULL;
                if (de->needs & LA__NEED_RF) { /* Performer: m = D random features */
                    W = malloc((size_t)(D * D) * sizeof *W);
                    cfg.rf = la_rf_opts_default();
                    cfg.rf_W = W;
                    cfg.rf_m = D;
                    if (W) la_projection_draw(W, D, D, LA_PROJ_ORTHOGONAL, LA_SCALING_CHI, 7);
                }
                const int bad_w = (de->needs & LA__NEED_RF) && !W;
                if (!buf || bad_w || la_ctx_create(&ctx, o->threads[ti]) ||
                    la_decoder_create(&dec, &cfg)) {
                    fprintf(stderr, "linattn bench: decode %s: %s\n", decode_name(oi),
                            la_last_error());
                    free(buf);
                    free(W);
                    la_ctx_destroy(ctx);
                    continue;
                }
                float *q = buf, *k = q + H * D, *v = k + H * D, *out = v + H * D,
                      *gk = out + H * D, *g = gk + H * D, *beta = g + H;
                bench_fill(q, (size_t)(3 * H * D), 11, 1.0f);
                for (int64_t i = 0; i < H; i++) {
                    g[i] = -0.05f;
                    beta[i] = 0.5f;
                }
                for (int64_t i = 0; i < H * D; i++) gk[i] = -0.05f; /* per-key gates [N,H,K] */
                const float *gate = (de->needs & LA__NEED_GK)                        ? gk
                                    : (de->needs & (LA__NEED_G | LA__NEED_G_OPT)) ? g
                                                                                  : NULL;
                const float *bet = (de->needs & LA__NEED_BETA) ? beta : NULL;
                /* Each repetition times a batch of steps and then a batch of
                 * copies of the state's bytes, so the two see the same load
                 * on a shared machine; the ratio is the median of the
                 * per-repetition ratios. */
                const size_t sbytes = (size_t)(H * D * D) * sizeof(float);
                char *cpy = malloc(2 * sbytes + 4096);
                int steps = 16, bad = !cpy;
                double ts[15], tc[15], tr[15];
                const int nrep = o->quick ? 5 : 15;
                if (cpy) memset(cpy, 1, 2 * sbytes + 4096);
                for (int rep = -1; rep < nrep && !bad; rep++) {
                    double t0 = bench_wall();
                    for (int s = 0; s < steps && !bad; s++) {
                        bad = la_decoder_step(ctx, dec, out, q, k, v, gate, NULL, bet) != LA_OK;
                    }
                    double dt = bench_wall() - t0;
                    if (rep < 0) { /* calibrate: about 2 ms per batch */
                        steps = (int)fmin(4096, fmax(16, 16 * 2e-3 / fmax(dt, 1e-9)));
                        continue;
                    }
                    /* source and destination half a page apart (no 4K aliasing) */
                    char *a = cpy, *bb = cpy + (sbytes + 4095) / 4096 * 4096 + 2048;
                    double t1 = bench_wall();
                    for (int s = 0; s < steps; s++) {
                        memcpy(s & 1 ? a : bb, s & 1 ? bb : a, sbytes);
                        __asm__ volatile("" ::: "memory");
                    }
                    double dc = bench_wall() - t1;
                    ts[rep] = dt / steps;
                    tc[rep] = dc / steps;
                    tr[rep] = dt / dc;
                }
                free(cpy);
                if (!bad) {
                    e->step = bench_median(ts, nrep);
                    e->copy = bench_median(tc, nrep);
                    e->ratio = bench_median(tr, nrep);
                    e->ok = 1;
                } else
                    fprintf(stderr, "linattn bench: decode %s: %s\n", decode_name(oi),
                            la_last_error());
                la_decoder_destroy(dec);
                la_ctx_destroy(ctx);
                free(buf);
                free(W);
            }
}

static const svg_marker MARKS[] = {SVG_MARKER_CIRCLE, SVG_MARKER_SQUARE, SVG_MARKER_TRIANGLE,
                                   SVG_MARKER_DIAMOND};

static int write_svgs(const opts *o, const entry *E, int n, const char *cpu, double peak) {
    int rc = 0;
    const int thr = o->threads[0];
    for (int di = 0; di < o->nD; di++)
        for (int kind = 0; kind < 3; kind++) { /* fwd time, fwd+bwd time, memory (fwd) */
            const int fb = kind == 1;
            if (fb && o->fwd_only) continue;
            double xs[LA__OP_COUNT][MAX_T], ys[LA__OP_COUNT][MAX_T];
            svg_series s[LA__OP_COUNT];
            int ns = 0;
            for (int oi = 0; oi < o->nops; oi++) {
                const bench_op op = (bench_op)o->ops[oi];
                int np = 0;
                for (int ti = 0; ti < o->nT; ti++) {
                    const entry *e = find(E, n, op, o->Ts[ti], o->Ds[di], fb, thr);
                    if (!e) continue;
                    xs[ns][np] = (double)o->Ts[ti];
                    ys[ns][np] = kind == 2 ? e->r.mem_extra / 1048576.0 : e->r.wall * 1e3;
                    if (kind == 2 && ys[ns][np] <= 0) ys[ns][np] = 0.01; /* show "none" at the floor */
                    np++;
                }
                if (!np) continue;
                s[ns] = (svg_series){bench_op_name(op), xs[ns], ys[ns], np,
                                     bench_op_is_quadratic(op), MARKS[oi % 4], oi % 10};
                ns++;
            }
            if (!ns) continue;
            char title[160], sub[200], path[4096];
            snprintf(title, sizeof title, "%s vs T, D = %lld (%s)",
                     kind == 2 ? "Peak extra memory" : "Time per call", (long long)o->Ds[di],
                     kind == 2 ? "forward" : fb_name(fb));
            snprintf(sub, sizeof sub,
                     "B*H = %lld, %d thread%s, %s, FMA peak %.0f GFLOP/s/core; dashed: O(T^2) forms",
                     (long long)o->bh, thr, thr == 1 ? "" : "s", cpu, peak);
            svg_plot p = {title,
                          "T (tokens)",
                          kind == 2 ? "RSS high-water growth (MiB; 0.01 = none measured)"
                                    : "median wall time per call (ms)",
                          sub,
                          SVG_LOG,
                          SVG_LOG,
                          900,
                          560,
                          s,
                          ns};
            if (kind == 2)
                snprintf(path, sizeof path, "%smem_D%lld.svg", o->svg, (long long)o->Ds[di]);
            else
                snprintf(path, sizeof path, "%stime_D%lld_%s.svg", o->svg, (long long)o->Ds[di],
                         fb ? "fwdbwd" : "fwd");
            if (svg_write(path, &p)) {
                fprintf(stderr, "linattn bench: cannot write %s\n", path);
                rc = 1;
            } else
                printf("wrote %s\n", path);
        }
    return rc;
}

int cmd_bench(int argc, char **argv) {
    opts o;
    memset(&o, 0, sizeof o);
    o.bh = 8;
    o.chunk = 64;
    o.repeats = 3;
    o.budget = 300;
    o.max_run = -1;
    o.max_gb = 2;
    int sel[LA__OP_COUNT] = {0}, have_ops = 0;
    int64_t thr[MAX_THR];
    cli_list Ts = {o.Ts, MAX_T, 0}, Ds = {o.Ds, MAX_D, 0}, thrs = {thr, MAX_THR, 0};
    long repeats = o.repeats, bh = -1, chunk = o.chunk; /* bh -1: not given */
    ops_sel ops = {sel, &have_ops};
    const cli_opt table[] = {
        CLI_OPT_QUICK(&o.quick),
        CLI_OPT_JSON(&o.json),
        {"--threads", CLI_INT_LIST, &thrs, 1, 256, NULL}, /* a list here: the sweep */
        {"--T", CLI_INT_LIST, &Ts, 1, 1 << 22, NULL},
        {"--D", CLI_INT_LIST, &Ds, 1, 1024, NULL},
        {"--ops", CLI_CUSTOM, &ops, 0, 0, parse_ops},
        {"--fwd-only", CLI_FLAG, &o.fwd_only, 0, 0, NULL},
        {"--saved", CLI_FLAG, &o.saved, 0, 0, NULL},
        {"--decode-only", CLI_FLAG, &o.decode_only, 0, 0, NULL},
        {"--no-decode", CLI_FLAG, &o.no_decode, 0, 0, NULL},
        {"--scaling", CLI_FLAG, &o.scaling, 0, 0, NULL},
        {"--budget", CLI_DOUBLE, &o.budget, 0, 1e6, NULL},
        {"--max-run", CLI_DOUBLE, &o.max_run, 0, 1e5, NULL},
        {"--max-gb", CLI_DOUBLE, &o.max_gb, 0.001, 1e4, NULL},
        {"--repeats", CLI_INT, &repeats, 1, 200, NULL},
        {"--bh", CLI_INT, &bh, 1, 4096, NULL},
        {"--chunk", CLI_INT, &chunk, 1, 4096, NULL},
        {"--svg", CLI_STR, &o.svg, 0, 0, NULL}};
    const int parsed = cli_parse("bench", argc, argv, table, CLI_COUNT(table));
    if (parsed == CLI_HELP) usage(stdout);
    if (parsed != CLI_OK) return parsed == CLI_HELP ? 0 : 2;
    o.repeats = (int)repeats;
    o.have_bh = bh > 0;
    if (o.have_bh) o.bh = bh;
    o.chunk = chunk;
    o.nT = Ts.n;
    o.nD = Ds.n;
    o.nthr = thrs.n;
    for (int j = 0; j < o.nthr; j++) o.threads[j] = (int)thr[j];
    int have_T = Ts.n > 0, have_D = Ds.n > 0, have_thr = thrs.n > 0;
    if (o.scaling) { /* its own defaults: one long-sequence shape */
        if (!have_T) o.Ts[0] = o.quick ? 2048 : 8192, o.nT = have_T = 1;
        if (!have_D) o.Ds[0] = o.quick ? 64 : 128, o.nD = have_D = 1;
        if (!have_thr) {
            long np = sysconf(_SC_NPROCESSORS_ONLN);
            o.threads[0] = np < 1 ? 1 : np > 256 ? 256 : (int)np;
            o.nthr = have_thr = 1;
        }
    }
    if (!have_T) {
        const int64_t q[] = {128, 512, 2048}, d[] = {128, 512, 2048, 8192, 32768, 65536};
        o.nT = o.quick ? 3 : 6;
        memcpy(o.Ts, o.quick ? q : d, (size_t)o.nT * sizeof(int64_t));
    }
    if (!have_D) {
        o.nD = o.quick ? 1 : 2;
        o.Ds[0] = 64;
        o.Ds[1] = 128;
    }
    if (!have_thr) {
        o.nthr = 1;
        o.threads[0] = 1;
    }
    if (o.max_run < 0) o.max_run = o.quick ? 0.05 : 1.5;
    if (!have_ops)
        for (int i = 0; i < LA__OP_COUNT; i++) sel[i] = bench_op_in_default_sweep(i);
    for (int i = 0; i < LA__OP_COUNT; i++)
        if (sel[i] && !o.decode_only) o.ops[o.nops++] = i;
    if (o.saved) {
        const char *clash = o.fwd_only ? "--fwd-only" : o.scaling ? "--scaling"
                            : o.decode_only ? "--decode-only" : NULL;
        if (clash) {
            fprintf(stderr, "linattn bench: --saved times forward+backward of the op sweep; it "
                            "cannot be combined with %s\n", clash);
            return 2;
        }
        int any = 0;
        for (int i = 0; i < o.nops; i++) any |= bench_op_saves(o.ops[i]);
        if (!any) {
            fprintf(stderr, "linattn bench: --saved: none of the selected ops takes an la_saved "
                            "(the chunk forms of linear_attn, simple_gla, gla, delta_rule, "
                            "gated_delta_rule, kda do)\n");
            return 2;
        }
    }
    /* ascending T: the skip estimate extrapolates from the previous T */
    for (int a = 1; a < o.nT; a++)
        for (int b = a; b > 0 && o.Ts[b - 1] > o.Ts[b]; b--) {
            int64_t t = o.Ts[b];
            o.Ts[b] = o.Ts[b - 1];
            o.Ts[b - 1] = t;
        }

    char cpu[128];
    bench_cpu_model(cpu, sizeof cpu);
    const char *isa;
    const double peak = bench_fma_peak(o.quick ? 0.2 : 1.0, &isa);
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    printf("linattn bench  %s  |  %s\n", date, cpu);
    printf("FP32 FMA peak (%s loop, 1 thread): %.1f GFLOP/s; B*H = %lld, chunk %lld, causal, K = V "
           "= D\n",
           isa, peak, (long long)o.bh, (long long)o.chunk);
    double peak_avx2 = NAN;
    if (la_isa_active() == LA_ISA_AVX512) { /* the narrower peak beside it, same run */
        const char *isa2;
        peak_avx2 = bench_fma_peak_for(o.quick ? 0.2 : 1.0, LA_ISA_AVX2, &isa2);
        printf("library path: %s (LINATTN_ISA=avx2 for the AVX2 kernels); %s peak: %.1f "
               "GFLOP/s\n",
               la_isa_name(la_isa_active()), isa2, peak_avx2);
    }
    if (o.scaling) {
        int maxthr = 1;
        for (int t = 0; t < o.nthr; t++) maxthr = o.threads[t] > maxthr ? o.threads[t] : maxthr;
        const int64_t bhs_def[] = {1, 8, 16};
        bench_scaling_cfg sc = {o.ops, o.nops, o.Ts, o.Ds, o.have_bh ? &o.bh : bhs_def,
                                o.nT, o.nD, o.have_bh ? 1 : 3, maxthr, o.fwd_only,
                                o.repeats, o.chunk, o.max_gb, peak, o.json, cpu, date, isa};
        return bench_scaling(&sc);
    }
    printf("times: median wall ms per call (cpu: process CPU ms, all threads); %% peak = "
           "GFLOP/s / (threads x peak);\n%%pk cpu = FLOPs / (CPU seconds x peak): the rate while "
           "on a core, robust to a shared machine\n");
    if (o.saved)
        printf("pass saved = fwd+bwd with la_saved (the forward keeps per-chunk products, the "
               "backward reads them); FLOPs counted as fwd+bwd\n");
    printf("\n");

    const int max_entries = o.nthr * o.nD * n_passes(&o) * o.nops * o.nT;
    entry *E = calloc((size_t)max_entries, sizeof *E);
    decode_entry *DE = calloc((size_t)(N_DECODE_SHAPES * o.nthr * o.nD * N_DECODE), sizeof *DE);
    if (!E || !DE) {
        fprintf(stderr, "linattn bench: out of memory\n");
        free(E);
        free(DE);
        return 1;
    }
    int n = 0;
    const double t_start = bench_wall();
    printf("%-18s %4s %7s %-7s %3s %10s %10s %8s %7s %8s %9s\n", "op", "D", "T", "pass", "thr",
           "wall ms", "cpu ms", "GFLOP/s", "% peak", "%pk cpu", "extra MiB");
    for (int ti = 0; ti < o.nthr; ti++)
        for (int di = 0; di < o.nD; di++)
            for (int fb = 0; fb < n_passes(&o); fb++)
                for (int oi = 0; oi < o.nops; oi++) {
                    const bench_op op = (bench_op)o.ops[oi];
                    if (!has_pass(op, fb)) continue;
                    double rate = NAN; /* FLOP/s at the previous measured T */
                    for (int tt = 0; tt < o.nT; tt++) {
                        entry *e = &E[n++];
                        e->op = op;
                        e->T = o.Ts[tt];
                        e->D = o.Ds[di];
                        e->fb = fb;
                        e->threads = o.threads[ti];
                        e->flops = bench_op_flops(op, e->T, e->D, e->D, o.bh, o.chunk, fb != 0);
                        e->est = isfinite(rate) ? e->flops / rate : NAN;
                        double gb = bench_bufs_bytes(op, e->T, o.bh, e->D, e->D, fb != 0) / 1e9;
                        printf("%-18s %4lld %7lld %-7s %3d ", bench_op_name(op),
                               (long long)e->D, (long long)e->T, fb_name(fb), e->threads);
                        if (gb > o.max_gb) {
                            e->status = 2;
                            printf("skipped (inputs %.1f GB > --max-gb)\n", gb);
                            continue;
                        }
                        if (isfinite(e->est) && e->est > o.max_run) {
                            e->status = 1;
                            printf("skipped (est. %.3gs)\n", e->est);
                            continue;
                        }
                        if (bench_wall() - t_start > o.budget) {
                            e->status = 3;
                            printf("skipped (budget)\n");
                            continue;
                        }
                        fflush(stdout);
                        bench_cfg c = {op,        e->T,      o.bh,      e->D,
                                       e->D,      o.chunk,   fb != 0,   e->threads,
                                       o.repeats, o.quick ? 0.01 : 0.1, 1, fb == 2};
                        if (bench_run_isolated(&c, &e->r) || !e->r.ok) {
                            e->status = 4;
                            printf("failed: %s\n", e->r.err[0] ? e->r.err : "fork");
                            continue;
                        }
                        rate = e->flops / e->r.wall;
                        const double gf = rate * 1e-9;
                        printf("%10.3f %10.3f %8.2f %6.1f%% %7.1f%% %9.2f\n", e->r.wall * 1e3,
                               e->r.cpu * 1e3, gf, 100 * gf / (peak * e->threads),
                               100 * e->flops / e->r.cpu * 1e-9 / peak,
                               e->r.mem_extra / 1048576.0);
                    }
                }
    const double sweep_s = bench_wall() - t_start;

    /* crossover */
    printf("\nCrossover: smallest T at which the form is faster than streaming softmax\n"
           "(log-log interpolation between measured T; '<' faster everywhere, '>' never)\n");
    printf("%-18s %4s %-7s %3s %12s\n", "op", "D", "pass", "thr", "crossover T");
    strbuf cx = {0};
    int first_cx = 1;
    for (int ti = 0; ti < o.nthr; ti++)
        for (int di = 0; di < o.nD; di++)
            for (int fb = 0; fb < n_passes(&o); fb++)
                for (int oi = 0; oi < o.nops; oi++) {
                    const bench_op op = (bench_op)o.ops[oi];
                    if (bench_op_is_softmax(op) || !has_pass(op, fb)) continue;
                    int64_t lo;
                    double x =
                        crossover(&o, E, n, op, o.Ds[di], fb, o.threads[ti], &lo);
                    char txt[48];
                    if (isnan(x))
                        snprintf(txt, sizeof txt, "n/a");
                    else if (x < 0)
                        snprintf(txt, sizeof txt, "< %lld", (long long)o.Ts[0]);
                    else if (isinf(x))
                        snprintf(txt, sizeof txt, "> %lld", (long long)lo);
                    else
                        snprintf(txt, sizeof txt, "~%.0f", x);
                    printf("%-18s %4lld %-7s %3d %12s\n", bench_op_name(op),
                           (long long)o.Ds[di], fb_name(fb), o.threads[ti], txt);
                    sb_addf(&cx,
                            "%s    {\"op\": \"%s\", \"D\": %lld, \"backward\": %s, \"saved\": "
                            "%s, \"threads\": %d, \"crossover_T\": ",
                            first_cx ? "" : ",\n", bench_op_name(op), (long long)o.Ds[di],
                            fb ? "true" : "false", fb == 2 ? "true" : "false", o.threads[ti]);
                    if (isnan(x))
                        sb_addf(&cx, "null, \"note\": \"not measured\"}");
                    else if (x < 0)
                        sb_addf(&cx, "null, \"note\": \"faster at every measured T\"}");
                    else if (isinf(x))
                        sb_addf(&cx, "null, \"note\": \"slower up to T = %lld\"}", (long long)lo);
                    else
                        sb_addf(&cx, "%.0f}", x);
                    first_cx = 0;
                }

    int nde = 0;
    if (!o.no_decode) {
        run_decode(&o, DE, &nde);
        printf("\nDecoding step: B sequences of H heads, K = V = D, one token each; state copy =\n"
               "memcpy of B*H*K*V floats (the bytes a step must at least read and write once);\n"
               "copy/step = the step's share of the copy bandwidth\n");
        printf("%-8s %3s %3s %4s %3s %12s %12s %8s %8s\n", "op", "B", "H", "D", "thr", "step us",
               "copy us", "ratio", "GFLOP/s");
        for (int i = 0; i < nde; i++) {
            const decode_entry *d = &DE[i];
            if (!d->ok) continue;
            printf("%-8s %3lld %3lld %4lld %3d %12.2f %12.2f %7.2fx %8.2f\n",
                   decode_name(d->op), (long long)d->N, (long long)d->H, (long long)d->D,
                   d->threads, d->step * 1e6, d->copy * 1e6, d->ratio,
                   d->flops / d->step * 1e-9);
        }
    }
    printf("\nsweep: %.1f s\n", sweep_s);

    int rc = 0;
    if (o.json) {
        FILE *f = fopen(o.json, "w");
        if (!f) {
            fprintf(stderr, "linattn bench: cannot write %s\n", o.json);
            rc = 1;
        } else {
            char p2[32] = "null"; /* only measured beside an AVX-512 peak */
            if (peak_avx2 == peak_avx2) snprintf(p2, sizeof p2, "%.3f", peak_avx2);
            fprintf(f,
                    "{\n  \"machine\": \"%s\",\n  \"date\": \"%s\",\n  \"fma_peak_gflops\": %.3f,\n"
                    "  \"fma_peak_avx2_gflops\": %s,\n"
                    "  \"fma_isa\": \"%s\",\n  \"bh\": %lld,\n  \"chunk\": %lld,\n"
                    "  \"sweep_seconds\": %.2f,\n  \"results\": [\n",
                    cpu, date, peak, p2, isa, (long long)o.bh, (long long)o.chunk, sweep_s);
            static const char *const STATUS[] = {"ok", "skipped_estimate", "skipped_memory",
                                                 "skipped_budget", "failed"};
            for (int i = 0; i < n; i++) {
                const entry *e = &E[i];
                strbuf b = {0};
                sb_addf(&b,
                        "    {\"op\": \"%s\", \"D\": %lld, \"T\": %lld, \"backward\": %s, "
                        "\"saved\": %s, \"threads\": %d, \"status\": \"%s\", \"flops\": %.6g, "
                        "\"est_s\": ",
                        bench_op_name(e->op), (long long)e->D, (long long)e->T,
                        e->fb ? "true" : "false", e->fb == 2 ? "true" : "false", e->threads,
                        STATUS[e->status], e->flops);
                sb_json_num(&b, e->est);
                sb_addf(&b, ", \"wall_s\": ");
                sb_json_num(&b, e->status ? NAN : e->r.wall);
                sb_addf(&b, ", \"cpu_s\": ");
                sb_json_num(&b, e->status ? NAN : e->r.cpu);
                sb_addf(&b, ", \"gflops\": ");
                sb_json_num(&b, e->status ? NAN : e->flops / e->r.wall * 1e-9);
                sb_addf(&b, ", \"pct_peak\": ");
                sb_json_num(&b, e->status ? NAN : 100 * e->flops / e->r.wall * 1e-9 /
                                                      (peak * e->threads));
                sb_addf(&b, ", \"pct_peak_cpu\": ");
                sb_json_num(&b, e->status ? NAN : 100 * e->flops / e->r.cpu * 1e-9 / peak);
                sb_addf(&b, ", \"mem_extra_bytes\": ");
                sb_json_num(&b, e->status ? NAN : e->r.mem_extra);
                sb_addf(&b, ", \"runs\": %d}%s\n", e->r.runs, i + 1 < n ? "," : "");
                fputs(b.s ? b.s : "", f);
                sb_free(&b);
            }
            fprintf(f, "  ],\n  \"crossover\": [\n%s\n  ],\n  \"decode\": [\n",
                    cx.s ? cx.s : "");
            int first = 1;
            for (int i = 0; i < nde; i++) {
                const decode_entry *d = &DE[i];
                if (!d->ok) continue;
                fprintf(f,
                        "%s    {\"op\": \"%s\", \"B\": %lld, \"H\": %lld, \"D\": %lld, "
                        "\"threads\": %d, \"step_s\": %.6g, \"state_copy_s\": %.6g, "
                        "\"ratio\": %.4g}",
                        first ? "" : ",\n", decode_name(d->op), (long long)d->N,
                        (long long)d->H, (long long)d->D, d->threads,
                        d->step, d->copy, d->ratio);
                first = 0;
            }
            fprintf(f, "\n  ]\n}\n");
            if (fclose(f)) {
                fprintf(stderr, "linattn bench: error writing %s\n", o.json);
                rc = 1;
            } else
                printf("wrote %s\n", o.json);
        }
    }
    if (o.svg) rc |= write_svgs(&o, E, n, cpu, peak);
    sb_free(&cx);
    free(E);
    free(DE);
    return rc;
}
