/*
 * linattn.h — the one public header of linattn, a C11 library for the
 * linear-attention family (kernel / feature-map attention, random-feature
 * attention, gated and delta-rule linear attention) beside exact softmax
 * attention, forward and backward, in parallel, recurrent and chunkwise forms.
 *
 * What every op computes is fixed by MATH.md (shipped as docs/MATH.md).
 *
 * Conventions (they follow the flash-linear-attention library, "fla"):
 *   B  batch size                     T  time steps (tokens)
 *   H  q/k heads                      HV value heads (Gated DeltaNet only)
 *   K  q/k head dimension             V  value head dimension
 *   N  number of sequences: B, or n_seqs when cu_seqlens is given
 *
 *   q, k        [B, T, H, K]  contiguous row-major float32
 *   v, o        [B, T, H, V]  (HV instead of H where value heads differ)
 *   state S     [N, H, K, V]  float32
 *   normaliser z [N, H, K]    float32 (normalised kernel attention only)
 *
 * Variable-length batches: pass cu_seqlens (int64, n_seqs + 1 offsets,
 * starting at 0, nondecreasing, ending at T) with B == 1; sequence n
 * occupies tokens cu_seqlens[n] .. cu_seqlens[n+1]-1 and uses state slot n.
 * A zero-length sequence (equal offsets, e.g. [0, 0, 16]) is legal: no
 * token is written for it, its final state equals its initial state (zeros
 * if none), and its state gradient d_initial_state equals d_final_state
 * (zeros if none).
 *
 * Options (every *_opts struct and la_decoder_config), one rule:
 *  - A zero-initialised struct is valid. A numeric option at 0 means its
 *    default: scale K^-1/2, eps LA_LINEAR_ATTN_DEFAULT_EPS, chunk_size and
 *    block_size LA_DEFAULT_CHUNK_SIZE. A flag or enum at 0 takes its zero
 *    value, so causal = 0 (non-causal) is the default of softmax and
 *    linear attention alike; the gated and delta-rule ops, which have no
 *    parallel form, read form = 0 (LA_FORM_PARALLEL) as their default
 *    LA_FORM_CHUNK.
 *  - *_opts_default() returns the same (its numeric fields hold 0 or the
 *    default value they stand for), except where its comment lists a
 *    recommended setting
 *    (linear attention: elu1 features, normalised, chunk form when causal
 *    is set; random features: stabilised).
 *  - An option that has no effect in the chosen configuration is ignored
 *    whatever its value, and not validated (form and chunk_size without
 *    causal, chunk_size outside the chunk form, block_size in the textbook
 *    form, eps without normalize, scale with it, the decoder fields of other
 *    ops): an options struct is a configuration that can be reused across
 *    calls. A tensor pointer is different: one the call would neither read
 *    nor write (final_norm with normalize = 0, g for an op without gates) is
 *    an error naming it, so a caller never believes something was computed.
 *
 * Errors: every function that can fail returns la_status. On failure nothing
 * the caller passed is written, and la_last_error() returns a sentence (per
 * thread) that names the argument and the value that was wrong. The library
 * never prints, aborts or exits.
 *
 * Finite-input policy: inputs that enter arithmetic (q, k, v, gates, beta,
 * states, upstream gradients) must be finite; a NaN or Inf is reported as
 * LA_ERR_NON_FINITE naming the tensor and the first bad index. Outputs are
 * written with '=' (never accumulated), gradients too.
 *
 * Threads: a la_ctx owns a thread pool and scratch memory. Work is split
 * over independent (sequence, head) units, so results are bitwise identical
 * for any thread count. One call at a time per context.
 */
#ifndef LINATTN_H
#define LINATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(LINATTN_SHARED_BUILD)
#define LA_API __declspec(dllexport)
#elif defined(__GNUC__)
#define LA_API __attribute__((visibility("default")))
#else
#define LA_API
#endif

#define LINATTN_VERSION_MAJOR 0
#define LINATTN_VERSION_MINOR 1
#define LINATTN_VERSION_PATCH 0
#define LINATTN_VERSION_STRING "0.1.0"

LA_API const char *la_version(void);

/* ------------------------------------------------------------------ */
/* Status and errors                                                   */
/* ------------------------------------------------------------------ */

/* Enums only grow at the end; values are stable. */
typedef enum la_status {
    LA_OK = 0,
    LA_ERR_NULL_POINTER = 1,    /* a required pointer was NULL */
    LA_ERR_INVALID_SIZE = 2,    /* size zero/negative, or a product overflows */
    LA_ERR_SHAPE_MISMATCH = 3,  /* sizes inconsistent with each other */
    LA_ERR_INVALID_ARGUMENT = 4,/* unknown enum value, option out of range */
    LA_ERR_NON_FINITE = 5,      /* NaN or Inf in an input */
    LA_ERR_BAD_SEQLENS = 6,     /* cu_seqlens malformed */
    LA_ERR_OUT_OF_MEMORY = 7,
    LA_ERR_UNSUPPORTED = 8,     /* valid request this build cannot serve */
    LA_ERR_IO = 9,              /* file could not be read/written/parsed */
    LA_ERR_INTERNAL = 10
} la_status;

/* Short constant name of a status ("LA_ERR_SHAPE_MISMATCH"); never NULL. */
LA_API const char *la_status_string(la_status status);

/* The message of the last failure on this thread ("" if none). The pointer
 * stays valid until the next failing call on the same thread. */
LA_API const char *la_last_error(void);

/* ------------------------------------------------------------------ */
/* Context: thread pool and scratch memory                             */
/* ------------------------------------------------------------------ */

typedef struct la_ctx la_ctx;

/* n_threads >= 1 worker threads (the calling thread counts as one);
 * n_threads == 0 picks the number of online CPUs. */
LA_API la_status la_ctx_create(la_ctx **out, int n_threads);
LA_API void la_ctx_destroy(la_ctx *ctx); /* NULL is a no-op */
LA_API int la_ctx_threads(const la_ctx *ctx);

/* CUDA contexts. la_ctx_create_cuda makes a context bound to GPU `device`
 * and to `stream` (a cudaStream_t; NULL = the legacy default stream). In a
 * CUDA context every tensor pointer passed to an op (q, k, v, o, gates,
 * beta, states, gradients) is a DEVICE pointer, while la_dims and its
 * cu_seqlens stay in host memory (the offsets are validated on the host and
 * reach the device as kernel parameters; the array is not read after the
 * call returns). Calls only enqueue work on the stream and return; they
 * never synchronise the device (read results after a
 * cudaStreamSynchronize or an event), and every one can be captured into a
 * CUDA graph on that stream (README "CUDA graphs": what the graph fixes,
 * la_saved's block). A CUDA error becomes LA_ERR_INTERNAL
 * (or LA_ERR_OUT_OF_MEMORY) with the CUDA error string in la_last_error().
 * Shapes, options and pointers are checked as on the CPU; values in device
 * memory are NOT read, so the finite-input, gate-range and beta-range
 * checks of the CPU path do not run (the caller owns them). Ops and dtypes
 * served are listed in README ("CUDA backend"); the others return
 * LA_ERR_UNSUPPORTED. In a build without CUDA (LINATTN_CUDA=OFF, or no
 * nvcc) la_ctx_create_cuda returns LA_ERR_UNSUPPORTED. */
LA_API la_status la_ctx_create_cuda(la_ctx **out, int device, void *stream);
/* 1 for a context made by la_ctx_create_cuda, 0 otherwise (NULL too). */
LA_API int la_ctx_is_cuda(const la_ctx *ctx);

/* ------------------------------------------------------------------ */
/* Deterministic random numbers (explicit seed, same stream everywhere) */
/* ------------------------------------------------------------------ */

typedef struct la_rng {
    uint64_t s[4];
    double spare;   /* second normal of the last pair */
    int has_spare;
} la_rng;

LA_API void la_rng_seed(la_rng *rng, uint64_t seed);
LA_API uint64_t la_rng_u64(la_rng *rng);
LA_API double la_rng_uniform(la_rng *rng); /* in [0, 1) */
/* Standard normal. Built from +,-,*,/ and sqrt with our own log/cos, so the
 * stream is bit-identical on every IEEE-754 machine. */
LA_API double la_rng_normal(la_rng *rng);

/* ------------------------------------------------------------------ */
/* Shapes shared by every op                                           */
/* ------------------------------------------------------------------ */

/* Element type of q, k, v, o and their gradients (dq, dk, dv, d_o).
 * States, normalisers, gates (g, g_gamma), beta and their gradients are
 * always float32. The CPU backend serves LA_DTYPE_F32 only (others:
 * LA_ERR_UNSUPPORTED); a CUDA context serves all three (pointers keep the
 * float * type of the prototypes: pass the 16-bit buffers cast). */
typedef enum la_dtype {
    LA_DTYPE_F32 = 0,
    LA_DTYPE_BF16 = 1, /* bfloat16 */
    LA_DTYPE_F16 = 2   /* IEEE half */
} la_dtype;

typedef struct la_dims {
    int64_t B, T, H, K, V;
    int64_t HV;                /* value heads; 0 means HV = H */
    const int64_t *cu_seqlens; /* NULL, or [n_seqs + 1]; requires B == 1 */
    int64_t n_seqs;            /* entries of cu_seqlens minus one */
    la_dtype dtype;            /* of q/k/v/o; zero-initialised = float32 */
} la_dims;

/* The chunk length of LA_FORM_CHUNK that chunk_size = 0 selects, in every
 * op (and the key/query block of streaming softmax, block_size = 0). */
#define LA_DEFAULT_CHUNK_SIZE 64

/* Forms of the causal ops. */
typedef enum la_form {
    LA_FORM_PARALLEL = 0,  /* masked quadratic: O(T^2) per head */
    LA_FORM_RECURRENT = 1, /* token by token (prefix sums / RNN view) */
    LA_FORM_CHUNK = 2      /* chunkwise: intra-chunk quadratic + state passing */
} la_form;

/* ------------------------------------------------------------------ */
/* Softmax attention (the exact baseline)                              */
/* ------------------------------------------------------------------ */

typedef enum la_softmax_form {
    LA_SOFTMAX_TEXTBOOK = 0,  /* materialises the T x T score matrix per head */
    LA_SOFTMAX_STREAMING = 1  /* online softmax over key blocks, O(T*D) memory */
} la_softmax_form;

typedef struct la_softmax_opts {
    int causal;               /* 1: query t sees keys j <= t (default 0) */
    la_softmax_form form;     /* default LA_SOFTMAX_TEXTBOOK */
    float scale;              /* 0 means K^-1/2 */
    int64_t block_size;       /* key/query block of the streaming form;
                                 0 means LA_DEFAULT_CHUNK_SIZE */
    const int64_t *kv_lens;   /* NULL, or [B]: keys j >= kv_lens[b] are padding;
                                 1 <= kv_lens[b] <= T. Not with cu_seqlens. */
} la_softmax_opts;

/* Non-causal, textbook, scale 0, block 0, no kv_lens: the zeroed struct. */
LA_API la_softmax_opts la_softmax_opts_default(void);

/* o   [B,T,H,V]   out
 * lse [B,T,H]     out, optional (NULL): natural-log log-sum-exp of the
 *                 scaled scores over the keys the query sees
 * q,k [B,T,H,K]   v [B,T,H,V]
 * cu_seqlens in dims: attention stays inside each sequence.
 * kv_lens masks keys only: padded query rows are still computed (they attend
 * to the valid keys) and their d_o counts in the backward; padding keys get
 * dk = dv = 0. Scores beyond the float range saturate at +-FLT_MAX rather
 * than turning into Inf. Textbook form: dot products and accumulators in
 * double. Streaming form: score and P.V tiles in float32 on the SIMD
 * kernels, row sums and output accumulators in double across key blocks. */
LA_API la_status la_softmax_attn_forward(la_ctx *ctx, const la_softmax_opts *opts,
                                         const la_dims *dims, float *o, float *lse,
                                         const float *q, const float *k, const float *v);

/* dq,dk [B,T,H,K]  dv [B,T,H,V]  out (all required)
 * d_o   [B,T,H,V]  in; q, k, v as in the forward. Recomputes what it needs. */
LA_API la_status la_softmax_attn_backward(la_ctx *ctx, const la_softmax_opts *opts,
                                          const la_dims *dims, float *dq, float *dk,
                                          float *dv, const float *d_o, const float *q,
                                          const float *k, const float *v);

/* ------------------------------------------------------------------ */
/* Kernel (feature-map) linear attention                               */
/* ------------------------------------------------------------------ */

typedef enum la_feature_map {
    LA_FEATURE_IDENTITY = 0, /* phi(x) = x */
    LA_FEATURE_ELU1 = 1,     /* phi(x) = elu(x) + 1  (Katharopoulos et al.) */
    LA_FEATURE_RELU = 2      /* phi(x) = max(x, 0) */
} la_feature_map;

#define LA_LINEAR_ATTN_DEFAULT_EPS 1e-6f /* fast-transformers' epsilon */

typedef struct la_linear_attn_opts {
    la_feature_map feature_map; /* applied to q and k (M = K features) */
    int causal;                 /* 0 (default): kernel trick over the whole
                                   sequence; 1: causal */
    la_form form;               /* causal only: parallel, recurrent or chunk */
    int normalize;              /* 1: o = phi(q)S / (phi(q).z + eps) */
    float eps;                  /* normalize only; 0 means
                                   LA_LINEAR_ATTN_DEFAULT_EPS */
    float scale;                /* normalize == 0 only: multiplies phi(q);
                                   0 means K^-1/2 */
    int64_t chunk_size;         /* causal LA_FORM_CHUNK only; 0 means 64 */
    struct la_saved *saved;     /* NULL (default): none. Causal chunk form on
                                   a CPU context: the forward keeps every
                                   chunk's start state in it (H K (V+1) floats
                                   a chunk), the backward reads them, same
                                   bits; see "Saved for backward". Other forms,
                                   and one sequence split over time, leave it
                                   empty; a CUDA context ignores it. */
} la_linear_attn_opts;

/* Recommended: elu1 features, normalize = 1, form LA_FORM_CHUNK (used once
 * causal is set), eps LA_LINEAR_ATTN_DEFAULT_EPS, scale 0, chunk_size 0;
 * causal = 0 as every op's default (set causal = 1 for the causal op). */
LA_API la_linear_attn_opts la_linear_attn_opts_default(void);

/* o             [B,T,H,V] out
 * final_state   [N,H,K,V] out, optional: S after the last token
 * final_norm    [N,H,K]   out, optional (normalize only): z after the last token
 * q,k [B,T,H,K], v [B,T,H,V]
 * initial_state [N,H,K,V] in, optional (NULL = zeros)
 * initial_norm  [N,H,K]   in, optional (normalize only; NULL = zeros)
 * Non-causal: every query of a sequence sees S0 + sum over all its tokens,
 * and the final state is that sum. final_state / final_norm may be the same
 * buffers as initial_state / initial_norm (a state carried in place).
 * The denominator is not guarded: the op computes exactly
 * phi(q)S / (phi(q).z + eps). With elu1 and relu (non-negative features, and
 * a non-negative initial_norm) it is >= eps; with identity features the
 * caller must keep phi(q).z + eps away from zero (e.g. positive features, as
 * Performer's), else the output is as large, Inf or NaN as the formula.
 * Passing final_norm or initial_norm with normalize == 0 is an error. */
LA_API la_status la_linear_attn_forward(la_ctx *ctx, const la_linear_attn_opts *opts,
                                        const la_dims *dims, float *o, float *final_state,
                                        float *final_norm, const float *q, const float *k,
                                        const float *v, const float *initial_state,
                                        const float *initial_norm);

/* dq,dk [B,T,H,K], dv [B,T,H,V] out (required)
 * d_initial_state [N,H,K,V], d_initial_norm [N,H,K] out, optional
 * d_o [B,T,H,V] in; d_final_state [N,H,K,V], d_final_norm [N,H,K] in, optional
 * (NULL = zero); the other inputs as in the forward. Gradients of
 * sum(o*d_o) + sum(final_state*d_final_state) + sum(final_norm*d_final_norm).
 * Recomputes the forward; no form stores a state per token or per chunk,
 * and the scratch does not grow with T. d_initial_state / d_initial_norm
 * may be the same buffers as d_final_state / d_final_norm. */
LA_API la_status la_linear_attn_backward(la_ctx *ctx, const la_linear_attn_opts *opts,
                                         const la_dims *dims, float *dq, float *dk, float *dv,
                                         float *d_initial_state, float *d_initial_norm,
                                         const float *d_o, const float *d_final_state,
                                         const float *d_final_norm, const float *q,
                                         const float *k, const float *v,
                                         const float *initial_state, const float *initial_norm);

/* ------------------------------------------------------------------ */
/* Random features (Performer FAVOR+, random Fourier features)         */
/* ------------------------------------------------------------------ */

typedef enum la_projection_kind {
    LA_PROJ_IID = 0,        /* i.i.d. N(0,1) rows */
    LA_PROJ_ORTHOGONAL = 1  /* orthogonal d x d blocks (Householder QR) */
} la_projection_kind;

typedef enum la_projection_scaling {
    LA_SCALING_CHI = 0,     /* row norms drawn from chi_d ("scaling 0") */
    LA_SCALING_SQRT_D = 1   /* row norms sqrt(d) ("scaling 1") */
} la_projection_scaling;

/* W [m, d] out: the projection matrix drawn from seed. Same seed, same W on
 * every machine and thread count (the draw uses la_rng_normal and double
 * +,-,*,/,sqrt only). Redraw = call again with a new seed.
 *   LA_PROJ_IID: rows N(0, I_d) as drawn (LA_SCALING_CHI), or those rows
 *     rescaled to norm sqrt(d) (LA_SCALING_SQRT_D).
 *   LA_PROJ_ORTHOGONAL: ceil(m/d) blocks; block b is Q^T of the Householder
 *     QR of a fresh d x d Gaussian matrix, signs fixed so diag(R) > 0 (Q is
 *     then Haar-distributed); the last block keeps its first m mod d rows.
 *     Row norms: chi_d (norms of fresh Gaussian d-vectors), or sqrt(d).
 *   With CHI every row is marginally N(0, I_d), so the estimators below are
 *   unbiased; SQRT_D rows are not Gaussian, so they are biased (Performer's
 *   "scaling 1" option, kept for compatibility).
 * Errors: W NULL, m or d < 1, m*d overflowing, unknown kind or scaling. */
LA_API la_status la_projection_draw(float *W, int64_t m, int64_t d, la_projection_kind kind,
                                    la_projection_scaling scaling, uint64_t seed);

/* Feature maps phi: R^d -> R^M from W [m, d] (d = dims.K). With
 * x' = d^-1/4 x (softmax-kernel maps), n = |x'|^2/2, u_i = w_i.x':
 *
 *   FAVOR_POSITIVE   phi_i = m^-1/2 exp(u_i - n - stab) + eps          M = m
 *   FAVOR_HYPERBOLIC [(2m)^-1/2 exp( u_i - n - stab) + eps,  i < m;
 *                     (2m)^-1/2 exp(-u_i - n - stab) + eps]            M = 2m
 *   TRIG_GAUSSIAN    m^-1/2 [cos(w_i.x), sin(w_i.x)]  (raw x; estimates
 *                    exp(-|x-y|^2/2); no eps, no stabiliser)           M = 2m
 *   TRIG_SOFTMAX     m^-1/2 exp(n - stab) [cos u_i, sin u_i]  (can be
 *                    negative; no eps)                                 M = 2m
 *   RELU             m^-1/2 relu(w_i.x) + eps  (raw x; with eps = 0 it
 *                    estimates the order-1 arc-cosine kernel; no
 *                    stabiliser)                                       M = m
 * Halves are concatenated ([cos..., sin...], [exp(+u)..., exp(-u)...]).
 * With eps = 0 and stabilize = 0, phi(x).phi(y) is an unbiased estimate of
 * exp(x.y/sqrt(d)) (softmax kernel) for the FAVOR and TRIG_SOFTMAX maps
 * when the rows of W are N(0, I) marginally (IID, or ORTHOGONAL + CHI).
 *
 * The stabiliser (stabilize = 1, exp-type maps only): stab is the largest
 * exponent, u_i - n (positive), |u_i| - n (hyperbolic) or n (trig softmax),
 * taken per token for LA_RF_QUERY and over all tokens and features of one
 * sequence (per head; cu_seqlens aware) for LA_RF_KEY. This is the
 * Performer stabiliser taken over the whole exponent rather than u_i alone,
 * so the largest feature is exactly the scale m^-1/2 (nothing overflows, and
 * a query's features never all underflow); it is a per-query or
 * per-sequence constant factor, which cancels in normalised attention
 * (up to the attention eps).
 * With stabilize = 0: positive and hyperbolic features are bounded by
 * exp(max_i |w_i|^2 / 2) and only underflow for large norms; a call whose
 * per-token bound max_i|w_i| |x'| - n (or n for trig softmax) exceeds 88
 * could overflow float32 and returns LA_ERR_INVALID_ARGUMENT, naming the
 * token, with nothing written. The result is therefore always finite. */
typedef enum la_random_feature {
    LA_RF_FAVOR_POSITIVE = 0,   /* m^-1/2 exp(w.x' - |x'|^2/2), M = m */
    LA_RF_FAVOR_HYPERBOLIC = 1, /* antithetic pairs, M = 2m */
    LA_RF_TRIG_GAUSSIAN = 2,    /* m^-1/2 [cos(w.x), sin(w.x)], M = 2m */
    LA_RF_TRIG_SOFTMAX = 3,     /* trig times exp(|x'|^2/2), M = 2m */
    LA_RF_RELU = 4              /* m^-1/2 relu(w.x) + eps, M = m */
} la_random_feature;

typedef enum la_rf_role {
    LA_RF_QUERY = 0, /* stabiliser: per-token max */
    LA_RF_KEY = 1    /* stabiliser: max over the whole sequence */
} la_rf_role;

typedef struct la_rf_opts {
    la_random_feature kind;
    la_rf_role role;
    int stabilize;   /* 1: subtract the Performer max inside exp (FAVOR+,
                        trig softmax); 0 or 1 */
    float eps;       /* >= 0, added after the map: FAVOR+ and RELU only
                        (RELU features can all be 0: Performer uses 1e-3) */
} la_rf_opts;

/* kind FAVOR_POSITIVE, role QUERY, stabilize 1, eps 0. */
LA_API la_rf_opts la_rf_opts_default(void);

/* Number of features M that kind produces from m projection rows; 0 for an
 * unknown kind or m < 1. */
LA_API int64_t la_rf_num_features(la_random_feature kind, int64_t m);

/* phi [B,T,H,M] out; x [B,T,H,d] in (dims.K = d); W [m,d].
 * stab [N,H] or [B,T,H] out, optional: the stabiliser that was subtracted
 * (key: per sequence and head; query: per token and head); 0 where no
 * stabiliser applies. dims.V and dims.HV are ignored. */
LA_API la_status la_rf_forward(la_ctx *ctx, const la_rf_opts *opts, const la_dims *dims,
                               float *phi, float *stab, const float *x, const float *W,
                               int64_t m);

/* dx [B,T,H,d] out; d_phi [B,T,H,M] in. The stabiliser is treated as a
 * constant (it cancels in normalised attention), as in the Performer code.
 * For a query this is exact for normalised attention (a per-query factor
 * cancels). For a key the sequence max is also a common factor of all keys,
 * so normalised attention is exact up to its eps; used without
 * normalisation, a stabilised key's dx misses the term through the max
 * (use stabilize = 0 there if the exact gradient matters). */
LA_API la_status la_rf_backward(la_ctx *ctx, const la_rf_opts *opts, const la_dims *dims,
                                float *dx, const float *d_phi, const float *x, const float *W,
                                int64_t m);

/* Performer attention: phi_q = rf(q) (role QUERY) and phi_k = rf(k) with
 * the same W and rf's kind, stabilize and eps (rf->role is ignored), then
 * normalised kernel linear attention (attn->feature_map must be
 * LA_FEATURE_IDENTITY and attn->normalize 1; causal, form, chunk_size and
 * eps from attn). o [B,T,H,V] out. Trig-softmax features can make the
 * denominator vanish or go negative (a known weakness of that estimator).
 *
 * Key stabiliser (exp-type maps with rf->stabilize = 1; MATH.md §3):
 *   non-causal: the largest exponent over the whole sequence (role KEY of
 *     la_rf_forward), so every key feature of a sequence shares one factor;
 *   causal: the running maximum mu_t = max(mu_0, a_1, ..., a_t) of the keys'
 *     largest exponents a_j (each rounded to float), never a future key.
 *     The state (S, z) is kept relative to mu_t and multiplied by
 *     exp(mu_old - mu_new) whenever the maximum grows. Key j enters as
 *     s exp(e_j - mu_j) + eps (rf eps, added relative to the maximum of its
 *     own time) and is rescaled with the state from then on, so query t
 *     sees it as s exp(e_j - mu_t) + eps exp(mu_j - mu_t). The output is
 *     o_t = phi_q S_t / (phi_q . z_t + attn eps) with S_t, z_t relative to
 *     mu_t. This is one definition, whatever the chunking: the chunk form,
 *     the recurrent form, split calls with the state carried and the
 *     decoder (LA_OP_PERFORMER) compute it within float32 rounding.
 *   Without the stabiliser mu is the constant 0 (no rescaling).
 * Queries keep their per-token stabiliser (a per-query factor that cancels
 * up to attn eps). Causal forms: RECURRENT runs token by token (the
 * decoder's arithmetic); CHUNK runs the normalised chunk form chunk by
 * chunk, each chunk's keys relative to the running max at its end, the
 * carried state rescaled between chunks and the attention eps of row i
 * scaled by exp(mu_i - mu_chunk_end) (exact); a chunk is cut short where
 * mu grows by more than 32 inside it (so no row underflows); PARALLEL is
 * the chunk form with one chunk per sequence (cut the same way). */
LA_API la_status la_performer_attn_forward(la_ctx *ctx, const la_rf_opts *rf,
                                           const la_linear_attn_opts *attn,
                                           const la_dims *dims, float *o, const float *q,
                                           const float *k, const float *v, const float *W,
                                           int64_t m);

/* dq, dk [B,T,H,K], dv [B,T,H,V] out; d_o [B,T,H,V] in. Recomputes the
 * features; gradients flow through phi as la_rf_backward (stabilisers held
 * constant: the per-token query maximum, and for causal keys the running
 * maxima mu), not into W. Every causal form's backward runs the chunk
 * form (chunk_size from attn for CHUNK, the default chunk for RECURRENT,
 * one chunk for PARALLEL). */
LA_API la_status la_performer_attn_backward(la_ctx *ctx, const la_rf_opts *rf,
                                            const la_linear_attn_opts *attn,
                                            const la_dims *dims, float *dq, float *dk,
                                            float *dv, const float *d_o, const float *q,
                                            const float *k, const float *v, const float *W,
                                            int64_t m);

/* Causal Performer with state (the RNN view), M = la_rf_num_features:
 *   final_state     [N,H,M,V] out, optional: S after the last token
 *   final_norm      [N,H,M]   out, optional: z after the last token
 *   final_key_max   [N,H]     out, optional: the running key maximum mu
 *                   the final state is relative to
 *   initial_state   [N,H,M,V], initial_norm [N,H,M] in, optional (NULL =
 *                   zeros), relative to
 *   initial_key_max [N,H]     in: mu_0; -INFINITY means "no key seen" (the
 *                   initial state is then empty: multiplied by
 *                   exp(-inf) = 0); NaN and +Inf are rejected. NULL means
 *                   -INFINITY everywhere, which is an error when
 *                   initial_state or initial_norm is given (they need the
 *                   maximum they are relative to).
 * Without a stabiliser (rf->stabilize = 0 or a kind without one) mu is the
 * constant 0: final_key_max gets 0 and initial_key_max is not read.
 * attn->causal must be 1 (LA_ERR_INVALID_ARGUMENT otherwise). A sequence
 * processed in two calls with the state carried equals one call; finals
 * may be the same buffers as the initials (a state carried in place).
 * NULL for every state argument gives la_performer_attn_forward. */
LA_API la_status la_performer_attn_forward_state(
    la_ctx *ctx, const la_rf_opts *rf, const la_linear_attn_opts *attn, const la_dims *dims,
    float *o, float *final_state, float *final_norm, float *final_key_max, const float *q,
    const float *k, const float *v, const float *W, int64_t m, const float *initial_state,
    const float *initial_norm, const float *initial_key_max);

/* Gradients of sum(o*d_o) + sum(final_state*d_final_state)
 * + sum(final_norm*d_final_norm) (d_final_* optional, NULL = zero):
 * dq, dk [B,T,H,K], dv [B,T,H,V] out (required); d_initial_state
 * [N,H,M,V] and d_initial_norm [N,H,M] out, optional (they may be the same
 * buffers as d_final_state / d_final_norm). The key maxima are held
 * constant: there is no gradient for initial_key_max and none flows
 * through mu (exact for the output up to attn eps, as for the query
 * stabiliser). Chunk form for every causal form; the scratch keeps 12
 * bytes per token of the longest sequence (chunk starts and maxima). */
LA_API la_status la_performer_attn_backward_state(
    la_ctx *ctx, const la_rf_opts *rf, const la_linear_attn_opts *attn, const la_dims *dims,
    float *dq, float *dk, float *dv, float *d_initial_state, float *d_initial_norm,
    const float *d_o, const float *d_final_state, const float *d_final_norm, const float *q,
    const float *k, const float *v, const float *W, int64_t m, const float *initial_state,
    const float *initial_norm, const float *initial_key_max);

/* ------------------------------------------------------------------ */
/* Gated and delta-rule linear attention (fla conventions)             */
/* ------------------------------------------------------------------ */

/* Saved for backward. A forward that is followed by its
 * backward can keep the per-chunk products the backward would otherwise
 * recompute (the delta rules' "keep" sweep: the chunk start states and each
 * chunk's K K^T, U, R of the WY form; KDA its gated K K^T, U, W, R and P;
 * simple GLA and GLA: the chunk start states), at a cost in memory,
 * la_saved_bytes().
 *  - la_saved_create makes an empty object bound to ctx; set
 *    la_gated_opts.saved (la_linear_attn_opts.saved) to it in the forward
 *    AND the backward call.
 *  - A forward given opts->saved fills it (replacing what it held; a CPU
 *    forward that fails leaves it empty); a
 *    backward given a filled one reads it instead of recomputing, with
 *    gradients bitwise identical to the backward without it; an empty one
 *    means recompute. The object stays filled after the backward (a second
 *    backward may use it again) until the next forward or la_saved_destroy.
 *  - Filled by a different call (another op or form, other dims or
 *    cu_seqlens offsets, scale, use_qk_l2norm, chunk length used, input
 *    pointers q/k/v/g/beta/initial_state, or another context): the backward
 *    fails with LA_ERR_INVALID_ARGUMENT naming the mismatch. The inputs'
 *    VALUES are not compared: do not change them between the two calls
 *    (a CPU backward given a filled object -- the delta rules, simple
 *    GLA, GLA, KDA, linear attention -- scans only d_o, d_final_state and
 *    d_final_norm for NaN / Inf: its forward scanned the inputs).
 *  - Ops that fill it: la_delta_rule_forward and
 *    la_gated_delta_rule_forward in LA_FORM_CHUNK, on a CPU or a CUDA
 *    context; la_simple_gla_forward in LA_FORM_CHUNK on a CPU context,
 *    except where it splits one sequence over time (fewer than 8
 *    (sequence, head) pairs and a longest sequence of >= 32 chunks: it
 *    leaves the object empty, and its backward recomputes);
 *    la_gla_forward (per-key gates) the same way, with the same exception
 *    (a CUDA context does not run GLA);
 *    la_linear_attn_forward causal in LA_FORM_CHUNK on a CPU context, with
 *    the same exception (the feature map and normalize are part of its
 *    key; a CUDA context ignores the field); la_kda_forward in
 *    LA_FORM_CHUNK on a CPU context (cpu-kdasaved19; no exception). The
 *    LA_FORM_RECURRENT forwards of these ops leave it empty (they save
 *    nothing). Their backwards check it (a mismatch is an error, whatever
 *    the form). On a CUDA context la_simple_gla_forward and _backward
 *    ignore the field (neither fill, read nor check it), as
 *    la_kda_forward and _backward do on a CUDA context. An object of a CPU
 *    context given to a CUDA call that uses it, or the reverse, is
 *    LA_ERR_INVALID_ARGUMENT naming it.
 *  - Memory: the object keeps its largest buffer (no page faults when it is
 *    reused for the same shapes); at chunk C: delta rules (K V / C + C +
 *    2 V) floats per value head and token (K = V = 128, C = 64:
 *    2.3 KB); simple GLA K V / C floats per head and token, each sequence
 *    rounded up to whole chunks (1 KB at K = V = 128, C = 64); GLA the
 *    same; KDA (K V / C + 2 C + 2 V + K) floats per value head and token,
 *    each sequence rounded up to whole chunks (3.0 KB); linear
 *    attention the same, K (V + 1) / C normalised.
 *    On a CUDA context the buffer is device memory (cudaMallocAsync on the
 *    context's stream; no allocation per step once large enough) holding
 *    the chunk states, W, K, R, A^T and for 16-bit inputs W and K as bf16
 *    parts: at K = V = 128, 3.8 KB per value head and token (bf16), 2.8 KB
 *    (fp32). It is freed stream-ordered (cudaFreeAsync on that stream) by
 *    la_saved_destroy or la_ctx_destroy, whichever comes first: the stream
 *    must still exist then (no synchronisation; queued work that reads the
 *    buffer finishes first). The caller keeps the inputs unchanged on the
 *    stream between the forward and the backward.
 *  - One call at a time per object, as per context. Destroy the objects
 *    before or after their context, not concurrently with calls on it; an
 *    object whose context was destroyed is an error to use. */
typedef struct la_saved la_saved;
LA_API la_status la_saved_create(la_ctx *ctx, la_saved **out);
LA_API void la_saved_destroy(la_saved *saved); /* NULL is a no-op */
/* Bytes of memory the object holds now (0 for NULL). */
LA_API size_t la_saved_bytes(const la_saved *saved);
/* 1 when a forward filled it (a backward of the same call would use it). */
LA_API int la_saved_filled(const la_saved *saved);

typedef struct la_gated_opts {
    la_form form;          /* LA_FORM_RECURRENT or LA_FORM_CHUNK; 0
                              (LA_FORM_PARALLEL) means LA_FORM_CHUNK */
    float scale;           /* 0 means K^-1/2 */
    int64_t chunk_size;    /* LA_FORM_CHUNK only; 0 means 64 */
    int use_qk_l2norm;     /* delta rules only: L2-normalise q and k inside the op */
    la_saved *saved;       /* NULL (default): none; see "Saved for backward" */
} la_gated_opts;

/* Chunk form, scale K^-1/2, chunk 64, no L2 norm (= zeroed). */
LA_API la_gated_opts la_gated_opts_default(void);

/* RetNet preset: g_gamma[h] = log(1 - 2^(-5-h)), h = 0..H-1. */
LA_API la_status la_retnet_decay(float *g_gamma, int64_t H);

/* simple GLA: S_t = exp(g_t) S_{t-1} + k_t^T v_t, o_t = scale q_t S_t.
 * g [B,T,H] log-decay per token and head (optional), g_gamma [H] constant
 * log-decay per head (optional); the decay used is their sum.
 * State [N,H,K,V]. */
LA_API la_status la_simple_gla_forward(la_ctx *ctx, const la_gated_opts *opts,
                                       const la_dims *dims, float *o, float *final_state,
                                       const float *q, const float *k, const float *v,
                                       const float *g, const float *g_gamma,
                                       const float *initial_state);
/* dg [B,T,H] out (required iff g given), dg_gamma [H] out (optional; allowed
 * without g_gamma: the gradient at g_gamma = 0).
 * simple GLA and GLA: forms RECURRENT and CHUNK (a chunk size >= T is the
 * parallel form); LA_FORM_PARALLEL, the zero value, selects CHUNK. */
LA_API la_status la_simple_gla_backward(la_ctx *ctx, const la_gated_opts *opts,
                                        const la_dims *dims, float *dq, float *dk, float *dv,
                                        float *dg, float *dg_gamma, float *d_initial_state,
                                        const float *d_o, const float *d_final_state,
                                        const float *q, const float *k, const float *v,
                                        const float *g, const float *g_gamma,
                                        const float *initial_state);

/* GLA: S_t = Diag(exp(g_t)) S_{t-1} + k_t^T v_t; g [B,T,H,K] (required). */
LA_API la_status la_gla_forward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                float *o, float *final_state, const float *q, const float *k,
                                const float *v, const float *g, const float *initial_state);
LA_API la_status la_gla_backward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                 float *dq, float *dk, float *dv, float *dg,
                                 float *d_initial_state, const float *d_o,
                                 const float *d_final_state, const float *q, const float *k,
                                 const float *v, const float *g, const float *initial_state);

/* DeltaNet: S_t = (I - b_t k_t^T k_t) S_{t-1} + b_t k_t^T v_t;
 * beta [B,T,H].
 * Delta rules (both ops): forms RECURRENT and CHUNK (WY representation);
 * LA_FORM_PARALLEL, the zero value, selects CHUNK. beta is accepted in [0, 2] and the formula is
 * not clamped: with L2-normalised keys every step is a contraction, with raw
 * keys and beta |k|^2 > 2 the state grows (as the formula says).
 * use_qk_l2norm: x / sqrt(sum x^2 + 1e-6) per token and head (fla's l2norm),
 * differentiated in the backward. final_state may alias initial_state and
 * d_initial_state may alias d_final_state. */
LA_API la_status la_delta_rule_forward(la_ctx *ctx, const la_gated_opts *opts,
                                       const la_dims *dims, float *o, float *final_state,
                                       const float *q, const float *k, const float *v,
                                       const float *beta, const float *initial_state);
LA_API la_status la_delta_rule_backward(la_ctx *ctx, const la_gated_opts *opts,
                                        const la_dims *dims, float *dq, float *dk, float *dv,
                                        float *dbeta, float *d_initial_state, const float *d_o,
                                        const float *d_final_state, const float *q,
                                        const float *k, const float *v, const float *beta,
                                        const float *initial_state);

/* Gated DeltaNet: S_t = exp(g_t)(I - b_t k_t^T k_t) S_{t-1} + b_t k_t^T v_t.
 * q,k [B,T,H,K]; v, o [B,T,HV,V]; g, beta [B,T,HV]; state [N,HV,K,V];
 * value head h reads q/k head h / (HV/H). */
LA_API la_status la_gated_delta_rule_forward(la_ctx *ctx, const la_gated_opts *opts,
                                             const la_dims *dims, float *o,
                                             float *final_state, const float *q,
                                             const float *k, const float *v, const float *g,
                                             const float *beta, const float *initial_state);
LA_API la_status la_gated_delta_rule_backward(la_ctx *ctx, const la_gated_opts *opts,
                                              const la_dims *dims, float *dq, float *dk,
                                              float *dv, float *dg, float *dbeta,
                                              float *d_initial_state, const float *d_o,
                                              const float *d_final_state, const float *q,
                                              const float *k, const float *v, const float *g,
                                              const float *beta, const float *initial_state);

/* KDA (Kimi Delta Attention): the gated delta rule with a per-key gate,
 *   S_t = (I - b_t k_t k_t^T) Diag(exp g_t) S_{t-1} + b_t k_t v_t^T,
 *   o_t = scale S_t^T q_t   (the decay acts before the delta correction).
 * q,k [B,T,H,K]; v, o [B,T,HV,V]; g [B,T,HV,K] log-gates <= 0 (-1e4 is a
 * full reset of a key); beta [B,T,HV] in [0, 2]; state [N,HV,K,V]; value
 * head h reads q/k head h / (HV/H). Forms RECURRENT and CHUNK (WY form with
 * per-key gates), as the delta rules; use_qk_l2norm, aliasing and beta
 * policy as for la_delta_rule_forward. Backward: dg [B,T,HV,K] (required),
 * dbeta [B,T,HV]. opts->saved: "Saved for backward" (chunk form, CPU; a
 * CUDA context ignores it). */
LA_API la_status la_kda_forward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                float *o, float *final_state, const float *q, const float *k,
                                const float *v, const float *g, const float *beta,
                                const float *initial_state);
LA_API la_status la_kda_backward(la_ctx *ctx, const la_gated_opts *opts, const la_dims *dims,
                                 float *dq, float *dk, float *dv, float *dg, float *dbeta,
                                 float *d_initial_state, const float *d_o,
                                 const float *d_final_state, const float *q, const float *k,
                                 const float *v, const float *g, const float *beta,
                                 const float *initial_state);

/* ------------------------------------------------------------------ */
/* Decoding: one token per sequence at O(K*V) cost per head            */
/* ------------------------------------------------------------------ */

typedef enum la_op {
    LA_OP_LINEAR_ATTN = 0,      /* causal kernel linear attention */
    LA_OP_SIMPLE_GLA = 1,
    LA_OP_GLA = 2,
    LA_OP_DELTA_RULE = 3,
    LA_OP_GATED_DELTA_RULE = 4,
    LA_OP_KDA = 5,              /* g [N,HV,K] per-key log-gates, beta [N,HV] */
    LA_OP_PERFORMER = 6         /* causal Performer (random features) */
} la_op;

typedef struct la_decoder_config {
    la_op op;
    int64_t N, H, HV, K, V;          /* HV: 0 means H */
    /* LA_OP_LINEAR_ATTN */
    la_feature_map feature_map;
    int normalize;
    float eps;                       /* 0 means LA_LINEAR_ATTN_DEFAULT_EPS */
    /* every op */
    float scale;                     /* 0 means K^-1/2 (unnormalised / gated) */
    /* delta rules */
    int use_qk_l2norm;
    /* LA_OP_PERFORMER: q and k [N,H,K] go through the random features rf
     * (kind, stabilize, eps; role ignored; start from la_rf_opts_default())
     * with rf_W [rf_m, K] (copied at create); eps above is the attention
     * eps (0 means LA_LINEAR_ATTN_DEFAULT_EPS); feature_map, normalize,
     * scale and use_qk_l2norm are not read. State [N,H,M,V], norm [N,H,M]
     * with M = la_rf_num_features(rf.kind, rf_m), and the running key
     * maximum [N,H] (la_decoder_get/set_key_max). Equals the recurrent
     * form of la_performer_attn_forward_state. */
    const float *rf_W;
    int64_t rf_m;
    la_rf_opts rf;
} la_decoder_config;

typedef struct la_decoder la_decoder;

/* A decoder owns the state of N sequences, initially zero. */
LA_API la_status la_decoder_create(la_decoder **out, const la_decoder_config *cfg);
LA_API void la_decoder_destroy(la_decoder *dec);
LA_API la_status la_decoder_reset(la_decoder *dec); /* state back to zero */
/* state [N,HS,K,V] (HS = HV or H), norm [N,H,K] (normalised linear attention
 * only, else must be NULL). set copies in, get copies out; NULL skips.
 * LA_OP_PERFORMER: K is M (state [N,H,M,V], norm [N,H,M]). */
LA_API la_status la_decoder_set_state(la_decoder *dec, const float *state, const float *norm);
LA_API la_status la_decoder_get_state(const la_decoder *dec, float *state, float *norm);
/* One sequence slot n (0 <= n < N), so a server can start and end sequences
 * at different times: reset_slot zeroes slot n's state (and normaliser);
 * set/get copy slot n's state [HS,K,V] and norm [H,K] (normalised linear
 * attention only, else must be NULL) in or out; NULL skips. The other
 * slots are not touched. LA_OP_PERFORMER: K is M; reset_slot also resets
 * slot n's key maximum (set it with la_decoder_set_key_max). */
LA_API la_status la_decoder_reset_slot(la_decoder *dec, int64_t n);
LA_API la_status la_decoder_set_slot_state(la_decoder *dec, int64_t n, const float *state,
                                           const float *norm);
LA_API la_status la_decoder_get_slot_state(const la_decoder *dec, int64_t n, float *state,
                                           float *norm);
/* LA_OP_PERFORMER only: the running key maximum [N,H] the state is relative
 * to (-INFINITY: no key yet, what reset sets). set rejects NaN and +Inf.
 * Without a stabiliser (rf.stabilize = 0 or a kind without one) the
 * maximum is the constant 0: get returns 0 and set checks but keeps 0. */
LA_API la_status la_decoder_set_key_max(la_decoder *dec, const float *key_max);
LA_API la_status la_decoder_get_key_max(const la_decoder *dec, float *key_max);
/* The same for one sequence slot n (0 <= n < N): key_max [H], slot n's
 * maxima (with la_decoder_set/get_slot_state a server moves one Performer
 * sequence in or out; reset_slot sets -INFINITY). Same rules as above. */
LA_API la_status la_decoder_set_slot_key_max(la_decoder *dec, int64_t n, const float *key_max);
LA_API la_status la_decoder_get_slot_key_max(const la_decoder *dec, int64_t n, float *key_max);

/* One step for every sequence: o [N,HS,V] out; q,k [N,H,K]; v [N,HS,V];
 * g [N,HS] (simple GLA, gated delta; optional for simple GLA), or [N,H,K]
 * (GLA), or [N,HV,K] (KDA); g_gamma [H] (simple GLA, optional); beta [N,HS]
 * (delta rules, KDA).
 * Pass NULL for what the op does not use. Equals the recurrent form. */
LA_API la_status la_decoder_step(la_ctx *ctx, la_decoder *dec, float *o, const float *q,
                                 const float *k, const float *v, const float *g,
                                 const float *g_gamma, const float *beta);

/* One decoding step on caller-owned states (no decoder object): the same
 * arithmetic as la_decoder_step, for every sequence n < cfg->N and head.
 * state [N,HS,K,V] and norm [N,H,K] (normalised linear attention only, else
 * NULL) are read and updated in place (float32); o, q, k, v as in
 * la_decoder_step in element type `dtype`; g, g_gamma, beta float32.
 * In a CUDA context every pointer is a device pointer and the call enqueues
 * one kernel: no allocation, no synchronisation, so it can be captured in a
 * CUDA graph. */
LA_API la_status la_state_step(la_ctx *ctx, const la_decoder_config *cfg, la_dtype dtype,
                               float *state, float *norm, float *o, const float *q,
                               const float *k, const float *v, const float *g,
                               const float *g_gamma, const float *beta);

/* ------------------------------------------------------------------ */
/* CPU instruction sets                                                */
/* ------------------------------------------------------------------ */

/* The dense products inside the chunkwise forms run on SIMD kernels chosen
 * at run time. The environment variable LINATTN_ISA = portable | avx2 |
 * avx512 (read once, on first use) caps the choice; a request the CPU (or
 * this build) cannot serve falls back to the best path that it can, and an
 * unknown value is ignored. Each path is deterministic on its own, but paths
 * round differently, so results can differ (within float32 rounding) between
 * machines or LINATTN_ISA settings — never between thread counts. */
typedef enum la_isa {
    LA_ISA_PORTABLE = 0, /* plain C, any CPU */
    LA_ISA_AVX2 = 1,     /* x86-64 AVX2 + FMA (Haswell, Zen and later) */
    LA_ISA_AVX512 = 2    /* x86-64 AVX-512 F/DQ/BW/VL with OS ZMM state */
} la_isa;

/* The best instruction set this CPU and OS support (cpuid + xgetbv);
 * LA_ISA_PORTABLE on non-x86 builds. */
LA_API la_isa la_cpu_best_isa(void);
/* The path the library uses: la_cpu_best_isa() capped by LINATTN_ISA and by
 * the kernels this build has. */
LA_API la_isa la_isa_active(void);
/* "portable", "avx2", "avx512"; "unknown" for other values; never NULL. */
LA_API const char *la_isa_name(la_isa isa);

#ifdef __cplusplus
}
#endif

#endif /* LINATTN_H */
