/* Chunkwise form of simple GLA and GLA, forward and backward.
 *
 * A sequence is cut into chunks of C tokens. Inside a chunk the log-gates are
 * summed (G_i = g_1 + ... + g_i, in float64 so that differences of large
 * sums such as -1e4 + small stay exact enough) and the exponentials taken
 * are of non-positive quantities (differences G_i - G_j, i >= j, and G_L -
 * G_j) except one bounded factor <= e^30 per key inside a GLA sub-block (see
 * GLA_SPAN). A full reset (g = -1e4) therefore gives exact zeros, never Inf
 * or NaN. For chunk start state S:
 *
 *   o_i   = scale [ (q_i * e^{G_i}) S + sum_{j<=i} A_ij v_j ],
 *   A_ij  = sum_k q_ik k_jk e^{G_ik - G_jk}            (per key, O(C^2 K))
 *   S'    = Diag(e^{G_L}) S + sum_j (k_j * e^{G_L - G_j})^T v_j.
 *
 * Simple GLA is the same with one gate per token (the factor is a scalar per
 * pair (i, j)). The backward recomputes the chunk start states (two-level
 * checkpoints, O(sqrt(chunks)) K x V blocks), then walks the chunks in
 * reverse with dS, the
 * gradient of the state at the chunk end. The gate gradient is fla's
 * identity (dg from q * dq - k * dk, cumulated within the chunk) rearranged
 * so that the diagonal pair (i, i) and the tokens that cancel in S_end never
 * enter it: without that, a gradient that is exactly zero (T = 1, no
 * initial state) comes out as the rounding noise of two equal float32
 * numbers, and sums such as dg_gamma lose about a decimal digit (see the
 * comment above the gate-gradient block). */
#include "gla.h"

#include "../../kernels/stream.h" /* la__stream_copy, la__stream_fence */

#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* the sub-block size, see the comment above gla_sub_size */
#define GLA_SUB 16

typedef struct chunk_bufs {
    float *S;       /* [K,V] running state (forward) */
    double *G;      /* [C,gw] cumulative log-gates of the chunk */
    float *eG;      /* [C,gw] exp(G_i) */
    float *eLm;     /* [C,gw] exp(G_L - G_i) */
    float *e;       /* [K] GLA: one pair's exp(G_i - G_j), or one sub-block's vector */
    float *R;       /* [C,K] GLA: exp(G_i - G_b), b = first token of i's sub-block */
    float *P;       /* [C,K] GLA: exp(G_e - G_i), e = last token of i's sub-block */
    float *KP;      /* [C,K] GLA: k * P */
    float *F;       /* [C,K] GLA: P_j X_IJ = exp(G_b - G_j) for one sub-block I */
    float *Qc, *Kc; /* [C,K] the chunk's q and k rows, contiguous */
    float *Vc;      /* [C,V] the chunk's v rows */
    float *Qs;      /* [C,K] q * e^{G_i} (inter-chunk); GLA intra: q * R */
    float *Ks;      /* [C,K] k * e^{G_L - G_j} (state update) */
    float *KF;      /* [C,K] GLA: k_j * F_j */
    float *A;       /* [C,C] intra-chunk matrix (lower; zeros above) */
    float *Oc;      /* [C,V] forward: the chunk's output rows, contiguous */
    int64_t sub;    /* GLA: the chunk's sub-block size (gla_sub_size) */
    /* backward only */
    float *ckpt;      /* [ceil(nch/M), K, V] state before every M-th chunk */
    float *states;    /* [M, K, V] states before each chunk of one group of M */
    float *dS;        /* [K,V] */
    float *dqc, *dkc; /* [C,K] dq inter-chunk part, dk state part */
    float *dqs, *dks; /* [C,K] strictly-intra parts (pairs j < i) */
    float *dvc;       /* [C,V] */
    double *dG;       /* [C,gw] */
    double *dGp;      /* [gw] running prefix */
    double *dGc;      /* [K] the state term's constant part, per key */
    float *dA;        /* [C,C] scale dO V^T, strictly lower (times the decay) */
    float *dOc;       /* [C,V] the chunk's d_o rows */
    float *Tq, *Tk;   /* [C,K] GLA backward: products before their gate factor */
    float *QG;        /* [C,K] GLA backward: q * e^{G_i} (the dS update; gla_bwd_factors) */
    float *Eb;        /* [2 nsub,K] GLA backward: e^{G_b}, e^{G_L - G_e} of each sub-block */
    float *diag;      /* [2C] backward: A_ii = scale q_i.k_i, dA_ii = scale do_i.v_i */
    double *Gall;     /* [nch,C] simple GLA, one state pass (group 1): every chunk's G */
    int stream;       /* cpu-sglabwd18: dq, dk, dv (dg) rows by la__stream_copy (the task fences) */
} chunk_bufs;

static size_t chunk_layout(const gla_job *j, int64_t L, int backward, char *base, chunk_bufs *b) {
    const size_t K = (size_t)j->K, V = (size_t)j->V, C = (size_t)j->C;
    const size_t gw = j->per_key ? K : 1, CKg = j->per_key ? C * K : 1;
    la__arena a = {.base = base};
    b->stream = 0;
    /* the forward keeps the states of a whole head group */
    b->S = la__arena_take(&a, backward ? 1 : (size_t)la__gla_fwd_heads(j), K * V * sizeof(float));
    b->G = la__arena_take(&a, C * gw, sizeof(double));
    b->eG = la__arena_take(&a, C * gw, sizeof(float));
    b->eLm = la__arena_take(&a, C * gw, sizeof(float));
    b->e = la__arena_take(&a, K, sizeof(float));
    b->R = la__arena_take(&a, CKg, sizeof(float));
    b->P = la__arena_take(&a, CKg, sizeof(float));
    b->KP = la__arena_take(&a, CKg, sizeof(float));
    b->F = la__arena_take(&a, CKg, sizeof(float));
    b->Qc = la__arena_take(&a, C * K, sizeof(float));
    b->Kc = la__arena_take(&a, C * K, sizeof(float));
    b->Vc = la__arena_take(&a, C * V, sizeof(float));
    b->Qs = la__arena_take(&a, C * K, sizeof(float));
    b->Ks = la__arena_take(&a, C * K, sizeof(float));
    b->KF = la__arena_take(&a, CKg, sizeof(float));
    b->A = la__arena_take(&a, C * C, sizeof(float));
    b->Oc = la__arena_take(&a, backward ? 0 : C * V, sizeof(float));
    if (backward) {
        /* cpu-sgsaved13: with the forward's saved states, no checkpoints */
        const size_t nch = (size_t)((L + j->C - 1) / j->C), M = j->saved ? 0 : (size_t)j->group;
        const size_t ngroups = M ? (nch + M - 1) / M : 0;
        if (ngroups + M && K * V > SIZE_MAX / sizeof(float) / (ngroups + M)) return 0;
        b->ckpt = la__arena_take(&a, ngroups, K * V * sizeof(float));
        b->states = la__arena_take(&a, M, K * V * sizeof(float));
        b->dS = la__arena_take(&a, K * V, sizeof(float));
        b->dqc = la__arena_take(&a, C * K, sizeof(float));
        b->dkc = la__arena_take(&a, C * K, sizeof(float));
        b->dqs = la__arena_take(&a, C * K, sizeof(float));
        b->dks = la__arena_take(&a, C * K, sizeof(float));
        b->dvc = la__arena_take(&a, C * V, sizeof(float));
        b->dG = la__arena_take(&a, C * gw, sizeof(double));
        b->dGp = la__arena_take(&a, gw, sizeof(double));
        b->dGc = la__arena_take(&a, K, sizeof(double));
        b->dA = la__arena_take(&a, C * C, sizeof(float));
        b->dOc = la__arena_take(&a, C * V, sizeof(float));
        b->Tq = la__arena_take(&a, CKg, sizeof(float));
        b->Tk = la__arena_take(&a, CKg, sizeof(float));
        b->QG = la__arena_take(&a, CKg, sizeof(float));
        b->Eb = la__arena_take(&a, j->per_key ? 2 * ((C + GLA_SUB - 1) / GLA_SUB) * K : 0,
                               sizeof(float));
        b->diag = la__arena_take(&a, 2 * C, sizeof(float));
        /* simple GLA (a few bytes per token): G summed once per chunk. GLA
         * sums twice instead (keeping [nch,C,K] doubles doubled the memory
         * of the one state pass and measured no faster) */
        b->Gall = la__arena_take(&a, M == 1 && !j->per_key ? nch * C : 0, sizeof(double));
        if (j->saved) b->ckpt = b->states = NULL;
    }
    return la__arena_size(&a);
}

/* Up to `most` heads per task, fewer where that would leave a thread without
 * a task: N * ceil(H / heads) >= min(threads, N H). */
static int64_t heads_per_task(const gla_job *j, int64_t most) {
    const int64_t N = la__num_seqs(j->d), threads = la_ctx_threads(j->ctx);
    const int64_t groups = N >= threads ? 1 : (threads + N - 1) / N; /* per sequence */
    const int64_t heads = (j->H + groups - 1) / groups;
    return heads < 1 ? 1 : heads > most ? most : heads;
}

/* cpu-sgla19: simple GLA's forward too (it kept LA__GLA_HEAD_GROUP) */
int64_t la__gla_fwd_heads(const gla_job *j) { return heads_per_task(j, LA__GLA_FWD_HEADS); }

size_t la__gla_chunk_fwd_bytes(const gla_job *j) {
    chunk_bufs b;
    return chunk_layout(j, 0, 0, NULL, &b);
}

size_t la__gla_chunk_bwd_bytes(const gla_job *j, int64_t L) {
    chunk_bufs b;
    return chunk_layout(j, L, 1, NULL, &b);
}

/* exp(x) for x <= 0 (the only arguments here: differences of cumulative
 * sums of non-positive log-gates): the library's vectorisable e^x
 * (src/kernels/vexp.h), exactly 0 below -80, so a reset gate g = -1e4 gives
 * exact zeros, never Inf or NaN. */
GLA_INLINE float exp_nonpos(float x) { return la__exp_nonpos(x); }

/* e^x for 0 <= x <= GLA_SPAN (30): the same code, whose argument reduction
 * x = n ln2 + r and exponent-bit addition stay exact up to n = 126; here
 * n <= 44 and the result is at most e^30 = 1.1e13 (a sub-block's own
 * pair factors, below). */
GLA_INLINE float exp_span(float x) { return la__exp_nonpos(x); }

/* sum_x a_x b_x c_x, in eight partial sums (vectorisable). */
GLA_INLINE float dot3(const float *a, const float *b, const float *c, int64_t n) {
    float acc[8] = {0};
    int64_t x = 0;
    for (; x + 8 <= n; x += 8)
        for (int u = 0; u < 8; u++) acc[u] += a[x + u] * b[x + u] * c[x + u];
    float s = 0.0f;
    for (; x < n; x++) s += a[x] * b[x] * c[x];
    for (int u = 0; u < 8; u++) s += acc[u];
    return s;
}

/* GLA's pair factors e_k = exp(G_ik - G_jk), i >= j, would cost an
 * exponential per key and pair if taken one by one. The chunk is cut into
 * sub-blocks of GLA_SUB tokens, or of 2 GLA_SUB where the gates allow
 * (gla_sub_size; secondary chunking, as in Yang et al.'s chunkwise GLA);
 * with b(i) the first and e(i) the last token of i's sub-block, every
 * token gets two factors
 *   R_i = exp(G_i - G_b(i)) <= 1,   P_i = exp(G_e(i) - G_i) <= 1,
 * and every pair of sub-blocks J <= I one per-key vector
 *   X_IJ = exp(G_b(I) - G_e(J))     (<= 1 for J < I),
 * so that for j in J, i in I:
 *   exp(G_i - G_j) = R_i * X_IJ * P_j,
 * and the rows of sub-block I times all earlier rows are one matrix product
 * of pre-scaled rows, (q_i R_i) . (k_j P_j X_IJ). For J < I every factor is
 * <= 1 (G never increases, g <= 0): no overflow whatever the gates, and a
 * factor that underflows to 0 stands for a product below e^-80. A
 * sub-block's own pairs (J = I, b <= j <= i) use X_II = exp(G_b - G_e) =
 * e^{span} >= 1 per key: when the largest span over the keys is <= GLA_SPAN,
 * X_II <= e^30 and R_i >= e^-30 stay normal floats far from overflow, and
 * every product q_ik R_ik X_IIk k_jk P_jk is q_ik k_jk e^{G_ik - G_jk} to a
 * few ulps, as with the pair's own exponential. A sub-block whose span is
 * larger (strong gates, resets such as g = -1e4) takes its own pairs one by
 * one with their own exponentials (no exp of a positive number beyond e^30,
 * no 0 * Inf). The inter-chunk factors come from the same two:
 * e^{G_i} = e^{G_b(i)} R_i and e^{G_L - G_j} = e^{G_L - G_e(j)} P_j, so a
 * token costs two exponentials per key. */
#define GLA_SPAN 30.0

/* cpu-gla14: the sub-block size of a chunk of L rows (G, its [L, K]
 * cumulative gates, filled): 2 GLA_SUB (32) when every block of 32 tokens
 * has a span <= GLA_SPAN, so that all of them take their own pairs as
 * products, else GLA_SUB. Twice the rows per sub-block means fewer
 * pre-scaled key rows (K F: 96 per chunk of 64 instead of 160) and two
 * larger intra products instead of four, for a few more multiply-adds on
 * the diagonal blocks; strong gates (a span above 30 over 32 tokens) keep
 * 16, whose own pairs stay products more often. The choice depends on G
 * only, so the forward (gla_fwd_factors), its split's sums
 * (gla_sum_factors) and the backward (chunk_gate_exps) make the same one:
 * the same state factors, bit for bit. */
GLA_INLINE int64_t gla_sub_size(int64_t K, const double *G, int64_t L) {
    const int64_t sub = 2 * GLA_SUB;
    for (int64_t i0 = 0; i0 < L; i0 += sub) {
        const int64_t i1 = L - i0 < sub ? L : i0 + sub;
        const double *Gb = G + i0 * K, *Ge = G + (i1 - 1) * K;
        double span = 0.0; /* as sub_block_keys measures it */
        for (int64_t x = 0; x < K; x++) {
            const double d = Gb[x] - Ge[x];
            span = d > span ? d : span;
        }
        if (!(span <= GLA_SPAN)) return GLA_SUB;
    }
    return sub;
}

/* cpu-gla24: prefetch the gate row GLA_GATE_AHEAD rows ahead of row i, which
 * a prefix loop (gla_gate_prefix, chunk_cumsum) is summing (head h, chunk
 * rows [r0, r0 + n)). The rows were prefetched once already, a head (~40 us)
 * earlier, but at H K = 1024 all 64 rows of a head share one eighth of the
 * L2's sets with that head's q, k, v, o rows, and many are gone again by
 * their use: the first load of each gate row was the forward's largest gate
 * stall (bench/NOTES.md, cpu-gla24). */
#define GLA_GATE_AHEAD 4

static void prefetch_rows(const float *x, int64_t H, int64_t w, int64_t r0, int64_t n, int64_t h);

GLA_INLINE void prefetch_gate_ahead(const gla_job *j, int64_t r0, int64_t i, int64_t n, int64_t h) {
    if (i + GLA_GATE_AHEAD < n) prefetch_rows(j->g, j->H, j->K, r0 + i + GLA_GATE_AHEAD, 1, h);
}

/* Cumulative gates of tokens [r0, r0 + n) of head h into b->G (chunk_cumsum)
 * and their exponentials (chunk_gate_exps: eG, eLm; GLA also R and P).
 * full == 0: only what the state update reads (eLm and the last row of eG;
 * GLA also P). chunk_gates does both. */
GLA_INLINE void chunk_cumsum(const gla_job *j, chunk_bufs *b, int64_t r0, int64_t n, int64_t h) {
    const int64_t gw = j->per_key ? j->K : 1;
    const double gamma = j->g_gamma ? (double)j->g_gamma[h] : 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *gr = gla_gate_row(j, r0 + i, h);
        double *Gi = b->G + i * gw;
        if (j->per_key && j->g) prefetch_gate_ahead(j, r0, i, n, h);
        for (int64_t x = 0; x < gw; x++) {
            const double gi = (gr ? (double)gr[x] : 0.0) + gamma;
            Gi[x] = (i ? Gi[x - gw] : 0.0) + gi;
        }
    }
}

/* The exponentials of chunk_gates from b->G (filled). */
GLA_INLINE void chunk_gate_exps(const gla_job *j, chunk_bufs *b, int64_t n, int full) {
    const int64_t gw = j->per_key ? j->K : 1;
    const double *GL = b->G + (n - 1) * gw;
    if (!j->per_key) {
        for (int64_t i = 0; i < n; i++) {
            b->eG[i] = exp_nonpos((float)b->G[i]);
            b->eLm[i] = exp_nonpos((float)(GL[0] - b->G[i]));
        }
        return;
    }
    const int64_t K = gw, sub = b->sub = gla_sub_size(K, b->G, n);
    float *eb = b->e; /* [K] per sub-block: e^{G_b}, then e^{G_L - G_e} */
    for (int64_t i0 = 0; i0 < n; i0 += sub) {
        const int64_t i1 = n - i0 < sub ? n : i0 + sub;
        const double *Gb = b->G + i0 * K, *Ge = b->G + (i1 - 1) * K;
        for (int64_t i = i0; i < i1; i++) {
            const double *Gi = b->G + i * K;
            float *P = b->P + i * K;
            for (int64_t x = 0; x < K; x++) P[x] = exp_nonpos((float)(Ge[x] - Gi[x]));
        }
        if (full) {
            for (int64_t i = i0; i < i1; i++) {
                const double *Gi = b->G + i * K;
                float *R = b->R + i * K;
                for (int64_t x = 0; x < K; x++) R[x] = exp_nonpos((float)(Gi[x] - Gb[x]));
            }
            for (int64_t x = 0; x < K; x++) eb[x] = exp_nonpos((float)Gb[x]);
            for (int64_t i = i0; i < i1; i++)
                for (int64_t x = 0; x < K; x++) b->eG[i * K + x] = eb[x] * b->R[i * K + x];
        } else if (i1 == n) { /* the state's decay: e^{G_L} as the full form rounds it */
            for (int64_t x = 0; x < K; x++)
                b->eG[(n - 1) * K + x] =
                    exp_nonpos((float)Gb[x]) * exp_nonpos((float)(GL[x] - Gb[x]));
        }
        for (int64_t x = 0; x < K; x++) eb[x] = exp_nonpos((float)(GL[x] - Ge[x]));
        for (int64_t i = i0; i < i1; i++)
            for (int64_t x = 0; x < K; x++) b->eLm[i * K + x] = eb[x] * b->P[i * K + x];
    }
}

GLA_INLINE void chunk_gates(const gla_job *j, chunk_bufs *b, int64_t r0, int64_t n, int64_t h,
                            int full) {
    chunk_cumsum(j, b, r0, n, h);
    chunk_gate_exps(j, b, n, full);
}

/* KP = k * P for the chunk's L tokens (Kc and P filled). */
GLA_INLINE void keys_times_p(const gla_job *j, chunk_bufs *b, int64_t L) {
    for (int64_t i = 0; i < L * j->K; i++) b->KP[i] = b->Kc[i] * b->P[i];
}

/* k_j F_j (into b->KF), F_j = P_j X_IJ, for the sub-block I of ni rows at
 * i0 against the rows j < i0, and against its own rows when its span allows
 * (the return value: 1 when rows [i0, i0 + ni) are filled too). need_f
 * (the backward): each sub-block J's X_IJ kept in row J / sub of b->F, for
 * F_j = P_j X_IJ (cpu-glag21: the [K] vectors instead of F's [C, K] rows,
 * 32 KiB less of the backward's blocks; the same floats). */
GLA_INLINE int sub_block_keys(const gla_job *j, chunk_bufs *b, int64_t i0, int64_t ni, int need_f) {
    const int64_t sub = b->sub;
    const int64_t K = j->K;
    const double *Gb = b->G + i0 * K, *Ge = b->G + (i0 + ni - 1) * K;
    float *X = b->e;
    double span = 0.0;
    for (int64_t x = 0; x < K; x++) {
        const double d = Gb[x] - Ge[x];
        span = d > span ? d : span;
    }
    const int own = span <= GLA_SPAN;
    for (int64_t j0 = 0; j0 < (own ? i0 + ni : i0); j0 += sub) {
        const int64_t j1 = j0 < i0 ? j0 + sub : i0 + ni;
        const double *GeJ = b->G + (j1 - 1) * K;
        if (need_f) X = b->F + (j0 / sub) * K;
        if (j0 < i0)
            for (int64_t x = 0; x < K; x++) X[x] = exp_nonpos((float)(Gb[x] - GeJ[x]));
        else
            for (int64_t x = 0; x < K; x++) X[x] = exp_span((float)(Gb[x] - GeJ[x]));
        for (int64_t jj = j0; jj < j1; jj++) {
            const float *kp = b->KP + jj * K;
            float *kf = b->KF + jj * K;
            for (int64_t x = 0; x < K; x++) kf[x] = kp[x] * X[x];
        }
    }
    return own;
}

/* Rows [r0, r0 + n) of head h of x ([.., H, w]) into dst [n, w], contiguous
 * (the kernels run fastest on dense rows). */
static void gather_rows(float *dst, const float *x, int64_t H, int64_t w, int64_t r0, int64_t n,
                        int64_t h) {
    for (int64_t i = 0; i < n; i++)
        memcpy(dst + i * w, x + (size_t)((r0 + i) * H + h) * (size_t)w, (size_t)w * sizeof(float));
}

/* cpu-sglabwd18: n floats copied to memory this call does not read again
 * (o, the saved start states, dq, dk, dv (and GLA's dg); stream_rows says
 * when), by kernels/stream.h's non-temporal stores where dst is 16-byte aligned: the lines
 * are written without being read first and do not evict the rows and states
 * the next units read. The same floats as memcpy (plain_copy). A task that
 * streams ends with la__stream_fence (the stores are weakly ordered). */
static void plain_copy(float *dst, const float *src, size_t n) {
    memcpy(dst, src, n * sizeof(float));
}

/* Whether this call's rows are written by la__stream_copy
 * (la__gla_stream_min_bytes; cpu-glab19: GLA's backward rows too). */
static int stream_rows(const gla_job *j) {
    const size_t w = (size_t)(j->K > j->V ? j->K : j->V);
    const double bytes = (double)j->d->B * (double)j->d->T * (double)j->H * (double)w * 4.0;
    return bytes >= (double)la__gla_stream_min_bytes;
}

/* Prefetch rows [r0, r0 + n) of head h of x ([.., H, w]) into L2 while the
 * current chunk is computed: the rows are H·w floats apart (a page at
 * H·w = 1024), too far apart for the hardware prefetcher. */
static void prefetch_rows(const float *x, int64_t H, int64_t w, int64_t r0, int64_t n, int64_t h) {
#if defined(__GNUC__)
    for (int64_t i = 0; i < n; i++) {
        const float *row = x + (size_t)((r0 + i) * H + h) * (size_t)w;
        for (int64_t c = 0; c < w; c += 16) __builtin_prefetch(row + c, 0, 2);
    }
#else
    (void)x, (void)H, (void)w, (void)r0, (void)n, (void)h;
#endif
}

/* cpu-sgla12: part `part` of `parts` of the n floats at p (a K x V state
 * the next unit reads), so a 64 KiB block is fetched over several stages. */
static void prefetch_part(const float *p, size_t n, int part, int parts) {
#if defined(__GNUC__)
    if (!p) return;
    const size_t a = n * (size_t)part / (size_t)parts, e = n * (size_t)(part + 1) / (size_t)parts;
    for (size_t c = a; c < e; c += 16) __builtin_prefetch(p + c, 0, 2);
#else
    (void)p, (void)n, (void)part, (void)parts;
#endif
}

/* The same for rows about to be written (dq, dk, dv, dg of the backward). */
static void prefetch_rows_w(float *x, int64_t H, int64_t w, int64_t r0, int64_t n, int64_t h) {
#if defined(__GNUC__)
    for (int64_t i = 0; i < n; i++) {
        const float *row = x + (size_t)((r0 + i) * H + h) * (size_t)w;
        for (int64_t c = 0; c < w; c += 16) __builtin_prefetch(row + c, 1, 2);
    }
#else
    (void)x, (void)H, (void)w, (void)r0, (void)n, (void)h;
#endif
}

/* Prefetch the k, v and (GLA) gate rows of the next chunk of a state pass,
 * starting at row r0 with `left` rows left in the sequence. */
static void prefetch_state_rows(const gla_job *j, int64_t r0, int64_t left, int64_t h) {
    const int64_t n = left < j->C ? left : j->C;
    if (n <= 0) return;
    prefetch_rows(j->k, j->H, j->K, r0, n, h);
    prefetch_rows(j->v, j->H, j->V, r0, n, h);
    if (j->per_key && j->g) prefetch_rows(j->g, j->H, j->K, r0, n, h);
}

/* dst[i,x] = src[i,x] * f[i, x or 0] (gate factors per key or per token). */
GLA_INLINE void scale_rows(float *dst, const float *src, const float *f, int per_key, int64_t n,
                           int64_t K) {
    for (int64_t i = 0; i < n; i++) {
        const float *fi = f + (per_key ? i * K : i);
        for (int64_t x = 0; x < K; x++) dst[i * K + x] = src[i * K + x] * fi[per_key ? x : 0];
    }
}

/* S <- Diag(e^{G_L}) S + (K * e^{G_L - G})^T V over the chunk (gemm_tn on the
 * pre-scaled keys; every factor <= 1). Fills b->Ks, and b->Kc, b->Vc unless
 * `gathered` says they hold the chunk's rows already (simple GLA: Ks only,
 * the rows read in place). */
GLA_INLINE void chunk_state_update(const gla_job *j, chunk_bufs *b, float *S, int64_t r0, int64_t n,
                                   int64_t h, int gathered) {
    const int64_t H = j->H, K = j->K, V = j->V, gw = j->per_key ? K : 1;
    const float *eGL = b->eG + (n - 1) * gw;
    if (!j->per_key && !gathered) {
        /* cpu-sgla11: simple GLA reads the chunk's rows in place (no
         * gathered copies of K and V): the keys scaled straight from their
         * rows, V as the product's B with its row stride H V (the same
         * floats: gemm_tn_block's sums do not depend on the stride) */
        for (int64_t i = 0; i < n; i++) {
            const float *ki = j->k + (size_t)((r0 + i) * H + h) * (size_t)K;
            const float fi = b->eLm[i];
            for (int64_t x = 0; x < K; x++) b->Ks[i * K + x] = ki[x] * fi;
        }
        la__gemm_tn_block(j->kr, K, V, n, 1.0f, b->Ks, K, j->v + (size_t)(r0 * H + h) * (size_t)V,
                          H * V, eGL[0], S, V);
        return;
    }
    if (!gathered) {
        gather_rows(b->Kc, j->k, H, K, r0, n, h);
        gather_rows(b->Vc, j->v, H, V, r0, n, h);
    }
    scale_rows(b->Ks, b->Kc, b->eLm, j->per_key, n, K);
    if (!j->per_key) { /* one decay for the whole state: the product's beta */
        /* cpu-sgla9: gemm_tn_block (same bits as gemm_tn) */
        la__gemm_tn_block(j->kr, K, V, n, 1.0f, b->Ks, K, b->Vc, V, eGL[0], S, V);
        return;
    }
    for (int64_t x = 0; x < K; x++) {
        float *row = S + x * V;
        const float d = eGL[x];
        for (int64_t y = 0; y < V; y++) row[y] *= d;
    }
    la__gemm_tn_block(j->kr, K, V, n, 1.0f, b->Ks, K, b->Vc, V, 1.0f, S, V);
}

/* The intra-chunk matrix of the chunk's L tokens (Qc, Kc, G, R, P filled):
 *   A_ij = sum_x q_ix k_jx exp(G_ix - G_jx)  for j <= i (strict: j < i), 0 above,
 * in b->A (row stride C). Simple GLA: Q K^T by gemm_nt_tril, then each entry
 * times its scalar decay. GLA: for i in sub-block I and j in J <= I,
 * A_ij = (q_i R_i) . (k_j P_j X_IJ), one gemm_nt of pre-scaled rows per
 * sub-block I (see GLA_SUB); a sub-block whose span is too large takes its
 * own pairs with their own exponentials. */
GLA_INLINE void intra_matrix(const gla_job *j, chunk_bufs *b, int64_t L, int strict) {
    const int64_t K = j->K, C = j->C;
    float *A = b->A;
    if (!j->per_key) {
        j->kr->gemm_nt_tril(L, K, strict, 1.0f, b->Qc, K, b->Kc, K, 0.0f, A, C);
        for (int64_t i = 0; i < L; i++) {
            const double Gi = b->G[i];
            float *Ai = A + i * C;
            for (int64_t jj = 0; jj < (strict ? i : i + 1); jj++)
                Ai[jj] *= exp_nonpos((float)(Gi - b->G[jj]));
        }
        return;
    }
    keys_times_p(j, b, L);
    for (int64_t i = 0; i < L; i++)
        for (int64_t x = 0; x < K; x++) b->Qs[i * K + x] = b->Qc[i * K + x] * b->R[i * K + x];
    for (int64_t i0 = 0; i0 < L; i0 += b->sub) {
        const int64_t ni = L - i0 < b->sub ? L - i0 : b->sub;
        const int own = sub_block_keys(j, b, i0, ni, 0);
        const int64_t ncol = own ? i0 + ni : i0;
        if (ncol > 0)
            j->kr->gemm_nt(ni, ncol, K, 1.0f, b->Qs + i0 * K, K, b->KF, K, 0.0f, A + i0 * C, C);
        for (int64_t i = i0; i < i0 + ni; i++) {
            const double *Gi = b->G + i * K;
            const float *qi = b->Qc + i * K;
            float *Ai = A + i * C;
            const int64_t end = strict ? i : i + 1;
            if (!own)
                for (int64_t jj = i0; jj < end; jj++) {
                    const double *Gj = b->G + jj * K;
                    const float *kj = b->Kc + jj * K;
                    for (int64_t x = 0; x < K; x++) b->e[x] = exp_nonpos((float)(Gi[x] - Gj[x]));
                    Ai[jj] = dot3(qi, kj, b->e, K);
                }
            for (int64_t jj = end; jj < L; jj++) Ai[jj] = 0.0f;
        }
    }
}

/* GLA backward, pairs j < i of the chunk (dA = scale dO V^T strict in b->A's
 * twin b->dA, without decay): A (strict, with decay) into b->A and
 *   dqs_i = sum_{j<i} dA_ij k_j * e^{G_i - G_j},  dks_j = sum_{i>j} dA_ij q_i * e^{G_i - G_j}.
 * For i in sub-block I (first token b0) and j in J <= I the factor splits as
 * R_i * F_j (F_j = P_j X_IJ = e^{G_b0 - G_j}), so those pairs are products:
 *   A[i, j] = (q_i R_i) . (k_j F_j)                              (gemm_nt)
 *   dqs_i += R_i * sum_j dA_ij (k_j F_j)                         (gemm_nn)
 *   dks_j += F_j * sum_{i in I} dA_ij (q_i R_i)                  (gemm_tn)
 * (dA is zero for j >= i). A sub-block whose span is too large takes its own
 * pairs with their own exponentials. q R (b->Qs), k P (b->KP) and R, P come
 * from gla_bwd_factors. */
GLA_INLINE void intra_bwd_per_key(const gla_job *j, chunk_bufs *b, int64_t L) {
    const int64_t K = j->K, C = j->C;
    const la__kernels *kr = j->kr;
    float *A = b->A, *dA = b->dA;
    for (int64_t i = 0; i < L * K; i++) b->dqs[i] = b->dks[i] = 0.0f;
    for (int64_t i0 = 0; i0 < L; i0 += b->sub) {
        const int64_t ni = L - i0 < b->sub ? L - i0 : b->sub;
        const int own = sub_block_keys(j, b, i0, ni, 1);
        const int64_t ncol = own ? i0 + ni : i0;
        if (ncol > 0) {
            /* dA is zero on and above its diagonal, so the block's own
             * columns add only the pairs j < i */
            kr->gemm_nt(ni, ncol, K, 1.0f, b->Qs + i0 * K, K, b->KF, K, 0.0f, A + i0 * C, C);
            kr->gemm_nn(ni, K, ncol, 1.0f, dA + i0 * C, C, b->KF, K, 0.0f, b->Tq, K);
            for (int64_t i = i0; i < i0 + ni; i++)
                for (int64_t x = 0; x < K; x++)
                    b->dqs[i * K + x] += b->R[i * K + x] * b->Tq[(i - i0) * K + x];
            la__gemm_tn_block(kr, ncol, K, ni, 1.0f, dA + i0 * C, C, b->Qs + i0 * K, K, 0.0f, b->Tk,
                              K);
            for (int64_t jj = 0; jj < ncol; jj++) {
                const float *X = b->F + (jj / b->sub) * K; /* F_j = P_j X_IJ */
                for (int64_t x = 0; x < K; x++)
                    b->dks[jj * K + x] += b->P[jj * K + x] * X[x] * b->Tk[jj * K + x];
            }
        }
        for (int64_t i = i0; i < i0 + ni; i++) {
            const double *Gi = b->G + i * K;
            const float *qi = b->Qc + i * K;
            float *Ai = A + i * C, *dqi = b->dqs + i * K;
            if (!own)
                for (int64_t jj = i0; jj < i; jj++) {
                    const double *Gj = b->G + jj * K;
                    const float *kj = b->Kc + jj * K;
                    float *dkj = b->dks + jj * K, *e = b->e;
                    for (int64_t x = 0; x < K; x++) e[x] = exp_nonpos((float)(Gi[x] - Gj[x]));
                    Ai[jj] = dot3(qi, kj, e, K);
                    const float d = dA[i * C + jj];
                    for (int64_t x = 0; x < K; x++) {
                        const float w = d * e[x];
                        dqi[x] += w * kj[x];
                        dkj[x] += w * qi[x];
                    }
                }
            for (int64_t jj = i; jj < L; jj++) Ai[jj] = 0.0f;
        }
    }
}

/* cpu-gla3: the GLA forward of one head over one chunk in fused passes.
 * The per-token factors are applied where they are made: per sub-block
 * (first token b, last e), for every row i and key x
 *   R = e^{G_i - G_b}, P = e^{G_e - G_i}, eG = e^{G_b} R, eLm = e^{G_L - G_e} P,
 *   Qs = q eG (inter-chunk), QR = q R (intra), KP = k P (intra), Ks = k eLm (state),
 * reading q, k and the gate rows in place (no gathered copies, no R, P, eG,
 * eLm arrays written and read back). v is read in place by the kernels (they
 * pack their operands) and o written in place. Every float is the product
 * of the same factors in the same order as chunk_gates + scale_rows +
 * keys_times_p made it, so the results are those of the unfused form bit for
 * bit. QR lives in b->Qc. */
/* One row of gla_fwd_factors' products (restrict parameters: vectorised).
 * cpu-gla7: R and P are made in the same loop (no [K] rows stored and read
 * back) and e^{G_i} is not stored: the state update reads only the last
 * row's, which gla_fwd_factors makes from the same R (same bits). */
GLA_INLINE void gla_fwd_row(int64_t K, const float *restrict q, const float *restrict k,
                            const double *restrict Gi, const double *restrict Gb,
                            const double *restrict Ge, const float *restrict eb,
                            const float *restrict el, float *restrict Qs, float *restrict QR,
                            float *restrict KP, float *restrict Ks) {
    for (int64_t x = 0; x < K; x++) {
        const float R = exp_nonpos((float)(Gi[x] - Gb[x]));
        const float P = exp_nonpos((float)(Ge[x] - Gi[x]));
        const float g1 = eb[x] * R, l1 = el[x] * P;
        Qs[x] = q[x] * g1;
        QR[x] = q[x] * R;
        KP[x] = k[x] * P;
        Ks[x] = k[x] * l1;
    }
}

/* G[i][x] = sum of g over the chunk's rows 0..i, in double, row by row
 * (rows r0 .. r0 + L - 1 of head h); shared by gla_fwd_factors and
 * gla_sum_factors, whose floats must agree. */
GLA_INLINE void gla_gate_prefix(const gla_job *j, double *G, int64_t r0, int64_t L, int64_t h) {
    const int64_t H = j->H, K = j->K;
    for (int64_t i = 0; i < L; i++) {
        const float *gr = j->g + (size_t)((r0 + i) * H + h) * (size_t)K;
        double *Gi = G + i * K;
        prefetch_gate_ahead(j, r0, i, L, h);
        if (i == 0)
            for (int64_t x = 0; x < K; x++) Gi[x] = 0.0 + (double)gr[x];
        else
            for (int64_t x = 0; x < K; x++) Gi[x] = Gi[x - K] + (double)gr[x];
    }
}

/* cpu-gla24: row r of head h of q, k, v (read) and o (written), a few rows
 * before the forward's factor loop reads q and k (the products read v and
 * write o later). As the gate rows (prefetch_gate_ahead), many of the rows
 * prefetched a head earlier are evicted again by their use. */
#define GLA_ROWS_AHEAD 3

GLA_INLINE void prefetch_own_row(const gla_job *j, int64_t r, int64_t h) {
    prefetch_rows(j->q, j->H, j->K, r, 1, h);
    prefetch_rows(j->k, j->H, j->K, r, 1, h);
    prefetch_rows(j->v, j->H, j->V, r, 1, h);
    prefetch_rows_w(j->o, j->H, j->V, r, 1, h);
}

GLA_INLINE void gla_fwd_factors(const gla_job *j, chunk_bufs *b, int64_t r0, int64_t L, int64_t h,
                                int64_t pr, int64_t pn, int64_t ph) {
    const int64_t H = j->H, K = j->K;
    double *G = b->G;
    for (int64_t i = 0; i < GLA_ROWS_AHEAD && i < L; i++) prefetch_own_row(j, r0 + i, h);
    gla_gate_prefix(j, G, r0, L, h);
    const int64_t sub = b->sub = gla_sub_size(K, G, L);
    const double *GL = G + (L - 1) * K;
    float *eb = b->e, *el = b->F; /* [K] each: e^{G_b}, e^{G_L - G_e} */
    for (int64_t i0 = 0; i0 < L; i0 += sub) {
        const int64_t i1 = L - i0 < sub ? L : i0 + sub;
        const double *Gb = G + i0 * K, *Ge = G + (i1 - 1) * K;
        for (int64_t x = 0; x < K; x++) {
            eb[x] = exp_nonpos((float)Gb[x]);
            el[x] = exp_nonpos((float)(GL[x] - Ge[x]));
        }
        for (int64_t i = i0; i < i1; i++) {
            const size_t row = (size_t)((r0 + i) * H + h) * (size_t)K;
            const float *restrict q = j->q + row, *restrict k = j->k + row;
            const double *Gi = G + i * K;
            if (i + GLA_ROWS_AHEAD < L) prefetch_own_row(j, r0 + i + GLA_ROWS_AHEAD, h);
            float *restrict Qs = b->Qs + i * K, *restrict QR = b->Qc + i * K;
            float *restrict KP = b->KP + i * K, *restrict Ks = b->Ks + i * K;
            gla_fwd_row(K, q, k, Gi, Gb, Ge, eb, el, Qs, QR, KP, Ks);
            if (i == L - 1) { /* e^{G_L} = e^{G_b} R_L, as the state update reads it */
                float *restrict eG = b->eG + i * K;
                for (int64_t x = 0; x < K; x++) eG[x] = eb[x] * exp_nonpos((float)(Gi[x] - Gb[x]));
            }
            /* the next head's (or chunk's) row i, one row of each tensor per
             * row computed: spread out, the misses overlap the work instead
             * of filling the miss buffers in one burst */
            if (i < pn) {
                prefetch_rows(j->g, H, K, pr + i, 1, ph);
                prefetch_rows(j->q, H, K, pr + i, 1, ph);
                prefetch_rows(j->k, H, K, pr + i, 1, ph);
                prefetch_rows(j->v, H, j->V, pr + i, 1, ph);
            }
        }
    }
}

/* The intra-chunk matrix (j <= i) of the fused forward: as intra_matrix's
 * GLA branch, with QR in b->Qc and q, k read in place by a sub-block that
 * takes its own pairs one by one. */
GLA_INLINE void gla_fwd_intra(const gla_job *j, chunk_bufs *b, int64_t r0, int64_t L, int64_t h) {
    const int64_t H = j->H, K = j->K, C = j->C;
    float *A = b->A;
    for (int64_t i0 = 0; i0 < L; i0 += b->sub) {
        const int64_t ni = L - i0 < b->sub ? L - i0 : b->sub;
        const int own = sub_block_keys(j, b, i0, ni, 0);
        const int64_t ncol = own ? i0 + ni : i0;
        if (ncol > 0)
            j->kr->gemm_nt(ni, ncol, K, 1.0f, b->Qc + i0 * K, K, b->KF, K, 0.0f, A + i0 * C, C);
        for (int64_t i = i0; i < i0 + ni; i++) {
            const double *Gi = b->G + i * K;
            const float *qi = j->q + (size_t)((r0 + i) * H + h) * (size_t)K;
            float *Ai = A + i * C;
            if (!own)
                for (int64_t jj = i0; jj <= i; jj++) {
                    const double *Gj = b->G + jj * K;
                    const float *kj = j->k + (size_t)((r0 + jj) * H + h) * (size_t)K;
                    for (int64_t x = 0; x < K; x++) b->e[x] = exp_nonpos((float)(Gi[x] - Gj[x]));
                    Ai[jj] = dot3(qi, kj, b->e, K);
                }
            for (int64_t jj = i + 1; jj < L; jj++) Ai[jj] = 0.0f;
        }
    }
}

/* One head of one chunk of the GLA forward (fused passes, see above).
 * cpu-bwdsplit: with U, b->S is not updated and U = (K * e^{G_L - G})^T V. */
GLA_INLINE void gla_fwd_chunk_head(const gla_job *j, chunk_bufs *b, int64_t r0, int64_t L,
                                   int64_t h, int64_t pr, int64_t pn, int64_t ph, float *U) {
    const int64_t H = j->H, K = j->K, V = j->V, C = j->C;
    const float *vr = j->v + (size_t)(r0 * H + h) * (size_t)V;
    float *oc = j->o + (size_t)(r0 * H + h) * (size_t)V;
    gla_fwd_factors(j, b, r0, L, h, pr, pn, ph);
    /* inter-chunk: o = scale (q * e^{G_i}) S */
    j->kr->gemm_nn(L, V, K, j->scale, b->Qs, K, b->S, V, 0.0f, oc, H * V);
    gla_fwd_intra(j, b, r0, L, h);
    /* intra-chunk: o += scale A V */
    j->kr->gemm_nn_lower(L, V, L, j->scale, b->A, C, vr, H * V, 1.0f, oc, H * V);
    if (U) {
        la__gemm_tn_block(j->kr, K, V, L, 1.0f, b->Ks, K, vr, H * V, 0.0f, U, V);
        return;
    }
    /* S <- Diag(e^{G_L}) S + (K * e^{G_L - G})^T V */
    const float *eGL = b->eG + (L - 1) * K;
    for (int64_t x = 0; x < K; x++) {
        float *row = b->S + x * V;
        const float d = eGL[x];
        for (int64_t y = 0; y < V; y++) row[y] *= d;
    }
    /* cpu-gla14: Ks is a dense [L, K] block, so gemm_tn_block (Kᵀ read in
     * place, v's panels packed once instead of once per 72-row block of
     * gemm_tn; the same bits) */
    la__gemm_tn_block(j->kr, K, V, L, 1.0f, b->Ks, K, vr, H * V, 1.0f, b->S, V);
}

static void load_state(const gla_job *j, int64_t task, float *S) {
    const size_t KV = (size_t)j->K * (size_t)j->V;
    if (j->s0)
        memcpy(S, j->s0 + (size_t)task * KV, KV * sizeof(float));
    else
        memset(S, 0, KV * sizeof(float));
}

GLA_INLINE void chunk_fwd_body(const gla_job *j, int64_t task, int tid) {
    const int64_t H = j->H, K = j->K, V = j->V, C = j->C, G = j->fwd_heads;
    const int64_t ng = (H + G - 1) / G, n = task / ng, h0 = (task % ng) * G;
    const int64_t nh = H - h0 < G ? H - h0 : G;
    const size_t KV = (size_t)K * (size_t)V;
    chunk_bufs b;
    chunk_layout(j, 0, 0, la__scratch(j->ctx, tid), &b);
    float *const S0 = b.S;
    const int stream = stream_rows(j);
    int64_t start, len;
    la__seq_bounds(j->d, n, &start, &len);
    for (int64_t hh = 0; hh < nh; hh++) load_state(j, n * H + h0 + hh, S0 + hh * KV);
    for (int64_t c0 = 0; c0 < len; c0 += C) {
        const int64_t L = len - c0 < C ? len - c0 : C, r0 = start + c0;
        const int64_t Ln = len - c0 - C < C ? len - c0 - C : C;
        for (int64_t hh = 0; hh < nh; hh++) {
            const int64_t h = h0 + hh;
            /* the rows the next head (or the next chunk's first head) will
             * gather are prefetched one tensor per product, so the misses
             * overlap the products instead of queueing in one burst */
            const int64_t ph = hh + 1 < nh ? h + 1 : h0, pr = hh + 1 < nh ? r0 : r0 + C;
            const int64_t pn = hh + 1 < nh ? L : Ln;
            b.S = S0 + hh * KV;
            /* cpu-sgsaved13, cpu-glsaved17: the chunk's start state for the
             * backward (the floats its state pass would make: the same
             * update, chunk_state_update) */
            /* cpu-glab19: GLA's (per-key) copy stays plain: streamed, its
             * forward measured 0.975-0.982x (simple GLA's gained) */
            if (j->save)
                (stream && !j->per_key ? la__stream_copy : plain_copy)(
                    j->save + la__sgla_saved_slot(j, n, h, c0 / C), b.S, KV);
            if (j->per_key && j->g) {
                gla_fwd_chunk_head(j, &b, r0, L, h, pr, pn, ph, NULL);
                continue;
            }
            float *oc = j->o + (size_t)(r0 * H + h) * (size_t)V;
            chunk_gates(j, &b, r0, L, h, 1);
            gather_rows(b.Qc, j->q, H, K, r0, L, h);
            gather_rows(b.Kc, j->k, H, K, r0, L, h);
            gather_rows(b.Vc, j->v, H, V, r0, L, h);
            /* inter-chunk: o = scale (q * e^{G_i}) S */
            scale_rows(b.Qs, b.Qc, b.eG, j->per_key, L, K);
            if (pn > 0) prefetch_rows(j->q, H, K, pr, pn, ph);
            if (pn > 0 && j->per_key && j->g) prefetch_rows(j->g, H, K, pr, pn, ph);
            j->kr->gemm_nn(L, V, K, j->scale, b.Qs, K, b.S, V, 0.0f, b.Oc, V);
            /* intra-chunk: o += scale A V */
            if (pn > 0) prefetch_rows(j->k, H, K, pr, pn, ph);
            intra_matrix(j, &b, L, 0);
            if (pn > 0) prefetch_rows(j->v, H, V, pr, pn, ph);
            j->kr->gemm_nn_lower(L, V, L, j->scale, b.A, C, b.Vc, V, 1.0f, b.Oc, V);
            for (int64_t i = 0; i < L; i++)
                (stream ? la__stream_copy : plain_copy)(oc + (size_t)(i * H) * (size_t)V,
                                                        b.Oc + i * V, (size_t)V);
            chunk_state_update(j, &b, b.S, r0, L, h, 1);
        }
    }
    if (j->sT)
        for (int64_t hh = 0; hh < nh; hh++)
            memcpy(j->sT + (size_t)(n * H + h0 + hh) * KV, S0 + hh * KV, KV * sizeof(float));
    if (stream) la__stream_fence();
}

/* The forward built for the baseline ISA and for AVX2 / AVX-512 (the gate
 * exponentials, row scalings and the diagonal sub-blocks' pair factors are
 * ~60% of its instructions outside the kernels). Elementwise float
 * operations in a fixed order and no contraction: every build gives the
 * same bits; la_isa_active() picks one, as for the kernels. */
LA_ISA_BUILDS(, la__gla_chunk_fwd_task, chunk_fwd_body, (void *arg, int64_t task, int tid),
              (arg, task, tid))

/* cpu-sgla9: simple GLA's gate gradient (one gate per token), the same
 * terms as chunk_bwd_chunk's GLA block below:
 *   dG_t = sum_{i>=t} q_i . dq^inter_i + e^{G_L} <dS, S0>
 *        + sum_{j<t} (k_j . (dk^state_j + dk^intra_j) - q_j . dq^intra_j).
 * cpu-sgla20: each row's dot product (K or V terms) in sixteen float partial
 * sums (one 512-bit vector), each lane n/16 products long; the lanes, the
 * rows and the chunk's sums in float64 as before. The float64 products (each
 * operand converted, ~22K 512-bit uops per chunk-head, ~5 us of ~82) were
 * the gate gradient's whole cost; the float lanes carry ~n/16 roundings each
 * against the row's sum of |products|, like the float32 dot products of dq,
 * dk and dv themselves (errors against float64: bench/NOTES.md cpu-sgla20).
 * Elementwise float operations in a fixed order, no contraction: the same
 * bits on every ISA path and thread count. */
#define SG_LANES 16

/* lanes into float64: a fixed tree (pairs u, u + w) */
GLA_INLINE double sg_lanes_sum(const float *acc) {
    double s[SG_LANES];
    for (int u = 0; u < SG_LANES; u++) s[u] = (double)acc[u];
    for (int w = SG_LANES / 2; w >= 1; w /= 2)
        for (int u = 0; u < w; u++) s[u] += s[u + w];
    return s[0];
}

/* sum_y a_y b_y */
GLA_INLINE double dot_f32l(const float *restrict a, const float *restrict b, int64_t n) {
    float acc[SG_LANES] = {0};
    int64_t y = 0;
    for (; y + SG_LANES <= n; y += SG_LANES)
        for (int u = 0; u < SG_LANES; u++) acc[u] += a[y + u] * b[y + u];
    for (int u = 0; y < n; y++, u++) acc[u] += a[y] * b[y];
    return sg_lanes_sum(acc);
}

/* sum_x k_x (dkc_x + dks_x) - q_x dqs_x */
GLA_INLINE double dot_kq_f32l(const float *restrict k, const float *restrict dkc,
                              const float *restrict dks, const float *restrict q,
                              const float *restrict dqs, int64_t n) {
    float acc[SG_LANES] = {0};
    int64_t x = 0;
    for (; x + SG_LANES <= n; x += SG_LANES)
        for (int u = 0; u < SG_LANES; u++)
            acc[u] += k[x + u] * (dkc[x + u] + dks[x + u]) - q[x + u] * dqs[x + u];
    for (int u = 0; x < n; x++, u++) acc[u] += k[x] * (dkc[x] + dks[x]) - q[x] * dqs[x];
    return sg_lanes_sum(acc);
}

GLA_INLINE void sgla_gate_grad(const gla_job *j, chunk_bufs *b, const float *S0, int64_t L) {
    const int64_t K = j->K, V = j->V;
    double *dG = b->dG;
    /* reverse cumulative sum of the inter-chunk term */
    for (int64_t i = L - 1; i >= 0; i--)
        dG[i] = (i < L - 1 ? dG[i + 1] : 0.0) + dot_f32l(b->Qc + i * K, b->dqc + i * K, K);
    /* the state term's constant part, one number for the chunk */
    double c = 0.0;
    for (int64_t x = 0; x < K; x++) c += dot_f32l(b->dS + x * V, S0 + x * V, V);
    c *= (double)b->eG[L - 1];
    /* forward prefix of the state and pair terms */
    double p = 0.0;
    dG[0] += c;
    for (int64_t i = 1; i < L; i++) {
        const int64_t r = (i - 1) * K;
        p += dot_kq_f32l(b->Kc + r, b->dkc + r, b->dks + r, b->Qc + r, b->dqs + r, K);
        dG[i] += c + p;
    }
}

/* GLA's gate gradient (per key), the terms of chunk_bwd_chunk's comment:
 *   dG_t = sum_{i>=t} q_i * dq^inter_i + e^{G_L} * rowsum(dS * S0)
 *        + sum_{j<t} (k_j * (dk^state_j + dk^intra_j) - q_j * dq^intra_j),
 * each key on its own in float64, added in that order. cpu-glab19: two
 * passes over the chunk (the reverse sum into b->dG, then the forward
 * prefix, which adds the three parts and rounds the row straight into dg,
 * or into Tq for a streamed store) instead of five.
 * cpu-glag21: as simple GLA's since cpu-sgla20, the products in float and
 * their sums in float64: the state term's K rows <dS_x, S0_x> in sixteen
 * float lanes added in a fixed tree (dot_f32l), each token's terms
 * q_x dq_x and k_x (dk_x + dks_x) - q_x dqs_x rounded once in float, then
 * summed over the tokens in float64 (before, every product in float64 with
 * both operands converted: ~3.5 ms of a ~150 ms fwd+bwd at the issue-12
 * shape). Errors against float64: bench/NOTES.md, cpu-glag21. Elementwise
 * float operations in a fixed order, no contraction: the same bits on every
 * ISA path and thread count. */
GLA_INLINE void gla_gate_grad(const gla_job *j, chunk_bufs *b, const float *S0, int64_t r0,
                              int64_t L, int64_t h) {
    const int64_t H = j->H, K = j->K, V = j->V;
    const float *eGL = b->eG + (L - 1) * K;
    double *restrict dG = b->dG, *restrict dGc = b->dGc, *restrict dGp = b->dGp;
    /* reverse cumulative sum of the inter-chunk term */
    for (int64_t i = L - 1; i >= 0; i--) {
        const float *restrict qi = b->Qc + i * K, *restrict dqi = b->dqc + i * K;
        double *restrict dGi = dG + i * K;
        if (i < L - 1)
            for (int64_t x = 0; x < K; x++) dGi[x] = dGi[x + K] + (double)(qi[x] * dqi[x]);
        else
            for (int64_t x = 0; x < K; x++) dGi[x] = 0.0 + (double)(qi[x] * dqi[x]);
    }
    /* the state term's constant part */
    for (int64_t x = 0; x < K; x++)
        dGc[x] = dot_f32l(b->dS + x * V, S0 + x * V, V) * (double)eGL[x];
    /* forward prefix of the state and pair terms, and the rows out */
    for (int64_t x = 0; x < K; x++) dGp[x] = 0.0;
    for (int64_t i = 0; i < L; i++) {
        const double *restrict dGi = dG + i * K;
        float *restrict out = b->stream ? b->Tq : j->dg + (size_t)((r0 + i) * H + h) * (size_t)K;
        if (i == 0) {
            for (int64_t x = 0; x < K; x++) out[x] = (float)(dGi[x] + dGc[x]);
        } else {
            const int64_t p = (i - 1) * K;
            const float *restrict kp = b->Kc + p, *restrict qp = b->Qc + p;
            const float *restrict dkc = b->dkc + p, *restrict dks = b->dks + p;
            const float *restrict dqs = b->dqs + p;
            for (int64_t x = 0; x < K; x++) {
                dGp[x] += (double)(kp[x] * (dkc[x] + dks[x]) - qp[x] * dqs[x]);
                out[x] = (float)((dGi[x] + dGc[x]) + dGp[x]);
            }
        }
        /* cpu-glab19: streamed (b->stream), the row is rounded into Tq (free here) */
        if (b->stream)
            la__stream_copy(j->dg + (size_t)((r0 + i) * H + h) * (size_t)K, out, (size_t)K);
    }
}

/* cpu-glab20: sum_x a_x b_x in sixteen interleaved partial sums (lane
 * x mod 16) added pairwise at the end: vectorised, one order on every ISA
 * (replaces cpu-sgla12's eight serial row sums, whose lanes were extracted
 * and added one at a time). */
GLA_INLINE float dot16(const float *restrict a, const float *restrict b, int64_t w) {
    float s[16] = {0};
    int64_t x = 0;
    for (; x + 16 <= w; x += 16)
        for (int u = 0; u < 16; u++) s[u] += a[x + u] * b[x + u];
    for (int u = 0; x + u < w; u++) s[u] += a[x + u] * b[x + u];
    for (int n = 8; n > 0; n >>= 1)
        for (int u = 0; u < n; u++) s[u] += s[u + n];
    return s[0];
}

/* cpu-glag21: GLA's backward factors of one chunk in one pass over its rows
 * (b->G filled by chunk_cumsum), as the forward's gla_fwd_factors: per
 * sub-block (first token b, last e) and for every row i and key x
 *   R = e^{G_i - G_b}, P = e^{G_e - G_i} (kept: the products' scalings read
 *   them; e^{G_i} = e^{G_b} R and e^{G_L - G_i} = e^{G_L - G_e} P are made
 *   again where needed from b->Eb, not kept as [C, K] rows),
 * the rows q, k read in place and copied into Qc, Kc, and the scaled rows
 *   QR = q R (b->Qs, intra), KP = k P (intra), Ks = k eLm (dv), QG = q eG (dS),
 * where chunk_gate_exps, scale_rows, keys_times_p and the intra pass made
 * them one pass each, re-reading the rows and factors. The same products of
 * the same factors: the same bits. */
GLA_INLINE void gla_bwd_row(int64_t K, const float *restrict q, const float *restrict k,
                            const double *restrict Gi, const double *restrict Gb,
                            const double *restrict Ge, const float *restrict eb,
                            const float *restrict el, float *restrict Qc, float *restrict Kc,
                            float *restrict R, float *restrict P, float *restrict QR,
                            float *restrict KP, float *restrict Ks, float *restrict QG) {
    for (int64_t x = 0; x < K; x++) {
        const float r = exp_nonpos((float)(Gi[x] - Gb[x]));
        const float p = exp_nonpos((float)(Ge[x] - Gi[x]));
        const float g1 = eb[x] * r, l1 = el[x] * p, qx = q[x], kx = k[x];
        Qc[x] = qx;
        Kc[x] = kx;
        R[x] = r;
        P[x] = p;
        QR[x] = qx * r;
        KP[x] = kx * p;
        Ks[x] = kx * l1;
        QG[x] = qx * g1;
    }
}

GLA_INLINE void gla_bwd_factors(const gla_job *j, chunk_bufs *b, int64_t r0, int64_t L, int64_t h) {
    const int64_t H = j->H, K = j->K;
    const double *G = b->G, *GL = G + (L - 1) * K;
    const int64_t sub = b->sub = gla_sub_size(K, G, L);
    for (int64_t i0 = 0; i0 < L; i0 += sub) {
        const int64_t i1 = L - i0 < sub ? L : i0 + sub;
        const double *Gb = G + i0 * K, *Ge = G + (i1 - 1) * K;
        float *eb = b->Eb + 2 * (i0 / sub) * K, *el = eb + K;
        for (int64_t x = 0; x < K; x++) {
            eb[x] = exp_nonpos((float)Gb[x]);
            el[x] = exp_nonpos((float)(GL[x] - Ge[x]));
        }
        for (int64_t i = i0; i < i1; i++) {
            const size_t row = (size_t)((r0 + i) * H + h) * (size_t)K, o = (size_t)(i * K);
            gla_bwd_row(K, j->q + row, j->k + row, G + o, Gb, Ge, eb, el, b->Qc + o, b->Kc + o,
                        b->R + o, b->P + o, b->Qs + o, b->KP + o, b->Ks + o, b->QG + o);
        }
        if (i1 == L) /* e^{G_L} = e^{G_b} R_L (the state's decay) */
            for (int64_t x = 0; x < K; x++) b->eG[(L - 1) * K + x] = eb[x] * b->R[(L - 1) * K + x];
    }
}

/* One chunk of the backward, rows [r0, r0 + L) of head h (gates in b
 * filled: simple GLA by chunk_gates, GLA only G by chunk_cumsum; b->dS the
 * gradient of the state after the chunk, S0 the state
 * before it): dq, dk, dv, dg rows, *gamma_sum += the chunk's scalar gate
 * gradient, and b->dS <- Diag(e^{G_L}) dS + scale (Q e^G)^T dO; with Mc
 * (cpu-bwdsplit) dS is left alone and Mc = scale (Q e^G)^T dO instead.
 * pn > 0: prefetch the pn rows of head ph from row pr (the unit this task
 * runs next), and pS (if not NULL) its start state. */
/* The gates chunk_bwd_chunk reads from b: simple GLA all (chunk_gates), GLA
 * only G (its factors come with its rows, gla_bwd_factors). */
GLA_INLINE void bwd_gates(const gla_job *j, chunk_bufs *b, int64_t r0, int64_t n, int64_t h) {
    if (j->per_key)
        chunk_cumsum(j, b, r0, n, h);
    else
        chunk_gates(j, b, r0, n, h, 1);
}

GLA_INLINE void chunk_bwd_chunk(const gla_job *j, chunk_bufs *b, const float *S0, int64_t r0,
                                int64_t L, int64_t h, int64_t pr, int64_t pn, int64_t ph,
                                const float *pS, double *gamma_sum, float *Mc) {
    const int64_t H = j->H, K = j->K, V = j->V, gw = j->per_key ? K : 1;
    const size_t KVn = (size_t)K * (size_t)V;
    const float scale = j->scale;
    const la__kernels *kr = j->kr;
    if (j->per_key) {
        gla_bwd_factors(j, b, r0, L, h);
    } else {
        gather_rows(b->Qc, j->q, H, K, r0, L, h);
        gather_rows(b->Kc, j->k, H, K, r0, L, h);
    }
    gather_rows(b->Vc, j->v, H, V, r0, L, h);
    gather_rows(b->dOc, j->d_o, H, V, r0, L, h);
    /* the next unit's rows and start state, one tensor (one seventh of the
     * state) per stage so the misses overlap the products */
    prefetch_part(pS, KVn, 0, 7);
    /* Inter-chunk and state terms:
     *   dq_i = scale e^{G_i} * (S0 do_i),  dk_j = e^{G_L-G_j} * (dS v_j),
     *   dv_j = (k_j * e^{G_L-G_j}) dS. */
    kr->gemm_nt(L, K, V, scale, b->dOc, V, S0, V, 0.0f, b->dqc, K);
    kr->gemm_nt(L, K, V, 1.0f, b->Vc, V, b->dS, V, 0.0f, b->dkc, K);
    if (j->per_key) { /* e^{G_i} = e^{G_b} R_i, e^{G_L - G_i} = e^{G_L - G_e} P_i */
        for (int64_t i = 0; i < L; i++) {
            const float *restrict eb = b->Eb + 2 * (i / b->sub) * K, *restrict el = eb + K;
            const float *restrict R = b->R + i * K, *restrict P = b->P + i * K;
            float *restrict dq = b->dqc + i * K, *restrict dk = b->dkc + i * K;
            for (int64_t x = 0; x < K; x++) {
                dq[x] *= eb[x] * R[x];
                dk[x] *= el[x] * P[x];
            }
        }
    } else {
        for (int64_t i = 0; i < L; i++)
            for (int64_t x = 0; x < K; x++) {
                b->dqc[i * K + x] *= b->eG[i];
                b->dkc[i * K + x] *= b->eLm[i];
            }
    }
    if (!j->per_key) scale_rows(b->Ks, b->Kc, b->eLm, 0, L, K);
    kr->gemm_nn(L, V, K, 1.0f, b->Ks, K, b->dS, V, 0.0f, b->dvc, V);
    /* Intra-chunk pairs j < i: A_ij (with decay) and dA_ij = scale do_i . v_j;
     * the diagonal pair (i, i) has no decay and no gate gradient, it goes to
     * dq_i, dk_i, dv_i directly at the end. dv += A^T (scale dO). */
    prefetch_part(pS, KVn, 1, 7);
    kr->gemm_nt_tril(L, V, 0, scale, b->dOc, V, b->Vc, V, 0.0f, b->dA, j->C);
    prefetch_part(pS, KVn, 2, 7);
    if (j->per_key) {
        /* cpu-glab20: dA with its diagonal (as simple GLA's since
         * cpu-sgla19), kept in b->diag for the end and zeroed here (the
         * pair products take j < i); A_ii = q_i . k_i has no plain product
         * here (A carries the decays): row_dot16 below */
        for (int64_t i = 0; i < L; i++) {
            b->diag[j->C + i] = b->dA[i * j->C + i];
            b->dA[i * j->C + i] = 0.0f;
        }
        intra_bwd_per_key(j, b, L);
    } else {
        /* cpu-sgla9: A carries the scale (dv's product below is the
         * triangular la__gemm_tn_lower_acc, whose alpha is 1) */
        /* cpu-sgla19: A and dA with their diagonals (the pair (i, i): no
         * decay, no gate gradient), kept in b->diag for the end and zeroed
         * here (the products below take the pairs j < i); before, eight-row
         * dot products made them (row_dots8, ~2.5 us per chunk-head) */
        kr->gemm_nt_tril(L, K, 0, scale, b->Qc, K, b->Kc, K, 0.0f, b->A, j->C);
        for (int64_t i = 0; i < L; i++) {
            float *Ai = b->A + i * j->C, *dAi = b->dA + i * j->C;
            for (int64_t jj = 0; jj < i; jj++) {
                const float e = exp_nonpos((float)(b->G[i] - b->G[jj]));
                Ai[jj] *= e;
                dAi[jj] *= e;
            }
            b->diag[i] = Ai[i];
            b->diag[j->C + i] = dAi[i];
            Ai[i] = dAi[i] = 0.0f;
        }
        kr->gemm_nn_lower(L, K, L, 1.0f, b->dA, j->C, b->Kc, K, 0.0f, b->dqs, K);
        /* cpu-sgla9: dA and A are strictly lower: the triangular products */
        memset(b->dks, 0, (size_t)(L * K) * sizeof(float));
        la__gemm_tn_lower_acc(kr, L, K, b->dA, j->C, b->Qc, K, b->dks, K);
    }
    prefetch_part(pS, KVn, 3, 7);
    if (j->per_key)
        la__gemm_tn_block(kr, L, V, L, scale, b->A, j->C, b->dOc, V, 1.0f, b->dvc, V);
    else
        la__gemm_tn_lower_acc(kr, L, V, b->A, j->C, b->dOc, V, b->dvc, V);
    /* the next unit's gradient rows (written next), one tensor per stage */
    if (pn > 0 && !b->stream) prefetch_rows_w(j->dq, H, K, pr, pn, ph);
    prefetch_part(pS, KVn, 4, 7);
    /* Gate gradient, term by term (no cancelling pairs are formed):
     *   dg_t = sum_{i>=t} q_i * dq^inter_i                       (o_i sees S0 via G_i)
     *        + e^{G_L} * rowsum(dS * S0) + sum_{j<t} k_j * dk^state_j (S_end)
     *        + sum_{j<t} (k_j * dk^intra_j - q_j * dq^intra_j)     (pairs j < t <= i)
     * the last line being the prefix form of sum_{i>=t>j} of the pair terms. */
    if (!j->per_key) {
        sgla_gate_grad(j, b, S0, L);
        for (int64_t i = 0; i < L; i++) {
            if (j->dg) j->dg[(size_t)((r0 + i) * H + h)] = (float)b->dG[i];
            *gamma_sum += b->dG[i];
        }
    } else if (j->dg) {
        gla_gate_grad(j, b, S0, r0, L, h);
    }
    if (pn > 0 && !b->stream) prefetch_rows_w(j->dk, H, K, pr, pn, ph);
    prefetch_part(pS, KVn, 5, 7);
    if (pn > 0 && j->per_key && j->dg && !b->stream) prefetch_rows_w(j->dg, H, K, pr, pn, ph);
    /* dq, dk: inter/state + strictly-intra + the diagonal pair (no decay;
     * dA_ii from b->diag, the triangular product; GLA's A_ii from dot16,
     * simple GLA's from b->diag) */
    for (int64_t i = 0; i < L; i++) {
        const float *restrict qi = b->Qc + i * K, *restrict ki = b->Kc + i * K;
        const float *restrict doi = b->dOc + i * V;
        const float *restrict dqsi = b->dqs + i * K, *restrict dksi = b->dks + i * K;
        float *restrict dvi = b->dvc + i * V;
        float *restrict dqi = b->dqc + i * K, *restrict dki = b->dkc + i * K;
        if (i < pn) {
            if (j->per_key && j->g) prefetch_rows(j->g, H, K, pr + i, 1, ph);
            prefetch_rows(j->q, H, K, pr + i, 1, ph);
            prefetch_rows(j->k, H, K, pr + i, 1, ph);
        }
        const float dA = b->diag[j->C + i];
        const float sA = j->per_key ? scale * dot16(qi, ki, K) : b->diag[i];
        for (int64_t y = 0; y < V; y++) dvi[y] += sA * doi[y];
        for (int64_t x = 0; x < K; x++) {
            dqi[x] += dqsi[x] + dA * ki[x];
            dki[x] += dksi[x] + dA * qi[x];
        }
    }
    /* dS before the chunk: Diag(e^{G_L}) dS + scale (Q * e^{G})^T dO. */
    const float *eGL = b->eG + (L - 1) * gw;
    if (!Mc)
        for (int64_t x = 0; x < K; x++) {
            float *dsr = b->dS + x * V;
            const float d = eGL[j->per_key ? x : 0];
            for (int64_t y = 0; y < V; y++) dsr[y] *= d;
        }
    if (pn > 0 && !b->stream) prefetch_rows_w(j->dv, H, V, pr, pn, ph);
    prefetch_part(pS, KVn, 6, 7);
    if (!j->per_key) scale_rows(b->Qs, b->Qc, b->eG, 0, L, K);
    /* cpu-sgla9, cpu-glab15: same bits as gemm_tn */
    la__gemm_tn_block(kr, K, V, L, scale, j->per_key ? b->QG : b->Qs, K, b->dOc, V,
                      Mc ? 0.0f : 1.0f, Mc ? Mc : b->dS, V);
    void (*const put)(float *, const float *, size_t) = b->stream ? la__stream_copy : plain_copy;
    for (int64_t i = 0; i < L; i++) {
        const size_t bi = (size_t)((r0 + i) * H + h);
        if (i < pn) {
            prefetch_rows(j->v, H, V, pr + i, 1, ph);
            prefetch_rows(j->d_o, H, V, pr + i, 1, ph);
        }
        put(j->dq + bi * (size_t)K, b->dqc + i * K, (size_t)K);
        put(j->dk + bi * (size_t)K, b->dkc + i * K, (size_t)K);
        put(j->dv + bi * (size_t)V, b->dvc + i * V, (size_t)V);
    }
}

GLA_INLINE void chunk_bwd_body(const gla_job *j, int64_t task, int tid) {
    const int64_t H = j->H, K = j->K, V = j->V, h = task % H, n = task / H;
    const size_t KV = (size_t)K * (size_t)V;
    int64_t start, len;
    la__seq_bounds(j->d, n, &start, &len);
    chunk_bufs b;
    chunk_layout(j, len, 1, la__scratch(j->ctx, tid), &b);
    const int64_t nch = (len + j->C - 1) / j->C;

    /* Two-level checkpoints: the state before every M-th chunk is kept, and
     * the states before the chunks of one group are recomputed when the
     * reverse sweep reaches it: O((nch/M + M) K V) memory, one extra pass
     * of state updates. cpu-sgsaved13: with the forward's saved states
     * (simple GLA, group 1) no state pass at all. */
    const int64_t M = j->group;
    const int keepG = M == 1 && !j->per_key && !j->saved;
    if (!j->saved) load_state(j, task, b.states);
    for (int64_t c = 0; !j->saved && c < nch; c++) {
        const int64_t c0 = c * j->C, L = len - c0 < j->C ? len - c0 : j->C;
        if (c % M == 0) memcpy(b.ckpt + (size_t)(c / M) * KV, b.states, KV * sizeof(float));
        if (c == nch - 1) break; /* the state after the last chunk is not used */
        prefetch_state_rows(j, start + c0 + L, len - c0 - L, h);
        if (keepG) b.G = b.Gall + c * j->C; /* kept for the reverse sweep */
        chunk_gates(j, &b, start + c0, L, h, 0);
        chunk_state_update(j, &b, b.states, start + c0, L, h, 0);
    }

    if (j->d_sT)
        memcpy(b.dS, j->d_sT + (size_t)task * KV, KV * sizeof(float));
    else
        memset(b.dS, 0, KV * sizeof(float));
    double gamma_sum = 0.0;
    for (int64_t c = nch - 1; c >= 0; c--) {
        const int64_t c0 = c * j->C, L = len - c0 < j->C ? len - c0 : j->C, r0 = start + c0;
        if (M > 1 && (c % M == M - 1 || c == nch - 1)) {
            /* Entering group c / M from its end: states[m] = before chunk g0 + m. */
            const int64_t g0 = c - c % M;
            memcpy(b.states, b.ckpt + (size_t)(g0 / M) * KV, KV * sizeof(float));
            for (int64_t m = 1; m <= c - g0; m++) {
                const int64_t p0 = (g0 + m - 1) * j->C, pl = len - p0 < j->C ? len - p0 : j->C;
                float *S = b.states + (size_t)m * KV;
                memcpy(S, S - KV, KV * sizeof(float));
                if (m < c - g0) prefetch_state_rows(j, start + p0 + pl, len - p0 - pl, h);
                chunk_gates(j, &b, start + p0, pl, h, 0);
                chunk_state_update(j, &b, S, start + p0, pl, h, 0);
            }
        }
        const float *S0 = j->saved ? j->saved + la__sgla_saved_slot(j, n, h, c)
                          : M == 1 ? b.ckpt + (size_t)c * KV
                                   : b.states + (size_t)(c % M) * KV;
        if (keepG) { /* the state pass summed every chunk's gates but the last one */
            b.G = b.Gall + c * j->C;
            if (c == nch - 1) chunk_cumsum(j, &b, r0, L, h);
            chunk_gate_exps(j, &b, L, 1);
        } else {
            bwd_gates(j, &b, r0, L, h);
        }
        const int64_t pn = c > 0 ? j->C : 0;
        chunk_bwd_chunk(j, &b, S0, r0, L, h, r0 - j->C, pn, h, NULL, &gamma_sum, NULL);
    }
    if (j->ds0) memcpy(j->ds0 + (size_t)task * KV, b.dS, KV * sizeof(float));
    if (j->dgamma_part) j->dgamma_part[task] = gamma_sum;
}

/* The backward in the same three builds as the forward (same bits). */
LA_ISA_BUILDS(, la__gla_chunk_bwd_task, chunk_bwd_body, (void *arg, int64_t task, int tid),
              (arg, task, tid))

/* ---- cpu-bwdsplit: one chunk of the backward for split.c's segments ---- */

/* Scratch bytes of la__gla_chunk_bwd_piece (j->group must be 1). */
size_t la__gla_chunk_bwd_piece_bytes(const gla_job *j) {
    chunk_bufs b;
    return chunk_layout(j, j->C, 1, NULL, &b);
}

/* chunk_bwd_chunk with its gates (chunk_gates, full) on a scratch laid out
 * for one chunk: dS (K x V, the gradient of the state after the chunk) is
 * read, Mc = scale (Q e^G)^T dO written, d = e^{G_L} (per key for GLA). */
GLA_INLINE void chunk_piece_body(const gla_job *j, char *scratch, const float *S0, const float *dS,
                                 int64_t r0, int64_t L, int64_t h, int64_t pn, double *gamma_sum,
                                 float *Mc, float *d) {
    chunk_bufs b;
    chunk_layout(j, j->C, 1, scratch, &b);
    b.dS = (float *)dS; /* read only when Mc is given */
    bwd_gates(j, &b, r0, L, h);
    chunk_bwd_chunk(j, &b, S0, r0, L, h, r0 - j->C, pn, h, NULL, gamma_sum, Mc);
    const int64_t gw = j->per_key ? j->K : 1;
    for (int64_t x = 0; x < gw; x++) d[x] = b.eG[(L - 1) * gw + x];
}

LA_ISA_BUILDS(, la__gla_chunk_bwd_piece, chunk_piece_body,
              (const gla_job *j, char *scratch, const float *S0, const float *dS, int64_t r0,
               int64_t L, int64_t h, int64_t pn, double *gamma_sum, float *Mc, float *d),
              (j, scratch, S0, dS, r0, L, h, pn, gamma_sum, Mc, d))

/* ---- cpu-bwdsplit: one chunk of the GLA forward for split_gla.c -------- */

/* cpu-split2: the factors a sum needs, no more: Ks = k e^{G_L - G} and the
 * last row's e^{G_L}, with gla_fwd_factors's expressions (the same floats:
 * el * P, and e^{G_b} * e^{G_i - G_b} for the last row), without the
 * queries' factors (half of the exponentials). */
GLA_INLINE void gla_sum_factors(const gla_job *j, chunk_bufs *b, int64_t r0, int64_t L, int64_t h) {
    const int64_t H = j->H, K = j->K;
    double *G = b->G;
    gla_gate_prefix(j, G, r0, L, h);
    const int64_t sub = gla_sub_size(K, G, L); /* as gla_fwd_factors */
    const double *GL = G + (L - 1) * K;
    float *el = b->F, *P = b->P;
    for (int64_t i0 = 0; i0 < L; i0 += sub) {
        const int64_t i1 = L - i0 < sub ? L : i0 + sub;
        const double *Gb = G + i0 * K, *Ge = G + (i1 - 1) * K;
        for (int64_t x = 0; x < K; x++) el[x] = exp_nonpos((float)(GL[x] - Ge[x]));
        for (int64_t i = i0; i < i1; i++) {
            const float *restrict k = j->k + (size_t)((r0 + i) * H + h) * (size_t)K;
            const double *Gi = G + i * K;
            float *restrict Ks = b->Ks + i * K;
            for (int64_t x = 0; x < K; x++) P[x] = exp_nonpos((float)(Ge[x] - Gi[x]));
            for (int64_t x = 0; x < K; x++) {
                const float l1 = el[x] * P[x];
                Ks[x] = k[x] * l1;
            }
        }
        if (i1 == L) {
            float *restrict eG = b->eG + (L - 1) * K;
            for (int64_t x = 0; x < K; x++)
                eG[x] = exp_nonpos((float)Gb[x]) * exp_nonpos((float)(GL[x] - Gb[x]));
        }
    }
}

GLA_INLINE void gla_piece_body(const gla_job *j, char *scratch, const float *S, int64_t r0,
                               int64_t L, int64_t h, int outputs, float *U, float *d,
                               double *GLsum) {
    const int64_t H = j->H, K = j->K, V = j->V;
    chunk_bufs b;
    chunk_layout(j, 0, 0, scratch, &b);
    if (outputs) {
        b.S = (float *)S; /* read only (U given) */
        gla_fwd_chunk_head(j, &b, r0, L, h, r0, 0, h, U);
    } else {
        gla_sum_factors(j, &b, r0, L, h);
        j->kr->gemm_tn(K, V, L, 1.0f, b.Ks, K, j->v + (size_t)(r0 * H + h) * (size_t)V, H * V, 0.0f,
                       U, V);
    }
    const float *eGL = b.eG + (L - 1) * K;
    const double *GL = b.G + (L - 1) * K;
    for (int64_t x = 0; x < K; x++) {
        d[x] = eGL[x];
        GLsum[x] += GL[x];
    }
}

LA_ISA_BUILDS(, la__gla_chunk_fwd_piece, gla_piece_body,
              (const gla_job *j, char *scratch, const float *S, int64_t r0, int64_t L, int64_t h,
               int outputs, float *U, float *d, double *GLsum),
              (j, scratch, S, r0, L, h, outputs, U, d, GLsum))

/* The backward split's sums for GLA (per-key gates), on the same scratch:
 * kind 0, S <- Diag(e^{G_L}) S + (K e^{G_L - G})^T V (chunk_state_update)
 * and GLsum[x] += G_L,x; kind 1, S = Mc = scale (Q e^G)^T dO as
 * chunk_bwd_chunk makes it (the same floats) and d = e^{G_L}. */
GLA_INLINE void sum_piece_body(const gla_job *j, char *scratch, int64_t r0, int64_t L, int64_t h,
                               int kind, float *S, float *d, double *GLsum) {
    const int64_t H = j->H, K = j->K, V = j->V, gw = j->per_key ? K : 1;
    chunk_bufs b;
    chunk_layout(j, j->C, 1, scratch, &b);
    chunk_gates(j, &b, r0, L, h, kind);
    if (kind == 0) {
        chunk_state_update(j, &b, S, r0, L, h, 0);
        for (int64_t x = 0; x < gw; x++) GLsum[x] += b.G[(L - 1) * gw + x];
        return;
    }
    gather_rows(b.Qc, j->q, H, K, r0, L, h);
    gather_rows(b.dOc, j->d_o, H, V, r0, L, h);
    scale_rows(b.Qs, b.Qc, b.eG, j->per_key, L, K);
    j->kr->gemm_tn(K, V, L, j->scale, b.Qs, K, b.dOc, V, 0.0f, S, V);
    for (int64_t x = 0; x < gw; x++) d[x] = b.eG[(L - 1) * gw + x];
}

LA_ISA_BUILDS(, la__gla_chunk_bwd_sum_piece, sum_piece_body,
              (const gla_job *j, char *scratch, int64_t r0, int64_t L, int64_t h, int kind,
               float *S, float *d, double *GLsum),
              (j, scratch, r0, L, h, kind, S, d, GLsum))

/* ---- cpu-sgla9: the backward over a group of heads --------------------
 * (simple GLA; cpu-glab15: GLA too, which sums its gates again in the
 * reverse sweep instead of keeping them: 1.075-1.083x fwd+bwd)
 * With every chunk's start state kept (j->group == 1) a task of the chunk
 * backward is one head over its whole sequence, so each row it gathers or
 * writes (q, k, v, d_o, dq, dk, dv: 512 bytes at K = V = 128) sits on a
 * page of its own (the rows of one token's H heads share a page): a TLB
 * miss per row. Here a task is (sequence, group of up to
 * LA__GLA_HEAD_GROUP heads), run chunk by chunk and head by head as the
 * chunk forward does, so a token's heads are walked together. Each head has
 * its own scratch (its states) and the arithmetic of a task of its own: the
 * results are those of la__gla_chunk_bwd_task bit for bit. */
int64_t la__gla_bwd_heads(const gla_job *j, int64_t L) {
    if (j->group != 1 || j->H < 2) return 1;
    if (j->saved) return heads_per_task(j, LA__GLA_BWD_HEADS); /* cpu-sgla19 */
    const double nch = (double)((L + j->C - 1) / j->C);
    const double per = nch * (double)j->K * (double)j->V * sizeof(float);
    int64_t gh = j->H < LA__GLA_HEAD_GROUP ? j->H : LA__GLA_HEAD_GROUP;
    while (gh > 1 && (double)gh * per > (double)la__gla_bwd_all_states_bytes) gh--;
    return gh;
}

/* cpu-sgla19: with the forward's saved states a head keeps nothing from one
 * chunk to the next but dS (its gates are summed again per chunk), so the
 * heads of a group share one set of chunk blocks and have a dS each: ~0.5
 * MiB of blocks instead of ~0.5 MiB per head, which at 8 heads came back
 * from L3 on every unit. Without, each head has its own scratch (its
 * states and gate sums). */
static size_t ds_bytes(const gla_job *j) {
    return ((size_t)j->K * (size_t)j->V * sizeof(float) + 63) & ~(size_t)63;
}

size_t la__gla_chunk_bwd_group_bytes(const gla_job *j, int64_t L) {
    const size_t one = la__gla_chunk_bwd_bytes(j, L);
    const size_t gh = (size_t)la__gla_bwd_heads(j, L);
    if (!one) return 0;
    if (j->saved) {
        const size_t ds = ds_bytes(j);
        return ds > (SIZE_MAX - one) / gh ? 0 : one + (gh - 1) * ds;
    }
    return one > SIZE_MAX / gh ? 0 : one * gh;
}

GLA_INLINE void gla_bwd_group_body(const gla_job *j, int64_t task, int tid) {
    const int64_t H = j->H, K = j->K, V = j->V, C = j->C;
    const int64_t gh = la__gla_bwd_heads(j, la__max_seq_len(j->d));
    const int64_t ng = (H + gh - 1) / gh, n = task / ng, h0 = (task % ng) * gh;
    const int64_t nh = H - h0 < gh ? H - h0 : gh;
    const size_t KV = (size_t)K * (size_t)V;
    int64_t start, len;
    la__seq_bounds(j->d, n, &start, &len);
    chunk_bufs bs[LA__GLA_BWD_HEADS];
    double gamma_sum[LA__GLA_BWD_HEADS];
    const float *S0s[LA__GLA_BWD_HEADS]; /* each head's chunk start states */
    char *base = la__scratch(j->ctx, tid);
    const size_t one = chunk_layout(j, len, 1, NULL, &bs[0]); /* a multiple of 64 */
    /* cpu-glab19: with the forward's saved states a head keeps nothing but
     * dS from one chunk to the next, so the group's heads share one set of
     * per-chunk blocks (~0.9 MiB at K = V = 128, C = 64, against 4 sets that
     * outgrew the 1 MiB L2); the heads' dS follow the shared set */
    for (int64_t hh = 0; hh < nh; hh++) {
        if (j->saved && hh > 0) { /* the blocks of head 0, a dS of its own */
            bs[hh] = bs[0];
            bs[hh].dS = (float *)(void *)(base + one + (size_t)(hh - 1) * ds_bytes(j));
        } else {
            chunk_layout(j, len, 1, base + (size_t)hh * one, &bs[hh]);
        }
        bs[hh].stream = stream_rows(j);
        if (!j->saved) load_state(j, n * H + h0 + hh, bs[hh].states);
        S0s[hh] = j->saved ? j->saved + la__sgla_saved_slot(j, n, h0 + hh, 0) : bs[hh].ckpt;
        gamma_sum[hh] = 0.0;
    }
    const int64_t nch = (len + C - 1) / C;
    /* the state pass: every chunk's start state, every chunk's G but the
     * last (cpu-sgsaved13: none with the forward's saved states) */
    for (int64_t c = 0; !j->saved && c < nch; c++) {
        const int64_t c0 = c * C, L = len - c0 < C ? len - c0 : C;
        for (int64_t hh = 0; hh < nh; hh++) {
            chunk_bufs *b = &bs[hh];
            memcpy(b->ckpt + (size_t)c * KV, b->states, KV * sizeof(float));
            if (c == nch - 1) continue; /* the state after the last chunk is not used */
            prefetch_state_rows(j, start + c0 + L, len - c0 - L, h0 + hh);
            if (!j->per_key) b->G = b->Gall + c * C;
            chunk_gates(j, b, start + c0, L, h0 + hh, 0);
            chunk_state_update(j, b, b->states, start + c0, L, h0 + hh, 0);
        }
    }
    for (int64_t hh = 0; hh < nh; hh++) {
        const int64_t t = n * H + h0 + hh;
        if (j->d_sT)
            memcpy(bs[hh].dS, j->d_sT + (size_t)t * KV, KV * sizeof(float));
        else
            memset(bs[hh].dS, 0, KV * sizeof(float));
    }
    for (int64_t c = nch - 1; c >= 0; c--) {
        const int64_t c0 = c * C, L = len - c0 < C ? len - c0 : C, r0 = start + c0;
        for (int64_t hh = 0; hh < nh; hh++) {
            chunk_bufs *b = &bs[hh];
            if (j->per_key) { /* GLA sums its gates again (no Gall: chunk_layout) */
                bwd_gates(j, b, r0, L, h0 + hh);
            } else {
                if (!j->saved) b->G = b->Gall + c * C;
                if (c == nch - 1 || j->saved) chunk_cumsum(j, b, r0, L, h0 + hh);
                chunk_gate_exps(j, b, L, 1);
            }
            /* cpu-sgla12: the rows the next head (or the previous chunk's
             * first head) gathers and writes, as the chunk forward does:
             * the previous chunk of the same head runs nh - 1 heads later,
             * by when its prefetched rows were evicted */
            const int64_t ph = hh + 1 < nh ? h0 + hh + 1 : h0, pr = hh + 1 < nh ? r0 : r0 - C;
            const int64_t pn = hh + 1 < nh ? L : c > 0 ? C : 0;
            /* and its start state (64 KiB of the checkpoints, not in cache) */
            const float *pS = hh + 1 < nh ? S0s[hh + 1] + (size_t)c * KV
                              : c > 0     ? S0s[0] + (size_t)(c - 1) * KV
                                          : NULL;
            chunk_bwd_chunk(j, b, S0s[hh] + (size_t)c * KV, r0, L, h0 + hh, pr, pn, ph, pS,
                            &gamma_sum[hh], NULL);
        }
    }
    for (int64_t hh = 0; hh < nh; hh++) {
        const int64_t t = n * H + h0 + hh;
        if (j->ds0) memcpy(j->ds0 + (size_t)t * KV, bs[hh].dS, KV * sizeof(float));
        if (j->dgamma_part) j->dgamma_part[t] = gamma_sum[hh];
    }
    if (bs[0].stream) la__stream_fence();
}

LA_ISA_BUILDS(, la__gla_chunk_bwd_group_task, gla_bwd_group_body,
              (void *arg, int64_t task, int tid), (arg, task, tid))
