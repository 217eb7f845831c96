/* filter.c - the metadata filter of searches, generation's retrieval,
 * document listings and deletes: its grammar, checked when a request is
 * decoded, and its test on one document's metadata. Both live here so that
 * what is accepted and what it means cannot drift apart.
 *
 * A filter is an object; every entry must hold (an implicit $and):
 *   "key": value                  the key has that value (below)
 *   "key": [v, ...]               ... one of the values ($in)
 *   "key": {"$op": x, ...}        every operator holds: $eq, $ne, $in, $nin,
 *                                 $gt, $gte, $lt, $lte, $exists
 *   "$and" / "$or": [filter, ...] all / any of the filters
 * A value is a string, number, boolean or null. null is the key null or
 * absent; numbers compare by value (1 == 1.0); a list in the metadata
 * matches a value, a list of values or a bound when any of its elements
 * does. $ne and $nin are the negations of $eq and $in (so a document
 * without the key passes them). The bounds take a number or a string:
 * numbers order by value, strings by their UTF-8 bytes (code points, so
 * ISO 8601 dates order by time); a number never passes a string bound nor
 * the reverse. $exists: true is the key present and not null. */
#include "json_priv.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum {
  FILTER_MAX_DEPTH = 4,  /* $and/$or inside one another */
  FILTER_MAX_TESTS = 64, /* values and operators of one filter, all levels */
  PATH_MAX_BYTES = 192,
};

#define OPERATORS "$eq, $ne, $in, $nin, $gt, $gte, $lt, $lte or $exists"

struct proto_filter {
  json_t *root;
};

typedef struct check_ctx {
  int tests;
  char *err;
  size_t errlen;
} check_ctx;

PROTO_PRINTF(3, 4)
static proto_status fail(check_ctx *c, proto_status st, const char *fmt, ...) {
  if (c->err && c->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
  }
  return st;
}

static int is_scalar(const json_t *v) {
  return json_is_string(v) || json_is_number(v) || json_is_boolean(v) || json_is_null(v);
}

/* One more test; refused past FILTER_MAX_TESTS. */
static proto_status count_test(check_ctx *c) {
  if (++c->tests <= FILTER_MAX_TESTS) return PROTO_OK;
  return fail(c, PROTO_ERANGE, "filter: at most %d values and operators in all", FILTER_MAX_TESTS);
}

/* A list of 1..PROTO_MAX_FILTER_VALUES scalars at path. */
static proto_status check_values(check_ctx *c, const char *path, json_t *v) {
  size_t n = json_array_size(v);
  if (n == 0 || n > PROTO_MAX_FILTER_VALUES)
    return fail(c, PROTO_ERANGE, "%s: list 1 to %d values", path, PROTO_MAX_FILTER_VALUES);
  for (size_t i = 0; i < n; i++)
    if (!is_scalar(json_array_get(v, i)))
      return fail(c, PROTO_ETYPE, "%s[%zu]: must be a string, number, boolean or null", path, i);
  return count_test(c);
}

/* {"$op": x, ...} at path: the operators one key must pass. */
static proto_status check_operators(check_ctx *c, const char *path, json_t *ops) {
  if (json_object_size(ops) == 0)
    return fail(c, PROTO_ERANGE, "%s: no operator (give " OPERATORS ")", path);
  const char *op;
  json_t *x;
  json_object_foreach(ops, op, x) {
    char at[PATH_MAX_BYTES];
    snprintf(at, sizeof at, "%.120s.%.16s", path, op);
    proto_status st = PROTO_OK;
    if (!strcmp(op, "$eq") || !strcmp(op, "$ne")) {
      if (!is_scalar(x))
        return fail(c, PROTO_ETYPE, "%s: must be a string, number, boolean or null", at);
      st = count_test(c);
    } else if (!strcmp(op, "$in") || !strcmp(op, "$nin")) {
      if (!json_is_array(x)) return fail(c, PROTO_ETYPE, "%s: must be a list of values", at);
      st = check_values(c, at, x);
    } else if (!strcmp(op, "$gt") || !strcmp(op, "$gte") || !strcmp(op, "$lt") ||
               !strcmp(op, "$lte")) {
      if (!json_is_number(x) && !json_is_string(x))
        return fail(c, PROTO_ETYPE, "%s: must be a number or a string", at);
      st = count_test(c);
    } else if (!strcmp(op, "$exists")) {
      if (!json_is_boolean(x)) return fail(c, PROTO_ETYPE, "%s: must be true or false", at);
      st = count_test(c);
    } else {
      return fail(c, PROTO_EINVAL, "%s: unknown operator %.32s (give " OPERATORS ")", path, op);
    }
    if (st != PROTO_OK) return st;
  }
  return PROTO_OK;
}

static proto_status check_object(check_ctx *c, const char *path, json_t *f, int depth);

/* "$and" or "$or" at path: a list of filters, each with a key. */
static proto_status check_combination(check_ctx *c, const char *path, json_t *list, int depth) {
  if (!json_is_array(list)) return fail(c, PROTO_ETYPE, "%s: must be a list of filters", path);
  size_t n = json_array_size(list);
  if (n == 0 || n > PROTO_MAX_FILTER_KEYS)
    return fail(c, PROTO_ERANGE, "%s: list 1 to %d filters", path, PROTO_MAX_FILTER_KEYS);
  if (depth >= FILTER_MAX_DEPTH)
    return fail(c, PROTO_ERANGE, "%s: $and and $or nest at most %d deep", path, FILTER_MAX_DEPTH);
  for (size_t i = 0; i < n; i++) {
    char at[PATH_MAX_BYTES];
    snprintf(at, sizeof at, "%.120s[%zu]", path, i);
    json_t *f = json_array_get(list, i);
    if (json_is_object(f) && json_object_size(f) == 0)
      return fail(c, PROTO_ERANGE, "%s: empty (give a key)", at);
    proto_status st = check_object(c, at, f, depth + 1);
    if (st != PROTO_OK) return st;
  }
  return PROTO_OK;
}

static proto_status check_object(check_ctx *c, const char *path, json_t *f, int depth) {
  if (!json_is_object(f))
    return fail(c, PROTO_ETYPE, "%s: must be an object of metadata keys and values", path);
  if (json_object_size(f) > PROTO_MAX_FILTER_KEYS)
    return fail(c, PROTO_ERANGE, "%s: at most %d keys", path, PROTO_MAX_FILTER_KEYS);
  const char *key;
  json_t *v;
  json_object_foreach(f, key, v) {
    char at[PATH_MAX_BYTES];
    snprintf(at, sizeof at, "%.120s.%.64s", path, key);
    proto_status st;
    if (!*key) return fail(c, PROTO_EINVAL, "%s: a key is empty", path);
    if (!strcmp(key, "$and") || !strcmp(key, "$or")) st = check_combination(c, at, v, depth);
    else if (*key == '$')
      return fail(c, PROTO_EINVAL,
                  "%s: unknown operator (filters combine with $and and $or; "
                  "a metadata key starting with $ cannot be filtered)",
                  at);
    else if (json_is_object(v)) st = check_operators(c, at, v);
    else if (json_is_array(v)) st = check_values(c, at, v);
    else if (is_scalar(v)) st = count_test(c);
    else
      return fail(c, PROTO_ETYPE, "%s: must be a value, a list of values or an object of operators",
                  at);
    if (st != PROTO_OK) return st;
  }
  return PROTO_OK;
}

proto_status proto__filter_check(json_t *f, char **out, char *err, size_t errlen) {
  check_ctx c = {0, err, errlen};
  *out = NULL;
  proto_status st = check_object(&c, "filter", f, 0);
  if (st != PROTO_OK || json_object_size(f) == 0) return st;
  *out = json_dumps(f, JSON_COMPACT);
  return *out ? PROTO_OK : fail(&c, PROTO_ENOMEM, "filter: out of memory");
}

proto_status proto_filter_load(const char *json, proto_filter **out, char *err, size_t errlen) {
  *out = NULL;
  json_error_t je;
  json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &je);
  check_ctx c = {0, err, errlen};
  if (!root) return fail(&c, PROTO_EJSON, "filter: %s", je.text);
  char *compact = NULL;
  proto_status st = proto__filter_check(root, &compact, err, errlen);
  free(compact);
  proto_filter *f = st == PROTO_OK ? malloc(sizeof *f) : NULL;
  if (st == PROTO_OK && !f) st = fail(&c, PROTO_ENOMEM, "filter: out of memory");
  if (st != PROTO_OK) {
    json_decref(root);
    return st;
  }
  f->root = root;
  *out = f;
  return PROTO_OK;
}

void proto_filter_free(proto_filter *f) {
  if (!f) return;
  json_decref(f->root);
  free(f);
}

int proto_filter_is_empty(const proto_filter *f) { return !f || json_object_size(f->root) == 0; }

/* have (a metadata value, NULL when absent) against one wanted value. */
static int value_matches(const json_t *have, const json_t *want) {
  if (json_is_null(want)) return !have || json_is_null(have);
  if (!have) return 0;
  if (json_is_array(have)) {
    for (size_t i = 0; i < json_array_size(have); i++)
      if (value_matches(json_array_get(have, i), want)) return 1;
    return 0;
  }
  if (json_is_number(have) && json_is_number(want))
    return json_number_value(have) == json_number_value(want);
  return json_equal(have, want);
}

static int any_matches(const json_t *have, const json_t *values) {
  for (size_t i = 0; i < json_array_size(values); i++)
    if (value_matches(have, json_array_get(values, i))) return 1;
  return 0;
}

/* have <=> bound as -1, 0, 1, or 2 when they do not compare (other types). */
static int order(const json_t *have, const json_t *bound) {
  if (json_is_number(have) && json_is_number(bound)) {
    double a = json_number_value(have), b = json_number_value(bound);
    return a < b ? -1 : a > b;
  }
  if (!json_is_string(have) || !json_is_string(bound)) return 2;
  size_t na = json_string_length(have), nb = json_string_length(bound);
  int r = memcmp(json_string_value(have), json_string_value(bound), na < nb ? na : nb);
  if (r == 0) r = na < nb ? -1 : na > nb;
  return r < 0 ? -1 : r > 0;
}

/* have against one bound: op is "$gt", "$gte", "$lt" or "$lte". */
static int within(const json_t *have, const char *op, const json_t *bound) {
  if (!have) return 0;
  if (json_is_array(have)) {
    for (size_t i = 0; i < json_array_size(have); i++)
      if (within(json_array_get(have, i), op, bound)) return 1;
    return 0;
  }
  int r = order(have, bound);
  if (r == 2) return 0;
  if (op[1] == 'g') return op[3] == 'e' ? r >= 0 : r > 0;
  return op[3] == 'e' ? r <= 0 : r < 0;
}

static int operators_hold(const json_t *have, json_t *ops) {
  const char *op;
  json_t *x;
  json_object_foreach(ops, op, x) {
    int holds;
    if (!strcmp(op, "$eq")) holds = value_matches(have, x);
    else if (!strcmp(op, "$ne")) holds = !value_matches(have, x);
    else if (!strcmp(op, "$in")) holds = any_matches(have, x);
    else if (!strcmp(op, "$nin")) holds = !any_matches(have, x);
    else if (!strcmp(op, "$exists")) holds = (have && !json_is_null(have)) == json_is_true(x);
    else holds = within(have, op, x);
    if (!holds) return 0;
  }
  return 1;
}

static int object_holds(json_t *f, const json_t *meta) {
  const char *key;
  json_t *want;
  json_object_foreach(f, key, want) {
    int holds;
    if (!strcmp(key, "$and") || !strcmp(key, "$or")) {
      int any = key[1] == 'o';
      holds = !any;
      for (size_t i = 0; i < json_array_size(want) && holds != any; i++)
        holds = object_holds(json_array_get(want, i), meta);
    } else {
      const json_t *have = json_is_object(meta) ? json_object_get(meta, key) : NULL;
      if (json_is_object(want)) holds = operators_hold(have, want);
      else if (json_is_array(want)) holds = any_matches(have, want);
      else holds = value_matches(have, want);
    }
    if (!holds) return 0;
  }
  return 1;
}

int proto_filter_passes(const proto_filter *f, const char *metadata_json) {
  if (proto_filter_is_empty(f)) return 1;
  json_t *meta = metadata_json && *metadata_json ? json_loads(metadata_json, 0, NULL) : NULL;
  int pass = object_holds(f->root, meta);
  json_decref(meta);
  return pass;
}
