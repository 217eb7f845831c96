/* tok_unicode.h - the Unicode pieces the tokenizers need (private to
 * model/tok*.c): UTF-8 decoding with GPT-2-compatible handling of invalid
 * bytes, character properties, full lower-case mapping, NFD and NFC.
 * Tables are generated at build time by model/unicode_gen.py, the GPT-2
 * classes from model/tok_bpe_classes.txt (Unicode 15.0, the `regex`
 * module's), the rest from Python's unicodedata, as model/train/tokref.py.
 * Not here: case folding, compatibility (NFKC/NFKD) forms, grapheme
 * segmentation. All functions are pure and thread-safe.
 */
#ifndef RETRO_TOK_UNICODE_H
#define RETRO_TOK_UNICODE_H

#include <stddef.h>
#include <stdint.h>

enum {
  TU_BPE_OTHER = 0,
  TU_BPE_LETTER = 1,
  TU_BPE_NUMBER = 2,
  TU_BPE_SPACE = 3,
  TU_BPE_MASK = 3,
  TU_WP_WS = 1u << 2,    /* BERT whitespace: " \t\n\r" or Zs */
  TU_WP_CTRL = 1u << 3,  /* BERT control: C* except \t \n \r */
  TU_WP_PUNCT = 1u << 4, /* BERT punctuation: P* or ASCII symbols */
  TU_MN = 1u << 5,       /* category Mn */
  TU_PYSPACE = 1u << 6,  /* Python str.isspace() */
  TU_HAS_LOWER = 1u << 7,
  TU_HAS_DECOMP = 1u << 8,
};

/* A growable code-point buffer. Zero-initialise; free v when done. */
typedef struct tu_buf {
  uint32_t *v;
  size_t n, cap;
} tu_buf;

/* 0 or -1 (out of memory). */
int tu_buf_reserve(tu_buf *b, size_t extra);
int tu_buf_push(tu_buf *b, uint32_t cp);

/* Unicode version of the tables from Python's unicodedata ("14.0.0"); the
 * GPT-2 classes (TU_BPE_MASK) are Unicode 15.0.0. */
const char *tu_version(void);

/* Property bits (above) | combining class << 16. cp > 0x10FFFF -> 0. */
uint32_t tu_props(uint32_t cp);
static inline unsigned tu_ccc(uint32_t props) { return (props >> 16) & 0xFF; }

/* Decodes one code point of s[0..len) (len > 0). Returns it and sets *adv to
 * the bytes used, or returns -1 with *adv = 1 when s[0] does not start a
 * well-formed sequence (Unicode Table 3-7). */
int32_t tu_utf8_next(const unsigned char *s, size_t len, size_t *adv);
/* Writes cp as UTF-8 to out (4 bytes room); returns the byte count. */
size_t tu_utf8_put(uint32_t cp, unsigned char *out);

/* Full lower-case mapping of cp (Python's str.lower() for one character,
 * without the final-sigma context): writes 1 to 3 code points to out and
 * returns their count. */
size_t tu_lower(uint32_t cp, uint32_t out[3]);

/* Appends the NFD / NFC form of in[0..n) to out. 0 or -1 (out of memory). */
int tu_nfd(const uint32_t *in, size_t n, tu_buf *out);
int tu_nfc(const uint32_t *in, size_t n, tu_buf *out);

#endif
