/* Shared pieces of the linattn command-line tool. */
#ifndef LINATTN_CLI_H
#define LINATTN_CLI_H

#include <stdint.h>

/* Each subcommand: argv[0] is the subcommand name; returns the exit code. */
int cmd_check(int argc, char **argv);
int cmd_approx(int argc, char **argv);
int cmd_labs(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* Option parsing helpers: return 1 and set *out when argv[*i] is `name`
 * followed by a valid value (advancing *i); print an error naming the option
 * and set *bad on a malformed value. */
int cli_opt_u64(int argc, char **argv, int *i, const char *name, uint64_t *out, int *bad);
int cli_opt_int(int argc, char **argv, int *i, const char *name, long lo, long hi, long *out,
                int *bad);
int cli_opt_str(int argc, char **argv, int *i, const char *name, const char **out, int *bad);

#endif
