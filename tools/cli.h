/* Shared pieces of the linattn command-line tool. */
#ifndef LINATTN_CLI_H
#define LINATTN_CLI_H

#include <stdint.h>

/* Each subcommand: argv[0] is the subcommand name; returns the exit code. */
int cmd_check(int argc, char **argv);
int cmd_approx(int argc, char **argv);
int cmd_labs(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* Options: the one table-driven parser (util/cli_opts.h). */
#include "cli_opts.h"

#endif
