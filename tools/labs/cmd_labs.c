/* linattn labs — runs the labs and writes a report folder: index.html
 * (every lab's text, tables and plots), one JSON file per lab, report.json
 * and the SVG figures; prints a short summary with a progress indicator.
 *
 * Each lab is one function (report.h: lab_fn) in the table below. */
#include "cli.h"
#include "model_cli.h"
#include "report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct lab_entry {
    const char *id;
    const char *what;
    lab_fn run;
} lab_entry;

static const lab_entry LABS[] = {
    {"complexity", "lab 1: softmax O(T^2) vs linear O(T): time, memory, decoding", lab_complexity},
    {"kernel_trick", "lab 2: (phi(Q)phi(K)^T)V = phi(Q)(phi(K)^T V) at different cost",
     lab_kernel_trick},
    {"feature_maps", "lab 3: random features vs the softmax kernel", lab_feature_maps},
    {"causal", "lab 4: causal linear attention: parallel = recurrent = chunk = decoding",
     lab_causal},
    {"zoo", "lab 5: the model zoo: which token mixer recalls (MQAR), state, speed", lab_zoo},
};
#define N_LABS ((int)(sizeof LABS / sizeof LABS[0]))

typedef struct progress_state {
    int index, total, tty;
    const char *id;
    int last_pct;
} progress_state;

static void show_progress(void *arg, double f, const char *what) {
    progress_state *p = arg;
    int pct = (int)(100 * (f > 1 ? 1 : f < 0 ? 0 : f));
    if (!p->tty) { /* a log: one line per 25% */
        if (pct / 25 == p->last_pct / 25 && p->last_pct >= 0) return;
        p->last_pct = pct;
        fprintf(stderr, "  [%d/%d] %s: %s %d%%\n", p->index, p->total, p->id, what, pct);
        return;
    }
    const int width = 30, fill = pct * width / 100;
    fprintf(stderr, "\r  [%d/%d] %-14s [", p->index, p->total, p->id);
    for (int i = 0; i < width; i++) fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %3d%%  %-20s", pct, what);
    fflush(stderr);
}

static void usage(FILE *f) {
    fprintf(f, "usage: linattn labs [--out DIR] [--seed N] [--threads N] [--quick] [--lab ID]\n"
               "\n"
               "Runs the labs and writes a report folder: index.html with every lab's\n"
               "explanation, tables and plots, one JSON file per lab, report.json and the SVG\n"
               "figures. Prints a one-line summary per lab.\n"
               "\n"
               "Labs:\n");
    for (int i = 0; i < N_LABS; i++) fprintf(f, "  %-14s %s\n", LABS[i].id, LABS[i].what);
    fprintf(f, "\n"
               "  --out DIR      report folder (default labs-report)\n"
               "  --seed N       seed of every random input (default 1)\n"
               "  --threads N    worker threads (default: all CPUs)\n"
               "  --quick        small sizes (seconds)\n"
               "  --lab ID       run only this lab\n"
               "\n"
               "example: linattn labs --out labs-report && xdg-open labs-report/index.html\n");
}

int cmd_labs(int argc, char **argv) {
    lab_opts opts = {.seed = 1};
    const char *out = "labs-report", *only = NULL;
    long threads = 0;
    const cli_opt table[] = {CLI_OPT_SEED(&opts.seed),
                             CLI_OPT_THREADS(&threads),
                             CLI_OPT_QUICK(&opts.quick),
                             {"--out", CLI_STR, &out, 0, 0, NULL},
                             {"--lab", CLI_STR, &only, 0, 0, NULL}};
    const int parsed = cli_parse("labs", argc, argv, table, CLI_COUNT(table));
    if (parsed == CLI_HELP) usage(stdout);
    if (parsed != CLI_OK) return parsed == CLI_HELP ? 0 : 2;
    opts.threads = (int)threads;
    int n_run = 0;
    for (int i = 0; i < N_LABS; i++) n_run += !only || !strcmp(only, LABS[i].id);
    if (n_run == 0) {
        fprintf(stderr, "linattn labs: no lab '%s' (see linattn labs --help)\n", only);
        return 2;
    }
    lab_output *res = calloc((size_t)n_run, sizeof *res);
    if (!res) {
        fprintf(stderr, "linattn labs: out of memory\n");
        return 1;
    }
    char cmdline[512];
    snprintf(cmdline, sizeof cmdline, "linattn labs --seed %llu%s%s%s",
             (unsigned long long)opts.seed, opts.quick ? " --quick" : "", only ? " --lab " : "",
             only ? only : "");
    progress_state ps = {0, n_run, isatty(fileno(stderr)), NULL, -1};
    opts.progress = show_progress;
    opts.progress_arg = &ps;
    printf("linattn labs: %d lab%s, report in %s/\n", n_run, n_run == 1 ? "" : "s", out);
    int rc = 0, k = 0;
    for (int i = 0; i < N_LABS && !rc; i++) {
        if (only && strcmp(only, LABS[i].id)) continue;
        ps.index = k + 1;
        ps.id = LABS[i].id;
        ps.last_pct = -1;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = LABS[i].run(&opts, &res[k]);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (ps.tty) fprintf(stderr, "\r%90s\r", "");
        if (rc) {
            fprintf(stderr, "linattn labs: lab %s failed\n", LABS[i].id);
            break;
        }
        double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        printf("  [%d/%d] %s (%.1f s)\n        %s\n", k + 1, n_run, res[k].title, sec,
               res[k].summary.s ? res[k].summary.s : "");
        k++;
    }
    if (!rc) {
        rc = report_write(out, res, k, cmdline) ? 1 : 0;
        if (!rc) printf("report: %s/index.html\n", out);
    }
    for (int i = 0; i < n_run; i++) lab_output_free(&res[i]);
    free(res);
    return rc;
}
