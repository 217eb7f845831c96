/* kernels_f16.c - F16-weight products (declared in kernels.h): matrix-vector
 * for the decoder's one-token path, few-row linear for short inputs of the
 * encoder and the decoder, and the choice between it and the F32 kernel.
 * Weights are expanded to F32 in registers (F16C) and multiplied with FMA;
 * accumulation is F32, so the result equals the F32 product over the same
 * (F16-rounded) weights up to summation order. Each kernel exists at two
 * widths, AVX2 and AVX-512, made from one template (kernels_f16_tiles.h);
 * the widest the CPU has runs. No allocation, no threads.
 * A file of its own, not kernels.c: that one is compiled with O3 and
 * fp-contract=fast, which would fuse the scalar tails here differently.
 */
#include "kernels.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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

#define F16_PRAGMA(x) _Pragma(#x)
#define F16_UNROLL(n) F16_PRAGMA(GCC unroll n)

/* The AVX2 kernels: 8 floats a vector. */
#define F16_TARGET __attribute__((target("avx2,fma,f16c")))
#define F16_NAME(name) name##_avx2
#define VF __m256
#define VW 8
#define TR 3 /* 12 accumulators, 3 rows of x and a row of W: the 16 registers */
#define PR 6 /* 12 accumulators, 2 vectors a panel row, over panels */
#define VZERO() _mm256_setzero_ps()
#define VLOADF(p) _mm256_loadu_ps(p)
#define VSTOREF(p, v) _mm256_storeu_ps(p, v)
#define VSET1(f) _mm256_set1_ps(f)
#define VLOADH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VHSUM(v) hsum256(v)
#define VHSUM4(a, out) hsum4_256((a)[0], (a)[1], (a)[2], (a)[3], out)

F16_TARGET static inline float hsum256(__m256 s) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

/* Four lane sums at once: pairwise adds within 128-bit halves bring lanes
 * 0-3 of a0..a3 into the low half and lanes 4-7 into the high one. */
F16_TARGET static inline void hsum4_256(__m256 a0, __m256 a1, __m256 a2, __m256 a3, float *out) {
  __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

#include "kernels_f16_tiles.h"

#undef F16_TARGET
#undef F16_NAME
#undef VF
#undef VW
#undef TR
#undef PR
#undef VZERO
#undef VLOADF
#undef VSTOREF
#undef VSET1
#undef VLOADH
#undef VFMA
#undef VHSUM
#undef VHSUM4

/* The AVX-512 kernels: 16 floats a vector (on CPUs with full-width 512-bit
 * units, such as the AMD Zen 5 of our benchmarks, twice the AVX2 kernels'
 * work per instruction; see kernels.h for the choice). */
#define F16_TARGET __attribute__((target("avx512f,avx2,fma,f16c")))
#define F16_NAME(name) name##_avx512
#define VF __m512
#define VW 16
#define TR 4 /* 16 accumulators of the 32 registers */
#define PR 8 /* 8 accumulators, 1 vector a panel row: 8 chains cover the FMA latency */
#define VZERO() _mm512_setzero_ps()
#define VLOADF(p) _mm512_loadu_ps(p)
#define VSTOREF(p, v) _mm512_storeu_ps(p, v)
#define VSET1(f) _mm512_set1_ps(f)
#define VLOADH(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VHSUM(v) hsum256(fold512(v))
#define VHSUM4(a, out) \
  hsum4_256(fold512((a)[0]), fold512((a)[1]), fold512((a)[2]), fold512((a)[3]), out)

/* The two 256-bit halves added. */
F16_TARGET static inline __m256 fold512(__m512 s) {
  return _mm256_add_ps(_mm512_castps512_ps256(s),
                       _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
}

#include "kernels_f16_tiles.h"

static int forced_width; /* 0: the widest this CPU has */

int kn_f16_set_width(int bits) {
  forced_width = bits == 256 ? 256 : 0;
  return kn_f16_width();
}

/* 1 when the AVX-512 kernels run (the CPU has them, and AVX2 is not forced). */
static int use_avx512(void) { return forced_width != 256 && __builtin_cpu_supports("avx512f"); }

int kn_f16_width(void) {
  if (!kn_f16_supported()) return 0;
  return use_avx512() ? 512 : 256;
}

void kn_gemv_f16(const uint16_t *W, const float *x, const float *b, float *y, int N, int K,
                 int accumulate) {
  if (use_avx512()) gemv_avx512(W, x, b, y, N, K, accumulate);
  else gemv_avx2(W, x, b, y, N, K, accumulate);
}

uint16_t *kn_f16_pack(const uint16_t *W, int N, int K) {
  if (kn_f16_width() == 0 || N <= 0 || K <= 0) return NULL;
  size_t panels = ((size_t)N + 15) / 16;
  uint16_t *P = NULL;
  if (posix_memalign((void **)&P, 64, panels * 16 * (size_t)K * sizeof *P)) return NULL;
  memset(P, 0, panels * 16 * (size_t)K * sizeof *P); /* the last panel's unused columns */
  for (size_t n = 0; n < (size_t)N; n++)
    for (size_t k = 0; k < (size_t)K; k++)
      P[(n / 16) * 16 * (size_t)K + k * 16 + n % 16] = W[n * (size_t)K + k];
  return P;
}

/* 1 on AMD family 19h with AVX-512 (Zen 4), whose cores run a 512-bit FMA
 * as two 256-bit halves: there sgemm gains nothing at AVX-512 over AVX2.
 * Read once: CPUID leaves the VM, which costs microseconds. */
static int half_rate_avx512(void) {
  static _Atomic int cached = -1;
  int v = atomic_load_explicit(&cached, memory_order_relaxed);
  if (v >= 0) return v;
  unsigned eax, ebx, ecx, edx;
  v = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) && ebx == signature_AMD_ebx &&
      ecx == signature_AMD_ecx && edx == signature_AMD_edx &&
      __get_cpuid(1, &eax, &ebx, &ecx, &edx))
    v = ((eax >> 8) & 0xf) + ((eax >> 20) & 0xff) == 0x19;
  atomic_store_explicit(&cached, v, memory_order_relaxed);
  return v;
}

/* The most rows the F16 products take over panels (tests/bench/encoder/
 * kernels.sh, one thread). At AVX-512 on Ice Lake sgemm on the F32 copy is
 * faster from 17 rows on (panels 79-90 GFLOP/s at 32-128 rows, sgemm
 * 100-145); on Zen 4 the panels stay ahead to 128 rows (113-117 against
 * 55-106), as they do at AVX2. */
static int panel_rows(void) {
  return use_avx512() && !half_rate_avx512() ? KN_F16_FEW_ROWS : KN_F16_PANEL_ROWS;
}

int kn_f16_panel_rows(void) { return kn_f16_supported() ? panel_rows() : 0; }

void kn_linear_f16(const float *x, int ldx, const uint16_t *W, const uint16_t *P, const float *b,
                   float *out, int ldo, int M, int N, int K) {
  int wide = use_avx512();
  if (P && M > 1) { /* over the panels; one row alone keeps to the row tiles */
    if (wide) linear_panels_avx512(x, ldx, P, b, out, ldo, M, N, K);
    else linear_panels_avx2(x, ldx, P, b, out, ldo, M, N, K);
  } else if (wide) {
    linear_avx512(x, ldx, W, b, out, ldo, M, N, K);
  } else {
    linear_avx2(x, ldx, W, b, out, ldo, M, N, K);
  }
}

#else

int kn_f16_supported(void) { return 0; }

int kn_f16_set_width(int bits) {
  (void)bits;
  return 0;
}

int kn_f16_width(void) { return 0; }

static int panel_rows(void) { return 0; }

int kn_f16_panel_rows(void) { return 0; }

uint16_t *kn_f16_pack(const uint16_t *W, int N, int K) {
  (void)W;
  (void)N;
  (void)K;
  return NULL;
}

void kn_linear_f16(const float *x, int ldx, const uint16_t *W, const uint16_t *P, const float *b,
                   float *out, int ldo, int M, int N, int K) {
  (void)x;
  (void)ldx;
  (void)W;
  (void)P;
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

/* Wh is given only where kn_f16_supported(), so panel_rows() need not ask
 * CPUID again (each read leaves the VM). */
void kn_linear_prefer_f16(const float *x, int ldx, const float *W, const uint16_t *Wh,
                          const uint16_t *Wp, const float *b, float *out, int ldo, int M, int N,
                          int K) {
  if (Wh && (M <= KN_F16_FEW_ROWS || (Wp && M <= panel_rows())))
    kn_linear_f16(x, ldx, Wh, Wp, b, out, ldo, M, N, K);
  else kn_linear(x, ldx, W, b, out, ldo, M, N, K);
}
