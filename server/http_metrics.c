/* http_metrics.c - the per-route request counters and latency histograms
 * of /metrics (Prometheus text format 0.0.4), and the standard process_*
 * metrics. One process-wide registry behind a mutex; the engine's gauges
 * (documents, chunks, index size, ingest counters, queue depths) are appended
 * by the /metrics handler, not here. */
#include "http.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define N_BUCKETS 14
#define N_STATUS 16 /* distinct status codes tracked per route */

static const double bucket_le[N_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1,    0.25,  0.5,    1,     2.5,  5,     10};

typedef struct series {
  int status; /* 0 = unused slot */
  uint64_t count;
  double sum;
  uint64_t buckets[N_BUCKETS]; /* non-cumulative; summed when written */
} series;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static series table[HTTP_R_COUNT][N_STATUS];

void http_metrics_observe(http_route r, int status, double seconds) {
  if ((unsigned)r >= HTTP_R_COUNT) r = HTTP_R_OTHER;
  pthread_mutex_lock(&lock);
  series *row = table[r], *s = NULL;
  for (int i = 0; i < N_STATUS; i++) {
    if (row[i].status == status || row[i].status == 0) {
      s = &row[i];
      break;
    }
  }
  if (!s) s = &row[N_STATUS - 1]; /* overflow: lumped into the last slot */
  if (!s->status) s->status = status;
  s->count++;
  s->sum += seconds;
  for (int b = 0; b < N_BUCKETS; b++)
    if (seconds <= bucket_le[b]) {
      s->buckets[b]++;
      break;
    }
  pthread_mutex_unlock(&lock);
}

static const char *method_of(int r) {
  const char *m = http_route_method((http_route)r);
  return *m ? m : "other";
}

void http_metrics_write(proto_buf *b) {
  pthread_mutex_lock(&lock);
  proto_buf_adds(b,
                 "# HELP retro_http_requests_total HTTP requests answered.\n"
                 "# TYPE retro_http_requests_total counter\n");
  for (int r = 0; r < HTTP_R_COUNT; r++)
    for (int i = 0; i < N_STATUS && table[r][i].status; i++)
      proto_buf_addf(b,
                     "retro_http_requests_total{route=\"%s\",method=\"%s\",status=\"%d\"} %llu\n",
                     http_route_label((http_route)r), method_of(r), table[r][i].status,
                     (unsigned long long)table[r][i].count);
  proto_buf_adds(b,
                 "# HELP retro_http_request_duration_seconds Time from the request's "
                 "first byte to its last response byte.\n"
                 "# TYPE retro_http_request_duration_seconds histogram\n");
  for (int r = 0; r < HTTP_R_COUNT; r++)
    for (int i = 0; i < N_STATUS && table[r][i].status; i++) {
      const series *s = &table[r][i];
      const char *label = http_route_label((http_route)r), *m = method_of(r);
      uint64_t cum = 0;
      for (int k = 0; k < N_BUCKETS; k++) {
        cum += s->buckets[k];
        proto_buf_addf(b,
                       "retro_http_request_duration_seconds_bucket{route=\"%s\",method=\"%s\","
                       "status=\"%d\",le=\"%g\"} %llu\n",
                       label, m, s->status, bucket_le[k], (unsigned long long)cum);
      }
      proto_buf_addf(b,
                     "retro_http_request_duration_seconds_bucket{route=\"%s\",method=\"%s\","
                     "status=\"%d\",le=\"+Inf\"} %llu\n",
                     label, m, s->status, (unsigned long long)s->count);
      proto_buf_addf(b,
                     "retro_http_request_duration_seconds_sum{route=\"%s\",method=\"%s\","
                     "status=\"%d\"} %.6f\n",
                     label, m, s->status, s->sum);
      proto_buf_addf(b,
                     "retro_http_request_duration_seconds_count{route=\"%s\",method=\"%s\","
                     "status=\"%d\"} %llu\n",
                     label, m, s->status, (unsigned long long)s->count);
    }
  pthread_mutex_unlock(&lock);
}

void http_metrics_reset(void) {
  pthread_mutex_lock(&lock);
  memset(table, 0, sizeof table);
  pthread_mutex_unlock(&lock);
}

/* Seconds since the epoch at which this process started: its start in clock
 * ticks after boot (/proc/self/stat, field 22) plus the boot time (/proc/stat
 * btime). -1 when either cannot be read. */
static double process_start_time(void) {
  char buf[1024];
  FILE *f = fopen("/proc/self/stat", "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  unsigned long long start = 0;
  /* after ") ": field 3 (state) onwards; starttime is field 22 */
  if (!p || sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d "
                   "%*d %llu",
                   &start) != 1)
    return -1;
  f = fopen("/proc/stat", "r");
  if (!f) return -1;
  unsigned long long btime = 0;
  char line[256];
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "btime %llu", &btime) == 1) break;
  fclose(f);
  long hz = sysconf(_SC_CLK_TCK);
  return btime && hz > 0 ? (double)btime + (double)start / (double)hz : -1;
}

static void process_metric(proto_buf *b, const char *name, const char *type, const char *help,
                           double v) {
  proto_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.15g\n", name, help, name, type, name, v);
}

void http_metrics_write_process(proto_buf *b) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0)
    process_metric(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent.",
                   (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6);
  unsigned long long vm_pages = 0, rss_pages = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    int got = fscanf(f, "%llu %llu", &vm_pages, &rss_pages);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    if (got == 2 && page > 0) {
      process_metric(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
                     (double)vm_pages * (double)page);
      process_metric(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                     (double)rss_pages * (double)page);
    }
  }
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    long fds = 0;
    for (struct dirent *e; (e = readdir(d));)
      if (e->d_name[0] != '.') fds++;
    closedir(d);
    /* less the descriptor of the listing itself */
    process_metric(b, "process_open_fds", "gauge", "Open file descriptors.", (double)(fds - 1));
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    process_metric(b, "process_max_fds", "gauge", "Limit on open file descriptors.",
                   (double)rl.rlim_cur);
  double start = process_start_time();
  if (start >= 0)
    process_metric(b, "process_start_time_seconds", "gauge",
                   "Start time of the process since the epoch, in seconds.", start);
}
