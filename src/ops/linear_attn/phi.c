/* The feature maps of the kernel forms (chunk, parallel, non-causal) over
 * whole rows, vectorised. elu(x)+1 needs e^x for every non-positive input,
 * and at K = V = 128 libm's expf, one call per element, cost as much as all
 * the matrix products of a chunk; so the rows here use a branch-free expf
 * (Cephes-style: e^x = 2^n · e^r, |r| <= ln2/2, degree-6 polynomial, measured
 * max error 0.95 ulp against exp in double over a sweep of [-87.3, 0],
 * libm's expf 0.50) that the compiler vectorises. The
 * same loop is built twice, for the baseline ISA and for AVX2 (no FMA:
 * -ffp-contract=off and no fma target), and both do the same float
 * operations element by element, so their results are bitwise equal and
 * do not depend on the path.
 *
 * The recurrent form and the decoder keep la__phi / la__dphi (libm expf):
 * their arithmetic is the decoder's step, bit for bit. */
#include "linear_attn.h"
#include "../../kernels/isa_builds.h" /* LA_ISA_TARGET_AVX512_WIDE */
#include "../../kernels/vexp.h"

#include <string.h>

#define PHI_BODY                                                                          \
    switch (fm) {                                                                         \
    case LA_FEATURE_ELU1:                                                                 \
        for (int64_t i = 0; i < n; i++) {                                                 \
            const float xi = x[i], a = xi + 1.0f;                                         \
            float e;                                                                      \
            LA__EXP_NONPOS(e, xi > 0 ? 0.0f : xi);                                            \
            const float f = xi > 0 ? a : e;                                               \
            y[i] = c * f;                                                                 \
        }                                                                                 \
        break;                                                                            \
    case LA_FEATURE_RELU:                                                                 \
        for (int64_t i = 0; i < n; i++) {                                                 \
            const float xi = x[i];                                                        \
            y[i] = c * (xi > 0 ? xi : 0.0f);                                              \
        }                                                                                 \
        break;                                                                            \
    default:                                                                              \
        for (int64_t i = 0; i < n; i++) y[i] = c * x[i];                                  \
        break;                                                                            \
    }

#define DPHI_BODY                                                                         \
    switch (fm) {                                                                         \
    case LA_FEATURE_ELU1:                                                                 \
        for (int64_t i = 0; i < n; i++) {                                                 \
            const float xi = x[i], cd = c * dy[i];                                        \
            float e;                                                                      \
            LA__EXP_NONPOS(e, xi > 0 ? 0.0f : xi);                                            \
            const float f = xi > 0 ? 1.0f : e;                                            \
            y[i] = cd * f;                                                                \
        }                                                                                 \
        break;                                                                            \
    case LA_FEATURE_RELU:                                                                 \
        for (int64_t i = 0; i < n; i++) {                                                 \
            const float cd = c * dy[i];                                                   \
            y[i] = cd * (x[i] > 0 ? 1.0f : 0.0f);                                         \
        }                                                                                 \
        break;                                                                            \
    default:                                                                              \
        for (int64_t i = 0; i < n; i++) y[i] = c * dy[i] * 1.0f;                          \
        break;                                                                            \
    }


LA__VECTORISE static void phi_base(la_feature_map fm, float c, float *restrict y, const float *restrict x,
                     int64_t n) {
    PHI_BODY
}

LA__VECTORISE static void dphi_base(la_feature_map fm, float c, float *restrict y, const float *restrict dy,
                      const float *restrict x, int64_t n) {
    DPHI_BODY
}

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_AVX2_CLONE 1
LA__VECTORISE __attribute__((target("avx2"))) static void phi_avx2(la_feature_map fm, float c,
                                                     float *restrict y,
                                                     const float *restrict x, int64_t n) {
    PHI_BODY
}

LA__VECTORISE __attribute__((target("avx2"))) static void dphi_avx2(la_feature_map fm, float c,
                                                      float *restrict y,
                                                      const float *restrict dy,
                                                      const float *restrict x, int64_t n) {
    DPHI_BODY
}
/* cpu-kpack22: the same loops at 512-bit width for the AVX-512 path (GCC
 * keeps 256-bit vectors on this target unless told): elementwise, the same
 * bits. */
#define AVX512_CLONE LA_ISA_TARGET_AVX512_WIDE
LA__VECTORISE AVX512_CLONE static void phi_avx512(la_feature_map fm, float c, float *restrict y,
                                                  const float *restrict x, int64_t n) {
    PHI_BODY
}

LA__VECTORISE AVX512_CLONE static void dphi_avx512(la_feature_map fm, float c, float *restrict y,
                                                   const float *restrict dy,
                                                   const float *restrict x, int64_t n) {
    DPHI_BODY
}
#endif

static int use_avx2(const la__lin_job *j) {
#if defined(HAVE_AVX2_CLONE)
    return j->kr->isa == LA_ISA_AVX512 ? 2 : j->kr->isa != LA_ISA_PORTABLE;
#else
    (void)j;
    return 0;
#endif
}

void la__lin_phi_rows(const la__lin_job *j, float c, const float *x, int64_t sx, int64_t t0,
                      int64_t L, float *dst) {
    const int64_t K = j->K;
    const int avx2 = use_avx2(j);
    for (int64_t i = 0; i < L; i++) {
        const float *xi = x + (t0 + i) * sx;
        if (i + LA__LIN_PREFETCH_AHEAD < L) la__prefetch_row(xi + LA__LIN_PREFETCH_AHEAD * sx, K);
#if defined(HAVE_AVX2_CLONE)
        if (avx2 == 2) {
            phi_avx512(j->fm, c, dst + i * K, xi, K);
            continue;
        }
        if (avx2) {
            phi_avx2(j->fm, c, dst + i * K, xi, K);
            continue;
        }
#endif
        (void)avx2;
        phi_base(j->fm, c, dst + i * K, xi, K);
    }
}

void la__lin_dphi_rows(const la__lin_job *j, float c, float *y, int64_t sy, int64_t t0,
                       int64_t L, const float *dy, const float *x) {
    const int64_t K = j->K;
    const int avx2 = use_avx2(j);
    for (int64_t i = 0; i < L; i++) {
        float *yi = y + (t0 + i) * sy;
        const float *xi = x + (t0 + i) * sy;
        if (i + LA__LIN_PREFETCH_AHEAD < L)
            la__prefetch_row(xi + LA__LIN_PREFETCH_AHEAD * sy, K);
#if defined(HAVE_AVX2_CLONE)
        if (avx2 == 2) {
            dphi_avx512(j->fm, c, yi, dy + i * K, xi, K);
            continue;
        }
        if (avx2) {
            dphi_avx2(j->fm, c, yi, dy + i * K, xi, K);
            continue;
        }
#endif
        (void)avx2;
        dphi_base(j->fm, c, yi, dy + i * K, xi, K);
    }
}
