/* test_idx.c - TAP tests of index/idx.h over a real store in a temp dir.
 *
 * Covers: each listed factory string (Flat, HNSW32,Flat, IVF256,Flat,
 * IVF256,PQ16) builds, searches with recall against brute force, saves,
 * loads with identical results; deleted (and replaced) chunks are never
 * returned, after sync, after save/load and after a reload without save;
 * a truncated or garbage index file is rebuilt with results equal to the
 * original; the filter callback; L2 and IP; pending vectors before IVF
 * training; HNSW's dead-id rebuild; the default factory and its upgrade
 * to IVF as the corpus grows; bad input; a
 * flat index's int8 codes kept in step (same results as without them);
 * idx.c's own scan of IVF lists against FAISS's IVF search and against
 * Flat, and under concurrent syncs; the automatic IVF's recall at the
 * default nprobe through upserts and deletes.
 * Vectors are clustered, 32-d, from a fixed-seed generator.
 */
#include "faiss_capi_ext.h"
#include "flat_scan.h"
#include "idx.h"
#include "ivf_scan.h"
#include "knn_util.h"
#include "store.h"
#include "store_fixture.h"
#include "tap.h"

#include <cblas.h>
#include <faiss/c_api/index_factory_c.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { DIM = 32, N_BIG = 10000, CHUNKS_PER_DOC = 10, K = 10, NQ = 50 };

/* n clustered vectors (n x DIM), L2-normalised when normalise. */
static float *make_vectors(size_t n, int normalise, uint64_t seed) {
  enum { CENTERS = 40 };
  rng_state = seed;
  float *c = malloc(CENTERS * DIM * sizeof *c);
  float *v = malloc(n * DIM * sizeof *v);
  for (size_t i = 0; i < CENTERS * DIM; i++) c[i] = gauss();
  for (size_t i = 0; i < n; i++) {
    size_t ci = (size_t)(rnd() * CENTERS);
    double norm = 0;
    for (size_t j = 0; j < DIM; j++) {
      v[i * DIM + j] = c[ci * DIM + j] + 0.5f * gauss();
      norm += (double)v[i * DIM + j] * v[i * DIM + j];
    }
    if (normalise)
      for (size_t j = 0; j < DIM; j++) v[i * DIM + j] /= (float)sqrt(norm);
  }
  free(c);
  return v;
}

static void fx_open(fixture *f) { fx_open_in(f, "idx", "index.faiss"); }

/* Adds vectors as documents "<prefix><i>" of CHUNKS_PER_DOC chunks each; the
 * chunk ids of a fresh store are 1..n in order. */
static proto_status add_docs(store *st, const char *prefix, const float *vec, size_t n) {
  enum { DOCS_PER_TXN = 200 };
  static const int32_t tok[1] = {7};
  store_chunk_input ch[DOCS_PER_TXN * CHUNKS_PER_DOC];
  store_doc_input docs[DOCS_PER_TXN];
  char ids[DOCS_PER_TXN][32];
  size_t ndocs = n / CHUNKS_PER_DOC;
  for (size_t d0 = 0; d0 < ndocs; d0 += DOCS_PER_TXN) {
    size_t nd = ndocs - d0 < DOCS_PER_TXN ? ndocs - d0 : DOCS_PER_TXN;
    for (size_t d = 0; d < nd; d++) {
      snprintf(ids[d], sizeof ids[d], "%s%zu", prefix, d0 + d);
      for (size_t c = 0; c < CHUNKS_PER_DOC; c++) {
        store_chunk_input *x = &ch[d * CHUNKS_PER_DOC + c];
        x->tokens = tok;
        x->n_tokens = 1;
        x->text = "x";
        x->text_len = 1;
        x->vector = vec + ((d0 + d) * CHUNKS_PER_DOC + c) * DIM;
      }
      docs[d] = (store_doc_input){ids[d], NULL, CHUNKS_PER_DOC, &ch[d * CHUNKS_PER_DOC], NULL};
    }
    proto_status s = store_upsert(st, docs, nd, DIM, NULL);
    if (s != PROTO_OK) return s;
  }
  return PROTO_OK;
}

/* Brute force top-K ids of query q over vec[0..n) (ids = position + 1). */
static void exact(const float *vec, size_t n, const float *q, int l2, int64_t *out) {
  float best[K];
  for (int j = 0; j < K; j++) {
    best[j] = l2 ? INFINITY : -INFINITY;
    out[j] = -1;
  }
  for (size_t i = 0; i < n; i++) {
    float s = 0;
    for (size_t j = 0; j < DIM; j++) {
      float a = vec[i * DIM + j], b = q[j];
      s += l2 ? (a - b) * (a - b) : a * b;
    }
    int pos = K;
    while (pos > 0 && (l2 ? s < best[pos - 1] : s > best[pos - 1])) pos--;
    if (pos == K) continue;
    for (int j = K - 1; j > pos; j--) {
      best[j] = best[j - 1];
      out[j] = out[j - 1];
    }
    best[pos] = s;
    out[pos] = (int64_t)i + 1;
  }
}

static int same_ids(const int64_t *a, const int64_t *b, size_t n) {
  return memcmp(a, b, n * sizeof *a) == 0;
}

/* Whether the K results in ids are all there (none -1), none in [lo, hi]. */
static int all_outside(const int64_t *ids, int64_t lo, int64_t hi) {
  for (int j = 0; j < K; j++)
    if (ids[j] < 0 || (ids[j] >= lo && ids[j] <= hi)) return 0;
  return 1;
}

static void damage(const char *path, int garbage) {
  FILE *f = fopen(path, "r+b");
  if (!f) return;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fclose(f);
  if (!garbage) {
    if (truncate(path, size / 2) != 0) perror("truncate");
    return;
  }
  f = fopen(path, "wb");
  for (long i = 0; i < size; i++) fputc((int)(rnd() * 256), f);
  fclose(f);
}

static int reject_even(void *ctx, int64_t id) {
  (*(int *)ctx)++;
  return id % 2 != 0;
}

/* One factory end to end. min_recall: recall@K against brute force;
 * damages: 1 = a torn file, 2 = a torn then a garbage file (PQ training is
 * slow on 2-d sub-vectors, so IVF256,PQ16 rebuilds once). */
static void check_factory(const char *factory, double min_recall, int damages) {
  fixture f;
  idx *ix = NULL;
  idx_info info;
  float *vec = make_vectors(N_BIG, 1, 42);
  int64_t truth[NQ * K], ids[NQ * K], ids2[NQ * K];
  float scores[NQ * K];
  printf("# factory %s\n", factory);
  fx_open(&f);
  CHECK(add_docs(f.st, "d", vec, N_BIG) == PROTO_OK);
  idx_options opt = {factory, IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0};
  double t0 = proto_now();
  proto_status s = idx_open(f.path, f.st, &opt, &ix);
  CHECKF(s == PROTO_OK, "idx_open: %s", idx_last_error());
  if (s != PROTO_OK) goto leave;
  printf("# built in %.2f s\n", proto_now() - t0);
  CHECK(idx_info_get(ix, &info) == PROTO_OK);
  CHECKF(info.ntotal == N_BIG && info.trained && info.pending == 0,
         "ntotal %llu trained %d pending %llu", (unsigned long long)info.ntotal, info.trained,
         (unsigned long long)info.pending);
  CHECK(strcmp(info.factory, factory) == 0);
  CHECK(access(f.path, F_OK) == 0); /* built from the store at open: saved */

  /* queries: stored vectors 0, 200, 400, ... */
  float q[NQ * DIM];
  for (size_t i = 0; i < NQ; i++) {
    memcpy(q + i * DIM, vec + i * 200 * DIM, DIM * sizeof(float));
    exact(vec, N_BIG, q + i * DIM, 0, truth + i * K);
  }
  CHECK(idx_search(ix, q, NQ, K, NULL, NULL, NULL, scores, ids) == PROTO_OK);
  double r = recall_at(ids, truth, NQ, K);
  CHECKF(r >= min_recall, "recall@10 %.3f < %.3f", r, min_recall);
  printf("# recall@10 %.3f\n", r);
  int sorted = 1;
  for (size_t i = 0; i < NQ; i++)
    for (int j = 1; j < K; j++)
      if (ids[i * K + j] >= 0 && scores[i * K + j] > scores[i * K + j - 1] + 1e-5f) sorted = 0;
  CHECK(sorted);

  /* per-query parameters move an approximate search's recall */
  idx_search_params wide = {256, 512}, narrow = {1, 1};
  CHECK(idx_search(ix, q, NQ, K, &wide, NULL, NULL, scores, ids2) == PROTO_OK);
  double r_wide = recall_at(ids2, truth, NQ, K);
  CHECK(idx_search(ix, q, NQ, K, &narrow, NULL, NULL, scores, ids2) == PROTO_OK);
  double r_narrow = recall_at(ids2, truth, NQ, K);
  printf("# recall@10 narrow %.3f wide %.3f\n", r_narrow, r_wide);
  CHECK(r_wide >= r - 0.02 && r_wide >= r_narrow);
  if (strncmp(factory, "IVF", 3) == 0 || strncmp(factory, "HNSW", 4) == 0)
    CHECKF(r_narrow < r_wide, "nprobe/efSearch had no effect (%.3f, %.3f)", r_narrow, r_wide);
  CHECK(idx_search(ix, q, NQ, K, NULL, NULL, NULL, scores, ids2) == PROTO_OK);
  CHECK(same_ids(ids, ids2, NQ * K)); /* back at the defaults */

  /* save, load: same results */
  CHECK(idx_save(ix) == PROTO_OK);
  idx_close(ix);
  ix = NULL;
  s = idx_open(f.path, f.st, &opt, &ix);
  CHECKF(s == PROTO_OK, "reopen: %s", idx_last_error());
  if (s != PROTO_OK) goto leave;
  CHECK(idx_search(ix, q, NQ, K, NULL, NULL, NULL, scores, ids2) == PROTO_OK);
  CHECK(same_ids(ids, ids2, NQ * K));

  /* torn and garbage files: rebuilt, same results */
  for (int garbage = 0; garbage < damages; garbage++) {
    idx_close(ix);
    ix = NULL;
    damage(f.path, garbage);
    s = idx_open(f.path, f.st, &opt, &ix);
    CHECKF(s == PROTO_OK, "open damaged (%s): %s", garbage ? "garbage" : "torn", idx_last_error());
    if (s != PROTO_OK) goto leave;
    CHECK(idx_search(ix, q, NQ, K, NULL, NULL, NULL, scores, ids2) == PROTO_OK);
    CHECKF(same_ids(ids, ids2, NQ * K), "%s file: rebuilt results differ (recall %.3f)",
           garbage ? "garbage" : "torn", recall_at(ids2, ids, NQ, K));
  }

  /* filter: only odd ids, still K of them */
  int calls = 0;
  CHECK(idx_search(ix, q, NQ, K, NULL, reject_even, &calls, scores, ids2) == PROTO_OK);
  int odd = 1, full = 1;
  for (size_t i = 0; i < NQ * K; i++) {
    if (ids2[i] < 0) full = 0;
    else if (ids2[i] % 2 == 0) odd = 0;
  }
  CHECK(odd && full && calls > 0);

  /* delete documents 0..19 (chunk ids 1..200): never returned */
  for (int d = 0; d < 20; d++) {
    char id[16];
    int found = 0;
    snprintf(id, sizeof id, "d%d", d);
    CHECK(store_delete(f.st, id, &found) == PROTO_OK && found);
  }
  CHECK(idx_sync(ix) == PROTO_OK);
  for (int round = 0; round < 3; round++) {
    /* query the deleted vectors themselves */
    float dq[20 * DIM];
    int64_t dids[20 * K];
    float dsc[20 * K];
    for (size_t i = 0; i < 20; i++) memcpy(dq + i * DIM, vec + i * 10 * DIM, DIM * sizeof(float));
    CHECK(idx_search(ix, dq, 20, K, NULL, NULL, NULL, dsc, dids) == PROTO_OK);
    int clean = 1, full2 = 1;
    for (size_t i = 0; i < 20 * K; i++) {
      if (dids[i] < 0) full2 = 0;
      else if (dids[i] <= 200) clean = 0;
    }
    CHECKF(clean && full2, "round %d: deleted id returned or short result", round);
    CHECK(idx_info_get(ix, &info) == PROTO_OK);
    CHECKF(info.ntotal == N_BIG - 200, "round %d: ntotal %llu", round,
           (unsigned long long)info.ntotal);
    idx_close(ix);
    ix = NULL;
    /* round 0 -> 1: reopen without saving (tombstones replayed);
     * round 1 -> 2: save then reopen */
    s = idx_open(f.path, f.st, &opt, &ix);
    CHECKF(s == PROTO_OK, "reopen after delete: %s", idx_last_error());
    if (s != PROTO_OK) goto leave;
    if (round == 1) CHECK(idx_save(ix) == PROTO_OK);
  }

leave:
  idx_close(ix);
  fx_close(&f);
  free(vec);
}

TEST(flat) { check_factory("Flat", 0.999, 2); }
TEST(hnsw) { check_factory("HNSW32,Flat", 0.9, 2); }
TEST(ivf_flat) { check_factory("IVF256,Flat", 0.9, 2); }
TEST(ivf_pq) { check_factory("IVF256,PQ16", 0.4, 1); }

/* L2 metric on unnormalised vectors: a stored vector is its own nearest at
 * distance 0, scores ascend. */
TEST(l2) {
  fixture f;
  idx *ix = NULL;
  enum { N = 2000 };
  float *vec = make_vectors(N, 0, 7);
  int64_t ids[5 * K], truth[5 * K];
  float sc[5 * K];
  fx_open(&f);
  CHECK(add_docs(f.st, "l", vec, N) == PROTO_OK);
  idx_options opt = {"Flat", IDX_METRIC_L2, DIM, 0, 0, 0, 0, 0};
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK);
  float q[5 * DIM];
  for (size_t i = 0; i < 5; i++) {
    memcpy(q + i * DIM, vec + (i * 300 + 3) * DIM, DIM * sizeof(float));
    exact(vec, N, q + i * DIM, 1, truth + i * K);
  }
  CHECK(idx_search(ix, q, 5, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECK(recall_at(ids, truth, 5, K) > 0.999);
  int ok = 1;
  for (size_t i = 0; i < 5; i++) {
    if (ids[i * K] != (int64_t)(i * 300 + 4) || fabsf(sc[i * K]) > 1e-3f) ok = 0;
    for (int j = 1; j < K; j++)
      if (sc[i * K + j] < sc[i * K + j - 1]) ok = 0;
  }
  CHECK(ok);
  /* an IP index over the same store must rebuild (the metric is in the file) */
  idx_close(ix);
  ix = NULL;
  opt.metric = IDX_METRIC_IP;
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK);
  CHECK(idx_search(ix, q, 5, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  ok = 1;
  for (size_t i = 0; i < 5; i++)
    for (int j = 1; j < K; j++)
      if (sc[i * K + j] > sc[i * K + j - 1]) ok = 0;
  CHECK(ok);
  idx_close(ix);
  fx_close(&f);
  free(vec);
}

/* IVF before training: vectors pending, searched exactly; trained once
 * enough arrive; replacing a document never returns its old chunks. */
TEST(pending_then_trained) {
  fixture f;
  idx *ix = NULL;
  idx_info info;
  float *vec = make_vectors(N_BIG, 1, 99);
  int64_t ids[K];
  float sc[K];
  fx_open(&f);
  CHECK(add_docs(f.st, "p", vec, 1000) == PROTO_OK);
  idx_options opt = {"IVF256,Flat", IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0};
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK);
  CHECK(idx_info_get(ix, &info) == PROTO_OK);
  CHECK(!info.trained && info.pending == 1000 && info.ntotal == 0);
  CHECK(idx_floats(ix) == 1000 * DIM); /* the pending vectors are searched */
  CHECK(idx_search(ix, vec + 500 * DIM, 1, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECK(ids[0] == 501);
  CHECK(idx_save(ix) == PROTO_OK); /* an untrained index saves and reloads */
  idx_close(ix);
  ix = NULL;
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK);
  CHECK(idx_info_get(ix, &info) == PROTO_OK);
  CHECK(!info.trained && info.pending == 1000);
  /* the rest arrives (ids 1001..10000 as docs "q0".."q899") */
  CHECK(add_docs(f.st, "q", vec + 1000 * DIM, N_BIG - 1000) == PROTO_OK);
  CHECK(idx_sync(ix) == PROTO_OK);
  CHECK(idx_info_get(ix, &info) == PROTO_OK);
  CHECKF(info.trained && info.pending == 0 && info.ntotal == N_BIG, "trained %d ntotal %llu",
         info.trained, (unsigned long long)info.ntotal);
  CHECK(idx_floats(ix) == (uint64_t)N_BIG * DIM);
  CHECK(idx_search(ix, vec + 5000 * DIM, 1, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECK(ids[0] == 5001);
  /* replace doc "q0" (chunks 1001..1010) with new vectors */
  {
    static const int32_t tok[1] = {1};
    store_chunk_input ch[CHUNKS_PER_DOC];
    for (size_t c = 0; c < CHUNKS_PER_DOC; c++)
      ch[c] = (store_chunk_input){tok, 1, "y", 1, vec + (2000 + c) * DIM};
    store_doc_input d = {"q0", NULL, CHUNKS_PER_DOC, ch, NULL};
    CHECK(store_upsert(f.st, &d, 1, DIM, NULL) == PROTO_OK);
  }
  CHECK(idx_sync(ix) == PROTO_OK);
  CHECK(idx_search(ix, vec + 1000 * DIM, 1, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECK(all_outside(ids, 1001, 1010));
  CHECK(idx_info_get(ix, &info) == PROTO_OK);
  CHECK(info.ntotal == N_BIG && info.watermark == N_BIG + CHUNKS_PER_DOC);
  idx_close(ix);
  fx_close(&f);
  free(vec);
}

/* HNSW cannot remove: few deletes are filtered, many trigger a rebuild. */
TEST(hnsw_deletes) {
  fixture f;
  idx *ix = NULL;
  idx_info info;
  enum { N = 2000 };
  float *vec = make_vectors(N, 1, 5);
  int64_t ids[K];
  float sc[K];
  fx_open(&f);
  CHECK(add_docs(f.st, "h", vec, N) == PROTO_OK);
  idx_options opt = {"HNSW32,Flat", IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0};
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK);
  int found;
  CHECK(store_delete(f.st, "h3", &found) == PROTO_OK && found); /* ids 31..40 */
  CHECK(idx_save(ix) == PROTO_OK);
  CHECK(idx_floats(ix) == (N - 10) * DIM); /* dead ids, still in HNSW, not counted */
  CHECK(idx_search(ix, vec + 35 * DIM, 1, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECK(all_outside(ids, 31, 40));
  idx_close(ix);
  ix = NULL;
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK); /* dead ids come back */
  CHECK(idx_search(ix, vec + 35 * DIM, 1, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECK(all_outside(ids, 31, 40));
  for (int d = 50; d < 120; d++) { /* 700 more chunks: past 1/4 of the index */
    char id[16];
    snprintf(id, sizeof id, "h%d", d);
    CHECK(store_delete(f.st, id, &found) == PROTO_OK && found);
  }
  CHECK(idx_sync(ix) == PROTO_OK);
  CHECK(idx_info_get(ix, &info) == PROTO_OK);
  CHECKF(info.ntotal == N - 710, "ntotal %llu", (unsigned long long)info.ntotal);
  CHECK(idx_floats(ix) == (N - 710) * DIM); /* rebuilt */
  CHECK(idx_search(ix, vec + 600 * DIM, 1, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECK(all_outside(ids, 501, 1200));
  idx_close(ix);
  fx_close(&f);
  free(vec);
}

/* An older index file (watermark behind the store's, its deletes already
 * cleared from the store) is not trusted: the index is rebuilt. */
TEST(stale_file) {
  fixture f;
  idx *ix = NULL;
  idx_info info;
  enum { N = 1000 };
  float *vec = make_vectors(N, 1, 11);
  int64_t ids[K];
  float sc[K];
  char old[160], cmd[400];
  fx_open(&f);
  snprintf(old, sizeof old, "%s.old", f.path);
  CHECK(add_docs(f.st, "a", vec, N / 2) == PROTO_OK);
  idx_options opt = {"Flat", IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0};
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK);
  snprintf(cmd, sizeof cmd, "cp %s %s", f.path, old);
  CHECK(system(cmd) == 0);
  CHECK(add_docs(f.st, "b", vec + (N / 2) * DIM, N / 2) == PROTO_OK);
  int found;
  CHECK(store_delete(f.st, "a0", &found) == PROTO_OK && found); /* ids 1..10 */
  CHECK(idx_save(ix) == PROTO_OK);
  idx_close(ix);
  ix = NULL;
  CHECK(rename(old, f.path) == 0);
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK);
  CHECK(idx_info_get(ix, &info) == PROTO_OK);
  CHECKF(info.ntotal == N - 10, "ntotal %llu", (unsigned long long)info.ntotal);
  CHECK(idx_search(ix, vec, 1, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECK(all_outside(ids, 0, 10));
  CHECK(idx_search(ix, vec + 700 * DIM, 1, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECK(ids[0] == 701);
  idx_close(ix);
  fx_close(&f);
  free(vec);
}

/* The int8 codes of a flat index stay in step with its rows: an index with
 * them and one without (plain_scan) over the same store give the same
 * results, bit for bit, after adds, deletes, upserts (rows removed from the
 * middle and appended) and a rebuild; also through the filter's refetch. */
static int codes_agree(idx *coded, idx *plain, const float *q, size_t nq, const char *when) {
  enum { BATCH = 5 }; /* the scans take up to FLAT_SCAN_MAX_QUERIES (19) at a time */
  int64_t a[BATCH * K], b[BATCH * K];
  float sa[BATCH * K], sb[BATCH * K];
  int calls = 0, ok = 1;
  for (size_t i = 0; i + BATCH <= nq; i += BATCH) {
    const float *qi = q + i * DIM;
    ok &= idx_search(coded, qi, BATCH, K, NULL, NULL, NULL, sa, a) == PROTO_OK;
    ok &= idx_search(plain, qi, BATCH, K, NULL, NULL, NULL, sb, b) == PROTO_OK;
    ok &= same_ids(a, b, BATCH * K) && memcmp(sa, sb, sizeof sa) == 0;
    ok &= idx_search(coded, qi, BATCH, K, NULL, reject_even, &calls, sa, a) == PROTO_OK;
    ok &= idx_search(plain, qi, BATCH, K, NULL, reject_even, &calls, sb, b) == PROTO_OK;
    ok &= same_ids(a, b, BATCH * K) && memcmp(sa, sb, sizeof sa) == 0;
  }
  if (!ok) printf("# codes and plain scan differ %s\n", when);
  return ok;
}

TEST(codes_in_step) {
  fixture f;
  idx *coded = NULL, *plain = NULL;
  enum { N = 10000 }; /* 10,000 x 32 floats: past idx.c's CODES_MIN_FLOATS once all are in */
  char plain_path[160];
  float *vec = make_vectors(N, 1, 77), *fresh = make_vectors(400, 1, 78);
  float q[NQ * DIM];
  for (size_t i = 0; i < NQ; i++) /* stored vectors, and near ones */
    for (size_t j = 0; j < DIM; j++)
      q[i * DIM + j] = vec[(i * 97) * DIM + j] + (i % 2 ? 0.05f * gauss() : 0.0f);
  fx_open(&f);
  snprintf(plain_path, sizeof plain_path, "%s/plain.faiss", f.dir);
  CHECK(add_docs(f.st, "d", vec, N / 2) == PROTO_OK);
  idx_options co = {"Flat", IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0}, po = co;
  po.plain_scan = 1;
  CHECK(idx_open(f.path, f.st, &co, &coded) == PROTO_OK);
  CHECK(idx_open(plain_path, f.st, &po, &plain) == PROTO_OK);
  if (!coded || !plain) goto leave;
  CHECK(codes_agree(coded, plain, q, NQ, "after open"));
  CHECK(add_docs(f.st, "e", vec + (N / 2) * DIM, N / 2) == PROTO_OK);
  CHECK(idx_sync(coded) == PROTO_OK && idx_sync(plain) == PROTO_OK);
  CHECK(codes_agree(coded, plain, q, NQ, "after adding"));
  int found = 0;
  for (int d = 10; d < 40; d += 3) {
    char id[16];
    snprintf(id, sizeof id, "d%d", d);
    CHECK(store_delete(f.st, id, &found) == PROTO_OK && found);
  }
  CHECK(idx_sync(coded) == PROTO_OK && idx_sync(plain) == PROTO_OK);
  CHECK(codes_agree(coded, plain, q, NQ, "after deletes"));
  CHECK(add_docs(f.st, "d", fresh, 400) == PROTO_OK); /* d0..d39 replaced */
  CHECK(idx_sync(coded) == PROTO_OK && idx_sync(plain) == PROTO_OK);
  CHECK(codes_agree(coded, plain, q, NQ, "after upserts"));
  CHECK(codes_agree(coded, plain, fresh, NQ, "after upserts, new vectors as queries"));
  CHECK(idx_rebuild(coded, NULL) == PROTO_OK);
  CHECK(codes_agree(coded, plain, q, NQ, "after a rebuild"));
leave:
  idx_close(coded);
  idx_close(plain);
  fx_close(&f);
  free(vec);
  free(fresh);
}

/* Of the ids b holds (nq rows of K), the share that a's same row holds too;
 * *worst: the largest score difference of an id both hold. */
static double shared_ids(const int64_t *a, const float *sa, const int64_t *b, const float *sb,
                         size_t nq, float *worst) {
  size_t held = 0, shared = 0;
  *worst = 0;
  for (size_t i = 0; i < nq; i++)
    for (size_t j = 0; j < K; j++) {
      if (b[i * K + j] < 0) continue;
      held++;
      for (size_t m = 0; m < K; m++)
        if (a[i * K + m] == b[i * K + j]) {
          shared++;
          float diff = fabsf(sa[i * K + m] - sb[i * K + j]);
          if (!(diff <= *worst)) *worst = diff;
        }
    }
  return held ? (double)shared / (double)held : 1;
}

/* IVF,Flat searches of fewer than 20 queries go through idx.c's own scan
 * of FAISS's lists (ivf_scan.c); 20 or more through FAISS's IVF search.
 * Searches q[0..SCAN_VS) both ways (one call of SCAN_VS, then calls of 5)
 * and compares: same ids, scores within 1e-5. With approx (the 4-bit codes
 * of a large IVF, ivf_scan_nib), at least 97% of the own scan's ids among
 * FAISS's, and those with FAISS's scores. */
enum { SCAN_VS = 40 };

static int scan_matches_faiss(idx *ix, const float *q, const idx_search_params *p,
                              idx_filter_fn filter, int approx, const char *when) {
  enum { SMALL = 5 };
  int64_t a[SCAN_VS * K], b[SCAN_VS * K];
  float sa[SCAN_VS * K], sb[SCAN_VS * K];
  int calls = 0, ok = idx_search(ix, q, SCAN_VS, K, p, filter, &calls, sa, a) == PROTO_OK;
  for (size_t i = 0; i < SCAN_VS; i += SMALL)
    ok &=
        idx_search(ix, q + i * DIM, SMALL, K, p, filter, &calls, sb + i * K, b + i * K) == PROTO_OK;
  size_t differ = 0, full = 0;
  float worst = 0;
  for (size_t i = 0; i < SCAN_VS * K; i++) {
    differ += a[i] != b[i];
    full += b[i] >= 0;
    if (a[i] >= 0 && a[i] == b[i] && !(fabsf(sa[i] - sb[i]) <= worst)) worst = fabsf(sa[i] - sb[i]);
  }
  double shared = 1;
  if (approx) {
    shared = shared_ids(a, sa, b, sb, SCAN_VS, &worst);
    ok &= shared >= 0.97 && worst <= 1e-5f && full > SCAN_VS * K / 2;
  } else {
    ok &= differ == 0 && worst <= 1e-5f && full > SCAN_VS * K / 2;
  }
  if (!ok)
    printf("# %s, nprobe %d%s: %zu ids differ (%.3f shared), scores by %g, %zu results\n", when,
           p->nprobe, filter ? ", filtered" : "", differ, shared, (double)worst, full);
  return ok;
}

/* With nprobe = nlist the scan is exact: a Flat index over the same store
 * (the same kernel) gives the same ids and scores, bit for bit. With approx,
 * at least 98% of the ids are Flat's, with Flat's scores bit for bit. */
static int scan_matches_flat(idx *ix, idx *flat, const float *q, int nlist, idx_filter_fn filter,
                             int approx) {
  enum { SMALL = 8 };
  idx_search_params all = {nlist, 0};
  int64_t a[SMALL * K], b[SMALL * K];
  float sa[SMALL * K], sb[SMALL * K];
  int calls = 0, ok = 1;
  for (size_t i = 0; i + SMALL <= SCAN_VS; i += SMALL) {
    ok &= idx_search(ix, q + i * DIM, SMALL, K, &all, filter, &calls, sa, a) == PROTO_OK;
    ok &= idx_search(flat, q + i * DIM, SMALL, K, NULL, filter, &calls, sb, b) == PROTO_OK;
    float worst;
    if (approx) ok &= shared_ids(b, sb, a, sa, SMALL, &worst) >= 0.98 && worst == 0;
    else ok &= same_ids(a, b, SMALL * K) && memcmp(sa, sb, sizeof sa) == 0;
  }
  if (!ok) printf("# nprobe = nlist%s differs from Flat\n", filter ? ", filtered" : "");
  return ok;
}

/* codes_min: idx_options.codes_min_floats (1: the centroids' and the lists'
 * 4-bit codes are kept and searched, approximately; 0: the default, more
 * floats than these 4,000 x 32: the floats are, exactly). */
static void check_ivf_scan(const char *factory, idx_metric metric, int nlist, int deletes,
                           uint64_t codes_min) {
  fixture f;
  idx *ix = NULL, *flat = NULL;
  enum { N = 4000 };
  char flat_path[160];
  float *vec = make_vectors(N, metric == IDX_METRIC_IP, 11);
  float q[SCAN_VS * DIM];
  for (size_t i = 0; i < SCAN_VS; i++) /* near stored vectors */
    for (size_t j = 0; j < DIM; j++) q[i * DIM + j] = vec[(i * 97) * DIM + j] + 0.1f * gauss();
  printf("# %s, %s%s\n", factory, metric == IDX_METRIC_L2 ? "L2" : "IP",
         codes_min ? ", 4-bit codes of centroids and lists" : "");
  fx_open(&f);
  snprintf(flat_path, sizeof flat_path, "%s/flat.faiss", f.dir);
  CHECK(add_docs(f.st, "s", vec, N) == PROTO_OK);
  idx_options opt = {factory, metric, DIM, 0, 0, 0, 0, codes_min}, fo = opt;
  fo.factory = "Flat";
  fo.codes_min_floats = 0;
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK);
  CHECK(idx_open(flat_path, f.st, &fo, &flat) == PROTO_OK);
  if (!ix || !flat) goto leave;
  for (int round = 0; round < 1 + deletes; round++) {
    const char *when = round ? "after deletes" : "fresh";
    idx_info info;
    CHECKF(idx_info_get(ix, &info) == PROTO_OK &&
               info.code_rows == (codes_min ? (uint64_t)nlist + info.ntotal : 0),
           "%s: %llu code rows", when, (unsigned long long)info.code_rows);
    idx_search_params probes[] = {{1, 0}, {4, 0}, {0, 0}, {nlist, 0}};
    for (size_t i = 0; i < sizeof probes / sizeof *probes; i++) {
      CHECK(scan_matches_faiss(ix, q, &probes[i], NULL, codes_min != 0, when));
      CHECK(scan_matches_faiss(ix, q, &probes[i], reject_even, codes_min != 0, when));
    }
    CHECK(scan_matches_flat(ix, flat, q, nlist, NULL, codes_min != 0));
    CHECK(scan_matches_flat(ix, flat, q, nlist, reject_even, codes_min != 0));
    if (round == 0 && deletes) { /* every 7th document, some the queries' own */
      int found = 0;
      for (int d = 0; d < N / CHUNKS_PER_DOC; d += 7) {
        char id[16];
        snprintf(id, sizeof id, "s%d", d);
        CHECK(store_delete(f.st, id, &found) == PROTO_OK && found);
      }
      CHECK(idx_sync(ix) == PROTO_OK && idx_sync(flat) == PROTO_OK);
    }
  }
leave:
  idx_close(ix);
  idx_close(flat);
  fx_close(&f);
  free(vec);
}

TEST(ivf_scan) {
  check_ivf_scan("IVF64,Flat", IDX_METRIC_IP, 64, 1, 0);
  check_ivf_scan("IVF64,Flat", IDX_METRIC_IP, 64, 1, 1);
  check_ivf_scan("IVF64,Flat", IDX_METRIC_L2, 64, 1, 1);
  /* an IDMap around the IVF: labels through its map (FAISS's IDMap cannot
   * remove from an IVF correctly: no deletes) */
  check_ivf_scan("IDMap,IVF64,Flat", IDX_METRIC_IP, 64, 0, 0);
}

/* ivf_scan with int8 codes of the centroids and of the lists (what idx.c
 * keeps for a large IVF) gives what it gives with their floats: the same
 * ids and scores, bit for bit, at each nprobe and metric; with the codes of
 * the centroids alone, or of the lists alone, too. Codes of the negated
 * rows must change the answers, which shows the codes are read at all. */
static void codes_of_rows(const FaissIVFFlatView *v, int negate, flat_codes **centroids,
                          flat_codes **lists) {
  float *neg = malloc(v->nlist * DIM * sizeof *neg);
  for (size_t i = 0; i < v->nlist * DIM; i++) neg[i] = negate ? -v->centroids[i] : v->centroids[i];
  CHECK(flat_codes_new(DIM, centroids) == PROTO_OK &&
        flat_codes_append(*centroids, neg, v->nlist) == PROTO_OK);
  for (size_t l = 0; l < v->nlist; l++) {
    const float *rows;
    const idx_t *ids;
    size_t n;
    faiss_IVFFlatView_list(v, l, &rows, &ids, &n);
    float *x = malloc((n + 1) * DIM * sizeof *x);
    for (size_t i = 0; i < n * DIM; i++) x[i] = negate ? -rows[i] : rows[i];
    CHECK(flat_codes_new(DIM, &lists[l]) == PROTO_OK &&
          flat_codes_append(lists[l], x, n) == PROTO_OK);
    free(x);
  }
  free(neg);
}

/* The IVF both list-scan tests search: IVF128,Flat over 6,000 clustered
 * vectors (freed by the caller with faiss_Index_free), and QS queries near
 * them. 1 when built. */
enum { TEST_IVF_N = 6000, NLIST = 128, QS = 19 };

static int test_ivf(int l2, uint64_t seed, float *q, FaissIndex **ivf, FaissIVFFlatView *v) {
  float *vec = make_vectors(TEST_IVF_N, !l2, seed);
  for (size_t i = 0; i < QS * DIM; i++)
    q[i] = vec[(i / DIM) * 301 * DIM + i % DIM] + 0.1f * gauss();
  *ivf = NULL;
  int ok = faiss_index_factory(ivf, DIM, "IVF128,Flat", l2 ? METRIC_L2 : METRIC_INNER_PRODUCT) == 0;
  ok = ok && faiss_Index_train(*ivf, TEST_IVF_N, vec) == 0 &&
       faiss_Index_add(*ivf, TEST_IVF_N, vec) == 0 && faiss_Index_ivf_flat_view(*ivf, v) &&
       v->nlist == NLIST;
  free(vec);
  return ok;
}

TEST(ivf_scan_codes) {
  for (int l2 = 0; l2 <= 1; l2++) {
    float q[QS * DIM];
    FaissIndex *ivf;
    FaissIVFFlatView v;
    flat_codes *cc = NULL, *wc = NULL, *lc[NLIST] = {0}, *wl[NLIST] = {0};
    int ok = test_ivf(l2, 5, q, &ivf, &v);
    CHECK(ok);
    if (ok) {
      codes_of_rows(&v, 0, &cc, lc);
      codes_of_rows(&v, 1, &wc, wl);
      const flat_codes *const *lists = (const flat_codes *const *)lc;
      const flat_codes *const *wrong_lists = (const flat_codes *const *)wl;
      ivf_codes variants[] = {{cc, lists}, {cc, NULL}, {NULL, lists}};
      ivf_codes wrong[] = {{wc, NULL}, {NULL, wrong_lists}};
      int same = 1, wrong_differs[2] = {0, 0};
      for (size_t nprobe = 1; nprobe <= 16; nprobe *= 4) {
        float d0[QS * K], d1[QS * K];
        int64_t l0[QS * K], l1[QS * K];
        same &= ivf_scan(&v, NULL, DIM, q, QS, nprobe, K, d0, l0) == PROTO_OK;
        for (size_t i = 0; i < 3; i++)
          same &= ivf_scan(&v, &variants[i], DIM, q, QS, nprobe, K, d1, l1) == PROTO_OK &&
                  memcmp(l0, l1, sizeof l0) == 0 && memcmp(d0, d1, sizeof d0) == 0;
        for (size_t i = 0; i < 2; i++) {
          same &= ivf_scan(&v, &wrong[i], DIM, q, QS, nprobe, K, d1, l1) == PROTO_OK;
          wrong_differs[i] |= memcmp(l0, l1, sizeof l0) != 0;
        }
      }
      CHECK(same);
      CHECKF(wrong_differs[0] && wrong_differs[1], "wrong codes change the answers: %d %d",
             wrong_differs[0], wrong_differs[1]);
    }
    flat_codes_free(cc);
    flat_codes_free(wc);
    for (size_t l = 0; l < NLIST; l++) {
      flat_codes_free(lc[l]);
      flat_codes_free(wl[l]);
    }
    if (ivf) faiss_Index_free(ivf);
  }
}

/* ivf_scan_nib: with every list probed and a margin that keeps every row,
 * exactly ivf_scan's answers; at IVF_NIB_MARGIN and nprobe 16, at least
 * 95% of ivf_scan's ids with its scores; codes of the negated rows change
 * the answers; a list whose codes lack a row is scanned from its floats. */
static void nib_lists(const FaissIVFFlatView *v, int negate, nib_codes **centroids,
                      nib_codes **lists) {
  CHECK(nib_codes_new(DIM, centroids) == PROTO_OK &&
        nib_codes_append(*centroids, v->centroids, v->nlist, NULL) == PROTO_OK);
  for (size_t l = 0; l < v->nlist; l++) {
    const float *rows;
    const idx_t *ids;
    size_t n;
    faiss_IVFFlatView_list(v, l, &rows, &ids, &n);
    float *x = malloc((n + 1) * DIM * sizeof *x);
    for (size_t i = 0; i < n * DIM; i++) x[i] = negate ? -rows[i] : rows[i];
    CHECK(nib_codes_new(DIM, &lists[l]) == PROTO_OK &&
          nib_codes_append(lists[l], x, n, v->centroids + l * DIM) == PROTO_OK);
    free(x);
  }
}

TEST(ivf_scan_nib) {
  for (int l2 = 0; l2 <= 1; l2++) {
    float q[QS * DIM];
    FaissIndex *ivf;
    FaissIVFFlatView v;
    nib_codes *cc = NULL, *wc = NULL, *lc[NLIST] = {0}, *wl[NLIST] = {0};
    int ok = test_ivf(l2, 7, q, &ivf, &v);
    CHECK(ok);
    if (ok) {
      nib_lists(&v, 0, &cc, lc);
      nib_lists(&v, 1, &wc, wl);
      ivf_nib nib = {cc, (const nib_codes *const *)lc}, wrong = {cc, (const nib_codes *const *)wl};
      float d0[QS * K], d1[QS * K], worst = 0;
      int64_t l0[QS * K], l1[QS * K];
      CHECK(ivf_scan(&v, NULL, DIM, q, QS, NLIST, K, d0, l0) == PROTO_OK);
      CHECK(ivf_scan_nib(&v, &nib, DIM, q, QS, NLIST, 1e30f, K, d1, l1) == PROTO_OK);
      CHECK(memcmp(l0, l1, sizeof l0) == 0 && memcmp(d0, d1, sizeof d0) == 0);
      CHECK(ivf_scan(&v, NULL, DIM, q, QS, 16, K, d0, l0) == PROTO_OK);
      CHECK(ivf_scan_nib(&v, &nib, DIM, q, QS, 16, IVF_NIB_MARGIN, K, d1, l1) == PROTO_OK);
      double shared = shared_ids(l0, d0, l1, d1, QS, &worst);
      CHECKF(shared >= 0.95 && worst == 0, "%.3f of the ids shared, scores by %g", shared,
             (double)worst);
      CHECK(ivf_scan_nib(&v, &wrong, DIM, q, QS, 16, IVF_NIB_MARGIN, K, d1, l1) == PROTO_OK);
      CHECK(shared_ids(l0, d0, l1, d1, QS, &worst) < 0.5);
      /* list 0 out of step with its codes: that list from its floats */
      nib_codes_clear(lc[0]);
      CHECK(ivf_scan(&v, NULL, DIM, q, QS, NLIST, K, d0, l0) == PROTO_OK);
      CHECK(ivf_scan_nib(&v, &nib, DIM, q, QS, NLIST, 1e30f, K, d1, l1) == PROTO_OK);
      CHECK(memcmp(l0, l1, sizeof l0) == 0 && memcmp(d0, d1, sizeof d0) == 0);
    }
    nib_codes_free(cc);
    nib_codes_free(wc);
    for (size_t l = 0; l < NLIST; l++) {
      nib_codes_free(lc[l]);
      nib_codes_free(wl[l]);
    }
    if (ivf) faiss_Index_free(ivf);
  }
}

/* The automatic IVF searched a few queries at a time (idx.c's own list
 * scan) at the default nprobe, against a Flat index over the same store:
 * recall@10 >= 0.95, before and after upserts and deletes, which are never
 * returned. q: NQ queries from vec (the first N_AUTO vectors stored as
 * u0.., v0.., w0..: chunk ids 1..N_AUTO; 1,000 more follow for upserts). */
enum { N_AUTO = 30000, AUTO_SMALL = 10 };

static double recall_small_batches(idx *ix, idx *flat, const float *q, int64_t lo, int64_t hi,
                                   int *clean) {
  int64_t ids[NQ * K], truth[NQ * K];
  float sc[NQ * K];
  int ok = 1;
  for (size_t i = 0; i < NQ; i += AUTO_SMALL) {
    ok &= idx_search(ix, q + i * DIM, AUTO_SMALL, K, NULL, NULL, NULL, sc + i * K, ids + i * K) ==
          PROTO_OK;
    ok &= idx_search(flat, q + i * DIM, AUTO_SMALL, K, NULL, NULL, NULL, sc + i * K,
                     truth + i * K) == PROTO_OK;
  }
  for (size_t i = 0; i < NQ; i++) ok &= all_outside(ids + i * K, lo, hi);
  *clean = ok;
  return recall_at(ids, truth, NQ, K);
}

static void auto_ivf_scan(fixture *f, idx *ix, const float *vec, const float *q) {
  char flat_path[160];
  idx *flat = NULL;
  int clean = 0;
  const float *fresh = vec + N_AUTO * DIM; /* the same clusters */
  float both[NQ * DIM];
  snprintf(flat_path, sizeof flat_path, "%s/flat.faiss", f->dir);
  idx_options fo = {"Flat", IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0};
  CHECK(idx_open(flat_path, f->st, &fo, &flat) == PROTO_OK);
  if (!flat) goto leave;
  double r = recall_small_batches(ix, flat, q, 0, 0, &clean);
  CHECKF(r >= 0.95 && clean, "recall@10 %.3f of the automatic IVF's own scan", r);
  printf("# automatic IVF, own scan: recall@10 %.3f\n", r);
  /* documents w0..w99 (chunks 2001..3000) replaced, u0..u49 (1..500) deleted */
  CHECK(add_docs(f->st, "w", fresh, 1000) == PROTO_OK);
  int found = 0;
  for (int d = 0; d < 50; d++) {
    char id[16];
    snprintf(id, sizeof id, "u%d", d);
    CHECK(store_delete(f->st, id, &found) == PROTO_OK && found);
  }
  CHECK(idx_sync(ix) == PROTO_OK && idx_sync(flat) == PROTO_OK);
  for (size_t i = 0; i < NQ; i++) /* half old vectors (some deleted), half the new ones */
    memcpy(both + i * DIM, i % 2 ? fresh + i * 13 * DIM : vec + i * 7 * DIM, DIM * sizeof(float));
  /* the lists' codes followed the removals and the adds of the same sync:
   * idx.c's scan through them finds what FAISS's search does */
  idx_search_params dflt = {0, 0};
  idx_info info;
  CHECK(scan_matches_faiss(ix, both, &dflt, NULL, 1, "after upserts"));
  CHECK(idx_info_get(ix, &info) == PROTO_OK && info.code_rows == 512 + info.ntotal);
  r = recall_small_batches(ix, flat, both, 1, 500, &clean);
  CHECKF(r >= 0.95 && clean, "after upserts and deletes: recall@10 %.3f, deleted ids %s", r,
         clean ? "not returned" : "returned");
  int64_t ids[AUTO_SMALL * K]; /* and the replaced chunks: never returned */
  float sc[AUTO_SMALL * K];
  CHECK(idx_search(ix, vec + 2001 * DIM, AUTO_SMALL, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  for (size_t i = 0; i < AUTO_SMALL; i++) CHECK(all_outside(ids + i * K, 2001, 3000));
  printf("# after upserts and deletes: recall@10 %.3f\n", r);
leave:
  idx_close(flat);
}

/* The default factory follows the corpus: Flat while small, then IVF with
 * nlist ~ 4 sqrt(n) (an upgrade that waits in the exact side index until
 * IVF can train, and doubles nlist as the corpus grows), kept as an
 * automatic choice across reopening. The threshold is lowered so a test
 * reaches it: 1,000 x 32 floats. */
TEST(auto_upgrade) {
  fixture f;
  idx *ix = NULL;
  idx_info info;
  enum { N = N_AUTO };
  float *vec = make_vectors(N + 1000, 1, 5); /* the last 1,000 for upserts */
  int64_t truth[NQ * K], ids[NQ * K];
  float sc[NQ * K];
  fx_open(&f);
  /* codes from the first float on: they follow each stage (the Flat's rows,
   * the pending side index's, the trained IVF's centroids and lists) */
  idx_options opt = {NULL, IDX_METRIC_IP, DIM, 0, 0, 0, 1000 * DIM, 1};
  CHECK(add_docs(f.st, "u", vec, 500) == PROTO_OK);
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK);
  if (!ix) goto leave;
  CHECK(idx_info_get(ix, &info) == PROTO_OK && strcmp(info.factory, "Flat") == 0 &&
        info.code_rows == 500);
  CHECK(add_docs(f.st, "v", vec + 500 * DIM, 1500) == PROTO_OK); /* 2,000: past it */
  CHECK(idx_sync(ix) == PROTO_OK);
  CHECK(idx_info_get(ix, &info) == PROTO_OK);
  CHECKF(strcmp(info.factory, "IVF128,Flat") == 0 && !info.trained && info.pending == 2000 &&
             info.code_rows == 2000,
         "factory %s trained %d pending %llu codes %llu", info.factory, info.trained,
         (unsigned long long)info.pending, (unsigned long long)info.code_rows);
  CHECK(add_docs(f.st, "w", vec + 2000 * DIM, N - 2000) == PROTO_OK); /* enough to train */
  CHECK(idx_sync(ix) == PROTO_OK);
  CHECK(idx_info_get(ix, &info) == PROTO_OK);
  CHECKF(strcmp(info.factory, "IVF512,Flat") == 0 && info.trained && info.pending == 0 &&
             info.ntotal == N && info.code_rows == 512 + N,
         "factory %s trained %d pending %llu codes %llu", info.factory, info.trained,
         (unsigned long long)info.pending, (unsigned long long)info.code_rows);
  float q[NQ * DIM];
  for (size_t i = 0; i < NQ; i++) {
    memcpy(q + i * DIM, vec + i * 577 * DIM, DIM * sizeof(float));
    exact(vec, N, q + i * DIM, 0, truth + i * K);
  }
  CHECK(idx_search(ix, q, NQ, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECKF(recall_at(ids, truth, NQ, K) >= 0.8, "recall@10 %.3f after the upgrade",
         recall_at(ids, truth, NQ, K));
  idx_close(ix);
  ix = NULL;
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK); /* reopened: still the automatic IVF */
  CHECK(ix && idx_info_get(ix, &info) == PROTO_OK && strcmp(info.factory, "IVF512,Flat") == 0);
  if (ix) auto_ivf_scan(&f, ix, vec, q);
leave:
  idx_close(ix);
  fx_close(&f);
  free(vec);
}

typedef struct searcher {
  idx *ix;
  const float *q;
  int stop;
  int errors, searches;
} searcher;

static void *search_loop(void *arg) {
  searcher *w = arg;
  int64_t ids[K];
  float sc[K];
  while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
    if (idx_search(w->ix, w->q, 1, K, NULL, NULL, NULL, sc, ids) != PROTO_OK || ids[0] != 1)
      w->errors++;
    w->searches++;
  }
  return NULL;
}

/* Searches from several threads while the index syncs new documents.
 * Flat: past CODES_MIN_FLOATS from the 5th batch; IVF64,Flat: pending
 * (exact side index) until the 2nd batch, then trained and searched by
 * idx.c's own list scan, as a stored vector finds itself in its own list. */
static void concurrent_with(const char *factory) {
  fixture f;
  idx *ix = NULL;
  enum { N = 12000, B = N / 6, THREADS = 4 };
  float *vec = make_vectors(N, 1, 21);
  printf("# %s\n", factory);
  fx_open(&f);
  CHECK(add_docs(f.st, "c", vec, B) == PROTO_OK);
  idx_options opt = {factory, IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0};
  CHECK(idx_open(f.path, f.st, &opt, &ix) == PROTO_OK);
  searcher w[THREADS];
  pthread_t th[THREADS];
  for (int t = 0; t < THREADS; t++) {
    w[t] = (searcher){ix, vec, 0, 0, 0};
    pthread_create(&th[t], NULL, search_loop, &w[t]);
  }
  int ok = 1;
  for (int b = 1; b < 6; b++) {
    char prefix[8];
    snprintf(prefix, sizeof prefix, "c%d_", b);
    if (add_docs(f.st, prefix, vec + (size_t)b * B * DIM, B) != PROTO_OK) ok = 0;
    int found = 0; /* and a document deleted: rows removed under the searches */
    if (b >= 4 && (store_delete(f.st, b == 4 ? "c1_0" : "c2_0", &found) != PROTO_OK || !found))
      ok = 0;
    if (idx_sync(ix) != PROTO_OK) ok = 0;
    if (b == 3 && idx_save(ix) != PROTO_OK) ok = 0;
  }
  int errors = 0, searches = 0;
  for (int t = 0; t < THREADS; t++) {
    __atomic_store_n(&w[t].stop, 1, __ATOMIC_RELEASE);
    pthread_join(th[t], NULL);
    errors += w[t].errors;
    searches += w[t].searches;
  }
  CHECK(ok);
  CHECKF(errors == 0 && searches > 0, "%d errors in %d searches", errors, searches);
  idx_info info;
  CHECK(idx_info_get(ix, &info) == PROTO_OK && info.ntotal == N - 2 * CHUNKS_PER_DOC &&
        info.trained && info.pending == 0);
  idx_close(ix);
  fx_close(&f);
  free(vec);
}

TEST(concurrent) {
  concurrent_with("Flat");
  concurrent_with("IVF64,Flat");
}

/* No factory: Flat for a small corpus, remembered in the store; bad input. */
TEST(defaults_and_errors) {
  fixture f;
  idx *ix = NULL;
  idx_info info;
  float *vec = make_vectors(100, 1, 3);
  int64_t ids[K];
  float sc[K];
  fx_open(&f);
  idx_options none = {NULL, IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0};
  CHECK(idx_open(f.path, f.st, &none, &ix) == PROTO_OK);
  CHECK(idx_info_get(ix, &info) == PROTO_OK);
  CHECK(strcmp(info.factory, "Flat") == 0 && info.ntotal == 0);
  CHECK(idx_search(ix, vec, 1, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECK(ids[0] == -1 && isnan(sc[0])); /* empty index: no results */
  CHECK(add_docs(f.st, "e", vec, 100) == PROTO_OK);
  CHECK(idx_sync(ix) == PROTO_OK);
  CHECK(idx_search(ix, vec, 1, K, NULL, NULL, NULL, sc, ids) == PROTO_OK);
  CHECK(ids[0] == 1);
  CHECK(idx_search(ix, vec, 1, 0, NULL, NULL, NULL, sc, ids) == PROTO_ERANGE);
  CHECK(idx_search(ix, vec, 1, PROTO_MAX_K + 1, NULL, NULL, NULL, sc, ids) == PROTO_ERANGE);
  /* more than the index holds: the rest is -1 / NAN */
  int64_t many[200];
  float msc[200];
  CHECK(idx_search(ix, vec, 1, 200, NULL, NULL, NULL, msc, many) == PROTO_OK);
  CHECK(many[99] > 0 && many[100] == -1 && isnan(msc[100]));
  idx_close(ix);
  ix = NULL;
  char *saved = NULL;
  CHECK(store_meta_get(f.st, "index_factory", &saved) == PROTO_OK && saved &&
        strcmp(saved, "Flat") == 0);
  free(saved);
  idx_options bad = {"NoSuchIndex42", IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0};
  CHECK(idx_open(f.path, f.st, &bad, &ix) == PROTO_EINVAL && ix == NULL);
  CHECK(strlen(idx_last_error()) > 0);
  idx_options pq = {"PQ5", IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0}; /* 32 % 5 != 0 */
  CHECK(idx_open(f.path, f.st, &pq, &ix) == PROTO_EINVAL && ix == NULL);
  /* parameters FAISS takes and then fails or crashes on */
  static const char *const degenerate[] = {
      "IVF0,Flat", "HNSW0", "HNSW1",      "IDMap,HNSW1,Flat", "IVF4_HNSW0,Flat", "PQ0",
      "HNSW4_PQ0", "NSG0",  "IVF4,PQ8x0", "PCA0,Flat",        "IVF00,Flat"};
  for (size_t i = 0; i < sizeof degenerate / sizeof *degenerate; i++) {
    idx_options o = {degenerate[i], IDX_METRIC_IP, DIM, 0, 0, 0, 0, 0};
    CHECKF(idx_open(f.path, f.st, &o, &ix) == PROTO_EINVAL && ix == NULL, "%s: %s", degenerate[i],
           idx_last_error());
  }
  idx_options wrongdim = {"Flat", IDX_METRIC_IP, DIM * 2, 0, 0, 0, 0, 0};
  CHECK(idx_open(f.path, f.st, &wrongdim, &ix) == PROTO_EDIM && ix == NULL);
  idx_close(NULL);
  fx_close(&f);
  free(vec);
}

int main(void) {
  /* FAISS builds HNSW graphs and k-means in parallel; one thread makes the
   * rebuilt-equals-original checks deterministic, and keeps OpenMP and
   * OpenBLAS threads from spinning against the other suites CI runs. */
  omp_set_num_threads(1);
  openblas_set_num_threads(1);
  RUN(defaults_and_errors);
  RUN(l2);
  RUN(flat);
  RUN(ivf_flat);
  RUN(ivf_pq);
  RUN(hnsw);
  RUN(pending_then_trained);
  RUN(hnsw_deletes);
  RUN(stale_file);
  RUN(concurrent);
  RUN(codes_in_step);
  RUN(ivf_scan);
  RUN(ivf_scan_codes);
  RUN(ivf_scan_nib);
  RUN(auto_upgrade);
  return tap_done();
}
