/* ivf_scan.h - an IVFFlat index searched by flat_scan (private to index/).
 *
 * Why: Debian's FAISS 1.7.3 scans an IVF's lists with a scalar kernel; at 1M
 * x 256 its IVF4096,Flat ran 2-6x slower than the same lists scanned by
 * flat_scan (docs/BENCHMARKS.md, "Approximate search at scale"). This
 * search reads FAISS's own lists in place (faiss_Index_ivf_flat_view), and
 * optionally int8 codes of the centroids and lists that the caller keeps in
 * step (idx.c); FAISS still trains, adds, removes and saves.
 *
 * What it computes is FAISS's IVFFlat search at the same nprobe: per query
 * the nprobe nearest centroids under the quantizer's metric (flat_scan over
 * the centroids), then the k best rows of those lists under the index's
 * metric (flat_scan_lists), with flat_scan's conventions for scores,
 * order, ties and empty slots. With ties among centroids, or scores equal to
 * the last bit, either may keep a different one.
 */
#ifndef RETRO_IVF_SCAN_H
#define RETRO_IVF_SCAN_H

#include "faiss_capi_ext.h"
#include "flat_scan.h"
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

#endif
