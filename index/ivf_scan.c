/* ivf_scan.c - an IVFFlat index searched by flat_scan (see ivf_scan.h). */
#include "ivf_scan.h"

#include "flat_scan.h"
#include "float_heap.h"

#include <math.h>
#include <stdlib.h>

/* One query: the rows of the lists probe[0..nprobe) (-1 ends them early),
 * through their codes when list_codes has them. */
static proto_status scan_probed(const FaissIVFFlatView *v, const flat_codes *const *list_codes,
                                size_t d, const float *q, const int64_t *probe, size_t nprobe,
                                flat_list *lists, size_t k, float *dist, int64_t *lab) {
  size_t nl = 0;
  for (size_t p = 0; p < nprobe && probe[p] >= 0; p++) {
    const float *rows;
    const idx_t *ids;
    size_t n;
    faiss_IVFFlatView_list(v, (size_t)probe[p], &rows, &ids, &n);
    if (n) lists[nl++] = (flat_list){rows, ids, n, list_codes ? list_codes[probe[p]] : NULL};
  }
  proto_status s = list_codes ? flat_scan_lists_coded(lists, nl, d, q, v->lists_l2, k, dist, lab)
                              : flat_scan_lists(lists, nl, d, q, v->lists_l2, k, dist, lab);
  if (s == PROTO_OK && v->id_map) /* list ids are an IDMap's row numbers */
    for (size_t j = 0; j < k; j++)
      if (lab[j] >= 0) lab[j] = v->id_map[lab[j]];
  return s;
}

proto_status ivf_scan(const FaissIVFFlatView *v, const ivf_codes *codes, size_t d, const float *q,
                      size_t nq, size_t nprobe, size_t k, float *dist, int64_t *lab) {
  if (nq > FLAT_SCAN_MAX_QUERIES || nprobe == 0 || nprobe > v->nlist)
    return proto_fail(PROTO_EINVAL, "ivf_scan: %zu queries, nprobe %zu of %zu lists", nq, nprobe,
                      v->nlist);
  float *cdist = malloc(nq * nprobe * sizeof *cdist);
  int64_t *probe = malloc(nq * nprobe * sizeof *probe);
  flat_list *lists = malloc(nprobe * sizeof *lists);
  proto_status s = PROTO_OK;
  if (!cdist || !probe || !lists) s = proto_fail(PROTO_ENOMEM, "out of memory");
  if (s == PROTO_OK)
    s = flat_scan_coded(codes ? codes->centroids : NULL, v->centroids, NULL, v->nlist, d, q, nq,
                        v->centroids_l2, nprobe, cdist, probe);
  for (size_t i = 0; s == PROTO_OK && i < nq; i++)
    s = scan_probed(v, codes ? codes->lists : NULL, d, q + i * d, probe + i * nprobe, nprobe, lists,
                    k, dist + i * k, lab + i * k);
  free(cdist);
  free(probe);
  free(lists);
  return s;
}

/* Approximate scans through 4-bit codes ---------------------------------------- */

/* A list picked for a query: its centroid's approximate score. */
typedef struct {
  float score;
  size_t list;
} nib_pick;

/* Min-heap of at most cap picks by score (root: the worst kept). */
static void pick_offer(nib_pick *h, size_t *n, size_t cap, nib_pick x) {
  size_t i;
  if (*n < cap) {
    for (i = (*n)++; i > 0 && h[(i - 1) / 2].score > x.score; i = (i - 1) / 2)
      h[i] = h[(i - 1) / 2];
    h[i] = x;
    return;
  }
  for (i = 0;;) {
    size_t c = 2 * i + 1;
    if (c >= cap) break;
    if (c + 1 < cap && h[c + 1].score < h[c].score) c++;
    if (h[c].score >= x.score) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = x;
}

/* The scratch of one ivf_scan_nib call; the candidates grow as needed. */
typedef struct {
  int8_t *qi;
  float *cscore;  /* nlist: approximate centroid scores */
  nib_pick *pick; /* nprobe */
  float *lower;   /* k */
  int64_t *probe; /* nprobe, and lists: for a scan of the floats instead */
  flat_list *lists;
  const float **rows; /* the candidates: float row, label, upper end */
  int64_t *labels;
  float *upper;
  size_t cap;
} nib_scratch;

static void nib_scratch_free(nib_scratch *s) {
  free(s->qi);
  free(s->cscore);
  free(s->pick);
  free(s->lower);
  free(s->probe);
  free(s->lists);
  free(s->rows);
  free(s->labels);
  free(s->upper);
}

static int cand_reserve(nib_scratch *s, size_t n) {
  if (n <= s->cap) return 0;
  size_t cap = s->cap ? 2 * s->cap : 256;
  while (cap < n) cap *= 2;
  const float **rows = realloc(s->rows, cap * sizeof *rows);
  if (rows) s->rows = rows;
  int64_t *labels = realloc(s->labels, cap * sizeof *labels);
  if (labels) s->labels = labels;
  float *upper = realloc(s->upper, cap * sizeof *upper);
  if (upper) s->upper = upper;
  if (!rows || !labels || !upper) return -1;
  s->cap = cap;
  return 0;
}

enum { NIB_CHUNK = 256 };

static int nib_scratch_init(nib_scratch *s, const FaissIVFFlatView *v, size_t d, size_t nprobe,
                            size_t k) {
  *s = (nib_scratch){malloc(nib_query_len(d)),
                     malloc(v->nlist * sizeof(float)),
                     malloc(nprobe * sizeof(nib_pick)),
                     malloc(k * sizeof(float)),
                     malloc(nprobe * sizeof(int64_t)),
                     malloc(nprobe * sizeof(flat_list)),
                     NULL,
                     NULL,
                     NULL,
                     0};
  return s->qi && s->cscore && s->pick && s->lower && s->probe && s->lists && !cand_reserve(s, 256)
             ? 0
             : -1;
}

/* 1 when every picked list has codes of all its rows and none is wild. */
static int lists_coded(const FaissIVFFlatView *v, const ivf_nib *nib, const nib_pick *pick,
                       size_t np) {
  for (size_t p = 0; p < np; p++) {
    const nib_codes *c = nib->lists[pick[p].list];
    if (nib_codes_rows(c) != faiss_IVFFlatView_list_len(v, pick[p].list) || nib_codes_wild(c))
      return 0;
  }
  return 1;
}

/* The nprobe lists whose centroids score best from their codes (higher is
 * better, as in flat_scan); returns how many. */
static size_t pick_lists(const FaissIVFFlatView *v, const ivf_nib *nib, const nib_query *nq,
                         size_t nprobe, nib_scratch *s) {
  nib_codes_scores(nib->centroids, nq, 0, v->nlist, 0, 0, s->cscore, NULL);
  const float *norm2 = nib_codes_norm2(nib->centroids);
  size_t np = 0;
  for (size_t l = 0; l < v->nlist; l++) {
    float sc = v->centroids_l2 ? 2 * s->cscore[l] - norm2[l] : s->cscore[l];
    if (np < nprobe || sc > s->pick[0].score) pick_offer(s->pick, &np, nprobe, (nib_pick){sc, l});
  }
  return np;
}

/* Collects the rows of the picked lists whose score could reach the k best:
 * approximate score + margin * its error's deviation at least the k-th best
 * approximate score - the same (the bar rises as rows come in; a last pass
 * drops the candidates that fell under it). Returns the candidates, or
 * (size_t)-1 without memory. */
static size_t nib_candidates(const FaissIVFFlatView *v, const ivf_nib *nib, const nib_query *nq,
                             size_t np, float margin, size_t k, size_t d, nib_scratch *s) {
  const float dev = margin / sqrtf(12);
  float rs[NIB_CHUNK], spread[NIB_CHUNK], upper[NIB_CHUNK];
  uint16_t above[NIB_CHUNK];
  size_t nc = 0, nl = 0;
  for (size_t p = 0; p < np; p++) {
    size_t l = s->pick[p].list;
    const nib_codes *c = nib->lists[l];
    const float *rows;
    const idx_t *ids;
    size_t n;
    faiss_IVFFlatView_list(v, l, &rows, &ids, &n);
    for (size_t r0 = 0; r0 < n; r0 += NIB_CHUNK) {
      size_t m = n - r0 < NIB_CHUNK ? n - r0 : NIB_CHUNK;
      nib_codes_scores(c, nq, r0, m, s->cscore[l] /* ~ q . centroid */, v->lists_l2, rs, spread);
      for (size_t i = 0; i < m; i++) upper[i] = rs[i] + dev * spread[i];
      /* the rows over the bar as it stands (without a branch a row: few are) */
      float bar = nl == k ? s->lower[0] : -INFINITY;
      size_t na = 0;
      for (size_t i = 0; i < m; i++) {
        above[na] = (uint16_t)i;
        na += upper[i] >= bar;
      }
      if (cand_reserve(s, nc + na) != 0) return (size_t)-1;
      for (size_t j = 0; j < na; j++) {
        size_t i = above[j];
        if (nl == k && upper[i] < s->lower[0]) continue; /* the bar rose */
        s->rows[nc] = rows + (r0 + i) * d;
        s->labels[nc] = ids[r0 + i];
        s->upper[nc++] = upper[i];
        float_heap_offer(s->lower, &nl, k, rs[i] - dev * spread[i]);
      }
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < nc; i++)
    if (nl < k || s->upper[i] >= s->lower[0]) {
      s->rows[kept] = s->rows[i];
      s->labels[kept++] = s->labels[i];
    }
  return kept;
}

/* One query: the picked lists' candidates scored exactly. */
static proto_status nib_query_one(const FaissIVFFlatView *v, const ivf_nib *nib, size_t d,
                                  const float *q, size_t nprobe, float margin, size_t k,
                                  nib_scratch *s, float *dist, int64_t *lab) {
  nib_query nq;
  nib_query_make(q, d, s->qi, &nq);
  size_t np = pick_lists(v, nib, &nq, nprobe, s);
  if (!lists_coded(v, nib, s->pick, np)) { /* the float rows of the same lists */
    for (size_t p = 0; p < np; p++) s->probe[p] = (int64_t)s->pick[p].list;
    return scan_probed(v, NULL, d, q, s->probe, np, s->lists, k, dist, lab);
  }
  size_t nc = nib_candidates(v, nib, &nq, np, margin, k, d, s);
  if (nc == (size_t)-1) return proto_fail(PROTO_ENOMEM, "out of memory");
  proto_status st = flat_scan_rows(s->rows, s->labels, nc, d, q, v->lists_l2, k, dist, lab);
  if (st == PROTO_OK && v->id_map) /* list ids are an IDMap's row numbers */
    for (size_t j = 0; j < k; j++)
      if (lab[j] >= 0) lab[j] = v->id_map[lab[j]];
  return st;
}

proto_status ivf_scan_nib(const FaissIVFFlatView *v, const ivf_nib *nib, size_t d, const float *q,
                          size_t nq, size_t nprobe, float margin, size_t k, float *dist,
                          int64_t *lab) {
  if (nq > FLAT_SCAN_MAX_QUERIES || nprobe == 0 || nprobe > v->nlist)
    return proto_fail(PROTO_EINVAL, "ivf_scan: %zu queries, nprobe %zu of %zu lists", nq, nprobe,
                      v->nlist);
  if (k == 0) return PROTO_OK;
  if (nib_codes_rows(nib->centroids) != v->nlist || nib_codes_wild(nib->centroids))
    return ivf_scan(v, NULL, d, q, nq, nprobe, k, dist, lab);
  nib_scratch s;
  proto_status st = PROTO_OK;
  if (nib_scratch_init(&s, v, d, nprobe, k) != 0) st = proto_fail(PROTO_ENOMEM, "out of memory");
  for (size_t i = 0; st == PROTO_OK && i < nq; i++)
    st = nib_query_one(v, nib, d, q + i * d, nprobe, margin, k, &s, dist + i * k, lab + i * k);
  nib_scratch_free(&s);
  return st;
}
