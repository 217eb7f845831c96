/* srv.h - the retrod engine: one object (srv_engine) that joins the LMDB
 * chunk store (storage/), the FAISS index (index/), the frozen encoder
 * (model/bert.h) and the RETRO decoder (model/retro.h) behind the operations
 * that the CLI (server/cli.c) and the HTTP daemon (server/http*.c) expose:
 * ingest (upsert), delete, get, search, embed, info, generate, and the
 * neighbour dump used by the trainer. It knows nothing of HTTP or of the
 * terminal; it never prints (except where a function says so).
 *
 * Errors: every function that can fail returns a proto_status and writes
 * results through out-parameters; srv_last_error() then holds a one-line
 * detail for the calling thread ("encoder mismatch: database was built
 * with X, this encoder is Y").
 *
 * Thread-safety: an open engine may be used from any number of threads at
 * once (search, embed, get, ingest sessions, deletes, generations), except
 * srv_engine_close, which must be the last call. Callbacks are documented
 * with the thread they run on.
 *
 * Model directories (encoder_dir / decoder_dir left NULL): in this order
 *   1. the path recorded in the database's meta by an earlier open
 *      ("encoder_path" / "decoder_path"), when that directory still exists;
 *   2. $RETRO_ENCODER / $RETRO_DECODER;
 *   3. $RETRO_MODELS/encoder and $RETRO_MODELS/decoder;
 *   4. the built-in default: <source root>/model/default/{encoder,decoder}
 *      (compiled in from meson.project_source_root()), then
 *      <prefix>/share/retrod/models/{encoder,decoder} when installed.
 * The encoder is required. The decoder is optional: without one, chunks are
 * tokenised with the encoder's tokenizer and generation answers
 * PROTO_EUNAVAIL. decoder_dir = "none" forces no decoder.
 *
 * The database records in its meta (checked at every open; a mismatch fails
 * with PROTO_EMISMATCH and a message naming both sides):
 *   "encoder"          bert_fingerprint() of the encoder,
 *   "dim"              the embedding dimension,
 *   "chunk_tokenizer"  tok_fingerprint() of the tokenizer that made the chunks,
 *   "chunk_len"        64 (PROTO_CHUNK_TOKENS),
 *   "encoder_path", "decoder_path"  the directories used (informational,
 *                      and the defaults for later opens).
 */
#ifndef RETRO_SRV_H
#define RETRO_SRV_H

#include "proto.h"
#include "store.h"
#include "idx.h"
#include "lex.h"
#include "bert.h"
#include "retro.h"
#include "tok.h"

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

/* ======================================================================== */
/* Engine                                                                    */

typedef struct srv_engine srv_engine;

/* How a search finds its chunks. Dense: the FAISS index over embeddings;
 * lexical: BM25 over the chunk texts (index/lex.h); hybrid: both candidate
 * lists fused (see engine.c, "Fusion"). */
typedef enum srv_search_mode {
  SRV_MODE_DEFAULT = 0, /* the engine's default (srv_engine_options) */
  SRV_MODE_DENSE = 1,
  SRV_MODE_LEXICAL = 2,
  SRV_MODE_HYBRID = 3,
} srv_search_mode;
/* "dense", "lexical", "hybrid"; NULL for another value. */
const char *srv_mode_name(srv_search_mode m);
/* The mode of that name; SRV_MODE_DEFAULT for an unknown name. */
srv_search_mode srv_mode_parse(const char *name);

typedef struct srv_engine_options {
  const char *data_dir;      /* required; created when absent (unless read_only) */
  const char *encoder_dir;   /* NULL = default (see the file comment) */
  const char *decoder_dir;   /* NULL = default; "none" = no decoder */
  int load_decoder;          /* 1 = load the decoder weights (generation);
                                0 = only its tokenizer (indexing, search) */
  const char *index_factory; /* NULL = the saved index's, else idx's default */
  int threads;               /* encoder/decoder threads; 0 = number of CPUs */
  int read_only;             /* 1 = ingest/delete fail with PROTO_EFORBIDDEN and
                                close does not save the index */
  size_t map_bytes;          /* initial LMDB map size; 0 = store default */
  size_t max_map_bytes;      /* the LMDB map never grows past this; 0 = no
                                limit (writes beyond: PROTO_ENOSPACE) */
  /* ingest pipeline */
  int embed_batch;        /* chunks per encoder call; 0 = 32 */
  int commit_chunks;      /* most chunks per LMDB write transaction; 0 = 1024 */
  int queue_chunks;       /* chunks that may wait in the pipeline before
                                srv_ingest_add blocks; 0 = 4096 */
  double save_interval_s; /* save the index at most this often while
                                ingesting; 0 = 300 s; < 0 = only at close */
  /* generation */
  int gen_slots;   /* concurrent generations (decoder states); 0 = 2 */
  int gen_queue;   /* requests that may wait for a slot; beyond it
                                srv_generate fails with PROTO_EBUSY; 0 = 8,
                                -1 = none may wait */
  int gen_max_seq; /* tokens per sequence; 0 = the model's max_seq */
  /* retrieval */
  srv_search_mode search_mode;    /* searches by text; DEFAULT = hybrid */
  srv_search_mode retrieval_mode; /* generation and eval neighbours; DEFAULT = lexical */
  float hybrid_alpha;             /* weight of the dense list; 0 = the built-in default */
  const char *reranker_dir;       /* cross-encoder for searches that ask to rerank:
                                     NULL = the default one when installed (none is
                                     fine), "none" = no reranker */
} srv_engine_options;

/* Opens (creating when absent) the database in o->data_dir with the models,
 * checks/records the meta above, opens the index (replaying the store past
 * its watermark or rebuilding it), and starts the ingest pipeline threads.
 * Errors: PROTO_EINVAL (no data dir), PROTO_EMISMATCH (database built with
 * another encoder/tokenizer), PROTO_EMODEL (a model failed to load; the
 * message names the file), PROTO_ESTORE, PROTO_EINDEX, PROTO_EIO. */
proto_status srv_engine_open(const srv_engine_options *o, srv_engine **out);
/* Stops the pipeline (pending documents are committed first), waits for
 * running generations, saves the index (unless read-only), closes all.
 * Accepts NULL. Must be the last call on e. Returns PROTO_OK, or the status
 * of a failed index save (srv_last_error says why; everything is closed all
 * the same, and the next open brings the index up to date from the store). */
proto_status srv_engine_close(srv_engine *e);
/* Saves the index now (atomic; records the watermark). Thread-safe. */
proto_status srv_engine_save(srv_engine *e);
/* Detail of this thread's last failure. Never NULL. */
const char *srv_last_error(void);

/* The model directory the engine would use for role "encoder" or "decoder"
 * when the caller names none and there is no database to ask (steps 2-4 of
 * the file comment). malloc'd; NULL when none exists. */
char *srv_default_model_dir(const char *role);

/* Borrowed handles (live as long as e); for tools and tests. The decoder is
 * NULL when none is loaded. */
store *srv_engine_store(srv_engine *e);
idx *srv_engine_index(srv_engine *e);
bert *srv_engine_encoder(srv_engine *e);
retro *srv_engine_decoder(srv_engine *e);
const tok *srv_engine_chunk_tokenizer(srv_engine *e);
uint32_t srv_engine_dim(const srv_engine *e);

typedef struct srv_info {
  char encoder[256]; /* bert_fingerprint */
  char encoder_path[1024];
  uint32_t dim;
  char decoder_path[1024];                     /* "" when none */
  char reranker[128];                          /* rerank_name, "" when none */
  char reranker_path[1024];                    /* "" when none */
  int decoder_loaded;                          /* 1 when generation is available */
  retro_config decoder;                        /* valid when decoder_loaded */
  char chunk_tokenizer[128];                   /* fingerprint of the chunk tokenizer */
  int chunk_tokenizer_kind;                    /* tok_kind */
  int embed_by_ids;                            /* 1: chunks are embedded from their token ids
                                (encoder and decoder share a tokenizer) */
  idx_info index;                              /* factory, ntotal, trained, pending, watermark */
  int has_lexical;                             /* 0: a read-only engine without a lexical index */
  lex_info lexical;                            /* chunks, watermark, bytes */
  int lexical_private;                         /* 1: a read-only engine's private copy (the
                                database's own file was missing or behind) */
  srv_search_mode search_mode, retrieval_mode; /* the defaults in force */
  store_stats store;                           /* live docs/chunks, map size, dim */
  /* counters since open */
  uint64_t ingested_docs;          /* documents committed */
  uint64_t ingested_chunks;        /* chunks committed */
  uint64_t ingest_errors;          /* documents that failed */
  uint64_t ingest_unchanged;       /* documents skipped: same content hash */
  uint64_t ingest_embedded_chunks; /* chunks the ingest pipeline ran through the encoder */
  uint64_t storage_full;           /* documents and deletes refused: disk or map full */
  uint64_t ingest_queue;           /* chunks waiting in the pipeline now */
  uint64_t deleted_docs;
  uint64_t searches;    /* queries answered */
  uint64_t generations; /* generations finished */
  uint64_t generated_tokens;
  uint64_t query_embed_calls;  /* encoder calls for search texts and embeddings */
  uint64_t query_embed_texts;  /* texts in them (> calls: concurrent requests shared calls) */
  uint64_t rerank_pairs;       /* (query, passage) pairs the reranker scored */
  uint64_t exact_phrases;      /* hybrid searches whose text a chunk held word for word */
  double lexical_sync_seconds; /* wall time bringing the lexical index up to date (ingest) */
  int gen_slots;               /* configured slots */
  int gen_busy;                /* slots in use now */
  int gen_waiting;             /* requests waiting for a slot now */
  int read_only;
} srv_info;
/* Fills *out. Cheap enough for every /metrics scrape (a few LMDB reads). */
proto_status srv_info_get(srv_engine *e, srv_info *out);

/* ======================================================================== */
/* Ingest: documents -> decoder tokens -> 64-token chunks -> embeddings ->
 * one LMDB transaction per batch -> FAISS add.
 *
 * Pipeline: srv_ingest_add tokenises and chunks on the calling thread and
 * queues the document; an embedding thread batches chunks across documents
 * through the encoder (which spreads a batch over its own threads); one
 * writer thread commits whole documents in batches (store_upsert: a
 * document is all-or-nothing, several documents per transaction) and then
 * brings the index up to date (idx_sync). The pipeline belongs to the
 * engine and is shared by all sessions; each session gets its own
 * acknowledgements, in the order its documents were added. */

typedef struct srv_doc {
  const char *id;   /* external id: 1..PROTO_MAX_ID_BYTES bytes, NUL-terminated */
  const char *text; /* text_len bytes (BPE takes any bytes; WordPiece
                                needs UTF-8) */
  size_t text_len;
  const char *metadata_json; /* a JSON object as text, or NULL for {} */
} srv_doc;

typedef struct srv_ack {
  const char *id;      /* the external id (valid during the callback) */
  size_t seq;          /* 0-based order of this document in its session */
  proto_status status; /* PROTO_OK: committed (durable) */
  const char *message; /* detail when status != OK, else "" */
  uint64_t doc_num;    /* internal doc id (when OK) */
  uint32_t n_chunks;   /* chunks stored */
  int unchanged;       /* 1: the stored document had the same content
                                hash (text, metadata, models): nothing was
                                embedded or written; doc_num, n_chunks are
                                the stored document's */
  int indexed;         /* 1: the index already holds its chunks (so a
                                search finds them); 0: after the next idx_sync
                                (e.g. an IVF index still waiting for training) */
} srv_ack;

typedef struct srv_ingest_progress {
  uint64_t docs, chunks; /* committed by this session so far */
  uint64_t bytes;        /* text bytes of those documents and of the
                                unchanged ones */
  uint64_t errors;       /* documents that failed */
  uint64_t unchanged;    /* documents skipped as unchanged (not in docs) */
  double elapsed_s;      /* since srv_ingest_begin */
} srv_ingest_progress;

typedef struct srv_ingest_callbacks {
  /* One call per document, after its transaction committed (or failed),
   * on the engine's writer thread, in the order of srv_ingest_add. Must not
   * call back into this session. May be NULL. */
  void (*on_ack)(void *ctx, const srv_ack *ack);
  /* After each commit that touched this session (writer thread). May be NULL. */
  void (*on_progress)(void *ctx, const srv_ingest_progress *p);
  void *ctx;
  int nonblocking; /* 1: srv_ingest_add returns PROTO_EBUSY instead
                                of blocking while the pipeline is full */
  int force;       /* 1: embed and store every document, even one
                                whose content hash is unchanged */
  /* Bulk vectors (`retro index --vectors`): when set, a document's chunk
   * vectors come from here instead of the encoder. Called by srv_ingest_add
   * on its caller's thread once per document that passed validation, in
   * order, also for an unchanged one (its stored chunk count), with the
   * document's chunk count: fills n_chunks x dim floats, the vectors of
   * srv_doc_chunks' chunks in that order. A failure fails the add with its
   * status. May be NULL. */
  proto_status (*take_vectors)(void *vectors_ctx, uint32_t n_chunks, float *out);
  void *vectors_ctx;
} srv_ingest_callbacks;

typedef struct srv_ingest srv_ingest;

/* Starts a session. cb may be NULL. PROTO_EFORBIDDEN when read-only. */
proto_status srv_ingest_begin(srv_engine *e, const srv_ingest_callbacks *cb, srv_ingest **out);
/* Validates doc (id length, metadata is a JSON object, UTF-8 when the
 * tokenizer needs it), tokenises and chunks it on this thread, copies what
 * it needs and queues it; blocks while the pipeline is full (back-pressure)
 * unless the session is nonblocking. A document that fails validation is
 * NOT queued and gets no ack: the status is returned here (PROTO_EINVAL,
 * PROTO_EUTF8, PROTO_EJSON, PROTO_ERANGE ...). Not for concurrent use on one
 * session. */
proto_status srv_ingest_add(srv_ingest *in, const srv_doc *doc);
/* Waits until every document added so far is acknowledged and indexed.
 * Returns PROTO_OK, or the first error an ack carried in this session. */
proto_status srv_ingest_flush(srv_ingest *in);
/* Flushes, fills *progress (may be NULL) and frees the session; accepts NULL
 * (returns PROTO_OK). Returns what srv_ingest_flush returns. */
proto_status srv_ingest_end(srv_ingest *in, srv_ingest_progress *progress);

/* One chunk as the ingest pipeline embeds it. */
typedef struct srv_chunk_key {
  uint32_t chunk;     /* ordinal in its document */
  const int32_t *ids; /* the encoder's input: token ids of the encoder's
                         tokenizer, without [CLS]/[SEP] (<s>, </s>); the
                         chunk's own 64 tokens, or for a short last chunk
                         the document's last 64 (ingest.c, "Keys") */
  size_t n_ids;
  const char *text; /* the chunk's own text as stored (may split a UTF-8
                       sequence at a BPE token boundary) */
  size_t text_len;
} srv_chunk_key;

/* Validates and chunks doc as srv_ingest_add does (the same checks, chunk
 * tokenizer and keys) and calls fn once per chunk in order; stores nothing.
 * Returns the validation failure, or fn's first failure. For tools that
 * embed chunks elsewhere (`retro chunks`). */
proto_status srv_doc_chunks(srv_engine *e, const srv_doc *doc,
                            proto_status (*fn)(void *ctx, const srv_chunk_key *key), void *ctx);

/* Convenience: upserts n documents through one session and waits. acks
 * (optional, n entries) receive each document's status, doc_num and
 * n_chunks (acks[i].id points into docs[i], acks[i].message is a static
 * string). Returns the first failure (validation or commit) or PROTO_OK.
 * Durable when it returns; the index holds the chunks unless an IVF index
 * is still waiting for training. */
proto_status srv_upsert(srv_engine *e, const srv_doc *docs, size_t n, srv_ack *acks);

/* Deletes a document by external id; *found = 0 when absent (still OK).
 * Its chunks leave the index before this returns. */
proto_status srv_delete(srv_engine *e, const char *id, int *found);
/* Deletes n documents in one durable transaction (all or none) and brings
 * the indexes up to date once; found[i] says whether ids[i] existed. */
proto_status srv_delete_many(srv_engine *e, const char *const *ids, size_t n, int *found);
/* Deletes, in one durable transaction, every document whose metadata
 * passes filter_json (a search's metadata filter, at least one key), and
 * brings the indexes up to date; *deleted counts them. */
proto_status srv_delete_where(srv_engine *e, const char *filter_json, size_t *deleted);

/* ======================================================================== */
/* Reading                                                                   */

typedef struct srv_document {
  uint64_t doc_num;
  char *id;             /* external id */
  char *metadata_json;  /* JSON object text */
  uint64_t first_chunk; /* chunk ids first_chunk .. first_chunk+n_chunks-1 */
  uint32_t n_chunks;
  uint64_t n_tokens; /* decoder tokens in all chunks */
  char *text;        /* with_text: the chunks' texts joined (equals
                                the original bytes for a BPE tokenizer);
                                else NULL */
  size_t text_len;
} srv_document;
/* PROTO_ENOTFOUND when absent. Free with srv_document_free. */
proto_status srv_document_get(srv_engine *e, const char *id, int with_text, srv_document *out);
/* n documents read in one transaction: found[i] says whether ids[i] named
 * one, and out[i] is it (zeroed when not; free each with
 * srv_document_free). */
proto_status srv_documents_get(srv_engine *e, const char *const *ids, size_t n, int with_text,
                               srv_document *out, int *found);
/* Merges patch_json (a JSON object's text) into document id's metadata as
 * JSON Merge Patch (RFC 7396) says, in one transaction: the text, chunks
 * and indexes stay as they are, and the content hash follows the new
 * metadata. *found = 0 (nothing written) when there is no such document;
 * otherwise out (optional) gets the document as stored now, without text. */
proto_status srv_document_patch(srv_engine *e, const char *id, const char *patch_json, int *found,
                                srv_document *out);
/* The same merge for n documents in one transaction, all or none: found[i]
 * says whether ids[i] named one. */
proto_status srv_update_many(srv_engine *e, const char *const *ids, size_t n,
                             const char *patch_json, int *found);
/* The same, in one transaction, for every document whose metadata passes
 * filter_json (a search's filter, at least one key); *updated = how many. */
proto_status srv_update_where(srv_engine *e, const char *filter_json, const char *patch_json,
                              size_t *updated);
void srv_document_free(srv_document *d); /* frees members; accepts zeroed */
/* A page of documents in doc_num order: at most max (>= 1) with doc_num >
 * after (free each with srv_document_free). filter_json: NULL, or a
 * search's metadata filter, and the page holds only documents that pass it.
 * with_text: each with its text and n_tokens (else without), read with its
 * metadata in one transaction per document; the page then ends after the
 * document that takes its texts to 4 MiB. *next_after: where the next page
 * starts, 0 when no documents follow. A filtered page stops looking after
 * 10,000 documents and may then hold fewer than max (even none) with
 * *next_after still set. */
proto_status srv_documents_list(srv_engine *e, uint64_t after, size_t max, const char *filter_json,
                                int with_text, srv_document *out, size_t *n, uint64_t *next_after);

typedef struct srv_chunk {
  store_chunk c;       /* chunk id, doc num, ordinal, N and F tokens+text */
  char *doc_id;        /* external id of its document */
  char *metadata_json; /* its document's metadata */
} srv_chunk;
/* PROTO_ENOTFOUND when the chunk does not exist (or was deleted). */
proto_status srv_chunk_get(srv_engine *e, uint64_t chunk_id, srv_chunk *out);
void srv_chunk_free(srv_chunk *c); /* frees members; accepts zeroed */

/* ======================================================================== */
/* Search and embeddings                                                     */

typedef struct srv_search_request {
  const char *const *texts; /* n_texts queries (embedded with the encoder
                                unless vectors are given too) */
  const size_t *text_lens;  /* NULL = NUL-terminated */
  size_t n_texts;
  const float *vectors; /* n_vectors x dim query vectors (used as
                                given: normalise them for an IP index). With
                                texts too (as many), the vectors are the
                                dense queries and the texts the lexical ones */
  size_t n_vectors;
  uint64_t like_chunk;             /* > 0: search by this chunk's stored
                                      vector (no texts or vectors given), and
                                      leave the chunk itself out of the hits */
  srv_search_mode mode;            /* searches by vector alone are dense */
  float alpha;                     /* hybrid: weight of the dense list in (0, 1];
                                0 = the engine's default */
  int k;                           /* 1..PROTO_MAX_K */
  const char *const *exclude_docs; /* external ids whose chunks are skipped */
  size_t n_exclude;
  const char *const *include_docs; /* n_include > 0: only these documents'
                                      chunks (unknown ids name none) */
  size_t n_include;
  int nprobe;              /* 0 = index default */
  int ef_search;           /* 0 = index default */
  int with_text;           /* 1: fill text/next_text (and tokens) */
  int with_vectors;        /* 1: fill each hit's stored vector */
  const char *filter_json; /* NULL, or a metadata filter (api/filter.c):
                                only chunks of documents whose metadata
                                passes it */
  int group_size;          /* > 0: group by document: k documents, ranked by
                                their best chunk, each with its best
                                group_size chunks (hits[i].group) */
  int expand;              /* > 0: each hit's context holds the chunks from
                                `expand` before to `expand` after it, windows
                                of one document that overlap or touch merged */
  int rerank;              /* > 0: the mode's best `rerank` chunks (k to
                                SRV_RERANK_MAX) are ordered by the reranker's
                                relevance to the text, and the best k kept
                                (searches by text without group_size, on an
                                engine with a reranker) */
} srv_search_request;

/* The most candidates one search reranks (each costs an encoder pass), and
 * how many a search that asks to rerank without a number reranks (at least
 * k): the hybrid fuses lists of 20 each, so its best 30 hold the tops of
 * both lists (docs/RETRIEVAL.md, "Reranking"). */
enum { SRV_RERANK_MAX = PROTO_MAX_RERANK, SRV_RERANK_DEFAULT = 30 };

/* The most chunk texts one search request may answer with (queries x hits x
 * the texts of a hit), about 65 MB of text: beyond, a 422 says what to ask
 * for instead of the server building a response of gigabytes. */
enum { SRV_SEARCH_MAX_TEXTS = 100000 };
/* The most vectors (with_vectors) one search request may answer with: at 256
 * dimensions about 3 KB of JSON each, 30 MB in all. */
enum { SRV_SEARCH_MAX_VECTORS = 10000 };

typedef struct srv_hit {
  float score;           /* dense: inner product (higher = nearer) or L2
                                distance; lexical: -bm25 (higher = better);
                                hybrid: the fused score (higher = better) */
  float dense_score;     /* hybrid and dense: the inner product */
  float lexical_score;   /* hybrid and lexical: -bm25, 0 when no word matched */
  int dense_rank;        /* 1-based rank in the dense candidate list; 0 = not in it */
  int lexical_rank;      /* likewise in the lexical list */
  float retrieval_score; /* reranked (retrieval_rank > 0): score is the
                                reranker's relevance in (0, 1), and this the
                                mode's score */
  int retrieval_rank;    /* reranked: 1-based rank before reranking; else 0 */
  int exact_phrase;      /* hybrid: one of the lexical list's first three,
                                holding the whole query word for word, put
                                first (score + 1) */
  uint64_t chunk_id;
  uint64_t doc_num;
  char *doc_id;        /* external id */
  char *metadata_json; /* the document's metadata */
  uint32_t ordinal;    /* position of the chunk in its document */
  char *text;          /* N (with_text), NUL-terminated, else NULL */
  size_t text_len;
  char *next_text; /* F (with_text): "" at a document's end */
  size_t next_text_len;
  int32_t *tokens; /* N tokens (with_text), n_tokens */
  uint32_t n_tokens;
  int32_t *next_tokens; /* F tokens (with_text), n_next_tokens (0 at the end) */
  uint32_t n_next_tokens;
  size_t group;  /* group_size > 0: the 0-based rank of its document */
  char *context; /* expand > 0: the texts of chunks context_first
                                .. context_last of its document, joined */
  size_t context_len;
  uint32_t context_first, context_last; /* ordinals */
  float *vector;                        /* with_vectors: the stored embedding, dim
                                           floats (n_vector), else NULL */
  uint32_t n_vector;
} srv_hit;

typedef struct srv_hits {
  size_t n;        /* <= k (k x group_size when grouped): fewer when
                                the index has fewer live, non-excluded chunks */
  srv_hit *hits;   /* nearest first; grouped: by group, then score */
  size_t n_groups; /* group_size > 0: documents in hits */
} srv_hits;

typedef struct srv_search_result {
  srv_search_mode mode; /* the mode used */
  size_t nq;            /* n_texts or n_vectors */
  srv_hits *queries;    /* nq lists */
} srv_search_result;

/* Searches for each query. Deleted chunks are never returned: every hit is
 * read back from the store in the same call (a chunk deleted after the
 * index last synced is skipped and the search goes deeper). Exactly one of
 * texts / vectors must be given. Errors: PROTO_EINVAL (neither or both, k
 * out of range), PROTO_EDIM (never for texts), PROTO_EMODEL, PROTO_EINDEX.
 * Free with srv_search_result_free. */
proto_status srv_search(srv_engine *e, const srv_search_request *rq, srv_search_result *out);
void srv_search_result_free(srv_search_result *r); /* accepts zeroed */
/* What one exact scan of the index reads, in floats: (vectors + vectors
 * pending training) x dim. The HTTP server answers searches by vector on
 * its own threads up to a limit of this and hands larger ones to its
 * workers. 0 for NULL. Thread-safe, and never waits for the index's lock
 * (its size as of the index's last change). */
uint64_t srv_engine_index_floats(srv_engine *e);

/* Embeds n texts with the encoder into out (n x dim, L2-normalised), as
 * documents are embedded, or with as_query as a search by text embeds its
 * text (behind the encoder's query prefix, when it has one: bert.h).
 * n_tokens (optional) receives the encoder tokens of all inputs together
 * (with specials, after truncation) for "usage". lens NULL = NUL-terminated. */
proto_status srv_embed(srv_engine *e, const char *const *texts, const size_t *lens, size_t n,
                       int as_query, float *out, uint64_t *n_tokens);

/* The reranker's relevance of each of n passages to query, in (0, 1)
 * (the logistic of its score; higher = more relevant): out[i] for
 * passages[i]. lens NULL = NUL-terminated. Errors: PROTO_EUNAVAIL (no
 * reranker), PROTO_EINVAL, PROTO_ENOMEM. */
proto_status srv_rerank(srv_engine *e, const char *query, size_t query_len,
                        const char *const *passages, const size_t *lens, size_t n, float *out);

/* ======================================================================== */
/* Generation: the RETRO sampling loop. The prompt is tokenised with the
 * decoder tokenizer; neighbours are retrieved for every complete prompt
 * chunk, the prompt goes through the decoder in one pass, then tokens are
 * sampled one at a time; when a sampled token completes chunk u, chunk u's
 * 64 tokens are embedded and searched (k nearest, honouring exclude_docs),
 * their [N, F] tokens set as chunk u's neighbours, and only then is the
 * token fed (it is the first position that attends to them). */

typedef struct srv_gen_request {
  const char *prompt; /* prompt_len bytes */
  size_t prompt_len;
  int max_tokens;     /* tokens to generate, >= 1 (clamped to what the
                                sequence has room for: finish "length") */
  double temperature; /* 0 = greedy; >= 0 */
  double top_p;       /* (0, 1]; 1 = off */
  int top_k;          /* 0 = off */
  uint64_t seed;      /* used when has_seed; else a random seed */
  int has_seed;
  const char *const *stop; /* n_stop stop sequences (stop_lens bytes each;
                                NULL lens = NUL-terminated) */
  const size_t *stop_lens;
  size_t n_stop;
  int logprobs;                    /* -1 = none; 0..5: each token's logprob plus
                                that many top alternatives */
  int retrieval;                   /* 1 = RETRO [ON]; 0 = [OFF] (no neighbours) */
  int k;                           /* neighbours per chunk; 0 = model's n_neighbours */
  const char *const *exclude_docs; /* external ids never retrieved */
  size_t n_exclude;
  const char *const *include_docs; /* n_include > 0: neighbours only from these */
  size_t n_include;
  const char *filter_json;        /* metadata filter of the neighbours (as in
                                srv_search_request), or NULL */
  int nprobe, ef_search;          /* search parameters; 0 = index default */
  srv_search_mode retrieval_mode; /* how neighbours are found (the finished
                                chunk's embedding, its text, or both);
                                DEFAULT = the engine's retrieval_mode */
} srv_gen_request;

/* Fills the defaults: max_tokens 16, temperature 1, top_p 1, top_k 0,
 * logprobs -1, retrieval 1, everything else 0/NULL. */
void srv_gen_request_init(srv_gen_request *rq);

typedef struct srv_gen_neighbour {
  uint64_t chunk_id;
  uint64_t doc_num;
  char *doc_id; /* external id */
  float score;
  char *text; /* N */
  size_t text_len;
  char *next_text; /* F ("" at a document's end) */
  size_t next_text_len;
} srv_gen_neighbour;

typedef struct srv_gen_chunk {
  int chunk;     /* u: the chunk of the sequence (prompt +
                                completion) made of tokens 64u .. 64u+63 */
  int in_prompt; /* 1 when chunk u lies entirely in the prompt */
  size_t n;      /* neighbours used (0 when none were found) */
  srv_gen_neighbour *nb;
} srv_gen_chunk;

typedef struct srv_gen_token {
  int32_t id;
  char *piece; /* the token's bytes (may be part of a UTF-8
                                character; NUL-terminated), piece_len */
  size_t piece_len;
  size_t text_offset; /* byte offset of the token in result.text */
  float logprob;      /* log p(token) under the model (temperature 1) */
  int n_top;          /* alternatives below */
  int32_t top_ids[5];
  float top_logprobs[5];
  char *top_pieces[5]; /* NUL-terminated */
} srv_gen_token;

typedef struct srv_gen_callbacks {
  /* A piece of the completion: valid UTF-8 (ill-formed bytes replaced by
   * U+FFFD), never part of a stop sequence; the pieces joined equal
   * result.text. Runs on the generating (calling) thread. Return non-zero
   * to cancel. May be NULL. */
  int (*on_text)(void *ctx, const char *piece, size_t len);
  /* Neighbours retrieved for chunk u (prompt chunks before the first token,
   * then as generation completes chunks). Borrowed during the call. */
  void (*on_neighbours)(void *ctx, const srv_gen_chunk *chunk);
  /* Polled before each token and while waiting for a slot; non-zero cancels
   * (a disconnected client). May be NULL. */
  int (*should_cancel)(void *ctx);
  void *ctx;
} srv_gen_callbacks;

typedef struct srv_gen_result {
  char *text; /* the completion (valid UTF-8, stop sequence
                                excluded), NUL-terminated, text_len bytes */
  size_t text_len;
  const char *finish_reason; /* "stop" (stop sequence or end-of-text),
                                "length", "cancelled" (static strings) */
  int prompt_tokens;
  int completion_tokens;
  srv_gen_chunk *chunks; /* every chunk that got neighbours, ascending u */
  size_t n_chunks;
  srv_gen_token *tokens; /* logprobs >= 0: one per generated token */
  size_t n_tokens;
  uint64_t seed;        /* the seed used */
  double queue_s;       /* waiting for a slot */
  double first_token_s; /* from the start (after the queue) to the
                                first sampled token */
  double retrieval_s;   /* embedding + search + store reads */
  double total_s;       /* from the start, queue excluded */
} srv_gen_result;

/* Generates a completion. Returns PROTO_OK (finish_reason "stop"/"length"),
 * PROTO_ECANCELLED (result filled with what was generated, finish_reason
 * "cancelled"), PROTO_EBUSY (every slot busy and the wait queue full; no
 * result), PROTO_EUNAVAIL (no decoder loaded), PROTO_EINVAL/PROTO_ERANGE
 * (bad parameters, prompt longer than the sequence allows), PROTO_EMODEL.
 * Same seed and parameters on the same database -> same text. Blocks the
 * calling thread for the whole generation. Free with srv_gen_result_free
 * (also after an error: it accepts a zeroed or partly filled result). */
proto_status srv_generate(srv_engine *e, const srv_gen_request *rq, const srv_gen_callbacks *cb,
                          srv_gen_result *out);
void srv_gen_result_free(srv_gen_result *r);

/* ======================================================================== */
/* Trainer support                                                           */

typedef struct srv_neighbours_options {
  const char *out_dir;  /* created; receives the files below */
  int k;                /* neighbours per chunk; 0 = 2 */
  int include_same_doc; /* 0 (default): chunks of the query's own
                                document are never neighbours (RETRO's rule) */
  int nprobe, ef_search;
  /* Progress on the calling thread every few thousand chunks. May be NULL. */
  void (*on_progress)(void *ctx, uint64_t done, uint64_t total);
  void *ctx;
} srv_neighbours_options;

/* Dumps, for every live chunk (ascending chunk id), its k nearest neighbour
 * chunk ids, as NumPy .npy files (version 1.0, little-endian, C order) in
 * out_dir, row i describing the i-th live chunk:
 *   chunk_ids.npy   <u8 (n,)      the chunk's id
 *   doc_nums.npy    <u8 (n,)      its document's internal id
 *   ordinals.npy    <u4 (n,)      its position in the document
 *   tokens.npy      <i4 (n, 64)   its decoder tokens, -1 after n_tokens
 *   neighbours.npy  <i8 (n, k)    neighbour chunk ids, nearest first, -1 = none
 *   scores.npy      <f4 (n, k)    their scores (NaN for none)
 *   docs.jsonl      one line per document: {"doc_num","id","n_chunks"}
 * A neighbour's [N, F] is the row of its chunk id and the next row when
 * that has the same doc_num and ordinal + 1. */
proto_status srv_neighbours_dump(srv_engine *e, const srv_neighbours_options *o,
                                 uint64_t *n_chunks);

/* Evaluation: bits-per-byte of the decoder on documents, RETRO [ON] with
 * retrieval from this engine's database or [OFF] (engine_eval.c). The
 * database regime (training documents only = no leakage; held-out documents
 * indexed too = grounded) is the caller's choice of data directory. */
typedef struct srv_eval_options {
  int retrieval;                  /* 1 = [ON], 0 = [OFF] */
  int k;                          /* neighbours per chunk; 0 = model's n_neighbours */
  int window;                     /* tokens per forward window: a multiple of 64
                                from 128 to max_seq (else ERANGE); 0 = max_seq */
  int exclude_self;               /* 1: never retrieve from the evaluated document
                                (by its external id) */
  double leak_alpha;              /* leakage filter: keep chunks whose longest common
                                substring with every neighbour they attend to is
                                <= alpha of the chunk's bytes; 0 = 0.2 */
  srv_search_mode retrieval_mode; /* how neighbours are found; DEFAULT = the
                                engine's retrieval_mode */
  int compare_off;                /* with retrieval: score every window a second time
                                with retrieval off (off_bits, kept_off_bits), so
                                the filtered figure has its [OFF] peer on the
                                same tokens */
  /* Optional (HTTP prompt scoring): every token of the text in order; pos 0
   * first. scored 0 for a window's first token (context only), else bits =
   * -log2 p(token) and logits its position's row (vocab floats). */
  void (*on_token)(void *ctx, size_t pos, int32_t id, int scored, double bits, const float *logits,
                   int vocab);
  /* Optional: the neighbours set for chunk `chunk` (64 tokens) of the text. */
  void (*on_neighbours)(void *ctx, size_t chunk, const srv_hits *h);
  void *cb_ctx;
} srv_eval_options;

typedef struct srv_eval_result { /* accumulated over calls; zero it first */
  uint64_t docs, tokens, bytes;  /* scored tokens and their bytes */
  double bits;                   /* sum of -log2 p(token) */
  uint64_t chunks, chunks_kept;  /* chunks, and those passing the leakage filter */
  uint64_t kept_tokens, kept_bytes;
  double kept_bits;
  double off_bits, kept_off_bits; /* compare_off: the same tokens, retrieval off */
  double seconds;
} srv_eval_result;

/* Scores one document (text, len bytes; id for exclude_self) and adds to
 * *acc. bpb = acc->bits / acc->bytes (filtered: kept_bits / kept_bytes).
 * The first token of each window is context only. PROTO_EUNAVAIL without a
 * decoder. Not for concurrent use with generation on a small machine (it
 * takes its own decoder state, outside the generation slots). */
proto_status srv_eval_doc(srv_engine *e, const srv_eval_options *o, const char *id,
                          const char *text, size_t len, srv_eval_result *acc);

/* ======================================================================== */
/* Backup, restore, verify (backup.c)                                        */

/* Writes a backup of the store into out_dir (created; must not exist):
 * db/data.mdb, a compacted copy taken in one read transaction (every write
 * acknowledged before the call, none half), and manifest.json (format,
 * version, models' fingerprints, counts, index watermark, size and SHA-256
 * of each file; written last). The derived indexes are rebuilt from it at
 * restore. *manifest_json (optional, malloc'd) receives the manifest. */
proto_status srv_backup(store *st, const char *out_dir, char **manifest_json);
/* Restores a backup into data_dir (absent or empty): checks every file's
 * size and SHA-256 and that the copied database holds what the manifest says
 * (models, dim, counts), else refuses (PROTO_ENOTFOUND, PROTO_ECORRUPT,
 * PROTO_EMISMATCH, PROTO_EINVAL with a message naming the problem) and
 * leaves nothing behind. The indexes are built by the next engine open. */
proto_status srv_restore(const char *backup_dir, const char *data_dir);
/* Checks a database directory (every document's chunks and vectors, record
 * counts, index.faiss whole and holding exactly the chunks up to its
 * watermark, not behind the database's watermark, lexical.sqlite holding
 * the live chunks) or a backup (its files against the manifest); say gets
 * one line per problem and a summary. *problems = the count. */
typedef void (*srv_say_fn)(void *ctx, const char *line);
proto_status srv_verify(const char *dir, srv_say_fn say, void *ctx, uint64_t *problems);

/* ======================================================================== */
/* Export (export.c)                                                         */

typedef struct srv_export_stats {
  uint64_t docs, bytes; /* documents written, bytes of their texts */
  uint64_t with_nul;    /* of them, texts holding a NUL byte (JSON \u0000) */
  char first_with_nul[PROTO_MAX_ID_BYTES + 1];
} srv_export_stats;
/* Writes every document of the database in dir (those whose metadata
 * passes filter_json, when given) to out as one JSON line each, {"id",
 * "text", "metadata"}, in doc num order, from one read snapshot: the
 * format `retro index` reads from a .jsonl file. No models are loaded. */
proto_status srv_export(const char *dir, const char *filter_json, FILE *out,
                        srv_export_stats *stats);

/* ======================================================================== */
/* Entry points of the `retro` binary                                        */

/* The CLI: `retro COMMAND [ARGS]` (index, search, info, delete, embed,
 * generate, neighbours, serve, help). Returns the exit status: 0 ok,
 * 1 error, 2 usage. Implemented in cli.c; main() only calls it. */
int srv_cli_main(int argc, char **argv);

/* `retro serve ARGS`: the HTTP daemon (server/http.c, declared in
 * server/http.h). argv[0] is "serve". */
int srv_http_main(int argc, char **argv);

#endif
