/* kernels_f16_tiles.h - the F16-weight kernels of kernels_f16.c for one
 * vector width. kernels_f16.c includes it once per width, having defined:
 *   F16_TARGET      the functions' target attribute
 *   F16_NAME(name)  a function's name for this width
 *   VF, VW          the float vector type and its lanes
 *   TR              rows of x a tile multiplies (with 4 rows of W)
 *   PR              rows of x a tile multiplies over a panel (6 or 8)
 *   VZERO()         a zero vector
 *   VLOADF(p)       VW floats from p
 *   VSTOREF(p, v)   v to VW floats at p
 *   VSET1(f)        f in every lane
 *   VLOADH(p)       VW halves from p, expanded to floats
 *   VFMA(a, b, c)   a * b + c, fused
 *   VHSUM(v)        the sum of v's lanes, as a float
 *   VHSUM4(a, out)  out[j] = the sum of a[j]'s lanes, j < 4
 * and F16_UNROLL(n), a pragma that unrolls the loop after it n times.
 * Sums run over k in steps of VW with F32 accumulators, then the lanes,
 * then the columns past the last multiple of VW one by one. */

F16_TARGET static float F16_NAME(row_dot)(const uint16_t *w, const float *x, int K) {
  VF a0 = VZERO(), a1 = VZERO(), a2 = VZERO(), a3 = VZERO();
  int k = 0;
  for (; k + 4 * VW <= K; k += 4 * VW) {
    a0 = VFMA(VLOADH(w + k), VLOADF(x + k), a0);
    a1 = VFMA(VLOADH(w + k + VW), VLOADF(x + k + VW), a1);
    a2 = VFMA(VLOADH(w + k + 2 * VW), VLOADF(x + k + 2 * VW), a2);
    a3 = VFMA(VLOADH(w + k + 3 * VW), VLOADF(x + k + 3 * VW), a3);
  }
  for (; k + VW <= K; k += VW) a0 = VFMA(VLOADH(w + k), VLOADF(x + k), a0);
  float acc = VHSUM((a0 + a1) + (a2 + a3));
  for (; k < K; k++) acc += _cvtsh_ss(w[k]) * x[k];
  return acc;
}

F16_TARGET static void F16_NAME(gemv)(const uint16_t *W, const float *x, const float *b, float *y,
                                      int N, int K, int accumulate) {
  for (int n = 0; n < N; n++) {
    float v = F16_NAME(row_dot)(W + (size_t)n * (size_t)K, x, K) + (b ? b[n] : 0.0f);
    y[n] = accumulate ? y[n] + v : v;
  }
}

/* acc[r][j] = x[r] . w[j] over K for TR rows of x and 4 rows of W: 4 TR
 * accumulators, each W vector expanded from F16 once for TR FMAs. */
F16_TARGET static void F16_NAME(tile)(const float *const *x, const uint16_t *const *w, int K,
                                      float acc[TR][4]) {
  VF a[TR][4]; /* the loops over r and j unrolled: the accumulators are registers */
  F16_UNROLL(TR)
  for (int r = 0; r < TR; r++) F16_UNROLL(4) for (int j = 0; j < 4; j++) a[r][j] = VZERO();
  int k = 0;
  for (; k + VW <= K; k += VW) {
    VF xv[TR];
    F16_UNROLL(TR) for (int r = 0; r < TR; r++) xv[r] = VLOADF(x[r] + k);
    F16_UNROLL(4) for (int j = 0; j < 4; j++) {
      VF wv = VLOADH(w[j] + k);
      F16_UNROLL(TR) for (int r = 0; r < TR; r++) a[r][j] = VFMA(xv[r], wv, a[r][j]);
    }
  }
  F16_UNROLL(TR) for (int r = 0; r < TR; r++) {
    VHSUM4(a[r], acc[r]);
    for (int j = 0; j < 4; j++)
      for (int t = k; t < K; t++) acc[r][j] += x[r][t] * _cvtsh_ss(w[j][t]);
  }
}

/* tile for one row of x: the same sums in the same order, so a row's
 * result does not depend on the tile it falls in. For the rows left over
 * past the last multiple of TR, which tile would compute TR times. */
F16_TARGET static void F16_NAME(tile1x4)(const float *x, const uint16_t *const *w, int K,
                                         float acc[4]) {
  VF a[4] = {VZERO(), VZERO(), VZERO(), VZERO()};
  int k = 0;
  for (; k + VW <= K; k += VW) {
    VF xv = VLOADF(x + k);
    F16_UNROLL(4) for (int j = 0; j < 4; j++) a[j] = VFMA(xv, VLOADH(w[j] + k), a[j]);
  }
  VHSUM4(a, acc);
  for (int j = 0; j < 4; j++)
    for (int t = k; t < K; t++) acc[j] += x[t] * _cvtsh_ss(w[j][t]);
}

F16_TARGET static void F16_NAME(linear)(const float *x, int ldx, const uint16_t *W, const float *b,
                                        float *out, int ldo, int M, int N, int K) {
  for (int n0 = 0; n0 < N; n0 += 32) { /* 32 rows of W stay in cache across the row tiles */
    int n1 = n0 + 32 < N ? n0 + 32 : N;
    for (int m0 = 0; m0 < M; m0 += TR) {
      int mr = M - m0 < TR ? M - m0 : TR;
      const float *xr[TR];
      for (int r = 0; r < TR; r++) xr[r] = x + (size_t)(m0 + (r < mr ? r : 0)) * (size_t)ldx;
      for (int n = n0; n < n1; n += 4) {
        int nb = n1 - n < 4 ? n1 - n : 4;
        const uint16_t *wr[4];
        for (int j = 0; j < 4; j++) wr[j] = W + (size_t)(n + (j < nb ? j : 0)) * (size_t)K;
        float acc[TR][4];
        if (mr == TR) F16_NAME(tile)(xr, wr, K, acc);
        else
          for (int r = 0; r < mr; r++) F16_NAME(tile1x4)(xr[r], wr, K, acc[r]);
        for (int r = 0; r < mr; r++)
          for (int j = 0; j < nb; j++)
            out[(size_t)(m0 + r) * (size_t)ldo + n + j] = acc[r][j] + (b ? b[n + j] : 0.0f);
      }
    }
  }
}

/* The few-row product over panels (kn_f16_pack): rows of x broadcast one
 * number at a time against a panel's 16 columns, an outer product. Each
 * 16-wide weight row is expanded from F16 once for MR rows of x (at AVX2 2
 * expansions per 12 FMAs at 6 rows, where the row tiles above make 4; at
 * AVX-512 1 per 8), and there are no horizontal sums. On an AVX2-only Zen
 * 3, from 4 rows on, the row tiles ran at 43-80 GFLOP/s a core and this one
 * at 70-94; at AVX-512 on an Ice Lake, from 8 rows on, 66-71 against 88-90
 * where K is 256 (tests/bench/encoder/kernels.sh, docs/BENCHMARKS.md).
 * Sums run over k in order, one chain per output, so a row's result does
 * not depend on the tile it falls in. One row alone goes to the row tiles:
 * here its chains would wait on the FMA latency (0.6-0.9x the row tiles'
 * speed at AVX2; at two or three rows 0.9-1.15x, from four on 1.1-1.7x). */
F16_TARGET static inline __attribute__((always_inline)) void F16_NAME(panel_tile)(
    const float *x, int ldx, const uint16_t *p, int K, const float *b, float *out, int ldo, int nb,
    const int MR) {
  enum { PV = 16 / VW }; /* vectors a panel row */
  VF a[PR][PV];
  F16_UNROLL(8) for (int r = 0; r < MR; r++) for (int v = 0; v < PV; v++) a[r][v] = VZERO();
  for (int k = 0; k < K; k++) {
    VF w[PV];
    for (int v = 0; v < PV; v++) w[v] = VLOADH(p + (size_t)k * 16 + (size_t)v * VW);
    F16_UNROLL(8) for (int r = 0; r < MR; r++) {
      VF xb = VSET1(x[(size_t)r * (size_t)ldx + k]);
      for (int v = 0; v < PV; v++) a[r][v] = VFMA(xb, w[v], a[r][v]);
    }
  }
  F16_UNROLL(8) for (int r = 0; r < MR; r++) {
    float v16[16];
    for (int v = 0; v < PV; v++) VSTOREF(v16 + v * VW, a[r][v]);
    float *o = out + (size_t)r * (size_t)ldo;
    for (int j = 0; j < nb; j++) o[j] = v16[j] + (b ? b[j] : 0.0f);
  }
}

/* Row tiles as even as the PR-row maximum allows (16 rows by 6: 6, 5, 5;
 * by 8: 8, 8), since a tile of few rows spends more expansions per FMA. */
F16_TARGET static void F16_NAME(linear_panels)(const float *x, int ldx, const uint16_t *P,
                                               const float *b, float *out, int ldo, int M, int N,
                                               int K) {
  int tiles = (M + PR - 1) / PR;
  for (int n0 = 0; n0 < N; n0 += 16) {
    int nb = N - n0 < 16 ? N - n0 : 16;
    const uint16_t *p = P + (size_t)n0 * (size_t)K;
    const float *bn = b ? b + n0 : NULL;
    for (int t = 0; t < tiles; t++) {
      int m0 = M * t / tiles, m1 = M * (t + 1) / tiles;
      const float *xt = x + (size_t)m0 * (size_t)ldx;
      float *o = out + (size_t)m0 * (size_t)ldo + n0;
      switch (m1 - m0) { /* the tile's loops unrolled for its row count */
#if PR >= 8
        case 8:
          F16_NAME(panel_tile)(xt, ldx, p, K, bn, o, ldo, nb, 8);
          break;
        case 7:
          F16_NAME(panel_tile)(xt, ldx, p, K, bn, o, ldo, nb, 7);
          break;
#endif
        case 6:
          F16_NAME(panel_tile)(xt, ldx, p, K, bn, o, ldo, nb, 6);
          break;
        case 5:
          F16_NAME(panel_tile)(xt, ldx, p, K, bn, o, ldo, nb, 5);
          break;
        case 4:
          F16_NAME(panel_tile)(xt, ldx, p, K, bn, o, ldo, nb, 4);
          break;
        case 3:
          F16_NAME(panel_tile)(xt, ldx, p, K, bn, o, ldo, nb, 3);
          break;
        case 2:
          F16_NAME(panel_tile)(xt, ldx, p, K, bn, o, ldo, nb, 2);
          break;
        default:
          F16_NAME(panel_tile)(xt, ldx, p, K, bn, o, ldo, nb, 1);
          break;
      }
    }
  }
}
