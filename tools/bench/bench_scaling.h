/* `linattn bench --scaling`: thread scaling of the chunk forms. */
#ifndef LINATTN_BENCH_SCALING_H
#define LINATTN_BENCH_SCALING_H

#include <stdint.h>

typedef struct bench_scaling_cfg {
    const int *ops; /* registry ids; only chunk forms are measured */
    int nops;
    const int64_t *Ts, *Ds, *bhs;
    int nT, nD, nbh;
    int max_threads; /* 1..max_threads */
    int fwd_only, repeats;
    int64_t chunk;
    double max_gb;    /* skip a shape whose buffers exceed this */
    double peak;      /* FMA peak of one thread, GFLOP/s, measured by the caller */
    const char *json; /* NULL: no JSON */
    const char *cpu, *date, *isa;
} bench_scaling_cfg;

/* Prints the table (and writes the JSON); returns the exit code. */
int bench_scaling(const bench_scaling_cfg *c);

#endif
