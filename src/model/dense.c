/* Dense layers of the model (see dense.h). Plain C loops ordered so that
 * the compiler vectorises over the contiguous output dimension; every output
 * element sums its terms in index order. */
#include "dense.h"
#include "gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void lm_matmul(lm_pool *p, float *y, const float *x, const float *w, int64_t M, int64_t Kin,
               int64_t N) {
    lm_gemm(p, y, x, w, M, Kin, N, 0);
}

void lm_matmul_dx(lm_pool *p, float *dx, const float *dy, const float *w, float *wt, int64_t M,
                  int64_t Kin, int64_t N, int acc) {
    lm_transpose(wt, w, Kin, N);
    lm_gemm(p, dx, dy, wt, M, N, Kin, acc);
}

void lm_matmul_dw(lm_pool *p, float *dw, const float *x, const float *dy, float *xt, int64_t M,
                  int64_t Kin, int64_t N, int acc) {
    (void)xt; /* x^T read in place: dw[k,n] chains over m in order */
    lm_gemm_strided(p, dw, x, 1, Kin, dy, Kin, M, N, acc);
}

void lm_rmsnorm(float *y, float *rstd, const float *x, const float *w, int64_t M, int64_t D,
                float eps) {
    for (int64_t m = 0; m < M; m++) {
        const float *xr = x + m * D;
        double ss = 0.0;
        for (int64_t d = 0; d < D; d++) ss += (double)xr[d] * xr[d];
        const float r = (float)(1.0 / sqrt(ss / (double)D + (double)eps));
        if (rstd) rstd[m] = r;
        for (int64_t d = 0; d < D; d++) y[m * D + d] = xr[d] * r * w[d];
    }
}

void lm_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                         const float *rstd, int64_t M, int64_t D, int acc_dx) {
    for (int64_t m = 0; m < M; m++) {
        const float *xr = x + m * D, *gr = dy + m * D;
        const float r = rstd[m];
        double dot = 0.0;
        for (int64_t d = 0; d < D; d++) dot += (double)gr[d] * w[d] * xr[d];
        const float c = (float)(dot * (double)r * r * r / (double)D);
        float *dr = dx + m * D;
        for (int64_t d = 0; d < D; d++) {
            const float v = gr[d] * w[d] * r - xr[d] * c;
            dr[d] = acc_dx ? dr[d] + v : v;
        }
    }
    for (int64_t m = 0; m < M; m++) {
        const float *xr = x + m * D, *gr = dy + m * D;
        const float r = rstd[m];
        for (int64_t d = 0; d < D; d++) dw[d] += gr[d] * xr[d] * r;
    }
}

void lm_swiglu(float *a, const float *h1, const float *h3, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] = h1[i] * lm_sigmoidf(h1[i]) * h3[i];
}

void lm_swiglu_backward(float *dh1, float *dh3, const float *da, const float *h1, const float *h3,
                        int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float s = lm_sigmoidf(h1[i]);
        const float silu = h1[i] * s;
        dh3[i] = da[i] * silu;
        dh1[i] = da[i] * h3[i] * (s + silu * (1.0f - s));
    }
}

void lm_conv(float *y, float *pre, const float *x, const float *w, int64_t B, int64_t T, int64_t C,
             int64_t ks) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            float *yr = y + (b * T + t) * C;
            for (int64_t c = 0; c < C; c++) yr[c] = 0.0f;
            for (int64_t j = 0; j < ks; j++) {
                const int64_t ts = t - (ks - 1) + j;
                if (ts < 0) continue;
                const float *xr = x + (b * T + ts) * C, *wr = w + j * C;
                for (int64_t c = 0; c < C; c++) yr[c] += wr[c] * xr[c];
            }
            if (pre) memcpy(pre + (b * T + t) * C, yr, (size_t)C * sizeof(float));
            for (int64_t c = 0; c < C; c++) yr[c] = yr[c] * lm_sigmoidf(yr[c]);
        }
}

void lm_conv_backward(float *dx, float *dw, const float *dy, const float *x, const float *pre,
                      const float *w, int64_t B, int64_t T, int64_t C, int64_t ks) {
    memset(dx, 0, (size_t)(B * T * C) * sizeof(float));
    float dp_stack[512];
    float *dp = C <= 512 ? dp_stack : malloc((size_t)C * sizeof(float));
    if (!dp) return; /* callers size C far below what malloc can fail on */
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const float *pr = pre + (b * T + t) * C, *gr = dy + (b * T + t) * C;
            for (int64_t c = 0; c < C; c++) {
                const float s = lm_sigmoidf(pr[c]);
                dp[c] = gr[c] * (s + pr[c] * s * (1.0f - s));
            }
            for (int64_t j = 0; j < ks; j++) {
                const int64_t ts = t - (ks - 1) + j;
                if (ts < 0) continue;
                const float *xr = x + (b * T + ts) * C, *wr = w + j * C;
                float *dxr = dx + (b * T + ts) * C, *dwr = dw + j * C;
                for (int64_t c = 0; c < C; c++) {
                    dxr[c] += wr[c] * dp[c];
                    dwr[c] += xr[c] * dp[c];
                }
            }
        }
    if (dp != dp_stack) free(dp);
}

double lm_cross_entropy(float *dlogits, const float *logits, const int32_t *targets, int64_t M,
                        int64_t Vt, double inv_count, int64_t *n_counted, int64_t *n_correct) {
    double total = 0.0;
    int64_t cnt = 0, cor = 0;
    for (int64_t m = 0; m < M; m++) {
        const float *lr = logits + m * Vt;
        const int32_t tg = targets[m];
        if (tg < 0) {
            if (dlogits) memset(dlogits + m * Vt, 0, (size_t)Vt * sizeof(float));
            continue;
        }
        int64_t arg = 0;
        float mx = lr[0];
        for (int64_t v = 1; v < Vt; v++)
            if (lr[v] > mx) mx = lr[v], arg = v;
        double se = 0.0;
        for (int64_t v = 0; v < Vt; v++) se += exp((double)lr[v] - mx);
        const double lse = mx + log(se);
        total += lse - lr[tg];
        cnt++;
        cor += arg == tg;
        if (dlogits)
            for (int64_t v = 0; v < Vt; v++) {
                double p = exp((double)lr[v] - lse);
                dlogits[m * Vt + v] = (float)((p - (v == tg)) * inv_count);
            }
    }
    if (n_counted) *n_counted = cnt;
    if (n_correct) *n_correct = cor;
    return total;
}
