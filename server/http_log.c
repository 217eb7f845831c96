/* http_log.c - the daemon's log (see http_log.h): a mutex-guarded buffer of
 * whole lines, written with one write(2) per flush by whichever thread
 * flushes (the flusher thread, an event line, or a request line that finds
 * the buffer full). Why buffered: one write(2) per request was a tenth of
 * the CPU of a search by vector on this machine's kernel.
 */
#include "http_log.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { LOG_BUF = 64 * 1024, LOG_LINE = 1200 };

static struct {
  pthread_mutex_t mu;  /* everything below */
  pthread_cond_t wake; /* the flusher's timer (CLOCK_MONOTONIC); signalled to stop it */
  FILE *file;          /* NULL: stderr */
  long flush_ms;       /* 0: every line at once */
  int flusher_running, stopping;
  pthread_t flusher;
  size_t len;
  char buf[LOG_BUF];
} L = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

/* Writes the buffer out; L.mu held. A full disk drops lines, never requests. */
static void flush_locked(void) {
  int fd = fileno(L.file ? L.file : stderr);
  const char *p = L.buf;
  size_t left = L.len;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    p += w;
    left -= (size_t)w;
  }
  L.len = 0;
}

static void append(const char *line, size_t n, int at_once) {
  pthread_mutex_lock(&L.mu);
  if (L.len + n > sizeof L.buf) flush_locked();
  memcpy(L.buf + L.len, line, n);
  L.len += n;
  if (at_once || !L.flusher_running) flush_locked();
  pthread_mutex_unlock(&L.mu);
}

/* Formats one line, cut to LOG_LINE bytes (keeping its newline), and adds it. */
static void vline(int at_once, const char *fmt, va_list ap) {
  char line[LOG_LINE];
  int n = vsnprintf(line, sizeof line, fmt, ap);
  if (n <= 0) return;
  size_t len = (size_t)n;
  if (len >= sizeof line) {
    len = sizeof line - 1;
    line[len - 1] = '\n';
  }
  append(line, len, at_once);
}

static void *flusher_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&L.mu);
  while (!L.stopping) {
    struct timespec ts; /* the cond waits on CLOCK_MONOTONIC: clock steps do not stall it */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long ns = ts.tv_nsec + (L.flush_ms % 1000) * 1000000L;
    ts.tv_sec += L.flush_ms / 1000 + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_cond_timedwait(&L.wake, &L.mu, &ts);
    if (L.len) flush_locked();
  }
  pthread_mutex_unlock(&L.mu);
  return NULL;
}

void http_log_init(void) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_destroy(&L.wake);
  pthread_cond_init(&L.wake, &attr);
  pthread_condattr_destroy(&attr);
  pthread_mutex_lock(&L.mu);
  L.file = NULL;
  L.len = 0;
  L.flush_ms = 0;
  L.flusher_running = L.stopping = 0;
  pthread_mutex_unlock(&L.mu);
}

int http_log_open(const char *path) {
  FILE *f = path ? fopen(path, "a") : NULL;
  int err = errno;
  pthread_mutex_lock(&L.mu);
  flush_locked();
  if (L.file) fclose(L.file);
  L.file = f;
  pthread_mutex_unlock(&L.mu);
  if (path && !f) {
    fprintf(stderr, "retro serve: cannot open log %s: %s (logging to stderr)\n", path,
            strerror(err));
    return -1;
  }
  return 0;
}

int http_log_start(long flush_ms) {
  if (flush_ms <= 0) return 0;
  pthread_mutex_lock(&L.mu);
  L.flush_ms = flush_ms;
  L.stopping = 0;
  int rc = pthread_create(&L.flusher, NULL, flusher_main, NULL);
  L.flusher_running = rc == 0;
  pthread_mutex_unlock(&L.mu);
  return rc == 0 ? 0 : -1;
}

void http_log_close(void) {
  pthread_mutex_lock(&L.mu);
  int running = L.flusher_running;
  L.stopping = 1;
  L.flusher_running = 0; /* from here on lines are written at once */
  pthread_cond_signal(&L.wake);
  pthread_mutex_unlock(&L.mu);
  if (running) pthread_join(L.flusher, NULL);
  http_log_open(NULL);
}

size_t http_log_fixed3(double x, char *out) {
  int e2;
  double f = frexp(fabs(x), &e2); /* |x| = m x 2^e with m an integer of 53 bits */
  int e = e2 - 53;
  if (!isfinite(x) || (x != 0 && e >= 0)) return (size_t)snprintf(out, 32, "%.3f", x);
  uint64_t m = (uint64_t)ldexp(f, 53), p = m * 1000, n = 0; /* p < 2^63: exact */
  if (x != 0 && -e < 64) {                                  /* below 2^-11, x rounds to 0.000 */
    int s = -e;
    uint64_t r = p & ((1ull << s) - 1), half = 1ull << (s - 1);
    n = p >> s;
    if (r > half || (r == half && (n & 1))) n++;
  }
  char digits[24];
  size_t nd = 0, len = 0;
  for (uint64_t ip = n / 1000; nd == 0 || ip > 0; ip /= 10) digits[nd++] = (char)('0' + ip % 10);
  if (signbit(x)) out[len++] = '-';
  while (nd > 0) out[len++] = digits[--nd];
  out[len++] = '.';
  out[len++] = (char)('0' + n / 100 % 10);
  out[len++] = (char)('0' + n / 10 % 10);
  out[len++] = (char)('0' + n % 10);
  out[len] = 0;
  return len;
}

/* Appends s to line (of LOG_LINE bytes) at *n, keeping the full length in
 * *n as snprintf counts it. */
static void put(char *line, size_t *n, const char *s) {
  size_t k = strlen(s);
  if (*n < LOG_LINE - 1) memcpy(line + *n, s, *n + k < LOG_LINE - 1 ? k : LOG_LINE - 1 - *n);
  *n += k;
}

void http_log_request(const char *time, const char *method, const char *path, const char *route,
                      int status, double ms, const char *peer, const char *id, int aborted) {
  char line[LOG_LINE], num[32];
  size_t n = 0;
  const char *parts[] = {"time=", time,          " method=", method,      " path=\"",
                         path,    "\" route=\"", route,      "\" status="};
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) put(line, &n, parts[i]);
  char st[12], *d = st + sizeof st;
  *--d = 0;
  unsigned u = status < 0 ? 0u - (unsigned)status : (unsigned)status;
  do *--d = (char)('0' + u % 10);
  while (u /= 10);
  if (status < 0) *--d = '-';
  put(line, &n, d);
  put(line, &n, " ms=");
  http_log_fixed3(ms, num);
  const char *rest[] = {num, " peer=", peer, " id=", id, aborted ? " aborted=1" : "", "\n"};
  for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++) put(line, &n, rest[i]);
  if (n >= LOG_LINE) { /* cut as vline cuts */
    n = LOG_LINE - 1;
    line[n - 1] = '\n';
  }
  append(line, n, 0);
}

PROTO_PRINTF(2, 3)
static void line(int at_once, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vline(at_once, fmt, ap);
  va_end(ap);
}

void http_log_event(const char *level, const char *fmt, ...) {
  char t[40], msg[1024];
  http_log_time(t, sizeof t);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  line(1, "time=%s level=%s msg=\"%s\"\n", t, level, msg);
}

/* The date and time of day are formatted once per second per thread:
 * gmtime_r takes glibc's time-zone lock, which every request's line would
 * otherwise contend for. */
void http_log_time(char *out, size_t n) {
  static _Thread_local time_t cached_sec = -1;
  static _Thread_local char cached[24];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (ts.tv_sec != cached_sec) {
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_sec = ts.tv_sec;
  }
  /* the milliseconds by hand: this process's snprintf takes glibc's slow
   * positional path (libquadmath, loaded with OpenBLAS, registers printf
   * hooks), and this call was 1.5% of a small search's CPU (perf) */
  char full[32];
  size_t len = strlen(cached);
  int ms = (int)(ts.tv_nsec / 1000000);
  memcpy(full, cached, len);
  full[len] = '.';
  full[len + 1] = (char)('0' + ms / 100);
  full[len + 2] = (char)('0' + ms / 10 % 10);
  full[len + 3] = (char)('0' + ms % 10);
  full[len + 4] = 'Z';
  len += 5;
  if (n == 0) return;
  if (len > n - 1) len = n - 1; /* cut as snprintf cuts */
  memcpy(out, full, len);
  out[len] = 0;
}
