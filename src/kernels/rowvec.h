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
/* la__v8: one YMM register (two XMM in the baseline build); la__v16: one
 * ZMM register, used only in AVX-512 builds (GCC expands it piecewise, and
 * slowly, where the target has no 64-byte vectors). */
typedef float la__v8 __attribute__((vector_size(32)));
typedef float la__v16 __attribute__((vector_size(64)));
#define LA_V8_LOAD(dst, p) memcpy(&(dst), (p), sizeof(la__v8))
#define LA_V8_STORE(p, x) memcpy((p), &(x), sizeof(la__v8))
/* unaligned load / store of 16 floats (memcpy compiles to vector moves) */
#define LA_V16_LOAD(dst, p) memcpy(&(dst), (p), sizeof(la__v16))
#define LA_V16_STORE(p, x) memcpy((p), &(x), sizeof(la__v16))
/* Column blocks: 32 columns as 4 la__v8 (4 YMM of accumulators + 4 of the
 * token's row fit AVX2's 16 registers), 16 columns as 2 la__v8 in the
 * baseline build (8 of its 16 XMM registers); AVX-512 builds first take 128
 * columns as 8 la__v16 (16 of the 32 ZMM registers); then a scalar tail. */
#endif
/* `wide` argument of the row loops, one per build: */
#define LA_ROWVEC_NARROW 0 /* baseline (SSE2): no vector blocks, the plain loop (faster there) */
#define LA_ROWVEC_AVX2 1   /* 32-column blocks of 4 la__v8 */
#define LA_ROWVEC_WIDE 2   /* AVX-512: 128-column blocks first, then 32-column ones */
#define LA_ROWVEC_MAXV 8   /* vectors in the widest block */

#endif
