/* search_fast.c - a fast path for the commonest search body, a vector and
 * plain options: {"vector":[numbers], "k":N, "with_text":B, "nprobe":N,
 * "ef_search":N} in any order and spacing.
 *
 * Why: jansson builds a tree with an allocation per number and reads each
 * with strtod; for a 32-number vector that was a sixth of a search's CPU.
 *
 * What it does not do: decide anything. It accepts a body only when the
 * jansson path of proto_search_parse would accept it with the very same
 * result (the same floats, bit for bit); any other field, an escape in a
 * key, null, a repeated key, a number it cannot convert exactly, a value out
 * of range, any syntax error: it declines, and the jansson path parses the
 * body and words the error.
 */
#include "json_priv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

/* Skips white space, then ch if it is next. */
static int eat(cursor *c, char ch) {
  skip_ws(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return 1;
  }
  return 0;
}

static int digit_at(const char *p, const char *end) { return p < end && *p >= '0' && *p <= '9'; }

static int is_digit(cursor *c) { return digit_at(c->p, c->end); }

/* 1 when p..p+8 (within end) are 8 ASCII digits: every byte's high nibble
 * is 3 and adding 6 keeps it 3. */
static int eight_digits(const char *p, const char *end) {
  if (end - p < 8) return 0;
  uint64_t v;
  memcpy(&v, p, 8);
  return ((v & 0xF0F0F0F0F0F0F0F0u) | (((v + 0x0606060606060606u) & 0xF0F0F0F0F0F0F0F0u) >> 4)) ==
         0x3333333333333333u;
}

/* The value of 8 ASCII digits, first digit most significant, in three
 * multiplications (pairs, then quadruples, then the eight) instead of a
 * dependent chain of eight: the digit loop was most of a 256-number
 * vector's parse (5.3 us, 3.0 with this). The bytes are taken as a
 * little-endian word (swapped on a big-endian host). */
static uint64_t eight_digits_value(const char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  v -= 0x3030303030303030u;
  v = v * 10 + (v >> 8); /* each byte pair's value in its low byte */
  const uint64_t mask = 0x000000FF000000FFu;
  return (((v & mask) * (100 + (1000000ull << 32))) +
          (((v >> 16) & mask) * (1 + (10000ull << 32)))) >>
         32;
}

/* Reads a run of digits at *pp into sig (while it holds fewer than 19
 * significant digits, counted in *digits; *kept counts those taken into sig,
 * for the fraction's scale). Leading zeros of a fraction (lead_zeros: while
 * no significant digit is seen) only count in *kept. */
static void digit_run(const char **pp, const char *end, uint64_t *sig, int *digits, int *kept,
                      int lead_zeros) {
  const char *p = *pp;
  for (;;) {
    /* eight_digits first: it checks p + 8 <= end before *p is read */
    if (*digits <= 11 && eight_digits(p, end) && (*digits > 0 || !lead_zeros || *p != '0')) {
      *sig = *sig * 100000000u + eight_digits_value(p);
      *digits += 8;
      *kept += 8;
      p += 8;
      continue;
    }
    if (!digit_at(p, end)) break;
    if (lead_zeros && *digits == 0 && *p == '0') {
      (*kept)++;
    } else {
      if (*digits < 19) {
        *sig = *sig * 10 + (uint64_t)(*p - '0');
        (*kept)++;
      }
      (*digits)++;
    }
    p++;
  }
  *pp = p;
}

/* A JSON number at c->p (RFC 8259 grammar), read as jansson reads it: an
 * integer token through long long, any other through strtod (correctly
 * rounded). Exact without strtod when the significand has at most 15
 * digits and the decimal exponent is within 22: both are then exact doubles
 * and one IEEE multiplication or division rounds correctly (Clinger's fast
 * path). Returns 0 to decline: bad syntax, an integer of 16 or more digits
 * (jansson may refuse it), a real that overflows. */
static int number(cursor *c, double *value, int *is_int) {
  const char *start = c->p;
  int neg = c->p < c->end && *c->p == '-';
  if (neg) c->p++;
  if (!is_digit(c)) return 0;
  uint64_t sig = 0;
  int digits = 0, frac_digits = 0, int_kept = 0; /* significant digits; digits after '.' kept */
  if (*c->p == '0') {
    c->p++;
    if (is_digit(c)) return 0; /* no leading zeros */
  } else {
    digit_run(&c->p, c->end, &sig, &digits, &int_kept, 0);
  }
  *is_int = 1;
  if (c->p < c->end && *c->p == '.') {
    c->p++;
    *is_int = 0;
    if (!is_digit(c)) return 0;
    digit_run(&c->p, c->end, &sig, &digits, &frac_digits, 1);
  }
  int exp10 = 0;
  if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
    c->p++;
    *is_int = 0;
    int exp_neg = 0;
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) exp_neg = *c->p++ == '-';
    if (!is_digit(c)) return 0;
    for (; is_digit(c); c->p++)
      if (exp10 < 100000) exp10 = exp10 * 10 + (*c->p - '0');
    if (exp_neg) exp10 = -exp10;
  }
  if (*is_int) {
    if (digits > 15) return 0;
    *value = (double)(neg ? -(long long)sig : (long long)sig); /* "-0" is +0 as in jansson */
    return 1;
  }
  if (digits <= 15) {
    int e = exp10 - frac_digits;
    double m = neg ? -(double)sig : (double)sig;
    if (e >= 0 && e <= 22) {
      *value = m * proto__exact_pow10[e];
      return 1;
    }
    if (e < 0 && e >= -22) {
      *value = m / proto__exact_pow10[-e];
      return 1;
    }
  }
  char tmp[64];
  size_t n = (size_t)(c->p - start);
  if (n >= sizeof tmp) return 0;
  memcpy(tmp, start, n);
  tmp[n] = 0;
  *value = strtod(tmp, NULL);
  return isfinite(*value);
}

/* An integer option in [lo, hi]. */
static int int_field(cursor *c, long long lo, long long hi, long long *out) {
  double v;
  int is_int;
  skip_ws(c);
  if (!number(c, &v, &is_int) || !is_int || v < (double)lo || v > (double)hi) return 0;
  *out = (long long)v;
  return 1;
}

static int bool_field(cursor *c, int *out) {
  skip_ws(c);
  size_t left = (size_t)(c->end - c->p);
  if (left >= 4 && memcmp(c->p, "true", 4) == 0) {
    c->p += 4;
    *out = 1;
    return 1;
  }
  if (left >= 5 && memcmp(c->p, "false", 5) == 0) {
    c->p += 5;
    *out = 0;
    return 1;
  }
  return 0;
}

/* "vector": 1..PROTO_MAX_DIM numbers, each finite as a float. */
static int vector_field(cursor *c, float **vec, size_t *dim) {
  size_t cap = 64, n = 0;
  float *v = malloc(cap * sizeof *v);
  if (!v || !eat(c, '[')) goto decline;
  do {
    double d;
    int is_int;
    skip_ws(c);
    if (!number(c, &d, &is_int) || !isfinite((float)d)) goto decline;
    if (n == cap) {
      if (cap >= PROTO_MAX_DIM) goto decline;
      float *grown = realloc(v, 2 * cap * sizeof *v);
      if (!grown) goto decline;
      v = grown;
      cap *= 2;
    }
    v[n++] = (float)d;
  } while (eat(c, ','));
  if (!eat(c, ']')) goto decline;
  *vec = v;
  *dim = n;
  return 1;
decline:
  free(v);
  return 0;
}

enum { F_VECTOR = 1, F_K = 2, F_WITH_TEXT = 4, F_NPROBE = 8, F_EF = 16 };

/* The field named by the key at c->p (a plain ASCII string), or 0. */
static int field_key(cursor *c) {
  static const struct {
    const char *name;
    int flag;
  } known[] = {{"vector", F_VECTOR},
               {"k", F_K},
               {"with_text", F_WITH_TEXT},
               {"nprobe", F_NPROBE},
               {"ef_search", F_EF}};
  if (!eat(c, '"')) return 0;
  const char *k = c->p;
  while (c->p < c->end && *c->p != '"') {
    unsigned char ch = (unsigned char)*c->p;
    if (ch == '\\' || ch < 0x20 || ch >= 0x80) return 0;
    c->p++;
  }
  if (c->p == c->end) return 0;
  size_t n = (size_t)(c->p - k);
  c->p++;
  if (!eat(c, ':')) return 0;
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (strlen(known[i].name) == n && memcmp(known[i].name, k, n) == 0) return known[i].flag;
  return 0;
}

int proto__search_parse_fast(const char *text, size_t len, proto_search_req *out) {
  cursor c = {text, text + len};
  float *vec = NULL;
  size_t dim = 0;
  long long k = 10, nprobe = 0, ef = 0;
  int with_text = 1, seen = 0;
  if (!eat(&c, '{')) return 0;
  do {
    int f = field_key(&c);
    if (!f || (seen & f)) goto decline;
    seen |= f;
    int ok = f == F_VECTOR   ? vector_field(&c, &vec, &dim)
             : f == F_K      ? int_field(&c, 1, PROTO_MAX_K, &k)
             : f == F_NPROBE ? int_field(&c, 0, 65536, &nprobe)
             : f == F_EF     ? int_field(&c, 0, 65536, &ef)
                             : bool_field(&c, &with_text);
    if (!ok) goto decline;
  } while (eat(&c, ','));
  if (!eat(&c, '}')) goto decline;
  skip_ws(&c);
  if (c.p != c.end || !vec) goto decline;
  memset(out, 0, sizeof *out);
  out->vector = vec;
  out->dim = dim;
  out->k = (int)k;
  out->nprobe = (int)nprobe;
  out->ef_search = (int)ef;
  out->with_text = with_text;
  out->group_size = 1;
  return 1;
decline:
  free(vec);
  return 0;
}
