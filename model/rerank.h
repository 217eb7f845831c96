/* rerank.h - a cross-encoder reranker: reads a query and a passage together
 * and scores how well the passage answers the query. Loads a Hugging Face
 * sequence classifier with one label (config.json, model.safetensors, and
 * its tokenizer files): RobertaForSequenceClassification, as
 * model/train/rerank_train.py writes it, or BertForSequenceClassification
 * (the layout of the common MS MARCO cross-encoders). The encoder
 * (model/bert.c, bert_embed_pairs) reads <s> query </s></s> passage </s>
 * (BERT: [CLS] query [SEP] passage [SEP], the passage with token type 1),
 * and the head, dense -> tanh -> one output (RoBERTa's classifier.dense and
 * classifier.out_proj; BERT's pooler and classifier), turns the first
 * token's output into one number (a logit: higher = more relevant).
 *
 * Thread-safety: immutable after open; rerank_score may be called from many
 * threads at once (the encoder's scratch arenas are pooled).
 */
#ifndef RETRO_RERANK_H
#define RETRO_RERANK_H

#include "proto.h"

#include <stddef.h>

typedef struct reranker reranker;

/* Query tokens kept (the rest are cut), as rerank_train.py keeps. */
enum { RERANK_MAX_QUERY_TOKENS = 32 };

/* Opens the model directory; threads as bert_options.threads (0 = all
 * CPUs). On failure rerank_last_error() names the file and the problem. */
proto_status rerank_open(const char *dir, int threads, reranker **out);
void rerank_close(reranker *r);      /* accepts NULL */
const char *rerank_last_error(void); /* this thread's last failure; never NULL */
/* The directory's last component and hidden size, e.g. "reranker:256". */
const char *rerank_name(const reranker *r);

/* out[i] = the score of passage i for query (lens in bytes; passage_lens
 * may be NULL for NUL-terminated passages). The query is cut to
 * RERANK_MAX_QUERY_TOKENS tokens and each passage to what the encoder's
 * length leaves. Errors: PROTO_EINVAL, PROTO_ENOMEM, tokenizer errors. */
proto_status rerank_score(reranker *r, const char *query, size_t query_len,
                          const char *const *passages, const size_t *passage_lens, size_t n,
                          float *out);

#endif
