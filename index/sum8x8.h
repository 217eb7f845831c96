/* sum8x8.h - the horizontal sums of eight vectors of 32-bit integers at
 * once, for the AVX2 code kernels of flat_scan.c and nib_codes.c (private
 * to index/; include only where AVX2 code is compiled: x86-64, GCC). */
#ifndef RETRO_SUM8X8_H
#define RETRO_SUM8X8_H

#include <immintrin.h>

/* The eight lane sums of a[0..7], in order (integer sums: any order is exact). */
__attribute__((target("avx2"))) static inline __m256i sum8x8_epi32(const __m256i *a) {
  __m256i t0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
  __m256i t1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[4], a[5]), _mm256_hadd_epi32(a[6], a[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20),
                          _mm256_permute2x128_si256(t0, t1, 0x31));
}

#endif
