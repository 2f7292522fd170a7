/* Random-feature maps (Performer FAVOR+, random Fourier features, ReLU
 * features): forward and backward, float32 in and out, double inside.
 *
 * One task per (sequence, head). Per token x [d]:
 *   x' = c x   (c = d^-1/4 for the softmax-kernel maps, 1 otherwise)
 *   n  = |x'|^2 / 2,  u_i = w_i . x'
 * and every exp-type map is written as core_i * exp(a_t - stab) + eps, where
 * core_i = s exp(arg_i - a_t) <= s (or s cos / s sin) and a_t is the token's
 * largest exponent. That makes the stabilised and the plain map the same
 * arithmetic: stab = a_t (query), the max of a_t over the sequence (key), or
 * 0 (stabilize off).
 *
 * Keys with the stabiliser need the sequence maximum before any feature is
 * final: the first pass stores core (float, in [0, s]) in phi and a_t in
 * scratch, the second multiplies by exp(a_t - stab). Every other case is one
 * pass. Products w_i . x' are accumulated in double (float * float is exact
 * in double), so the features are accurate to a few float roundings. */
#include "feature_map.h"
#include "../../cuda/cuda_backend.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

/* A feature value s*exp(arg) overflows float32 once arg > ~88.7 (s <= 1);
 * without the stabiliser we refuse inputs whose bound exceeds this. */
#define RF_EXP_LIMIT 88.0

typedef struct rf_job {
    la_ctx *ctx;
    const la_rf_opts *opts;
    la_dims dims;
    la__rf_map map;
    int64_t H;
    const float *x;
    float *phi, *stab;  /* forward */
    const float *d_phi; /* backward */
    float *dx;
} rf_job;

static int is_exp_kind(la_random_feature k) {
    return k == LA_RF_FAVOR_POSITIVE || k == LA_RF_FAVOR_HYPERBOLIC || k == LA_RF_TRIG_SOFTMAX;
}

la_rf_opts la_rf_opts_default(void) {
    la_rf_opts o;
    o.kind = LA_RF_FAVOR_POSITIVE;
    o.role = LA_RF_QUERY;
    o.stabilize = 1;
    o.eps = 0.0f;
    return o;
}

int64_t la_rf_num_features(la_random_feature kind, int64_t m) {
    if (m < 1) return 0;
    switch (kind) {
    case LA_RF_FAVOR_POSITIVE:
    case LA_RF_RELU: return m;
    case LA_RF_FAVOR_HYPERBOLIC:
    case LA_RF_TRIG_GAUSSIAN:
    case LA_RF_TRIG_SOFTMAX: return m > INT64_MAX / 2 ? 0 : 2 * m;
    }
    return 0;
}

/* x' = c x, returns n = |x'|^2/2; u_i = w_i . x' for i < m. */
static double project(const la__rf_map *j, const float *x, double *xs, double *u) {
    double n = 0;
    for (int64_t a = 0; a < j->d; a++) {
        xs[a] = j->c * (double)x[a];
        n += xs[a] * xs[a];
    }
    for (int64_t i = 0; i < j->m; i++) {
        const float *w = j->W + i * j->d;
        double acc = 0;
        for (int64_t a = 0; a < j->d; a++) acc += (double)w[a] * xs[a];
        u[i] = acc;
    }
    return 0.5 * n;
}

/* The token's largest exponent a_t (exp kinds). */
static double token_max(la_random_feature kind, const double *u, int64_t m, double n) {
    double mx = -HUGE_VAL;
    if (kind == LA_RF_FAVOR_POSITIVE) {
        for (int64_t i = 0; i < m; i++) mx = u[i] > mx ? u[i] : mx;
        return mx - n;
    }
    if (kind == LA_RF_FAVOR_HYPERBOLIC) {
        for (int64_t i = 0; i < m; i++) mx = fabs(u[i]) > mx ? fabs(u[i]) : mx;
        return mx - n;
    }
    return n; /* trig softmax: the magnitude factor exp(n) */
}

/* phi row [M] of one token, in double, rounded once: e.g. positive
 * s exp(u_i - n - stab) + eps. Non-exp kinds ignore stab. */
static void write_features(const la__rf_map *j, float *phi, const double *u, double n, double stab,
                           double eps) {
    const int64_t m = j->m;
    const double s = j->s;
    switch (j->kind) {
    case LA_RF_FAVOR_POSITIVE:
        for (int64_t i = 0; i < m; i++) phi[i] = (float)(s * exp(u[i] - n - stab) + eps);
        break;
    case LA_RF_FAVOR_HYPERBOLIC:
        for (int64_t i = 0; i < m; i++) {
            phi[i] = (float)(s * exp(u[i] - n - stab) + eps);
            phi[m + i] = (float)(s * exp(-u[i] - n - stab) + eps);
        }
        break;
    case LA_RF_TRIG_SOFTMAX: {
        double f = s * exp(n - stab);
        for (int64_t i = 0; i < m; i++) {
            phi[i] = (float)(f * cos(u[i]));
            phi[m + i] = (float)(f * sin(u[i]));
        }
        break;
    }
    case LA_RF_TRIG_GAUSSIAN:
        for (int64_t i = 0; i < m; i++) {
            phi[i] = (float)(s * cos(u[i]));
            phi[m + i] = (float)(s * sin(u[i]));
        }
        break;
    case LA_RF_RELU:
        for (int64_t i = 0; i < m; i++) phi[i] = (float)(s * (u[i] > 0 ? u[i] : 0.0) + eps);
        break;
    }
}

/* Scratch layout per thread (doubles): xs [d], u [m], acc [d], amax [Tmax]. */
static double *task_scratch(const rf_job *j, int tid, double **xs, double **u, double **acc) {
    double *base = la__scratch(j->ctx, tid);
    *xs = base;
    *u = base + j->map.d;
    *acc = base + j->map.d + j->map.m;
    return base + 2 * j->map.d + j->map.m;
}

static void forward_task(void *arg, int64_t task, int tid) {
    const rf_job *j = arg;
    const la__rf_map *mp = &j->map;
    const int64_t H = j->H, d = mp->d, M = mp->M;
    const int64_t seq = task / H, h = task % H;
    const la_random_feature kind = mp->kind;
    const int exp_kind = mp->exp_kind;
    const int two_pass = mp->stabilized && j->opts->role == LA_RF_KEY;
    int64_t start, len;
    la__seq_bounds(&j->dims, seq, &start, &len);
    double *xs, *u, *acc;
    double *amax = task_scratch(j, tid, &xs, &u, &acc);
    double seq_max = -HUGE_VAL;
    for (int64_t t = 0; t < len; t++) {
        const int64_t row = (start + t) * H + h;
        const double n = project(mp, j->x + row * d, xs, u);
        float *phi = j->phi + row * M;
        double a = exp_kind ? token_max(kind, u, mp->m, n) : 0.0;
        if (two_pass) {
            /* core only (eps and the factor come in the second pass) */
            write_features(mp, phi, u, n, a, 0.0);
            amax[t] = a;
            seq_max = a > seq_max ? a : seq_max;
            continue;
        }
        double stab = 0;
        if (mp->stabilized) stab = a; /* query: per token */
        write_features(mp, phi, u, n, stab, mp->eps);
        if (j->stab && j->opts->role == LA_RF_QUERY) j->stab[row] = (float)stab;
    }
    if (two_pass) {
        for (int64_t t = 0; t < len; t++) {
            float *phi = j->phi + ((start + t) * H + h) * M;
            const double f = exp(amax[t] - seq_max);
            for (int64_t i = 0; i < M; i++) phi[i] = (float)((double)phi[i] * f + mp->eps);
        }
    }
    if (j->stab && j->opts->role == LA_RF_KEY)
        j->stab[seq * H + h] = two_pass && len > 0 ? (float)seq_max : 0.0f; /* 0: empty */
}

/* dx of one projected token (xs, u, n) from g = d_phi [M], stab constant;
 * acc [d] scratch. */
static void backward_row(const la__rf_map *mp, float *dx, const float *g, const double *xs,
                         const double *u, double n, double stab, double *acc) {
    const int64_t d = mp->d, m = mp->m;
    const la_random_feature kind = mp->kind;
    const double s = mp->s, c = mp->c;
    for (int64_t a = 0; a < d; a++) acc[a] = 0;
    /* acc = sum_i coef_i w_i; then dx = c * (acc + xcoef * x') */
    double xcoef = 0;
    for (int64_t i = 0; i < m; i++) {
        double coef;
        switch (kind) {
        case LA_RF_FAVOR_POSITIVE: {
            double ge = (double)g[i] * s * exp(u[i] - n - stab);
            coef = ge;
            xcoef -= ge;
            break;
        }
        case LA_RF_FAVOR_HYPERBOLIC: {
            double gp = (double)g[i] * s * exp(u[i] - n - stab);
            double gm = (double)g[m + i] * s * exp(-u[i] - n - stab);
            coef = gp - gm;
            xcoef -= gp + gm;
            break;
        }
        case LA_RF_TRIG_SOFTMAX: {
            double f = s * exp(n - stab);
            double pc = f * cos(u[i]), ps = f * sin(u[i]);
            coef = -(double)g[i] * ps + (double)g[m + i] * pc;
            xcoef += (double)g[i] * pc + (double)g[m + i] * ps;
            break;
        }
        case LA_RF_TRIG_GAUSSIAN:
            coef = s * (-(double)g[i] * sin(u[i]) + (double)g[m + i] * cos(u[i]));
            break;
        default: /* LA_RF_RELU */ coef = u[i] > 0 ? s * (double)g[i] : 0.0; break;
        }
        if (coef != 0) {
            const float *w = mp->W + i * d;
            for (int64_t a = 0; a < d; a++) acc[a] += coef * (double)w[a];
        }
    }
    for (int64_t a = 0; a < d; a++) dx[a] = (float)(c * (acc[a] + xcoef * xs[a]));
}

static void backward_task(void *arg, int64_t task, int tid) {
    const rf_job *j = arg;
    const la__rf_map *mp = &j->map;
    const int64_t H = j->H, d = mp->d, m = mp->m, M = mp->M;
    const int64_t seq = task / H, h = task % H;
    const la_random_feature kind = mp->kind;
    int64_t start, len;
    la__seq_bounds(&j->dims, seq, &start, &len);
    double *xs, *u, *acc;
    (void)task_scratch(j, tid, &xs, &u, &acc);
    double seq_max = 0;
    if (mp->stabilized && j->opts->role == LA_RF_KEY) {
        seq_max = -HUGE_VAL;
        for (int64_t t = 0; t < len; t++) {
            const int64_t row = (start + t) * H + h;
            const double n = project(mp, j->x + row * d, xs, u);
            const double a = token_max(kind, u, m, n);
            seq_max = a > seq_max ? a : seq_max;
        }
    }
    for (int64_t t = 0; t < len; t++) {
        const int64_t row = (start + t) * H + h;
        const double n = project(mp, j->x + row * d, xs, u);
        double stab = 0;
        if (mp->stabilized) stab = j->opts->role == LA_RF_KEY ? seq_max : token_max(kind, u, m, n);
        backward_row(mp, j->dx + row * d, j->d_phi + row * M, xs, u, n, stab, acc);
    }
}

/* Validation of the options, the shapes and the inputs x and W; fills the
 * map. n_x, n_phi: element counts of x and phi. */
static la_status map_setup(const char *op, const la_rf_opts *opts, const la_dims *dims,
                           const float *x, const float *W, int64_t m, la__rf_map *j,
                           la_dims *dd_out, size_t *n_x, size_t *n_phi) {
    la_status st;
    if ((st = la__check_ptr(op, "opts", opts))) return st;
    if ((st = la__check_ptr(op, "dims", dims))) return st;
    if (opts->kind < LA_RF_FAVOR_POSITIVE || opts->kind > LA_RF_RELU)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: opts.kind = %d (not a la_random_feature)",
                         op, (int)opts->kind);
    if (opts->role != LA_RF_QUERY && opts->role != LA_RF_KEY)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts.role = %d (must be LA_RF_QUERY or LA_RF_KEY)", op,
                         (int)opts->role);
    if (opts->stabilize != 0 && opts->stabilize != 1)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: opts.stabilize = %d (must be 0 or 1)", op,
                         opts->stabilize);
    if (!isfinite(opts->eps) || opts->eps < 0)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: opts.eps = %g (must be finite and >= 0)", op,
                         (double)opts->eps);
    /* V and HV do not enter a feature map; validate the rest with V = 1. */
    la_dims dd = *dims;
    dd.V = 1;
    dd.HV = 0;
    if ((st = la__check_dims(op, &dd, 0))) return st;
    if (m < 1) return la__error(LA_ERR_INVALID_SIZE, "%s: m = %" PRId64 " (must be >= 1)", op, m);
    const int64_t M = la_rf_num_features(opts->kind, m);
    size_t nw;
    if (M < 1) return la__error(LA_ERR_INVALID_SIZE, "%s: m = %" PRId64 " is too large", op, m);
    if ((st = la__numel(op, "W", &nw, m, dd.K, 1, 1))) return st;
    if ((st = la__numel(op, "x", n_x, dd.B, dd.T, dd.H, dd.K))) return st;
    if ((st = la__numel(op, "phi", n_phi, dd.B, dd.T, dd.H, M))) return st;
    if ((st = la__check_ptr(op, "x", x))) return st;
    if ((st = la__check_ptr(op, "W", W))) return st;
    if ((st = la__check_finite(op, "x", x, *n_x))) return st;
    if ((st = la__check_finite(op, "W", W, nw))) return st;

    memset(j, 0, sizeof *j);
    j->kind = opts->kind;
    j->exp_kind = is_exp_kind(opts->kind);
    j->stabilized = j->exp_kind && opts->stabilize;
    j->d = dd.K;
    j->m = m;
    j->M = M;
    const int softmax_kind = opts->kind == LA_RF_FAVOR_POSITIVE ||
                             opts->kind == LA_RF_FAVOR_HYPERBOLIC ||
                             opts->kind == LA_RF_TRIG_SOFTMAX;
    j->c = softmax_kind ? 1.0 / sqrt(sqrt((double)dd.K)) : 1.0;
    j->s = 1.0 / sqrt((double)(opts->kind == LA_RF_FAVOR_HYPERBOLIC ? 2 * m : m));
    j->eps = (opts->kind == LA_RF_TRIG_GAUSSIAN || opts->kind == LA_RF_TRIG_SOFTMAX)
                 ? 0.0
                 : (double)opts->eps;
    j->W = W;
    *dd_out = dd;

    /* Without the stabiliser an exp-type feature can overflow float32:
     * refuse the inputs where the bound says it might (see the header). */
    if (!opts->stabilize && is_exp_kind(opts->kind)) {
        double wmax = 0;
        for (int64_t i = 0; i < m; i++) {
            double r = 0;
            for (int64_t a = 0; a < j->d; a++) r += (double)W[i * j->d + a] * W[i * j->d + a];
            wmax = r > wmax ? r : wmax;
        }
        wmax = sqrt(wmax);
        const size_t rows = *n_x / (size_t)j->d;
        for (size_t r = 0; r < rows; r++) {
            double n2 = 0;
            for (int64_t a = 0; a < j->d; a++) {
                double v = j->c * (double)x[r * (size_t)j->d + (size_t)a];
                n2 += v * v;
            }
            const double xn = sqrt(n2);
            const double bound = opts->kind == LA_RF_TRIG_SOFTMAX ? 0.5 * n2 : wmax * xn - 0.5 * n2;
            if (bound > RF_EXP_LIMIT)
                return la__error(LA_ERR_INVALID_ARGUMENT,
                                 "%s: token %zu of x has exponent bound %.4g > %.0f, so the "
                                 "features could overflow float32 with opts.stabilize = 0 "
                                 "(set stabilize = 1)",
                                 op, r, bound, RF_EXP_LIMIT);
        }
    }
    return LA_OK;
}

static la_status rf_setup(const char *op, la_ctx *ctx, const la_rf_opts *opts, const la_dims *dims,
                          const float *x, const float *W, int64_t m, rf_job *j, size_t *n_x,
                          size_t *n_phi) {
    la_status st;
    if ((st = la__check_ptr(op, "ctx", ctx))) return st;
    memset(j, 0, sizeof *j);
    if ((st = map_setup(op, opts, dims, x, W, m, &j->map, &j->dims, n_x, n_phi))) return st;
    j->ctx = ctx;
    j->opts = opts;
    j->H = j->dims.H;
    j->x = x;
    return LA_OK;
}

la_status la__rf_map_check(const char *op, const la_rf_opts *opts, const la_dims *dims,
                           const float *x, const float *W, int64_t m, la__rf_map *map) {
    la_dims dd;
    size_t n_x, n_phi;
    return map_setup(op, opts, dims, x, W, m, map, &dd, &n_x, &n_phi);
}

double la__rf_row_project(const la__rf_map *map, const float *x, double *xs, double *u, double *a) {
    const double n = project(map, x, xs, u);
    *a = map->exp_kind ? token_max(map->kind, u, map->m, n) : 0.0;
    return n;
}

void la__rf_row_features(const la__rf_map *map, float *phi, const double *u, double n, double stab,
                         double eps_factor) {
    write_features(map, phi, u, n, stab, map->eps * eps_factor);
}

void la__rf_row_backward(const la__rf_map *map, float *dx, const float *d_phi, const float *x,
                         double stab, double *scratch) {
    double *xs = scratch, *u = scratch + map->d, *acc = scratch + map->d + map->m;
    const double n = project(map, x, xs, u);
    backward_row(map, dx, d_phi, xs, u, n, stab, acc);
}

static la_status reserve(const char *op, la_ctx *ctx, const la_dims *dims, int64_t d, int64_t m,
                         int with_seq) {
    const uint64_t tmax = with_seq ? (uint64_t)la__max_seq_len(dims) : 0;
    const uint64_t n = 2 * (uint64_t)d + (uint64_t)m + tmax;
    if (n > SIZE_MAX / sizeof(double))
        return la__error(LA_ERR_INVALID_SIZE, "%s: scratch size overflows", op);
    la_status st = la__scratch_reserve(ctx, (size_t)n * sizeof(double));
    if (st) return la__error(st, "%s: out of memory for %" PRIu64 " doubles of scratch", op, n);
    return LA_OK;
}

la_status la__rf_backward_reserve(la_ctx *ctx, const char *op, int64_t d, int64_t m) {
    return reserve(op, ctx, NULL, d, m, 0);
}

la_status la_rf_forward(la_ctx *ctx, const la_rf_opts *opts, const la_dims *dims, float *phi,
                        float *stab, const float *x, const float *W, int64_t m) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported("la_rf_forward");
    static const char *op = "la_rf_forward";
    rf_job j;
    size_t n_x, n_phi;
    la_status st = rf_setup(op, ctx, opts, dims, x, W, m, &j, &n_x, &n_phi);
    if (st) return st;
    if ((st = la__check_ptr(op, "phi", phi))) return st;
    if ((st = reserve(op, ctx, &j.dims, j.map.d, j.map.m, 1))) return st;
    j.phi = phi;
    j.stab = stab;
    la__parallel_for(ctx, la__num_seqs(&j.dims) * j.H, forward_task, &j);
    return LA_OK;
}

la_status la_rf_backward(la_ctx *ctx, const la_rf_opts *opts, const la_dims *dims, float *dx,
                         const float *d_phi, const float *x, const float *W, int64_t m) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported("la_rf_backward");
    static const char *op = "la_rf_backward";
    rf_job j;
    size_t n_x, n_phi;
    la_status st = rf_setup(op, ctx, opts, dims, x, W, m, &j, &n_x, &n_phi);
    if (st) return st;
    if ((st = la__check_ptr(op, "dx", dx))) return st;
    if ((st = la__check_ptr(op, "d_phi", d_phi))) return st;
    if ((st = la__check_finite(op, "d_phi", d_phi, n_phi))) return st;
    if ((st = reserve(op, ctx, NULL, j.map.d, j.map.m, 0))) return st;
    j.d_phi = d_phi;
    j.dx = dx;
    la__parallel_for(ctx, la__num_seqs(&j.dims) * j.H, backward_task, &j);
    return LA_OK;
}
