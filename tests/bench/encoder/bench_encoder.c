/* bench_encoder.c - throughput of the C encoder (model/bert.c) at fixed
 * sequence lengths and batch sizes, and the machine's sgemm GFLOP/s as the
 * yardstick. Not a test; tests/bench/encoder/run.sh runs it next to the
 * PyTorch peer (bench_torch.py) on the same weights and inputs.
 *
 *   [POINTS=16x1,...] [MODES=ours,...] bench_encoder MODEL_DIR THREADS SECONDS
 *
 * Prints one line per measurement:
 *   sgemm M N K threads gflops
 *   ours LEN BATCH sent_per_s ms_per_call gflops sent_per_cpu_s min_ms_per_call
 *   blas LEN BATCH sent_per_s ms_per_call gflops sent_per_cpu_s min_ms_per_call
 *   (and the same for f32 and avx2)
 * sent_per_cpu_s divides by the process CPU time instead of wall time (a
 * figure that a busy machine distorts less).
 * "ours" is the encoder as shipped (a pool of THREADS threads over
 * single-threaded sgemm tiles); "blas" is the alternative it was measured
 * against: a pool of 1 and OpenBLAS itself running THREADS threads; for a
 * model stored as F16, "f32" is ours with BERT_F16=0 (the F32 copy of the
 * weights for short inputs too), and where the F16 products run at AVX-512,
 * "avx2" is ours with them at AVX2 (kn_f16_set_width(256)).
 * Inputs: sequence i of a batch has LEN tokens including [CLS]/[SEP]; its
 * content ids are 1000 + (i * 7919 + j * 104729) % min(28000, vocab - 1000)
 * (bench_torch.py uses the same formula).
 */
#include "bert.h"
#include "kernels.h"
#include "st.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double model_flops(int L, int H, int I, int T) {
  /* per sequence of T tokens: linears 2T(4H^2 + 2HI), attention 4 T^2 H */
  return (double)L * (2.0 * T * (4.0 * H * H + 2.0 * H * I) + 4.0 * T * T * H);
}

static double bench_sgemm(int M, int N, int K, int threads, double secs) {
  float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)N * K),
        *C = malloc(sizeof(float) * (size_t)M * N);
  for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)(i % 17) * 0.01f;
  for (size_t i = 0; i < (size_t)N * K; i++) B[i] = (float)(i % 13) * 0.01f;
  kn_set_blas_threads(threads);
  kn_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N); /* warm up */
  int it = 0;
  double t0 = proto_now(), t;
  do {
    kn_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
    it++;
    t = proto_now() - t0;
  } while (t < secs || it < 3);
  free(A);
  free(B);
  free(C);
  return 2.0 * M * N * K * it / t / 1e9;
}

typedef struct sgemm_run {
  int M, N, K, threads;
  double secs, gflops;
} sgemm_run;

static void *sgemm_thread(void *arg) {
  sgemm_run *r = arg;
  r->gflops = bench_sgemm(r->M, r->N, r->K, r->threads, r->secs);
  return NULL;
}

/* bench_sgemm on a thread of its own that ends with it: a multi-threaded
 * product leaves OpenMP threads attached to the thread that ran it, which
 * (spinning, on 2 CPUs) slowed the encoder's pool on that thread by up to
 * 2.5x after it (measured with oneDNN; GOMP_SPINCOUNT=0 removed it). */
static double sgemm_gflops(int M, int N, int K, int threads, double secs) {
  sgemm_run r = {M, N, K, threads, secs, 0.0};
  pthread_t t;
  if (pthread_create(&t, NULL, sgemm_thread, &r) != 0) return bench_sgemm(M, N, K, threads, secs);
  pthread_join(t, NULL);
  return r.gflops;
}

/* 1 when name is in the comma list in environment variable var, or var is
 * unset (everything wanted). */
static int wanted(const char *var, const char *name) {
  const char *list = getenv(var);
  if (!list) return 1;
  size_t n = strlen(name);
  for (const char *p = list; (p = strstr(p, name)); p += n)
    if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
  return 0;
}

/* Measures every (length, batch) point on b (those in POINTS, e.g.
 * "16x1,128x32", when it is set); prints "<tag> ..." lines. */
static int run_points(bert *b, const char *dir, const char *tag, double secs) {
  /* layer count and sizes from config.json */
  int H = (int)bert_dim(b), L = 6, I = 4 * H, span = 28000;
  FILE *cf;
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", dir);
  if ((cf = fopen(path, "r"))) {
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, cf);
    buf[n] = 0;
    char *p = strstr(buf, "\"num_hidden_layers\"");
    if (p && (p = strchr(p, ':'))) L = atoi(p + 1);
    p = strstr(buf, "\"intermediate_size\"");
    if (p && (p = strchr(p, ':'))) I = atoi(p + 1);
    p = strstr(buf, "\"vocab_size\"");
    if (p && (p = strchr(p, ':')) && atoi(p + 1) - 1000 < span) span = atoi(p + 1) - 1000;
    fclose(cf);
  }
  static const int lens[] = {16, 64, 128}, batches[] = {1, 32};
  for (size_t li = 0; li < 3; li++)
    for (size_t bi = 0; bi < 2; bi++) {
      int T = lens[li], B = batches[bi];
      char point[32];
      snprintf(point, sizeof point, "%dx%d", T, B);
      if (!wanted("POINTS", point)) continue;
      int32_t **ids = calloc((size_t)B, sizeof *ids);
      size_t *n = calloc((size_t)B, sizeof *n);
      for (int i = 0; i < B; i++) {
        n[i] = (size_t)T - 2;
        ids[i] = malloc(n[i] * sizeof(int32_t));
        for (size_t j = 0; j < n[i]; j++)
          ids[i][j] = 1000 + (int32_t)(((long long)i * 7919 + (long long)j * 104729) % span);
      }
      float *out = malloc(sizeof(float) * (size_t)B * H);
      bert_embed_ids(b, (const int32_t *const *)ids, n, (size_t)B, out); /* warm up */
      int it = 0;
      double t0 = proto_now(), c0 = cpu_now(), t, best = 1e30;
      do {
        double t1 = proto_now();
        if (bert_embed_ids(b, (const int32_t *const *)ids, n, (size_t)B, out) != PROTO_OK) {
          fprintf(stderr, "bench_encoder: %s\n", bert_last_error());
          return 1;
        }
        t = proto_now();
        if (t - t1 < best) best = t - t1;
        it++;
        t -= t0;
      } while (t < secs || it < 3);
      double sps = (double)B * it / t, cpu = cpu_now() - c0;
      printf("%s %d %d %.1f %.3f %.1f %.1f %.3f\n", tag, T, B, sps, 1e3 * t / it,
             model_flops(L, H, I, T) * sps / 1e9, (double)B * it / cpu, 1e3 * best);
      fflush(stdout);
      for (int i = 0; i < B; i++) free(ids[i]);
      free(ids);
      free(n);
      free(out);
    }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s MODEL_DIR THREADS SECONDS\n", argv[0]);
    return 2;
  }
  const char *dir = argv[1];
  int threads = atoi(argv[2]);
  double secs = atof(argv[3]);
  /* the yardstick: a large square product, and the encoder's own FFN shape
   * (left out when MODES picks modes: the bench's alternating rounds) */
  if (!getenv("MODES")) {
    printf("sgemm 2048 2048 2048 %d %.1f\n", threads,
           sgemm_gflops(2048, 2048, 2048, threads, secs));
    printf("sgemm 4096 1536 384 %d %.1f\n", threads, sgemm_gflops(4096, 1536, 384, threads, secs));
  }
  fflush(stdout);

  /* a model stored as F16 is also measured without its F16 products */
  char path[4096];
  st_file *sf = NULL;
  int f16 = 0;
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  if (st_open(path, &sf) == PROTO_OK)
    for (size_t i = 0; i < st_count(sf); i++) f16 |= st_at(sf, i)->dtype == ST_F16;
  st_close(sf);
  /* and, where the F16 products run at AVX-512, at AVX2 as well */
  int modes = f16 ? (kn_f16_width() == 512 ? 4 : 3) : 2;
  static const char *const mode_name[] = {"ours", "blas", "f32", "avx2"};
  for (int mode = 0; mode < modes; mode++) {
    if (!wanted("MODES", mode_name[mode])) continue;
    bert *b = NULL;
    bert_options opt = {.pooling = BERT_POOL_AUTO, .threads = mode == 1 ? 1 : threads};
    if (mode == 2) setenv("BERT_F16", "0", 1); /* read by bert_open */
    if (mode == 3) {
      unsetenv("BERT_F16");
      kn_f16_set_width(256);
    }
    if (bert_open(dir, &opt, &b) != PROTO_OK) {
      fprintf(stderr, "bench_encoder: %s\n", bert_last_error());
      return 1;
    }
    if (mode == 1) kn_set_blas_threads(threads); /* after bert_open, which sets 1 */
    if (run_points(b, dir, mode_name[mode], secs) != 0) return 1;
    bert_close(b);
  }
  return 0;
}
