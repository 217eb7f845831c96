/* pool.h - a small fixed-size pthread pool with a blocking parallel-for
 * (private to model/). The calling thread takes part as worker 0, so a pool
 * of n threads starts n - 1 pthreads; a pool of 1 runs everything inline.
 *
 * Thread-safety: pool_for may be called from several threads at once; jobs
 * run one after another, and each thread has a fixed worker index, so the
 * index identifies per-worker scratch uniquely during a job. Workers that
 * are not running when a job starts simply leave its items to the others.
 * Do not call pool_for from inside a job on the same pool (it would
 * deadlock).
 */
#ifndef RETRO_POOL_H
#define RETRO_POOL_H

#include "proto.h"

typedef struct pool pool;

/* fn runs for each i in [begin, end) of a job, on worker `worker`
 * (0 <= worker < pool_size). */
typedef void (*pool_fn)(void *arg, int i, int worker);

/* nthreads <= 0: number of online CPUs. */
proto_status pool_new(int nthreads, pool **out);
void pool_free(pool *p); /* accepts NULL; joins the workers */
int pool_size(const pool *p);
/* Calls fn(arg, i, worker) for every i in [0, n), spread over the workers
 * (dynamic: each worker grabs the next index), and returns when all are done.
 * p may be NULL (runs inline as worker 0). */
void pool_for(pool *p, int n, pool_fn fn, void *arg);

#endif
