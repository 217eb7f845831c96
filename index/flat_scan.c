/* flat_scan.c - exact k-nearest search for a few queries (see flat_scan.h).
 *
 * Rows are scored in blocks of SCAN_ROWS, every query over a block while it
 * is in cache; each query keeps a min-heap of its best k scores. L2 distances are negated so one "larger is better" heap
 * serves both metrics. Sums use 8-lane vectors, four rows at a time, so they
 * vectorise without -ffast-math; the AVX2+FMA clone is picked at run time.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "fp-contract=fast")
#endif

#include "flat_scan.h"

#include <float.h>
#include <stdlib.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define SCAN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SCAN_CLONES
#endif

enum { SCAN_ROWS = 64 };

typedef float v8 __attribute__((vector_size(32), aligned(4), may_alias));

static inline float hsum8(const v8 *p) { /* by pointer: no vector in the ABI */
  const float *v = (const float *)p;
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* One 8-lane term of x . q or ||x - q||^2: columns j..j+7 of row xr. */
#define SCAN_TERM(xr, j) (l2 ? (*(const v8 *)((xr) + (j)) - *(const v8 *)(q + (j))) * \
                                   (*(const v8 *)((xr) + (j)) - *(const v8 *)(q + (j)))   \
                             : *(const v8 *)((xr) + (j)) * *(const v8 *)(q + (j)))

/* out[r] = score of row r of x (rows, d) against query q; higher is better
 * (inner product, or minus the squared L2 distance). Four rows at a time, so
 * their dependency chains overlap; columns past the last multiple of 8 are
 * added one by one. */
SCAN_CLONES static void score_rows(const float *x, size_t rows, size_t d, const float *q,
                                   int l2, float *out) {
  size_t d8 = d & ~(size_t)7, r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float *x0 = x + r * d, *x1 = x0 + d, *x2 = x1 + d, *x3 = x2 + d;
    v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (size_t j = 0; j < d8; j += 8) {
      a0 += SCAN_TERM(x0, j);
      a1 += SCAN_TERM(x1, j);
      a2 += SCAN_TERM(x2, j);
      a3 += SCAN_TERM(x3, j);
    }
    float s[4] = {hsum8(&a0), hsum8(&a1), hsum8(&a2), hsum8(&a3)};
    const float *xs[4] = {x0, x1, x2, x3};
    for (int i = 0; i < 4; i++) {
      for (size_t j = d8; j < d; j++)
        s[i] += l2 ? (xs[i][j] - q[j]) * (xs[i][j] - q[j]) : xs[i][j] * q[j];
      out[r + (size_t)i] = l2 ? -s[i] : s[i];
    }
  }
  for (; r < rows; r++) {
    const float *xr = x + r * d;
    v8 a = {0};
    for (size_t j = 0; j < d8; j += 8) a += SCAN_TERM(xr, j);
    float s = hsum8(&a);
    for (size_t j = d8; j < d; j++) s += l2 ? (xr[j] - q[j]) * (xr[j] - q[j]) : xr[j] * q[j];
    out[r] = l2 ? -s : s;
  }
}

typedef struct {
  float score;
  int64_t label;
} scan_hit;

/* Min-heap on score (root = the worst kept hit): replaces the root. */
static void heap_replace_root(scan_hit *h, size_t n, scan_hit x) {
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && h[c + 1].score < h[c].score) c++;
    if (h[c].score >= x.score) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}

static void heap_push(scan_hit *h, size_t n, scan_hit x) { /* n: size before the push */
  size_t i = n;
  while (i > 0 && h[(i - 1) / 2].score > x.score) {
    h[i] = h[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h[i] = x;
}

static int by_score_desc(const void *a, const void *b) {
  const scan_hit *x = a, *y = b;
  if (x->score != y->score) return x->score < y->score ? 1 : -1;
  return (x->label > y->label) - (x->label < y->label);
}

int flat_scan(const float *xb, const int64_t *ids, size_t n, size_t d, const float *q,
              size_t nq, int l2, size_t k, float *dist, int64_t *lab) {
  enum { STACK_HITS = 1024 };
  float scores[SCAN_ROWS];
  scan_hit stack_hits[STACK_HITS];
  size_t kept[FLAT_SCAN_MAX_QUERIES] = {0};
  if (nq > FLAT_SCAN_MAX_QUERIES) return -1;
  scan_hit *heaps = nq * k <= STACK_HITS ? stack_hits : malloc(nq * k * sizeof *heaps);
  if (!heaps) return -1;
  /* block by block, every query over the block while it is in cache */
  for (size_t r0 = 0; r0 < n; r0 += SCAN_ROWS) {
    size_t rows = n - r0 < SCAN_ROWS ? n - r0 : SCAN_ROWS;
    for (size_t i = 0; i < nq; i++) {
      scan_hit *heap = heaps + i * k;
      score_rows(xb + r0 * d, rows, d, q + i * d, l2, scores);
      for (size_t r = 0; r < rows; r++) {
        scan_hit h = {scores[r], ids ? ids[r0 + r] : (int64_t)(r0 + r)};
        if (kept[i] < k) heap_push(heap, kept[i]++, h);
        else if (h.score > heap[0].score) heap_replace_root(heap, k, h);
      }
    }
  }
  for (size_t i = 0; i < nq; i++) {
    scan_hit *heap = heaps + i * k;
    qsort(heap, kept[i], sizeof *heap, by_score_desc);
    for (size_t j = 0; j < k; j++) {
      dist[i * k + j] = j < kept[i] ? (l2 ? -heap[j].score : heap[j].score) : l2 ? FLT_MAX : -FLT_MAX;
      lab[i * k + j] = j < kept[i] ? heap[j].label : -1;
    }
  }
  if (heaps != stack_hits) free(heaps);
  return 0;
}
