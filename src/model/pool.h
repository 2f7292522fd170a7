/* A small fixed-size thread pool for the model's dense layers. Tasks write
 * disjoint outputs and each is computed the same way whichever thread runs
 * it, so results do not depend on the number of threads. */
#ifndef LINATTN_MODEL_POOL_H
#define LINATTN_MODEL_POOL_H

#include <stdint.h>

typedef struct lm_pool lm_pool;
typedef void (*lm_task_fn)(void *arg, int64_t task);

/* n_threads >= 1 (the caller counts as one). NULL on failure. */
lm_pool *lm_pool_create(int n_threads);
void lm_pool_destroy(lm_pool *p);
int lm_pool_threads(const lm_pool *p);
/* Runs fn(arg, i) for i in [0, n_tasks); returns when all are done. A NULL
 * pool runs them on the caller. */
void lm_pool_run(lm_pool *p, int64_t n_tasks, lm_task_fn fn, void *arg);

#endif
