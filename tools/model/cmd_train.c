/* linattn train — trains the small language model (src/model/) on one task
 * with one token mixer: progress bar (loss, accuracy, tokens/s, ETA),
 * held-out evaluations (optionally as JSON lines), checkpoints and resume. */
#include "cli.h"
#include "model_cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: linattn train --task mqar|copy|listops|bytes\n"
            "                     --mixer softmax|linear|performer|retnet|gla|deltanet|gdn|kda\n"
            "                     [--quick] [--ckpt FILE] [--resume FILE] [--json FILE] [options]\n"
            "\n"
            "Trains a decoder-only model (embedding, pre-norm blocks of RMSNorm -> short conv\n"
            "+ token mixer -> RMSNorm -> SwiGLU, tied head) with AdamW, gradient clipping and\n"
            "a warm-up + cosine learning rate, on the CPU through linattn's ops.\n"
            "\n"
            "  --quick          small model and few steps (about ten seconds)\n"
            "  --ckpt FILE      save a checkpoint at every evaluation and at the end\n"
            "                   (atomic; format in docs/CHECKPOINT.md)\n"
            "  --resume FILE    continue from a checkpoint (weights, AdamW state, data stream):\n"
            "                   same curve as an uninterrupted run; pass the same task flags\n"
            "  --json FILE      one JSON object per evaluation: step, loss, accuracy,\n"
            "                   tokens_per_s (held-out loss and accuracy)\n"
            "model:   --d-model N (64/128)  --layers N (2)  --heads N (4)  --head-dim N (D/H)\n"
            "         --d-ff N (2 D)  --conv N (4; 0 = none)  --feature-map elu1|relu|identity\n"
            "         --performer-m N (32)\n"
            "train:   --steps N  --batch N (16)  --lr X (3e-3)  --warmup N (steps/10)\n"
            "         --eval-every N  --seed N (1)  --threads N (0 = all CPUs)\n"
            "         --form chunk|recurrent (form of the linear ops; chunk)\n"
            "         --stop-at N (pause after step N, checkpoint written; --resume continues)\n"
            "task:    --seq-len N  --pairs N (MQAR)  --keys N (MQAR key vocabulary)\n"
            "         --copy-tokens N  --depth N (ListOps)  --text FILE (bytes)\n"
            "\n"
            "examples: linattn train --task mqar --mixer gdn --quick\n"
            "          linattn train --task bytes --mixer gla --steps 2000 --ckpt gla.ckpt\n"
            "          linattn generate --ckpt gla.ckpt --prompt 'And God said'\n");
}

typedef struct train_args {
    const char *task, *mixer, *ckpt, *resume, *json, *text, *fmap, *form;
    long d_model, layers, heads, head_dim, d_ff, conv, perf_m, steps, batch, warmup, eval_every;
    long threads, seq_len, pairs, keys, copy_tokens, depth, stop_at;
    double lr;
    uint64_t seed;
    int quick;
} train_args;

static void progress(int tty, int64_t step, int64_t total, double loss, double acc, double tps,
                     double eta) {
    char e[32];
    mcli_fmt_secs(e, sizeof e, eta);
    if (!tty) return;
    const int width = 24, fill = (int)(width * step / (total > 0 ? total : 1));
    fprintf(stderr, "\r  step %6ld/%ld [", (long)step, (long)total);
    for (int i = 0; i < width; i++) fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] loss %.4f acc %.3f %7.0f tok/s ETA %-8s", loss, acc, tps, e);
    fflush(stderr);
}

int cmd_train(int argc, char **argv) {
    train_args a = {0};
    a.task = "mqar", a.mixer = "gdn", a.seed = 1, a.lr = 3e-3, a.form = "chunk";
    a.d_model = a.layers = a.heads = a.head_dim = a.d_ff = a.conv = a.perf_m = -1;
    a.steps = a.batch = a.warmup = a.eval_every = a.seq_len = a.pairs = a.keys = -1;
    a.copy_tokens = a.depth = -1;
    a.stop_at = 0;
    const cli_opt opts[] = {CLI_OPT_SEED(&a.seed),
                            CLI_OPT_THREADS(&a.threads),
                            CLI_OPT_QUICK(&a.quick),
                            CLI_OPT_JSON(&a.json),
                            {"--task", CLI_STR, &a.task, 0, 0, NULL},
                            {"--mixer", CLI_STR, &a.mixer, 0, 0, NULL},
                            {"--ckpt", CLI_STR, &a.ckpt, 0, 0, NULL},
                            {"--resume", CLI_STR, &a.resume, 0, 0, NULL},
                            {"--text", CLI_STR, &a.text, 0, 0, NULL},
                            {"--feature-map", CLI_STR, &a.fmap, 0, 0, NULL},
                            {"--form", CLI_STR, &a.form, 0, 0, NULL},
                            {"--d-model", CLI_INT, &a.d_model, 1, 16384, NULL},
                            {"--layers", CLI_INT, &a.layers, 1, 256, NULL},
                            {"--heads", CLI_INT, &a.heads, 1, 1024, NULL},
                            {"--head-dim", CLI_INT, &a.head_dim, 1, 1024, NULL},
                            {"--d-ff", CLI_INT, &a.d_ff, 1, 65536, NULL},
                            {"--conv", CLI_INT, &a.conv, 0, 64, NULL},
                            {"--performer-m", CLI_INT, &a.perf_m, 1, 16384, NULL},
                            {"--steps", CLI_INT, &a.steps, 1, 100000000, NULL},
                            {"--batch", CLI_INT, &a.batch, 1, 65536, NULL},
                            {"--warmup", CLI_INT, &a.warmup, 0, 100000000, NULL},
                            {"--eval-every", CLI_INT, &a.eval_every, 1, 100000000, NULL},
                            {"--seq-len", CLI_INT, &a.seq_len, 4, 1 << 20, NULL},
                            {"--pairs", CLI_INT, &a.pairs, 1, 4096, NULL},
                            {"--keys", CLI_INT, &a.keys, 1, 8192, NULL},
                            {"--copy-tokens", CLI_INT, &a.copy_tokens, 1, 4096, NULL},
                            {"--depth", CLI_INT, &a.depth, 0, 64, NULL},
                            {"--stop-at", CLI_INT, &a.stop_at, 1, 100000000, NULL},
                            {"--lr", CLI_DOUBLE, &a.lr, 1e-8, 10.0, NULL}};
    const int parsed = cli_parse("train", argc, argv, opts, CLI_COUNT(opts));
    if (parsed == CLI_HELP) usage(stdout);
    if (parsed != CLI_OK) return parsed == CLI_HELP ? 0 : 2;
    const int task = lm_task_from_name(a.task), mixer = lm_mixer_from_name(a.mixer);
    if (task < 0) {
        fprintf(stderr, "linattn train: unknown task '%s' (mqar, copy, listops, bytes)\n", a.task);
        return 2;
    }
    if (mixer < 0) {
        fprintf(stderr, "linattn train: unknown mixer '%s' (see --help)\n", a.mixer);
        return 2;
    }
    if (!lm_mixer_available(mixer)) {
        fprintf(stderr, "linattn train: mixer %s is not in this build (needs la_kda_*)\n", a.mixer);
        return 2;
    }
    int fmap = LA_FEATURE_ELU1;
    if (a.fmap) {
        fmap = !strcmp(a.fmap, "elu1")       ? LA_FEATURE_ELU1
               : !strcmp(a.fmap, "relu")     ? LA_FEATURE_RELU
               : !strcmp(a.fmap, "identity") ? LA_FEATURE_IDENTITY
                                             : -1;
        if (fmap < 0) {
            fprintf(stderr, "linattn train: --feature-map elu1|relu|identity, got '%s'\n", a.fmap);
            return 2;
        }
    }
    if (strcmp(a.form, "chunk") && strcmp(a.form, "recurrent")) {
        fprintf(stderr, "linattn train: --form chunk|recurrent, got '%s'\n", a.form);
        return 2;
    }
    /* Task. */
    lm_task_cfg t;
    memset(&t, 0, sizeof t);
    t.task = task;
    const int q = a.quick;
    t.T = a.seq_len > 0             ? a.seq_len
          : task == LM_TASK_MQAR    ? (q ? 64 : 128)
          : task == LM_TASK_LISTOPS ? (q ? 64 : 128)
                                    : (q ? 64 : 256);
    t.pairs = a.pairs > 0 ? (int)a.pairs : q ? 8 : 16;
    t.n_keys = a.keys > 0 ? (int)a.keys : 64;
    t.copy_tokens = a.copy_tokens > 0 ? (int)a.copy_tokens : q ? 8 : 16;
    t.copy_vocab = 16;
    t.listops_depth = a.depth >= 0 ? (int)a.depth : 3;
    unsigned char *text = NULL;
    if (task == LM_TASK_BYTES) {
        text = mcli_read_text(a.text, &t.text_len);
        if (!text) return 1;
        t.text = text;
        t.text_split = t.text_len * 9 / 10;
    }
    const int64_t steps = a.steps > 0 ? a.steps : q ? 200 : 2000;
    const int64_t B = a.batch > 0 ? a.batch : 16;
    const int64_t eval_every = a.eval_every > 0 ? a.eval_every : (steps / 10 > 0 ? steps / 10 : 1);
    la_ctx *ctx = NULL;
    if (la_ctx_create(&ctx, (int)a.threads)) {
        fprintf(stderr, "linattn train: %s\n", la_last_error());
        free(text);
        return 1;
    }
    lm_model *m = NULL;
    lm_adamw opt;
    memset(&opt, 0, sizeof opt);
    lm_train_state ts;
    memset(&ts, 0, sizeof ts);
    int rc = 1;
    FILE *jf = NULL;
    if (a.resume) {
        if (lm_checkpoint_load(a.resume, &m, ctx, &opt, &ts)) {
            fprintf(stderr, "linattn train: %s\n", lm_error());
            goto done;
        }
        if (!ts.has_opt) {
            fprintf(stderr, "linattn train: %s has no optimizer state (not resumable)\n", a.resume);
            goto done;
        }
        if (m->cfg.vocab != lm_task_vocab(&t) || m->cfg.mixer != mixer) {
            fprintf(stderr,
                    "linattn train: %s holds a %s model with vocabulary %d; this task and mixer "
                    "need %s with %d (pass the flags of the original run)\n",
                    a.resume, lm_mixer_name(m->cfg.mixer), m->cfg.vocab, a.mixer,
                    lm_task_vocab(&t));
            goto done;
        }
        fprintf(stderr, "resumed %s at step %ld\n", a.resume, (long)ts.step);
    } else {
        lm_config c = lm_config_default(mixer, lm_task_vocab(&t));
        c.d_model = (int32_t)(a.d_model > 0 ? a.d_model : q ? 64 : 128);
        c.n_layers = (int32_t)(a.layers > 0 ? a.layers : 2);
        c.n_heads = (int32_t)(a.heads > 0 ? a.heads : 4);
        c.head_dim =
            (int32_t)(a.head_dim > 0 ? a.head_dim
                                     : (c.d_model / c.n_heads > 0 ? c.d_model / c.n_heads : 1));
        c.d_ff = (int32_t)(a.d_ff > 0 ? a.d_ff : 2 * c.d_model);
        c.conv = (int32_t)(a.conv >= 0 ? a.conv : 4);
        c.performer_m = (int32_t)(a.perf_m > 0 ? a.perf_m : 32);
        c.feature_map = fmap;
        c.seed = a.seed;
        if (lm_model_create(&m, &c, ctx) ||
            lm_adamw_init(&opt, m->n_params, (float)a.lr, a.warmup >= 0 ? a.warmup : steps / 10,
                          steps)) {
            fprintf(stderr, "linattn train: %s\n", lm_error());
            goto done;
        }
        la_rng_seed(&ts.data_rng, a.seed * 1000003u + 17u);
    }
    m->form = !strcmp(a.form, "recurrent") ? LA_FORM_RECURRENT : LA_FORM_CHUNK;
    if (a.json && !(jf = fopen(a.json, a.resume ? "a" : "w"))) {
        fprintf(stderr, "linattn train: cannot write %s\n", a.json);
        goto done;
    }
    const lm_config *c = &m->cfg;
    const int64_t total = opt.total_steps;
    printf("linattn train: task %s (T %ld%s), mixer %s, %d layers, d_model %d, %d heads x %d, "
           "%.2fM parameters, batch %ld, %ld steps, %d threads\n",
           a.task, (long)t.T, task == LM_TASK_MQAR ? "" : "", a.mixer, c->n_layers, c->d_model,
           c->n_heads, c->head_dim, (double)m->n_params / 1e6, (long)B, (long)total,
           la_ctx_threads(ctx));
    if (task == LM_TASK_MQAR) printf("  MQAR: %d key-value pairs, %d keys\n", t.pairs, t.n_keys);
    const int tty = isatty(fileno(stderr));
    const double t_start = mcli_now();
    double t_mark = t_start, loss = 0, acc = 0, ema_loss = -1, ema_acc = 0, tps = 0;
    int64_t tokens_since = 0;
    const uint64_t eval_seed = a.seed * 7919u + 123456789u;
    const int eval_batches = q ? 2 : 8;
    while (ts.step < total) {
        if (lm_train_step(m, &opt, &t, &ts, B, &loss, &acc)) {
            if (tty) fputc('\n', stderr);
            fprintf(stderr, "linattn train: step %ld: %s\n", (long)ts.step, lm_error());
            goto done;
        }
        tokens_since += B * t.T;
        ema_loss = ema_loss < 0 ? loss : 0.9 * ema_loss + 0.1 * loss;
        ema_acc = 0.9 * ema_acc + 0.1 * acc;
        const double now = mcli_now();
        if (now - t_mark > 0.5) {
            tps = (double)tokens_since / (now - t_mark);
            t_mark = now, tokens_since = 0;
        }
        const double per_step = (now - t_start) / (double)(ts.step > 0 ? ts.step : 1);
        progress(tty, ts.step, total, ema_loss, ema_acc, tps, per_step * (double)(total - ts.step));
        if (ts.step % eval_every == 0 || ts.step == total) {
            double el, ea;
            if (lm_evaluate(m, &t, eval_seed, B, eval_batches, &el, &ea)) {
                fprintf(stderr, "\nlinattn train: evaluation: %s\n", lm_error());
                goto done;
            }
            if (tty) fprintf(stderr, "\r%100s\r", "");
            printf("  step %6ld  train loss %.4f  held-out loss %.4f  accuracy %.4f  %.0f tok/s  "
                   "lr %.2e\n",
                   (long)ts.step, ema_loss, el, ea, tps, (double)lm_lr_at(&opt, ts.step - 1));
            fflush(stdout);
            if (jf) {
                fprintf(jf,
                        "{\"step\": %ld, \"loss\": %.6g, \"accuracy\": %.6g, \"tokens_per_s\": "
                        "%.6g, \"train_loss\": %.6g, \"task\": \"%s\", \"mixer\": \"%s\"}\n",
                        (long)ts.step, el, ea, tps, ema_loss, a.task, a.mixer);
                fflush(jf);
            }
            if (a.ckpt && lm_checkpoint_save(a.ckpt, m, &opt, &ts)) {
                fprintf(stderr, "linattn train: %s\n", lm_error());
                goto done;
            }
        }
        if (a.stop_at > 0 && ts.step >= a.stop_at && ts.step < total) {
            if (a.ckpt && lm_checkpoint_save(a.ckpt, m, &opt, &ts)) {
                fprintf(stderr, "linattn train: %s\n", lm_error());
                goto done;
            }
            printf("paused at step %ld%s%s\n", (long)ts.step, a.ckpt ? ", checkpoint " : "",
                   a.ckpt ? a.ckpt : "");
            break;
        }
    }
    char el[32];
    mcli_fmt_secs(el, sizeof el, mcli_now() - t_start);
    printf("done in %s%s%s\n", el, a.ckpt ? ", checkpoint " : "", a.ckpt ? a.ckpt : "");
    rc = 0;
done:
    if (jf) fclose(jf);
    lm_adamw_free(&opt);
    lm_model_destroy(m);
    la_ctx_destroy(ctx);
    free(text);
    return rc;
}
