/* linattn check: random-feature maps (forward phi and stab, backward dx)
 * against the float64 reference. */
#include "check.h"
#include "ref_feature_map.h"
#include "ref_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const char *KIND[] = {"positive", "hyperbolic", "trig_gauss",
                             "trig_softmax", "relu"};

/* Bound for every row: the maps are evaluated in double from float32
 * inputs and rounded once or twice, so errors are ~1e-7 (measured); 1e-5
 * is the project's float32-vs-float64 bound. */
#define RF_TOL 1e-5

static void check_map(check_report *r, la_random_feature kind, la_rf_role role,
                      const la_dims *dims, const float *x, const float *W,
                      int64_t m, const float *g) {
  const int64_t d = dims->K, H = dims->H, M = la_rf_num_features(kind, m);
  const int64_t N = dims->B, nt = dims->B * dims->T * H;
  char name[48], form[32];
  snprintf(name, sizeof name, "rf %s %s", KIND[kind],
           role == LA_RF_KEY ? "key" : "query");
  const int has_stab = kind != LA_RF_TRIG_GAUSSIAN && kind != LA_RF_RELU;
  snprintf(form, sizeof form, "m=%lld%s", (long long)m,
           has_stab ? " stabilised" : "");
  la_rf_opts o = la_rf_opts_default();
  o.kind = kind;
  o.role = role;
  o.eps = kind == LA_RF_RELU ? 1e-3f : 0.0f;
  const size_t n_stab = (size_t)(role == LA_RF_KEY ? N * H : nt);
  float *phi = malloc((size_t)(nt * M) * sizeof *phi),
        *stab = malloc(n_stab * sizeof *stab);
  float *dx = malloc((size_t)(nt * d) * sizeof *dx);
  double *wphi = malloc((size_t)(nt * M) * sizeof *wphi),
         *wstab = malloc(n_stab * sizeof *wstab);
  double *wdx = malloc((size_t)(nt * d) * sizeof *wdx);
  double *Wd = ref_to_double(W, (size_t)(m * d));
  double *xs = malloc((size_t)(dims->T * d) * sizeof *xs);
  double *gs = malloc((size_t)(dims->T * M) * sizeof *gs);
  double *ps = malloc((size_t)(dims->T * M) * sizeof *ps);
  double *ds = malloc((size_t)(dims->T * d) * sizeof *ds);
  double *ss = malloc((size_t)dims->T * sizeof *ss);
  if (!phi || !stab || !dx || !wphi || !wstab || !wdx || !Wd || !xs || !gs ||
      !ps || !ds || !ss) {
    check_call_failed(r, name, form, LA_ERR_OUT_OF_MEMORY);
    goto done;
  }
  la_status st = la_rf_forward(r->ctx, &o, dims, phi, stab, x, W, m);
  if (st) {
    check_call_failed(r, name, form, st);
    goto done;
  }
  st = la_rf_backward(r->ctx, &o, dims, dx, g, x, W, m);
  if (st) {
    check_call_failed(r, name, form, st);
    goto done;
  }
  for (int64_t n = 0; n < N; n++)
    for (int64_t h = 0; h < H; h++) {
      const int64_t T = ref_gather(xs, x, dims, n, h, H, d);
      ref_gather(gs, g, dims, n, h, H, M);
      ref_rf_forward(&o, T, d, m, xs, Wd, ps, ss, 0);
      ref_rf_backward(&o, T, d, m, xs, Wd, ss, gs, ds);
      ref_scatter(wphi, ps, dims, n, h, H, M);
      ref_scatter(wdx, ds, dims, n, h, H, d);
      if (role == LA_RF_KEY) {
        wstab[n * H + h] = ss[0];
      } else {
        for (int64_t t = 0; t < T; t++)
          wstab[(n * T + t) * H + h] = ss[t];
      }
    }
  check_add(r, name, form, "phi", ref_max_rel_err(phi, wphi, (size_t)(nt * M)),
            RF_TOL);
  if (has_stab)
    check_add(r, name, form, "stab", ref_max_rel_err(stab, wstab, n_stab),
              RF_TOL);
  check_add(r, name, form, "dx", ref_max_rel_err(dx, wdx, (size_t)(nt * d)),
            RF_TOL);
done:
  free(phi);
  free(stab);
  free(dx);
  free(wphi);
  free(wstab);
  free(wdx);
  free(Wd);
  free(xs);
  free(gs);
  free(ps);
  free(ds);
  free(ss);
}

/* A tiny run of the approximation lab's core: the sampled MSE of the plain
 * estimator must match the closed form of MATH.md 3 within 5 standard
 * errors of the sample (the row's bound, relative to the theory). */
static void check_approx(check_report *r) {
  const int64_t d = 8, m = 32, P = 4;
  const int draws = r->quick ? 400 : 1500;
  double X[4 * 8], Y[4 * 8];
  la_rng rng;
  la_rng_seed(&rng, r->seed ^ 0xa99u);
  ref_random_pairs(X, Y, P, d, 1.2, &rng);
  const la_random_feature kinds[] = {LA_RF_FAVOR_POSITIVE,
                                     LA_RF_FAVOR_HYPERBOLIC, LA_RF_TRIG_SOFTMAX,
                                     LA_RF_TRIG_GAUSSIAN};
  for (int i = 0; i < 4; i++) {
    char name[48];
    snprintf(name, sizeof name, "approx %s iid", KIND[kinds[i]]);
    ref_mse_stats s;
    la_status st =
        ref_rf_kernel_mse(r->ctx, kinds[i], LA_PROJ_IID, LA_SCALING_CHI, d, m,
                          X, Y, P, 1, draws, r->seed * 7777u + (uint64_t)i, &s);
    if (st) {
      check_call_failed(r, name, "m=32", st);
      continue;
    }
    check_add(r, name, "m=32 mse/theory", "mse",
              fabs(s.mse - s.theory) / s.theory, 5 * s.se / s.theory);
  }
}

/* Performer attention (forward o, backward dq, dk, dv) against the float64
 * composition ref_rf_forward -> ref_kernel_attn (and back through
 * ref_kernel_attn_backward -> ref_rf_backward) when non-causal, and
 * ref_performer_causal (running key maximum) and its backward when
 * causal. Bound 1e-5 for positive features (all attention weights >= 0, so
 * no cancellation in the denominator). */
static void check_performer(check_report *r, la_random_feature kind, int causal,
                            la_form form) {
  const int64_t B = 2, H = 2, T = r->quick ? 33 : 200, d = r->quick ? 8 : 32,
                V = r->quick ? 5 : 32;
  const int64_t m = r->quick ? 16 : 64, M = la_rf_num_features(kind, m);
  const int64_t N = B, nqk = B * T * H * d, nv = B * T * H * V;
  la_dims dims = {.B = B, .T = T, .H = H, .K = d, .V = V};
  char name[48], fname[32];
  static const char *FORMS[] = {"parallel", "recurrent", "chunk16"};
  snprintf(name, sizeof name, "performer %s %s", KIND[kind],
           causal ? "causal" : "non-causal");
  snprintf(fname, sizeof fname, "%s m=%lld", causal ? FORMS[form] : "all",
           (long long)m);
  la_rng rng;
  la_rng_seed(&rng, r->seed ^ 0x9e7f0u);
  float *q = malloc((size_t)nqk * sizeof *q),
        *k = malloc((size_t)nqk * sizeof *k);
  float *v = malloc((size_t)nv * sizeof *v),
        *g = malloc((size_t)nv * sizeof *g);
  float *W = malloc((size_t)(m * d) * sizeof *W),
        *o = malloc((size_t)nv * sizeof *o);
  float *dq = malloc((size_t)nqk * sizeof *dq),
        *dk = malloc((size_t)nqk * sizeof *dk);
  float *dv = malloc((size_t)nv * sizeof *dv);
  double *wo = malloc((size_t)nv * sizeof *wo),
         *wdq = malloc((size_t)nqk * sizeof *wdq);
  double *wdk = malloc((size_t)nqk * sizeof *wdk),
         *wdv = malloc((size_t)nv * sizeof *wdv);
  double *qs = malloc((size_t)(T * d) * sizeof *qs),
         *ks = malloc((size_t)(T * d) * sizeof *ks);
  double *vs = malloc((size_t)(T * V) * sizeof *vs),
         *gs = malloc((size_t)(T * V) * sizeof *gs);
  double *pq = malloc((size_t)(T * M) * sizeof *pq),
         *pk = malloc((size_t)(T * M) * sizeof *pk);
  double *dpq = malloc((size_t)(T * M) * sizeof *dpq),
         *dpk = malloc((size_t)(T * M) * sizeof *dpk);
  double *os = malloc((size_t)(T * V) * sizeof *os),
         *d1 = malloc((size_t)(T * V) * sizeof *d1);
  double *d2 = malloc((size_t)(T * d) * sizeof *d2),
         *sq = malloc((size_t)T * sizeof *sq);
  double *d3 = malloc((size_t)(T * d) * sizeof *d3),
         *mu = malloc((size_t)T * sizeof *mu);
  double *Wd = NULL;
  if (!q || !k || !v || !g || !W || !o || !dq || !dk || !dv || !wo || !wdq ||
      !wdk || !wdv || !qs || !ks || !vs || !gs || !pq || !pk || !dpq || !dpk ||
      !os || !d1 || !d2 || !sq || !d3 || !mu) {
    check_call_failed(r, name, fname, LA_ERR_OUT_OF_MEMORY);
    goto done;
  }
  ref_fill_normal(q, (size_t)nqk, &rng, 0.6);
  ref_fill_normal(k, (size_t)nqk, &rng, 0.6);
  ref_fill_normal(v, (size_t)nv, &rng, 1.0);
  ref_fill_normal(g, (size_t)nv, &rng, 1.0);
  la_status st = la_projection_draw(W, m, d, LA_PROJ_ORTHOGONAL, LA_SCALING_CHI,
                                    r->seed + 5);
  la_rf_opts rf = la_rf_opts_default();
  rf.kind = kind;
  la_linear_attn_opts attn = la_linear_attn_opts_default();
  attn.feature_map = LA_FEATURE_IDENTITY;
  attn.normalize = 1;
  attn.causal = causal;
  attn.form = form;
  attn.chunk_size = 16;
  if (!st)
    st = la_performer_attn_forward(r->ctx, &rf, &attn, &dims, o, q, k, v, W, m);
  if (!st)
    st = la_performer_attn_backward(r->ctx, &rf, &attn, &dims, dq, dk, dv, g, q,
                                    k, v, W, m);
  if (st) {
    check_call_failed(r, name, fname, st);
    goto done;
  }
  Wd = ref_to_double(W, (size_t)(m * d));
  if (!Wd) {
    check_call_failed(r, name, fname, LA_ERR_OUT_OF_MEMORY);
    goto done;
  }
  la_rf_opts oq = rf, ok = rf;
  ok.role = LA_RF_KEY;
  for (int64_t n = 0; n < N; n++)
    for (int64_t h = 0; h < H; h++) {
      double sk;
      ref_gather(qs, q, &dims, n, h, H, d);
      ref_gather(ks, k, &dims, n, h, H, d);
      ref_gather(vs, v, &dims, n, h, H, V);
      ref_gather(gs, g, &dims, n, h, H, V);
      if (causal) { /* running key maximum (MATH.md 3) */
        ref_performer_causal(&rf, attn.eps, T, d, V, m, qs, ks, vs, Wd, NULL,
                             NULL, -INFINITY, sq, mu, 0, os, NULL, NULL, NULL,
                             NULL);
        ref_scatter(wo, os, &dims, n, h, H, V);
        ref_performer_causal_backward(&rf, attn.eps, T, d, V, m, qs, ks, vs,
                                      Wd, NULL, NULL, -INFINITY, sq, mu, gs,
                                      NULL, NULL, d2, d3, d1, NULL, NULL);
        ref_scatter(wdv, d1, &dims, n, h, H, V);
        ref_scatter(wdq, d2, &dims, n, h, H, d);
        ref_scatter(wdk, d3, &dims, n, h, H, d);
        continue;
      }
      ref_rf_forward(&oq, T, d, m, qs, Wd, pq, sq, 0);
      ref_rf_forward(&ok, T, d, m, ks, Wd, pk, &sk, 0);
      ref_kernel_attn(T, M, V, pq, pk, vs, causal, attn.eps, os);
      ref_scatter(wo, os, &dims, n, h, H, V);
      ref_kernel_attn_backward(T, M, V, pq, pk, vs, causal, attn.eps, gs, dpq,
                               dpk, d1);
      ref_scatter(wdv, d1, &dims, n, h, H, V);
      ref_rf_backward(&oq, T, d, m, qs, Wd, sq, dpq, d2);
      ref_scatter(wdq, d2, &dims, n, h, H, d);
      ref_rf_backward(&ok, T, d, m, ks, Wd, &sk, dpk, d2);
      ref_scatter(wdk, d2, &dims, n, h, H, d);
    }
  check_add(r, name, fname, "o", ref_max_rel_err(o, wo, (size_t)nv), RF_TOL);
  check_add(r, name, fname, "dq", ref_max_rel_err(dq, wdq, (size_t)nqk),
            RF_TOL);
  check_add(r, name, fname, "dk", ref_max_rel_err(dk, wdk, (size_t)nqk),
            RF_TOL);
  check_add(r, name, fname, "dv", ref_max_rel_err(dv, wdv, (size_t)nv), RF_TOL);
done:
  free(q);
  free(k);
  free(v);
  free(g);
  free(W);
  free(o);
  free(dq);
  free(dk);
  free(dv);
  free(wo);
  free(wdq);
  free(wdk);
  free(wdv);
  free(qs);
  free(ks);
  free(vs);
  free(gs);
  free(pq);
  free(pk);
  free(dpq);
  free(dpk);
  free(os);
  free(d1);
  free(d2);
  free(sq);
  free(d3);
  free(mu);
  free(Wd);
}

void check_feature_maps(check_report *r) {
  for (int kind = 0; kind < 2; kind++) { /* positive, hyperbolic */
    check_performer(r, (la_random_feature)kind, 0, LA_FORM_RECURRENT);
    for (int form = 0; form < 3; form++)
      check_performer(r, (la_random_feature)kind, 1, (la_form)form);
  }
  check_approx(r);
  const int64_t B = 2, H = 2;
  const int64_t T = r->quick ? 17 : 128, d = r->quick ? 8 : 32,
                m = r->quick ? 12 : 64;
  la_dims dims = {.B = B, .T = T, .H = H, .K = d, .V = 1};
  la_rng rng;
  la_rng_seed(&rng, r->seed ^ 0xfea7u);
  const size_t nx = (size_t)(B * T * H * d), ng = (size_t)(B * T * H * 2 * m);
  float *x = malloc(nx * sizeof *x), *W = malloc((size_t)(m * d) * sizeof *W);
  float *g = malloc(ng * sizeof *g);
  if (!x || !W || !g) {
    check_call_failed(r, "rf", "setup", LA_ERR_OUT_OF_MEMORY);
    goto done;
  }
  ref_fill_normal(x, nx, &rng, 1.0);
  ref_fill_normal(g, ng, &rng, 1.0);
  la_status st =
      la_projection_draw(W, m, d, LA_PROJ_ORTHOGONAL, LA_SCALING_CHI, r->seed);
  if (st) {
    check_call_failed(r, "la_projection_draw", "orthogonal", st);
    goto done;
  }
  for (int kind = 0; kind <= LA_RF_RELU; kind++)
    for (int role = 0; role < 2; role++)
      check_map(r, (la_random_feature)kind, (la_rf_role)role, &dims, x, W, m,
                g);
done:
  free(x);
  free(W);
  free(g);
}
