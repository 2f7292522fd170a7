/* Argument validation shared by every op. Each check names the op, the
 * argument and the offending value, so a caller can fix the call from the
 * message alone. */
#include "internal.h"
#include "../kernels/isa_builds.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

la_status la__check_ptr(const char *op, const char *name, const void *p) {
    if (p == NULL) return la__error(LA_ERR_NULL_POINTER, "%s: %s is NULL", op, name);
    return LA_OK;
}

/* Fast scans for the checks below: the index of the first block of 2048
 * values holding a bad one (n if none); the caller's loop from there finds
 * the first bad index for the message.
 *
 * first_bad_gate_block, for the log-gates: branch-free integer tests the
 * compiler vectorises. A float is NaN or Inf iff its exponent bits are all
 * ones; a value > 0 (sign clear, not +0: 1 <= bits <= 0x7fffffff) is bad
 * too. */
static inline size_t first_bad_gate_block(const float *x, size_t n) {
    enum { BLK = 2048 };
    size_t b0 = 0;
    for (; b0 < n; b0 += BLK) {
        const size_t m = n - b0 < BLK ? n - b0 : BLK;
        const float *xb = x + b0;
        uint32_t bad = 0;
        for (size_t i = 0; i < m; i++) {
            union { float f; uint32_t u; } c;
            c.f = xb[i];
            bad |= (uint32_t)((c.u & 0x7f800000u) == 0x7f800000u);
            bad |= (uint32_t)(c.u - 1u < 0x7fffffffu);
        }
        if (bad) break;
    }
    return b0;
}

/* first_nonfinite_block, for the finiteness of every input tensor (q, k, v,
 * d_o: the forwards and backwards read 3-4 whole tensors before they start,
 * ~9% of a linear attention forward at issue 12's shape): x * 0 is NaN
 * exactly when x is NaN or Inf (±0 else), and a NaN stays in a sum, so one
 * multiply-add per value and a NaN test per block; built per ISA (32 lanes:
 * two zmm sums with AVX-512), it reads at the memory's speed where the
 * integer tests above, built for the baseline ISA, did not (cpu-fwd19,
 * bench/scan_ab: q, k, v of issue 12's shape, 96 MiB from DRAM, 3.83 ->
 * 3.16 ms on Zen 5). The answer is the same. */
#if defined(__GNUC__)
#define SCAN_INLINE static inline __attribute__((always_inline))
#else
#define SCAN_INLINE static inline
#endif

SCAN_INLINE void first_nonfinite_body(const float *x, size_t n, size_t *out) {
    enum { BLK = 2048, W = 32 };
    size_t b0 = 0;
    for (; b0 < n; b0 += BLK) {
        const size_t m = n - b0 < BLK ? n - b0 : BLK;
        const float *xb = x + b0;
        float acc[W] = {0};
        size_t i = 0;
        for (; i + W <= m; i += W)
            for (int l = 0; l < W; l++) acc[l] += xb[i + l] * 0.0f;
        for (; i < m; i++) acc[0] += xb[i] * 0.0f;
        float s = 0.0f;
        for (int l = 0; l < W; l++) s += acc[l];
        if (s != s) break; /* NaN: a NaN or Inf in the block */
    }
    *out = b0;
}

LA_ISA_BUILDS(static, first_nonfinite_scan, first_nonfinite_body,
              (const float *x, size_t n, size_t *out), (x, n, out))

static size_t first_nonfinite_block(const float *x, size_t n) {
    size_t b0;
    first_nonfinite_scan(x, n, &b0);
    return b0;
}

la_status la__check_finite(const char *op, const char *name, const float *x, size_t n) {
    const size_t b0 = first_nonfinite_block(x, n);
    for (size_t i = b0; i < n; i++) {
        if (!isfinite(x[i]))
            return la__error(LA_ERR_NON_FINITE, "%s: %s[%zu] is %s (inputs must be finite)",
                             op, name, i, isnan(x[i]) ? "NaN" : "Inf");
    }
    return LA_OK;
}

/* Blocks of a parallel scan: one flag per block, then the first bad block
 * is scanned again serially for the message (same as la__check_finite). */
enum { PAR_BLK = 1 << 16, PAR_MIN = 1 << 20 };

typedef struct {
    const float *x;
    size_t n;
    unsigned char *bad;
} finite_arg;

static void finite_task(void *p, int64_t task, int tid) {
    (void)tid;
    const finite_arg *a = p;
    const size_t b0 = (size_t)task * PAR_BLK, m = a->n - b0 < PAR_BLK ? a->n - b0 : PAR_BLK;
    a->bad[task] = (unsigned char)(first_nonfinite_block(a->x + b0, m) < m);
}

la_status la__check_finite_ctx(la_ctx *ctx, const char *op, const char *name, const float *x,
                               size_t n) {
    const size_t nb = (n + PAR_BLK - 1) / PAR_BLK;
    finite_arg a = {x, n, NULL};
    if (n < PAR_MIN || la_ctx_threads(ctx) < 2 || !(a.bad = malloc(nb)))
        return la__check_finite(op, name, x, n);
    la__parallel_for(ctx, (int64_t)nb, finite_task, &a);
    size_t b = 0;
    while (b < nb && !a.bad[b]) b++;
    free(a.bad);
    if (b == nb) return LA_OK;
    const size_t end = (b + 1) * PAR_BLK < n ? (b + 1) * PAR_BLK : n;
    return la__check_finite(op, name, x, end); /* the message names the first bad index */
}

la_status la__numel(const char *op, const char *name, size_t *n, int64_t a, int64_t b,
                    int64_t c, int64_t d) {
    const int64_t f[4] = {a, b, c, d};
    size_t total = 1;
    for (int i = 0; i < 4; i++) {
        if (f[i] < 1)
            return la__error(LA_ERR_INVALID_SIZE, "%s: %s has a dimension of size %" PRId64
                             " (sizes must be >= 1)", op, name, f[i]);
        if ((uint64_t)f[i] > SIZE_MAX / sizeof(float) / total)
            return la__error(LA_ERR_INVALID_SIZE,
                             "%s: %s has %" PRId64 " x %" PRId64 " x %" PRId64 " x %" PRId64
                             " elements, which overflows size_t", op, name, a, b, c, d);
        total *= (size_t)f[i];
    }
    *n = total;
    return LA_OK;
}

la_status la__check_dtype_known(const char *op, const la_dims *d) {
    if ((unsigned)d->dtype > LA_DTYPE_F16)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: dims.dtype = %d is not a known la_dtype",
                         op, (int)d->dtype);
    return LA_OK;
}

la_status la__check_dtype_cpu(const char *op, const la_dims *d) {
    la_status st = la__check_dtype_known(op, d);
    if (st) return st;
    if (d->dtype != LA_DTYPE_F32)
        return la__error(LA_ERR_UNSUPPORTED,
                         "%s: dims.dtype = %s on a CPU context (the CPU backend computes in "
                         "float32 only; bf16/fp16 need a CUDA context)", op,
                         d->dtype == LA_DTYPE_BF16 ? "LA_DTYPE_BF16" : "LA_DTYPE_F16");
    return LA_OK;
}

la_status la__check_dims(const char *op, const la_dims *d, int allow_hv) {
    la_status st = la__check_shape(op, d, allow_hv);
    if (st) return st;
    return la__check_dtype_cpu(op, d);
}

la_status la__check_shape(const char *op, const la_dims *d, int allow_hv) {
    la_status st = la__check_ptr(op, "dims", d);
    if (st) return st;
    const struct { const char *name; int64_t v; } sz[] = {
        {"B", d->B}, {"T", d->T}, {"H", d->H}, {"K", d->K}, {"V", d->V}};
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++)
        if (sz[i].v < 1)
            return la__error(LA_ERR_INVALID_SIZE, "%s: dims.%s = %" PRId64 " (must be >= 1)",
                             op, sz[i].name, sz[i].v);
    if (d->HV < 0)
        return la__error(LA_ERR_INVALID_SIZE, "%s: dims.HV = %" PRId64 " (must be >= 0)", op,
                         d->HV);
    if (d->HV != 0 && d->HV != d->H) {
        if (!allow_hv)
            return la__error(LA_ERR_SHAPE_MISMATCH,
                             "%s: dims.HV = %" PRId64 " differs from H = %" PRId64
                             " (only Gated DeltaNet has separate value heads)", op, d->HV, d->H);
        if (d->HV % d->H != 0)
            return la__error(LA_ERR_SHAPE_MISMATCH,
                             "%s: value heads HV = %" PRId64 " are not a multiple of H = %" PRId64,
                             op, d->HV, d->H);
    }
    const int64_t HS = la__value_heads(d);
    size_t n;
    if ((st = la__numel(op, "q/k", &n, d->B, d->T, d->H, d->K))) return st;
    if ((st = la__numel(op, "v/o", &n, d->B, d->T, HS, d->V))) return st;
    if (d->cu_seqlens == NULL) {
        if (d->n_seqs != 0 && d->n_seqs != d->B)
            return la__error(LA_ERR_SHAPE_MISMATCH,
                             "%s: dims.n_seqs = %" PRId64 " without cu_seqlens (leave it 0)", op,
                             d->n_seqs);
    } else {
        if (d->B != 1)
            return la__error(LA_ERR_BAD_SEQLENS,
                             "%s: cu_seqlens needs B == 1 (packed sequences), got B = %" PRId64,
                             op, d->B);
        if (d->n_seqs < 1)
            return la__error(LA_ERR_BAD_SEQLENS, "%s: dims.n_seqs = %" PRId64
                             " with cu_seqlens (must be >= 1)", op, d->n_seqs);
        if (d->cu_seqlens[0] != 0)
            return la__error(LA_ERR_BAD_SEQLENS, "%s: cu_seqlens[0] = %" PRId64 " (must be 0)",
                             op, d->cu_seqlens[0]);
        for (int64_t i = 1; i <= d->n_seqs; i++)
            if (d->cu_seqlens[i] < d->cu_seqlens[i - 1])
                return la__error(LA_ERR_BAD_SEQLENS,
                                 "%s: cu_seqlens decreases at index %" PRId64 " (%" PRId64
                                 " after %" PRId64 ")", op, i, d->cu_seqlens[i],
                                 d->cu_seqlens[i - 1]);
        if (d->cu_seqlens[d->n_seqs] != d->T)
            return la__error(LA_ERR_BAD_SEQLENS,
                             "%s: cu_seqlens ends at %" PRId64 " but T = %" PRId64, op,
                             d->cu_seqlens[d->n_seqs], d->T);
    }
    const int64_t N = la__num_seqs(d);
    if ((st = la__numel(op, "state", &n, N, HS, d->K, d->V))) return st;
    return LA_OK;
}

int64_t la__num_seqs(const la_dims *d) { return d->cu_seqlens ? d->n_seqs : d->B; }

int64_t la__value_heads(const la_dims *d) { return d->HV ? d->HV : d->H; }

void la__seq_bounds(const la_dims *d, int64_t n, int64_t *start, int64_t *len) {
    if (d->cu_seqlens) {
        *start = d->cu_seqlens[n];
        *len = d->cu_seqlens[n + 1] - d->cu_seqlens[n];
    } else {
        *start = n * d->T;
        *len = d->T;
    }
}

int64_t la__max_seq_len(const la_dims *d) {
    if (!d->cu_seqlens) return d->T;
    int64_t m = 0;
    for (int64_t n = 0; n < d->n_seqs; n++) {
        const int64_t len = d->cu_seqlens[n + 1] - d->cu_seqlens[n];
        if (len > m) m = len;
    }
    return m;
}

la_status la__resolve_scale(const char *op, float scale, int64_t K, float *out) {
    if (!isfinite(scale) || scale < 0)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: scale = %g (must be finite and >= 0; 0 means K^-1/2)", op,
                         (double)scale);
    *out = scale == 0 ? (float)(1.0 / sqrt((double)K)) : scale;
    return LA_OK;
}

la_status la__check_log_gate(const char *op, const char *name, const float *g, size_t n) {
    const size_t b0 = first_bad_gate_block(g, n);
    for (size_t i = b0; i < n; i++) {
        if (!isfinite(g[i]))
            return la__error(LA_ERR_NON_FINITE, "%s: %s[%zu] is %s (log-gates must be finite;"
                             " use a large negative value such as -1e4 for a full reset)",
                             op, name, i, isnan(g[i]) ? "NaN" : "Inf");
        if (g[i] > 0)
            return la__error(LA_ERR_INVALID_ARGUMENT,
                             "%s: %s[%zu] = %g (log-gates must be <= 0, e.g. logsigmoid(x))", op,
                             name, i, (double)g[i]);
    }
    return LA_OK;
}

la_status la__check_beta(const char *op, const char *name, const float *beta, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(beta[i]))
            return la__error(LA_ERR_NON_FINITE, "%s: %s[%zu] is %s", op, name, i,
                             isnan(beta[i]) ? "NaN" : "Inf");
        if (beta[i] < 0 || beta[i] > 2)
            return la__error(LA_ERR_INVALID_ARGUMENT,
                             "%s: %s[%zu] = %g (beta must lie in [0, 2])", op, name, i,
                             (double)beta[i]);
    }
    return LA_OK;
}
