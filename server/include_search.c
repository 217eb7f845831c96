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

#include "best_k.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One document's span being scored as the scan hands over its vectors. */
typedef struct span_scan {
  uint64_t last; /* the span's last chunk id */
  uint32_t dim;
  const float *queries;
  size_t nq, k;
  srv__pass_fn pass;
  void *pass_ctx;
  float *scores; /* nq x k, each query's best in descending order */
  int64_t *ids;
  size_t *kept; /* nq: how many of each query's k are filled */
} span_scan;

/* A batch of the scan: the span's chunks that pass, scored against every
 * query (pass may read the store: the scan allows reads from its thread). */
static proto_status score_batch(void *ctx, const uint64_t *ids, const float *vecs, size_t n) {
  span_scan *c = ctx;
  size_t i = 0;
  for (; i < n && ids[i] <= c->last; i++) {
    if (!c->pass(c->pass_ctx, (int64_t)ids[i])) continue;
    const float *v = vecs + i * c->dim;
    for (size_t q = 0; q < c->nq; q++) {
      const float *x = c->queries + q * c->dim;
      float dot = 0;
      for (uint32_t j = 0; j < c->dim; j++) dot += x[j] * v[j];
      best_k_offer(c->scores + q * c->k, c->ids + q * c->k, &c->kept[q], c->k, dot,
                   (int64_t)ids[i]);
    }
  }
  return i < n ? PROTO_ECANCELLED : PROTO_OK; /* past the span: stop the scan */
}

proto_status srv__include_search(store *st, uint32_t dim, const srv__span *spans, size_t n_spans,
                                 const float *queries, size_t nq, size_t k, srv__pass_fn pass,
                                 void *pass_ctx, float *scores, int64_t *ids) {
  for (size_t i = 0; i < nq * k; i++) {
    scores[i] = NAN;
    ids[i] = -1;
  }
  span_scan c = {.dim = dim,
                 .queries = queries,
                 .nq = nq,
                 .k = k,
                 .pass = pass,
                 .pass_ctx = pass_ctx,
                 .scores = scores,
                 .ids = ids,
                 .kept = calloc(nq ? nq : 1, sizeof *c.kept)};
  proto_status s = c.kept ? PROTO_OK : srv__fail(PROTO_ENOMEM, "out of memory");
  for (size_t d = 0; d < n_spans && s == PROTO_OK; d++) {
    if (!spans[d].n_chunks) continue;
    c.last = spans[d].first + spans[d].n_chunks - 1;
    s = store_vectors_scan(st, spans[d].first - 1, 256, score_batch, &c);
    if (s == PROTO_ECANCELLED) s = PROTO_OK;
    else if (s != PROTO_OK)
      s = srv__fail(s, "reading the named documents' vectors: %s", store_last_error());
  }
  free(c.kept);
  return s;
}
