/* retro_f16.c - F16-weight matrix-vector product for the decoder's
 * one-token path (see retro_f16.h). Each weight row is expanded to F32 in
 * registers (F16C) and multiplied with FMA; accumulation is F32 in 32
 * lanes, so the result equals the F32 product over the same (F16-rounded)
 * weights up to summation order. No allocation, no threads.
 */
#include "retro_f16.h"

#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

int retro_f16_supported(void) {
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

void retro_gemv_f16(const uint16_t *W, const float *x, const float *b, float *y, int N, int K,
                    int accumulate) {
  for (int n = 0; n < N; n++) {
    float v = row_dot(W + (size_t)n * (size_t)K, x, K) + (b ? b[n] : 0.0f);
    y[n] = accumulate ? y[n] + v : v;
  }
}

#else

int retro_f16_supported(void) { return 0; }

void retro_gemv_f16(const uint16_t *W, const float *x, const float *b, float *y, int N, int K,
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
