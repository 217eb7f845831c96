/* http_openapi.c - the OpenAPI 3 document served at GET /openapi.json. Its
 * source is server/openapi.json, compiled in by server/embed.py. Keep it in
 * step with http_routes.def (test_http checks every row there is its
 * operation here, with its operationId and key, and the other way round)
 * and with the request decoders. */
#include "http.h"

extern const char http_openapi_doc[];

const char *http_openapi_json(void) { return http_openapi_doc; }
