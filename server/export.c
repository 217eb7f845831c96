/* export.c - `retro export`: every document of a database as one JSON line
 * {"id", "text", "metadata"}, what `retro index` and POST /v1/documents
 * read back. The way to move a corpus to other models (a new encoder or
 * decoder makes a database of its own, from its texts), or out of retrod.
 * It reads one snapshot, so a server may go on writing meanwhile. */
#include "engine_priv.h"
#include "views.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct export_ctx {
  FILE *out;
  proto_filter *filter; /* NULL: every document */
  srv_export_stats *stats;
  proto_buf line;
} export_ctx;

static proto_status export_one(void *ctx, const store_doc_whole *w) {
  export_ctx *c = ctx;
  if (!proto_filter_passes(c->filter, w->doc.metadata_json)) return PROTO_OK;
  proto_buf *b = &c->line;
  b->len = 0;
  proto_jw jw;
  proto_jw_init(&jw, b);
  proto_jw_obj(&jw);
  proto_jw_key(&jw, "id");
  proto_jw_cstr(&jw, w->doc.id);
  proto_jw_key(&jw, "text");
  proto_jw_str(&jw, w->text, w->text_len);
  proto_jw_key(&jw, "metadata");
  view_meta(&jw, w->doc.metadata_json);
  proto_jw_obj_end(&jw);
  proto_buf_add(b, "\n", 1);
  if (b->failed) return srv__fail(PROTO_ENOMEM, "out of memory");
  if (fwrite(b->data, 1, b->len, c->out) != b->len)
    return srv__fail(PROTO_EIO, "writing: %s", strerror(errno));
  c->stats->docs++;
  c->stats->bytes += w->text_len;
  if (memchr(w->text, 0, w->text_len) && c->stats->with_nul++ == 0)
    snprintf(c->stats->first_with_nul, sizeof c->stats->first_with_nul, "%s", w->doc.id);
  return PROTO_OK;
}

proto_status srv_export(const char *dir, const char *filter_json, FILE *out,
                        srv_export_stats *stats) {
  memset(stats, 0, sizeof *stats);
  char msg[256];
  export_ctx c = {.out = out, .stats = stats};
  if (filter_json && proto_filter_load(filter_json, &c.filter, msg, sizeof msg) != PROTO_OK)
    return srv__fail(PROTO_EINVAL, "%s", msg);
  store *st = NULL;
  store_options so = {.read_only_fallback = 1}; /* an export only reads */
  proto_status s = store_open(dir, &so, &st);
  if (s != PROTO_OK) {
    s = srv__fail(s, "%s", store_last_error());
  } else if ((s = store_docs_scan(st, 0, 1, export_one, &c)) != PROTO_OK && s != PROTO_EIO &&
             s != PROTO_ENOMEM) {
    s = srv__fail(s, "reading the documents: %s", store_last_error());
  }
  if (s == PROTO_OK && fflush(out) != 0) s = srv__fail(PROTO_EIO, "writing: %s", strerror(errno));
  store_close(st);
  proto_filter_free(c.filter);
  proto_buf_free(&c.line);
  return s;
}
