/* The recurrent form of KDA, one token at a time: the forward arithmetic
 * (shared with the decoding step, so decoding equals the recurrent forward
 * bit for bit) and its reverse (used by the recurrent backward).
 *
 * Forward, with a = exp(g) [K]:
 *     u = (k * a)^T S_{t-1}  (the recall of the decayed state, [V])
 *     r = beta (v - u)
 *     S_t = Diag(a) S_{t-1} + k r^T,   o = scale S_t^T q
 * Reverse, with P = S_{t-1}, S' = Diag(a) P and G = dL/dS_t:
 *     dq += scale S_t do,  G += scale q do^T,  w = G^T k
 *     dv = beta w,  dbeta = w . (v - u)
 *     dk_i += G_i . r - beta a_i (P_i . w)
 *     dS' = G - beta k w^T,  dg_i = a_i (dS'_i . P_i),  dS_{t-1} = Diag(a) dS' */
#include "kda.h"

#include "../../kernels/vexp.h"

#if defined(__GNUC__)
#define KDA_INLINE static inline __attribute__((always_inline))
#else
#define KDA_INLINE static inline
#endif

/* Two passes over S, the first read-only (the recall), the second the
 * read-modify-write with o accumulated from each fresh row. Every element
 * sees the same operations in the same order at any vector width (no
 * contraction), so the AVX2 build rounds exactly as the portable one. */
KDA_INLINE void kda_rows(int64_t K, int64_t V, float scale, float *restrict S, float *restrict o,
                         const float *restrict q, const float *restrict k, const float *restrict v,
                         const float *restrict g, float beta, float *restrict a, float *restrict ka,
                         float *restrict r) {
    for (int64_t i = 0; i < K; i++) LA__EXP_NONPOS(a[i], g[i]);
    for (int64_t i = 0; i < K; i++) ka[i] = k[i] * a[i];
    for (int64_t j = 0; j < V; j++) r[j] = 0;
    int64_t i = 0;
    for (; i + 4 <= K; i += 4) { /* four rows per sweep of r, terms still in row order */
        const float k0 = ka[i], k1 = ka[i + 1], k2 = ka[i + 2], k3 = ka[i + 3];
        const float *restrict S0 = S + i * V, *restrict S1 = S0 + V, *restrict S2 = S1 + V,
                              *restrict S3 = S2 + V;
        for (int64_t j = 0; j < V; j++)
            r[j] = (((r[j] + k0 * S0[j]) + k1 * S1[j]) + k2 * S2[j]) + k3 * S3[j];
    }
    for (; i < K; i++) {
        const float ki = ka[i];
        const float *restrict Si = S + i * V;
        for (int64_t j = 0; j < V; j++) r[j] += ki * Si[j];
    }
    for (int64_t j = 0; j < V; j++) r[j] = beta * (v[j] - r[j]);
    if (!o) {
        for (i = 0; i < K; i++) {
            const float ai = a[i], ki = k[i];
            float *restrict Si = S + i * V;
            for (int64_t j = 0; j < V; j++) Si[j] = ai * Si[j] + ki * r[j];
        }
        return;
    }
    for (int64_t j = 0; j < V; j++) o[j] = 0;
    for (i = 0; i < K; i++) {
        const float ai = a[i], ki = k[i], qi = scale * q[i];
        float *restrict Si = S + i * V;
        for (int64_t j = 0; j < V; j++) {
            const float s = ai * Si[j] + ki * r[j];
            Si[j] = s;
            o[j] += qi * s;
        }
    }
}

LA__VECTORISE static void kda_rows_portable(int64_t K, int64_t V, float scale, float *S, float *o,
                                            const float *q, const float *k, const float *v,
                                            const float *g, float beta, float *a, float *ka,
                                            float *r) {
    kda_rows(K, V, scale, S, o, q, k, v, g, beta, a, ka, r);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define KDA_ROWS_AVX2 1
LA__VECTORISE __attribute__((target("avx2"))) static void
kda_rows_avx2(int64_t K, int64_t V, float scale, float *S, float *o, const float *q, const float *k,
              const float *v, const float *g, float beta, float *a, float *ka, float *r) {
    kda_rows(K, V, scale, S, o, q, k, v, g, beta, a, ka, r);
}
#endif

void la__kda_token(int64_t K, int64_t V, float scale, float *S, float *o, const float *q,
                   const float *k, const float *v, const float *g, float beta, float *work) {
    float *a = la__kda_align(work), *ka = la__kda_align(a + K), *r = la__kda_align(ka + K);
#ifdef KDA_ROWS_AVX2
    if (la_isa_active() != LA_ISA_PORTABLE) {
        kda_rows_avx2(K, V, scale, S, o, q, k, v, g, beta, a, ka, r);
        return;
    }
#endif
    kda_rows_portable(K, V, scale, S, o, q, k, v, g, beta, a, ka, r);
}

void la__kda_token_backward(int64_t K, int64_t V, float scale, const float *P, const float *St,
                            float *G, const float *q, const float *k, const float *v,
                            const float *g, float beta, const float *dot, float *dq, float *dk,
                            float *dv, float *dg, float *dbeta, float *work) {
    float *a = la__kda_align(work), *u = la__kda_align(a + K), *w = la__kda_align(u + V),
          *r = la__kda_align(w + V);
    for (int64_t i = 0; i < K; i++) LA__EXP_NONPOS(a[i], g[i]);
    /* the output o_t = scale S_t^T q */
    for (int64_t i = 0; i < K; i++) {
        const float *Si = St + i * V;
        float acc = 0;
        for (int64_t j = 0; j < V; j++) acc += Si[j] * dot[j];
        dq[i] += scale * acc;
        const float sq = scale * q[i];
        float *Gi = G + i * V;
        for (int64_t j = 0; j < V; j++) Gi[j] += sq * dot[j];
    }
    /* u = (k * a)^T P, w = G^T k */
    for (int64_t j = 0; j < V; j++) u[j] = w[j] = 0;
    for (int64_t i = 0; i < K; i++) {
        const float kai = k[i] * a[i], ki = k[i];
        const float *Pi = P + i * V, *Gi = G + i * V;
        for (int64_t j = 0; j < V; j++) {
            u[j] += kai * Pi[j];
            w[j] += ki * Gi[j];
        }
    }
    double db = 0;
    for (int64_t j = 0; j < V; j++) {
        const float d = v[j] - u[j];
        r[j] = beta * d;
        db += (double)w[j] * d;
        dv[j] = beta * w[j];
    }
    *dbeta = (float)db;
    for (int64_t i = 0; i < K; i++) {
        const float *Pi = P + i * V;
        float *Gi = G + i * V;
        float gr = 0, pw = 0;
        for (int64_t j = 0; j < V; j++) {
            gr += Gi[j] * r[j];
            pw += Pi[j] * w[j];
        }
        dk[i] += gr - beta * a[i] * pw;
        const float bk = beta * k[i];
        double da = 0;
        for (int64_t j = 0; j < V; j++) {
            const float d = Gi[j] - bk * w[j]; /* dS'_ij */
            da += (double)d * Pi[j];
            Gi[j] = a[i] * d;
        }
        dg[i] = (float)(a[i] * da);
    }
}
