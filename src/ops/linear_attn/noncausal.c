/* Non-causal kernel linear attention (the kernel trick): per sequence,
 * S = S_0 + φ(K)ᵀV and z = z_0 + φ(K)ᵀ1 are summed first, then every query
 * reads them: o_t = q̂_t S / (q̂_t·z + ε), or q̂_t S unnormalised. The final
 * state is (S, z). O(T·K·V) per head.
 *
 * Backward (formulas in linear_attn.h with S_t = S, z_t = z for every t):
 * dq̂_t = S g_t + δ_t z; dS̄ = dS_T + Σ_t q̂_tᵀ g_t and dz̄ = dz_T + Σ_t δ_t q̂_t
 * are the same for every token; dk̃_t = dS̄ v_tᵀ + dz̄, dv_t = k̃_t dS̄,
 * dS_0 = dS̄, dz_0 = dz̄. */
#include "linear_attn.h"

#include <string.h>

enum { N_S, N_Z, N_QF, N_KF, N_O, N_G, N_DS, N_DZ, N_DKF };

void la__lin_noncausal_layout(const la__lin_job *j, int backward, la__bump *b, float **p) {
    const size_t K = (size_t)j->K, V = (size_t)j->V;
    p[N_S] = la__take(b, la__mul(K, V));
    p[N_Z] = la__take(b, K);
    p[N_QF] = la__take(b, K);
    p[N_KF] = la__take(b, K);
    p[N_O] = la__take(b, V);
    if (!backward) return;
    p[N_G] = la__take(b, V);
    p[N_DS] = la__take(b, la__mul(K, V));
    p[N_DZ] = la__take(b, K);
    p[N_DKF] = la__take(b, K);
}

/* S = S_0 + Σ_t k̃_tᵀ v_t, z = z_0 + Σ_t k̃_t, in token order (as the
 * recurrent form accumulates its state). */
static void sum_state(const la__lin_job *j, const la__lin_unit *u, float *S, float *z,
                      float *kf) {
    la__lin_state_init(j, u, S, z);
    for (int64_t t = 0; t < u->len; t++) {
        const float *v = u->v + t * u->sv;
        la__phi_row(j->fm, 1.0f, kf, u->k + t * u->sqk, j->K);
        for (int64_t i = 0; i < j->K; i++) la__axpy(S + i * j->V, kf[i], v, j->V);
        if (j->normalize)
            for (int64_t i = 0; i < j->K; i++) z[i] += kf[i];
    }
}

/* o = qf S, then / (qf·z + eps) when normalised; returns den (1 if not). */
static float read_state(const la__lin_job *j, const float *S, const float *z, const float *qf,
                        float *o) {
    const int64_t K = j->K, V = j->V;
    for (int64_t x = 0; x < V; x++) o[x] = 0;
    for (int64_t i = 0; i < K; i++) la__axpy(o, qf[i], S + i * V, V);
    if (!j->normalize) return 1.0f;
    float den = la__dot(qf, z, K) + j->eps;
    for (int64_t x = 0; x < V; x++) o[x] = o[x] / den;
    return den;
}

void la__lin_noncausal_fwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__bump b = {scratch, 0, 0};
    la__lin_noncausal_layout(j, 0, &b, p);
    sum_state(j, u, p[N_S], p[N_Z], p[N_KF]);
    for (int64_t t = 0; t < u->len; t++) {
        la__phi_row(j->fm, j->qscale, p[N_QF], u->q + t * u->sqk, j->K);
        read_state(j, p[N_S], p[N_Z], p[N_QF], p[N_O]);
        memcpy(u->o + t * u->sv, p[N_O], (size_t)j->V * sizeof(float));
    }
    la__lin_state_store(j, u, p[N_S], p[N_Z]);
}

void la__lin_noncausal_bwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__bump b = {scratch, 0, 0};
    la__lin_noncausal_layout(j, 1, &b, p);
    const int64_t K = j->K, V = j->V;
    const int norm = j->normalize;
    float *S = p[N_S], *z = p[N_Z], *qf = p[N_QF], *kf = p[N_KF], *ob = p[N_O], *g = p[N_G];
    float *dS = p[N_DS], *dz = p[N_DZ], *dkf = p[N_DKF];
    sum_state(j, u, S, z, kf);
    if (u->dST) memcpy(dS, u->dST, (size_t)K * (size_t)V * sizeof(float));
    else memset(dS, 0, (size_t)K * (size_t)V * sizeof(float));
    if (norm && u->dzT) memcpy(dz, u->dzT, (size_t)K * sizeof(float));
    else memset(dz, 0, (size_t)K * sizeof(float));
    /* Queries: dq, and the sums dS̄, dz̄. */
    for (int64_t t = 0; t < u->len; t++) {
        const float *q = u->q + t * u->sqk, *d_o = u->d_o + t * u->sv;
        la__phi_row(j->fm, j->qscale, qf, q, K);
        const float den = read_state(j, S, z, qf, ob);
        float delta = 0;
        const float *gt = d_o;
        if (norm) {
            for (int64_t x = 0; x < V; x++) g[x] = d_o[x] / den;
            delta = -la__dot(d_o, ob, V) / den;
            gt = g;
        }
        for (int64_t i = 0; i < K; i++) {
            dkf[i] = la__dot(S + i * V, gt, V);
            if (norm) dkf[i] += delta * z[i];
        }
        la__dphi_row(j->fm, j->qscale, u->dq + t * u->sqk, dkf, q, K);
        for (int64_t i = 0; i < K; i++) la__axpy(dS + i * V, qf[i], gt, V);
        if (norm) la__axpy(dz, delta, qf, K);
    }
    /* Keys and values. */
    for (int64_t t = 0; t < u->len; t++) {
        const float *k = u->k + t * u->sqk, *v = u->v + t * u->sv;
        float *dv = u->dv + t * u->sv;
        la__phi_row(j->fm, 1.0f, kf, k, K);
        for (int64_t i = 0; i < K; i++) dkf[i] = la__dot(dS + i * V, v, V) + dz[i];
        la__dphi_row(j->fm, 1.0f, u->dk + t * u->sqk, dkf, k, K);
        for (int64_t x = 0; x < V; x++) dv[x] = 0;
        for (int64_t i = 0; i < K; i++) la__axpy(dv, kf[i], dS + i * V, V);
    }
    if (u->dS0) memcpy(u->dS0, dS, (size_t)K * (size_t)V * sizeof(float));
    if (u->dz0) memcpy(u->dz0, dz, (size_t)K * sizeof(float));
}
