/* AdamW with global-norm gradient clipping and a warm-up + cosine schedule.
 * One flat loop over the parameter buffer; the order of every sum is fixed. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

la_status lm_adamw_init(lm_adamw *opt, int64_t n_params, float lr, int64_t warmup,
                        int64_t total_steps) {
    if (!opt) return lm_fail(LA_ERR_NULL_POINTER, "lm_adamw_init: opt is NULL");
    if (n_params < 1 || !(lr > 0.0f) || warmup < 0 || total_steps < 1)
        return lm_fail(LA_ERR_INVALID_ARGUMENT,
                       "lm_adamw_init: n_params = %ld, lr = %g, warmup = %ld, steps = %ld",
                       (long)n_params, (double)lr, (long)warmup, (long)total_steps);
    memset(opt, 0, sizeof *opt);
    opt->m1 = calloc((size_t)n_params, sizeof(float));
    opt->m2 = calloc((size_t)n_params, sizeof(float));
    if (!opt->m1 || !opt->m2) {
        lm_adamw_free(opt);
        return lm_fail(LA_ERR_OUT_OF_MEMORY, "lm_adamw_init: out of memory");
    }
    opt->n = n_params;
    opt->lr_max = lr;
    opt->lr_min = lr * 0.1f;
    opt->beta1 = 0.9f;
    opt->beta2 = 0.95f;
    opt->eps = 1e-8f;
    opt->weight_decay = 0.1f;
    opt->clip = 1.0f;
    opt->warmup = warmup;
    opt->total_steps = total_steps;
    return LA_OK;
}

void lm_adamw_free(lm_adamw *opt) {
    if (!opt) return;
    free(opt->m1);
    free(opt->m2);
    opt->m1 = opt->m2 = NULL;
}

float lm_lr_at(const lm_adamw *opt, int64_t s) {
    if (s < opt->warmup) return opt->lr_max * (float)(s + 1) / (float)opt->warmup;
    const int64_t span = opt->total_steps - opt->warmup;
    double frac = span > 0 ? (double)(s - opt->warmup) / (double)span : 1.0;
    if (frac > 1.0) frac = 1.0;
    const double cosv = 0.5 * (1.0 + cos(3.14159265358979323846 * frac));
    return (float)(opt->lr_min + (opt->lr_max - opt->lr_min) * cosv);
}

/* Decay applies to matrices and embeddings, not to norm weights, biases,
 * A_log or the short-conv kernels. */
static int decays(const char *name) {
    const char *dot = strchr(name, '.');
    const char *s = dot ? dot + 1 : name;
    return !strcmp(s, "embed") || !strcmp(s, "wq") || !strcmp(s, "wk") || !strcmp(s, "wv") ||
           !strcmp(s, "wo") || !strcmp(s, "wg") || !strcmp(s, "wb") || !strcmp(s, "w1") ||
           !strcmp(s, "w2") || !strcmp(s, "w3");
}

la_status lm_adamw_step(lm_adamw *opt, lm_model *m, double *grad_norm) {
    if (!opt || !m) return lm_fail(LA_ERR_NULL_POINTER, "lm_adamw_step: NULL argument");
    if (opt->n != m->n_params)
        return lm_fail(LA_ERR_SHAPE_MISMATCH, "lm_adamw_step: optimizer has %ld params, model %ld",
                       (long)opt->n, (long)m->n_params);
    double ss = 0.0;
    for (int64_t i = 0; i < m->n_params; i++) ss += (double)m->grads[i] * m->grads[i];
    const double norm = sqrt(ss);
    if (grad_norm) *grad_norm = norm;
    if (!isfinite(norm))
        return lm_fail(LA_ERR_NON_FINITE, "gradient norm is %g at step %ld (weights unchanged)",
                       norm, (long)opt->step);
    const float gscale = opt->clip > 0.0f && norm > opt->clip ? (float)(opt->clip / norm) : 1.0f;
    const float lr = lm_lr_at(opt, opt->step);
    opt->step++;
    const double t = (double)opt->step;
    const float bc1 = (float)(1.0 - pow(opt->beta1, t));
    const float bc2 = (float)(1.0 - pow(opt->beta2, t));
    for (int ti = 0; ti < m->n_tensors; ti++) {
        const lm_tensor *tt = &m->table[ti];
        const float wd = decays(tt->name) ? opt->weight_decay : 0.0f;
        float *p = m->params + tt->offset;
        const float *g = m->grads + tt->offset;
        float *m1 = opt->m1 + tt->offset, *m2 = opt->m2 + tt->offset;
        for (int64_t i = 0; i < tt->size; i++) {
            const float gi = g[i] * gscale;
            m1[i] = opt->beta1 * m1[i] + (1.0f - opt->beta1) * gi;
            m2[i] = opt->beta2 * m2[i] + (1.0f - opt->beta2) * gi * gi;
            const float mh = m1[i] / bc1, vh = m2[i] / bc2;
            p[i] -= lr * (mh / (sqrtf(vh) + opt->eps) + wd * p[i]);
        }
    }
    return LA_OK;
}
