/* cuda-fused9: the fused chunk-recurrent forward of kernel linear attention
 * and simple GLA for 16-bit inputs (lin_fused.cu). */
#ifndef LINATTN_CUDA_LIN_FUSED_CUH
#define LINATTN_CUDA_LIN_FUSED_CUH

#include "common.cuh"

/* Whether the fused forward takes this call (dtype, K <= 128, feature map,
 * grid size; LINATTN_CUDA_LIN_FUSED = 0 / 1 forces it off / on where
 * supported). */
bool la__lf_use(const la__cu_call *c);
/* o and final_state of the call, initial state s0 (NULL: zeros). */
la_status la__lf_forward(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb);
/* cuda-lsplit13: the segments per sequence of the split forward (0: none;
 * calls where the fused walk is supported, LINATTN_CUDA_LIN_SPLIT; gated
 * ones too since cuda-lsplit14). */
int la__lf_split_p(const la__cu_call *c, int64_t nchunks);
/* delta_state_split.cu: segment p of sequence n at segs[n P + p]. */
__global__ void la_cu_dss_table(const la_cu_seq *seqs, la_cu_seq *segs, int64_t N, int P);

/* cuda-fusedb10: whether the fused backward takes this call (la__lf_use,
 * V <= 128) and the backward itself (dq, dk, dv, d_initial_state from d_o
 * and d_final_state). cuda-fused12: with dg (non-NULL: a gate gradient is
 * asked) the dk and dq walks also leave per-token float64 dots of their
 * fp32 rows, phi(k).dk in pk and phi(q).dq in pq (nslot =
 * la__lf_dg_slots(c) partials a token, [token][head][slot]), the dq walk
 * S_T in sT ([N][H][K][V]) and fin[n, h] = <dS_T, S_T> (when fin and
 * c->dsT are non-NULL). cuda-bsplit16: each walk split over time as the
 * forward is (la__lf_split_p; hence nchunks, and the arena for the split's
 * scratch). */
struct la_lf_dg {
    double *pq, *pk, *fin;
    float *sT;
    int nslot;
};
int la__lf_dg_slots(const la__cu_call *c);
bool la__lf_bwd_use(const la__cu_call *c, int64_t nchunks);
la_status la__lf_backward(const la__cu_call *c, la_cu_arena *ar, const la_cu_table &tb,
                          const la_lf_dg *dg);

#endif
