/* http_chat.c - the chat template of POST /v1/chat/completions: how a list
 * of messages becomes the one prompt the (base, not instruction-tuned)
 * decoder continues, and where its answer stops.
 *
 * A template file (--chat-template FILE) holds `key = "JSON string"` lines;
 * '#' at the start of a line is a comment:
 *   system = "system: {content}\n"     one turn of each role; {content} is
 *   user = "user: {content}\n"         replaced by the message's text
 *   assistant = "assistant: {content}\n"
 *   generation = "assistant:"          appended after the last message
 *   stop = "\nuser:"                   ends the answer (0 to 4 lines)
 * The default template is exactly the lines above plus stop = "\nsystem:". */
#include "http_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CHAT_MAX_STOPS = 4 };

struct http_chat_template {
  char *turn[3]; /* by proto_chat_role */
  char *generation;
  char *stop[CHAT_MAX_STOPS];
  size_t n_stop;
};

static const char *const turn_keys[3] = {"system", "user", "assistant"};

void http_chat_template_free(http_chat_template *t) {
  if (!t) return;
  for (int i = 0; i < 3; i++) free(t->turn[i]);
  free(t->generation);
  for (size_t i = 0; i < t->n_stop; i++) free(t->stop[i]);
  free(t);
}

/* Stores one `key = value` of a template; 0, or -1 with err set. */
static int template_set(http_chat_template *t, const char *key, char *value, char *err,
                        size_t errlen) {
  for (int i = 0; i < 3; i++)
    if (!strcmp(key, turn_keys[i])) {
      if (!strstr(value, "{content}")) {
        snprintf(err, errlen, "%s: must contain {content}", key);
        return -1;
      }
      free(t->turn[i]);
      t->turn[i] = value;
      return 0;
    }
  if (!strcmp(key, "generation")) {
    free(t->generation);
    t->generation = value;
    return 0;
  }
  if (!strcmp(key, "stop")) {
    if (t->n_stop == CHAT_MAX_STOPS || !*value || strlen(value) > PROTO_MAX_STOP_BYTES) {
      snprintf(err, errlen, "stop: at most %d, each 1 to %d bytes", CHAT_MAX_STOPS,
               PROTO_MAX_STOP_BYTES);
      return -1;
    }
    t->stop[t->n_stop++] = value;
    return 0;
  }
  snprintf(err, errlen, "unknown key '%.32s' (system, user, assistant, generation, stop)", key);
  return -1;
}

static char *strip(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
    s[--n] = 0;
  return s;
}

proto_status http_chat_template_load(const char *path, http_chat_template **out, char *err,
                                     size_t errlen) {
  *out = NULL;
  http_chat_template *t = calloc(1, sizeof *t);
  if (!t) {
    snprintf(err, errlen, "out of memory");
    return PROTO_ENOMEM;
  }
  if (!path) { /* the default */
    static const char *const lines[][2] = {{"system", "system: {content}\n"},
                                           {"user", "user: {content}\n"},
                                           {"assistant", "assistant: {content}\n"},
                                           {"generation", "assistant:"},
                                           {"stop", "\nuser:"},
                                           {"stop", "\nsystem:"}};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
      char *v = strdup(lines[i][1]);
      if (!v || template_set(t, lines[i][0], v, err, errlen)) {
        free(v);
        http_chat_template_free(t);
        return PROTO_ENOMEM;
      }
    }
    *out = t;
    return PROTO_OK;
  }
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "chat template %.200s: %s", path, strerror(errno));
    http_chat_template_free(t);
    return PROTO_EINVAL;
  }
  char line[8192], msg[256];
  int lineno = 0, got;
  proto_status st = PROTO_OK;
  while (st == PROTO_OK && (got = http_settings_line(f, line, sizeof line, msg, sizeof msg)) != 0) {
    lineno++;
    if (got < 0) {
      snprintf(err, errlen, "chat template %.200s:%d: %s", path, lineno, msg);
      st = PROTO_EINVAL;
      break;
    }
    char *s = strip(line), *eq = strchr(s, '=');
    if (!*s || *s == '#') continue;
    char *value = NULL;
    size_t vlen = 0;
    if (!eq) {
      snprintf(msg, sizeof msg, "expected `key = \"JSON string\"`");
      st = PROTO_EINVAL;
    } else {
      *eq = 0;
      char *v = strip(eq + 1);
      st = proto_json_string(v, strlen(v), &value, &vlen, msg, sizeof msg);
      if (st == PROTO_OK && strlen(value) != vlen) {
        snprintf(msg, sizeof msg, "NUL bytes are not allowed");
        st = PROTO_EINVAL;
      }
      if (st == PROTO_OK && template_set(t, strip(s), value, msg, sizeof msg)) st = PROTO_EINVAL;
      else if (st == PROTO_OK) value = NULL; /* kept by t */
    }
    free(value);
    if (st != PROTO_OK) snprintf(err, errlen, "chat template %.200s:%d: %s", path, lineno, msg);
  }
  fclose(f);
  for (int i = 0; st == PROTO_OK && i < 3; i++)
    if (!t->turn[i]) {
      snprintf(err, errlen, "chat template %.200s: no `%s = ...` line", path, turn_keys[i]);
      st = PROTO_EINVAL;
    }
  if (st == PROTO_OK && !t->generation) {
    snprintf(err, errlen, "chat template %.200s: no `generation = ...` line", path);
    st = PROTO_EINVAL;
  }
  if (st != PROTO_OK) {
    http_chat_template_free(t);
    return PROTO_EINVAL;
  }
  *out = t;
  return PROTO_OK;
}

proto_status http_chat_render(const http_chat_template *t, const proto_chat_msg *m, size_t n,
                              proto_buf *out) {
  for (size_t i = 0; i < n; i++) {
    const char *tpl = t->turn[m[i].role];
    const char *at = strstr(tpl, "{content}");
    proto_buf_add(out, tpl, (size_t)(at - tpl));
    proto_buf_add(out, m[i].content, m[i].content_len);
    proto_buf_adds(out, at + strlen("{content}"));
  }
  proto_buf_adds(out, t->generation);
  return out->failed ? PROTO_ENOMEM : PROTO_OK;
}

proto_status http_chat_apply(const http_chat_template *t, proto_complete_req *req) {
  proto_buf b;
  proto_buf_init(&b);
  if (http_chat_render(t, req->messages, req->n_messages, &b) != PROTO_OK) {
    proto_buf_free(&b);
    return PROTO_ENOMEM;
  }
  req->prompt_len = b.len;
  req->prompt = b.len ? b.data : calloc(1, 1);
  if (!req->prompt) return PROTO_ENOMEM;
  /* the template's stops after the client's own */
  size_t n = req->n_stop + t->n_stop;
  char **stop = realloc(req->stop, (n ? n : 1) * sizeof *stop);
  if (!stop) return PROTO_ENOMEM;
  req->stop = stop;
  size_t *lens = realloc(req->stop_lens, (n ? n : 1) * sizeof *lens);
  if (!lens) return PROTO_ENOMEM;
  req->stop_lens = lens;
  for (size_t i = 0; i < t->n_stop; i++) {
    char *s = strdup(t->stop[i]);
    if (!s) return PROTO_ENOMEM;
    req->stop[req->n_stop] = s;
    req->stop_lens[req->n_stop++] = strlen(s);
  }
  return PROTO_OK;
}
