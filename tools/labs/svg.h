/* A small SVG line-plot writer for the labs and benchmarks: linear or log
 * axes with readable tick labels, axis titles, a plot title, a legend, solid
 * or dashed series with optional markers. No dependencies; output is plain
 * SVG 1.1 that browsers and rsvg render alike. */
#ifndef LINATTN_SVG_H
#define LINATTN_SVG_H

#include <stddef.h>

typedef enum svg_scale { SVG_LINEAR = 0, SVG_LOG = 1 } svg_scale;

typedef enum svg_marker {
    SVG_MARKER_NONE = 0,
    SVG_MARKER_CIRCLE = 1,
    SVG_MARKER_SQUARE = 2,
    SVG_MARKER_TRIANGLE = 3,
    SVG_MARKER_DIAMOND = 4
} svg_marker;

typedef struct svg_series {
    const char *label;   /* legend text; NULL or "" = not in the legend */
    const double *x, *y; /* n points; non-finite (or <= 0 on a log axis) are skipped,
                            breaking the line there */
    int n;
    int dashed; /* 1: dashed line (e.g. theory) */
    svg_marker marker;
    int color; /* palette index (0..9), -1: next in turn */
} svg_series;

typedef struct svg_plot {
    const char *title, *xlabel, *ylabel, *subtitle; /* subtitle optional */
    svg_scale xscale, yscale;
    int width, height; /* 0: 760 x 480 */
    const svg_series *series;
    int n_series;
} svg_plot;

/* The plot as a malloc'd NUL-terminated SVG document (NULL on OOM). */
char *svg_render(const svg_plot *p);
/* Writes svg_render(p) to path; 0 on success, -1 on error. */
int svg_write(const char *path, const svg_plot *p);

#endif
