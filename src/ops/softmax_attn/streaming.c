/* Streaming (flash-attention style) softmax attention: O(T*D) memory.
 *
 * Forward: a block of queries walks over key blocks of the same size, keeping
 * per query the running max m, the running sum l of exp(s - m) and the
 * unnormalised output acc; when a key block raises the max, l and acc are
 * rescaled by exp(m_old - m_new) first, so no exp ever sees a positive
 * argument and large logits cannot overflow. o = acc / l, lse = m + log l.
 * The products of a (query block, key block) pair run on the float32
 * micro-kernels: S = scale·Q Kᵀ (gemm_nt) and P·V (gemm_nn) on contiguous
 * copies of the blocks; see stream_rows.
 *
 * Backward (flash-attention-2): pass 1 recomputes lse_i and
 * D_i = dO_i . O_i = Σ_j p_ij (dO_i . v_j) per query (from the float dP
 * tiles pass 2 recomputes bit for bit, accumulated in double); pass 2 walks
 * over key blocks and, for every query block that sees the block, forms
 * S = scale Q Kᵀ, P = exp(S - lse), dP = dO Vᵀ, dS = P (dP - D) and the
 * products dV += Pᵀ dO, dK += dSᵀ Q, dQ += dS K, all float micro-kernel
 * calls whose tiles are added to double accumulators. dQ is summed over key
 * blocks in a per-head [len, K] accumulator (flash-attention uses atomics
 * there; one task per head needs none, and the order is fixed, so nothing
 * depends on the thread
 * count). Extra memory O(len (K + 2) + block (block + 2K + 2V)). */
#include "softmax_attn.h"
#include "../../kernels/vexp.h"

#include <math.h>
#include <string.h>

typedef struct stream_work {
    float *S;    /* [block, block] scores of the current tile, then P */
    double *acc; /* [n, V] unnormalised outputs */
    float *m;    /* [n] running max */
    double *l;   /* [n] running sum of exp(s - m) */
    float *qb, *kb, *vb; /* [n, K], [block, K], [block, V]: contiguous copies */
    float *pv;   /* [n, V] P·V of the current key block */
    /* backward pass 1 only (NULL otherwise): D_i = Σ_j p_ij (dO_i·v_j)
     * accumulated online like acc, from the same float dP tile that pass 2
     * computes, so that dS = P ⊙ (dP - D) cancels exactly where it should */
    float *dob, *dP; /* [n, V] dO rows, [block, block] dP = dO Vᵀ */
    double *dacc;    /* [n] */
} stream_work;

static stream_work take_stream_work(la__arena *p, int64_t block, int64_t K, int64_t V) {
    stream_work w;
    const uint64_t b = (uint64_t)block;
    w.S = la__arena_take(p, b * b, sizeof(float));
    w.acc = la__arena_take(p, b * (uint64_t)V, sizeof(double));
    w.m = la__arena_take(p, b, sizeof(float));
    w.l = la__arena_take(p, b, sizeof(double));
    w.qb = la__arena_take(p, b * (uint64_t)K, sizeof(float));
    w.kb = la__arena_take(p, b * (uint64_t)K, sizeof(float));
    w.vb = la__arena_take(p, b * (uint64_t)V, sizeof(float));
    w.pv = la__arena_take(p, b * (uint64_t)V, sizeof(float));
    w.dob = w.dP = NULL;
    w.dacc = NULL;
    return w;
}

/* The backward's buffers beyond the forward's work. */
typedef struct stream_bwd {
    double *lse, *D, *dq_acc, *dk_acc, *dv_acc, *s_row, *dp_row;
    float *dob, *dP, *tk;
} stream_bwd;

static stream_bwd take_stream_bwd(la__arena *p, int64_t len, int64_t block, int64_t K,
                                  int64_t V) {
    const uint64_t L = (uint64_t)len, B = (uint64_t)block;
    stream_bwd w;
    w.lse = la__arena_take(p, L, sizeof(double));
    w.D = la__arena_take(p, L, sizeof(double));
    w.dq_acc = la__arena_take(p, L * (uint64_t)K, sizeof(double));
    w.dk_acc = la__arena_take(p, B * (uint64_t)K, sizeof(double));
    w.dv_acc = la__arena_take(p, B * (uint64_t)V, sizeof(double));
    w.s_row = la__arena_take(p, B, sizeof(double));
    w.dp_row = la__arena_take(p, B, sizeof(double));
    w.dob = la__arena_take(p, B * (uint64_t)V, sizeof(float));
    w.dP = la__arena_take(p, B * B, sizeof(float));
    w.tk = la__arena_take(p, B * (uint64_t)K, sizeof(float)); /* dK / dQ tile */
    return w;
}

int sa_streaming_forward_bytes(int64_t block, int64_t K, int64_t V, size_t *bytes) {
    uint64_t b = (uint64_t)block;
    if (b > UINT64_MAX / b || (uint64_t)V > UINT64_MAX / b || (uint64_t)K > UINT64_MAX / b)
        return 0;
    la__arena a = {NULL, 0, 0};
    take_stream_work(&a, block, K, V);
    *bytes = a.used;
    return !a.overflow;
}

int sa_streaming_backward_bytes(int64_t Tmax, int64_t block, int64_t K, int64_t V,
                                size_t *bytes) {
    uint64_t t = (uint64_t)Tmax, b = (uint64_t)block;
    if (b > UINT64_MAX / b || (uint64_t)K > UINT64_MAX / t || (uint64_t)K > UINT64_MAX / b ||
        (uint64_t)V > UINT64_MAX / b)
        return 0;
    la__arena a = {NULL, 0, 0};
    take_stream_work(&a, block, K, V);
    take_stream_bwd(&a, Tmax, block, K, V);
    *bytes = a.used;
    return !a.overflow;
}

/* n rows of width D, row stride `stride`, into a contiguous block; rows of
 * one head are H·D floats apart in tensors larger than the caches, so a few
 * rows ahead are prefetched. */
static void copy_rows(float *dst, const float *src, int64_t stride, int64_t n, int64_t D) {
    for (int64_t i = 0; i < n; i++) {
#if defined(__GNUC__)
        if (i + 4 < n)
            for (int64_t c = 0; c < D; c += 16) __builtin_prefetch(src + (i + 4) * stride + c, 0, 3);
#endif
        memcpy(dst + i * D, src + i * stride, (size_t)D * sizeof(float));
    }
}

/* s[j] = e^(s[j] - m) for j < n (s[j] <= m), through the vectorised exp of
 * vexp.h; the same bits from both builds. */
static LA__VECTORISE void exp_shift_base(float *restrict s, int64_t n, float m) {
    for (int64_t j = 0; j < n; j++) {
        float e;
        LA__EXP_NONPOS(e, s[j] - m);
        s[j] = e;
    }
}
#if defined(__x86_64__) && defined(__GNUC__)
#define SA_HAVE_AVX2_CLONE 1
static LA__VECTORISE __attribute__((target("avx2"))) void exp_shift_avx2(float *restrict s,
                                                                         int64_t n, float m) {
    for (int64_t j = 0; j < n; j++) {
        float e;
        LA__EXP_NONPOS(e, s[j] - m);
        s[j] = e;
    }
}
#endif

static void exp_shift(const sa_head *hd, float *s, int64_t n, float m) {
#if defined(SA_HAVE_AVX2_CLONE)
    if (hd->kr->isa != LA_ISA_PORTABLE) {
        exp_shift_avx2(s, n, m);
        return;
    }
#endif
    (void)hd;
    exp_shift_base(s, n, m);
}

/* Σ s[j] in double, four interleaved partial sums in a fixed order. */
static double sum_d(const float *s, int64_t n) {
    double p0 = 0, p1 = 0, p2 = 0, p3 = 0;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        p0 += s[j];
        p1 += s[j + 1];
        p2 += s[j + 2];
        p3 += s[j + 3];
    }
    for (; j < n; j++) p0 += s[j];
    return (p0 + p1) + (p2 + p3);
}

/* Online softmax of query rows [r0, r0 + n) over every visible key: leaves
 * acc, m, l in w. Per key block: the score tile S = scale·Q Kᵀ (gemm_nt on
 * contiguous copies, float), P = e^(S - m) in place (masked entries 0), and
 * P·V (gemm_nn) into a float tile that is added to the double accumulator,
 * so the long sum over key blocks stays in double. A row whose float
 * scores overflow (|q|, |k| ~ 1e20) is recomputed in double with
 * saturation (sa_scores), as before. */
static void stream_rows(const sa_head *hd, int64_t r0, int64_t n, const stream_work *w) {
    const la__kernels *kr = hd->kr;
    const int64_t B = hd->block, K = hd->K, V = hd->V;
    const int64_t kv_end = sa_visible(hd, r0 + n - 1); /* visibility grows with t */
    for (int64_t i = 0; i < n; i++) {
        w->m[i] = -INFINITY;
        w->l[i] = 0;
    }
    memset(w->acc, 0, (size_t)n * (size_t)V * sizeof *w->acc);
    copy_rows(w->qb, hd->q + r0 * hd->qk_stride, hd->qk_stride, n, K);
    if (w->dacc) {
        memset(w->dacc, 0, (size_t)n * sizeof *w->dacc);
        copy_rows(w->dob, hd->d_o + r0 * hd->v_stride, hd->v_stride, n, V);
    }

    for (int64_t kb = 0; kb < kv_end; kb += B) {
        const int64_t ke = kb + B < kv_end ? kb + B : kv_end, nk = ke - kb;
        copy_rows(w->kb, hd->k + kb * hd->qk_stride, hd->qk_stride, nk, K);
        copy_rows(w->vb, hd->v + kb * hd->v_stride, hd->v_stride, nk, V);
        kr->gemm_nt(n, nk, K, hd->scale, w->qb, K, w->kb, K, 0.0f, w->S, B);
        if (w->dacc) kr->gemm_nt(n, nk, V, 1.0f, w->dob, V, w->vb, V, 0.0f, w->dP, B);
        for (int64_t i = 0; i < n; i++) {
            const int64_t vis = sa_visible(hd, r0 + i);
            const int64_t cnt = (vis < ke ? vis : ke) - kb;
            float *s = w->S + i * B;
            if (cnt <= 0) {
                memset(s, 0, (size_t)nk * sizeof(float));
                continue;
            }
            float mt = s[0];
            int finite = 1;
            for (int64_t j = 0; j < cnt; j++) {
                finite &= isfinite(s[j]) != 0;
                if (s[j] > mt) mt = s[j];
            }
            if (!finite) {
                sa_scores(w->qb + i * K, w->kb, K, cnt, K, (double)hd->scale, s);
                mt = s[0];
                for (int64_t j = 1; j < cnt; j++)
                    if (s[j] > mt) mt = s[j];
            }
            double *acc = w->acc + i * V;
            if (mt > w->m[i]) { /* new max: rescale what was summed so far */
                if (w->m[i] != -INFINITY) {
                    const double alpha = exp((double)w->m[i] - (double)mt);
                    w->l[i] *= alpha;
                    for (int64_t d = 0; d < V; d++) acc[d] *= alpha;
                    if (w->dacc) w->dacc[i] *= alpha;
                }
                w->m[i] = mt;
            }
            exp_shift(hd, s, cnt, w->m[i]);
            if (cnt < nk) memset(s + cnt, 0, (size_t)(nk - cnt) * sizeof(float));
            w->l[i] += sum_d(s, cnt);
            if (w->dacc) {
                const float *dp = w->dP + i * B;
                double d = 0;
                for (int64_t jj = 0; jj < cnt; jj++) d += (double)s[jj] * (double)dp[jj];
                w->dacc[i] += d;
            }
        }
        kr->gemm_nn(n, V, nk, 1.0f, w->S, B, w->vb, V, 0.0f, w->pv, V);
        for (int64_t i = 0; i < n; i++) {
            double *acc = w->acc + i * V;
            const float *pv = w->pv + i * V;
            for (int64_t d = 0; d < V; d++) acc[d] += (double)pv[d];
        }
    }
}

void sa_streaming_forward_rows(const sa_head *hd, int64_t r0, int64_t n, void *scratch) {
    la__arena p = {(char *)scratch, 0, 0};
    const stream_work w = take_stream_work(&p, hd->block, hd->K, hd->V);
    const int64_t V = hd->V;
    stream_rows(hd, r0, n, &w);
    for (int64_t i = 0; i < n; i++) {
        float *oi = hd->o + (r0 + i) * hd->v_stride;
        const double *acc = w.acc + i * V;
        for (int64_t d = 0; d < V; d++) oi[d] = (float)(acc[d] / w.l[i]);
        if (hd->lse) hd->lse[(r0 + i) * hd->lse_stride] = (float)((double)w.m[i] + log(w.l[i]));
    }
}

void sa_streaming_backward(const sa_head *hd, void *scratch) {
    const int64_t L = hd->len, B = hd->block, K = hd->K, V = hd->V, kv = hd->kv_len;
    const double scale = hd->scale;
    la__arena p = {(char *)scratch, 0, 0};
    const stream_work w = take_stream_work(&p, B, K, V);
    const stream_bwd bw = take_stream_bwd(&p, L, B, K, V);
    double *lse = bw.lse, *D = bw.D, *dq_acc = bw.dq_acc, *dk_acc = bw.dk_acc,
           *dv_acc = bw.dv_acc, *s_row = bw.s_row, *dp_row = bw.dp_row;
    float *dob = bw.dob, *dP = bw.dP, *tk = bw.tk;

    /* Pass 1: lse and D = rowsum(dO o O) = Σ_j p_ij (dO_i·v_j), the latter
     * from the dP tiles that pass 2 recomputes bit for bit (same calls on
     * the same blocks), accumulated in double. */
    {
        stream_work w1 = w;
        w1.dob = dob;
        w1.dP = dP;
        w1.dacc = s_row; /* [block] doubles */
        for (int64_t r0 = 0; r0 < L; r0 += B) {
            const int64_t n = r0 + B < L ? B : L - r0;
            stream_rows(hd, r0, n, &w1);
            for (int64_t i = 0; i < n; i++) {
                D[r0 + i] = w1.dacc[i] / w.l[i];
                lse[r0 + i] = (double)w.m[i] + log(w.l[i]);
            }
        }
    }
    (void)dp_row;
    const la__kernels *kr = hd->kr;

    /* Pass 2: key blocks outer, query blocks inner, every product a float
     * micro-kernel call on contiguous copies; each tile's contribution is
     * added to the double accumulators, so the sums across blocks stay in
     * double. For a (query block, key block) pair, rows i, columns j:
     *   S = scale·Q Kᵀ, P = e^(S - lse) (0 where masked), dP = dO Vᵀ,
     *   dS = P ⊙ (dP - D); dV += Pᵀ dO, dK += dSᵀ Q, dQ += dS K
     * (the scale of dK and dQ is applied when they are written). */
    memset(dq_acc, 0, (size_t)L * (size_t)K * sizeof *dq_acc);
    for (int64_t kb = 0; kb < kv; kb += B) {
        const int64_t ke = kb + B < kv ? kb + B : kv, nk = ke - kb;
        memset(dk_acc, 0, (size_t)B * (size_t)K * sizeof *dk_acc);
        memset(dv_acc, 0, (size_t)B * (size_t)V * sizeof *dv_acc);
        copy_rows(w.kb, hd->k + kb * hd->qk_stride, hd->qk_stride, nk, K);
        copy_rows(w.vb, hd->v + kb * hd->v_stride, hd->v_stride, nk, V);
        /* Causal: queries before kb see none of these keys (query blocks
         * are aligned like the key blocks). */
        for (int64_t r0 = hd->causal ? kb : 0; r0 < L; r0 += B) {
            const int64_t n = r0 + B < L ? B : L - r0;
            copy_rows(w.qb, hd->q + r0 * hd->qk_stride, hd->qk_stride, n, K);
            copy_rows(dob, hd->d_o + r0 * hd->v_stride, hd->v_stride, n, V);
            kr->gemm_nt(n, nk, K, hd->scale, w.qb, K, w.kb, K, 0.0f, w.S, B);
            kr->gemm_nt(n, nk, V, 1.0f, dob, V, w.vb, V, 0.0f, dP, B);
            for (int64_t i = 0; i < n; i++) {
                const int64_t vis = sa_visible(hd, r0 + i);
                const int64_t cnt = (vis < ke ? vis : ke) - kb;
                float *srow = w.S + i * B, *dprow = dP + i * B;
                if (cnt <= 0) {
                    memset(srow, 0, (size_t)nk * sizeof(float));
                    memset(dprow, 0, (size_t)nk * sizeof(float));
                    continue;
                }
                int finite = 1;
                for (int64_t jj = 0; jj < cnt; jj++) finite &= isfinite(srow[jj]) != 0;
                if (!finite)
                    sa_scores(w.qb + i * K, w.kb, K, cnt, K, (double)hd->scale, srow);
                const double li = lse[r0 + i];
                for (int64_t jj = 0; jj < cnt; jj++) srow[jj] = (float)((double)srow[jj] - li);
                exp_shift(hd, srow, cnt, 0.0f);
                if (cnt < nk) memset(srow + cnt, 0, (size_t)(nk - cnt) * sizeof(float));
                const float Di = (float)D[r0 + i];
                for (int64_t jj = 0; jj < nk; jj++) dprow[jj] = srow[jj] * (dprow[jj] - Di);
            }
            /* dV += Pᵀ dO */
            kr->gemm_tn(nk, V, n, 1.0f, w.S, B, dob, V, 0.0f, w.pv, V);
            for (int64_t x = 0; x < nk * V; x++) dv_acc[x] += (double)w.pv[x];
            /* dK += dSᵀ Q */
            kr->gemm_tn(nk, K, n, 1.0f, dP, B, w.qb, K, 0.0f, tk, K);
            for (int64_t x = 0; x < nk * K; x++) dk_acc[x] += (double)tk[x];
            /* dQ += dS K */
            kr->gemm_nn(n, K, nk, 1.0f, dP, B, w.kb, K, 0.0f, tk, K);
            double *dqr = dq_acc + r0 * K;
            for (int64_t x = 0; x < n * K; x++) dqr[x] += (double)tk[x];
        }
        for (int64_t j = kb; j < ke; j++) {
            float *dkj = hd->dk + j * hd->qk_stride, *dvj = hd->dv + j * hd->v_stride;
            for (int64_t c = 0; c < K; c++) dkj[c] = (float)(scale * dk_acc[(j - kb) * K + c]);
            for (int64_t d = 0; d < V; d++) dvj[d] = (float)dv_acc[(j - kb) * V + d];
        }
    }
    for (int64_t j = kv; j < L; j++) { /* padding keys take no part */
        float *dkj = hd->dk + j * hd->qk_stride, *dvj = hd->dv + j * hd->v_stride;
        for (int64_t c = 0; c < K; c++) dkj[c] = 0;
        for (int64_t d = 0; d < V; d++) dvj[d] = 0;
    }
    for (int64_t i = 0; i < L; i++) {
        float *dqi = hd->dq + i * hd->qk_stride;
        for (int64_t c = 0; c < K; c++) dqi[c] = (float)(scale * dq_acc[i * K + c]);
    }
}
