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
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--quick")) {
            a.quick = 1;
            continue;
        }
        if (cli_opt_str(argc, argv, &i, "--task", &a.task, &bad) ||
            cli_opt_str(argc, argv, &i, "--mixer", &a.mixer, &bad) ||
            cli_opt_str(argc, argv, &i, "--ckpt", &a.ckpt, &bad) ||
            cli_opt_str(argc, argv, &i, "--resume", &a.resume, &bad) ||
            cli_opt_str(argc, argv, &i, "--json", &a.json, &bad) ||
            cli_opt_str(argc, argv, &i, "--text", &a.text, &bad) ||
            cli_opt_str(argc, argv, &i, "--feature-map", &a.fmap, &bad) ||
            cli_opt_str(argc, argv, &i, "--form", &a.form, &bad) ||
            cli_opt_int(argc, argv, &i, "--d-model", 1, 16384, &a.d_model, &bad) ||
            cli_opt_int(argc, argv, &i, "--layers", 1, 256, &a.layers, &bad) ||
            cli_opt_int(argc, argv, &i, "--heads", 1, 1024, &a.heads, &bad) ||
            cli_opt_int(argc, argv, &i, "--head-dim", 1, 1024, &a.head_dim, &bad) ||
            cli_opt_int(argc, argv, &i, "--d-ff", 1, 65536, &a.d_ff, &bad) ||
            cli_opt_int(argc, argv, &i, "--conv", 0, 64, &a.conv, &bad) ||
            cli_opt_int(argc, argv, &i, "--performer-m", 1, 16384, &a.perf_m, &bad) ||
            cli_opt_int(argc, argv, &i, "--steps", 1, 100000000, &a.steps, &bad) ||
            cli_opt_int(argc, argv, &i, "--batch", 1, 65536, &a.batch, &bad) ||
            cli_opt_int(argc, argv, &i, "--warmup", 0, 100000000, &a.warmup, &bad) ||
            cli_opt_int(argc, argv, &i, "--eval-every", 1, 100000000, &a.eval_every, &bad) ||
            cli_opt_int(argc, argv, &i, "--threads", 0, 4096, &a.threads, &bad) ||
            cli_opt_int(argc, argv, &i, "--seq-len", 4, 1 << 20, &a.seq_len, &bad) ||
            cli_opt_int(argc, argv, &i, "--pairs", 1, 4096, &a.pairs, &bad) ||
            cli_opt_int(argc, argv, &i, "--keys", 1, 8192, &a.keys, &bad) ||
            cli_opt_int(argc, argv, &i, "--copy-tokens", 1, 4096, &a.copy_tokens, &bad) ||
            cli_opt_int(argc, argv, &i, "--depth", 0, 64, &a.depth, &bad) ||
            cli_opt_int(argc, argv, &i, "--stop-at", 1, 100000000, &a.stop_at, &bad) ||
            cli_opt_u64(argc, argv, &i, "--seed", &a.seed, &bad) ||
            mcli_opt_float(argc, argv, &i, "--lr", 1e-8, 10.0, &a.lr, &bad)) {
            if (bad) return 2;
            continue;
        }
        fprintf(stderr, "linattn train: unknown argument '%s'\n\n", argv[i]);
        usage(stderr);
        return 2;
    }
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
