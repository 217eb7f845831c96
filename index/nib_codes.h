/* nib_codes.h - 4-bit codes of float rows, for approximate scores (private
 * to index/).
 *
 * Why: an IVF search at a million rows and more is bound by the bytes it
 * reads. flat_codes (int8, exact bounds) read a quarter of the floats; these
 * read an eighth: each row is kept as d 4-bit levels between its own
 * minimum and maximum, optionally of its residual from a centre (an IVF
 * list's centroid, whose values spread far less than the row's, so the
 * levels are finer). A score from them is approximate, with no bound: the
 * caller keeps more candidates than it needs and scores those exactly from
 * the floats (ivf_scan_nib).
 *
 * Scores: the query is rounded to int8 (a step per query), each row's
 * levels are multiplied with it and summed exactly in 32-bit lanes (AVX-512
 * VNNI, else AVX2, else plain C, chosen at run time), then scaled back:
 * approx(q . x) = base + lo * sum(q) + step * qstep * sum(level * qi), base
 * the caller's estimate of q . centre (ivf_scan_nib: the centroid's own
 * code score).
 * Rows with a value that is not finite are "wild": they have no codes, and
 * a caller must score them some other way (nib_codes_wild counts them).
 */
#ifndef RETRO_NIB_CODES_H
#define RETRO_NIB_CODES_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>

typedef struct nib_codes nib_codes;

/* A query prepared for nib_codes_scores: qi holds nib_query_len(d) int8
 * (the caller's buffer; zero past d). */
typedef struct nib_query {
  int8_t *qi;
  float step; /* q[j] ~= step * qi[j] */
  float sum;  /* sum of q[j], in float */
  float norm; /* ||q|| */
} nib_query;

/* The length of a prepared query for rows of d floats: d rounded up to 128. */
size_t nib_query_len(size_t d);
/* Fills *out for q (d floats) into qi (nib_query_len(d) bytes). A query with
 * a value that is not finite gets step 0 (every approximate score is then
 * the centre's). */
void nib_query_make(const float *q, size_t d, int8_t *qi, nib_query *out);

/* An empty table for rows of d floats. PROTO_OK, PROTO_EINVAL (d == 0), or
 * PROTO_ENOMEM. */
proto_status nib_codes_new(size_t d, nib_codes **out);
void nib_codes_free(nib_codes *c); /* accepts NULL */
/* Appends the codes of x (n, d) as residuals from centre (d floats, or NULL
 * for none); every row of a table must use the same centre. PROTO_OK, or
 * PROTO_ENOMEM (the table is then unchanged). */
proto_status nib_codes_append(nib_codes *c, const float *x, size_t n, const float *centre);
/* Drops every row (keeps the memory). */
void nib_codes_clear(nib_codes *c);
size_t nib_codes_rows(const nib_codes *c);
size_t nib_codes_wild(const nib_codes *c);
/* ||x||^2 of each row as appended (the whole row, not the residual). */
const float *nib_codes_norm2(const nib_codes *c);

/* For rows r = r0 + i, i < n (r0 + n <= rows): out[i] = base + approx(q .
 * residual of row r), or with l2 twice that less ||x||^2 (minus the
 * squared L2 distance, plus ||q||^2); wild rows get +INFINITY. spread (or
 * NULL): spread[i] = ||q|| times the row's step between levels (twice that
 * with l2). The error of out[i] is q . (the row's rounding errors) (twice
 * that with l2), at most spread[i] sqrt(d) / 2; when the rounding errors
 * are independent and uniform, its standard deviation is spread[i] /
 * sqrt(12) (the query's own rounding, far finer, aside). */
void nib_codes_scores(const nib_codes *c, const nib_query *q, size_t r0, size_t n, float base,
                      int l2, float *out, float *spread);

/* Tests: 512 (VNNI, when the CPU has it), 256 (AVX2) or 0 (plain C) as
 * the widest kernel to use; returns the width in force. */
unsigned nib_codes_set_width(unsigned bits);

#endif
