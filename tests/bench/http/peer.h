/* peer.h - what the benchmark's peers (minimal.c, faiss_peer.c) share:
 * run until SIGTERM or SIGINT, as `retro serve` does. */
#ifndef RETRO_BENCH_PEER_H
#define RETRO_BENCH_PEER_H

#include <signal.h>

/* Blocks SIGTERM and SIGINT and waits for one of them. */
static void wait_for_stop_signal(void) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGTERM);
  sigaddset(&s, SIGINT);
  sigprocmask(SIG_BLOCK, &s, NULL);
  int sig;
  sigwait(&s, &sig);
}

#endif
