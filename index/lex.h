/* lex.h - the lexical (BM25) index over chunk texts: SQLite FTS5, ids =
 * chunk ids. Like the FAISS index (idx.h) it is a cache derived from the
 * store: lex_open reconciles the file with the store's live chunks, or
 * rebuilds it when the file is missing, torn or foreign, and lex_sync
 * follows the store through its chunk ids (the watermark) and tombstones.
 * Only this module includes SQLite.
 *
 * Tokens (the "retro" FTS5 tokenizer, wrapped by FTS5's porter stemmer):
 * runs of ASCII letters, digits, '_' and non-ASCII bytes, joined by '.'
 * between two such characters, lower-cased. A compound token is indexed
 * whole and, at the same position, by its parts, split at '.', '_' and
 * camelCase boundaries: `os.path.join` is found by "os.path.join", "path"
 * or "join"; `__init__` by "__init__" and "init"; `TypeError` by
 * "typeerror", "type" and "error".
 *
 * Columns: body (the chunk's text) and title (its document's first heading,
 * looked for in the first chunk, and its id), weighed alike by BM25, so a
 * chunk deep in a document is found by what the document is about.
 *
 * Thread-safety: searches run concurrently (each on a reader connection of
 * a pool); lex_sync and lex_rebuild are serialised by an internal mutex.
 * SQLite runs in WAL mode, so searches never wait for a writer.
 */
#ifndef RETRO_LEX_H
#define RETRO_LEX_H

#include "idx.h"
#include "proto.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lex lex;

/* Opens or creates the index file at path (usually DIR/lexical.sqlite) for
 * store st (which must outlive it) and brings it up to date with the store:
 * adds chunks past its watermark, applies tombstones, and, if its chunk
 * count then differs from the store's live chunks, reconciles the two id by
 * id. A file SQLite cannot read, or one without our schema, is deleted and
 * rebuilt. read_only: searches only, the file is never written; a missing
 * or stale one (not holding exactly the store's live chunks) is then
 * PROTO_EINDEX. */
proto_status lex_open(const char *path, store *st, int read_only, lex **out);
/* Closes; accepts NULL. */
void lex_close(lex *lx);
/* Detail of this thread's last failure. Never NULL. */
const char *lex_last_error(void);

/* Adds the store's chunks past the watermark and removes tombstoned ids, in
 * one SQLite transaction. Call it before the FAISS index saves (which clears
 * the tombstones), under the same lock as idx_sync/idx_save. */
proto_status lex_sync(lex *lx);
/* Empties the index and adds every live chunk of the store again. */
proto_status lex_rebuild(lex *lx);

/* Up to k best chunks for the query text by BM25 (scores: -bm25(), higher is
 * better), skipping ids the filter rejects (it may be NULL). Query words
 * are OR'ed; a compound word also asks for its parts. *n_out receives the
 * number found (<= k). A text without a single word finds nothing. */
proto_status lex_search(lex *lx, const char *text, size_t len, int k, idx_filter_fn filter,
                        void *filter_ctx, float *scores, int64_t *ids, size_t *n_out);

/* A range of chunk ids, first..last inclusive: one document's chunks. */
typedef struct lex_range {
  int64_t first, last;
} lex_range;
/* lex_search within the ranges only (a search restricted to named
 * documents): each range is searched on its own, through FTS5's rowid
 * bounds, so the cost follows what the ranges hold, not how many chunks of
 * the whole index match; scores and ids are the best k of all, descending. */
proto_status lex_search_in(lex *lx, const char *text, size_t len, int k, const lex_range *ranges,
                           size_t n_ranges, idx_filter_fn filter, void *filter_ctx, float *scores,
                           int64_t *ids, size_t *n_out);

typedef struct lex_info {
  uint64_t chunks;     /* chunks in the index */
  uint64_t watermark;  /* highest chunk id added */
  uint64_t bytes;      /* size of the file and its WAL */
  int rebuilt_at_open; /* 1: the file was unreadable or not ours at lex_open,
                          and was built anew from the store */
} lex_info;
proto_status lex_info_get(lex *lx, lex_info *out);

/* The tokenizer, for tests: calls fn for every token of text[0..len) in
 * order (whole tokens with colocated = 0, then their parts with 1); parts
 * = 0 gives whole tokens only. Stops early when fn returns non-zero and
 * returns that value. */
typedef int (*lex_token_fn)(void *ctx, int colocated, const char *token, size_t len, size_t start,
                            size_t end);
int lex_tokenize(const char *text, size_t len, int parts, lex_token_fn fn, void *ctx);

#endif
