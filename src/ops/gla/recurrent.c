/* Recurrent (token-by-token) form of simple GLA and GLA, forward and
 * backward. The forward is the RNN view: one gla_token per token.
 *
 * The backward runs the tokens in reverse. It needs S_t and S_{t-1} at every
 * token, so it stores the state at the start of every segment of C tokens
 * (checkpoints) in a forward sweep and recomputes the C + 1 states of one
 * segment at a time with gla_token: memory O((L/C + C) K V), not O(L K V). */
#include "gla.h"

#include <string.h>

size_t la__gla_recurrent_fwd_bytes(const gla_job *j) {
    la__arena a = {0};
    la__arena_take(&a, (size_t)j->K * (size_t)j->V, sizeof(float)); /* S */
    la__arena_take(&a, (size_t)j->K + (size_t)j->V, sizeof(float)); /* gla_token's work */
    return la__arena_size(&a);
}

void la__gla_recurrent_fwd_task(void *arg, int64_t task, int tid) {
    const gla_job *j = arg;
    const int64_t H = j->H, K = j->K, V = j->V, h = task % H, n = task / H;
    const size_t KV = (size_t)K * (size_t)V;
    la__arena a = {.base = la__scratch(j->ctx, tid)};
    float *S = la__arena_take(&a, KV, sizeof(float));
    float *acc = la__arena_take(&a, (size_t)K + (size_t)V, sizeof(float));
    int64_t start, len;
    la__seq_bounds(j->d, n, &start, &len);
    if (j->s0)
        memcpy(S, j->s0 + (size_t)task * KV, KV * sizeof(float));
    else
        memset(S, 0, KV * sizeof(float));
    const float gamma = j->g_gamma ? j->g_gamma[h] : 0.0f;
    for (int64_t t = 0; t < len; t++) {
        const int64_t r = start + t;
        const size_t qk = (size_t)(r * H + h) * (size_t)K, vo = (size_t)(r * H + h) * (size_t)V;
        gla_token(j->per_key, K, V, j->scale, S, j->o + vo, j->q + qk, j->k + qk, j->v + vo,
                  gla_gate_row(j, r, h), gamma, acc);
    }
    if (j->sT) memcpy(j->sT + (size_t)task * KV, S, KV * sizeof(float));
}

size_t la__gla_recurrent_bwd_bytes(const gla_job *j, int64_t L) {
    const size_t KV = (size_t)j->K * (size_t)j->V;
    const int64_t C = j->C < L ? j->C : L;
    const size_t nseg = (size_t)((L + C - 1) / C);
    la__arena a = {0};
    la__arena_take(&a, nseg, KV * sizeof(float));        /* checkpoints */
    la__arena_take(&a, (size_t)C + 1, KV * sizeof(float)); /* states of one segment */
    la__arena_take(&a, KV, sizeof(float));               /* dS */
    la__arena_take(&a, (size_t)j->V, sizeof(float));     /* dv accumulator */
    if (KV > SIZE_MAX / sizeof(float) / (nseg + (size_t)C + 2)) return 0;
    return la__arena_size(&a);
}

void la__gla_recurrent_bwd_task(void *arg, int64_t task, int tid) {
    const gla_job *j = arg;
    const int64_t H = j->H, K = j->K, V = j->V, h = task % H, n = task / H;
    const size_t KV = (size_t)K * (size_t)V;
    const float scale = j->scale;
    int64_t start, len;
    la__seq_bounds(j->d, n, &start, &len);
    const int64_t C = j->C < len ? j->C : len > 0 ? len : 1; /* len 0: nothing to do */
    const int64_t nseg = (len + C - 1) / C;
    la__arena a = {.base = la__scratch(j->ctx, tid)};
    float *ckpt = la__arena_take(&a, (size_t)nseg, KV * sizeof(float));
    float *seg = la__arena_take(&a, (size_t)C + 1, KV * sizeof(float));
    float *dS = la__arena_take(&a, KV, sizeof(float));
    float *acc = la__arena_take(&a, (size_t)V, sizeof(float));
    const float gamma = j->g_gamma ? j->g_gamma[h] : 0.0f;

    /* Forward sweep: checkpoint the state before every segment. */
    float *S = seg;
    if (j->s0)
        memcpy(S, j->s0 + (size_t)task * KV, KV * sizeof(float));
    else
        memset(S, 0, KV * sizeof(float));
    for (int64_t t = 0; t < len; t++) {
        if (t % C == 0) memcpy(ckpt + (size_t)(t / C) * KV, S, KV * sizeof(float));
        const int64_t r = start + t;
        const size_t qk = (size_t)(r * H + h) * (size_t)K, vo = (size_t)(r * H + h) * (size_t)V;
        gla_token(j->per_key, K, V, scale, S, NULL, j->q + qk, j->k + qk, j->v + vo,
                  gla_gate_row(j, r, h), gamma, acc);
    }

    if (j->d_sT)
        memcpy(dS, j->d_sT + (size_t)task * KV, KV * sizeof(float));
    else
        memset(dS, 0, KV * sizeof(float));
    double gamma_sum = 0.0;
    for (int64_t s = nseg - 1; s >= 0; s--) {
        const int64_t t0 = s * C, t1 = t0 + C < len ? t0 + C : len;
        /* seg[i] = state after token t0 + i - 1 (seg[0] = checkpoint). */
        memcpy(seg, ckpt + (size_t)s * KV, KV * sizeof(float));
        for (int64_t t = t0; t < t1; t++) {
            const int64_t r = start + t;
            const size_t qk = (size_t)(r * H + h) * (size_t)K,
                         vo = (size_t)(r * H + h) * (size_t)V;
            float *next = seg + (size_t)(t - t0 + 1) * KV;
            memcpy(next, next - KV, KV * sizeof(float));
            gla_token(j->per_key, K, V, scale, next, NULL, j->q + qk, j->k + qk, j->v + vo,
                      gla_gate_row(j, r, h), gamma, acc);
        }
        for (int64_t t = t1 - 1; t >= t0; t--) {
            const int64_t r = start + t;
            const size_t qk = (size_t)(r * H + h) * (size_t)K,
                         vo = (size_t)(r * H + h) * (size_t)V;
            const float *q = j->q + qk, *k = j->k + qk, *v = j->v + vo, *dout = j->d_o + vo;
            const float *Scur = seg + (size_t)(t - t0 + 1) * KV, *Sprev = Scur - KV;
            const float *gr = gla_gate_row(j, r, h);
            const float a_s = j->per_key ? 0.0f : expf((gr ? gr[0] : 0.0f) + gamma);
            float *dq = j->dq + qk, *dk = j->dk + qk, *dv = j->dv + vo;
            double dg_scalar = 0.0;
            for (int64_t x = 0; x < V; x++) acc[x] = 0.0f;
            for (int64_t i = 0; i < K; i++) {
                float *dr = dS + (size_t)i * (size_t)V;
                const float *sc = Scur + (size_t)i * (size_t)V, *sp = Sprev + (size_t)i * (size_t)V;
                /* o_t = scale q_t S_t: dq_t = scale S_t do_t, dS_t += scale q_t^T do_t. */
                const float sq = scale * q[i];
                float dqi = 0.0f;
                for (int64_t x = 0; x < V; x++) {
                    dqi += sc[x] * dout[x];
                    dr[x] += sq * dout[x];
                }
                dq[i] = scale * dqi;
                /* S_t = a S_{t-1} + k^T v: dk = dS v, dv = k dS, dg = a sum(dS * S_{t-1}). */
                float dki = 0.0f;
                double dsp = 0.0;
                const float ki = k[i];
                for (int64_t x = 0; x < V; x++) {
                    dki += dr[x] * v[x];
                    acc[x] += ki * dr[x];
                    dsp += (double)dr[x] * (double)sp[x];
                }
                dk[i] = dki;
                const float ai = j->per_key ? expf(gr[i]) : a_s;
                if (j->per_key) {
                    if (j->dg) j->dg[qk + (size_t)i] = (float)((double)ai * dsp);
                } else {
                    dg_scalar += (double)ai * dsp;
                }
                for (int64_t x = 0; x < V; x++) dr[x] *= ai; /* dS_{t-1} */
            }
            for (int64_t x = 0; x < V; x++) dv[x] = acc[x];
            if (!j->per_key) {
                if (j->dg) j->dg[r * H + h] = (float)dg_scalar;
                gamma_sum += dg_scalar;
            }
        }
    }
    if (j->ds0) memcpy(j->ds0 + (size_t)task * KV, dS, KV * sizeof(float));
    if (j->dgamma_part) j->dgamma_part[task] = gamma_sum;
}
