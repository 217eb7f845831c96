/* store.c - the LMDB chunk store behind store.h.
 *
 * What it does: keeps documents, chunks (token ids + text), embeddings,
 * tombstones and a few counters in one LMDB environment (DIR/db), with every
 * write in one durable write transaction, growing the map on MDB_MAP_FULL and
 * retrying, and serving any number of concurrent readers.
 * What it does not: tokenise, embed, validate metadata JSON or touch FAISS.
 *
 * Record layouts (integers little-endian unless said otherwise):
 *   keys of docs, chunks, vectors, dead: the id as 8 bytes big-endian, so
 *     cursor order is id order and appends are always at the end;
 *   docs:     first_chunk u64 | n_chunks u32 | id_len u32 | meta_len u32 |
 *             id bytes | metadata JSON bytes
 *   doc_keys: key = external id (ids longer than LMDB's key limit: a prefix,
 *             a NUL and a 16-byte hash; the full id in docs decides) ->
 *             doc id u64 big-endian
 *   chunks:   doc_id u64 | ordinal u32 | n_tokens u32 | text_len u32 |
 *             tokens i32 x n_tokens | text bytes
 *   vectors:  dim floats in host byte order
 *   doc_hash: key = doc id u64 big-endian -> the 32-byte content hash the
 *             writer gave (absent for documents written without one, e.g. by
 *             a build before content hashes)
 *   dead:     empty values
 *   meta:     string values (reserved keys below hold decimal numbers).
 *
 * Locking: LMDB forbids mdb_env_set_mapsize() while this process has any
 * transaction open, so every transaction runs under map_lock held shared and
 * resizing takes it exclusive. The lock prefers writers (a resize does not
 * starve behind a stream of readers) and is re-entrant per thread for shared
 * holders, so a vectors-scan callback may call the read functions. Writers of
 * this process queue on write_lock before LMDB's own writer lock. The env is
 * opened with MDB_NOTLS: reader slots belong to transactions, not threads.
 */
#include "store.h"

#include <lmdb.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

enum {
  STORE_SCHEMA = 1,
  HELD_MAX = 16,      /* stores one thread may hold read locks on */
  WRITE_RETRIES = 48, /* map growths one write may trigger */
  READERS_FULL_WAIT_MS = 10000,
  CHUNK_HDR = 20,
  DOC_HDR = 20,
  HASHED_KEY_TAIL = 17, /* NUL + 16-byte hash */
};
#define DEFAULT_MAP_BYTES ((size_t)64 << 20)
#define MAX_TEXT_BYTES ((size_t)1 << 30)
#define GROW_STEP_MAX ((size_t)16 << 30)

/* Reserved meta keys: written only by this file. */
static const char K_SCHEMA[] = "schema";
static const char K_DIM[] = "dim";
static const char K_NEXT_DOC[] = "next_doc_id";
static const char K_NEXT_CHUNK[] = "next_chunk_id";
static const char K_WATERMARK[] = "index_watermark";

struct store {
  MDB_env *env;
  MDB_dbi meta, docs, doc_keys, chunks, vectors, dead, doc_hash;
  unsigned maxkey;
  size_t max_map;            /* 0: the map grows without limit */
  pthread_rwlock_t map_lock; /* shared: a txn is open; exclusive: resizing */
  pthread_mutex_t write_lock;
  int locks_ready;
  int read_only; /* opened with MDB_RDONLY (store_options.read_only_fallback) */
};

/* Errors ----------------------------------------------------------------- */

const char *store_last_error(void) { return proto_err_get(); }

/* Records "what: mdb_strerror(rc)" and maps rc onto a proto status. */
static proto_status mdb_fail(int rc, const char *what) {
  proto_err_set("store: %s: %s", what, mdb_strerror(rc));
  switch (rc) {
    case MDB_NOTFOUND:
      return PROTO_ENOTFOUND;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_BAD_DBI:
      return PROTO_ECORRUPT;
    case ENOMEM:
      return PROTO_ENOMEM;
    case ENOSPC:
    case EDQUOT:
      proto_err_set("store: %s: the disk is full (%s)", what, mdb_strerror(rc));
      return PROTO_ENOSPACE;
    case MDB_MAP_FULL:
      proto_err_set("store: %s: the LMDB map is full", what);
      return PROTO_ENOSPACE;
    case EIO:
    case EROFS:
    case EACCES:
    case EPERM:
      return PROTO_EIO;
    default:
      return PROTO_ESTORE;
  }
}

static proto_status corrupt(const char *what) {
  proto_err_set("store: corrupt record: %s", what);
  return PROTO_ECORRUPT;
}

/* Byte encoding ----------------------------------------------------------- */

static void be64_put(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (unsigned char)(v & 0xff);
    v >>= 8;
  }
}
static uint64_t be64_get(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}
static void le32_put(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) {
    p[i] = (unsigned char)(v & 0xff);
    v >>= 8;
  }
}
static uint32_t le32_get(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void le64_put(unsigned char *p, uint64_t v) {
  le32_put(p, (uint32_t)v);
  le32_put(p + 4, (uint32_t)(v >> 32));
}
static uint64_t le64_get(const unsigned char *p) {
  return (uint64_t)le32_get(p) | (uint64_t)le32_get(p + 4) << 32;
}

/* Decimal text <-> u64, strict (digits only, no overflow). */
static int parse_u64(const char *s, size_t len, uint64_t *out) {
  uint64_t v = 0;
  if (len == 0 || len > 20) return -1;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

/* Per-thread re-entrant shared hold of map_lock --------------------------- */

static _Thread_local struct {
  const store *st;
  unsigned depth;
} tl_held[HELD_MAX];

static unsigned *held_slot(const store *st, int create) {
  for (int i = 0; i < HELD_MAX; i++)
    if (tl_held[i].st == st && tl_held[i].depth) return &tl_held[i].depth;
  if (!create) return NULL;
  for (int i = 0; i < HELD_MAX; i++)
    if (!tl_held[i].depth) {
      tl_held[i].st = st;
      return &tl_held[i].depth;
    }
  return NULL;
}

static unsigned held_depth(const store *st) {
  unsigned *d = held_slot(st, 0);
  return d ? *d : 0;
}

static proto_status map_rdlock(store *st) {
  unsigned *d = held_slot(st, 1);
  if (!d) {
    proto_err_set("store: too many stores read at once by one thread");
    return PROTO_EINTERNAL;
  }
  if (*d == 0) {
    int rc = pthread_rwlock_rdlock(&st->map_lock);
    if (rc) {
      proto_err_set("store: pthread_rwlock_rdlock: %s", strerror(rc));
      return PROTO_EINTERNAL;
    }
  }
  (*d)++;
  return PROTO_OK;
}

static void map_rdunlock(store *st) {
  unsigned *d = held_slot(st, 0);
  if (!d) return;
  if (--(*d) == 0) {
    pthread_rwlock_unlock(&st->map_lock);
    /* slot is free again (depth 0) */
  }
}

/* Sets the map size with no transaction of this process open. size 0 adopts
 * the size another process recorded. The caller holds no shared hold. */
static proto_status map_resize(store *st, size_t size) {
  int rc = pthread_rwlock_wrlock(&st->map_lock);
  if (rc) {
    proto_err_set("store: pthread_rwlock_wrlock: %s", strerror(rc));
    return PROTO_EINTERNAL;
  }
  rc = mdb_env_set_mapsize(st->env, size);
  pthread_rwlock_unlock(&st->map_lock);
  if (rc) return mdb_fail(rc, "mdb_env_set_mapsize");
  return PROTO_OK;
}

static size_t map_size_now(store *st) {
  MDB_envinfo info;
  if (mdb_env_info(st->env, &info)) return 0;
  return info.me_mapsize;
}

/* How far past max_map a delete may grow the map: without it, a map filled to
 * its limit could not be emptied either, since a delete writes new pages
 * (copy on write, tombstones) before its old ones are free. */
static size_t delete_allowance(const store *st) {
  size_t r = st->max_map / 16;
  return r > ((size_t)1 << 20) ? r : (size_t)1 << 20;
}

/* Grows the map by a step, up to max_map + extra (no limit without max_map). */
static proto_status map_grow(store *st, size_t extra) {
  size_t cur = map_size_now(st), limit = st->max_map + extra;
  size_t step = cur < GROW_STEP_MAX ? cur : GROW_STEP_MAX;
  if (step < ((size_t)1 << 20)) step = (size_t)1 << 20;
  if (cur > SIZE_MAX - step) {
    proto_err_set("store: map cannot grow past %zu bytes", cur);
    return PROTO_ENOSPACE;
  }
  if (st->max_map && cur + step > limit) {
    if (cur >= limit) {
      proto_err_set("store: the LMDB map is full: %zu bytes, the limit (max map size%s)", cur,
                    extra ? " and what a delete may add" : "");
      return PROTO_ENOSPACE;
    }
    step = limit - cur;
  }
  return map_resize(st, cur + step);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Read transactions -------------------------------------------------------- */

/* Opens a read transaction under a shared hold of map_lock. Retries on
 * MDB_MAP_RESIZED (adopting the new size) and waits out MDB_READERS_FULL. */
static proto_status rd_begin(store *st, MDB_txn **txn) {
  proto_status ps = map_rdlock(st);
  if (ps) return ps;
  long waited = 0;
  for (int resized = 0;;) {
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_SUCCESS) return PROTO_OK;
    if (rc == MDB_MAP_RESIZED && held_depth(st) == 1 && resized++ < 8) {
      map_rdunlock(st);
      ps = map_resize(st, 0);
      if (ps) return ps;
      if ((ps = map_rdlock(st))) return ps;
      continue;
    }
    if (rc == MDB_READERS_FULL && waited < READERS_FULL_WAIT_MS) {
      int own = held_depth(st) == 1;
      if (own) map_rdunlock(st);
      sleep_ms(1);
      waited++;
      if (own && (ps = map_rdlock(st))) return ps;
      continue;
    }
    map_rdunlock(st);
    ps = mdb_fail(rc, "mdb_txn_begin (read)");
    return rc == MDB_READERS_FULL ? PROTO_EBUSY : ps;
  }
}

static void rd_end(store *st, MDB_txn *txn) {
  if (txn) mdb_txn_abort(txn);
  map_rdunlock(st);
}

/* LMDB reports a write cut short by a full disk as EIO (a short pwrite), not
 * ENOSPC: an EIO with little room left on the database's file system is
 * taken for a full disk. */
enum { NEARLY_FULL_BYTES = 64 << 20 };
static proto_status classify_eio(store *st, proto_status ps) {
  const char *path = NULL;
  struct statvfs sv;
  if (ps != PROTO_EIO || mdb_env_get_path(st->env, &path) || !path || statvfs(path, &sv)) return ps;
  unsigned long long avail = (unsigned long long)sv.f_bavail * sv.f_frsize;
  if (avail >= NEARLY_FULL_BYTES) return ps;
  proto_err_set("store: the disk is full (%llu bytes free on the database's file system; %.200s)",
                avail, proto_err_get());
  return PROTO_ENOSPACE;
}

/* Write transactions ------------------------------------------------------- */

/* A write body: does its puts in txn, returns non-OK to abort. When an LMDB
 * call fails it stores the LMDB code in *mdb_rc (so MDB_MAP_FULL is seen). */
typedef proto_status (*write_body)(store *st, MDB_txn *txn, void *ctx, int *mdb_rc);

/* Runs body in one write transaction and commits it (durably, default sync).
 * On MDB_MAP_FULL, from a put or from the commit, the transaction is aborted,
 * the map grows and body runs again from scratch. extra: how far past
 * max_map this write may grow the map (a delete's allowance, else 0). A
 * write without it first gives back what a delete grew the map by, down to
 * what the data holds: it may use the pages deletes freed, not new ones. */
static proto_status write_run_within(store *st, write_body body, void *ctx, size_t extra) {
  proto_status ps = PROTO_OK;
  if (held_depth(st)) {
    proto_err_set("store: write from a thread inside a store read (scan callback)");
    return PROTO_EINVAL;
  }
  pthread_mutex_lock(&st->write_lock);
  if (st->max_map && !extra && map_size_now(st) > st->max_map)
    ps = map_resize(st, st->max_map); /* LMDB keeps at least the data's size */
  for (int attempt = 0; ps == PROTO_OK; attempt++) {
    MDB_txn *txn = NULL;
    int mrc = 0;
    if ((ps = map_rdlock(st))) break;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc == MDB_MAP_RESIZED && attempt < WRITE_RETRIES) {
      map_rdunlock(st);
      if ((ps = map_resize(st, 0))) break;
      continue;
    }
    if (rc) {
      map_rdunlock(st);
      ps = mdb_fail(rc, "mdb_txn_begin (write)");
      break;
    }
    ps = body(st, txn, ctx, &mrc);
    if (ps == PROTO_OK) {
      rc = mdb_txn_commit(txn); /* frees txn, success or not */
      if (rc) {
        mrc = rc;
        ps = mdb_fail(rc, "mdb_txn_commit");
      }
    } else {
      mdb_txn_abort(txn);
    }
    map_rdunlock(st);
    if (ps != PROTO_OK && mrc == MDB_MAP_FULL && attempt < WRITE_RETRIES) {
      if ((ps = map_grow(st, extra))) break;
      continue;
    }
    if (ps != PROTO_OK && mrc == MDB_MAP_FULL) {
      proto_err_set("store: the LMDB map is full after %d growths", attempt);
      ps = PROTO_ENOSPACE;
    }
    ps = classify_eio(st, ps);
    break;
  }
  pthread_mutex_unlock(&st->write_lock);
  return ps;
}

static proto_status write_run(store *st, write_body body, void *ctx) {
  return write_run_within(st, body, ctx, 0);
}

/* Small LMDB helpers --------------------------------------------------------- */

#define PUT(dbi, k, v, flags, what)                   \
  do {                                                \
    int rc_ = mdb_put(txn, (dbi), (k), (v), (flags)); \
    if (rc_) {                                        \
      *mdb_rc = rc_;                                  \
      return mdb_fail(rc_, (what));                   \
    }                                                 \
  } while (0)

static MDB_val val_of(const void *p, size_t n) {
  MDB_val v = {n, (void *)(uintptr_t)p};
  return v;
}

/* meta value as u64; *out = dflt when absent. */
static proto_status meta_u64(store *st, MDB_txn *txn, const char *key, uint64_t dflt,
                             uint64_t *out) {
  MDB_val k = val_of(key, strlen(key)), v;
  int rc = mdb_get(txn, st->meta, &k, &v);
  if (rc == MDB_NOTFOUND) {
    *out = dflt;
    return PROTO_OK;
  }
  if (rc) return mdb_fail(rc, "mdb_get meta");
  if (parse_u64(v.mv_data, v.mv_size, out)) {
    proto_err_set("store: corrupt meta value for %s", key);
    return PROTO_ECORRUPT;
  }
  return PROTO_OK;
}

static proto_status meta_put_u64(store *st, MDB_txn *txn, const char *key, uint64_t value,
                                 int *mdb_rc) {
  char buf[24];
  int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)value);
  MDB_val k = val_of(key, strlen(key)), v = val_of(buf, (size_t)n);
  PUT(st->meta, &k, &v, 0, "mdb_put meta");
  return PROTO_OK;
}

/* Keys only this file writes ("dim" may be put through the dim check). */
static int meta_key_reserved(const char *key) {
  return !strcmp(key, K_SCHEMA) || !strcmp(key, K_NEXT_DOC) || !strcmp(key, K_NEXT_CHUNK) ||
         !strcmp(key, K_WATERMARK);
}

/* doc_keys key for an external id: the id itself when it fits LMDB's key
 * limit, else a prefix + NUL + 128-bit hash (ids never contain NUL). */
typedef struct doc_key {
  unsigned char buf[PROTO_MAX_ID_BYTES + 1];
  size_t len;
} doc_key;

static void doc_key_make(const store *st, const char *id, size_t len, doc_key *k) {
  if (len <= st->maxkey) {
    memcpy(k->buf, id, len);
    k->len = len;
    return;
  }
  size_t pre = st->maxkey - HASHED_KEY_TAIL;
  memcpy(k->buf, id, pre);
  k->buf[pre] = 0;
  be64_put(k->buf + pre + 1, proto_fnv1a64(PROTO_FNV_INIT, id, len));
  be64_put(k->buf + pre + 9, proto_fnv1a64(0x84222325cbf29ce4ULL, id, len) ^ len);
  k->len = st->maxkey;
}

static proto_status check_id(const char *id, size_t *len) {
  if (!id) {
    proto_err_set("store: document id is NULL");
    return PROTO_EINVAL;
  }
  *len = strlen(id);
  if (*len == 0 || *len > PROTO_MAX_ID_BYTES) {
    proto_err_set("store: document id must be 1..%d bytes", PROTO_MAX_ID_BYTES);
    return PROTO_EINVAL;
  }
  return PROTO_OK;
}

/* n bytes of p as a NUL-terminated copy (NULL when out of memory). */
static char *dup_bytes(const char *p, size_t n) {
  char *s = malloc(n + 1);
  if (!s) return NULL;
  if (n) memcpy(s, p, n);
  s[n] = 0;
  return s;
}

/* A decoded docs record; pointers borrow the transaction's memory. */
typedef struct doc_rec {
  uint64_t first_chunk;
  uint32_t n_chunks;
  const char *id;
  uint32_t id_len;
  const char *meta;
  uint32_t meta_len;
} doc_rec;

static proto_status doc_rec_decode(const MDB_val *v, doc_rec *r) {
  const unsigned char *p = v->mv_data;
  if (v->mv_size < DOC_HDR) return corrupt("doc header");
  r->first_chunk = le64_get(p);
  r->n_chunks = le32_get(p + 8);
  r->id_len = le32_get(p + 12);
  r->meta_len = le32_get(p + 16);
  if ((uint64_t)DOC_HDR + r->id_len + r->meta_len != v->mv_size) return corrupt("doc length");
  r->id = (const char *)p + DOC_HDR;
  r->meta = r->id + r->id_len;
  return PROTO_OK;
}

static proto_status doc_rec_read(store *st, MDB_txn *txn, uint64_t doc_id, doc_rec *r) {
  unsigned char kb[8];
  be64_put(kb, doc_id);
  MDB_val k = val_of(kb, 8), v;
  int rc = mdb_get(txn, st->docs, &k, &v);
  if (rc == MDB_NOTFOUND) {
    proto_err_set("store: document #%llu not found", (unsigned long long)doc_id);
    return PROTO_ENOTFOUND;
  }
  if (rc) return mdb_fail(rc, "mdb_get docs");
  return doc_rec_decode(&v, r);
}

/* Looks an external id up: *doc_id = 0 when absent. */
static proto_status doc_lookup(store *st, MDB_txn *txn, const char *id, size_t len,
                               uint64_t *doc_id, doc_rec *rec) {
  doc_key dk;
  doc_key_make(st, id, len, &dk);
  MDB_val k = val_of(dk.buf, dk.len), v;
  *doc_id = 0;
  int rc = mdb_get(txn, st->doc_keys, &k, &v);
  if (rc == MDB_NOTFOUND) return PROTO_OK;
  if (rc) return mdb_fail(rc, "mdb_get doc_keys");
  if (v.mv_size != 8) return corrupt("doc_keys value");
  uint64_t num = be64_get(v.mv_data);
  proto_status ps = doc_rec_read(st, txn, num, rec);
  if (ps == PROTO_ENOTFOUND) return corrupt("doc_keys points to a missing doc");
  if (ps) return ps;
  if (rec->id_len != len || memcmp(rec->id, id, len)) {
    if (len <= st->maxkey) return corrupt("doc_keys/docs id mismatch");
    return PROTO_OK; /* a different long id with the same hashed key */
  }
  *doc_id = num;
  return PROTO_OK;
}

/* Begins a read and finds document id in it; on PROTO_OK *txn is open
 * (end it with rd_end), *num and *r say what was found. */
static proto_status doc_find(store *st, const char *id, MDB_txn **txn, uint64_t *num, doc_rec *r) {
  size_t len;
  proto_status ps = check_id(id, &len);
  if (ps || (ps = rd_begin(st, txn))) return ps;
  ps = doc_lookup(st, *txn, id, len, num, r);
  if (ps == PROTO_OK && !*num) {
    proto_err_set("store: document not found");
    ps = PROTO_ENOTFOUND;
  }
  if (ps) rd_end(st, *txn);
  return ps;
}

/* A decoded chunks record; pointers borrow the transaction's memory. */
typedef struct chunk_rec {
  uint64_t doc_id;
  uint32_t ordinal, n_tokens, text_len;
  const unsigned char *tokens;
  const char *text;
} chunk_rec;

static proto_status chunk_rec_decode(const MDB_val *v, chunk_rec *r) {
  const unsigned char *p = v->mv_data;
  if (v->mv_size < CHUNK_HDR) return corrupt("chunk header");
  r->doc_id = le64_get(p);
  r->ordinal = le32_get(p + 8);
  r->n_tokens = le32_get(p + 12);
  r->text_len = le32_get(p + 16);
  if ((uint64_t)CHUNK_HDR + 4ull * r->n_tokens + r->text_len != v->mv_size)
    return corrupt("chunk length");
  r->tokens = p + CHUNK_HDR;
  r->text = (const char *)r->tokens + 4ull * r->n_tokens;
  return PROTO_OK;
}

/* Gets chunk id into r; PROTO_ENOTFOUND when absent (no message set). */
static proto_status chunk_rec_read(store *st, MDB_txn *txn, uint64_t id, chunk_rec *r) {
  unsigned char kb[8];
  be64_put(kb, id);
  MDB_val k = val_of(kb, 8), v;
  int rc = mdb_get(txn, st->chunks, &k, &v);
  if (rc == MDB_NOTFOUND) return PROTO_ENOTFOUND;
  if (rc) return mdb_fail(rc, "mdb_get chunks");
  return chunk_rec_decode(&v, r);
}

/* Open / close ------------------------------------------------------------- */

/* Opens the store's tables in txn with flags (MDB_CREATE, or 0 to need
 * them); the rc of the first that fails, with its name in *failed. */
static int open_tables(store *st, MDB_txn *txn, unsigned flags, const char **failed) {
  const struct {
    const char *name;
    MDB_dbi *dbi;
  } dbs[] = {
      {"meta", &st->meta},         {"docs", &st->docs},       {"doc_keys", &st->doc_keys},
      {"chunks", &st->chunks},     {"vectors", &st->vectors}, {"dead", &st->dead},
      {"doc_hash", &st->doc_hash}, /* created in a database of an older build */
  };
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
    int rc = mdb_dbi_open(txn, dbs[i].name, flags, dbs[i].dbi);
    if (rc) {
      *failed = dbs[i].name;
      return rc;
    }
  }
  return 0;
}

static proto_status check_schema(uint64_t schema) {
  if (schema == STORE_SCHEMA) return PROTO_OK;
  proto_err_set("store: database schema %llu, this build reads %d", (unsigned long long)schema,
                STORE_SCHEMA);
  return PROTO_ECORRUPT;
}

static proto_status open_body(store *st, MDB_txn *txn, void *ctx, int *mdb_rc) {
  (void)ctx;
  const char *failed;
  int rc = open_tables(st, txn, MDB_CREATE, &failed);
  if (rc) {
    *mdb_rc = rc;
    return mdb_fail(rc, "mdb_dbi_open");
  }
  uint64_t schema;
  proto_status ps = meta_u64(st, txn, K_SCHEMA, 0, &schema);
  if (ps) return ps;
  if (schema == 0) return meta_put_u64(st, txn, K_SCHEMA, STORE_SCHEMA, mdb_rc);
  return check_schema(schema);
}

/* open_body for a database opened read-only: its tables must all be there
 * (a database this build has written once). The read transaction commits,
 * which keeps the table handles for the store's life. */
static proto_status open_read_only(store *st) {
  MDB_txn *txn = NULL;
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  const char *failed;
  int rc = open_tables(st, txn, 0, &failed);
  if (rc == MDB_NOTFOUND) {
    proto_err_set(
        "store: read-only, and the database has no table '%s' (an older build's: "
        "open it once where it can be written)",
        failed);
    ps = PROTO_ESTORE;
  } else if (rc) {
    ps = mdb_fail(rc, "mdb_dbi_open");
  }
  uint64_t schema = 0;
  if (!ps && !(ps = meta_u64(st, txn, K_SCHEMA, 0, &schema))) ps = check_schema(schema);
  rc = ps ? 0 : mdb_txn_commit(txn);
  if (ps) mdb_txn_abort(txn);
  map_rdunlock(st);
  return ps ? ps : rc ? mdb_fail(rc, "mdb_txn_commit (read)") : PROTO_OK;
}

static proto_status make_dir(const char *path) {
  if (mkdir(path, 0755) == 0 || errno == EEXIST) {
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return PROTO_OK;
  }
  proto_err_set("store: cannot create directory %s: %s", path, strerror(errno ? errno : ENOTDIR));
  return PROTO_EIO;
}

/* A fresh environment for path (any earlier one closed), opened with
 * MDB_NOTLS | flags; *what names the call that failed. */
static int env_open(store *st, const char *path, unsigned max_readers, unsigned flags,
                    const char **what) {
  int rc;
  if (st->env) mdb_env_close(st->env);
  st->env = NULL;
  *what = "mdb_env_create";
  if ((rc = mdb_env_create(&st->env))) return rc;
  *what = "mdb_env_set_*";
  if ((rc = mdb_env_set_maxdbs(st->env, 8)) || (rc = mdb_env_set_maxreaders(st->env, max_readers)))
    return rc;
  *what = "mdb_env_open";
  return mdb_env_open(st->env, path, MDB_NOTLS | flags, 0644);
}

proto_status store_open(const char *dir, const store_options *opt, store **out) {
  proto_status ps = PROTO_OK;
  store *st = NULL;
  char *path = NULL;
  int rc;
  if (!dir || !*dir || !out) {
    proto_err_set("store: store_open needs a directory and an out pointer");
    return PROTO_EINVAL;
  }
  *out = NULL;
  size_t map_bytes = opt && opt->map_bytes ? opt->map_bytes : DEFAULT_MAP_BYTES;
  size_t max_map = opt ? opt->max_map_bytes : 0;
  if (max_map && map_bytes > max_map) map_bytes = max_map;
  unsigned max_readers = opt && opt->max_readers ? opt->max_readers : 4096;

  size_t plen = strlen(dir) + 4;
  path = malloc(plen);
  st = calloc(1, sizeof *st);
  if (!path || !st) {
    proto_err_set("store: out of memory");
    ps = PROTO_ENOMEM;
    goto leave;
  }
  snprintf(path, plen, "%s/db", dir);
  if ((ps = make_dir(dir)) || (ps = make_dir(path))) goto leave;

  pthread_rwlockattr_t ra;
  pthread_rwlockattr_init(&ra);
  pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  rc = pthread_rwlock_init(&st->map_lock, &ra);
  pthread_rwlockattr_destroy(&ra);
  if (rc) {
    proto_err_set("store: pthread_rwlock_init: %s", strerror(rc));
    ps = PROTO_EINTERNAL;
    goto leave;
  }
  if ((rc = pthread_mutex_init(&st->write_lock, NULL))) {
    pthread_rwlock_destroy(&st->map_lock);
    proto_err_set("store: pthread_mutex_init: %s", strerror(rc));
    ps = PROTO_EINTERNAL;
    goto leave;
  }
  st->locks_ready = 1;
  st->max_map = max_map;

  /* Default sync mode: no MDB_NOSYNC / MDB_NOMETASYNC / MDB_WRITEMAP. No map
   * size is set before the open, so an existing database comes back with the
   * size it last grew to; then the map is raised to map_bytes if smaller. */
  const char *what = NULL;
  unsigned flags = 0;
  rc = env_open(st, path, max_readers, flags, &what);
  if ((rc == EROFS || rc == EACCES) && opt && opt->read_only_fallback) {
    rc = env_open(st, path, max_readers, flags = MDB_RDONLY, &what);
    /* A read-only file system takes no lock file either, and no writer can
     * work there: read without LMDB's reader table. */
    if (rc == EROFS) rc = env_open(st, path, max_readers, flags = MDB_RDONLY | MDB_NOLOCK, &what);
    st->read_only = 1;
  }
  if (rc) {
    ps = mdb_fail(rc, what);
    goto leave;
  }
  if (!st->read_only && map_size_now(st) < map_bytes &&
      (rc = mdb_env_set_mapsize(st->env, map_bytes))) {
    ps = mdb_fail(rc, "mdb_env_set_mapsize");
    goto leave;
  }
  int stale = 0;
  if (!(flags & MDB_NOLOCK)) mdb_reader_check(st->env, &stale);
  int mk = mdb_env_get_maxkeysize(st->env);
  if (mk < 64) {
    proto_err_set("store: LMDB key size limit %d too small", mk);
    ps = PROTO_ESTORE;
    goto leave;
  }
  st->maxkey = (unsigned)mk;
  if ((ps = st->read_only ? open_read_only(st) : write_run(st, open_body, NULL))) goto leave;
  *out = st;
  st = NULL;
leave:
  store_close(st);
  free(path);
  return ps;
}

void store_close(store *st) {
  if (!st) return;
  if (st->env) mdb_env_close(st->env);
  if (st->locks_ready) {
    pthread_rwlock_destroy(&st->map_lock);
    pthread_mutex_destroy(&st->write_lock);
  }
  free(st);
}

/* meta --------------------------------------------------------------------- */

proto_status store_meta_get(store *st, const char *key, char **value) {
  MDB_txn *txn = NULL;
  proto_status ps;
  if (!st || !key || !*key || !value) {
    proto_err_set("store: bad meta_get arguments");
    return PROTO_EINVAL;
  }
  *value = NULL;
  if (strlen(key) > st->maxkey) {
    proto_err_set("store: meta key too long");
    return PROTO_EINVAL;
  }
  if ((ps = rd_begin(st, &txn))) return ps;
  MDB_val k = val_of(key, strlen(key)), v;
  int rc = mdb_get(txn, st->meta, &k, &v);
  if (rc == MDB_SUCCESS) {
    char *s = malloc(v.mv_size + 1);
    if (!s) {
      proto_err_set("store: out of memory");
      ps = PROTO_ENOMEM;
      goto leave;
    }
    memcpy(s, v.mv_data, v.mv_size);
    s[v.mv_size] = 0;
    *value = s;
  } else if (rc != MDB_NOTFOUND) {
    ps = mdb_fail(rc, "mdb_get meta");
  }
leave:
  rd_end(st, txn);
  return ps;
}

typedef struct meta_put_ctx {
  const char *key, *value;
} meta_put_ctx;

static proto_status meta_put_body(store *st, MDB_txn *txn, void *ctx, int *mdb_rc) {
  meta_put_ctx *c = ctx;
  if (!strcmp(c->key, K_DIM)) { /* fixes the dim like a first write would */
    uint64_t have, want;
    proto_status ps = meta_u64(st, txn, K_DIM, 0, &have);
    if (ps) return ps;
    if (parse_u64(c->value, strlen(c->value), &want) || want == 0 || want > PROTO_MAX_DIM) {
      proto_err_set("store: meta dim must be a number in 1..%d", PROTO_MAX_DIM);
      return PROTO_EINVAL;
    }
    if (have && have != want) {
      proto_err_set("store: dim %llu requested, the database holds dim %llu",
                    (unsigned long long)want, (unsigned long long)have);
      return PROTO_EDIM;
    }
    return meta_put_u64(st, txn, K_DIM, want, mdb_rc);
  }
  MDB_val k = val_of(c->key, strlen(c->key)), v = val_of(c->value, strlen(c->value));
  PUT(st->meta, &k, &v, 0, "mdb_put meta");
  return PROTO_OK;
}

proto_status store_meta_put(store *st, const char *key, const char *value) {
  if (!st || !key || !*key || !value) {
    proto_err_set("store: bad meta_put arguments");
    return PROTO_EINVAL;
  }
  if (strlen(key) > st->maxkey) {
    proto_err_set("store: meta key too long");
    return PROTO_EINVAL;
  }
  if (meta_key_reserved(key)) {
    proto_err_set("store: meta key '%s' is reserved", key);
    return PROTO_EINVAL;
  }
  meta_put_ctx c = {key, value};
  return write_run(st, meta_put_body, &c);
}

/* Upsert / delete ------------------------------------------------------------ */

/* Deletes doc num (record r) with its chunks and vectors; chunk ids below
 * tomb_below go to dead (ids at or above it were never committed). */
static proto_status doc_remove(store *st, MDB_txn *txn, uint64_t num, const doc_rec *r,
                               uint64_t tomb_below, int *mdb_rc) {
  unsigned char kb[8];
  uint64_t first = r->first_chunk, n = r->n_chunks;
  MDB_val empty = {0, NULL};
  for (uint64_t c = first; c < first + n; c++) {
    be64_put(kb, c);
    MDB_val k = val_of(kb, 8);
    int rc = mdb_del(txn, st->chunks, &k, NULL);
    if (rc && rc != MDB_NOTFOUND) {
      *mdb_rc = rc;
      return mdb_fail(rc, "mdb_del chunks");
    }
    rc = mdb_del(txn, st->vectors, &k, NULL);
    if (rc && rc != MDB_NOTFOUND) {
      *mdb_rc = rc;
      return mdb_fail(rc, "mdb_del vectors");
    }
    if (c < tomb_below) PUT(st->dead, &k, &empty, 0, "mdb_put dead");
  }
  be64_put(kb, num);
  MDB_val k = val_of(kb, 8);
  int rc = mdb_del(txn, st->docs, &k, NULL);
  if (rc) {
    *mdb_rc = rc;
    return mdb_fail(rc, "mdb_del docs");
  }
  rc = mdb_del(txn, st->doc_hash, &k, NULL);
  if (rc && rc != MDB_NOTFOUND) {
    *mdb_rc = rc;
    return mdb_fail(rc, "mdb_del doc_hash");
  }
  return PROTO_OK;
}

typedef struct upsert_ctx {
  const store_doc_input *docs;
  size_t n;
  uint32_t dim;
  uint64_t *doc_ids;
} upsert_ctx;

static proto_status upsert_body(store *st, MDB_txn *txn, void *vctx, int *mdb_rc) {
  upsert_ctx *c = vctx;
  proto_status ps;
  uint64_t dim, next_doc, next_chunk;
  if ((ps = meta_u64(st, txn, K_DIM, 0, &dim)) ||
      (ps = meta_u64(st, txn, K_NEXT_DOC, 1, &next_doc)) ||
      (ps = meta_u64(st, txn, K_NEXT_CHUNK, 1, &next_chunk)))
    return ps;
  if (c->dim && dim && dim != c->dim) {
    proto_err_set("store: vectors have dim %u, the database holds dim %llu", c->dim,
                  (unsigned long long)dim);
    return PROTO_EDIM;
  }
  if (c->dim && !dim) {
    dim = c->dim;
    if ((ps = meta_put_u64(st, txn, K_DIM, dim, mdb_rc))) return ps;
  }
  const uint64_t batch_first = next_chunk;
  const size_t vec_bytes = (size_t)dim * sizeof(float);
  unsigned char kb[8];

  for (size_t i = 0; i < c->n; i++) {
    const store_doc_input *d = &c->docs[i];
    size_t id_len = strlen(d->id);
    const char *meta = d->metadata_json ? d->metadata_json : "{}";
    size_t meta_len = strlen(meta);
    uint64_t old;
    doc_rec r;
    if ((ps = doc_lookup(st, txn, d->id, id_len, &old, &r))) return ps;
    if (!old && id_len > st->maxkey) {
      /* the hashed key may already belong to another long id */
      doc_key dk;
      doc_key_make(st, d->id, id_len, &dk);
      MDB_val k = val_of(dk.buf, dk.len), v;
      if (mdb_get(txn, st->doc_keys, &k, &v) == MDB_SUCCESS) {
        proto_err_set("store: document id hash collision");
        return PROTO_EINVAL;
      }
    }
    if (old && (ps = doc_remove(st, txn, old, &r, batch_first, mdb_rc))) return ps;

    uint64_t num = next_doc++;
    uint64_t first = next_chunk;
    for (uint32_t j = 0; j < d->n_chunks; j++) {
      const store_chunk_input *ch = &d->chunks[j];
      be64_put(kb, next_chunk++);
      MDB_val k = val_of(kb, 8);
      MDB_val v = {CHUNK_HDR + 4ull * ch->n_tokens + ch->text_len, NULL};
      PUT(st->chunks, &k, &v, MDB_APPEND | MDB_RESERVE, "mdb_put chunks");
      unsigned char *p = v.mv_data;
      le64_put(p, num);
      le32_put(p + 8, j);
      le32_put(p + 12, ch->n_tokens);
      le32_put(p + 16, (uint32_t)ch->text_len);
      for (uint32_t t = 0; t < ch->n_tokens; t++)
        le32_put(p + CHUNK_HDR + 4ull * t, (uint32_t)ch->tokens[t]);
      if (ch->text_len) memcpy(p + CHUNK_HDR + 4ull * ch->n_tokens, ch->text, ch->text_len);
      MDB_val vv = val_of(ch->vector, vec_bytes);
      PUT(st->vectors, &k, &vv, MDB_APPEND, "mdb_put vectors");
    }
    be64_put(kb, num);
    MDB_val k = val_of(kb, 8);
    MDB_val v = {DOC_HDR + id_len + meta_len, NULL};
    PUT(st->docs, &k, &v, MDB_APPEND | MDB_RESERVE, "mdb_put docs");
    unsigned char *p = v.mv_data;
    le64_put(p, first);
    le32_put(p + 8, d->n_chunks);
    le32_put(p + 12, (uint32_t)id_len);
    le32_put(p + 16, (uint32_t)meta_len);
    memcpy(p + DOC_HDR, d->id, id_len);
    memcpy(p + DOC_HDR + id_len, meta, meta_len);

    doc_key dk;
    doc_key_make(st, d->id, id_len, &dk);
    MDB_val dkk = val_of(dk.buf, dk.len), dkv = val_of(kb, 8);
    PUT(st->doc_keys, &dkk, &dkv, 0, "mdb_put doc_keys");
    if (d->content_hash) {
      MDB_val hv = val_of(d->content_hash, STORE_HASH_BYTES);
      PUT(st->doc_hash, &k, &hv, MDB_APPEND, "mdb_put doc_hash");
    }
    if (c->doc_ids) c->doc_ids[i] = num;
  }
  if ((ps = meta_put_u64(st, txn, K_NEXT_DOC, next_doc, mdb_rc)) ||
      (ps = meta_put_u64(st, txn, K_NEXT_CHUNK, next_chunk, mdb_rc)))
    return ps;
  return PROTO_OK;
}

proto_status store_upsert(store *st, const store_doc_input *docs, size_t n, uint32_t dim,
                          uint64_t *doc_ids) {
  if (!st || (n && !docs)) {
    proto_err_set("store: bad upsert arguments");
    return PROTO_EINVAL;
  }
  if (n == 0) return PROTO_OK;
  int any_chunk = 0;
  for (size_t i = 0; i < n; i++) {
    const store_doc_input *d = &docs[i];
    size_t id_len;
    proto_status ps = check_id(d->id, &id_len);
    if (ps) return ps;
    if (d->metadata_json && strlen(d->metadata_json) > MAX_TEXT_BYTES) {
      proto_err_set("store: metadata of '%s' too large", d->id);
      return PROTO_EINVAL;
    }
    if (d->n_chunks && !d->chunks) {
      proto_err_set("store: document '%s' has n_chunks but no chunks", d->id);
      return PROTO_EINVAL;
    }
    for (uint32_t j = 0; j < d->n_chunks; j++) {
      const store_chunk_input *ch = &d->chunks[j];
      any_chunk = 1;
      if (ch->n_tokens > PROTO_CHUNK_TOKENS || (ch->n_tokens && !ch->tokens) ||
          (ch->text_len && !ch->text) || ch->text_len > MAX_TEXT_BYTES || !ch->vector) {
        proto_err_set("store: document '%s' chunk %u: bad tokens, text or vector", d->id, j);
        return PROTO_EINVAL;
      }
    }
  }
  if (any_chunk && (dim == 0 || dim > PROTO_MAX_DIM)) {
    proto_err_set("store: dim %u out of 1..%d", dim, PROTO_MAX_DIM);
    return PROTO_EDIM;
  }
  if (dim > PROTO_MAX_DIM) {
    proto_err_set("store: dim %u out of 1..%d", dim, PROTO_MAX_DIM);
    return PROTO_EDIM;
  }
  for (size_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < docs[i].n_chunks; j++) {
      const float *v = docs[i].chunks[j].vector;
      for (uint32_t t = 0; t < dim; t++)
        if (!isfinite(v[t])) {
          proto_err_set("store: document '%s' chunk %u: non-finite vector value", docs[i].id, j);
          return PROTO_ERANGE;
        }
    }
  upsert_ctx c = {docs, n, dim, doc_ids};
  return write_run(st, upsert_body, &c);
}

typedef struct delete_ctx {
  const char *const *ids;
  const size_t *lens;
  size_t n;
  int *found; /* per id */
} delete_ctx;

/* Removes document num (record r, borrowed from txn) and its id's key. */
static proto_status remove_doc(store *st, MDB_txn *txn, uint64_t num, const doc_rec *r,
                               int *mdb_rc) {
  doc_key dk; /* made first: r points into the record doc_remove deletes */
  doc_key_make(st, r->id, r->id_len, &dk);
  proto_status ps = doc_remove(st, txn, num, r, UINT64_MAX, mdb_rc);
  if (ps) return ps;
  MDB_val k = val_of(dk.buf, dk.len);
  int rc = mdb_del(txn, st->doc_keys, &k, NULL);
  if (rc) {
    *mdb_rc = rc;
    return mdb_fail(rc, "mdb_del doc_keys");
  }
  return PROTO_OK;
}

static proto_status delete_one(store *st, MDB_txn *txn, const char *id, size_t len, int *found,
                               int *mdb_rc) {
  uint64_t num;
  doc_rec r;
  proto_status ps = doc_lookup(st, txn, id, len, &num, &r);
  *found = 0;
  if (ps || !num) return ps;
  if ((ps = remove_doc(st, txn, num, &r, mdb_rc))) return ps;
  *found = 1;
  return PROTO_OK;
}

static proto_status delete_body(store *st, MDB_txn *txn, void *vctx, int *mdb_rc) {
  delete_ctx *c = vctx;
  for (size_t i = 0; i < c->n; i++) {
    proto_status ps = delete_one(st, txn, c->ids[i], c->lens[i], &c->found[i], mdb_rc);
    if (ps) return ps;
  }
  return PROTO_OK;
}

/* The arguments of a write by ids checked: found[] zeroed, *lens (malloc'd,
 * also on failure) each id's length. */
static proto_status ids_checked(store *st, const char *const *ids, size_t n, int *found,
                                size_t **lens) {
  *lens = NULL;
  if (!st || (n && (!ids || !found))) {
    proto_err_set("store: NULL argument");
    return PROTO_EINVAL;
  }
  if (!(*lens = calloc(n ? n : 1, sizeof **lens))) {
    proto_err_set("store: out of memory");
    return PROTO_ENOMEM;
  }
  proto_status ps = PROTO_OK;
  for (size_t i = 0; i < n; i++) found[i] = 0;
  for (size_t i = 0; i < n && !ps; i++) ps = check_id(ids[i], &(*lens)[i]);
  return ps;
}

proto_status store_delete_many(store *st, const char *const *ids, size_t n, int *found) {
  size_t *lens;
  proto_status ps = ids_checked(st, ids, n, found, &lens);
  delete_ctx c = {ids, lens, n, found};
  if (!ps && n) ps = write_run_within(st, delete_body, &c, delete_allowance(st));
  if (ps && found)
    for (size_t i = 0; i < n; i++) found[i] = 0;
  free(lens);
  return ps;
}

typedef struct where_ctx {
  store_doc_test test;
  void *ctx;
  uint64_t *nums; /* the documents that passed */
  size_t n, cap;
} where_ctx;

/* The numbers of the documents whose metadata passes the test. */
static proto_status where_collect(store *st, MDB_txn *txn, where_ctx *c) {
  MDB_cursor *cur = NULL;
  MDB_val k, v;
  int rc = mdb_cursor_open(txn, st->docs, &cur);
  if (rc) return mdb_fail(rc, "mdb_cursor_open docs");
  proto_status ps = PROTO_OK;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc && !ps;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    doc_rec r;
    if (k.mv_size != 8) ps = corrupt("docs key");
    else ps = doc_rec_decode(&v, &r);
    char *meta = ps ? NULL : dup_bytes(r.meta, r.meta_len);
    if (!ps && !meta) ps = PROTO_ENOMEM;
    if (!ps && c->test(c->ctx, meta)) {
      if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        uint64_t *nums = realloc(c->nums, cap * sizeof *nums);
        if (nums) c->nums = nums, c->cap = cap;
      }
      if (c->n < c->cap) c->nums[c->n++] = be64_get(k.mv_data);
      else ps = PROTO_ENOMEM;
    }
    free(meta);
  }
  if (!ps && rc != MDB_NOTFOUND) ps = mdb_fail(rc, "mdb_cursor_get docs");
  if (ps == PROTO_ENOMEM) proto_err_set("store: out of memory");
  mdb_cursor_close(cur);
  return ps;
}

static proto_status where_body(store *st, MDB_txn *txn, void *vctx, int *mdb_rc) {
  where_ctx *c = vctx;
  c->n = 0; /* a retried transaction starts again */
  proto_status ps = where_collect(st, txn, c);
  for (size_t i = 0; i < c->n && !ps; i++) {
    doc_rec r;
    if (!(ps = doc_rec_read(st, txn, c->nums[i], &r)))
      ps = remove_doc(st, txn, c->nums[i], &r, mdb_rc);
  }
  return ps;
}

proto_status store_delete_where(store *st, store_doc_test test, void *ctx, size_t *deleted) {
  if (deleted) *deleted = 0;
  if (!st || !test) {
    proto_err_set("store: NULL argument");
    return PROTO_EINVAL;
  }
  where_ctx c = {test, ctx, NULL, 0, 0};
  proto_status ps = write_run_within(st, where_body, &c, delete_allowance(st));
  if (!ps && deleted) *deleted = c.n;
  free(c.nums);
  return ps;
}

proto_status store_delete(store *st, const char *id, int *found) {
  int f = 0;
  proto_status ps = store_delete_many(st, &id, 1, &f);
  if (found) *found = f;
  return ps;
}

/* The content hash stored with document num: *has = 0 when there is none
 * (a document written by a build before hashes); hash may be NULL. */
static proto_status hash_in(store *st, MDB_txn *txn, uint64_t num, const unsigned char **hash,
                            int *has) {
  unsigned char kb[8];
  be64_put(kb, num);
  MDB_val k = val_of(kb, 8), v;
  int rc = mdb_get(txn, st->doc_hash, &k, &v);
  *has = rc == MDB_SUCCESS && v.mv_size == STORE_HASH_BYTES;
  *hash = *has ? v.mv_data : NULL;
  return rc && rc != MDB_NOTFOUND ? mdb_fail(rc, "mdb_get doc_hash") : PROTO_OK;
}

proto_status store_doc_hash(store *st, const char *id, unsigned char hash[STORE_HASH_BYTES],
                            uint64_t *doc_num, uint32_t *n_chunks) {
  *doc_num = 0;
  if (n_chunks) *n_chunks = 0;
  if (!st) {
    proto_err_set("store: NULL store");
    return PROTO_EINVAL;
  }
  MDB_txn *txn = NULL;
  uint64_t num;
  doc_rec r;
  proto_status ps = doc_find(st, id, &txn, &num, &r);
  if (ps == PROTO_ENOTFOUND) return PROTO_OK;
  if (ps) return ps;
  const unsigned char *stored = NULL;
  int has = 0;
  ps = hash_in(st, txn, num, &stored, &has);
  if (ps == PROTO_OK && has) {
    memcpy(hash, stored, STORE_HASH_BYTES);
    *doc_num = num;
    if (n_chunks) *n_chunks = r.n_chunks;
  }
  rd_end(st, txn);
  return ps;
}

/* Where a document's new metadata comes from: given (meta and its hash),
 * or made by fn from the stored ones. */
typedef struct meta_source {
  const char *meta;
  const unsigned char *hash; /* NULL: none */
  store_meta_fn fn;
  void *fn_ctx;
} meta_source;

/* Writes document num's record (r) again with meta and its hash: the same
 * doc num and chunks, so the indexes do not change. */
static proto_status put_meta(store *st, MDB_txn *txn, uint64_t num, const doc_rec *r,
                             const char *meta, const unsigned char *hash, int *mdb_rc) {
  size_t meta_len = strlen(meta), id_len = r->id_len;
  if (meta_len > MAX_TEXT_BYTES || id_len > PROTO_MAX_ID_BYTES) {
    proto_err_set("store: metadata too large");
    return PROTO_EINVAL;
  }
  /* r points into the old record, which the put below may reuse: copy it first */
  char id[PROTO_MAX_ID_BYTES];
  memcpy(id, r->id, id_len);
  uint64_t first = r->first_chunk;
  uint32_t n = r->n_chunks;
  unsigned char kb[8];
  be64_put(kb, num);
  MDB_val k = val_of(kb, 8), v = {DOC_HDR + id_len + meta_len, NULL};
  PUT(st->docs, &k, &v, MDB_RESERVE, "mdb_put docs");
  unsigned char *p = v.mv_data;
  le64_put(p, first);
  le32_put(p + 8, n);
  le32_put(p + 12, (uint32_t)id_len);
  le32_put(p + 16, (uint32_t)meta_len);
  memcpy(p + DOC_HDR, id, id_len);
  memcpy(p + DOC_HDR + id_len, meta, meta_len);
  if (hash) {
    MDB_val hv = val_of(hash, STORE_HASH_BYTES);
    PUT(st->doc_hash, &k, &hv, 0, "mdb_put doc_hash");
    return PROTO_OK;
  }
  int rc = mdb_del(txn, st->doc_hash, &k, NULL);
  if (rc && rc != MDB_NOTFOUND) {
    *mdb_rc = rc;
    return mdb_fail(rc, "mdb_del doc_hash");
  }
  return PROTO_OK;
}

/* Rewrites document num's metadata from src: as given, or as src->fn makes
 * it from the stored metadata and hash. */
static proto_status rewrite_meta(store *st, MDB_txn *txn, uint64_t num, const doc_rec *r,
                                 const meta_source *src, int *mdb_rc) {
  if (!src->fn) return put_meta(st, txn, num, r, src->meta, src->hash, mdb_rc);
  const unsigned char *old;
  unsigned char hash[STORE_HASH_BYTES];
  int has_hash = 0;
  char *made = NULL;
  proto_status ps = hash_in(st, txn, num, &old, &has_hash);
  if (!ps) ps = src->fn(src->fn_ctx, r->meta, r->meta_len, old, &made, hash, &has_hash);
  if (!ps && !made) {
    proto_err_set("store: out of memory");
    ps = PROTO_ENOMEM;
  }
  if (!ps) ps = put_meta(st, txn, num, r, made, has_hash ? hash : NULL, mdb_rc);
  free(made);
  return ps;
}

/* Documents named by id (n of them), each found[i] or not. */
typedef struct meta_many_ctx {
  const char *const *ids;
  const size_t *lens;
  size_t n;
  int *found;
  meta_source src;
} meta_many_ctx;

static proto_status meta_many_body(store *st, MDB_txn *txn, void *vctx, int *mdb_rc) {
  meta_many_ctx *c = vctx;
  for (size_t i = 0; i < c->n; i++) {
    uint64_t num;
    doc_rec r;
    c->found[i] = 0;
    proto_status ps = doc_lookup(st, txn, c->ids[i], c->lens[i], &num, &r);
    if (!ps && num) ps = rewrite_meta(st, txn, num, &r, &c->src, mdb_rc);
    if (ps) return ps;
    c->found[i] = num != 0;
  }
  return PROTO_OK;
}

static proto_status meta_many(store *st, const char *const *ids, size_t n, const meta_source *src,
                              int *found) {
  size_t *lens;
  proto_status ps = ids_checked(st, ids, n, found, &lens);
  meta_many_ctx c = {ids, lens, n, found, *src};
  if (!ps && n) ps = write_run(st, meta_many_body, &c);
  if (ps && found)
    for (size_t i = 0; i < n; i++) found[i] = 0;
  free(lens);
  return ps;
}

proto_status store_doc_set_meta(store *st, const char *id, const char *metadata_json,
                                const unsigned char *content_hash, int *found) {
  meta_source src = {.meta = metadata_json ? metadata_json : "{}", .hash = content_hash};
  int f = 0;
  proto_status ps = meta_many(st, &id, 1, &src, &f);
  if (found) *found = f;
  return ps;
}

proto_status store_update_meta_many(store *st, const char *const *ids, size_t n, store_meta_fn fn,
                                    void *ctx, int *found) {
  meta_source src = {.fn = fn, .fn_ctx = ctx};
  if (!fn) {
    proto_err_set("store: NULL argument");
    return PROTO_EINVAL;
  }
  return meta_many(st, ids, n, &src, found);
}

typedef struct meta_where_ctx {
  where_ctx where;
  meta_source src;
} meta_where_ctx;

static proto_status meta_where_body(store *st, MDB_txn *txn, void *vctx, int *mdb_rc) {
  meta_where_ctx *c = vctx;
  c->where.n = 0; /* a retried transaction starts again */
  proto_status ps = where_collect(st, txn, &c->where);
  for (size_t i = 0; i < c->where.n && !ps; i++) {
    doc_rec r;
    if (!(ps = doc_rec_read(st, txn, c->where.nums[i], &r)))
      ps = rewrite_meta(st, txn, c->where.nums[i], &r, &c->src, mdb_rc);
  }
  return ps;
}

proto_status store_update_meta_where(store *st, store_doc_test test, void *test_ctx,
                                     store_meta_fn fn, void *fn_ctx, size_t *updated) {
  if (updated) *updated = 0;
  if (!st || !test || !fn) {
    proto_err_set("store: NULL argument");
    return PROTO_EINVAL;
  }
  meta_where_ctx c = {{test, test_ctx, NULL, 0, 0}, {.fn = fn, .fn_ctx = fn_ctx}};
  proto_status ps = write_run(st, meta_where_body, &c);
  if (!ps && updated) *updated = c.where.n;
  free(c.where.nums);
  return ps;
}

/* Documents and chunks --------------------------------------------------------- */

static proto_status doc_fill(uint64_t num, const doc_rec *r, store_doc *out) {
  out->doc_id = num;
  out->first_chunk = r->first_chunk;
  out->n_chunks = r->n_chunks;
  out->id = dup_bytes(r->id, r->id_len);
  out->metadata_json = dup_bytes(r->meta, r->meta_len);
  if (!out->id || !out->metadata_json) {
    store_doc_free(out);
    proto_err_set("store: out of memory");
    return PROTO_ENOMEM;
  }
  return PROTO_OK;
}

proto_status store_doc_get(store *st, const char *id, store_doc *out) {
  MDB_txn *txn = NULL;
  uint64_t num;
  doc_rec r;
  if (!st || !out) {
    proto_err_set("store: bad doc_get arguments");
    return PROTO_EINVAL;
  }
  memset(out, 0, sizeof *out);
  proto_status ps = doc_find(st, id, &txn, &num, &r);
  if (ps) return ps;
  ps = doc_fill(num, &r, out);
  rd_end(st, txn);
  return ps;
}

/* The chunks' texts of a document (n from first) end to end into w, and
 * their token count. */
static proto_status doc_text_in(store *st, MDB_txn *txn, uint64_t first, uint32_t n, int with_text,
                                store_doc_whole *w) {
  size_t len = 0;
  chunk_rec r;
  for (uint32_t i = 0; i < n; i++) {
    proto_status ps = chunk_rec_read(st, txn, first + i, &r);
    if (ps == PROTO_ENOTFOUND) return corrupt("a document's chunk is missing");
    if (ps) return ps;
    w->n_tokens += r.n_tokens;
    len += r.text_len;
  }
  if (!with_text) return PROTO_OK;
  if (!(w->text = malloc(len + 1))) {
    proto_err_set("store: out of memory");
    return PROTO_ENOMEM;
  }
  for (uint32_t i = 0; i < n; i++) {
    proto_status ps = chunk_rec_read(st, txn, first + i, &r);
    if (ps) return ps;
    memcpy(w->text + w->text_len, r.text, r.text_len);
    w->text_len += r.text_len;
  }
  w->text[w->text_len] = 0;
  return PROTO_OK;
}

/* Document num (its record r) whole into w, read in txn: record, text when
 * with_text, token count, content hash. */
static proto_status whole_in(store *st, MDB_txn *txn, uint64_t num, const doc_rec *r, int with_text,
                             store_doc_whole *w) {
  const unsigned char *hash = NULL;
  proto_status ps = doc_fill(num, r, &w->doc);
  if (!ps) ps = doc_text_in(st, txn, r->first_chunk, r->n_chunks, with_text, w);
  if (!ps) ps = hash_in(st, txn, num, &hash, &w->has_hash);
  if (hash) memcpy(w->hash, hash, STORE_HASH_BYTES);
  return ps;
}

proto_status store_docs_get_whole(store *st, const char *const *ids, size_t n, int with_text,
                                  store_doc_whole *out, int *found) {
  MDB_txn *txn = NULL;
  if (!st || (n && (!ids || !out || !found))) {
    proto_err_set("store: bad docs_get_whole arguments");
    return PROTO_EINVAL;
  }
  memset(out, 0, n * sizeof *out);
  memset(found, 0, n * sizeof *found);
  proto_status ps = rd_begin(st, &txn);
  for (size_t i = 0; i < n && !ps; i++) {
    size_t len;
    uint64_t num = 0;
    doc_rec r;
    if (!(ps = check_id(ids[i], &len)) && !(ps = doc_lookup(st, txn, ids[i], len, &num, &r)) && num)
      found[i] = !(ps = whole_in(st, txn, num, &r, with_text, &out[i]));
  }
  if (txn) rd_end(st, txn);
  for (size_t i = 0; ps && i < n; i++) {
    store_doc_whole_free(&out[i]);
    found[i] = 0;
  }
  return ps;
}

proto_status store_doc_get_whole(store *st, const char *id, int with_text, store_doc_whole *out) {
  if (!st || !out) {
    proto_err_set("store: bad doc_get_whole arguments");
    return PROTO_EINVAL;
  }
  int found = 0;
  proto_status ps = store_docs_get_whole(st, &id, 1, with_text, out, &found);
  if (ps == PROTO_OK && !found) {
    proto_err_set("store: document not found");
    ps = PROTO_ENOTFOUND;
  }
  return ps;
}

/* Begins a read with a cursor on the documents, at the first with doc num
 * > after (*rc: that get's LMDB code, MDB_NOTFOUND past the end; *k, *v its
 * record). On PROTO_OK both are open: close the cursor, then rd_end. */
static proto_status docs_cursor(store *st, uint64_t after, MDB_txn **txn, MDB_cursor **cur,
                                MDB_val *k, MDB_val *v, int *rc) {
  proto_status ps = rd_begin(st, txn);
  if (ps) return ps;
  if ((*rc = mdb_cursor_open(*txn, st->docs, cur)) != 0) {
    rd_end(st, *txn);
    return mdb_fail(*rc, "mdb_cursor_open docs");
  }
  unsigned char kb[8];
  be64_put(kb, after + 1);
  *k = val_of(kb, 8);
  *rc = mdb_cursor_get(*cur, k, v, MDB_SET_RANGE);
  return PROTO_OK;
}

proto_status store_docs_scan(store *st, uint64_t after, int with_text, store_docs_fn fn,
                             void *ctx) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  if (!st || !fn) {
    proto_err_set("store: bad docs_scan arguments");
    return PROTO_EINVAL;
  }
  if (after == UINT64_MAX) return PROTO_OK;
  MDB_val k, v;
  int rc;
  proto_status ps = docs_cursor(st, after, &txn, &cur, &k, &v, &rc);
  if (ps) return ps;
  for (; !rc && !ps; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    doc_rec r;
    store_doc_whole w;
    memset(&w, 0, sizeof w);
    uint64_t num = k.mv_size == 8 ? be64_get(k.mv_data) : 0;
    if (!num) ps = corrupt("docs key");
    if (!ps) ps = doc_rec_decode(&v, &r);
    if (!ps) ps = whole_in(st, txn, num, &r, with_text, &w);
    if (!ps) ps = fn(ctx, &w);
    store_doc_whole_free(&w);
  }
  if (!ps && rc && rc != MDB_NOTFOUND) ps = mdb_fail(rc, "mdb_cursor_get docs");
  mdb_cursor_close(cur);
  rd_end(st, txn);
  return ps;
}

void store_doc_whole_free(store_doc_whole *w) {
  if (!w) return;
  store_doc_free(&w->doc);
  free(w->text);
  memset(w, 0, sizeof *w);
}

static proto_status doc_by_num_in(store *st, MDB_txn *txn, uint64_t doc_id, store_doc *out) {
  doc_rec r;
  proto_status ps = doc_rec_read(st, txn, doc_id, &r);
  return ps ? ps : doc_fill(doc_id, &r, out);
}

proto_status store_doc_get_by_num(store *st, uint64_t doc_id, store_doc *out) {
  MDB_txn *txn = NULL;
  if (!st || !out) {
    proto_err_set("store: bad doc_get arguments");
    return PROTO_EINVAL;
  }
  memset(out, 0, sizeof *out);
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  ps = doc_by_num_in(st, txn, doc_id, out);
  rd_end(st, txn);
  return ps;
}

proto_status store_docs_list(store *st, uint64_t after, size_t max, store_doc *out, size_t *n,
                             int *more) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  if (!st || !n || !more || (max && !out)) {
    proto_err_set("store: bad docs_list arguments");
    return PROTO_EINVAL;
  }
  *n = 0;
  *more = 0;
  if (after == UINT64_MAX) return PROTO_OK;
  MDB_val k, v;
  int rc;
  proto_status ps = docs_cursor(st, after, &txn, &cur, &k, &v, &rc);
  if (ps) return ps;
  for (; !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (*n == max) {
      *more = 1;
      break;
    }
    doc_rec r;
    if (k.mv_size != 8) {
      ps = corrupt("docs key");
      goto leave;
    }
    if ((ps = doc_rec_decode(&v, &r)) || (ps = doc_fill(be64_get(k.mv_data), &r, &out[*n])))
      goto leave;
    (*n)++;
  }
  if (rc && rc != MDB_NOTFOUND) ps = mdb_fail(rc, "mdb_cursor_get docs");
leave:
  if (cur) mdb_cursor_close(cur);
  rd_end(st, txn);
  if (ps) {
    while (*n) store_doc_free(&out[--*n]);
    *more = 0;
  }
  return ps;
}

void store_doc_free(store_doc *doc) {
  if (!doc) return;
  free(doc->id);
  free(doc->metadata_json);
  doc->id = doc->metadata_json = NULL;
}

/* Copies a chunk record's tokens and text out of the map. */
static proto_status chunk_copy(const chunk_rec *r, int32_t **tokens, uint32_t *n_tokens,
                               char **text, size_t *text_len) {
  *tokens = NULL;
  *n_tokens = r->n_tokens;
  *text_len = r->text_len;
  if (r->n_tokens) {
    *tokens = malloc(sizeof(int32_t) * r->n_tokens);
    if (!*tokens) goto oom;
    for (uint32_t t = 0; t < r->n_tokens; t++)
      (*tokens)[t] = (int32_t)le32_get(r->tokens + 4ull * t);
  }
  *text = dup_bytes(r->text, r->text_len);
  if (!*text) goto oom;
  return PROTO_OK;
oom:
  proto_err_set("store: out of memory");
  return PROTO_ENOMEM;
}

static proto_status chunk_get_in(store *st, MDB_txn *txn, uint64_t chunk_id, store_chunk *out) {
  chunk_rec r, nx;
  proto_status ps = chunk_rec_read(st, txn, chunk_id, &r);
  if (ps == PROTO_ENOTFOUND) {
    proto_err_set("store: chunk %llu not found", (unsigned long long)chunk_id);
    goto leave;
  }
  if (ps) goto leave;
  out->chunk_id = chunk_id;
  out->doc_id = r.doc_id;
  out->ordinal = r.ordinal;
  if ((ps = chunk_copy(&r, &out->tokens, &out->n_tokens, &out->text, &out->text_len))) goto leave;
  /* F: the chunks of a document have consecutive ids, so the continuation is
   * chunk_id + 1 when that chunk belongs to the same document. */
  ps = chunk_id < UINT64_MAX ? chunk_rec_read(st, txn, chunk_id + 1, &nx) : PROTO_ENOTFOUND;
  if (ps == PROTO_OK && nx.doc_id == r.doc_id) {
    if (nx.ordinal != r.ordinal + 1) {
      ps = corrupt("chunk ordinals not consecutive");
      goto leave;
    }
    ps = chunk_copy(&nx, &out->next_tokens, &out->n_next_tokens, &out->next_text,
                    &out->next_text_len);
  } else if (ps == PROTO_OK || ps == PROTO_ENOTFOUND) {
    out->next_text = dup_bytes("", 0);
    ps = out->next_text ? PROTO_OK : PROTO_ENOMEM;
    if (ps) proto_err_set("store: out of memory");
  }
leave:
  if (ps) store_chunk_free(out);
  return ps;
}

proto_status store_chunk_get(store *st, uint64_t chunk_id, store_chunk *out) {
  MDB_txn *txn = NULL;
  if (!st || !out) {
    proto_err_set("store: bad chunk_get arguments");
    return PROTO_EINVAL;
  }
  memset(out, 0, sizeof *out);
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  ps = chunk_get_in(st, txn, chunk_id, out);
  rd_end(st, txn);
  return ps;
}

static proto_status chunk_doc_in(store *st, MDB_txn *txn, uint64_t chunk_id, uint64_t *doc_id,
                                 uint32_t *ordinal) {
  chunk_rec r;
  proto_status ps = chunk_rec_read(st, txn, chunk_id, &r);
  if (ps == PROTO_OK) {
    if (doc_id) *doc_id = r.doc_id;
    if (ordinal) *ordinal = r.ordinal;
  }
  return ps;
}

proto_status store_chunk_doc(store *st, uint64_t chunk_id, uint64_t *doc_id, uint32_t *ordinal) {
  MDB_txn *txn = NULL;
  if (!st) {
    proto_err_set("store: bad chunk_doc arguments");
    return PROTO_EINVAL;
  }
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  ps = chunk_doc_in(st, txn, chunk_id, doc_id, ordinal);
  rd_end(st, txn);
  return ps;
}

/* Snapshots ------------------------------------------------------------------- */

proto_status store_snap_begin(store *st, store_snap *sn) {
  if (!st || !sn) {
    proto_err_set("store: bad snap_begin arguments");
    return PROTO_EINVAL;
  }
  MDB_txn *txn = NULL;
  sn->st = NULL;
  sn->txn = NULL;
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  sn->st = st;
  sn->txn = txn;
  return PROTO_OK;
}

void store_snap_end(store_snap *sn) {
  if (!sn || !sn->st) return;
  rd_end(sn->st, sn->txn);
  sn->st = NULL;
  sn->txn = NULL;
}

proto_status store_snap_chunk_doc(store_snap *sn, uint64_t chunk_id, uint64_t *doc_id,
                                  uint32_t *ordinal) {
  if (!sn || !sn->st) {
    proto_err_set("store: snapshot not begun");
    return PROTO_EINVAL;
  }
  return chunk_doc_in(sn->st, sn->txn, chunk_id, doc_id, ordinal);
}

proto_status store_snap_chunk_get(store_snap *sn, uint64_t chunk_id, store_chunk *out) {
  if (!sn || !sn->st || !out) {
    proto_err_set("store: bad snap_chunk_get arguments");
    return PROTO_EINVAL;
  }
  memset(out, 0, sizeof *out);
  return chunk_get_in(sn->st, sn->txn, chunk_id, out);
}

proto_status store_snap_doc_by_num(store_snap *sn, uint64_t doc_id, store_doc *out) {
  if (!sn || !sn->st || !out) {
    proto_err_set("store: bad snap_doc_by_num arguments");
    return PROTO_EINVAL;
  }
  memset(out, 0, sizeof *out);
  return doc_by_num_in(sn->st, sn->txn, doc_id, out);
}

void store_chunk_free(store_chunk *chunk) {
  if (!chunk) return;
  free(chunk->tokens);
  free(chunk->text);
  free(chunk->next_tokens);
  free(chunk->next_text);
  chunk->tokens = chunk->next_tokens = NULL;
  chunk->text = chunk->next_text = NULL;
  chunk->n_tokens = chunk->n_next_tokens = 0;
  chunk->text_len = chunk->next_text_len = 0;
}

/* A chunk's vector read in txn. */
static proto_status vector_get_in(store *st, MDB_txn *txn, uint64_t chunk_id, float *vec) {
  uint64_t dim;
  proto_status ps = meta_u64(st, txn, K_DIM, 0, &dim);
  if (ps) return ps;
  unsigned char kb[8];
  be64_put(kb, chunk_id);
  MDB_val k = val_of(kb, 8), v;
  int rc = mdb_get(txn, st->vectors, &k, &v);
  if (rc == MDB_NOTFOUND) {
    proto_err_set("store: vector %llu not found", (unsigned long long)chunk_id);
    return PROTO_ENOTFOUND;
  }
  if (rc) return mdb_fail(rc, "mdb_get vectors");
  if (v.mv_size != dim * sizeof(float)) return corrupt("vector length");
  memcpy(vec, v.mv_data, v.mv_size);
  return PROTO_OK;
}

proto_status store_vector_get(store *st, uint64_t chunk_id, float *vec) {
  MDB_txn *txn = NULL;
  if (!st || !vec) {
    proto_err_set("store: bad vector_get arguments");
    return PROTO_EINVAL;
  }
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  ps = vector_get_in(st, txn, chunk_id, vec);
  rd_end(st, txn);
  return ps;
}

proto_status store_snap_vector_get(store_snap *sn, uint64_t chunk_id, float *vec) {
  if (!sn || !sn->st || !vec) {
    proto_err_set("store: bad snap_vector_get arguments");
    return PROTO_EINVAL;
  }
  return vector_get_in(sn->st, sn->txn, chunk_id, vec);
}

proto_status store_stats_get(store *st, store_stats *out) {
  MDB_txn *txn = NULL;
  MDB_stat ds, cs;
  uint64_t dim, next_chunk;
  int rc;
  if (!st || !out) {
    proto_err_set("store: bad stats arguments");
    return PROTO_EINVAL;
  }
  memset(out, 0, sizeof *out);
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  if ((rc = mdb_stat(txn, st->docs, &ds)) || (rc = mdb_stat(txn, st->chunks, &cs))) {
    ps = mdb_fail(rc, "mdb_stat");
    goto leave;
  }
  if ((ps = meta_u64(st, txn, K_DIM, 0, &dim)) ||
      (ps = meta_u64(st, txn, K_NEXT_CHUNK, 1, &next_chunk)))
    goto leave;
  out->docs = ds.ms_entries;
  out->chunks = cs.ms_entries;
  out->next_chunk_id = next_chunk;
  out->dim = (uint32_t)dim;
  out->map_bytes = map_size_now(st);
  MDB_envinfo ei;
  MDB_stat es;
  if (!mdb_env_info(st->env, &ei) && !mdb_env_stat(st->env, &es))
    out->used_bytes = (ei.me_last_pgno + 1) * (size_t)es.ms_psize;
leave:
  rd_end(st, txn);
  return ps;
}

/* Index change feed ----------------------------------------------------------- */

proto_status store_vectors_scan(store *st, uint64_t after_id, size_t batch, store_vectors_fn fn,
                                void *ctx) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  uint64_t *ids = NULL;
  float *vecs = NULL;
  uint64_t dim;
  int rc;
  if (!st || !fn) {
    proto_err_set("store: bad vectors_scan arguments");
    return PROTO_EINVAL;
  }
  if (batch == 0) batch = 1024;
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  if ((ps = meta_u64(st, txn, K_DIM, 0, &dim))) goto leave;
  if (dim == 0 || after_id == UINT64_MAX) goto leave; /* nothing stored */
  if (batch > SIZE_MAX / sizeof(float) / dim) batch = SIZE_MAX / sizeof(float) / dim;
  ids = malloc(batch * sizeof *ids);
  vecs = malloc(batch * dim * sizeof *vecs);
  if (!ids || !vecs) {
    proto_err_set("store: out of memory");
    ps = PROTO_ENOMEM;
    goto leave;
  }
  if ((rc = mdb_cursor_open(txn, st->vectors, &cur))) {
    ps = mdb_fail(rc, "mdb_cursor_open");
    goto leave;
  }
  unsigned char kb[8];
  be64_put(kb, after_id + 1);
  MDB_val k = val_of(kb, 8), v;
  size_t n = 0;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == MDB_SUCCESS;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8) {
      ps = corrupt("vectors key");
      goto leave;
    }
    if (v.mv_size != dim * sizeof(float)) {
      ps = corrupt("vector length");
      goto leave;
    }
    ids[n] = be64_get(k.mv_data);
    memcpy(vecs + n * dim, v.mv_data, v.mv_size);
    if (++n == batch) {
      if ((ps = fn(ctx, ids, vecs, n))) goto leave;
      n = 0;
    }
  }
  if (rc != MDB_NOTFOUND) {
    ps = mdb_fail(rc, "mdb_cursor_get vectors");
    goto leave;
  }
  if (n) ps = fn(ctx, ids, vecs, n);
leave:
  if (cur) mdb_cursor_close(cur);
  rd_end(st, txn);
  free(ids);
  free(vecs);
  return ps;
}

proto_status store_vectors_sample(store *st, size_t n, float **vectors, size_t *n_out) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  float *out = NULL;
  MDB_stat vs;
  uint64_t dim;
  size_t got = 0;
  int rc;
  if (!st || !vectors || !n_out) {
    proto_err_set("store: bad vectors_sample arguments");
    return PROTO_EINVAL;
  }
  *vectors = NULL;
  *n_out = 0;
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  if ((ps = meta_u64(st, txn, K_DIM, 0, &dim))) goto leave;
  if ((rc = mdb_stat(txn, st->vectors, &vs))) {
    ps = mdb_fail(rc, "mdb_stat");
    goto leave;
  }
  uint64_t total = vs.ms_entries;
  uint64_t take = n < total ? n : total;
  if (take == 0 || dim == 0) goto leave;
  if (take > UINT32_MAX || take > SIZE_MAX / sizeof(float) / dim) {
    proto_err_set("store: sample of %zu vectors too large", n);
    ps = PROTO_EINVAL;
    goto leave;
  }
  out = malloc((size_t)take * dim * sizeof *out);
  if (!out) {
    proto_err_set("store: out of memory");
    ps = PROTO_ENOMEM;
    goto leave;
  }
  if ((rc = mdb_cursor_open(txn, st->vectors, &cur))) {
    ps = mdb_fail(rc, "mdb_cursor_open");
    goto leave;
  }
  /* Take entry floor(j * total / take) for j = 0..take-1: evenly spread over
   * the live vectors in id order, deterministic. */
  const uint64_t q = total / take, r = total % take;
  uint64_t pos = 0, target = 0;
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS && got < take;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), pos++) {
    if (pos != target) continue;
    if (v.mv_size != dim * sizeof(float)) {
      ps = corrupt("vector length");
      goto leave;
    }
    memcpy(out + got * dim, v.mv_data, v.mv_size);
    got++;
    target = got * q + (got * r) / take;
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
    ps = mdb_fail(rc, "mdb_cursor_get vectors");
    goto leave;
  }
  *vectors = out;
  *n_out = got;
  out = NULL;
leave:
  if (cur) mdb_cursor_close(cur);
  rd_end(st, txn);
  free(out);
  return ps;
}

proto_status store_tombstones(store *st, uint64_t **ids, size_t *n) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  MDB_stat ds;
  uint64_t *out = NULL;
  size_t got = 0;
  int rc;
  if (!st || !ids || !n) {
    proto_err_set("store: bad tombstones arguments");
    return PROTO_EINVAL;
  }
  *ids = NULL;
  *n = 0;
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  if ((rc = mdb_stat(txn, st->dead, &ds))) {
    ps = mdb_fail(rc, "mdb_stat");
    goto leave;
  }
  if (ds.ms_entries == 0) goto leave;
  if (ds.ms_entries > SIZE_MAX / sizeof *out) {
    proto_err_set("store: too many tombstones");
    ps = PROTO_ENOMEM;
    goto leave;
  }
  out = malloc((size_t)ds.ms_entries * sizeof *out);
  if (!out) {
    proto_err_set("store: out of memory");
    ps = PROTO_ENOMEM;
    goto leave;
  }
  if ((rc = mdb_cursor_open(txn, st->dead, &cur))) {
    ps = mdb_fail(rc, "mdb_cursor_open");
    goto leave;
  }
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS && got < ds.ms_entries;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8) {
      ps = corrupt("dead key");
      goto leave;
    }
    out[got++] = be64_get(k.mv_data);
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
    ps = mdb_fail(rc, "mdb_cursor_get dead");
    goto leave;
  }
  *ids = out;
  *n = got;
  out = NULL;
leave:
  if (cur) mdb_cursor_close(cur);
  rd_end(st, txn);
  free(out);
  return ps;
}

typedef struct mark_ctx {
  uint64_t watermark;
  const uint64_t *applied;
  size_t n;
} mark_ctx;

static proto_status mark_body(store *st, MDB_txn *txn, void *vctx, int *mdb_rc) {
  mark_ctx *c = vctx;
  unsigned char kb[8];
  for (size_t i = 0; i < c->n; i++) {
    be64_put(kb, c->applied[i]);
    MDB_val k = val_of(kb, 8);
    int rc = mdb_del(txn, st->dead, &k, NULL);
    if (rc && rc != MDB_NOTFOUND) {
      *mdb_rc = rc;
      return mdb_fail(rc, "mdb_del dead");
    }
  }
  return meta_put_u64(st, txn, K_WATERMARK, c->watermark, mdb_rc);
}

proto_status store_index_mark(store *st, uint64_t watermark, const uint64_t *applied,
                              size_t n_applied) {
  if (!st || (n_applied && !applied)) {
    proto_err_set("store: bad index_mark arguments");
    return PROTO_EINVAL;
  }
  mark_ctx c = {watermark, applied, n_applied};
  return write_run(st, mark_body, &c);
}

proto_status store_index_watermark(store *st, uint64_t *watermark) {
  MDB_txn *txn = NULL;
  if (!st || !watermark) {
    proto_err_set("store: bad index_watermark arguments");
    return PROTO_EINVAL;
  }
  *watermark = 0;
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  ps = meta_u64(st, txn, K_WATERMARK, 0, watermark);
  rd_end(st, txn);
  return ps;
}

/* Backup and checks ----------------------------------------------------------- */

proto_status store_copy(store *st, const char *dir) {
  if (!st || !dir) {
    proto_err_set("store: bad copy arguments");
    return PROTO_EINVAL;
  }
  /* the copy reads through its own read transaction: the map must not be
   * resized under it (writes that need a growth wait for the copy) */
  proto_status ps = map_rdlock(st);
  if (ps) return ps;
  int rc = mdb_env_copy2(st->env, dir, MDB_CP_COMPACT);
  map_rdunlock(st);
  if (rc) return mdb_fail(rc, "mdb_env_copy2");
  return PROTO_OK;
}

static void check_say(store_check_fn fn, void *ctx, uint64_t *problems, const char *fmt, ...) {
  char msg[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  (*problems)++;
  if (fn) fn(ctx, msg);
}

proto_status store_check(store *st, store_check_fn fn, void *ctx, store_check_result *out) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  memset(out, 0, sizeof *out);
  proto_status ps = rd_begin(st, &txn);
  if (ps) return ps;
  uint64_t dim = 0, *bad = &out->problems;
  if ((ps = meta_u64(st, txn, K_DIM, 0, &dim))) goto leave;
  MDB_stat s_docs, s_keys, s_chunks, s_vecs;
  int rc;
  if ((rc = mdb_stat(txn, st->docs, &s_docs)) || (rc = mdb_stat(txn, st->doc_keys, &s_keys)) ||
      (rc = mdb_stat(txn, st->chunks, &s_chunks)) || (rc = mdb_stat(txn, st->vectors, &s_vecs))) {
    ps = mdb_fail(rc, "mdb_stat");
    goto leave;
  }
  if ((rc = mdb_cursor_open(txn, st->docs, &cur))) {
    ps = mdb_fail(rc, "mdb_cursor_open");
    goto leave;
  }
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    doc_rec r;
    uint64_t num = k.mv_size == 8 ? be64_get(k.mv_data) : 0;
    out->docs++;
    if (doc_rec_decode(&v, &r)) {
      check_say(fn, ctx, bad, "document #%llu: its record is corrupt", (unsigned long long)num);
      continue;
    }
    for (uint32_t j = 0; j < r.n_chunks; j++) {
      uint64_t c = r.first_chunk + j;
      chunk_rec cr;
      unsigned char kb[8];
      be64_put(kb, c);
      MDB_val ck = val_of(kb, 8), vv;
      proto_status cs = chunk_rec_read(st, txn, c, &cr);
      if (cs == PROTO_ENOTFOUND)
        check_say(fn, ctx, bad, "document '%.*s': chunk %llu is missing", (int)r.id_len, r.id,
                  (unsigned long long)c);
      else if (cs || cr.doc_id != num || cr.ordinal != j)
        check_say(fn, ctx, bad, "document '%.*s': chunk %llu is corrupt or not its own",
                  (int)r.id_len, r.id, (unsigned long long)c);
      else out->chunks++;
      int vr = mdb_get(txn, st->vectors, &ck, &vv);
      if (vr == MDB_NOTFOUND)
        check_say(fn, ctx, bad, "document '%.*s': chunk %llu has no vector", (int)r.id_len, r.id,
                  (unsigned long long)c);
      else if (vr || vv.mv_size != dim * sizeof(float))
        check_say(fn, ctx, bad, "document '%.*s': chunk %llu has a vector of %zu bytes, not %llu",
                  (int)r.id_len, r.id, (unsigned long long)c, vr ? (size_t)0 : vv.mv_size,
                  (unsigned long long)(dim * sizeof(float)));
      else out->vectors++;
    }
  }
  if (rc != MDB_NOTFOUND) {
    ps = mdb_fail(rc, "reading docs");
    goto leave;
  }
  if (s_chunks.ms_entries != out->chunks)
    check_say(fn, ctx, bad, "%llu chunk records, %llu belong to documents",
              (unsigned long long)s_chunks.ms_entries, (unsigned long long)out->chunks);
  if (s_vecs.ms_entries != out->vectors)
    check_say(fn, ctx, bad, "%llu vector records, %llu belong to chunks of documents",
              (unsigned long long)s_vecs.ms_entries, (unsigned long long)out->vectors);
  if (s_keys.ms_entries != s_docs.ms_entries)
    check_say(fn, ctx, bad, "%llu document keys for %llu documents",
              (unsigned long long)s_keys.ms_entries, (unsigned long long)s_docs.ms_entries);
leave:
  if (cur) mdb_cursor_close(cur);
  rd_end(st, txn);
  return ps;
}
