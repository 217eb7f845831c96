/* faiss_peer.c - the second peer of the HTTP benchmark: the least a FAISS
 * search server can do. A libmicrohttpd responder configured like
 * `retro serve` (internal thread pool, epoll) holding a plain FAISS
 * IndexFlatIP of N random unit vectors of DIM floats; POST answers
 * {"vector":[...],"k":K} by parsing it with jansson, one faiss search and
 * {"results":[{"score","chunk_id"}...],"k":K}. No storage, documents, auth,
 * metrics or log: against it the ratio shows what retro's whole request
 * costs next to the same search served bare (Debian's FAISS searches a
 * single query with its scalar kernel; retro uses index/flat_scan.c).
 *   faiss_peer PORT THREADS N DIM */
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peer.h"

static FaissIndex *index_;
static int dim;

typedef struct {
  char *body;
  size_t len, cap;
} request;

static enum MHD_Result reply(struct MHD_Connection *c, int status, const char *text) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header(r, "Content-Type", "application/json");
  enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
  MHD_destroy_response(r);
  return ret;
}

/* The search of one body into out (cap bytes); returns the HTTP status. */
static int search(const char *body, size_t len, char *out, size_t cap) {
  json_t *root = json_loadb(body, len, 0, NULL);
  json_t *vec = root ? json_object_get(root, "vector") : NULL;
  json_t *kj = root ? json_object_get(root, "k") : NULL;
  long k = kj ? (long)json_integer_value(kj) : 10;
  if (!vec || (int)json_array_size(vec) != dim || k < 1 || k > 100) {
    json_decref(root);
    snprintf(out, cap, "{\"error\":\"bad request\"}");
    return 422;
  }
  float q[4096];
  for (int i = 0; i < dim; i++) q[i] = (float)json_number_value(json_array_get(vec, (size_t)i));
  json_decref(root);
  float dist[100];
  idx_t lab[100];
  faiss_Index_search(index_, 1, q, k, dist, lab);
  size_t n = (size_t)snprintf(out, cap, "{\"results\":[");
  for (long i = 0; i < k && n < cap - 64; i++)
    n += (size_t)snprintf(out + n, cap - n, "%s{\"score\":%.8g,\"chunk_id\":%ld}", i ? "," : "",
                          (double)dist[i], (long)lab[i]);
  snprintf(out + n, cap - n, "],\"k\":%ld}", k);
  return 200;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **ctx) {
  (void)cls;
  (void)url;
  (void)version;
  (void)method;
  request *rq = *ctx;
  if (!rq) {
    *ctx = calloc(1, sizeof *rq);
    return *ctx ? MHD_YES : MHD_NO;
  }
  if (*upload_size) {
    if (rq->len + *upload_size > rq->cap) {
      size_t cap = (rq->len + *upload_size) * 2;
      char *b = realloc(rq->body, cap);
      if (!b) return MHD_NO;
      rq->body = b;
      rq->cap = cap;
    }
    memcpy(rq->body + rq->len, upload, *upload_size);
    rq->len += *upload_size;
    *upload_size = 0;
    return MHD_YES;
  }
  char out[8192];
  int status = search(rq->body, rq->len, out, sizeof out);
  return reply(c, status, out);
}

static void completed(void *cls, struct MHD_Connection *c, void **ctx,
                      enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)c;
  (void)toe;
  request *rq = *ctx;
  if (rq) free(rq->body);
  free(rq);
  *ctx = NULL;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: faiss_peer PORT THREADS N DIM\n");
    return 2;
  }
  long n = atol(argv[3]);
  dim = atoi(argv[4]);
  if (n < 1 || dim < 1 || dim > 4096) {
    fprintf(stderr, "faiss_peer: bad N or DIM\n");
    return 2;
  }
  float *x = malloc((size_t)n * (size_t)dim * sizeof *x);
  if (!x) return 1;
  srand(1);
  for (long i = 0; i < n; i++) { /* random unit vectors, like normalised embeddings */
    float *v = x + i * dim, norm = 0;
    for (int j = 0; j < dim; j++) {
      v[j] = (float)rand() / (float)RAND_MAX - 0.5f;
      norm += v[j] * v[j];
    }
    for (int j = 0; j < dim; j++) v[j] /= sqrtf(norm);
  }
  if (faiss_index_factory(&index_, dim, "Flat", METRIC_INNER_PRODUCT) ||
      faiss_Index_add(index_, n, x)) {
    fprintf(stderr, "faiss_peer: cannot build the index\n");
    return 1;
  }
  free(x);
  struct MHD_Daemon *d = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC, (uint16_t)atoi(argv[1]), NULL,
      NULL, handler, NULL, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)atoi(argv[2]),
      MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 60u,
      MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_END);
  if (!d) {
    fprintf(stderr, "faiss_peer: cannot listen\n");
    return 1;
  }
  wait_for_stop_signal();
  MHD_stop_daemon(d);
  faiss_Index_free(index_);
  return 0;
}
