/* cli.c - the `retro` command line: index, chunks, search, info, delete,
 * embed, generate, neighbours, and serve (handed to the HTTP daemon).
 * Parses flags, prints results (JSON on stdout for machine-readable output;
 * progress, logs and errors on stderr). Input files are read by corpus.c,
 * bulk vectors by bulk.c; all the work is done by the engine (srv.h).
 *
 * Exit codes: 0 ok, 1 error, 2 usage.
 */
#include "bulk.h"
#include "corpus.h"
#include "srv.h"
#include "views.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Flags --------------------------------------------------------------------------- */

typedef struct cli_flag {
  const char *name;  /* "--data"; short alias below */
  const char *alias; /* "-k" or NULL */
  int takes_value;
  const char *help;
} cli_flag;

typedef struct cli_args {
  const char *cmd;
  const cli_flag *flags;
  size_t n_flags;
  const char **values[32]; /* per flag: array of values (repeatable) */
  size_t n_values[32];
  int set[32];
  const char **pos;
  size_t n_pos;
} cli_args;

/* Closes e; a failed index save is reported, not fatal: the documents are in
 * the store and the next open brings the index up to date from it. */
static void close_engine(srv_engine *e) {
  if (srv_engine_close(e) != PROTO_OK)
    fprintf(stderr, "retro: %s (the next open brings the index up to date from the store)\n",
            srv_last_error());
}

static void usage_flags(FILE *f, const cli_flag *flags, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char left[64];
    snprintf(left, sizeof left, "%s%s%s%s", flags[i].alias ? flags[i].alias : "",
             flags[i].alias ? ", " : "", flags[i].name, flags[i].takes_value ? " V" : "");
    fprintf(f, "  %-26s %s\n", left, flags[i].help);
  }
}

static void args_free(cli_args *a) {
  for (size_t i = 0; i < 32; i++) free(a->values[i]);
  free(a->pos);
}

static int args_oom(const char *cmd) {
  fprintf(stderr, "retro %s: out of memory\n", cmd);
  return 1;
}

/* Returns 0, or 2 after printing a usage error (1 when out of memory).
 * --help sets *help. */
static int args_parse(cli_args *a, const char *cmd, const cli_flag *flags, size_t n_flags, int argc,
                      char **argv, int *help) {
  memset(a, 0, sizeof *a);
  *help = 0;
  a->cmd = cmd;
  a->flags = flags;
  a->n_flags = n_flags;
  a->pos = calloc((size_t)argc + 1, sizeof *a->pos);
  if (!a->pos) return args_oom(cmd);
  int only_pos = 0;
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i];
    if (only_pos || s[0] != '-' || strcmp(s, "-") == 0) {
      a->pos[a->n_pos++] = s;
      continue;
    }
    if (strcmp(s, "--") == 0) {
      only_pos = 1;
      continue;
    }
    if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
      *help = 1;
      return 0;
    }
    const char *eq = strchr(s, '=');
    size_t nl = eq ? (size_t)(eq - s) : strlen(s);
    size_t f = n_flags;
    for (size_t j = 0; j < n_flags; j++) {
      if ((strlen(flags[j].name) == nl && strncmp(flags[j].name, s, nl) == 0) ||
          (flags[j].alias && strlen(flags[j].alias) == nl && strncmp(flags[j].alias, s, nl) == 0)) {
        f = j;
        break;
      }
    }
    if (f == n_flags) {
      fprintf(stderr, "retro %s: unknown option %.*s (see retro %s --help)\n", cmd, (int)nl, s,
              cmd);
      return 2;
    }
    const char *val = NULL;
    if (flags[f].takes_value) {
      if (eq) val = eq + 1;
      else if (i + 1 < argc) val = argv[++i];
      else {
        fprintf(stderr, "retro %s: %s needs a value\n", cmd, flags[f].name);
        return 2;
      }
      if (!*val) { /* an unset shell variable, most likely: --data "$DIR" */
        fprintf(stderr, "retro %s: %s: an empty value\n", cmd, flags[f].name);
        return 2;
      }
      const char **nv = realloc(a->values[f], (a->n_values[f] + 1) * sizeof *nv);
      if (!nv) return args_oom(cmd);
      a->values[f] = nv;
      nv[a->n_values[f]++] = val;
    } else if (eq) {
      fprintf(stderr, "retro %s: %s takes no value\n", cmd, flags[f].name);
      return 2;
    }
    a->set[f] = 1;
  }
  return 0;
}

static size_t flag_index(const cli_args *a, const char *name) {
  for (size_t i = 0; i < a->n_flags; i++)
    if (strcmp(a->flags[i].name, name) == 0) return i;
  return a->n_flags;
}

/* The last value of a flag, or NULL. */
static const char *opt_str(const cli_args *a, const char *name) {
  size_t i = flag_index(a, name);
  if (i == a->n_flags || !a->n_values[i]) return NULL;
  return a->values[i][a->n_values[i] - 1];
}

static int opt_set(const cli_args *a, const char *name) {
  size_t i = flag_index(a, name);
  return i < a->n_flags && a->set[i];
}

/* Parses an integer flag in [lo, hi]; 0 ok, 2 usage error. */
static int opt_int(const cli_args *a, const char *name, long lo, long hi, long *out) {
  const char *v = opt_str(a, name);
  if (!v) return 0;
  char *end = NULL;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || !*v || *end || x < lo || x > hi) {
    fprintf(stderr, "retro %s: %s must be an integer in [%ld, %ld], not \"%s\"\n", a->cmd, name, lo,
            hi, v);
    return 2;
  }
  *out = x;
  return 0;
}

static int opt_double(const cli_args *a, const char *name, double lo, double hi, double *out) {
  const char *v = opt_str(a, name);
  if (!v) return 0;
  char *end = NULL;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || !*v || *end || !(x >= lo && x <= hi)) {
    fprintf(stderr, "retro %s: %s must be a number in [%g, %g], not \"%s\"\n", a->cmd, name, lo, hi,
            v);
    return 2;
  }
  *out = x;
  return 0;
}

/* Common engine flags. */
#define ENGINE_FLAGS                                                                              \
  {"--data", NULL, 1, "data directory (required)"},                                               \
      {"--encoder", NULL, 1, "encoder model directory (default: the database's, else built-in)"}, \
      {"--decoder", NULL, 1, "decoder model directory, or \"none\" (default: as --encoder)"}, {   \
    "--threads", NULL, 1, "encoder/decoder threads (default: all CPUs)"                           \
  }

/* A mode flag (--mode, --retrieval-mode): absent = SRV_MODE_DEFAULT; -1 when
 * the value is not a mode (the message is printed). */
static int opt_mode(const cli_args *a, const char *name) {
  const char *v = opt_str(a, name);
  if (!v) return SRV_MODE_DEFAULT;
  srv_search_mode m = srv_mode_parse(v);
  if (m == SRV_MODE_DEFAULT) {
    fprintf(stderr, "retro %s: %s must be dense, lexical or hybrid\n", a->cmd, name);
    return -1;
  }
  return (int)m;
}

static int engine_from_args(const cli_args *a, int load_decoder, int read_only, srv_engine **e) {
  srv_engine_options o = {0};
  long threads = 0;
  if (opt_int(a, "--threads", 0, 1024, &threads)) return 2;
  o.data_dir = opt_str(a, "--data");
  if (!o.data_dir) {
    fprintf(stderr, "retro %s: --data DIR is required\n", a->cmd);
    return 2;
  }
  o.encoder_dir = opt_str(a, "--encoder");
  o.decoder_dir = opt_str(a, "--decoder");
  /* only the commands that rerank load a reranker */
  o.reranker_dir = flag_index(a, "--reranker") < a->n_flags ? opt_str(a, "--reranker") : "none";
  o.index_factory = opt_str(a, "--index");
  o.threads = (int)threads;
  o.load_decoder = load_decoder;
  o.read_only = read_only;
  long batch = 0;
  if (flag_index(a, "--batch") < a->n_flags && opt_int(a, "--batch", 1, 4096, &batch)) return 2;
  o.embed_batch = (int)batch;
  long max_map = 0;
  if (flag_index(a, "--max-map-mb") < a->n_flags &&
      opt_int(a, "--max-map-mb", 1, 1L << 30, &max_map))
    return 2;
  o.max_map_bytes = (size_t)max_map << 20;
  proto_status s = srv_engine_open(&o, e);
  if (s != PROTO_OK) {
    fprintf(stderr, "retro %s: %s\n", a->cmd, srv_last_error());
    return 1;
  }
  return 0;
}

static int print_json(json_t *v) {
  if (!v) {
    fprintf(stderr, "retro: out of memory\n");
    return 1;
  }
  int rc = json_dumpf(v, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) == 0 ? 0 : 1;
  fputc('\n', stdout);
  json_decref(v);
  return rc;
}

/* Prints JSON written by a views.h writer, indented as print_json does. */
static int print_view(proto_buf *b) {
  /* JSON_ALLOW_NUL: a text may hold a NUL byte (a file read by retro index) */
  json_t *v = b->failed ? NULL : json_loadb(b->data ? b->data : "", b->len, JSON_ALLOW_NUL, NULL);
  proto_buf_free(b);
  return print_json(v);
}

/* index ---------------------------------------------------------------------------- */

static const cli_flag index_flags[] = {
    ENGINE_FLAGS,
    {"--index", NULL, 1, "FAISS index_factory string (default: by corpus size)"},
    {"--batch", NULL, 1, "chunks per encoder batch (default 32)"},
    {"--acks", NULL, 0, "print \"ack ID\" on stdout once each document is committed"},
    {"--force", NULL, 0,
     "embed and store every document, also those whose text and metadata are unchanged"},
    {"--max-map-mb", NULL, 1, "the LMDB map never grows past this many MiB (default: no limit)"},
    {"--vectors", NULL, 1, "the chunk vectors from this file (retro chunks), not the encoder"},
    {"--quiet", "-q", 0, "no progress output"},
};

typedef struct ingest_ui {
  int tty, quiet, acks;
  uint64_t total_bytes; /* 0 = unknown (stdin) */
  double t0, last;
  uint64_t failed;
} ingest_ui;

static void fmt_dur(double s, char *buf, size_t n) {
  if (!isfinite(s) || s < 0) snprintf(buf, n, "?");
  else if (s < 60) snprintf(buf, n, "%.0fs", s);
  else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
  else snprintf(buf, n, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

static void ui_ack(void *ctx, const srv_ack *a) {
  ingest_ui *ui = ctx;
  if (a->status != PROTO_OK) {
    ui->failed++;
    fprintf(stderr, "%sretro index: %s: %s\n", ui->tty ? "\r\033[K" : "", a->id, a->message);
    return;
  }
  if (ui->acks) {
    fprintf(stdout, "ack %s %u\n", a->id, (unsigned)a->n_chunks);
    fflush(stdout);
  }
}

static void ui_progress(void *ctx, const srv_ingest_progress *p) {
  ingest_ui *ui = ctx;
  if (ui->quiet) return;
  double now = proto_now();
  if (now - ui->last < (ui->tty ? 0.2 : 5.0)) return;
  ui->last = now;
  double rate = p->elapsed_s > 0 ? (double)p->chunks / p->elapsed_s : 0;
  double brate = p->elapsed_s > 0 ? (double)p->bytes / p->elapsed_s : 0;
  char eta[32] = "?";
  double frac = 0;
  if (ui->total_bytes) {
    frac = (double)p->bytes / (double)ui->total_bytes;
    if (frac > 1) frac = 1;
    if (brate > 0)
      fmt_dur(
          (double)(ui->total_bytes - (p->bytes < ui->total_bytes ? p->bytes : ui->total_bytes)) /
              brate,
          eta, sizeof eta);
  }
  if (ui->tty) {
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
    bar[30] = 0;
    if (ui->total_bytes)
      fprintf(stderr, "\r\033[K[%s] %3.0f%%  %llu docs  %llu chunks  %.0f chunks/s  ETA %s", bar,
              frac * 100, (unsigned long long)p->docs, (unsigned long long)p->chunks, rate, eta);
    else
      fprintf(stderr, "\r\033[K%llu docs  %llu chunks  %.0f chunks/s", (unsigned long long)p->docs,
              (unsigned long long)p->chunks, rate);
  } else {
    fprintf(stderr, "retro index: %llu docs, %llu chunks, %.1f chunks/s%s%s\n",
            (unsigned long long)p->docs, (unsigned long long)p->chunks, rate,
            ui->total_bytes ? ", ETA " : "", ui->total_bytes ? eta : "");
  }
  fflush(stderr);
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
}

/* SIGINT and SIGTERM set `interrupted`: the corpus reader stops and what
 * was read is finished properly. */
static void catch_interrupts(void) {
  struct sigaction sa = {0};
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* The PATH arguments into fl; 0, or the exit status after printing why. */
static int corpus_from_args(const cli_args *a, corpus *fl) {
  if (a->n_pos == 0) {
    fprintf(stderr, "retro %s: no PATH given (see retro %s --help)\n", a->cmd, a->cmd);
    return 2;
  }
  for (size_t i = 0; i < a->n_pos; i++)
    if (corpus_add_arg(fl, a->cmd, a->pos[i]) != 0) return 1;
  return 0;
}

/* Adds one document to the ingest session (a corpus_fn). */
static proto_status index_doc(void *ctx, const srv_doc *doc, const char *where) {
  (void)where;
  return srv_ingest_add(ctx, doc);
}

static void index_summary(const ingest_ui *ui, const srv_ingest_progress *pr) {
  if (ui->tty && !ui->quiet) fprintf(stderr, "\r\033[K");
  if (!ui->quiet)
    fprintf(stderr,
            "retro index: %llu documents, %llu chunks, %llu unchanged in %.1fs (%.1f chunks/s)%s\n",
            (unsigned long long)pr->docs, (unsigned long long)pr->chunks,
            (unsigned long long)pr->unchanged, pr->elapsed_s,
            pr->elapsed_s > 0 ? (double)pr->chunks / pr->elapsed_s : 0.0,
            interrupted ? "; interrupted" : "");
}

/* Reads the corpus into a new session of e: its exit status. */
static int index_corpus(const cli_args *a, srv_engine *e, const corpus *fl, bulk_vectors *bv) {
  ingest_ui ui = {.tty = isatty(2),
                  .quiet = opt_set(a, "--quiet"),
                  .acks = opt_set(a, "--acks"),
                  .total_bytes = fl->use_stdin ? 0 : fl->bytes,
                  .t0 = proto_now()};
  srv_ingest_callbacks cb = {.on_ack = ui_ack,
                             .on_progress = ui_progress,
                             .ctx = &ui,
                             .force = opt_set(a, "--force"),
                             .take_vectors = bv ? bulk_take_vectors : NULL,
                             .vectors_ctx = bv};
  srv_ingest *in = NULL;
  if (srv_ingest_begin(e, &cb, &in) != PROTO_OK) {
    fprintf(stderr, "retro index: %s\n", srv_last_error());
    return 1;
  }
  catch_interrupts();
  int fatal = 0, rc = 0;
  size_t bad = corpus_each(fl, "index", index_doc, in, &fatal, &interrupted);
  srv_ingest_progress pr;
  srv_ingest_end(in, &pr);
  index_summary(&ui, &pr);
  if (pr.errors || bad) {
    fprintf(stderr, "retro index: %llu document(s) failed\n",
            (unsigned long long)(pr.errors + bad));
    rc = 1;
  }
  if (interrupted || fatal) rc = 1;
  if (bulk_vectors_close(bv, !interrupted && !fatal)) rc = 1;
  return rc;
}

static int cmd_index(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "index", index_flags, sizeof index_flags / sizeof *index_flags,
                            argc, argv, &help);
  srv_engine *e = NULL;
  corpus fl = {0};
  bulk_vectors *bv = NULL;
  const char *vectors = opt_str(&a, "--vectors");
  if (rc || help) {
    if (help) {
      printf(
          "usage: retro index --data DIR [options] PATH...\n\n"
          "Indexes documents: .txt/.md/.rst files (one document per file, id = the path\n"
          "relative to the directory given, or the path as given for a file), directories\n"
          "(recursively), .jsonl files and `-` (stdin) with one {\"id\", \"text\",\n"
          "\"metadata\"} object per line. A document whose id exists is replaced.\n"
          "--vectors takes the chunk vectors from a file made from `retro chunks` (see\n"
          "docs/OPERATIONS.md, \"Bulk vectors\") instead of running the encoder.\n\n");
      usage_flags(stdout, index_flags, sizeof index_flags / sizeof *index_flags);
    }
    goto leave;
  }
  if ((rc = corpus_from_args(&a, &fl)) != 0) goto leave;
  if (vectors && fl.use_stdin) {
    fprintf(stderr,
            "retro index: --vectors reads the corpus twice (it is checked against the "
            "vectors first): give a .jsonl file, not -\n");
    rc = 2;
    goto leave;
  }
  if ((rc = engine_from_args(&a, 0, 0, &e)) != 0) goto leave;
  if (vectors && (rc = bulk_vectors_open(e, &fl, vectors, &bv)) != 0) goto leave;
  rc = index_corpus(&a, e, &fl, bv);
leave:
  close_engine(e);
  corpus_free(&fl);
  args_free(&a);
  return rc;
}

/* chunks --------------------------------------------------------------------------- */

static const cli_flag chunks_flags[] = {
    ENGINE_FLAGS,
    {"--out", "-o", 1, "the chunks file to write (required)"},
    {"--quiet", "-q", 0, "no progress output"},
};

static int cmd_chunks(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "chunks", chunks_flags, sizeof chunks_flags / sizeof *chunks_flags,
                            argc, argv, &help);
  srv_engine *e = NULL;
  corpus fl = {0};
  if (rc || help) {
    if (help) {
      printf(
          "usage: retro chunks --data DIR --out FILE [options] PATH...\n\n"
          "Writes the chunks of the documents in PATH (read as `retro index` reads them)\n"
          "to FILE, JSON Lines: a header with the encoder's fingerprint, the count and a\n"
          "digest, then one {\"doc\", \"chunk\", \"ids\", \"text\"} a chunk, \"ids\" the\n"
          "encoder's input. Embed them elsewhere (model/train/embed_chunks.py) and index\n"
          "with `retro index --vectors` (docs/OPERATIONS.md, \"Bulk vectors\"). The\n"
          "models are DIR's (or --encoder/--decoder for a new DIR); no document is stored.\n\n");
      usage_flags(stdout, chunks_flags, sizeof chunks_flags / sizeof *chunks_flags);
    }
    goto leave;
  }
  const char *out = opt_str(&a, "--out");
  if (!out) {
    fprintf(stderr, "retro chunks: --out FILE is required (see retro chunks --help)\n");
    rc = 2;
    goto leave;
  }
  if ((rc = corpus_from_args(&a, &fl)) != 0) goto leave;
  struct stat sb;
  const char *data = opt_str(&a, "--data");
  /* an existing database is only read; a new one records the models */
  if ((rc = engine_from_args(&a, 0, data && stat(data, &sb) == 0, &e)) != 0) goto leave;
  catch_interrupts();
  rc = bulk_write_chunks(e, &fl, out, opt_set(&a, "--quiet"), &interrupted);
leave:
  close_engine(e);
  corpus_free(&fl);
  args_free(&a);
  return rc;
}

/* search ------------------------------------------------------------------------- */

static const cli_flag search_flags[] = {
    ENGINE_FLAGS,
    {"--k", "-k", 1, "neighbours per query (default 10)"},
    {"--exclude", NULL, 1, "skip chunks of this document id (repeatable)"},
    {"--include", NULL, 1, "only chunks of this document id (repeatable)"},
    {"--nprobe", NULL, 1, "IVF lists to visit"},
    {"--ef-search", NULL, 1, "HNSW efSearch"},
    {"--no-text", NULL, 0, "omit chunk texts"},
    {"--with-vectors", NULL, 0, "each hit with its stored embedding (\"vector\")"},
    {"--mode", NULL, 1, "dense, lexical or hybrid (default hybrid)"},
    {"--alpha", NULL, 1, "hybrid: weight of the dense list in (0, 1]"},
    {"--group-size", NULL, 1, "group by document: up to N chunks of each of k documents"},
    {"--expand", NULL, 1, "add each hit's context: N chunks before and after it"},
    {"--chunk-id", NULL, 1,
     "instead of QUERY: the chunks nearest this stored chunk (by its vector)"},
    {"--rerank", NULL, 1, "order the best N candidates (at least k) with the reranker"},
    {"--reranker", NULL, 1, "reranker model directory (default: the installed one)"},
};

static int cmd_search(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "search", search_flags, sizeof search_flags / sizeof *search_flags,
                            argc, argv, &help);
  srv_engine *e = NULL;
  srv_search_result res = {0};
  if (rc || help) {
    if (help) {
      printf(
          "usage: retro search --data DIR [-k N] QUERY...\n"
          "       retro search --data DIR [-k N] --chunk-id ID\n\n"
          "Prints the nearest chunks of each query as JSON, as POST /v1/search answers\n"
          "\"queries\": {\"batch\": [{\"results\": [{\"score\", \"chunk_id\", \"doc_id\",\n"
          "\"doc_num\", \"ordinal\", \"metadata\", \"text\", \"continuation\"}]}], \"k\", \"mode\"}\n"
          "(hybrid hits add dense_score/rank and lexical_score/rank; with --group-size\n"
          "\"groups\" of hits by document; with --expand, \"context\"; with --rerank,\n"
          "score is the reranker's relevance and retrieval_score/rank the mode's)\n\n");
      usage_flags(stdout, search_flags, sizeof search_flags / sizeof *search_flags);
    }
    goto leave;
  }
  long k = 10, nprobe = 0, ef = 0, group = 0, expand = 0, like = 0, rerank = 0;
  double alpha = 0;
  int mode = opt_mode(&a, "--mode");
  if (opt_int(&a, "--k", 1, PROTO_MAX_K, &k) || opt_int(&a, "--nprobe", 0, 1 << 20, &nprobe) ||
      opt_int(&a, "--rerank", 1, SRV_RERANK_MAX, &rerank) ||
      opt_int(&a, "--ef-search", 0, 1 << 20, &ef) || opt_int(&a, "--group-size", 0, 100, &group) ||
      opt_int(&a, "--expand", 0, 16, &expand) || opt_double(&a, "--alpha", 0, 1, &alpha) ||
      opt_int(&a, "--chunk-id", 1, LONG_MAX, &like) || mode < 0) {
    rc = 2;
    goto leave;
  }
  if ((a.n_pos == 0) == !like) {
    fprintf(stderr, "retro search: give QUERY... or --chunk-id%s\n", like ? ", not both" : "");
    rc = 2;
    goto leave;
  }
  for (size_t i = 0; i < a.n_pos; i++)
    if (proto_blank(a.pos[i], strlen(a.pos[i]))) {
      fprintf(stderr, "retro search: QUERY %zu is empty or only white space\n", i + 1);
      rc = 2;
      goto leave;
    }
  if ((rc = engine_from_args(&a, 0, 1, &e)) != 0) goto leave;
  size_t xi = flag_index(&a, "--exclude"), ii = flag_index(&a, "--include");
  srv_search_request rq = {.texts = a.pos,
                           .n_texts = a.n_pos,
                           .k = (int)k,
                           .exclude_docs = a.values[xi],
                           .n_exclude = a.n_values[xi],
                           .include_docs = a.values[ii],
                           .n_include = a.n_values[ii],
                           .nprobe = (int)nprobe,
                           .ef_search = (int)ef,
                           .with_text = !opt_set(&a, "--no-text"),
                           .with_vectors = opt_set(&a, "--with-vectors"),
                           .mode = mode,
                           .alpha = (float)alpha,
                           .group_size = (int)group,
                           .expand = (int)expand,
                           .rerank = (int)rerank,
                           .like_chunk = (uint64_t)like};
  if (srv_search(e, &rq, &res) != PROTO_OK) {
    fprintf(stderr, "retro search: %s\n", srv_last_error());
    rc = 1;
    goto leave;
  }
  proto_buf b;
  proto_buf_init(&b);
  proto_jw w;
  proto_jw_init(&w, &b);
  proto_jw_obj(&w); /* the answer of POST /v1/search with "queries" */
  proto_jw_key(&w, "batch");
  proto_jw_arr(&w);
  for (size_t q = 0; q < res.nq; q++) {
    proto_jw_obj(&w);
    view_hits(&w, &res.queries[q], res.mode, group > 0, rq.with_text);
    proto_jw_obj_end(&w);
  }
  proto_jw_arr_end(&w);
  proto_jw_key(&w, "k");
  proto_jw_int(&w, k);
  proto_jw_key(&w, "mode");
  proto_jw_cstr(&w, srv_mode_name(res.mode));
  proto_jw_obj_end(&w);
  rc = print_view(&b);
leave:
  srv_search_result_free(&res);
  close_engine(e);
  args_free(&a);
  return rc;
}

/* info ------------------------------------------------------------------------------ */

static const cli_flag info_flags[] = {ENGINE_FLAGS};

static int cmd_info(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "info", info_flags, sizeof info_flags / sizeof *info_flags, argc,
                            argv, &help);
  srv_engine *e = NULL;
  if (rc || help) {
    if (help) {
      printf("usage: retro info --data DIR\n\nPrints the database, models and index as JSON.\n\n");
      usage_flags(stdout, info_flags, sizeof info_flags / sizeof *info_flags);
    }
    goto leave;
  }
  if ((rc = engine_from_args(&a, 0, 1, &e)) != 0) goto leave;
  srv_info in;
  if (srv_info_get(e, &in) != PROTO_OK) {
    fprintf(stderr, "retro info: %s\n", srv_last_error());
    rc = 1;
    goto leave;
  }
  proto_buf b;
  proto_buf_init(&b);
  proto_jw w;
  proto_jw_init(&w, &b);
  view_info(&w, &in, NULL, NULL, in.read_only); /* GET /v1/info's object */
  rc = print_view(&b);
leave:
  close_engine(e);
  args_free(&a);
  return rc;
}

/* delete ---------------------------------------------------------------------------- */

static const cli_flag delete_flags[] = {
    ENGINE_FLAGS,
    {"--filter", NULL, 1,
     "delete every document whose metadata passes this JSON filter (as a search's), "
     "instead of IDs"}};

/* --filter JSON, checked as POST /v1/documents/delete checks its filter:
 * 0, or 2 with the problem printed. */
static int parse_filter(const char *filter, proto_delete_req *req) {
  char *body = malloc(strlen(filter) + 16), err[512];
  if (!body) return 2;
  sprintf(body, "{\"filter\": %s}", filter);
  proto_status st = proto_delete_parse(body, strlen(body), req, err, sizeof err);
  free(body);
  if (st == PROTO_EJSON) fprintf(stderr, "retro delete: --filter: not valid JSON\n");
  else if (st != PROTO_OK) fprintf(stderr, "retro delete: --%s\n", err);
  return st == PROTO_OK ? 0 : 2;
}

static int delete_by_filter(srv_engine *e, const proto_delete_req *req) {
  size_t deleted = 0;
  if (srv_delete_where(e, req->filter_json, &deleted) != PROTO_OK) {
    fprintf(stderr, "retro delete: %s (nothing deleted)\n", srv_last_error());
    return 1;
  }
  printf("deleted %zu documents\n", deleted);
  return 0;
}

/* retro delete ID...: all in one transaction; exit 1 if any was absent. */
static int delete_by_ids(srv_engine *e, const char *const *ids, size_t n) {
  int rc = 0, *found = calloc(n, sizeof *found);
  if (!found || srv_delete_many(e, ids, n, found) != PROTO_OK) {
    fprintf(stderr, "retro delete: %s (nothing deleted)\n",
            found ? srv_last_error() : "out of memory");
    rc = 1;
  } else {
    for (size_t i = 0; i < n; i++) {
      if (found[i]) printf("deleted %s\n", ids[i]);
      else {
        fprintf(stderr, "retro delete: %s: not found\n", ids[i]);
        rc = 1;
      }
    }
  }
  free(found);
  return rc;
}

static int cmd_delete(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "delete", delete_flags, sizeof delete_flags / sizeof *delete_flags,
                            argc, argv, &help);
  srv_engine *e = NULL;
  proto_delete_req req = {0};
  if (rc || help) {
    if (help) {
      printf(
          "usage: retro delete --data DIR ID...\n"
          "       retro delete --data DIR --filter JSON\n\n"
          "Deletes documents by id, or those whose metadata passes the filter, all in one "
          "transaction; exit 1 if an id was not found.\n\n");
      usage_flags(stdout, delete_flags, sizeof delete_flags / sizeof *delete_flags);
    }
    goto leave;
  }
  const char *filter = opt_str(&a, "--filter");
  if ((a.n_pos == 0) == !filter) {
    fprintf(stderr, "retro delete: give IDs or --filter%s\n", filter ? ", not both" : "");
    rc = 2;
    goto leave;
  }
  if (filter && (rc = parse_filter(filter, &req)) != 0) goto leave;
  if ((rc = engine_from_args(&a, 0, 0, &e)) != 0) goto leave;
  rc = filter ? delete_by_filter(e, &req) : delete_by_ids(e, (const char *const *)a.pos, a.n_pos);
leave:
  close_engine(e);
  proto_delete_free(&req);
  args_free(&a);
  return rc;
}

/* update ---------------------------------------------------------------------------- */

static const cli_flag update_flags[] = {
    ENGINE_FLAGS,
    {"--metadata", NULL, 1,
     "the JSON merge patch of each document's metadata (null removes a key)"},
    {"--filter", NULL, 1,
     "update every document whose metadata passes this JSON filter (as a search's), instead of "
     "IDs"}};

/* The IDs given as a JSON array; NULL (said) when one is not UTF-8. */
static json_t *ids_array(const cli_args *a) {
  json_t *ids = json_array();
  for (size_t i = 0; ids && i < a->n_pos; i++)
    if (json_array_append_new(ids, json_string(a->pos[i])) != 0) {
      fprintf(stderr, "retro update: ID %zu is not valid UTF-8\n", i + 1);
      json_decref(ids);
      return NULL;
    }
  return ids;
}

/* The request POST /v1/documents/update would get, checked as it checks it:
 * 0, or 2 with the problem printed. */
static int parse_update(const cli_args *a, const char *filter, const char *metadata,
                        proto_update_req *req) {
  json_t *which = filter ? json_loads(filter, 0, NULL) : ids_array(a);
  if (filter && !which) fprintf(stderr, "retro update: --filter: not valid JSON\n");
  json_t *m = which ? json_loads(metadata, 0, NULL) : NULL;
  if (which && !m) fprintf(stderr, "retro update: --metadata: not valid JSON\n");
  if (!which || !m) {
    json_decref(which);
    return 2;
  }
  json_t *body = json_pack("{s:o, s:o}", "metadata", m, filter ? "filter" : "ids", which);
  char *text = body ? json_dumps(body, JSON_COMPACT) : NULL, err[512];
  json_decref(body);
  proto_status st =
      text ? proto_update_parse(text, strlen(text), req, err, sizeof err) : PROTO_ENOMEM;
  if (st != PROTO_OK) fprintf(stderr, "retro update: %s\n", text ? err : "out of memory");
  free(text);
  return st == PROTO_OK ? 0 : 2;
}

/* Updates req's documents; exit 1 if a listed id was not found. */
static int update_documents(srv_engine *e, const proto_update_req *req) {
  const proto_delete_req *w = &req->which;
  size_t n = 0;
  int rc = 0, *found = w->filter_json ? NULL : calloc(w->n, sizeof *found);
  proto_status s =
      w->filter_json ? srv_update_where(e, w->filter_json, req->metadata_patch, &n)
      : found ? srv_update_many(e, (const char *const *)w->ids, w->n, req->metadata_patch, found)
              : PROTO_ENOMEM;
  if (s != PROTO_OK) {
    fprintf(stderr, "retro update: %s (nothing updated)\n",
            found || w->filter_json ? srv_last_error() : "out of memory");
    free(found);
    return 1;
  }
  for (size_t i = 0; found && i < w->n; i++) {
    if (found[i]) n++;
    else {
      fprintf(stderr, "retro update: %s: not found\n", w->ids[i]);
      rc = 1;
    }
  }
  printf("updated %zu documents\n", n);
  free(found);
  return rc;
}

static int cmd_update(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "update", update_flags, sizeof update_flags / sizeof *update_flags,
                            argc, argv, &help);
  srv_engine *e = NULL;
  proto_update_req req = {0};
  const char *filter = opt_str(&a, "--filter"), *metadata = opt_str(&a, "--metadata");
  if (!rc && !help && ((a.n_pos == 0) == !filter || !metadata)) {
    fprintf(stderr, "retro update: give IDs or --filter%s, and --metadata\n",
            filter && a.n_pos ? ", not both" : "");
    rc = 2;
  }
  if (rc || help) {
    if (help) {
      printf(
          "usage: retro update --data DIR --metadata JSON ID...\n"
          "       retro update --data DIR --metadata JSON --filter JSON\n\n"
          "Merges the metadata patch into the listed documents, or into those whose metadata\n"
          "passes the filter, all in one transaction; texts and vectors stay. Exit 1 if an\n"
          "id was not found.\n\n");
      usage_flags(stdout, update_flags, sizeof update_flags / sizeof *update_flags);
    }
    goto leave;
  }
  if ((rc = parse_update(&a, filter, metadata, &req)) != 0) goto leave;
  if ((rc = engine_from_args(&a, 0, 0, &e)) != 0) goto leave;
  rc = update_documents(e, &req);
leave:
  close_engine(e);
  proto_update_free(&req);
  args_free(&a);
  return rc;
}

/* get ------------------------------------------------------------------------------- */

static const cli_flag get_flags[] = {
    ENGINE_FLAGS,
    {"--no-text", NULL, 0, "omit the text"},
    {"--vectors", NULL, 0, "add \"vectors\": each chunk's stored embedding"}};

/* One chunk's stored embedding as a JSON array; NULL when it cannot be read. */
static json_t *vector_json(srv_engine *e, uint64_t chunk_id, float *v) {
  json_t *one = json_array();
  if (!one || store_vector_get(srv_engine_store(e), chunk_id, v) != PROTO_OK) {
    json_decref(one);
    return NULL;
  }
  for (uint32_t i = 0; i < srv_engine_dim(e); i++)
    if (json_array_append_new(one, json_real(v[i])) != 0) {
      json_decref(one);
      return NULL;
    }
  return one;
}

/* Adds "vectors" (its chunks' stored embeddings, by "chunk_ids") to a
 * document's object; 0, or 1 when one could not be read. */
static int add_vectors(srv_engine *e, json_t *doc) {
  float *v = malloc(srv_engine_dim(e) * sizeof *v);
  json_t *all = json_array(), *id;
  size_t i;
  int rc = !v || !all;
  json_array_foreach(json_object_get(doc, "chunk_ids"), i, id) {
    json_t *one = rc ? NULL : vector_json(e, (uint64_t)json_integer_value(id), v);
    if (!one || json_array_append_new(all, one) != 0) rc = 1;
  }
  free(v);
  if (!rc && json_object_set_new(doc, "vectors", all) == 0) return 0;
  json_decref(all);
  return 1;
}

static int cmd_get(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "get", get_flags, sizeof get_flags / sizeof *get_flags, argc, argv,
                            &help);
  srv_engine *e = NULL;
  if (rc || help) {
    if (help) {
      printf(
          "usage: retro get --data DIR ID...\n\n"
          "Prints the documents as JSON: [{\"id\", \"doc_num\", \"n_chunks\", \"n_tokens\",\n"
          "\"first_chunk\", \"metadata\", \"text\"} or null when absent]; exit 1 if any is "
          "absent.\nWith --vectors each also has \"vectors\": its chunks' stored embeddings.\n\n");
      usage_flags(stdout, get_flags, sizeof get_flags / sizeof *get_flags);
    }
    goto leave;
  }
  if (a.n_pos == 0) {
    fprintf(stderr, "retro get: no ID given\n");
    rc = 2;
    goto leave;
  }
  if ((rc = engine_from_args(&a, 0, 1, &e)) != 0) goto leave;
  proto_buf b;
  proto_buf_init(&b);
  proto_jw w;
  proto_jw_init(&w, &b);
  proto_jw_arr(&w); /* GET /v1/documents/{id}'s object per id, null when absent */
  int with_text = !opt_set(&a, "--no-text");
  for (size_t i = 0; i < a.n_pos; i++) {
    srv_document d;
    proto_status s = srv_document_get(e, a.pos[i], with_text, &d);
    if (s == PROTO_ENOTFOUND) {
      fprintf(stderr, "retro get: %s: not found\n", a.pos[i]);
      proto_jw_null(&w);
      rc = 1;
      continue;
    }
    if (s != PROTO_OK) {
      fprintf(stderr, "retro get: %s\n", srv_last_error());
      proto_buf_free(&b);
      rc = 1;
      goto leave;
    }
    view_document(&w, &d, with_text);
    srv_document_free(&d);
  }
  proto_jw_arr_end(&w);
  if (!opt_set(&a, "--vectors")) {
    if (print_view(&b) != 0) rc = 1;
    goto leave;
  }
  json_t *docs = b.failed ? NULL : json_loadb(b.data, b.len, JSON_ALLOW_NUL, NULL), *doc;
  proto_buf_free(&b);
  size_t i;
  json_array_foreach(docs, i, doc) {
    if (json_is_object(doc) && add_vectors(e, doc)) {
      fprintf(stderr, "retro get: reading the vectors of %s failed\n", a.pos[i]);
      rc = 1;
    }
  }
  if (print_json(docs) != 0) rc = 1;
leave:
  close_engine(e);
  args_free(&a);
  return rc;
}

/* export ---------------------------------------------------------------------------- */

static const cli_flag export_flags[] = {
    {"--data", NULL, 1, "data directory"},
    {"--out", "-o", 1, "write to this file (complete or absent: written aside, then renamed)"},
    {"--filter", NULL, 1,
     "only the documents whose metadata passes this JSON filter (as a search's)"},
};

/* Writes the export into path via path.partial, synced and renamed. */
static int export_to_file(const char *data, const char *filter, const char *path,
                          srv_export_stats *st) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.partial", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    fprintf(stderr, "retro export: %s: %s\n", tmp, strerror(errno));
    return 1;
  }
  proto_status s = srv_export(data, filter, f, st);
  int bad = s != PROTO_OK || fsync(fileno(f)) != 0;
  if (fclose(f) != 0) bad = 1;
  if (!bad && rename(tmp, path) != 0) bad = 1;
  if (!bad) return 0;
  fprintf(stderr, "retro export: %s\n", s != PROTO_OK ? srv_last_error() : strerror(errno));
  unlink(tmp);
  return 1;
}

static int cmd_export(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "export", export_flags, sizeof export_flags / sizeof *export_flags,
                            argc, argv, &help);
  const char *data = opt_str(&a, "--data"), *filter = opt_str(&a, "--filter");
  if (!rc && !help && (!data || a.n_pos)) {
    fprintf(stderr, "retro export: needs --data DIR and no other arguments (see --help)\n");
    rc = 2;
  }
  char err[512], *checked = NULL;
  if (!rc && !help && filter &&
      proto_filter_parse(filter, strlen(filter), &checked, err, sizeof err) != PROTO_OK) {
    fprintf(stderr, "retro export: --%s\n", err);
    rc = 2;
  }
  free(checked);
  if (rc || help) {
    if (help) {
      printf(
          "usage: retro export --data DIR [--out FILE] [--filter JSON]\n\n"
          "Writes every document as one JSON line {\"id\", \"text\", \"metadata\"} (doc_num\n"
          "order, one snapshot: a server may go on writing), what `retro index` reads\n"
          "from a .jsonl file: export, then index into a new --data directory with\n"
          "other models to move a corpus to them. Standard output unless --out.\n\n");
      usage_flags(stdout, export_flags, sizeof export_flags / sizeof *export_flags);
    }
    args_free(&a);
    return rc;
  }
  srv_export_stats st;
  const char *out = opt_str(&a, "--out");
  if (out) {
    rc = export_to_file(data, filter, out, &st);
  } else if (srv_export(data, filter, stdout, &st) != PROTO_OK) {
    fprintf(stderr, "retro export: %s\n", srv_last_error());
    rc = 1;
  }
  if (!rc)
    fprintf(stderr, "retro export: %llu documents, %llu bytes of text\n",
            (unsigned long long)st.docs, (unsigned long long)st.bytes);
  if (!rc && st.with_nul)
    fprintf(stderr,
            "retro export: %llu of them hold a NUL byte (first: \"%s\"), written as \\u0000, "
            "which retro index and the HTTP API refuse: those lines need their NULs removed\n",
            (unsigned long long)st.with_nul, st.first_with_nul);
  args_free(&a);
  return rc;
}

/* embed ----------------------------------------------------------------------------- */

static const cli_flag embed_flags[] = {
    {"--encoder", NULL, 1, "encoder model directory (default: built-in)"},
    {"--threads", NULL, 1, "encoder threads (default: all CPUs)"},
};

static int cmd_embed(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "embed", embed_flags, sizeof embed_flags / sizeof *embed_flags,
                            argc, argv, &help);
  bert *b = NULL;
  float *v = NULL;
  char *fallback = NULL;
  if (rc || help) {
    if (help) {
      printf(
          "usage: retro embed [--encoder DIR] TEXT...\n\n"
          "Prints {\"encoder\", \"dim\", \"vectors\": [[...], ...]} (L2-normalised).\n\n");
      usage_flags(stdout, embed_flags, sizeof embed_flags / sizeof *embed_flags);
    }
    goto leave;
  }
  long threads = 0;
  if (opt_int(&a, "--threads", 0, 1024, &threads)) {
    rc = 2;
    goto leave;
  }
  if (a.n_pos == 0) {
    fprintf(stderr, "retro embed: no TEXT given\n");
    rc = 2;
    goto leave;
  }
  const char *dir = opt_str(&a, "--encoder");
  if (!dir) {
    dir = fallback = srv_default_model_dir("encoder");
    if (!dir) {
      fprintf(stderr,
              "retro embed: no encoder: pass --encoder DIR (or set RETRO_ENCODER / "
              "RETRO_MODELS)\n");
      rc = 2;
      goto leave;
    }
  }
  bert_options bo = {.threads = (int)threads};
  if (bert_open(dir, &bo, &b) != PROTO_OK) {
    fprintf(stderr, "retro embed: %s\n", bert_last_error());
    rc = 1;
    goto leave;
  }
  uint32_t dim = bert_dim(b);
  v = malloc(a.n_pos * dim * sizeof *v);
  if (!v || bert_embed_texts(b, a.pos, NULL, a.n_pos, v) != PROTO_OK) {
    fprintf(stderr, "retro embed: %s\n", v ? bert_last_error() : "out of memory");
    rc = 1;
    goto leave;
  }
  /* compact rows: one vector per line */
  printf("{\"encoder\": ");
  json_t *fp = json_string(bert_fingerprint(b));
  json_dumpf(fp, stdout, JSON_ENCODE_ANY);
  json_decref(fp);
  printf(", \"dim\": %u, \"vectors\": [\n", (unsigned)dim);
  for (size_t i = 0; i < a.n_pos; i++) {
    printf("  [");
    for (uint32_t j = 0; j < dim; j++) printf("%s%.9g", j ? ", " : "", (double)v[i * dim + j]);
    printf("]%s\n", i + 1 < a.n_pos ? "," : "");
  }
  printf("]}\n");
leave:
  free(fallback);
  free(v);
  bert_close(b);
  args_free(&a);
  return rc;
}

/* generate ---------------------------------------------------------------------------- */

static const cli_flag gen_flags[] = {
    ENGINE_FLAGS,
    {"--max-tokens", "-n", 1, "tokens to generate (default 64)"},
    {"--temperature", "-t", 1, "sampling temperature, 0 = greedy (default 1)"},
    {"--top-k", NULL, 1, "keep the k most likely tokens (default off)"},
    {"--top-p", NULL, 1, "nucleus sampling mass (default 1 = off)"},
    {"--seed", NULL, 1, "random seed (default: random)"},
    {"--stop", NULL, 1, "stop sequence (repeatable)"},
    {"--k", "-k", 1, "neighbours per chunk (default: the model's)"},
    {"--exclude", NULL, 1, "never retrieve from this document id (repeatable)"},
    {"--include", NULL, 1, "retrieve only from this document id (repeatable)"},
    {"--no-retrieval", NULL, 0, "RETRO [OFF]: no neighbours"},
    {"--retrieval-mode", NULL, 1,
     "neighbours by dense, lexical or hybrid search (default lexical)"},
    {"--json", NULL, 0, "print the whole result as JSON instead of streaming"},
};

typedef struct gen_ui {
  int json;
} gen_ui;

static int gen_on_text(void *ctx, const char *p, size_t n) {
  gen_ui *ui = ctx;
  if (!ui->json) {
    fwrite(p, 1, n, stdout);
    fflush(stdout);
  }
  return interrupted;
}

static int gen_cancel(void *ctx) {
  (void)ctx;
  return interrupted;
}

static int cmd_generate_usage(void) {
  printf(
      "usage: retro generate --data DIR [options] PROMPT...\n\n"
      "Streams a RETRO completion of PROMPT (the arguments joined by spaces; `-` reads\n"
      "stdin) to stdout, then lists on stderr the neighbours retrieved for each chunk.\n\n");
  usage_flags(stdout, gen_flags, sizeof gen_flags / sizeof *gen_flags);
  return 0;
}

/* All of stdin in a malloc'd buffer (its length in *len); NULL when out of
 * memory or on a read error. */
static char *read_stdin(size_t *len) {
  size_t cap = 4096, n = 0, got;
  char *buf = malloc(cap);
  while (buf && (got = fread(buf + n, 1, cap - n, stdin)) > 0) {
    n += got;
    if (n == cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) free(buf);
      buf = nb;
    }
  }
  if (buf && ferror(stdin)) {
    free(buf);
    buf = NULL;
  }
  *len = n;
  return buf;
}

/* The positional arguments joined by spaces, or stdin for a lone `-`; the
 * caller frees it. Returns 0, or 1/2 after printing the problem. */
static int gen_read_prompt(const cli_args *a, char **prompt, size_t *len) {
  if (a->n_pos == 0) {
    fprintf(stderr, "retro generate: no PROMPT given\n");
    return 2;
  }
  size_t n = 0;
  char *p;
  if (a->n_pos == 1 && strcmp(a->pos[0], "-") == 0) {
    p = read_stdin(&n);
  } else {
    for (size_t i = 0; i < a->n_pos; i++) n += strlen(a->pos[i]) + 1;
    p = malloc(n + 1);
    n = 0;
    for (size_t i = 0; p && i < a->n_pos; i++) {
      size_t m = strlen(a->pos[i]);
      if (i) p[n++] = ' ';
      memcpy(p + n, a->pos[i], m);
      n += m;
    }
  }
  if (!p) {
    fprintf(stderr, "retro generate: cannot read the prompt (%s)\n",
            ferror(stdin) ? "read error" : "out of memory");
    return 1;
  }
  *prompt = p;
  *len = n;
  return 0;
}

/* Fills rq's sampling and retrieval settings from the flags (the prompt is
 * set by the caller; stop and exclude point into a). 0, or 2 after printing
 * a usage error. */
static int gen_request_from_args(const cli_args *a, srv_gen_request *rq) {
  long mt = 64, topk = 0, k = 0;
  double temp = 1.0, topp = 1.0;
  if (opt_int(a, "--max-tokens", 1, PROTO_MAX_GEN_TOKENS, &mt) ||
      opt_double(a, "--temperature", 0, 100, &temp) || opt_int(a, "--top-k", 0, 1000000, &topk) ||
      opt_double(a, "--top-p", 1e-9, 1, &topp) || opt_int(a, "--k", 0, 64, &k))
    return 2;
  const char *seed = opt_str(a, "--seed");
  if (seed) {
    char *end = NULL;
    errno = 0;
    unsigned long long sv = strtoull(seed, &end, 10);
    if (errno || !*seed || *end) {
      fprintf(stderr, "retro generate: --seed must be a non-negative integer\n");
      return 2;
    }
    rq->seed = sv;
    rq->has_seed = 1;
  }
  int mode = opt_mode(a, "--retrieval-mode");
  if (mode < 0) return 2;
  size_t si = flag_index(a, "--stop"), xi = flag_index(a, "--exclude"),
         ii = flag_index(a, "--include");
  rq->max_tokens = (int)mt;
  rq->temperature = temp;
  rq->top_k = (int)topk;
  rq->top_p = topp;
  rq->k = (int)k;
  rq->stop = a->values[si];
  rq->n_stop = a->n_values[si];
  rq->exclude_docs = a->values[xi];
  rq->n_exclude = a->n_values[xi];
  rq->include_docs = a->values[ii];
  rq->n_include = a->n_values[ii];
  rq->retrieval = !opt_set(a, "--no-retrieval");
  rq->retrieval_mode = (srv_search_mode)mode;
  return 0;
}

static int gen_print_json(const srv_gen_result *res) {
  proto_buf b;
  proto_buf_init(&b);
  proto_jw w;
  proto_jw_init(&w, &b);
  proto_jw_obj(&w);
  proto_jw_key(&w, "text");
  proto_jw_str(&w, res->text, res->text_len);
  proto_jw_key(&w, "finish_reason");
  proto_jw_cstr(&w, res->finish_reason);
  proto_jw_key(&w, "prompt_tokens");
  proto_jw_int(&w, res->prompt_tokens);
  proto_jw_key(&w, "completion_tokens");
  proto_jw_int(&w, res->completion_tokens);
  /* as a signed 64-bit number: jansson, which indents it, reads no larger */
  proto_jw_key(&w, "seed");
  proto_jw_int(&w, (int64_t)res->seed);
  proto_jw_key(&w, "chunks"); /* as the "chunks" of a completion's "retro" */
  proto_jw_arr(&w);
  for (size_t i = 0; i < res->n_chunks; i++) view_gen_chunk(&w, &res->chunks[i]);
  proto_jw_arr_end(&w);
  proto_jw_key(&w, "timings");
  proto_jw_obj(&w);
  proto_jw_key(&w, "first_token_s");
  proto_jw_num(&w, res->first_token_s);
  proto_jw_key(&w, "retrieval_s");
  proto_jw_num(&w, res->retrieval_s);
  proto_jw_key(&w, "total_s");
  proto_jw_num(&w, res->total_s);
  proto_jw_obj_end(&w);
  proto_jw_obj_end(&w);
  return print_view(&b);
}

/* After the streamed text: the totals and each chunk's neighbours (their
 * first 80 characters on one line) on stderr. */
static void gen_print_summary(const srv_gen_result *res) {
  printf("\n");
  fprintf(stderr,
          "\n-- finish: %s; %d prompt + %d completion tokens; %.2fs (%.1f tokens/s, "
          "retrieval %.2fs)\n",
          res->finish_reason, res->prompt_tokens, res->completion_tokens, res->total_s,
          res->total_s > 0 ? res->completion_tokens / res->total_s : 0.0, res->retrieval_s);
  for (size_t i = 0; i < res->n_chunks; i++) {
    const srv_gen_chunk *c = &res->chunks[i];
    fprintf(stderr, "-- chunk %d (%s): %zu neighbour(s)\n", c->chunk,
            c->in_prompt ? "prompt" : "generated", c->n);
    for (size_t j = 0; j < c->n; j++) {
      char prev[81];
      size_t m = 0;
      for (size_t x = 0; x < c->nb[j].text_len && m < 80; x++) {
        char ch = c->nb[j].text[x];
        prev[m++] = ch == '\n' || ch == '\t' || ch == '\r' ? ' ' : ch;
      }
      prev[m] = 0;
      fprintf(stderr, "   %.4f  %s  chunk %llu  \"%s\"\n", (double)c->nb[j].score, c->nb[j].doc_id,
              (unsigned long long)c->nb[j].chunk_id, prev);
    }
  }
}

static int cmd_generate(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "generate", gen_flags, sizeof gen_flags / sizeof *gen_flags, argc,
                            argv, &help);
  srv_engine *e = NULL;
  srv_gen_result res = {0};
  char *prompt = NULL;
  srv_gen_request rq;
  srv_gen_request_init(&rq);
  if (rc || help) {
    if (help) rc = cmd_generate_usage();
    goto leave;
  }
  if ((rc = gen_request_from_args(&a, &rq)) != 0 ||
      (rc = gen_read_prompt(&a, &prompt, &rq.prompt_len)) != 0 ||
      (rc = engine_from_args(&a, 1, 1, &e)) != 0)
    goto leave;
  rq.prompt = prompt;
  gen_ui ui = {.json = opt_set(&a, "--json")};
  srv_gen_callbacks cb = {.on_text = gen_on_text, .should_cancel = gen_cancel, .ctx = &ui};
  struct sigaction sa = {0};
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, NULL);
  proto_status s = srv_generate(e, &rq, &cb, &res);
  if (s != PROTO_OK && s != PROTO_ECANCELLED) {
    fprintf(stderr, "retro generate: %s\n", srv_last_error());
    rc = 1;
  } else if (ui.json) {
    rc = gen_print_json(&res);
  } else {
    gen_print_summary(&res);
    rc = s == PROTO_ECANCELLED ? 1 : 0;
  }
leave:
  srv_gen_result_free(&res);
  close_engine(e);
  free(prompt);
  args_free(&a);
  return rc;
}

/* neighbours -------------------------------------------------------------------------- */

static const cli_flag nb_flags[] = {
    ENGINE_FLAGS,
    {"--out", "-o", 1, "output directory (required)"},
    {"--k", "-k", 1, "neighbours per chunk (default 2)"},
    {"--include-same-doc", NULL, 0, "allow neighbours from the chunk's own document"},
    {"--nprobe", NULL, 1, "IVF lists to visit"},
    {"--ef-search", NULL, 1, "HNSW efSearch"},
};

static void nb_progress(void *ctx, uint64_t done, uint64_t total) {
  int *tty = ctx;
  if (*tty)
    fprintf(stderr, "\r\033[Kretro neighbours: %llu / %llu chunks", (unsigned long long)done,
            (unsigned long long)total);
  else
    fprintf(stderr, "retro neighbours: %llu / %llu chunks\n", (unsigned long long)done,
            (unsigned long long)total);
}

static int cmd_neighbours(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "neighbours", nb_flags, sizeof nb_flags / sizeof *nb_flags, argc,
                            argv, &help);
  srv_engine *e = NULL;
  if (rc || help) {
    if (help) {
      printf(
          "usage: retro neighbours --data DIR --out OUTDIR [-k K] [--include-same-doc]\n\n"
          "Dumps, for every stored chunk, its K nearest neighbour chunks (not from its own\n"
          "document unless --include-same-doc) as NumPy files in OUTDIR: chunk_ids.npy,\n"
          "doc_nums.npy, ordinals.npy, tokens.npy (n x 64, -1 padded), neighbours.npy\n"
          "(n x K chunk ids, -1 = none), scores.npy, docs.jsonl. See server/srv.h.\n\n");
      usage_flags(stdout, nb_flags, sizeof nb_flags / sizeof *nb_flags);
    }
    goto leave;
  }
  long k = 2, nprobe = 0, ef = 0;
  if (opt_int(&a, "--k", 1, PROTO_MAX_K, &k) || opt_int(&a, "--nprobe", 0, 1 << 20, &nprobe) ||
      opt_int(&a, "--ef-search", 0, 1 << 20, &ef)) {
    rc = 2;
    goto leave;
  }
  if (!opt_str(&a, "--out")) {
    fprintf(stderr, "retro neighbours: --out DIR is required\n");
    rc = 2;
    goto leave;
  }
  if ((rc = engine_from_args(&a, 0, 1, &e)) != 0) goto leave;
  int tty = isatty(2);
  srv_neighbours_options o = {.out_dir = opt_str(&a, "--out"),
                              .k = (int)k,
                              .include_same_doc = opt_set(&a, "--include-same-doc"),
                              .nprobe = (int)nprobe,
                              .ef_search = (int)ef,
                              .on_progress = nb_progress,
                              .ctx = &tty};
  uint64_t n = 0;
  double t0 = proto_now();
  if (srv_neighbours_dump(e, &o, &n) != PROTO_OK) {
    fprintf(stderr, "%sretro neighbours: %s\n", tty ? "\n" : "", srv_last_error());
    rc = 1;
    goto leave;
  }
  fprintf(stderr, "%sretro neighbours: %llu chunks, k = %ld, in %.1fs -> %s\n",
          tty ? "\r\033[K" : "", (unsigned long long)n, k, proto_now() - t0, o.out_dir);
leave:
  close_engine(e);
  args_free(&a);
  return rc;
}

/* eval ---------------------------------------------------------------------------------- */

static const cli_flag eval_flags[] = {
    ENGINE_FLAGS,
    {"--k", "-k", 1, "neighbours per chunk (default: the model's)"},
    {"--no-retrieval", NULL, 0, "RETRO [OFF]"},
    {"--exclude-self", NULL, 0, "never retrieve from the evaluated document itself"},
    {"--window", NULL, 1,
     "tokens per forward window, a multiple of 64 from 128 (default: the decoder's max_seq)"},
    {"--alpha", NULL, 1, "leakage filter threshold (default 0.2)"},
    {"--compare-off", NULL, 0, "also score the same tokens with retrieval off (off_bpb)"},
    {"--retrieval-mode", NULL, 1,
     "neighbours by dense, lexical or hybrid search (default lexical)"},
};

typedef struct eval_ctx {
  srv_engine *e;
  const srv_eval_options *o;
  srv_eval_result *acc;
  volatile sig_atomic_t *stop; /* set at the first document that fails: the figure is off */
} eval_ctx;

/* corpus_each's callback: one document's scores added to acc (the reader
 * prints a failure, naming the file or line). */
static proto_status eval_doc(void *ctx, const srv_doc *doc, const char *where) {
  (void)where;
  eval_ctx *x = ctx;
  proto_status s = srv_eval_doc(x->e, x->o, doc->id, doc->text, doc->text_len, x->acc);
  if (s != PROTO_OK) *x->stop = 1;
  return s;
}

/* retro eval's JSON: the totals of acc as bits per byte. */
static int print_eval_result(const srv_eval_options *o, long k, double alpha,
                             const srv_eval_result *acc) {
  json_t *out = json_object(), *lf = json_object();
  json_object_set_new(out, "retrieval", json_boolean(o->retrieval));
  json_object_set_new(out, "k", json_integer(k));
  json_object_set_new(out, "docs", json_integer((json_int_t)acc->docs));
  json_object_set_new(out, "tokens", json_integer((json_int_t)acc->tokens));
  json_object_set_new(out, "bytes", json_integer((json_int_t)acc->bytes));
  json_object_set_new(out, "bpb",
                      acc->bytes ? json_real(acc->bits / (double)acc->bytes) : json_null());
  json_object_set_new(lf, "alpha", json_real(alpha));
  json_object_set_new(lf, "chunks", json_integer((json_int_t)acc->chunks));
  json_object_set_new(lf, "chunks_kept", json_integer((json_int_t)acc->chunks_kept));
  json_object_set_new(
      lf, "bpb",
      acc->kept_bytes ? json_real(acc->kept_bits / (double)acc->kept_bytes) : json_null());
  if (o->compare_off && o->retrieval) {
    json_object_set_new(out, "off_bpb",
                        acc->bytes ? json_real(acc->off_bits / (double)acc->bytes) : json_null());
    json_object_set_new(
        lf, "off_bpb",
        acc->kept_bytes ? json_real(acc->kept_off_bits / (double)acc->kept_bytes) : json_null());
  }
  json_object_set_new(out, "leakage_filtered", lf);
  json_object_set_new(out, "seconds", json_real(acc->seconds));
  return print_json(out);
}

static int cmd_eval(int argc, char **argv) {
  cli_args a;
  int help, rc = args_parse(&a, "eval", eval_flags, sizeof eval_flags / sizeof *eval_flags, argc,
                            argv, &help);
  srv_engine *e = NULL;
  corpus fl = {0};
  if (rc || help) {
    if (help) {
      printf(
          "usage: retro eval --data DIR [options] PATH...\n\n"
          "Bits-per-byte of the decoder on the documents in PATH (files, directories,\n"
          ".jsonl), with retrieval from DIR's database (or --no-retrieval), plus the\n"
          "leakage-filtered figure (chunks whose longest common substring with their\n"
          "neighbours is <= alpha of the chunk). Prints JSON. With --compare-off the same\n"
          "windows are also scored with retrieval off (off_bpb, and leakage_filtered.off_bpb\n"
          "on the same kept tokens).\n\n");
      usage_flags(stdout, eval_flags, sizeof eval_flags / sizeof *eval_flags);
    }
    goto leave;
  }
  long k = 0, window = 0;
  double alpha = 0.2;
  if (opt_int(&a, "--k", 0, 64, &k) || opt_int(&a, "--window", 0, 1 << 20, &window) ||
      opt_double(&a, "--alpha", 0, 1, &alpha)) {
    rc = 2;
    goto leave;
  }
  if (a.n_pos == 0) {
    fprintf(stderr, "retro eval: no PATH given\n");
    rc = 2;
    goto leave;
  }
  for (size_t i = 0; i < a.n_pos; i++) {
    if ((rc = corpus_add_arg(&fl, "eval", a.pos[i])) != 0) goto leave;
  }
  if (fl.use_stdin) {
    fprintf(stderr, "retro eval: reads files, not stdin (-)\n");
    rc = 2;
    goto leave;
  }
  if ((rc = engine_from_args(&a, 1, 1, &e)) != 0) goto leave;
  srv_eval_options o = {.retrieval = !opt_set(&a, "--no-retrieval"),
                        .k = (int)k,
                        .window = (int)window,
                        .exclude_self = opt_set(&a, "--exclude-self"),
                        .leak_alpha = alpha,
                        .compare_off = opt_set(&a, "--compare-off"),
                        .retrieval_mode = (srv_search_mode)opt_mode(&a, "--retrieval-mode")};
  if ((int)o.retrieval_mode < 0) {
    rc = 2;
    goto leave;
  }
  srv_eval_result acc = {0};
  volatile sig_atomic_t stop = 0;
  eval_ctx x = {e, &o, &acc, &stop};
  int fatal = 0;
  if (corpus_each(&fl, "eval", eval_doc, &x, &fatal, &stop) != 0) {
    rc = 1;
    goto leave;
  }
  srv_info info; /* "k": the neighbours each chunk was given, the model's when not set */
  if (k == 0 && o.retrieval && srv_info_get(e, &info) == PROTO_OK && info.decoder_loaded)
    k = info.decoder.n_neighbours;
  rc = print_eval_result(&o, k, alpha, &acc);
leave:
  close_engine(e);
  corpus_free(&fl);
  args_free(&a);
  return rc;
}

/* main ------------------------------------------------------------------------------------ */

static void usage(FILE *f) {
  fprintf(f,
          "usage: retro COMMAND [OPTIONS] [ARGS]\n\n"
          "commands:\n"
          "  index       index documents (files, directories, JSONL, stdin)\n"
          "  chunks      write a corpus's chunks for embedding elsewhere (index --vectors)\n"
          "  search      nearest chunks of text queries (JSON)\n"
          "  info        database, models and index (JSON)\n"
          "  get         documents by id (JSON)\n"
          "  export      every document as JSONL, what index reads (to move to new models)\n"
          "  delete      delete documents by id\n"
          "  update      merge a metadata patch into documents, by id or by filter\n"
          "  embed       embed texts with the encoder (JSON)\n"
          "  generate    RETRO text completion with live retrieval\n"
          "  neighbours  dump every chunk's nearest neighbours for training\n"
          "  eval        bits-per-byte of the decoder, retrieval on or off\n"
          "  backup, restore, verify  a consistent copy; restore it; check a database\n"
          "  serve       run the HTTP server\n\n"
          "`retro COMMAND --help` describes each. Models: --encoder/--decoder, else the\n"
          "database's own, else $RETRO_ENCODER/$RETRO_DECODER, $RETRO_MODELS/{encoder,decoder},\n"
          "else model/default/ in the source tree.\n");
}

/* backup, restore, verify ------------------------------------------------------------ */

static const cli_flag ops_flags[] = {ENGINE_FLAGS};

static void say_line(void *ctx, const char *line) {
  fprintf(stderr, "retro %s: %s\n", (const char *)ctx, line);
}

/* retro backup --data DIR OUT | restore BACKUP --data DIR | verify --data DIR */
static int cmd_ops(const char *cmd, int argc, char **argv) {
  cli_args a;
  int help,
      rc = args_parse(&a, cmd, ops_flags, sizeof ops_flags / sizeof *ops_flags, argc, argv, &help);
  size_t want = strcmp(cmd, "verify") == 0 ? 0 : 1;
  const char *data = opt_str(&a, "--data");
  store *st = NULL;
  srv_engine *e = NULL;
  if (!rc && !help && (!data || a.n_pos != want)) {
    fprintf(stderr, "retro %s: needs --data DIR%s (see --help)\n", cmd,
            want ? (strcmp(cmd, "backup") == 0 ? " and OUT" : " and BACKUP") : "");
    rc = 2;
  }
  if (rc || help) {
    if (help)
      printf(
          "usage: retro backup --data DIR OUT\n"
          "       retro restore BACKUP --data DIR [--encoder E --decoder D]\n"
          "       retro verify --data DIR\n\n"
          "backup: a consistent copy of DIR's database (also while `retro serve` writes to\n"
          "it) in the new directory OUT, with a manifest (models, counts, SHA-256).\n"
          "restore: checks BACKUP against its manifest and copies it into DIR (absent or\n"
          "empty), then builds the indexes. verify: checks a database (every chunk's\n"
          "vector and token ids, every document's content hash, record counts,\n"
          "index.faiss and lexical.sqlite against it) or a backup\n"
          "(its files against the manifest); exit 1 naming each problem.\n");
    goto leave;
  }
  proto_status s;
  if (strcmp(cmd, "backup") == 0) {
    char path[4096];
    snprintf(path, sizeof path, "%s/db/data.mdb", data);
    if (access(path, F_OK) != 0) {
      fprintf(stderr, "retro backup: %s: no database there\n", data);
      rc = 1;
      goto leave;
    }
    double t0 = proto_now();
    char *manifest = NULL;
    store_options so = {.read_only_fallback = 1}; /* a copy only reads */
    if ((s = store_open(data, &so, &st)) != PROTO_OK ||
        (s = srv_backup(st, a.pos[0], &manifest)) != PROTO_OK) {
      fprintf(stderr, "retro backup: %s\n",
              s == PROTO_OK ? ""
              : st          ? srv_last_error()
                            : store_last_error());
      rc = 1;
      goto leave;
    }
    printf("%s\n", manifest);
    fprintf(stderr, "retro backup: %s in %.1fs\n", a.pos[0], proto_now() - t0);
    free(manifest);
  } else if (strcmp(cmd, "restore") == 0) {
    if ((s = srv_restore(a.pos[0], data)) != PROTO_OK) {
      fprintf(stderr, "retro restore: refused: %s\n", srv_last_error());
      rc = 1;
      goto leave;
    }
    if ((rc = engine_from_args(&a, 0, 0, &e)) != 0) { /* builds the indexes */
      fprintf(
          stderr,
          "retro restore: the database is restored; its indexes will be built at the next start\n");
      goto leave;
    }
    srv_info info;
    if (srv_info_get(e, &info) == PROTO_OK)
      fprintf(stderr, "retro restore: %s: %llu documents, %llu chunks, indexes built\n", data,
              (unsigned long long)info.store.docs, (unsigned long long)info.store.chunks);
  } else {
    uint64_t problems = 0;
    if ((s = srv_verify(data, say_line, (void *)"verify", &problems)) != PROTO_OK) {
      fprintf(stderr, "retro verify: %s\n", srv_last_error());
      rc = 1;
      goto leave;
    }
    if (problems) {
      fprintf(stderr, "retro verify: %llu problem(s)\n", (unsigned long long)problems);
      rc = 1;
    } else {
      printf("ok\n");
    }
  }
leave:
  store_close(st);
  close_engine(e);
  args_free(&a);
  return rc;
}

int srv_cli_main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "--version") == 0) {
    printf("retro %s\n", RETRO_VERSION);
    return 0;
  }
  if (strcmp(cmd, "serve") == 0) return srv_http_main(argc - 1, argv + 1);
  if (strcmp(cmd, "index") == 0) return cmd_index(argc - 1, argv + 1);
  if (strcmp(cmd, "chunks") == 0) return cmd_chunks(argc - 1, argv + 1);
  if (strcmp(cmd, "search") == 0) return cmd_search(argc - 1, argv + 1);
  if (strcmp(cmd, "info") == 0) return cmd_info(argc - 1, argv + 1);
  if (strcmp(cmd, "delete") == 0) return cmd_delete(argc - 1, argv + 1);
  if (strcmp(cmd, "update") == 0) return cmd_update(argc - 1, argv + 1);
  if (strcmp(cmd, "get") == 0) return cmd_get(argc - 1, argv + 1);
  if (strcmp(cmd, "export") == 0) return cmd_export(argc - 1, argv + 1);
  if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
  if (strcmp(cmd, "embed") == 0) return cmd_embed(argc - 1, argv + 1);
  if (strcmp(cmd, "generate") == 0) return cmd_generate(argc - 1, argv + 1);
  if (strcmp(cmd, "neighbours") == 0 || strcmp(cmd, "neighbors") == 0)
    return cmd_neighbours(argc - 1, argv + 1);
  if (!strcmp(cmd, "backup") || !strcmp(cmd, "restore") || !strcmp(cmd, "verify"))
    return cmd_ops(cmd, argc - 1, argv + 1);
  fprintf(stderr, "retro: unknown command \"%s\"\n\n", cmd);
  usage(stderr);
  return 2;
}
