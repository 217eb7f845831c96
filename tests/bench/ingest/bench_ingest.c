/* bench_ingest.c - ingest pipeline throughput against the encoder alone
 * (issue 2: goal pipeline >= 0.9x the encoder's own chunks/s).
 *
 *   bench_ingest ENCODER_DIR DECODER_DIR CORPUS_DIR [--docs N] [--chunks N] [--threads T]
 *                [--batch B] [--index FACTORY]
 *
 * Reads the corpus files (*.txt, recursively, sorted; stops at N documents or
 * once the documents hold about --chunks chunks), then
 *   1. encoder alone: tokenises them with the chunk tokenizer, cuts 64-token
 *      chunks and runs bert_embed_ids (or bert_embed_texts when the encoder
 *      has another vocabulary) over all chunks in batches of B - the same
 *      calls the pipeline makes;
 *   2. pipeline: a fresh database (temp dir), one srv_ingest session adding
 *      every document, timed from the first add until srv_ingest_end returns
 *      (everything committed and in the FAISS index);
 * and prints chunks/s of both and the ratio. Not part of `meson test`.
 */
#include "srv.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct text {
  char id[512];
  char *data;
  size_t len;
} text;

static text *docs;
static size_t n_docs, cap_docs;

static int cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk(const char *dir, size_t max_docs) {
  DIR *d = opendir(dir);
  if (!d) return;
  char **names = NULL;
  size_t n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    names = realloc(names, (n + 1) * sizeof *names);
    names[n++] = strdup(de->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, cmp);
  for (size_t i = 0; i < n; i++) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, names[i]);
    struct stat sb;
    if (n_docs < max_docs && stat(p, &sb) == 0) {
      if (S_ISDIR(sb.st_mode)) walk(p, max_docs);
      else if (strstr(names[i], ".txt") || strstr(names[i], ".rst") || strstr(names[i], ".md")) {
        FILE *f = fopen(p, "rb");
        if (f) {
          if (n_docs == cap_docs) {
            cap_docs = cap_docs ? cap_docs * 2 : 256;
            docs = realloc(docs, cap_docs * sizeof *docs);
          }
          text *t = &docs[n_docs];
          snprintf(t->id, sizeof t->id, "%.500s", p);
          t->data = malloc((size_t)sb.st_size + 1);
          t->len = fread(t->data, 1, (size_t)sb.st_size, f);
          fclose(f);
          n_docs++;
        }
      }
    }
    free(names[i]);
  }
  free(names);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr,
            "usage: bench_ingest ENCODER DECODER CORPUS [--docs N] [--chunks N] "
            "[--threads T] [--batch B] [--index F]\n");
    return 2;
  }
  size_t max_docs = 100000, max_chunks = 2000;
  int threads = 0, batch = 32;
  const char *factory = NULL;
  for (int i = 4; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--docs")) max_docs = strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--chunks")) max_chunks = strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--index")) factory = argv[i + 1];
  }
  walk(argv[3], max_docs);
  char dir[] = "/tmp/retro-bench-ingest-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  srv_engine_options o = {.data_dir = dir,
                          .encoder_dir = argv[1],
                          .decoder_dir = argv[2],
                          .threads = threads,
                          .embed_batch = batch,
                          .index_factory = factory};
  srv_engine *e = NULL;
  if (srv_engine_open(&o, &e) != PROTO_OK) {
    fprintf(stderr, "bench_ingest: %s\n", srv_last_error());
    return 1;
  }
  const tok *ct = srv_engine_chunk_tokenizer(e);
  bert *b = srv_engine_encoder(e);
  srv_info info;
  srv_info_get(e, &info);

  /* the chunks, as the pipeline makes them; documents up to max_chunks */
  int32_t **ids = NULL;
  size_t *lens = NULL, n_chunks = 0, used_docs = 0, bytes = 0;
  char **ctext = NULL;
  size_t *ctlen = NULL;
  for (size_t i = 0; i < n_docs && n_chunks < max_chunks; i++) {
    int32_t *t = NULL;
    size_t n = 0;
    if (tok_encode(ct, docs[i].data, docs[i].len, &t, &n) != PROTO_OK) continue;
    size_t nc = (n + 63) / 64;
    ids = realloc(ids, (n_chunks + nc) * sizeof *ids);
    lens = realloc(lens, (n_chunks + nc) * sizeof *lens);
    ctext = realloc(ctext, (n_chunks + nc) * sizeof *ctext);
    ctlen = realloc(ctlen, (n_chunks + nc) * sizeof *ctlen);
    for (size_t c = 0; c < nc; c++) {
      size_t len = n - c * 64 < 64 ? n - c * 64 : 64;
      ids[n_chunks] = malloc(len * sizeof(int32_t));
      memcpy(ids[n_chunks], t + c * 64, len * sizeof(int32_t));
      lens[n_chunks] = len;
      tok_decode(ct, ids[n_chunks], len, &ctext[n_chunks], &ctlen[n_chunks]);
      n_chunks++;
    }
    free(t);
    used_docs++;
    bytes += docs[i].len;
  }
  printf(
      "corpus: %zu documents, %.2f MB, %zu chunks; encoder %s (%u-d), %s, batch %d, "
      "threads %d\n",
      used_docs, bytes / 1e6, n_chunks, info.encoder, (unsigned)info.dim,
      info.embed_by_ids ? "embedding token ids" : "embedding chunk text", batch, threads);
  fflush(stdout);

  /* 1. the encoder alone (after one untimed warm-up batch: weights paged in,
   * worker threads started) */
  float *vec = malloc((size_t)batch * info.dim * sizeof *vec);
  if (n_chunks && info.embed_by_ids)
    bert_embed_ids(b, (const int32_t *const *)ids, lens,
                   n_chunks < (size_t)batch ? n_chunks : (size_t)batch, vec);
  else if (n_chunks)
    bert_embed_texts(b, (const char *const *)ctext, ctlen,
                     n_chunks < (size_t)batch ? n_chunks : (size_t)batch, vec);
  double t0 = proto_now();
  for (size_t i = 0; i < n_chunks; i += (size_t)batch) {
    size_t n = n_chunks - i < (size_t)batch ? n_chunks - i : (size_t)batch;
    proto_status s = info.embed_by_ids
                         ? bert_embed_ids(b, (const int32_t *const *)ids + i, lens + i, n, vec)
                         : bert_embed_texts(b, (const char *const *)ctext + i, ctlen + i, n, vec);
    if (s != PROTO_OK) {
      fprintf(stderr, "bench_ingest: %s\n", bert_last_error());
      return 1;
    }
  }
  double t_enc = proto_now() - t0;
  printf("encoder alone:  %8.1f chunks/s  (%.2fs)\n", n_chunks / t_enc, t_enc);
  fflush(stdout);

  /* 2. the pipeline */
  srv_ingest *in = NULL;
  t0 = proto_now();
  srv_ingest_begin(e, NULL, &in);
  for (size_t i = 0; i < used_docs; i++) {
    srv_doc d = {.id = docs[i].id, .text = docs[i].data, .text_len = docs[i].len};
    if (srv_ingest_add(in, &d) != PROTO_OK) fprintf(stderr, "bench_ingest: %s\n", srv_last_error());
  }
  srv_ingest_progress pr;
  proto_status s = srv_ingest_end(in, &pr);
  double t_pipe = proto_now() - t0;
  srv_info_get(e, &info);
  printf("pipeline:       %8.1f chunks/s  (%.2fs, %llu chunks committed and indexed, %s)\n",
         pr.chunks / t_pipe, t_pipe, (unsigned long long)pr.chunks, info.index.factory);
  printf("ratio pipeline/encoder: %.3f  (goal >= 0.9)%s\n",
         (pr.chunks / t_pipe) / (n_chunks / t_enc),
         s == PROTO_OK ? "" : "  [ingest reported errors]");
  /* the lexical index's syncs run on the commit path; without them the
   * pipeline would take at least t_pipe - t_lex (issue 13: >= 0.85) */
  double t_lex = info.lexical_sync_seconds;
  printf(
      "lexical index syncs: %.2fs of %.2fs; with both indexes >= %.3f of dense-only "
      "throughput\n",
      t_lex, t_pipe, t_pipe > 0 ? (t_pipe - t_lex) / t_pipe : 0.0);
  srv_engine_close(e);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  for (size_t i = 0; i < n_chunks; i++) {
    free(ids[i]);
    free(ctext[i]);
  }
  free(ids);
  free(lens);
  free(ctext);
  free(ctlen);
  free(vec);
  for (size_t i = 0; i < n_docs; i++) free(docs[i].data);
  free(docs);
  return s == PROTO_OK ? 0 : 1;
}
