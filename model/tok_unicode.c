/* tok_unicode.c - UTF-8, character properties, lower-casing, NFD and NFC for
 * the tokenizers, from the tables model/unicode_gen.py generates
 * (tok_unicode_tables.h in the build directory). Follows Unicode's algorithms
 * (UAX #15 for normalisation, Table 3-7 for well-formed UTF-8) as Python's
 * unicodedata implements them; the tok tests compare it with Python.
 * Not here: NFKC/NFKD, case folding, the final-sigma rule (the tokenizers
 * lower-case one character at a time, as Hugging Face's BertTokenizer does).
 */
#include "tok_unicode.h"

#include "proto.h"

#include <stdlib.h>
#include <string.h>

#include "tok_unicode_tables.h"

enum {
  HANGUL_S = 0xAC00,
  HANGUL_L = 0x1100,
  HANGUL_V = 0x1161,
  HANGUL_T = 0x11A7,
  HANGUL_LCOUNT = 19,
  HANGUL_VCOUNT = 21,
  HANGUL_TCOUNT = 28,
  HANGUL_NCOUNT = HANGUL_VCOUNT * HANGUL_TCOUNT,
  HANGUL_SCOUNT = HANGUL_LCOUNT * HANGUL_NCOUNT,
};

int tu_buf_reserve(tu_buf *b, size_t extra) {
  if (b->cap - b->n >= extra) return 0;
  size_t cap = b->cap ? b->cap : 64;
  while (cap - b->n < extra) {
    if (cap > SIZE_MAX / 2 / sizeof(uint32_t)) return -1;
    cap *= 2;
  }
  uint32_t *v = realloc(b->v, cap * sizeof(uint32_t));
  if (!v) return -1;
  b->v = v;
  b->cap = cap;
  return 0;
}

int tu_buf_push(tu_buf *b, uint32_t cp) {
  if (b->n == b->cap && tu_buf_reserve(b, 1)) return -1;
  b->v[b->n++] = cp;
  return 0;
}

const char *tu_version(void) { return TU_UNIDATA_VERSION; }

uint32_t tu_props(uint32_t cp) {
  if (cp >= 0x110000) return 0;
  return tu_stage2[(size_t)tu_stage1[cp / TU_BLOCK] * TU_BLOCK + cp % TU_BLOCK];
}

int32_t tu_utf8_next(const unsigned char *s, size_t len, size_t *adv) {
  *adv = 1;
  if (s[0] < 0x80) return (int32_t)s[0];
  uint32_t cp;
  int n = proto_utf8_decode((const char *)s, len, &cp);
  if (n <= 0) return -1;
  *adv = (size_t)n;
  return (int32_t)cp;
}

size_t tu_utf8_put(uint32_t cp, unsigned char *out) {
  if (cp < 0x80) {
    out[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (unsigned char)(0xC0 | (cp >> 6));
    out[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (unsigned char)(0xE0 | (cp >> 12));
    out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (unsigned char)(0xF0 | (cp >> 18));
  out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Index of cp in a sorted table, -1 when absent. */
static long find_cp(const uint32_t *tab, size_t count, uint32_t cp) {
  size_t lo = 0, hi = count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (tab[mid] < cp) lo = mid + 1;
    else hi = mid;
  }
  return (lo < count && tab[lo] == cp) ? (long)lo : -1;
}

size_t tu_lower(uint32_t cp, uint32_t out[3]) {
  if (cp < 0x80) {
    out[0] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    return 1;
  }
  if (!(tu_props(cp) & TU_HAS_LOWER)) {
    out[0] = cp;
    return 1;
  }
  long i = find_cp(tu_lower_cp, TU_LOWER_COUNT, cp);
  if (i < 0) {
    out[0] = cp;
    return 1;
  }
  size_t n = tu_lower_len[i];
  memcpy(out, tu_lower_pool + tu_lower_off[i], n * sizeof(uint32_t));
  return n;
}

/* Stable sort of v[0..n) by combining class (all non-zero). */
static int sort_marks(uint32_t *v, size_t n) {
  if (n < 2) return 0;
  if (n <= 32) {
    for (size_t i = 1; i < n; i++) {
      uint32_t x = v[i];
      unsigned cx = tu_ccc(tu_props(x));
      size_t j = i;
      while (j > 0 && tu_ccc(tu_props(v[j - 1])) > cx) {
        v[j] = v[j - 1];
        j--;
      }
      v[j] = x;
    }
    return 0;
  }
  /* long runs: counting sort (stable, linear) */
  uint32_t *tmp = malloc(n * sizeof(uint32_t));
  if (!tmp) return -1;
  size_t count[257] = {0};
  for (size_t i = 0; i < n; i++) count[tu_ccc(tu_props(v[i])) + 1]++;
  for (size_t c = 1; c < 257; c++) count[c] += count[c - 1];
  for (size_t i = 0; i < n; i++) tmp[count[tu_ccc(tu_props(v[i]))]++] = v[i];
  memcpy(v, tmp, n * sizeof(uint32_t));
  free(tmp);
  return 0;
}

int tu_nfd(const uint32_t *in, size_t n, tu_buf *out) {
  size_t start = out->n;
  for (size_t i = 0; i < n; i++) {
    uint32_t cp = in[i];
    if (cp >= HANGUL_S && cp < HANGUL_S + HANGUL_SCOUNT) {
      uint32_t s = cp - HANGUL_S;
      if (tu_buf_push(out, HANGUL_L + s / HANGUL_NCOUNT) ||
          tu_buf_push(out, HANGUL_V + (s % HANGUL_NCOUNT) / HANGUL_TCOUNT))
        return -1;
      if (s % HANGUL_TCOUNT && tu_buf_push(out, HANGUL_T + s % HANGUL_TCOUNT)) return -1;
      continue;
    }
    if (cp >= 0xC0 && (tu_props(cp) & TU_HAS_DECOMP)) {
      long k = find_cp(tu_decomp_cp, TU_DECOMP_COUNT, cp);
      if (k >= 0) {
        size_t m = tu_decomp_len[k];
        if (tu_buf_reserve(out, m)) return -1;
        memcpy(out->v + out->n, tu_decomp_pool + tu_decomp_off[k], m * sizeof(uint32_t));
        out->n += m;
        continue;
      }
    }
    if (tu_buf_push(out, cp)) return -1;
  }
  /* canonical ordering of each run of non-starters */
  size_t i = start;
  while (i < out->n) {
    if (!tu_ccc(tu_props(out->v[i]))) {
      i++;
      continue;
    }
    size_t j = i;
    while (j < out->n && tu_ccc(tu_props(out->v[j]))) j++;
    if (sort_marks(out->v + i, j - i)) return -1;
    i = j;
  }
  return 0;
}

/* Primary composite of a + b, 0 when none. */
static uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= HANGUL_L && a < HANGUL_L + HANGUL_LCOUNT && b >= HANGUL_V &&
      b < HANGUL_V + HANGUL_VCOUNT)
    return HANGUL_S + ((a - HANGUL_L) * HANGUL_VCOUNT + (b - HANGUL_V)) * HANGUL_TCOUNT;
  if (a >= HANGUL_S && a < HANGUL_S + HANGUL_SCOUNT && (a - HANGUL_S) % HANGUL_TCOUNT == 0 &&
      b > HANGUL_T && b < HANGUL_T + HANGUL_TCOUNT)
    return a + (b - HANGUL_T);
  uint64_t key = ((uint64_t)a << 21) | b;
  size_t lo = 0, hi = TU_COMP_COUNT;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (tu_comp_key[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return (lo < TU_COMP_COUNT && tu_comp_key[lo] == key) ? tu_comp_val[lo] : 0;
}

int tu_nfc(const uint32_t *in, size_t n, tu_buf *out) {
  size_t start = out->n;
  if (tu_nfd(in, n, out)) return -1;
  uint32_t *v = out->v + start;
  size_t len = out->n - start, w = 0;
  long starter = -1;    /* index in v[0..w) of the last starter */
  unsigned last_cc = 0; /* class of the last character kept after it */
  for (size_t i = 0; i < len; i++) {
    uint32_t c = v[i];
    unsigned cc = tu_ccc(tu_props(c));
    if (starter >= 0 && ((size_t)starter == w - 1 || (last_cc != 0 && last_cc < cc))) {
      uint32_t comp = compose(v[starter], c);
      if (comp) {
        v[starter] = comp;
        continue;
      }
    }
    if (cc == 0) {
      starter = (long)w;
      last_cc = 0;
    } else last_cc = cc;
    v[w++] = c;
  }
  out->n = start + w;
  return 0;
}
