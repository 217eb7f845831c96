/* slurp.h - a whole file read into memory, for the test and bench programs. */
#ifndef RETRO_TEST_SLURP_H
#define RETRO_TEST_SLURP_H

#include <stdio.h>
#include <stdlib.h>

/* The contents of path with a NUL after them (its size in *len when len is
 * not NULL), or NULL when it cannot be read whole. Free with free(). */
static inline void *slurp_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf) buf[n] = 0;
  if (len) *len = buf ? (size_t)n : 0;
  return buf;
}

#endif
