/* linattn zoo — which token mixer can recall? Trains the same small model
 * with every mixer on MQAR at increasing numbers of key-value pairs (and,
 * with --listops, on ListOps) within a time budget, then measures held-out
 * accuracy, training tokens/s, the state (or KV cache) each sequence needs
 * and generation time per token vs position. Writes a report folder like the
 * labs (index.html, zoo.json, SVG). Also Lab 5 of `linattn labs`. */
#include "cli.h"
#include "model_cli.h"
#include "svg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ZOO_MAX_P 8
#define ZOO_MAX_POS 16

typedef struct zoo_cfg {
    int quick, listops, threads;
    uint64_t seed;
    double budget; /* seconds for all training runs */
    int n_pairs, pairs[ZOO_MAX_P];
    int64_t T, B, max_steps;
    int d_model, layers, heads, keys;
    int64_t gen_len; /* positions for the generation-cost curve */
    lab_progress_fn progress;
    void *progress_arg;
} zoo_cfg;

typedef struct zoo_run {
    double acc, loss, train_tps, secs;
    int64_t steps, state_bytes;
} zoo_run;

static la_status train_one(const zoo_cfg *z, la_ctx *ctx, int mixer, const lm_task_cfg *t,
                           double budget, zoo_run *r, lm_model **keep) {
    lm_config c = lm_config_default(mixer, lm_task_vocab(t));
    c.d_model = z->d_model, c.n_layers = z->layers, c.n_heads = z->heads;
    c.head_dim = z->d_model / z->heads, c.d_ff = 2 * z->d_model, c.seed = z->seed;
    lm_model *m = NULL;
    lm_adamw opt;
    memset(&opt, 0, sizeof opt);
    la_status st = lm_model_create(&m, &c, ctx);
    if (!st) st = lm_adamw_init(&opt, m->n_params, 3e-3f, z->max_steps / 10, z->max_steps);
    lm_train_state ts;
    memset(&ts, 0, sizeof ts);
    la_rng_seed(&ts.data_rng, z->seed + 99);
    const double t0 = mcli_now();
    double loss, acc;
    /* The schedule is laid out for max_steps; a run that hits the time budget
     * first stops early (the report gives the steps each run took). */
    while (!st && ts.step < z->max_steps && mcli_now() - t0 < budget)
        st = lm_train_step(m, &opt, t, &ts, z->B, &loss, &acc);
    r->secs = mcli_now() - t0;
    r->steps = ts.step;
    r->train_tps = (double)(ts.step * z->B * t->T) / (r->secs > 0 ? r->secs : 1);
    if (!st) st = lm_evaluate(m, t, z->seed + 7, z->B, 4, &r->loss, &r->acc);
    lm_gen *g = NULL;
    if (!st) st = lm_gen_create(&g, m, 1, t->T);
    int32_t tok = 1;
    float *logits = malloc((size_t)c.vocab * sizeof(float));
    for (int64_t i = 0; !st && i < t->T; i++) st = lm_gen_step(g, &tok, logits);
    r->state_bytes = lm_gen_state_bytes(g);
    lm_gen_destroy(g);
    free(logits);
    lm_adamw_free(&opt);
    if (keep && !st)
        *keep = m;
    else
        lm_model_destroy(m);
    return st;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median time per token over positions (p/2, p] for p = 2, 4, ..., gen_len
 * (the median: on a shared machine single tokens get preempted). */
static la_status gen_curve(const zoo_cfg *z, la_ctx *ctx, int mixer, int64_t *pos, double *us,
                           int *np) {
    lm_config c = lm_config_default(mixer, 2 * z->keys + 1);
    c.d_model = z->d_model, c.n_layers = z->layers, c.n_heads = z->heads;
    c.head_dim = z->d_model / z->heads, c.d_ff = 2 * z->d_model, c.seed = z->seed;
    lm_model *m = NULL;
    lm_gen *g = NULL;
    la_status st = lm_model_create(&m, &c, ctx);
    if (!st) st = lm_gen_create(&g, m, 1, z->gen_len);
    float *logits = malloc((size_t)c.vocab * sizeof(float));
    double *tt = malloc((size_t)z->gen_len * sizeof(double));
    if (!st && (!logits || !tt)) st = LA_ERR_OUT_OF_MEMORY;
    int k = 0;
    int32_t tok = 1;
    for (int64_t p = 1; !st && p <= z->gen_len; p++) {
        const double a = mcli_now();
        st = lm_gen_step(g, &tok, logits);
        tt[p - 1] = mcli_now() - a;
        if ((p & (p - 1)) == 0 && p >= 2 && k < ZOO_MAX_POS) {
            qsort(tt + p / 2, (size_t)(p / 2), sizeof(double), cmp_double);
            pos[k] = p;
            us[k++] = 1e6 * tt[p / 2 + p / 4];
        }
    }
    *np = k;
    free(logits);
    free(tt);
    lm_gen_destroy(g);
    lm_model_destroy(m);
    return st;
}

static void zoo_defaults(zoo_cfg *z, int size) { /* size: 0 smoke, 1 quick, 2 full */
    const int p_smoke[] = {2, 8}, p_quick[] = {2, 4, 8}, p_full[] = {4, 8, 16, 32, 64};
    z->keys = size == 2 ? 128 : 32;
    if (size == 0) z->n_pairs = 2, memcpy(z->pairs, p_smoke, sizeof p_smoke);
    if (size == 1) z->n_pairs = 3, memcpy(z->pairs, p_quick, sizeof p_quick);
    if (size == 2) z->n_pairs = 5, memcpy(z->pairs, p_full, sizeof p_full);
    z->T = size == 2 ? 256 : 48;
    z->B = size == 2 ? 16 : 16;
    z->d_model = size == 2 ? 64 : 32;
    z->heads = size == 2 ? 4 : 2;
    z->layers = 2;
    /* Runs stop at max_steps (the same for every mixer: a fair comparison) or
     * when their share of the time budget is spent (a cap for slow or busy
     * machines; the report gives the steps each run took). */
    z->budget = size == 0 ? 4 : size == 1 ? 150 : 1800;
    z->max_steps = size == 0 ? 10 : size == 1 ? 200 : 2000;
    z->gen_len = size == 0 ? 64 : size == 1 ? 1024 : 4096;
}

/* A run's share of the time budget: what is left over the runs left, so time
 * a fast run does not use goes to the runs after it; never less than half the
 * even share (a run that overshoots does not starve the rest). */
static double share(double budget, int n_runs, double left, int runs_left) {
    return fmax(left / runs_left, 0.5 * budget / n_runs);
}

static int zoo_run_all(const zoo_cfg *z, lab_output *out) {
    int mixers[LM_MIXER_COUNT], nm = 0;
    for (int i = 0; i < LM_MIXER_COUNT; i++)
        if (lm_mixer_available(i)) mixers[nm++] = i;
    zoo_run res[LM_MIXER_COUNT][ZOO_MAX_P], lops[LM_MIXER_COUNT];
    int64_t gpos[LM_MIXER_COUNT][ZOO_MAX_POS];
    double gus[LM_MIXER_COUNT][ZOO_MAX_POS];
    int gnp[LM_MIXER_COUNT];
    memset(res, 0, sizeof res);
    memset(lops, 0, sizeof lops);
    la_ctx *ctx = NULL;
    if (la_ctx_create(&ctx, z->threads)) {
        fprintf(stderr, "zoo: %s\n", la_last_error());
        return 1;
    }
    const int n_runs = nm * (z->n_pairs + (z->listops ? 1 : 0));
    const double per_run = z->budget / n_runs;
    double left = z->budget;
    int done = 0;
    for (int mi = 0; mi < nm; mi++) {
        for (int pi = 0; pi < z->n_pairs; pi++) {
            if (z->progress)
                z->progress(z->progress_arg, (double)done / n_runs, lm_mixer_name(mixers[mi]));
            lm_task_cfg t;
            memset(&t, 0, sizeof t);
            t.task = LM_TASK_MQAR, t.T = z->T, t.pairs = z->pairs[pi], t.n_keys = z->keys;
            if (train_one(z, ctx, mixers[mi], &t, share(z->budget, n_runs, left, n_runs - done),
                          &res[mi][pi], NULL)) {
                fprintf(stderr, "zoo: %s on MQAR: %s\n", lm_mixer_name(mixers[mi]), lm_error());
                la_ctx_destroy(ctx);
                return 1;
            }
            left -= res[mi][pi].secs;
            done++;
        }
        if (z->listops) {
            lm_task_cfg t;
            memset(&t, 0, sizeof t);
            t.task = LM_TASK_LISTOPS, t.T = z->T, t.listops_depth = 3;
            if (train_one(z, ctx, mixers[mi], &t, share(z->budget, n_runs, left, n_runs - done),
                          &lops[mi], NULL)) {
                fprintf(stderr, "zoo: %s on ListOps: %s\n", lm_mixer_name(mixers[mi]), lm_error());
                la_ctx_destroy(ctx);
                return 1;
            }
            left -= lops[mi].secs;
            done++;
        }
        if (gen_curve(z, ctx, mixers[mi], gpos[mi], gus[mi], &gnp[mi])) {
            fprintf(stderr, "zoo: generation with %s: %s\n", lm_mixer_name(mixers[mi]), lm_error());
            la_ctx_destroy(ctx);
            return 1;
        }
    }
    if (z->progress) z->progress(z->progress_arg, 1.0, "done");
    la_ctx_destroy(ctx);

    /* Text, table, JSON. */
    out->id = "zoo";
    out->title = "Lab 5: the model zoo - which token mixer can recall (MQAR)?";
    sb_addf(&out->intro,
            "The same small model (%d layers, d_model %d, %d heads, short conv 4, SwiGLU) is "
            "trained with every token mixer on multi-query associative recall: %ld-token "
            "sequences of key-value pairs (keys from %d, values from %d) followed by queries; "
            "accuracy is the fraction of held-out queries whose value is predicted. Each run "
            "trains %ld steps of batch %ld unless its share of the %.0f s time budget (%.1f s, "
            "plus what earlier runs left unused) runs out first (then it stops early: see the "
            "steps column). The literature (Zoology, "
            "Based, DeltaNet, Gated "
            "DeltaNet) expects softmax to recall nearly everything, plain linear attention to "
            "degrade as pairs grow, and delta-rule mixers to recover most of the gap; the "
            "numbers below are what this run measured. State: bytes of recurrent state per "
            "sequence (all layers, plus the conv history), or for softmax the KV cache at "
            "position %ld.",
            z->layers, z->d_model, z->heads, (long)z->T, z->keys, z->keys, (long)z->max_steps,
            (long)z->B, z->budget, per_run, (long)z->T);
    sb_addf(&out->table, "%-10s", "mixer");
    for (int pi = 0; pi < z->n_pairs; pi++) sb_addf(&out->table, "  acc@%-3d", z->pairs[pi]);
    if (z->listops) sb_addf(&out->table, "  listops");
    sb_addf(&out->table, "  %6s %10s %11s %12s\n", "steps", "state B", "train tok/s",
            "gen us/tok@max");
    for (int mi = 0; mi < nm; mi++) {
        sb_addf(&out->table, "%-10s", lm_mixer_name(mixers[mi]));
        for (int pi = 0; pi < z->n_pairs; pi++) sb_addf(&out->table, "  %7.3f", res[mi][pi].acc);
        if (z->listops) sb_addf(&out->table, "  %7.3f", lops[mi].acc);
        const zoo_run *r = &res[mi][z->n_pairs - 1];
        sb_addf(&out->table, "  %6ld %10ld %11.0f %12.1f\n", (long)r->steps, (long)r->state_bytes,
                r->train_tps, gnp[mi] ? gus[mi][gnp[mi] - 1] : NAN);
    }
    sb_addf(&out->json,
            "{\"id\": \"zoo\", \"config\": {\"T\": %ld, \"batch\": %ld, \"d_model\": %d, "
            "\"layers\": %d, \"heads\": %d, \"keys\": %d, \"budget_s\": ",
            (long)z->T, (long)z->B, z->d_model, z->layers, z->heads, z->keys);
    sb_json_num(&out->json, z->budget);
    sb_addf(&out->json, ", \"seconds_per_run\": ");
    sb_json_num(&out->json, per_run);
    sb_addf(&out->json, ", \"max_steps\": %ld, \"seed\": %llu}, \"mqar\": [", (long)z->max_steps,
            (unsigned long long)z->seed);
    for (int mi = 0; mi < nm; mi++)
        for (int pi = 0; pi < z->n_pairs; pi++) {
            const zoo_run *r = &res[mi][pi];
            sb_addf(&out->json,
                    "%s{\"mixer\": \"%s\", \"pairs\": %d, \"accuracy\": ", mi + pi ? ", " : "",
                    lm_mixer_name(mixers[mi]), z->pairs[pi]);
            sb_json_num(&out->json, r->acc);
            sb_addf(&out->json, ", \"loss\": ");
            sb_json_num(&out->json, r->loss);
            sb_addf(&out->json, ", \"steps\": %ld, \"train_tokens_per_s\": ", (long)r->steps);
            sb_json_num(&out->json, r->train_tps);
            sb_addf(&out->json, ", \"state_bytes\": %ld}", (long)r->state_bytes);
        }
    sb_addf(&out->json, "], \"listops\": [");
    for (int mi = 0; z->listops && mi < nm; mi++) {
        sb_addf(&out->json, "%s{\"mixer\": \"%s\", \"accuracy\": ", mi ? ", " : "",
                lm_mixer_name(mixers[mi]));
        sb_json_num(&out->json, lops[mi].acc);
        sb_addf(&out->json, ", \"steps\": %ld, \"train_tokens_per_s\": ", (long)lops[mi].steps);
        sb_json_num(&out->json, lops[mi].train_tps);
        sb_addf(&out->json, "}");
    }
    sb_addf(&out->json, "], \"generation\": [");
    for (int mi = 0; mi < nm; mi++) {
        sb_addf(&out->json, "%s{\"mixer\": \"%s\", \"position\": [", mi ? ", " : "",
                lm_mixer_name(mixers[mi]));
        for (int k = 0; k < gnp[mi]; k++)
            sb_addf(&out->json, "%s%ld", k ? ", " : "", (long)gpos[mi][k]);
        sb_addf(&out->json, "], \"us_per_token\": [");
        for (int k = 0; k < gnp[mi]; k++) {
            if (k) sb_addf(&out->json, ", ");
            sb_json_num(&out->json, gus[mi][k]);
        }
        sb_addf(&out->json, "]}");
    }
    sb_addf(&out->json, "]}");

    /* Summary: accuracy at the most pairs. */
    sb_addf(&out->summary, "MQAR accuracy at %d pairs:", z->pairs[z->n_pairs - 1]);
    for (int mi = 0; mi < nm; mi++)
        sb_addf(&out->summary, " %s %.2f", lm_mixer_name(mixers[mi]), res[mi][z->n_pairs - 1].acc);

    /* Figures. */
    double xs[ZOO_MAX_P], ys[LM_MIXER_COUNT][ZOO_MAX_P];
    svg_series s[LM_MIXER_COUNT];
    for (int pi = 0; pi < z->n_pairs; pi++) xs[pi] = z->pairs[pi];
    for (int mi = 0; mi < nm; mi++) {
        for (int pi = 0; pi < z->n_pairs; pi++) ys[mi][pi] = res[mi][pi].acc;
        s[mi] = (svg_series){lm_mixer_name(mixers[mi]), xs, ys[mi], z->n_pairs, 0,
                             (svg_marker)(1 + mi % 4),  mi};
    }
    svg_plot p1 = {"MQAR: held-out recall accuracy vs key-value pairs",
                   "key-value pairs",
                   "accuracy",
                   NULL,
                   SVG_LOG,
                   SVG_LINEAR,
                   0,
                   0,
                   s,
                   nm};
    char *svg1 = svg_render(&p1);
    if (svg1)
        lab_add_figure(out, "zoo_mqar_accuracy.svg", svg1,
                       "Held-out MQAR accuracy per mixer as the number of key-value pairs grows "
                       "(same model size and training budget per run).");
    double gx[LM_MIXER_COUNT][ZOO_MAX_POS];
    svg_series s2[LM_MIXER_COUNT];
    for (int mi = 0; mi < nm; mi++) {
        for (int k = 0; k < gnp[mi]; k++) gx[mi][k] = (double)gpos[mi][k];
        s2[mi] = (svg_series){lm_mixer_name(mixers[mi]), gx[mi], gus[mi], gnp[mi], 0,
                              (svg_marker)(1 + mi % 4),  mi};
    }
    svg_plot p2 = {"Generation: time per token vs position",
                   "position",
                   "microseconds per token",
                   NULL,
                   SVG_LOG,
                   SVG_LOG,
                   0,
                   0,
                   s2,
                   nm};
    char *svg2 = svg_render(&p2);
    if (svg2)
        lab_add_figure(out, "zoo_generation.svg", svg2,
                       "Time per generated token (batch 1) vs position: the recurrent mixers stay "
                       "flat, softmax with its KV cache grows with the position.");
    return 0;
}

int lab_zoo(const lab_opts *opts, lab_output *out) {
    zoo_cfg z;
    memset(&z, 0, sizeof z);
    zoo_defaults(&z, opts->quick ? 0 : 1);
    z.threads = opts->threads;
    z.seed = opts->seed;
    z.progress = opts->progress;
    z.progress_arg = opts->progress_arg;
    return zoo_run_all(&z, out);
}

static void usage(FILE *f) {
    fprintf(f, "usage: linattn zoo [--quick] [--listops] [--budget SECONDS] [--out DIR]\n"
               "                   [--steps N] [--pairs A,B,...] [--seq-len N] [--seed N]\n"
               "                   [--threads N]\n"
               "\n"
               "Trains every token mixer on MQAR at increasing numbers of key-value pairs\n"
               "within a time budget and writes a report folder (index.html, zoo.json, SVG):\n"
               "held-out accuracy vs pairs, state size, training tokens/s, generation time\n"
               "per token vs position.\n"
               "\n"
               "  --quick          about a minute (pairs 2 4 8, T 48, d_model 32, 200 steps)\n"
               "                   (default: pairs 4..64, T 256, d_model 64, 2000 steps)\n"
               "  --listops        also train each mixer on ListOps\n"
               "  --budget SECONDS cap on the training time of all runs together\n"
               "                   (quick 150, default 1800; a run stops at its share:\n"
               "                   the budget left over the runs left, at least half\n"
               "                   the even share)\n"
               "  --steps N        training steps per run (quick 200, default 2000)\n"
               "  --pairs A,B,...  MQAR key-value pairs (quick 2,4,8; default 4,8,16,32,64)\n"
               "  --seq-len N      MQAR and ListOps sequence length (quick 48, default 256)\n"
               "  --out DIR        report folder (default zoo-report)\n"
               "\n"
               "example: linattn zoo --quick && xdg-open zoo-report/index.html\n");
}

/* "4,8,16": up to ZOO_MAX_P counts in [1, 4096]. */
static int parse_pairs(const char *s, zoo_cfg *z) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        const long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 4096 || n == ZOO_MAX_P || (*end && *end != ',') ||
            (*end == ',' && !end[1])) {
            fprintf(stderr,
                    "linattn zoo: --pairs '%s': want up to %d comma-separated counts in "
                    "[1, 4096]\n",
                    s, ZOO_MAX_P);
            return 1;
        }
        z->pairs[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (!n) {
        fprintf(stderr, "linattn zoo: --pairs is empty\n");
        return 1;
    }
    z->n_pairs = n;
    return 0;
}

int cmd_zoo(int argc, char **argv) {
    zoo_cfg z;
    memset(&z, 0, sizeof z);
    const char *out = "zoo-report";
    long threads = 0, steps = 0, seq_len = 0;
    const char *pairs = NULL;
    double budget = -1;
    int quick = 0, listops = 0;
    uint64_t seed = 1;
    const cli_opt opts[] = {CLI_OPT_SEED(&seed),
                            CLI_OPT_THREADS(&threads),
                            CLI_OPT_QUICK(&quick),
                            {"--listops", CLI_FLAG, &listops, 0, 0, NULL},
                            {"--out", CLI_STR, &out, 0, 0, NULL},
                            {"--budget", CLI_DOUBLE, &budget, 0.1, 1e6, NULL},
                            {"--steps", CLI_INT, &steps, 1, 1000000, NULL},
                            {"--seq-len", CLI_INT, &seq_len, 4, 1 << 16, NULL},
                            {"--pairs", CLI_STR, &pairs, 0, 0, NULL}};
    const int parsed = cli_parse("zoo", argc, argv, opts, CLI_COUNT(opts));
    if (parsed == CLI_HELP) usage(stdout);
    if (parsed != CLI_OK) return parsed == CLI_HELP ? 0 : 2;
    zoo_defaults(&z, quick ? 1 : 2);
    z.listops = listops;
    z.threads = (int)threads;
    z.seed = seed;
    if (budget > 0) z.budget = budget;
    if (steps > 0) z.max_steps = steps;
    if (seq_len > 0) z.T = seq_len;
    if (pairs && parse_pairs(pairs, &z)) return 2;
    for (int pi = 0; pi < z.n_pairs; pi++)
        if (z.pairs[pi] > z.keys || z.T < 2 * (int64_t)z.pairs[pi] + 2) {
            fprintf(stderr,
                    "linattn zoo: %d pairs need at most %d keys and a sequence length of at "
                    "least %d (--seq-len is %ld)\n",
                    z.pairs[pi], z.keys, 2 * z.pairs[pi] + 2, (long)z.T);
            return 2;
        }
    lab_output res;
    memset(&res, 0, sizeof res);
    printf("linattn zoo: %s, training budget %.0f s, report in %s/\n", quick ? "quick" : "full",
           z.budget, out);
    const double t0 = mcli_now();
    int rc = zoo_run_all(&z, &res);
    if (!rc) {
        printf("%s\n%s\n", res.table.s ? res.table.s : "", res.summary.s ? res.summary.s : "");
        char cmdline[512], plist[128] = "";
        for (int pi = 0, o = 0; pi < z.n_pairs; pi++)
            o += snprintf(plist + o, sizeof plist - (size_t)o, "%s%d", pi ? "," : "", z.pairs[pi]);
        snprintf(cmdline, sizeof cmdline,
                 "linattn zoo%s%s --budget %.0f --steps %ld --pairs %s --seq-len %ld --seed %llu",
                 quick ? " --quick" : "", listops ? " --listops" : "", z.budget, (long)z.max_steps,
                 plist, (long)z.T, (unsigned long long)seed);
        rc = report_write(out, &res, 1, cmdline) ? 1 : 0;
        if (!rc) printf("report: %s/index.html (%.0f s)\n", out, mcli_now() - t0);
    }
    lab_output_free(&res);
    return rc;
}
