/* pool.c - a fixed-size pthread pool with a blocking parallel-for.
 *
 * A job is published as one 64-bit atomic ticket (total << 32 | next index).
 * Every thread, the caller included, claims items with a compare-and-swap on
 * the ticket, so a claim is only ever made on the job that is current at that
 * instant; the caller returns when `done` reaches the total. Workers that are
 * slow to wake (a busy machine) therefore never hold a job up: the threads
 * that are running do the work. Between jobs workers spin briefly (the jobs
 * of one encoder call come back to back and a condition-variable wake costs
 * tens of microseconds), then sleep on a condition variable.
 *
 * It does not queue jobs: concurrent pool_for callers take turns (job_lock);
 * no futures, no cancellation.
 */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* Polls before sleeping: 50-200 us where measured first (Zen 5), 0.6 ms on
 * Zen 3, whose pause instruction takes longer. A 100 us bound by the clock
 * instead was tried there: a search by text cost 2-17% less server CPU at
 * one connection, but batches of 32 short texts ran 15-30% slower, their
 * workers asleep between jobs; not kept. */
enum { POOL_SPIN = 20000 };

static inline void pool_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

typedef struct pool_worker {
  pool *p;
  int id;
} pool_worker;

struct pool {
  int n;                    /* threads including the caller */
  pthread_t *threads;       /* (n - 1) */
  pool_worker *workers;     /* (n - 1) */
  int started;              /* threads actually created */
  pthread_mutex_t job_lock; /* one job at a time */
  pthread_mutex_t mu;       /* sleeping and waking */
  pthread_cond_t cv_start, cv_done;
  atomic_uint_fast64_t gen; /* bumped for every job, wakes the workers */
  atomic_int stop;
  atomic_uint_fast64_t ticket; /* (total << 32) | next unclaimed index */
  atomic_int done;             /* items of the current job finished */
  pool_fn fn;                  /* current job; stable while it has unfinished items */
  void *arg;
};

/* Claims and runs items of whatever job is current until none is left. */
static void pool_work(pool *p, int worker) {
  for (;;) {
    uint_fast64_t v = atomic_load_explicit(&p->ticket, memory_order_acquire);
    uint32_t total = (uint32_t)(v >> 32), idx = (uint32_t)v;
    if (idx >= total) return;
    if (!atomic_compare_exchange_weak_explicit(&p->ticket, &v, v + 1, memory_order_acq_rel,
                                               memory_order_acquire))
      continue;
    p->fn(p->arg, (int)idx, worker);
    if (atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel) + 1 == (int)total) {
      pthread_mutex_lock(&p->mu);
      pthread_cond_signal(&p->cv_done);
      pthread_mutex_unlock(&p->mu);
    }
  }
}

static void *pool_main(void *v) {
  pool_worker *w = v;
  pool *p = w->p;
  uint_fast64_t seen = 0;
  for (;;) {
    uint_fast64_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
    for (int spin = 0; g == seen && spin < POOL_SPIN; spin++) {
      if (atomic_load_explicit(&p->stop, memory_order_relaxed)) break;
      pool_relax();
      g = atomic_load_explicit(&p->gen, memory_order_acquire);
    }
    if (g == seen) {
      pthread_mutex_lock(&p->mu);
      while (!atomic_load(&p->stop) && (g = atomic_load(&p->gen)) == seen)
        pthread_cond_wait(&p->cv_start, &p->mu);
      pthread_mutex_unlock(&p->mu);
    }
    if (atomic_load(&p->stop)) break;
    seen = g;
    pool_work(p, w->id);
  }
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
  atomic_init(&p->gen, 0);
  atomic_init(&p->stop, 0);
  atomic_init(&p->ticket, 0);
  atomic_init(&p->done, 0);
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
  atomic_store(&p->stop, 1);
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
  p->fn = fn;
  p->arg = arg;
  atomic_store_explicit(&p->done, 0, memory_order_relaxed);
  atomic_store_explicit(&p->ticket, (uint_fast64_t)(uint32_t)n << 32, memory_order_release);
  pthread_mutex_lock(&p->mu);
  atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
  pthread_cond_broadcast(&p->cv_start);
  pthread_mutex_unlock(&p->mu);
  pool_work(p, 0);
  for (int spin = 0; spin < POOL_SPIN && atomic_load_explicit(&p->done, memory_order_acquire) < n;
       spin++)
    pool_relax();
  if (atomic_load_explicit(&p->done, memory_order_acquire) < n) {
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->done) < n) pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
  }
  pthread_mutex_unlock(&p->job_lock);
}
