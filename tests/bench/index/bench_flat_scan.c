/* bench_flat_scan.c - one query at a time against N d-dimensional vectors:
 * plain FAISS IndexFlatIP (the peer: Debian's scalar kernel for < 20
 * queries) against index/flat_scan.c, plain and with int8 codes
 * (flat_scan_coded), same vectors, same queries, one thread; prints
 * queries/s of each and the ratios to FAISS, and where the CPU has AVX-512
 * VNNI the coded scan with its AVX2 kernel too, the two taking turns in
 * ten slices of the queries (ratio VNNI / AVX2). Random vectors are
 * L2-normalised, as the encoder's are; the codes' bounds depend on the
 * data, and on random ones many rows stay candidates, so INDEX (a saved
 * flat FAISS index, e.g. a server's index.faiss) gives real vectors: N and
 * D are then its own, and the queries its rows, spread over it.
 *   bench_flat_scan [N=5000] [D=32] [K=20] [QUERIES=2000] [INDEX] */
#include "faiss_capi_ext.h"
#include "flat_scan.h"

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Seconds the coded scan takes over queries [from, to), one at a time. */
static double coded_time(const flat_codes *codes, const float *view, const idx_t *ids, size_t rows,
                         size_t d, const float *q, size_t from, size_t to, size_t k, float *dist,
                         idx_t *lab) {
  double t0 = now();
  for (size_t i = from; i < to; i++)
    flat_scan_coded(codes, view, ids, rows, d, q + i * d, 1, 0, k, dist, lab);
  return now() - t0;
}

/* Reads a FAISS index file, or a server's index.faiss: past idx.c's head
 * ("RETROIX1", watermark, blob length, dim, metric, factory length,
 * reserved; then the factory string) to the FAISS bytes. 0 or -1. */
static int read_saved(const char *path, FaissIndex **ix) {
  FILE *f = fopen(path, "rb");
  char head[40];
  uint32_t factory_len = 0;
  int rc = !f || fread(head, 1, sizeof head, f) != sizeof head;
  if (!rc && memcmp(head, "RETROIX1", 8) == 0) {
    memcpy(&factory_len, head + 32, 4);
    rc = fseek(f, (long)(sizeof head + factory_len), SEEK_SET);
  } else if (!rc) {
    rc = fseek(f, 0, SEEK_SET);
  }
  rc = rc || faiss_read_index(f, 0, ix);
  if (rc)
    fprintf(stderr, "bench_flat_scan: %s: %s\n", path, f ? faiss_get_last_error() : "cannot open");
  if (f) fclose(f);
  return rc ? -1 : 0;
}

static void normalise_rows(float *x, size_t n, size_t d) {
  for (size_t r = 0; r < n; r++) {
    float *v = x + r * d;
    double s = 0;
    for (size_t j = 0; j < d; j++) s += (double)v[j] * v[j];
    for (size_t j = 0; j < d; j++) v[j] = (float)(v[j] / sqrt(s));
  }
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 5000;
  size_t d = argc > 2 ? strtoul(argv[2], NULL, 10) : 32;
  size_t k = argc > 3 ? strtoul(argv[3], NULL, 10) : 20;
  size_t nq = argc > 4 ? strtoul(argv[4], NULL, 10) : 2000;
  const char *saved = argc > 5 ? argv[5] : NULL;
  omp_set_num_threads(1);
  FaissIndex *ix = NULL;
  float *xb = NULL, *q;
  idx_t *row_ids = NULL;
  if (saved) {
    if (read_saved(saved, &ix)) return 1;
    d = (size_t)faiss_Index_d(ix);
  } else {
    xb = malloc(n * d * sizeof *xb);
    row_ids = malloc(n * sizeof *row_ids);
    srand(1);
    for (size_t i = 0; i < n * d; i++) xb[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    normalise_rows(xb, n, d);
    for (size_t i = 0; i < n; i++) row_ids[i] = (idx_t)(i + 1);
    if (faiss_index_factory(&ix, (int)d, "IDMap,Flat", METRIC_INNER_PRODUCT) ||
        faiss_Index_add_with_ids(ix, (idx_t)n, xb, row_ids)) {
      fprintf(stderr, "faiss: %s\n", faiss_get_last_error());
      return 1;
    }
  }
  const float *view;
  const idx_t *ids;
  size_t rows;
  if (!faiss_Index_flat_view(ix, &view, &ids, &rows) || rows == 0) {
    fprintf(stderr, "bench_flat_scan: not a flat index, or an empty one\n");
    return 1;
  }
  n = rows;
  q = malloc(nq * d * sizeof *q);
  if (saved) /* rows of the index, spread over it */
    for (size_t i = 0; i < nq; i++) memcpy(q + i * d, view + i * n / nq * d, d * sizeof *q);
  else {
    for (size_t i = 0; i < nq * d; i++) q[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    normalise_rows(q, nq, d);
  }
  float *dist = malloc(k * sizeof *dist);
  idx_t *lab = malloc(k * sizeof *lab);
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
  /* the widest kernel and AVX2 take turns, so that a drift of the
   * machine's speed falls on both */
  int both = flat_codes_set_width(512) == 512 && d % 64 == 0;
  double wide_s = 0, avx2_s = 0;
  for (size_t slice = 0; slice < 10; slice++) {
    size_t from = nq * slice / 10, to = nq * (slice + 1) / 10;
    flat_codes_set_width(512);
    wide_s += coded_time(codes, view, ids, rows, d, q, from, to, k, dist, lab);
    if (!both) continue;
    flat_codes_set_width(256);
    avx2_s += coded_time(codes, view, ids, rows, d, q, from, to, k, dist, lab);
  }
  flat_codes_set_width(512);
  double wide_qps = (double)nq / wide_s;
  printf(
      "N=%zu d=%zu k=%zu: FAISS IndexFlatIP %.0f q/s | flat_scan %.0f q/s (%.1f GFLOP/s) "
      "%.2fx | coded %.0f q/s %.2fx (codes made in %.1f ms)",
      n, d, k, faiss_qps, ours_qps, gflops, ours_qps / faiss_qps, wide_qps, wide_qps / faiss_qps,
      code_ms);
  if (both)
    printf(" | coded, AVX2 kernel %.0f q/s: VNNI %.2fx", (double)nq / avx2_s, avx2_s / wide_s);
  printf("\n");
  flat_codes_free(codes);
  faiss_Index_free(ix);
  free(xb);
  free(q);
  free(dist);
  free(lab);
  free(row_ids);
  return 0;
}
