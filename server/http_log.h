/* http_log.h - the log of `retro serve` (private to server/): one
 * `key=value` line per request or event, appended to a file (reopened on
 * SIGHUP, for logrotate) or written to stderr.
 *
 * Request lines are buffered: a flusher thread writes what has gathered
 * every flush_ms, and a line that would overflow the buffer (64 KiB) writes
 * it first. Event lines (start, errors, signals) are written at once,
 * together with every line before them. So the order of lines is kept, a
 * request pays no system call for its line, and a crash (SIGKILL, power
 * loss) loses at most flush_ms of request lines; flush_ms 0 writes every
 * line at once. Lines are cut to 1200 bytes and never interleave.
 *
 * Thread-safety: every function may be called from any thread once
 * http_log_init has run; http_log_init and http_log_close from one thread,
 * with no other log call in progress.
 */
#ifndef RETRO_HTTP_LOG_H
#define RETRO_HTTP_LOG_H

#include "proto.h" /* PROTO_PRINTF */

#include <stddef.h>

/* Logs to stderr, every line at once, until http_log_open/_start. */
void http_log_init(void);

/* Writes what is buffered, then appends to path from now on (NULL: stderr).
 * Returns 0, or -1 when path cannot be opened (then logs to stderr). */
int http_log_open(const char *path);

/* Starts the flusher thread (flush_ms > 0). Returns 0, or -1 when the
 * thread cannot be started (then every line is written at once). */
int http_log_start(long flush_ms);

/* Stops the flusher, writes what is buffered and closes the file; logging
 * goes on to stderr, every line at once. */
void http_log_close(void);

/* A request's line, buffered: `time=T method=M path="P" route="R" status=S
 * ms=%.3f peer=A id=I` and ` aborted=1` when aborted, then '\n' (cut to the
 * log's line limit as vsnprintf would cut it). Written without printf: in
 * this process glibc's printf takes its slow positional path for every call
 * (libquadmath, loaded with OpenBLAS, registers printf hooks). */
void http_log_request(const char *time, const char *method, const char *path, const char *route,
                      int status, double ms, const char *peer, const char *id, int aborted);

/* x as printf's "%.3f" writes it (the exact binary value rounded half to
 * even), NUL-terminated; out holds 32 bytes. Returns the length. */
size_t http_log_fixed3(double x, char *out);

/* An event line `time=... level=LEVEL msg="..."`, written at once. */
PROTO_PRINTF(2, 3)
void http_log_event(const char *level, const char *fmt, ...);

/* The current UTC time with milliseconds (2026-01-02T03:04:05.678Z). */
void http_log_time(char *out, size_t n);

#endif
