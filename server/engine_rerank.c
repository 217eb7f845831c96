/* engine_rerank.c - the engine's reranker (srv_rerank): the cross-encoder's
 * scores for a query and passages, as relevances in (0, 1). A search that
 * asks to rerank reorders its candidates with it (engine.c). */
#include "engine_priv.h"

#include <math.h>

proto_status srv_rerank(srv_engine *e, const char *query, size_t query_len,
                        const char *const *passages, const size_t *lens, size_t n, float *out) {
  if (!e || !query || (n && (!passages || !out)))
    return srv__fail(PROTO_EINVAL, "srv_rerank: NULL argument");
  if (!e->rr)
    return srv__fail(PROTO_EUNAVAIL,
                     "this server has no reranker (start it with --reranker DIR; "
                     "model/train/rerank_train.py makes one)");
  proto_status s = rerank_score(e->rr, query, query_len, passages, lens, n, out);
  if (s != PROTO_OK) return srv__fail(s, "rerank: %s", rerank_last_error());
  for (size_t i = 0; i < n; i++) out[i] = (float)(1.0 / (1.0 + exp(-(double)out[i])));
  atomic_fetch_add(&e->n_rerank_pairs, n);
  return PROTO_OK;
}
