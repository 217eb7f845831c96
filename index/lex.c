/* lex.c - the lexical index: SQLite FTS5 over chunk texts, kept in step with
 * the store (see lex.h).
 *
 * Decisions:
 * - SQLite FTS5, not an inverted index of our own and not Xapian: FTS5 is a
 *   well-kept, public-domain C library already on every Debian machine
 *   (libsqlite3), with BM25 (bm25()), prefix-free phrase queries, custom
 *   tokenizers and the porter stemmer; it stores postings in a B-tree with
 *   transactions, so a crash leaves the last committed state. Xapian would
 *   bring a C++ API and the GPL for no gain at our sizes.
 * - The file is derived data. Its watermark and chunk count are written in
 *   the same SQLite transaction as the postings, so they always describe the
 *   file. At open, after replaying what is past the watermark and the
 *   tombstones, a count that differs from the store's live chunks (a
 *   tombstone cleared by a FAISS save while this file lost its last commit,
 *   a file copied from elsewhere) makes us reconcile id by id. WAL mode with
 *   synchronous=NORMAL: a process crash loses nothing committed; a power
 *   loss may lose the last commits, which the next open replays.
 * - Tokens suit technical text (see lex.h): a compound such as os.path.join
 *   is indexed whole and by its parts at the same position. Queries ask for
 *   each word whole and for its parts, OR'ed: the rare whole identifier
 *   scores high, its parts give recall.
 * - Titles: each row also holds its document's title (first heading and
 *   id; see title_of), which raised MRR@10 on the retrieval bench's tuning
 *   half (docs/RETRIEVAL.md, "Titles").
 * - Stored text: the FTS5 table keeps its own copy of each chunk's text
 *   (about 260 bytes a chunk), because removing a row's postings needs the
 *   text it was indexed from and the store no longer has a deleted chunk's.
 */
#include "lex.h"

#include "best_k.h"

#include <sqlite3.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
  LEX_SCHEMA = 2,      /* bump when the table or the tokenizer changes (2: title) */
  LEX_MAX_TITLE = 200, /* bytes of a heading taken for the title */
  LEX_MAX_TOKEN = 64,  /* longer words are cut (hashes, base64 runs) */
  LEX_MAX_TERMS = 64,  /* distinct query terms used */
};
/* Query terms by document frequency (the share of chunks holding them):
 * frequent, in more than LEX_FREQUENT_DF of the chunks ("the", "a", "is",
 * "for"), are left out; common, in more than LEX_COMMON_DF, count only in
 * chunks that hold a rare term; rare, the rest, find the candidates. Below
 * LEX_MIN_COMMON chunks every term is rare (its posting list costs well
 * under a millisecond). The shares were chosen on the tuning half of
 * tests/bench/retrieval (see the README, "Search modes"). */
#define LEX_FREQUENT_DF 0.2
#define LEX_COMMON_DF 0.01
enum { LEX_MIN_COMMON = 300 };

typedef struct reader {
  sqlite3 *db;
  sqlite3_stmt *query;
  sqlite3_stmt *query_in; /* the same within a range of rowids (lex_search_in) */
  fts5_tokenizer stemmer; /* FTS5's porter over our tokenizer, as the */
  Fts5Tokenizer *stem;    /* table uses it: a query word's indexed form */
  struct reader *next;
} reader;

struct lex {
  char *path;
  char *uri; /* read-only on a file system it cannot write: "file:PATH?immutable=1" */
  store *st;
  int read_only;
  int rebuilt_at_open;       /* lex_info's */
  sqlite3 *w;                /* the writer connection (NULL when read-only) */
  pthread_mutex_t wmu;       /* serialises lex_sync / lex_rebuild */
  pthread_mutex_t pmu;       /* the reader pool */
  reader *idle;              /* readers not in use */
  uint64_t watermark, count; /* as committed; read under wmu or atomically enough for info */
  /* The common and frequent terms (indexed form, sorted, with their
   * document frequency), read from the vocabulary at open and when the
   * count drifts by a tenth (see match_expr). Under pmu. */
  char **freq;
  uint64_t *freq_df;
  size_t n_freq;
  uint64_t freq_count;
};

const char *lex_last_error(void) { return proto_err_get(); }

static proto_status db_fail(sqlite3 *db, const char *what) {
  return proto_fail(PROTO_EINDEX, "lexical index: %s: %s", what,
                    db ? sqlite3_errmsg(db) : "no connection");
}

/* Tokenizer ------------------------------------------------------------------- */

static int is_word(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c >= 0x80;
}
static int is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
static int is_lower_or_digit(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* Lower-cases s[0..n) into buf (at most LEX_MAX_TOKEN bytes); returns the length. */
static size_t lower(const unsigned char *s, size_t n, char *buf) {
  if (n > LEX_MAX_TOKEN) n = LEX_MAX_TOKEN;
  for (size_t i = 0; i < n; i++) buf[i] = (char)(is_upper(s[i]) ? s[i] + 32 : s[i]);
  return n;
}

/* The parts of the word s[b..e): split at '.' and '_' (dropped) and at
 * camelCase boundaries (aB -> a|B, ABc -> A|Bc). Emitted colocated, unless
 * the only part is the word itself. */
static int emit_parts(const unsigned char *s, size_t b, size_t e, lex_token_fn fn, void *ctx) {
  size_t starts[LEX_MAX_TOKEN], ends[LEX_MAX_TOKEN], np = 0;
  size_t i = b;
  while (i < e && np < LEX_MAX_TOKEN) {
    while (i < e && (s[i] == '.' || s[i] == '_')) i++;
    if (i >= e) break;
    size_t p = i++;
    while (i < e && s[i] != '.' && s[i] != '_') {
      if (is_upper(s[i]) && (is_lower_or_digit(s[i - 1]) || (is_upper(s[i - 1]) && i + 1 < e &&
                                                             s[i + 1] >= 'a' && s[i + 1] <= 'z')))
        break;
      i++;
    }
    starts[np] = p;
    ends[np++] = i;
  }
  if (np == 0 || (np == 1 && starts[0] == b && ends[0] == e)) return 0;
  char buf[LEX_MAX_TOKEN];
  for (size_t j = 0; j < np; j++) {
    size_t n = lower(s + starts[j], ends[j] - starts[j], buf);
    int r = fn(ctx, 1, buf, n, starts[j], ends[j]);
    if (r) return r;
  }
  return 0;
}

int lex_tokenize(const char *text, size_t len, int parts, lex_token_fn fn, void *ctx) {
  const unsigned char *s = (const unsigned char *)text;
  char buf[LEX_MAX_TOKEN];
  size_t i = 0;
  while (i < len) {
    if (!is_word(s[i])) {
      i++;
      continue;
    }
    size_t b = i;
    while (i < len && (is_word(s[i]) || (s[i] == '.' && i + 1 < len && is_word(s[i + 1])))) i++;
    size_t n = lower(s + b, i - b, buf);
    int r = fn(ctx, 0, buf, n, b, i);
    if (!r && parts) r = emit_parts(s, b, i, fn, ctx);
    if (r) return r;
  }
  return 0;
}

typedef struct fts_tok_ctx {
  void *ctx;
  int (*xToken)(void *, int, const char *, int, int, int);
} fts_tok_ctx;

static int fts_token(void *ctx, int colocated, const char *t, size_t n, size_t start, size_t end) {
  fts_tok_ctx *c = ctx;
  return c->xToken(c->ctx, colocated ? FTS5_TOKEN_COLOCATED : 0, t, (int)n, (int)start, (int)end);
}

static int tok_create(void *p, const char **argv, int argc, Fts5Tokenizer **out) {
  (void)argv;
  (void)argc;
  *out = (Fts5Tokenizer *)p; /* stateless: any non-NULL handle */
  return SQLITE_OK;
}

static void tok_delete(Fts5Tokenizer *t) { (void)t; }

/* Documents get whole words and their parts; a query term is looked up as
 * written (lex_search asks for the parts itself, as separate terms). */
static int tok_tokenize(Fts5Tokenizer *t, void *ctx, int flags, const char *text, int n,
                        int (*xToken)(void *, int, const char *, int, int, int)) {
  (void)t;
  fts_tok_ctx c = {ctx, xToken};
  int parts = (flags & FTS5_TOKENIZE_QUERY) == 0;
  return lex_tokenize(text, n > 0 ? (size_t)n : 0, parts, fts_token, &c);
}

static fts5_tokenizer retro_tokenizer = {tok_create, tok_delete, tok_tokenize};

/* Registers the "retro" tokenizer on a connection (tokenizers are per
 * connection); returns the connection's FTS5 API, NULL on failure. */
static fts5_api *register_tokenizer(sqlite3 *db) {
  fts5_api *api = NULL;
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, "SELECT fts5(?1)", -1, &st, NULL) != SQLITE_OK) return NULL;
  sqlite3_bind_pointer(st, 1, (void *)&api, "fts5_api_ptr", NULL);
  sqlite3_step(st);
  sqlite3_finalize(st);
  if (!api || api->iVersion < 2) return NULL;
  static int handle;
  return api->xCreateTokenizer(api, "retro", &handle, &retro_tokenizer, NULL) == SQLITE_OK ? api
                                                                                           : NULL;
}

/* Connections and schema ------------------------------------------------------------ */

static const char *SCHEMA_SQL =
    "CREATE TABLE IF NOT EXISTS lex_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS lex_chunks USING fts5(body, title, tokenize = 'porter "
    "retro');"
    "CREATE VIRTUAL TABLE IF NOT EXISTS lex_vocab USING fts5vocab(lex_chunks, 'row');";

static const char *QUERY_SQL =
    "SELECT rowid, rank FROM lex_chunks WHERE lex_chunks MATCH ?1 ORDER BY rank LIMIT ?2";
static const char *QUERY_IN_SQL =
    "SELECT rowid, rank FROM lex_chunks WHERE lex_chunks MATCH ?1 "
    "AND rowid BETWEEN ?2 AND ?3 ORDER BY rank";

static proto_status connect(const char *path, int flags, sqlite3 **out, fts5_api **api) {
  sqlite3 *db = NULL;
  fts5_api *a = NULL;
  *out = NULL;
  if (sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
    proto_status s = db_fail(db, "open");
    sqlite3_close(db);
    return s;
  }
  sqlite3_busy_timeout(db, 10000);
  if (!(a = register_tokenizer(db))) {
    sqlite3_close(db);
    return proto_fail(PROTO_EINDEX, "lexical index: SQLite has no FTS5");
  }
  *out = db;
  if (api) *api = a;
  return PROTO_OK;
}

/* What a connection opens: the path, or lx->uri when set (adding
 * SQLITE_OPEN_URI to *flags). */
static const char *db_name(const lex *lx, int *flags) {
  if (!lx->uri) return lx->path;
  *flags |= SQLITE_OPEN_URI;
  return lx->uri;
}

/* "file:PATH?immutable=1", PATH percent-encoded but for [A-Za-z0-9/._~-]. */
static char *immutable_uri(const char *path) {
  static const char hex[] = "0123456789ABCDEF", tail[] = "?immutable=1";
  char *u = malloc(5 + 3 * strlen(path) + sizeof tail), *p = u;
  if (!u) return NULL;
  memcpy(p, "file:", 5);
  p += 5;
  for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
    int plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                *c == '/' || *c == '.' || *c == '_' || *c == '~' || *c == '-';
    if (plain) {
      *p++ = (char)*c;
    } else {
      *p++ = '%';
      *p++ = hex[*c >> 4];
      *p++ = hex[*c & 15];
    }
  }
  memcpy(p, tail, sizeof tail);
  return u;
}

/* 1 when the folder holding path can be written (SQLite makes a WAL
 * reader's -shm file there). */
static int dir_writable(const char *path) {
  char *dir = strdup(path);
  if (!dir) return 1;
  char *slash = strrchr(dir, '/');
  if (slash) *(slash == dir ? slash + 1 : slash) = 0;
  int ok = access(slash ? dir : ".", W_OK) == 0;
  free(dir);
  return ok;
}

static int exec(sqlite3 *db, const char *sql) { return sqlite3_exec(db, sql, NULL, NULL, NULL); }

static int meta_get(sqlite3 *db, const char *key, int64_t *v) {
  sqlite3_stmt *st = NULL;
  *v = 0;
  if (sqlite3_prepare_v2(db, "SELECT value FROM lex_meta WHERE key = ?1", -1, &st, NULL) !=
      SQLITE_OK)
    return -1;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

static int meta_put(sqlite3 *db, const char *key, int64_t v) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO lex_meta(key, value) VALUES(?1, ?2)", -1, &st,
                         NULL) != SQLITE_OK)
    return -1;
  sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, v);
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : -1;
}

/* Opens the writer and checks the file: SQLite's quick_check and our schema
 * version. Returns 1 when the file is usable, 0 when it must be rebuilt
 * (the connection is then closed), -1 on an error that rebuilding would not
 * cure (the message is set). */
static int open_writer(lex *lx) {
  proto_status s = connect(lx->path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &lx->w, NULL);
  if (s != PROTO_OK) return 0;
  sqlite3_stmt *st = NULL;
  int good = exec(lx->w, "PRAGMA journal_mode=WAL") == SQLITE_OK &&
             exec(lx->w, "PRAGMA synchronous=NORMAL") == SQLITE_OK &&
             exec(lx->w, "PRAGMA journal_size_limit=8388608") == SQLITE_OK &&
             sqlite3_prepare_v2(lx->w, "PRAGMA quick_check", -1, &st, NULL) == SQLITE_OK &&
             sqlite3_step(st) == SQLITE_ROW &&
             strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
  sqlite3_finalize(st);
  int64_t schema = 0;
  if (good) good = exec(lx->w, SCHEMA_SQL) == SQLITE_OK && meta_get(lx->w, "schema", &schema) == 0;
  if (good && schema == 0)
    good = meta_put(lx->w, "schema", LEX_SCHEMA) == 0 ? (schema = LEX_SCHEMA) : 0;
  int64_t wm = 0, count = 0;
  if (good)
    good = schema == LEX_SCHEMA && meta_get(lx->w, "watermark", &wm) == 0 &&
           meta_get(lx->w, "count", &count) == 0 && wm >= 0 && count >= 0;
  if (!good) {
    sqlite3_close(lx->w);
    lx->w = NULL;
    return 0;
  }
  lx->watermark = (uint64_t)wm;
  lx->count = (uint64_t)count;
  return 1;
}

static void remove_files(const char *path) {
  char p[4096];
  unlink(path);
  snprintf(p, sizeof p, "%s-wal", path);
  unlink(p);
  snprintf(p, sizeof p, "%s-shm", path);
  unlink(p);
  snprintf(p, sizeof p, "%s-journal", path);
  unlink(p);
}

/* Store scans ---------------------------------------------------------------------- */

typedef struct idlist {
  uint64_t *v;
  size_t n, cap;
} idlist;

static proto_status collect_ids(void *ctx, const uint64_t *ids, const float *vectors, size_t n) {
  (void)vectors;
  idlist *l = ctx;
  if (l->n + n > l->cap) {
    size_t cap = l->cap ? l->cap : 1024;
    while (cap < l->n + n) cap *= 2;
    uint64_t *v = realloc(l->v, cap * sizeof *v);
    if (!v) return PROTO_ENOMEM;
    l->v = v;
    l->cap = cap;
  }
  memcpy(l->v + l->n, ids, n * sizeof *ids);
  l->n += n;
  return PROTO_OK;
}

/* The live chunk ids of the store past after_id, ascending. */
static proto_status live_ids(store *st, uint64_t after_id, idlist *out) {
  memset(out, 0, sizeof *out);
  proto_status s = store_vectors_scan(st, after_id, 4096, collect_ids, out);
  if (s != PROTO_OK) {
    free(out->v);
    memset(out, 0, sizeof *out);
    return proto_fail(s, "lexical index: reading the store: %s",
                      s == PROTO_ENOMEM ? "out of memory" : store_last_error());
  }
  return PROTO_OK;
}

/* Titles ------------------------------------------------------------------------ */

/* 1 when line[0..n) is three or more of one punctuation character: the
 * underline (or overline) of a reStructuredText or setext heading. */
static int is_rule(const char *line, size_t n) {
  while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r')) n--;
  if (n < 3 || !strchr("=-~*#^\"+`:._'", line[0])) return 0;
  for (size_t i = 1; i < n; i++)
    if (line[i] != line[0]) return 0;
  return 1;
}

/* The first heading of a document's first chunk: a Markdown "# heading", or
 * a line with a word followed by a rule ("Title" over "====="). *len 0 when
 * there is none. */
static const char *first_heading(const char *text, size_t len, size_t *out_len) {
  const char *p = text, *end = text + len;
  *out_len = 0;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p)), *eol = nl ? nl : end;
    const char *b = p;
    while (b < eol && (*b == ' ' || *b == '\t')) b++;
    size_t n = (size_t)(eol - b);
    if (n > 1 && *b == '#') {
      size_t h = 0;
      while (h < n && b[h] == '#') h++;
      if (h <= 6 && h < n && b[h] == ' ') {
        *out_len = n - h - 1 > LEX_MAX_TITLE ? LEX_MAX_TITLE : n - h - 1;
        return b + h + 1;
      }
    }
    if (nl && n && !is_rule(b, n)) {
      const char *next = nl + 1, *nnl = memchr(next, '\n', (size_t)(end - next));
      size_t has_word = 0;
      for (size_t i = 0; i < n && !has_word; i++) has_word = is_word((unsigned char)b[i]);
      if (has_word && is_rule(next, (size_t)((nnl ? nnl : end) - next))) {
        *out_len = n > LEX_MAX_TITLE ? LEX_MAX_TITLE : n;
        return b;
      }
    }
    p = nl ? nl + 1 : end;
  }
  return NULL;
}

/* The title column of a document's chunks: its first heading and its id
 * (a path names what a file is about). Chunks of one document come in
 * order, so the last one made is kept. */
typedef struct title_cache {
  uint64_t doc; /* 0: none yet */
  char *text;
  size_t len;
} title_cache;

static proto_status title_of(lex *lx, const store_chunk *c, title_cache *t) {
  if (t->doc == c->doc_id && t->text) return PROTO_OK;
  store_doc d = {0};
  proto_status s = store_doc_get_by_num(lx->st, c->doc_id, &d);
  if (s != PROTO_OK) return s;
  store_chunk first = {0};
  const store_chunk *head = c;
  if (c->ordinal != 0 && (s = store_chunk_get(lx->st, d.first_chunk, &first)) == PROTO_OK)
    head = &first;
  size_t hn = 0;
  const char *h =
      s == PROTO_OK ? first_heading(head->text ? head->text : "", head->text_len, &hn) : NULL;
  size_t idn = strlen(d.id);
  char *text = s == PROTO_OK ? malloc(hn + 1 + idn + 1) : NULL;
  if (s == PROTO_OK && !text) s = PROTO_ENOMEM;
  if (text) {
    if (hn) memcpy(text, h, hn);
    text[hn] = '\n';
    memcpy(text + hn + 1, d.id, idn + 1);
    free(t->text);
    *t = (title_cache){c->doc_id, text, hn + 1 + idn};
  }
  store_chunk_free(&first);
  store_doc_free(&d);
  return s;
}

/* Writes (the caller holds wmu and an open transaction) -------------------------- */

/* One chunk's row: its text and its document's title. */
static proto_status add_chunk(lex *lx, sqlite3_stmt *ins, uint64_t id, title_cache *title) {
  store_chunk c = {0};
  proto_status s = store_chunk_get(lx->st, id, &c);
  if (s == PROTO_OK) s = title_of(lx, &c, title);
  if (s == PROTO_ENOTFOUND) { /* it or its document deleted since the scan: its tombstone follows */
    store_chunk_free(&c);
    return PROTO_OK;
  }
  if (s != PROTO_OK) {
    store_chunk_free(&c);
    return proto_fail(s, "lexical index: reading chunk %llu: %s", (unsigned long long)id,
                      s == PROTO_ENOMEM ? "out of memory" : store_last_error());
  }
  sqlite3_bind_int64(ins, 1, (sqlite3_int64)id);
  sqlite3_bind_text(ins, 2, c.text ? c.text : "", (int)c.text_len, SQLITE_STATIC);
  sqlite3_bind_text(ins, 3, title->text, (int)title->len, SQLITE_STATIC);
  if (sqlite3_step(ins) != SQLITE_DONE) s = db_fail(lx->w, "insert");
  else lx->count++;
  sqlite3_reset(ins);
  store_chunk_free(&c);
  return s;
}

static proto_status add_chunks(lex *lx, const uint64_t *ids, size_t n) {
  sqlite3_stmt *ins = NULL;
  if (sqlite3_prepare_v2(lx->w, "INSERT INTO lex_chunks(rowid, body, title) VALUES(?1, ?2, ?3)", -1,
                         &ins, NULL) != SQLITE_OK)
    return db_fail(lx->w, "prepare insert");
  proto_status s = PROTO_OK;
  title_cache title = {0};
  for (size_t i = 0; i < n && s == PROTO_OK; i++) s = add_chunk(lx, ins, ids[i], &title);
  free(title.text);
  sqlite3_finalize(ins);
  return s;
}

static proto_status remove_chunks(lex *lx, const uint64_t *ids, size_t n) {
  sqlite3_stmt *del = NULL;
  if (sqlite3_prepare_v2(lx->w, "DELETE FROM lex_chunks WHERE rowid = ?1", -1, &del, NULL) !=
      SQLITE_OK)
    return db_fail(lx->w, "prepare delete");
  proto_status s = PROTO_OK;
  for (size_t i = 0; i < n && s == PROTO_OK; i++) {
    sqlite3_bind_int64(del, 1, (sqlite3_int64)ids[i]);
    if (sqlite3_step(del) != SQLITE_DONE) s = db_fail(lx->w, "delete");
    else {
      uint64_t gone = (uint64_t)sqlite3_changes(lx->w);
      lx->count -= gone <= lx->count ? gone : lx->count;
    }
    sqlite3_reset(del);
  }
  sqlite3_finalize(del);
  return s;
}

static proto_status begin(lex *lx) {
  return exec(lx->w, "BEGIN IMMEDIATE") == SQLITE_OK ? PROTO_OK : db_fail(lx->w, "begin");
}

/* Commits with the new watermark and count, or rolls back (and re-reads them). */
static proto_status finish(lex *lx, proto_status s) {
  if (s == PROTO_OK && (meta_put(lx->w, "watermark", (int64_t)lx->watermark) != 0 ||
                        meta_put(lx->w, "count", (int64_t)lx->count) != 0))
    s = db_fail(lx->w, "write meta");
  if (s == PROTO_OK && exec(lx->w, "COMMIT") != SQLITE_OK) s = db_fail(lx->w, "commit");
  if (s != PROTO_OK) {
    char keep[PROTO_ERR_MAX];
    snprintf(keep, sizeof keep, "%s", proto_err_get());
    exec(lx->w, "ROLLBACK");
    int64_t wm = 0, count = 0;
    meta_get(lx->w, "watermark", &wm);
    meta_get(lx->w, "count", &count);
    lx->watermark = (uint64_t)wm;
    lx->count = (uint64_t)count;
    proto_err_set("%s", keep);
  }
  return s;
}

/* Adds what is past the watermark, removes the tombstoned ids. */
static proto_status sync_locked(lex *lx) {
  idlist fresh;
  proto_status s = live_ids(lx->st, lx->watermark, &fresh);
  if (s != PROTO_OK) return s;
  uint64_t *dead = NULL;
  size_t n_dead = 0;
  s = store_tombstones(lx->st, &dead, &n_dead);
  if (s != PROTO_OK) {
    free(fresh.v);
    return proto_fail(s, "lexical index: reading tombstones: %s", store_last_error());
  }
  if (fresh.n > 0 || n_dead > 0) {
    s = begin(lx);
    if (s == PROTO_OK) {
      s = add_chunks(lx, fresh.v, fresh.n);
      if (s == PROTO_OK) s = remove_chunks(lx, dead, n_dead);
      if (s == PROTO_OK && fresh.n > 0) lx->watermark = fresh.v[fresh.n - 1];
      s = finish(lx, s);
    }
  }
  free(fresh.v);
  free(dead);
  return s;
}

/* Makes the index hold exactly the store's live chunks, id by id. */
static proto_status reconcile_locked(lex *lx) {
  idlist live, have = {0};
  proto_status s = live_ids(lx->st, 0, &live);
  if (s != PROTO_OK) return s;
  sqlite3_stmt *q = NULL;
  if (sqlite3_prepare_v2(lx->w, "SELECT rowid FROM lex_chunks ORDER BY rowid", -1, &q, NULL) !=
      SQLITE_OK) {
    free(live.v);
    return db_fail(lx->w, "prepare scan");
  }
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    uint64_t id = (uint64_t)sqlite3_column_int64(q, 0);
    if (collect_ids(&have, &id, NULL, 1) != PROTO_OK) {
      rc = SQLITE_NOMEM;
      break;
    }
  }
  sqlite3_finalize(q);
  if (rc != SQLITE_DONE) {
    free(live.v);
    free(have.v);
    return rc == SQLITE_NOMEM ? proto_fail(PROTO_ENOMEM, "out of memory") : db_fail(lx->w, "scan");
  }
  /* merge: ids only in the index go, ids only in the store come */
  idlist gone = {0}, come = {0};
  size_t i = 0, j = 0;
  while (s == PROTO_OK && (i < have.n || j < live.n)) {
    if (j >= live.n || (i < have.n && have.v[i] < live.v[j]))
      s = collect_ids(&gone, &have.v[i++], NULL, 1);
    else if (i >= have.n || live.v[j] < have.v[i]) s = collect_ids(&come, &live.v[j++], NULL, 1);
    else i++, j++;
  }
  if (s == PROTO_OK) s = begin(lx);
  else s = proto_fail(s, "out of memory");
  if (s == PROTO_OK) {
    lx->count = have.n;
    s = remove_chunks(lx, gone.v, gone.n);
    if (s == PROTO_OK) s = add_chunks(lx, come.v, come.n);
    if (s == PROTO_OK && live.n > 0 && live.v[live.n - 1] > lx->watermark)
      lx->watermark = live.v[live.n - 1];
    s = finish(lx, s);
  }
  free(live.v);
  free(have.v);
  free(gone.v);
  free(come.v);
  return s;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_terms(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* Reads the common and frequent terms from the vocabulary (one pass over
 * it) and swaps them in. */
static proto_status refresh_frequent(lex *lx, sqlite3 *db) {
  sqlite3_stmt *q = NULL;
  char **v = NULL;
  size_t n = 0, cap = 0;
  uint64_t count = lx->count;
  if (sqlite3_prepare_v2(db, "SELECT term, doc FROM lex_vocab WHERE doc > ?1", -1, &q, NULL) !=
      SQLITE_OK)
    return db_fail(db, "prepare vocabulary");
  double above = LEX_COMMON_DF * (double)count;
  sqlite3_bind_int64(q, 1, (sqlite3_int64)(above > LEX_MIN_COMMON ? above : LEX_MIN_COMMON));
  uint64_t *df = NULL;
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    if (n == cap) {
      char **nv = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof *v);
      uint64_t *nd = nv ? realloc(df, cap * sizeof *df) : NULL;
      if (nv) v = nv;
      if (!nd) break;
      df = nd;
    }
    if (!(v[n] = strdup((const char *)sqlite3_column_text(q, 0)))) break;
    df[n++] = (uint64_t)sqlite3_column_int64(q, 1);
  }
  sqlite3_finalize(q);
  if (rc != SQLITE_DONE) {
    free_terms(v, n);
    free(df);
    return rc == SQLITE_ROW ? proto_fail(PROTO_ENOMEM, "out of memory") : db_fail(db, "vocabulary");
  }
  /* the vocabulary is in term order already; check it in strcmp order */
  for (size_t i = 1; i < n; i++)
    if (strcmp(v[i - 1], v[i]) >= 0) {
      free_terms(v, n);
      free(df);
      return proto_fail(PROTO_EINDEX, "lexical index: vocabulary not in byte order");
    }
  pthread_mutex_lock(&lx->pmu);
  char **old = lx->freq;
  uint64_t *old_df = lx->freq_df;
  size_t n_old = lx->n_freq;
  lx->freq = v;
  lx->freq_df = df;
  lx->n_freq = n;
  lx->freq_count = count;
  pthread_mutex_unlock(&lx->pmu);
  free_terms(old, n_old);
  free(old_df);
  return PROTO_OK;
}

/* After a sync: refresh the common terms when the count drifted by a tenth. */
static proto_status maybe_refresh(lex *lx) {
  uint64_t was = lx->freq_count, now = lx->count;
  if ((now > was ? now - was : was - now) * 10 <= was && was > 0) return PROTO_OK;
  return refresh_frequent(lx, lx->w);
}

/* Public: open, sync, rebuild, close ----------------------------------------------- */

proto_status lex_sync(lex *lx) {
  if (!lx) return proto_fail(PROTO_EINVAL, "lex_sync: NULL index");
  if (lx->read_only) return PROTO_OK;
  pthread_mutex_lock(&lx->wmu);
  proto_status s = sync_locked(lx);
  if (s == PROTO_OK) s = maybe_refresh(lx);
  pthread_mutex_unlock(&lx->wmu);
  return s;
}

proto_status lex_rebuild(lex *lx) {
  if (!lx) return proto_fail(PROTO_EINVAL, "lex_rebuild: NULL index");
  if (lx->read_only) return proto_fail(PROTO_EINVAL, "lexical index: opened read-only");
  pthread_mutex_lock(&lx->wmu);
  proto_status s = begin(lx);
  if (s == PROTO_OK) {
    if (exec(lx->w, "DELETE FROM lex_chunks") != SQLITE_OK) s = db_fail(lx->w, "empty");
    lx->count = 0;
    lx->watermark = 0;
    s = finish(lx, s);
  }
  if (s == PROTO_OK) s = sync_locked(lx);
  if (s == PROTO_OK) s = refresh_frequent(lx, lx->w);
  pthread_mutex_unlock(&lx->wmu);
  return s;
}

static int store_live_chunks(store *st, uint64_t *n) {
  store_stats ss;
  if (store_stats_get(st, &ss) != PROTO_OK) return -1;
  *n = ss.chunks;
  return 0;
}

/* A read-only index must be usable as it is: our schema, and holding
 * exactly the store's live chunks (same count, none past its watermark). */
static proto_status check_read_only(lex *lx) {
  sqlite3 *db = NULL;
  int flags = SQLITE_OPEN_READONLY;
  proto_status s = connect(db_name(lx, &flags), flags, &db, NULL);
  int64_t schema = 0, wm = 0, count = 0;
  uint64_t live = 0;
  if (s == PROTO_OK && (meta_get(db, "schema", &schema) != 0 || schema != LEX_SCHEMA ||
                        meta_get(db, "watermark", &wm) != 0 || meta_get(db, "count", &count) != 0))
    s = proto_fail(PROTO_EINDEX, "lexical index %s: not ours or unreadable", lx->path);
  sqlite3_close(db);
  if (s != PROTO_OK) return s;
  if (store_live_chunks(lx->st, &live) != 0)
    return proto_fail(PROTO_ESTORE, "lexical index: store stats: %s", store_last_error());
  idlist past;
  if ((s = live_ids(lx->st, (uint64_t)wm, &past)) != PROTO_OK) return s;
  free(past.v);
  if (past.n > 0 || live != (uint64_t)count)
    return proto_fail(PROTO_EINDEX, "lexical index %s is behind the store", lx->path);
  lx->watermark = (uint64_t)wm;
  lx->count = (uint64_t)count;
  return PROTO_OK;
}

proto_status lex_open(const char *path, store *st, int read_only, lex **out) {
  if (!path || !st || !out) return proto_fail(PROTO_EINVAL, "lex_open: NULL argument");
  *out = NULL;
  lex *lx = calloc(1, sizeof *lx);
  if (!lx || !(lx->path = strdup(path))) {
    free(lx);
    return proto_fail(PROTO_ENOMEM, "out of memory");
  }
  lx->st = st;
  lx->read_only = read_only;
  pthread_mutex_init(&lx->wmu, NULL);
  pthread_mutex_init(&lx->pmu, NULL);
  proto_status s = PROTO_OK;
  if (read_only) {
    s = check_read_only(lx);
    /* On a read-only file system SQLite cannot make the -shm file a WAL
     * reader needs: read the file as immutable, still checked against the
     * store (a WAL left uncheckpointed would show as behind it). */
    if (s != PROTO_OK && !dir_writable(path)) {
      if (!(lx->uri = immutable_uri(path))) s = proto_fail(PROTO_ENOMEM, "out of memory");
      else s = check_read_only(lx);
    }
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READONLY;
    if (s == PROTO_OK && (s = connect(db_name(lx, &flags), flags, &db, NULL)) == PROTO_OK)
      s = refresh_frequent(lx, db);
    sqlite3_close(db);
  } else {
    int ok = open_writer(lx);
    if (!ok) { /* unreadable or foreign: start over */
      remove_files(path);
      lx->rebuilt_at_open = 1;
      ok = open_writer(lx);
      if (!ok) s = db_fail(NULL, "cannot create the file");
    }
    uint64_t live = 0;
    if (s == PROTO_OK) s = lex_sync(lx);
    if (s == PROTO_OK && store_live_chunks(st, &live) != 0)
      s = proto_fail(PROTO_ESTORE, "lexical index: store stats: %s", store_last_error());
    if (s == PROTO_OK && live != lx->count) {
      pthread_mutex_lock(&lx->wmu);
      s = reconcile_locked(lx);
      pthread_mutex_unlock(&lx->wmu);
    }
    if (s == PROTO_OK) s = refresh_frequent(lx, lx->w);
  }
  if (s != PROTO_OK) {
    char keep[PROTO_ERR_MAX];
    snprintf(keep, sizeof keep, "%s", proto_err_get());
    lex_close(lx);
    proto_err_set("%s", keep);
    return s;
  }
  *out = lx;
  return PROTO_OK;
}

void lex_close(lex *lx) {
  if (!lx) return;
  for (reader *r = lx->idle; r;) {
    reader *next = r->next;
    r->stemmer.xDelete(r->stem);
    sqlite3_finalize(r->query);
    sqlite3_finalize(r->query_in);
    sqlite3_close(r->db);
    free(r);
    r = next;
  }
  sqlite3_close(lx->w);
  free_terms(lx->freq, lx->n_freq);
  free(lx->freq_df);
  pthread_mutex_destroy(&lx->wmu);
  pthread_mutex_destroy(&lx->pmu);
  free(lx->uri);
  free(lx->path);
  free(lx);
}

/* Search ----------------------------------------------------------------------------- */

static proto_status reader_take(lex *lx, reader **out) {
  pthread_mutex_lock(&lx->pmu);
  reader *r = lx->idle;
  if (r) lx->idle = r->next;
  pthread_mutex_unlock(&lx->pmu);
  if (!r) {
    r = calloc(1, sizeof *r);
    if (!r) return proto_fail(PROTO_ENOMEM, "out of memory");
    int flags = lx->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
    fts5_api *api = NULL;
    void *ud = NULL;
    const char *args[] = {"retro"};
    proto_status s = connect(db_name(lx, &flags), flags, &r->db, &api);
    if (s == PROTO_OK && (sqlite3_prepare_v3(r->db, QUERY_SQL, -1, SQLITE_PREPARE_PERSISTENT,
                                             &r->query, NULL) != SQLITE_OK ||
                          sqlite3_prepare_v3(r->db, QUERY_IN_SQL, -1, SQLITE_PREPARE_PERSISTENT,
                                             &r->query_in, NULL) != SQLITE_OK))
      s = db_fail(r->db, "prepare query");
    if (s == PROTO_OK && (api->xFindTokenizer(api, "porter", &ud, &r->stemmer) != SQLITE_OK ||
                          r->stemmer.xCreate(ud, args, 1, &r->stem) != SQLITE_OK))
      s = proto_fail(PROTO_EINDEX, "lexical index: no porter tokenizer");
    if (s != PROTO_OK) {
      sqlite3_finalize(r->query);
      sqlite3_finalize(r->query_in);
      sqlite3_close(r->db);
      free(r);
      return s;
    }
  }
  *out = r;
  return PROTO_OK;
}

static void reader_give(lex *lx, reader *r) {
  sqlite3_reset(r->query);
  sqlite3_clear_bindings(r->query);
  sqlite3_reset(r->query_in);
  sqlite3_clear_bindings(r->query_in);
  pthread_mutex_lock(&lx->pmu);
  r->next = lx->idle;
  lx->idle = r;
  pthread_mutex_unlock(&lx->pmu);
}

/* The FTS5 query: every distinct word of the text, and every part of a
 * compound word, as a quoted term, by document frequency (see LEX_*_DF):
 *   (rare terms OR'ed) AND (rare and common terms OR'ed)
 * so only chunks with a rare term are scored, by all the terms they hold;
 * frequent terms are left out. A term's cost is its posting list: OR'ing
 * every word of "How do I open a file for appending?" took ten times as
 * long on the default corpus as the form above ("the" alone longer still).
 * BM25 counts the rare terms twice then (they appear twice), which weighs
 * the words that tell chunks apart a little more; the tuning half of
 * tests/bench/retrieval measured the effect (see its README). Without a
 * rare term, the LEX_ANCHORS least frequent common ones take the rare
 * ones' place (with one or two common terms, they are OR'ed); with
 * neither, the frequent ones are OR'ed. */
typedef struct qterm {
  char text[LEX_MAX_TOKEN + 1];
  char stem[LEX_MAX_TOKEN + 1]; /* its indexed form */
} qterm;

typedef struct qbuild {
  qterm terms[LEX_MAX_TERMS];
  size_t n;
} qbuild;

static int add_term(void *ctx, int colocated, const char *t, size_t n, size_t start, size_t end) {
  (void)colocated;
  (void)start;
  (void)end;
  qbuild *q = ctx;
  if (q->n == LEX_MAX_TERMS) return 1;
  for (size_t i = 0; i < q->n; i++)
    if (strlen(q->terms[i].text) == n && memcmp(q->terms[i].text, t, n) == 0) return 0;
  memcpy(q->terms[q->n].text, t, n);
  q->terms[q->n].text[n] = 0;
  q->terms[q->n++].stem[0] = 0;
  return 0;
}

static int take_stem(void *ctx, int flags, const char *t, int n, int start, int end) {
  (void)flags;
  (void)start;
  (void)end;
  char *out = ctx;
  if (!out[0] && n > 0 && n <= LEX_MAX_TOKEN) {
    memcpy(out, t, (size_t)n);
    out[n] = 0;
  }
  return SQLITE_OK;
}

/* Terms that stand in for rare ones in a query of common words only. */
enum { LEX_ANCHORS = 2 };

enum { TERM_RARE, TERM_COMMON, TERM_FREQUENT };

/* The class of a term, and its share of chunks (*share; 0 for a rare one). */
static int term_class(lex *lx, const char *stem, double *share) {
  const char *key = stem;
  int cls = TERM_RARE;
  *share = 0;
  pthread_mutex_lock(&lx->pmu);
  char **hit = lx->n_freq ? bsearch(&key, lx->freq, lx->n_freq, sizeof *lx->freq, cmp_str) : NULL;
  if (hit) {
    *share = (double)lx->freq_df[hit - lx->freq] / (double)(lx->freq_count ? lx->freq_count : 1);
    cls = *share > LEX_FREQUENT_DF ? TERM_FREQUENT : TERM_COMMON;
  }
  pthread_mutex_unlock(&lx->pmu);
  return cls;
}

/* Appends the terms of class cls (or of every class up to it) as "t" OR "u". */
static char *add_terms(char *p, const qbuild *q, const int *cls, int want, int up_to) {
  int first = 1;
  for (size_t i = 0; i < q->n; i++) /* terms hold no '"' (see is_word) */
    if (up_to ? cls[i] <= want : cls[i] == want) {
      p += sprintf(p, "%s\"%s\"", first ? "" : " OR ", q->terms[i].text);
      first = 0;
    }
  return p;
}

static char *match_expr(lex *lx, reader *r, const char *text, size_t len) {
  qbuild q;
  q.n = 0;
  lex_tokenize(text, len, 1, add_term, &q);
  if (q.n == 0) return NULL;
  int cls[LEX_MAX_TERMS], count[3] = {0, 0, 0};
  double share[LEX_MAX_TERMS];
  for (size_t i = 0; i < q.n; i++) {
    r->stemmer.xTokenize(r->stem, q.terms[i].stem, FTS5_TOKENIZE_QUERY, q.terms[i].text,
                         (int)strlen(q.terms[i].text), take_stem);
    cls[i] = term_class(lx, q.terms[i].stem, &share[i]);
    count[cls[i]]++;
  }
  /* Common words only: the LEX_ANCHORS least frequent stand in for rare
   * ones, so not every common word's posting list is scored */
  if (count[TERM_RARE] == 0 && count[TERM_COMMON] > LEX_ANCHORS) {
    for (int a = 0; a < LEX_ANCHORS; a++) {
      size_t best = q.n;
      for (size_t i = 0; i < q.n; i++)
        if (cls[i] == TERM_COMMON && (best == q.n || share[i] < share[best])) best = i;
      cls[best] = TERM_RARE;
    }
    count[TERM_RARE] = LEX_ANCHORS;
    count[TERM_COMMON] -= LEX_ANCHORS;
  }
  char *e = malloc(2 * q.n * (LEX_MAX_TOKEN + 8) + 16), *p = e;
  if (!e) return NULL;
  *p = 0;
  if (count[TERM_RARE] && count[TERM_COMMON]) {
    p = add_terms(p + sprintf(p, "("), &q, cls, TERM_RARE, 0);
    p = add_terms(p + sprintf(p, ") AND ("), &q, cls, TERM_COMMON, 1);
    sprintf(p, ")");
  } else {
    add_terms(p, &q, cls,
              count[TERM_RARE]     ? TERM_RARE
              : count[TERM_COMMON] ? TERM_COMMON
                                   : TERM_FREQUENT,
              0);
  }
  return e;
}

proto_status lex_search(lex *lx, const char *text, size_t len, int k, idx_filter_fn filter,
                        void *filter_ctx, float *scores, int64_t *ids, size_t *n_out) {
  if (!lx || !text || k < 1 || !scores || !ids || !n_out)
    return proto_fail(PROTO_EINVAL, "lex_search: bad argument");
  *n_out = 0;
  reader *r = NULL;
  proto_status s = reader_take(lx, &r);
  if (s != PROTO_OK) return s;
  char *expr = match_expr(lx, r, text, len);
  if (!expr) {
    reader_give(lx, r);
    return PROTO_OK;
  }
  /* fetch k rows, or more while the filter rejects some */
  size_t found = 0, seen = 0, limit = (size_t)k * (filter ? 4 : 1);
  for (;;) {
    sqlite3_bind_text(r->query, 1, expr, -1, SQLITE_STATIC);
    sqlite3_bind_int64(r->query, 2, (sqlite3_int64)limit);
    size_t row = 0;
    int rc = SQLITE_DONE;
    while (found < (size_t)k && (rc = sqlite3_step(r->query)) == SQLITE_ROW) {
      if (row++ < seen) continue;
      int64_t id = sqlite3_column_int64(r->query, 0);
      if (filter && !filter(filter_ctx, id)) continue;
      ids[found] = id;
      scores[found++] = (float)-sqlite3_column_double(r->query, 1);
    }
    if (found < (size_t)k && rc != SQLITE_DONE) {
      s = db_fail(r->db, "search");
      break;
    }
    sqlite3_reset(r->query);
    if (found == (size_t)k || row < limit) break; /* enough, or no more rows */
    seen = row;
    limit *= 4;
  }
  reader_give(lx, r);
  free(expr);
  *n_out = found;
  return s;
}

/* The best k rows of one rowid range that pass the filter, merged into
 * the best found so far: rows come in rank order, so the range is done
 * once k of them have passed. */
static proto_status search_range(reader *r, const char *expr, lex_range g, size_t k,
                                 idx_filter_fn filter, void *filter_ctx, float *scores,
                                 int64_t *ids, size_t *found) {
  sqlite3_bind_text(r->query_in, 1, expr, -1, SQLITE_STATIC);
  sqlite3_bind_int64(r->query_in, 2, g.first);
  sqlite3_bind_int64(r->query_in, 3, g.last);
  size_t passed = 0;
  int rc = SQLITE_DONE;
  while (passed < k && (rc = sqlite3_step(r->query_in)) == SQLITE_ROW) {
    int64_t id = sqlite3_column_int64(r->query_in, 0);
    if (filter && !filter(filter_ctx, id)) continue;
    passed++;
    best_k_offer(scores, ids, found, k, (float)-sqlite3_column_double(r->query_in, 1), id);
  }
  proto_status s = passed < k && rc != SQLITE_DONE ? db_fail(r->db, "search") : PROTO_OK;
  sqlite3_reset(r->query_in);
  return s;
}

proto_status lex_search_in(lex *lx, const char *text, size_t len, int k, const lex_range *ranges,
                           size_t n_ranges, idx_filter_fn filter, void *filter_ctx, float *scores,
                           int64_t *ids, size_t *n_out) {
  if (!lx || !text || k < 1 || !scores || !ids || !n_out || (n_ranges && !ranges))
    return proto_fail(PROTO_EINVAL, "lex_search_in: bad argument");
  *n_out = 0;
  reader *r = NULL;
  proto_status s = reader_take(lx, &r);
  if (s != PROTO_OK) return s;
  char *expr = match_expr(lx, r, text, len);
  for (size_t i = 0; expr && i < n_ranges && s == PROTO_OK; i++)
    s = search_range(r, expr, ranges[i], (size_t)k, filter, filter_ctx, scores, ids, n_out);
  reader_give(lx, r);
  free(expr);
  if (s != PROTO_OK) *n_out = 0;
  return s;
}

proto_status lex_info_get(lex *lx, lex_info *out) {
  if (!lx || !out) return proto_fail(PROTO_EINVAL, "lex_info_get: NULL argument");
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&lx->wmu);
  out->chunks = lx->count;
  out->watermark = lx->watermark;
  out->rebuilt_at_open = lx->rebuilt_at_open;
  pthread_mutex_unlock(&lx->wmu);
  struct stat sb;
  char p[4096];
  if (stat(lx->path, &sb) == 0) out->bytes += (uint64_t)sb.st_size;
  snprintf(p, sizeof p, "%s-wal", lx->path);
  if (stat(p, &sb) == 0) out->bytes += (uint64_t)sb.st_size;
  return PROTO_OK;
}
