/* engine.c - the srv_engine object: opening the store, the models and the
 * index together (with the meta checks that keep a database tied to its
 * encoder and chunk tokenizer), and the read paths: info, documents,
 * chunks, search, embeddings, delete. What it does not: the ingest pipeline
 * (ingest.c), generation (generate.c), the neighbour dump (engine_nb.c),
 * anything about HTTP or terminals.
 */
#include "engine_priv.h"
#include "phrase.h"
#include "srv_config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

const char *srv_last_error(void) { return proto_err_get(); }

/* Paths --------------------------------------------------------------------- */

static int is_dir(const char *p) {
  struct stat sb;
  return p && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static char *path_join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", a, b);
  return p;
}

/* An absolute copy of p (realpath when it exists, else strdup). */
static char *abs_path(const char *p) {
  char *r = realpath(p, NULL);
  return r ? r : strdup(p);
}

/* The model directory for role ("encoder"/"decoder"): given, else the
 * database's recorded one, else $RETRO_ENCODER/$RETRO_DECODER, else
 * $RETRO_MODELS/role, else the built-in defaults. NULL when none exists
 * (or "none" was given/recorded: *none = 1). */
static char *resolve_model(const char *given, const char *recorded, const char *role, int *none) {
  *none = 0;
  if (given) {
    if (strcmp(given, "none") == 0) {
      *none = 1;
      return NULL;
    }
    return abs_path(given);
  }
  if (recorded) {
    if (strcmp(recorded, "none") == 0) {
      *none = 1;
      return NULL;
    }
    if (is_dir(recorded)) return abs_path(recorded);
  }
  const char *env = getenv(strcmp(role, "encoder") == 0    ? "RETRO_ENCODER"
                           : strcmp(role, "reranker") == 0 ? "RETRO_RERANKER"
                                                           : "RETRO_DECODER");
  if (env && *env) {
    if (strcmp(env, "none") == 0) {
      *none = 1;
      return NULL;
    }
    return abs_path(env);
  }
  const char *models = getenv("RETRO_MODELS");
  char *p = NULL;
  if (models && *models) {
    p = path_join(models, role);
    if (p && is_dir(p)) return p;
    free(p);
  }
  p = path_join(RETRO_SOURCE_ROOT "/model/default", role);
  if (p && is_dir(p)) return p;
  free(p);
  p = path_join(RETRO_DATADIR "/retrod/models", role);
  if (p && is_dir(p)) return p;
  free(p);
  return NULL;
}

char *srv_default_model_dir(const char *role) {
  int none = 0;
  if (!role || (strcmp(role, "encoder") != 0 && strcmp(role, "decoder") != 0)) return NULL;
  return resolve_model(NULL, NULL, role, &none);
}

/* pad_id / eos_id from a decoder's config.json (-1 when absent). */
static void read_decoder_ids(const char *dir, int32_t *pad, int32_t *eos) {
  *pad = -1;
  *eos = -1;
  char *p = path_join(dir, "config.json");
  if (!p) return;
  json_error_t jerr;
  json_t *root = json_load_file(p, 0, &jerr);
  free(p);
  if (!root) return;
  json_t *v = json_object_get(root, "pad_id");
  if (json_is_integer(v)) *pad = (int32_t)json_integer_value(v);
  v = json_object_get(root, "eos_id");
  if (json_is_integer(v)) *eos = (int32_t)json_integer_value(v);
  json_decref(root);
}

/* Meta ---------------------------------------------------------------------- */

/* Checks meta key against want; records it when absent. what names it. */
static proto_status meta_check(srv_engine *e, const char *key, const char *want, const char *what,
                               const char *fix) {
  char *have = NULL;
  proto_status s = store_meta_get(e->st, key, &have);
  if (s != PROTO_OK) return srv__fail(s, "reading meta %s: %s", key, store_last_error());
  if (have) {
    if (strcmp(have, want) != 0)
      s = srv__fail(PROTO_EMISMATCH,
                    "%s mismatch: database %s was built with %s \"%s\", this one is \"%s\"%s", what,
                    e->data_dir, what, have, want, fix);
    free(have);
    return s;
  }
  if (e->opt.read_only) return PROTO_OK;
  s = store_meta_put(e->st, key, want);
  if (s != PROTO_OK) return srv__fail(s, "writing meta %s: %s", key, store_last_error());
  return PROTO_OK;
}

static char *meta_get(srv_engine *e, const char *key) {
  char *v = NULL;
  if (store_meta_get(e->st, key, &v) != PROTO_OK) return NULL;
  return v;
}

/* Open / close -------------------------------------------------------------- */

/* Opens DIR/lexical.sqlite (bringing it up to date with the store). A
 * read-only engine uses the file as it is when it holds exactly the store's
 * live chunks, else builds a private copy in $TMPDIR that close removes. */
static proto_status open_lexical(srv_engine *e) {
  char *path = path_join(e->data_dir, "lexical.sqlite");
  if (!path) return srv__fail(PROTO_ENOMEM, "out of memory");
  proto_status s = lex_open(path, e->st, e->opt.read_only, &e->lx);
  if (s != PROTO_OK && e->opt.read_only) {
    const char *tmp = getenv("TMPDIR");
    char tpl[4096];
    snprintf(tpl, sizeof tpl, "%s/retro-lexical-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(tpl);
    if (fd < 0) {
      s = srv__fail(PROTO_EIO, "lexical index: cannot create a file in %s: %s",
                    tmp && *tmp ? tmp : "/tmp", strerror(errno));
    } else {
      close(fd);
      e->lex_tmp = strdup(tpl);
      if (!e->lex_tmp) s = srv__fail(PROTO_ENOMEM, "out of memory");
      else if ((s = lex_open(e->lex_tmp, e->st, 0, &e->lx)) != PROTO_OK)
        s = srv__fail(s, "building a lexical index: %s", lex_last_error());
    }
  } else if (s != PROTO_OK) {
    s = srv__fail(s, "opening the lexical index %s: %s", path, lex_last_error());
  }
  free(path);
  return s;
}

/* A zeroed engine with its locks made; NULL when out of memory. */
static srv_engine *engine_new(const srv_engine_options *o) {
  srv_engine *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->opt = *o;
  e->pad_id = e->eos_id = -1;
  e->lock_fd = -1;
  pthread_mutex_init(&e->gen_mu, NULL);
  pthread_cond_init(&e->gen_cv, NULL);
  pthread_mutex_init(&e->q_mu, NULL);
  pthread_cond_init(&e->q_cv, NULL);
  pthread_mutex_init(&e->sync_mu, NULL);
  return e;
}

/* A writing engine holds an exclusive lock on DATA/lock for its life, so a
 * second writer (another `retro serve`, a `retro index` beside a server)
 * stops at once instead of writing under an index it does not see. The lock
 * goes with the process, so a crash leaves none behind. A file system
 * without flock is used unlocked. */
static proto_status lock_data_dir(srv_engine *e) {
  char *path = path_join(e->data_dir, "lock");
  if (!path) return srv__fail(PROTO_ENOMEM, "out of memory");
  proto_status s = PROTO_OK;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    s = srv__fail(PROTO_EIO, "cannot open %s: %s", path, strerror(errno));
  } else if (flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
    char who[64] = "";
    ssize_t n = pread(fd, who, sizeof who - 1, 0);
    who[n > 0 ? n : 0] = 0;
    who[strcspn(who, "\n")] = 0;
    s = srv__fail(PROTO_ESTORE,
                  "%s is in use by another process that writes it (%s): stop it first, or "
                  "write through its HTTP API",
                  e->data_dir, *who ? who : "its pid unknown");
    close(fd);
  } else {
    char who[32];
    int n = snprintf(who, sizeof who, "pid %ld\n", (long)getpid());
    ssize_t w = ftruncate(fd, 0) == 0 ? pwrite(fd, who, (size_t)n, 0) : -1;
    (void)w; /* the pid is a note for a second writer's message: the lock holds without it */
    e->lock_fd = fd;
  }
  free(path);
  return s;
}

/* The data directory (made unless read-only) and the store in it. */
static proto_status open_store(srv_engine *e, const srv_engine_options *o) {
  if (!o->read_only && mkdir(o->data_dir, 0777) != 0 && errno != EEXIST)
    return srv__fail(PROTO_EIO, "cannot create %s: %s", o->data_dir, strerror(errno));
  if (!is_dir(o->data_dir))
    return srv__fail(PROTO_EIO, "data directory %s does not exist", o->data_dir);
  e->data_dir = abs_path(o->data_dir);
  if (!e->data_dir) return srv__fail(PROTO_ENOMEM, "out of memory");
  e->opt.data_dir = e->data_dir;
  proto_status s = o->read_only ? PROTO_OK : lock_data_dir(e);
  if (s != PROTO_OK) return s;
  store_options so = {.map_bytes = o->map_bytes,
                      .max_map_bytes = o->max_map_bytes,
                      .read_only_fallback = o->read_only};
  s = store_open(e->data_dir, &so, &e->st);
  if (s != PROTO_OK)
    return srv__fail(s, "opening the store in %s: %s", e->data_dir, store_last_error());
  return PROTO_OK;
}

/* The encoder: given, else the one the database recorded (rec), else the
 * defaults resolve_model looks for. */
static proto_status open_encoder(srv_engine *e, const srv_engine_options *o, const char *rec) {
  int none = 0;
  e->encoder_path = resolve_model(o->encoder_dir, rec, "encoder", &none);
  if (!e->encoder_path)
    return srv__fail(
        PROTO_EMODEL, "no encoder: pass --encoder DIR or set RETRO_MODELS (looked in %s and %s)",
        RETRO_SOURCE_ROOT "/model/default/encoder", RETRO_DATADIR "/retrod/models/encoder");
  bert_options bo = {.pooling = BERT_POOL_AUTO, .threads = o->threads};
  proto_status s = bert_open(e->encoder_path, &bo, &e->enc);
  if (s != PROTO_OK)
    return srv__fail(s, "loading the encoder from %s: %s", e->encoder_path, bert_last_error());
  e->dim = bert_dim(e->enc);
  return PROTO_OK;
}

/* The reranker: given, else the default one when one is installed; an
 * engine without one answers searches that ask to rerank with
 * PROTO_EUNAVAIL. */
static proto_status open_reranker(srv_engine *e, const srv_engine_options *o) {
  int none = 0;
  e->reranker_path = resolve_model(o->reranker_dir, NULL, "reranker", &none);
  (void)none;
  if (!e->reranker_path) return PROTO_OK; /* none installed, or "none" */
  proto_status s = rerank_open(e->reranker_path, o->threads, &e->rr);
  if (s != PROTO_OK)
    return srv__fail(s, "loading the reranker from %s: %s", e->reranker_path, rerank_last_error());
  return PROTO_OK;
}

/* The decoder at e->decoder_path, its shape checked; its tokenizer cuts
 * the chunks. */
static proto_status load_decoder(srv_engine *e, const srv_engine_options *o) {
  proto_status s = retro_open(e->decoder_path, o->threads, &e->dec);
  if (s != PROTO_OK)
    return srv__fail(s, "loading the decoder from %s: %s", e->decoder_path, retro_last_error());
  const retro_config *rc = retro_get_config(e->dec);
  if (rc->chunk_len != PROTO_CHUNK_TOKENS || rc->neighbour_len != PROTO_NEIGHBOUR_TOKENS)
    return srv__fail(PROTO_EMODEL, "decoder %s: chunk_len %d / neighbour_len %d, expected %d / %d",
                     e->decoder_path, rc->chunk_len, rc->neighbour_len, PROTO_CHUNK_TOKENS,
                     PROTO_NEIGHBOUR_TOKENS);
  e->ctok = retro_tokenizer(e->dec);
  if (!e->ctok)
    return srv__fail(PROTO_EMODEL, "decoder %s has no tokenizer (vocab.json + merges.txt)",
                     e->decoder_path);
  return PROTO_OK;
}

/* The decoder (or, without load_decoder, only its tokenizer) and the chunk
 * tokenizer that follows from it: the decoder's, else the encoder's. */
static proto_status open_decoder(srv_engine *e, const srv_engine_options *o, const char *rec) {
  int none = 0;
  proto_status s;
  e->decoder_path = resolve_model(o->decoder_dir, rec, "decoder", &none);
  /* a named decoder is never silently dropped (its absence would be
   * recorded as "none") */
  if (!e->decoder_path && !none && o->decoder_dir) return srv__fail(PROTO_ENOMEM, "out of memory");
  if (e->decoder_path && !is_dir(e->decoder_path))
    return srv__fail(PROTO_EMODEL, "decoder directory %s does not exist", e->decoder_path);
  if (!e->decoder_path) {
    e->ctok = bert_tokenizer(e->enc);
  } else {
    read_decoder_ids(e->decoder_path, &e->pad_id, &e->eos_id);
    if (o->load_decoder) {
      if ((s = load_decoder(e, o)) != PROTO_OK) return s;
    } else {
      if ((s = tok_open_dir(e->decoder_path, &e->own_tok)) != PROTO_OK)
        return srv__fail(s, "loading the decoder tokenizer from %s: %s", e->decoder_path,
                         tok_last_error());
      e->ctok = e->own_tok;
    }
  }
  e->embed_by_ids = strcmp(tok_fingerprint(e->ctok), tok_fingerprint(bert_tokenizer(e->enc))) == 0;
  srv__content_salt(e);
  if (e->eos_id < 0) {
    e->eos_id = tok_token_id(e->ctok, "<|endoftext|>");
    if (e->eos_id < 0) e->eos_id = tok_token_id(e->ctok, "</s>");
  }
  return PROTO_OK;
}

static proto_status put_model_paths(srv_engine *e) {
  proto_status s;
  if ((s = store_meta_put(e->st, "encoder_path", e->encoder_path)) != PROTO_OK ||
      (s = store_meta_put(e->st, "decoder_path", e->decoder_path ? e->decoder_path : "none")) !=
          PROTO_OK)
    return srv__fail(s, "writing meta: %s", store_last_error());
  return PROTO_OK;
}

/* Checks the models against what the database was built with (recording
 * them in a new one) and records the model paths. rec_enc: the recorded
 * encoder path, NULL in a new database. */
static proto_status check_models(srv_engine *e, const srv_engine_options *o, const char *rec_enc) {
  proto_status s;
  /* A new database records its model paths BEFORE its fingerprints (separate
   * transactions): a crash in between must not leave fingerprints without
   * the paths that later opens with no model named resolve them by. */
  if (!o->read_only && !rec_enc) {
    char *fp = meta_get(e, "encoder");
    s = fp ? PROTO_OK : put_model_paths(e);
    free(fp);
    if (s != PROTO_OK) return s;
  }
  char dimbuf[32], lenbuf[32];
  snprintf(dimbuf, sizeof dimbuf, "%u", (unsigned)e->dim);
  snprintf(lenbuf, sizeof lenbuf, "%d", PROTO_CHUNK_TOKENS);
  if ((s = meta_check(e, "encoder", bert_fingerprint(e->enc), "encoder",
                      " (use the same --encoder, or move the corpus to a new --data directory: "
                      "retro export, then retro index)")) != PROTO_OK ||
      (s = meta_check(e, "dim", dimbuf, "embedding dimension", "")) != PROTO_OK ||
      (s = meta_check(e, "chunk_tokenizer", tok_fingerprint(e->ctok), "chunk tokenizer",
                      " (the decoder's tokenizer made the chunks: use the same --decoder, or a "
                      "new --data directory)")) != PROTO_OK ||
      (s = meta_check(e, "chunk_len", lenbuf, "chunk length", "")) != PROTO_OK)
    return s;
  store_stats ss;
  if ((s = store_stats_get(e->st, &ss)) != PROTO_OK)
    return srv__fail(s, "store stats: %s", store_last_error());
  if (ss.dim && ss.dim != e->dim)
    return srv__fail(PROTO_EMISMATCH, "the database holds %u-d vectors, the encoder makes %u-d",
                     (unsigned)ss.dim, (unsigned)e->dim);
  return o->read_only ? PROTO_OK : put_model_paths(e);
}

/* The lexical index, then the FAISS index (in that order: the FAISS
 * index's open may save it, which clears the tombstones the lexical index
 * replays). */
static proto_status open_indexes(srv_engine *e, const srv_engine_options *o) {
  proto_status s = open_lexical(e);
  if (s != PROTO_OK) return s;
  char *ixpath = path_join(e->data_dir, "index.faiss");
  if (!ixpath) return srv__fail(PROTO_ENOMEM, "out of memory");
  idx_options io = {.factory = o->index_factory, .metric = IDX_METRIC_IP, .dim = e->dim};
  if ((s = idx_open(ixpath, e->st, &io, &e->ix)) != PROTO_OK)
    s = srv__fail(s, "opening the index %s: %s", ixpath, idx_last_error());
  free(ixpath);
  return s;
}

/* The generation slots, the queue's length and the longest sequence. */
static proto_status open_gen_slots(srv_engine *e, const srv_engine_options *o) {
  e->n_slots = o->gen_slots > 0 ? o->gen_slots : 2;
  e->max_waiting = o->gen_queue > 0 ? o->gen_queue : o->gen_queue < 0 ? 0 : 8;
  e->states = calloc((size_t)e->n_slots, sizeof *e->states);
  e->state_busy = calloc((size_t)e->n_slots, sizeof *e->state_busy);
  if (!e->states || !e->state_busy) return srv__fail(PROTO_ENOMEM, "out of memory");
  if (e->dec) {
    int ms = retro_get_config(e->dec)->max_seq;
    e->max_seq = o->gen_max_seq > 0 && o->gen_max_seq < ms ? o->gen_max_seq : ms;
  }
  return PROTO_OK;
}

proto_status srv_engine_open(const srv_engine_options *o, srv_engine **out) {
  if (!o || !out || !o->data_dir || !*o->data_dir)
    return srv__fail(PROTO_EINVAL, "srv_engine_open: no data directory");
  *out = NULL;
  srv_engine *e = engine_new(o);
  if (!e) return srv__fail(PROTO_ENOMEM, "out of memory");
  char *rec_enc = NULL, *rec_dec = NULL;
  proto_status s = open_store(e, o);
  if (s == PROTO_OK) {
    rec_enc = meta_get(e, "encoder_path");
    rec_dec = meta_get(e, "decoder_path");
  }
  if (s != PROTO_OK || (s = open_encoder(e, o, rec_enc)) != PROTO_OK ||
      (s = open_decoder(e, o, rec_dec)) != PROTO_OK || (s = open_reranker(e, o)) != PROTO_OK ||
      (s = check_models(e, o, rec_enc)) != PROTO_OK || (s = open_indexes(e, o)) != PROTO_OK ||
      (s = open_gen_slots(e, o)) != PROTO_OK ||
      (!o->read_only && (s = srv__pipe_start(e)) != PROTO_OK)) {
    e->opt.read_only = 1; /* do not save a half-open engine's index */
    srv_engine_close(e);
  } else {
    *out = e;
  }
  free(rec_enc);
  free(rec_dec);
  return s;
}

proto_status srv_engine_close(srv_engine *e) {
  if (!e) return PROTO_OK;
  proto_status saved = PROTO_OK;
  srv__pipe_stop(e);
  pthread_mutex_lock(&e->gen_mu);
  e->closing = 1;
  pthread_cond_broadcast(&e->gen_cv);
  while (e->busy > 0 || e->waiting > 0) pthread_cond_wait(&e->gen_cv, &e->gen_mu);
  pthread_mutex_unlock(&e->gen_mu);
  if (e->ix && !e->opt.read_only) saved = srv_engine_save(e);
  if (e->states)
    for (int i = 0; i < e->n_slots; i++) retro_state_free(e->states[i]);
  free(e->states);
  free(e->state_busy);
  idx_close(e->ix);
  lex_close(e->lx);
  if (e->lex_tmp) {
    unlink(e->lex_tmp);
    char side[4096];
    snprintf(side, sizeof side, "%s-wal", e->lex_tmp);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", e->lex_tmp);
    unlink(side);
    free(e->lex_tmp);
  }
  pthread_mutex_destroy(&e->sync_mu);
  retro_close(e->dec);
  tok_close(e->own_tok);
  bert_close(e->enc);
  rerank_close(e->rr);
  free(e->reranker_path);
  store_close(e->st);
  if (e->lock_fd >= 0) close(e->lock_fd); /* after the index is saved */
  pthread_mutex_destroy(&e->gen_mu);
  pthread_cond_destroy(&e->gen_cv);
  pthread_mutex_destroy(&e->q_mu);
  pthread_cond_destroy(&e->q_cv);
  free(e->data_dir);
  free(e->encoder_path);
  free(e->decoder_path);
  free(e);
  return saved;
}

/* lex_sync, its time counted for srv_info (the lexical index's share of
 * ingest, tests/bench/ingest); under sync_mu. */
static proto_status timed_lex_sync(srv_engine *e) {
  if (!e->lx) return PROTO_OK;
  double t0 = proto_now();
  proto_status s = lex_sync(e->lx);
  atomic_fetch_add(&e->lex_sync_ns, (uint64_t)((proto_now() - t0) * 1e9));
  return s;
}

proto_status srv__sync_indexes(srv_engine *e) {
  pthread_mutex_lock(&e->sync_mu);
  proto_status s = timed_lex_sync(e);
  if (s != PROTO_OK) s = srv__fail(s, "lexical index sync: %s", lex_last_error());
  else if ((s = idx_sync(e->ix)) != PROTO_OK) s = srv__fail(s, "index sync: %s", idx_last_error());
  pthread_mutex_unlock(&e->sync_mu);
  return s;
}

proto_status srv_engine_save(srv_engine *e) {
  if (!e) return srv__fail(PROTO_EINVAL, "srv_engine_save: NULL engine");
  if (e->opt.read_only) return srv__fail(PROTO_EFORBIDDEN, "the engine is read-only");
  pthread_mutex_lock(&e->sync_mu);
  proto_status s = timed_lex_sync(e);
  if (s != PROTO_OK) {
    s = srv__fail(s, "lexical index sync: %s", lex_last_error());
  } else {
    s = idx_sync(e->ix);
    if (s == PROTO_OK) s = idx_save(e->ix);
    if (s != PROTO_OK) s = srv__fail(s, "saving the index: %s", idx_last_error());
  }
  pthread_mutex_unlock(&e->sync_mu);
  return s;
}

store *srv_engine_store(srv_engine *e) { return e ? e->st : NULL; }
idx *srv_engine_index(srv_engine *e) { return e ? e->ix : NULL; }
bert *srv_engine_encoder(srv_engine *e) { return e ? e->enc : NULL; }
retro *srv_engine_decoder(srv_engine *e) { return e ? e->dec : NULL; }
const tok *srv_engine_chunk_tokenizer(srv_engine *e) { return e ? e->ctok : NULL; }
uint32_t srv_engine_dim(const srv_engine *e) { return e ? e->dim : 0; }

uint64_t srv_engine_index_floats(srv_engine *e) { return e ? idx_floats(e->ix) : 0; }

proto_status srv_info_get(srv_engine *e, srv_info *out) {
  if (!e || !out) return srv__fail(PROTO_EINVAL, "srv_info_get: NULL argument");
  memset(out, 0, sizeof *out);
  snprintf(out->encoder, sizeof out->encoder, "%s", bert_fingerprint(e->enc));
  snprintf(out->encoder_path, sizeof out->encoder_path, "%s", e->encoder_path);
  out->dim = e->dim;
  snprintf(out->decoder_path, sizeof out->decoder_path, "%s",
           e->decoder_path ? e->decoder_path : "");
  out->decoder_loaded = e->dec != NULL;
  if (e->dec) out->decoder = *retro_get_config(e->dec);
  if (e->rr) {
    snprintf(out->reranker, sizeof out->reranker, "%s", rerank_name(e->rr));
    snprintf(out->reranker_path, sizeof out->reranker_path, "%s", e->reranker_path);
  }
  snprintf(out->chunk_tokenizer, sizeof out->chunk_tokenizer, "%s", tok_fingerprint(e->ctok));
  out->chunk_tokenizer_kind = (int)tok_get_kind(e->ctok);
  out->embed_by_ids = e->embed_by_ids;
  proto_status s = idx_info_get(e->ix, &out->index);
  if (s != PROTO_OK) return srv__fail(s, "index info: %s", idx_last_error());
  out->has_lexical = e->lx != NULL;
  out->lexical_private = e->lex_tmp != NULL;
  if (e->lx && (s = lex_info_get(e->lx, &out->lexical)) != PROTO_OK)
    return srv__fail(s, "lexical index info: %s", lex_last_error());
  out->search_mode = e->opt.search_mode ? e->opt.search_mode : SRV_MODE_HYBRID;
  out->retrieval_mode = srv__retrieval_mode(e, SRV_MODE_DEFAULT);
  s = store_stats_get(e->st, &out->store);
  if (s != PROTO_OK) return srv__fail(s, "store stats: %s", store_last_error());
  out->ingested_docs = atomic_load(&e->n_ingested_docs);
  out->ingested_chunks = atomic_load(&e->n_ingested_chunks);
  out->ingest_errors = atomic_load(&e->n_ingest_errors);
  out->ingest_unchanged = atomic_load(&e->n_unchanged);
  out->storage_full = atomic_load(&e->n_nospace);
  out->ingest_embedded_chunks = atomic_load(&e->n_embedded_chunks);
  out->ingest_queue = atomic_load(&e->n_queue);
  out->deleted_docs = atomic_load(&e->n_deleted);
  out->searches = atomic_load(&e->n_searches);
  out->generations = atomic_load(&e->n_generations);
  out->generated_tokens = atomic_load(&e->n_gen_tokens);
  out->query_embed_calls = atomic_load(&e->n_query_calls);
  out->rerank_pairs = atomic_load(&e->n_rerank_pairs);
  out->exact_phrases = atomic_load(&e->n_exact_phrases);
  out->query_embed_texts = atomic_load(&e->n_query_texts);
  out->lexical_sync_seconds = (double)atomic_load(&e->lex_sync_ns) * 1e-9;
  pthread_mutex_lock(&e->gen_mu);
  out->gen_slots = e->dec ? e->n_slots : 0;
  out->gen_busy = e->busy;
  out->gen_waiting = e->waiting;
  pthread_mutex_unlock(&e->gen_mu);
  out->read_only = e->opt.read_only;
  return PROTO_OK;
}

/* Embeddings ------------------------------------------------------------------ */

proto_status srv__embed_chunks(srv_engine *e, const int32_t *const *ids, const size_t *lens,
                               const char *const *text, const size_t *text_lens, size_t n,
                               float *out) {
  if (n == 0) return PROTO_OK;
  proto_status s = e->embed_by_ids ? bert_embed_ids(e->enc, ids, lens, n, out)
                                   : bert_embed_texts(e->enc, text, text_lens, n, out);
  if (s != PROTO_OK) return srv__fail(s, "encoder: %s", bert_last_error());
  return PROTO_OK;
}

/* The encoder tokens of n texts with their specials, each capped at the
 * encoder's context ("usage" of /v1/embeddings). */
static uint64_t embedded_tokens(srv_engine *e, const char *const *texts, const size_t *lens,
                                size_t n) {
  const tok *bt = bert_tokenizer(e->enc);
  uint64_t total = 0;
  size_t maxt = (size_t)bert_max_tokens(e->enc);
  for (size_t i = 0; i < n; i++) {
    int32_t *ids = NULL;
    size_t m = 0;
    size_t len = lens ? lens[i] : strlen(texts[i]);
    if (tok_encode(bt, texts[i], len, &ids, &m) == PROTO_OK) {
      m += 2;
      total += m < maxt ? m : maxt;
    }
    free(ids);
  }
  return total;
}

proto_status srv_embed(srv_engine *e, const char *const *texts, const size_t *lens, size_t n,
                       int as_query, float *out, uint64_t *n_tokens) {
  if (!e || (!texts && n) || (!out && n))
    return srv__fail(PROTO_EINVAL, "srv_embed: NULL argument");
  if (n_tokens) *n_tokens = 0;
  if (n == 0) return PROTO_OK;
  srv_query_texts q;
  proto_status s = srv__query_texts(e, texts, lens, n, as_query, &q);
  if (s == PROTO_OK) s = srv__embed_queries(e, q.texts, q.lens, n, out, 0);
  if (s == PROTO_OK && n_tokens) *n_tokens = embedded_tokens(e, q.texts, q.lens, n);
  srv__query_texts_free(&q);
  return s;
}

/* Documents, chunks, delete --------------------------------------------------- */

/* After a store delete that removed n documents: counted, and their chunks
 * taken out of both indexes before the caller answers. */
static proto_status deleted_from_store(srv_engine *e, size_t n) {
  if (!n) return PROTO_OK;
  atomic_fetch_add(&e->n_deleted, n);
  return srv__sync_indexes(e);
}

proto_status srv_delete_many(srv_engine *e, const char *const *ids, size_t n, int *found) {
  if (!e || (n && (!ids || !found))) return srv__fail(PROTO_EINVAL, "srv_delete: NULL argument");
  if (e->opt.read_only) return srv__fail(PROTO_EFORBIDDEN, "the database is open read-only");
  proto_status s = store_delete_many(e->st, ids, n, found);
  if (s == PROTO_ENOSPACE) atomic_fetch_add(&e->n_nospace, 1);
  if (s != PROTO_OK)
    return n == 1 ? srv__fail(s, "deleting \"%s\": %s", ids[0], store_last_error())
                  : srv__fail(s, "deleting %zu documents: %s", n, store_last_error());
  size_t gone = 0;
  for (size_t i = 0; i < n; i++) gone += found[i] != 0;
  return deleted_from_store(e, gone);
}

proto_status srv_delete(srv_engine *e, const char *id, int *found) {
  int f = 0;
  if (found) *found = 0;
  if (!id) return srv__fail(PROTO_EINVAL, "srv_delete: NULL argument");
  proto_status s = srv_delete_many(e, &id, 1, &f);
  if (found && s == PROTO_OK) *found = f;
  return s;
}

void srv_document_free(srv_document *d) {
  if (!d) return;
  free(d->id);
  free(d->metadata_json);
  free(d->text);
  memset(d, 0, sizeof *d);
}

/* A metadata filter's JSON text (NULL: none) loaded to test documents with. */
static proto_status load_filter(const char *filter_json, proto_filter **out) {
  char msg[256];
  *out = NULL;
  if (!filter_json) return PROTO_OK;
  proto_status s = proto_filter_load(filter_json, out, msg, sizeof msg);
  return s == PROTO_OK ? PROTO_OK : srv__fail(s, "%s", msg);
}

/* Documents a filtered page looks at before it answers with what it has. */
#define LIST_SCAN_BUDGET 10000
/* Bytes of text after which a page listed with texts ends (it holds at
 * least one document), so a page stays a bounded answer whatever its
 * documents' sizes. */
#define LIST_TEXT_BUDGET ((size_t)4 << 20)

/* Replaces listed document d by itself read whole (text, metadata and token
 * count from one transaction). *kept = 0, and d freed, when it is no longer
 * as listed (deleted, or replaced: a replacement has a new doc_num and is
 * listed after) or its metadata no longer passes the filter. */
static proto_status list_with_text(srv_engine *e, const proto_filter *filter, srv_document *d,
                                   int *kept) {
  srv_document whole;
  proto_status s = srv_document_get(e, d->id, 1, &whole);
  *kept = s == PROTO_OK && whole.doc_num == d->doc_num &&
          proto_filter_passes(filter, whole.metadata_json);
  srv_document_free(d);
  if (*kept) *d = whole;
  else srv_document_free(&whole);
  return s == PROTO_ENOTFOUND ? PROTO_OK : s;
}

proto_status srv_documents_list(srv_engine *e, uint64_t after, size_t max, const char *filter_json,
                                int with_text, srv_document *out, size_t *n, uint64_t *next_after) {
  if (!e || !n || !next_after || !max || !out)
    return srv__fail(PROTO_EINVAL, "srv_documents_list: NULL argument");
  *n = 0;
  *next_after = 0;
  proto_filter *filter = NULL;
  proto_status s = load_filter(filter_json, &filter);
  if (s != PROTO_OK) return s;
  store_doc *sd = calloc(max, sizeof *sd);
  if (!sd) s = srv__fail(PROTO_ENOMEM, "out of memory");
  size_t scanned = 0, text_bytes = 0;
  int full = 0; /* the page's texts reached LIST_TEXT_BUDGET */
  for (int more = 1; s == PROTO_OK && more && !full && *n < max && scanned < LIST_SCAN_BUDGET;) {
    size_t got = 0, i = 0;
    if ((s = store_docs_list(e->st, after, max, sd, &got, &more)) != PROTO_OK) {
      s = srv__fail(s, "listing documents: %s", store_last_error());
      break;
    }
    for (; i < got && *n < max && !full && s == PROTO_OK; i++) {
      after = sd[i].doc_id;
      if (!proto_filter_passes(filter, sd[i].metadata_json)) {
        store_doc_free(&sd[i]);
        continue;
      }
      srv_document *d = &out[*n];
      *d = (srv_document){.doc_num = sd[i].doc_id,
                          .id = sd[i].id,
                          .metadata_json = sd[i].metadata_json,
                          .first_chunk = sd[i].first_chunk,
                          .n_chunks = sd[i].n_chunks};
      int kept = 1;
      if (with_text) s = list_with_text(e, filter, d, &kept);
      if (!kept) continue;
      ++*n;
      text_bytes += d->text_len;
      full = with_text && text_bytes >= LIST_TEXT_BUDGET;
    }
    *next_after = more || i < got ? after : 0; /* a full page may stop inside this one */
    for (; i < got; i++) store_doc_free(&sd[i]);
    scanned += got;
  }
  free(sd);
  proto_filter_free(filter);
  if (s != PROTO_OK) {
    while (*n) srv_document_free(&out[--*n]);
    *next_after = 0;
  }
  return s;
}

/* A document read whole, as the engine answers it (takes w's members). */
static void document_of(const store_doc_whole *w, srv_document *out) {
  *out = (srv_document){.doc_num = w->doc.doc_id,
                        .id = w->doc.id,
                        .metadata_json = w->doc.metadata_json,
                        .first_chunk = w->doc.first_chunk,
                        .n_chunks = w->doc.n_chunks,
                        .n_tokens = w->n_tokens,
                        .text = w->text,
                        .text_len = w->text_len};
}

proto_status srv_document_get(srv_engine *e, const char *id, int with_text, srv_document *out) {
  if (!e || !id || !out) return srv__fail(PROTO_EINVAL, "srv_document_get: NULL argument");
  memset(out, 0, sizeof *out);
  store_doc_whole w;
  proto_status s = store_doc_get_whole(e->st, id, with_text, &w);
  if (s == PROTO_ENOTFOUND) return srv__fail(s, "document \"%s\" not found", id);
  if (s != PROTO_OK) return srv__fail(s, "reading document \"%s\": %s", id, store_last_error());
  document_of(&w, out);
  return PROTO_OK;
}

proto_status srv_documents_get(srv_engine *e, const char *const *ids, size_t n, int with_text,
                               srv_document *out, int *found) {
  if (!e || (n && (!ids || !out || !found)))
    return srv__fail(PROTO_EINVAL, "srv_documents_get: NULL argument");
  store_doc_whole *w = calloc(n ? n : 1, sizeof *w);
  if (!w) return srv__fail(PROTO_ENOMEM, "out of memory");
  proto_status s = store_docs_get_whole(e->st, ids, n, with_text, w, found);
  for (size_t i = 0; i < n; i++) {
    if (s == PROTO_OK && found[i]) document_of(&w[i], &out[i]);
    else memset(&out[i], 0, sizeof out[i]);
  }
  free(w);
  if (s != PROTO_OK) return srv__fail(s, "reading documents: %s", store_last_error());
  return PROTO_OK;
}

void srv_chunk_free(srv_chunk *c) {
  if (!c) return;
  store_chunk_free(&c->c);
  free(c->doc_id);
  free(c->metadata_json);
  memset(c, 0, sizeof *c);
}

proto_status srv_chunk_get(srv_engine *e, uint64_t chunk_id, srv_chunk *out) {
  if (!e || !out) return srv__fail(PROTO_EINVAL, "srv_chunk_get: NULL argument");
  memset(out, 0, sizeof *out);
  proto_status s = store_chunk_get(e->st, chunk_id, &out->c);
  if (s == PROTO_ENOTFOUND)
    return srv__fail(s, "chunk %llu not found", (unsigned long long)chunk_id);
  if (s != PROTO_OK) return srv__fail(s, "reading chunk: %s", store_last_error());
  store_doc d = {0};
  s = store_doc_get_by_num(e->st, out->c.doc_id, &d);
  if (s != PROTO_OK) {
    srv_chunk_free(out);
    /* deleted between the two reads */
    if (s == PROTO_ENOTFOUND)
      return srv__fail(s, "chunk %llu not found", (unsigned long long)chunk_id);
    return srv__fail(s, "reading document of chunk: %s", store_last_error());
  }
  out->doc_id = d.id;
  out->metadata_json = d.metadata_json;
  d.id = d.metadata_json = NULL;
  store_doc_free(&d);
  return PROTO_OK;
}

/* Search ---------------------------------------------------------------------- */

/* Chunk headers read while filtering, keyed by chunk id (open addressing).
 * Only the document and ordinal are read here (store_snap_chunk_doc); tokens and
 * text are read later, and only for the hits returned with with_text. The
 * metadata filter's verdicts on documents live here too (DOC_VERDICT_KEY). */
typedef struct cent {
  uint64_t id; /* 0 = empty slot (chunk ids start at 1) */
  int live;
  uint64_t doc_id;
  uint32_t ordinal;
} cent;

typedef struct sctx {
  srv_engine *e;
  /* One read snapshot for every store read of the search, begun at the
   * first candidate: inside idx_search, so after the index lock (the order
   * store.h asks for); ended when the search returns. */
  store_snap snap;
  cent *tab;
  size_t cap, used;
  const uint64_t *excl; /* excluded doc nums, sorted */
  size_t n_excl;
  const uint64_t *incl; /* with only_incl: the only doc nums passed, sorted */
  size_t n_incl;
  int only_incl;
  srv__span *spans; /* the included documents' chunk ids, by first */
  size_t n_spans;
  lex_range *ranges;    /* the same spans, as the lexical index takes them */
  uint64_t incl_chunks; /* how many chunks they hold */
  proto_filter *filter; /* the metadata filter, or NULL */
  uint64_t skip_chunk;  /* a search by a chunk's vector leaves it out */
  proto_status err;
} sctx;

static size_t hash64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (size_t)x;
}

static cent *cache_find(sctx *c, uint64_t id) {
  size_t m = c->cap - 1, i = hash64(id) & m;
  while (c->tab[i].id && c->tab[i].id != id) i = (i + 1) & m;
  return &c->tab[i];
}

static int cache_grow(sctx *c) {
  size_t ncap = c->cap ? c->cap * 2 : 64; /* 2k + dead candidates: small */
  cent *old = c->tab;
  size_t ocap = c->cap;
  c->tab = calloc(ncap, sizeof *c->tab);
  if (!c->tab) {
    c->tab = old;
    return -1;
  }
  c->cap = ncap;
  for (size_t i = 0; i < ocap; i++)
    if (old[i].id) *cache_find(c, old[i].id) = old[i];
  free(old);
  return 0;
}

static void cache_free(sctx *c) {
  free(c->tab);
  c->tab = NULL;
  c->cap = c->used = 0;
}

static int u64_cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int u64_has(const uint64_t *v, size_t n, uint64_t x) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (v[mid] == x) return 1;
    if (v[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

/* Looks a chunk up (reading it from the store once). NULL on a store error. */
static cent *chunk_lookup(sctx *c, uint64_t id) {
  if ((c->used + 1) * 2 > c->cap && cache_grow(c) != 0) {
    c->err = srv__fail(PROTO_ENOMEM, "out of memory");
    return NULL;
  }
  cent *ent = cache_find(c, id);
  if (ent->id) return ent;
  proto_status s = c->snap.st ? PROTO_OK : store_snap_begin(c->e->st, &c->snap);
  if (s == PROTO_OK) s = store_snap_chunk_doc(&c->snap, id, &ent->doc_id, &ent->ordinal);
  if (s != PROTO_OK && s != PROTO_ENOTFOUND) {
    if (c->err == PROTO_OK) c->err = srv__fail(s, "reading chunk: %s", store_last_error());
    ent->doc_id = 0;
    ent->ordinal = 0;
    return NULL;
  }
  ent->id = id;
  ent->live = s == PROTO_OK;
  c->used++;
  return ent;
}

/* Deleting or updating by metadata applies the test of a search's filter
 * (a store_doc_test; filter is a proto_filter). */
int srv__passes_filter(void *filter, const char *metadata_json) {
  return proto_filter_passes(filter, metadata_json);
}

proto_status srv__where_filter(const char *filter_json, proto_filter **out) {
  proto_status s = load_filter(filter_json, out);
  if (s != PROTO_OK || !proto_filter_is_empty(*out)) return s;
  proto_filter_free(*out);
  *out = NULL;
  return srv__fail(PROTO_EINVAL, "filter: must be a JSON object with at least one key");
}

proto_status srv_delete_where(srv_engine *e, const char *filter_json, size_t *deleted) {
  if (deleted) *deleted = 0;
  if (!e || !filter_json) return srv__fail(PROTO_EINVAL, "srv_delete_where: NULL argument");
  if (e->opt.read_only) return srv__fail(PROTO_EFORBIDDEN, "the database is open read-only");
  proto_filter *filter = NULL;
  proto_status s = srv__where_filter(filter_json, &filter);
  if (s != PROTO_OK) return s;
  size_t n = 0;
  s = store_delete_where(e->st, srv__passes_filter, filter, &n);
  proto_filter_free(filter);
  if (s == PROTO_ENOSPACE) atomic_fetch_add(&e->n_nospace, 1);
  if (s != PROTO_OK) return srv__fail(s, "deleting by filter: %s", store_last_error());
  if (deleted) *deleted = n;
  return deleted_from_store(e, n);
}

/* The filter's verdicts on documents share the chunk cache, under their doc
 * num with this bit set (chunk ids never reach it): live = passes. */
#define DOC_VERDICT_KEY (1ULL << 63)

/* The filter's verdict on document num (its metadata is read once per
 * search). 0 on a store error, which is kept in c->err. */
static int doc_passes(sctx *c, uint64_t num) {
  if ((c->used + 1) * 2 > c->cap && cache_grow(c) != 0) {
    c->err = srv__fail(PROTO_ENOMEM, "out of memory");
    return 0;
  }
  cent *ent = cache_find(c, num | DOC_VERDICT_KEY);
  if (ent->id) return ent->live;
  store_doc d = {0};
  proto_status s = store_snap_doc_by_num(&c->snap, num, &d);
  if (s != PROTO_OK && s != PROTO_ENOTFOUND) {
    if (c->err == PROTO_OK) c->err = srv__fail(s, "reading document: %s", store_last_error());
    store_doc_free(&d);
    return 0;
  }
  ent->id = num | DOC_VERDICT_KEY;
  ent->live = s == PROTO_OK && proto_filter_passes(c->filter, d.metadata_json);
  c->used++;
  store_doc_free(&d);
  return ent->live;
}

static int search_filter(void *ctx, int64_t chunk_id) {
  sctx *c = ctx;
  if (chunk_id <= 0 || (uint64_t)chunk_id == c->skip_chunk) return 0;
  cent *ent = chunk_lookup(c, (uint64_t)chunk_id);
  if (!ent || !ent->live) return 0;
  uint64_t doc = ent->doc_id; /* ent may move when doc_passes grows the cache */
  if (u64_has(c->excl, c->n_excl, doc)) return 0;
  if (c->only_incl && !u64_has(c->incl, c->n_incl, doc)) return 0;
  return !c->filter || doc_passes(c, doc);
}

void srv_search_result_free(srv_search_result *r) {
  if (!r) return;
  for (size_t q = 0; r->queries && q < r->nq; q++) {
    srv_hits *h = &r->queries[q];
    for (size_t i = 0; h->hits && i < h->n; i++) {
      srv_hit *x = &h->hits[i];
      free(x->doc_id);
      free(x->metadata_json);
      free(x->text);
      free(x->next_text);
      free(x->tokens);
      free(x->next_tokens);
      free(x->context);
      free(x->vector);
    }
    free(h->hits);
  }
  free(r->queries);
  memset(r, 0, sizeof *r);
}

static int span_cmp(const void *a, const void *b) {
  const srv__span *x = a, *y = b;
  return (x->first > y->first) - (x->first < y->first);
}

/* Sorts n spans by their first chunk and drops repeats; how many are left. */
static size_t unique_spans(srv__span *s, size_t n) {
  if (n == 0) return 0;
  qsort(s, n, sizeof *s, span_cmp);
  size_t m = 1;
  for (size_t i = 1; i < n; i++)
    if (s[i].first != s[m - 1].first) s[m++] = s[i];
  return m;
}

/* Resolves external ids to sorted doc nums (unknown ids are ignored), and
 * when spans is not NULL their chunk ids (*spans, n_out of them, in no
 * particular order). */
static proto_status doc_nums(srv_engine *e, const char *const *ids, size_t n, uint64_t **out,
                             size_t *n_out, srv__span **spans) {
  *out = NULL;
  *n_out = 0;
  if (n == 0) return PROTO_OK;
  uint64_t *v = malloc(n * sizeof *v);
  srv__span *sp = spans ? malloc(n * sizeof *sp) : NULL;
  if (!v || (spans && !sp)) {
    free(v);
    free(sp);
    return srv__fail(PROTO_ENOMEM, "out of memory");
  }
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    store_doc d = {0};
    proto_status s = store_doc_get(e->st, ids[i], &d);
    if (s == PROTO_OK && sp) sp[m] = (srv__span){d.first_chunk, d.n_chunks};
    if (s == PROTO_OK) v[m++] = d.doc_id;
    store_doc_free(&d);
    if (s != PROTO_OK && s != PROTO_ENOTFOUND) {
      free(v);
      free(sp);
      return srv__fail(s, "reading document \"%s\": %s", ids[i], store_last_error());
    }
  }
  if (spans) *spans = sp;
  qsort(v, m, sizeof *v, u64_cmp);
  *out = v;
  *n_out = m;
  return PROTO_OK;
}

/* Per-request cache of documents (external id + metadata by doc num). */
typedef struct dent {
  uint64_t num;
  char *id, *meta;
} dent;

/* Fusion ------------------------------------------------------------------------
 * A hybrid search takes the best HYBRID_CANDIDATES chunks (at least k) of
 * each list and fuses their ranks (weighted reciprocal rank fusion):
 *   fused = alpha / (60 + dense rank) + (1 - alpha) / (60 + lexical rank)
 * a list the chunk is not in adding nothing. Chosen on the tuning half of
 * tests/bench/retrieval over score fusion (each list's scores normalised by
 * its best, or min-max), and alpha 0.5 over 0.3-0.7 (docs/RETRIEVAL.md).
 * Ranks need no common scale, which BM25 and cosine
 * scores lack. The dense score of a lexical candidate is computed from its
 * stored vector, so every hit reports both scores. Each list is cut at 20:
 * with 50, a chunk deep in both lists (35th and 37th) outranked the top of
 * either; on the tuning half 20 is as good as 50 and faster
 * (tests/bench/retrieval/fusion.py, depths 10-50). */
enum { HYBRID_CANDIDATES = 20, RRF_K = 60 };
#define HYBRID_ALPHA_DEFAULT 0.5f

/* When no alpha is asked for, a query whose best BM25 chunk stands out is
 * trusted to its keywords: if the best lexical score is more than
 * LEX_CONFIDENT_MARGIN (relative) above the tenth best, alpha is
 * HYBRID_ALPHA_CONFIDENT. Pasted error lines and exact identifiers look like
 * that; questions and paraphrases do not. Chosen on the tuning half
 * (tests/bench/retrieval/fusion.py, margins 0.3-0.5 x alphas 0.2-0.3;
 * docs/RETRIEVAL.md). */
#define LEX_CONFIDENT_MARGIN 0.4f
#define HYBRID_ALPHA_CONFIDENT 0.2f

float srv__hybrid_alpha(float asked, const float *lsc, size_t nl) {
  if (asked > 0) return asked;
  if (nl >= 10 && lsc[0] > 0 && (lsc[0] - lsc[9]) / lsc[0] > LEX_CONFIDENT_MARGIN)
    return HYBRID_ALPHA_CONFIDENT;
  return HYBRID_ALPHA_DEFAULT;
}

typedef struct cand {
  int64_t id;
  float fused, dense, lexical;
  int drank, lrank;
  float first; /* reranked (rank0 > 0): fused is the reranker's relevance,
                  this the mode's score */
  int rank0;   /* reranked: 1-based rank before; else 0 */
  int phrase;  /* hybrid: holds the query word for word, put first (pin_phrase) */
} cand;

/* Equal fused scores (at alpha 0.5 the dense list's first and the lexical
 * list's first tie exactly) go to the higher dense score: on the tuning half
 * MRR@10 0.578 -> 0.593 against breaking them by chunk id, and the README's
 * "How do I open a file for appending?" gets its answer first
 * (tests/bench/retrieval/fusion.py). */
static int cand_by_fused(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->fused != y->fused) return x->fused > y->fused ? -1 : 1;
  if (x->dense != y->dense) return x->dense > y->dense ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

static float dot(const float *a, const float *b, size_t n) {
  float s = 0;
  for (size_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/* Fuses one query's lists (dense: nd ids/scores, lexical: nl) into the best k
 * candidates (out, k entries; *n_out of them filled). */
static proto_status fuse(srv_engine *e, const float *query, float alpha, const int64_t *dids,
                         const float *dsc, size_t nd, const int64_t *lids, const float *lsc,
                         size_t nl, size_t k, cand *out, size_t *n_out) {
  size_t n = 0;
  cand *all = malloc((nd + nl) * sizeof *all);
  float *vec = malloc(e->dim * sizeof *vec);
  if (!all || !vec) {
    free(all);
    free(vec);
    return srv__fail(PROTO_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < nd && dids[i] > 0; i++)
    all[n++] = (cand){.id = dids[i], .dense = dsc[i], .drank = (int)i + 1};
  size_t n_dense = n;
  for (size_t j = 0; j < nl; j++) {
    size_t i = 0;
    while (i < n_dense && all[i].id != lids[j]) i++;
    if (i == n_dense) {
      all[n] = (cand){.id = lids[j]};
      proto_status s = store_vector_get(e->st, (uint64_t)lids[j], vec);
      if (s == PROTO_ENOTFOUND) continue; /* deleted meanwhile */
      if (s != PROTO_OK) {
        free(all);
        free(vec);
        return srv__fail(s, "reading a vector: %s", store_last_error());
      }
      all[n].dense = dot(query, vec, e->dim);
      i = n++;
    }
    all[i].lexical = lsc[j];
    all[i].lrank = (int)j + 1;
  }
  for (size_t i = 0; i < n; i++)
    all[i].fused = alpha * (all[i].drank ? 1.0f / (RRF_K + all[i].drank) : 0) +
                   (1 - alpha) * (all[i].lrank ? 1.0f / (RRF_K + all[i].lrank) : 0);
  qsort(all, n, sizeof *all, cand_by_fused);
  *n_out = n < k ? n : k;
  memcpy(out, all, *n_out * sizeof *out);
  free(all);
  free(vec);
  return PROTO_OK;
}

/* Exact phrases: the first of the lexical list's first PHRASE_LEXICAL_LOOK
 * chunks that holds the whole query word for word (phrase.h: five words or
 * more; with the chunk before it and its continuation, so that a phrase a
 * chunk boundary cuts counts) is put first by a hybrid search, its fused
 * score raised by PHRASE_BOOST (above any fused score, so that scores still
 * fall down the list). A pasted passage or error line asks where it comes
 * from: on 300 passages of 12 words quoted from random places of the corpus
 * their document came first for 0.837 of them by the fusion alone, 0.953
 * looking at the lexical first only, 0.970 at its first three (lexical
 * alone 0.920); 3 of the 204 tuning queries hold such a phrase and none
 * changed (tests/bench/retrieval, docs/RETRIEVAL.md). */
#define PHRASE_BOOST 1.0f
enum { PHRASE_LEXICAL_LOOK = 3 };

/* Whether chunk id (ordinal ord) holds the query, as phrase_touches says. */
static proto_status chunk_holds(sctx *c, const char *query, size_t qlen, uint64_t id, uint32_t ord,
                                int *holds) {
  store_chunk ch = {0}, prev = {0};
  *holds = 0;
  proto_status s = store_snap_chunk_get(&c->snap, id, &ch);
  if (s == PROTO_OK && ord > 0) { /* a document's chunks have consecutive ids */
    s = store_snap_chunk_get(&c->snap, id - 1, &prev);
    if (s == PROTO_OK && prev.doc_id != ch.doc_id) {
      store_chunk_free(&prev);
      memset(&prev, 0, sizeof prev);
    }
  }
  if (s == PROTO_OK)
    *holds = phrase_touches(query, qlen, prev.text ? prev.text : "", prev.text_len, ch.text,
                            ch.text_len, ch.next_text ? ch.next_text : "", ch.next_text_len);
  store_chunk_free(&ch);
  store_chunk_free(&prev);
  if (s == PROTO_ENOTFOUND) return PROTO_OK; /* deleted meanwhile */
  return s == PROTO_OK ? s : srv__fail(s, "reading chunk: %s", store_last_error());
}

static proto_status pin_phrase(sctx *c, const char *query, size_t qlen, const int64_t *lids,
                               size_t nl, cand *cq, size_t n) {
  if (phrase_words(query, qlen) < PHRASE_MIN_WORDS) return PROTO_OK;
  for (size_t j = 0; j < nl && j < PHRASE_LEXICAL_LOOK; j++) {
    size_t at = 0;
    while (at < n && cq[at].id != lids[j]) at++;
    cent *ent = at < n ? chunk_lookup(c, (uint64_t)lids[j]) : NULL;
    if (at == n || (ent && !ent->live)) continue;
    if (!ent) return c->err;
    int holds = 0;
    proto_status s = chunk_holds(c, query, qlen, (uint64_t)lids[j], ent->ordinal, &holds);
    if (s != PROTO_OK) return s;
    if (!holds) continue;
    cand pinned = cq[at];
    pinned.fused += PHRASE_BOOST;
    pinned.phrase = 1;
    atomic_fetch_add(&c->e->n_exact_phrases, 1);
    memmove(cq + 1, cq, at * sizeof *cq);
    cq[0] = pinned;
    return PROTO_OK;
  }
  return PROTO_OK;
}

static const char *const MODE_NAMES[] = {NULL, "dense", "lexical", "hybrid"};

/* The default neighbours are lexical: on the held-out documents RETRO's
 * bits per byte were lowest with them (eval_c.sh; docs/MODELS.md). */
srv_search_mode srv__retrieval_mode(const srv_engine *e, srv_search_mode requested) {
  if (requested != SRV_MODE_DEFAULT) return requested;
  if (e->opt.retrieval_mode != SRV_MODE_DEFAULT) return e->opt.retrieval_mode;
  return e->lx ? SRV_MODE_LEXICAL : SRV_MODE_DENSE;
}

const char *srv_mode_name(srv_search_mode m) {
  return m >= SRV_MODE_DENSE && m <= SRV_MODE_HYBRID ? MODE_NAMES[m] : NULL;
}

srv_search_mode srv_mode_parse(const char *name) {
  for (int m = SRV_MODE_DENSE; name && m <= SRV_MODE_HYBRID; m++)
    if (strcmp(name, MODE_NAMES[m]) == 0) return (srv_search_mode)m;
  return SRV_MODE_DEFAULT;
}

static size_t candidates_per_list(srv_search_mode mode, size_t k) {
  return mode == SRV_MODE_HYBRID && k < HYBRID_CANDIDATES ? HYBRID_CANDIDATES : k;
}

/* A search with include_docs naming at most this many chunks scores them
 * from their stored vectors (include_search.c) instead of searching the
 * index with a filter, and searches the lexical index within their chunk
 * ids (lex_search_in): exact whatever the index, and it reads what they
 * hold, not a pass over a large index. */
#define INCLUDE_DIRECT_MAX_CHUNKS 100000

/* Whether a search reads its named documents directly: their vectors for
 * the dense list, and the lexical index within their chunk ids. */
static int include_direct(const sctx *c) {
  return c->only_incl && c->incl_chunks <= INCLUDE_DIRECT_MAX_CHUNKS;
}

/* A hybrid search of one text without a filter or excluded documents (with
 * named ones, within their chunk ids) runs
 * its lexical search on a thread of its own while the query is embedded on
 * the calling thread alone: the two take about as long on the default
 * corpus. The thread is bound to the CPUs other than the caller's: left to
 * the scheduler, it started late on the caller's CPU and the two halves ran
 * one after the other (docs/BENCHMARKS.md, hybrid latency). Its hits are
 * checked against the store afterwards (deleted chunks dropped). */
typedef struct lex_job {
  srv_engine *e;
  const char *text;
  int within; /* include_docs: only within these chunk ids */
  const lex_range *ranges;
  size_t n_ranges;
  size_t len, nc, n;
  float *scores;
  int64_t *ids;
  proto_status s;
  char err[256];
  pthread_t thread;
  int started;
} lex_job;

static void *lex_job_run(void *arg) {
  lex_job *j = arg;
  j->s = j->within ? lex_search_in(j->e->lx, j->text, j->len, (int)j->nc, j->ranges, j->n_ranges,
                                   NULL, NULL, j->scores, j->ids, &j->n)
                   : lex_search(j->e->lx, j->text, j->len, (int)j->nc, NULL, NULL, j->scores,
                                j->ids, &j->n);
  if (j->s != PROTO_OK) snprintf(j->err, sizeof j->err, "lexical search: %s", lex_last_error());
  return NULL;
}

static void lex_job_start(lex_job *j, srv_engine *e, const srv_search_request *rq,
                          srv_search_mode mode, size_t k, const sctx *c) {
  memset(j, 0, sizeof *j);
  if (mode != SRV_MODE_HYBRID || rq->n_texts != 1 || rq->n_vectors || rq->filter_json ||
      rq->n_exclude || (rq->n_include && !include_direct(c)) || rq->group_size > 0)
    return;
  j->e = e;
  j->within = rq->n_include > 0; /* no ranges (no document found): nothing */
  j->ranges = c->ranges;
  j->n_ranges = c->n_spans;
  j->text = rq->texts[0];
  j->len = rq->text_lens ? rq->text_lens[0] : strlen(rq->texts[0]);
  j->nc = candidates_per_list(mode, k);
  j->scores = malloc(j->nc * sizeof *j->scores);
  j->ids = malloc(j->nc * sizeof *j->ids);
  pthread_attr_t attr;
  if (!j->scores || !j->ids || pthread_attr_init(&attr) != 0) return;
  cpu_set_t cpus;
  int me = sched_getcpu();
  if (me >= 0 && sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_ISSET(me, &cpus) &&
      CPU_COUNT(&cpus) > 1) {
    CPU_CLR(me, &cpus);
    pthread_attr_setaffinity_np(&attr, sizeof cpus, &cpus);
  }
  if (pthread_create(&j->thread, &attr, lex_job_run, j) == 0) j->started = 1;
  pthread_attr_destroy(&attr);
}

/* Waits for the job; 1 when it ran (its hits are then in j), 0 when not. */
static int lex_job_join(lex_job *j) {
  if (!j->started) return 0;
  pthread_join(j->thread, NULL);
  j->started = 0;
  return 1;
}

static void lex_job_free(lex_job *j) {
  lex_job_join(j);
  free(j->scores);
  free(j->ids);
}

/* The candidates of every query, k per query (cands[q * k + j]; n[q] filled). */
static proto_status find_candidates(srv_engine *e, const srv_search_request *rq,
                                    srv_search_mode mode, const float *queries, size_t nq, size_t k,
                                    sctx *c, lex_job *job, cand *cands, size_t *n) {
  size_t nc = candidates_per_list(mode, k);
  float *dsc = NULL, *lsc = NULL;
  int64_t *dids = NULL, *lids = NULL;
  size_t *nl = NULL;
  proto_status s = PROTO_OK;
  if (mode != SRV_MODE_LEXICAL) {
    dsc = malloc(nq * nc * sizeof *dsc);
    dids = malloc(nq * nc * sizeof *dids);
    if (!dsc || !dids) {
      s = srv__fail(PROTO_ENOMEM, "out of memory");
      goto leave;
    }
    idx_search_params sp = {.nprobe = rq->nprobe, .ef_search = rq->ef_search};
    if (include_direct(c))
      s = srv__include_search(e->st, e->dim, c->spans, c->n_spans, queries, nq, nc, search_filter,
                              c, dsc, dids);
    else if ((s = idx_search(e->ix, queries, nq, (int)nc, &sp, search_filter, c, dsc, dids)) !=
             PROTO_OK)
      s = srv__fail(s, "index search: %s", idx_last_error());
    if (s != PROTO_OK) goto leave;
    if (c->err != PROTO_OK) {
      s = c->err;
      goto leave;
    }
  }
  if (mode != SRV_MODE_DENSE) {
    lsc = malloc(nq * nc * sizeof *lsc);
    lids = malloc(nq * nc * sizeof *lids);
    nl = calloc(nq, sizeof *nl);
    if (!lsc || !lids || !nl) {
      s = srv__fail(PROTO_ENOMEM, "out of memory");
      goto leave;
    }
    int joined = lex_job_join(job);
    if (joined) { /* one query, searched meanwhile: keep the live hits */
      if (job->s != PROTO_OK) {
        s = srv__fail(job->s, "%s", job->err);
        goto leave;
      }
      for (size_t j = 0; j < job->n; j++)
        if (search_filter(c, job->ids[j])) {
          lids[nl[0]] = job->ids[j];
          lsc[nl[0]++] = job->scores[j];
        }
      if (c->err != PROTO_OK) {
        s = c->err;
        goto leave;
      }
    }
    for (size_t q = 0; q < nq && !joined; q++) {
      size_t len = rq->text_lens ? rq->text_lens[q] : strlen(rq->texts[q]);
      s = include_direct(c)
              ? lex_search_in(e->lx, rq->texts[q], len, (int)nc, c->ranges, c->n_spans,
                              search_filter, c, lsc + q * nc, lids + q * nc, &nl[q])
              : lex_search(e->lx, rq->texts[q], len, (int)nc, search_filter, c, lsc + q * nc,
                           lids + q * nc, &nl[q]);
      if (s != PROTO_OK) {
        s = srv__fail(s, "lexical search: %s", lex_last_error());
        goto leave;
      }
      if (c->err != PROTO_OK) {
        s = c->err;
        goto leave;
      }
    }
  }
  float asked = rq->alpha > 0 ? rq->alpha : e->opt.hybrid_alpha;
  for (size_t q = 0; q < nq; q++) {
    cand *cq = cands + q * k;
    n[q] = 0;
    if (mode == SRV_MODE_HYBRID) {
      float alpha = srv__hybrid_alpha(asked, lsc + q * nc, nl[q]);
      s = fuse(e, queries + q * e->dim, alpha, dids + q * nc, dsc + q * nc, nc, lids + q * nc,
               lsc + q * nc, nl[q], k, cq, &n[q]);
      if (s == PROTO_OK && nl[q] > 0 && rq->n_texts)
        s = pin_phrase(c, rq->texts[q], rq->text_lens ? rq->text_lens[q] : strlen(rq->texts[q]),
                       lids + q * nc, nl[q], cq, n[q]);
      if (s != PROTO_OK) goto leave;
    } else if (mode == SRV_MODE_DENSE) {
      for (size_t j = 0; j < k && dids[q * k + j] > 0; j++, n[q]++)
        cq[j] = (cand){.id = dids[q * k + j],
                       .fused = dsc[q * k + j],
                       .dense = dsc[q * k + j],
                       .drank = (int)j + 1};
    } else {
      for (size_t j = 0; j < nl[q]; j++, n[q]++)
        cq[j] = (cand){.id = lids[q * k + j],
                       .fused = lsc[q * k + j],
                       .lexical = lsc[q * k + j],
                       .lrank = (int)j + 1};
    }
  }
leave:
  free(dsc);
  free(lsc);
  free(dids);
  free(lids);
  free(nl);
  return s;
}

/* Result shaping ------------------------------------------------------------------ */

/* Keeps, in rank order, up to gs candidates of each of the first k documents
 * met, and puts them in group order (best first within a group); groups[j]
 * receives candidate j's group. */
static proto_status group_by_document(sctx *c, cand *cands, size_t *n, size_t k, size_t gs,
                                      size_t *groups, size_t *n_groups) {
  uint64_t *docs = malloc(k * sizeof *docs);
  size_t *count = calloc(k, sizeof *count), *kg = malloc((*n + 1) * sizeof *kg);
  cand *kept = malloc((*n + 1) * sizeof *kept);
  size_t nd = 0, m = 0;
  proto_status s = PROTO_OK;
  if (!docs || !count || !kg || !kept) {
    s = srv__fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  for (size_t j = 0; j < *n; j++) {
    cent *ent = chunk_lookup(c, (uint64_t)cands[j].id);
    if (!ent) {
      s = c->err;
      goto leave;
    }
    if (!ent->live) continue;
    size_t g = 0;
    while (g < nd && docs[g] != ent->doc_id) g++;
    if (g == nd) {
      if (nd == k) continue;
      docs[nd++] = ent->doc_id;
    }
    if (count[g] == gs) continue;
    count[g]++;
    kept[m] = cands[j];
    kg[m++] = g;
  }
  size_t w = 0;
  for (size_t g = 0; g < nd; g++)
    for (size_t i = 0; i < m; i++)
      if (kg[i] == g) {
        cands[w] = kept[i];
        groups[w++] = g;
      }
  *n = w;
  *n_groups = nd;
leave:
  free(docs);
  free(count);
  free(kg);
  free(kept);
  return s;
}

/* Fills each hit's context: the texts of the chunks `by` before to `by` after
 * it in its document, with the windows of one document that overlap or touch
 * merged (so two nearby hits share one passage). */
static proto_status expand_hits(sctx *c, srv_hits *h, uint32_t by) {
  proto_status s = PROTO_OK;
  uint64_t *first = malloc((h->n + 1) * sizeof *first);
  if (!first) return srv__fail(PROTO_ENOMEM, "out of memory");
  for (size_t i = 0; i < h->n && s == PROTO_OK; i++) {
    srv_hit *x = &h->hits[i];
    store_doc d = {0};
    s = store_snap_doc_by_num(&c->snap, x->doc_num, &d);
    if (s != PROTO_OK) {
      s = srv__fail(s, "reading document: %s", store_last_error());
    } else {
      first[i] = d.first_chunk;
      x->context_first = x->ordinal > by ? x->ordinal - by : 0;
      x->context_last = x->ordinal + by < d.n_chunks ? x->ordinal + by : d.n_chunks - 1;
    }
    store_doc_free(&d);
  }
  for (int changed = 1; changed && s == PROTO_OK;) { /* merge until stable */
    changed = 0;
    for (size_t i = 0; i < h->n; i++)
      for (size_t j = i + 1; j < h->n; j++) {
        srv_hit *a = &h->hits[i], *b = &h->hits[j];
        if (a->doc_num != b->doc_num || b->context_first > a->context_last + 1 ||
            a->context_first > b->context_last + 1)
          continue;
        uint32_t lo = a->context_first < b->context_first ? a->context_first : b->context_first;
        uint32_t hi = a->context_last > b->context_last ? a->context_last : b->context_last;
        if (a->context_first != lo || a->context_last != hi || b->context_first != lo ||
            b->context_last != hi)
          changed = 1;
        a->context_first = b->context_first = lo;
        a->context_last = b->context_last = hi;
      }
  }
  for (size_t i = 0; i < h->n && s == PROTO_OK; i++) {
    srv_hit *x = &h->hits[i];
    proto_buf b;
    proto_buf_init(&b);
    for (uint32_t o = x->context_first; o <= x->context_last && s == PROTO_OK; o++) {
      store_chunk ch = {0};
      s = store_snap_chunk_get(&c->snap, first[i] + o, &ch);
      if (s != PROTO_OK) s = srv__fail(s, "reading chunk: %s", store_last_error());
      else proto_buf_add(&b, ch.text, ch.text_len);
      store_chunk_free(&ch);
    }
    if (s == PROTO_OK && b.failed) s = srv__fail(PROTO_ENOMEM, "out of memory");
    if (s == PROTO_OK && !b.data) proto_buf_add(&b, "", 0);
    if (s == PROTO_OK) {
      x->context = b.data;
      x->context_len = b.len;
    } else {
      proto_buf_free(&b);
    }
  }
  free(first);
  return s;
}

/* What one srv_search call holds; every allocation here is released by
 * search_state_free and by nothing else. */
typedef struct search_state {
  sctx c;
  lex_job job;
  float *qv;   /* the embedded texts (a search by text) */
  cand *cands; /* kc per query */
  size_t *n_cands, *groups;
  size_t kc;
  dent *docs; /* documents met so far */
  size_t n_docs, cap_docs;
  store_chunk sc; /* the hit being hydrated, with_text only */
} search_state;

static void search_state_free(search_state *st) {
  for (size_t i = 0; i < st->n_docs; i++) {
    free(st->docs[i].id);
    free(st->docs[i].meta);
  }
  free(st->docs);
  lex_job_free(&st->job); /* it may read st->c.ranges until joined */
  store_chunk_free(&st->sc);
  store_snap_end(&st->c.snap);
  cache_free(&st->c);
  proto_filter_free(st->c.filter);
  free((void *)st->c.excl);
  free((void *)st->c.incl);
  free(st->c.spans);
  free(st->c.ranges);
  free(st->qv);
  free(st->cands);
  free(st->n_cands);
  free(st->groups);
}

/* Checks the request before any work; *mode: the mode it searches by. */
static proto_status search_check(const srv_engine *e, const srv_search_request *rq,
                                 srv_search_mode *mode) {
  int has_t = rq->n_texts > 0, has_v = rq->n_vectors > 0;
  if (!has_t && !has_v) return srv__fail(PROTO_EINVAL, "search: give texts or vectors");
  if (has_t && has_v && rq->n_texts != rq->n_vectors)
    return srv__fail(PROTO_EINVAL, "search: as many texts as vectors");
  if ((has_t && !rq->texts) || (has_v && !rq->vectors))
    return srv__fail(PROTO_EINVAL, "search: NULL queries");
  if (rq->k < 1 || rq->k > PROTO_MAX_K)
    return srv__fail(PROTO_ERANGE, "k: must be in [1, %d]", PROTO_MAX_K);
  if (rq->nprobe < 0 || rq->ef_search < 0)
    return srv__fail(PROTO_ERANGE, "nprobe and ef_search must not be negative");
  if (!(rq->alpha >= 0 && rq->alpha <= 1))
    return srv__fail(PROTO_ERANGE, "alpha: must be in (0, 1]");
  if (rq->group_size < 0 || rq->group_size > 100 || rq->expand < 0 || rq->expand > 16)
    return srv__fail(PROTO_ERANGE, "group_size must be in [0, 100] and expand in [0, 16]");
  /* the answer's size: at most k (x group_size) hits a query, never more than
   * one index search returns, each with its texts */
  uint64_t nq = (uint64_t)(has_t ? rq->n_texts : rq->n_vectors);
  uint64_t hits = (uint64_t)rq->k * (uint64_t)(rq->group_size > 0 ? rq->group_size : 1);
  if (hits > PROTO_MAX_K) hits = PROTO_MAX_K;
  uint64_t per_hit =
      (rq->with_text ? 2u : 0u) + (rq->expand > 0 ? 2u * (uint64_t)rq->expand + 1u : 0u);
  if (rq->with_vectors && nq * hits > SRV_SEARCH_MAX_VECTORS)
    return srv__fail(PROTO_ERANGE,
                     "with_vectors: this search asks for up to %llu vectors (%llu queries x "
                     "%llu hits); at most %d per request: send fewer queries or a smaller k",
                     (unsigned long long)(nq * hits), (unsigned long long)nq,
                     (unsigned long long)hits, SRV_SEARCH_MAX_VECTORS);
  if (nq * hits * per_hit > SRV_SEARCH_MAX_TEXTS)
    return srv__fail(
        PROTO_ERANGE,
        "this search asks for up to %llu chunk texts (%llu queries x %llu hits x %llu: "
        "the chunk and its continuation with with_text, 2 x expand + 1 with expand); at "
        "most %d per request: send fewer queries, or a smaller k, group_size or expand, "
        "or with_text false",
        (unsigned long long)(nq * hits * per_hit), (unsigned long long)nq, (unsigned long long)hits,
        (unsigned long long)per_hit, SRV_SEARCH_MAX_TEXTS);
  *mode = rq->mode != SRV_MODE_DEFAULT             ? rq->mode
          : !has_t                                 ? SRV_MODE_DENSE
          : e->opt.search_mode != SRV_MODE_DEFAULT ? e->opt.search_mode
                                                   : SRV_MODE_HYBRID;
  if (!srv_mode_name(*mode)) return srv__fail(PROTO_EINVAL, "mode: unknown search mode");
  if (*mode != SRV_MODE_DENSE && !has_t)
    return srv__fail(PROTO_EINVAL,
                     "mode: a search by vector is dense (lexical and hybrid need a text)");
  if (*mode != SRV_MODE_DENSE && !e->lx)
    return srv__fail(PROTO_EUNAVAIL, "mode: this database has no lexical index");
  if (rq->rerank < 0 || rq->rerank > SRV_RERANK_MAX || (rq->rerank > 0 && rq->rerank < rq->k))
    return srv__fail(PROTO_ERANGE, "rerank: candidates to rerank must be in [k, %d] (k = %d)",
                     SRV_RERANK_MAX, rq->k);
  if (rq->rerank > 0 && !has_t)
    return srv__fail(PROTO_EINVAL, "rerank: needs a query text (the reranker reads it)");
  if (rq->rerank > 0 && !e->rr)
    return srv__fail(PROTO_EUNAVAIL,
                     "rerank: this server has no reranker (start it with "
                     "--reranker DIR)");
  return PROTO_OK;
}

/* The excluded and included documents, the metadata filter and the chunk
 * cache. */
static proto_status search_filter_start(srv_engine *e, const srv_search_request *rq, sctx *c) {
  c->e = e;
  proto_status s =
      doc_nums(e, rq->exclude_docs, rq->n_exclude, (uint64_t **)&c->excl, &c->n_excl, NULL);
  if (s != PROTO_OK) return s;
  c->only_incl = rq->n_include > 0;
  s = doc_nums(e, rq->include_docs, rq->n_include, (uint64_t **)&c->incl, &c->n_incl, &c->spans);
  if (s != PROTO_OK) return s;
  c->n_spans = unique_spans(c->spans, c->n_incl); /* an id may be named twice */
  if (c->n_spans && !(c->ranges = malloc(c->n_spans * sizeof *c->ranges)))
    return srv__fail(PROTO_ENOMEM, "out of memory");
  for (size_t i = 0; i < c->n_spans; i++) {
    c->incl_chunks += c->spans[i].n_chunks;
    c->ranges[i] = (lex_range){(int64_t)c->spans[i].first,
                               (int64_t)(c->spans[i].first + c->spans[i].n_chunks) - 1};
  }
  if ((s = load_filter(rq->filter_json, &c->filter)) != PROTO_OK) return s;
  c->skip_chunk = rq->like_chunk;
  if (cache_grow(c) != 0) return srv__fail(PROTO_ENOMEM, "out of memory");
  return PROTO_OK;
}

/* The document numbered num, from the per-request cache or the snapshot. */
static proto_status search_doc(search_state *st, uint64_t num, const dent **out) {
  for (size_t i = 0; i < st->n_docs; i++)
    if (st->docs[i].num == num) {
      *out = &st->docs[i];
      return PROTO_OK;
    }
  if (st->n_docs == st->cap_docs) {
    size_t nc = st->cap_docs ? st->cap_docs * 2 : 16;
    dent *nd = realloc(st->docs, nc * sizeof *nd);
    if (!nd) return srv__fail(PROTO_ENOMEM, "out of memory");
    st->docs = nd;
    st->cap_docs = nc;
  }
  store_doc sd = {0};
  proto_status ds = store_snap_doc_by_num(&st->c.snap, num, &sd);
  if (ds != PROTO_OK) return srv__fail(ds, "reading document: %s", store_last_error());
  dent *d = &st->docs[st->n_docs++];
  d->num = sd.doc_id;
  d->id = sd.id;
  d->meta = sd.metadata_json;
  sd.id = sd.metadata_json = NULL;
  store_doc_free(&sd);
  *out = d;
  return PROTO_OK;
}

/* Appends candidate cd (a live chunk, ent) to h as a hit of group. */
static proto_status search_add_hit(search_state *st, const srv_search_request *rq, const cand *cd,
                                   const cent *ent, size_t group, srv_hits *h) {
  /* tokens and text: read for the returned hits only. The filter found the
   * chunk live in this snapshot, so it and its document are there. */
  if (rq->with_text) {
    proto_status cs = store_snap_chunk_get(&st->c.snap, (uint64_t)cd->id, &st->sc);
    if (cs != PROTO_OK) return srv__fail(cs, "reading chunk: %s", store_last_error());
  }
  const dent *d = NULL;
  proto_status s = search_doc(st, ent->doc_id, &d);
  if (s != PROTO_OK) return s;
  srv_hit *x = &h->hits[h->n++];
  x->group = group;
  x->score = cd->fused;
  x->dense_score = cd->dense;
  x->lexical_score = cd->lexical;
  x->dense_rank = cd->drank;
  x->lexical_rank = cd->lrank;
  x->retrieval_score = cd->first;
  x->retrieval_rank = cd->rank0;
  x->exact_phrase = cd->phrase;
  x->chunk_id = (uint64_t)cd->id;
  x->doc_num = d->num;
  x->ordinal = ent->ordinal;
  x->doc_id = strdup(d->id ? d->id : "");
  x->metadata_json = strdup(d->meta ? d->meta : "{}");
  if (!x->doc_id || !x->metadata_json) return srv__fail(PROTO_ENOMEM, "out of memory");
  if (rq->with_vectors) { /* the snapshot's: the chunk is live in it */
    x->vector = malloc(st->c.e->dim * sizeof *x->vector);
    if (!x->vector) return srv__fail(PROTO_ENOMEM, "out of memory");
    x->n_vector = (uint32_t)st->c.e->dim;
    proto_status vs = store_snap_vector_get(&st->c.snap, (uint64_t)cd->id, x->vector);
    if (vs != PROTO_OK) return srv__fail(vs, "reading a vector: %s", store_last_error());
  }
  if (rq->with_text) { /* the hit takes over the chunk's buffers */
    x->text = st->sc.text;
    x->text_len = st->sc.text_len;
    x->next_text = st->sc.next_text;
    x->next_text_len = st->sc.next_text_len;
    x->tokens = st->sc.tokens;
    x->n_tokens = st->sc.n_tokens;
    x->next_tokens = st->sc.next_tokens;
    x->n_next_tokens = st->sc.n_next_tokens;
    memset(&st->sc, 0, sizeof st->sc);
  }
  return PROTO_OK;
}

/* Higher relevance first; equal ones keep the mode's order. */
static int cand_by_rerank(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->fused != y->fused) return x->fused < y->fused ? 1 : -1;
  return (x->rank0 > y->rank0) - (x->rank0 < y->rank0);
}

/* A search that asks to rerank: query q's live candidates among the first
 * rq->rerank (at least k), ordered by the reranker's relevance of their
 * chunk's text to the query's, each keeping its score and rank before; the
 * best k are kept, or with group_by all of them, to be grouped (so groups
 * are made of reranked chunks only, and may be fewer than k). */
static proto_status rerank_candidates(search_state *st, const srv_search_request *rq, size_t q,
                                      size_t k) {
  cand *cq = st->cands + q * st->kc;
  size_t m = 0, window = st->n_cands[q] < (size_t)rq->rerank ? st->n_cands[q] : (size_t)rq->rerank;
  for (size_t j = 0; j < window; j++) { /* the dead ones would be skipped anyway */
    cent *ent = chunk_lookup(&st->c, (uint64_t)cq[j].id);
    if (!ent) return st->c.err;
    if (!ent->live) continue;
    cq[m] = cq[j];
    cq[m].rank0 = (int)m + 1; /* its rank among the live hits, as a plain search returns them */
    cq[m++].first = cq[j].fused;
  }
  store_chunk *chunks = calloc(m ? m : 1, sizeof *chunks);
  const char **texts = calloc(m ? m : 1, sizeof *texts);
  size_t *lens = calloc(m ? m : 1, sizeof *lens);
  float *rel = calloc(m ? m : 1, sizeof *rel);
  proto_status s =
      chunks && texts && lens && rel ? PROTO_OK : srv__fail(PROTO_ENOMEM, "out of memory");
  for (size_t j = 0; j < m && s == PROTO_OK; j++) {
    if ((s = store_snap_chunk_get(&st->c.snap, (uint64_t)cq[j].id, &chunks[j])) != PROTO_OK)
      s = srv__fail(s, "reading chunk: %s", store_last_error());
    texts[j] = chunks[j].text;
    lens[j] = chunks[j].text_len;
  }
  size_t qlen = rq->text_lens ? rq->text_lens[q] : strlen(rq->texts[q]);
  if (s == PROTO_OK) s = srv_rerank(st->c.e, rq->texts[q], qlen, texts, lens, m, rel);
  for (size_t j = 0; j < m && s == PROTO_OK; j++) cq[j].fused = rel[j];
  if (s == PROTO_OK) qsort(cq, m, sizeof *cq, cand_by_rerank);
  for (size_t j = 0; chunks && j < m; j++) store_chunk_free(&chunks[j]);
  free(chunks);
  free(texts);
  free(lens);
  free(rel);
  st->n_cands[q] = m < k || rq->group_size > 0 ? m : k;
  return s;
}

/* Query q's hits: its candidates grouped by document (group_size), the
 * live ones hydrated, their context expanded. */
static proto_status search_hits(search_state *st, const srv_search_request *rq, size_t q, size_t k,
                                srv_hits *h) {
  cand *cq = st->cands + q * st->kc;
  size_t gs = (size_t)rq->group_size;
  proto_status s;
  if (gs > 0 && (s = group_by_document(&st->c, cq, &st->n_cands[q], k, gs, st->groups,
                                       &h->n_groups)) != PROTO_OK)
    return s;
  h->hits = calloc(st->n_cands[q] ? st->n_cands[q] : 1, sizeof *h->hits);
  if (!h->hits) return srv__fail(PROTO_ENOMEM, "out of memory");
  for (size_t j = 0; j < st->n_cands[q]; j++) {
    cent *ent = chunk_lookup(&st->c, (uint64_t)cq[j].id);
    if (!ent) return st->c.err;
    if (!ent->live) continue;
    s = search_add_hit(st, rq, &cq[j], ent, st->groups ? st->groups[j] : 0, h);
    if (s != PROTO_OK) return s;
  }
  if (rq->expand > 0) return expand_hits(&st->c, h, (uint32_t)rq->expand);
  return PROTO_OK;
}

/* A search by chunk like_chunk's stored vector: the search by that vector,
 * which leaves the chunk out (search_filter). */
static proto_status search_like_chunk(srv_engine *e, const srv_search_request *rq,
                                      srv_search_result *out) {
  if (rq->n_texts) return srv__fail(PROTO_EINVAL, "chunk_id: give it instead of texts");
  float *vec = malloc(e->dim * sizeof *vec);
  if (!vec) return srv__fail(PROTO_ENOMEM, "out of memory");
  proto_status s = store_vector_get(e->st, rq->like_chunk, vec);
  if (s == PROTO_ENOTFOUND)
    s = srv__fail(s, "chunk_id: no chunk %llu", (unsigned long long)rq->like_chunk);
  else if (s != PROTO_OK) s = srv__fail(s, "chunk_id: reading its vector: %s", store_last_error());
  srv_search_request like = *rq;
  like.vectors = vec;
  like.n_vectors = 1;
  if (s == PROTO_OK) s = srv_search(e, &like, out);
  free(vec);
  return s;
}

/* The candidates a query's search finds before shaping its k hits: with
 * rerank, the window to rerank (at least k; grouped as it is with
 * group_by, so that it is a plain search's best N); with grouping, enough
 * that k documents are likely found (and no more than one index search may
 * return). */
static size_t candidates_wanted(const srv_search_request *rq, size_t k) {
  size_t gs = (size_t)rq->group_size, kc = k;
  if (rq->rerank > 0) return (size_t)rq->rerank;
  if (gs > 0) {
    kc = k * gs * 4 < 64 ? 64 : k * gs * 4;
    if (kc > PROTO_MAX_K) kc = PROTO_MAX_K;
  }
  return kc;
}

proto_status srv_search(srv_engine *e, const srv_search_request *rq, srv_search_result *out) {
  if (!e || !rq || !out) return srv__fail(PROTO_EINVAL, "srv_search: NULL argument");
  memset(out, 0, sizeof *out);
  if (rq->like_chunk && !rq->n_vectors) return search_like_chunk(e, rq, out);
  srv_search_mode mode = SRV_MODE_DEFAULT;
  proto_status s = search_check(e, rq, &mode);
  if (s != PROTO_OK) return s;
  search_state st;
  memset(&st, 0, sizeof st);
  int has_t = rq->n_texts > 0, has_v = rq->n_vectors > 0;
  size_t nq = has_t ? rq->n_texts : rq->n_vectors, k = (size_t)rq->k;
  const float *queries = rq->vectors;
  /* the named documents and the filter first: the lexical half may need
   * the former; then a hybrid search's lexical half starts, to run while
   * this thread embeds the text */
  if ((s = search_filter_start(e, rq, &st.c)) != PROTO_OK) goto leave;
  st.kc = candidates_wanted(rq, k);
  lex_job_start(&st.job, e, rq, mode, st.kc, &st.c);
  if (!has_v && mode != SRV_MODE_LEXICAL) {
    st.qv = malloc(nq * e->dim * sizeof *st.qv);
    if (!st.qv) {
      s = srv__fail(PROTO_ENOMEM, "out of memory");
      goto leave;
    }
    s = srv__embed_search_texts(e, rq->texts, rq->text_lens, nq, st.qv, st.job.started);
    if (s != PROTO_OK) goto leave;
    queries = st.qv;
  }
  size_t gs = (size_t)rq->group_size;
  st.cands = malloc(nq * st.kc * sizeof *st.cands);
  st.n_cands = calloc(nq, sizeof *st.n_cands);
  out->queries = calloc(nq, sizeof *out->queries);
  if (gs > 0) st.groups = malloc(st.kc * sizeof *st.groups);
  if (!st.cands || !st.n_cands || !out->queries || (gs > 0 && !st.groups)) {
    s = srv__fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  out->nq = nq;
  out->mode = mode;
  s = find_candidates(e, rq, mode, queries, nq, st.kc, &st.c, &st.job, st.cands, st.n_cands);
  for (size_t q = 0; q < nq && s == PROTO_OK && rq->rerank > 0; q++)
    s = rerank_candidates(&st, rq, q, k);
  for (size_t q = 0; q < nq && s == PROTO_OK; q++) s = search_hits(&st, rq, q, k, &out->queries[q]);
  if (s == PROTO_OK) atomic_fetch_add(&e->n_searches, nq);
leave:
  search_state_free(&st);
  if (s != PROTO_OK) srv_search_result_free(out);
  return s;
}
