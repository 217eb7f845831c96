/* http_api.c - the handlers behind the routes: each turns a parsed request
 * (api/ decoders) into engine calls (srv.h) and writes the JSON response
 * (proto_jw). Handlers run on whatever thread calls them; the daemon
 * (http.c) decides which. Errors from the engine keep their proto_status
 * (so bad input stays 4xx) with srv_last_error() as the message. */
#include "http_priv.h"
#include "http_tls.h"
#include "views.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <stdatomic.h>

#define JSON_TYPE "application/json"
#define SSE_TYPE "text/event-stream"
#define INGEST_BATCH_DOCS 64
#define INGEST_BATCH_BYTES (1 << 20)
#define INGEST_MAX_RESULTS 10000

void http_error(http_response *resp, proto_status st, const char *msg) {
  proto_buf_free(&resp->body);
  resp->status = api_http_status(st);
  resp->content_type = JSON_TYPE;
  if (st == PROTO_EBUSY || st == PROTO_EUNAVAIL) resp->retry_after = 1;
  proto_json_error(&resp->body, st, msg);
}

static void engine_error(http_response *resp, proto_status st, const char *what) {
  char msg[512];
  const char *detail = srv_last_error();
  snprintf(msg, sizeof msg, "%s: %s%s%s", what, proto_strerror(st), detail && *detail ? ": " : "",
           detail ? detail : "");
  http_error(resp, st, msg);
}

static int no_engine(http_server *s, http_response *resp) {
  if (s->engine) return 0;
  http_error(resp, PROTO_EUNAVAIL, "engine not loaded");
  return 1;
}

static void ok_json(http_response *resp, int status) {
  resp->status = status;
  resp->content_type = JSON_TYPE;
  if (resp->body.failed) http_error(resp, PROTO_ENOMEM, "response too large");
}

int http_body_kind(http_route r, const char *ct) {
  if (!ct || !*ct) return 0;
  size_t n = strcspn(ct, "; \t");
  if ((n == 16 && !strncasecmp(ct, "application/json", n)) ||
      (n == 3 && !strncasecmp(ct, "*/*", n)))
    return 0;
  if (r == HTTP_R_DOC_PATCH && n == 28 && !strncasecmp(ct, "application/merge-patch+json", n))
    return 0;
  if (r == HTTP_R_DOCS && ((n == 20 && !strncasecmp(ct, "application/x-ndjson", n)) ||
                           (n == 18 && !strncasecmp(ct, "application/ndjson", n)) ||
                           (n == 17 && !strncasecmp(ct, "application/jsonl", n)) ||
                           (n == 19 && !strncasecmp(ct, "application/x-jsonl", n))))
    return 1;
  return -1;
}

const char *http_body_types(http_route r) {
  return r == HTTP_R_DOCS        ? "Content-Type: use application/json or application/x-ndjson"
         : r == HTTP_R_DOC_PATCH ? "Content-Type: use application/json or "
                                   "application/merge-patch+json"
                                 : "Content-Type: use application/json";
}

int http_identity_coding(const char *coding) {
  coding += strspn(coding, " \t");
  size_t n = strcspn(coding, " \t");
  return (n == 0 || (n == 8 && !strncasecmp(coding, "identity", 8))) &&
         coding[n + strspn(coding + n, " \t")] == '\0';
}

static int model_matches(const char *want, const char *name, const char *path) {
  if (!want || !*want) return 1;
  if (!strcmp(want, name)) return 1;
  if (path && *path && (!strcmp(want, path) || !strcmp(want, view_model_basename(path)))) return 1;
  return 0;
}

/* By default any "model" is served by the one model loaded for the route
 * (clients send their own defaults, e.g. text-embedding-ada-002); with
 * --strict-models a name that is not it is a 404 naming the served model.
 * Returns 1 (resp filled) when refused. */
static int model_refused(http_server *s, const char *want, const char *name, const char *verb,
                         http_response *resp) {
  if (!s->cfg || !s->cfg->strict_models || model_matches(want, name, NULL)) return 0;
  char err[256];
  snprintf(err, sizeof err, "model: unknown model '%.64s' (this server %s with '%.64s')", want,
           verb, name);
  http_error(resp, PROTO_ENOTFOUND, err);
  return 1;
}

/* For the handlers in other files (http_tokens.c). */
void http_engine_error(http_response *resp, proto_status st, const char *what) {
  engine_error(resp, st, what);
}
int http_no_engine(http_server *s, http_response *resp) { return no_engine(s, resp); }
void http_ok_json(http_response *resp) { ok_json(resp, 200); }
int http_model_is(const char *want, const char *name) { return model_matches(want, name, NULL); }

/* ---- simple routes -------------------------------------------------------- */

/* One model in OpenAI's shape (id, object, created, owned_by) plus what it
 * does here: "embeddings" (the encoder) or "completions" (the decoder).
 * created: the model directory's modification time (0 when unreadable). */
static void model_object(proto_jw *w, const char *name, const char *path, const char *kind) {
  struct stat sb;
  proto_jw_obj(w);
  proto_jw_key(w, "id");
  proto_jw_cstr(w, name);
  proto_jw_key(w, "object");
  proto_jw_cstr(w, "model");
  proto_jw_key(w, "created");
  proto_jw_int(w, path && *path && stat(path, &sb) == 0 ? (long long)sb.st_mtime : 0);
  proto_jw_key(w, "owned_by");
  proto_jw_cstr(w, "retrod");
  proto_jw_key(w, "kind");
  proto_jw_cstr(w, kind);
  proto_jw_obj_end(w);
}

/* The engine's srv_info (free it), or NULL with the error answered (what:
 * the route's word for it). */
static srv_info *info_or_error(http_server *s, const char *what, http_response *resp) {
  if (no_engine(s, resp)) return NULL;
  srv_info *info = calloc(1, sizeof *info);
  if (!info) {
    http_error(resp, PROTO_ENOMEM, "out of memory");
    return NULL;
  }
  proto_status st = srv_info_get(s->engine, info);
  if (st != PROTO_OK) {
    free(info);
    engine_error(resp, st, what);
    return NULL;
  }
  return info;
}

/* GET /v1/models (id NULL): the encoder and, when loaded, the decoder and
 * the reranker, as OpenAI clients list them; GET /v1/models/{id}: one of
 * them, by the name /v1/embeddings, /v1/completions or /v1/rerank accept in
 * "model". */
static void h_models(http_server *s, const char *id, http_response *resp) {
  srv_info *info = info_or_error(s, "models", resp);
  if (!info) return;
  const struct {
    const char *name, *path, *kind;
    int loaded, named_by_path; /* the decoder is also found by its path */
  } all[] = {{s->encoder_name, info->encoder_path, "embeddings", 1, 0},
             {s->model_name, info->decoder_path, "completions", info->decoder_loaded, 1},
             {s->reranker_name, info->reranker_path, "rerank", s->reranker_name[0] != 0, 0}};
  enum { N_MODELS = sizeof all / sizeof all[0] };
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  if (!id) {
    proto_jw_obj(&w);
    proto_jw_key(&w, "object");
    proto_jw_cstr(&w, "list");
    proto_jw_key(&w, "data");
    proto_jw_arr(&w);
    for (size_t i = 0; i < N_MODELS; i++)
      if (all[i].loaded) model_object(&w, all[i].name, all[i].path, all[i].kind);
    proto_jw_arr_end(&w);
    proto_jw_obj_end(&w);
    free(info);
    ok_json(resp, 200);
    return;
  }
  for (size_t i = 0; i < N_MODELS; i++)
    if (all[i].loaded &&
        model_matches(id, all[i].name, all[i].named_by_path ? all[i].path : NULL)) {
      model_object(&w, all[i].name, all[i].path, all[i].kind);
      free(info);
      ok_json(resp, 200);
      return;
    }
  char names[3 * 72] = "", msg[400];
  for (size_t i = 0; i < N_MODELS; i++)
    if (all[i].loaded)
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s'%.64s'",
               names[0] ? ", " : "", all[i].name);
  snprintf(msg, sizeof msg, "model: no model '%.64s' (this server has %s)", id, names);
  free(info);
  http_error(resp, PROTO_ENOTFOUND, msg);
}

static void h_info(http_server *s, http_response *resp) {
  srv_info *info = info_or_error(s, "info", resp);
  if (!info) return;
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  view_info(&w, info, s->encoder_name, s->model_name, info->read_only || s->cfg->read_only);
  free(info);
  ok_json(resp, 200);
}

static void gauge(proto_buf *b, const char *name, const char *type, const char *help,
                  unsigned long long v) {
  proto_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, v);
}

static void h_metrics(http_server *s, http_response *resp) {
  proto_buf *b = &resp->body;
  http_metrics_write(b);
  gauge(b, "retro_http_inflight_requests", "gauge", "Requests being handled.",
        (unsigned long long)atomic_load(&s->inflight));
  proto_buf_adds(b,
                 "# HELP retro_http_queue_depth Requests waiting for a worker.\n"
                 "# TYPE retro_http_queue_depth gauge\n");
  proto_buf_addf(b, "retro_http_queue_depth{pool=\"work\"} %ld\n", atomic_load(&s->work_queued));
  proto_buf_addf(b, "retro_http_queue_depth{pool=\"gen\"} %ld\n", atomic_load(&s->gen_active));
  gauge(b, "retro_http_workers_busy", "gauge", "Worker threads running a request.",
        (unsigned long long)atomic_load(&s->work_busy));
  gauge(b, "retro_http_rejected_total", "counter", "Requests answered 429 (queues full).",
        (unsigned long long)atomic_load(&s->rejected));
  proto_buf_adds(b,
                 "# HELP retro_build_info The server's version (the value is always 1).\n"
                 "# TYPE retro_build_info gauge\n"
                 "retro_build_info{version=\"" RETRO_VERSION "\"} 1\n");
  http_metrics_write_process(b);
  time_t tls_end = http_tls_not_after();
  if (tls_end > 0) /* what certificate-expiry alerts watch */
    gauge(b, "retro_tls_certificate_expiry_timestamp_seconds", "gauge",
          "When the served TLS certificate ends, in seconds since the epoch.",
          (unsigned long long)tls_end);
  if (s->engine) {
    srv_info *info = calloc(1, sizeof *info);
    if (info && srv_info_get(s->engine, info) == PROTO_OK) {
      gauge(b, "retro_documents", "gauge", "Live documents stored.", info->store.docs);
      gauge(b, "retro_chunks", "gauge", "Live chunks stored.", info->store.chunks);
      gauge(b, "retro_index_vectors", "gauge", "Vectors in the FAISS index.", info->index.ntotal);
      gauge(b, "retro_index_pending", "gauge", "Vectors waiting for index training.",
            info->index.pending);
      gauge(b, "retro_index_scans_total", "counter",
            "Index searches that scanned the index (one per query batch).", info->index.scans);
      proto_buf_addf(b,
                     "# HELP retro_index_scan_cpu_seconds CPU time of the scans of index searches "
                     "(the searching thread's CPU clock; one search in 16 below 4M floats).\n"
                     "# TYPE retro_index_scan_cpu_seconds summary\n"
                     "retro_index_scan_cpu_seconds_sum %.9f\n"
                     "retro_index_scan_cpu_seconds_count %llu\n",
                     info->index.timed_scan_cpu_seconds,
                     (unsigned long long)info->index.timed_scans);
      gauge(b, "retro_lexical_chunks", "gauge", "Chunks in the lexical (BM25) index.",
            info->lexical.chunks);
      gauge(b, "retro_lexical_bytes", "gauge", "Size of the lexical index file and its WAL.",
            info->lexical.bytes);
      gauge(b, "retro_store_map_bytes", "gauge", "LMDB map size in bytes.", info->store.map_bytes);
      gauge(b, "retro_store_used_bytes", "gauge",
            "LMDB pages in use (up to the last written page), in bytes.", info->store.used_bytes);
      gauge(b, "retro_ingested_documents_total", "counter", "Documents committed since start.",
            info->ingested_docs);
      gauge(b, "retro_ingested_chunks_total", "counter", "Chunks committed since start.",
            info->ingested_chunks);
      gauge(b, "retro_ingest_errors_total", "counter", "Documents that failed to ingest.",
            info->ingest_errors);
      gauge(b, "retro_ingest_unchanged_total", "counter",
            "Documents skipped by ingest: the same content hash was stored.",
            info->ingest_unchanged);
      gauge(b, "retro_ingest_embedded_chunks_total", "counter",
            "Chunks the ingest pipeline ran through the encoder.", info->ingest_embedded_chunks);
      gauge(b, "retro_storage_full_total", "counter",
            "Writes refused for lack of disk or LMDB map space (507).", info->storage_full);
      gauge(b, "retro_ingest_queue_chunks", "gauge", "Chunks waiting in the ingest pipeline.",
            info->ingest_queue);
      gauge(b, "retro_deleted_documents_total", "counter", "Documents deleted since start.",
            info->deleted_docs);
      gauge(b, "retro_searches_total", "counter", "Queries answered since start.", info->searches);
      gauge(b, "retro_query_embed_calls_total", "counter",
            "Encoder calls for search texts and embeddings (shared by concurrent requests).",
            info->query_embed_calls);
      gauge(b, "retro_query_embed_texts_total", "counter", "Texts embedded in those calls.",
            info->query_embed_texts);
      gauge(b, "retro_rerank_pairs_total", "counter",
            "(query, passage) pairs the reranker scored since start.", info->rerank_pairs);
      gauge(b, "retro_search_exact_phrases_total", "counter",
            "Hybrid searches whose whole text a chunk held word for word (that chunk put first).",
            info->exact_phrases);
      gauge(b, "retro_generations_total", "counter", "Generations finished since start.",
            info->generations);
      gauge(b, "retro_generated_tokens_total", "counter", "Tokens generated since start.",
            info->generated_tokens);
      gauge(b, "retro_generation_slots_busy", "gauge", "Decoder slots in use.",
            (unsigned long long)(info->gen_busy > 0 ? info->gen_busy : 0));
      gauge(b, "retro_generation_waiting", "gauge", "Generations waiting for a slot.",
            (unsigned long long)(info->gen_waiting > 0 ? info->gen_waiting : 0));
    }
    free(info);
  }
  resp->status = 200;
  resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
  if (b->failed) http_error(resp, PROTO_ENOMEM, "response too large");
}

static void h_doc_get(http_server *s, const http_match *m, http_response *resp) {
  if (no_engine(s, resp)) return;
  srv_document d;
  memset(&d, 0, sizeof d);
  proto_status st = srv_document_get(s->engine, m->id, 1, &d);
  if (st == PROTO_ENOTFOUND) {
    char msg[600];
    snprintf(msg, sizeof msg, "id: no document '%.512s'", m->id);
    http_error(resp, st, msg);
    return;
  }
  if (st != PROTO_OK) {
    engine_error(resp, st, "get document");
    return;
  }
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  view_document(&w, &d, 1);
  srv_document_free(&d);
  ok_json(resp, 200);
}

/* ?filter= of GET /v1/documents: form-encoded ('+' a space) JSON, checked
 * as a search's filter; *out NULL for none or {}. */
static proto_status list_filter(const char *raw, char **out, char *msg, size_t n) {
  *out = NULL;
  if (!raw) return PROTO_OK;
  size_t len = strlen(raw);
  char *plus = strdup(raw), *json = malloc(len + 1);
  proto_status st = plus && json ? PROTO_OK : PROTO_ENOMEM;
  if (st) snprintf(msg, n, "out of memory");
  for (size_t i = 0; plus && i < len; i++)
    if (plus[i] == '+') plus[i] = ' ';
  long got = st ? 0 : http_pct_decode(plus, len, json, len + 1);
  if (!st && got < 0) {
    st = PROTO_EINVAL;
    snprintf(msg, n, "filter: bad percent-encoding, NUL or invalid UTF-8");
  } else if (!st && (st = proto_filter_parse(json, (size_t)got, out, msg, n)) == PROTO_EJSON) {
    snprintf(msg, n, "filter: not valid JSON (percent-encode it)");
  }
  free(plus);
  free(json);
  return st;
}

static void h_doc_list(http_server *s, const http_request *rq, http_response *resp) {
  size_t max;
  uint64_t after, next_after = 0;
  char msg[256], *filter = NULL;
  proto_status st = http_list_args(rq->query_limit, rq->query_after, &max, &after, msg, sizeof msg);
  if (st == PROTO_OK) st = list_filter(rq->query_filter, &filter, msg, sizeof msg);
  int with_text = http_wait_value(rq->query_with_text) > 0;
  if (st != PROTO_OK) {
    http_error(resp, st, msg);
    return;
  }
  if (no_engine(s, resp)) {
    free(filter);
    return;
  }
  srv_document *d = calloc(max, sizeof *d);
  if (!d) {
    http_error(resp, PROTO_ENOMEM, "out of memory");
    free(filter);
    return;
  }
  size_t n = 0;
  st = srv_documents_list(s->engine, after, max, filter, with_text, d, &n, &next_after);
  free(filter);
  if (st != PROTO_OK) {
    free(d);
    engine_error(resp, st, "list documents");
    return;
  }
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  proto_jw_obj(&w);
  proto_jw_key(&w, "documents");
  proto_jw_arr(&w);
  for (size_t i = 0; i < n; i++) view_document_listed(&w, &d[i], with_text);
  proto_jw_arr_end(&w);
  /* the cursor for the next page: the last doc_num looked at, null at the end */
  proto_jw_key(&w, "next_after");
  if (next_after) proto_jw_uint(&w, next_after);
  else proto_jw_null(&w);
  proto_jw_obj_end(&w);
  for (size_t i = 0; i < n; i++) srv_document_free(&d[i]);
  free(d);
  ok_json(resp, 200);
}

static void h_doc_delete(http_server *s, const http_match *m, http_response *resp) {
  if (no_engine(s, resp)) return;
  if (s->cfg->read_only) {
    http_error(resp, PROTO_EFORBIDDEN, "server is read-only");
    return;
  }
  int found = 0;
  proto_status st = srv_delete(s->engine, m->id, &found);
  if (st != PROTO_OK) {
    engine_error(resp, st, "delete document");
    return;
  }
  if (!found) {
    char msg[600];
    snprintf(msg, sizeof msg, "id: no document '%.512s'", m->id);
    http_error(resp, PROTO_ENOTFOUND, msg);
    return;
  }
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  proto_jw_obj(&w);
  proto_jw_key(&w, "id");
  proto_jw_cstr(&w, m->id);
  proto_jw_key(&w, "deleted");
  proto_jw_bool(&w, 1);
  proto_jw_obj_end(&w);
  ok_json(resp, 200);
}

/* PATCH /v1/documents/{id}: {"metadata": {...}} merged into the stored
 * metadata (RFC 7396); answers the document as stored now, without text. */
static void h_doc_patch(http_server *s, const http_match *m, const http_request *rq,
                        http_response *resp) {
  char err[512];
  char *patch = NULL;
  proto_status st = proto_patch_parse(rq->body, rq->body_len, &patch, err, sizeof err);
  if (st != PROTO_OK) {
    http_error(resp, st, err);
    return;
  }
  srv_document d;
  memset(&d, 0, sizeof d);
  int found = 0;
  if (s->cfg->read_only) {
    http_error(resp, PROTO_EFORBIDDEN, "server is read-only");
  } else if (!no_engine(s, resp)) {
    st = srv_document_patch(s->engine, m->id, patch, &found, &d);
    if (st != PROTO_OK) {
      engine_error(resp, st, "update metadata");
    } else if (!found) {
      snprintf(err, sizeof err, "id: no document '%.480s'", m->id);
      http_error(resp, PROTO_ENOTFOUND, err);
    } else {
      proto_jw w;
      proto_jw_init(&w, &resp->body);
      view_document(&w, &d, 0);
      ok_json(resp, 200);
    }
  }
  srv_document_free(&d);
  free(patch);
}

/* {"<what>": N, "not_found": [...]}: found is NULL for a delete or update
 * by filter (n then counts what it matched). */
static void write_counted(const char *what, const proto_delete_req *req, const int *found, size_t n,
                          http_response *resp) {
  for (size_t i = 0; found && i < req->n; i++) n += found[i] != 0;
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  proto_jw_obj(&w);
  proto_jw_key(&w, what);
  proto_jw_uint(&w, n);
  proto_jw_key(&w, "not_found");
  proto_jw_arr(&w);
  for (size_t i = 0; found && i < req->n; i++)
    if (!found[i]) proto_jw_cstr(&w, req->ids[i]);
  proto_jw_arr_end(&w);
  proto_jw_obj_end(&w);
  ok_json(resp, 200);
}

/* Deletes req's documents on the engine and writes the answer. */
static void delete_documents(http_server *s, const proto_delete_req *req, http_response *resp) {
  proto_status st;
  if (req->filter_json) {
    size_t deleted = 0;
    if ((st = srv_delete_where(s->engine, req->filter_json, &deleted)))
      engine_error(resp, st, "delete documents");
    else write_counted("deleted", req, NULL, deleted, resp);
    return;
  }
  int *found = calloc(req->n, sizeof *found);
  if (!found) http_error(resp, PROTO_ENOMEM, "out of memory");
  else if ((st = srv_delete_many(s->engine, (const char *const *)req->ids, req->n, found)))
    engine_error(resp, st, "delete documents");
  else write_counted("deleted", req, found, 0, resp);
  free(found);
}

/* Merges req's metadata patch into its documents and writes the answer. */
static void update_documents(http_server *s, const proto_update_req *req, http_response *resp) {
  const proto_delete_req *which = &req->which;
  proto_status st;
  if (which->filter_json) {
    size_t updated = 0;
    if ((st = srv_update_where(s->engine, which->filter_json, req->metadata_patch, &updated)))
      engine_error(resp, st, "update documents");
    else write_counted("updated", which, NULL, updated, resp);
    return;
  }
  int *found = calloc(which->n, sizeof *found);
  if (!found) http_error(resp, PROTO_ENOMEM, "out of memory");
  else if ((st = srv_update_many(s->engine, (const char *const *)which->ids, which->n,
                                 req->metadata_patch, found)))
    engine_error(resp, st, "update documents");
  else write_counted("updated", which, found, 0, resp);
  free(found);
}

/* POST /v1/documents/update: the metadata patch merged into the listed
 * documents, or those whose metadata passes the filter, in one
 * transaction, all or none. */
static void h_docs_update(http_server *s, const http_request *rq, http_response *resp) {
  char err[512];
  proto_update_req req;
  proto_status st = proto_update_parse(rq->body, rq->body_len, &req, err, sizeof err);
  if (st != PROTO_OK) {
    http_error(resp, st, err);
    return;
  }
  if (s->cfg->read_only) http_error(resp, PROTO_EFORBIDDEN, "server is read-only");
  else if (!no_engine(s, resp)) update_documents(s, &req, resp);
  proto_update_free(&req);
}

/* POST /v1/documents/delete: the listed documents, or those whose metadata
 * passes the filter, go in one transaction, all or none; the answer counts
 * them and names the listed ids that were absent. */
static void h_docs_delete(http_server *s, const http_request *rq, http_response *resp) {
  char err[512];
  proto_delete_req req;
  proto_status st = proto_delete_parse(rq->body, rq->body_len, &req, err, sizeof err);
  if (st != PROTO_OK) {
    http_error(resp, st, err);
    return;
  }
  if (s->cfg->read_only) http_error(resp, PROTO_EFORBIDDEN, "server is read-only");
  else if (!no_engine(s, resp)) delete_documents(s, &req, resp);
  proto_delete_free(&req);
}

/* The most text bytes one POST /v1/documents/get answers with, as a
 * search's answer is bounded (SRV_SEARCH_MAX_TEXTS): beyond, a 422. */
#define GET_MAX_TEXT_BYTES ((size_t)64 << 20)

/* The documents found, in the order asked, and the ids that named none. */
static void write_got(const proto_get_req *req, const srv_document *d, const int *found,
                      http_response *resp) {
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  proto_jw_obj(&w);
  proto_jw_key(&w, "documents");
  proto_jw_arr(&w);
  for (size_t i = 0; i < req->n; i++)
    if (found[i]) view_document(&w, &d[i], req->with_text);
  proto_jw_arr_end(&w);
  proto_jw_key(&w, "not_found");
  proto_jw_arr(&w);
  for (size_t i = 0; i < req->n; i++)
    if (!found[i]) proto_jw_cstr(&w, req->ids[i]);
  proto_jw_arr_end(&w);
  proto_jw_obj_end(&w);
  ok_json(resp, 200);
}

static void get_documents(http_server *s, const proto_get_req *req, http_response *resp) {
  srv_document *d = calloc(req->n, sizeof *d);
  int *found = calloc(req->n, sizeof *found);
  proto_status st = d && found ? PROTO_OK : PROTO_ENOMEM;
  if (st != PROTO_OK) http_error(resp, st, "out of memory");
  else if ((st = srv_documents_get(s->engine, (const char *const *)req->ids, req->n, req->with_text,
                                   d, found)) != PROTO_OK)
    engine_error(resp, st, "get documents");
  size_t bytes = 0;
  for (size_t i = 0; st == PROTO_OK && i < req->n; i++) bytes += d[i].text_len;
  if (st == PROTO_OK && bytes > GET_MAX_TEXT_BYTES) {
    char msg[256];
    snprintf(msg, sizeof msg,
             "ids: the documents' texts come to %zu bytes, more than one answer holds (%zu): ask "
             "for fewer ids, or with_text false",
             bytes, GET_MAX_TEXT_BYTES);
    http_error(resp, PROTO_ERANGE, msg);
  } else if (st == PROTO_OK) {
    write_got(req, d, found, resp);
  }
  for (size_t i = 0; d && i < req->n; i++) srv_document_free(&d[i]);
  free(d);
  free(found);
}

/* POST /v1/documents/get: many documents by id, read in one transaction. */
static void h_docs_get(http_server *s, const http_request *rq, http_response *resp) {
  char err[512];
  proto_get_req req;
  proto_status st = proto_get_parse(rq->body, rq->body_len, &req, err, sizeof err);
  if (st != PROTO_OK) {
    http_error(resp, st, err);
    return;
  }
  if (!no_engine(s, resp)) get_documents(s, &req, resp);
  proto_get_free(&req);
}

static void write_tokens(proto_jw *w, const int32_t *t, uint32_t n) {
  proto_jw_arr(w);
  for (uint32_t i = 0; i < n; i++) proto_jw_int(w, t[i]);
  proto_jw_arr_end(w);
}

static void h_chunk(http_server *s, const http_match *m, http_response *resp) {
  if (no_engine(s, resp)) return;
  srv_chunk c;
  memset(&c, 0, sizeof c);
  proto_status st = srv_chunk_get(s->engine, m->num, &c);
  if (st == PROTO_ENOTFOUND) {
    char msg[64];
    snprintf(msg, sizeof msg, "id: no chunk %llu", (unsigned long long)m->num);
    http_error(resp, st, msg);
    return;
  }
  if (st != PROTO_OK) {
    engine_error(resp, st, "get chunk");
    return;
  }
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  proto_jw_obj(&w);
  proto_jw_key(&w, "chunk_id");
  proto_jw_uint(&w, c.c.chunk_id);
  proto_jw_key(&w, "doc_id");
  proto_jw_cstr(&w, c.doc_id);
  proto_jw_key(&w, "doc_num");
  proto_jw_uint(&w, c.c.doc_id);
  proto_jw_key(&w, "ordinal");
  proto_jw_uint(&w, c.c.ordinal);
  proto_jw_key(&w, "metadata");
  view_meta(&w, c.metadata_json);
  proto_jw_key(&w, "text");
  proto_jw_str(&w, c.c.text, c.c.text_len);
  proto_jw_key(&w, "continuation");
  proto_jw_str(&w, c.c.next_text, c.c.next_text_len);
  proto_jw_key(&w, "tokens");
  write_tokens(&w, c.c.tokens, c.c.n_tokens);
  proto_jw_key(&w, "continuation_tokens");
  write_tokens(&w, c.c.next_tokens, c.c.n_next_tokens);
  proto_jw_obj_end(&w);
  srv_chunk_free(&c);
  ok_json(resp, 200);
}

/* ---- search / embeddings -------------------------------------------------- */

/* Whether a query vector has no direction: by inner product it is as near
 * to every chunk as to any, so its hits would be arbitrary (as a blank query
 * text's would be). */
static int all_zeros(const float *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (v[i] != 0.0f) return 0;
  return 1;
}

static void h_search(http_server *s, const http_request *rq, http_response *resp) {
  proto_search_req r;
  char err[256];
  proto_status st = proto_search_parse(rq->body, rq->body_len, &r, err, sizeof err);
  if (st != PROTO_OK) {
    http_error(resp, st, err);
    return;
  }
  if (no_engine(s, resp)) goto leave;
  if (r.vector && r.dim != srv_engine_dim(s->engine)) {
    snprintf(err, sizeof err, "vector: has %zu numbers, the index holds %u-dimensional vectors",
             r.dim, srv_engine_dim(s->engine));
    http_error(resp, PROTO_EDIM, err);
    goto leave;
  }
  if (r.vector && all_zeros(r.vector, r.dim)) {
    http_error(resp, PROTO_ERANGE,
               "vector: all zeros: every chunk would score 0 (the index ranks by inner product)");
    goto leave;
  }
  srv_search_request q;
  memset(&q, 0, sizeof q);
  q.texts = (const char *const *)r.queries;
  q.text_lens = r.query_lens;
  q.n_texts = r.n_queries;
  q.vectors = r.vector;
  q.n_vectors = r.vector ? 1 : 0;
  q.like_chunk = r.like_chunk;
  q.k = r.k;
  q.exclude_docs = (const char *const *)r.exclude_docs;
  q.n_exclude = r.n_exclude;
  q.include_docs = (const char *const *)r.include_docs;
  q.n_include = r.n_include;
  q.nprobe = r.nprobe;
  q.ef_search = r.ef_search;
  q.with_text = r.with_text;
  q.with_vectors = r.with_vectors;
  q.filter_json = r.filter_json;
  q.mode = (srv_search_mode)r.mode;
  q.alpha = (float)r.alpha;
  q.group_size = r.group_by_doc ? r.group_size : 0;
  q.expand = r.expand;
  q.rerank = r.rerank;
  if (r.rerank < 0) /* true: the default count, at least k */
    q.rerank = r.k > SRV_RERANK_DEFAULT ? r.k : SRV_RERANK_DEFAULT;
  srv_search_result res;
  memset(&res, 0, sizeof res);
  st = srv_search(s->engine, &q, &res);
  if (st != PROTO_OK) {
    engine_error(resp, st, "search");
    goto leave;
  }
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  proto_jw_obj(&w);
  if (r.batched) {
    proto_jw_key(&w, "batch");
    proto_jw_arr(&w);
    for (size_t i = 0; i < res.nq; i++) {
      proto_jw_obj(&w);
      view_hits(&w, &res.queries[i], res.mode, r.group_by_doc, r.with_text);
      proto_jw_obj_end(&w);
    }
    proto_jw_arr_end(&w);
  } else {
    srv_hits none = {0};
    view_hits(&w, res.nq > 0 ? &res.queries[0] : &none, res.mode, r.group_by_doc, r.with_text);
  }
  proto_jw_key(&w, "k");
  proto_jw_int(&w, r.k);
  proto_jw_key(&w, "mode");
  proto_jw_cstr(&w, srv_mode_name(res.mode));
  proto_jw_obj_end(&w);
  srv_search_result_free(&res);
  ok_json(resp, 200);
leave:
  proto_search_free(&r);
}

/* Index order of n relevances, best first (ties: the earlier document). */
static size_t *by_relevance(const float *rel, size_t n) {
  size_t *o = malloc((n ? n : 1) * sizeof *o);
  if (!o) return NULL;
  for (size_t i = 0; i < n; i++) { /* insertion sort: n <= 1,000 */
    size_t j = i;
    for (; j > 0 && rel[o[j - 1]] < rel[i]; j--) o[j] = o[j - 1];
    o[j] = i;
  }
  return o;
}

/* POST /v1/rerank: the reranker's relevance of each document to the query,
 * best first, in Cohere's and Jina's shape. */
static void h_rerank(http_server *s, const http_request *rq, http_response *resp) {
  proto_rerank_req r;
  char err[256];
  proto_status st = proto_rerank_parse(rq->body, rq->body_len, &r, err, sizeof err);
  if (st != PROTO_OK) {
    http_error(resp, st, err);
    return;
  }
  float *rel = NULL;
  size_t *order = NULL;
  if (no_engine(s, resp)) goto leave;
  if (r.model && s->reranker_name[0] &&
      model_refused(s, r.model, s->reranker_name, "reranks", resp))
    goto leave;
  rel = malloc(r.n * sizeof *rel);
  if (!rel) {
    http_error(resp, PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  st = srv_rerank(s->engine, r.query, r.query_len, (const char *const *)r.documents, r.lens, r.n,
                  rel);
  if (st != PROTO_OK) {
    engine_error(resp, st, "rerank");
    goto leave;
  }
  if (!(order = by_relevance(rel, r.n))) {
    http_error(resp, PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  size_t keep = r.top_n > 0 && (size_t)r.top_n < r.n ? (size_t)r.top_n : r.n;
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  proto_jw_obj(&w);
  proto_jw_key(&w, "model");
  proto_jw_cstr(&w, s->reranker_name);
  proto_jw_key(&w, "results");
  proto_jw_arr(&w);
  for (size_t i = 0; i < keep; i++) {
    size_t d = order[i];
    proto_jw_obj(&w);
    proto_jw_key(&w, "index");
    proto_jw_uint(&w, d);
    proto_jw_key(&w, "relevance_score");
    proto_jw_float(&w, rel[d]);
    if (r.return_documents) {
      proto_jw_key(&w, "document");
      proto_jw_obj(&w);
      proto_jw_key(&w, "text");
      proto_jw_str(&w, r.documents[d], r.lens[d]);
      proto_jw_obj_end(&w);
    }
    proto_jw_obj_end(&w);
  }
  proto_jw_arr_end(&w);
  proto_jw_obj_end(&w);
  ok_json(resp, 200);
leave:
  free(rel);
  free(order);
  proto_rerank_free(&r);
}

/* Puts n floats in little-endian byte order in place (the order of
 * encoding_format "base64"; a no-op on little-endian hosts). */
static void float_le_bytes(float *v, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], 4);
    u = __builtin_bswap32(u);
    memcpy(&v[i], &u, 4);
  }
#else
  (void)v;
  (void)n;
#endif
}

/* 1 (resp filled with a 422) when an input has more tokens than the encoder
 * reads: it would be embedded from its start only, silently. */
static int input_too_long(http_server *s, const proto_embed_req *r, http_response *resp) {
  bert *enc = srv_engine_encoder(s->engine);
  const tok *t = bert_tokenizer(enc);
  long limit = bert_max_tokens(enc) - 2; /* [CLS] ... [SEP] or <s> ... </s> */
  const char *prefix = r->as_query ? bert_query_prefix(enc) : "";
  if (*prefix) { /* a query goes behind the encoder's prefix (counted apart: one token more at most) */
    int32_t *ids = NULL;
    size_t n = 0;
    if (tok_encode(t, prefix, strlen(prefix), &ids, &n) == PROTO_OK) limit -= (long)n;
    free(ids);
  }
  for (size_t i = 0; i < r->n; i++) {
    if ((long)r->lens[i] <= limit) continue; /* a token is at least one byte */
    int32_t *ids = NULL;
    size_t n = 0;
    if (tok_encode(t, r->inputs[i], r->lens[i], &ids, &n) != PROTO_OK)
      continue; /* srv_embed says */
    free(ids);
    if ((long)n <= limit) continue;
    char err[256];
    snprintf(err, sizeof err,
             "input[%zu]: %zu tokens, more than the encoder's limit of %ld (%ld with its 2 "
             "special tokens%s); send \"truncate\": true to embed its first %ld tokens",
             i, n, limit, (long)bert_max_tokens(enc), *prefix ? " and its query prefix" : "",
             limit);
    http_error(resp, PROTO_ERANGE, err);
    return 1;
  }
  return 0;
}

static void h_embed(http_server *s, const http_request *rq, http_response *resp) {
  proto_embed_req r;
  char err[256];
  float *vec = NULL;
  proto_status st = proto_embed_parse(rq->body, rq->body_len, &r, err, sizeof err);
  if (st != PROTO_OK) {
    http_error(resp, st, err);
    return;
  }
  if (no_engine(s, resp)) goto leave;
  if (model_refused(s, r.model, s->encoder_name, "embeds", resp)) goto leave;
  uint32_t dim = srv_engine_dim(s->engine);
  if (r.dimensions && (uint32_t)r.dimensions != dim) {
    /* the encoder was not trained to be cut short (no Matryoshka loss) */
    snprintf(err, sizeof err, "dimensions: this server's embeddings have %u dimensions, not %ld",
             dim, r.dimensions);
    http_error(resp, PROTO_ERANGE, err);
    goto leave;
  }
  if (!r.truncate && input_too_long(s, &r, resp)) goto leave;
  vec = malloc(r.n * dim * sizeof *vec);
  if (!vec) {
    http_error(resp, PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  uint64_t ntok = 0;
  st = srv_embed(s->engine, (const char *const *)r.inputs, r.lens, r.n, r.as_query, vec, &ntok);
  if (st != PROTO_OK) {
    engine_error(resp, st, "embeddings");
    goto leave;
  }
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  proto_jw_obj(&w);
  proto_jw_key(&w, "object");
  proto_jw_cstr(&w, "list");
  proto_jw_key(&w, "data");
  proto_jw_arr(&w);
  for (size_t i = 0; i < r.n; i++) {
    proto_jw_obj(&w);
    proto_jw_key(&w, "object");
    proto_jw_cstr(&w, "embedding");
    proto_jw_key(&w, "index");
    proto_jw_uint(&w, i);
    proto_jw_key(&w, "embedding");
    if (r.base64) {
      float_le_bytes(vec + i * dim, dim);
      proto_jw_base64(&w, vec + i * dim, dim * sizeof *vec);
    } else {
      proto_jw_arr(&w);
      for (uint32_t j = 0; j < dim; j++) proto_jw_float(&w, vec[i * dim + j]);
      proto_jw_arr_end(&w);
    }
    proto_jw_obj_end(&w);
  }
  proto_jw_arr_end(&w);
  proto_jw_key(&w, "model");
  proto_jw_cstr(&w, s->encoder_name);
  proto_jw_key(&w, "usage");
  proto_jw_obj(&w);
  proto_jw_key(&w, "prompt_tokens");
  proto_jw_uint(&w, ntok);
  proto_jw_key(&w, "total_tokens");
  proto_jw_uint(&w, ntok);
  proto_jw_obj_end(&w);
  proto_jw_obj_end(&w);
  ok_json(resp, 200);
leave:
  free(vec);
  proto_embed_free(&r);
}

/* ---- ingest --------------------------------------------------------------- */

struct http_ingest {
  http_server *s;
  int ndjson;
  srv_ingest *session;
  int force;          /* ?force=true */
  pthread_mutex_t mu; /* guards everything below: acks arrive on the
                                  engine's writer thread */
  proto_buf results;  /* the "results" array body (without brackets) */
  proto_jw jw;
  size_t n_results;
  int truncated;
  uint64_t n_ok, n_err, n_chunks, n_not_indexed, n_unchanged;
  proto_status first_st;
  char first_msg[256];
  uint64_t *fifo; /* item numbers of queued documents, ack order */
  size_t fifo_head, fifo_len, fifo_cap;
  /* pending batch (parsed, not yet given to the engine) */
  proto_doc *pending;
  uint64_t *pending_no;
  size_t n_pending, cap_pending, pending_bytes;
  http_lines lines;
  uint64_t items; /* documents seen (numbering for JSON form) */
  int aborted;    /* http_ingest_abort: no more documents */
};

static void record_error(http_ingest *in, uint64_t no, const char *id, proto_status st,
                         const char *msg) {
  in->n_err++;
  if (in->first_st == PROTO_OK) {
    in->first_st = st;
    snprintf(in->first_msg, sizeof in->first_msg, "%s", msg);
  }
  proto_jw_obj(&in->jw);
  proto_jw_key(&in->jw, in->ndjson ? "line" : "index");
  proto_jw_uint(&in->jw, no);
  if (id) {
    proto_jw_key(&in->jw, "id");
    proto_jw_cstr(&in->jw, id);
  }
  proto_jw_key(&in->jw, "status");
  proto_jw_cstr(&in->jw, "error");
  proto_jw_key(&in->jw, "error");
  proto_jw_obj(&in->jw);
  proto_jw_key(&in->jw, "code");
  proto_jw_cstr(&in->jw, proto_status_name(st));
  proto_jw_key(&in->jw, "message");
  proto_jw_cstr(&in->jw, msg);
  proto_jw_obj_end(&in->jw);
  proto_jw_obj_end(&in->jw);
  in->n_results++;
}

static void on_ack(void *ctx, const srv_ack *ack) {
  http_ingest *in = ctx;
  pthread_mutex_lock(&in->mu);
  uint64_t no = 0;
  if (in->fifo_head < in->fifo_len) no = in->fifo[in->fifo_head++];
  if (ack->status != PROTO_OK) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s%s%s", proto_strerror(ack->status),
             ack->message && *ack->message ? ": " : "", ack->message ? ack->message : "");
    record_error(in, no, ack->id, ack->status, msg);
  } else {
    in->n_ok++;
    in->n_unchanged += ack->unchanged != 0;
    in->n_chunks += ack->n_chunks;
    if (!ack->indexed) in->n_not_indexed++;
    if (in->n_results < INGEST_MAX_RESULTS) {
      proto_jw_obj(&in->jw);
      proto_jw_key(&in->jw, in->ndjson ? "line" : "index");
      proto_jw_uint(&in->jw, no);
      proto_jw_key(&in->jw, "id");
      proto_jw_cstr(&in->jw, ack->id);
      proto_jw_key(&in->jw, "status");
      proto_jw_cstr(&in->jw, ack->unchanged ? "unchanged" : "ok");
      proto_jw_key(&in->jw, "doc_num");
      proto_jw_uint(&in->jw, ack->doc_num);
      proto_jw_key(&in->jw, "chunks");
      proto_jw_uint(&in->jw, ack->n_chunks);
      proto_jw_key(&in->jw, "indexed");
      proto_jw_bool(&in->jw, ack->indexed);
      proto_jw_obj_end(&in->jw);
      in->n_results++;
    } else {
      in->truncated = 1;
    }
  }
  pthread_mutex_unlock(&in->mu);
}

proto_status http_ingest_new(http_server *s, int ndjson, int force, http_ingest **out) {
  http_ingest *in = calloc(1, sizeof *in);
  if (!in) return PROTO_ENOMEM;
  in->s = s;
  in->force = force;
  in->ndjson = ndjson;
  pthread_mutex_init(&in->mu, NULL);
  proto_jw_init(&in->jw, &in->results);
  proto_jw_arr(&in->jw); /* depth 1: commas handled by the writer */
  in->lines.max_line = (size_t)s->cfg->max_body;
  *out = in;
  return PROTO_OK;
}

static proto_status pending_push(http_ingest *in, proto_doc *d, uint64_t no) {
  if (in->n_pending == in->cap_pending) {
    size_t cap = in->cap_pending ? in->cap_pending * 2 : 16;
    proto_doc *p = realloc(in->pending, cap * sizeof *p);
    if (!p) return PROTO_ENOMEM;
    in->pending = p;
    uint64_t *q = realloc(in->pending_no, cap * sizeof *q);
    if (!q) return PROTO_ENOMEM;
    in->pending_no = q;
    in->cap_pending = cap;
  }
  in->pending[in->n_pending] = *d;
  in->pending_no[in->n_pending] = no;
  in->n_pending++;
  in->pending_bytes += d->text_len;
  memset(d, 0, sizeof *d);
  return PROTO_OK;
}

static proto_status on_line(void *ctx, const char *line, size_t len, uint64_t no, int too_long) {
  http_ingest *in = ctx;
  char where[40], err[300];
  snprintf(where, sizeof where, "line %llu", (unsigned long long)no);
  in->items++;
  if (too_long) {
    snprintf(err, sizeof err, "%s: longer than %ld bytes (max-body)", where, in->s->cfg->max_body);
    pthread_mutex_lock(&in->mu);
    record_error(in, no, NULL, PROTO_ETOOBIG, err);
    pthread_mutex_unlock(&in->mu);
    return PROTO_OK;
  }
  proto_doc d;
  proto_status st = proto_doc_parse(line, len, where, &d, err, sizeof err);
  if (st == PROTO_ENOMEM) return st;
  if (st != PROTO_OK) {
    pthread_mutex_lock(&in->mu);
    record_error(in, no, NULL, st, err);
    pthread_mutex_unlock(&in->mu);
    return PROTO_OK;
  }
  st = pending_push(in, &d, no);
  proto_doc_free(&d);
  return st;
}

proto_status http_ingest_feed(http_ingest *in, const char *data, size_t len, int *batch_full) {
  proto_status st = http_lines_feed(&in->lines, data, len, on_line, in, NULL);
  *batch_full = in->n_pending >= INGEST_BATCH_DOCS || in->pending_bytes >= INGEST_BATCH_BYTES;
  return st;
}

proto_status http_ingest_parse_all(http_ingest *in, const char *body, size_t len, char *err,
                                   size_t errlen) {
  proto_doc *docs = NULL;
  size_t n = 0;
  proto_status st = proto_docs_parse(body, len, 100000, &docs, &n, err, errlen);
  if (st != PROTO_OK) return st;
  for (size_t i = 0; i < n; i++) {
    if (st == PROTO_OK) st = pending_push(in, &docs[i], i);
    proto_doc_free(&docs[i]);
  }
  free(docs);
  if (st != PROTO_OK) snprintf(err, errlen, "documents: out of memory");
  return st;
}

proto_status http_ingest_submit(http_ingest *in) {
  proto_status st = PROTO_OK;
  if (!in->s->engine) {
    for (size_t i = 0; i < in->n_pending; i++) proto_doc_free(&in->pending[i]);
    in->n_pending = 0;
    in->pending_bytes = 0;
    return PROTO_EUNAVAIL;
  }
  if (!in->session && in->n_pending) {
    srv_ingest_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.on_ack = on_ack;
    cb.ctx = in;
    cb.force = in->force;
    st = srv_ingest_begin(in->s->engine, &cb, &in->session);
    if (st != PROTO_OK) {
      for (size_t i = 0; i < in->n_pending; i++) proto_doc_free(&in->pending[i]);
      in->n_pending = 0;
      return st;
    }
  }
  for (size_t i = 0; i < in->n_pending; i++) {
    proto_doc *d = &in->pending[i];
    srv_doc sd = {d->id, d->text, d->text_len, d->metadata_json};
    /* the item number goes in first: its ack may arrive before add returns */
    pthread_mutex_lock(&in->mu);
    if (in->fifo_len == in->fifo_cap) {
      if (in->fifo_head > 0) { /* compact */
        memmove(in->fifo, in->fifo + in->fifo_head,
                (in->fifo_len - in->fifo_head) * sizeof *in->fifo);
        in->fifo_len -= in->fifo_head;
        in->fifo_head = 0;
      }
      if (in->fifo_len == in->fifo_cap) {
        size_t cap = in->fifo_cap ? in->fifo_cap * 2 : 64;
        uint64_t *f = realloc(in->fifo, cap * sizeof *f);
        if (!f) {
          pthread_mutex_unlock(&in->mu);
          st = PROTO_ENOMEM;
          break;
        }
        in->fifo = f;
        in->fifo_cap = cap;
      }
    }
    in->fifo[in->fifo_len++] = in->pending_no[i];
    pthread_mutex_unlock(&in->mu);
    proto_status a = srv_ingest_add(in->session, &sd);
    if (a != PROTO_OK) {
      char msg[300];
      snprintf(msg, sizeof msg, "%s %llu: %s: %s", in->ndjson ? "line" : "documents",
               (unsigned long long)in->pending_no[i], proto_strerror(a), srv_last_error());
      pthread_mutex_lock(&in->mu);
      in->fifo_len--; /* not queued: no ack will come */
      record_error(in, in->pending_no[i], d->id, a, msg);
      pthread_mutex_unlock(&in->mu);
    }
  }
  for (size_t i = 0; i < in->n_pending; i++) proto_doc_free(&in->pending[i]);
  in->n_pending = 0;
  in->pending_bytes = 0;
  return st;
}

void http_ingest_finish(http_ingest *in, http_response *resp) {
  proto_status st = PROTO_OK;
  if (in->ndjson && !in->aborted) st = http_lines_finish(&in->lines, on_line, in);
  if (st == PROTO_OK && in->n_pending) st = http_ingest_submit(in);
  if (st == PROTO_EUNAVAIL && !in->s->engine) {
    http_error(resp, st, "engine not loaded");
    return;
  }
  if (in->session) {
    srv_ingest_end(in->session, NULL); /* waits for every ack (durable) and the index */
    in->session = NULL;
  }
  if (st != PROTO_OK) {
    http_error(resp, st, "ingest failed");
    return;
  }
  pthread_mutex_lock(&in->mu);
  proto_jw_arr_end(&in->jw);
  proto_buf *b = &resp->body;
  proto_buf_free(b);
  proto_jw w;
  proto_jw_init(&w, b);
  proto_jw_obj(&w);
  if (in->n_err) {
    proto_jw_key(&w, "error");
    proto_jw_obj(&w);
    proto_jw_key(&w, "code");
    proto_jw_cstr(&w, proto_status_name(in->first_st));
    char msg[320];
    snprintf(msg, sizeof msg, "%llu of %llu documents failed; first: %s",
             (unsigned long long)in->n_err, (unsigned long long)(in->n_err + in->n_ok),
             in->first_msg);
    proto_jw_key(&w, "message");
    proto_jw_cstr(&w, msg);
    proto_jw_obj_end(&w);
  }
  proto_jw_key(&w, "documents");
  proto_jw_uint(&w, in->n_ok);
  proto_jw_key(&w, "unchanged");
  proto_jw_uint(&w, in->n_unchanged);
  proto_jw_key(&w, "chunks");
  proto_jw_uint(&w, in->n_chunks);
  proto_jw_key(&w, "errors");
  proto_jw_uint(&w, in->n_err);
  proto_jw_key(&w, "indexed");
  proto_jw_bool(&w, in->n_not_indexed == 0);
  proto_jw_key(&w, "truncated");
  proto_jw_bool(&w, in->truncated);
  proto_jw_key(&w, "results");
  proto_jw_raw(&w, in->results.data ? in->results.data : "[]",
               in->results.len ? in->results.len : 2);
  proto_jw_obj_end(&w);
  int status = 200;
  if (in->n_err) {
    status = api_http_status(in->first_st);
    if (status >= 500 && in->n_ok && status != 507) status = 500; /* 507: storage ran out */
  } else if (in->n_ok == 0 && in->items == 0 && in->ndjson) {
    /* an empty NDJSON body is fine: nothing to do */
  }
  pthread_mutex_unlock(&in->mu);
  ok_json(resp, status);
}

void http_ingest_abort(http_ingest *in, proto_status st, const char *msg) {
  for (size_t i = 0; i < in->n_pending; i++) proto_doc_free(&in->pending[i]);
  in->n_pending = 0;
  in->pending_bytes = 0;
  in->aborted = 1;
  pthread_mutex_lock(&in->mu);
  char m[300];
  snprintf(m, sizeof m, "body: %s (after %s %llu)", msg, in->ndjson ? "line" : "item",
           (unsigned long long)in->items);
  record_error(in, in->items, NULL, st, m);
  pthread_mutex_unlock(&in->mu);
}

void http_ingest_free(http_ingest *in) {
  if (!in) return;
  if (in->session) srv_ingest_end(in->session, NULL);
  for (size_t i = 0; i < in->n_pending; i++) proto_doc_free(&in->pending[i]);
  free(in->pending);
  free(in->pending_no);
  free(in->fifo);
  http_lines_free(&in->lines);
  proto_buf_free(&in->results);
  pthread_mutex_destroy(&in->mu);
  free(in);
}

static void h_docs(http_server *s, const http_request *rq, http_response *resp) {
  int kind = http_body_kind(HTTP_R_DOCS, rq->content_type);
  if (kind < 0) {
    http_error(resp, PROTO_EMEDIA, "Content-Type: use application/json or application/x-ndjson");
    return;
  }
  if (s->cfg->read_only) {
    http_error(resp, PROTO_EFORBIDDEN, "server is read-only");
    return;
  }
  char err[256];
  if (http_wait_value(rq->query_wait) < 0) { /* every answer waits anyway: see http.h */
    http_query_check(HTTP_R_DOCS, "wait", rq->query_wait, err, sizeof err);
    http_error(resp, PROTO_EINVAL, err);
    return;
  }
  if (http_wait_value(rq->query_force) < 0) {
    http_query_check(HTTP_R_DOCS, "force", rq->query_force, err, sizeof err);
    http_error(resp, PROTO_EINVAL, err);
    return;
  }
  http_ingest *in = NULL;
  proto_status st = http_ingest_new(s, kind == 1, http_wait_value(rq->query_force) > 0, &in);
  if (st != PROTO_OK) {
    http_error(resp, st, "out of memory");
    return;
  }
  if (kind == 1) {
    size_t off = 0;
    while (off < rq->body_len) { /* feed in slices, submitting full batches */
      size_t n = rq->body_len - off < 65536 ? rq->body_len - off : 65536;
      int full = 0;
      st = http_ingest_feed(in, rq->body + off, n, &full);
      if (st != PROTO_OK) break;
      if (full && (st = http_ingest_submit(in)) != PROTO_OK) break;
      off += n;
    }
    if (st == PROTO_EUNAVAIL) {
      http_error(resp, st, "engine not loaded");
      goto leave;
    }
    if (st != PROTO_OK) {
      http_error(resp, st, "ingest failed");
      goto leave;
    }
  } else {
    st = http_ingest_parse_all(in, rq->body, rq->body_len, err, sizeof err);
    if (st != PROTO_OK) {
      http_error(resp, st, err);
      goto leave;
    }
  }
  http_ingest_finish(in, resp);
leave:
  http_ingest_free(in);
}

/* ---- backup ---------------------------------------------------------------- */

/* POST /v1/admin/backup: a backup (backup.c) into a new directory under
 * --backup-dir, named by the time; never a path the client chose. */
static void h_backup(http_server *s, const http_request *rq, http_response *resp) {
  static atomic_uint seq;
  if (no_engine(s, resp)) return;
  if (!s->cfg->backup_dir) {
    http_error(resp, PROTO_EUNAVAIL, "backups are off: start the server with --backup-dir DIR");
    return;
  }
  if (rq->body_len) { /* nothing to choose: only {} */
    json_t *v = json_loadb(rq->body, rq->body_len, 0, NULL);
    int empty = json_is_object(v) && json_object_size(v) == 0;
    json_decref(v);
    if (!empty) {
      http_error(resp, PROTO_EUNKNOWN_FIELD,
                 "body: POST /v1/admin/backup takes no fields ({} or none)");
      return;
    }
  }
  char name[64], path[4200], when[32];
  time_t now = time(NULL);
  struct tm tm;
  strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", gmtime_r(&now, &tm));
  snprintf(name, sizeof name, "backup-%s-%u-%u", when, (unsigned)getpid(),
           atomic_fetch_add(&seq, 1));
  snprintf(path, sizeof path, "%s/%s", s->cfg->backup_dir, name);
  mkdir(s->cfg->backup_dir, 0755);
  double t0 = proto_now();
  char *manifest = NULL;
  proto_status st = srv_backup(srv_engine_store(s->engine), path, &manifest);
  if (st != PROTO_OK) {
    engine_error(resp, st, "backup");
    return;
  }
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  proto_jw_obj(&w);
  proto_jw_key(&w, "backup");
  proto_jw_cstr(&w, name);
  proto_jw_key(&w, "path");
  proto_jw_cstr(&w, path);
  proto_jw_key(&w, "seconds");
  proto_jw_num(&w, proto_now() - t0);
  proto_jw_key(&w, "manifest");
  proto_jw_raw(&w, manifest, strlen(manifest));
  proto_jw_obj_end(&w);
  free(manifest);
  ok_json(resp, 200);
}

/* ---- completions ---------------------------------------------------------- */

void http_gen_request(const proto_complete_req *req, srv_gen_request *rq) {
  srv_gen_request_init(rq);
  rq->prompt = req->prompt;
  rq->prompt_len = req->prompt_len;
  rq->max_tokens = req->max_tokens;
  rq->temperature = req->temperature;
  rq->top_p = req->top_p;
  rq->top_k = req->top_k;
  rq->seed = req->seed;
  rq->has_seed = req->has_seed;
  rq->stop = (const char *const *)req->stop;
  rq->stop_lens = req->stop_lens;
  rq->n_stop = req->n_stop;
  rq->logprobs = req->logprobs;
  rq->retrieval = req->retrieval;
  rq->k = req->k;
  rq->exclude_docs = (const char *const *)req->exclude_docs;
  rq->n_exclude = req->n_exclude;
  rq->include_docs = (const char *const *)req->include_docs;
  rq->n_include = req->n_include;
  rq->filter_json = req->filter_json;
  rq->retrieval_mode = (srv_search_mode)req->retrieval_mode;
}

proto_status http_complete_prepare(http_server *s, const http_request *rq, int chat,
                                   proto_complete_req *req, http_response *resp) {
  char err[256];
  proto_status st = chat ? proto_chat_parse(rq->body, rq->body_len, req, err, sizeof err)
                         : proto_complete_parse(rq->body, rq->body_len, req, err, sizeof err);
  if (st != PROTO_OK) {
    http_error(resp, st, err);
    return st;
  }
  if (model_refused(s, req->model, s->model_name, "generates", resp)) {
    proto_complete_free(req);
    return PROTO_ENOTFOUND;
  }
  if (!s->engine || !srv_engine_decoder(s->engine)) {
    http_error(resp, PROTO_EUNAVAIL,
               s->engine ? "no decoder loaded (start with --decoder DIR)" : "engine not loaded");
    proto_complete_free(req);
    return PROTO_EUNAVAIL;
  }
  if (chat && http_chat_apply(s->chat, req) != PROTO_OK) {
    http_error(resp, PROTO_ENOMEM, "out of memory");
    proto_complete_free(req);
    return PROTO_ENOMEM;
  }
  return PROTO_OK;
}

typedef struct gen_ctx {
  http_server *s;
  const proto_complete_req *req;
  http_sink *sink;
  int gone;
  int sent_role; /* chat stream: the first delta carried the role */
  char id[48];
  long long created;
  proto_buf ev;
} gen_ctx;

static void ev_head(gen_ctx *g, proto_jw *w) {
  proto_jw_obj(w);
  proto_jw_key(w, "id");
  proto_jw_cstr(w, g->id);
  proto_jw_key(w, "object");
  proto_jw_cstr(w, !g->req->chat    ? "text_completion"
                   : g->req->stream ? "chat.completion.chunk"
                                    : "chat.completion");
  proto_jw_key(w, "created");
  proto_jw_int(w, g->created);
  proto_jw_key(w, "model");
  proto_jw_cstr(w, g->s->model_name);
}

/* One streamed choice: completions' {"text"}, chat's {"delta"} (with the
 * role in the stream's first delta). */
static void ev_choice(gen_ctx *g, proto_jw *w, const char *text, size_t len, const char *finish) {
  proto_jw_key(w, "choices");
  proto_jw_arr(w);
  proto_jw_obj(w);
  if (g->req->chat) {
    proto_jw_key(w, "delta");
    proto_jw_obj(w);
    if (!g->sent_role) {
      proto_jw_key(w, "role");
      proto_jw_cstr(w, "assistant");
      g->sent_role = 1;
    }
    if (len || !finish) {
      proto_jw_key(w, "content");
      proto_jw_str(w, text, len);
    }
    proto_jw_obj_end(w);
  } else {
    proto_jw_key(w, "text");
    proto_jw_str(w, text, len);
  }
  proto_jw_key(w, "index");
  proto_jw_int(w, 0);
  proto_jw_key(w, "logprobs");
  proto_jw_null(w);
  proto_jw_key(w, "finish_reason");
  proto_jw_cstr(w, finish);
  proto_jw_obj_end(w);
  proto_jw_arr_end(w);
}

static int ev_send(gen_ctx *g) {
  proto_buf_add(&g->ev, "\n\n", 2);
  int r = g->ev.failed ? 1 : g->sink->write(g->sink->ctx, g->ev.data, g->ev.len);
  g->ev.len = 0;
  if (r) g->gone = 1;
  return r;
}

static int gen_on_text(void *ctx, const char *piece, size_t len) {
  gen_ctx *g = ctx;
  if (!g->req->stream || g->gone) return g->gone;
  proto_buf_adds(&g->ev, "data: ");
  proto_jw w;
  proto_jw_init(&w, &g->ev);
  ev_head(g, &w);
  ev_choice(g, &w, piece, len, NULL);
  proto_jw_obj_end(&w);
  return ev_send(g);
}

static void gen_on_neighbours(void *ctx, const srv_gen_chunk *c) {
  gen_ctx *g = ctx;
  if (!g->req->stream || g->gone) return;
  proto_buf_adds(&g->ev, "data: ");
  proto_jw w;
  proto_jw_init(&w, &g->ev);
  ev_head(g, &w);
  ev_choice(g, &w, "", 0, NULL);
  proto_jw_key(&w, "retro");
  proto_jw_obj(&w);
  proto_jw_key(&w, "chunks");
  proto_jw_arr(&w);
  view_gen_chunk(&w, c);
  proto_jw_arr_end(&w);
  proto_jw_obj_end(&w);
  proto_jw_obj_end(&w);
  ev_send(g);
}

static int gen_should_cancel(void *ctx) {
  gen_ctx *g = ctx;
  return g->gone;
}

static void write_usage(proto_jw *w, const srv_gen_result *res) {
  proto_jw_key(w, "usage");
  proto_jw_obj(w);
  proto_jw_key(w, "prompt_tokens");
  proto_jw_int(w, res->prompt_tokens);
  proto_jw_key(w, "completion_tokens");
  proto_jw_int(w, res->completion_tokens);
  proto_jw_key(w, "total_tokens");
  proto_jw_int(w, res->prompt_tokens + res->completion_tokens);
  proto_jw_obj_end(w);
}

static void write_retro(proto_jw *w, const proto_complete_req *req, const srv_gen_result *res,
                        int with_chunks) {
  proto_jw_key(w, "retro");
  proto_jw_obj(w);
  proto_jw_key(w, "retrieval");
  proto_jw_bool(w, req->retrieval);
  proto_jw_key(w, "seed");
  proto_jw_uint(w, res->seed);
  if (with_chunks) {
    proto_jw_key(w, "chunks");
    proto_jw_arr(w);
    for (size_t i = 0; i < res->n_chunks; i++) view_gen_chunk(w, &res->chunks[i]);
    proto_jw_arr_end(w);
  }
  proto_jw_key(w, "timings");
  proto_jw_obj(w);
  proto_jw_key(w, "queue_s");
  proto_jw_num(w, res->queue_s);
  proto_jw_key(w, "first_token_s");
  proto_jw_num(w, res->first_token_s);
  proto_jw_key(w, "retrieval_s");
  proto_jw_num(w, res->retrieval_s);
  proto_jw_key(w, "total_s");
  proto_jw_num(w, res->total_s);
  proto_jw_obj_end(w);
  proto_jw_obj_end(w);
}

static void write_logprobs(proto_jw *w, const srv_gen_result *res) {
  proto_jw_obj(w);
  proto_jw_key(w, "tokens");
  proto_jw_arr(w);
  for (size_t i = 0; i < res->n_tokens; i++)
    proto_jw_str(w, res->tokens[i].piece, res->tokens[i].piece_len);
  proto_jw_arr_end(w);
  proto_jw_key(w, "token_logprobs");
  proto_jw_arr(w);
  for (size_t i = 0; i < res->n_tokens; i++) proto_jw_float(w, res->tokens[i].logprob);
  proto_jw_arr_end(w);
  proto_jw_key(w, "top_logprobs");
  proto_jw_arr(w);
  for (size_t i = 0; i < res->n_tokens; i++) {
    proto_jw_obj(w);
    for (int j = 0; j < res->tokens[i].n_top && j < 5; j++) {
      const char *p = res->tokens[i].top_pieces[j];
      proto_buf tmp;
      proto_buf_init(&tmp);
      proto_buf_add_utf8_lossy(&tmp, p ? p : "", p ? strlen(p) : 0);
      proto_jw_key(w, tmp.data ? tmp.data : "");
      proto_buf_free(&tmp);
      proto_jw_float(w, res->tokens[i].top_logprobs[j]);
    }
    proto_jw_obj_end(w);
  }
  proto_jw_arr_end(w);
  proto_jw_key(w, "text_offset");
  proto_jw_arr(w);
  for (size_t i = 0; i < res->n_tokens; i++) proto_jw_uint(w, res->tokens[i].text_offset);
  proto_jw_arr_end(w);
  proto_jw_obj_end(w);
}

void http_complete_run(http_server *s, const proto_complete_req *req, http_sink *sink,
                       http_response *resp) {
  if (req->echo) {
    http_score_run(s, req, resp);
    return;
  }
  gen_ctx g;
  memset(&g, 0, sizeof g);
  g.s = s;
  g.req = req;
  g.sink = sink;
  g.created = (long long)time(NULL);
  static atomic_ullong counter;
  unsigned long long n = atomic_fetch_add(&counter, 1) + 1;
  snprintf(g.id, sizeof g.id, "%scmpl-%llx-%llu", req->chat ? "chat" : "",
           (unsigned long long)g.created, n);

  srv_gen_request rq;
  http_gen_request(req, &rq);
  srv_gen_callbacks cb = {gen_on_text, gen_on_neighbours, gen_should_cancel, &g};
  srv_gen_result res;
  memset(&res, 0, sizeof res);
  proto_status st = srv_generate(s->engine, &rq, &cb, &res);
  proto_jw w;
  if (req->stream) {
    if (st != PROTO_OK && st != PROTO_ECANCELLED) {
      char msg[512];
      snprintf(msg, sizeof msg, "completions: %s: %s", proto_strerror(st), srv_last_error());
      proto_buf_adds(&g.ev, "data: ");
      proto_json_error(&g.ev, st, msg);
      ev_send(&g);
    } else if (!g.gone) {
      proto_buf_adds(&g.ev, "data: ");
      proto_jw_init(&w, &g.ev);
      ev_head(&g, &w);
      ev_choice(&g, &w, "", 0, res.finish_reason ? res.finish_reason : "stop");
      write_usage(&w, &res);
      write_retro(&w, req, &res, 0);
      proto_jw_obj_end(&w);
      ev_send(&g);
    }
    if (!g.gone) {
      proto_buf_adds(&g.ev, "data: [DONE]");
      ev_send(&g);
    }
  } else if (st != PROTO_OK) {
    engine_error(resp, st, "completions");
  } else {
    proto_jw_init(&w, &resp->body);
    ev_head(&g, &w);
    proto_jw_key(&w, "choices");
    proto_jw_arr(&w);
    proto_jw_obj(&w);
    if (req->chat) {
      proto_jw_key(&w, "message");
      proto_jw_obj(&w);
      proto_jw_key(&w, "role");
      proto_jw_cstr(&w, "assistant");
      proto_jw_key(&w, "content");
      proto_jw_str(&w, res.text, res.text_len);
      proto_jw_obj_end(&w);
    } else {
      proto_jw_key(&w, "text");
      proto_jw_str(&w, res.text, res.text_len);
    }
    proto_jw_key(&w, "index");
    proto_jw_int(&w, 0);
    proto_jw_key(&w, "logprobs");
    if (req->logprobs >= 0) write_logprobs(&w, &res);
    else proto_jw_null(&w);
    proto_jw_key(&w, "finish_reason");
    proto_jw_cstr(&w, res.finish_reason);
    proto_jw_obj_end(&w);
    proto_jw_arr_end(&w);
    write_usage(&w, &res);
    write_retro(&w, req, &res, 1);
    proto_jw_obj_end(&w);
    ok_json(resp, 200);
  }
  srv_gen_result_free(&res);
  proto_buf_free(&g.ev);
}

static int buf_sink_write(void *ctx, const char *data, size_t len) {
  proto_buf_add(ctx, data, len);
  return 0;
}

static void h_complete(http_server *s, const http_request *rq, int chat, http_response *resp) {
  proto_complete_req req;
  if (http_complete_prepare(s, rq, chat, &req, resp) != PROTO_OK) return;
  http_sink sink = {buf_sink_write, &resp->body};
  http_complete_run(s, &req, &sink, resp);
  if (req.stream) {
    resp->status = 200;
    resp->content_type = SSE_TYPE;
  }
  proto_complete_free(&req);
}

/* ---- dispatch ------------------------------------------------------------- */

static void h_health(http_response *resp) {
  proto_buf_adds(&resp->body, "{\"status\":\"ok\"}");
  ok_json(resp, 200);
}

static void h_ready(http_server *s, http_response *resp) {
  if (s->engine && !atomic_load(&s->draining)) {
    proto_buf_adds(&resp->body, "{\"status\":\"ready\"}");
    ok_json(resp, 200);
  } else {
    http_error(resp, PROTO_EUNAVAIL, s->engine ? "shutting down" : "engine not loaded");
  }
}

static void h_openapi(http_response *resp) {
  proto_buf_adds(&resp->body, http_openapi_json());
  ok_json(resp, 200);
}

/* Each route's handler column of http_routes.def, called with s, m, rq, resp. */
void http_execute(http_server *s, const http_match *m, const http_request *rq,
                  http_response *resp) {
  switch (m->route) {
#define ROUTE(name, method, path, shape, access, kind, handler, op) \
  case HTTP_R_##name:                                               \
    handler;                                                        \
    return;
#include "http_routes.def"
#undef ROUTE
    case HTTP_R_OTHER:
    case HTTP_R_COUNT:
      break;
  }
  http_error(resp, PROTO_ENOTFOUND, "no such route");
}

void http_dispatch(http_server *s, const http_request *rq, http_response *resp) {
  http_match m;
  memset(resp, 0, sizeof *resp);
  http_route_match(rq->method, rq->path, &m);
  if (m.st != PROTO_OK) {
    http_error(resp, m.st, m.msg);
    resp->allow = m.allow;
    return;
  }
  proto_status st = http_auth_check(s->cfg, rq->authorization, rq->api_key, m.access);
  if (st != PROTO_OK) {
    http_error(resp, st,
               st == PROTO_EUNAUTH ? "Authorization: missing or wrong API key"
                                   : "Authorization: the read-only key cannot write");
    return;
  }
  if (m.has_body) {
    if (http_body_kind(m.route, rq->content_type) < 0) {
      http_error(resp, PROTO_EMEDIA, http_body_types(m.route));
      return;
    }
    if (rq->body_len > (size_t)s->cfg->max_body && http_body_kind(m.route, rq->content_type) == 0) {
      char msg[96];
      snprintf(msg, sizeof msg, "body: larger than %ld bytes (max-body)", s->cfg->max_body);
      http_error(resp, PROTO_ETOOBIG, msg);
      return;
    }
  }
  http_execute(s, &m, rq, resp);
}

void http_server_attach(http_server *s, srv_engine *engine) {
  if (engine) {
    srv_info *info = calloc(1, sizeof *info);
    if (info && srv_info_get(engine, info) == PROTO_OK) {
      if (info->decoder_loaded && info->decoder_path[0])
        snprintf(s->model_name, sizeof s->model_name, "%.127s",
                 view_model_basename(info->decoder_path));
      size_t n = strcspn(info->encoder, ":");
      if (n) snprintf(s->encoder_name, sizeof s->encoder_name, "%.*s", (int)n, info->encoder);
      n = strcspn(info->reranker, ":");
      snprintf(s->reranker_name, sizeof s->reranker_name, "%.*s", (int)n, info->reranker);
    }
    free(info);
    size_t n = strlen(s->model_name);
    if (n && s->model_name[n - 1] == '/') s->model_name[n - 1] = 0;
  }
  atomic_store(&s->engine, engine);
}

proto_status http_server_new(const http_config *cfg, srv_engine *engine, http_server **out) {
  http_server *s = calloc(1, sizeof *s);
  if (!s) return PROTO_ENOMEM;
  s->cfg = cfg;
  snprintf(s->model_name, sizeof s->model_name, "retro");
  snprintf(s->encoder_name, sizeof s->encoder_name, "encoder");
  char err[256];
  if (http_chat_template_load(cfg ? cfg->chat_template : NULL, &s->chat, err, sizeof err)) {
    free(s);
    return PROTO_EINVAL;
  }
  http_server_attach(s, engine);
  *out = s;
  return PROTO_OK;
}

void http_server_free(http_server *s) {
  if (!s) return;
  http_chat_template_free(s->chat);
  free(s);
}
