/* bench_flat_scan.c - one query at a time against N d-dimensional vectors:
 * plain FAISS IndexFlatIP (the peer: Debian's scalar kernel for < 20
 * queries) against index/flat_scan.c, plain and with int8 codes
 * (flat_scan_coded), same vectors, same queries, one thread; prints
 * queries/s of each and the ratios to FAISS. Vectors are L2-normalised, as
 * the encoder's are (the codes' bounds depend on the data).
 *   bench_flat_scan [N=5000] [D=32] [K=20] [QUERIES=2000] */
#include "faiss_capi_ext.h"
#include "flat_scan.h"

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>

#include <math.h>
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
  for (size_t r = 0; r < n + nq; r++) { /* rows of xb, then of q */
    float *v = r < n ? xb + r * d : q + (r - n) * d;
    double s = 0;
    for (size_t j = 0; j < d; j++) s += (double)v[j] * v[j];
    for (size_t j = 0; j < d; j++) v[j] = (float)(v[j] / sqrt(s));
  }
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
  flat_codes *codes = NULL;
  t0 = now();
  if (flat_codes_new(d, &codes) || flat_codes_append(codes, view, rows)) return 1;
  double code_ms = (now() - t0) * 1e3;
  t0 = now();
  for (size_t i = 0; i < nq; i++)
    flat_scan_coded(codes, view, ids, rows, d, q + i * d, 1, 0, k, dist, lab);
  double coded_qps = (double)nq / (now() - t0);
  printf(
      "N=%zu d=%zu k=%zu: FAISS IndexFlatIP %.0f q/s | flat_scan %.0f q/s (%.1f GFLOP/s) "
      "%.2fx | coded %.0f q/s %.2fx (codes made in %.1f ms)\n",
      n, d, k, faiss_qps, ours_qps, gflops, ours_qps / faiss_qps, coded_qps, coded_qps / faiss_qps,
      code_ms);
  flat_codes_free(codes);
  faiss_Index_free(ix);
  free(xb);
  free(q);
  free(dist);
  free(lab);
  free(row_ids);
  return 0;
}
