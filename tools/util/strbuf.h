/* A growable string for the tools' text output (tables, JSON, SVG, HTML).
 * Appending never fails loudly: on out-of-memory the buffer sets `oom` and
 * ignores further appends, and the writer checks `oom` once at the end. */
#ifndef LINATTN_STRBUF_H
#define LINATTN_STRBUF_H

#include <stddef.h>

typedef struct strbuf {
    char *s;
    size_t n, cap;
    int oom;
} strbuf;
void sb_addf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_free(strbuf *b);
/* JSON number: finite values as %.6g, others as null. */
void sb_json_num(strbuf *b, double v);

#endif
