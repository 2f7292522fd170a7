/* linattn generate — prompt -> tokens from a checkpoint, one token at a time:
 * la_decoder state for the linear mixers (constant memory and time per
 * token), a KV cache for softmax (both grow with the position). Prints the
 * text, then tokens/s and state/cache memory vs position. */
#include "cli.h"
#include "model_cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: linattn generate --ckpt FILE [--prompt TEXT] [--max-tokens N]\n"
            "                        [--temperature X] [--seed N] [--threads N] [--quiet]\n"
            "\n"
            "Feeds the prompt to the model token by token, then samples --max-tokens more\n"
            "(greedy at temperature 0, the default 0.8). Byte models (vocabulary 256) read\n"
            "the prompt as text; other models read space-separated token ids.\n"
            "Afterwards prints time per token and state (or KV-cache) bytes vs position.\n"
            "\n"
            "  --max-tokens N   tokens to generate (default 200)\n"
            "  --quiet          only the statistics\n"
            "\n"
            "example: linattn train --task bytes --mixer gla --quick --ckpt gla.ckpt\n"
            "         linattn generate --ckpt gla.ckpt --prompt 'And God said' --max-tokens 300\n");
}

static int sample(const float *logits, int V, double temp, la_rng *rng) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    if (temp <= 0) return best;
    double sum = 0, *p = malloc((size_t)V * sizeof(double));
    if (!p) return best;
    for (int v = 0; v < V; v++) sum += p[v] = exp(((double)logits[v] - logits[best]) / temp);
    double u = la_rng_uniform(rng) * sum;
    int pick = V - 1;
    for (int v = 0; v < V; v++) {
        u -= p[v];
        if (u < 0) {
            pick = v;
            break;
        }
    }
    free(p);
    return pick;
}

int cmd_generate(int argc, char **argv) {
    const char *ckpt = NULL, *prompt = NULL;
    long max_tokens = 200, threads = 1;
    double temp = 0.8;
    uint64_t seed = 1;
    int quiet = 0;
    const cli_opt opts[] = {CLI_OPT_SEED(&seed),
                            CLI_OPT_THREADS(&threads),
                            {"--quiet", CLI_FLAG, &quiet, 0, 0, NULL},
                            {"--ckpt", CLI_STR, &ckpt, 0, 0, NULL},
                            {"--prompt", CLI_STR, &prompt, 0, 0, NULL},
                            {"--max-tokens", CLI_INT, &max_tokens, 1, 1 << 22, NULL},
                            {"--temperature", CLI_DOUBLE, &temp, 0.0, 100.0, NULL}};
    const int parsed = cli_parse("generate", argc, argv, opts, CLI_COUNT(opts));
    if (parsed == CLI_HELP) usage(stdout);
    if (parsed != CLI_OK) return parsed == CLI_HELP ? 0 : 2;
    if (!ckpt) {
        fprintf(stderr, "linattn generate: --ckpt FILE is required\n\n");
        usage(stderr);
        return 2;
    }
    la_ctx *ctx = NULL;
    lm_model *m = NULL;
    lm_gen *g = NULL;
    int32_t *toks = NULL;
    float *logits = NULL;
    double *secs = NULL;
    int64_t *bytes = NULL;
    int rc = 1;
    if (la_ctx_create(&ctx, (int)threads)) {
        fprintf(stderr, "linattn generate: %s\n", la_last_error());
        return 1;
    }
    if (lm_checkpoint_load(ckpt, &m, ctx, NULL, NULL)) {
        fprintf(stderr, "linattn generate: %s\n", lm_error());
        goto done;
    }
    const int V = m->cfg.vocab;
    const int byte_model = V == 256;
    if (!prompt) prompt = byte_model ? "And God said" : "1";
    const int64_t plen_max = (int64_t)strlen(prompt) + 1;
    const int64_t total = plen_max + max_tokens;
    toks = malloc((size_t)total * sizeof(int32_t));
    logits = malloc((size_t)V * sizeof(float));
    secs = malloc((size_t)total * sizeof(double));
    bytes = malloc((size_t)total * sizeof(int64_t));
    if (!toks || !logits || !secs || !bytes) goto oom;
    int64_t plen = 0;
    if (byte_model) {
        for (const char *s = prompt; *s; s++) toks[plen++] = (unsigned char)*s;
    } else {
        char *end;
        for (const char *s = prompt; *s;) {
            long v = strtol(s, &end, 10);
            if (end == s || v < 0 || v >= V) {
                fprintf(stderr, "linattn generate: prompt token '%s' is not an id in [0, %d)\n", s,
                        V);
                goto done;
            }
            toks[plen++] = (int32_t)v;
            s = end;
            while (*s == ' ') s++;
        }
    }
    if (plen == 0) {
        fprintf(stderr, "linattn generate: empty prompt\n");
        goto done;
    }
    if (lm_gen_create(&g, m, 1, plen + max_tokens)) {
        fprintf(stderr, "linattn generate: %s\n", lm_error());
        goto done;
    }
    la_rng rng;
    la_rng_seed(&rng, seed);
    if (!quiet) {
        printf("--- %s (mixer %s) ---\n", ckpt, lm_mixer_name(m->cfg.mixer));
        for (int64_t i = 0; i < plen; i++)
            byte_model ? (void)putchar(toks[i]) : (void)printf("%d ", toks[i]);
        fflush(stdout);
    }
    const int64_t n = plen + max_tokens;
    const double t0 = mcli_now();
    for (int64_t pos = 0; pos < n - 1; pos++) {
        const double a = mcli_now();
        if (lm_gen_step(g, &toks[pos], logits)) {
            fprintf(stderr, "\nlinattn generate: %s\n", lm_error());
            goto done;
        }
        secs[pos] = mcli_now() - a;
        bytes[pos] = lm_gen_state_bytes(g);
        if (pos + 1 >= plen && pos + 1 < n) {
            toks[pos + 1] = sample(logits, V, temp, &rng);
            if (!quiet) {
                if (byte_model)
                    putchar(toks[pos + 1]);
                else
                    printf("%d ", toks[pos + 1]);
                fflush(stdout);
            }
        }
    }
    const double wall = mcli_now() - t0;
    const int64_t steps = n - 1;
    printf("%s\n--- %ld tokens (%ld prompt) in %.3f s: %.1f tokens/s ---\n", quiet ? "" : "",
           (long)steps, (long)plen, wall, (double)steps / wall);
    printf("%10s %14s %18s\n", "position", "us/token", "state/cache bytes");
    for (int64_t p = 1; p <= steps; p *= 2) {
        /* median-ish: mean of the steps in [p/2, p) excluding the first */
        const int64_t lo = p / 2 > 1 ? p / 2 : 1, hi = p;
        double s = 0;
        int64_t k = 0;
        for (int64_t i = lo; i < hi && i < steps; i++) s += secs[i], k++;
        if (p == 1) s = secs[0], k = 1;
        printf("%10ld %14.1f %18ld\n", (long)p, 1e6 * s / (double)(k ? k : 1), (long)bytes[p - 1]);
    }
    printf("(%s: %s)\n", lm_mixer_name(m->cfg.mixer),
           m->cfg.mixer == LM_SOFTMAX ? "KV cache grows with the position"
                                      : "recurrent state, constant in the position");
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "linattn generate: out of memory\n");
done:
    lm_gen_destroy(g);
    lm_model_destroy(m);
    la_ctx_destroy(ctx);
    free(toks);
    free(logits);
    free(secs);
    free(bytes);
    return rc;
}
