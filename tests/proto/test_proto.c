/* test_proto.c - the status table, the error detail, UTF-8 validation and
 * decoding. */
#include "proto.h"
#include "../tap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

TEST(status_table) {
  CHECK(strcmp(proto_strerror(PROTO_OK), "ok") == 0);
  CHECK(strcmp(proto_status_name(PROTO_EDIM), "EDIM") == 0);
  CHECK(strcmp(proto_strerror((proto_status)9999), "unknown status") == 0);
  for (int i = 0; i < PROTO_STATUS_COUNT; i++)
    CHECK(strcmp(proto_strerror((proto_status)i), "unknown status") != 0 &&
          strcmp(proto_status_name((proto_status)i), "UNKNOWN") != 0);
}

TEST(utf8) {
  CHECK(proto_utf8_valid("", 0));
  CHECK(proto_utf8_valid("hello", 5));
  CHECK(proto_utf8_valid("caf\xc3\xa9", 5));
  CHECK(proto_utf8_valid("\xe4\xb8\xad\xe6\x96\x87", 6));
  CHECK(proto_utf8_valid("\xf0\x9f\x98\x80", 4));
  CHECK(!proto_utf8_valid("\xc3", 1));             /* truncated */
  CHECK(!proto_utf8_valid("\xc0\xaf", 2));         /* overlong */
  CHECK(!proto_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
  CHECK(!proto_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
  CHECK(!proto_utf8_valid("\xff", 1));
  CHECK(!proto_utf8_valid("a\x80", 2));
}

/* ASCII white space only: a NUL byte or a non-breaking space is text */
TEST(blank) {
  CHECK(proto_blank("", 0));
  CHECK(proto_blank(" \t\n\v\f\r", 6));
  CHECK(!proto_blank(" a ", 3));
  CHECK(!proto_blank("\0", 1));
  CHECK(!proto_blank("\xc2\xa0", 2));
  CHECK(proto_blank("  x", 2)); /* only the first len bytes count */
}

/* decode(s) == want (a length, 0 or -k); on success also the code point */
static int decodes(const char *s, size_t len, int want, uint32_t want_cp) {
  uint32_t cp = 0xDEADBEEF;
  int n = proto_utf8_decode(s, len, &cp);
  return n == want && (n <= 0 || cp == want_cp);
}

TEST(utf8_decode) {
  /* one of each length, and the ends of each range */
  CHECK(decodes("A", 1, 1, 0x41));
  CHECK(decodes("\x00", 1, 1, 0));
  CHECK(decodes("\x7f", 1, 1, 0x7F));
  CHECK(decodes("\xc2\x80", 2, 2, 0x80));
  CHECK(decodes("\xc3\xa9xyz", 5, 2, 0xE9)); /* stops after the sequence */
  CHECK(decodes("\xdf\xbf", 2, 2, 0x7FF));
  CHECK(decodes("\xe0\xa0\x80", 3, 3, 0x800));
  CHECK(decodes("\xe4\xb8\xad", 3, 3, 0x4E2D));
  CHECK(decodes("\xed\x9f\xbf", 3, 3, 0xD7FF)); /* last before the surrogates */
  CHECK(decodes("\xee\x80\x80", 3, 3, 0xE000)); /* first after them */
  CHECK(decodes("\xef\xbf\xbf", 3, 3, 0xFFFF));
  CHECK(decodes("\xf0\x90\x80\x80", 4, 4, 0x10000));
  CHECK(decodes("\xf0\x9f\x98\x80", 4, 4, 0x1F600));
  CHECK(decodes("\xf4\x8f\xbf\xbf", 4, 4, 0x10FFFF));
  CHECK(proto_utf8_decode("\xe4\xb8\xad", 3, NULL) == 3); /* cp may be NULL */
  /* overlong forms: -k, k the bytes one U+FFFD replaces */
  CHECK(decodes("\xc0\xaf", 2, -1, 0));
  CHECK(decodes("\xc1\xbf", 2, -1, 0));
  CHECK(decodes("\xe0\x80\xaf", 3, -1, 0));
  CHECK(decodes("\xe0\x9f\xbf", 3, -1, 0));
  CHECK(decodes("\xf0\x80\x80\xaf", 4, -1, 0));
  CHECK(decodes("\xf0\x8f\xbf\xbf", 4, -1, 0));
  /* surrogates U+D800..U+DFFF */
  CHECK(decodes("\xed\xa0\x80", 3, -1, 0));
  CHECK(decodes("\xed\xbf\xbf", 3, -1, 0));
  /* above U+10FFFF */
  CHECK(decodes("\xf4\x90\x80\x80", 4, -1, 0));
  CHECK(decodes("\xf5\x80\x80\x80", 4, -1, 0));
  CHECK(decodes("\xf7\xbf\xbf\xbf", 4, -1, 0));
  /* bytes that never start a sequence */
  CHECK(decodes("\x80", 1, -1, 0));
  CHECK(decodes("\xbf\x80", 2, -1, 0));
  CHECK(decodes("\xfe", 1, -1, 0));
  CHECK(decodes("\xff", 1, -1, 0));
  /* a valid start broken later: the maximal subpart */
  CHECK(
      decodes("\xe4\xb8"
              "A",
              3, -2, 0));
  CHECK(
      decodes("\xf0\x9f\x98"
              "A",
              4, -3, 0));
  CHECK(
      decodes("\xf0\x9f"
              "\xc3\xa9",
              4, -2, 0));
  CHECK(
      decodes("\xc3"
              "A",
              2, -1, 0));
  /* truncated: a well-formed start that the input cuts short */
  CHECK(decodes("\xc3", 1, 0, 0));
  CHECK(decodes("\xe4\xb8", 2, 0, 0));
  CHECK(decodes("\xe4", 1, 0, 0));
  CHECK(decodes("\xf0\x9f\x98", 3, 0, 0));
  CHECK(decodes("\xf0", 1, 0, 0));
  CHECK(decodes("", 0, 0, 0));
  /* ... but not when the bytes so far are already wrong */
  CHECK(decodes("\xe0\x80", 2, -1, 0));
  CHECK(decodes("\xed\xa0", 2, -1, 0));
  CHECK(decodes("\xf4\x90", 2, -1, 0));
  /* every scalar value, written by hand here, decodes back */
  int all = 1;
  for (uint32_t c = 0; c <= 0x10FFFF && all; c++) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    char b[4];
    size_t n;
    if (c < 0x80) {
      b[0] = (char)c;
      n = 1;
    } else if (c < 0x800) {
      b[0] = (char)(0xC0 | c >> 6);
      b[1] = (char)(0x80 | (c & 0x3F));
      n = 2;
    } else if (c < 0x10000) {
      b[0] = (char)(0xE0 | c >> 12);
      b[1] = (char)(0x80 | ((c >> 6) & 0x3F));
      b[2] = (char)(0x80 | (c & 0x3F));
      n = 3;
    } else {
      b[0] = (char)(0xF0 | c >> 18);
      b[1] = (char)(0x80 | ((c >> 12) & 0x3F));
      b[2] = (char)(0x80 | ((c >> 6) & 0x3F));
      b[3] = (char)(0x80 | (c & 0x3F));
      n = 4;
    }
    all = decodes(b, n, (int)n, c);
    for (size_t cut = 1; cut < n; cut++) all = all && decodes(b, cut, 0, 0); /* cut short */
  }
  CHECK(all);
}

#include <pthread.h>

static void *set_elsewhere(void *arg) {
  (void)arg;
  proto_err_set("from another thread");
  return NULL;
}

TEST(error_detail) {
  CHECK(proto_err_get() != NULL && proto_err_get()[0] == 0); /* "" before any failure */
  proto_err_set("store: %s #%d", "document", 7);
  CHECK(strcmp(proto_err_get(), "store: document #7") == 0);
  /* a wrapper may quote the detail it replaces */
  CHECK(proto_fail(PROTO_EIO, "engine: %s", proto_err_get()) == PROTO_EIO);
  CHECK(strcmp(proto_err_get(), "engine: store: document #7") == 0);
  /* per thread */
  pthread_t t;
  CHECK(pthread_create(&t, NULL, set_elsewhere, NULL) == 0 && pthread_join(t, NULL) == 0);
  CHECK(strcmp(proto_err_get(), "engine: store: document #7") == 0);
  /* cut, still terminated */
  char big[3 * PROTO_ERR_MAX];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = 0;
  proto_err_set("%s", big);
  CHECK(strlen(proto_err_get()) == PROTO_ERR_MAX - 1);
  proto_err_clear();
  CHECK(strcmp(proto_err_get(), "") == 0);
}

int main(void) {
  RUN(status_table);
  RUN(error_detail);
  RUN(utf8);
  RUN(utf8_decode);
  RUN(blank);
  return tap_done();
}
