/* bert.h - the frozen BERT-style encoder that turns chunks and queries into
 * vectors. Loads a Hugging Face BertModel / RobertaModel directory as it is:
 * config.json, model.safetensors (mmap'd, used in place), vocab.txt or
 * vocab.json + merges.txt, and sentence-transformers' 1_Pooling/config.json
 * when present. Output: pooled (CLS or mean), L2-normalised float vectors.
 *
 * Thread-safety: a bert is immutable after open; bert_embed_* may be called
 * from many threads at once (each call takes a scratch arena from a pool).
 *
 * Threads: the encoder parallelises with its own pool (bert_options.threads)
 * over tiles of single-threaded sgemm calls, so bert_open sets the products
 * to one thread for the process (kn_set_blas_threads(1): OpenBLAS's, and
 * oneDNN's OpenMP threads per call).
 */
#ifndef RETRO_BERT_H
#define RETRO_BERT_H

#include "proto.h"
#include "tok.h"

#include <stddef.h>
#include <stdint.h>

typedef struct bert bert;

typedef enum bert_pooling {
  BERT_POOL_AUTO = 0, /* sentence-transformers config, else config.json
                         "retro_pooling", else CLS */
  BERT_POOL_CLS = 1,
  BERT_POOL_MEAN = 2,
} bert_pooling;

typedef struct bert_options {
  bert_pooling pooling;
  int threads;      /* worker threads for a batch; 0 = number of CPUs */
  int no_normalize; /* 1 = skip L2 normalisation */
} bert_options;

/* Opens the model directory. opt may be NULL. On failure the message from
 * bert_last_error() names the file and, for weights, the tensor. */
proto_status bert_open(const char *dir, const bert_options *opt, bert **out);
void bert_close(bert *b);          /* accepts NULL */
const char *bert_last_error(void); /* this thread's last failure; never NULL */

uint32_t bert_dim(const bert *b);
/* Longest input in tokens including the special tokens (max positions). */
int bert_max_tokens(const bert *b);
/* The encoder's tokenizer; borrowed, lives as long as b. */
const tok *bert_tokenizer(const bert *b);
/* "name:dim:pooling:tokenizer-fingerprint" - stored in the database meta so
 * a database is never searched with another encoder. Borrowed. */
const char *bert_fingerprint(const bert *b);
/* The text put before a search query (config.json's "retro_query_prefix",
 * e.g. "query: "), or "" when the encoder embeds queries as they are. An
 * encoder trained with one (model/train/qp_finetune.py --query-prefix)
 * embeds questions apart from chunks, so they can learn to reach passages
 * while the chunks keep what RETRO retrieves with. Only searches by text
 * use it; chunks, neighbours and /v1/embeddings are embedded as they are.
 * Not part of the fingerprint: stored vectors do not depend on it. */
enum { BERT_MAX_QUERY_PREFIX = 64 };
const char *bert_query_prefix(const bert *b);
/* The pooling in effect (BERT_POOL_CLS or BERT_POOL_MEAN, never AUTO). */
bert_pooling bert_get_pooling(const bert *b);
/* The ids put before and after every input ([CLS]/[SEP], <s>/</s>, ...),
 * for running the same inputs through another implementation. */
void bert_special_ids(const bert *b, int32_t *cls_id, int32_t *sep_id);

/* Embeds n texts (lens[i] bytes each; lens may be NULL for NUL-terminated)
 * into out (n x dim). Adds [CLS]/[SEP] (or <s>/</s>) and truncates to the
 * model's maximum. */
proto_status bert_embed_texts(bert *b, const char *const *texts, const size_t *lens, size_t n,
                              float *out);
/* Same for pre-tokenised inputs (ids from bert_tokenizer(), no specials). */
proto_status bert_embed_ids(bert *b, const int32_t *const *ids, const size_t *lens, size_t n,
                            float *out);
/* Embeds n pairs of texts read together, as a cross-encoder reads a query
 * and a passage (ids from bert_tokenizer(), no specials): BERT
 * [CLS] first [SEP] second [SEP], the second with token type 1 (when the
 * model has two types); RoBERTa <s> first </s></s> second </s>. Too long a
 * pair loses the end of its second text, then of its first (Hugging Face's
 * "longest_first" applied to the second first). second[i] may be NULL when
 * second_lens[i] is 0. */
proto_status bert_embed_pairs(bert *b, const int32_t *const *first, const size_t *first_lens,
                              const int32_t *const *second, const size_t *second_lens, size_t n,
                              float *out);
/* Embeds one text on the calling thread alone, for a caller that keeps the
 * other cores busy itself (a hybrid search runs its lexical half there).
 * The same vector as bert_embed_texts. */
proto_status bert_embed_text_here(bert *b, const char *text, size_t len, float *out);

#endif
