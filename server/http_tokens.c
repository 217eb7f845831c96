/* http_tokens.c - the routes about tokens: POST /tokenize and /detokenize
 * (llama.cpp's shapes, the decoder's or the encoder's tokenizer) and prompt
 * scoring (POST /v1/completions with echo: the prompt's token logprobs,
 * computed by srv_eval_doc as `retro eval` computes them). */
#include "http_priv.h"
#include "views.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- prompt scoring (echo) ------------------------------------------------ */

/* One prompt token as srv_eval_doc scored it. */
typedef struct scored_tok {
  int32_t id;
  int scored;    /* 0: the first token of a window (context only) */
  float logprob; /* natural log */
  int n_top;
  int32_t top_id[PROTO_MAX_LOGPROBS];
  float top_lp[PROTO_MAX_LOGPROBS];
} scored_tok;

typedef struct score_ctx {
  int want_top; /* logprobs alternatives asked for */
  scored_tok *t;
  size_t n, cap;
  proto_buf chunks; /* the "chunks" array's elements, JSON */
  proto_jw jw;
  int failed;
} score_ctx;

static void score_on_token(void *ctx, size_t pos, int32_t id, int scored, double bits,
                           const float *lg, int V) {
  score_ctx *c = ctx;
  (void)pos;
  if (c->n == c->cap) {
    size_t cap = c->cap ? 2 * c->cap : 256;
    scored_tok *t = realloc(c->t, cap * sizeof *t);
    if (!t) {
      c->failed = 1;
      return;
    }
    c->t = t;
    c->cap = cap;
  }
  scored_tok *x = &c->t[c->n++];
  memset(x, 0, sizeof *x);
  x->id = id;
  x->scored = scored;
  if (!scored) return;
  x->logprob = (float)(-bits * 0.69314718055994531);
  if (c->want_top <= 0) return;
  /* log-softmax of the row: log p(v) = lg[v] - (max + log sum exp(lg - max)) */
  float mx = lg[0];
  for (int v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
  double sum = 0;
  for (int v = 0; v < V; v++) sum += exp((double)(lg[v] - mx));
  double lse = (double)mx + log(sum);
  for (int v = 0; v < V; v++) { /* insertion into the top list */
    int j = x->n_top < c->want_top ? x->n_top++ : c->want_top;
    if (j == c->want_top && lg[v] <= lg[x->top_id[j - 1]]) continue;
    if (j == c->want_top) j--;
    while (j > 0 && lg[x->top_id[j - 1]] < lg[v]) {
      x->top_id[j] = x->top_id[j - 1];
      j--;
    }
    x->top_id[j] = v;
  }
  for (int j = 0; j < x->n_top; j++) x->top_lp[j] = (float)((double)lg[x->top_id[j]] - lse);
}

static void score_on_neighbours(void *ctx, size_t chunk, const srv_hits *h) {
  score_ctx *c = ctx;
  proto_jw *w = &c->jw;
  proto_jw_obj(w);
  proto_jw_key(w, "chunk");
  proto_jw_uint(w, chunk);
  proto_jw_key(w, "in_prompt");
  proto_jw_bool(w, 1);
  proto_jw_key(w, "neighbors");
  proto_jw_arr(w);
  for (size_t i = 0; i < h->n; i++) {
    const srv_hit *x = &h->hits[i];
    view_neighbour(w, x->chunk_id, x->doc_id, x->doc_num, x->score, x->text, x->text_len,
                   x->next_text, x->next_text_len);
  }
  proto_jw_arr_end(w);
  proto_jw_obj_end(w);
}

/* The piece of token id (its bytes; may end inside a UTF-8 sequence). */
static void piece_of(const tok *t, int32_t id, proto_buf *out) {
  char *p = NULL;
  size_t n = 0;
  out->len = 0;
  if (tok_decode(t, &id, 1, &p, &n) == PROTO_OK) proto_buf_add(out, p, n);
  free(p);
}

/* Scores the prompt into c and acc (srv_eval_doc, then the tokens of a last
 * window too short to score, as context only). 0, or -1 with resp set. */
static int score_prompt(http_server *s, const proto_complete_req *req, score_ctx *c,
                        srv_eval_result *acc, http_response *resp) {
  srv_eval_options o = {.retrieval = req->retrieval,
                        .k = req->k,
                        .exclude_self = req->n_exclude == 1,
                        .retrieval_mode = (srv_search_mode)req->retrieval_mode,
                        .on_token = score_on_token,
                        .on_neighbours = score_on_neighbours,
                        .cb_ctx = c};
  proto_status st = srv_eval_doc(s->engine, &o, req->n_exclude ? req->exclude_docs[0] : NULL,
                                 req->prompt, req->prompt_len, acc);
  if (st != PROTO_OK) {
    http_engine_error(resp, st, "completions (echo)");
    return -1;
  }
  /* a last window of one token is neither scored nor reported: context only */
  int32_t *all = NULL;
  size_t n_all = 0;
  if (req->prompt_len && tok_encode(srv_engine_chunk_tokenizer(s->engine), req->prompt,
                                    req->prompt_len, &all, &n_all) == PROTO_OK)
    for (size_t i = c->n; i < n_all; i++) score_on_token(c, i, all[i], 0, 0, NULL, 0);
  free(all);
  if (c->failed || c->chunks.failed) {
    http_error(resp, PROTO_ENOMEM, "out of memory");
    return -1;
  }
  proto_jw_arr_end(&c->jw);
  return 0;
}

/* A top-logprobs key: the piece as valid UTF-8 (a piece may end inside a
 * character). */
static void score_top_key(proto_jw *w, const char *p, size_t n) {
  proto_buf key;
  proto_buf_init(&key);
  proto_buf_add_utf8_lossy(&key, p ? p : "", n);
  proto_jw_key(w, key.data ? key.data : "");
  proto_buf_free(&key);
}

/* "top_logprobs": per prompt token (null when not scored), then per
 * generated token. piece is scratch space. */
static void score_write_top(proto_jw *w, const tok *t, const score_ctx *c,
                            const srv_gen_result *res, proto_buf *piece) {
  proto_jw_key(w, "top_logprobs");
  proto_jw_arr(w);
  for (size_t i = 0; i < c->n; i++) {
    if (!c->t[i].scored) {
      proto_jw_null(w);
      continue;
    }
    proto_jw_obj(w);
    for (int j = 0; j < c->t[i].n_top; j++) {
      piece_of(t, c->t[i].top_id[j], piece);
      score_top_key(w, piece->data, piece->len);
      proto_jw_float(w, c->t[i].top_lp[j]);
    }
    proto_jw_obj_end(w);
  }
  for (size_t i = 0; i < res->n_tokens; i++) {
    proto_jw_obj(w);
    for (int j = 0; j < res->tokens[i].n_top && j < PROTO_MAX_LOGPROBS; j++) {
      const char *p = res->tokens[i].top_pieces[j];
      score_top_key(w, p, p ? strlen(p) : 0);
      proto_jw_float(w, res->tokens[i].top_logprobs[j]);
    }
    proto_jw_obj_end(w);
  }
  proto_jw_arr_end(w);
}

/* OpenAI's legacy "logprobs" object over the prompt's tokens then the
 * completion's. */
static void score_write_logprobs(proto_jw *w, const tok *t, const proto_complete_req *req,
                                 const score_ctx *c, const srv_gen_result *res) {
  proto_buf piece;
  proto_buf_init(&piece);
  proto_jw_obj(w);
  proto_jw_key(w, "tokens");
  proto_jw_arr(w);
  for (size_t i = 0; i < c->n; i++) {
    piece_of(t, c->t[i].id, &piece);
    proto_jw_str(w, piece.data ? piece.data : "", piece.len);
  }
  for (size_t i = 0; i < res->n_tokens; i++)
    proto_jw_str(w, res->tokens[i].piece, res->tokens[i].piece_len);
  proto_jw_arr_end(w);
  proto_jw_key(w, "token_logprobs");
  proto_jw_arr(w);
  for (size_t i = 0; i < c->n; i++)
    if (c->t[i].scored) proto_jw_float(w, c->t[i].logprob);
    else proto_jw_null(w);
  for (size_t i = 0; i < res->n_tokens; i++) proto_jw_float(w, res->tokens[i].logprob);
  proto_jw_arr_end(w);
  score_write_top(w, t, c, res, &piece);
  proto_jw_key(w, "text_offset");
  proto_jw_arr(w);
  size_t off = 0;
  for (size_t i = 0; i < c->n; i++) {
    proto_jw_uint(w, off);
    piece_of(t, c->t[i].id, &piece);
    off += piece.len;
  }
  for (size_t i = 0; i < res->n_tokens; i++)
    proto_jw_uint(w, req->prompt_len + res->tokens[i].text_offset);
  proto_jw_arr_end(w);
  proto_jw_obj_end(w);
  proto_buf_free(&piece);
}

/* The one choice: the prompt and its completion, their logprobs. */
static void score_write_choice(proto_jw *w, const tok *t, const proto_complete_req *req,
                               const score_ctx *c, const srv_gen_result *res) {
  proto_jw_obj(w);
  proto_buf text;
  proto_buf_init(&text);
  proto_buf_add(&text, req->prompt, req->prompt_len);
  proto_buf_add(&text, res->text, res->text_len);
  proto_jw_key(w, "text");
  proto_jw_str(w, text.data ? text.data : "", text.len);
  proto_buf_free(&text);
  proto_jw_key(w, "index");
  proto_jw_int(w, 0);
  proto_jw_key(w, "logprobs");
  if (req->logprobs < 0) proto_jw_null(w);
  else score_write_logprobs(w, t, req, c, res);
  proto_jw_key(w, "finish_reason");
  proto_jw_cstr(w, req->max_tokens ? res->finish_reason : "length");
  proto_jw_obj_end(w);
}

/* "retro": the prompt's bits per byte, each chunk's neighbours, the time. */
static void score_write_retro(proto_jw *w, const proto_complete_req *req, const score_ctx *c,
                              const srv_eval_result *acc, double t0) {
  proto_jw_obj(w);
  proto_jw_key(w, "retrieval");
  proto_jw_bool(w, req->retrieval);
  proto_jw_key(w, "prompt_scoring");
  proto_jw_obj(w);
  proto_jw_key(w, "tokens");
  proto_jw_uint(w, acc->tokens);
  proto_jw_key(w, "bytes");
  proto_jw_uint(w, acc->bytes);
  proto_jw_key(w, "bits");
  proto_jw_num(w, acc->bits);
  proto_jw_key(w, "bpb");
  if (acc->bytes) proto_jw_num(w, acc->bits / (double)acc->bytes);
  else proto_jw_null(w);
  proto_jw_obj_end(w);
  proto_jw_key(w, "chunks");
  proto_jw_raw(w, c->chunks.data, c->chunks.len);
  proto_jw_key(w, "timings");
  proto_jw_obj(w);
  proto_jw_key(w, "total_s");
  proto_jw_num(w, proto_now() - t0);
  proto_jw_obj_end(w);
  proto_jw_obj_end(w);
}

/* echo: the prompt's tokens scored by srv_eval_doc (the computation of
 * `retro eval`, so the bits per byte agree), then, when max_tokens > 0, a
 * completion generated as usual; OpenAI's legacy logprobs over both (the
 * first token of each window has no logprob: null). */
void http_score_run(http_server *s, const proto_complete_req *req, http_response *resp) {
  score_ctx c;
  memset(&c, 0, sizeof c);
  c.want_top = req->logprobs;
  proto_buf_init(&c.chunks);
  proto_jw_init(&c.jw, &c.chunks);
  proto_jw_arr(&c.jw);
  srv_eval_result acc;
  memset(&acc, 0, sizeof acc);
  srv_gen_result res;
  memset(&res, 0, sizeof res);
  double t0 = proto_now();
  if (score_prompt(s, req, &c, &acc, resp)) goto leave;
  if (req->max_tokens > 0) {
    srv_gen_request rq;
    http_gen_request(req, &rq); /* filter_json is NULL: echo refuses a filter */
    proto_status st = srv_generate(s->engine, &rq, NULL, &res);
    if (st != PROTO_OK) {
      http_engine_error(resp, st, "completions");
      goto leave;
    }
  }
  char id[48];
  static atomic_ullong counter;
  long long created = (long long)time(NULL);
  snprintf(id, sizeof id, "cmpl-%llx-e%llu", (unsigned long long)created,
           (unsigned long long)atomic_fetch_add(&counter, 1) + 1);
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  proto_jw_obj(&w);
  proto_jw_key(&w, "id");
  proto_jw_cstr(&w, id);
  proto_jw_key(&w, "object");
  proto_jw_cstr(&w, "text_completion");
  proto_jw_key(&w, "created");
  proto_jw_int(&w, created);
  proto_jw_key(&w, "model");
  proto_jw_cstr(&w, s->model_name);
  proto_jw_key(&w, "choices");
  proto_jw_arr(&w);
  score_write_choice(&w, srv_engine_chunk_tokenizer(s->engine), req, &c, &res);
  proto_jw_arr_end(&w);
  proto_jw_key(&w, "usage");
  proto_jw_obj(&w);
  proto_jw_key(&w, "prompt_tokens");
  proto_jw_uint(&w, c.n);
  proto_jw_key(&w, "completion_tokens");
  proto_jw_int(&w, res.completion_tokens);
  proto_jw_key(&w, "total_tokens");
  proto_jw_uint(&w, c.n + (size_t)res.completion_tokens);
  proto_jw_obj_end(&w);
  proto_jw_key(&w, "retro");
  score_write_retro(&w, req, &c, &acc, t0);
  proto_jw_obj_end(&w);
  http_ok_json(resp);
leave:
  srv_gen_result_free(&res);
  proto_buf_free(&c.chunks);
  free(c.t);
}

/* ---- tokenizers ----------------------------------------------------------- */

/* POST /tokenize, /detokenize: the decoder's tokenizer (the one that cuts
 * documents into chunks and reads prompts) unless "model" names the encoder. */
void http_tokenize(http_server *s, const http_request *rq, int detok, http_response *resp) {
  proto_tok_req r;
  char err[320];
  proto_status st = proto_tok_parse(rq->body, rq->body_len, detok, &r, err, sizeof err);
  if (st != PROTO_OK) {
    http_error(resp, st, err);
    return;
  }
  int32_t *ids = NULL;
  char *text = NULL;
  if (http_no_engine(s, resp)) goto leave;
  retro *dec = srv_engine_decoder(s->engine);
  int use_enc = r.model && (!strcmp(r.model, "encoder") || http_model_is(r.model, s->encoder_name));
  int use_dec = !r.model || !strcmp(r.model, "decoder") || http_model_is(r.model, s->model_name);
  if (!use_enc && !use_dec) {
    snprintf(err, sizeof err, "model: no model '%.64s' (tokenizers here: '%.64s' and '%.64s')",
             r.model, s->model_name, s->encoder_name);
    http_error(resp, PROTO_ENOTFOUND, err);
    goto leave;
  }
  const tok *t = use_enc                       ? bert_tokenizer(srv_engine_encoder(s->engine))
                 : dec && retro_tokenizer(dec) ? retro_tokenizer(dec)
                                               : srv_engine_chunk_tokenizer(s->engine);
  const char *name = use_enc ? s->encoder_name : s->model_name;
  proto_jw w;
  proto_jw_init(&w, &resp->body);
  proto_jw_obj(&w);
  if (detok) {
    size_t vocab = tok_vocab_size(t), len = 0;
    for (size_t i = 0; i < r.n_tokens; i++)
      if ((size_t)r.tokens[i] >= vocab) {
        snprintf(err, sizeof err, "tokens[%zu]: %d is not an id of %.64s's vocabulary (0..%zu)", i,
                 r.tokens[i], name, vocab - 1);
        proto_buf_free(&resp->body);
        http_error(resp, PROTO_ERANGE, err);
        goto leave;
      }
    st = tok_decode(t, r.tokens, r.n_tokens, &text, &len);
    if (st != PROTO_OK) {
      proto_buf_free(&resp->body);
      http_engine_error(resp, st, "detokenize");
      goto leave;
    }
    proto_jw_key(&w, "content");
    proto_jw_str(&w, text, len);
  } else {
    size_t n = 0;
    st = tok_encode(t, r.content, r.content_len, &ids, &n);
    if (st != PROTO_OK) {
      proto_buf_free(&resp->body);
      http_engine_error(resp, st, "tokenize");
      goto leave;
    }
    proto_jw_key(&w, "tokens");
    proto_jw_arr(&w);
    for (size_t i = 0; i < n; i++) {
      if (!r.with_pieces) {
        proto_jw_int(&w, ids[i]);
        continue;
      }
      char *piece = NULL;
      size_t plen = 0;
      proto_jw_obj(&w);
      proto_jw_key(&w, "id");
      proto_jw_int(&w, ids[i]);
      proto_jw_key(&w, "piece");
      if (tok_decode(t, &ids[i], 1, &piece, &plen) == PROTO_OK) proto_jw_str(&w, piece, plen);
      else proto_jw_null(&w);
      free(piece);
      proto_jw_obj_end(&w);
    }
    proto_jw_arr_end(&w);
  }
  proto_jw_key(&w, "model");
  proto_jw_cstr(&w, name);
  proto_jw_obj_end(&w);
  http_ok_json(resp);
leave:
  free(ids);
  free(text);
  proto_tok_free(&r);
}
