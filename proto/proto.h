/* proto.h - the shared vocabulary of retrod: status codes and their messages,
 * limits, UTF-8 validation, the clock, hashes. Every module links it; it
 * knows nothing of HTTP, JSON, LMDB, FAISS or the models, and those modules
 * map their own errors onto these codes. The HTTP API's JSON layer (request
 * decoders, the response writer, HTTP status codes) is api/, linked by
 * server/ only; model/ reads its own JSON file formats (configs, tokenizers,
 * safetensors headers) with jansson directly.
 *
 * Status convention: every function that can fail returns proto_status
 * (PROTO_OK == 0) and writes results through out-parameters. The failing
 * function also writes a one-line detail into the calling thread's error
 * text (proto_err_set below), which every module's xxx_last_error() reads.
 */
#ifndef RETRO_PROTO_H
#define RETRO_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* One table generates the enum, the names and the messages.
 * X(NAME, "message"). The HTTP status of each is api/'s (api_http_status). */
#define PROTO_STATUS_MAP(X)                       \
  X(OK, "ok")                                     \
  X(EINVAL, "invalid argument")                   \
  X(EJSON, "malformed JSON")                      \
  X(EUTF8, "invalid UTF-8")                       \
  X(EUNKNOWN_FIELD, "unknown field")              \
  X(ETYPE, "wrong type")                          \
  X(EMISSING, "missing field")                    \
  X(EDIM, "wrong vector dimension")               \
  X(ERANGE, "value out of range")                 \
  X(EUNAUTH, "missing or wrong API key")          \
  X(EFORBIDDEN, "read-only key cannot write")     \
  X(ENOTFOUND, "not found")                       \
  X(EMETHOD, "method not allowed")                \
  X(ETOOBIG, "request body too large")            \
  X(EMEDIA, "unsupported media type")             \
  X(EBUSY, "too many requests")                   \
  X(ENOMEM, "out of memory")                      \
  X(EIO, "I/O error")                             \
  X(ECORRUPT, "corrupt data")                     \
  X(ESTORE, "storage error")                      \
  X(EINDEX, "index error")                        \
  X(EMODEL, "model error")                        \
  X(EMISMATCH, "database and model do not match") \
  X(EUNAVAIL, "service unavailable")              \
  X(ECANCELLED, "cancelled")                      \
  X(EINTERNAL, "internal error")                  \
  X(ENOSPACE, "insufficient storage")

typedef enum proto_status {
#define PROTO_STATUS_ENUM(name, msg) PROTO_##name,
  PROTO_STATUS_MAP(PROTO_STATUS_ENUM)
#undef PROTO_STATUS_ENUM
      PROTO_STATUS_COUNT
} proto_status;

/* "ok", "invalid argument", ... Never NULL; unknown codes give "unknown status". */
const char *proto_strerror(proto_status st);
/* "OK", "EINVAL", ... the enum name without its prefix (for logs and JSON "code"). */
const char *proto_status_name(proto_status st);

/* Limits shared by the CLI, the server and the models. */
enum {
  PROTO_CHUNK_TOKENS = 64,      /* m: decoder tokens per chunk */
  PROTO_NEIGHBOUR_TOKENS = 128, /* r: [N, F] tokens per retrieved neighbour */
  PROTO_MAX_K = 1000,           /* most neighbours one search may ask for */
  PROTO_MAX_RERANK = 200,       /* most candidates one search may rerank */
  PROTO_MAX_ID_BYTES = 512,     /* longest external document id */
  PROTO_MAX_DIM = 8192,         /* largest embedding dimension accepted */
  PROTO_MAX_FILTER_KEYS = 16,   /* metadata keys one search filter may name */
  PROTO_MAX_FILTER_VALUES = 64, /* values one filter key may list */
};

/* Marks a printf-like function (format argument fmt, its values from
 * argument first on; 0: a va_list) for the compiler's format checks. */
#if defined(__GNUC__)
#define PROTO_PRINTF(fmt, first) __attribute__((format(printf, fmt, first)))
#else
#define PROTO_PRINTF(fmt, first)
#endif

/* The calling thread's error detail (error.c), one buffer shared by every
 * module: a function that fails writes one line saying why, and each
 * module's xxx_last_error() reads it. Read it before the next call that can
 * fail; arguments may include proto_err_get() itself (a wrapper adding
 * context). Longer messages are cut at PROTO_ERR_MAX - 1 bytes. */
#include <stdarg.h>
enum { PROTO_ERR_MAX = 1024 };
PROTO_PRINTF(1, 2)
void proto_err_set(const char *fmt, ...);
PROTO_PRINTF(1, 0)
void proto_err_vset(const char *fmt, va_list ap);
/* proto_err_set, then returns st: `return proto_fail(PROTO_EINVAL, ...)`. */
PROTO_PRINTF(2, 3)
proto_status proto_fail(proto_status st, const char *fmt, ...);
/* The detail text; "" when none was set. Never NULL. */
const char *proto_err_get(void);
void proto_err_clear(void);

/* 1 if s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int proto_utf8_valid(const char *s, size_t len);
/* Decodes the UTF-8 sequence that starts s[0..len). Returns its length
 * (1..4), with the code point in *cp (cp may be NULL); 0 when s[0..len) is
 * the start of a well-formed sequence cut short (more bytes could complete
 * it; also for len 0); or -k when ill-formed, k (1..3) being the bytes of
 * its maximal ill-formed subpart, which one U+FFFD replaces (Unicode's
 * recommended practice). */
int proto_utf8_decode(const char *s, size_t len, uint32_t *cp);

/* 1 if s[0..len) is empty or only ASCII white space (space, \t \n \v \f \r). */
int proto_blank(const char *s, size_t len);

/* Monotonic clock in seconds (for timings and rates). */
double proto_now(void);

/* FNV-1a 64 (hash.c) of n bytes, continuing from h (PROTO_FNV_INIT to
 * start): fast, not for anything an adversary controls. */
#define PROTO_FNV_INIT 0xcbf29ce484222325ULL
uint64_t proto_fnv1a64(uint64_t h, const void *p, size_t n);

/* SHA-256 (sha256.c): content hashes, fingerprints, backup checksums. */
typedef struct proto_sha256 {
  uint32_t h[8];
  uint64_t len;
  unsigned char buf[64];
  size_t nbuf;
} proto_sha256;
void proto_sha256_init(proto_sha256 *s);
void proto_sha256_update(proto_sha256 *s, const void *data, size_t n);
void proto_sha256_final(proto_sha256 *s, unsigned char out[32]);
void proto_sha256_final_hex(proto_sha256 *s, char out[65]);
/* n bytes as 2n lowercase hex digits and a NUL. */
void proto_hex(const unsigned char *p, size_t n, char *out);

#endif
