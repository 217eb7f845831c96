/* http_cors.c - which web pages on other origins may call the API from a
 * browser (--cors-origins), and what a CORS preflight may ask for. Pure
 * functions of the configured list and the request's headers; http.c adds
 * the headers. */
#include "http.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The request headers a page may send: the two ways of giving the key, the
 * body's type and a request id of its own. */
static const char *const cors_request_headers[] = {"authorization", "api-key", "content-type",
                                                   "x-request-id", NULL};

/* One origin as browsers send it: http or https, a host (a name, an IPv4
 * address or a bracketed IPv6 one), an optional port, and nothing after. */
static int origin_well_formed(const char *s, size_t len) {
  size_t i;
  if (len > 7 && !strncmp(s, "http://", 7)) i = 7;
  else if (len > 8 && !strncmp(s, "https://", 8)) i = 8;
  else return 0;
  size_t host = i;
  if (s[i] == '[') {
    for (i++; i < len && s[i] != ']'; i++)
      if (!isxdigit((unsigned char)s[i]) && s[i] != ':' && s[i] != '.') return 0;
    if (i == len || i == host + 1) return 0;
    i++;
  } else {
    while (i < len && (isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '.')) i++;
    if (i == host) return 0;
  }
  if (i < len && s[i] == ':') {
    size_t digits = ++i;
    while (i < len && isdigit((unsigned char)s[i])) i++;
    if (i == digits || i - digits > 5) return 0;
  }
  return i == len;
}

/* Calls fn for each comma-separated item of list, spaces around it trimmed;
 * stops at the first that fn answers non-zero and returns that. */
static int each_item(const char *list, int (*fn)(const char *s, size_t len, void *ctx), void *ctx) {
  const char *p = list;
  for (;;) {
    while (*p == ' ' || *p == '\t') p++;
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
    int r = fn(p, len, ctx);
    if (r || !end) return r;
    p = end + 1;
  }
}

typedef struct list_check {
  size_t items, stars;
  char *msg;
  size_t n;
} list_check;

static int check_item(const char *s, size_t len, void *ctx) {
  list_check *c = ctx;
  c->items++;
  if (len == 1 && s[0] == '*') {
    c->stars++;
    return 0;
  }
  if (origin_well_formed(s, len)) return 0;
  char shown[96];
  char item[96];
  snprintf(item, sizeof item, "%.*s", (int)(len < 95 ? len : 95), s);
  http_printable(item, shown, sizeof shown);
  if (len == 4 && !strncmp(s, "null", 4))
    snprintf(c->msg, c->n, "'null' is not accepted (any sandboxed page or local file sends it)");
  else
    snprintf(c->msg, c->n,
             "'%s' is not an origin (scheme://host[:port], http or https, no path or "
             "trailing slash; or * alone for any)",
             len ? shown : "");
  return 1;
}

proto_status http_cors_check(const char *list, char *msg, size_t n) {
  list_check c = {0, 0, msg, n};
  if (each_item(list, check_item, &c)) return PROTO_EINVAL;
  if (c.stars && c.items > 1) {
    snprintf(msg, n, "* stands alone (it allows every origin)");
    return PROTO_EINVAL;
  }
  return PROTO_OK;
}

int http_cors_any(const char *list) {
  if (!list) return 0;
  list += strspn(list, " \t");
  return list[0] == '*' && list[1 + strspn(list + 1, " \t")] == '\0';
}

typedef struct origin_match {
  const char *origin;
  size_t len;
} origin_match;

static int same_origin(const char *s, size_t len, void *ctx) {
  const origin_match *m = ctx;
  return (len == 1 && s[0] == '*') || (len == m->len && !memcmp(s, m->origin, len));
}

int http_cors_allows(const char *list, const char *origin) {
  if (!list || !origin || !*origin) return 0;
  origin_match m = {origin, strlen(origin)};
  return each_item(list, same_origin, &m);
}

int http_cors_method_listed(const char *allow, const char *method) {
  size_t ml = strlen(method);
  for (const char *p = allow; p && *p;) {
    p += strspn(p, ", ");
    size_t len = strcspn(p, ",");
    if (len == ml && ml && !strncmp(p, method, ml)) return 1;
    p += len;
  }
  return 0;
}

const char *http_cors_headers_refused(const char *requested, char *shown, size_t n) {
  for (const char *p = requested ? requested : ""; *p;) {
    p += strspn(p, ", \t");
    size_t len = strcspn(p, ", \t");
    if (!len) break;
    int known = 0;
    for (size_t i = 0; cors_request_headers[i] && !known; i++)
      known =
          strlen(cors_request_headers[i]) == len && !strncasecmp(p, cors_request_headers[i], len);
    if (!known) {
      char name[64];
      snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), p);
      http_printable(name, shown, n);
      return shown;
    }
    p += len;
  }
  return NULL;
}
