/* store_fixture.h - a real store in a fresh temp dir for the index tests,
 * with the path of the index file under test beside it. Exits the test
 * program (status 2) when the dir or store cannot be made. */
#ifndef RETRO_TEST_STORE_FIXTURE_H
#define RETRO_TEST_STORE_FIXTURE_H

#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct fixture {
  char dir[64];
  char path[128];
  store *st;
} fixture;

/* Makes /tmp/retro-<tag>-XXXXXX, opens a store there; path = dir/file. */
static inline void fx_open_in(fixture *f, const char *tag, const char *file) {
  snprintf(f->dir, sizeof f->dir, "/tmp/retro-%s-XXXXXX", tag);
  if (!mkdtemp(f->dir)) {
    perror("mkdtemp");
    exit(2);
  }
  snprintf(f->path, sizeof f->path, "%s/%s", f->dir, file);
  if (store_open(f->dir, NULL, &f->st) != PROTO_OK) {
    printf("# store_open: %s\n", store_last_error());
    exit(2);
  }
}

static inline void fx_close(fixture *f) {
  char cmd[128];
  store_close(f->st);
  snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
  if (system(cmd) != 0) printf("# could not remove %s\n", f->dir);
}

#endif
