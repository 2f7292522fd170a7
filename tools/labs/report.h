/* Lab reports: what a lab hands back (text table, JSON, SVG figures) and the
 * writers that turn a set of labs into a report folder (index.html + JSON +
 * SVG files). `linattn labs` runs the labs; each lab is one function with
 * the lab_fn signature, so new labs plug in by adding a line to its table. */
#ifndef LINATTN_REPORT_H
#define LINATTN_REPORT_H

#include "strbuf.h"

#include <stdint.h>
#include <stdio.h>


typedef struct lab_figure {
    char file[64]; /* file name inside the report folder, "feature_maps_kernel.svg" */
    char *svg;     /* the SVG document (malloc'd) */
    char *caption; /* one sentence (malloc'd) */
} lab_figure;

#define LAB_MAX_FIGURES 8

typedef struct lab_output {
    const char *id;    /* "feature_maps" */
    const char *title; /* "Lab 3: feature maps approximate the softmax kernel" */
    strbuf intro;      /* a paragraph of plain text */
    strbuf table;      /* fixed-width text table (printed, and <pre> in HTML) */
    strbuf json;       /* one JSON object */
    strbuf summary;    /* 1-3 lines for the terminal summary */
    lab_figure figs[LAB_MAX_FIGURES];
    int n_figs;
} lab_output;

void lab_output_free(lab_output *o);
/* Adds a figure (takes ownership of svg); 0 on success. */
int lab_add_figure(lab_output *o, const char *file, char *svg, const char *caption);

typedef void (*lab_progress_fn)(void *arg, double fraction, const char *what);

typedef struct lab_opts {
    uint64_t seed;
    int threads;              /* 0: all CPUs */
    int quick;                /* small sizes (tests, smoke runs) */
    lab_progress_fn progress; /* optional */
    void *progress_arg;
} lab_opts;

/* A lab: fills out; returns 0 on success, non-zero (after printing why to
 * stderr) on failure. */
typedef int (*lab_fn)(const lab_opts *opts, lab_output *out);

/* Lab 1 (tools/labs/lab_complexity.c): time and memory vs T, decoding cost vs
 * position. */
int lab_complexity(const lab_opts *opts, lab_output *out);
/* Lab 2 (tools/labs/lab_kernel_trick.c): (phi(Q)phi(K)^T)V = phi(Q)(phi(K)^T V). */
int lab_kernel_trick(const lab_opts *opts, lab_output *out);
/* Lab 4 (tools/labs/lab_causal.c): parallel, recurrent, chunk and decoding agree. */
int lab_causal(const lab_opts *opts, lab_output *out);
/* Lab 3 (tools/labs/cmd_approx.c): random-feature approximation of softmax. */
int lab_feature_maps(const lab_opts *opts, lab_output *out);

/* Writes dir/index.html, dir/<id>.json for each lab, dir/report.json (all
 * labs) and every figure's SVG file. Creates dir if needed. 0 on success. */
int report_write(const char *dir, const lab_output *labs, int n_labs, const char *command_line);

#endif
