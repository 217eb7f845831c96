/* kernels.h - the numeric building blocks of the encoder and the decoder
 * (private to model/). Matrix products go through oneDNN's sgemm when the
 * build found it (kernels.c says when), else OpenBLAS's; everything else
 * is plain loops over named shapes written so that the compiler vectorises
 * them. No allocation, no errors: callers pass
 * sizes they have checked and buffers of the documented shapes. All
 * matrices are row-major float32. Functions are reentrant (safe on many
 * threads at once on disjoint outputs).
 */
#ifndef RETRO_KERNELS_H
#define RETRO_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Threads of one matrix product, for the calling process (OpenBLAS's, and
 * the OpenMP threads oneDNN's sgemm runs on); n <= 0 means the number of
 * CPUs. kn_blas_threads() reads OpenBLAS's current value. */
void kn_set_blas_threads(int n);
int kn_blas_threads(void);

/* Tile t of `tiles` splitting N output columns for a thread pool: columns
 * [*c0, *c1), in blocks of 16 (the last tile ends at N); *c1 <= *c0 when the
 * tile is empty. The encoder's and the decoder's column splits. */
static inline void kn_tile_cols(int N, int tiles, int t, int *c0, int *c1) {
  int nb = (N + 15) / 16;
  *c0 = 16 * (int)((long long)nb * t / tiles);
  *c1 = 16 * (int)((long long)nb * (t + 1) / tiles);
  if (*c1 > N) *c1 = N;
}

/* C (M, N) = alpha * op(A) @ op(B) + beta * C, row-major, leading dimensions
 * given. transa/transb: 0 = as stored, 1 = transposed. */
void kn_sgemm(int transa, int transb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);

/* PyTorch Linear: out (M, N) = x (M, K) @ W^T + b, where W is (N, K) as
 * stored by nn.Linear and b (N) may be NULL. ldx/ldo: row strides of x/out
 * (pass K and N for dense). M <= 16 uses a dot-product kernel that streams W
 * once (sgemm's packing copy of W costs more than the product there); larger
 * M calls kn_sgemm. */
void kn_linear(const float *x, int ldx, const float *W, const float *b, float *out, int ldo, int M,
               int N, int K);

/* y (n) += x (n). */
void kn_add(float *y, const float *x, size_t n);
/* x (M, N) += b (N) on every row. */
void kn_add_bias(float *x, const float *b, int M, int N);
/* Exact GELU (erf form, as torch.nn.functional.gelu default) in place. */
void kn_gelu(float *x, size_t n);
/* x (M, N) = gelu(x + b), b (N) may be NULL. Fused, one pass. */
void kn_bias_gelu(float *x, const float *b, int M, int N);
/* out (M, N) = LayerNorm(x) * g + b over each row (biased variance, eps
 * inside the sqrt, as torch). out may equal x. */
void kn_layernorm(float *out, const float *x, const float *g, const float *b, int M, int N,
                  float eps);
/* x (M, N) = LayerNorm(x + r) * g + b: residual add fused with the norm.
 * r (M, N) with row stride ldr. */
void kn_add_layernorm(float *x, const float *r, int ldr, const float *g, const float *b, int M,
                      int N, float eps);
/* Row-wise softmax in place on x (M, N) with row stride ld; only the first
 * n_valid[i] = (n_valid ? n_valid[i] : N) entries of row i are used, the
 * rest are set to 0. Max-subtracted, as torch. */
void kn_softmax_rows(float *x, int ld, int M, int N, const int *n_valid);

/* One attention head, scaled dot product:
 *   out (Tq, dh) = softmax(q (Tq, dh) @ k (Tk, dh)^T * scale [+ mask]) @ v (Tk, dh)
 * with row strides ldq, ldk, ldv, ldo (so heads can be column slices of a
 * fused QKV buffer). Only the first tk_valid keys are attended (padding
 * beyond them is ignored: same result as an additive -inf mask).
 * causal != 0: query i sees keys j <= i + (tk_valid - Tq) (queries are the
 * last Tq positions; use with a KV cache). scores: scratch of Tq * Tk floats. */
void kn_attention_head(const float *q, int ldq, const float *k, int ldk, const float *v, int ldv,
                       float *out, int ldo, int Tq, int Tk, int tk_valid, int dh, float scale,
                       int causal, float *scores);

/* x (n) /= max(||x||_2, 1e-12) (torch.nn.functional.normalize). */
void kn_l2_normalize(float *x, size_t n);

/* out[i] = e^((x[i] - shift) * scale) for i < n, 0 where that exponent is
 * below -87 (e^-87 ~ 1.6e-38), and their sum in double; out may be NULL
 * (the sum only). Relative error ~2e-7 a term; exponents above 88 are
 * clamped, so the caller keeps them at most 0 (shift the largest x). For
 * the sampler's softmax over the vocabulary: libm's exp in double took
 * ~45 us for 8192 logits, a twentieth of a token. */
double kn_exp_sum(const float *x, int n, float shift, float scale, float *out);

/* Products over F16 weights with F32 arithmetic (kernels_f16.c). Used by the
 * decoder's one-token path and the encoder's short inputs when the weights
 * file is F16: the same weight values as the F32 copy, half the memory
 * traffic. x86-64 with AVX2+FMA+F16C only (and AVX-512 where the CPU has
 * it); elsewhere kn_f16_supported() is 0 and callers use the F32 path. */

/* 1 when this CPU can run kn_gemv_f16 and kn_linear_f16. */
int kn_f16_supported(void);

/* The vector width, in bits, the F16 products run at: 512 (AVX-512) where
 * the CPU has it, else 256 (AVX2); 0 where kn_f16_supported() is 0. The
 * widths sum in different orders, so results differ in the last bits.
 * kn_f16_set_width(256) keeps them at AVX2 (any other value: the widest
 * again), for tests and benchmarks; call it before any product runs.
 * Returns the width now in use. */
int kn_f16_width(void);
int kn_f16_set_width(int bits);

/* y (N) = W (N, K; IEEE half, row-major) @ x (K) + b (N; may be NULL),
 * or y += ... when accumulate is non-zero. Rows are independent. */
void kn_gemv_f16(const uint16_t *W, const float *x, const float *b, float *y, int N, int K,
                 int accumulate);

/* W (N, K; IEEE half) rearranged for kn_linear_f16: panels of 16 rows of
 * W, each stored column by column ([N/16][K][16], the last panel padded
 * with zeros), so that the columns [n0, n0 + 16j) of the product start at
 * P + n0 * K as they do in W. The same layout serves both widths.
 * Allocated (free() it); NULL where kn_f16_supported() is 0 or out of
 * memory, and the product then reads W. */
uint16_t *kn_f16_pack(const uint16_t *W, int N, int K);

/* out (M, N; row stride ldo) = x (M, K; row stride ldx) @ W (N, K; IEEE
 * half)^T + b (N; may be NULL) for a few rows (any M, meant for M <=
 * KN_F16_FEW_ROWS, or KN_F16_PANEL_ROWS over panels; beyond, sgemm on the
 * F32 copy is as fast or faster). P: W as
 * kn_f16_pack made it, or NULL. With P and M > 1: tiles of up to 6 (AVX2)
 * or 8 (AVX-512) rows of x by a panel; else tiles of 4 rows of W by 3
 * rows of x (AVX2) or 4 (AVX-512). */
enum { KN_F16_FEW_ROWS = 16, KN_F16_PANEL_ROWS = 64 };
void kn_linear_f16(const float *x, int ldx, const uint16_t *W, const uint16_t *P, const float *b,
                   float *out, int ldo, int M, int N, int K);

/* The most rows kn_linear_prefer_f16 takes over panels on this CPU at the
 * width in use: KN_F16_PANEL_ROWS at AVX2 (there a whole 64-token input
 * took 0.71-0.78 of the time it took with sgemm on the F32 copy, 128
 * tokens about the same) and on AMD Zen 4, whose 512-bit FMAs run at half
 * rate; KN_F16_FEW_ROWS at AVX-512 elsewhere (sgemm is the faster from 17
 * rows on); 0 where kn_f16_supported() is 0. */
int kn_f16_panel_rows(void);

/* out = x @ W^T + b (as kn_linear) over Wh, the same weights as F16 (Wp:
 * as panels, or NULL), for short inputs: when Wh is given and M <=
 * KN_F16_FEW_ROWS, or Wp is given and M <= kn_f16_panel_rows(); else
 * kn_linear over W. Wh only where kn_f16_supported(). */
void kn_linear_prefer_f16(const float *x, int ldx, const float *W, const uint16_t *Wh,
                          const uint16_t *Wp, const float *b, float *out, int ldo, int M, int N,
                          int K);

#endif
