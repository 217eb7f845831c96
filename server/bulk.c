/* bulk.c - chunks out, vectors in (bulk.h; formats in docs/OPERATIONS.md,
 * "Bulk vectors").
 *
 * Chunks file (JSON Lines): a header line, then one line per chunk:
 *   {"format": "retro-chunks", "version": 1, "encoder": FINGERPRINT,
 *    "dim": D, "chunk_tokenizer": ..., "embed_from": "ids"|"text",
 *    "pooling": "mean"|"cls", "cls_id": C, "sep_id": S, "max_tokens": M,
 *    "count": N, "digest": HEX}
 *   {"doc": ID, "chunk": ORDINAL, "ids": [...], "text": "..."}
 * The header's count and digest are known at the end only: the header is
 * written first with both padded to a fixed width and rewritten in place.
 *
 * Vectors file (little-endian): "RETROVEC", u32 version (1), u32 dim,
 * u64 count, 32 bytes digest, u32 fingerprint length, the fingerprint
 * (UTF-8), then count x dim float32.
 *
 * Digest: SHA-256 over every chunk's encoder input in order, each as u32
 * n then n int32 ids (little-endian): the same inputs, the same vectors.
 */
#include "bulk.h"

#include "api.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define VEC_MAGIC "RETROVEC"
enum { VEC_VERSION = 1, VEC_FIXED = 60, VEC_MAX_FP = 1024 };

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p) {
  return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* One chunk's encoder input into the digest (see the file comment). */
static void digest_add(proto_sha256 *h, const int32_t *ids, size_t n) {
  unsigned char buf[4 * 64];
  put_u32(buf, (uint32_t)n);
  proto_sha256_update(h, buf, 4);
  for (size_t i = 0; i < n;) {
    size_t m = 0;
    for (; m < 64 && i < n; m++, i++) put_u32(buf + 4 * m, (uint32_t)ids[i]);
    proto_sha256_update(h, buf, 4 * m);
  }
}

static void hex32(const unsigned char d[32], char out[65]) {
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Chunks file ------------------------------------------------------------------- */

typedef struct chunk_writer {
  srv_engine *e;
  FILE *f;         /* NULL: only count and digest (the check of --vectors) */
  const char *doc; /* the document being written */
  proto_sha256 h;
  uint64_t count;
  proto_buf line;
  int quiet;
  double last;
} chunk_writer;

/* The header line; count and digest at a fixed width (rewritten at the end). */
static void chunks_header(srv_engine *e, uint64_t count, const char *digest, proto_buf *b) {
  bert *enc = srv_engine_encoder(e);
  srv_info info;
  int32_t cls, sep;
  char num[32];
  bert_special_ids(enc, &cls, &sep);
  srv_info_get(e, &info);
  proto_jw w;
  proto_jw_init(&w, b);
  proto_jw_obj(&w);
  proto_jw_key(&w, "format");
  proto_jw_cstr(&w, "retro-chunks");
  proto_jw_key(&w, "version");
  proto_jw_int(&w, 1);
  proto_jw_key(&w, "encoder");
  proto_jw_cstr(&w, bert_fingerprint(enc));
  proto_jw_key(&w, "dim");
  proto_jw_uint(&w, srv_engine_dim(e));
  proto_jw_key(&w, "chunk_tokenizer");
  proto_jw_cstr(&w, info.chunk_tokenizer);
  proto_jw_key(&w, "embed_from");
  proto_jw_cstr(&w, info.embed_by_ids ? "ids" : "text");
  proto_jw_key(&w, "pooling");
  proto_jw_cstr(&w, bert_get_pooling(enc) == BERT_POOL_MEAN ? "mean" : "cls");
  proto_jw_key(&w, "cls_id");
  proto_jw_int(&w, cls);
  proto_jw_key(&w, "sep_id");
  proto_jw_int(&w, sep);
  proto_jw_key(&w, "max_tokens");
  proto_jw_int(&w, bert_max_tokens(enc));
  proto_jw_key(&w, "count");
  snprintf(num, sizeof num, "%20llu", (unsigned long long)count);
  proto_jw_raw(&w, num, strlen(num));
  proto_jw_key(&w, "digest");
  proto_jw_cstr(&w, digest);
  proto_jw_obj_end(&w);
  proto_buf_add(b, "\n", 1);
}

/* One chunk's line (none without a file), its digest and count. */
static proto_status write_chunk(void *ctx, const srv_chunk_key *k) {
  chunk_writer *cw = ctx;
  digest_add(&cw->h, k->ids, k->n_ids);
  cw->count++;
  if (!cw->f) return PROTO_OK;
  proto_buf *b = &cw->line;
  b->len = 0;
  proto_jw w;
  proto_jw_init(&w, b);
  proto_jw_obj(&w);
  proto_jw_key(&w, "doc");
  proto_jw_cstr(&w, cw->doc);
  proto_jw_key(&w, "chunk");
  proto_jw_uint(&w, k->chunk);
  proto_jw_key(&w, "ids");
  proto_jw_arr(&w);
  for (size_t i = 0; i < k->n_ids; i++) proto_jw_int(&w, k->ids[i]);
  proto_jw_arr_end(&w);
  proto_jw_key(&w, "text");
  proto_jw_str(&w, k->text, k->text_len);
  proto_jw_obj_end(&w);
  proto_buf_add(b, "\n", 1);
  if (b->failed) return proto_fail(PROTO_ENOMEM, "out of memory");
  if (fwrite(b->data, 1, b->len, cw->f) != b->len)
    return proto_fail(PROTO_EIO, "writing the chunks: %s", strerror(errno));
  return PROTO_OK;
}

static proto_status write_doc(void *ctx, const srv_doc *doc, const char *where) {
  chunk_writer *cw = ctx;
  (void)where;
  cw->doc = doc->id;
  proto_status s = srv_doc_chunks(cw->e, doc, write_chunk, cw);
  double now = proto_now();
  if (!cw->quiet && now - cw->last >= 5.0) {
    cw->last = now;
    fprintf(stderr, "retro chunks: %llu chunks\n", (unsigned long long)cw->count);
  }
  return s;
}

/* Rewrites the header with the count and digest, flushes and closes.
 * Returns 0, or -1 (errno). */
static int finish_chunks(chunk_writer *cw) {
  unsigned char d[32];
  char hex[65];
  proto_sha256_final(&cw->h, d);
  hex32(d, hex);
  proto_buf b;
  proto_buf_init(&b);
  chunks_header(cw->e, cw->count, hex, &b);
  int rc = b.failed || fseek(cw->f, 0, SEEK_SET) != 0 || fwrite(b.data, 1, b.len, cw->f) != b.len ||
                   fflush(cw->f) != 0
               ? -1
               : 0;
  proto_buf_free(&b);
  if (fclose(cw->f) != 0) rc = -1;
  cw->f = NULL;
  return rc;
}

int bulk_write_chunks(srv_engine *e, const corpus *c, const char *path, int quiet,
                      volatile sig_atomic_t *stop) {
  size_t tl = strlen(path) + 5;
  char *tmp = malloc(tl);
  chunk_writer cw = {.e = e, .quiet = quiet, .last = proto_now()};
  proto_buf_init(&cw.line);
  proto_sha256_init(&cw.h);
  int rc = 1, fatal = 0;
  if (tmp) snprintf(tmp, tl, "%s.tmp", path);
  if (!tmp || !(cw.f = fopen(tmp, "wb"))) {
    fprintf(stderr, "retro chunks: %s: %s\n", tmp ? tmp : path, strerror(errno));
    goto leave;
  }
  proto_buf head;
  proto_buf_init(&head);
  char zeros[65]; /* a placeholder digest of the final width */
  memset(zeros, '0', 64);
  zeros[64] = 0;
  chunks_header(e, 0, zeros, &head);
  int hw = !head.failed && fwrite(head.data, 1, head.len, cw.f) == head.len;
  proto_buf_free(&head);
  size_t bad = hw ? corpus_each(c, "chunks", write_doc, &cw, &fatal, stop) : 0;
  if (!hw || fatal || (stop && *stop) || finish_chunks(&cw) != 0) {
    if (!hw || (!fatal && !(stop && *stop)))
      fprintf(stderr, "retro chunks: writing %s: %s\n", tmp, strerror(errno));
    if (cw.f) fclose(cw.f);
    remove(tmp);
    goto leave;
  }
  if (rename(tmp, path) != 0) {
    fprintf(stderr, "retro chunks: %s: %s\n", path, strerror(errno));
    remove(tmp);
    goto leave;
  }
  if (!quiet)
    fprintf(stderr, "retro chunks: %llu chunks in %s\n", (unsigned long long)cw.count, path);
  if (bad) fprintf(stderr, "retro chunks: %zu document(s) failed (left out)\n", bad);
  rc = bad ? 1 : 0;
leave:
  proto_buf_free(&cw.line);
  free(tmp);
  return rc;
}

/* Vectors file ------------------------------------------------------------------- */

struct bulk_vectors {
  FILE *f;
  char *path;
  uint32_t dim;
  uint64_t count, taken;
};

typedef struct vec_header {
  uint32_t dim;
  uint64_t count;
  unsigned char digest[32];
  char fp[VEC_MAX_FP + 1];
  uint64_t data_off;
} vec_header;

/* Reads and checks the header; 0, or 1 after printing why. */
static int read_header(FILE *f, const char *path, vec_header *h) {
  unsigned char b[VEC_FIXED];
  if (fread(b, 1, VEC_FIXED, f) != VEC_FIXED || memcmp(b, VEC_MAGIC, 8) != 0) {
    fprintf(stderr, "retro index: %s: not a vectors file (no %s header)\n", path, VEC_MAGIC);
    return 1;
  }
  if (get_u32(b + 8) != VEC_VERSION) {
    fprintf(stderr, "retro index: %s: vectors file version %u, this retro reads %d\n", path,
            (unsigned)get_u32(b + 8), VEC_VERSION);
    return 1;
  }
  h->dim = get_u32(b + 12);
  h->count = get_u64(b + 16);
  memcpy(h->digest, b + 24, 32);
  uint32_t fl = get_u32(b + 56);
  if (fl == 0 || fl > VEC_MAX_FP || fread(h->fp, 1, fl, f) != fl) {
    fprintf(stderr, "retro index: %s: bad encoder fingerprint in the header\n", path);
    return 1;
  }
  h->fp[fl] = 0;
  h->data_off = VEC_FIXED + (uint64_t)fl;
  return 0;
}

/* The header against the engine and the file's size; 0, or 1 after
 * printing why. */
static int check_header(srv_engine *e, FILE *f, const char *path, const vec_header *h) {
  const char *fp = bert_fingerprint(srv_engine_encoder(e));
  if (strcmp(h->fp, fp) != 0) {
    fprintf(stderr,
            "retro index: %s: encoder mismatch: the vectors were made with encoder %s, this "
            "database's encoder is %s (embed the chunks of `retro chunks` with the same "
            "encoder)\n",
            path, h->fp, fp);
    return 1;
  }
  if (h->dim != srv_engine_dim(e)) {
    fprintf(stderr, "retro index: %s: %u-d vectors, the encoder makes %u-d\n", path,
            (unsigned)h->dim, (unsigned)srv_engine_dim(e));
    return 1;
  }
  struct stat sb;
  int big = h->dim && h->count > (UINT64_MAX - h->data_off) / 4 / h->dim;
  uint64_t want = big ? 0 : h->data_off + h->count * h->dim * 4;
  if (fstat(fileno(f), &sb) != 0 || big || (uint64_t)sb.st_size != want) {
    fprintf(stderr,
            "retro index: %s: %llu bytes, its header says %llu x %u floats (%llu bytes): "
            "truncated or damaged\n",
            path, (unsigned long long)sb.st_size, (unsigned long long)h->count, (unsigned)h->dim,
            (unsigned long long)want);
    return 1;
  }
  return 0;
}

/* The corpus's chunks against the header's count and digest; 0, or 1 after
 * printing why. */
static int check_corpus(srv_engine *e, const corpus *c, const char *path, const vec_header *h) {
  chunk_writer cc = {.e = e, .quiet = 1}; /* no file: counts and digests */
  int fatal = 0;
  proto_sha256_init(&cc.h);
  corpus_each(c, NULL, write_doc, &cc, &fatal, NULL); /* failures: again when indexing */
  if (fatal) {
    fprintf(stderr, "retro index: reading the corpus: %s\n", srv_last_error());
    return 1;
  }
  if (cc.count != h->count) {
    fprintf(stderr,
            "retro index: %s holds %llu vectors, the corpus has %llu chunks (run `retro chunks` "
            "on the same corpus and embed its output)\n",
            path, (unsigned long long)h->count, (unsigned long long)cc.count);
    return 1;
  }
  unsigned char d[32];
  proto_sha256_final(&cc.h, d);
  if (memcmp(d, h->digest, 32) != 0) {
    char a[65], b[65];
    hex32(h->digest, a);
    hex32(d, b);
    fprintf(stderr,
            "retro index: %s: its chunks (digest %s) are not this corpus's (digest %s): the "
            "corpus or the chunk tokenizer changed since `retro chunks`\n",
            path, a, b);
    return 1;
  }
  return 0;
}

int bulk_vectors_open(srv_engine *e, const corpus *c, const char *path, bulk_vectors **out) {
  *out = NULL;
  vec_header h;
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "retro index: %s: %s\n", path, strerror(errno));
    return 1;
  }
  if (read_header(f, path, &h) || check_header(e, f, path, &h) || check_corpus(e, c, path, &h)) {
    fclose(f);
    return 1;
  }
  bulk_vectors *bv = calloc(1, sizeof *bv);
  if (!bv || !(bv->path = strdup(path))) {
    free(bv);
    fclose(f);
    fprintf(stderr, "retro index: out of memory\n");
    return 1;
  }
  bv->f = f;
  bv->dim = h.dim;
  bv->count = h.count;
  *out = bv;
  return 0;
}

/* Little-endian float32 to this machine's float, in place. */
static void from_le(float *v, size_t n) {
  const uint32_t one = 1;
  if (*(const unsigned char *)&one == 1) return;
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    u = get_u32((const unsigned char *)&u);
    memcpy(&v[i], &u, 4);
  }
}

/* L2-normalises v (dim floats) as the server's encoder does its own;
 * -1 when a value is not finite or v is zero. */
static int normalise(float *v, uint32_t dim) {
  double s = 0;
  for (uint32_t i = 0; i < dim; i++) {
    if (!isfinite(v[i])) return -1;
    s += (double)v[i] * v[i];
  }
  if (!(s > 0)) return -1;
  float inv = (float)(1.0 / sqrt(s));
  for (uint32_t i = 0; i < dim; i++) v[i] *= inv;
  return 0;
}

proto_status bulk_take_vectors(void *ctx, uint32_t n, float *out) {
  bulk_vectors *bv = ctx;
  if (n == 0) return PROTO_OK;
  if (bv->taken + n > bv->count)
    return proto_fail(PROTO_EIO, "%s: more chunks than vectors (the corpus changed?)", bv->path);
  size_t m = (size_t)n * bv->dim;
  if (fread(out, sizeof *out, m, bv->f) != m)
    return proto_fail(PROTO_EIO, "%s: reading vectors: %s", bv->path,
                      ferror(bv->f) ? strerror(errno) : "unexpected end of file");
  from_le(out, m);
  uint64_t first = bv->taken;
  bv->taken += n;
  for (uint32_t i = 0; i < n; i++)
    if (normalise(out + (size_t)i * bv->dim, bv->dim) != 0)
      return proto_fail(PROTO_ERANGE, "%s: vector %llu (chunk %u) is zero or not finite", bv->path,
                        (unsigned long long)(first + i), (unsigned)i);
  return PROTO_OK;
}

int bulk_vectors_close(bulk_vectors *bv, int complete) {
  if (!bv) return 0;
  int rc = 0;
  if (complete && bv->taken != bv->count) {
    fprintf(stderr,
            "retro index: %s: %llu of %llu vectors used (the corpus changed while indexing?)\n",
            bv->path, (unsigned long long)bv->taken, (unsigned long long)bv->count);
    rc = 1;
  }
  fclose(bv->f);
  free(bv->path);
  free(bv);
  return rc;
}
