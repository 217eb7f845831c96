/* views.c - see views.h. */
#include "views.h"

#include <stdio.h>
#include <string.h>

void view_meta(proto_jw *w, const char *meta) {
  if (meta && *meta) proto_jw_raw(w, meta, strlen(meta));
  else proto_jw_raw(w, "{}", 2);
}

const char *view_model_basename(const char *path) {
  const char *p = path ? strrchr(path, '/') : NULL;
  if (p && p[1] == 0) { /* trailing slash: take the previous component */
    while (p > path && p[-1] != '/') p--;
    return p;
  }
  return p ? p + 1 : (path ? path : "");
}

static void decoder_view(proto_jw *w, const srv_info *in, const char *name) {
  const retro_config *c = &in->decoder;
  char own[128];
  if (!name) { /* the folder's name, without a trailing slash */
    snprintf(own, sizeof own, "%s", view_model_basename(in->decoder_path));
    size_t n = strlen(own);
    if (n && own[n - 1] == '/') own[n - 1] = 0;
    name = own;
  }
  proto_jw_obj(w);
  proto_jw_key(w, "name");
  proto_jw_cstr(w, name);
  proto_jw_key(w, "path");
  proto_jw_cstr(w, in->decoder_path);
  proto_jw_key(w, "loaded");
  proto_jw_bool(w, in->decoder_loaded);
  if (!in->decoder_loaded) { /* recorded in the database, not loaded (the CLI) */
    proto_jw_obj_end(w);
    return;
  }
  proto_jw_key(w, "vocab_size");
  proto_jw_int(w, c->vocab_size);
  proto_jw_key(w, "dim");
  proto_jw_int(w, c->dim);
  proto_jw_key(w, "n_layers");
  proto_jw_int(w, c->n_layers);
  proto_jw_key(w, "n_heads");
  proto_jw_int(w, c->n_heads);
  proto_jw_key(w, "max_seq");
  proto_jw_int(w, c->max_seq);
  proto_jw_key(w, "chunk_len");
  proto_jw_int(w, c->chunk_len);
  proto_jw_key(w, "n_neighbours");
  proto_jw_int(w, c->n_neighbours);
  proto_jw_key(w, "retro_layers");
  proto_jw_arr(w);
  for (int i = 0; i < c->n_retro_layers && i < 16; i++) proto_jw_int(w, c->retro_layers[i]);
  proto_jw_arr_end(w);
  proto_jw_obj_end(w);
}

void view_info(proto_jw *w, const srv_info *in, const char *encoder_name, const char *decoder_name,
               int read_only) {
  char enc[128];
  if (!encoder_name) { /* the fingerprint's name part, as the server serves it */
    snprintf(enc, sizeof enc, "%.*s", (int)strcspn(in->encoder, ":"), in->encoder);
    encoder_name = enc;
  }
  proto_jw_obj(w);
  proto_jw_key(w, "version");
  proto_jw_cstr(w, RETRO_VERSION);
  proto_jw_key(w, "encoder");
  proto_jw_obj(w);
  proto_jw_key(w, "name");
  proto_jw_cstr(w, encoder_name);
  proto_jw_key(w, "fingerprint");
  proto_jw_cstr(w, in->encoder);
  proto_jw_key(w, "path");
  proto_jw_cstr(w, in->encoder_path);
  proto_jw_key(w, "dim");
  proto_jw_uint(w, in->dim);
  proto_jw_obj_end(w);
  proto_jw_key(w, "decoder");
  if (in->decoder_loaded || in->decoder_path[0]) decoder_view(w, in, decoder_name);
  else proto_jw_null(w);
  proto_jw_key(w, "reranker");
  if (in->reranker[0]) {
    proto_jw_obj(w);
    proto_jw_key(w, "name");
    proto_jw_str(w, in->reranker, strcspn(in->reranker, ":"));
    proto_jw_key(w, "path");
    proto_jw_cstr(w, in->reranker_path);
    proto_jw_obj_end(w);
  } else {
    proto_jw_null(w);
  }
  proto_jw_key(w, "chunk_tokenizer");
  proto_jw_cstr(w, in->chunk_tokenizer);
  proto_jw_key(w, "chunk_tokens");
  proto_jw_int(w, PROTO_CHUNK_TOKENS);
  proto_jw_key(w, "index");
  proto_jw_obj(w);
  proto_jw_key(w, "factory");
  proto_jw_cstr(w, in->index.factory);
  proto_jw_key(w, "metric");
  proto_jw_cstr(w, in->index.metric == IDX_METRIC_L2 ? "l2" : "ip");
  proto_jw_key(w, "vectors");
  proto_jw_uint(w, in->index.ntotal);
  proto_jw_key(w, "trained");
  proto_jw_bool(w, in->index.trained);
  proto_jw_key(w, "pending");
  proto_jw_uint(w, in->index.pending);
  proto_jw_key(w, "watermark");
  proto_jw_uint(w, in->index.watermark);
  proto_jw_obj_end(w);
  proto_jw_key(w, "lexical");
  if (in->has_lexical) {
    proto_jw_obj(w);
    proto_jw_key(w, "chunks");
    proto_jw_uint(w, in->lexical.chunks);
    proto_jw_key(w, "bytes");
    proto_jw_uint(w, in->lexical.bytes);
    proto_jw_key(w, "watermark");
    proto_jw_uint(w, in->lexical.watermark);
    proto_jw_key(w, "private_copy");
    proto_jw_bool(w, in->lexical_private);
    proto_jw_obj_end(w);
  } else {
    proto_jw_null(w);
  }
  proto_jw_key(w, "search_mode");
  proto_jw_cstr(w, srv_mode_name(in->search_mode));
  proto_jw_key(w, "retrieval_mode");
  proto_jw_cstr(w, srv_mode_name(in->retrieval_mode));
  proto_jw_key(w, "documents");
  proto_jw_uint(w, in->store.docs);
  proto_jw_key(w, "chunks");
  proto_jw_uint(w, in->store.chunks);
  proto_jw_key(w, "next_chunk_id");
  proto_jw_uint(w, in->store.next_chunk_id);
  proto_jw_key(w, "map_bytes");
  proto_jw_uint(w, in->store.map_bytes);
  proto_jw_key(w, "read_only");
  proto_jw_bool(w, read_only);
  proto_jw_obj_end(w);
}

/* A rank (1-based) and its score, or nulls when the hit is not in that list. */
static void write_rank(proto_jw *w, const char *score_key, const char *rank_key, int rank,
                       float score) {
  proto_jw_key(w, score_key);
  if (rank > 0) proto_jw_float(w, score);
  else proto_jw_null(w);
  proto_jw_key(w, rank_key);
  if (rank > 0) proto_jw_int(w, rank);
  else proto_jw_null(w);
}

void view_hit(proto_jw *w, const srv_hit *x, srv_search_mode mode, int with_text) {
  proto_jw_obj(w);
  proto_jw_key(w, "score");
  proto_jw_float(w, x->score);
  if (x->retrieval_rank > 0) { /* reranked: score is the reranker's relevance */
    proto_jw_key(w, "retrieval_score");
    proto_jw_float(w, x->retrieval_score);
    proto_jw_key(w, "retrieval_rank");
    proto_jw_int(w, x->retrieval_rank);
  }
  if (mode == SRV_MODE_HYBRID) {
    /* the dense score of every hybrid candidate is exact; its rank is in the
     * dense candidate list */
    proto_jw_key(w, "dense_score");
    proto_jw_float(w, x->dense_score);
    proto_jw_key(w, "dense_rank");
    if (x->dense_rank > 0) proto_jw_int(w, x->dense_rank);
    else proto_jw_null(w);
    write_rank(w, "lexical_score", "lexical_rank", x->lexical_rank, x->lexical_score);
    proto_jw_key(w, "exact_phrase");
    proto_jw_bool(w, x->exact_phrase);
  }
  proto_jw_key(w, "chunk_id");
  proto_jw_uint(w, x->chunk_id);
  proto_jw_key(w, "doc_id");
  proto_jw_cstr(w, x->doc_id);
  proto_jw_key(w, "doc_num");
  proto_jw_uint(w, x->doc_num);
  proto_jw_key(w, "ordinal");
  proto_jw_uint(w, x->ordinal);
  proto_jw_key(w, "metadata");
  view_meta(w, x->metadata_json);
  if (with_text) {
    proto_jw_key(w, "text");
    proto_jw_str(w, x->text, x->text_len);
    proto_jw_key(w, "continuation");
    proto_jw_str(w, x->next_text, x->next_text_len);
  }
  if (x->context) {
    proto_jw_key(w, "context");
    proto_jw_obj(w);
    proto_jw_key(w, "first_ordinal");
    proto_jw_uint(w, x->context_first);
    proto_jw_key(w, "last_ordinal");
    proto_jw_uint(w, x->context_last);
    proto_jw_key(w, "text");
    proto_jw_str(w, x->context, x->context_len);
    proto_jw_obj_end(w);
  }
  if (x->vector) {
    proto_jw_key(w, "vector");
    proto_jw_arr(w);
    for (uint32_t j = 0; j < x->n_vector; j++) proto_jw_float(w, x->vector[j]);
    proto_jw_arr_end(w);
  }
  proto_jw_obj_end(w);
}

void view_hits(proto_jw *w, const srv_hits *h, srv_search_mode mode, int grouped, int with_text) {
  if (grouped) {
    proto_jw_key(w, "groups");
    proto_jw_arr(w);
    for (size_t i = 0; i < h->n;) {
      const srv_hit *best = &h->hits[i];
      proto_jw_obj(w);
      proto_jw_key(w, "doc_id");
      proto_jw_cstr(w, best->doc_id);
      proto_jw_key(w, "doc_num");
      proto_jw_uint(w, best->doc_num);
      proto_jw_key(w, "score");
      proto_jw_float(w, best->score);
      proto_jw_key(w, "hits");
      proto_jw_arr(w);
      size_t g = best->group;
      for (; i < h->n && h->hits[i].group == g; i++) view_hit(w, &h->hits[i], mode, with_text);
      proto_jw_arr_end(w);
      proto_jw_obj_end(w);
    }
    proto_jw_arr_end(w);
    return;
  }
  proto_jw_key(w, "results");
  proto_jw_arr(w);
  for (size_t i = 0; i < h->n; i++) view_hit(w, &h->hits[i], mode, with_text);
  proto_jw_arr_end(w);
}

/* The members every view of a document starts with, its object opened. */
static void document_head(proto_jw *w, const srv_document *d) {
  proto_jw_obj(w);
  proto_jw_key(w, "id");
  proto_jw_cstr(w, d->id);
  proto_jw_key(w, "doc_num");
  proto_jw_uint(w, d->doc_num);
  proto_jw_key(w, "metadata");
  view_meta(w, d->metadata_json);
  proto_jw_key(w, "n_chunks");
  proto_jw_uint(w, d->n_chunks);
}

void view_document(proto_jw *w, const srv_document *d, int with_text) {
  document_head(w, d);
  proto_jw_key(w, "n_tokens");
  proto_jw_uint(w, d->n_tokens);
  proto_jw_key(w, "chunk_ids");
  proto_jw_arr(w);
  for (uint32_t i = 0; i < d->n_chunks; i++) proto_jw_uint(w, d->first_chunk + i);
  proto_jw_arr_end(w);
  if (with_text) {
    proto_jw_key(w, "text");
    proto_jw_str(w, d->text, d->text_len);
  }
  proto_jw_obj_end(w);
}

void view_document_listed(proto_jw *w, const srv_document *d, int with_text) {
  document_head(w, d);
  proto_jw_key(w, "first_chunk");
  proto_jw_uint(w, d->first_chunk);
  if (with_text) {
    proto_jw_key(w, "n_tokens");
    proto_jw_uint(w, d->n_tokens);
    proto_jw_key(w, "text");
    proto_jw_str(w, d->text, d->text_len);
  }
  proto_jw_obj_end(w);
}

void view_neighbour(proto_jw *w, uint64_t chunk_id, const char *doc_id, uint64_t doc_num,
                    float score, const char *text, size_t text_len, const char *cont,
                    size_t cont_len) {
  proto_jw_obj(w);
  proto_jw_key(w, "chunk_id");
  proto_jw_uint(w, chunk_id);
  proto_jw_key(w, "doc_id");
  proto_jw_cstr(w, doc_id);
  proto_jw_key(w, "doc_num");
  proto_jw_uint(w, doc_num);
  proto_jw_key(w, "score");
  proto_jw_float(w, score);
  proto_jw_key(w, "text");
  proto_jw_str(w, text, text_len);
  proto_jw_key(w, "continuation");
  proto_jw_str(w, cont, cont_len);
  proto_jw_obj_end(w);
}

void view_gen_chunk(proto_jw *w, const srv_gen_chunk *c) {
  proto_jw_obj(w);
  proto_jw_key(w, "chunk");
  proto_jw_int(w, c->chunk);
  proto_jw_key(w, "in_prompt");
  proto_jw_bool(w, c->in_prompt);
  proto_jw_key(w, "neighbors");
  proto_jw_arr(w);
  for (size_t i = 0; i < c->n; i++) {
    const srv_gen_neighbour *nb = &c->nb[i];
    view_neighbour(w, nb->chunk_id, nb->doc_id, nb->doc_num, nb->score, nb->text, nb->text_len,
                   nb->next_text, nb->next_text_len);
  }
  proto_jw_arr_end(w);
  proto_jw_obj_end(w);
}
