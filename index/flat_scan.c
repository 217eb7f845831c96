/* flat_scan.c - exact k-nearest search for a few queries (see flat_scan.h).
 *
 * Rows are scored in blocks of SCAN_ROWS, every query over a block while it
 * is in cache; each query keeps a min-heap of its best k scores, and rows
 * that do not beat the heap's worst are passed over eight at a time. L2
 * distances are negated so one "larger is better" heap serves both metrics.
 * Sums use 8-lane vectors (eight rows at a time when d is a multiple of 8),
 * so they vectorise without -ffast-math; the AVX2+FMA clone is picked at run
 * time.
 *
 * Coded scans (flat_codes; flat_scan_coded over one matrix,
 * flat_scan_lists_coded over several taken together): rows kept as int8
 * with a scale each, the query rounded to 16-bit integers, their dot
 * products summed exactly in 32-bit lanes (AVX-512 VNNI vpdpbusd or AVX2
 * vpmaddwd when the CPU has it). Each row's approximate score comes with a
 * bound on its distance from the exact one (the row's quantisation error,
 * the query's, and float rounding, all rounded up); rows whose upper bound
 * reaches the k-th best lower bound are scored exactly from the float rows
 * with the kernel above, so the result is flat_scan's (or flat_scan_lists')
 * bit for bit (tests/index/test_flat_scan.c checks it).
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "fp-contract=fast")
#endif
#if defined(__GNUC__) /* and clang */
/* vector-valued helpers are static and inlined: no ABI is crossed */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include "flat_scan.h"

#include "float_heap.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* not in sanitizer builds: the clones' resolvers run while the program is
 * loaded, before the sanitizer's runtime is up (TSan crashes in them) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define SCAN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SCAN_CLONES
#endif

enum { SCAN_ROWS = 64 };

typedef float v8 __attribute__((vector_size(32), aligned(4), may_alias));

/* The sum of the lanes of *p, in the order hsum8x8 adds each vector's lanes,
 * so a row's score does not depend on which path computed it. */
static inline float hsum8(const v8 *p) { /* by pointer: no vector in the ABI */
  const float *v = (const float *)p;
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
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
#define SCAN_TERM(xr, j)                                         \
  (l2 ? (*(const v8 *)((xr) + (j)) - *(const v8 *)(q + (j))) *   \
            (*(const v8 *)((xr) + (j)) - *(const v8 *)(q + (j))) \
      : *(const v8 *)((xr) + (j)) * *(const v8 *)(q + (j)))

/* Score of one row xr (d) against q: the sums of score_rows_metric's
 * eight-row path, lane by lane and in the same order (hsum8), so it gives
 * the same float for any row; columns past the last multiple of 8 are added
 * one by one. */
static inline __attribute__((always_inline)) float score_one(const float *xr, size_t d,
                                                             const float *q, const int l2) {
  size_t d8 = d & ~(size_t)7;
  v8 a = {0};
  for (size_t j = 0; j < d8; j += 8) a += SCAN_TERM(xr, j);
  float s = hsum8(&a);
  for (size_t j = d8; j < d; j++) s += l2 ? (xr[j] - q[j]) * (xr[j] - q[j]) : xr[j] * q[j];
  return l2 ? -s : s;
}

/* out[r] = score of row r of x (rows, d) against query q; higher is better
 * (inner product, or minus the squared L2 distance). When d is a multiple
 * of 8, eight rows at a time: their chains overlap and one shuffle tree
 * reduces all eight (for small d the reduction, not the multiply, was the
 * cost). Otherwise, and for the last rows, one row at a time with the
 * columns past the last multiple of 8 added one by one. Inlined with l2 a
 * constant, so the metric is not tested in the inner loop. */
static inline __attribute__((always_inline)) void score_rows_metric(const float *x, size_t rows,
                                                                    size_t d, const float *q,
                                                                    const int l2, float *out) {
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
  for (; r < rows; r++) out[r] = score_one(x + r * d, d, q, l2);
}

SCAN_CLONES static void score_rows(const float *x, size_t rows, size_t d, const float *q, int l2,
                                   float *out) {
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

/* The order of hits: by score, and among equal scores the lower label is the
 * better, so which hits are kept does not depend on the order rows come in. */
static inline int hit_worse(scan_hit a, scan_hit b) {
  return a.score < b.score || (a.score == b.score && a.label > b.label);
}

/* Min-heap in hit_worse order (root = the worst kept hit): replaces the root. */
static void heap_replace_root(scan_hit *h, size_t n, scan_hit x) {
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && hit_worse(h[c + 1], h[c])) c++;
    if (!hit_worse(h[c], x)) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}

static void heap_push(scan_hit *h, size_t n, scan_hit x) { /* n: size before the push */
  size_t i = n;
  while (i > 0 && hit_worse(x, h[(i - 1) / 2])) {
    h[i] = h[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h[i] = x;
}

/* Offers x to a heap of at most k hits holding *kept. */
static inline void heap_offer(scan_hit *h, size_t *kept, size_t k, scan_hit x) {
  if (*kept < k) heap_push(h, (*kept)++, x);
  else if (hit_worse(h[0], x)) heap_replace_root(h, k, x);
}

static int by_score_desc(const void *a, const void *b) {
  const scan_hit *x = a, *y = b;
  return hit_worse(*x, *y) - hit_worse(*y, *x); /* the better first */
}

/* Writes the hits of heap (kept of k) best first to dist/lab (k slots). */
static void heap_out(scan_hit *heap, size_t kept, size_t k, int l2, float *dist, int64_t *lab) {
  qsort(heap, kept, sizeof *heap, by_score_desc);
  for (size_t j = 0; j < k; j++) {
    dist[j] = j < kept ? (l2 ? -heap[j].score : heap[j].score) : l2 ? FLT_MAX : -FLT_MAX;
    lab[j] = j < kept ? heap[j].label : -1;
  }
}

#define ROW_LABEL(row) (ids ? ids[row] : (int64_t)(row))

/* Offers the rows of one block, scored in scores (rows), to a heap of at
 * most k hits holding *kept; the block starts at row r0 of its matrix. */
static void offer_block(scan_hit *heap, size_t *kept, size_t k, const float *scores, size_t rows,
                        const int64_t *ids, size_t r0) {
  size_t r = 0;
  for (; r < rows && *kept < k; r++) /* filling the heap */
    heap_push(heap, (*kept)++, (scan_hit){scores[r], ROW_LABEL(r0 + r)});
  if (r == rows) return;
  /* rows scoring at least the worst kept (a tie may win on its label) */
  uint8_t cand[SCAN_ROWS];
  size_t nc = rows_above(scores + r, rows - r, nextafterf(heap[0].score, -INFINITY), cand);
  for (size_t c = 0; c < nc; c++) { /* the bar rises as hits come in */
    size_t row = r + cand[c];
    heap_offer(heap, kept, k, (scan_hit){scores[row], ROW_LABEL(r0 + row)});
  }
}

static proto_status too_many_queries(size_t nq) {
  return proto_fail(PROTO_EINVAL, "flat_scan: %zu queries, at most %d", nq, FLAT_SCAN_MAX_QUERIES);
}

proto_status flat_scan(const float *xb, const int64_t *ids, size_t n, size_t d, const float *q,
                       size_t nq, int l2, size_t k, float *dist, int64_t *lab) {
  enum { STACK_HITS = 1024 };
  float scores[SCAN_ROWS];
  scan_hit stack_hits[STACK_HITS];
  size_t kept[FLAT_SCAN_MAX_QUERIES] = {0};
  if (nq > FLAT_SCAN_MAX_QUERIES) return too_many_queries(nq);
  if (k == 0) return PROTO_OK;
  scan_hit *heaps = nq * k <= STACK_HITS ? stack_hits : malloc(nq * k * sizeof *heaps);
  if (!heaps) return proto_fail(PROTO_ENOMEM, "out of memory");
  /* block by block, every query over the block while it is in cache */
  for (size_t r0 = 0; r0 < n; r0 += SCAN_ROWS) {
    size_t rows = n - r0 < SCAN_ROWS ? n - r0 : SCAN_ROWS;
    for (size_t i = 0; i < nq; i++) {
      score_rows(xb + r0 * d, rows, d, q + i * d, l2, scores);
      offer_block(heaps + i * k, &kept[i], k, scores, rows, ids, r0);
    }
  }
  for (size_t i = 0; i < nq; i++)
    heap_out(heaps + i * k, kept[i], k, l2, dist + i * k, lab + i * k);
  if (heaps != stack_hits) free(heaps);
  return PROTO_OK;
}
#undef ROW_LABEL

proto_status flat_scan_lists(const flat_list *lists, size_t nlists, size_t d, const float *q,
                             int l2, size_t k, float *dist, int64_t *lab) {
  enum { STACK_HITS = 1024 };
  float scores[SCAN_ROWS];
  scan_hit stack_hits[STACK_HITS];
  size_t kept = 0;
  if (k == 0) return PROTO_OK;
  scan_hit *heap = k <= STACK_HITS ? stack_hits : malloc(k * sizeof *heap);
  if (!heap) return proto_fail(PROTO_ENOMEM, "out of memory");
  for (size_t l = 0; l < nlists; l++) {
    for (size_t r0 = 0; r0 < lists[l].n; r0 += SCAN_ROWS) {
      size_t rows = lists[l].n - r0 < SCAN_ROWS ? lists[l].n - r0 : SCAN_ROWS;
      score_rows(lists[l].xb + r0 * d, rows, d, q, l2, scores);
      offer_block(heap, &kept, k, scores, rows, lists[l].ids, r0);
    }
  }
  heap_out(heap, kept, k, l2, dist, lab);
  if (heap != stack_hits) free(heap);
  return PROTO_OK;
}

SCAN_CLONES static void score_pointed(const float *const *rows, size_t n, size_t d, const float *q,
                                      int l2, float *out) {
  for (size_t i = 0; i < n; i++)
    out[i] = l2 ? score_one(rows[i], d, q, 1) : score_one(rows[i], d, q, 0);
}

proto_status flat_scan_rows(const float *const *rows, const int64_t *labels, size_t n, size_t d,
                            const float *q, int l2, size_t k, float *dist, int64_t *lab) {
  enum { STACK_HITS = 1024 };
  float scores[SCAN_ROWS];
  scan_hit stack_hits[STACK_HITS];
  size_t kept = 0;
  if (k == 0) return PROTO_OK;
  scan_hit *heap = k <= STACK_HITS ? stack_hits : malloc(k * sizeof *heap);
  if (!heap) return proto_fail(PROTO_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) /* scattered rows: ask for all of them at once */
    for (size_t off = 0; off < d * sizeof(float); off += 64)
      __builtin_prefetch((const char *)rows[i] + off);
  for (size_t r0 = 0; r0 < n; r0 += SCAN_ROWS) {
    size_t m = n - r0 < SCAN_ROWS ? n - r0 : SCAN_ROWS;
    score_pointed(rows + r0, m, d, q, l2, scores);
    for (size_t i = 0; i < m; i++)
      heap_offer(heap, &kept, k, (scan_hit){scores[i], labels[r0 + i]});
  }
  heap_out(heap, kept, k, l2, dist, lab);
  if (heap != stack_hits) free(heap);
  return PROTO_OK;
}

/* Coded scans ------------------------------------------------------------------- */

struct flat_codes {
  size_t d, rows, cap;
  size_t wild;   /* rows with a value that is not finite or a norm over
                     ROW_NORM_MAX: no bound is kept for them, so scans go
                     without the codes while any is held */
  float gamma;   /* slack for float rounding: (d + 32) * 2^-22 */
  double qi_max; /* largest integer of a quantised query: 127 * d * qi_max < 2^31 */
  int8_t *codes; /* (cap, d): row r ~= scale[r] * codes[r] */
  float *scale;  /* (cap) */
  float *bound;  /* (cap): ||x - scale * code|| + gamma * (||x|| + that), rounded up */
  float *norm;   /* (cap): ||x||, rounded up; -1 for a wild row */
};

/* Rows and queries past this norm are scanned without codes: their squares
 * could overflow a float. */
#define ROW_NORM_MAX 1e15

proto_status flat_codes_new(size_t d, flat_codes **out) {
  *out = NULL;
  if (d == 0) return proto_fail(PROTO_EINVAL, "flat_codes_new: dimension 0");
  flat_codes *c = calloc(1, sizeof *c);
  if (!c) return proto_fail(PROTO_ENOMEM, "out of memory");
  c->d = d;
  c->gamma = (float)((double)(d + 32) * 0x1p-22);
  c->qi_max = fmin(32767.0, floor(2147483647.0 / (127.0 * (double)d)));
  if (c->qi_max < 1) {
    free(c);
    return proto_fail(PROTO_EINVAL, "flat_codes_new: dimension %zu too large", d);
  }
  *out = c;
  return PROTO_OK;
}

void flat_codes_free(flat_codes *c) {
  if (!c) return;
  free(c->codes);
  free(c->scale);
  free(c->bound);
  free(c->norm);
  free(c);
}

size_t flat_codes_rows(const flat_codes *c) { return c ? c->rows : 0; }

void flat_codes_clear(flat_codes *c) {
  if (c) c->rows = c->wild = 0;
}

static int codes_reserve(flat_codes *c, size_t rows) {
  if (rows <= c->cap) return 0;
  size_t cap = c->cap ? c->cap : 256;
  while (cap < rows) cap *= 2;
  int8_t *codes = realloc(c->codes, cap * c->d);
  if (codes) c->codes = codes;
  float *scale = realloc(c->scale, cap * sizeof *scale);
  if (scale) c->scale = scale;
  float *bound = realloc(c->bound, cap * sizeof *bound);
  if (bound) c->bound = bound;
  float *norm = realloc(c->norm, cap * sizeof *norm);
  if (norm) c->norm = norm;
  if (!codes || !scale || !bound || !norm) return -1;
  c->cap = cap;
  return 0;
}

/* The codes of one row xr (d): code[j] = round(xr[j] / scale), scale =
 * max |xr[j]| / 127. Sums of squares in float lanes (vectorised), their
 * rounding covered in the bounds: *norm >= ||xr||, *err >= ||xr - scale *
 * code||. Returns 0 for a row with a value that is not finite or a norm
 * past ROW_NORM_MAX. */
SCAN_CLONES static int code_row(const float *xr, size_t d, int8_t *code, float *scale, double *norm,
                                double *err) {
  size_t d8 = d & ~(size_t)7;
  v8 sq = {0};
  float amax = 0, sq_tail = 0;
  for (size_t j = 0; j < d8; j += 8) sq += *(const v8 *)(xr + j) * *(const v8 *)(xr + j);
  for (size_t j = d8; j < d; j++) sq_tail += xr[j] * xr[j];
  for (size_t j = 0; j < d; j++) { /* a NaN is caught by norm2 below */
    float a = fabsf(xr[j]);
    amax = a > amax ? a : amax;
  }
  const double slack = 1 + (double)(d + 8) * 0x1p-24; /* relative, of a float sum of d terms */
  double norm2 = (double)hsum8(&sq) + sq_tail;
  if (!isfinite(norm2) || !(sqrt(norm2) * slack <= ROW_NORM_MAX)) return 0;
  *norm = sqrt(norm2) * slack;
  float s = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
  for (size_t j = 0; j < d; j++) {
    float v = nearbyintf(xr[j] * inv);
    code[j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
  }
  /* x - fl(s * c) is exact (Sterbenz) and fl(s * c) is within u (|x| + s)
   * of s * c: the float error norm is off by at most u (||x|| + s sqrt d) */
  v8 e2 = {0};
  float e2_tail = 0;
  for (size_t j = 0; j < d8; j += 8) {
    v8 e;
    for (int i = 0; i < 8; i++) e[i] = xr[j + i] - s * (float)code[j + i];
    e2 += e * e;
  }
  for (size_t j = d8; j < d; j++) {
    float e = xr[j] - s * (float)code[j];
    e2_tail += e * e;
  }
  *err = sqrt((double)hsum8(&e2) + e2_tail) * slack + 0x1p-23 * (*norm + s * sqrt((double)d));
  *scale = s;
  return 1;
}

proto_status flat_codes_append(flat_codes *c, const float *x, size_t n) {
  if (codes_reserve(c, c->rows + n) != 0) return proto_fail(PROTO_ENOMEM, "out of memory");
  const size_t d = c->d;
  for (size_t i = 0; i < n; i++) {
    size_t r = c->rows + i;
    double norm, err;
    if (code_row(x + i * d, d, c->codes + r * d, &c->scale[r], &norm, &err)) {
      c->norm[r] = (float)(norm * (1 + 0x1p-20));
      c->bound[r] = (float)((err + (double)c->gamma * (norm + err)) * (1 + 0x1p-20));
    } else { /* no bound: scans go without codes while the row is held */
      memset(c->codes + r * d, 0, d);
      c->scale[r] = c->bound[r] = 0;
      c->norm[r] = -1; /* marks the row wild */
      c->wild++;
    }
  }
  c->rows += n;
  return PROTO_OK;
}

size_t flat_codes_keep(flat_codes *c, const uint8_t *keep) {
  const size_t d = c->d;
  size_t w = 0;
  c->wild = 0;
  for (size_t r = 0; r < c->rows; r++) {
    if (!keep[r]) continue;
    if (w != r) {
      memcpy(c->codes + w * d, c->codes + r * d, d);
      c->scale[w] = c->scale[r];
      c->bound[w] = c->bound[r];
      c->norm[w] = c->norm[r];
    }
    c->wild += c->norm[w] < 0;
    w++;
  }
  c->rows = w;
  return w;
}

int flat_codes_row_matches(const flat_codes *c, size_t r, const float *x) {
  enum { STACK_D = 4096 };
  int8_t stack_code[STACK_D];
  if (r >= c->rows) return 0;
  int8_t *code = c->d <= STACK_D ? stack_code : malloc(c->d);
  if (!code) return 0;
  float scale = 0;
  double norm, err;
  int tame = code_row(x, c->d, code, &scale, &norm, &err);
  int same =
      tame ? c->norm[r] >= 0 && scale == c->scale[r] && memcmp(code, c->codes + r * c->d, c->d) == 0
           : c->norm[r] < 0;
  if (code != stack_code) free(code);
  return same;
}

/* A query of a coded scan: its 16-bit integers, and the same split into
 * bytes for the VNNI kernel (filled only when that kernel runs). */
typedef struct {
  int16_t *qi;      /* (d) */
  int8_t *hi;       /* (d): qi >> 8 */
  uint8_t *lo;      /* (d): qi & 255 */
  uint32_t hi_bias; /* 2^15 sum hi: what flipping the codes' top bits adds */
} code_query;

/* dot[r] = q . codes[r] for rows of codes (rows, d) and a query q (d) of
 * 16-bit integers; the sums are exact in 32 bits (flat_codes.qi_max). */
static void code_dots_plain(const int8_t *codes, size_t rows, size_t d, const int16_t *q,
                            int32_t *dot) {
  for (size_t r = 0; r < rows; r++) {
    const int8_t *cr = codes + r * d;
    int32_t s = 0;
    for (size_t j = 0; j < d; j++) s += (int32_t)cr[j] * q[j];
    dot[r] = s;
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
#include "code_simd.h"
#define HAVE_DOTS_AVX2 1

/* code_dots_plain with AVX2: sixteen codes widened to 16 bits, multiplied
 * and added in pairs (vpmaddwd); eight rows at a time when d is a multiple
 * of 16. */
__attribute__((target("avx2"))) static void code_dots_avx2(const int8_t *codes, size_t rows,
                                                           size_t d, const int16_t *q,
                                                           int32_t *dot) {
  size_t r = 0;
  if (d % 16 == 0) {
    for (; r + 8 <= rows; r += 8) {
      const int8_t *cr = codes + r * d;
      __m256i a[8];
      for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_si256();
      for (size_t j = 0; j < d; j += 16) {
        __m256i qj = _mm256_loadu_si256((const __m256i *)(q + j));
        for (int i = 0; i < 8; i++) {
          __m128i c = _mm_loadu_si128((const __m128i *)(cr + (size_t)i * d + j));
          a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(_mm256_cvtepi8_epi16(c), qj));
        }
      }
      _mm256_storeu_si256((__m256i *)(dot + r), sum8x8_epi32(a));
    }
  }
  code_dots_plain(codes + r * d, rows - r, d, q, dot + r);
}

/* code_dots_plain with AVX-512 VNNI, for d a multiple of 64: vpdpbusd
 * multiplies unsigned by signed bytes, so the query is split into bytes,
 * q = 256 hi + lo (hi signed, lo unsigned), and
 *   sum c q = 256 sum (c + 128) hi - 2^15 sum hi + sum lo c,
 * the codes made unsigned by flipping their top bit. Every step wraps
 * modulo 2^32 and the true sum fits 32 bits, so it comes out exact. */
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) static void code_dots_vnni(
    const int8_t *codes, size_t rows, size_t d, const code_query *q, int32_t *dot) {
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  const __m256i bias = _mm256_set1_epi32((int32_t)q->hi_bias);
  size_t r = 0;
  for (; r + 8 <= rows; r += 8) {
    const int8_t *cr = codes + r * d;
    __m512i hi[8], lo[8];
    for (int i = 0; i < 8; i++) hi[i] = lo[i] = _mm512_setzero_si512();
    for (size_t j = 0; j < d; j += 64) {
      __m512i qh = _mm512_loadu_si512(q->hi + j), ql = _mm512_loadu_si512(q->lo + j);
      for (int i = 0; i < 8; i++) {
        __m512i c = _mm512_loadu_si512(cr + (size_t)i * d + j);
        lo[i] = _mm512_dpbusd_epi32(lo[i], ql, c);
        hi[i] = _mm512_dpbusd_epi32(hi[i], _mm512_xor_si512(c, flip), qh);
      }
    }
    __m256i half[8];
    for (int i = 0; i < 8; i++) {
      __m512i t = _mm512_add_epi32(_mm512_slli_epi32(hi[i], 8), lo[i]);
      half[i] = _mm256_add_epi32(_mm512_castsi512_si256(t), _mm512_extracti64x4_epi64(t, 1));
    }
    _mm256_storeu_si256((__m256i *)(dot + r), _mm256_sub_epi32(sum8x8_epi32(half), bias));
  }
  code_dots_plain(codes + r * d, rows - r, d, q->qi, dot + r);
}
#endif

static unsigned forced_width = 512;

/* The widest kernel the CPU has for rows of d codes, up to forced_width:
 * 512 (VNNI), 256 (AVX2) or 0. */
static unsigned code_width(size_t d) {
#ifdef HAVE_DOTS_AVX2
  unsigned cap = forced_width;
  if (d % 64 != 0 && cap > 256) cap = 256; /* the VNNI kernel's rows: 64 codes a step */
  return code_kernel_width(cap);
#else
  (void)d;
  return 0;
#endif
}

unsigned flat_codes_set_width(unsigned bits) {
  forced_width = bits;
  return code_width(64);
}

/* Fills the byte halves of q->qi (d of them) that the VNNI kernel reads. */
static void code_query_split(code_query *q, size_t d) {
  uint32_t sum_hi = 0; /* modulo 2^32, as the kernel's sums */
  for (size_t j = 0; j < d; j++) {
    q->hi[j] = (int8_t)(q->qi[j] >> 8); /* arithmetic shift: GCC, clang */
    q->lo[j] = (uint8_t)(q->qi[j] & 255);
    sum_hi += (uint32_t)(int32_t)q->hi[j];
  }
  q->hi_bias = sum_hi << 15;
}

static void code_dots(const int8_t *codes, size_t rows, size_t d, const code_query *q,
                      unsigned width, int32_t *dot) {
  switch (width) {
#ifdef HAVE_DOTS_AVX2
    case 512:
      code_dots_vnni(codes, rows, d, q, dot);
      return;
    case 256:
      code_dots_avx2(codes, rows, d, q->qi, dot);
      return;
#endif
    default:
      code_dots_plain(codes, rows, d, q->qi, dot);
  }
}

int flat_codes_dots(const flat_codes *c, const int16_t *qi, size_t r0, size_t n, int32_t *dot) {
  const size_t d = c->d;
  if (r0 > c->rows || n > c->rows - r0) return -1;
  code_query q = {malloc(d * sizeof *q.qi), malloc(d), malloc(d), 0};
  int ok = q.qi && q.hi && q.lo;
  if (ok) {
    memcpy(q.qi, qi, d * sizeof *qi);
    unsigned width = code_width(d);
    if (width == 512) code_query_split(&q, d);
    code_dots(c->codes + r0 * d, n, d, &q, width, dot);
  }
  free(q.qi);
  free(q.hi);
  free(q.lo);
  return ok ? 0 : -1;
}

/* Exact scores of the listed rows of xb (the same floats flat_scan computes). */
SCAN_CLONES static void score_listed(const float *xb, size_t d, const float *q, int l2,
                                     const uint32_t *rows, size_t n, float *out) {
  for (size_t i = 0; i < n; i++)
    out[i] = l2 ? score_one(xb + (size_t)rows[i] * d, d, q, 1)
                : score_one(xb + (size_t)rows[i] * d, d, q, 0);
}

/* A growable list of candidate rows with the upper bounds of their scores. */
typedef struct {
  uint32_t *row;
  float *upper;
  size_t n, cap;
  int on_stack; /* row and upper are the caller's arrays, not ours to free */
} cand_list;

static int cand_add(cand_list *l, uint32_t row, float upper) {
  if (l->n == l->cap) {
    size_t cap = 2 * l->cap;
    uint32_t *r = malloc(cap * sizeof *r);
    float *u = malloc(cap * sizeof *u);
    if (!r || !u) {
      free(r);
      free(u);
      return -1;
    }
    memcpy(r, l->row, l->n * sizeof *r);
    memcpy(u, l->upper, l->n * sizeof *u);
    if (!l->on_stack) {
      free(l->row);
      free(l->upper);
    }
    l->row = r;
    l->upper = u;
    l->cap = cap;
    l->on_stack = 0;
  }
  l->row[l->n] = row;
  l->upper[l->n++] = upper;
  return 0;
}

/* One query of a coded scan over the rows of parts[0..nparts) taken
 * together (each with its codes, all of the same d): the rows whose
 * approximate score could put them among the k best, then their exact
 * scores. A candidate is held as its row number counted across the parts,
 * in increasing order. */
static int coded_query(const flat_list *parts, size_t nparts, const float *q, int l2, size_t k,
                       code_query *cq, cand_list *cand, float *lower_heap, scan_hit *heap,
                       float *dist, int64_t *lab) {
  const flat_codes *c0 = parts[0].codes; /* d, qi_max and gamma depend on d alone */
  const size_t d = c0->d;
  double qn2 = 0;
  for (size_t j = 0; j < d; j++) qn2 += (double)q[j] * q[j];
  const float qn = (float)(sqrt(qn2) * (1 + 0x1p-20)), qsq = (float)qn2;
  if (!(qn > 0 && qn <= ROW_NORM_MAX)) return 1; /* no bound: scan instead */
  /* q ~= step * qi, qi 16-bit integers small enough that a row's sum of
   * code * qi fits 32 bits; eq = ||q - step * qi|| */
  double qmax = 0, eq2 = 0;
  for (size_t j = 0; j < d; j++) qmax = fmax(qmax, fabs((double)q[j]));
  const double step = qmax / c0->qi_max;
  for (size_t j = 0; j < d; j++) {
    cq->qi[j] = (int16_t)nearbyint(q[j] / step);
    double e = (double)q[j] - step * cq->qi[j];
    eq2 += e * e;
  }
  const unsigned width = code_width(d);
  if (width == 512) code_query_split(cq, d);
  const float eq = (float)(sqrt(eq2) * (1 + 0x1p-20)), fstep = (float)step, gamma = c0->gamma;
  int32_t dot[SCAN_ROWS];
  float upper[SCAN_ROWS], lower[SCAN_ROWS];
  size_t nl = 0, base = 0;
  cand->n = 0;
  for (size_t p = 0; p < nparts; base += parts[p++].n) {
    const flat_codes *c = parts[p].codes;
    for (size_t r0 = 0; r0 < parts[p].n; r0 += SCAN_ROWS) {
      size_t rows = parts[p].n - r0 < SCAN_ROWS ? parts[p].n - r0 : SCAN_ROWS;
      code_dots(c->codes + r0 * d, rows, d, cq, width, dot);
      /* score ~= approx +- slack: |q.x - q.x~| <= ||q|| ||x - x~||, |q.x~ -
       * approx| <= ||q - step qi|| ||x~||, plus float rounding (gamma) */
      for (size_t r = 0; r < rows; r++) {
        float xn = c->norm[r0 + r], bound = c->bound[r0 + r];
        float a = c->scale[r0 + r] * fstep * (float)dot[r];
        float slack = qn * bound + eq * (xn + bound) * (1 + gamma);
        if (l2) {
          float reach = xn + qn + bound;
          a = 2 * a - xn * xn - qsq;
          slack = 2 * slack + gamma * reach * reach;
        }
        upper[r] = a + slack;
        lower[r] = a - slack;
      }
      float bar = nl == k ? lower_heap[0] : -INFINITY;
      uint8_t above[SCAN_ROWS];
      size_t na = rows_above(upper, rows, nextafterf(bar, -INFINITY), above);
      for (size_t i = 0; i < na; i++) {
        size_t r = above[i];
        if (nl == k && upper[r] < lower_heap[0]) continue; /* the bar rose */
        if (cand_add(cand, (uint32_t)(base + r0 + r), upper[r]) != 0) return -1;
        float_heap_offer(lower_heap, &nl, k, lower[r]);
      }
    }
  }
  /* the k-th best exact score is at least the k-th best lower bound */
  float bar = nl == k ? lower_heap[0] : -INFINITY;
  size_t m = 0;
  for (size_t i = 0; i < cand->n; i++)
    if (cand->upper[i] >= bar) cand->row[m++] = cand->row[i];
  float *exact = cand->upper; /* reused: the bounds are no longer needed */
  size_t kept = 0, i = 0;
  base = 0;
  for (size_t p = 0; p < nparts && i < m; base += parts[p++].n) {
    size_t first = i;
    for (; i < m && cand->row[i] < base + parts[p].n; i++) cand->row[i] -= (uint32_t)base;
    score_listed(parts[p].xb, d, q, l2, cand->row + first, i - first, exact + first);
    const int64_t *ids = parts[p].ids;
    for (size_t j = first; j < i; j++)
      heap_offer(heap, &kept, k,
                 (scan_hit){exact[j], ids ? ids[cand->row[j]] : (int64_t)cand->row[j]});
  }
  heap_out(heap, kept, k, l2, dist, lab);
  return 0;
}

/* The scratch of coded scans: on the stack for usual k, d and candidate
 * counts, else allocated (coded_scratch_free releases it). */
enum { CODED_STACK_K = 128, CODED_STACK_D = 1024, CODED_STACK_CAND = 512 };
typedef struct {
  float stack_lower[CODED_STACK_K], stack_upper[CODED_STACK_CAND];
  scan_hit stack_heap[CODED_STACK_K];
  int16_t stack_qi[CODED_STACK_D];
  int8_t stack_hi[CODED_STACK_D];
  uint8_t stack_lo[CODED_STACK_D];
  uint32_t stack_rows[CODED_STACK_CAND];
  cand_list cand;
  float *lower_heap;
  scan_hit *heap;
  code_query q;
} coded_scratch;

static int coded_scratch_init(coded_scratch *s, size_t k, size_t d) {
  s->cand = (cand_list){s->stack_rows, s->stack_upper, 0, CODED_STACK_CAND, 1};
  s->lower_heap = k <= CODED_STACK_K ? s->stack_lower : malloc(k * sizeof *s->lower_heap);
  s->heap = k <= CODED_STACK_K ? s->stack_heap : malloc(k * sizeof *s->heap);
  s->q.qi = d <= CODED_STACK_D ? s->stack_qi : malloc(d * sizeof *s->q.qi);
  s->q.hi = d <= CODED_STACK_D ? s->stack_hi : malloc(d);
  s->q.lo = d <= CODED_STACK_D ? s->stack_lo : malloc(d);
  return s->lower_heap && s->heap && s->q.qi && s->q.hi && s->q.lo ? 0 : -1;
}

static void coded_scratch_free(coded_scratch *s) {
  if (!s->cand.on_stack) {
    free(s->cand.row);
    free(s->cand.upper);
  }
  if (s->lower_heap != s->stack_lower) free(s->lower_heap);
  if (s->heap != s->stack_heap) free(s->heap);
  if (s->q.qi != s->stack_qi) free(s->q.qi);
  if (s->q.hi != s->stack_hi) free(s->q.hi);
  if (s->q.lo != s->stack_lo) free(s->q.lo);
}

/* 1 when c holds codes of exactly n rows of d floats that bound every row. */
static int codes_usable(const flat_codes *c, size_t n, size_t d) {
  return c && c->rows == n && c->d == d && !c->wild;
}

proto_status flat_scan_coded(const flat_codes *c, const float *xb, const int64_t *ids, size_t n,
                             size_t d, const float *q, size_t nq, int l2, size_t k, float *dist,
                             int64_t *lab) {
  if (nq > FLAT_SCAN_MAX_QUERIES) return too_many_queries(nq);
  if (!codes_usable(c, n, d) || n > UINT32_MAX || k == 0)
    return flat_scan(xb, ids, n, d, q, nq, l2, k, dist, lab);
  coded_scratch s;
  flat_list part = {xb, ids, n, c};
  int rc = coded_scratch_init(&s, k, d);
  for (size_t i = 0; i < nq && rc == 0; i++) {
    rc = coded_query(&part, 1, q + i * d, l2, k, &s.q, &s.cand, s.lower_heap, s.heap, dist + i * k,
                     lab + i * k);
    if (rc == 1) /* the codes cannot bound this query's scores */
      rc = flat_scan(xb, ids, n, d, q + i * d, 1, l2, k, dist + i * k, lab + i * k) ? -1 : 0;
  }
  coded_scratch_free(&s);
  return rc ? proto_fail(PROTO_ENOMEM, "out of memory") : PROTO_OK;
}

proto_status flat_scan_lists_coded(const flat_list *lists, size_t nlists, size_t d, const float *q,
                                   int l2, size_t k, float *dist, int64_t *lab) {
  size_t total = 0;
  int usable = nlists > 0 && k > 0;
  for (size_t l = 0; l < nlists && usable; l++) {
    usable = codes_usable(lists[l].codes, lists[l].n, d);
    total += lists[l].n;
  }
  if (!usable || total > UINT32_MAX) return flat_scan_lists(lists, nlists, d, q, l2, k, dist, lab);
  coded_scratch s;
  int rc = coded_scratch_init(&s, k, d);
  if (rc == 0)
    rc = coded_query(lists, nlists, q, l2, k, &s.q, &s.cand, s.lower_heap, s.heap, dist, lab);
  coded_scratch_free(&s);
  if (rc == 1) return flat_scan_lists(lists, nlists, d, q, l2, k, dist, lab);
  return rc ? proto_fail(PROTO_ENOMEM, "out of memory") : PROTO_OK;
}
