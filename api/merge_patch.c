/* merge_patch.c - JSON Merge Patch (RFC 7396) of a document's metadata, for
 * PATCH /v1/documents/{id} (its body is decoded in json.c): a key given null
 * is removed, an object merges into an object key by key, any other value
 * replaces. Key order is kept (new keys go last), and the result is written
 * compactly, as ingest writes metadata. */
#include "json_priv.h"

#include <stdio.h>
#include <stdlib.h>

/* RFC 7396's MergePatch(target, patch) for an object patch, into target. */
static int merge(json_t *target, json_t *patch) {
  const char *key;
  json_t *v;
  json_object_foreach(patch, key, v) {
    json_t *old = json_object_get(target, key);
    if (json_is_null(v)) {
      json_object_del(target, key);
    } else if (json_is_object(v)) {
      json_t *into = json_is_object(old) ? json_incref(old) : json_object();
      if (!into || merge(into, v) != 0 || json_object_set_new(target, key, into) != 0) return -1;
    } else if (json_object_set(target, key, v) != 0) {
      return -1;
    }
  }
  return 0;
}

proto_status proto_metadata_merge(const char *metadata_json, const char *patch_json, char **out,
                                  char *err, size_t errlen) {
  *out = NULL;
  json_t *target = metadata_json && *metadata_json ? json_loads(metadata_json, 0, NULL) : NULL;
  if (!json_is_object(target)) { /* none, or not an object: the patch starts afresh */
    json_decref(target);
    target = json_object();
  }
  json_t *patch = json_loads(patch_json, JSON_REJECT_DUPLICATES, NULL);
  proto_status st = PROTO_OK;
  if (!json_is_object(patch)) st = PROTO_ETYPE;
  else if (!target || merge(target, patch) != 0) st = PROTO_ENOMEM;
  else if (!(*out = json_dumps(target, JSON_COMPACT | JSON_PRESERVE_ORDER))) st = PROTO_ENOMEM;
  if (st != PROTO_OK)
    snprintf(err, errlen, "%s",
             st == PROTO_ETYPE ? "metadata: must be an object" : "out of memory");
  json_decref(patch);
  json_decref(target);
  return st;
}
