/* The reference table of the registry (see ref_ops.h). */
#include "ref_ops.h"
#include "ref_delta_rule.h"
#include "ref_feature_map.h"
#include "ref_gla.h"
#include "ref_kda.h"
#include "ref_linear_attn.h"
#include "ref_softmax_attn.h"

#include "ref_util.h"

#include <math.h>
#include <stdlib.h>

double ref_resolved_scale(float scale, int64_t K) {
    return scale == 0 ? (double)(float)(1.0 / sqrt((double)K)) : (double)scale;
}

/* ---- softmax (causal) ---- */
static int softmax_fwd(const la__op_args *a, const ref_op_out *r) {
    return ref_softmax_attn_batch(&a->dims, 1, ref_resolved_scale(a->scale, a->dims.K), NULL, a->q,
                                  a->k, a->v, NULL, r->o, r->lse, NULL, NULL, NULL)
               ? 0
               : -1;
}
static int softmax_bwd(const la__op_args *a, const ref_op_out *r) {
    return ref_softmax_attn_batch(&a->dims, 1, ref_resolved_scale(a->scale, a->dims.K), NULL, a->q,
                                  a->k, a->v, a->d_o, NULL, NULL, r->dq, r->dk, r->dv)
               ? 0
               : -1;
}

/* ---- kernel linear attention ---- */
static la_linear_attn_opts lin_opts(const la__op_args *a, int causal) {
    la_linear_attn_opts o = la_linear_attn_opts_default();
    o.feature_map = a->feature_map;
    o.causal = causal;
    o.normalize = a->normalize;
    o.eps = a->eps ? a->eps : LA_LINEAR_ATTN_DEFAULT_EPS;
    o.scale = a->scale;
    return o;
}
static int lin_fwd(const la__op_args *a, const ref_op_out *r, int causal) {
    la_linear_attn_opts o = lin_opts(a, causal);
    return ref_linear_attn_forward_all(&o, &a->dims, r->o, r->final_state, r->final_norm, a->q,
                                       a->k, a->v, a->initial_state, a->initial_norm);
}
static int lin_bwd(const la__op_args *a, const ref_op_out *r, int causal) {
    la_linear_attn_opts o = lin_opts(a, causal);
    return ref_linear_attn_backward_all(
        &o, &a->dims, 0, r->dq, r->dk, r->dv, r->d_initial_state, r->d_initial_norm, a->d_o,
        a->d_final_state, a->d_final_norm, a->q, a->k, a->v, a->initial_state, a->initial_norm);
}
static int lin_fwd_c(const la__op_args *a, const ref_op_out *r) { return lin_fwd(a, r, 1); }
static int lin_bwd_c(const la__op_args *a, const ref_op_out *r) { return lin_bwd(a, r, 1); }
static int lin_fwd_nc(const la__op_args *a, const ref_op_out *r) { return lin_fwd(a, r, 0); }
static int lin_bwd_nc(const la__op_args *a, const ref_op_out *r) { return lin_bwd(a, r, 0); }

/* ---- simple GLA, GLA ---- */
static int gla_fwd(const la__op_args *a, const ref_op_out *r, int per_key) {
    return ref_gla_forward_all(per_key, &a->dims, ref_resolved_scale(a->scale, a->dims.K), a->q,
                               a->k, a->v, a->g, per_key ? NULL : a->g_gamma, a->initial_state,
                               r->o, r->final_state);
}
static int gla_bwd(const la__op_args *a, const ref_op_out *r, int per_key) {
    return ref_gla_backward_all(per_key, &a->dims, ref_resolved_scale(a->scale, a->dims.K), a->q,
                                a->k, a->v, a->g, per_key ? NULL : a->g_gamma, a->initial_state,
                                a->d_o, a->d_final_state, r->dq, r->dk, r->dv, r->dg, r->dg_gamma,
                                r->d_initial_state, NULL);
}
static int sgla_fwd(const la__op_args *a, const ref_op_out *r) { return gla_fwd(a, r, 0); }
static int sgla_bwd(const la__op_args *a, const ref_op_out *r) { return gla_bwd(a, r, 0); }
static int gla_fwd1(const la__op_args *a, const ref_op_out *r) { return gla_fwd(a, r, 1); }
static int gla_bwd1(const la__op_args *a, const ref_op_out *r) { return gla_bwd(a, r, 1); }

/* ---- DeltaNet, Gated DeltaNet ---- */
static int delta_fwd(const la__op_args *a, const ref_op_out *r, int gated) {
    return ref_delta_rule_forward_all(&a->dims, ref_resolved_scale(a->scale, a->dims.K),
                                      a->use_qk_l2norm, a->q, a->k, a->v, gated ? a->g : NULL,
                                      a->beta, a->initial_state, r->o, r->final_state);
}
static int delta_bwd(const la__op_args *a, const ref_op_out *r, int gated) {
    return ref_delta_rule_backward_all(
        &a->dims, ref_resolved_scale(a->scale, a->dims.K), a->use_qk_l2norm, a->q, a->k, a->v,
        gated ? a->g : NULL, a->beta, a->initial_state, a->d_o, a->d_final_state, r->dq, r->dk,
        r->dv, gated ? r->dg : NULL, r->dbeta, r->d_initial_state);
}
static int d_fwd(const la__op_args *a, const ref_op_out *r) { return delta_fwd(a, r, 0); }
static int d_bwd(const la__op_args *a, const ref_op_out *r) { return delta_bwd(a, r, 0); }
static int gd_fwd(const la__op_args *a, const ref_op_out *r) { return delta_fwd(a, r, 1); }
static int gd_bwd(const la__op_args *a, const ref_op_out *r) { return delta_bwd(a, r, 1); }

/* ---- KDA ---- */
static int kda_fwd(const la__op_args *a, const ref_op_out *r) {
    return ref_kda_forward_all(&a->dims, ref_resolved_scale(a->scale, a->dims.K), a->use_qk_l2norm,
                               a->q, a->k, a->v, a->g, a->beta, a->initial_state, r->o,
                               r->final_state);
}
static int kda_bwd(const la__op_args *a, const ref_op_out *r) {
    return ref_kda_backward_all(&a->dims, ref_resolved_scale(a->scale, a->dims.K), a->use_qk_l2norm,
                                a->q, a->k, a->v, a->g, a->beta, a->initial_state, a->d_o,
                                a->d_final_state, r->dq, r->dk, r->dv, r->dg, r->dbeta,
                                r->d_initial_state);
}

/* ---- causal Performer (running key maximum) ---- */
/* ref_performer_causal / _backward over every (sequence, head): gathers the
 * rows, runs the float64 formula (MATH.md §3) and scatters the results. */
static int perf_all(const la__op_args *a, const ref_op_out *r, int bwd) {
    const la_dims *d = &a->dims;
    const int64_t H = d->H, K = d->K, V = d->V, T = d->T, m = a->rf_m;
    const int64_t N = d->cu_seqlens ? d->n_seqs : d->B;
    const int64_t M = la_rf_num_features(a->rf.kind, m);
    const double eps = a->eps ? a->eps : LA_LINEAR_ATTN_DEFAULT_EPS;
    const size_t tk = (size_t)(T * K), tv = (size_t)(T * V), mv = (size_t)(M * V);
    double *W = ref_to_double(a->rf_W, (size_t)(m * K));
    double *buf = calloc(4 * tk + 3 * tv + 2 * (size_t)T + 4 * mv + 4 * (size_t)M + 1, sizeof *buf);
    if (!W || !buf || M < 1) {
        free(W);
        free(buf);
        return -1;
    }
    double *q = buf, *k = q + tk, *v = k + tk, *o = v + tv, *dq = o + tv, *dk = dq + tk;
    double *dv = dk + tk, *sq = dv + tv, *mu = sq + T, *S0 = mu + T, *z0 = S0 + mv;
    double *ST = z0 + M, *zT = ST + mv, *dST = zT + M, *dzT = dST + mv, *dS0 = dzT + M;
    double *dz0 = dS0 + mv;
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t u = n * H + h;
            const int64_t L = ref_gather(q, a->q, d, n, h, H, K);
            ref_gather(k, a->k, d, n, h, H, K);
            ref_gather(v, a->v, d, n, h, H, V);
            const int st = a->initial_state || a->initial_norm;
            for (size_t i = 0; i < mv; i++)
                S0[i] = a->initial_state ? a->initial_state[(size_t)u * mv + i] : 0.0;
            for (int64_t i = 0; i < M; i++)
                z0[i] = a->initial_norm ? a->initial_norm[u * M + i] : 0.0;
            const double mu0 = a->initial_key_max ? a->initial_key_max[u] : -INFINITY;
            double muT = 0;
            ref_performer_causal(&a->rf, eps, L, K, V, m, q, k, v, W, st ? S0 : NULL,
                                 st ? z0 : NULL, mu0, sq, mu, 0, o, ST, zT, &muT, NULL);
            if (!bwd) {
                if (r->o) ref_scatter(r->o, o, d, n, h, H, V);
                for (size_t i = 0; r->final_state && i < mv; i++)
                    r->final_state[(size_t)u * mv + i] = ST[i];
                for (int64_t i = 0; r->final_norm && i < M; i++) r->final_norm[u * M + i] = zT[i];
                if (r->final_key_max) r->final_key_max[u] = muT;
                continue;
            }
            ref_gather(o, a->d_o, d, n, h, H, V); /* o now holds d_o */
            for (size_t i = 0; i < mv; i++)
                dST[i] = a->d_final_state ? a->d_final_state[(size_t)u * mv + i] : 0.0;
            for (int64_t i = 0; i < M; i++)
                dzT[i] = a->d_final_norm ? a->d_final_norm[u * M + i] : 0.0;
            ref_performer_causal_backward(&a->rf, eps, L, K, V, m, q, k, v, W, st ? S0 : NULL,
                                          st ? z0 : NULL, mu0, sq, mu, o, dST, dzT, dq, dk, dv, dS0,
                                          dz0);
            if (r->dq) ref_scatter(r->dq, dq, d, n, h, H, K);
            if (r->dk) ref_scatter(r->dk, dk, d, n, h, H, K);
            if (r->dv) ref_scatter(r->dv, dv, d, n, h, H, V);
            for (size_t i = 0; r->d_initial_state && i < mv; i++)
                r->d_initial_state[(size_t)u * mv + i] = dS0[i];
            for (int64_t i = 0; r->d_initial_norm && i < M; i++)
                r->d_initial_norm[u * M + i] = dz0[i];
        }
    free(W);
    free(buf);
    return 0;
}
static int perf_fwd(const la__op_args *a, const ref_op_out *r) { return perf_all(a, r, 0); }
static int perf_bwd(const la__op_args *a, const ref_op_out *r) { return perf_all(a, r, 1); }

/* One row per la__op_id, in its order. */
static const ref_op_entry TABLE[] = {
    {softmax_fwd, softmax_bwd}, /* softmax-textbook */
    {softmax_fwd, softmax_bwd}, /* softmax-streaming */
    {lin_fwd_c, lin_bwd_c},     /* linear_attn-parallel */
    {lin_fwd_c, lin_bwd_c},     /* linear_attn-recurrent */
    {lin_fwd_c, lin_bwd_c},     /* linear_attn-chunk */
    {lin_fwd_nc, lin_bwd_nc},   /* linear_attn-noncausal */
    {sgla_fwd, sgla_bwd},       /* simple_gla-recurrent */
    {sgla_fwd, sgla_bwd},       /* simple_gla-chunk */
    {gla_fwd1, gla_bwd1},       /* gla-recurrent */
    {gla_fwd1, gla_bwd1},       /* gla-chunk */
    {d_fwd, d_bwd},             /* delta_rule-recurrent */
    {d_fwd, d_bwd},             /* delta_rule-chunk */
    {gd_fwd, gd_bwd},           /* gated_delta_rule-recurrent */
    {gd_fwd, gd_bwd},           /* gated_delta_rule-chunk */
    {kda_fwd, kda_bwd},         /* kda-recurrent */
    {kda_fwd, kda_bwd},         /* kda-chunk */
    {perf_fwd, perf_bwd},       /* performer-recurrent */
    {perf_fwd, perf_bwd},       /* performer-chunk */
};
_Static_assert(sizeof TABLE / sizeof TABLE[0] == LA__OP_COUNT,
               "one reference per registry entry, in la__op_id order");

const ref_op_entry *ref_op_get(int id) { return id >= 0 && id < LA__OP_COUNT ? &TABLE[id] : NULL; }

/* ---- random cases --------------------------------------------------------- */

#include <string.h>

enum { I_Q, I_K, I_V, I_G, I_GGAMMA, I_BETA, I_S0, I_Z0, I_DO, I_DST, I_DZT, I_W, I_MU0, I_COUNT };
enum {
    O_O,
    O_ST,
    O_ZT,
    O_LSE,
    O_DQ,
    O_DK,
    O_DV,
    O_DG,
    O_DGGAMMA,
    O_DBETA,
    O_DS0,
    O_DZ0,
    O_MU, /* final_key_max (forward) */
    O_COUNT
};
_Static_assert(I_COUNT <= REF_CASE_MAX_BUFS && O_COUNT <= REF_CASE_MAX_BUFS, "ref_op_case sizes");

static float *falloc(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }

int ref_op_case_init(ref_op_case *c, int id, const la_dims *dims, int64_t chunk, uint64_t seed,
                     unsigned flags) {
    memset(c, 0, sizeof *c);
    c->e = la__op_get(id);
    if (!c->e) return -1;
    const unsigned nd = c->e->needs;
    c->dims = *dims;
    if (!(nd & LA__NEED_HV)) c->dims.HV = 0;
    if (dims->cu_seqlens) {
        if (dims->n_seqs < 0 || dims->n_seqs > 63) return -1;
        memcpy(c->cu, dims->cu_seqlens, (size_t)(dims->n_seqs + 1) * sizeof(int64_t));
        c->dims.cu_seqlens = c->cu;
    }
    const la_dims *d = &c->dims;
    const int64_t H = d->H, HS = d->HV ? d->HV : H, K = d->K, V = d->V;
    const int64_t N = d->cu_seqlens ? d->n_seqs : d->B;
    const size_t BT = (size_t)(d->B * d->T);
    const int state = (flags & REF_CASE_STATE) && (nd & LA__HAS_STATE);
    const int norm = (nd & LA__NEED_NORMALIZER) != 0;
    const int has_g = (nd & (LA__NEED_G | LA__NEED_G_OPT | LA__NEED_GK)) != 0;
    const int has_gamma = (nd & LA__NEED_G_GAMMA) && !(flags & REF_CASE_NO_GGAMMA);
    c->H = (size_t)H;
    c->n_qk = BT * (size_t)(H * K);
    c->n_v = BT * (size_t)(HS * V);
    c->n_hs = BT * (size_t)HS;
    c->n_g = (nd & LA__NEED_GK) ? c->n_hs * (size_t)K : c->n_hs;
    /* random features: m = K/2 + 3 projection rows (not K, so M != K is
     * exercised), FAVOR+ with its stabiliser and a small eps */
    const int rf = (nd & LA__NEED_RF) != 0;
    la__op_args *a = &c->a;
    if (rf) {
        a->rf = la_rf_opts_default();
        a->rf.eps = 1e-4f;
        a->rf_m = K / 2 + 3;
    }
    a->dims = c->dims;
    const int64_t R = la__op_state_rows(c->e, a); /* rows of one head's state */
    c->n_state = (size_t)(N * HS * R * V);
    c->n_norm = (size_t)(N * H * R);
    c->n_mu = rf ? (size_t)(N * H) : 0;
    c->n_lse = BT * (size_t)H;

    la_rng rng;
    la_rng_seed(&rng, seed);
    const size_t in_n[I_COUNT] = {c->n_qk,
                                  c->n_qk,
                                  c->n_v,
                                  has_g ? c->n_g : 0,
                                  has_gamma ? (size_t)H : 0,
                                  (nd & LA__NEED_BETA) ? c->n_hs : 0,
                                  state ? c->n_state : 0,
                                  state && norm ? c->n_norm : 0,
                                  c->n_v,
                                  state ? c->n_state : 0,
                                  state && norm ? c->n_norm : 0,
                                  rf ? (size_t)(a->rf_m * K) : 0,
                                  state ? c->n_mu : 0};
    for (int i = 0; i < I_COUNT; i++)
        if (in_n[i] && !(c->in[i] = falloc(in_n[i]))) return -1;
    ref_fill_normal(c->in[I_Q], c->n_qk, &rng, 1.0);
    ref_fill_normal(c->in[I_K], c->n_qk, &rng, 1.0);
    ref_fill_normal(c->in[I_V], c->n_v, &rng, 1.0);
    ref_fill_normal(c->in[I_DO], c->n_v, &rng, 1.0);
    if (c->in[I_G]) {
        ref_fill_uniform(c->in[I_G], c->n_g, &rng, -0.3, 0.0);
        if (flags & REF_CASE_EXTREME)
            for (size_t i = 0; i < c->n_g; i++)
                c->in[I_G][i] = i % 7 == 3 ? -1e4f : i % 5 == 1 ? 0.0f : c->in[I_G][i];
    }
    if (c->in[I_GGAMMA]) la_retnet_decay(c->in[I_GGAMMA], H);
    if (c->in[I_BETA]) {
        ref_fill_uniform(c->in[I_BETA], c->n_hs, &rng, 0.05, 1.0);
        if (flags & REF_CASE_EXTREME)
            for (size_t i = 0; i < c->n_hs; i++)
                c->in[I_BETA][i] = i % 4 == 0   ? 0.0f
                                   : i % 4 == 1 ? 1.0f
                                   : i % 4 == 2 ? 1.99f
                                                : c->in[I_BETA][i];
    }
    if (c->in[I_S0]) ref_fill_normal(c->in[I_S0], c->n_state, &rng, 0.5);
    if (c->in[I_DST]) ref_fill_normal(c->in[I_DST], c->n_state, &rng, 0.5);
    if (c->in[I_Z0]) ref_fill_uniform(c->in[I_Z0], c->n_norm, &rng, 0.5, 1.5);
    if (c->in[I_DZT]) ref_fill_normal(c->in[I_DZT], c->n_norm, &rng, 0.5);
    if (c->in[I_W]) ref_fill_normal(c->in[I_W], (size_t)(a->rf_m * K), &rng, 1.0);
    if (c->in[I_MU0]) ref_fill_uniform(c->in[I_MU0], c->n_mu, &rng, 0.0, 2.0);

    const size_t out_n[O_COUNT] = {c->n_v,
                                   (nd & LA__HAS_STATE) ? c->n_state : 0,
                                   norm ? c->n_norm : 0,
                                   (nd & LA__HAS_LSE) ? c->n_lse : 0,
                                   c->n_qk,
                                   c->n_qk,
                                   c->n_v,
                                   has_g ? c->n_g : 0,
                                   0,
                                   (nd & LA__NEED_BETA) ? c->n_hs : 0,
                                   (nd & LA__HAS_STATE) ? c->n_state : 0,
                                   norm ? c->n_norm : 0,
                                   c->n_mu};
    for (int i = 0; i < O_COUNT; i++)
        if (out_n[i]) {
            if (!(c->out[i] = falloc(out_n[i]))) return -1;
            if (!(c->wbuf[i] = calloc(out_n[i], sizeof(double)))) return -1;
        }
    ref_op_case_poison(c);

    a->chunk_size = c->e->form == LA_FORM_CHUNK ? chunk : 0;
    a->use_qk_l2norm = (nd & LA__NEED_L2NORM) != 0;
    a->feature_map = (nd & LA__NEED_FEATURE_MAP) ? LA_FEATURE_ELU1 : LA_FEATURE_IDENTITY;
    a->normalize = norm;
    a->q = c->in[I_Q];
    a->k = c->in[I_K];
    a->v = c->in[I_V];
    a->g = c->in[I_G];
    a->g_gamma = c->in[I_GGAMMA];
    a->beta = c->in[I_BETA];
    a->initial_state = c->in[I_S0];
    a->initial_norm = c->in[I_Z0];
    a->d_o = c->in[I_DO];
    a->d_final_state = c->in[I_DST];
    a->d_final_norm = c->in[I_DZT];
    a->o = c->out[O_O];
    a->final_state = c->out[O_ST];
    a->final_norm = c->out[O_ZT];
    a->lse = c->out[O_LSE];
    a->dq = c->out[O_DQ];
    a->dk = c->out[O_DK];
    a->dv = c->out[O_DV];
    a->dg = c->out[O_DG];
    a->dg_gamma = NULL;
    a->dbeta = c->out[O_DBETA];
    a->d_initial_state = c->out[O_DS0];
    a->d_initial_norm = c->out[O_DZ0];
    a->rf_W = c->in[I_W];
    a->initial_key_max = c->in[I_MU0];
    a->final_key_max = c->out[O_MU];
    ref_op_out *w = &c->want;
    w->o = c->wbuf[O_O];
    w->final_state = c->wbuf[O_ST];
    w->final_norm = c->wbuf[O_ZT];
    w->lse = c->wbuf[O_LSE];
    w->dq = c->wbuf[O_DQ];
    w->dk = c->wbuf[O_DK];
    w->dv = c->wbuf[O_DV];
    w->dg = c->wbuf[O_DG];
    w->dg_gamma = NULL;
    w->dbeta = c->wbuf[O_DBETA];
    w->d_initial_state = c->wbuf[O_DS0];
    w->d_initial_norm = c->wbuf[O_DZ0];
    w->final_key_max = c->wbuf[O_MU];
    return 0;
}

void ref_op_case_poison(ref_op_case *c) {
    ref_op_output l[16];
    const int n = ref_op_case_outputs(c, l);
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < l[i].n; j++) l[i].got[j] = NAN;
}

int ref_op_case_reference(ref_op_case *c) {
    const ref_op_entry *r = ref_op_get(c->e->id);
    if (!r || r->forward(&c->a, &c->want)) return -1;
    return r->backward(&c->a, &c->want);
}

void ref_op_case_free(ref_op_case *c) {
    for (int i = 0; i < I_COUNT; i++) free(c->in[i]);
    for (int i = 0; i < O_COUNT; i++) {
        free(c->out[i]);
        free(c->wbuf[i]);
    }
    memset(c, 0, sizeof *c);
}

int ref_op_case_outputs(const ref_op_case *c, ref_op_output *list) {
    static const char *const names[O_COUNT] = {"o",
                                               "final_state",
                                               "final_norm",
                                               "lse",
                                               "dq",
                                               "dk",
                                               "dv",
                                               "dg",
                                               "dg_gamma",
                                               "dbeta",
                                               "d_initial_state",
                                               "d_initial_norm",
                                               "final_key_max"};
    const size_t ns[O_COUNT] = {c->n_v,     c->n_state, c->n_norm, c->n_lse, c->n_qk,
                                c->n_qk,    c->n_v,     c->n_g,    c->H,     c->n_hs,
                                c->n_state, c->n_norm,  c->n_mu};
    int n = 0;
    for (int i = 0; i < O_COUNT; i++)
        if (c->out[i])
            list[n++] =
                (ref_op_output){names[i], c->out[i], c->wbuf[i], ns[i], i >= O_DQ && i != O_MU};
    return n;
}
