/* One training step and held-out evaluation, shared by the CLI and tests so
 * that a resumed run takes exactly the steps of an uninterrupted one. */
#include "internal.h"

#include <stdlib.h>

la_status lm_train_step(lm_model *m, lm_adamw *opt, const lm_task_cfg *task, lm_train_state *ts,
                        int64_t B, double *loss, double *acc) {
    if (!m || !opt || !task || !ts || !loss)
        return lm_fail(LA_ERR_NULL_POINTER, "lm_train_step: NULL argument");
    const int64_t T = task->T;
    int32_t *tok = malloc((size_t)(B * T) * sizeof(int32_t));
    int32_t *tgt = malloc((size_t)(B * T) * sizeof(int32_t));
    la_status st = LA_OK;
    if (!tok || !tgt) {
        st = lm_fail(LA_ERR_OUT_OF_MEMORY, "lm_train_step: out of memory");
        goto done;
    }
    if ((st = lm_task_batch(task, &ts->data_rng, 0, B, tok, tgt))) goto done;
    int64_t cnt = 0, cor = 0;
    if ((st = lm_forward(m, tok, tgt, B, T, loss, &cnt, &cor, NULL))) goto done;
    if (acc) *acc = cnt ? (double)cor / (double)cnt : 0.0;
    if ((st = lm_backward(m))) goto done;
    if ((st = lm_adamw_step(opt, m, NULL))) goto done;
    ts->step++;
done:
    free(tok);
    free(tgt);
    return st;
}

la_status lm_evaluate(lm_model *m, const lm_task_cfg *task, uint64_t seed, int64_t B, int n_batches,
                      double *loss, double *acc) {
    if (!m || !task || !loss || !acc) return lm_fail(LA_ERR_NULL_POINTER, "lm_evaluate: NULL");
    const int64_t T = task->T;
    int32_t *tok = malloc((size_t)(B * T) * sizeof(int32_t));
    int32_t *tgt = malloc((size_t)(B * T) * sizeof(int32_t));
    la_status st = LA_OK;
    if (!tok || !tgt) {
        st = lm_fail(LA_ERR_OUT_OF_MEMORY, "lm_evaluate: out of memory");
        goto done;
    }
    la_rng rng;
    la_rng_seed(&rng, seed);
    double tot = 0.0;
    int64_t cnt_all = 0, cor_all = 0;
    for (int i = 0; i < n_batches; i++) {
        double l;
        int64_t cnt, cor;
        if ((st = lm_task_batch(task, &rng, 1, B, tok, tgt))) goto done;
        if ((st = lm_forward(m, tok, tgt, B, T, &l, &cnt, &cor, NULL))) goto done;
        tot += l * (double)cnt;
        cnt_all += cnt;
        cor_all += cor;
    }
    *loss = cnt_all ? tot / (double)cnt_all : 0.0;
    *acc = cnt_all ? (double)cor_all / (double)cnt_all : 0.0;
done:
    free(tok);
    free(tgt);
    return st;
}
