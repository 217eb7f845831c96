/* float_heap.h - a min-heap of the k largest floats seen (private to index/):
 * the bar a scan's rows must reach, as the k-th best lower bound so far. */
#ifndef RETRO_FLOAT_HEAP_H
#define RETRO_FLOAT_HEAP_H

#include <stddef.h>

/* Offers x to the heap h of *n <= k floats (h[0]: the smallest kept). */
static inline void float_heap_offer(float *h, size_t *n, size_t k, float x) {
  size_t i;
  if (*n < k) {
    for (i = (*n)++; i > 0 && h[(i - 1) / 2] > x; i = (i - 1) / 2) h[i] = h[(i - 1) / 2];
    h[i] = x;
    return;
  }
  if (!(x > h[0])) return;
  for (i = 0;;) {
    size_t c = 2 * i + 1;
    if (c >= k) break;
    if (c + 1 < k && h[c + 1] < h[c]) c++;
    if (h[c] >= x) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}

#endif
