/* api.h - the HTTP API's wire layer: the HTTP status of each proto_status,
 * a growable buffer, a streaming JSON writer, the strict decoders that turn
 * request bodies (POST /v1/documents, /v1/search, /v1/embeddings,
 * /v1/completions, /v1/chat/completions, /tokenize, /detokenize, PATCH
 * /v1/documents/{id}) into plain C structs, the metadata filter and the
 * metadata merge patch. Only server/ links it; storage/ and index/ include
 * neither it nor jansson.
 *
 * Decoders reject duplicate keys, unknown fields, wrong types, missing
 * fields and out-of-range values; on failure they return the status and
 * write a message naming the field ("k: must be an integer in [1, 1000]")
 * into err (errlen bytes). The names keep the proto_ prefix they had when
 * this layer lived in proto/. */
#ifndef RETRO_API_H
#define RETRO_API_H

#include "proto.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* The HTTP status of a response carrying st (400, 404, 422, 503...). */
int api_http_status(proto_status st);

/* A growable byte buffer. On allocation failure `failed` is set and further
 * appends are ignored (check it once at the end). */
typedef struct proto_buf {
  char *data; /* NUL-terminated when len > 0 */
  size_t len, cap;
  int failed;
} proto_buf;

void proto_buf_init(proto_buf *b);
void proto_buf_free(proto_buf *b); /* accepts zeroed; leaves b empty */
void proto_buf_add(proto_buf *b, const void *p, size_t n);
void proto_buf_adds(proto_buf *b, const char *s);
PROTO_PRINTF(2, 3)
void proto_buf_addf(proto_buf *b, const char *fmt, ...);
/* Appends s[0..len) with every ill-formed UTF-8 sequence replaced by U+FFFD
 * (one per maximal invalid subpart, as WHATWG/Unicode recommend). */
void proto_buf_add_utf8_lossy(proto_buf *b, const char *s, size_t len);

/* A JSON writer appending to a proto_buf. Commas are inserted automatically;
 * up to 63 levels of nesting. Strings are written as valid UTF-8 (lossy). */
typedef struct proto_jw {
  proto_buf *b;
  unsigned depth;
  uint64_t need_comma; /* bit d: the container at depth d has an element */
  int after_key;
} proto_jw;

void proto_jw_init(proto_jw *w, proto_buf *b);
void proto_jw_obj(proto_jw *w);
void proto_jw_obj_end(proto_jw *w);
void proto_jw_arr(proto_jw *w);
void proto_jw_arr_end(proto_jw *w);
void proto_jw_key(proto_jw *w, const char *key);
void proto_jw_str(proto_jw *w, const char *s, size_t len);
void proto_jw_cstr(proto_jw *w, const char *s); /* NULL writes null */
void proto_jw_int(proto_jw *w, int64_t v);
void proto_jw_uint(proto_jw *w, uint64_t v);
void proto_jw_num(proto_jw *w, double v);  /* NaN/inf -> null */
void proto_jw_float(proto_jw *w, float v); /* proto_float_text; NaN, inf -> null */
/* A finite v as JSON text in printf's %g form with 8 significant digits when
 * they read back to v (through a double, as JSON readers do), else 9 (always
 * enough); out holds 32 bytes. Returns the length. */
size_t proto_float_text(float v, char *out);
void proto_jw_bool(proto_jw *w, int v);
void proto_jw_null(proto_jw *w);
/* A string value: the standard base64 (RFC 4648, padded) of n bytes. */
void proto_jw_base64(proto_jw *w, const void *data, size_t n);
/* Writes already-encoded JSON text as one value (trusted input only). */
void proto_jw_raw(proto_jw *w, const char *json, size_t len);

/* {"error":{"code":"EINVAL","message":msg}} into b. */
void proto_json_error(proto_buf *b, proto_status st, const char *msg);

/* Checks that text is one JSON value (any type) with no duplicate keys and
 * valid UTF-8; used for metadata passed through as text. */
proto_status proto_json_validate(const char *text, size_t len, char *err, size_t errlen);

/* One document to upsert (POST /v1/documents). Strings are malloc'd. */
typedef struct proto_doc {
  char *id;   /* 1..PROTO_MAX_ID_BYTES bytes, NUL-terminated */
  char *text; /* NUL-terminated; text_len bytes (may hold NUL) */
  size_t text_len;
  char *metadata_json; /* compact JSON object text, or NULL when absent */
} proto_doc;

void proto_doc_free(proto_doc *d); /* frees the members; accepts zeroed */
/* One NDJSON line: {"id","text","metadata"?}. where names the item in
 * messages ("line 3"); NULL for none. */
proto_status proto_doc_parse(const char *json, size_t len, const char *where, proto_doc *out,
                             char *err, size_t errlen);
/* {"documents":[{...}, ...]}: *docs malloc'd array of *n (free each with
 * proto_doc_free, then free the array). max_docs bounds the count. */
proto_status proto_docs_parse(const char *json, size_t len, size_t max_docs, proto_doc **docs,
                              size_t *n, char *err, size_t errlen);

enum {
  PROTO_MAX_QUERIES = 256,     /* "queries" / embeddings "input" array length */
  PROTO_MAX_EXCLUDE = 1024,    /* exclude_docs (and include_docs) length */
  PROTO_MAX_DELETE = 100000,   /* ids of one POST /v1/documents/delete */
  PROTO_MAX_GET = 1000,        /* ids of one POST /v1/documents/get */
  PROTO_MAX_STOP = 4,          /* stop sequences */
  PROTO_MAX_STOP_BYTES = 256,  /* bytes per stop sequence */
  PROTO_MAX_GEN_TOKENS = 4096, /* max_tokens */
  PROTO_MAX_LOGPROBS = 5,      /* logprobs alternatives */
};

/* A metadata filter given on its own (GET /v1/documents?filter=): the
 * grammar of a search's "filter" (api/filter.c: values, lists of values,
 * operators, $and and $or); *out its compact JSON, NULL for {}. */
proto_status proto_filter_parse(const char *json, size_t len, char **out, char *err, size_t errlen);

/* A metadata filter ready to test documents with, loaded from its JSON text
 * (checked again, so a filter from anywhere is held to the grammar). */
typedef struct proto_filter proto_filter;
proto_status proto_filter_load(const char *json, proto_filter **out, char *err, size_t errlen);
void proto_filter_free(proto_filter *f);          /* accepts NULL */
int proto_filter_is_empty(const proto_filter *f); /* NULL or {} */
/* 1 when a document with this metadata (JSON object text; NULL or "" for
 * none) passes the filter. */
int proto_filter_passes(const proto_filter *f, const char *metadata_json);

/* PATCH /v1/documents/{id}: {"metadata": {...}}, a JSON Merge Patch (RFC
 * 7396) of the document's metadata; *metadata_patch its compact JSON. */
proto_status proto_patch_parse(const char *json, size_t len, char **metadata_patch, char *err,
                               size_t errlen);
/* The metadata (JSON object text; NULL or "" for none) with the patch (a
 * JSON object's text) merged in as RFC 7396 says; *out compact JSON. */
proto_status proto_metadata_merge(const char *metadata_json, const char *patch_json, char **out,
                                  char *err, size_t errlen);

/* POST /v1/documents/delete: {"ids": [...]}, 1..PROTO_MAX_DELETE ids, each
 * 1..PROTO_MAX_ID_BYTES bytes, none given twice; or {"filter": {...}}, a
 * search's metadata filter with at least one key. */
typedef struct proto_delete_req {
  char **ids;
  size_t n;
  char *filter_json; /* compact JSON, or NULL when ids are given */
} proto_delete_req;
proto_status proto_delete_parse(const char *json, size_t len, proto_delete_req *out, char *err,
                                size_t errlen);
void proto_delete_free(proto_delete_req *r); /* accepts zeroed */

/* POST /v1/documents/get: {"ids": [...]}, 1..PROTO_MAX_GET ids, as a
 * delete's are (each 1..PROTO_MAX_ID_BYTES bytes, none given twice), and
 * "with_text" (default true). */
typedef struct proto_get_req {
  char **ids;
  size_t n;
  int with_text;
} proto_get_req;
proto_status proto_get_parse(const char *json, size_t len, proto_get_req *out, char *err,
                             size_t errlen);
void proto_get_free(proto_get_req *r); /* accepts zeroed */

/* POST /v1/documents/update: the documents, as a delete names them ("ids"
 * or "filter"), and "metadata", the merge patch of each one's metadata. */
typedef struct proto_update_req {
  proto_delete_req which;
  char *metadata_patch; /* compact JSON object */
} proto_update_req;
proto_status proto_update_parse(const char *json, size_t len, proto_update_req *out, char *err,
                                size_t errlen);
void proto_update_free(proto_update_req *r); /* accepts zeroed */

/* POST /v1/search. Exactly one of query, queries, vector. */
typedef struct proto_search_req {
  char **queries; /* n_queries texts (NUL-terminated, lens in query_lens) */
  size_t *query_lens;
  size_t n_queries;
  int batched;   /* 1 when "queries" (response has one list per query) */
  float *vector; /* "vector": dim floats, or NULL */
  size_t dim;
  uint64_t like_chunk; /* "chunk_id": search by that chunk's stored vector; 0 absent */
  int k;               /* default 10, [1, PROTO_MAX_K] */
  char **exclude_docs; /* external document ids */
  size_t n_exclude;
  char **include_docs; /* "include_docs": only these documents' chunks; at
                          least one id when given */
  size_t n_include;
  int nprobe;        /* 0 = index default */
  int ef_search;     /* 0 = index default */
  int with_text;     /* default 1 */
  int with_vectors;  /* "with_vectors": each hit's stored vector; default 0 */
  char *filter_json; /* "filter", checked and written compactly; NULL when absent */
  int mode;          /* "mode": 0 absent, 1 "dense", 2 "lexical", 3 "hybrid" */
  double alpha;      /* "alpha": hybrid weight of the dense list, (0, 1]; 0 absent */
  int group_by_doc;  /* "group_by": "document" */
  int group_size;    /* "group_size": chunks per document, [1, 100], default 1 */
  int expand;        /* "expand": chunks before and after each hit, [0, 16] */
  int rerank;        /* "rerank": 0 false/absent, -1 true (the server's
                        default count), else candidates to rerank [1, PROTO_MAX_RERANK] */
} proto_search_req;
proto_status proto_search_parse(const char *json, size_t len, proto_search_req *out, char *err,
                                size_t errlen);
void proto_search_free(proto_search_req *r); /* accepts zeroed */

/* POST /v1/rerank (Cohere's and Jina's shape). */
typedef struct proto_rerank_req {
  char *query; /* non-blank */
  size_t query_len;
  char **documents; /* n texts, 1..PROTO_MAX_RERANK_DOCS */
  size_t *lens;
  size_t n;
  long top_n;           /* results kept, best first; 0 = all */
  int return_documents; /* each result repeats its text */
  char *model;          /* NULL when absent */
} proto_rerank_req;
enum { PROTO_MAX_RERANK_DOCS = 1000 };
proto_status proto_rerank_parse(const char *json, size_t len, proto_rerank_req *out, char *err,
                                size_t errlen);
void proto_rerank_free(proto_rerank_req *r); /* accepts zeroed */

/* POST /v1/embeddings (OpenAI shape). */
typedef struct proto_embed_req {
  char **inputs;
  size_t *lens;
  size_t n;
  char *model;     /* NULL when absent */
  int base64;      /* encoding_format "base64": each embedding as the base64
                          of its little-endian float32 bytes (what OpenAI's
                          clients ask for by default) */
  long dimensions; /* 0 when absent; the server accepts only its own */
  int truncate;    /* "truncate" (TEI's option): cut inputs longer than the
                          encoder's context; default false (422 instead) */
  int as_query;    /* "input_type": "query" embeds each input as a search by
                          text embeds its text (behind the encoder's query
                          prefix, if it has one); "document" (the default) as
                          the stored chunks are embedded */
} proto_embed_req;
proto_status proto_embed_parse(const char *json, size_t len, proto_embed_req *out, char *err,
                               size_t errlen);
void proto_embed_free(proto_embed_req *r);

typedef enum proto_chat_role {
  PROTO_ROLE_SYSTEM = 0, /* "system" and "developer" */
  PROTO_ROLE_USER = 1,
  PROTO_ROLE_ASSISTANT = 2,
} proto_chat_role;

/* One chat message: content is a string, or text parts joined. */
typedef struct proto_chat_msg {
  proto_chat_role role;
  char *content; /* NUL-terminated, content_len bytes */
  size_t content_len;
} proto_chat_msg;

/* POST /v1/completions (OpenAI text_completion shape + RETRO fields), and
 * POST /v1/chat/completions (chat 1: messages instead of prompt; the server
 * renders them into prompt with its chat template). */
typedef struct proto_complete_req {
  char *prompt; /* NUL-terminated, prompt_len bytes */
  size_t prompt_len;
  int max_tokens;     /* default 16, [1, PROTO_MAX_GEN_TOKENS] */
  double temperature; /* default 1, [0, 100]; 0 = greedy */
  double top_p;       /* default 1, (0, 1] */
  int top_k;          /* default 0 = off, [0, 1000000] */
  uint64_t seed;
  int has_seed;
  char **stop; /* n_stop strings, 1..PROTO_MAX_STOP_BYTES bytes each */
  size_t *stop_lens;
  size_t n_stop;
  int logprobs; /* -1 = none, else [0, PROTO_MAX_LOGPROBS] */
  int echo;     /* completions: the prompt's tokens come back first, with
                          their logprobs (prompt scoring; max_tokens may be 0) */
  int stream;
  int retrieval; /* default 1 */
  int k;         /* neighbours per chunk; 0 = model default, [0, 64] */
  char **exclude_docs;
  size_t n_exclude;
  char **include_docs; /* neighbours only from these documents (as in search) */
  size_t n_include;
  char *filter_json;  /* "filter" of the neighbours (as in search), or NULL */
  int retrieval_mode; /* "retrieval_mode": 0 absent, 1 dense, 2 lexical, 3 hybrid */
  char *model;        /* NULL when absent */
  int chat;           /* 1: a chat completion */
  proto_chat_msg *messages;
  size_t n_messages;
} proto_complete_req;
proto_status proto_complete_parse(const char *json, size_t len, proto_complete_req *out, char *err,
                                  size_t errlen);
/* Chat: messages (roles system/developer/user/assistant, content a string or
 * text parts; 1 or more), max_tokens or max_completion_tokens (default
 * PROTO_CHAT_MAX_TOKENS), the sampling and retrieval options of completions;
 * tools, functions, logprobs, response_format other than text, non-text
 * content parts and n > 1 are refused (422) naming them. prompt is left NULL. */
enum { PROTO_CHAT_MAX_TOKENS = 256 };
proto_status proto_chat_parse(const char *json, size_t len, proto_complete_req *out, char *err,
                              size_t errlen);
/* POST /tokenize {"content", "with_pieces"?, "add_special"? (false only)} and
 * POST /detokenize {"tokens": [ids]} (llama.cpp's shapes), each with an
 * optional "model" naming the tokenizer's model (decoder or encoder). */
typedef struct proto_tok_req {
  char *content; /* tokenize: NUL-terminated, content_len bytes */
  size_t content_len;
  int with_pieces; /* tokenize: [{"id","piece"}] instead of ids */
  int32_t *tokens; /* detokenize: n_tokens ids (>= 0) */
  size_t n_tokens;
  char *model; /* NULL when absent */
} proto_tok_req;
proto_status proto_tok_parse(const char *json, size_t len, int detokenize, proto_tok_req *out,
                             char *err, size_t errlen);
void proto_tok_free(proto_tok_req *r); /* accepts zeroed */

/* Decodes text (one JSON string value, quotes included) into *out (malloc'd,
 * NUL-terminated, *outlen bytes). For config files that hold escaped text. */
proto_status proto_json_string(const char *text, size_t len, char **out, size_t *outlen, char *err,
                               size_t errlen);
void proto_complete_free(proto_complete_req *r);

#endif
