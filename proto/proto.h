/* proto.h - the shared vocabulary of retrod: status codes and their messages,
 * limits, and small helpers every module uses. It knows nothing of HTTP, LMDB,
 * FAISS or the models; those modules map their own errors onto these codes.
 *
 * Status convention: every function that can fail returns proto_status
 * (PROTO_OK == 0) and writes results through out-parameters. A context object
 * (store, index, model) keeps a short detail message for the last failure.
 */
#ifndef RETRO_PROTO_H
#define RETRO_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* One table generates the enum, the names and the messages.
 * X(NAME, http_status, "message") */
#define PROTO_STATUS_MAP(X)                                                   \
  X(OK,             200, "ok")                                                \
  X(EINVAL,         400, "invalid argument")                                  \
  X(EJSON,          400, "malformed JSON")                                    \
  X(EUTF8,          400, "invalid UTF-8")                                     \
  X(EUNKNOWN_FIELD, 400, "unknown field")                                     \
  X(ETYPE,          400, "wrong type")                                        \
  X(EMISSING,       400, "missing field")                                     \
  X(EDIM,           422, "wrong vector dimension")                            \
  X(ERANGE,         422, "value out of range")                                \
  X(EUNAUTH,        401, "missing or wrong API key")                          \
  X(EFORBIDDEN,     403, "read-only key cannot write")                        \
  X(ENOTFOUND,      404, "not found")                                         \
  X(EMETHOD,        405, "method not allowed")                                \
  X(ETOOBIG,        413, "request body too large")                            \
  X(EMEDIA,         415, "unsupported media type")                            \
  X(EBUSY,          429, "too many requests")                                 \
  X(ENOMEM,         500, "out of memory")                                     \
  X(EIO,            500, "I/O error")                                         \
  X(ECORRUPT,       500, "corrupt data")                                      \
  X(ESTORE,         500, "storage error")                                     \
  X(EINDEX,         500, "index error")                                       \
  X(EMODEL,         500, "model error")                                       \
  X(EMISMATCH,      409, "database and model do not match")                   \
  X(EUNAVAIL,       503, "service unavailable")                               \
  X(ECANCELLED,     499, "cancelled")                                         \
  X(EINTERNAL,      500, "internal error")

typedef enum proto_status {
#define PROTO_STATUS_ENUM(name, http, msg) PROTO_##name,
  PROTO_STATUS_MAP(PROTO_STATUS_ENUM)
#undef PROTO_STATUS_ENUM
  PROTO_STATUS_COUNT
} proto_status;

/* "ok", "invalid argument", ... Never NULL; unknown codes give "unknown status". */
const char *proto_strerror(proto_status st);
/* "OK", "EINVAL", ... the enum name without its prefix (for logs and JSON "code"). */
const char *proto_status_name(proto_status st);
/* The HTTP status that a response carrying this code should use. */
int proto_http_status(proto_status st);

/* Limits shared by the CLI, the server and the models. */
enum {
  PROTO_CHUNK_TOKENS = 64,            /* m: decoder tokens per chunk */
  PROTO_NEIGHBOUR_TOKENS = 128,       /* r: [N, F] tokens per retrieved neighbour */
  PROTO_MAX_K = 1000,                 /* most neighbours one search may ask for */
  PROTO_MAX_ID_BYTES = 512,           /* longest external document id */
  PROTO_MAX_DIM = 8192,               /* largest embedding dimension accepted */
};

/* 1 if s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int proto_utf8_valid(const char *s, size_t len);

/* Monotonic clock in seconds (for timings and rates). */
double proto_now(void);

#endif
