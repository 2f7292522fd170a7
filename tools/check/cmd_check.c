/* linattn check — runs every op and form against the float64 reference on
 * random inputs and prints a pass/fail table of maximum relative errors. */
#include "check.h"
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void check_add(check_report *r, const char *op, const char *form, const char *what,
               double err, double tol) {
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        check_row *rows = realloc(r->rows, (size_t)cap * sizeof *rows);
        if (!rows) {
            r->failed_calls++;
            return;
        }
        r->rows = rows;
        r->cap = cap;
    }
    check_row *row = &r->rows[r->n++];
    snprintf(row->op, sizeof row->op, "%s", op);
    snprintf(row->form, sizeof row->form, "%s", form);
    snprintf(row->what, sizeof row->what, "%s", what);
    row->err = err;
    row->tol = tol;
    row->pass = err <= tol; /* NaN fails */
}

void check_call_failed(check_report *r, const char *op, const char *form, la_status st) {
    fprintf(stderr, "linattn check: %s %s returned %s: %s\n", op, form, la_status_string(st),
            la_last_error());
    r->failed_calls++;
    check_add(r, op, form, "call", NAN, 0);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: linattn check [--seed N] [--threads N] [--quick] [--json FILE]\n"
            "\n"
            "Runs every op in each of its forms (forward and backward) on random inputs\n"
            "and compares it with the float64 reference; prints one row per output with\n"
            "the maximum relative error and the bound it must meet. Exit status 1 if any\n"
            "row fails.\n"
            "\n"
            "  --seed N      random inputs from seed N (default 1)\n"
            "  --threads N   worker threads (default: all CPUs)\n"
            "  --quick       smaller sizes\n"
            "  --json FILE   also write the rows as JSON\n"
            "\n"
            "example: linattn check --seed 7 --json check.json\n");
}

static int write_json(const check_report *r, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "linattn check: cannot write %s\n", path);
        return 1;
    }
    fprintf(f, "{\n  \"seed\": %llu,\n  \"rows\": [\n", (unsigned long long)r->seed);
    for (int i = 0; i < r->n; i++) {
        const check_row *w = &r->rows[i];
        fprintf(f,
                "    {\"op\": \"%s\", \"form\": \"%s\", \"output\": \"%s\", \"max_rel_err\": "
                "%s%.6g%s, \"tol\": %.3g, \"pass\": %s}%s\n",
                w->op, w->form, w->what, isfinite(w->err) ? "" : "\"",
                w->err, isfinite(w->err) ? "" : "\"", w->tol, w->pass ? "true" : "false",
                i + 1 < r->n ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad) fprintf(stderr, "linattn check: error writing %s\n", path);
    return bad;
}

int cmd_check(int argc, char **argv) {
    uint64_t seed = 1;
    long threads = 0;
    const char *json = NULL;
    int quick = 0;
    const cli_opt opts[] = {CLI_OPT_SEED(&seed), CLI_OPT_THREADS(&threads), CLI_OPT_QUICK(&quick),
                            CLI_OPT_JSON(&json)};
    const int parsed = cli_parse("check", argc, argv, opts, CLI_COUNT(opts));
    if (parsed == CLI_HELP) usage(stdout);
    if (parsed != CLI_OK) return parsed == CLI_HELP ? 0 : 2;
    check_report r = {0};
    r.seed = seed;
    r.quick = quick;
    if (la_ctx_create(&r.ctx, (int)threads) != LA_OK) {
        fprintf(stderr, "linattn check: %s\n", la_last_error());
        return 1;
    }
    check_softmax_attn(&r);
    check_linear_attn(&r);
    check_feature_maps(&r);
    check_gla(&r);
    check_delta_rule(&r);
    check_registry(&r);
    la_ctx_destroy(r.ctx);

    int failed = 0;
    printf("%-34s %-16s %-16s %11s %9s  %s\n", "op", "form", "output", "max rel err", "bound",
           "result");
    for (int i = 0; i < r.n; i++) {
        const check_row *w = &r.rows[i];
        failed += !w->pass;
        printf("%-34s %-16s %-16s %11.2e %9.0e  %s\n", w->op, w->form, w->what, w->err, w->tol,
               w->pass ? "pass" : "FAIL");
    }
    printf("\n%d passed, %d failed\n", r.n - failed, failed);
    int rc = failed || r.n == 0 ? 1 : 0;
    if (r.n == 0) fprintf(stderr, "linattn check: no checks ran\n");
    if (json && write_json(&r, json)) rc = 1;
    free(r.rows);
    return rc;
}
