/* Whole-model forward and backward (see model.h for the architecture). */
#include "dense.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

void lm_acts_release(lm_acts *a) {
    if (!a) return;
    free(a->mem);
    free(a->gmem);
    free(a->layers);
    free(a->tokens);
    free(a->targets);
    free(a->g_gamma);
    memset(a, 0, sizeof *a);
}

/* Carves n floats from *cur (64-byte aligned pieces) or just counts them. */
static float *carve(float **cur, int64_t n, int64_t *total) {
    const int64_t n_al = (n + 15) & ~(int64_t)15;
    *total += n_al;
    if (!*cur) return NULL;
    float *p = *cur;
    *cur += n_al;
    return n ? p : NULL;
}

static void layout(lm_model *m, int64_t BT, float *base, float *gbase, int64_t *tot,
                   int64_t *gtot) {
    const lm_config *c = &m->cfg;
    lm_acts *A = m->acts;
    const int64_t D = c->d_model, HK = (int64_t)c->n_heads * c->head_dim, F = c->d_ff;
    const int64_t G = lm_gate_width(c), H = c->n_heads;
    const int64_t HM = c->mixer == LM_PERFORMER ? H * (int64_t)c->performer_m : 0;
    const int64_t HB = lm_has_beta(c) ? H : 0;
    const int conv = c->conv > 0;
    float *cur = base;
    *tot = 0;
    for (int l = 0; l < c->n_layers; l++) {
        lm_layer_acts *L = &A->layers[l];
        L->x_in = carve(&cur, BT * D, tot);
        L->n1 = carve(&cur, BT * D, tot);
        L->r1 = carve(&cur, BT, tot);
        L->qp = carve(&cur, BT * HK, tot);
        L->kp = carve(&cur, BT * HK, tot);
        L->vp = carve(&cur, BT * HK, tot);
        L->qc = carve(&cur, conv ? BT * HK : 0, tot);
        L->kc = carve(&cur, conv ? BT * HK : 0, tot);
        L->vc = carve(&cur, conv ? BT * HK : 0, tot);
        L->q = carve(&cur, conv ? BT * HK : 0, tot);
        L->k = carve(&cur, conv ? BT * HK : 0, tot);
        L->v = carve(&cur, conv ? BT * HK : 0, tot);
        if (!conv) L->q = L->qp, L->k = L->kp, L->v = L->vp;
        L->gz = carve(&cur, BT * G, tot);
        L->g = carve(&cur, BT * G, tot);
        L->bz = carve(&cur, BT * HB, tot);
        L->beta = carve(&cur, BT * HB, tot);
        L->phq = carve(&cur, BT * HM, tot);
        L->phk = carve(&cur, BT * HM, tot);
        L->o = carve(&cur, BT * HK, tot);
        L->x_mid = carve(&cur, BT * D, tot);
        L->n2 = carve(&cur, BT * D, tot);
        L->r2 = carve(&cur, BT, tot);
        L->h1 = carve(&cur, BT * F, tot);
        L->h3 = carve(&cur, BT * F, tot);
        L->a = carve(&cur, BT * F, tot);
    }
    A->x_out = carve(&cur, BT * D, tot);
    A->nf = carve(&cur, BT * D, tot);
    A->rf = carve(&cur, BT, tot);
    A->logits = carve(&cur, BT * c->vocab, tot);

    int64_t wmax = (int64_t)c->vocab * D;
    const int64_t cand[4] = {D * HK, HK * D, D * F, D * (G > 0 ? G : 1)};
    for (int i = 0; i < 4; i++)
        if (cand[i] > wmax) wmax = cand[i];
    cur = gbase;
    *gtot = 0;
    A->dx = carve(&cur, BT * D, gtot);
    A->dn = carve(&cur, BT * D, gtot);
    A->dq = carve(&cur, BT * HK, gtot);
    A->dk = carve(&cur, BT * HK, gtot);
    A->dv = carve(&cur, BT * HK, gtot);
    A->dqp = carve(&cur, BT * HK, gtot);
    A->dkp = carve(&cur, BT * HK, gtot);
    A->dvp = carve(&cur, BT * HK, gtot);
    A->dg = carve(&cur, BT * G, gtot);
    A->dbeta = carve(&cur, BT * HB, gtot);
    A->dphq = carve(&cur, BT * HM, gtot);
    A->dphk = carve(&cur, BT * HM, gtot);
    A->dout = carve(&cur, BT * (HK > D ? HK : D), gtot);
    A->dh1 = carve(&cur, BT * F, gtot);
    A->dh3 = carve(&cur, BT * F, gtot);
    A->da = carve(&cur, BT * F, gtot);
    A->dlogits = carve(&cur, BT * c->vocab, gtot);
    A->wt = carve(&cur, wmax, gtot);
    int64_t xw = D > HK ? D : HK;
    if (F > xw) xw = F;
    if (c->vocab > xw) xw = c->vocab;
    if (G > xw) xw = G;
    A->xt = carve(&cur, BT * xw, gtot);
}

static la_status acts_reserve(lm_model *m, int64_t B, int64_t T) {
    lm_acts *A = m->acts;
    const int64_t BT = B * T;
    if (BT <= A->cap && A->mem) {
        A->B = B, A->T = T;
        if (BT == A->cap) return LA_OK;
        /* re-carve for the smaller shape inside the same memory */
        int64_t tot, gtot;
        layout(m, BT, A->mem, A->gmem, &tot, &gtot);
        return LA_OK;
    }
    lm_acts_release(A);
    A->layers = calloc((size_t)m->cfg.n_layers, sizeof *A->layers);
    A->tokens = malloc((size_t)BT * sizeof(int32_t));
    A->targets = malloc((size_t)BT * sizeof(int32_t));
    A->g_gamma = malloc((size_t)m->cfg.n_heads * sizeof(float));
    if (!A->layers || !A->tokens || !A->targets || !A->g_gamma) goto oom;
    int64_t tot, gtot;
    layout(m, BT, NULL, NULL, &tot, &gtot);
    A->mem = aligned_alloc(64, (size_t)tot * sizeof(float));
    A->gmem = aligned_alloc(64, (size_t)gtot * sizeof(float));
    if (!A->mem || !A->gmem) goto oom;
    layout(m, BT, A->mem, A->gmem, &tot, &gtot);
    if (la_retnet_decay(A->g_gamma, m->cfg.n_heads)) goto oom;
    A->B = B, A->T = T, A->cap = BT;
    return LA_OK;
oom:
    lm_acts_release(A);
    return lm_fail(LA_ERR_OUT_OF_MEMORY, "activations for B*T = %ld: out of memory", (long)BT);
}

la_status lm_forward(lm_model *m, const int32_t *tokens, const int32_t *targets, int64_t B,
                     int64_t T, double *loss, int64_t *n_counted, int64_t *n_correct,
                     float *logits_out) {
    if (!m || !tokens || !targets || !loss)
        return lm_fail(LA_ERR_NULL_POINTER, "lm_forward: model, tokens, targets or loss is NULL");
    if (B < 1 || T < 1 || B > (1 << 20) || T > (1 << 24) || B * T > (1 << 26))
        return lm_fail(LA_ERR_INVALID_SIZE, "lm_forward: B = %ld, T = %ld out of range", (long)B,
                       (long)T);
    const lm_config *c = &m->cfg;
    for (int64_t i = 0; i < B * T; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab)
            return lm_fail(LA_ERR_INVALID_ARGUMENT, "tokens[%ld] = %d is outside [0, %d)", (long)i,
                           tokens[i], c->vocab);
        if (targets[i] < -1 || targets[i] >= c->vocab)
            return lm_fail(LA_ERR_INVALID_ARGUMENT, "targets[%ld] = %d is outside [-1, %d)",
                           (long)i, targets[i], c->vocab);
    }
    la_status st = acts_reserve(m, B, T);
    if (st) return st;
    lm_acts *A = m->acts;
    const int64_t BT = B * T, D = c->d_model, HK = (int64_t)c->n_heads * c->head_dim;
    const int64_t F = c->d_ff, G = lm_gate_width(c), H = c->n_heads;
    memcpy(A->tokens, tokens, (size_t)BT * sizeof(int32_t));
    memcpy(A->targets, targets, (size_t)BT * sizeof(int32_t));
    const float *E = lm_p(m, T_EMBED);
    for (int64_t i = 0; i < BT; i++)
        memcpy(A->layers[0].x_in + i * D, E + (int64_t)tokens[i] * D, (size_t)D * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        lm_layer_acts *L = &A->layers[l];
        lm_rmsnorm(L->n1, L->r1, L->x_in, lm_p(m, T_LAYER(l, S_NORM1)), BT, D, c->norm_eps);
        lm_matmul(m->pool, L->qp, L->n1, lm_p(m, T_LAYER(l, S_WQ)), BT, D, HK);
        lm_matmul(m->pool, L->kp, L->n1, lm_p(m, T_LAYER(l, S_WK)), BT, D, HK);
        lm_matmul(m->pool, L->vp, L->n1, lm_p(m, T_LAYER(l, S_WV)), BT, D, HK);
        if (c->conv) {
            lm_conv(L->q, L->qc, L->qp, lm_p(m, T_LAYER(l, S_CQ)), B, T, HK, c->conv);
            lm_conv(L->k, L->kc, L->kp, lm_p(m, T_LAYER(l, S_CK)), B, T, HK, c->conv);
            lm_conv(L->v, L->vc, L->vp, lm_p(m, T_LAYER(l, S_CV)), B, T, HK, c->conv);
        }
        if (G) {
            lm_matmul(m->pool, L->gz, L->n1, lm_p(m, T_LAYER(l, S_WG)), BT, D, G);
            const float *bg = lm_p(m, T_LAYER(l, S_BG));
            for (int64_t i = 0; i < BT; i++)
                for (int64_t j = 0; j < G; j++) L->gz[i * G + j] += bg[j];
        }
        if (lm_has_beta(c)) {
            lm_matmul(m->pool, L->bz, L->n1, lm_p(m, T_LAYER(l, S_WB)), BT, D, H);
            const float *bb = lm_p(m, T_LAYER(l, S_BB));
            for (int64_t i = 0; i < BT; i++)
                for (int64_t h = 0; h < H; h++) {
                    L->bz[i * H + h] += bb[h];
                    L->beta[i * H + h] = lm_sigmoidf(L->bz[i * H + h]);
                }
        }
        if ((st = lm_mixer_forward(m, L, B, T))) return st;
        float *xn = l + 1 < c->n_layers ? A->layers[l + 1].x_in : A->x_out;
        lm_matmul(m->pool, L->x_mid, L->o, lm_p(m, T_LAYER(l, S_WO)), BT, HK, D);
        for (int64_t i = 0; i < BT * D; i++) L->x_mid[i] += L->x_in[i];
        lm_rmsnorm(L->n2, L->r2, L->x_mid, lm_p(m, T_LAYER(l, S_NORM2)), BT, D, c->norm_eps);
        lm_matmul(m->pool, L->h1, L->n2, lm_p(m, T_LAYER(l, S_W1)), BT, D, F);
        lm_matmul(m->pool, L->h3, L->n2, lm_p(m, T_LAYER(l, S_W3)), BT, D, F);
        lm_swiglu(L->a, L->h1, L->h3, BT * F);
        lm_matmul(m->pool, xn, L->a, lm_p(m, T_LAYER(l, S_W2)), BT, F, D);
        for (int64_t i = 0; i < BT * D; i++) xn[i] += L->x_mid[i];
    }
    lm_rmsnorm(A->nf, A->rf, A->x_out, lm_p(m, T_NORMF(c->n_layers)), BT, D, c->norm_eps);
    lm_matmul_dx(m->pool, A->logits, A->nf, E, A->wt, BT, c->vocab, D, 0);
    int64_t cnt = 0, cor = 0;
    double total = lm_cross_entropy(NULL, A->logits, targets, BT, c->vocab, 0.0, &cnt, &cor);
    A->n_counted = cnt;
    *loss = cnt ? total / (double)cnt : 0.0;
    if (n_counted) *n_counted = cnt;
    if (n_correct) *n_correct = cor;
    if (logits_out) memcpy(logits_out, A->logits, (size_t)(BT * c->vocab) * sizeof(float));
    return LA_OK;
}

la_status lm_backward(lm_model *m) {
    if (!m) return lm_fail(LA_ERR_NULL_POINTER, "lm_backward: model is NULL");
    lm_acts *A = m->acts;
    if (!A->mem) return lm_fail(LA_ERR_INVALID_ARGUMENT, "lm_backward before lm_forward");
    const lm_config *c = &m->cfg;
    const int64_t B = A->B, T = A->T, BT = B * T, D = c->d_model;
    const int64_t HK = (int64_t)c->n_heads * c->head_dim, F = c->d_ff, G = lm_gate_width(c);
    const int64_t H = c->n_heads;
    memset(m->grads, 0, (size_t)m->n_params * sizeof(float));
    const double inv = A->n_counted ? 1.0 / (double)A->n_counted : 0.0;
    lm_cross_entropy(A->dlogits, A->logits, A->targets, BT, c->vocab, inv, NULL, NULL);
    const float *E = lm_p(m, T_EMBED);
    float *dE = lm_gp(m, T_EMBED);
    /* logits = nf E^T: dnf = dlogits E, dE += dlogits^T nf */
    lm_matmul(m->pool, A->dn, A->dlogits, E, BT, c->vocab, D);
    lm_matmul_dw(m->pool, dE, A->dlogits, A->nf, A->xt, BT, c->vocab, D, 1);
    lm_rmsnorm_backward(A->dx, lm_gp(m, T_NORMF(c->n_layers)), A->dn, A->x_out,
                        lm_p(m, T_NORMF(c->n_layers)), A->rf, BT, D, 0);
    la_status st;
    for (int l = c->n_layers - 1; l >= 0; l--) {
        lm_layer_acts *L = &A->layers[l];
        /* MLP: xn = x_mid + a W2 (dx holds d xn) */
        lm_matmul_dw(m->pool, lm_gp(m, T_LAYER(l, S_W2)), L->a, A->dx, A->xt, BT, F, D, 0);
        lm_matmul_dx(m->pool, A->da, A->dx, lm_p(m, T_LAYER(l, S_W2)), A->wt, BT, F, D, 0);
        lm_swiglu_backward(A->dh1, A->dh3, A->da, L->h1, L->h3, BT * F);
        lm_matmul_dw(m->pool, lm_gp(m, T_LAYER(l, S_W1)), L->n2, A->dh1, A->xt, BT, D, F, 0);
        lm_matmul_dw(m->pool, lm_gp(m, T_LAYER(l, S_W3)), L->n2, A->dh3, A->xt, BT, D, F, 0);
        lm_matmul_dx(m->pool, A->dn, A->dh1, lm_p(m, T_LAYER(l, S_W1)), A->wt, BT, D, F, 0);
        lm_matmul_dx(m->pool, A->dn, A->dh3, lm_p(m, T_LAYER(l, S_W3)), A->wt, BT, D, F, 1);
        lm_rmsnorm_backward(A->dx, lm_gp(m, T_LAYER(l, S_NORM2)), A->dn, L->x_mid,
                            lm_p(m, T_LAYER(l, S_NORM2)), L->r2, BT, D, 1);
        /* mixer: x_mid = x_in + o Wo (dx holds d x_mid) */
        lm_matmul_dw(m->pool, lm_gp(m, T_LAYER(l, S_WO)), L->o, A->dx, A->xt, BT, HK, D, 0);
        lm_matmul_dx(m->pool, A->dout, A->dx, lm_p(m, T_LAYER(l, S_WO)), A->wt, BT, HK, D, 0);
        if ((st = lm_mixer_backward(m, L, B, T))) return st;
        float *dqp = A->dq, *dkp = A->dk, *dvp = A->dv;
        if (c->conv) {
            lm_conv_backward(A->dqp, lm_gp(m, T_LAYER(l, S_CQ)), A->dq, L->qp, L->qc,
                             lm_p(m, T_LAYER(l, S_CQ)), B, T, HK, c->conv);
            lm_conv_backward(A->dkp, lm_gp(m, T_LAYER(l, S_CK)), A->dk, L->kp, L->kc,
                             lm_p(m, T_LAYER(l, S_CK)), B, T, HK, c->conv);
            lm_conv_backward(A->dvp, lm_gp(m, T_LAYER(l, S_CV)), A->dv, L->vp, L->vc,
                             lm_p(m, T_LAYER(l, S_CV)), B, T, HK, c->conv);
            dqp = A->dqp, dkp = A->dkp, dvp = A->dvp;
        }
        lm_matmul_dw(m->pool, lm_gp(m, T_LAYER(l, S_WQ)), L->n1, dqp, A->xt, BT, D, HK, 0);
        lm_matmul_dw(m->pool, lm_gp(m, T_LAYER(l, S_WK)), L->n1, dkp, A->xt, BT, D, HK, 0);
        lm_matmul_dw(m->pool, lm_gp(m, T_LAYER(l, S_WV)), L->n1, dvp, A->xt, BT, D, HK, 0);
        lm_matmul_dx(m->pool, A->dn, dqp, lm_p(m, T_LAYER(l, S_WQ)), A->wt, BT, D, HK, 0);
        lm_matmul_dx(m->pool, A->dn, dkp, lm_p(m, T_LAYER(l, S_WK)), A->wt, BT, D, HK, 1);
        lm_matmul_dx(m->pool, A->dn, dvp, lm_p(m, T_LAYER(l, S_WV)), A->wt, BT, D, HK, 1);
        if (G) { /* A->dg holds d gz */
            lm_matmul_dw(m->pool, lm_gp(m, T_LAYER(l, S_WG)), L->n1, A->dg, A->xt, BT, D, G, 0);
            float *dbg = lm_gp(m, T_LAYER(l, S_BG));
            for (int64_t i = 0; i < BT; i++)
                for (int64_t j = 0; j < G; j++) dbg[j] += A->dg[i * G + j];
            lm_matmul_dx(m->pool, A->dn, A->dg, lm_p(m, T_LAYER(l, S_WG)), A->wt, BT, D, G, 1);
        }
        if (lm_has_beta(c)) { /* A->dbeta holds d bz */
            lm_matmul_dw(m->pool, lm_gp(m, T_LAYER(l, S_WB)), L->n1, A->dbeta, A->xt, BT, D, H, 0);
            float *dbb = lm_gp(m, T_LAYER(l, S_BB));
            for (int64_t i = 0; i < BT; i++)
                for (int64_t h = 0; h < H; h++) dbb[h] += A->dbeta[i * H + h];
            lm_matmul_dx(m->pool, A->dn, A->dbeta, lm_p(m, T_LAYER(l, S_WB)), A->wt, BT, D, H, 1);
        }
        lm_rmsnorm_backward(A->dx, lm_gp(m, T_LAYER(l, S_NORM1)), A->dn, L->x_in,
                            lm_p(m, T_LAYER(l, S_NORM1)), L->r1, BT, D, 1);
    }
    for (int64_t i = 0; i < BT; i++) {
        float *row = dE + (int64_t)A->tokens[i] * D;
        for (int64_t d = 0; d < D; d++) row[d] += A->dx[i * D + d];
    }
    return LA_OK;
}
