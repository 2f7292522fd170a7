/* Causal Performer, chunk form (forward and backward) and the recurrent
 * forward; the rule is in feature_map.h. */
#include "feature_map.h"

#include "../linear_attn/linear_attn.h"

#include <math.h>
#include <string.h>

/* The unit's view: rows of q/k (stride H*d), v/o (stride H*V), its state
 * slots. */
typedef struct pf_unit {
    int64_t len, sqk, sv;
    const float *q, *k, *v, *d_o, *S0, *z0, *dST, *dzT;
    float *o, *dq, *dk, *dv, *fS, *fz, *dS0, *dz0;
    float mu0; /* -inf when none (stabilised), 0 without a stabiliser */
    float *fmu;
} pf_unit;

static void unit_init(const la__pf_job *j, int64_t task, pf_unit *u) {
    const int64_t H = j->H, d = j->d, V = j->V, M = j->M;
    const int64_t n = task / H, h = task % H;
    int64_t start;
    la__seq_bounds(j->dims, n, &start, &u->len);
    u->sqk = H * d;
    u->sv = H * V;
    const size_t oqk = (size_t)(start * H + h) * (size_t)d;
    const size_t ov = (size_t)(start * H + h) * (size_t)V;
    const size_t os = (size_t)task * (size_t)M * (size_t)V, oz = (size_t)task * (size_t)M;
#define PF_AT(p, off) ((p) ? (p) + (off) : NULL)
    u->q = j->q + oqk;
    u->k = j->k + oqk;
    u->v = j->v + ov;
    u->d_o = PF_AT(j->d_o, ov);
    u->o = PF_AT(j->o, ov);
    u->dq = PF_AT(j->dq, oqk);
    u->dk = PF_AT(j->dk, oqk);
    u->dv = PF_AT(j->dv, ov);
    u->S0 = PF_AT(j->S0, os);
    u->z0 = PF_AT(j->z0, oz);
    u->dST = PF_AT(j->dST, os);
    u->dzT = PF_AT(j->dzT, oz);
    u->fS = PF_AT(j->fS, os);
    u->fz = PF_AT(j->fz, oz);
    u->dS0 = PF_AT(j->dS0, os);
    u->dz0 = PF_AT(j->dz0, oz);
    u->fmu = PF_AT(j->fmu, (size_t)task);
#undef PF_AT
    if (!j->map.stabilized)
        u->mu0 = 0.0f;
    else
        u->mu0 = j->mu0 ? j->mu0[task] : -INFINITY;
}

/* ---- scratch ------------------------------------------------------------ */

enum {
    P_ROW,
    P_UK,
    P_NK,
    P_QA,
    P_S,
    P_QH,
    P_KH,
    P_VB,
    P_A,
    P_NUM,
    P_MU,
    P_RE,
    P_G,
    P_DA,
    P_DQH,
    P_DVB,
    P_MUS,
    P_STARTS,
    P_COUNT
};

/* Doubles are carved as pairs of floats (every piece is 64-byte aligned). */
static void layout(const la__pf_job *j, int backward, la__arena *b, float **p) {
    const size_t d = (size_t)j->d, m = (size_t)j->map.m, M = (size_t)j->M;
    const size_t V = (size_t)j->V, Vx = (size_t)j->Vx, C = (size_t)j->chunk;
    p[P_ROW] = la__arena_floats(b, la__mul(2, LA__RF_ROW_DOUBLES(d, m)));
    p[P_UK] = la__arena_floats(b, la__mul(2, la__mul(C, m)));
    p[P_NK] = la__arena_floats(b, la__mul(2, C));
    p[P_QA] = la__arena_floats(b, la__mul(2, C));
    p[P_S] = la__arena_floats(b, la__mul(M, Vx));
    p[P_QH] = la__arena_floats(b, la__mul(C, M));
    p[P_KH] = la__arena_floats(b, la__mul(C, M));
    p[P_VB] = la__arena_floats(b, la__mul(C, Vx));
    p[P_A] = la__arena_floats(b, la__mul(C, C));
    p[P_NUM] = la__arena_floats(b, la__mul(C, Vx));
    p[P_MU] = la__arena_floats(b, C);
    p[P_RE] = la__arena_floats(b, C);
    if (!backward) return;
    p[P_G] = la__arena_floats(b, la__mul(C, Vx));
    p[P_DA] = la__arena_floats(b, la__mul(C, C));
    p[P_DQH] = la__arena_floats(b, la__mul(C, M));
    p[P_DVB] = la__arena_floats(b, la__mul(C, V));
    /* chunk starts and entry maxima: at most one chunk per token */
    p[P_MUS] = la__arena_floats(b, (size_t)j->Tmax + 1);
    p[P_STARTS] = la__arena_floats(b, la__mul(2, (size_t)j->Tmax + 1));
}

size_t la__pf_chunk_scratch(const la__pf_job *j, int backward) {
    la__arena b = {NULL, 0, 0};
    float *p[P_COUNT];
    layout(j, backward, &b, p);
    return la__arena_size(&b) ? la__arena_size(&b) : SIZE_MAX;
}

size_t la__pf_recurrent_scratch(const la__pf_job *j) {
    la__arena b = {NULL, 0, 0};
    const size_t M = (size_t)j->M, V = (size_t)j->V;
    (void)la__arena_floats(&b, la__mul(2, LA__RF_ROW_DOUBLES(j->d, j->map.m)));
    (void)la__arena_floats(&b, la__mul(M, V));
    (void)la__arena_floats(&b, M);
    (void)la__arena_floats(&b, LA__PF_TOKEN_FLOATS(M));
    return la__arena_size(&b) ? la__arena_size(&b) : SIZE_MAX;
}

/* ---- one chunk ---------------------------------------------------------- */

/* The chunk [t0, t0+L) relative to the running max *mu on entry, with
 * L <= Lmax cut short where the max has grown by more than
 * LA__PF_CHUNK_GROWTH since the chunk's first token (*Lout = L): query
 * features qh (and each query's stabiliser qa), key features kh relative to
 * the max at the chunk's end (returned in *mu), Vx rows vb, the masked
 * scores A, and the per-row attention eps re[i] = eps exp(mu_i - mu_C).
 * Returns the factor exp(mu_entry - mu_C) the carried state needs (1 when
 * the max did not grow). */
static float load_chunk(const la__pf_job *j, const pf_unit *u, float **p, int64_t t0, int64_t Lmax,
                        int64_t *Lout, float *mu) {
    const la__rf_map *mp = &j->map;
    const int64_t m = mp->m, M = j->M, C = j->chunk;
    double *row = (double *)(void *)p[P_ROW], *uk = (double *)(void *)p[P_UK];
    double *nk = (double *)(void *)p[P_NK], *qa = (double *)(void *)p[P_QA];
    double *xs = row, *uq = row + j->d;
    float *mus = p[P_MU], *re = p[P_RE];
    const float mu_in = *mu;
    float run = mu_in;
    int64_t L = Lmax;
    for (int64_t i = 0; i < Lmax; i++) {
        double a;
        nk[i] = la__rf_row_project(mp, u->k + (t0 + i) * u->sqk, xs, uk + i * m, &a);
        const float next = mp->stabilized && (float)a > run ? (float)a : run;
        if (i > 0 && (double)next - (double)mus[0] > LA__PF_CHUNK_GROWTH) {
            L = i; /* token i starts the next chunk */
            break;
        }
        run = next;
        mus[i] = run;
    }
    *Lout = L;
    const double muC = mp->stabilized ? (double)run : 0.0;
    for (int64_t i = 0; i < L; i++) {
        const double f = mp->stabilized ? exp((double)mus[i] - muC) : 1.0;
        la__rf_row_features(mp, p[P_KH] + i * M, uk + i * m, nk[i], muC, f);
        re[i] = (float)((double)j->eps * f);
        double a;
        const double n = la__rf_row_project(mp, u->q + (t0 + i) * u->sqk, xs, uq, &a);
        qa[i] = mp->stabilized ? a : 0.0;
        la__rf_row_features(mp, p[P_QH] + i * M, uq, n, qa[i], 1.0);
    }
    /* v rows with a ones column (normalised linear attention) */
    for (int64_t i = 0; i < L; i++) {
        memcpy(p[P_VB] + i * j->Vx, u->v + (t0 + i) * u->sv, (size_t)j->V * sizeof(float));
        p[P_VB][i * j->Vx + j->V] = 1.0f;
    }
    j->kr->gemm_nt_tril(L, M, 0, 1.0f, p[P_QH], M, p[P_KH], M, 0.0f, p[P_A], C);
    *mu = run;
    if (run == mu_in) return 1.0f;
    return (float)exp((double)mu_in - (double)run); /* 0 when mu_in = -inf */
}

static void scale_state(float *Sx, size_t n, float r) {
    if (r == 1.0f) return;
    for (size_t i = 0; i < n; i++) Sx[i] *= r;
}

/* Numx = Q^ Sx + A Vx: [num, den - eps] per row. */
static void chunk_num(const la__pf_job *j, float **p, int64_t L, const float *Sx) {
    const int64_t M = j->M, C = j->chunk, Vx = j->Vx;
    j->kr->gemm_nn(L, Vx, M, 1.0f, p[P_QH], M, Sx, Vx, 0.0f, p[P_NUM], Vx);
    j->kr->gemm_nn_lower(L, Vx, L, 1.0f, p[P_A], C, p[P_VB], Vx, 1.0f, p[P_NUM], Vx);
}

static void ext_load(const la__pf_job *j, float *Sx, const float *S, const float *z) {
    const int64_t M = j->M, V = j->V, Vx = j->Vx;
    for (int64_t i = 0; i < M; i++) {
        if (S)
            memcpy(Sx + i * Vx, S + i * V, (size_t)V * sizeof(float));
        else
            memset(Sx + i * Vx, 0, (size_t)V * sizeof(float));
        Sx[i * Vx + V] = z ? z[i] : 0.0f;
    }
}

static void ext_store(const la__pf_job *j, const float *Sx, float *S, float *z) {
    const int64_t M = j->M, V = j->V, Vx = j->Vx;
    for (int64_t i = 0; i < M; i++) {
        if (S) memcpy(S + i * V, Sx + i * Vx, (size_t)V * sizeof(float));
        if (z) z[i] = Sx[i * Vx + V];
    }
}

void la__pf_chunk_fwd_task(void *arg, int64_t task, int tid) {
    const la__pf_job *j = arg;
    pf_unit u;
    unit_init(j, task, &u);
    float *p[P_COUNT];
    la__arena b = {la__scratch(j->ctx, tid), 0, 0};
    layout(j, 0, &b, p);
    const int64_t C = j->chunk, V = j->V, Vx = j->Vx;
    float *Sx = p[P_S], *num = p[P_NUM];
    ext_load(j, Sx, u.S0, u.z0);
    float mu = u.mu0;
    for (int64_t t0 = 0, L = 0; t0 < u.len; t0 += L) {
        const int64_t Lmax = u.len - t0 < C ? u.len - t0 : C;
        scale_state(Sx, (size_t)(j->M * Vx), load_chunk(j, &u, p, t0, Lmax, &L, &mu));
        chunk_num(j, p, L, Sx);
        for (int64_t i = 0; i < L; i++) {
            const float *ni = num + i * Vx;
            float *oi = u.o + (t0 + i) * u.sv;
            const float den = ni[V] + p[P_RE][i];
            for (int64_t x = 0; x < V; x++) oi[x] = ni[x] / den;
        }
        j->kr->gemm_tn(j->M, Vx, L, 1.0f, p[P_KH], j->M, p[P_VB], Vx, 1.0f, Sx, Vx);
    }
    ext_store(j, Sx, u.fS, u.fz);
    if (u.fmu) *u.fmu = mu;
}

void la__pf_chunk_bwd_task(void *arg, int64_t task, int tid) {
    const la__pf_job *j = arg;
    pf_unit u;
    unit_init(j, task, &u);
    float *p[P_COUNT];
    la__arena b = {la__scratch(j->ctx, tid), 0, 0};
    layout(j, 1, &b, p);
    const la__kernels *kr = j->kr;
    const la__rf_map *mp = &j->map;
    const int64_t M = j->M, V = j->V, Vx = j->Vx, C = j->chunk;
    float *Sx = p[P_S], *qh = p[P_QH], *kh = p[P_KH], *vb = p[P_VB], *A = p[P_A];
    float *num = p[P_NUM], *g = p[P_G], *dA = p[P_DA], *dqh = p[P_DQH], *dvb = p[P_DVB];
    float *mus = p[P_MUS], *re = p[P_RE];
    double *row = (double *)(void *)p[P_ROW], *qa = (double *)(void *)p[P_QA];

    /* Forward sweep: rebuild each chunk's output, then Gx = [G, delta] and
     * dq; park G in the dv rows and delta in dk[t][0] (read back below
     * before those rows are written). */
    ext_load(j, Sx, u.S0, u.z0);
    float mu = u.mu0;
    int64_t ci = 0, *starts = (int64_t *)(void *)p[P_STARTS];
    for (int64_t t0 = 0, L = 0; t0 < u.len; t0 += L, ci++) {
        const int64_t Lmax = u.len - t0 < C ? u.len - t0 : C;
        mus[ci] = mu;
        starts[ci] = t0;
        scale_state(Sx, (size_t)(M * Vx), load_chunk(j, &u, p, t0, Lmax, &L, &mu));
        chunk_num(j, p, L, Sx);
        for (int64_t i = 0; i < L; i++) {
            const float *dOi = u.d_o + (t0 + i) * u.sv, *ni = num + i * Vx;
            float *gi = g + i * Vx;
            const float den = ni[V] + re[i];
            float dot = 0;
            for (int64_t x = 0; x < V; x++) {
                gi[x] = dOi[x] / den;
                dot += dOi[x] * (ni[x] / den);
            }
            gi[V] = -dot / den;
        }
        kr->gemm_nt_tril(L, Vx, 0, 1.0f, g, Vx, vb, Vx, 0.0f, dA, C);
        kr->gemm_nt(L, M, Vx, 1.0f, g, Vx, Sx, Vx, 0.0f, dqh, M);
        kr->gemm_nn_lower(L, M, L, 1.0f, dA, C, kh, M, 1.0f, dqh, M);
        for (int64_t i = 0; i < L; i++) {
            const int64_t r = t0 + i;
            la__rf_row_backward(mp, u.dq + r * u.sqk, dqh + i * M, u.q + r * u.sqk, qa[i], row);
            memcpy(u.dv + r * u.sv, g + i * Vx, (size_t)V * sizeof(float));
            u.dk[r * u.sqk] = g[i * Vx + V];
        }
        kr->gemm_tn(M, Vx, L, 1.0f, kh, M, vb, Vx, 1.0f, Sx, Vx);
    }

    /* Reverse sweep: Sx carries dSx = [dS, dz], the gradient of the state
     * after the chunk, relative to that chunk's max. */
    float *dSx = Sx;
    ext_load(j, dSx, u.dST, u.dzT);
    starts[ci] = u.len;
    for (ci = ci - 1; ci >= 0; ci--) {
        const int64_t t0 = starts[ci];
        int64_t L;
        float muC = mus[ci];
        const float r = load_chunk(j, &u, p, t0, starts[ci + 1] - t0, &L, &muC);
        for (int64_t i = 0; i < L; i++) {
            memcpy(g + i * Vx, u.dv + (t0 + i) * u.sv, (size_t)V * sizeof(float));
            g[i * Vx + V] = u.dk[(t0 + i) * u.sqk];
        }
        kr->gemm_nt_tril(L, Vx, 0, 1.0f, g, Vx, vb, Vx, 0.0f, dA, C);
        float *dkh = dqh;
        /* dK~ = Vx dSx^T + dA^T Q^ ; dV = K~ dS + A^T G */
        kr->gemm_nt(L, M, Vx, 1.0f, vb, Vx, dSx, Vx, 0.0f, dkh, M);
        kr->gemm_tn(L, M, L, 1.0f, dA, C, qh, M, 1.0f, dkh, M);
        kr->gemm_nn(L, V, M, 1.0f, kh, M, dSx, Vx, 0.0f, dvb, V);
        kr->gemm_tn(L, V, L, 1.0f, A, C, g, Vx, 1.0f, dvb, V);
        kr->gemm_tn(M, Vx, L, 1.0f, qh, M, g, Vx, 1.0f, dSx, Vx);
        scale_state(dSx, (size_t)(M * Vx), r); /* through the rescale */
        const double stab = mp->stabilized ? (double)muC : 0.0;
        for (int64_t i = 0; i < L; i++) {
            const int64_t rr = t0 + i;
            la__rf_row_backward(mp, u.dk + rr * u.sqk, dkh + i * M, u.k + rr * u.sqk, stab, row);
            memcpy(u.dv + rr * u.sv, dvb + i * V, (size_t)V * sizeof(float));
        }
    }
    ext_store(j, dSx, u.dS0, u.dz0);
}

void la__pf_recurrent_fwd_task(void *arg, int64_t task, int tid) {
    const la__pf_job *j = arg;
    pf_unit u;
    unit_init(j, task, &u);
    const int64_t M = j->M, V = j->V;
    la__arena b = {la__scratch(j->ctx, tid), 0, 0};
    double *dw =
        (double *)(void *)la__arena_floats(&b, la__mul(2, LA__RF_ROW_DOUBLES(j->d, j->map.m)));
    float *S = la__arena_floats(&b, la__mul((size_t)M, (size_t)V));
    float *z = la__arena_floats(&b, (size_t)M);
    float *fw = la__arena_floats(&b, LA__PF_TOKEN_FLOATS(M));
    if (u.S0)
        memcpy(S, u.S0, (size_t)(M * V) * sizeof(float));
    else
        memset(S, 0, (size_t)(M * V) * sizeof(float));
    if (u.z0)
        memcpy(z, u.z0, (size_t)M * sizeof(float));
    else
        memset(z, 0, (size_t)M * sizeof(float));
    float mu = u.mu0;
    for (int64_t t = 0; t < u.len; t++)
        la__performer_token(&j->map, j->eps, V, S, z, &mu, u.o + t * u.sv, u.q + t * u.sqk,
                            u.k + t * u.sqk, u.v + t * u.sv, fw, dw);
    if (u.fS) memcpy(u.fS, S, (size_t)(M * V) * sizeof(float));
    if (u.fz) memcpy(u.fz, z, (size_t)M * sizeof(float));
    if (u.fmu) *u.fmu = mu;
}
