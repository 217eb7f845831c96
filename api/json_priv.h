/* json_priv.h - pieces of api/'s JSON decoding shared between its files
 * (private to api/, and the fuzz target that checks the fast path). */
#ifndef RETRO_JSON_PRIV_H
#define RETRO_JSON_PRIV_H

#include "api.h"

#include <jansson.h>

/* 10^0 .. 10^22: the powers of ten that a double holds exactly (json.c). */
extern const double proto__exact_pow10[23];

/* The fast path of proto_search_parse (search_fast.c): returns 1 with *out
 * filled exactly as the jansson path would fill it, or 0 (out untouched)
 * when the body is not a plain vector search or anything about it is
 * doubtful; the caller then parses it with jansson. */
int proto__search_parse_fast(const char *json, size_t len, proto_search_req *out);

/* Checks a metadata filter against its grammar (filter.c), naming the
 * offending part in err; *out its compact JSON, NULL for {}. */
proto_status proto__filter_check(json_t *filter, char **out, char *err, size_t errlen);

#endif
