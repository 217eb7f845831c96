/* retro_f16.h - matrix-vector products over F16 weights with F32 arithmetic
 * (private to model/retro*.c). Used by the decoder's one-token path when the
 * weights file is F16: the same weight values as the F32 copy, half the
 * memory traffic. x86-64 with AVX2+FMA+F16C only; elsewhere
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

#endif
