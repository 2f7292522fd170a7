/* SIMD micro-kernels (src/kernels): every path this CPU can run (portable,
 * AVX2, ...) against a float64 product, at odd sizes and leading
 * dimensions wider than the rows.
 *
 * Bounds. Each output element is one float32 sum of k products (in some
 * order, with or without fused multiply-add), then alpha * sum, then
 * + beta * C. Standard rounding analysis (Higham, ch. 3) bounds the error of
 * any such evaluation by gamma_{k+3} * (|alpha| sum_p |a_ip||b_pj| +
 * |beta||c_ij|), gamma_j = j u / (1 - j u), u = 2^-24. We assert
 *     |C - C_exact| <= (k + 3) u (1 + 1e-3) (|alpha| |A||B| + |beta| |C0|)
 * elementwise (the 1e-3 covers the gamma denominator, k <= 129). This is
 * the worst case: a product that drops, repeats or misplaces one term
 * breaks it by orders of magnitude.
 * Triangular solves are backward stable (Higham, thm 8.5): the computed x
 * satisfies |b - L x| <= gamma_{n+1} (|b| + |L||x|) elementwise for any
 * order of the n-term sums (blocked or not); we assert that residual with
 * (n + 3) u (1 + 1e-3), and for the inverse the same per column of L X = I.
 *
 * Also checked: overwrite mode never reads C (NaN prefill), nothing beyond a
 * row's width is read (NaN there would poison the sums) or written
 * (sentinels there must survive), the causal mask writes exact zeros
 * above it, and results do not depend on buffer alignment. */
#include "core/internal.h"
#include "harness.h"
#include "kernels/kernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const int64_t sizes[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 64, 65, 100, 128, 129};
#define N_SIZES ((int)(sizeof sizes / sizeof sizes[0]))
#define U_F32 (1.0 / 16777216.0) /* 2^-24 */
#define SENTINEL 777.25f

static la_rng rng;

/* A stored matrix: rows x cols floats with row stride ld >= cols; exactly
 * (rows-1)*ld + cols floats are allocated so ASan sees over-reads. */
typedef struct mat {
    int64_t rows, cols, ld;
    float *x;
    size_t len;
} mat;

static mat mat_new(int64_t rows, int64_t cols, int64_t pad) {
    mat a = {rows, cols, cols + pad, NULL, 0};
    a.len = rows > 0 && cols > 0 ? (size_t)((rows - 1) * a.ld + cols) : 0;
    a.x = th_nan_floats(a.len);
    return a;
}

/* Data area: N(0,1) (or copy of src); padding: pad_value. */
static void mat_fill(mat *a, float pad_value, int random) {
    for (size_t t = 0; t < a->len; t++) a->x[t] = pad_value;
    if (!random) return;
    for (int64_t i = 0; i < a->rows; i++)
        ref_fill_normal(a->x + i * a->ld, (size_t)a->cols, &rng, 1.0);
}

static int padding_is(const mat *a, float v) {
    for (int64_t i = 0; i + 1 < a->rows; i++)
        for (int64_t j = a->cols; j < a->ld; j++)
            if (memcmp(&a->x[i * a->ld + j], &v, sizeof v) != 0) return 0;
    return 1;
}

/* ---- dispatch ------------------------------------------------------- */

static void test_dispatch(void) {
    la_isa best = la_cpu_best_isa();
    CHECK(best >= LA_ISA_PORTABLE && best <= LA_ISA_AVX512, "best isa %d in range", (int)best);
    CHECK(strcmp(la_isa_name(LA_ISA_PORTABLE), "portable") == 0, "name portable");
    CHECK(strcmp(la_isa_name(LA_ISA_AVX2), "avx2") == 0, "name avx2");
    CHECK(strcmp(la_isa_name(LA_ISA_AVX512), "avx512") == 0, "name avx512");
    CHECK(strcmp(la_isa_name((la_isa)42), "unknown") == 0, "name of an unknown value");
    for (int i = LA_ISA_PORTABLE; i <= LA_ISA_AVX512; i++) {
        const la__kernels *kr = la__kernels_for((la_isa)i);
        CHECK(kr != NULL && (int)kr->isa <= i && kr->isa <= best,
              "kernels_for(%s) runs %s, not above the request or the CPU", la_isa_name((la_isa)i),
              kr ? la_isa_name(kr->isa) : "NULL");
        CHECK(kr->gemm_nn && kr->gemm_nt && kr->gemm_tn && kr->gemm_nn_lower && kr->gemm_nt_tril &&
                  kr->gemm_nn_tril && kr->transpose && kr->trsm_llu && kr->trinv_llu,
              "table %s complete", la_isa_name(kr->isa));
    }
    CHECK(la__kernels_for(LA_ISA_PORTABLE)->isa == LA_ISA_PORTABLE, "portable always there");
    CHECK(la__kernels_for((la_isa)99)->isa == la__kernels_for(best)->isa,
          "a request above the CPU falls back to the best path");
    CHECK(la__isa_from_name("portable") == LA_ISA_PORTABLE &&
              la__isa_from_name("AVX2") == LA_ISA_AVX2 &&
              la__isa_from_name("Avx512") == LA_ISA_AVX512,
          "LINATTN_ISA names parse, any case");
    CHECK(la__isa_from_name(NULL) < 0 && la__isa_from_name("") < 0 &&
              la__isa_from_name("avx") < 0 && la__isa_from_name("avx2 ") < 0 &&
              la__isa_from_name("sse") < 0,
          "unset or unknown LINATTN_ISA is ignored");
    const la__kernels *def = la__kernels_default();
    CHECK(def == la__kernels_default() && def->isa == la_isa_active(), "default is stable");
    const char *env = getenv("LINATTN_ISA");
    int want = la__isa_from_name(env);
    CHECK(def == la__kernels_for(want < 0 ? best : (la_isa)want),
          "default path = LINATTN_ISA capped by the CPU, else the best");
    printf("cpu best isa: %s, active: %s, LINATTN_ISA=%s\n", la_isa_name(best),
           la_isa_name(la_isa_active()), env ? env : "(unset)");
}

/* ---- products ------------------------------------------------------- */

enum { NN, NT, TN, NN_LOWER, N_KINDS };
static const char *kind_name[N_KINDS] = {"gemm_nn", "gemm_nt", "gemm_tn", "gemm_nn_lower"};

static la__gemm_fn kind_fn(const la__kernels *kr, int kind) {
    switch (kind) {
    case NN: return kr->gemm_nn;
    case NT: return kr->gemm_nt;
    case TN: return kr->gemm_tn;
    default: return kr->gemm_nn_lower;
    }
}

/* Exact-ish product and its magnitude |A||B| in float64. Element (i, p)
 * of op(A) is A[i*ai + p*ap], (p, j) of op(B) is B[p*bp + j*bj]. */
static void ref_product(int64_t m, int64_t n, int64_t k, const float *A, int64_t ai, int64_t ap,
                        const float *B, int64_t bp, int64_t bj, double *P, double *mag) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0, g = 0;
            for (int64_t p = 0; p < k; p++) {
                double t = (double)A[i * ai + p * ap] * (double)B[p * bp + j * bj];
                s += t;
                g += fabs(t);
            }
            P[i * n + j] = s;
            mag[i * n + j] = g;
        }
}

/* Worst ratio |C - want| / bound over the matrix (inf for NaN or an
 * unwanted nonzero); above the mask (j >= i + tril when tril >= 0) the
 * element must be exactly 0. */
static double ratio_vs_ref(const mat *C, const float *C0, int64_t k, float alpha, float beta,
                           const double *P, const double *mag, int tril) {
    double worst = 0;
    double f = (double)(k + 3) * U_F32 * (1 + 1e-3);
    for (int64_t i = 0; i < C->rows; i++)
        for (int64_t j = 0; j < C->cols; j++) {
            double got = C->x[i * C->ld + j];
            size_t t = (size_t)(i * C->cols + j);
            if (tril >= 0 && j >= i + tril) {
                if (got != 0.0 || signbit(got)) return INFINITY;
                continue;
            }
            double c0 = C0 ? C0[t] : 0.0;
            double want = (double)alpha * P[t] + (double)beta * c0;
            double tol = f * (fabs(alpha) * mag[t] + fabs(beta) * fabs(c0));
            double err = fabs(got - want);
            if (!(err == err)) return INFINITY;
            double r = err == 0 ? 0 : tol > 0 ? err / tol : INFINITY;
            if (r > worst) worst = r;
        }
    return worst;
}

/* Scalings exercised in rotation: overwrite, accumulate, general. */
static const float alphas[3] = {1.0f, -0.75f, 1.5f};
static const float betas[3] = {0.0f, 1.0f, -0.5f};

typedef struct worst_t {
    double ratio;
    int64_t m, n, k;
} worst_t;

static void note(worst_t *w, double r, int64_t m, int64_t n, int64_t k) {
    if (!(r <= w->ratio)) *w = (worst_t){r, m, n, k};
}

/* AVX-512 runs the AVX2 path's operations at twice the width (same k
 * blocks, same order, fused multiply-adds on both): the same bits. */
static int n_simd_compared, n_simd_same;

/* One shape of one product kind on every runnable path. */
static void check_gemm_shape(int kind, int64_t m, int64_t n, int64_t k, int variant, int64_t wide,
                             const la__kernels **paths, int n_paths, worst_t *worst, int *pad_ok) {
    /* leading dims wider than rows; `wide` adds to them (rows far apart, as
     * in a [B,T,H,D] tensor, take other code paths) */
    int64_t pad = 1 + (m + 2 * n + 3 * k) % 7 + wide;
    int64_t ar = kind == TN ? k : m, ac = kind == TN ? m : k;
    int64_t br = kind == NT ? n : k, bc = kind == NT ? k : n;
    mat A = mat_new(ar, ac, pad), B = mat_new(br, bc, pad + 2), C = mat_new(m, n, pad + 1);
    mat_fill(&A, NAN, 1);
    mat_fill(&B, NAN, 1);
    if (kind == NN_LOWER) /* A lower triangular (m == k): explicit zeros above */
        for (int64_t i = 0; i < m; i++)
            for (int64_t p = i + 1; p < k; p++) A.x[i * A.ld + p] = 0.0f;
    int64_t ai = kind == TN ? 1 : A.ld, ap = kind == TN ? A.ld : 1;
    int64_t bp = kind == NT ? 1 : B.ld, bj = kind == NT ? B.ld : 1;
    double *P = th_doubles((size_t)(m * n)), *mag = th_doubles((size_t)(m * n));
    ref_product(m, n, k, A.x, ai, ap, B.x, bp, bj, P, mag);
    float alpha = alphas[variant], beta = betas[variant];
    float *C0 = NULL;
    if (beta != 0.0f) {
        C0 = th_rand_floats((size_t)(m * n), &rng, 1.0);
    }
    float *c_avx2 = NULL; /* the AVX2 result, to compare with AVX-512's bits */
    for (int q = 0; q < n_paths; q++) {
        mat_fill(&C, SENTINEL, 0); /* padding: sentinels; data below */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) C.x[i * C.ld + j] = C0 ? C0[i * n + j] : NAN;
        kind_fn(paths[q], kind)(m, n, k, alpha, A.x, A.ld, B.x, B.ld, beta, C.x, C.ld);
        note(&worst[q], ratio_vs_ref(&C, C0, k, alpha, beta, P, mag, -1), m, n, k);
        *pad_ok &= padding_is(&C, SENTINEL);
        const size_t bytes = C.len * sizeof(float);
        if (paths[q]->isa == LA_ISA_AVX2 && (c_avx2 = malloc(bytes))) memcpy(c_avx2, C.x, bytes);
        if (paths[q]->isa == LA_ISA_AVX512 && c_avx2) {
            n_simd_compared++;
            n_simd_same += memcmp(c_avx2, C.x, bytes) == 0;
        }
    }
    free(c_avx2);
    free(C0);
    free(P);
    free(mag);
    free(A.x);
    free(B.x);
    free(C.x);
}

static void test_gemm(const la__kernels **paths, int n_paths) {
    for (int kind = 0; kind < N_KINDS; kind++) {
        worst_t worst[4] = {{0, 0, 0, 0}};
        int pad_ok = 1, variant = 0;
        for (int a = 0; a < N_SIZES; a++)
            for (int b = 0; b < N_SIZES; b++)
                for (int c = 0; c < N_SIZES; c++) {
                    int64_t m = sizes[a], n = sizes[b], k = sizes[c];
                    if (kind == NN_LOWER && (c != a)) continue; /* square A */
                    check_gemm_shape(kind, m, n, k, variant, 0, paths, n_paths, worst, &pad_ok);
                    variant = (variant + 1) % 3;
                }
        /* Past the AVX2 blocking: k > KC = 256 (C accumulated over k blocks),
         * m > MC = 132 (several row blocks). */
        static const int64_t big[][3] = {
            {200, 17, 300}, {13, 40, 513}, {140, 70, 260}, {300, 33, 300}, {133, 129, 7}};
        for (int t = 0; t < 5; t++) {
            int64_t m = big[t][0], n = big[t][1], k = kind == NN_LOWER ? m : big[t][2];
            check_gemm_shape(kind, m, n, k, t % 3, 0, paths, n_paths, worst, &pad_ok);
        }
        /* rows >= 512 floats apart (as in an 8-head [B,T,H,K] tensor) */
        static const int64_t far[][4] = {{64, 128, 128, 1024 - 128},
                                         {65, 33, 129, 600},
                                         {7, 17, 100, 900},
                                         {133, 20, 300, 500},
                                         {140, 40, 140, 520}};
        for (int t = 0; t < 5; t++) {
            int64_t m = far[t][0], n = far[t][1], k = kind == NN_LOWER ? m : far[t][2];
            check_gemm_shape(kind, m, n, k, t % 3, far[t][3], paths, n_paths, worst, &pad_ok);
        }
        for (int q = 0; q < n_paths; q++) {
            CHECK(worst[q].ratio <= 1.0, "%s %s: error / bound = %.3g at m=%lld n=%lld k=%lld",
                  kind_name[kind], la_isa_name(paths[q]->isa), worst[q].ratio,
                  (long long)worst[q].m, (long long)worst[q].n, (long long)worst[q].k);
            printf("%-14s %-8s max error / bound %.3f\n", kind_name[kind],
                   la_isa_name(paths[q]->isa), worst[q].ratio);
        }
        CHECK(pad_ok, "%s: nothing written beyond a row of C", kind_name[kind]);
    }
}

/* cpu-kpack22: the path's transpose gives Bᵀ exactly (into a row stride
 * that is a multiple of 16 on a 64-byte boundary for even n, the AVX-512
 * path's in-place case, else n + 3), and gemm_nn_tril on it gives
 * gemm_nt_tril's bits (Cref) with the same C prefill. */
static int n_nn_tril, n_nn_tril_same, n_transpose_exact;
static void nn_tril_same(const la__kernels *kr, int64_t n, int64_t k, int strict, float alpha,
                         const mat *A, const mat *B, float beta, const float *C0, const mat *Cref) {
    const int64_t ldt = n % 2 == 0 ? (n + 15) / 16 * 16 : n + 3;
    float *bt = aligned_alloc(64, (size_t)((k * ldt + 15) / 16 * 16) * sizeof(float));
    mat C = mat_new(n, n, Cref->ld - n);
    if (!bt || !C.x) {
        CHECK(0, "nn_tril_same: out of memory");
        free(bt), free(C.x);
        return;
    }
    for (int64_t t = 0; t < k * ldt; t++) bt[t] = NAN;
    kr->transpose(n, k, B->x, B->ld, bt, ldt);
    int exact = 1;
    for (int64_t p = 0; p < k; p++) {
        for (int64_t j = 0; j < n; j++)
            exact &= memcmp(&bt[p * ldt + j], &B->x[j * B->ld + p], sizeof(float)) == 0;
        for (int64_t j = n; j < ldt; j++) exact &= isnan(bt[p * ldt + j]) != 0; /* padding kept */
    }
    n_transpose_exact += exact;
    mat_fill(&C, SENTINEL, 0);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) C.x[i * C.ld + j] = C0 ? C0[i * n + j] : NAN;
    kr->gemm_nn_tril(n, k, strict, alpha, A->x, A->ld, bt, ldt, beta, C.x, C.ld);
    n_nn_tril++;
    n_nn_tril_same += memcmp(C.x, Cref->x, C.len * sizeof(float)) == 0;
    free(bt), free(C.x);
}

static void test_gemm_nt_tril(const la__kernels **paths, int n_paths) {
    for (int strict = 0; strict <= 1; strict++) {
        worst_t worst[4] = {{0, 0, 0, 0}};
        int pad_ok = 1, variant = 0;
        /* every pair of sizes, then past the AVX2 blocking (k > 256, n > 132),
         * then rows >= 512 floats apart (as in an 8-head [B,T,H,K] tensor) */
        static const int64_t big[][3] = {{140, 270, 0},  {300, 20, 0},  {40, 600, 0},
                                         {64, 128, 900}, {65, 33, 600}, {140, 270, 512}};
        for (int a = 0; a < N_SIZES + 1; a++)
            for (int c = 0; c < (a < N_SIZES ? N_SIZES : 6); c++) {
                int64_t n = a < N_SIZES ? sizes[a] : big[c][0];
                int64_t k = a < N_SIZES ? sizes[c] : big[c][1];
                int64_t pad = 1 + (n + k) % 5 + (a < N_SIZES ? 0 : big[c][2]);
                mat A = mat_new(n, k, pad), B = mat_new(n, k, pad + 3), C = mat_new(n, n, pad);
                mat_fill(&A, NAN, 1);
                mat_fill(&B, NAN, 1);
                double *P = th_doubles((size_t)(n * n)), *mag = th_doubles((size_t)(n * n));
                ref_product(n, n, k, A.x, A.ld, 1, B.x, 1, B.ld, P, mag);
                float alpha = alphas[variant], beta = betas[variant];
                float *C0 = beta != 0.0f ? th_rand_floats((size_t)(n * n), &rng, 1.0) : NULL;
                float *c_avx2 = NULL;
                for (int q = 0; q < n_paths; q++) {
                    mat_fill(&C, SENTINEL, 0);
                    for (int64_t i = 0; i < n; i++)
                        for (int64_t j = 0; j < n; j++)
                            C.x[i * C.ld + j] = C0 ? C0[i * n + j] : NAN;
                    paths[q]->gemm_nt_tril(n, k, strict, alpha, A.x, A.ld, B.x, B.ld, beta, C.x,
                                           C.ld);
                    nn_tril_same(paths[q], n, k, strict, alpha, &A, &B, beta, C0, &C);
                    note(&worst[q], ratio_vs_ref(&C, C0, k, alpha, beta, P, mag, strict ? 0 : 1), n,
                         n, k);
                    pad_ok &= padding_is(&C, SENTINEL);
                    /* cpu-gemm: AVX-512 (8-row steps) == AVX2 (6-row tiles), bit for bit */
                    const size_t bytes = C.len * sizeof(float);
                    if (paths[q]->isa == LA_ISA_AVX2 && !c_avx2 && (c_avx2 = malloc(bytes)))
                        memcpy(c_avx2, C.x, bytes);
                    if (paths[q]->isa == LA_ISA_AVX512 && c_avx2) {
                        n_simd_compared++;
                        n_simd_same += memcmp(c_avx2, C.x, bytes) == 0;
                    }
                }
                free(c_avx2);
                c_avx2 = NULL;
                variant = (variant + 1) % 3;
                free(C0);
                free(P);
                free(mag);
                free(A.x);
                free(B.x);
                free(C.x);
            }
        for (int q = 0; q < n_paths; q++) {
            CHECK(worst[q].ratio <= 1.0,
                  "gemm_nt_tril strict=%d %s: error / bound = %.3g (or nonzero above the "
                  "mask) at n=%lld k=%lld",
                  strict, la_isa_name(paths[q]->isa), worst[q].ratio, (long long)worst[q].n,
                  (long long)worst[q].k);
            printf("gemm_nt_tril%s %-8s max error / bound %.3f\n", strict ? "<" : "=",
                   la_isa_name(paths[q]->isa), worst[q].ratio);
        }
        CHECK(pad_ok, "gemm_nt_tril strict=%d: nothing written beyond a row", strict);
    }
    CHECK(n_nn_tril > 0 && n_nn_tril_same == n_nn_tril,
          "gemm_nn_tril on Bᵀ == gemm_nt_tril bit for bit (C's padding too) in %d of %d products",
          n_nn_tril_same, n_nn_tril);
    CHECK(n_transpose_exact == n_nn_tril, "transpose exact in %d of %d", n_transpose_exact,
          n_nn_tril);
    printf("gemm_nn_tril == gemm_nt_tril bitwise: %d products\n", n_nn_tril);
}

/* k == 0: C = beta * C, or 0 when beta == 0 (C not read). */
static void test_empty_k(const la__kernels **paths, int n_paths) {
    for (int q = 0; q < n_paths; q++) {
        float C[6], A[1] = {NAN}, B[1] = {NAN};
        for (int i = 0; i < 6; i++) C[i] = NAN;
        paths[q]->gemm_nn(2, 3, 0, 1.0f, A, 1, B, 3, 0.0f, C, 3);
        int ok = 1;
        for (int i = 0; i < 6; i++) ok &= C[i] == 0.0f;
        for (int i = 0; i < 6; i++) C[i] = (float)i;
        paths[q]->gemm_nt(2, 3, 0, 1.0f, A, 1, B, 1, 0.5f, C, 3);
        for (int i = 0; i < 6; i++) ok &= C[i] == 0.5f * (float)i;
        CHECK(ok, "%s: k = 0 gives beta * C", la_isa_name(paths[q]->isa));
    }
}

/* Same inputs at other alignments give the same bits. */
static void test_alignment(const la__kernels **paths, int n_paths) {
    int64_t m = 64, n = 100, k = 65;
    float *base = th_rand_floats((size_t)(m * k + k * n + 16), &rng, 1.0);
    float *ref = th_nan_floats((size_t)(m * n)), *buf = th_nan_floats((size_t)(m * n + 8));
    for (int q = 0; q < n_paths; q++)
        for (int kind = 0; kind < 3; kind++) {
            /* the same numbers copied to offsets 0..7 */
            float *src = th_nan_floats((size_t)(m * k + k * n + 8));
            int same = 1;
            for (int off = 0; off < 8; off++) {
                memcpy(src + off, base, (size_t)(m * k + k * n) * sizeof(float));
                const float *A = src + off, *B = src + off + m * k;
                int64_t lda = kind == TN ? m : k, ldb = kind == NT ? k : n;
                kind_fn(paths[q], kind)(m, n, k, 1.0f, A, lda, B, ldb, 0.0f, buf + off, n);
                if (off == 0)
                    memcpy(ref, buf, (size_t)(m * n) * sizeof(float));
                else
                    same &= th_bitwise_equal(ref, buf + off, (size_t)(m * n));
            }
            CHECK(same, "%s %s: same bits at every alignment", kind_name[kind],
                  la_isa_name(paths[q]->isa));
            free(src);
        }
    free(base);
    free(ref);
    free(buf);
}

/* ---- triangular solves ---------------------------------------------- */

/* Unit lower L [n,n]: strictly lower N(0, 1/n) (so solutions stay O(1)),
 * diagonal and upper NaN: they must not be read. */
static mat unit_lower(int64_t n, int64_t pad) {
    mat L = mat_new(n, n, pad);
    mat_fill(&L, NAN, 0);
    for (int64_t i = 0; i < n; i++)
        ref_fill_normal(L.x + i * L.ld, (size_t)i, &rng, 1.0 / sqrt((double)n));
    return L;
}

/* max over i, c of |b - L x| / ((n+3) u (|b| + |L||x|)), all float64. */
static double residual_ratio(const mat *L, const float *b, int64_t ldb_, const mat *X) {
    int64_t n = L->rows, r = X->cols;
    double f = (double)(n + 3) * U_F32 * (1 + 1e-3), worst = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < r; c++) {
            double x_ic = X->x[i * X->ld + c];
            double res = (double)b[i * ldb_ + c] - x_ic, mag = fabs(b[i * ldb_ + c]) + fabs(x_ic);
            for (int64_t j = 0; j < i; j++) {
                double t = (double)L->x[i * L->ld + j] * X->x[j * X->ld + c];
                res -= t;
                mag += fabs(t);
            }
            if (!(res == res)) return INFINITY;
            double q = res == 0 ? 0 : fabs(res) / (f * mag);
            if (q > worst) worst = q;
        }
    return worst;
}

/* Every path on the same inputs; cpu-gemm: the AVX-512 path (its own panel
 * solve, the same operations as the blocked solve) must match AVX2's bits. */
static int n_trsm_compared, n_trsm_same;

/* Column counts of the solves: sizes[] and r % 16 == 8 (cpu-avx2trsm23:
 * the AVX2 solve's last 8-column strip whole, unmasked). */
static const int64_t trsm_r[] = {1, 2, 3, 7, 8, 15, 16, 17, 24, 31, 33, 40, 64, 65, 100, 128, 129};
#define N_TRSM_R ((int)(sizeof trsm_r / sizeof trsm_r[0]))

static void test_trsm(const la__kernels **paths, int n_paths) {
    worst_t w[4] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
    int pad_ok[4] = {1, 1, 1, 1};
    for (int a = 0; a < N_SIZES; a++)
        for (int c = 0; c < N_TRSM_R; c++) {
            int64_t n = sizes[a], r = trsm_r[c];
            mat L = unit_lower(n, 1 + (n + r) % 4);
            mat X = mat_new(n, r, 2 + r % 3);
            mat_fill(&X, SENTINEL, 1);
            const size_t bytes = X.len * sizeof(float);
            float *x0 = malloc(bytes), *avx2 = malloc(bytes);
            float *b = th_nan_floats((size_t)(n * r));
            if (!x0 || !avx2 || !b) abort();
            memcpy(x0, X.x, bytes);
            for (int64_t i = 0; i < n; i++)
                memcpy(b + i * r, X.x + i * X.ld, (size_t)r * sizeof(float));
            int have_avx2 = 0;
            for (int q = 0; q < n_paths; q++) {
                memcpy(X.x, x0, bytes);
                paths[q]->trsm_llu(n, r, L.x, L.ld, X.x, X.ld);
                note(&w[q], residual_ratio(&L, b, r, &X), n, r, 0);
                pad_ok[q] &= padding_is(&X, SENTINEL);
                if (paths[q]->isa == LA_ISA_AVX2) {
                    memcpy(avx2, X.x, bytes);
                    have_avx2 = 1;
                }
                if (paths[q]->isa == LA_ISA_AVX512 && have_avx2) {
                    n_trsm_compared++;
                    n_trsm_same += memcmp(avx2, X.x, bytes) == 0;
                }
            }
            free(b);
            free(x0);
            free(avx2);
            free(L.x);
            free(X.x);
        }
    for (int q = 0; q < n_paths; q++) {
        CHECK(w[q].ratio <= 1.0, "trsm_llu %s: residual / bound = %.3g at n=%lld r=%lld",
              la_isa_name(paths[q]->isa), w[q].ratio, (long long)w[q].m, (long long)w[q].n);
        CHECK(pad_ok[q], "trsm_llu %s: nothing written beyond a row", la_isa_name(paths[q]->isa));
        printf("trsm_llu       %-8s max residual / bound %.3f\n", la_isa_name(paths[q]->isa),
               w[q].ratio);
    }
}

/* cpu-dbwd15: la__trsm_llu_transposed (kr->trsm_llu_t in place where the
 * path has it) gives the bits of the reversal route, kr->trsm_llu on
 * reversed rows with Lrev = J L^T J, built here by hand; and it solves:
 * L^T X == B to rounding (checked through the same route's residual). */
static void test_trsm_transposed(const la__kernels **paths, int n_paths) {
    int n_cases = 0, n_same = 0, n_direct = 0;
    for (int q = 0; q < n_paths; q++)
        for (int a = 0; a < N_SIZES; a++)
            for (int c = 0; c < N_TRSM_R; c++) {
                const int64_t n = sizes[a], r = trsm_r[c];
                mat Lm = unit_lower(n, 3 + (n + r) % 4);
                mat X = mat_new(n, r, 0);
                mat_fill(&X, 0.0f, 1);
                float *L = malloc((size_t)(n * n) * sizeof(float));
                float *Lrev = th_nan_floats((size_t)(n * n)),
                      *Brev = th_nan_floats((size_t)(n * r));
                float *B = malloc((size_t)(n * r) * sizeof(float)),
                      *Y = malloc((size_t)(n * r) * sizeof(float));
                if (!L || !Lrev || !Brev || !B || !Y) abort();
                for (int64_t i = 0; i < n; i++)
                    for (int64_t j = 0; j < n; j++) /* upper part NaN: must not be read */
                        L[i * n + j] = j < i ? Lm.x[i * Lm.ld + j] : NAN;
                for (int64_t i = 0; i < n; i++)
                    for (int64_t j = 0; j < r; j++) B[i * r + j] = X.x[i * X.ld + j];
                /* the route by hand */
                float *R = malloc((size_t)(n * n) * sizeof(float)),
                      *Z = malloc((size_t)(n * r) * sizeof(float));
                if (!R || !Z) abort();
                for (int64_t i = 0; i < n; i++)
                    for (int64_t j = 0; j < n; j++)
                        R[i * n + j] = j < i ? L[(n - 1 - j) * n + (n - 1 - i)] : NAN;
                for (int64_t i = 0; i < n; i++)
                    memcpy(Z + i * r, B + (n - 1 - i) * r, (size_t)r * sizeof(float));
                paths[q]->trsm_llu(n, r, R, n, Z, r);
                memcpy(Y, B, (size_t)(n * r) * sizeof(float));
                la__trsm_llu_transposed(paths[q], n, r, L, Lrev, Y, Brev);
                int same = 1;
                for (int64_t i = 0; i < n; i++)
                    same &= memcmp(Y + (n - 1 - i) * r, Z + i * r, (size_t)r * sizeof(float)) == 0;
                /* residual: (L^T Y)_i = Y_i + sum_{p > i} L[p][i] Y_p == B_i */
                double worst = 0;
                for (int64_t i = 0; i < n; i++)
                    for (int64_t j = 0; j < r; j++) {
                        double acc = Y[i * r + j], mag = fabs(Y[i * r + j]);
                        for (int64_t p = i + 1; p < n; p++) {
                            acc += (double)L[p * n + i] * Y[p * r + j];
                            mag += fabs((double)L[p * n + i] * Y[p * r + j]);
                        }
                        double e = fabs(acc - B[i * r + j]) / (1e-5 * (double)n * (mag + 1));
                        if (!(e <= 1e300)) e = INFINITY; /* NaN: a failure, never overwritten */
                        if (e > worst) worst = e;
                    }
                CHECK(worst <= 1.0, "trsm transposed %s n=%lld r=%lld: residual / bound %.3g",
                      la_isa_name(paths[q]->isa), (long long)n, (long long)r, worst);
                n_cases++;
                n_same += same;
                n_direct += paths[q]->trsm_llu_t && n <= LA__TRSM_T_ROWS;
                free(L), free(Lrev), free(Brev), free(B), free(Y), free(R), free(Z);
                free(Lm.x), free(X.x);
            }
    CHECK(n_same == n_cases, "trsm transposed == the reversal route bit for bit in %d of %d",
          n_same, n_cases);
    printf("trsm transposed vs the reversal route, bitwise: %d solves (%d in place)\n", n_cases,
           n_direct);
}

static void test_trinv(const la__kernels **paths, int n_paths) {
    for (int q = 0; q < n_paths; q++) {
        worst_t w = {0, 0, 0, 0};
        int shape_ok = 1, pad_ok = 1;
        for (int a = 0; a < N_SIZES; a++) {
            int64_t n = sizes[a];
            mat L = unit_lower(n, 3);
            mat X = mat_new(n, n, 1 + n % 5);
            mat_fill(&X, SENTINEL, 0);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < n; j++) X.x[i * X.ld + j] = NAN;
            float *eye = th_nan_floats((size_t)(n * n));
            for (int64_t i = 0; i < n * n; i++) eye[i] = i % (n + 1) == 0 ? 1.0f : 0.0f;
            paths[q]->trinv_llu(n, L.x, L.ld, X.x, X.ld);
            note(&w, residual_ratio(&L, eye, n, &X), n, n, 0);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = i; j < n; j++) {
                    float want = i == j ? 1.0f : 0.0f;
                    shape_ok &= memcmp(&X.x[i * X.ld + j], &want, sizeof want) == 0;
                }
            pad_ok &= padding_is(&X, SENTINEL);
            free(eye);
            free(L.x);
            free(X.x);
        }
        CHECK(w.ratio <= 1.0, "trinv_llu %s: residual / bound = %.3g at n=%lld",
              la_isa_name(paths[q]->isa), w.ratio, (long long)w.m);
        CHECK(shape_ok, "trinv_llu %s: unit diagonal and exact zeros above",
              la_isa_name(paths[q]->isa));
        CHECK(pad_ok, "trinv_llu %s: nothing written beyond a row", la_isa_name(paths[q]->isa));
        printf("trinv_llu      %-8s max residual / bound %.3f\n", la_isa_name(paths[q]->isa),
               w.ratio);
    }
}

/* ---- cpu-lin8: gemm_tn_block ------------------------------------------
 * la__gemm_tn_block against the same path's gemm_tn, bit for bit (the
 * kernel promises the same sums), at odd m, n, k (k beyond gemm_tn's k
 * block and m beyond one row block included, where it falls back), rows
 * wider than their width holding NaN (read = NaN in the sums), C's
 * padding sentinels intact, beta 0 over a NaN-filled C. */
static void test_gemm_tn_block(const la__kernels **paths, int n_paths) {
    static const int64_t ms[] = {1, 7, 16, 33, 64, 100, 128, 129};
    static const int64_t ks[] = {1, 9, 64, 96, 97, 128};
    int compared = 0, same = 0, clean = 0, from_t = 0, from_t_same = 0;
    for (int pi = 0; pi < n_paths; pi++)
        for (int a = 0; a < (int)(sizeof ms / sizeof ms[0]); a++)
            for (int c = 0; c < (int)(sizeof ks / sizeof ks[0]); c++)
                for (int bi = 0; bi < 2; bi++) {
                    const int64_t m = ms[a], n = ms[(a + c) % 8], k = ks[c];
                    const float beta = betas[bi];
                    mat A = mat_new(k, m, 3), B = mat_new(k, n, 5), C0 = mat_new(m, n, 2);
                    mat C1 = mat_new(m, n, 2), C2 = mat_new(m, n, 2);
                    mat_fill(&A, NAN, 1);
                    mat_fill(&B, NAN, 1);
                    mat_fill(&C0, SENTINEL, 1);
                    memcpy(C1.x, C0.x, C0.len * sizeof(float));
                    memcpy(C2.x, C0.x, C0.len * sizeof(float));
                    if (beta == 0.0f) /* overwrite mode never reads C */
                        for (int64_t i = 0; i < m; i++)
                            for (int64_t j = 0; j < n; j++) C1.x[i * C1.ld + j] = NAN;
                    paths[pi]->gemm_tn(m, n, k, 1.5f, A.x, A.ld, B.x, B.ld, beta, C2.x, C2.ld);
                    la__gemm_tn_block(paths[pi], m, n, k, 1.5f, A.x, A.ld, B.x, B.ld, beta, C1.x,
                                      C1.ld);
                    if (la__tn_from_t_same(m, k)) { /* cpu-kpack22: gemm_nn on Aᵀ */
                        mat At = mat_new(m, k, 1 + m % 4), C3 = mat_new(m, n, 2);
                        for (size_t i = 0; i < At.len; i++) At.x[i] = NAN;
                        paths[pi]->transpose(k, m, A.x, A.ld, At.x, At.ld);
                        memcpy(C3.x, C0.x, C0.len * sizeof(float));
                        if (beta == 0.0f)
                            for (int64_t i = 0; i < m; i++)
                                for (int64_t j = 0; j < n; j++) C3.x[i * C3.ld + j] = NAN;
                        paths[pi]->gemm_nn(m, n, k, 1.5f, At.x, At.ld, B.x, B.ld, beta, C3.x,
                                           C3.ld);
                        from_t++;
                        from_t_same += memcmp(C3.x, C1.x, C1.len * sizeof(float)) == 0;
                        free(At.x), free(C3.x);
                    }
                    int eq = 1, fin = 1;
                    for (int64_t i = 0; i < m; i++)
                        for (int64_t j = 0; j < n; j++) {
                            const float x = C1.x[i * C1.ld + j], y = C2.x[i * C2.ld + j];
                            eq &= memcmp(&x, &y, sizeof x) == 0;
                            fin &= isfinite(x) != 0;
                        }
                    compared++;
                    same += eq;
                    clean += fin && padding_is(&C1, SENTINEL);
                    free(A.x), free(B.x), free(C0.x), free(C1.x), free(C2.x);
                }
    CHECK(same == compared, "gemm_tn_block == gemm_tn bit for bit in %d of %d products", same,
          compared);
    CHECK(clean == compared, "gemm_tn_block: finite results, C's padding intact in %d of %d", clean,
          compared);
    CHECK(from_t > 0 && from_t_same == from_t,
          "gemm_nn on Aᵀ == gemm_tn_block bit for bit where la__tn_from_t_same, %d of %d",
          from_t_same, from_t);
}

int main(void) {
    la_rng_seed(&rng, 20261126);
    test_dispatch();
    /* Every distinct path this CPU can run. */
    const la__kernels *paths[4];
    int n_paths = 0;
    for (int i = LA_ISA_PORTABLE; i <= (int)la_cpu_best_isa(); i++) {
        const la__kernels *kr = la__kernels_for((la_isa)i);
        if (n_paths == 0 || paths[n_paths - 1] != kr) paths[n_paths++] = kr;
    }
    test_empty_k(paths, n_paths);
    test_alignment(paths, n_paths);
    test_gemm_nt_tril(paths, n_paths);
    test_trsm(paths, n_paths);
    test_trsm_transposed(paths, n_paths);
    test_trinv(paths, n_paths);
    test_gemm(paths, n_paths);
    test_gemm_tn_block(paths, n_paths);
    CHECK(n_simd_same == n_simd_compared, "AVX-512 == AVX2 bit for bit in %d of %d products",
          n_simd_same, n_simd_compared);
    printf("AVX-512 vs AVX2, bitwise: %d products compared\n", n_simd_compared);
    CHECK(n_trsm_same == n_trsm_compared, "trsm_llu AVX-512 == AVX2 bit for bit in %d of %d solves",
          n_trsm_same, n_trsm_compared);
    printf("trsm_llu AVX-512 vs AVX2, bitwise: %d solves compared\n", n_trsm_compared);
    return th_summary("test_kernels");
}
