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
 * Among equal scores the lower label ranks first, both in which hits are
 * kept and in their order. Reentrant; allocates only beyond 1024 hits
 * (nq * k).
 *
 * flat_codes is an int8 copy of the matrix (a scale per row) that makes a
 * scan read a quarter of the bytes: flat_scan_coded scores every row from
 * the codes (and the query rounded to 16-bit integers), keeps the rows whose
 * approximate score could still be among the k best (|exact - approx| is
 * bounded by ||q|| ||x - x~|| + ||q - q~|| ||x~|| + float rounding, from
 * figures kept per row), and scores those exactly from the float rows. Its
 * results are flat_scan's, bit for bit. It pays once the matrix outgrows
 * the caches (docs/BENCHMARKS.md, exact search).
 */
#ifndef RETRO_FLAT_SCAN_H
#define RETRO_FLAT_SCAN_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>

enum { FLAT_SCAN_MAX_QUERIES = 19 }; /* FAISS uses BLAS from 20 queries on */

/* xb: n rows of d floats; ids: the label of each row (NULL: the row number);
 * q: nq rows of d floats, nq <= FLAT_SCAN_MAX_QUERIES; l2: 0 = inner
 * product, 1 = squared L2. dist/lab: nq * k. PROTO_OK, PROTO_EINVAL when nq
 * is too large, or PROTO_ENOMEM when memory for nq * k > 1024 hits cannot be
 * had (with the error detail set). */
proto_status flat_scan(const float *xb, const int64_t *ids, size_t n, size_t d, const float *q,
                       size_t nq, int l2, size_t k, float *dist, int64_t *lab);

typedef struct flat_codes flat_codes;

/* One matrix of rows for flat_scan_lists: n rows of d floats, ids as in
 * flat_scan (NULL: the row number), and for flat_scan_lists_coded the
 * int8 codes of exactly those rows (or NULL). */
typedef struct flat_list {
  const float *xb;
  const int64_t *ids;
  size_t n;
  const flat_codes *codes;
} flat_list;

/* flat_scan of one query q over the rows of lists[0..nlists) taken
 * together (the inverted lists an IVF search probes): the k best of all
 * their rows, with flat_scan's scores, order and conventions. PROTO_OK, or
 * PROTO_ENOMEM when k > 1024 and memory cannot be had. */
proto_status flat_scan_lists(const flat_list *lists, size_t nlists, size_t d, const float *q,
                             int l2, size_t k, float *dist, int64_t *lab);

/* flat_scan of one query q over n scattered rows (rows[i]: d floats, its
 * label labels[i]): the k best, with flat_scan's scores, order and
 * conventions. PROTO_OK, or PROTO_ENOMEM when k > 1024 and memory cannot be
 * had. */
proto_status flat_scan_rows(const float *const *rows, const int64_t *labels, size_t n, size_t d,
                            const float *q, int l2, size_t k, float *dist, int64_t *lab);

/* An empty code table for rows of d floats. PROTO_OK, PROTO_EINVAL (d == 0
 * or too large for 32-bit sums), or PROTO_ENOMEM. */
proto_status flat_codes_new(size_t d, flat_codes **out);
/* Accepts NULL. */
void flat_codes_free(flat_codes *c);
/* Appends the codes of x (n, d): row i of x becomes row rows + i. PROTO_OK,
 * or PROTO_ENOMEM (the table is then unchanged in its row count). */
proto_status flat_codes_append(flat_codes *c, const float *x, size_t n);
/* Keeps the rows r with keep[r] != 0 (keep: flat_codes_rows entries), in
 * order, as IndexFlat::remove_ids compacts its rows. Returns the rows left. */
size_t flat_codes_keep(flat_codes *c, const uint8_t *keep);
/* 1 when row r holds the codes of the float row x (d), else 0. */
int flat_codes_row_matches(const flat_codes *c, size_t r, const float *x);
/* Drops every row (keeps the memory). */
void flat_codes_clear(flat_codes *c);
size_t flat_codes_rows(const flat_codes *c);
/* Caps the width of the coded scans' integer kernel at bits: 512 (AVX-512
 * VNNI, rows of a multiple of 64 codes), 256 (AVX2), anything less the plain
 * C loop; every width gives the same sums. For tests and benchmarks: not
 * thread-safe against running scans. Returns the width in force for rows of
 * 64 codes on this CPU. */
unsigned flat_codes_set_width(unsigned bits);
/* For tests: dot[i] = the sum over j of codes[r0 + i][j] * qi[j] (qi: d
 * integers within the table's bound, 32767 for d up to 66,052), through the
 * kernel in force. 0, or -1 (rows out of range, out of memory). */
int flat_codes_dots(const flat_codes *c, const int16_t *qi, size_t r0, size_t n, int32_t *dot);

/* flat_scan with codes c of exactly the rows of xb (n, d); with c NULL, of
 * another size, or holding a row that is not finite it is flat_scan. Not
 * thread-safe against changes to c; concurrent scans are fine. Returns as
 * flat_scan (it allocates its candidate lists). */
proto_status flat_scan_coded(const flat_codes *c, const float *xb, const int64_t *ids, size_t n,
                             size_t d, const float *q, size_t nq, int l2, size_t k, float *dist,
                             int64_t *lab);

/* flat_scan_lists through the lists' codes: the rows of all lists scored
 * from their codes against one bar, the few that could rank scored exactly
 * from their floats, so the results are flat_scan_lists', bit for bit.
 * When a list has no codes, or codes of another size or with a row that is
 * not finite, it is flat_scan_lists. Returns as flat_scan_lists. */
proto_status flat_scan_lists_coded(const flat_list *lists, size_t nlists, size_t d, const float *q,
                                   int l2, size_t k, float *dist, int64_t *lab);

#endif
