/* phrase.c - word-for-word containment of a query in a chunk (phrase.h). */
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

int phrase_in(const char *query, size_t qlen, const char *text, size_t tlen) {
  size_t qw = 0, tw = 0;
  char *q = spaced_words(query, qlen, &qw);
  char *t = q && qw >= PHRASE_MIN_WORDS ? spaced_words(text, tlen, &tw) : NULL;
  int found = t && strstr(t, q) != NULL;
  free(q);
  free(t);
  return found;
}
