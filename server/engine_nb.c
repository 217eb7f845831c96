/* engine_nb.c - srv_neighbours_dump: for every live chunk, its k nearest
 * neighbour chunks (by default from other documents only, RETRO's rule),
 * written as NumPy .npy files for the trainer (format in srv.h).
 *
 * How: one scan of the stored vectors (ids ascending), one read of each
 * chunk (document, ordinal, tokens), then batched index searches fetching
 * k + 32 candidates that are filtered in memory; a query left short of k by
 * its own document's chunks is searched again alone with a filter.
 * What it does not: write anything into the database.
 */
#include "engine_priv.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct nb_data {
  uint64_t *ids; /* (n) chunk ids, ascending */
  float *vecs;   /* (n, dim) */
  size_t n, cap;
  uint32_t dim;
  int oom; /* collect ran out of memory (reported as such) */
} nb_data;

static proto_status collect(void *ctx, const uint64_t *ids, const float *vectors, size_t n) {
  nb_data *d = ctx;
  if (d->n + n > d->cap) {
    size_t nc = d->cap ? d->cap : 4096;
    while (nc < d->n + n) nc *= 2;
    uint64_t *ni = realloc(d->ids, nc * sizeof *ni);
    if (ni) d->ids = ni;
    float *nv = realloc(d->vecs, nc * d->dim * sizeof *nv);
    if (nv) d->vecs = nv;
    if (!ni || !nv) {
      d->oom = 1;
      return srv__fail(PROTO_ENOMEM, "out of memory");
    }
    d->cap = nc;
  }
  memcpy(d->ids + d->n, ids, n * sizeof *ids);
  memcpy(d->vecs + d->n * d->dim, vectors, n * d->dim * sizeof(float));
  d->n += n;
  return PROTO_OK;
}

/* Row of chunk id in the sorted ids, or -1. */
static ptrdiff_t find_row(const uint64_t *ids, size_t n, uint64_t id) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (ids[mid] == id) return (ptrdiff_t)mid;
    if (ids[mid] < id) lo = mid + 1;
    else hi = mid;
  }
  return -1;
}

/* Writes one .npy file: descr like "<i8", shape (rows) or (rows, cols). */
static proto_status write_npy(const char *dir, const char *name, const char *descr, size_t rows,
                              size_t cols, const void *data, size_t elem) {
  char path[4096], hdr[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int hl =
      cols ? snprintf(hdr, sizeof hdr,
                      "{'descr': '%s', 'fortran_order': False, 'shape': (%zu, %zu), }", descr, rows,
                      cols)
           : snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%zu,), }",
                      descr, rows);
  size_t total = 10 + (size_t)hl + 1;
  size_t pad = (64 - total % 64) % 64;
  memset(hdr + hl, ' ', pad);
  hdr[hl + (int)pad] = '\n';
  size_t hlen = (size_t)hl + pad + 1;
  FILE *f = fopen(path, "wb");
  if (!f) return srv__fail(PROTO_EIO, "cannot write %s: %s", path, strerror(errno));
  unsigned char pre[10] = {0x93,
                           'N',
                           'U',
                           'M',
                           'P',
                           'Y',
                           1,
                           0,
                           (unsigned char)(hlen & 0xff),
                           (unsigned char)(hlen >> 8)};
  size_t count = rows * (cols ? cols : 1);
  int bad = fwrite(pre, 1, 10, f) != 10 || fwrite(hdr, 1, hlen, f) != hlen ||
            (count && fwrite(data, elem, count, f) != count);
  if (fclose(f) != 0) bad = 1;
  if (bad) return srv__fail(PROTO_EIO, "writing %s failed", path);
  return PROTO_OK;
}

typedef struct nb_filter_ctx {
  const uint64_t *ids, *docs;
  size_t n;
  uint64_t doc;
} nb_filter_ctx;

static int other_doc(void *ctx, int64_t id) {
  nb_filter_ctx *c = ctx;
  ptrdiff_t r = id > 0 ? find_row(c->ids, c->n, (uint64_t)id) : -1;
  return r >= 0 && c->docs[r] != c->doc;
}

/* What srv_neighbours_dump gathers, per live chunk (n rows); released by
 * nb_dump_free. */
typedef struct nb_dump {
  nb_data d; /* ids and vectors */
  size_t n;
  int k;
  uint64_t *docs; /* (n) doc nums */
  uint32_t *ords; /* (n) ordinals */
  int32_t *toks;  /* (n, 64), -1 past a short chunk's end */
  int64_t *nbr;   /* (n, k) neighbour chunk ids, -1 when fewer */
  float *nsc;     /* (n, k) their scores, NaN when fewer */
} nb_dump;

static void nb_dump_free(nb_dump *x) {
  free(x->d.ids);
  free(x->d.vecs);
  free(x->docs);
  free(x->ords);
  free(x->toks);
  free(x->nbr);
  free(x->nsc);
}

/* Every stored vector, then each chunk's document, ordinal and tokens. */
static proto_status nb_read_chunks(srv_engine *e, nb_dump *x) {
  x->d.dim = e->dim;
  proto_status s = store_vectors_scan(e->st, 0, 1024, collect, &x->d);
  if (s != PROTO_OK) return x->d.oom ? s : srv__fail(s, "scanning vectors: %s", store_last_error());
  size_t n = x->n = x->d.n, rows = n ? n : 1;
  x->docs = malloc(rows * sizeof *x->docs);
  x->ords = malloc(rows * sizeof *x->ords);
  x->toks = malloc(rows * PROTO_CHUNK_TOKENS * sizeof *x->toks);
  x->nbr = malloc(rows * (size_t)x->k * sizeof *x->nbr);
  x->nsc = malloc(rows * (size_t)x->k * sizeof *x->nsc);
  if (!x->docs || !x->ords || !x->toks || !x->nbr || !x->nsc)
    return srv__fail(PROTO_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    store_chunk c = {0};
    s = store_chunk_get(e->st, x->d.ids[i], &c);
    if (s != PROTO_OK)
      return srv__fail(s, "reading chunk %llu: %s", (unsigned long long)x->d.ids[i],
                       store_last_error());
    x->docs[i] = c.doc_id;
    x->ords[i] = c.ordinal;
    for (int t = 0; t < PROTO_CHUNK_TOKENS; t++)
      x->toks[i * PROTO_CHUNK_TOKENS + (size_t)t] = (uint32_t)t < c.n_tokens ? c.tokens[t] : -1;
    store_chunk_free(&c);
  }
  return PROTO_OK;
}

/* Row row's neighbours from its kf candidates (cand, csc): the first k
 * live ones (of other documents unless include_same_doc); a row its own
 * document crowded out is searched again alone with a filter. */
static proto_status nb_fill_row(srv_engine *e, const srv_neighbours_options *o, nb_dump *x,
                                size_t row, const int64_t *cand, const float *csc, int kf,
                                const idx_search_params *sp) {
  size_t k = (size_t)x->k;
  int64_t *nbr = x->nbr + row * k;
  float *nsc = x->nsc + row * k;
  size_t got = 0;
  for (int j = 0; j < kf && got < k; j++) {
    int64_t id = cand[j];
    if (id <= 0) continue;
    ptrdiff_t r = find_row(x->d.ids, x->n, (uint64_t)id);
    if (r < 0) continue;
    if (!o->include_same_doc && x->docs[r] == x->docs[row]) continue;
    nbr[got] = id;
    nsc[got++] = csc[j];
  }
  if (got < k && !o->include_same_doc && (size_t)kf < x->n) {
    nb_filter_ctx fc = {.ids = x->d.ids, .docs = x->docs, .n = x->n, .doc = x->docs[row]};
    proto_status s =
        idx_search(e->ix, x->d.vecs + row * x->d.dim, 1, x->k, sp, other_doc, &fc, nsc, nbr);
    if (s != PROTO_OK) return srv__fail(s, "index search: %s", idx_last_error());
    got = k;
  }
  for (size_t j = got; j < k; j++) {
    nbr[j] = -1;
    nsc[j] = NAN;
  }
  return PROTO_OK;
}

/* Every row's neighbours: batched searches of k + 32 candidates filtered
 * in memory. */
static proto_status nb_search(srv_engine *e, const srv_neighbours_options *o, nb_dump *x) {
  const size_t B = 256;
  size_t n = x->n;
  int kf = o->include_same_doc ? x->k : x->k + 32;
  if ((size_t)kf > n && n > 0) kf = (int)n;
  if (kf > PROTO_MAX_K) kf = PROTO_MAX_K;
  int64_t *cand = malloc(B * (size_t)(kf > 0 ? kf : 1) * sizeof *cand);
  float *csc = malloc(B * (size_t)(kf > 0 ? kf : 1) * sizeof *csc);
  proto_status s = cand && csc ? PROTO_OK : srv__fail(PROTO_ENOMEM, "out of memory");
  idx_search_params sp = {.nprobe = o->nprobe, .ef_search = o->ef_search};
  double last = proto_now();
  for (size_t b0 = 0; b0 < n && s == PROTO_OK; b0 += B) {
    size_t nb = n - b0 < B ? n - b0 : B;
    s = idx_search(e->ix, x->d.vecs + b0 * x->d.dim, nb, kf, &sp, NULL, NULL, csc, cand);
    if (s != PROTO_OK) s = srv__fail(s, "index search: %s", idx_last_error());
    for (size_t q = 0; q < nb && s == PROTO_OK; q++)
      s = nb_fill_row(e, o, x, b0 + q, cand + q * (size_t)kf, csc + q * (size_t)kf, kf, &sp);
    if (s == PROTO_OK && o->on_progress && (proto_now() - last > 2.0 || b0 + nb == n)) {
      last = proto_now();
      o->on_progress(o->ctx, b0 + nb, n);
    }
  }
  free(cand);
  free(csc);
  return s;
}

/* The .npy files (format in srv.h). */
static proto_status nb_write_arrays(const char *dir, const nb_dump *x) {
  size_t n = x->n, k = (size_t)x->k;
  proto_status s;
  if ((s = write_npy(dir, "chunk_ids.npy", "<u8", n, 0, x->d.ids, 8)) != PROTO_OK ||
      (s = write_npy(dir, "doc_nums.npy", "<u8", n, 0, x->docs, 8)) != PROTO_OK ||
      (s = write_npy(dir, "ordinals.npy", "<u4", n, 0, x->ords, 4)) != PROTO_OK ||
      (s = write_npy(dir, "tokens.npy", "<i4", n, PROTO_CHUNK_TOKENS, x->toks, 4)) != PROTO_OK ||
      (s = write_npy(dir, "neighbours.npy", "<i8", n, k, x->nbr, 8)) != PROTO_OK ||
      (s = write_npy(dir, "scores.npy", "<f4", n, k, x->nsc, 4)) != PROTO_OK)
    return s;
  return PROTO_OK;
}

/* One line of docs.jsonl: document num's number, id and chunk count. */
static proto_status nb_write_doc(srv_engine *e, uint64_t num, FILE *f, const char *path) {
  store_doc sd = {0};
  proto_status s = store_doc_get_by_num(e->st, num, &sd);
  if (s != PROTO_OK)
    return srv__fail(s, "reading document %llu: %s", (unsigned long long)num, store_last_error());
  proto_buf b;
  proto_jw w;
  proto_buf_init(&b);
  proto_jw_init(&w, &b);
  proto_jw_obj(&w);
  proto_jw_key(&w, "doc_num");
  proto_jw_uint(&w, sd.doc_id);
  proto_jw_key(&w, "id");
  proto_jw_cstr(&w, sd.id);
  proto_jw_key(&w, "n_chunks");
  proto_jw_uint(&w, sd.n_chunks);
  proto_jw_obj_end(&w);
  int bad = b.failed || fwrite(b.data, 1, b.len, f) != b.len || fputc('\n', f) == EOF;
  proto_buf_free(&b);
  store_doc_free(&sd);
  return bad ? srv__fail(PROTO_EIO, "writing %s failed", path) : PROTO_OK;
}

/* docs.jsonl: one line per document the chunks come from. */
static proto_status nb_write_docs(srv_engine *e, const char *dir, const nb_dump *x) {
  char path[4096];
  snprintf(path, sizeof path, "%s/docs.jsonl", dir);
  FILE *f = fopen(path, "wb");
  if (!f) return srv__fail(PROTO_EIO, "cannot write %s: %s", path, strerror(errno));
  proto_status s = PROTO_OK;
  for (size_t i = 0; i < x->n && s == PROTO_OK; i++)
    if (i == 0 || x->docs[i] != x->docs[i - 1]) s = nb_write_doc(e, x->docs[i], f, path);
  if (fclose(f) != 0 && s == PROTO_OK) s = srv__fail(PROTO_EIO, "writing %s failed", path);
  return s;
}

proto_status srv_neighbours_dump(srv_engine *e, const srv_neighbours_options *o,
                                 uint64_t *n_chunks) {
  if (!e || !o || !o->out_dir) return srv__fail(PROTO_EINVAL, "srv_neighbours_dump: NULL argument");
  if (n_chunks) *n_chunks = 0;
  nb_dump x;
  memset(&x, 0, sizeof x);
  x.k = o->k > 0 ? o->k : 2;
  if (x.k > PROTO_MAX_K) return srv__fail(PROTO_ERANGE, "k: must be in [1, %d]", PROTO_MAX_K);
  if (mkdir(o->out_dir, 0777) != 0 && errno != EEXIST)
    return srv__fail(PROTO_EIO, "cannot create %s: %s", o->out_dir, strerror(errno));
  proto_status s = srv__sync_indexes(e);
  if (s == PROTO_OK) s = nb_read_chunks(e, &x);
  if (s == PROTO_OK) s = nb_search(e, o, &x);
  if (s == PROTO_OK) s = nb_write_arrays(o->out_dir, &x);
  if (s == PROTO_OK) s = nb_write_docs(e, o->out_dir, &x);
  if (s == PROTO_OK && n_chunks) *n_chunks = x.n;
  nb_dump_free(&x);
  return s;
}
