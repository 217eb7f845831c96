/* http_priv.h - internals shared by the HTTP files (http.c: the daemon;
 * http_api.c: the handlers). Not a public header. */
#ifndef RETRO_HTTP_PRIV_H
#define RETRO_HTTP_PRIV_H

#include "http.h"
#include "srv.h"

#include <pthread.h>
#include <stdatomic.h>

struct http_server {
  const http_config *cfg;
  _Atomic(srv_engine *) engine;    /* NULL (still loading, or tests): handlers
                                   validate input, then answer 503 */
  atomic_long work_queued;         /* jobs waiting for a worker */
  atomic_long work_busy;           /* jobs running */
  atomic_long gen_active;          /* generations queued or running */
  atomic_long inflight;            /* requests between first byte and completion */
  atomic_long rejected;            /* requests answered 429 by a full pool */
  atomic_int draining;             /* SIGTERM received */
  char model_name[128];            /* decoder name reported by /v1/completions */
  char encoder_name[128];          /* encoder name reported by /v1/embeddings */
  char reranker_name[128];         /* reranker name reported by /v1/rerank, "" when none */
  struct http_chat_template *chat; /* --chat-template, or the default */
};

/* Publishes the engine once it is open (the daemon listens while it loads). */
void http_server_attach(http_server *s, srv_engine *engine);

/* Fills resp with an error: status from st, JSON body, Retry-After for 429/503. */
void http_error(http_response *resp, proto_status st, const char *msg);

/* Runs a matched, authorised request whose whole body is in rq (all routes
 * but streamed NDJSON ingest and streamed completions). */
void http_execute(http_server *s, const http_match *m, const http_request *rq, http_response *resp);

/* 1 when the request body is NDJSON (Content-Type application/x-ndjson,
 * application/jsonl, application/json-seq...); 0 for JSON; -1 unsupported. */
int http_body_kind(http_route r, const char *content_type);
/* The 415 message naming the media types route r takes. */
const char *http_body_types(http_route r);
/* 1 when a request's Content-Encoding header means the body is as sent
 * ("identity", or empty); the server decodes no other coding. */
int http_identity_coding(const char *coding);

/* ---- ingest of one POST /v1/documents request ---------------------------- */

typedef struct http_ingest http_ingest;

/* ndjson: items are numbered by line ("line"), else by position ("index"). */
/* force: re-embed documents whose content hash is unchanged (?force=true). */
proto_status http_ingest_new(http_server *s, int ndjson, int force, http_ingest **out);
/* NDJSON: splits and parses data, queuing parsed documents in a pending
 * batch (no engine call). Returns 1 in *batch_full when the pending batch
 * should be submitted (http_ingest_submit) before more data is fed. */
proto_status http_ingest_feed(http_ingest *in, const char *data, size_t len, int *batch_full);
/* JSON object form: parses the whole body into the pending batch
 * (all-or-nothing validation; the error is the request's error). */
proto_status http_ingest_parse_all(http_ingest *in, const char *body, size_t len, char *err,
                                   size_t errlen);
/* Hands the pending batch to the engine (blocking: run on a worker). */
proto_status http_ingest_submit(http_ingest *in);
/* End of body: last line, submit, wait for the engine, write the response. */
void http_ingest_finish(http_ingest *in, http_response *resp);
/* Stops the ingest: drops the pending batch, ignores further data and
 * records st/msg as an error of the request (reported by finish). */
void http_ingest_abort(http_ingest *in, proto_status st, const char *msg);
void http_ingest_free(http_ingest *in);

/* ---- completions ---------------------------------------------------------- */

/* Where streamed output goes. write returns non-zero when the client is
 * gone (generation is then cancelled). */
typedef struct http_sink {
  int (*write)(void *ctx, const char *data, size_t len);
  void *ctx;
} http_sink;

/* Parses and checks a completion request (chat: a chat completion, its
 * messages rendered into the prompt); on failure fills resp (4xx). */
proto_status http_complete_prepare(http_server *s, const http_request *rq, int chat,
                                   proto_complete_req *req, http_response *resp);
/* Generates; when req->stream, writes SSE events to sink (ending
 * "data: [DONE]"), else fills resp. Blocking: run on a generation thread. */
void http_complete_run(http_server *s, const proto_complete_req *req, http_sink *sink,
                       http_response *resp);

/* echo: scores the prompt (and generates max_tokens after it); fills resp.
 * Blocking: run on a generation thread. (http_tokens.c) */
void http_score_run(http_server *s, const proto_complete_req *req, http_response *resp);
/* POST /tokenize (detok 0) and /detokenize (detok 1). (http_tokens.c) */
void http_tokenize(http_server *s, const http_request *rq, int detok, http_response *resp);
/* Helpers of http_api.c for the handlers in other files. */
/* The engine's generation request for a parsed completion (pointers into req). */
void http_gen_request(const proto_complete_req *req, srv_gen_request *rq);
void http_engine_error(http_response *resp, proto_status st, const char *what);
int http_no_engine(http_server *s, http_response *resp); /* 1: resp is a 503 */
void http_ok_json(http_response *resp);                  /* status 200, JSON */
int http_model_is(const char *want, const char *name);   /* NULL/"" or the name */

/* ---- chat template (http_chat.c) ------------------------------------------ */

typedef struct http_chat_template http_chat_template;
/* Reads a template file (format: http_chat.c, README "Chat template"); path
 * NULL gives the default. On failure err names the file, line and problem. */
proto_status http_chat_template_load(const char *path, http_chat_template **out, char *err,
                                     size_t errlen);
void http_chat_template_free(http_chat_template *t); /* accepts NULL */
/* Appends the prompt of n messages (each turn, then the generation prefix). */
proto_status http_chat_render(const http_chat_template *t, const proto_chat_msg *m, size_t n,
                              proto_buf *out);
/* Sets req->prompt from req->messages and adds the template's stops. */
proto_status http_chat_apply(const http_chat_template *t, proto_complete_req *req);

/* ---- the web playground (http_webui.c) ------------------------------------ */

/* 1 when an Accept-Encoding header value accepts gzip (gzip or *, not q=0). */
int http_accepts_gzip(const char *accept_encoding);
/* GET /: the page, gzip-compressed when the client accepts it; 404 with
 * --no-webui. */
void http_webui(http_server *s, const http_request *rq, http_response *resp);
/* The page's Content-Security-Policy (server/embed.py --csp): its own inline
 * script and style by SHA-256, requests to this origin, no framing. */
const char *http_webui_csp(void);

#endif
