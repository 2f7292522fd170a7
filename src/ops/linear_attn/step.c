/* One token of causal kernel linear attention for one (sequence, head): the
 * recurrent form runs exactly this per token, and so does the decoder, so
 * decoding equals the recurrent form bit for bit. */
#include "linear_attn.h"
#include "../../kernels/rowvec.h"

#if defined(__GNUC__)
#define LIN_INLINE static inline __attribute__((always_inline))
#else
#define LIN_INLINE static inline
#endif

/* S_t = S_{t-1} + kfᵀ v and o = qf S_t in one pass over S: each row is
 * updated and at once added into o while it is in registers. Every element
 * sees the same operations in the same order (rows in order, no
 * contraction) whatever the vector width, so the AVX2 build of this loop
 * rounds exactly as the portable one. */
#ifdef LA_ROWVEC
/* Columns [x0, x0 + 16 nv): o's block in registers while the rows go by
 * (each element of S loaded and stored once). */
LIN_INLINE void lin_block(const int nv, int64_t K, int64_t V, int64_t x0, float *restrict S,
                          float *restrict o, const float *restrict qf, const float *restrict kf,
                          const float *restrict v) {
    la__v16 vv[LA_ROWVEC_MAXV], acc[LA_ROWVEC_MAXV];
    const la__v16 zero = {0};
    for (int c = 0; c < nv; c++) {
        LA_V16_LOAD(vv[c], v + x0 + 16 * c);
        acc[c] = zero;
    }
    for (int64_t i = 0; i < K; i++) {
        const float ki = kf[i], qi = qf[i];
        float *restrict row = S + i * V + x0;
        for (int c = 0; c < nv; c++) {
            la__v16 s;
            LA_V16_LOAD(s, row + 16 * c);
            s = s + ki * vv[c];
            LA_V16_STORE(row + 16 * c, s);
            acc[c] = acc[c] + qi * s;
        }
    }
    for (int c = 0; c < nv; c++) LA_V16_STORE(o + x0 + 16 * c, acc[c]);
}

LIN_INLINE void lin_block8(const int nv, int64_t K, int64_t V, int64_t x0, float *restrict S,
                          float *restrict o, const float *restrict qf, const float *restrict kf,
                          const float *restrict v) {
    la__v8 vv[LA_ROWVEC_MAXV], acc[LA_ROWVEC_MAXV];
    const la__v8 zero = {0};
    for (int c = 0; c < nv; c++) {
        LA_V8_LOAD(vv[c], v + x0 + 8 * c);
        acc[c] = zero;
    }
    for (int64_t i = 0; i < K; i++) {
        const float ki = kf[i], qi = qf[i];
        float *restrict row = S + i * V + x0;
        for (int c = 0; c < nv; c++) {
            la__v8 s;
            LA_V8_LOAD(s, row + 8 * c);
            s = s + ki * vv[c];
            LA_V8_STORE(row + 8 * c, s);
            acc[c] = acc[c] + qi * s;
        }
    }
    for (int c = 0; c < nv; c++) LA_V8_STORE(o + x0 + 8 * c, acc[c]);
}
#endif

/* S_t = S_{t-1} + kfᵀ v and o = qf S_t, column block by column block
 * (blocks of 16 * wide, then of 32, then single columns). */
LIN_INLINE void lin_rows(const int wide, int64_t K, int64_t V, float *restrict S,
                         float *restrict o, const float *restrict qf, const float *restrict kf,
                         const float *restrict v) {
    int64_t x0 = 0;
#ifdef LA_ROWVEC
    const int nv8 = wide == LA_ROWVEC_NARROW ? 0 : 4; /* baseline: the plain loop below */
    for (; wide == LA_ROWVEC_WIDE && x0 + 128 <= V; x0 += 128) lin_block(8, K, V, x0, S, o, qf, kf, v);
    for (; nv8 && x0 + 8 * nv8 <= V; x0 += 8 * nv8)
        lin_block8(nv8, K, V, x0, S, o, qf, kf, v);
#else
    (void)wide;
#endif
    if (x0 == V) return;
    for (int64_t x = x0; x < V; x++) o[x] = 0;
    for (int64_t i = 0; i < K; i++) {
        const float ki = kf[i], qi = qf[i];
        float *restrict row = S + i * V;
        for (int64_t x = x0; x < V; x++) {
            const float s = row[x] + ki * v[x];
            row[x] = s;
            o[x] += qi * s;
        }
    }
}

static void lin_rows_portable(int64_t K, int64_t V, float *restrict S, float *restrict o,
                              const float *restrict qf, const float *restrict kf,
                              const float *restrict v) {
    lin_rows(LA_ROWVEC_NARROW, K, V, S, o, qf, kf, v);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define LIN_STEP_AVX2 1
__attribute__((target("avx2"))) static void
lin_rows_avx2(int64_t K, int64_t V, float *restrict S, float *restrict o, const float *restrict qf,
              const float *restrict kf, const float *restrict v) {
    lin_rows(LA_ROWVEC_AVX2, K, V, S, o, qf, kf, v);
}

__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2"))) static void
lin_rows_avx512(int64_t K, int64_t V, float *restrict S, float *restrict o,
                const float *restrict qf, const float *restrict kf, const float *restrict v) {
    lin_rows(LA_ROWVEC_WIDE, K, V, S, o, qf, kf, v);
}
#endif

/* la__phi_row with the feature map hoisted out of the loop, so that the
 * identity and relu rows vectorise; the same values (c * phi(x)) bit for
 * bit. */
static void lin_phi(la_feature_map fm, float c, float *restrict y, const float *restrict x,
                    int64_t n) {
    switch (fm) {
    case LA_FEATURE_ELU1: la__phi_row(fm, c, y, x, n); return;
    case LA_FEATURE_RELU:
        for (int64_t i = 0; i < n; i++) y[i] = c * (x[i] > 0 ? x[i] : 0.0f);
        return;
    default:
        for (int64_t i = 0; i < n; i++) y[i] = c * x[i];
        return;
    }
}

void la__lin_token(la_feature_map fm, int normalize, float eps, float c, int64_t K, int64_t V,
                   float *S, float *z, float *o, const float *q, const float *k, const float *v,
                   float *qf, float *kf, float *den) {
    lin_phi(fm, 1.0f, kf, k, K);
    lin_phi(fm, c, qf, q, K);
#ifdef LIN_STEP_AVX2
    const la_isa isa = la_isa_active();
    if (isa == LA_ISA_AVX512)
        lin_rows_avx512(K, V, S, o, qf, kf, v);
    else if (isa == LA_ISA_AVX2)
        lin_rows_avx2(K, V, S, o, qf, kf, v);
    else
#endif
        lin_rows_portable(K, V, S, o, qf, kf, v);
    if (!normalize) {
        *den = 1.0f;
        return;
    }
    for (int64_t i = 0; i < K; i++) z[i] += kf[i];
    /* No clamping: the op computes exactly o = qf S / (qf·z + eps). With
     * non-negative features (elu1, relu) qf·z >= 0 and den >= eps. */
    float d = la__dot(qf, z, K) + eps;
    *den = d;
    for (int64_t x = 0; x < V; x++) o[x] = o[x] / d;
}

void la__linear_attn_step(const la_decoder_config *cfg, float scale, float *S, float *z, float *o,
                          const float *q, const float *k, const float *v, float *work) {
    const int64_t K = cfg->K, V = cfg->V;
    const int normalize = cfg->normalize != 0;
    float den;
    la__lin_token(cfg->feature_map, normalize, cfg->eps, normalize ? 1.0f : scale, K, V, S,
                  normalize ? z : NULL, o, q, k, v, work, work + K, &den);
}
