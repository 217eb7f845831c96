/* json.c - JSON for the HTTP API: a growable buffer, a streaming JSON writer
 * that always emits valid UTF-8, and strict decoders (jansson, duplicate keys
 * rejected) that turn request bodies into the plain structs of api.h. Every
 * decoder error names the offending field. The HTTP status of a returned
 * status is api_http_status's (http_status.c). */
#include "json_priv.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffer --------------------------------------------------------------- */

void proto_buf_init(proto_buf *b) { memset(b, 0, sizeof *b); }

void proto_buf_free(proto_buf *b) {
  if (!b) return;
  free(b->data);
  memset(b, 0, sizeof *b);
}

static int buf_reserve(proto_buf *b, size_t extra) {
  if (b->failed) return 0;
  if (extra > ((size_t)-1) / 2 - b->len) { /* len + extra + 1 would not fit */
    b->failed = 1;
    return 0;
  }
  if (b->len + extra + 1 <= b->cap) return 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) {
    if (cap > ((size_t)-1) / 2) {
      b->failed = 1;
      return 0;
    }
    cap *= 2;
  }
  char *p = realloc(b->data, cap);
  if (!p) {
    b->failed = 1;
    return 0;
  }
  b->data = p;
  b->cap = cap;
  return 1;
}

void proto_buf_add(proto_buf *b, const void *p, size_t n) {
  if (!buf_reserve(b, n)) return;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void proto_buf_adds(proto_buf *b, const char *s) { proto_buf_add(b, s, strlen(s)); }

void proto_buf_addf(proto_buf *b, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->failed = 1;
    return;
  }
  if ((size_t)n < sizeof small) {
    proto_buf_add(b, small, (size_t)n);
    return;
  }
  if (!buf_reserve(b, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* Length of the well-formed UTF-8 sequence at s (1..4), or 0 when ill-formed;
 * *bad receives how many bytes one U+FFFD replaces (a sequence cut short by
 * the end: all of them). */
static size_t utf8_seq(const unsigned char *s, size_t avail, size_t *bad) {
  int n = proto_utf8_decode((const char *)s, avail, NULL);
  *bad = n < 0 ? (size_t)-n : avail;
  return n > 0 ? (size_t)n : 0;
}

void proto_buf_add_utf8_lossy(proto_buf *b, const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0, run = 0;
  while (i < len) {
    size_t bad, n = s[i] < 0x80 ? 1 : utf8_seq(s + i, len - i, &bad);
    if (n) {
      i += n;
      continue;
    }
    proto_buf_add(b, s + run, i - run);
    proto_buf_add(b, "\xEF\xBF\xBD", 3);
    i += bad;
    run = i;
  }
  proto_buf_add(b, s + run, i - run);
}

/* ---- writer --------------------------------------------------------------- */

void proto_jw_init(proto_jw *w, proto_buf *b) {
  memset(w, 0, sizeof *w);
  w->b = b;
}

static void jw_value_start(proto_jw *w) {
  if (w->after_key) {
    w->after_key = 0;
    return;
  }
  uint64_t bit = (uint64_t)1 << (w->depth & 63);
  if (w->need_comma & bit) proto_buf_add(w->b, ",", 1);
  w->need_comma |= bit;
}

static void jw_open(proto_jw *w, char c) {
  jw_value_start(w);
  proto_buf_add(w->b, &c, 1);
  if (w->depth < 63) w->depth++;
  w->need_comma &= ~((uint64_t)1 << w->depth);
}

static void jw_close(proto_jw *w, char c) {
  proto_buf_add(w->b, &c, 1);
  if (w->depth > 0) w->depth--;
}

void proto_jw_obj(proto_jw *w) { jw_open(w, '{'); }
void proto_jw_obj_end(proto_jw *w) { jw_close(w, '}'); }
void proto_jw_arr(proto_jw *w) { jw_open(w, '['); }
void proto_jw_arr_end(proto_jw *w) { jw_close(w, ']'); }

static void jw_string(proto_buf *b, const char *str, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0, run = 0;
  while (i < len && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\') i++;
  if (i == len && buf_reserve(b, len + 2)) { /* plain ASCII (keys, ids): one copy */
    char *d = b->data + b->len;
    d[0] = '"';
    memcpy(d + 1, str, len);
    d[len + 1] = '"';
    b->len += len + 2;
    b->data[b->len] = '\0';
    return;
  }
  proto_buf_add(b, "\"", 1);
  while (i < len) {
    unsigned c = s[i];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0x80) {
      size_t bad, n = utf8_seq(s + i, len - i, &bad);
      if (n) {
        i += n;
        continue;
      }
      proto_buf_add(b, s + run, i - run);
      proto_buf_add(b, "\xEF\xBF\xBD", 3);
      i += bad;
      run = i;
      continue;
    }
    proto_buf_add(b, s + run, i - run);
    char esc[7];
    switch (c) {
      case '"':
        proto_buf_add(b, "\\\"", 2);
        break;
      case '\\':
        proto_buf_add(b, "\\\\", 2);
        break;
      case '\n':
        proto_buf_add(b, "\\n", 2);
        break;
      case '\r':
        proto_buf_add(b, "\\r", 2);
        break;
      case '\t':
        proto_buf_add(b, "\\t", 2);
        break;
      case '\b':
        proto_buf_add(b, "\\b", 2);
        break;
      case '\f':
        proto_buf_add(b, "\\f", 2);
        break;
      default:
        esc[0] = '\\';
        esc[1] = 'u';
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        esc[6] = 0;
        proto_buf_add(b, esc, 6);
    }
    i++;
    run = i;
  }
  proto_buf_add(b, s + run, i - run);
  proto_buf_add(b, "\"", 1);
}

void proto_jw_key(proto_jw *w, const char *key) {
  jw_value_start(w);
  jw_string(w->b, key, strlen(key));
  proto_buf_add(w->b, ":", 1);
  w->after_key = 1;
}

void proto_jw_str(proto_jw *w, const char *s, size_t len) {
  jw_value_start(w);
  jw_string(w->b, s ? s : "", s ? len : 0);
}

void proto_jw_cstr(proto_jw *w, const char *s) {
  if (!s) {
    proto_jw_null(w);
    return;
  }
  proto_jw_str(w, s, strlen(s));
}

/* Decimal digits of v, without printf (search responses write several
 * integers per hit; printf's format parsing was a visible share of them). */
static void jw_digits(proto_buf *b, int negative, uint64_t v) {
  char tmp[24];
  size_t i = sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  if (negative) tmp[--i] = '-';
  proto_buf_add(b, tmp + i, sizeof tmp - i);
}

void proto_jw_int(proto_jw *w, int64_t v) {
  jw_value_start(w);
  /* the magnitude as unsigned: exact for INT64_MIN too */
  jw_digits(w->b, v < 0, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
}

void proto_jw_uint(proto_jw *w, uint64_t v) {
  jw_value_start(w);
  jw_digits(w->b, 0, v);
}

void proto_jw_num(proto_jw *w, double v) {
  if (!isfinite(v)) {
    proto_jw_null(w);
    return;
  }
  jw_value_start(w);
  char tmp[40];
  snprintf(tmp, sizeof tmp, "%.15g", v); /* shortest that reads back exactly */
  if (strtod(tmp, NULL) != v) snprintf(tmp, sizeof tmp, "%.17g", v);
  proto_buf_adds(w->b, tmp);
}

const double proto__exact_pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* v (finite, non-zero) with p significant digits, in printf's %.{p}g form,
 * without printf: the digits come from one exact-power scaling, and are kept
 * only when they read back (as a double, then a float, as JSON readers do)
 * to v itself. Returns 1 with *len set, 0 when the p digits do not read
 * back to v, -1 when this cannot tell (v beyond the exactly scaled range, or
 * near a power of ten); out holds 32 bytes. */
static int float_g(float v, int p, char *out, size_t *len) {
  double a = fabs((double)v);
  int e10 = (int)floor(log10(a));
  int scale = p - 1 - e10; /* a * 10^scale has p digits before the point */
  if (scale < -22 || scale > 22) return -1;
  double m = nearbyint(scale >= 0 ? a * proto__exact_pow10[scale] : a / proto__exact_pow10[-scale]);
  /* not p digits: log10 was off by one near a power of ten, or the rounding
   * carried into one more digit; printf does these */
  if (m < proto__exact_pow10[p - 1] || m >= proto__exact_pow10[p]) return -1;
  double back = scale >= 0 ? m / proto__exact_pow10[scale] : m * proto__exact_pow10[-scale];
  if ((float)back != (float)a) return 0;
  char digits[24];
  int nd = 0;
  for (uint64_t u = (uint64_t)m; nd < p; u /= 10) digits[p - 1 - nd++] = (char)('0' + u % 10);
  while (nd > 1 && digits[nd - 1] == '0') nd--; /* %g drops trailing zeros */
  size_t n = 0;
  if (v < 0) out[n++] = '-';
  if (e10 < -4 || e10 >= p) { /* d.ddde+XX */
    out[n++] = digits[0];
    if (nd > 1) {
      out[n++] = '.';
      for (int i = 1; i < nd; i++) out[n++] = digits[i];
    }
    int x = e10 < 0 ? -e10 : e10;
    out[n++] = 'e';
    out[n++] = e10 < 0 ? '-' : '+';
    if (x >= 100) out[n++] = (char)('0' + x / 100);
    out[n++] = (char)('0' + x / 10 % 10);
    out[n++] = (char)('0' + x % 10);
  } else if (e10 < 0) { /* 0.000ddd */
    out[n++] = '0';
    out[n++] = '.';
    for (int i = -1; i > e10; i--) out[n++] = '0';
    for (int i = 0; i < nd; i++) out[n++] = digits[i];
  } else { /* ddd.ddd */
    for (int i = 0; i <= e10; i++) out[n++] = i < nd ? digits[i] : '0';
    if (nd > e10 + 1) {
      out[n++] = '.';
      for (int i = e10 + 1; i < nd; i++) out[n++] = digits[i];
    }
  }
  out[n] = 0;
  *len = n;
  return 1;
}

size_t proto_float_text(float v, char *out) {
  if (v == 0) {
    memcpy(out, signbit(v) ? "-0" : "0", signbit(v) ? 3 : 2);
    return signbit(v) ? 2 : 1;
  }
  size_t n;
  int r = float_g(v, 8, out, &n);
  if (r == 0) r = float_g(v, 9, out, &n);
  if (r == 1) return n;
  /* printf: 8 digits when they read back, else 9 (always enough) */
  char tmp[32];
  snprintf(tmp, sizeof tmp, "%.8g", (double)v);
  if (strtof(tmp, NULL) != v) snprintf(tmp, sizeof tmp, "%.9g", (double)v);
  n = strlen(tmp);
  memcpy(out, tmp, n + 1);
  return n;
}

void proto_jw_float(proto_jw *w, float v) {
  if (!isfinite(v)) {
    proto_jw_null(w);
    return;
  }
  jw_value_start(w);
  char tmp[32];
  proto_buf_add(w->b, tmp, proto_float_text(v, tmp));
}

void proto_jw_bool(proto_jw *w, int v) {
  jw_value_start(w);
  proto_buf_adds(w->b, v ? "true" : "false");
}

void proto_jw_base64(proto_jw *w, const void *data, size_t n) {
  static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *p = data;
  char out[4 * 64];
  size_t k = 0;
  jw_value_start(w);
  proto_buf_add(w->b, "\"", 1);
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < n) v |= p[i + 2];
    out[k++] = abc[v >> 18];
    out[k++] = abc[(v >> 12) & 63];
    out[k++] = i + 1 < n ? abc[(v >> 6) & 63] : '=';
    out[k++] = i + 2 < n ? abc[v & 63] : '=';
    if (k == sizeof out) {
      proto_buf_add(w->b, out, k);
      k = 0;
    }
  }
  proto_buf_add(w->b, out, k);
  proto_buf_add(w->b, "\"", 1);
}

void proto_jw_null(proto_jw *w) {
  jw_value_start(w);
  proto_buf_add(w->b, "null", 4);
}

void proto_jw_raw(proto_jw *w, const char *json, size_t len) {
  jw_value_start(w);
  proto_buf_add(w->b, json, len);
}

void proto_json_error(proto_buf *b, proto_status st, const char *msg) {
  proto_jw w;
  proto_jw_init(&w, b);
  proto_jw_obj(&w);
  proto_jw_key(&w, "error");
  proto_jw_obj(&w);
  proto_jw_key(&w, "code");
  proto_jw_cstr(&w, proto_status_name(st));
  proto_jw_key(&w, "message");
  proto_jw_cstr(&w, msg ? msg : proto_strerror(st));
  proto_jw_obj_end(&w);
  proto_jw_obj_end(&w);
}

/* ---- decoding helpers ----------------------------------------------------- */

PROTO_PRINTF(4, 5)
static proto_status fail(proto_status st, char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return st;
}

static proto_status parse_root(const char *text, size_t len, json_t **out, char *err,
                               size_t errlen) {
  json_error_t je;
  *out = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
  if (*out) return PROTO_OK;
  if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) /* else named as an invisible character */
    return fail(PROTO_EJSON, err, errlen,
                "body: starts with a UTF-8 byte order mark (EF BB BF), which JSON text must not "
                "have (RFC 8259): save or send it without one");
  enum json_error_code code = json_error_code(&je);
  if (code == json_error_invalid_utf8)
    return fail(PROTO_EUTF8, err, errlen, "body: invalid UTF-8 at byte %d", je.position);
  if (code == json_error_duplicate_key) return fail(PROTO_EJSON, err, errlen, "body: %s", je.text);
  if (code == json_error_null_character) /* jansson's text names its own flag */
    return fail(PROTO_EJSON, err, errlen,
                "body: line %d column %d: a string holds \\u0000 (NUL), which is not accepted",
                je.line, je.column);
  if (code == json_error_out_of_memory)
    return fail(PROTO_ENOMEM, err, errlen, "body: out of memory");
  return fail(PROTO_EJSON, err, errlen, "body: malformed JSON at line %d column %d: %s", je.line,
              je.column, je.text);
}

/* Rejects keys not in allowed (NULL-terminated). */
static proto_status check_fields(json_t *obj, const char *where, const char *const *allowed,
                                 char *err, size_t errlen) {
  const char *key;
  json_t *v;
  json_object_foreach(obj, key, v) {
    int ok = 0;
    for (const char *const *a = allowed; *a; a++)
      if (strcmp(*a, key) == 0) {
        ok = 1;
        break;
      }
    if (!ok)
      return fail(PROTO_EUNKNOWN_FIELD, err, errlen, "%s%sunknown field '%.64s'",
                  where ? where : "", where ? ": " : "", key);
  }
  return PROTO_OK;
}

/* A body that must be a JSON object with none but the given fields:
 * *root is set for the caller to release, whatever the status. */
static proto_status parse_object(const char *text, size_t len, const char *const *fields,
                                 json_t **root, char *err, size_t errlen) {
  proto_status st = parse_root(text, len, root, err, errlen);
  if (st != PROTO_OK) return st;
  if (!json_is_object(*root)) return fail(PROTO_ETYPE, err, errlen, "body: must be an object");
  return check_fields(*root, NULL, fields, err, errlen);
}

/* where + "." + field for messages */
#define FIELD(where, name) (where) ? (where) : "", (where) ? "." : "", (name)

static proto_status get_int(json_t *obj, const char *where, const char *name, long long lo,
                            long long hi, long long def, long long *out, char *err, size_t errlen) {
  json_t *v = json_object_get(obj, name);
  if (!v || json_is_null(v)) {
    *out = def;
    return PROTO_OK;
  }
  if (!json_is_integer(v))
    return fail(PROTO_ETYPE, err, errlen, "%s%s%s: must be an integer", FIELD(where, name));
  long long x = json_integer_value(v);
  if (x < lo || x > hi)
    return fail(PROTO_ERANGE, err, errlen, "%s%s%s: must be an integer in [%lld, %lld]",
                FIELD(where, name), lo, hi);
  *out = x;
  return PROTO_OK;
}

static proto_status get_bool(json_t *obj, const char *name, int def, int *out, char *err,
                             size_t errlen) {
  json_t *v = json_object_get(obj, name);
  if (!v || json_is_null(v)) {
    *out = def;
    return PROTO_OK;
  }
  if (!json_is_boolean(v)) return fail(PROTO_ETYPE, err, errlen, "%s: must be a boolean", name);
  *out = json_is_true(v);
  return PROTO_OK;
}

static proto_status get_num(json_t *obj, const char *name, double def, double *out, char *err,
                            size_t errlen) {
  json_t *v = json_object_get(obj, name);
  if (!v || json_is_null(v)) {
    *out = def;
    return PROTO_OK;
  }
  if (!json_is_number(v)) return fail(PROTO_ETYPE, err, errlen, "%s: must be a number", name);
  *out = json_number_value(v);
  return PROTO_OK;
}

static char *dup_str(json_t *s, size_t *len) {
  size_t n = json_string_length(s);
  char *p = malloc(n + 1);
  if (!p) return NULL;
  memcpy(p, json_string_value(s), n);
  p[n] = 0;
  if (len) *len = n;
  return p;
}

static void free_strs(char **v, size_t n) {
  if (!v) return;
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* A string or (when allow_array) an array of 1..max strings. */
static proto_status get_strs(json_t *v, const char *name, int allow_array, size_t max,
                             size_t max_bytes, char ***strs, size_t **lens, size_t *n,
                             int *was_array, char *err, size_t errlen) {
  *strs = NULL;
  *n = 0;
  if (lens) *lens = NULL;
  size_t count;
  if (json_is_string(v)) count = 1;
  else if (allow_array && json_is_array(v)) count = json_array_size(v);
  else
    return fail(PROTO_ETYPE, err, errlen, "%s: must be a string%s", name,
                allow_array ? " or an array of strings" : "");
  if (was_array) *was_array = json_is_array(v);
  if (json_is_array(v) && count == 0)
    return fail(PROTO_ERANGE, err, errlen, "%s: must hold at least one string", name);
  if (json_is_array(v) && count > max)
    return fail(PROTO_ERANGE, err, errlen, "%s: at most %zu strings", name, max);
  char **s = calloc(count, sizeof *s);
  size_t *l = calloc(count, sizeof *l);
  if (!s || !l) {
    free(s);
    free(l);
    return fail(PROTO_ENOMEM, err, errlen, "%s: out of memory", name);
  }
  proto_status st = PROTO_OK;
  for (size_t i = 0; i < count; i++) {
    json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
    if (!json_is_string(e)) {
      st = fail(PROTO_ETYPE, err, errlen, "%s[%zu]: must be a string", name, i);
      goto leave;
    }
    if (max_bytes && json_string_length(e) > max_bytes) {
      st = fail(PROTO_ERANGE, err, errlen, "%s[%zu]: longer than %zu bytes", name, i, max_bytes);
      goto leave;
    }
    s[i] = dup_str(e, &l[i]);
    if (!s[i]) {
      st = fail(PROTO_ENOMEM, err, errlen, "%s: out of memory", name);
      goto leave;
    }
  }
leave:
  if (st != PROTO_OK) {
    free_strs(s, count);
    free(l);
    return st;
  }
  *strs = s;
  if (lens) *lens = l;
  else free(l);
  *n = count;
  return PROTO_OK;
}

static proto_status get_model(json_t *obj, char **model, char *err, size_t errlen) {
  json_t *v = json_object_get(obj, "model");
  *model = NULL;
  if (!v || json_is_null(v)) return PROTO_OK;
  if (!json_is_string(v)) return fail(PROTO_ETYPE, err, errlen, "model: must be a string");
  *model = dup_str(v, NULL);
  return *model ? PROTO_OK : fail(PROTO_ENOMEM, err, errlen, "model: out of memory");
}

/* Strings that must hold text (get_strs's): the first empty one named, as
 * name[i] when they came as an array. */
static proto_status no_empty_string(const char *name, char *const *s, size_t n, int indexed,
                                    char *err, size_t errlen) {
  for (size_t i = 0; i < n; i++)
    if (!s[i][0])
      return indexed ? fail(PROTO_ERANGE, err, errlen, "%s[%zu]: empty string", name, i)
                     : fail(PROTO_ERANGE, err, errlen, "%s: empty string", name);
  return PROTO_OK;
}

/* "exclude_docs" or "include_docs": document ids. An empty exclude_docs
 * skips none; an empty include_docs (only) would match nothing, and is
 * refused. */
static proto_status get_doc_ids(json_t *obj, const char *name, int only, char ***ids, size_t *n,
                                char *err, size_t errlen) {
  json_t *v = json_object_get(obj, name);
  *ids = NULL;
  *n = 0;
  if (!v || json_is_null(v)) return PROTO_OK;
  if (!json_is_array(v))
    return fail(PROTO_ETYPE, err, errlen, "%s: must be an array of strings", name);
  if (json_array_size(v) == 0)
    return only ? fail(PROTO_ERANGE, err, errlen,
                       "include_docs: empty (it would match no document; leave it out to "
                       "search them all)")
                : PROTO_OK;
  return get_strs(v, name, 1, PROTO_MAX_EXCLUDE, PROTO_MAX_ID_BYTES, ids, NULL, n, NULL, err,
                  errlen);
}

/* exclude_docs and include_docs of a search or of a completion's retrieval. */
static proto_status get_doc_lists(json_t *obj, char ***excl, size_t *n_excl, char ***incl,
                                  size_t *n_incl, char *err, size_t errlen) {
  proto_status st = get_doc_ids(obj, "exclude_docs", 0, excl, n_excl, err, errlen);
  return st ? st : get_doc_ids(obj, "include_docs", 1, incl, n_incl, err, errlen);
}

proto_status proto_json_validate(const char *text, size_t len, char *err, size_t errlen) {
  json_t *root = NULL;
  json_error_t je;
  root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
  if (!root) return fail(PROTO_EJSON, err, errlen, "invalid JSON: %s", je.text);
  json_decref(root);
  return PROTO_OK;
}

/* ---- documents ------------------------------------------------------------ */

void proto_doc_free(proto_doc *d) {
  if (!d) return;
  free(d->id);
  free(d->text);
  free(d->metadata_json);
  memset(d, 0, sizeof *d);
}

static proto_status doc_from(json_t *o, const char *where, proto_doc *out, char *err,
                             size_t errlen) {
  static const char *const fields[] = {"id", "text", "metadata", NULL};
  const char *w = where ? where : "document";
  memset(out, 0, sizeof *out);
  if (!json_is_object(o)) return fail(PROTO_ETYPE, err, errlen, "%s: must be an object", w);
  proto_status st = check_fields(o, w, fields, err, errlen);
  if (st != PROTO_OK) return st;
  json_t *id = json_object_get(o, "id"), *text = json_object_get(o, "text");
  json_t *meta = json_object_get(o, "metadata");
  if (!id) return fail(PROTO_EMISSING, err, errlen, "%s.id: missing field", w);
  if (!json_is_string(id)) return fail(PROTO_ETYPE, err, errlen, "%s.id: must be a string", w);
  size_t idlen = json_string_length(id);
  if (idlen == 0 || idlen > PROTO_MAX_ID_BYTES)
    return fail(PROTO_ERANGE, err, errlen, "%s.id: must be 1 to %d bytes", w, PROTO_MAX_ID_BYTES);
  if (memchr(json_string_value(id), 0, idlen))
    return fail(PROTO_EINVAL, err, errlen, "%s.id: must not contain NUL", w);
  /* GET /v1/documents/{id} could not reach them: URL parsers (browsers,
   * fetch) resolve a path segment "." or "..", even percent-encoded, as
   * Kubernetes refuses such names for the same reason. */
  if (!strcmp(json_string_value(id), ".") || !strcmp(json_string_value(id), ".."))
    return fail(PROTO_EINVAL, err, errlen,
                "%s.id: '.' and '..' cannot be document ids (URL paths resolve them)", w);
  if (!text) return fail(PROTO_EMISSING, err, errlen, "%s.text: missing field", w);
  if (!json_is_string(text)) return fail(PROTO_ETYPE, err, errlen, "%s.text: must be a string", w);
  if (meta && !json_is_null(meta) && !json_is_object(meta))
    return fail(PROTO_ETYPE, err, errlen, "%s.metadata: must be an object", w);
  out->id = dup_str(id, NULL);
  out->text = dup_str(text, &out->text_len);
  if (meta && json_is_object(meta))
    out->metadata_json = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!out->id || !out->text || (meta && json_is_object(meta) && !out->metadata_json)) {
    proto_doc_free(out);
    return fail(PROTO_ENOMEM, err, errlen, "%s: out of memory", w);
  }
  return PROTO_OK;
}

proto_status proto_doc_parse(const char *text, size_t len, const char *where, proto_doc *out,
                             char *err, size_t errlen) {
  json_t *root = NULL;
  memset(out, 0, sizeof *out);
  proto_status st = parse_root(text, len, &root, err, errlen);
  if (st != PROTO_OK) {
    if (where && err && errlen) {
      char tmp[256];
      snprintf(tmp, sizeof tmp, "%s", err);
      const char *m = strncmp(tmp, "body: ", 6) == 0 ? tmp + 6 : tmp;
      snprintf(err, errlen, "%s: %s", where, m);
    }
    return st;
  }
  st = doc_from(root, where, out, err, errlen);
  json_decref(root);
  return st;
}

proto_status proto_docs_parse(const char *text, size_t len, size_t max_docs, proto_doc **docs,
                              size_t *n, char *err, size_t errlen) {
  static const char *const fields[] = {"documents", NULL};
  json_t *root = NULL;
  proto_doc *d = NULL;
  size_t count = 0;
  *docs = NULL;
  *n = 0;
  proto_status st = parse_root(text, len, &root, err, errlen);
  if (st != PROTO_OK) return st;
  if (!json_is_object(root)) {
    st = fail(PROTO_ETYPE, err, errlen, "body: must be an object {\"documents\": [...]}");
    goto leave;
  }
  if ((st = check_fields(root, NULL, fields, err, errlen)) != PROTO_OK) goto leave;
  json_t *arr = json_object_get(root, "documents");
  if (!arr) {
    st = fail(PROTO_EMISSING, err, errlen, "documents: missing field");
    goto leave;
  }
  if (!json_is_array(arr)) {
    st = fail(PROTO_ETYPE, err, errlen, "documents: must be an array");
    goto leave;
  }
  count = json_array_size(arr);
  if (count > max_docs) {
    st = fail(PROTO_ERANGE, err, errlen, "documents: at most %zu per request", max_docs);
    goto leave;
  }
  d = calloc(count ? count : 1, sizeof *d);
  if (!d) {
    st = fail(PROTO_ENOMEM, err, errlen, "documents: out of memory");
    goto leave;
  }
  for (size_t i = 0; i < count; i++) {
    char where[48];
    snprintf(where, sizeof where, "documents[%zu]", i);
    if ((st = doc_from(json_array_get(arr, i), where, &d[i], err, errlen)) != PROTO_OK) goto leave;
  }
leave:
  json_decref(root);
  if (st != PROTO_OK) {
    if (d)
      for (size_t i = 0; i < count; i++) proto_doc_free(&d[i]);
    free(d);
    return st;
  }
  *docs = d;
  *n = count;
  return PROTO_OK;
}

/* ---- search --------------------------------------------------------------- */

void proto_search_free(proto_search_req *r) {
  if (!r) return;
  free_strs(r->queries, r->n_queries);
  free(r->query_lens);
  free(r->vector);
  free_strs(r->exclude_docs, r->n_exclude);
  free_strs(r->include_docs, r->n_include);
  free(r->filter_json);
  memset(r, 0, sizeof *r);
}

/* "filter" of a request body: *out NULL when absent, null or empty. */
static proto_status get_filter(json_t *root, char **out, char *err, size_t errlen) {
  *out = NULL;
  json_t *f = json_object_get(root, "filter");
  if (!f || json_is_null(f)) return PROTO_OK;
  return proto__filter_check(f, out, err, errlen);
}

proto_status proto_filter_parse(const char *text, size_t len, char **out, char *err,
                                size_t errlen) {
  json_t *root = NULL;
  *out = NULL;
  proto_status st = parse_root(text, len, &root, err, errlen);
  if (st == PROTO_OK) st = proto__filter_check(root, out, err, errlen);
  json_decref(root);
  return st;
}

/* One of names (NULL-terminated) as a string; *out = its index + 1, 0 when absent. */
static proto_status get_choice(json_t *obj, const char *name, const char *const *names, int *out,
                               char *err, size_t errlen) {
  json_t *v = json_object_get(obj, name);
  *out = 0;
  if (!v || json_is_null(v)) return PROTO_OK;
  if (json_is_string(v))
    for (int i = 0; names[i]; i++)
      if (strcmp(json_string_value(v), names[i]) == 0) {
        *out = i + 1;
        return PROTO_OK;
      }
  proto_buf b;
  proto_buf_init(&b);
  for (int i = 0; names[i]; i++) proto_buf_addf(&b, "%s\"%s\"", i ? ", " : "", names[i]);
  proto_status st = fail(json_is_string(v) ? PROTO_EINVAL : PROTO_ETYPE, err, errlen,
                         "%s: must be one of %s", name, b.data ? b.data : "");
  proto_buf_free(&b);
  return st;
}

/* "rerank": true, false, null or a number of candidates; only for texts. */
static proto_status get_rerank(json_t *root, proto_search_req *out, char *err, size_t errlen) {
  json_t *v = json_object_get(root, "rerank");
  if (!v || json_is_null(v) || json_is_false(v)) return PROTO_OK;
  if (json_is_true(v)) {
    out->rerank = -1;
  } else if (json_is_integer(v)) {
    if (json_integer_value(v) < 1 || json_integer_value(v) > PROTO_MAX_RERANK)
      return fail(PROTO_ERANGE, err, errlen, "rerank: a number of candidates must be in [1, %d]",
                  PROTO_MAX_RERANK);
    out->rerank = (int)json_integer_value(v);
  } else {
    return fail(PROTO_ETYPE, err, errlen, "rerank: must be true, false or a number of candidates");
  }
  if (!out->n_queries)
    return fail(PROTO_EINVAL, err, errlen,
                "rerank: needs a query text (query or queries; the reranker reads it)");
  return PROTO_OK;
}

/* mode, alpha, group_by, group_size, expand, rerank. */
static proto_status get_search_shape(json_t *root, proto_search_req *out, char *err,
                                     size_t errlen) {
  static const char *const modes[] = {"dense", "lexical", "hybrid", NULL};
  static const char *const groups[] = {"document", NULL};
  long long x = 0;
  proto_status st = get_choice(root, "mode", modes, &out->mode, err, errlen);
  if (st != PROTO_OK) return st;
  if (out->vector && out->mode > 1)
    return fail(PROTO_EINVAL, err, errlen,
                "mode: a search by vector is dense (lexical and hybrid need a query text)");
  if ((st = get_num(root, "alpha", 0, &out->alpha, err, errlen)) != PROTO_OK) return st;
  if (json_object_get(root, "alpha") && !json_is_null(json_object_get(root, "alpha"))) {
    if (!(out->alpha > 0 && out->alpha <= 1))
      return fail(PROTO_ERANGE, err, errlen,
                  "alpha: must be in (0, 1] (for 0, use mode \"lexical\")");
    if (out->mode != 0 && out->mode != 3)
      return fail(PROTO_EINVAL, err, errlen, "alpha: only a hybrid search fuses (mode \"hybrid\")");
  }
  if ((st = get_choice(root, "group_by", groups, &out->group_by_doc, err, errlen)) != PROTO_OK)
    return st;
  if ((st = get_int(root, NULL, "group_size", 1, 100, 1, &x, err, errlen)) != PROTO_OK) return st;
  out->group_size = (int)x;
  if (!out->group_by_doc && json_object_get(root, "group_size") &&
      !json_is_null(json_object_get(root, "group_size")))
    return fail(PROTO_EINVAL, err, errlen, "group_size: needs \"group_by\": \"document\"");
  if ((st = get_int(root, NULL, "expand", 0, 16, 0, &x, err, errlen)) != PROTO_OK) return st;
  out->expand = (int)x;
  return get_rerank(root, out, err, errlen);
}

/* A query of nothing but white space has no words for BM25 and embeds to a
 * point near no text in particular: refused, rather than answered with
 * arbitrary chunks. */
static proto_status no_blank_query(const proto_search_req *q, char *err, size_t errlen) {
  for (size_t i = 0; i < q->n_queries; i++) {
    if (!proto_blank(q->queries[i], q->query_lens[i])) continue;
    if (q->batched)
      return fail(PROTO_ERANGE, err, errlen, "queries[%zu]: empty or only white space", i);
    return fail(PROTO_ERANGE, err, errlen, "query: empty or only white space");
  }
  return PROTO_OK;
}

/* "vector": 1..PROTO_MAX_DIM numbers, each finite as a float. */
static proto_status get_vector(json_t *vec, proto_search_req *out, char *err, size_t errlen) {
  if (!json_is_array(vec))
    return fail(PROTO_ETYPE, err, errlen, "vector: must be an array of numbers");
  size_t dim = json_array_size(vec);
  if (dim == 0 || dim > PROTO_MAX_DIM)
    return fail(PROTO_EDIM, err, errlen, "vector: must hold 1 to %d numbers", PROTO_MAX_DIM);
  out->vector = malloc(dim * sizeof *out->vector);
  if (!out->vector) return fail(PROTO_ENOMEM, err, errlen, "vector: out of memory");
  for (size_t i = 0; i < dim; i++) {
    json_t *e = json_array_get(vec, i);
    if (!json_is_number(e))
      return fail(PROTO_ETYPE, err, errlen, "vector[%zu]: must be a number", i);
    double d = json_number_value(e);
    if (!isfinite((float)d))
      return fail(PROTO_ERANGE, err, errlen, "vector[%zu]: out of float range", i);
    out->vector[i] = (float)d;
  }
  out->dim = dim;
  return PROTO_OK;
}

/* What a search searches by: "query", "queries", "vector" or "chunk_id",
 * exactly one of them; root is an object. */
static proto_status get_search_what(json_t *root, proto_search_req *out, char *err, size_t errlen) {
  json_t *q = json_object_get(root, "query"), *qs = json_object_get(root, "queries");
  json_t *vec = json_object_get(root, "vector"), *like = json_object_get(root, "chunk_id");
  if (json_is_null(like)) like = NULL;
  int given = (q != NULL) + (qs != NULL) + (vec != NULL) + (like != NULL);
  if (given == 0)
    return fail(PROTO_EMISSING, err, errlen,
                "query: missing field (give query, queries, vector or chunk_id)");
  if (given > 1)
    return fail(PROTO_EINVAL, err, errlen,
                "query: give only one of query, queries, vector, chunk_id");
  if (q) {
    if (!json_is_string(q)) return fail(PROTO_ETYPE, err, errlen, "query: must be a string");
    return get_strs(q, "query", 0, 1, 0, &out->queries, &out->query_lens, &out->n_queries, NULL,
                    err, errlen);
  }
  if (qs) {
    if (!json_is_array(qs))
      return fail(PROTO_ETYPE, err, errlen, "queries: must be an array of strings");
    out->batched = 1;
    return get_strs(qs, "queries", 1, PROTO_MAX_QUERIES, 0, &out->queries, &out->query_lens,
                    &out->n_queries, NULL, err, errlen);
  }
  if (like) {
    if (!json_is_integer(like) || json_integer_value(like) < 1)
      return fail(PROTO_ETYPE, err, errlen, "chunk_id: must be a positive integer (a chunk's id)");
    out->like_chunk = (uint64_t)json_integer_value(like);
    return PROTO_OK;
  }
  return get_vector(vec, out, err, errlen);
}

proto_status proto_search_parse(const char *text, size_t len, proto_search_req *out, char *err,
                                size_t errlen) {
  static const char *const fields[] = {
      "query",        "queries",      "vector",       "chunk_id",  "k",
      "exclude_docs", "include_docs", "nprobe",       "ef_search", "with_text",
      "filter",       "mode",         "alpha",        "group_by",  "group_size",
      "expand",       "rerank",       "with_vectors", NULL};
  json_t *root = NULL;
  long long x = 0;
  memset(out, 0, sizeof *out);
  if (proto__search_parse_fast(text, len, out)) return PROTO_OK;
  proto_status st = parse_object(text, len, fields, &root, err, errlen);
  if (st != PROTO_OK) goto leave;
  st = get_search_what(root, out, err, errlen);
  if (st == PROTO_OK) st = no_blank_query(out, err, errlen);
  if (st != PROTO_OK) goto leave;
  if ((st = get_int(root, NULL, "k", 1, PROTO_MAX_K, 10, &x, err, errlen)) != PROTO_OK) goto leave;
  out->k = (int)x;
  if ((st = get_int(root, NULL, "nprobe", 0, 65536, 0, &x, err, errlen)) != PROTO_OK) goto leave;
  out->nprobe = (int)x;
  if ((st = get_int(root, NULL, "ef_search", 0, 65536, 0, &x, err, errlen)) != PROTO_OK) goto leave;
  out->ef_search = (int)x;
  if ((st = get_bool(root, "with_text", 1, &out->with_text, err, errlen)) != PROTO_OK) goto leave;
  if ((st = get_bool(root, "with_vectors", 0, &out->with_vectors, err, errlen)) != PROTO_OK)
    goto leave;
  if ((st = get_doc_lists(root, &out->exclude_docs, &out->n_exclude, &out->include_docs,
                          &out->n_include, err, errlen)))
    goto leave;
  if ((st = get_filter(root, &out->filter_json, err, errlen)) != PROTO_OK) goto leave;
  st = get_search_shape(root, out, err, errlen);
leave:
  json_decref(root);
  if (st != PROTO_OK) proto_search_free(out);
  return st;
}

/* ---- deleting documents -------------------------------------------------- */

void proto_delete_free(proto_delete_req *r) {
  if (!r) return;
  free_strs(r->ids, r->n);
  free(r->filter_json);
  memset(r, 0, sizeof *r);
}

typedef struct id_at {
  const char *id;
  size_t at;
} id_at;

static int id_at_cmp(const void *a, const void *b) {
  const id_at *x = a, *y = b;
  int c = strcmp(x->id, y->id);
  return c ? c : (x->at > y->at) - (x->at < y->at);
}

/* An id given twice would be deleted once and reported missing once. */
static proto_status no_repeated_id(char *const *ids, size_t n, char *err, size_t errlen) {
  id_at *v = malloc(n * sizeof *v);
  if (!v) return fail(PROTO_ENOMEM, err, errlen, "ids: out of memory");
  for (size_t i = 0; i < n; i++) v[i] = (id_at){ids[i], i};
  qsort(v, n, sizeof *v, id_at_cmp);
  proto_status st = PROTO_OK;
  for (size_t i = 1; i < n && st == PROTO_OK; i++)
    if (!strcmp(v[i - 1].id, v[i].id))
      st = fail(PROTO_EINVAL, err, errlen, "ids[%zu]: given twice (also ids[%zu])", v[i].at,
                v[i - 1].at);
  free(v);
  return st;
}

/* "ids" (ids, not NULL): 1..max document ids, none empty or given twice. */
static proto_status get_ids(json_t *ids, size_t max, char ***out, size_t *n, char *err,
                            size_t errlen) {
  if (!json_is_array(ids))
    return fail(PROTO_ETYPE, err, errlen, "ids: must be an array of strings");
  proto_status st =
      get_strs(ids, "ids", 1, max, PROTO_MAX_ID_BYTES, out, NULL, n, NULL, err, errlen);
  if (st == PROTO_OK) st = no_empty_string("ids", *out, *n, 1, err, errlen);
  return st == PROTO_OK ? no_repeated_id(*out, *n, err, errlen) : st;
}

/* The documents a body names: its "ids" or its "filter", exactly one;
 * root is an object whose fields the caller has checked. */
static proto_status get_which_docs(json_t *root, proto_delete_req *out, char *err, size_t errlen) {
  proto_status st;
  json_t *ids = json_object_get(root, "ids"), *filter = json_object_get(root, "filter");
  if (ids && json_is_null(ids)) ids = NULL;
  if (filter && json_is_null(filter)) filter = NULL;
  if (!ids && !filter)
    return fail(PROTO_EMISSING, err, errlen, "ids: missing field (give ids or filter)");
  if (ids && filter) return fail(PROTO_EINVAL, err, errlen, "ids: give only one of ids, filter");
  if (filter) {
    if ((st = get_filter(root, &out->filter_json, err, errlen)) != PROTO_OK) return st;
    return out->filter_json ? PROTO_OK
                            : fail(PROTO_ERANGE, err, errlen,
                                   "filter: empty (it would match every document; give a key)");
  }
  return get_ids(ids, PROTO_MAX_DELETE, &out->ids, &out->n, err, errlen);
}

proto_status proto_delete_parse(const char *text, size_t len, proto_delete_req *out, char *err,
                                size_t errlen) {
  static const char *const delete_fields[] = {"ids", "filter", NULL};
  json_t *root = NULL;
  memset(out, 0, sizeof *out);
  proto_status st = parse_object(text, len, delete_fields, &root, err, errlen);
  if (st == PROTO_OK) st = get_which_docs(root, out, err, errlen);
  json_decref(root);
  if (st != PROTO_OK) proto_delete_free(out);
  return st;
}

proto_status proto_get_parse(const char *text, size_t len, proto_get_req *out, char *err,
                             size_t errlen) {
  static const char *const fields[] = {"ids", "with_text", NULL};
  json_t *root = NULL;
  memset(out, 0, sizeof *out);
  proto_status st = parse_object(text, len, fields, &root, err, errlen);
  if (st == PROTO_OK) {
    json_t *ids = json_object_get(root, "ids");
    st = ids && !json_is_null(ids) ? get_ids(ids, PROTO_MAX_GET, &out->ids, &out->n, err, errlen)
                                   : fail(PROTO_EMISSING, err, errlen, "ids: missing field");
  }
  if (st == PROTO_OK) st = get_bool(root, "with_text", 1, &out->with_text, err, errlen);
  json_decref(root);
  if (st != PROTO_OK) proto_get_free(out);
  return st;
}

void proto_get_free(proto_get_req *r) {
  if (!r) return;
  free_strs(r->ids, r->n);
  memset(r, 0, sizeof *r);
}

/* "metadata" of a patch: an object, written compactly to *out. */
static proto_status get_metadata_patch(json_t *root, char **out, char *err, size_t errlen) {
  json_t *meta = json_object_get(root, "metadata");
  if (!meta || json_is_null(meta))
    return fail(PROTO_EMISSING, err, errlen, "metadata: missing field");
  if (!json_is_object(meta))
    return fail(PROTO_ETYPE, err, errlen,
                "metadata: must be an object (a merge patch: a key given null is removed)");
  *out = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER);
  return *out ? PROTO_OK : fail(PROTO_ENOMEM, err, errlen, "out of memory");
}

proto_status proto_update_parse(const char *text, size_t len, proto_update_req *out, char *err,
                                size_t errlen) {
  static const char *const fields[] = {"ids", "filter", "metadata", NULL};
  json_t *root = NULL;
  memset(out, 0, sizeof *out);
  proto_status st = parse_object(text, len, fields, &root, err, errlen);
  if (st == PROTO_OK) st = get_which_docs(root, &out->which, err, errlen);
  if (st == PROTO_OK) st = get_metadata_patch(root, &out->metadata_patch, err, errlen);
  json_decref(root);
  if (st != PROTO_OK) proto_update_free(out);
  return st;
}

void proto_update_free(proto_update_req *r) {
  if (!r) return;
  proto_delete_free(&r->which);
  free(r->metadata_patch);
  r->metadata_patch = NULL;
}

proto_status proto_patch_parse(const char *text, size_t len, char **metadata_patch, char *err,
                               size_t errlen) {
  static const char *const fields[] = {"metadata", NULL};
  json_t *root = NULL;
  *metadata_patch = NULL;
  proto_status st = parse_object(text, len, fields, &root, err, errlen);
  if (st == PROTO_OK) st = get_metadata_patch(root, metadata_patch, err, errlen);
  json_decref(root);
  return st;
}

/* ---- embeddings ----------------------------------------------------------- */

void proto_embed_free(proto_embed_req *r) {
  if (!r) return;
  free_strs(r->inputs, r->n);
  free(r->lens);
  free(r->model);
  memset(r, 0, sizeof *r);
}

proto_status proto_embed_parse(const char *text, size_t len, proto_embed_req *out, char *err,
                               size_t errlen) {
  static const char *const fields[] = {"input", "model",    "encoding_format", "dimensions",
                                       "user",  "truncate", "input_type",      NULL};
  json_t *root = NULL;
  memset(out, 0, sizeof *out);
  proto_status st = parse_object(text, len, fields, &root, err, errlen);
  if (st != PROTO_OK) goto leave;
  json_t *in = json_object_get(root, "input");
  if (!in) {
    st = fail(PROTO_EMISSING, err, errlen, "input: missing field");
    goto leave;
  }
  json_t *first = json_is_array(in) ? json_array_get(in, 0) : NULL;
  if (first && (json_is_integer(first) || json_is_array(first))) {
    /* OpenAI accepts token ids of its own tokenizer; they mean nothing to ours
     * (LangChain sends them unless told not to: check_embedding_ctx_length) */
    st = fail(PROTO_ETYPE, err, errlen,
              "input: token ids are not accepted, send text (the encoder has its own tokenizer)");
    goto leave;
  }
  int was_array = 0;
  st = get_strs(in, "input", 1, PROTO_MAX_QUERIES, 0, &out->inputs, &out->lens, &out->n, &was_array,
                err, errlen);
  if (st == PROTO_OK) /* an embedding of nothing is no text's (OpenAI: 400) */
    st = no_empty_string("input", out->inputs, out->n, was_array, err, errlen);
  if (st != PROTO_OK) goto leave;
  json_t *fmt = json_object_get(root, "encoding_format");
  if (fmt && !json_is_null(fmt)) {
    if (!json_is_string(fmt)) {
      st = fail(PROTO_ETYPE, err, errlen, "encoding_format: must be a string");
      goto leave;
    }
    out->base64 = !strcmp(json_string_value(fmt), "base64");
    if (!out->base64 && strcmp(json_string_value(fmt), "float") != 0) {
      st = fail(PROTO_ERANGE, err, errlen, "encoding_format: must be \"float\" or \"base64\"");
      goto leave;
    }
  }
  long long dims = 0;
  if ((st = get_int(root, NULL, "dimensions", 1, 65536, 0, &dims, err, errlen)) != PROTO_OK)
    goto leave;
  out->dimensions = (long)dims;
  if ((st = get_bool(root, "truncate", 0, &out->truncate, err, errlen)) != PROTO_OK) goto leave;
  json_t *it = json_object_get(root, "input_type");
  if (it && !json_is_null(it)) {
    const char *v = json_is_string(it) ? json_string_value(it) : NULL;
    out->as_query = v && !strcmp(v, "query");
    if (!v || (!out->as_query && strcmp(v, "document") != 0)) {
      st = fail(v ? PROTO_ERANGE : PROTO_ETYPE, err, errlen,
                "input_type: must be \"query\" or \"document\"");
      goto leave;
    }
  }
  json_t *user = json_object_get(root, "user");
  if (user && !json_is_string(user)) {
    st = fail(PROTO_ETYPE, err, errlen, "user: must be a string");
    goto leave;
  }
  st = get_model(root, &out->model, err, errlen);
leave:
  json_decref(root);
  if (st != PROTO_OK) proto_embed_free(out);
  return st;
}

/* ---- rerank ---------------------------------------------------------------- */

void proto_rerank_free(proto_rerank_req *r) {
  if (!r) return;
  free(r->query);
  free_strs(r->documents, r->n);
  free(r->lens);
  free(r->model);
  memset(r, 0, sizeof *r);
}

proto_status proto_rerank_parse(const char *text, size_t len, proto_rerank_req *out, char *err,
                                size_t errlen) {
  static const char *const fields[] = {"query", "documents", "top_n", "return_documents",
                                       "model", NULL};
  json_t *root = NULL;
  memset(out, 0, sizeof *out);
  proto_status st = parse_object(text, len, fields, &root, err, errlen);
  if (st != PROTO_OK) goto leave;
  json_t *q = json_object_get(root, "query"), *docs = json_object_get(root, "documents");
  if (!q || !docs) {
    st = fail(PROTO_EMISSING, err, errlen, "%s: missing field", q ? "documents" : "query");
    goto leave;
  }
  if (!json_is_string(q)) {
    st = fail(PROTO_ETYPE, err, errlen, "query: must be a string");
    goto leave;
  }
  out->query = dup_str(q, &out->query_len);
  if (!out->query) {
    st = fail(PROTO_ENOMEM, err, errlen, "query: out of memory");
    goto leave;
  }
  if (proto_blank(out->query, out->query_len)) {
    st = fail(PROTO_ERANGE, err, errlen, "query: empty or only white space");
    goto leave;
  }
  if (!json_is_array(docs)) {
    st = fail(PROTO_ETYPE, err, errlen, "documents: must be an array of strings");
    goto leave;
  }
  if ((st = get_strs(docs, "documents", 1, PROTO_MAX_RERANK_DOCS, 0, &out->documents, &out->lens,
                     &out->n, NULL, err, errlen)) != PROTO_OK)
    goto leave;
  long long top = 0;
  if ((st = get_int(root, NULL, "top_n", 1, PROTO_MAX_RERANK_DOCS, 0, &top, err, errlen)) !=
      PROTO_OK)
    goto leave;
  out->top_n = (long)top;
  if ((st = get_bool(root, "return_documents", 0, &out->return_documents, err, errlen)) != PROTO_OK)
    goto leave;
  st = get_model(root, &out->model, err, errlen);
leave:
  json_decref(root);
  if (st != PROTO_OK) proto_rerank_free(out);
  return st;
}

/* ---- completions ---------------------------------------------------------- */

void proto_complete_free(proto_complete_req *r) {
  if (!r) return;
  free(r->prompt);
  free_strs(r->stop, r->n_stop);
  free(r->stop_lens);
  free_strs(r->exclude_docs, r->n_exclude);
  free_strs(r->include_docs, r->n_include);
  free(r->filter_json);
  free(r->model);
  for (size_t i = 0; i < r->n_messages; i++) free(r->messages[i].content);
  free(r->messages);
  memset(r, 0, sizeof *r);
}

/* OpenAI options this server does not implement, accepted at the values that
 * leave a completion unchanged (clients such as LangChain send them at those
 * values on every request) and refused with 422 at any other. stream_options
 * may ask for include_usage: the last event of a stream always has the usage. */
static proto_status neutral_options(json_t *root, char *err, size_t errlen) {
  static const char *const zero[] = {"frequency_penalty", "presence_penalty"};
  double v = 0;
  long long one = 1;
  proto_status st;
  for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++) {
    if ((st = get_num(root, zero[i], 0, &v, err, errlen))) return st;
    if (v != 0)
      return fail(PROTO_ERANGE, err, errlen, "%s: only 0 is supported (no repetition penalty)",
                  zero[i]);
  }
  if ((st = get_int(root, NULL, "best_of", 1, 1, 1, &one, err, errlen))) return st;
  json_t *bias = json_object_get(root, "logit_bias");
  if (bias && !json_is_null(bias) && !json_is_object(bias))
    return fail(PROTO_ETYPE, err, errlen, "logit_bias: must be an object");
  if (bias && json_is_object(bias) && json_object_size(bias) > 0)
    return fail(PROTO_ERANGE, err, errlen, "logit_bias: only {} is supported");
  json_t *suffix = json_object_get(root, "suffix");
  if (suffix && !json_is_null(suffix) && !json_is_string(suffix))
    return fail(PROTO_ETYPE, err, errlen, "suffix: must be a string");
  if (suffix && json_is_string(suffix) && json_string_length(suffix) > 0)
    return fail(PROTO_ERANGE, err, errlen, "suffix: only \"\" is supported (no insertion)");
  json_t *so = json_object_get(root, "stream_options");
  if (so && !json_is_null(so)) {
    static const char *const so_fields[] = {"include_usage", NULL};
    if (!json_is_object(so))
      return fail(PROTO_ETYPE, err, errlen, "stream_options: must be an object");
    if ((st = check_fields(so, "stream_options", so_fields, err, errlen))) return st;
    json_t *iu = json_object_get(so, "include_usage");
    if (iu && !json_is_null(iu) && !json_is_boolean(iu))
      return fail(PROTO_ETYPE, err, errlen, "stream_options.include_usage: must be a boolean");
  }
  return PROTO_OK;
}

/* The sampling and retrieval options completions and chat completions
 * share (everything but the prompt / messages, max_tokens and logprobs). */
static proto_status sampling_options(json_t *root, proto_complete_req *out, char *err,
                                     size_t errlen) {
  long long x = 0;
  proto_status st;
  if ((st = get_num(root, "temperature", 1.0, &out->temperature, err, errlen))) return st;
  if (!(out->temperature >= 0 && out->temperature <= 100))
    return fail(PROTO_ERANGE, err, errlen, "temperature: must be in [0, 100]");
  if ((st = get_num(root, "top_p", 1.0, &out->top_p, err, errlen))) return st;
  if (!(out->top_p > 0 && out->top_p <= 1))
    return fail(PROTO_ERANGE, err, errlen, "top_p: must be in (0, 1]");
  if ((st = get_int(root, NULL, "top_k", 0, 1000000, 0, &x, err, errlen))) return st;
  out->top_k = (int)x;
  json_t *seed = json_object_get(root, "seed");
  if (seed && !json_is_null(seed)) {
    if (!json_is_integer(seed)) return fail(PROTO_ETYPE, err, errlen, "seed: must be an integer");
    out->seed = (uint64_t)json_integer_value(seed);
    out->has_seed = 1;
  }
  json_t *stop = json_object_get(root, "stop");
  if (stop && !json_is_null(stop)) {
    st = get_strs(stop, "stop", 1, PROTO_MAX_STOP, PROTO_MAX_STOP_BYTES, &out->stop,
                  &out->stop_lens, &out->n_stop, NULL, err, errlen);
    if (st != PROTO_OK) return st;
    for (size_t i = 0; i < out->n_stop; i++)
      if (out->stop_lens[i] == 0)
        return fail(PROTO_ERANGE, err, errlen, "stop[%zu]: must not be empty", i);
  }
  if ((st = get_bool(root, "stream", 0, &out->stream, err, errlen))) return st;
  if ((st = get_bool(root, "retrieval", 1, &out->retrieval, err, errlen))) return st;
  if ((st = get_int(root, NULL, "k", 0, 64, 0, &x, err, errlen))) return st;
  out->k = (int)x;
  if ((st = get_int(root, NULL, "n", 1, 1, 1, &x, err, errlen))) return st;
  json_t *user = json_object_get(root, "user");
  if (user && !json_is_null(user) && !json_is_string(user))
    return fail(PROTO_ETYPE, err, errlen, "user: must be a string");
  if ((st = get_doc_lists(root, &out->exclude_docs, &out->n_exclude, &out->include_docs,
                          &out->n_include, err, errlen)))
    return st;
  if ((st = get_filter(root, &out->filter_json, err, errlen))) return st;
  static const char *const modes[] = {"dense", "lexical", "hybrid", NULL};
  if ((st = get_choice(root, "retrieval_mode", modes, &out->retrieval_mode, err, errlen)))
    return st;
  if ((st = neutral_options(root, err, errlen))) return st;
  return get_model(root, &out->model, err, errlen);
}

proto_status proto_complete_parse(const char *text, size_t len, proto_complete_req *out, char *err,
                                  size_t errlen) {
  static const char *const fields[] = {
      "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "logprobs", "stream",
      "retrieval", "k", "exclude_docs", "include_docs", "filter", "model", "n", "user",
      "retrieval_mode",
      /* OpenAI's, accepted at the values that change nothing (neutral_options) */
      "frequency_penalty", "presence_penalty", "best_of", "echo", "logit_bias", "suffix",
      "stream_options", NULL};
  json_t *root = NULL;
  long long x = 0;
  memset(out, 0, sizeof *out);
  proto_status st = parse_object(text, len, fields, &root, err, errlen);
  if (st != PROTO_OK) goto leave;

  json_t *p = json_object_get(root, "prompt");
  if (!p) {
    st = fail(PROTO_EMISSING, err, errlen, "prompt: missing field");
    goto leave;
  }
  if (json_is_array(p) && json_array_size(p) == 1) p = json_array_get(p, 0);
  if (!json_is_string(p)) {
    st = fail(PROTO_ETYPE, err, errlen, "prompt: must be a string (or an array of one string)");
    goto leave;
  }
  out->prompt = dup_str(p, &out->prompt_len);
  if (!out->prompt) {
    st = fail(PROTO_ENOMEM, err, errlen, "prompt: out of memory");
    goto leave;
  }

  if ((st = get_bool(root, "echo", 0, &out->echo, err, errlen))) goto leave;
  if ((st = get_int(root, NULL, "max_tokens", 0, PROTO_MAX_GEN_TOKENS, 16, &x, err, errlen)))
    goto leave;
  out->max_tokens = (int)x;
  if (x == 0 && !out->echo) {
    st = fail(PROTO_ERANGE, err, errlen,
              "max_tokens: must be in [1, %d] (0 only with echo: true, to score the prompt)",
              PROTO_MAX_GEN_TOKENS);
    goto leave;
  }
  json_t *lp = json_object_get(root, "logprobs");
  out->logprobs = -1;
  if (lp && !json_is_null(lp)) {
    if (json_is_boolean(lp)) out->logprobs = json_is_true(lp) ? 0 : -1;
    else if ((st = get_int(root, NULL, "logprobs", 0, PROTO_MAX_LOGPROBS, 0, &x, err, errlen)))
      goto leave;
    else out->logprobs = (int)x;
  }
  if ((st = sampling_options(root, out, err, errlen))) goto leave;
  if (out->echo && out->stream)
    st = fail(PROTO_ERANGE, err, errlen, "echo: not with stream (prompt scoring answers whole)");
  else if (out->echo && (out->filter_json || out->n_exclude > 1))
    st = fail(PROTO_ERANGE, err, errlen,
              "echo: prompt scoring takes exclude_docs of at most one document and no filter");
leave:
  json_decref(root);
  if (st != PROTO_OK) proto_complete_free(out);
  return st;
}

/* ---- chat completions ----------------------------------------------------- */

/* An OpenAI option this server does not implement, accepted only when absent,
 * null or at its neutral value (empty, false, "none"): 422 naming it else. */
static proto_status refuse_unless_neutral(json_t *root, const char *name, const char *why,
                                          char *err, size_t errlen) {
  json_t *v = json_object_get(root, name);
  if (!v || json_is_null(v) || json_is_false(v)) return PROTO_OK;
  if ((json_is_array(v) && json_array_size(v) == 0) ||
      (json_is_string(v) && !strcmp(json_string_value(v), "none")))
    return PROTO_OK;
  return fail(PROTO_ERANGE, err, errlen, "%s: not supported (%s)", name, why);
}

/* One message's content: a string, or an array of text parts (joined). */
static proto_status message_content(json_t *c, size_t i, proto_chat_msg *m, char *err,
                                    size_t errlen) {
  if (!c || json_is_null(c))
    return fail(PROTO_EMISSING, err, errlen, "messages[%zu].content: missing (a string is needed)",
                i);
  if (json_is_string(c)) {
    m->content = dup_str(c, &m->content_len);
    return m->content ? PROTO_OK : fail(PROTO_ENOMEM, err, errlen, "out of memory");
  }
  if (!json_is_array(c))
    return fail(PROTO_ETYPE, err, errlen,
                "messages[%zu].content: must be a string or an array of text parts", i);
  proto_buf b;
  proto_buf_init(&b);
  for (size_t j = 0; j < json_array_size(c); j++) {
    json_t *part = json_array_get(c, j);
    json_t *type = json_is_object(part) ? json_object_get(part, "type") : NULL;
    json_t *text = json_is_object(part) ? json_object_get(part, "text") : NULL;
    if (!json_is_string(type)) {
      proto_buf_free(&b);
      return fail(PROTO_ETYPE, err, errlen,
                  "messages[%zu].content[%zu]: must be an object with a \"type\"", i, j);
    }
    if (strcmp(json_string_value(type), "text") != 0) {
      proto_buf_free(&b);
      return fail(PROTO_ERANGE, err, errlen,
                  "messages[%zu].content[%zu]: type '%.32s' not supported (text only: the "
                  "decoder reads no images, audio or files)",
                  i, j, json_string_value(type));
    }
    if (!json_is_string(text)) {
      proto_buf_free(&b);
      return fail(PROTO_ETYPE, err, errlen, "messages[%zu].content[%zu].text: must be a string", i,
                  j);
    }
    proto_buf_add(&b, json_string_value(text), json_string_length(text));
  }
  if (b.failed) {
    proto_buf_free(&b);
    return fail(PROTO_ENOMEM, err, errlen, "out of memory");
  }
  m->content_len = b.len;
  m->content = b.data ? b.data : calloc(1, 1);
  return m->content ? PROTO_OK : fail(PROTO_ENOMEM, err, errlen, "out of memory");
}

static proto_status chat_messages(json_t *root, proto_complete_req *out, char *err, size_t errlen) {
  static const char *const msg_fields[] = {"role", "content", "name", NULL};
  static const char *const roles[] = {"system", "developer", "user", "assistant", NULL};
  json_t *ms = json_object_get(root, "messages");
  if (!ms) return fail(PROTO_EMISSING, err, errlen, "messages: missing field");
  if (!json_is_array(ms)) return fail(PROTO_ETYPE, err, errlen, "messages: must be an array");
  size_t n = json_array_size(ms);
  if (n == 0) return fail(PROTO_ERANGE, err, errlen, "messages: must hold at least one message");
  out->messages = calloc(n, sizeof *out->messages);
  if (!out->messages) return fail(PROTO_ENOMEM, err, errlen, "out of memory");
  for (size_t i = 0; i < n; i++) {
    json_t *m = json_array_get(ms, i);
    char where[48];
    snprintf(where, sizeof where, "messages[%zu]", i);
    if (!json_is_object(m)) return fail(PROTO_ETYPE, err, errlen, "%s: must be an object", where);
    json_t *tc = json_object_get(m, "tool_calls");
    if (tc && json_is_array(tc) && json_array_size(tc) > 0)
      return fail(PROTO_ERANGE, err, errlen, "%s.tool_calls: not supported (no tool calling)",
                  where);
    proto_status st = check_fields(m, where, msg_fields, err, errlen);
    if (st != PROTO_OK) return st;
    json_t *role = json_object_get(m, "role");
    if (!json_is_string(role))
      return fail(role ? PROTO_ETYPE : PROTO_EMISSING, err, errlen, "%s.role: must be a string",
                  where);
    int r = -1;
    for (int k = 0; roles[k]; k++)
      if (!strcmp(json_string_value(role), roles[k])) r = k;
    if (r < 0)
      return fail(PROTO_EINVAL, err, errlen,
                  "%s.role: '%.32s' is not one of system, developer, user, assistant (tool "
                  "messages need tools, which this server does not support)",
                  where, json_string_value(role));
    json_t *name = json_object_get(m, "name");
    if (name && !json_is_string(name))
      return fail(PROTO_ETYPE, err, errlen, "%s.name: must be a string", where);
    static const proto_chat_role as[] = {PROTO_ROLE_SYSTEM, PROTO_ROLE_SYSTEM, PROTO_ROLE_USER,
                                         PROTO_ROLE_ASSISTANT};
    out->messages[i].role = as[r];
    out->n_messages = i + 1;
    if ((st = message_content(json_object_get(m, "content"), i, &out->messages[i], err, errlen)))
      return st;
  }
  return PROTO_OK;
}

proto_status proto_chat_parse(const char *text, size_t len, proto_complete_req *out, char *err,
                              size_t errlen) {
  static const char *const fields[] = {
      "messages", "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
      "seed", "stop", "stream", "stream_options", "n", "user", "retrieval", "k", "exclude_docs",
      "include_docs", "filter", "retrieval_mode", "frequency_penalty", "presence_penalty",
      "logit_bias",
      /* OpenAI's, refused with 422 unless neutral */
      "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls",
      "response_format", "logprobs", "top_logprobs", "modalities", "store", NULL};
  json_t *root = NULL;
  long long x = 0, y = 0;
  memset(out, 0, sizeof *out);
  out->chat = 1;
  out->logprobs = -1;
  proto_status st = parse_object(text, len, fields, &root, err, errlen);
  if (st != PROTO_OK) goto leave;
  static const struct {
    const char *name, *why;
  } unsupported[] = {{"tools", "no tool calling"},
                     {"tool_choice", "no tool calling"},
                     {"functions", "no function calling"},
                     {"function_call", "no function calling"},
                     {"logprobs", "log-probabilities are on /v1/completions"},
                     {"top_logprobs", "log-probabilities are on /v1/completions"}};
  for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++)
    if ((st = refuse_unless_neutral(root, unsupported[i].name, unsupported[i].why, err, errlen)))
      goto leave;
  json_t *ptc = json_object_get(root, "parallel_tool_calls");
  if (ptc && !json_is_null(ptc) && !json_is_boolean(ptc)) {
    st = fail(PROTO_ETYPE, err, errlen, "parallel_tool_calls: must be a boolean");
    goto leave;
  }
  json_t *store = json_object_get(root, "store");
  if (store && !json_is_null(store) && !json_is_boolean(store)) {
    st = fail(PROTO_ETYPE, err, errlen, "store: must be a boolean");
    goto leave;
  }
  json_t *rf = json_object_get(root, "response_format");
  if (rf && !json_is_null(rf)) {
    json_t *t = json_is_object(rf) ? json_object_get(rf, "type") : NULL;
    if (!json_is_string(t) || strcmp(json_string_value(t), "text") != 0 ||
        json_object_size(rf) != 1) {
      st =
          fail(PROTO_ERANGE, err, errlen,
               "response_format: only {\"type\": \"text\"} is supported (no JSON mode or schemas)");
      goto leave;
    }
  }
  json_t *mod = json_object_get(root, "modalities");
  if (mod && !json_is_null(mod)) {
    json_t *m0 = json_is_array(mod) ? json_array_get(mod, 0) : NULL;
    if (json_array_size(mod) != 1 || !json_is_string(m0) || strcmp(json_string_value(m0), "text")) {
      st = fail(PROTO_ERANGE, err, errlen, "modalities: only [\"text\"] is supported");
      goto leave;
    }
  }
  if ((st = chat_messages(root, out, err, errlen))) goto leave;
  /* max_completion_tokens is the newer name of max_tokens; a long default:
   * a chat answer should not stop mid-sentence at 16 tokens */
  if ((st = get_int(root, NULL, "max_tokens", 1, PROTO_MAX_GEN_TOKENS, 0, &x, err, errlen)))
    goto leave;
  if ((st = get_int(root, NULL, "max_completion_tokens", 1, PROTO_MAX_GEN_TOKENS, 0, &y, err,
                    errlen)))
    goto leave;
  if (x && y && x != y) {
    st = fail(PROTO_EINVAL, err, errlen,
              "max_tokens, max_completion_tokens: give one, or both equal");
    goto leave;
  }
  out->max_tokens = (int)(y ? y : x ? x : PROTO_CHAT_MAX_TOKENS);
  st = sampling_options(root, out, err, errlen);
leave:
  json_decref(root);
  if (st != PROTO_OK) proto_complete_free(out);
  return st;
}

void proto_tok_free(proto_tok_req *r) {
  if (!r) return;
  free(r->content);
  free(r->tokens);
  free(r->model);
  memset(r, 0, sizeof *r);
}

proto_status proto_tok_parse(const char *text, size_t len, int detokenize, proto_tok_req *out,
                             char *err, size_t errlen) {
  static const char *const tok_fields[] = {"content", "with_pieces", "add_special", "model", NULL};
  static const char *const detok_fields[] = {"tokens", "model", NULL};
  json_t *root = NULL;
  int add_special = 0;
  memset(out, 0, sizeof *out);
  proto_status st =
      parse_object(text, len, detokenize ? detok_fields : tok_fields, &root, err, errlen);
  if (st != PROTO_OK) goto leave;
  if ((st = get_model(root, &out->model, err, errlen))) goto leave;
  if (detokenize) {
    json_t *t = json_object_get(root, "tokens");
    if (!t) {
      st = fail(PROTO_EMISSING, err, errlen, "tokens: missing field");
      goto leave;
    }
    if (!json_is_array(t)) {
      st = fail(PROTO_ETYPE, err, errlen, "tokens: must be an array of token ids");
      goto leave;
    }
    out->n_tokens = json_array_size(t);
    out->tokens = malloc((out->n_tokens ? out->n_tokens : 1) * sizeof *out->tokens);
    if (!out->tokens) {
      st = fail(PROTO_ENOMEM, err, errlen, "out of memory");
      goto leave;
    }
    for (size_t i = 0; i < out->n_tokens; i++) {
      json_t *e = json_array_get(t, i);
      if (!json_is_integer(e)) {
        st = fail(PROTO_ETYPE, err, errlen, "tokens[%zu]: must be an integer", i);
        goto leave;
      }
      json_int_t v = json_integer_value(e);
      if (v < 0 || v > INT32_MAX) {
        st = fail(PROTO_ERANGE, err, errlen, "tokens[%zu]: must be a token id >= 0", i);
        goto leave;
      }
      out->tokens[i] = (int32_t)v;
    }
  } else {
    json_t *c = json_object_get(root, "content");
    if (!c) {
      st = fail(PROTO_EMISSING, err, errlen, "content: missing field");
      goto leave;
    }
    if (!json_is_string(c)) {
      st = fail(PROTO_ETYPE, err, errlen, "content: must be a string");
      goto leave;
    }
    if (!(out->content = dup_str(c, &out->content_len))) {
      st = fail(PROTO_ENOMEM, err, errlen, "out of memory");
      goto leave;
    }
    if ((st = get_bool(root, "with_pieces", 0, &out->with_pieces, err, errlen))) goto leave;
    if ((st = get_bool(root, "add_special", 0, &add_special, err, errlen))) goto leave;
    if (add_special)
      st = fail(
          PROTO_ERANGE, err, errlen,
          "add_special: only false is supported (the models add their special tokens themselves)");
  }
leave:
  json_decref(root);
  if (st != PROTO_OK) proto_tok_free(out);
  return st;
}

proto_status proto_json_string(const char *text, size_t len, char **out, size_t *outlen, char *err,
                               size_t errlen) {
  json_error_t je;
  *out = NULL;
  json_t *v = json_loadb(text, len, JSON_DECODE_ANY, &je);
  if (!v) return fail(PROTO_EJSON, err, errlen, "not a JSON string: %s", je.text);
  proto_status st = PROTO_OK;
  if (!json_is_string(v)) st = fail(PROTO_ETYPE, err, errlen, "must be a JSON string (in quotes)");
  else if (!(*out = dup_str(v, outlen))) st = fail(PROTO_ENOMEM, err, errlen, "out of memory");
  json_decref(v);
  return st;
}
