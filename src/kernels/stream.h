/* Copies to memory that this call writes once and does not read again
 * (gradient rows of the big tensors), with non-temporal stores: the lines
 * are written without being read first and do not evict the working set.
 * The same floats as memcpy. A task that streams ends with
 * la__stream_fence (the stores are weakly ordered). cpu-sglabwd18 in GLA's
 * chunk.c, shared with KDA since cpu-kda22. */
#ifndef LINATTN_KERNELS_STREAM_H
#define LINATTN_KERNELS_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* non-temporal 16-byte stores where dst is 16-byte aligned (and a scalar
 * tail), memcpy otherwise */
static inline void la__stream_copy(float *dst, const float *src, size_t n) {
#if defined(__SSE2__)
    if (((uintptr_t)dst & 15) == 0) {
        size_t i = 0;
        for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
        for (; i < n; i++) dst[i] = src[i];
        return;
    }
#endif
    memcpy(dst, src, n * sizeof(float));
}

static inline void la__stream_fence(void) {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

#endif
