/* best_k.h - the k best (score, id) pairs seen so far, in descending score
 * order: a lexical search over several rowid ranges (lex.c) and the dense
 * list of a search within named documents (server/include_search.c) merge
 * their candidates with it. */
#ifndef RETRO_BEST_K_H
#define RETRO_BEST_K_H

#include <stddef.h>
#include <stdint.h>

/* Offers (s, id) to the *n <= k pairs kept in scores and ids. A score equal
 * to a kept one goes after it. */
static inline void best_k_offer(float *scores, int64_t *ids, size_t *n, size_t k, float s,
                                int64_t id) {
  if (*n == k && !(s > scores[k - 1])) return;
  size_t j = *n < k ? (*n)++ : k - 1;
  for (; j > 0 && s > scores[j - 1]; j--) {
    scores[j] = scores[j - 1];
    ids[j] = ids[j - 1];
  }
  scores[j] = s;
  ids[j] = id;
}

#endif
