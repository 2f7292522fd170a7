/* Eight-float vectors (GNU C vector extensions) for the decoding-step row
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
typedef float la__v8 __attribute__((vector_size(32)));
/* unaligned load / store of 8 floats (memcpy compiles to one vector move) */
#define LA_V8_LOAD(dst, p) memcpy(&(dst), (p), sizeof(la__v8))
#define LA_V8_STORE(p, x) memcpy((p), &(x), sizeof(la__v8))
/* columns per block: 4 vectors of accumulators + 4 of the token's row */
#define LA_ROWVEC_COLS 32
#endif

#endif
