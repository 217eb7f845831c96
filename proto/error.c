/* error.c - the one per-thread detail message behind every module's
 * xxx_last_error(): a failing call writes it, the caller reads it before
 * its next call that can fail. */
#include "proto.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char err_text[PROTO_ERR_MAX];

void proto_err_vset(const char *fmt, va_list ap) {
  /* Formatted aside first: arguments often include proto_err_get() itself
   * (a module wrapping the message of the one below it). */
  char text[PROTO_ERR_MAX];
  vsnprintf(text, sizeof text, fmt, ap);
  memcpy(err_text, text, sizeof err_text);
}

void proto_err_set(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  proto_err_vset(fmt, ap);
  va_end(ap);
}

proto_status proto_fail(proto_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  proto_err_vset(fmt, ap);
  va_end(ap);
  return st;
}

const char *proto_err_get(void) { return err_text; }

void proto_err_clear(void) { err_text[0] = 0; }
