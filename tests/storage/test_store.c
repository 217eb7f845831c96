/* test_store.c - TAP tests of the LMDB chunk store (storage/store.h).
 *
 * Covers: upsert/replace/delete/get round trips, the [N, F] continuation at
 * document ends and for single-chunk documents, tombstones of replaced and
 * deleted chunks, all-or-nothing batches, dim mismatch, long external ids,
 * the vectors scan/sample/tombstones/watermark feed, reopen after close, map
 * growth from 1 MiB to 100 MB of chunks, and 300 concurrent reader threads
 * (300 simultaneous read transactions, then readers racing a writer whose
 * writes grow the map). Each test works in its own mkdtemp directory under
 * /tmp and removes it. Chunk contents are derived from (doc seed, ordinal) so
 * every read can be checked exactly.
 */
#include "store.h"
#include "tap.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Temp directories --------------------------------------------------------- */

static char *tmp_dir(void) {
  char *t = strdup("/tmp/retro-store-XXXXXX");
  if (!t || !mkdtemp(t)) {
    free(t);
    return NULL;
  }
  return t;
}

static void rm_rf(const char *path) {
  DIR *d = opendir(path);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char sub[4096];
      snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
      rm_rf(sub);
    }
    closedir(d);
    rmdir(path);
  } else {
    unlink(path);
  }
}

/* Deterministic chunk contents ------------------------------------------- */

enum { DIM = 8, MAXC = 16 };

static int32_t tok_of(unsigned seed, unsigned ord, unsigned i) {
  return (int32_t)(seed * 10000u + ord * 64u + i);
}
static float vec_of(unsigned seed, unsigned ord, unsigned i) {
  return (float)seed + (float)ord * 0.5f + (float)i * 0.001f;
}
static void text_of(char *buf, size_t n, unsigned seed, unsigned ord) {
  snprintf(buf, n, "doc%u-chunk%u", seed, ord);
}

/* A document built from a seed: n chunks of (ord+1) % 65 tokens. */
typedef struct gen_doc {
  store_doc_input in;
  store_chunk_input ch[MAXC];
  int32_t tok[MAXC][PROTO_CHUNK_TOKENS];
  float vec[MAXC][DIM];
  char text[MAXC][32];
  char id[64];
} gen_doc;

static void gen(gen_doc *g, const char *id, unsigned seed, unsigned n) {
  memset(g, 0, sizeof *g);
  snprintf(g->id, sizeof g->id, "%s", id);
  for (unsigned j = 0; j < n; j++) {
    unsigned nt = (j * 7 + 1) % (PROTO_CHUNK_TOKENS + 1);
    for (unsigned i = 0; i < nt; i++) g->tok[j][i] = tok_of(seed, j, i);
    for (unsigned i = 0; i < DIM; i++) g->vec[j][i] = vec_of(seed, j, i);
    text_of(g->text[j], sizeof g->text[j], seed, j);
    g->ch[j] = (store_chunk_input){g->tok[j], nt, g->text[j], strlen(g->text[j]), g->vec[j]};
  }
  g->in = (store_doc_input){g->id, NULL, n, g->ch, NULL};
}

/* 1 when chunk c holds chunk `ord` of seed (N) and ord+1 (F) or an empty F. */
static int chunk_is(const store_chunk *c, unsigned seed, unsigned ord, unsigned n) {
  char want[32];
  unsigned nt = (ord * 7 + 1) % (PROTO_CHUNK_TOKENS + 1);
  text_of(want, sizeof want, seed, ord);
  if (c->ordinal != ord || c->n_tokens != nt || c->text_len != strlen(want) ||
      strcmp(c->text, want))
    return 0;
  for (unsigned i = 0; i < nt; i++)
    if (c->tokens[i] != tok_of(seed, ord, i)) return 0;
  if (ord + 1 == n)
    return c->n_next_tokens == 0 && c->next_tokens == NULL && c->next_text &&
           c->next_text[0] == 0 && c->next_text_len == 0;
  unsigned nn = ((ord + 1) * 7 + 1) % (PROTO_CHUNK_TOKENS + 1);
  text_of(want, sizeof want, seed, ord + 1);
  if (c->n_next_tokens != nn || strcmp(c->next_text, want) || c->next_text_len != strlen(want))
    return 0;
  for (unsigned i = 0; i < nn; i++)
    if (c->next_tokens[i] != tok_of(seed, ord + 1, i)) return 0;
  return 1;
}

/* Checks every chunk of a stored document against its seed. */
static int doc_chunks_ok(store *st, const char *id, unsigned seed, unsigned n) {
  store_doc d;
  if (store_doc_get(st, id, &d) != PROTO_OK) return 0;
  int ok = d.n_chunks == n && !strcmp(d.id, id);
  for (unsigned j = 0; ok && j < n; j++) {
    store_chunk c;
    float v[DIM];
    ok = store_chunk_get(st, d.first_chunk + j, &c) == PROTO_OK && c.doc_id == d.doc_id &&
         c.chunk_id == d.first_chunk + j && chunk_is(&c, seed, j, n);
    store_chunk_free(&c);
    ok = ok && store_vector_get(st, d.first_chunk + j, v) == PROTO_OK;
    for (unsigned i = 0; ok && i < DIM; i++) ok = v[i] == vec_of(seed, j, i);
  }
  store_doc_free(&d);
  return ok;
}

static int has_id(const uint64_t *ids, size_t n, uint64_t id) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] == id) return 1;
  return 0;
}

/* Round trips -------------------------------------------------------------- */

TEST(round_trip) {
  char *dir = tmp_dir();
  store *st = NULL;
  CHECK(dir != NULL);
  CHECK(store_open(dir, NULL, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }

  static gen_doc a, b, c;
  gen(&a, "alpha", 1, 3);
  gen(&b, "beta", 2, 1);  /* single chunk: F empty */
  gen(&c, "gamma", 3, 0); /* empty document */
  a.in.metadata_json = "{\"lang\":\"en\"}";
  store_doc_input docs[3] = {a.in, b.in, c.in};
  uint64_t nums[3] = {0};
  CHECK(store_upsert(st, docs, 3, DIM, nums) == PROTO_OK);
  CHECK(nums[0] == 1 && nums[1] == 2 && nums[2] == 3);

  store_doc d;
  CHECK(store_doc_get(st, "alpha", &d) == PROTO_OK);
  CHECK(d.doc_id == nums[0] && d.first_chunk == 1 && d.n_chunks == 3);
  CHECK(d.metadata_json && !strcmp(d.metadata_json, "{\"lang\":\"en\"}"));
  store_doc_free(&d);
  CHECK(store_doc_get_by_num(st, nums[1], &d) == PROTO_OK);
  CHECK(d.id && !strcmp(d.id, "beta") && d.first_chunk == 4 && d.n_chunks == 1);
  CHECK(d.metadata_json && !strcmp(d.metadata_json, "{}"));
  store_doc_free(&d);
  CHECK(store_doc_get(st, "gamma", &d) == PROTO_OK && d.n_chunks == 0);
  store_doc_free(&d);
  store_doc_free(NULL);

  CHECK(doc_chunks_ok(st, "alpha", 1, 3)); /* F of chunk 0,1 = next; chunk 2 empty */
  CHECK(doc_chunks_ok(st, "beta", 2, 1));  /* single chunk: empty F */

  /* The last chunk of alpha (id 3) must not take beta's first chunk (id 4) as F. */
  store_chunk ch;
  CHECK(store_chunk_get(st, 3, &ch) == PROTO_OK && ch.n_next_tokens == 0 && ch.next_text_len == 0);
  store_chunk_free(&ch);
  store_chunk_free(NULL);

  /* store_chunk_doc: the header only, same doc id and ordinal as store_chunk_get */
  uint64_t cd = 0;
  uint32_t co = 99;
  CHECK(store_chunk_doc(st, 2, &cd, &co) == PROTO_OK && cd == nums[0] && co == 1);
  CHECK(store_chunk_doc(st, 4, &cd, &co) == PROTO_OK && cd == nums[1] && co == 0);
  CHECK(store_chunk_doc(st, 3, NULL, &co) == PROTO_OK && co == 2);
  CHECK(store_chunk_doc(st, 0, &cd, &co) == PROTO_ENOTFOUND);
  CHECK(store_chunk_doc(st, 5, &cd, &co) == PROTO_ENOTFOUND);
  CHECK(store_chunk_doc(NULL, 1, &cd, &co) == PROTO_EINVAL);

  /* a snapshot answers as the single reads do, several lookups in one txn */
  store_snap sn = {0};
  CHECK(store_snap_chunk_doc(&sn, 2, &cd, &co) == PROTO_EINVAL); /* not begun */
  CHECK(store_snap_begin(st, &sn) == PROTO_OK && sn.st == st);
  CHECK(store_snap_chunk_doc(&sn, 2, &cd, &co) == PROTO_OK && cd == nums[0] && co == 1);
  CHECK(store_snap_chunk_doc(&sn, 5, &cd, &co) == PROTO_ENOTFOUND);
  store_chunk sc;
  CHECK(store_snap_chunk_get(&sn, 1, &sc) == PROTO_OK && sc.chunk_id == 1 && sc.ordinal == 0 &&
        sc.n_tokens > 0 && sc.n_next_tokens > 0);
  CHECK(store_chunk_get(st, 1, &ch) == PROTO_OK); /* a plain read nested in the snapshot */
  CHECK(ch.n_tokens == sc.n_tokens &&
        !memcmp(ch.tokens, sc.tokens, ch.n_tokens * sizeof *ch.tokens) &&
        ch.text_len == sc.text_len && !memcmp(ch.text, sc.text, ch.text_len) &&
        ch.next_text_len == sc.next_text_len);
  store_chunk_free(&ch);
  store_chunk_free(&sc);
  CHECK(store_snap_chunk_get(&sn, 3, &sc) == PROTO_OK && sc.n_next_tokens == 0);
  store_chunk_free(&sc);
  CHECK(store_snap_chunk_get(&sn, 9, &sc) == PROTO_ENOTFOUND);
  CHECK(store_snap_doc_by_num(&sn, nums[1], &d) == PROTO_OK && d.id && !strcmp(d.id, "beta"));
  store_doc_free(&d);
  CHECK(store_snap_doc_by_num(&sn, 99, &d) == PROTO_ENOTFOUND);
  store_snap_end(&sn);
  CHECK(sn.st == NULL);
  store_snap_end(&sn); /* twice: harmless */
  CHECK(store_snap_begin(NULL, &sn) == PROTO_EINVAL);

  CHECK(store_doc_get(st, "nope", &d) == PROTO_ENOTFOUND);
  CHECK(store_doc_get_by_num(st, 99, &d) == PROTO_ENOTFOUND);
  CHECK(store_chunk_get(st, 0, &ch) == PROTO_ENOTFOUND);
  CHECK(store_chunk_get(st, 5, &ch) == PROTO_ENOTFOUND);
  CHECK(store_last_error()[0] != 0);
  float v[DIM];
  CHECK(store_vector_get(st, 5, v) == PROTO_ENOTFOUND);

  store_stats s;
  CHECK(store_stats_get(st, &s) == PROTO_OK);
  CHECK(s.docs == 3 && s.chunks == 4 && s.next_chunk_id == 5 && s.dim == DIM);
  CHECK(s.map_bytes >= ((size_t)64 << 20));

  char *val = NULL;
  CHECK(store_meta_get(st, "encoder", &val) == PROTO_OK && val == NULL);
  CHECK(store_meta_put(st, "encoder", "bert-mini/384") == PROTO_OK);
  CHECK(store_meta_get(st, "encoder", &val) == PROTO_OK && val && !strcmp(val, "bert-mini/384"));
  free(val);
  val = NULL; /* a failed get below must not leave it to be freed twice */
  CHECK(store_meta_get(st, "dim", &val) == PROTO_OK && val && !strcmp(val, "8"));
  free(val);
  CHECK(store_meta_put(st, "next_chunk_id", "1") == PROTO_EINVAL);
  CHECK(store_meta_put(st, "schema", "2") == PROTO_EINVAL);
  CHECK(store_meta_put(st, "dim", "3") == PROTO_EDIM);
  CHECK(store_meta_put(st, "dim", "8") == PROTO_OK);
  CHECK(store_meta_put(st, "dim", "8x") == PROTO_EINVAL);

  store_close(st);
  store_close(NULL);
  rm_rf(dir);
  free(dir);
}

TEST(replace_and_delete) {
  char *dir = tmp_dir();
  store *st = NULL;
  CHECK(store_open(dir, NULL, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }
  static gen_doc a, b, a2;
  gen(&a, "a", 1, 4);
  gen(&b, "b", 2, 2);
  store_doc_input docs[2] = {a.in, b.in};
  CHECK(store_upsert(st, docs, 2, DIM, NULL) == PROTO_OK); /* a: 1..4, b: 5..6 */

  gen(&a2, "a", 7, 2);
  uint64_t num = 0;
  CHECK(store_upsert(st, &a2.in, 1, DIM, &num) == PROTO_OK); /* a: 7..8 */
  CHECK(num == 3); /* a replaced document gets a new doc id */
  CHECK(doc_chunks_ok(st, "a", 7, 2));
  CHECK(doc_chunks_ok(st, "b", 2, 2));
  store_doc d;
  CHECK(store_doc_get_by_num(st, 1, &d) == PROTO_ENOTFOUND);
  CHECK(store_doc_get(st, "a", &d) == PROTO_OK && d.first_chunk == 7);
  store_doc_free(&d);
  store_chunk ch;
  float v[DIM];
  for (uint64_t id = 1; id <= 4; id++) {
    CHECKF(store_chunk_get(st, id, &ch) == PROTO_ENOTFOUND, "chunk %llu", (unsigned long long)id);
    CHECK(store_vector_get(st, id, v) == PROTO_ENOTFOUND);
  }
  uint64_t *t = NULL;
  size_t nt = 0;
  CHECK(store_tombstones(st, &t, &nt) == PROTO_OK);
  CHECK(nt == 4 && t && t[0] == 1 && t[1] == 2 && t[2] == 3 && t[3] == 4);
  free(t);

  int found = -1;
  CHECK(store_delete(st, "b", &found) == PROTO_OK && found == 1);
  CHECK(store_delete(st, "b", &found) == PROTO_OK && found == 0);
  CHECK(store_doc_get(st, "b", &d) == PROTO_ENOTFOUND);
  CHECK(store_chunk_get(st, 5, &ch) == PROTO_ENOTFOUND);
  CHECK(store_chunk_get(st, 6, &ch) == PROTO_ENOTFOUND);
  uint64_t cd = 0;
  CHECK(store_chunk_doc(st, 5, &cd, NULL) == PROTO_ENOTFOUND); /* deleted */
  CHECK(store_chunk_doc(st, 1, &cd, NULL) == PROTO_ENOTFOUND); /* replaced */
  CHECK(store_chunk_doc(st, 7, &cd, NULL) == PROTO_OK && cd == 3);
  CHECK(store_tombstones(st, &t, &nt) == PROTO_OK);
  CHECK(nt == 6 && has_id(t, nt, 5) && has_id(t, nt, 6));
  free(t);

  /* Re-adding a deleted id works and takes fresh ids. */
  CHECK(store_upsert(st, &b.in, 1, DIM, &num) == PROTO_OK && num == 4);
  CHECK(doc_chunks_ok(st, "b", 2, 2));
  CHECK(store_doc_get(st, "b", &d) == PROTO_OK && d.first_chunk == 9);
  store_doc_free(&d);

  store_stats s;
  CHECK(store_stats_get(st, &s) == PROTO_OK && s.docs == 2 && s.chunks == 4 &&
        s.next_chunk_id == 11);

  /* Listing: live documents in doc id order (a is #3, b is #4), by pages. */
  store_doc page[2];
  size_t n = 9;
  int more = -1;
  CHECK(store_docs_list(st, 0, 1, page, &n, &more) == PROTO_OK && n == 1 && more == 1);
  CHECK(n == 1 && page[0].doc_id == 3 && !strcmp(page[0].id, "a") && page[0].first_chunk == 7 &&
        page[0].n_chunks == 2);
  if (n == 1) store_doc_free(&page[0]);
  CHECK(store_docs_list(st, 3, 2, page, &n, &more) == PROTO_OK && n == 1 && more == 0);
  CHECK(n == 1 && page[0].doc_id == 4 && !strcmp(page[0].id, "b"));
  if (n == 1) store_doc_free(&page[0]);
  CHECK(store_docs_list(st, 0, 2, page, &n, &more) == PROTO_OK && n == 2 && more == 0);
  for (size_t i = 0; i < n; i++) store_doc_free(&page[i]);
  CHECK(store_docs_list(st, 4, 2, page, &n, &more) == PROTO_OK && n == 0 && more == 0);
  CHECK(store_docs_list(st, UINT64_MAX, 2, page, &n, &more) == PROTO_OK && n == 0 && more == 0);
  CHECK(store_docs_list(st, 0, 0, NULL, &n, &more) == PROTO_OK && n == 0 && more == 1);
  store_close(st);
  rm_rf(dir);
  free(dir);
}

/* A store_doc_test: metadata {"k":1}; counts the documents it saw. */
static int meta_k1(void *ctx, const char *metadata_json) {
  ++*(int *)ctx;
  return strstr(metadata_json, "\"k\":1") != NULL;
}

TEST(batches_and_errors) {
  char *dir = tmp_dir();
  store *st = NULL;
  CHECK(store_open(dir, NULL, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }
  static gen_doc a, b, bad, dup1, dup2;
  gen(&a, "a", 1, 2);
  gen(&b, "b", 2, 2);
  gen(&bad, "bad", 3, 2);
  bad.ch[1].n_tokens = PROTO_CHUNK_TOKENS + 1;
  store_doc_input docs[3] = {a.in, b.in, bad.in};
  store_stats s;
  /* All or nothing: a bad document fails the whole batch. */
  CHECK(store_upsert(st, docs, 3, DIM, NULL) == PROTO_EINVAL);
  CHECK(store_stats_get(st, &s) == PROTO_OK && s.docs == 0 && s.chunks == 0 && s.dim == 0);
  store_doc_input noid = a.in;
  noid.id = "";
  CHECK(store_upsert(st, &noid, 1, DIM, NULL) == PROTO_EINVAL);
  CHECK(store_upsert(st, &a.in, 1, 0, NULL) == PROTO_EDIM);
  CHECK(store_meta_put(st, "dim", "0") == PROTO_EINVAL);
  CHECK(store_upsert(st, &a.in, 1, PROTO_MAX_DIM + 1, NULL) == PROTO_EDIM);
  a.vec[1][3] = 0.0f / 0.0f;
  CHECK(store_upsert(st, &a.in, 1, DIM, NULL) == PROTO_ERANGE);
  a.vec[1][3] = vec_of(1, 1, 3);

  CHECK(store_upsert(st, docs, 2, DIM, NULL) == PROTO_OK);
  /* The first write fixed dim; another dim fails and changes nothing. */
  static float wide[2][DIM * 2];
  store_chunk_input wc[2] = {a.ch[0], a.ch[1]};
  wc[0].vector = wide[0];
  wc[1].vector = wide[1];
  store_doc_input w = {"wide", NULL, 2, wc, NULL};
  CHECK(store_upsert(st, &w, 1, DIM * 2, NULL) == PROTO_EDIM);
  CHECK(strstr(store_last_error(), "dim") != NULL);
  CHECK(store_stats_get(st, &s) == PROTO_OK && s.docs == 2 && s.chunks == 4 && s.dim == DIM);

  /* The same id twice in one batch: the later one wins; the earlier one's
   * chunks were never committed, so they are not tombstoned. */
  gen(&dup1, "dup", 4, 3);
  gen(&dup2, "dup", 5, 2);
  store_doc_input dd[2] = {dup1.in, dup2.in};
  uint64_t nums[2];
  CHECK(store_upsert(st, dd, 2, DIM, nums) == PROTO_OK);
  CHECK(doc_chunks_ok(st, "dup", 5, 2));
  uint64_t *t = NULL;
  size_t nt = 9;
  CHECK(store_tombstones(st, &t, &nt) == PROTO_OK && nt == 0 && t == NULL);
  CHECK(store_stats_get(st, &s) == PROTO_OK && s.docs == 3 && s.chunks == 6 &&
        s.next_chunk_id == 10);

  /* Ids up to PROTO_MAX_ID_BYTES, including ones longer than LMDB's key
   * limit that share a long prefix. */
  static char long1[PROTO_MAX_ID_BYTES + 1], long2[PROTO_MAX_ID_BYTES + 1],
      toolong[PROTO_MAX_ID_BYTES + 2];
  memset(long1, 'x', PROTO_MAX_ID_BYTES);
  memset(long2, 'x', PROTO_MAX_ID_BYTES);
  long2[PROTO_MAX_ID_BYTES - 1] = 'y';
  memset(toolong, 'x', PROTO_MAX_ID_BYTES + 1);
  store_doc_input l1 = a.in, l2 = b.in, l3 = a.in;
  l1.id = long1;
  l2.id = long2;
  l3.id = toolong;
  CHECK(store_upsert(st, &l1, 1, DIM, NULL) == PROTO_OK);
  CHECK(store_upsert(st, &l2, 1, DIM, NULL) == PROTO_OK);
  CHECK(store_upsert(st, &l3, 1, DIM, NULL) == PROTO_EINVAL);
  CHECK(doc_chunks_ok(st, long1, 1, 2));
  CHECK(doc_chunks_ok(st, long2, 2, 2));
  int found = 0;
  CHECK(store_delete(st, long1, &found) == PROTO_OK && found == 1);
  store_doc d;
  CHECK(store_doc_get(st, long1, &d) == PROTO_ENOTFOUND);
  CHECK(doc_chunks_ok(st, long2, 2, 2));
  CHECK(store_upsert(st, &l2, 1, DIM, NULL) == PROTO_OK); /* replace a long id */
  CHECK(doc_chunks_ok(st, long2, 2, 2));
  CHECK(store_stats_get(st, &s) == PROTO_OK && s.docs == 4);

  /* Many deletes in one transaction: an id that cannot be one fails them
   * all; an absent id, or one given again, is reported not found. */
  const char *some[] = {"a", toolong}, *three[] = {"a", "missing", "a", "b"};
  int f[4] = {7, 7, 7, 7};
  CHECK(store_delete_many(st, some, 2, f) == PROTO_EINVAL && f[0] == 0 && f[1] == 0);
  CHECK(doc_chunks_ok(st, "a", 1, 2));
  CHECK(store_delete_many(st, three, 4, f) == PROTO_OK && f[0] == 1 && f[1] == 0 && f[2] == 0 &&
        f[3] == 1);
  CHECK(store_doc_get(st, "a", &d) == PROTO_ENOTFOUND &&
        store_doc_get(st, "b", &d) == PROTO_ENOTFOUND);
  CHECK(store_stats_get(st, &s) == PROTO_OK && s.docs == 2);
  CHECK(store_delete_many(st, NULL, 0, NULL) == PROTO_OK);

  /* By metadata, in one transaction: every document is tested once. */
  static gen_doc m1, m2, m3;
  gen(&m1, "m1", 11, 1);
  gen(&m2, "m2", 12, 2);
  gen(&m3, "m3", 13, 1);
  m1.in.metadata_json = "{\"k\":1}";
  m2.in.metadata_json = "{\"k\":2}";
  m3.in.metadata_json = "{\"k\":1}";
  store_doc_input ms[3] = {m1.in, m2.in, m3.in};
  CHECK(store_upsert(st, ms, 3, DIM, NULL) == PROTO_OK);
  size_t deleted = 99;
  int tested = 0;
  CHECK(store_delete_where(st, meta_k1, &tested, &deleted) == PROTO_OK && deleted == 2 &&
        tested == 5);
  CHECK(store_doc_get(st, "m1", &d) == PROTO_ENOTFOUND &&
        store_doc_get(st, "m3", &d) == PROTO_ENOTFOUND);
  CHECK(doc_chunks_ok(st, "m2", 12, 2));
  CHECK(store_stats_get(st, &s) == PROTO_OK && s.docs == 3);
  CHECK(store_delete_where(st, meta_k1, &tested, &deleted) == PROTO_OK && deleted == 0);
  CHECK(store_delete_where(st, NULL, NULL, &deleted) == PROTO_EINVAL);

  store_close(st);
  rm_rf(dir);
  free(dir);
}

/* Vectors feed -------------------------------------------------------------- */

typedef struct scan_log {
  uint64_t ids[64];
  float first[64];
  size_t n, calls, max_batch;
  int stop_after;
  store *st;
  int nested_ok;
} scan_log;

static proto_status log_fn(void *ctx, const uint64_t *ids, const float *vecs, size_t n) {
  scan_log *l = ctx;
  l->calls++;
  if (n > l->max_batch) l->max_batch = n;
  for (size_t i = 0; i < n && l->n < 64; i++) {
    l->ids[l->n] = ids[i];
    l->first[l->n++] = vecs[i * DIM];
  }
  if (l->st) {
    /* reads from inside the callback work; writes are refused */
    store_chunk c;
    if (store_chunk_get(l->st, ids[0], &c) == PROTO_OK && c.chunk_id == ids[0]) l->nested_ok++;
    store_chunk_free(&c);
    if (store_meta_put(l->st, "x", "y") != PROTO_EINVAL) l->nested_ok = -1000;
  }
  if (l->stop_after && (int)l->calls >= l->stop_after) return PROTO_ECANCELLED;
  return PROTO_OK;
}

TEST(vectors_feed) {
  char *dir = tmp_dir();
  store *st = NULL;
  CHECK(store_open(dir, NULL, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }
  scan_log l = {0};
  float *vs = NULL;
  size_t nv = 7;
  CHECK(store_vectors_scan(st, 0, 4, log_fn, &l) == PROTO_OK && l.calls == 0);
  CHECK(store_vectors_sample(st, 10, &vs, &nv) == PROTO_OK && nv == 0 && vs == NULL);

  static gen_doc g[5];
  store_doc_input in[5];
  char id[16];
  for (unsigned i = 0; i < 5; i++) {
    snprintf(id, sizeof id, "d%u", i);
    gen(&g[i], id, 10 + i, 4); /* doc i: chunks 4i+1 .. 4i+4 */
    in[i] = g[i].in;
  }
  CHECK(store_upsert(st, in, 5, DIM, NULL) == PROTO_OK); /* chunks 1..20 */
  int found;
  CHECK(store_delete(st, "d1", &found) == PROTO_OK && found); /* 5..8 dead */

  l = (scan_log){0};
  l.st = st;
  CHECK(store_vectors_scan(st, 0, 3, log_fn, &l) == PROTO_OK);
  CHECK(l.n == 16 && l.calls == 6 && l.max_batch == 3);
  int ordered = 1, live = 1, vec_ok = 1;
  for (size_t i = 0; i < l.n; i++) {
    if (i && l.ids[i] <= l.ids[i - 1]) ordered = 0;
    if (l.ids[i] >= 5 && l.ids[i] <= 8) live = 0;
    uint64_t doc = (l.ids[i] - 1) / 4, ord = (l.ids[i] - 1) % 4;
    if (l.first[i] != vec_of(10 + (unsigned)doc, (unsigned)ord, 0)) vec_ok = 0;
  }
  CHECK(ordered && live && vec_ok);
  CHECK(l.nested_ok == 6);

  l = (scan_log){0};
  CHECK(store_vectors_scan(st, 12, 100, log_fn, &l) == PROTO_OK);
  CHECK(l.n == 8 && l.ids[0] == 13 && l.ids[7] == 20 && l.calls == 1);
  l = (scan_log){0};
  l.stop_after = 2;
  CHECK(store_vectors_scan(st, 0, 2, log_fn, &l) == PROTO_ECANCELLED && l.calls == 2);
  l = (scan_log){0};
  CHECK(store_vectors_scan(st, 20, 2, log_fn, &l) == PROTO_OK && l.calls == 0);

  /* sample: 4 of the 16 live vectors, evenly spread (every 4th in id order) */
  CHECK(store_vectors_sample(st, 4, &vs, &nv) == PROTO_OK && nv == 4);
  if (nv == 4) {
    CHECK(vs[0] == vec_of(10, 0, 0));   /* id 1 */
    CHECK(vs[DIM] == vec_of(12, 0, 0)); /* id 9: 5th live */
    CHECK(vs[2 * DIM] == vec_of(13, 0, 0));
    CHECK(vs[3 * DIM] == vec_of(14, 0, 0));
    CHECK(vs[3 * DIM + 1] == vec_of(14, 0, 1));
  }
  free(vs);
  CHECK(store_vectors_sample(st, 100, &vs, &nv) == PROTO_OK && nv == 16);
  free(vs);

  uint64_t wm = 99, *t = NULL;
  size_t nt = 0;
  CHECK(store_index_watermark(st, &wm) == PROTO_OK && wm == 0);
  CHECK(store_tombstones(st, &t, &nt) == PROTO_OK && nt == 4);
  uint64_t applied[3] = {5, 6, 77};
  CHECK(store_index_mark(st, 20, applied, 3) == PROTO_OK);
  free(t);
  CHECK(store_index_watermark(st, &wm) == PROTO_OK && wm == 20);
  CHECK(store_tombstones(st, &t, &nt) == PROTO_OK && nt == 2 && t[0] == 7 && t[1] == 8);
  free(t);
  CHECK(store_meta_put(st, "index_watermark", "1") == PROTO_EINVAL);

  /* Reopen after close keeps everything. */
  store_stats before, after;
  CHECK(store_meta_put(st, "decoder", "retro-small") == PROTO_OK);
  CHECK(store_stats_get(st, &before) == PROTO_OK);
  store_close(st);
  st = NULL;
  CHECK(store_open(dir, NULL, &st) == PROTO_OK);
  if (!st) {
    rm_rf(dir);
    free(dir);
    return;
  }
  CHECK(store_stats_get(st, &after) == PROTO_OK);
  CHECK(after.docs == before.docs && after.chunks == before.chunks &&
        after.next_chunk_id == before.next_chunk_id && after.dim == DIM);
  CHECK(store_index_watermark(st, &wm) == PROTO_OK && wm == 20);
  CHECK(store_tombstones(st, &t, &nt) == PROTO_OK && nt == 2 && t[0] == 7 && t[1] == 8);
  free(t);
  char *val = NULL;
  CHECK(store_meta_get(st, "decoder", &val) == PROTO_OK && val && !strcmp(val, "retro-small"));
  free(val);
  for (unsigned i = 0; i < 5; i++) {
    snprintf(id, sizeof id, "d%u", i);
    if (i == 1) {
      store_doc d;
      CHECK(store_doc_get(st, id, &d) == PROTO_ENOTFOUND);
    } else {
      CHECKF(doc_chunks_ok(st, id, 10 + i, 4), "doc %s after reopen", id);
    }
  }
  /* counters continue where they were */
  static gen_doc h;
  gen(&h, "after", 30, 1);
  uint64_t num = 0;
  CHECK(store_upsert(st, &h.in, 1, DIM, &num) == PROTO_OK && num == 6);
  store_doc d;
  CHECK(store_doc_get(st, "after", &d) == PROTO_OK && d.first_chunk == 21);
  store_doc_free(&d);
  /* dim is remembered across reopen */
  static float wide[DIM * 2];
  store_chunk_input wc = h.ch[0];
  wc.vector = wide;
  store_doc_input w = {"wide", NULL, 1, &wc, NULL};
  CHECK(store_upsert(st, &w, 1, DIM * 2, NULL) == PROTO_EDIM);
  store_close(st);
  rm_rf(dir);
  free(dir);
}

/* Map growth ------------------------------------------------------------------ */

/* Bulk chunks for growth and concurrency: 384-d vectors, 64 tokens, 256 bytes
 * of text (~1.8 KB of payload each). Chunk j of doc seed is fully determined. */
enum { BDIM = 384, BTEXT = 256 };

typedef struct bulk {
  store_doc_input *docs;
  store_chunk_input *ch;
  int32_t *tok;
  float *vec;
  char *text;
  char (*ids)[32];
} bulk;

static float bvec(uint64_t seed, unsigned ord, unsigned i) {
  return (float)((seed * 31 + ord * 7 + i) % 1000) * 0.001f;
}

static void bulk_init(bulk *b, size_t ndocs, unsigned cpd) {
  size_t nc = ndocs * cpd;
  b->docs = calloc(ndocs, sizeof *b->docs);
  b->ch = calloc(nc, sizeof *b->ch);
  b->tok = calloc(nc * PROTO_CHUNK_TOKENS, sizeof *b->tok);
  b->vec = calloc(nc * BDIM, sizeof *b->vec);
  b->text = calloc(nc, BTEXT);
  b->ids = calloc(ndocs, sizeof *b->ids);
}

static void bulk_free(bulk *b) {
  free(b->docs);
  free(b->ch);
  free(b->tok);
  free(b->vec);
  free(b->text);
  free(b->ids);
}

/* Fills ndocs documents with seeds first_seed.. (cpd chunks each). */
static void bulk_fill(bulk *b, size_t ndocs, unsigned cpd, uint64_t first_seed) {
  for (size_t d = 0; d < ndocs; d++) {
    uint64_t seed = first_seed + d;
    snprintf(b->ids[d], sizeof b->ids[d], "bulk-%llu", (unsigned long long)seed);
    for (unsigned j = 0; j < cpd; j++) {
      size_t c = d * cpd + j;
      int32_t *t = b->tok + c * PROTO_CHUNK_TOKENS;
      float *v = b->vec + c * BDIM;
      char *x = b->text + c * BTEXT;
      for (unsigned i = 0; i < PROTO_CHUNK_TOKENS; i++) t[i] = (int32_t)(seed * 64 + j + i);
      for (unsigned i = 0; i < BDIM; i++) v[i] = bvec(seed, j, i);
      memset(x, 'a' + (int)((seed + j) % 26), BTEXT);
      b->ch[c] = (store_chunk_input){t, PROTO_CHUNK_TOKENS, x, BTEXT, v};
    }
    b->docs[d] = (store_doc_input){b->ids[d], NULL, cpd, b->ch + d * cpd, NULL};
  }
}

/* 1 when chunk_id holds chunk ord of doc seed with the right F. */
static int bulk_chunk_ok(store *st, uint64_t chunk_id, uint64_t seed, unsigned ord, unsigned cpd) {
  store_chunk c;
  int ok = store_chunk_get(st, chunk_id, &c) == PROTO_OK && c.ordinal == ord &&
           c.n_tokens == PROTO_CHUNK_TOKENS && c.text_len == BTEXT &&
           c.tokens[5] == (int32_t)(seed * 64 + ord + 5) &&
           c.text[BTEXT - 1] == 'a' + (int)((seed + ord) % 26);
  if (ok && ord + 1 < cpd)
    ok =
        c.n_next_tokens == PROTO_CHUNK_TOKENS && c.next_tokens[0] == (int32_t)(seed * 64 + ord + 1);
  else if (ok) ok = c.n_next_tokens == 0 && c.next_text_len == 0;
  store_chunk_free(&c);
  return ok;
}

TEST(map_growth_100mb) {
  char *dir = tmp_dir();
  store *st = NULL;
  store_options opt = {.map_bytes = (size_t)1 << 20};
  CHECK(store_open(dir, &opt, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }
  store_stats s;
  CHECK(store_stats_get(st, &s) == PROTO_OK && s.map_bytes == ((size_t)1 << 20));

  /* 100 MB of chunk payload: 56 batches x 500 docs x 2 chunks x ~1.8 KB. */
  enum { NDOC = 500, CPD = 2, BATCHES = 56 };
  bulk b;
  bulk_init(&b, NDOC, CPD);
  size_t payload = 0;
  int all_ok = 1;
  double t0 = proto_now();
  for (unsigned k = 0; k < BATCHES && all_ok; k++) {
    bulk_fill(&b, NDOC, CPD, (uint64_t)k * NDOC + 1);
    proto_status ps = store_upsert(st, b.docs, NDOC, BDIM, NULL);
    if (ps != PROTO_OK) {
      all_ok = 0;
      CHECKF(ps == PROTO_OK, "batch %u: %s (%s)", k, proto_strerror(ps), store_last_error());
    }
    payload += (size_t)NDOC * CPD * (BDIM * 4 + PROTO_CHUNK_TOKENS * 4 + BTEXT);
  }
  double dt = proto_now() - t0;
  CHECK(all_ok);
  printf("# %zu MB of chunks in %.2f s (%.0f chunks/s); map grew to %zu MiB\n", payload >> 20, dt,
         (double)NDOC * CPD * BATCHES / dt, (store_stats_get(st, &s), s.map_bytes >> 20));
  CHECK(payload >= (size_t)100 << 20);
  CHECK(store_stats_get(st, &s) == PROTO_OK);
  CHECK(s.chunks == (uint64_t)NDOC * CPD * BATCHES && s.docs == (uint64_t)NDOC * BATCHES);
  CHECK(s.map_bytes >= payload);
  /* spot checks across the whole range, including document ends */
  int spot = 1;
  for (uint64_t seed = 1; seed <= (uint64_t)NDOC * BATCHES; seed += 997)
    for (unsigned j = 0; j < CPD; j++)
      if (!bulk_chunk_ok(st, (seed - 1) * CPD + 1 + j, seed, j, CPD)) spot = 0;
  CHECK(spot);
  /* Reopening with a small map option keeps the size the map grew to. */
  size_t grown = s.map_bytes;
  store_close(st);
  st = NULL;
  CHECK(store_open(dir, &opt, &st) == PROTO_OK);
  CHECK(st && store_stats_get(st, &s) == PROTO_OK && s.map_bytes == grown);
  CHECK(st && bulk_chunk_ok(st, 7, 4, 0, CPD));
  bulk_free(&b);
  store_close(st);
  rm_rf(dir);
  free(dir);
}

/* 300 concurrent readers -------------------------------------------------------- */

enum { NREADERS = 300, PRE_DOCS = 40, PRE_CPD = 3 };

typedef struct reader_ctx {
  store *st;
  pthread_barrier_t *bar;
  unsigned idx;
  int iters;
  int ok, fail;
  atomic_int *writer_done;
} reader_ctx;

static proto_status barrier_fn(void *ctx, const uint64_t *ids, const float *vecs, size_t n) {
  (void)ids;
  (void)vecs;
  (void)n;
  reader_ctx *r = ctx;
  pthread_barrier_wait(r->bar); /* all 300 scans hold a read txn right here */
  return PROTO_ECANCELLED;      /* one batch is enough */
}

static void *scan_thread(void *arg) {
  reader_ctx *r = arg;
  if (store_vectors_scan(r->st, 0, 1, barrier_fn, r) == PROTO_ECANCELLED) r->ok++;
  else r->fail++;
  return NULL;
}

/* Reads preloaded docs (never rewritten) and checks every byte it reads. */
static void *read_thread(void *arg) {
  reader_ctx *r = arg;
  unsigned x = r->idx * 2654435761u + 1;
  pthread_barrier_wait(r->bar);
  for (int i = 0; i < r->iters || !atomic_load(r->writer_done); i++) {
    x = x * 1103515245u + 12345u;
    uint64_t seed = 1 + (x >> 8) % PRE_DOCS;
    unsigned ord = (x >> 4) % PRE_CPD;
    int ok = bulk_chunk_ok(r->st, (seed - 1) * PRE_CPD + 1 + ord, seed, ord, PRE_CPD);
    if (ok && i % 8 == 0) {
      store_doc d;
      char id[32];
      snprintf(id, sizeof id, "bulk-%llu", (unsigned long long)seed);
      ok = store_doc_get(r->st, id, &d) == PROTO_OK && d.n_chunks == PRE_CPD;
      store_doc_free(&d);
    }
    if (ok && i % 16 == 0) {
      store_stats s;
      ok = store_stats_get(r->st, &s) == PROTO_OK && s.dim == BDIM;
    }
    if (ok) r->ok++;
    else r->fail++;
    if (i % 4 == 3) { /* leave the writer some CPU: 300 spinning threads on 2 cores starve it */
      struct timespec ts = {0, 50000};
      nanosleep(&ts, NULL);
    }
    if (i > 20000) break;
  }
  return NULL;
}

typedef struct writer_ctx {
  store *st;
  pthread_barrier_t *bar;
  int batches, failed;
  atomic_int *done;
} writer_ctx;

static void *write_thread(void *arg) {
  writer_ctx *w = arg;
  bulk b;
  bulk_init(&b, 100, 2);
  pthread_barrier_wait(w->bar);
  for (int k = 0; k < w->batches; k++) {
    bulk_fill(&b, 100, 2, 1000000 + (uint64_t)k * 100);
    if (store_upsert(w->st, b.docs, 100, BDIM, NULL) != PROTO_OK) w->failed++;
    if (k % 4 == 3) { /* replace some of the writer's own docs too */
      if (store_upsert(w->st, b.docs, 10, BDIM, NULL) != PROTO_OK) w->failed++;
    }
  }
  atomic_store(w->done, 1);
  bulk_free(&b);
  return NULL;
}

TEST(concurrent_readers) {
  char *dir = tmp_dir();
  store *st = NULL;
  store_options opt = {.map_bytes = (size_t)1 << 20}; /* default 4096 reader slots */
  CHECK(store_open(dir, &opt, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }
  bulk pre;
  bulk_init(&pre, PRE_DOCS, PRE_CPD);
  bulk_fill(&pre, PRE_DOCS, PRE_CPD, 1);
  CHECK(store_upsert(st, pre.docs, PRE_DOCS, BDIM, NULL) == PROTO_OK);
  bulk_free(&pre);

  static pthread_t th[NREADERS + 1];
  static reader_ctx rc[NREADERS];
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 1 << 20);
  atomic_int writer_done = 0;

  /* Phase 1: 300 read transactions open at the same moment (> LMDB's 126). */
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, NREADERS);
  int started = 0;
  for (unsigned i = 0; i < NREADERS; i++) {
    rc[i] = (reader_ctx){st, &bar, i, 0, 0, 0, &writer_done};
    if (pthread_create(&th[i], &attr, scan_thread, &rc[i]) == 0) started++;
  }
  CHECK(started == NREADERS);
  int ok = 0;
  for (int i = 0; i < started; i++) {
    pthread_join(th[i], NULL);
    ok += rc[i].ok;
  }
  CHECK(ok == NREADERS);
  pthread_barrier_destroy(&bar);

  /* Phase 2: 300 readers while a writer adds ~15 MB (the 1 MiB map grows). */
  store_stats s0, s1;
  CHECK(store_stats_get(st, &s0) == PROTO_OK);
  pthread_barrier_init(&bar, NULL, NREADERS + 1);
  writer_ctx wc = {st, &bar, 40, 0, &writer_done};
  started = 0;
  for (unsigned i = 0; i < NREADERS; i++) {
    rc[i] = (reader_ctx){st, &bar, i, 40, 0, 0, &writer_done};
    if (pthread_create(&th[i], &attr, read_thread, &rc[i]) == 0) started++;
  }
  CHECK(started == NREADERS);
  if (pthread_create(&th[NREADERS], &attr, write_thread, &wc) != 0) {
    CHECK(!"writer thread");
    atomic_store(&writer_done, 1);
  }
  long reads = 0, fails = 0;
  for (int i = 0; i < started; i++) {
    pthread_join(th[i], NULL);
    reads += rc[i].ok;
    fails += rc[i].fail;
  }
  pthread_join(th[NREADERS], NULL);
  printf("# %ld reads by %d threads, %ld failed\n", reads, started, fails);
  CHECK(fails == 0 && reads >= (long)NREADERS * 40);
  CHECK(wc.failed == 0);
  CHECK(store_stats_get(st, &s1) == PROTO_OK);
  CHECKF(s1.map_bytes > s0.map_bytes, "map %zu -> %zu", s0.map_bytes, s1.map_bytes);
  CHECK(s1.docs == PRE_DOCS + 40 * 100 && s1.chunks == (PRE_DOCS * PRE_CPD) + 40 * 100 * 2);
  pthread_barrier_destroy(&bar);
  pthread_attr_destroy(&attr);
  store_close(st);
  rm_rf(dir);
  free(dir);
}

/* Another process grows the map ------------------------------------------------ */

/* In a child process: opens dir, writes ndocs x 2 bulk chunks from seed. */
static int child_writes(const char *dir, uint64_t seed, size_t ndocs) {
  pid_t pid = fork();
  if (pid < 0) return 0;
  if (pid == 0) {
    store *cs = NULL;
    store_options o = {.map_bytes = (size_t)1 << 20};
    bulk b;
    int ok = store_open(dir, &o, &cs) == PROTO_OK;
    bulk_init(&b, 100, 2);
    for (size_t k = 0; ok && k < ndocs / 100; k++) {
      bulk_fill(&b, 100, 2, seed + k * 100);
      ok = store_upsert(cs, b.docs, 100, BDIM, NULL) == PROTO_OK;
    }
    store_close(cs);
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return 0;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(other_process_grows_map) {
  char *dir = tmp_dir();
  store *st = NULL;
  store_options opt = {.map_bytes = (size_t)1 << 20};
  CHECK(store_open(dir, &opt, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }
  bulk b;
  bulk_init(&b, 100, 2);
  bulk_fill(&b, 100, 2, 1);
  CHECK(store_upsert(st, b.docs, 100, BDIM, NULL) == PROTO_OK); /* chunks 1..200 */
  /* A child writes 3000 docs (~11 MB): its map grows far past ours. */
  CHECK(child_writes(dir, 101, 3000)); /* chunks 201..6200 */
  /* Our next write txn meets MDB_MAP_RESIZED, adopts the size and succeeds. */
  bulk_fill(&b, 100, 2, 3101);
  CHECK(store_upsert(st, b.docs, 100, BDIM, NULL) == PROTO_OK); /* 6201..6400 */
  store_stats s;
  CHECK(store_stats_get(st, &s) == PROTO_OK && s.docs == 3200 && s.map_bytes > ((size_t)8 << 20));
  /* Again, and this time a read transaction meets MDB_MAP_RESIZED first. */
  CHECK(child_writes(dir, 3201, 6000)); /* 6401..18400 */
  CHECK(bulk_chunk_ok(st, 18400, 9200, 1, 2));
  CHECK(bulk_chunk_ok(st, 6401, 3201, 0, 2));
  CHECK(bulk_chunk_ok(st, 201, 101, 0, 2));
  CHECK(bulk_chunk_ok(st, 6399, 3200, 0, 2));
  CHECK(store_stats_get(st, &s) == PROTO_OK && s.docs == 9200 && s.chunks == 18400);
  bulk_free(&b);
  store_close(st);
  rm_rf(dir);
  free(dir);
}

/* Fewer reader slots than readers: begin waits for a free slot ------------------- */

static proto_status slow_fn(void *ctx, const uint64_t *ids, const float *vecs, size_t n) {
  (void)ctx;
  (void)ids;
  (void)vecs;
  (void)n;
  struct timespec ts = {0, 3000000};
  nanosleep(&ts, NULL);
  return PROTO_OK;
}

static void *slow_scan(void *arg) {
  reader_ctx *r = arg;
  for (int i = 0; i < 3; i++) {
    if (store_vectors_scan(r->st, 0, 64, slow_fn, NULL) == PROTO_OK) r->ok++;
    else r->fail++;
  }
  return NULL;
}

TEST(readers_full_waits) {
  char *dir = tmp_dir();
  store *st = NULL;
  store_options opt = {.max_readers = 2}; /* 2 reader slots */
  CHECK(store_open(dir, &opt, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }
  static gen_doc g;
  gen(&g, "x", 1, 4);
  CHECK(store_upsert(st, &g.in, 1, DIM, NULL) == PROTO_OK);
  pthread_t th[8];
  reader_ctx rc[8];
  int ok = 0, fail = 0;
  for (int i = 0; i < 8; i++) {
    rc[i] = (reader_ctx){st, NULL, (unsigned)i, 0, 0, 0, NULL};
    pthread_create(&th[i], NULL, slow_scan, &rc[i]);
  }
  for (int i = 0; i < 8; i++) {
    pthread_join(th[i], NULL);
    ok += rc[i].ok;
    fail += rc[i].fail;
  }
  CHECKF(ok == 24 && fail == 0, "ok %d fail %d: %s", ok, fail, store_last_error());
  store_close(st);
  rm_rf(dir);
  free(dir);
}

TEST(dim_via_meta) {
  char *dir = tmp_dir();
  store *st = NULL;
  CHECK(store_open(dir, NULL, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }
  static gen_doc a;
  gen(&a, "a", 1, 2);
  /* putting "dim" fixes it before any chunk exists */
  CHECK(store_meta_put(st, "dim", "16") == PROTO_OK);
  store_stats s;
  CHECK(store_stats_get(st, &s) == PROTO_OK && s.dim == 16);
  CHECK(store_upsert(st, &a.in, 1, DIM, NULL) == PROTO_EDIM);
  static float v16[2][16];
  a.ch[0].vector = v16[0];
  a.ch[1].vector = v16[1];
  CHECK(store_upsert(st, &a.in, 1, 16, NULL) == PROTO_OK);
  store_close(st);
  rm_rf(dir);
  free(dir);
}

TEST(bad_arguments) {
  store *st = (store *)1;
  CHECK(store_open(NULL, NULL, &st) == PROTO_EINVAL);
  CHECK(store_open("/proc/self/no/such/dir", NULL, &st) != PROTO_OK && st == NULL);
  CHECK(store_last_error()[0] != 0);
}

/* store_update_meta_many's fn for the test: appends "z":0 to the stored
 * metadata (an object's text) and adds 1 to the hash's first byte. */
typedef struct meta_fn_seen {
  int calls, had_hash, fail;
  char old[64];
} meta_fn_seen;

static proto_status append_meta(void *ctx, const char *old_meta, size_t old_len,
                                const unsigned char *old_hash, char **meta,
                                unsigned char new_hash[STORE_HASH_BYTES], int *has_hash) {
  meta_fn_seen *s = ctx;
  s->calls++;
  if (s->fail) return PROTO_EINVAL;
  snprintf(s->old, sizeof s->old, "%.*s", (int)old_len, old_meta);
  s->had_hash = old_hash != NULL;
  *meta = malloc(old_len + 8);
  if (!*meta) return PROTO_ENOMEM;
  snprintf(*meta, old_len + 8, "%.*s,\"z\":0}", (int)old_len - 1, old_meta);
  if ((*has_hash = old_hash != NULL)) {
    memcpy(new_hash, old_hash, STORE_HASH_BYTES);
    new_hash[0]++;
  }
  return PROTO_OK;
}

/* Metadata rewritten for many documents in one transaction: by ids (those
 * absent reported, left alone) and by a test of the metadata; a failing
 * fn writes nothing at all. */
static int has_k(void *ctx, const char *meta) {
  (void)ctx;
  return strstr(meta, "\"k\"") != NULL;
}

TEST(update_meta_many) {
  char *dir = tmp_dir();
  store *st = NULL;
  CHECK(store_open(dir, NULL, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }
  static gen_doc g;
  const char *metas[] = {"{\"k\":1}", "{\"j\":2}", "{\"k\":3}"};
  const char *names[] = {"m0", "m1", "m2"};
  for (int i = 0; i < 3; i++) {
    gen(&g, names[i], (unsigned)i, 2);
    g.in.metadata_json = metas[i];
    CHECK(store_upsert(st, &g.in, 1, DIM, NULL) == PROTO_OK);
  }
  meta_fn_seen seen = {0};
  const char *ids[] = {"m0", "absent", "m1"};
  int found[3] = {9, 9, 9};
  CHECK(store_update_meta_many(st, ids, 3, append_meta, &seen, found) == PROTO_OK &&
        found[0] == 1 && found[1] == 0 && found[2] == 1 && seen.calls == 2);
  store_doc d;
  CHECK(store_doc_get(st, "m1", &d) == PROTO_OK && !strcmp(d.metadata_json, "{\"j\":2,\"z\":0}"));
  store_doc_free(&d);
  size_t n = 0;
  CHECK(store_update_meta_where(st, has_k, NULL, append_meta, &seen, &n) == PROTO_OK && n == 2);
  CHECK(store_doc_get(st, "m2", &d) == PROTO_OK && !strcmp(d.metadata_json, "{\"k\":3,\"z\":0}"));
  store_doc_free(&d);
  CHECK(store_doc_get(st, "m0", &d) == PROTO_OK &&
        !strcmp(d.metadata_json, "{\"k\":1,\"z\":0,\"z\":0}"));
  store_doc_free(&d);
  seen.fail = 1; /* all or none */
  CHECK(store_update_meta_where(st, has_k, NULL, append_meta, &seen, &n) == PROTO_EINVAL && n == 0);
  CHECK(store_update_meta_many(st, ids, 3, append_meta, &seen, found) == PROTO_EINVAL &&
        !found[0] && !found[2]);
  CHECK(store_doc_get(st, "m2", &d) == PROTO_OK && !strcmp(d.metadata_json, "{\"k\":3,\"z\":0}"));
  store_doc_free(&d);
  store_close(st);
  rm_rf(dir);
  free(dir);
}

/* One document's metadata made by append_meta. */
static proto_status update_one(store *st, const char *id, meta_fn_seen *seen, int *found) {
  return store_update_meta_many(st, &id, 1, append_meta, seen, found);
}

/* The content hash travels with the document: kept by upsert, replaced by
 * the next upsert (gone when that one has none), gone with a delete. */
TEST(content_hash) {
  char *dir = tmp_dir();
  store *st = NULL;
  CHECK(store_open(dir, NULL, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }
  static gen_doc g;
  unsigned char h1[STORE_HASH_BYTES], got[STORE_HASH_BYTES];
  memset(h1, 0xab, sizeof h1);
  uint64_t num = 99;
  uint32_t nc = 0;
  CHECK(store_doc_hash(st, "h", got, &num, &nc) == PROTO_OK && num == 0);
  gen(&g, "h", 3, 4);
  g.in.content_hash = h1;
  CHECK(store_upsert(st, &g.in, 1, DIM, NULL) == PROTO_OK);
  CHECK(store_doc_hash(st, "h", got, &num, &nc) == PROTO_OK && num != 0 && nc == 4 &&
        memcmp(got, h1, sizeof h1) == 0);
  g.in.content_hash = NULL; /* as a build before hashes wrote it */
  CHECK(store_upsert(st, &g.in, 1, DIM, NULL) == PROTO_OK);
  CHECK(store_doc_hash(st, "h", got, &num, &nc) == PROTO_OK && num == 0);
  g.in.content_hash = h1;
  CHECK(store_upsert(st, &g.in, 1, DIM, NULL) == PROTO_OK);
  /* whole: the record, its chunks' texts end to end, tokens and hash */
  store_doc_whole w;
  char want[4 * 32] = "";
  uint64_t want_tokens = 0;
  for (unsigned j = 0; j < 4; j++) {
    strcat(want, g.text[j]);
    want_tokens += g.ch[j].n_tokens;
  }
  CHECK(store_doc_get_whole(st, "h", 1, &w) == PROTO_OK && !strcmp(w.doc.id, "h") &&
        w.doc.n_chunks == 4 && w.text_len == strlen(want) && !strcmp(w.text, want) &&
        w.n_tokens == want_tokens && w.has_hash && !memcmp(w.hash, h1, sizeof h1));
  store_doc_whole_free(&w);
  CHECK(store_doc_get_whole(st, "h", 0, &w) == PROTO_OK && !w.text && w.n_tokens == want_tokens);
  store_doc_whole_free(&w);
  CHECK(store_doc_get_whole(st, "absent", 1, &w) == PROTO_ENOTFOUND && !w.doc.id && !w.text);
  /* many in one read: found flags in the order asked, the absent zeroed */
  const char *many_ids[3] = {"absent", "h", ""};
  store_doc_whole many[3];
  int many_found[3] = {7, 7, 7};
  CHECK(store_docs_get_whole(st, many_ids, 2, 1, many, many_found) == PROTO_OK && !many_found[0] &&
        !many[0].doc.id && many_found[1] && !strcmp(many[1].text, want) &&
        many[1].n_tokens == want_tokens);
  for (int i = 0; i < 2; i++) store_doc_whole_free(&many[i]);
  CHECK(store_docs_get_whole(st, many_ids, 3, 1, many, many_found) == PROTO_EINVAL &&
        !many_found[1] && !many[1].doc.id); /* an empty id fails the whole read */
  /* metadata rewritten in place: same doc num and chunks, the new hash */
  uint64_t num0 = 0;
  CHECK(store_doc_hash(st, "h", got, &num0, &nc) == PROTO_OK && num0 != 0);
  unsigned char h2[STORE_HASH_BYTES];
  memset(h2, 0xcd, sizeof h2);
  int found = 0;
  CHECK(store_doc_set_meta(st, "h", "{\"k\":1}", h2, &found) == PROTO_OK && found);
  CHECK(store_doc_hash(st, "h", got, &num, &nc) == PROTO_OK && num == num0 && nc == 4 &&
        memcmp(got, h2, sizeof h2) == 0);
  store_doc dd;
  CHECK(store_doc_get(st, "h", &dd) == PROTO_OK && strcmp(dd.metadata_json, "{\"k\":1}") == 0 &&
        dd.doc_id == num0 && dd.n_chunks == 4);
  uint64_t first = dd.first_chunk;
  store_doc_free(&dd);
  store_chunk c;
  CHECK(store_chunk_get(st, first, &c) == PROTO_OK && chunk_is(&c, 3, 0, 4));
  store_chunk_free(&c);
  CHECK(store_doc_set_meta(st, "absent", "{}", h2, &found) == PROTO_OK && !found);
  /* made from the stored metadata and hash, inside the write */
  meta_fn_seen seen = {0};
  CHECK(update_one(st, "h", &seen, &found) == PROTO_OK && found && seen.calls == 1 &&
        seen.had_hash && !strcmp(seen.old, "{\"k\":1}"));
  CHECK(store_doc_get(st, "h", &dd) == PROTO_OK && !strcmp(dd.metadata_json, "{\"k\":1,\"z\":0}") &&
        dd.doc_id == num0 && dd.n_chunks == 4 && dd.first_chunk == first);
  store_doc_free(&dd);
  CHECK(store_doc_hash(st, "h", got, &num, &nc) == PROTO_OK && num == num0 && got[0] == 0xcd + 1);
  seen.fail = 1; /* a failing fn writes nothing */
  CHECK(update_one(st, "h", &seen, &found) == PROTO_EINVAL && !found);
  CHECK(store_doc_get(st, "h", &dd) == PROTO_OK && !strcmp(dd.metadata_json, "{\"k\":1,\"z\":0}"));
  store_doc_free(&dd);
  seen.calls = 0;
  CHECK(update_one(st, "absent", &seen, &found) == PROTO_OK && !found && seen.calls == 0);
  CHECK(store_delete(st, "h", &found) == PROTO_OK && found);
  CHECK(store_doc_hash(st, "h", got, &num, &nc) == PROTO_OK && num == 0);
  store_close(st);
  rm_rf(dir);
  free(dir);
}

/* A map limit: the write that does not fit fails with PROTO_ENOSPACE and
 * leaves nothing behind; reads go on; with a larger limit writes fit again;
 * every document acknowledged before is intact. */
TEST(map_limit) {
  char *dir = tmp_dir();
  store *st = NULL;
  store_options opt = {.max_map_bytes = (size_t)2 << 20};
  CHECK(store_open(dir, &opt, &st) == PROTO_OK);
  if (!st) {
    free(dir);
    return;
  }
  static gen_doc g;
  char id[32];
  int stored = 0;
  proto_status s = PROTO_OK;
  for (int i = 0; i < 100000 && s == PROTO_OK; i++) {
    snprintf(id, sizeof id, "d%d", i);
    gen(&g, id, (unsigned)i, MAXC);
    s = store_upsert(st, &g.in, 1, DIM, NULL);
    if (s == PROTO_OK) stored++;
  }
  CHECKF(s == PROTO_ENOSPACE, "status %s after %d docs: %s", proto_status_name(s), stored,
         store_last_error());
  CHECK(strstr(store_last_error(), "map") != NULL);
  store_stats ss;
  CHECK(store_stats_get(st, &ss) == PROTO_OK && ss.docs == (uint64_t)stored);
  CHECK(ss.map_bytes <= opt.max_map_bytes);
  store_doc d;
  snprintf(id, sizeof id, "d%d", stored);
  CHECK(store_doc_get(st, id, &d) == PROTO_ENOTFOUND); /* nothing of the failed write */
  CHECK(store_doc_get(st, "d0", &d) == PROTO_OK && d.n_chunks == MAXC);
  store_doc_free(&d);
  /* a copy-on-write B-tree needs pages even to delete: with the map full,
   * room comes from a larger limit (a restart with a larger map size) */
  store_close(st);
  st = NULL;
  opt.max_map_bytes = (size_t)4 << 20;
  CHECK(store_open(dir, &opt, &st) == PROTO_OK);
  if (!st) {
    rm_rf(dir);
    free(dir);
    return;
  }
  snprintf(id, sizeof id, "d%d", stored);
  gen(&g, id, (unsigned)stored, MAXC);
  s = store_upsert(st, &g.in, 1, DIM, NULL);
  CHECKF(s == PROTO_OK, "after deletes: %s", store_last_error());
  int intact = 1;
  for (int i = 0; i <= stored; i++) {
    snprintf(id, sizeof id, "d%d", i);
    if (store_doc_get(st, id, &d) != PROTO_OK) {
      intact = 0;
      continue;
    }
    store_chunk c;
    if (store_chunk_get(st, d.first_chunk + 3, &c) != PROTO_OK ||
        !chunk_is(&c, (unsigned)i, 3, MAXC))
      intact = 0;
    store_chunk_free(&c);
    store_doc_free(&d);
  }
  CHECK(intact);
  store_close(st);
  rm_rf(dir);
  free(dir);
}

int main(void) {
  RUN(round_trip);
  RUN(content_hash);
  RUN(update_meta_many);
  RUN(map_limit);
  RUN(replace_and_delete);
  RUN(batches_and_errors);
  RUN(vectors_feed);
  RUN(map_growth_100mb);
  RUN(concurrent_readers);
  RUN(other_process_grows_map);
  RUN(readers_full_waits);
  RUN(dim_via_meta);
  RUN(bad_arguments);
  return tap_done();
}
