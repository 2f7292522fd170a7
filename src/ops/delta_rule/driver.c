/* The drivers of the delta rules, forward and backward, both forms (the
 * per-token arithmetic is in step.c, the chunk's WY arithmetic in chunk.c).
 *
 * Forward: one task per (sequence, value head). The recurrent form runs
 * la__delta_token token by token (the decoder's arithmetic); the chunk form
 * gathers a chunk into contiguous rows (normalising q and k once) and runs
 * la__delta_chunk_step.
 *
 * Backward: one task per (sequence, group of q/k heads; bwd_group): q/k
 * rows gathered for the group in one pass, then for each q/k head the value
 * heads sharing it in order, so dq and dk (summed over those value heads)
 * never depend on the thread count. For each value head the states at segment starts
 * (checkpoints) are recomputed forward, then segments are visited last to
 * first carrying dS = dL/dS back:
 *   LA_FORM_RECURRENT: segments of 64 tokens; checkpoints from the token
 *     recurrence; inside a segment the token states are recomputed from the
 *     checkpoint and the gradient goes back token by token (below).
 *   LA_FORM_CHUNK: segments are the chunks; checkpoints from the WY chunk
 *     step (la__delta_chunk_keep, which also keeps each chunk's K K^T, U
 *     and R = U - W S_0 for the reverse sweep instead of recomputing them);
 *     each chunk's backward is the chunkwise WY backward (chunk.c), matrix
 *     products over the chunk, no token states.
 * Memory per thread: T/seg checkpoints of K V floats (+ seg+1 token states
 * for the recurrent form; + T (C + 2V) kept floats for the chunk form)
 * plus O(T K), never T K V.
 *
 * Per token, with P = S_{t-1}, a = exp(g_t), S' = a P, u = k S',
 * r = beta (v - u), S_t = S' + k^T r, o_t = scale q S_t, and G = dL/dS_t:
 *   dq   += scale S_t do          dS_t += scale q^T do
 *   w     = k G                   dv    = beta w
 *   dbeta = w . (v - u)           dk   += G r - beta S' w
 *   dS'   = G - beta k^T w        dg    = a <dS', P>
 *   dS_{t-1} = a dS'
 * and through the L2 norm y = x rstd: dx = rstd (dy - (y . dy) y). */
#include "delta_rule.h"

#include <math.h>
#include <string.h>

/* Chunk length actually used: the option, capped at the longest sequence
 * (a chunk longer than the sequence is the whole sequence anyway). */
int64_t la__delta_chunk_len(const la__delta_args *a) {
    const int64_t m = la__max_seq_len(&a->dims);
    return a->chunk < m ? a->chunk : m;
}

/* Chunk form: a forward task is (sequence, group of up to
 * LA__DELTA_FWD_GROUP value heads), run chunk by chunk, the group's rows of
 * a chunk gathered in one pass (the heads of a token are adjacent in
 * memory, so a group shares the page walks and cache lines of its rows),
 * then head by head. Each head's arithmetic is that of a one-head task, so
 * the group size changes no bit; it is chosen to leave >= 2 tasks per
 * thread (1 on many threads, up to 4 on one). */
#define LA__DELTA_FWD_GROUP 4

static int64_t fwd_group(const la__delta_args *a) {
    if (a->form != LA_FORM_CHUNK) return 1;
    const int64_t thr = la_ctx_threads(a->ctx);
    int64_t G = a->N * a->HV / (2 * (thr < 1 ? 1 : thr));
    if (G > LA__DELTA_FWD_GROUP) G = LA__DELTA_FWD_GROUP;
    if (G > a->HV) G = a->HV;
    return G < 1 ? 1 : G;
}

/* The scratch of one task: S, the step's work, and for the chunk form one
 * chunk of normalised q, k and of g, beta (v is read in place) plus the
 * chunk step's work; S and the chunk rows once per head of the group. */
typedef struct {
    float *S, *work, *qc, *kc, *gc, *bc, *cw;
} fwd_scratch;

/* Carves (or, base == NULL, sizes) the scratch; returns its bytes (0 when a
 * size overflows). */
static size_t fwd_layout(const la__delta_args *a, void *base, fwd_scratch *s) {
    la__arena ar = {(char *)base, 0, 0};
    const size_t K = (size_t)a->K, V = (size_t)a->V, G = (size_t)fwd_group(a);
    memset(s, 0, sizeof *s);
    s->S = la__arena_floats(&ar, G * K * V);
    s->work = la__arena_floats(&ar, LA__STEP_WORK_FLOATS(K, V));
    if (a->form == LA_FORM_CHUNK) {
        const size_t C = (size_t)la__delta_chunk_len(a);
        s->qc = la__arena_floats(&ar, G * C * K);
        s->kc = la__arena_floats(&ar, G * C * K);
        s->gc = la__arena_floats(&ar, G * C);
        s->bc = la__arena_floats(&ar, G * C);
        s->cw = la__arena_floats(&ar, la__delta_chunk_work_floats((int64_t)C, a->K, a->V));
    }
    return la__arena_size(&ar);
}

size_t la__delta_forward_scratch(const la__delta_args *a) {
    /* Absurd sizes (a chunk of 2^30 tokens) would overflow size_t below:
     * ask for SIZE_MAX instead, which la__scratch_reserve reports as OOM. */
    const double C2 = (double)la__delta_chunk_len(a), KVd = (double)a->K * (double)a->V;
    const double per_head = 4 * C2 * C2 + 4 * KVd + 8 * C2 * (double)(a->K + a->V);
    if (per_head * 4 * LA__DELTA_FWD_GROUP > 0x1p62) return SIZE_MAX;
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

/* ---- saved for backward (la_saved; chunk form) --------------------------
 * Layout of the saved bytes: cbase [N+1] int64 (chunks before sequence n),
 * then for value head hv and chunk c of sequence n, at slot
 * hv NC + cbase[n] + c (NC chunks in all, per head):
 *   ckpt [slot][K,V]  the chunk's start state S_0
 *   kept [slot][kslot] K K^T, U, R (la__delta_chunk_keep's layout)
 * i.e. (K V + kslot) floats per chunk and value head: at C = 64,
 * K = V = 128, 2.3 KB per token and head. */
typedef struct {
    int64_t *cbase, NC;
    float *ckpt, *kept;
    size_t kslot;
} saved_view;

/* Carves (or, base == NULL, sizes; then NC is counted from the sequences)
 * the saved bytes; returns their size, 0 when a size overflows. */
static size_t saved_layout(const la__delta_args *a, const void *base, saved_view *v) {
    const int64_t C = la__delta_chunk_len(a);
    const int64_t NC = base ? a->saved_chunks : la__saved_chunk_bases(&a->dims, a->N, C, NULL);
    v->NC = NC;
    v->kslot = la__delta_chunk_kept_floats(C, a->K, a->V);
    const double per = (double)a->HV * (double)NC * ((double)a->K * (double)a->V + (double)v->kslot);
    if (per * 4 > 0x1p62) return 0;
    la__arena ar = {(char *)(uintptr_t)base, 0, 0};
    v->cbase = la__arena_take(&ar, (size_t)a->N + 1, sizeof(int64_t));
    v->ckpt = la__arena_floats(&ar, (size_t)(a->HV * NC) * (size_t)a->K * (size_t)a->V);
    v->kept = la__arena_floats(&ar, (size_t)(a->HV * NC) * v->kslot);
    return la__arena_size(&ar);
}

size_t la__delta_saved_bytes(const la__delta_args *a) {
    saved_view v;
    return saved_layout(a, NULL, &v);
}

/* The recurrent form's task: one (sequence, value head), token by token. */
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

    for (int64_t t = start; t < start + len; t++) {
        const size_t vh = (size_t)(t * HV + hv), qh = (size_t)(t * H + hq);
        la__delta_token(K, V, a->l2norm, a->scale, S, a->o + vh * (size_t)V, a->q + qh * (size_t)K,
                        a->k + qh * (size_t)K, a->v + vh * (size_t)V, a->g ? a->g + vh : NULL,
                        a->beta[vh], work);
    }
    if (a->final_state)
        memcpy(a->final_state + (size_t)(n * HV + hv) * KV, S, KV * sizeof(float));
}

/* The chunk form's task: value heads [hv0, hv0 + nh) of sequence n. */
static void forward_group_task(void *p, int64_t task, int tid) {
    const la__delta_args *a = p;
    const int64_t K = a->K, V = a->V, H = a->H, HV = a->HV, group = HV / H;
    const int64_t G = fwd_group(a), ng = (HV + G - 1) / G;
    const int64_t n = task / ng, hv0 = task % ng * G, nh = HV - hv0 < G ? HV - hv0 : G;
    const int64_t hq0 = hv0 / group, nq = (hv0 + nh - 1) / group - hq0 + 1;
    const size_t KV = (size_t)K * (size_t)V;
    const int64_t C = la__delta_chunk_len(a);
    int64_t start, len;
    la__seq_bounds(&a->dims, n, &start, &len);
    fwd_scratch sc;
    fwd_layout(a, la__scratch(a->ctx, tid), &sc);
    for (int64_t h = 0; h < nh; h++) load_state(a, sc.S + (size_t)h * KV, n, hv0 + h);
    for (int64_t t0 = 0; t0 < len; t0 += C) {
        const int64_t L = len - t0 < C ? len - t0 : C;
        for (int64_t t = 0; t < L; t++) {
            const int64_t tok = start + t0 + t;
            if (t0 + t + LA__DELTA_AHEAD < len) { /* the group's span of each row */
                const size_t qa = (size_t)((tok + LA__DELTA_AHEAD) * H + hq0) * (size_t)K;
                const size_t va = (size_t)((tok + LA__DELTA_AHEAD) * HV + hv0) * (size_t)V;
                la__delta_prefetch(a->q + qa, nq * K, 0);
                la__delta_prefetch(a->k + qa, nq * K, 0);
                la__delta_prefetch(a->v + va, nh * V, 0);
            }
            if (a->l2norm && group == 1) { /* the token's rows of the nh heads, adjacent */
                const size_t qh = (size_t)(tok * H + hq0) * (size_t)K;
                la__delta_l2norm_rows(sc.qc + t * K, C * K, a->q + qh, K, nh, K);
                la__delta_l2norm_rows(sc.kc + t * K, C * K, a->k + qh, K, nh, K);
            }
            for (int64_t h = 0; h < nh; h++) {
                const int64_t hv = hv0 + h, hq = hv / group;
                const size_t vh = (size_t)(tok * HV + hv), qh = (size_t)(tok * H + hq);
                float *qc = sc.qc + (h * C + t) * K, *kc = sc.kc + (h * C + t) * K;
                if (a->l2norm && group == 1) {
                    /* normalised above */
                } else if (a->l2norm) {
                    la__delta_l2norm(qc, a->q + qh * (size_t)K, K);
                    la__delta_l2norm(kc, a->k + qh * (size_t)K, K);
                } else {
                    memcpy(qc, a->q + qh * (size_t)K, (size_t)K * sizeof(float));
                    memcpy(kc, a->k + qh * (size_t)K, (size_t)K * sizeof(float));
                }
                sc.gc[h * C + t] = a->g ? a->g[vh] : 0.0f;
                sc.bc[h * C + t] = a->beta[vh];
            }
        }
        for (int64_t h = 0; h < nh; h++) {
            const int64_t hv = hv0 + h, hc = h * C;
            const float *qh = sc.qc + hc * K, *kh = sc.kc + hc * K;
            const float *gh = a->g ? sc.gc + hc : NULL;
            /* v read in place, rows HV V floats apart (cpu-delta11; the
             * gather above prefetched them) */
            const float *vh = a->v + (size_t)((start + t0) * HV + hv) * (size_t)V;
            la__delta_chunk_in in = {L, K, V, qh, kh, vh, gh, sc.bc + hc, a->scale, a->kr, HV * V};
            float *kept = NULL;
            if (a->save) { /* this chunk's start state and products into the saved slots */
                saved_view sv;
                saved_layout(a, a->save, &sv);
                const size_t slot = (size_t)(hv * sv.NC + sv.cbase[n] + t0 / C);
                memcpy(sv.ckpt + slot * KV, sc.S + (size_t)h * KV, KV * sizeof(float));
                kept = sv.kept + slot * sv.kslot;
            }
            la__delta_chunk_step(&in, sc.S + (size_t)h * KV,
                                 a->o + (size_t)((start + t0) * HV + hv) * (size_t)V, HV * V,
                                 kept, sc.cw);
        }
    }
    if (a->final_state)
        for (int64_t h = 0; h < nh; h++)
            memcpy(a->final_state + (size_t)(n * HV + hv0 + h) * KV, sc.S + (size_t)h * KV,
                   KV * sizeof(float));
}

void la__delta_forward(const la__delta_args *a) {
    if (a->form == LA_FORM_CHUNK) {
        const int64_t G = fwd_group(a);
        la__delta_args b = *a;
        if (b.save) { /* the chunk offsets of the sequences, once */
            saved_view sv;
            saved_layout(&b, NULL, &sv);
            b.saved_chunks = sv.NC;
            saved_layout(&b, b.save, &sv);
            la__saved_chunk_bases(&a->dims, a->N, la__delta_chunk_len(a), sv.cbase);
        }
        la__parallel_for(a->ctx, a->N * ((a->HV + G - 1) / G), forward_group_task, &b);
        return;
    }
    la__parallel_for(a->ctx, a->N * a->HV, forward_task, (void *)a);
}

/* ---- backward --------------------------------------------------------- */

#define RECURRENT_SEGMENT 64

static int64_t segment_len(const la__delta_args *a) {
    return a->form == LA_FORM_CHUNK ? la__delta_chunk_len(a) : RECURRENT_SEGMENT;
}

/* A backward task is (sequence, group of up to LA__DELTA_BWD_GROUP query
 * heads with their value heads): the group's q and k rows are gathered and
 * normalised in one pass over the tokens, and dq, dk go back through the
 * L2 norm in one pass (a token's rows of the group are adjacent: one page
 * walk per token instead of one per head and token); between, each value
 * head runs its checkpoint and reverse sweeps alone, on scratch that the
 * heads share. Memory: 4 len K + 2 len floats per head of the group (qn,
 * kn, dqn, dkn, rq, rk), the group capped so these stay within
 * LA__DELTA_BWD_GROUP_BYTES (at T = 8192, K = 128: 16 MiB a head, 4
 * heads). With la_saved (saved_sweep) the gather goes chunk by chunk
 * instead, into one chunk's rows per head. Each head's arithmetic is that
 * of a one-head task, so the group size (which depends on the thread
 * count, leaving >= 2 tasks per thread) changes no bit. */
#define LA__DELTA_BWD_GROUP 4
#define LA__DELTA_BWD_GROUP_BYTES ((double)(64 << 20))

/* Chunk form with one value head per q/k head: dq and dk of a chunk are
 * final once its backward ran, so they go through the L2 norm and out to
 * dq, dk right then, from a one-chunk buffer still in cache (no
 * whole-sequence dqn, dkn to zero, fill and read back). */
static int fused_dqk(const la__delta_args *a) { return a->form == LA_FORM_CHUNK && a->HV == a->H; }

/* ... and with la_saved: no forward sweep, so q and k are gathered chunk
 * by chunk in the reverse sweep (group_backward_saved). */
static int saved_sweep(const la__delta_args *a) { return fused_dqk(a) && a->saved != NULL; }

static int64_t bwd_group(const la__delta_args *a) {
    const int64_t thr = la_ctx_threads(a->ctx);
    const double per_head = ((fused_dqk(a) ? 2.0 : 4.0) * (double)a->K + 2.0) *
                            (double)(saved_sweep(a) ? segment_len(a) : la__max_seq_len(&a->dims)) *
                            sizeof(float);
    int64_t G = a->N * a->H / (2 * (thr < 1 ? 1 : thr));
    if (G > LA__DELTA_BWD_GROUP) G = LA__DELTA_BWD_GROUP;
    if (G > a->H) G = a->H;
    while (G > 1 && (double)G * per_head > LA__DELTA_BWD_GROUP_BYTES) G--;
    return G < 1 ? 1 : G;
}

/* Scratch layout (floats), each piece 64-byte aligned. */
typedef struct {
    float *qn, *kn;    /* [len,K] normalised (or copied) q, k (one head; G heads in the task;
                        * saved_sweep: [seg,K], one chunk) */
    float *rq, *rk;    /* [len] their rstd (saved_sweep: [seg]) */
    float *dqn, *dkn;  /* [len,K] gradients w.r.t. qn, kn, summed over the value heads */
    float *ckpt;       /* [nseg,K,V] */
    float *kept;       /* chunk form: [nseg] x la__delta_chunk_kept_floats(seg,K,V) */
    float *states;     /* [seg+1,K,V] */
    float *G;          /* [K,V] the carried dS ([G][K,V]: one per head of the group) */
    float *gc, *bc;    /* [seg], [seg]: one chunk of g, beta */
    float *dOc, *vc, *dvc, *dbc, *dgc; /* chunk form: [seg,V] scale*d_o, v, dv, [seg] dbeta, dg */
    float *w, *u, *r;  /* [V] */
    float *work;       /* step / chunk work */
} bwd_scratch;

/* Carves (or, base == NULL, sizes) the scratch; returns its bytes (0 when a
 * size overflows). */
static size_t layout(const la__delta_args *a, int64_t len, void *base, bwd_scratch *s) {
    const int64_t K = a->K, V = a->V, seg = segment_len(a);
    const int64_t nseg = (len + seg - 1) / seg;
    const size_t KV = (size_t)K * (size_t)V;
    size_t work = LA__STEP_WORK_FLOATS(K, V);
    const int chunk = a->form == LA_FORM_CHUNK;
    const size_t G = (size_t)bwd_group(a);
    if (chunk) {
        const size_t cw = la__delta_chunk_work_floats(seg, K, V);
        const size_t bw = la__delta_chunk_bwd_work_floats(seg, K, V);
        if (cw > work) work = cw;
        if (bw > work) work = bw;
    }
    const int64_t rows = saved_sweep(a) ? seg : len; /* of qn, kn */
    const size_t sizes[] = {G * (size_t)(rows * K), G * (size_t)(rows * K), G * (size_t)rows,
                            G * (size_t)rows, fused_dqk(a) ? (size_t)(seg * K) : G * (size_t)(len * K),
                            fused_dqk(a) ? (size_t)(seg * K) : G * (size_t)(len * K),
                            a->saved ? 0 : (size_t)nseg * KV,
                            chunk && !a->saved ? (size_t)nseg * la__delta_chunk_kept_floats(seg, K, V) : 0,
                            chunk ? 0 : (size_t)(seg + 1) * KV, G * KV,
                            (size_t)seg, (size_t)seg, chunk ? (size_t)(seg * V) : 0,
                            chunk ? (size_t)(seg * V) : 0, chunk ? (size_t)(seg * V) : 0,
                            chunk ? (size_t)seg : 0,
                            chunk ? (size_t)seg : 0, (size_t)V, (size_t)V, (size_t)V, work};
    float **ptrs[] = {&s->qn, &s->kn, &s->rq, &s->rk, &s->dqn, &s->dkn, &s->ckpt, &s->kept, &s->states,
                      &s->G, &s->gc, &s->bc, &s->dOc, &s->vc, &s->dvc, &s->dbc, &s->dgc,
                      &s->w, &s->u, &s->r, &s->work};
    la__arena ar = {(char *)base, 0, 0};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        float *p = la__arena_floats(&ar, sizes[i]);
        if (base) *ptrs[i] = p;
    }
    return la__arena_size(&ar);
}

size_t la__delta_backward_scratch(const la__delta_args *a) {
    /* See la__delta_forward_scratch: SIZE_MAX (reported as OOM) where the
     * size would overflow. */
    const double C = (double)segment_len(a), T = (double)la__max_seq_len(&a->dims);
    const double KV = (double)a->K * (double)a->V;
    if ((8 * C * C + (T / C + C + 4) * KV +
         (8 * (T + C) + 2 * T * LA__DELTA_BWD_GROUP) * (double)(a->K + a->V) + (T + C) * C) *
            4 * LA__DELTA_BWD_GROUP >
        0x1p62)
        return SIZE_MAX;
    bwd_scratch s;
    const size_t bytes = layout(a, la__max_seq_len(&a->dims), NULL, &s);
    return bytes ? bytes : SIZE_MAX;
}

/* Advances S over tokens [t0, t0 + L) of the sequence (indices into the
 * normalised rows qn/kn; tok0 = first flattened token of the sequence).
 * Chunk form: from S into S1 (NULL: the last chunk, whose end state is not
 * needed), keeping the chunk's products in kept. */
static void advance(const la__delta_args *a, const bwd_scratch *s, float *S, float *S1,
                    float *kept, int64_t tok0, int64_t hv, int64_t t0, int64_t L) {
    const int64_t K = a->K, V = a->V, HV = a->HV;
    if (a->form == LA_FORM_RECURRENT) {
        for (int64_t t = t0; t < t0 + L; t++) {
            const size_t vh = (size_t)((tok0 + t) * HV + hv);
            la__delta_token(K, V, 0, a->scale, S, NULL, s->qn + t * K, s->kn + t * K,
                            a->v + vh * (size_t)V, a->g ? a->g + vh : NULL, a->beta[vh],
                            s->work);
        }
        return;
    }
    /* v is read in place (rows HV V floats apart; cpu-delta11): each row
     * prefetched here, read once by the chunk's scaled rows */
    const size_t v0 = (size_t)((tok0 + t0) * HV + hv);
    for (int64_t t = 0; t < L; t++) {
        const size_t vh = v0 + (size_t)(t * HV);
        la__delta_prefetch(a->v + vh * (size_t)V, V, 0);
        s->gc[t] = a->g ? a->g[vh] : 0.0f;
        s->bc[t] = a->beta[vh];
    }
    la__delta_chunk_in in = {L, K, V, s->qn + t0 * K, s->kn + t0 * K, a->v + v0 * (size_t)V,
                             a->g ? s->gc : NULL, s->bc, a->scale, a->kr, HV * V};
    la__delta_chunk_keep(&in, S, S1, kept, s->work);
}

/* Reverse pass over one token: G holds dL/dS_t on entry, dL/dS_{t-1} on exit. */
static void token_backward(const la__delta_args *a, const bwd_scratch *s, const float *P,
                           const float *St, int64_t t, size_t vh) {
    const int64_t K = a->K, V = a->V;
    const float *qt = s->qn + t * K, *kt = s->kn + t * K;
    const float *vt = a->v + vh * (size_t)V, *dot = a->d_o + vh * (size_t)V;
    const float beta = a->beta[vh];
    const float ga = a->g ? expf(a->g[vh]) : 1.0f;
    float *G = s->G, *w = s->w, *u = s->u, *r = s->r;
    float *dqt = s->dqn + t * K, *dkt = s->dkn + t * K;

    /* The output o_t = scale q S_t. */
    for (int64_t i = 0; i < K; i++) {
        const float *Si = St + i * V;
        float acc = 0;
        for (int64_t j = 0; j < V; j++) acc += Si[j] * dot[j];
        dqt[i] += a->scale * acc;
        const float sq = a->scale * qt[i];
        float *Gi = G + i * V;
        for (int64_t j = 0; j < V; j++) Gi[j] += sq * dot[j];
    }
    /* u = k S' = a k P, w = k G. */
    for (int64_t j = 0; j < V; j++) u[j] = w[j] = 0;
    for (int64_t i = 0; i < K; i++) {
        const float ki = kt[i];
        const float *Pi = P + i * V, *Gi = G + i * V;
        for (int64_t j = 0; j < V; j++) {
            u[j] += ki * Pi[j];
            w[j] += ki * Gi[j];
        }
    }
    double dbeta = 0;
    float *dvt = a->dv + vh * (size_t)V;
    for (int64_t j = 0; j < V; j++) {
        const float d = vt[j] - ga * u[j];
        r[j] = beta * d;
        dbeta += (double)w[j] * d;
        dvt[j] = beta * w[j];
    }
    a->dbeta[vh] = (float)dbeta;
    double da = 0;
    for (int64_t i = 0; i < K; i++) {
        const float *Pi = P + i * V;
        float *Gi = G + i * V;
        float gr = 0, pw = 0;
        for (int64_t j = 0; j < V; j++) {
            gr += Gi[j] * r[j];
            pw += Pi[j] * w[j];
        }
        dkt[i] += gr - beta * ga * pw;
        const float bk = beta * kt[i];
        for (int64_t j = 0; j < V; j++) {
            const float d = Gi[j] - bk * w[j];
            da += (double)d * Pi[j];
            Gi[j] = ga * d;
        }
    }
    if (a->g) a->dg[vh] = (float)(ga * da);
}

/* The unit of the reverse sweep that runs after a chunk's backward: value
 * head hv's chunk from token t0 (a full chunk unless it is the sequence's
 * last), its saved slot (kept products, start state) and its normalised q,
 * k rows (the chunk's first; NULL: not gathered yet). */
typedef struct {
    int64_t hv, t0;
    const float *kept, *S0, *qn, *kn;
    const float *qraw, *kraw; /* else the caller's rows (the chunk's first token's
                               * rows of the group), qspan floats a token */
    int64_t qspan;
} bwd_next;

/* The WY backward of chunk [t0, t0 + L) of one value head; S0 its start
 * state, s->G carried from dL/dS_end to dL/dS_start; the chunk's dq, dk
 * rows accumulate into dqc, dkc [L,K]. nx: the next unit (NULL: none);
 * fetched: this chunk's rows were fetched by the unit before. */
static void chunk_backward(const la__delta_args *a, const bwd_scratch *s, const float *S0,
                           float *kept, int64_t tok0, int64_t hv, int64_t t0, int64_t L,
                           const float *qc, const float *kc, float *dqc, float *dkc,
                           const bwd_next *nx, int fetched) {
    const int64_t K = a->K, V = a->V, HV = a->HV;
    /* v's rows are copied into vc with d_o's (read in place, at the chunk's
     * end, each row on its own page, the dbeta dot stalled: 33-42% of the
     * chunk backward's own samples, cpu-dbwd15). The next unit's saved
     * slot, its q, k rows and its rows of d_o, v, dv (fused: dq, dk) are
     * fetched into L2 here, one row and 1/L of the slot per token, a whole
     * chunk's backward ahead of their use (cpu-delta12); without one (the
     * sweep's first unit has none before it), d_o's and v's rows
     * LA__DELTA_AHEAD ahead of their copies, dv's for writing. */
    const size_t v0 = (size_t)((tok0 + t0) * HV + hv);
    const size_t kslot = la__delta_chunk_kept_floats(segment_len(a), K, V);
    const size_t KV = (size_t)K * (size_t)V;
    const size_t slot_lines = kslot * sizeof(float) / 64, ckpt_lines = KV * sizeof(float) / 64;
    const size_t per_t = (slot_lines + ckpt_lines + (size_t)L - 1) / (size_t)L;
    const size_t pv0 = nx ? (size_t)((tok0 + nx->t0) * HV + nx->hv) : 0;
    for (int64_t t = 0; t < L; t++) {
        const size_t vh = v0 + (size_t)(t * HV);
        const float *dot = a->d_o + vh * (size_t)V;
        if (nx) {
            const size_t ph = pv0 + (size_t)(t * HV);
            const size_t qh = ph / (size_t)(HV / a->H);
            la__delta_prefetch_l2(a->d_o + ph * (size_t)V, V);
            la__delta_prefetch_l2(a->v + ph * (size_t)V, V);
            la__delta_prefetch_l2(a->dv + ph * (size_t)V, V);
            if (nx->qn) {
                la__delta_prefetch_l2(nx->qn + t * K, K);
                la__delta_prefetch_l2(nx->kn + t * K, K);
            } else if (nx->qraw) {
                la__delta_prefetch_l2(nx->qraw + t * a->H * K, nx->qspan);
                la__delta_prefetch_l2(nx->kraw + t * a->H * K, nx->qspan);
            }
            if (fused_dqk(a)) {
                la__delta_prefetch_l2(a->dq + qh * (size_t)K, K);
                la__delta_prefetch_l2(a->dk + qh * (size_t)K, K);
            }
            for (size_t i = (size_t)t * per_t; i < (size_t)(t + 1) * per_t; i++) {
                if (i < slot_lines)
                    __builtin_prefetch((const char *)nx->kept + 64 * i, 0, 2);
                else if (i < slot_lines + ckpt_lines)
                    __builtin_prefetch((const char *)nx->S0 + 64 * (i - slot_lines), 0, 2);
            }
        }
        if (!fetched) {
            if (t + LA__DELTA_AHEAD < L) {
                const size_t ah = (size_t)(LA__DELTA_AHEAD * HV) * (size_t)V;
                la__delta_prefetch(dot + ah, V, 0);
                la__delta_prefetch(a->v + vh * (size_t)V + ah, V, 0);
                la__delta_prefetch(a->dv + vh * (size_t)V + ah, V, 1);
            }
        }
        for (int64_t c = 0; c < V; c++) s->dOc[t * V + c] = a->scale * dot[c];
        memcpy(s->vc + t * V, a->v + vh * (size_t)V, (size_t)V * sizeof(float));
        s->gc[t] = a->g ? a->g[vh] : 0.0f;
        s->bc[t] = a->beta[vh];
    }
    la__delta_chunk_in in = {L,     K,  V, qc, kc, s->vc, a->g ? s->gc : NULL, s->bc, a->scale,
                             a->kr, 0};
    la__delta_chunk_backward(&in, S0, kept, s->G, s->dOc, dqc, dkc, s->dvc, s->dbc, s->dgc,
                             s->work);
    for (int64_t t = 0; t < L; t++) {
        const size_t vh = v0 + (size_t)(t * HV);
        memcpy(a->dv + vh * (size_t)V, s->dvc + t * V, (size_t)V * sizeof(float));
        a->dbeta[vh] = s->dbc[t];
        if (a->g) a->dg[vh] = s->dgc[t];
    }
}

/* One value head's sweeps: checkpoints (and, chunk form, kept products)
 * forward, then the segments last to first; dq, dk of its q head
 * accumulate in s->dqn, s->dkn. */
static void head_backward(const la__delta_args *a, const bwd_scratch *sp, int64_t n, int64_t tok0,
                          int64_t len, int64_t hv) {
    const int64_t K = a->K, V = a->V, HV = a->HV;
    const size_t KV = (size_t)K * (size_t)V;
    const int64_t seg = segment_len(a), nseg = (len + seg - 1) / seg;
    const size_t kslot = la__delta_chunk_kept_floats(seg, K, V);
    bwd_scratch sv = *sp, *s = &sv;
    const size_t so = (size_t)(n * HV + hv) * KV;
    if (a->saved) { /* the forward's checkpoints and products (chunk form) */
        saved_view v;
        saved_layout(a, a->saved, &v);
        const size_t slot = (size_t)(hv * v.NC + v.cbase[n]);
        s->ckpt = v.ckpt + slot * KV;
        s->kept = v.kept + slot * v.kslot;
    } else if (a->initial_state) {
        memcpy(s->ckpt, a->initial_state + so, KV * sizeof(float));
    } else {
        memset(s->ckpt, 0, KV * sizeof(float));
    }
    if (a->saved) {
        /* nothing to sweep */
    } else if (a->form == LA_FORM_CHUNK) {
        for (int64_t c = 0; c < nseg; c++) {
            const int64_t L = len - c * seg < seg ? len - c * seg : seg;
            advance(a, s, s->ckpt + (size_t)c * KV,
                    c + 1 < nseg ? s->ckpt + (size_t)(c + 1) * KV : NULL,
                    s->kept + (size_t)c * kslot, tok0, hv, c * seg, L);
        }
    } else {
        for (int64_t c = 0; c + 1 < nseg; c++) {
            memcpy(s->ckpt + (size_t)(c + 1) * KV, s->ckpt + (size_t)c * KV, KV * sizeof(float));
            advance(a, s, s->ckpt + (size_t)(c + 1) * KV, NULL, NULL, tok0, hv, c * seg, seg);
        }
    }
    if (a->d_final_state) memcpy(s->G, a->d_final_state + so, KV * sizeof(float));
    else memset(s->G, 0, KV * sizeof(float));
    for (int64_t c = nseg - 1; c >= 0; c--) {
        const int64_t t0 = c * seg, L = len - t0 < seg ? len - t0 : seg;
        float *kept = NULL, *S0 = s->ckpt + (size_t)c * KV;
        bwd_next nx = {0};
        if (a->form == LA_FORM_CHUNK) {
            kept = s->kept + (size_t)c * kslot;
            if (c > 0)
                nx = (bwd_next){hv, t0 - seg, kept - kslot, S0 - KV, s->qn + (t0 - seg) * K,
                                s->kn + (t0 - seg) * K, NULL, NULL, 0};
        }
        if (fused_dqk(a)) {
            memset(s->dqn, 0, (size_t)(L * K) * sizeof(float));
            memset(s->dkn, 0, (size_t)(L * K) * sizeof(float));
            chunk_backward(a, s, S0, kept, tok0, hv, t0, L, s->qn + t0 * K, s->kn + t0 * K,
                           s->dqn, s->dkn, nx.kept ? &nx : NULL, c < nseg - 1);
            la__delta_scatter_dqk_group(a->dq, a->dk, tok0 + t0, L, a->H, hv, 1, K, a->l2norm,
                                        s->qn + t0 * K, s->kn + t0 * K, s->rq + t0, s->rk + t0,
                                        s->dqn, s->dkn);
            continue;
        }
        if (a->form == LA_FORM_CHUNK) {
            chunk_backward(a, s, S0, kept, tok0, hv, t0, L, s->qn + t0 * K, s->kn + t0 * K,
                           s->dqn + t0 * K, s->dkn + t0 * K, nx.kept ? &nx : NULL, c < nseg - 1);
            continue;
        }
        /* states[tau] = S_{t0 + tau - 1} (the state before token t0 + tau). */
        memcpy(s->states, s->ckpt + (size_t)c * KV, KV * sizeof(float));
        for (int64_t tau = 1; tau <= L; tau++) {
            float *St = s->states + (size_t)tau * KV;
            memcpy(St, St - KV, KV * sizeof(float));
            const int64_t t = t0 + tau - 1;
            const size_t vh = (size_t)((tok0 + t) * HV + hv);
            la__delta_token(K, V, 0, a->scale, St, NULL, s->qn + t * K, s->kn + t * K,
                            a->v + vh * (size_t)V, a->g ? a->g + vh : NULL, a->beta[vh], s->work);
        }
        for (int64_t tau = L; tau >= 1; tau--) {
            const int64_t t = t0 + tau - 1;
            token_backward(a, s, s->states + (size_t)(tau - 1) * KV, s->states + (size_t)tau * KV,
                           t, (size_t)((tok0 + t) * HV + hv));
        }
    }
    if (a->d_initial_state) memcpy(a->d_initial_state + so, s->G, KV * sizeof(float));
}

/* With la_saved and one value head per q head (fused_dqk), the group's
 * heads sweep together, chunk by chunk (last to first), head by head
 * inside a chunk, each carrying its own dS (s->G + h K V): the units that
 * run one after the other read and write the same tokens' rows, which
 * share pages (a token's heads are adjacent), so a chunk's page walks serve
 * the whole group, as in the forward. Each head's arithmetic is that of
 * head_backward (same bits). */
static void group_backward_saved(const la__delta_args *a, const bwd_scratch *s, int64_t n,
                                 int64_t tok0, int64_t len, int64_t h0, int64_t nh) {
    const int64_t K = a->K, V = a->V, HV = a->HV;
    const size_t KV = (size_t)K * (size_t)V;
    const int64_t seg = segment_len(a), nseg = (len + seg - 1) / seg;
    saved_view v;
    saved_layout(a, a->saved, &v);
    for (int64_t h = 0; h < nh; h++) {
        const size_t so = (size_t)(n * HV + h0 + h) * KV;
        if (a->d_final_state) memcpy(s->G + h * KV, a->d_final_state + so, KV * sizeof(float));
        else memset(s->G + h * KV, 0, KV * sizeof(float));
    }
    for (int64_t c = nseg - 1; c >= 0; c--) {
        const int64_t t0 = c * seg, L = len - t0 < seg ? len - t0 : seg;
        /* the group's q, k rows of this chunk, normalised: [nh][L][K] */
        la__delta_gather_qk_group(a->q, a->k, tok0 + t0, L, a->H, h0, nh, K, a->l2norm, s->qn,
                                  s->kn, s->rq, s->rk);
        for (int64_t h = 0; h < nh; h++) {
            const int64_t hv = h0 + h;
            const size_t slot = (size_t)(hv * v.NC + v.cbase[n] + c);
            const float *qc = s->qn + (size_t)(h * L * K), *kc = s->kn + (size_t)(h * L * K);
            bwd_scratch sh = *s;
            sh.G += (size_t)h * KV;
            /* the next unit: the next head's chunk c, or the first head's c - 1
             * (its q, k rows not gathered yet) */
            const int64_t nh1 = h + 1 < nh ? h + 1 : 0, nc = h + 1 < nh ? c : c - 1;
            bwd_next nx = {0};
            if (nc >= 0) {
                const size_t ns = (size_t)((h0 + nh1) * v.NC + v.cbase[n] + nc);
                const size_t qr = (size_t)(((tok0 + nc * seg) * a->H + h0) * K);
                nx = (bwd_next){h0 + nh1, nc * seg, v.kept + ns * v.kslot, v.ckpt + ns * KV,
                                nc == c ? qc + L * K : NULL, nc == c ? kc + L * K : NULL,
                                nc == c ? NULL : a->q + qr, nc == c ? NULL : a->k + qr, nh * K};
            }
            memset(s->dqn, 0, (size_t)(L * K) * sizeof(float));
            memset(s->dkn, 0, (size_t)(L * K) * sizeof(float));
            chunk_backward(a, &sh, v.ckpt + slot * KV, v.kept + slot * v.kslot, tok0, hv, t0, L,
                           qc, kc, s->dqn, s->dkn, nc >= 0 ? &nx : NULL, c < nseg - 1 || h > 0);
            la__delta_scatter_dqk_group(a->dq, a->dk, tok0 + t0, L, a->H, hv, 1, K, a->l2norm, qc,
                                        kc, s->rq + h * L, s->rk + h * L, s->dqn, s->dkn);
        }
    }
    if (a->d_initial_state)
        for (int64_t h = 0; h < nh; h++)
            memcpy(a->d_initial_state + (size_t)(n * HV + h0 + h) * KV, s->G + h * KV,
                   KV * sizeof(float));
}

/* Task (sequence n, query heads [hq0, hq0 + nq)): the group's q/k gather,
 * every value head of every q head in order, the group's dq/dk scatter
 * (fused_dqk: chunk by chunk inside the sweeps instead). */
static void backward_task(void *p, int64_t task, int tid) {
    const la__delta_args *a = p;
    const int64_t K = a->K, H = a->H, group = a->HV / a->H;
    const int64_t G = bwd_group(a), ng = (H + G - 1) / G;
    const int64_t n = task / ng, hq0 = task % ng * G, nq = H - hq0 < G ? H - hq0 : G;
    int64_t tok0, len;
    la__seq_bounds(&a->dims, n, &tok0, &len);
    bwd_scratch s;
    layout(a, len, la__scratch(a->ctx, tid), &s);
    const size_t hs = (size_t)(len * K);

    const int fused = fused_dqk(a);
    if (saved_sweep(a)) { /* gathers chunk by chunk */
        group_backward_saved(a, &s, n, tok0, len, hq0, nq);
        return;
    }
    la__delta_gather_qk_group(a->q, a->k, tok0, len, H, hq0, nq, K, a->l2norm, s.qn, s.kn, s.rq,
                              s.rk);
    if (!fused) {
        memset(s.dqn, 0, (size_t)nq * hs * sizeof(float));
        memset(s.dkn, 0, (size_t)nq * hs * sizeof(float));
    }
    for (int64_t h = 0; h < nq; h++) {
        bwd_scratch sh = s;
        sh.qn += (size_t)h * hs;
        sh.kn += (size_t)h * hs;
        sh.rq += h * len;
        sh.rk += h * len;
        if (!fused) {
            sh.dqn += (size_t)h * hs;
            sh.dkn += (size_t)h * hs;
        }
        for (int64_t hv = (hq0 + h) * group; hv < (hq0 + h + 1) * group; hv++)
            head_backward(a, &sh, n, tok0, len, hv);
    }
    if (!fused)
        la__delta_scatter_dqk_group(a->dq, a->dk, tok0, len, H, hq0, nq, K, a->l2norm, s.qn, s.kn,
                                s.rq, s.rk, s.dqn, s.dkn);
}

void la__delta_backward(const la__delta_args *a) {
    const int64_t G = bwd_group(a);
    la__delta_args b = *a;
    if (b.saved) {
        saved_view v;
        saved_layout(&b, NULL, &v);
        b.saved_chunks = v.NC;
    }
    la__parallel_for(a->ctx, a->N * ((a->H + G - 1) / G), backward_task, &b);
}
