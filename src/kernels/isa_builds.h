/* cpu-sgla11: one function built for the baseline ISA, AVX2 and AVX-512,
 * and its dispatcher, from one always-inline body (the ops' element loops
 * outside the kernels: gate sums, row scalings, gradient rows).
 *
 *   LA_ISA_BUILDS(linkage, name, body, (params), (args))
 *
 * defines `linkage void name(params)`, which calls `body(args)` compiled for
 * la_isa_active()'s ISA (LINATTN_ISA caps it), as the kernel table does.
 * body must be always inline (GLA_INLINE, KDA_INLINE) so that each build
 * has its own copy; linkage is `static` or empty (an external function).
 * Elementwise float operations in a fixed order and no contraction
 * (-ffp-contract=off): every build gives the same bits. Elsewhere than GCC /
 * clang on x86-64 there is one build. */
#ifndef LINATTN_KERNELS_ISA_BUILDS_H
#define LINATTN_KERNELS_ISA_BUILDS_H

#include "linattn.h" /* la_isa, la_isa_active */

#if defined(__GNUC__) && defined(__x86_64__)
#define LA_ISA_TARGET_AVX2 __attribute__((target("avx2")))
#define LA_ISA_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2")))
/* AVX-512 with 512-bit vectors in loops the compiler vectorises (GCC keeps
 * 256-bit ones on this target unless told; clang rejects GCC's
 * prefer-vector-width in a target attribute and would drop the whole
 * attribute, so it gets its own spelling) */
#if defined(__clang__)
#define LA_ISA_TARGET_AVX512_WIDE                                                                  \
    __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2"), min_vector_width(512)))
#else
#define LA_ISA_TARGET_AVX512_WIDE                                                                  \
    __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,prefer-vector-width=512")))
#endif
#define LA_ISA_BUILDS(linkage, name, body, params, args)                                           \
    static void name##_portable params { body args; }                                              \
    LA_ISA_TARGET_AVX2 static void name##_avx2 params { body args; }                               \
    LA_ISA_TARGET_AVX512 static void name##_avx512 params { body args; }                           \
    linkage void name params {                                                                     \
        const la_isa isa_ = la_isa_active();                                                       \
        if (isa_ == LA_ISA_AVX512)                                                                 \
            name##_avx512 args;                                                                    \
        else if (isa_ == LA_ISA_AVX2)                                                              \
            name##_avx2 args;                                                                      \
        else                                                                                       \
            name##_portable args;                                                                  \
    }
#else
#define LA_ISA_BUILDS(linkage, name, body, params, args)                                           \
    linkage void name params { body args; }
#endif

#endif
