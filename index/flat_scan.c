/* flat_scan.c - exact k-nearest search for a few queries (see flat_scan.h).
 *
 * Rows are scored in blocks of SCAN_ROWS, every query over a block while it
 * is in cache; each query keeps a min-heap of its best k scores, and rows
 * that do not beat the heap's worst are passed over eight at a time. L2
 * distances are negated so one "larger is better" heap serves both metrics.
 * Sums use 8-lane vectors (eight rows at a time when d is a multiple of 8),
 * so they vectorise without -ffast-math; the AVX2+FMA clone is picked at run
 * time.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "fp-contract=fast")
#endif
#if defined(__GNUC__) /* and clang */
/* vector-valued helpers are static and inlined: no ABI is crossed */
#pragma GCC diagnostic ignored "-Wpsabi"
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

typedef int v8i __attribute__((vector_size(32)));

/* Lanes of a (indices 0..7) and b (8..15) picked by constant indices. */
#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (v8i){__VA_ARGS__})
#endif

/* Pairwise sums within 128-bit halves (vhaddps): [a0+a1 a2+a3 b0+b1 b2+b3 | same for 4..7]. */
static inline v8 hadd8(v8 a, v8 b) {
  return SHUFFLE(a, b, 0, 2, 8, 10, 4, 6, 12, 14) + SHUFFLE(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}

/* The eight lane sums of a[0..7], in order, as one vector: a tree of
 * shuffles and adds instead of eight scalar reductions. */
static inline v8 hsum8x8(const v8 *a) {
  v8 c0 = hadd8(hadd8(a[0], a[1]), hadd8(a[2], a[3]));
  v8 c1 = hadd8(hadd8(a[4], a[5]), hadd8(a[6], a[7]));
  return SHUFFLE(c0, c1, 0, 1, 2, 3, 8, 9, 10, 11) + SHUFFLE(c0, c1, 4, 5, 6, 7, 12, 13, 14, 15);
}

/* One 8-lane term of x . q or ||x - q||^2: columns j..j+7 of row xr. */
#define SCAN_TERM(xr, j) (l2 ? (*(const v8 *)((xr) + (j)) - *(const v8 *)(q + (j))) * \
                                   (*(const v8 *)((xr) + (j)) - *(const v8 *)(q + (j)))   \
                             : *(const v8 *)((xr) + (j)) * *(const v8 *)(q + (j)))

/* out[r] = score of row r of x (rows, d) against query q; higher is better
 * (inner product, or minus the squared L2 distance). When d is a multiple
 * of 8, eight rows at a time: their chains overlap and one shuffle tree
 * reduces all eight (for small d the reduction, not the multiply, was the
 * cost). Otherwise, and for the last rows, one row at a time with the
 * columns past the last multiple of 8 added one by one. Inlined with l2 a
 * constant, so the metric is not tested in the inner loop. */
static inline __attribute__((always_inline)) void score_rows_metric(
    const float *x, size_t rows, size_t d, const float *q, const int l2, float *out) {
  size_t d8 = d & ~(size_t)7, r = 0;
  if (d8 == d) {
    for (; r + 8 <= rows; r += 8) {
      const float *xr = x + r * d;
      v8 a[8] = {{0}};
      for (size_t j = 0; j < d; j += 8)
        for (int i = 0; i < 8; i++) a[i] += SCAN_TERM(xr + (size_t)i * d, j);
      v8 s = hsum8x8(a);
      *(v8 *)(out + r) = l2 ? -s : s;
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

SCAN_CLONES static void score_rows(const float *x, size_t rows, size_t d, const float *q,
                                   int l2, float *out) {
  if (l2) score_rows_metric(x, rows, d, q, 1, out);
  else score_rows_metric(x, rows, d, q, 0, out);
}

/* Writes to idx the rows r < n with s[r] > t, eight compared at once;
 * returns how many. Once a heap is full, few rows beat its worst score. */
SCAN_CLONES static size_t rows_above(const float *s, size_t n, float t, uint8_t *idx) {
  size_t found = 0, r = 0;
  v8 tv = (v8){0} + t;
  for (; r + 8 <= n; r += 8) {
    v8i m = *(const v8 *)(s + r) > tv;
    m |= SHUFFLE(m, m, 4, 5, 6, 7, 0, 1, 2, 3);
    m |= SHUFFLE(m, m, 2, 3, 0, 1, 6, 7, 4, 5);
    m |= SHUFFLE(m, m, 1, 0, 3, 2, 5, 4, 7, 6);
    if (!m[0]) continue;
    for (size_t i = r; i < r + 8; i++)
      if (s[i] > t) idx[found++] = (uint8_t)i;
  }
  for (; r < n; r++)
    if (s[r] > t) idx[found++] = (uint8_t)r;
  return found;
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

#define ROW_LABEL(row) (ids ? ids[row] : (int64_t)(row))

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
      size_t r = 0;
      for (; r < rows && kept[i] < k; r++) /* filling the heap */
        heap_push(heap, kept[i]++, (scan_hit){scores[r], ROW_LABEL(r0 + r)});
      if (r == rows) continue;
      uint8_t cand[SCAN_ROWS];
      size_t nc = rows_above(scores + r, rows - r, heap[0].score, cand);
      for (size_t c = 0; c < nc; c++) {
        size_t row = r + cand[c];
        if (scores[row] > heap[0].score) /* the bar rises as hits come in */
          heap_replace_root(heap, k, (scan_hit){scores[row], ROW_LABEL(r0 + row)});
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
#undef ROW_LABEL
