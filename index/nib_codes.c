/* nib_codes.c - 4-bit codes of float rows (see nib_codes.h).
 *
 * Layout: a row's levels take dp / 2 bytes (dp = d rounded up to 128), in
 * blocks of 64 dimensions: byte t of block b holds dimension 64 b + t in its
 * low nibble and 64 b + 32 + t in its high one, so a kernel splits a load
 * into two vectors of levels with one mask and one shift, each lined up
 * with 32 consecutive query values. Levels are unsigned (0..15) and the
 * query signed int8 (-127..127): what vpmaddubsw (AVX2) and vpdpbusd
 * (AVX-512 VNNI) multiply.
 */
#include "nib_codes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct nib_codes {
  size_t d, dp;     /* dimensions, and rounded up to 128 */
  size_t rows, cap; /* rows held, rows allocated */
  size_t wild;      /* rows without codes */
  uint8_t *levels;  /* (cap, dp / 2) */
  float *lo, *step; /* (cap): row value ~= lo + step * level; step < 0: wild */
  float *norm2;     /* (cap): ||x||^2 of the appended row */
};

enum { BLOCK = 128 };

/* Rounds to the nearest integer, halves away from zero; inlined (libm's
 * nearbyintf is a call without SSE4.1), and how ties go does not matter
 * to approximate scores. */
static inline float round_near(float v) { return (float)(int32_t)(v + (v < 0 ? -0.5f : 0.5f)); }

size_t nib_query_len(size_t d) { return (d + BLOCK - 1) / BLOCK * BLOCK; }

void nib_query_make(const float *q, size_t d, int8_t *qi, nib_query *out) {
  float qmax = 0, sum = 0, n2 = 0;
  for (size_t j = 0; j < d; j++) {
    float a = fabsf(q[j]);
    qmax = a > qmax ? a : qmax;
    sum += q[j];
    n2 += q[j] * q[j];
  }
  memset(qi, 0, nib_query_len(d));
  if (!isfinite(qmax) || !isfinite(sum) || !isfinite(n2) || qmax == 0) {
    *out = (nib_query){qi, 0, isfinite(sum) ? sum : 0, 0};
    return;
  }
  float inv = 127.0f / qmax;
  for (size_t j = 0; j < d; j++) {
    float v = round_near(q[j] * inv);
    qi[j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
  }
  *out = (nib_query){qi, qmax / 127.0f, sum, sqrtf(n2)};
}

proto_status nib_codes_new(size_t d, nib_codes **out) {
  *out = NULL;
  if (d == 0) return proto_fail(PROTO_EINVAL, "nib_codes_new: dimension 0");
  nib_codes *c = calloc(1, sizeof *c);
  if (!c) return proto_fail(PROTO_ENOMEM, "out of memory");
  c->d = d;
  c->dp = nib_query_len(d);
  *out = c;
  return PROTO_OK;
}

void nib_codes_free(nib_codes *c) {
  if (!c) return;
  free(c->levels);
  free(c->lo);
  free(c->step);
  free(c->norm2);
  free(c);
}

void nib_codes_clear(nib_codes *c) {
  if (c) c->rows = c->wild = 0;
}

size_t nib_codes_rows(const nib_codes *c) { return c ? c->rows : 0; }
size_t nib_codes_wild(const nib_codes *c) { return c ? c->wild : 0; }
const float *nib_codes_norm2(const nib_codes *c) { return c->norm2; }

static int reserve(nib_codes *c, size_t rows) {
  if (rows <= c->cap) return 0;
  size_t cap = c->cap ? c->cap : 64;
  while (cap < rows) cap *= 2;
  uint8_t *levels = realloc(c->levels, cap * (c->dp / 2));
  if (levels) c->levels = levels;
  float *lo = realloc(c->lo, cap * sizeof *lo);
  if (lo) c->lo = lo;
  float *step = realloc(c->step, cap * sizeof *step);
  if (step) c->step = step;
  float *norm2 = realloc(c->norm2, cap * sizeof *norm2);
  if (norm2) c->norm2 = norm2;
  if (!levels || !lo || !step || !norm2) return -1;
  c->cap = cap;
  return 0;
}

/* The levels of one row; 0 when it has a value that is not finite. */
static int code_row(const nib_codes *c, const float *x, const float *centre, uint8_t *levels,
                    float *lo_out, float *step_out, float *norm2_out) {
  const size_t d = c->d;
  float lo = INFINITY, hi = -INFINITY;
  double n2 = 0;
  for (size_t j = 0; j < d; j++) {
    float r = centre ? x[j] - centre[j] : x[j];
    lo = r < lo ? r : lo;
    hi = r > hi ? r : hi;
    n2 += (double)x[j] * x[j];
  }
  memset(levels, 0, c->dp / 2);
  float step = (hi - lo) / 15;
  if (!isfinite(lo) || !isfinite(hi) || !isfinite(step) || !isfinite((float)n2)) return 0;
  float inv = step > 0 ? 1 / step : 0;
  for (size_t j = 0; j < d; j++) {
    float r = centre ? x[j] - centre[j] : x[j];
    float v = round_near((r - lo) * inv);
    uint8_t level = (uint8_t)(v > 15 ? 15 : v < 0 ? 0 : v);
    size_t b = j / 64, t = j % 64;
    levels[b * 32 + t % 32] |= (uint8_t)(t < 32 ? level : level << 4);
  }
  *lo_out = lo;
  *step_out = step;
  *norm2_out = (float)n2;
  return 1;
}

proto_status nib_codes_append(nib_codes *c, const float *x, size_t n, const float *centre) {
  if (reserve(c, c->rows + n) != 0) return proto_fail(PROTO_ENOMEM, "out of memory");
  const size_t row_bytes = c->dp / 2;
  for (size_t i = 0; i < n; i++) {
    size_t r = c->rows + i;
    if (!code_row(c, x + i * c->d, centre, c->levels + r * row_bytes, &c->lo[r], &c->step[r],
                  &c->norm2[r])) {
      c->lo[r] = c->norm2[r] = 0;
      c->step[r] = -1; /* marks the row wild */
      c->wild++;
    }
  }
  c->rows += n;
  return PROTO_OK;
}

/* dot[i] = sum of level * qi over the row's dp dimensions, rows r < n. */
static void dots_plain(const uint8_t *levels, size_t n, size_t dp, const int8_t *qi, int32_t *dot) {
  for (size_t r = 0; r < n; r++) {
    const uint8_t *row = levels + r * (dp / 2);
    int32_t s = 0;
    for (size_t b = 0; b < dp / 64; b++)
      for (size_t t = 0; t < 32; t++) {
        uint8_t v = row[b * 32 + t];
        s += (v & 15) * qi[b * 64 + t] + (v >> 4) * qi[b * 64 + 32 + t];
      }
    dot[r] = s;
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
#include "code_simd.h"
#define HAVE_NIB_SIMD 1

/* Eight rows at a time, 64 dimensions (32 bytes) a step: each product
 * pair fits 16 bits (2 * 15 * 127), widened to 32 by vpmaddwd. */
__attribute__((target("avx2"))) static void dots_avx2(const uint8_t *levels, size_t n, size_t dp,
                                                      const int8_t *qi, int32_t *dot) {
  const __m256i mask = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  const size_t row_bytes = dp / 2;
  size_t r = 0;
  for (; r + 8 <= n; r += 8) {
    __m256i acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_si256();
    for (size_t b = 0; b < dp / 64; b++) {
      __m256i ql = _mm256_loadu_si256((const __m256i *)(qi + b * 64));
      __m256i qh = _mm256_loadu_si256((const __m256i *)(qi + b * 64 + 32));
      for (int i = 0; i < 8; i++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(levels + (r + i) * row_bytes + b * 32));
        __m256i lo = _mm256_and_si256(v, mask);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
        __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, ql), _mm256_maddubs_epi16(hi, qh));
        acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(p, ones));
      }
    }
    _mm256_storeu_si256((__m256i *)(dot + r), sum8x8_epi32(acc));
  }
  dots_plain(levels + r * row_bytes, n - r, dp, qi, dot + r);
}

/* The same with AVX-512 VNNI: 128 dimensions (64 bytes) a step, levels
 * times query summed straight into 32-bit lanes (vpdpbusd). */
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) static void dots_vnni(
    const uint8_t *levels, size_t n, size_t dp, const int8_t *qi, int32_t *dot) {
  const __m512i mask = _mm512_set1_epi8(15);
  const size_t row_bytes = dp / 2;
  size_t r = 0;
  for (; r + 8 <= n; r += 8) {
    __m512i acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm512_setzero_si512();
    for (size_t b = 0; b < dp / 128; b++) {
      const int8_t *qb = qi + b * 128; /* two 64-dimension blocks */
      __m512i ql = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const void *)qb)),
                                      _mm256_loadu_si256((const void *)(qb + 64)), 1);
      __m512i qh =
          _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const void *)(qb + 32))),
                             _mm256_loadu_si256((const void *)(qb + 96)), 1);
      for (int i = 0; i < 8; i++) {
        __m512i v = _mm512_loadu_si512((const void *)(levels + (r + i) * row_bytes + b * 64));
        acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_and_si512(v, mask), ql);
        acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_and_si512(_mm512_srli_epi16(v, 4), mask), qh);
      }
    }
    __m256i half[8];
    for (int i = 0; i < 8; i++)
      half[i] =
          _mm256_add_epi32(_mm512_castsi512_si256(acc[i]), _mm512_extracti64x4_epi64(acc[i], 1));
    _mm256_storeu_si256((__m256i *)(dot + r), sum8x8_epi32(half));
  }
  dots_plain(levels + r * row_bytes, n - r, dp, qi, dot + r);
}
#endif

static unsigned forced_width = 512;

/* The widest kernel the CPU has, up to forced_width: 512, 256 or 0. */
static unsigned width_in_force(void) {
#ifdef HAVE_NIB_SIMD
  return code_kernel_width(forced_width);
#else
  return 0;
#endif
}

unsigned nib_codes_set_width(unsigned bits) {
  forced_width = bits;
  return width_in_force();
}

static void dots(const nib_codes *c, size_t r0, size_t n, const int8_t *qi, int32_t *dot) {
  const uint8_t *levels = c->levels + r0 * (c->dp / 2);
  switch (width_in_force()) {
#ifdef HAVE_NIB_SIMD
    case 512:
      dots_vnni(levels, n, c->dp, qi, dot);
      return;
    case 256:
      dots_avx2(levels, n, c->dp, qi, dot);
      return;
#endif
    default:
      dots_plain(levels, n, c->dp, qi, dot);
  }
}

void nib_codes_scores(const nib_codes *c, const nib_query *q, size_t r0, size_t n, float base,
                      int l2, float *out, float *spread) {
  enum { CHUNK = 256 };
  int32_t dot[CHUNK];
  /* in locals: out may alias *q as far as the compiler knows */
  const float qsum = q->sum, qstep = q->step, qnorm = l2 ? 2 * q->norm : q->norm;
  for (size_t s = 0; s < n; s += CHUNK) {
    size_t m = n - s < CHUNK ? n - s : CHUNK;
    dots(c, r0 + s, m, q->qi, dot);
    const float *lo = c->lo + r0 + s, *step = c->step + r0 + s, *norm2 = c->norm2 + r0 + s;
    float *o = out + s;
    if (l2)
      for (size_t i = 0; i < m; i++)
        o[i] = 2 * (base + lo[i] * qsum + step[i] * qstep * (float)dot[i]) - norm2[i];
    else
      for (size_t i = 0; i < m; i++) o[i] = base + lo[i] * qsum + step[i] * qstep * (float)dot[i];
    if (spread)
      for (size_t i = 0; i < m; i++) spread[s + i] = step[i] * qnorm;
    if (c->wild)
      for (size_t i = 0; i < m; i++)
        if (step[i] < 0) out[s + i] = INFINITY;
  }
}
