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
LIN_INLINE void lin_rows(int64_t K, int64_t V, float *restrict S, float *restrict o,
                         const float *restrict qf, const float *restrict kf,
                         const float *restrict v) {
    int64_t x0 = 0;
#ifdef LA_ROWVEC
    /* Blocks of 32 columns: o's block in four vector registers while the
     * rows go by (each element of S loaded and stored once). */
    for (; x0 + LA_ROWVEC_COLS <= V; x0 += LA_ROWVEC_COLS) {
        la__v8 vv[4], acc[4];
        for (int c = 0; c < 4; c++) {
            LA_V8_LOAD(vv[c], v + x0 + 8 * c);
            acc[c] = (la__v8){0, 0, 0, 0, 0, 0, 0, 0};
        }
        for (int64_t i = 0; i < K; i++) {
            const float ki = kf[i], qi = qf[i];
            float *restrict row = S + i * V + x0;
            for (int c = 0; c < 4; c++) {
                la__v8 s;
                LA_V8_LOAD(s, row + 8 * c);
                s = s + ki * vv[c];
                LA_V8_STORE(row + 8 * c, s);
                acc[c] = acc[c] + qi * s;
            }
        }
        for (int c = 0; c < 4; c++) LA_V8_STORE(o + x0 + 8 * c, acc[c]);
    }
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
    lin_rows(K, V, S, o, qf, kf, v);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define LIN_STEP_AVX2 1
__attribute__((target("avx2"))) static void
lin_rows_avx2(int64_t K, int64_t V, float *restrict S, float *restrict o, const float *restrict qf,
              const float *restrict kf, const float *restrict v) {
    lin_rows(K, V, S, o, qf, kf, v);
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
    if (la_isa_active() != LA_ISA_PORTABLE)
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
