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
  uint64_t *ids;       /* (n) chunk ids, ascending */
  float *vecs;         /* (n, dim) */
  size_t n, cap;
  uint32_t dim;
  int oom;
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
    if (!ni || !nv) return srv__fail(PROTO_ENOMEM, "out of memory");
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
  int hl = cols ? snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%zu, %zu), }",
                           descr, rows, cols)
                : snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%zu,), }",
                           descr, rows);
  size_t total = 10 + (size_t)hl + 1;
  size_t pad = (64 - total % 64) % 64;
  memset(hdr + hl, ' ', pad);
  hdr[hl + (int)pad] = '\n';
  size_t hlen = (size_t)hl + pad + 1;
  FILE *f = fopen(path, "wb");
  if (!f) return srv__fail(PROTO_EIO, "cannot write %s: %s", path, strerror(errno));
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
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

proto_status srv_neighbours_dump(srv_engine *e, const srv_neighbours_options *o,
                                 uint64_t *n_chunks) {
  nb_data d = {0};
  uint64_t *docs = NULL;
  uint32_t *ords = NULL;
  int32_t *toks = NULL;
  int64_t *nbr = NULL, *cand = NULL;
  float *nsc = NULL, *csc = NULL;
  FILE *jf = NULL;
  proto_status s;
  if (!e || !o || !o->out_dir) return srv__fail(PROTO_EINVAL, "srv_neighbours_dump: NULL argument");
  if (n_chunks) *n_chunks = 0;
  int k = o->k > 0 ? o->k : 2;
  if (k > PROTO_MAX_K) return srv__fail(PROTO_ERANGE, "k: must be in [1, %d]", PROTO_MAX_K);
  if (mkdir(o->out_dir, 0777) != 0 && errno != EEXIST)
    return srv__fail(PROTO_EIO, "cannot create %s: %s", o->out_dir, strerror(errno));
  s = srv__sync_indexes(e);
  if (s != PROTO_OK) return s;

  d.dim = e->dim;
  s = store_vectors_scan(e->st, 0, 1024, collect, &d);
  if (s != PROTO_OK) {
    if (strcmp(srv_last_error(), "out of memory") != 0)
      s = srv__fail(s, "scanning vectors: %s", store_last_error());
    goto leave;
  }
  size_t n = d.n;
  docs = malloc((n ? n : 1) * sizeof *docs);
  ords = malloc((n ? n : 1) * sizeof *ords);
  toks = malloc((n ? n : 1) * PROTO_CHUNK_TOKENS * sizeof *toks);
  nbr = malloc((n ? n : 1) * (size_t)k * sizeof *nbr);
  nsc = malloc((n ? n : 1) * (size_t)k * sizeof *nsc);
  if (!docs || !ords || !toks || !nbr || !nsc) { s = srv__fail(PROTO_ENOMEM, "out of memory"); goto leave; }
  for (size_t i = 0; i < n; i++) {
    store_chunk c = {0};
    s = store_chunk_get(e->st, d.ids[i], &c);
    if (s != PROTO_OK) {
      s = srv__fail(s, "reading chunk %llu: %s", (unsigned long long)d.ids[i], store_last_error());
      goto leave;
    }
    docs[i] = c.doc_id;
    ords[i] = c.ordinal;
    for (int t = 0; t < PROTO_CHUNK_TOKENS; t++)
      toks[i * PROTO_CHUNK_TOKENS + (size_t)t] = (uint32_t)t < c.n_tokens ? c.tokens[t] : -1;
    store_chunk_free(&c);
  }

  /* batched searches with an in-memory filter */
  const size_t B = 256;
  int kf = o->include_same_doc ? k : k + 32;
  if ((size_t)kf > n && n > 0) kf = (int)n;
  if (kf > PROTO_MAX_K) kf = PROTO_MAX_K;
  cand = malloc(B * (size_t)(kf > 0 ? kf : 1) * sizeof *cand);
  csc = malloc(B * (size_t)(kf > 0 ? kf : 1) * sizeof *csc);
  if (!cand || !csc) { s = srv__fail(PROTO_ENOMEM, "out of memory"); goto leave; }
  idx_search_params sp = {.nprobe = o->nprobe, .ef_search = o->ef_search};
  double last = proto_now();
  for (size_t b0 = 0; b0 < n; b0 += B) {
    size_t nb = n - b0 < B ? n - b0 : B;
    s = idx_search(e->ix, d.vecs + b0 * d.dim, nb, kf, &sp, NULL, NULL, csc, cand);
    if (s != PROTO_OK) { s = srv__fail(s, "index search: %s", idx_last_error()); goto leave; }
    for (size_t q = 0; q < nb; q++) {
      size_t row = b0 + q;
      int got = 0;
      for (int j = 0; j < kf && got < k; j++) {
        int64_t id = cand[q * (size_t)kf + (size_t)j];
        if (id <= 0) continue;
        ptrdiff_t r = find_row(d.ids, n, (uint64_t)id);
        if (r < 0) continue;
        if (!o->include_same_doc && docs[r] == docs[row]) continue;
        nbr[row * (size_t)k + (size_t)got] = id;
        nsc[row * (size_t)k + (size_t)got] = csc[q * (size_t)kf + (size_t)j];
        got++;
      }
      if (got < k && !o->include_same_doc && (size_t)kf < n) {
        /* its own document filled the candidates: search this one alone */
        nb_filter_ctx fc = {.ids = d.ids, .docs = docs, .n = n, .doc = docs[row]};
        s = idx_search(e->ix, d.vecs + row * d.dim, 1, k, &sp, other_doc, &fc,
                       nsc + row * (size_t)k, nbr + row * (size_t)k);
        if (s != PROTO_OK) { s = srv__fail(s, "index search: %s", idx_last_error()); goto leave; }
        got = k;
      }
      for (int j = got; j < k; j++) {
        nbr[row * (size_t)k + (size_t)j] = -1;
        nsc[row * (size_t)k + (size_t)j] = NAN;
      }
    }
    if (o->on_progress && (proto_now() - last > 2.0 || b0 + nb == n)) {
      last = proto_now();
      o->on_progress(o->ctx, b0 + nb, n);
    }
  }

  if ((s = write_npy(o->out_dir, "chunk_ids.npy", "<u8", n, 0, d.ids, 8)) != PROTO_OK ||
      (s = write_npy(o->out_dir, "doc_nums.npy", "<u8", n, 0, docs, 8)) != PROTO_OK ||
      (s = write_npy(o->out_dir, "ordinals.npy", "<u4", n, 0, ords, 4)) != PROTO_OK ||
      (s = write_npy(o->out_dir, "tokens.npy", "<i4", n, PROTO_CHUNK_TOKENS, toks, 4)) != PROTO_OK ||
      (s = write_npy(o->out_dir, "neighbours.npy", "<i8", n, (size_t)k, nbr, 8)) != PROTO_OK ||
      (s = write_npy(o->out_dir, "scores.npy", "<f4", n, (size_t)k, nsc, 4)) != PROTO_OK)
    goto leave;

  char path[4096];
  snprintf(path, sizeof path, "%s/docs.jsonl", o->out_dir);
  jf = fopen(path, "wb");
  if (!jf) { s = srv__fail(PROTO_EIO, "cannot write %s: %s", path, strerror(errno)); goto leave; }
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && docs[i] == docs[i - 1]) continue;
    store_doc sd = {0};
    s = store_doc_get_by_num(e->st, docs[i], &sd);
    if (s != PROTO_OK) {
      s = srv__fail(s, "reading document %llu: %s", (unsigned long long)docs[i], store_last_error());
      goto leave;
    }
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
    int bad = b.failed || fwrite(b.data, 1, b.len, jf) != b.len || fputc('\n', jf) == EOF;
    proto_buf_free(&b);
    store_doc_free(&sd);
    if (bad) { s = srv__fail(PROTO_EIO, "writing %s failed", path); goto leave; }
  }
  if (fclose(jf) != 0) {
    jf = NULL;
    s = srv__fail(PROTO_EIO, "writing %s failed", path);
    goto leave;
  }
  jf = NULL;
  if (n_chunks) *n_chunks = n;
  s = PROTO_OK;
leave:
  if (jf) fclose(jf);
  free(d.ids);
  free(d.vecs);
  free(docs);
  free(ords);
  free(toks);
  free(nbr);
  free(nsc);
  free(cand);
  free(csc);
  return s;
}
