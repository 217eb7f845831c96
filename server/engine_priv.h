/* engine_priv.h - what the engine's own files (engine.c, ingest.c,
 * generate.c, engine_nb.c) share: the srv_engine struct, the error helper
 * and the chunk-embedding path used by both ingest and generation. Not for
 * the CLI or the HTTP daemon, which use srv.h only. */
#ifndef RETRO_ENGINE_PRIV_H
#define RETRO_ENGINE_PRIV_H

#include "api.h" /* proto_buf, the JSON writer, documents to ingest */
#include "lex.h"
#include "rerank.h"
#include "srv.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct srv_pipe srv_pipe; /* the ingest pipeline (ingest.c) */

typedef struct srv_embed_req srv_embed_req; /* engine_embed.c */

struct srv_engine {
  srv_engine_options opt; /* copies; strings below owned */
  char *data_dir;
  char *encoder_path;
  char *decoder_path; /* NULL when none */
  store *st;
  idx *ix;
  lex *lx;                 /* the lexical index; NULL when a read-only
                                  engine could not have one */
  char *lex_tmp;           /* a read-only engine's private lexical file
                                  (removed at close), else NULL */
  int lock_fd;             /* a writing engine's lock on DATA/lock, else -1 */
  pthread_mutex_t sync_mu; /* one lexical + FAISS sync or save at a time:
                                  the lexical index must have applied every
                                  tombstone a FAISS save clears */
  bert *enc;
  reranker *rr;        /* NULL when the engine has none */
  char *reranker_path; /* NULL when none */
  retro *dec;          /* NULL unless load_decoder and a decoder exists */
  tok *own_tok;        /* the decoder's tokenizer when its weights are not loaded */
  const tok *ctok;     /* chunk tokenizer: decoder's, else encoder's */
  uint32_t dim;
  int embed_by_ids;            /* encoder and chunk tokenizer are the same */
  unsigned char hash_salt[32]; /* what a document's content hash covers
                                  besides its text and metadata: the models
                                  and the chunking rule (see ingest.c) */
  int32_t pad_id, eos_id;      /* decoder's (config.json), -1 when unknown */
  srv_pipe *pipe;

  /* generation slots */
  pthread_mutex_t gen_mu;
  pthread_cond_t gen_cv;
  retro_state **states; /* gen_slots entries, created lazily */
  int *state_busy;
  int n_slots, busy, waiting, max_waiting, max_seq;
  int closing;

  /* query embedding, coalesced (engine_embed.c) */
  pthread_mutex_t q_mu;
  pthread_cond_t q_cv;
  srv_embed_req *q_head, *q_tail; /* waiting requests */
  int q_busy;                     /* an encoder call is running */

  /* counters */
  _Atomic uint64_t n_query_calls, n_query_texts; /* encoder calls for queries, texts in them */
  _Atomic uint64_t n_ingested_docs, n_ingested_chunks, n_ingest_errors, n_queue;
  _Atomic uint64_t n_unchanged, n_embedded_chunks;
  _Atomic uint64_t n_nospace; /* writes refused with PROTO_ENOSPACE */
  _Atomic uint64_t n_deleted, n_searches, n_generations, n_gen_tokens;
  _Atomic uint64_t n_rerank_pairs;  /* (query, passage) pairs the reranker scored */
  _Atomic uint64_t n_exact_phrases; /* hybrid hits put first by pin_phrase */
  _Atomic uint64_t lex_sync_ns;     /* wall time in lex_sync since open (srv_info) */
};

/* Sets this thread's srv_last_error() text and returns st: proto_fail, whose
 * text srv_last_error reads, under the engine's own name. */
#define srv__fail proto_fail

/* Embeds n query texts (lens NULL: NUL-terminated) into out (n x dim), as
 * bert_embed_texts does, in one encoder call shared with whatever other
 * callers are waiting (engine_embed.c); one_thread: alone in its call, it
 * runs on the calling thread, not the encoder's pool. Failures set
 * srv_last_error. */
proto_status srv__embed_queries(srv_engine *e, const char *const *texts, const size_t *lens,
                                size_t n, float *out, int one_thread);
/* The same for the texts of a search: each behind the encoder's query
 * prefix (bert_query_prefix) when it has one. */
proto_status srv__embed_search_texts(srv_engine *e, const char *const *texts, const size_t *lens,
                                     size_t n, float *out, int one_thread);
/* n texts as the encoder is to read them: with as_query behind its query
 * prefix when it has one (copies in mem, one allocation), else the caller's
 * own texts and lens (mem NULL; lens NULL: NUL-terminated). */
typedef struct srv_query_texts {
  const char *const *texts;
  const size_t *lens;
  void *mem;
} srv_query_texts;
proto_status srv__query_texts(srv_engine *e, const char *const *texts, const size_t *lens, size_t n,
                              int as_query, srv_query_texts *out);
void srv__query_texts_free(srv_query_texts *t); /* accepts zeroed */

/* Embeds n chunks of the chunk tokenizer (ids[i], lens[i] tokens; text[i],
 * text_lens[i] bytes) into out (n x dim): from the ids when the encoder
 * shares the tokenizer, else from the text. The one path used for stored
 * chunks and for generation queries, so both land in the same space. */
proto_status srv__embed_chunks(srv_engine *e, const int32_t *const *ids, const size_t *lens,
                               const char *const *text, const size_t *text_lens, size_t n,
                               float *out);

/* Brings the lexical and the FAISS index up to date with the store (in
 * that order, under sync_mu). Failures set srv_last_error. */
proto_status srv__sync_indexes(srv_engine *e);

/* The mode that neighbours of generation and eval are found by: the
 * request's, else the engine's retrieval_mode, else lexical (dense without
 * a lexical index). */
srv_search_mode srv__retrieval_mode(const srv_engine *e, srv_search_mode requested);
/* Hybrid fusion's weight of the dense list: asked when > 0, else by the
 * lexical scores (best first, nl of them; engine.c says how). */
float srv__hybrid_alpha(float asked, const float *lsc, size_t nl);

/* Sets e->hash_salt from the models (ingest.c); after the models are loaded. */
void srv__content_salt(srv_engine *e);
/* That salt from what makes it: the encoder's and the chunk tokenizer's
 * fingerprints (as the database's meta records them), the dimension, and
 * whether chunks are embedded by their token ids. */
void srv__salt_of(const char *encoder_fp, const char *chunk_tok_fp, uint32_t dim, int by_ids,
                  unsigned char out[32]);
/* The store_doc_test of deletes and updates by metadata: filter is a
 * proto_filter (engine.c). */
int srv__passes_filter(void *filter, const char *metadata_json);
/* The filter of a delete or update by metadata, loaded: one with no key,
 * which would match every document, is refused (engine.c). */
proto_status srv__where_filter(const char *filter_json, proto_filter **out);

/* include_search.c: a document's chunk ids, first .. first + n_chunks - 1. */
typedef struct srv__span {
  uint64_t first;
  uint32_t n_chunks;
} srv__span;
/* 1 when chunk_id may be a hit (a search's filter: live, not excluded...). */
typedef int (*srv__pass_fn)(void *ctx, int64_t chunk_id);
/* The k best chunks of the spans for each of nq queries by inner product
 * with their stored vectors (scores and ids nq x k, descending; -1 and NAN
 * where fewer pass), as idx_search answers: the dense list of a search with
 * include_docs. */
proto_status srv__include_search(store *st, uint32_t dim, const srv__span *spans, size_t n_spans,
                                 const float *queries, size_t nq, size_t k, srv__pass_fn pass,
                                 void *pass_ctx, float *scores, int64_t *ids);
/* A document's content hash (ingest.c), which upserts store with it: what
 * retro verify checks the stored text and metadata against. */
void srv__content_hash(const unsigned char salt[32], const char *text, size_t text_len,
                       const char *metadata_json, unsigned char out[STORE_HASH_BYTES]);

/* Ingest pipeline lifetime (ingest.c). */
proto_status srv__pipe_start(srv_engine *e);
void srv__pipe_stop(srv_engine *e); /* drains, joins; accepts e->pipe == NULL */

#endif
