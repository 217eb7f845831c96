/* kernels_f16.c - F16-weight products (declared in kernels.h): matrix-vector
 * for the decoder's one-token path, few-row linear for short inputs of the
 * encoder and the decoder, and the choice between it and the F32 kernel.
 * Weights are expanded to F32 in registers (F16C) and multiplied with FMA;
 * accumulation is F32, so the result equals the F32 product over the same
 * (F16-rounded) weights up to summation order. No allocation, no threads.
 * A file of its own, not kernels.c: that one is compiled with O3 and
 * fp-contract=fast, which would fuse the scalar tails here differently.
 */
#include "kernels.h"

#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

int kn_f16_supported(void) {
  /* clang 14 does not know "f16c" for __builtin_cpu_supports: read CPUID
   * leaf 1 (ECX bit 29) for it; avx2/fma checks also cover OS YMM support. */
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_F16C)) return 0;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

__attribute__((target("avx2,fma,f16c"))) static float row_dot(const uint16_t *w, const float *x,
                                                              int K) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
         a3 = _mm256_setzero_ps();
  int k = 0;
  for (; k + 32 <= K; k += 32) {
    __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w + k)));
    __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w + k + 8)));
    __m256 w2 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w + k + 16)));
    __m256 w3 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w + k + 24)));
    a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + k), a0);
    a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + k + 8), a1);
    a2 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x + k + 16), a2);
    a3 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x + k + 24), a3);
  }
  for (; k + 8 <= K; k += 8) {
    __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w + k)));
    a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + k), a0);
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  float acc = _mm_cvtss_f32(h);
  for (; k < K; k++) acc += _cvtsh_ss(w[k]) * x[k];
  return acc;
}

void kn_gemv_f16(const uint16_t *W, const float *x, const float *b, float *y, int N, int K,
                 int accumulate) {
  for (int n = 0; n < N; n++) {
    float v = row_dot(W + (size_t)n * (size_t)K, x, K) + (b ? b[n] : 0.0f);
    y[n] = accumulate ? y[n] + v : v;
  }
}

__attribute__((target("avx2,fma,f16c"))) static inline float hsum256(__m256 s) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

/* acc[r][j] = x[r] . w[j] over K for 3 rows of x and 4 rows of W: twelve
 * accumulators, each W vector expanded from F16 once for three FMAs. */
__attribute__((target("avx2,fma,f16c"))) static void tile3x4(const float *const *x,
                                                             const uint16_t *const *w, int K,
                                                             float acc[3][4]) {
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00,
         a12 = a00, a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00;
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 x0 = _mm256_loadu_ps(x[0] + k), x1 = _mm256_loadu_ps(x[1] + k),
           x2 = _mm256_loadu_ps(x[2] + k), wv;
#define TILE_COL(j)                                                                 \
  wv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w[j] + k))); \
  a0##j = _mm256_fmadd_ps(x0, wv, a0##j);                                           \
  a1##j = _mm256_fmadd_ps(x1, wv, a1##j);                                           \
  a2##j = _mm256_fmadd_ps(x2, wv, a2##j);
    TILE_COL(0) TILE_COL(1) TILE_COL(2) TILE_COL(3)
#undef TILE_COL
  }
  __m256 all[3][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}};
  for (int r = 0; r < 3; r++)
    for (int j = 0; j < 4; j++) {
      float v = hsum256(all[r][j]);
      for (int t = k; t < K; t++) v += x[r][t] * _cvtsh_ss(w[j][t]);
      acc[r][j] = v;
    }
}

/* tile3x4 for one row of x: the same sums in the same order (one
 * accumulator per column, FMAs over k in steps of 8, hsum256, the tail), so
 * a row's result does not depend on the tile it falls in. For the rows
 * left over past the last multiple of 3, which tile3x4 would compute three
 * times (a 16-row query: 16 rows instead of 18). */
__attribute__((target("avx2,fma,f16c"))) static void tile1x4(const float *x,
                                                             const uint16_t *const *w, int K,
                                                             float acc[4]) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 xv = _mm256_loadu_ps(x + k);
#define TILE1_COL(j)      \
  a##j = _mm256_fmadd_ps( \
      xv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w[j] + k))), a##j);
    TILE1_COL(0) TILE1_COL(1) TILE1_COL(2) TILE1_COL(3)
#undef TILE1_COL
  }
  __m256 all[4] = {a0, a1, a2, a3};
  for (int j = 0; j < 4; j++) {
    float v = hsum256(all[j]);
    for (int t = k; t < K; t++) v += x[t] * _cvtsh_ss(w[j][t]);
    acc[j] = v;
  }
}

void kn_linear_f16(const float *x, int ldx, const uint16_t *W, const float *b, float *out, int ldo,
                   int M, int N, int K) {
  for (int n0 = 0; n0 < N; n0 += 32) { /* 32 rows of W stay in cache across the row tiles */
    int n1 = n0 + 32 < N ? n0 + 32 : N;
    for (int m0 = 0; m0 < M; m0 += 3) {
      int mr = M - m0 < 3 ? M - m0 : 3;
      const float *xr[3];
      for (int r = 0; r < 3; r++) xr[r] = x + (size_t)(m0 + (r < mr ? r : 0)) * (size_t)ldx;
      for (int n = n0; n < n1; n += 4) {
        int nb = n1 - n < 4 ? n1 - n : 4;
        const uint16_t *wr[4];
        for (int j = 0; j < 4; j++) wr[j] = W + (size_t)(n + (j < nb ? j : 0)) * (size_t)K;
        float acc[3][4];
        if (mr == 3) tile3x4(xr, wr, K, acc);
        else
          for (int r = 0; r < mr; r++) tile1x4(xr[r], wr, K, acc[r]);
        for (int r = 0; r < mr; r++)
          for (int j = 0; j < nb; j++)
            out[(size_t)(m0 + r) * (size_t)ldo + n + j] = acc[r][j] + (b ? b[n + j] : 0.0f);
      }
    }
  }
}

#else

int kn_f16_supported(void) { return 0; }

void kn_linear_f16(const float *x, int ldx, const uint16_t *W, const float *b, float *out, int ldo,
                   int M, int N, int K) {
  (void)x;
  (void)ldx;
  (void)W;
  (void)b;
  (void)out;
  (void)ldo;
  (void)M;
  (void)N;
  (void)K;
}

void kn_gemv_f16(const uint16_t *W, const float *x, const float *b, float *y, int N, int K,
                 int accumulate) {
  (void)W;
  (void)x;
  (void)b;
  (void)y;
  (void)N;
  (void)K;
  (void)accumulate;
}

#endif

void kn_linear_prefer_f16(const float *x, int ldx, const float *W, const uint16_t *Wh,
                          const float *b, float *out, int ldo, int M, int N, int K) {
  if (Wh && M <= KN_F16_FEW_ROWS) kn_linear_f16(x, ldx, Wh, b, out, ldo, M, N, K);
  else kn_linear(x, ldx, W, b, out, ldo, M, N, K);
}
