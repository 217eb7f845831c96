/* http_config.c - configuration of `retro serve`: one table of options, each
 * settable as a flag (--name VALUE or --name=VALUE), an environment variable
 * (RETRO_NAME) or a line `name = value` of a config file. Precedence: flags >
 * environment > config file > defaults. An environment variable set empty
 * counts as unset; an empty text value elsewhere, or a key a config file
 * sets twice, is an error. It does not open sockets or check that
 * directories exist; srv_http_main does that. */
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

extern char **environ;

typedef enum { OPT_STR, OPT_LONG, OPT_BOOL } opt_type;

typedef struct opt_def {
  const char *name; /* flag and config key */
  const char *env;
  opt_type type;
  size_t offset;
  const char *def;
  long lo, hi;
  const char *help;
} opt_def;

#define O(field) offsetof(http_config, field)
static const opt_def opts[] = {
    {"data", "RETRO_DATA", OPT_STR, O(data), NULL, 0, 0, "data directory (required)"},
    {"encoder", "RETRO_ENCODER", OPT_STR, O(encoder), NULL, 0, 0,
     "encoder model directory (default: recorded in the database, else built-in)"},
    {"decoder", "RETRO_DECODER", OPT_STR, O(decoder), NULL, 0, 0,
     "RETRO decoder directory; \"none\" disables /v1/completions"},
    {"reranker", "RETRO_RERANKER", OPT_STR, O(reranker), NULL, 0, 0,
     "cross-encoder reranker directory (default: the installed one, when there is one); "
     "\"none\" disables reranking"},
    {"index", "RETRO_INDEX", OPT_STR, O(index_factory), NULL, 0, 0,
     "FAISS index_factory string for a new index"},
    {"host", "RETRO_HOST", OPT_STR, O(host), "127.0.0.1", 0, 0,
     "address to bind; a non-loopback address needs --api-key"},
    {"port", "RETRO_PORT", OPT_LONG, O(port), "8080", 0, 65535, "TCP port (0 = any free port)"},
    {"api-key", "RETRO_API_KEY", OPT_STR, O(api_key), NULL, 0, 0, "read-write API key"},
    {"read-key", "RETRO_READ_KEY", OPT_STR, O(read_key), NULL, 0, 0, "read-only API key"},
    {"http-threads", "RETRO_HTTP_THREADS", OPT_LONG, O(http_threads), "2", 1, 256,
     "libmicrohttpd threads (epoll)"},
    {"workers", "RETRO_WORKERS", OPT_LONG, O(workers), "0", 0, 256,
     "threads for slow requests (search by text, embedding, ingest, delete); 0 = 4 per CPU"},
    {"queue", "RETRO_QUEUE", OPT_LONG, O(queue), "64", 0, 100000,
     "slow requests that may wait for a worker; beyond: 429"},
    {"gen-slots", "RETRO_GEN_SLOTS", OPT_LONG, O(gen_slots), "1", 1, 64, "concurrent generations"},
    {"gen-queue", "RETRO_GEN_QUEUE", OPT_LONG, O(gen_queue), "4", 0, 10000,
     "generations that may wait for a slot; beyond: 429"},
    {"threads", "RETRO_THREADS", OPT_LONG, O(threads), "0", 0, 1024,
     "model threads (0 = number of CPUs)"},
    {"max-body", "RETRO_MAX_BODY", OPT_LONG, O(max_body), "16777216", 1024, 1L << 30,
     "largest JSON body, and largest NDJSON line, in bytes (else 413)"},
    {"max-connections", "RETRO_MAX_CONNECTIONS", OPT_LONG, O(max_connections), "1024", 1, 1000000,
     "open connections at most"},
    {"max-per-ip", "RETRO_MAX_PER_IP", OPT_LONG, O(max_per_ip), "256", 0, 1000000,
     "open connections per client address (0 = unlimited)"},
    {"idle-timeout", "RETRO_IDLE_TIMEOUT", OPT_LONG, O(idle_timeout), "60", 1, 86400,
     "seconds before an idle connection is closed"},
    {"header-limit", "RETRO_HEADER_LIMIT", OPT_LONG, O(header_limit), "32768", 4096, 16777216,
     "bytes for the request line and headers (else 414/431)"},
    {"drain-timeout", "RETRO_DRAIN_TIMEOUT", OPT_LONG, O(drain_timeout), "60", 0, 86400,
     "seconds to finish in-flight requests after SIGTERM"},
    {"read-only", "RETRO_READ_ONLY", OPT_BOOL, O(read_only), "0", 0, 1,
     "serve reads only (writes answer 403), also from a read-only file system"},
    {"inline-search-floats", "RETRO_INLINE_SEARCH_FLOATS", OPT_LONG, O(inline_search_floats),
     "1048576", 0, 1L << 40,
     "searches by vector run on the HTTP threads while the index holds at most this many "
     "floats (vectors x dim); beyond, on the workers"},
    {"max-map-mb", "RETRO_MAX_MAP_MB", OPT_LONG, O(max_map_mb), "0", 0, 1L << 30,
     "the LMDB map never grows past this many MiB (0 = no limit; deletes may add 1/16, "
     "so that a full map can be emptied); writes beyond: 507"},
    {"backup-dir", "RETRO_BACKUP_DIR", OPT_STR, O(backup_dir), NULL, 0, 0,
     "POST /v1/admin/backup writes backups into new directories here (default: off)"},
    {"log", "RETRO_LOG", OPT_STR, O(log), NULL, 0, 0,
     "append request log lines to FILE (SIGHUP reopens it); default stderr"},
    {"log-flush-ms", "RETRO_LOG_FLUSH_MS", OPT_LONG, O(log_flush_ms), "100", 0, 60000,
     "request log lines are written within this many ms (0 = each at once)"},
    {"config", "RETRO_CONFIG", OPT_STR, O(config), NULL, 0, 0,
     "read `key = value` lines from FILE"},
    {"search-mode", "RETRO_SEARCH_MODE", OPT_STR, O(search_mode), "hybrid", 0, 0,
     "default mode of searches by text: dense, lexical or hybrid"},
    {"retrieval-mode", "RETRO_RETRIEVAL_MODE", OPT_STR, O(retrieval_mode), "lexical", 0, 0,
     "default mode of the neighbours RETRO retrieves: dense, lexical or hybrid"},
    {"strict-models", "RETRO_STRICT_MODELS", OPT_BOOL, O(strict_models), "0", 0, 1,
     "answer 404 to a \"model\" other than the served encoder/decoder (default: any "
     "name is served by them, as llama.cpp and TEI do)"},
    {"chat-template", "RETRO_CHAT_TEMPLATE", OPT_STR, O(chat_template), NULL, 0, 0,
     "template FILE rendering /v1/chat/completions messages to a prompt (README: "
     "Chat template); default `role: content` lines ending in `assistant:`"},
    {"no-webui", "RETRO_NO_WEBUI", OPT_BOOL, O(no_webui), "0", 0, 1,
     "do not serve the web playground at / (404 there)"},
    {"cors-origins", "RETRO_CORS_ORIGINS", OPT_STR, O(cors_origins), NULL, 0, 0,
     "origins (https://app.example:3000, comma-separated) whose web pages may call the API "
     "from a browser; * for any, which needs an API key (default: none, same origin only)"},
    {"tls-cert", "RETRO_TLS_CERT", OPT_STR, O(tls_cert), NULL, 0, 0,
     "serve HTTPS with this PEM certificate chain, server certificate first (needs "
     "--tls-key; SIGHUP reads both again)"},
    {"tls-key", "RETRO_TLS_KEY", OPT_STR, O(tls_key), NULL, 0, 0,
     "the unencrypted PEM private key of --tls-cert"},
};
#undef O
#define N_OPTS (sizeof opts / sizeof opts[0])

const char *http_config_usage(void) {
  static char text[12288];
  if (text[0]) return text;
  size_t n = 0;
  n += (size_t)snprintf(
      text + n, sizeof text - n,
      "usage: retro serve --data DIR [options]\n\n"
      "Serves the retrieval database in DIR over HTTP (API: GET /openapi.json).\n\n"
      "options (flag / environment variable / config-file key):\n");
  for (size_t i = 0; i < N_OPTS && n < sizeof text; i++) {
    const opt_def *o = &opts[i];
    n += (size_t)snprintf(text + n, sizeof text - n, "  --%-16s %-22s %s%s%s%s\n", o->name, o->env,
                          o->help, o->def ? " [" : "", o->def ? o->def : "", o->def ? "]" : "");
  }
  if (n < sizeof text)
    snprintf(text + n, sizeof text - n,
             "\nPrecedence: flags > environment variables > config file > defaults.\n"
             "Config file: one `key = value` per line (keys as the flags without --,\n"
             "'-' or '_'), each at most once, '#' starts a comment. Booleans: 1/0,\n"
             "true/false, yes/no. An environment variable set empty counts as unset.\n"
             "Auth: with keys set, send `Authorization: Bearer KEY` or `api-key: KEY`;\n"
             "/health, /ready and /openapi.json need no key.\n"
             "Signals: SIGTERM/SIGINT finish in-flight requests (at most --drain-timeout\n"
             "seconds; another SIGTERM/SIGINT meanwhile changes nothing), save the index,\n"
             "exit 0; SIGHUP reopens the log file and reads --tls-cert/--tls-key again.\n");
  return text;
}

static const opt_def *find_opt(const char *name, size_t len) {
  for (size_t i = 0; i < N_OPTS; i++) {
    const char *a = opts[i].name;
    if (strlen(a) != len) continue;
    size_t k = 0;
    for (; k < len; k++) {
      char c = name[k] == '_' ? '-' : (char)tolower((unsigned char)name[k]);
      if (c != a[k]) break;
    }
    if (k == len) return &opts[i];
  }
  return NULL;
}

static proto_status set_opt(http_config *cfg, const opt_def *o, const char *value,
                            const char *origin, char *err, size_t errlen) {
  char *base = (char *)cfg;
  if (o->type == OPT_STR) {
    char **slot = (char **)(void *)(base + o->offset);
    if (!*value) { /* an unset shell variable, most likely: an empty api-key would turn auth off */
      snprintf(err, errlen, "%s: %s: an empty value (leave it out for the default)", origin,
               o->name);
      return PROTO_EINVAL;
    }
    char *dup = strdup(value);
    if (!dup) {
      snprintf(err, errlen, "out of memory");
      return PROTO_ENOMEM;
    }
    free(*slot);
    *slot = dup;
    return PROTO_OK;
  }
  long *slot = (long *)(void *)(base + o->offset);
  if (o->type == OPT_BOOL) {
    if (!strcasecmp(value, "1") || !strcasecmp(value, "true") || !strcasecmp(value, "yes") ||
        !strcasecmp(value, "on") || !*value)
      *slot = 1;
    else if (!strcasecmp(value, "0") || !strcasecmp(value, "false") || !strcasecmp(value, "no") ||
             !strcasecmp(value, "off"))
      *slot = 0;
    else {
      snprintf(err, errlen, "%s: %s: expected a boolean, got '%.64s'", origin, o->name, value);
      return PROTO_EINVAL;
    }
    return PROTO_OK;
  }
  errno = 0;
  char *end = NULL;
  long v = strtol(value, &end, 10);
  if (errno || end == value || *end || v < o->lo || v > o->hi) {
    snprintf(err, errlen, "%s: %s: expected an integer in [%ld, %ld], got '%.64s'", origin, o->name,
             o->lo, o->hi, value);
    return PROTO_EINVAL;
  }
  *slot = v;
  return PROTO_OK;
}

int http_settings_line(FILE *f, char *buf, size_t size, char *why, size_t whylen) {
  size_t n = 0;
  int c = EOF;
  while ((c = getc(f)) != EOF) {
    if (c == 0) {
      snprintf(why, whylen, "a NUL byte (is this a text file?)");
      return -1;
    }
    if (n + 1 >= size) {
      snprintf(why, whylen, "a line longer than %zu bytes", size - 2);
      return -1;
    }
    buf[n++] = (char)c;
    if (c == '\n') break;
  }
  if (n == 0) return 0;
  buf[n] = 0;
  return 1;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
  return s;
}

static proto_status load_file(http_config *cfg, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "config %s: %s", path, strerror(errno));
    return PROTO_EINVAL;
  }
  char line[4096], why[64];
  int lineno = 0, first_line[N_OPTS] = {0}; /* where each key was set, to refuse a second */
  proto_status st = PROTO_OK;
  int got;
  while ((got = http_settings_line(f, line, sizeof line, why, sizeof why)) != 0) {
    lineno++;
    if (got < 0) {
      snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
      st = PROTO_EINVAL;
      break;
    }
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *s = trim(line);
    if (!*s) continue;
    char *eq = strchr(s, '=');
    char origin[1200];
    snprintf(origin, sizeof origin, "%s:%d", path, lineno);
    if (!eq) {
      snprintf(err, errlen, "%s: expected `key = value`", origin);
      st = PROTO_EINVAL;
      break;
    }
    *eq = 0;
    char *key = trim(s), *value = trim(eq + 1);
    size_t vl = strlen(value);
    if (vl >= 2 && (value[0] == '"' || value[0] == '\'') && value[vl - 1] == value[0]) {
      value[vl - 1] = 0;
      value++;
    }
    const opt_def *o = find_opt(key, strlen(key));
    if (!o || !strcmp(o->name, "config")) {
      snprintf(err, errlen, "%s: unknown key '%.64s'", origin, key);
      st = PROTO_EINVAL;
      break;
    }
    if (first_line[o - opts]) {
      snprintf(err, errlen, "%s: %s: given twice (first on line %d)", origin, o->name,
               first_line[o - opts]);
      st = PROTO_EINVAL;
      break;
    }
    first_line[o - opts] = lineno;
    if ((st = set_opt(cfg, o, value, origin, err, errlen)) != PROTO_OK) break;
  }
  fclose(f);
  return st;
}

static const char *env_get(char *const *env, const char *name) {
  size_t n = strlen(name);
  for (; env && *env; env++)
    if (!strncmp(*env, name, n) && (*env)[n] == '=') return *env + n + 1;
  return NULL;
}

proto_status http_config_load(http_config *cfg, int argc, char **argv, char *const *env, int *help,
                              char *err, size_t errlen) {
  proto_status st = PROTO_OK;
  memset(cfg, 0, sizeof *cfg);
  *help = 0;
  if (!env) env = environ;
  for (size_t i = 0; i < N_OPTS; i++)
    if (opts[i].def && (st = set_opt(cfg, &opts[i], opts[i].def, "default", err, errlen)))
      return st;
  /* the config file named by a flag or the environment */
  const char *file = env_get(env, "RETRO_CONFIG");
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--config") && i + 1 < argc) file = argv[i + 1];
    else if (!strncmp(argv[i], "--config=", 9)) file = argv[i] + 9;
  }
  if (file) {
    if ((st = set_opt(cfg, find_opt("config", 6), file, "flag", err, errlen))) return st;
    if ((st = load_file(cfg, file, err, errlen))) return st;
  }
  for (size_t i = 0; i < N_OPTS; i++) {
    const char *v = env_get(env, opts[i].env);
    if (v && *v && (st = set_opt(cfg, &opts[i], v, opts[i].env, err, errlen))) return st;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      *help = 1;
      return PROTO_OK;
    }
    if (strncmp(a, "--", 2) != 0) {
      snprintf(err, errlen, "unexpected argument '%.64s' (see --help)", a);
      return PROTO_EINVAL;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t nl = eq ? (size_t)(eq - name) : strlen(name);
    const opt_def *o = find_opt(name, nl);
    if (!o) {
      snprintf(err, errlen, "unknown option '%.64s' (see --help)", a);
      return PROTO_EINVAL;
    }
    const char *value = eq ? eq + 1 : NULL;
    if (!value && o->type == OPT_BOOL) value = "1";
    if (!value) {
      if (i + 1 >= argc) {
        snprintf(err, errlen, "option --%s needs a value", o->name);
        return PROTO_EINVAL;
      }
      value = argv[++i];
    }
    if ((st = set_opt(cfg, o, value, "flag", err, errlen))) return st;
  }
  return PROTO_OK;
}

void http_config_free(http_config *cfg) {
  if (!cfg) return;
  for (size_t i = 0; i < N_OPTS; i++)
    if (opts[i].type == OPT_STR) {
      char **slot = (char **)(void *)((char *)cfg + opts[i].offset);
      free(*slot);
      *slot = NULL;
    }
}

int http_host_is_loopback(const char *host) {
  if (!host) return 0;
  if (!strcmp(host, "localhost") || !strcmp(host, "::1") || !strcmp(host, "[::1]")) return 1;
  unsigned a, b, c, d;
  char tail;
  if (sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4)
    return a == 127 && b < 256 && c < 256 && d < 256;
  return 0;
}
