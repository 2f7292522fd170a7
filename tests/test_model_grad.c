/* The whole model's gradient (every mixer) against central finite
 * differences of its float64-accumulated loss, and bitwise determinism of
 * loss and gradients across thread counts. */
#include "harness.h"
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static lm_config tiny(int mixer) {
    lm_config c = lm_config_default(mixer, 11);
    c.d_model = 8, c.n_layers = 2, c.n_heads = 2, c.head_dim = 4, c.d_ff = 12;
    c.conv = 3, c.performer_m = 6, c.seed = 7 + (uint64_t)mixer;
    return c;
}

static void batch(la_rng *rng, int32_t *tok, int32_t *tgt, int64_t n, int vocab) {
    for (int64_t i = 0; i < n; i++) {
        tok[i] = (int32_t)(la_rng_u64(rng) % (uint64_t)vocab);
        tgt[i] = (la_rng_u64(rng) % 4 == 0) ? -1 : (int32_t)(la_rng_u64(rng) % (uint64_t)vocab);
    }
}

/* h = 3e-3: truncation (O(h^2)) and float32 rounding of the loss (O(1/h))
 * balance there; measured errors are 1e-4..3e-4 for every mixer.
 * Relative error ||fd - g|| / ||g|| over a sample of parameters; the
 * analytic gradient is scaled by `bias` (1 = as computed; != 1 is the
 * control that shows the check can fail). */
static double grad_error(lm_model *m, const int32_t *tok, const int32_t *tgt, int64_t B, int64_t T,
                         int n_sample, double bias, double *worst_rel) {
    double loss;
    lm_forward(m, tok, tgt, B, T, &loss, NULL, NULL, NULL);
    lm_backward(m);
    float *g = malloc((size_t)m->n_params * sizeof(float));
    memcpy(g, m->grads, (size_t)m->n_params * sizeof(float));
    la_rng rng;
    la_rng_seed(&rng, 99);
    double num = 0.0, den = 0.0;
    *worst_rel = 0.0;
    for (int s = 0; s < n_sample; s++) {
        int64_t i = (int64_t)(la_rng_u64(&rng) % (uint64_t)m->n_params);
        if (s < m->n_tensors && m->table[s].size > 0) /* one from every tensor first */
            i = m->table[s].offset + (int64_t)(la_rng_u64(&rng) % (uint64_t)m->table[s].size);
        else if (s < m->n_tensors)
            continue;
        const float p0 = m->params[i];
        const double h = 3e-3 * (fabs(p0) > 1.0 ? fabs(p0) : 1.0);
        const float pp = (float)(p0 + h), pm = (float)(p0 - h);
        double lp, lmn;
        m->params[i] = pp;
        lm_forward(m, tok, tgt, B, T, &lp, NULL, NULL, NULL);
        m->params[i] = pm;
        lm_forward(m, tok, tgt, B, T, &lmn, NULL, NULL, NULL);
        m->params[i] = p0;
        const double fd = (lp - lmn) / ((double)pp - (double)pm);
        const double an = g[i] * bias;
        num += (fd - an) * (fd - an);
        den += an * an;
        const double rel = fabs(fd - an) / (fabs(an) + 1e-3);
        if (rel > *worst_rel) *worst_rel = rel;
    }
    free(g);
    return sqrt(num / (den > 0 ? den : 1e-30));
}

static void test_gradients(void) {
    la_ctx *ctx = th_ctx(1);
    const int64_t B = 2, T = 7;
    for (int mix = 0; mix < LM_MIXER_COUNT; mix++) {
        if (!lm_mixer_available(mix)) {
            printf("  %-9s not in this build (skipped)\n", lm_mixer_name(mix));
            continue;
        }
        for (int form = 0; form < 2; form++) {
            lm_config c = tiny(mix);
            lm_model *m = NULL;
            if (!CHECK(lm_model_create(&m, &c, ctx) == LA_OK, "create %s: %s", lm_mixer_name(mix),
                       lm_error()))
                continue;
            m->form = form ? LA_FORM_RECURRENT : LA_FORM_CHUNK;
            int32_t tok[B * T], tgt[B * T];
            la_rng rng;
            la_rng_seed(&rng, 5 + (uint64_t)mix);
            batch(&rng, tok, tgt, B * T, c.vocab);
            double worst;
            const double err = grad_error(m, tok, tgt, B, T, 300, 1.0, &worst);
            printf("  %-9s %-9s rel. error %.2e (worst entry %.2e)\n", lm_mixer_name(mix),
                   form ? "recurrent" : "chunk", err, worst);
            CHECK_ERR(err, 1e-3, "%s gradient vs finite differences", lm_mixer_name(mix));
            if (form == 0) {
                double w2;
                const double bad = grad_error(m, tok, tgt, B, T, 300, 1.02, &w2);
                CHECK(bad > 1e-3, "control: a 2%% gradient error is detected (%.2e)", bad);
            }
            lm_model_destroy(m);
        }
    }
    la_ctx_destroy(ctx);
}

static void test_threads(void) {
    la_ctx *c1 = th_ctx(1), *c2 = th_ctx(2);
    const int64_t B = 3, T = 37;
    for (int mix = 0; mix < LM_MIXER_COUNT; mix++) {
        if (!lm_mixer_available(mix)) continue;
        lm_config c = tiny(mix);
        c.n_heads = 3;
        lm_model *m1 = NULL, *m2 = NULL;
        lm_model_create(&m1, &c, c1);
        lm_model_create(&m2, &c, c2);
        int32_t tok[B * T], tgt[B * T];
        la_rng rng;
        la_rng_seed(&rng, 11);
        batch(&rng, tok, tgt, B * T, c.vocab);
        double l1, l2;
        CHECK(lm_forward(m1, tok, tgt, B, T, &l1, NULL, NULL, NULL) == LA_OK, "fwd: %s",
              lm_error());
        CHECK(lm_forward(m2, tok, tgt, B, T, &l2, NULL, NULL, NULL) == LA_OK, "fwd: %s",
              lm_error());
        lm_backward(m1);
        lm_backward(m2);
        CHECK(l1 == l2 && th_bitwise_equal(m1->grads, m2->grads, (size_t)m1->n_params),
              "%s: loss and gradients bitwise equal for 1 and 2 threads", lm_mixer_name(mix));
        CHECK(isfinite(l1) && l1 > 0, "%s: loss %g finite", lm_mixer_name(mix), l1);
        lm_model_destroy(m1);
        lm_model_destroy(m2);
    }
    la_ctx_destroy(c1);
    la_ctx_destroy(c2);
}

int main(void) {
    test_gradients();
    test_threads();
    return th_summary("model_grad");
}
