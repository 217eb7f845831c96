/* idx.c - the FAISS index over chunk embeddings, kept in step with the store.
 *
 * What it does: builds any index_factory string (IP or L2), trains IVF/PQ
 * indexes from a sample of stored vectors once enough exist, adds the store's
 * vectors past its watermark, applies tombstones, searches with per-query
 * nprobe/efSearch and an id filter, saves atomically and reloads or rebuilds
 * at open. What it does not: it never writes chunks or vectors (the store is
 * the source of truth) and never talks FAISS C++ (only the C API, implemented
 * for Debian's libfaiss in faiss_capi.cpp).
 *
 * Decisions (see also .work/notes/index.md):
 * - Ids are chunk ids. Index types that cannot store ids (Flat, HNSW, PQ, SQ,
 *   ... anything whose core is not an IVF) are wrapped as "IDMap,<factory>".
 * - Deletes: remove_ids where the index supports it (Flat, IVF). HNSW cannot
 *   remove: its deleted ids go into a sorted "dead" set filtered out at search
 *   time; their tombstones stay in the store (not marked applied) so the dead
 *   set is rebuilt at open. When dead ids pass 1/4 of the index, idx_sync
 *   rebuilds the index from the store.
 * - Training: an untrained index (IVF, PQ, SQ, ...) trains once the store
 *   holds at least 39 * max(nlist, 256 for PQ codes or non-IVF indexes) live
 *   vectors (FAISS's own minimum of 39 training points per centroid), on a
 *   sample of up to 64 points per centroid. Until then the vectors wait in
 *   an in-memory exact (IDMap,Flat) side index that searches use, so results
 *   are exact while pending; it is not saved (it is rebuilt from the store).
 * - Default factory (opt->factory NULL and none saved): "Flat" while the
 *   vectors hold fewer than 51.2M floats (200,000 x 256), then "IVF{n},Flat"
 *   with n = 4*sqrt(vectors) rounded to a power of two, at most 4096. An
 *   automatic choice is upgraded by idx_sync as the corpus grows (Flat ->
 *   IVF at that size; IVF nlist when it should double), never downgraded.
 *   Reason: Debian's HNSW adds vectors too slowly to build at scale here;
 *   Flat is exact; IVF trains and adds quickly at scale but loses recall.
 *   The size is where a coded flat scan (below) costs per query what the
 *   float scan cost at 50,000 x 256, the limit before codes. The numbers
 *   behind it are in docs/BENCHMARKS.md and tests/bench/index.
 * - PQ codes: FAISS's polysemous training (a code reordering for Hamming
 *   pre-filtering, which we never search with) is switched off; it took
 *   150 s to train "IVF256,PQ16" on 10k 32-d vectors, against under 1 s.
 * - Default search parameters: nprobe = max(16, nlist/128) (at most
 *   nlist), efSearch = 64 (FAISS's own defaults 1 and 16 give poor recall);
 *   overridable per index (idx_options) and per query (idx_search_params).
 *   The nprobe rule gives the automatic IVF 16 lists at nlist 2048 (200k
 *   vectors) and 32 at 4096 (1M on): on 256-d vectors shaped like the
 *   default corpus's embeddings, recall@10 0.989 and 0.998. Those vectors
 *   flatter IVF (real chunk queries at 44k, IVF1024, missed ~1.5x as often:
 *   0.962 at nprobe 16, 0.985 at 32), so the rule keeps a margin over the
 *   0.95 goal instead of the cheaper nprobe 4-8; it still scans ~1% of the
 *   rows. The old default, nlist/8, made IVF4096 slower than the exact scan
 *   it replaced (docs/BENCHMARKS.md, "Approximate search at scale").
 *   nprobe goes through
 *   SearchParametersIVF (concurrent). FAISS 1.7.3 ignores efSearch in
 *   SearchParametersHNSW (measured), so a query asking for an efSearch other
 *   than the one set in the index changes it under the exclusive lock;
 *   queries at the current value search concurrently.
 * - Flat indexes (and the pending side index) are searched by flat_scan.c,
 *   from 262,144 floats (1 MiB) on with an int8 copy of the rows (flat_codes:
 *   a quarter of the bytes to read, then the few rows that could rank are
 *   scored exactly: same results bit for bit). The copy costs a quarter of
 *   the index's memory. It is kept in step under the write lock with every
 *   change: appended to on adds, compacted like the rows on removals (far
 *   cheaper than making it again), made again when the index is replaced.
 *   Figures: docs/BENCHMARKS.md (tests/bench/index/flat_scan.sh).
 * - IVFFlat indexes (the automatic IVF{n},Flat, or any IVF{n},Flat with a
 *   flat quantizer, not under a PreTransform) are searched below 20 queries
 *   by ivf_scan.c: flat_scan picks each query's nprobe nearest centroids
 *   and scans the float rows of those lists in place in FAISS's inverted
 *   lists (faiss_Index_ivf_flat_view, read under the read lock like Flat's
 *   rows), so the results are FAISS's at the same nprobe (up to ties) at
 *   2-6x its speed (Debian's FAISS scans IVF lists with a scalar kernel).
 *   FAISS still trains, adds, removes and saves. From codes_min_floats on
 *   (as for Flat), 4-bit codes of the centroids and of every list (as
 *   residuals from its centroid) are kept beside them (ivf_codes_refresh)
 *   and searched instead by ivf_scan_nib: the lists, and the rows that
 *   could rank (IVF_NIB_MARGIN), picked from the codes, those rows scored
 *   exactly from the floats. An eighth of the bytes read, and approximate:
 *   it may miss a row the float scan finds at the same nprobe (how often:
 *   docs/BENCHMARKS.md, run J). The codes follow
 *   FAISS's lists: appended to as lists grow, a list's codes made again
 *   when a removal changed it, all of them when main is trained or
 *   replaced. 20 queries or more go to FAISS. The filter's refetch and the
 *   dead set work on either's results alike.
 * - File format: "RETROIX1", watermark, dim, metric, factory, the FAISS
 *   index bytes, then an FNV-1a 64 checksum and "RETROEND". A file that is
 *   short, fails the checksum, was written for another factory/metric/dim, or
 *   whose watermark is behind the store's, is rebuilt from the store (and
 *   saved). A file ahead of the store's watermark (crash between rename and
 *   store_index_mark) is used with its own watermark.
 */
#include "idx.h"

#include "faiss_capi_ext.h"
#include "flat_scan.h"
#include "ivf_scan.h"
#include "nib_codes.h"

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/IndexPreTransform_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { KIND_OTHER = 0, KIND_IVF = 1, KIND_HNSW = 2 };
enum { AUTO_MAX_NLIST = 4096 };
#define AUTO_FLAT_FLOATS 51200000ULL /* vectors x dim below which the default is Flat */
enum { SCAN_BATCH = 4096 };
enum {
  CODES_MIN_FLOATS = 262144
}; /* below (1 MiB), a float scan is as fast: the rows stay in cache */

struct idx {
  store *st;           /* borrowed; outlives the index */
  char *path;          /* the index file */
  char *factory;       /* the user-level factory string (as in meta) */
  int auto_factory;    /* chosen by size: upgraded as the corpus grows */
  int rebuilt_at_open; /* idx_info's */
  idx_metric metric;
  uint32_t dim;
  int nprobe_default, ef_default;
  int ef_current;      /* HNSW efSearch set in the index (KIND_HNSW) */
  FaissIndex *main;    /* ids = chunk ids */
  FaissIndex *pending; /* exact side index while main is untrained */
  int kind;            /* KIND_* of main's core (under IDMap/PreTransform) */
  size_t nlist;        /* for KIND_IVF */
  int can_remove;      /* main supports remove_ids */
  uint64_t added_upto; /* highest chunk id the active index has scanned */
  uint64_t *dead;      /* sorted ids still in main but deleted */
  size_t n_dead, cap_dead;
  uint64_t *applied; /* sorted tombstones processed since the last mark */
  size_t n_applied;
  int plain_scan;            /* idx_options.plain_scan */
  uint64_t auto_flat_floats; /* idx_options.auto_flat_floats, defaulted */
  uint64_t codes_min_floats; /* idx_options.codes_min_floats, defaulted */
  flat_codes *codes;         /* int8 rows of codes_of (a flat active index), or NULL */
  const FaissIndex *codes_of;
  int codes_stale; /* rows were replaced (or removed unfollowed) since codes were made */
  /* 4-bit codes of an IVFFlat main's centroids and of each of its lists
   * (n_list_codes = nlist entries), made for ivf_codes_of; ivf_codes_stale:
   * main was replaced or trained since */
  nib_codes *centroid_codes;
  nib_codes **list_codes;
  size_t n_list_codes;
  const FaissIndex *ivf_codes_of;
  int ivf_codes_stale;
  pthread_rwlock_t lock;
  _Atomic uint64_t floats; /* idx_floats: published at the end of every change */
  /* idx_search calls that scanned; those timed, and their scans' CPU time */
  _Atomic uint64_t scans, timed_scans, timed_cpu_ns;
};

const char *idx_last_error(void) { return proto_err_get(); }

static proto_status faiss_fail(const char *what) {
  return proto_fail(PROTO_EINDEX, "%s: %s", what, faiss_get_last_error());
}

static proto_status store_fail(proto_status s, const char *what) {
  return proto_fail(s, "%s: %s", what, store_last_error());
}

static FaissMetricType faiss_metric(idx_metric m) {
  return m == IDX_METRIC_L2 ? METRIC_L2 : METRIC_INNER_PRODUCT;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int u64_in(const uint64_t *v, size_t n, uint64_t x) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (v[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo < n && v[lo] == x;
}

/* Factory strings ---------------------------------------------------------- */

static size_t auto_nlist(uint64_t n) {
  double want = 4.0 * sqrt((double)n);
  size_t p = 1;
  while ((double)(p * 2) <= want * 1.41421356 && p * 2 <= AUTO_MAX_NLIST) p *= 2;
  return p;
}

/* The default factory for a corpus of n vectors (see the file comment). */
static void auto_factory(const idx *ix, uint64_t n, char *buf, size_t cap) {
  if ((double)n * ix->dim < (double)ix->auto_flat_floats) snprintf(buf, cap, "Flat");
  else snprintf(buf, cap, "IVF%zu,Flat", auto_nlist(n));
}

/* Looks through IDMap and PreTransform wrappers to the index doing the work. */
static FaissIndex *core_of(FaissIndex *ix) {
  for (;;) {
    FaissIndexIDMap *m = faiss_IndexIDMap_cast(ix);
    if (m) {
      ix = faiss_IndexIDMap_sub_index(m);
      continue;
    }
    FaissIndexPreTransform *p = faiss_IndexPreTransform_cast(ix);
    if (p) {
      ix = faiss_IndexPreTransform_index(p);
      continue;
    }
    return ix;
  }
}

/* Parameters FAISS's index_factory takes and then fails or crashes on, some
 * inside index_factory itself (so they are read from the string): a 0 (an IVF
 * of no lists fails every search; PQ, NSG or HNSW with 0 of anything divide
 * by zero or follow a null link) and HNSW with M 1 (its level multiplier,
 * 1/ln M, is infinite, and it allocates without bound). */
static proto_status check_factory(const char *factory) {
  for (const char *p = factory; *p;) {
    if (!isdigit((unsigned char)*p)) {
      p++;
      continue;
    }
    const char *num = p;
    while (isdigit((unsigned char)*p)) p++;
    size_t len = (size_t)(p - num), zeros = strspn(num, "0"); /* leading zeros */
    int zero = zeros >= len, one = !zero && zeros == len - 1 && num[len - 1] == '1';
    int hnsw_m = num - factory >= 4 && !strncmp(num - 4, "HNSW", 4);
    if (zero || (hnsw_m && one))
      return proto_fail(PROTO_EINVAL,
                        "index factory \"%s\": %s at \"%.*s\" (FAISS takes it, then fails on it)",
                        factory, hnsw_m ? "HNSW needs M of at least 2" : "a parameter of 0",
                        (int)(p - factory), factory);
  }
  return PROTO_OK;
}

/* Creates the index for factory, wrapped in IDMap when it cannot store ids. */
static proto_status make_index(const char *factory, uint32_t dim, idx_metric metric,
                               FaissIndex **out) {
  FaissIndex *ix = NULL;
  char *wrapped = NULL;
  proto_status s = PROTO_OK;
  if ((s = check_factory(factory)) != PROTO_OK) goto leave;
  if (faiss_index_factory(&ix, (int)dim, factory, faiss_metric(metric))) {
    s = proto_fail(PROTO_EINVAL, "index factory \"%s\": %s", factory, faiss_get_last_error());
    goto leave;
  }
  if (strncmp(factory, "IDMap", 5) != 0 && !faiss_IndexIVF_cast(core_of(ix))) {
    size_t len = strlen(factory) + 8;
    wrapped = malloc(len);
    if (!wrapped) {
      s = proto_fail(PROTO_ENOMEM, "out of memory");
      goto leave;
    }
    snprintf(wrapped, len, "IDMap,%s", factory);
    faiss_Index_free(ix);
    ix = NULL;
    if (faiss_index_factory(&ix, (int)dim, wrapped, faiss_metric(metric))) {
      s = proto_fail(PROTO_EINVAL, "index factory \"%s\": %s", wrapped, faiss_get_last_error());
      goto leave;
    }
  }
  if (faiss_Index_set_polysemous_training(ix, 0)) {
    s = faiss_fail("index setup");
    goto leave;
  }
  *out = ix;
  ix = NULL;
leave:
  if (ix) faiss_Index_free(ix);
  free(wrapped);
  return s;
}

/* Installs a fresh main index (and an empty side index when untrained). */
static void describe(idx *ix) {
  FaissIndex *core = core_of(ix->main);
  FaissIndexIVF *ivf = faiss_IndexIVF_cast(core);
  ix->kind = KIND_OTHER;
  ix->nlist = 0;
  ix->can_remove = 1;
  if (ivf) {
    ix->kind = KIND_IVF;
    ix->nlist = faiss_IndexIVF_nlist(ivf);
  } else if (faiss_IndexHNSW_cast(core)) {
    ix->kind = KIND_HNSW;
    ix->can_remove = 0;
    faiss_IndexHNSW_set_efSearch(faiss_IndexHNSW_cast(core), ix->ef_default);
    ix->ef_current = ix->ef_default;
  }
}

static proto_status reset_index(idx *ix, const char *factory) {
  FaissIndex *fresh = NULL;
  proto_status s = make_index(factory, ix->dim, ix->metric, &fresh);
  if (s != PROTO_OK) return s;
  if (factory != ix->factory) {
    char *copy = strdup(factory);
    if (!copy) {
      faiss_Index_free(fresh);
      return proto_fail(PROTO_ENOMEM, "out of memory");
    }
    free(ix->factory);
    ix->factory = copy;
  }
  if (ix->main) faiss_Index_free(ix->main);
  if (ix->pending) faiss_Index_free(ix->pending);
  ix->main = fresh;
  ix->pending = NULL;
  ix->codes_stale = ix->ivf_codes_stale = 1;
  ix->added_upto = 0;
  ix->n_dead = 0;
  describe(ix);
  return PROTO_OK;
}

/* Live vectors the store must hold before an untrained index trains. */
static uint64_t train_base(const idx *ix) {
  size_t base = ix->kind == KIND_IVF ? ix->nlist : 256;
  if (ix->kind == KIND_IVF && strstr(ix->factory, "PQ") && base < 256) base = 256;
  return base;
}

/* Sync ------------------------------------------------------------------------ */

typedef struct add_ctx {
  FaissIndex *target;
  uint64_t last;
  proto_status err;
} add_ctx;

static proto_status add_batch(void *ctx, const uint64_t *ids, const float *vectors, size_t n) {
  add_ctx *a = ctx;
  if (n == 0) return PROTO_OK;
  /* chunk ids start at 1 and are far below INT64_MAX: uint64 -> idx_t is exact */
  if (faiss_Index_add_with_ids(a->target, (idx_t)n, vectors, (const idx_t *)ids)) {
    a->err = faiss_fail("add");
    return PROTO_EINDEX;
  }
  a->last = ids[n - 1];
  return PROTO_OK;
}

static proto_status ensure_pending(idx *ix) {
  if (ix->pending) return PROTO_OK;
  if (faiss_index_factory(&ix->pending, (int)ix->dim, "IDMap,Flat", faiss_metric(ix->metric)))
    return faiss_fail("pending index");
  ix->added_upto = 0;
  return PROTO_OK;
}

static proto_status train(idx *ix, uint64_t live) {
  float *sample = NULL;
  size_t n = 0;
  uint64_t want = train_base(ix) * 64;
  proto_status s = store_vectors_sample(ix->st, (size_t)(want < live ? want : live), &sample, &n);
  if (s != PROTO_OK) return store_fail(s, "training sample");
  if (faiss_Index_train(ix->main, (idx_t)n, sample)) s = faiss_fail("train");
  free(sample);
  if (s != PROTO_OK) return s;
  if (ix->pending) faiss_Index_free(ix->pending);
  ix->pending = NULL;
  ix->codes_stale = ix->ivf_codes_stale = 1;
  ix->added_upto = 0; /* the trained index takes every live vector */
  return PROTO_OK;
}

static proto_status add_dead(idx *ix, const uint64_t *ids, size_t n) {
  if (ix->n_dead + n > ix->cap_dead) {
    size_t cap = (ix->n_dead + n) * 2;
    uint64_t *d = realloc(ix->dead, cap * sizeof *d);
    if (!d) return proto_fail(PROTO_ENOMEM, "out of memory");
    ix->dead = d;
    ix->cap_dead = cap;
  }
  memcpy(ix->dead + ix->n_dead, ids, n * sizeof *ids);
  ix->n_dead += n;
  qsort(ix->dead, ix->n_dead, sizeof *ix->dead, cmp_u64);
  size_t w = 0;
  for (size_t i = 0; i < ix->n_dead; i++)
    if (w == 0 || ix->dead[w - 1] != ix->dead[i]) ix->dead[w++] = ix->dead[i];
  ix->n_dead = w;
  return PROTO_OK;
}

/* The sizes of main's lists before a removal (NULL when no list codes are
 * kept, or without memory: the codes are then marked stale). */
static size_t *ivf_list_sizes(idx *ix) {
  FaissIVFFlatView v;
  if (!ix->list_codes || ix->ivf_codes_of != ix->main || !faiss_Index_ivf_flat_view(ix->main, &v) ||
      v.nlist != ix->n_list_codes)
    return NULL;
  size_t *sizes = malloc(v.nlist * sizeof *sizes);
  if (!sizes) {
    ix->ivf_codes_stale = 1;
    return NULL;
  }
  for (size_t i = 0; i < v.nlist; i++) sizes[i] = faiss_IVFFlatView_list_len(&v, i);
  return sizes;
}

/* After a removal: FAISS filled each removed row's slot with its list's
 * last row, so the codes of every list whose size changed are cleared
 * (ivf_codes_refresh makes them again). */
static void ivf_codes_follow_removal(idx *ix, const size_t *before) {
  FaissIVFFlatView v;
  if (!before) return;
  if (!faiss_Index_ivf_flat_view(ix->main, &v) || v.nlist != ix->n_list_codes) {
    ix->ivf_codes_stale = 1;
    return;
  }
  for (size_t i = 0; i < v.nlist; i++)
    if (faiss_IVFFlatView_list_len(&v, i) != before[i]) nib_codes_clear(ix->list_codes[i]);
}

/* The codes follow a removal by dropping the same rows (FAISS's flat indexes
 * compact keeping the order), not by being made again (see the file
 * comment). codes_keep_mask, before the removal: which of the active
 * index's *rows rows stay (ids sorted), or NULL when the codes are not in
 * step (they are then made again by codes_refresh). */
static uint8_t *codes_keep_mask(idx *ix, FaissIndex *active, const uint64_t *ids, size_t n,
                                size_t *rows) {
  const float *xb;
  const idx_t *row_ids;
  *rows = 0;
  if (!ix->codes || ix->codes_stale || ix->codes_of != active ||
      !faiss_Index_flat_view(active, &xb, &row_ids, rows) || !row_ids || *rows == 0)
    return NULL;
  uint8_t *keep = malloc(*rows);
  if (!keep) return NULL;
  for (size_t r = 0; r < *rows; r++) keep[r] = !u64_in(ids, n, (uint64_t)row_ids[r]);
  return keep;
}

/* After the removal of `removed` of the `before` rows: drops them from the
 * codes, then checks a few rows against the floats; anything unexpected
 * marks the codes stale (made again by codes_refresh). */
static void codes_compact(idx *ix, FaissIndex *active, const uint8_t *keep, size_t before,
                          size_t removed) {
  const float *xb;
  const idx_t *row_ids;
  size_t rows, gone = 0, have = flat_codes_rows(ix->codes);
  if (!keep || removed == 0 || have > before) {
    ix->codes_stale |= removed > 0 || !keep;
    return;
  }
  for (size_t r = 0; r < before; r++) gone += !keep[r];
  size_t left = flat_codes_keep(ix->codes, keep);
  int ok = gone == removed && faiss_Index_flat_view(active, &xb, &row_ids, &rows) &&
           rows == before - removed && left <= rows;
  for (size_t i = 0; ok && i < 8 && left > 0; i++) {
    size_t r = i * (left - 1) / 7;
    ok = flat_codes_row_matches(ix->codes, r, xb + r * ix->dim);
  }
  if (!ok) ix->codes_stale = 1;
}

/* Removes ids from the active index, or records them dead when it cannot. */
static proto_status remove_ids(idx *ix, const uint64_t *ids, size_t n) {
  FaissIndex *active = ix->pending ? ix->pending : ix->main;
  if (n == 0) return PROTO_OK;
  if (active == ix->main && !ix->can_remove) return add_dead(ix, ids, n);
  FaissIDSelectorBatch *sel = NULL;
  size_t removed = 0;
  if (faiss_IDSelectorBatch_new(&sel, n, (const idx_t *)ids)) return faiss_fail("id selector");
  size_t before;
  uint8_t *keep = codes_keep_mask(ix, active, ids, n, &before);
  size_t *list_sizes = active == ix->main ? ivf_list_sizes(ix) : NULL;
  int rc = faiss_Index_remove_ids(active, (const FaissIDSelector *)sel, &removed);
  faiss_IDSelector_free((FaissIDSelector *)sel);
  codes_compact(ix, active, keep, before, rc == 0 ? removed : 0);
  ivf_codes_follow_removal(ix, list_sizes);
  free(keep);
  free(list_sizes);
  if (rc == 0) return PROTO_OK;
  if (active == ix->pending) return faiss_fail("remove");
  ix->can_remove = 0; /* this index type cannot remove: filter instead */
  return add_dead(ix, ids, n);
}

/* Trains when due, adds vectors past added_upto, applies new tombstones. */
static proto_status catch_up(idx *ix) {
  store_stats stats;
  uint64_t *tomb = NULL, *gone = NULL;
  size_t n_tomb = 0, n_gone = 0;
  proto_status s = store_stats_get(ix->st, &stats);
  if (s != PROTO_OK) return store_fail(s, "store stats");
  if (stats.dim && stats.dim != ix->dim)
    return proto_fail(PROTO_EDIM, "store holds %u-d vectors, index is %u-d", stats.dim, ix->dim);
  if (!faiss_Index_is_trained(ix->main)) {
    if (stats.chunks >= 39 * train_base(ix)) {
      if ((s = train(ix, stats.chunks)) != PROTO_OK) return s;
    } else if ((s = ensure_pending(ix)) != PROTO_OK) {
      return s;
    }
  }
  /* Tombstones first: an id deleted before the scan is not added by it, so
   * only ids at or below the pre-scan mark can be in the index. */
  s = store_tombstones(ix->st, &tomb, &n_tomb);
  if (s != PROTO_OK) return store_fail(s, "tombstones");
  uint64_t before = ix->added_upto;
  add_ctx a = {ix->pending ? ix->pending : ix->main, before, PROTO_OK};
  s = store_vectors_scan(ix->st, before, SCAN_BATCH, add_batch, &a);
  ix->added_upto = a.last;
  if (s != PROTO_OK) {
    if (a.err == PROTO_OK) store_fail(s, "vector scan");
    goto leave;
  }
  gone = malloc((n_tomb ? n_tomb : 1) * sizeof *gone);
  if (!gone) {
    s = proto_fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  for (size_t i = 0; i < n_tomb; i++)
    if (tomb[i] <= before && !u64_in(ix->applied, ix->n_applied, tomb[i])) gone[n_gone++] = tomb[i];
  if ((s = remove_ids(ix, gone, n_gone)) != PROTO_OK) goto leave;
  free(ix->applied);
  ix->applied = tomb; /* ascending (store contract) */
  ix->n_applied = n_tomb;
  tomb = NULL;
leave:
  free(tomb);
  free(gone);
  return s;
}

static proto_status put_meta(idx *ix) {
  proto_status s = store_meta_put(ix->st, "index_factory", ix->factory);
  if (s == PROTO_OK) s = store_meta_put(ix->st, "index_factory_auto", ix->auto_factory ? "1" : "0");
  if (s == PROTO_OK)
    s = store_meta_put(ix->st, "index_metric", ix->metric == IDX_METRIC_L2 ? "l2" : "ip");
  if (s != PROTO_OK) return store_fail(s, "index meta");
  return PROTO_OK;
}

static proto_status rebuild_locked(idx *ix, const char *factory) {
  proto_status s = reset_index(ix, factory);
  if (s == PROTO_OK) s = put_meta(ix);
  if (s == PROTO_OK) s = catch_up(ix);
  return s;
}

static proto_status sync_locked(idx *ix) {
  proto_status s;
  if (ix->auto_factory) {
    store_stats stats;
    char want[64];
    if ((s = store_stats_get(ix->st, &stats)) != PROTO_OK) return store_fail(s, "store stats");
    auto_factory(ix, stats.chunks, want, sizeof want);
    int upgrade = 0;
    if (strcmp(want, "Flat") != 0) {
      if (ix->kind != KIND_IVF) upgrade = 1;
      else if (auto_nlist(stats.chunks) >= 2 * ix->nlist) upgrade = 1;
    }
    if (upgrade) return rebuild_locked(ix, want);
  }
  if ((s = catch_up(ix)) != PROTO_OK) return s;
  uint64_t ntotal = (uint64_t)faiss_Index_ntotal(ix->main);
  if (!ix->pending && ix->n_dead >= 16 && ix->n_dead * 4 > ntotal)
    return rebuild_locked(ix, ix->factory);
  return PROTO_OK;
}

/* File ------------------------------------------------------------------------ */

static const char MAGIC[8] = {'R', 'E', 'T', 'R', 'O', 'I', 'X', '1'};
static const char END[8] = {'R', 'E', 'T', 'R', 'O', 'E', 'N', 'D'};

typedef struct file_head {
  char magic[8];
  uint64_t watermark;
  uint64_t blob_len; /* FAISS index bytes */
  uint32_t dim;
  uint32_t metric;
  uint32_t factory_len;
  uint32_t reserved;
} file_head;

static int write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t w = write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

static proto_status dir_fsync(const char *path) {
  char *dir = strdup(path);
  if (!dir) return proto_fail(PROTO_ENOMEM, "out of memory");
  char *slash = strrchr(dir, '/');
  if (!slash) strcpy(dir, ".");
  else if (slash == dir) slash[1] = 0;
  else *slash = 0;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  proto_status s = PROTO_OK;
  if (fd < 0 || fsync(fd) != 0) s = proto_fail(PROTO_EIO, "fsync %s: %s", dir, strerror(errno));
  if (fd >= 0) close(fd);
  free(dir);
  return s;
}

/* Writes main (holding every live id <= watermark) to path atomically. */
static proto_status write_file(idx *ix, uint64_t watermark) {
  char *blob = NULL, *tmp = NULL;
  size_t blob_len = 0;
  int fd = -1;
  proto_status s = PROTO_OK;
  FILE *mf = open_memstream(&blob, &blob_len);
  if (!mf) return proto_fail(PROTO_ENOMEM, "open_memstream: %s", strerror(errno));
  int rc = faiss_write_index(ix->main, mf);
  if (fclose(mf) != 0 && rc == 0) {
    s = proto_fail(PROTO_ENOMEM, "serialising the index");
    goto leave;
  }
  if (rc) {
    s = faiss_fail("write index");
    goto leave;
  }

  file_head h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, MAGIC, sizeof MAGIC);
  h.watermark = watermark;
  h.blob_len = blob_len;
  h.dim = ix->dim;
  h.metric = (uint32_t)ix->metric;
  h.factory_len = (uint32_t)strlen(ix->factory);
  uint64_t sum = proto_fnv1a64(PROTO_FNV_INIT, &h, sizeof h);
  sum = proto_fnv1a64(sum, ix->factory, h.factory_len);
  sum = proto_fnv1a64(sum, blob, blob_len);

  size_t plen = strlen(ix->path) + 5;
  if (!(tmp = malloc(plen))) {
    s = proto_fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  snprintf(tmp, plen, "%s.tmp", ix->path);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    s = proto_fail(PROTO_EIO, "open %s: %s", tmp, strerror(errno));
    goto leave;
  }
  if (write_all(fd, &h, sizeof h) || write_all(fd, ix->factory, h.factory_len) ||
      write_all(fd, blob, blob_len) || write_all(fd, &sum, sizeof sum) ||
      write_all(fd, END, sizeof END) || fsync(fd) != 0) {
    s = proto_fail(PROTO_EIO, "write %s: %s", tmp, strerror(errno));
    goto leave;
  }
  if (close(fd) != 0) {
    fd = -1;
    s = proto_fail(PROTO_EIO, "close %s: %s", tmp, strerror(errno));
    goto leave;
  }
  fd = -1;
  if (rename(tmp, ix->path) != 0) {
    s = proto_fail(PROTO_EIO, "rename %s: %s", tmp, strerror(errno));
    goto leave;
  }
  s = dir_fsync(ix->path);
leave:
  if (fd >= 0) close(fd);
  if (s != PROTO_OK && tmp) unlink(tmp);
  free(tmp);
  free(blob);
  return s;
}

/* Loads path into *out when it is whole and made for this factory, metric and
 * dim. Returns 0 when loaded, -1 when absent or unusable (idx_last_error says why). */
static int read_file(idx *ix, FaissIndex **out, uint64_t *watermark) {
  char *buf = NULL;
  FaissIndex *loaded = NULL;
  int ok = -1;
  struct stat sb;
  int fd = open(ix->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    proto_fail(PROTO_EIO, "open %s: %s", ix->path, strerror(errno));
    goto leave;
  }
  if (fstat(fd, &sb) != 0 || sb.st_size < (off_t)(sizeof(file_head) + 16)) {
    proto_fail(PROTO_ECORRUPT, "%s: too short", ix->path);
    goto leave;
  }
  size_t size = (size_t)sb.st_size;
  if (!(buf = malloc(size))) {
    proto_fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  for (size_t got = 0; got < size;) {
    ssize_t r = read(fd, buf + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      proto_fail(PROTO_EIO, "read %s", ix->path);
      goto leave;
    }
    got += (size_t)r;
  }
  file_head h;
  memcpy(&h, buf, sizeof h);
  if (memcmp(h.magic, MAGIC, sizeof MAGIC) != 0 || h.factory_len > 4096 || h.blob_len > size ||
      sizeof h + h.factory_len + h.blob_len + 16 != size || memcmp(buf + size - 8, END, 8) != 0) {
    proto_fail(PROTO_ECORRUPT, "%s: not a whole index file", ix->path);
    goto leave;
  }
  uint64_t sum;
  memcpy(&sum, buf + size - 16, sizeof sum);
  if (proto_fnv1a64(PROTO_FNV_INIT, buf, size - 16) != sum) {
    proto_fail(PROTO_ECORRUPT, "%s: checksum mismatch", ix->path);
    goto leave;
  }
  const char *factory = buf + sizeof h;
  if (h.dim != ix->dim || h.metric != (uint32_t)ix->metric ||
      h.factory_len != strlen(ix->factory) || memcmp(factory, ix->factory, h.factory_len) != 0) {
    proto_fail(PROTO_EMISMATCH, "%s: made for another factory, metric or dimension", ix->path);
    goto leave;
  }
  FILE *mf = fmemopen(buf + sizeof h + h.factory_len, h.blob_len, "rb");
  if (!mf) {
    proto_fail(PROTO_ENOMEM, "fmemopen: %s", strerror(errno));
    goto leave;
  }
  int rc = faiss_read_index(mf, 0, &loaded);
  fclose(mf);
  if (rc) {
    faiss_fail("read index");
    loaded = NULL;
    goto leave;
  }
  if (faiss_Index_d(loaded) != (int)ix->dim ||
      faiss_Index_metric_type(loaded) != faiss_metric(ix->metric)) {
    proto_fail(PROTO_ECORRUPT, "%s: index header disagrees", ix->path);
    goto leave;
  }
  *out = loaded;
  loaded = NULL;
  *watermark = h.watermark;
  ok = 0;
leave:
  if (loaded) faiss_Index_free(loaded);
  if (fd >= 0) close(fd);
  free(buf);
  return ok;
}

proto_status idx_file_info(const char *path, uint64_t *watermark, uint64_t *ntotal, uint32_t *dim) {
  char *buf = NULL;
  FaissIndex *loaded = NULL;
  proto_status s;
  struct stat sb;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    s = proto_fail(errno == ENOENT ? PROTO_ENOTFOUND : PROTO_EIO, "%s: %s", path, strerror(errno));
    goto leave;
  }
  if (fstat(fd, &sb) != 0 || sb.st_size < (off_t)(sizeof(file_head) + 16)) {
    s = proto_fail(PROTO_ECORRUPT, "%s: too short", path);
    goto leave;
  }
  size_t size = (size_t)sb.st_size;
  if (!(buf = malloc(size))) {
    s = proto_fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  for (size_t got = 0; got < size;) {
    ssize_t r = read(fd, buf + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      s = proto_fail(PROTO_EIO, "read %s", path);
      goto leave;
    }
    got += (size_t)r;
  }
  file_head h;
  memcpy(&h, buf, sizeof h);
  uint64_t sum;
  memcpy(&sum, buf + size - 16, sizeof sum);
  if (memcmp(h.magic, MAGIC, sizeof MAGIC) != 0 || h.factory_len > 4096 || h.blob_len > size ||
      sizeof h + h.factory_len + h.blob_len + 16 != size || memcmp(buf + size - 8, END, 8) != 0) {
    s = proto_fail(PROTO_ECORRUPT, "%s: not a whole index file", path);
    goto leave;
  }
  if (proto_fnv1a64(PROTO_FNV_INIT, buf, size - 16) != sum) {
    s = proto_fail(PROTO_ECORRUPT, "%s: checksum mismatch", path);
    goto leave;
  }
  FILE *mf = fmemopen(buf + sizeof h + h.factory_len, h.blob_len, "rb");
  if (!mf) {
    s = proto_fail(PROTO_ENOMEM, "fmemopen: %s", strerror(errno));
    goto leave;
  }
  int rc = faiss_read_index(mf, 0, &loaded);
  fclose(mf);
  if (rc) {
    s = faiss_fail("read index");
    loaded = NULL;
    goto leave;
  }
  *watermark = h.watermark;
  *ntotal = (uint64_t)faiss_Index_ntotal(loaded);
  *dim = h.dim;
  s = PROTO_OK;
leave:
  if (loaded) faiss_Index_free(loaded);
  if (fd >= 0) close(fd);
  free(buf);
  return s;
}

static proto_status save_locked(idx *ix) {
  proto_status s = sync_locked(ix);
  if (s != PROTO_OK) return s;
  int trained = faiss_Index_is_trained(ix->main);
  uint64_t watermark = trained ? ix->added_upto : 0;
  if ((s = write_file(ix, watermark)) != PROTO_OK) return s;
  /* Tombstones of ids still held by an index that cannot remove stay in the
   * store so the dead set comes back at open. */
  uint64_t *applied = malloc((ix->n_applied ? ix->n_applied : 1) * sizeof *applied);
  size_t n = 0;
  if (!applied) return proto_fail(PROTO_ENOMEM, "out of memory");
  for (size_t i = 0; i < ix->n_applied; i++)
    if (!u64_in(ix->dead, ix->n_dead, ix->applied[i])) applied[n++] = ix->applied[i];
  s = store_index_mark(ix->st, watermark, applied, n);
  free(applied);
  if (s != PROTO_OK) return store_fail(s, "index mark");
  /* The marked tombstones are gone from the store; the kept ones remain known. */
  size_t w = 0;
  for (size_t i = 0; i < ix->n_applied; i++)
    if (u64_in(ix->dead, ix->n_dead, ix->applied[i])) ix->applied[w++] = ix->applied[i];
  ix->n_applied = w;
  return PROTO_OK;
}

/* Brings the int8 codes in step with the active index's rows when it is
 * flat and large enough, else drops them. Called under the write lock at the
 * end of every change (after_change). Without memory for them searches scan
 * the floats. */
static void codes_refresh(idx *ix) {
  FaissIndex *active = ix->pending ? ix->pending : ix->main;
  const float *xb;
  const idx_t *row_ids;
  size_t rows = 0;
  int flat = !ix->plain_scan && faiss_Index_flat_view(active, &xb, &row_ids, &rows);
  if (flat && rows * ix->dim >= ix->codes_min_floats &&
      (ix->codes || flat_codes_new(ix->dim, &ix->codes) == PROTO_OK)) {
    if (ix->codes_stale || ix->codes_of != active || flat_codes_rows(ix->codes) > rows)
      flat_codes_clear(ix->codes);
    size_t have = flat_codes_rows(ix->codes);
    if (flat_codes_append(ix->codes, xb + have * ix->dim, rows - have) == PROTO_OK) {
      ix->codes_of = active;
      ix->codes_stale = 0;
      return;
    }
  }
  flat_codes_free(ix->codes);
  ix->codes = NULL;
  ix->codes_of = NULL;
}

static void ivf_codes_drop(idx *ix) {
  nib_codes_free(ix->centroid_codes);
  for (size_t i = 0; i < ix->n_list_codes; i++) nib_codes_free(ix->list_codes[i]);
  free(ix->list_codes);
  ix->centroid_codes = NULL;
  ix->list_codes = NULL;
  ix->n_list_codes = 0;
  ix->ivf_codes_of = NULL;
}

/* The IVFFlat view of main when 4-bit codes are kept for it: trained, not
 * waiting on a pending index, large enough to pay (codes_min_floats). */
static int ivf_codes_wanted(const idx *ix, FaissIVFFlatView *v) {
  return !ix->plain_scan && !ix->pending && ix->kind == KIND_IVF &&
         faiss_Index_is_trained(ix->main) && faiss_Index_ivf_flat_view(ix->main, v) &&
         (uint64_t)faiss_Index_ntotal(ix->main) * ix->dim >= ix->codes_min_floats;
}

/* Brings list i's codes up to the list's rows: they are appended to (a
 * list grows at its end), or made again when the list is shorter than its
 * codes. 0 without memory. */
static int list_codes_catch_up(idx *ix, const FaissIVFFlatView *v, size_t i) {
  const float *rows;
  const idx_t *ids;
  size_t n;
  faiss_IVFFlatView_list(v, i, &rows, &ids, &n);
  if (!ix->list_codes[i] && nib_codes_new(ix->dim, &ix->list_codes[i]) != PROTO_OK) return 0;
  if (nib_codes_rows(ix->list_codes[i]) > n) nib_codes_clear(ix->list_codes[i]);
  size_t have = nib_codes_rows(ix->list_codes[i]);
  return nib_codes_append(ix->list_codes[i], rows + have * ix->dim, n - have,
                          v->centroids + i * ix->dim) == PROTO_OK;
}

/* Keeps 4-bit codes of an IVFFlat main's centroids and lists (ivf_scan_nib
 * reads those instead of the floats: an eighth of the bytes), else drops them.
 * The centroids change only when main is trained or replaced
 * (ivf_codes_stale); a list only grows at its end between changes, as
 * FAISS appends, except on removals, which remove_ids follows (it clears
 * the codes of every list whose size changed). So each list's codes are
 * appended to; the rest is made again. Under the write lock, at the end of
 * every change. Without memory for them searches scan the floats. */
static void ivf_codes_refresh(idx *ix) {
  FaissIVFFlatView v;
  if (!ivf_codes_wanted(ix, &v)) {
    ivf_codes_drop(ix);
    return;
  }
  if (ix->ivf_codes_stale || ix->ivf_codes_of != ix->main || ix->n_list_codes != v.nlist) {
    ivf_codes_drop(ix);
    ix->list_codes = calloc(v.nlist, sizeof *ix->list_codes);
    if (!ix->list_codes || nib_codes_new(ix->dim, &ix->centroid_codes) != PROTO_OK ||
        nib_codes_append(ix->centroid_codes, v.centroids, v.nlist, NULL) != PROTO_OK) {
      ivf_codes_drop(ix);
      return;
    }
    ix->n_list_codes = v.nlist;
  }
  int ok = 1;
  for (size_t i = 0; ok && i < v.nlist; i++) ok = list_codes_catch_up(ix, &v, i);
  if (!ok) {
    ivf_codes_drop(ix);
    return;
  }
  ix->ivf_codes_of = ix->main;
  ix->ivf_codes_stale = 0;
}

/* Vectors of the main index not marked dead (under the lock). */
static uint64_t live_vectors(const idx *ix) {
  uint64_t n = (uint64_t)faiss_Index_ntotal(ix->main);
  return n > ix->n_dead ? n - ix->n_dead : 0;
}

/* The end of every change, under the write lock: the codes brought in step
 * and the searched size published for idx_floats. */
static void after_change(idx *ix) {
  codes_refresh(ix);
  ivf_codes_refresh(ix);
  uint64_t n = live_vectors(ix);
  if (ix->pending) n += (uint64_t)faiss_Index_ntotal(ix->pending);
  atomic_store(&ix->floats, n * ix->dim);
}

/* Public ------------------------------------------------------------------------ */

proto_status idx_open(const char *path, store *st, const idx_options *opt, idx **out) {
  idx *ix = NULL;
  char *meta_factory = NULL, *meta_auto = NULL, *meta_metric = NULL;
  char chosen[64];
  proto_status s = PROTO_OK;
  store_stats stats;
  if (!path || !st || !opt || !out) return proto_fail(PROTO_EINVAL, "idx_open: NULL argument");
  *out = NULL;
  if (opt->dim > PROTO_MAX_DIM) return proto_fail(PROTO_EINVAL, "dimension %u too large", opt->dim);
  if (opt->metric != IDX_METRIC_IP && opt->metric != IDX_METRIC_L2)
    return proto_fail(PROTO_EINVAL, "unknown metric %d", (int)opt->metric);
  if ((s = store_stats_get(st, &stats)) != PROTO_OK) return store_fail(s, "store stats");
  uint32_t dim = opt->dim ? opt->dim : stats.dim;
  if (dim == 0) return proto_fail(PROTO_EINVAL, "index dimension unknown (empty store, dim 0)");
  if (stats.dim && stats.dim != dim)
    return proto_fail(PROTO_EDIM, "store holds %u-d vectors, index asked for %u-d", stats.dim, dim);

  if (!(ix = calloc(1, sizeof *ix))) return proto_fail(PROTO_ENOMEM, "out of memory");
  /* Writer-preferring: with glibc's default (readers first) a steady stream
   * of searches starves idx_sync forever (seen in the concurrency test). */
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  int lock_rc = pthread_rwlock_init(&ix->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  if (lock_rc != 0) {
    free(ix);
    return proto_fail(PROTO_ENOMEM, "rwlock");
  }
  ix->st = st;
  ix->dim = dim;
  ix->metric = opt->metric;
  ix->nprobe_default = opt->nprobe;
  ix->ef_default = opt->ef_search > 0 ? opt->ef_search : 64;
  ix->plain_scan = opt->plain_scan != 0;
  ix->auto_flat_floats = opt->auto_flat_floats ? opt->auto_flat_floats : AUTO_FLAT_FLOATS;
  ix->codes_min_floats = opt->codes_min_floats ? opt->codes_min_floats : CODES_MIN_FLOATS;
  if (!(ix->path = strdup(path))) {
    s = proto_fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }

  if ((s = store_meta_get(st, "index_factory", &meta_factory)) != PROTO_OK ||
      (s = store_meta_get(st, "index_factory_auto", &meta_auto)) != PROTO_OK ||
      (s = store_meta_get(st, "index_metric", &meta_metric)) != PROTO_OK) {
    store_fail(s, "index meta");
    goto leave;
  }
  const char *factory;
  if (opt->factory && *opt->factory) {
    factory = opt->factory;
  } else if (meta_factory && *meta_factory) {
    factory = meta_factory;
    ix->auto_factory = meta_auto && strcmp(meta_auto, "1") == 0;
  } else {
    auto_factory(ix, stats.chunks, chosen, sizeof chosen);
    factory = chosen;
    ix->auto_factory = 1;
  }
  if ((s = reset_index(ix, factory)) != PROTO_OK) goto leave;
  if (!meta_factory || strcmp(meta_factory, ix->factory) != 0 || !meta_metric ||
      strcmp(meta_metric, ix->metric == IDX_METRIC_L2 ? "l2" : "ip") != 0 || !meta_auto ||
      (strcmp(meta_auto, "1") == 0) != ix->auto_factory) {
    if ((s = put_meta(ix)) != PROTO_OK) goto leave;
  }

  FaissIndex *loaded = NULL;
  uint64_t w_file = 0, w_store = 0;
  if ((s = store_index_watermark(st, &w_store)) != PROTO_OK) {
    store_fail(s, "index watermark");
    goto leave;
  }
  int rebuilt = 1;
  if (read_file(ix, &loaded, &w_file) == 0) {
    if (w_file >= w_store) {
      faiss_Index_free(ix->main);
      ix->main = loaded;
      ix->codes_stale = ix->ivf_codes_stale = 1;
      describe(ix);
      ix->added_upto = faiss_Index_is_trained(loaded) ? w_file : 0;
      rebuilt = 0;
    } else {
      faiss_Index_free(loaded);
    }
  }
  ix->rebuilt_at_open = rebuilt;
  pthread_rwlock_wrlock(&ix->lock);
  s = sync_locked(ix);
  /* Saving the repaired index spares the next start a rebuild; failing to
   * (a read-only data dir) is not fatal: the store still holds everything. */
  if (s == PROTO_OK && rebuilt) (void)save_locked(ix);
  after_change(ix);
  pthread_rwlock_unlock(&ix->lock);
  if (s != PROTO_OK) goto leave;
  *out = ix;
  ix = NULL;
leave:
  idx_close(ix);
  free(meta_factory);
  free(meta_auto);
  free(meta_metric);
  return s;
}

void idx_close(idx *ix) {
  if (!ix) return;
  if (ix->main) faiss_Index_free(ix->main);
  if (ix->pending) faiss_Index_free(ix->pending);
  flat_codes_free(ix->codes);
  ivf_codes_drop(ix);
  pthread_rwlock_destroy(&ix->lock);
  free(ix->dead);
  free(ix->applied);
  free(ix->factory);
  free(ix->path);
  free(ix);
}

/* op under the write lock, then the int8 codes brought in step. */
static proto_status write_locked(idx *ix, proto_status (*op)(idx *)) {
  pthread_rwlock_wrlock(&ix->lock);
  proto_status s = op(ix);
  after_change(ix);
  pthread_rwlock_unlock(&ix->lock);
  return s;
}

proto_status idx_sync(idx *ix) {
  if (!ix) return proto_fail(PROTO_EINVAL, "idx_sync: NULL index");
  return write_locked(ix, sync_locked);
}

proto_status idx_save(idx *ix) {
  if (!ix) return proto_fail(PROTO_EINVAL, "idx_save: NULL index");
  return write_locked(ix, save_locked);
}

proto_status idx_rebuild(idx *ix, const char *factory) {
  if (!ix) return proto_fail(PROTO_EINVAL, "idx_rebuild: NULL index");
  pthread_rwlock_wrlock(&ix->lock);
  int was_auto = ix->auto_factory;
  if (factory && *factory) ix->auto_factory = 0;
  proto_status s = rebuild_locked(ix, factory && *factory ? factory : ix->factory);
  if (s == PROTO_OK) s = save_locked(ix);
  else ix->auto_factory = was_auto;
  after_change(ix);
  pthread_rwlock_unlock(&ix->lock);
  return s;
}

/* Search ------------------------------------------------------------------------ */

/* The IVF lists a search visits: the request's nprobe, else the index's,
 * else the default (see the file comment), at most nlist. */
static size_t nprobe_for(const idx *ix, const idx_search_params *p) {
  int np = p && p->nprobe > 0 ? p->nprobe : ix->nprobe_default;
  size_t n = np > 0 ? (size_t)np : ix->nlist / 128 > 16 ? ix->nlist / 128 : 16;
  return n < ix->nlist ? n : ix->nlist;
}

static proto_status make_params(const idx *ix, const idx_search_params *p,
                                FaissSearchParameters **out) {
  *out = NULL;
  if (ix->kind == KIND_IVF) {
    FaissSearchParametersIVF *sp = NULL;
    if (faiss_SearchParametersIVF_new_with(&sp, NULL, nprobe_for(ix, p), 0))
      return faiss_fail("params");
    *out = (FaissSearchParameters *)sp;
  }
  return PROTO_OK;
}

/* The scan's CPU time is read from the thread's CPU clock: the monotonic
 * clock (32 ns a read) is no measure of CPU: on the default corpus under
 * load the workers' scans were preempted so often that their wall time
 * summed to 3.4x the whole process's CPU time. The CPU clock is a system
 * call, though (2.2 us a read on the benchmark VM), so it times every scan
 * only of an index of TIME_ALL_FLOATS or more (~150 us a scan there, which
 * the two reads raise by 3%; the default corpus's 11.4M floats: ~400 us),
 * and one search in SCAN_SAMPLE below (a 5k x 32 scan takes ~15 us).
 * Sampled one in 16, the default corpus's scans came out 5-13% above what
 * the workers' own CPU time allows (six runs under load). */
enum { SCAN_SAMPLE = 16 };
#define TIME_ALL_FLOATS 4000000u

static uint64_t thread_cpu_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t clock_cost;

/* What two reads of the thread's CPU clock add to the time between them:
 * the system calls' own time (1.3 us on the benchmark VM), the median of 31
 * empty intervals. */
static void measure_clock_cost(void) {
  uint64_t d[31];
  for (int i = 0; i < 31; i++) {
    uint64_t t0 = thread_cpu_ns();
    d[i] = thread_cpu_ns() - t0;
  }
  qsort(d, 31, sizeof *d, cmp_u64);
  clock_cost = d[15];
}

/* The thread's CPU nanoseconds since t0 (a thread_cpu_ns reading), less
 * the cost of reading the clock. */
static uint64_t cpu_ns_since(uint64_t t0) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  uint64_t d = thread_cpu_ns() - t0;
  pthread_once(&once, measure_clock_cost);
  return d > clock_cost ? d - clock_cost : 0;
}

/* Searches queries qsel[0..nsel) with fetch size kf, appending passing results
 * to the outputs; qsel is compacted to the queries still short of k. With
 * cpu_ns, the scan's CPU nanoseconds are added there (not the filter's). */
static proto_status search_round(const idx *ix, FaissIndex *active, const float *queries,
                                 size_t *qsel, size_t *nsel, int k, idx_t kf, idx_t ntotal,
                                 const idx_search_params *params, idx_filter_fn filter, void *fctx,
                                 float *scores, int64_t *ids, float *qbuf, float *dist, idx_t *lab,
                                 uint64_t *cpu_ns) {
  FaissSearchParameters *sp = NULL;
  proto_status s = PROTO_OK;
  size_t n = *nsel, still = 0;
  for (size_t i = 0; i < n; i++)
    memcpy(qbuf + i * ix->dim, queries + qsel[i] * ix->dim, ix->dim * sizeof(float));
  const float *xb;
  const idx_t *row_ids;
  size_t rows;
  FaissIVFFlatView ivf;
  uint64_t t0 = cpu_ns ? thread_cpu_ns() : 0;
  if (n <= FLAT_SCAN_MAX_QUERIES && faiss_Index_flat_view(active, &xb, &row_ids, &rows)) {
    const flat_codes *codes = ix->codes_of == active ? ix->codes : NULL;
    s = flat_scan_coded(codes, xb, row_ids, rows, ix->dim, qbuf, n, ix->metric == IDX_METRIC_L2,
                        (size_t)kf, dist, lab);
    if (s != PROTO_OK) return s;
  } else if (n <= FLAT_SCAN_MAX_QUERIES && active == ix->main && ix->kind == KIND_IVF &&
             faiss_Index_ivf_flat_view(active, &ivf)) {
    ivf_nib codes = {ix->centroid_codes, (const nib_codes *const *)ix->list_codes};
    s = ix->ivf_codes_of == active
            ? ivf_scan_nib(&ivf, &codes, ix->dim, qbuf, n, nprobe_for(ix, params), IVF_NIB_MARGIN,
                           (size_t)kf, dist, lab)
            : ivf_scan(&ivf, NULL, ix->dim, qbuf, n, nprobe_for(ix, params), (size_t)kf, dist, lab);
    if (s != PROTO_OK) return s;
  } else {
    if (active == ix->main && (s = make_params(ix, params, &sp)) != PROTO_OK) return s;
    int rc = sp ? faiss_Index_search_with_params(active, (idx_t)n, qbuf, kf, sp, dist, lab)
                : faiss_Index_search(active, (idx_t)n, qbuf, kf, dist, lab);
    if (sp) faiss_SearchParameters_free(sp);
    if (rc) return faiss_fail("search");
  }
  if (cpu_ns) *cpu_ns += cpu_ns_since(t0);
  for (size_t i = 0; i < n; i++) {
    size_t q = qsel[i];
    int got = 0, exhausted = kf >= ntotal;
    for (int j = 0; j < k; j++) {
      scores[q * (size_t)k + (size_t)j] = NAN;
      ids[q * (size_t)k + (size_t)j] = -1;
    }
    for (idx_t j = 0; j < kf; j++) {
      idx_t id = lab[i * (size_t)kf + (size_t)j];
      if (id < 0) {
        exhausted = 1;
        break;
      }
      if (got == k) break; /* before the filter: its store read would be wasted */
      if (u64_in(ix->dead, ix->n_dead, (uint64_t)id)) continue;
      if (filter && !filter(fctx, id)) continue;
      scores[q * (size_t)k + (size_t)got] = dist[i * (size_t)kf + (size_t)j];
      ids[q * (size_t)k + (size_t)got] = id;
      got++;
    }
    if (got < k && !exhausted) qsel[still++] = q;
  }
  *nsel = still;
  return PROTO_OK;
}

proto_status idx_search(idx *ix, const float *queries, size_t nq, int k,
                        const idx_search_params *params, idx_filter_fn filter, void *filter_ctx,
                        float *scores, int64_t *ids) {
  size_t *qsel = NULL;
  float *qbuf = NULL, *dist = NULL;
  idx_t *lab = NULL;
  int threads_before = 0;
  uint64_t cpu_ns = 0;
  int timed = 0;
  proto_status s = PROTO_OK;
  if (!ix || (!queries && nq) || !scores || !ids)
    return proto_fail(PROTO_EINVAL, "idx_search: NULL argument");
  if (k < 1 || k > PROTO_MAX_K)
    return proto_fail(PROTO_ERANGE, "k = %d outside 1..%d", k, PROTO_MAX_K);
  if ((params && (params->nprobe < 0 || params->ef_search < 0)))
    return proto_fail(PROTO_ERANGE, "negative nprobe or ef_search");
  for (size_t i = 0; i < nq * (size_t)k; i++) {
    scores[i] = NAN;
    ids[i] = -1;
  }
  if (nq == 0) return PROTO_OK;

  pthread_rwlock_rdlock(&ix->lock);
  /* HNSW's efSearch lives in the index (FAISS 1.7.3 ignores it in search
   * parameters): a search asking for another value than the one set takes
   * the lock exclusively to change it; searches at the current value run
   * concurrently. */
  if (ix->kind == KIND_HNSW && !ix->pending) {
    int ef = params && params->ef_search > 0 ? params->ef_search : ix->ef_default;
    if (ef != ix->ef_current) {
      pthread_rwlock_unlock(&ix->lock);
      pthread_rwlock_wrlock(&ix->lock);
      if (ix->kind == KIND_HNSW) {
        faiss_IndexHNSW_set_efSearch(faiss_IndexHNSW_cast(core_of(ix->main)), ef);
        ix->ef_current = ef;
      }
    }
  }
  FaissIndex *active = ix->pending ? ix->pending : ix->main;
  idx_t ntotal = faiss_Index_ntotal(active);
  if (ntotal == 0) goto leave;
  /* First fetch: k, plus room for the expected share of dead ids (HNSW)
   * and of filtered ones; later rounds fetch 4x more for short queries. */
  idx_t kf = k;
  if (ix->n_dead)
    kf += k + (idx_t)(2.0 * k * (double)ix->n_dead / (double)((uint64_t)ntotal - ix->n_dead + 1));
  if (filter) kf += k;
  if (kf > ntotal) kf = ntotal;
  qsel = malloc(nq * sizeof *qsel);
  qbuf = malloc(nq * ix->dim * sizeof *qbuf);
  if (!qsel || !qbuf) {
    s = proto_fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  for (size_t i = 0; i < nq; i++) qsel[i] = i;
  size_t nsel = nq;
  timed = atomic_fetch_add(&ix->scans, 1) % SCAN_SAMPLE == 0 ||
          (uint64_t)ntotal * ix->dim >= TIME_ALL_FLOATS;
  /* FAISS parallelises over queries (and IDMap's label translation); with
   * fewer queries than threads the extra OpenMP threads only spin, which
   * under concurrent searches from server workers costs far more than the
   * search. Use at most one thread per query, in this thread only. */
  threads_before = omp_get_max_threads();
  if ((size_t)threads_before > nq) omp_set_num_threads((int)nq);
  while (nsel > 0) {
    free(dist);
    free(lab);
    dist = malloc(nsel * (size_t)kf * sizeof *dist);
    lab = malloc(nsel * (size_t)kf * sizeof *lab);
    if (!dist || !lab) {
      s = proto_fail(PROTO_ENOMEM, "out of memory");
      goto leave;
    }
    s = search_round(ix, active, queries, qsel, &nsel, k, kf, ntotal, params, filter, filter_ctx,
                     scores, ids, qbuf, dist, lab, timed ? &cpu_ns : NULL);
    if (s != PROTO_OK) goto leave;
    if (kf >= ntotal) break;
    kf = kf * 4 < ntotal ? kf * 4 : ntotal;
  }
  if (timed) {
    atomic_fetch_add(&ix->timed_scans, 1);
    atomic_fetch_add(&ix->timed_cpu_ns, cpu_ns);
  }
leave:
  if (threads_before > 0) omp_set_num_threads(threads_before);
  pthread_rwlock_unlock(&ix->lock);
  free(qsel);
  free(qbuf);
  free(dist);
  free(lab);
  return s;
}

uint64_t idx_floats(idx *ix) { return ix ? atomic_load(&ix->floats) : 0; }

proto_status idx_info_get(idx *ix, idx_info *out) {
  if (!ix || !out) return proto_fail(PROTO_EINVAL, "idx_info_get: NULL argument");
  memset(out, 0, sizeof *out);
  pthread_rwlock_rdlock(&ix->lock);
  snprintf(out->factory, sizeof out->factory, "%s", ix->factory);
  out->metric = ix->metric;
  out->dim = ix->dim;
  out->trained = faiss_Index_is_trained(ix->main);
  out->ntotal = live_vectors(ix);
  out->pending = ix->pending ? (uint64_t)faiss_Index_ntotal(ix->pending) : 0;
  out->watermark = out->trained ? ix->added_upto : 0;
  out->rebuilt_at_open = ix->rebuilt_at_open;
  FaissIndex *active = ix->pending ? ix->pending : ix->main;
  if (ix->codes_of == active) out->code_rows = flat_codes_rows(ix->codes);
  if (ix->ivf_codes_of == active) {
    out->code_rows = nib_codes_rows(ix->centroid_codes);
    for (size_t i = 0; i < ix->n_list_codes; i++)
      out->code_rows += nib_codes_rows(ix->list_codes[i]);
  }
  pthread_rwlock_unlock(&ix->lock);
  out->scans = atomic_load(&ix->scans);
  out->timed_scans = atomic_load(&ix->timed_scans);
  out->timed_scan_cpu_seconds = (double)atomic_load(&ix->timed_cpu_ns) * 1e-9;
  return PROTO_OK;
}
