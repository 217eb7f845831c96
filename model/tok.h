/* tok.h - tokenizers: WordPiece (Hugging Face BertTokenizer behaviour, from
 * vocab.txt) and byte-level BPE (GPT-2 behaviour, from vocab.json +
 * merges.txt). Pure text -> ids and back; special tokens such as [CLS] are
 * added by the models, not here (except that special tokens written in the
 * text are kept whole by WordPiece).
 *
 * Thread-safety: a tok is immutable after open; encode/decode may run on any
 * number of threads at once.
 */
#ifndef RETRO_TOK_H
#define RETRO_TOK_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tok tok;

typedef enum tok_kind { TOK_WORDPIECE = 0, TOK_BPE = 1 } tok_kind;

/* WordPiece from a BERT vocab.txt. lowercase also strips accents unless
 * strip_accents is 0 (HF: strip_accents=None follows lowercase; pass -1). */
proto_status tok_open_wordpiece(const char *vocab_txt, int lowercase,
                                int strip_accents, tok **out);
/* Byte-level BPE from GPT-2 style vocab.json + merges.txt. */
proto_status tok_open_bpe(const char *vocab_json, const char *merges_txt, tok **out);
/* Opens what a model directory holds: vocab.json + merges.txt (BPE) or
 * vocab.txt (WordPiece, do_lower_case/strip_accents from
 * tokenizer_config.json when present, else lower-case). */
proto_status tok_open_dir(const char *dir, tok **out);
void tok_close(tok *t); /* accepts NULL */
/* Detail of this thread's last failure (file, line). Never NULL. */
const char *tok_last_error(void);

tok_kind tok_get_kind(const tok *t);
size_t tok_vocab_size(const tok *t);
/* Id of a token string ("[CLS]", "<|endoftext|>", "<s>"), -1 if absent. */
int32_t tok_token_id(const tok *t, const char *token);
/* A hex fingerprint of the vocabulary and merges (identical files -> equal);
 * borrowed, lives as long as t. */
const char *tok_fingerprint(const tok *t);

/* Encodes len bytes of text. *ids is malloc'd (caller frees), *n its length.
 * WordPiece needs valid UTF-8 (PROTO_EUTF8 otherwise); BPE takes any bytes. */
proto_status tok_encode(const tok *t, const char *text, size_t len,
                        int32_t **ids, size_t *n);
/* Decodes ids to bytes. *text is malloc'd and NUL-terminated, *len without the
 * NUL. BPE: decode(encode(x)) == x for any bytes. WordPiece: joins pieces
 * ("##" glued, words space-separated) as HF's decode does. Unknown ids ->
 * PROTO_EINVAL. */
proto_status tok_decode(const tok *t, const int32_t *ids, size_t n,
                        char **text, size_t *len);

#endif
