/* test_http.c - unit tests of the HTTP pieces that need no engine or
 * socket: configuration precedence, routing and id decoding, API-key checks,
 * the NDJSON splitter, the JSON writer (U+FFFD for broken UTF-8) and request
 * decoders, the route table (http_routes.def) and the OpenAPI document
 * against it, and the dispatcher with no engine (validation before 503). */
#include "api.h"       /* the JSON writer and the request decoders */
#include "http_log.h"  /* http_log_time, http_log_request */
#include "http_priv.h" /* http_accepts_gzip */
#include "tap.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

TEST(config_precedence) {
  char path[] = "/tmp/retro-http-conf-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  const char text[] =
      "# comment\nport = 9000\nworkers=3\napi_key = \"file-key\"\nhost = 127.0.0.2 # x\n";
  CHECK(write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1));
  close(fd);
  char *argv[] = {"serve", "--config", path, "--workers", "5", "--data=/d", NULL};
  char *env[] = {"RETRO_PORT=9100", "RETRO_QUEUE=7", "RETRO_WORKERS=4", NULL};
  http_config cfg;
  char err[256] = "";
  int help = 0;
  proto_status st = http_config_load(&cfg, 6, argv, env, &help, err, sizeof err);
  CHECKF(st == PROTO_OK, "%s", err);
  CHECK(cfg.port == 9100); /* env beats file */
  CHECK(cfg.workers == 5); /* flag beats env and file */
  CHECK(cfg.queue == 7);   /* env beats default */
  CHECK(cfg.api_key && !strcmp(cfg.api_key, "file-key"));
  CHECK(cfg.host && !strcmp(cfg.host, "127.0.0.2"));
  CHECK(cfg.data && !strcmp(cfg.data, "/d"));
  CHECK(cfg.max_body == 16777216); /* default */
  http_config_free(&cfg);

  char *bad1[] = {"serve", "--port", "x", NULL};
  CHECK(http_config_load(&cfg, 3, bad1, env, &help, err, sizeof err) == PROTO_EINVAL);
  CHECK(strstr(err, "port") != NULL);
  http_config_free(&cfg);
  char *bad2[] = {"serve", "--nope", NULL};
  CHECK(http_config_load(&cfg, 2, bad2, env, &help, err, sizeof err) == PROTO_EINVAL);
  http_config_free(&cfg);
  /* an empty text value (an unset shell variable) is refused, in a flag or the
   * file; an environment variable set empty counts as unset */
  char *empty_flag[] = {"serve", "--api-key", "", NULL};
  CHECK(http_config_load(&cfg, 3, empty_flag, env, &help, err, sizeof err) == PROTO_EINVAL);
  CHECKF(strstr(err, "api-key: an empty value") != NULL, "%s", err);
  http_config_free(&cfg);
  char *empty_env[] = {"RETRO_API_KEY=", "RETRO_READ_ONLY=", "RETRO_PORT=", NULL};
  char *plain[] = {"serve", NULL};
  CHECK(http_config_load(&cfg, 1, plain, empty_env, &help, err, sizeof err) == PROTO_OK);
  CHECK(cfg.api_key == NULL && cfg.read_only == 0 && cfg.port == 8080);
  http_config_free(&cfg);
  char long_line[6000] = "port = 9"; /* longer than a line may be: it was cut in two */
  memset(long_line + 8, '0', sizeof long_line - 10);
  long_line[sizeof long_line - 2] = '\n';
  long_line[sizeof long_line - 1] = 0;
#define TEXT(s) s, sizeof(s) - 1 /* with any NUL byte inside */
  static struct {
    const char *text;
    size_t len;
    const char *want;
  } files[] = {
      {TEXT("api-key =\n"), ":1: api-key: an empty value"},
      {TEXT("api-key = \"\"\n"), ":1: api-key: an empty value"},
      {TEXT("port = 9000\nworkers = 2\nport = 9001\n"), ":3: port: given twice (first on line 1)"},
      {TEXT("api_key = a\nAPI-KEY = b\n"), ":2: api-key: given twice (first on line 1)"},
      {TEXT("port = 9000\nhost = 127.0.0.1\0 # x\n"), ":2: a NUL byte"}, /* it hid the rest */
      {NULL, 0, ":1: a line longer than 4094 bytes"},
  };
#undef TEXT
  files[5].text = long_line;
  files[5].len = strlen(long_line);
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    FILE *cf = fopen(path, "w");
    fwrite(files[i].text, 1, files[i].len, cf);
    fclose(cf);
    char *with_file[] = {"serve", "--config", path, NULL};
    CHECK(http_config_load(&cfg, 3, with_file, plain + 1, &help, err, sizeof err) == PROTO_EINVAL);
    CHECKF(strstr(err, files[i].want) != NULL, "file %zu: %s", i, err);
    http_config_free(&cfg);
  }
  char *h[] = {"serve", "--help", NULL};
  CHECK(http_config_load(&cfg, 2, h, env, &help, err, sizeof err) == PROTO_OK && help == 1);
  http_config_free(&cfg);
  unlink(path);
  CHECK(strstr(http_config_usage(), "RETRO_API_KEY") != NULL);
  CHECK(http_host_is_loopback("127.0.0.1") && http_host_is_loopback("::1") &&
        http_host_is_loopback("localhost"));
  CHECK(!http_host_is_loopback("0.0.0.0") && !http_host_is_loopback("10.0.0.1") &&
        !http_host_is_loopback("::"));
}

TEST(routing) {
  http_match m;
  http_route_match("GET", "/health", &m);
  CHECK(m.st == PROTO_OK && m.route == HTTP_R_HEALTH && m.access == HTTP_OPEN);
  http_route_match("POST", "/health", &m);
  CHECK(m.st == PROTO_EMETHOD && m.allow && !strcmp(m.allow, "GET, HEAD"));
  http_route_match("GET", "/v1/documents/a%2Fb%20c", &m);
  CHECK(m.st == PROTO_OK && m.route == HTTP_R_DOC_GET && !strcmp(m.id, "a/b c"));
  http_route_match("DELETE", "/v1/documents/x", &m);
  CHECK(m.st == PROTO_OK && m.route == HTTP_R_DOC_DELETE && m.access == HTTP_WRITE);
  http_route_match("GET", "/v1/documents/a%00b", &m);
  CHECK(m.st == PROTO_EINVAL);
  http_route_match("GET", "/v1/documents/%zz", &m);
  CHECK(m.st == PROTO_EINVAL);
  http_route_match("GET", "/v1/documents/%C3", &m);
  CHECK(m.st == PROTO_EINVAL);
  http_route_match("GET", "/v1/documents/", &m);
  CHECK(m.st == PROTO_ENOTFOUND);
  http_route_match("GET", "/v1/chunks/42", &m);
  CHECK(m.st == PROTO_OK && m.num == 42);
  http_route_match("GET", "/v1/chunks/-1", &m);
  CHECK(m.st == PROTO_EINVAL);
  http_route_match("GET", "/v1/chunks/99999999999999999999999", &m);
  CHECK(m.st == PROTO_EINVAL);
  http_route_match("POST", "/v1/search", &m);
  CHECK(m.st == PROTO_OK && m.kind == HTTP_WORKER && m.has_body && m.access == HTTP_READ);
  http_route_match("POST", "/v1/documents", &m);
  CHECK(m.st == PROTO_OK && m.access == HTTP_WRITE);
  http_route_match("GET", "/v1/documents", &m);
  CHECK(m.st == PROTO_OK && m.route == HTTP_R_DOC_LIST && m.access == HTTP_READ && !m.has_body);
  http_route_match("DELETE", "/v1/documents", &m);
  CHECK(m.st == PROTO_EMETHOD && !strcmp(m.allow, "GET, HEAD, POST"));
  http_route_match("GET", "/", &m);
  CHECK(m.st == PROTO_OK && m.route == HTTP_R_WEBUI && m.access == HTTP_OPEN);
  http_route_match("POST", "/", &m);
  CHECK(m.st == PROTO_EMETHOD);
  http_route_match("GET", "/v1/searchx", &m);
  CHECK(m.st == PROTO_ENOTFOUND && m.route == HTTP_R_OTHER);
  char big[600];
  memset(big, 'a', sizeof big);
  memcpy(big, "/v1/documents/", 14);
  big[sizeof big - 1] = 0;
  http_route_match("GET", big, &m);
  CHECK(m.st == PROTO_EINVAL);
}

TEST(list_args_and_gzip) {
  size_t max;
  uint64_t after;
  char msg[160];
  CHECK(http_list_args(NULL, NULL, &max, &after, msg, sizeof msg) == PROTO_OK &&
        max == HTTP_LIST_DEFAULT && after == 0);
  CHECK(http_list_args("1000", "18446744073709551615", &max, &after, msg, sizeof msg) == PROTO_OK &&
        max == 1000 && after == UINT64_MAX);
  const char *bad_limit[] = {"0", "1001", "", "-1", "+5", " 5", "5x", "99999999999999999999"};
  for (size_t i = 0; i < sizeof bad_limit / sizeof *bad_limit; i++)
    CHECKF(http_list_args(bad_limit[i], NULL, &max, &after, msg, sizeof msg) == PROTO_EINVAL &&
               strstr(msg, "limit"),
           "limit=%s", bad_limit[i]);
  CHECK(http_list_args(NULL, "18446744073709551616", &max, &after, msg, sizeof msg) ==
            PROTO_EINVAL &&
        strstr(msg, "after"));
  CHECK(http_query_check(HTTP_R_DOC_LIST, "after", "x", msg, sizeof msg) == PROTO_EINVAL);
  CHECK(http_query_check(HTTP_R_DOC_LIST, "limit", "3", msg, sizeof msg) == PROTO_OK);
  CHECK(http_query_check(HTTP_R_DOC_LIST, "wait", "1", msg, sizeof msg) == PROTO_EUNKNOWN_FIELD);
  CHECK(http_query_check(HTTP_R_DOCS, "limit", "1", msg, sizeof msg) == PROTO_EUNKNOWN_FIELD);
  CHECK(http_query_check(HTTP_R_DOC_LIST, "with_text", "true", msg, sizeof msg) == PROTO_OK);
  CHECK(http_query_check(HTTP_R_DOC_LIST, "with_text", "2", msg, sizeof msg) == PROTO_EINVAL);
  CHECK(strstr(msg, "with_text") != NULL);
  CHECK(http_query_check(HTTP_R_DOCS, "with_text", "true", msg, sizeof msg) ==
        PROTO_EUNKNOWN_FIELD);
  const char *yes[] = {"gzip", "GZIP", "deflate, gzip", "gzip;q=0.5", "br, *", "gzip ; q=1"};
  const char *no[] = {"", "identity", "br", "gzip;q=0", "gzip; q=0.000", "x-gzip", "*;q=0"};
  CHECK(!http_accepts_gzip(NULL));
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
    CHECKF(http_accepts_gzip(yes[i]), "%s", yes[i]);
  for (size_t i = 0; i < sizeof no / sizeof *no; i++)
    CHECKF(!http_accepts_gzip(no[i]), "%s", no[i]);
}

TEST(auth) {
  http_config cfg;
  memset(&cfg, 0, sizeof cfg);
  CHECK(http_auth_check(&cfg, NULL, NULL, HTTP_WRITE) == PROTO_OK); /* no keys: open */
  cfg.api_key = "rw";
  cfg.read_key = "ro";
  CHECK(http_auth_check(&cfg, NULL, NULL, HTTP_OPEN) == PROTO_OK);
  CHECK(http_auth_check(&cfg, NULL, NULL, HTTP_READ) == PROTO_EUNAUTH);
  CHECK(http_auth_check(&cfg, "Bearer rw", NULL, HTTP_WRITE) == PROTO_OK);
  CHECK(http_auth_check(&cfg, "bearer  rw", NULL, HTTP_WRITE) == PROTO_OK);
  CHECK(http_auth_check(&cfg, NULL, "rw", HTTP_WRITE) == PROTO_OK);
  CHECK(http_auth_check(&cfg, NULL, "ro", HTTP_READ) == PROTO_OK);
  CHECK(http_auth_check(&cfg, "Bearer ro", NULL, HTTP_WRITE) == PROTO_EFORBIDDEN);
  CHECK(http_auth_check(&cfg, "Bearer r", NULL, HTTP_READ) == PROTO_EUNAUTH);
  CHECK(http_auth_check(&cfg, "Bearer rww", NULL, HTTP_READ) == PROTO_EUNAUTH);
  CHECK(http_auth_check(&cfg, "Basic rw", NULL, HTTP_READ) == PROTO_EUNAUTH);
  CHECK(http_auth_check(&cfg, "Bearer ", NULL, HTTP_READ) == PROTO_EUNAUTH);
  CHECK(http_ct_equal("abc", 3, "abc", 3) && !http_ct_equal("abc", 3, "abd", 3) &&
        !http_ct_equal("abc", 3, "ab", 2) && !http_ct_equal("", 0, "a", 1));
}

TEST(cors) {
  char msg[256], shown[64];
  const char *good[] = {"*",
                        " * ",
                        "http://a.test",
                        "https://a.test:8443",
                        "http://127.0.0.1:3000",
                        "http://[::1]:8000",
                        "http://a.test, https://b-c.test:1"};
  const char *bad[] = {"",           "a.test",           "http://",         "http://a.test/",
                       "null",       "ftp://a.test",     "http://a.test:",  "http://a.test:123456",
                       "http://a b", "http://[::1",      "http://[]",       "http://a.test,",
                       "*,*",        "*, http://a.test", "http://a.test/x", "http://user@a.test"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    CHECKF(http_cors_check(good[i], msg, sizeof msg) == PROTO_OK, "'%s': %s", good[i], msg);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    CHECKF(http_cors_check(bad[i], msg, sizeof msg) == PROTO_EINVAL, "'%s' accepted", bad[i]);
  CHECK(http_cors_check("http://x.test, http://a.test/", msg, sizeof msg) == PROTO_EINVAL &&
        strstr(msg, "'http://a.test/' is not an origin"));
  CHECK(http_cors_any("*") && http_cors_any(" * ") && !http_cors_any("http://a.test") &&
        !http_cors_any(NULL));
  const char *list = "http://a.test, https://b.test:8443";
  CHECK(http_cors_allows(list, "http://a.test") && http_cors_allows(list, "https://b.test:8443"));
  CHECK(!http_cors_allows(list, "http://a.test:80") && !http_cors_allows(list, "https://a.test") &&
        !http_cors_allows(list, "http://a.tes") && !http_cors_allows(list, "http://a.test, x") &&
        !http_cors_allows(list, "") && !http_cors_allows(list, NULL) &&
        !http_cors_allows(NULL, "http://a.test"));
  CHECK(http_cors_allows("*", "http://anything.test") && !http_cors_allows("*", ""));
  CHECK(http_cors_method_listed("GET, HEAD, DELETE", "DELETE") &&
        http_cors_method_listed("GET, HEAD, DELETE", "GET") &&
        !http_cors_method_listed("GET, HEAD, DELETE", "POST") &&
        !http_cors_method_listed("GET, HEAD", "GE") && !http_cors_method_listed("POST", ""));
  CHECK(http_cors_headers_refused(NULL, shown, sizeof shown) == NULL);
  CHECK(http_cors_headers_refused("authorization,content-type", shown, sizeof shown) == NULL);
  CHECK(http_cors_headers_refused(" Api-Key , X-Request-Id ", shown, sizeof shown) == NULL);
  CHECK(http_cors_headers_refused("content-type,x-other", shown, sizeof shown) &&
        !strcmp(shown, "x-other"));
  CHECK(http_cors_headers_refused("authorizationx", shown, sizeof shown) &&
        !strcmp(shown, "authorizationx"));
}

typedef struct lines_out {
  int n;
  char got[8][64];
  uint64_t no[8];
  int too_long[8];
} lines_out;

static proto_status collect(void *ctx, const char *line, size_t len, uint64_t no, int too_long) {
  lines_out *o = ctx;
  if (o->n < 8) {
    snprintf(o->got[o->n], sizeof o->got[0], "%.*s", (int)len, line ? line : "");
    o->no[o->n] = no;
    o->too_long[o->n] = too_long;
  }
  o->n++;
  return PROTO_OK;
}

TEST(ndjson_lines) {
  const char *data = "{\"a\":1}\r\n\n  \n{\"b\":2}\n0123456789abcdef\n{\"c\":3}";
  /* every split point gives the same lines */
  for (size_t cut = 0; cut <= strlen(data); cut++) {
    http_lines ls;
    memset(&ls, 0, sizeof ls);
    ls.max_line = 12;
    lines_out o;
    memset(&o, 0, sizeof o);
    CHECK(http_lines_feed(&ls, data, cut, collect, &o, NULL) == PROTO_OK);
    CHECK(http_lines_feed(&ls, data + cut, strlen(data) - cut, collect, &o, NULL) == PROTO_OK);
    CHECK(http_lines_finish(&ls, collect, &o) == PROTO_OK);
    int good = o.n == 4 && !strcmp(o.got[0], "{\"a\":1}") && o.no[0] == 1 &&
               !strcmp(o.got[1], "{\"b\":2}") && o.no[1] == 4 && o.too_long[2] && o.no[2] == 5 &&
               !strcmp(o.got[3], "{\"c\":3}") && o.no[3] == 6;
    CHECKF(good, "cut %zu: n=%d", cut, o.n);
    http_lines_free(&ls);
  }
}

TEST(json_writer) {
  proto_buf b;
  proto_buf_init(&b);
  proto_jw w;
  proto_jw_init(&w, &b);
  proto_jw_obj(&w);
  proto_jw_key(&w, "s");
  proto_jw_str(&w, "a\"\\\n\x01\xe2\x82", 7); /* ends mid-character */
  proto_jw_key(&w, "arr");
  proto_jw_arr(&w);
  proto_jw_int(&w, -3);
  proto_jw_int(&w, 0);
  proto_jw_int(&w, INT64_MIN);
  proto_jw_uint(&w, 1234567890123456789u);
  proto_jw_float(&w, 0.1f);
  proto_jw_num(&w, 1.0 / 0.0);
  proto_jw_bool(&w, 1);
  proto_jw_arr_end(&w);
  proto_jw_key(&w, "bad");
  proto_jw_str(&w, "\xff\xc0\x80x\xed\xa0\x80", 7);
  proto_jw_obj_end(&w);
  const char *want =
      "{\"s\":\"a\\\"\\\\\\n\\u0001\xef\xbf\xbd\",\"arr\":[-3,0,-9223372036854775808,1234567890123456789,0.1,null,true],"
      "\"bad\":\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdx\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}";
  CHECKF(b.data && !strcmp(b.data, want), "%s", b.data);
  CHECK(proto_utf8_valid(b.data, b.len));
  json_error_t je;
  json_t *v = json_loadb(b.data, b.len, 0, &je);
  CHECK(v != NULL);
  json_decref(v);
  proto_buf_free(&b);
}

TEST(decoders) {
  char err[256];
  proto_search_req s;
  const char *q1 = "{\"query\":\"hi\",\"k\":3,\"exclude_docs\":[\"a\"]}";
  CHECK(proto_search_parse(q1, strlen(q1), &s, err, sizeof err) == PROTO_OK);
  CHECK(s.n_queries == 1 && !strcmp(s.queries[0], "hi") && s.k == 3 && s.n_exclude == 1 &&
        s.with_text);
  proto_search_free(&s);
  const char *v = "{\"vector\":[1,2.5,-3],\"k\":1}";
  CHECK(proto_search_parse(v, strlen(v), &s, err, sizeof err) == PROTO_OK && s.dim == 3 &&
        s.vector[1] == 2.5f);
  proto_search_free(&s);
  const char *dup = "{\"query\":\"a\",\"query\":\"b\"}";
  CHECK(proto_search_parse(dup, strlen(dup), &s, err, sizeof err) == PROTO_EJSON);
  const char *both = "{\"query\":\"a\",\"vector\":[1]}";
  CHECK(proto_search_parse(both, strlen(both), &s, err, sizeof err) == PROTO_EINVAL);
  const char *utf = "{\"query\":\"\xc3\x28\"}";
  CHECK(proto_search_parse(utf, strlen(utf), &s, err, sizeof err) == PROTO_EUTF8);
  const char *k0 = "{\"query\":\"a\",\"k\":0}";
  CHECK(proto_search_parse(k0, strlen(k0), &s, err, sizeof err) == PROTO_ERANGE &&
        strstr(err, "k:"));
  const char *unk = "{\"query\":\"a\",\"zz\":0}";
  CHECK(proto_search_parse(unk, strlen(unk), &s, err, sizeof err) == PROTO_EUNKNOWN_FIELD &&
        strstr(err, "zz"));

  proto_complete_req c;
  const char *cr =
      "{\"prompt\":\"p\",\"stop\":\"\\n\",\"temperature\":0,\"seed\":5,\"logprobs\":2}";
  CHECK(proto_complete_parse(cr, strlen(cr), &c, err, sizeof err) == PROTO_OK);
  CHECK(c.n_stop == 1 && c.stop[0][0] == '\n' && c.temperature == 0 && c.has_seed && c.seed == 5 &&
        c.logprobs == 2 && c.max_tokens == 16 && c.retrieval == 1 && c.top_p == 1);
  proto_complete_free(&c);
  const char *neg = "{\"prompt\":\"p\",\"temperature\":-0.5}";
  CHECK(proto_complete_parse(neg, strlen(neg), &c, err, sizeof err) == PROTO_ERANGE &&
        strstr(err, "temperature"));
  const char *n2 = "{\"prompt\":\"p\",\"n\":2}";
  CHECK(proto_complete_parse(n2, strlen(n2), &c, err, sizeof err) == PROTO_ERANGE);

  proto_doc *docs = NULL;
  size_t n = 0;
  const char *d = "{\"documents\":[{\"id\":\"x\",\"text\":\"t\",\"metadata\":{\"a\":[1]}}]}";
  CHECK(proto_docs_parse(d, strlen(d), 10, &docs, &n, err, sizeof err) == PROTO_OK && n == 1);
  CHECK(n == 1 && !strcmp(docs[0].metadata_json, "{\"a\":[1]}"));
  for (size_t i = 0; i < n; i++) proto_doc_free(&docs[i]);
  free(docs);
  const char *d2 = "{\"documents\":[{\"id\":\"x\",\"text\":\"t\"},{\"id\":\"\",\"text\":\"t\"}]}";
  CHECK(proto_docs_parse(d2, strlen(d2), 10, &docs, &n, err, sizeof err) == PROTO_ERANGE &&
        strstr(err, "documents[1].id"));
  proto_search_req sr;
  const char *sf = "{\"vector\":[1,2],\"filter\":{\"lang\":\"en\",\"n\":[1, 2.5, null, true]}}";
  CHECK(proto_search_parse(sf, strlen(sf), &sr, err, sizeof err) == PROTO_OK && sr.filter_json &&
        !strcmp(sr.filter_json, "{\"lang\":\"en\",\"n\":[1,2.5,null,true]}"));
  proto_search_free(&sr);
  const char *s0 = "{\"vector\":[1,2],\"filter\":{}}";
  CHECK(proto_search_parse(s0, strlen(s0), &sr, err, sizeof err) == PROTO_OK && !sr.filter_json);
  proto_search_free(&sr);
  const char *sb =
      "{\"vector\":[1,2],\"filter\":{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,"
      "\"g\":7,\"h\":8,\"i\":9,\"j\":10,\"k\":11,\"l\":12,\"m\":13,\"n\":14,\"o\":15,"
      "\"p\":16,\"q\":17}}";
  CHECK(proto_search_parse(sb, strlen(sb), &sr, err, sizeof err) == PROTO_ERANGE &&
        strstr(err, "filter"));
  proto_embed_req e;
  const char *er = "{\"input\":[\"a\",\"b\"],\"model\":\"m\"}";
  CHECK(proto_embed_parse(er, strlen(er), &e, err, sizeof err) == PROTO_OK && e.n == 2 &&
        !strcmp(e.model, "m"));
  CHECK(!e.base64 && e.dimensions == 0);
  proto_embed_free(&e);
  const char *eb = "{\"input\":\"a\",\"encoding_format\":\"base64\",\"dimensions\":32}";
  CHECK(proto_embed_parse(eb, strlen(eb), &e, err, sizeof err) == PROTO_OK && e.base64 &&
        e.dimensions == 32);
  proto_embed_free(&e);
  const char *ef = "{\"input\":\"a\",\"encoding_format\":\"int8\"}";
  CHECK(proto_embed_parse(ef, strlen(ef), &e, err, sizeof err) == PROTO_ERANGE &&
        strstr(err, "encoding_format"));
  const char *ed = "{\"input\":\"a\",\"dimensions\":0}";
  CHECK(proto_embed_parse(ed, strlen(ed), &e, err, sizeof err) == PROTO_ERANGE &&
        strstr(err, "dimensions"));
}

/* The body of POST /v1/documents/delete: ids within bounds, repeats named; or
 * a filter, never empty, never beside ids. */
TEST(delete_body) {
  char err[256];
  proto_delete_req r;
  proto_buf b = {0};
  for (int n = PROTO_MAX_DELETE; n <= PROTO_MAX_DELETE + 1; n++) {
    b.len = 0;
    proto_buf_add(&b, "{\"ids\":[", 8);
    for (int i = 0; i < n; i++) {
      char one[24];
      int k = snprintf(one, sizeof one, "%s\"d%d\"", i ? "," : "", i);
      proto_buf_add(&b, one, (size_t)k);
    }
    proto_buf_add(&b, "]}", 2);
    proto_status st = proto_delete_parse(b.data, b.len, &r, err, sizeof err);
    if (n == PROTO_MAX_DELETE)
      CHECKF(st == PROTO_OK && r.n == (size_t)n && !strcmp(r.ids[n - 1], "d99999"), "%s", err);
    else CHECKF(st == PROTO_ERANGE && strstr(err, "ids: at most 100000 strings"), "%s", err);
    proto_delete_free(&r);
  }
  proto_buf_free(&b);
  const char *rep = "{\"ids\":[\"b\",\"a\",\"c\",\"a\"]}";
  CHECK(proto_delete_parse(rep, strlen(rep), &r, err, sizeof err) == PROTO_EINVAL &&
        strstr(err, "ids[3]: given twice (also ids[1])"));
  const char *twice = "{\"ids\":[\"a\"],\"ids\":[\"b\"]}";
  CHECK(proto_delete_parse(twice, strlen(twice), &r, err, sizeof err) != PROTO_OK);
  const char *arr = "[\"a\"]";
  CHECK(proto_delete_parse(arr, strlen(arr), &r, err, sizeof err) == PROTO_ETYPE &&
        strstr(err, "body: must be an object"));
  CHECK(r.ids == NULL && r.n == 0);
  const char *f = "{\"filter\": {\"src\": [\"a\", 2]}, \"ids\": null}";
  CHECK(proto_delete_parse(f, strlen(f), &r, err, sizeof err) == PROTO_OK && r.n == 0 &&
        r.filter_json && !strcmp(r.filter_json, "{\"src\":[\"a\",2]}"));
  proto_delete_free(&r);
  const char *empty = "{\"filter\": {}}";
  CHECK(proto_delete_parse(empty, strlen(empty), &r, err, sizeof err) == PROTO_ERANGE &&
        strstr(err, "filter: empty"));
  const char *both = "{\"filter\": {\"a\": 1}, \"ids\": [\"x\"]}";
  CHECK(proto_delete_parse(both, strlen(both), &r, err, sizeof err) == PROTO_EINVAL &&
        strstr(err, "only one of ids, filter") && !r.filter_json && !r.ids);
}

/* A route's path with its {id} filled in, as a client sends it. */
static void concrete_path(const char *path, char *out, size_t n) {
  snprintf(out, n, "%s", path);
  char *brace = strstr(out, "{id}");
  if (brace) memcpy(brace, "7\0\0\0", 4);
}

/* The table of http_routes.def itself: every row is matched by its own
 * method and path, GET rows answer HEAD, other methods on a routed path get
 * 405 with an Allow header naming exactly the rows of that path, and
 * operation ids are unique. */
TEST(route_table) {
  for (int r = 0; r < HTTP_R_OTHER; r++) {
    const http_route_info *a = http_route_about((http_route)r);
    char path[128];
    concrete_path(a->path, path, sizeof path);
    http_match m;
    http_route_match(a->method, path, &m);
    CHECKF(m.st == PROTO_OK && m.route == (http_route)r && m.access == a->access &&
               m.kind == a->kind &&
               m.has_body == (!strcmp(a->method, "POST") || !strcmp(a->method, "PATCH")),
           "%s %s", a->method, a->path);
    if (!strcmp(a->method, "GET")) {
      http_route_match("HEAD", path, &m);
      CHECKF(m.st == PROTO_OK && m.route == (http_route)r, "HEAD %s", a->path);
    }
    http_route_match("PUT", path, &m);
    char want[64] = "";
    static const char *const methods[] = {"GET", "POST", "PATCH", "DELETE"};
    for (size_t k = 0; k < 4; k++)
      for (int q = 0; q < HTTP_R_OTHER; q++) {
        const http_route_info *b = http_route_about((http_route)q);
        if (strcmp(b->path, a->path) || strcmp(b->method, methods[k])) continue;
        if (*want) strcat(want, ", ");
        strcat(want, k == 0 ? "GET, HEAD" : methods[k]);
      }
    CHECKF(m.st == PROTO_EMETHOD && m.allow && !strcmp(m.allow, want), "PUT %s: Allow %s, want %s",
           a->path, m.allow ? m.allow : "(none)", want);
    for (int q = 0; q < r; q++)
      CHECKF(strcmp(http_route_about((http_route)q)->operation_id, a->operation_id),
             "operation id %s twice", a->operation_id);
  }
  CHECK(http_route_about(HTTP_R_OTHER) == NULL && !strcmp(http_route_label(HTTP_R_OTHER), "other"));
}

/* server/openapi.json against the route table, both ways: each row is the
 * operation of its path and method with its operationId, security [] exactly
 * when open and x-retro-access naming its key; each operation is a row. */
TEST(openapi_matches_routes) {
  static const char *const access_name[] = {"open", "read", "write"};
  json_error_t je;
  json_t *doc = json_loads(http_openapi_json(), JSON_REJECT_DUPLICATES, &je);
  CHECKF(doc != NULL, "%s", je.text);
  if (!doc) return;
  json_t *paths = json_object_get(doc, "paths");
  CHECK(json_is_object(paths));
  for (int r = 0; r < HTTP_R_OTHER; r++) {
    const http_route_info *a = http_route_about((http_route)r);
    char lower[16];
    size_t i = 0;
    for (; a->method[i] && i < sizeof lower - 1; i++) lower[i] = (char)(a->method[i] + 32);
    lower[i] = 0;
    json_t *op = json_object_get(json_object_get(paths, a->path), lower);
    CHECKF(json_is_object(op), "%s %s is not in openapi.json", a->method, a->path);
    if (!op) continue;
    const char *id = json_string_value(json_object_get(op, "operationId"));
    CHECKF(id && !strcmp(id, a->operation_id), "%s %s: operationId %s, the table says %s",
           a->method, a->path, id ? id : "(none)", a->operation_id);
    json_t *sec = json_object_get(op, "security");
    int open = json_is_array(sec) && json_array_size(sec) == 0;
    CHECKF(open == (a->access == HTTP_OPEN), "%s %s: security [] %s", a->method, a->path,
           open ? "on a route that needs a key" : "missing on an open route");
    const char *acc = json_string_value(json_object_get(op, "x-retro-access"));
    CHECKF(acc && !strcmp(acc, access_name[a->access]), "%s %s: x-retro-access %s, want %s",
           a->method, a->path, acc ? acc : "(none)", access_name[a->access]);
  }
  const char *path;
  json_t *ops;
  json_object_foreach(paths, path, ops) {
    const char *method;
    json_t *op;
    json_object_foreach(ops, method, op) {
      char up[16], concrete[128];
      size_t i = 0;
      for (; method[i] && i < sizeof up - 1; i++) up[i] = (char)(method[i] - 32);
      up[i] = 0;
      concrete_path(path, concrete, sizeof concrete);
      http_match m;
      http_route_match(up, concrete, &m);
      CHECKF(m.st == PROTO_OK && !strcmp(http_route_label(m.route), path) &&
                 !strcmp(http_route_method(m.route), up),
             "%s %s is in openapi.json but not in http_routes.def", up, path);
    }
  }
  json_decref(doc);
}

TEST(dispatch_without_engine) {
  http_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.max_body = 1024;
  cfg.api_key = "k";
  http_server *s = NULL;
  CHECK(http_server_new(&cfg, NULL, &s) == PROTO_OK);
  struct {
    const char *method, *path, *auth, *ctype, *body;
    int want;
  } cases[] = {
      {"GET", "/health", NULL, NULL, NULL, 200},
      {"GET", "/ready", NULL, NULL, NULL, 503},
      {"GET", "/v1/info", NULL, NULL, NULL, 401},
      {"GET", "/v1/info", "Bearer k", NULL, NULL, 503},
      {"POST", "/v1/search", "Bearer k", "application/json", "{\"query\":1}", 400},
      {"POST", "/v1/search", "Bearer k", "application/json", "{\"query\":\"a\"}", 503},
      {"POST", "/v1/search", "Bearer k", "text/plain", "{}", 415},
      {"POST", "/v1/documents", "Bearer k", "application/x-ndjson",
       "{\"id\":\"a\",\"text\":\"b\"}\n", 503},
      {"POST", "/v1/completions", "Bearer k", "application/json", "{\"prompt\":\"a\",\"top_p\":2}",
       422},
      {"GET", "/openapi.json", NULL, NULL, NULL, 200},
      {"GET", "/", NULL, NULL, NULL, 200},
      {"GET", "/v1/documents", "Bearer k", NULL, NULL, 503},
      {"GET", "/metrics", "Bearer k", NULL, NULL, 200},
      {"PATCH", "/v1/search", NULL, NULL, NULL, 405},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    http_request rq;
    memset(&rq, 0, sizeof rq);
    rq.method = cases[i].method;
    rq.path = cases[i].path;
    rq.authorization = cases[i].auth;
    rq.content_type = cases[i].ctype;
    rq.body = cases[i].body ? cases[i].body : "";
    rq.body_len = strlen(rq.body);
    http_response resp;
    http_dispatch(s, &rq, &resp);
    CHECKF(resp.status == cases[i].want, "%s %s -> %d, want %d: %s", cases[i].method, cases[i].path,
           resp.status, cases[i].want, resp.body.data ? resp.body.data : "");
    proto_buf_free(&resp.body);
  }
  http_server_free(s);
}

TEST(query_parameters) {
  CHECK(http_request_id_ok("a") && http_request_id_ok("req-1.2_3:Z"));
  CHECK(!http_request_id_ok(NULL) && !http_request_id_ok("") && !http_request_id_ok("a b") &&
        !http_request_id_ok("a\"b") && !http_request_id_ok("\xc3\xa9"));
  char id[HTTP_REQUEST_ID_MAX + 2];
  memset(id, 'i', sizeof id - 1);
  id[sizeof id - 1] = 0; /* one over the limit */
  CHECK(!http_request_id_ok(id));
  id[HTTP_REQUEST_ID_MAX] = 0;
  CHECK(http_request_id_ok(id));
  CHECK(http_wait_value(NULL) == 0 && http_wait_value("") == 1);
  CHECK(http_wait_value("true") == 1 && http_wait_value("TRUE") == 1 && http_wait_value("1") == 1 &&
        http_wait_value("yes") == 1);
  CHECK(http_wait_value("false") == 0 && http_wait_value("False") == 0 &&
        http_wait_value("0") == 0 && http_wait_value("no") == 0);
  CHECK(http_wait_value("maybe") == -1 && http_wait_value("2") == -1 &&
        http_wait_value("true ") == -1);
  char msg[160];
  CHECK(http_query_check(HTTP_R_DOCS, "wait", "true", msg, sizeof msg) == PROTO_OK);
  CHECK(http_query_check(HTTP_R_DOCS, "wait", NULL, msg, sizeof msg) == PROTO_OK);
  CHECK(http_query_check(HTTP_R_DOCS, "wait", "maybe", msg, sizeof msg) == PROTO_EINVAL);
  CHECKF(strstr(msg, "wait") && strstr(msg, "'maybe'"), "%s", msg);
  CHECK(http_query_check(HTTP_R_DOCS, "wiat", "true", msg, sizeof msg) == PROTO_EUNKNOWN_FIELD);
  CHECKF(strstr(msg, "'wiat'") && strstr(msg, "only wait"), "%s", msg);
  CHECK(http_query_check(HTTP_R_SEARCH, "wait", "true", msg, sizeof msg) == PROTO_EUNKNOWN_FIELD);
  CHECKF(strstr(msg, "takes none"), "%s", msg);
  /* raw bytes and quotes in a key are shown escaped: the message stays valid UTF-8 */
  CHECK(http_query_check(HTTP_R_INFO, "a\xff\"b", NULL, msg, sizeof msg) == PROTO_EUNKNOWN_FIELD);
  CHECKF(strstr(msg, "'a%FF%22b'") && proto_utf8_valid(msg, strlen(msg)), "%s", msg);
  char longkey[400];
  memset(longkey, 'k', sizeof longkey - 1);
  longkey[sizeof longkey - 1] = 0;
  CHECK(http_query_check(HTTP_R_INFO, longkey, NULL, msg, sizeof msg) == PROTO_EUNKNOWN_FIELD);
  CHECK(strlen(msg) < sizeof msg);
}

/* The log's "%.3f" without printf: the very text of snprintf's, on values
 * of every size, exact halves (ties to even), signs and zeros. */
TEST(log_fixed3) {
  uint64_t r = 7;
  int same = 1;
  for (int i = 0; i < 200000 && same; i++) {
    r ^= r << 13;
    r ^= r >> 7;
    r ^= r << 17;
    double u = (double)(r >> 11) / 9007199254740992.0, x;
    switch (i % 6) {
      case 0:
        x = u * pow(10.0, (double)(int)(r % 14) - 4.0);
        break; /* 1e-4 .. 1e9 */
      case 1:
        x = (double)(r % 100000000) / 1024.0;
        break; /* exact binary */
      case 2:
        x = (double)(r % 1000000) / 16.0;
        break; /* thousandths' ties */
      case 3:
        x = -u * 1000.0;
        break;
      case 4:
        x = (double)(r % 2000000) / 2000.0 + 0.0005;
        break; /* near ties */
      default:
        x = u * 1e-6;
        break;
    }
    char want[64], got[32];
    snprintf(want, sizeof want, "%.3f", x);
    size_t n = http_log_fixed3(x, got);
    if (strcmp(want, got) != 0 || n != strlen(want)) {
      printf("# %.17g: %s, want %s\n", x, got, want);
      same = 0;
    }
  }
  CHECK(same);
  static const double edge[] = {0.0,    -0.0,   0.0005, 0.0015, 0.0625,
                                1e-300, 5e-324, -1e-9,  1e15,   1e20};
  for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
    char want[64], got[32];
    snprintf(want, sizeof want, "%.3f", edge[i]);
    http_log_fixed3(edge[i], got);
    CHECKF(strcmp(want, got) == 0, "%.17g: %s, want %s", edge[i], got, want);
  }
}

/* A request line as the log writes it: the text the former format string
 * gave, cut at 1200 bytes keeping its newline. */
TEST(log_request_line) {
  char path[] = "/tmp/retro_test_log_XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  close(fd);
  http_log_init();
  CHECK(http_log_open(path) == 0);
  char longpath[1300];
  memset(longpath, 'p', sizeof longpath - 1);
  longpath[sizeof longpath - 1] = 0;
  const char *paths[] = {"/v1/search", longpath};
  char want[4096];
  size_t wn = 0;
  for (int i = 0; i < 4; i++) {
    double ms = i * 1.23456789 + 0.0005;
    int aborted = i == 2;
    char line[1200];
    int n =
        snprintf(line, sizeof line,
                 "time=%s method=%s path=\"%s\" route=\"%s\" status=%d ms=%.3f peer=%s id=%s%s\n",
                 "2026-01-02T03:04:05.678Z", "POST", paths[i == 3], "/v1/search", 200 + i, ms,
                 "127.0.0.1", "abc-1", aborted ? " aborted=1" : "");
    size_t len = (size_t)n >= sizeof line ? sizeof line - 1 : (size_t)n;
    if ((size_t)n >= sizeof line) line[len - 1] = '\n';
    memcpy(want + wn, line, len);
    wn += len;
    http_log_request("2026-01-02T03:04:05.678Z", "POST", paths[i == 3], "/v1/search", 200 + i, ms,
                     "127.0.0.1", "abc-1", aborted);
  }
  http_log_close();
  char got[4096];
  FILE *f = fopen(path, "r");
  size_t gn = f ? fread(got, 1, sizeof got, f) : 0;
  if (f) fclose(f);
  unlink(path);
  CHECKF(gn == wn && memcmp(got, want, wn) == 0, "%zu bytes against %zu", gn, wn);
}

/* The log's timestamp: ISO 8601 UTC with milliseconds, this second's. */
TEST(log_time) {
  char t[40];
  time_t before = time(NULL);
  http_log_time(t, sizeof t);
  time_t after = time(NULL);
  int ok = strlen(t) == 24 && t[4] == '-' && t[10] == 'T' && t[19] == '.' && t[23] == 'Z';
  for (int i = 20; i < 23; i++) ok = ok && t[i] >= '0' && t[i] <= '9';
  CHECKF(ok, "%s", t);
  struct tm tm = {0};
  CHECK(strptime(t, "%Y-%m-%dT%H:%M:%S", &tm) == t + 19);
  time_t at = timegm(&tm);
  CHECKF(at >= before && at <= after, "%s", t);
  char small[22]; /* too short for the milliseconds: cut as snprintf cuts */
  http_log_time(small, sizeof small);
  CHECKF(strlen(small) == 21 && small[19] == '.', "%s", small);
}

int main(void) {
  RUN(config_precedence);
  RUN(routing);
  RUN(query_parameters);
  RUN(log_time);
  RUN(log_fixed3);
  RUN(log_request_line);
  RUN(list_args_and_gzip);
  RUN(auth);
  RUN(cors);
  RUN(ndjson_lines);
  RUN(json_writer);
  RUN(decoders);
  RUN(delete_body);
  RUN(route_table);
  RUN(openapi_matches_routes);
  RUN(dispatch_without_engine);
  return tap_done();
}
