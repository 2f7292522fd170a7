/* The C side of python/tests/test_checkpoint.py: writes model checkpoints
 * with the C library and reports what the C loader reads from one, so the
 * Python reader (linattn.checkpoint) can be compared with it bit for bit.
 *
 *   ckpt_helper save PATH MIXER STEPS [weights]
 *       a small model (src/model/) trained STEPS AdamW steps on MQAR, saved
 *       with its optimizer state (or without: "weights")
 *   ckpt_helper dump PATH OUT
 *       lm_checkpoint_load(PATH), then OUT.json (config, training state,
 *       optimizer settings, tensor table; every float as its bit pattern)
 *       and the raw little-endian float32 arrays OUT.params, OUT.m1, OUT.m2
 *       (the moments only when the file has them)
 * Exit status 0; 3 when the loader refuses the file (message on stderr);
 * 2 on bad usage; 1 on any other failure. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static uint64_t dbits(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static int write_floats(const char *prefix, const char *ext, const float *x, int64_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    int bad = 0;
    for (int64_t i = 0; i < n && !bad; i++) {
        const uint32_t u = fbits(x[i]);
        const unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8),
                                    (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
        bad = fwrite(b, 1, 4, f) != 4;
    }
    return fclose(f) != 0 || bad;
}

static int save(const char *path, const char *mixer_name, long steps, int weights_only) {
    const int mixer = lm_mixer_from_name(mixer_name);
    if (mixer < 0 || !lm_mixer_available(mixer)) {
        fprintf(stderr, "ckpt_helper: mixer '%s' not in this build\n", mixer_name);
        return 2;
    }
    lm_task_cfg t;
    memset(&t, 0, sizeof t);
    t.task = LM_TASK_MQAR, t.T = 24, t.pairs = 4, t.n_keys = 8;
    lm_config c = lm_config_default(mixer, lm_task_vocab(&t));
    c.d_model = 16, c.n_heads = 2, c.head_dim = 8, c.d_ff = 24, c.seed = 5 + (uint64_t)mixer;
    la_ctx *ctx = NULL;
    lm_model *m = NULL;
    lm_adamw opt;
    memset(&opt, 0, sizeof opt);
    lm_train_state ts;
    memset(&ts, 0, sizeof ts);
    la_rng_seed(&ts.data_rng, 42);
    la_status st = la_ctx_create(&ctx, 1);
    if (!st) st = lm_model_create(&m, &c, ctx);
    if (!st) st = lm_adamw_init(&opt, m->n_params, 3e-3f, 2, steps > 0 ? steps : 1);
    double loss, acc;
    for (long s = 0; !st && s < steps; s++) st = lm_train_step(m, &opt, &t, &ts, 4, &loss, &acc);
    if (!st) st = lm_checkpoint_save(path, m, weights_only ? NULL : &opt, &ts);
    if (st) fprintf(stderr, "ckpt_helper: %s\n", ctx ? lm_error() : la_last_error());
    lm_adamw_free(&opt);
    lm_model_destroy(m);
    la_ctx_destroy(ctx);
    return st ? 1 : 0;
}

static int dump(const char *path, const char *out) {
    la_ctx *ctx = NULL;
    if (la_ctx_create(&ctx, 1)) return 1;
    lm_model *m = NULL;
    lm_adamw opt;
    memset(&opt, 0, sizeof opt);
    lm_train_state ts;
    memset(&ts, 0, sizeof ts);
    if (lm_checkpoint_load(path, &m, ctx, &opt, &ts) != LA_OK) {
        fprintf(stderr, "ckpt_helper: %s\n", lm_error());
        la_ctx_destroy(ctx);
        return 3;
    }
    char jpath[4096];
    snprintf(jpath, sizeof jpath, "%s.json", out);
    FILE *f = fopen(jpath, "w");
    int bad = !f;
    if (f) {
        const lm_config *c = &m->cfg;
        fprintf(f,
                "{\"config\": {\"vocab\": %d, \"d_model\": %d, \"n_layers\": %d, \"n_heads\": %d, "
                "\"head_dim\": %d, \"d_ff\": %d, \"mixer\": %d, \"feature_map\": %d, \"conv\": %d, "
                "\"performer_m\": %d, \"seed\": %llu, \"norm_eps_bits\": %lu},\n",
                c->vocab, c->d_model, c->n_layers, c->n_heads, c->head_dim, c->d_ff, c->mixer,
                c->feature_map, c->conv, c->performer_m, (unsigned long long)c->seed,
                (unsigned long)fbits(c->norm_eps));
        fprintf(f,
                " \"mixer_name\": \"%s\", \"step\": %lld, \"data_rng\": [%llu, %llu, %llu, %llu],"
                " \"spare_bits\": %llu, \"has_spare\": %d, \"has_opt\": %d,\n",
                lm_mixer_name(c->mixer), (long long)ts.step, (unsigned long long)ts.data_rng.s[0],
                (unsigned long long)ts.data_rng.s[1], (unsigned long long)ts.data_rng.s[2],
                (unsigned long long)ts.data_rng.s[3], (unsigned long long)dbits(ts.data_rng.spare),
                ts.data_rng.has_spare, ts.has_opt);
        if (ts.has_opt)
            fprintf(f,
                    " \"optimizer\": {\"lr_max\": %lu, \"lr_min\": %lu, \"beta1\": %lu, \"beta2\": "
                    "%lu, \"eps\": %lu, \"weight_decay\": %lu, \"clip\": %lu, \"warmup\": %lld, "
                    "\"total_steps\": %lld, \"step\": %lld},\n",
                    (unsigned long)fbits(opt.lr_max), (unsigned long)fbits(opt.lr_min),
                    (unsigned long)fbits(opt.beta1), (unsigned long)fbits(opt.beta2),
                    (unsigned long)fbits(opt.eps), (unsigned long)fbits(opt.weight_decay),
                    (unsigned long)fbits(opt.clip), (long long)opt.warmup,
                    (long long)opt.total_steps, (long long)opt.step);
        else
            fprintf(f, " \"optimizer\": null,\n");
        fprintf(f, " \"n_params\": %lld, \"table\": [", (long long)m->n_params);
        for (int i = 0; i < m->n_tensors; i++)
            fprintf(f, "%s{\"name\": \"%s\", \"size\": %lld, \"offset\": %lld}", i ? ", " : "",
                    m->table[i].name, (long long)m->table[i].size, (long long)m->table[i].offset);
        fprintf(f, "]}\n");
        bad = fclose(f) != 0;
    }
    bad = bad || write_floats(out, "params", m->params, m->n_params);
    if (ts.has_opt)
        bad =
            bad || write_floats(out, "m1", opt.m1, opt.n) || write_floats(out, "m2", opt.m2, opt.n);
    if (bad) fprintf(stderr, "ckpt_helper: cannot write %s.*\n", out);
    lm_adamw_free(&opt);
    lm_model_destroy(m);
    la_ctx_destroy(ctx);
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc >= 5 && !strcmp(argv[1], "save"))
        return save(argv[2], argv[3], strtol(argv[4], NULL, 10),
                    argc > 5 && !strcmp(argv[5], "weights"));
    if (argc == 4 && !strcmp(argv[1], "dump")) return dump(argv[2], argv[3]);
    fprintf(stderr, "usage: ckpt_helper save PATH MIXER STEPS [weights] | dump PATH OUT\n");
    return 2;
}
