/* Writes the seed corpus of fuzz_checkpoint.c: tiny valid checkpoints made
 * by the library (lm_checkpoint_save), one per mixer, with and without the
 * optimizer state, each prefixed by the target's mode byte (0: as is; 1:
 * size and checksum fixed after mutation).
 *   make_checkpoint_seeds OUT_DIR
 * (tests/fuzz/run.sh builds and runs it when OUT_DIR is empty; the files in
 * tests/fuzz/corpus_checkpoint/ came from it.) */
#include "linattn.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int prefix(const char *tmp, const char *out, unsigned char mode) {
    FILE *in = fopen(tmp, "rb"), *o = fopen(out, "wb");
    int ok = in && o && fputc(mode, o) != EOF;
    int c;
    while (ok && (c = fgetc(in)) != EOF) ok = fputc(c, o) != EOF;
    if (in) fclose(in);
    if (o && fclose(o) != 0) ok = 0;
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_checkpoint_seeds OUT_DIR\n");
        return 2;
    }
    la_ctx *ctx = NULL;
    if (la_ctx_create(&ctx, 1) != LA_OK) return 1;
    int bad = 0, n = 0;
    for (int mixer = 0; mixer < LM_MIXER_COUNT; mixer++) {
        if (!lm_mixer_available(mixer)) continue;
        lm_config c = lm_config_default(mixer, 6);
        c.d_model = 4;
        c.n_layers = mixer % 2 ? 1 : 2;
        c.n_heads = 1;
        c.head_dim = 4;
        c.d_ff = 4;
        c.conv = mixer % 3 == 0 ? 0 : 2;
        c.performer_m = 3;
        c.seed = 7 + (uint64_t)mixer;
        lm_model *m = NULL;
        if (lm_model_create(&m, &c, ctx) != LA_OK) {
            fprintf(stderr, "%s: %s\n", lm_mixer_name(mixer), lm_error());
            bad = 1;
            continue;
        }
        for (int with_opt = 0; with_opt < 2; with_opt++) {
            lm_adamw opt;
            memset(&opt, 0, sizeof opt);
            lm_train_state ts;
            memset(&ts, 0, sizeof ts);
            ts.step = 3;
            la_rng_seed(&ts.data_rng, 11);
            if (with_opt && lm_adamw_init(&opt, m->n_params, 3e-3f, 2, 10) != LA_OK) {
                bad = 1;
                continue;
            }
            char tmp[512], out[512];
            snprintf(tmp, sizeof tmp, "%s/tmp.ckpt", argv[1]);
            if (lm_checkpoint_save(tmp, m, with_opt ? &opt : NULL, &ts) != LA_OK) {
                fprintf(stderr, "save: %s\n", lm_error());
                bad = 1;
            } else {
                for (unsigned char mode = 0; mode < 2; mode++) {
                    snprintf(out, sizeof out, "%s/%s%s-%u", argv[1], lm_mixer_name(mixer),
                             with_opt ? "-opt" : "", mode);
                    bad |= prefix(tmp, out, mode) != 0;
                    n++;
                }
                remove(tmp);
            }
            lm_adamw_free(&opt);
        }
        lm_model_destroy(m);
    }
    la_ctx_destroy(ctx);
    printf("%d seeds in %s\n", n, argv[1]);
    return bad;
}
