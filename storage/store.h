/* store.h - the LMDB chunk store: the single source of truth of a retrod
 * database (DIR/db/). Documents are split by the caller into 64-token chunks;
 * each chunk keeps its decoder token ids, its text and its embedding. The
 * FAISS index (index/) is a cache derived from this store and follows it
 * through the vector scan, the tombstones and the index watermark.
 *
 * Sub-databases (see docs/DESIGN.md): meta, docs, doc_keys, chunks,
 * vectors, plus dead (tombstones: chunk ids deleted since the index last saved).
 * Chunk ids and doc ids start at 1 and are never reused.
 *
 * Durability: every write is one LMDB write transaction in the default sync
 * mode; a function that writes returns PROTO_OK only after the commit is on
 * disk. When the map fills, the transaction is aborted, the map grows and the
 * write is retried (up to max_map_bytes, then PROTO_ENOSPACE; a delete may go
 * past it by max_map_bytes / 16, at least 1 MiB, so that a full map can be
 * emptied).
 *
 * Thread-safety: all functions may be called from any number of threads
 * (LMDB serialises writers; readers never block each other). A map growth
 * waits until this process's open read transactions end (a running
 * store_vectors_scan delays it) and holds new ones back meanwhile; another
 * process growing the map is adopted transparently. When every reader slot is
 * taken, a reader waits (up to ~10 s, then PROTO_EBUSY). store_last_error()
 * is per thread.
 *
 * Errors: PROTO_EINVAL bad arguments, PROTO_ENOTFOUND absent, PROTO_EDIM dim
 * mismatch, PROTO_ECORRUPT a record or the schema is not what this build
 * writes, PROTO_EIO / PROTO_ENOMEM / PROTO_ESTORE from LMDB or the system
 * (detail in store_last_error()), PROTO_ENOSPACE when a write finds the disk
 * full (ENOSPC) or the map at max_map_bytes: nothing of that write is kept and
 * the store stays usable.
 */
#ifndef RETRO_STORE_H
#define RETRO_STORE_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>

typedef struct store store;

typedef struct store_options {
  size_t map_bytes;       /* initial LMDB map size; 0 = 64 MiB */
  unsigned max_readers;   /* reader slots; 0 = 4096 (LMDB's default is 126) */
  size_t max_map_bytes;   /* the map never grows past this (but for a delete's
                           allowance, above); 0 = no limit. A write that needs
                           more fails with PROTO_ENOSPACE */
  int read_only_fallback; /* 1: a database this process may not write (a
                             read-only file system, no permission) is opened
                             read-only instead of failing; every write then
                             fails. One that can be written opens as usual */
} store_options;

/* Opens (creating DIR and DIR/db when absent) the store. opt may be NULL. An
 * existing database keeps the map size it grew to when that is larger than
 * map_bytes. PROTO_ECORRUPT when the schema version is not ours. Open a
 * database once per process (LMDB's rule); other processes may open it too.
 * Stale reader slots of dead processes are cleared here. */
proto_status store_open(const char *dir, const store_options *opt, store **out);
/* Closes; accepts NULL. No other call may be in flight. */
void store_close(store *st);
/* Detail of this thread's last failure (e.g. mdb_strerror text). Never NULL. */
const char *store_last_error(void);

/* meta: small string values (fingerprints, dim, schema). *value is malloc'd
 * and NUL-terminated, NULL when the key is absent (still PROTO_OK). Keys the
 * store keeps itself (decimal numbers, readable here) cannot be put
 * (PROTO_EINVAL): "schema", "next_doc_id", "next_chunk_id",
 * "index_watermark". "dim" may be put: a decimal 1..PROTO_MAX_DIM (else
 * PROTO_EINVAL) that fixes the dim as a first write would, PROTO_EDIM when
 * the database already holds another dim. */
proto_status store_meta_get(store *st, const char *key, char **value);
proto_status store_meta_put(store *st, const char *key, const char *value);

typedef struct store_chunk_input {
  const int32_t *tokens; /* decoder token ids of the chunk (<= 64, else EINVAL) */
  uint32_t n_tokens;
  const char *text; /* the chunk's text (bytes, may end mid-UTF-8) */
  size_t text_len;
  const float *vector; /* dim floats: the chunk's embedding (finite, else ERANGE) */
} store_chunk_input;

enum { STORE_HASH_BYTES = 64 }; /* opaque to the store (ingest: text hash | full hash) */

typedef struct store_doc_input {
  const char *id;            /* external id chosen by the user, NUL-terminated,
                                1..PROTO_MAX_ID_BYTES bytes */
  const char *metadata_json; /* a JSON object as text; NULL means {} */
  uint32_t n_chunks;         /* may be 0 (an empty document) */
  const store_chunk_input *chunks;
  const unsigned char *content_hash; /* STORE_HASH_BYTES kept with the document
                                        (see store_doc_hash), or NULL */
} store_doc_input;

/* Upserts n documents in ONE write transaction: all or nothing. A document
 * whose id exists is replaced (its old chunks deleted and tombstoned). dim is
 * the vector length; the first write fixes the database's dim, later writes
 * with another dim fail with PROTO_EDIM. doc_ids (optional) receives the
 * internal doc id of each document (valid only on PROTO_OK). Durable when it
 * returns PROTO_OK. A replaced document gets a new doc id and new chunk ids;
 * the chunks of one document always have consecutive ids. When the same id
 * appears twice in one batch, the later one wins. dim may be 0 only when no
 * document has chunks. */
proto_status store_upsert(store *st, const store_doc_input *docs, size_t n, uint32_t dim,
                          uint64_t *doc_ids);

/* Deletes a document by external id; *found = 0 when it did not exist (still
 * PROTO_OK). Its chunks and vectors go, their ids are tombstoned. */
proto_status store_delete(store *st, const char *id, int *found);
/* Deletes n documents in one transaction: all or none. found[i] says
 * whether ids[i] existed; an id given twice is found only the first time. */
proto_status store_delete_many(store *st, const char *const *ids, size_t n, int *found);
/* A test of a document's metadata (its JSON text, "" when it has none):
 * non-zero to delete the document. */
typedef int (*store_doc_test)(void *ctx, const char *metadata_json);
/* Deletes every document that passes test, in one transaction (all or
 * none); *deleted counts them. */
proto_status store_delete_where(store *st, store_doc_test test, void *ctx, size_t *deleted);

/* The content hash stored with document `id` by its last upsert: *doc_num is
 * its internal id and *n_chunks (optional) its chunk count, or *doc_num = 0
 * when the document is absent or was stored without a hash. */
proto_status store_doc_hash(store *st, const char *id, unsigned char hash[STORE_HASH_BYTES],
                            uint64_t *doc_num, uint32_t *n_chunks);

/* Replaces the metadata of document id (same doc id, same chunks: no
 * tombstones, the indexes do not change) and its content hash, in one
 * transaction. *found = 0 when the document does not exist (nothing done). */
proto_status store_doc_set_meta(store *st, const char *id, const char *metadata_json,
                                const unsigned char *content_hash, int *found);

/* The new metadata of a document made from its current metadata (old_meta,
 * old_len bytes, not NUL-terminated) and content hash (old_hash, NULL when
 * it has none): *meta (malloc'd JSON object text, freed by the store) and,
 * when *has_hash is set, new_hash. Called inside the write transaction, so
 * no other write comes between the read and the write; a status other than
 * PROTO_OK ends it with nothing written. */
typedef proto_status (*store_meta_fn)(void *ctx, const char *old_meta, size_t old_len,
                                      const unsigned char *old_hash, char **meta,
                                      unsigned char new_hash[STORE_HASH_BYTES], int *has_hash);
/* store_doc_set_meta for n documents, with the metadata fn makes from each
 * one's stored metadata, in one transaction, all or none: found[i] says
 * whether ids[i] named one (those that did not are left alone). */
proto_status store_update_meta_many(store *st, const char *const *ids, size_t n, store_meta_fn fn,
                                    void *ctx, int *found);
/* The same, in one transaction, for every document whose metadata passes
 * test; *updated = how many. */
proto_status store_update_meta_where(store *st, store_doc_test test, void *test_ctx,
                                     store_meta_fn fn, void *fn_ctx, size_t *updated);

typedef struct store_doc {
  uint64_t doc_id;
  char *id;            /* external id */
  char *metadata_json; /* JSON object text */
  uint64_t first_chunk;
  uint32_t n_chunks;
} store_doc;

/* Gets a document by external id (PROTO_ENOTFOUND when absent) or by
 * internal doc id. Free with store_doc_free. */
proto_status store_doc_get(store *st, const char *id, store_doc *out);
proto_status store_doc_get_by_num(store *st, uint64_t doc_id, store_doc *out);
void store_doc_free(store_doc *doc); /* frees the members; accepts zeroed */
/* A document whole, read in one transaction, so that its text, metadata
 * and content hash are of one moment, never half of a replacement or an
 * update: its record, its text (its chunks' texts end to end) and token
 * count, and the content hash its last write stored. */
typedef struct store_doc_whole {
  store_doc doc;
  char *text; /* with_text: NUL-terminated, text_len bytes; else NULL */
  size_t text_len;
  uint64_t n_tokens;
  int has_hash; /* 0: stored without one (an older build) */
  unsigned char hash[STORE_HASH_BYTES];
} store_doc_whole;
/* PROTO_ENOTFOUND when there is no document id; a missing chunk is
 * PROTO_ECORRUPT. Free with store_doc_whole_free. */
proto_status store_doc_get_whole(store *st, const char *id, int with_text, store_doc_whole *out);
/* The same for n documents, all read in one transaction (one snapshot):
 * found[i] says whether ids[i] named one, and out[i] is it (zeroed when
 * not). On an error (a bad id, a read failing) nothing is returned. Free
 * each out[i] with store_doc_whole_free. */
proto_status store_docs_get_whole(store *st, const char *const *ids, size_t n, int with_text,
                                  store_doc_whole *out, int *found);
void store_doc_whole_free(store_doc_whole *w); /* accepts zeroed */
/* Called with each document whole, in doc num order, inside the scan's read
 * transaction (the rules of store_vectors_fn below apply); w and what it
 * points to are valid only during the call. Non-OK stops the scan and is
 * returned by store_docs_scan. */
typedef proto_status (*store_docs_fn)(void *ctx, const store_doc_whole *w);
/* Every document with doc num > after, from one snapshot (one read
 * transaction), with its text when with_text. */
proto_status store_docs_scan(store *st, uint64_t after, int with_text, store_docs_fn fn, void *ctx);
/* Up to max documents with internal id > after, in id order (one read
 * transaction): *n of them in out (free each with store_doc_free); *more = 1
 * when further documents follow the last one returned. */
proto_status store_docs_list(store *st, uint64_t after, size_t max, store_doc *out, size_t *n,
                             int *more);

typedef struct store_chunk {
  uint64_t chunk_id;
  uint64_t doc_id;
  uint32_t ordinal; /* position of the chunk in its document, from 0 */
  int32_t *tokens;  /* N: the chunk */
  uint32_t n_tokens;
  char *text; /* NUL-terminated for convenience; text_len bytes */
  size_t text_len;
  int32_t *next_tokens;   /* F: the next chunk of the same document; */
  uint32_t n_next_tokens; /*    empty (NULL, 0) at the document's end   */
  char *next_text;        /* "" at the end */
  size_t next_text_len;
} store_chunk;

/* Gets a chunk with its continuation in one read transaction. All members
 * are malloc'd (tokens NULL when there are none); free with store_chunk_free.
 * PROTO_ENOTFOUND when the chunk does not exist (never was, or deleted). */
proto_status store_chunk_get(store *st, uint64_t chunk_id, store_chunk *out);
void store_chunk_free(store_chunk *chunk); /* frees the members; accepts zeroed */

/* Reads only a chunk's header (no tokens or text copied): its document's
 * internal id and its ordinal; either out-pointer may be NULL. Cheap enough to
 * call per search candidate. PROTO_ENOTFOUND when the chunk does not exist
 * (never was, or deleted; no message set in that case). */
proto_status store_chunk_doc(store *st, uint64_t chunk_id, uint64_t *doc_id, uint32_t *ordinal);

/* A read snapshot: lookups that share one LMDB read transaction (one reader
 * slot, one map read lock) instead of taking one each, for a burst of reads
 * such as one search's candidates and hits. Hold it briefly, on one thread
 * (begin and end on the same thread). Lock order: begin it after taking any
 * lock that is also held around store reads elsewhere (the index lock:
 * idx_sync reads the store under it, and the map lock prefers writers, so a
 * snapshot begun before such a lock can deadlock against a map resize).
 * The snap_ functions behave as the store_ ones of the same name. */
typedef struct store_snap {
  store *st; /* NULL when not begun (or ended) */
  void *txn;
} store_snap;
proto_status store_snap_begin(store *st, store_snap *sn);
void store_snap_end(store_snap *sn); /* accepts one not begun */
proto_status store_snap_chunk_doc(store_snap *sn, uint64_t chunk_id, uint64_t *doc_id,
                                  uint32_t *ordinal);
proto_status store_snap_chunk_get(store_snap *sn, uint64_t chunk_id, store_chunk *out);
proto_status store_snap_doc_by_num(store_snap *sn, uint64_t doc_id, store_doc *out);

/* Reads a chunk's embedding into vec (dim floats). PROTO_ENOTFOUND if absent. */
proto_status store_vector_get(store *st, uint64_t chunk_id, float *vec);
/* The same within a snapshot. */
proto_status store_snap_vector_get(store_snap *sn, uint64_t chunk_id, float *vec);

typedef struct store_stats {
  uint64_t docs;          /* live documents */
  uint64_t chunks;        /* live chunks */
  uint64_t next_chunk_id; /* the id the next chunk will get */
  uint32_t dim;           /* 0 until the first write */
  size_t map_bytes;       /* current LMDB map size */
  size_t used_bytes;      /* pages in use (up to the last written page) x page size */
} store_stats;
proto_status store_stats_get(store *st, store_stats *out);

/* Index change feed ------------------------------------------------------- */

/* Called with up to `batch` live vectors at a time, ids ascending. Pointers
 * are valid only during the call. Returning non-OK stops the scan and is
 * returned by store_vectors_scan. fn runs inside the scan's read transaction:
 * it may call the store's read functions from the same thread, but a write
 * from it fails with PROTO_EINVAL, and it must not wait on another thread that
 * uses the store (a pending map growth would deadlock). */
typedef proto_status (*store_vectors_fn)(void *ctx, const uint64_t *ids, const float *vectors,
                                         size_t n);
/* Scans live vectors with chunk id > after_id in one read transaction (one
 * snapshot). batch 0 means 1024. Nothing to scan (no dim yet) is PROTO_OK. */
proto_status store_vectors_scan(store *st, uint64_t after_id, size_t batch, store_vectors_fn fn,
                                void *ctx);
/* Up to n live vectors spread over the id range (for training IVF/PQ): every
 * (live/n)-th vector in id order, deterministic; all of them when live <= n.
 * *vectors is malloc'd (*n_out x dim floats), NULL when *n_out is 0. */
proto_status store_vectors_sample(store *st, size_t n, float **vectors, size_t *n_out);
/* All tombstoned chunk ids (malloc'd, ascending; NULL when *n is 0). */
proto_status store_tombstones(store *st, uint64_t **ids, size_t *n);
/* After the index file was saved durably holding every live chunk id <=
 * watermark and none of `applied` tombstones: records the watermark and
 * clears those tombstones, in one transaction. */
proto_status store_index_mark(store *st, uint64_t watermark, const uint64_t *applied,
                              size_t n_applied);
/* The watermark of the last saved index file (0 if none). */
proto_status store_index_watermark(store *st, uint64_t *watermark);

/* Backup and checks -------------------------------------------------------- */

/* Writes a compacted copy of the database (LMDB's mdb_env_copy2 with
 * MDB_CP_COMPACT: one read transaction, so one consistent snapshot holding
 * every write committed before the call) as dir/data.mdb; dir must exist
 * and hold no data.mdb. Writes meanwhile go on, except one that needs the
 * map to grow, which waits for the copy to end. */
proto_status store_copy(store *st, const char *dir);

typedef struct store_check_result {
  uint64_t docs, chunks, vectors; /* records found intact */
  uint64_t problems;              /* inconsistencies found */
} store_check_result;
typedef void (*store_check_fn)(void *ctx, const char *problem);
/* Reads every document, its chunks and their vectors in one read
 * transaction (every page of those trees is read, as far as LMDB's API can
 * check a database), and compares the record counts; calls fn with one
 * line per problem (a missing chunk or vector, a vector of the wrong size,
 * records no document owns). PROTO_OK when the check ran (see problems). */
proto_status store_check(store *st, store_check_fn fn, void *ctx, store_check_result *out);

#endif
