/* retro.c - the RETRO decoder in C (see retro.h, RETRO_FORMAT.md): loading
 * config.json + model.safetensors (every tensor checked by name and shape;
 * F16/BF16 converted to F32 once), and incremental inference per state:
 * a self-attention KV cache, the first RETRO layer's CCA input H_u captured
 * for the chunk in progress, each chunk's neighbours encoded once (lazily,
 * when the forward reaches the chunk's last token) and every RETRO layer's
 * CCA keys/values for them cached. A call to retro_forward may carry many
 * tokens (the prompt: BLAS over blocks of positions) or one.
 *
 * It does not retrieve (the caller passes neighbour tokens), sample
 * (sample.h) or tokenize (tok.h). All scratch is sized at state creation
 * (or, for more neighbours than configured, in retro_set_neighbours); the
 * per-token path does not allocate.
 */
#include "retro.h"

#include "kernels.h"
#include "pool.h"
#include "st.h"

#include <cblas.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { RETRO_BLOCK = 128 }; /* positions per batched block of a long forward */

/* ------------------------------------------------------------ errors */

const char *retro_last_error(void) { return proto_err_get(); }

/* ------------------------------------------------------------ weights */

typedef struct lin_w {
  const float *w;    /* (out, in) */
  const float *b;    /* (out) */
  const uint16_t *h; /* (out, in) the F16 weights in the file, or NULL */
} lin_w;

typedef struct ln_w {
  const float *g; /* (D) */
  const float *b; /* (D) */
} ln_w;

typedef struct dec_layer {
  int retro_idx; /* index among RETRO layers, -1 for a plain block */
  ln_w ln1, lnc, ln2;
  lin_w qkv;  /* (3D, D) */
  lin_w out;  /* (D, D) */
  lin_w cq;   /* (D, D) */
  lin_w ckv;  /* (2D, D) */
  lin_w cout; /* (D, D) */
  lin_w fc1;  /* (F, D) */
  lin_w fc2;  /* (D, F) */
} dec_layer;

typedef struct enc_layer {
  ln_w ln1, lnx, ln2;
  lin_w qkv;  /* (3D, D) */
  lin_w out;  /* (D, D) */
  lin_w xq;   /* (D, D) */
  lin_w xkv;  /* (2D, D) */
  lin_w xout; /* (D, D) */
  lin_w fc1;  /* (F, D) */
  lin_w fc2;  /* (D, F) */
} enc_layer;

struct retro {
  retro_config cfg;
  int hd;          /* head dim */
  int first_retro; /* 0-based layer of the first RETRO block, -1 if none */
  st_file *st;
  tok *tk;
  const float *tok_emb;   /* (V, D) */
  const float *head;      /* (V, D): tok_emb when tied */
  const uint16_t *head_h; /* (V, D) F16 copy of head in the file, or NULL */
  int f16_gemv;           /* use F16 weights for one-token products */
  dec_layer *layers;      /* (n_layers) */
  enc_layer *enc;         /* (enc_layers) */
  ln_w enc_lnf, ln_f;
  int rope_n;      /* positions in the tables */
  float *rope_cos; /* (rope_n, hd/2) */
  float *rope_sin; /* (rope_n, hd/2) */
  pool *pool;      /* products of many rows are split over it by columns */
  int workers;
};

typedef struct wload {
  retro *r;
  size_t loaded;
  char **names; /* names requested, to report unexpected tensors */
  size_t n_names, cap_names;
} wload;

static proto_status wl_get(wload *wl, const float **out, int ndim, int64_t d0, int64_t d1,
                           const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;
static proto_status wl_get(wload *wl, const float **out, int ndim, int64_t d0, int64_t d1,
                           const char *fmt, ...) {
  char name[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  int64_t shape[2] = {d0, d1};
  proto_status st = st_get_f32(wl->r->st, name, ndim, shape, out);
  if (st != PROTO_OK) {
    proto_err_set("retro_open: %s", st_last_error());
    return st == PROTO_ENOMEM ? st : PROTO_EMODEL;
  }
  if ((st = st_check_finite(wl->r->st, name, *out)) != PROTO_OK) {
    proto_err_set("retro_open: %s", st_last_error());
    return st;
  }
  if (wl->n_names == wl->cap_names) {
    size_t nc = wl->cap_names ? wl->cap_names * 2 : 64;
    char **nn = realloc(wl->names, nc * sizeof *nn);
    if (!nn) return PROTO_ENOMEM;
    wl->names = nn;
    wl->cap_names = nc;
  }
  wl->names[wl->n_names] = strdup(name);
  if (!wl->names[wl->n_names]) return PROTO_ENOMEM;
  wl->n_names++;
  wl->loaded++;
  return PROTO_OK;
}

static proto_status wl_ln(wload *wl, ln_w *ln, int D, const char *prefix) {
  proto_status st = wl_get(wl, &ln->g, 1, D, 0, "%s.weight", prefix);
  if (st == PROTO_OK) st = wl_get(wl, &ln->b, 1, D, 0, "%s.bias", prefix);
  return st;
}

/* The raw F16 data of a tensor when the file stores it as F16 and the
 * one-token F16 path is on; else NULL. */
static const uint16_t *wl_f16(wload *wl, const char *name) {
  if (!wl->r->f16_gemv) return NULL;
  const st_tensor_info *ti = st_find(wl->r->st, name);
  if (!ti || ti->dtype != ST_F16 || ((uintptr_t)ti->data & 1u)) return NULL;
  return ti->data;
}

static proto_status wl_lin(wload *wl, lin_w *l, int out, int in, const char *prefix) {
  proto_status st = wl_get(wl, &l->w, 2, out, in, "%s.weight", prefix);
  if (st == PROTO_OK) st = wl_get(wl, &l->b, 1, out, 0, "%s.bias", prefix);
  char name[160];
  snprintf(name, sizeof name, "%s.weight", prefix);
  l->h = st == PROTO_OK ? wl_f16(wl, name) : NULL;
  return st;
}

static proto_status load_weights(retro *r) {
  const retro_config *c = &r->cfg;
  const int D = c->dim, F = c->ffn_dim, V = c->vocab_size;
  wload wl = {r, 0, NULL, 0, 0};
  char p[128];
  proto_status st = wl_get(&wl, &r->tok_emb, 2, V, D, "tok_emb.weight");
  if (st != PROTO_OK) goto leave;
  if (c->tie_embeddings) {
    r->head = r->tok_emb;
    r->head_h = wl_f16(&wl, "tok_emb.weight");
  } else {
    st = wl_get(&wl, &r->head, 2, V, D, "head.weight");
    if (st != PROTO_OK) goto leave;
    r->head_h = wl_f16(&wl, "head.weight");
  }
  for (int i = 0; i < c->n_layers && st == PROTO_OK; i++) {
    dec_layer *L = &r->layers[i];
#define SUB(fmt) (snprintf(p, sizeof p, "layers.%d." fmt, i), p)
    st = wl_ln(&wl, &L->ln1, D, SUB("ln1"));
    if (st == PROTO_OK) st = wl_lin(&wl, &L->qkv, 3 * D, D, SUB("attn.qkv"));
    if (st == PROTO_OK) st = wl_lin(&wl, &L->out, D, D, SUB("attn.out"));
    if (st == PROTO_OK && L->retro_idx >= 0) {
      st = wl_ln(&wl, &L->lnc, D, SUB("lnc"));
      if (st == PROTO_OK) st = wl_lin(&wl, &L->cq, D, D, SUB("cca.q"));
      if (st == PROTO_OK) st = wl_lin(&wl, &L->ckv, 2 * D, D, SUB("cca.kv"));
      if (st == PROTO_OK) st = wl_lin(&wl, &L->cout, D, D, SUB("cca.out"));
    }
    if (st == PROTO_OK) st = wl_ln(&wl, &L->ln2, D, SUB("ln2"));
    if (st == PROTO_OK) st = wl_lin(&wl, &L->fc1, F, D, SUB("ffn.fc1"));
    if (st == PROTO_OK) st = wl_lin(&wl, &L->fc2, D, F, SUB("ffn.fc2"));
#undef SUB
  }
  for (int j = 0; j < c->enc_layers && st == PROTO_OK; j++) {
    enc_layer *E = &r->enc[j];
#define SUB(fmt) (snprintf(p, sizeof p, "encoder.layers.%d." fmt, j), p)
    st = wl_ln(&wl, &E->ln1, D, SUB("ln1"));
    if (st == PROTO_OK) st = wl_lin(&wl, &E->qkv, 3 * D, D, SUB("attn.qkv"));
    if (st == PROTO_OK) st = wl_lin(&wl, &E->out, D, D, SUB("attn.out"));
    if (st == PROTO_OK) st = wl_ln(&wl, &E->lnx, D, SUB("lnx"));
    if (st == PROTO_OK) st = wl_lin(&wl, &E->xq, D, D, SUB("xattn.q"));
    if (st == PROTO_OK) st = wl_lin(&wl, &E->xkv, 2 * D, D, SUB("xattn.kv"));
    if (st == PROTO_OK) st = wl_lin(&wl, &E->xout, D, D, SUB("xattn.out"));
    if (st == PROTO_OK) st = wl_ln(&wl, &E->ln2, D, SUB("ln2"));
    if (st == PROTO_OK) st = wl_lin(&wl, &E->fc1, F, D, SUB("ffn.fc1"));
    if (st == PROTO_OK) st = wl_lin(&wl, &E->fc2, D, F, SUB("ffn.fc2"));
#undef SUB
  }
  if (st == PROTO_OK) st = wl_ln(&wl, &r->enc_lnf, D, "encoder.ln_f");
  if (st == PROTO_OK) st = wl_ln(&wl, &r->ln_f, D, "ln_f");
  if (st != PROTO_OK) goto leave;
  if (st_count(r->st) != wl.loaded) {
    /* name the first tensor that the format does not know */
    for (size_t i = 0; i < st_count(r->st); i++) {
      const char *nm = st_at(r->st, i)->name;
      size_t k = 0;
      while (k < wl.n_names && strcmp(wl.names[k], nm) != 0) k++;
      if (k == wl.n_names) {
        proto_err_set("retro_open: %s: unexpected tensor '%s'%s", st_path(r->st), nm,
                      strcmp(nm, "head.weight") == 0 ? " (config says tie_embeddings)" : "");
        break;
      }
    }
    st = PROTO_EMODEL;
  }
leave:
  for (size_t i = 0; i < wl.n_names; i++) free(wl.names[i]);
  free(wl.names);
  return st;
}

/* ------------------------------------------------------------ config */

static int cfg_int(json_t *root, const char *key, int dflt, int required, int *out) {
  json_t *v = json_object_get(root, key);
  if (!v) {
    if (required) {
      proto_err_set("retro_open: config.json: missing integer field \"%s\"", key);
      return 0;
    }
    *out = dflt;
    return 1;
  }
  if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) > 1 << 30) {
    proto_err_set("retro_open: config.json: \"%s\" must be an integer", key);
    return 0;
  }
  *out = (int)json_integer_value(v);
  return 1;
}

static int cfg_num(json_t *root, const char *key, double dflt, double *out) {
  json_t *v = json_object_get(root, key);
  if (!v) {
    *out = dflt;
    return 1;
  }
  if (!json_is_number(v)) {
    proto_err_set("retro_open: config.json: \"%s\" must be a number", key);
    return 0;
  }
  *out = json_number_value(v);
  return 1;
}

static proto_status load_config(const char *dir, retro_config *c) {
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", dir);
  json_error_t jerr;
  json_t *root = json_load_file(path, 0, &jerr);
  proto_status st = PROTO_EMODEL;
  if (!root) {
    proto_err_set("retro_open: %s: %s (line %d)", path, jerr.text, jerr.line);
    return PROTO_EIO;
  }
  if (!json_is_object(root)) {
    proto_err_set("retro_open: %s: not a JSON object", path);
    goto leave;
  }
  json_t *mt = json_object_get(root, "model_type");
  if (!json_is_string(mt) || strcmp(json_string_value(mt), "retro") != 0) {
    proto_err_set("retro_open: %s: \"model_type\" must be \"retro\"", path);
    goto leave;
  }
  memset(c, 0, sizeof *c);
  double theta, eps;
  if (!cfg_int(root, "vocab_size", 0, 1, &c->vocab_size) || !cfg_int(root, "dim", 0, 1, &c->dim) ||
      !cfg_int(root, "n_layers", 0, 1, &c->n_layers) ||
      !cfg_int(root, "n_heads", 0, 1, &c->n_heads) ||
      !cfg_int(root, "ffn_dim", 0, 1, &c->ffn_dim) ||
      !cfg_int(root, "max_seq", 0, 1, &c->max_seq) ||
      !cfg_int(root, "chunk_len", PROTO_CHUNK_TOKENS, 0, &c->chunk_len) ||
      !cfg_int(root, "neighbour_len", PROTO_NEIGHBOUR_TOKENS, 0, &c->neighbour_len) ||
      !cfg_int(root, "n_neighbours", 2, 0, &c->n_neighbours) ||
      !cfg_int(root, "enc_layers", 2, 0, &c->enc_layers) ||
      !cfg_int(root, "pad_id", 0, 0, &c->pad_id) || !cfg_int(root, "eos_id", 0, 0, &c->eos_id) ||
      !cfg_num(root, "rope_theta", 10000.0, &theta) || !cfg_num(root, "layer_norm_eps", 1e-5, &eps))
    goto leave;
  json_t *tie = json_object_get(root, "tie_embeddings");
  if (tie && !json_is_boolean(tie)) {
    proto_err_set("retro_open: %s: \"tie_embeddings\" must be true or false", path);
    goto leave;
  }
  c->tie_embeddings = tie ? json_is_true(tie) : 1;
  if (c->vocab_size < 1 || c->dim < 2 || c->n_layers < 1 || c->n_heads < 1 ||
      c->dim % c->n_heads != 0 || (c->dim / c->n_heads) % 2 != 0 || c->ffn_dim < 1 ||
      c->max_seq < 1 || c->chunk_len < 1 || c->neighbour_len < 1 || c->n_neighbours < 0 ||
      c->enc_layers < 0) {
    proto_err_set(
        "retro_open: %s: inconsistent sizes (dim %d must be a multiple of n_heads %d "
        "with an even head dim; all sizes positive)",
        path, c->dim, c->n_heads);
    goto leave;
  }
  /* bounds before anything is allocated from them: a damaged config must
   * not ask for terabytes, or overflow an int on the way */
  if (c->vocab_size > 1 << 24 || c->dim > PROTO_MAX_DIM || c->n_layers > 256 ||
      c->enc_layers > 256 || c->n_heads > 1024 || c->ffn_dim > 1 << 18 || c->max_seq > 1 << 16 ||
      c->neighbour_len > 1 << 16 || c->chunk_len > c->max_seq || c->n_neighbours > 64) {
    proto_err_set(
        "retro_open: %s: a size out of range (vocab_size <= 2^24, dim <= %d, n_layers "
        "and enc_layers <= 256, n_heads <= 1024, ffn_dim <= 2^18, max_seq and "
        "neighbour_len <= 65536, chunk_len <= max_seq, n_neighbours <= 64)",
        path, PROTO_MAX_DIM);
    goto leave;
  }
  if (!(theta > 0.0 && theta <= FLT_MAX) || !(eps > 0.0 && eps <= FLT_MAX)) {
    proto_err_set("retro_open: %s: rope_theta and layer_norm_eps must be positive finite numbers",
                  path);
    goto leave;
  }
  c->rope_theta = (float)theta;
  c->layer_norm_eps = (float)eps;
  json_t *rl = json_object_get(root, "retro_layers");
  if (!json_is_array(rl) || json_array_size(rl) > 16) {
    proto_err_set("retro_open: %s: \"retro_layers\" must be an array of at most 16 layers", path);
    goto leave;
  }
  c->n_retro_layers = (int)json_array_size(rl);
  for (int i = 0; i < c->n_retro_layers; i++) {
    json_t *v = json_array_get(rl, (size_t)i);
    long long x = json_is_integer(v) ? json_integer_value(v) : -1;
    if (x < 1 || x > c->n_layers || (i > 0 && x <= c->retro_layers[i - 1])) {
      proto_err_set("retro_open: %s: \"retro_layers\" must be sorted, unique, in 1..n_layers",
                    path);
      goto leave;
    }
    c->retro_layers[i] = (int)x;
  }
  st = PROTO_OK;
leave:
  json_decref(root);
  return st;
}

static int file_exists(const char *dir, const char *name) {
  char path[4096];
  struct stat sb;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return stat(path, &sb) == 0;
}

proto_status retro_open(const char *dir, int threads, retro **out) {
  if (!out) return PROTO_EINVAL;
  *out = NULL;
  if (!dir) {
    proto_err_set("retro_open: no directory");
    return PROTO_EINVAL;
  }
  retro *r = calloc(1, sizeof *r);
  if (!r) return PROTO_ENOMEM;
  proto_status st = load_config(dir, &r->cfg);
  if (st != PROTO_OK) goto leave;
  const retro_config *c = &r->cfg;
  r->hd = c->dim / c->n_heads;
  r->layers = calloc((size_t)c->n_layers, sizeof *r->layers);
  r->enc = calloc((size_t)(c->enc_layers > 0 ? c->enc_layers : 1), sizeof *r->enc);
  if (!r->layers || !r->enc) {
    st = PROTO_ENOMEM;
    goto leave;
  }
  r->first_retro = -1;
  for (int i = 0; i < c->n_layers; i++) r->layers[i].retro_idx = -1;
  for (int t = 0; t < c->n_retro_layers; t++) {
    r->layers[c->retro_layers[t] - 1].retro_idx = t;
    if (t == 0) r->first_retro = c->retro_layers[0] - 1;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  st = st_open(path, &r->st);
  if (st != PROTO_OK) {
    proto_err_set("retro_open: %s", st_last_error());
    goto leave;
  }
  {
    const char *env = getenv("RETRO_F16_GEMV");
    r->f16_gemv = kn_f16_supported() && !(env && strcmp(env, "0") == 0);
  }
  st = load_weights(r);
  if (st != PROTO_OK) goto leave;

  /* rotary tables, computed in double as the reference does */
  int half = r->hd / 2;
  r->rope_n = c->max_seq;
  if (r->rope_n < c->neighbour_len) r->rope_n = c->neighbour_len;
  if (r->rope_n < 2 * c->chunk_len) r->rope_n = 2 * c->chunk_len;
  r->rope_cos = malloc((size_t)r->rope_n * (size_t)half * sizeof(float));
  r->rope_sin = malloc((size_t)r->rope_n * (size_t)half * sizeof(float));
  if (!r->rope_cos || !r->rope_sin) {
    st = PROTO_ENOMEM;
    goto leave;
  }
  for (int i = 0; i < half; i++) {
    double inv = pow((double)c->rope_theta, -(double)i * 2.0 / (double)r->hd);
    for (int p = 0; p < r->rope_n; p++) {
      double a = (double)p * inv;
      r->rope_cos[(size_t)p * (size_t)half + (size_t)i] = (float)cos(a);
      r->rope_sin[(size_t)p * (size_t)half + (size_t)i] = (float)sin(a);
    }
  }

  /* the tokenizer is optional (weights-only directories, tests) */
  if (file_exists(dir, "vocab.json") || file_exists(dir, "vocab.txt")) {
    st = tok_open_dir(dir, &r->tk);
    if (st != PROTO_OK) {
      proto_err_set("retro_open: tokenizer: %s", tok_last_error());
      goto leave;
    }
    if (tok_vocab_size(r->tk) > (size_t)c->vocab_size) {
      proto_err_set("retro_open: %s: tokenizer has %zu tokens, model vocab_size is %d", dir,
                    tok_vocab_size(r->tk), c->vocab_size);
      st = PROTO_EMISMATCH;
      goto leave;
    }
  }
  /* Parallelism comes from the pool, each tile a one-thread sgemm, as in
   * bert.c: OpenBLAS's own threads are process-wide, and with them on, the
   * encoder's pool threads each started BLAS threads of their own, which
   * made a server's query embedding several times slower
   * (docs/BENCHMARKS.md). */
  if ((st = pool_new(threads, &r->pool)) != PROTO_OK) {
    proto_err_set("retro_open: cannot start %d threads", threads);
    goto leave;
  }
  r->workers = pool_size(r->pool);
  kn_set_blas_threads(1);
  *out = r;
  r = NULL;
leave:
  retro_close(r);
  return st;
}

void retro_close(retro *r) {
  if (!r) return;
  pool_free(r->pool);
  st_close(r->st);
  tok_close(r->tk);
  free(r->layers);
  free(r->enc);
  free(r->rope_cos);
  free(r->rope_sin);
  free(r);
}

const retro_config *retro_get_config(const retro *r) { return r ? &r->cfg : NULL; }
const tok *retro_tokenizer(const retro *r) { return r ? r->tk : NULL; }

/* ------------------------------------------------------------ kernels */

/* A product: columns [c0, c1) of out (= or +=) x @ W^T + b, one tile of the
 * pool's split (blocks of 16 columns); over the F16 weights for one row or a
 * few when the file has them, else over the F32 ones. */
typedef struct lin_job {
  const float *x;
  int ldx;
  const lin_w *l;
  float *out;
  int ldo, M, N, K, accumulate, tiles;
} lin_job;

/* Smaller products stay on the calling thread: a split costs a pool wake-up.
 * One row or a few (a token, a short prompt: bound by reading the weights)
 * are split from 8k weights on, since one thread alone does not draw the
 * memory bandwidth that two do; every such product of the default decoder
 * (147k weights and up) is then spread over the pool. For one row over F16
 * weights a split from 10k and from 100k weights measured the same. */
enum { LIN_SPLIT_FLOPS = 1 << 20, LIN_SPLIT_FEW_ROWS = 1 << 13 };

/* A tile of a few rows (2..KN_F16_FEW_ROWS: a short prompt): its n columns
 * of out, its weights w (h: the F16 ones, when the file has them) and bias b,
 * over the F16 weights when there: no sgemm packing or BLAS threads. A sum
 * into out goes through a small buffer, 64 columns at a time. */
static void few_rows(const lin_job *j, const float *w, const uint16_t *h, const float *b, float *o,
                     int n) {
  const size_t K = (size_t)j->K;
  if (!j->accumulate) {
    kn_linear_prefer_f16(j->x, j->ldx, w, h, NULL, b, o, j->ldo, j->M, n, j->K);
    return;
  }
  enum { NB = 64 };
  float tmp[KN_F16_FEW_ROWS * NB];
  for (int n0 = 0; n0 < n; n0 += NB) {
    int nb = n - n0 < NB ? n - n0 : NB;
    kn_linear_prefer_f16(j->x, j->ldx, w + (size_t)n0 * K, h ? h + (size_t)n0 * K : NULL, NULL,
                         b ? b + n0 : NULL, tmp, NB, j->M, nb, j->K);
    for (int i = 0; i < j->M; i++)
      for (int c = 0; c < nb; c++) o[(size_t)i * (size_t)j->ldo + n0 + c] += tmp[i * NB + c];
  }
}

static void lin_tile(void *arg, int t, int worker) {
  (void)worker;
  const lin_job *j = arg;
  int c0, c1;
  kn_tile_cols(j->N, j->tiles, t, &c0, &c1);
  if (c1 <= c0) return;
  const float *w = j->l->w + (size_t)c0 * (size_t)j->K, *b = j->l->b ? j->l->b + c0 : NULL;
  const uint16_t *h = j->l->h ? j->l->h + (size_t)c0 * (size_t)j->K : NULL;
  float *o = j->out + c0;
  if (j->M == 1 && h) { /* one row over F16 weights */
    kn_gemv_f16(h, j->x, b, o, c1 - c0, j->K, j->accumulate);
    return;
  }
  if (j->M == 1) { /* one row: gemv, bound by reading W */
    int n = c1 - c0;
    if (!j->accumulate) {
      if (b) memcpy(o, b, (size_t)n * sizeof(float));
      else memset(o, 0, (size_t)n * sizeof(float));
    } else if (b) {
      for (int c = 0; c < n; c++) o[c] += b[c];
    }
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n, j->K, 1.0f, w, j->K, j->x, 1, 1.0f, o, 1);
    return;
  }
  if (j->M <= KN_F16_FEW_ROWS) {
    few_rows(j, w, h, b, o, c1 - c0);
    return;
  }
  if (!j->accumulate) {
    kn_linear(j->x, j->ldx, w, b, o, j->ldo, j->M, c1 - c0, j->K);
    return;
  }
  kn_sgemm(0, 1, j->M, c1 - c0, j->K, 1.0f, j->x, j->ldx, w, j->K, 1.0f, o, j->ldo);
  if (b)
    for (int i = 0; i < j->M; i++)
      for (int c = 0; c < c1 - c0; c++) o[(size_t)i * (size_t)j->ldo + c] += b[c];
}

/* out (M, N) (= or +=) x (M, K) @ W^T + b; M == 1 goes through gemv, a few
 * rows through the few-row kernels (both over the F16 weights when the file
 * has them), the rest through sgemm; split in column tiles over r's pool
 * from the sizes above, else on this thread (no pool, so no pool lock). */
static void lin(const retro *r, const float *x, int ldx, const lin_w *l, float *out, int ldo, int M,
                int N, int K, int accumulate) {
  lin_job j = {x, ldx, l, out, ldo, M, N, K, accumulate, 1};
  const double weights = (double)N * K;
  if (M <= KN_F16_FEW_ROWS ? weights >= LIN_SPLIT_FEW_ROWS : M * weights >= LIN_SPLIT_FLOPS)
    j.tiles = r->workers;
  if (j.tiles > 1) pool_for(r->pool, j.tiles, lin_tile, &j);
  else lin_tile(&j, 0, 0);
}

/* GPT-NeoX rotary on every head of v (D = H * hd) at table row pos. */
static void rope(const retro *r, float *v, int pos) {
  const int hd = r->hd, half = hd / 2, H = r->cfg.n_heads;
  const float *cs = r->rope_cos + (size_t)pos * (size_t)half;
  const float *sn = r->rope_sin + (size_t)pos * (size_t)half;
  for (int h = 0; h < H; h++) {
    float *x1 = v + h * hd, *x2 = x1 + half;
    for (int i = 0; i < half; i++) {
      float a = x1[i], b = x2[i];
      x1[i] = a * cs[i] - b * sn[i];
      x2[i] = b * cs[i] + a * sn[i];
    }
  }
}

/* ------------------------------------------------------------ state */

typedef struct chunk_nb {
  int k;           /* neighbours set (0: none) */
  int nvalid;      /* non-pad positions over all neighbours */
  int encoded;     /* kv filled */
  int32_t *tokens; /* (nvalid) the non-pad tokens, neighbour by neighbour */
  int *vpos;       /* (nvalid) position of each inside its neighbour (0..r-1) */
  int *start;      /* (k + 1) first row of each neighbour in tokens */
  float *kv;       /* (n_retro, 2, nvalid, D): rotated CCA keys, then values */
} chunk_nb;

struct retro_state {
  const retro *m;
  int max_tokens;
  int pos;
  int n_chunks;
  chunk_nb *chunks; /* (n_chunks) */
  float *kcache;    /* (n_layers, max_tokens, D) rotated keys */
  float *vcache;    /* (n_layers, max_tokens, D) */
  float *hbuf;      /* (m, D) H rows of the chunk in progress, row p % m */
  /* decoder block scratch, rows = cap */
  int cap;
  float *x;      /* (cap, D) residual stream */
  float *xn;     /* (cap, D) normalised / sublayer input */
  float *qkv;    /* (cap, 3D) */
  float *att;    /* (cap, D) */
  float *ffn;    /* (cap, max(F, D)) */
  float *scores; /* (cap, score_cols) */
  int score_cols;
  /* encoder scratch for up to rcap neighbour positions (non-pad) per chunk */
  int rcap;
  float *ey;      /* (rcap, D) */
  float *eyn;     /* (rcap, D) */
  float *eqkv;    /* (rcap, 3D) */
  float *eatt;    /* (rcap, D) */
  float *effn;    /* (rcap, F) */
  float *hkv;     /* (m, 2D) */
  float *escores; /* (max(r*r, rcap*m)) */
  retro_stats stats;
};

static void state_free_scratch_k(retro_state *s) {
  free(s->ey);
  free(s->eyn);
  free(s->eqkv);
  free(s->eatt);
  free(s->effn);
  free(s->escores);
  free(s->scores);
  s->ey = s->eyn = s->eqkv = s->eatt = s->effn = s->escores = s->scores = NULL;
}

/* Makes room for R neighbour positions per chunk (the encoder's rows and
 * the CCA keys). On failure the state keeps its old, smaller buffers. */
static proto_status ensure_rows(retro_state *s, int R) {
  if (R < 1) R = 1;
  if (R <= s->rcap && s->ey) return PROTO_OK;
  const retro_config *c = &s->m->cfg;
  const size_t D = (size_t)c->dim, F = (size_t)c->ffn_dim, r = (size_t)c->neighbour_len,
               m = (size_t)c->chunk_len, n = (size_t)R;
  const size_t es = r * r > n * m ? r * r : n * m;
  const int cols = s->max_tokens > R ? s->max_tokens : R;
  float *ey = malloc(n * D * sizeof(float)), *eyn = malloc(n * D * sizeof(float)),
        *eqkv = malloc(n * 3 * D * sizeof(float)), *eatt = malloc(n * D * sizeof(float)),
        *effn = malloc(n * F * sizeof(float)), *escores = malloc(es * sizeof(float)),
        *scores = malloc((size_t)s->cap * (size_t)cols * sizeof(float));
  if (!ey || !eyn || !eqkv || !eatt || !effn || !escores || !scores) {
    free(ey);
    free(eyn);
    free(eqkv);
    free(eatt);
    free(effn);
    free(escores);
    free(scores);
    proto_err_set("retro: out of memory for %d neighbour positions", R);
    return PROTO_ENOMEM;
  }
  state_free_scratch_k(s);
  s->ey = ey;
  s->eyn = eyn;
  s->eqkv = eqkv;
  s->eatt = eatt;
  s->effn = effn;
  s->escores = escores;
  s->scores = scores;
  s->score_cols = cols;
  s->rcap = R;
  return PROTO_OK;
}

static void chunk_clear(chunk_nb *c) {
  free(c->tokens);
  free(c->vpos);
  free(c->start);
  free(c->kv);
  memset(c, 0, sizeof *c);
}

void retro_state_free(retro_state *s) {
  if (!s) return;
  if (s->chunks)
    for (int u = 0; u < s->n_chunks; u++) chunk_clear(&s->chunks[u]);
  free(s->chunks);
  free(s->kcache);
  free(s->vcache);
  free(s->hbuf);
  free(s->x);
  free(s->xn);
  free(s->qkv);
  free(s->att);
  free(s->ffn);
  free(s->hkv);
  state_free_scratch_k(s);
  free(s);
}

proto_status retro_state_new(const retro *r, int max_tokens, retro_state **out) {
  if (!out) return PROTO_EINVAL;
  *out = NULL;
  if (!r) return PROTO_EINVAL;
  const retro_config *c = &r->cfg;
  if (max_tokens < 1 || max_tokens > c->max_seq) {
    proto_err_set("retro_state_new: max_tokens %d outside 1..%d (max_seq)", max_tokens, c->max_seq);
    return PROTO_ERANGE;
  }
  retro_state *s = calloc(1, sizeof *s);
  if (!s) return PROTO_ENOMEM;
  proto_status st = PROTO_ENOMEM;
  const size_t D = (size_t)c->dim, F = (size_t)c->ffn_dim, T = (size_t)max_tokens,
               m = (size_t)c->chunk_len;
  s->m = r;
  s->max_tokens = max_tokens;
  s->n_chunks = max_tokens / c->chunk_len;
  s->cap = max_tokens < RETRO_BLOCK ? max_tokens : RETRO_BLOCK;
  const size_t cap = (size_t)s->cap;
  s->chunks = calloc((size_t)(s->n_chunks > 0 ? s->n_chunks : 1), sizeof *s->chunks);
  s->kcache = malloc((size_t)c->n_layers * T * D * sizeof(float));
  s->vcache = malloc((size_t)c->n_layers * T * D * sizeof(float));
  s->hbuf = calloc(m * D, sizeof(float));
  s->x = malloc(cap * D * sizeof(float));
  s->xn = malloc(cap * D * sizeof(float));
  s->qkv = malloc(cap * 3 * D * sizeof(float));
  s->att = malloc(cap * D * sizeof(float));
  s->ffn = malloc(cap * (F > D ? F : D) * sizeof(float));
  s->hkv = malloc(m * 2 * D * sizeof(float));
  if (!s->chunks || !s->kcache || !s->vcache || !s->hbuf || !s->x || !s->xn || !s->qkv || !s->att ||
      !s->ffn || !s->hkv) {
    proto_err_set("retro_state_new: out of memory (max_tokens %d)", max_tokens);
    goto leave;
  }
  st = ensure_rows(s, c->n_neighbours * c->neighbour_len);
  if (st != PROTO_OK) goto leave;
  *out = s;
  s = NULL;
leave:
  retro_state_free(s);
  return st;
}

void retro_state_reset(retro_state *s) {
  if (!s) return;
  for (int u = 0; u < s->n_chunks; u++) chunk_clear(&s->chunks[u]);
  s->pos = 0;
  memset(&s->stats, 0, sizeof s->stats);
}

void retro_state_stats(const retro_state *s, retro_stats *out) {
  if (!out) return;
  if (s) *out = s->stats;
  else memset(out, 0, sizeof *out);
}

int retro_state_pos(const retro_state *s) { return s ? s->pos : 0; }

proto_status retro_set_neighbours(retro_state *s, int chunk, const int32_t *tokens, int k,
                                  int32_t pad_id) {
  if (!s) return PROTO_EINVAL;
  const retro_config *c = &s->m->cfg;
  const int r = c->neighbour_len, m = c->chunk_len;
  if (chunk < 0 || chunk >= s->n_chunks) {
    proto_err_set("retro_set_neighbours: chunk %d outside 0..%d", chunk, s->n_chunks - 1);
    return PROTO_ERANGE;
  }
  if (k < 0 || k > PROTO_MAX_K || (k > 0 && !tokens)) {
    proto_err_set("retro_set_neighbours: bad neighbour count %d", k);
    return PROTO_EINVAL;
  }
  if (s->pos > chunk * m + m - 1) {
    proto_err_set(
        "retro_set_neighbours: chunk %d: too late, its last token (position %d) "
        "was already consumed",
        chunk, chunk * m + m - 1);
    return PROTO_EINVAL;
  }
  int nvalid = 0;
  for (size_t i = 0; i < (size_t)k * (size_t)r; i++) {
    if (tokens[i] == pad_id) continue;
    if (tokens[i] < 0 || tokens[i] >= c->vocab_size) {
      proto_err_set("retro_set_neighbours: chunk %d: token id %d outside the vocabulary", chunk,
                    (int)tokens[i]);
      return PROTO_ERANGE;
    }
    nvalid++;
  }
  proto_status st = ensure_rows(s, nvalid);
  if (st != PROTO_OK) return st;
  chunk_nb *cn = &s->chunks[chunk];
  chunk_clear(cn);
  if (k == 0 || nvalid == 0) return PROTO_OK; /* behaves as no neighbours */
  cn->tokens = malloc((size_t)nvalid * sizeof(int32_t));
  cn->vpos = malloc((size_t)nvalid * sizeof(int));
  cn->start = malloc((size_t)(k + 1) * sizeof(int));
  cn->kv = malloc((size_t)c->n_retro_layers * 2 * (size_t)nvalid * (size_t)c->dim * sizeof(float));
  if (!cn->tokens || !cn->vpos || !cn->start || !cn->kv) {
    chunk_clear(cn);
    proto_err_set("retro_set_neighbours: out of memory");
    return PROTO_ENOMEM;
  }
  int nv = 0;
  for (int j = 0; j < k; j++) {
    cn->start[j] = nv;
    for (int p = 0; p < r; p++) {
      int32_t t = tokens[(size_t)j * (size_t)r + (size_t)p];
      if (t == pad_id) continue;
      cn->tokens[nv] = t;
      cn->vpos[nv++] = p;
    }
  }
  cn->start[k] = nv;
  cn->k = k;
  cn->nvalid = nvalid;
  return PROTO_OK;
}

/* ------------------------------------------------------------ encoder */

/* Encodes chunk u's neighbours against H_u (s->hbuf) and fills every RETRO
 * layer's CCA keys/values. Pad positions are dropped up front: they are
 * masked as keys everywhere, so no valid position depends on them, and the
 * encoder runs on the nvalid real positions only (rotary positions kept). */
static void encode_chunk(retro_state *s, int u) {
  double t0 = proto_now();
  const retro *M = s->m;
  const retro_config *c = &M->cfg;
  chunk_nb *cn = &s->chunks[u];
  const int D = c->dim, F = c->ffn_dim, m = c->chunk_len, H = c->n_heads, hd = M->hd, k = cn->k,
            R = cn->nvalid;
  const float eps = c->layer_norm_eps, scale = 1.0f / sqrtf((float)hd);
  float *y = s->ey;     /* (R, D) */
  float *yn = s->eyn;   /* (R, D) */
  float *qkv = s->eqkv; /* (R, 3D) */
  float *att = s->eatt; /* (R, D) */
  for (int i = 0; i < R; i++)
    memcpy(y + (size_t)i * D, M->tok_emb + (size_t)cn->tokens[i] * D, (size_t)D * sizeof(float));
  for (int l = 0; l < c->enc_layers; l++) {
    const enc_layer *E = &M->enc[l];
    /* bidirectional self-attention within each neighbour, rotary 0..r-1 */
    kn_layernorm(yn, y, E->ln1.g, E->ln1.b, R, D, eps);
    lin(s->m, yn, D, &E->qkv, qkv, 3 * D, R, 3 * D, D, 0);
    for (int i = 0; i < R; i++) {
      rope(M, qkv + (size_t)i * 3 * D, cn->vpos[i]);
      rope(M, qkv + (size_t)i * 3 * D + D, cn->vpos[i]);
    }
    for (int j = 0; j < k; j++) {
      const int a = cn->start[j], nv = cn->start[j + 1] - a;
      if (nv == 0) continue;
      const float *base = qkv + (size_t)a * 3 * D;
      for (int h = 0; h < H; h++)
        kn_attention_head(base + h * hd, 3 * D, base + D + h * hd, 3 * D, base + 2 * D + h * hd,
                          3 * D, att + (size_t)a * D + h * hd, D, nv, nv, nv, hd, scale, 0,
                          s->escores);
    }
    lin(s->m, att, D, &E->out, y, D, R, D, D, 1);
    /* cross-attention to H_u (no positions, no mask) */
    kn_layernorm(yn, y, E->lnx.g, E->lnx.b, R, D, eps);
    lin(s->m, yn, D, &E->xq, qkv, D, R, D, D, 0);
    lin(s->m, s->hbuf, D, &E->xkv, s->hkv, 2 * D, m, 2 * D, D, 0);
    for (int h = 0; h < H; h++)
      kn_attention_head(qkv + h * hd, D, s->hkv + h * hd, 2 * D, s->hkv + D + h * hd, 2 * D,
                        att + h * hd, D, R, m, m, hd, scale, 0, s->escores);
    lin(s->m, att, D, &E->xout, y, D, R, D, D, 1);
    /* feed-forward */
    kn_layernorm(yn, y, E->ln2.g, E->ln2.b, R, D, eps);
    lin(s->m, yn, D, &E->fc1, s->effn, F, R, F, D, 0);
    kn_gelu(s->effn, (size_t)R * (size_t)F);
    lin(s->m, s->effn, F, &E->fc2, y, D, R, D, F, 1);
  }
  /* E_u = ln_f(y) */
  kn_layernorm(yn, y, M->enc_lnf.g, M->enc_lnf.b, R, D, eps);
  for (int li = 0; li < c->n_layers; li++) {
    const dec_layer *L = &M->layers[li];
    if (L->retro_idx < 0) continue;
    float *K = cn->kv + (size_t)L->retro_idx * 2 * (size_t)R * D; /* (R, D) */
    float *Vv = K + (size_t)R * D;                                /* (R, D) */
    lin_w wk = {L->ckv.w, L->ckv.b, NULL}, wv = {L->ckv.w + (size_t)D * D, L->ckv.b + D, NULL};
    lin(s->m, yn, D, &wk, K, D, R, D, D, 0);
    lin(s->m, yn, D, &wv, Vv, D, R, D, D, 0);
    for (int i = 0; i < R; i++) rope(M, K + (size_t)i * D, cn->vpos[i]);
  }
  cn->encoded = 1;
  s->stats.chunks_encoded++;
  s->stats.encode_s += proto_now() - t0;
}

/* ------------------------------------------------------------ decoder */

/* CCA of layer L for the block rows [0, n) at positions P0.. ; xn holds
 * lnc(x); adds into x. */
static void cca_block(retro_state *s, const dec_layer *L, int P0, int n) {
  const retro *M = s->m;
  const retro_config *c = &M->cfg;
  const int D = c->dim, m = c->chunk_len, H = c->n_heads, hd = M->hd;
  const float scale = 1.0f / sqrtf((float)hd);
  int i = 0;
  while (i < n) {
    int p = P0 + i;
    if (p < m - 1) {
      i++;
      continue;
    }
    int u = (p - (m - 1)) / m;
    int end = (u + 1) * m + (m - 1) - P0; /* first row of the next group */
    if (end > n) end = n;
    chunk_nb *cn = u < s->n_chunks ? &s->chunks[u] : NULL;
    if (cn && cn->k > 0 && cn->encoded) {
      int seg = end - i;
      float *q = s->qkv; /* (seg, D) */
      lin(s->m, s->xn + (size_t)i * D, D, &L->cq, q, D, seg, D, D, 0);
      for (int t = 0; t < seg; t++) rope(M, q + (size_t)t * D, (P0 + i + t - (m - 1)) % m + m - 1);
      const int nv = cn->nvalid;
      const float *K = cn->kv + (size_t)L->retro_idx * 2 * (size_t)nv * D;
      const float *Vv = K + (size_t)nv * D;
      for (int h = 0; h < H; h++)
        kn_attention_head(q + h * hd, D, K + h * hd, D, Vv + h * hd, D, s->att + h * hd, D, seg, nv,
                          nv, hd, scale, 0, s->scores);
      lin(s->m, s->att, D, &L->cout, s->x + (size_t)i * D, D, seg, D, D, 1);
    }
    i = end;
  }
}

/* One block of n <= cap tokens at positions pos..pos+n-1. Writes the
 * logits of rows [first_logit, n) to logits (row-major, vocab each). */
/* One token's causal self-attention, a head a task (the heads' scores in
 * separate rows of s->scores). */
typedef struct {
  const float *qkv, *kc, *vc;
  float *att, *scores;
  int D, hd, keys, cols;
  float scale;
} token_attn_job;

static void token_attn_task(void *arg, int h, int worker) {
  (void)worker;
  const token_attn_job *j = arg;
  kn_attention_head(j->qkv + h * j->hd, 3 * j->D, j->kc + h * j->hd, j->D, j->vc + h * j->hd, j->D,
                    j->att + h * j->hd, j->D, 1, j->keys, j->keys, j->hd, j->scale, 1,
                    j->scores + (size_t)h * (size_t)j->cols);
}

/* Causal self-attention of the block's n rows over the cache (keys up to
 * P0 + n): one token's heads spread over the pool, a longer block's on
 * this thread (their products go through sgemm, threaded already). */
static void self_attention(retro_state *s, const float *kc, const float *vc, int n, int P0,
                           float scale) {
  const retro *M = s->m;
  const int D = M->cfg.dim, H = M->cfg.n_heads, hd = M->hd;
  if (n == 1 && s->cap >= H) {
    token_attn_job j = {s->qkv, kc, vc, s->att, s->scores, D, hd, P0 + 1, s->score_cols, scale};
    pool_for(M->pool, H, token_attn_task, &j);
    return;
  }
  for (int h = 0; h < H; h++)
    kn_attention_head(s->qkv + h * hd, 3 * D, kc + h * hd, D, vc + h * hd, D, s->att + h * hd, D, n,
                      P0 + n, P0 + n, hd, scale, 1, s->scores);
}

static void forward_block(retro_state *s, const int32_t *tokens, int n, int first_logit,
                          float *logits) {
  const retro *M = s->m;
  const retro_config *c = &M->cfg;
  const int D = c->dim, F = c->ffn_dim, m = c->chunk_len, V = c->vocab_size;
  const float eps = c->layer_norm_eps, scale = 1.0f / sqrtf((float)M->hd);
  const int P0 = s->pos, T = s->max_tokens;
  float *x = s->x, *xn = s->xn, *qkv = s->qkv;
  for (int i = 0; i < n; i++)
    memcpy(x + (size_t)i * D, M->tok_emb + (size_t)tokens[i] * D, (size_t)D * sizeof(float));
  for (int l = 0; l < c->n_layers; l++) {
    const dec_layer *L = &M->layers[l];
    float *kc = s->kcache + (size_t)l * T * D; /* (T, D) */
    float *vc = s->vcache + (size_t)l * T * D; /* (T, D) */
    /* causal self-attention with the KV cache */
    kn_layernorm(xn, x, L->ln1.g, L->ln1.b, n, D, eps);
    lin(s->m, xn, D, &L->qkv, qkv, 3 * D, n, 3 * D, D, 0);
    for (int i = 0; i < n; i++) {
      float *row = qkv + (size_t)i * 3 * D;
      rope(M, row, P0 + i);
      rope(M, row + D, P0 + i);
      memcpy(kc + (size_t)(P0 + i) * D, row + D, (size_t)D * sizeof(float));
      memcpy(vc + (size_t)(P0 + i) * D, row + 2 * D, (size_t)D * sizeof(float));
    }
    self_attention(s, kc, vc, n, P0, scale);
    lin(s->m, s->att, D, &L->out, x, D, n, D, D, 1);
    /* chunked cross-attention */
    if (L->retro_idx >= 0) {
      kn_layernorm(xn, x, L->lnc.g, L->lnc.b, n, D, eps);
      if (l == M->first_retro) {
        for (int i = 0; i < n; i++) {
          int p = P0 + i;
          memcpy(s->hbuf + (size_t)(p % m) * D, xn + (size_t)i * D, (size_t)D * sizeof(float));
          int u = p / m;
          if (p % m == m - 1 && u < s->n_chunks && s->chunks[u].k > 0 && !s->chunks[u].encoded)
            encode_chunk(s, u);
        }
      }
      cca_block(s, L, P0, n);
    }
    /* feed-forward */
    kn_layernorm(xn, x, L->ln2.g, L->ln2.b, n, D, eps);
    lin(s->m, xn, D, &L->fc1, s->ffn, F, n, F, D, 0);
    kn_gelu(s->ffn, (size_t)n * (size_t)F);
    lin(s->m, s->ffn, F, &L->fc2, x, D, n, D, F, 1);
  }
  s->pos += n;
  if (first_logit < n) {
    int nl = n - first_logit;
    kn_layernorm(xn, x + (size_t)first_logit * D, M->ln_f.g, M->ln_f.b, nl, D, eps);
    lin_w head = {M->head, NULL, M->head_h};
    lin(s->m, xn, D, &head, logits, V, nl, V, D, 0);
  }
}

proto_status retro_forward(retro_state *s, const int32_t *tokens, int n, int all_logits,
                           float *logits) {
  if (!s || !tokens || !logits || n < 1) {
    proto_err_set("retro_forward: bad arguments");
    return PROTO_EINVAL;
  }
  const retro_config *c = &s->m->cfg;
  if (n > s->max_tokens - s->pos) {
    proto_err_set("retro_forward: %d tokens at position %d exceed the state's %d", n, s->pos,
                  s->max_tokens);
    return PROTO_ERANGE;
  }
  for (int i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= c->vocab_size) {
      proto_err_set("retro_forward: token id %d outside the vocabulary (%d)", (int)tokens[i],
                    c->vocab_size);
      return PROTO_ERANGE;
    }
  double t0 = proto_now();
  for (int done = 0; done < n;) {
    int b = n - done < s->cap ? n - done : s->cap;
    int last = done + b == n;
    if (all_logits)
      forward_block(s, tokens + done, b, 0, logits + (size_t)done * (size_t)c->vocab_size);
    else forward_block(s, tokens + done, b, last ? b - 1 : b, logits);
    done += b;
  }
  s->stats.tokens += n;
  s->stats.forward_calls++;
  s->stats.forward_s += proto_now() - t0;
  return PROTO_OK;
}
