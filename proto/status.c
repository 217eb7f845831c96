/* status.c - names and messages of proto_status, from one table; the clock. */
#include "proto.h"

#include <time.h>

static const struct {
  const char *name;
  const char *message;
} status_table[] = {
#define PROTO_STATUS_ROW(name, msg) {#name, msg},
    PROTO_STATUS_MAP(PROTO_STATUS_ROW)
#undef PROTO_STATUS_ROW
};

const char *proto_strerror(proto_status st) {
  if ((unsigned)st >= PROTO_STATUS_COUNT) return "unknown status";
  return status_table[st].message;
}

const char *proto_status_name(proto_status st) {
  if ((unsigned)st >= PROTO_STATUS_COUNT) return "UNKNOWN";
  return status_table[st].name;
}

double proto_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
