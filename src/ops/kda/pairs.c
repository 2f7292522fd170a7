/* The per-key-gated products inside a KDA chunk (see kda.h):
 *     P_tj = sum_i q_ti k_ji exp(gam_ti - gam_ji)   (j <= t)
 *     M_tj = sum_i k_ti k_ji exp(gam_ti - gam_ji)   (j <  t)
 * and their reverse. With per-key gates the factor cannot be taken out of
 * the sum, and exp(gam_t) exp(-gam_j) would overflow at the first reset
 * (g = -1e4). As in the GLA chunk (src/ops/gla/chunk.c), the chunk is cut
 * into sub-blocks of LA__KDA_SUB tokens; for t in the sub-block I that
 * starts at token b (last token e) and j in a sub-block J (last token e_J),
 *     exp(gam_t - gam_j) = R_t * X_IJ * Pe_j,   R_t = e^{gam_t - gam_b},
 *                          X_IJ = e^{gam_b - gam_{e_J}}, Pe_j = e^{gam_{e_J} - gam_j},
 * all three <= 1 for J before I (gam never increases, g <= 0), so those
 * pairs are plain matrix products of pre-scaled rows on the micro-kernels:
 *     P[t, j<b] = (q_t * R_t) . (k_j * F_j),  F_j = X_IJ Pe_j,
 * two exponentials per token and key (R, Pe) and one per sub-block pair
 * (X); the chunk's b = e^{gam} and e = e^{gam_L - gam} come from the same R
 * and Pe (la__kda_pairs_prepare; one exponential and a division per token
 * and key when the chunk is one block: prepare_whole_body). A sub-block's
 * own pairs (J = I) use X_II = e^{gam_b - gam_e} >= 1: when its span
 * (largest X_II exponent over the keys) is <= LA__KDA_SPAN (30), the
 * factors stay in [e^-30, e^30] and
 * its own pairs join the same product (the diagonal and above are then
 * overwritten: P's diagonal is q_t . k_t exactly). A larger span (strong
 * decays, resets g = -1e4, where e^{span} would overflow and meet a zero
 * R) takes them one by one with the product of the per-token decays,
 * exp(gam_t - gam_j) = a_{j+1} ... a_t with a_s = exp(gam_s - gam_{s-1})
 * <= 1 (at most LA__KDA_SUB - 1 factors, relative rounding <= 15
 * half-ulps). test_kda's test_spans fails when the limit is lifted.
 * cpu-kda21: a chunk whose own span is <= LA__KDA_SPAN is one block (of L
 * tokens: block_len): R_t = e^{gam_t - gam_0}, F_j = e^{gam_0 - gam_j} in
 * [e^-30, e^30], and P, M are two causal products of the chunk's rows (the
 * shapes of Gated DeltaNet), the backward's four products lower triangular.
 * The usual case (decays of a few percent per token); its bits differ from
 * the sub-block form's, the error against float64 stays inside test_kda's
 * bounds (bench/NOTES.md, cpu-kda21).
 * Reverse, for upstream dP, dM (x the left, y the right operand):
 *     dx_t += sum_j dA_tj y_j * e_tj,  dy_j += sum_t dA_tj x_t * e_tj,
 *     dgam_t += x_t * (that dx_t),     dgam_j -= y_j * (that dy_j)
 * over strictly lower pairs only: the diagonal of P has factor 1 and no
 * gate gradient (taking it through the identity would leave rounding noise
 * where the exact gradient is zero). */
#include "kda.h"

#include "../../kernels/vexp.h"

#include <string.h>

/* Work layout (floats, 64-byte aligned pieces): R, F, YF [C,K]; QKR
 * [2C,K]; dqs, dks, dys, T1, A, Pe [C,K] each, e [K] and dPb [C,C] (a block
 * is at most the chunk: block_len).
 * QKR holds q * R and k * R block by block (cpu-kda21): the ni rows of
 * q * R of the block at i0, then its ni rows of k * R (qkr_rows). (Taking a
 * sub-block's P and M rows as one product of that [q * R; k * R] measured
 * nothing: not kept.) */
size_t la__kda_pairs_work_floats(int64_t C, int64_t K) {
    return 11 * (((size_t)C * (size_t)K + 15) / 16 * 16) + ((size_t)K + 15) / 16 * 16 +
           (((size_t)C * (size_t)C + 15) / 16 * 16) + 16;
}

typedef struct {
    float *R, *F, *YF, *QKR, *dqs, *dks, *dys, *T1, *A, *Pe, *e, *dPb;
} pair_bufs;

static void layout(int64_t L, int64_t K, float *work, pair_bufs *p) {
    const size_t n = ((size_t)L * (size_t)K + 15) / 16 * 16;
    const size_t sc = ((size_t)L * (size_t)L + 15) / 16 * 16;
    float *w = la__kda_align(work);
    float **ptr[] = {&p->R,   &p->F,  &p->YF, &p->QKR, &p->dqs, &p->dks,
                     &p->dys, &p->T1, &p->A,  &p->Pe,  &p->e,   &p->dPb};
    const size_t len[] = {n, n, n, 2 * n, n, n, n, n, n, n, ((size_t)K + 15) / 16 * 16, sc};
    for (int i = 0; i < 12; i++) {
        *ptr[i] = w;
        w += len[i];
    }
}

/* The q * R rows (kr = 0) or k * R rows (kr = 1) of the sub-block of ni
 * rows at i0 in QKR. */
static inline float *qkr_rows(float *QKR, int64_t i0, int64_t ni, int64_t K, int kr) {
    return QKR + (2 * i0 + (kr ? ni : 0)) * K;
}

/* out[x] = exp(a[x] - b[x]) (b NULL: exp(a[x])) for differences <= 0 (or <= 30), the
 * vectorised e^x of vexp.h; built twice (baseline and AVX2) with the same
 * elementwise operations, so both paths give the same bits. */
#define EXP_DIFF_BODY                                                                              \
    do {                                                                                           \
        if (b)                                                                                     \
            for (int64_t x = 0; x < K; x++) LA__EXP_NONPOS(out[x], (float)(a[x] - b[x]));          \
        else                                                                                       \
            for (int64_t x = 0; x < K; x++) LA__EXP_NONPOS(out[x], (float)a[x]);                   \
    } while (0)

LA__VECTORISE static void exp_diff_base(float *restrict out, const double *restrict a,
                                        const double *restrict b, int64_t K) {
    EXP_DIFF_BODY;
}

#if defined(__GNUC__) && defined(__x86_64__)
#define KDA_EXP_AVX2 1
LA__VECTORISE __attribute__((target("avx2"))) static void
exp_diff_avx2(float *restrict out, const double *restrict a, const double *restrict b, int64_t K) {
    EXP_DIFF_BODY;
}

/* cpu-fwd5: and for AVX-512 (16 lanes; same operations, same bits) */
LA__VECTORISE __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2"))) static void
exp_diff_avx512(float *restrict out, const double *restrict a, const double *restrict b,
                int64_t K) {
    EXP_DIFF_BODY;
}
#endif

void la__kda_exp_diff(float *out, const double *a, const double *b, int64_t K) {
#ifdef KDA_EXP_AVX2
    const la_isa isa = la_isa_active();
    if (isa == LA_ISA_AVX512) {
        exp_diff_avx512(out, a, b, K);
        return;
    }
    if (isa != LA_ISA_PORTABLE) {
        exp_diff_avx2(out, a, b, K);
        return;
    }
#endif
    exp_diff_base(out, a, b, K);
}

#define exp_diff la__kda_exp_diff

/* e = A (first) or e * A: the running in-block decay product. */
static void decay(float *restrict e, const float *restrict A, int first, int64_t K) {
    if (first)
        memcpy(e, A, (size_t)K * sizeof(float));
    else
        for (int64_t x = 0; x < K; x++) e[x] *= A[x];
}

static float dot2(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t x = 0;
    for (; x + 8 <= n; x += 8)
        for (int u = 0; u < 8; u++) acc[u] += a[x + u] * b[x + u];
    float s = 0.0f;
    for (; x < n; x++) s += a[x] * b[x];
    for (int u = 0; u < 8; u++) s += acc[u];
    return s;
}

static int own_block(int64_t K, const double *gam, int64_t i0, int64_t ni);

/* cpu-kda21: the block length of a chunk: the whole chunk when its span
 * (the largest per-key decay over it, log space) is <= LA__KDA_SPAN, so
 * that the chunk is one block whose own pairs are plain products of rows
 * scaled by factors in [e^-span, e^span], as a small-span sub-block's
 * (own_block): P and M are then two causal products of the chunk's rows
 * (as Gated DeltaNet's), not eight of 16 rows, and the backward's four
 * products likewise lower-triangular ones. Otherwise (strong decays,
 * resets) sub-blocks of LA__KDA_SUB tokens. Every function of this file
 * takes the length from the same gam, so forward and backward agree. */
static int whole_chunk(int64_t L, int64_t K, const double *gam) { return own_block(K, gam, 0, L); }

static int64_t block_len(int64_t L, int64_t K, const double *gam) {
    return whole_chunk(L, K, gam) ? L : LA__KDA_SUB;
}

/* one token's row of a sub-block in la__kda_pairs_prepare's body (q, QR
 * NULL: no QR) */
KDA_INLINE void sub_row(int64_t K, const double *restrict gt, const double *restrict gb,
                        const double *restrict ge, const float *restrict q, const float *restrict k,
                        float *restrict R, float *restrict Pe, float *restrict QR,
                        float *restrict KR) {
    for (int64_t x = 0; x < K; x++) {
        float r, pe;
        LA__EXP_NONPOS(r, (float)(gt[x] - gb[x]));
        LA__EXP_NONPOS(pe, (float)(ge[x] - gt[x]));
        R[x] = r;
        Pe[x] = pe;
        if (q) QR[x] = q[x] * r;
        KR[x] = k[x] * r;
    }
}

/* la__kda_pairs_prepare, one block [i0, i1) of bs tokens at a time: R_t = exp(gam_t
 * - gam_b), Pe_t = exp(gam_e - gam_t) (b = i0, e = i1 - 1; both <= 1), QR =
 * q * R (when q), KR = k * R, then b_t = exp(gam_b) R_t and e_t =
 * exp(gam_L - gam_e) Pe_t (eb: [K] work).
 * cpu-kda21: built per ISA with the exponentials inline (LA_ISA_BUILDS),
 * R, Pe, QR and KR of a token in one loop. It was two exp_diff calls per
 * token (8 vectors each, through the ISA dispatch) and the row products in
 * the baseline build. Every element sees the same operations as before
 * (exp_diff's e^x of the float of the same double difference, then the
 * same products): the same bits on every ISA. */
KDA_INLINE void prepare_body(int64_t L, int64_t K, const float *restrict q, const float *restrict k,
                             const double *restrict gam, float *restrict b, float *restrict e,
                             float *restrict R, float *restrict Pe, float *restrict QKR,
                             float *restrict eb, int64_t bs) {
    const double *gL = gam + (L - 1) * K;
    for (int64_t i0 = 0; i0 < L; i0 += bs) {
        const int64_t i1 = i0 + bs < L ? i0 + bs : L;
        const double *gb = gam + i0 * K, *ge = gam + (i1 - 1) * K;
        for (int64_t t = i0; t < i1; t++) {
            const double *gt = gam + t * K;
            const size_t o = (size_t)(t * K);
            float *QR = qkr_rows(QKR, i0, i1 - i0, K, 0) - i0 * K, /* row t at o */
                *KR = qkr_rows(QKR, i0, i1 - i0, K, 1) - i0 * K;
            if (q) /* two inlined copies: the row loop without a test in it */
                sub_row(K, gt, gb, ge, q + o, k + o, R + o, Pe + o, QR + o, KR + o);
            else
                sub_row(K, gt, gb, ge, NULL, k + o, R + o, Pe + o, NULL, KR + o);
        }
        for (int64_t x = 0; x < K; x++) LA__EXP_NONPOS(eb[x], (float)gb[x]); /* exp(gam_b) */
        for (int64_t t = i0; t < i1; t++)
            for (int64_t x = 0; x < K; x++) b[t * K + x] = eb[x] * R[t * K + x];
        for (int64_t x = 0; x < K; x++) /* exp(gam_L - gam_e) */
            LA__EXP_NONPOS(eb[x], (float)(gL[x] - ge[x]));
        for (int64_t t = i0; t < i1; t++)
            for (int64_t x = 0; x < K; x++) e[t * K + x] = eb[x] * Pe[t * K + x];
    }
}

LA_ISA_BUILDS(static, prepare_isa, prepare_body,
              (int64_t L, int64_t K, const float *q, const float *k, const double *gam, float *b,
               float *e, float *R, float *Pe, float *QKR, float *eb, int64_t bs),
              (L, K, q, k, gam, b, e, R, Pe, QKR, eb, bs))

/* r = e^d for a double d <= 0: e^x of the float of d, times 1 + (d - that
 * float) (the first-order term of the rest). The float of d alone is off
 * by up to 2^-25 |d| (1e-6 at d = -30), which R_L F_t = e^{gam_L - gam_t}
 * below would carry twice into a small exponent; with the correction r is
 * within a few ulps of e^d whatever |d|. */
#define EXP_SPLIT(r, d_)                                                                           \
    do {                                                                                           \
        const double dd_ = (d_);                                                                   \
        const float df_ = (float)dd_;                                                              \
        float s_;                                                                                  \
        LA__EXP_NONPOS(s_, df_);                                                                   \
        (r) = s_ + s_ * (float)(dd_ - (double)df_);                                                \
    } while (0)

/* one token's row of prepare_whole_body (q, QR NULL: no QR) */
KDA_INLINE void whole_row(int64_t K, const double *restrict gt, const double *restrict gam,
                          const float *restrict eb, const float *restrict RL,
                          const float *restrict q, const float *restrict k, float *restrict R,
                          float *restrict F, float *restrict YF, float *restrict b,
                          float *restrict e, float *restrict QR, float *restrict KR) {
    for (int64_t x = 0; x < K; x++) {
        float r;
        EXP_SPLIT(r, gt[x] - gam[x]);
        const float f = 1.0f / r;
        R[x] = r;
        F[x] = f;
        YF[x] = k[x] * f;
        b[x] = eb[x] * r;
        e[x] = RL[x] * f;
        if (q) QR[x] = q[x] * r;
        KR[x] = k[x] * r;
    }
}

/* cpu-kda22: la__kda_pairs_prepare of a chunk that is one block (span <=
 * LA__KDA_SPAN), one exponential per token and key instead of two (the
 * polynomial's latency chain was the loop's cost), all factors in one pass:
 *     R_t = e^{gam_t - gam_0} in [e^-span, 1] (EXP_SPLIT; a normal float,
 *           the span bounds it), QR = q * R, KR = k * R,
 *     F_t = e^{gam_0 - gam_t} = 1 / R_t (one correctly rounded division, in
 *           [1, e^span]), YF = k * F (so before_block has nothing to do),
 *     e_t = e^{gam_L - gam_t} = R_L F_t (RL [K]: R_L, as the loop's last
 *           row), b_t = e^{gam_0} R_t (eb [K]).
 * Pe is not formed (the block's X = 1 / R_L is folded into F). Elementwise
 * IEEE operations in a fixed order: the same bits on every ISA. Against
 * float64 (test_kda) the errors are smaller than with two exponentials of
 * float arguments (bench/NOTES.md, cpu-kda22). */
KDA_INLINE void prepare_whole_body(int64_t L, int64_t K, const float *restrict q,
                                   const float *restrict k, const double *restrict gam,
                                   float *restrict b, float *restrict e, float *restrict R,
                                   float *restrict F, float *restrict YF, float *restrict QKR,
                                   float *restrict eb, float *restrict RL) {
    float *QR = qkr_rows(QKR, 0, L, K, 0), *KR = qkr_rows(QKR, 0, L, K, 1);
    const double *gL = gam + (L - 1) * K;
    for (int64_t x = 0; x < K; x++) {
        LA__EXP_NONPOS(eb[x], (float)gam[x]); /* exp(gam_0) */
        EXP_SPLIT(RL[x], gL[x] - gam[x]);     /* R_L, as the loop's row L - 1 */
    }
    for (int64_t t = 0; t < L; t++) {
        const double *gt = gam + t * K;
        const size_t o = (size_t)(t * K);
        if (q) /* two inlined copies: the row loop without a test in it */
            whole_row(K, gt, gam, eb, RL, q + o, k + o, R + o, F + o, YF + o, b + o, e + o, QR + o,
                      KR + o);
        else
            whole_row(K, gt, gam, eb, RL, NULL, k + o, R + o, F + o, YF + o, b + o, e + o, NULL,
                      KR + o);
    }
}

LA_ISA_BUILDS(static, prepare_whole_isa, prepare_whole_body,
              (int64_t L, int64_t K, const float *q, const float *k, const double *gam, float *b,
               float *e, float *R, float *F, float *YF, float *QKR, float *eb, float *RL),
              (L, K, q, k, gam, b, e, R, F, YF, QKR, eb, RL))

void la__kda_pairs_prepare(int64_t L, int64_t K, const float *q, const float *k, const double *gam,
                           float *b, float *e, float *work) {
    pair_bufs p;
    layout(L, K, work, &p);
    if (whole_chunk(L, K, gam))
        prepare_whole_isa(L, K, q, k, gam, b, e, p.R, p.F, p.YF, p.QKR, p.e, p.Pe); /* Pe: R_L */
    else
        prepare_isa(L, K, q, k, gam, b, e, p.R, p.Pe, p.QKR, p.e, LA__KDA_SUB);
}

/* The per-token decays A_t = exp(gam_t - gam_{t-1}) of the sub-block's rows
 * i0 < t < i0 + ni (its pairs taken one by one). */
static void block_decays(int64_t i0, int64_t ni, int64_t K, const double *gam, const pair_bufs *p) {
    for (int64_t t = i0 + 1; t < i0 + ni; t++)
        exp_diff(p->A + t * K, gam + t * K, gam + (t - 1) * K, K);
}

/* F_j = exp(gam_b - gam_j) = X_J Pe_j with X_J = exp(gam_b - gam_e(J)) per
 * earlier sub-block J (<= 1), and YF_j = k_j * F_j, for j < nj; for the
 * sub-block's own rows b <= j < nj (when own_block allowed them) X =
 * exp(gam_b - gam_e) is in [1, e^LA__KDA_SPAN] (the e^x of vexp.h is exact
 * in form up to e^87), F_j in [e^-span, e^span]. One exponential per
 * sub-block pair instead of one per (block, earlier row). */
KDA_INLINE void before_block_body(int64_t b, int64_t nj, int64_t K, const float *restrict k,
                                  const double *gam, const float *restrict Pe, float *restrict F,
                                  float *restrict YF, float *restrict e, int64_t bs) {
    for (int64_t j0 = 0; j0 < nj; j0 += bs) {
        const int64_t j1 = j0 + bs < nj ? j0 + bs : nj;
        exp_diff(e, gam + b * K, gam + (j1 - 1) * K, K);
        for (int64_t j = j0; j < j1; j++)
            for (int64_t x = 0; x < K; x++) {
                F[j * K + x] = Pe[j * K + x] * e[x];
                YF[j * K + x] = k[j * K + x] * F[j * K + x];
            }
    }
}

/* (built per ISA as close_rows below: cpu-kdab19) */
LA_ISA_BUILDS(static, before_block_isa, before_block_body,
              (int64_t b, int64_t nj, int64_t K, const float *k, const double *gam, const float *Pe,
               float *F, float *YF, float *e, int64_t bs),
              (b, nj, K, k, gam, Pe, F, YF, e, bs))

static void before_block(int64_t b, int64_t nj, int64_t K, const float *k, const double *gam,
                         const pair_bufs *p, int64_t bs, int whole) {
    if (!whole) /* (a whole-chunk block's F and YF come from its prepare) */
        before_block_isa(b, nj, K, k, gam, p->Pe, p->F, p->YF, p->e, bs);
}

/* 1 when the sub-block of ni rows at i0 takes its own pairs as one matrix
 * product: its span, the largest per-key decay over it in log space
 * (max_x gam_{i0,x} - gam_{i0+ni-1,x}), is <= LA__KDA_SPAN, so the factors
 * R_t >= e^-span and F_j <= e^span stay normal floats far from overflow and
 * R_t F_j = exp(gam_t - gam_j) to a few ulps. Larger spans (strong decays,
 * resets g = -1e4) take the pairs one by one (no 0 * Inf). */
static int own_block(int64_t K, const double *gam, int64_t i0, int64_t ni) {
    const double *gb = gam + i0 * K, *ge = gam + (i0 + ni - 1) * K;
    double span = 0.0;
    for (int64_t x = 0; x < K; x++) {
        const double d = gb[x] - ge[x];
        span = d > span ? d : span;
    }
    return span <= LA__KDA_SPAN;
}

void la__kda_pairs_forward(const la__kernels *kr, int64_t L, int64_t K, const float *q,
                           const float *k, const double *gam, float *P, float *M, float *work) {
    pair_bufs p;
    layout(L, K, work, &p);
    const int64_t bs = block_len(L, K, gam);
    for (int64_t i0 = 0; i0 < L; i0 += bs) {
        const int64_t ni = L - i0 < bs ? L - i0 : bs;
        const int own = own_block(K, gam, i0, ni);
        const int64_t nj = own ? i0 + ni : i0; /* columns taken as one product */
        const int whole = own && ni == L;      /* the whole chunk is one block */
        if (nj > 0) {
            before_block(i0, nj, K, k, gam, &p, bs, whole);
            if (whole) { /* causal products */
                if (P)
                    kr->gemm_nt_tril(L, K, 0, 1.0f, qkr_rows(p.QKR, 0, L, K, 0), K, p.YF, K, 0.0f,
                                     P, L);
                if (M)
                    kr->gemm_nt_tril(L, K, 1, 1.0f, qkr_rows(p.QKR, 0, L, K, 1), K, p.YF, K, 0.0f,
                                     M, L);
            } else {
                if (P)
                    kr->gemm_nt(ni, nj, K, 1.0f, qkr_rows(p.QKR, i0, ni, K, 0), K, p.YF, K, 0.0f,
                                P + i0 * L, L);
                if (M)
                    kr->gemm_nt(ni, nj, K, 1.0f, qkr_rows(p.QKR, i0, ni, K, 1), K, p.YF, K, 0.0f,
                                M + i0 * L, L);
            }
        }
        /* in-block pairs when the span is too large, column j at a time:
         * e = k_j * A_{j+1} ... A_t (the diagonal and above are set below) */
        if (!own) block_decays(i0, ni, K, gam, &p);
        for (int64_t j = i0; !own && j < i0 + ni; j++) {
            if (j + 1 < i0 + ni) memcpy(p.e, k + j * K, (size_t)K * sizeof(float));
            for (int64_t t = j + 1; t < i0 + ni; t++) {
                decay(p.e, p.A + t * K, 0, K);
                if (P) P[t * L + j] = dot2(q + t * K, p.e, K);
                if (M) M[t * L + j] = dot2(k + t * K, p.e, K);
            }
        }
        for (int64_t t = i0; t < i0 + ni; t++) {
            if (P) {
                P[t * L + t] = dot2(q + t * K, k + t * K, K);
                for (int64_t j = t + 1; j < L; j++) P[t * L + j] = 0.0f;
            }
            for (int64_t j = t; M && j < L; j++) M[t * L + j] = 0.0f;
        }
    }
}

/* The closing rows of la__kda_pairs_backward: with d_t = dP_tt (factor 1,
 * no gate gradient),
 *     dq_t += dqs_t + d_t k_t,   dk_t += dks_t + dys_t + d_t q_t,
 * and the chunk's whole gate gradient before its reverse sum (float64,
 * written, not accumulated; db, de: dL/db, dL/de of the chunk's gate
 * factors b, e, chunk.c):
 *     dgam_t = (q_t * dqs_t + k_t * dks_t - k_t * dys_t) + db_t * b_t - y_t,
 *     y_t = de_t * e_t (t < L - 1; e_L = 1 has no gradient),
 *     dgam_L = (... + db_L * b_L) + y_1 + ... + y_{L-1}   (in that order).
 * The last row goes first so that its sum meets the y_t in token order,
 * and through its own pointer (dgL: the other rows through dgam, so both
 * can be restrict). cpu-kda23: this was close_rows then two passes of the
 * chunk backward over dgam (and a memset of it); each element gets the
 * same operations in the same order: the same bits (0 + x = x, up to the
 * sign of a zero, which the reverse sum starting at +0 drops).
 * Its own restrict-qualified body built for each ISA (LA_ISA_BUILDS), so
 * that it vectorises: inside the baseline build of pairs_backward it ran as
 * scalar float64 code, ~60% of that function's samples (cpu-kdab19). The
 * same elementwise operations in the same order on every build: same bits. */
#define CLOSE_ROW(t, GATE)                                                                         \
    do {                                                                                           \
        const float d = dP[(t)*L + (t)];                                                           \
        for (int64_t x = 0; x < K; x++) {                                                          \
            const size_t i = (size_t)((t)*K + x);                                                  \
            const double c =                                                                       \
                ((double)q[i] * dqs[i] + (double)k[i] * dks[i] - (double)k[i] * dys[i]) +          \
                (double)db[i] * b[i];                                                              \
            GATE;                                                                                  \
            dq[i] += dqs[i] + d * k[i];                                                            \
            dk[i] += dks[i] + dys[i] + d * q[i];                                                   \
        }                                                                                          \
    } while (0)

KDA_INLINE void close_rows_body(int64_t L, int64_t K, const float *restrict q,
                                const float *restrict k, const float *restrict dP,
                                const float *restrict dqs, const float *restrict dks,
                                const float *restrict dys, const float *restrict db,
                                const float *restrict b, const float *restrict de,
                                const float *restrict e, float *restrict dq, float *restrict dk,
                                double *restrict dgam, double *restrict dgL) {
    CLOSE_ROW(L - 1, dgL[x] = c);
    for (int64_t t = 0; t + 1 < L; t++)
        CLOSE_ROW(t, {
            const double y = (double)de[i] * e[i];
            dgam[i] = c - y;
            dgL[x] += y;
        });
}

LA_ISA_BUILDS(static, close_rows, close_rows_body,
              (int64_t L, int64_t K, const float *q, const float *k, const float *dP,
               const float *dqs, const float *dks, const float *dys, const float *db,
               const float *b, const float *de, const float *e, float *dq, float *dk, double *dgam,
               double *dgL),
              (L, K, q, k, dP, dqs, dks, dys, db, b, de, e, dq, dk, dgam, dgL))

/* dst = f * t (set, a whole-chunk block: the only block) or dst += f * t
 * (sub-blocks) over n floats: 0 + x = x, so setting gives the bits that
 * adding to zeros gave (up to the sign of a zero) without the zeroing pass
 * and the read (cpu-kda24) */
static void put_scaled(float *restrict dst, const float *restrict f, const float *restrict t,
                       size_t n, int set) {
    if (set)
        for (size_t i = 0; i < n; i++) dst[i] = f[i] * t[i];
    else
        for (size_t i = 0; i < n; i++) dst[i] += f[i] * t[i];
}

void la__kda_pairs_backward(const la__kernels *kr, int64_t L, int64_t K, const float *q,
                            const float *k, const double *gam, const float *dP, const float *dM,
                            const float *db, const float *b, const float *de, const float *e,
                            float *dq, float *dk, double *dgam, float *work) {
    pair_bufs p;
    layout(L, K, work, &p);
    const size_t LK = (size_t)L * (size_t)K;
    const int64_t bs = block_len(L, K, gam);
    if (!whole_chunk(L, K, gam)) { /* sub-blocks add into them (a whole chunk sets them) */
        memset(p.dqs, 0, LK * sizeof(float));
        memset(p.dks, 0, LK * sizeof(float));
        memset(p.dys, 0, LK * sizeof(float));
    }
    for (int64_t i0 = 0; i0 < L; i0 += bs) {
        const int64_t ni = L - i0 < bs ? L - i0 : bs;
        const int own = own_block(K, gam, i0, ni);
        const int64_t nj = own ? i0 + ni : i0; /* columns taken as one product */
        const int whole = own && ni == L;      /* the whole chunk is one block */
        if (nj > 0) {
            before_block(i0, nj, K, k, gam, &p, bs, whole);
            /* dP's rows of the block, strictly lower: the diagonal has no
             * gate factor and is taken apart below */
            const float *dPb = dP + i0 * L;
            if (own) {
                for (int64_t t = 0; t < ni; t++) {
                    memcpy(p.dPb + t * L, dP + (i0 + t) * L, (size_t)nj * sizeof(float));
                    p.dPb[t * L + i0 + t] = 0.0f;
                }
                dPb = p.dPb;
            }
            /* x side: dqs_t += R_t * (dP[t, :nj] YF), dks_t += R_t * (dM[t, :nj] YF);
             * a whole-chunk block's dPb and dM are lower triangular (zeros
             * above the diagonal): the products skip that half */
            const size_t rows = (size_t)(i0 * K), nik = (size_t)(ni * K);
            const la__gemm_fn xprod = whole ? kr->gemm_nn_lower : kr->gemm_nn;
            xprod(ni, K, nj, 1.0f, dPb, L, p.YF, K, 0.0f, p.T1, K);
            put_scaled(p.dqs + rows, p.R + rows, p.T1, nik, whole);
            xprod(ni, K, nj, 1.0f, dM + i0 * L, L, p.YF, K, 0.0f, p.T1, K);
            put_scaled(p.dks + rows, p.R + rows, p.T1, nik, whole);
            /* y side: dys_j += F_j * (dP[:, j]^T QR + dM[:, j]^T KR) over the block */
            const float *QR = qkr_rows(p.QKR, i0, ni, K, 0), *KR = qkr_rows(p.QKR, i0, ni, K, 1);
            if (whole) {
                memset(p.T1, 0, (size_t)(L * K) * sizeof(float));
                la__gemm_tn_lower_acc(kr, L, K, dPb, L, QR, K, p.T1, K);
                la__gemm_tn_lower_acc(kr, L, K, dM, L, KR, K, p.T1, K);
            } else {
                kr->gemm_tn(nj, K, ni, 1.0f, dPb, L, QR, K, 0.0f, p.T1, K);
                kr->gemm_tn(nj, K, ni, 1.0f, dM + i0 * L, L, KR, K, 1.0f, p.T1, K);
            }
            put_scaled(p.dys, p.F, p.T1, (size_t)(nj * K), whole);
        }
        if (!own) block_decays(i0, ni, K, gam, &p);
        for (int64_t j = i0; !own && j < i0 + ni; j++) {
            const float *kj = k + j * K;
            float *dyj = p.dys + j * K, *ej = p.e; /* the decay from j */
            for (int64_t t = j + 1; t < i0 + ni; t++) {
                decay(ej, p.A + t * K, t == j + 1, K);
                const float *qt = q + t * K, *kt = k + t * K;
                float *dqt = p.dqs + t * K, *dkt = p.dks + t * K;
                const float a = dP[t * L + j], m = dM[t * L + j];
                for (int64_t x = 0; x < K; x++) {
                    const float ek = ej[x] * kj[x];
                    dqt[x] += a * ek;
                    dkt[x] += m * ek;
                    dyj[x] += ej[x] * (a * qt[x] + m * kt[x]);
                }
            }
        }
    }
    close_rows(L, K, q, k, dP, p.dqs, p.dks, p.dys, db, b, de, e, dq, dk, dgam, dgam + (L - 1) * K);
}
