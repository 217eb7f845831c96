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

proto_status srv_eval_doc(srv_engine *e, const srv_eval_options *o, const char *id,
                          const char *text, size_t len, srv_eval_result *acc) {
  proto_status s = PROTO_OK;
  srv_search_mode mode = srv__retrieval_mode(e, o->retrieval_mode);
  int32_t *toks = NULL;
  size_t n = 0;
  retro_state *st = NULL;
  float *logits = NULL, *vec = NULL;
  int32_t *nbuf = NULL;
  uint16_t *row = NULL;
  char **ctext = NULL;     /* per chunk of the window: its text */
  size_t *clen = NULL;
  char ***ntext = NULL;    /* per chunk: its neighbours' [N F] texts */
  size_t **nlen = NULL;
  int *nn = NULL, maxc = 0;
  srv_search_result sr = {0};
  if (!e || !o || !acc || (!text && len)) return srv__fail(PROTO_EINVAL, "srv_eval_doc: NULL argument");
  if (!e->dec) return srv__fail(PROTO_EUNAVAIL, "no decoder is loaded");
  const retro_config *rc = retro_get_config(e->dec);
  int V = rc->vocab_size;
  int W = o->window > 0 && o->window < e->max_seq ? o->window : e->max_seq;
  W -= W % PROTO_CHUNK_TOKENS;
  if (W < 2 * PROTO_CHUNK_TOKENS) W = e->max_seq;
  int k = o->k > 0 ? o->k : rc->n_neighbours > 0 ? rc->n_neighbours : 2;
  double alpha = o->leak_alpha > 0 ? o->leak_alpha : 0.2;
  int32_t pad = e->pad_id >= 0 ? e->pad_id : e->eos_id >= 0 ? e->eos_id : 0;
  double t0 = proto_now();

  if (len && (s = tok_encode(e->ctok, text, len, &toks, &n)) != PROTO_OK)
    return srv__fail(s, "%s: %s", id ? id : "document", tok_last_error());
  maxc = W / PROTO_CHUNK_TOKENS;
  if ((s = retro_state_new(e->dec, W, &st)) != PROTO_OK) {
    s = srv__fail(s, "decoder state: %s", retro_last_error());
    goto leave;
  }
  logits = malloc((size_t)W * (size_t)V * sizeof *logits);
  vec = malloc((size_t)maxc * e->dim * sizeof *vec);
  nbuf = malloc((size_t)k * PROTO_NEIGHBOUR_TOKENS * sizeof *nbuf);
  row = malloc(1024 * sizeof *row);
  ctext = calloc((size_t)maxc, sizeof *ctext);
  clen = calloc((size_t)maxc, sizeof *clen);
  ntext = calloc((size_t)maxc, sizeof *ntext);
  nlen = calloc((size_t)maxc, sizeof *nlen);
  nn = calloc((size_t)maxc, sizeof *nn);
  if (!logits || !vec || !nbuf || !row || !ctext || !clen || !ntext || !nlen || !nn) {
    s = srv__fail(PROTO_ENOMEM, "out of memory");
    goto leave;
  }
  const char *excl[1] = {id};
  for (size_t w0 = 0; w0 + 1 < n; w0 += (size_t)W) {
    int wl = (int)(n - w0 < (size_t)W ? n - w0 : (size_t)W);
    int nc = wl / PROTO_CHUNK_TOKENS;            /* complete chunks */
    int nt = (wl + PROTO_CHUNK_TOKENS - 1) / PROTO_CHUNK_TOKENS;
    retro_state_reset(st);
    for (int c = 0; c < nt; c++) {
      size_t off = w0 + (size_t)c * PROTO_CHUNK_TOKENS;
      size_t cl = n - off < PROTO_CHUNK_TOKENS ? n - off : PROTO_CHUNK_TOKENS;
      free(ctext[c]);
      ctext[c] = NULL;
      if ((s = tok_decode(e->ctok, toks + off, cl, &ctext[c], &clen[c])) != PROTO_OK) {
        s = srv__fail(s, "decoding: %s", tok_last_error());
        goto leave;
      }
      nn[c] = 0;
    }
    if (o->retrieval && nc > 0) {
      const int32_t **ids = malloc((size_t)nc * sizeof *ids);
      size_t *lens = malloc((size_t)nc * sizeof *lens);
      char **etx = calloc((size_t)nc, sizeof *etx);
      size_t *etl = calloc((size_t)nc, sizeof *etl);
      if (!ids || !lens || !etx || !etl) {
        free(ids); free(lens); free(etx); free(etl);
        s = srv__fail(PROTO_ENOMEM, "out of memory");
        goto leave;
      }
      for (int c = 0; c < nc; c++) {
        ids[c] = toks + w0 + (size_t)c * PROTO_CHUNK_TOKENS;
        lens[c] = PROTO_CHUNK_TOKENS;
        if (!e->embed_by_ids || mode != SRV_MODE_DENSE) {
          proto_buf b;
          proto_buf_init(&b);
          proto_buf_add_utf8_lossy(&b, ctext[c], clen[c]);
          etx[c] = b.data ? b.data : calloc(1, 1);
          etl[c] = b.len;
        }
      }
      s = srv__embed_chunks(e, ids, lens, (const char *const *)etx, etl, (size_t)nc, vec);
      free(ids); free(lens);
      if (s != PROTO_OK) {
        for (int c = 0; c < nc; c++) free(etx[c]);
        free(etx); free(etl);
        goto leave;
      }
      srv_search_request q = {.vectors = vec, .n_vectors = (size_t)nc, .k = k,
                              .exclude_docs = o->exclude_self && id ? excl : NULL,
                              .n_exclude = o->exclude_self && id ? 1 : 0, .with_text = 1,
                              .mode = mode};
      if (mode != SRV_MODE_DENSE) {
        q.texts = (const char *const *)etx;
        q.text_lens = etl;
        q.n_texts = (size_t)nc;
      }
      s = srv_search(e, &q, &sr);
      for (int c = 0; c < nc; c++) free(etx[c]);
      free(etx);
      free(etl);
      if (s != PROTO_OK) goto leave;
      for (int c = 0; c < nc; c++) {
        srv_hits *h = &sr.queries[c];
        if (o->on_neighbours) o->on_neighbours(o->cb_ctx, w0 / PROTO_CHUNK_TOKENS + (size_t)c, h);
        ntext[c] = calloc(h->n ? h->n : 1, sizeof **ntext);
        nlen[c] = calloc(h->n ? h->n : 1, sizeof **nlen);
        if (!ntext[c] || !nlen[c]) { s = srv__fail(PROTO_ENOMEM, "out of memory"); goto leave; }
        for (size_t j = 0; j < h->n; j++) {
          srv_hit *x = &h->hits[j];
          int32_t *r = nbuf + j * PROTO_NEIGHBOUR_TOKENS;
          for (int t = 0; t < PROTO_NEIGHBOUR_TOKENS; t++) r[t] = pad;
          memcpy(r, x->tokens, (x->n_tokens < 64 ? x->n_tokens : 64) * sizeof *r);
          if (x->n_next_tokens)
            memcpy(r + 64, x->next_tokens, (x->n_next_tokens < 64 ? x->n_next_tokens : 64) * sizeof *r);
          /* [N F] text for the leakage measure */
          char *t = malloc(x->text_len + x->next_text_len + 1);
          if (!t) { s = srv__fail(PROTO_ENOMEM, "out of memory"); goto leave; }
          memcpy(t, x->text, x->text_len);
          memcpy(t + x->text_len, x->next_text, x->next_text_len);
          t[x->text_len + x->next_text_len] = 0;
          ntext[c][j] = t;
          nlen[c][j] = x->text_len + x->next_text_len;
          nn[c]++;
        }
        if ((s = retro_set_neighbours(st, c, nbuf, (int)h->n, pad)) != PROTO_OK) {
          s = srv__fail(s, "setting neighbours: %s", retro_last_error());
          goto leave;
        }
      }
      srv_search_result_free(&sr);
    }
    if ((s = retro_forward(st, toks + w0, wl, 1, logits)) != PROTO_OK) {
      s = srv__fail(s, "decoder: %s", retro_last_error());
      goto leave;
    }
    /* which chunks pass the leakage filter */
    int keep[4096];
    for (int c = 0; c < nt && c < 4096; c++) {
      keep[c] = 1;
      if (c == 0 || nn[c - 1] == 0) continue;
      size_t lim = (size_t)(alpha * (double)clen[c]);
      for (int j = 0; j < nn[c - 1] && keep[c]; j++) {
        size_t m = nlen[c - 1][j] < 1023 ? nlen[c - 1][j] : 1023;
        if (lcs_len(ctext[c], clen[c], ntext[c - 1][j], m, row) > lim) keep[c] = 0;
      }
    }
    for (int c = 0; c < nt; c++) {
      acc->chunks++;
      if (c < 4096 && keep[c]) acc->chunks_kept++;
    }
    if (o->on_token) o->on_token(o->cb_ctx, w0, toks[w0], 0, 0, NULL, V);
    for (int p = 0; p + 1 < wl; p++) {
      int32_t tgt = toks[w0 + (size_t)p + 1];
      double bits = token_bits(logits + (size_t)p * (size_t)V, V, tgt);
      if (o->on_token)
        o->on_token(o->cb_ctx, w0 + (size_t)p + 1, tgt, 1, bits, logits + (size_t)p * (size_t)V, V);
      char *piece = NULL;
      size_t pl = 0;
      if (tok_decode(e->ctok, &tgt, 1, &piece, &pl) != PROTO_OK) pl = 0;
      free(piece);
      acc->tokens++;
      acc->bytes += pl;
      acc->bits += bits;
      int c = (p + 1) / PROTO_CHUNK_TOKENS;
      if (c < 4096 && keep[c]) {
        acc->kept_tokens++;
        acc->kept_bytes += pl;
        acc->kept_bits += bits;
      }
    }
    if (o->compare_off && o->retrieval) { /* the same window, no neighbours */
      retro_state_reset(st);
      if ((s = retro_forward(st, toks + w0, wl, 1, logits)) != PROTO_OK) {
        s = srv__fail(s, "decoder: %s", retro_last_error());
        goto leave;
      }
      for (int p = 0; p + 1 < wl; p++) {
        double bits = token_bits(logits + (size_t)p * (size_t)V, V, toks[w0 + (size_t)p + 1]);
        int c = (p + 1) / PROTO_CHUNK_TOKENS;
        acc->off_bits += bits;
        if (c < 4096 && keep[c]) acc->kept_off_bits += bits;
      }
    }
    for (int c = 0; c < maxc; c++) {
      for (int j = 0; ntext[c] && j < nn[c]; j++) free(ntext[c][j]);
      free(ntext[c]);
      free(nlen[c]);
      ntext[c] = NULL;
      nlen[c] = NULL;
      nn[c] = 0;
    }
  }
  acc->docs++;
  acc->seconds += proto_now() - t0;
leave:
  srv_search_result_free(&sr);
  for (int c = 0; ctext && c < maxc; c++) {
    free(ctext[c]);
    for (int j = 0; ntext && ntext[c] && j < nn[c]; j++) free(ntext[c][j]);
    if (ntext) free(ntext[c]);
    if (nlen) free(nlen[c]);
  }
  free(ctext);
  free(clen);
  free(ntext);
  free(nlen);
  free(nn);
  free(row);
  free(nbuf);
  free(vec);
  free(logits);
  free(toks);
  retro_state_free(st);
  return s;
}
