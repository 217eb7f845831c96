/* retro_f16.h - products over F16 weights with F32 arithmetic (private to
 * model/). Used by the decoder's one-token path and the encoder's short
 * inputs when the weights file is F16: the same weight values as the F32
 * copy, half the memory traffic. x86-64 with AVX2+FMA+F16C only; elsewhere
 * retro_f16_supported() is 0 and callers use the F32 path. */
#ifndef RETRO_RETRO_F16_H
#define RETRO_RETRO_F16_H

#include <stdint.h>

/* 1 when this CPU can run retro_gemv_f16. */
int retro_f16_supported(void);

/* y (N) = W (N, K; IEEE half, row-major) @ x (K) + b (N; may be NULL),
 * or y += ... when accumulate is non-zero. Rows are independent. */
void retro_gemv_f16(const uint16_t *W, const float *x, const float *b, float *y, int N, int K,
                    int accumulate);

/* out (M, N; row stride ldo) = x (M, K; row stride ldx) @ W (N, K; IEEE
 * half)^T + b (N; may be NULL) for a few rows (any M, meant for M <=
 * RETRO_F16_FEW_ROWS; beyond, sgemm on the F32 copy is faster): tiles of 3
 * rows of x by 4 rows of W. Used by the encoder (bert.c) for short inputs. */
enum { RETRO_F16_FEW_ROWS = 16 };
void retro_linear_f16(const float *x, int ldx, const uint16_t *W, const float *b, float *out,
                      int ldo, int M, int N, int K);

/* out = x @ W^T + b (as kn_linear) over Wh, the same weights as F16, when
 * Wh is given and M <= RETRO_F16_FEW_ROWS (short inputs are bound by reading
 * the weights); else kn_linear over W. Wh only where retro_f16_supported(). */
void retro_linear_prefer_f16(const float *x, int ldx, const float *W, const uint16_t *Wh,
                             const float *b, float *out, int ldo, int M, int N, int K);

#endif
