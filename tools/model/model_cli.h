/* Shared pieces of the model commands (train, generate, zoo). */
#ifndef LINATTN_MODEL_CLI_H
#define LINATTN_MODEL_CLI_H

#include "model.h"
#include "report.h"

#include <stdio.h>

int cmd_train(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_zoo(int argc, char **argv);
/* Lab 5: the zoo at its smallest (labs --quick) or quick size (labs). */
int lab_zoo(const lab_opts *opts, lab_output *out);

/* Reads the byte-LM text: path, or data/kjv_genesis_exodus.txt found from
 * the current folder, the executable's folder's parent, or the source tree.
 * malloc'd; NULL (after a message) on failure. */
unsigned char *mcli_read_text(const char *path, int64_t *n);
double mcli_now(void);
/* "1:23" or "12.3 s" */
void mcli_fmt_secs(char *buf, size_t n, double s);

#endif
