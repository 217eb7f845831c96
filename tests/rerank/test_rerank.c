/* test_rerank.c - the C reranker (model/rerank.c) against PyTorch on the
 * same weights (model/train/rerank_ref.py: random-weight rerankers in the
 * RoBERTa and the BERT layout, and the committed default one), and
 * directories it must refuse with a message.
 * argv: python, rerank_ref.py, work dir, tokenizer dir, default reranker dir. */
#include "rerank.h"
#include "run_cmd.h"
#include "tap.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *g_python, *g_ref, *g_work, *g_tokenizer, *g_default;

/* Every case of one model of cases.json: the C scores against PyTorch's. */
static void check_model(json_t *m) {
  const char *dir = json_string_value(json_object_get(m, "dir"));
  reranker *r = NULL;
  proto_status st = rerank_open(dir, 2, &r);
  CHECKF(st == PROTO_OK, "%s: %s", dir, rerank_last_error());
  if (st != PROTO_OK) return;
  double worst = 0;
  json_t *cases = json_object_get(m, "cases"), *c;
  size_t i;
  json_array_foreach(cases, i, c) {
    json_t *ps = json_object_get(c, "passages"), *ex = json_object_get(c, "expect");
    size_t n = json_array_size(ps);
    const char *texts[8];
    size_t lens[8];
    float got[8];
    CHECK(n <= 8 && n == json_array_size(ex));
    for (size_t j = 0; j < n && j < 8; j++) {
      texts[j] = json_string_value(json_array_get(ps, j));
      lens[j] = json_string_length(json_array_get(ps, j));
    }
    const char *q = json_string_value(json_object_get(c, "query"));
    st = rerank_score(r, q, strlen(q), texts, lens, n, got);
    CHECKF(st == PROTO_OK, "case %zu: %s", i, rerank_last_error());
    for (size_t j = 0; st == PROTO_OK && j < n; j++) {
      double d = fabs(got[j] - json_real_value(json_array_get(ex, j)));
      if (d > worst) worst = d;
    }
  }
  printf("# %s (%s): max abs error %.2e\n", dir, rerank_name(r), worst);
  CHECKF(worst <= 1e-4, "%s: max abs error %.3g > 1e-4", dir, worst);
  /* one passage alone scores as it does in a batch (packing, no padding) */
  c = json_array_get(cases, 0);
  const char *q = json_string_value(json_object_get(c, "query"));
  const char *p = json_string_value(json_array_get(json_object_get(c, "passages"), 1));
  float one;
  CHECK(rerank_score(r, q, strlen(q), &p, NULL, 1, &one) == PROTO_OK);
  CHECK(fabs(one - json_real_value(json_array_get(json_object_get(c, "expect"), 1))) <= 1e-4);
  rerank_close(r);
}

TEST(pytorch_parity) {
  char gen[4096], cases[4200], extra[4200] = "";
  snprintf(gen, sizeof gen, "%s/gen", g_work);
  if (access(g_default, R_OK) == 0) snprintf(extra, sizeof extra, "--model '%s'", g_default);
  int rc =
      run_cmd("'%s' '%s' '%s' --tokenizer '%s' %s >&2", g_python, g_ref, gen, g_tokenizer, extra);
  CHECKF(rc == 0, "rerank_ref.py exit status %d", rc);
  if (rc != 0) return;
  snprintf(cases, sizeof cases, "%s/cases.json", gen);
  json_error_t je;
  json_t *all = json_load_file(cases, 0, &je);
  CHECKF(all != NULL, "%s: %s", cases, je.text);
  if (!all) return;
  json_t *models = json_object_get(all, "models"), *m;
  CHECKF(json_array_size(models) == (*extra ? 3u : 2u), "%zu models", json_array_size(models));
  size_t i;
  json_array_foreach(models, i, m) check_model(m);
  json_decref(all);
}

/* A copy of the random reranker with config.json or the weights changed by
 * a one-line Python edit; rerank_open must refuse it, saying want. */
static void refuse(const char *name, const char *edit, const char *want) {
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/bad-%s", g_work, name);
  int rc = run_cmd("rm -rf '%s' && cp -r '%s/gen/random' '%s' && cd '%s' && '%s' -c \"%s\"", dir,
                   g_work, dir, dir, g_python, edit);
  CHECKF(rc == 0, "%s: setting up: exit status %d", name, rc);
  reranker *r = NULL;
  proto_status st = rerank_open(dir, 1, &r);
  CHECKF(st != PROTO_OK && r == NULL, "%s: opened", name);
  CHECKF(strstr(rerank_last_error(), want) != NULL, "%s: message '%s' lacks '%s'", name,
         rerank_last_error(), want);
  rerank_close(r);
}

#define EDIT_CONFIG(expr)                                  \
  "import json; c = json.load(open('config.json')); " expr \
  "; "                                                     \
  "json.dump(c, open('config.json', 'w'))"
#define DROP_TENSOR(name)                             \
  "import sys; sys.path.insert(0, '" RERANK_TRAIN_DIR \
  "'); import st; "                                   \
  "d = st.load('model.safetensors'); d.pop('" name "'); st.save(d, 'model.safetensors')"

TEST(refused) {
  refuse("gpt2", EDIT_CONFIG("c['model_type'] = 'gpt2'"), "BERT or RoBERTa");
  refuse("layout", EDIT_CONFIG("c['model_type'] = 'bert'"), "bert.pooler.dense.weight");
  refuse("labels", EDIT_CONFIG("c['id2label'] = {'0': 'a', '1': 'b'}"), "one label");
  refuse("head", DROP_TENSOR("classifier.out_proj.weight"), "classifier.out_proj.weight");
  refuse("encoder", DROP_TENSOR("roberta.encoder.layer.1.output.dense.weight"),
         "encoder.layer.1.output.dense.weight");
  reranker *r = NULL;
  CHECK(rerank_open("/nonexistent/reranker", 1, &r) != PROTO_OK && r == NULL);
  CHECK(strstr(rerank_last_error(), "/nonexistent/reranker") != NULL);
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s PYTHON RERANK_REF WORK TOKENIZER DEFAULT_RERANKER\n", argv[0]);
    return 2;
  }
  g_python = argv[1];
  g_ref = argv[2];
  g_work = argv[3];
  g_tokenizer = argv[4];
  g_default = argv[5];
  mkdir(g_work, 0755);
  if (run_cmd("'%s' -c 'import torch, numpy' >/dev/null 2>&1", g_python) != 0) {
    SKIP("pytorch_parity, refused: PyTorch is not available to %s", g_python);
    return tap_done();
  }
  RUN(pytorch_parity);
  RUN(refused);
  return tap_done();
}
