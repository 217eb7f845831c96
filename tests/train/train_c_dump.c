/* train_c_dump.c - a helper of the 'train' test suite: runs the C runtime
 * (tokenizer, BERT encoder, RETRO decoder) on inputs written by
 * tests/train/test_train.py and writes the results as raw little-endian
 * arrays for the Python side to compare with PyTorch. It checks nothing
 * itself; it exits non-zero (with a message) when the runtime fails.
 *
 *   train_c_dump tok   MODEL_DIR TEXT_FILE OUT   -> int32 ids
 *   train_c_dump bert  MODEL_DIR IN OUT          -> float32 (n x dim) embeddings
 *       IN: int32 n, then n times {int32 len, len int32 ids} (no special tokens)
 *   train_c_dump retro MODEL_DIR IN OUT          -> float32 (n x vocab) logits
 *       IN: int32 n, n tokens, int32 chunks, k, r, pad, chunks*k*r neighbour ids
 *   train_c_dump rerank MODEL_DIR IN OUT         -> float32 (n) reranker scores
 *       IN: the query, then n passages, one a line (at most 63)
 */
#include "bert.h"
#include "proto.h"
#include "rerank.h"
#include "retro.h"
#include "tok.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int32_t *read_all(const char *path, size_t *n_bytes) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  while (buf) {
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (len < cap) break;
    char *nb = realloc(buf, cap * 2);
    if (!nb) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = nb;
    cap *= 2;
  }
  fclose(f);
  *n_bytes = len;
  return (int32_t *)buf;
}

static int write_all(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = fwrite(data, 1, n, f);
  int rc = fclose(f);
  return (w == n && rc == 0) ? 0 : -1;
}

static int run_tok(const char *dir, const char *in, const char *out) {
  int ret = 1;
  tok *t = NULL;
  int32_t *ids = NULL;
  size_t nb = 0, n = 0;
  char *text = (char *)read_all(in, &nb);
  if (!text) {
    fprintf(stderr, "cannot read %s\n", in);
    goto done;
  }
  if (tok_open_dir(dir, &t) != PROTO_OK) {
    fprintf(stderr, "tok_open_dir: %s\n", tok_last_error());
    goto done;
  }
  if (tok_encode(t, text, nb, &ids, &n) != PROTO_OK) {
    fprintf(stderr, "tok_encode failed\n");
    goto done;
  }
  if (write_all(out, ids, n * sizeof(int32_t)) != 0) {
    fprintf(stderr, "cannot write %s\n", out);
    goto done;
  }
  ret = 0;
done:
  free(ids);
  free(text);
  tok_close(t);
  return ret;
}

static int run_bert(const char *dir, const char *in, const char *out) {
  int ret = 1;
  bert *b = NULL;
  size_t nb = 0;
  int32_t *buf = read_all(in, &nb);
  const int32_t **ids = NULL;
  size_t *lens = NULL;
  float *vec = NULL;
  if (!buf || nb < 4) {
    fprintf(stderr, "cannot read %s\n", in);
    goto done;
  }
  size_t n = (size_t)buf[0], pos = 1, words = nb / 4;
  ids = calloc(n ? n : 1, sizeof(*ids));
  lens = calloc(n ? n : 1, sizeof(*lens));
  if (!ids || !lens) goto done;
  for (size_t i = 0; i < n; i++) {
    if (pos >= words) {
      fprintf(stderr, "truncated input\n");
      goto done;
    }
    lens[i] = (size_t)buf[pos++];
    if (pos + lens[i] > words) {
      fprintf(stderr, "truncated input\n");
      goto done;
    }
    ids[i] = buf + pos;
    pos += lens[i];
  }
  bert_options opt = {BERT_POOL_AUTO, 1, 0};
  if (bert_open(dir, &opt, &b) != PROTO_OK) {
    fprintf(stderr, "bert_open: %s\n", bert_last_error());
    goto done;
  }
  uint32_t dim = bert_dim(b);
  vec = malloc((n ? n : 1) * dim * sizeof(float)); /* (n, dim) */
  if (!vec) goto done;
  if (bert_embed_ids(b, ids, lens, n, vec) != PROTO_OK) {
    fprintf(stderr, "bert_embed_ids: %s\n", bert_last_error());
    goto done;
  }
  if (write_all(out, vec, n * dim * sizeof(float)) != 0) goto done;
  ret = 0;
done:
  free(vec);
  free(lens);
  free(ids);
  free(buf);
  bert_close(b);
  return ret;
}

static int run_retro(const char *dir, const char *in, const char *out) {
  int ret = 1;
  retro *r = NULL;
  retro_state *s = NULL;
  size_t nb = 0;
  int32_t *buf = read_all(in, &nb);
  float *logits = NULL;
  if (!buf || nb < 4) {
    fprintf(stderr, "cannot read %s\n", in);
    goto done;
  }
  size_t words = nb / 4;
  int n = buf[0];
  if (n <= 0 || (size_t)n + 5 > words) {
    fprintf(stderr, "bad input\n");
    goto done;
  }
  const int32_t *tokens = buf + 1;
  int chunks = buf[1 + n], k = buf[2 + n], rl = buf[3 + n];
  int32_t pad = buf[4 + n];
  const int32_t *nbt = buf + 5 + n; /* (chunks, k, rl) */
  if (chunks < 0 || k < 0 || rl <= 0 || (size_t)(5 + n) + (size_t)chunks * k * rl > words) {
    fprintf(stderr, "bad neighbour block\n");
    goto done;
  }
  if (retro_open(dir, 1, &r) != PROTO_OK) {
    fprintf(stderr, "retro_open: %s\n", retro_last_error());
    goto done;
  }
  const retro_config *cfg = retro_get_config(r);
  if (rl != cfg->neighbour_len) {
    fprintf(stderr, "neighbour length %d != %d\n", rl, cfg->neighbour_len);
    goto done;
  }
  if (retro_state_new(r, n, &s) != PROTO_OK) {
    fprintf(stderr, "retro_state_new: %s\n", retro_last_error());
    goto done;
  }
  for (int c = 0; c < chunks; c++) {
    if (retro_set_neighbours(s, c, nbt + (size_t)c * k * rl, k, pad) != PROTO_OK) {
      fprintf(stderr, "retro_set_neighbours: %s\n", retro_last_error());
      goto done;
    }
  }
  logits = malloc((size_t)n * cfg->vocab_size * sizeof(float)); /* (n, vocab) */
  if (!logits) goto done;
  if (retro_forward(s, tokens, n, 1, logits) != PROTO_OK) {
    fprintf(stderr, "retro_forward: %s\n", retro_last_error());
    goto done;
  }
  if (write_all(out, logits, (size_t)n * cfg->vocab_size * sizeof(float)) != 0) goto done;
  ret = 0;
done:
  free(logits);
  free(buf);
  retro_state_free(s);
  retro_close(r);
  return ret;
}

/* IN: the query, then one passage a line; OUT: float32 scores. */
static int run_rerank(const char *dir, const char *in, const char *out) {
  size_t nb = 0;
  char *text = (char *)read_all(in, &nb);
  const char *lines[64];
  size_t lens[64], n = 0;
  for (char *p = text, *end = text + nb; text && p < end && n < 64;) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    lines[n] = p;
    lens[n++] = (size_t)((nl ? nl : end) - p);
    p = nl ? nl + 1 : end;
  }
  reranker *r = NULL;
  float scores[64];
  int ret = 1;
  if (n < 2) fprintf(stderr, "%s: a query and passages expected\n", in);
  else if (rerank_open(dir, 1, &r) != PROTO_OK)
    fprintf(stderr, "rerank_open: %s\n", rerank_last_error());
  else if (rerank_score(r, lines[0], lens[0], lines + 1, lens + 1, n - 1, scores) != PROTO_OK)
    fprintf(stderr, "rerank_score: %s\n", rerank_last_error());
  else if (write_all(out, scores, (n - 1) * sizeof *scores) != 0)
    fprintf(stderr, "cannot write %s\n", out);
  else ret = 0;
  rerank_close(r);
  free(text);
  return ret;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s tok|bert|retro|rerank MODEL_DIR IN OUT\n", argv[0]);
    return 2;
  }
  if (strcmp(argv[1], "rerank") == 0) return run_rerank(argv[2], argv[3], argv[4]);
  if (strcmp(argv[1], "tok") == 0) return run_tok(argv[2], argv[3], argv[4]);
  if (strcmp(argv[1], "bert") == 0) return run_bert(argv[2], argv[3], argv[4]);
  if (strcmp(argv[1], "retro") == 0) return run_retro(argv[2], argv[3], argv[4]);
  fprintf(stderr, "unknown mode %s\n", argv[1]);
  return 2;
}
