/* Kernel linear attention and simple GLA on the GPU: what the fp32 launchers
 * (scalar_gate.cu) and the tensor-core kernels for 16-bit inputs
 * (scalar_gate_tc.cu) share. */
#ifndef LINATTN_CUDA_SCALAR_GATE_CUH
#define LINATTN_CUDA_SCALAR_GATE_CUH

#include "chunk_state.cuh"

/* One (chunk, head) kernel's view of a call; dgl / ctot: the backward's
 * per-token float64 gate-gradient sums and per-chunk totals; cgam: the
 * per-(chunk, head) dg_gamma terms (fp32 kernel only). */
struct la_cu_intra_args {
    const la_cu_chunk *chunks;
    const void *q, *k, *v, *d_o;
    void *o, *dq, *dk, *dv;
    const float *g, *g_gamma;
    const float *hbuf, *dhbuf;
    double *dgl, *ctot, *cgam;
    int64_t H, K, V;
    float scale;
    int fm;
};

/* Tensor-core launchers for dtype bf16 / fp16 (scalar_gate_tc.cu). */
la_status la__tc_state_pass(const char *op, cudaStream_t stream, la_dtype dt, int rev, int64_t N,
                            const la_cu_sp_args &a);
la_status la__tc_intra_fwd(const char *op, cudaStream_t stream, la_dtype dt, int64_t nchunks,
                           const la_cu_intra_args &p);
la_status la__tc_intra_bwd(const char *op, cudaStream_t stream, la_dtype dt, int64_t nchunks,
                           int dg, const la_cu_intra_args &p);

/* out[i] = <a_i, b_i> over KV floats for i < NH (float64, fixed order;
 * scalar_gate.cu). */
la_status la__cu_state_dot(const char *op, cudaStream_t stream, const float *a, const float *b,
                           double *out, int64_t NH, int64_t KV);

#endif
