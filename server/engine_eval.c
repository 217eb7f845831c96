/* engine_eval.c - srv_eval_doc: bits-per-byte of the decoder on a document,
 * with RETRO's live retrieval from the engine's database (or RETRO [OFF]),
 * and the leakage-filtered figure of the paper (only chunks whose longest
 * common substring with the neighbours they attend to is <= alpha of the
 * chunk). Used by `retro eval`.
 *
 * How: the document's tokens are cut into windows of the decoder's max_seq
 * (non-overlapping; the first token of a window is context only); for each
 * complete chunk u of a window the chunk's 64 tokens are embedded and
 * searched exactly as generation does, the neighbours set, and the window
 * goes through one full forward; token p+1 is scored from position p.
 * Chunk c of a window is predicted while attending to the neighbours of
 * chunk c-1, so those are the ones its leakage is measured against.
 * What it does not: choose the database (the caller opens the engine on the
 * regime it wants: training documents only, or held-out documents too).
 */
#include "engine_priv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Longest common substring of a[0..n) and b[0..m) in bytes. */
static size_t lcs_len(const char *a, size_t n, const char *b, size_t m, uint16_t *row) {
  size_t best = 0;
  memset(row, 0, (m + 1) * sizeof *row);
  for (size_t i = 1; i <= n; i++) {
    uint16_t diag = 0;
    for (size_t j = 1; j <= m; j++) {
      uint16_t up = row[j];
      row[j] = a[i - 1] == b[j - 1] ? (uint16_t)(diag + 1) : 0;
      if (row[j] > best) best = row[j];
      diag = up;
    }
  }
  return best;
}

/* -log2 p(tgt) from one position's logits (max-subtracted log-softmax). */
static double token_bits(const float *lg, int V, int32_t tgt) {
  float mx = lg[0];
  for (int v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
  double sum = 0;
  for (int v = 0; v < V; v++) sum += exp((double)(lg[v] - mx));
  return -((double)(lg[tgt] - mx) - log(sum)) / log(2.0);
}

/* The leakage filter looks at no more chunks of a window than this. */
enum { EVAL_MAX_CHUNKS = 4096 };

/* One srv_eval_doc call: its settings and buffers, all released by
 * eval_free. Per window: each chunk's text and its neighbours' [N F]
 * texts. */
typedef struct eval_run {
  srv_engine *e;
  const srv_eval_options *o;
  const char *id;
  srv_search_mode mode;
  int V, W, k, maxc;
  double alpha;
  int32_t pad;
  int32_t *toks;
  size_t n;
  retro_state *st;
  float *logits, *vec;
  int32_t *nbuf;
  uint16_t *row;
  char **ctext; /* per chunk of the window: its text */
  size_t *clen;
  char ***ntext; /* per chunk: its neighbours' [N F] texts */
  size_t **nlen;
  int *nn;
  srv_search_result sr;
} eval_run;

/* Frees the neighbour texts of the window. */
static void eval_clear_neighbours(eval_run *r) {
  for (int c = 0; r->ntext && c < r->maxc; c++) {
    for (int j = 0; r->ntext[c] && j < r->nn[c]; j++) free(r->ntext[c][j]);
    free(r->ntext[c]);
    free(r->nlen[c]);
    r->ntext[c] = NULL;
    r->nlen[c] = NULL;
    r->nn[c] = 0;
  }
}

static void eval_free(eval_run *r) {
  srv_search_result_free(&r->sr);
  eval_clear_neighbours(r);
  for (int c = 0; r->ctext && c < r->maxc; c++) free(r->ctext[c]);
  free(r->ctext);
  free(r->clen);
  free(r->ntext);
  free(r->nlen);
  free(r->nn);
  free(r->row);
  free(r->nbuf);
  free(r->vec);
  free(r->logits);
  free(r->toks);
  retro_state_free(r->st);
}

/* The settings, the document's tokens and the buffers of a window. */
static proto_status eval_init(eval_run *r, srv_engine *e, const srv_eval_options *o, const char *id,
                              const char *text, size_t len) {
  const retro_config *rc = retro_get_config(e->dec);
  r->e = e;
  r->o = o;
  r->id = id;
  r->mode = srv__retrieval_mode(e, o->retrieval_mode);
  r->V = rc->vocab_size;
  if (o->window && (o->window % PROTO_CHUNK_TOKENS || o->window < 2 * PROTO_CHUNK_TOKENS ||
                    o->window > e->max_seq)) /* it was rounded, or replaced, without a word */
    return srv__fail(PROTO_ERANGE,
                     "window: %d tokens; give a multiple of %d from %d to the decoder's max_seq %d",
                     o->window, PROTO_CHUNK_TOKENS, 2 * PROTO_CHUNK_TOKENS, e->max_seq);
  r->W = o->window ? o->window : e->max_seq;
  r->k = o->k > 0 ? o->k : rc->n_neighbours > 0 ? rc->n_neighbours : 2;
  r->alpha = o->leak_alpha > 0 ? o->leak_alpha : 0.2;
  r->pad = e->pad_id >= 0 ? e->pad_id : e->eos_id >= 0 ? e->eos_id : 0;
  proto_status s;
  if (len && (s = tok_encode(e->ctok, text, len, &r->toks, &r->n)) != PROTO_OK)
    return srv__fail(s, "%s: %s", id ? id : "document", tok_last_error());
  r->maxc = r->W / PROTO_CHUNK_TOKENS;
  if ((s = retro_state_new(e->dec, r->W, &r->st)) != PROTO_OK)
    return srv__fail(s, "decoder state: %s", retro_last_error());
  size_t maxc = (size_t)r->maxc;
  r->logits = malloc((size_t)r->W * (size_t)r->V * sizeof *r->logits);
  r->vec = malloc(maxc * e->dim * sizeof *r->vec);
  r->nbuf = malloc((size_t)r->k * PROTO_NEIGHBOUR_TOKENS * sizeof *r->nbuf);
  r->row = malloc(1024 * sizeof *r->row);
  r->ctext = calloc(maxc, sizeof *r->ctext);
  r->clen = calloc(maxc, sizeof *r->clen);
  r->ntext = calloc(maxc, sizeof *r->ntext);
  r->nlen = calloc(maxc, sizeof *r->nlen);
  r->nn = calloc(maxc, sizeof *r->nn);
  if (!r->logits || !r->vec || !r->nbuf || !r->row || !r->ctext || !r->clen || !r->ntext ||
      !r->nlen || !r->nn)
    return srv__fail(PROTO_ENOMEM, "out of memory");
  return PROTO_OK;
}

/* The text of each of the nt chunks of the window at w0. */
static proto_status eval_chunk_texts(eval_run *r, size_t w0, int nt) {
  for (int c = 0; c < nt; c++) {
    size_t off = w0 + (size_t)c * PROTO_CHUNK_TOKENS;
    size_t cl = r->n - off < PROTO_CHUNK_TOKENS ? r->n - off : PROTO_CHUNK_TOKENS;
    free(r->ctext[c]);
    r->ctext[c] = NULL;
    proto_status s = tok_decode(r->e->ctok, r->toks + off, cl, &r->ctext[c], &r->clen[c]);
    if (s != PROTO_OK) return srv__fail(s, "decoding: %s", tok_last_error());
    r->nn[c] = 0;
  }
  return PROTO_OK;
}

/* Chunk c's neighbours (h) given to the decoder, and their [N F] texts
 * kept for the leakage measure. */
static proto_status eval_set_neighbours(eval_run *r, int c, const srv_hits *h) {
  r->ntext[c] = calloc(h->n ? h->n : 1, sizeof **r->ntext);
  r->nlen[c] = calloc(h->n ? h->n : 1, sizeof **r->nlen);
  if (!r->ntext[c] || !r->nlen[c]) return srv__fail(PROTO_ENOMEM, "out of memory");
  for (size_t j = 0; j < h->n; j++) {
    const srv_hit *x = &h->hits[j];
    int32_t *row = r->nbuf + j * PROTO_NEIGHBOUR_TOKENS;
    for (int t = 0; t < PROTO_NEIGHBOUR_TOKENS; t++) row[t] = r->pad;
    memcpy(row, x->tokens, (x->n_tokens < 64 ? x->n_tokens : 64) * sizeof *row);
    if (x->n_next_tokens)
      memcpy(row + 64, x->next_tokens,
             (x->n_next_tokens < 64 ? x->n_next_tokens : 64) * sizeof *row);
    char *t = malloc(x->text_len + x->next_text_len + 1);
    if (!t) return srv__fail(PROTO_ENOMEM, "out of memory");
    memcpy(t, x->text, x->text_len);
    memcpy(t + x->text_len, x->next_text, x->next_text_len);
    t[x->text_len + x->next_text_len] = 0;
    r->ntext[c][r->nn[c]] = t;
    r->nlen[c][r->nn[c]++] = x->text_len + x->next_text_len;
  }
  proto_status s = retro_set_neighbours(r->st, c, r->nbuf, (int)h->n, r->pad);
  if (s != PROTO_OK) return srv__fail(s, "setting neighbours: %s", retro_last_error());
  return PROTO_OK;
}

/* Searches the neighbours of the nc complete chunks of the window at w0
 * with their embeddings (in r->vec) and, unless dense, their texts etx. */
static proto_status eval_search(eval_run *r, size_t w0, int nc, char **etx, size_t *etl) {
  const char *excl[1] = {r->id};
  int self = r->o->exclude_self && r->id;
  srv_search_request q = {.vectors = r->vec,
                          .n_vectors = (size_t)nc,
                          .k = r->k,
                          .exclude_docs = self ? excl : NULL,
                          .n_exclude = self ? 1 : 0,
                          .with_text = 1,
                          .mode = r->mode};
  if (r->mode != SRV_MODE_DENSE) {
    q.texts = (const char *const *)etx;
    q.text_lens = etl;
    q.n_texts = (size_t)nc;
  }
  proto_status s = srv_search(r->e, &q, &r->sr);
  for (int c = 0; c < nc && s == PROTO_OK; c++) {
    srv_hits *h = &r->sr.queries[c];
    if (r->o->on_neighbours)
      r->o->on_neighbours(r->o->cb_ctx, w0 / PROTO_CHUNK_TOKENS + (size_t)c, h);
    s = eval_set_neighbours(r, c, h);
  }
  srv_search_result_free(&r->sr);
  return s;
}

/* The neighbours of the nc complete chunks of the window at w0, found as
 * generation finds them (the chunk embedded, and its text for a lexical or
 * hybrid search), set in the decoder's state. */
static proto_status eval_retrieve(eval_run *r, size_t w0, int nc) {
  const int32_t **ids = malloc((size_t)nc * sizeof *ids);
  size_t *lens = malloc((size_t)nc * sizeof *lens);
  char **etx = calloc((size_t)nc, sizeof *etx);
  size_t *etl = calloc((size_t)nc, sizeof *etl);
  int need_text = !r->e->embed_by_ids || r->mode != SRV_MODE_DENSE;
  proto_status s = ids && lens && etx && etl ? PROTO_OK : PROTO_ENOMEM;
  for (int c = 0; c < nc && s == PROTO_OK; c++) {
    ids[c] = r->toks + w0 + (size_t)c * PROTO_CHUNK_TOKENS;
    lens[c] = PROTO_CHUNK_TOKENS;
    if (need_text) {
      proto_buf b;
      proto_buf_init(&b);
      proto_buf_add_utf8_lossy(&b, r->ctext[c], r->clen[c]);
      etx[c] = b.data ? b.data : calloc(1, 1);
      etl[c] = b.len;
      if (!etx[c] || b.failed) s = PROTO_ENOMEM;
    }
  }
  if (s != PROTO_OK) s = srv__fail(PROTO_ENOMEM, "out of memory");
  if (s == PROTO_OK)
    s = srv__embed_chunks(r->e, ids, lens, (const char *const *)etx, etl, (size_t)nc, r->vec);
  if (s == PROTO_OK) s = eval_search(r, w0, nc, etx, etl);
  for (int c = 0; etx && c < nc; c++) free(etx[c]);
  free(ids);
  free(lens);
  free(etx);
  free(etl);
  return s;
}

/* keep[c]: 1 when chunk c of the window passes the leakage filter (its
 * longest common substring with each neighbour of chunk c-1, the ones it
 * attends to, is at most alpha of the chunk). */
static void eval_leakage(eval_run *r, int nt, int *keep) {
  for (int c = 0; c < nt && c < EVAL_MAX_CHUNKS; c++) {
    keep[c] = 1;
    if (c == 0 || r->nn[c - 1] == 0) continue;
    size_t lim = (size_t)(r->alpha * (double)r->clen[c]);
    for (int j = 0; j < r->nn[c - 1] && keep[c]; j++) {
      size_t m = r->nlen[c - 1][j] < 1023 ? r->nlen[c - 1][j] : 1023;
      if (lcs_len(r->ctext[c], r->clen[c], r->ntext[c - 1][j], m, r->row) > lim) keep[c] = 0;
    }
  }
}

/* Adds the scores of the window at w0 (wl tokens, logits in r->logits) to
 * acc; the first token is context only. */
static void eval_score(eval_run *r, size_t w0, int wl, const int *keep, srv_eval_result *acc) {
  const srv_eval_options *o = r->o;
  size_t V = (size_t)r->V;
  if (o->on_token) o->on_token(o->cb_ctx, w0, r->toks[w0], 0, 0, NULL, r->V);
  for (int p = 0; p + 1 < wl; p++) {
    int32_t tgt = r->toks[w0 + (size_t)p + 1];
    const float *lg = r->logits + (size_t)p * V;
    double bits = token_bits(lg, r->V, tgt);
    if (o->on_token) o->on_token(o->cb_ctx, w0 + (size_t)p + 1, tgt, 1, bits, lg, r->V);
    char *piece = NULL;
    size_t pl = 0;
    if (tok_decode(r->e->ctok, &tgt, 1, &piece, &pl) != PROTO_OK) pl = 0;
    free(piece);
    acc->tokens++;
    acc->bytes += pl;
    acc->bits += bits;
    int c = (p + 1) / PROTO_CHUNK_TOKENS;
    if (c < EVAL_MAX_CHUNKS && keep[c]) {
      acc->kept_tokens++;
      acc->kept_bytes += pl;
      acc->kept_bits += bits;
    }
  }
}

/* compare_off: the same window scored again without neighbours. */
static proto_status eval_score_off(eval_run *r, size_t w0, int wl, const int *keep,
                                   srv_eval_result *acc) {
  retro_state_reset(r->st);
  proto_status s = retro_forward(r->st, r->toks + w0, wl, 1, r->logits);
  if (s != PROTO_OK) return srv__fail(s, "decoder: %s", retro_last_error());
  for (int p = 0; p + 1 < wl; p++) {
    double bits =
        token_bits(r->logits + (size_t)p * (size_t)r->V, r->V, r->toks[w0 + (size_t)p + 1]);
    int c = (p + 1) / PROTO_CHUNK_TOKENS;
    acc->off_bits += bits;
    if (c < EVAL_MAX_CHUNKS && keep[c]) acc->kept_off_bits += bits;
  }
  return PROTO_OK;
}

/* Scores the window of the document that starts at token w0. */
static proto_status eval_window(eval_run *r, size_t w0, srv_eval_result *acc) {
  int wl = (int)(r->n - w0 < (size_t)r->W ? r->n - w0 : (size_t)r->W);
  int nc = wl / PROTO_CHUNK_TOKENS; /* complete chunks */
  int nt = (wl + PROTO_CHUNK_TOKENS - 1) / PROTO_CHUNK_TOKENS;
  retro_state_reset(r->st);
  proto_status s = eval_chunk_texts(r, w0, nt);
  if (s == PROTO_OK && r->o->retrieval && nc > 0) s = eval_retrieve(r, w0, nc);
  if (s != PROTO_OK) return s;
  if ((s = retro_forward(r->st, r->toks + w0, wl, 1, r->logits)) != PROTO_OK)
    return srv__fail(s, "decoder: %s", retro_last_error());
  int keep[EVAL_MAX_CHUNKS];
  eval_leakage(r, nt, keep);
  for (int c = 0; c < nt; c++) {
    acc->chunks++;
    if (c < EVAL_MAX_CHUNKS && keep[c]) acc->chunks_kept++;
  }
  eval_score(r, w0, wl, keep, acc);
  if (r->o->compare_off && r->o->retrieval &&
      (s = eval_score_off(r, w0, wl, keep, acc)) != PROTO_OK)
    return s;
  eval_clear_neighbours(r);
  return PROTO_OK;
}

proto_status srv_eval_doc(srv_engine *e, const srv_eval_options *o, const char *id,
                          const char *text, size_t len, srv_eval_result *acc) {
  if (!e || !o || !acc || (!text && len))
    return srv__fail(PROTO_EINVAL, "srv_eval_doc: NULL argument");
  if (!e->dec) return srv__fail(PROTO_EUNAVAIL, "no decoder is loaded");
  double t0 = proto_now();
  eval_run r;
  memset(&r, 0, sizeof r);
  proto_status s = eval_init(&r, e, o, id, text, len);
  for (size_t w0 = 0; s == PROTO_OK && w0 + 1 < r.n; w0 += (size_t)r.W)
    s = eval_window(&r, w0, acc);
  if (s == PROTO_OK) {
    acc->docs++;
    acc->seconds += proto_now() - t0;
  }
  eval_free(&r);
  return s;
}
