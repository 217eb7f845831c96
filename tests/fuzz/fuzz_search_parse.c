/* fuzz_search_parse.c - differential libFuzzer target on the fast path of
 * search-body parsing (api/search_fast.c): the input is a body; whenever
 * the fast path accepts it, the jansson path must accept the same body
 * (made to go through jansson by one more field, "exclude_docs":[], which
 * the fast path does not read) with the very same request, floats compared
 * bit for bit. A body the fast path declines is the jansson path's alone,
 * which fuzz_http covers. Built only with -Dfuzz=true and clang
 * (tests/fuzz/run.sh). */
#include "json_priv.h"
#include "../api/search_twin.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *body = (const char *)data;
  proto_search_req fast, slow;
  memset(&fast, 0, sizeof fast);
  if (!proto__search_parse_fast(body, size, &fast)) return 0;
  /* accepted: an object, so a last '}' ends it */
  size_t slow_len;
  char *slow_body = search_body_for_jansson(body, size, &slow_len);
  if (!slow_body) abort();
  char err[256];
  proto_status st = proto_search_parse(slow_body, slow_len, &slow, err, sizeof err);
  if (st != PROTO_OK) {
    fprintf(stderr, "fast path accepted, jansson path: %s\n", err);
    abort();
  }
  if (!search_reqs_same(&fast, &slow)) {
    fprintf(stderr, "fast and jansson paths differ\n");
    abort();
  }
  proto_search_free(&fast);
  proto_search_free(&slow);
  free(slow_body);
  return 0;
}
