/* utf8.c - the one strict UTF-8 decoder (RFC 3629, Unicode Table 3-7): it
 * rejects overlong forms, surrogates and code points above U+10FFFF. The
 * validator, the JSON writer's lossy copy, the tokenizers and the streaming
 * of generated text all read UTF-8 through proto_utf8_decode. proto_blank
 * (a text of nothing but ASCII white space) lives here with them. */
#include "proto.h"

int proto_utf8_decode(const char *str, size_t len, uint32_t *cp) {
  const unsigned char *s = (const unsigned char *)str;
  if (len == 0) return 0;
  unsigned c = s[0];
  if (c < 0x80) {
    if (cp) *cp = c;
    return 1;
  }
  /* the second byte's range excludes overlongs (E0, F0), surrogates (ED)
   * and code points past U+10FFFF (F4) */
  unsigned lo = 0x80, hi = 0xBF;
  size_t need;
  uint32_t v;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
    v = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    v = c & 0x0F;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    v = c & 0x07;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else return -1; /* a continuation byte, C0, C1 or F5..FF */
  for (size_t k = 1; k <= need; k++) {
    if (k == len) return 0; /* a valid start that the input cuts short */
    unsigned d = s[k];
    if (d < lo || d > hi) return -(int)k;
    lo = 0x80;
    hi = 0xBF;
    v = (v << 6) | (d & 0x3F);
  }
  if (cp) *cp = v;
  return (int)need + 1;
}

int proto_utf8_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    int n = proto_utf8_decode(str + i, len - i, NULL);
    if (n <= 0) return 0;
    i += (size_t)n;
  }
  return 1;
}

int proto_blank(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (s[i] != ' ' && (s[i] < '\t' || s[i] > '\r')) return 0;
  return 1;
}
