/* Report folder writer for `linattn labs` (see report.h). */
#include "report.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

void lab_output_free(lab_output *o) {
    sb_free(&o->intro);
    sb_free(&o->table);
    sb_free(&o->json);
    sb_free(&o->summary);
    for (int i = 0; i < o->n_figs; i++) {
        free(o->figs[i].svg);
        free(o->figs[i].caption);
    }
    o->n_figs = 0;
}

int lab_add_figure(lab_output *o, const char *file, char *svg, const char *caption) {
    if (!svg || o->n_figs == LAB_MAX_FIGURES) {
        free(svg);
        return -1;
    }
    lab_figure *f = &o->figs[o->n_figs];
    snprintf(f->file, sizeof f->file, "%s", file);
    f->svg = svg;
    f->caption = strdup(caption ? caption : "");
    if (!f->caption) {
        free(svg);
        return -1;
    }
    o->n_figs++;
    return 0;
}

static void html_text(FILE *f, const char *t) {
    for (; t && *t; t++) {
        switch (*t) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        default: fputc(*t, f);
        }
    }
}

static int write_file(const char *dir, const char *name, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "linattn: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    int bad = fputs(text ? text : "", f) < 0;
    bad |= fclose(f) != 0;
    if (bad) fprintf(stderr, "linattn: error writing %s\n", path);
    return bad ? -1 : 0;
}

int report_write(const char *dir, const lab_output *labs, int n_labs, const char *command_line) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "linattn: cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    int bad = 0;
    strbuf all = {0};
    sb_addf(&all, "{\n  \"command\": \"%s\",\n  \"labs\": [\n", command_line ? command_line : "");
    for (int i = 0; i < n_labs; i++) {
        char name[96];
        snprintf(name, sizeof name, "%s.json", labs[i].id);
        bad |= write_file(dir, name, labs[i].json.s);
        sb_addf(&all, "%s%s", labs[i].json.s ? labs[i].json.s : "{}",
                i + 1 < n_labs ? ",\n" : "\n");
        for (int k = 0; k < labs[i].n_figs; k++)
            bad |= write_file(dir, labs[i].figs[k].file, labs[i].figs[k].svg);
    }
    sb_addf(&all, "  ]\n}\n");
    bad |= all.oom ? -1 : write_file(dir, "report.json", all.s);
    sb_free(&all);

    char path[4096];
    snprintf(path, sizeof path, "%s/index.html", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "linattn: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
          "<title>linattn labs</title>\n<style>\n"
          "body{font-family:Helvetica,Arial,sans-serif;max-width:1000px;margin:2em auto;"
          "padding:0 1em;color:#222;line-height:1.45}\n"
          "pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12px}\n"
          "figure{margin:1.5em 0}figcaption{font-size:.9em;color:#444}\n"
          "nav a{margin-right:1em}\n</style></head><body>\n"
          "<h1>linattn labs</h1>\n",
          f);
    if (command_line) {
        fputs("<p>Produced by <code>", f);
        html_text(f, command_line);
        fputs("</code>. Every number below is recomputed by that command; the JSON files "
              "beside this page hold them in machine-readable form.</p>\n",
              f);
    }
    fputs("<nav>", f);
    for (int i = 0; i < n_labs; i++) {
        fprintf(f, "<a href=\"#%s\">", labs[i].id);
        html_text(f, labs[i].title);
        fputs("</a>", f);
    }
    fputs("</nav>\n", f);
    for (int i = 0; i < n_labs; i++) {
        const lab_output *l = &labs[i];
        fprintf(f, "<section id=\"%s\">\n<h2>", l->id);
        html_text(f, l->title);
        fputs("</h2>\n<p>", f);
        html_text(f, l->intro.s);
        fputs("</p>\n", f);
        for (int k = 0; k < l->n_figs; k++) {
            fprintf(f, "<figure><img src=\"%s\" alt=\"", l->figs[k].file);
            html_text(f, l->figs[k].caption);
            fputs("\" style=\"max-width:100%\"><figcaption>", f);
            html_text(f, l->figs[k].caption);
            fputs("</figcaption></figure>\n", f);
        }
        fputs("<pre>", f);
        html_text(f, l->table.s);
        fprintf(f, "</pre>\n<p>Data: <a href=\"%s.json\">%s.json</a></p>\n</section>\n", l->id,
                l->id);
    }
    fputs("</body></html>\n", f);
    bad |= ferror(f);
    bad |= fclose(f) != 0;
    return bad ? -1 : 0;
}
