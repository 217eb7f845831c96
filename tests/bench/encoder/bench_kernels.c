/* bench_kernels.c - the encoder's products one by one, on one thread: the
 * F16 few-row kernel over the weights' rows and over panels (kn_f16_pack),
 * at each width the CPU has (AVX-512, AVX2), against the F32 path the
 * encoder takes otherwise (kn_linear: its own small kernel up to 16 rows,
 * then sgemm, OpenBLAS's or oneDNN's).
 * For each shape of the default encoder (hidden 256, intermediate 1024)
 * and a number of rows M: GFLOP/s of each, the best of many calls (the
 * weights stay in cache, as they do between a query's layers), and the
 * ratios panels / rows and panels / F32. Not run by CI.
 *   tests/bench/encoder/kernels.sh [SECONDS=1]   (builds and runs this) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A normal half (all of this bench's are) as a float. */
static float half_to_float(uint16_t h) {
  uint32_t bits = (uint32_t)(h & 0x8000u) << 16 | (((h >> 10) & 0x1fu) - 15u + 127u) << 23 |
                  (uint32_t)(h & 0x3ffu) << 13;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

enum { ROWS_KERNEL, PANELS_KERNEL, F32_PATH };

/* The fastest call of one kernel over secs seconds, in seconds. */
static double fastest(int kernel, const float *x, const uint16_t *W, const uint16_t *P,
                      const float *W32, const float *b, float *out, int M, int N, int K,
                      double secs) {
  double best = 1e9, end = now() + secs;
  do {
    double t = now();
    if (kernel == F32_PATH) kn_linear(x, K, W32, b, out, N, M, N, K);
    else kn_linear_f16(x, K, W, kernel == PANELS_KERNEL ? P : NULL, b, out, N, M, N, K);
    t = now() - t;
    if (t < best) best = t;
  } while (now() < end);
  return best;
}

/* One shape at the width in force: a line per row count. */
static int run_shape(int N, int K, const int *rows, size_t nrows, double secs) {
  int MM = rows[nrows - 1];
  float *x = malloc(sizeof *x * (size_t)MM * (size_t)K),
        *W32 = malloc(sizeof *W32 * (size_t)N * (size_t)K);
  float *b = malloc(sizeof *b * (size_t)N), *out = malloc(sizeof *out * (size_t)MM * (size_t)N);
  uint16_t *W = malloc(sizeof *W * (size_t)N * (size_t)K);
  if (!x || !W32 || !b || !out || !W) return 1;
  for (size_t i = 0; i < (size_t)MM * (size_t)K; i++) x[i] = (float)((i * 37) % 23) * 0.1f - 1.0f;
  for (size_t i = 0; i < (size_t)N * (size_t)K; i++) {
    /* small halves, exact in F32: 0x2000-0x2fff and their negatives */
    W[i] = (uint16_t)(0x2000 + (i * 2654435761u) % 0x1000 + ((i & 1) ? 0x8000 : 0));
  }
  for (int i = 0; i < N; i++) b[i] = (float)i * 0.01f;
  uint16_t *P = kn_f16_pack(W, N, K);
  if (!P) return 1;
  for (size_t i = 0; i < (size_t)N * (size_t)K; i++) W32[i] = half_to_float(W[i]);
  for (size_t r = 0; r < nrows; r++) {
    int M = rows[r];
    double flop = 2.0 * M * N * K;
    double t_rows = fastest(ROWS_KERNEL, x, W, P, W32, b, out, M, N, K, secs / 3);
    double t_panels = fastest(PANELS_KERNEL, x, W, P, W32, b, out, M, N, K, secs / 3);
    double t_f32 = fastest(F32_PATH, x, W, P, W32, b, out, M, N, K, secs / 3);
    printf("%4d %5d %5d %4d %12.1f %12.1f %12.1f %12.2fx %11.2fx\n", kn_f16_width(), N, K, M,
           flop / t_rows / 1e9, flop / t_panels / 1e9, flop / t_f32 / 1e9, t_rows / t_panels,
           t_f32 / t_panels);
  }
  free(P);
  free(W);
  free(x);
  free(W32);
  free(b);
  free(out);
  return 0;
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 1.0;
  if (!kn_f16_supported()) {
    printf("# no F16 products on this CPU (AVX2, FMA and F16C needed)\n");
    return 0;
  }
  kn_set_blas_threads(1);
  static const int shapes[][2] = {{256, 256}, {1024, 256}, {256, 1024}}; /* N, K */
  static const int rows[] = {1, 2, 3, 4, 6, 8, 16, 32, 64, 128};
  printf("%4s %5s %5s %4s %12s %12s %12s %13s %12s\n", "bits", "N", "K", "M", "rows GF/s",
         "panels GF/s", "F32 GF/s", "panels/rows", "panels/F32");
  int widths[2] = {kn_f16_width(), 256}, nwidths = widths[0] == 256 ? 1 : 2;
  int panel_rows[2];
  for (int w = 0; w < nwidths; w++) {
    kn_f16_set_width(widths[w]);
    panel_rows[w] = kn_f16_panel_rows();
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
      if (run_shape(shapes[s][0], shapes[s][1], rows, sizeof rows / sizeof *rows, secs)) return 1;
  }
  kn_f16_set_width(0);
  printf(
      "# one thread, the fastest call; F32 = kn_linear (its small kernel to 16 rows, then sgemm)\n");
  for (int w = 0; w < nwidths; w++)
    printf("# at %d bits the encoder takes up to %d rows over panels (kn_f16_panel_rows)\n",
           widths[w], panel_rows[w]);
  return 0;
}
