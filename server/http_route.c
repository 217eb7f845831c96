/* http_route.c - the router (over the rows of http_routes.def), percent-
 * decoding of path ids, API-key checks and the NDJSON line splitter. Pure
 * functions of their inputs: no sockets, no engine, no global state. */
#include "http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How a row takes its path: http_routes.def. */
typedef enum { SHAPE_EXACT, SHAPE_ID, SHAPE_NUM } path_shape;

typedef struct row {
  http_route_info info;
  path_shape shape;
  size_t prefix; /* bytes of the path that must match: all, or up to {id} */
} row;

#define ID_TAIL (sizeof "{id}" - 1)
static const row rows[] = {
#define ROUTE(name, method, path, shp, access, kind, handler, op) \
  [HTTP_R_##name] = {{method, path, access, kind, op},            \
                     SHAPE_##shp,                                 \
                     sizeof path - 1 - (SHAPE_##shp == SHAPE_EXACT ? 0 : ID_TAIL)},
#include "http_routes.def"
#undef ROUTE
};
_Static_assert(sizeof rows / sizeof rows[0] == HTTP_R_OTHER, "one row per route");

const http_route_info *http_route_about(http_route r) {
  return (unsigned)r < HTTP_R_OTHER ? &rows[r].info : NULL;
}

const char *http_route_label(http_route r) {
  return (unsigned)r < HTTP_R_OTHER ? rows[r].info.path : "other";
}

const char *http_route_method(http_route r) {
  return (unsigned)r < HTTP_R_OTHER ? rows[r].info.method : "";
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

long http_pct_decode(const char *src, size_t len, char *dst, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    int c = (unsigned char)src[i];
    if (c == '%') {
      if (i + 2 >= len) return -1;
      int h = hexval((unsigned char)src[i + 1]), l = hexval((unsigned char)src[i + 2]);
      if (h < 0 || l < 0) return -1;
      c = h * 16 + l;
      i += 2;
    }
    if (c == 0 || n + 1 >= cap) return -1;
    dst[n++] = (char)c;
  }
  dst[n] = 0;
  if (!proto_utf8_valid(dst, n)) return -1;
  return (long)n;
}

int http_request_id_ok(const char *v) {
  size_t n = 0;
  for (; v && v[n]; n++) {
    char c = v[n];
    int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok || n == HTTP_REQUEST_ID_MAX) return 0;
  }
  return n > 0;
}

int http_wait_value(const char *v) {
  if (!v || !*v) return v ? 1 : 0; /* ?wait= or ?wait alone: asked for */
  if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes")) return 1;
  if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no")) return 0;
  return -1;
}

void http_printable(const char *s, char *out, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  size_t k = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p && k + 4 < n; p++) {
    if (*p > 0x20 && *p < 0x7f && *p != '"' && *p != '\\') out[k++] = (char)*p;
    else {
      out[k++] = '%';
      out[k++] = hex[*p >> 4];
      out[k++] = hex[*p & 15];
    }
  }
  out[k] = 0;
}

/* A decimal integer in [lo, hi] (digits only); -1 when it is not one. */
static int decimal_in(const char *v, uint64_t lo, uint64_t hi, uint64_t *out) {
  char *end = NULL;
  if (!v || v[0] < '0' || v[0] > '9') return -1;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || *end || x < lo || x > hi) return -1;
  *out = x;
  return 0;
}

proto_status http_list_args(const char *limit, const char *after, size_t *max, uint64_t *after_num,
                            char *msg, size_t n) {
  char shown[72];
  uint64_t v = HTTP_LIST_DEFAULT;
  if (limit && decimal_in(limit, 1, HTTP_LIST_MAX, &v) < 0) {
    http_printable(limit, shown, sizeof shown);
    snprintf(msg, n, "limit: must be an integer from 1 to %d, not '%s'", HTTP_LIST_MAX, shown);
    return PROTO_EINVAL;
  }
  *max = (size_t)v;
  v = 0;
  if (after && decimal_in(after, 0, UINT64_MAX, &v) < 0) {
    http_printable(after, shown, sizeof shown);
    snprintf(msg, n, "after: must be a doc_num (a non-negative integer, from next_after), not '%s'",
             shown);
    return PROTO_EINVAL;
  }
  *after_num = v;
  return PROTO_OK;
}

proto_status http_query_check(http_route r, const char *key, const char *value, char *msg,
                              size_t n) {
  char shown[72];
  if ((r == HTTP_R_DOCS && (!strcmp(key, "wait") || !strcmp(key, "force"))) ||
      (r == HTTP_R_DOC_LIST && !strcmp(key, "with_text"))) {
    if (!value || http_wait_value(value) >= 0) return PROTO_OK;
    http_printable(value, shown, sizeof shown);
    snprintf(msg, n, "%s: must be true or false, not '%s'", key, shown);
    return PROTO_EINVAL;
  }
  if (r == HTTP_R_DOC_LIST && !strcmp(key, "filter")) return PROTO_OK; /* read by the handler */
  if (r == HTTP_R_DOC_LIST && (!strcmp(key, "limit") || !strcmp(key, "after"))) {
    size_t max;
    uint64_t after;
    if (!value) value = "";
    return http_list_args(key[0] == 'l' ? value : NULL, key[0] == 'a' ? value : NULL, &max, &after,
                          msg, n);
  }
  http_printable(key, shown, sizeof shown);
  snprintf(msg, n, "query parameter '%s': unknown (%s)", shown,
           r == HTTP_R_DOCS       ? "POST /v1/documents takes only wait and force"
           : r == HTTP_R_DOC_LIST ? "GET /v1/documents takes limit, after, filter and with_text"
                                  : "this route takes none");
  return PROTO_EUNKNOWN_FIELD;
}

/* Methods as bits, so the Allow header of a path is the union of its rows'. */
enum { M_GET = 1, M_POST = 2, M_PATCH = 4, M_DELETE = 8 };

static unsigned method_bit(const char *method) {
  if (!strcmp(method, "GET") || !strcmp(method, "HEAD")) return M_GET;
  if (!strcmp(method, "POST")) return M_POST;
  if (!strcmp(method, "PATCH")) return M_PATCH;
  if (!strcmp(method, "DELETE")) return M_DELETE;
  return 0;
}

/* The Allow header of each set of method bits. */
static const char *const allow_of[16] = {"",
                                         "GET, HEAD",
                                         "POST",
                                         "GET, HEAD, POST",
                                         "PATCH",
                                         "GET, HEAD, PATCH",
                                         "POST, PATCH",
                                         "GET, HEAD, POST, PATCH",
                                         "DELETE",
                                         "GET, HEAD, DELETE",
                                         "POST, DELETE",
                                         "GET, HEAD, POST, DELETE",
                                         "PATCH, DELETE",
                                         "GET, HEAD, PATCH, DELETE",
                                         "POST, PATCH, DELETE",
                                         "GET, HEAD, POST, PATCH, DELETE"};

/* The rest of path after a row's prefix (its {id}, or "" for EXACT), or
 * NULL when the row does not take this path. */
static const char *path_rest(const row *w, const char *path) {
  if (w->shape == SHAPE_EXACT) return strcmp(path, w->info.path) ? NULL : path + w->prefix;
  return !strncmp(path, w->info.path, w->prefix) && path[w->prefix] ? path + w->prefix : NULL;
}

/* Decodes the {id} of a document or model path into m->id (400 when bad). */
static void decode_id(http_match *m, const char *raw) {
  if (http_pct_decode(raw, strlen(raw), m->id, sizeof m->id) > 0) return;
  m->st = PROTO_EINVAL;
  snprintf(m->msg, sizeof m->msg,
           "id: bad percent-encoding, NUL, invalid UTF-8 or longer than %d bytes",
           PROTO_MAX_ID_BYTES);
}

/* Reads the {id} of a chunk path into m->num (400 unless a positive integer). */
static void decode_num(http_match *m, const char *raw) {
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(raw, &end, 10);
  if (raw[0] < '0' || raw[0] > '9' || errno || *end || v == 0) {
    m->st = PROTO_EINVAL;
    snprintf(m->msg, sizeof m->msg, "id: chunk ids are positive decimal integers");
    return;
  }
  m->num = v;
}

void http_route_match(const char *method, const char *path, http_match *m) {
  memset(m, 0, sizeof *m);
  m->route = HTTP_R_OTHER;
  m->st = PROTO_ENOTFOUND;
  if (!method || !path) return;
  unsigned want = method_bit(method), allowed = 0;
  const row *first = NULL, *hit = NULL;
  const char *rest = NULL;
  /* a path that is a route of its own (/v1/documents/delete) is not also an
   * {id} of a shorter one, as OpenAPI matches concrete paths first */
  int concrete = 0;
  for (size_t i = 0; i < sizeof rows / sizeof rows[0] && !concrete; i++)
    concrete = rows[i].shape == SHAPE_EXACT && !strcmp(path, rows[i].info.path);
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    const char *r = concrete && rows[i].shape != SHAPE_EXACT ? NULL : path_rest(&rows[i], path);
    if (!r) continue;
    unsigned bit = method_bit(rows[i].info.method);
    allowed |= bit;
    if (!first) first = &rows[i];
    if (bit == want && !hit) hit = &rows[i], rest = r;
  }
  if (!first) {
    snprintf(m->msg, sizeof m->msg, "no route for %.16s %.64s", method, path);
    return;
  }
  if (!hit) { /* a 405 is counted under the path's first row */
    m->route = (http_route)(first - rows);
    m->st = PROTO_EMETHOD;
    m->allow = allow_of[allowed];
    snprintf(m->msg, sizeof m->msg, "%s: method %.16s not allowed (allowed: %s)", first->info.path,
             method, m->allow);
    return;
  }
  m->route = (http_route)(hit - rows);
  m->access = hit->info.access;
  m->kind = hit->info.kind;
  m->has_body = want == M_POST || want == M_PATCH;
  m->st = PROTO_OK;
  if (hit->shape == SHAPE_ID) decode_id(m, rest);
  else if (hit->shape == SHAPE_NUM) decode_num(m, rest);
}

int http_ct_equal(const char *a, size_t alen, const char *b, size_t blen) {
  /* compares over the longer length so timing does not depend on where the
   * first difference is; lengths are folded into the result */
  size_t n = alen > blen ? alen : blen;
  unsigned char diff = (unsigned char)(alen != blen);
  for (size_t i = 0; i < n; i++) {
    unsigned char x = i < alen ? (unsigned char)a[i] : 0;
    unsigned char y = i < blen ? (unsigned char)b[i] : 0;
    diff |= (unsigned char)(x ^ y);
  }
  return diff == 0;
}

proto_status http_auth_check(const http_config *cfg, const char *authorization, const char *api_key,
                             http_access need) {
  const char *rw = cfg->api_key && *cfg->api_key ? cfg->api_key : NULL;
  const char *ro = cfg->read_key && *cfg->read_key ? cfg->read_key : NULL;
  if (need == HTTP_OPEN || (!rw && !ro)) return PROTO_OK;
  const char *key = NULL;
  if (authorization) {
    const char *p = authorization;
    while (*p == ' ') p++;
    if (!strncasecmp(p, "Bearer ", 7)) {
      p += 7;
      while (*p == ' ') p++;
      key = p;
    }
  }
  if (!key && api_key) key = api_key;
  if (!key) return PROTO_EUNAUTH;
  size_t kl = strlen(key);
  while (kl && key[kl - 1] == ' ') kl--;
  int is_rw = rw && http_ct_equal(key, kl, rw, strlen(rw));
  int is_ro = ro && http_ct_equal(key, kl, ro, strlen(ro));
  if (is_rw) return PROTO_OK;
  if (is_ro) return need == HTTP_WRITE ? PROTO_EFORBIDDEN : PROTO_OK;
  return PROTO_EUNAUTH;
}

/* ---- NDJSON lines --------------------------------------------------------- */

static proto_status deliver(http_lines *ls, const char *line, size_t len, http_line_fn fn,
                            void *ctx) {
  uint64_t no = ls->lineno++;
  if (ls->overflow) {
    ls->overflow = 0;
    return fn(ctx, NULL, 0, no, 1);
  }
  if (len && line[len - 1] == '\r') len--;
  size_t i = 0;
  while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
  if (i == len) return PROTO_OK; /* blank */
  return fn(ctx, line, len, no, 0);
}

proto_status http_lines_feed(http_lines *ls, const char *data, size_t len, http_line_fn fn,
                             void *ctx, size_t *used) {
  size_t i = 0;
  proto_status st = PROTO_OK;
  if (ls->lineno == 0) ls->lineno = 1;
  while (i < len) {
    const char *nl = memchr(data + i, '\n', len - i);
    size_t seg = nl ? (size_t)(nl - (data + i)) : len - i;
    if (!ls->overflow) {
      if (ls->line.len + seg > ls->max_line) {
        ls->overflow = 1;
        proto_buf_free(&ls->line);
      } else if (!nl || ls->line.len) {
        proto_buf_add(&ls->line, data + i, seg);
        if (ls->line.failed) {
          st = PROTO_ENOMEM;
          break;
        }
      }
    }
    if (!nl) {
      i = len;
      break;
    }
    i += seg + 1;
    if (ls->line.len) {
      st = deliver(ls, ls->line.data, ls->line.len, fn, ctx);
      ls->line.len = 0;
    } else {
      st = deliver(ls, data + i - seg - 1, seg, fn, ctx);
    }
    if (st != PROTO_OK) break;
  }
  if (used) *used = i;
  return st;
}

proto_status http_lines_finish(http_lines *ls, http_line_fn fn, void *ctx) {
  if (ls->lineno == 0) ls->lineno = 1;
  if (!ls->line.len && !ls->overflow) return PROTO_OK;
  proto_status st = deliver(ls, ls->line.data, ls->line.len, fn, ctx);
  ls->line.len = 0;
  return st;
}

void http_lines_free(http_lines *ls) {
  if (!ls) return;
  proto_buf_free(&ls->line);
}
