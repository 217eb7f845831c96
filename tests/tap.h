/* tap.h - a tiny TAP producer for the per-module test programs.
 * Each TEST(name) function runs once from main via RUN(name); CHECK records an
 * "ok"/"not ok" line with the failing expression. tap_done() prints the plan
 * and returns the exit status (non-zero when anything failed). SKIP(why)
 * records a group that could not run as "ok N # SKIP why", so a missing
 * prerequisite is counted and said, never silently dropped. */
#ifndef RETRO_TAP_H
#define RETRO_TAP_H

#include <math.h>
#include <stdio.h>

static int tap_count, tap_failed;

#define CHECK(cond) tap_check_((cond) ? 1 : 0, #cond, __FILE__, __LINE__)
#define CHECKF(cond, ...)                                         \
  do {                                                            \
    if (!tap_check_((cond) ? 1 : 0, #cond, __FILE__, __LINE__)) { \
      printf("#   ");                                             \
      printf(__VA_ARGS__);                                        \
      printf("\n");                                               \
    }                                                             \
  } while (0)
#define TEST(name) static void test_##name(void)
#define RUN(name)            \
  do {                       \
    printf("# %s\n", #name); \
    fflush(stdout);          \
    test_##name();           \
  } while (0)

static inline int tap_check_(int ok, const char *expr, const char *file, int line) {
  tap_count++;
  if (ok) printf("ok %d - %s\n", tap_count, expr);
  else {
    tap_failed++;
    printf("not ok %d - %s (%s:%d)\n", tap_count, expr, file, line);
  }
  fflush(stdout);
  return ok;
}

#define SKIP(...)                       \
  do {                                  \
    tap_count++;                        \
    printf("ok %d # SKIP ", tap_count); \
    printf(__VA_ARGS__);                \
    printf("\n");                       \
    fflush(stdout);                     \
  } while (0)

static inline int tap_done(void) {
  printf("1..%d\n", tap_count);
  return tap_failed ? 1 : 0;
}

#endif
