/* search_twin.h - the twin check of the fast search-body parser
 * (api/search_fast.c), shared by tests/api/test_api.c and
 * tests/fuzz/fuzz_search_parse.c: the same body with one more field,
 * "exclude_docs":[], which only the jansson path reads, and a comparison of
 * two parsed requests bit for bit. */
#ifndef RETRO_SEARCH_TWIN_H
#define RETRO_SEARCH_TWIN_H

#include "api.h"

#include <stdlib.h>
#include <string.h>

/* body[0..len) with ,"exclude_docs":[] before its last '}' (malloc'd, NUL
 * ended, length in *out_len); NULL when body has no '}' or memory is short. */
static char *search_body_for_jansson(const char *body, size_t len, size_t *out_len) {
  static const char extra[] = ",\"exclude_docs\":[]";
  size_t close = len;
  while (close > 0 && body[close - 1] != '}') close--;
  if (close == 0) return NULL;
  close--;
  char *out = malloc(len + sizeof extra);
  if (!out) return NULL;
  memcpy(out, body, close);
  memcpy(out + close, extra, sizeof extra - 1);
  memcpy(out + close + sizeof extra - 1, body + close, len - close);
  *out_len = len + sizeof extra - 1;
  out[*out_len] = '\0';
  return out;
}

/* 1 when a and b (both parsed) are the same request, floats bit for bit. */
static int search_reqs_same(const proto_search_req *a, const proto_search_req *b) {
  return a->dim == b->dim && a->like_chunk == b->like_chunk && a->k == b->k &&
         a->nprobe == b->nprobe && a->ef_search == b->ef_search && a->with_text == b->with_text &&
         a->n_queries == b->n_queries && a->n_exclude == b->n_exclude &&
         (a->vector != NULL) == (b->vector != NULL) &&
         (!a->vector || memcmp(a->vector, b->vector, a->dim * sizeof(float)) == 0);
}

#endif
