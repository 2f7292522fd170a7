/* Public entry points of the GLA family: la_retnet_decay, simple GLA and
 * GLA forward/backward. Each validates every argument before writing
 * anything, reserves per-thread scratch, then runs one task per
 * (sequence, head) in the recurrent or chunkwise form.
 *
 * Forms: LA_FORM_RECURRENT and LA_FORM_CHUNK. LA_FORM_PARALLEL is rejected
 * with LA_ERR_INVALID_ARGUMENT (as in fla, the gated ops have no quadratic
 * form; a chunk size >= T gives the same computation).
 * The chunk length is min(chunk_size, longest sequence); the recurrent
 * backward checkpoints the state every max(GLA_CKPT, sqrt(L)) tokens. */
#include "../options.h"
#include "gla.h"
#include "../../cuda/cuda_backend.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GLA_CKPT 64

la_status la_retnet_decay(float *g_gamma, int64_t H) {
    static const char *const op = "la_retnet_decay";
    la_status st = la__check_ptr(op, "g_gamma", g_gamma);
    if (st) return st;
    if (H < 1)
        return la__error(LA_ERR_INVALID_SIZE, "%s: H = %" PRId64 " (must be >= 1)", op, H);
    for (int64_t h = 0; h < H; h++) {
        /* 2^(-5-h) underflows to 0 for large h: log1p(-0) = 0, no decay. */
        const int e = h > 2000 ? 2005 : (int)h + 5;
        g_gamma[h] = (float)log1p(-ldexp(1.0, -e));
    }
    return LA_OK;
}

/* Dims, options, the tensors both directions share; fills the job. */
static la_status check_common(const char *op, la_ctx *ctx, const la_gated_opts *opts,
                              const la_dims *dims, int per_key, const float *q, const float *k,
                              const float *v, const float *g, const float *g_gamma,
                              const float *s0, gla_job *j, la_form *form) {
    la_status st;
    if ((st = la__check_ptr(op, "ctx", ctx)) || (st = la__check_ptr(op, "opts", opts)) ||
        (st = la__check_dims(op, dims, 0)))
        return st;
    int64_t C;
    if ((st = la__gated_form(op, opts, form, &C))) return st;
    float scale;
    if ((st = la__resolve_scale(op, opts->scale, dims->K, &scale))) return st;
    if ((st = la__check_ptr(op, "q", q)) || (st = la__check_ptr(op, "k", k)) ||
        (st = la__check_ptr(op, "v", v)))
        return st;
    if (per_key && (st = la__check_ptr(op, "g", g))) return st;
    const int64_t H = dims->H, K = dims->K, V = dims->V;
    const int64_t L = la__max_seq_len(dims);
    if (C == 0) C = LA_DEFAULT_CHUNK_SIZE; /* recurrent form: unused */
    if (C > L) C = L;
    *j = (gla_job){.d = dims, .H = H, .K = K, .V = V, .C = C, .per_key = per_key,
                   .scale = scale, .ctx = ctx, .kr = la__kernels_default(), .q = q,
                   .k = k, .v = v, .g = g,
                   .g_gamma = g_gamma, .s0 = s0};
    return LA_OK;
}

size_t la__gla_bwd_all_states_bytes = LA__GLA_BWD_ALL_STATES_BYTES;
size_t la__gla_stream_min_bytes = LA__GLA_STREAM_MIN_BYTES;

/* cpu-glasplit: simple GLA's chunk forward with one sequence split over
 * time when (sequences x heads) is small (split.c). */
LA_HIDDEN int la__gla_split_over_time(const gla_job *j);
LA_HIDDEN size_t la__gla_split_bytes(const gla_job *j);
LA_HIDDEN la_status la__gla_run_split(const char *op, const gla_job *j);

/* cpu-bwdsplit: the simple GLA and GLA chunk backward split over time (on
 * sequences x heads < 4 since cpu-split2; split_bwd.c). */
LA_HIDDEN int la__gla_split_bwd_over_time(const gla_job *j);
LA_HIDDEN size_t la__gla_split_bwd_bytes(const gla_job *j);
LA_HIDDEN la_status la__gla_run_split_bwd(const char *op, const gla_job *j);

/* cpu-bwdsplit: GLA's (per-key gates) chunk forward split over time
 * (split_gla.c). */
LA_HIDDEN int la__gla_split_gla_over_time(const gla_job *j);
LA_HIDDEN size_t la__gla_split_gla_bytes(const gla_job *j);
LA_HIDDEN la_status la__gla_run_split_gla(const char *op, const gla_job *j);

/* The inputs' values: finite q, k, v (and initial_state), log-gates g,
 * g_gamma <= 0. The forward always scans them; a backward given a filled,
 * matching la_saved does not (cpu-scan18): the forward that filled it
 * scanned these same tensors, which the caller keeps unchanged between the
 * two calls (include/linattn.h); q, k, v are 3 x 32 MiB at the issue-12
 * shape, ~1 ms each. */
static la_status check_inputs(const char *op, const gla_job *j) {
    la_status st;
    const la_dims *d = j->d;
    const size_t BTH = (size_t)d->B * (size_t)d->T * (size_t)j->H;
    /* cpu-glasplit: the scan shared over the threads for large tensors
     * (a serial 4-5 ms of a 60 ms forward at T = 65536, D = 128) */
    if ((st = la__check_finite_ctx(j->ctx, op, "q", j->q, BTH * (size_t)j->K)) ||
        (st = la__check_finite_ctx(j->ctx, op, "k", j->k, BTH * (size_t)j->K)) ||
        (st = la__check_finite_ctx(j->ctx, op, "v", j->v, BTH * (size_t)j->V)))
        return st;
    if (j->g && (st = la__check_log_gate(op, "g", j->g, j->per_key ? BTH * (size_t)j->K : BTH)))
        return st;
    if (j->g_gamma && (st = la__check_log_gate(op, "g_gamma", j->g_gamma, (size_t)j->H)))
        return st;
    if (j->s0 && (st = la__check_finite(op, "initial_state", j->s0,
                                        (size_t)la__num_seqs(d) * (size_t)j->H *
                                            (size_t)j->K * (size_t)j->V)))
        return st;
    return LA_OK;
}

static la_status reserve(const char *op, la_ctx *ctx, size_t bytes) {
    if (bytes == 0)
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: work space size overflows size_t", op);
    return la__scratch_reserve(ctx, bytes);
}

/* ---- cpu-sgsaved13: la_saved for simple GLA (CPU, chunk form); cpu-glsaved17:
 * GLA (per-key gates) too, family "gla" ----------------------------------
 * The forward writes every chunk's start state (the floats the backward's
 * state pass makes: the same update, chunk.c); the backward reads them
 * instead. Only the unsplit chunk form: the split forward's (split.c)
 * states differ from the unsplit backward's in their last bits at the
 * segment boundaries, and the split backward (split_bwd.c) recomputes its
 * own, so a split forward leaves the object empty. Bytes: cbase [N + 1]
 * int64 (chunks before sequence n), then H x cbase[N] states of K x V
 * floats (la__sgla_saved_slot). */
static size_t sgla_saved_layout(const gla_job *j, void *base, int64_t **cbase, float **states) {
    return la__saved_states_layout(j->d, j->C, j->H, (size_t)j->K * (size_t)j->V, base, cbase,
                                   states, NULL);
}

/* The call a la_saved records (la__saved_match compares every field). */
static la__saved_key sgla_saved_key(const gla_job *j, la_form form) {
    la__saved_key k;
    memset(&k, 0, sizeof k);
    k.family = j->per_key ? "gla" : "simple_gla";
    k.form = form;
    k.chunk = form == LA_FORM_CHUNK ? j->C : 0;
    k.scale = j->scale;
    k.dims = *j->d;
    const void *p[LA__SAVED_NPTR] = {j->q, j->k, j->v, j->g, j->g_gamma, j->s0};
    static const char *const names[LA__SAVED_NPTR] = {"q", "k", "v", "g", "g_gamma",
                                                      "initial_state"};
    for (int i = 0; i < LA__SAVED_NPTR; i++) k.ptr[i] = p[i], k.ptr_name[i] = names[i];
    return k;
}

/* Forward: makes the saved object hold this call's states (j->save, the
 * offsets written) when asked and the form keeps them. */
static la_status sgla_save_prepare(const char *op, la_saved *sv, gla_job *j, la_form form,
                                   int keeps) {
    if (!sv || !keeps) return LA_OK;
    const la__saved_key key = sgla_saved_key(j, form);
    int64_t *cbase;
    float *states;
    const la_status st = la__saved_prepare_states(op, sv, &key, j->d, j->C, j->H,
                                                  (size_t)j->K * (size_t)j->V, &cbase, &states,
                                                  NULL);
    if (st) return st;
    j->save = states;
    j->sv_cbase = cbase;
    return LA_OK;
}

static la_status gla_forward(const char *op, la_ctx *ctx, const la_gated_opts *opts,
                             const la_dims *dims, int per_key, float *o, float *final_state,
                             const float *q, const float *k, const float *v, const float *g,
                             const float *g_gamma, const float *initial_state) {
    gla_job j;
    la_form form;
    la_status st = check_common(op, ctx, opts, dims, per_key, q, k, v, g, g_gamma,
                                initial_state, &j, &form);
    la_saved *sv = opts ? opts->saved : NULL; /* simple GLA, GLA (cpu-glsaved17) */
    if (st || (st = la__saved_check(op, ctx, sv))) return st;
    la__saved_clear(sv); /* before anything can fail (internal.h) */
    if ((st = check_inputs(op, &j))) return st;
    if ((st = la__check_ptr(op, "o", o))) return st;
    const int chunk = form == LA_FORM_CHUNK;
    if (chunk && la__gla_split_over_time(&j)) {
        if ((st = reserve(op, ctx, la__gla_split_bytes(&j)))) return st;
        j.o = o;
        j.sT = final_state;
        return la__gla_run_split(op, &j); /* it saves nothing (above): sv stays empty */
    }
    if (chunk && la__gla_split_gla_over_time(&j)) {
        if ((st = reserve(op, ctx, la__gla_split_gla_bytes(&j)))) return st;
        j.o = o;
        j.sT = final_state;
        return la__gla_run_split_gla(op, &j); /* nor does GLA's (split_gla.c) */
    }
    if ((st = reserve(op, ctx, chunk ? la__gla_chunk_fwd_bytes(&j)
                                     : la__gla_recurrent_fwd_bytes(&j))))
        return st;
    if ((st = sgla_save_prepare(op, sv, &j, form, chunk))) return st;
    j.o = o;
    j.sT = final_state;
    j.fwd_heads = la__gla_fwd_heads(&j);
    const int64_t nfwd = chunk ? (dims->H + j.fwd_heads - 1) / j.fwd_heads : dims->H;
    la__parallel_for(ctx, la__num_seqs(dims) * nfwd,
                     chunk ? la__gla_chunk_fwd_task : la__gla_recurrent_fwd_task, &j);
    if (j.save) la__saved_commit(sv); /* the recurrent form saves nothing */
    return LA_OK;
}

static la_status gla_backward(const char *op, la_ctx *ctx, const la_gated_opts *opts,
                              const la_dims *dims, int per_key, float *dq, float *dk, float *dv,
                              float *dg, float *dg_gamma, float *d_initial_state,
                              const float *d_o, const float *d_final_state, const float *q,
                              const float *k, const float *v, const float *g,
                              const float *g_gamma, const float *initial_state) {
    gla_job j;
    la_form form;
    la_status st = check_common(op, ctx, opts, dims, per_key, q, k, v, g, g_gamma,
                                initial_state, &j, &form);
    if (st) return st;
    if ((st = la__check_ptr(op, "dq", dq)) || (st = la__check_ptr(op, "dk", dk)) ||
        (st = la__check_ptr(op, "dv", dv)) || (st = la__check_ptr(op, "d_o", d_o)))
        return st;
    if (g && (st = la__check_ptr(op, "dg", dg))) return st;
    if (!g && dg)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: dg is given but g is NULL (dg is the gradient of g)", op);
    const int64_t N = la__num_seqs(dims), H = dims->H;
    const size_t BTHV = (size_t)dims->B * (size_t)dims->T * (size_t)H * (size_t)dims->V;
    const size_t NHKV = (size_t)N * (size_t)H * (size_t)dims->K * (size_t)dims->V;
    const int chunk = form == LA_FORM_CHUNK;
    const int64_t L = la__max_seq_len(dims);
    if (chunk) {
        const int64_t nch = (L + j.C - 1) / j.C;
        j.group = (int64_t)ceil(sqrt((double)nch));
        if (j.group < 1) j.group = 1;
        /* cpu-gla3: every chunk's start state kept when they fit (no second
         * state pass; same results, the recomputation being exact) */
        if ((double)nch * (double)dims->K * (double)dims->V * sizeof(float) <=
            (double)la__gla_bwd_all_states_bytes)
            j.group = 1;
    } else {
        /* Checkpoint interval max(GLA_CKPT, sqrt(L)): O(sqrt(L) K V) memory for
         * long sequences. The result does not depend on it (recomputation
         * repeats the forward's arithmetic exactly). */
        int64_t c = (int64_t)ceil(sqrt((double)L));
        if (c < GLA_CKPT) c = GLA_CKPT;
        j.C = c < L ? c : L;
    }
    const int split = chunk && la__gla_split_bwd_over_time(&j);
    if (split) j.group = 1; /* the per-chunk pieces' layout */
    { /* cpu-sgsaved13, cpu-glsaved17: the forward's chunk states, when it saved them */
        const la__saved_key key = sgla_saved_key(&j, form);
        const void *data;
        if ((st = la__saved_check(op, ctx, opts->saved)) ||
            (st = la__saved_match(op, opts->saved, &key, &data)))
            return st;
        /* a split backward recomputes (a filled object came from an unsplit
         * forward, whose shape never splits the backward: a guard) */
        if (data && chunk && !split) {
            int64_t *cbase;
            float *states;
            sgla_saved_layout(&j, (void *)(uintptr_t)data, &cbase, &states);
            j.saved = states;
            j.sv_cbase = cbase;
            j.group = 1;
        }
        /* the inputs only without a filled object (check_inputs); the
         * backward's own d_o, d_final_state always */
        if ((!data && (st = check_inputs(op, &j))) ||
            (st = la__check_finite_ctx(ctx, op, "d_o", d_o, BTHV)) ||
            (d_final_state &&
             (st = la__check_finite(op, "d_final_state", d_final_state, NHKV))))
            return st;
    }
    /* cpu-sgla9: every state kept: heads grouped per task (cpu-glab15: GLA too) */
    const int64_t sgh = chunk && !split ? la__gla_bwd_heads(&j, L) : 1;
    if ((st = reserve(op, ctx, split     ? la__gla_split_bwd_bytes(&j)
                               : sgh > 1 ? la__gla_chunk_bwd_group_bytes(&j, L)
                               : chunk   ? la__gla_chunk_bwd_bytes(&j, L)
                                         : la__gla_recurrent_bwd_bytes(&j, L))))
        return st;
    double *part = NULL;
    if (dg_gamma) {
        part = malloc((size_t)N * (size_t)H * sizeof *part);
        if (!part)
            return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory for %" PRId64
                             " dg_gamma partial sums", op, N * H);
    }
    j.d_o = d_o;
    j.d_sT = d_final_state;
    j.dq = dq;
    j.dk = dk;
    j.dv = dv;
    j.dg = dg;
    j.ds0 = d_initial_state;
    j.dgamma_part = part;
    if (split) {
        if ((st = la__gla_run_split_bwd(op, &j))) {
            free(part);
            return st;
        }
    } else if (sgh > 1) {
        la__parallel_for(ctx, N * ((H + sgh - 1) / sgh), la__gla_chunk_bwd_group_task, &j);
    } else {
        la__parallel_for(ctx, N * H, chunk ? la__gla_chunk_bwd_task : la__gla_recurrent_bwd_task,
                         &j);
    }
    if (part) {
        /* Fixed order (sequence 0, 1, ...) whatever the thread count. */
        for (int64_t h = 0; h < H; h++) {
            double s = 0.0;
            for (int64_t n = 0; n < N; n++) s += part[n * H + h];
            dg_gamma[h] = (float)s;
        }
        free(part);
    }
    return LA_OK;
}

la_status la_simple_gla_forward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                float *o, float *final_state, const float *q, const float *k,
                                const float *v, const float *g, const float *g_gamma,
                                const float *initial_state) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_simple_gla_forward(ctx, opts, dims, o, final_state, q, k, v, g, g_gamma, initial_state);
    return gla_forward("la_simple_gla_forward", ctx, opts, dims, 0, o, final_state, q, k, v, g,
                       g_gamma, initial_state);
}

la_status la_simple_gla_backward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                 float *dq, float *dk, float *dv, float *dg, float *dg_gamma,
                                 float *d_initial_state, const float *d_o,
                                 const float *d_final_state, const float *q, const float *k,
                                 const float *v, const float *g, const float *g_gamma,
                                 const float *initial_state) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_simple_gla_backward(ctx, opts, dims, dq, dk, dv, dg, dg_gamma, d_initial_state, d_o, d_final_state, q, k, v, g, g_gamma, initial_state);
    return gla_backward("la_simple_gla_backward", ctx, opts, dims, 0, dq, dk, dv, dg, dg_gamma,
                        d_initial_state, d_o, d_final_state, q, k, v, g, g_gamma,
                        initial_state);
}

la_status la_gla_forward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims, float *o,
                         float *final_state, const float *q, const float *k, const float *v,
                         const float *g, const float *initial_state) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported("la_gla_forward");
    return gla_forward("la_gla_forward", ctx, opts, dims, 1, o, final_state, q, k, v, g, NULL,
                       initial_state);
}

la_status la_gla_backward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                          float *dq, float *dk, float *dv, float *dg, float *d_initial_state,
                          const float *d_o, const float *d_final_state, const float *q,
                          const float *k, const float *v, const float *g,
                          const float *initial_state) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported("la_gla_backward");
    return gla_backward("la_gla_backward", ctx, opts, dims, 1, dq, dk, dv, dg, NULL,
                        d_initial_state, d_o, d_final_state, q, k, v, g, NULL, initial_state);
}
