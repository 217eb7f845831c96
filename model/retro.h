/* retro.h - the RETRO decoder: a decoder-only transformer whose RETRO blocks
 * (self-attention -> chunked cross-attention -> feed-forward) read the
 * encoded neighbours [N, F] of each completed 64-token chunk. Architecture,
 * tensor names and config fields: model/RETRO_FORMAT.md. The PyTorch
 * reference of the same model is model/train/retro_model.py.
 *
 * The weights (retro) are shared and read-only; each sequence being generated
 * has its own retro_state (KV cache, cached neighbour keys/values, scratch).
 * Different states may be used from different threads at once; one state
 * from one thread at a time.
 */
#ifndef RETRO_RETRO_H
#define RETRO_RETRO_H

#include "proto.h"
#include "tok.h"

#include <stddef.h>
#include <stdint.h>

typedef struct retro retro;
typedef struct retro_state retro_state;

typedef struct retro_config {
  int vocab_size;
  int dim; /* d_model */
  int n_layers;
  int n_heads;
  int ffn_dim;
  int max_seq;       /* longest sequence (prompt + generated) */
  int chunk_len;     /* m = 64 */
  int neighbour_len; /* r = 128: [N, F] */
  int n_neighbours;  /* k used in training (a state may get other k) */
  int enc_layers;    /* neighbour encoder layers */
  int n_retro_layers;
  int retro_layers[16]; /* 1-based layer numbers of RETRO blocks */
  /* added by the retro part (after the original fields): */
  float rope_theta; /* rotary base */
  float layer_norm_eps;
  int tie_embeddings; /* 1: output head = token embedding */
  int pad_id;         /* config pad id (neighbour padding by default) */
  int eos_id;         /* end-of-text id */
} retro_config;

/* Opens a model directory (config.json, model.safetensors, vocab.json,
 * merges.txt). threads: BLAS threads, 0 = number of CPUs (OpenBLAS's
 * setting is process-wide: the last open wins). The one-token path with
 * F16 weights is single-threaded per state. Every tensor is checked by name and shape;
 * errors: PROTO_EIO (no config.json), PROTO_EMODEL (bad config or weights,
 * retro_last_error names the field or tensor), PROTO_EMISMATCH (tokenizer
 * larger than vocab_size), PROTO_ENOMEM. The tokenizer is optional: a
 * directory without vocab.json / vocab.txt opens with retro_tokenizer() ==
 * NULL (weights-only directories, tests). */
proto_status retro_open(const char *dir, int threads, retro **out);
void retro_close(retro *r);         /* accepts NULL */
const char *retro_last_error(void); /* this thread's last failure */
const retro_config *retro_get_config(const retro *r);
const tok *retro_tokenizer(const retro *r); /* borrowed, lives as long as r; NULL if none */

/* A fresh state for sequences up to max_tokens (<= max_seq): KV cache and
 * all scratch are allocated here (PROTO_ERANGE, PROTO_ENOMEM). retro_state_reset
 * forgets the tokens and the neighbours, keeping the memory. */
proto_status retro_state_new(const retro *r, int max_tokens, retro_state **out);
void retro_state_free(retro_state *s); /* accepts NULL */
void retro_state_reset(retro_state *s);
int retro_state_pos(const retro_state *s); /* tokens consumed so far */

/* Sets the neighbours of chunk u (0-based): k x neighbour_len token ids, each
 * neighbour [N, F] padded with pad_id where shorter (pad_id positions are
 * masked out). k = 0 means no neighbours (that chunk's group attends to
 * nothing, as RETRO [OFF]). Must be called before the forward pass reaches
 * the last token of chunk u (position 64u+63), since that token is the first
 * to attend to them. Chunks without neighbours set behave as k = 0.
 * Errors: PROTO_ERANGE (chunk outside 0..max_tokens/64-1, or a non-pad token
 * outside the vocabulary), PROTO_EINVAL (k < 0, or the chunk's last token was
 * already consumed), PROTO_ENOMEM. Copies tokens; may allocate (once per
 * chunk). Setting a chunk again replaces its neighbours. */
proto_status retro_set_neighbours(retro_state *s, int chunk, const int32_t *tokens, int k,
                                  int32_t pad_id);

/* Consumes n tokens (the prompt in one batched pass, or one token at a time)
 * and writes the logits of every consumed position into logits (n x vocab),
 * or of the last one only when all_logits is 0 (logits: vocab floats).
 * Reaching the last token of a chunk with neighbours encodes them (once).
 * Errors: PROTO_EINVAL (NULL, n < 1), PROTO_ERANGE (past max_tokens, or a
 * token outside the vocabulary; nothing is consumed then). No allocation. */
proto_status retro_forward(retro_state *s, const int32_t *tokens, int n, int all_logits,
                           float *logits);

/* Where a state's time went since it was created or reset (for benchmarks
 * and server timings). Wall-clock seconds. */
typedef struct retro_stats {
  int tokens;         /* positions consumed */
  int forward_calls;  /* retro_forward calls that succeeded */
  int chunks_encoded; /* neighbour sets run through the encoder */
  double forward_s;   /* inside retro_forward, encoding included */
  double encode_s;    /* of which: neighbour encoder + CCA key/value caching */
} retro_stats;
void retro_state_stats(const retro_state *s, retro_stats *out);

#endif
