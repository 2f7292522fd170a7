/* Generation: one token per sequence per step. Linear mixers keep an
 * la_decoder state per layer (constant memory and cost per token); softmax
 * keeps a KV cache (memory and cost grow with the position). The dense
 * layers are the training ones, which round a row identically whatever the
 * number of rows, so with m->form == LA_FORM_RECURRENT the logits equal the
 * training forward's bit for bit for the linear mixers. */
#include "dense.h"
#include "gemm.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct gen_layer {
    la_decoder *dec;     /* linear mixers */
    float *kc, *vc;      /* softmax: [N, max_len, HK] */
    float *cq, *ck, *cv; /* conv history: [N, ks-1, HK] (oldest first) */
} gen_layer;

struct lm_gen {
    lm_model *m;
    int64_t N, max_len, pos;
    gen_layer *layers;
    float *mem;
    float *x, *n1, *r, *qp, *kp, *vp, *q, *k, *v, *gz, *g, *bz, *beta, *phq, *phk, *o;
    float *xm, *n2, *h1, *h3, *a, *wt, *g_gamma;
    int64_t state_bytes;
};

void lm_gen_destroy(lm_gen *g) {
    if (!g) return;
    for (int64_t l = 0; g->layers && l < g->m->cfg.n_layers; l++) {
        gen_layer *L = &g->layers[l];
        la_decoder_destroy(L->dec);
        free(L->kc);
        free(L->vc);
        free(L->cq);
        free(L->ck);
        free(L->cv);
    }
    free(g->layers);
    free(g->mem);
    free(g);
}

la_status lm_gen_create(lm_gen **out, lm_model *m, int64_t N, int64_t max_len) {
    if (!out || !m) return lm_fail(LA_ERR_NULL_POINTER, "lm_gen_create: NULL argument");
    if (N < 1 || N > 65536 || max_len < 1 || max_len > (1 << 24))
        return lm_fail(LA_ERR_INVALID_SIZE, "lm_gen_create: N = %ld, max_len = %ld", (long)N,
                       (long)max_len);
    const lm_config *c = &m->cfg;
    const int64_t D = c->d_model, H = c->n_heads, K = c->head_dim, HK = H * K, F = c->d_ff;
    const int64_t G = lm_gate_width(c), M = c->performer_m, ks = c->conv;
    lm_gen *g = calloc(1, sizeof *g);
    if (!g) return lm_fail(LA_ERR_OUT_OF_MEMORY, "lm_gen_create: out of memory");
    g->m = m, g->N = N, g->max_len = max_len;
    g->layers = calloc((size_t)c->n_layers, sizeof *g->layers);
    int64_t wmax = (int64_t)c->vocab * D;
    const int64_t sizes[] = {N * D,  N * D, N,     N * HK, N * HK, N * HK,    N * HK,    N * HK,
                             N * HK, N * G, N * G, N * H,  N * H,  N * H * M, N * H * M, N * HK,
                             N * D,  N * D, N * F, N * F,  N * F,  wmax,      H};
    float **ptrs[] = {&g->x,  &g->n1, &g->r,  &g->qp, &g->kp,   &g->vp,  &g->q,      &g->k,
                      &g->v,  &g->gz, &g->g,  &g->bz, &g->beta, &g->phq, &g->phk,    &g->o,
                      &g->xm, &g->n2, &g->h1, &g->h3, &g->a,    &g->wt,  &g->g_gamma};
    const int np = (int)(sizeof sizes / sizeof sizes[0]);
    int64_t tot = 0;
    for (int i = 0; i < np; i++) tot += sizes[i] + 16;
    g->mem = calloc((size_t)tot, sizeof(float));
    if (!g->layers || !g->mem) goto oom;
    float *cur = g->mem;
    for (int i = 0; i < np; i++) *ptrs[i] = cur, cur += sizes[i] + 16;
    la_retnet_decay(g->g_gamma, H);
    /* The tied head E^T [D, Vt], transposed once (the training forward
     * transposes it per call; the product is the same chain per element). */
    lm_transpose(g->wt, lm_p(m, T_EMBED), c->vocab, D);
    for (int l = 0; l < c->n_layers; l++) {
        gen_layer *L = &g->layers[l];
        if (ks > 1) {
            L->cq = calloc((size_t)(N * (ks - 1) * HK), sizeof(float));
            L->ck = calloc((size_t)(N * (ks - 1) * HK), sizeof(float));
            L->cv = calloc((size_t)(N * (ks - 1) * HK), sizeof(float));
            if (!L->cq || !L->ck || !L->cv) goto oom;
            g->state_bytes += 3 * N * (ks - 1) * HK * 4;
        }
        if (c->mixer == LM_SOFTMAX) {
            L->kc = malloc((size_t)(N * max_len * HK) * sizeof(float));
            L->vc = malloc((size_t)(N * max_len * HK) * sizeof(float));
            if (!L->kc || !L->vc) goto oom;
            continue;
        }
        la_decoder_config dc;
        memset(&dc, 0, sizeof dc);
        dc.N = N, dc.H = H, dc.K = K, dc.V = K;
        switch (c->mixer) {
        case LM_LINEAR:
        case LM_PERFORMER: {
            la_linear_attn_opts lo = lm_linear_opts(m);
            dc.op = LA_OP_LINEAR_ATTN;
            dc.feature_map = lo.feature_map;
            dc.normalize = lo.normalize;
            dc.eps = lo.eps;
            if (c->mixer == LM_PERFORMER) dc.K = M;
            break;
        }
        case LM_RETNET: dc.op = LA_OP_SIMPLE_GLA; break;
        case LM_GLA: dc.op = LA_OP_GLA; break;
        case LM_DELTANET: dc.op = LA_OP_DELTA_RULE, dc.use_qk_l2norm = 1; break;
        case LM_GDN: dc.op = LA_OP_GATED_DELTA_RULE, dc.use_qk_l2norm = 1; break;
#ifdef LA_HAVE_KDA
        case LM_KDA: dc.op = LA_OP_KDA, dc.use_qk_l2norm = 1; break;
#endif
        default:
            lm_gen_destroy(g);
            return lm_fail(LA_ERR_UNSUPPORTED, "generation with mixer %s is not in this build",
                           lm_mixer_name(c->mixer));
        }
        la_status st = la_decoder_create(&L->dec, &dc);
        if (st) {
            lm_gen_destroy(g);
            return lm_fail(st, "decoder for layer %d: %s", l, la_last_error());
        }
        g->state_bytes += N * H * dc.K * K * 4 + (dc.normalize ? N * H * dc.K * 4 : 0);
    }
    *out = g;
    return LA_OK;
oom:
    lm_gen_destroy(g);
    return lm_fail(LA_ERR_OUT_OF_MEMORY, "lm_gen_create: out of memory");
}

int64_t lm_gen_state_bytes(const lm_gen *g) {
    if (!g) return 0;
    const lm_config *c = &g->m->cfg;
    int64_t b = g->state_bytes;
    if (c->mixer == LM_SOFTMAX)
        b += (int64_t)c->n_layers * 2 * g->N * g->pos * c->n_heads * c->head_dim * 4;
    return b;
}

/* y = silu(sum_j w[j] x[t-(ks-1)+j]) with the history hist [N, ks-1, C]
 * (zeros before the start are skipped, as in lm_conv), then hist shifts. */
static void conv_step(float *y, float *hist, const float *x, const float *w, int64_t N, int64_t C,
                      int64_t ks, int64_t pos) {
    for (int64_t n = 0; n < N; n++) {
        float *hr = hist + n * (ks - 1) * C;
        float *yr = y + n * C;
        const float *xr = x + n * C;
        for (int64_t c = 0; c < C; c++) yr[c] = 0.0f;
        for (int64_t j = 0; j < ks; j++) {
            if (pos - (ks - 1) + j < 0) continue;
            const float *src = j == ks - 1 ? xr : hr + j * C;
            for (int64_t c = 0; c < C; c++) yr[c] += w[j * C + c] * src[c];
        }
        for (int64_t c = 0; c < C; c++) yr[c] = yr[c] * lm_sigmoidf(yr[c]);
        if (ks > 1) {
            memmove(hr, hr + C, (size_t)((ks - 2) * C) * sizeof(float));
            memcpy(hr + (ks - 2) * C, xr, (size_t)C * sizeof(float));
        }
    }
}

/* Causal softmax attention of one new query per (sequence, head) over the
 * cache (scores and sums in double). */
static la_status softmax_step(lm_gen *g, gen_layer *L) {
    const lm_config *c = &g->m->cfg;
    const int64_t H = c->n_heads, K = c->head_dim, HK = H * K, P = g->pos + 1;
    const double scale = 1.0 / sqrt((double)K);
    double *s = malloc((size_t)P * sizeof(double));
    double acc[1024];
    if (!s) return lm_fail(LA_ERR_OUT_OF_MEMORY, "softmax decoding: out of memory");
    for (int64_t n = 0; n < g->N; n++) {
        memcpy(L->kc + (n * g->max_len + g->pos) * HK, g->k + n * HK, (size_t)HK * sizeof(float));
        memcpy(L->vc + (n * g->max_len + g->pos) * HK, g->v + n * HK, (size_t)HK * sizeof(float));
        for (int64_t h = 0; h < H; h++) {
            const float *q = g->q + n * HK + h * K;
            double mx = -INFINITY, sum = 0.0;
            for (int64_t j = 0; j < P; j++) {
                const float *kj = L->kc + (n * g->max_len + j) * HK + h * K;
                double d = 0.0;
                for (int64_t i = 0; i < K; i++) d += (double)q[i] * kj[i];
                s[j] = d * scale;
                if (s[j] > mx) mx = s[j];
            }
            for (int64_t i = 0; i < K; i++) acc[i] = 0.0;
            for (int64_t j = 0; j < P; j++) {
                const double p = exp(s[j] - mx);
                sum += p;
                const float *vj = L->vc + (n * g->max_len + j) * HK + h * K;
                for (int64_t i = 0; i < K; i++) acc[i] += p * vj[i];
            }
            for (int64_t i = 0; i < K; i++) g->o[n * HK + h * K + i] = (float)(acc[i] / sum);
        }
    }
    free(s);
    return LA_OK;
}

#define TRY(call, what)                                                                            \
    do {                                                                                           \
        la_status st_ = (call);                                                                    \
        if (st_) return lm_fail(st_, "%s: %s", (what), la_last_error());                           \
    } while (0)

la_status lm_gen_step(lm_gen *g, const int32_t *tokens, float *logits) {
    if (!g || !tokens || !logits) return lm_fail(LA_ERR_NULL_POINTER, "lm_gen_step: NULL");
    lm_model *m = g->m;
    const lm_config *c = &m->cfg;
    const int64_t N = g->N, D = c->d_model, H = c->n_heads, K = c->head_dim, HK = H * K;
    const int64_t F = c->d_ff, G = lm_gate_width(c), ks = c->conv;
    if (g->pos >= g->max_len)
        return lm_fail(LA_ERR_INVALID_SIZE, "lm_gen_step: position %ld reaches max_len %ld",
                       (long)g->pos, (long)g->max_len);
    if (c->mixer == LM_SOFTMAX && K > 1024)
        return lm_fail(LA_ERR_UNSUPPORTED, "softmax decoding supports head_dim <= 1024");
    for (int64_t n = 0; n < N; n++)
        if (tokens[n] < 0 || tokens[n] >= c->vocab)
            return lm_fail(LA_ERR_INVALID_ARGUMENT, "tokens[%ld] = %d is outside [0, %d)", (long)n,
                           tokens[n], c->vocab);
    const float *E = lm_p(m, T_EMBED);
    for (int64_t n = 0; n < N; n++)
        memcpy(g->x + n * D, E + (int64_t)tokens[n] * D, (size_t)D * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        gen_layer *L = &g->layers[l];
        lm_rmsnorm(g->n1, g->r, g->x, lm_p(m, T_LAYER(l, S_NORM1)), N, D, c->norm_eps);
        lm_matmul(m->pool, g->qp, g->n1, lm_p(m, T_LAYER(l, S_WQ)), N, D, HK);
        lm_matmul(m->pool, g->kp, g->n1, lm_p(m, T_LAYER(l, S_WK)), N, D, HK);
        lm_matmul(m->pool, g->vp, g->n1, lm_p(m, T_LAYER(l, S_WV)), N, D, HK);
        const float *q = g->qp, *k = g->kp, *v = g->vp;
        if (ks) {
            conv_step(g->q, L->cq, g->qp, lm_p(m, T_LAYER(l, S_CQ)), N, HK, ks, g->pos);
            conv_step(g->k, L->ck, g->kp, lm_p(m, T_LAYER(l, S_CK)), N, HK, ks, g->pos);
            conv_step(g->v, L->cv, g->vp, lm_p(m, T_LAYER(l, S_CV)), N, HK, ks, g->pos);
            q = g->q, k = g->k, v = g->v;
        } else {
            memcpy(g->q, q, (size_t)(N * HK) * sizeof(float));
            memcpy(g->k, k, (size_t)(N * HK) * sizeof(float));
            memcpy(g->v, v, (size_t)(N * HK) * sizeof(float));
        }
        if (G) {
            lm_matmul(m->pool, g->gz, g->n1, lm_p(m, T_LAYER(l, S_WG)), N, D, G);
            const float *bg = lm_p(m, T_LAYER(l, S_BG));
            for (int64_t i = 0; i < N; i++)
                for (int64_t j = 0; j < G; j++) g->gz[i * G + j] += bg[j];
            lm_gates_forward(m, l, g->gz, g->g, N);
        }
        if (lm_has_beta(c)) {
            lm_matmul(m->pool, g->bz, g->n1, lm_p(m, T_LAYER(l, S_WB)), N, D, H);
            const float *bb = lm_p(m, T_LAYER(l, S_BB));
            for (int64_t i = 0; i < N; i++)
                for (int64_t h = 0; h < H; h++) {
                    g->bz[i * H + h] += bb[h];
                    g->beta[i * H + h] = lm_sigmoidf(g->bz[i * H + h]);
                }
        }
        switch (c->mixer) {
        case LM_SOFTMAX: {
            la_status st = softmax_step(g, L);
            if (st) return st;
            break;
        }
        case LM_PERFORMER: {
            la_dims d = {0};
            d.B = N, d.T = 1, d.H = H, d.K = K, d.V = K;
            la_rf_opts rq = lm_performer_rf(0), rk = lm_performer_rf(1);
            TRY(la_rf_forward(m->ctx, &rq, &d, g->phq, NULL, g->q, m->performer_W, c->performer_m),
                "performer phi(q)");
            TRY(la_rf_forward(m->ctx, &rk, &d, g->phk, NULL, g->k, m->performer_W, c->performer_m),
                "performer phi(k)");
            TRY(la_decoder_step(m->ctx, L->dec, g->o, g->phq, g->phk, g->v, NULL, NULL, NULL),
                "decoder step");
            break;
        }
        case LM_LINEAR:
            TRY(la_decoder_step(m->ctx, L->dec, g->o, g->q, g->k, g->v, NULL, NULL, NULL),
                "decoder step");
            break;
        case LM_RETNET:
            TRY(la_decoder_step(m->ctx, L->dec, g->o, g->q, g->k, g->v, NULL, g->g_gamma, NULL),
                "decoder step");
            break;
        case LM_GLA:
        case LM_GDN:
            TRY(la_decoder_step(m->ctx, L->dec, g->o, g->q, g->k, g->v, g->g, NULL,
                                c->mixer == LM_GDN ? g->beta : NULL),
                "decoder step");
            break;
        case LM_DELTANET:
            TRY(la_decoder_step(m->ctx, L->dec, g->o, g->q, g->k, g->v, NULL, NULL, g->beta),
                "decoder step");
            break;
#ifdef LA_HAVE_KDA
        case LM_KDA:
            TRY(la_decoder_step(m->ctx, L->dec, g->o, g->q, g->k, g->v, g->g, NULL, g->beta),
                "decoder step");
            break;
#endif
        default: return lm_fail(LA_ERR_UNSUPPORTED, "mixer not in this build");
        }
        lm_matmul(m->pool, g->xm, g->o, lm_p(m, T_LAYER(l, S_WO)), N, HK, D);
        for (int64_t i = 0; i < N * D; i++) g->xm[i] += g->x[i];
        lm_rmsnorm(g->n2, g->r, g->xm, lm_p(m, T_LAYER(l, S_NORM2)), N, D, c->norm_eps);
        lm_matmul(m->pool, g->h1, g->n2, lm_p(m, T_LAYER(l, S_W1)), N, D, F);
        lm_matmul(m->pool, g->h3, g->n2, lm_p(m, T_LAYER(l, S_W3)), N, D, F);
        lm_swiglu(g->a, g->h1, g->h3, N * F);
        lm_matmul(m->pool, g->x, g->a, lm_p(m, T_LAYER(l, S_W2)), N, F, D);
        for (int64_t i = 0; i < N * D; i++) g->x[i] += g->xm[i];
    }
    lm_rmsnorm(g->n1, g->r, g->x, lm_p(m, T_NORMF(c->n_layers)), N, D, c->norm_eps);
    lm_gemm(m->pool, logits, g->n1, g->wt, N, D, c->vocab, 0);
    g->pos++;
    return LA_OK;
}
