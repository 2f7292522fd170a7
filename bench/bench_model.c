/* Model speed benchmark (bench/MODEL.md): median seconds per training step
 * (forward + backward + AdamW) of the src/model/ model at d_model 256, 4
 * layers, 4 heads, T 512, batch 8, per mixer; the model's GEMM in GFLOP/s
 * as a machine reference; generation time per token vs position (batch 1).
 *   bench_model [--mixer NAME] [--threads N] [--steps N] [--gen-len N]
 * One JSON object per line on stdout. */
#include "gemm.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
/* CPU seconds of the whole process (all threads): on a shared machine the
 * work a step costs, whatever share of the cores it got. */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmpd);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

int main(int argc, char **argv) {
    const char *only = NULL;
    int threads = 2, steps = 5, gen_len = 4096, D = 256, L = 4, H = 4, F = 512, T = 512, B = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mixer"))
            only = argv[i + 1];
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps"))
            steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--gen-len"))
            gen_len = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seq-len"))
            T = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (steps < 0 || steps > 1000) steps = 5;
    la_ctx *ctx = NULL;
    if (la_ctx_create(&ctx, threads)) return 1;
    { /* GEMM reference: 4096 x 256 x 1024 */
        lm_pool *p = lm_pool_create(threads);
        const int64_t M = 4096, K = 256, N = 1024;
        float *a = malloc(M * K * 4), *b = malloc(K * N * 4), *c = malloc(M * N * 4);
        for (int64_t i = 0; i < M * K; i++) a[i] = (float)(i % 7) * 0.1f;
        for (int64_t i = 0; i < K * N; i++) b[i] = (float)(i % 5) * 0.1f;
        double ts[5];
        for (int r = 0; r < 5; r++) {
            double t0 = now();
            lm_gemm(p, c, a, b, M, K, N, 0);
            ts[r] = now() - t0;
        }
        printf("{\"impl\": \"linattn\", \"what\": \"gemm 4096x256x1024\", \"threads\": %d, "
               "\"gflops\": %.2f, \"isa\": \"%s\"}\n",
               threads, 2.0 * M * K * N / median(ts, 5) / 1e9, lm_gemm_isa());
        free(a), free(b), free(c);
        lm_pool_destroy(p);
    }
    for (int mix = 0; mix < LM_MIXER_COUNT; mix++) {
        if (!lm_mixer_available(mix) || (only && strcmp(only, lm_mixer_name(mix)))) continue;
        lm_config c = lm_config_default(mix, 256);
        c.d_model = D, c.n_layers = L, c.n_heads = H, c.head_dim = D / H, c.d_ff = F;
        lm_model *m = NULL;
        lm_adamw opt;
        if (lm_model_create(&m, &c, ctx) || lm_adamw_init(&opt, m->n_params, 1e-3f, 1, 100)) {
            fprintf(stderr, "%s\n", lm_error());
            return 1;
        }
        lm_task_cfg t;
        memset(&t, 0, sizeof t);
        static unsigned char text[1 << 16];
        for (int i = 0; i < (1 << 16); i++) text[i] = (unsigned char)(i * 2654435761u >> 24);
        t.task = LM_TASK_BYTES, t.T = T, t.text = text, t.text_len = 1 << 16,
        t.text_split = 1 << 15;
        lm_train_state ts;
        memset(&ts, 0, sizeof ts);
        la_rng_seed(&ts.data_rng, 1);
        double times[1000], cpu[1000], loss, acc;
        for (int s = 0; steps > 0 && s <= steps; s++) {
            const double t0 = now(), c0 = cpu_now();
            if (lm_train_step(m, &opt, &t, &ts, B, &loss, &acc)) {
                fprintf(stderr, "%s\n", lm_error());
                return 1;
            }
            if (s) times[s - 1] = now() - t0, cpu[s - 1] = cpu_now() - c0;
        }
        const double med = steps > 0 ? median(times, steps) : 0.0;
        const double cmed = steps > 0 ? median(cpu, steps) : 0.0;
        if (steps > 0)
            printf("{\"impl\": \"linattn\", \"mixer\": \"%s\", \"threads\": %d, \"seq_len\": %d, "
                   "\"seconds_per_step\": %.4f, \"cpu_seconds_per_step\": %.4f, \"tokens_per_s\": "
                   "%.1f, \"steps\": %d, \"params\": %ld}\n",
                   lm_mixer_name(mix), threads, T, med, cmed, B * T / med, steps,
                   (long)m->n_params);
        fflush(stdout);
        /* Generation: median time per token over positions (p/2, p] (the
         * median: the machine is shared and single tokens get preempted). */
        lm_gen *g = NULL;
        if (lm_gen_create(&g, m, 1, gen_len)) return 1;
        float *logits = malloc(256 * 4);
        int32_t tok = 65;
        double *tt = malloc((size_t)gen_len * sizeof(double));
        printf("{\"impl\": \"linattn\", \"mixer\": \"%s\", \"generation\": [", lm_mixer_name(mix));
        int first = 1;
        for (int p = 1; p <= gen_len; p++) {
            double t0 = now();
            lm_gen_step(g, &tok, logits);
            tt[p - 1] = now() - t0;
            if ((p & (p - 1)) == 0 && p >= 2) {
                printf("%s{\"position\": %d, \"us_per_token\": %.1f, \"state_bytes\": %ld}",
                       first ? "" : ", ", p, 1e6 * median(tt + p / 2, p / 2),
                       (long)lm_gen_state_bytes(g));
                first = 0;
            }
        }
        printf("]}\n");
        fflush(stdout);
        free(logits);
        free(tt);
        lm_gen_destroy(g);
        lm_adamw_free(&opt);
        lm_model_destroy(m);
    }
    la_ctx_destroy(ctx);
    return 0;
}
