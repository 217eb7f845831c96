/* rerank.c - the cross-encoder reranker (rerank.h): model/bert.c reads the
 * pair, this file checks the directory is a one-label sequence classifier
 * and applies its head. */
#include "rerank.h"

#include "bert.h"
#include "st.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct reranker {
  bert *enc;
  int H;
  float *dense_w, *dense_b; /* H x H, H */
  float *out_w, out_b;      /* H, 1 */
  char name[96];
};

const char *rerank_last_error(void) { return proto_err_get(); }

const char *rerank_name(const reranker *r) { return r->name; }

/* config.json must describe a BERT or RoBERTa classifier with one label;
 * *roberta says which. */
static proto_status check_config(const char *dir, int *roberta) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
    return proto_fail(PROTO_EINVAL, "%s: path too long", dir);
  json_error_t je;
  json_t *cfg = json_load_file(path, 0, &je);
  if (!cfg) return proto_fail(PROTO_EMODEL, "%s: %s (line %d)", path, je.text, je.line);
  proto_status st = PROTO_OK;
  const char *mt = json_string_value(json_object_get(cfg, "model_type"));
  json_t *labels = json_object_get(cfg, "id2label");
  json_t *nl = json_object_get(cfg, "num_labels");
  size_t n_labels = labels ? json_object_size(labels) : (nl ? (size_t)json_integer_value(nl) : 0);
  *roberta = mt && strcmp(mt, "roberta") == 0;
  if (!mt || (!*roberta && strcmp(mt, "bert") != 0))
    st = proto_fail(PROTO_EMODEL,
                    "%s: a reranker is a BERT or RoBERTa sequence classifier (model_type \"bert\" "
                    "or \"roberta\")",
                    path);
  else if (n_labels != 1)
    st = proto_fail(PROTO_EMODEL, "%s: a reranker has one label (id2label or num_labels), not %zu",
                    path, n_labels);
  json_decref(cfg);
  return st;
}

/* A copy of tensor name (shape d0 x d1, or d0 when d1 is 0) of f. */
static proto_status head_tensor(st_file *f, const char *name, int64_t d0, int64_t d1, float **out) {
  int64_t shape[2] = {d0, d1};
  const float *v = NULL;
  proto_status st = st_get_f32(f, name, d1 ? 2 : 1, shape, &v);
  if (st == PROTO_OK) st = st_check_finite(f, name, v);
  if (st != PROTO_OK)
    return proto_fail(st == PROTO_ENOMEM ? st : PROTO_EMODEL, "%s", st_last_error());
  size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
  if (!(*out = malloc(n * sizeof **out))) return proto_fail(PROTO_ENOMEM, "out of memory");
  memcpy(*out, v, n * sizeof **out);
  return PROTO_OK;
}

/* The head's tensors: RobertaForSequenceClassification's classifier.dense
 * and classifier.out_proj, or BertForSequenceClassification's pooler and
 * classifier (the same dense, tanh, one-output layer). */
static const char *const HEAD_NAMES[2][4] = {
    {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"},
    {"classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
     "classifier.out_proj.bias"},
};

static proto_status load_head(reranker *r, const char *dir, int roberta) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s/model.safetensors", dir) >= (int)sizeof path)
    return proto_fail(PROTO_EINVAL, "%s: path too long", dir);
  st_file *f = NULL;
  proto_status st = st_open(path, &f);
  if (st != PROTO_OK) return proto_fail(st, "%s", st_last_error());
  float *ob = NULL;
  int64_t H = r->H;
  const char *const *nm = HEAD_NAMES[roberta];
  if ((st = head_tensor(f, nm[0], H, H, &r->dense_w)) == PROTO_OK &&
      (st = head_tensor(f, nm[1], H, 0, &r->dense_b)) == PROTO_OK &&
      (st = head_tensor(f, nm[2], 1, H, &r->out_w)) == PROTO_OK &&
      (st = head_tensor(f, nm[3], 1, 0, &ob)) == PROTO_OK)
    r->out_b = ob[0];
  free(ob);
  st_close(f);
  return st;
}

proto_status rerank_open(const char *dir, int threads, reranker **out) {
  if (!dir || !out) return proto_fail(PROTO_EINVAL, "rerank_open: NULL argument");
  *out = NULL;
  int roberta = 0;
  proto_status st = check_config(dir, &roberta);
  if (st != PROTO_OK) return st;
  reranker *r = calloc(1, sizeof *r);
  if (!r) return proto_fail(PROTO_ENOMEM, "out of memory");
  /* the first token's output as it is: the head, not a normalised vector */
  bert_options bo = {.pooling = BERT_POOL_CLS, .threads = threads, .no_normalize = 1};
  if ((st = bert_open(dir, &bo, &r->enc)) != PROTO_OK) {
    free(r);
    return st;
  }
  r->H = (int)bert_dim(r->enc);
  if ((st = load_head(r, dir, roberta)) != PROTO_OK) {
    rerank_close(r);
    return st;
  }
  const char *base = strrchr(dir, '/');
  base = base && base[1] ? base + 1 : dir;
  snprintf(r->name, sizeof r->name, "%.80s:%d", base, r->H);
  *out = r;
  return PROTO_OK;
}

void rerank_close(reranker *r) {
  if (!r) return;
  bert_close(r->enc);
  free(r->dense_w);
  free(r->dense_b);
  free(r->out_w);
  free(r);
}

/* out_proj . tanh(dense . x + b) + b, for one first-token output x. */
static float head(const reranker *r, const float *x) {
  double s = r->out_b;
  for (int i = 0; i < r->H; i++) {
    const float *w = r->dense_w + (size_t)i * (size_t)r->H;
    double h = r->dense_b[i];
    for (int j = 0; j < r->H; j++) h += (double)w[j] * (double)x[j];
    s += (double)r->out_w[i] * tanh(h);
  }
  return (float)s;
}

proto_status rerank_score(reranker *r, const char *query, size_t query_len,
                          const char *const *passages, const size_t *passage_lens, size_t n,
                          float *out) {
  if (!r || !query || (n && (!passages || !out)))
    return proto_fail(PROTO_EINVAL, "rerank_score: NULL argument");
  if (n == 0) return PROTO_OK;
  const tok *tk = bert_tokenizer(r->enc);
  int32_t *q = NULL;
  size_t nq = 0;
  proto_status st = tok_encode(tk, query, query_len, &q, &nq);
  if (st != PROTO_OK)
    return proto_fail(st, "rerank: the query: %s (tokenizer)", proto_strerror(st));
  if (nq > RERANK_MAX_QUERY_TOKENS) nq = RERANK_MAX_QUERY_TOKENS;
  int32_t **ids = calloc(n, sizeof *ids);
  const int32_t **qs = calloc(n, sizeof *qs);
  size_t *lens = calloc(n, sizeof *lens), *qlens = calloc(n, sizeof *qlens);
  float *first = malloc(n * (size_t)r->H * sizeof *first);
  if (!ids || !qs || !lens || !qlens || !first) {
    st = proto_fail(PROTO_ENOMEM, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < n && st == PROTO_OK; i++) {
    const char *p = passages[i] ? passages[i] : "";
    qs[i] = q;
    qlens[i] = nq;
    st = tok_encode(tk, p, passage_lens ? passage_lens[i] : strlen(p), &ids[i], &lens[i]);
    if (st != PROTO_OK)
      st = proto_fail(st, "rerank: passage %zu: %s (tokenizer)", i, proto_strerror(st));
  }
  /* the encoder cuts each passage to what its length leaves after the query */
  if (st == PROTO_OK)
    st = bert_embed_pairs(r->enc, qs, qlens, (const int32_t *const *)ids, lens, n, first);
  if (st == PROTO_OK)
    for (size_t i = 0; i < n; i++) out[i] = head(r, first + i * (size_t)r->H);
done:
  if (ids)
    for (size_t i = 0; i < n; i++) free(ids[i]);
  free(ids);
  free(qs);
  free(lens);
  free(qlens);
  free(first);
  free(q);
  return st;
}
