/* test_engine.c - the engine (server/srv.h) with real, randomly initialised
 * models (tests/server/make_engine_models.py): ingest -> search finds every
 * chunk as its own nearest neighbour, documents come back byte for byte,
 * [N, F] links, upsert replaces, delete removes, exclude_docs, reopening,
 * model mismatch, the ingest session API, and the generation loop
 * (neighbours set in time - checked against a full-sequence forward -,
 * seeds, stop sequences, max_tokens, RETRO [OFF], cancellation, EBUSY).
 *
 *   test_engine MODELS_DIR
 * Skips (exit 77) when MODELS_DIR/SKIP exists (no PyTorch to make models).
 */
#include "engine_priv.h" /* tail_key_ok: the chunk tokenizer and srv__embed_chunks */
#include "srv.h"
#include "slurp.h"
#include "phrase.h"
#include "tap.h"

#include <dirent.h>
#include <lmdb.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char models[1024], enc_dir[1200], encwp_dir[1200], dec_dir[1200], corpus_dir[1200];
static char data_dir[256];

typedef struct doc {
  char id[256];
  char *text;
  size_t len;
} doc;
static doc docs[64];
static size_t n_docs;

static int read_all(const char *path, char **buf, size_t *len) {
  *buf = slurp_file(path, len);
  return *buf ? 0 : -1;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(((const doc *)a)->id, ((const doc *)b)->id);
}

/* The largest |a[i] - b[i]| over n floats. */
static float max_abs_diff(const float *a, const float *b, uint32_t n) {
  float d = 0;
  for (uint32_t i = 0; i < n; i++)
    if (fabsf(a[i] - b[i]) > d) d = fabsf(a[i] - b[i]);
  return d;
}

static void load_corpus(void) {
  DIR *d = opendir(corpus_dir);
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL && n_docs < 64) {
    if (de->d_name[0] == '.') continue;
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", corpus_dir, de->d_name);
    doc *x = &docs[n_docs];
    snprintf(x->id, sizeof x->id, "%s", de->d_name);
    if (read_all(p, &x->text, &x->len) == 0) n_docs++;
  }
  if (d) closedir(d);
  qsort(docs, n_docs, sizeof *docs, name_cmp);
}

static srv_engine *open_engine(const char *enc, const char *dec, int load_decoder,
                               proto_status *st) {
  srv_engine_options o = {0};
  o.data_dir = data_dir;
  o.encoder_dir = enc;
  o.decoder_dir = dec;
  o.load_decoder = load_decoder;
  o.threads = 2;
  o.embed_batch = 16;
  o.commit_chunks = 64; /* several transactions for the corpus */
  o.gen_slots = 1;
  o.gen_queue = -1;
  srv_engine *e = NULL;
  *st = srv_engine_open(&o, &e);
  if (*st != PROTO_OK) printf("# open: %s\n", srv_last_error());
  return e;
}

static uint64_t n_tokens_of(srv_engine *e, const doc *d) {
  int32_t *ids = NULL;
  size_t n = 0;
  if (tok_encode(srv_engine_chunk_tokenizer(e), d->text, d->len, &ids, &n) != PROTO_OK) return 0;
  free(ids);
  return n;
}

/* ack bookkeeping for the session test */
typedef struct acks {
  pthread_mutex_t mu;
  size_t n, ok, in_order;
  size_t last_seq;
  uint64_t progress_calls;
} acks;

static void on_ack(void *ctx, const srv_ack *a) {
  acks *k = ctx;
  pthread_mutex_lock(&k->mu);
  if (a->seq == k->n) k->in_order++;
  k->n++;
  if (a->status == PROTO_OK && a->indexed) k->ok++;
  pthread_mutex_unlock(&k->mu);
}

static void on_progress(void *ctx, const srv_ingest_progress *p) {
  acks *k = ctx;
  (void)p;
  pthread_mutex_lock(&k->mu);
  k->progress_calls++;
  pthread_mutex_unlock(&k->mu);
}

static srv_engine *E;
static uint64_t total_chunks;

TEST(ingest) {
  proto_status st;
  E = open_engine(enc_dir, dec_dir, 0, &st);
  CHECK(st == PROTO_OK && E != NULL);
  if (!E) return;
  acks k = {.mu = PTHREAD_MUTEX_INITIALIZER};
  srv_ingest_callbacks cb = {.on_ack = on_ack, .on_progress = on_progress, .ctx = &k};
  srv_ingest *in = NULL;
  CHECK(srv_ingest_begin(E, &cb, &in) == PROTO_OK);
  for (size_t i = 0; i < n_docs; i++) {
    char meta[1024];
    snprintf(meta, sizeof meta, "{\"n\": %zu, \"name\": \"%.200s\"}", i, docs[i].id);
    srv_doc d = {
        .id = docs[i].id, .text = docs[i].text, .text_len = docs[i].len, .metadata_json = meta};
    CHECK(srv_ingest_add(in, &d) == PROTO_OK);
    total_chunks += (n_tokens_of(E, &docs[i]) + 63) / 64;
  }
  /* validation errors come back at once and are not acknowledged */
  srv_doc bad = {.id = "", .text = "x", .text_len = 1};
  CHECK(srv_ingest_add(in, &bad) == PROTO_EMISSING);
  srv_doc badmeta = {.id = "m", .text = "x", .text_len = 1, .metadata_json = "[1]"};
  CHECK(srv_ingest_add(in, &badmeta) == PROTO_ETYPE);
  srv_doc badjson = {.id = "m", .text = "x", .text_len = 1, .metadata_json = "{\"a\":1,\"a\":2}"};
  CHECK(srv_ingest_add(in, &badjson) == PROTO_EJSON);
  srv_ingest_progress pr;
  CHECK(srv_ingest_end(in, &pr) == PROTO_OK);
  CHECKF(k.n == n_docs && k.ok == n_docs && k.in_order == n_docs, "acks %zu ok %zu in order %zu",
         k.n, k.ok, k.in_order);
  CHECK(k.progress_calls >= 1);
  CHECKF(pr.docs == n_docs && pr.chunks == total_chunks,
         "progress %llu docs %llu chunks (want %llu)", (unsigned long long)pr.docs,
         (unsigned long long)pr.chunks, (unsigned long long)total_chunks);
  srv_info info;
  CHECK(srv_info_get(E, &info) == PROTO_OK);
  CHECK(info.store.docs == n_docs);
  CHECK(info.store.chunks == total_chunks);
  CHECKF(info.index.ntotal + info.index.pending == total_chunks, "index %llu + %llu",
         (unsigned long long)info.index.ntotal, (unsigned long long)info.index.pending);
  CHECK(info.embed_by_ids == 1);
  CHECK(info.has_lexical && info.lexical.chunks == total_chunks && info.lexical_sync_seconds > 0);
}

/* Checks the key of a document's short last chunk (ingest.c, key_window): its
 * stored vector is the embedding of the document's last 64 tokens, not of its
 * own few tokens. 1 = checked and right, 0 = wrong, -1 = no short last chunk. */
static int tail_key_ok(srv_engine *e, const char *doc_id) {
  srv_document d;
  if (srv_document_get(e, doc_id, 0, &d) != PROTO_OK) return 0;
  uint64_t last = d.first_chunk + d.n_chunks - 1;
  int n_chunks = (int)d.n_chunks;
  srv_document_free(&d);
  if (n_chunks < 2) return -1;
  srv_chunk pc = {0};
  if (srv_chunk_get(e, last - 1, &pc) != PROTO_OK) return 0;
  size_t nt = pc.c.n_next_tokens;
  int res = -1;
  if (nt > 0 && nt < 64) {
    uint32_t dim = srv_engine_dim(e);
    int32_t win[64];
    memcpy(win, pc.c.tokens + nt, (64 - nt) * sizeof *win);
    memcpy(win + 64 - nt, pc.c.next_tokens, nt * sizeof *win);
    char *wtext = NULL;
    size_t wlen = 0;
    float *key = malloc(dim * sizeof *key), *own = malloc(dim * sizeof *own),
          *stored = malloc(dim * sizeof *stored);
    const int32_t *ids[2] = {win, pc.c.next_tokens};
    size_t lens[2] = {64, nt};
    res = tok_decode(e->ctok, win, 64, &wtext, &wlen) == PROTO_OK;
    const char *texts[2] = {wtext, pc.c.next_text};
    size_t tlens[2] = {wlen, pc.c.next_text_len};
    res = res &&
          srv__embed_chunks(e, &ids[0], &lens[0], &texts[0], &tlens[0], 1, key) == PROTO_OK &&
          srv__embed_chunks(e, &ids[1], &lens[1], &texts[1], &tlens[1], 1, own) == PROTO_OK &&
          store_vector_get(e->st, last, stored) == PROTO_OK;
    float d_key = res ? max_abs_diff(key, stored, dim) : 0;
    float d_own = res ? max_abs_diff(own, stored, dim) : 0;
    if (res && !(d_key < 1e-5f && d_own > 1e-3f)) {
      printf("# %s: last chunk (%zu tokens) key differs by %g, own embedding by %g\n", doc_id, nt,
             (double)d_key, (double)d_own);
      res = 0;
    }
    free(wtext);
    free(key);
    free(own);
    free(stored);
  }
  srv_chunk_free(&pc);
  return res;
}

/* tail_key_ok over the first n test documents: every short last chunk is
 * keyed right, and there is at least one. */
static void check_tail_keys(srv_engine *e, size_t n) {
  size_t checked = 0, wrong = 0;
  for (size_t i = 0; i < n; i++) {
    int r = tail_key_ok(e, docs[i].id);
    if (r >= 0) checked++;
    if (r == 0) wrong++;
  }
  CHECKF(checked > 0 && wrong == 0, "%zu short last chunks checked, %zu keyed wrong", checked,
         wrong);
}

TEST(self_nearest) {
  if (!E) return;
  uint32_t dim = srv_engine_dim(E);
  CHECK(srv_engine_index_floats(E) == (uint64_t)total_chunks * dim);
  CHECK(srv_engine_index_floats(NULL) == 0);
  float *v = malloc(dim * sizeof *v);
  size_t bad = 0, checked = 0;
  for (uint64_t id = 1; id <= total_chunks; id++) {
    if (store_vector_get(srv_engine_store(E), id, v) != PROTO_OK) {
      bad++;
      continue;
    }
    srv_search_request rq = {.vectors = v, .n_vectors = 1, .k = 1, .with_text = 0};
    srv_search_result r;
    if (srv_search(E, &rq, &r) != PROTO_OK) {
      bad++;
      continue;
    }
    if (r.nq != 1 || r.queries[0].n != 1 || r.queries[0].hits[0].chunk_id != id ||
        fabsf(r.queries[0].hits[0].score - 1.0f) > 1e-4f)
      bad++;
    checked++;
    srv_search_result_free(&r);
  }
  CHECKF(bad == 0 && checked == total_chunks, "%zu of %zu chunks not their own nearest", bad,
         checked);
  free(v);
  check_tail_keys(E, n_docs);
  /* by text: a short document is one chunk whose text embeds to its vector */
  const char *q = "a short document about retrieval";
  srv_doc d = {.id = "short", .text = q, .text_len = strlen(q)};
  srv_ack a;
  CHECK(srv_upsert(E, &d, 1, &a) == PROTO_OK && a.status == PROTO_OK && a.n_chunks == 1);
  srv_search_request rq = {.texts = &q, .n_texts = 1, .k = 3, .with_text = 1};
  srv_search_result r;
  CHECK(srv_search(E, &rq, &r) == PROTO_OK);
  CHECK(r.nq == 1 && r.queries[0].n == 3);
  if (r.nq == 1 && r.queries[0].n > 0) {
    srv_hit *h = &r.queries[0].hits[0];
    CHECK(strcmp(h->doc_id, "short") == 0);
    CHECK(h->text_len == strlen(q) && memcmp(h->text, q, h->text_len) == 0);
    CHECK(h->next_text_len == 0 && h->n_next_tokens == 0);
    CHECK(strcmp(h->metadata_json, "{}") == 0);
    CHECK(r.queries[0].hits[0].score >= r.queries[0].hits[1].score);
  }
  srv_search_result_free(&r);
  /* the embeddings API gives the same vector */
  float *ev = malloc(srv_engine_dim(E) * sizeof *ev), *sv = malloc(srv_engine_dim(E) * sizeof *sv);
  uint64_t ntok = 0;
  CHECK(srv_embed(E, &q, NULL, 1, 0, ev, &ntok) == PROTO_OK);
  CHECK(ntok > 2);
  srv_document sd;
  CHECK(srv_document_get(E, "short", 0, &sd) == PROTO_OK);
  CHECK(store_vector_get(srv_engine_store(E), sd.first_chunk, sv) == PROTO_OK);
  float dmax = max_abs_diff(ev, sv, srv_engine_dim(E));
  CHECKF(dmax < 1e-5f, "embedding differs by %g", (double)dmax);
  srv_document_free(&sd);
  free(ev);
  free(sv);
}

TEST(documents_and_chunks) {
  if (!E) return;
  size_t bad_text = 0, bad_links = 0;
  for (size_t i = 0; i < n_docs; i++) {
    srv_document d;
    if (srv_document_get(E, docs[i].id, 1, &d) != PROTO_OK) {
      bad_text++;
      continue;
    }
    if (d.text_len != docs[i].len || memcmp(d.text, docs[i].text, d.text_len) != 0) bad_text++;
    if (!strstr(d.metadata_json, docs[i].id)) bad_text++;
    for (uint32_t c = 0; c < d.n_chunks; c++) {
      srv_chunk a, b;
      if (srv_chunk_get(E, d.first_chunk + c, &a) != PROTO_OK) {
        bad_links++;
        continue;
      }
      if (a.c.ordinal != c || strcmp(a.doc_id, docs[i].id) != 0) bad_links++;
      if (c + 1 < d.n_chunks) {
        if (a.c.n_tokens != 64) bad_links++;
        if (srv_chunk_get(E, d.first_chunk + c + 1, &b) == PROTO_OK) {
          if (a.c.n_next_tokens != b.c.n_tokens ||
              memcmp(a.c.next_tokens, b.c.tokens, b.c.n_tokens * sizeof(int32_t)) != 0 ||
              a.c.next_text_len != b.c.text_len)
            bad_links++;
          srv_chunk_free(&b);
        } else bad_links++;
      } else if (a.c.n_next_tokens != 0 || a.c.next_text_len != 0) {
        bad_links++; /* F is empty at the document's end */
      }
      srv_chunk_free(&a);
    }
    srv_document_free(&d);
  }
  CHECKF(bad_text == 0, "%zu documents differ", bad_text);
  CHECKF(bad_links == 0, "%zu bad [N, F] links", bad_links);
  srv_document d;
  CHECK(srv_document_get(E, "no such doc", 0, &d) == PROTO_ENOTFOUND);
  srv_chunk c;
  CHECK(srv_chunk_get(E, 999999, &c) == PROTO_ENOTFOUND);
}

/* ids of a document's chunks and their vectors */
static size_t doc_vectors(const char *id, uint64_t *first, float **vecs) {
  srv_document d;
  if (srv_document_get(E, id, 0, &d) != PROTO_OK) return 0;
  uint32_t dim = srv_engine_dim(E);
  *first = d.first_chunk;
  size_t n = d.n_chunks;
  *vecs = malloc((n ? n : 1) * dim * sizeof **vecs);
  for (size_t i = 0; i < n; i++)
    store_vector_get(srv_engine_store(E), d.first_chunk + i, *vecs + i * dim);
  srv_document_free(&d);
  return n;
}

/* 1 when any hit of searching vecs (k = 5) lies in [first, first + n). */
static int any_hit_in(const float *vecs, size_t nq, uint64_t first, size_t n,
                      const char *const *excl, size_t n_excl) {
  srv_search_request rq = {
      .vectors = vecs, .n_vectors = nq, .k = 5, .exclude_docs = excl, .n_exclude = n_excl};
  srv_search_result r;
  if (srv_search(E, &rq, &r) != PROTO_OK) return -1;
  int any = 0;
  for (size_t q = 0; q < r.nq; q++)
    for (size_t i = 0; i < r.queries[q].n; i++)
      if (r.queries[q].hits[i].chunk_id >= first && r.queries[q].hits[i].chunk_id < first + n)
        any = 1;
  srv_search_result_free(&r);
  return any;
}

TEST(upsert_delete_exclude) {
  if (!E || n_docs < 3) return;
  uint64_t first = 0;
  float *vecs = NULL;
  size_t n = doc_vectors(docs[0].id, &first, &vecs);
  CHECK(n > 0);
  CHECK(any_hit_in(vecs, n, first, n, NULL, 0) == 1);
  const char *ex = docs[0].id;
  CHECK(any_hit_in(vecs, n, first, n, &ex, 1) == 0);
  /* upsert replaces: old chunk ids are gone from the store and the results */
  const char *nt = "replacement text for the first document";
  srv_doc d = {.id = docs[0].id, .text = nt, .text_len = strlen(nt), .metadata_json = "{\"v\":2}"};
  srv_ack a;
  CHECK(srv_upsert(E, &d, 1, &a) == PROTO_OK && a.status == PROTO_OK);
  srv_document got;
  CHECK(srv_document_get(E, docs[0].id, 1, &got) == PROTO_OK);
  CHECK(got.n_chunks == 1 && got.text_len == strlen(nt) && memcmp(got.text, nt, got.text_len) == 0);
  CHECK(got.first_chunk >= first + n);
  CHECK(strcmp(got.metadata_json, "{\"v\":2}") == 0 || strstr(got.metadata_json, "\"v\""));
  srv_document_free(&got);
  srv_chunk c;
  CHECK(srv_chunk_get(E, first, &c) == PROTO_ENOTFOUND);
  CHECK(any_hit_in(vecs, n, first, n, NULL, 0) == 0);
  free(vecs);
  /* delete removes */
  n = doc_vectors(docs[1].id, &first, &vecs);
  CHECK(n > 0 && any_hit_in(vecs, n, first, n, NULL, 0) == 1);
  int found = 0;
  CHECK(srv_delete(E, docs[1].id, &found) == PROTO_OK && found == 1);
  CHECK(any_hit_in(vecs, n, first, n, NULL, 0) == 0);
  CHECK(srv_document_get(E, docs[1].id, 0, &got) == PROTO_ENOTFOUND);
  CHECK(srv_delete(E, docs[1].id, &found) == PROTO_OK && found == 0);
  /* bad requests */
  srv_search_request rq = {.vectors = vecs, .n_vectors = 1, .k = 0};
  srv_search_result r;
  CHECK(srv_search(E, &rq, &r) == PROTO_ERANGE);
  rq.k = 1;
  rq.n_texts = 1;
  CHECK(srv_search(E, &rq, &r) == PROTO_EINVAL);
  free(vecs);
  srv_info info;
  CHECK(srv_info_get(E, &info) == PROTO_OK);
  CHECKF(info.index.ntotal + info.index.pending == info.store.chunks, "index %llu, store %llu",
         (unsigned long long)(info.index.ntotal + info.index.pending),
         (unsigned long long)info.store.chunks);
  CHECK(info.deleted_docs == 1);
}

/* Upserts one document; returns the chunks the encoder ran for it (the
 * engine's counter) and its ack in *a. */
static uint64_t upsert_counting(srv_engine *e, const char *id, const char *text, const char *meta,
                                int force, srv_ack *a) {
  srv_info before, after;
  srv_info_get(e, &before);
  srv_doc d = {.id = id, .text = text, .text_len = strlen(text), .metadata_json = meta};
  if (!force) {
    if (srv_upsert(e, &d, 1, a) != PROTO_OK) a->status = PROTO_EINTERNAL;
  } else {
    acks k = {.mu = PTHREAD_MUTEX_INITIALIZER};
    srv_ingest_callbacks cb = {.on_ack = on_ack, .ctx = &k, .force = 1};
    srv_ingest *in = NULL;
    memset(a, 0, sizeof *a);
    if (srv_ingest_begin(e, &cb, &in) != PROTO_OK || srv_ingest_add(in, &d) != PROTO_OK)
      a->status = PROTO_EINTERNAL;
    if (srv_ingest_end(in, NULL) != PROTO_OK || k.ok != 1) a->status = PROTO_EINTERNAL;
  }
  srv_info_get(e, &after);
  return after.ingest_embedded_chunks - before.ingest_embedded_chunks;
}

/* Documents whose content hash is unchanged are acknowledged as such without
 * the encoder; metadata alone changing updates the document; force re-embeds;
 * a database without hashes (an older build's) embeds once, then skips. */
TEST(unchanged_skip) {
  if (!E || n_docs < 4) return;
  const char *text = docs[3].text;
  srv_ack a;
  uint64_t n = upsert_counting(E, "u1", text, "{\"a\":1}", 0, &a);
  CHECK(n > 0 && a.status == PROTO_OK && !a.unchanged);
  uint64_t num = a.doc_num;
  uint32_t nc = a.n_chunks;
  CHECK(upsert_counting(E, "u1", text, "{\"a\":1}", 0, &a) == 0);
  CHECK(a.status == PROTO_OK && a.unchanged && a.doc_num == num && a.n_chunks == nc);
  /* metadata alone: rewritten in place, same document and chunks, no encoder */
  CHECK(upsert_counting(E, "u1", text, "{\"a\":2}", 0, &a) == 0);
  CHECK(a.status == PROTO_OK && !a.unchanged && a.doc_num == num && a.n_chunks == nc);
  srv_document got;
  CHECK(srv_document_get(E, "u1", 0, &got) == PROTO_OK && strstr(got.metadata_json, "2"));
  srv_document_free(&got);
  const char *byfilter = "{\"a\": 2}";
  srv_search_request fq = {
      .texts = &text, .n_texts = 1, .k = 1, .mode = SRV_MODE_LEXICAL, .filter_json = byfilter};
  srv_search_result fr;
  CHECK(srv_search(E, &fq, &fr) == PROTO_OK && fr.queries[0].n == 1 &&
        strcmp(fr.queries[0].hits[0].doc_id, "u1") == 0);
  srv_search_result_free(&fr);
  CHECK(upsert_counting(E, "u1", text, "{\"a\":2}", 0, &a) == 0 && a.unchanged);
  /* force */
  CHECK(upsert_counting(E, "u1", text, "{\"a\":2}", 1, &a) == n);
  CHECK(a.status == PROTO_OK && !a.unchanged);
  /* text changed back and forth within one session: the second is queued as
   * unchanged (the store still holds it) but the first changes the store
   * before it commits, so it is embedded after all; the store ends as the
   * last upsert said */
  CHECK(upsert_counting(E, "u2", "first version", NULL, 0, &a) > 0);
  srv_doc two[2] = {{.id = "u2", .text = "second version", .text_len = 14},
                    {.id = "u2", .text = "first version", .text_len = 13}};
  srv_ack aa[2];
  CHECK(srv_upsert(E, two, 2, aa) == PROTO_OK && !aa[0].unchanged && !aa[1].unchanged);
  CHECK(srv_document_get(E, "u2", 1, &got) == PROTO_OK && got.text_len == 13 &&
        memcmp(got.text, "first version", 13) == 0);
  srv_document_free(&got);
  /* deleted, then upserted with the old content: stored again */
  int found = 0;
  CHECK(srv_delete(E, "u2", &found) == PROTO_OK && found);
  CHECK(upsert_counting(E, "u2", "first version", NULL, 0, &a) > 0 && !a.unchanged);
  CHECK(srv_document_get(E, "u2", 0, &got) == PROTO_OK);
  srv_document_free(&got);

  /* an older build's database: no doc_hash table at all */
  CHECK(srv_engine_close(E) == PROTO_OK);
  E = NULL;
  char db[300];
  snprintf(db, sizeof db, "%s/db", data_dir);
  MDB_env *env = NULL;
  MDB_txn *txn = NULL;
  MDB_dbi dbi;
  int rc = mdb_env_create(&env);
  if (!rc) rc = mdb_env_set_maxdbs(env, 8);
  if (!rc) rc = mdb_env_set_mapsize(env, (size_t)1 << 30);
  if (!rc) rc = mdb_env_open(env, db, 0, 0644);
  if (!rc) rc = mdb_txn_begin(env, NULL, 0, &txn);
  if (!rc) rc = mdb_dbi_open(txn, "doc_hash", 0, &dbi);
  if (!rc) rc = mdb_drop(txn, dbi, 1);
  if (!rc) rc = mdb_txn_commit(txn);
  else if (txn) mdb_txn_abort(txn);
  CHECKF(rc == 0, "dropping doc_hash: %s", mdb_strerror(rc));
  mdb_env_close(env);
  proto_status st;
  E = open_engine(enc_dir, dec_dir, 0, &st);
  CHECK(st == PROTO_OK && E);
  if (!E) return;
  CHECK(upsert_counting(E, "u1", text, "{\"a\":3}", 0, &a) == n && !a.unchanged);
  CHECK(upsert_counting(E, "u1", text, "{\"a\":3}", 0, &a) == 0 && a.unchanged);
  CHECK(srv_delete(E, "u1", &found) == PROTO_OK && found);
  CHECK(srv_delete(E, "u2", &found) == PROTO_OK && found);
}

TEST(reopen_and_mismatch) {
  if (!E) return;
  srv_info before;
  CHECK(srv_info_get(E, &before) == PROTO_OK);
  /* a save that cannot write (a directory where its temporary file goes, as
   * a full disk would): close says so, and the reopen below rebuilds the
   * index from the store */
  char blocker[300];
  snprintf(blocker, sizeof blocker, "%s/index.faiss.tmp", data_dir);
  CHECK(mkdir(blocker, 0700) == 0);
  CHECK(srv_engine_close(E) != PROTO_OK);
  CHECKF(strstr(srv_last_error(), "saving the index") != NULL, "%s", srv_last_error());
  CHECK(rmdir(blocker) == 0);
  E = NULL;
  proto_status st;
  /* another encoder on this database is refused */
  if (access(encwp_dir, F_OK) != 0) {
    SKIP("reopen with another encoder: no WordPiece encoder among the test models");
  } else {
    srv_engine *w = open_engine(encwp_dir, NULL, 0, &st);
    CHECK(st == PROTO_EMISMATCH && w == NULL);
    CHECK(strstr(srv_last_error(), "encoder") != NULL);
    srv_engine_close(w);
  }
  /* no model named: the database's recorded ones are used */
  E = open_engine(NULL, NULL, 0, &st);
  CHECK(st == PROTO_OK);
  if (!E) return;
  srv_info after;
  CHECK(srv_info_get(E, &after) == PROTO_OK);
  CHECK(after.store.docs == before.store.docs && after.store.chunks == before.store.chunks);
  CHECK(after.index.ntotal + after.index.pending == after.store.chunks);
  CHECK(strcmp(after.encoder, before.encoder) == 0);
}

/* Upserts the corpus's first n (<= 8) documents. */
static proto_status upsert_first_docs(srv_engine *w, int n) {
  srv_doc d[8];
  srv_ack a[8];
  for (int i = 0; i < n && i < 8; i++)
    d[i] = (srv_doc){.id = docs[i].id, .text = docs[i].text, .text_len = docs[i].len};
  return srv_upsert(w, d, (size_t)(n < 8 ? n : 8), a);
}

/* Embedding from text (WordPiece encoder, BPE chunks) on a second database. */
TEST(embed_by_text) {
  if (access(encwp_dir, F_OK) != 0) {
    SKIP("embed_by_text: no WordPiece encoder (needs ../shared/data)");
    return;
  }
  char saved[256];
  snprintf(saved, sizeof saved, "%s", data_dir);
  if (strlen(saved) + 4 > sizeof data_dir) return;
  memcpy(data_dir + strlen(saved), "-wp", 4);
  proto_status st;
  srv_engine *w = open_engine(encwp_dir, dec_dir, 0, &st);
  CHECK(st == PROTO_OK);
  if (w) {
    srv_info info;
    CHECK(srv_info_get(w, &info) == PROTO_OK && info.embed_by_ids == 0);
    CHECK(upsert_first_docs(w, 3) == PROTO_OK);
    uint32_t dim = srv_engine_dim(w);
    float *v = malloc(dim * sizeof *v);
    CHECK(store_vector_get(srv_engine_store(w), 2, v) == PROTO_OK);
    srv_search_request rq = {.vectors = v, .n_vectors = 1, .k = 1};
    srv_search_result r;
    CHECK(srv_search(w, &rq, &r) == PROTO_OK && r.queries[0].n == 1 &&
          r.queries[0].hits[0].chunk_id == 2);
    srv_search_result_free(&r);
    free(v);
    check_tail_keys(w, 3); /* the text path: the key window decoded, then WordPiece */
    srv_engine_close(w);
  }
  snprintf(data_dir, sizeof data_dir, "%s", saved);
}

/* Copies the test encoder to dir with `extra` ("key": value) added to its
 * config.json. */
static int encoder_with_config(const char *dir, const char *extra) {
  char cmd[3000], path[1300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, enc_dir, dir);
  if (system(cmd) != 0) return -1;
  snprintf(path, sizeof path, "%s/config.json", dir);
  size_t len = 0;
  char *cfg = slurp_file(path, &len);
  FILE *f = cfg ? fopen(path, "w") : NULL;
  int ok = f && cfg[0] == '{' && fprintf(f, "{%s, %s", extra, cfg + 1) > 0;
  if (f) ok = fclose(f) == 0 && ok;
  free(cfg);
  return ok ? 0 : -1;
}

/* An encoder with "retro_query_prefix": a search by text embeds the prefix
 * and the text (the same hits and scores as a search by that vector), while
 * /v1/embeddings and stored chunks take texts as they are. */
TEST(query_prefix) {
  char enc[300], saved[256];
  snprintf(saved, sizeof saved, "%s", data_dir);
  snprintf(enc, sizeof enc, "%.200s-qp-enc", saved);
  CHECK(encoder_with_config(enc, "\"retro_query_prefix\": \"query: \"") == 0);
  snprintf(data_dir, sizeof data_dir, "%.200s-qp", saved);
  proto_status st;
  srv_engine *w = open_engine(enc, dec_dir, 0, &st);
  CHECK(st == PROTO_OK);
  if (w) {
    CHECK(upsert_first_docs(w, 3) == PROTO_OK);
    uint32_t dim = srv_engine_dim(w);
    float *plain = malloc(dim * sizeof *plain), *prefixed = malloc(dim * sizeof *prefixed);
    const char *q = "where is the configuration read",
               *pq = "query: where is the configuration read";
    CHECK(srv_embed(w, &q, NULL, 1, 0, plain, NULL) == PROTO_OK);
    CHECK(srv_embed(w, &pq, NULL, 1, 0, prefixed, NULL) == PROTO_OK);
    CHECKF(max_abs_diff(plain, prefixed, dim) > 1e-3f, "the prefix changed nothing (%g)",
           (double)max_abs_diff(plain, prefixed, dim));
    float *as_query = malloc(dim * sizeof *as_query);
    uint64_t nt_query = 0, nt_prefixed = 0;
    CHECK(srv_embed(w, &q, NULL, 1, 1, as_query, &nt_query) == PROTO_OK);
    CHECK(srv_embed(w, &pq, NULL, 1, 0, prefixed, &nt_prefixed) == PROTO_OK);
    CHECKF(max_abs_diff(as_query, prefixed, dim) < 1e-6f && nt_query == nt_prefixed,
           "as a query: %g from the prefixed text's vector, %llu against %llu tokens",
           (double)max_abs_diff(as_query, prefixed, dim), (unsigned long long)nt_query,
           (unsigned long long)nt_prefixed);
    free(as_query);
    srv_search_request by_text = {.texts = &q, .n_texts = 1, .k = 5, .mode = SRV_MODE_DENSE};
    srv_search_request by_vec = {.vectors = prefixed, .n_vectors = 1, .k = 5};
    srv_search_result rt, rv;
    CHECK(srv_search(w, &by_text, &rt) == PROTO_OK && srv_search(w, &by_vec, &rv) == PROTO_OK);
    CHECK(rt.queries[0].n == 5 && rv.queries[0].n == 5);
    for (size_t i = 0; i < rt.queries[0].n && i < rv.queries[0].n; i++)
      CHECKF(
          rt.queries[0].hits[i].chunk_id == rv.queries[0].hits[i].chunk_id &&
              fabsf(rt.queries[0].hits[i].score - rv.queries[0].hits[i].score) < 1e-5f,
          "hit %zu: by text %llu (%g), by the prefixed vector %llu (%g)", i,
          (unsigned long long)rt.queries[0].hits[i].chunk_id, (double)rt.queries[0].hits[i].score,
          (unsigned long long)rv.queries[0].hits[i].chunk_id, (double)rv.queries[0].hits[i].score);
    srv_search_result_free(&rt);
    srv_search_result_free(&rv);
    free(plain);
    free(prefixed);
    srv_engine_close(w);
  }
  /* a prefix that is not a string is refused, naming the key */
  CHECK(encoder_with_config(enc, "\"retro_query_prefix\": 7") == 0);
  snprintf(data_dir, sizeof data_dir, "%.200s-qp2", saved);
  w = open_engine(enc, dec_dir, 0, &st);
  CHECK(w == NULL && st != PROTO_OK && strstr(srv_last_error(), "retro_query_prefix"));
  srv_engine_close(w);
  snprintf(data_dir, sizeof data_dir, "%s", saved);
}

/* Generation ---------------------------------------------------------------------- */

typedef struct gen_log {
  int n_chunk_calls;
  int chunks[64];
  size_t text_len;
  int cancel_after; /* > 0: cancel after this many on_text calls */
  int calls;
  atomic_int *hold; /* non-NULL: spin in on_text until *hold == 0 */
  atomic_int *started;
} gen_log;

static int g_on_text(void *ctx, const char *p, size_t n) {
  gen_log *g = ctx;
  (void)p;
  g->text_len += n;
  g->calls++;
  if (g->started) *g->started = 1;
  while (g->hold && *g->hold) usleep(1000);
  return g->cancel_after > 0 && g->calls >= g->cancel_after;
}

static void g_on_nb(void *ctx, const srv_gen_chunk *c) {
  gen_log *g = ctx;
  if (g->n_chunk_calls < 64) g->chunks[g->n_chunk_calls] = c->chunk;
  g->n_chunk_calls++;
}

/* Replays prompt + completion through a fresh state with the reported
 * neighbours set up front and checks that greedy picks the same tokens. */
static int replay_matches(srv_engine *e, const int32_t *seq, int n_prompt, int n_total,
                          const srv_gen_result *res) {
  retro *r = srv_engine_decoder(e);
  const retro_config *rc = retro_get_config(r);
  retro_state *s = NULL;
  if (retro_state_new(r, rc->max_seq, &s) != PROTO_OK) return 0;
  int ok = 1;
  for (size_t i = 0; i < res->n_chunks; i++) {
    const srv_gen_chunk *c = &res->chunks[i];
    int32_t *nb = malloc((c->n ? c->n : 1) * 128 * sizeof *nb);
    for (size_t j = 0; j < c->n; j++) {
      srv_chunk ch;
      for (int t = 0; t < 128; t++) nb[j * 128 + t] = 1; /* pad_id of the test decoder */
      if (srv_chunk_get(e, c->nb[j].chunk_id, &ch) != PROTO_OK) {
        ok = 0;
        continue;
      }
      memcpy(nb + j * 128, ch.c.tokens, ch.c.n_tokens * sizeof *nb);
      if (ch.c.n_next_tokens)
        memcpy(nb + j * 128 + 64, ch.c.next_tokens, ch.c.n_next_tokens * sizeof *nb);
      srv_chunk_free(&ch);
    }
    if (retro_set_neighbours(s, c->chunk, nb, (int)c->n, 1) != PROTO_OK) ok = 0;
    free(nb);
  }
  float *logits = malloc((size_t)n_total * rc->vocab_size * sizeof *logits);
  if (retro_forward(s, seq, n_total, 1, logits) != PROTO_OK) ok = 0;
  for (int p = n_prompt - 1; ok && p < n_total - 1; p++) {
    const float *row = logits + (size_t)p * rc->vocab_size;
    int best = 0;
    for (int v = 1; v < rc->vocab_size; v++)
      if (row[v] > row[best]) best = v;
    if (best != seq[p + 1]) {
      printf("# replay differs at position %d: %d vs %d\n", p + 1, best, seq[p + 1]);
      ok = 0;
    }
  }
  free(logits);
  retro_state_free(s);
  return ok;
}

TEST(generate) {
  if (!E) return;
  srv_engine_close(E);
  proto_status st;
  E = open_engine(NULL, NULL, 1, &st);
  CHECK(st == PROTO_OK && E && srv_engine_decoder(E));
  if (!E || !srv_engine_decoder(E)) return;
  /* a prompt of 100 tokens: chunk 0 complete in the prompt, chunk 1 completes
   * at generated token 28 and chunk 2 at 92 */
  const doc *src = &docs[3];
  int32_t *ptok = NULL;
  size_t np = 0;
  CHECK(tok_encode(srv_engine_chunk_tokenizer(E), src->text, src->len, &ptok, &np) == PROTO_OK);
  if (np < 100) {
    CHECKF(0, "document too short (%zu tokens)", np);
    free(ptok);
    return;
  }
  char *prompt = NULL;
  size_t plen = 0;
  CHECK(tok_decode(srv_engine_chunk_tokenizer(E), ptok, 100, &prompt, &plen) == PROTO_OK);
  srv_gen_request rq;
  srv_gen_request_init(&rq);
  rq.prompt = prompt;
  rq.prompt_len = plen;
  rq.max_tokens = 120;
  rq.temperature = 0;
  rq.logprobs = 2;
  rq.retrieval_mode = SRV_MODE_DENSE; /* compared with a search by vector below */
  gen_log g = {0};
  srv_gen_callbacks cb = {.on_text = g_on_text, .on_neighbours = g_on_nb, .ctx = &g};
  srv_gen_result res;
  st = srv_generate(E, &rq, &cb, &res);
  CHECKF(st == PROTO_OK, "generate: %s", srv_last_error());
  int pt = res.prompt_tokens;
  CHECKF(pt >= 95 && pt <= 105, "prompt tokens %d", pt);
  int eos = res.completion_tokens < rq.max_tokens;
  CHECK(strcmp(res.finish_reason, eos ? "stop" : "length") == 0);
  CHECK(g.text_len == res.text_len);
  CHECK(res.n_tokens == (size_t)res.completion_tokens);
  /* the text is the pieces' bytes with only ill-formed UTF-8 replaced: a
   * character split over tokens is held back until it is whole */
  proto_buf raw, whole;
  proto_buf_init(&raw);
  proto_buf_init(&whole);
  int split = 0;
  for (size_t i = 0; i < res.n_tokens; i++) {
    proto_buf_add(&raw, res.tokens[i].piece, res.tokens[i].piece_len);
    split += !proto_utf8_valid(res.tokens[i].piece, res.tokens[i].piece_len);
  }
  if (raw.len) proto_buf_add_utf8_lossy(&whole, raw.data, raw.len);
  CHECKF(whole.len == res.text_len && (!whole.len || memcmp(whole.data, res.text, whole.len) == 0),
         "text of %zu bytes, the pieces give %zu", res.text_len, whole.len);
  printf("# %d of %zu pieces are not whole UTF-8\n", split, res.n_tokens);
  proto_buf_free(&raw);
  proto_buf_free(&whole);
  /* chunks retrieved: every complete chunk of prompt + completion (the last
   * token is never fed, so a chunk it completes needs no neighbours) */
  int total = pt + res.completion_tokens;
  int want_chunks = (total - 1) / 64;
  CHECKF((int)res.n_chunks == want_chunks && g.n_chunk_calls == want_chunks,
         "chunks %zu, callbacks %d, want %d", res.n_chunks, g.n_chunk_calls, want_chunks);
  for (size_t i = 0; i < res.n_chunks; i++) {
    CHECK(res.chunks[i].chunk == (int)i);
    CHECK(res.chunks[i].n == 2);
    CHECK(res.chunks[i].in_prompt == ((((int)i + 1) * 64) <= pt));
  }
  /* the neighbours of prompt chunk 0 are the search results for its text */
  if (res.n_chunks > 0 && res.chunks[0].n > 0) {
    float *v = malloc(srv_engine_dim(E) * sizeof *v);
    const int32_t *ids0 = ptok;
    size_t len0 = 64;
    bert *b = srv_engine_encoder(E);
    CHECK(bert_embed_ids(b, &ids0, &len0, 1, v) == PROTO_OK);
    srv_search_request q = {.vectors = v, .n_vectors = 1, .k = 2};
    srv_search_result r;
    CHECK(srv_search(E, &q, &r) == PROTO_OK);
    CHECK(r.queries[0].n == 2 && r.queries[0].hits[0].chunk_id == res.chunks[0].nb[0].chunk_id &&
          r.queries[0].hits[1].chunk_id == res.chunks[0].nb[1].chunk_id);
    srv_search_result_free(&r);
    free(v);
  }
  /* replay: neighbours were set before the position that first reads them */
  int32_t *seq = malloc((size_t)total * sizeof *seq);
  int32_t *pt_ids = NULL;
  size_t pn = 0;
  tok_encode(srv_engine_chunk_tokenizer(E), prompt, plen, &pt_ids, &pn);
  memcpy(seq, pt_ids, pn * sizeof *seq);
  for (size_t i = 0; i < res.n_tokens; i++) seq[pn + i] = res.tokens[i].id;
  CHECK(replay_matches(E, seq, (int)pn, total, &res));
  free(pt_ids);
  free(seq);

  /* same request again: same text (greedy), and seeds with sampling */
  srv_gen_result res2;
  CHECK(srv_generate(E, &rq, NULL, &res2) == PROTO_OK);
  CHECK(res2.text_len == res.text_len && memcmp(res2.text, res.text, res.text_len) == 0);
  srv_gen_result_free(&res2);
  rq.temperature = 1.0;
  rq.top_p = 0.9;
  rq.has_seed = 1;
  rq.seed = 42;
  rq.max_tokens = 40;
  srv_gen_result a, b2, c;
  CHECK(srv_generate(E, &rq, NULL, &a) == PROTO_OK);
  CHECK(srv_generate(E, &rq, NULL, &b2) == PROTO_OK);
  rq.seed = 43;
  CHECK(srv_generate(E, &rq, NULL, &c) == PROTO_OK);
  CHECK(a.text_len == b2.text_len && memcmp(a.text, b2.text, a.text_len) == 0 && a.seed == 42);
  CHECK(a.completion_tokens <= 40);
  CHECK(!(a.text_len == c.text_len && memcmp(a.text, c.text, a.text_len) == 0 &&
          a.completion_tokens == c.completion_tokens) ||
        a.text_len == 0);
  /* stop sequence: a substring of the seeded output ends the text before it */
  size_t si = 0;
  for (size_t i = 2; i + 1 < a.text_len && !si; i++)
    if (a.text[i] >= 0x20 && a.text[i] < 0x7f && a.text[i + 1] >= 0x20 && a.text[i + 1] < 0x7f)
      si = i;
  if (si) {
    char stop[8];
    memcpy(stop, a.text + si, 2);
    stop[2] = 0;
    size_t at = (size_t)(strstr(a.text, stop) - a.text);
    const char *stops[1] = {stop};
    rq.seed = 42;
    rq.stop = stops;
    rq.n_stop = 1;
    srv_gen_result s1;
    gen_log g2 = {0};
    srv_gen_callbacks cb2 = {.on_text = g_on_text, .ctx = &g2};
    CHECK(srv_generate(E, &rq, &cb2, &s1) == PROTO_OK);
    CHECKF(strcmp(s1.finish_reason, "stop") == 0 && s1.text_len == at &&
               memcmp(s1.text, a.text, at) == 0 && g2.text_len == at,
           "stop at %zu: got %zu (%s)", at, s1.text_len, s1.finish_reason);
    srv_gen_result_free(&s1);
    rq.stop = NULL;
    rq.n_stop = 0;
  } else {
    printf("# stop-sequence check skipped (no ASCII pair in the sample)\n");
  }
  srv_gen_result_free(&a);
  srv_gen_result_free(&b2);
  srv_gen_result_free(&c);

  /* RETRO [OFF]: no neighbours; max_tokens exact */
  rq.retrieval = 0;
  rq.max_tokens = 7;
  rq.temperature = 0;
  srv_gen_result off;
  CHECK(srv_generate(E, &rq, NULL, &off) == PROTO_OK);
  CHECK(off.n_chunks == 0);
  CHECK(off.completion_tokens == 7 || strcmp(off.finish_reason, "stop") == 0);
  srv_gen_result_free(&off);
  rq.retrieval = 1;

  /* cancellation through on_text */
  rq.max_tokens = 50;
  rq.temperature = 1;
  rq.seed = 7;
  gen_log g3 = {.cancel_after = 2};
  srv_gen_callbacks cb3 = {.on_text = g_on_text, .ctx = &g3};
  srv_gen_result cr;
  st = srv_generate(E, &rq, &cb3, &cr);
  CHECK(st == PROTO_ECANCELLED && strcmp(cr.finish_reason, "cancelled") == 0);
  srv_gen_result_free(&cr);

  /* bad parameters */
  srv_gen_result br;
  rq.temperature = -1;
  CHECK(srv_generate(E, &rq, NULL, &br) == PROTO_ERANGE);
  rq.temperature = 1;
  rq.top_p = 1.5;
  CHECK(srv_generate(E, &rq, NULL, &br) == PROTO_ERANGE);
  rq.top_p = 1;
  rq.max_tokens = 0;
  CHECK(srv_generate(E, &rq, NULL, &br) == PROTO_ERANGE);
  srv_gen_result_free(&br);

  srv_gen_result_free(&res);
  free(prompt);
  free(ptok);
}

typedef struct busy_arg {
  srv_engine *e;
  atomic_int hold, started; /* shared with the generating thread */
  proto_status st;
} busy_arg;

static void *busy_thread(void *p) {
  busy_arg *a = p;
  srv_gen_request rq;
  srv_gen_request_init(&rq);
  rq.prompt = "busy";
  rq.prompt_len = 4;
  rq.max_tokens = 5;
  rq.retrieval = 0;
  rq.has_seed = 1;
  gen_log g = {.hold = &a->hold, .started = &a->started};
  srv_gen_callbacks cb = {.on_text = g_on_text, .ctx = &g};
  srv_gen_result r;
  a->st = srv_generate(a->e, &rq, &cb, &r);
  srv_gen_result_free(&r);
  return NULL;
}

TEST(generate_busy) {
  if (!E || !srv_engine_decoder(E)) return;
  /* one slot, no queue: a second request while the first runs is EBUSY */
  busy_arg a = {.e = E, .hold = 1};
  pthread_t t;
  pthread_create(&t, NULL, busy_thread, &a);
  for (int i = 0; i < 5000 && !a.started; i++) usleep(1000);
  CHECK(a.started);
  srv_gen_request rq;
  srv_gen_request_init(&rq);
  rq.prompt = "x";
  rq.prompt_len = 1;
  srv_gen_result r;
  CHECK(srv_generate(E, &rq, NULL, &r) == PROTO_EBUSY);
  srv_gen_result_free(&r);
  srv_info info;
  CHECK(srv_info_get(E, &info) == PROTO_OK && info.gen_busy == 1);
  a.hold = 0;
  pthread_join(t, NULL);
  CHECK(a.st == PROTO_OK);
  CHECK(srv_generate(E, &rq, NULL, &r) == PROTO_OK);
  srv_gen_result_free(&r);
}

static int cancel_at_once(void *ctx) {
  (void)ctx;
  return 1;
}

/* The paths of srv_generate and srv_eval_doc that end early or start from
 * nothing, each of which owns buffers it must give back: the ASan build
 * (LeakSanitizer at exit) fails on any that leaks. */
TEST(generate_edges) {
  if (!E || !srv_engine_decoder(E)) return;
  srv_gen_request rq;
  srv_gen_request_init(&rq);
  rq.max_tokens = 3;
  rq.temperature = 0;
  rq.logprobs = 2;
  /* an empty prompt starts from end-of-text and counts no prompt token */
  srv_gen_result r;
  proto_status st = srv_generate(E, &rq, NULL, &r);
  CHECKF(st == PROTO_OK, "empty prompt: %s", srv_last_error());
  CHECKF(r.prompt_tokens == 0 && r.completion_tokens >= 1 && r.text != NULL &&
             r.n_tokens == (size_t)r.completion_tokens,
         "empty prompt: %d prompt, %d completion tokens", r.prompt_tokens, r.completion_tokens);
  srv_gen_result_free(&r);
  /* a prompt longer than the model takes: refused after it was tokenised */
  const doc *d = &docs[3];
  size_t reps = 0, len = 0;
  while (reps < 64 && reps * n_tokens_of(E, d) < 600) reps++;
  char *longp = malloc(reps * (d->len + 1) + 1);
  for (size_t i = 0; i < reps; i++) {
    memcpy(longp + len, d->text, d->len);
    len += d->len;
    longp[len++] = '\n';
  }
  rq.prompt = longp;
  rq.prompt_len = len;
  st = srv_generate(E, &rq, NULL, &r);
  CHECKF(st == PROTO_ERANGE && strstr(srv_last_error(), "tokens"), "long prompt: %s (%s)",
         proto_strerror(st), srv_last_error());
  srv_gen_result_free(&r);
  /* a sampling parameter refused after the prompt was tokenised: finite as
   * a double, not as the sampler's float */
  rq.prompt = "a short prompt";
  rq.prompt_len = strlen(rq.prompt);
  rq.temperature = 1e300;
  CHECKF(srv_generate(E, &rq, NULL, &r) == PROTO_ERANGE && strstr(srv_last_error(), "temperature"),
         "temperature 1e300: %s", srv_last_error());
  srv_gen_result_free(&r);
  rq.temperature = 1;
  /* cancelled before the prompt's pass: an empty text, not NULL */
  srv_gen_callbacks cb = {.should_cancel = cancel_at_once};
  st = srv_generate(E, &rq, &cb, &r);
  CHECKF(st == PROTO_ECANCELLED && r.finish_reason && !strcmp(r.finish_reason, "cancelled"),
         "cancelled at once: %s, %s (%s)", proto_strerror(st), r.finish_reason, srv_last_error());
  CHECK(r.completion_tokens == 0);
  srv_gen_result_free(&r);
  /* an empty document scores nothing; a long one scores window by window */
  srv_eval_options on = {.retrieval = 1, .compare_off = 1};
  srv_eval_result a = {0};
  CHECK(srv_eval_doc(E, &on, "empty", "", 0, &a) == PROTO_OK && a.docs == 1 && a.tokens == 0);
  CHECK(srv_eval_doc(E, &on, "long", longp, len, &a) == PROTO_OK && a.docs == 2 && a.chunks > 8 &&
        a.tokens > 512);
  free(longp);
}

TEST(eval) {
  if (!E || !srv_engine_decoder(E)) return;
  const doc *d = &docs[4];
  uint64_t nt = n_tokens_of(E, d);
  srv_eval_options on = {.retrieval = 1}, off = {.retrieval = 0},
                   self = {.retrieval = 1, .exclude_self = 1};
  srv_eval_result a = {0}, b = {0}, c = {0};
  CHECK(srv_eval_doc(E, &on, d->id, d->text, d->len, &a) == PROTO_OK);
  CHECK(srv_eval_doc(E, &off, d->id, d->text, d->len, &b) == PROTO_OK);
  CHECK(srv_eval_doc(E, &self, d->id, d->text, d->len, &c) == PROTO_OK);
  uint64_t windows = (nt + 511) / 512;
  CHECKF(a.tokens == nt - windows && b.tokens == a.tokens, "scored %llu of %llu tokens",
         (unsigned long long)a.tokens, (unsigned long long)nt);
  CHECK(a.bytes > 0 && a.bytes < d->len); /* all but each window's first token */
  double bpa = a.bits / (double)a.bytes, bpb = b.bits / (double)b.bytes;
  CHECKF(isfinite(bpa) && bpa > 0 && isfinite(bpb) && bpb > 0 && fabs(bpa - bpb) > 1e-6,
         "bpb on %g off %g", bpa, bpb);
  /* RETRO [OFF] has nothing to leak; retrieving its own chunks leaks them */
  CHECK(b.chunks_kept == b.chunks);
  CHECK(a.chunks_kept < a.chunks);
  CHECK(c.chunks_kept > a.chunks_kept);
  /* compare_off: the [OFF] pass of the same windows equals a separate [OFF]
   * run, and its filtered figure is over the kept tokens of the [ON] pass */
  srv_eval_options both = {.retrieval = 1, .compare_off = 1};
  srv_eval_result e2 = {0};
  CHECK(srv_eval_doc(E, &both, d->id, d->text, d->len, &e2) == PROTO_OK);
  CHECKF(fabs(e2.bits - a.bits) < 1e-6 * a.bits && fabs(e2.off_bits - b.bits) < 1e-6 * b.bits,
         "on %g / %g, off %g / %g", e2.bits, a.bits, e2.off_bits, b.bits);
  CHECK(e2.kept_tokens == a.kept_tokens && e2.kept_off_bits > 0 && e2.kept_off_bits < e2.off_bits);
  CHECK(a.off_bits == 0 && b.off_bits == 0); /* not asked for */
}

TEST(neighbours_dump) {
  if (!E) return;
  char out[300];
  snprintf(out, sizeof out, "%s/nb", data_dir);
  srv_neighbours_options o = {.out_dir = out, .k = 3};
  uint64_t n = 0;
  CHECK(srv_neighbours_dump(E, &o, &n) == PROTO_OK);
  srv_info info;
  srv_info_get(E, &info);
  CHECK(n == info.store.chunks);
  char p[400];
  snprintf(p, sizeof p, "%s/neighbours.npy", out);
  char *buf = NULL;
  size_t len = 0;
  CHECK(read_all(p, &buf, &len) == 0);
  if (!buf) return;
  size_t hl = (unsigned char)buf[8] | (size_t)(unsigned char)buf[9] << 8;
  CHECK(memcmp(buf, "\x93NUMPY", 6) == 0 && (10 + hl) % 64 == 0);
  CHECK(strstr(buf + 10, "'<i8'") != NULL);
  CHECK(len == 10 + hl + n * 3 * 8);
  /* no neighbour from the chunk's own document */
  const int64_t *nb = (const int64_t *)(buf + 10 + hl);
  char p2[400];
  snprintf(p2, sizeof p2, "%s/chunk_ids.npy", out);
  char *cb = NULL;
  size_t cl = 0;
  read_all(p2, &cb, &cl);
  size_t ch = cb ? ((unsigned char)cb[8] | (size_t)(unsigned char)cb[9] << 8) : 0;
  const uint64_t *cids = cb ? (const uint64_t *)(cb + 10 + ch) : NULL;
  size_t same = 0, missing = 0;
  for (size_t i = 0; cids && i < n; i++) {
    srv_chunk a;
    if (srv_chunk_get(E, cids[i], &a) != PROTO_OK) {
      missing++;
      continue;
    }
    for (int j = 0; j < 3; j++) {
      srv_chunk b;
      if (nb[i * 3 + (size_t)j] < 0) {
        missing++;
        continue;
      }
      if (srv_chunk_get(E, (uint64_t)nb[i * 3 + (size_t)j], &b) == PROTO_OK) {
        if (b.c.doc_id == a.c.doc_id) same++;
        srv_chunk_free(&b);
      } else missing++;
    }
    srv_chunk_free(&a);
  }
  CHECKF(same == 0 && missing == 0, "%zu same-document neighbours, %zu missing", same, missing);
  free(cb);
  free(buf);
}

/* Searches (store snapshot taken inside idx_search, held through the hits)
 * while ingest grows a tiny LMDB map several times and syncs the index: no
 * deadlock between the index lock, the map lock and map resizes (a watchdog
 * aborts the program if it hangs), and every search succeeds. */
typedef struct grow_ctx {
  srv_engine *e;
  const float *q;
  atomic_int stop;
  atomic_long searches, failures;
} grow_ctx;

static void *grow_searcher(void *arg) {
  grow_ctx *g = arg;
  while (!atomic_load(&g->stop)) {
    srv_search_request rq = {.vectors = g->q, .n_vectors = 1, .k = 5, .with_text = 1};
    srv_search_result r;
    if (srv_search(g->e, &rq, &r) != PROTO_OK) atomic_fetch_add(&g->failures, 1);
    else srv_search_result_free(&r);
    atomic_fetch_add(&g->searches, 1);
  }
  return NULL;
}

static void watchdog(int sig) {
  (void)sig;
  static const char msg[] = "Bail out! search_while_map_grows hung (deadlock?)\n";
  if (write(1, msg, sizeof msg - 1) < 0) _exit(1);
  _exit(1);
}

TEST(search_while_map_grows) {
  char saved[256];
  snprintf(saved, sizeof saved, "%s", data_dir);
  if (strlen(saved) + 6 > sizeof data_dir) return;
  memcpy(data_dir + strlen(saved), "-grow", 6);
  mkdir(data_dir, 0755);
  srv_engine_options o = {.data_dir = data_dir,
                          .encoder_dir = enc_dir,
                          .decoder_dir = dec_dir,
                          .threads = 1,
                          .embed_batch = 16,
                          .commit_chunks = 16,
                          .map_bytes = 256 * 1024,
                          .gen_slots = 1,
                          .gen_queue = -1};
  srv_engine *e = NULL;
  CHECK(srv_engine_open(&o, &e) == PROTO_OK);
  if (e) {
    srv_doc d0 = {.id = "seed", .text = docs[0].text, .text_len = docs[0].len};
    srv_ack a0;
    CHECK(srv_upsert(e, &d0, 1, &a0) == PROTO_OK && a0.status == PROTO_OK);
    float *q = malloc(srv_engine_dim(e) * sizeof *q);
    CHECK(store_vector_get(e->st, 1, q) == PROTO_OK);
    srv_info before;
    srv_info_get(e, &before);
    grow_ctx g = {.e = e, .q = q};
    pthread_t t[2];
    signal(SIGALRM, watchdog);
    alarm(120);
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, grow_searcher, &g);
    int bad = 0;
    char id[64];
    for (int round = 0; round < 12 && !bad; round++)
      for (size_t i = 0; i < n_docs && !bad; i++) {
        snprintf(id, sizeof id, "r%d-%zu", round, i);
        srv_doc d = {.id = id, .text = docs[i].text, .text_len = docs[i].len};
        srv_ack a;
        if (srv_upsert(e, &d, 1, &a) != PROTO_OK || a.status != PROTO_OK) bad = 1;
      }
    atomic_store(&g.stop, 1);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    alarm(0);
    srv_info after;
    srv_info_get(e, &after);
    CHECK(!bad);
    CHECKF(after.store.map_bytes > before.store.map_bytes, "map %zu -> %zu bytes",
           before.store.map_bytes, after.store.map_bytes);
    CHECKF(atomic_load(&g.searches) > 10 && atomic_load(&g.failures) == 0,
           "%ld searches, %ld failed", atomic_load(&g.searches), atomic_load(&g.failures));
    free(q);
    srv_engine_close(e);
  }
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", data_dir);
  if (system(cmd) != 0) printf("# could not remove %s\n", data_dir);
  snprintf(data_dir, sizeof data_dir, "%s", saved);
}

/* Concurrent query embeddings share encoder calls (engine_embed.c) and each
 * gets the vector it would get alone. */
enum { EMB_THREADS = 6, EMB_ROUNDS = 12 };
typedef struct {
  int t;
  const float *alone; /* (EMB_THREADS, dim) */
  uint32_t dim;
  double worst;
  int failed;
} emb_job;

/* Texts of a few hundred tokens, so that calls last long enough to overlap. */
static const char *emb_text(int t) {
  static char texts[EMB_THREADS][2048];
  static const char *const words[] = {"open",  "file",   "list",   "loop",  "sort",
                                      "value", "python", "module", "class", "token"};
  if (!texts[t][0]) {
    size_t n = 0;
    for (int w = 0; w < 200 && n + 16 < sizeof texts[t]; w++)
      n += (size_t)snprintf(texts[t] + n, sizeof texts[t] - n, "%s ", words[(w * (t + 3)) % 10]);
  }
  return texts[t];
}

static void *emb_thread(void *arg) {
  emb_job *j = arg;
  float *v = malloc(j->dim * sizeof *v);
  const char *text = emb_text(j->t);
  for (int r = 0; v && r < EMB_ROUNDS; r++) {
    if (srv_embed(E, &text, NULL, 1, 0, v, NULL) != PROTO_OK) {
      j->failed = 1;
      break;
    }
    for (uint32_t i = 0; i < j->dim; i++) {
      double d = fabs((double)v[i] - (double)j->alone[(size_t)j->t * j->dim + i]);
      if (d > j->worst) j->worst = d;
    }
  }
  if (!v) j->failed = 1;
  free(v);
  return NULL;
}

TEST(embed_coalesced) {
  if (!E) return;
  uint32_t dim = srv_engine_dim(E);
  float *alone = malloc((size_t)EMB_THREADS * dim * sizeof *alone);
  if (!alone) return;
  for (int t = 0; t < EMB_THREADS; t++) {
    const char *text = emb_text(t);
    CHECK(srv_embed(E, &text, NULL, 1, 0, alone + (size_t)t * dim, NULL) == PROTO_OK);
  }
  srv_info before, after;
  CHECK(srv_info_get(E, &before) == PROTO_OK);
  pthread_t th[EMB_THREADS];
  emb_job jobs[EMB_THREADS];
  for (int t = 0; t < EMB_THREADS; t++) {
    jobs[t] = (emb_job){.t = t, .alone = alone, .dim = dim};
    pthread_create(&th[t], NULL, emb_thread, &jobs[t]);
  }
  double worst = 0;
  int failed = 0;
  for (int t = 0; t < EMB_THREADS; t++) {
    pthread_join(th[t], NULL);
    if (jobs[t].worst > worst) worst = jobs[t].worst;
    failed |= jobs[t].failed;
  }
  CHECK(srv_info_get(E, &after) == PROTO_OK);
  uint64_t calls = after.query_embed_calls - before.query_embed_calls;
  uint64_t texts = after.query_embed_texts - before.query_embed_texts;
  printf("# %d concurrent embeddings in %llu encoder calls; max |shared - alone| %.3g\n",
         EMB_THREADS * EMB_ROUNDS, (unsigned long long)calls, worst);
  CHECK(!failed);
  CHECK(texts == (uint64_t)EMB_THREADS * EMB_ROUNDS);
  CHECK(calls < texts); /* some calls were shared */
  CHECK(worst < 1e-5);  /* float rounding only */
  free(alone);
}

/* Hybrid's dense weight: the request's when given; else 0.2 when the best
 * BM25 chunk is more than 40% above the tenth, else 0.5. */
TEST(hybrid_alpha) {
  float steep[10] = {10, 9, 8, 7, 6, 6, 5, 5, 5, 5}; /* (10 - 5) / 10 = 0.5 */
  float flat[10] = {10, 10, 9, 9, 9, 8, 8, 8, 7, 7}; /* 0.3 */
  CHECK(srv__hybrid_alpha(0.7f, steep, 10) == 0.7f);
  CHECK(srv__hybrid_alpha(0, steep, 10) == 0.2f);
  CHECK(srv__hybrid_alpha(0, flat, 10) == 0.5f);
  CHECK(srv__hybrid_alpha(0, steep, 9) == 0.5f); /* fewer than ten: no margin */
}

/* Whole words in order, without case or punctuation; five words at least. */
static int has_phrase(const char *q, const char *t) {
  return phrase_touches(q, strlen(q), "", 0, t, strlen(t), "", 0);
}
static int touches(const char *q, const char *before, const char *t, const char *after) {
  return phrase_touches(q, strlen(q), before, strlen(before), t, strlen(t), after, strlen(after));
}
TEST(phrase) {
  const char *t = "To append, Open the File for appending: open(path, 'a') and __init__ 42.";
  CHECK(has_phrase("open the file for appending", t));
  CHECK(has_phrase("OPEN the file, for   appending!", t));  /* case, punctuation */
  CHECK(has_phrase("open path a and __init__ 42", t));      /* '_' and digits are word */
  CHECK(!has_phrase("the file for appending", t));          /* four words: a keyword query */
  CHECK(!has_phrase("open the file for append", t));        /* words are whole */
  CHECK(!has_phrase("the open file for appending", t));     /* in order */
  CHECK(!has_phrase("open the file for appending now", t)); /* all of them */
  CHECK(!has_phrase("open the file for appending", ""));
  CHECK(has_phrase("caf\xc3\xa9 open the file for", "caf open the file for")); /* not ASCII */
  CHECK(phrase_words("a b, c_d 12!", 12) == 4 && phrase_words("", 0) == 0 &&
        phrase_words(" caf\xc3\xa9 ", 7) == 1);
  /* a chunk boundary: the phrase runs from the chunk before into this one,
   * or from this one into its continuation, even through a word */
  CHECK(touches("open the file for appending", "you open the f", "ile for appending", " and"));
  CHECK(touches("open the file for appending", "", "so open the fi", "le for appending."));
  CHECK(!touches("open the file for appending", "open the file for appending", " then", ""));
  CHECK(!touches("open the file for appending", "", "then ", "open the file for appending"));
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_engine MODELS_DIR\n");
    return 2;
  }
  snprintf(models, sizeof models, "%s", argv[1]);
  char skip[1200];
  snprintf(skip, sizeof skip, "%s/SKIP", models);
  if (access(skip, F_OK) == 0) {
    printf("1..0 # SKIP no PyTorch to make the test models\n");
    return 77;
  }
  snprintf(enc_dir, sizeof enc_dir, "%s/encoder", models);
  snprintf(encwp_dir, sizeof encwp_dir, "%s/encoder-wp", models);
  snprintf(dec_dir, sizeof dec_dir, "%s/decoder", models);
  snprintf(corpus_dir, sizeof corpus_dir, "%s/corpus", models);
  snprintf(data_dir, sizeof data_dir, "/tmp/retro-test-engine-XXXXXX");
  if (!mkdtemp(data_dir)) return 1;
  load_corpus();
  CHECK(n_docs >= 10);
  RUN(ingest);
  RUN(self_nearest);
  RUN(embed_coalesced);
  RUN(documents_and_chunks);
  RUN(upsert_delete_exclude);
  RUN(unchanged_skip);
  RUN(reopen_and_mismatch);
  RUN(embed_by_text);
  RUN(query_prefix);
  RUN(hybrid_alpha);
  RUN(phrase);
  RUN(generate);
  RUN(generate_busy);
  RUN(generate_edges);
  RUN(eval);
  RUN(neighbours_dump);
  RUN(search_while_map_grows);
  srv_engine_close(E);
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s-wp' '%s-qp' '%s-qp2' '%s-qp-enc'", data_dir, data_dir,
           data_dir, data_dir, data_dir);
  if (system(cmd) != 0) printf("# could not remove %s\n", data_dir);
  for (size_t i = 0; i < n_docs; i++) free(docs[i].text);
  return tap_done();
}
