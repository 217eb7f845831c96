/* tok.c - WordPiece (Hugging Face BertTokenizer) and GPT-2 byte-level BPE
 * tokenizers: loading vocab.txt / vocab.json + merges.txt, text -> ids and
 * back. model/train/tokref.py is the reference it must match id for id (see
 * its header for the exact behaviour of both); tests/tok compares them.
 *
 * BPE: bytes are split by a hand-written scanner equivalent to GPT-2's
 * pre-tokenisation pattern with the `regex` module's Unicode 15.0 classes
 * (invalid UTF-8 bytes count as symbols), each pre-token is merged by merge
 * rank (lowest first, all occurrences of a pair per round, as the reference
 * does) with a heap over the symbol list, and the result is cached per
 * pre-token in a sharded, mutex-protected cache.
 * WordPiece: special tokens in the text kept whole, lower-casing character by
 * character, clean-up, CJK padding, NFC, whitespace split, accent stripping
 * (NFD minus Mn), punctuation split, greedy longest-match-first with "##".
 *
 * Not here: [CLS]/[SEP], <s>/</s>, truncation and padding (the models add
 * them), added tokens beyond BERT's five special tokens, HF's decode
 * clean-up of spaces before punctuation.
 */
#include "tok.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tok_unicode.h"

enum {
  WP_MAX_CHARS = 100,     /* longer words -> [UNK] (HF max_input_chars_per_word) */
  MAX_VOCAB_ID = 1 << 24, /* larger ids in vocab.json are refused */
  CACHE_SHARDS = 16,
  CACHE_SHARD_MAX = 1 << 14, /* entries per shard before it is emptied */
  CACHE_MAX_WORD = 64,       /* longer pre-tokens are not cached */
};

/* ------------------------------------------------------------------ errors */

const char *tok_last_error(void) { return proto_err_get(); }

PROTO_PRINTF(2, 3)
static proto_status fail(proto_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  proto_err_vset(fmt, ap);
  va_end(ap);
  return st;
}

/* ----------------------------------------------------------- small helpers */

static uint64_t hash_bytes(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xC2B2AE3D27D4EB4Full);
  while (n >= 8) {
    uint64_t k;
    memcpy(&k, s, 8);
    h = (h ^ k) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
    s += 8;
    n -= 8;
  }
  uint64_t k = 0;
  for (size_t i = 0; i < n; i++) k |= (uint64_t)s[i] << (8 * i);
  h = (h ^ k) * 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 29;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 32;
  return h;
}

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDull;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ull;
  x ^= x >> 33;
  return x;
}

/* Reads a whole file; *buf is malloc'd and NUL-terminated. */
static proto_status read_file(const char *path, char **buf, size_t *len) {
  proto_status st = PROTO_OK;
  char *b = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return fail(PROTO_EIO, "%s: %s", path, strerror(errno));
  if (fseek(f, 0, SEEK_END) != 0) {
    st = fail(PROTO_EIO, "%s: cannot seek", path);
    goto leave;
  }
  long sz = ftell(f);
  if (sz < 0 || fseek(f, 0, SEEK_SET) != 0) {
    st = fail(PROTO_EIO, "%s: cannot size", path);
    goto leave;
  }
  b = malloc((size_t)sz + 1);
  if (!b) {
    st = fail(PROTO_ENOMEM, "%s: out of memory", path);
    goto leave;
  }
  if (fread(b, 1, (size_t)sz, f) != (size_t)sz) {
    st = fail(PROTO_EIO, "%s: short read", path);
    goto leave;
  }
  b[sz] = 0;
  *buf = b;
  *len = (size_t)sz;
  b = NULL;
leave:
  free(b);
  fclose(f);
  return st;
}

/* A growable int32 vector. */
typedef struct ivec {
  int32_t *v;
  size_t n, cap;
} ivec;

static int ivec_reserve(ivec *a, size_t extra) {
  if (a->cap - a->n >= extra) return 0;
  size_t cap = a->cap ? a->cap : 64;
  while (cap - a->n < extra) cap *= 2;
  int32_t *v = realloc(a->v, cap * sizeof(int32_t));
  if (!v) return -1;
  a->v = v;
  a->cap = cap;
  return 0;
}

static int ivec_push(ivec *a, int32_t x) {
  if (a->n == a->cap && ivec_reserve(a, 1)) return -1;
  a->v[a->n++] = x;
  return 0;
}

/* A growable byte buffer. */
typedef struct bbuf {
  char *v;
  size_t n, cap;
} bbuf;

static int bbuf_add(bbuf *b, const void *p, size_t n) {
  if (b->cap - b->n < n + 1) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < n + 1) cap *= 2;
    char *v = realloc(b->v, cap);
    if (!v) return -1;
    b->v = v;
    b->cap = cap;
  }
  memcpy(b->v + b->n, p, n);
  b->n += n;
  b->v[b->n] = 0;
  return 0;
}

/* ------------------------------------------------------ string -> int map */

/* Keys are borrowed: they point into memory the tok owns (an arena). */
typedef struct sent {
  const char *s; /* NULL: empty slot */
  uint32_t len;
  int32_t val;
} sent;

typedef struct smap {
  sent *e;
  size_t cap, n; /* cap: power of two */
} smap;

static int smap_grow(smap *m) {
  size_t cap = m->cap ? m->cap * 2 : 1024;
  sent *e = calloc(cap, sizeof(sent));
  if (!e) return -1;
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->e[i].s) continue;
    size_t j = hash_bytes(m->e[i].s, m->e[i].len) & (cap - 1);
    while (e[j].s) j = (j + 1) & (cap - 1);
    e[j] = m->e[i];
  }
  free(m->e);
  m->e = e;
  m->cap = cap;
  return 0;
}

static sent *smap_find(const smap *m, const char *s, size_t len) {
  if (!m->cap) return NULL;
  size_t j = hash_bytes(s, len) & (m->cap - 1);
  while (m->e[j].s) {
    if (m->e[j].len == len && memcmp(m->e[j].s, s, len) == 0) return &m->e[j];
    j = (j + 1) & (m->cap - 1);
  }
  return NULL;
}

static int32_t smap_get(const smap *m, const char *s, size_t len) {
  sent *e = smap_find(m, s, len);
  return e ? e->val : -1;
}

/* Inserts or overwrites. 0 or -1 (out of memory). */
static int smap_put(smap *m, const char *s, size_t len, int32_t val) {
  sent *e = smap_find(m, s, len);
  if (e) {
    e->val = val;
    return 0;
  }
  if ((m->n + 1) * 4 > m->cap * 3 && smap_grow(m)) return -1;
  size_t j = hash_bytes(s, len) & (m->cap - 1);
  while (m->e[j].s) j = (j + 1) & (m->cap - 1);
  m->e[j].s = s;
  m->e[j].len = (uint32_t)len;
  m->e[j].val = val;
  m->n++;
  return 0;
}

/* ------------------------------------------------- pair -> merge map (BPE) */

typedef struct ment {
  uint64_t key; /* (a + 1) << 32 | (b + 1); 0: empty */
  int32_t rank, result;
} ment;

typedef struct mmap_ {
  ment *e;
  size_t cap, n;
} mmap_;

static uint64_t pair_key(int32_t a, int32_t b) {
  return ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
}

static const ment *mmap_get(const mmap_ *m, int32_t a, int32_t b) {
  if (!m->cap) return NULL;
  uint64_t key = pair_key(a, b);
  size_t j = mix64(key) & (m->cap - 1);
  while (m->e[j].key) {
    if (m->e[j].key == key) return &m->e[j];
    j = (j + 1) & (m->cap - 1);
  }
  return NULL;
}

/* Adds (a, b) unless present (the first rank of a repeated pair wins). */
static int mmap_add(mmap_ *m, int32_t a, int32_t b, int32_t rank, int32_t result) {
  if ((m->n + 1) * 4 > m->cap * 3) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    ment *e = calloc(cap, sizeof(ment));
    if (!e) return -1;
    for (size_t i = 0; i < m->cap; i++) {
      if (!m->e[i].key) continue;
      size_t j = mix64(m->e[i].key) & (cap - 1);
      while (e[j].key) j = (j + 1) & (cap - 1);
      e[j] = m->e[i];
    }
    free(m->e);
    m->e = e;
    m->cap = cap;
  }
  uint64_t key = pair_key(a, b);
  size_t j = mix64(key) & (m->cap - 1);
  while (m->e[j].key) {
    if (m->e[j].key == key) return 0;
    j = (j + 1) & (m->cap - 1);
  }
  m->e[j].key = key;
  m->e[j].rank = rank;
  m->e[j].result = result;
  m->n++;
  return 0;
}

/* ----------------------------------------------------------------- arena */

typedef struct ablock {
  struct ablock *next;
  size_t used, cap;
  char data[];
} ablock;

static char *arena_dup(ablock **arena, const char *s, size_t len) {
  ablock *b = *arena;
  if (!b || b->cap - b->used < len + 1) {
    size_t cap = len + 1 > 65536 ? len + 1 : 65536;
    b = malloc(sizeof(ablock) + cap);
    if (!b) return NULL;
    b->next = *arena;
    b->used = 0;
    b->cap = cap;
    *arena = b;
  }
  char *p = b->data + b->used;
  memcpy(p, s, len);
  p[len] = 0;
  b->used += len + 1;
  return p;
}

static void arena_free(ablock *a) {
  while (a) {
    ablock *n = a->next;
    free(a);
    a = n;
  }
}

/* ------------------------------------------------------------ word cache */

typedef struct centry {
  char *key; /* malloc'd: key bytes, then the ids (aligned) */
  uint32_t len, nids;
  int32_t *ids;
} centry;

typedef struct cshard {
  pthread_mutex_t mu;
  centry *e;
  size_t cap, n;
} cshard;

/* ------------------------------------------------------------------- tok */

struct tok {
  tok_kind kind;
  ablock *arena;
  char fingerprint[65];
  size_t vocab_size; /* largest id + 1 */
  /* id -> token text (WordPiece) or decoded bytes (BPE); NULL for gaps */
  const char **id_str;
  uint32_t *id_len;
  /* WordPiece */
  smap vocab; /* token string -> id (last line wins) */
  int32_t unk;
  int lowercase, strip;
  size_t max_tok_bytes;
  /* BPE */
  smap syms;       /* symbol string (byte-map chars, UTF-8) -> symbol index */
  int32_t *sym_id; /* symbol -> vocab id, -1 when not in vocab.json */
  const char **sym_str;
  uint32_t *sym_len;
  size_t nsym, sym_cap;
  int32_t byte_sym[256];
  int32_t byte_id[256];
  mmap_ merges;
  cshard cache[CACHE_SHARDS];
  int cache_ready;
};

tok_kind tok_get_kind(const tok *t) { return t->kind; }
size_t tok_vocab_size(const tok *t) { return t->vocab_size; }
const char *tok_fingerprint(const tok *t) { return t->fingerprint; }

int32_t tok_token_id(const tok *t, const char *token) {
  if (!t || !token) return -1;
  size_t len = strlen(token);
  if (t->kind == TOK_WORDPIECE) return smap_get(&t->vocab, token, len);
  int32_t s = smap_get(&t->syms, token, len);
  return s < 0 ? -1 : t->sym_id[s];
}

void tok_close(tok *t) {
  if (!t) return;
  if (t->cache_ready) {
    for (int i = 0; i < CACHE_SHARDS; i++) {
      for (size_t j = 0; j < t->cache[i].cap; j++) free(t->cache[i].e[j].key);
      free(t->cache[i].e);
      pthread_mutex_destroy(&t->cache[i].mu);
    }
  }
  free(t->id_str);
  free(t->id_len);
  free(t->vocab.e);
  free(t->syms.e);
  free(t->sym_id);
  free(t->sym_str);
  free(t->sym_len);
  free(t->merges.e);
  arena_free(t->arena);
  free(t);
}

/* GPT-2's bytes_to_unicode: byte -> code point, and its inverse. */
static void byte_map(uint32_t enc[256], int16_t dec[324]) {
  int n = 0;
  for (int i = 0; i < 324; i++) dec[i] = -1;
  for (int b = 0; b < 256; b++) {
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    enc[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    dec[enc[b]] = (int16_t)b;
  }
}

/* Interns a BPE symbol string; returns its index or -1 (out of memory). */
static int32_t sym_intern(tok *t, const char *s, size_t len) {
  int32_t k = smap_get(&t->syms, s, len);
  if (k >= 0) return k;
  if (t->nsym == t->sym_cap) {
    size_t cap = t->sym_cap ? t->sym_cap * 2 : 4096;
    int32_t *id = realloc(t->sym_id, cap * sizeof(int32_t));
    if (!id) return -1;
    t->sym_id = id;
    const char **str = realloc(t->sym_str, cap * sizeof(char *));
    if (!str) return -1;
    t->sym_str = str;
    uint32_t *l = realloc(t->sym_len, cap * sizeof(uint32_t));
    if (!l) return -1;
    t->sym_len = l;
    t->sym_cap = cap;
  }
  char *p = arena_dup(&t->arena, s, len);
  if (!p) return -1;
  k = (int32_t)t->nsym++;
  t->sym_id[k] = -1;
  t->sym_str[k] = p;
  t->sym_len[k] = (uint32_t)len;
  if (smap_put(&t->syms, p, len, k)) return -1;
  return k;
}

static proto_status bpe_load_vocab(tok *t, const char *path, const char *buf, size_t len) {
  proto_status st = PROTO_OK;
  json_error_t jerr;
  json_t *root = json_loadb(buf, len, 0, &jerr);
  if (!root) return fail(PROTO_ECORRUPT, "%s:%d: bad JSON: %s", path, jerr.line, jerr.text);
  if (!json_is_object(root)) {
    st = fail(PROTO_ECORRUPT, "%s: not a JSON object", path);
    goto leave;
  }
  size_t max_id = 0, count = 0;
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    json_int_t v = json_is_integer(val) ? json_integer_value(val) : -1;
    if (v < 0 || v >= MAX_VOCAB_ID) {
      st = fail(PROTO_ECORRUPT, "%s: token \"%.40s\": id is not an integer in [0, %d)", path, key,
                MAX_VOCAB_ID);
      goto leave;
    }
    if ((size_t)v > max_id) max_id = (size_t)v;
    count++;
  }
  if (count == 0) {
    st = fail(PROTO_ECORRUPT, "%s: empty vocabulary", path);
    goto leave;
  }
  t->vocab_size = max_id + 1;
  t->id_str = calloc(t->vocab_size, sizeof(char *));
  t->id_len = calloc(t->vocab_size, sizeof(uint32_t));
  if (!t->id_str || !t->id_len) {
    st = fail(PROTO_ENOMEM, "%s: out of memory", path);
    goto leave;
  }
  uint32_t enc[256];
  int16_t dec[324];
  byte_map(enc, dec);
  bbuf bytes = {0};
  json_object_foreach(root, key, val) {
    int32_t id = (int32_t)json_integer_value(val);
    size_t klen = strlen(key);
    int32_t s = sym_intern(t, key, klen);
    if (s < 0) {
      st = fail(PROTO_ENOMEM, "%s: out of memory", path);
      break;
    }
    t->sym_id[s] = id;
    /* decoded bytes: byte-map characters -> bytes, others as their UTF-8 */
    bytes.n = 0;
    size_t i = 0;
    while (i < klen) {
      size_t adv;
      int32_t cp = tu_utf8_next((const unsigned char *)key + i, klen - i, &adv);
      unsigned char b;
      if (cp >= 0 && cp < 324 && dec[cp] >= 0) {
        b = (unsigned char)dec[cp];
        if (bbuf_add(&bytes, &b, 1)) break;
      } else if (bbuf_add(&bytes, key + i, adv)) break;
      i += adv;
    }
    if (i < klen) {
      st = fail(PROTO_ENOMEM, "%s: out of memory", path);
      break;
    }
    char *p = arena_dup(&t->arena, bytes.n ? bytes.v : "", bytes.n);
    if (!p) {
      st = fail(PROTO_ENOMEM, "%s: out of memory", path);
      break;
    }
    t->id_str[id] = p;
    t->id_len[id] = (uint32_t)bytes.n;
  }
  free(bytes.v);
  if (st) goto leave;
  for (int b = 0; b < 256; b++) {
    unsigned char u[4];
    size_t n = tu_utf8_put(enc[b], u);
    int32_t s = sym_intern(t, (const char *)u, n);
    if (s < 0) {
      st = fail(PROTO_ENOMEM, "%s: out of memory", path);
      goto leave;
    }
    if (t->sym_id[s] < 0) {
      st = fail(PROTO_ECORRUPT, "%s: no token for byte 0x%02x (\"%.*s\")", path, b, (int)n, u);
      goto leave;
    }
    t->byte_sym[b] = s;
    t->byte_id[b] = t->sym_id[s];
  }
leave:
  json_decref(root);
  return st;
}

static proto_status bpe_load_merges(tok *t, const char *path, char *buf, size_t len) {
  if (!proto_utf8_valid(buf, len)) return fail(PROTO_ECORRUPT, "%s: not valid UTF-8", path);
  bbuf cat = {0};
  proto_status st = PROTO_OK;
  size_t pos = 0, lineno = 0;
  int32_t rank = 0;
  while (pos < len) {
    char *line = buf + pos;
    char *nl = memchr(line, '\n', len - pos);
    size_t ll = nl ? (size_t)(nl - line) : len - pos;
    pos += ll + (nl ? 1 : 0);
    lineno++;
    if (ll > 0 && line[ll - 1] == '\r') ll--;
    if (lineno == 1 && ll >= 8 && memcmp(line, "#version", 8) == 0) continue;
    if (ll == 0) continue;
    char *sp = memchr(line, ' ', ll);
    if (!sp || sp == line || sp == line + ll - 1 ||
        memchr(sp + 1, ' ', (size_t)(line + ll - sp - 1))) {
      st = fail(PROTO_ECORRUPT, "%s:%zu: expected two tokens separated by one space", path, lineno);
      break;
    }
    size_t la = (size_t)(sp - line), lb = ll - la - 1;
    int32_t a = sym_intern(t, line, la);
    int32_t b = a < 0 ? -1 : sym_intern(t, sp + 1, lb);
    cat.n = 0;
    if (b < 0 || bbuf_add(&cat, line, la) || bbuf_add(&cat, sp + 1, lb)) {
      st = fail(PROTO_ENOMEM, "%s: out of memory", path);
      break;
    }
    int32_t r = sym_intern(t, cat.v, cat.n);
    if (r < 0 || mmap_add(&t->merges, a, b, rank, r)) {
      st = fail(PROTO_ENOMEM, "%s: out of memory", path);
      break;
    }
    if (rank == INT32_MAX) {
      st = fail(PROTO_ECORRUPT, "%s: too many merges", path);
      break;
    }
    rank++;
  }
  free(cat.v);
  return st;
}

static proto_status cache_init(tok *t) {
  for (int i = 0; i < CACHE_SHARDS; i++) {
    if (pthread_mutex_init(&t->cache[i].mu, NULL) != 0) {
      for (int j = 0; j < i; j++) pthread_mutex_destroy(&t->cache[j].mu);
      return fail(PROTO_EINTERNAL, "tok: pthread_mutex_init failed");
    }
  }
  t->cache_ready = 1;
  return PROTO_OK;
}

proto_status tok_open_bpe(const char *vocab_json, const char *merges_txt, tok **out) {
  proto_status st;
  char *vb = NULL, *mb = NULL;
  size_t vl = 0, ml = 0;
  tok *t = NULL;
  if (!vocab_json || !merges_txt || !out) return fail(PROTO_EINVAL, "tok_open_bpe: NULL argument");
  *out = NULL;
  if ((st = read_file(vocab_json, &vb, &vl))) goto leave;
  if ((st = read_file(merges_txt, &mb, &ml))) goto leave;
  t = calloc(1, sizeof *t);
  if (!t) {
    st = fail(PROTO_ENOMEM, "tok_open_bpe: out of memory");
    goto leave;
  }
  t->kind = TOK_BPE;
  if ((st = cache_init(t))) goto leave;
  if ((st = bpe_load_vocab(t, vocab_json, vb, vl))) goto leave;
  if ((st = bpe_load_merges(t, merges_txt, mb, ml))) goto leave;
  proto_sha256 h;
  proto_sha256_init(&h);
  proto_sha256_update(&h, vb, vl);
  proto_sha256_update(&h, mb, ml);
  proto_sha256_final_hex(&h, t->fingerprint);
  *out = t;
  t = NULL;
leave:
  tok_close(t);
  free(vb);
  free(mb);
  return st;
}

/* ------------------------------------------------------------ WordPiece load */

static const char *const wp_specials[5] = {"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"};

proto_status tok_open_wordpiece(const char *vocab_txt, int lowercase, int strip_accents,
                                tok **out) {
  proto_status st;
  char *buf = NULL;
  size_t len = 0;
  tok *t = NULL;
  if (!vocab_txt || !out) return fail(PROTO_EINVAL, "tok_open_wordpiece: NULL argument");
  *out = NULL;
  if ((st = read_file(vocab_txt, &buf, &len))) goto leave;
  if (!proto_utf8_valid(buf, len)) {
    st = fail(PROTO_ECORRUPT, "%s: not valid UTF-8", vocab_txt);
    goto leave;
  }
  t = calloc(1, sizeof *t);
  if (!t) {
    st = fail(PROTO_ENOMEM, "tok_open_wordpiece: out of memory");
    goto leave;
  }
  t->kind = TOK_WORDPIECE;
  t->lowercase = lowercase ? 1 : 0;
  t->strip = strip_accents < 0 ? t->lowercase : (strip_accents ? 1 : 0);
  /* lines, with universal newlines (\n, \r\n, \r) as Python's readlines */
  size_t nlines = 0;
  for (size_t i = 0; i < len;) {
    size_t j = i;
    while (j < len && buf[j] != '\n' && buf[j] != '\r') j++;
    nlines++;
    if (j < len && buf[j] == '\r' && j + 1 < len && buf[j + 1] == '\n') j++;
    i = j + 1;
  }
  if (nlines == 0) {
    st = fail(PROTO_ECORRUPT, "%s: empty vocabulary", vocab_txt);
    goto leave;
  }
  if (nlines >= (size_t)MAX_VOCAB_ID) {
    st = fail(PROTO_ECORRUPT, "%s: too many lines", vocab_txt);
    goto leave;
  }
  t->vocab_size = nlines;
  t->id_str = calloc(nlines, sizeof(char *));
  t->id_len = calloc(nlines, sizeof(uint32_t));
  if (!t->id_str || !t->id_len) {
    st = fail(PROTO_ENOMEM, "%s: out of memory", vocab_txt);
    goto leave;
  }
  size_t id = 0;
  for (size_t i = 0; i < len;) {
    size_t j = i;
    while (j < len && buf[j] != '\n' && buf[j] != '\r') j++;
    char *p = arena_dup(&t->arena, buf + i, j - i);
    if (!p || smap_put(&t->vocab, p, j - i, (int32_t)id)) {
      st = fail(PROTO_ENOMEM, "%s: out of memory", vocab_txt);
      goto leave;
    }
    t->id_str[id] = p;
    t->id_len[id] = (uint32_t)(j - i);
    if (j - i > t->max_tok_bytes) t->max_tok_bytes = j - i;
    id++;
    if (j < len && buf[j] == '\r' && j + 1 < len && buf[j + 1] == '\n') j++;
    i = j + 1;
  }
  t->unk = smap_get(&t->vocab, "[UNK]", 5);
  if (t->unk < 0) {
    st = fail(PROTO_ECORRUPT, "%s: no [UNK] token", vocab_txt);
    goto leave;
  }
  proto_sha256 h;
  proto_sha256_init(&h);
  proto_sha256_update(&h, buf, len);
  char extra[64];
  int n = snprintf(extra, sizeof extra, "\nlower=%d strip=%d", t->lowercase, t->strip);
  proto_sha256_update(&h, extra, (size_t)n);
  proto_sha256_final_hex(&h, t->fingerprint);
  *out = t;
  t = NULL;
leave:
  tok_close(t);
  free(buf);
  return st;
}

static int file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

proto_status tok_open_dir(const char *dir, tok **out) {
  char a[4096], b[4096];
  if (!dir || !out) return fail(PROTO_EINVAL, "tok_open_dir: NULL argument");
  *out = NULL;
  snprintf(a, sizeof a, "%s/vocab.json", dir);
  snprintf(b, sizeof b, "%s/merges.txt", dir);
  if (file_exists(a) && file_exists(b)) return tok_open_bpe(a, b, out);
  snprintf(a, sizeof a, "%s/vocab.txt", dir);
  if (!file_exists(a))
    return fail(PROTO_ENOTFOUND, "%s: no tokenizer (vocab.json + merges.txt, or vocab.txt)", dir);
  int lower = 1, strip = -1;
  snprintf(b, sizeof b, "%s/tokenizer_config.json", dir);
  if (file_exists(b)) {
    json_error_t jerr;
    json_t *cfg = json_load_file(b, 0, &jerr);
    if (!cfg || !json_is_object(cfg)) {
      json_decref(cfg);
      return fail(PROTO_ECORRUPT, "%s:%d: bad JSON: %s", b, cfg ? 0 : jerr.line,
                  cfg ? "not an object" : jerr.text);
    }
    json_t *v = json_object_get(cfg, "do_lower_case");
    if (json_is_boolean(v)) lower = json_is_true(v);
    v = json_object_get(cfg, "strip_accents");
    if (json_is_boolean(v)) strip = json_is_true(v);
    json_decref(cfg);
  }
  return tok_open_wordpiece(a, lower, strip, out);
}

/* ------------------------------------------------------------- BPE encode */

/* GPT-2 class of ASCII bytes (from the generated tables, once). */
static unsigned char ascii_cls[128];
static pthread_once_t ascii_once = PTHREAD_ONCE_INIT;

static void ascii_init(void) {
  for (uint32_t c = 0; c < 128; c++) ascii_cls[c] = (unsigned char)(tu_props(c) & TU_BPE_MASK);
}

/* Code point (or -1 for an invalid byte), its length and its GPT-2 class. */
static inline int32_t gpt2_unit(const unsigned char *s, size_t len, size_t *adv, unsigned *cls) {
  if (s[0] < 0x80) {
    *adv = 1;
    *cls = ascii_cls[s[0]];
    return s[0];
  }
  int32_t cp = tu_utf8_next(s, len, adv);
  *cls = cp < 0 ? TU_BPE_OTHER : (tu_props((uint32_t)cp) & TU_BPE_MASK);
  return cp;
}

/* Pre-token end: GPT-2's pattern at byte position pos of s[0..len). */
static size_t gpt2_next(const unsigned char *s, size_t len, size_t pos) {
  size_t adv;
  unsigned cls;
  int32_t cp = gpt2_unit(s + pos, len - pos, &adv, &cls);
  if (cp == '\'' && pos + 1 < len) {
    unsigned c1 = s[pos + 1];
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return pos + 2;
    if (pos + 2 < len) {
      unsigned c2 = s[pos + 2];
      if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
        return pos + 3;
    }
  }
  size_t start = pos + adv;
  if (cp == ' ' && start < len) {
    size_t a1;
    unsigned k1;
    gpt2_unit(s + start, len - start, &a1, &k1);
    if (k1 != TU_BPE_SPACE) {
      cls = k1;
      start += a1;
    }
  }
  if (cls != TU_BPE_SPACE) {
    size_t p = start;
    while (p < len) {
      size_t a;
      unsigned k;
      gpt2_unit(s + p, len - p, &a, &k);
      if (k != cls) break;
      p += a;
    }
    return p;
  }
  /* whitespace: \s+(?!\S) or \s+ */
  size_t last = pos, p = start;
  while (p < len) {
    size_t a;
    unsigned k;
    gpt2_unit(s + p, len - p, &a, &k);
    if (k != TU_BPE_SPACE) break;
    last = p;
    p += a;
  }
  if (p == len) return p;
  return last > pos ? last : p;
}

/* Min-heap of (rank << 32 | position). */
typedef struct heap {
  uint64_t *v;
  size_t n;
} heap;

static void heap_push(heap *h, uint64_t x) {
  size_t i = h->n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (h->v[p] <= x) break;
    h->v[i] = h->v[p];
    i = p;
  }
  h->v[i] = x;
}

static uint64_t heap_pop(heap *h) {
  uint64_t top = h->v[0], x = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && h->v[c + 1] < h->v[c]) c++;
    if (x <= h->v[c]) break;
    h->v[i] = h->v[c];
    i = c;
  }
  if (h->n) h->v[i] = x;
  return top;
}

/* Pushes the pair starting at symbol i when it is a merge. */
static void push_pair(const tok *t, heap *h, const int32_t *sym, const int32_t *next, int32_t i) {
  if (i < 0 || next[i] < 0) return;
  const ment *m = mmap_get(&t->merges, sym[i], sym[next[i]]);
  if (m) heap_push(h, ((uint64_t)(uint32_t)m->rank << 32) | (uint32_t)i);
}

/* BPE of one pre-token; appends its ids to out. */
static proto_status bpe_word(const tok *t, const unsigned char *w, size_t n, ivec *out) {
  enum { SMALL = 64 };
  int32_t sym_s[SMALL], next_s[SMALL], prev_s[SMALL];
  uint64_t heap_s[4 * SMALL], round_s[SMALL];
  int32_t *sym = sym_s, *next = next_s, *prev = prev_s;
  uint64_t *round = round_s;
  heap h = {heap_s, 0};
  proto_status st = PROTO_OK;
  if (n > SMALL) {
    /* the heap never holds more than 3 entries per symbol */
    sym = malloc(n * sizeof(int32_t));
    next = malloc(n * sizeof(int32_t));
    prev = malloc(n * sizeof(int32_t));
    round = malloc(n * sizeof(uint64_t));
    h.v = malloc(4 * n * sizeof(uint64_t));
    if (!sym || !next || !prev || !round || !h.v) {
      st = fail(PROTO_ENOMEM, "tok_encode: out of memory");
      goto leave;
    }
  }
  for (size_t i = 0; i < n; i++) {
    sym[i] = t->byte_sym[w[i]];
    next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    prev[i] = (int32_t)i - 1;
  }
  for (size_t i = 0; i + 1 < n; i++) push_pair(t, &h, sym, next, (int32_t)i);
  while (h.n) {
    /* one round: every occurrence of the lowest-ranked pair, left to right */
    uint32_t rank = (uint32_t)(h.v[0] >> 32);
    size_t nr = 0;
    while (h.n && (uint32_t)(h.v[0] >> 32) == rank) {
      uint64_t e = heap_pop(&h);
      if (nr == 0 || round[nr - 1] != e) round[nr++] = e;
    }
    for (size_t k = 0; k < nr; k++) {
      int32_t i = (int32_t)(uint32_t)round[k];
      if (sym[i] < 0 || next[i] < 0) continue;
      const ment *m = mmap_get(&t->merges, sym[i], sym[next[i]]);
      if (!m || (uint32_t)m->rank != rank) continue;
      int32_t j = next[i];
      sym[i] = m->result;
      sym[j] = -1;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      push_pair(t, &h, sym, next, prev[i]);
      push_pair(t, &h, sym, next, i);
    }
  }
  for (int32_t i = 0; i >= 0; i = next[i]) {
    int32_t s = sym[i];
    int32_t id = t->sym_id[s];
    if (id >= 0) {
      if (ivec_push(out, id)) {
        st = fail(PROTO_ENOMEM, "tok_encode: out of memory");
        goto leave;
      }
      continue;
    }
    /* a merge result missing from vocab.json: its bytes */
    const unsigned char *p = (const unsigned char *)t->sym_str[s];
    size_t len = t->sym_len[s], k = 0;
    uint32_t enc[256];
    int16_t dec[324];
    byte_map(enc, dec);
    while (k < len) {
      size_t a;
      int32_t cp = tu_utf8_next(p + k, len - k, &a);
      if (cp < 0 || cp >= 324 || dec[cp] < 0) {
        st = fail(PROTO_EMODEL, "tok_encode: merge result \"%.*s\" is not made of byte tokens",
                  (int)len, (const char *)p);
        goto leave;
      }
      if (ivec_push(out, t->byte_id[dec[cp]])) {
        st = fail(PROTO_ENOMEM, "tok_encode: out of memory");
        goto leave;
      }
      k += a;
    }
  }
leave:
  if (sym != sym_s) {
    free(sym);
    free(next);
    free(prev);
    free(round);
    free(h.v);
  }
  return st;
}

/* Cached BPE of one pre-token. */
static proto_status bpe_word_cached(tok *t, const unsigned char *w, size_t n, ivec *out) {
  if (n == 1)
    return ivec_push(out, t->byte_id[w[0]]) ? fail(PROTO_ENOMEM, "tok_encode: out of memory")
                                            : PROTO_OK;
  if (n > CACHE_MAX_WORD) return bpe_word(t, w, n, out);
  uint64_t hv = hash_bytes(w, n);
  cshard *sh = &t->cache[hv % CACHE_SHARDS];
  pthread_mutex_lock(&sh->mu);
  if (sh->cap) {
    size_t j = (hv >> 8) & (sh->cap - 1);
    while (sh->e[j].key) {
      centry *e = &sh->e[j];
      if (e->len == n && memcmp(e->key, w, n) == 0) {
        int bad = ivec_reserve(out, e->nids);
        if (!bad && e->nids) {
          memcpy(out->v + out->n, e->ids, e->nids * sizeof(int32_t));
          out->n += e->nids;
        }
        pthread_mutex_unlock(&sh->mu);
        return bad ? fail(PROTO_ENOMEM, "tok_encode: out of memory") : PROTO_OK;
      }
      j = (j + 1) & (sh->cap - 1);
    }
  }
  pthread_mutex_unlock(&sh->mu);
  size_t first = out->n;
  proto_status st = bpe_word(t, w, n, out);
  if (st) return st;
  size_t nids = out->n - first;
  /* insert (a miss is harmless: the cache is only an accelerator) */
  size_t off = (n + 7) & ~(size_t)7;
  char *key = malloc(off + nids * sizeof(int32_t));
  if (!key) return PROTO_OK;
  memcpy(key, w, n);
  memcpy(key + off, out->v + first, nids * sizeof(int32_t));
  pthread_mutex_lock(&sh->mu);
  if (sh->n >= CACHE_SHARD_MAX) {
    for (size_t j = 0; j < sh->cap; j++) free(sh->e[j].key);
    memset(sh->e, 0, sh->cap * sizeof(centry));
    sh->n = 0;
  }
  if ((sh->n + 1) * 2 > sh->cap) {
    size_t cap = sh->cap ? sh->cap * 2 : 256;
    centry *e = calloc(cap, sizeof(centry));
    if (!e) {
      pthread_mutex_unlock(&sh->mu);
      free(key);
      return PROTO_OK;
    }
    for (size_t j = 0; j < sh->cap; j++) {
      if (!sh->e[j].key) continue;
      size_t k = (hash_bytes(sh->e[j].key, sh->e[j].len) >> 8) & (cap - 1);
      while (e[k].key) k = (k + 1) & (cap - 1);
      e[k] = sh->e[j];
    }
    free(sh->e);
    sh->e = e;
    sh->cap = cap;
  }
  size_t j = (hv >> 8) & (sh->cap - 1);
  while (sh->e[j].key) {
    if (sh->e[j].len == n && memcmp(sh->e[j].key, w, n) == 0) break; /* raced */
    j = (j + 1) & (sh->cap - 1);
  }
  if (sh->e[j].key) {
    free(key);
  } else {
    sh->e[j].key = key;
    sh->e[j].len = (uint32_t)n;
    sh->e[j].nids = (uint32_t)nids;
    sh->e[j].ids = (int32_t *)(void *)(key + off);
    sh->n++;
  }
  pthread_mutex_unlock(&sh->mu);
  return PROTO_OK;
}

static proto_status bpe_encode(tok *t, const unsigned char *s, size_t len, ivec *out) {
  size_t pos = 0;
  pthread_once(&ascii_once, ascii_init);
  while (pos < len) {
    size_t end = gpt2_next(s, len, pos);
    proto_status st = bpe_word_cached(t, s + pos, end - pos, out);
    if (st) return st;
    pos = end;
  }
  return PROTO_OK;
}

/* -------------------------------------------------------- WordPiece encode */

static int is_cjk(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

typedef struct wp_scratch {
  tu_buf a, b, c, d;
  bbuf word;
  size_t *off;
  size_t off_cap;
} wp_scratch;

/* Greedy longest-match-first WordPiece of one word (w[0..m) code points). */
static proto_status wp_word(const tok *t, wp_scratch *sc, const uint32_t *w, size_t m, ivec *out) {
  if (m == 0) return PROTO_OK;
  if (m > WP_MAX_CHARS)
    return ivec_push(out, t->unk) ? fail(PROTO_ENOMEM, "tok_encode: out of memory") : PROTO_OK;
  if (sc->off_cap < m + 1) {
    size_t *o = realloc(sc->off, (m + 1) * sizeof(size_t));
    if (!o) return fail(PROTO_ENOMEM, "tok_encode: out of memory");
    sc->off = o;
    sc->off_cap = m + 1;
  }
  /* "##" + the word's UTF-8; off[i]: offset of code point i in the word */
  sc->word.n = 0;
  if (bbuf_add(&sc->word, "##", 2)) return fail(PROTO_ENOMEM, "tok_encode: out of memory");
  for (size_t i = 0; i < m; i++) {
    unsigned char u[4];
    size_t k = tu_utf8_put(w[i], u);
    sc->off[i] = sc->word.n - 2;
    if (bbuf_add(&sc->word, u, k)) return fail(PROTO_ENOMEM, "tok_encode: out of memory");
  }
  sc->off[m] = sc->word.n - 2;
  const char *bytes = sc->word.v + 2;
  size_t first = out->n, start = 0;
  while (start < m) {
    size_t end = m;
    int32_t cur = -1;
    while (start < end) {
      size_t nb = sc->off[end] - sc->off[start];
      if (nb <= t->max_tok_bytes) {
        if (start == 0) {
          cur = smap_get(&t->vocab, bytes, nb);
        } else if (nb + 2 <= t->max_tok_bytes) {
          /* "##" + piece, written over the two bytes before the piece */
          char *p = sc->word.v + sc->off[start], save0 = p[0], save1 = p[1];
          p[0] = '#';
          p[1] = '#';
          cur = smap_get(&t->vocab, p, nb + 2);
          p[0] = save0;
          p[1] = save1;
        }
        if (cur >= 0) break;
      }
      end--;
    }
    if (cur < 0) {
      out->n = first;
      return ivec_push(out, t->unk) ? fail(PROTO_ENOMEM, "tok_encode: out of memory") : PROTO_OK;
    }
    if (ivec_push(out, cur)) return fail(PROTO_ENOMEM, "tok_encode: out of memory");
    start = end;
  }
  return PROTO_OK;
}

static int cps_equal_ascii(const uint32_t *w, size_t m, const char *s) {
  size_t n = strlen(s);
  if (n != m) return 0;
  for (size_t i = 0; i < m; i++)
    if (w[i] != (unsigned char)s[i]) return 0;
  return 1;
}

/* The basic tokenizer and WordPiece on one segment without special tokens. */
static proto_status wp_segment(const tok *t, wp_scratch *sc, const uint32_t *cps, size_t n,
                               ivec *out) {
  proto_status nomem = PROTO_ENOMEM;
  tu_buf *a = &sc->a, *b = &sc->b, *c = &sc->c, *d = &sc->d;
  a->n = b->n = c->n = 0;
  /* lower-case one character at a time (HF, before the basic tokenizer): so
   * Σ is always σ, never the word-final ς of Python's str.lower() */
  const uint32_t *src = cps;
  size_t sn = n;
  if (t->lowercase) {
    if (tu_buf_reserve(a, n)) goto oom;
    for (size_t i = 0; i < n; i++) {
      uint32_t l[3];
      size_t k = tu_lower(cps[i], l);
      for (size_t j = 0; j < k; j++)
        if (tu_buf_push(a, l[j])) goto oom;
    }
    src = a->v;
    sn = a->n;
  }
  /* clean text, pad CJK */
  for (size_t i = 0; i < sn; i++) {
    uint32_t cp = src[i];
    uint32_t p = tu_props(cp);
    if (cp == 0 || cp == 0xFFFD || (p & TU_WP_CTRL)) continue;
    if (p & TU_WP_WS) {
      if (tu_buf_push(b, ' ')) goto oom;
    } else if (is_cjk(cp)) {
      if (tu_buf_push(b, ' ') || tu_buf_push(b, cp) || tu_buf_push(b, ' ')) goto oom;
    } else if (tu_buf_push(b, cp)) goto oom;
  }
  if (tu_nfc(b->v, b->n, c)) goto oom;
  /* whitespace split (str.split()) */
  size_t i = 0;
  while (i < c->n) {
    while (i < c->n && (tu_props(c->v[i]) & TU_PYSPACE)) i++;
    size_t s = i;
    while (i < c->n && !(tu_props(c->v[i]) & TU_PYSPACE)) i++;
    if (s == i) break;
    const uint32_t *w = c->v + s;
    size_t m = i - s;
    int special = 0;
    for (int k = 0; k < 5; k++) special |= cps_equal_ascii(w, m, wp_specials[k]);
    if (special) {
      proto_status st = wp_word(t, sc, w, m, out);
      if (st) return st;
      continue;
    }
    if (t->strip) {
      d->n = 0;
      if (tu_nfd(w, m, d)) goto oom;
      size_t k = 0;
      for (size_t j = 0; j < d->n; j++)
        if (!(tu_props(d->v[j]) & TU_MN)) d->v[k++] = d->v[j];
      d->n = k;
      w = d->v;
      m = k;
    }
    /* punctuation split */
    size_t ws = 0;
    for (size_t j = 0; j <= m; j++) {
      if (j == m || (tu_props(w[j]) & TU_WP_PUNCT)) {
        proto_status st = wp_word(t, sc, w + ws, j - ws, out);
        if (!st && j < m) st = wp_word(t, sc, w + j, 1, out);
        if (st) return st;
        ws = j + 1;
      }
    }
  }
  return PROTO_OK;
oom:
  return fail(nomem, "tok_encode: out of memory");
}

static proto_status wp_encode(const tok *t, const unsigned char *s, size_t len, ivec *out) {
  if (!proto_utf8_valid((const char *)s, len))
    return fail(PROTO_EUTF8, "tok_encode: invalid UTF-8");
  proto_status st = PROTO_OK;
  wp_scratch sc;
  memset(&sc, 0, sizeof sc);
  tu_buf cps = {0};
  if (tu_buf_reserve(&cps, len + 1)) {
    st = fail(PROTO_ENOMEM, "tok_encode: out of memory");
    goto leave;
  }
  for (size_t i = 0; i < len;) {
    size_t adv;
    int32_t cp = tu_utf8_next(s + i, len - i, &adv);
    cps.v[cps.n++] = (uint32_t)cp;
    i += adv;
  }
  /* special tokens written in the text: leftmost-longest */
  size_t seg = 0, i = 0;
  while (i < cps.n) {
    int best = -1;
    size_t blen = 0;
    if (cps.v[i] == '[') {
      for (int k = 0; k < 5; k++) {
        size_t l = strlen(wp_specials[k]);
        if (l > blen && i + l <= cps.n && cps_equal_ascii(cps.v + i, l, wp_specials[k])) {
          best = k;
          blen = l;
        }
      }
    }
    if (best < 0) {
      i++;
      continue;
    }
    if (seg < i && (st = wp_segment(t, &sc, cps.v + seg, i - seg, out))) goto leave;
    int32_t id = smap_get(&t->vocab, wp_specials[best], blen);
    if (ivec_push(out, id >= 0 ? id : t->unk)) {
      st = fail(PROTO_ENOMEM, "tok_encode: out of memory");
      goto leave;
    }
    i += blen;
    seg = i;
  }
  if (seg < cps.n) st = wp_segment(t, &sc, cps.v + seg, cps.n - seg, out);
leave:
  free(cps.v);
  free(sc.a.v);
  free(sc.b.v);
  free(sc.c.v);
  free(sc.d.v);
  free(sc.word.v);
  free(sc.off);
  return st;
}

proto_status tok_encode(const tok *t, const char *text, size_t len, int32_t **ids, size_t *n) {
  if (!t || (!text && len) || !ids || !n) return fail(PROTO_EINVAL, "tok_encode: NULL argument");
  *ids = NULL;
  *n = 0;
  ivec out = {0};
  proto_status st;
  const unsigned char *s = (const unsigned char *)(text ? text : "");
  if (t->kind == TOK_BPE)
    st = bpe_encode((tok *)t, s, len, &out); /* only the locked cache changes */
  else st = wp_encode(t, s, len, &out);
  if (st) {
    free(out.v);
    return st;
  }
  if (!out.v) {
    out.v = malloc(sizeof(int32_t));
    if (!out.v) return fail(PROTO_ENOMEM, "tok_encode: out of memory");
  }
  *ids = out.v;
  *n = out.n;
  return PROTO_OK;
}

/* ------------------------------------------------------------------ decode */

proto_status tok_decode(const tok *t, const int32_t *ids, size_t n, char **text, size_t *len) {
  if (!t || (!ids && n) || !text || !len) return fail(PROTO_EINVAL, "tok_decode: NULL argument");
  *text = NULL;
  *len = 0;
  bbuf b = {0};
  proto_status st = PROTO_OK;
  if (bbuf_add(&b, "", 0)) return fail(PROTO_ENOMEM, "tok_decode: out of memory");
  for (size_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id < 0 || (size_t)id >= t->vocab_size || !t->id_str[id]) {
      st = fail(PROTO_EINVAL, "tok_decode: unknown id %d at position %zu", (int)id, i);
      goto leave;
    }
    if (t->kind == TOK_WORDPIECE && i > 0 && bbuf_add(&b, " ", 1)) goto oom;
    if (bbuf_add(&b, t->id_str[id], t->id_len[id])) goto oom;
  }
  if (t->kind == TOK_WORDPIECE) {
    /* " ".join(tokens).replace(" ##", "").strip() */
    size_t w = 0;
    for (size_t r = 0; r < b.n;) {
      if (r + 3 <= b.n && memcmp(b.v + r, " ##", 3) == 0) {
        r += 3;
        continue;
      }
      b.v[w++] = b.v[r++];
    }
    b.n = w;
    size_t s = 0, e = b.n;
    while (s < e) {
      size_t adv;
      int32_t cp = tu_utf8_next((const unsigned char *)b.v + s, e - s, &adv);
      if (cp < 0 || !(tu_props((uint32_t)cp) & TU_PYSPACE)) break;
      s += adv;
    }
    while (e > s) {
      size_t k = e - 1;
      while (k > s && ((unsigned char)b.v[k] & 0xC0) == 0x80) k--;
      size_t adv;
      int32_t cp = tu_utf8_next((const unsigned char *)b.v + k, e - k, &adv);
      if (cp < 0 || !(tu_props((uint32_t)cp) & TU_PYSPACE)) break;
      e = k;
    }
    memmove(b.v, b.v + s, e - s);
    b.n = e - s;
    b.v[b.n] = 0;
  }
  *text = b.v;
  *len = b.n;
  return PROTO_OK;
oom:
  st = fail(PROTO_ENOMEM, "tok_decode: out of memory");
leave:
  free(b.v);
  return st;
}
