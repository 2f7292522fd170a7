/* Entry points of the CUDA backend: argument checks shared with the CPU
 * path (shapes, options, NULL pointers), plus a check that every tensor
 * pointer is device memory, then one launcher call. Nothing in device
 * memory is read here. */
#include "cuda_backend.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#define DEFAULT_CHUNK 64

#ifdef LINATTN_HAS_CUDA
#define LAUNCH(expr) return (expr)
#else
#define LAUNCH(expr)                                                                               \
    return la__error(LA_ERR_UNSUPPORTED, "%s: this build has no CUDA backend", c.op)
#endif

la_status la__cuda_unsupported(const char *op) {
    return la__error(LA_ERR_UNSUPPORTED,
                     "%s: not served by the CUDA backend yet (use a CPU "
                     "context)",
                     op);
}

#ifndef LINATTN_HAS_CUDA
void la__cuda_pipe_free(void *pipe) { (void)pipe; } /* never made without CUDA */
la_status la__cuda_init(const char *op, int device, void *stream) {
    (void)device, (void)stream;
    return la__error(LA_ERR_UNSUPPORTED,
                     "%s: this build of linattn has no CUDA backend (configure with "
                     "-DLINATTN_CUDA=ON where nvcc is installed)",
                     op);
}
#endif

typedef struct named_ptr {
    const char *name;
    const void *p;
} named_ptr;

/* NULL entries are skipped (optional tensors); others must be device memory. */
static la_status check_device_ptrs(const char *op, const named_ptr *ps, int n) {
#ifdef LINATTN_HAS_CUDA
    for (int i = 0; i < n; i++)
        if (ps[i].p && !la__cu_is_device_ptr(ps[i].p))
            return la__error(LA_ERR_INVALID_ARGUMENT,
                             "%s: %s = %p is not device memory (a CUDA context takes device "
                             "pointers)",
                             op, ps[i].name, ps[i].p);
#else
    (void)op, (void)ps, (void)n;
#endif
    return LA_OK;
}

static la_status common(la__cu_call *c, la_ctx *ctx, const char *op, const la_dims *dims,
                        int allow_hv, float scale_opt) {
    la_status st;
    if ((st = la__check_shape(op, dims, allow_hv)) || (st = la__check_dtype_known(op, dims)))
        return st;
    *c = (la__cu_call){0};
    c->op = op;
    c->stream = la__ctx_stream(ctx);
    c->device = la__ctx_device(ctx);
    c->pipe = la__ctx_cuda_pipe(ctx);
    c->dtype = dims->dtype;
    c->B = dims->B;
    c->T = dims->T;
    c->H = dims->H;
    c->HS = la__value_heads(dims);
    c->K = dims->K;
    c->V = dims->V;
    c->N = la__num_seqs(dims);
    c->cu_seqlens = dims->cu_seqlens;
    if (dims->K > 256 || dims->V > 256)
        return la__error(LA_ERR_UNSUPPORTED,
                         "%s: K = %" PRId64 ", V = %" PRId64 " (the CUDA kernels take K, V <= 256)",
                         op, dims->K, dims->V);
    return la__resolve_scale(op, scale_opt, dims->K, &c->scale);
}

static la_status gated_opts(const char *op, const la_gated_opts *opts) {
    la_status st = la__check_ptr(op, "opts", opts);
    if (st) return st;
    /* opts->saved (la_saved): the delta rules check and use it (cuda-saved7,
     * delta_saved_key below); simple GLA ignores it, as on the CPU */
    /* 0 (a zeroed struct, LA_FORM_PARALLEL) means the chunk form, as on the CPU */
    if (opts->form != LA_FORM_PARALLEL && opts->form != LA_FORM_RECURRENT &&
        opts->form != LA_FORM_CHUNK)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts.form = %d is not a known la_form (recurrent 1, chunk 2; 0 "
                         "means chunk)",
                         op, (int)opts->form);
    if (opts->chunk_size < 0)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts.chunk_size = %" PRId64 " (must be >= 0; 0 means %d)", op,
                         opts->chunk_size, DEFAULT_CHUNK);
    return LA_OK;
}

static la_status need(const char *op, const char *name, const void *p) {
    return la__check_ptr(op, name, p);
}

/* ---- kernel linear attention ---------------------------------------- */

/* Normalised attention: eps resolved as on the CPU (0 = the default; the
 * scale option is ignored there). Unnormalised: no normaliser tensor. */
static la_status linear_common(la__cu_call *c, la__cu_norm *z, la_ctx *ctx, const char *op,
                               const la_linear_attn_opts *opts, const la_dims *dims,
                               const void *norm_a, const void *norm_b) {
    la_status st = la__check_ptr(op, "opts", opts);
    if (st) return st;
    if ((unsigned)opts->feature_map > LA_FEATURE_RELU)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: opts.feature_map = %d is not known", op,
                         (int)opts->feature_map);
    if (opts->form != LA_FORM_PARALLEL && opts->form != LA_FORM_RECURRENT &&
        opts->form != LA_FORM_CHUNK)
        return la__error(LA_ERR_INVALID_ARGUMENT, "%s: opts.form = %d is not a known la_form", op,
                         (int)opts->form);
    if (opts->chunk_size < 0)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: opts.chunk_size = %" PRId64 " (must be >= 0)", op, opts->chunk_size);
    if (!opts->causal)
        return la__error(LA_ERR_UNSUPPORTED,
                         "%s: opts.causal = 0 is not served by the CUDA backend yet", op);
    *z = (la__cu_norm){0};
    z->eps = LA_LINEAR_ATTN_DEFAULT_EPS;
    if (opts->normalize && opts->eps != 0) {
        if (!(opts->eps > 0) || !isfinite(opts->eps))
            return la__error(LA_ERR_INVALID_ARGUMENT,
                             "%s: opts.eps = %g (must be finite and > 0; 0 means %g)", op,
                             (double)opts->eps, (double)LA_LINEAR_ATTN_DEFAULT_EPS);
        z->eps = opts->eps;
    }
    if (!opts->normalize && (norm_a || norm_b))
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "%s: a normaliser state given but opts.normalize = 0", op);
    if ((st = common(c, ctx, op, dims, 0, opts->normalize ? 0.0f : opts->scale))) return st;
    if (opts->normalize) c->scale = 1.0f;
    c->feature_map = (int)opts->feature_map;
    return LA_OK;
}

la_status la__cuda_linear_attn_forward(la_ctx *ctx, const la_linear_attn_opts *opts,
                                       const la_dims *dims, float *o, float *final_state,
                                       float *final_norm, const float *q, const float *k,
                                       const float *v, const float *initial_state,
                                       const float *initial_norm) {
    static const char *const op = "la_linear_attn_forward";
    la__cu_call c;
    la__cu_norm z;
    la_status st = linear_common(&c, &z, ctx, op, opts, dims, final_norm, initial_norm);
    if (st) return st;
    if ((st = need(op, "o", o)) || (st = need(op, "q", q)) || (st = need(op, "k", k)) ||
        (st = need(op, "v", v)))
        return st;
    const named_ptr ps[] = {{"o", o},
                            {"final_state", final_state},
                            {"q", q},
                            {"k", k},
                            {"v", v},
                            {"initial_state", initial_state},
                            {"final_norm", final_norm},
                            {"initial_norm", initial_norm}};
    if ((st = check_device_ptrs(op, ps, 8))) return st;
    c.o = o, c.final_state = final_state, c.q = q, c.k = k, c.v = v, c.s0 = initial_state;
    z.zT = final_norm, z.z0 = initial_norm;
    if (opts->normalize) LAUNCH(la__cu_linear_norm_forward(&c, &z));
    LAUNCH(la__cu_scalar_forward(&c));
}

la_status la__cuda_linear_attn_backward(la_ctx *ctx, const la_linear_attn_opts *opts,
                                        const la_dims *dims, float *dq, float *dk, float *dv,
                                        float *d_initial_state, float *d_initial_norm,
                                        const float *d_o, const float *d_final_state,
                                        const float *d_final_norm, const float *q, const float *k,
                                        const float *v, const float *initial_state,
                                        const float *initial_norm) {
    static const char *const op = "la_linear_attn_backward";
    la__cu_call c;
    la__cu_norm z;
    la_status st = linear_common(&c, &z, ctx, op, opts, dims, d_initial_norm,
                                 d_final_norm ? (const void *)d_final_norm : initial_norm);
    if (st) return st;
    if ((st = need(op, "dq", dq)) || (st = need(op, "dk", dk)) || (st = need(op, "dv", dv)) ||
        (st = need(op, "d_o", d_o)) || (st = need(op, "q", q)) || (st = need(op, "k", k)) ||
        (st = need(op, "v", v)))
        return st;
    const named_ptr ps[] = {{"dq", dq},
                            {"dk", dk},
                            {"dv", dv},
                            {"d_initial_state", d_initial_state},
                            {"d_o", d_o},
                            {"d_final_state", d_final_state},
                            {"q", q},
                            {"k", k},
                            {"v", v},
                            {"initial_state", initial_state},
                            {"d_initial_norm", d_initial_norm},
                            {"d_final_norm", d_final_norm},
                            {"initial_norm", initial_norm}};
    if ((st = check_device_ptrs(op, ps, 13))) return st;
    c.dq = dq, c.dk = dk, c.dv = dv, c.ds0 = d_initial_state, c.d_o = d_o;
    c.dsT = d_final_state, c.q = q, c.k = k, c.v = v, c.s0 = initial_state;
    z.dz0 = d_initial_norm, z.dzT = d_final_norm, z.z0 = initial_norm;
    if (opts->normalize) LAUNCH(la__cu_linear_norm_backward(&c, &z));
    LAUNCH(la__cu_scalar_backward(&c));
}

/* ---- simple GLA -------------------------------------------------------- */

la_status la__cuda_simple_gla_forward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                      float *o, float *final_state, const float *q, const float *k,
                                      const float *v, const float *g, const float *g_gamma,
                                      const float *initial_state) {
    static const char *const op = "la_simple_gla_forward";
    la__cu_call c;
    la_status st;
    if ((st = gated_opts(op, opts)) || (st = common(&c, ctx, op, dims, 0, opts->scale))) return st;
    if ((st = need(op, "o", o)) || (st = need(op, "q", q)) || (st = need(op, "k", k)) ||
        (st = need(op, "v", v)))
        return st;
    const named_ptr ps[] = {{"o", o},
                            {"final_state", final_state},
                            {"q", q},
                            {"k", k},
                            {"v", v},
                            {"g", g},
                            {"g_gamma", g_gamma},
                            {"initial_state", initial_state}};
    if ((st = check_device_ptrs(op, ps, 8))) return st;
    c.o = o, c.final_state = final_state, c.q = q, c.k = k, c.v = v, c.g = g;
    c.g_gamma = g_gamma, c.s0 = initial_state;
    LAUNCH(la__cu_scalar_forward(&c));
}

la_status la__cuda_simple_gla_backward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                       float *dq, float *dk, float *dv, float *dg, float *dg_gamma,
                                       float *d_initial_state, const float *d_o,
                                       const float *d_final_state, const float *q, const float *k,
                                       const float *v, const float *g, const float *g_gamma,
                                       const float *initial_state) {
    static const char *const op = "la_simple_gla_backward";
    la__cu_call c;
    la_status st;
    if ((st = gated_opts(op, opts)) || (st = common(&c, ctx, op, dims, 0, opts->scale))) return st;
    if ((st = need(op, "dq", dq)) || (st = need(op, "dk", dk)) || (st = need(op, "dv", dv)) ||
        (st = need(op, "d_o", d_o)) || (st = need(op, "q", q)) || (st = need(op, "k", k)) ||
        (st = need(op, "v", v)))
        return st;
    if (g && !dg) return la__error(LA_ERR_NULL_POINTER, "%s: dg is NULL but g is given", op);
    if (dg && !g) return la__error(LA_ERR_INVALID_ARGUMENT, "%s: dg given but g is NULL", op);
    const named_ptr ps[] = {{"dq", dq},
                            {"dk", dk},
                            {"dv", dv},
                            {"dg", dg},
                            {"dg_gamma", dg_gamma},
                            {"d_initial_state", d_initial_state},
                            {"d_o", d_o},
                            {"d_final_state", d_final_state},
                            {"q", q},
                            {"k", k},
                            {"v", v},
                            {"g", g},
                            {"g_gamma", g_gamma},
                            {"initial_state", initial_state}};
    if ((st = check_device_ptrs(op, ps, 14))) return st;
    c.dq = dq, c.dk = dk, c.dv = dv, c.dg = dg, c.dg_gamma = dg_gamma, c.ds0 = d_initial_state;
    c.d_o = d_o, c.dsT = d_final_state, c.q = q, c.k = k, c.v = v, c.g = g, c.g_gamma = g_gamma;
    c.s0 = initial_state;
    LAUNCH(la__cu_scalar_backward(&c));
}

/* ---- delta rules -------------------------------------------------------- */

/* cuda-saved7: the call a la_saved records, as the CPU's saved_key
 * (src/ops/delta_rule/api.c): the chunk length used is LA_CU_C = 64 (the
 * CUDA chunk form's, whatever opts.chunk_size says), 0 in the recurrent
 * form; scale resolved. */
static la__saved_key delta_saved_key(int gated, const la__cu_call *c, const la_dims *dims) {
    return la__saved_delta_key(gated ? "gated_delta_rule" : "delta_rule",
                               c->chunk_form ? LA_FORM_CHUNK : LA_FORM_RECURRENT, 64, c->scale,
                               c->use_l2, dims, c->q, c->k, c->v, c->g, c->beta, c->s0);
}

la_status la__cuda_delta_forward(la_ctx *ctx, int gated, const la_gated_opts *opts,
                                 const la_dims *dims, float *o, float *final_state, const float *q,
                                 const float *k, const float *v, const float *g, const float *beta,
                                 const float *initial_state) {
    const char *op = gated ? "la_gated_delta_rule_forward" : "la_delta_rule_forward";
    la__cu_call c;
    la_status st;
    if ((st = gated_opts(op, opts)) || (st = la__saved_check(op, ctx, opts->saved)) ||
        (st = common(&c, ctx, op, dims, gated, opts->scale)))
        return st;
    if ((st = need(op, "o", o)) || (st = need(op, "q", q)) || (st = need(op, "k", k)) ||
        (st = need(op, "v", v)) || (st = need(op, "beta", beta)) ||
        (gated && (st = need(op, "g", g))))
        return st;
    const named_ptr ps[] = {
        {"o", o},       {"final_state", final_state},    {"q", q}, {"k", k}, {"v", v}, {"g", g},
        {"beta", beta}, {"initial_state", initial_state}};
    if ((st = check_device_ptrs(op, ps, 8))) return st;
    c.gated = gated, c.use_l2 = opts->use_qk_l2norm != 0;
    c.o = o, c.final_state = final_state, c.q = q, c.k = k, c.v = v, c.g = gated ? g : NULL;
    c.beta = beta, c.s0 = initial_state;
    c.chunk_form = opts->form != LA_FORM_RECURRENT;
    /* cuda-saved7: the chunk form fills opts->saved; the recurrent form
     * saves nothing and leaves it empty (as on the CPU) */
    const la__saved_key key = delta_saved_key(gated, &c, dims);
    if (c.chunk_form) c.saved = opts->saved, c.saved_key = &key;
#ifdef LINATTN_HAS_CUDA
    if (c.chunk_form) return la__cu_delta_chunk_forward(&c);
    if ((st = la__cu_delta_forward(&c))) return st;
    la__saved_clear(opts->saved);
    return LA_OK;
#else
    LAUNCH(LA_OK);
#endif
}

la_status la__cuda_delta_backward(la_ctx *ctx, int gated, const la_gated_opts *opts,
                                  const la_dims *dims, float *dq, float *dk, float *dv, float *dg,
                                  float *dbeta, float *d_initial_state, const float *d_o,
                                  const float *d_final_state, const float *q, const float *k,
                                  const float *v, const float *g, const float *beta,
                                  const float *initial_state) {
    const char *op = gated ? "la_gated_delta_rule_backward" : "la_delta_rule_backward";
    la__cu_call c;
    la_status st;
    if ((st = gated_opts(op, opts)) || (st = la__saved_check(op, ctx, opts->saved)) ||
        (st = common(&c, ctx, op, dims, gated, opts->scale)))
        return st;
    if ((st = need(op, "dq", dq)) || (st = need(op, "dk", dk)) || (st = need(op, "dv", dv)) ||
        (st = need(op, "dbeta", dbeta)) || (st = need(op, "d_o", d_o)) || (st = need(op, "q", q)) ||
        (st = need(op, "k", k)) || (st = need(op, "v", v)) || (st = need(op, "beta", beta)) ||
        (gated && ((st = need(op, "g", g)) || (st = need(op, "dg", dg)))))
        return st;
    const named_ptr ps[] = {{"dq", dq},       {"dk", dk},
                            {"dv", dv},       {"dg", dg},
                            {"dbeta", dbeta}, {"d_initial_state", d_initial_state},
                            {"d_o", d_o},     {"d_final_state", d_final_state},
                            {"q", q},         {"k", k},
                            {"v", v},         {"g", g},
                            {"beta", beta},   {"initial_state", initial_state}};
    if ((st = check_device_ptrs(op, ps, 14))) return st;
    c.gated = gated, c.use_l2 = opts->use_qk_l2norm != 0;
    c.dq = dq, c.dk = dk, c.dv = dv, c.dg = gated ? dg : NULL, c.dbeta = dbeta;
    c.ds0 = d_initial_state, c.d_o = d_o, c.dsT = d_final_state;
    c.q = q, c.k = k, c.v = v, c.g = gated ? g : NULL, c.beta = beta, c.s0 = initial_state;
    c.chunk_form = opts->form != LA_FORM_RECURRENT;
    /* cuda-saved7: a filled opts->saved of this very call gives the
     * forward's products (else an error naming what differs) */
    const la__saved_key key = delta_saved_key(gated, &c, dims);
    if ((st = la__saved_match_dev(op, opts->saved, &key, &c.saved_dev))) return st;
    LAUNCH(la__cu_delta_backward(&c));
}

/* ---- decoding step on caller-owned device states ------------------------ */

la_status la__cuda_state_step(la_ctx *ctx, const la_decoder_config *cfg, la_dtype dtype,
                              float *state, float *norm, float *o, const float *q, const float *k,
                              const float *v, const float *g, const float *g_gamma,
                              const float *beta) {
    static const char *const op = "la_state_step";
    la__cu_call c = {0};
    c.op = op;
    c.stream = la__ctx_stream(ctx);
    c.device = la__ctx_device(ctx);
    c.dtype = dtype;
    c.N = cfg->N, c.H = cfg->H, c.HS = cfg->HV, c.K = cfg->K, c.V = cfg->V;
    c.B = cfg->N, c.T = 1;
    c.scale = cfg->scale;
    c.feature_map = (int)cfg->feature_map;
    c.use_l2 = cfg->use_qk_l2norm != 0;
    c.gated = cfg->op == LA_OP_GATED_DELTA_RULE;
    if (cfg->K > 256 || cfg->V > 1024)
        return la__error(LA_ERR_UNSUPPORTED,
                         "%s: K = %" PRId64 " (the CUDA step takes K <= 256,"
                         " V <= 1024)",
                         op, cfg->K);
    const named_ptr ps[] = {{"state", state}, {"norm", norm}, {"o", o}, {"q", q},
                            {"k", k},         {"v", v},       {"g", g}, {"g_gamma", g_gamma},
                            {"beta", beta}};
    la_status st = check_device_ptrs(op, ps, 9);
    if (st) return st;
    c.o = o, c.q = q, c.k = k, c.v = v, c.g = g, c.g_gamma = g_gamma, c.beta = beta;
    LAUNCH(la__cu_step(&c, cfg, state, norm));
}
