/* Benchmark core shared by `linattn bench` and the labs: clocks, the FP32
 * FMA-peak loop, a memcpy reference, per-op runners with their FLOP counts,
 * and a fork-per-configuration runner that measures time and peak extra
 * memory in a fresh process. */
#ifndef LINATTN_BENCH_CORE_H
#define LINATTN_BENCH_CORE_H

#include "linattn.h"

#include <stddef.h>
#include <stdint.h>

/* ---- clocks ------------------------------------------------------------ */
double bench_wall(void); /* CLOCK_MONOTONIC, seconds */
double bench_cpu(void);  /* CLOCK_PROCESS_CPUTIME_ID: CPU time of every thread, seconds */
double bench_median(double *x, int n); /* sorts x */

/* ---- machine references ------------------------------------------------- */
/* Single-thread FP32 FMA peak in GFLOP/s (an FMA counts 2 FLOPs), measured by a
 * loop of independent FMA chains for about `seconds`; *isa names the variant
 * ("avx512f", "avx2+fma" or "portable": the widest the CPU has, up to the
 * library's active path la_isa_active(), so LINATTN_ISA=avx2 measures
 * against the AVX2 peak). Best of a few runs. */
double bench_fma_peak(double seconds, const char **isa);
/* The same for an explicit path (capped by the CPU). */
double bench_fma_peak_for(double seconds, la_isa want, const char **isa);
/* Median seconds of memcpy of `bytes` (source and destination warm). */
double bench_memcpy_time(size_t bytes, int repeats);
/* Model name from /proc/cpuinfo ("unknown" if unreadable). */
void bench_cpu_model(char *buf, size_t n);

/* ---- ops ---------------------------------------------------------------- */
/* An op is a registry id (src/ops/registry.h): every entry of the registry
 * is benchmarked by the same code. */
typedef int bench_op;

const char *bench_op_name(bench_op op); /* the registry name, "linear_attn-chunk" */
int bench_op_from_name(const char *name); /* -1 if unknown */
int bench_op_is_softmax(bench_op op);
int bench_op_is_quadratic(bench_op op); /* O(T^2) per head */
int bench_op_count(void);
/* In the default sweep: every causal op (the non-causal kernel trick is on request). */
int bench_op_in_default_sweep(bench_op op);
/* Takes a saved-for-backward object (la_saved) in its forward and backward:
 * the chunk forms of causal linear attention, simple GLA, GLA, the delta
 * rules and KDA (include/linattn.h, "Saved for backward"). */
int bench_op_saves(bench_op op);

/* FLOPs of one call for B*H heads (K = V = D kept general), multiply-add = 2.
 * backward: forward + backward (see the table in bench_core.c / OPS.md). */
double bench_op_flops(bench_op op, int64_t T, int64_t K, int64_t V, int64_t BH, int64_t C,
                      int backward);

/* Inputs and outputs of one configuration (all [B,T,H,*], B = 1, H = BH):
 * the registry's uniform arguments over buffers owned here. */
typedef struct bench_bufs {
    la_dims dims;
    int64_t chunk;
    float *q, *k, *v, *o, *g, *beta;
    float *dq, *dk, *dv, *d_o, *dg, *dbeta;
    float *rf_W; /* random features: W [m = K, K] (M = K features, FAVOR+) */
    la_saved *saved; /* NULL (bench_bufs_alloc): the backward recomputes; not owned */
} bench_bufs;

/* Allocates and fills (deterministic, from seed) every buffer op needs;
 * backward buffers only when backward. 0 on success. */
int bench_bufs_alloc(bench_bufs *b, bench_op op, int64_t T, int64_t H, int64_t K, int64_t V,
                     int backward, uint64_t seed);
void bench_bufs_free(bench_bufs *b);
/* Bytes bench_bufs_alloc would take. */
double bench_bufs_bytes(bench_op op, int64_t T, int64_t H, int64_t K, int64_t V, int backward);

/* One call of the op (forward, or forward then backward; both given
 * b->saved when the op takes it). */
la_status bench_op_run(la_ctx *ctx, bench_op op, const bench_bufs *b, int backward);

/* Fills n floats uniformly in [-a, a] (fast, deterministic). */
void bench_fill(float *x, size_t n, uint64_t seed, float a);

/* ---- one configuration in a fresh process ------------------------------- */
typedef struct bench_cfg {
    bench_op op;
    int64_t T, H, K, V, chunk;
    int backward, threads, repeats;
    double min_time; /* repeat until at least this many seconds are spent (after repeats) */
    uint64_t seed;
    int saved; /* forward+backward with an la_saved (bench_op_saves ops): the
                  forward fills it, the backward reads it; a forward that
                  leaves it empty is reported as a failure */
} bench_cfg;

typedef struct bench_result {
    int ok;            /* 1: measured */
    double wall;       /* median wall seconds per call */
    double cpu;        /* median process CPU seconds per call (all threads) */
    double mem_extra;  /* peak RSS growth of the first call, bytes (-1: unknown) */
    int runs;
    char err[160];
} bench_result;

/* Forks a child that allocates the inputs and creates the context, resets its
 * RSS high-water mark (/proc/self/clear_refs 5; ru_maxrss growth as a
 * fallback, which can under-count), runs the op once
 * (warm-up; its peak RSS growth is mem_extra), then `repeats` timed calls.
 * Returns 0 and fills r (r->ok = 0 with r->err when the op failed). */
int bench_run_isolated(const bench_cfg *c, bench_result *r);

#endif
