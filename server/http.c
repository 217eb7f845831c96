/* http.c - `retro serve`: the libmicrohttpd daemon. Owns the sockets, the
 * limits, the worker pools, suspend/resume of slow requests, streamed
 * bodies (NDJSON ingest) and streamed responses (SSE completions), signals
 * and shutdown. Routing, auth and the handlers live in http_route.c /
 * http_api.c; configuration in http_config.c; the log in http_log.c.
 *
 * Request life: the first access-handler call matches the route, checks the
 * API key, the Content-Type and Content-Length (answering 4xx at once).
 * Upload calls collect a JSON body up to max-body, or split an NDJSON body
 * into documents that go to the engine batch by batch on a worker while the
 * connection is suspended (so the body never sits whole in memory). The last
 * call runs fast routes inline and hands slow ones to a worker pool
 * (suspending the connection); the worker fills the response and resumes
 * it. Completions run on a generation pool; streamed ones answer at once
 * with a callback response fed by the generating thread.
 */
#include "http_log.h"
#include "http_priv.h"
#include "http_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- worker pools ---------------------------------------------------------- */

typedef void (*job_fn)(void *arg);
typedef struct job {
  job_fn fn;
  void *arg;
} job;

typedef struct pool {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job *q;
  size_t cap, head, len; /* ring of waiting jobs */
  size_t running;        /* jobs taken and not yet finishing (pool_job_finishing) */
  size_t waiting;        /* jobs allowed to wait beyond the free threads */
  int stop;
  pthread_t *threads;
  size_t n_threads;
  atomic_long *queued; /* gauge to update (server counters) */
  atomic_long *busy;
} pool;

/* The pool whose job this thread runs and has not yet finished, or NULL. */
static _Thread_local pool *tl_running;

/* Called by a job as it hands its result over (before resuming the
 * connection): its thread counts as free from here, so a client that sends
 * its next request the moment it reads this answer finds the thread free
 * even though it has not yet gone back to wait. No-op outside pool jobs and
 * on a second call. */
static void pool_job_finishing(void) {
  pool *p = tl_running;
  if (!p) return;
  tl_running = NULL;
  pthread_mutex_lock(&p->mu);
  p->running--;
  if (p->busy) atomic_fetch_sub(p->busy, 1);
  pthread_mutex_unlock(&p->mu);
}

static void *pool_main(void *arg) {
  pool *p = arg;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->len && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
    if (!p->len && p->stop) break;
    job j = p->q[p->head];
    p->head = (p->head + 1) % p->cap;
    p->len--;
    p->running++;
    if (p->queued) atomic_fetch_sub(p->queued, 1);
    if (p->busy) atomic_fetch_add(p->busy, 1);
    tl_running = p;
    pthread_mutex_unlock(&p->mu);
    j.fn(j.arg);
    pool_job_finishing(); /* jobs that did not say so themselves */
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* threads workers; up to `waiting` jobs may wait beyond the busy ones. */
static proto_status pool_start(pool *p, size_t threads, size_t waiting, atomic_long *queued,
                               atomic_long *busy) {
  memset(p, 0, sizeof *p);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  p->cap = threads + waiting;
  p->waiting = waiting;
  p->q = calloc(p->cap, sizeof *p->q);
  p->threads = calloc(threads, sizeof *p->threads);
  p->queued = queued;
  p->busy = busy;
  if (!p->q || !p->threads) { /* pool_stop frees nothing without q */
    free(p->q);
    free(p->threads);
    p->q = NULL;
    p->threads = NULL;
    return PROTO_ENOMEM;
  }
  for (size_t i = 0; i < threads; i++) {
    if (pthread_create(&p->threads[i], NULL, pool_main, p) != 0) return PROTO_EINTERNAL;
    p->n_threads++;
  }
  return PROTO_OK;
}

/* PROTO_EBUSY when `waiting` jobs already wait beyond the free threads. */
static proto_status pool_submit(pool *p, job_fn fn, void *arg) {
  pthread_mutex_lock(&p->mu);
  if (p->stop || p->len >= p->cap || p->len >= p->n_threads - p->running + p->waiting) {
    pthread_mutex_unlock(&p->mu);
    return PROTO_EBUSY;
  }
  p->q[(p->head + p->len) % p->cap] = (job){fn, arg};
  p->len++;
  if (p->queued) atomic_fetch_add(p->queued, 1);
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return PROTO_OK;
}

/* Runs what is queued, then joins the threads. */
static void pool_stop(pool *p) {
  if (!p->q) return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (size_t i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
  free(p->threads);
  free(p->q);
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  memset(p, 0, sizeof *p);
}

/* ---- the daemon state ------------------------------------------------------ */

typedef struct daemon_state {
  http_server *srv;
  const http_config *cfg;
  struct MHD_Daemon *mhd;
  pool work, gen;
  pthread_mutex_t drain_mu;
  pthread_cond_t drain_cv;
  atomic_ullong requests; /* numbers the generated request ids */
  unsigned run;           /* ties those ids to this run of the daemon */
} daemon_state;

static daemon_state D;

/* ---- one request ----------------------------------------------------------- */

typedef struct conn {
  struct MHD_Connection *mhd;
  pthread_mutex_t mu;
  int refs; /* the MHD request + a running job + a stream response */
  double t0;
  http_match m;
  char method[8];
  char path[256]; /* for the log: printable, truncated */
  char peer[64];
  char id[HTTP_REQUEST_ID_MAX + 1]; /* X-Request-Id: the client's, or made here */
  int status;                       /* status queued (0 = none yet) */
  int first_done;
  int preflight; /* a CORS preflight: answered when the request is in */
  /* body */
  proto_buf body;
  int too_big;
  size_t discarded; /* body bytes dropped after too_big */
  int ndjson;
  http_ingest *ing;
  int ing_error; /* feed/submit failed: the rest of the body is discarded */
  proto_status ing_st;
  /* request pieces the job needs */
  char *ctype, *authz, *apikey, *wait, *force, *limit, *after, *filter, *with_text, *accept_enc;
  char *cors_origin; /* the request's Origin, when --cors-origins allows it */
  /* response handed over by a job */
  http_response resp;
  int resp_ready;
  int suspended;
  /* streamed completion */
  int sse;
  proto_complete_req creq;
  proto_buf sse_buf;
  size_t sse_off;
  int gen_done, sse_waiting, gone;
  pthread_cond_t sse_cv; /* signalled when the stream buffer drains or the client goes */
} conn;

/* Most bytes of a stream waiting for a slow client before the generating
 * thread waits (so memory per stream stays bounded). */
#define SSE_MAX_PENDING (256 * 1024)

static void conn_unref(conn *c) {
  pthread_mutex_lock(&c->mu);
  int left = --c->refs;
  pthread_mutex_unlock(&c->mu);
  if (left) return;
  proto_buf_free(&c->body);
  http_ingest_free(c->ing);
  proto_buf_free(&c->resp.body);
  proto_buf_free(&c->sse_buf);
  proto_complete_free(&c->creq);
  free(c->ctype);
  free(c->authz);
  free(c->apikey);
  free(c->wait);
  free(c->limit);
  free(c->after);
  free(c->filter);
  free(c->accept_enc);
  free(c->force);
  free(c->with_text);
  free(c->cors_origin);
  pthread_cond_destroy(&c->sse_cv);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static char *dup_header(struct MHD_Connection *mc, enum MHD_ValueKind kind, const char *name) {
  const char *v = MHD_lookup_connection_value(mc, kind, name);
  return v ? strdup(v) : NULL;
}

/* Lets a page on an allowed origin read the answer (CORS). Where the answer
 * depends on the origin, every answer says so to caches. */
static void add_cors(const conn *c, struct MHD_Response *mr) {
  if (!D.cfg->cors_origins) return;
  int any = http_cors_any(D.cfg->cors_origins);
  if (!any) MHD_add_response_header(mr, "Vary", "Origin");
  if (!c->cors_origin) return;
  MHD_add_response_header(mr, "Access-Control-Allow-Origin", any ? "*" : c->cors_origin);
  MHD_add_response_header(mr, "Access-Control-Expose-Headers", HTTP_CORS_EXPOSE);
}

static enum MHD_Result send_resp(conn *c, http_response *r) {
  struct MHD_Response *mr = MHD_create_response_from_buffer(
      r->body.len, r->body.len ? r->body.data : (void *)"", MHD_RESPMEM_MUST_COPY);
  if (!mr) return MHD_NO;
  MHD_add_response_header(mr, "Content-Type",
                          r->content_type ? r->content_type : "application/json");
  if (r->allow) MHD_add_response_header(mr, "Allow", r->allow);
  if (r->content_encoding) MHD_add_response_header(mr, "Content-Encoding", r->content_encoding);
  if (c->m.route == HTTP_R_WEBUI) MHD_add_response_header(mr, "Vary", "Accept-Encoding");
  if (c->m.route == HTTP_R_WEBUI && r->status == 200) { /* the page holds the API key field */
    MHD_add_response_header(mr, "Content-Security-Policy", http_webui_csp());
    MHD_add_response_header(mr, "X-Frame-Options", "DENY");
    MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(mr, "Referrer-Policy", "no-referrer");
  }
  if (r->retry_after > 0) {
    char ra[16];
    snprintf(ra, sizeof ra, "%d", r->retry_after);
    MHD_add_response_header(mr, "Retry-After", ra);
  }
  if (r->status == 401) MHD_add_response_header(mr, "WWW-Authenticate", "Bearer");
  add_cors(c, mr);
  MHD_add_response_header(mr, "X-Request-Id", c->id);
  c->status = r->status;
  enum MHD_Result ret = MHD_queue_response(c->mhd, (unsigned)r->status, mr);
  MHD_destroy_response(mr);
  return ret;
}

static enum MHD_Result send_error(conn *c, proto_status st, const char *msg) {
  http_response r;
  memset(&r, 0, sizeof r);
  http_error(&r, st, msg);
  enum MHD_Result ret = send_resp(c, &r);
  proto_buf_free(&r.body);
  return ret;
}

static void build_request(conn *c, http_request *rq) {
  memset(rq, 0, sizeof *rq);
  rq->method = c->method;
  rq->path = "";
  rq->query_wait = c->wait;
  rq->query_limit = c->limit;
  rq->query_after = c->after;
  rq->query_filter = c->filter;
  rq->accept_encoding = c->accept_enc;
  rq->query_force = c->force;
  rq->query_with_text = c->with_text;
  rq->authorization = c->authz;
  rq->api_key = c->apikey;
  rq->content_type = c->ctype;
  rq->body = c->body.data ? c->body.data : "";
  rq->body_len = c->body.len;
}

/* Worker side: hands a finished response over to the MHD thread and resumes
 * the connection (which then sends it); drops the job's reference. */
static void conn_answer(conn *c, http_response *r) {
  pool_job_finishing();
  pthread_mutex_lock(&c->mu);
  c->resp = *r;
  c->resp_ready = 1;
  c->suspended = 0;
  MHD_resume_connection(c->mhd);
  pthread_mutex_unlock(&c->mu);
  conn_unref(c);
}

/* Whether the client of a queued request has closed its end (or reset the
 * connection): MHD does not watch suspended sockets, so a worker looks
 * before spending encoder time on an answer nobody will read. Over TLS
 * this sees a client's end only once it has no unread bytes before it: a
 * client that closes its session properly sends a close_notify alert
 * first, which TLS 1.3 encrypts as application data, so such a request
 * runs and its answer is dropped. */
static int client_gone(conn *c) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c->mhd, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (!ci) return 0;
  char byte;
  ssize_t n = recv(ci->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Worker side: run the request (unless its client left), hand the response
 * over, resume. */
static void job_execute(void *arg) {
  conn *c = arg;
  http_response r;
  memset(&r, 0, sizeof r);
  if (client_gone(c)) {
    /* nginx's "client closed request": logged and counted, never sent */
    r.status = 499;
    proto_buf_adds(&r.body,
                   "{\"error\":{\"code\":\"client_closed\","
                   "\"message\":\"client closed the connection\"}}");
  } else {
    http_request rq;
    build_request(c, &rq);
    http_execute(D.srv, &c->m, &rq, &r);
  }
  conn_answer(c, &r);
}

static void job_ingest_batch(void *arg) {
  conn *c = arg;
  proto_status st = http_ingest_submit(c->ing);
  pool_job_finishing();
  pthread_mutex_lock(&c->mu);
  if (st != PROTO_OK) {
    c->ing_error = 1;
    c->ing_st = st;
  }
  c->suspended = 0;
  MHD_resume_connection(c->mhd);
  pthread_mutex_unlock(&c->mu);
  conn_unref(c);
}

static void job_ingest_finish(void *arg) {
  conn *c = arg;
  http_response r;
  memset(&r, 0, sizeof r);
  if (c->ing_error)
    http_ingest_abort(c->ing, c->ing_st,
                      c->ing_st == PROTO_EBUSY ? "server busy: ingest stopped, retry the rest later"
                                               : "ingest stopped");
  http_ingest_finish(c->ing, &r);
  conn_answer(c, &r);
}

/* Suspends c and queues fn on p; on a full pool answers 429 instead. */
static enum MHD_Result hand_off(conn *c, pool *p, job_fn fn) {
  pthread_mutex_lock(&c->mu);
  c->refs++;
  c->suspended = 1;
  MHD_suspend_connection(c->mhd);
  pthread_mutex_unlock(&c->mu);
  if (pool_submit(p, fn, c) == PROTO_OK) return MHD_YES;
  atomic_fetch_add(&D.srv->rejected, 1);
  pthread_mutex_lock(&c->mu);
  c->refs--;
  http_error(&c->resp, PROTO_EBUSY, "server busy: request queue full, retry later");
  c->resp_ready = 1;
  c->suspended = 0;
  MHD_resume_connection(c->mhd);
  pthread_mutex_unlock(&c->mu);
  return MHD_YES;
}

/* Like hand_off for a mid-body NDJSON batch: a full pool cannot be answered
 * now (the body is still arriving), so the ingest stops with EBUSY and the
 * rest of the body is discarded; the final response reports it. */
static enum MHD_Result hand_off_batch(conn *c) {
  pthread_mutex_lock(&c->mu);
  c->refs++;
  c->suspended = 1;
  MHD_suspend_connection(c->mhd);
  pthread_mutex_unlock(&c->mu);
  if (pool_submit(&D.work, job_ingest_batch, c) == PROTO_OK) return MHD_YES;
  atomic_fetch_add(&D.srv->rejected, 1);
  pthread_mutex_lock(&c->mu);
  c->refs--;
  c->ing_error = 1;
  c->ing_st = PROTO_EBUSY;
  c->suspended = 0;
  MHD_resume_connection(c->mhd);
  pthread_mutex_unlock(&c->mu);
  return MHD_YES;
}

/* ---- streamed completions ---------------------------------------------------- */

static int sse_write(void *ctx, const char *data, size_t len) {
  conn *c = ctx;
  pthread_mutex_lock(&c->mu);
  while (!c->gone && c->sse_buf.len - c->sse_off > SSE_MAX_PENDING) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&c->sse_cv, &c->mu, &ts);
  }
  int gone = c->gone;
  if (!gone) {
    proto_buf_add(&c->sse_buf, data, len);
    if (c->sse_waiting) {
      c->sse_waiting = 0;
      MHD_resume_connection(c->mhd);
    }
  }
  pthread_mutex_unlock(&c->mu);
  return gone;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  conn *c = cls;
  pthread_mutex_lock(&c->mu);
  ssize_t n = 0;
  if (c->sse_off < c->sse_buf.len) {
    size_t avail = c->sse_buf.len - c->sse_off;
    n = (ssize_t)(avail < max ? avail : max);
    memcpy(buf, c->sse_buf.data + c->sse_off, (size_t)n);
    c->sse_off += (size_t)n;
    if (c->sse_off == c->sse_buf.len) c->sse_off = c->sse_buf.len = 0;
    pthread_cond_signal(&c->sse_cv);
  } else if (c->gen_done) {
    n = MHD_CONTENT_READER_END_OF_STREAM;
  } else {
    c->sse_waiting = 1;
    MHD_suspend_connection(c->mhd);
  }
  pthread_mutex_unlock(&c->mu);
  return n;
}

static void sse_free(void *cls) {
  conn *c = cls;
  pthread_mutex_lock(&c->mu);
  if (!c->gen_done) c->gone = 1; /* the client went away: cancel */
  pthread_cond_signal(&c->sse_cv);
  pthread_mutex_unlock(&c->mu);
  conn_unref(c);
}

static void job_generate(void *arg) {
  conn *c = arg;
  http_sink sink = {sse_write, c};
  http_response r;
  memset(&r, 0, sizeof r);
  atomic_fetch_add(&D.srv->gen_active, 1);
  http_complete_run(D.srv, &c->creq, &sink, &r);
  atomic_fetch_sub(&D.srv->gen_active, 1);
  pool_job_finishing();
  pthread_mutex_lock(&c->mu);
  if (c->sse) {
    c->gen_done = 1;
    if (c->sse_waiting) {
      c->sse_waiting = 0;
      MHD_resume_connection(c->mhd);
    }
    proto_buf_free(&r.body);
  } else {
    c->resp = r;
    c->resp_ready = 1;
    c->suspended = 0;
    MHD_resume_connection(c->mhd);
  }
  pthread_mutex_unlock(&c->mu);
  conn_unref(c);
}

static enum MHD_Result start_completion(conn *c) {
  http_request rq;
  build_request(c, &rq);
  http_response r;
  memset(&r, 0, sizeof r);
  if (http_complete_prepare(D.srv, &rq, c->m.route == HTTP_R_CHAT, &c->creq, &r) != PROTO_OK) {
    enum MHD_Result ret = send_resp(c, &r);
    proto_buf_free(&r.body);
    return ret;
  }
  if (!c->creq.stream) return hand_off(c, &D.gen, job_generate);
  /* streamed: the response goes out at once and is fed by the generating thread */
  pthread_mutex_lock(&c->mu);
  c->sse = 1;
  c->refs += 2; /* the job and the response */
  pthread_mutex_unlock(&c->mu);
  if (pool_submit(&D.gen, job_generate, c) != PROTO_OK) {
    pthread_mutex_lock(&c->mu);
    c->refs -= 2;
    c->sse = 0;
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_add(&D.srv->rejected, 1);
    return send_error(c, PROTO_EBUSY, "server busy: generation queue full, retry later");
  }
  struct MHD_Response *mr =
      MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, c, sse_free);
  if (!mr) {
    pthread_mutex_lock(&c->mu);
    c->gone = 1;
    pthread_mutex_unlock(&c->mu);
    conn_unref(c); /* the response's reference */
    return MHD_NO;
  }
  MHD_add_response_header(mr, "Content-Type", "text/event-stream");
  MHD_add_response_header(mr, "Cache-Control", "no-cache");
  MHD_add_response_header(mr, "X-Accel-Buffering", "no");
  add_cors(c, mr);
  MHD_add_response_header(mr, "X-Request-Id", c->id);
  c->status = 200;
  enum MHD_Result ret = MHD_queue_response(c->mhd, 200, mr);
  MHD_destroy_response(mr);
  return ret;
}

/* ---- the access handler ------------------------------------------------------ */

/* A search by vector needs no encoder: FAISS alone is fast enough to answer
 * on the MHD thread, saving the hand-off. A scheduling hint only: a body this
 * misjudges is still answered correctly, just on the other kind of thread. */
static int by_vector(const proto_buf *b) {
  return b->len && memmem(b->data, b->len, "\"vector\"", 8) &&
         !memmem(b->data, b->len, "\"quer", 6);
}

/* A search by vector on a small index is answered on the MHD thread (the
 * hand-off would cost more than the search); on a large one, its scan
 * (milliseconds) would hold up every other connection of that thread, and
 * a few keep-alive clients whose connections all landed on one MHD thread
 * would get one core: it goes to the workers like other slow requests. */
static int quick_search(conn *c) {
  srv_engine *e = atomic_load(&D.srv->engine);
  /* the index's size first: by_vector reads the whole body */
  return c->m.route == HTTP_R_SEARCH &&
         (!e || srv_engine_index_floats(e) <= (uint64_t)D.cfg->inline_search_floats) &&
         by_vector(&c->body);
}

/* A page of documents with their texts (up to 4 MiB and 1,000 reads) is
 * made on the workers, as other slow requests are, not on the HTTP thread. */
static int texts_listed(const conn *c) {
  return c->m.route == HTTP_R_DOC_LIST && http_wait_value(c->with_text) > 0;
}

/* Query parameters, checked before the body is read: a 400 naming an unknown,
 * repeated or malformed one; the value of ?wait kept for the handler. */
typedef struct query_args {
  conn *c;
  proto_status st;
  char msg[160];
} query_args;

static enum MHD_Result take_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value) {
  (void)kind;
  query_args *q = cls;
  q->st = http_query_check(q->c->m.route, key, value, q->msg, sizeof q->msg);
  char **slot = !strcmp(key, "limit")       ? &q->c->limit
                : !strcmp(key, "after")     ? &q->c->after
                : !strcmp(key, "filter")    ? &q->c->filter
                : !strcmp(key, "force")     ? &q->c->force
                : !strcmp(key, "with_text") ? &q->c->with_text
                                            : &q->c->wait;
  if (q->st == PROTO_OK && *slot) {
    q->st = PROTO_EINVAL;
    snprintf(q->msg, sizeof q->msg, "query parameter '%s': given twice", key);
  }
  if (q->st == PROTO_OK && !(*slot = strdup(value ? value : ""))) {
    q->st = PROTO_ENOMEM;
    snprintf(q->msg, sizeof q->msg, "out of memory");
  }
  return q->st == PROTO_OK ? MHD_YES : MHD_NO;
}

/* The headers that say where a request's body ends, and for which host. */
typedef struct framing {
  const char *length; /* the last Content-Length */
  int lengths_differ; /* Content-Length given again with another value */
  int chunked;        /* Transfer-Encoding given */
  int hosts;          /* Host headers */
} framing;

static enum MHD_Result note_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value) {
  (void)kind;
  framing *f = cls;
  if (!strcasecmp(key, "Content-Length")) {
    if (f->length && strcmp(f->length, value ? value : "")) f->lengths_differ = 1;
    f->length = value ? value : "";
  } else if (!strcasecmp(key, "Transfer-Encoding")) {
    f->chunked = 1;
  } else if (!strcasecmp(key, "Host")) {
    f->hosts++;
  }
  return MHD_YES;
}

/* A body whose end a proxy in front could place elsewhere than we do, so
 * that the rest would pass as another request (request smuggling; RFC 9112
 * 6.3 says to refuse it), or a host that is missing or ambiguous (RFC 9112
 * 3.2: a 400): NULL, or why the request is refused. */
static const char *refused_headers(struct MHD_Connection *mc, const char *version) {
  framing f = {0};
  MHD_get_connection_values(mc, MHD_HEADER_KIND, note_framing, &f);
  if (f.lengths_differ) return "Content-Length: given twice with different values";
  if (f.chunked && f.length) return "Content-Length and Transfer-Encoding: give one";
  if (f.hosts > 1) return "Host: given more than once";
  if (!f.hosts && !strcmp(version, MHD_HTTP_VERSION_1_1))
    return "Host: missing (HTTP/1.1 needs it)";
  return NULL;
}

/* A browser's CORS preflight (OPTIONS with Access-Control-Request-Method)
 * for a path that exists: 204 with what a page on an allowed origin may
 * send, else a 403 saying what is not allowed. It carries no credentials.
 * Answered once the request is in: libmicrohttpd closes the connection
 * after an answer queued before then, and the page's request follows. */
static enum MHD_Result preflight(conn *c, struct MHD_Connection *mc) {
  const char *want =
      MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Access-Control-Request-Method");
  char msg[256], shown[96];
  if (!D.cfg->cors_origins)
    return send_error(c, PROTO_EFORBIDDEN,
                      "Origin: cross-origin requests are off (see --cors-origins)");
  if (!c->cors_origin) {
    http_printable(MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Origin"), shown, sizeof shown);
    snprintf(msg, sizeof msg, "Origin: '%s' is not in --cors-origins", shown);
    return send_error(c, PROTO_EFORBIDDEN, msg);
  }
  if (!http_cors_method_listed(c->m.allow, want)) {
    http_printable(want, shown, sizeof shown);
    snprintf(msg, sizeof msg, "Access-Control-Request-Method: %s is not allowed here (allowed: %s)",
             shown, c->m.allow);
    return send_error(c, PROTO_EFORBIDDEN, msg);
  }
  const char *asked =
      MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Access-Control-Request-Headers");
  if (http_cors_headers_refused(asked, shown, sizeof shown)) {
    snprintf(msg, sizeof msg,
             "Access-Control-Request-Headers: '%s' is not one this server "
             "reads (allowed: " HTTP_CORS_ALLOW_HEADERS ")",
             shown);
    return send_error(c, PROTO_EFORBIDDEN, msg);
  }
  struct MHD_Response *mr = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
  if (!mr) return MHD_NO;
  add_cors(c, mr);
  MHD_add_response_header(mr, "Access-Control-Allow-Methods", c->m.allow);
  MHD_add_response_header(mr, "Access-Control-Allow-Headers", HTTP_CORS_ALLOW_HEADERS);
  MHD_add_response_header(mr, "Access-Control-Max-Age", HTTP_CORS_MAX_AGE);
  MHD_add_response_header(mr, "X-Request-Id", c->id);
  c->status = 204;
  enum MHD_Result ret = MHD_queue_response(c->mhd, 204, mr);
  MHD_destroy_response(mr);
  return ret;
}

static enum MHD_Result first_call(conn *c, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version) {
  snprintf(c->method, sizeof c->method, "%s", method);
  http_printable(url, c->path, sizeof c->path);
  http_route_match(method, url, &c->m);
  if (c->m.st == PROTO_EMETHOD && !strcmp(method, "OPTIONS")) {
    const char *want =
        MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Access-Control-Request-Method");
    if (want && MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Origin")) {
      c->preflight = 1;
      return MHD_YES;
    }
  }
  if (atomic_load(&D.srv->draining) && c->m.route != HTTP_R_HEALTH && c->m.st == PROTO_OK)
    return send_error(c, PROTO_EUNAVAIL, "shutting down"); /* keep-alive clients after SIGTERM */
  if (c->m.st != PROTO_OK) {
    http_response r;
    memset(&r, 0, sizeof r);
    http_error(&r, c->m.st, c->m.msg);
    r.allow = c->m.allow;
    enum MHD_Result ret = send_resp(c, &r);
    proto_buf_free(&r.body);
    return ret;
  }
  const char *header_error = refused_headers(mc, version);
  if (header_error) return send_error(c, PROTO_EINVAL, header_error);
  c->authz = dup_header(mc, MHD_HEADER_KIND, "Authorization");
  c->apikey = dup_header(mc, MHD_HEADER_KIND, "api-key");
  c->ctype = dup_header(mc, MHD_HEADER_KIND, "Content-Type");
  if (c->m.route == HTTP_R_WEBUI)
    c->accept_enc = dup_header(mc, MHD_HEADER_KIND, "Accept-Encoding");
  proto_status st = http_auth_check(D.cfg, c->authz, c->apikey, c->m.access);
  if (st != PROTO_OK)
    return send_error(c, st,
                      st == PROTO_EUNAUTH ? "Authorization: missing or wrong API key"
                                          : "Authorization: the read-only key cannot write");
  query_args qa = {.c = c, .st = PROTO_OK};
  MHD_get_connection_values(mc, MHD_GET_ARGUMENT_KIND, take_query_arg, &qa);
  if (qa.st != PROTO_OK) return send_error(c, qa.st, qa.msg);
  if (!c->m.has_body) return MHD_YES;
  const char *coding = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Encoding");
  if (coding && !http_identity_coding(coding)) { /* RFC 9110 8.4: else it would be read as JSON */
    char msg[160], shown[64];
    http_printable(coding, shown, sizeof shown);
    snprintf(msg, sizeof msg, "Content-Encoding: '%s' is not accepted; send the body uncompressed",
             shown);
    return send_error(c, PROTO_EMEDIA, msg);
  }
  int kind = http_body_kind(c->m.route, c->ctype);
  if (kind < 0) return send_error(c, PROTO_EMEDIA, http_body_types(c->m.route));
  const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Length");
  if (kind == 0 && cl && strtoull(cl, NULL, 10) > (unsigned long long)D.cfg->max_body) {
    char msg[96];
    snprintf(msg, sizeof msg, "body: larger than %ld bytes (max-body)", D.cfg->max_body);
    return send_error(c, PROTO_ETOOBIG, msg);
  }
  if (kind == 1) {
    if (D.cfg->read_only) return send_error(c, PROTO_EFORBIDDEN, "server is read-only");
    c->ndjson = 1;
    if (http_ingest_new(D.srv, 1, http_wait_value(c->force) > 0, &c->ing) != PROTO_OK)
      return send_error(c, PROTO_ENOMEM, "out of memory");
  }
  return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
  (void)cls;
  conn *c = *con_cls;
  if (!c) {
    c = calloc(1, sizeof *c);
    if (!c) return MHD_NO;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->sse_cv, NULL);
    c->refs = 1;
    c->mhd = mc;
    c->t0 = proto_now();
    *con_cls = c;
    atomic_fetch_add(&D.srv->inflight, 1);
    /* the client's request id when it is a plain token, else one of ours */
    const char *rid = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "X-Request-Id");
    if (http_request_id_ok(rid)) snprintf(c->id, sizeof c->id, "%s", rid);
    else
      snprintf(c->id, sizeof c->id, "%08x-%llx", D.run,
               (unsigned long long)atomic_fetch_add(&D.requests, 1));
    if (D.cfg->cors_origins) {
      const char *origin = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Origin");
      if (http_cors_allows(D.cfg->cors_origins, origin) && !(c->cors_origin = strdup(origin)))
        return MHD_NO;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
      const struct sockaddr *sa = ci->client_addr;
      if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, c->peer,
                  sizeof c->peer);
      else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, c->peer,
                  sizeof c->peer);
    }
    return first_call(c, mc, url, method, version);
  }
  /* libmicrohttpd 0.9.75 keeps feeding buffered upload data to a connection
   * suspended from inside this handler: leave it unconsumed until resumed */
  pthread_mutex_lock(&c->mu);
  int suspended = c->suspended;
  pthread_mutex_unlock(&c->mu);
  if (suspended) return MHD_YES;
  if (c->status) { /* already answered (early error): discard the body */
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (c->resp_ready) {
    c->resp_ready = 0;
    *upload_data_size = 0;
    return send_resp(c, &c->resp);
  }
  if (*upload_data_size) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (c->ndjson) {
      if (c->ing_error) return MHD_YES;
      int full = 0;
      proto_status st = http_ingest_feed(c->ing, upload_data, n, &full);
      if (st != PROTO_OK) {
        c->ing_error = 1;
        c->ing_st = st;
        return MHD_YES;
      }
      if (full) return hand_off_batch(c);
      return MHD_YES;
    }
    if (c->too_big) {
      /* the 413 goes out when the body ends; a body that goes on and on
       * gets the connection closed instead */
      c->discarded += n;
      return c->discarded > 4 * (size_t)D.cfg->max_body ? MHD_NO : MHD_YES;
    }
    if (c->body.len + n > (size_t)D.cfg->max_body) {
      c->too_big = 1;
      proto_buf_free(&c->body);
      return MHD_YES;
    }
    proto_buf_add(&c->body, upload_data, n);
    return MHD_YES;
  }
  /* the whole request is in */
  if (c->preflight) return preflight(c, mc);
  if (c->too_big) {
    char msg[96];
    snprintf(msg, sizeof msg, "body: larger than %ld bytes (max-body)", D.cfg->max_body);
    return send_error(c, PROTO_ETOOBIG, msg);
  }
  if (c->body.failed) return send_error(c, PROTO_ENOMEM, "out of memory");
  if (c->sse) return MHD_YES; /* resumed stream: MHD is sending */
  if (c->ndjson) return hand_off(c, &D.work, job_ingest_finish);
  if (c->m.kind == HTTP_GEN) return start_completion(c);
  if ((c->m.kind == HTTP_WORKER && !quick_search(c)) || texts_listed(c))
    return hand_off(c, &D.work, job_execute);
  http_request rq;
  build_request(c, &rq);
  http_response r;
  memset(&r, 0, sizeof r);
  http_execute(D.srv, &c->m, &rq, &r);
  enum MHD_Result ret = send_resp(c, &r);
  proto_buf_free(&r.body);
  return ret;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)mc;
  conn *c = *con_cls;
  if (!c) return;
  *con_cls = NULL;
  double ms = (proto_now() - c->t0) * 1000.0;
  int status = c->status ? c->status : 499;
  if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && c->sse) {
    pthread_mutex_lock(&c->mu);
    if (!c->gen_done) c->gone = 1;
    pthread_cond_signal(&c->sse_cv);
    pthread_mutex_unlock(&c->mu);
  }
  http_metrics_observe(c->m.route, status, ms / 1000.0);
  char t[40];
  http_log_time(t, sizeof t);
  http_log_request(t, c->method, c->path, http_route_label(c->m.route), status, ms,
                   c->peer[0] ? c->peer : "-", c->id, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
  atomic_fetch_sub(&D.srv->inflight, 1);
  pthread_mutex_lock(&D.drain_mu);
  pthread_cond_broadcast(&D.drain_cv);
  pthread_mutex_unlock(&D.drain_mu);
  conn_unref(c);
}

/* Leaves the raw path untouched: ids are percent-decoded by the router. */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s) {
  (void)cls;
  (void)c;
  return strlen(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
  for (char *p = msg; *p; p++)
    if (*p == '"') *p = '\'';
  http_log_event("warn", "libmicrohttpd: %s", msg);
}

/* ---- main ------------------------------------------------------------------- */

static int resolve(const char *host, long port, struct sockaddr_storage *ss, int *v6) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char ps[16];
  snprintf(ps, sizeof ps, "%ld", port);
  const char *h = host;
  char tmp[256];
  if (host[0] == '[') { /* [::1] */
    snprintf(tmp, sizeof tmp, "%s", host + 1);
    char *e = strchr(tmp, ']');
    if (e) *e = 0;
    h = tmp;
  }
  if (getaddrinfo(h, ps, &hints, &res) != 0 || !res) return -1;
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *v6 = res->ai_family == AF_INET6;
  freeaddrinfo(res);
  return 0;
}

/* What srv_http_main settles before it starts anything: the modes, the
 * address, whether a key guards the API. */
typedef struct serve_plan {
  srv_search_mode search_mode, retrieval_mode;
  struct sockaddr_storage addr;
  int v6;
  int have_key;
} serve_plan;

/* Checks the loaded configuration and fills plan. 0, or 2 after printing
 * the problem (nothing started yet). */
static int serve_check(const http_config *cfg, serve_plan *plan) {
  if (!cfg->data) {
    fprintf(stderr, "retro serve: --data DIR is required (see --help)\n");
    return 2;
  }
  plan->search_mode = srv_mode_parse(cfg->search_mode);
  plan->retrieval_mode = srv_mode_parse(cfg->retrieval_mode);
  if (!plan->search_mode || !plan->retrieval_mode) {
    fprintf(stderr, "retro serve: --%s must be dense, lexical or hybrid\n",
            plan->search_mode ? "retrieval-mode" : "search-mode");
    return 2;
  }
  char terr[512];
  http_chat_template *tmpl = NULL;
  if (http_chat_template_load(cfg->chat_template, &tmpl, terr, sizeof terr) != PROTO_OK) {
    fprintf(stderr, "retro serve: --chat-template: %s\n", terr);
    return 2;
  }
  http_chat_template_free(tmpl);
  plan->have_key = (cfg->api_key && *cfg->api_key) || (cfg->read_key && *cfg->read_key);
  if (!http_host_is_loopback(cfg->host) && !plan->have_key) {
    fprintf(stderr,
            "retro serve: refusing to bind %s without an API key (set --api-key or "
            "RETRO_API_KEY, or bind 127.0.0.1)\n",
            cfg->host);
    return 2;
  }
  if (cfg->api_key && cfg->read_key && *cfg->api_key && !strcmp(cfg->api_key, cfg->read_key)) {
    fprintf(stderr, "retro serve: --api-key and --read-key must differ\n");
    return 2;
  }
  if (!cfg->tls_cert != !cfg->tls_key) {
    fprintf(stderr, "retro serve: --tls-cert and --tls-key go together: give both or neither\n");
    return 2;
  }
  if (cfg->tls_cert && (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES ||
                        MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK) != MHD_YES)) {
    fprintf(stderr, "retro serve: --tls-cert: this libmicrohttpd was built without TLS\n");
    return 2;
  }
  char tlserr[512];
  if (cfg->tls_cert && http_tls_load(cfg->tls_cert, cfg->tls_key, tlserr, sizeof tlserr) != 0) {
    fprintf(stderr, "retro serve: %s\n", tlserr);
    return 2;
  }
  char cerr[256];
  if (cfg->cors_origins && http_cors_check(cfg->cors_origins, cerr, sizeof cerr) != PROTO_OK) {
    fprintf(stderr, "retro serve: --cors-origins: %s\n", cerr);
    return 2;
  }
  if (http_cors_any(cfg->cors_origins) && !plan->have_key) {
    /* without a key, any web page the user opens could read and delete */
    fprintf(stderr,
            "retro serve: --cors-origins '*' needs --api-key or --read-key (any web "
            "page could otherwise call this server)\n");
    return 2;
  }
  if (resolve(cfg->host, cfg->port, &plan->addr, &plan->v6) != 0) {
    fprintf(stderr, "retro serve: cannot resolve --host %s\n", cfg->host);
    return 2;
  }
  return 0;
}

/* The worker pools: D.work for the engine's requests, D.gen for the
 * generation slots and their queue. 0, or -1 (logged). */
static int serve_start_pools(const http_config *cfg) {
  /* 4 per CPU by default: concurrent texts share encoder calls (engine_embed.c),
   * so more requests in flight make larger, cheaper batches */
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  size_t workers = cfg->workers > 0 ? (size_t)cfg->workers : 4 * (size_t)(cpus > 0 ? cpus : 1);
  if (workers > 256) workers = 256;
  if (pool_start(&D.work, workers, (size_t)cfg->queue, &D.srv->work_queued, &D.srv->work_busy) !=
          PROTO_OK ||
      pool_start(&D.gen, (size_t)(cfg->gen_slots + cfg->gen_queue), 0, NULL, NULL) != PROTO_OK) {
    http_log_event("error", "cannot start worker threads");
    return -1;
  }
  return 0;
}

/* The served certificate's subject and end, as a log line; a warning when
 * it has ended or ends within 14 days (clients will refuse it). */
static void log_tls_certificate(const char *what) {
  time_t end = http_tls_not_after();
  char day[32] = "?";
  struct tm tm;
  if (gmtime_r(&end, &tm)) strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%SZ", &tm);
  double left = difftime(end, time(NULL));
  http_log_event(left < 14 * 86400.0 ? "warn" : "info", "tls: %s %s, valid until %s%s", what,
                 http_tls_subject(), day,
                 left < 0              ? " (expired: clients will refuse it)"
                 : left < 14 * 86400.0 ? " (ends within 14 days)"
                                       : "");
}

/* Starts libmicrohttpd on plan's address (D.mhd). 0, or -1 (reported). */
static int serve_listen(const http_config *cfg, serve_plan *plan) {
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                   MHD_USE_ITC | MHD_USE_ERROR_LOG;
  if (plan->v6) flags |= MHD_USE_IPv6;
  if (cfg->tls_cert) flags |= MHD_USE_TLS;
  /* the certificate is asked for at each handshake (so SIGHUP can renew
   * it); without TLS the option list ends before that option */
  enum MHD_OPTION tls_option = cfg->tls_cert ? MHD_OPTION_HTTPS_CERT_CALLBACK : MHD_OPTION_END;
  D.mhd = MHD_start_daemon(
      flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
      MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&plan->addr, MHD_OPTION_THREAD_POOL_SIZE,
      (unsigned)cfg->http_threads, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)cfg->idle_timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)cfg->header_limit,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape,
      NULL, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, tls_option, &http_tls_present, MHD_OPTION_END);
  if (!D.mhd) {
    http_log_event("error", "cannot listen on %s:%ld", cfg->host, cfg->port);
    fprintf(stderr, "retro serve: cannot listen on %s:%ld\n", cfg->host, cfg->port);
    return -1;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(D.mhd, MHD_DAEMON_INFO_BIND_PORT);
  unsigned port = di ? di->port : (unsigned)cfg->port;
  http_log_event("info", "listening on %s:%u (auth %s, tls %s)", cfg->host, port,
                 plan->have_key ? "on" : "off", cfg->tls_cert ? "on" : "off");
  if (cfg->tls_cert) log_tls_certificate("serving");
  else if (!http_host_is_loopback(cfg->host))
    http_log_event("warn",
                   "plain HTTP on %s: API keys and texts cross the network readable by anyone "
                   "on the way (--tls-cert and --tls-key, or a TLS proxy in front)",
                   cfg->host);
  return 0;
}

/* The derived indexes the engine had to rebuild from the store at open (a
 * file deleted, damaged or older than the database): nothing is lost, but an
 * operator should know why a start took longer. */
static void log_repairs(srv_engine *engine) {
  srv_info in;
  if (srv_info_get(engine, &in) != PROTO_OK) return;
  if (in.index.rebuilt_at_open && in.store.chunks)
    http_log_event("warn",
                   "index.faiss was missing, unreadable or behind the database: rebuilt from it "
                   "(%llu vectors)",
                   (unsigned long long)in.index.ntotal);
  if (in.has_lexical && in.lexical_private)
    http_log_event("warn",
                   "lexical.sqlite is behind the database or unreadable: this read-only "
                   "server built a private copy in $TMPDIR (%llu chunks)",
                   (unsigned long long)in.lexical.chunks);
  if (in.has_lexical && in.lexical.rebuilt_at_open)
    http_log_event("warn",
                   "lexical.sqlite was unreadable or not ours: rebuilt from the database "
                   "(%llu chunks)",
                   (unsigned long long)in.lexical.chunks);
}

/* Opens the engine the configuration names into *engine. 0, or -1
 * (reported). */
static int serve_open_engine(const http_config *cfg, const serve_plan *plan, srv_engine **engine) {
  srv_engine_options eo;
  memset(&eo, 0, sizeof eo);
  eo.data_dir = cfg->data;
  eo.encoder_dir = cfg->encoder;
  eo.decoder_dir = cfg->decoder;
  eo.reranker_dir = cfg->reranker;
  eo.load_decoder = 1;
  eo.index_factory = cfg->index_factory;
  eo.threads = (int)cfg->threads;
  eo.read_only = (int)cfg->read_only;
  eo.max_map_bytes = (size_t)cfg->max_map_mb << 20;
  eo.gen_slots = (int)cfg->gen_slots;
  eo.search_mode = plan->search_mode;
  eo.retrieval_mode = plan->retrieval_mode;
  eo.gen_queue = cfg->gen_queue ? (int)cfg->gen_queue : -1;
  http_log_event("info", "opening %s", cfg->data);
  proto_status st = srv_engine_open(&eo, engine);
  if (st != PROTO_OK) {
    const char *hint = !cfg->read_only && access(cfg->data, W_OK) != 0 && errno == EROFS
                           ? " (a read-only file system: --read-only serves it as it is)"
                           : "";
    http_log_event("error", "cannot open %s: %s: %s%s", cfg->data, proto_strerror(st),
                   srv_last_error(), hint);
    fprintf(stderr, "retro serve: cannot open %s: %s: %s%s\n", cfg->data, proto_strerror(st),
            srv_last_error(), hint);
    return -1;
  }
  log_repairs(*engine);
  return 0;
}

/* Signals go to the main thread, which waits for them (sigwait) while the
 * threads it starts block them. Threads started before do not block them
 * (OpenBLAS starts its pool when the library loads), and while the main
 * thread is out of sigwait the kernel may hand a signal to one of those,
 * where its default action ended the process (a stress test of
 * certificate reloads saw SIGHUP do it). This handler, run there, passes
 * the signal on to the main thread, where it waits for the next sigwait. */
static pthread_t signal_thread;

static void pass_signal(int sig) {
  int saved = errno;
  pthread_kill(signal_thread, sig);
  errno = saved;
}

static void pass_signals_to(pthread_t thread, const sigset_t *sigs) {
  signal_thread = thread;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = pass_signal;
  sa.sa_flags = SA_RESTART;
  sigfillset(&sa.sa_mask);
  for (int sig = 1; sig < NSIG; sig++)
    if (sigismember(sigs, sig) == 1) sigaction(sig, &sa, NULL);
}

/* SIGHUP: the certificate files again (renewed ones are served from the
 * next handshake on); when they are not good, the loaded ones stay. */
static void reload_tls(const http_config *cfg) {
  char err[512];
  if (http_tls_load(cfg->tls_cert, cfg->tls_key, err, sizeof err) == 0)
    log_tls_certificate("SIGHUP: now serving");
  else http_log_event("error", "SIGHUP: %s; still serving the certificate loaded before", err);
}

/* Serves until SIGTERM or SIGINT (sigs, blocked in every thread); SIGHUP
 * reopens the log and reads the TLS certificate and key again. */
static void serve_until_signal(const http_config *cfg, const sigset_t *sigs) {
  for (;;) {
    int sig = 0;
    if (sigwait(sigs, &sig) != 0) continue;
    if (sig == SIGHUP) {
      http_log_open(cfg->log);
      http_log_event("info", "SIGHUP: log reopened");
      if (cfg->tls_cert) reload_tls(cfg);
      continue;
    }
    http_log_event("info", "%s: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    return;
  }
}

/* Stops accepting, lets in-flight requests finish (up to drain_timeout),
 * stops the pools and the daemon. */
static void serve_drain(const http_config *cfg) {
  atomic_store(&D.srv->draining, 1);
  /* ours to close, but only after MHD_stop_daemon: until then a pool thread
   * may still use it (libmicrohttpd's manual; ThreadSanitizer saw the close
   * race a worker's epoll_ctl) */
  MHD_socket lsock = MHD_quiesce_daemon(D.mhd);
  double deadline = proto_now() + (double)cfg->drain_timeout;
  pthread_mutex_lock(&D.drain_mu);
  while (atomic_load(&D.srv->inflight) > 0 && proto_now() < deadline) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&D.drain_cv, &D.drain_mu, &ts);
  }
  pthread_mutex_unlock(&D.drain_mu);
  long left = atomic_load(&D.srv->inflight);
  if (left > 0)
    http_log_event("warn", "%ld requests still in flight after %lds", left, cfg->drain_timeout);
  pool_stop(&D.work);
  pool_stop(&D.gen);
  if (left == 0) { /* suspended connections would make stopping unsafe: the exit ends them */
    MHD_stop_daemon(D.mhd);
    if (lsock != MHD_INVALID_SOCKET) close(lsock);
  }
  D.mhd = NULL;
}

/* Stops whatever srv_http_main started (each step is a no-op when not
 * started) and closes the engine, saving its index. */
static void serve_stop(srv_engine *engine) {
  pool_stop(&D.work);
  pool_stop(&D.gen);
  if (D.mhd) MHD_stop_daemon(D.mhd);
  D.mhd = NULL;
  if (engine) {
    http_log_event("info", "saving the index and closing");
    if (srv_engine_close(engine) != PROTO_OK) /* documents are safe in the store */
      http_log_event("error",
                     "%s (every acknowledged document is in the store: the next start "
                     "brings the index up to date from it)",
                     srv_last_error());
  }
  http_server_free(D.srv);
  D.srv = NULL;
}

int srv_http_main(int argc, char **argv) {
  http_config cfg;
  char err[512];
  int help = 0, rc = 1;
  srv_engine *engine = NULL;
  serve_plan plan;
  memset(&plan, 0, sizeof plan);
  memset(&D, 0, sizeof D);
  D.run = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
  http_log_init();
  pthread_mutex_init(&D.drain_mu, NULL);
  pthread_cond_init(&D.drain_cv, NULL);
  D.cfg = &cfg;
  if (http_config_load(&cfg, argc, argv, NULL, &help, err, sizeof err) != PROTO_OK) {
    fprintf(stderr, "retro serve: %s\n", err);
    http_config_free(&cfg);
    return 2;
  }
  if (help) fputs(http_config_usage(), stdout);
  int bad = help ? 0 : serve_check(&cfg, &plan);
  if (help || bad) {
    http_config_free(&cfg);
    return bad;
  }
  http_log_open(cfg.log);

  /* signals go to the main thread only (sigwait below) */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  pass_signals_to(pthread_self(), &sigs);
  signal(SIGPIPE, SIG_IGN);
  if (http_log_start(cfg.log_flush_ms) != 0)
    http_log_event("warn", "cannot start the log flusher: every line is written at once");

  if (http_server_new(&cfg, NULL, &D.srv) != PROTO_OK || serve_start_pools(&cfg) ||
      serve_listen(&cfg, &plan) || serve_open_engine(&cfg, &plan, &engine))
    goto leave;
  http_server_attach(D.srv, engine);
  http_log_event("info", "ready");
  serve_until_signal(&cfg, &sigs);
  serve_drain(&cfg);
  rc = 0;
leave:
  serve_stop(engine);
  if (rc == 0) http_log_event("info", "stopped");
  http_log_close();
  http_config_free(&cfg);
  return rc;
}
