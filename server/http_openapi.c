/* http_openapi.c - the OpenAPI 3 document served at GET /openapi.json. Its
 * source is server/openapi.json, compiled in by server/embed.py. Keep it in
 * step with http_route.c (tests/http/e2e_http.py checks that every route
 * there exists here and the other way round) and with proto/json.c. */
#include "http.h"

extern const char http_openapi_doc[];

const char *http_openapi_json(void) { return http_openapi_doc; }
