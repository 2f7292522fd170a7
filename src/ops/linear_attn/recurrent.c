/* Causal kernel linear attention, recurrent form: token by token with the
 * state S [K,V] (and z [K] when normalised), exactly the decoder's step.
 *
 * Backward (formulas in linear_attn.h): a forward sweep rebuilds S_t, z_t,
 * o_t and den_t with the same step, giving g_t, δ_t and dq_t = c·(S_t g_t +
 * δ_t z_t)⊙φ'(q_t); a reverse sweep carries dS̄ = dS_T + Σ_{i≥t} q̂_iᵀ g_i
 * and dz̄ = dz_T + Σ_{i≥t} δ_i q̂_i and gives dk_t = (dS̄ v_tᵀ + dz̄)⊙φ'(k_t),
 * dv_t = k̃_t dS̄. No per-token state is stored. */
#include "linear_attn.h"

#include <string.h>

enum { R_S, R_Z, R_WORK, R_DS, R_DZ, R_QF, R_KF, R_O, R_G, R_DKF, R_DV };

void la__lin_recurrent_layout(const la__lin_job *j, int backward, la__arena *b, float **p) {
    const size_t K = (size_t)j->K, V = (size_t)j->V;
    p[R_S] = la__arena_floats(b, la__mul(K, V));
    p[R_Z] = la__arena_floats(b, K);
    p[R_WORK] = la__arena_floats(b, LA__STEP_WORK_FLOATS(K, V));
    if (!backward) return;
    p[R_DS] = la__arena_floats(b, la__mul(K, V));
    p[R_DZ] = la__arena_floats(b, K);
    p[R_QF] = la__arena_floats(b, K);
    p[R_KF] = la__arena_floats(b, K);
    p[R_O] = la__arena_floats(b, V);
    p[R_G] = la__arena_floats(b, V);
    p[R_DKF] = la__arena_floats(b, K);
    p[R_DV] = la__arena_floats(b, V);
}

void la__lin_recurrent_fwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_recurrent_layout(j, 0, &b, p);
    /* The decoder's configuration: the same step, bit for bit. */
    la_decoder_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.op = LA_OP_LINEAR_ATTN;
    cfg.N = 1;
    cfg.H = 1;
    cfg.K = j->K;
    cfg.V = j->V;
    cfg.feature_map = j->fm;
    cfg.normalize = j->normalize;
    cfg.eps = j->eps;
    cfg.scale = j->scale;
    la__lin_state_init(j, u, p[R_S], p[R_Z]);
    for (int64_t t = 0; t < u->len; t++)
        la__linear_attn_step(&cfg, j->scale, p[R_S], p[R_Z], u->o + t * u->sv, u->q + t * u->sqk,
                             u->k + t * u->sqk, u->v + t * u->sv, p[R_WORK]);
    la__lin_state_store(j, u, p[R_S], p[R_Z]);
}

void la__lin_recurrent_bwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_recurrent_layout(j, 1, &b, p);
    const int64_t K = j->K, V = j->V;
    const int norm = j->normalize;
    const float c = j->qscale;
    float *S = p[R_S], *z = p[R_Z], *dS = p[R_DS], *dz = p[R_DZ];
    float *qf = p[R_QF], *kf = p[R_KF], *ob = p[R_O], *g = p[R_G], *dkf = p[R_DKF];
    float *dvb = p[R_DV];

    /* Forward sweep: g, δ and dq. */
    la__lin_state_init(j, u, S, z);
    for (int64_t t = 0; t < u->len; t++) {
        const float *q = u->q + t * u->sqk, *d_o = u->d_o + t * u->sv;
        float den;
        la__lin_token(j->fm, norm, j->eps, c, K, V, S, z, ob, q, u->k + t * u->sqk,
                      u->v + t * u->sv, qf, kf, &den);
        float delta = 0;
        const float *gt = d_o;
        if (norm) {
            for (int64_t x = 0; x < V; x++) g[x] = d_o[x] / den;
            delta = -la__dot(d_o, ob, V) / den;
            gt = g;
        }
        /* dq̂_i = S_t[i]·g + δ z_i, written through φ' (dkf is free here) */
        for (int64_t i = 0; i < K; i++) {
            dkf[i] = la__dot(S + i * V, gt, V);
            if (norm) dkf[i] += delta * z[i];
        }
        la__dphi_row(j->fm, c, u->dq + t * u->sqk, dkf, q, K);
        if (norm) { /* park g_t and δ_t for the reverse sweep */
            memcpy(u->dv + t * u->sv, g, (size_t)V * sizeof(float));
            u->dk[t * u->sqk] = delta;
        }
    }

    /* Reverse sweep: dS̄, dz̄, dk, dv. */
    if (u->dST) memcpy(dS, u->dST, (size_t)K * (size_t)V * sizeof(float));
    else memset(dS, 0, (size_t)K * (size_t)V * sizeof(float));
    if (norm && u->dzT) memcpy(dz, u->dzT, (size_t)K * sizeof(float));
    else memset(dz, 0, (size_t)K * sizeof(float));
    for (int64_t t = u->len - 1; t >= 0; t--) {
        const float *k = u->k + t * u->sqk, *v = u->v + t * u->sv;
        float *dk = u->dk + t * u->sqk, *dv = u->dv + t * u->sv;
        float delta = 0;
        const float *gt = u->d_o + t * u->sv;
        if (norm) {
            memcpy(g, dv, (size_t)V * sizeof(float));
            delta = dk[0];
            gt = g;
        }
        la__phi_row(j->fm, c, qf, u->q + t * u->sqk, K);
        la__phi_row(j->fm, 1.0f, kf, k, K);
        for (int64_t i = 0; i < K; i++) la__axpy(dS + i * V, qf[i], gt, V);
        if (norm) la__axpy(dz, delta, qf, K);
        for (int64_t i = 0; i < K; i++) dkf[i] = la__dot(dS + i * V, v, V) + dz[i];
        for (int64_t x = 0; x < V; x++) dvb[x] = 0;
        for (int64_t i = 0; i < K; i++) la__axpy(dvb, kf[i], dS + i * V, V);
        la__dphi_row(j->fm, 1.0f, dk, dkf, k, K);
        memcpy(dv, dvb, (size_t)V * sizeof(float));
    }
    if (u->dS0) memcpy(u->dS0, dS, (size_t)K * (size_t)V * sizeof(float));
    if (u->dz0) memcpy(u->dz0, dz, (size_t)K * sizeof(float));
}
