/* http_status.c - the HTTP status of a response that carries a proto_status.
 * A switch without default: a status added to proto.h without a line here
 * is a build error (-Wswitch). */
#include "api.h"

int api_http_status(proto_status st) {
  switch (st) {
    case PROTO_OK:
      return 200;
    case PROTO_EINVAL:
    case PROTO_EJSON:
    case PROTO_EUTF8:
    case PROTO_EUNKNOWN_FIELD:
    case PROTO_ETYPE:
    case PROTO_EMISSING:
      return 400;
    case PROTO_EUNAUTH:
      return 401;
    case PROTO_EFORBIDDEN:
      return 403;
    case PROTO_ENOTFOUND:
      return 404;
    case PROTO_EMETHOD:
      return 405;
    case PROTO_EMISMATCH:
      return 409;
    case PROTO_ETOOBIG:
      return 413;
    case PROTO_EMEDIA:
      return 415;
    case PROTO_EDIM:
    case PROTO_ERANGE:
      return 422;
    case PROTO_EBUSY:
      return 429;
    case PROTO_ECANCELLED: /* nginx's "client closed request" */
      return 499;
    case PROTO_ENOMEM:
    case PROTO_EIO:
    case PROTO_ECORRUPT:
    case PROTO_ESTORE:
    case PROTO_EINDEX:
    case PROTO_EMODEL:
    case PROTO_EINTERNAL:
      return 500;
    case PROTO_EUNAVAIL:
      return 503;
    case PROTO_ENOSPACE:
      return 507;
    case PROTO_STATUS_COUNT:
      break;
  }
  return 500;
}
