/* backup.c - backups that restore, and a check of a database (srv.h:
 * srv_backup, srv_restore, srv_verify).
 *
 * A backup is a directory: db/data.mdb, LMDB's own compacted copy taken in
 * one read transaction (store_copy), so it holds exactly the writes
 * committed (acknowledged) before it began, and manifest.json (format,
 * version, models' fingerprints, counts, index watermark, size and SHA-256 of
 * data.mdb). The derived indexes (index.faiss, lexical.sqlite) are not
 * copied: they follow LMDB, and a restored database builds them from it
 * (what a start does with a missing index file), which is both smaller and
 * never out of step with the copy.
 */
#include "engine_priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BACKUP_FORMAT "retrod-backup/1"

static char *join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", a, b);
  return p;
}

/* SHA-256 (hex) and size of a file. */
static proto_status file_sha256(const char *path, char hex[65], uint64_t *bytes) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return srv__fail(PROTO_EIO, "%s: %s", path, strerror(errno));
  static _Thread_local unsigned char buf[1 << 20];
  proto_sha256 h;
  proto_sha256_init(&h);
  *bytes = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      close(fd);
      return srv__fail(PROTO_EIO, "reading %s: %s", path, strerror(errno));
    }
    if (r == 0) break;
    proto_sha256_update(&h, buf, (size_t)r);
    *bytes += (uint64_t)r;
  }
  close(fd);
  proto_sha256_final_hex(&h, hex);
  return PROTO_OK;
}

static proto_status fsync_path(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    int err = errno;
    if (fd >= 0) close(fd);
    return srv__fail(PROTO_EIO, "fsync %s: %s", path, strerror(err));
  }
  close(fd);
  return PROTO_OK;
}

static void meta_set(store *st, json_t *o, const char *key) {
  char *v = NULL;
  if (store_meta_get(st, key, &v) == PROTO_OK && v) json_object_set_new(o, key, json_string(v));
  free(v);
}

/* The manifest's description of the database in dir (opened as a store):
 * models, counts, watermark; with a store check. */
static proto_status describe(const char *dir, json_t *m, store_check_result *chk) {
  store *st = NULL;
  proto_status s = store_open(dir, NULL, &st);
  if (s != PROTO_OK) return srv__fail(s, "opening the copy: %s", store_last_error());
  store_stats ss;
  uint64_t wm = 0;
  if ((s = store_stats_get(st, &ss)) != PROTO_OK ||
      (s = store_index_watermark(st, &wm)) != PROTO_OK ||
      (s = store_check(st, NULL, NULL, chk)) != PROTO_OK) {
    s = srv__fail(s, "reading the copy: %s", store_last_error());
    store_close(st);
    return s;
  }
  const char *keys[] = {"encoder", "chunk_tokenizer", "chunk_len", "encoder_path", "decoder_path"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) meta_set(st, m, keys[i]);
  json_object_set_new(m, "dim", json_integer(ss.dim));
  json_object_set_new(m, "documents", json_integer((json_int_t)ss.docs));
  json_object_set_new(m, "chunks", json_integer((json_int_t)ss.chunks));
  json_object_set_new(m, "next_chunk_id", json_integer((json_int_t)ss.next_chunk_id));
  json_object_set_new(m, "index_watermark", json_integer((json_int_t)wm));
  store_close(st);
  return PROTO_OK;
}

proto_status srv_backup(store *st, const char *out_dir, char **manifest_json) {
  if (manifest_json) *manifest_json = NULL;
  if (!st || !out_dir) return srv__fail(PROTO_EINVAL, "srv_backup: NULL argument");
  char *db = join(out_dir, "db"), *mdb = join(out_dir, "db/data.mdb"),
       *lock = join(out_dir, "db/lock.mdb"), *man = join(out_dir, "manifest.json"),
       *tmp = join(out_dir, "manifest.json.tmp");
  json_t *m = json_object();
  proto_status s = PROTO_OK;
  double t0 = proto_now();
  if (!db || !mdb || !lock || !man || !tmp || !m) {
    s = srv__fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  if (mkdir(out_dir, 0755) != 0) {
    s = srv__fail(errno == EEXIST ? PROTO_EINVAL : PROTO_EIO, "%s: %s%s", out_dir, strerror(errno),
                  errno == EEXIST ? " (a backup goes into a new directory)" : "");
    goto leave;
  }
  if (mkdir(db, 0755) != 0) {
    s = srv__fail(PROTO_EIO, "%s: %s", db, strerror(errno));
    goto leave;
  }
  if ((s = store_copy(st, db)) != PROTO_OK) {
    s = srv__fail(s, "copying the database: %s", store_last_error());
    goto leave;
  }
  double copy_s = proto_now() - t0;
  store_check_result chk;
  json_object_set_new(m, "format", json_string(BACKUP_FORMAT));
  json_object_set_new(m, "version", json_string(RETRO_VERSION));
  char when[32];
  time_t now = time(NULL);
  struct tm tm;
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
  json_object_set_new(m, "created", json_string(when));
  if ((s = describe(out_dir, m, &chk)) != PROTO_OK) goto leave;
  unlink(lock);
  if (chk.problems) {
    s = srv__fail(PROTO_ECORRUPT, "the copy has %llu problem(s): run retro verify on the database",
                  (unsigned long long)chk.problems);
    goto leave;
  }
  char hex[65];
  uint64_t bytes;
  if ((s = file_sha256(mdb, hex, &bytes)) != PROTO_OK || (s = fsync_path(mdb)) != PROTO_OK ||
      (s = fsync_path(db)) != PROTO_OK)
    goto leave;
  json_t *files = json_array(), *f = json_object();
  json_object_set_new(f, "path", json_string("db/data.mdb"));
  json_object_set_new(f, "bytes", json_integer((json_int_t)bytes));
  json_object_set_new(f, "sha256", json_string(hex));
  json_array_append_new(files, f);
  json_object_set_new(m, "files", files);
  json_object_set_new(m, "copy_seconds", json_real(copy_s));
  /* the manifest last, atomically: a backup without one is incomplete */
  if (json_dump_file(m, tmp, JSON_INDENT(2)) != 0 || fsync_path(tmp) != PROTO_OK ||
      rename(tmp, man) != 0 || fsync_path(out_dir) != PROTO_OK) {
    s = srv__fail(PROTO_EIO, "writing %s: %s", man, strerror(errno));
    goto leave;
  }
  if (manifest_json) *manifest_json = json_dumps(m, JSON_COMPACT);
leave:
  json_decref(m);
  free(db);
  free(mdb);
  free(lock);
  free(man);
  free(tmp);
  return s;
}

/* Loads and checks a backup's manifest and files; *out the manifest. */
static proto_status check_backup(const char *dir, json_t **out) {
  char *man = join(dir, "manifest.json");
  json_error_t je;
  json_t *m = man ? json_load_file(man, JSON_REJECT_DUPLICATES, &je) : NULL;
  proto_status s = PROTO_OK;
  *out = NULL;
  if (!m) {
    s = access(man ? man : "", F_OK) != 0
            ? srv__fail(PROTO_ENOTFOUND, "%s: missing (not a backup, or an incomplete one)", man)
            : srv__fail(PROTO_ECORRUPT, "%s: %s (damaged)", man, je.text);
    goto leave;
  }
  const char *fmt = json_string_value(json_object_get(m, "format"));
  json_t *files = json_object_get(m, "files");
  if (!fmt || strcmp(fmt, BACKUP_FORMAT) != 0 || !json_is_array(files) ||
      json_array_size(files) == 0) {
    s = srv__fail(PROTO_EMISMATCH, "%s: not a %s manifest", man, BACKUP_FORMAT);
    goto leave;
  }
  size_t i;
  json_t *f;
  json_array_foreach(files, i, f) {
    const char *rel = json_string_value(json_object_get(f, "path"));
    const char *want = json_string_value(json_object_get(f, "sha256"));
    json_t *jb = json_object_get(f, "bytes");
    if (!rel || !want || !json_is_integer(jb) || strstr(rel, "..") || rel[0] == '/') {
      s = srv__fail(PROTO_ECORRUPT, "%s: files[%zu] is malformed", man, i);
      goto leave;
    }
    char *path = join(dir, rel), hex[65];
    uint64_t bytes = 0;
    struct stat sb;
    if (!path || stat(path, &sb) != 0) {
      s = srv__fail(PROTO_ENOTFOUND, "%s: missing", path ? path : rel);
    } else if ((uint64_t)sb.st_size != (uint64_t)json_integer_value(jb)) {
      s = srv__fail(PROTO_ECORRUPT, "%s: %llu bytes, the manifest says %lld (truncated or damaged)",
                    path, (unsigned long long)sb.st_size, (long long)json_integer_value(jb));
    } else if ((s = file_sha256(path, hex, &bytes)) == PROTO_OK && strcmp(hex, want) != 0) {
      s = srv__fail(PROTO_ECORRUPT,
                    "%s: SHA-256 %.16s..., the manifest says %.16s... (damaged or altered)", path,
                    hex, want);
    }
    free(path);
    if (s != PROTO_OK) goto leave;
  }
  *out = m;
  m = NULL;
leave:
  json_decref(m);
  free(man);
  return s;
}

/* 1 when dir is absent or an empty directory. */
static int empty_or_absent(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT;
  struct dirent *de;
  int empty = 1;
  while ((de = readdir(d)) != NULL)
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
  closedir(d);
  return empty;
}

static proto_status copy_file(const char *from, const char *to) {
  int in = open(from, O_RDONLY | O_CLOEXEC), out = -1;
  proto_status s = PROTO_OK;
  static _Thread_local char buf[1 << 20];
  if (in < 0) return srv__fail(PROTO_EIO, "%s: %s", from, strerror(errno));
  out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (out < 0) {
    s = srv__fail(PROTO_EIO, "%s: %s", to, strerror(errno));
    goto leave;
  }
  for (;;) {
    ssize_t r = read(in, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      s = srv__fail(PROTO_EIO, "reading %s: %s", from, strerror(errno));
      goto leave;
    }
    if (r == 0) break;
    for (ssize_t o = 0; o < r;) {
      ssize_t w = write(out, buf + o, (size_t)(r - o));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        s = srv__fail(errno == ENOSPC ? PROTO_ENOSPACE : PROTO_EIO, "writing %s: %s", to,
                      strerror(errno));
        goto leave;
      }
      o += w;
    }
  }
  if (fsync(out) != 0) s = srv__fail(PROTO_EIO, "fsync %s: %s", to, strerror(errno));
leave:
  close(in);
  if (out >= 0) close(out);
  return s;
}

proto_status srv_restore(const char *backup_dir, const char *data_dir) {
  if (!backup_dir || !data_dir) return srv__fail(PROTO_EINVAL, "srv_restore: NULL argument");
  json_t *m = NULL, *got = json_object();
  char *db = join(data_dir, "db"), *from = join(backup_dir, "db/data.mdb"),
       *to = join(data_dir, "db/data.mdb"), *lock = join(data_dir, "db/lock.mdb");
  int made = 0;
  proto_status s;
  if (!db || !from || !to || !lock || !got) {
    s = srv__fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  if ((s = check_backup(backup_dir, &m)) != PROTO_OK) goto leave;
  if (!empty_or_absent(data_dir)) {
    s = srv__fail(PROTO_EINVAL, "%s: not empty (restore into a new directory)", data_dir);
    goto leave;
  }
  if ((mkdir(data_dir, 0755) != 0 && errno != EEXIST) || mkdir(db, 0755) != 0) {
    s = srv__fail(PROTO_EIO, "%s: %s", db, strerror(errno));
    goto leave;
  }
  made = 1;
  if ((s = copy_file(from, to)) != PROTO_OK || (s = fsync_path(db)) != PROTO_OK) goto leave;
  /* what the copy holds must be what the manifest says */
  store_check_result chk;
  if ((s = describe(data_dir, got, &chk)) != PROTO_OK) goto leave;
  if (chk.problems) {
    s = srv__fail(PROTO_ECORRUPT,
                  "the restored database has %llu problem(s) (retro verify names them)",
                  (unsigned long long)chk.problems);
    goto leave;
  }
  const char *keys[] = {"encoder",   "chunk_tokenizer", "dim",
                        "documents", "chunks",          "next_chunk_id"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    json_t *a = json_object_get(m, keys[i]), *b = json_object_get(got, keys[i]);
    if (!json_equal(a, b)) {
      char *as = a ? json_dumps(a, JSON_ENCODE_ANY) : NULL,
           *bs = b ? json_dumps(b, JSON_ENCODE_ANY) : NULL;
      s = srv__fail(PROTO_EMISMATCH,
                    "%s: the manifest says %s, the database holds %s (mismatched backup)", keys[i],
                    as ? as : "nothing", bs ? bs : "nothing");
      free(as);
      free(bs);
      goto leave;
    }
  }
  s = PROTO_OK;
leave:
  if (s != PROTO_OK && made) { /* leave nothing half restored */
    unlink(to);
    unlink(lock);
    rmdir(db);
    rmdir(data_dir);
  }
  json_decref(m);
  json_decref(got);
  free(db);
  free(from);
  free(to);
  free(lock);
  return s;
}

/* Verify ------------------------------------------------------------------------ */

typedef struct verify_ctx {
  srv_say_fn say;
  void *ctx;
  uint64_t problems;
  uint64_t upto; /* count live ids <= upto */
  uint64_t live_upto;
} verify_ctx;

static void problem(verify_ctx *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(verify_ctx *v, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  v->problems++;
  if (v->say) v->say(v->ctx, msg);
}

static void on_store_problem(void *ctx, const char *msg) {
  verify_ctx *v = ctx;
  if (v->say) v->say(v->ctx, msg);
}

static proto_status count_upto(void *ctx, const uint64_t *ids, const float *vecs, size_t n) {
  verify_ctx *v = ctx;
  (void)vecs;
  for (size_t i = 0; i < n; i++) v->live_upto += ids[i] <= v->upto;
  return PROTO_OK;
}

/* Both indexes are derived from the store, so a damaged one is never lost
 * data: what verify says to do about it. */
#define REBUILD_HINT " (derived from the database: remove the file, and the next start rebuilds it)"

/* The FAISS file against the store: whole, not behind the store's watermark,
 * holding exactly the live chunks up to its watermark plus those deleted
 * since it was saved (their tombstones). */
static void verify_faiss(verify_ctx *v, const char *dir, store *st, const store_stats *ss) {
  char *path = join(dir, "index.faiss");
  uint64_t fw = 0, ntotal = 0, sw = 0;
  uint32_t fdim = 0;
  proto_status s = path ? idx_file_info(path, &fw, &ntotal, &fdim) : PROTO_ENOMEM;
  if (s == PROTO_ENOTFOUND) {
    problem(v, "index.faiss: missing (the next start rebuilds it from the database)");
  } else if (s != PROTO_OK) {
    problem(v, "index.faiss: %s%s", idx_last_error(), REBUILD_HINT);
  } else if (store_index_watermark(st, &sw) != PROTO_OK) {
    problem(v, "index watermark: %s", store_last_error());
  } else if (fdim != ss->dim && ss->dim) {
    problem(v, "index.faiss: dimension %u, the database's %u%s", fdim, ss->dim, REBUILD_HINT);
  } else if (fw < sw) {
    problem(v,
            "index.faiss: stale watermark: it was saved up to chunk %llu, the database says %llu "
            "(an older file?)%s",
            (unsigned long long)fw, (unsigned long long)sw, REBUILD_HINT);
  } else {
    v->upto = fw;
    v->live_upto = 0;
    uint64_t *dead = NULL;
    size_t nd = 0, dead_upto = 0;
    if (store_vectors_scan(st, 0, 0, count_upto, v) != PROTO_OK ||
        store_tombstones(st, &dead, &nd) != PROTO_OK) {
      problem(v, "reading the database: %s", store_last_error());
    } else {
      for (size_t i = 0; i < nd; i++) dead_upto += dead[i] <= fw;
      if (ntotal != v->live_upto + dead_upto)
        problem(v,
                "index.faiss: %llu vectors; the database has %llu live chunks up to its watermark "
                "%llu and %zu deleted since it was saved%s",
                (unsigned long long)ntotal, (unsigned long long)v->live_upto,
                (unsigned long long)fw, dead_upto, REBUILD_HINT);
    }
    free(dead);
  }
  free(path);
}

static void verify_lexical(verify_ctx *v, const char *dir, store *st, const store_stats *ss) {
  char *path = join(dir, "lexical.sqlite");
  lex *lx = NULL;
  if (!path) return;
  if (access(path, F_OK) != 0) {
    problem(v, "lexical.sqlite: missing (the next start rebuilds it from the database)");
  } else if (lex_open(path, st, 1, &lx) != PROTO_OK) {
    problem(v, "lexical.sqlite: %s%s", lex_last_error(), REBUILD_HINT);
  } else {
    lex_info li;
    if (lex_info_get(lx, &li) == PROTO_OK && li.chunks != ss->chunks)
      problem(v, "lexical.sqlite: %llu chunks, the database %llu live chunks%s",
              (unsigned long long)li.chunks, (unsigned long long)ss->chunks, REBUILD_HINT);
  }
  lex_close(lx);
  free(path);
}

/* The salts a document's content hash may have used in this database: its
 * encoder's and chunk tokenizer's fingerprints and its dimension from meta;
 * chunks embedded by ids or by text. 0 for a database that has none yet. */
static int content_salts(store *st, unsigned char salts[2][32]) {
  char *enc = NULL, *ctok = NULL, *dim = NULL;
  int have = store_meta_get(st, "encoder", &enc) == PROTO_OK &&
             store_meta_get(st, "chunk_tokenizer", &ctok) == PROTO_OK &&
             store_meta_get(st, "dim", &dim) == PROTO_OK && enc && ctok && dim;
  if (have)
    for (int by_ids = 0; by_ids < 2; by_ids++)
      srv__salt_of(enc, ctok, (uint32_t)strtoul(dim, NULL, 10), by_ids, salts[by_ids]);
  free(enc);
  free(ctok);
  free(dim);
  return have;
}

/* What verify_document needs besides the document. */
typedef struct contents_check {
  verify_ctx *v;
  unsigned char salts[2][32];
  uint64_t checked;
} contents_check;

/* One document against the content hash its last write stored (text,
 * metadata and hash read in one transaction: the scan's). */
static proto_status verify_document(void *ctx, const store_doc_whole *w) {
  contents_check *c = ctx;
  int same = !w->has_hash; /* stored before content hashes: nothing to check against */
  if (w->has_hash) c->checked++;
  for (int i = 0; i < 2 && !same; i++) {
    unsigned char now[STORE_HASH_BYTES];
    srv__content_hash(c->salts[i], w->text, w->text_len, w->doc.metadata_json, now);
    same = !memcmp(now, w->hash, sizeof now);
  }
  if (!same)
    problem(c->v,
            "document \"%.200s\": its text or metadata is not what was written (its content hash "
            "differs): the database is damaged; restore a backup, or index the document again",
            w->doc.id);
  return PROTO_OK;
}

/* Vectors off the unit sphere: every stored vector is L2-normalised (the
 * encoder's, and retro index --vectors normalises), so one that is not
 * finite or not of length 1 was changed since (a flipped exponent or high
 * mantissa bit; low bits go unseen, and change a score too little to
 * matter). */
typedef struct unit_check {
  uint32_t dim;
  uint64_t bad, first_bad, seen;
} unit_check;

static proto_status check_units(void *ctx, const uint64_t *ids, const float *vecs, size_t n) {
  unit_check *u = ctx;
  for (size_t i = 0; i < n; i++) {
    const float *v = vecs + i * u->dim;
    double s = 0;
    for (uint32_t j = 0; j < u->dim; j++) s += (double)v[j] * v[j];
    if (!(fabs(s - 1.0) <= 1e-4) && !u->bad++) u->first_bad = ids[i];
  }
  u->seen += n;
  return PROTO_OK;
}

static void verify_vectors(verify_ctx *v, store *st, const store_stats *ss) {
  unit_check u = {ss->dim, 0, 0, 0};
  if (!ss->dim) return;
  if (store_vectors_scan(st, 0, 0, check_units, &u) != PROTO_OK)
    problem(v, "reading the vectors: %s", store_last_error());
  else if (u.bad)
    problem(v,
            "vectors: %llu of %llu are not of unit length (the first: chunk %llu): the database is "
            "damaged; restore a backup, or index their documents again",
            (unsigned long long)u.bad, (unsigned long long)u.seen, (unsigned long long)u.first_bad);
}

/* Every document's stored text and metadata against its content hash: the
 * one check of what LMDB itself does not checksum. */
static void verify_contents(verify_ctx *v, store *st) {
  contents_check c = {.v = v};
  if (!content_salts(st, c.salts)) return;
  if (store_docs_scan(st, 0, 1, verify_document, &c) != PROTO_OK)
    problem(v, "reading the documents: %s", store_last_error());
  if (v->say) {
    char line[160];
    snprintf(line, sizeof line, "contents: %llu documents checked against their content hashes",
             (unsigned long long)c.checked);
    v->say(v->ctx, line);
  }
}

/* The chunk tokenizer the database records (its fingerprint), opened from
 * the model directory it records: the decoder's, else the encoder's. NULL,
 * with why in why, when it cannot be had. */
static tok *recorded_chunk_tokenizer(store *st, char *why, size_t n) {
  char *dec = NULL, *enc = NULL, *fp = NULL;
  tok *t = NULL;
  store_meta_get(st, "decoder_path", &dec);
  store_meta_get(st, "encoder_path", &enc);
  store_meta_get(st, "chunk_tokenizer", &fp);
  const char *dir = dec && strcmp(dec, "none") ? dec : enc;
  if (!dir || !fp) snprintf(why, n, "the database records no model paths");
  else if (tok_open_dir(dir, &t) != PROTO_OK)
    snprintf(why, n, "no tokenizer at %.300s, the models the database records", dir);
  else if (strcmp(tok_fingerprint(t), fp))
    snprintf(why, n, "the tokenizer at %.300s is not the one the chunks were made with", dir);
  else if (tok_get_kind(t) != TOK_BPE)
    snprintf(why, n, "a WordPiece tokenizer does not give back the text it read");
  if (*why) tok_close(t);
  free(dec);
  free(enc);
  free(fp);
  return *why ? NULL : t;
}

static proto_status collect_ids(void *ctx, const uint64_t *ids, const float *vecs, size_t n) {
  (void)vecs;
  proto_buf *b = ctx;
  proto_buf_add(b, ids, n * sizeof *ids);
  return b->failed ? PROTO_ENOMEM : PROTO_OK;
}

/* One chunk: do its tokens (what the decoder reads) decode to its text?
 * 1 when they do or it is gone (deleted since the ids were read). */
static int chunk_tokens_ok(store *st, const tok *t, uint64_t id) {
  store_chunk c = {0};
  char *text = NULL;
  size_t len = 0;
  proto_status s = store_chunk_get(st, id, &c);
  int ok = s == PROTO_ENOTFOUND ||
           (s == PROTO_OK && tok_decode(t, c.tokens, c.n_tokens, &text, &len) == PROTO_OK &&
            len == c.text_len && !memcmp(text, c.text, len));
  free(text);
  store_chunk_free(&c);
  return ok;
}

/* Every chunk's token ids against its text. The content hash covers a
 * document's text, not the ids the decoder is fed, so a changed id went
 * unseen; a byte-level BPE gives back exactly the bytes it read. */
static void verify_tokens(verify_ctx *v, store *st) {
  char why[400] = "", line[256];
  tok *t = recorded_chunk_tokenizer(st, why, sizeof why);
  if (!t) {
    snprintf(line, sizeof line, "tokens: not checked: %.180s", why);
    if (v->say) v->say(v->ctx, line);
    return;
  }
  proto_buf ids;
  proto_buf_init(&ids);
  if (store_vectors_scan(st, 0, 0, collect_ids, &ids) != PROTO_OK) {
    problem(v, "reading the chunk ids: %s", store_last_error());
  } else {
    uint64_t n = ids.len / sizeof(uint64_t), bad = 0, first = 0;
    for (uint64_t i = 0; i < n; i++) {
      uint64_t id;
      memcpy(&id, ids.data + i * sizeof id, sizeof id);
      if (!chunk_tokens_ok(st, t, id) && !bad++) first = id;
    }
    if (bad)
      problem(v,
              "tokens: %llu of %llu chunks' token ids do not decode to their text (the first: "
              "chunk %llu): the database is damaged; restore a backup, or index their documents "
              "again",
              (unsigned long long)bad, (unsigned long long)n, (unsigned long long)first);
    snprintf(line, sizeof line, "tokens: %llu chunks' token ids checked against their texts",
             (unsigned long long)n);
    if (v->say) v->say(v->ctx, line);
  }
  proto_buf_free(&ids);
  tok_close(t);
}

proto_status srv_verify(const char *dir, srv_say_fn say, void *ctx, uint64_t *problems) {
  verify_ctx v = {.say = say, .ctx = ctx};
  char *mdb = join(dir, "db/data.mdb"), *man = join(dir, "manifest.json");
  store *st = NULL;
  json_t *m = NULL;
  proto_status s = PROTO_OK;
  int is_backup;
  *problems = 0;
  if (!mdb || !man) {
    s = srv__fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  is_backup = access(man, F_OK) == 0;
  if (is_backup) { /* opening its LMDB would write to it: the checksums say enough */
    if (check_backup(dir, &m) != PROTO_OK) problem(&v, "%s", srv_last_error());
    else if (say) say(ctx, "backup: every file matches the manifest's size and SHA-256");
    goto leave;
  }
  if (access(mdb, F_OK) != 0) {
    s = srv__fail(PROTO_ENOTFOUND, "%s: missing (not a retrod database)", mdb);
    goto leave;
  }
  store_options so = {.read_only_fallback = 1}; /* a check that only reads */
  if ((s = store_open(dir, &so, &st)) != PROTO_OK) {
    problem(&v, "database: %s", store_last_error());
    s = PROTO_OK;
    goto leave;
  }
  store_check_result chk;
  store_stats ss;
  if ((s = store_check(st, on_store_problem, &v, &chk)) != PROTO_OK ||
      (s = store_stats_get(st, &ss)) != PROTO_OK) {
    s = srv__fail(s, "checking the database: %s", store_last_error());
    goto leave;
  }
  v.problems += chk.problems;
  if (say) {
    char line[200];
    snprintf(line, sizeof line, "database: %llu documents, %llu chunks, %llu vectors checked",
             (unsigned long long)chk.docs, (unsigned long long)chk.chunks,
             (unsigned long long)chk.vectors);
    say(ctx, line);
  }
  verify_contents(&v, st);
  verify_tokens(&v, st);
  verify_vectors(&v, st, &ss);
  verify_faiss(&v, dir, st, &ss);
  verify_lexical(&v, dir, st, &ss);
leave:
  store_close(st);
  json_decref(m);
  free(mdb);
  free(man);
  *problems = v.problems;
  return s;
}
