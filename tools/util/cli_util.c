#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_opt_str(int argc, char **argv, int *i, const char *name, const char **out, int *bad) {
    if (strcmp(argv[*i], name) != 0) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "linattn: option %s needs a value\n", name);
        *bad = 1;
        return 1;
    }
    *out = argv[++*i];
    return 1;
}

int cli_opt_u64(int argc, char **argv, int *i, const char *name, uint64_t *out, int *bad) {
    const char *s;
    if (!cli_opt_str(argc, argv, i, name, &s, bad)) return 0;
    if (*bad) return 1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *s == '\0' || *end != '\0' || *s == '-') {
        fprintf(stderr, "linattn: %s expects a non-negative integer, got '%s'\n", name, s);
        *bad = 1;
        return 1;
    }
    *out = (uint64_t)v;
    return 1;
}

int cli_opt_int(int argc, char **argv, int *i, const char *name, long lo, long hi, long *out,
                int *bad) {
    const char *s;
    if (!cli_opt_str(argc, argv, i, name, &s, bad)) return 0;
    if (*bad) return 1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "linattn: %s expects an integer in [%ld, %ld], got '%s'\n", name, lo, hi,
                s);
        *bad = 1;
        return 1;
    }
    *out = v;
    return 1;
}
