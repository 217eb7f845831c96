/* generate.c - the RETRO sampling loop behind srv_generate: tokenise the
 * prompt, retrieve neighbours for every complete prompt chunk, run the
 * prompt through the decoder in one pass, then sample token by token,
 * retrieving for each chunk as soon as it is complete (before the token that
 * completes it is fed, since that token is the first to attend to the
 * chunk's neighbours). Stop sequences, max_tokens, end-of-text, seeds,
 * logprobs, cancellation, and a bounded pool of decoder states (requests
 * beyond the pool and its wait queue get PROTO_EBUSY).
 *
 * What it does not: the model arithmetic (model/retro.c), sampling maths
 * (model/sample.c), HTTP/SSE framing (server/http*.c).
 */
#include "engine_priv.h"
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void srv_gen_request_init(srv_gen_request *rq) {
  if (!rq) return;
  memset(rq, 0, sizeof *rq);
  rq->max_tokens = 16;
  rq->temperature = 1.0;
  rq->top_p = 1.0;
  rq->logprobs = -1;
  rq->retrieval = 1;
}

static void gen_chunk_clear(srv_gen_chunk *c) {
  for (size_t i = 0; c->nb && i < c->n; i++) {
    free(c->nb[i].doc_id);
    free(c->nb[i].text);
    free(c->nb[i].next_text);
  }
  free(c->nb);
  memset(c, 0, sizeof *c);
}

void srv_gen_result_free(srv_gen_result *r) {
  if (!r) return;
  free(r->text);
  for (size_t i = 0; r->chunks && i < r->n_chunks; i++) gen_chunk_clear(&r->chunks[i]);
  free(r->chunks);
  for (size_t i = 0; r->tokens && i < r->n_tokens; i++) {
    free(r->tokens[i].piece);
    for (int j = 0; j < r->tokens[i].n_top && j < 5; j++) free(r->tokens[i].top_pieces[j]);
  }
  free(r->tokens);
  memset(r, 0, sizeof *r);
}

/* Slots ------------------------------------------------------------------------ */

static proto_status slot_acquire(srv_engine *e, const srv_gen_callbacks *cb, int *slot) {
  proto_status s = PROTO_OK;
  pthread_mutex_lock(&e->gen_mu);
  if (e->closing) {
    s = srv__fail(PROTO_EUNAVAIL, "the engine is closing");
    goto leave;
  }
  if (e->busy == e->n_slots) {
    if (e->waiting >= e->max_waiting) {
      s = srv__fail(PROTO_EBUSY, "all %d generation slots are busy and %d requests wait",
                    e->n_slots, e->waiting);
      goto leave;
    }
    e->waiting++;
    while (e->busy == e->n_slots && !e->closing) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 50 * 1000 * 1000;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&e->gen_cv, &e->gen_mu, &ts);
      if (cb && cb->should_cancel) {
        pthread_mutex_unlock(&e->gen_mu);
        int stop = cb->should_cancel(cb->ctx);
        pthread_mutex_lock(&e->gen_mu);
        if (stop) {
          s = srv__fail(PROTO_ECANCELLED, "cancelled while waiting for a slot");
          break;
        }
      }
    }
    e->waiting--;
    if (s == PROTO_OK && e->closing) s = srv__fail(PROTO_EUNAVAIL, "the engine is closing");
    if (s != PROTO_OK) {
      pthread_cond_broadcast(&e->gen_cv);
      goto leave;
    }
  }
  for (int i = 0; i < e->n_slots; i++) {
    if (!e->state_busy[i]) {
      e->state_busy[i] = 1;
      e->busy++;
      *slot = i;
      break;
    }
  }
leave:
  pthread_mutex_unlock(&e->gen_mu);
  return s;
}

static void slot_release(srv_engine *e, int slot) {
  pthread_mutex_lock(&e->gen_mu);
  e->state_busy[slot] = 0;
  e->busy--;
  pthread_cond_broadcast(&e->gen_cv);
  pthread_mutex_unlock(&e->gen_mu);
}

/* The generation ---------------------------------------------------------------- */

typedef struct gen {
  srv_engine *e;
  const srv_gen_request *rq;
  const srv_gen_callbacks *cb;
  srv_gen_result *res;
  retro_state *st;
  int32_t *seq; /* (max_seq) tokens of prompt + completion */
  int n_seq;
  int k; /* neighbours per chunk */
  int32_t pad;
  int32_t *nbuf; /* (k, 128) neighbour tokens of one chunk */
  /* text */
  char *raw;                        /* the completion's bytes as generated */
  size_t raw_len, raw_cap, emitted; /* emitted: raw bytes already handed out */
  size_t text_cap;
  size_t max_stop;
  int cancelled;
  sampler *smp;
  float *logits;  /* (vocab) the next token's logits */
  size_t tok_cap; /* res->tokens' room */
  double t0;      /* when the slot was had */
} gen;

static proto_status grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return PROTO_OK;
  size_t nc = *cap ? *cap : 64;
  while (nc < need) nc *= 2;
  void *q = realloc(*p, nc * elem);
  if (!q) return srv__fail(PROTO_ENOMEM, "out of memory");
  *p = q;
  *cap = nc;
  return PROTO_OK;
}

/* Appends chunk u's neighbours (the hits h, whose strings move into the
 * result) to r's chunks. */
static proto_status record_neighbours(srv_gen_result *r, int u, int in_prompt, srv_hits *h) {
  int kk = (int)h->n;
  srv_gen_chunk *nc = realloc(r->chunks, (r->n_chunks + 1) * sizeof *nc);
  if (!nc) return srv__fail(PROTO_ENOMEM, "out of memory");
  r->chunks = nc;
  srv_gen_chunk *c = &r->chunks[r->n_chunks++];
  memset(c, 0, sizeof *c);
  c->chunk = u;
  c->in_prompt = in_prompt;
  if (kk > 0 && !(c->nb = calloc((size_t)kk, sizeof *c->nb)))
    return srv__fail(PROTO_ENOMEM, "out of memory");
  for (int j = 0; j < kk; j++) {
    srv_hit *x = &h->hits[j];
    srv_gen_neighbour *nb = &c->nb[c->n++];
    nb->chunk_id = x->chunk_id;
    nb->doc_num = x->doc_num;
    nb->score = x->score;
    nb->doc_id = x->doc_id;
    nb->text = x->text;
    nb->text_len = x->text_len;
    nb->next_text = x->next_text;
    nb->next_text_len = x->next_text_len;
    x->doc_id = x->text = x->next_text = NULL; /* moved */
  }
  return PROTO_OK;
}

/* Retrieves neighbours for chunks us[0..n) of g->seq and sets them. */
static proto_status retrieve(gen *g, const int *us, int n, int in_prompt) {
  srv_engine *e = g->e;
  srv_search_mode mode = srv__retrieval_mode(e, g->rq->retrieval_mode);
  double t0 = proto_now();
  proto_status s = PROTO_OK;
  const int32_t **ids = calloc((size_t)n, sizeof *ids);
  size_t *lens = calloc((size_t)n, sizeof *lens);
  char **texts = calloc((size_t)n, sizeof *texts);
  size_t *tlens = calloc((size_t)n, sizeof *tlens);
  float *vec = malloc((size_t)n * e->dim * sizeof *vec);
  srv_search_result sr = {0};
  if (!ids || !lens || !texts || !tlens || !vec) {
    s = srv__fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  for (int i = 0; i < n; i++) {
    ids[i] = g->seq + (size_t)us[i] * PROTO_CHUNK_TOKENS;
    lens[i] = PROTO_CHUNK_TOKENS;
    if (!e->embed_by_ids || mode != SRV_MODE_DENSE) {
      char *t = NULL;
      size_t tl = 0;
      s = tok_decode(e->ctok, ids[i], lens[i], &t, &tl);
      if (s != PROTO_OK) {
        s = srv__fail(s, "decoding a chunk: %s", tok_last_error());
        goto leave;
      }
      proto_buf b;
      proto_buf_init(&b);
      proto_buf_add_utf8_lossy(&b, t, tl);
      free(t);
      if (b.failed) {
        proto_buf_free(&b);
        s = srv__fail(PROTO_ENOMEM, "out of memory");
        goto leave;
      }
      texts[i] = b.data ? b.data : calloc(1, 1);
      tlens[i] = b.len;
      if (!texts[i]) {
        s = srv__fail(PROTO_ENOMEM, "out of memory");
        goto leave;
      }
    }
  }
  if ((s = srv__embed_chunks(e, ids, lens, (const char *const *)texts, tlens, (size_t)n, vec)) !=
      PROTO_OK)
    goto leave;
  srv_search_request q = {.vectors = vec,
                          .n_vectors = (size_t)n,
                          .k = g->k,
                          .exclude_docs = g->rq->exclude_docs,
                          .n_exclude = g->rq->n_exclude,
                          .include_docs = g->rq->include_docs,
                          .n_include = g->rq->n_include,
                          .filter_json = g->rq->filter_json,
                          .mode = mode,
                          .nprobe = g->rq->nprobe,
                          .ef_search = g->rq->ef_search,
                          .with_text = 1};
  if (mode != SRV_MODE_DENSE) {
    q.texts = (const char *const *)texts;
    q.text_lens = tlens;
    q.n_texts = (size_t)n;
  }
  if ((s = srv_search(e, &q, &sr)) != PROTO_OK) goto leave;
  for (int i = 0; i < n; i++) {
    srv_hits *h = &sr.queries[i];
    int kk = (int)h->n;
    for (int j = 0; j < kk; j++) {
      int32_t *row = g->nbuf + (size_t)j * PROTO_NEIGHBOUR_TOKENS;
      for (int t = 0; t < PROTO_NEIGHBOUR_TOKENS; t++) row[t] = g->pad;
      const srv_hit *x = &h->hits[j];
      uint32_t nn = x->n_tokens < PROTO_CHUNK_TOKENS ? x->n_tokens : PROTO_CHUNK_TOKENS;
      uint32_t nf = x->n_next_tokens < PROTO_CHUNK_TOKENS ? x->n_next_tokens : PROTO_CHUNK_TOKENS;
      memcpy(row, x->tokens, nn * sizeof *row);
      if (nf) memcpy(row + PROTO_CHUNK_TOKENS, x->next_tokens, nf * sizeof *row);
    }
    s = retro_set_neighbours(g->st, us[i], g->nbuf, kk, g->pad);
    if (s != PROTO_OK) {
      s = srv__fail(s, "setting neighbours: %s", retro_last_error());
      goto leave;
    }
    if ((s = record_neighbours(g->res, us[i], in_prompt, h)) != PROTO_OK) goto leave;
  }
  g->res->retrieval_s += proto_now() - t0;
  if (g->cb && g->cb->on_neighbours)
    for (size_t i = g->res->n_chunks - (size_t)n; i < g->res->n_chunks; i++)
      g->cb->on_neighbours(g->cb->ctx, &g->res->chunks[i]);
leave:
  srv_search_result_free(&sr);
  for (int i = 0; texts && i < n; i++) free(texts[i]);
  free(texts);
  free(tlens);
  free(ids);
  free(lens);
  free(vec);
  return s;
}

/* Length of the incomplete-but-valid UTF-8 sequence at the end of s[0..n)
 * (the next token may complete it). */
static size_t utf8_tail(const char *s, size_t n) {
  for (size_t back = 1; back <= 3 && back <= n; back++) {
    unsigned char c = (unsigned char)s[n - back];
    if ((c & 0xC0) == 0x80) continue; /* continuation: look further back */
    return proto_utf8_decode(s + n - back, back, NULL) == 0 ? back : 0;
  }
  return 0;
}

/* Hands raw[emitted..end) to the caller as valid UTF-8, appends it to the
 * result text. */
static proto_status emit(gen *g, size_t end) {
  if (end <= g->emitted || g->cancelled) return PROTO_OK; /* nothing after a cancel */
  proto_buf b;
  proto_buf_init(&b);
  proto_buf_add_utf8_lossy(&b, g->raw + g->emitted, end - g->emitted);
  if (b.failed) {
    proto_buf_free(&b);
    return srv__fail(PROTO_ENOMEM, "out of memory");
  }
  g->emitted = end;
  srv_gen_result *r = g->res;
  proto_status s = grow((void **)&r->text, &g->text_cap, r->text_len + b.len + 1, 1);
  if (s != PROTO_OK) {
    proto_buf_free(&b);
    return s;
  }
  memcpy(r->text + r->text_len, b.data, b.len);
  r->text_len += b.len;
  r->text[r->text_len] = 0;
  if (g->cb && g->cb->on_text && b.len && g->cb->on_text(g->cb->ctx, b.data, b.len))
    g->cancelled = 1;
  proto_buf_free(&b);
  return PROTO_OK;
}

static size_t stop_len(const gen *g, size_t i) {
  return g->rq->stop_lens ? g->rq->stop_lens[i] : strlen(g->rq->stop[i]);
}

/* After new bytes: emits what can no longer be part of a stop sequence.
 * Sets *stopped when a stop sequence matched (its text is not emitted). */
static proto_status advance_text(gen *g, int *stopped) {
  const srv_gen_request *rq = g->rq;
  size_t best = (size_t)-1;
  for (size_t i = 0; i < rq->n_stop; i++) {
    size_t sl = stop_len(g, i);
    if (sl == 0 || g->raw_len - g->emitted < sl) continue;
    for (size_t p = g->emitted; p + sl <= g->raw_len && p < best; p++)
      if (memcmp(g->raw + p, rq->stop[i], sl) == 0) {
        best = p;
        break;
      }
  }
  if (best != (size_t)-1) {
    *stopped = 1;
    return emit(g, best);
  }
  size_t hold = 0;
  for (size_t i = 0; i < rq->n_stop; i++) {
    size_t sl = stop_len(g, i);
    for (size_t h = sl > 0 ? sl - 1 : 0; h > hold; h--) {
      if (h > g->raw_len - g->emitted) continue;
      if (memcmp(g->raw + g->raw_len - h, rq->stop[i], h) == 0) {
        hold = h;
        break;
      }
    }
  }
  size_t end = g->raw_len - hold;
  end -= utf8_tail(g->raw + g->emitted, end - g->emitted);
  return emit(g, end);
}

static proto_status check_request(const srv_gen_request *rq) {
  if (rq->max_tokens < 1) return srv__fail(PROTO_ERANGE, "max_tokens: must be at least 1");
  if (!(rq->temperature >= 0) || !isfinite(rq->temperature))
    return srv__fail(PROTO_ERANGE, "temperature: must be >= 0");
  if (!(rq->top_p > 0 && rq->top_p <= 1))
    return srv__fail(PROTO_ERANGE, "top_p: must be in (0, 1]");
  if (rq->top_k < 0) return srv__fail(PROTO_ERANGE, "top_k: must be >= 0");
  if (rq->logprobs < -1 || rq->logprobs > 5)
    return srv__fail(PROTO_ERANGE, "logprobs: must be in [0, 5]");
  if (rq->k < 0 || rq->k > PROTO_MAX_K)
    return srv__fail(PROTO_ERANGE, "k: must be in [0, %d]", PROTO_MAX_K);
  if (rq->n_stop && !rq->stop) return srv__fail(PROTO_EINVAL, "stop: NULL");
  if (rq->n_exclude && !rq->exclude_docs) return srv__fail(PROTO_EINVAL, "exclude_docs: NULL");
  if (!rq->prompt && rq->prompt_len) return srv__fail(PROTO_EINVAL, "prompt: NULL");
  return PROTO_OK;
}

static _Atomic uint64_t seed_counter;

/* The prompt's tokens (a lone end-of-text for an empty prompt, counted in
 * out->prompt_tokens as none), checked against the model's length; *ptoks
 * is the caller's to free. */
static proto_status prompt_tokens(srv_engine *e, const srv_gen_request *rq, int32_t **ptoks,
                                  size_t *n, srv_gen_result *out) {
  proto_status s;
  *ptoks = NULL;
  *n = 0;
  if (rq->prompt_len && (s = tok_encode(e->ctok, rq->prompt, rq->prompt_len, ptoks, n)) != PROTO_OK)
    return srv__fail(s, "prompt: %s", tok_last_error());
  out->prompt_tokens = (int)*n;
  if (*n == 0) {
    free(*ptoks); /* the tokenizer may hand back an empty allocation */
    *ptoks = NULL;
    if (e->eos_id < 0)
      return srv__fail(PROTO_EINVAL,
                       "prompt: empty, and the model has no end-of-text token to start from");
    if (!(*ptoks = malloc(sizeof **ptoks))) return srv__fail(PROTO_ENOMEM, "out of memory");
    (*ptoks)[0] = e->eos_id;
    *n = 1;
  }
  if (*n >= (size_t)e->max_seq)
    return srv__fail(PROTO_ERANGE, "prompt: %zu tokens; this model takes at most %d in all", *n,
                     e->max_seq - 1);
  return PROTO_OK;
}

/* The sampler's parameters, with the seed asked for or a fresh one
 * (reported in out->seed). */
static proto_status gen_sample_params(const srv_gen_request *rq, srv_gen_result *out,
                                      sample_params *sp) {
  out->seed = rq->has_seed ? rq->seed
                           : (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL ^
                                 (uint64_t)(proto_now() * 1e9) ^ atomic_fetch_add(&seed_counter, 1);
  *sp = sample_params_default();
  sp->temperature = (float)rq->temperature;
  sp->top_k = rq->top_k;
  sp->top_p = (float)rq->top_p;
  sp->seed = out->seed;
  sp->n_logprobs = rq->logprobs > 0 ? rq->logprobs : 0;
  return sample_params_check(sp); /* on failure the detail names the parameter */
}

/* g on slot's decoder state (made on first use, then reset), its buffers
 * and sampler, the prompt (n tokens) in g->seq. */
static proto_status gen_start(gen *g, int slot, const sample_params *sp, const int32_t *ptoks,
                              size_t n) {
  srv_engine *e = g->e;
  const retro_config *rc = retro_get_config(e->dec);
  proto_status s;
  if (!e->states[slot] && (s = retro_state_new(e->dec, e->max_seq, &e->states[slot])) != PROTO_OK)
    return srv__fail(s, "decoder state: %s", retro_last_error());
  g->st = e->states[slot];
  retro_state_reset(g->st);
  g->k = g->rq->k > 0 ? g->rq->k : rc->n_neighbours > 0 ? rc->n_neighbours : 2;
  g->pad = e->pad_id >= 0 ? e->pad_id : e->eos_id >= 0 ? e->eos_id : 0;
  g->seq = malloc((size_t)e->max_seq * sizeof *g->seq);
  g->nbuf = malloc((size_t)g->k * PROTO_NEIGHBOUR_TOKENS * sizeof *g->nbuf);
  g->logits = malloc((size_t)rc->vocab_size * sizeof *g->logits);
  if (!g->seq || !g->nbuf || !g->logits) return srv__fail(PROTO_ENOMEM, "out of memory");
  for (size_t i = 0; i < g->rq->n_stop; i++)
    if (stop_len(g, i) > g->max_stop) g->max_stop = stop_len(g, i);
  if ((s = sample_new(rc->vocab_size, sp, &g->smp)) != PROTO_OK)
    return srv__fail(s, "sampler: bad parameters");
  memcpy(g->seq, ptoks, n * sizeof *g->seq);
  g->n_seq = (int)n;
  return PROTO_OK;
}

static void gen_free(gen *g) {
  sample_free(g->smp);
  free(g->logits);
  free(g->seq);
  free(g->nbuf);
  free(g->raw);
}

/* Neighbours of the complete prompt chunks, then the prompt in one pass
 * (the logits of its last position in g->logits). */
static proto_status gen_prompt_pass(gen *g) {
  const srv_gen_callbacks *cb = g->cb;
  int n_full = g->n_seq / PROTO_CHUNK_TOKENS;
  proto_status s;
  if (g->rq->retrieval && n_full > 0) {
    int *us = malloc((size_t)n_full * sizeof *us);
    if (!us) return srv__fail(PROTO_ENOMEM, "out of memory");
    for (int u = 0; u < n_full; u++) us[u] = u;
    s = retrieve(g, us, n_full, 1);
    free(us);
    if (s != PROTO_OK) return s;
  }
  if (cb && cb->should_cancel && cb->should_cancel(cb->ctx)) g->cancelled = 1;
  if (!g->cancelled && (s = retro_forward(g->st, g->seq, g->n_seq, 0, g->logits)) != PROTO_OK)
    return srv__fail(s, "decoder: %s", retro_last_error());
  return PROTO_OK;
}

/* With logprobs: token t (its piece, plen bytes; NULL for end-of-text) and
 * its alternatives appended to g->res->tokens. */
static proto_status gen_record_token(gen *g, int32_t t, const sample_result *sr, const char *piece,
                                     size_t plen) {
  srv_gen_result *out = g->res;
  proto_status s = grow((void **)&out->tokens, &g->tok_cap, out->n_tokens + 1, sizeof *out->tokens);
  if (s != PROTO_OK) return s;
  srv_gen_token *gt = &out->tokens[out->n_tokens++];
  memset(gt, 0, sizeof *gt);
  gt->id = t;
  gt->piece = strdup(piece ? piece : "");
  gt->piece_len = piece ? plen : 0;
  if (!gt->piece) return srv__fail(PROTO_ENOMEM, "out of memory");
  gt->text_offset = g->raw_len;
  gt->logprob = sr->logprob;
  gt->n_top = sr->n_top < 5 ? sr->n_top : 5;
  for (int j = 0; j < gt->n_top; j++) {
    gt->top_ids[j] = sr->top_tokens[j];
    gt->top_logprobs[j] = sr->top_logprobs[j];
    char *tp = NULL;
    size_t tl = 0;
    if (tok_decode(g->e->ctok, &sr->top_tokens[j], 1, &tp, &tl) != PROTO_OK) {
      free(tp);
      tp = strdup("");
    }
    gt->top_pieces[j] = tp;
    if (!tp) return srv__fail(PROTO_ENOMEM, "out of memory");
  }
  return PROTO_OK;
}

/* The completion's text grows by piece; stop sequences checked, the text
 * streamed. *stopped when a stop sequence ended it. */
static proto_status gen_add_text(gen *g, const char *piece, size_t plen, int *stopped) {
  proto_status s = grow((void **)&g->raw, &g->raw_cap, g->raw_len + plen + 1, 1);
  if (s != PROTO_OK) return s;
  memcpy(g->raw + g->raw_len, piece, plen);
  g->raw_len += plen;
  if ((s = advance_text(g, stopped)) != PROTO_OK) return s;
  if (*stopped) g->raw_len = g->emitted; /* nothing after the stop sequence is flushed */
  return PROTO_OK;
}

/* Token i of at most max_new: sampled from g->logits, recorded, and fed
 * (after the retrieval for the chunk it completes) unless it is the last.
 * *finish: "stop" at end-of-text or a stop sequence; *done when
 * generation ends here. */
static proto_status gen_step(gen *g, int i, int max_new, const char **finish, int *done) {
  srv_engine *e = g->e;
  sample_result sr;
  proto_status s = sample_next(g->smp, g->logits, &sr);
  if (s != PROTO_OK) return srv__fail(s, "sampling: the logits are not finite");
  if (i == 0) g->res->first_token_s = proto_now() - g->t0;
  int32_t t = sr.token;
  int pos = g->n_seq;
  g->seq[g->n_seq++] = t;
  g->res->completion_tokens++;
  int is_eos = t == e->eos_id, stopped = 0;
  char *piece = NULL;
  size_t plen = 0;
  if (!is_eos && (s = tok_decode(e->ctok, &t, 1, &piece, &plen)) != PROTO_OK)
    s = srv__fail(s, "decoding token %d: %s", (int)t, tok_last_error());
  if (s == PROTO_OK && g->rq->logprobs >= 0) s = gen_record_token(g, t, &sr, piece, plen);
  if (s == PROTO_OK && !is_eos) s = gen_add_text(g, piece, plen, &stopped);
  free(piece);
  if (s != PROTO_OK) return s;
  if (is_eos || stopped) *finish = "stop";
  *done = is_eos || stopped || i == max_new - 1 || g->cancelled;
  if (*done) return PROTO_OK;
  /* t completes chunk u: its neighbours must be set before t is fed */
  if (g->rq->retrieval && (pos + 1) % PROTO_CHUNK_TOKENS == 0) {
    int u = pos / PROTO_CHUNK_TOKENS;
    if ((s = retrieve(g, &u, 1, 0)) != PROTO_OK) return s;
  }
  if ((s = retro_forward(g->st, &t, 1, 0, g->logits)) != PROTO_OK)
    return srv__fail(s, "decoder: %s", retro_last_error());
  return PROTO_OK;
}

/* The prompt pass, then up to max_new tokens; the text's end emitted. */
static proto_status gen_run(gen *g, int max_new) {
  const srv_gen_callbacks *cb = g->cb;
  const char *finish = "length";
  proto_status s = gen_prompt_pass(g);
  for (int i = 0, done = 0; s == PROTO_OK && i < max_new && !g->cancelled && !done; i++) {
    if (cb && cb->should_cancel && cb->should_cancel(cb->ctx)) {
      g->cancelled = 1;
      break;
    }
    s = gen_step(g, i, max_new, &finish, &done);
  }
  if (s == PROTO_OK) s = emit(g, g->raw_len);
  if (s != PROTO_OK) return s;
  if (!g->res->text && !(g->res->text = calloc(1, 1)))
    return srv__fail(PROTO_ENOMEM, "out of memory");
  g->res->finish_reason = g->cancelled ? "cancelled" : finish;
  if (g->cancelled) return srv__fail(PROTO_ECANCELLED, "generation cancelled");
  return PROTO_OK;
}

proto_status srv_generate(srv_engine *e, const srv_gen_request *rq, const srv_gen_callbacks *cb,
                          srv_gen_result *out) {
  if (!e || !rq || !out) return srv__fail(PROTO_EINVAL, "srv_generate: NULL argument");
  memset(out, 0, sizeof *out);
  if (!e->dec) return srv__fail(PROTO_EUNAVAIL, "no decoder is loaded: generation is unavailable");
  proto_status s = check_request(rq);
  if (s != PROTO_OK) return s;
  int32_t *ptoks = NULL;
  size_t n_ptoks = 0;
  sample_params sp;
  int slot = -1;
  if ((s = prompt_tokens(e, rq, &ptoks, &n_ptoks, out)) != PROTO_OK ||
      (s = gen_sample_params(rq, out, &sp)) != PROTO_OK) {
    free(ptoks);
    return s;
  }
  int max_new = rq->max_tokens;
  if ((size_t)max_new > (size_t)e->max_seq - n_ptoks) max_new = e->max_seq - (int)n_ptoks;
  double tq = proto_now();
  if ((s = slot_acquire(e, cb, &slot)) != PROTO_OK) {
    free(ptoks);
    if (s == PROTO_ECANCELLED) out->finish_reason = "cancelled";
    return s;
  }
  gen g = {.e = e, .rq = rq, .cb = cb, .res = out, .t0 = proto_now()};
  out->queue_s = g.t0 - tq;
  s = gen_start(&g, slot, &sp, ptoks, n_ptoks);
  free(ptoks);
  if (s == PROTO_OK) s = gen_run(&g, max_new);
  if (s == PROTO_OK || s == PROTO_ECANCELLED) {
    atomic_fetch_add(&e->n_generations, 1);
    atomic_fetch_add(&e->n_gen_tokens, (uint64_t)out->completion_tokens);
  }
  out->total_s = proto_now() - g.t0;
  if (s != PROTO_OK && !out->finish_reason) out->finish_reason = "error";
  slot_release(e, slot);
  gen_free(&g);
  return s;
}
