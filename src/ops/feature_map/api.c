/* Performer attention: random features for q and k with one W, then
 * normalised kernel linear attention.
 *
 * Non-causal: the features of the whole tensor (key stabiliser per
 * sequence) through the public linear-attention op (identity feature map on
 * the M features). Causal: the stateful RNN view with a running key
 * maximum (feature_map.h, chunk.c, step.c).
 *
 * All user outputs are written only after every step that can fail has
 * succeeded: the non-causal features and their gradients live in buffers
 * allocated here, dv is produced into a buffer and copied at the end, and
 * the scratch is reserved before anything starts. */
#include "feature_map.h"
#include "../../cuda/cuda_backend.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct performer_setup {
    la_dims ld;                              /* dims of the linear attention: K = M */
    la_rf_opts rq, rk;                       /* query / key roles */
    size_t n_phi, n_qk, n_v, n_z, n_s, n_hd; /* features, q, v, z, S, [N,H] */
    la__rf_map map;                          /* the map (validated on q and on k) */
} performer_setup;

/* The state arguments of one call (forward or backward). */
typedef struct performer_state {
    float *fS, *fz, *fmu;       /* forward outputs */
    const float *S0, *z0, *mu0; /* inputs of both */
    float *dS0, *dz0;           /* backward outputs */
    const float *dST, *dzT;     /* backward inputs */
} performer_state;

/* The non-causal form has no state: any state argument is an error. */
static la_status check_no_state(const char *op, const performer_state *s) {
    if (s->fS || s->fz || s->fmu || s->S0 || s->z0 || s->mu0 || s->dS0 || s->dz0 || s->dST ||
        s->dzT)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: a state argument is given but attn.causal = 0 (Performer "
                         "states are for the causal, RNN form)",
                         op);
    return LA_OK;
}

static la_status setup(const char *op, la_ctx *ctx, const la_rf_opts *rf,
                       const la_linear_attn_opts *attn, const la_dims *dims, const float *q,
                       const float *k, const float *v, const float *W, int64_t m,
                       performer_setup *p) {
    la_status st;
    if ((st = la__check_ptr(op, "ctx", ctx))) return st;
    if ((st = la__check_ptr(op, "rf", rf))) return st;
    if ((st = la__check_ptr(op, "attn", attn))) return st;
    if ((st = la__check_dims(op, dims, 0))) return st;
    if ((st = la__check_ptr(op, "q", q))) return st;
    if ((st = la__check_ptr(op, "k", k))) return st;
    if ((st = la__check_ptr(op, "v", v))) return st;
    if ((st = la__check_ptr(op, "W", W))) return st;
    if (attn->feature_map != LA_FEATURE_IDENTITY)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: attn.feature_map = %d (must be LA_FEATURE_IDENTITY: the random "
                         "features are the feature map)",
                         op, (int)attn->feature_map);
    if (attn->normalize != 1)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: attn.normalize = %d (Performer attention is normalised: must be 1)",
                         op, attn->normalize);
    if (m < 1) return la__error(LA_ERR_INVALID_SIZE, "%s: m = %" PRId64 " (must be >= 1)", op, m);
    const int64_t M = la_rf_num_features(rf->kind, m);
    if (M < 1)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: rf.kind = %d (not a la_random_feature)", op,
                         (int)rf->kind);
    p->ld = *dims;
    p->ld.K = M;
    if ((st = la__check_dims(op, &p->ld, 0))) return st;
    const int64_t N = la__num_seqs(dims);
    if ((st = la__numel(op, "features", &p->n_phi, dims->B, dims->T, dims->H, M))) return st;
    if ((st = la__numel(op, "q", &p->n_qk, dims->B, dims->T, dims->H, dims->K))) return st;
    if ((st = la__numel(op, "v", &p->n_v, dims->B, dims->T, dims->H, dims->V))) return st;
    if ((st = la__numel(op, "state", &p->n_s, N, dims->H, M, dims->V))) return st;
    if ((st = la__numel(op, "norm", &p->n_z, N, dims->H, M, 1))) return st;
    if ((st = la__numel(op, "key_max", &p->n_hd, N, dims->H, 1, 1))) return st;
    if ((st = la__check_finite(op, "q", q, p->n_qk))) return st;
    if ((st = la__check_finite(op, "k", k, p->n_qk))) return st;
    if ((st = la__check_finite(op, "v", v, p->n_v))) return st;
    p->rq = *rf;
    p->rq.role = LA_RF_QUERY;
    p->rk = *rf;
    p->rk.role = LA_RF_KEY;
    /* options, W, and the overflow bound without a stabiliser, on q and k */
    if ((st = la__rf_map_check(op, &p->rq, dims, q, W, m, &p->map))) return st;
    if ((st = la__rf_map_check(op, &p->rk, dims, k, W, m, &p->map))) return st;
    return LA_OK;
}

/* ---- non-causal: whole-tensor features, then linear attention ---------- */

/* phi_q, phi_k from q, k (errors name the feature op and the argument). */
static la_status features(la_ctx *ctx, const performer_setup *p, const la_dims *dims, float *pq,
                          float *pk, const float *q, const float *k, const float *W, int64_t m) {
    la_status st = la_rf_forward(ctx, &p->rq, dims, pq, NULL, q, W, m);
    if (st) return st;
    return la_rf_forward(ctx, &p->rk, dims, pk, NULL, k, W, m);
}

static la_status noncausal_forward(const char *op, la_ctx *ctx, const performer_setup *p,
                                   const la_linear_attn_opts *attn, const la_dims *dims, float *o,
                                   const float *q, const float *k, const float *v, const float *W,
                                   int64_t m) {
    la_status st;
    float *pq = malloc(p->n_phi * sizeof *pq), *pk = malloc(p->n_phi * sizeof *pk);
    if (!pq || !pk) {
        st =
            la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory for 2 x %zu features", op, p->n_phi);
        goto done;
    }
    if ((st = features(ctx, p, dims, pq, pk, q, k, W, m))) goto done;
    la_linear_attn_opts lo = *attn;
    lo.saved = NULL; /* the performer ops keep no la_saved (their features are temporaries) */
    st = la_linear_attn_forward(ctx, &lo, &p->ld, o, NULL, NULL, pq, pk, v, NULL, NULL);
done:
    free(pq);
    free(pk);
    return st;
}

static la_status noncausal_backward(const char *op, la_ctx *ctx, const performer_setup *p,
                                    const la_linear_attn_opts *attn, const la_dims *dims, float *dq,
                                    float *dk, float *dv, const float *d_o, const float *q,
                                    const float *k, const float *v, const float *W, int64_t m) {
    la_status st;
    /* pq, pk, dpq, dpk [n_phi] each, dv_tmp [n_v] */
    if (p->n_phi > (SIZE_MAX / sizeof(float) - p->n_v) / 4)
        return la__error(LA_ERR_INVALID_SIZE, "%s: feature buffers overflow size_t", op);
    float *buf = malloc((4 * p->n_phi + p->n_v) * sizeof *buf);
    if (!buf)
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory for 4 x %zu features", op,
                         p->n_phi);
    float *pq = buf, *pk = buf + p->n_phi, *dpq = buf + 2 * p->n_phi, *dpk = buf + 3 * p->n_phi;
    float *dv_tmp = buf + 4 * p->n_phi;
    if ((st = la__rf_backward_reserve(ctx, op, dims->K, m))) goto done;
    if ((st = features(ctx, p, dims, pq, pk, q, k, W, m))) goto done;
    la_linear_attn_opts lo = *attn;
    lo.saved = NULL; /* as in noncausal_forward */
    if ((st = la_linear_attn_backward(ctx, &lo, &p->ld, dpq, dpk, dv_tmp, NULL, NULL, d_o, NULL,
                                      NULL, pq, pk, v, NULL, NULL)))
        goto done;
    /* The feature gradients must be finite for la_rf_backward to accept them;
     * check both before writing dq. */
    if ((st = la__check_finite(op, "gradient of the query features", dpq, p->n_phi))) goto done;
    if ((st = la__check_finite(op, "gradient of the key features", dpk, p->n_phi))) goto done;
    if ((st = la_rf_backward(ctx, &p->rq, dims, dq, dpq, q, W, m))) goto done;
    if ((st = la_rf_backward(ctx, &p->rk, dims, dk, dpk, k, W, m))) goto done;
    memcpy(dv, dv_tmp, p->n_v * sizeof *dv);
done:
    free(buf);
    return st;
}

/* ---- causal: the stateful form ------------------------------------------ */

/* The causal job's inputs, shared by the forward and the backward; the
 * caller adds its outputs. */
static void causal_job_init(la__pf_job *j, const float *q, const float *k, const float *v,
                            const performer_state *s) {
    memset(j, 0, sizeof *j);
    j->q = q;
    j->k = k;
    j->v = v;
    j->S0 = s->S0;
    j->z0 = s->z0;
    j->mu0 = s->mu0;
}

static la_status check_state(const char *op, const performer_setup *p, const performer_state *s) {
    la_status st;
    if ((s->S0 && (st = la__check_finite(op, "initial_state", s->S0, p->n_s))) ||
        (s->z0 && (st = la__check_finite(op, "initial_norm", s->z0, p->n_z))) ||
        (s->dST && (st = la__check_finite(op, "d_final_state", s->dST, p->n_s))) ||
        (s->dzT && (st = la__check_finite(op, "d_final_norm", s->dzT, p->n_z))))
        return st;
    if (!p->map.stabilized) return LA_OK; /* mu = 0: initial_key_max not read */
    if ((s->S0 || s->z0) && !s->mu0)
        return la__error(LA_ERR_NULL_POINTER,
                         "%s: initial_key_max is NULL but %s is given (the state is relative to "
                         "the running key maximum; pass it, or -INFINITY for an empty state)",
                         op, s->S0 ? "initial_state" : "initial_norm");
    if (s->mu0)
        for (size_t i = 0; i < p->n_hd; i++)
            if (isnan(s->mu0[i]) || s->mu0[i] == INFINITY)
                return la__error(LA_ERR_NON_FINITE,
                                 "%s: initial_key_max[%zu] = %g (must be finite or -INFINITY)", op,
                                 i, (double)s->mu0[i]);
    return LA_OK;
}

static la_status causal_run(const char *op, la_ctx *ctx, const performer_setup *p,
                            const la_linear_attn_opts *attn, const la_dims *dims, la__pf_job *j,
                            int backward) {
    if ((unsigned)attn->form > LA_FORM_CHUNK)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: attn.form = %d is not a known la_form (parallel 0, recurrent 1, "
                         "chunk 2)",
                         op, (int)attn->form);
    /* the options rule: 0 means the default; chunk_size read by CHUNK only */
    const float eps = attn->eps == 0 ? LA_LINEAR_ATTN_DEFAULT_EPS : attn->eps;
    if (!(eps > 0) || !isfinite(eps))
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: attn.eps = %g (must be finite and > 0; 0 means %g)", op,
                         (double)attn->eps, (double)LA_LINEAR_ATTN_DEFAULT_EPS);
    if (attn->form == LA_FORM_CHUNK && attn->chunk_size < 0)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: attn.chunk_size = %" PRId64 " (must be >= 0; 0 means 64)", op,
                         attn->chunk_size);
    const int64_t N = la__num_seqs(dims);
    int64_t Tmax = 1;
    for (int64_t n = 0; n < N; n++) {
        int64_t s, len;
        la__seq_bounds(dims, n, &s, &len);
        if (len > Tmax) Tmax = len;
    }
    j->ctx = ctx;
    j->kr = la__kernels_default();
    j->dims = dims;
    j->map = p->map;
    j->H = dims->H;
    j->d = dims->K;
    j->V = dims->V;
    j->M = p->map.M;
    j->Vx = dims->V + 1;
    j->eps = eps;
    /* PARALLEL: one chunk; RECURRENT (its backward): the default chunk */
    int64_t C = attn->form == LA_FORM_PARALLEL                    ? Tmax
                : attn->form == LA_FORM_CHUNK && attn->chunk_size ? attn->chunk_size
                                                                  : LA_DEFAULT_CHUNK_SIZE;
    j->chunk = C < Tmax ? C : Tmax;
    j->Tmax = Tmax;
    const int recurrent = !backward && attn->form == LA_FORM_RECURRENT;
    const size_t bytes =
        recurrent ? la__pf_recurrent_scratch(j) : la__pf_chunk_scratch(j, backward);
    if (bytes == SIZE_MAX)
        return la__error(LA_ERR_OUT_OF_MEMORY,
                         "%s: scratch for M = %" PRId64 ", V = %" PRId64 ", chunk %" PRId64
                         " overflows size_t",
                         op, j->M, j->V, j->chunk);
    la_status st = la__scratch_reserve(ctx, bytes);
    if (st) return la__error(st, "%s: cannot reserve %zu bytes of scratch per thread", op, bytes);
    la__task_fn fn = backward    ? la__pf_chunk_bwd_task
                     : recurrent ? la__pf_recurrent_fwd_task
                                 : la__pf_chunk_fwd_task;
    la__parallel_for(ctx, N * dims->H, fn, j);
    return LA_OK;
}

static la_status forward_impl(const char *op, la_ctx *ctx, const la_rf_opts *rf,
                              const la_linear_attn_opts *attn, const la_dims *dims, float *o,
                              const float *q, const float *k, const float *v, const float *W,
                              int64_t m, const performer_state *s) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported(op);
    performer_setup p;
    la_status st = setup(op, ctx, rf, attn, dims, q, k, v, W, m, &p);
    if (st) return st;
    if ((st = la__check_ptr(op, "o", o))) return st;
    if (!attn->causal) {
        if ((st = check_no_state(op, s))) return st;
        return noncausal_forward(op, ctx, &p, attn, dims, o, q, k, v, W, m);
    }
    if ((st = check_state(op, &p, s))) return st;
    la__pf_job j;
    causal_job_init(&j, q, k, v, s);
    j.o = o;
    j.fS = s->fS;
    j.fz = s->fz;
    j.fmu = s->fmu;
    return causal_run(op, ctx, &p, attn, dims, &j, 0);
}

static la_status backward_impl(const char *op, la_ctx *ctx, const la_rf_opts *rf,
                               const la_linear_attn_opts *attn, const la_dims *dims, float *dq,
                               float *dk, float *dv, const float *d_o, const float *q,
                               const float *k, const float *v, const float *W, int64_t m,
                               const performer_state *s) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported(op);
    performer_setup p;
    la_status st = setup(op, ctx, rf, attn, dims, q, k, v, W, m, &p);
    if (st) return st;
    if ((st = la__check_ptr(op, "dq", dq))) return st;
    if ((st = la__check_ptr(op, "dk", dk))) return st;
    if ((st = la__check_ptr(op, "dv", dv))) return st;
    if ((st = la__check_ptr(op, "d_o", d_o))) return st;
    if ((st = la__check_finite(op, "d_o", d_o, p.n_v))) return st;
    if (!attn->causal) {
        if ((st = check_no_state(op, s))) return st;
        return noncausal_backward(op, ctx, &p, attn, dims, dq, dk, dv, d_o, q, k, v, W, m);
    }
    if ((st = check_state(op, &p, s))) return st;
    la__pf_job j;
    causal_job_init(&j, q, k, v, s);
    j.d_o = d_o;
    j.dST = s->dST;
    j.dzT = s->dzT;
    j.dq = dq;
    j.dk = dk;
    j.dv = dv;
    j.dS0 = s->dS0;
    j.dz0 = s->dz0;
    return causal_run(op, ctx, &p, attn, dims, &j, 1);
}

la_status la_performer_attn_forward(la_ctx *ctx, const la_rf_opts *rf,
                                    const la_linear_attn_opts *attn, const la_dims *dims, float *o,
                                    const float *q, const float *k, const float *v, const float *W,
                                    int64_t m) {
    const performer_state s = {0};
    return forward_impl("la_performer_attn_forward", ctx, rf, attn, dims, o, q, k, v, W, m, &s);
}

la_status la_performer_attn_forward_state(la_ctx *ctx, const la_rf_opts *rf,
                                          const la_linear_attn_opts *attn, const la_dims *dims,
                                          float *o, float *final_state, float *final_norm,
                                          float *final_key_max, const float *q, const float *k,
                                          const float *v, const float *W, int64_t m,
                                          const float *initial_state, const float *initial_norm,
                                          const float *initial_key_max) {
    performer_state s = {0};
    s.fS = final_state;
    s.fz = final_norm;
    s.fmu = final_key_max;
    s.S0 = initial_state;
    s.z0 = initial_norm;
    s.mu0 = initial_key_max;
    return forward_impl("la_performer_attn_forward_state", ctx, rf, attn, dims, o, q, k, v, W, m,
                        &s);
}

la_status la_performer_attn_backward(la_ctx *ctx, const la_rf_opts *rf,
                                     const la_linear_attn_opts *attn, const la_dims *dims,
                                     float *dq, float *dk, float *dv, const float *d_o,
                                     const float *q, const float *k, const float *v, const float *W,
                                     int64_t m) {
    const performer_state s = {0};
    return backward_impl("la_performer_attn_backward", ctx, rf, attn, dims, dq, dk, dv, d_o, q, k,
                         v, W, m, &s);
}

la_status la_performer_attn_backward_state(
    la_ctx *ctx, const la_rf_opts *rf, const la_linear_attn_opts *attn, const la_dims *dims,
    float *dq, float *dk, float *dv, float *d_initial_state, float *d_initial_norm,
    const float *d_o, const float *d_final_state, const float *d_final_norm, const float *q,
    const float *k, const float *v, const float *W, int64_t m, const float *initial_state,
    const float *initial_norm, const float *initial_key_max) {
    performer_state s = {0};
    s.dS0 = d_initial_state;
    s.dz0 = d_initial_norm;
    s.dST = d_final_state;
    s.dzT = d_final_norm;
    s.S0 = initial_state;
    s.z0 = initial_norm;
    s.mu0 = initial_key_max;
    return backward_impl("la_performer_attn_backward_state", ctx, rf, attn, dims, dq, dk, dv, d_o,
                         q, k, v, W, m, &s);
}
