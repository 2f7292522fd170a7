/* Run-time choice of the kernel path: what the CPU and OS support (cpuid,
 * xgetbv), capped by the LINATTN_ISA environment variable, read once. */
#include "kernels.h"

#include <stdatomic.h>
#include <stdlib.h>

#if defined(LA_KERNELS_HAVE_X86)
#include <cpuid.h>

/* XCR0: which register states the OS saves on a context switch. */
static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static la_isa detect_isa(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return LA_ISA_PORTABLE;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx || !fma) return LA_ISA_PORTABLE;
    uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) return LA_ISA_PORTABLE; /* XMM and YMM state */
    if (__get_cpuid_max(0, NULL) < 7) return LA_ISA_PORTABLE;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    if (!avx2) return LA_ISA_PORTABLE;
    int avx512f = (b >> 16) & 1, avx512dq = (b >> 17) & 1, avx512bw = (b >> 30) & 1,
        avx512vl = (b >> 31) & 1;
    /* opmask, upper halves of ZMM0-15, ZMM16-31 */
    int zmm_state = (xcr0 & 0xE0) == 0xE0;
    if (avx512f && avx512dq && avx512bw && avx512vl && zmm_state) return LA_ISA_AVX512;
    return LA_ISA_AVX2;
}
#else
static la_isa detect_isa(void) { return LA_ISA_PORTABLE; }
#endif

/* -1: not yet computed. Both racing threads compute the same value, so a
 * relaxed-enough atomic store is all the synchronisation needed. */
static atomic_int best_isa_cache = -1;
static atomic_int active_isa_cache = -1;

la_isa la_cpu_best_isa(void) {
    int v = atomic_load(&best_isa_cache);
    if (v < 0) {
        v = (int)detect_isa();
        atomic_store(&best_isa_cache, v);
    }
    return (la_isa)v;
}

const char *la_isa_name(la_isa isa) {
    switch (isa) {
    case LA_ISA_PORTABLE: return "portable";
    case LA_ISA_AVX2: return "avx2";
    case LA_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

const la__kernels *la__kernels_for(la_isa isa) {
    la_isa best = la_cpu_best_isa();
    if ((int)isa > (int)best) isa = best;
#if defined(LA_KERNELS_HAVE_X86)
    if (isa >= LA_ISA_AVX512) return &la__kernels_avx512;
    if (isa >= LA_ISA_AVX2) return &la__kernels_avx2;
#endif
    return &la__kernels_portable;
}

int la__isa_from_name(const char *s) {
    if (!s) return -1;
    for (int i = LA_ISA_PORTABLE; i <= LA_ISA_AVX512; i++) {
        const char *name = la_isa_name((la_isa)i);
        const char *p = s, *q = name;
        while (*p && *q && ((*p | 0x20) == *q)) p++, q++; /* ASCII case-insensitive */
        if (!*p && !*q) return i;
    }
    return -1;
}

const la__kernels *la__kernels_default(void) {
    int v = atomic_load(&active_isa_cache);
    if (v < 0) {
        int want = la__isa_from_name(getenv("LINATTN_ISA"));
        v = (int)la__kernels_for(want < 0 ? la_cpu_best_isa() : (la_isa)want)->isa;
        atomic_store(&active_isa_cache, v);
    }
    return la__kernels_for((la_isa)v);
}

la_isa la_isa_active(void) { return la__kernels_default()->isa; }
