/* Training works: held-out loss falls on every task (and on MQAR for every
 * mixer); tasks produce well-formed batches; the learning-rate schedule. */
#include "harness.h"
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *read_text(int64_t *n) {
    const char *paths[] = {"data/kjv_genesis_exodus.txt", "../data/kjv_genesis_exodus.txt",
                           LINATTN_SOURCE_DIR "/data/kjv_genesis_exodus.txt"};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (!f) continue;
        unsigned char *buf = malloc(1 << 20);
        *n = (int64_t)fread(buf, 1, 1 << 20, f);
        fclose(f);
        return buf;
    }
    return NULL;
}

static lm_task_cfg task_cfg(int task, const unsigned char *text, int64_t n) {
    lm_task_cfg t;
    memset(&t, 0, sizeof t);
    t.task = task;
    t.T = 32;
    t.pairs = 4, t.n_keys = 8;
    t.copy_tokens = 4, t.copy_vocab = 6;
    t.listops_depth = 2;
    t.text = text, t.text_len = n, t.text_split = n * 9 / 10;
    return t;
}

/* Held-out loss before and after `steps` steps. */
static void loss_falls(la_ctx *ctx, int task, int mixer, int steps, const unsigned char *text,
                       int64_t n) {
    lm_task_cfg t = task_cfg(task, text, n);
    t.T = 24; /* short sequences: this test runs under ASan on a shared machine */
    lm_config c = lm_config_default(mixer, lm_task_vocab(&t));
    c.d_model = 24, c.n_heads = 2, c.head_dim = 12, c.d_ff = 48, c.performer_m = 12;
    lm_model *m = NULL;
    if (!CHECK(lm_model_create(&m, &c, ctx) == LA_OK, "create: %s", lm_error())) return;
    lm_adamw opt;
    lm_adamw_init(&opt, m->n_params, 3e-3f, 5, steps);
    lm_train_state ts;
    memset(&ts, 0, sizeof ts);
    la_rng_seed(&ts.data_rng, 1);
    double l0, a0, l1, a1, l, a;
    lm_evaluate(m, &t, 777, 8, 1, &l0, &a0);
    la_status st = LA_OK;
    for (int s = 0; s < steps && !st; s++) st = lm_train_step(m, &opt, &t, &ts, 8, &l, &a);
    CHECK(st == LA_OK, "%d training steps: %s", steps, lm_error());
    lm_evaluate(m, &t, 777, 8, 1, &l1, &a1);
    printf("  %-8s %-9s held-out loss %.3f -> %.3f, accuracy %.3f -> %.3f\n", lm_task_name(task),
           lm_mixer_name(mixer), l0, l1, a0, a1);
    CHECK(isfinite(l1) && l1 < 0.85 * l0, "%s/%s: loss falls (%.3f -> %.3f)", lm_task_name(task),
          lm_mixer_name(mixer), l0, l1);
    lm_adamw_free(&opt);
    lm_model_destroy(m);
}

static void test_tasks(const unsigned char *text, int64_t n) {
    la_rng rng;
    la_rng_seed(&rng, 3);
    int32_t tok[4 * 32], tgt[4 * 32];
    lm_task_cfg t = task_cfg(LM_TASK_MQAR, text, n);
    CHECK(lm_task_batch(&t, &rng, 0, 4, tok, tgt) == LA_OK, "mqar batch");
    int ok = 1;
    for (int b = 0; b < 4; b++) /* every scored key's value is the one bound to it */
        for (int i = 8; i < 32; i++)
            if (tgt[b * 32 + i] >= 0) {
                int found = 0;
                for (int j = 0; j < 8; j += 2)
                    if (tok[b * 32 + j] == tok[b * 32 + i])
                        found = tok[b * 32 + j + 1] == tgt[b * 32 + i];
                ok &= found;
            }
    CHECK(ok, "mqar targets are the bound values");
    t = task_cfg(LM_TASK_COPY, text, n);
    CHECK(lm_task_batch(&t, &rng, 0, 4, tok, tgt) == LA_OK, "copy batch");
    ok = 1;
    for (int b = 0; b < 4; b++) {
        int data[8], nd = 0;
        for (int i = 0; i < 28; i++)
            if (tok[b * 32 + i] >= 2) data[nd++] = tok[b * 32 + i];
        ok &= nd == 4 && tok[b * 32 + 28] == 1;
        for (int i = 0; i < 4 && nd == 4; i++) ok &= tgt[b * 32 + 28 + i] == data[i];
    }
    CHECK(ok, "copy targets are the data in order");
    t = task_cfg(LM_TASK_LISTOPS, text, n);
    CHECK(lm_task_batch(&t, &rng, 0, 4, tok, tgt) == LA_OK, "listops batch");
    ok = 1;
    for (int b = 0; b < 4; b++) {
        int scored = 0, depth = 0;
        for (int i = 0; i < 32; i++) {
            const int x = tok[b * 32 + i];
            depth += (x >= 11 && x <= 14) - (x == 15);
            ok &= depth >= 0;
            if (tgt[b * 32 + i] >= 0) scored++, ok &= x == 16 && depth == 0;
        }
        ok &= scored == 1;
    }
    CHECK(ok, "listops: balanced brackets, one scored '='");
    t.T = 2;
    CHECK(lm_task_batch(&t, &rng, 0, 1, tok, tgt) == LA_ERR_INVALID_ARGUMENT,
          "listops T=2 refused");
}

static void test_schedule(void) {
    lm_adamw o;
    lm_adamw_init(&o, 4, 1e-3f, 10, 110);
    CHECK(fabsf(lm_lr_at(&o, 0) - 1e-4f) < 1e-9f, "warm-up starts at lr/warmup");
    CHECK(fabsf(lm_lr_at(&o, 9) - 1e-3f) < 1e-9f, "warm-up reaches lr");
    CHECK(fabsf(lm_lr_at(&o, 60) - 0.55e-3f) < 1e-7f, "cosine midpoint");
    CHECK(fabsf(lm_lr_at(&o, 110) - 1e-4f) < 1e-9f, "cosine ends at lr_min");
    lm_adamw_free(&o);
}

int main(void) {
    int64_t n = 0;
    unsigned char *text = read_text(&n);
    CHECK(text && n > 100000, "the byte-LM text is readable (%ld bytes)", (long)n);
    la_ctx *ctx = th_ctx(2);
    test_schedule();
    test_tasks(text, n);
    for (int task = 0; task < 4; task++)
        if (text || task != LM_TASK_BYTES) loss_falls(ctx, task, LM_GDN, 20, text, n);
    for (int mix = 0; mix < LM_MIXER_COUNT; mix++)
        if (lm_mixer_available(mix) && mix != LM_GDN)
            loss_falls(ctx, LM_TASK_MQAR, mix, 20, text, n);
    la_ctx_destroy(ctx);
    free(text);
    return th_summary("model_train");
}
