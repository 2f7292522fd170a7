/* Checkpoints: resume == uninterrupted training bit for bit (optimizer and
 * data stream included); malformed files are refused with LA_ERR_IO and a
 * message; a kill -9 during a save leaves the previous checkpoint loadable. */
#include "harness.h"
#include "model.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char dir[256];

static lm_task_cfg mqar(void) {
    lm_task_cfg t;
    memset(&t, 0, sizeof t);
    t.task = LM_TASK_MQAR, t.T = 24, t.pairs = 4, t.n_keys = 8;
    return t;
}

static lm_config small(int mixer) {
    lm_config c = lm_config_default(mixer, 17);
    c.d_model = 16, c.n_heads = 2, c.head_dim = 8, c.d_ff = 24;
    return c;
}

static void test_resume(la_ctx *ctx, int mixer) {
    const int total = 14, cut = 6;
    lm_task_cfg t = mqar();
    lm_config c = small(mixer);
    double la[14], lb[14], acc;
    lm_model *a = NULL, *b = NULL;
    lm_adamw oa, ob;
    lm_train_state sa, sb;
    lm_model_create(&a, &c, ctx);
    lm_adamw_init(&oa, a->n_params, 3e-3f, 3, total);
    memset(&sa, 0, sizeof sa);
    la_rng_seed(&sa.data_rng, 42);
    for (int s = 0; s < total; s++) lm_train_step(a, &oa, &t, &sa, 4, &la[s], &acc);

    lm_model_create(&b, &c, ctx);
    lm_adamw_init(&ob, b->n_params, 3e-3f, 3, total);
    memset(&sb, 0, sizeof sb);
    la_rng_seed(&sb.data_rng, 42);
    for (int s = 0; s < cut; s++) lm_train_step(b, &ob, &t, &sb, 4, &lb[s], &acc);
    char path[400];
    snprintf(path, sizeof path, "%s/resume.ckpt", dir);
    CHECK(lm_checkpoint_save(path, b, &ob, &sb) == LA_OK, "save: %s", lm_error());
    lm_model_destroy(b);
    lm_adamw_free(&ob);
    b = NULL;
    memset(&sb, 0, sizeof sb);
    CHECK(lm_checkpoint_load(path, &b, ctx, &ob, &sb) == LA_OK, "load: %s", lm_error());
    CHECK(b && sb.step == cut && sb.has_opt && ob.step == cut, "step %ld restored", (long)sb.step);
    if (b)
        for (int s = cut; s < total; s++) lm_train_step(b, &ob, &t, &sb, 4, &lb[s], &acc);
    int same = b != NULL;
    for (int s = 0; s < total && same; s++) same = la[s] == lb[s];
    CHECK(same, "%s: resumed loss curve equals the uninterrupted one bit for bit",
          lm_mixer_name(mixer));
    CHECK(b && th_bitwise_equal(a->params, b->params, (size_t)a->n_params) &&
              th_bitwise_equal(oa.m2, ob.m2, (size_t)a->n_params),
          "%s: final weights and moments bitwise equal", lm_mixer_name(mixer));
    CHECK(la[total - 1] != la[0], "training moved the loss");
    lm_model_destroy(a);
    lm_model_destroy(b);
    lm_adamw_free(&oa);
    lm_adamw_free(&ob);
}

static unsigned char *slurp(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*n);
    if (fread(b, 1, (size_t)*n, f) != (size_t)*n) *n = -1;
    fclose(f);
    return b;
}
static void spit(const char *path, const unsigned char *b, long n) {
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, (size_t)n, f);
    fclose(f);
}
static uint64_t fnv(const unsigned char *p, long n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (long i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
/* Re-seals a modified file with a valid checksum (to reach later checks). */
static void reseal(unsigned char *b, long n) {
    uint64_t h = fnv(b, n - 8);
    for (int i = 0; i < 8; i++) b[n - 8 + i] = (unsigned char)(h >> (8 * i));
}
static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void refused(la_ctx *ctx, const char *path, const char *what, const char *needle) {
    lm_model *m = NULL;
    lm_adamw o;
    memset(&o, 0, sizeof o);
    la_status st = lm_checkpoint_load(path, &m, ctx, &o, NULL);
    CHECK(st == LA_ERR_IO && m == NULL && o.m1 == NULL, "%s refused with LA_ERR_IO (got %s)", what,
          la_status_string(st));
    CHECK(strstr(lm_error(), needle) != NULL, "%s: message '%s' mentions '%s'", what, lm_error(),
          needle);
}

static void test_corrupt(la_ctx *ctx) {
    lm_config c = small(LM_GLA);
    lm_model *m = NULL;
    lm_model_create(&m, &c, ctx);
    lm_adamw o;
    lm_adamw_init(&o, m->n_params, 1e-3f, 1, 10);
    char good[400], bad[400];
    snprintf(good, sizeof good, "%s/good.ckpt", dir);
    snprintf(bad, sizeof bad, "%s/bad.ckpt", dir);
    CHECK(lm_checkpoint_save(good, m, &o, NULL) == LA_OK, "save");
    long n;
    unsigned char *orig = slurp(good, &n), *b = malloc((size_t)n);
    lm_model *back = NULL;
    CHECK(lm_checkpoint_load(good, &back, ctx, NULL, NULL) == LA_OK, "intact file loads: %s",
          lm_error());
    CHECK(back && th_bitwise_equal(back->params, m->params, (size_t)m->n_params), "weights equal");
    lm_model_destroy(back);

    memcpy(b, orig, (size_t)n);
    b[0] ^= 1;
    spit(bad, b, n);
    refused(ctx, bad, "wrong magic", "magic");
    memcpy(b, orig, (size_t)n);
    put32(b + 8, 2);
    reseal(b, n);
    spit(bad, b, n);
    refused(ctx, bad, "version 2", "version 2");
    const long cuts[] = {0, 7, 150, 208, n / 2, n - 9, n - 1};
    for (int i = 0; i < 7; i++) {
        spit(bad, orig, cuts[i]);
        refused(ctx, bad, "truncated file", "bytes");
    }
    la_rng rng;
    la_rng_seed(&rng, 8);
    for (int i = 0; i < 12; i++) { /* one flipped bit anywhere */
        memcpy(b, orig, (size_t)n);
        const long at = i == 0 ? n - 1 : (long)(la_rng_u64(&rng) % (uint64_t)n);
        b[at] ^= (unsigned char)(1u << (i % 8));
        spit(bad, b, n);
        refused(ctx, bad, "flipped bit",
                at < 8    ? "magic"
                : at < 12 ? "version"
                : at < 24 ? "bytes"
                          : "checksum");
    }
    /* Absurd sizes behind a valid checksum: huge config, huge tensor table. */
    memcpy(b, orig, (size_t)n);
    put32(b + 24, 1 << 20); /* vocab */
    put32(b + 28, 1 << 14); /* d_model: 16 G floats */
    reseal(b, n);
    spit(bad, b, n);
    refused(ctx, bad, "config larger than the file", "more than the file holds");
    memcpy(b, orig, (size_t)n);
    put32(b + 192, 0x7fffffffu);
    reseal(b, n);
    spit(bad, b, n);
    refused(ctx, bad, "huge tensor table", "does not fit");
    memcpy(b, orig, (size_t)n);
    put32(b + 24 + 4 * 6, 99); /* unknown mixer */
    reseal(b, n);
    spit(bad, b, n);
    refused(ctx, bad, "unknown mixer", "mixer");
    memcpy(b, orig, (size_t)n);
    b[200 + 40] ^= 0x40; /* first tensor's offset moved into the next */
    reseal(b, n);
    spit(bad, b, n);
    refused(ctx, bad, "overlapping tensor offset", "offset");
    memcpy(b, orig, (size_t)n);
    b[200] = 'x'; /* first tensor's name */
    reseal(b, n);
    spit(bad, b, n);
    refused(ctx, bad, "renamed tensor", "tensor entry");
    refused(ctx, "/nonexistent/dir/x.ckpt", "missing file", "cannot open");
    refused(ctx, dir, "a folder", "not a regular file");
    CHECK(lm_checkpoint_save("/nonexistent/dir/x.ckpt", m, &o, NULL) == LA_ERR_IO,
          "save into a missing folder fails with LA_ERR_IO");
    free(orig);
    free(b);
    unlink(bad);
    unlink(good);
    lm_adamw_free(&o);
    lm_model_destroy(m);
}

/* Random mutations behind a valid checksum (so that parsing goes past the
 * checksum): 1-4 bytes of the header and tensor table changed, or the file
 * cut and resealed. Every load must either succeed or fail with LA_ERR_IO
 * (or LA_ERR_UNSUPPORTED for a mixer not in the build), never crash or read
 * outside the buffer (ASan runs this too). */
static void test_mutations(la_ctx *ctx) {
    lm_config c = small(LM_GDN);
    lm_model *m = NULL;
    lm_model_create(&m, &c, ctx);
    lm_adamw o;
    lm_adamw_init(&o, m->n_params, 1e-3f, 1, 10);
    char good[400], bad[400];
    snprintf(good, sizeof good, "%s/mgood.ckpt", dir);
    snprintf(bad, sizeof bad, "%s/mbad.ckpt", dir);
    lm_checkpoint_save(good, m, &o, NULL);
    long n;
    unsigned char *orig = slurp(good, &n), *b = malloc((size_t)n);
    const long hdr = 200 + 64L * (long)(orig[192] | orig[193] << 8);
    la_rng rng;
    la_rng_seed(&rng, 2024);
    int ok = 1, loaded = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(b, orig, (size_t)n);
        long len = n;
        const int kind = (int)(la_rng_u64(&rng) % 4);
        if (kind == 3) { /* cut, fix the declared size, reseal */
            len = 16 + (long)(la_rng_u64(&rng) % (uint64_t)(n - 16));
            for (int i = 0; i < 8; i++) b[16 + i] = (unsigned char)((uint64_t)len >> (8 * i));
        } else {
            const int nb = 1 + (int)(la_rng_u64(&rng) % 4);
            for (int k = 0; k < nb; k++) {
                const long at = 8 + (long)(la_rng_u64(&rng) % (uint64_t)(hdr - 8));
                b[at] = kind == 0 ? (unsigned char)la_rng_u64(&rng) : kind == 1 ? 0xff : 0x00;
            }
        }
        if (len >= 8) reseal(b, len);
        spit(bad, b, len);
        lm_model *back = NULL;
        lm_adamw ob;
        memset(&ob, 0, sizeof ob);
        lm_train_state ts;
        la_status st = lm_checkpoint_load(bad, &back, ctx, &ob, &ts);
        if (st == LA_OK) {
            loaded++;
            ok &= back != NULL;
        } else {
            ok &= (st == LA_ERR_IO || st == LA_ERR_UNSUPPORTED) && back == NULL && ob.m1 == NULL &&
                  lm_error()[0] != 0;
        }
        lm_model_destroy(back);
        lm_adamw_free(&ob);
    }
    printf("  300 mutated checkpoints: %d loaded (harmless changes), the rest refused\n", loaded);
    CHECK(ok, "mutated checkpoints load or fail with LA_ERR_IO and a message, nothing returned");
    free(orig);
    free(b);
    unlink(bad);
    unlink(good);
    lm_adamw_free(&o);
    lm_model_destroy(m);
}

/* A child saves checkpoints in a loop (weights change each time); the parent
 * kills it with SIGKILL at varying moments; the file must always load and
 * hold one complete save. */
static void test_kill(la_ctx *ctx) {
    lm_config c = small(LM_DELTANET);
    c.d_model = 128, c.d_ff = 512, c.vocab = 256; /* ~2.5 MB files: saves take a while */
    lm_model *m = NULL;
    lm_model_create(&m, &c, ctx);
    char path[400];
    snprintf(path, sizeof path, "%s/kill.ckpt", dir);
    m->params[0] = -1.0f;
    CHECK(lm_checkpoint_save(path, m, NULL, NULL) == LA_OK, "first save");
    int all_ok = 1, mid_write = 0;
    for (int round = 0; round < 10; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (int i = 0;; i++) {
                m->params[0] = (float)i;
                for (int64_t j = 1; j < m->n_params; j++) m->params[j] = (float)i;
                lm_checkpoint_save(path, m, NULL, NULL);
            }
        }
        /* Wait until the child is inside a save (its temporary file exists),
         * then a little more (varying), then kill it. */
        char tmpname[500];
        snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", path, (long)pid);
        for (int w = 0; w < 200000 && access(tmpname, F_OK) != 0; w++) {
            struct timespec ts = {0, 50000L};
            nanosleep(&ts, NULL);
        }
        struct timespec ts = {0, 100000L * round};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        lm_model *back = NULL;
        la_status st = lm_checkpoint_load(path, &back, ctx, NULL, NULL);
        int ok = st == LA_OK;
        if (ok) { /* one complete save: every weight equal to params[0] or the first save */
            const float v = back->params[0];
            for (int64_t j = 1; j < back->n_params && ok; j++)
                ok = back->params[j] == v || (v == -1.0f);
        }
        all_ok &= ok;
        char ls[600];
        snprintf(ls, sizeof ls, "ls %s | grep -c tmp", dir);
        FILE *pp = popen(ls, "r");
        int tmps = 0;
        if (pp) {
            if (fscanf(pp, "%d", &tmps) != 1) tmps = 0;
            pclose(pp);
        }
        mid_write += tmps > 0;
        snprintf(ls, sizeof ls, "rm -f %s/kill.ckpt.tmp.*", dir);
        if (system(ls) != 0) all_ok = 0;
        if (!ok) printf("  round %d: %s\n", round, lm_error());
        lm_model_destroy(back);
    }
    CHECK(all_ok, "after kill -9 during saves the checkpoint always loads, whole");
    printf("  kill -9 landed during a write (temporary file left) in %d of 10 rounds\n", mid_write);
    CHECK(mid_write > 0, "at least one kill interrupted a save");
    /* The killed children may leave their temporary files; clean them up. */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -f %s/kill.ckpt %s/kill.ckpt.tmp.*", dir, dir);
    CHECK(system(cmd) == 0, "cleanup");
    lm_model_destroy(m);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/linattn_ckpt_test_%ld", (long)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
    if (system(cmd) != 0) return 1;
    la_ctx *ctx = th_ctx(2);
    for (int mix = 0; mix < LM_MIXER_COUNT; mix++)
        if (lm_mixer_available(mix)) test_resume(ctx, mix);
    test_corrupt(ctx);
    test_mutations(ctx);
    test_kill(ctx);
    la_ctx_destroy(ctx);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return th_summary("model_ckpt");
}
