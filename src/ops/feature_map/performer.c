/* Performer attention: random features for q and k with one W, then
 * normalised kernel linear attention through the public linear-attention
 * op (identity feature map on the M features).
 *
 * All user outputs are written only after every step that can fail has
 * succeeded: the features and their gradients live in buffers allocated
 * here, dv is produced into a buffer and copied at the end, and the scratch
 * the feature backward needs is reserved before anything starts. */
#include "rf_internal.h"
#include "../../cuda/cuda_backend.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct performer_setup {
    la_dims ld;        /* dims of the linear attention: K = M */
    la_rf_opts rq, rk; /* query / key roles */
    size_t n_phi, n_qk, n_v;
} performer_setup;

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
    if ((st = la__numel(op, "features", &p->n_phi, dims->B, dims->T, dims->H, M))) return st;
    if ((st = la__numel(op, "q", &p->n_qk, dims->B, dims->T, dims->H, dims->K))) return st;
    if ((st = la__numel(op, "v", &p->n_v, dims->B, dims->T, dims->H, dims->V))) return st;
    p->rq = *rf;
    p->rq.role = LA_RF_QUERY;
    p->rk = *rf;
    p->rk.role = LA_RF_KEY;
    return LA_OK;
}

/* phi_q, phi_k from q, k (errors name the feature op and the argument). */
static la_status features(la_ctx *ctx, const performer_setup *p, const la_dims *dims, float *pq,
                          float *pk, const float *q, const float *k, const float *W, int64_t m) {
    la_status st = la_rf_forward(ctx, &p->rq, dims, pq, NULL, q, W, m);
    if (st) return st;
    return la_rf_forward(ctx, &p->rk, dims, pk, NULL, k, W, m);
}

la_status la_performer_attn_forward(la_ctx *ctx, const la_rf_opts *rf,
                                    const la_linear_attn_opts *attn, const la_dims *dims, float *o,
                                    const float *q, const float *k, const float *v, const float *W,
                                    int64_t m) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported("la_performer_attn_forward");
    static const char *op = "la_performer_attn_forward";
    performer_setup p;
    la_status st = setup(op, ctx, rf, attn, dims, q, k, v, W, m, &p);
    if (st) return st;
    if ((st = la__check_ptr(op, "o", o))) return st;
    float *pq = malloc(p.n_phi * sizeof *pq), *pk = malloc(p.n_phi * sizeof *pk);
    if (!pq || !pk) {
        st = la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory for 2 x %zu features", op, p.n_phi);
        goto done;
    }
    if ((st = features(ctx, &p, dims, pq, pk, q, k, W, m))) goto done;
    st = la_linear_attn_forward(ctx, attn, &p.ld, o, NULL, NULL, pq, pk, v, NULL, NULL);
done:
    free(pq);
    free(pk);
    return st;
}

la_status la_performer_attn_backward(la_ctx *ctx, const la_rf_opts *rf,
                                     const la_linear_attn_opts *attn, const la_dims *dims,
                                     float *dq, float *dk, float *dv, const float *d_o,
                                     const float *q, const float *k, const float *v, const float *W,
                                     int64_t m) {
    if (la_ctx_is_cuda(ctx)) return la__cuda_unsupported("la_performer_attn_backward");
    static const char *op = "la_performer_attn_backward";
    performer_setup p;
    la_status st = setup(op, ctx, rf, attn, dims, q, k, v, W, m, &p);
    if (st) return st;
    if ((st = la__check_ptr(op, "dq", dq))) return st;
    if ((st = la__check_ptr(op, "dk", dk))) return st;
    if ((st = la__check_ptr(op, "dv", dv))) return st;
    if ((st = la__check_ptr(op, "d_o", d_o))) return st;
    if ((st = la__check_finite(op, "d_o", d_o, p.n_v))) return st;
    float *buf = NULL;
    /* pq, pk, dpq, dpk [n_phi] each, dv_tmp [n_v] */
    if (p.n_phi > (SIZE_MAX / sizeof(float) - p.n_v) / 4) {
        return la__error(LA_ERR_INVALID_SIZE, "%s: feature buffers overflow size_t", op);
    }
    buf = malloc((4 * p.n_phi + p.n_v) * sizeof *buf);
    if (!buf)
        return la__error(LA_ERR_OUT_OF_MEMORY, "%s: out of memory for 4 x %zu features", op,
                         p.n_phi);
    float *pq = buf, *pk = buf + p.n_phi, *dpq = buf + 2 * p.n_phi, *dpk = buf + 3 * p.n_phi;
    float *dv_tmp = buf + 4 * p.n_phi;
    if ((st = la__rf_backward_reserve(ctx, op, dims->K, m))) goto done;
    if ((st = features(ctx, &p, dims, pq, pk, q, k, W, m))) goto done;
    if ((st = la_linear_attn_backward(ctx, attn, &p.ld, dpq, dpk, dv_tmp, NULL, NULL, d_o, NULL,
                                      NULL, pq, pk, v, NULL, NULL)))
        goto done;
    /* The feature gradients must be finite for la_rf_backward to accept them;
     * check both before writing dq. */
    if ((st = la__check_finite(op, "gradient of the query features", dpq, p.n_phi))) goto done;
    if ((st = la__check_finite(op, "gradient of the key features", dpk, p.n_phi))) goto done;
    if ((st = la_rf_backward(ctx, &p.rq, dims, dq, dpq, q, W, m))) goto done;
    if ((st = la_rf_backward(ctx, &p.rk, dims, dk, dpk, k, W, m))) goto done;
    memcpy(dv, dv_tmp, p.n_v * sizeof *dv);
done:
    free(buf);
    return st;
}
