/* `linattn bench --scaling`: every chunk form at 1..N threads and B*H in a
 * list (default 1, 8, 16), in one process. The thread counts alternate
 * inside every repetition, so all of them see the same load of a shared
 * machine. Per configuration: median wall time, the wall speed-up over one
 * thread, the CPU-time critical path (the caller's thread CPU time plus,
 * for each threaded region, the busiest thread's excess over the caller:
 * la__ctx_stats) and its speed-up, i.e. the speed-up the schedule allows
 * on an idle machine, tasks per thread (tasks handed out per call / N),
 * and the FLOP rate as % of the one-thread FMA peak times N. */
#define _GNU_SOURCE
#include "bench_scaling.h"
#include "bench_core.h"
#include "core/internal.h"
#include "ops/registry.h"
#include "strbuf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_REP 64

typedef struct sample {
    double wall, cpu, crit; /* seconds per call: wall, process CPU, critical path */
    int64_t tasks, regions;
} sample;

static double thread_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int timed_call(la_ctx *ctx, int op, const bench_bufs *b, int fb, sample *s) {
    la__ctx_stats_reset(ctx);
    const double w0 = bench_wall(), c0 = bench_cpu(), t0 = thread_cpu();
    la_status st = bench_op_run(ctx, op, b, fb);
    const double t1 = thread_cpu(), c1 = bench_cpu(), w1 = bench_wall();
    la__ctx_stats cs;
    la__ctx_stats_get(ctx, &cs);
    s->wall = w1 - w0;
    s->cpu = c1 - c0;
    s->crit = t1 - t0 + cs.crit_extra_s;
    s->tasks = cs.tasks;
    s->regions = cs.regions;
    return st != LA_OK;
}

static double med(const sample *s, int n, size_t off) {
    double x[MAX_REP];
    for (int i = 0; i < n; i++) x[i] = *(const double *)((const char *)&s[i] + off);
    return bench_median(x, n);
}

int bench_scaling(const bench_scaling_cfg *c) {
    const int N = c->max_threads, reps = c->repeats < MAX_REP ? c->repeats : MAX_REP;
    la_ctx **ctx = calloc((size_t)N + 1, sizeof *ctx);
    sample *S = calloc((size_t)(N + 1) * MAX_REP, sizeof *S);
    strbuf js = {0};
    int rc = 0, first = 1;
    if (!ctx || !S) {
        fprintf(stderr, "linattn bench: out of memory\n");
        free(ctx);
        free(S);
        return 1;
    }
    for (int t = 1; t <= N; t++)
        if (la_ctx_create(&ctx[t], t)) {
            fprintf(stderr, "linattn bench: %s\n", la_last_error());
            rc = 1;
            goto done;
        }
    printf("Thread scaling of the chunk forms (threads 1..%d alternate in every repetition;\n"
           "median of %d). speed-up = wall(1) / wall(N); crit = CPU-time critical path\n"
           "(caller thread CPU + per region the busiest thread's excess), its speed-up\n"
           "is what the schedule allows on an idle machine; tasks/thr = tasks per call / N;\n"
           "%% peak = GFLOP/s / (N x one-thread FMA peak), by wall and by crit.\n\n",
           N, reps);
    printf("%-24s %4s %4s %7s %-7s %3s %10s %7s %10s %7s %8s %7s %7s\n", "op", "B*H", "D", "T",
           "pass", "thr", "wall ms", "speedup", "crit ms", "crit x", "tasks/thr", "%pk",
           "%pk crit");
    for (int oi = 0; oi < c->nops; oi++) {
        const int op = c->ops[oi];
        const la__op_entry *e = la__op_get(op);
        if (!e || e->form != LA_FORM_CHUNK) continue;
        for (int di = 0; di < c->nD; di++)
            for (int ti = 0; ti < c->nT; ti++)
                for (int bi = 0; bi < c->nbh; bi++)
                    for (int fb = 0; fb < (c->fwd_only ? 1 : 2); fb++) {
                        const int64_t D = c->Ds[di], T = c->Ts[ti], BH = c->bhs[bi];
                        const char *pass = fb ? "fwd+bwd" : "fwd";
                        if (bench_bufs_bytes(op, T, BH, D, D, fb) / 1e9 > c->max_gb) {
                            printf("%-24s %4lld %4lld %7lld %-7s     skipped (inputs > --max-gb)\n",
                                   e->name, (long long)BH, (long long)D, (long long)T, pass);
                            continue;
                        }
                        bench_bufs b;
                        if (bench_bufs_alloc(&b, op, T, BH, D, D, fb, 1)) {
                            printf("%-24s %4lld %4lld %7lld %-7s     skipped (out of memory)\n",
                                   e->name, (long long)BH, (long long)D, (long long)T, pass);
                            continue;
                        }
                        b.chunk = c->chunk;
                        const double flops = bench_op_flops(op, T, D, D, BH, c->chunk, fb);
                        int bad = 0;
                        sample warm;
                        for (int t = 1; t <= N && !bad; t++)
                            bad = timed_call(ctx[t], op, &b, fb, &warm);
                        for (int r = 0; r < reps && !bad; r++)
                            for (int t = 1; t <= N && !bad; t++)
                                bad = timed_call(ctx[t], op, &b, fb, &S[t * MAX_REP + r]);
                        bench_bufs_free(&b);
                        if (bad) {
                            printf("%-24s failed: %s\n", e->name, la_last_error());
                            rc = 1;
                            continue;
                        }
                        const double w1 = med(&S[MAX_REP], reps, offsetof(sample, wall));
                        const double k1 = med(&S[MAX_REP], reps, offsetof(sample, crit));
                        for (int t = 1; t <= N; t++) {
                            const sample *s = &S[t * MAX_REP];
                            const double w = med(s, reps, offsetof(sample, wall));
                            const double cp = med(s, reps, offsetof(sample, cpu));
                            const double k = med(s, reps, offsetof(sample, crit));
                            const double tpt = (double)s[0].tasks / t;
                            const double pw = 100 * flops / w * 1e-9 / (c->peak * t);
                            const double pk = 100 * flops / k * 1e-9 / (c->peak * t);
                            printf("%-24s %4lld %4lld %7lld %-7s %3d %10.3f %6.2fx %10.3f %6.2fx "
                                   "%8.1f %6.1f%% %6.1f%%\n",
                                   e->name, (long long)BH, (long long)D, (long long)T, pass, t,
                                   w * 1e3, w1 / w, k * 1e3, k1 / k, tpt, pw, pk);
                            sb_addf(&js,
                                    "%s    {\"op\": \"%s\", \"bh\": %lld, \"D\": %lld, \"T\": "
                                    "%lld, \"backward\": %s, \"threads\": %d, \"flops\": %.6g, "
                                    "\"wall_s\": %.6g, \"cpu_s\": %.6g, \"crit_s\": %.6g, "
                                    "\"speedup_wall\": %.4f, \"speedup_crit\": %.4f, "
                                    "\"tasks\": %lld, \"regions\": %lld, \"tasks_per_thread\": "
                                    "%.2f, \"pct_peak_wall\": %.3f, \"pct_peak_crit\": %.3f}",
                                    first ? "" : ",\n", e->name, (long long)BH, (long long)D,
                                    (long long)T, fb ? "true" : "false", t, flops, w, cp, k, w1 / w,
                                    k1 / k, (long long)s[0].tasks, (long long)s[0].regions, tpt, pw,
                                    pk);
                            first = 0;
                        }
                        fflush(stdout);
                    }
    }
    if (c->json) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", c->json);
        FILE *f = fopen(tmp, "w");
        int ok = f != NULL;
        if (f) {
            ok &= fprintf(f,
                          "{\n  \"machine\": \"%s\",\n  \"date\": \"%s\",\n  \"fma_isa\": \"%s\",\n"
                          "  \"fma_peak_gflops\": %.3f,\n  \"chunk\": %lld,\n  \"repeats\": %d,\n"
                          "  \"scaling\": [\n%s\n  ]\n}\n",
                          c->cpu, c->date, c->isa, c->peak, (long long)c->chunk, reps,
                          js.s ? js.s : "") > 0;
            ok &= fclose(f) == 0;
        }
        if (!ok || rename(tmp, c->json)) {
            fprintf(stderr, "linattn bench: cannot write %s\n", c->json);
            remove(tmp);
            rc = 1;
        } else
            printf("wrote %s\n", c->json);
    }
done:
    for (int t = 1; t <= N; t++) la_ctx_destroy(ctx[t]);
    free(ctx);
    free(S);
    sb_free(&js);
    return rc;
}
