/* http_webui.c - the web playground at GET /: one page (server/webui/
 * index.html) compiled in by server/embed.py, plain and gzip-compressed at
 * build time, so the daemon never compresses at run time, with the
 * Content-Security-Policy that allows its own inline script and style (by
 * hash) and requests to this server, nothing else. */
#include "http_priv.h"

#include <ctype.h>
#include <string.h>

extern const char http_webui_page[];
extern const unsigned long http_webui_page_len;
extern const char http_webui_page_gz[];
extern const unsigned long http_webui_page_gz_len;
extern const char http_webui_page_csp[];

const char *http_webui_csp(void) { return http_webui_page_csp; }

int http_accepts_gzip(const char *accept_encoding) {
  for (const char *p = accept_encoding; p && *p;) {
    size_t len = strcspn(p, ","), k = 0;
    char item[64]; /* one coding, spaces dropped, lower case: "gzip;q=0.5" */
    for (size_t i = 0; i < len && k < sizeof item - 1; i++)
      if (p[i] != ' ' && p[i] != '\t') item[k++] = (char)tolower((unsigned char)p[i]);
    item[k] = 0;
    char *params = strchr(item, ';');
    if (params) *params++ = 0;
    int named = !strcmp(item, "gzip") || !strcmp(item, "*");
    /* a weight of zero (q=0, q=0.000) refuses the coding */
    int refused = params && !strncmp(params, "q=0", 3) && !params[3 + strspn(params + 3, ".0")];
    if (named && !refused) return 1;
    p += len;
    if (*p) p++;
  }
  return 0;
}

void http_webui(http_server *s, const http_request *rq, http_response *resp) {
  if (s->cfg->no_webui) {
    http_error(resp, PROTO_ENOTFOUND, "the web playground is turned off (--no-webui)");
    return;
  }
  int gz = http_accepts_gzip(rq->accept_encoding);
  if (gz) proto_buf_add(&resp->body, http_webui_page_gz, http_webui_page_gz_len);
  else proto_buf_add(&resp->body, http_webui_page, http_webui_page_len);
  resp->content_encoding = gz ? "gzip" : NULL;
  resp->status = 200;
  resp->content_type = "text/html; charset=utf-8";
  if (resp->body.failed) http_error(resp, PROTO_ENOMEM, "out of memory");
}
