/* views.h - the JSON form of the engine's objects, one writer for every
 * surface: the HTTP API (server/http_api.c) and the CLI (server/cli.c) print
 * the same objects with the same field names (e.g. "continuation", never
 * "next_text"; an index's "vectors", never "ntotal"). */
#ifndef RETRO_VIEWS_H
#define RETRO_VIEWS_H

#include "api.h"
#include "srv.h"

/* GET /v1/info, `retro info`. encoder_name / decoder_name: the names the
 * server serves the models under (NULL: derived from the fingerprint and the
 * decoder's folder). */
void view_info(proto_jw *w, const srv_info *in, const char *encoder_name, const char *decoder_name,
               int read_only);

/* One hit of a search (hybrid: with its dense and lexical scores and ranks). */
void view_hit(proto_jw *w, const srv_hit *x, srv_search_mode mode, int with_text);

/* The members of one query's answer: "results": [hits], or, grouped by
 * document, "groups": [{doc_id, doc_num, score, hits}]. */
void view_hits(proto_jw *w, const srv_hits *h, srv_search_mode mode, int grouped, int with_text);

/* GET /v1/documents/{id}, `retro get`: a document and its chunk ids (and
 * text when with_text). */
void view_document(proto_jw *w, const srv_document *d, int with_text);
/* A document in a page of GET /v1/documents: its chunks as first_chunk and
 * n_chunks, and with_text its n_tokens and text. */
void view_document_listed(proto_jw *w, const srv_document *d, int with_text);

/* One neighbour a chunk was given, in a completion's "retro" or a scored
 * prompt's chunks. */
void view_neighbour(proto_jw *w, uint64_t chunk_id, const char *doc_id, uint64_t doc_num,
                    float score, const char *text, size_t text_len, const char *cont,
                    size_t cont_len);

/* One generated chunk's retrieval in a completion's "retro": its number,
 * whether it lies in the prompt, and the neighbours it was given. */
void view_gen_chunk(proto_jw *w, const srv_gen_chunk *c);

/* A document's metadata object as stored ({} when it has none). */
void view_meta(proto_jw *w, const char *meta);

/* The last component of a model folder (a trailing slash ignored). */
const char *view_model_basename(const char *path);

#endif
