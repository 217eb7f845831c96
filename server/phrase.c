/* phrase.c - word-for-word containment of a query in a chunk and its
 * neighbours' edges (phrase.h). */
#include "phrase.h"

#include <stdlib.h>
#include <string.h>

static int word_byte(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '_';
}

/* s as its words, lowercased, each after a space and the last followed by
 * one (" open a file "), so that containment of one such string in another
 * is containment of whole words; *words gets their count. NULL when out of
 * memory. */
static char *spaced_words(const char *s, size_t n, size_t *words) {
  char *out = malloc(n + 3), *w = out;
  if (!out) return NULL;
  int in = 0;
  *words = 0;
  *w++ = ' ';
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (word_byte(ch)) {
      *w++ = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
      in = 1;
    } else if (in) {
      *w++ = ' ';
      in = 0;
      (*words)++;
    }
  }
  if (in) {
    *w++ = ' ';
    (*words)++;
  }
  *w = 0;
  return out;
}

size_t phrase_words(const char *s, size_t n) {
  size_t words = 0;
  for (size_t i = 0; i < n; i++)
    if (word_byte((unsigned char)s[i]) && (i + 1 == n || !word_byte((unsigned char)s[i + 1])))
      words++;
  return words;
}

/* Whether the words of s (n bytes) hold q (spaced_words form). */
static int holds(const char *s, size_t n, const char *q, int *oom) {
  size_t words;
  char *w = spaced_words(s, n, &words);
  if (!w) *oom = 1;
  int found = w && strstr(w, q) != NULL;
  free(w);
  return found;
}

int phrase_touches(const char *query, size_t qlen, const char *before, size_t blen,
                   const char *text, size_t tlen, const char *after, size_t alen) {
  size_t qw = 0;
  int oom = 0, found = 0;
  char *q = spaced_words(query, qlen, &qw);
  char *all = q && qw >= PHRASE_MIN_WORDS ? malloc(blen + tlen + alen + 1) : NULL;
  if (all) {
    if (blen) memcpy(all, before, blen);
    if (tlen) memcpy(all + blen, text, tlen);
    if (alen) memcpy(all + blen + tlen, after, alen);
    found = holds(all, blen + tlen + alen, q, &oom) && !holds(before, blen, q, &oom) &&
            !holds(after, alen, q, &oom) && !oom;
  }
  free(all);
  free(q);
  return found;
}
