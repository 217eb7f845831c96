/* tok.h - tokenizers: WordPiece (Hugging Face BertTokenizer behaviour, from
 * vocab.txt) and byte-level BPE (GPT-2 behaviour, from vocab.json +
 * merges.txt). Pure text -> ids and back; special tokens such as [CLS] are
 * added by the models, not here (except that special tokens written in the
 * text are kept whole by WordPiece: [UNK] [SEP] [PAD] [CLS] [MASK]).
 * BPE never produces special tokens (<|endoftext|>, <s>, ...) from text: written
 * in the text they are encoded as plain text; get their ids from
 * tok_token_id. model/train/tokref.py is the reference implementation (same
 * ids, tested by tests/tok/parity.py); its header states the exact rules,
 * including how invalid UTF-8 is pre-tokenised.
 *
 * Errors: PROTO_EIO (unreadable file), PROTO_ECORRUPT (malformed vocabulary
 * or merges, bad tokenizer_config.json), PROTO_ENOTFOUND (tok_open_dir finds
 * no tokenizer files), PROTO_EINVAL, PROTO_ENOMEM; tok_last_error() names the
 * file and line.
 *
 * Thread-safety: a tok is immutable after open (BPE keeps an internal
 * mutex-protected cache of pre-token encodings); encode/decode may run on any
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
proto_status tok_open_wordpiece(const char *vocab_txt, int lowercase, int strip_accents, tok **out);
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
/* Largest id + 1 (BPE: of vocab.json; WordPiece: lines of vocab.txt). */
size_t tok_vocab_size(const tok *t);
/* Id of a token string ("[CLS]", "<|endoftext|>", "<s>"), -1 if absent. */
int32_t tok_token_id(const tok *t, const char *token);
/* A hex fingerprint of the vocabulary and merges (identical files -> equal);
 * borrowed, lives as long as t. It is the SHA-256 (64 hex digits) of, for
 * BPE, vocab.json's bytes followed by merges.txt's; for WordPiece, vocab.txt's
 * bytes followed by "\nlower=L strip=S" (the effective flags, 0 or 1).
 * tokref.fingerprint() computes the same. */
const char *tok_fingerprint(const tok *t);

/* Encodes len bytes of text. *ids is malloc'd (caller frees), *n its length.
 * WordPiece needs valid UTF-8 (PROTO_EUTF8 otherwise); BPE takes any bytes. */
proto_status tok_encode(const tok *t, const char *text, size_t len, int32_t **ids, size_t *n);
/* Decodes ids to bytes. *text is malloc'd and NUL-terminated, *len without the
 * NUL. BPE: decode(encode(x)) == x for any bytes (so a decoded prefix may end
 * inside a UTF-8 sequence); special tokens decode to their literal strings.
 * WordPiece: " ".join(tokens).replace(" ##", "").strip() as HF's
 * convert_tokens_to_string (without its optional clean-up of spaces before
 * punctuation). Unknown ids -> PROTO_EINVAL. */
proto_status tok_decode(const tok *t, const int32_t *ids, size_t n, char **text, size_t *len);

#endif
