/* include_search.c - the dense list of a search restricted to named
 * documents (include_docs), scored from the chunks' stored vectors.
 *
 * Why: through the index, such a search is a filtered one, which fetches
 * more and more candidates until k pass: up to a pass over the whole index
 * when the documents are a small part of it, and an approximate index (IVF,
 * HNSW) only finds those of them its probes reach. The named documents' own
 * chunks are few and contiguous in the store (a document's chunk ids are
 * first_chunk .. first_chunk + n_chunks - 1), so reading their vectors and
 * taking the inner products is exact whatever the index, and costs what
 * they hold, not what the database holds.
 */
#include "engine_priv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One document's span of chunk ids, with their vectors as the scan gives
 * them (ids ascending, live ones only). */
typedef struct span_read {
  uint64_t last; /* the span's last chunk id */
  uint32_t dim;
  size_t n;
  uint64_t *ids;
  float *vecs;
} span_read;

static proto_status take_span(void *ctx, const uint64_t *ids, const float *vecs, size_t n) {
  span_read *r = ctx;
  size_t i = 0;
  for (; i < n && ids[i] <= r->last; i++) {
    r->ids[r->n] = ids[i];
    memcpy(r->vecs + r->n * r->dim, vecs + i * r->dim, r->dim * sizeof *vecs);
    r->n++;
  }
  return i < n ? PROTO_ECANCELLED : PROTO_OK; /* past the span: stop the scan */
}

/* Puts (score, id) into a query's best k, kept in descending order. */
static void keep_best(float *scores, int64_t *ids, size_t k, float s, int64_t id) {
  if (!(s > scores[k - 1]) && ids[k - 1] >= 0) return;
  size_t j = k - 1;
  while (j > 0 && (ids[j - 1] < 0 || s > scores[j - 1])) {
    scores[j] = scores[j - 1];
    ids[j] = ids[j - 1];
    j--;
  }
  scores[j] = s;
  ids[j] = id;
}

proto_status srv__include_search(store *st, uint32_t dim, const srv__span *spans, size_t n_spans,
                                 const float *queries, size_t nq, size_t k, srv__pass_fn pass,
                                 void *pass_ctx, float *scores, int64_t *ids) {
  for (size_t i = 0; i < nq * k; i++) {
    scores[i] = NAN;
    ids[i] = -1;
  }
  uint32_t most = 0;
  for (size_t d = 0; d < n_spans; d++)
    if (spans[d].n_chunks > most) most = spans[d].n_chunks;
  span_read r = {.dim = dim};
  r.ids = malloc((most ? most : 1) * sizeof *r.ids);
  r.vecs = malloc((most ? most : 1) * (size_t)dim * sizeof *r.vecs);
  proto_status s = r.ids && r.vecs ? PROTO_OK : srv__fail(PROTO_ENOMEM, "out of memory");
  for (size_t d = 0; d < n_spans && s == PROTO_OK; d++) {
    if (!spans[d].n_chunks) continue;
    r.n = 0;
    r.last = spans[d].first + spans[d].n_chunks - 1;
    s = store_vectors_scan(st, spans[d].first - 1, 256, take_span, &r);
    if (s == PROTO_ECANCELLED) s = PROTO_OK;
    if (s != PROTO_OK) {
      s = srv__fail(s, "reading the named documents' vectors: %s", store_last_error());
      break;
    }
    for (size_t i = 0; i < r.n; i++) {
      if (!pass(pass_ctx, (int64_t)r.ids[i])) continue;
      const float *v = r.vecs + i * dim;
      for (size_t q = 0; q < nq; q++) {
        const float *x = queries + q * dim;
        float dot = 0;
        for (uint32_t j = 0; j < dim; j++) dot += x[j] * v[j];
        keep_best(scores + q * k, ids + q * k, k, dot, (int64_t)r.ids[i]);
      }
    }
  }
  free(r.ids);
  free(r.vecs);
  return s;
}
