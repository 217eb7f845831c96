/* corpus.c - the CLI's corpus reader (corpus.h): the file walk, whole files
 * and JSON Lines, fed document by document to a callback. */
#include "corpus.h"

#include "api.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

static int has_suffix(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

static int is_text_file(const char *name) {
  return has_suffix(name, ".txt") || has_suffix(name, ".md") || has_suffix(name, ".rst");
}

/* Reads a whole file into *buf (malloc'd; *len bytes). 0, or -1 with errno
 * (EFBIG: more than CORPUS_MAX_DOC_BYTES). */
static int corpus_read_file(const char *path, char **buf, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  size_t cap = 65536, n = 0;
  char *b = malloc(cap);
  while (b) {
    size_t got = fread(b + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
    if (n > CORPUS_MAX_DOC_BYTES) {
      free(b);
      fclose(f);
      errno = EFBIG;
      return -1;
    }
    if (n == cap) { /* grown to at most one byte past the limit */
      size_t nc = cap * 2 > CORPUS_MAX_DOC_BYTES + 1 ? CORPUS_MAX_DOC_BYTES + 1 : cap * 2;
      char *nb = realloc(b, nc);
      if (!nb) {
        free(b);
        b = NULL;
        break;
      }
      b = nb;
      cap = nc;
    }
  }
  int err = ferror(f);
  fclose(f);
  if (!b || err) {
    free(b);
    return -1;
  }
  *buf = b;
  *len = n;
  return 0;
}

/* Reads one line of f, '\n' included, into *line (grown as getline grows
 * it), or its first CORPUS_MAX_DOC_BYTES when it is longer: then *too_long
 * is set and the rest is left unread. Its length, or -1 at the end of f. */
static ssize_t corpus_read_line(FILE *f, char **line, size_t *cap, int *too_long) {
  size_t n = 0;
  int c = EOF, any = 0;
  *too_long = 0;
  flockfile(f);
  while ((c = getc_unlocked(f)) != EOF) {
    any = 1;
    if (n + 2 > *cap) {
      size_t nc = *cap ? *cap * 2 : 4096;
      char *nl = realloc(*line, nc);
      if (!nl) { /* as getline: -1 with errno ENOMEM */
        funlockfile(f);
        return -1;
      }
      *line = nl;
      *cap = nc;
    }
    if (n == CORPUS_MAX_DOC_BYTES) { /* stop here: an endless line must not hold us */
      *too_long = 1;
      break;
    }
    (*line)[n++] = (char)c;
    if (c == '\n') break;
  }
  funlockfile(f);
  if (!any) return -1;
  (*line)[n] = 0;
  return (ssize_t)n;
}

/* strerror, with EFBIG in the words of the limit. */
static const char *corpus_strerror(int err) {
  return err == EFBIG ? "larger than 1 GiB, the most one document may hold: split it"
                      : strerror(err);
}

/* "retro CMD: ..." on stderr; nothing when cmd is NULL (a quiet pass). */
PROTO_PRINTF(2, 3)
static void say(const char *cmd, const char *fmt, ...) {
  if (!cmd) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "retro %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* Adds a file to the list; 0, or -1 after printing why. */
static int fl_add(corpus *fl, const char *cmd, const char *path, const char *id, uint64_t size) {
  if (fl->n == fl->cap) {
    size_t nc = fl->cap ? fl->cap * 2 : 256;
    char **np = realloc(fl->paths, nc * sizeof *np);
    if (!np) goto oom;
    fl->paths = np;
    char **ni = realloc(fl->ids, nc * sizeof *ni);
    if (!ni) goto oom;
    fl->ids = ni;
    fl->cap = nc;
  }
  fl->paths[fl->n] = strdup(path);
  fl->ids[fl->n] = strdup(id);
  if (!fl->paths[fl->n] || !fl->ids[fl->n]) {
    free(fl->paths[fl->n]);
    free(fl->ids[fl->n]);
    goto oom;
  }
  fl->n++;
  fl->bytes += size;
  return 0;
oom:
  say(cmd, "out of memory listing %s", path);
  return -1;
}

static int str_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void free_names(char **names, size_t n) {
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

/* dir's entries (not those starting with '.'), sorted, into *names and *n;
 * 0, or -1 after printing why. */
static int list_dir(const char *cmd, const char *dir, char ***names, size_t *n) {
  *names = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) {
    say(cmd, "cannot read %s: %s", dir, strerror(errno));
    return -1;
  }
  char **v = NULL;
  size_t k = 0, cap = 0;
  int failed = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    if (k == cap) {
      cap = cap ? cap * 2 : 64;
      char **nv = realloc(v, cap * sizeof *nv);
      if (!nv) {
        failed = 1;
        break;
      }
      v = nv;
    }
    if (!(v[k] = strdup(de->d_name))) {
      failed = 1;
      break;
    }
    k++;
  }
  closedir(d);
  if (failed) { /* a file left out would be a document silently not indexed */
    say(cmd, "out of memory listing %s", dir);
    free_names(v, k);
    return -1;
  }
  if (k) qsort(v, k, sizeof *v, str_cmp);
  *names = v;
  *n = k;
  return 0;
}

/* Walks dir (recursively), adding text and .jsonl files; ids relative to root. */
static int walk(corpus *fl, const char *cmd, const char *dir, size_t root_len) {
  char **names;
  size_t n;
  if (list_dir(cmd, dir, &names, &n) != 0) return -1;
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    size_t pl = strlen(dir) + strlen(names[i]) + 2;
    char *p = malloc(pl);
    if (!p) {
      say(cmd, "out of memory");
      rc = -1;
      break;
    }
    snprintf(p, pl, "%s/%s", dir, names[i]);
    struct stat sb;
    if (stat(p, &sb) == 0) {
      if (S_ISDIR(sb.st_mode)) {
        if (walk(fl, cmd, p, root_len) != 0) rc = -1;
      } else if (S_ISREG(sb.st_mode) &&
                 (is_text_file(names[i]) || has_suffix(names[i], ".jsonl"))) {
        if (fl_add(fl, cmd, p, p + root_len, (uint64_t)sb.st_size) != 0) rc = -1;
      }
    }
    free(p);
  }
  free_names(names, n);
  return rc;
}

int corpus_add_arg(corpus *fl, const char *cmd, const char *p) {
  struct stat sb;
  if (strcmp(p, "-") == 0) {
    fl->use_stdin = 1;
    return 0;
  }
  if (stat(p, &sb) != 0) {
    say(cmd, "%s: %s", p, strerror(errno));
    return 1;
  }
  if (S_ISDIR(sb.st_mode)) {
    size_t root = strlen(p);
    while (root > 1 && p[root - 1] == '/') root--;
    char *dir = strndup(p, root);
    if (!dir) {
      say(cmd, "out of memory");
      return 1;
    }
    int w = walk(fl, cmd, dir, root + 1);
    free(dir);
    return w != 0;
  }
  return fl_add(fl, cmd, p, p, (uint64_t)sb.st_size) != 0;
}

void corpus_free(corpus *c) {
  for (size_t i = 0; i < c->n; i++) {
    free(c->paths[i]);
    free(c->ids[i]);
  }
  free(c->paths);
  free(c->ids);
  memset(c, 0, sizeof *c);
}

int corpus_is_jsonl(const char *path) { return has_suffix(path, ".jsonl"); }

static int is_fatal(proto_status s) {
  return s == PROTO_EUNAVAIL || s == PROTO_ENOMEM || s == PROTO_EIO;
}

/* Feeds one JSONL stream to fn. Returns the number of bad lines. */
static size_t each_jsonl(FILE *f, const char *name, const char *cmd, corpus_fn fn, void *ctx,
                         int *fatal, volatile sig_atomic_t *stop) {
  char *line = NULL;
  size_t cap = 0, bad = 0, lineno = 0;
  ssize_t got;
  int too_long = 0;
  while (!(stop && *stop) && (got = corpus_read_line(f, &line, &cap, &too_long)) >= 0) {
    lineno++;
    if (too_long) {
      say(cmd, "%s:%zu: %s; the rest of %s is not read", name, lineno, corpus_strerror(EFBIG),
          name);
      bad++;
      break;
    }
    size_t len = (size_t)got;
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
    size_t sp = 0;
    while (sp < len && (line[sp] == ' ' || line[sp] == '\t')) sp++;
    if (sp == len) continue;
    char where[512], err[512];
    snprintf(where, sizeof where, "%s:%zu", name, lineno);
    proto_doc d;
    proto_status s = proto_doc_parse(line, len, where, &d, err, sizeof err);
    if (s != PROTO_OK) {
      say(cmd, "%s", err);
      bad++;
      continue;
    }
    srv_doc sd = {
        .id = d.id, .text = d.text, .text_len = d.text_len, .metadata_json = d.metadata_json};
    s = fn(ctx, &sd, where);
    if (s != PROTO_OK) {
      say(cmd, "%s: %s", where, srv_last_error());
      bad++;
      if (is_fatal(s)) *fatal = 1;
    }
    proto_doc_free(&d);
    if (*fatal) break;
  }
  free(line);
  return bad;
}

/* One whole-file document. Returns 1 when it failed. */
static size_t each_file(const char *path, const char *id, const char *cmd, corpus_fn fn, void *ctx,
                        int *fatal) {
  char *text = NULL;
  size_t len = 0;
  if (corpus_read_file(path, &text, &len) != 0) {
    say(cmd, "%s: %s", path, corpus_strerror(errno));
    return 1;
  }
  srv_doc d = {.id = id, .text = text, .text_len = len};
  proto_status s = fn(ctx, &d, path);
  if (s != PROTO_OK) {
    say(cmd, "%s: %s", path, srv_last_error());
    if (is_fatal(s)) *fatal = 1;
  }
  free(text);
  return s != PROTO_OK;
}

size_t corpus_each(const corpus *c, const char *cmd, corpus_fn fn, void *ctx, int *fatal,
                   volatile sig_atomic_t *stop) {
  size_t bad = 0;
  *fatal = 0;
  for (size_t i = 0; i < c->n && !(stop && *stop) && !*fatal; i++) {
    if (!corpus_is_jsonl(c->paths[i])) {
      bad += each_file(c->paths[i], c->ids[i], cmd, fn, ctx, fatal);
      continue;
    }
    FILE *f = fopen(c->paths[i], "rb");
    if (!f) {
      say(cmd, "%s: %s", c->paths[i], strerror(errno));
      bad++;
      continue;
    }
    bad += each_jsonl(f, c->paths[i], cmd, fn, ctx, fatal, stop);
    fclose(f);
  }
  if (c->use_stdin && !(stop && *stop) && !*fatal)
    bad += each_jsonl(stdin, "stdin", cmd, fn, ctx, fatal, stop);
  return bad;
}
