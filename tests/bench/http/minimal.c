/* minimal.c - the peer of the HTTP benchmark: the smallest useful
 * libmicrohttpd responder, configured like `retro serve` (internal thread
 * pool, epoll). GET answers {"status":"ok"}; POST reads the body and answers
 * a fixed JSON document of about the size of a k=10 search response. It does
 * no parsing, no search and no auth: it is the ceiling the daemon's own
 * overhead is measured against.
 *   minimal PORT THREADS */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peer.h"

static char post_reply[2048];

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **ctx) {
  (void)cls;
  (void)url;
  (void)version;
  (void)upload;
  if (!*ctx) {
    *ctx = (void *)1;
    return MHD_YES;
  }
  if (*upload_size) {
    *upload_size = 0;
    return MHD_YES;
  }
  int post = strcmp(method, "POST") == 0;
  const char *body = post ? post_reply : "{\"status\":\"ok\"}";
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
  MHD_add_response_header(r, "Content-Type", "application/json");
  enum MHD_Result ret = MHD_queue_response(c, 200, r);
  MHD_destroy_response(r);
  return ret;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: minimal PORT THREADS\n");
    return 2;
  }
  size_t n = 0;
  n += (size_t)snprintf(post_reply + n, sizeof post_reply - n, "{\"results\":[");
  for (int i = 0; i < 10 && n < sizeof post_reply - 200; i++)
    n += (size_t)snprintf(post_reply + n, sizeof post_reply - n,
                          "%s{\"score\":0.9%d,\"chunk_id\":%d,\"doc_id\":\"doc-%d\",\"doc_num\":%d,"
                          "\"ordinal\":0,\"metadata\":{}}",
                          i ? "," : "", i, i + 1, i, i + 1);
  snprintf(post_reply + n, sizeof post_reply - n, "],\"k\":10}");
  struct MHD_Daemon *d = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC, (uint16_t)atoi(argv[1]), NULL,
      NULL, handler, NULL, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)atoi(argv[2]),
      MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_END);
  if (!d) {
    fprintf(stderr, "minimal: cannot listen\n");
    return 1;
  }
  wait_for_stop_signal();
  MHD_stop_daemon(d);
  return 0;
}
