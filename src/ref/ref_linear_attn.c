/* float64 reference of kernel linear attention: the quadratic formula,
 * query by query, and its gradient derived directly from it. */
#include "ref_linear_attn.h"

#include "ref_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

ref_linear_attn_cfg ref_linear_attn_cfg_from(const la_linear_attn_opts *opts, int64_t K) {
    ref_linear_attn_cfg c;
    c.feature_map = opts->feature_map;
    c.causal = opts->causal != 0;
    c.normalize = opts->normalize != 0;
    c.eps = (double)opts->eps;
    c.scale = opts->scale == 0 ? (double)(float)(1.0 / sqrt((double)K)) : (double)opts->scale;
    c.magnitude = 0;
    return c;
}

double ref_phi(la_feature_map fm, double x) {
    switch (fm) {
    case LA_FEATURE_ELU1: return x > 0 ? x + 1 : exp(x); /* elu(x) + 1 */
    case LA_FEATURE_RELU: return x > 0 ? x : 0;
    default: return x;
    }
}

double ref_dphi(la_feature_map fm, double x) {
    switch (fm) {
    case LA_FEATURE_ELU1: return x > 0 ? 1 : exp(x);
    case LA_FEATURE_RELU: return x > 0 ? 1 : 0;
    default: return 1;
    }
}

/* q̂ [T,K] (with the scale when unnormalised) and k̃ [T,K]. */
static void features(const ref_linear_attn_cfg *c, int64_t T, int64_t K, const double *q,
                     const double *k, double *qh, double *kh) {
    const double s = c->normalize ? 1.0 : c->scale;
    for (int64_t i = 0; i < T * K; i++) {
        qh[i] = s * ref_phi(c->feature_map, q[i]);
        kh[i] = ref_phi(c->feature_map, k[i]);
        if (c->magnitude) {
            qh[i] = fabs(qh[i]);
            kh[i] = fabs(kh[i]);
        }
    }
}

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* num [V] and den of query t (den = 1 when unnormalised). */
static double query(const ref_linear_attn_cfg *c, int64_t t, int64_t T, int64_t K, int64_t V,
                    const double *qh, const double *kh, const double *v, const double *S0,
                    const double *z0, double *num) {
    const double *qt = qh + t * K;
    double den = 0;
    for (int64_t x = 0; x < V; x++) num[x] = 0;
    if (S0)
        for (int64_t i = 0; i < K; i++)
            for (int64_t x = 0; x < V; x++) num[x] += qt[i] * S0[i * V + x];
    if (z0) den += dot(qt, z0, K);
    const int64_t last = c->causal ? t : T - 1;
    for (int64_t j = 0; j <= last; j++) {
        const double a = dot(qt, kh + j * K, K);
        for (int64_t x = 0; x < V; x++) num[x] += a * v[j * V + x];
        den += a;
    }
    return c->normalize ? den + c->eps : 1.0;
}

void ref_linear_attn_forward(const ref_linear_attn_cfg *c, int64_t T, int64_t K, int64_t V,
                             double *o, double *S_T, double *z_T, const double *q,
                             const double *k, const double *v, const double *S0,
                             const double *z0) {
    double *qh = malloc((size_t)(T * K) * sizeof *qh), *kh = malloc((size_t)(T * K) * sizeof *kh);
    if (!qh || !kh) abort(); /* reference code for tests: no recovery */
    features(c, T, K, q, k, qh, kh);
    if (!c->normalize) z0 = NULL;
    for (int64_t t = 0; t < T; t++) {
        double *ot = o + t * V;
        const double den = query(c, t, T, K, V, qh, kh, v, S0, z0, ot);
        for (int64_t x = 0; x < V; x++) ot[x] /= den;
    }
    if (S_T)
        for (int64_t i = 0; i < K; i++)
            for (int64_t x = 0; x < V; x++) {
                double s = S0 ? S0[i * V + x] : 0;
                for (int64_t j = 0; j < T; j++) s += kh[j * K + i] * v[j * V + x];
                S_T[i * V + x] = s;
            }
    if (z_T)
        for (int64_t i = 0; i < K; i++) {
            double s = z0 ? z0[i] : 0;
            for (int64_t j = 0; j < T; j++) s += kh[j * K + i];
            z_T[i] = s;
        }
    free(qh);
    free(kh);
}

/* With num_t, den_t, o_t = num_t / den_t:
 *   ∂L/∂num_t = g_t = d_o_t / den_t,  ∂L/∂den_t = δ_t = -(d_o_t·o_t) / den_t
 * (g_t = d_o_t, δ_t = 0 unnormalised), and for every j in M(t), with
 * a_tj = q̂_t·k̃_j entering num_t as a_tj v_j and den_t as a_tj:
 *   ∂L/∂a_tj = g_t·v_j + δ_t
 *   dq̂_t += ∂L/∂a_tj k̃_j,  dk̃_j += ∂L/∂a_tj q̂_t,  dv_j += a_tj g_t
 * and from q̂_t S0, q̂_t·z0:  dq̂_t += S0 g_t + δ_t z0,  dS0 += q̂_tᵀ g_t,
 * dz0 += δ_t q̂_t. The final state S_T = S0 + Σ k̃_jᵀ v_j, z_T = z0 + Σ k̃_j
 * adds dk̃_j += dS_T v_j + dz_T, dv_j += k̃_j dS_T, dS0 += dS_T, dz0 += dz_T.
 * Finally dq = (scale when unnormalised) dq̂ ⊙ φ'(q), dk = dk̃ ⊙ φ'(k). */
void ref_linear_attn_backward(const ref_linear_attn_cfg *c, int64_t T, int64_t K, int64_t V,
                              double *dq, double *dk, double *dv, double *dS0, double *dz0,
                              const double *d_o, const double *dS_T, const double *dz_T,
                              const double *q, const double *k, const double *v,
                              const double *S0, const double *z0) {
    double *qh = malloc((size_t)(T * K) * sizeof *qh), *kh = malloc((size_t)(T * K) * sizeof *kh);
    double *num = malloc((size_t)V * sizeof *num), *g = malloc((size_t)V * sizeof *g);
    double *dqh = calloc((size_t)(T * K), sizeof *dqh), *dkh = calloc((size_t)(T * K), sizeof *dkh);
    double *dS = calloc((size_t)(K * V), sizeof *dS), *dz = calloc((size_t)K, sizeof *dz);
    if (!qh || !kh || !num || !g || !dqh || !dkh || !dS || !dz) abort();
    features(c, T, K, q, k, qh, kh);
    if (!c->normalize) {
        z0 = NULL;
        dz_T = NULL;
    }
    for (int64_t i = 0; i < T * V; i++) dv[i] = 0;
    for (int64_t t = 0; t < T; t++) {
        const double den = query(c, t, T, K, V, qh, kh, v, S0, z0, num);
        const double *dot_ = d_o + t * V;
        double delta = 0;
        for (int64_t x = 0; x < V; x++) g[x] = dot_[x] / den;
        if (c->normalize)
            for (int64_t x = 0; x < V; x++) delta -= dot_[x] * (num[x] / den) / den;
        if (c->magnitude) delta = fabs(delta);
        const double *qt = qh + t * K;
        double *dqt = dqh + t * K;
        for (int64_t i = 0; i < K; i++) {
            if (S0) dqt[i] += dot(S0 + i * V, g, V);
            if (z0) dqt[i] += delta * z0[i];
            for (int64_t x = 0; x < V; x++) dS[i * V + x] += qt[i] * g[x];
            dz[i] += delta * qt[i];
        }
        const int64_t last = c->causal ? t : T - 1;
        for (int64_t j = 0; j <= last; j++) {
            const double a = dot(qt, kh + j * K, K);
            const double da = dot(g, v + j * V, V) + delta;
            for (int64_t i = 0; i < K; i++) {
                dqt[i] += da * kh[j * K + i];
                dkh[j * K + i] += da * qt[i];
            }
            for (int64_t x = 0; x < V; x++) dv[j * V + x] += a * g[x];
        }
    }
    for (int64_t j = 0; j < T; j++)
        for (int64_t i = 0; i < K; i++) {
            if (dS_T) {
                dkh[j * K + i] += dot(dS_T + i * V, v + j * V, V);
                for (int64_t x = 0; x < V; x++) dv[j * V + x] += kh[j * K + i] * dS_T[i * V + x];
            }
            if (dz_T) dkh[j * K + i] += dz_T[i];
        }
    if (dS_T)
        for (int64_t i = 0; i < K * V; i++) dS[i] += dS_T[i];
    if (dz_T)
        for (int64_t i = 0; i < K; i++) dz[i] += dz_T[i];
    const double s = c->normalize ? 1.0 : c->scale;
    for (int64_t i = 0; i < T * K; i++) {
        dq[i] = s * dqh[i] * ref_dphi(c->feature_map, q[i]);
        dk[i] = dkh[i] * ref_dphi(c->feature_map, k[i]);
    }
    if (dS0) memcpy(dS0, dS, (size_t)(K * V) * sizeof *dS);
    if (dz0) {
        for (int64_t i = 0; i < K; i++) dz0[i] = c->normalize ? dz[i] : 0;
    }
    free(qh);
    free(kh);
    free(num);
    free(g);
    free(dqh);
    free(dkh);
    free(dS);
    free(dz);
}

static int64_t num_seqs(const la_dims *d) { return d->cu_seqlens ? d->n_seqs : d->B; }

int ref_linear_attn_forward_all(const la_linear_attn_opts *opts, const la_dims *dims, double *o,
                                double *final_state, double *final_norm, const float *q,
                                const float *k, const float *v, const float *initial_state,
                                const float *initial_norm) {
    const int64_t N = num_seqs(dims), H = dims->H, K = dims->K, V = dims->V;
    const int64_t Tmax = dims->T; /* no sequence is longer than T */
    ref_linear_attn_cfg c = ref_linear_attn_cfg_from(opts, K);
    double *qs = malloc((size_t)(Tmax * K) * sizeof *qs), *ks = malloc((size_t)(Tmax * K) * sizeof *ks);
    double *vs = malloc((size_t)(Tmax * V) * sizeof *vs), *os = malloc((size_t)(Tmax * V) * sizeof *os);
    double *S0 = malloc((size_t)(K * V) * sizeof *S0), *z0 = malloc((size_t)K * sizeof *z0);
    int rc = (qs && ks && vs && os && S0 && z0) ? 0 : -1;
    for (int64_t n = 0; n < N && !rc; n++)
        for (int64_t h = 0; h < H; h++) {
            const size_t u = (size_t)(n * H + h);
            const int64_t T = ref_gather(qs, q, dims, n, h, H, K);
            ref_gather(ks, k, dims, n, h, H, K);
            ref_gather(vs, v, dims, n, h, H, V);
            if (initial_state)
                for (int64_t i = 0; i < K * V; i++) S0[i] = initial_state[u * (size_t)(K * V) + (size_t)i];
            if (initial_norm)
                for (int64_t i = 0; i < K; i++) z0[i] = initial_norm[u * (size_t)K + (size_t)i];
            ref_linear_attn_forward(&c, T, K, V, os, final_state ? final_state + u * (size_t)(K * V) : NULL,
                                    final_norm ? final_norm + u * (size_t)K : NULL, qs, ks, vs,
                                    initial_state ? S0 : NULL, initial_norm ? z0 : NULL);
            ref_scatter(o, os, dims, n, h, H, V);
        }
    free(qs);
    free(ks);
    free(vs);
    free(os);
    free(S0);
    free(z0);
    return rc;
}

int ref_linear_attn_backward_all(const la_linear_attn_opts *opts, const la_dims *dims,
                                 int magnitude, double *dq, double *dk, double *dv, double *d_initial_state,
                                 double *d_initial_norm, const float *d_o,
                                 const float *d_final_state, const float *d_final_norm,
                                 const float *q, const float *k, const float *v,
                                 const float *initial_state, const float *initial_norm) {
    const int64_t N = num_seqs(dims), H = dims->H, K = dims->K, V = dims->V, Tm = dims->T;
    ref_linear_attn_cfg c = ref_linear_attn_cfg_from(opts, K);
    c.magnitude = magnitude;
    const size_t TK = (size_t)(Tm * K), TV = (size_t)(Tm * V), KV = (size_t)(K * V);
    double *qs = malloc(TK * sizeof *qs), *ks = malloc(TK * sizeof *ks);
    double *vs = malloc(TV * sizeof *vs), *dos = malloc(TV * sizeof *dos);
    double *dqs = malloc(TK * sizeof *dqs), *dks = malloc(TK * sizeof *dks);
    double *dvs = malloc(TV * sizeof *dvs);
    double *S0 = calloc(KV, sizeof *S0), *z0 = calloc((size_t)K, sizeof *z0);
    double *dST = calloc(KV, sizeof *dST), *dzT = calloc((size_t)K, sizeof *dzT);
    int rc = (qs && ks && vs && dos && dqs && dks && dvs && S0 && z0 && dST && dzT) ? 0 : -1;
    for (int64_t n = 0; n < N && !rc; n++)
        for (int64_t h = 0; h < H; h++) {
            const size_t u = (size_t)(n * H + h);
            const int64_t T = ref_gather(qs, q, dims, n, h, H, K);
            ref_gather(ks, k, dims, n, h, H, K);
            ref_gather(vs, v, dims, n, h, H, V);
            ref_gather(dos, d_o, dims, n, h, H, V);
            for (size_t i = 0; i < KV; i++) {
                if (initial_state) S0[i] = initial_state[u * KV + i];
                if (d_final_state) dST[i] = d_final_state[u * KV + i];
            }
            for (int64_t i = 0; i < K; i++) {
                if (initial_norm) z0[i] = initial_norm[u * (size_t)K + (size_t)i];
                if (d_final_norm) dzT[i] = d_final_norm[u * (size_t)K + (size_t)i];
            }
            if (magnitude) {
                double *xs[] = {vs, dos};
                for (int a = 0; a < 2; a++)
                    for (int64_t i = 0; i < T * V; i++) xs[a][i] = fabs(xs[a][i]);
                for (size_t i = 0; i < KV; i++) {
                    S0[i] = fabs(S0[i]);
                    dST[i] = fabs(dST[i]);
                }
                for (int64_t i = 0; i < K; i++) {
                    z0[i] = fabs(z0[i]);
                    dzT[i] = fabs(dzT[i]);
                }
            }
            ref_linear_attn_backward(&c, T, K, V, dqs, dks, dvs,
                                     d_initial_state ? d_initial_state + u * KV : NULL,
                                     d_initial_norm ? d_initial_norm + u * (size_t)K : NULL, dos,
                                     d_final_state ? dST : NULL, d_final_norm ? dzT : NULL, qs,
                                     ks, vs, initial_state ? S0 : NULL,
                                     initial_norm ? z0 : NULL);
            ref_scatter(dq, dqs, dims, n, h, H, K);
            ref_scatter(dk, dks, dims, n, h, H, K);
            ref_scatter(dv, dvs, dims, n, h, H, V);
        }
    free(qs); free(ks); free(vs); free(dos); free(dqs); free(dks); free(dvs);
    free(S0); free(z0); free(dST); free(dzT);
    return rc;
}
