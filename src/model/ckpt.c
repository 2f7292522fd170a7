/* Checkpoints: the binary format of docs/CHECKPOINT.md (version 1).
 * Saved atomically (temporary file in the same folder, fsync, rename, fsync
 * of the folder) and loaded only after every check has passed. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CK_MAGIC "LAMODEL\x1a"
#define CK_VERSION 1u
#define CK_FIXED 200u /* bytes before the tensor table */
#define CK_ENTRY 64u  /* bytes per tensor-table entry */
#define CK_ALIGN 64u

enum { KIND_PARAM = 0, KIND_ADAM_M = 1, KIND_ADAM_V = 2 };

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static void putf(unsigned char *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put32(p, u);
}
static float getf(const unsigned char *p) {
    uint32_t u = get32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static void putd(unsigned char *p, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    put64(p, u);
}
static double getd(const unsigned char *p) {
    uint64_t u = get64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}
static void put_floats(unsigned char *p, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) putf(p + 4 * i, x[i]);
}
static void get_floats(float *x, const unsigned char *p, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = getf(p + 4 * i);
}

static int64_t align_up(int64_t x) { return (x + CK_ALIGN - 1) / CK_ALIGN * CK_ALIGN; }

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Streams bytes to fd while hashing them. */
typedef struct sink {
    int fd, failed;
    uint64_t hash;
} sink;

static void sink_write(sink *k, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) k->hash = (k->hash ^ p[i]) * 0x100000001b3ull;
    if (!k->failed && write_all(k->fd, p, n)) k->failed = errno ? errno : EIO;
}

la_status lm_checkpoint_save(const char *path, const lm_model *m, const lm_adamw *opt,
                             const lm_train_state *ts) {
    if (!path || !m) return lm_fail(LA_ERR_NULL_POINTER, "checkpoint save: path or model NULL");
    if (opt && (opt->n != m->n_params || !opt->m1 || !opt->m2))
        return lm_fail(LA_ERR_SHAPE_MISMATCH, "checkpoint save: optimizer does not match model");
    const lm_config *c = &m->cfg;
    int n_nonzero = 0;
    for (int i = 0; i < m->n_tensors; i++) n_nonzero += m->table[i].size > 0;
    const int kinds = opt ? 3 : 1;
    const uint32_t n_entries = (uint32_t)(n_nonzero * kinds);
    const int64_t header = CK_FIXED + (int64_t)n_entries * CK_ENTRY;
    int64_t size = align_up(header);
    for (int i = 0; i < m->n_tensors; i++)
        if (m->table[i].size) size += (int64_t)kinds * align_up(4 * m->table[i].size);
    size += 8; /* checksum */
    unsigned char *hb = calloc((size_t)align_up(header), 1);
    unsigned char *chunk = malloc(1 << 16);
    if (!hb || !chunk) {
        free(hb);
        free(chunk);
        return lm_fail(LA_ERR_OUT_OF_MEMORY, "checkpoint save: out of memory");
    }
    unsigned char *buf = hb;
    memcpy(buf, CK_MAGIC, 8);
    put32(buf + 8, CK_VERSION);
    put32(buf + 12, (uint32_t)header);
    put64(buf + 16, (uint64_t)size);
    const int32_t cf[10] = {c->vocab, c->d_model, c->n_layers,    c->n_heads, c->head_dim,
                            c->d_ff,  c->mixer,   c->feature_map, c->conv,    c->performer_m};
    for (int i = 0; i < 10; i++) put32(buf + 24 + 4 * i, (uint32_t)cf[i]);
    put64(buf + 64, c->seed);
    putf(buf + 72, c->norm_eps);
    lm_train_state z;
    memset(&z, 0, sizeof z);
    if (!ts) ts = &z;
    put64(buf + 80, (uint64_t)ts->step);
    for (int i = 0; i < 4; i++) put64(buf + 88 + 8 * i, ts->data_rng.s[i]);
    putd(buf + 120, ts->data_rng.spare);
    put32(buf + 128, (uint32_t)ts->data_rng.has_spare);
    put32(buf + 132, opt ? 1u : 0u);
    if (opt) {
        const float h[7] = {opt->lr_max, opt->lr_min,       opt->beta1, opt->beta2,
                            opt->eps,    opt->weight_decay, opt->clip};
        for (int i = 0; i < 7; i++) putf(buf + 136 + 4 * i, h[i]);
        put64(buf + 168, (uint64_t)opt->warmup);
        put64(buf + 176, (uint64_t)opt->total_steps);
        put64(buf + 184, (uint64_t)opt->step);
    }
    put32(buf + 192, n_entries);
    int64_t off = align_up(header);
    unsigned char *e = buf + CK_FIXED;
    for (int k = 0; k < kinds; k++)
        for (int i = 0; i < m->n_tensors; i++) {
            const lm_tensor *t = &m->table[i];
            if (!t->size) continue;
            memcpy(e, t->name, 32);
            put64(e + 32, (uint64_t)t->size);
            put64(e + 40, (uint64_t)off);
            put32(e + 48, (uint32_t)k);
            off += align_up(4 * t->size);
            e += CK_ENTRY;
        }

    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        free(hb);
        free(chunk);
        return lm_fail(LA_ERR_IO, "checkpoint save: path '%s' too long", path);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        free(hb);
        free(chunk);
        return lm_fail(LA_ERR_IO, "checkpoint save: cannot create '%s': %s", tmp, strerror(errno));
    }
    sink k = {fd, 0, 0xcbf29ce484222325ull};
    sink_write(&k, hb, (size_t)align_up(header));
    const int64_t per = (1 << 16) / 4;
    for (int kind = 0; kind < kinds; kind++)
        for (int i = 0; i < m->n_tensors; i++) {
            const lm_tensor *t = &m->table[i];
            if (!t->size) continue;
            const float *src = (kind == 0 ? m->params : kind == 1 ? opt->m1 : opt->m2) + t->offset;
            for (int64_t j = 0; j < t->size; j += per) {
                const int64_t n = t->size - j < per ? t->size - j : per;
                put_floats(chunk, src + j, n);
                sink_write(&k, chunk, (size_t)(4 * n));
            }
            const int64_t pad = align_up(4 * t->size) - 4 * t->size;
            memset(chunk, 0, (size_t)pad);
            sink_write(&k, chunk, (size_t)pad);
        }
    unsigned char tail[8];
    put64(tail, k.hash);
    sink_write(&k, tail, 8);
    free(hb);
    free(chunk);
    int err = k.failed;
    if (!err && fsync(fd) != 0) err = errno;
    if (close(fd) != 0 && !err) err = errno;
    if (!err && rename(tmp, path) != 0) err = errno;
    if (err) {
        unlink(tmp);
        return lm_fail(LA_ERR_IO, "checkpoint save: writing '%s' failed: %s", path, strerror(err));
    }
    /* Make the rename itself durable. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return LA_OK;
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        st = lm_fail(LA_ERR_IO, __VA_ARGS__);                                                      \
        goto done;                                                                                 \
    } while (0)

la_status lm_checkpoint_load(const char *path, lm_model **out, la_ctx *ctx, lm_adamw *opt,
                             lm_train_state *ts) {
    if (!path || !out || !ctx)
        return lm_fail(LA_ERR_NULL_POINTER, "checkpoint load: NULL argument");
    la_status st = LA_OK;
    int has_opt = 0;
    unsigned char *buf = NULL;
    lm_model *m = NULL;
    lm_adamw o;
    memset(&o, 0, sizeof o);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return lm_fail(LA_ERR_IO, "checkpoint '%s': cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lm_fail(LA_ERR_IO, "checkpoint '%s': not a regular file", path);
    }
    const int64_t fsize = (int64_t)sb.st_size;
    if (fsize < (int64_t)CK_FIXED + 8) {
        close(fd);
        return lm_fail(LA_ERR_IO, "checkpoint '%s': %ld bytes is shorter than the %u-byte header",
                       path, (long)fsize, CK_FIXED + 8);
    }
    buf = malloc((size_t)fsize); /* never more than the file's real size */
    if (!buf) {
        close(fd);
        return lm_fail(LA_ERR_OUT_OF_MEMORY, "checkpoint '%s': %ld bytes", path, (long)fsize);
    }
    int64_t got = 0;
    while (got < fsize) {
        ssize_t r = read(fd, buf + got, (size_t)(fsize - got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += r;
    }
    close(fd);
    if (got != fsize) BAD("checkpoint '%s': read %ld of %ld bytes", path, (long)got, (long)fsize);
    if (memcmp(buf, CK_MAGIC, 8) != 0)
        BAD("checkpoint '%s': wrong magic (not a linattn model checkpoint)", path);
    const uint32_t version = get32(buf + 8);
    if (version != CK_VERSION)
        BAD("checkpoint '%s': version %u, this build reads version %u", path, version, CK_VERSION);
    const uint64_t declared = get64(buf + 16);
    if (declared != (uint64_t)fsize)
        BAD("checkpoint '%s': header says %llu bytes, the file has %ld (truncated or extended)",
            path, (unsigned long long)declared, (long)fsize);
    const uint64_t sum = get64(buf + fsize - 8);
    if (sum != fnv1a(buf, (size_t)fsize - 8))
        BAD("checkpoint '%s': checksum mismatch (file corrupted)", path);
    const uint32_t header = get32(buf + 12), n_entries = get32(buf + 192);
    if ((uint64_t)n_entries > (uint64_t)fsize / CK_ENTRY ||
        header != CK_FIXED + (uint64_t)n_entries * CK_ENTRY || header > (uint64_t)fsize - 8)
        BAD("checkpoint '%s': tensor table of %u entries (%u bytes) does not fit the file", path,
            n_entries, header);
    lm_config c;
    memset(&c, 0, sizeof c);
    int32_t cf[10];
    for (int i = 0; i < 10; i++) cf[i] = (int32_t)get32(buf + 24 + 4 * i);
    c.vocab = cf[0], c.d_model = cf[1], c.n_layers = cf[2], c.n_heads = cf[3];
    c.head_dim = cf[4], c.d_ff = cf[5], c.mixer = cf[6], c.feature_map = cf[7], c.conv = cf[8];
    c.performer_m = cf[9];
    c.seed = get64(buf + 64);
    c.norm_eps = getf(buf + 72);
    if (lm_config_validate(&c) != LA_OK) BAD("checkpoint '%s': bad config: %s", path, lm_error());
    has_opt = (int)(get32(buf + 132) & 1u);
    /* Sizes the config implies must fit in the file before anything is made. */
    const int64_t want = lm_config_n_params(&c);
    if (want < 1 || want > fsize / 4 / (has_opt ? 3 : 1))
        BAD("checkpoint '%s': config implies %ld parameters, more than the file holds", path,
            (long)want);
    if ((st = lm_model_create(&m, &c, ctx)) != LA_OK) {
        st = lm_fail(st == LA_ERR_UNSUPPORTED ? LA_ERR_UNSUPPORTED : LA_ERR_IO,
                     "checkpoint '%s': %s", path, lm_error());
        goto done;
    }
    int n_nonzero = 0;
    for (int i = 0; i < m->n_tensors; i++) n_nonzero += m->table[i].size > 0;
    if ((int64_t)n_entries != (int64_t)n_nonzero * (has_opt ? 3 : 1))
        BAD("checkpoint '%s': %u tensors, the config needs %d", path, n_entries,
            n_nonzero * (has_opt ? 3 : 1));
    if (opt && has_opt) {
        float h[7];
        for (int i = 0; i < 7; i++) h[i] = getf(buf + 136 + 4 * i);
        const int64_t warm = (int64_t)get64(buf + 168), total = (int64_t)get64(buf + 176);
        const int64_t ostep = (int64_t)get64(buf + 184);
        if (!(h[0] > 0.0f && h[0] < 1e3f) || !(h[1] >= 0.0f && h[1] <= h[0]) ||
            !(h[2] >= 0.0f && h[2] < 1.0f) || !(h[3] >= 0.0f && h[3] < 1.0f) ||
            !(h[4] > 0.0f && h[4] < 1.0f) || !(h[5] >= 0.0f && h[5] < 1e3f) ||
            !(h[6] >= 0.0f && h[6] < 1e30f) || warm < 0 || total < 1 || ostep < 0)
            BAD("checkpoint '%s': bad optimizer settings (lr %g, lr_min %g, betas %g %g, eps %g, "
                "weight decay %g, clip %g, warmup %ld, steps %ld, step %ld)",
                path, (double)h[0], (double)h[1], (double)h[2], (double)h[3], (double)h[4],
                (double)h[5], (double)h[6], (long)warm, (long)total, (long)ostep);
        if ((st = lm_adamw_init(&o, m->n_params, h[0], warm, total)) != LA_OK) goto done;
        o.lr_min = h[1], o.beta1 = h[2], o.beta2 = h[3], o.eps = h[4], o.weight_decay = h[5];
        o.clip = h[6];
        o.step = ostep;
    }
    const unsigned char *e = buf + CK_FIXED;
    int64_t prev_end = header;
    for (int k = 0; k < (has_opt ? 3 : 1); k++)
        for (int i = 0; i < m->n_tensors; i++) {
            const lm_tensor *t = &m->table[i];
            if (!t->size) continue;
            char name[33];
            memcpy(name, e, 32);
            name[32] = 0;
            const uint64_t n = get64(e + 32), off = get64(e + 40);
            const uint32_t kind = get32(e + 48);
            if (get32(e + 52) || get64(e + 56))
                BAD("checkpoint '%s': tensor entry %d has nonzero reserved bytes", path, i);
            if (strncmp(name, t->name, 32) != 0 || n != (uint64_t)t->size || kind != (uint32_t)k)
                BAD("checkpoint '%s': tensor entry '%.32s' (%llu floats, kind %u) where the config "
                    "has '%s' (%ld floats, kind %d)",
                    path, name, (unsigned long long)n, kind, t->name, (long)t->size, k);
            if (off < (uint64_t)prev_end || off > (uint64_t)fsize - 8 ||
                n > ((uint64_t)fsize - 8 - off) / 4)
                BAD("checkpoint '%s': tensor '%s' at offset %llu overlaps or runs past the data",
                    path, t->name, (unsigned long long)off);
            prev_end = (int64_t)(off + 4 * n);
            float *dst = k == 0 ? m->params : k == 1 ? o.m1 : o.m2;
            if (dst) get_floats(dst + t->offset, buf + off, t->size);
            e += CK_ENTRY;
        }
    if ((int64_t)get64(buf + 80) < 0 || get32(buf + 128) > 1u || (get32(buf + 132) & ~1u) ||
        get32(buf + 76) || get32(buf + 164) || get32(buf + 196))
        BAD("checkpoint '%s': bad training state or nonzero reserved fields", path);
    for (int64_t i = 0; i < m->n_params; i++)
        if (!(m->params[i] == m->params[i]) || m->params[i] - m->params[i] != 0.0f)
            BAD("checkpoint '%s': parameter %ld is not finite", path, (long)i);
    if (ts) {
        memset(ts, 0, sizeof *ts);
        ts->step = (int64_t)get64(buf + 80);
        for (int i = 0; i < 4; i++) ts->data_rng.s[i] = get64(buf + 88 + 8 * i);
        ts->data_rng.spare = getd(buf + 120);
        ts->data_rng.has_spare = (int)get32(buf + 128);
        ts->has_opt = has_opt;
    }
done:
    free(buf);
    if (st) {
        lm_model_destroy(m);
        lm_adamw_free(&o);
        return st;
    }
    if (opt) {
        if (has_opt)
            *opt = o;
        else
            memset(opt, 0, sizeof *opt);
    }
    *out = m;
    return LA_OK;
}
