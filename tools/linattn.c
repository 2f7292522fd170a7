/* linattn — the command-line tool. One subcommand per job; each has --help. */
#include "cli.h"
#include "model_cli.h"
#include "linattn.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"check", cmd_check, "compare every op and form with the float64 reference"},
    {"labs", cmd_labs, "run the labs and write a report folder (index.html, JSON, SVG)"},
    {"bench", cmd_bench, "time and memory of every op and form over T, vs the FMA peak"},
    {"approx", cmd_approx, "feature-map lab: random-feature error vs m, against theory"},
    {"train", cmd_train, "train the small language model on a task with one token mixer"},
    {"generate", cmd_generate, "generate from a checkpoint (decoder state / KV cache)"},
    {"zoo", cmd_zoo, "every mixer on MQAR at growing pairs: recall, state, speed report"},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *f) {
    fprintf(f, "usage: linattn <command> [options]   (linattn <command> --help for more)\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\n  --version  print the version\n  --help     this text\n\n"
               "examples: linattn labs          (the five labs, report in labs-report/)\n"
               "          linattn check         (every op vs the float64 reference)\n"
               "          linattn train --task mqar --mixer gdn --quick   (train a small model)\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("linattn %s\n", la_version());
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "linattn: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
