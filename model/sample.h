/* sample.h - picking the next token from a row of logits: greedy,
 * temperature, top-k, top-p (nucleus), with a seeded RNG (same seed and same
 * logits -> same tokens on every machine), and the log-probabilities of the
 * chosen token and of the most likely alternatives.
 *
 * It does not know about models, text, stop sequences or max_tokens (the
 * caller's loop handles those).
 *
 * Thread-safety: a sampler is used by one thread at a time; different
 * samplers are independent.
 */
#ifndef RETRO_SAMPLE_H
#define RETRO_SAMPLE_H

#include "proto.h"

#include <stdint.h>

enum { SAMPLE_MAX_LOGPROBS = 20 }; /* most alternatives reported per token */

typedef struct sample_params {
  float temperature; /* 0 = greedy (argmax, lowest id on ties); > 0 divides the logits */
  int top_k;         /* keep the k most likely tokens; 0 = no limit */
  float top_p;       /* keep the smallest most-likely set whose mass >= top_p; 1 = no limit */
  uint64_t seed;     /* RNG seed; the same seed gives the same draws */
  int n_logprobs;    /* alternatives to report, 0 .. SAMPLE_MAX_LOGPROBS */
} sample_params;

/* One sampled token. Log-probabilities are of the model's own distribution
 * (log_softmax of the raw logits: temperature 1, no top-k/top-p), as
 * OpenAI's logprobs are. */
typedef struct sample_result {
  int32_t token;
  float logprob;                           /* of token */
  int n_top;                               /* = n_logprobs */
  int32_t top_tokens[SAMPLE_MAX_LOGPROBS]; /* most likely first, lowest id on ties */
  float top_logprobs[SAMPLE_MAX_LOGPROBS];
} sample_result;

typedef struct sampler sampler;

/* temperature 1, top_k 0, top_p 1, seed 0, n_logprobs 0. */
sample_params sample_params_default(void);

/* PROTO_OK, or PROTO_ERANGE with the error detail (proto_err_get) naming
 * the parameter for: temperature < 0 or not finite, top_k < 0, top_p not in
 * (0, 1], n_logprobs outside 0..SAMPLE_MAX_LOGPROBS. */
proto_status sample_params_check(const sample_params *p);

/* A sampler for rows of vocab logits. Allocates its scratch here (none per
 * token). Errors: PROTO_EINVAL (vocab < 1), PROTO_ERANGE (bad params),
 * PROTO_ENOMEM. */
proto_status sample_new(int vocab, const sample_params *p, sampler **out);
void sample_free(sampler *s); /* accepts NULL */

/* Restarts the RNG from seed (the same draws as a fresh sampler). */
void sample_reseed(sampler *s, uint64_t seed);

/* Picks the next token from logits (vocab floats, not modified). Each call
 * consumes exactly one RNG draw (also when greedy), so the sequence of draws
 * depends only on the seed and the number of calls. Errors: PROTO_EINVAL
 * (NULL arguments), PROTO_ERANGE (logits contain NaN). */
proto_status sample_next(sampler *s, const float *logits, sample_result *out);

/* The RNG on its own (xoshiro256**, seeded by splitmix64). */
typedef struct sample_rng {
  uint64_t s[4];
} sample_rng;
void sample_rng_seed(sample_rng *r, uint64_t seed);
uint64_t sample_rng_next(sample_rng *r);
double sample_rng_uniform(sample_rng *r); /* [0, 1), 53 random bits */

#endif
