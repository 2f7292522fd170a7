/* SVG line plots (see svg.h). Layout: title on top, plot area with a frame,
 * grid and ticks, axis titles, the legend in a column right of the plot so
 * it never hides data. */
#include "svg.h"
#include "strbuf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Colour-blind-friendly palette (Okabe-Ito, then two greys). */
static const char *PALETTE[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                "#56B4E9", "#000000", "#F0E442", "#777777", "#AA4499"};
#define N_PALETTE 10

/* XML-escaped text. */
static void sb_text(strbuf *b, const char *t) {
    for (; t && *t; t++) {
        switch (*t) {
        case '<': sb_addf(b, "&lt;"); break;
        case '>': sb_addf(b, "&gt;"); break;
        case '&': sb_addf(b, "&amp;"); break;
        case '"': sb_addf(b, "&quot;"); break;
        default: sb_addf(b, "%c", *t);
        }
    }
}

typedef struct axis {
    svg_scale scale;
    double lo, hi; /* data range in axis units (log10 for log) */
    double p0, p1; /* pixel range */
} axis;

static int usable(double v, svg_scale s) { return isfinite(v) && (s == SVG_LINEAR || v > 0); }
static double to_axis(double v, svg_scale s) { return s == SVG_LOG ? log10(v) : v; }
static double px(const axis *a, double v) {
    double t = (to_axis(v, a->scale) - a->lo) / (a->hi - a->lo);
    return a->p0 + t * (a->p1 - a->p0);
}

/* A "nice" step (1, 2 or 5 times a power of ten) giving about n ticks. */
static double nice_step(double span, int n) {
    double raw = span / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void fit_range(axis *a, double mn, double mx) {
    if (!(mn <= mx)) {
        mn = a->scale == SVG_LOG ? 0 : 0;
        mx = 1;
    }
    if (a->scale == SVG_LOG) {
        mn = floor(mn * 1e9) / 1e9;
        double lo = floor(mn), hi = ceil(mx);
        if (hi - lo < 1) hi = lo + 1;
        a->lo = lo;
        a->hi = hi;
    } else {
        if (mx == mn) {
            mn -= 1;
            mx += 1;
        }
        double st = nice_step(mx - mn, 6);
        a->lo = floor(mn / st) * st;
        a->hi = ceil(mx / st) * st;
    }
}

/* Tick label: plain numbers where short, else mantissa-free powers of ten. */
static void tick_label(char *buf, size_t n, double v) {
    if (v == 0) {
        snprintf(buf, n, "0");
        return;
    }
    double a = fabs(v);
    if (a >= 1e-3 && a < 1e5)
        snprintf(buf, n, "%g", v);
    else
        snprintf(buf, n, "%.3g", v);
}

static void draw_log_label(strbuf *b, double x, double y, int k, const char *anchor) {
    /* 10^k, with the exponent as a superscript; plain for 1, 10, 100, 1000,
     * 0.1, 0.01 which read better as numbers */
    if (k >= -2 && k <= 3) {
        char t[32];
        snprintf(t, sizeof t, "%g", pow(10, k));
        sb_addf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">%s</text>\n", x, y, anchor, t);
    } else {
        sb_addf(b,
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">10<tspan dy=\"-6\" "
                  "font-size=\"10\">%d</tspan></text>\n",
                  x, y, anchor, k);
    }
}

static void marker(strbuf *b, svg_marker m, double x, double y, const char *col) {
    switch (m) {
    case SVG_MARKER_CIRCLE:
        sb_addf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", x, y, col);
        break;
    case SVG_MARKER_SQUARE:
        sb_addf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" fill=\"%s\"/>\n",
                  x - 3.5, y - 3.5, col);
        break;
    case SVG_MARKER_TRIANGLE:
        sb_addf(b, "<path d=\"M%.1f,%.1f l4.5,8 h-9 z\" fill=\"%s\"/>\n", x, y - 5, col);
        break;
    case SVG_MARKER_DIAMOND:
        sb_addf(b, "<path d=\"M%.1f,%.1f l4.5,4.5 l-4.5,4.5 l-4.5,-4.5 z\" fill=\"%s\"/>\n", x,
                  y - 4.5, col);
        break;
    default: break;
    }
}

char *svg_render(const svg_plot *p) {
    const int W = p->width > 0 ? p->width : 760, H = p->height > 0 ? p->height : 480;
    /* legend column width from the longest label */
    size_t longest = 0;
    for (int i = 0; i < p->n_series; i++)
        if (p->series[i].label && strlen(p->series[i].label) > longest)
            longest = strlen(p->series[i].label);
    const double legend_w = longest ? 48 + 6.6 * (double)longest : 0;
    const double left = 78, right = 24 + legend_w, top = p->subtitle ? 62 : 46, bottom = 58;
    axis ax = {p->xscale, 0, 1, left, W - right}, ay = {p->yscale, 0, 1, H - bottom, top};
    double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
    for (int i = 0; i < p->n_series; i++)
        for (int k = 0; k < p->series[i].n; k++) {
            double x = p->series[i].x[k], y = p->series[i].y[k];
            if (!usable(x, ax.scale) || !usable(y, ay.scale)) continue;
            x = to_axis(x, ax.scale);
            y = to_axis(y, ay.scale);
            xmn = fmin(xmn, x);
            xmx = fmax(xmx, x);
            ymn = fmin(ymn, y);
            ymx = fmax(ymx, y);
        }
    if (ax.scale == SVG_LOG && xmx > xmn) { /* log x: keep the data edge-to-edge */
        ax.lo = xmn - 0.04 * (xmx - xmn);
        ax.hi = xmx + 0.04 * (xmx - xmn);
    } else {
        fit_range(&ax, xmn, xmx);
    }
    fit_range(&ay, ymn, ymx);

    strbuf b = {0};
    sb_addf(&b,
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
              "viewBox=\"0 0 %d %d\" font-family=\"Helvetica, Arial, sans-serif\" "
              "font-size=\"13\">\n",
              W, H, W, H);
    sb_addf(&b, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    if (p->title) {
        sb_addf(&b,
                  "<text x=\"%.1f\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" "
                  "font-weight=\"bold\">",
                  (ax.p0 + ax.p1) / 2);
        sb_text(&b, p->title);
        sb_addf(&b, "</text>\n");
    }
    if (p->subtitle) {
        sb_addf(&b,
                  "<text x=\"%.1f\" y=\"44\" text-anchor=\"middle\" font-size=\"12\" "
                  "fill=\"#444\">",
                  (ax.p0 + ax.p1) / 2);
        sb_text(&b, p->subtitle);
        sb_addf(&b, "</text>\n");
    }
    /* grid and ticks */
    sb_addf(&b, "<g stroke=\"#e4e4e4\" stroke-width=\"1\">\n");
    for (int pass = 0; pass < 2; pass++) {
        const axis *a = pass ? &ay : &ax;
        if (a->scale == SVG_LOG) {
            for (int k = (int)floor(a->lo); k <= (int)ceil(a->hi); k++)
                for (int j = 1; j <= 9; j++) {
                    double v = log10((double)j) + k;
                    if (v < a->lo - 1e-9 || v > a->hi + 1e-9) continue;
                    double q = a->p0 + (v - a->lo) / (a->hi - a->lo) * (a->p1 - a->p0);
                    const char *extra = j == 1 ? "" : " stroke-opacity=\"0.45\"";
                    if (pass)
                        sb_addf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"%s/>\n",
                                  ax.p0, q, ax.p1, q, extra);
                    else
                        sb_addf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"%s/>\n",
                                  q, ay.p0, q, ay.p1, extra);
                }
        } else {
            double st = nice_step(a->hi - a->lo, 6);
            for (double v = a->lo; v <= a->hi + st * 1e-6; v += st) {
                double q = a->p0 + (v - a->lo) / (a->hi - a->lo) * (a->p1 - a->p0);
                if (pass)
                    sb_addf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n",
                              ax.p0, q, ax.p1, q);
                else
                    sb_addf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", q,
                              ay.p0, q, ay.p1);
            }
        }
    }
    sb_addf(&b, "</g>\n");
    /* tick labels and marks */
    sb_addf(&b, "<g fill=\"#222\">\n");
    for (int pass = 0; pass < 2; pass++) {
        const axis *a = pass ? &ay : &ax;
        const char *anchor = pass ? "end" : "middle";
        if (a->scale == SVG_LOG) {
            int span = (int)ceil(a->hi) - (int)floor(a->lo);
            int every = span > 12 ? 2 : 1;
            for (int k = (int)ceil(a->lo - 1e-9); k <= (int)floor(a->hi + 1e-9); k++) {
                if (k % every) continue;
                double q = a->p0 + (k - a->lo) / (a->hi - a->lo) * (a->p1 - a->p0);
                if (pass) {
                    draw_log_label(&b, ax.p0 - 8, q + 4.5, k, anchor);
                    sb_addf(
                        &b,
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#222\"/>\n",
                        ax.p0 - 5, q, ax.p0, q);
                } else {
                    draw_log_label(&b, q, ay.p0 + 20, k, anchor);
                    sb_addf(
                        &b,
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#222\"/>\n",
                        q, ay.p0, q, ay.p0 + 5);
                }
            }
            /* over a short range also label 2 and 5 */
            if (a->hi - a->lo <= 2.5)
                for (int k = (int)floor(a->lo); k <= (int)ceil(a->hi); k++)
                    for (int j = 2; j <= 5; j += 3) {
                        double v = log10((double)j) + k;
                        if (v < a->lo || v > a->hi) continue;
                        double q = a->p0 + (v - a->lo) / (a->hi - a->lo) * (a->p1 - a->p0);
                        char t[32];
                        tick_label(t, sizeof t, pow(10, v));
                        if (pass)
                            sb_addf(&b,
                                      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                                      ax.p0 - 8, q + 4.5, t);
                        else
                            sb_addf(
                                &b,
                                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", q,
                                ay.p0 + 20, t);
                    }
        } else {
            double st = nice_step(a->hi - a->lo, 6);
            for (double v = a->lo; v <= a->hi + st * 1e-6; v += st) {
                double q = a->p0 + (v - a->lo) / (a->hi - a->lo) * (a->p1 - a->p0);
                char t[32];
                tick_label(t, sizeof t, fabs(v) < st * 1e-9 ? 0 : v);
                if (pass) {
                    sb_addf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                              ax.p0 - 8, q + 4.5, t);
                    sb_addf(
                        &b,
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#222\"/>\n",
                        ax.p0 - 5, q, ax.p0, q);
                } else {
                    sb_addf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
                              q, ay.p0 + 20, t);
                    sb_addf(
                        &b,
                        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#222\"/>\n",
                        q, ay.p0, q, ay.p0 + 5);
                }
            }
        }
    }
    sb_addf(&b, "</g>\n");
    sb_addf(&b,
              "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
              "stroke=\"#222\"/>\n",
              ax.p0, ay.p1, ax.p1 - ax.p0, ay.p0 - ay.p1);
    if (p->xlabel) {
        sb_addf(&b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"14\">",
                  (ax.p0 + ax.p1) / 2, H - 14);
        sb_text(&b, p->xlabel);
        sb_addf(&b, "</text>\n");
    }
    if (p->ylabel) {
        double cy = (ay.p0 + ay.p1) / 2;
        sb_addf(&b,
                  "<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"14\" "
                  "transform=\"rotate(-90 18 %.1f)\">",
                  cy, cy);
        sb_text(&b, p->ylabel);
        sb_addf(&b, "</text>\n");
    }
    /* series, clipped to the plot area */
    sb_addf(&b,
              "<defs><clipPath id=\"plotarea\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
              "height=\"%.1f\"/></clipPath></defs>\n<g clip-path=\"url(#plotarea)\">\n",
              ax.p0 - 5, ay.p1 - 5, ax.p1 - ax.p0 + 10, ay.p0 - ay.p1 + 10);
    int next = 0;
    int *colors = malloc((size_t)(p->n_series > 0 ? p->n_series : 1) * sizeof *colors);
    if (!colors) b.oom = 1;
    for (int i = 0; i < p->n_series && colors; i++) {
        const svg_series *s = &p->series[i];
        int ci = s->color >= 0 ? s->color % N_PALETTE : next++ % N_PALETTE;
        colors[i] = ci;
        const char *col = PALETTE[ci];
        int open = 0;
        for (int k = 0; k < s->n; k++) {
            if (!usable(s->x[k], ax.scale) || !usable(s->y[k], ay.scale)) {
                if (open) sb_addf(&b, "\"/>\n");
                open = 0;
                continue;
            }
            if (!open)
                sb_addf(
                    &b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s points=\"",
                    col, s->dashed ? "1.6" : "2", s->dashed ? " stroke-dasharray=\"6 4\"" : "");
            sb_addf(&b, "%.1f,%.1f ", px(&ax, s->x[k]), px(&ay, s->y[k]));
            open = 1;
        }
        if (open) sb_addf(&b, "\"/>\n");
        for (int k = 0; k < s->n; k++)
            if (usable(s->x[k], ax.scale) && usable(s->y[k], ay.scale))
                marker(&b, s->marker, px(&ax, s->x[k]), px(&ay, s->y[k]), col);
    }
    sb_addf(&b, "</g>\n");
    /* legend */
    if (legend_w > 0 && colors) {
        double lx = ax.p1 + 16, ly = ay.p1 + 6;
        for (int i = 0; i < p->n_series; i++) {
            const svg_series *s = &p->series[i];
            if (!s->label || !*s->label) continue;
            const char *col = PALETTE[colors[i]];
            sb_addf(&b,
                      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                      "stroke-width=\"2\"%s/>\n",
                      lx, ly, lx + 30, ly, col, s->dashed ? " stroke-dasharray=\"6 4\"" : "");
            marker(&b, s->marker, lx + 15, ly, col);
            sb_addf(&b, "<text x=\"%.1f\" y=\"%.1f\">", lx + 38, ly + 4.5);
            sb_text(&b, s->label);
            sb_addf(&b, "</text>\n");
            ly += 21;
        }
    }
    free(colors);
    sb_addf(&b, "</svg>\n");
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

int svg_write(const char *path, const svg_plot *p) {
    char *s = svg_render(p);
    if (!s) return -1;
    FILE *f = fopen(path, "w");
    if (!f) {
        free(s);
        return -1;
    }
    int bad = fputs(s, f) < 0;
    bad |= fclose(f) != 0;
    free(s);
    return bad ? -1 : 0;
}
