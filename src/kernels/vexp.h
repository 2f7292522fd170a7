/* A branch-free e^x for x <= 0 that the compiler vectorises, shared by the
 * linear-attention feature map (phi.c) and the streaming softmax
 * (../softmax_attn/streaming.c). Cephes-style: e^x = 2^n · e^r with
 * |r| <= ln2/2 and a degree-6 polynomial; measured max error 0.95 ulp
 * against exp in double over a sweep of [-87.3, 0] (libm's expf: 0.50).
 * Elementwise float operations only (no FMA under -ffp-contract=off), so a
 * loop built for the baseline ISA and the same loop built for AVX2 give the
 * same bits. */
#ifndef LINATTN_OPS_VEXP_H
#define LINATTN_OPS_VEXP_H

#include <stdint.h>
#include <string.h>

/* out = e^x for x <= 0 (the only inputs elu+1 exponentiates); 0 below the
 * normal range (true value < 1.2e-38). A macro rather than a function: it
 * must be expanded inside each clone below (GCC does not inline across the
 * clones' differing target/optimize attributes). */
#define LA__EXP_NONPOS(out, x_)                                                               \
    do {                                                                                  \
        const float x0_ = (x_);                                                           \
        const float xc_ = x0_ < -87.3365f ? -87.3365f : x0_;                              \
        const float t_ = xc_ * 1.44269504088896341f + 12582912.0f; /* round to nearest */ \
        const float n_ = t_ - 12582912.0f;                                                \
        float r_ = xc_ - n_ * 0.693359375f;                                               \
        r_ = r_ - n_ * -2.12194440e-4f;                                                   \
        float p_ = 1.9875691500e-4f;                                                      \
        p_ = p_ * r_ + 1.3981999507e-3f;                                                  \
        p_ = p_ * r_ + 8.3334519073e-3f;                                                  \
        p_ = p_ * r_ + 4.1665795894e-2f;                                                  \
        p_ = p_ * r_ + 1.6666665459e-1f;                                                  \
        p_ = p_ * r_ + 5.0000001201e-1f;                                                  \
        const float y_ = (p_ * (r_ * r_) + r_) + 1.0f;                                    \
        const int32_t b_ = ((int32_t)n_ + 127) * 8388608; /* 2^n, n in [-126, 0] */      \
        float s_;                                                                         \
        memcpy(&s_, &b_, sizeof s_);                                                      \
        const float ys_ = y_ * s_;                                                        \
        (out) = x0_ < -87.3365f ? 0.0f : ys_;                                             \
    } while (0)

/* GCC keeps the element selects above as branches (and the loops scalar)
 * under the default -ftrapping-math; every operation here is evaluated
 * unconditionally anyway, so allowing if-conversion changes no result. */
#if defined(__GNUC__) && !defined(__clang__)
#define LA__VECTORISE __attribute__((optimize("no-trapping-math")))
#else
#define LA__VECTORISE
#endif

#endif
