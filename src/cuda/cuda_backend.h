/* The CUDA backend's internal interface (C side).
 *
 * The public functions of each op family start with one line
 *     if (la_ctx_is_cuda(ctx)) return la__cuda_xxx(...);
 * and the la__cuda_* entry points below (src/cuda/entry.c) validate every
 * argument with the CPU's shared checks (shapes through la__check_shape,
 * options, NULL pointers, pointers that are not device memory), then hand a
 * la__cu_call to the launchers in the .cu files. Values in device memory
 * are not read (no finite / gate-range / beta-range checks on the GPU).
 * In a build without CUDA the launchers do not exist: a CUDA context cannot
 * be created there, so the entry points are never reached, and they return
 * LA_ERR_UNSUPPORTED if they are. */
#ifndef LINATTN_CUDA_BACKEND_H
#define LINATTN_CUDA_BACKEND_H

#ifdef __cplusplus
extern "C" {
#endif

#include "../core/internal.h"

/* Everything a launcher needs; pointers are device pointers except
 * cu_seqlens (host). Unused pointers are NULL. */
typedef struct la__cu_call {
    void *stream;
    int device;
    void **pipe; /* the context's pipeline resources (la__ctx_cuda_pipe; NULL: none) */
    const char *op;
    la_dtype dtype;
    int64_t B, T, H, HS, K, V, N;
    const int64_t *cu_seqlens;
    float scale;     /* multiplies phi(q) (or q) */
    int feature_map; /* la_feature_map; identity for the gated ops */
    int use_l2;      /* delta rules: l2-normalise q and k */
    int gated;       /* gated delta rule */
    int chunk_form;  /* delta rules: LA_FORM_CHUNK (else the recurrent kernels) */
    /* forward */
    void *o;
    float *final_state;
    const void *q, *k, *v;
    const float *g, *g_gamma, *beta, *s0;
    /* backward */
    void *dq, *dk, *dv;
    float *dg, *dg_gamma, *dbeta, *ds0;
    const void *d_o;
    const float *dsT;
    /* cuda-saved7: the delta rules' la_saved (chunk form). A forward with
     * saved set fills it for saved_key; a backward reads saved_dev (the
     * device block of a matching filled object; NULL: recompute). */
    la_saved *saved;
    const la__saved_key *saved_key;
    const void *saved_dev;
} la__cu_call;

/* Public-function twins (same arguments). */
la_status la__cuda_linear_attn_forward(la_ctx *ctx, const la_linear_attn_opts *opts,
                                       const la_dims *dims, float *o, float *final_state,
                                       float *final_norm, const float *q, const float *k,
                                       const float *v, const float *initial_state,
                                       const float *initial_norm);
la_status la__cuda_linear_attn_backward(la_ctx *ctx, const la_linear_attn_opts *opts,
                                        const la_dims *dims, float *dq, float *dk, float *dv,
                                        float *d_initial_state, float *d_initial_norm,
                                        const float *d_o, const float *d_final_state,
                                        const float *d_final_norm, const float *q, const float *k,
                                        const float *v, const float *initial_state,
                                        const float *initial_norm);
la_status la__cuda_simple_gla_forward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                      float *o, float *final_state, const float *q, const float *k,
                                      const float *v, const float *g, const float *g_gamma,
                                      const float *initial_state);
la_status la__cuda_simple_gla_backward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                       float *dq, float *dk, float *dv, float *dg, float *dg_gamma,
                                       float *d_initial_state, const float *d_o,
                                       const float *d_final_state, const float *q, const float *k,
                                       const float *v, const float *g, const float *g_gamma,
                                       const float *initial_state);
/* gated = 0: DeltaNet (g must be NULL), 1: Gated DeltaNet. */
la_status la__cuda_delta_forward(la_ctx *ctx, int gated, const la_gated_opts *opts,
                                 const la_dims *dims, float *o, float *final_state, const float *q,
                                 const float *k, const float *v, const float *g, const float *beta,
                                 const float *initial_state);
la_status la__cuda_delta_backward(la_ctx *ctx, int gated, const la_gated_opts *opts,
                                  const la_dims *dims, float *dq, float *dk, float *dv, float *dg,
                                  float *dbeta, float *d_initial_state, const float *d_o,
                                  const float *d_final_state, const float *q, const float *k,
                                  const float *v, const float *g, const float *beta,
                                  const float *initial_state);
/* la_state_step in a CUDA context (cfg resolved: HV, eps and scale set). */
la_status la__cuda_state_step(la_ctx *ctx, const la_decoder_config *cfg, la_dtype dtype,
                              float *state, float *norm, float *o, const float *q, const float *k,
                              const float *v, const float *g, const float *g_gamma,
                              const float *beta);

/* ---- launchers (the .cu files of src/cuda; CUDA builds only) ---------------------- */
la_status la__cu_scalar_forward(const la__cu_call *c);
la_status la__cu_scalar_backward(const la__cu_call *c);
la_status la__cu_delta_forward(const la__cu_call *c);
la_status la__cu_delta_backward(const la__cu_call *c);
la_status la__cu_delta_chunk_forward(const la__cu_call *c);
la_status la__cu_step(const la__cu_call *c, const la_decoder_config *cfg, float *state,
                      float *norm);
/* 1 if `stream` is being captured into a CUDA graph (or cannot be asked:
 * the legacy stream during another stream's global-mode capture). */
int la__cu_capturing(void *stream);
/* 1 if p is device (or managed) memory usable by the current device. */
int la__cu_is_device_ptr(const void *p);

/* Normalised kernel linear attention (src/cuda/linear_norm.cu): the
 * normaliser tensors beside a la__cu_call (device pointers; NULL = zeros /
 * not wanted) and the resolved eps. */
typedef struct la__cu_norm {
    const float *z0, *dzT;
    float *zT, *dz0;
    float eps;
} la__cu_norm;
la_status la__cu_linear_norm_forward(const la__cu_call *c, const la__cu_norm *z);
la_status la__cu_linear_norm_backward(const la__cu_call *c, const la__cu_norm *z);

#ifdef __cplusplus
}
#endif

#endif
