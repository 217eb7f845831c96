/* test_sample.c - the sampler (model/sample.h): greedy = argmax, same seed ->
 * same tokens, top-k and top-p restrict the support to the right set, the
 * empirical distribution follows softmax(logits / T), log-probabilities, and
 * parameter checks. */
#include "kernels.h"
#include "sample.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void random_logits(float *x, int n, uint64_t seed) {
  sample_rng r;
  sample_rng_seed(&r, seed);
  for (int i = 0; i < n; i++) x[i] = (float)(sample_rng_uniform(&r) * 8.0 - 4.0);
}

static int argmax(const float *x, int n) {
  int a = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[a]) a = i;
  return a;
}

static sampler *make(int V, float T, int k, float p, uint64_t seed, int nlp) {
  sample_params sp = sample_params_default();
  sp.temperature = T;
  sp.top_k = k;
  sp.top_p = p;
  sp.seed = seed;
  sp.n_logprobs = nlp;
  sampler *s = NULL;
  return sample_new(V, &sp, &s) == PROTO_OK ? s : NULL;
}

TEST(rng) {
  sample_rng a, b;
  sample_rng_seed(&a, 42);
  sample_rng_seed(&b, 42);
  int same = 1, inrange = 1;
  double mean = 0;
  for (int i = 0; i < 10000; i++) {
    double x = sample_rng_uniform(&a);
    same &= x == sample_rng_uniform(&b);
    inrange &= x >= 0.0 && x < 1.0;
    mean += x;
  }
  CHECK(same && inrange);
  CHECK(fabs(mean / 10000 - 0.5) < 0.02);
  /* a fixed seed gives fixed numbers on every machine */
  sample_rng_seed(&a, 0);
  uint64_t first = sample_rng_next(&a);
  sample_rng_seed(&b, 0);
  CHECK(first == sample_rng_next(&b));
  sample_rng_seed(&b, 1);
  CHECK(first != sample_rng_next(&b));
}

TEST(greedy) {
  enum { V = 1000 };
  float lg[V];
  sampler *s = make(V, 0.0f, 0, 1.0f, 7, 0);
  CHECK(s != NULL);
  int ok = 1;
  for (int t = 0; t < 50; t++) {
    random_logits(lg, V, (uint64_t)t + 100);
    sample_result r;
    ok &= sample_next(s, lg, &r) == PROTO_OK && r.token == argmax(lg, V);
  }
  CHECK(ok);
  /* ties: the lowest id */
  for (int i = 0; i < V; i++) lg[i] = 0.0f;
  lg[17] = lg[300] = 2.0f;
  sample_result r;
  CHECK(sample_next(s, lg, &r) == PROTO_OK && r.token == 17);
  sample_free(s);
  /* top_k = 1 is greedy too, whatever the temperature */
  s = make(V, 1.5f, 1, 1.0f, 7, 0);
  random_logits(lg, V, 5);
  CHECK(sample_next(s, lg, &r) == PROTO_OK && r.token == argmax(lg, V));
  sample_free(s);
}

static void draw_seq(int V, float T, int k, float p, uint64_t seed, int n, int32_t *out) {
  float *lg = malloc((size_t)V * sizeof(float));
  sampler *s = make(V, T, k, p, seed, 0);
  for (int t = 0; t < n; t++) {
    random_logits(lg, V, 1000 + (uint64_t)t);
    sample_result r;
    out[t] = s && sample_next(s, lg, &r) == PROTO_OK ? r.token : -1;
  }
  sample_free(s);
  free(lg);
}

TEST(seed_determinism) {
  enum { V = 5000, N = 200 };
  static int32_t a[N], b[N], c[N];
  const float Ts[] = {1.0f, 0.7f, 1.0f};
  const int ks[] = {0, 40, 0};
  const float ps[] = {1.0f, 1.0f, 0.9f};
  for (int i = 0; i < 3; i++) {
    draw_seq(V, Ts[i], ks[i], ps[i], 1234, N, a);
    draw_seq(V, Ts[i], ks[i], ps[i], 1234, N, b);
    draw_seq(V, Ts[i], ks[i], ps[i], 1235, N, c);
    CHECKF(memcmp(a, b, sizeof a) == 0, "same seed, config %d", i);
    CHECKF(memcmp(a, c, sizeof a) != 0, "other seed differs, config %d", i);
  }
  /* reseed restarts the same sequence */
  float lg[64];
  random_logits(lg, 64, 3);
  sampler *s = make(64, 1.0f, 0, 1.0f, 99, 0);
  sample_result r;
  int32_t first[20], second[20];
  for (int i = 0; i < 20; i++) first[i] = sample_next(s, lg, &r) == PROTO_OK ? r.token : -1;
  sample_reseed(s, 99);
  for (int i = 0; i < 20; i++) second[i] = sample_next(s, lg, &r) == PROTO_OK ? r.token : -1;
  CHECK(memcmp(first, second, sizeof first) == 0);
  sample_free(s);
}

TEST(top_k) {
  enum { V = 2000, K = 5, N = 4000 };
  float lg[V];
  random_logits(lg, V, 11);
  /* the K best ids */
  int best[K];
  char taken[V] = {0};
  for (int j = 0; j < K; j++) {
    int a = -1;
    for (int i = 0; i < V; i++)
      if (!taken[i] && (a < 0 || lg[i] > lg[a])) a = i;
    taken[a] = 1;
    best[j] = a;
  }
  sampler *s = make(V, 2.0f, K, 1.0f, 5, 0);
  int inside = 1, seen[K] = {0};
  for (int t = 0; t < N; t++) {
    sample_result r;
    if (sample_next(s, lg, &r) != PROTO_OK) inside = 0;
    int hit = 0;
    for (int j = 0; j < K; j++)
      if (r.token == best[j]) {
        hit = 1;
        seen[j]++;
      }
    inside &= hit;
  }
  CHECK(inside);
  int all = 1;
  for (int j = 0; j < K; j++) all &= seen[j] > 0;
  CHECKF(all, "every top-k token is drawn sometimes");
  sample_free(s);
}

TEST(top_p_and_distribution) {
  /* probabilities 0.5, 0.25, 0.125, 0.0625, ... (logits = -i ln 2) */
  enum { V = 12, N = 20000 };
  float lg[V];
  for (int i = 0; i < V; i++) lg[i] = -(float)i * logf(2.0f);
  int cnt[V];
  sample_result r;
  /* top_p 0.7: 0.5 < 0.7 <= 0.75, so the nucleus is {0, 1} */
  sampler *s = make(V, 1.0f, 0, 0.7f, 8, 0);
  memset(cnt, 0, sizeof cnt);
  for (int t = 0; t < N; t++)
    if (sample_next(s, lg, &r) == PROTO_OK) cnt[r.token]++;
  CHECK(cnt[0] + cnt[1] == N);
  CHECKF(fabs(cnt[0] / (double)N - 2.0 / 3.0) < 0.02, "renormalised: %d/%d", cnt[0], N);
  sample_free(s);
  /* top_p 1, temperature 1: frequencies follow softmax */
  s = make(V, 1.0f, 0, 1.0f, 9, 0);
  memset(cnt, 0, sizeof cnt);
  for (int t = 0; t < N; t++)
    if (sample_next(s, lg, &r) == PROTO_OK) cnt[r.token]++;
  double z = 0;
  for (int i = 0; i < V; i++) z += pow(0.5, i);
  int close = 1;
  for (int i = 0; i < 4; i++) close &= fabs(cnt[i] / (double)N - pow(0.5, i) / z) < 0.015;
  CHECK(close);
  sample_free(s);
  /* temperature 0.5 squares the ratios: p1/p0 = 1/4 */
  s = make(V, 0.5f, 0, 1.0f, 10, 0);
  memset(cnt, 0, sizeof cnt);
  for (int t = 0; t < N; t++)
    if (sample_next(s, lg, &r) == PROTO_OK) cnt[r.token]++;
  CHECKF(fabs(cnt[1] / (double)cnt[0] - 0.25) < 0.03, "%d %d", cnt[0], cnt[1]);
  sample_free(s);
  /* top_k and top_p together: top-k 3 gives {0.5,.25,.125}/0.875; top_p 0.8 of that is {0, 1} */
  s = make(V, 1.0f, 3, 0.8f, 11, 0);
  memset(cnt, 0, sizeof cnt);
  for (int t = 0; t < 4000; t++)
    if (sample_next(s, lg, &r) == PROTO_OK) cnt[r.token]++;
  CHECK(cnt[0] > 0 && cnt[1] > 0 && cnt[0] + cnt[1] == 4000);
  sample_free(s);
  /* a large vocabulary with a small nucleus stays exact */
  enum { BIG = 50000 };
  float *big = malloc(BIG * sizeof(float));
  for (int i = 0; i < BIG; i++) big[i] = -20.0f;
  big[123] = 5.0f;
  big[40000] = 4.0f;
  s = make(BIG, 1.0f, 0, 0.5f, 12, 0);
  int only = 1;
  for (int t = 0; t < 100; t++) only &= sample_next(s, big, &r) == PROTO_OK && r.token == 123;
  CHECK(only);
  sample_free(s);
  free(big);
}

TEST(logprobs) {
  enum { V = 300 };
  float lg[V];
  random_logits(lg, V, 21);
  sampler *s = make(V, 1.0f, 0, 1.0f, 3, 5);
  sample_result r;
  CHECK(sample_next(s, lg, &r) == PROTO_OK);
  double z = 0;
  for (int i = 0; i < V; i++) z += exp((double)lg[i]);
  CHECK(fabs(r.logprob - (lg[r.token] - log(z))) < 1e-5);
  CHECK(r.n_top == 5);
  CHECK(r.top_tokens[0] == argmax(lg, V));
  int sorted = 1;
  for (int i = 1; i < 5; i++) sorted &= r.top_logprobs[i] <= r.top_logprobs[i - 1];
  CHECK(sorted);
  CHECK(fabs(r.top_logprobs[0] - (lg[r.top_tokens[0]] - log(z))) < 1e-5);
  sample_free(s);
}

/* kn_exp_sum, the sampler's exponentials: each term within 1e-6 of exp in
 * double of the same float exponent, 0 below e^-87, the sum within 1e-6
 * relative, with and without out, over lengths that end inside a vector
 * and inside a block */
TEST(exp_sum) {
  enum { N = 203 };
  float x[N], out[N + 1];
  for (int i = 0; i < N; i++) x[i] = (float)i * 0.55f - 100.0f; /* -100 .. 11.1 */
  const float shift = 11.1f, scale = 1.3f;
  int lens[] = {1, 7, 8, 64, 65, N}, terms_ok = 1, sums_ok = 1;
  for (size_t l = 0; l < sizeof lens / sizeof *lens; l++) {
    const int n = lens[l];
    out[n] = 777.0f;
    double got = kn_exp_sum(x, n, shift, scale, out), want = 0.0;
    for (int i = 0; i < n; i++) {
      double t = (x[i] - shift) * scale, e = t < -87.0 ? 0.0 : exp(t); /* t as in float */
      want += e;
      terms_ok &= fabs(out[i] - e) <= 1e-6 * e && (t >= -87.0 || out[i] == 0.0f);
    }
    sums_ok &= fabs(got - want) <= 1e-6 * want && out[n] == 777.0f &&
               kn_exp_sum(x, n, shift, scale, NULL) == got;
  }
  CHECK(terms_ok);
  CHECK(sums_ok);
}

TEST(params) {
  sample_params p = sample_params_default();
  proto_err_clear();
  CHECK(sample_params_check(&p) == PROTO_OK && proto_err_get()[0] == 0);
  p.temperature = -0.1f;
  CHECK(sample_params_check(&p) == PROTO_ERANGE &&
        strcmp(proto_err_get(), "temperature must be a finite number >= 0") == 0);
  p = sample_params_default();
  p.top_p = 1.5f;
  CHECK(sample_params_check(&p) == PROTO_ERANGE);
  p.top_p = 0.0f;
  CHECK(sample_params_check(&p) == PROTO_ERANGE);
  p = sample_params_default();
  p.top_k = -1;
  CHECK(sample_params_check(&p) == PROTO_ERANGE);
  p = sample_params_default();
  p.n_logprobs = SAMPLE_MAX_LOGPROBS + 1;
  CHECK(sample_params_check(&p) == PROTO_ERANGE);
  p = sample_params_default();
  p.temperature = NAN;
  CHECK(sample_params_check(&p) == PROTO_ERANGE);
  sampler *s = NULL;
  CHECK(sample_new(0, &p, &s) != PROTO_OK && s == NULL);
  p = sample_params_default();
  CHECK(sample_new(10, &p, &s) == PROTO_OK);
  float lg[10] = {0, 1, 2, NAN, 0, 0, 0, 0, 0, 0};
  sample_result r;
  CHECK(sample_next(s, lg, &r) == PROTO_ERANGE);
  sample_free(s);
  sample_free(NULL);
}

int main(void) {
  RUN(rng);
  RUN(greedy);
  RUN(seed_determinism);
  RUN(top_k);
  RUN(top_p_and_distribution);
  RUN(logprobs);
  RUN(exp_sum);
  RUN(params);
  return tap_done();
}
