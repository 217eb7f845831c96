/* bench_idx.c - index benchmark: recall@10 against exact search, queries/s
 * and build (train + add + save) throughput for each factory string over N
 * clustered 384-d vectors held in a real store, next to the peer: plain FAISS
 * (IndexFlatIP, exact search) called through the same library. Not a test;
 * run by tests/bench/index/run.sh. Prints one line per configuration.
 *
 * usage: bench_idx DIR [N] [NQ] [factory ...]
 */
#include "idx.h"
#include "knn_util.h"
#include "store.h"

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>

#include <math.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

enum { DIM = 384, K = 10, CENTERS = 1000, CHUNKS_PER_DOC = 10 };

/* CPU seconds of this process (all threads): on a shared machine the wall
 * clock measures the neighbours' load as much as ours. */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* (n, DIM) unit vectors around CENTERS gaussian centres (noise 0.7 per dim
 * against centres of norm ~sqrt(DIM): overlapping clusters, a hard case). */
static void clustered(float *v, size_t n, const float *centers) {
  for (size_t i = 0; i < n; i++) {
    size_t c = (size_t)(rnd() * CENTERS);
    double norm = 0;
    for (size_t j = 0; j < DIM; j++) {
      float x = centers[c * DIM + j] + 0.7f * gauss();
      v[i * DIM + j] = x;
      norm += (double)x * x;
    }
    for (size_t j = 0; j < DIM; j++) v[i * DIM + j] /= (float)sqrt(norm);
  }
}

static proto_status fill_store(store *st, const float *vec, size_t n) {
  enum { DOCS_PER_TXN = 500 };
  static const int32_t tok[1] = {1};
  store_chunk_input *ch = calloc(DOCS_PER_TXN * CHUNKS_PER_DOC, sizeof *ch);
  store_doc_input docs[DOCS_PER_TXN];
  char ids[DOCS_PER_TXN][24];
  proto_status s = PROTO_OK;
  size_t ndocs = n / CHUNKS_PER_DOC;
  for (size_t d0 = 0; d0 < ndocs && s == PROTO_OK; d0 += DOCS_PER_TXN) {
    size_t nd = ndocs - d0 < DOCS_PER_TXN ? ndocs - d0 : DOCS_PER_TXN;
    for (size_t d = 0; d < nd; d++) {
      snprintf(ids[d], sizeof ids[d], "doc%zu", d0 + d);
      for (size_t c = 0; c < CHUNKS_PER_DOC; c++)
        ch[d * CHUNKS_PER_DOC + c] =
            (store_chunk_input){tok, 1, "x", 1, vec + ((d0 + d) * CHUNKS_PER_DOC + c) * DIM};
      docs[d] = (store_doc_input){ids[d], NULL, CHUNKS_PER_DOC, &ch[d * CHUNKS_PER_DOC], NULL};
    }
    s = store_upsert(st, docs, nd, DIM, NULL);
  }
  free(ch);
  return s;
}

/* Peer: plain FAISS exact inner-product search (IndexFlatIP) on the same
 * vectors, labels shifted to chunk ids. Returns single-query queries/s. */
static double peer(const float *vec, size_t n, const float *q, size_t nq, int64_t *truth,
                   double *batch_qps, double *cpu_qps) {
  FaissIndex *flat = NULL;
  float *d = malloc(nq * K * sizeof *d);
  if (faiss_index_factory(&flat, DIM, "Flat", METRIC_INNER_PRODUCT) ||
      faiss_Index_add(flat, (idx_t)n, vec)) {
    fprintf(stderr, "peer: %s\n", faiss_get_last_error());
    exit(1);
  }
  double t0 = proto_now(), c0 = cpu_now();
  for (size_t i = 0; i < nq; i++)
    faiss_Index_search(flat, 1, q + i * DIM, K, d + i * K, truth + i * K);
  double single = (double)nq / (proto_now() - t0);
  *cpu_qps = (double)nq / (cpu_now() - c0);
  t0 = proto_now();
  faiss_Index_search(flat, (idx_t)nq, q, K, d, truth);
  *batch_qps = (double)nq / (proto_now() - t0);
  for (size_t i = 0; i < nq * K; i++)
    if (truth[i] >= 0) truth[i] += 1; /* position -> chunk id */
  faiss_Index_free(flat);
  free(d);
  return single;
}

static void run(store *st, const char *dir, const char *factory, size_t n, const float *q,
                size_t nq, const int64_t *truth, double peer_qps, double peer_batch,
                double peer_cpu, const idx_search_params *variants, int nvariants) {
  char path[512], safe[128];
  size_t j = 0;
  for (const char *c = factory; *c && j + 1 < sizeof safe; c++) safe[j++] = *c == ',' ? '_' : *c;
  safe[j] = 0;
  snprintf(path, sizeof path, "%s/index-%s.faiss", dir, safe);
  remove(path);
  idx_options opt = {factory, IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0};
  idx *ix = NULL;
  double t0 = proto_now(), c0 = cpu_now();
  if (idx_open(path, st, &opt, &ix) != PROTO_OK) {
    printf("%-14s open failed: %s\n", factory, idx_last_error());
    return;
  }
  double build = proto_now() - t0, build_cpu = cpu_now() - c0;
  t0 = proto_now();
  c0 = cpu_now();
  idx_save(ix);
  double save = proto_now() - t0, save_cpu = cpu_now() - c0;
  int64_t *ids = malloc(nq * K * sizeof *ids);
  float *sc = malloc(nq * K * sizeof *sc);
  for (int v = 0; v < nvariants; v++) {
    const idx_search_params *p = &variants[v];
    t0 = proto_now();
    c0 = cpu_now();
    for (size_t i = 0; i < nq; i++)
      idx_search(ix, q + i * DIM, 1, K, p, NULL, NULL, sc + i * K, ids + i * K);
    double qps = (double)nq / (proto_now() - t0), cqps = (double)nq / (cpu_now() - c0);
    double r = recall_at(ids, truth, nq, K);
    t0 = proto_now();
    idx_search(ix, q, nq, K, p, NULL, NULL, sc, ids);
    double bqps = (double)nq / (proto_now() - t0);
    printf(
        "%-13s nprobe=%-3d ef=%-3d recall@10 %.3f | qps %7.1f (x%.2f peer) cpu-qps %7.1f "
        "(x%.2f) | batch qps %7.1f (x%.2f) | build %.1f s = %.0f vec/s, cpu %.1f s = %.0f "
        "vec/cpu-s (excl. save %.1f s)\n",
        factory, p->nprobe, p->ef_search, r, qps, qps / peer_qps, cqps, cqps / peer_cpu, bqps,
        bqps / peer_batch, build - save, (double)n / (build - save), build_cpu - save_cpu,
        (double)n / (build_cpu - save_cpu), save);
    fflush(stdout);
  }
  idx_close(ix);
  free(ids);
  free(sc);
  remove(path);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DIR [N] [NQ] [factory ...]\n", argv[0]);
    return 2;
  }
  const char *dir = argv[1];
  size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : 100000;
  size_t nq = argc > 3 ? strtoul(argv[3], NULL, 10) : 200;
  n -= n % CHUNKS_PER_DOC;
  float *centers = malloc((size_t)CENTERS * DIM * sizeof *centers);
  float *vec = malloc(n * DIM * sizeof *vec);
  float *q = malloc(nq * DIM * sizeof *q);
  int64_t *truth = malloc(nq * K * sizeof *truth);
  rng_state = 0x9E3779B97F4A7C15ULL; /* the seed of the recorded runs */
  for (size_t i = 0; i < (size_t)CENTERS * DIM; i++) centers[i] = gauss();
  clustered(vec, n, centers);
  clustered(q, nq, centers);

  store *st = NULL;
  if (store_open(dir, NULL, &st) != PROTO_OK) {
    fprintf(stderr, "store_open: %s\n", store_last_error());
    return 1;
  }
  store_stats stats;
  store_stats_get(st, &stats);
  if (stats.chunks == 0) {
    double t0 = proto_now();
    if (fill_store(st, vec, n) != PROTO_OK) {
      fprintf(stderr, "fill: %s\n", store_last_error());
      return 1;
    }
    printf("store: %zu vectors written in %.1f s\n", n, proto_now() - t0);
    fflush(stdout);
  } else if (stats.chunks != n) {
    fprintf(stderr, "%s holds %llu chunks, not %zu: use an empty DIR\n", dir,
            (unsigned long long)stats.chunks, n);
    return 1;
  }
  double peer_batch = 0, peer_cpu = 0;
  double peer_qps = peer(vec, n, q, nq, truth, &peer_batch, &peer_cpu);
  printf(
      "peer FAISS IndexFlatIP (exact) recall@10 1.000 | qps %7.1f cpu-qps %7.1f | batch qps %7.1f\n",
      peer_qps, peer_cpu, peer_batch);
  fflush(stdout);

  static const char *defaults[] = {"Flat", "IVF256,Flat", "IVF1024,Flat", "IVF256,PQ16",
                                   "HNSW32,Flat"};
  const char **factories = argc > 4 ? (const char **)argv + 4 : defaults;
  int nf = argc > 4 ? argc - 4 : (int)(sizeof defaults / sizeof *defaults);
  for (int f = 0; f < nf; f++) {
    idx_search_params v[3] = {{0, 0}, {0, 0}, {0, 0}};
    int nv = 1;
    if (strstr(factories[f], "IVF")) {
      v[1].nprobe = 8;
      v[2].nprobe = 64;
      nv = 3;
    } else if (strstr(factories[f], "HNSW")) {
      v[1].ef_search = 32;
      v[2].ef_search = 128;
      nv = 3;
    }
    run(st, dir, factories[f], n, q, nq, truth, peer_qps, peer_batch, peer_cpu, v, nv);
  }
  store_close(st);
  free(centers);
  free(vec);
  free(q);
  free(truth);
  return 0;
}
