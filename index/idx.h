/* idx.h - the FAISS index over chunk embeddings (ids = chunk ids). A derived
 * cache of the store: idx_open loads DIR/index.faiss and replays the store's
 * vectors past the saved watermark and its tombstones, or rebuilds from the
 * store when the file is missing or unreadable. Only this module includes
 * FAISS.
 *
 * Thread-safety: searches run concurrently; idx_sync, idx_save and searches
 * are serialised against each other by an internal read-write lock that
 * prefers writers (a stream of searches cannot starve idx_sync).
 */
#ifndef RETRO_IDX_H
#define RETRO_IDX_H

#include "proto.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

typedef struct idx idx;

typedef enum idx_metric { IDX_METRIC_IP = 0, IDX_METRIC_L2 = 1 } idx_metric;

typedef struct idx_options {
  const char *factory;       /* index_factory string; NULL = saved one, else a
                          default chosen by corpus size (documented in idx.c) */
  idx_metric metric;         /* IP for L2-normalised embeddings (the default) */
  uint32_t dim;              /* embedding dimension; 0 = the store's */
  int nprobe;                /* default IVF nprobe; 0 = max(16, nlist/128) */
  int ef_search;             /* default HNSW efSearch; 0 = 64 */
  int plain_scan;            /* 1: scan a flat index's float rows (and an IVF's
                          centroids and lists) only, without the int8 codes
                          (see idx.c) kept by default */
  uint64_t auto_flat_floats; /* the default factory is Flat while vectors x dim
                                stay below this; 0 = 51.2M (see idx.c) */
  uint64_t codes_min_floats; /* int8 codes are kept for a flat index's rows, and
                                for an IVF's centroids and lists, from this
                                many floats of rows on; 0 = 262,144 (1 MiB,
                                see idx.c) */
} idx_options;

/* Opens the index file at path (usually DIR/index.faiss) for store st (which
 * must outlive the index), then catches up with the store (idx_sync). The
 * factory string is kept in the store's meta ("index_factory"); an explicit
 * opt->factory that differs from it rebuilds the index. A missing, torn or
 * foreign file is rebuilt from the store and saved (when writable). PROTO_EINVAL for a bad
 * factory string, PROTO_EDIM when dim disagrees with the store. */
proto_status idx_open(const char *path, store *st, const idx_options *opt, idx **out);
/* Closes without saving; accepts NULL. */
void idx_close(idx *ix);
/* Detail of this thread's last failure (FAISS's message). Never NULL. */
const char *idx_last_error(void);

/* Brings the index up to date with the store: adds vectors past what it
 * holds, removes tombstoned ids, trains IVF/PQ indexes from a sample once
 * enough vectors exist (vectors wait in the store until then). */
proto_status idx_sync(idx *ix);
/* Saves atomically (temp file, fsync, rename, fsync dir), then records the
 * watermark and clears applied tombstones in the store. Syncs first.
 * Deleted chunks are not returned by searches after the idx_sync (or
 * idx_save) that follows their deletion in the store. */
proto_status idx_save(idx *ix);
/* Rebuilds the whole index from the store with factory (NULL = the current
 * one; a new string replaces the saved one) and saves it. */
proto_status idx_rebuild(idx *ix, const char *factory);

typedef struct idx_search_params {
  int nprobe;    /* IVF lists to visit; 0 = index default */
  int ef_search; /* HNSW efSearch; 0 = index default. A value other than the
                    one last used runs that search exclusively (FAISS 1.7.3
                    reads efSearch only from the index itself) */
} idx_search_params;

/* Returns 1 to keep a result id, 0 to skip it (deleted, excluded doc, ...).
 * Called from idx_search under the index's read lock: it must not call any
 * idx_ function on the same index (the lock prefers writers, so even a
 * nested read could wait behind a queued idx_sync). */
typedef int (*idx_filter_fn)(void *ctx, int64_t chunk_id);

/* k nearest neighbours of each of nq queries (nq x dim floats). scores and
 * ids are nq x k; missing results have id -1 and score NAN. Scores: inner
 * product (higher is nearer) or L2 distance (lower is nearer). filter may be
 * NULL; with a filter the search fetches more until k results pass or the
 * index is exhausted. params may be NULL. */
proto_status idx_search(idx *ix, const float *queries, size_t nq, int k,
                        const idx_search_params *params, idx_filter_fn filter, void *filter_ctx,
                        float *scores, int64_t *ids);

typedef struct idx_info {
  char factory[128];
  idx_metric metric;
  uint32_t dim;
  uint64_t ntotal; /* live vectors in the FAISS index (deleted ones that an
                         HNSW index still holds are not counted) */
  int trained;
  uint64_t pending;   /* vectors waiting for training (searched exactly) */
  uint64_t watermark; /* highest chunk id added */
  uint64_t code_rows; /* rows of int8 codes searches use: a flat index's rows,
                         or an IVF's centroids plus its lists' rows (0: none,
                         see idx_options) */
  /* since open: idx_search calls that scanned a non-empty index (several
   * queries in one call, or the refetches of a filtered search, count once);
   * of those, the ones timed (all on an index of 4M floats or more, else
   * one in 16) and the CPU seconds of their scans
   * proper (flat_scan or FAISS's search, not the filter) on the calling
   * thread. A FAISS search of several queries may use OpenMP threads whose
   * time this leaves out. */
  uint64_t scans, timed_scans;
  double timed_scan_cpu_seconds;
  int rebuilt_at_open; /* 1: the file was missing, unreadable or behind the
                          store at idx_open, and the index was built from the store */
} idx_info;
proto_status idx_info_get(idx *ix, idx_info *out);
/* (ntotal + pending) x dim, ntotal as idx_info counts it (dead vectors
 * left out), as of the last change, without the lock: for callers that
 * must not wait behind a writer (the HTTP threads choosing where a search
 * by vector runs, once per request). */
uint64_t idx_floats(idx *ix);

/* Reads an index file without a store (for `retro verify`): checks it is
 * whole (length, checksum) and loads it; *watermark is the highest chunk id
 * it was saved with, *ntotal the vectors it holds. PROTO_ENOTFOUND when
 * absent, PROTO_ECORRUPT when torn or altered. */
proto_status idx_file_info(const char *path, uint64_t *watermark, uint64_t *ntotal, uint32_t *dim);

#endif
