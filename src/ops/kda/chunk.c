/* The chunkwise form of KDA: the WY (UT-transform) representation of one
 * chunk with a per-key gate, forward and backward (MATH.md, "KDA").
 *
 * Inside a chunk of L tokens, gam_t = g_1 + ... + g_t [K] (summed in
 * float64), b_t = exp(gam_t), e_j = exp(gam_L - gam_j) (per key, all <= 1).
 * Unrolling S_t = Diag(a_t) S_{t-1} + k_t r_t^T from the chunk start S_0:
 *     S_t = Diag(b_t) S_0 + sum_{j<=t} Diag(exp(gam_t - gam_j)) k_j r_j^T
 *     r_t + beta_t sum_{j<t} M_tj r_j = beta_t v_t - beta_t (k_t * b_t)^T S_0
 * with M_tj = sum_i k_ti k_ji exp(gam_ti - gam_ji) (pairs.c). So, with
 * Mb = Diag(beta) M (strictly lower) and A = (I + Mb)^{-1}:
 *     R = U - W S_0,  U = A Diag(beta) V,  W = A Diag(beta) (K * B)
 *     O = scale ((Q * B) S_0 + P R),  P_tj = sum_i q_ti k_ji exp(gam_ti - gam_ji), j <= t
 *     S_L = Diag(b_L) S_0 + (K * E)^T R
 * (X * B: row t times b_t elementwise). A is never formed: U and W come
 * from trsm_llu. Every exponential is of a difference <= 0 (or <= 30
 * inside a sub-block of small span, pairs.c), so g = -1e4 (a full reset)
 * gives exact zeros, never Inf or NaN.
 *
 * Backward (G = dL/dS_L, dO~ = scale dO), the forward in reverse:
 *   S_L:  dS_0 = Diag(b_L) G, db_L = rowsum(G * S_0), dR = (K * E) G,
 *         T = R G^T: dk += E * T, dE = K * T
 *   O:    T = dO~ S_0^T: dq += B * T, dB += Q * T; dS_0 += (Q * B)^T dO~,
 *         dR += P^T dO~, dP = lower(dO~ R^T)
 *   R:    dW = -dR S_0^T, dS_0 -= W^T dR
 *   solves: Yu = A^T dR, Yw = A^T dW, dMb = -strict(Yu U^T + Yw W^T),
 *         dv = beta Yu, dbeta = Yu.v + Yw.(K * B) + rowsum(dMb * M),
 *         dk += beta B * Yw, dB += beta K * Yw, dM = Diag(beta) dMb
 *   pairs: dP, dM -> dq, dk, dgam (pairs.c)
 *   gates: dgam += dB * B, dgam_L += sum_j dE_j * E_j + db_L * b_L,
 *         dgam_j -= dE_j * E_j; dg = reverse cumulative sum of dgam.
 * Cost O(L^2 (K + V) + L K V) per chunk at matrix-product shapes, plus
 * 2 L K exponentials (pairs.c; L K and L K divisions when the chunk is one
 * block) and, for sub-blocks of span > 30 only,
 * O(L * LA__KDA_SUB * K) multiplications for their own pairs. */
#include "kda.h"

#include <string.h>

static size_t up16(size_t n) { return (n + 15) / 16 * 16; }

#if defined(__GNUC__)
#define LA__KDA_PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
#else
#define LA__KDA_PREFETCH_L2(p) ((void)(p))
#endif

/* cpu-fwd5: the chunk step and the chunk backward are built for the
 * baseline ISA, AVX2 and AVX-512 (LA_ISA_BUILDS, kernels/isa_builds.h): their element
 * loops (gate sums, row scalings, the backward's gradient rows). */

size_t la__kda_chunk_work_floats(int64_t C, int64_t K, int64_t V) {
    const size_t c = (size_t)C, ck = up16(c * (size_t)K), cv = up16(c * (size_t)V);
    /* gam (double) + b, e, Xs [C,K]; P, M [C,C]; U [C,V]; W [C,K]; pairs */
    return 2 * ck + 3 * ck + 2 * up16(c * c) + cv + ck + la__kda_pairs_work_floats(C, K) + 64;
}

/* gam = cumulative sums of the chunk's gates (float64); then the pair
 * factors and b = exp(gam), e = exp(gam_L - gam) (pairs.c). */
KDA_INLINE void chunk_gates(int64_t L, int64_t K, const float *g, const float *q, const float *k,
                            double *gam, float *b, float *e, float *pw) {
    for (int64_t x = 0; x < K; x++) gam[x] = (double)g[x];
    for (int64_t t = 1; t < L; t++)
        for (int64_t x = 0; x < K; x++)
            gam[t * K + x] = gam[(t - 1) * K + x] + (double)g[t * K + x];
    la__kda_pairs_prepare(L, K, q, k, gam, b, e, pw);
}

/* dst = x * f elementwise over n floats. */
KDA_INLINE void mul(float *dst, const float *x, const float *f, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = x[i] * f[i];
}

size_t la__kda_chunk_keep_floats(int64_t C, int64_t K, int64_t V) {
    const size_t c = (size_t)C;
    return up16(c * c) + 2 * up16(c * (size_t)V) + up16(c * (size_t)K);
}

/* keep's pieces: M, U, W, R (see kda.h). */
KDA_INLINE void keep_layout(int64_t L, int64_t K, int64_t V, const float *keep, const float **M,
                            const float **U, const float **W, const float **R) {
    *M = keep;
    *U = *M + up16((size_t)(L * L));
    *W = *U + up16((size_t)(L * V));
    *R = *W + up16((size_t)(L * K));
}

static void chunk_step(const la__kda_chunk_in *in, float *S, float *o, int64_t ostride, float *keep,
                       float *work);

void la__kda_chunk_step(const la__kda_chunk_in *in, float *S, float *o, int64_t ostride,
                        float *keep, float *work) {
    chunk_step(in, S, o, ostride, keep, work);
}

void la__kda_chunk_keep(const la__kda_chunk_in *in, float *S, float *keep, float *work) {
    chunk_step(in, S, NULL, 0, keep, work);
}

KDA_INLINE void chunk_step_body(const la__kda_chunk_in *in, float *S, float *o, int64_t ostride,
                                float *keep, float *work) {
    const int64_t L = in->L, K = in->K, V = in->V;
    const float *q = in->q, *k = in->k, *v = in->v, *beta = in->beta;
    const la__kernels *kr = in->kr;
    const size_t LK = (size_t)L * (size_t)K, ck = up16(LK);
    float *w = la__kda_align(work);
    double *gam = (double *)(void *)w;
    float *b = w + 2 * ck, *e = b + ck, *Xs = e + ck, *P = Xs + ck, *M = P + up16((size_t)(L * L)),
          *U = M + up16((size_t)(L * L)), *W = U + up16((size_t)(L * V)), *pw = W + ck;

    chunk_gates(L, K, in->g, o ? q : NULL, k, gam, b, e, pw);
    la__kda_pairs_forward(kr, L, K, q, k, gam, o ? P : NULL, M, pw);
    const float *kM = NULL, *kU = NULL, *kW = NULL, *kR = NULL;
    if (keep) {
        keep_layout(L, K, V, keep, &kM, &kU, &kW, &kR);
        memcpy(keep, M, (size_t)(L * L) * sizeof(float));
    }
    for (int64_t t = 0; t < L; t++)
        for (int64_t j = 0; j < t; j++) M[t * L + j] *= beta[t];
    /* U = A Diag(beta) V, W = A Diag(beta) (K * B) */
    for (int64_t t = 0; t < L; t++) {
        for (int64_t c = 0; c < V; c++) U[t * V + c] = beta[t] * v[t * V + c];
        for (int64_t x = 0; x < K; x++) W[t * K + x] = beta[t] * (k[t * K + x] * b[t * K + x]);
    }
    kr->trsm_llu(L, V, M, L, U, V);
    kr->trsm_llu(L, K, M, L, W, K);
    if (keep) {
        memcpy((float *)kU, U, (size_t)(L * V) * sizeof(float));
        memcpy((float *)kW, W, (size_t)(L * K) * sizeof(float));
    }
    kr->gemm_nn(L, V, K, -1.0f, W, K, S, V, 1.0f, U, V); /* U := R = U - W S_0 */
    if (keep) memcpy((float *)kR, U, (size_t)(L * V) * sizeof(float));
    if (keep && o) /* the forward's la_saved: P too, after R */
        memcpy(keep + la__kda_chunk_keep_floats(L, K, V), P, (size_t)(L * L) * sizeof(float));
    if (o) {
        mul(Xs, q, b, LK);
        kr->gemm_nn(L, V, K, in->scale, Xs, K, S, V, 0.0f, o, ostride);
        kr->gemm_nn_lower(L, V, L, in->scale, P, L, U, V, 1.0f, o, ostride);
    }
    /* S_L = Diag(b_L) S_0 + (K * E)^T R */
    const float *bL = b + (L - 1) * K;
    for (int64_t x = 0; x < K; x++)
        for (int64_t c = 0; c < V; c++) S[x * V + c] *= bL[x];
    mul(Xs, k, e, LK);
    kr->gemm_tn(K, V, L, 1.0f, Xs, K, U, V, 1.0f, S, V);
}

LA_ISA_BUILDS(static, chunk_step, chunk_step_body,
              (const la__kda_chunk_in *in, float *S, float *o, int64_t ostride, float *keep,
               float *work),
              (in, S, o, ostride, keep, work))

size_t la__kda_chunk_bwd_work_floats(int64_t C, int64_t K, int64_t V) {
    const size_t c = (size_t)C, ck = up16(c * (size_t)K), cv = up16(c * (size_t)V);
    const size_t cc = up16(c * c);
    /* gam, dgam (double); b, e, db, de, Kb, W, dW, Yw [C,K]; dbL (double [K]);
     * P, M, dP, dM, T [C,C]; U, R, dR, Yu [C,V]; pairs */
    return 4 * ck + 8 * ck + 2 * up16((size_t)K) + 5 * cc + 4 * cv +
           la__kda_pairs_work_floats(C, K) + 64;
}

KDA_INLINE void chunk_backward_body(const la__kda_chunk_in *in, const float *S0, float *G,
                                    const float *dO, const float *kept, const float *keptP,
                                    float *dq, float *dk,
                                    float *dv, float *dbeta, float *dg, float *work) {
    const int64_t L = in->L, K = in->K, V = in->V;
    const float *q = in->q, *k = in->k, *v = in->v, *beta = in->beta;
    const la__kernels *kr = in->kr;
    const size_t LK = (size_t)L * (size_t)K, ck = up16(LK), cc = up16((size_t)(L * L)),
                 cv = up16((size_t)(L * V));
    float *w = la__kda_align(work);
    double *gam = (double *)(void *)w, *dgam = (double *)(void *)(w + 2 * ck),
           *dbL = (double *)(void *)(w + 4 * ck);
    float *b = w + 4 * ck + 2 * up16((size_t)K), *e = b + ck, *db = e + ck, *de = db + ck,
          *Kb = de + ck, *W = Kb + ck, *dW = W + ck, *Yw = dW + ck;
    float *Pw = Yw + ck, *Mw = Pw + cc, *dP = Mw + cc, *dM = dP + cc, *T = dM + cc;
    float *Uw = T + cc, *Rw = Uw + cv, *dR = Rw + cv, *Yu = dR + cv, *pw = Yu + cv;
    const float *M = Mw, *U = Uw, *R = Rw, *Wk = W;

    /* ---- recompute the chunk's forward ---- */
    chunk_gates(L, K, in->g, q, k, gam, b, e, pw);
    if (!kept || !keptP)
        la__kda_pairs_forward(kr, L, K, q, k, gam, keptP ? NULL : Pw, kept ? NULL : Mw, pw);
    const float *P = keptP ? keptP : Pw;
    if (kept) keep_layout(L, K, V, kept, &M, &U, &Wk, &R);
    for (int64_t t = 0; t < L; t++)
        for (int64_t j = 0; j < t; j++) T[t * L + j] = beta[t] * M[t * L + j]; /* Mb */
    mul(Kb, k, b, LK);
    if (!kept) {
        for (int64_t t = 0; t < L; t++) {
            for (int64_t c = 0; c < V; c++) Uw[t * V + c] = beta[t] * v[t * V + c];
            for (int64_t x = 0; x < K; x++) W[t * K + x] = beta[t] * Kb[t * K + x];
        }
        kr->trsm_llu(L, V, T, L, Uw, V);
        kr->trsm_llu(L, K, T, L, W, K);
        memcpy(Rw, Uw, (size_t)(L * V) * sizeof(float));
        kr->gemm_nn(L, V, K, -1.0f, W, K, S0, V, 1.0f, Rw, V);
    }

    /* ---- S_L = Diag(b_L) S_0 + (K * E)^T R ---- */
    const float *bL = b + (L - 1) * K;
    /* dbL_x = <G_x, S0_x> in eight partial sums of fixed assignment and
     * order (one chain of V dependent double additions per key was ~15% of
     * this function's time). */
    for (int64_t x = 0; x < K; x++) {
        const float *Gx = G + x * V, *Sx = S0 + x * V;
        double ps[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t c = 0;
        for (; c + 8 <= V; c += 8)
            for (int l = 0; l < 8; l++) ps[l] += (double)Gx[c + l] * Sx[c + l];
        for (int l = 0; c < V; c++, l++) ps[l] += (double)Gx[c] * Sx[c];
        dbL[x] = ((ps[0] + ps[4]) + (ps[1] + ps[5])) + ((ps[2] + ps[6]) + (ps[3] + ps[7]));
    }
    mul(Yw, k, e, LK); /* K * E (work) */
    kr->gemm_nn(L, V, K, 1.0f, Yw, K, G, V, 0.0f, dR, V);
    kr->gemm_nt(L, K, V, 1.0f, R, V, G, V, 0.0f, Yw, K); /* R G^T */
    for (size_t i = 0; i < LK; i++) {
        dk[i] += e[i] * Yw[i];
        de[i] = k[i] * Yw[i];
    }
    for (int64_t x = 0; x < K; x++)
        for (int64_t c = 0; c < V; c++) G[x * V + c] *= bL[x];
    /* From here G accumulates dS_0. */

    /* ---- O = scale ((Q * B) S_0 + P R) ---- */
    kr->gemm_nt(L, K, V, 1.0f, dO, V, S0, V, 0.0f, Yw, K); /* dO~ S_0^T */
    for (size_t i = 0; i < LK; i++) {
        dq[i] += b[i] * Yw[i];
        db[i] = q[i] * Yw[i]; /* db's first terms */
        Yw[i] = q[i] * b[i];
    }
    kr->gemm_tn(K, V, L, 1.0f, Yw, K, dO, V, 1.0f, G, V);
    kr->gemm_tn(L, V, L, 1.0f, P, L, dO, V, 1.0f, dR, V); /* P is zero above the diagonal */
    kr->gemm_nt_tril(L, V, 0, 1.0f, dO, V, R, V, 0.0f, dP, L);

    /* ---- R = U - W S_0 ---- */
    kr->gemm_nt(L, K, V, -1.0f, dR, V, S0, V, 0.0f, dW, K);
    kr->gemm_tn(K, V, L, -1.0f, Wk, K, dR, V, 1.0f, G, V);

    /* ---- solves: Yu = A^T dR, Yw = A^T dW (in place in dR, dW) ---- */
    la__trsm_llu_transposed(kr, L, V, T, dM, dR, Yu);
    la__trsm_llu_transposed(kr, L, K, T, dM, dW, Yw);
    const float *YU = dR, *YW = dW;
    kr->gemm_nt_tril(L, V, 1, -1.0f, YU, V, U, V, 0.0f, dM, L);
    kr->gemm_nt_tril(L, K, 1, -1.0f, YW, K, Wk, K, 1.0f, dM, L); /* dMb */
    const size_t pf_step = (in->next_n + (size_t)L - 1) / (size_t)L; /* floats per token */
    for (int64_t t = 0; t < L; t++) {
        const float *yu = YU + t * V, *yw = YW + t * K;
        for (size_t i = (size_t)t * pf_step; i < (size_t)(t + 1) * pf_step && i < in->next_n;
             i += 16)
            LA__KDA_PREFETCH_L2(in->next + i);
        /* the two row dots in 16 partial sums each (la__delta_dot) */
        float acc = la__delta_dot(yu, v + t * V, V) + la__delta_dot(yw, Kb + t * K, K);
        for (int64_t c = 0; c < V; c++) dv[t * V + c] = beta[t] * yu[c];
        for (int64_t x = 0; x < K; x++) {
            dk[t * K + x] += beta[t] * b[t * K + x] * yw[x];
            db[t * K + x] += beta[t] * k[t * K + x] * yw[x];
        }
        for (int64_t j = 0; j < t; j++) {
            acc += dM[t * L + j] * M[t * L + j];
            dM[t * L + j] *= beta[t];
        }
        dbeta[t] = acc;
    }

    /* ---- the gated pair products, then the gates ---- */
    /* (with the gates' terms dgam_t += db_t b_t, dgam_L += sum_j de_j e_j,
     * dgam_j -= de_j e_j: close_rows in pairs.c) */
    la__kda_pairs_backward(kr, L, K, q, k, gam, dP, dM, db, b, de, e, dq, dk, dgam, pw);
    double *dgL = dgam + (L - 1) * K;
    for (int64_t x = 0; x < K; x++) dgL[x] += dbL[x] * bL[x];
    /* dg = reverse cumulative sum of dgam over t, per key: token-major so
     * the K independent sums advance side by side (each in the same order
     * as one key at a time: the same bits); dbL is free again. */
    double *acc = dbL;
    for (int64_t x = 0; x < K; x++) acc[x] = 0;
    for (int64_t t = L - 1; t >= 0; t--)
        for (int64_t x = 0; x < K; x++) {
            acc[x] += dgam[t * K + x];
            dg[t * K + x] = (float)acc[x];
        }
}

#define KDA_BWD_ARGS                                                                               \
    const la__kda_chunk_in *in, const float *S0, float *G, const float *dO, const float *kept,     \
        const float *keptP, float *dq, float *dk, float *dv, float *dbeta, float *dg, float *work
#define KDA_BWD_CALL in, S0, G, dO, kept, keptP, dq, dk, dv, dbeta, dg, work

LA_ISA_BUILDS(, la__kda_chunk_backward, chunk_backward_body, (KDA_BWD_ARGS), (KDA_BWD_CALL))
