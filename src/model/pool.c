/* Thread pool (see pool.h): workers wait on a condition variable for a job
 * generation, then take task indices from an atomic counter. */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct lm_pool {
    int n;
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t gen;
    int stop, busy;
    lm_task_fn fn;
    void *arg;
    int64_t n_tasks;
    atomic_llong next;
};

static void drain(lm_pool *p) {
    for (;;) {
        const int64_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n_tasks) break;
        p->fn(p->arg, i);
    }
}

static void *worker(void *arg) {
    lm_pool *p = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->stop) pthread_cond_wait(&p->go, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        pthread_mutex_unlock(&p->mu);
        drain(p);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

lm_pool *lm_pool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    lm_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->next, 0);
    if (n_threads > 1) {
        p->th = calloc((size_t)(n_threads - 1), sizeof *p->th);
        if (!p->th) {
            free(p);
            return NULL;
        }
        for (int i = 0; i < n_threads - 1; i++)
            if (pthread_create(&p->th[i], NULL, worker, p) != 0) {
                p->n = i + 1; /* run with the threads that started */
                break;
            }
    }
    return p;
}

void lm_pool_destroy(lm_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n - 1; i++) pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    free(p->th);
    free(p);
}

int lm_pool_threads(const lm_pool *p) { return p ? p->n : 1; }

void lm_pool_run(lm_pool *p, int64_t n_tasks, lm_task_fn fn, void *arg) {
    if (!p || p->n == 1 || n_tasks <= 1) {
        for (int64_t i = 0; i < n_tasks; i++) fn(arg, i);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    p->busy = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    drain(p);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
