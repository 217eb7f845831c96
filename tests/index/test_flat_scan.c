/* test_flat_scan.c - flat_scan (index/flat_scan.c) against FAISS's own exact
 * IndexFlat search on the same random vectors: inner product and L2, with and
 * without an IDMap, dimensions that are and are not multiples of the vector
 * width, k below, equal to and above the number of vectors, and more hits
 * (queries x k) than the 1024 the scan keeps on the stack. */
#include "faiss_capi_ext.h"
#include "flat_scan.h"
#include "tap.h"

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/index_factory_c.h>

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

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
  if (ok && n) ok = (idmap ? faiss_Index_add_with_ids(ix, (idx_t)n, xb, ids)
                           : faiss_Index_add(ix, (idx_t)n, xb)) == 0;
  if (ok) ok = faiss_Index_search(ix, (idx_t)nq, q, (idx_t)k, d_ref, l_ref) == 0;
  const float *view;
  const idx_t *view_ids;
  size_t rows = 0;
  if (ok) ok = faiss_Index_flat_view(ix, &view, &view_ids, &rows) && rows == n &&
               (idmap ? view_ids != NULL || n == 0 : view_ids == NULL);
  if (ok) ok = flat_scan(view, view_ids, rows, d, q, nq, l2, k, d_got, l_got) == 0;
  if (ok) {
    /* Distances agree slot by slot; labels may differ only where FAISS's
     * scalar sums and ours round a near tie differently, so each label is
     * checked against its own distance, recomputed in double. */
    for (size_t i = 0; i < nq * k; i++) {
      if ((l_ref[i] < 0) != (l_got[i] < 0)) { ok = 0; continue; }
      if (l_got[i] < 0) { ok &= l2 ? d_got[i] == FLT_MAX : d_got[i] == -FLT_MAX; continue; }
      ok &= fabsf(d_ref[i] - d_got[i]) <= 1e-4f * (1.0f + fabsf(d_ref[i]));
      size_t row = idmap ? (size_t)(l_got[i] - 1000) / 3 : (size_t)l_got[i];
      const float *x = xb + row * d, *qq = q + (i / k) * d;
      double s = 0;
      for (size_t j = 0; j < d; j++)
        s += l2 ? ((double)x[j] - qq[j]) * ((double)x[j] - qq[j]) : (double)x[j] * qq[j];
      ok &= row < n && fabs(s - d_got[i]) <= 1e-4 * (1.0 + fabs(s));
    }
  }
  if (!ok)
    printf("# mismatch: n=%zu d=%zu nq=%zu k=%zu l2=%d idmap=%d\n", n, d, nq, k, l2, idmap);
  if (ix) faiss_Index_free(ix);
  free(xb); free(q); free(ids); free(d_ref); free(d_got); free(l_ref); free(l_got);
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
  CHECK(matches(5, 32, 3, 5, 0, 1));   /* k == n */
  CHECK(matches(5, 32, 3, 9, 0, 1));   /* k > n: -1 labels */
  CHECK(matches(5, 32, 2, 9, 1, 0));
  CHECK(matches(0, 32, 2, 4, 0, 1));   /* empty index */
  CHECK(matches(130, 24, 2, 130, 1, 1)); /* k > 64 and a partial last block */
}

TEST(too_many_queries) {
  float x[8] = {0}, dist[FLAT_SCAN_MAX_QUERIES + 1];
  int64_t lab[FLAT_SCAN_MAX_QUERIES + 1];
  float q[8 * (FLAT_SCAN_MAX_QUERIES + 1)] = {0};
  CHECK(flat_scan(x, NULL, 1, 8, q, FLAT_SCAN_MAX_QUERIES + 1, 0, 1, dist, lab) == -1);
  CHECK(flat_scan(x, NULL, 1, 8, q, FLAT_SCAN_MAX_QUERIES, 0, 1, dist, lab) == 0 && lab[0] == 0);
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

int main(void) {
  omp_set_num_threads(1);
  RUN(against_faiss);
  RUN(too_many_queries);
  RUN(not_flat);
  return tap_done();
}
