/* fuzz_http.c - libFuzzer target on the HTTP request dispatcher
 * (server/http.h: http_dispatch): method, path, headers and body in,
 * response out. Input layout: up to 6 lines "METHOD\nPATH\nAUTHORIZATION\n
 * API-KEY\nCONTENT-TYPE\nWAIT\n" then the body (any bytes). Two configured
 * keys make every auth branch reachable. Runs without an engine, so every
 * route validates its input fully (routing, id decoding, auth, content
 * types, JSON/NDJSON decoding, error encoding) and then answers 503; the
 * checks below hold for every response. Built only with -Dfuzz=true and
 * clang (tests/fuzz/run.sh). */
#include "http.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static http_config cfg;
static http_server *srv;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!srv) {
    memset(&cfg, 0, sizeof cfg);
    cfg.api_key = "rw-key";
    cfg.read_key = "ro-key";
    cfg.max_body = 4096;
    if (http_server_new(&cfg, NULL, &srv) != PROTO_OK) abort();
  }
  char *copy = malloc(size + 1);
  if (!copy) return 0;
  memcpy(copy, data, size);
  copy[size] = 0;
  char *field[6] = {0};
  char *p = copy, *end = copy + size;
  for (int i = 0; i < 6 && p < end; i++) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) break;
    *nl = 0;
    field[i] = p;
    p = nl + 1;
  }
  http_request rq;
  memset(&rq, 0, sizeof rq);
  rq.method = field[0] ? field[0] : "GET";
  rq.path = field[1] ? field[1] : "/";
  rq.authorization = field[2] && *field[2] ? field[2] : NULL;
  rq.api_key = field[3] && *field[3] ? field[3] : NULL;
  rq.content_type = field[4] && *field[4] ? field[4] : NULL;
  rq.query_wait = field[5] && *field[5] ? field[5] : NULL;
  rq.body = p;
  rq.body_len = (size_t)(end - p);
  http_response resp;
  http_dispatch(srv, &rq, &resp);
  /* invariants: a status in range, never 5xx except 503 (no engine), a body
   * that is valid UTF-8 */
  if (resp.status < 200 || resp.status > 599) abort();
  if (resp.status >= 500 && resp.status != 503) abort();
  if (resp.body.len && !proto_utf8_valid(resp.body.data, resp.body.len)) abort();
  proto_buf_free(&resp.body);
  free(copy);
  return 0;
}
