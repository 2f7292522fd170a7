/* The table-driven option parser (see cli_opts.h). */
#include "cli_opts.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0') return 1;
    *out = v;
    return 0;
}

static int set_value(const char *cmd, const cli_opt *o, const char *s) {
    switch (o->kind) {
    case CLI_STR: *(const char **)o->out = s; return 0;
    case CLI_INT: {
        long v;
        if (parse_long(s, &v) || (double)v < o->lo || (double)v > o->hi) {
            fprintf(stderr, "linattn %s: %s expects an integer in [%.0f, %.0f], got '%s'\n", cmd,
                    o->name, o->lo, o->hi, s);
            return 1;
        }
        *(long *)o->out = v;
        return 0;
    }
    case CLI_U64: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 0);
        if (errno || *s == '\0' || *end != '\0' || *s == '-' || *s == '+' || *s == ' ') {
            fprintf(stderr, "linattn %s: %s expects a non-negative integer, got '%s'\n", cmd,
                    o->name, s);
            return 1;
        }
        *(uint64_t *)o->out = (uint64_t)v;
        return 0;
    }
    case CLI_DOUBLE: {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (errno || *s == '\0' || *end != '\0' || !isfinite(v) || !(v >= o->lo && v <= o->hi)) {
            fprintf(stderr, "linattn %s: %s expects a number in [%g, %g], got '%s'\n", cmd, o->name,
                    o->lo, o->hi, s);
            return 1;
        }
        *(double *)o->out = v;
        return 0;
    }
    case CLI_INT_LIST: {
        cli_list *l = o->out;
        int n = 0;
        const char *p = s;
        for (;;) {
            char *end;
            errno = 0;
            long long v = (*p >= '0' && *p <= '9') ? strtoll(p, &end, 10) : 0;
            if (!(*p >= '0' && *p <= '9') || errno || (double)v < o->lo || (double)v > o->hi ||
                n >= l->max || (*end != '\0' && *end != ','))
                break;
            l->v[n++] = v;
            if (*end == '\0') {
                l->n = n;
                return 0;
            }
            p = end + 1;
        }
        fprintf(stderr,
                "linattn %s: %s expects a comma-separated list of at most %d integers in "
                "[%.0f, %.0f], got '%s'\n",
                cmd, o->name, l->max, o->lo, o->hi, s);
        return 1;
    }
    case CLI_CUSTOM: return o->parse(cmd, o->name, s, o->out) != 0;
    case CLI_FLAG: break;
    }
    return 1;
}

int cli_parse(const char *cmd, int argc, char **argv, const cli_opt *opts, int n) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return CLI_HELP;
        if (a[0] != '-' || a[1] == '\0') {
            fprintf(stderr, "linattn %s: unexpected argument '%s' (see linattn %s --help)\n", cmd,
                    a, cmd);
            return CLI_BAD;
        }
        const char *eq = strchr(a, '=');
        const size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const cli_opt *o = NULL;
        for (int j = 0; j < n && !o; j++)
            if (strlen(opts[j].name) == len && !strncmp(opts[j].name, a, len)) o = &opts[j];
        if (!o) {
            fprintf(stderr, "linattn %s: unknown option '%.*s' (see linattn %s --help)\n", cmd,
                    (int)len, a, cmd);
            return CLI_BAD;
        }
        if (o->kind == CLI_FLAG) {
            if (eq) {
                fprintf(stderr, "linattn %s: %s takes no value, got '%s'\n", cmd, o->name, eq + 1);
                return CLI_BAD;
            }
            *(int *)o->out = 1;
            continue;
        }
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!value || (!eq && value[0] == '-' && value[1] == '-')) {
            fprintf(stderr, "linattn %s: %s needs a value%s%s%s\n", cmd, o->name,
                    value ? " (got the option '" : "", value ? value : "", value ? "')" : "");
            return CLI_BAD;
        }
        if (set_value(cmd, o, value)) return CLI_BAD;
    }
    return CLI_OK;
}
