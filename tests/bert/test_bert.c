/* test_bert.c - the encoder against PyTorch, the safetensors loader against
 * bad files, and the kernels and pool on their own (TAP).
 *
 *   test_bert PYTHON GENERATOR SHARED_DATA WORKDIR TINY_EXPECTED
 *
 * With PyTorch: runs GENERATOR (model/train/make_random_bert.py) into
 * WORKDIR/gen: 2- and 6-layer, 128- and 384-wide BERT (WordPiece) and RoBERTa
 * (byte-level BPE) models with CLS and mean pooling, F32/F16/BF16 weights,
 * and the PyTorch outputs for a batch of mixed-length inputs; the C encoder
 * must match within 1e-4. Always (and alone when PyTorch is missing, which it
 * says): rebuilds the "tiny" model from the recorded tensor recipe in
 * TINY_EXPECTED (tests/bert/tiny_expected.json) and matches its recorded
 * outputs. Bad files are written by this program into WORKDIR/bad.
 */
#include "bert.h"
#include "kernels.h"
#include "pool.h"
#include "st.h"
#include "run_cmd.h"
#include "tap.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *g_python, *g_generator, *g_shared, *g_work, *g_tiny;

#define TOL 1e-4

/* ---- helpers -------------------------------------------------------------- */

static int copy_file(const char *from, const char *to) {
  FILE *a = fopen(from, "rb"), *b = a ? fopen(to, "wb") : NULL;
  int ok = a && b;
  char buf[65536];
  size_t n;
  while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
  if (a) fclose(a);
  if (b && fclose(b) != 0) ok = 0;
  return ok;
}

static uint32_t det_hash(uint32_t i, uint32_t seed) {
  /* same as det_uniform in make_random_bert.py (uint32, wrapping) */
  uint32_t h = i * 0x7FEB352Du + seed * 0x5BD1E995u;
  h ^= h >> 15;
  h *= 0x2C1B3C6Du;
  h ^= h >> 12;
  h *= 0x297A2D39u;
  h ^= h >> 15;
  return h;
}

typedef struct wt { /* a tensor to write */
  const char *name;
  const char *dtype;
  int ndim;
  int64_t shape[4];
  const void *data;
  size_t nbytes;
  int64_t off_begin, off_end; /* -1: computed */
} wt;

/* Writes a safetensors file; returns 1 on success. */
static int write_st(const char *path, const wt *t, size_t n) {
  json_t *h = json_object();
  uint64_t off = 0;
  for (size_t i = 0; i < n; i++) {
    json_t *e = json_object(), *shape = json_array();
    for (int d = 0; d < t[i].ndim; d++) json_array_append_new(shape, json_integer(t[i].shape[d]));
    json_object_set_new(e, "dtype", json_string(t[i].dtype));
    json_object_set_new(e, "shape", shape);
    int64_t b = t[i].off_begin >= 0 ? t[i].off_begin : (int64_t)off;
    int64_t en = t[i].off_end >= 0 ? t[i].off_end : (int64_t)(off + t[i].nbytes);
    json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)b, (json_int_t)en));
    json_object_set_new(h, t[i].name, e);
    off += t[i].nbytes;
  }
  char *text = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(h);
  size_t tl = strlen(text), pad = (8 - tl % 8) % 8;
  uint64_t hl = tl + pad;
  FILE *f = fopen(path, "wb");
  int ok = f != NULL;
  unsigned char le[8];
  for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hl >> (8 * i));
  if (ok) ok = fwrite(le, 1, 8, f) == 8 && fwrite(text, 1, tl, f) == tl;
  for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
  for (size_t i = 0; ok && i < n; i++)
    ok = t[i].nbytes == 0 || fwrite(t[i].data, 1, t[i].nbytes, f) == t[i].nbytes;
  if (f && fclose(f) != 0) ok = 0;
  free(text);
  return ok;
}

/* Builds a model directory from a cases.json entry ("tensors" recipe, "config"). */
static int build_model(json_t *m, const char *dir) {
  char path[4096];
  mkdir(dir, 0755);
  snprintf(path, sizeof path, "%s/config.json", dir);
  if (json_dump_file(json_object_get(m, "config"), path, JSON_INDENT(1)) != 0) return 0;
  json_t *ts = json_object_get(m, "tensors");
  size_t n = json_array_size(ts);
  wt *w = calloc(n, sizeof *w);
  float **bufs = calloc(n, sizeof *bufs);
  int ok = w && bufs;
  for (size_t i = 0; ok && i < n; i++) {
    json_t *t = json_array_get(ts, i), *shape = json_object_get(t, "shape");
    size_t count = 1;
    w[i].name = json_string_value(json_object_get(t, "name"));
    w[i].dtype = "F32";
    w[i].ndim = (int)json_array_size(shape);
    for (int d = 0; d < w[i].ndim; d++) {
      w[i].shape[d] = json_integer_value(json_array_get(shape, (size_t)d));
      count *= (size_t)w[i].shape[d];
    }
    float scale = (float)json_number_value(json_object_get(t, "scale"));
    float offset = (float)json_number_value(json_object_get(t, "offset"));
    uint32_t seed = (uint32_t)json_integer_value(json_object_get(t, "seed"));
    bufs[i] = malloc(count * sizeof(float));
    if (!bufs[i]) {
      ok = 0;
      break;
    }
    for (size_t k = 0; k < count; k++) {
      float u = (float)(det_hash((uint32_t)k, seed) >> 8) * (1.0f / 8388608.0f) - 1.0f;
      bufs[i][k] = u * scale + offset;
    }
    w[i].data = bufs[i];
    w[i].nbytes = count * sizeof(float);
    w[i].off_begin = w[i].off_end = -1;
  }
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (ok) ok = write_st(path, w, n);
  for (size_t i = 0; bufs && i < n; i++) free(bufs[i]);
  free(bufs);
  free(w);
  const char *vocab = json_string_value(json_object_get(m, "vocab"));
  char from[4096], to[4096];
  if (ok && vocab && strcmp(vocab, "wordpiece") == 0) {
    snprintf(from, sizeof from, "%s/bert-base-uncased/vocab.txt", g_shared);
    snprintf(to, sizeof to, "%s/vocab.txt", dir);
    ok = copy_file(from, to);
  } else if (ok) {
    snprintf(from, sizeof from, "%s/gpt2/vocab.json", g_shared);
    snprintf(to, sizeof to, "%s/vocab.json", dir);
    ok = copy_file(from, to);
    snprintf(from, sizeof from, "%s/gpt2/merges.txt", g_shared);
    snprintf(to, sizeof to, "%s/merges.txt", dir);
    ok = ok && copy_file(from, to);
  }
  return ok;
}

/* ids arrays from a JSON list of lists; caller frees with free_ids. */
static int32_t **json_ids(json_t *list, size_t **lens) {
  size_t n = json_array_size(list);
  int32_t **ids = calloc(n + 1, sizeof *ids);
  *lens = calloc(n + 1, sizeof **lens);
  for (size_t i = 0; i < n; i++) {
    json_t *s = json_array_get(list, i);
    size_t k = json_array_size(s);
    ids[i] = malloc((k + 1) * sizeof(int32_t));
    (*lens)[i] = k;
    for (size_t j = 0; j < k; j++) ids[i][j] = (int32_t)json_integer_value(json_array_get(s, j));
  }
  return ids;
}

static void free_ids(int32_t **ids, size_t *lens, size_t n) {
  for (size_t i = 0; i < n; i++) free(ids[i]);
  free(ids);
  free(lens);
}

/* max |out - expect| over n x dim; expect is a JSON list of lists. */
static double max_err(const float *out, json_t *expect, size_t n, size_t dim) {
  double e = 0;
  if (json_array_size(expect) != n) return INFINITY;
  for (size_t i = 0; i < n; i++) {
    json_t *row = json_array_get(expect, i);
    if (json_array_size(row) != dim) return INFINITY;
    for (size_t k = 0; k < dim; k++) {
      double d = fabs((double)out[i * dim + k] - json_number_value(json_array_get(row, k)));
      if (!(d <= e)) e = d; /* NaN -> NaN */
    }
  }
  return e;
}

/* ---- parity ------------------------------------------------------------- */

typedef struct conc_arg {
  bert *b;
  int32_t **ids;
  size_t *lens;
  size_t n;
  const float *want;
  int bad;
} conc_arg;

static void *conc_main(void *v) {
  conc_arg *a = v;
  uint32_t dim = bert_dim(a->b);
  float *out = malloc(a->n * dim * sizeof(float));
  for (int rep = 0; rep < 2 && out; rep++) {
    if (bert_embed_ids(a->b, (const int32_t *const *)a->ids, a->lens, a->n, out) != PROTO_OK) {
      a->bad = 1;
      break;
    }
    for (size_t k = 0; k < a->n * dim; k++)
      if (fabsf(out[k] - a->want[k]) > 1e-6f) a->bad = 1;
  }
  if (!out) a->bad = 1;
  free(out);
  return NULL;
}

static void check_model(json_t *m, const char *root, int concurrency) {
  const char *name = json_string_value(json_object_get(m, "name"));
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/%s", root, json_string_value(json_object_get(m, "dir")));
  printf("# model %s\n", name);
  bert *b = NULL;
  proto_status st = bert_open(dir, NULL, &b);
  CHECKF(st == PROTO_OK, "%s: %s", name, bert_last_error());
  if (st != PROTO_OK) return;
  size_t dim = (size_t)json_integer_value(json_object_get(m, "dim"));
  CHECK(bert_dim(b) == dim);
  CHECK(bert_max_tokens(b) == json_integer_value(json_object_get(m, "max_tokens")));
  const char *pool = json_string_value(json_object_get(m, "pooling"));
  CHECKF(bert_get_pooling(b) == (strcmp(pool, "mean") == 0 ? BERT_POOL_MEAN : BERT_POOL_CLS),
         "%s: pooling %d, want %s", name, (int)bert_get_pooling(b), pool);
  CHECK(strchr(bert_fingerprint(b), ':') != NULL);

  size_t *lens;
  json_t *jids = json_object_get(m, "ids");
  size_t n = json_array_size(jids);
  int32_t **ids = json_ids(jids, &lens);
  float *out = calloc(n * dim, sizeof(float)), *one = calloc(dim, sizeof(float));
  st = bert_embed_ids(b, (const int32_t *const *)ids, lens, n, out);
  CHECKF(st == PROTO_OK, "%s", bert_last_error());
  double e = max_err(out, json_object_get(m, "expect_ids"), n, dim);
  CHECKF(e <= TOL, "%s: ids batch max abs error %.3g", name, e);
  printf("# %s: %zu inputs, max abs error %.2g\n", name, n, e);
  /* one at a time gives the same vectors as the batch */
  double e1 = 0;
  for (size_t i = 0; i < n; i++) {
    const int32_t *p = ids[i];
    bert_embed_ids(b, &p, &lens[i], 1, one);
    for (size_t k = 0; k < dim; k++) {
      double d = fabs((double)one[k] - out[i * dim + k]);
      if (!(d <= e1)) e1 = d;
    }
  }
  CHECKF(e1 <= 1e-5, "%s: single vs batch %.3g", name, e1);

  if (concurrency) {
    conc_arg ca[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
      ca[t] = (conc_arg){b, ids, lens, n, out, 0};
      pthread_create(&th[t], NULL, conc_main, &ca[t]);
    }
    int bad = 0;
    for (int t = 0; t < 4; t++) {
      pthread_join(th[t], NULL);
      bad |= ca[t].bad;
    }
    CHECKF(!bad, "%s: concurrent callers disagree", name);
  }

  /* texts through the C tokenizer */
  json_t *texts = json_object_get(m, "texts");
  if (json_is_array(texts)) {
    size_t nt = json_array_size(texts);
    const char **tv = calloc(nt, sizeof *tv);
    size_t *tl = calloc(nt, sizeof *tl);
    for (size_t i = 0; i < nt; i++) {
      tv[i] = json_string_value(json_array_get(texts, i));
      tl[i] = json_string_length(json_array_get(texts, i));
    }
    float *tout = calloc(nt * dim, sizeof(float));
    st = bert_embed_texts(b, tv, tl, nt, tout);
    CHECKF(st == PROTO_OK, "%s", bert_last_error());
    double et = max_err(tout, json_object_get(m, "expect_texts"), nt, dim);
    CHECKF(et <= TOL, "%s: texts max abs error %.3g", name, et);
    /* where they differ, say whether the tokenizer is the cause */
    json_t *want_ids = json_object_get(m, "text_ids");
    int tok_same = 1;
    for (size_t i = 0; i < nt; i++) {
      int32_t *ti = NULL;
      size_t tn = 0;
      if (tok_encode(bert_tokenizer(b), tv[i], tl[i], &ti, &tn) != PROTO_OK) {
        tok_same = 0;
        continue;
      }
      json_t *w = json_array_get(want_ids, i);
      if (tn != json_array_size(w)) tok_same = 0;
      for (size_t k = 0; tok_same && k < tn; k++)
        if (ti[k] != json_integer_value(json_array_get(w, k))) tok_same = 0;
      free(ti);
    }
    CHECKF(tok_same, "%s: C tokenizer ids differ from tokref.py", name);
    /* NUL-terminated form (lens == NULL) */
    st = bert_embed_texts(b, tv, NULL, nt, tout);
    CHECK(st == PROTO_OK && max_err(tout, json_object_get(m, "expect_texts"), nt, dim) <= TOL);
    /* one text on the calling thread: the same vectors (the pool's tiling
     * may only change float rounding) */
    double eh = 0;
    for (size_t i = 0; i < nt; i++) {
      st = bert_embed_text_here(b, tv[i], tl[i], one);
      CHECKF(st == PROTO_OK, "%s: embed here: %s", name, bert_last_error());
      for (size_t k = 0; k < dim; k++) {
        double d = fabs((double)one[k] - tout[i * dim + k]);
        if (!(d <= eh)) eh = d;
      }
    }
    CHECKF(eh <= 1e-5, "%s: calling thread vs pool %.3g", name, eh);
    free(tout);
    free(tv);
    free(tl);
  }
  bert_close(b);

  /* without normalisation: the pooled vectors themselves (one thread) */
  if (json_integer_value(json_object_get(json_object_get(m, "config"), "num_hidden_layers")) > 2) {
    free(out);
    free(one);
    free_ids(ids, lens, n);
    return;
  }
  bert_options opt = {.pooling = BERT_POOL_AUTO, .threads = 1, .no_normalize = 1};
  st = bert_open(dir, &opt, &b);
  CHECKF(st == PROTO_OK, "%s", bert_last_error());
  if (st == PROTO_OK) {
    st = bert_embed_ids(b, (const int32_t *const *)ids, lens, n, out);
    double er = max_err(out, json_object_get(m, "expect_ids_raw"), n, dim);
    CHECKF(st == PROTO_OK && er <= TOL, "%s: raw (1 thread) max abs error %.3g", name, er);
    bert_close(b);
  }
  free(out);
  free(one);
  free_ids(ids, lens, n);
}

static json_t *g_tiny_cases;
static char g_tiny_dir[4096];

TEST(tiny_recorded) {
  json_error_t jerr;
  g_tiny_cases = json_load_file(g_tiny, 0, &jerr);
  CHECKF(g_tiny_cases != NULL, "%s: %s", g_tiny, jerr.text);
  if (!g_tiny_cases) return;
  json_t *models = json_object_get(g_tiny_cases, "models");
  snprintf(g_tiny_dir, sizeof g_tiny_dir, "%s/tiny", g_work);
  mkdir(g_tiny_dir, 0755);
  CHECK(json_array_size(models) >= 2);
  for (size_t i = 0; i < json_array_size(models); i++) {
    json_t *m = json_array_get(models, i);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s", g_tiny_dir, json_string_value(json_object_get(m, "dir")));
    CHECK(build_model(m, dir));
    check_model(m, g_tiny_dir, 0);
  }
}

TEST(pytorch_parity) {
  if (run_cmd("'%s' -c 'import torch, numpy' >/dev/null 2>&1", g_python) != 0) {
    printf(
        "# PyTorch is not available to %s: parity checked only against the recorded "
        "outputs in %s (tiny model)\n",
        g_python, g_tiny);
    return;
  }
  char gen[4096], cases[4200];
  snprintf(gen, sizeof gen, "%s/gen", g_work);
  double t0 = proto_now();
  int rc = run_cmd("'%s' '%s' '%s' --set test --vocab-dir '%s' >&2", g_python, g_generator, gen,
                   g_shared);
  CHECKF(rc == 0, "generator exit status %d", rc);
  printf("# generator took %.1f s\n", proto_now() - t0);
  if (rc != 0) return;
  snprintf(cases, sizeof cases, "%s/cases.json", gen);
  json_error_t jerr;
  json_t *c = json_load_file(cases, 0, &jerr);
  CHECKF(c != NULL, "%s: %s", cases, jerr.text);
  if (!c) return;
  printf("# PyTorch %s\n", json_string_value(json_object_get(c, "torch")));
  json_t *models = json_object_get(c, "models");
  CHECK(json_array_size(models) >= 4);
  t0 = proto_now();
  for (size_t i = 0; i < json_array_size(models); i++)
    check_model(json_array_get(models, i), gen, i == 1);
  printf("# C checks took %.1f s\n", proto_now() - t0);
  json_decref(c);
}

/* ---- bad files ------------------------------------------------------------ */

static char g_bad[4096];

/* copies the tiny model into WORKDIR/bad/<name> and returns its path */
static const char *bad_copy(const char *name) {
  static char dir[4200];
  char from[4400], to[4400];
  snprintf(dir, sizeof dir, "%s/%s", g_bad, name);
  mkdir(dir, 0755);
  const char *files[] = {"config.json", "model.safetensors", "vocab.txt"};
  json_t *m = json_array_get(json_object_get(g_tiny_cases, "models"), 0);
  for (size_t i = 0; i < 3; i++) {
    snprintf(from, sizeof from, "%s/%s/%s", g_tiny_dir,
             json_string_value(json_object_get(m, "dir")), files[i]);
    snprintf(to, sizeof to, "%s/%s", dir, files[i]);
    copy_file(from, to);
  }
  return dir;
}

static int open_fails(const char *dir, proto_status *st) {
  bert *b = NULL;
  *st = bert_open(dir, NULL, &b);
  bert_close(b);
  return *st != PROTO_OK && b == NULL;
}

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* rewrites dir/model.safetensors from the tiny recipe with one change */
static int rewrite_weights(const char *dir, const char *drop, const char *reshape) {
  json_t *m = json_deep_copy(json_array_get(json_object_get(g_tiny_cases, "models"), 0));
  json_t *ts = json_object_get(m, "tensors");
  for (size_t i = 0; i < json_array_size(ts); i++) {
    json_t *t = json_array_get(ts, i);
    const char *nm = json_string_value(json_object_get(t, "name"));
    if (drop && strcmp(nm, drop) == 0) {
      json_array_remove(ts, i);
      break;
    }
    if (reshape && strcmp(nm, reshape) == 0) { /* (a, b) -> (b, a) */
      json_t *s = json_object_get(t, "shape");
      json_t *a = json_incref(json_array_get(s, 0));
      json_array_remove(s, 0);
      json_array_append_new(s, a);
    }
  }
  int ok = build_model(m, dir);
  json_decref(m);
  return ok;
}

/* Writes a NaN over element i of tensor name (F32 or F16) in the
 * safetensors file path, as damaged bytes or a diverged training run would. */
static int poison_tensor(const char *path, const char *name, long i) {
  FILE *f = fopen(path, "r+b");
  unsigned char le[8];
  if (!f || fread(le, 1, 8, f) != 8) {
    if (f) fclose(f);
    return 0;
  }
  uint64_t hl = 0;
  for (int b = 0; b < 8; b++) hl |= (uint64_t)le[b] << (8 * b);
  char *text = malloc(hl + 1);
  int ok = text && fread(text, 1, hl, f) == hl;
  json_t *h = NULL, *t = NULL;
  if (ok) {
    text[hl] = 0;
    h = json_loads(text, 0, NULL);
    t = json_object_get(h, name);
    ok = t != NULL;
  }
  if (ok) {
    int f16 = strcmp(json_string_value(json_object_get(t, "dtype")), "F16") == 0;
    long off = (long)json_integer_value(json_array_get(json_object_get(t, "data_offsets"), 0));
    static const unsigned char nan32[4] = {0, 0, 0xc0, 0x7f}, nan16[2] = {0x00, 0x7e};
    size_t w = f16 ? 2 : 4;
    ok = fseek(f, 8 + (long)hl + off + i * (long)w, SEEK_SET) == 0 &&
         fwrite(f16 ? nan16 : nan32, 1, w, f) == w;
  }
  json_decref(h);
  free(text);
  return fclose(f) == 0 && ok;
}

TEST(bad_files) {
  if (!g_tiny_cases) {
    CHECK(!"tiny model missing");
    return;
  }
  snprintf(g_bad, sizeof g_bad, "%s/bad", g_work);
  mkdir(g_bad, 0755);
  proto_status st;
  char path[4400];

  /* missing directory */
  CHECK(open_fails("/nonexistent/model-dir", &st) && st == PROTO_ENOTFOUND);
  CHECKF(has(bert_last_error(), "config.json"), "%s", bert_last_error());

  /* truncated weights: cut in the middle of the data */
  const char *d = bad_copy("truncated");
  snprintf(path, sizeof path, "%s/model.safetensors", d);
  struct stat sb;
  stat(path, &sb);
  CHECK(truncate(path, sb.st_size / 2) == 0);
  CHECK(open_fails(d, &st) && st == PROTO_ECORRUPT);
  CHECKF(has(bert_last_error(), "model.safetensors") && has(bert_last_error(), "tensor '"), "%s",
         bert_last_error());
  printf("# truncated: %s\n", bert_last_error());

  /* truncated inside the header, and a file shorter than 8 bytes */
  CHECK(truncate(path, 100) == 0);
  CHECK(open_fails(d, &st) && st == PROTO_ECORRUPT && has(bert_last_error(), "model.safetensors"));
  printf("# header cut: %s\n", bert_last_error());
  CHECK(truncate(path, 5) == 0);
  CHECK(open_fails(d, &st) && st == PROTO_ECORRUPT && has(bert_last_error(), "truncated"));

  /* wrong shape */
  d = bad_copy("shape");
  CHECK(rewrite_weights(d, NULL, "encoder.layer.1.intermediate.dense.weight"));
  CHECK(open_fails(d, &st) && st == PROTO_EMODEL);
  CHECKF(has(bert_last_error(), "encoder.layer.1.intermediate.dense.weight") &&
             has(bert_last_error(), "shape"),
         "%s", bert_last_error());
  printf("# shape: %s\n", bert_last_error());

  /* missing tensor */
  d = bad_copy("missing");
  CHECK(rewrite_weights(d, "encoder.layer.0.attention.self.key.bias", NULL));
  CHECK(open_fails(d, &st) && st == PROTO_EMODEL);
  CHECKF(has(bert_last_error(), "encoder.layer.0.attention.self.key.bias") &&
             has(bert_last_error(), "missing"),
         "%s", bert_last_error());
  printf("# missing: %s\n", bert_last_error());

  /* a NaN among the weights: refused, naming the tensor and the element */
  d = bad_copy("nan");
  snprintf(path, sizeof path, "%s/model.safetensors", d);
  CHECK(poison_tensor(path, "encoder.layer.0.attention.self.key.bias", 3));
  CHECK(open_fails(d, &st) && st == PROTO_ECORRUPT);
  CHECKF(has(bert_last_error(), "encoder.layer.0.attention.self.key.bias") &&
             has(bert_last_error(), "element 3 is NaN"),
         "%s", bert_last_error());

  /* a layer_norm_eps that is not positive (every vector would be NaN) */
  d = bad_copy("eps");
  snprintf(path, sizeof path, "%s/config.json", d);
  json_t *cj = json_load_file(path, 0, NULL);
  json_object_set_new(cj, "layer_norm_eps", json_real(-1.0));
  CHECK(cj && json_dump_file(cj, path, 0) == 0);
  json_decref(cj);
  CHECK(open_fails(d, &st) && st == PROTO_EMODEL);
  CHECKF(has(bert_last_error(), "layer_norm_eps"), "%s", bert_last_error());

  /* bad JSON config, missing field, wrong type, unsupported model */
  static const struct {
    const char *text, *want;
    proto_status st;
  } cfgs[] = {
      {"{\"hidden_size\": 32, ", "config.json", PROTO_EJSON},
      {"[1, 2]", "config.json", PROTO_EJSON},
      {"{\"vocab_size\": 30522, \"num_hidden_layers\": 2}", "hidden_size", PROTO_EMISSING},
      {"{\"vocab_size\": \"many\"}", "vocab_size", PROTO_ETYPE},
      {"{\"model_type\": \"gpt2\"}", "gpt2", PROTO_EMODEL},
  };
  for (size_t i = 0; i < sizeof cfgs / sizeof *cfgs; i++) {
    d = bad_copy("config");
    snprintf(path, sizeof path, "%s/config.json", d);
    FILE *f = fopen(path, "w");
    fputs(cfgs[i].text, f);
    fclose(f);
    CHECKF(open_fails(d, &st) && st == cfgs[i].st && has(bert_last_error(), cfgs[i].want),
           "config %zu: %s (%s)", i, bert_last_error(), proto_status_name(st));
  }

  /* hand-made safetensors: overlaps, offsets, header length, dtype */
  float data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  st_file *sf = NULL;
  snprintf(path, sizeof path, "%s/overlap.safetensors", g_bad);
  wt ov[2] = {{"a", "F32", 1, {4}, data, 16, 0, 16}, {"b", "F32", 1, {4}, data + 4, 16, 8, 24}};
  CHECK(write_st(path, ov, 2));
  CHECK(st_open(path, &sf) == PROTO_ECORRUPT && sf == NULL);
  CHECKF(has(st_last_error(), "overlaps") && has(st_last_error(), "'b'"), "%s", st_last_error());
  wt sz[1] = {{"c", "F32", 2, {3, 2}, data, 16, -1, -1}}; /* 6 floats declared, 4 stored */
  CHECK(write_st(path, sz, 1));
  CHECK(st_open(path, &sf) == PROTO_ECORRUPT && has(st_last_error(), "'c'"));
  wt dt[1] = {{"d", "Q4", 1, {4}, data, 16, -1, -1}};
  CHECK(write_st(path, dt, 1));
  CHECK(st_open(path, &sf) == PROTO_ECORRUPT && has(st_last_error(), "dtype"));
  FILE *f = fopen(path, "wb");
  unsigned char big[16] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, '{', '}'};
  fwrite(big, 1, sizeof big, f);
  fclose(f);
  CHECK(st_open(path, &sf) == PROTO_ECORRUPT && has(st_last_error(), "header length"));
  f = fopen(path, "wb");
  unsigned char notjson[16] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '"', 'a', '"', ':', '[', '1', ' '};
  fwrite(notjson, 1, sizeof notjson, f);
  fclose(f);
  CHECK(st_open(path, &sf) == PROTO_ECORRUPT && has(st_last_error(), "JSON"));

  /* good file: F16, BF16, F32 conversions and metadata-free lookups */
  uint16_t f16[6] = {0x3c00, 0xc100, 0x7bff, 0x0001, 0x7c00, 0x0000}; /* 1 -2.5 65504 2^-24 inf 0 */
  uint16_t bf16[2] = {0x3f80, 0xc020};                                /* 1 -2.5 */
  wt good[3] = {{"h", "F16", 2, {2, 3}, f16, 12, -1, -1},
                {"bf", "BF16", 1, {2}, bf16, 4, -1, -1},
                {"f", "F32", 1, {8}, data, 32, -1, -1}};
  CHECK(write_st(path, good, 3));
  CHECKF(st_open(path, &sf) == PROTO_OK, "%s", st_last_error());
  if (sf) {
    const float *v = NULL, *v2 = NULL;
    int64_t sh[2] = {2, 3}, any[2] = {-1, 3}, wrong[2] = {3, 2};
    CHECK(st_count(sf) == 3);
    CHECK(st_get_f32(sf, "h", 2, sh, &v) == PROTO_OK && v[0] == 1.0f && v[1] == -2.5f &&
          v[2] == 65504.0f && v[3] == ldexpf(1.0f, -24) && isinf(v[4]) && v[5] == 0.0f);
    CHECK(st_get_f32(sf, "h", 2, any, &v2) == PROTO_OK && v2 == v); /* converted once */
    CHECK(st_get_f32(sf, "h", 2, wrong, &v) == PROTO_EDIM && has(st_last_error(), "'h'"));
    int64_t two = 2, eight = 8;
    CHECK(st_get_f32(sf, "bf", 1, &two, &v) == PROTO_OK && v[0] == 1.0f && v[1] == -2.5f);
    CHECK(st_get_f32(sf, "f", 1, &eight, &v) == PROTO_OK && v[7] == 8.0f);
    CHECK(st_get_f32(sf, "nope", 1, &two, &v) == PROTO_ENOTFOUND && has(st_last_error(), "'nope'"));
    st_close(sf);
  }
  st_close(NULL);
  bert_close(NULL);

  /* ids outside the vocabulary */
  bert *b = NULL;
  json_t *m = json_array_get(json_object_get(g_tiny_cases, "models"), 0);
  snprintf(path, sizeof path, "%s/%s", g_tiny_dir, json_string_value(json_object_get(m, "dir")));
  if (bert_open(path, NULL, &b) == PROTO_OK) {
    int32_t bad_ids[2] = {5, 999999};
    const int32_t *p = bad_ids;
    size_t n2 = 2;
    float out[64];
    CHECK(bert_embed_ids(b, &p, &n2, 1, out) == PROTO_EINVAL && has(bert_last_error(), "999999"));
    CHECK(bert_embed_ids(b, NULL, NULL, 0, NULL) == PROTO_OK);
    bert_close(b);
  }
}

/* ---- kernels and pool ------------------------------------------------------ */

static void pool_sq(void *arg, int i, int worker) {
  int *a = arg;
  (void)worker;
  a[i] = i * i;
}

/* Folds into *err the largest |got - want| over M x N results (got: row
 * stride ldo, filled with 777 over rows x ldo beforehand; want: packed) and
 * clears *untouched when got changed anything past them. */
static void compare_strided(const float *got, int ldo, int rows, const float *want, int M, int N,
                            double *err, int *untouched) {
  for (int i = 0; i < M; i++) {
    for (int j = 0; j < N; j++) *err = fmax(*err, fabs(got[i * ldo + j] - want[i * N + j]));
    for (int j = N; j < ldo; j++) *untouched &= got[i * ldo + j] == 777.0f;
  }
  for (int i = M * ldo; i < rows * ldo; i++) *untouched &= got[i] == 777.0f;
}

/* kn_attention_head for one query row against a double-precision reference:
 * 37 keys of which 30 valid, dh dims, rows strided by ld, causal and not.
 * Returns the largest error. */
static double attention_row_error(int dh, int ld) {
  enum { T = 37, VALID = 30, MAXD = 80 };
  static float q1[MAXD], k1[T * MAXD], v1[T * MAXD], o1[MAXD], s1[T];
  for (int i = 0; i < dh; i++) q1[i] = (float)((i * 13) % 17) * 0.05f - 0.4f;
  for (int i = 0; i < T * ld; i++) {
    k1[i] = (float)((i * 7) % 23) * 0.04f - 0.44f;
    v1[i] = (float)((i * 11) % 19) * 0.1f - 0.9f;
  }
  double worst = 0;
  for (int causal = 0; causal <= 1; causal++) {
    kn_attention_head(q1, dh, k1, ld, v1, ld, o1, dh, 1, T, VALID, dh, 0.125f, causal, s1);
    double sc[VALID], mx = -1e300, sum = 0;
    for (int j = 0; j < VALID; j++) {
      double dot = 0;
      for (int d = 0; d < dh; d++) dot += (double)q1[d] * k1[j * ld + d];
      sc[j] = 0.125 * dot;
      mx = sc[j] > mx ? sc[j] : mx;
    }
    for (int j = 0; j < VALID; j++) sum += (sc[j] = exp(sc[j] - mx));
    for (int d = 0; d < dh; d++) {
      double ref = 0;
      for (int j = 0; j < VALID; j++) ref += sc[j] / sum * v1[j * ld + d];
      worst = fmax(worst, fabs(o1[d] - ref));
    }
  }
  return worst;
}

TEST(kernels_pool) {
  pool *p = NULL;
  CHECK(pool_new(3, &p) == PROTO_OK && pool_size(p) == 3);
  int a[1000] = {0}, ok = 1;
  for (int rep = 0; rep < 50; rep++) {
    memset(a, 0, sizeof a);
    pool_for(p, 1000, pool_sq, a);
    for (int i = 0; i < 1000; i++) ok &= a[i] == i * i;
  }
  CHECK(ok);
  pool_free(p);
  pool_free(NULL);

  /* gelu, softmax, layernorm against libm / double references */
  float x[37], y[37];
  double e = 0;
  for (int i = 0; i < 37; i++) x[i] = y[i] = -9.0f + 0.5f * (float)i;
  kn_gelu(y, 37);
  for (int i = 0; i < 37; i++) {
    double r = 0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0)));
    e = fmax(e, fabs(r - y[i]));
  }
  CHECKF(e < 1e-6, "gelu error %.3g", e);
  float s[3][5] = {{1, 2, 3, 4, 5}, {-100, 0, 100, 0, 0}, {7, 7, 7, 7, 7}};
  int nv[3] = {5, 3, 2};
  kn_softmax_rows(&s[0][0], 5, 3, 5, nv);
  double z = exp(1) + exp(2) + exp(3) + exp(4) + exp(5);
  CHECK(fabs(s[0][4] - exp(5) / z) < 1e-6 && fabs(s[1][2] - 1.0) < 1e-6 && s[1][3] == 0.0f &&
        fabs(s[2][0] - 0.5) < 1e-6 && s[2][2] == 0.0f);
  float ln[16], g[16], bb[16];
  for (int i = 0; i < 16; i++) {
    ln[i] = (float)(i * i) * 0.1f;
    g[i] = 1.0f;
    bb[i] = 0.0f;
  }
  kn_layernorm(ln, ln, g, bb, 1, 16, 1e-12f);
  double mean = 0, var = 0;
  for (int i = 0; i < 16; i++) mean += ln[i] / 16.0;
  for (int i = 0; i < 16; i++) var += (ln[i] - mean) * (ln[i] - mean) / 16.0;
  CHECK(fabs(mean) < 1e-6 && fabs(var - 1.0) < 1e-5);
  /* linear: (2, 3) @ (2, 3)^T + b */
  float xi[6] = {1, 2, 3, 4, 5, 6}, W[6] = {1, 0, 0, 0, 1, 1}, bi[2] = {10, 20}, o[4];
  kn_linear(xi, 3, W, bi, o, 2, 2, 2, 3);
  CHECK(o[0] == 11 && o[1] == 25 && o[2] == 14 && o[3] == 31);
  kn_linear(xi, 3, W, NULL, o, 2, 1, 2, 3);
  CHECK(o[0] == 1 && o[1] == 5);
  /* the few-rows kernel (M <= 16) against sgemm: every M (tiles of 3, 2
   * and 1 rows), N and K with and without remainders, strided output that
   * must stay untouched past N */
  {
    enum { MMAX = 16, NMAX = 70, KMAX = 64, LDO = 72 };
    static float X[MMAX * KMAX], WW[NMAX * KMAX], B[NMAX], O1[MMAX * LDO], O2[MMAX * NMAX];
    static const int Ns[] = {37, 70, 1}, Ks[] = {45, 64, 3};
    double el = 0;
    int untouched = 1;
    for (int i = 0; i < MMAX * KMAX; i++) X[i] = (float)((i * 37) % 23) * 0.1f - 1.0f;
    for (int i = 0; i < NMAX * KMAX; i++) WW[i] = (float)((i * 11) % 19) * 0.05f - 0.4f;
    for (int i = 0; i < NMAX; i++) B[i] = (float)i * 0.01f;
    for (int M = 1; M <= MMAX; M++)
      for (int c = 0; c < 3; c++) {
        int N = Ns[c], K = Ks[c];
        for (int i = 0; i < MMAX * LDO; i++) O1[i] = 777.0f;
        kn_linear(X, K, WW, c == 1 ? NULL : B, O1, LDO, M, N, K);
        for (int i = 0; i < M; i++)
          for (int j = 0; j < N; j++) O2[i * N + j] = c == 1 ? 0.0f : B[j];
        kn_sgemm(0, 1, M, N, K, 1.0f, X, K, WW, K, 1.0f, O2, N);
        compare_strided(O1, LDO, MMAX, O2, M, N, &el, &untouched);
      }
    CHECKF(el < 1e-4, "small linear vs sgemm %.3g", el);
    CHECK(untouched);
    /* the F16-weight few-row linear (encoder, short inputs) against the same
     * weights in F32: every weight here is exact in half precision */
    if (kn_f16_supported()) {
      static uint16_t WH[NMAX * KMAX];
      for (int i = 0; i < NMAX * KMAX; i++) {
        int v = (i * 11) % 19 - 8; /* WW[i] = v / 16 in (-0.5, 0.625) */
        WW[i] = (float)v / 16.0f;
        /* half bits of v / 16: sign, exponent (bias 15), 10-bit mantissa */
        int a = v < 0 ? -v : v, e = 0;
        while (a >= 2 << e) e++;
        WH[i] = a == 0 ? 0
                       : (uint16_t)((v < 0 ? 0x8000 : 0) | ((e - 4 + 15) << 10) |
                                    (((a << 10) >> e) & 0x3ff));
      }
      /* at every width this CPU has (AVX-512 where it can, and AVX2), over
       * the rows and over the panels of kn_f16_pack */
      int widths[2] = {kn_f16_width(), 256}, nwidths = widths[0] == 256 ? 1 : 2;
      for (int wi = 0; wi < nwidths; wi++) {
        CHECK(kn_f16_set_width(widths[wi]) == widths[wi]);
        uint16_t *panels[3];
        for (int c = 0; c < 3; c++) {
          panels[c] = kn_f16_pack(WH, Ns[c], Ks[c]);
          CHECK(panels[c] != NULL);
        }
        for (int packed = 0; packed < 2; packed++) {
          const uint16_t *const *P = packed ? (const uint16_t *const *)panels : NULL;
          double eh = 0;
          for (int M = 1; M <= MMAX; M++)
            for (int c = 0; c < 3; c++) {
              int N = Ns[c], K = Ks[c];
              for (int i = 0; i < MMAX * LDO; i++) O1[i] = 777.0f;
              kn_linear_f16(X, K, WH, P ? P[c] : NULL, c == 1 ? NULL : B, O1, LDO, M, N, K);
              kn_linear(X, K, WW, c == 1 ? NULL : B, O2, N, M, N, K);
              compare_strided(O1, LDO, MMAX, O2, M, N, &eh, &untouched);
            }
          CHECKF(eh < 1e-5, "F16 few-row linear vs F32 at %d bits%s: %.3g", widths[wi],
                 packed ? " over panels" : "", eh);
          CHECK(untouched);
          /* a row's result does not depend on the tile it falls in (tiles of
           * 3 or 4 rows, then single rows; over panels, tiles of up to 6 at
           * AVX2 or 8 at AVX-512, and one row alone through the row tiles): each row alone (over
           * panels, each pair of rows) equals it within all MMAX; and
           * columns from 16 on, through W + 16 K and P + 16 K, equal the
           * same columns of the whole product (the pool's column blocks) */
          int alike = 1, cols_alike = 1, step = packed ? 2 : 1;
          for (int c = 0; c < 3; c++) {
            int N = Ns[c], K = Ks[c];
            kn_linear_f16(X, K, WH, P ? P[c] : NULL, B, O1, LDO, MMAX, N, K);
            for (int r = 0; r < MMAX; r += step) {
              kn_linear_f16(X + r * K, K, WH, P ? P[c] : NULL, B, O2, N, step, N, K);
              for (int q = 0; q < step; q++)
                alike &= memcmp(O1 + (r + q) * LDO, O2 + q * N, (size_t)N * sizeof *O2) == 0;
            }
            if (N <= 16) continue;
            kn_linear_f16(X, K, WH + 16 * K, P ? P[c] + 16 * K : NULL, B + 16, O2, N - 16, MMAX,
                          N - 16, K);
            for (int r = 0; r < MMAX; r++)
              cols_alike &=
                  memcmp(O1 + r * LDO + 16, O2 + r * (N - 16), (size_t)(N - 16) * sizeof *O2) == 0;
          }
          CHECK(alike);
          CHECK(cols_alike);
        }
        for (int c = 0; c < 3; c++) free(panels[c]);
        /* the one-token product: each row of W against x, plus the bias,
         * then accumulated onto y */
        double eg = 0;
        for (int c = 0; c < 3; c++) {
          int N = Ns[c], K = Ks[c];
          kn_gemv_f16(WH, X, B, O1, N, K, 0);
          kn_gemv_f16(WH, X, B, O1, N, K, 1);
          kn_linear(X, K, WW, B, O2, N, 1, N, K);
          for (int j = 0; j < N; j++) eg = fmax(eg, fabs(O1[j] - 2 * O2[j]));
        }
        CHECKF(eg < 1e-5, "F16 gemv vs F32 at %d bits: %.3g", widths[wi], eg);
        /* the choice: up to kn_f16_panel_rows() rows over the panels, then
         * the F32 kernel, each bit for bit as when called itself; at AVX2
         * up to KN_F16_PANEL_ROWS. The F32 weights here are twice the F16
         * ones, so that the result tells the path (the two can sum alike) */
        enum { RM = KN_F16_PANEL_ROWS + 1, RN = 37, RK = 45 };
        static float RX[RM * RK], RW[RN * RK], R1[RM * RN], R2[RM * RN];
        for (int i = 0; i < RM * RK; i++) RX[i] = (float)((i * 7) % 23) * 0.05f - 0.5f;
        for (int i = 0; i < RN * RK; i++) RW[i] = 2.0f * WW[i];
        uint16_t *RP = kn_f16_pack(WH, RN, RK);
        int pr = kn_f16_panel_rows(), routed = 1;
        CHECK(RP != NULL);
        CHECK(pr == KN_F16_PANEL_ROWS || (widths[wi] == 512 && pr == KN_F16_FEW_ROWS));
        for (int M = pr; RP && M <= pr + 1; M++) {
          kn_linear_prefer_f16(RX, RK, RW, WH, RP, B, R1, RN, M, RN, RK);
          if (M <= pr) kn_linear_f16(RX, RK, WH, RP, B, R2, RN, M, RN, RK);
          else kn_linear(RX, RK, RW, B, R2, RN, M, RN, RK);
          routed &= memcmp(R1, R2, (size_t)M * RN * sizeof *R1) == 0;
        }
        CHECKF(routed, "F16 rows over panels up to %d at %d bits", pr, widths[wi]);
        free(RP);
      }
      kn_f16_set_width(0);
    }
  }
  /* kn_sgemm (oneDNN's above ~2^18 multiply-adds when built with it, else
   * OpenBLAS's) against a double-precision product: both transposes,
   * alpha and beta, leading dimensions wider than the matrices, sizes on
   * both sides of the oneDNN threshold, on one thread and on two */
  {
    enum { M = 97, N = 70, K = 80, LD = 101 };
    static float A[LD * LD], Bm[LD * LD], C[M * LD], C0[M * LD];
    for (int i = 0; i < LD * LD; i++) {
      A[i] = (float)((i * 29) % 31) * 0.03f - 0.45f;
      Bm[i] = (float)((i * 17) % 13) * 0.07f - 0.4f;
    }
    for (int i = 0; i < M * LD; i++) C0[i] = (float)(i % 7) * 0.5f;
    static const int sizes[][3] = {{M, N, K}, {5, 6, 7}};
    double worst = 0;
    for (int threads = 1; threads <= 2; threads++) {
      kn_set_blas_threads(threads);
      for (int sz = 0; sz < 2; sz++)
        for (int ta = 0; ta < 2; ta++)
          for (int tb = 0; tb < 2; tb++) {
            int m = sizes[sz][0], n = sizes[sz][1], k = sizes[sz][2];
            memcpy(C, C0, sizeof C);
            kn_sgemm(ta, tb, m, n, k, 0.75f, A, LD, Bm, LD, 0.5f, C, LD);
            for (int i = 0; i < m; i++)
              for (int j = 0; j < n; j++) {
                double ref = 0.5 * C0[i * LD + j];
                for (int l = 0; l < k; l++)
                  ref += 0.75 * (ta ? A[l * LD + i] : A[i * LD + l]) *
                         (tb ? Bm[j * LD + l] : Bm[l * LD + j]);
                double e = fabs(C[i * LD + j] - ref);
                worst = e > worst ? e : worst;
              }
            for (int i = 0; i < m; i++) /* past n in each row: untouched */
              for (int j = n; j < LD; j++) worst = C[i * LD + j] != C0[i * LD + j] ? 1 : worst;
          }
    }
    kn_set_blas_threads(1);
    CHECKF(worst < 1e-4, "sgemm vs double reference %.3g", worst);
  }
  /* causal attention: the first query sees only the first key */
  float q[2 * 2] = {1, 0, 0, 1}, kk[2 * 2] = {1, 0, 0, 1}, v[2 * 2] = {1, 2, 3, 4}, ao[4], sc[4];
  kn_attention_head(q, 2, kk, 2, v, 2, ao, 2, 2, 2, 2, 2, 1.0f, 1, sc);
  CHECK(ao[0] == 1 && ao[1] == 2 && ao[2] > 1 && ao[2] < 3);
  /* one query row (the decoder's one-token path, which skips sgemm) against
   * a double-precision reference: 37 keys of which 30 valid, 70 dims (past
   * the lanes), rows strided, causal and not */
  /* dims past the lanes (70), and a multiple of 8 (64: keys eight at a time) */
  double worst70 = attention_row_error(70, 75), worst64 = attention_row_error(64, 72);
  CHECKF(worst70 < 1e-5 && worst64 < 1e-5, "one-row attention vs double reference %.3g, %.3g",
         worst70, worst64);
  float nv2[3] = {3, 0, 4};
  kn_l2_normalize(nv2, 3);
  CHECK(fabsf(nv2[0] - 0.6f) < 1e-7f && fabsf(nv2[2] - 0.8f) < 1e-7f);
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s PYTHON GENERATOR SHARED_DATA WORKDIR TINY_EXPECTED\n", argv[0]);
    return 2;
  }
  g_python = argv[1];
  g_generator = argv[2];
  g_shared = argv[3];
  g_work = argv[4];
  g_tiny = argv[5];
  mkdir(g_work, 0755);
  RUN(kernels_pool);
  char probe[4200];
  snprintf(probe, sizeof probe, "%s/bert-base-uncased/vocab.txt", g_shared);
  if (access(probe, R_OK) != 0) { /* the recorded outputs tokenize real texts */
    SKIP("tiny_recorded, bad_files, pytorch_parity: the real vocabularies are not at %s", g_shared);
    return tap_done();
  }
  RUN(tiny_recorded);
  RUN(bad_files);
  RUN(pytorch_parity);
  json_decref(g_tiny_cases);
  return tap_done();
}
