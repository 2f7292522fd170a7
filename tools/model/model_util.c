/* Helpers of the model commands: the text corpus, float options, clocks. */
#include "cli.h"
#include "model_cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef LINATTN_SOURCE_DIR
#define LINATTN_SOURCE_DIR "."
#endif

static unsigned char *read_file(const char *path, int64_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long sz = ftell(f);
    if (sz <= 0 || sz > (64L << 20) || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    unsigned char *b = malloc((size_t)sz);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = sz;
    return b;
}

unsigned char *mcli_read_text(const char *path, int64_t *n) {
    if (path) {
        unsigned char *b = read_file(path, n);
        if (!b) fprintf(stderr, "linattn: cannot read text file '%s'\n", path);
        return b;
    }
    const char *rel = "data/kjv_genesis_exodus.txt";
    char buf[4096];
    unsigned char *b = read_file(rel, n);
    if (b) return b;
    ssize_t len = readlink("/proc/self/exe", buf, sizeof buf - 64);
    if (len > 0) {
        buf[len] = 0;
        for (int up = 0; up < 3 && !b; up++) {
            char *s = strrchr(buf, '/');
            if (!s) break;
            *s = 0;
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", buf, rel);
            b = read_file(p, n);
        }
        if (b) return b;
    }
    snprintf(buf, sizeof buf, "%s/%s", LINATTN_SOURCE_DIR, rel);
    b = read_file(buf, n);
    if (!b) fprintf(stderr, "linattn: cannot find %s (pass --text FILE)\n", rel);
    return b;
}

double mcli_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void mcli_fmt_secs(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7)
        snprintf(buf, n, "?");
    else if (s < 60)
        snprintf(buf, n, "%.1f s", s);
    else
        snprintf(buf, n, "%d:%02d", (int)(s / 60), (int)s % 60);
}
