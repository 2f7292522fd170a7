/* The one option parser of every `linattn` subcommand: a table of options,
 * parsed in one call, with errors that name the subcommand, the option and
 * the bad value. The options every command shares (--seed, --threads,
 * --quick, --json) are defined once here (CLI_OPT_SEED ...), so they take
 * the same values and give the same messages everywhere.
 *
 *     long threads = 0;
 *     const cli_opt opts[] = {CLI_OPT_SEED(&seed), CLI_OPT_THREADS(&threads),
 *                             {"--out", CLI_STR, &out}};
 *     int parsed = cli_parse("labs", argc, argv, opts, CLI_COUNT(opts));
 *     if (parsed == CLI_HELP) usage(stdout);
 *     if (parsed != CLI_OK) return parsed == CLI_HELP ? 0 : 2;
 *
 * Accepted: `--name value` and `--name=value`; a flag takes no value. A
 * value may not start with "--" (so `--json --quick` is an error, not a
 * file named "--quick"). Errors, printed to stderr as "linattn CMD: ...":
 *   unknown option '--x'; --seed needs a value; --threads expects an
 *   integer in [0, 4096], got 'x'; --quick takes no value; unexpected
 *   argument 'x'. */
#ifndef LINATTN_CLI_OPTS_H
#define LINATTN_CLI_OPTS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CLI_FLAG,     /* int *: set to 1 */
    CLI_STR,      /* const char **: the argument itself */
    CLI_INT,      /* long *: an integer in [lo, hi] */
    CLI_U64,      /* uint64_t *: a non-negative integer (decimal or 0x hex) */
    CLI_DOUBLE,   /* double *: a finite number in [lo, hi] */
    CLI_INT_LIST, /* cli_list *: "a,b,c", each an integer in [lo, hi] */
    CLI_CUSTOM    /* out passed to parse(); it prints its own error */
} cli_kind;

/* Storage of a CLI_INT_LIST option: n = 0 until the option is seen. */
typedef struct cli_list {
    int64_t *v;
    int max, n;
} cli_list;

typedef struct cli_opt {
    const char *name; /* "--seed" */
    cli_kind kind;
    void *out;
    double lo, hi; /* CLI_INT, CLI_DOUBLE, CLI_INT_LIST */
    /* CLI_CUSTOM: returns 0 when value is good (cmd for the message). */
    int (*parse)(const char *cmd, const char *name, const char *value, void *out);
} cli_opt;

#define CLI_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The shared options. */
#define CLI_OPT_SEED(p)                                                                            \
    { "--seed", CLI_U64, (p), 0, 0, NULL }
#define CLI_OPT_THREADS(p)                                                                         \
    { "--threads", CLI_INT, (p), 0, 4096, NULL }
#define CLI_OPT_QUICK(p)                                                                           \
    { "--quick", CLI_FLAG, (p), 0, 0, NULL }
#define CLI_OPT_JSON(p)                                                                            \
    { "--json", CLI_STR, (p), 0, 0, NULL }

enum { CLI_OK = 0, CLI_HELP = 1, CLI_BAD = 2 };

/* Parses argv[1..argc-1] (argv[0] is the subcommand) against opts[0..n-1].
 * CLI_HELP for --help/-h (nothing else is reported), CLI_BAD after printing
 * the first error, else CLI_OK. Options not given keep their values. */
int cli_parse(const char *cmd, int argc, char **argv, const cli_opt *opts, int n);

#endif
