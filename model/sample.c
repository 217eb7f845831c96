/* sample.c - next-token sampling (see sample.h): temperature, top-k, top-p
 * over a float logits row, a portable seeded RNG, and log-probabilities.
 * Candidates are ordered by probability, then by token id, so every choice is
 * deterministic for a given seed. Does not touch the model or text.
 */
#include "sample.h"

#include "kernels.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sampler {
  int vocab;
  sample_params p;
  sample_rng rng;
  int32_t *idx; /* (vocab) candidate token ids */
  float *prob;  /* (vocab) probabilities at the sampling temperature */
};

/* ------------------------------------------------------------------ RNG */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void sample_rng_seed(sample_rng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sample_rng_next(sample_rng *r) {
  uint64_t *s = r->s;
  uint64_t out = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return out;
}

double sample_rng_uniform(sample_rng *r) {
  return (double)(sample_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* --------------------------------------------------------------- params */

sample_params sample_params_default(void) {
  sample_params p;
  memset(&p, 0, sizeof p);
  p.temperature = 1.0f;
  p.top_p = 1.0f;
  return p;
}

proto_status sample_params_check(const sample_params *p) {
  const char *w = NULL;
  if (!p) w = "no parameters";
  else if (!isfinite(p->temperature) || p->temperature < 0.0f)
    w = "temperature must be a finite number >= 0";
  else if (p->top_k < 0) w = "top_k must be >= 0";
  else if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) w = "top_p must be in (0, 1]";
  else if (p->n_logprobs < 0 || p->n_logprobs > SAMPLE_MAX_LOGPROBS)
    w = "logprobs must be between 0 and 20";
  return w ? proto_fail(PROTO_ERANGE, "%s", w) : PROTO_OK;
}

proto_status sample_new(int vocab, const sample_params *p, sampler **out) {
  if (!out) return PROTO_EINVAL;
  *out = NULL;
  if (vocab < 1) return PROTO_EINVAL;
  proto_status st = sample_params_check(p);
  if (st != PROTO_OK) return st;
  sampler *s = calloc(1, sizeof *s);
  if (!s) return PROTO_ENOMEM;
  s->vocab = vocab;
  s->p = *p;
  s->idx = malloc((size_t)vocab * sizeof *s->idx);
  s->prob = malloc((size_t)vocab * sizeof *s->prob);
  if (!s->idx || !s->prob) {
    sample_free(s);
    return PROTO_ENOMEM;
  }
  sample_rng_seed(&s->rng, p->seed);
  *out = s;
  return PROTO_OK;
}

void sample_free(sampler *s) {
  if (!s) return;
  free(s->idx);
  free(s->prob);
  free(s);
}

void sample_reseed(sampler *s, uint64_t seed) {
  if (s) sample_rng_seed(&s->rng, seed);
}

/* ------------------------------------------------------------- ordering */

/* Candidate order: higher value first, then lower id. */
static int before(const float *val, int32_t a, int32_t b) {
  return val[a] > val[b] || (val[a] == val[b] && a < b);
}

static void sift_down(int32_t *h, int n, int i, const float *val) {
  /* min-heap on the candidate order: the root is the "worst" kept token */
  for (;;) {
    int l = 2 * i + 1, r = l + 1, w = i;
    if (l < n && before(val, h[w], h[l])) w = l;
    if (r < n && before(val, h[w], h[r])) w = r;
    if (w == i) return;
    int32_t t = h[i];
    h[i] = h[w];
    h[w] = t;
    i = w;
  }
}

/* The best k of ids[0..n) by the candidate order, written sorted (best
 * first) into ids[0..k). O(n log k). */
static void top_k_sorted(int32_t *ids, int n, int k, const float *val) {
  if (k > n) k = n;
  if (k <= 0) return;
  for (int i = k / 2 - 1; i >= 0; i--) sift_down(ids, k, i, val);
  for (int i = k; i < n; i++) {
    if (before(val, ids[i], ids[0])) {
      ids[0] = ids[i];
      sift_down(ids, k, 0, val);
    }
  }
  /* heap sort: repeatedly move the worst to the end */
  for (int end = k - 1; end > 0; end--) {
    int32_t t = ids[0];
    ids[0] = ids[end];
    ids[end] = t;
    sift_down(ids, end, 0, val);
  }
}

/* ------------------------------------------------------------- sampling */

proto_status sample_next(sampler *s, const float *logits, sample_result *out) {
  if (!s || !logits || !out) return PROTO_EINVAL;
  const int V = s->vocab;
  const sample_params *p = &s->p;
  double u = sample_rng_uniform(&s->rng); /* one draw per call, always */

  /* log_softmax of the raw logits for the reported log-probabilities */
  float mx = -INFINITY;
  int32_t arg = 0;
  for (int i = 0; i < V; i++) {
    if (isnan(logits[i])) return PROTO_ERANGE;
    if (logits[i] > mx) {
      mx = logits[i];
      arg = i;
    }
  }
  /* with a finite largest logit every exponent is at most 0 (or -inf),
   * which kn_exp_sum takes; an infinite one keeps exp in double (its NaN) */
  const int finite = isfinite(mx);
  double z = 0.0;
  if (finite) z = kn_exp_sum(logits, V, mx, 1.0f, NULL);
  else
    for (int i = 0; i < V; i++) z += exp((double)logits[i] - (double)mx);
  const double lse = (double)mx + log(z);

  int32_t tok = arg;
  if (p->temperature > 0.0f && !(p->top_k == 1)) {
    const double invT = 1.0 / (double)p->temperature;
    double mass = 0.0;
    if (finite && invT <= FLT_MAX) mass = kn_exp_sum(logits, V, mx, (float)invT, s->prob);
    else
      for (int i = 0; i < V; i++) {
        s->prob[i] = (float)exp(((double)logits[i] - (double)mx) * invT);
        mass += s->prob[i];
      }
    int n = 0;
    const int kk = p->top_k > 0 && p->top_k < V ? p->top_k : V;
    if (p->top_p < 1.0f || kk < V) {
      /* Only the head of the order matters: collect the tokens at or above a
       * threshold (everything left out is below everything collected) and
       * lower the threshold until the collected set holds the top-k set, or,
       * without top-k, the top-p mass. */
      float thr = 1e-4f; /* relative to the largest probability (1) */
      for (;;) {
        n = 0;
        double held = 0.0;
        for (int i = 0; i < V; i++)
          if (s->prob[i] >= thr) {
            s->idx[n++] = i;
            held += s->prob[i];
          }
        int enough = kk < V ? n >= kk : held >= (double)p->top_p * mass;
        if (enough || thr == 0.0f) break;
        thr = thr > 1e-30f ? thr * 1e-6f : 0.0f;
      }
      int keep = n < kk ? n : kk;
      top_k_sorted(s->idx, n, keep, s->prob);
      n = keep;
      if (p->top_p < 1.0f) {
        /* nucleus of the top-k distribution (HF order: top-k, then top-p) */
        double base = mass;
        if (kk < V) {
          base = 0.0;
          for (int i = 0; i < keep; i++) base += s->prob[s->idx[i]];
        }
        double target = (double)p->top_p * base, acc = 0.0;
        for (int i = 0; i < keep; i++) {
          acc += s->prob[s->idx[i]];
          if (acc >= target) {
            n = i + 1;
            break;
          }
        }
      }
    } else {
      for (int i = 0; i < V; i++) s->idx[i] = i;
      n = V;
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) total += s->prob[s->idx[i]];
    double r = u * total, acc = 0.0;
    tok = s->idx[n - 1];
    for (int i = 0; i < n; i++) {
      acc += s->prob[s->idx[i]];
      if (r < acc) {
        tok = s->idx[i];
        break;
      }
    }
  }

  out->token = tok;
  out->logprob = (float)((double)logits[tok] - lse);
  out->n_top = p->n_logprobs;
  if (p->n_logprobs > 0) {
    int n = 0;
    for (int i = 0; i < V; i++) s->idx[n++] = i;
    top_k_sorted(s->idx, n, p->n_logprobs, logits);
    int nt = p->n_logprobs < V ? p->n_logprobs : V;
    out->n_top = nt;
    for (int i = 0; i < nt; i++) {
      out->top_tokens[i] = s->idx[i];
      out->top_logprobs[i] = (float)((double)logits[s->idx[i]] - lse);
    }
  }
  return PROTO_OK;
}
