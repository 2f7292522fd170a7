/* The context: a small persistent thread pool and per-thread scratch.
 *
 * la__parallel_for hands out task indices through an atomic counter; the
 * calling thread works too (tid 0). Which thread runs a task never changes
 * what the task computes, so results are identical for any thread count. */
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct la_ctx {
    int n_threads;
    pthread_t *workers;          /* n_threads - 1 of them */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t generation;         /* bumped for each parallel_for */
    int finished;                /* workers done with this generation */
    int shutdown;
    /* the job of the current generation */
    la__task_fn fn;
    void *arg;
    int64_t n_tasks;
    int n_active;                /* threads tid < n_active take tasks */
    atomic_int_fast64_t next;
    /* scratch */
    void **scratch;
    size_t scratch_bytes;
    /* statistics (la__ctx_stats): busy[tid] = thread CPU seconds in this region */
    double *busy;
    la__ctx_stats stats;
    /* CUDA contexts (la_ctx_create_cuda): ops run on this device and stream */
    int cuda;
    int device;
    void *stream;
    void *cuda_pipe; /* la__ctx_cuda_pipe */
    /* saved-for-backward objects bound to this context (saved.c) */
    pthread_mutex_t saved_mu;
    la_saved **saved;
    size_t n_saved, cap_saved;
};

typedef struct {
    la_ctx *ctx;
    int tid;
} worker_arg;

static double thread_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void run_tasks(la_ctx *ctx, int tid) {
    ctx->busy[tid] = 0;
    if (tid >= ctx->n_active) return;
    const double t0 = thread_cpu();
    for (;;) {
        int64_t t = atomic_fetch_add(&ctx->next, 1);
        if (t >= ctx->n_tasks) break;
        ctx->fn(ctx->arg, t, tid);
    }
    ctx->busy[tid] = thread_cpu() - t0;
}

static void *worker_main(void *p) {
    worker_arg wa = *(worker_arg *)p;
    free(p);
    la_ctx *ctx = wa.ctx;
    uint64_t seen = 0;
    pthread_mutex_lock(&ctx->mu);
    for (;;) {
        while (!ctx->shutdown && ctx->generation == seen) pthread_cond_wait(&ctx->wake, &ctx->mu);
        if (ctx->shutdown) break;
        seen = ctx->generation;
        pthread_mutex_unlock(&ctx->mu);
        run_tasks(ctx, wa.tid);
        pthread_mutex_lock(&ctx->mu);
        if (++ctx->finished == ctx->n_threads - 1) pthread_cond_signal(&ctx->done);
    }
    pthread_mutex_unlock(&ctx->mu);
    return NULL;
}

la_status la_ctx_create(la_ctx **out, int n_threads) {
    la_status st = la__check_ptr("la_ctx_create", "out", out);
    if (st) return st;
    if (n_threads < 0 || n_threads > 4096)
        return la__error(LA_ERR_INVALID_ARGUMENT,
                         "la_ctx_create: n_threads = %d (must be 0 for all CPUs, or 1..4096)",
                         n_threads);
    if (n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n < 1 ? 1 : n > 4096 ? 4096 : (int)n;
    }
    la_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return la__error(LA_ERR_OUT_OF_MEMORY, "la_ctx_create: out of memory");
    ctx->n_threads = n_threads;
    ctx->scratch = calloc((size_t)n_threads, sizeof *ctx->scratch);
    ctx->workers = calloc((size_t)n_threads, sizeof *ctx->workers);
    ctx->busy = calloc((size_t)n_threads, sizeof *ctx->busy);
    if (!ctx->scratch || !ctx->workers || !ctx->busy) {
        free(ctx->scratch);
        free(ctx->workers);
        free(ctx->busy);
        free(ctx);
        return la__error(LA_ERR_OUT_OF_MEMORY, "la_ctx_create: out of memory");
    }
    pthread_mutex_init(&ctx->mu, NULL);
    pthread_mutex_init(&ctx->saved_mu, NULL);
    pthread_cond_init(&ctx->wake, NULL);
    pthread_cond_init(&ctx->done, NULL);
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        int rc = -1;
        if (wa) {
            wa->ctx = ctx;
            wa->tid = i;
            rc = pthread_create(&ctx->workers[i - 1], NULL, worker_main, wa);
            if (rc) free(wa);
        }
        if (rc) {
            ctx->n_threads = i; /* the workers started so far are joined below */
            la_ctx_destroy(ctx);
            return la__error(LA_ERR_OUT_OF_MEMORY,
                             "la_ctx_create: could not start worker thread %d of %d", i,
                             n_threads);
        }
    }
    *out = ctx;
    return LA_OK;
}

void la_ctx_destroy(la_ctx *ctx) {
    if (!ctx) return;
    pthread_mutex_lock(&ctx->mu);
    ctx->shutdown = 1;
    pthread_cond_broadcast(&ctx->wake);
    pthread_mutex_unlock(&ctx->mu);
    for (int i = 1; i < ctx->n_threads; i++) pthread_join(ctx->workers[i - 1], NULL);
    for (int i = 0; i < ctx->n_threads; i++) free(ctx->scratch[i]);
    for (size_t i = 0; i < ctx->n_saved; i++) la__saved_orphan(ctx->saved[i]);
    if (ctx->cuda_pipe) la__cuda_pipe_free(ctx->cuda_pipe);
    free(ctx->saved);
    pthread_mutex_destroy(&ctx->saved_mu);
    pthread_mutex_destroy(&ctx->mu);
    pthread_cond_destroy(&ctx->wake);
    pthread_cond_destroy(&ctx->done);
    free(ctx->scratch);
    free(ctx->workers);
    free(ctx->busy);
    free(ctx);
}

int la_ctx_threads(const la_ctx *ctx) { return ctx ? ctx->n_threads : 0; }

la_status la_ctx_create_cuda(la_ctx **out, int device, void *stream) {
    static const char *const op = "la_ctx_create_cuda";
    la_status st = la__check_ptr(op, "out", out);
    if (st) return st;
    if ((st = la__cuda_init(op, device, stream))) return st;
    la_ctx *ctx = NULL;
    if ((st = la_ctx_create(&ctx, 1))) return st;
    ctx->cuda = 1;
    ctx->device = device;
    ctx->stream = stream;
    *out = ctx;
    return LA_OK;
}

int la_ctx_is_cuda(const la_ctx *ctx) { return ctx ? ctx->cuda : 0; }
int la__ctx_device(const la_ctx *ctx) { return ctx->device; }
void *la__ctx_stream(const la_ctx *ctx) { return ctx->stream; }
void **la__ctx_cuda_pipe(la_ctx *ctx) { return &ctx->cuda_pipe; }

/* Tasks on the first n_active threads (the others wake and go back to sleep). */
static void parallel_for_on(la_ctx *ctx, int n_active, int64_t n_tasks, la__task_fn fn,
                            void *arg) {
    if (n_tasks <= 0) return;
    ctx->stats.tasks += n_tasks;
    ctx->stats.regions++;
    if (n_active <= 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
    pthread_mutex_lock(&ctx->mu);
    ctx->fn = fn;
    ctx->arg = arg;
    ctx->n_tasks = n_tasks;
    ctx->n_active = n_active;
    atomic_store(&ctx->next, 0);
    ctx->finished = 0;
    ctx->generation++;
    pthread_cond_broadcast(&ctx->wake);
    pthread_mutex_unlock(&ctx->mu);
    run_tasks(ctx, 0);
    pthread_mutex_lock(&ctx->mu);
    while (ctx->finished < ctx->n_threads - 1) pthread_cond_wait(&ctx->done, &ctx->mu);
    pthread_mutex_unlock(&ctx->mu);
    double most = ctx->busy[0];
    for (int i = 1; i < n_active; i++) most = ctx->busy[i] > most ? ctx->busy[i] : most;
    ctx->stats.crit_extra_s += most - ctx->busy[0];
}

void la__ctx_stats_get(const la_ctx *ctx, la__ctx_stats *out) { *out = ctx->stats; }
void la__ctx_stats_reset(la_ctx *ctx) { memset(&ctx->stats, 0, sizeof ctx->stats); }

la_status la__scratch_reserve(la_ctx *ctx, size_t bytes) {
    if (bytes <= ctx->scratch_bytes) return LA_OK;
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded < bytes)
        return la__error(LA_ERR_OUT_OF_MEMORY, "scratch request of %zu bytes overflows", bytes);
    for (int i = 0; i < ctx->n_threads; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, rounded) != 0)
            return la__error(LA_ERR_OUT_OF_MEMORY,
                             "out of memory allocating %zu bytes of scratch per thread", rounded);
        free(ctx->scratch[i]);
        ctx->scratch[i] = p;
    }
    ctx->scratch_bytes = rounded;
    return LA_OK;
}

void la__parallel_for(la_ctx *ctx, int64_t n_tasks, la__task_fn fn, void *arg) {
    parallel_for_on(ctx, ctx->n_threads, n_tasks, fn, arg);
}

void la__parallel_for_sized(la_ctx *ctx, int64_t n_tasks, int64_t bytes_per_task,
                            la__task_fn fn, void *arg) {
    if (n_tasks <= 0) return;
    /* threads that get >= LA__PARALLEL_MIN_BYTES each (saturating: no overflow) */
    const int64_t per = bytes_per_task > 0 ? bytes_per_task : 1;
    const int64_t tasks_per_thread = (LA__PARALLEL_MIN_BYTES + per - 1) / per;
    int64_t n = n_tasks / tasks_per_thread;
    if (n > ctx->n_threads) n = ctx->n_threads;
    parallel_for_on(ctx, (int)(n < 1 ? 1 : n), n_tasks, fn, arg);
}

void *la__scratch(la_ctx *ctx, int tid) { return ctx->scratch[tid]; }

/* ---- saved-for-backward objects of the context (cpu-save6) ---------- */

la_status la__ctx_saved_add(la_ctx *ctx, la_saved *s) {
    la_status st = LA_OK;
    pthread_mutex_lock(&ctx->saved_mu);
    if (ctx->n_saved == ctx->cap_saved) {
        const size_t cap = ctx->cap_saved ? 2 * ctx->cap_saved : 8;
        la_saved **p = realloc(ctx->saved, cap * sizeof *p);
        if (!p) st = la__error(LA_ERR_OUT_OF_MEMORY, "la_saved_create: out of memory");
        else ctx->saved = p, ctx->cap_saved = cap;
    }
    if (!st) ctx->saved[ctx->n_saved++] = s;
    pthread_mutex_unlock(&ctx->saved_mu);
    return st;
}

void la__ctx_saved_remove(la_ctx *ctx, la_saved *s) {
    pthread_mutex_lock(&ctx->saved_mu);
    for (size_t i = 0; i < ctx->n_saved; i++)
        if (ctx->saved[i] == s) {
            ctx->saved[i] = ctx->saved[--ctx->n_saved];
            break;
        }
    pthread_mutex_unlock(&ctx->saved_mu);
}
