/* test_filter.c - the metadata filter (api/filter.c): which filters the
 * grammar accepts, the message naming what it refuses, and the verdict of
 * each kind of test on documents' metadata. */
#include "api.h"
#include "../tap.h"

#include <stdlib.h>
#include <string.h>

/* The status of checking filter; err gets the message. */
static proto_status check(const char *filter, char *err, size_t n) {
  char *compact = NULL;
  proto_status st = proto_filter_parse(filter, strlen(filter), &compact, err, n);
  free(compact);
  return st;
}

/* 1 when filter is refused with want and a message containing part. */
static int refused(const char *filter, proto_status want, const char *part) {
  char err[256] = "";
  proto_status st = check(filter, err, sizeof err);
  if (st == want && strstr(err, part)) return 1;
  printf("#   %s -> %s: %s\n", filter, proto_status_name(st), err);
  return 0;
}

TEST(grammar_accepts) {
  static const char *const good[] = {
      "{}",
      "{\"lang\": \"en\", \"year\": [2023, 2024], \"draft\": null}",
      "{\"year\": {\"$gte\": 2020, \"$lt\": 2025}}",
      "{\"date\": {\"$gt\": \"2024-01-01\"}, \"n\": {\"$ne\": 3}}",
      "{\"tag\": {\"$in\": [\"a\", \"b\"]}, \"t2\": {\"$nin\": [1, null]}}",
      "{\"x\": {\"$exists\": false}, \"y\": {\"$eq\": true}}",
      "{\"$or\": [{\"a\": 1}, {\"$and\": [{\"b\": 2}, {\"c\": {\"$lte\": 3}}]}]}",
      "{\"$or\": [{\"$or\": [{\"$or\": [{\"$or\": [{\"a\": 1}]}]}]}]}",
  };
  char err[256];
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    CHECKF(check(good[i], err, sizeof err) == PROTO_OK, "%s: %s", good[i], err);
}

TEST(grammar_refuses) {
  CHECK(refused("[1]", PROTO_ETYPE, "filter: must be an object"));
  CHECK(refused("{\"\": 1}", PROTO_EINVAL, "filter: a key is empty"));
  CHECK(refused("{\"n\": []}", PROTO_ERANGE, "filter.n: list 1 to 64"));
  CHECK(refused("{\"n\": [[1]]}", PROTO_ETYPE, "filter.n[0]: must be a string"));
  CHECK(refused("{\"n\": {}}", PROTO_ERANGE, "filter.n: no operator"));
  CHECK(refused("{\"n\": {\"gt\": 1}}", PROTO_EINVAL, "filter.n: unknown operator gt"));
  CHECK(refused("{\"n\": {\"$regex\": \"a\"}}", PROTO_EINVAL, "unknown operator $regex"));
  CHECK(refused("{\"n\": {\"$gt\": true}}", PROTO_ETYPE,
                "filter.n.$gt: must be a number or a string"));
  CHECK(refused("{\"n\": {\"$lte\": null}}", PROTO_ETYPE, "filter.n.$lte"));
  CHECK(refused("{\"n\": {\"$in\": 3}}", PROTO_ETYPE, "filter.n.$in: must be a list"));
  CHECK(refused("{\"n\": {\"$nin\": []}}", PROTO_ERANGE, "filter.n.$nin: list 1 to 64"));
  CHECK(refused("{\"n\": {\"$eq\": [1]}}", PROTO_ETYPE, "filter.n.$eq: must be a string"));
  CHECK(
      refused("{\"n\": {\"$exists\": 1}}", PROTO_ETYPE, "filter.n.$exists: must be true or false"));
  CHECK(refused("{\"$not\": {\"a\": 1}}", PROTO_EINVAL, "filter.$not: unknown operator"));
  CHECK(refused("{\"$or\": {\"a\": 1}}", PROTO_ETYPE, "filter.$or: must be a list of filters"));
  CHECK(refused("{\"$or\": []}", PROTO_ERANGE, "filter.$or: list 1 to 16 filters"));
  CHECK(refused("{\"$or\": [{}]}", PROTO_ERANGE, "filter.$or[0]: empty"));
  CHECK(refused("{\"$and\": [{\"a\": 1}, 2]}", PROTO_ETYPE, "filter.$and[1]: must be an object"));
  CHECK(refused("{\"$or\": [{\"a\": {\"$gt\": []}}]}", PROTO_ETYPE, "filter.$or[0].a.$gt"));
  CHECK(refused("{\"$or\": [{\"$or\": [{\"$or\": [{\"$or\": [{\"$or\": [{\"a\": 1}]}]}]}]}]}",
                PROTO_ERANGE, "nest at most 4 deep"));
  /* 65 tests in all: 5 lists of 13 keys, each a value */
  char big[4096] = "{\"$and\": [";
  for (int l = 0; l < 5; l++) {
    strcat(big, l ? ", {" : "{");
    for (int k = 0; k < 13; k++) {
      char kv[32];
      snprintf(kv, sizeof kv, "%s\"k%d\": %d", k ? ", " : "", k, k);
      strcat(big, kv);
    }
    strcat(big, "}");
  }
  strcat(big, "]}");
  CHECK(refused(big, PROTO_ERANGE, "at most 64 values and operators"));
}

/* The verdict of filter on metadata (NULL: a document without any). */
static int passes(const char *filter, const char *metadata) {
  char err[256];
  proto_filter *f = NULL;
  if (proto_filter_load(filter, &f, err, sizeof err) != PROTO_OK) {
    printf("#   %s: %s\n", filter, err);
    return -1;
  }
  int r = proto_filter_passes(f, metadata);
  proto_filter_free(f);
  return r;
}

#define VERDICT(filter, metadata, want) \
  CHECKF(passes(filter, metadata) == (want), "%s on %s", filter, metadata ? metadata : "none")

TEST(values) {
  VERDICT("{}", NULL, 1);
  VERDICT("{\"a\": 1}", "{\"a\": 1.0}", 1);
  VERDICT("{\"a\": 1}", "{\"a\": \"1\"}", 0);
  VERDICT("{\"a\": \"x\"}", "{\"a\": [\"y\", \"x\"]}", 1);
  VERDICT("{\"a\": [2, 3]}", "{\"a\": 3}", 1);
  VERDICT("{\"a\": [2, 3]}", "{\"a\": 4}", 0);
  VERDICT("{\"a\": null}", "{\"b\": 1}", 1);
  VERDICT("{\"a\": null}", NULL, 1);
  VERDICT("{\"a\": null}", "{\"a\": null}", 1);
  VERDICT("{\"a\": null}", "{\"a\": 0}", 0);
  VERDICT("{\"a\": 1, \"b\": true}", "{\"a\": 1, \"b\": true}", 1);
  VERDICT("{\"a\": 1, \"b\": true}", "{\"a\": 1, \"b\": 1}", 0);
}

TEST(operators) {
  VERDICT("{\"a\": {\"$eq\": 2}}", "{\"a\": 2}", 1);
  VERDICT("{\"a\": {\"$ne\": 2}}", "{\"a\": 2}", 0);
  VERDICT("{\"a\": {\"$ne\": 2}}", "{\"a\": 3}", 1);
  VERDICT("{\"a\": {\"$ne\": 2}}", "{}", 1);              /* absent: not 2 */
  VERDICT("{\"a\": {\"$ne\": 2}}", "{\"a\": [1, 2]}", 0); /* a list holding 2 */
  VERDICT("{\"a\": {\"$ne\": null}}", "{}", 0);           /* present and not null */
  VERDICT("{\"a\": {\"$in\": [1, \"x\"]}}", "{\"a\": \"x\"}", 1);
  VERDICT("{\"a\": {\"$nin\": [1, \"x\"]}}", "{\"a\": \"x\"}", 0);
  VERDICT("{\"a\": {\"$nin\": [1, \"x\"]}}", "{\"a\": \"y\"}", 1);
  VERDICT("{\"a\": {\"$exists\": true}}", "{\"a\": 0}", 1);
  VERDICT("{\"a\": {\"$exists\": true}}", "{\"a\": null}", 0);
  VERDICT("{\"a\": {\"$exists\": false}}", "{\"b\": 0}", 1);
  VERDICT("{\"a\": {\"$exists\": false}}", "{\"a\": false}", 0);
}

TEST(bounds) {
  const char *range = "{\"y\": {\"$gte\": 2020, \"$lt\": 2025}}";
  VERDICT(range, "{\"y\": 2019}", 0);
  VERDICT(range, "{\"y\": 2020}", 1);
  VERDICT(range, "{\"y\": 2024.5}", 1);
  VERDICT(range, "{\"y\": 2025}", 0);
  VERDICT(range, "{\"y\": \"2021\"}", 0); /* a string never passes a number bound */
  VERDICT(range, "{}", 0);
  VERDICT(range, "{\"y\": null}", 0);
  VERDICT(range, "{\"y\": [1999, 2022]}", 1); /* an element passes both */
  VERDICT("{\"y\": {\"$gt\": 1}}", "{\"y\": 1}", 0);
  VERDICT("{\"y\": {\"$lte\": 1}}", "{\"y\": 1}", 1);
  VERDICT("{\"y\": {\"$gt\": -1e300}}", "{\"y\": -5}", 1);
  const char *dates = "{\"d\": {\"$gte\": \"2024-03-01\", \"$lte\": \"2024-03-31T23:59:59Z\"}}";
  VERDICT(dates, "{\"d\": \"2024-03-15T10:00:00Z\"}", 1);
  VERDICT(dates, "{\"d\": \"2024-04-01\"}", 0);
  VERDICT(dates, "{\"d\": \"2024-02-29\"}", 0);
  VERDICT(dates, "{\"d\": 20240315}", 0); /* a number never passes a string bound */
  VERDICT("{\"s\": {\"$lt\": \"ab\"}}", "{\"s\": \"a\"}", 1);       /* a prefix orders first */
  VERDICT("{\"s\": {\"$gt\": \"z\"}}", "{\"s\": \"\xc3\xa9\"}", 1); /* by code point: é > z */
}

TEST(combinations) {
  const char *either = "{\"$or\": [{\"lang\": \"en\"}, {\"year\": {\"$gt\": 2020}}]}";
  VERDICT(either, "{\"lang\": \"en\", \"year\": 1990}", 1);
  VERDICT(either, "{\"lang\": \"de\", \"year\": 2021}", 1);
  VERDICT(either, "{\"lang\": \"de\", \"year\": 2020}", 0);
  VERDICT(either, NULL, 0);
  const char *both = "{\"$and\": [{\"a\": {\"$gt\": 1}}, {\"a\": {\"$lt\": 5}}], \"b\": \"x\"}";
  VERDICT(both, "{\"a\": 3, \"b\": \"x\"}", 1);
  VERDICT(both, "{\"a\": 3, \"b\": \"y\"}", 0); /* the entries beside $and must hold too */
  VERDICT(both, "{\"a\": 7, \"b\": \"x\"}", 0);
  VERDICT("{\"$or\": [{\"a\": 1}, {\"$and\": [{\"b\": 2}, {\"c\": null}]}]}", "{\"b\": 2}", 1);
  VERDICT("{\"$or\": [{\"a\": 1}, {\"$and\": [{\"b\": 2}, {\"c\": null}]}]}",
          "{\"b\": 2, \"c\": 0}", 0);
}

/* Metadata that is not an object (stored by an older version, say) is a
 * document without keys. */
TEST(odd_metadata) {
  VERDICT("{\"a\": null}", "[1, 2]", 1);
  VERDICT("{\"a\": 1}", "not json", 0);
  VERDICT("{\"a\": {\"$ne\": 1}}", "", 1);
}

TEST(load_refuses) {
  char err[256] = "";
  proto_filter *f = (proto_filter *)1;
  CHECK(proto_filter_load("{\"a\": {\"$gt\": true}}", &f, err, sizeof err) == PROTO_ETYPE && !f);
  CHECK(strstr(err, "filter.a.$gt") != NULL);
  CHECK(proto_filter_load("{\"a\": 1, \"a\": 2}", &f, err, sizeof err) == PROTO_EJSON && !f);
  CHECK(proto_filter_load("{\"a\": 1", &f, err, sizeof err) == PROTO_EJSON && !f);
  CHECK(proto_filter_load("{}", &f, err, sizeof err) == PROTO_OK && proto_filter_is_empty(f));
  proto_filter_free(f);
  CHECK(proto_filter_is_empty(NULL) && proto_filter_passes(NULL, "{\"a\": 1}"));
}

int main(void) {
  RUN(grammar_accepts);
  RUN(grammar_refuses);
  RUN(values);
  RUN(operators);
  RUN(bounds);
  RUN(combinations);
  RUN(odd_metadata);
  RUN(load_refuses);
  return tap_done();
}
