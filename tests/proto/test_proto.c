/* test_proto.c - the status table and UTF-8 validation. */
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
  CHECK(!proto_utf8_valid("\xc3", 1));            /* truncated */
  CHECK(!proto_utf8_valid("\xc0\xaf", 2));        /* overlong */
  CHECK(!proto_utf8_valid("\xed\xa0\x80", 3));    /* surrogate */
  CHECK(!proto_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
  CHECK(!proto_utf8_valid("\xff", 1));
  CHECK(!proto_utf8_valid("a\x80", 2));
}

int main(void) {
  RUN(status_table);
  RUN(utf8);
  return tap_done();
}
