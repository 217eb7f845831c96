/* ivf_scan.h - an IVFFlat index searched by flat_scan (private to index/).
 *
 * Why: Debian's FAISS 1.7.3 scans an IVF's lists with a scalar kernel; at 1M
 * x 256 its IVF4096,Flat ran 2-6x slower than the same lists scanned by
 * flat_scan (docs/BENCHMARKS.md, "Approximate search at scale"). This
 * search reads FAISS's own lists in place (faiss_Index_ivf_flat_view), and
 * optionally codes of the centroids and lists that the caller keeps in
 * step; FAISS still trains, adds, removes and saves.
 *
 * ivf_scan, with no codes or with int8 ones (flat_codes), computes FAISS's
 * IVFFlat search at the same nprobe: per query
 * the nprobe nearest centroids under the quantizer's metric (flat_scan over
 * the centroids), then the k best rows of those lists under the index's
 * metric (flat_scan_lists), with flat_scan's conventions for scores,
 * order, ties and empty slots. With ties among centroids, or scores equal to
 * the last bit, either may keep a different one. ivf_scan_nib, through
 * 4-bit codes (what idx.c keeps for a large IVF), reads half the bytes of
 * the int8 codes and approximates it (see there).
 */
#ifndef RETRO_IVF_SCAN_H
#define RETRO_IVF_SCAN_H

#include "faiss_capi_ext.h"
#include "flat_scan.h"
#include "nib_codes.h"
#include "proto.h"

#include <stddef.h>
#include <stdint.h>

/* int8 codes that speed up an ivf_scan without changing its results
 * (flat_scan_coded and flat_scan_lists_coded: the same lists, ids and
 * scores, bit for bit). Either may be NULL. */
typedef struct ivf_codes {
  const flat_codes *centroids;    /* of exactly the view's centroids */
  const flat_codes *const *lists; /* view->nlist entries: list i's rows */
} ivf_codes;

/* codes: as above, or NULL (float scans only). q: nq rows of d floats;
 * nprobe: lists per query (1..view->nlist); dist, lab: nq * k, labels
 * through the view's IDMap when it has one. PROTO_OK, PROTO_EINVAL (nq
 * over FLAT_SCAN_MAX_QUERIES, nprobe outside 1..nlist) or PROTO_ENOMEM. The
 * view's pointers must stay valid meanwhile (idx.c holds its read lock). */
proto_status ivf_scan(const FaissIVFFlatView *view, const ivf_codes *codes, size_t d,
                      const float *q, size_t nq, size_t nprobe, size_t k, float *dist,
                      int64_t *lab);

/* 4-bit codes for ivf_scan_nib, kept in step by the caller: of the
 * view's centroids (no centre), and of each list's rows as residuals from
 * its centroid. */
typedef struct ivf_nib {
  const nib_codes *centroids;
  const nib_codes *const *lists; /* view->nlist entries */
} ivf_nib;

/* How far, in standard deviations of a code score's error, a row's
 * approximate score may sit below the k-th best and still be scored
 * exactly: what idx.c gives ivf_scan_nib (chosen on the tuning half of the
 * queries, docs/BENCHMARKS.md run J). */
#define IVF_NIB_MARGIN 3.0f

/* An approximate IVF search that reads about an eighth of the bytes of
 * ivf_scan's float lists: per query the nprobe lists whose centroids score
 * best from their codes; then every row of those lists whose approximate
 * score, raised by margin times its error's standard deviation (see
 * nib_codes_scores), reaches the k-th best approximate score lowered the
 * same way; then the k best of those rows scored exactly from the floats
 * (flat_scan's scores, order and conventions). It may miss a row that
 * ivf_scan finds at the same nprobe: when a code score errs by more than
 * the margin, or a centroid's code score puts another list ahead. A query
 * whose picked lists lack codes or hold a wild row is answered from those
 * lists' floats; codes of the centroids out of step with the view send
 * the call to ivf_scan. Arguments and errors as ivf_scan's. */
proto_status ivf_scan_nib(const FaissIVFFlatView *view, const ivf_nib *nib, size_t d,
                          const float *q, size_t nq, size_t nprobe, float margin, size_t k,
                          float *dist, int64_t *lab);

#endif
