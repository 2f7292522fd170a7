/* Forward drivers of the delta rules: one task per (sequence, value head).
 * The recurrent form runs la__delta_token token by token (the decoder's
 * arithmetic); the chunk form gathers a chunk into contiguous rows
 * (normalising q and k once) and runs la__delta_chunk_step. */
#include "delta_rule.h"

#include <string.h>

/* Chunk length actually used: the option, capped at the longest sequence
 * (a chunk longer than the sequence is the whole sequence anyway). */
int64_t la__delta_chunk_len(const la__delta_args *a) {
    const int64_t m = la__max_seq_len(&a->dims);
    return a->chunk < m ? a->chunk : m;
}

/* The scratch of one task: S, the step's work, and for the chunk form one
 * chunk of normalised q, k and of v, g, beta plus the chunk step's work. */
typedef struct {
    float *S, *work, *qc, *kc, *vc, *gc, *bc, *cw;
} fwd_scratch;

/* Carves (or, base == NULL, sizes) the scratch; returns its bytes (0 when a
 * size overflows). */
static size_t fwd_layout(const la__delta_args *a, void *base, fwd_scratch *s) {
    la__arena ar = {(char *)base, 0, 0};
    const size_t K = (size_t)a->K, V = (size_t)a->V;
    memset(s, 0, sizeof *s);
    s->S = la__arena_floats(&ar, K * V);
    s->work = la__arena_floats(&ar, LA__STEP_WORK_FLOATS(K, V));
    if (a->form == LA_FORM_CHUNK) {
        const size_t C = (size_t)la__delta_chunk_len(a);
        s->qc = la__arena_floats(&ar, C * K);
        s->kc = la__arena_floats(&ar, C * K);
        s->vc = la__arena_floats(&ar, C * V);
        s->gc = la__arena_floats(&ar, C);
        s->bc = la__arena_floats(&ar, C);
        s->cw = la__arena_floats(&ar, la__delta_chunk_work_floats((int64_t)C, a->K, a->V));
    }
    return la__arena_size(&ar);
}

size_t la__delta_forward_scratch(const la__delta_args *a) {
    /* Absurd sizes (a chunk of 2^30 tokens) would overflow size_t below:
     * ask for SIZE_MAX instead, which la__scratch_reserve reports as OOM. */
    const double C2 = (double)la__delta_chunk_len(a), KVd = (double)a->K * (double)a->V;
    if ((4 * C2 * C2 + 4 * KVd + 8 * C2 * (double)(a->K + a->V)) * 4 > 0x1p62) return SIZE_MAX;
    fwd_scratch s;
    const size_t bytes = fwd_layout(a, NULL, &s);
    return bytes ? bytes : SIZE_MAX;
}

static void load_state(const la__delta_args *a, float *S, int64_t n, int64_t hv) {
    const size_t KV = (size_t)a->K * (size_t)a->V;
    if (a->initial_state)
        memcpy(S, a->initial_state + (size_t)(n * a->HV + hv) * KV, KV * sizeof(float));
    else
        memset(S, 0, KV * sizeof(float));
}

static void forward_task(void *p, int64_t task, int tid) {
    const la__delta_args *a = p;
    const int64_t K = a->K, V = a->V, H = a->H, HV = a->HV, group = HV / H;
    const int64_t n = task / HV, hv = task % HV, hq = hv / group;
    const size_t KV = (size_t)K * (size_t)V;
    int64_t start, len;
    la__seq_bounds(&a->dims, n, &start, &len);
    fwd_scratch sc;
    fwd_layout(a, la__scratch(a->ctx, tid), &sc);
    float *S = sc.S, *work = sc.work;
    load_state(a, S, n, hv);

    if (a->form == LA_FORM_RECURRENT) {
        for (int64_t t = start; t < start + len; t++) {
            const size_t vh = (size_t)(t * HV + hv), qh = (size_t)(t * H + hq);
            la__delta_token(K, V, a->l2norm, a->scale, S, a->o + vh * (size_t)V,
                            a->q + qh * (size_t)K, a->k + qh * (size_t)K,
                            a->v + vh * (size_t)V, a->g ? a->g + vh : NULL, a->beta[vh], work);
        }
    } else {
        const int64_t C = la__delta_chunk_len(a);
        float *qc = sc.qc, *kc = sc.kc, *vc = sc.vc, *gc = sc.gc, *bc = sc.bc, *cw = sc.cw;
        for (int64_t t0 = 0; t0 < len; t0 += C) {
            const int64_t L = len - t0 < C ? len - t0 : C;
            for (int64_t t = 0; t < L; t++) {
                const int64_t tok = start + t0 + t;
                const size_t vh = (size_t)(tok * HV + hv), qh = (size_t)(tok * H + hq);
                if (a->l2norm) {
                    la__delta_l2norm(qc + t * K, a->q + qh * (size_t)K, K);
                    la__delta_l2norm(kc + t * K, a->k + qh * (size_t)K, K);
                } else {
                    memcpy(qc + t * K, a->q + qh * (size_t)K, (size_t)K * sizeof(float));
                    memcpy(kc + t * K, a->k + qh * (size_t)K, (size_t)K * sizeof(float));
                }
                memcpy(vc + t * V, a->v + vh * (size_t)V, (size_t)V * sizeof(float));
                gc[t] = a->g ? a->g[vh] : 0.0f;
                bc[t] = a->beta[vh];
            }
            la__delta_chunk_in in = {L, K, V, qc, kc, vc, a->g ? gc : NULL, bc, a->scale, a->kr};
            la__delta_chunk_step(&in, S, a->o + (size_t)((start + t0) * HV + hv) * (size_t)V,
                                 HV * V, cw);
        }
    }
    if (a->final_state)
        memcpy(a->final_state + (size_t)(n * HV + hv) * KV, S, KV * sizeof(float));
}

void la__delta_forward(const la__delta_args *a) {
    la__parallel_for(a->ctx, a->N * a->HV, forward_task, (void *)a);
}
