/* The tasks of a KDA call.
 *
 * Forward: one task per (sequence, value head) for the recurrent form, which
 * runs la__kda_token token by token; per (sequence, group of value heads)
 * for the chunk form, which gathers a chunk's rows of each head of the group
 * in turn into contiguous scratch (normalising q and k once) and runs
 * la__kda_chunk_step (fwd_group).
 *
 * Backward: one task per (sequence, group of q/k heads; bwd_group), looping
 * over the value heads of each q/k head in order, so dq and dk (summed over the group) never depend
 * on the thread count. For each value head the states at segment starts
 * (checkpoints) are recomputed forward, then segments are visited last to
 * first carrying G = dL/dS back: segments are the chunks (chunk form: the
 * chunkwise backward of chunk.c) or 64 tokens (recurrent form: token states
 * recomputed from the checkpoint, then la__kda_token_backward). Memory per
 * thread: T/seg checkpoints of K V floats (+ seg+1 token states for the
 * recurrent form) plus O(T K), never T K V.
 *
 * la_saved (cpu-kdasaved19, chunk form): the forward stores each chunk's
 * start state and products (la__kda_chunk_keep's M, U, W, R, and P) into
 * the object's slots, made by the same code on the same inputs as the
 * backward's checkpoint sweep; a backward given them skips that sweep (and
 * its checkpoint scratch) and its chunks' P products, and gathers q, k and
 * scatters dq, dk chunk by chunk (group_backward_saved): the same bits, one
 * forward less. */
#include "kda.h"

#include <string.h>

#include "../../kernels/stream.h"

#define RECURRENT_SEGMENT 64

/* Rows of one head are H*K floats apart (a page each at H*K = 1024): the
 * gathers and scatters prefetch the row AHEAD tokens on (delta_rule.h). */
#define AHEAD LA__DELTA_AHEAD

/* Forward scratch of one task: the state, the token work (recurrent) or one
 * chunk's contiguous rows and the chunk work (chunk form). */
typedef struct {
    float *S;                    /* [K,V] */
    float *qn, *kn;              /* [K] normalised q, k (recurrent) */
    float *q, *k, *v, *g, *beta; /* chunk rows [C,K], [C,K], [C,V], [C,K], [C] */
    float *work;                 /* token or chunk work */
} fwd_scratch;

/* cpu-fwd5: the chunk forward's task is (sequence, group of up to
 * FWD_GROUP value heads), each chunk run head after head of the group: a
 * token's rows of the group share pages (a page per token at HV*K = 1024),
 * walked for the group at once instead of once per head over the whole
 * sequence. Each head's arithmetic is that of a one-head task, so the group
 * (which depends on the thread count: at least about one task per thread)
 * changes no bit. */
#define FWD_GROUP 4

static int64_t fwd_group(const la__kda_args *a) {
    if (a->form != LA_FORM_CHUNK) return 1;
    const int64_t th = la_ctx_threads(a->ctx), per = a->N * a->HV / (th > 0 ? th : 1);
    return per >= FWD_GROUP ? FWD_GROUP : per > 1 ? per : 1;
}

static size_t fwd_layout(const la__kda_args *a, void *base, fwd_scratch *s) {
    const size_t K = (size_t)a->K, V = (size_t)a->V, C = (size_t)a->chunk;
    la__arena ar = {(char *)base, 0, 0};
    s->S = la__arena_floats(&ar, K * V * (size_t)fwd_group(a));
    if (a->form == LA_FORM_RECURRENT) {
        s->qn = la__arena_floats(&ar, K);
        s->kn = la__arena_floats(&ar, K);
        s->work = la__arena_floats(&ar, LA__KDA_TOKEN_WORK(a->K, a->V));
    } else {
        s->q = la__arena_floats(&ar, C * K);
        s->k = la__arena_floats(&ar, C * K);
        s->v = la__arena_floats(&ar, C * V);
        s->g = la__arena_floats(&ar, C * K);
        s->beta = la__arena_floats(&ar, C);
        s->work = la__arena_floats(&ar, la__kda_chunk_work_floats(a->chunk, a->K, a->V));
    }
    return la__arena_size(&ar);
}

size_t la__kda_forward_scratch(const la__kda_args *a) {
    const double C = (double)a->chunk, K = (double)a->K, V = (double)a->V;
    if (((1 + FWD_GROUP) * K * V + 12 * C * C + 40 * C * (K + V)) * 4 > 0x1p62) return SIZE_MAX;
    fwd_scratch s = {0};
    const size_t n = fwd_layout(a, NULL, &s);
    return n ? n : SIZE_MAX;
}

/* ---- la_saved slots (kda.h) --------------------------------------------- */

static size_t up16(size_t n) { return (n + 15) / 16 * 16; }

size_t la__kda_saved_slot_floats(const la__kda_args *a) {
    return up16((size_t)a->K * (size_t)a->V) + la__kda_chunk_saved_floats(a->chunk, a->K, a->V);
}

size_t la__kda_saved_layout(const la__kda_args *a, const void *base, int64_t **cbase,
                            float **slots) {
    const size_t unit = la__kda_saved_slot_floats(a);
    if ((double)unit * (double)a->HV > 0x1p60) return 0;
    return la__saved_states_layout(&a->dims, a->chunk, a->HV, unit, base, cbase, slots, NULL);
}

/* Offset (floats) of the slot of chunk c of value head hv of sequence n. */
static size_t saved_slot(const la__kda_args *a, int64_t n, int64_t hv, int64_t c) {
    const int64_t c0 = a->sv_cbase[n], nc = a->sv_cbase[n + 1] - c0;
    return (size_t)(c0 * a->HV + hv * nc + c) * la__kda_saved_slot_floats(a);
}

static void load_state(const float *init, float *S, size_t KV, size_t slot) {
    if (init)
        memcpy(S, init + slot * KV, KV * sizeof(float));
    else
        memset(S, 0, KV * sizeof(float));
}

static void forward_task(void *p, int64_t task, int tid) {
    const la__kda_args *a = p;
    const int64_t K = a->K, V = a->V, H = a->H, HV = a->HV, group = HV / H;
    const int64_t G = fwd_group(a), ng = (HV + G - 1) / G;
    const int64_t n = task / ng, hv0 = task % ng * G, nh = HV - hv0 < G ? HV - hv0 : G;
    const size_t KV = (size_t)K * (size_t)V;
    int64_t start, len;
    la__seq_bounds(&a->dims, n, &start, &len);
    fwd_scratch w = {0};
    fwd_layout(a, la__scratch(a->ctx, tid), &w);
    for (int64_t i = 0; i < nh; i++)
        load_state(a->initial_state, w.S + (size_t)i * KV, KV, (size_t)(n * HV + hv0 + i));

    if (a->form == LA_FORM_RECURRENT) { /* G = 1 */
        const int64_t hv = hv0, hq = hv / group;
        float *S = w.S;
        for (int64_t t = start; t < start + len; t++) {
            const size_t vh = (size_t)(t * HV + hv), qh = (size_t)(t * H + hq);
            const float *q = a->q + qh * (size_t)K, *k = a->k + qh * (size_t)K;
            if (a->l2norm) {
                la__delta_l2norm(w.qn, q, K);
                la__delta_l2norm(w.kn, k, K);
                q = w.qn;
                k = w.kn;
            }
            la__kda_token(K, V, a->scale, S, a->o + vh * (size_t)V, q, k, a->v + vh * (size_t)V,
                          a->g + vh * (size_t)K, a->beta[vh], w.work);
        }
    } else {
        const int64_t C = a->chunk;
        for (int64_t t0 = 0; t0 < len; t0 += C) {
            const int64_t L = len - t0 < C ? len - t0 : C;
            for (int64_t i = 0; i < nh; i++) {
                const int64_t hv = hv0 + i, hq = hv / group;
                for (int64_t t = 0; t < L; t++) {
                    const int64_t tok = start + t0 + t;
                    const size_t vh = (size_t)(tok * HV + hv), qh = (size_t)(tok * H + hq);
                    if (t0 + t + AHEAD < len) {
                        const size_t va = vh + (size_t)(AHEAD * HV), qa = qh + (size_t)(AHEAD * H);
                        la__delta_prefetch(a->q + qa * (size_t)K, K, 0);
                        la__delta_prefetch(a->k + qa * (size_t)K, K, 0);
                        la__delta_prefetch(a->v + va * (size_t)V, V, 0);
                        la__delta_prefetch(a->g + va * (size_t)K, K, 0);
                    }
                    if (a->l2norm) {
                        la__delta_l2norm(w.q + t * K, a->q + qh * (size_t)K, K);
                        la__delta_l2norm(w.k + t * K, a->k + qh * (size_t)K, K);
                    } else {
                        memcpy(w.q + t * K, a->q + qh * (size_t)K, (size_t)K * sizeof(float));
                        memcpy(w.k + t * K, a->k + qh * (size_t)K, (size_t)K * sizeof(float));
                    }
                    memcpy(w.v + t * V, a->v + vh * (size_t)V, (size_t)V * sizeof(float));
                    memcpy(w.g + t * K, a->g + vh * (size_t)K, (size_t)K * sizeof(float));
                    w.beta[t] = a->beta[vh];
                }
                la__kda_chunk_in in = {L,      K,        V,     w.q,  w.k, w.v,
                                       w.g,    w.beta,   a->scale, a->kr, NULL, 0};
                float *S = w.S + (size_t)i * KV, *keep = NULL;
                if (a->save) { /* the chunk's start state, then its products */
                    float *slot = a->save + saved_slot(a, n, hv, t0 / C);
                    memcpy(slot, S, KV * sizeof(float));
                    keep = slot + up16(KV);
                }
                la__kda_chunk_step(&in, S, a->o + (size_t)((start + t0) * HV + hv) * (size_t)V,
                                   HV * V, keep, w.work);
            }
        }
    }
    if (a->final_state)
        for (int64_t i = 0; i < nh; i++)
            memcpy(a->final_state + (size_t)(n * HV + hv0 + i) * KV, w.S + (size_t)i * KV,
                   KV * sizeof(float));
}

void la__kda_forward(const la__kda_args *a) {
    const int64_t G = fwd_group(a);
    la__parallel_for(a->ctx, a->N * ((a->HV + G - 1) / G), forward_task, (void *)a);
}

/* ---- backward --------------------------------------------------------- */

typedef struct {
    float *qn, *kn;              /* [len,K] normalised (or copied) q, k of the q/k head
                                    (per head of the task's group; la_saved: [C,K], a chunk) */
    float *rq, *rk;              /* [len] their rstd */
    float *dqn, *dkn;            /* [len,K] gradients w.r.t. qn, kn, summed over the group */
    float *ckpt;                 /* [nseg,K,V] states at segment starts (none with la_saved) */
    float *keep;                 /* chunk: [nseg - 1] chunk products kept (la__kda_chunk_keep;
                                    none with la_saved) */
    float *states;               /* recurrent: [seg+1,K,V] token states of one segment */
    float *G;                    /* [K,V] the carried dL/dS (la_saved: one per value head of
                                    the task's group) */
    float *v, *g, *beta;         /* one segment's rows [seg,V], [seg,K], [seg] */
    float *dO, *dv, *dg, *dbeta; /* chunk: [seg,V] scale*d_o, [seg,V], [seg,K], [seg] */
    float *work;                 /* token / chunk work */
} bwd_scratch;

/* cpu-fwd5: the backward's task is (sequence, group of up to BWD_GROUP q/k
 * heads): the group's q/k rows are gathered (and normalised) in one pass
 * over the tokens and dq/dk scattered through the L2 norm in one pass (a
 * token's rows of the group adjacent), as the delta rules' bwd_group; between,
 * each q/k head runs its value heads alone, as a one-head task did. G =
 * min(4, N H / (2 threads), H), fewer while the group's q/k arrays (4 len K
 * + 2 len floats per head) would pass 64 MiB; each row's arithmetic is that
 * of the one-head gather and scatter, so G changes no bit. */
#define BWD_GROUP 4
#define BWD_GROUP_BYTES ((double)(64 << 20))

static int64_t bwd_group(const la__kda_args *a) {
    const int64_t thr = la_ctx_threads(a->ctx);
    const double per_head = (4.0 * (double)a->K + 2.0) * (double)a->longest * sizeof(float);
    int64_t G = a->N * a->H / (2 * (thr < 1 ? 1 : thr));
    if (G > BWD_GROUP) G = BWD_GROUP;
    if (G > a->H) G = a->H;
    while (G > 1 && (double)G * per_head > BWD_GROUP_BYTES) G--;
    return G < 1 ? 1 : G;
}

static int64_t segment_len(const la__kda_args *a) {
    return a->form == LA_FORM_CHUNK ? a->chunk : RECURRENT_SEGMENT;
}

static size_t bwd_layout(const la__kda_args *a, int64_t len, void *base, bwd_scratch *s) {
    const int64_t K = a->K, V = a->V, seg = segment_len(a), nseg = (len + seg - 1) / seg;
    const size_t G = (size_t)bwd_group(a), KV = (size_t)K * (size_t)V;
    /* la_saved: the group's q, k, dq, dk rows of one chunk, and a carried
     * dL/dS per value head of the group (group_backward_saved) */
    if (a->saved) len = len < seg ? len : seg;
    const size_t lk = (size_t)(len * K), nG = a->saved ? G * (size_t)(a->HV / a->H) : 1;
    const int chunk = a->form == LA_FORM_CHUNK;
    size_t work = LA__KDA_TOKEN_WORK(K, V);
    if (chunk) {
        const size_t cw = la__kda_chunk_work_floats(seg, K, V),
                     bw = la__kda_chunk_bwd_work_floats(seg, K, V);
        work = cw > bw ? cw : bw;
    }
    la__arena ar = {(char *)base, 0, 0};
    s->qn = la__arena_floats(&ar, G * lk);
    s->kn = la__arena_floats(&ar, G * lk);
    s->rq = la__arena_floats(&ar, G * (size_t)len);
    s->rk = la__arena_floats(&ar, G * (size_t)len);
    s->dqn = la__arena_floats(&ar, G * lk);
    s->dkn = la__arena_floats(&ar, G * lk);
    s->ckpt = a->saved ? NULL : la__arena_floats(&ar, (size_t)nseg * KV);
    s->keep = chunk && !a->saved
                  ? la__arena_floats(&ar, (size_t)nseg * la__kda_chunk_keep_floats(seg, K, V))
                  : NULL;
    s->states = chunk ? NULL : la__arena_floats(&ar, (size_t)(seg + 1) * KV);
    s->G = la__arena_floats(&ar, nG * KV);
    s->v = la__arena_floats(&ar, (size_t)(seg * V));
    s->g = la__arena_floats(&ar, (size_t)(seg * K));
    s->beta = la__arena_floats(&ar, (size_t)seg);
    if (chunk) {
        s->dO = la__arena_floats(&ar, (size_t)(seg * V));
        s->dv = la__arena_floats(&ar, (size_t)(seg * V));
        s->dg = la__arena_floats(&ar, (size_t)(seg * K));
        s->dbeta = la__arena_floats(&ar, (size_t)seg);
    }
    s->work = la__arena_floats(&ar, work);
    return la__arena_size(&ar);
}

size_t la__kda_backward_scratch(const la__kda_args *a) {
    const double C = (double)segment_len(a), T = (double)a->longest;
    const double KV = (double)a->K * (double)a->V;
    if ((20 * C * C + (T / C + C + 8) * KV + 40 * BWD_GROUP * (T + C) * (double)(a->K + a->V) +
         (T / C + 1) * (C * C + C * (double)(a->K + 2 * a->V) + 64)) *
            4 >
        0x1p62)
        return SIZE_MAX;
    bwd_scratch s = {0};
    const size_t n = bwd_layout(a, a->longest, NULL, &s);
    return n ? n : SIZE_MAX;
}

/* cpu-kda22: the backward's dv and dg rows, and dq, dk through the L2 norm
 * (la__delta_scatter_dqk_group_stream), written once and read by nobody in
 * this call, with non-temporal stores where the tensors are large
 * (la__kda_stream_min_bytes, kda.h; as GLA's cpu-glab19): the lines are
 * written without being read first, and the rows' write prefetches go. The
 * same floats as the plain copies (kernels/stream.h); backward_task fences
 * before it returns (the stores are weakly ordered). */
size_t la__kda_stream_min_bytes = LA__KDA_STREAM_MIN_BYTES;

static int stream_grads(const la__kda_args *a) {
    const double w = (double)(a->K > a->V ? a->K : a->V);
    return (double)a->dims.B * (double)a->dims.T * (double)a->HV * w * 4.0 >=
           (double)la__kda_stream_min_bytes;
}

/* v, g, beta rows of tokens [t0, t0 + L) of value head hv into s->r. */
static void gather_vgb(const la__kda_args *a, const bwd_scratch *s, int64_t tok0, int64_t hv,
                       int64_t t0, int64_t L) {
    const int64_t K = a->K, V = a->V, HV = a->HV;
    for (int64_t t = 0; t < L; t++) {
        const size_t vh = (size_t)((tok0 + t0 + t) * HV + hv);
        if (t + AHEAD < L) {
            const size_t va = vh + (size_t)(AHEAD * HV);
            la__delta_prefetch(a->v + va * (size_t)V, V, 0);
            la__delta_prefetch(a->g + va * (size_t)K, K, 0);
        }
        memcpy(s->v + t * V, a->v + vh * (size_t)V, (size_t)V * sizeof(float));
        memcpy(s->g + t * K, a->g + vh * (size_t)K, (size_t)K * sizeof(float));
        s->beta[t] = a->beta[vh];
    }
}

/* Advances S over tokens [t0, t0 + L) of the sequence (chunk form: keeping
 * the chunk's products into keep). */
static void advance(const la__kda_args *a, const bwd_scratch *s, float *S, float *keep,
                    int64_t tok0, int64_t hv, int64_t t0, int64_t L) {
    const int64_t K = a->K, V = a->V, HV = a->HV;
    if (a->form == LA_FORM_RECURRENT) {
        for (int64_t t = t0; t < t0 + L; t++) {
            const size_t vh = (size_t)((tok0 + t) * HV + hv);
            la__kda_token(K, V, a->scale, S, NULL, s->qn + t * K, s->kn + t * K,
                          a->v + vh * (size_t)V, a->g + vh * (size_t)K, a->beta[vh], s->work);
        }
        return;
    }
    gather_vgb(a, s, tok0, hv, t0, L);
    la__kda_chunk_in in = {L,    K,    V,       s->qn + t0 * K, s->kn + t0 * K,
                           s->v, s->g, s->beta, a->scale,       a->kr, NULL, 0};
    la__kda_chunk_keep(&in, S, keep, s->work);
}

/* The chunk backward of tokens [t0, t0 + L) of value head hv: qc, kc its
 * normalised q, k rows, dqc, dkc its dq, dk rows (accumulated). */
static void chunk_segment_backward(const la__kda_args *a, const bwd_scratch *s, const float *S0,
                                   const float *kept, const float *keptP, int64_t tok0, int64_t hv,
                                   int64_t t0, int64_t L, const float *qc, const float *kc,
                                   float *dqc, float *dkc, const float *next, size_t next_n) {
    const int64_t K = a->K, V = a->V, HV = a->HV;
    gather_vgb(a, s, tok0, hv, t0, L);
    for (int64_t t = 0; t < L; t++) {
        const float *dot = a->d_o + (size_t)((tok0 + t0 + t) * HV + hv) * (size_t)V;
        if (t + AHEAD < L) la__delta_prefetch(dot + (size_t)(AHEAD * HV * V), V, 0);
        for (int64_t c = 0; c < V; c++) s->dO[t * V + c] = a->scale * dot[c];
    }
    la__kda_chunk_in in = {L, K, V, qc, kc, s->v, s->g, s->beta, a->scale, a->kr, next, next_n};
    la__kda_chunk_backward(&in, S0, s->G, s->dO, kept, keptP, dqc, dkc, s->dv, s->dbeta, s->dg,
                           s->work);
    /* dv, dg rows out: streamed past the caches for big tensors, else plain
     * copies with the rows AHEAD tokens on prefetched for writing */
    const int stream = stream_grads(a);
    for (int64_t t = 0; t < L; t++) {
        const size_t vh = (size_t)((tok0 + t0 + t) * HV + hv);
        if (stream) {
            la__stream_copy(a->dv + vh * (size_t)V, s->dv + t * V, (size_t)V);
            la__stream_copy(a->dg + vh * (size_t)K, s->dg + t * K, (size_t)K);
        } else {
            if (t + AHEAD < L) {
                const size_t va = vh + (size_t)(AHEAD * HV);
                la__delta_prefetch(a->dv + va * (size_t)V, V, 1);
                la__delta_prefetch(a->dg + va * (size_t)K, K, 1);
            }
            memcpy(a->dv + vh * (size_t)V, s->dv + t * V, (size_t)V * sizeof(float));
            memcpy(a->dg + vh * (size_t)K, s->dg + t * K, (size_t)K * sizeof(float));
        }
        a->dbeta[vh] = s->dbeta[t];
    }
}

static void recurrent_segment_backward(const la__kda_args *a, const bwd_scratch *s, const float *S0,
                                       int64_t tok0, int64_t hv, int64_t t0, int64_t L) {
    const int64_t K = a->K, V = a->V, HV = a->HV;
    const size_t KV = (size_t)K * (size_t)V;
    /* states[tau] = the state before token t0 + tau */
    memcpy(s->states, S0, KV * sizeof(float));
    for (int64_t tau = 1; tau <= L; tau++) {
        float *St = s->states + (size_t)tau * KV;
        memcpy(St, St - KV, KV * sizeof(float));
        advance(a, s, St, NULL, tok0, hv, t0 + tau - 1, 1);
    }
    for (int64_t tau = L; tau >= 1; tau--) {
        const int64_t t = t0 + tau - 1;
        const size_t vh = (size_t)((tok0 + t) * HV + hv);
        la__kda_token_backward(
            K, V, a->scale, s->states + (size_t)(tau - 1) * KV, s->states + (size_t)tau * KV, s->G,
            s->qn + t * K, s->kn + t * K, a->v + vh * (size_t)V, a->g + vh * (size_t)K, a->beta[vh],
            a->d_o + vh * (size_t)V, s->dqn + t * K, s->dkn + t * K, a->dv + vh * (size_t)V,
            a->dg + vh * (size_t)K, a->dbeta + vh, s->work);
    }
}

/* One value head hv of sequence n: states at segment starts, then the
 * segments last to first carrying G = dL/dS (dq, dk summed into s->dqn,
 * s->dkn: the q/k head's rows). */
static void value_head_backward(const la__kda_args *a, const bwd_scratch *ps, int64_t n, int64_t hv,
                                int64_t tok0, int64_t len) {
    const bwd_scratch s = *ps;
    const int64_t K = a->K, HV = a->HV;
    const size_t KV = (size_t)K * (size_t)a->V;
    const int64_t seg = segment_len(a), nseg = (len + seg - 1) / seg;
    const size_t kslot = la__kda_chunk_keep_floats(seg, K, a->V);
    const size_t slot = (size_t)(n * HV + hv);
    load_state(a->initial_state, s.ckpt, KV, slot);
    for (int64_t c = 0; c + 1 < nseg; c++) {
        memcpy(s.ckpt + (size_t)(c + 1) * KV, s.ckpt + (size_t)c * KV, KV * sizeof(float));
        advance(a, &s, s.ckpt + (size_t)(c + 1) * KV, s.keep ? s.keep + (size_t)c * kslot : NULL,
                tok0, hv, c * seg, seg);
    }
    load_state(a->d_final_state, s.G, KV, slot);
    for (int64_t c = nseg - 1; c >= 0; c--) {
        const int64_t t0 = c * seg, L = len - t0 < seg ? len - t0 : seg;
        if (a->form == LA_FORM_CHUNK)
            chunk_segment_backward(a, &s, s.ckpt + (size_t)c * KV,
                                   c + 1 < nseg ? s.keep + (size_t)c * kslot : NULL, NULL, tok0,
                                   hv, t0, L, s.qn + t0 * K, s.kn + t0 * K, s.dqn + t0 * K,
                                   s.dkn + t0 * K, NULL, 0);
        else
            recurrent_segment_backward(a, &s, s.ckpt + (size_t)c * KV, tok0, hv, t0, L);
    }
    if (a->d_initial_state) memcpy(a->d_initial_state + slot * KV, s.G, KV * sizeof(float));
}

/* With la_saved (chunk form), no sweep needs a whole sequence's q, k rows:
 * the group's q and k are gathered, and dq, dk scattered, chunk by chunk
 * (last to first), each chunk's value heads run in turn between, each with
 * its own carried dL/dS (s->G [nq group,K,V]). The same arithmetic per row
 * and the same order of the dq, dk sums over value heads as the whole-
 * sequence path (a row's chunk sees hv, hv + 1, ... in both): the same
 * bits; the rows stay in cache between gather, use and scatter. */
static void group_backward_saved(const la__kda_args *a, const bwd_scratch *s, int64_t n,
                                 int64_t tok0, int64_t len, int64_t hq0, int64_t nq) {
    const int64_t K = a->K, V = a->V, H = a->H, HV = a->HV, group = HV / H, C = a->chunk;
    const size_t KV = (size_t)K * (size_t)V;
    for (int64_t i = 0; i < nq * group; i++)
        load_state(a->d_final_state, s->G + (size_t)i * KV, KV, (size_t)(n * HV + hq0 * group + i));
    for (int64_t c = (len + C - 1) / C - 1; c >= 0; c--) {
        const int64_t t0 = c * C, L = len - t0 < C ? len - t0 : C;
        const size_t lk = (size_t)(L * K);
        la__delta_gather_qk_group(a->q, a->k, tok0 + t0, L, H, hq0, nq, K, a->l2norm, s->qn,
                                  s->kn, s->rq, s->rk);
        memset(s->dqn, 0, (size_t)nq * lk * sizeof(float));
        memset(s->dkn, 0, (size_t)nq * lk * sizeof(float));
        for (int64_t i = 0; i < nq; i++)
            for (int64_t j = 0; j < group; j++) {
                const int64_t hv = (hq0 + i) * group + j;
                bwd_scratch h = *s;
                h.G = s->G + (size_t)(i * group + j) * KV;
                const float *S0 = a->saved + saved_slot(a, n, hv, c), *kept = S0 + up16(KV);
                /* the next call's slot: the next value head's, or the
                 * group's first head's of the chunk before (its length
                 * is C there); none after the last */
                const int last = i + 1 == nq && j + 1 == group;
                const float *next = last ? (c > 0 ? a->saved + saved_slot(a, n, hq0 * group, c - 1)
                                                  : NULL)
                                         : a->saved + saved_slot(a, n, hv + 1, c);
                chunk_segment_backward(a, &h, S0, kept, kept + la__kda_chunk_keep_floats(L, K, V),
                                       tok0, hv, t0, L, s->qn + (size_t)i * lk,
                                       s->kn + (size_t)i * lk, s->dqn + (size_t)i * lk,
                                       s->dkn + (size_t)i * lk, next,
                                       next ? la__kda_saved_slot_floats(a) : 0);
            }
        (stream_grads(a) ? la__delta_scatter_dqk_group_stream : la__delta_scatter_dqk_group)(
            a->dq, a->dk, tok0 + t0, L, H, hq0, nq, K, a->l2norm, s->qn, s->kn, s->rq, s->rk,
            s->dqn, s->dkn);
    }
    if (a->d_initial_state)
        for (int64_t i = 0; i < nq * group; i++)
            memcpy(a->d_initial_state + (size_t)(n * HV + hq0 * group + i) * KV,
                   s->G + (size_t)i * KV, KV * sizeof(float));
}

static void backward_task(void *p, int64_t task, int tid) {
    const la__kda_args *a = p;
    const int64_t K = a->K, H = a->H, group = a->HV / H;
    const int64_t G = bwd_group(a), ng = (H + G - 1) / G;
    const int64_t n = task / ng, hq0 = task % ng * G, nq = H - hq0 < G ? H - hq0 : G;
    int64_t tok0, len;
    la__seq_bounds(&a->dims, n, &tok0, &len);
    bwd_scratch s = {0};
    bwd_layout(a, len, la__scratch(a->ctx, tid), &s);
    if (a->saved) {
        group_backward_saved(a, &s, n, tok0, len, hq0, nq);
        la__stream_fence();
        return;
    }
    const size_t lk = (size_t)(len * K);
    la__delta_gather_qk_group(a->q, a->k, tok0, len, H, hq0, nq, K, a->l2norm, s.qn, s.kn, s.rq,
                              s.rk);
    memset(s.dqn, 0, (size_t)nq * lk * sizeof(float));
    memset(s.dkn, 0, (size_t)nq * lk * sizeof(float));

    for (int64_t i = 0; i < nq; i++) {
        const int64_t hq = hq0 + i;
        /* head hq's rows of the group's arrays */
        bwd_scratch h = s;
        h.qn = s.qn + (size_t)i * lk;
        h.kn = s.kn + (size_t)i * lk;
        h.dqn = s.dqn + (size_t)i * lk;
        h.dkn = s.dkn + (size_t)i * lk;
        for (int64_t hv = hq * group; hv < (hq + 1) * group; hv++)
            value_head_backward(a, &h, n, hv, tok0, len);
    }

    /* through the L2 norm (the delta rules' row loop: dots in 16 partial sums) */
    (stream_grads(a) ? la__delta_scatter_dqk_group_stream : la__delta_scatter_dqk_group)(
        a->dq, a->dk, tok0, len, H, hq0, nq, K, a->l2norm, s.qn, s.kn, s.rq, s.rk, s.dqn, s.dkn);
    la__stream_fence();
}

void la__kda_backward(const la__kda_args *a) {
    const int64_t G = bwd_group(a);
    la__parallel_for(a->ctx, a->N * ((a->H + G - 1) / G), backward_task, (void *)a);
}
