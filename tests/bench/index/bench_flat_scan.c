/* bench_flat_scan.c - one query at a time against N d-dimensional vectors:
 * plain FAISS IndexFlatIP (the peer: Debian's scalar kernel for < 20
 * queries) against index/flat_scan.c, same vectors, same queries, one
 * thread; prints queries/s of each and the ratio.
 *   bench_flat_scan [N=5000] [D=32] [K=20] [QUERIES=2000] */
#include "faiss_capi_ext.h"
#include "flat_scan.h"

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 5000;
  size_t d = argc > 2 ? strtoul(argv[2], NULL, 10) : 32;
  size_t k = argc > 3 ? strtoul(argv[3], NULL, 10) : 20;
  size_t nq = argc > 4 ? strtoul(argv[4], NULL, 10) : 2000;
  omp_set_num_threads(1);
  float *xb = malloc(n * d * sizeof *xb), *q = malloc(nq * d * sizeof *q);
  float *dist = malloc(k * sizeof *dist);
  idx_t *lab = malloc(k * sizeof *lab), *row_ids = malloc(n * sizeof *row_ids);
  srand(1);
  for (size_t i = 0; i < n * d; i++) xb[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  for (size_t i = 0; i < nq * d; i++) q[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  for (size_t i = 0; i < n; i++) row_ids[i] = (idx_t)(i + 1);
  FaissIndex *ix = NULL;
  if (faiss_index_factory(&ix, (int)d, "IDMap,Flat", METRIC_INNER_PRODUCT) ||
      faiss_Index_add_with_ids(ix, (idx_t)n, xb, row_ids)) {
    fprintf(stderr, "faiss: %s\n", faiss_get_last_error());
    return 1;
  }
  const float *view;
  const idx_t *ids;
  size_t rows;
  if (!faiss_Index_flat_view(ix, &view, &ids, &rows)) return 1;
  double t0 = now();
  for (size_t i = 0; i < nq; i++) faiss_Index_search(ix, 1, q + i * d, (idx_t)k, dist, lab);
  double faiss_qps = (double)nq / (now() - t0);
  t0 = now();
  for (size_t i = 0; i < nq; i++) flat_scan(view, ids, rows, d, q + i * d, 1, 0, k, dist, lab);
  double ours_qps = (double)nq / (now() - t0);
  double gflops = ours_qps * 2.0 * (double)n * (double)d * 1e-9;
  printf("N=%zu d=%zu k=%zu: FAISS IndexFlatIP %.0f q/s | flat_scan %.0f q/s (%.1f GFLOP/s) | "
         "ratio %.2fx\n", n, d, k, faiss_qps, ours_qps, gflops, ours_qps / faiss_qps);
  faiss_Index_free(ix);
  free(xb); free(q); free(dist); free(lab); free(row_ids);
  return 0;
}
