/* code_simd.h - what the SIMD integer code kernels of flat_scan.c and
 * nib_codes.c share: the choice of kernel width, and the horizontal sums of
 * eight vectors of 32-bit integers at once (private to index/; include only
 * where that code is compiled: x86-64, GCC). */
#ifndef RETRO_CODE_SIMD_H
#define RETRO_CODE_SIMD_H

#include <immintrin.h>

/* The eight lane sums of a[0..7], in order (integer sums: any order is exact). */
__attribute__((target("avx2"))) static inline __m256i sum8x8_epi32(const __m256i *a) {
  __m256i t0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
  __m256i t1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[4], a[5]), _mm256_hadd_epi32(a[6], a[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20),
                          _mm256_permute2x128_si256(t0, t1, 0x31));
}

/* The widest integer kernel this CPU runs, up to cap bits: 512 (AVX-512
 * VNNI and BW), 256 (AVX2) or 0. Reads libgcc's cpu model. */
static inline unsigned code_kernel_width(unsigned cap) {
  if (cap >= 512 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw"))
    return 512;
  if (cap >= 256 && __builtin_cpu_supports("avx2")) return 256;
  return 0;
}

#endif
