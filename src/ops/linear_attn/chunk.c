/* Causal kernel linear attention, chunk form. The sequence is cut into
 * chunks of C tokens (the last one may be shorter). For a chunk with rows
 * Q̂ = c·φ(Q), K̃ = φ(K), Vx = [V, 1] (the ones column only when normalised)
 * and the extended state Sx = [S, z] before it (linear_attn.h):
 *
 *   A    = (Q̂ K̃ᵀ) ⊙ M               M lower triangular, diagonal included
 *   Numx = Q̂ Sx + A Vx               [num, den - ε]: inter- + intra-chunk
 *   O    = num / den  (row-wise), or num
 *   Sx  += K̃ᵀ Vx                     S += K̃ᵀ V, z += K̃ᵀ 1
 *
 * Every product is one call of the dense micro-kernels (src/kernels) on
 * contiguous per-thread blocks: φ is applied while the chunk's rows are
 * copied into them. All chunk matrices live in per-thread scratch of
 * O(C² + C(K+V) + KV) floats.
 *
 * Backward, chunk by chunk (formulas in linear_attn.h), with
 * Gx = [G, δ] (G = dO / den, δ = -rowsum(dO ⊙ O) / den; G = dO and no δ
 * column unnormalised):
 *   forward sweep, with Sx before the chunk:
 *     dQ̂  = Gx Sxᵀ  (parked in dq)    = G Sᵀ + δ zᵀ
 *   reverse sweep, with dSx = [dS, dz] the gradient of the state after the
 *   chunk (d_final_state, d_final_norm for the last one):
 *     dA  = (Gx Vxᵀ) ⊙ M             = (G Vᵀ + δ 1ᵀ) ⊙ M
 *     dQ̂ += dA K̃                     (cpu-lin8: dA is formed once, here)
 *     dK̃  = dAᵀ Q̂ + Vx dSxᵀ          = dAᵀ Q̂ + V dSᵀ + 1 dzᵀ
 *     dV  = Aᵀ G + K̃ dS
 *     dSx += Q̂ᵀ Gx                   dS += Q̂ᵀ G, dz += Q̂ᵀ δ
 *   and d_initial_state, d_initial_norm = dSx after the first chunk.
 * The forward sweep needs only the running state, the reverse sweep only
 * the running dSx, so no per-chunk state is stored; unless the caller gives
 * a la_saved (cpu-saved16): then the forward copies each chunk's start
 * state Sx into it (la__lin_unit.save_S) and the backward has no forward
 * sweep (cpu-linbwd18): each chunk of the reverse sweep reads its start
 * state (saved_S), forms Gx and Gx Sxᵀ itself from the rows it loads anyway
 * (no dq / G / δ parked in the outputs, no second read of k, v, dO): the
 * same floats in the same operations, so the same gradient bits. */
#include "linear_attn.h"

#include <string.h>

enum { C_S, C_QH, C_KH, C_VB, C_A, C_NUM, C_G, C_DA, C_DQH, C_DVB };

void la__lin_chunk_layout(const la__lin_job *j, int backward, la__arena *b, float **p) {
    const size_t K = (size_t)j->K, V = (size_t)j->V, C = (size_t)j->chunk;
    const size_t Vx = (size_t)la__lin_vx(j);
    /* the states of a whole head group; split over time, the local and
     * total state and the serial path's two (slots 2 and 3, split.c) */
    const size_t ns = (size_t)LA__LIN_HEAD_GROUP;
    p[C_S] = la__arena_floats(b, la__mul(ns, la__mul(K, Vx)));
    p[C_QH] = la__arena_floats(b, la__mul(C, K));
    p[C_KH] = la__arena_floats(b, la__mul(C, K));
    p[C_VB] = la__arena_floats(b, la__mul(C, Vx));
    p[C_A] = la__arena_floats(b, la__mul(C, C));
    p[C_NUM] = la__arena_floats(b, la__mul(C, Vx));
    if (!backward) return;
    /* Sx holds dSx in the reverse sweep */
    p[C_G] = la__arena_floats(b, la__mul(C, Vx));
    p[C_DA] = la__arena_floats(b, la__mul(C, C));
    p[C_DQH] = la__arena_floats(b, la__mul(C, K));
    p[C_DVB] = la__arena_floats(b, la__mul(C, V));
}

/* cpu-kpack22: the forward's kh block holds K̃ᵀ [K, C] (row stride C)
 * rather than K̃'s rows, transposed while the rows are copied in (identity
 * features: K̃ = K, copied as it stands), so that no product transposes K:
 * Q̂ K̃ᵀ is gemm_nn_tril reading K̃ᵀ's panels in place (gemm_nt_tril packed
 * K̃ into transposed panels, ~7% of its call) and the state update is
 * gemm_nn on K̃ᵀ. The same values in the same operations: the same bits
 * (kernels.h, la__tn_from_t_same; test_kernels). The backward keeps K̃'s
 * rows (its products read them). */
static int fwd_kt(const la__lin_job *j) {
    return j->fm == LA_FEATURE_IDENTITY && la__tn_from_t_same(j->K, j->chunk);
}

/* K̃ᵀ of the chunk [t0, t0+L) into kt [K, C]: 8 token rows at a time, the
 * rows LA__LIN_PREFETCH_AHEAD ahead prefetched as la__lin_phi_rows does. */
static void load_kt(const la__lin_job *j, const la__lin_unit *u, int64_t t0, int64_t L, float *kt) {
    const int64_t K = j->K, C = j->chunk, s = u->sqk;
    const float *x = u->k + t0 * s;
    for (int64_t r = 0; r < L; r += 8) {
        const int64_t n = L - r < 8 ? L - r : 8;
        for (int64_t i = r + LA__LIN_PREFETCH_AHEAD; i < r + n + LA__LIN_PREFETCH_AHEAD && i < L;
             i++)
            la__prefetch_row(x + i * s, K);
        j->kr->transpose(n, K, x + r * s, s, kt + r, C);
    }
}

/* Q̂, K̃ (K̃ᵀ when kt) and Vx rows of the chunk [t0, t0+L) into contiguous
 * blocks, and the masked scores A (row stride C). */
static void load_chunk(const la__lin_job *j, const la__lin_unit *u, int64_t t0, int64_t L,
                       float *qh, float *kh, float *vb, float *A, int kt) {
    const int64_t K = j->K, C = j->chunk;
    la__lin_phi_rows(j, j->qscale, u->q, u->sqk, t0, L, qh);
    if (kt)
        load_kt(j, u, t0, L, kh);
    else
        la__lin_phi_rows(j, 1.0f, u->k, u->sqk, t0, L, kh);
    la__lin_load_vx(j, u->v, u->sv, t0, L, vb);
    if (kt)
        j->kr->gemm_nn_tril(L, K, 0, 1.0f, qh, K, kh, C, 0.0f, A, C);
    else
        j->kr->gemm_nt_tril(L, K, 0, 1.0f, qh, K, kh, K, 0.0f, A, C);
}

/* Sacc += K̃ᵀ Vx over the chunk's L rows, kh as load_chunk left it. */
static void state_add(const la__lin_job *j, int64_t L, const float *kh, int kt, const float *vb,
                      float *Sacc) {
    const int64_t K = j->K, Vx = la__lin_vx(j);
    if (kt)
        j->kr->gemm_nn(K, Vx, L, 1.0f, kh, j->chunk, vb, Vx, 1.0f, Sacc, Vx);
    else
        la__gemm_tn_block(j->kr, K, Vx, L, 1.0f, kh, K, vb, Vx, 1.0f, Sacc, Vx);
}

/* Numx = Q̂ Sx + A Vx: row i holds num_i and (normalised) den_i - ε. */
static void chunk_num_to(const la__lin_job *j, int64_t L, const float *Sx, const float *qh,
                         const float *vb, const float *A, float *num, int64_t ldn) {
    const int64_t K = j->K, C = j->chunk, Vx = la__lin_vx(j);
    j->kr->gemm_nn(L, Vx, K, 1.0f, qh, K, Sx, Vx, 0.0f, num, ldn);
    j->kr->gemm_nn_lower(L, Vx, L, 1.0f, A, C, vb, Vx, 1.0f, num, ldn);
}

static void chunk_num(const la__lin_job *j, int64_t L, const float *Sx, const float *qh,
                      const float *vb, const float *A, float *num) {
    chunk_num_to(j, L, Sx, qh, vb, A, num, la__lin_vx(j));
}

/* Prefetch the q, k, v rows of the chunk [t0, t0+L) (into L2) while the
 * current one is computed: the rows are H·D floats apart (a page apart at
 * H·D = 1024), too far for the hardware prefetcher, and the short
 * per-row look-ahead of the loads alone leaves them waiting on memory. */
static void prefetch_rows(const float *x, int64_t sx, int64_t w, int64_t t0, int64_t L) {
#if defined(__GNUC__)
    for (int64_t i = 0; i < L; i++)
        for (int64_t c = 0; c < w; c += 16) __builtin_prefetch(x + (t0 + i) * sx + c, 0, 2);
#else
    (void)x, (void)sx, (void)w, (void)t0, (void)L;
#endif
}

void la__lin_chunk_fwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    la__lin_chunk_fwd_group(j, u, 1, scratch);
}

void la__lin_chunk_fwd_group(const la__lin_job *j, const la__lin_unit *units, int64_t nh,
                             float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_chunk_layout(j, 0, &b, p);
    const int64_t K = j->K, C = j->chunk, Vx = la__lin_vx(j);
    const int kt = fwd_kt(j);
    float *num = p[C_NUM];
    for (int64_t h = 0; h < nh; h++)
        la__lin_ext_load(j, p[C_S] + h * K * Vx, units[h].S0, units[h].z0);
    const int64_t len = units[0].len; /* one sequence: every head has its length */
    for (int64_t t0 = 0; t0 < len; t0 += C) {
        for (int64_t h = 0; h < nh; h++) {
            const la__lin_unit *u = units + h;
            float *Sx = p[C_S] + h * K * Vx;
            const int64_t L = u->len - t0 < C ? u->len - t0 : C;
            /* the rows the next head (or the next chunk's first head) will
             * load, one tensor per product, so that the misses overlap the
             * products instead of queueing in one burst */
            const la__lin_unit *pu = h + 1 < nh ? u + 1 : units;
            const int64_t pt = h + 1 < nh ? t0 : t0 + C;
            const int64_t pn = pt >= len ? 0 : len - pt < C ? len - pt : C;
            if (u->save_S) /* la_saved: the chunk's start state */
                memcpy(u->save_S + t0 / C * K * Vx, Sx, (size_t)(K * Vx) * sizeof(float));
            load_chunk(j, u, t0, L, p[C_QH], p[C_KH], p[C_VB], p[C_A], kt);
            if (pn > 0) prefetch_rows(pu->q, pu->sqk, K, pt, pn);
            if (j->normalize) {
                chunk_num(j, L, Sx, p[C_QH], p[C_VB], p[C_A], num);
                la__lin_out_rows(j, L, num, u->o, u->sv, t0);
            } else { /* o = num: straight into the output rows */
                chunk_num_to(j, L, Sx, p[C_QH], p[C_VB], p[C_A], u->o + t0 * u->sv, u->sv);
            }
            if (pn > 0) prefetch_rows(pu->k, pu->sqk, K, pt, pn);
            state_add(j, L, p[C_KH], kt, p[C_VB], Sx);
            if (pn > 0) prefetch_rows(pu->v, pu->sv, j->V, pt, pn);
        }
    }
    for (int64_t h = 0; h < nh; h++)
        la__lin_ext_store(j, p[C_S] + h * K * Vx, units[h].fS, units[h].fz);
}

/* The backward's forward sweep over the chunk [t0, t0+L) (no la_saved):
 * with the state S before it, the inter-chunk part Gx Sxᵀ of dQ̂ parked in
 * dq's rows (the reverse sweep adds dA K̃ and applies dφ: it forms dA
 * anyway), G and δ parked in dv and dk (normalised), then Sacc += K̃ᵀ Vx
 * (Sacc = S, or a segment's local sum). S is in the forward's layout,
 * [K, Vx], normalised or not (cpu-saved16: cpu-lin8 had kept Sᵀ
 * unnormalised for gemm_nn, and gemm_nt on S gives the same bits at the
 * same speed, bench/NOTES.md). */
static void bwd_fwd_chunk(const la__lin_job *j, const la__lin_unit *u, int64_t t0, int64_t L,
                          const float *S, float *Sacc, float **p) {
    const la__kernels *kr = j->kr;
    const int64_t K = j->K, V = j->V, Vx = la__lin_vx(j);
    float *qh = p[C_QH], *kh = p[C_KH], *vb = p[C_VB], *A = p[C_A];
    float *num = p[C_NUM], *g = p[C_G];
    if (j->normalize) { /* G and δ need the output's num and den */
        load_chunk(j, u, t0, L, qh, kh, vb, A, 0);
        chunk_num(j, L, S, qh, vb, A, num);
    } else { /* G = dO: neither Q̂ nor A nor the output is needed here */
        la__lin_phi_rows(j, 1.0f, u->k, u->sqk, t0, L, kh);
        la__lin_load_vx(j, u->v, u->sv, t0, L, vb);
    }
    la__lin_gx_rows(j, L, num, u->d_o, u->sv, t0, g);
    kr->gemm_nt(L, K, Vx, 1.0f, g, Vx, S, Vx, 0.0f, u->dq + t0 * u->sqk, u->sqk);
    if (j->normalize) /* park G and δ for the reverse sweep */
        for (int64_t i = 0; i < L; i++) {
            memcpy(u->dv + (t0 + i) * u->sv, g + i * Vx, (size_t)V * sizeof(float));
            u->dk[(t0 + i) * u->sqk] = g[i * Vx + V];
        }
    la__gemm_tn_block(kr, K, Vx, L, 1.0f, kh, K, vb, Vx, 1.0f, Sacc, Vx);
}

/* Gx rows of the chunk [t0, t0+L): parked G, δ (normalised) or dO. */
static void load_gx(const la__lin_job *j, const la__lin_unit *u, int64_t t0, int64_t L,
                    float *g) {
    const int64_t V = j->V, Vx = la__lin_vx(j);
    for (int64_t i = 0; i < L; i++) {
        const int64_t rv = (t0 + i) * u->sv;
        if (j->normalize) {
            memcpy(g + i * Vx, u->dv + rv, (size_t)V * sizeof(float));
            g[i * Vx + V] = u->dk[(t0 + i) * u->sqk];
        } else {
            memcpy(g + i * Vx, u->d_o + rv, (size_t)V * sizeof(float));
        }
    }
}

/* The reverse sweep over the chunk [t0, t0+L) with dS, the gradient of the
 * state after it: dq, dk, dv, then dSacc += Q̂ᵀ Gx. S: the state before the
 * chunk (la_saved), from which Gx and Gx Sxᵀ are formed here as the forward
 * sweep forms them; NULL: the forward sweep parked them. */
typedef struct next_rows { /* the unit the reverse sweep runs next (L2 prefetch) */
    const la__lin_unit *u;
    int64_t t0, L; /* L = 0: none */
} next_rows;

static void bwd_rev_chunk(const la__lin_job *j, const la__lin_unit *u, int64_t t0, int64_t L,
                          const float *S, const float *dS, float *dSacc, float **p,
                          const next_rows *nx) {
    const la__kernels *kr = j->kr;
    const int64_t K = j->K, V = j->V, C = j->chunk, Vx = la__lin_vx(j);
    float *qh = p[C_QH], *kh = p[C_KH], *vb = p[C_VB], *A = p[C_A];
    float *g = p[C_G], *dA = p[C_DA], *dkh = p[C_DQH], *dvb = p[C_DVB];
    load_chunk(j, u, t0, L, qh, kh, vb, A, 0);
    if (S && j->normalize) chunk_num(j, L, S, qh, vb, A, p[C_NUM]);
    if (S) la__lin_gx_rows(j, L, p[C_NUM], u->d_o, u->sv, t0, g);
    else load_gx(j, u, t0, L, g);
    kr->gemm_nt_tril(L, Vx, 0, 1.0f, g, Vx, vb, Vx, 0.0f, dA, C);
    if (nx->L) prefetch_rows(nx->u->q, nx->u->sqk, K, nx->t0, nx->L);
    /* dQ̂ = Gx Sxᵀ + dA K̃, then dφ; dkh's block holds dQ̂ until dq is
     * written */
    if (S)
        kr->gemm_nt(L, K, Vx, 1.0f, g, Vx, S, Vx, 0.0f, dkh, K);
    else /* parked in dq by the forward sweep */
        for (int64_t i = 0; i < L; i++)
            memcpy(dkh + i * K, u->dq + (t0 + i) * u->sqk, (size_t)K * sizeof(float));
    kr->gemm_nn_lower(L, K, L, 1.0f, dA, C, kh, K, 1.0f, dkh, K);
    if (nx->L) prefetch_rows(nx->u->k, nx->u->sqk, K, nx->t0, nx->L);
    la__lin_dphi_rows(j, j->qscale, u->dq, u->sqk, t0, L, dkh, u->q);
    /* dK̃ = Vx dSxᵀ + dAᵀ Q̂ (dA is zero above the diagonal) */
    kr->gemm_nt(L, K, Vx, 1.0f, vb, Vx, dS, Vx, 0.0f, dkh, K);
    la__gemm_tn_lower_acc(kr, L, K, dA, C, qh, K, dkh, K); /* kernels.h */
    if (nx->L) prefetch_rows(nx->u->v, nx->u->sv, V, nx->t0, nx->L);
    /* dV = K̃ dS + Aᵀ G */
    kr->gemm_nn(L, V, K, 1.0f, kh, K, dS, Vx, 0.0f, dvb, V);
    la__gemm_tn_lower_acc(kr, L, V, A, C, g, Vx, dvb, V);
    if (nx->L) prefetch_rows(nx->u->d_o, nx->u->sv, V, nx->t0, nx->L);
    la__gemm_tn_block(kr, K, Vx, L, 1.0f, qh, K, g, Vx, 1.0f, dSacc, Vx);
    la__lin_dphi_rows(j, 1.0f, u->dk, u->sqk, t0, L, dkh, u->k);
    for (int64_t jj = 0; jj < L; jj++)
        memcpy(u->dv + (t0 + jj) * u->sv, dvb + jj * V, (size_t)V * sizeof(float));
}

void la__lin_chunk_bwd(const la__lin_job *j, const la__lin_unit *u, float *scratch) {
    la__lin_chunk_bwd_group(j, u, 1, scratch);
}

/* Heads of one sequence chunk by chunk, head by head within a chunk (as
 * the forward group): each head's arithmetic is la__lin_chunk_bwd's. */
void la__lin_chunk_bwd_group(const la__lin_job *j, const la__lin_unit *units, int64_t nh,
                             float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_chunk_layout(j, 1, &b, p);
    const int64_t K = j->K, C = j->chunk, Vx = la__lin_vx(j), len = units[0].len;
    /* la_saved: every unit has its chunk states (or none has) */
    const int saved = units[0].saved_S != NULL;
    /* Forward sweep (without la_saved): rebuild each chunk's state and
     * output, then Gx and dQ. */
    for (int64_t h = 0; h < nh && !saved; h++)
        la__lin_ext_load(j, p[C_S] + h * K * Vx, units[h].S0, units[h].z0);
    for (int64_t t0 = 0; t0 < len && !saved; t0 += C) {
        const int64_t L = len - t0 < C ? len - t0 : C;
        for (int64_t h = 0; h < nh; h++) {
            float *Sx = p[C_S] + h * K * Vx;
            bwd_fwd_chunk(j, units + h, t0, L, Sx, Sx, p);
        }
    }
    /* Reverse sweep: the state slots now carry dSx = [dS, dz]. */
    for (int64_t h = 0; h < nh; h++)
        la__lin_ext_load(j, p[C_S] + h * K * Vx, units[h].dST, units[h].dzT);
    for (int64_t t0 = (len - 1) / C * C; t0 >= 0 && len > 0; t0 -= C) {
        const int64_t L = len - t0 < C ? len - t0 : C;
        for (int64_t h = 0; h < nh; h++) {
            const la__lin_unit *u = units + h;
            float *dSx = p[C_S] + h * K * Vx;
            next_rows nx = {h + 1 < nh ? u + 1 : units, h + 1 < nh ? t0 : t0 - C, 0};
            nx.L = nx.t0 < 0 ? 0 : len - nx.t0 < C ? len - nx.t0 : C;
            bwd_rev_chunk(j, u, t0, L, saved ? u->saved_S + t0 / C * K * Vx : NULL, dSx, dSx, p,
                          &nx);
        }
    }
    for (int64_t h = 0; h < nh; h++)
        la__lin_ext_store(j, p[C_S] + h * K * Vx, units[h].dS0, units[h].dz0);
}

/* ---- one sequence split over time (api.c schedules the segments) ----
 * Segment [tb, te) (chunk-aligned) with the state Sin before it: its chunks
 * run from a local state Sloc = 0, each chunk's products use
 * Stot = Sin + Sloc, and Sloc accumulates K̃ᵀ Vx chunk by chunk. The local
 * sum of a segment is therefore the same float computation whether the
 * segment's own forward produces it or la__lin_chunk_seg_sum does (ahead of
 * time, on another thread), and Sin of the next segment is Sin + Sloc in
 * both cases: the outputs do not depend on how the segments were shared
 * out. */
void la__lin_chunk_seg_sum(const la__lin_job *j, const la__lin_unit *u, int64_t tb, int64_t te,
                           float *Ssum, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_chunk_layout(j, 0, &b, p);
    const int64_t K = j->K, C = j->chunk, Vx = la__lin_vx(j);
    memset(Ssum, 0, (size_t)(K * Vx) * sizeof(float));
    /* identity features, no ones column: the rows are K̃ and Vx as they
     * stand (φ(x) = 1·x exactly), and the product packs its operands
     * itself, so reading them in place gives the same bits as the copies */
    const int direct = j->fm == LA_FEATURE_IDENTITY && !j->normalize;
    for (int64_t t0 = tb; t0 < te; t0 += C) {
        const int64_t L = te - t0 < C ? te - t0 : C;
        if (direct) {
            j->kr->gemm_tn(K, Vx, L, 1.0f, u->k + t0 * u->sqk, u->sqk, u->v + t0 * u->sv, u->sv,
                           1.0f, Ssum, Vx);
            continue;
        }
        la__lin_phi_rows(j, 1.0f, u->k, u->sqk, t0, L, p[C_KH]);
        la__lin_load_vx(j, u->v, u->sv, t0, L, p[C_VB]);
        la__gemm_tn_block(j->kr, K, Vx, L, 1.0f, p[C_KH], K, p[C_VB], Vx, 1.0f, Ssum, Vx);
    }
}

void la__lin_chunk_seg_fwd(const la__lin_job *j, const la__lin_unit *u, int64_t tb, int64_t te,
                           const float *Sin, float *Sout, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_chunk_layout(j, 0, &b, p);
    const int64_t K = j->K, C = j->chunk, Vx = la__lin_vx(j), KVx = K * Vx;
    float *Sloc = p[C_S], *Stot = p[C_S] + KVx; /* two of the group's state slots */
    const int kt = fwd_kt(j);
    memset(Sloc, 0, (size_t)KVx * sizeof(float));
    for (int64_t t0 = tb; t0 < te; t0 += C) {
        const int64_t L = te - t0 < C ? te - t0 : C;
        for (int64_t x = 0; x < KVx; x++) Stot[x] = Sin[x] + Sloc[x];
        load_chunk(j, u, t0, L, p[C_QH], p[C_KH], p[C_VB], p[C_A], kt);
        if (t0 + C < te) prefetch_rows(u->q, u->sqk, K, t0 + C, te - t0 - C < C ? te - t0 - C : C);
        if (j->normalize) {
            chunk_num(j, L, Stot, p[C_QH], p[C_VB], p[C_A], p[C_NUM]);
            la__lin_out_rows(j, L, p[C_NUM], u->o, u->sv, t0);
        } else {
            chunk_num_to(j, L, Stot, p[C_QH], p[C_VB], p[C_A], u->o + t0 * u->sv, u->sv);
        }
        state_add(j, L, p[C_KH], kt, p[C_VB], Sloc);
    }
    if (Sout)
        for (int64_t x = 0; x < KVx; x++) Sout[x] = Sin[x] + Sloc[x];
}

/* ---- the backward of one sequence split over time -------------------
 * The same segments, twice. Forward sweep of segment [tb, te) from the
 * state Sin before it: each chunk uses Stot = Sin + Sloc (Sloc its local
 * K̃ᵀVx sum, from zero), rebuilds its output, and writes dq and parks G, δ
 * as la__lin_chunk_bwd does. Reverse sweep from dSin, the gradient of the
 * state after the segment: chunks from the last, dStot = dSin + dSloc with
 * dSloc the local sum of Q̂ᵀGx over the chunks after this one; writes dk,
 * dv. la__lin_chunk_seg_rsum forms the same dSloc (same order, same
 * products) without the sweep. */
void la__lin_chunk_seg_bwd_fwd(const la__lin_job *j, const la__lin_unit *u, int64_t tb,
                               int64_t te, const float *Sin, float *Sout, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_chunk_layout(j, 1, &b, p);
    const int64_t C = j->chunk, KVx = j->K * la__lin_vx(j);
    float *Sloc = p[C_S], *Stot = p[C_S] + KVx;
    memset(Sloc, 0, (size_t)KVx * sizeof(float));
    for (int64_t t0 = tb; t0 < te; t0 += C) {
        const int64_t L = te - t0 < C ? te - t0 : C;
        for (int64_t x = 0; x < KVx; x++) Stot[x] = Sin[x] + Sloc[x];
        bwd_fwd_chunk(j, u, t0, L, Stot, Sloc, p);
    }
    if (Sout)
        for (int64_t x = 0; x < KVx; x++) Sout[x] = Sin[x] + Sloc[x];
}

static int64_t last_chunk(const la__lin_job *j, int64_t tb, int64_t te) {
    return tb + (te - tb - 1) / j->chunk * j->chunk;
}

void la__lin_chunk_seg_rsum(const la__lin_job *j, const la__lin_unit *u, int64_t tb, int64_t te,
                            float *dSsum, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_chunk_layout(j, 1, &b, p);
    const int64_t K = j->K, C = j->chunk, Vx = la__lin_vx(j);
    memset(dSsum, 0, (size_t)(K * Vx) * sizeof(float));
    for (int64_t t0 = last_chunk(j, tb, te); t0 >= tb; t0 -= C) {
        const int64_t L = te - t0 < C ? te - t0 : C;
        la__lin_phi_rows(j, j->qscale, u->q, u->sqk, t0, L, p[C_QH]);
        load_gx(j, u, t0, L, p[C_G]);
        la__gemm_tn_block(j->kr, K, Vx, L, 1.0f, p[C_QH], K, p[C_G], Vx, 1.0f, dSsum, Vx);
    }
}

void la__lin_chunk_seg_bwd_rev(const la__lin_job *j, const la__lin_unit *u, int64_t tb,
                               int64_t te, const float *dSin, float *dSout, float *scratch) {
    float *p[LA__LIN_MAX_BUFS];
    la__arena b = {(char *)scratch, 0, 0};
    la__lin_chunk_layout(j, 1, &b, p);
    const int64_t C = j->chunk, KVx = j->K * la__lin_vx(j);
    float *dSloc = p[C_S], *dStot = p[C_S] + KVx;
    memset(dSloc, 0, (size_t)KVx * sizeof(float));
    for (int64_t t0 = last_chunk(j, tb, te); t0 >= tb; t0 -= C) {
        const int64_t L = te - t0 < C ? te - t0 : C;
        for (int64_t x = 0; x < KVx; x++) dStot[x] = dSin[x] + dSloc[x];
        const next_rows nx = {u, t0 - C, t0 - C >= tb ? C : 0};
        bwd_rev_chunk(j, u, t0, L, NULL, dStot, dSloc, p, &nx);
    }
    if (dSout)
        for (int64_t x = 0; x < KVx; x++) dSout[x] = dSin[x] + dSloc[x];
}
