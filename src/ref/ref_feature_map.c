/* float64 reference of the random-feature maps, written as the formulas of
 * MATH.md section 3 read, one feature at a time. */
#include "ref_feature_map.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double PI = 3.14159265358979323846;

static int is_softmax_kind(la_random_feature k) {
    return k == LA_RF_FAVOR_POSITIVE || k == LA_RF_FAVOR_HYPERBOLIC || k == LA_RF_TRIG_SOFTMAX;
}

static double dot(const double *a, const double *b, int64_t d) {
    double s = 0;
    for (int64_t i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}

/* The exponent of feature i of token x (exp kinds), before the stabiliser:
 * positive: w_i.x' - |x'|^2/2; hyperbolic: +-w_i.x' - |x'|^2/2 (i >= m is
 * the minus half); trig softmax: |x'|^2/2 (the magnitude factor). */
static double exponent(la_random_feature kind, int64_t i, int64_t d, int64_t m, const double *x,
                       const double *W) {
    const double c = pow((double)d, -0.25);
    double n = 0, u = 0;
    for (int64_t a = 0; a < d; a++) n += (c * x[a]) * (c * x[a]);
    n *= 0.5;
    if (kind == LA_RF_TRIG_SOFTMAX) return n;
    const double *w = W + (i % m) * d;
    for (int64_t a = 0; a < d; a++) u += w[a] * (c * x[a]);
    return (i < m ? u : -u) - n;
}

void ref_rf_forward(const la_rf_opts *o, int64_t T, int64_t d, int64_t m, const double *x,
                    const double *W, double *phi, double *stab, int stab_given) {
    const la_random_feature kind = o->kind;
    const int64_t M = la_rf_num_features(kind, m);
    const int exp_kind = is_softmax_kind(kind);
    const int stabilize = exp_kind && o->stabilize;
    const double c = is_softmax_kind(kind) ? pow((double)d, -0.25) : 1.0;
    const double s = 1.0 / sqrt((double)(kind == LA_RF_FAVOR_HYPERBOLIC ? 2 * m : m));
    const double eps = (kind == LA_RF_TRIG_GAUSSIAN || kind == LA_RF_TRIG_SOFTMAX) ? 0 : o->eps;
    /* The stabiliser: the largest exponent, per token (query) or over the
     * whole sequence (key). */
    double key_max = -INFINITY;
    if (stabilize && !stab_given && o->role == LA_RF_KEY) {
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < M; i++) {
                double e = exponent(kind, i, d, m, x + t * d, W);
                if (e > key_max) key_max = e;
            }
        if (stab) stab[0] = key_max;
    }
    if (!stab_given && o->role == LA_RF_KEY && !stabilize && stab) stab[0] = 0;
    for (int64_t t = 0; t < T; t++) {
        const double *xt = x + t * d;
        double st = 0;
        if (stabilize) {
            if (o->role == LA_RF_KEY) {
                st = stab_given ? stab[0] : key_max;
            } else if (stab_given) {
                st = stab[t];
            } else {
                st = -INFINITY;
                for (int64_t i = 0; i < M; i++) {
                    double e = exponent(kind, i, d, m, xt, W);
                    if (e > st) st = e;
                }
            }
        }
        if (!stab_given && o->role == LA_RF_QUERY && stab) stab[t] = st;
        for (int64_t i = 0; i < M; i++) {
            const double *w = W + (i % m) * d;
            double u = 0;
            for (int64_t a = 0; a < d; a++) u += w[a] * c * xt[a];
            double f;
            switch (kind) {
            case LA_RF_FAVOR_POSITIVE:
            case LA_RF_FAVOR_HYPERBOLIC:
                f = s * exp(exponent(kind, i, d, m, xt, W) - st) + eps;
                break;
            case LA_RF_TRIG_SOFTMAX:
                f = s * exp(exponent(kind, i, d, m, xt, W) - st) * (i < m ? cos(u) : sin(u));
                break;
            case LA_RF_TRIG_GAUSSIAN: f = s * (i < m ? cos(u) : sin(u)); break;
            default: f = s * (u > 0 ? u : 0) + eps; break;
            }
            phi[t * M + i] = f;
        }
    }
}

void ref_rf_backward(const la_rf_opts *o, int64_t T, int64_t d, int64_t m, const double *x,
                     const double *W, const double *stab, const double *d_phi, double *dx) {
    const la_random_feature kind = o->kind;
    const int64_t M = la_rf_num_features(kind, m);
    const int stabilize = is_softmax_kind(kind) && o->stabilize;
    const double c = is_softmax_kind(kind) ? pow((double)d, -0.25) : 1.0;
    const double s = 1.0 / sqrt((double)(kind == LA_RF_FAVOR_HYPERBOLIC ? 2 * m : m));
    for (int64_t t = 0; t < T; t++) {
        const double *xt = x + t * d;
        double st = 0;
        if (stabilize) st = o->role == LA_RF_KEY ? stab[0] : stab[t];
        for (int64_t a = 0; a < d; a++) dx[t * d + a] = 0;
        for (int64_t i = 0; i < M; i++) {
            const double *w = W + (i % m) * d;
            const double g = d_phi[t * M + i];
            double u = 0;
            for (int64_t a = 0; a < d; a++) u += w[a] * c * xt[a];
            /* d phi_i / d x_a, feature by feature */
            for (int64_t a = 0; a < d; a++) {
                const double xa = c * xt[a]; /* x'_a */
                double deriv;
                switch (kind) {
                case LA_RF_FAVOR_POSITIVE:
                case LA_RF_FAVOR_HYPERBOLIC: {
                    /* d/dx_a [s exp(+-w.x' - |x'|^2/2 - st)] = phi_core (+-w_a - x'_a) c */
                    double core = s * exp(exponent(kind, i, d, m, xt, W) - st);
                    deriv = core * ((i < m ? w[a] : -w[a]) - xa) * c;
                    break;
                }
                case LA_RF_TRIG_SOFTMAX: {
                    /* s exp(|x'|^2/2 - st) cos|sin(u): product rule */
                    double f = s * exp(exponent(kind, i, d, m, xt, W) - st);
                    double trig = i < m ? cos(u) : sin(u);
                    double dtrig = i < m ? -sin(u) : cos(u);
                    deriv = f * xa * c * trig + f * dtrig * w[a] * c;
                    break;
                }
                case LA_RF_TRIG_GAUSSIAN: deriv = s * (i < m ? -sin(u) : cos(u)) * w[a]; break;
                default: deriv = u > 0 ? s * w[a] : 0; break;
                }
                dx[t * d + a] += g * deriv;
            }
        }
    }
}

double ref_softmax_kernel(const double *x, const double *y, int64_t d) {
    return exp(dot(x, y, d) / sqrt((double)d));
}

double ref_gaussian_kernel(const double *x, const double *y, int64_t d) {
    double s = 0;
    for (int64_t i = 0; i < d; i++) s += (x[i] - y[i]) * (x[i] - y[i]);
    return exp(-0.5 * s);
}

double ref_arccos_kernel(const double *x, const double *y, int64_t d) {
    double nx = sqrt(dot(x, x, d)), ny = sqrt(dot(y, y, d));
    if (nx == 0 || ny == 0) return 0;
    double cs = dot(x, y, d) / (nx * ny);
    cs = cs > 1 ? 1 : cs < -1 ? -1 : cs;
    double th = acos(cs);
    return nx * ny * (sin(th) + (PI - th) * cos(th)) / (2 * PI);
}

double ref_rf_target_kernel(la_random_feature kind, const double *x, const double *y, int64_t d) {
    switch (kind) {
    case LA_RF_TRIG_GAUSSIAN: return ref_gaussian_kernel(x, y, d);
    case LA_RF_RELU: return ref_arccos_kernel(x, y, d);
    default: return ref_softmax_kernel(x, y, d);
    }
}

double ref_rf_mse_theory(la_random_feature kind, const double *x, const double *y, int64_t d,
                         int64_t m) {
    const double c = pow((double)d, -0.25);
    double xx = 0, yy = 0, xy = 0, dd = 0;
    for (int64_t i = 0; i < d; i++) {
        double a = (kind == LA_RF_TRIG_GAUSSIAN ? 1 : c) * x[i];
        double b = (kind == LA_RF_TRIG_GAUSSIAN ? 1 : c) * y[i];
        xx += a * a;
        yy += b * b;
        xy += a * b;
        dd += (a - b) * (a - b);
    }
    const double zz = xx + yy + 2 * xy; /* |x'+y'|^2 */
    const double sm = exp(xy);
    switch (kind) {
    case LA_RF_FAVOR_POSITIVE: return exp(zz) * sm * sm * (1 - exp(-zz)) / (double)m;
    case LA_RF_FAVOR_HYPERBOLIC:
        /* Performer: half of the positive MSE times (1 - exp(-|x'+y'|^2)) */
        return 0.5 * (1 - exp(-zz)) * exp(zz) * sm * sm * (1 - exp(-zz)) / (double)m;
    case LA_RF_TRIG_SOFTMAX:
        return exp(zz) / (sm * sm) * (1 - exp(-dd)) * (1 - exp(-dd)) / (2.0 * (double)m);
    case LA_RF_TRIG_GAUSSIAN: return (1 - exp(-dd)) * (1 - exp(-dd)) / (2.0 * (double)m);
    default: return NAN;
    }
}

void ref_kernel_attn(int64_t T, int64_t M, int64_t V, const double *pq, const double *pk,
                     const double *v, int causal, double eps, double *o) {
    for (int64_t t = 0; t < T; t++) {
        double den = 0;
        for (int64_t b = 0; b < V; b++) o[t * V + b] = 0;
        const int64_t J = causal ? t + 1 : T;
        for (int64_t j = 0; j < J; j++) {
            double a = dot(pq + t * M, pk + j * M, M);
            den += a;
            for (int64_t b = 0; b < V; b++) o[t * V + b] += a * v[j * V + b];
        }
        for (int64_t b = 0; b < V; b++) o[t * V + b] /= den + eps;
    }
}

/* o_t = num_t / den_t with a_tj = pq_t . pk_j, num_t = sum_j a_tj v_j,
 * den_t = sum_j a_tj + eps: d a_tj = (d_o_t . v_j) / den_t - (d_o_t . o_t) / den_t. */
void ref_kernel_attn_backward(int64_t T, int64_t M, int64_t V, const double *pq,
                              const double *pk, const double *v, int causal, double eps,
                              const double *d_o, double *dpq, double *dpk, double *dv) {
    for (int64_t i = 0; i < T * M; i++) dpq[i] = dpk[i] = 0;
    for (int64_t i = 0; i < T * V; i++) dv[i] = 0;
    for (int64_t t = 0; t < T; t++) {
        const int64_t J = causal ? t + 1 : T;
        double den = eps, go = 0;
        for (int64_t j = 0; j < J; j++) den += dot(pq + t * M, pk + j * M, M);
        for (int64_t j = 0; j < J; j++) {
            const double a = dot(pq + t * M, pk + j * M, M);
            go += a * dot(d_o + t * V, v + j * V, V); /* d_o . num */
        }
        go /= den; /* d_o . o */
        for (int64_t j = 0; j < J; j++) {
            const double a = dot(pq + t * M, pk + j * M, M);
            const double da = (dot(d_o + t * V, v + j * V, V) - go) / den;
            for (int64_t b = 0; b < V; b++) dv[j * V + b] += a * d_o[t * V + b] / den;
            for (int64_t i = 0; i < M; i++) {
                dpq[t * M + i] += da * pk[j * M + i];
                dpk[j * M + i] += da * pq[t * M + i];
            }
        }
    }
}

void ref_performer_causal(const la_rf_opts *rf, double eps, int64_t T, int64_t d, int64_t V,
                          int64_t m, const double *q, const double *k, const double *v,
                          const double *W, const double *S0, const double *z0, double mu0,
                          double *stab_q, double *mu, int given, double *o, double *S_T,
                          double *z_T, double *mu_T, double *cond) {
    const int64_t M = la_rf_num_features(rf->kind, m);
    const int stabilize = is_softmax_kind(rf->kind) && rf->stabilize;
    const double rf_eps =
        (rf->kind == LA_RF_TRIG_GAUSSIAN || rf->kind == LA_RF_TRIG_SOFTMAX) ? 0 : rf->eps;
    double *core = malloc((size_t)(T * M + T) * sizeof *core), *a = core + T * M;
    double *pq = malloc((size_t)(T * M) * sizeof *pq), *kt = malloc((size_t)M * sizeof *kt);
    if (!core || !pq || !kt) abort();
    /* key cores relative to their own largest exponent a_j: s exp(e - a_j) */
    la_rf_opts ok = *rf, oq = *rf;
    ok.role = LA_RF_QUERY;
    ok.eps = 0;
    oq.role = LA_RF_QUERY;
    ref_rf_forward(&ok, T, d, m, k, W, core, a, 0);
    ref_rf_forward(&oq, T, d, m, q, W, pq, stab_q, given);
    if (!stabilize) mu0 = 0;
    if (!given) {
        double run = mu0;
        for (int64_t t = 0; t < T; t++) {
            const double at = (double)(float)a[t];
            if (stabilize && at > run) run = at;
            mu[t] = stabilize ? run : 0.0;
        }
    }
    for (int64_t t = 0; t <= T; t++) {
        /* t == T: the final state, relative to mu_{T-1} (or mu0 if T = 0) */
        const double mt = t < T ? mu[t] : T ? mu[T - 1] : mu0;
        const int64_t J = t < T ? t + 1 : T;
        const double f0 = mu0 == -INFINITY ? 0.0 : exp(mu0 - mt);
        double num_den[2] = {0, 0}; /* sum |terms|, den - eps */
        double *ot = t < T ? o + t * V : NULL;
        if (ot) {
            for (int64_t b = 0; b < V; b++) {
                double acc = 0;
                if (S0)
                    for (int64_t i = 0; i < M; i++) acc += pq[t * M + i] * S0[i * V + b] * f0;
                ot[b] = acc;
            }
            if (z0)
                for (int64_t i = 0; i < M; i++) {
                    num_den[1] += pq[t * M + i] * z0[i] * f0;
                    num_den[0] += fabs(pq[t * M + i] * z0[i] * f0);
                }
        } else {
            for (int64_t i = 0; i < M; i++) {
                if (S_T)
                    for (int64_t b = 0; b < V; b++) S_T[i * V + b] = S0 ? S0[i * V + b] * f0 : 0;
                if (z_T) z_T[i] = z0 ? z0[i] * f0 : 0;
            }
        }
        for (int64_t j = 0; j < J; j++) {
            const double fe = exp(a[j] - mt), fp = exp(mu[j] - mt);
            for (int64_t i = 0; i < M; i++) kt[i] = core[j * M + i] * fe + rf_eps * fp;
            if (ot) {
                double s = 0;
                for (int64_t i = 0; i < M; i++) s += pq[t * M + i] * kt[i];
                num_den[1] += s;
                num_den[0] += fabs(s);
                for (int64_t b = 0; b < V; b++) ot[b] += s * v[j * V + b];
            } else {
                for (int64_t i = 0; i < M; i++) {
                    if (S_T)
                        for (int64_t b = 0; b < V; b++) S_T[i * V + b] += kt[i] * v[j * V + b];
                    if (z_T) z_T[i] += kt[i];
                }
            }
        }
        if (ot) {
            for (int64_t b = 0; b < V; b++) ot[b] /= num_den[1] + eps;
            const double c = (num_den[0] + eps) / fabs(num_den[1] + eps);
            if (cond && (t == 0 || c > *cond)) *cond = c;
        }
    }
    if (mu_T) *mu_T = T ? mu[T - 1] : mu0;
    free(core);
    free(pq);
    free(kt);
}

void ref_performer_causal_backward(const la_rf_opts *rf, double eps, int64_t T, int64_t d,
                                   int64_t V, int64_t m, const double *q, const double *k,
                                   const double *v, const double *W, const double *S0,
                                   const double *z0, double mu0, const double *stab_q,
                                   const double *mu, const double *d_o, const double *dS_T,
                                   const double *dz_T, double *dq, double *dk, double *dv,
                                   double *dS0, double *dz0) {
    const int64_t M = la_rf_num_features(rf->kind, m);
    const int stabilize = is_softmax_kind(rf->kind) && rf->stabilize;
    const double rf_eps =
        (rf->kind == LA_RF_TRIG_GAUSSIAN || rf->kind == LA_RF_TRIG_SOFTMAX) ? 0 : rf->eps;
    const size_t TM = (size_t)(T * M);
    double *buf = malloc((4 * TM + 2 * (size_t)T + (size_t)(T * V) + 2 * (size_t)M) * sizeof *buf);
    if (!buf) abort();
    double *core = buf, *pq = buf + TM, *dcore = buf + 2 * TM, *dpq = buf + 3 * TM;
    double *a = buf + 4 * TM, *den = a + T, *o = den + T, *kt = o + T * V, *dkt = kt + M;
    la_rf_opts ok = *rf, oq = *rf;
    ok.role = LA_RF_QUERY;
    ok.eps = 0;
    oq.role = LA_RF_QUERY;
    ref_rf_forward(&ok, T, d, m, k, W, core, a, 0); /* a_j: each key's own max */
    ref_rf_forward(&oq, T, d, m, q, W, pq, (double *)stab_q, 1);
    if (!stabilize) mu0 = 0;
    for (size_t i = 0; i < TM; i++) dcore[i] = dpq[i] = 0;
    for (int64_t i = 0; i < T * V; i++) dv[i] = 0;
    const double muT = T ? mu[T - 1] : mu0;
    /* forward quantities: den_t, o_t */
    for (int64_t t = 0; t < T; t++) {
        const double f0 = mu0 == -INFINITY ? 0.0 : exp(mu0 - mu[t]);
        double dn = eps;
        for (int64_t b = 0; b < V; b++) o[t * V + b] = 0;
        for (int64_t i = 0; i < M; i++) {
            if (z0) dn += pq[t * M + i] * z0[i] * f0;
            if (S0)
                for (int64_t b = 0; b < V; b++) o[t * V + b] += pq[t * M + i] * S0[i * V + b] * f0;
        }
        for (int64_t j = 0; j <= t; j++) {
            double s = 0;
            for (int64_t i = 0; i < M; i++)
                s += pq[t * M + i] *
                     (core[j * M + i] * exp(a[j] - mu[t]) + rf_eps * exp(mu[j] - mu[t]));
            dn += s;
            for (int64_t b = 0; b < V; b++) o[t * V + b] += s * v[j * V + b];
        }
        den[t] = dn;
        for (int64_t b = 0; b < V; b++) o[t * V + b] /= dn;
    }
    if (dS0)
        for (int64_t i = 0; i < M * V; i++) dS0[i] = 0;
    if (dz0)
        for (int64_t i = 0; i < M; i++) dz0[i] = 0;
    for (int64_t t = 0; t < T; t++) {
        const double f0 = mu0 == -INFINITY ? 0.0 : exp(mu0 - mu[t]);
        double go = 0; /* d_o . o */
        for (int64_t b = 0; b < V; b++) go += d_o[t * V + b] * o[t * V + b];
        const double ddn = -go / den[t]; /* dL/dden_t */
        /* initial-state terms */
        for (int64_t i = 0; i < M; i++) {
            double sg = 0;
            for (int64_t b = 0; b < V; b++) {
                const double gnum = d_o[t * V + b] / den[t];
                if (S0) sg += S0[i * V + b] * f0 * gnum;
                if (dS0) dS0[i * V + b] += pq[t * M + i] * f0 * gnum;
            }
            if (z0) sg += z0[i] * f0 * ddn;
            if (dz0) dz0[i] += pq[t * M + i] * f0 * ddn;
            dpq[t * M + i] += sg;
        }
        for (int64_t j = 0; j <= t; j++) {
            double s = 0, gv = 0;
            const double fe = exp(a[j] - mu[t]), fp = exp(mu[j] - mu[t]);
            for (int64_t i = 0; i < M; i++) {
                kt[i] = core[j * M + i] * fe + rf_eps * fp;
                s += pq[t * M + i] * kt[i];
            }
            for (int64_t b = 0; b < V; b++) {
                gv += d_o[t * V + b] * v[j * V + b];
                dv[j * V + b] += s * d_o[t * V + b] / den[t];
            }
            const double dA = gv / den[t] + ddn;
            for (int64_t i = 0; i < M; i++) {
                dpq[t * M + i] += dA * kt[i];
                dcore[j * M + i] += dA * pq[t * M + i] * fe;
            }
        }
    }
    /* the final state: S_T = f0 S0 + sum_j k~_j(T) v_j, z_T = f0 z0 + sum_j k~_j(T) */
    const double f0T = mu0 == -INFINITY ? 0.0 : exp(mu0 - muT);
    for (int64_t j = 0; j < T; j++) {
        const double fe = exp(a[j] - muT), fp = exp(mu[j] - muT);
        for (int64_t i = 0; i < M; i++) {
            kt[i] = core[j * M + i] * fe + rf_eps * fp;
            double g = dz_T ? dz_T[i] : 0;
            if (dS_T)
                for (int64_t b = 0; b < V; b++) {
                    g += dS_T[i * V + b] * v[j * V + b];
                    dv[j * V + b] += kt[i] * dS_T[i * V + b];
                }
            dkt[i] = g;
            dcore[j * M + i] += g * fe;
        }
    }
    for (int64_t i = 0; i < M; i++) {
        if (dS0 && dS_T)
            for (int64_t b = 0; b < V; b++) dS0[i * V + b] += f0T * dS_T[i * V + b];
        if (dz0 && dz_T) dz0[i] += f0T * dz_T[i];
    }
    ref_rf_backward(&oq, T, d, m, q, W, stab_q, dpq, dq);
    ref_rf_backward(&ok, T, d, m, k, W, a, dcore, dk);
    free(buf);
}

void ref_softmax_attn_exact(int64_t T, int64_t d, int64_t V, const double *q, const double *k,
                            const double *v, int causal, double *o) {
    double *p = malloc((size_t)T * sizeof *p);
    if (!p) {
        for (int64_t i = 0; i < T * V; i++) o[i] = NAN;
        return;
    }
    const double sc = 1.0 / sqrt((double)d);
    for (int64_t t = 0; t < T; t++) {
        const int64_t J = causal ? t + 1 : T;
        double mx = -INFINITY, den = 0;
        for (int64_t j = 0; j < J; j++) {
            p[j] = sc * dot(q + t * d, k + j * d, d);
            if (p[j] > mx) mx = p[j];
        }
        for (int64_t j = 0; j < J; j++) {
            p[j] = exp(p[j] - mx);
            den += p[j];
        }
        for (int64_t b = 0; b < V; b++) {
            double acc = 0;
            for (int64_t j = 0; j < J; j++) acc += p[j] * v[j * V + b];
            o[t * V + b] = acc / den;
        }
    }
    free(p);
}

void ref_random_pairs(double *X, double *Y, int64_t n_pairs, int64_t d, double norm, la_rng *rng) {
    for (int64_t p = 0; p < n_pairs; p++) {
        double *rows[2] = {X + p * d, Y + p * d};
        for (int r = 0; r < 2; r++) {
            double n2 = 0;
            for (int64_t a = 0; a < d; a++) {
                rows[r][a] = la_rng_normal(rng);
                n2 += rows[r][a] * rows[r][a];
            }
            const double f = norm / sqrt(n2);
            for (int64_t a = 0; a < d; a++) rows[r][a] *= f;
        }
    }
}

la_status ref_rf_kernel_mse(la_ctx *ctx, la_random_feature kind, la_projection_kind proj,
                            la_projection_scaling scaling, int64_t d, int64_t m, const double *X,
                            const double *Y, int64_t n_pairs, int64_t n_groups, int n_draws,
                            uint64_t seed, ref_mse_stats *out) {
    if (n_groups < 1 || n_pairs % n_groups != 0 || n_draws < 1 || d < 1 || d > 4096)
        return LA_ERR_INVALID_ARGUMENT;
    const int64_t M = la_rf_num_features(kind, m), G = n_groups, per = n_pairs / n_groups;
    const int64_t T = 2 * n_pairs; /* tokens: x_0 .. x_{P-1}, y_0 .. y_{P-1} */
    float *W = malloc((size_t)(m * d) * sizeof *W);
    float *xin = malloc((size_t)(T * d) * sizeof *xin);
    float *phi = malloc((size_t)(T * M) * sizeof *phi);
    double *kern = malloc((size_t)n_pairs * sizeof *kern);
    double *acc = calloc((size_t)(6 * G), sizeof *acc); /* per group: s1 s2 b1 b2 theory, q */
    double *xd = malloc(2 * (size_t)d * sizeof *xd);
    la_status st = LA_OK;
    if (!W || !xin || !phi || !kern || !acc || !xd) {
        st = LA_ERR_OUT_OF_MEMORY;
        goto done;
    }
    for (int64_t p = 0; p < n_pairs; p++) {
        for (int64_t a = 0; a < d; a++) {
            xin[p * d + a] = (float)X[p * d + a];
            xin[(n_pairs + p) * d + a] = (float)Y[p * d + a];
            /* the kernel of the float32 inputs the map actually sees */
            xd[a] = xin[p * d + a];
            xd[d + a] = xin[(n_pairs + p) * d + a];
        }
        kern[p] = ref_rf_target_kernel(kind, xd, xd + d, d);
        acc[6 * (p / per) + 4] += ref_rf_mse_theory(kind, xd, xd + d, d, m) / (double)per;
    }
    la_rf_opts o = la_rf_opts_default();
    o.kind = kind;
    o.stabilize = 0;
    o.eps = 0;
    la_dims dims = {.B = 1, .T = 1, .H = T, .K = d, .V = 1};
    for (int r = 0; r < n_draws; r++) {
        if ((st = la_projection_draw(W, m, d, proj, scaling, seed + (uint64_t)r))) goto done;
        if ((st = la_rf_forward(ctx, &o, &dims, phi, NULL, xin, W, m))) goto done;
        for (int64_t g = 0; g < G; g++) {
            double q = 0, bias = 0;
            for (int64_t p = g * per; p < (g + 1) * per; p++) {
                double est = 0;
                for (int64_t i = 0; i < M; i++)
                    est += (double)phi[p * M + i] * (double)phi[(n_pairs + p) * M + i];
                q += (est - kern[p]) * (est - kern[p]);
                bias += est - kern[p];
            }
            q /= (double)per;
            bias /= (double)per;
            double *a = acc + 6 * g;
            a[0] += q;
            a[1] += q * q;
            a[2] += bias;
            a[3] += bias * bias;
        }
    }
    const double R = n_draws;
    for (int64_t g = 0; g < G; g++) {
        const double *a = acc + 6 * g;
        ref_mse_stats *s = out + g;
        s->mse = a[0] / R;
        s->se = n_draws > 1 ? sqrt(fmax(a[1] / R - s->mse * s->mse, 0) / (R - 1)) : NAN;
        s->bias = a[2] / R;
        s->bias_se = n_draws > 1 ? sqrt(fmax(a[3] / R - s->bias * s->bias, 0) / (R - 1)) : NAN;
        s->theory = a[4];
    }
done:
    free(W);
    free(xin);
    free(phi);
    free(kern);
    free(acc);
    free(xd);
    return st;
}
