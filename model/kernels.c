/* kernels.c - numeric kernels for the encoder and decoder: BLAS wrappers,
 * bias/GELU, layer norm, softmax, one-head attention, L2 normalisation.
 *
 * Vectorisation: the element-wise loops are written branch-free (exp and erf
 * are polynomial approximations with relative error ~1e-7, well inside the
 * 1e-4 parity tolerance) and sums use 16 independent lanes so they vectorise
 * without -ffast-math. This file is compiled at O3 without trapping math (the
 * pragma below, which lets GCC if-convert the clamps), and the hot loops get
 * an AVX2+FMA clone chosen at run time (target_clones) next to the baseline
 * x86-64 one. Nothing here allocates or fails.
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=fast")
#endif

#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#ifdef RETRO_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#ifndef KN_ONEDNN_MIN_MACS
#define KN_ONEDNN_MIN_MACS 262144.0
#endif
#endif

/* not in sanitizer builds: the clones' resolvers run while the program is
 * loaded, before the sanitizer's runtime is up (TSan crashes in them) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define KN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KN_CLONES
#endif

/* The helpers of the cloned kernels: always inlined, since one the compiler
 * keeps out of line is compiled for the baseline (SSE2, no FMA), not for
 * its caller's clone. kn_attention_row was, and ran 4-wide without FMA
 * (docs/BENCHMARKS.md, decoder). */
#define KN_INLINE static inline __attribute__((always_inline))

#define KN_LANES 16
#ifndef KN_SMALL_M
#define KN_SMALL_M 16 /* rows up to which kn_linear uses its own kernel, not sgemm */
#endif

/* Threads of one product: kn_set_blas_threads's n, 0 until it is called
 * (then OpenMP's and OpenBLAS's defaults apply). */
static _Atomic int kn_gemm_threads;

void kn_set_blas_threads(int n) {
  if (n <= 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    n = c > 0 ? (int)c : 1;
  }
  openblas_set_num_threads(n);
  atomic_store_explicit(&kn_gemm_threads, n, memory_order_relaxed);
}

int kn_blas_threads(void) { return openblas_get_num_threads(); }

#ifdef RETRO_HAVE_ONEDNN
/* oneDNN's sgemm, on kn_gemm_threads OpenMP threads: its AVX-512 kernels
 * run 2.1x OpenBLAS 0.3.21's on this project's machine (AMD EPYC, whose
 * AVX-512 Debian's OpenBLAS does not use), single-threaded, on every shape
 * the encoder and decoder multiply (docs/BENCHMARKS.md). OpenMP's thread
 * count is per calling thread: it is set around the call and put back, so
 * FAISS's OpenMP loops on the same thread keep theirs. */
static int kn_gemm_onednn(int transa, int transb, int M, int N, int K, float alpha, const float *A,
                          int lda, const float *B, int ldb, float beta, float *C, int ldc) {
  int want = atomic_load_explicit(&kn_gemm_threads, memory_order_relaxed);
  int had = omp_get_max_threads();
  if (want > 0 && want != had) omp_set_num_threads(want);
  dnnl_status_t st = dnnl_sgemm(transa ? 'T' : 'N', transb ? 'T' : 'N', M, N, K, alpha, A, lda, B,
                                ldb, beta, C, ldc);
  if (want > 0 && want != had) omp_set_num_threads(had);
  return st == dnnl_success;
}
#endif

void kn_sgemm(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
  if (M <= 0 || N <= 0) return;
#ifdef RETRO_HAVE_ONEDNN
  /* below ~2^18 multiply-adds oneDNN's fixed cost per call (~5 us against
   * OpenBLAS's 1 us) outweighs its faster kernel */
  if ((double)M * N * K >= KN_ONEDNN_MIN_MACS &&
      kn_gemm_onednn(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
    return;
#endif
  cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans,
              M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

typedef float kn_v8 __attribute__((vector_size(32), aligned(4), may_alias));

/* Horizontal sum of one vector. */
KN_INLINE float kn_hsum8(const kn_v8 *p) { /* by pointer: no vector in the ABI */
  const float *v = (const float *)p;
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* One register tile of kn_linear_small: rows x[0..MR) against W rows
 * w[0..4), MR x 4 accumulators of 8 lanes (twelve of the sixteen AVX2
 * registers at MR = 3), each x and w vector loaded once per 8 columns: 12
 * FMAs per 7 loads, where one row of W against 8 rows of x (the previous
 * kernel) did 8 per 9 and was bound by loads. Writes the nb <= 4 first
 * columns of the MR output rows. */
KN_INLINE void kn_tile(const float *const *x, const float *const *w, int K, const float *b,
                       float *const *o, int nb, const int MR) {
  int K8 = K & ~7;
  kn_v8 acc[3][4] = {{{0}}};
  for (int k = 0; k < K8; k += 8) {
    kn_v8 xv[3];
    for (int r = 0; r < MR; r++) xv[r] = *(const kn_v8 *)(x[r] + k);
    for (int j = 0; j < 4; j++) {
      kn_v8 wv = *(const kn_v8 *)(w[j] + k);
      for (int r = 0; r < MR; r++) acc[r][j] += xv[r] * wv;
    }
  }
  for (int r = 0; r < MR; r++)
    for (int j = 0; j < nb; j++) {
      float s = kn_hsum8(&acc[r][j]);
      for (int k = K8; k < K; k++) s += x[r][k] * w[j][k];
      o[r][j] = s + (b ? b[j] : 0.0f);
    }
}

/* out (M, N) = x (M, K) @ W (N, K)^T + b for a few rows (M <= KN_SMALL_M):
 * register tiles of 3 rows of x by 4 rows of W (then 2 or 1 rows of x for
 * the rest, so no work is padded), without the packing copy that sgemm
 * makes of W on every call (which dominates at small M). W rows are taken in
 * groups of 32 so a group stays in L1/L2 across the row tiles: W is read from
 * memory once per call. */
KN_CLONES static void kn_linear_small(const float *x, int ldx, const float *W, const float *b,
                                      float *out, int ldo, int M, int N, int K) {
  for (int n0 = 0; n0 < N; n0 += 32) {
    int n1 = n0 + 32 < N ? n0 + 32 : N;
    for (int m0 = 0; m0 < M; m0 += 3) {
      int mr = M - m0 < 3 ? M - m0 : 3;
      const float *xr[3];
      for (int r = 0; r < 3; r++) xr[r] = x + (size_t)(m0 + (r < mr ? r : 0)) * (size_t)ldx;
      for (int n = n0; n < n1; n += 4) {
        int nb = n1 - n < 4 ? n1 - n : 4;
        const float *wr[4];
        for (int j = 0; j < 4; j++) wr[j] = W + (size_t)(n + (j < nb ? j : 0)) * (size_t)K;
        float *orow[3];
        for (int r = 0; r < 3; r++)
          orow[r] = out + (size_t)(m0 + (r < mr ? r : 0)) * (size_t)ldo + n;
        const float *bn = b ? b + n : NULL;
        if (mr == 3) kn_tile(xr, wr, K, bn, orow, nb, 3);
        else if (mr == 2) kn_tile(xr, wr, K, bn, orow, nb, 2);
        else kn_tile(xr, wr, K, bn, orow, nb, 1);
      }
    }
  }
}

void kn_linear(const float *x, int ldx, const float *W, const float *b, float *out, int ldo, int M,
               int N, int K) {
  /* x (M, K) ldx; W (N, K); b (N); out (M, N) ldo */
  if (M <= 0 || N <= 0) return;
  if (M <= KN_SMALL_M) {
    kn_linear_small(x, ldx, W, b, out, ldo, M, N, K);
    return;
  }
  if (b) {
    for (int i = 0; i < M; i++) {
      float *o = out + (size_t)i * (size_t)ldo;
      for (int j = 0; j < N; j++) o[j] = b[j];
    }
  }
  kn_sgemm(0, 1, M, N, K, 1.0f, x, ldx, W, K, b ? 1.0f : 0.0f, out, ldo);
}

KN_CLONES void kn_add(float *restrict y, const float *restrict x, size_t n) {
  for (size_t i = 0; i < n; i++) y[i] += x[i];
}

KN_CLONES void kn_add_bias(float *restrict x, const float *restrict b, int M, int N) {
  for (int i = 0; i < M; i++) {
    float *restrict r = x + (size_t)i * (size_t)N;
    for (int j = 0; j < N; j++) r[j] += b[j];
  }
}

/* e^x for x in about [-87, 88] (clamped), relative error ~2e-7. */
KN_INLINE float kn_exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round */
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;              /* x - n ln2 */
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union {
    int32_t i;
    float f;
  } u;
  /* shifted unsigned: a NaN x gives an n out of range, not a signed overflow */
  u.i = (int32_t)((uint32_t)((int32_t)n + 127) << 23);
  return p * u.f;
}

/* erf(x), Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7). */
KN_INLINE float kn_erf(float x) {
  float a = x < 0.0f ? -x : x;
  float t = 1.0f / (1.0f + 0.3275911f * a);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  float y = 1.0f - p * t * kn_exp(-a * a);
  return x < 0.0f ? -y : y;
}

KN_INLINE float kn_gelu1(float v) { return 0.5f * v * (1.0f + kn_erf(v * 0.70710678118654752f)); }

KN_CLONES void kn_gelu(float *restrict x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = kn_gelu1(x[i]);
}

KN_CLONES void kn_bias_gelu(float *restrict x, const float *restrict b, int M, int N) {
  /* x (M, N); b (N) or NULL */
  for (int i = 0; i < M; i++) {
    float *restrict r = x + (size_t)i * (size_t)N;
    if (b)
      for (int j = 0; j < N; j++) r[j] = kn_gelu1(r[j] + b[j]);
    else
      for (int j = 0; j < N; j++) r[j] = kn_gelu1(r[j]);
  }
}

/* sum of x (n) in KN_LANES partial sums (vectorises without reassociation). */
KN_INLINE float kn_sum(const float *restrict x, int n) {
  float acc[KN_LANES] = {0};
  int i = 0;
  for (; i + KN_LANES <= n; i += KN_LANES)
    for (int j = 0; j < KN_LANES; j++) acc[j] += x[i + j];
  float s = 0.0f;
  for (int j = 0; j < KN_LANES; j++) s += acc[j];
  for (; i < n; i++) s += x[i];
  return s;
}

/* sum of (x - m)^2 over x (n). */
KN_INLINE float kn_sumsq_dev(const float *restrict x, float m, int n) {
  float acc[KN_LANES] = {0};
  int i = 0;
  for (; i + KN_LANES <= n; i += KN_LANES)
    for (int j = 0; j < KN_LANES; j++) {
      float d = x[i + j] - m;
      acc[j] += d * d;
    }
  float s = 0.0f;
  for (int j = 0; j < KN_LANES; j++) s += acc[j];
  for (; i < n; i++) s += (x[i] - m) * (x[i] - m);
  return s;
}

KN_INLINE void kn_norm_row(float *restrict o, const float *restrict x, const float *restrict g,
                           const float *restrict b, int N, float eps) {
  float mean = kn_sum(x, N) / (float)N;
  float var = kn_sumsq_dev(x, mean, N) / (float)N;
  float inv = 1.0f / sqrtf(var + eps);
  for (int j = 0; j < N; j++) o[j] = (x[j] - mean) * inv * g[j] + b[j];
}

KN_CLONES void kn_layernorm(float *out, const float *x, const float *g, const float *b, int M,
                            int N, float eps) {
  /* x, out (M, N); g, b (N) */
  for (int i = 0; i < M; i++) {
    const float *xr = x + (size_t)i * (size_t)N;
    float *o = out + (size_t)i * (size_t)N;
    if (o == xr) {
      float mean = kn_sum(xr, N) / (float)N;
      float var = kn_sumsq_dev(xr, mean, N) / (float)N;
      float inv = 1.0f / sqrtf(var + eps);
      for (int j = 0; j < N; j++) o[j] = (o[j] - mean) * inv * g[j] + b[j];
    } else {
      kn_norm_row(o, xr, g, b, N, eps);
    }
  }
}

KN_CLONES void kn_add_layernorm(float *x, const float *r, int ldr, const float *g, const float *b,
                                int M, int N, float eps) {
  /* x (M, N); r (M, N) row stride ldr; g, b (N) */
  for (int i = 0; i < M; i++) {
    float *restrict xr = x + (size_t)i * (size_t)N;
    const float *restrict rr = r + (size_t)i * (size_t)ldr;
    for (int j = 0; j < N; j++) xr[j] += rr[j];
    float mean = kn_sum(xr, N) / (float)N;
    float var = kn_sumsq_dev(xr, mean, N) / (float)N;
    float inv = 1.0f / sqrtf(var + eps);
    for (int j = 0; j < N; j++) xr[j] = (xr[j] - mean) * inv * g[j] + b[j];
  }
}

/* softmax over x[0..n) in place; x[n..N) set to 0. */
KN_INLINE void kn_softmax_row(float *restrict x, int n, int N) {
  if (n > 0) {
    float mx[KN_LANES];
    for (int j = 0; j < KN_LANES; j++) mx[j] = x[0];
    int i = 0;
    for (; i + KN_LANES <= n; i += KN_LANES)
      for (int j = 0; j < KN_LANES; j++) mx[j] = x[i + j] > mx[j] ? x[i + j] : mx[j];
    float m = x[0];
    for (int j = 0; j < KN_LANES; j++) m = mx[j] > m ? mx[j] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int k = 0; k < n; k++) x[k] = kn_exp(x[k] - m);
    float inv = 1.0f / kn_sum(x, n);
    for (int k = 0; k < n; k++) x[k] *= inv;
  }
  for (int k = n < 0 ? 0 : n; k < N; k++) x[k] = 0.0f;
}

KN_CLONES void kn_softmax_rows(float *x, int ld, int M, int N, const int *n_valid) {
  /* x (M, N) row stride ld */
  for (int i = 0; i < M; i++) {
    int n = n_valid ? n_valid[i] : N;
    kn_softmax_row(x + (size_t)i * (size_t)ld, n > N ? N : n, N);
  }
}

/* Attention of one query row (the decoder's one-token step) over n keys:
 * dot products with the key rows, softmax, and the weighted sum of the
 * value rows, read in place. Through sgemm the same work made OpenBLAS
 * pack (copy) every key and value row on each call. */
KN_INLINE void kn_attention_row(const float *q, const float *k, int ldk, const float *v, int ldv,
                                float *out, int n, int dh, float scale, float *scores) {
  int j = 0;
  if (dh % 8 == 0) /* eight keys at a time: eight independent chains */
    for (; j + 8 <= n; j += 8) {
      kn_v8 acc[8] = {{0}};
      for (int d = 0; d < dh; d += 8) {
        kn_v8 qv = *(const kn_v8 *)(q + d);
        for (int i = 0; i < 8; i++)
          acc[i] += qv * *(const kn_v8 *)(k + (size_t)(j + i) * (size_t)ldk + d);
      }
      for (int i = 0; i < 8; i++) scores[j + i] = scale * kn_hsum8(&acc[i]);
    }
  for (; j < n; j++) {
    const float *kr = k + (size_t)j * (size_t)ldk;
    float acc[KN_LANES] = {0}, s = 0.0f;
    int d = 0;
    for (; d + KN_LANES <= dh; d += KN_LANES)
      for (int i = 0; i < KN_LANES; i++) acc[i] += q[d + i] * kr[d + i];
    for (; d < dh; d++) s += q[d] * kr[d];
    for (int i = 0; i < KN_LANES; i++) s += acc[i];
    scores[j] = scale * s;
  }
  kn_softmax_row(scores, n, n);
  /* the weighted sum, 64 columns at a time in registers (a sum kept in out
   * made every key wait for its store); each column's sum in key order */
  int d0 = 0;
  if (dh % 8 == 0)
    for (; d0 + 64 <= dh; d0 += 64) {
      kn_v8 acc[8] = {{0}};
      for (int j = 0; j < n; j++) {
        const float *vr = v + (size_t)j * (size_t)ldv + d0;
        for (int i = 0; i < 8; i++) acc[i] += scores[j] * *(const kn_v8 *)(vr + 8 * i);
      }
      for (int i = 0; i < 8; i++) *(kn_v8 *)(out + d0 + 8 * i) = acc[i];
    }
  for (int d = d0; d < dh; d++) out[d] = 0.0f;
  for (int j = 0; d0 < dh && j < n; j++) {
    const float *vr = v + (size_t)j * (size_t)ldv;
    const float p = scores[j];
    for (int d = d0; d < dh; d++) out[d] += p * vr[d];
  }
}

KN_CLONES void kn_attention_head(const float *q, int ldq, const float *k, int ldk, const float *v,
                                 int ldv, float *out, int ldo, int Tq, int Tk, int tk_valid, int dh,
                                 float scale, int causal, float *scores) {
  /* q (Tq, dh) ldq; k, v (Tk, dh) ldk/ldv; out (Tq, dh) ldo; scores (Tq, Tk) */
  if (Tq <= 0) return;
  if (tk_valid > Tk) tk_valid = Tk;
  if (tk_valid < 0) tk_valid = 0;
  int n = tk_valid; /* only the valid keys take part in the products */
  if (n == 0) {
    for (int i = 0; i < Tq; i++)
      for (int j = 0; j < dh; j++) out[(size_t)i * (size_t)ldo + j] = 0.0f;
    return;
  }
  if (Tq == 1) { /* causal or not, a lone query sees every valid key */
    kn_attention_row(q, k, ldk, v, ldv, out, n, dh, scale, scores);
    return;
  }
  kn_sgemm(0, 1, Tq, n, dh, scale, q, ldq, k, ldk, 0.0f, scores, n);
  for (int i = 0; i < Tq; i++) {
    int valid = n;
    if (causal) {
      valid = i + 1 + (n - Tq);
      valid = valid < 0 ? 0 : (valid > n ? n : valid);
    }
    kn_softmax_row(scores + (size_t)i * (size_t)n, valid, n);
  }
  kn_sgemm(0, 0, Tq, dh, n, 1.0f, scores, n, v, ldv, 0.0f, out, ldo);
}

KN_CLONES double kn_exp_sum(const float *x, int n, float shift, float scale, float *out) {
  enum { BLOCK = 64 }; /* terms summed in float before the double total */
  float buf[BLOCK];
  double total = 0.0;
  for (int i0 = 0; i0 < n; i0 += BLOCK) {
    const int b = n - i0 < BLOCK ? n - i0 : BLOCK;
    float *o = out ? out + i0 : buf;
    for (int i = 0; i < b; i++) {
      const float t = (x[i0 + i] - shift) * scale;
      o[i] = t < -87.0f ? 0.0f : kn_exp(t);
    }
    total += kn_sum(o, b);
  }
  return total;
}

KN_CLONES void kn_l2_normalize(float *x, size_t n) {
  float acc[KN_LANES] = {0};
  size_t i = 0;
  for (; i + KN_LANES <= n; i += KN_LANES)
    for (int j = 0; j < KN_LANES; j++) acc[j] += x[i + j] * x[i + j];
  float s = 0.0f;
  for (int j = 0; j < KN_LANES; j++) s += acc[j];
  for (; i < n; i++) s += x[i] * x[i];
  float norm = sqrtf(s);
  float inv = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
  for (i = 0; i < n; i++) x[i] *= inv;
}
