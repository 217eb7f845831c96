/* run_cmd.h - for the TAP programs that drive a Python reference: runs a
 * shell command made from a printf format and gives its exit status (-1
 * when it could not run, 128 when a signal ended it). */
#ifndef RETRO_RUN_CMD_H
#define RETRO_RUN_CMD_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

static int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run_cmd(const char *fmt, ...) {
  char cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = system(cmd);
  return rc == -1 ? -1 : (WIFEXITED(rc) ? WEXITSTATUS(rc) : 128);
}

#endif
