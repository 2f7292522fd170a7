/* Synthetic tasks and byte-level text, as batches of tokens and targets.
 *
 * MQAR (multi-query associative recall, Zoology): tokens 0 pad, keys
 *   1..n_keys, values n_keys+1..2 n_keys. The sequence starts with `pairs`
 *   key-value pairs (distinct keys, random values), then queries: keys of
 *   those pairs in random order (cycled) each followed by its value; the
 *   target at every query key is its value. Nothing else is scored.
 * Selective copying: 0 blank, 1 separator, data 2..copy_vocab+1. n data
 *   tokens at random positions among T - n blanks, then the separator, then
 *   the data again (teacher forced): the targets are the data in order.
 * ListOps (Long Range Arena): [MAX a b ...], [MIN ...], [MED ...] (lower
 *   median), [SM ...] (sum mod 10) nested up to listops_depth, digits
 *   0..9; then '=' whose target is the value. Tokens: 0 pad, 1..10 digits,
 *   11..14 MAX MIN MED SM, 15 ']', 16 '='.
 * Bytes: windows of the text; the held-out split is the last part of it. */
#include "internal.h"

#include <string.h>

static const char *const TASK_NAMES[4] = {"mqar", "copy", "listops", "bytes"};

const char *lm_task_name(int task) { return task >= 0 && task < 4 ? TASK_NAMES[task] : NULL; }
int lm_task_from_name(const char *name) {
    for (int i = 0; name && i < 4; i++)
        if (!strcmp(name, TASK_NAMES[i])) return i;
    return -1;
}

int lm_task_vocab(const lm_task_cfg *t) {
    switch (t->task) {
    case LM_TASK_MQAR: return 2 * t->n_keys + 1;
    case LM_TASK_COPY: return t->copy_vocab + 2;
    case LM_TASK_LISTOPS: return 17;
    case LM_TASK_BYTES: return 256;
    default: return 0;
    }
}

static uint64_t below(la_rng *r, uint64_t n) { return la_rng_u64(r) % n; }

static void mqar_row(const lm_task_cfg *t, la_rng *r, int64_t T, int32_t *tok, int32_t *tgt) {
    const int P = t->pairs, NK = t->n_keys;
    int keys[4096], vals[4096], order[4096];
    /* distinct keys: partial Fisher-Yates over 1..NK */
    int pool[8192];
    for (int i = 0; i < NK; i++) pool[i] = i + 1;
    for (int i = 0; i < P; i++) {
        int j = i + (int)below(r, (uint64_t)(NK - i));
        int tmp = pool[i];
        pool[i] = pool[j];
        pool[j] = tmp;
        keys[i] = pool[i];
        vals[i] = NK + 1 + (int)below(r, (uint64_t)NK);
    }
    for (int64_t i = 0; i < T; i++) tok[i] = 0, tgt[i] = -1;
    int64_t pos = 0;
    for (int i = 0; i < P; i++) tok[pos++] = keys[i], tok[pos++] = vals[i];
    int n_order = 0;
    while (pos + 1 < T) {
        if (n_order == 0) { /* a fresh permutation of the pairs */
            for (int i = 0; i < P; i++) order[i] = i;
            for (int i = P - 1; i > 0; i--) {
                int j = (int)below(r, (uint64_t)(i + 1));
                int tmp = order[i];
                order[i] = order[j];
                order[j] = tmp;
            }
            n_order = P;
        }
        const int q = order[--n_order];
        tok[pos] = keys[q];
        tgt[pos] = vals[q];
        tok[pos + 1] = vals[q];
        pos += 2;
    }
}

static void copy_row(const lm_task_cfg *t, la_rng *r, int64_t T, int32_t *tok, int32_t *tgt) {
    const int64_t n = t->copy_tokens, R = T - n;
    int32_t data[4096];
    for (int64_t i = 0; i < T; i++) tok[i] = 0, tgt[i] = -1;
    /* choose n of the R region positions (selection sampling keeps order) */
    int64_t chosen = 0;
    for (int64_t i = 0; i < R && chosen < n; i++) {
        if (below(r, (uint64_t)(R - i)) < (uint64_t)(n - chosen)) {
            data[chosen] = 2 + (int32_t)below(r, (uint64_t)t->copy_vocab);
            tok[i] = data[chosen++];
        }
    }
    tok[R] = 1;
    for (int64_t i = 0; i < n; i++) {
        tgt[R + i] = data[i];
        if (i + 1 < n) tok[R + 1 + i] = data[i];
    }
}

/* Writes an expression of at most `budget` tokens at tok[*pos]; returns its value. */
static int listops_expr(la_rng *r, int depth, int64_t budget, int32_t *tok, int64_t *pos) {
    if (depth <= 0 || budget < 5 || below(r, 4) == 0) {
        int d = (int)below(r, 10);
        tok[(*pos)++] = 1 + d;
        return d;
    }
    const int op = (int)below(r, 4);
    int n_args = 2 + (int)below(r, 4);
    if (n_args > budget - 2) n_args = (int)(budget - 2);
    tok[(*pos)++] = 11 + op;
    int vals[8];
    int64_t left = budget - 2 - n_args; /* each argument has at least one token */
    for (int i = 0; i < n_args; i++) {
        const int64_t extra = left / (n_args - i);
        const int64_t start = *pos;
        vals[i] = listops_expr(r, depth - 1, 1 + extra, tok, pos);
        left -= (*pos - start) - 1;
    }
    tok[(*pos)++] = 15;
    int v = vals[0];
    if (op == 0)
        for (int i = 1; i < n_args; i++) v = vals[i] > v ? vals[i] : v;
    else if (op == 1)
        for (int i = 1; i < n_args; i++) v = vals[i] < v ? vals[i] : v;
    else if (op == 2) {
        for (int i = 1; i < n_args; i++) /* insertion sort, then the lower median */
            for (int j = i; j > 0 && vals[j] < vals[j - 1]; j--) {
                int tmp = vals[j];
                vals[j] = vals[j - 1];
                vals[j - 1] = tmp;
            }
        v = vals[(n_args - 1) / 2];
    } else {
        v = 0;
        for (int i = 0; i < n_args; i++) v = (v + vals[i]) % 10;
    }
    return v;
}

static void listops_row(const lm_task_cfg *t, la_rng *r, int64_t T, int32_t *tok, int32_t *tgt) {
    for (int64_t i = 0; i < T; i++) tok[i] = 0, tgt[i] = -1;
    int64_t pos = 0;
    const int v = listops_expr(r, t->listops_depth, T - 1, tok, &pos);
    tok[pos] = 16;
    tgt[pos] = 1 + v;
}

la_status lm_task_batch(const lm_task_cfg *t, la_rng *rng, int heldout, int64_t B, int32_t *tokens,
                        int32_t *targets) {
    if (!t || !rng || !tokens || !targets)
        return lm_fail(LA_ERR_NULL_POINTER, "lm_task_batch: NULL argument");
    const int64_t T = t->T;
    switch (t->task) {
    case LM_TASK_MQAR:
        if (t->pairs < 1 || t->pairs > 4096 || t->n_keys < t->pairs || t->n_keys > 8192 ||
            T < 2 * (int64_t)t->pairs + 2)
            return lm_fail(LA_ERR_INVALID_ARGUMENT,
                           "mqar: pairs = %d, keys = %d, T = %ld (need pairs <= keys <= 8192, "
                           "T >= 2 pairs + 2)",
                           t->pairs, t->n_keys, (long)T);
        for (int64_t b = 0; b < B; b++) mqar_row(t, rng, T, tokens + b * T, targets + b * T);
        return LA_OK;
    case LM_TASK_COPY:
        if (t->copy_tokens < 1 || t->copy_tokens > 4096 || t->copy_vocab < 1 ||
            T < 2 * (int64_t)t->copy_tokens + 1)
            return lm_fail(LA_ERR_INVALID_ARGUMENT, "copy: tokens = %d, T = %ld (T >= 2 n + 1)",
                           t->copy_tokens, (long)T);
        for (int64_t b = 0; b < B; b++) copy_row(t, rng, T, tokens + b * T, targets + b * T);
        return LA_OK;
    case LM_TASK_LISTOPS:
        if (T < 4 || t->listops_depth < 0)
            return lm_fail(LA_ERR_INVALID_ARGUMENT, "listops: T = %ld must be >= 4", (long)T);
        for (int64_t b = 0; b < B; b++) listops_row(t, rng, T, tokens + b * T, targets + b * T);
        return LA_OK;
    case LM_TASK_BYTES: {
        const int64_t lo = heldout ? t->text_split : 0, hi = heldout ? t->text_len : t->text_split;
        if (!t->text || hi - lo < T + 1)
            return lm_fail(LA_ERR_INVALID_ARGUMENT,
                           "bytes: the %s split has %ld bytes, fewer than T + 1 = %ld",
                           heldout ? "held-out" : "training", (long)(hi - lo), (long)T + 1);
        for (int64_t b = 0; b < B; b++) {
            const int64_t o = lo + (int64_t)below(rng, (uint64_t)(hi - lo - T));
            for (int64_t i = 0; i < T; i++) {
                tokens[b * T + i] = t->text[o + i];
                targets[b * T + i] = t->text[o + i + 1];
            }
        }
        return LA_OK;
    }
    default: return lm_fail(LA_ERR_INVALID_ARGUMENT, "task %d unknown", t->task);
    }
}
