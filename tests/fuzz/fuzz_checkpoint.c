/* libFuzzer target over the model checkpoint loader (lm_checkpoint_load,
 * src/model/ckpt.c; format in docs/CHECKPOINT.md).
 *
 * Input: one mode byte, then the file's bytes. Mode bit 0 set: before the
 * file is written, its size field (offset 16) and its checksum (last eight
 * bytes, FNV-1a) are made consistent, so mutations get past those two
 * gates and reach the config, table and tensor checks; mode bit 0 clear:
 * the bytes as they are. The file goes to a private temporary path and is
 * loaded with and without optimizer state. Built with ASan + UBSan
 * (tests/fuzz/run.sh), so any out-of-bounds access or undefined behaviour
 * aborts. The target aborts when the loader breaks its contract:
 *  - a failing load returns a status with a non-empty message and leaves
 *    *out untouched;
 *  - a successful load gives a model whose parameters are finite and whose
 *    table lies inside the parameter buffer, optimizer moments of the same
 *    count when the file has them, and the model decodes one token (the
 *    generation path reads every mixer's weights and config). */
#include "linattn.h"
#include "model/internal.h" /* lm_fail: clears the message before each load */
#include "model/model.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];
static la_ctx *ctx;

static void cleanup(void) {
    if (path[0]) unlink(path);
    la_ctx_destroy(ctx);
}

static void fail(const char *what) {
    fprintf(stderr, "fuzz_checkpoint: contract broken: %s (%s)\n", what, lm_error());
    abort();
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int write_file(const unsigned char *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    const int ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static void check_loaded(lm_model *m, const lm_adamw *opt, const lm_train_state *ts, int want_opt) {
    if (!m || m->n_params < 1 || !m->params) fail("success without a model");
    for (int i = 0; i < m->n_tensors; i++) {
        const lm_tensor *t = &m->table[i];
        if (t->size < 0 || t->offset < 0 || t->offset + t->size > m->n_params)
            fail("tensor outside the parameter buffer");
    }
    for (int64_t i = 0; i < m->n_params; i++)
        if (!isfinite(m->params[i])) fail("non-finite parameter accepted");
    if (want_opt && ts->has_opt && (opt->n != m->n_params || !opt->m1 || !opt->m2))
        fail("optimizer state of the wrong size");
    if (!want_opt) return;
    lm_gen *g = NULL;
    if (lm_gen_create(&g, m, 1, 2) != LA_OK) return; /* e.g. out of memory: a status */
    const int32_t tok = 0;
    float *logits = malloc((size_t)m->cfg.vocab * sizeof *logits);
    if (logits && lm_gen_step(g, &tok, logits) == LA_OK) {
        /* weights are finite but may be huge: logits may overflow; no check */
    }
    free(logits);
    lm_gen_destroy(g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ctx) {
        if (la_ctx_create(&ctx, 1) != LA_OK) abort();
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/fuzz_ckpt.%ld", dir, (long)getpid());
        atexit(cleanup);
    }
    if (size < 1 || size > (1u << 20)) return 0;
    const unsigned mode = data[0];
    size_t n = size - 1;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) return 0;
    memcpy(buf, data + 1, n);
    if ((mode & 1) && n >= 24) {
        for (int i = 0; i < 8; i++) buf[16 + i] = (unsigned char)((uint64_t)n >> (8 * i));
        const uint64_t h = fnv1a(buf, n - 8);
        for (int i = 0; i < 8; i++) buf[n - 8 + i] = (unsigned char)(h >> (8 * i));
    }
    if (write_file(buf, n) != 0) {
        free(buf);
        return 0;
    }
    free(buf);
    for (int want_opt = 0; want_opt < 2; want_opt++) {
        lm_model *sentinel = (lm_model *)(uintptr_t)0x1, *m = sentinel;
        lm_adamw opt;
        lm_train_state ts;
        memset(&opt, 0, sizeof opt);
        memset(&ts, 0, sizeof ts);
        lm_fail(LA_OK, "%s", "");
        const la_status st =
            lm_checkpoint_load(path, &m, ctx, want_opt ? &opt : NULL, want_opt ? &ts : NULL);
        if (st != LA_OK) {
            if (m != sentinel) fail("a failing load wrote *out");
            if (!lm_error()[0]) fail("a failing load without a message");
            continue;
        }
        check_loaded(m, &opt, &ts, want_opt);
        lm_model_destroy(m);
        lm_adamw_free(&opt);
    }
    return 0;
}
