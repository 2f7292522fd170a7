/* Where the delta rules' chunk time goes (bench/NOTES.md, cpu-delta12):
 * at the issue-12 shape (chunk L = 64, K = V = 128, one thread),
 *   1. each matrix product of the chunk forward (la__delta_chunk_step with
 *      a save slot) and of the chunk backward (la__delta_chunk_backward with
 *      the kept products), alone, operands hot, on the best kernel path,
 *      with its count per (chunk, head);
 *   2. the two chunk functions alone, one chunk's data hot (repeated), and
 *      "as in the op": v read in place from [T, H, V] rows (row stride
 *      H V floats), o written into such rows, the save slot (K K^T, U, W,
 *      R: 112 KiB) and the start state written to / read from a 128 MiB
 *      buffer walked chunk after chunk (cold lines), at row stride 1024
 *      (= the op at H = 8: 4 KiB, every row in the same L1 sets) and 1040
 *      (padded);
 *   3. the op itself (la_delta_rule_forward / backward through la_saved,
 *      B = 1, T = 8192, H = 8, l2norm, as bench/delta_ab.c), per (chunk,
 *      head), and the same per head at H = 7, 8, 9 (T = 4096) alternating.
 * Thread CPU time; the FMA peak of the same run; medians of samples.
 * Built with the tools (CMake target delta_products, x86-64).
 * usage: delta_products [gated 0|1] [samples] */
#define _POSIX_C_SOURCE 200809L
#include "linattn.h"
#include "ops/delta_rule/delta_rule.h"

#include "ab_peak.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { L = 64, D = 128 };

static float *falloc(size_t n) {
    float *p = aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
    if (!p) exit(1);
    memset(p, 0, n * sizeof(float));
    return p;
}

static void fill(float *x, size_t n, unsigned *seed, float amp) {
    for (size_t i = 0; i < n; i++) x[i] = amp * ((float)rand_r(seed) / (float)RAND_MAX - 0.5f);
}

static void normalise_rows(float *x, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++) la__delta_l2norm(x + r * n, x + r * n, n);
}

/* ---- 1. products alone -------------------------------------------------- */
enum { P_NN, P_NT, P_TN, P_TN_BLOCK, P_TRIL, P_TRIL_S, P_LOWER, P_TN_LOWER, P_TRSM, P_TRSM_T };
typedef struct prod {
    const char *name;
    int kind, m, n, k, nfwd, nbwd;
} prod;

static float *pA, *pB, *pC, *pAl, *pW1, *pW2;

static void run_prod(const la__kernels *kr, const prod *p) {
    const int m = p->m, n = p->n, k = p->k;
    switch (p->kind) {
    case P_NN: kr->gemm_nn(m, n, k, 1.0f, pA, k, pB, n, 0.0f, pC, n); break;
    case P_NT: kr->gemm_nt(m, n, k, 1.0f, pA, k, pB, k, 0.0f, pC, n); break;
    case P_TN: kr->gemm_tn(m, n, k, 1.0f, pA, m, pB, n, 1.0f, pC, n); break;
    case P_TN_BLOCK: la__gemm_tn_block(kr, m, n, k, 1.0f, pA, m, pB, n, 1.0f, pC, n); break;
    case P_TRIL: kr->gemm_nt_tril(m, k, 0, 1.0f, pA, k, pB, k, 0.0f, pC, m); break;
    case P_TRIL_S: kr->gemm_nt_tril(m, k, 1, 1.0f, pA, k, pB, k, 0.0f, pC, m); break;
    case P_LOWER: kr->gemm_nn_lower(m, n, m, 1.0f, pAl, m, pB, n, 1.0f, pC, n); break;
    case P_TN_LOWER: la__gemm_tn_lower_acc(kr, m, n, pAl, m, pB, n, pC, n); break;
    case P_TRSM: /* a fresh right-hand side each call (the solve is in place) */
        memcpy(pC, pB, (size_t)(m * n) * sizeof(float));
        kr->trsm_llu(m, n, pAl, m, pC, n);
        break;
    default:
        memcpy(pC, pB, (size_t)(m * n) * sizeof(float));
        la__trsm_llu_transposed(kr, m, n, pAl, pW1, pC, pW2);
        break;
    }
}

static double prod_flops(const prod *p) {
    const double m = p->m, n = p->n, k = p->k;
    switch (p->kind) {
    case P_TRIL: return m * (m + 1) * k;
    case P_TRIL_S: return m * (m - 1) * k;
    case P_LOWER:
    case P_TN_LOWER: return m * (m + 1) * n;
    case P_TRSM:
    case P_TRSM_T: return m * (m - 1) * n;
    default: return 2 * m * n * k;
    }
}

/* ---- 2. the chunk functions --------------------------------------------- */
typedef struct chunk_data {
    int gated;
    float *q, *k, *g, *beta; /* [L,K] hot (the driver's normalised chunk rows) */
    float *vrows, *orows;    /* [nch][L][ld] row tensors (ld = row stride) */
    float *vhot, *ohot;      /* [L,V] */
    float *S, *G, *dO, *dq, *dk, *dv, *dbeta, *dg;
    float *kept_big, *ckpt_big; /* [nch] save slots, start states */
    float *work;
    int64_t nch, ld;
} chunk_data;

/* mode bit 0: v (and o) in the row tensors, chunk after chunk (else one
 * chunk's buffers reused); bit 1: the save slots and start states walked
 * (else slot 0 reused, no start state copied). Seconds per call. */
static double time_fwd(const la__kernels *kr, chunk_data *c, int mode, int reps) {
    const size_t kslot = la__delta_chunk_kept_floats(L, D, D), KV = (size_t)D * D;
    double t0 = tcpu();
    for (int i = 0; i < reps; i++) {
        const int64_t ch = i % c->nch, rows = mode & 1, slots = mode & 2;
        const float *v = rows ? c->vrows + (size_t)ch * L * c->ld : c->vhot;
        float *o = rows ? c->orows + (size_t)ch * L * c->ld : c->ohot;
        float *kept = c->kept_big + (slots ? (size_t)ch * kslot : 0);
        if (slots) memcpy(c->ckpt_big + (size_t)ch * KV, c->S, KV * sizeof(float));
        la__delta_chunk_in in = {L, D, D, c->q, c->k, v, c->gated ? c->g : NULL, c->beta,
                                 0.0884f, kr, rows ? c->ld : D};
        la__delta_chunk_step(&in, c->S, o, rows ? c->ld : D, kept, c->work);
    }
    return (tcpu() - t0) / reps;
}

static double time_bwd(const la__kernels *kr, chunk_data *c, int mode, int reps) {
    const size_t kslot = la__delta_chunk_kept_floats(L, D, D), KV = (size_t)D * D;
    double t0 = tcpu();
    for (int i = 0; i < reps; i++) {
        const int64_t ch = c->nch - 1 - i % c->nch, rows = mode & 1, slots = mode & 2;
        const float *v = rows ? c->vrows + (size_t)ch * L * c->ld : c->vhot;
        float *kept = c->kept_big + (slots ? (size_t)ch * kslot : 0);
        const float *S0 = slots ? c->ckpt_big + (size_t)ch * KV : c->S;
        la__delta_chunk_in in = {L, D, D, c->q, c->k, v, c->gated ? c->g : NULL, c->beta,
                                 0.0884f, kr, rows ? c->ld : D};
        la__delta_chunk_backward(&in, S0, kept, c->G, c->dO, c->dq, c->dk, c->dv, c->dbeta,
                                 c->dg, c->work);
        /* keep the carried gradient bounded over many calls (a contraction
         * in the op; here the same chunk again and again) */
        for (size_t j = 0; j < KV; j++) c->G[j] *= 0.5f;
    }
    return (tcpu() - t0) / reps;
}

/* ---- 3. the op ------------------------------------------------------- */
typedef struct op_data {
    int gated;
    la_dims d;
    la_ctx *ctx;
    la_saved *s;
    float *q, *k, *v, *g, *beta, *o, *dq, *dk, *dv, *dg, *dbeta, *d_o;
} op_data;

static void op_init(op_data *p, int gated, int64_t T, int64_t H, unsigned *seed) {
    memset(p, 0, sizeof *p);
    p->gated = gated;
    p->d.B = 1, p->d.T = T, p->d.H = H, p->d.K = D, p->d.V = D;
    const size_t n = (size_t)(T * H * D), ng = (size_t)(T * H);
    p->q = falloc(n), p->k = falloc(n), p->v = falloc(n), p->d_o = falloc(n);
    fill(p->q, n, seed, 2), fill(p->k, n, seed, 2), fill(p->v, n, seed, 2),
        fill(p->d_o, n, seed, 2);
    p->g = falloc(ng), p->beta = falloc(ng);
    for (size_t i = 0; i < ng; i++) {
        p->beta[i] = (float)rand_r(seed) / (float)RAND_MAX;
        p->g[i] = (float)-log1p(exp(-(2.5 + 2.0 * rand_r(seed) / RAND_MAX - 1.0)));
    }
    p->o = falloc(n), p->dq = falloc(n), p->dk = falloc(n), p->dv = falloc(n);
    p->dg = falloc(ng), p->dbeta = falloc(ng);
    if (la_ctx_create(&p->ctx, 1) != LA_OK || la_saved_create(p->ctx, &p->s) != LA_OK) exit(1);
}

static void op_run(op_data *p, double *tf, double *tb) {
    la_gated_opts o = la_gated_opts_default();
    o.use_qk_l2norm = 1;
    o.saved = p->s;
    la_status st;
    double t0 = tcpu();
    if (p->gated)
        st = la_gated_delta_rule_forward(p->ctx, &o, &p->d, p->o, NULL, p->q, p->k, p->v, p->g,
                                         p->beta, NULL);
    else
        st = la_delta_rule_forward(p->ctx, &o, &p->d, p->o, NULL, p->q, p->k, p->v, p->beta, NULL);
    double t1 = tcpu();
    if (!st) {
        if (p->gated)
            st = la_gated_delta_rule_backward(p->ctx, &o, &p->d, p->dq, p->dk, p->dv, p->dg,
                                              p->dbeta, NULL, p->d_o, NULL, p->q, p->k, p->v,
                                              p->g, p->beta, NULL);
        else
            st = la_delta_rule_backward(p->ctx, &o, &p->d, p->dq, p->dk, p->dv, p->dbeta, NULL,
                                        p->d_o, NULL, p->q, p->k, p->v, p->beta, NULL);
    }
    double t2 = tcpu();
    if (st) {
        fprintf(stderr, "error: %s\n", la_last_error());
        exit(1);
    }
    *tf = t1 - t0, *tb = t2 - t1;
}

static void op_free(op_data *p) {
    la_saved_destroy(p->s);
    la_ctx_destroy(p->ctx);
    free(p->q), free(p->k), free(p->v), free(p->d_o), free(p->g), free(p->beta);
    free(p->o), free(p->dq), free(p->dk), free(p->dv), free(p->dg), free(p->dbeta);
}

int main(int argc, char **argv) {
    const int gated = argc > 1 ? atoi(argv[1]) : 0;
    int ns = argc > 2 ? atoi(argv[2]) : 11;
    if (ns < 1) ns = 1;
    if (ns > 64) ns = 64;
    const la__kernels *kr = la__kernels_default();
    unsigned seed = 11;
    const double pk = peak();
    const double pus = pk * 1e3; /* FLOPs per microsecond at the peak */
    printf("%s, isa %s, FMA peak %.1f GFLOP/s (this run), %d samples, medians\n",
           gated ? "Gated DeltaNet" : "DeltaNet", la_isa_name(kr->isa), pk, ns);

    /* 1. products */
    pA = falloc(256 * 256), pB = falloc(256 * 256), pC = falloc(256 * 256);
    pAl = falloc(L * L), pW1 = falloc(L * L), pW2 = falloc(L * D);
    fill(pA, 256 * 256, &seed, 1), fill(pB, 256 * 256, &seed, 1);
    for (int i = 0; i < L; i++) /* a well-conditioned unit-lower solve matrix */
        for (int j = 0; j < L; j++) pAl[i * L + j] = j < i ? 0.02f * pA[i * L + j] : 0.0f;
    const prod ps[] = {
        {"gemm_nt_tril 64x64x128 strict (KK, dM x2)", P_TRIL_S, L, L, D, 1, 2},
        {"gemm_nt_tril 64x64x128 (QK, dP)", P_TRIL, L, L, D, 1, 2},
        {"trsm_llu 64x128 (U, W)", P_TRSM, L, D, 0, 2, 0},
        {"trsm_llu_transposed 64x128 (Yu, Yw)", P_TRSM_T, L, D, 0, 0, 2},
        {"gemm_nn 64x128x128 (W S0, bQ S0 / k G)", P_NN, L, D, D, 2, 1},
        {"gemm_nt 64x128x128 (R G^T, dO S0^T, dR S0^T)", P_NT, L, D, D, 0, 3},
        {"gemm_tn 128x128x64 (main's S += EK^T R, dS0)", P_TN, D, D, L, 0, 0},
        {"gemm_tn_block 128x128x64 (S += EK^T R; dS0 x2)", P_TN_BLOCK, D, D, L, 1, 2},
        {"gemm_nn_lower 64x128x64 (P R; dq, dk)", P_LOWER, L, D, L, 1, 2},
        {"tn_lower_acc 64x128 (P^T dO; dk x2)", P_TN_LOWER, L, D, L, 0, 3},
    };
    const int np = (int)(sizeof ps / sizeof ps[0]);
    double sf = 0, sb = 0, ff = 0, fb = 0;
    printf("\n%-48s %8s %6s %4s %4s\n", "product (alone, hot)", "us/call", "%peak", "fwd",
           "bwd");
    for (int c = 0; c < np; c++) {
        double s[64];
        for (int r = 0; r < ns; r++) {
            const double t0 = tcpu();
            for (int i = 0; i < 200; i++) run_prod(kr, ps + c);
            s[r] = (tcpu() - t0) / 200;
        }
        const double us = 1e6 * ab_median(s, ns, NULL, NULL), fl = prod_flops(ps + c);
        printf("%-48s %8.2f %5.1f%% %4d %4d\n", ps[c].name, us, 100 * fl / us / pus, ps[c].nfwd,
               ps[c].nbwd);
        sf += us * ps[c].nfwd, sb += us * ps[c].nbwd;
        ff += fl * ps[c].nfwd, fb += fl * ps[c].nbwd;
    }
    printf("sum per (chunk, head): fwd %.1f us (%.2f MFLOP, %.1f%% of peak), bwd %.1f us "
           "(%.2f MFLOP, %.1f%%)\n",
           sf, ff / 1e6, 100 * ff / sf / pus, sb, fb / 1e6, 100 * fb / sb / pus);

    /* 2. the chunk functions */
    chunk_data cd = {0};
    cd.gated = gated;
    cd.nch = 128;
    const size_t KV = (size_t)D * D, kslot = la__delta_chunk_kept_floats(L, D, D);
    cd.q = falloc(L * D), cd.k = falloc(L * D), cd.g = falloc(L), cd.beta = falloc(L);
    fill(cd.q, L * D, &seed, 2), fill(cd.k, L * D, &seed, 2);
    normalise_rows(cd.q, L, D), normalise_rows(cd.k, L, D);
    for (int t = 0; t < L; t++) {
        cd.beta[t] = (float)rand_r(&seed) / (float)RAND_MAX;
        cd.g[t] = (float)-log1p(exp(-(2.5 + 2.0 * rand_r(&seed) / RAND_MAX - 1.0)));
    }
    const int64_t lds[2] = {1024, 1040};
    float *vr[2], *orw[2];
    for (int s = 0; s < 2; s++) {
        vr[s] = falloc((size_t)cd.nch * L * lds[s]), orw[s] = falloc((size_t)cd.nch * L * lds[s]);
        fill(vr[s], (size_t)cd.nch * L * lds[s], &seed, 2);
    }
    cd.vhot = falloc(L * D), cd.ohot = falloc(L * D);
    fill(cd.vhot, L * D, &seed, 2);
    cd.S = falloc(KV), cd.G = falloc(KV), cd.dO = falloc(L * D), cd.dq = falloc(L * D);
    cd.dk = falloc(L * D), cd.dv = falloc(L * D), cd.dbeta = falloc(L), cd.dg = falloc(L);
    fill(cd.dO, L * D, &seed, 0.2f);
    cd.kept_big = falloc((size_t)cd.nch * kslot), cd.ckpt_big = falloc((size_t)cd.nch * KV);
    size_t wf = la__delta_chunk_work_floats(L, D, D);
    if (la__delta_chunk_bwd_work_floats(L, D, D) > wf) wf = la__delta_chunk_bwd_work_floats(L, D, D);
    cd.work = falloc(wf);
    /* fill every save slot and start state once (the backward reads them) */
    cd.ld = 1024;
    cd.vrows = vr[0], cd.orows = orw[0];
    time_fwd(kr, &cd, 3, (int)cd.nch);
    const char *cname[] = {"hot (one chunk's buffers reused)", "rows (stride 1024), slot hot",
                           "rows (stride 1040), slot hot", "as in the op, row stride 1024",
                           "as in the op, row stride 1040"};
    const int cmode[] = {0, 1, 1, 3, 3}, cpad[] = {0, 0, 1, 0, 1};
    double cf[5][64], cb[5][64];
    for (int r = 0; r < ns; r++)
        for (int m = 0; m < 5; m++) {
            cd.ld = lds[cpad[m]], cd.vrows = vr[cpad[m]], cd.orows = orw[cpad[m]];
            cf[m][r] = 1e6 * time_fwd(kr, &cd, cmode[m], 256);
            cb[m][r] = 1e6 * time_bwd(kr, &cd, cmode[m], 256);
        }
    printf("\n%-36s %10s %10s   (us per chunk-head; %% of peak on the products' FLOPs)\n",
           "chunk function", "fwd", "bwd");
    for (int m = 0; m < 5; m++) {
        double f = ab_median(cf[m], ns, NULL, NULL), b = ab_median(cb[m], ns, NULL, NULL);
        printf("%-36s %7.1f %4.1f%% %7.1f %4.1f%%\n", cname[m], f, 100 * ff / f / pus, b,
               100 * fb / b / pus);
    }

    /* 3. the op */
    double of[64], ob[64];
    {
        op_data p;
        op_init(&p, gated, 8192, 8, &seed);
        double tf, tb;
        op_run(&p, &tf, &tb); /* warm-up: the saved object grows */
        for (int r = 0; r < ns; r++) op_run(&p, &of[r], &ob[r]);
        const double nch = 8.0 * 8192 / L;
        const double f = 1e6 * ab_median(of, ns, NULL, NULL) / nch;
        const double b = 1e6 * ab_median(ob, ns, NULL, NULL) / nch;
        const double Fm = 8192.0 * (L * 5.0 * D + L * L / 3.0 + 6.0 * D * D) * 8 / nch;
        printf("\nop (T 8192, H 8, saved, l2norm), per chunk-head: fwd %.1f us (%.1f%% of peak "
               "on the products, %.1f%% on the registry model), bwd %.1f us (%.1f%%; fwd+bwd "
               "model %.1f%%)\n",
               f, 100 * ff / f / pus, 100 * Fm / f / pus, b, 100 * fb / b / pus,
               100 * 3 * Fm / (f + b) / pus);
        op_free(&p);
    }
    /* per head at H = 7, 8, 9 (T = 4096), alternating */
    {
        op_data p[3];
        const int64_t Hs[3] = {7, 8, 9};
        double hf[3][64], hb[3][64], tf, tb;
        for (int h = 0; h < 3; h++) {
            op_init(&p[h], gated, 4096, Hs[h], &seed);
            op_run(&p[h], &tf, &tb);
        }
        for (int r = 0; r < ns; r++)
            for (int h = 0; h < 3; h++) {
                const int hh = (h + r) % 3;
                op_run(&p[hh], &tf, &tb);
                const double nch = (double)Hs[hh] * 4096 / L;
                hf[hh][r] = 1e6 * tf / nch, hb[hh][r] = 1e6 * tb / nch;
            }
        printf("per chunk-head at T 4096:");
        for (int h = 0; h < 3; h++)
            printf("  H %lld: fwd %.1f bwd %.1f us", (long long)Hs[h],
                   ab_median(hf[h], ns, NULL, NULL), ab_median(hb[h], ns, NULL, NULL));
        printf("\n");
        for (int h = 0; h < 3; h++) op_free(&p[h]);
    }
    return 0;
}
