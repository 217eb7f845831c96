/* test_api.c - the HTTP status of every proto_status, the JSON writer's
 * numbers and base64, and the fast path of search-body parsing against the
 * jansson path. */
#include "json_priv.h"
#include "search_twin.h"
#include "../tap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TEST(http_status) {
  CHECK(api_http_status(PROTO_OK) == 200);
  CHECK(api_http_status(PROTO_EDIM) == 422);
  CHECK(api_http_status(PROTO_ETOOBIG) == 413);
  CHECK(api_http_status(PROTO_EUNAUTH) == 401 && api_http_status(PROTO_EFORBIDDEN) == 403);
  CHECK(api_http_status(PROTO_ENOSPACE) == 507 && api_http_status(PROTO_EUNAVAIL) == 503);
  CHECK(api_http_status((proto_status)9999) == 500);
  for (int i = 1; i < PROTO_STATUS_COUNT; i++)
    CHECKF(api_http_status((proto_status)i) >= 400, "%s", proto_status_name((proto_status)i));
}

/* Parses body twice: as given (the fast path when it accepts) and with an
 * extra "exclude_docs":[] that only the jansson path reads. Returns 1 when
 * both give the same status and, on success, the same request bit for bit. */
static int same_as_jansson(const char *body, int *fast_took) {
  char err[256];
  size_t n = strlen(body), slow_len;
  char *slow_body = search_body_for_jansson(body, n, &slow_len);
  if (!slow_body) return 0;
  proto_search_req fast, slow, probe;
  memset(&probe, 0, sizeof probe);
  *fast_took = proto__search_parse_fast(body, n, &probe);
  proto_search_free(&probe);
  proto_status a = proto_search_parse(body, n, &fast, err, sizeof err);
  proto_status b = proto_search_parse(slow_body, slow_len, &slow, err, sizeof err);
  int same = a == b && (a != PROTO_OK || search_reqs_same(&fast, &slow));
  if (a == PROTO_OK) proto_search_free(&fast);
  if (b == PROTO_OK) proto_search_free(&slow);
  free(slow_body);
  return same;
}

static uint64_t rng_state = 42;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* One random number in one of the spellings clients use. */
static int random_number(char *out, size_t cap) {
  double u = (double)(rnd() >> 11) / 9007199254740992.0 * 2.0 - 1.0;
  float f = (float)u * (float)pow(10.0, (double)(int)(rnd() % 13) - 8.0);
  switch (rnd() % 9) {
    case 0:
      return snprintf(out, cap, "%.9g", (double)f);
    case 1:
      return snprintf(out, cap, "%.17g", (double)f);
    case 2:
      return snprintf(out, cap, "%.8e", (double)f);
    case 3:
      return snprintf(out, cap, "%.3f", (double)f);
    case 4:
      return snprintf(out, cap, "%d", (int)(rnd() % 2000001) - 1000000);
    case 5:
      return snprintf(out, cap, "%.20f", u); /* > 15 digits */
    case 6:
      return snprintf(out, cap, "%.6E", u * 1e-30); /* beyond 10^22 */
    case 7:
      return snprintf(out, cap, "%.9g", (double)f * 1e-37); /* float subnormals */
    default:
      return snprintf(out, cap, "%s",
                      (const char *[]){"0", "-0", "0.0", "-0.0", "1e0", "1E+2", "123456789012345",
                                       "-2.5e-3"}[rnd() % 8]);
  }
}

TEST(search_fast_path) {
  int all_same = 1, all_taken = 1;
  for (int t = 0; t < 3000; t++) {
    char body[8192];
    size_t n = 0;
    const char *sp = (t % 3 == 0) ? " \n\t" : "";
    n += (size_t)snprintf(body + n, sizeof body - n, "{%s\"vector\"%s:%s[", sp, sp, sp);
    size_t dim = 1 + rnd() % 40;
    for (size_t i = 0; i < dim; i++) {
      if (i) n += (size_t)snprintf(body + n, sizeof body - n, ",%s", sp);
      n += (size_t)random_number(body + n, sizeof body - n);
    }
    n += (size_t)snprintf(body + n, sizeof body - n, "]%s", sp);
    if (rnd() % 2)
      n += (size_t)snprintf(body + n, sizeof body - n, ",\"k\":%d", (int)(1 + rnd() % 1000));
    if (rnd() % 2)
      n += (size_t)snprintf(body + n, sizeof body - n, ",\"with_text\":%s",
                            rnd() % 2 ? "true" : "false");
    if (rnd() % 3 == 0)
      n += (size_t)snprintf(body + n, sizeof body - n, ",\"nprobe\":%d", (int)(rnd() % 65537));
    if (rnd() % 3 == 0)
      n += (size_t)snprintf(body + n, sizeof body - n, ",\"ef_search\":%d", (int)(rnd() % 100));
    snprintf(body + n, sizeof body - n, "%s}%s", sp, sp);
    int took;
    if (!same_as_jansson(body, &took)) {
      if (all_same) printf("# differs: %s\n", body);
      all_same = 0;
    }
    if (!took) {
      if (all_taken) printf("# declined: %s\n", body);
      all_taken = 0;
    }
  }
  CHECK(all_same);  /* 3000 random vector bodies: same floats as jansson's */
  CHECK(all_taken); /* ... and every one took the fast path */

  /* declined (jansson answers, the same way as without the fast path) */
  static const char *const declined[] = {
      "{\"vector\":[1,2],\"vector\":[1,2]}", /* repeated key */
      "{\"vector\":[1,2],\"k\":0}",          /* k out of range */
      "{\"vector\":[1,2],\"k\":1001}",
      "{\"vector\":[1,2],\"k\":2.0}",  /* not an integer */
      "{\"vector\":[1,2],\"k\":null}", /* null: jansson's default */
      "{\"vector\":[1e999]}",          /* double overflow */
      "{\"vector\":[1e39]}",           /* float overflow */
      "{\"vector\":[01]}",             /* leading zero */
      "{\"vector\":[1.]}",
      "{\"vector\":[.5]}",
      "{\"vector\":[-]}",
      "{\"vector\":[1e]}",
      "{\"vector\":[+1]}",
      "{\"vector\":[12345678901234567890]}", /* too big an integer for jansson */
      "{\"vector\":[1234567890123456]}",     /* 16 digits: jansson decides */
      "{\"vector\":[]}",
      "{\"vector\":[1,]}",
      "{\"vector\":[1 2]}",
      "{\"vector\":1}",
      "{\"vector\":[1]} x",
      "{\"vector\":[1]}}",
      "{\"vector\":[1],}",
      "{}",
      "[]",
      "",
      "{\"vector\":[1],\"with_text\":truex}",
      "{\"vector\":[1],\"with_text\":1}",
      "{\"\\u0076ector\":[1]}",           /* escaped key: same field for jansson */
      "{\"vector\":[1],\"query\":\"a\"}", /* both */
      "{\"vector\":[1],\"zz\":1}",        /* unknown */
      "{\"query\":\"a\"}",
      "{\"vector\":[1],\"nprobe\":65537}",
      "{\"vector\":[1],\"ef_search\":-1}",
  };
  int none_taken = 1, declined_same = 1;
  for (size_t i = 0; i < sizeof declined / sizeof declined[0]; i++) {
    proto_search_req r;
    memset(&r, 0, sizeof r);
    if (proto__search_parse_fast(declined[i], strlen(declined[i]), &r)) {
      printf("# taken: %s\n", declined[i]);
      none_taken = 0;
      proto_search_free(&r);
    }
    int took;
    if (strcmp(declined[i], "{}") != 0 && strchr(declined[i], '}') &&
        !same_as_jansson(declined[i], &took)) {
      printf("# differs: %s\n", declined[i]);
      declined_same = 0;
    }
  }
  CHECK(none_taken);
  CHECK(declined_same);
  char err[256];
  proto_search_req r;
  const char *f39 = "{\"vector\":[1e39]}", *k0 = "{\"vector\":[1],\"k\":0}";
  const char *bits = "{\"vector\":[-0, -0.0, 0.1, 1e-45]}";
  CHECK(proto_search_parse(f39, strlen(f39), &r, err, sizeof err) == PROTO_ERANGE);
  CHECK(proto_search_parse(k0, strlen(k0), &r, err, sizeof err) == PROTO_ERANGE);
  /* the bits of a few spellings */
  CHECK(proto_search_parse(bits, strlen(bits), &r, err, sizeof err) == PROTO_OK);
  CHECK(r.dim == 4 && !signbit(r.vector[0]) && signbit(r.vector[1]) && r.vector[2] == 0.1f &&
        r.vector[3] == 1e-45f && r.k == 10 && r.with_text == 1 && r.with_vectors == 0);
  proto_search_free(&r);
  /* with_vectors: the fast path declines it, the full parser reads it */
  const char *wv = "{\"vector\":[1],\"with_vectors\":true}";
  proto_search_req fast;
  memset(&fast, 0, sizeof fast);
  CHECK(!proto__search_parse_fast(wv, strlen(wv), &fast));
  CHECK(proto_search_parse(wv, strlen(wv), &r, err, sizeof err) == PROTO_OK && r.with_vectors == 1);
  proto_search_free(&r);
}

/* Every prefix of a few bodies, each in a buffer of exactly its length (no
 * terminator to stop a read past the end; the sanitizer build catches one):
 * the fast path declines each (none is a whole body). The fuzzer found a
 * fraction of leading zeros at the very end read one byte past it. */
TEST(search_fast_truncated) {
  static const char *const bodies[] = {
      "{\"vector\":[123456789012345,0.0]}",
      "{\"vector\":[0.00000000012345678,1.2345678901e-3,12345678]}",
      "{\"vector\":[-0.5, 1e5],\"k\":3,\"with_text\":false}",
  };
  int all_declined = 1;
  for (size_t b = 0; b < sizeof bodies / sizeof *bodies; b++) {
    size_t n = strlen(bodies[b]);
    for (size_t len = 0; len < n; len++) {
      char *exact = malloc(len ? len : 1);
      if (!exact) continue;
      memcpy(exact, bodies[b], len);
      proto_search_req r;
      memset(&r, 0, sizeof r);
      if (proto__search_parse_fast(exact, len, &r)) {
        printf("# taken: %.*s\n", (int)len, bodies[b]);
        all_declined = 0;
        proto_search_free(&r);
      }
      free(exact);
    }
  }
  CHECK(all_declined);
}

/* The printf form proto_float_text replaced, as the reference. */
static void float_text_printf(float v, char *out) {
  snprintf(out, 32, "%.8g", (double)v);
  if (strtof(out, NULL) != v) snprintf(out, 32, "%.9g", (double)v);
}

TEST(float_text) {
  char t[32], ref[32];
  static const float fixed[] = {
      0.5f,          1.0f,          -2.0f,  1200.0f,         0.0123f, 1e-5f,        1e-4f,
      123456792.0f,  3.4028235e38f, 1e-45f, 1.17549435e-38f, 0.1f,    -0.86602540f, 99999999.0f,
      9.9999999e-5f, 1e8f,          1e7f};
  int all_fixed = 1;
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
    proto_float_text(fixed[i], t);
    float_text_printf(fixed[i], ref);
    if (strcmp(t, ref) != 0) {
      printf("# %s vs printf %s\n", t, ref);
      all_fixed = 0;
    }
  }
  CHECK(all_fixed);
  CHECK(proto_float_text(0.0f, t) == 1 && strcmp(t, "0") == 0);
  CHECK(proto_float_text(-0.0f, t) == 2 && strcmp(t, "-0") == 0);
  long n = 0, back_ok = 0, same = 0;
  for (int i = 0; i < 2000000; i++) {
    uint32_t bits = (uint32_t)rnd();
    if (i % 2)
      bits = (bits & 0x807FFFFFu) |
             (uint32_t)(0x3A000000u + (rnd() % 0x0A000000u)); /* |v| in 1e-3..1e3 */
    float v;
    memcpy(&v, &bits, sizeof v);
    if (!isfinite(v)) continue;
    n++;
    size_t len = proto_float_text(v, t);
    back_ok += len == strlen(t) && (float)strtod(t, NULL) == v && strtof(t, NULL) == v;
    float_text_printf(v, ref);
    same += strcmp(t, ref) == 0;
  }
  printf("# %ld floats: %ld read back, %ld as printf wrote them\n", n, back_ok, same);
  CHECK(back_ok == n);          /* every one reads back to the same float */
  CHECK(same >= n - n / 10000); /* and reads as printf's %g form, but for rare near-ties */
}

/* RFC 4648's test vectors, and a run long enough to cross the writer's
 * 256-byte flush, against a reference written out here (3 bytes -> 4). */
TEST(base64) {
  static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  static const char *const want[] = {"\"\"",         "\"Zg==\"",     "\"Zm8=\"",    "\"Zm9v\"",
                                     "\"Zm9vYg==\"", "\"Zm9vYmE=\"", "\"Zm9vYmFy\""};
  for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
    proto_buf b = {0};
    proto_jw w;
    proto_jw_init(&w, &b);
    proto_jw_base64(&w, in[i], strlen(in[i]));
    CHECKF(b.len == strlen(want[i]) && !memcmp(b.data, want[i], b.len), "%s", in[i]);
    proto_buf_free(&b);
  }
  unsigned char bytes[1000];
  for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (unsigned char)(i * 37 + 11);
  static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char ref[1400];
  size_t k = 0;
  ref[k++] = '"';
  for (size_t i = 0; i + 3 <= 999; i += 3) { /* 999 bytes: no padding */
    ref[k++] = abc[bytes[i] >> 2];
    ref[k++] = abc[((bytes[i] & 3) << 4) | (bytes[i + 1] >> 4)];
    ref[k++] = abc[((bytes[i + 1] & 15) << 2) | (bytes[i + 2] >> 6)];
    ref[k++] = abc[bytes[i + 2] & 63];
  }
  ref[k++] = '"';
  proto_buf b = {0};
  proto_jw w;
  proto_jw_init(&w, &b);
  proto_jw_arr(&w);
  proto_jw_base64(&w, bytes, 999);
  proto_jw_arr_end(&w);
  CHECK(b.len == k + 2 && b.data[0] == '[' && !memcmp(b.data + 1, ref, k) && b.data[k + 1] == ']');
  proto_buf_free(&b);
}

/* The JSON writer's lossy copy replaces each maximal ill-formed subpart
 * (proto_utf8_decode's -k) with one U+FFFD. */
TEST(utf8_lossy) {
  proto_buf b;
  proto_buf_init(&b);
  proto_buf_add_utf8_lossy(&b,
                           "a\xf0\x9f"
                           "b\xed\xa0\x80"
                           "c\xe4\xb8",
                           10);
  CHECK(b.len == 18 && memcmp(b.data,
                              "a\xef\xbf\xbd"
                              "b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                              "c\xef\xbf\xbd",
                              18) == 0);
  proto_buf_free(&b);
}

/* JSON Merge Patch of metadata: RFC 7396's examples (Appendix A) whose
 * target and patch are objects, and the PATCH body's checks. */
static int merged(const char *target, const char *patch, const char *want) {
  char err[128] = "", *out = NULL;
  proto_status st = proto_metadata_merge(target, patch, &out, err, sizeof err);
  int same = st == PROTO_OK && out && !strcmp(out, want);
  if (!same) printf("#   %s + %s = %s (%s), want %s\n", target, patch, out ? out : "-", err, want);
  free(out);
  return same;
}

TEST(merge_patch) {
  CHECK(merged("{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"));
  CHECK(merged("{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"));
  CHECK(merged("{\"a\":\"b\"}", "{\"a\":null}", "{}"));
  CHECK(merged("{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"));
  CHECK(merged("{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"));
  CHECK(merged("{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"));
  CHECK(
      merged("{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"));
  CHECK(merged("{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"));
  CHECK(merged("{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"));
  CHECK(merged("{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"));
  CHECK(merged(NULL, "{\"a\":1}", "{\"a\":1}"));                        /* no metadata yet */
  CHECK(merged("[1]", "{\"a\":1}", "{\"a\":1}"));                       /* not an object: afresh */
  CHECK(merged("{\"z\":1,\"a\":2}", "{\"a\":3}", "{\"z\":1,\"a\":3}")); /* order kept */
  char err[128], *patch = NULL;
  const char *good = "{\"metadata\": {\"a\": null, \"b\": [1]}}";
  CHECK(proto_patch_parse(good, strlen(good), &patch, err, sizeof err) == PROTO_OK && patch &&
        !strcmp(patch, "{\"a\":null,\"b\":[1]}"));
  free(patch);
  static const struct {
    const char *body;
    proto_status st;
    const char *part;
  } bad[] = {{"[]", PROTO_ETYPE, "body: must be an object"},
             {"{}", PROTO_EMISSING, "metadata: missing"},
             {"{\"metadata\": 1}", PROTO_ETYPE, "metadata: must be an object"},
             {"{\"metadata\": {}, \"id\": \"x\"}", PROTO_EUNKNOWN_FIELD, "unknown field 'id'"},
             {"{\"metadata\": {}", PROTO_EJSON, "body: malformed JSON"}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    patch = (char *)1;
    proto_status st = proto_patch_parse(bad[i].body, strlen(bad[i].body), &patch, err, sizeof err);
    CHECKF(st == bad[i].st && !patch && strstr(err, bad[i].part), "%s: %s", bad[i].body, err);
  }
}

int main(void) {
  RUN(merge_patch);
  RUN(utf8_lossy);
  RUN(http_status);
  RUN(base64);
  RUN(search_fast_path);
  RUN(search_fast_truncated);
  RUN(float_text);
  return tap_done();
}
