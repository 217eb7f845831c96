/* knn_util.h - for the index tests and benchmark: a seeded xorshift source
 * of uniform and gaussian numbers (reseed by setting rng_state), and the
 * recall of search results against the exact ones. */
#ifndef RETRO_TEST_KNN_UTIL_H
#define RETRO_TEST_KNN_UTIL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

static uint64_t rng_state = 88172645463325252ULL;

/* Uniform in [0, 1). */
static inline double rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* Standard normal (Box-Muller). */
static inline float gauss(void) {
  double u = rnd() + 1e-12, v = rnd();
  return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* The share of the k true neighbours of each of nq queries (rows of k ids
 * in truth) that got holds; -1 in got is no result. */
static inline double recall_at(const int64_t *got, const int64_t *truth, size_t nq, int k) {
  size_t hit = 0;
  for (size_t q = 0; q < nq; q++)
    for (int i = 0; i < k; i++)
      for (int j = 0; j < k; j++)
        if (got[q * k + i] >= 0 && got[q * k + i] == truth[q * k + j]) {
          hit++;
          break;
        }
  return (double)hit / (double)(nq * (size_t)k);
}

#endif
