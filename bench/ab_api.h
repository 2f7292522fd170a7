/* Types of the public entry points the A/B harnesses look up with dlsym
 * (two builds of the library in one process), taken from linattn.h's own
 * declarations so no harness writes a signature out again. */
#ifndef LA_BENCH_AB_API_H
#define LA_BENCH_AB_API_H

#include "linattn.h"

typedef __typeof__(&la_ctx_create) ctx_create_fn;
typedef __typeof__(&la_linear_attn_opts_default) lin_def_fn;
typedef __typeof__(&la_linear_attn_forward) lin_fwd_fn;
typedef __typeof__(&la_linear_attn_backward) lin_bwd_fn;
typedef __typeof__(&la_simple_gla_forward) sg_fwd_fn;
typedef __typeof__(&la_simple_gla_backward) sg_bwd_fn;
typedef __typeof__(&la_saved_create) saved_create_fn;

#endif
