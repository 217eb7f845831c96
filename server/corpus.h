/* corpus.h - a corpus as the CLI reads it: .txt/.md/.rst files (one
 * document each, id = the path relative to the directory given, or the path
 * as given for a file), directories walked recursively in sorted order,
 * .jsonl files and stdin with one {"id", "text", "metadata"} object a line.
 * One reader for `retro index`, `retro chunks` and the check of
 * `retro index --vectors`, so that all three see the same documents in the
 * same order (the vectors of a bulk file are matched to chunks by order). */
#ifndef RETRO_CORPUS_H
#define RETRO_CORPUS_H

#include "srv.h"

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

typedef struct corpus {
  char **paths, **ids; /* files in reading order, and each one's document id */
  size_t n, cap;
  uint64_t bytes; /* their sizes */
  int use_stdin;  /* `-` given: JSONL from stdin after the files */
} corpus;

/* Adds a path argument: a file, every indexable file under a directory, or
 * `-` for stdin; cmd names the subcommand in the message. Returns 0, or 1
 * after printing why. */
int corpus_add_arg(corpus *c, const char *cmd, const char *arg);
void corpus_free(corpus *c);

int corpus_is_jsonl(const char *path);

/* The largest document a file (or a JSON line) may hold, as the largest
 * --max-body `retro serve` takes: a path such as /dev/zero or a 30 GB log
 * fails with a message instead of reading until the machine is out of
 * memory. */
#define CORPUS_MAX_DOC_BYTES ((size_t)1 << 30)

/* Called once per document in order; `where` names it in messages (a path,
 * or "file.jsonl:3"). PROTO_OK, or a failure whose srv_last_error() the
 * reader prints after "retro CMD: WHERE: ". */
typedef proto_status (*corpus_fn)(void *ctx, const srv_doc *doc, const char *where);

/* Feeds every document to fn, in order, until *stop is set (may be NULL).
 * Unreadable files, bad JSON lines and fn failures are printed ("retro
 * CMD: ..."; nothing when cmd is NULL) and counted: returns their number. A failure of fn with
 * PROTO_EUNAVAIL, PROTO_ENOMEM or PROTO_EIO sets *fatal and ends the
 * reading. */
size_t corpus_each(const corpus *c, const char *cmd, corpus_fn fn, void *ctx, int *fatal,
                   volatile sig_atomic_t *stop);

#endif
