/* bench_store.c - measures the chunk store: upsert throughput (chunks/s) for
 * 64-token chunks with 384-d vectors and ~300 bytes of text, committed in
 * transactions of a given size (each commit is fsync'd), then random
 * store_chunk_get ([N, F]) reads/s. Not run by `meson test`.
 * Usage: bench_store [n_chunks=100000] [chunks_per_txn=512] [dir=/tmp]
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { DIM = 384, TEXT = 300, CPD = 8 };

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000;
  size_t per_txn = argc > 2 ? strtoull(argv[2], NULL, 10) : 512;
  const char *base = argc > 3 ? argv[3] : "/tmp";
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/retro-bench-store-XXXXXX", base);
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  store *st = NULL;
  if (store_open(dir, NULL, &st)) {
    fprintf(stderr, "open: %s\n", store_last_error());
    return 1;
  }
  size_t ndocs = (per_txn + CPD - 1) / CPD;
  size_t nc = ndocs * CPD;
  store_doc_input *docs = calloc(ndocs, sizeof *docs);
  store_chunk_input *ch = calloc(nc, sizeof *ch);
  int32_t *tok = calloc(nc * 64, sizeof *tok);
  float *vec = calloc(nc * DIM, sizeof *vec);
  char *text = calloc(nc, TEXT);
  char(*ids)[32] = calloc(ndocs, sizeof *ids);
  for (size_t c = 0; c < nc; c++) {
    for (int i = 0; i < 64; i++) tok[c * 64 + i] = (int32_t)(c + i);
    for (int i = 0; i < DIM; i++) vec[c * DIM + i] = (float)((c * 7 + i) % 101) / 101.0f;
    memset(text + c * TEXT, 'a' + (int)(c % 26), TEXT);
    ch[c] = (store_chunk_input){tok + c * 64, 64, text + c * TEXT, TEXT, vec + c * DIM};
  }
  size_t done = 0, k = 0;
  double t0 = proto_now();
  while (done < n) {
    for (size_t d = 0; d < ndocs; d++) {
      snprintf(ids[d], sizeof ids[d], "doc-%zu", k * ndocs + d);
      docs[d] = (store_doc_input){ids[d], NULL, CPD, ch + d * CPD, NULL};
    }
    if (store_upsert(st, docs, ndocs, DIM, NULL)) {
      fprintf(stderr, "upsert: %s\n", store_last_error());
      return 1;
    }
    done += nc;
    k++;
  }
  double dt = proto_now() - t0;
  store_stats s;
  store_stats_get(st, &s);
  printf(
      "upsert: %zu chunks (64 tokens, %d-d, %d B text) in %zu txns of %zu: %.2f s, %.0f chunks/s, %.1f txn/s, map %zu MiB\n",
      done, DIM, TEXT, k, nc, dt, done / dt, k / dt, s.map_bytes >> 20);
  size_t reads = 200000;
  unsigned x = 12345;
  t0 = proto_now();
  for (size_t i = 0; i < reads; i++) {
    x = x * 1103515245u + 12345u;
    store_chunk c;
    if (store_chunk_get(st, 1 + (x >> 4) % s.chunks, &c)) {
      fprintf(stderr, "get: %s\n", store_last_error());
      return 1;
    }
    store_chunk_free(&c);
  }
  dt = proto_now() - t0;
  printf("chunk_get: %zu random reads in %.2f s, %.0f reads/s (1 thread)\n", reads, dt, reads / dt);
  store_close(st);
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) return 1;
  free(docs);
  free(ch);
  free(tok);
  free(vec);
  free(text);
  free(ids);
  return 0;
}
