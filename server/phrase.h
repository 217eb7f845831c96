/* phrase.h - does a text contain a query word for word? Hybrid search puts
 * first the best of the lexical list's first three chunks that holds the
 * whole query (a pasted passage or error line): its own document is what
 * such a query asks for (docs/RETRIEVAL.md, "Exact phrases"). */
#ifndef RETRO_PHRASE_H
#define RETRO_PHRASE_H

#include <stddef.h>

/* Words are runs of ASCII letters, digits and '_', compared without case;
 * everything else separates them. A query of fewer than PHRASE_MIN_WORDS
 * words is never a phrase here: short queries are keywords. */
enum { PHRASE_MIN_WORDS = 5 };

/* 1 when query (qlen bytes) has at least PHRASE_MIN_WORDS words and they
 * occur consecutively and in order in before + text + after (a chunk's text
 * between the end of the chunk before it and the start of the one after,
 * either may be empty), touching text: not within before or after alone.
 * So a phrase that a chunk boundary cuts is found from either chunk. 0
 * otherwise, or when out of memory. */
int phrase_touches(const char *query, size_t qlen, const char *before, size_t blen,
                   const char *text, size_t tlen, const char *after, size_t alen);

/* The words of s (n bytes), as phrase_touches counts them: a query of
 * fewer than PHRASE_MIN_WORDS needs no chunk read. */
size_t phrase_words(const char *s, size_t n);

#endif
