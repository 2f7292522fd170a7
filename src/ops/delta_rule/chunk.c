/* The chunkwise form of the delta rules: the WY (UT-transform)
 * representation of one chunk, forward and (below) backward.
 *
 * Inside a chunk of L tokens with cumulative log-gates gam_t = sum_{s<=t} g_s,
 * b_t = exp(gam_t), the recurrence S_t = a_t S_{t-1} + k_t^T r_t with
 * r_t = beta_t (v_t - a_t k_t S_{t-1}) unrolls to
 *     S_t = b_t S_0 + sum_{j<=t} exp(gam_t - gam_j) k_j^T r_j
 *     r_t + beta_t sum_{j<t} exp(gam_t - gam_j)(k_t.k_j) r_j
 *         = beta_t v_t - beta_t b_t k_t S_0.
 * With Lo = strictly_lower(diag(beta) K K^T (.) Gamma), A = (I + Lo)^{-1}:
 *     R = U - W S_0,   U = A diag(beta) V,   W = A diag(beta b) K,
 *     R = A (diag(beta) V - diag(beta b) K S_0)  (one solve, cpu-dfwd24)
 *     O = scale (diag(b) Q S_0 + (Q K^T (.) Gamma (.) causal mask incl. diagonal) R)
 *     S_L = b_L S_0 + (diag(exp(gam_L - gam)) K)^T R.
 * A is never formed: R (and, for the backward, U and W) come from forward
 * substitution with (I + Lo).
 * Gates appear only as exp of differences gam_t - gam_j (t >= j) or of gam_t
 * itself, all <= 0, so a log-gate of -1e4 (a full reset) underflows to 0
 * instead of overflowing. gam is summed in double: differences of large
 * cumulative sums (after a reset) would otherwise lose float precision. */
#include "delta_rule.h"

#include "../../kernels/isa_builds.h"
#include "../../kernels/vexp.h"

#include <math.h>
#include <string.h>

#if defined(__GNUC__)
#define DELTA_INLINE static inline __attribute__((always_inline))
#else
#define DELTA_INLINE static inline
#endif

size_t la__delta_chunk_work_floats(int64_t C, int64_t K, int64_t V) {
    const size_t c = (size_t)C;
    /* gam (double) + b + eg + Lo + QK + the slot U (R, or U in the keep
     * sweep) + the slot W (b Q, then eg K) + a row of scratch (beta b) */
    return 2 * c + 2 * c + 2 * c * c + c * (size_t)V + c * (size_t)K + c + (size_t)V + 16;
}

/* Row t of Gamma: out[j] = e^{gam_t - gam_j}, j in [0, n), by the vectorised
 * e^x of vexp.h (0.95 ulp; exactly 0 below e^-80). Log-gates are <= 0
 * (validated), so gam never increases and every exponent is <= 0 for
 * j <= t; the difference is taken in double, as before. One libm exp per
 * pair (~2080 per chunk, in the forward, the keep sweep and the backward)
 * was ~8% of the gated forward. Built for each ISA (GATE_BUILDS below)
 * with the same elementwise operations: all give the same bits. The
 * backward's Gm rows; the forward makes Gamma inside gate_mask. */
#define GAMMA_ROW_BODY                                                                             \
    for (int64_t j = 0; j < n; j++) LA__EXP_NONPOS(out[j], (float)(gt - gam[j]))

/* Lo_tj := beta_t Lo_tj Gamma_tj (j < t; Lo holds k_t . k_j on entry) and,
 * when QK is given, QK_tj *= Gamma_tj (j <= t), for every row t of the
 * chunk. In place, so that no pointers may alias (a KK operand beside Lo
 * made GCC version the loops, and the in-place call took the scalar
 * version). Gamma_tj is made where it is used (cpu-gdnf24: before, a row of
 * it was written by gamma_row and read back by a baseline-ISA loop), the
 * same operations in the same order: (beta_t KK_tj) Gamma_tj, and
 * QK_tt *= e^0 = 1. A row is walked up to a multiple of 16 columns (or L):
 * the entries past the triangle are loaded and stored back unchanged (a
 * select, not a branch), so the loop has no scalar remainder on any ISA
 * (rows are 0-63 entries long: the remainders were a third of the pass).
 * There gam_t - gam_j >= 0: the exponent is taken as 0 (e^x of vexp.h is
 * defined for x <= 0 only: a large positive x overflowed its integer
 * exponent, UBSan) and the value is discarded. Without
 * gates (gam == NULL) Gamma = 1 exactly: Lo_tj = beta_t KK_tj and QK is left
 * as it is (x * 1 == x). */
#define GATE_MASK_BODY                                                                             \
    for (int64_t t = 0; t < L; t++) {                                                              \
        const float bt = beta[t];                                                                  \
        float *restrict Lot = Lo + t * L;                                                          \
        if (!gam) {                                                                                \
            for (int64_t j = 0; j < t; j++) Lot[j] = bt * Lot[j];                                  \
            continue;                                                                              \
        }                                                                                          \
        const double gt = gam[t];                                                                  \
        const int64_t n = ((t + 16) & ~(int64_t)15) < L ? ((t + 16) & ~(int64_t)15) : L;          \
        if (QK) {                                                                                  \
            float *restrict QKt = QK + t * L;                                                      \
            for (int64_t j = 0; j < n; j++) {                                                      \
                const float x = (float)(gt - gam[j]);                                              \
                float gm;                                                                          \
                LA__EXP_NONPOS(gm, x < 0.0f ? x : 0.0f);                                           \
                const float qk = QKt[j], lo = Lot[j];                                              \
                QKt[j] = j <= t ? qk * gm : qk;                                                    \
                Lot[j] = j < t ? bt * lo * gm : lo;                                                \
            }                                                                                      \
        } else {                                                                                   \
            for (int64_t j = 0; j < n; j++) {                                                      \
                const float x = (float)(gt - gam[j]);                                              \
                float gm;                                                                          \
                LA__EXP_NONPOS(gm, x < 0.0f ? x : 0.0f);                                           \
                const float lo = Lot[j];                                                           \
                Lot[j] = j < t ? bt * lo * gm : lo;                                                \
            }                                                                                      \
        }                                                                                          \
    }

/* b_t = e^{gam_t}, eg_t = e^{gam_L - gam_t}: the exponents in double, then
 * the e^x of vexp.h, as Gamma's (cpu-gdnf24: 2L libm calls per chunk before,
 * ~0.7% of the gated forward). */
#define GATE_EXPS_BODY                                                                             \
    for (int64_t t = 0; t < L; t++) {                                                              \
        LA__EXP_NONPOS(b[t], (float)gam[t]);                                                       \
        LA__EXP_NONPOS(eg[t], (float)(gam[L - 1] - gam[t]));                                       \
    }

/* The gate loops above, each built for the baseline ISA, AVX2 and AVX-512
 * (512-bit vectors) with if-conversion allowed (LA__VECTORISE: the
 * exponential's selects), and dispatched on la_isa_active(). The same
 * elementwise operations in each build, no contraction: the same bits. */
#if defined(__GNUC__) && defined(__x86_64__)
#define GATE_BUILDS(name, body, params)                                                            \
    LA__VECTORISE static void name##_portable params { body; }                                     \
    LA__VECTORISE LA_ISA_TARGET_AVX2 static void name##_avx2 params { body; }                      \
    LA__VECTORISE LA_ISA_TARGET_AVX512_WIDE static void name##_avx512 params { body; }             \
    static void (*name##_pick(void))params {                                                       \
        const la_isa isa_ = la_isa_active();                                                      \
        return isa_ == LA_ISA_AVX512 ? name##_avx512                                               \
               : isa_ == LA_ISA_AVX2 ? name##_avx2                                                 \
                                     : name##_portable;                                            \
    }
#else
#define GATE_BUILDS(name, body, params)                                                            \
    LA__VECTORISE static void name##_portable params { body; }                                     \
    static void (*name##_pick(void))params { return name##_portable; }
#endif

GATE_BUILDS(gamma_row, GAMMA_ROW_BODY,
            (float *restrict out, double gt, const double *restrict gam, int64_t n))
GATE_BUILDS(gate_exps, GATE_EXPS_BODY,
            (float *restrict b, float *restrict eg, const double *restrict gam, int64_t L))
GATE_BUILDS(gate_mask, GATE_MASK_BODY,
            (float *restrict Lo, float *restrict QK, const float *restrict beta,
             const double *restrict gam, int64_t L))

static void gamma_row(float *out, double gt, const double *gam, int64_t n) {
    gamma_row_pick()(out, gt, gam, n);
}

/* gam: the chunk's cumulative log-gates, NULL without gates. */
static void gate_mask(float *Lo, float *QK, const float *beta, const double *gam, int64_t L) {
    gate_mask_pick()(Lo, QK, beta, gam, L);
}

/* The chunk's gate factors: gam_t = sum_{s<=t} g_s (double), b_t = e^{gam_t},
 * eg_t = e^{gam_L - gam_t} (all 1 without gates). Shared by the forward
 * step and the backward's forward sweep so both give the same bits. */
static void gate_factors(const la__delta_chunk_in *in, double *gam, float *b, float *eg) {
    const int64_t L = in->L;
    double cum = 0;
    for (int64_t t = 0; t < L; t++) {
        if (in->g) cum += (double)in->g[t];
        gam[t] = cum;
    }
    gate_exps_pick()(b, eg, gam, L);
}

/* dst row t = f_t times src row t (rows of n floats, lds apart in src, n
 * apart in dst). Built per ISA (cpu-fwd24): in the baseline build these
 * loops ran 4 floats at a time and store-bound. One product per element:
 * the same bits on every path. */
DELTA_INLINE void scale_rows_body(float *restrict dst, const float *restrict src, int64_t lds,
                                  const float *restrict f, int64_t rows, int64_t n) {
    for (int64_t t = 0; t < rows; t++)
        for (int64_t i = 0; i < n; i++) dst[t * n + i] = f[t] * src[t * lds + i];
}
LA_ISA_BUILDS(static, scale_rows, scale_rows_body,
              (float *restrict dst, const float *restrict src, int64_t lds,
               const float *restrict f, int64_t rows, int64_t n),
              (dst, src, lds, f, rows, n))

/* The rows f_t x_t of a chunk's L x n rows x (contiguous) in dst, or x itself
 * when the op has no gates: every factor is then e^0 = 1 exactly (b and eg
 * of gate_factors), and 1 * x == x, so the product is skipped, not changed. */
static const float *gate_scaled(const la__delta_chunk_in *in, const float *x, const float *f,
                                int64_t n, float *dst) {
    if (!in->g) return x;
    scale_rows(dst, x, n, f, in->L, n);
    return dst;
}

/* X := diag(beta) V - diag(bb) X, row by row (two products and a
 * difference per element, no contraction: the same bits on every path). */
DELTA_INLINE void rhs_rows_body(float *restrict X, const float *restrict v, int64_t ldv,
                                const float *restrict beta, const float *restrict bb,
                                int64_t rows, int64_t n) {
    for (int64_t t = 0; t < rows; t++)
        for (int64_t i = 0; i < n; i++)
            X[t * n + i] = beta[t] * v[t * ldv + i] - bb[t] * X[t * n + i];
}
LA_ISA_BUILDS(static, rhs_rows, rhs_rows_body,
              (float *restrict X, const float *restrict v, int64_t ldv, const float *restrict beta,
               const float *restrict bb, int64_t rows, int64_t n),
              (X, v, ldv, beta, bb, rows, n))

/* R = (I + Lo)^{-1} (diag(beta) V - diag(beta b) K S_0) [L, V], one solve
 * (cpu-dfwd24: before, U and W were solved and R = U - W S_0 formed; the
 * same math, one solve of L^2 K / 2 multiply-adds less per chunk). The
 * chunk step, the keep sweep and the backward's recompute share it: the
 * same bits. bb: L floats of scratch (beta_t b_t). */
static void solve_r(const la__delta_chunk_in *in, const float *Lo, int64_t ldl, const float *b,
                    const float *S0, float *R, float *bb) {
    const int64_t L = in->L, K = in->K, V = in->V, ldv = in->ldv ? in->ldv : V;
    for (int64_t t = 0; t < L; t++) bb[t] = in->beta[t] * b[t];
    in->kr->gemm_nn(L, V, K, 1.0f, in->k, K, S0, V, 0.0f, R, V);
    rhs_rows(R, in->v, ldv, in->beta, bb, L, V);
    in->kr->trsm_llu(L, V, Lo, ldl, R, V);
}

/* U = (I + Lo)^{-1} diag(beta) V (kept for the backward). */
static void solve_u(const la__delta_chunk_in *in, const float *Lo, int64_t ldl, float *U) {
    const int64_t L = in->L, V = in->V, ldv = in->ldv ? in->ldv : V;
    scale_rows(U, in->v, ldv, in->beta, L, V);
    in->kr->trsm_llu(L, V, Lo, ldl, U, V);
}

/* All products run on the micro-kernels (q, k, v rows are contiguous here):
 * K K^T and Q K^T by gemm_nt_tril, then each entry times beta_t Gamma_tj or
 * Gamma_tj; R by solve_r (K S_0 by gemm_nn, trsm_llu with (I + Lo)); b Q S_0
 * by gemm_nn; (Q K^T (.) Gamma) R by gemm_nn_lower; the state update by
 * gemm_tn on the rows eg_j k_j. With kept (a forward that saves for its
 * backward, la_saved): K K^T, U and R are made in kept's slots, in the
 * layout and with the arithmetic of la__delta_chunk_keep (same bits),
 * instead of in place in the work. */
void la__delta_chunk_step(const la__delta_chunk_in *in, float *S, float *o, int64_t ostride,
                          float *kept, float *work) {
    const int64_t L = in->L, K = in->K, V = in->V;
    const float *q = in->q, *k = in->k, *beta = in->beta;
    const la__kernels *kr = in->kr;
    double *gam = (double *)(void *)work; /* work is 64-byte aligned */
    float *b = work + 2 * L, *eg = b + L, *Lo = eg + L, *QK = Lo + L * L, *U = QK + L * L,
          *W = U + L * V, *bb = W + L * K;
    /* KK (raw k_t . k_j), U (kept only) and R: in kept, or in the work */
    float *KK = kept ? kept : Lo, *R = kept ? KK + L * L + L * V : U;

    gate_factors(in, gam, b, eg);
    /* Lo (strictly lower) and QK (lower incl. diagonal), both times Gamma. */
    kr->gemm_nt_tril(L, K, 1, 1.0f, k, K, k, K, 0.0f, KK, L);
    if (o) kr->gemm_nt_tril(L, K, 0, 1.0f, q, K, k, K, 0.0f, QK, L);
    if (kept) memcpy(Lo, KK, (size_t)(L * L) * sizeof(float)); /* gate_mask works in place */
    gate_mask(Lo, o ? QK : NULL, beta, in->g ? gam : NULL, L);
    if (kept) solve_u(in, Lo, L, KK + L * L);
    solve_r(in, Lo, L, b, S, R, bb);
    /* O = scale (diag(b) Q S_0 + (QK (.) Gamma) R), from S_0. */
    if (o) {
        kr->gemm_nn(L, V, K, in->scale, gate_scaled(in, q, b, K, W), K, S, V, 0.0f, o, ostride);
        kr->gemm_nn_lower(L, V, L, in->scale, QK, L, R, V, 1.0f, o, ostride);
    }
    /* S_L = b_L S_0 + (diag(eg) K)^T R: b_L is the product's beta (cpu-dfwd24:
     * one pass over S less; C = b_L S_0 + sum, fused, instead of b_L S_0
     * rounded first; without gates b_L = 1 and C = S_0 + sum as before) */
    la__gemm_tn_block(kr, K, V, L, 1.0f, gate_scaled(in, k, eg, K, W), K, R, V, b[L - 1], S, V);
}

/* The backward's forward sweep over one chunk (no output): the same
 * arithmetic as la__delta_chunk_step with o == NULL, bit for bit, keeping
 * the products the chunk's backward would otherwise recompute:
 *   kept = [KK (L x L, k_t . k_j, strictly lower) | U (L x V) | R (L x V)],
 *   la__delta_chunk_kept_floats(L, K, V) (W, which the backward needs
 *   too, is one solve there: cpu-dfwd24).
 * S1 (may be NULL: only the kept products) receives S_L from S0. */
size_t la__delta_chunk_kept_floats(int64_t L, int64_t K, int64_t V) {
    const size_t l = (size_t)L;
    (void)K;
    return l * l + 2 * l * (size_t)V;
}

void la__delta_chunk_keep(const la__delta_chunk_in *in, const float *S0, float *S1, float *kept,
                          float *work) {
    const int64_t L = in->L, K = in->K, V = in->V;
    const float *k = in->k, *beta = in->beta;
    const la__kernels *kr = in->kr;
    double *gam = (double *)(void *)work;
    float *b = work + 2 * L, *eg = b + L, *Lo = eg + L, *EK = Lo + L * L, *bb = EK + L * K;
    float *KK = kept, *U = KK + L * L, *R = U + L * V;

    gate_factors(in, gam, b, eg);
    kr->gemm_nt_tril(L, K, 1, 1.0f, k, K, k, K, 0.0f, KK, L);
    memcpy(Lo, KK, (size_t)(L * L) * sizeof(float)); /* gate_mask works in place */
    gate_mask(Lo, NULL, beta, in->g ? gam : NULL, L);
    solve_u(in, Lo, L, U);
    solve_r(in, Lo, L, b, S0, R, bb);
    if (!S1) return;
    if (S1 != S0) memcpy(S1, S0, (size_t)(K * V) * sizeof(float));
    la__gemm_tn_block(kr, K, V, L, 1.0f, gate_scaled(in, k, eg, K, EK), K, R, V, b[L - 1], S1,
                      V);
}

/* ---- backward ---------------------------------------------------------
 *
 * Backward of one chunk (notation of the forward above). Given the chunk's
 * start state S_0, dO and the gradient G = dL/dS_L of its end state, it
 * recomputes the chunk's forward quantities and returns the gradients of
 * q, k, v, beta, g and of S_0:
 *
 *   S_L = b_L S_0 + sum_j e_j k_j^T R_j        e_j = exp(gam_L - gam_j)
 *     dS_0 += b_L G, dR_j += e_j k_j G, dk_j += e_j G R_j^T, de_j = k_j G R_j^T
 *   O = s (diag(b) Q S_0 + P R),  P = (Q K^T) (.) Gamma (.) mask (incl. diag)
 *     dS_0 += (diag(b) Q)^T dO~, dq_t += b_t S_0 dO~_t, db_t += q_t S_0 dO~_t,
 *     dP_tj = dO~_t . R_j, dR += P^T dO~  (dO~ = s dO)
 *   R = U - W S_0:  dU = dR, dW = -dR S_0^T, dS_0 -= W^T dR
 *   (I + M) U = diag(beta) V, (I + M) W = diag(beta b) K, M strictly lower:
 *     Yu = (I + M)^{-T} dU, Yw = (I + M)^{-T} dW  (back substitution)
 *     dM_tj = -(Yu_t . U_j + Yw_t . W_j)  (j < t)
 *     dv_t = beta_t Yu_t, dk_t += beta_t b_t Yw_t,
 *     dbeta_t += Yu_t . v_t + b_t Yw_t . k_t, db_t += beta_t Yw_t . k_t
 *   M_tj = beta_t (k_t . k_j) Gamma_tj, P_tj = (q_t . k_j) Gamma_tj:
 *     the products' gradients go to k, q, beta and to Gamma
 *   gates: Gamma_tj = exp(gam_t - gam_j), b_t = exp(gam_t), e_j, b_L give
 *     dgam; gam is the cumulative sum of g, so dg is the reverse cumulative
 *     sum of dgam. Only exponentials of differences <= 0 appear, as in the
 *     forward, so -1e4 resets neither overflow nor give NaN.
 * Cost O(L^2 (K + V) + L K V) per chunk, at matrix-product shapes. */
size_t la__delta_chunk_bwd_work_floats(int64_t C, int64_t K, int64_t V) {
    const size_t c = (size_t)C, k = (size_t)K, v = (size_t)V;
    /* gam, dgam (double); b, e, db, de; Gm, KKd, QKd, dGm, M, T1, T2 (C x C);
     * U, R, dR, Yu (C x V); W, dW, Yw (C x K) */
    return 4 * c + 4 * c + 7 * c * c + 4 * c * v + 3 * c * k + 16;
}

/* <G, S_0> in double, for dbL: each product G_i S_i is exact in double
 * (24 + 24 significant bits), summed in DOT_LANES partial sums of fixed
 * assignment (element i into sum i mod DOT_LANES) and a fixed pairwise tree,
 * so every build gives the same bits (a fused multiply-add would too: the
 * product is exact). Eight sums (one chain per 8 elements, 3-cycle adds)
 * were ~30% of the gated chunk backward's own samples, ~1.5 us per
 * chunk-head; 32 sums are four AVX-512 vectors of doubles (the AVX-512
 * build prefers 512-bit vectors here). */
#define DOT_LANES 32
#define STATE_DOT_BODY                                                                             \
    double ps[DOT_LANES] = {0};                                                                    \
    int64_t i = 0;                                                                                 \
    for (; i + DOT_LANES <= n; i += DOT_LANES)                                                     \
        for (int l = 0; l < DOT_LANES; l++) ps[l] += (double)a[i + l] * b[i + l];                  \
    for (int l = 0; i < n; i++, l++) ps[l] += (double)a[i] * b[i];                                 \
    for (int w = DOT_LANES / 2; w > 0; w /= 2)                                                     \
        for (int l = 0; l < w; l++) ps[l] += ps[l + w];                                            \
    return ps[0]

static double state_dot_base(const float *restrict a, const float *restrict b, int64_t n) {
    STATE_DOT_BODY;
}

#if defined(__GNUC__) && defined(__x86_64__)
#define DELTA_STATE_DOT_AVX 1
__attribute__((target("avx2"))) static double state_dot_avx2(const float *restrict a,
                                                             const float *restrict b, int64_t n) {
    STATE_DOT_BODY;
}
LA_ISA_TARGET_AVX512_WIDE static double state_dot_avx512(const float *restrict a,
                                                         const float *restrict b, int64_t n) {
    STATE_DOT_BODY;
}
#endif

static double state_dot(const float *a, const float *b, int64_t n) {
#ifdef DELTA_STATE_DOT_AVX
    const la_isa isa = la_isa_active();
    if (isa == LA_ISA_AVX512) return state_dot_avx512(a, b, n);
    if (isa == LA_ISA_AVX2) return state_dot_avx2(a, b, n);
#endif
    return state_dot_base(a, b, n);
}

#define DGAM_LANES 8 /* the gate gradient's row sums, below */

/* Every product runs on the micro-kernels (q, k, v, dO, dq, dk rows are
 * contiguous): the [L,L] matrices by gemm_nt_tril, the solves by trsm_llu,
 * the products with S_0 and G by gemm_nt / gemm_tn, the masked products by
 * gemm_nn_lower / gemm_tn. Element-wise gate factors are applied between. */
DELTA_INLINE void chunk_backward_body(const la__delta_chunk_in *in, const float *S0, float *kept,
                                      float *G, const float *dO, float *dq, float *dk, float *dv,
                                      float *dbeta, float *dg, float *work) {
    const int64_t L = in->L, K = in->K, V = in->V, ldv = in->ldv ? in->ldv : V;
    const float *q = in->q, *k = in->k, *v = in->v, *beta = in->beta;
    const la__kernels *kr = in->kr;
    const int gated = in->g != NULL;
    double *gam = (double *)(void *)work, *dgam = gam + L;
    float *b = work + 4 * L, *e = b + L, *db = e + L, *de = db + L;
    float *Gm = de + L, *KKd = Gm + L * L, *QKd = KKd + L * L, *dGm = QKd + L * L;
    float *Mm = dGm + L * L, *T1 = Mm + L * L, *T2 = T1 + L * L;
    float *U = T2 + L * L, *R = U + L * V, *dR = R + L * V, *Yu = dR + L * V;
    float *W = Yu + L * V, *dW = W + L * K, *Yw = dW + L * K;

    /* ---- recompute the forward of the chunk ---- */
    double cum = 0;
    for (int64_t t = 0; t < L; t++) {
        if (gated) cum += (double)in->g[t];
        gam[t] = cum;
        dgam[t] = 0;
    }
    gate_exps_pick()(b, e, gam, L); /* the forward's b and eg (1 without gates) */
    for (int64_t t = 0; t < L; t++) db[t] = de[t] = 0;
    kr->gemm_nt_tril(L, K, 0, 1.0f, q, K, k, K, 0.0f, QKd, L);
    if (kept) { /* the forward sweep's products (la__delta_chunk_keep), same bits */
        KKd = kept;
        U = KKd + L * L;
        R = U + L * V;
    } else {
        kr->gemm_nt_tril(L, K, 1, 1.0f, k, K, k, K, 0.0f, KKd, L);
    }
    /* Gm, dGm and M row by row in three separate loops over disjoint
     * (restrict) rows, so each vectorises (one loop storing Gm and reading it
     * back through possibly aliased pointers ran one element at a time: ~25%
     * of this function's samples, cpu-delta11). */
    for (int64_t t = 0; t < L; t++) {
        float *restrict Gmt = Gm + t * L, *restrict dGmt = dGm + t * L, *restrict Mmt = Mm + t * L;
        const float *restrict KKt = KKd + t * L;
        const float bt = beta[t];
        if (gated)
            gamma_row(Gmt, gam[t], gam, t + 1);
        else
            for (int64_t j = 0; j <= t; j++) Gmt[j] = 1.0f;
        if (gated) /* dGm feeds only the gate gradient */
            for (int64_t j = 0; j <= t; j++) dGmt[j] = 0;
        /* M_tj = beta_t (k_t . k_j) Gamma_tj, strictly lower */
        for (int64_t j = 0; j < t; j++) Mmt[j] = bt * KKt[j] * Gmt[j];
        Mmt[t] = 0.0f;
    }
    /* W = (I + M)^{-1} diag(beta b) K (not kept: cpu-dfwd24); U and R as
     * la__delta_chunk_keep unless kept (M has Lo's bits) */
    for (int64_t t = 0; t < L; t++) {
        const float bb = beta[t] * b[t];
        for (int64_t i = 0; i < K; i++) W[t * K + i] = bb * k[t * K + i];
    }
    kr->trsm_llu(L, K, Mm, L, W, K);
    if (!kept) {
        solve_u(in, Mm, L, U);
        solve_r(in, Mm, L, b, S0, R, T1);
    }

    /* ---- S_L = b_L S_0 + sum_j e_j k_j^T R_j ---- */
    /* dbL = <G, S_0> (gated only: DeltaNet has no gate to differentiate),
     * state_dot's fixed partial sums (one chain of K V dependent double
     * additions cost ~8% of the chunk's backward, eight chains still ~1.5 us) */
    const double dbL = gated ? state_dot(G, S0, K * V) : 0;
    /* dR_j = e_j k_j G; Yw (work) = R G^T: dk_j += e_j (G R_j^T), de_j = k_j . (G R_j^T) */
    kr->gemm_nn(L, V, K, 1.0f, k, K, G, V, 0.0f, dR, V);
    kr->gemm_nt(L, K, V, 1.0f, R, V, G, V, 0.0f, Yw, K);
    for (int64_t j = 0; j < L; j++) {
        for (int64_t c = 0; c < V; c++) dR[j * V + c] *= e[j];
        for (int64_t i = 0; i < K; i++) dk[j * K + i] += e[j] * Yw[j * K + i];
        de[j] = la__delta_dot(k + j * K, Yw + j * K, K);
    }
    if (gated)
        for (int64_t i = 0; i < K * V; i++) G[i] *= b[L - 1];
    /* From here G accumulates dS_0. */

    /* ---- O = s (diag(b) Q S_0 + P R) ---- */
    /* Yw (work) = dO~ S_0^T: dq_t += b_t (S_0 dO~_t), db_t += q_t . (S_0 dO~_t) */
    kr->gemm_nt(L, K, V, 1.0f, dO, V, S0, V, 0.0f, Yw, K);
    for (int64_t t = 0; t < L; t++) {
        db[t] += la__delta_dot(q + t * K, Yw + t * K, K);
        for (int64_t i = 0; i < K; i++) {
            dq[t * K + i] += b[t] * Yw[t * K + i];
            Yw[t * K + i] = b[t] * q[t * K + i];
        }
    }
    la__gemm_tn_block(kr, K, V, L, 1.0f, Yw, K, dO, V, 1.0f, G, V); /* dS_0 += (diag(b) Q)^T dO~ */
    /* dR += P^T dO~, P = QKd (.) Gm (lower incl. diagonal) */
    for (int64_t t = 0; t < L; t++)
        for (int64_t j = 0; j <= t; j++) T1[t * L + j] = QKd[t * L + j] * Gm[t * L + j];
    for (int64_t t = 0; t < L; t++)
        for (int64_t j = t + 1; j < L; j++) T1[t * L + j] = 0.0f;
    la__gemm_tn_lower_acc(kr, L, V, T1, L, dO, V, dR, V); /* kernels.h */
    /* dP_tj = dO~_t . R_j; dGm += dP QKd; dq += (dP Gm) K, dk += (dP Gm)^T Q */
    kr->gemm_nt_tril(L, V, 0, 1.0f, dO, V, R, V, 0.0f, T1, L);
    if (gated) /* without gates Gm == 1 (T1 unchanged) and dGm is unused */
        for (int64_t t = 0; t < L; t++)
            for (int64_t j = 0; j <= t; j++) {
                dGm[t * L + j] += T1[t * L + j] * QKd[t * L + j];
                T1[t * L + j] *= Gm[t * L + j];
            }
    kr->gemm_nn_lower(L, K, L, 1.0f, T1, L, k, K, 1.0f, dq, K);
    la__gemm_tn_lower_acc(kr, L, K, T1, L, q, K, dk, K);

    /* ---- R = U - W S_0: dW = -dR S_0^T, dS_0 -= W^T dR ---- */
    kr->gemm_nt(L, K, V, -1.0f, dR, V, S0, V, 0.0f, dW, K);
    la__gemm_tn_block(kr, K, V, L, -1.0f, W, K, dR, V, 1.0f, G, V);

    /* ---- triangular solves: Y = (I + M)^{-T} dX (in place in dR, dW) ---- */
    la__trsm_llu_transposed(kr, L, V, Mm, T1, dR, Yu);
    la__trsm_llu_transposed(kr, L, K, Mm, T1, dW, Yw);
    float *YU = dR, *YW = dW;
    /* dM_tj = -(Yu_t . U_j + Yw_t . W_j), j < t */
    kr->gemm_nt_tril(L, V, 1, -1.0f, YU, V, U, V, 0.0f, T2, L);
    kr->gemm_nt_tril(L, K, 1, -1.0f, YW, K, W, K, 1.0f, T2, L);
    /* v's rows may be the caller's, in place (ldv floats apart): the
     * driver prefetched them. (dv written the same way, in place, stalled
     * on its stores: the backward ran 3-9% slower than through a
     * contiguous dv and a row copy; prefetching v's rows here stalled on
     * the prefetches, cpu-delta11.) */
    for (int64_t t = 0; t < L; t++) {
        const float *Yut = YU + t * V, *Ywt = YW + t * K, *vt = v + t * ldv, *kt = k + t * K;
        const float yv = la__delta_dot(Yut, vt, V), yk = la__delta_dot(Ywt, kt, K);
        for (int64_t c = 0; c < V; c++) dv[t * V + c] = beta[t] * Yut[c];
        const float bb = beta[t] * b[t];
        for (int64_t i = 0; i < K; i++) dk[t * K + i] += bb * Ywt[i];
        float dbt = yv + b[t] * yk;
        db[t] += beta[t] * yk;
        /* M_tj = beta_t (k_t . k_j) Gamma_tj: T2 becomes dM_tj beta_t Gamma_tj */
        if (gated) /* dM_tj beta_t (k_t . k_j) into dGm, as dm beta kk */
            for (int64_t j = 0; j < t; j++)
                dGm[t * L + j] += T2[t * L + j] * beta[t] * KKd[t * L + j];
        for (int64_t j = 0; j < t; j++) {
            const float dm = T2[t * L + j];
            const float kk = KKd[t * L + j], gm = Gm[t * L + j];
            dbt += dm * kk * gm;
            T2[t * L + j] = dm * beta[t] * gm;
        }
        dbeta[t] = dbt;
    }
    kr->gemm_nn_lower(L, K, L, 1.0f, T2, L, k, K, 1.0f, dk, K);
    la__gemm_tn_lower_acc(kr, L, K, T2, L, k, K, dk, K);

    /* ---- gates ---- */
    if (!gated) return;
    for (int64_t t = 0; t < L; t++) {
        /* x_j = dGm_tj Gm_tj (j < t; the diagonal Gamma_tt = 1 is constant):
         * dgam[t] += sum_j x_j, dgam[j] -= x_j. The row sum in DGAM_LANES
         * partial sums (element j into sum j mod DGAM_LANES, a fixed tree):
         * one chain of dependent double additions kept this loop scalar,
         * ~13% of the gated chunk backward's own samples (the products are
         * exact in double, so only the order of the row sum changed) */
        const float *restrict dGmt = dGm + t * L, *restrict Gmt = Gm + t * L;
        double *restrict dgm = dgam;
        double ps[DGAM_LANES] = {0};
        int64_t j = 0;
        for (; j + DGAM_LANES <= t; j += DGAM_LANES)
            for (int l = 0; l < DGAM_LANES; l++) {
                const double x = (double)dGmt[j + l] * Gmt[j + l];
                ps[l] += x;
                dgm[j + l] -= x;
            }
        for (int l = 0; j < t; j++, l++) {
            const double x = (double)dGmt[j] * Gmt[j];
            ps[l] += x;
            dgm[j] -= x;
        }
        for (int w = DGAM_LANES / 2; w > 0; w /= 2)
            for (int l = 0; l < w; l++) ps[l] += ps[l + w];
        dgam[t] = (dgam[t] + ps[0]) + (double)db[t] * b[t];
        const double y = (double)de[t] * e[t];
        dgam[L - 1] += y;
        dgam[t] -= y;
    }
    dgam[L - 1] += dbL * b[L - 1];
    double acc = 0;
    for (int64_t t = L - 1; t >= 0; t--) {
        acc += dgam[t];
        dg[t] = (float)acc;
    }
}

/* The body built for the baseline ISA, AVX2 and AVX-512 (its element loops
 * between the products: the dot products, row scalings, the Gm / M set-up
 * and the dbeta rows ran 4 floats at a time on the baseline build, ~10% of
 * the backward, cpu-delta12); elementwise the same operations in the same
 * order, no contraction: the same bits on every path. */
LA_ISA_BUILDS(, la__delta_chunk_backward, chunk_backward_body,
              (const la__delta_chunk_in *in, const float *S0, float *kept, float *G,
               const float *dO, float *dq, float *dk, float *dv, float *dbeta, float *dg,
               float *work),
              (in, S0, kept, G, dO, dq, dk, dv, dbeta, dg, work))
