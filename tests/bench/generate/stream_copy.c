/* stream_copy.c - the machine's memory bandwidth, measured the way STREAM's
 * "Copy" kernel does (a[i] = b[i] over arrays far larger than the last-level
 * cache; bytes counted = read + written), plus a read-only pass (a sum, the
 * access pattern of streaming weights through a matrix-vector product).
 * THREADS threads each own a slice, first-touched by the same thread. The
 * best of REPS passes is reported, as STREAM does. For the generate bench:
 * single-token decode is bounded by reading the weights once per token.
 *
 *   stream_copy THREADS ARRAY_MIB REPS
 * Prints one JSON object: threads, array_mib, copy_gb_s, read_gb_s (10^9 B/s), checksum.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BLOCK = 64 }; /* floats per inner block */
typedef float v4 __attribute__((vector_size(16)));

typedef struct {
  float *a, *b;
  size_t lo, hi;
  int op; /* 0: first touch, 1: copy, 2: read */
  double sum;
} slice;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *work(void *arg) {
  slice *s = arg;
  if (s->op == 0) {
    for (size_t i = s->lo; i < s->hi; i++) {
      s->a[i] = 0.0f;
      s->b[i] = (float)(i & 1023);
    }
  } else if (s->op == 1) {
    /* 16-byte moves written out: -O2 leaves a plain float loop scalar */
    for (size_t i = s->lo; i < s->hi; i += BLOCK)
      for (size_t j = 0; j < BLOCK; j += 4) {
        v4 v;
        memcpy(&v, &s->b[i + j], sizeof v);
        memcpy(&s->a[i + j], &v, sizeof v);
      }
  } else {
    float acc[BLOCK] = {0};
    for (size_t i = s->lo; i < s->hi; i += BLOCK)
      for (size_t j = 0; j < BLOCK; j++) acc[j] += s->b[i + j];
    for (size_t j = 0; j < BLOCK; j++) s->sum += acc[j];
  }
  return NULL;
}

/* One pass of op over the arrays on nt threads; returns its wall time. */
static double pass(slice *sl, pthread_t *th, int nt, int op) {
  double t0 = now();
  for (int t = 0; t < nt; t++) {
    sl[t].op = op;
    if (pthread_create(&th[t], NULL, work, &sl[t]) != 0) {
      fprintf(stderr, "stream_copy: pthread_create failed\n");
      exit(1);
    }
  }
  for (int t = 0; t < nt; t++) pthread_join(th[t], NULL);
  return now() - t0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: stream_copy THREADS ARRAY_MIB REPS\n");
    return 2;
  }
  int nt = atoi(argv[1]), mib = atoi(argv[2]), reps = atoi(argv[3]);
  if (nt < 1 || nt > 256 || mib < 1 || reps < 1) {
    fprintf(stderr, "stream_copy: THREADS 1..256, ARRAY_MIB >= 1, REPS >= 1\n");
    return 2;
  }
  size_t n = (size_t)mib * 1024 * 1024 / sizeof(float) / BLOCK / (size_t)nt * BLOCK * (size_t)nt;
  float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
  slice *sl = calloc((size_t)nt, sizeof *sl);
  pthread_t *th = calloc((size_t)nt, sizeof *th);
  if (!a || !b || !sl || !th) {
    fprintf(stderr, "stream_copy: out of memory\n");
    return 1;
  }
  for (int t = 0; t < nt; t++)
    sl[t] = (slice){
        .a = a, .b = b, .lo = n / (size_t)nt * (size_t)t, .hi = n / (size_t)nt * (size_t)(t + 1)};
  pass(sl, th, nt, 0);
  /* checksum: printed, so that the passes cannot be optimised away */
  double best_copy = 1e30, best_read = 1e30, checksum = 0.0;
  for (int r = 0; r < reps; r++) {
    double tc = pass(sl, th, nt, 1), tr = pass(sl, th, nt, 2);
    if (tc < best_copy) best_copy = tc;
    if (tr < best_read) best_read = tr;
  }
  for (int t = 0; t < nt; t++) checksum += sl[t].sum + (double)a[sl[t].lo];
  double bytes = (double)n * sizeof(float);
  printf(
      "{\"threads\": %d, \"array_mib\": %.1f, \"copy_gb_s\": %.2f, \"read_gb_s\": %.2f, \"checksum\": %.0f}\n",
      nt, bytes / 1048576.0, 2.0 * bytes / best_copy / 1e9, bytes / best_read / 1e9, checksum);
  free(a);
  free(b);
  free(sl);
  free(th);
  return 0;
}
