/* test_flat_scan.c - flat_scan (index/flat_scan.c) against FAISS's own exact
 * IndexFlat search on the same random vectors: inner product and L2, with and
 * without an IDMap, dimensions that are and are not multiples of the vector
 * width, k below, equal to and above the number of vectors, and more hits
 * (queries x k) than the 1024 the scan keeps on the stack; then
 * flat_scan_coded, flat_scan_lists and flat_scan_lists_coded against
 * flat_scan, which they must match bit for bit. */
#include "faiss_capi_ext.h"
#include "flat_scan.h"
#include "nib_codes.h"
#include "tap.h"

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/index_factory_c.h>

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static float frand(unsigned *s) {
  *s = *s * 1103515245u + 12345u;
  return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* One configuration: returns 1 when flat_scan matches FAISS exactly in labels
 * and to 1e-4 (relative) in distances. */
static int matches(size_t n, size_t d, size_t nq, size_t k, int l2, int idmap) {
  unsigned seed = (unsigned)(n * 131 + d * 17 + nq * 7 + k + (size_t)l2 * 3 + (size_t)idmap);
  float *xb = malloc((n ? n : 1) * d * sizeof *xb), *q = malloc(nq * d * sizeof *q);
  idx_t *ids = malloc((n ? n : 1) * sizeof *ids);
  float *d_ref = malloc(nq * k * sizeof *d_ref), *d_got = malloc(nq * k * sizeof *d_got);
  idx_t *l_ref = malloc(nq * k * sizeof *l_ref);
  int64_t *l_got = malloc(nq * k * sizeof *l_got);
  for (size_t i = 0; i < n * d; i++) xb[i] = frand(&seed);
  for (size_t i = 0; i < nq * d; i++) q[i] = frand(&seed);
  for (size_t i = 0; i < n; i++) ids[i] = (idx_t)(1000 + 3 * i);
  FaissIndex *ix = NULL;
  int ok = faiss_index_factory(&ix, (int)d, idmap ? "IDMap,Flat" : "Flat",
                               l2 ? METRIC_L2 : METRIC_INNER_PRODUCT) == 0;
  if (ok && n)
    ok = (idmap ? faiss_Index_add_with_ids(ix, (idx_t)n, xb, ids)
                : faiss_Index_add(ix, (idx_t)n, xb)) == 0;
  if (ok) ok = faiss_Index_search(ix, (idx_t)nq, q, (idx_t)k, d_ref, l_ref) == 0;
  const float *view;
  const idx_t *view_ids;
  size_t rows = 0;
  if (ok)
    ok = faiss_Index_flat_view(ix, &view, &view_ids, &rows) && rows == n &&
         (idmap ? view_ids != NULL || n == 0 : view_ids == NULL);
  if (ok) ok = flat_scan(view, view_ids, rows, d, q, nq, l2, k, d_got, l_got) == PROTO_OK;
  if (ok) {
    /* Distances agree slot by slot; labels may differ only where FAISS's
     * scalar sums and ours round a near tie differently, so each label is
     * checked against its own distance, recomputed in double. */
    for (size_t i = 0; i < nq * k; i++) {
      if ((l_ref[i] < 0) != (l_got[i] < 0)) {
        ok = 0;
        continue;
      }
      if (l_got[i] < 0) {
        ok &= l2 ? d_got[i] == FLT_MAX : d_got[i] == -FLT_MAX;
        continue;
      }
      ok &= fabsf(d_ref[i] - d_got[i]) <= 1e-4f * (1.0f + fabsf(d_ref[i]));
      size_t row = idmap ? (size_t)(l_got[i] - 1000) / 3 : (size_t)l_got[i];
      const float *x = xb + row * d, *qq = q + (i / k) * d;
      double s = 0;
      for (size_t j = 0; j < d; j++)
        s += l2 ? ((double)x[j] - qq[j]) * ((double)x[j] - qq[j]) : (double)x[j] * qq[j];
      ok &= row < n && fabs(s - d_got[i]) <= 1e-4 * (1.0 + fabs(s));
    }
  }
  if (!ok) printf("# mismatch: n=%zu d=%zu nq=%zu k=%zu l2=%d idmap=%d\n", n, d, nq, k, l2, idmap);
  if (ix) faiss_Index_free(ix);
  free(xb);
  free(q);
  free(ids);
  free(d_ref);
  free(d_got);
  free(l_ref);
  free(l_got);
  return ok;
}

TEST(against_faiss) {
  static const size_t dims[] = {1, 7, 8, 16, 32, 37, 256};
  for (int l2 = 0; l2 <= 1; l2++)
    for (int idmap = 0; idmap <= 1; idmap++)
      for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
        CHECK(matches(1000, dims[di], 1, 10, l2, idmap));
        CHECK(matches(1000, dims[di], FLAT_SCAN_MAX_QUERIES, 100, l2, idmap));
      }
  CHECK(matches(5, 32, 3, 5, 0, 1)); /* k == n */
  CHECK(matches(5, 32, 3, 9, 0, 1)); /* k > n: -1 labels */
  CHECK(matches(5, 32, 2, 9, 1, 0));
  CHECK(matches(0, 32, 2, 4, 0, 1));     /* empty index */
  CHECK(matches(130, 24, 2, 130, 1, 1)); /* k > 64 and a partial last block */
}

TEST(too_many_queries) {
  float x[8] = {0}, dist[FLAT_SCAN_MAX_QUERIES + 1];
  int64_t lab[FLAT_SCAN_MAX_QUERIES + 1];
  float q[8 * (FLAT_SCAN_MAX_QUERIES + 1)] = {0};
  CHECK(flat_scan(x, NULL, 1, 8, q, FLAT_SCAN_MAX_QUERIES + 1, 0, 1, dist, lab) == PROTO_EINVAL &&
        strstr(proto_err_get(), "at most 19") != NULL);
  CHECK(flat_scan(x, NULL, 1, 8, q, FLAT_SCAN_MAX_QUERIES, 0, 1, dist, lab) == PROTO_OK &&
        lab[0] == 0);
}

TEST(not_flat) {
  FaissIndex *ix = NULL;
  const float *view;
  const idx_t *ids;
  size_t n;
  CHECK(faiss_index_factory(&ix, 16, "IVF4,Flat", METRIC_INNER_PRODUCT) == 0);
  CHECK(faiss_Index_flat_view(ix, &view, &ids, &n) == 0);
  faiss_Index_free(ix);
  CHECK(faiss_index_factory(&ix, 16, "IDMap,HNSW8", METRIC_INNER_PRODUCT) == 0);
  CHECK(faiss_Index_flat_view(ix, &view, &ids, &n) == 0);
  faiss_Index_free(ix);
}

/* Rows of a few kinds: random, normalised, a few duplicated (ties), some
 * near-copies of the query (close scores), an all-zero row. */
static void coded_rows(float *xb, size_t n, size_t d, const float *q, unsigned *seed,
                       int normalise) {
  for (size_t r = 0; r < n; r++) {
    float *x = xb + r * d;
    int kind = (int)(r % 11);
    for (size_t j = 0; j < d; j++) x[j] = frand(seed);
    if (kind == 3 && r >= 11) memcpy(x, xb + (r - 11) * d, d * sizeof *x); /* tie */
    if (kind == 5)
      for (size_t j = 0; j < d; j++) x[j] = q[j] + 1e-3f * frand(seed); /* near q */
    if (r == n / 2) memset(x, 0, d * sizeof *x);
    if (normalise) {
      double s = 0;
      for (size_t j = 0; j < d; j++) s += (double)x[j] * x[j];
      for (size_t j = 0; s > 0 && j < d; j++) x[j] = (float)(x[j] / sqrt(s));
    }
  }
}

/* flat_scan_coded == flat_scan, scores and labels bit for bit. The codes are
 * built in pieces of uneven size to exercise append. */
static int coded_matches(size_t n, size_t d, size_t nq, size_t k, int l2, int with_ids,
                         int normalise) {
  unsigned seed = (unsigned)(n * 7 + d * 131 + nq + k * 3 + (size_t)l2 + (size_t)with_ids * 5);
  float *xb = malloc((n ? n : 1) * d * sizeof *xb), *q = malloc(nq * d * sizeof *q);
  int64_t *ids = malloc((n ? n : 1) * sizeof *ids), *l_ref = malloc(nq * k * sizeof *l_ref),
          *l_got = malloc(nq * k * sizeof *l_got);
  float *d_ref = malloc(nq * k * sizeof *d_ref), *d_got = malloc(nq * k * sizeof *d_got);
  for (size_t i = 0; i < nq * d; i++) q[i] = frand(&seed);
  coded_rows(xb, n, d, q, &seed, normalise);
  for (size_t i = 0; i < n; i++) ids[i] = (int64_t)(5 * n - 3 * i); /* labels against row order */
  flat_codes *c = NULL;
  int ok = flat_codes_new(d, &c) == PROTO_OK;
  for (size_t r = 0; ok && r < n;) {
    size_t step = 1 + (r * 7919) % 300;
    if (step > n - r) step = n - r;
    ok = flat_codes_append(c, xb + r * d, step) == PROTO_OK;
    r += step;
  }
  ok = ok && flat_codes_rows(c) == n;
  const int64_t *lab_ids = with_ids ? ids : NULL;
  ok = ok && flat_scan(xb, lab_ids, n, d, q, nq, l2, k, d_ref, l_ref) == PROTO_OK;
  ok = ok && flat_scan_coded(c, xb, lab_ids, n, d, q, nq, l2, k, d_got, l_got) == PROTO_OK;
  ok = ok && memcmp(d_ref, d_got, nq * k * sizeof *d_ref) == 0 &&
       memcmp(l_ref, l_got, nq * k * sizeof *l_ref) == 0;
  if (!ok)
    printf("# coded mismatch: n=%zu d=%zu nq=%zu k=%zu l2=%d ids=%d norm=%d\n", n, d, nq, k, l2,
           with_ids, normalise);
  flat_codes_free(c);
  free(xb);
  free(q);
  free(ids);
  free(l_ref);
  free(l_got);
  free(d_ref);
  free(d_got);
  return ok;
}

/* At every kernel width the CPU has: VNNI takes d = 64, 192, 256 (and
 * d = 1088, past the scratch kept on the stack), AVX2 every d. */
TEST(coded_equals_scan) {
  static const size_t dims[] = {1, 7, 8, 32, 37, 64, 192, 256};
  static const unsigned widths[] = {512, 256, 0};
  unsigned last = 1; /* no width */
  for (size_t w = 0; w < sizeof widths / sizeof *widths; w++) {
    unsigned in_force = flat_codes_set_width(widths[w]);
    if (in_force == last) continue; /* the wider kernel is not on this CPU */
    last = in_force;
    for (int l2 = 0; l2 <= 1; l2++)
      for (int with_ids = 0; with_ids <= 1; with_ids++)
        for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
          CHECK(coded_matches(3000, dims[di], 1, 10, l2, with_ids, 1));
          CHECK(coded_matches(1000, dims[di], 4, 100, l2, with_ids, 0));
        }
    CHECK(coded_matches(5, 32, 3, 9, 0, 1, 1));                         /* k > n */
    CHECK(coded_matches(0, 32, 2, 4, 0, 1, 1));                         /* empty */
    CHECK(coded_matches(130, 24, FLAT_SCAN_MAX_QUERIES, 130, 1, 1, 0)); /* k == n */
    CHECK(coded_matches(2000, 64, 2, 1, 0, 0, 1));                      /* k = 1 */
    CHECK(coded_matches(300, 1088, 2, 5, 0, 1, 0));                     /* d > stack */
  }
  flat_codes_set_width(512);
}

/* The integer kernels against the plain loop, at the extremes too: codes
 * of +-127 (rows of equal magnitudes) and queries at +-the bound. */
TEST(code_dots_every_width) {
  static const size_t dims[] = {37, 64, 256, 1088};
  enum { N = 203 }; /* not a multiple of the kernels' eight rows */
  for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
    const size_t d = dims[di];
    const int qmax = (int)fmin(32767.0, floor(2147483647.0 / (127.0 * (double)d)));
    float *x = malloc(N * d * sizeof *x);
    int16_t *qi = malloc(d * sizeof *qi);
    int32_t ref[N], got[N];
    unsigned seed = (unsigned)d;
    for (size_t i = 0; i < N * d; i++) x[i] = frand(&seed);
    for (size_t j = 0; j < d; j++) { /* rows 0 and 1: codes of +-127 only */
      x[j] = j % 3 ? 1.0f : -1.0f;
      x[d + j] = -x[j];
    }
    flat_codes *c = NULL;
    CHECK(flat_codes_new(d, &c) == PROTO_OK && flat_codes_append(c, x, N) == PROTO_OK);
    for (int trial = 0; c && trial < 3; trial++) {
      for (size_t j = 0; j < d; j++)
        qi[j] = (int16_t)(trial == 0   ? (j % 3 ? qmax : -qmax) /* the extremes, row 0's signs */
                          : trial == 1 ? -qmax + (int)((j * 7919) % (2 * (size_t)qmax + 1))
                                       : (int)(frand(&seed) * (float)qmax));
      flat_codes_set_width(0);
      CHECK(flat_codes_dots(c, qi, 0, N, ref) == 0);
      if (trial == 0) CHECK(ref[0] == 127 * qmax * (int32_t)d && ref[1] == -ref[0]);
      static const unsigned widths[] = {256, 512};
      for (size_t w = 0; w < 2; w++) {
        flat_codes_set_width(widths[w]);
        memset(got, 0, sizeof got);
        CHECK(flat_codes_dots(c, qi, 0, N, got) == 0 && memcmp(ref, got, sizeof ref) == 0);
        CHECK(flat_codes_dots(c, qi, 5, N - 5, got) == 0 && memcmp(ref + 5, got, (N - 5) * 4) == 0);
      }
    }
    flat_codes_set_width(512);
    CHECK(!c || flat_codes_dots(c, qi, 1, N, got) == -1); /* past the rows */
    flat_codes_free(c);
    free(x);
    free(qi);
  }
}

/* All rows equal: every row is a candidate, and ties go to the lower labels. */
TEST(coded_all_ties) {
  enum { N = 700, D = 16, K = 5 };
  float *xb = malloc(N * D * sizeof *xb), q[D], d_ref[K], d_got[K];
  int64_t ids[N], l_ref[K], l_got[K];
  for (size_t i = 0; i < N * D; i++) xb[i] = 0.25f;
  for (size_t j = 0; j < D; j++) q[j] = 1.0f - (float)j / D;
  for (size_t i = 0; i < N; i++) ids[i] = (int64_t)(N - i);
  flat_codes *c = NULL;
  CHECK(flat_codes_new(D, &c) == PROTO_OK && flat_codes_append(c, xb, N) == PROTO_OK);
  CHECK(flat_scan(xb, ids, N, D, q, 1, 0, K, d_ref, l_ref) == PROTO_OK);
  CHECK(flat_scan_coded(c, xb, ids, N, D, q, 1, 0, K, d_got, l_got) == PROTO_OK);
  CHECK(memcmp(l_ref, l_got, sizeof l_ref) == 0 && memcmp(d_ref, d_got, sizeof d_ref) == 0);
  CHECK(l_got[0] == 1 && l_got[K - 1] == K);
  flat_codes_free(c);
  free(xb);
}

/* Cases without a bound take the plain scan: a row that is not finite, a
 * zero query, codes of another size. */
TEST(coded_fallbacks) {
  enum { N = 300, D = 8, K = 4 };
  float xb[N * D], q[D] = {0}, d_ref[K], d_got[K];
  int64_t l_ref[K], l_got[K];
  unsigned seed = 7;
  for (size_t i = 0; i < N * D; i++) xb[i] = frand(&seed);
  flat_codes *c = NULL;
  CHECK(flat_codes_new(D, &c) == PROTO_OK && flat_codes_append(c, xb, N) == PROTO_OK);
  CHECK(flat_scan(xb, NULL, N, D, q, 1, 0, K, d_ref, l_ref) == PROTO_OK); /* zero query */
  CHECK(flat_scan_coded(c, xb, NULL, N, D, q, 1, 0, K, d_got, l_got) == PROTO_OK);
  CHECK(memcmp(l_ref, l_got, sizeof l_ref) == 0 && memcmp(d_ref, d_got, sizeof d_ref) == 0);
  for (size_t j = 0; j < D; j++) q[j] = frand(&seed);
  CHECK(flat_scan(xb, NULL, N - 1, D, q, 1, 1, K, d_ref, l_ref) == PROTO_OK); /* size differs */
  CHECK(flat_scan_coded(c, xb, NULL, N - 1, D, q, 1, 1, K, d_got, l_got) == PROTO_OK);
  CHECK(memcmp(l_ref, l_got, sizeof l_ref) == 0 && memcmp(d_ref, d_got, sizeof d_ref) == 0);
  flat_codes_clear(c);
  CHECK(flat_codes_rows(c) == 0);
  xb[17] = INFINITY;
  CHECK(flat_codes_append(c, xb, N) == PROTO_OK && flat_codes_rows(c) == N);
  CHECK(flat_scan(xb, NULL, N, D, q, 1, 0, K, d_ref, l_ref) == PROTO_OK);
  CHECK(flat_scan_coded(c, xb, NULL, N, D, q, 1, 0, K, d_got, l_got) == PROTO_OK);
  CHECK(memcmp(l_ref, l_got, sizeof l_ref) == 0 && memcmp(d_ref, d_got, sizeof d_ref) == 0);
  flat_codes_free(c);
  CHECK(flat_codes_new(0, &c) == PROTO_EINVAL && c == NULL);
  flat_codes_free(NULL);
}

/* flat_scan_lists over a matrix cut into lists (of uneven sizes, some
 * empty, ids per list) equals flat_scan over the whole matrix bit for bit:
 * the same scores, the same hits, ties broken by label alike; and so does
 * flat_scan_lists_coded with each list's int8 codes. */
static int lists_match(size_t n, size_t d, size_t k, int l2) {
  enum { CUTS = 7 };
  unsigned seed = (unsigned)(n * 31 + d * 7 + k + (size_t)l2);
  float *xb = malloc(n * d * sizeof *xb), *q = malloc(d * sizeof *q);
  int64_t *ids = malloc(n * sizeof *ids), *la = malloc(k * sizeof *la),
          *lb = malloc(k * sizeof *lb);
  float *da = malloc(k * sizeof *da), *db = malloc(k * sizeof *db);
  for (size_t i = 0; i < n * d; i++) xb[i] = frand(&seed);
  for (size_t i = 0; i < n; i++) ids[i] = (int64_t)(n - i) * 3; /* not the row numbers */
  for (size_t j = 0; j < d; j++) q[j] = frand(&seed);
  for (size_t i = n / 2; i < n / 2 + 8 && i < n; i++) /* ties across lists */
    memcpy(xb + i * d, xb, d * sizeof *xb);
  flat_list lists[CUTS], coded[CUTS];
  flat_codes *codes[CUTS] = {0};
  size_t at = 0;
  int ok = 1;
  for (int c = 0; c < CUTS; c++) { /* sizes n/4, 0, n/3, ... and the rest */
    size_t len = c == CUTS - 1 ? n - at : c % 2 ? 0 : (n - at) / 3;
    lists[c] = (flat_list){xb + at * d, ids + at, len, NULL};
    ok &= flat_codes_new(d, &codes[c]) == PROTO_OK &&
          flat_codes_append(codes[c], xb + at * d, len) == PROTO_OK;
    coded[c] = (flat_list){xb + at * d, ids + at, len, codes[c]};
    at += len;
  }
  ok &= flat_scan(xb, ids, n, d, q, 1, l2, k, da, la) == PROTO_OK &&
        flat_scan_lists(lists, CUTS, d, q, l2, k, db, lb) == PROTO_OK &&
        memcmp(la, lb, k * sizeof *la) == 0 && memcmp(da, db, k * sizeof *da) == 0;
  if (!ok) printf("# lists differ: n %zu d %zu k %zu l2 %d\n", n, d, k, l2);
  int coded_ok = flat_scan_lists_coded(coded, CUTS, d, q, l2, k, db, lb) == PROTO_OK &&
                 memcmp(la, lb, k * sizeof *la) == 0 && memcmp(da, db, k * sizeof *da) == 0;
  if (!coded_ok) printf("# coded lists differ: n %zu d %zu k %zu l2 %d\n", n, d, k, l2);
  for (int c = 0; c < CUTS; c++) flat_codes_free(codes[c]);
  ok &= coded_ok;
  free(xb);
  free(q);
  free(ids);
  free(la);
  free(lb);
  free(da);
  free(db);
  return ok;
}

TEST(lists_equal_scan) {
  CHECK(lists_match(1000, 32, 10, 0));
  CHECK(lists_match(1000, 32, 10, 1));
  CHECK(lists_match(777, 19, 50, 0));
  CHECK(lists_match(300, 64, 400, 1));   /* k past the rows: empty slots alike */
  CHECK(lists_match(3000, 16, 1500, 0)); /* a heap beyond the stack's 1024 */
}

/* flat_codes_keep drops rows as IndexFlat::remove_ids does: what is left
 * equals codes made from the kept rows, wild rows included. */
TEST(coded_keep) {
  enum { N = 500, D = 32, K = 10 };
  static float xb[N * D], kept[N * D];
  uint8_t keep[N];
  float q[D], d_ref[K], d_got[K];
  int64_t l_ref[K], l_got[K];
  unsigned seed = 99;
  for (size_t i = 0; i < N * D; i++) xb[i] = frand(&seed);
  for (size_t j = 0; j < D; j++) q[j] = frand(&seed);
  xb[7 * D + 3] = NAN; /* row 7: wild */
  flat_codes *c = NULL;
  CHECK(flat_codes_new(D, &c) == PROTO_OK && flat_codes_append(c, xb, N) == PROTO_OK);
  CHECK(flat_codes_row_matches(c, 7, xb + 7 * D) && !flat_codes_row_matches(c, 8, xb + 7 * D));
  size_t n = 0;
  for (size_t r = 0; r < N; r++) {
    keep[r] = r != 7 && (r * 7919) % 5 != 0;
    if (keep[r]) memcpy(kept + n++ * D, xb + r * D, D * sizeof *xb);
  }
  CHECK(flat_codes_keep(c, keep) == n && flat_codes_rows(c) == n);
  int all = 1;
  for (size_t r = 0; r < n; r++) all &= flat_codes_row_matches(c, r, kept + r * D);
  CHECK(all);
  CHECK(flat_scan(kept, NULL, n, D, q, 1, 0, K, d_ref, l_ref) == PROTO_OK);
  CHECK(flat_scan_coded(c, kept, NULL, n, D, q, 1, 0, K, d_got, l_got) == PROTO_OK);
  CHECK(memcmp(l_ref, l_got, sizeof l_ref) == 0 && memcmp(d_ref, d_got, sizeof d_ref) == 0);
  flat_codes_free(c);
}

/* flat_scan_rows over rows given by pointer equals flat_scan over the same
 * rows as a matrix, labels passed through. */
TEST(rows_equal_scan) {
  enum { N = 300, D = 40, K = 10 };
  static float xb[N * D];
  const float *rows[N];
  int64_t labels[N], l_ref[K], l_got[K];
  float q[D], d_ref[K], d_got[K];
  unsigned seed = 5;
  for (size_t i = 0; i < N * D; i++) xb[i] = frand(&seed);
  for (size_t j = 0; j < D; j++) q[j] = frand(&seed);
  for (size_t r = 0; r < N; r++) {
    rows[r] = xb + r * D;
    labels[r] = (int64_t)r;
  }
  for (int l2 = 0; l2 <= 1; l2++) {
    CHECK(flat_scan(xb, NULL, N, D, q, 1, l2, K, d_ref, l_ref) == PROTO_OK);
    CHECK(flat_scan_rows(rows, labels, N, D, q, l2, K, d_got, l_got) == PROTO_OK);
    CHECK(memcmp(l_ref, l_got, sizeof l_ref) == 0 && memcmp(d_ref, d_got, sizeof d_ref) == 0);
  }
  CHECK(flat_scan_rows(rows, labels, 3, D, q, 0, K, d_got, l_got) == PROTO_OK);
  CHECK(l_got[2] >= 0 && l_got[3] == -1 && d_got[3] == -FLT_MAX);
}

/* 4-bit codes: every kernel width gives the same scores (integer sums), and
 * each score is within the worst-case error nib_codes.h states of the exact
 * q . x (residuals from a centre, odd d, a wild row). */
TEST(nib_codes) {
  enum { N = 203, D = 200 };
  static float xb[N * D], centre[D], got[3][N], spread[N];
  float q[D];
  int8_t qi[256];
  unsigned seed = 17;
  for (size_t j = 0; j < D; j++) centre[j] = frand(&seed);
  for (size_t i = 0; i < N * D; i++) xb[i] = centre[i % D] + 0.3f * frand(&seed);
  for (size_t j = 0; j < D; j++) q[j] = frand(&seed);
  xb[11 * D + 5] = INFINITY; /* row 11: wild */
  nib_codes *c = NULL;
  CHECK(nib_query_len(D) == 256 && nib_query_len(256) == 256 && nib_query_len(257) == 384);
  CHECK(nib_codes_new(D, &c) == PROTO_OK && nib_codes_append(c, xb, 100, centre) == PROTO_OK &&
        nib_codes_append(c, xb + 100 * D, N - 100, centre) == PROTO_OK);
  if (!c) return;
  CHECK(nib_codes_rows(c) == N && nib_codes_wild(c) == 1);
  nib_query nq;
  nib_query_make(q, D, qi, &nq);
  double qc = 0, qerr = 0;
  for (size_t j = 0; j < D; j++) {
    qc += (double)q[j] * centre[j];
    qerr += fabs((double)q[j] - (double)nq.step * qi[j]);
  }
  unsigned widths[] = {512, 256, 0};
  for (int w = 0; w < 3; w++) {
    nib_codes_set_width(widths[w]);
    nib_codes_scores(c, &nq, 0, N, (float)qc, 0, got[w], spread);
  }
  nib_codes_set_width(512);
  /* with l2: twice the inner product less ||x||^2, and twice the spread */
  static float l2[N], l2_spread[N];
  nib_codes_scores(c, &nq, 0, N, (float)qc, 1, l2, l2_spread);
  int l2_ok = 1;
  for (size_t r = 0; r < N; r++) {
    if (r == 11) continue;
    double x2 = 0;
    for (size_t j = 0; j < D; j++) x2 += (double)xb[r * D + j] * xb[r * D + j];
    l2_ok &=
        fabs(l2[r] - (2.0 * got[0][r] - x2)) <= 1e-4 * (1 + x2) && l2_spread[r] == 2 * spread[r];
  }
  CHECK(l2_ok);
  CHECK(memcmp(got[0], got[1], sizeof got[0]) == 0 && memcmp(got[0], got[2], sizeof got[0]) == 0);
  int within = 1, wild_inf = isinf(got[0][11]) && got[0][11] > 0;
  double err_sum = 0, dev_sum = 0;
  for (size_t r = 0; r < N; r++) {
    if (r == 11) continue;
    double s = 0, rmax = 0;
    for (size_t j = 0; j < D; j++) {
      s += (double)q[j] * xb[r * D + j];
      rmax = fmax(rmax, fabs((double)xb[r * D + j] - centre[j]));
    }
    /* the row's rounding (spread sqrt(D) / 2) and the query's (at most
     * half a step per value against residuals of at most rmax), plus
     * float sums */
    double bound = spread[r] * sqrt((double)D) / 2 + qerr * 2 * rmax + 1e-4;
    within &= fabs(got[0][r] - s) <= bound;
    err_sum += fabs(got[0][r] - s);
    dev_sum += spread[r] / sqrt(12.0);
  }
  CHECK(within && wild_inf);
  /* the stated deviation holds on average (a mean |error| of ~0.8 of it) */
  CHECKF(err_sum < dev_sum, "mean error %g, deviation %g", err_sum / (N - 1), dev_sum / (N - 1));
  nib_codes_clear(c);
  CHECK(nib_codes_rows(c) == 0 && nib_codes_wild(c) == 0);
  nib_codes_free(c);
}

int main(void) {
  omp_set_num_threads(1);
  RUN(against_faiss);
  RUN(too_many_queries);
  RUN(not_flat);
  RUN(code_dots_every_width);
  RUN(coded_equals_scan);
  RUN(coded_all_ties);
  RUN(coded_fallbacks);
  RUN(coded_keep);
  RUN(rows_equal_scan);
  RUN(nib_codes);
  RUN(lists_equal_scan);
  return tap_done();
}
