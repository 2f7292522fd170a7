/* Sixteen-float vectors (GNU C vector extensions) for the decoding-step row
 * loops: the step's output accumulators of a block of columns stay in
 * registers while the rows of the state stream past, so each state element
 * is loaded and stored once and nothing else touches memory per element.
 *
 * Elementwise IEEE operations only (no contraction under
 * -ffp-contract=off): a loop written with these vectors rounds exactly as
 * the same loop written element by element, at any vector width, so every
 * build (portable SSE, AVX2, AVX-512) gives the same bits. Macros, not
 * functions, so no vector crosses a call boundary (no ABI change between
 * builds) and they expand inside each target clone. */
#ifndef LINATTN_KERNELS_ROWVEC_H
#define LINATTN_KERNELS_ROWVEC_H

#include <string.h>

#if defined(__GNUC__)
#define LA_ROWVEC 1
/* One ZMM register in an AVX-512 build, two YMM (four XMM) in narrower ones. */
typedef float la__v16 __attribute__((vector_size(64)));
/* unaligned load / store of 16 floats (memcpy compiles to vector moves) */
#define LA_V16_LOAD(dst, p) memcpy(&(dst), (p), sizeof(la__v16))
#define LA_V16_STORE(p, x) memcpy((p), &(x), sizeof(la__v16))
/* A column block is nv vectors wide: nv = 2 (32 columns: 4 YMM of
 * accumulators + 4 of the token's row fit AVX2's 16 registers) everywhere,
 * nv = 8 (128 columns, 16 of AVX-512's 32 registers) in the AVX-512
 * builds, which then finish with 32-column blocks and a scalar tail. */
#endif
#define LA_ROWVEC_NARROW 2
#define LA_ROWVEC_WIDE 8

#endif
