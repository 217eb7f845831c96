/* ingest.c - the ingest pipeline: documents -> chunk tokenizer -> 64-token
 * chunks -> batched embeddings -> one LMDB write transaction per batch ->
 * FAISS add, with per-document acknowledgements once committed.
 *
 * Three stages, so the encoder never waits for the disk or the tokenizer:
 *   1. srv_ingest_add (the caller's thread): validate, tokenise, cut into
 *      chunks, decode each chunk's text; queue the document (blocking while
 *      the pipeline holds queue_chunks chunks: back-pressure).
 *   2. the embedding thread: takes chunks across queued documents in
 *      batches of embed_batch and runs the encoder (which spreads a batch
 *      over its own worker threads).
 *   3. the writer thread: commits whole embedded documents, several per
 *      transaction (at most commit_chunks chunks, never the same id twice in
 *      one transaction), then syncs the lexical and FAISS indexes
 *      (srv__sync_indexes), then the acknowledgements and the
 *      progress callbacks; saves the index every save_interval_s.
 * Keys: a chunk is embedded as its own 64 tokens, except a short last chunk
 * of a longer document, which is embedded as the document's last 64 tokens
 * (it still stores and returns only its own tokens). Embedded alone, a tail
 * of a few tokens ("\n", "api-list::\n") lands near every short query and
 * outranked whole chunks for them (measured on the default corpus: the top 5
 * of "example" were five "\n" tails).
 * Unchanged documents: each document is stored with its content hash, two
 * SHA-256: of the models' fingerprints, the chunking rule and its text; and
 * of that and its metadata. srv_ingest_add looks the id up: with both the
 * same (and no `force`) the document is unchanged; with only the text's the
 * same, only its metadata changed. Either way it goes through the pipeline
 * untokenised, unembedded, only to keep its place in the order; the writer
 * checks the hashes again just before its batch commits (a document of the
 * same id queued earlier, or a delete, may have changed them since) and
 * acknowledges it as unchanged, or rewrites its metadata in place (same
 * chunks: the indexes do not change), or else tokenises and embeds it right
 * there and stores it like any other.
 * A database written before content hashes has none: each document is
 * embedded once more on its next upsert, which stores its hash.
 * A document is all-or-nothing (store_upsert); if a multi-document
 * transaction fails, its documents are retried one by one so that one bad
 * document does not fail its neighbours.
 *
 * Bulk vectors (`retro index --vectors`, bulk.h): a session with
 * take_vectors fills each document's vectors in srv_ingest_add, in order
 * (an unchanged one's too, by its stored chunk count); the embedding thread
 * passes such documents on with nothing left to embed, and embed_late
 * keeps them. srv_doc_chunks gives the chunks and their encoder inputs
 * exactly as this file makes them, for `retro chunks`.
 *
 * What it does not: read files or parse JSON lines (the CLI and the HTTP
 * daemon do), or print anything.
 */
#include "engine_priv.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* One document on its way through the pipeline. */
typedef struct pdoc {
  struct pdoc *next;
  srv_ingest *sess;
  size_t seq;
  char *id;
  char *meta;      /* NULL = {} */
  uint64_t bytes;  /* text bytes */
  int32_t *tokens; /* all tokens of the document */
  size_t n_tokens;
  uint32_t n_chunks;
  char **texts; /* n_chunks decoded chunk texts */
  size_t *text_lens;
  char **etexts; /* text for the encoder (valid UTF-8) when not by ids */
  size_t *etext_lens;
  char *tail_key; /* text of the key window of a short last chunk
                                 (see key_window), when not by ids; else NULL */
  size_t tail_key_len;
  float *vecs;         /* n_chunks x dim */
  uint32_t embedded;   /* chunks embedded so far */
  proto_status status; /* set when embedding failed */
  char *message;
  unsigned char hash[STORE_HASH_BYTES]; /* text hash | text+metadata hash */
  int unchanged;                        /* 1: the store held this hash at add time,
                                 2: its text hash (only the metadata differs);
                                 not tokenised; raw/raw_len keep the text */
  char *raw;
  size_t raw_len;
  uint64_t queued;      /* chunks counted in the pipeline's room */
  uint64_t same_num;    /* unchanged: the stored document's num */
  uint32_t same_chunks; /*   and chunk count */
  int given;            /* vecs came from the session's take_vectors */
  uint32_t n_given;     /*   this many (an unchanged one: before tokenising) */
} pdoc;

typedef struct pqueue {
  pdoc *head, *tail;
} pqueue;

static void pq_push(pqueue *q, pdoc *d) {
  d->next = NULL;
  if (q->tail) q->tail->next = d;
  else q->head = d;
  q->tail = d;
}

static pdoc *pq_pop(pqueue *q) {
  pdoc *d = q->head;
  if (d) {
    q->head = d->next;
    if (!q->head) q->tail = NULL;
    d->next = NULL;
  }
  return d;
}

struct srv_pipe {
  srv_engine *e;
  pthread_mutex_t mu;
  pthread_cond_t cv_in;    /* embed thread waits for input */
  pthread_cond_t cv_out;   /* writer waits for embedded docs */
  pthread_cond_t cv_space; /* producers wait for room */
  pqueue in, out;
  uint64_t queued_chunks; /* chunks anywhere in the pipeline */
  size_t queued_docs;
  int stop, embed_done;
  pthread_t embed_thread, writer_thread;
  int started_embed, started_writer;
  size_t batch, commit, capacity;
  double save_interval, last_save;
};

struct srv_ingest {
  srv_engine *e;
  srv_ingest_callbacks cb;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  size_t added, acked;
  proto_status first_err;
  srv_ingest_progress prog;
  double t0;
};

static void pdoc_free(pdoc *d) {
  if (!d) return;
  for (uint32_t i = 0; d->texts && i < d->n_chunks; i++) free(d->texts[i]);
  for (uint32_t i = 0; d->etexts && i < d->n_chunks; i++) free(d->etexts[i]);
  free(d->texts);
  free(d->text_lens);
  free(d->etexts);
  free(d->etext_lens);
  free(d->tail_key);
  free(d->tokens);
  free(d->vecs);
  free(d->id);
  free(d->meta);
  free(d->message);
  free(d->raw);
  free(d);
}

void srv__salt_of(const char *encoder_fp, const char *chunk_tok_fp, uint32_t dim, int by_ids,
                  unsigned char out[32]) {
  proto_sha256 h;
  char dims[32];
  snprintf(dims, sizeof dims, "%u", (unsigned)dim);
  const char *parts[] = {"retrod content v1: key window = last 64 tokens", encoder_fp, chunk_tok_fp,
                         dims, by_ids ? "by ids" : "by text"};
  proto_sha256_init(&h);
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
    proto_sha256_update(&h, parts[i], strlen(parts[i]) + 1);
  proto_sha256_final(&h, out);
}

void srv__content_salt(srv_engine *e) {
  srv__salt_of(bert_fingerprint(e->enc), tok_fingerprint(e->ctok), e->dim, e->embed_by_ids,
               e->hash_salt);
}

/* The second half of a content hash: SHA-256 of the text's half and the
 * metadata as stored. */
static void meta_hash(const unsigned char text_hash[32], const char *meta, unsigned char out[32]) {
  proto_sha256 h;
  proto_sha256_init(&h);
  proto_sha256_update(&h, text_hash, 32);
  proto_sha256_update(&h, meta, strlen(meta));
  proto_sha256_final(&h, out);
}

/* out[0..32): SHA-256 of the salt and the text (length first); out[32..64):
 * of those 32 bytes and the metadata as given ({} for none): metadata written
 * differently (key order, spaces) counts as changed, which costs a metadata
 * write and never a wrong skip. */
void srv__content_hash(const unsigned char salt[32], const char *text, size_t text_len,
                       const char *metadata_json, unsigned char out[STORE_HASH_BYTES]) {
  proto_sha256 h;
  unsigned char len[8];
  const char *meta = metadata_json && *metadata_json ? metadata_json : "{}";
  for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)text_len >> (8 * i));
  proto_sha256_init(&h);
  proto_sha256_update(&h, salt, 32);
  proto_sha256_update(&h, len, sizeof len);
  if (text_len) proto_sha256_update(&h, text, text_len);
  proto_sha256_final(&h, out);
  meta_hash(out, meta, out + 32);
}

/* How the stored document id compares with this content hash: 1 the same,
 * 2 the same text (other metadata), 0 otherwise or absent; its doc num and
 * chunk count in *num, *n_chunks. */
static int stored_unchanged(srv_engine *e, const char *id, const unsigned char *hash, uint64_t *num,
                            uint32_t *n_chunks) {
  unsigned char old[STORE_HASH_BYTES];
  *num = 0;
  if (store_doc_hash(e->st, id, old, num, n_chunks) != PROTO_OK || !*num) return 0;
  if (memcmp(old, hash, STORE_HASH_BYTES) == 0) return 1;
  return memcmp(old, hash, 32) == 0 ? 2 : 0;
}

/* A copy of s[0..n) with ill-formed UTF-8 replaced (WordPiece reads valid
 * UTF-8); never NULL on success, NULL when out of memory. */
static char *utf8_dup(const char *s, size_t n, size_t *len) {
  proto_buf b;
  proto_buf_init(&b);
  proto_buf_add_utf8_lossy(&b, s, n);
  if (!b.failed && !b.data) b.data = calloc(1, 1);
  if (b.failed || !b.data) {
    proto_buf_free(&b);
    return NULL;
  }
  *len = b.len;
  return b.data;
}

/* The tokens chunk c is embedded from (its key): its own, or for a short last
 * chunk of a document longer than a chunk, the document's last 64 tokens.
 * Returns 1 when that window is not the chunk itself. */
static int key_window(const pdoc *d, uint32_t c, size_t *off, size_t *len) {
  *off = (size_t)c * PROTO_CHUNK_TOKENS;
  *len = d->n_tokens - *off < PROTO_CHUNK_TOKENS ? d->n_tokens - *off : PROTO_CHUNK_TOKENS;
  if (*len == PROTO_CHUNK_TOKENS || d->n_tokens < PROTO_CHUNK_TOKENS) return 0;
  *off = d->n_tokens - PROTO_CHUNK_TOKENS;
  *len = PROTO_CHUNK_TOKENS;
  return 1;
}

/* The text chunk c is embedded from, when not by ids (tail: key_window said
 * the key is the document's last 64 tokens). */
static const char *key_text(const pdoc *d, uint32_t c, int tail, size_t *len) {
  if (tail && d->tail_key) {
    *len = d->tail_key_len;
    return d->tail_key;
  }
  if (d->etexts) {
    *len = d->etext_lens[c];
    return d->etexts[c];
  }
  *len = d->text_lens[c];
  return d->texts[c];
}

/* Embedding thread ---------------------------------------------------------- */

static void *embed_main(void *arg) {
  srv_pipe *p = arg;
  srv_engine *e = p->e;
  size_t B = p->batch;
  pqueue work = {0};      /* documents being embedded, in order */
  uint64_t work_left = 0; /* chunks not yet embedded in work */
  const int32_t **ids = malloc(B * sizeof *ids);
  size_t *lens = malloc(B * sizeof *lens);
  const char **txt = malloc(B * sizeof *txt);
  size_t *tlens = malloc(B * sizeof *tlens);
  float *vec = malloc(B * e->dim * sizeof *vec);
  int oom = !ids || !lens || !txt || !tlens || !vec;

  for (;;) {
    pthread_mutex_lock(&p->mu);
    while (!work.head && !p->in.head && !p->stop) pthread_cond_wait(&p->cv_in, &p->mu);
    if (!work.head && !p->in.head && p->stop) {
      p->embed_done = 1;
      pthread_cond_broadcast(&p->cv_out);
      pthread_mutex_unlock(&p->mu);
      break;
    }
    while (work_left < B && p->in.head) {
      pdoc *d = pq_pop(&p->in);
      work_left += d->n_chunks - d->embedded; /* given vectors: none left */
      pq_push(&work, d);
    }
    pthread_mutex_unlock(&p->mu);

    /* one batch of up to B chunks, across documents */
    size_t n = 0;
    for (pdoc *d = work.head; d && n < B; d = d->next) {
      if (d->status != PROTO_OK) continue;
      for (uint32_t c = d->embedded; c < d->n_chunks && n < B; c++) {
        size_t off, len;
        int tail = key_window(d, c, &off, &len);
        if (!oom) {
          ids[n] = d->tokens + off;
          lens[n] = len;
          txt[n] = key_text(d, c, tail, &tlens[n]);
        }
        n++;
      }
    }
    if (n > 0) {
      proto_status s = oom ? srv__fail(PROTO_ENOMEM, "out of memory")
                           : srv__embed_chunks(e, ids, lens, txt, tlens, n, vec);
      if (s == PROTO_OK) atomic_fetch_add(&e->n_embedded_chunks, n);
      size_t done = 0;
      for (pdoc *d = work.head; d && done < n; d = d->next) {
        if (d->status != PROTO_OK) continue;
        while (d->embedded < d->n_chunks && done < n) {
          if (s == PROTO_OK)
            memcpy(d->vecs + (size_t)d->embedded * e->dim, vec + done * e->dim,
                   e->dim * sizeof(float));
          d->embedded++;
          done++;
        }
        if (s != PROTO_OK) {
          d->status = s;
          d->message = strdup(srv_last_error());
        }
      }
      work_left -= n;
    }
    /* hand on every finished document at the front (keeps the order) */
    pthread_mutex_lock(&p->mu);
    int moved = 0;
    while (work.head &&
           (work.head->embedded == work.head->n_chunks || work.head->status != PROTO_OK)) {
      pdoc *d = pq_pop(&work);
      if (d->status != PROTO_OK) work_left -= d->n_chunks - d->embedded;
      pq_push(&p->out, d);
      moved = 1;
    }
    if (moved) pthread_cond_signal(&p->cv_out);
    pthread_mutex_unlock(&p->mu);
  }
  free(ids);
  free(lens);
  free(txt);
  free(tlens);
  free(vec);
  return NULL;
}

/* Writer thread ---------------------------------------------------------------- */

/* Stores n documents in one transaction. nums receives their doc ids. */
static proto_status commit_docs(srv_pipe *p, pdoc **docs, size_t n, uint64_t *nums) {
  srv_engine *e = p->e;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += docs[i]->n_chunks;
  store_doc_input *in = calloc(n ? n : 1, sizeof *in);
  store_chunk_input *ch = calloc(total ? total : 1, sizeof *ch);
  proto_status s;
  if (!in || !ch) {
    s = srv__fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  size_t c = 0;
  for (size_t i = 0; i < n; i++) {
    pdoc *d = docs[i];
    in[i].id = d->id;
    in[i].metadata_json = d->meta;
    in[i].n_chunks = d->n_chunks;
    in[i].chunks = ch + c;
    in[i].content_hash = d->hash;
    for (uint32_t j = 0; j < d->n_chunks; j++, c++) {
      size_t off = (size_t)j * PROTO_CHUNK_TOKENS;
      size_t len = d->n_tokens - off;
      ch[c].tokens = d->tokens + off;
      ch[c].n_tokens = (uint32_t)(len < PROTO_CHUNK_TOKENS ? len : PROTO_CHUNK_TOKENS);
      ch[c].text = d->texts[j];
      ch[c].text_len = d->text_lens[j];
      ch[c].vector = d->vecs + (size_t)j * e->dim;
    }
  }
  s = store_upsert(e->st, in, n, e->dim, nums);
  if (s != PROTO_OK) s = srv__fail(s, "storing: %s", store_last_error());
leave:
  free(in);
  free(ch);
  return s;
}

static int same_id_in(pdoc *const *docs, size_t n, const char *id) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(docs[i]->id, id) == 0) return 1;
  return 0;
}

/* Reports one document to its session: the ack callback and the counters
 * (not yet `acked`, which releases flush; see finish_batch). */
static void report(srv_pipe *p, pdoc *d, proto_status st, const char *msg, uint64_t doc_num,
                   int indexed) {
  srv_ingest *in = d->sess;
  srv_engine *e = p->e;
  srv_ack a = {.id = d->id,
               .seq = d->seq,
               .status = st,
               .message = st == PROTO_OK ? "" : msg,
               .doc_num = doc_num,
               .n_chunks = st == PROTO_OK ? d->n_chunks : 0,
               .indexed = indexed};
  if (st == PROTO_OK) {
    atomic_fetch_add(&e->n_ingested_docs, 1);
    atomic_fetch_add(&e->n_ingested_chunks, d->n_chunks);
  } else {
    atomic_fetch_add(&e->n_ingest_errors, 1);
    if (st == PROTO_ENOSPACE) atomic_fetch_add(&e->n_nospace, 1);
  }
  if (in->cb.on_ack) in->cb.on_ack(in->cb.ctx, &a);
  pthread_mutex_lock(&in->mu);
  if (st == PROTO_OK) {
    in->prog.docs++;
    in->prog.chunks += d->n_chunks;
    in->prog.bytes += d->bytes;
  } else {
    in->prog.errors++;
    if (in->first_err == PROTO_OK) in->first_err = st;
  }
  pthread_mutex_unlock(&in->mu);
}

/* Reports a document whose stored chunks were kept (doc num, n chunks):
 * skipped as unchanged, or its metadata alone rewritten. */
static void report_kept(srv_pipe *p, pdoc *d, uint64_t num, uint32_t n, int unchanged) {
  srv_ingest *in = d->sess;
  srv_ack a = {.id = d->id,
               .seq = d->seq,
               .status = PROTO_OK,
               .message = "",
               .doc_num = num,
               .n_chunks = n,
               .unchanged = unchanged,
               .indexed = 1};
  atomic_fetch_add(unchanged ? &p->e->n_unchanged : &p->e->n_ingested_docs, 1);
  if (in->cb.on_ack) in->cb.on_ack(in->cb.ctx, &a);
  pthread_mutex_lock(&in->mu);
  if (unchanged) in->prog.unchanged++;
  else in->prog.docs++;
  in->prog.bytes += d->bytes;
  pthread_mutex_unlock(&in->mu);
}

static proto_status tokenize_doc(srv_engine *e, pdoc *d, const char *text, size_t len);

/* A document queued as unchanged whose stored hash differs by now: tokenised
 * and embedded here, on the writer thread (rare: an earlier document of the
 * same id, or a delete, came in between). Failures go in d->status. */
static void embed_late(srv_engine *e, pdoc *d) {
  float *given = d->given ? d->vecs : NULL;
  if (d->given) d->vecs = NULL;
  proto_status s = tokenize_doc(e, d, d->raw, d->raw_len);
  if (d->given) { /* the vectors came with it: no encoder */
    free(d->vecs);
    d->vecs = given;
    if (s == PROTO_OK && d->n_chunks != d->n_given)
      s = srv__fail(PROTO_EINTERNAL, "%u chunks now, %u vectors given", (unsigned)d->n_chunks,
                    (unsigned)d->n_given);
  }
  size_t B = 32;
  const int32_t *ids[32];
  size_t lens[32], tlens[32];
  const char *txt[32];
  for (uint32_t c0 = 0; s == PROTO_OK && !d->given && c0 < d->n_chunks; c0 += (uint32_t)B) {
    size_t n = d->n_chunks - c0 < B ? d->n_chunks - c0 : B;
    for (size_t i = 0; i < n; i++) {
      size_t off, len;
      int tail = key_window(d, c0 + (uint32_t)i, &off, &len);
      ids[i] = d->tokens + off;
      lens[i] = len;
      txt[i] = key_text(d, c0 + (uint32_t)i, tail, &tlens[i]);
    }
    s = srv__embed_chunks(e, ids, lens, txt, tlens, n, d->vecs + (size_t)c0 * e->dim);
    if (s == PROTO_OK) atomic_fetch_add(&e->n_embedded_chunks, n);
  }
  d->embedded = d->n_chunks;
  d->unchanged = 0;
  if (s != PROTO_OK) {
    d->status = s;
    d->message = strdup(srv_last_error());
  }
}

/* Progress callbacks, then `acked` (after which a session may be freed),
 * then the pipeline room; frees the documents. */
static void finish_batch(srv_pipe *p, pdoc **docs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    srv_ingest *in = docs[i]->sess;
    int first = 1;
    for (size_t j = 0; j < i; j++) first &= docs[j]->sess != in;
    if (!first || !in->cb.on_progress) continue;
    srv_ingest_progress pr;
    pthread_mutex_lock(&in->mu);
    pr = in->prog;
    pthread_mutex_unlock(&in->mu);
    pr.elapsed_s = proto_now() - in->t0;
    in->cb.on_progress(in->cb.ctx, &pr);
  }
  uint64_t chunks = 0;
  for (size_t i = 0; i < n; i++) chunks += docs[i]->queued;
  pthread_mutex_lock(&p->mu);
  p->queued_chunks -= chunks;
  p->queued_docs -= n;
  atomic_store(&p->e->n_queue, p->queued_chunks);
  pthread_cond_broadcast(&p->cv_space);
  pthread_mutex_unlock(&p->mu);
  for (size_t i = 0; i < n; i++) {
    srv_ingest *in = docs[i]->sess;
    pdoc_free(docs[i]);
    pthread_mutex_lock(&in->mu);
    in->acked++;
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
  }
}

/* The writer thread's arrays, grown together: one batch of documents, those
 * of them to commit (good) and each commit's doc num, status and message. */
typedef struct writer_batch {
  size_t cap;
  pdoc **docs, **good;
  uint64_t *nums;
  proto_status *sts;
  char **msgs;
} writer_batch;

/* Doubles every array; 0, or -1 when one could not grow (those that did
 * keep their new size, cap stays the smaller). */
static int writer_batch_grow(writer_batch *b) {
  size_t nc = b->cap ? b->cap * 2 : 64;
  pdoc **nd = realloc(b->docs, nc * sizeof *nd);
  if (nd) b->docs = nd;
  pdoc **ng = realloc(b->good, nc * sizeof *ng);
  if (ng) b->good = ng;
  uint64_t *nn = realloc(b->nums, nc * sizeof *nn);
  if (nn) b->nums = nn;
  proto_status *ns = realloc(b->sts, nc * sizeof *ns);
  if (ns) b->sts = ns;
  char **nm = realloc(b->msgs, nc * sizeof *nm);
  if (nm) b->msgs = nm;
  if (!nd || !ng || !nn || !ns || !nm) return -1;
  b->cap = nc;
  return 0;
}

static void writer_batch_free(writer_batch *b) {
  free(b->docs);
  free(b->good);
  free(b->nums);
  free(b->sts);
  free(b->msgs);
}

/* Waits for documents and takes the next batch off p->out: up to p->commit
 * chunks, never two of one id. Returns how many (0: the pipe is stopping
 * and drained); *oom when the arrays could not grow. */
static size_t writer_take(srv_pipe *p, writer_batch *b, int *oom) {
  size_t n = 0, chunks = 0;
  *oom = 0;
  pthread_mutex_lock(&p->mu);
  while (!p->out.head && !(p->stop && p->embed_done)) pthread_cond_wait(&p->cv_out, &p->mu);
  while (p->out.head) {
    pdoc *d = p->out.head;
    if (n > 0 && (chunks + d->n_chunks > p->commit || same_id_in(b->docs, n, d->id))) break;
    if (n == b->cap && writer_batch_grow(b)) {
      *oom = 1;
      break;
    }
    b->docs[n++] = pq_pop(&p->out);
    chunks += d->n_chunks;
  }
  pthread_mutex_unlock(&p->mu);
  return n;
}

/* Those queued as unchanged are checked again now (upserts are written by
 * this thread alone; a delete after the check comes after the answer too):
 * still unchanged (unchanged 1), metadata rewritten in place (2), or
 * embedded here. Those with no error go in b->good; returns how many. */
static size_t writer_recheck(srv_engine *e, writer_batch *b, size_t n) {
  size_t ng = 0;
  for (size_t i = 0; i < n; i++) {
    pdoc *d = b->docs[i];
    if (d->unchanged) {
      int now = stored_unchanged(e, d->id, d->hash, &d->same_num, &d->same_chunks);
      if (now == 1) {
        d->unchanged = 1;
        continue;
      }
      if (now == 2) { /* only the metadata changed: rewrite it in place */
        int found = 0;
        proto_status ms = store_doc_set_meta(e->st, d->id, d->meta, d->hash, &found);
        if (ms == PROTO_OK && found) {
          d->unchanged = 2;
          continue;
        }
        if (ms != PROTO_OK) {
          d->status = srv__fail(ms, "storing: %s", store_last_error());
          d->message = strdup(srv_last_error()); /* NULL: reported as "" */
          d->unchanged = 0;
          continue;
        }
      }
      embed_late(e, d);
    }
    if (d->status == PROTO_OK) b->good[ng++] = d;
  }
  return ng;
}

/* Commits b->good[0..ng) in one transaction, or one by one when that fails
 * to isolate the failing document(s); fills b->sts, b->msgs, b->nums.
 * Returns 1 when the indexes were brought up to date after. */
static int writer_commit(srv_pipe *p, writer_batch *b, size_t ng) {
  if (ng == 0) return 0;
  int any_ok = 0;
  for (size_t i = 0; i < ng; i++) b->msgs[i] = NULL;
  proto_status s = commit_docs(p, b->good, ng, b->nums);
  if (s == PROTO_OK) {
    for (size_t i = 0; i < ng; i++) b->sts[i] = PROTO_OK;
    any_ok = 1;
  } else if (ng == 1) {
    b->sts[0] = s;
    b->msgs[0] = strdup(srv_last_error()); /* NULL: reported by its status */
  } else {
    for (size_t i = 0; i < ng; i++) {
      b->sts[i] = commit_docs(p, b->good + i, 1, b->nums + i);
      if (b->sts[i] == PROTO_OK) any_ok = 1;
      else b->msgs[i] = strdup(srv_last_error());
    }
  }
  return any_ok && srv__sync_indexes(p->e) == PROTO_OK;
}

/* Acknowledges the batch in the order the documents were added (freeing
 * the commit messages), then finishes it. */
static void writer_ack(srv_pipe *p, writer_batch *b, size_t n, int indexed) {
  for (size_t i = 0, j = 0; i < n; i++) {
    pdoc *d = b->docs[i];
    if (d->unchanged == 1 || d->unchanged == 2) {
      report_kept(p, d, d->same_num, d->same_chunks, d->unchanged == 1);
    } else if (d->status != PROTO_OK) {
      report(p, d, d->status, d->message ? d->message : "", 0, 0);
    } else {
      report(p, d, b->sts[j], b->msgs[j] ? b->msgs[j] : proto_strerror(b->sts[j]),
             b->sts[j] == PROTO_OK ? b->nums[j] : 0, indexed);
      free(b->msgs[j]);
      j++;
    }
  }
  finish_batch(p, b->docs, n);
}

static void *writer_main(void *arg) {
  srv_pipe *p = arg;
  writer_batch b;
  memset(&b, 0, sizeof b);
  for (;;) {
    int oom;
    size_t n = writer_take(p, &b, &oom);
    if (oom && n == 0) {
      /* no room even for one document: fail the front one */
      pthread_mutex_lock(&p->mu);
      pdoc *d = pq_pop(&p->out);
      pthread_mutex_unlock(&p->mu);
      report(p, d, PROTO_ENOMEM, "out of memory", 0, 0);
      finish_batch(p, &d, 1);
      continue;
    }
    if (n == 0) break;
    size_t ng = writer_recheck(p->e, &b, n);
    writer_ack(p, &b, n, writer_commit(p, &b, ng));
    if (p->save_interval > 0 && proto_now() - p->last_save >= p->save_interval) {
      if (srv_engine_save(p->e) == PROTO_OK) p->last_save = proto_now();
    }
  }
  writer_batch_free(&b);
  return NULL;
}

/* Pipeline lifetime ------------------------------------------------------------- */

proto_status srv__pipe_start(srv_engine *e) {
  srv_pipe *p = calloc(1, sizeof *p);
  if (!p) return srv__fail(PROTO_ENOMEM, "out of memory");
  p->e = e;
  p->batch = e->opt.embed_batch > 0 ? (size_t)e->opt.embed_batch : 32;
  p->commit = e->opt.commit_chunks > 0 ? (size_t)e->opt.commit_chunks : 1024;
  p->capacity = e->opt.queue_chunks > 0 ? (size_t)e->opt.queue_chunks : 4096;
  p->save_interval = e->opt.save_interval_s == 0 ? 300.0 : e->opt.save_interval_s;
  p->last_save = proto_now();
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv_in, NULL);
  pthread_cond_init(&p->cv_out, NULL);
  pthread_cond_init(&p->cv_space, NULL);
  e->pipe = p;
  if (pthread_create(&p->embed_thread, NULL, embed_main, p) != 0)
    return srv__fail(PROTO_EINTERNAL, "cannot start the embedding thread");
  p->started_embed = 1;
  if (pthread_create(&p->writer_thread, NULL, writer_main, p) != 0)
    return srv__fail(PROTO_EINTERNAL, "cannot start the writer thread");
  p->started_writer = 1;
  return PROTO_OK;
}

void srv__pipe_stop(srv_engine *e) {
  srv_pipe *p = e ? e->pipe : NULL;
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  if (!p->started_embed) p->embed_done = 1;
  pthread_cond_broadcast(&p->cv_in);
  pthread_cond_broadcast(&p->cv_out);
  pthread_cond_broadcast(&p->cv_space);
  pthread_mutex_unlock(&p->mu);
  if (p->started_embed) pthread_join(p->embed_thread, NULL);
  if (p->started_writer) pthread_join(p->writer_thread, NULL);
  /* with a writer that never started, drop what was queued */
  pdoc *d;
  while ((d = pq_pop(&p->in)) != NULL) pdoc_free(d);
  while ((d = pq_pop(&p->out)) != NULL) pdoc_free(d);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv_in);
  pthread_cond_destroy(&p->cv_out);
  pthread_cond_destroy(&p->cv_space);
  free(p);
  e->pipe = NULL;
}

/* Sessions ------------------------------------------------------------------------ */

proto_status srv_ingest_begin(srv_engine *e, const srv_ingest_callbacks *cb, srv_ingest **out) {
  if (!e || !out) return srv__fail(PROTO_EINVAL, "srv_ingest_begin: NULL argument");
  *out = NULL;
  if (e->opt.read_only || !e->pipe)
    return srv__fail(PROTO_EFORBIDDEN, "the database is open read-only");
  srv_ingest *in = calloc(1, sizeof *in);
  if (!in) return srv__fail(PROTO_ENOMEM, "out of memory");
  in->e = e;
  if (cb) in->cb = *cb;
  pthread_mutex_init(&in->mu, NULL);
  pthread_cond_init(&in->cv, NULL);
  in->t0 = proto_now();
  *out = in;
  return PROTO_OK;
}

typedef struct patch_ctx {
  const char *patch;
  char msg[256]; /* why the merge failed */
} patch_ctx;

/* The stored metadata with the patch merged in; the content hash keeps its
 * text half (none stays none: the next upsert embeds and hashes). */
static proto_status merge_meta(void *ctx, const char *old_meta, size_t old_len,
                               const unsigned char *old_hash, char **meta,
                               unsigned char new_hash[STORE_HASH_BYTES], int *has_hash) {
  patch_ctx *c = ctx;
  char *old = malloc(old_len + 1);
  if (!old) return PROTO_ENOMEM;
  memcpy(old, old_meta, old_len);
  old[old_len] = 0;
  proto_status s = proto_metadata_merge(old, c->patch, meta, c->msg, sizeof c->msg);
  free(old);
  if (s != PROTO_OK) return s;
  if ((*has_hash = old_hash != NULL)) {
    memcpy(new_hash, old_hash, 32);
    meta_hash(old_hash, *meta, new_hash + 32);
  }
  return PROTO_OK;
}

/* A metadata update that failed: counted when the disk or map was full,
 * and named. */
static proto_status update_failed(srv_engine *e, proto_status s, const patch_ctx *c) {
  if (s == PROTO_ENOSPACE) atomic_fetch_add(&e->n_nospace, 1);
  return srv__fail(s, "updating metadata: %s", c->msg[0] ? c->msg : store_last_error());
}

proto_status srv_document_patch(srv_engine *e, const char *id, const char *patch_json, int *found,
                                srv_document *out) {
  *found = 0;
  proto_status s = srv_update_many(e, &id, 1, patch_json, found);
  if (s != PROTO_OK || !*found || !out) return s;
  s = srv_document_get(e, id, 0, out);
  if (s == PROTO_ENOTFOUND) *found = 0; /* deleted since */
  return s == PROTO_ENOTFOUND ? PROTO_OK : s;
}

proto_status srv_update_many(srv_engine *e, const char *const *ids, size_t n,
                             const char *patch_json, int *found) {
  if (!e || (n && (!ids || !found)) || !patch_json)
    return srv__fail(PROTO_EINVAL, "srv_update_many: NULL argument");
  if (e->opt.read_only) return srv__fail(PROTO_EFORBIDDEN, "the database is open read-only");
  patch_ctx c = {.patch = patch_json};
  proto_status s = store_update_meta_many(e->st, ids, n, merge_meta, &c, found);
  return s == PROTO_OK ? PROTO_OK : update_failed(e, s, &c);
}

proto_status srv_update_where(srv_engine *e, const char *filter_json, const char *patch_json,
                              size_t *updated) {
  if (updated) *updated = 0;
  if (!e || !filter_json || !patch_json)
    return srv__fail(PROTO_EINVAL, "srv_update_where: NULL argument");
  if (e->opt.read_only) return srv__fail(PROTO_EFORBIDDEN, "the database is open read-only");
  proto_filter *filter = NULL;
  proto_status s = srv__where_filter(filter_json, &filter);
  if (s != PROTO_OK) return s;
  patch_ctx c = {.patch = patch_json};
  size_t n = 0;
  s = store_update_meta_where(e->st, srv__passes_filter, filter, merge_meta, &c, &n);
  proto_filter_free(filter);
  if (s != PROTO_OK) return update_failed(e, s, &c);
  if (updated) *updated = n;
  return PROTO_OK;
}

/* Validates a metadata JSON object. */
static proto_status check_meta(const char *meta) {
  json_error_t jerr;
  json_t *v = json_loads(meta, JSON_REJECT_DUPLICATES, &jerr);
  if (!v) return srv__fail(PROTO_EJSON, "metadata: %s", jerr.text);
  int obj = json_is_object(v);
  json_decref(v);
  if (!obj) return srv__fail(PROTO_ETYPE, "metadata: must be a JSON object");
  return PROTO_OK;
}

/* Tokenises text into d's tokens, chunks, chunk texts and room for vectors. */
static proto_status tokenize_doc(srv_engine *e, pdoc *d, const char *text, size_t text_len) {
  proto_status s;
  if (text_len) {
    s = tok_encode(e->ctok, text, text_len, &d->tokens, &d->n_tokens);
    if (s != PROTO_OK) return srv__fail(s, "text: %s", tok_last_error());
  }
  d->n_chunks = (uint32_t)((d->n_tokens + PROTO_CHUNK_TOKENS - 1) / PROTO_CHUNK_TOKENS);
  if (!d->n_chunks) return PROTO_OK;
  d->texts = calloc(d->n_chunks, sizeof *d->texts);
  d->text_lens = calloc(d->n_chunks, sizeof *d->text_lens);
  d->vecs = malloc((size_t)d->n_chunks * e->dim * sizeof *d->vecs);
  if (!d->texts || !d->text_lens || !d->vecs) return srv__fail(PROTO_ENOMEM, "out of memory");
  int need_utf8 = !e->embed_by_ids && tok_get_kind(bert_tokenizer(e->enc)) == TOK_WORDPIECE;
  if (need_utf8) {
    d->etexts = calloc(d->n_chunks, sizeof *d->etexts);
    d->etext_lens = calloc(d->n_chunks, sizeof *d->etext_lens);
    if (!d->etexts || !d->etext_lens) return srv__fail(PROTO_ENOMEM, "out of memory");
  }
  for (uint32_t c = 0; c < d->n_chunks; c++) {
    size_t off = (size_t)c * PROTO_CHUNK_TOKENS;
    size_t len = d->n_tokens - off < PROTO_CHUNK_TOKENS ? d->n_tokens - off : PROTO_CHUNK_TOKENS;
    s = tok_decode(e->ctok, d->tokens + off, len, &d->texts[c], &d->text_lens[c]);
    if (s != PROTO_OK) return srv__fail(s, "decoding chunk %u: %s", c, tok_last_error());
    if (need_utf8 && !(d->etexts[c] = utf8_dup(d->texts[c], d->text_lens[c], &d->etext_lens[c])))
      return srv__fail(PROTO_ENOMEM, "out of memory");
  }
  size_t koff, klen;
  if (!e->embed_by_ids && key_window(d, d->n_chunks - 1, &koff, &klen)) {
    char *raw = NULL;
    size_t raw_len = 0;
    s = tok_decode(e->ctok, d->tokens + koff, klen, &raw, &raw_len);
    if (s != PROTO_OK) return srv__fail(s, "decoding the last chunk's key: %s", tok_last_error());
    if (need_utf8) { /* as etexts */
      d->tail_key = utf8_dup(raw, raw_len, &d->tail_key_len);
      free(raw);
      if (!d->tail_key) return srv__fail(PROTO_ENOMEM, "out of memory");
    } else {
      d->tail_key = raw;
      d->tail_key_len = raw_len;
    }
  }
  return PROTO_OK;
}

/* The checks of a document before it is tokenised. */
static proto_status check_doc(const srv_doc *doc) {
  if (!doc->id || !*doc->id) return srv__fail(PROTO_EMISSING, "id: must not be empty");
  size_t idlen = strlen(doc->id);
  if (idlen > PROTO_MAX_ID_BYTES)
    return srv__fail(PROTO_ERANGE, "id: longer than %d bytes", PROTO_MAX_ID_BYTES);
  if (!proto_utf8_valid(doc->id, idlen)) return srv__fail(PROTO_EUTF8, "id: invalid UTF-8");
  if (!doc->text && doc->text_len) return srv__fail(PROTO_EINVAL, "text: NULL");
  return doc->metadata_json ? check_meta(doc->metadata_json) : PROTO_OK;
}

/* Fills d->vecs from the session's take_vectors: the document's chunks, or
 * for an unchanged one (not tokenised) its stored count, n. */
static proto_status take_given(srv_ingest *in, pdoc *d, uint32_t n) {
  size_t dim = in->e->dim;
  if (d->unchanged && n && !(d->vecs = malloc((size_t)n * dim * sizeof *d->vecs)))
    return srv__fail(PROTO_ENOMEM, "out of memory");
  proto_status s = in->cb.take_vectors(in->cb.vectors_ctx, n, d->vecs);
  if (s != PROTO_OK) return s;
  d->given = 1;
  d->n_given = n;
  if (!d->unchanged) d->embedded = d->n_chunks;
  return PROTO_OK;
}

/* Checks a document and makes its pdoc: tokenised and chunked, or, when the
 * store holds the same content hash (and the session does not force), only
 * a copy of the text, marked unchanged; with the session's vectors when it
 * has them. */
static proto_status prepare(srv_ingest *in, const srv_doc *doc, pdoc **out) {
  srv_engine *e = in->e;
  proto_status s;
  *out = NULL;
  if ((s = check_doc(doc)) != PROTO_OK) return s;

  pdoc *d = calloc(1, sizeof *d);
  if (!d) return srv__fail(PROTO_ENOMEM, "out of memory");
  d->id = strdup(doc->id);
  d->meta = doc->metadata_json ? strdup(doc->metadata_json) : NULL;
  d->bytes = doc->text_len;
  if (!d->id || (doc->metadata_json && !d->meta)) {
    s = srv__fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  srv__content_hash(e->hash_salt, doc->text, doc->text_len, doc->metadata_json, d->hash);
  uint64_t num;
  uint32_t nc = 0;
  if (!in->cb.force && (d->unchanged = stored_unchanged(e, doc->id, d->hash, &num, &nc))) {
    d->raw = malloc(doc->text_len ? doc->text_len : 1);
    if (!d->raw) {
      s = srv__fail(PROTO_ENOMEM, "out of memory");
      goto leave;
    }
    if (doc->text_len) memcpy(d->raw, doc->text, doc->text_len);
    d->raw_len = doc->text_len;
  } else if ((s = tokenize_doc(e, d, doc->text, doc->text_len)) != PROTO_OK) {
    goto leave;
  }
  if (in->cb.take_vectors && (s = take_given(in, d, d->unchanged ? nc : d->n_chunks)) != PROTO_OK)
    goto leave;
  *out = d;
  d = NULL;
  s = PROTO_OK;
leave:
  pdoc_free(d);
  return s;
}

proto_status srv_ingest_add(srv_ingest *in, const srv_doc *doc) {
  if (!in || !doc) return srv__fail(PROTO_EINVAL, "srv_ingest_add: NULL argument");
  srv_engine *e = in->e;
  srv_pipe *p = e->pipe;
  pdoc *d = NULL;
  proto_status s = prepare(in, doc, &d);
  if (s != PROTO_OK) return s;
  d->sess = in;
  d->queued = d->n_chunks;
  pthread_mutex_lock(&p->mu);
  while (p->queued_chunks > 0 && p->queued_chunks + d->n_chunks > p->capacity && !p->stop) {
    if (in->cb.nonblocking) {
      pthread_mutex_unlock(&p->mu);
      pdoc_free(d);
      return srv__fail(PROTO_EBUSY, "the ingest pipeline is full");
    }
    pthread_cond_wait(&p->cv_space, &p->mu);
  }
  if (p->stop) {
    pthread_mutex_unlock(&p->mu);
    pdoc_free(d);
    return srv__fail(PROTO_EUNAVAIL, "the engine is closing");
  }
  pthread_mutex_lock(&in->mu);
  d->seq = in->added++;
  pthread_mutex_unlock(&in->mu);
  p->queued_chunks += d->n_chunks;
  p->queued_docs++;
  atomic_store(&e->n_queue, p->queued_chunks);
  pq_push(&p->in, d);
  pthread_cond_signal(&p->cv_in);
  pthread_mutex_unlock(&p->mu);
  return PROTO_OK;
}

proto_status srv_ingest_flush(srv_ingest *in) {
  if (!in) return PROTO_OK;
  pthread_mutex_lock(&in->mu);
  while (in->acked < in->added) pthread_cond_wait(&in->cv, &in->mu);
  proto_status s = in->first_err;
  pthread_mutex_unlock(&in->mu);
  if (s != PROTO_OK)
    srv__fail(s, "%llu document(s) failed in this session", (unsigned long long)in->prog.errors);
  return s;
}

proto_status srv_ingest_end(srv_ingest *in, srv_ingest_progress *progress) {
  if (!in) return PROTO_OK;
  proto_status s = srv_ingest_flush(in);
  if (progress) {
    *progress = in->prog;
    progress->elapsed_s = proto_now() - in->t0;
  }
  pthread_mutex_destroy(&in->mu);
  pthread_cond_destroy(&in->cv);
  free(in);
  return s;
}

/* The encoder's input for chunk c of d (see srv_chunk_key) to fn. */
static proto_status emit_key(srv_engine *e, const pdoc *d, uint32_t c,
                             proto_status (*fn)(void *, const srv_chunk_key *), void *ctx) {
  size_t off, len;
  int tail = key_window(d, c, &off, &len);
  srv_chunk_key k = {.chunk = c, .text = d->texts[c], .text_len = d->text_lens[c]};
  int32_t *own = NULL;
  if (e->embed_by_ids) {
    k.ids = d->tokens + off;
    k.n_ids = len;
  } else { /* as bert_embed_texts tokenises it */
    size_t tl;
    const char *t = key_text(d, c, tail, &tl);
    proto_status s = tok_encode(bert_tokenizer(e->enc), t, tl, &own, &k.n_ids);
    if (s != PROTO_OK)
      return srv__fail(s, "chunk %u: the encoder's tokenizer: %s", (unsigned)c, tok_last_error());
    k.ids = own;
  }
  proto_status s = fn(ctx, &k);
  free(own);
  return s;
}

proto_status srv_doc_chunks(srv_engine *e, const srv_doc *doc,
                            proto_status (*fn)(void *ctx, const srv_chunk_key *key), void *ctx) {
  if (!e || !doc || !fn) return srv__fail(PROTO_EINVAL, "srv_doc_chunks: NULL argument");
  proto_status s = check_doc(doc);
  if (s != PROTO_OK) return s;
  pdoc *d = calloc(1, sizeof *d);
  if (!d) return srv__fail(PROTO_ENOMEM, "out of memory");
  s = tokenize_doc(e, d, doc->text, doc->text_len);
  for (uint32_t c = 0; s == PROTO_OK && c < d->n_chunks; c++) s = emit_key(e, d, c, fn, ctx);
  pdoc_free(d);
  return s;
}

/* Blocking batch upsert ----------------------------------------------------------- */

typedef struct upsert_ctx {
  srv_ack *acks;
  const srv_doc *docs;
  size_t *slot; /* session seq -> index in docs */
} upsert_ctx;

static void upsert_ack(void *ctx, const srv_ack *a) {
  upsert_ctx *u = ctx;
  if (!u->acks) return;
  size_t i = u->slot[a->seq];
  u->acks[i] = *a;
  u->acks[i].id = u->docs[i].id;
  u->acks[i].message = a->status == PROTO_OK ? "" : proto_strerror(a->status);
}

proto_status srv_upsert(srv_engine *e, const srv_doc *docs, size_t n, srv_ack *acks) {
  if (!e || (!docs && n)) return srv__fail(PROTO_EINVAL, "srv_upsert: NULL argument");
  upsert_ctx u = {.acks = acks, .docs = docs, .slot = malloc((n ? n : 1) * sizeof(size_t))};
  if (!u.slot) return srv__fail(PROTO_ENOMEM, "out of memory");
  srv_ingest_callbacks cb = {.on_ack = upsert_ack, .ctx = &u};
  srv_ingest *in = NULL;
  proto_status s = srv_ingest_begin(e, &cb, &in), first = PROTO_OK;
  char first_msg[512] = "";
  if (s != PROTO_OK) {
    free(u.slot);
    return s;
  }
  size_t seq = 0;
  for (size_t i = 0; i < n; i++) {
    u.slot[seq] = i;
    s = srv_ingest_add(in, &docs[i]);
    if (s == PROTO_OK) {
      seq++;
      continue;
    }
    if (acks) {
      memset(&acks[i], 0, sizeof acks[i]);
      acks[i].id = docs[i].id;
      acks[i].seq = i;
      acks[i].status = s;
      acks[i].message = proto_strerror(s);
    }
    if (first == PROTO_OK) {
      first = s;
      snprintf(first_msg, sizeof first_msg, "document %zu: %s", i, srv_last_error());
    }
  }
  s = srv_ingest_end(in, NULL);
  free(u.slot);
  if (first != PROTO_OK) return srv__fail(first, "%s", first_msg);
  return s;
}
