/* minimal.c - the peer of the HTTP benchmark: the smallest useful
 * libmicrohttpd responder, configured like `retro serve` (internal thread
 * pool, epoll). GET answers {"status":"ok"}; POST reads the body and answers
 * a fixed JSON document of about the size of a k=10 search response. It does
 * no parsing, no search and no auth: it is the ceiling the daemon's own
 * overhead is measured against.
 *   minimal PORT THREADS [WORK_US]
 * With WORK_US, each POST first spends about that many microseconds of CPU in
 * a loop that touches no memory, timed on the thread's CPU clock as retro
 * times its scans (less what two reads of the clock cost), so that the
 * responder's own cost can be measured at the request rate of a search: a
 * server answering 8k requests a second pays more per request than one
 * answering 150k, which batches its reads and wake-ups. GET /work answers
 * "SECONDS COUNT": the loops' CPU time and how many ran. */
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "peer.h"

static char post_reply[2048];
static uint64_t work_iters; /* of spin(), per POST; 0: none */
static uint64_t clock_cost; /* ns that two reads of the clock add, as retro measures it */
static atomic_uint_fast64_t work_ns, work_count; /* spent in it, and how often */

static uint64_t thread_cpu_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* The median of 31 empty intervals, as retro's index measures it. */
static uint64_t measure_clock_cost(void) {
  uint64_t d[31];
  for (int i = 0; i < 31; i++) {
    uint64_t t0 = thread_cpu_ns();
    d[i] = thread_cpu_ns() - t0;
  }
  qsort(d, 31, sizeof *d, cmp_u64);
  return d[15];
}

/* CPU work without memory traffic: a dependent chain the compiler must keep. */
static uint64_t spin(uint64_t iters) {
  volatile uint64_t x = 1;
  for (uint64_t i = 0; i < iters; i++) x = x * 6364136223846793005u + 1;
  return x;
}

/* The iterations that take work_us of CPU: the fastest of a few timed tries,
 * so that a preempted try does not inflate it. */
static uint64_t iters_for(double work_us) {
  const uint64_t probe = 2000000;
  uint64_t best = UINT64_MAX;
  for (int i = 0; i < 5; i++) {
    uint64_t t0 = thread_cpu_ns();
    spin(probe);
    uint64_t dt = thread_cpu_ns() - t0;
    if (dt < best) best = dt;
  }
  return (uint64_t)(work_us * 1000.0 * (double)probe / (double)best);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **ctx) {
  (void)cls;
  (void)version;
  (void)upload;
  if (!*ctx) {
    *ctx = (void *)1;
    return MHD_YES;
  }
  if (*upload_size) {
    *upload_size = 0;
    return MHD_YES;
  }
  int post = strcmp(method, "POST") == 0;
  if (post && work_iters) {
    uint64_t t0 = thread_cpu_ns();
    spin(work_iters);
    uint64_t dt = thread_cpu_ns() - t0;
    atomic_fetch_add(&work_ns, dt > clock_cost ? dt - clock_cost : 0);
    atomic_fetch_add(&work_count, 1);
  }
  char work[64]; /* written only for GET /work: the POST path stays as it was */
  int want_work = !post && !strcmp(url, "/work");
  if (want_work)
    snprintf(work, sizeof work, "%.6f %llu", (double)atomic_load(&work_ns) / 1e9,
             (unsigned long long)atomic_load(&work_count));
  const char *body = post ? post_reply : want_work ? work : "{\"status\":\"ok\"}";
  struct MHD_Response *r = MHD_create_response_from_buffer(
      strlen(body), (void *)body, body == work ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
  MHD_add_response_header(r, "Content-Type", "application/json");
  enum MHD_Result ret = MHD_queue_response(c, 200, r);
  MHD_destroy_response(r);
  return ret;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: minimal PORT THREADS [WORK_US]\n");
    return 2;
  }
  if (argc > 3 && atof(argv[3]) > 0) {
    work_iters = iters_for(atof(argv[3]));
    clock_cost = measure_clock_cost();
  }
  size_t n = 0;
  n += (size_t)snprintf(post_reply + n, sizeof post_reply - n, "{\"results\":[");
  for (int i = 0; i < 10 && n < sizeof post_reply - 200; i++)
    n += (size_t)snprintf(post_reply + n, sizeof post_reply - n,
                          "%s{\"score\":0.9%d,\"chunk_id\":%d,\"doc_id\":\"doc-%d\",\"doc_num\":%d,"
                          "\"ordinal\":0,\"metadata\":{}}",
                          i ? "," : "", i, i + 1, i, i + 1);
  snprintf(post_reply + n, sizeof post_reply - n, "],\"k\":10}");
  struct MHD_Daemon *d = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC, (uint16_t)atoi(argv[1]), NULL,
      NULL, handler, NULL, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)atoi(argv[2]),
      MHD_OPTION_CONNECTION_LIMIT, 1024u, MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_END);
  if (!d) {
    fprintf(stderr, "minimal: cannot listen\n");
    return 1;
  }
  wait_for_stop_signal();
  MHD_stop_daemon(d);
  return 0;
}
