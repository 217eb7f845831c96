/* fuzz_http.c - libFuzzer target on the HTTP request dispatcher
 * (server/http.h: http_dispatch): method, path, headers and body in,
 * response out. Input layout: up to 6 lines "METHOD\nPATH\nAUTHORIZATION\n
 * API-KEY\nCONTENT-TYPE\nQUERY\n" then the body (any bytes); QUERY is the
 * value of every query parameter (of ?limit= and ?after= only when it starts
 * with a digit, and then not of ?filter=). Two configured keys make every auth branch reachable. Runs without an engine, so every
 * route validates its input fully (routing, id decoding, auth, content
 * types, JSON/NDJSON decoding, error encoding) and then answers 503; the
 * checks below hold for every response. With RETRO_FUZZ_DATA and
 * RETRO_FUZZ_ENCODER (and optionally RETRO_FUZZ_DECODER and
 * RETRO_FUZZ_RERANKER) set, a real engine
 * is opened there and the handlers run against it (run.sh FUZZ_ENGINE=1);
 * then no 5xx at all is allowed. Built only with -Dfuzz=true and clang
 * (tests/fuzz/run.sh). */
#include "http.h"
#include "srv.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static http_config cfg;
static http_server *srv;
static srv_engine *engine;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!srv) {
    memset(&cfg, 0, sizeof cfg);
    cfg.api_key = "rw-key";
    cfg.read_key = "ro-key";
    cfg.max_body = 4096;
    const char *data = getenv("RETRO_FUZZ_DATA"), *enc = getenv("RETRO_FUZZ_ENCODER");
    if (data && enc) {
      srv_engine_options o;
      memset(&o, 0, sizeof o);
      o.data_dir = data;
      o.encoder_dir = enc;
      o.decoder_dir = getenv("RETRO_FUZZ_DECODER") ? getenv("RETRO_FUZZ_DECODER") : "none";
      o.reranker_dir = getenv("RETRO_FUZZ_RERANKER") ? getenv("RETRO_FUZZ_RERANKER") : "none";
      o.load_decoder = 1;
      o.threads = 1;
      o.gen_max_seq = 160; /* keeps a generation short */
      if (srv_engine_open(&o, &engine) != PROTO_OK) {
        fprintf(stderr, "fuzz_http: cannot open the engine: %s\n", srv_last_error());
        abort();
      }
    }
    if (http_server_new(&cfg, engine, &srv) != PROTO_OK) abort();
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
  /* the sixth line is the value of every query parameter */
  rq.query_wait = rq.query_force = rq.query_filter = rq.query_with_text =
      field[5] && *field[5] ? field[5] : NULL;
  int number = rq.query_filter && rq.query_filter[0] >= '0' && rq.query_filter[0] <= '9';
  rq.query_limit = rq.query_after = number ? rq.query_filter : NULL;
  if (number) rq.query_filter = NULL; /* a page (with texts for 1), else ?filter= alone */
  rq.body = p;
  rq.body_len = (size_t)(end - p);
  http_response resp;
  http_dispatch(srv, &rq, &resp);
  /* invariants: a status in range, never 5xx except 503 (no engine, or a
   * backup asked of this server, which has no --backup-dir), a body that is
   * valid UTF-8 */
  if (resp.status < 200 || resp.status > 599) abort();
  int backups_off = resp.status == 503 && !strcmp(rq.path, "/v1/admin/backup");
  if (resp.status >= 500 && (engine || resp.status != 503) && !backups_off) {
    fprintf(stderr, "fuzz_http: %d for %s %s: %s\n", resp.status, rq.method, rq.path,
            resp.body.data ? resp.body.data : "");
    abort();
  }
  if (resp.body.len && !proto_utf8_valid(resp.body.data, resp.body.len)) abort();
  proto_buf_free(&resp.body);
  free(copy);
  return 0;
}
