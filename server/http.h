/* http.h - the HTTP daemon of `retro serve` (libmicrohttpd) and the pieces of
 * it that tests and the fuzz target drive directly: configuration (flags >
 * RETRO_* environment > config file > defaults), routing, auth, the
 * synchronous request dispatcher and the metrics registry. The engine
 * (server/srv.h) does all the work behind the routes; this module only
 * speaks HTTP and JSON (through api/).
 *
 * Threading: libmicrohttpd runs an internal thread pool (epoll). Fast
 * requests are answered on those threads; slow ones (embedding, ingest,
 * deletes, generation) are handed to bounded worker pools while the
 * connection is suspended, so a slow request never blocks the others. A
 * full pool answers 429 with Retry-After.
 */
#ifndef RETRO_HTTP_H
#define RETRO_HTTP_H

#include "api.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* `retro serve ARGS`: argv[0] is "serve". Returns the exit status: 0 after a
 * clean shutdown (SIGTERM/SIGINT), 1 when it cannot start, 2 on bad usage. */
int srv_http_main(int argc, char **argv);

/* ---- configuration ------------------------------------------------------- */

typedef struct http_config {
  char *data;                /* --data DIR (required) */
  char *encoder;             /* --encoder DIR (NULL = engine default) */
  char *decoder;             /* --decoder DIR ("none" = no generation) */
  char *reranker;            /* --reranker DIR ("none" = no reranking) */
  char *index_factory;       /* --index FACTORY */
  char *host;                /* --host, default 127.0.0.1 */
  long port;                 /* --port, default 8080; 0 = any free port */
  char *api_key;             /* --api-key: read-write key (NULL = none) */
  char *read_key;            /* --read-key: read-only key (NULL = none) */
  long http_threads;         /* --http-threads: MHD pool, default 2 */
  long workers;              /* --workers: slow-request threads, 0 = 4 per CPU */
  long queue;                /* --queue: slow requests that may wait, default 64 */
  long gen_slots;            /* --gen-slots: concurrent generations, default 1 */
  long gen_queue;            /* --gen-queue: generations that may wait, default 4 */
  long threads;              /* --threads: model threads, 0 = CPUs */
  long max_body;             /* --max-body: bytes of a JSON body / NDJSON line */
  long max_connections;      /* --max-connections */
  long max_per_ip;           /* --max-per-ip (0 = unlimited) */
  long idle_timeout;         /* --idle-timeout seconds */
  long header_limit;         /* --header-limit: bytes of request line + headers */
  long drain_timeout;        /* --drain-timeout: seconds to finish in-flight work */
  long read_only;            /* --read-only: refuse writes (engine read-only) */
  long inline_search_floats; /* --inline-search-floats: searches by vector on an
                                index up to this size (vectors x dim) run on
                                the MHD threads, larger ones on the workers */
  long max_map_mb;           /* --max-map-mb: LMDB map limit in MiB (0 = none) */
  char *backup_dir;          /* --backup-dir: where POST /v1/admin/backup writes (NULL = off) */
  char *log;                 /* --log FILE (NULL = stderr) */
  long log_flush_ms;         /* --log-flush-ms: request lines wait at most this (0 = none) */
  char *config;              /* --config FILE */
  char *search_mode;         /* --search-mode: default of POST /v1/search by text */
  char *retrieval_mode;      /* --retrieval-mode: default of completions' neighbours */
  long strict_models;        /* --strict-models: an unknown "model" is a 404 (default:
                            served by the loaded encoder/decoder) */
  char *chat_template;       /* --chat-template FILE: how chat messages become a prompt */
  long no_webui;             /* --no-webui: no page at / (404) */
  char *cors_origins;        /* --cors-origins: origins whose pages may call the API from a
                                browser, comma-separated, or "*" (NULL = none) */
  char *tls_cert;            /* --tls-cert FILE: HTTPS with this PEM chain (NULL = HTTP) */
  char *tls_key;             /* --tls-key FILE: its PEM private key */
} http_config;

/* Fills defaults, then the config file (--config or RETRO_CONFIG), then the
 * environment, then argv (argv[0] is skipped). On failure writes a message
 * to err and returns PROTO_EINVAL; *help set when --help was given. The
 * caller frees with http_config_free. env may be NULL (use the process's). */
proto_status http_config_load(http_config *cfg, int argc, char **argv, char *const *env, int *help,
                              char *err, size_t errlen);
void http_config_free(http_config *cfg);
/* The --help text (flags, environment variables, config keys, precedence). */
const char *http_config_usage(void);
/* 1 when host names a loopback address (127.0.0.0/8, ::1, localhost). */
int http_host_is_loopback(const char *host);
/* Reads the next line of a text file of settings (the --config file, a
 * --chat-template file) into buf, '\n' included: 1, or 0 at the end, or -1
 * with why set when the line holds a NUL byte or does not fit in buf (it
 * was cut in two, or ended at the NUL, without a word before). */
int http_settings_line(FILE *f, char *buf, size_t size, char *why, size_t whylen);

/* ---- routing, auth ------------------------------------------------------- */

/* One per row of http_routes.def, in its order; HTTP_R_OTHER is a request
 * that matched no route (metrics and logs). */
typedef enum http_route {
#define ROUTE(name, ...) HTTP_R_##name,
#include "http_routes.def"
#undef ROUTE
  HTTP_R_OTHER,
  HTTP_R_COUNT
} http_route;

typedef enum http_access { HTTP_OPEN = 0, HTTP_READ = 1, HTTP_WRITE = 2 } http_access;
typedef enum http_kind { HTTP_INLINE = 0, HTTP_WORKER = 1, HTTP_GEN = 2 } http_kind;

/* A route's row of http_routes.def. */
typedef struct http_route_info {
  const char *method; /* "GET" (HEAD too), "POST", "PATCH" or "DELETE" */
  const char *path;   /* as in openapi.json: "/v1/documents/{id}" */
  http_access access;
  http_kind kind;
  const char *operation_id; /* its operationId in openapi.json */
} http_route_info;

/* The row of route r; NULL for HTTP_R_OTHER. */
const http_route_info *http_route_about(http_route r);

typedef struct http_match {
  http_route route;
  proto_status st;   /* PROTO_OK, PROTO_ENOTFOUND, PROTO_EMETHOD, PROTO_EINVAL (bad id) */
  const char *allow; /* for 405: the Allow header (static) */
  http_access access;
  http_kind kind;
  int has_body;                    /* POST and PATCH routes */
  char id[PROTO_MAX_ID_BYTES + 1]; /* decoded {id} of document and model routes */
  uint64_t num;                    /* {id} of /v1/chunks/{id} */
  char msg[128];
} http_match;

/* Matches method + raw (still percent-encoded) path. */
void http_route_match(const char *method, const char *path, http_match *m);
/* Label of a route for metrics and logs: its path ("/v1/documents/{id}"). */
const char *http_route_label(http_route r);
/* The method a route answers ("GET", "POST", "PATCH", "DELETE"; GET routes
 * also HEAD). */
const char *http_route_method(http_route r);
/* ?wait= of POST /v1/documents: 1 for true, 1, yes or no value; 0 for
 * false, 0, no or absent (v NULL); -1 for anything else (case-insensitive).
 * Kept for clients that send it: every answer of POST /v1/documents already
 * comes after the documents are durable and in the index, so only its
 * spelling is checked. */
int http_wait_value(const char *v);
/* Checks one query parameter (raw key, value NULL when it has none) of a
 * route: PROTO_OK, or PROTO_EUNKNOWN_FIELD / PROTO_EINVAL with msg naming it.
 * POST /v1/documents takes wait and force (true or false), GET /v1/documents
 * limit and after (both checked here, see http_list_args); an unknown parameter is refused
 * like an unknown body field, so a typo (?wiat=true) is not ignored. */
proto_status http_query_check(http_route r, const char *key, const char *value, char *msg,
                              size_t n);
/* ?limit= (1..HTTP_LIST_MAX, default HTTP_LIST_DEFAULT) and ?after= (a
 * doc_num, default 0) of GET /v1/documents, either NULL when absent:
 * PROTO_OK or PROTO_EINVAL with msg naming the parameter. */
#define HTTP_LIST_DEFAULT 50
#define HTTP_LIST_MAX 1000
proto_status http_list_args(const char *limit, const char *after, size_t *max, uint64_t *after_num,
                            char *msg, size_t n);
/* Up to n - 1 bytes of s with spaces, quotes, backslashes and bytes outside
 * printable ASCII as %XX: raw request text made safe for log lines and error
 * messages (which must stay valid UTF-8). */
void http_printable(const char *s, char *out, size_t n);
/* 1 when a client's X-Request-Id can be echoed and logged as it is: 1 to
 * HTTP_REQUEST_ID_MAX characters from [A-Za-z0-9._:-]. */
#define HTTP_REQUEST_ID_MAX 64
int http_request_id_ok(const char *v);
/* Percent-decodes src (len bytes) into dst (cap bytes incl. NUL); rejects bad
 * escapes, NUL bytes, invalid UTF-8 and overflow: returns -1, else the length. */
long http_pct_decode(const char *src, size_t len, char *dst, size_t cap);

/* Checks a request's credentials (either header may be NULL) against the
 * configured keys in constant time (per key). PROTO_OK, PROTO_EUNAUTH,
 * PROTO_EFORBIDDEN. With no keys configured every request passes. */
proto_status http_auth_check(const http_config *cfg, const char *authorization, const char *api_key,
                             http_access need);
/* Constant-time equality of two byte strings (time depends only on lens). */
int http_ct_equal(const char *a, size_t alen, const char *b, size_t blen);

/* ---- CORS (http_cors.c) ---------------------------------------------------- */

/* Checks a --cors-origins list: comma-separated origins (http or https,
 * host, optional port, nothing after), or "*" alone. PROTO_OK, or
 * PROTO_EINVAL with msg naming the item. */
proto_status http_cors_check(const char *list, char *msg, size_t n);
/* 1 when the (checked) list is "*". */
int http_cors_any(const char *list);
/* 1 when a request's Origin header is in the (checked) list; 0 for a NULL
 * list or origin. Origins compare byte for byte, as browsers send them. */
int http_cors_allows(const char *list, const char *origin);
/* 1 when method is one of an Allow header's ("GET, HEAD, POST"). */
int http_cors_method_listed(const char *allow, const char *method);
/* A preflight's Access-Control-Request-Headers: NULL when every name is one
 * a page may send (Authorization, api-key, Content-Type, X-Request-Id), else
 * the first other name, printable, in shown. */
const char *http_cors_headers_refused(const char *requested, char *shown, size_t n);
/* What every answer to an allowed origin exposes besides the safelisted
 * headers, and what a preflight allows. */
#define HTTP_CORS_EXPOSE "X-Request-Id, Retry-After, WWW-Authenticate, Allow"
#define HTTP_CORS_ALLOW_HEADERS "Authorization, api-key, Content-Type, X-Request-Id"
#define HTTP_CORS_MAX_AGE "600"

/* ---- NDJSON splitter ----------------------------------------------------- */

/* Splits a byte stream into lines without holding more than one line. */
typedef struct http_lines {
  proto_buf line;  /* the partial line so far */
  size_t max_line; /* longer lines are reported as too long */
  int overflow;    /* the current line exceeded max_line (being skipped) */
  uint64_t lineno; /* 1-based number of the line being read */
} http_lines;

/* Calls fn(ctx, line, len, lineno, too_long) for every complete line in
 * data (a trailing '\r' is stripped; blank lines are skipped). Returns the
 * first non-OK status fn returns (the rest of data is then not consumed:
 * *used says how much was). */
typedef proto_status (*http_line_fn)(void *ctx, const char *line, size_t len, uint64_t lineno,
                                     int too_long);
proto_status http_lines_feed(http_lines *ls, const char *data, size_t len, http_line_fn fn,
                             void *ctx, size_t *used);
/* At end of body: delivers the last line if it had no newline. */
proto_status http_lines_finish(http_lines *ls, http_line_fn fn, void *ctx);
void http_lines_free(http_lines *ls);

/* ---- metrics --------------------------------------------------------------*/

/* Records one finished request (thread-safe). */
void http_metrics_observe(http_route r, int status, double seconds);
/* Appends the HTTP part of the Prometheus text (requests, histograms). */
void http_metrics_write(proto_buf *b);
void http_metrics_reset(void);
/* Appends the standard process_* metrics (CPU seconds, resident and virtual
 * memory, open and maximum file descriptors, start time), from /proc. */
void http_metrics_write_process(proto_buf *b);

/* ---- the dispatcher -------------------------------------------------------*/

typedef struct srv_engine srv_engine;
typedef struct http_server http_server;

/* Creates the request-handling state (no sockets, no threads): what the
 * daemon, the tests and the fuzz target share. engine may be NULL (routes
 * that need it answer 503 after validating their input). cfg is borrowed
 * and must outlive the server. */
proto_status http_server_new(const http_config *cfg, srv_engine *engine, http_server **out);
void http_server_free(http_server *s);

typedef struct http_request {
  const char *method;
  const char *path;        /* raw path, percent-encoded, no query */
  const char *query_wait;  /* value of ?wait=, or NULL */
  const char *query_limit; /* ?limit= and ?after= of GET /v1/documents, or NULL */
  const char *query_after;
  const char *query_filter;    /* ?filter= of GET /v1/documents, still percent-encoded */
  const char *accept_encoding; /* header, for the page at / (gzip) */
  const char *query_force;     /* value of ?force=, or NULL */
  const char *query_with_text; /* ?with_text= of GET /v1/documents, or NULL */
  const char *authorization;   /* headers, NULL when absent */
  const char *api_key;
  const char *content_type;
  const char *body;
  size_t body_len;
} http_request;

typedef struct http_response {
  int status;
  const char *content_type;     /* static string */
  const char *allow;            /* Allow header for 405, static */
  int retry_after;              /* seconds; 0 = no header */
  const char *content_encoding; /* static ("gzip") or NULL */
  proto_buf body;
} http_response;

/* Handles one complete request synchronously on the calling thread (slow
 * routes included; streamed completions are answered whole as SSE text).
 * Always fills *resp (free its body with proto_buf_free). */
void http_dispatch(http_server *s, const http_request *rq, http_response *resp);

/* The OpenAPI 3 document served at /openapi.json (static, NUL-terminated). */
const char *http_openapi_json(void);

#endif
