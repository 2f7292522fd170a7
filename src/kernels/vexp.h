/* The one vectorisable e^x of the library, for x <= 0: the linear-attention
 * feature map (elu + 1), the streaming softmax, the GLA family's per-key
 * decays (recurrent form and decoding step) and its chunk form's gate
 * factors all use it, so every path rounds e^x the same way.
 *
 * Cephes-style: x = n ln2 + r with |r| <= ln2/2 (n by the 1.5 * 2^23
 * rounding trick, ln2 in two parts), e^r by a degree-6 polynomial, and 2^n
 * added into the exponent bits. Measured max error 0.95 ulp against exp in
 * double over [-80, 0] (libm's expf: 0.50). Below -80 (e^-80 = 1.8e-35) the
 * result is exactly 0, selected on the bits of x, so a reset gate g = -1e4
 * gives exact zeros, never a subnormal, Inf or NaN.
 *
 * No library calls, branches or floating-point comparisons, so loops over it
 * vectorise even under GCC's default -ftrapping-math; elementwise float
 * operations only (no FMA under -ffp-contract=off), so a loop built for the
 * baseline ISA and the same loop built for AVX2 give the same bits. */
#ifndef LINATTN_KERNELS_VEXP_H
#define LINATTN_KERNELS_VEXP_H

#include <stdint.h>
#include <string.h>

/* out = e^x for x <= 0. A macro rather than a function: it must be expanded
 * inside each target clone (GCC does not inline across the clones' differing
 * target/optimize attributes). */
#define LA__EXP_NONPOS(out, x_)                                                               \
    do {                                                                                      \
        const float x0_ = (x_);                                                               \
        uint32_t xb_;                                                                         \
        memcpy(&xb_, &x0_, sizeof xb_);                                                       \
        /* all ones unless x < -80 (-80.0f is 0xC2A00000; larger bits of a negative float   \
         * mean a larger magnitude) */                                                        \
        const uint32_t keep_ = 0u - (uint32_t)(xb_ <= 0xC2A00000u);                           \
        const uint32_t xk_ = xb_ & keep_;                                                     \
        float xc_; /* x, or 0 when dropped (keeps the polynomial finite) */                   \
        memcpy(&xc_, &xk_, sizeof xc_);                                                       \
        const float t_ = xc_ * 1.44269504088896341f + 12582912.0f; /* round to nearest */     \
        const float n_ = t_ - 12582912.0f;                                                    \
        float r_ = xc_ - n_ * 0.693359375f;                                                   \
        r_ = r_ - n_ * -2.12194440e-4f;                                                       \
        float p_ = 1.9875691500e-4f;                                                          \
        p_ = p_ * r_ + 1.3981999507e-3f;                                                      \
        p_ = p_ * r_ + 8.3334519073e-3f;                                                      \
        p_ = p_ * r_ + 4.1665795894e-2f;                                                      \
        p_ = p_ * r_ + 1.6666665459e-1f;                                                      \
        p_ = p_ * r_ + 5.0000001201e-1f;                                                      \
        const float y_ = (p_ * (r_ * r_) + r_) + 1.0f;                                        \
        uint32_t yb_;                                                                         \
        memcpy(&yb_, &y_, sizeof yb_);                                                        \
        /* n in [-116, 0]: y 2^n stays a normal number */                                     \
        yb_ = (yb_ + (uint32_t)((int32_t)n_ * 8388608)) & keep_;                              \
        float e_;                                                                             \
        memcpy(&e_, &yb_, sizeof e_);                                                         \
        (out) = e_;                                                                           \
    } while (0)

/* e^x for x <= 0 as a function, where no target clone is involved. */
static inline float la__exp_nonpos(float x) {
    float y;
    LA__EXP_NONPOS(y, x);
    return y;
}

/* GCC keeps element selects of the callers' loops (such as phi's x > 0 ? ..)
 * as branches, and the loops scalar, under the default -ftrapping-math;
 * every operation is evaluated unconditionally anyway, so allowing
 * if-conversion changes no result. */
#if defined(__GNUC__) && !defined(__clang__)
#define LA__VECTORISE __attribute__((optimize("no-trapping-math")))
#else
#define LA__VECTORISE
#endif

#endif
