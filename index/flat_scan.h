/* flat_scan.h - exact k-nearest search over a dense float matrix, for a few
 * queries at a time (private to index/).
 *
 * Why: Debian's FAISS 1.7.3 is built without SIMD, so IndexFlat answers
 * fewer than 20 queries with a scalar dot product per vector; that scalar
 * loop was half the CPU of a search-by-vector request. This scan computes
 * the same scores with vectorised kernels (an AVX2+FMA clone chosen at run
 * time) and keeps the best k per query in a heap. Batches of 20 or more
 * queries still go to FAISS, which uses BLAS for them.
 *
 * Results follow FAISS's conventions: per query k slots, best first
 * (largest inner product, or smallest squared L2 distance); slots beyond the
 * number of vectors get label -1 and distance -FLT_MAX (IP) / FLT_MAX (L2).
 * Equal scores come out in ascending label order. Reentrant; allocates only
 * beyond 1024 hits (nq * k).
 */
#ifndef RETRO_FLAT_SCAN_H
#define RETRO_FLAT_SCAN_H

#include <stddef.h>
#include <stdint.h>

enum { FLAT_SCAN_MAX_QUERIES = 19 }; /* FAISS uses BLAS from 20 queries on */

/* xb: n rows of d floats; ids: the label of each row (NULL: the row number);
 * q: nq rows of d floats, nq <= FLAT_SCAN_MAX_QUERIES; l2: 0 = inner
 * product, 1 = squared L2. dist/lab: nq * k. Returns 0, or -1 when nq is too
 * large or memory for nq * k > 1024 hits cannot be had. */
int flat_scan(const float *xb, const int64_t *ids, size_t n, size_t d, const float *q,
              size_t nq, int l2, size_t k, float *dist, int64_t *lab);

#endif
