/* bert.c - the BERT / RoBERTa encoder: loads a Hugging Face model directory
 * (config.json, model.safetensors, tokenizer files, sentence-transformers'
 * 1_Pooling/config.json) and embeds texts or token ids into pooled,
 * L2-normalised vectors.
 *
 * How a batch runs: the sequences are packed back to back into one
 * (tokens, hidden) matrix with no padding at all (attention is computed per
 * sequence, so padding would only waste work), in chunks of at most
 * `budget` tokens. Linear layers are single-threaded OpenBLAS sgemm calls on
 * tiles (row blocks, or column blocks for short inputs) spread over the
 * encoder's thread pool, each followed in cache by its epilogue (bias+GELU,
 * residual+LayerNorm); attention runs one (sequence, head) pair per pool task.
 * When the file stores F16 weights, inputs of at most 16 rows (a query)
 * multiply with them directly (kernels_f16.c): such calls are bound by reading
 * the weights, and F16 halves that (docs/BENCHMARKS.md, default encoder);
 * the weights are also kept as panels (kn_f16_pack), which those products
 * read faster, and inputs of up to kn_f16_panel_rows() rows (64 at AVX2
 * and on AMD Zen 4, 16 at AVX-512 elsewhere) take them too. Larger
 * inputs use the F32 copy and sgemm. BERT_F16=0 in the environment turns
 * it off.
 * All buffers live in arenas allocated at open; a call borrows one arena.
 *
 * It does not: run token-type ids other than 0, relative position
 * embeddings, activations other than exact GELU, or any head on top of the
 * encoder (pooler weights, if present, are ignored as in sentence-transformers).
 */
#include "bert.h"

#include "kernels.h"
#include "pool.h"
#include "st.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum {
  BERT_MIN_BUDGET = 1024, /* tokens per chunk (at least max_tokens) */
  BERT_ARENAS = 2,        /* concurrent calls served without waiting */
};

/* A weight as F16: the rows in the file, and the same as panels
 * (kn_f16_pack), which the few-row product reads faster. */
typedef struct f16_weight {
  const uint16_t *rows;
  uint16_t *panels;
} f16_weight;

typedef struct bert_layer {
  const float *wq, *bq, *wk, *bk, *wv, *bv; /* (H, H), (H) */
  const float *wo, *bo;                     /* attention.output.dense (H, H), (H) */
  const float *ln1_g, *ln1_b;               /* attention.output.LayerNorm (H) */
  const float *wi, *bi;                     /* intermediate.dense (I, H), (I) */
  const float *wf, *bf;                     /* output.dense (H, I), (H) */
  const float *ln2_g, *ln2_b;               /* output.LayerNorm (H) */
  /* the same weights as F16, for short inputs (rows NULL: F32 only) */
  f16_weight hq, hk, hv, ho, hi, hf;
} bert_layer;

typedef struct bert_arena {
  float *x;      /* (budget, H) hidden states */
  float *tmp;    /* (budget, H) */
  float *qkv;    /* (budget, 3H) */
  float *ctx;    /* (budget, H) attention context */
  float *inter;  /* (budget, I) */
  float *scores; /* (workers, T * T) attention probabilities, T = max_tokens */
  int32_t *ids;  /* (budget) packed token ids */
  int32_t *pos;  /* (budget) position ids */
  uint8_t *type; /* (budget) token type ids (1: a pair's second text, BERT) */
  int *start;    /* (budget) first row of each sequence in the chunk */
  int *len;      /* (budget) its length */
  int busy;
} bert_arena;

struct bert {
  /* config */
  int roberta;
  int vocab, H, L, nh, dh, I, max_pos, type_vocab, pad_id, max_tokens;
  float eps;
  bert_pooling pooling;
  int normalize;
  int f16; /* F16 weights for short inputs (file F16, CPU able) */
  int32_t cls_id, sep_id;
  char query_prefix[BERT_MAX_QUERY_PREFIX + 1]; /* config's "retro_query_prefix", or "" */
  /* weights (borrowed from st unless converted there) */
  st_file *st;
  const float *word, *posemb, *type; /* (V, H), (P, H), (TV, H) */
  const float *emb_g, *emb_b;        /* (H) */
  bert_layer *layers;                /* (L) */
  tok *tok;
  pool *pool;
  int workers;
  int budget;
  bert_arena arenas[BERT_ARENAS];
  pthread_mutex_t arena_mu;
  pthread_cond_t arena_cv;
  int sync_ok;
  char fingerprint[512];
};

const char *bert_last_error(void) { return proto_err_get(); }

/* ---- loading ------------------------------------------------------------ */

static int bert_path(char *buf, size_t cap, const char *dir, const char *name) {
  int n = snprintf(buf, cap, "%s/%s", dir, name);
  return n > 0 && (size_t)n < cap;
}

static int bert_file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Reads an integer field of config.json within [lo, hi]; when absent, def
 * (or PROTO_EMISSING if required). */
static proto_status bert_cfg_int(json_t *cfg, const char *path, const char *key, int required,
                                 int def, int lo, int hi, int *out) {
  json_t *v = json_object_get(cfg, key);
  if (!v || json_is_null(v)) {
    if (required) {
      proto_err_set("%s: missing \"%s\"", path, key);
      return PROTO_EMISSING;
    }
    *out = def;
    return PROTO_OK;
  }
  if (!json_is_integer(v)) {
    proto_err_set("%s: \"%s\" must be an integer", path, key);
    return PROTO_ETYPE;
  }
  json_int_t x = json_integer_value(v);
  if (x < lo || x > hi) {
    proto_err_set("%s: \"%s\" = %lld out of range [%d, %d]", path, key, (long long)x, lo, hi);
    return PROTO_ERANGE;
  }
  *out = (int)x;
  return PROTO_OK;
}

/* config.json -> b's sizes; *retro_pool = the "retro_pooling" choice, or
 * BERT_POOL_AUTO when absent. */
static proto_status bert_read_config(bert *b, const char *dir, bert_pooling *retro_pool) {
  char path[4096];
  proto_status st = PROTO_OK;
  *retro_pool = BERT_POOL_AUTO;
  if (!bert_path(path, sizeof path, dir, "config.json")) {
    proto_err_set("%s: path too long", dir);
    return PROTO_EINVAL;
  }
  json_error_t jerr;
  json_t *cfg = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
  if (!cfg) {
    if (!bert_file_exists(path)) {
      proto_err_set("%s: %s", path, strerror(ENOENT));
      return PROTO_ENOTFOUND;
    }
    proto_err_set("%s: bad JSON: %s (line %d)", path, jerr.text, jerr.line);
    return PROTO_EJSON;
  }
  if (!json_is_object(cfg)) {
    proto_err_set("%s: not a JSON object", path);
    st = PROTO_EJSON;
    goto done;
  }
  json_t *mt = json_object_get(cfg, "model_type");
  const char *mts = json_is_string(mt) ? json_string_value(mt) : "bert";
  if (mt && !json_is_string(mt)) {
    proto_err_set("%s: \"model_type\" must be a string", path);
    st = PROTO_ETYPE;
    goto done;
  }
  if (strcmp(mts, "bert") == 0) {
    b->roberta = 0;
  } else if (strcmp(mts, "roberta") == 0) {
    b->roberta = 1;
  } else {
    proto_err_set("%s: model_type \"%s\" is not supported (bert or roberta)", path, mts);
    st = PROTO_EMODEL;
    goto done;
  }
  json_t *act = json_object_get(cfg, "hidden_act");
  if (act && (!json_is_string(act) || strcmp(json_string_value(act), "gelu") != 0)) {
    proto_err_set("%s: hidden_act must be \"gelu\" (exact GELU)", path);
    st = PROTO_EMODEL;
    goto done;
  }
  json_t *pet = json_object_get(cfg, "position_embedding_type");
  if (pet && !json_is_null(pet) &&
      (!json_is_string(pet) || strcmp(json_string_value(pet), "absolute") != 0)) {
    proto_err_set("%s: position_embedding_type must be \"absolute\"", path);
    st = PROTO_EMODEL;
    goto done;
  }
  if ((st = bert_cfg_int(cfg, path, "vocab_size", 1, 0, 1, 1 << 24, &b->vocab)) ||
      (st = bert_cfg_int(cfg, path, "hidden_size", 1, 0, 1, PROTO_MAX_DIM, &b->H)) ||
      (st = bert_cfg_int(cfg, path, "num_hidden_layers", 1, 0, 1, 256, &b->L)) ||
      (st = bert_cfg_int(cfg, path, "num_attention_heads", 1, 0, 1, 1024, &b->nh)) ||
      (st = bert_cfg_int(cfg, path, "intermediate_size", 1, 0, 1, 1 << 18, &b->I)) ||
      (st = bert_cfg_int(cfg, path, "max_position_embeddings", 1, 0, 1, 1 << 16, &b->max_pos)) ||
      (st = bert_cfg_int(cfg, path, "type_vocab_size", 0, b->roberta ? 1 : 2, 1, 1 << 16,
                         &b->type_vocab)) ||
      (st = bert_cfg_int(cfg, path, "pad_token_id", 0, b->roberta ? 1 : 0, 0, 1 << 24, &b->pad_id)))
    goto done;
  if (b->H % b->nh) {
    proto_err_set("%s: hidden_size %d is not a multiple of num_attention_heads %d", path, b->H,
                  b->nh);
    st = PROTO_EMODEL;
    goto done;
  }
  b->dh = b->H / b->nh;
  json_t *eps = json_object_get(cfg, "layer_norm_eps");
  if (eps && !json_is_number(eps)) {
    proto_err_set("%s: \"layer_norm_eps\" must be a number", path);
    st = PROTO_ETYPE;
    goto done;
  }
  b->eps = eps ? (float)json_number_value(eps) : 1e-12f;
  if (!(b->eps > 0.0f) || isinf(b->eps)) { /* a zero or negative one makes every vector NaN */
    proto_err_set("%s: \"layer_norm_eps\" must be a positive number", path);
    st = PROTO_EMODEL;
    goto done;
  }
  if (b->roberta) {
    b->max_tokens = b->max_pos - b->pad_id - 1;
    if (b->max_tokens < 2) {
      proto_err_set(
          "%s: max_position_embeddings %d leaves no room after the RoBERTa offset "
          "(pad_token_id %d)",
          path, b->max_pos, b->pad_id);
      st = PROTO_EMODEL;
      goto done;
    }
  } else {
    b->max_tokens = b->max_pos;
    if (b->max_tokens < 2) {
      proto_err_set("%s: max_position_embeddings must be at least 2", path);
      st = PROTO_EMODEL;
      goto done;
    }
  }
  /* special-token ids from config, used when the vocabulary lacks <s>/</s> */
  int bos = -1, eos = -1;
  if ((st = bert_cfg_int(cfg, path, "bos_token_id", 0, -1, -1, 1 << 24, &bos)) ||
      (st = bert_cfg_int(cfg, path, "eos_token_id", 0, -1, -1, 1 << 24, &eos)))
    goto done;
  b->cls_id = bos;
  b->sep_id = eos;
  json_t *rp = json_object_get(cfg, "retro_pooling");
  if (rp) {
    if (!json_is_string(rp) ||
        (strcmp(json_string_value(rp), "cls") && strcmp(json_string_value(rp), "mean"))) {
      proto_err_set("%s: \"retro_pooling\" must be \"cls\" or \"mean\"", path);
      st = PROTO_EINVAL;
      goto done;
    }
    *retro_pool = strcmp(json_string_value(rp), "cls") == 0 ? BERT_POOL_CLS : BERT_POOL_MEAN;
  }
  json_t *qp = json_object_get(cfg, "retro_query_prefix");
  if (qp) {
    if (!json_is_string(qp) || json_string_length(qp) > BERT_MAX_QUERY_PREFIX ||
        strlen(json_string_value(qp)) != json_string_length(qp)) {
      proto_err_set("%s: \"retro_query_prefix\" must be a string of at most %d bytes", path,
                    BERT_MAX_QUERY_PREFIX);
      st = PROTO_EINVAL;
      goto done;
    }
    memcpy(b->query_prefix, json_string_value(qp), json_string_length(qp) + 1);
  }
done:
  json_decref(cfg);
  return st;
}

/* sentence-transformers pooling config; *found = 0 when absent. */
static proto_status bert_read_st_pooling(bert *b, const char *dir, bert_pooling *out, int *found) {
  char path[4096];
  *found = 0;
  if (!bert_path(path, sizeof path, dir, "1_Pooling/config.json") || !bert_file_exists(path))
    return PROTO_OK;
  json_error_t jerr;
  json_t *cfg = json_load_file(path, 0, &jerr);
  if (!cfg || !json_is_object(cfg)) {
    proto_err_set("%s: bad JSON: %s", path, cfg ? "not an object" : jerr.text);
    json_decref(cfg);
    return PROTO_EJSON;
  }
  proto_status st = PROTO_OK;
  json_t *dim = json_object_get(cfg, "word_embedding_dimension");
  if (dim && (!json_is_integer(dim) || json_integer_value(dim) != b->H)) {
    proto_err_set("%s: word_embedding_dimension does not match hidden_size %d", path, b->H);
    st = PROTO_EMODEL;
  } else if (json_is_true(json_object_get(cfg, "pooling_mode_cls_token"))) {
    *out = BERT_POOL_CLS;
    *found = 1;
  } else if (json_is_true(json_object_get(cfg, "pooling_mode_mean_tokens"))) {
    *out = BERT_POOL_MEAN;
    *found = 1;
  } else {
    proto_err_set("%s: only pooling_mode_cls_token or pooling_mode_mean_tokens is supported", path);
    st = PROTO_EMODEL;
  }
  json_decref(cfg);
  return st;
}

static proto_status bert_get(bert *b, const char *prefix, const char *name, int ndim, int64_t d0,
                             int64_t d1, const float **out) {
  char full[256];
  snprintf(full, sizeof full, "%s%s", prefix, name);
  int64_t shape[2] = {d0, d1};
  proto_status st = st_get_f32(b->st, full, ndim, shape, out);
  if (st == PROTO_OK && (st = st_check_finite(b->st, full, *out)) != PROTO_OK) {
    proto_err_set("%s", st_last_error());
    return st;
  }
  if (st) proto_err_set("%s", st_last_error());
  return st == PROTO_OK ? PROTO_OK : (st == PROTO_ENOMEM ? st : PROTO_EMODEL);
}

/* The F16 data of a weight (N, K) the file stores as F16, when F16
 * products are on; else rows NULL (the F32 copy serves). Fails only when
 * the panels cannot be allocated. */
static proto_status bert_get_f16(const bert *b, const char *prefix, const char *name, int64_t N,
                                 int64_t K, f16_weight *out) {
  char full[256];
  *out = (f16_weight){0};
  if (!b->f16) return PROTO_OK;
  snprintf(full, sizeof full, "%s%s", prefix, name);
  const st_tensor_info *ti = st_find(b->st, full);
  if (!ti || ti->dtype != ST_F16 || ((uintptr_t)ti->data & 1u)) return PROTO_OK;
  out->rows = (const uint16_t *)ti->data;
  if (!(out->panels = kn_f16_pack(out->rows, (int)N, (int)K))) {
    proto_err_set("%s: out of memory", full);
    return PROTO_ENOMEM;
  }
  return PROTO_OK;
}

static proto_status bert_load_weights(bert *b, const char *dir) {
  char path[4096];
  proto_status st;
  if (!bert_path(path, sizeof path, dir, "model.safetensors")) {
    proto_err_set("%s: path too long", dir);
    return PROTO_EINVAL;
  }
  if ((st = st_open(path, &b->st)) != PROTO_OK) {
    proto_err_set("%s", st_last_error());
    return st;
  }
  const char *prefix = "";
  static const char *prefixes[] = {"", "bert.", "roberta.", "model."};
  for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
    char name[128];
    snprintf(name, sizeof name, "%sembeddings.word_embeddings.weight", prefixes[i]);
    if (st_find(b->st, name)) {
      prefix = prefixes[i];
      break;
    }
  }
  int64_t H = b->H, I = b->I;
  if ((st = bert_get(b, prefix, "embeddings.word_embeddings.weight", 2, b->vocab, H, &b->word)) ||
      (st = bert_get(b, prefix, "embeddings.position_embeddings.weight", 2, b->max_pos, H,
                     &b->posemb)) ||
      (st = bert_get(b, prefix, "embeddings.token_type_embeddings.weight", 2, b->type_vocab, H,
                     &b->type)) ||
      (st = bert_get(b, prefix, "embeddings.LayerNorm.weight", 1, H, 0, &b->emb_g)) ||
      (st = bert_get(b, prefix, "embeddings.LayerNorm.bias", 1, H, 0, &b->emb_b)))
    return st;
  b->layers = calloc((size_t)b->L, sizeof *b->layers);
  if (!b->layers) {
    proto_err_set("%s: out of memory", path);
    return PROTO_ENOMEM;
  }
  for (int l = 0; l < b->L; l++) {
    bert_layer *ly = &b->layers[l];
    char p[128];
    snprintf(p, sizeof p, "%sencoder.layer.%d.", prefix, l);
    if ((st = bert_get(b, p, "attention.self.query.weight", 2, H, H, &ly->wq)) ||
        (st = bert_get(b, p, "attention.self.query.bias", 1, H, 0, &ly->bq)) ||
        (st = bert_get(b, p, "attention.self.key.weight", 2, H, H, &ly->wk)) ||
        (st = bert_get(b, p, "attention.self.key.bias", 1, H, 0, &ly->bk)) ||
        (st = bert_get(b, p, "attention.self.value.weight", 2, H, H, &ly->wv)) ||
        (st = bert_get(b, p, "attention.self.value.bias", 1, H, 0, &ly->bv)) ||
        (st = bert_get(b, p, "attention.output.dense.weight", 2, H, H, &ly->wo)) ||
        (st = bert_get(b, p, "attention.output.dense.bias", 1, H, 0, &ly->bo)) ||
        (st = bert_get(b, p, "attention.output.LayerNorm.weight", 1, H, 0, &ly->ln1_g)) ||
        (st = bert_get(b, p, "attention.output.LayerNorm.bias", 1, H, 0, &ly->ln1_b)) ||
        (st = bert_get(b, p, "intermediate.dense.weight", 2, I, H, &ly->wi)) ||
        (st = bert_get(b, p, "intermediate.dense.bias", 1, I, 0, &ly->bi)) ||
        (st = bert_get(b, p, "output.dense.weight", 2, H, I, &ly->wf)) ||
        (st = bert_get(b, p, "output.dense.bias", 1, H, 0, &ly->bf)) ||
        (st = bert_get(b, p, "output.LayerNorm.weight", 1, H, 0, &ly->ln2_g)) ||
        (st = bert_get(b, p, "output.LayerNorm.bias", 1, H, 0, &ly->ln2_b)))
      return st;
    if ((st = bert_get_f16(b, p, "attention.self.query.weight", H, H, &ly->hq)) ||
        (st = bert_get_f16(b, p, "attention.self.key.weight", H, H, &ly->hk)) ||
        (st = bert_get_f16(b, p, "attention.self.value.weight", H, H, &ly->hv)) ||
        (st = bert_get_f16(b, p, "attention.output.dense.weight", H, H, &ly->ho)) ||
        (st = bert_get_f16(b, p, "intermediate.dense.weight", I, H, &ly->hi)) ||
        (st = bert_get_f16(b, p, "output.dense.weight", H, I, &ly->hf)))
      return st;
  }
  return PROTO_OK;
}

/* A 64-bit hash of the weights file (all of it), for the fingerprint. */
static uint64_t bert_hash_file(const st_file *f) {
  uint64_t h = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < st_count(f); i++) {
    const st_tensor_info *t = st_at(f, i);
    const unsigned char *p = t->data;
    size_t n = t->nbytes, j = 0;
    for (const char *s = t->name; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    for (; j + 8 <= n; j += 8) {
      uint64_t w;
      memcpy(&w, p + j, 8);
      h = (h ^ w) * 0xff51afd7ed558ccdull;
      h ^= h >> 29;
    }
    for (; j < n; j++) h = (h ^ p[j]) * 0x100000001b3ull;
  }
  return h;
}

static void bert_arena_free(bert_arena *a) {
  free(a->x);
  free(a->tmp);
  free(a->qkv);
  free(a->ctx);
  free(a->inter);
  free(a->scores);
  free(a->ids);
  free(a->pos);
  free(a->type);
  free(a->start);
  free(a->len);
  memset(a, 0, sizeof *a);
}

static int bert_arena_alloc(const bert *b, bert_arena *a) {
  size_t T = (size_t)b->budget, H = (size_t)b->H, mt = (size_t)b->max_tokens;
  a->x = malloc(T * H * sizeof(float));
  a->tmp = malloc(T * H * sizeof(float));
  a->qkv = malloc(T * 3 * H * sizeof(float));
  a->ctx = malloc(T * H * sizeof(float));
  a->inter = malloc(T * (size_t)b->I * sizeof(float));
  a->scores = malloc((size_t)b->workers * mt * mt * sizeof(float));
  a->ids = malloc(T * sizeof(int32_t));
  a->pos = malloc(T * sizeof(int32_t));
  a->type = calloc(T, 1);
  a->start = malloc(T * sizeof(int));
  a->len = malloc(T * sizeof(int));
  return a->x && a->tmp && a->qkv && a->ctx && a->inter && a->scores && a->ids && a->pos &&
         a->type && a->start && a->len;
}

proto_status bert_open(const char *dir, const bert_options *opt, bert **out) {
  proto_status st = PROTO_ENOMEM;
  bert_options dflt = {0};
  bert_pooling retro_pool = BERT_POOL_AUTO;
  *out = NULL;
  proto_err_clear();
  if (!opt) opt = &dflt;
  if (!dir) {
    proto_err_set("bert_open: no model directory");
    return PROTO_EINVAL;
  }
  bert *b = calloc(1, sizeof *b);
  if (!b) {
    proto_err_set("%s: out of memory", dir);
    return PROTO_ENOMEM;
  }
  if ((st = bert_read_config(b, dir, &retro_pool)) != PROTO_OK) goto fail;
  /* BERT_F16=0 turns the F16 products off (for comparisons) */
  const char *f16_env = getenv("BERT_F16");
  b->f16 = kn_f16_supported() && !(f16_env && strcmp(f16_env, "0") == 0);
  if ((st = bert_load_weights(b, dir)) != PROTO_OK) goto fail;

  /* pooling: explicit option, else sentence-transformers, else retro_pooling, else CLS */
  bert_pooling stp = BERT_POOL_CLS;
  int found = 0;
  if ((st = bert_read_st_pooling(b, dir, &stp, &found)) != PROTO_OK) goto fail;
  if (opt->pooling == BERT_POOL_CLS || opt->pooling == BERT_POOL_MEAN) b->pooling = opt->pooling;
  else if (found) b->pooling = stp;
  else if (retro_pool != BERT_POOL_AUTO) b->pooling = retro_pool;
  else b->pooling = BERT_POOL_CLS;
  b->normalize = !opt->no_normalize;

  /* tokenizer and its special tokens */
  if ((st = tok_open_dir(dir, &b->tok)) != PROTO_OK) {
    proto_err_set("%s: tokenizer: %s", dir, tok_last_error());
    goto fail;
  }
  if (tok_vocab_size(b->tok) > (size_t)b->vocab) {
    proto_err_set("%s: tokenizer has %zu tokens but config.json vocab_size is %d", dir,
                  tok_vocab_size(b->tok), b->vocab);
    st = PROTO_EMODEL;
    goto fail;
  }
  {
    int32_t c, s;
    if (tok_get_kind(b->tok) == TOK_WORDPIECE) {
      c = tok_token_id(b->tok, "[CLS]");
      s = tok_token_id(b->tok, "[SEP]");
    } else {
      c = tok_token_id(b->tok, "<s>");
      s = tok_token_id(b->tok, "</s>");
      if (c < 0) c = b->cls_id;
      if (s < 0) s = b->sep_id;
      if (c < 0) c = tok_token_id(b->tok, "<|endoftext|>");
      if (s < 0) s = tok_token_id(b->tok, "<|endoftext|>");
    }
    if (c < 0 || s < 0 || c >= b->vocab || s >= b->vocab) {
      proto_err_set(
          "%s: no usable start/end special tokens (%s) in the vocabulary or config", dir,
          tok_get_kind(b->tok) == TOK_WORDPIECE ? "[CLS]/[SEP]" : "<s>/</s>, bos/eos_token_id");
      st = PROTO_EMODEL;
      goto fail;
    }
    b->cls_id = c;
    b->sep_id = s;
  }

  /* threads, arenas */
  kn_set_blas_threads(1); /* parallelism comes from our pool (see the file comment) */
  if ((st = pool_new(opt->threads, &b->pool)) != PROTO_OK) {
    proto_err_set("%s: cannot start the thread pool", dir);
    goto fail;
  }
  b->workers = pool_size(b->pool);
  b->budget = b->max_tokens > BERT_MIN_BUDGET ? b->max_tokens : BERT_MIN_BUDGET;
  for (int i = 0; i < BERT_ARENAS; i++)
    if (!bert_arena_alloc(b, &b->arenas[i])) {
      proto_err_set("%s: out of memory for scratch buffers", dir);
      st = PROTO_ENOMEM;
      goto fail;
    }
  pthread_mutex_init(&b->arena_mu, NULL);
  pthread_cond_init(&b->arena_cv, NULL);
  b->sync_ok = 1;

  {
    snprintf(b->fingerprint, sizeof b->fingerprint, "%s-L%d-H%d-%016llx:%d:%s:%s",
             b->roberta ? "roberta" : "bert", b->L, b->H, (unsigned long long)bert_hash_file(b->st),
             b->H, b->pooling == BERT_POOL_MEAN ? "mean" : "cls", tok_fingerprint(b->tok));
  }
  *out = b;
  return PROTO_OK;
fail:
  bert_close(b);
  return st;
}

void bert_close(bert *b) {
  if (!b) return;
  pool_free(b->pool);
  for (int i = 0; i < BERT_ARENAS; i++) bert_arena_free(&b->arenas[i]);
  if (b->sync_ok) {
    pthread_mutex_destroy(&b->arena_mu);
    pthread_cond_destroy(&b->arena_cv);
  }
  tok_close(b->tok);
  for (int l = 0; b->layers && l < b->L; l++) {
    bert_layer *ly = &b->layers[l];
    f16_weight *h[] = {&ly->hq, &ly->hk, &ly->hv, &ly->ho, &ly->hi, &ly->hf};
    for (size_t i = 0; i < sizeof h / sizeof *h; i++) free(h[i]->panels);
  }
  free(b->layers);
  st_close(b->st);
  free(b);
}

uint32_t bert_dim(const bert *b) { return (uint32_t)b->H; }
int bert_max_tokens(const bert *b) { return b->max_tokens; }
const tok *bert_tokenizer(const bert *b) { return b->tok; }
const char *bert_fingerprint(const bert *b) { return b->fingerprint; }
const char *bert_query_prefix(const bert *b) { return b->query_prefix; }
bert_pooling bert_get_pooling(const bert *b) { return b->pooling; }
void bert_special_ids(const bert *b, int32_t *cls_id, int32_t *sep_id) {
  *cls_id = b->cls_id;
  *sep_id = b->sep_id;
}

/* ---- forward ------------------------------------------------------------- */

enum { EPI_NONE = 0, EPI_BIAS_GELU, EPI_ADD_LN };

typedef struct lin_job {
  const float *x; /* (M, K) row stride ldx */
  int ldx;
  const float *W;       /* (N, K) */
  const f16_weight *Wh; /* (N, K) the same as F16 (rows NULL: none) */
  const float *b;       /* (N) */
  float *out;           /* (M, N) row stride ldo */
  int ldo;
  int M, N, K;
  int rows; /* 1: tiles are row blocks; 0: column blocks */
  int tiles;
  int epi;
  const float *res; /* EPI_ADD_LN: residual (M, N), stride N */
  const float *g, *beta;
  float eps;
} lin_job;

static void lin_tile(void *arg, int t, int worker) {
  (void)worker;
  const lin_job *j = arg;
  if (j->rows) {
    int m0 = (int)((long long)j->M * t / j->tiles),
        m1 = (int)((long long)j->M * (t + 1) / j->tiles);
    if (m1 <= m0) return;
    int mb = m1 - m0;
    const float *x = j->x + (size_t)m0 * (size_t)j->ldx;
    float *o = j->out + (size_t)m0 * (size_t)j->ldo;
    kn_linear_prefer_f16(x, j->ldx, j->W, j->Wh->rows, j->Wh->panels,
                         j->epi == EPI_BIAS_GELU ? NULL : j->b, o, j->ldo, mb, j->N, j->K);
    if (j->epi == EPI_BIAS_GELU) {
      for (int r = 0; r < mb; r++) kn_bias_gelu(o + (size_t)r * (size_t)j->ldo, j->b, 1, j->N);
    } else if (j->epi == EPI_ADD_LN) {
      kn_add_layernorm(o, j->res + (size_t)m0 * (size_t)j->N, j->N, j->g, j->beta, mb, j->N,
                       j->eps);
    }
  } else {
    int c0, c1;
    kn_tile_cols(j->N, j->tiles, t, &c0, &c1);
    if (c1 <= c0) return;
    int cb = c1 - c0;
    float *o = j->out + c0;
    kn_linear_prefer_f16(j->x, j->ldx, j->W + (size_t)c0 * (size_t)j->K,
                         j->Wh->rows ? j->Wh->rows + (size_t)c0 * (size_t)j->K : NULL,
                         j->Wh->panels ? j->Wh->panels + (size_t)c0 * (size_t)j->K : NULL,
                         j->epi == EPI_BIAS_GELU || !j->b ? NULL : j->b + c0, o, j->ldo, j->M, cb,
                         j->K);
    if (j->epi == EPI_BIAS_GELU)
      for (int r = 0; r < j->M; r++) kn_bias_gelu(o + (size_t)r * (size_t)j->ldo, j->b + c0, 1, cb);
  }
}

/* Where a forward runs: the encoder's pool, or the calling thread alone. */
typedef struct bert_exec {
  pool *pool; /* NULL: the calling thread */
  int workers;
} bert_exec;

/* out = epilogue(x @ W^T + b) spread over the pool: in row blocks for many
 * rows, else in column blocks. A linear followed by add + layernorm takes
 * row blocks from 4 rows a worker on, so that each worker normalises its
 * own rows; column blocks leave the layernorm to the caller, after the
 * job, while the workers wait. */
static void bert_linear(const bert_exec *x, lin_job *j) {
  int w = x->workers;
  j->rows = j->M >= 32 * w || w == 1 || (j->epi == EPI_ADD_LN && j->M >= 4 * w);
  j->tiles = w;
  if (!j->rows && j->N < 16 * w) j->tiles = 1;
  pool_for(x->pool, j->tiles, lin_tile, j);
  if (j->epi == EPI_ADD_LN && !j->rows) /* fewer than 4 rows a worker */
    kn_add_layernorm(j->out, j->res, j->N, j->g, j->beta, j->M, j->N, j->eps);
}

typedef struct lin3_job {
  lin_job *parts[3];
} lin3_job;

static void lin3_tile(void *arg, int t, int worker) {
  const lin3_job *j = arg;
  int tiles = j->parts[0]->tiles;
  lin_tile(j->parts[t / tiles], t % tiles, worker);
}

/* Three linears with the same x, M and tiling (q, k, v) in one pool job. */
static void bert_linear3(const bert_exec *x, lin_job *q, lin_job *k, lin_job *v) {
  int w = x->workers;
  q->rows = q->M >= 32 * w || w == 1;
  q->tiles = w;
  if (!q->rows && q->N < 16 * w) q->tiles = 1;
  k->rows = v->rows = q->rows;
  k->tiles = v->tiles = q->tiles;
  lin3_job j = {{q, k, v}};
  pool_for(x->pool, 3 * q->tiles, lin3_tile, &j);
}

typedef struct attn_job {
  const bert *b;
  bert_arena *a;
} attn_job;

static void attn_task(void *arg, int t, int worker) {
  const attn_job *j = arg;
  const bert *b = j->b;
  int s = t / b->nh, h = t % b->nh, H = b->H, dh = b->dh;
  int r0 = j->a->start[s], n = j->a->len[s];
  const float *q = j->a->qkv + (size_t)r0 * 3 * (size_t)H + (size_t)h * (size_t)dh;
  float *scores = j->a->scores + (size_t)worker * (size_t)b->max_tokens * (size_t)b->max_tokens;
  kn_attention_head(q, 3 * H, q + H, 3 * H, q + 2 * H, 3 * H,
                    j->a->ctx + (size_t)r0 * (size_t)H + (size_t)h * (size_t)dh, H, n, n, n, dh,
                    1.0f / sqrtf((float)dh), 0, scores);
}

typedef struct emb_job {
  const bert *b;
  bert_arena *a;
} emb_job;

static void emb_task(void *arg, int s, int worker) {
  (void)worker;
  const emb_job *j = arg;
  const bert *b = j->b;
  int H = b->H;
  for (int r = j->a->start[s]; r < j->a->start[s] + j->a->len[s]; r++) {
    float *x = j->a->x + (size_t)r * (size_t)H;
    const float *w = b->word + (size_t)j->a->ids[r] * (size_t)H;
    const float *p = b->posemb + (size_t)j->a->pos[r] * (size_t)H;
    const float *t = b->type + (size_t)j->a->type[r] * (size_t)H;
    for (int k = 0; k < H; k++) x[k] = w[k] + p[k] + t[k];
    kn_layernorm(x, x, b->emb_g, b->emb_b, 1, H, b->eps);
  }
}

/* Runs the encoder on the chunk packed in a (nseq sequences, M rows); the
 * final hidden states end in a->x. */
static void bert_forward(const bert *b, const bert_exec *ex, bert_arena *a, int nseq, int M) {
  int H = b->H, I = b->I;
  emb_job ej = {b, a};
  pool_for(ex->pool, nseq, emb_task, &ej);
  for (int l = 0; l < b->L; l++) {
    const bert_layer *ly = &b->layers[l];
    /* q, k, v into column slices of qkv (M, 3H) */
    lin_job jq = {.x = a->x,
                  .ldx = H,
                  .W = ly->wq,
                  .Wh = &ly->hq,
                  .b = ly->bq,
                  .out = a->qkv,
                  .ldo = 3 * H,
                  .M = M,
                  .N = H,
                  .K = H};
    lin_job jk = jq;
    jk.W = ly->wk;
    jk.Wh = &ly->hk;
    jk.b = ly->bk;
    jk.out = a->qkv + H;
    lin_job jv = jq;
    jv.W = ly->wv;
    jv.Wh = &ly->hv;
    jv.b = ly->bv;
    jv.out = a->qkv + 2 * H;
    bert_linear3(ex, &jq, &jk, &jv);
    attn_job aj = {b, a};
    pool_for(ex->pool, nseq * b->nh, attn_task, &aj);
    /* tmp = LN(ctx @ Wo^T + bo + x) */
    lin_job jo = {.x = a->ctx,
                  .ldx = H,
                  .W = ly->wo,
                  .Wh = &ly->ho,
                  .b = ly->bo,
                  .out = a->tmp,
                  .ldo = H,
                  .M = M,
                  .N = H,
                  .K = H,
                  .epi = EPI_ADD_LN,
                  .res = a->x,
                  .g = ly->ln1_g,
                  .beta = ly->ln1_b,
                  .eps = b->eps};
    bert_linear(ex, &jo);
    /* inter = gelu(tmp @ Wi^T + bi) */
    lin_job ji = {.x = a->tmp,
                  .ldx = H,
                  .W = ly->wi,
                  .Wh = &ly->hi,
                  .b = ly->bi,
                  .out = a->inter,
                  .ldo = I,
                  .M = M,
                  .N = I,
                  .K = H,
                  .epi = EPI_BIAS_GELU};
    bert_linear(ex, &ji);
    /* x = LN(inter @ Wf^T + bf + tmp) */
    lin_job jf = {.x = a->inter,
                  .ldx = I,
                  .W = ly->wf,
                  .Wh = &ly->hf,
                  .b = ly->bf,
                  .out = a->x,
                  .ldo = H,
                  .M = M,
                  .N = H,
                  .K = I,
                  .epi = EPI_ADD_LN,
                  .res = a->tmp,
                  .g = ly->ln2_g,
                  .beta = ly->ln2_b,
                  .eps = b->eps};
    bert_linear(ex, &jf);
  }
}

static bert_arena *bert_arena_take(bert *b) {
  pthread_mutex_lock(&b->arena_mu);
  for (;;) {
    for (int i = 0; i < BERT_ARENAS; i++)
      if (!b->arenas[i].busy) {
        b->arenas[i].busy = 1;
        pthread_mutex_unlock(&b->arena_mu);
        return &b->arenas[i];
      }
    pthread_cond_wait(&b->arena_cv, &b->arena_mu);
  }
}

static void bert_arena_give(bert *b, bert_arena *a) {
  pthread_mutex_lock(&b->arena_mu);
  a->busy = 0;
  pthread_cond_signal(&b->arena_cv);
  pthread_mutex_unlock(&b->arena_mu);
}

/* The rows a text of n ids takes, alone ([CLS] A [SEP]) or with pair set
 * as a pair's first with a second of n2 ([CLS] A [SEP] B [SEP]; RoBERTa
 * <s> A </s></s> B </s>), after truncation: the second text is cut first,
 * then the first. *keep / *keep2: the ids kept of each. */
static int bert_pack_len(const bert *b, size_t n, int pair, size_t n2, size_t *keep,
                         size_t *keep2) {
  size_t specials = !pair ? 2 : b->roberta ? 4 : 3, room = (size_t)b->max_tokens - specials;
  *keep = n > room ? room : n;
  *keep2 = pair ? (n2 > room - *keep ? room - *keep : n2) : 0;
  return (int)(*keep + *keep2 + specials);
}

/* Packs a text's ids (without specials), or a pair's, into the arena at row
 * r with the specials, truncation (bert_pack_len), positions and token
 * types; returns the length used. */
static int bert_pack(const bert *b, bert_arena *a, int r, const int32_t *ids, size_t n, int pair,
                     const int32_t *second, size_t n2) {
  size_t keep, keep2;
  int len = bert_pack_len(b, n, pair, n2, &keep, &keep2), at = r + 1;
  a->ids[r] = b->cls_id;
  if (keep) memcpy(a->ids + at, ids, keep * sizeof *ids);
  at += (int)keep;
  a->ids[at++] = b->sep_id;
  memset(a->type + r, 0, (size_t)len);
  if (pair) {
    if (b->roberta) a->ids[at++] = b->sep_id; /* </s></s> between the two */
    else memset(a->type + at, b->type_vocab > 1 ? 1 : 0, keep2 + 1);
    if (keep2) memcpy(a->ids + at, second, keep2 * sizeof *second);
    at += (int)keep2;
    a->ids[at++] = b->sep_id;
  }
  if (b->roberta) { /* HF: padding_idx + cumsum(id != pad), pad tokens at padding_idx */
    int c = 0;
    for (int k = 0; k < len; k++) {
      int np = a->ids[r + k] != b->pad_id;
      c += np;
      a->pos[r + k] = np ? b->pad_id + c : b->pad_id;
    }
  } else {
    for (int k = 0; k < len; k++) a->pos[r + k] = k;
  }
  return len;
}

static void bert_pool_out(const bert *b, const bert_arena *a, int s, float *out) {
  int H = b->H, r0 = a->start[s], n = a->len[s];
  const float *x = a->x + (size_t)r0 * (size_t)H;
  if (b->pooling == BERT_POOL_MEAN) {
    for (int k = 0; k < H; k++) out[k] = 0.0f;
    for (int r = 0; r < n; r++) kn_add(out, x + (size_t)r * (size_t)H, (size_t)H);
    float inv = 1.0f / (float)n;
    for (int k = 0; k < H; k++) out[k] *= inv;
  } else {
    memcpy(out, x, (size_t)H * sizeof(float));
  }
  if (b->normalize) kn_l2_normalize(out, (size_t)H);
}

/* Input i's ids are in the vocabulary (1), or the error is set (0). */
static int ids_valid(const bert *b, const int32_t *const *ids, const size_t *lens, size_t i) {
  if (lens[i] && !ids[i]) {
    proto_err_set("bert_embed_ids: input %zu has no ids", i);
    return 0;
  }
  for (size_t k = 0; k < lens[i]; k++)
    if (ids[i][k] < 0 || ids[i][k] >= b->vocab) {
      proto_err_set("bert_embed_ids: input %zu token %zu: id %d outside [0, %d)", i, k,
                    (int)ids[i][k], b->vocab);
      return 0;
    }
  return 1;
}

/* Embeds n texts, or n pairs when ids2 is given (text i with ids2[i]). */
static proto_status embed_ids(bert *b, const bert_exec *ex, const int32_t *const *ids,
                              const size_t *lens, const int32_t *const *ids2, const size_t *lens2,
                              size_t n, float *out) {
  if (!b || (n && (!ids || !lens || !out || (ids2 && !lens2)))) {
    proto_err_set("bert_embed_ids: invalid arguments");
    return PROTO_EINVAL;
  }
  for (size_t i = 0; i < n; i++)
    if (!ids_valid(b, ids, lens, i) || (ids2 && !ids_valid(b, ids2, lens2, i))) return PROTO_EINVAL;
  if (n == 0) return PROTO_OK;
  bert_arena *a = bert_arena_take(b);
  size_t i = 0;
  while (i < n) {
    int rows = 0, nseq = 0;
    size_t first = i;
    while (i < n) {
      int pair = ids2 != NULL;
      size_t n2 = pair ? lens2[i] : 0, k1, k2;
      if (rows + bert_pack_len(b, lens[i], pair, n2, &k1, &k2) > b->budget) break;
      a->start[nseq] = rows;
      a->len[nseq] = bert_pack(b, a, rows, ids[i], lens[i], pair, pair ? ids2[i] : NULL, n2);
      rows += a->len[nseq];
      nseq++;
      i++;
    }
    bert_forward(b, ex, a, nseq, rows);
    for (int s = 0; s < nseq; s++) bert_pool_out(b, a, s, out + (first + (size_t)s) * (size_t)b->H);
  }
  bert_arena_give(b, a);
  return PROTO_OK;
}

proto_status bert_embed_ids(bert *b, const int32_t *const *ids, const size_t *lens, size_t n,
                            float *out) {
  bert_exec ex = {b ? b->pool : NULL, b ? b->workers : 1};
  return embed_ids(b, &ex, ids, lens, NULL, NULL, n, out);
}

proto_status bert_embed_pairs(bert *b, const int32_t *const *first, const size_t *first_lens,
                              const int32_t *const *second, const size_t *second_lens, size_t n,
                              float *out) {
  if (n && (!second || !second_lens)) {
    proto_err_set("bert_embed_pairs: invalid arguments");
    return PROTO_EINVAL;
  }
  if (b && b->max_tokens < (b->roberta ? 4 : 3)) { /* the specials alone would not fit */
    proto_err_set("bert_embed_pairs: the model reads at most %d tokens", b->max_tokens);
    return PROTO_EINVAL;
  }
  bert_exec ex = {b ? b->pool : NULL, b ? b->workers : 1};
  return embed_ids(b, &ex, first, first_lens, second, second_lens, n, out);
}

proto_status bert_embed_text_here(bert *b, const char *text, size_t len, float *out) {
  if (!b || !text || !out) {
    proto_err_set("bert_embed_text_here: invalid arguments");
    return PROTO_EINVAL;
  }
  int32_t *ids = NULL;
  size_t n = 0;
  proto_status st = tok_encode(b->tok, text, len, &ids, &n);
  if (st != PROTO_OK) {
    proto_err_set("bert_embed_text_here: %s (tokenizer)", proto_strerror(st));
    return st;
  }
  bert_exec here = {NULL, 1};
  const int32_t *const one[1] = {ids};
  st = embed_ids(b, &here, one, &n, NULL, NULL, 1, out);
  free(ids);
  return st;
}

typedef struct tok_job {
  const bert *b;
  const char *const *texts;
  const size_t *lens;
  int32_t **ids;
  size_t *n;
  proto_status *st;
} tok_job;

static void tok_task(void *arg, int i, int worker) {
  (void)worker;
  const tok_job *j = arg;
  const char *t = j->texts[i];
  size_t len = j->lens ? j->lens[i] : (t ? strlen(t) : 0);
  if (!t && len) {
    j->st[i] = PROTO_EINVAL;
    return;
  }
  j->st[i] = tok_encode(j->b->tok, t ? t : "", len, &j->ids[i], &j->n[i]);
}

proto_status bert_embed_texts(bert *b, const char *const *texts, const size_t *lens, size_t n,
                              float *out) {
  proto_status st = PROTO_OK;
  if (!b || (n && (!texts || !out))) {
    proto_err_set("bert_embed_texts: invalid arguments");
    return PROTO_EINVAL;
  }
  if (n == 0) return PROTO_OK;
  if (n > (size_t)1 << 28) {
    proto_err_set("bert_embed_texts: too many texts (%zu)", n);
    return PROTO_EINVAL;
  }
  int32_t **ids = calloc(n, sizeof *ids);
  size_t *cnt = calloc(n, sizeof *cnt);
  proto_status *sts = calloc(n, sizeof *sts);
  if (!ids || !cnt || !sts) {
    proto_err_set("bert_embed_texts: out of memory");
    st = PROTO_ENOMEM;
    goto done;
  }
  tok_job tj = {b, texts, lens, ids, cnt, sts};
  pool_for(b->pool, (int)n, tok_task, &tj);
  for (size_t i = 0; i < n; i++)
    if (sts[i] != PROTO_OK) {
      st = sts[i];
      proto_err_set("bert_embed_texts: text %zu: %s (tokenizer)", i, proto_strerror(st));
      goto done;
    }
  st = bert_embed_ids(b, (const int32_t *const *)ids, cnt, n, out);
done:
  if (ids)
    for (size_t i = 0; i < n; i++) free(ids[i]);
  free(ids);
  free(cnt);
  free(sts);
  return st;
}
