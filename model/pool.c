/* pool.c - a fixed-size pthread pool with a blocking parallel-for. Workers
 * sleep on a condition variable between jobs and take indices from a shared
 * atomic counter during one. It does not queue jobs: concurrent pool_for
 * callers take turns (job_lock), and it has no futures or cancellation.
 */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct pool_worker {
  pool *p;
  int id;
} pool_worker;

struct pool {
  int n;                 /* threads including the caller */
  pthread_t *threads;    /* (n - 1) */
  pool_worker *workers;  /* (n - 1) */
  int started;           /* threads actually created */
  pthread_mutex_t job_lock; /* one job at a time */
  pthread_mutex_t mu;
  pthread_cond_t cv_start, cv_done;
  uint64_t gen;          /* bumped for every job (under mu) */
  int stop;
  int active;            /* workers still inside the current job (under mu) */
  pool_fn fn;
  void *arg;
  int total;
  atomic_int next;
};

static void pool_run(pool *p, int worker) {
  for (;;) {
    int i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
    if (i >= p->total) break;
    p->fn(p->arg, i, worker);
  }
}

static void *pool_main(void *v) {
  pool_worker *w = v;
  pool *p = w->p;
  uint64_t seen = 0;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->stop && p->gen == seen) pthread_cond_wait(&p->cv_start, &p->mu);
    if (p->stop) break;
    seen = p->gen;
    pthread_mutex_unlock(&p->mu);
    pool_run(p, w->id);
    pthread_mutex_lock(&p->mu);
    if (--p->active == 0) pthread_cond_signal(&p->cv_done);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

proto_status pool_new(int nthreads, pool **out) {
  proto_status st = PROTO_ENOMEM;
  *out = NULL;
  if (nthreads <= 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = c > 0 ? (int)c : 1;
  }
  if (nthreads > 256) nthreads = 256;
  pool *p = calloc(1, sizeof *p);
  if (!p) return PROTO_ENOMEM;
  p->n = nthreads;
  pthread_mutex_init(&p->job_lock, NULL);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv_start, NULL);
  pthread_cond_init(&p->cv_done, NULL);
  atomic_init(&p->next, 0);
  if (nthreads > 1) {
    p->threads = calloc((size_t)nthreads - 1, sizeof *p->threads);
    p->workers = calloc((size_t)nthreads - 1, sizeof *p->workers);
    if (!p->threads || !p->workers) goto fail;
    for (int i = 0; i < nthreads - 1; i++) {
      p->workers[i].p = p;
      p->workers[i].id = i + 1;
      if (pthread_create(&p->threads[i], NULL, pool_main, &p->workers[i]) != 0) {
        st = PROTO_EINTERNAL;
        goto fail;
      }
      p->started++;
    }
  }
  *out = p;
  return PROTO_OK;
fail:
  pool_free(p);
  return st;
}

void pool_free(pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->cv_start);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->started; i++) pthread_join(p->threads[i], NULL);
  pthread_cond_destroy(&p->cv_start);
  pthread_cond_destroy(&p->cv_done);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->job_lock);
  free(p->threads);
  free(p->workers);
  free(p);
}

int pool_size(const pool *p) { return p ? p->n : 1; }

void pool_for(pool *p, int n, pool_fn fn, void *arg) {
  if (n <= 0) return;
  if (!p) {
    for (int i = 0; i < n; i++) fn(arg, i, 0);
    return;
  }
  pthread_mutex_lock(&p->job_lock);
  if (p->started == 0 || n == 1) { /* inline, still one job at a time */
    for (int i = 0; i < n; i++) fn(arg, i, 0);
    pthread_mutex_unlock(&p->job_lock);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->fn = fn;
  p->arg = arg;
  p->total = n;
  atomic_store_explicit(&p->next, 0, memory_order_relaxed);
  p->active = p->started;
  p->gen++;
  pthread_cond_broadcast(&p->cv_start);
  pthread_mutex_unlock(&p->mu);
  pool_run(p, 0);
  pthread_mutex_lock(&p->mu);
  while (p->active > 0) pthread_cond_wait(&p->cv_done, &p->mu);
  pthread_mutex_unlock(&p->mu);
  pthread_mutex_unlock(&p->job_lock);
}
