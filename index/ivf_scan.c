/* ivf_scan.c - an IVFFlat index searched by flat_scan (see ivf_scan.h). */
#include "ivf_scan.h"

#include "flat_scan.h"

#include <stdlib.h>

/* One query: the rows of the lists probe[0..nprobe) (-1 ends them early),
 * through their codes when list_codes has them. */
static proto_status scan_probed(const FaissIVFFlatView *v, const flat_codes *const *list_codes,
                                size_t d, const float *q, const int64_t *probe, size_t nprobe,
                                flat_list *lists, size_t k, float *dist, int64_t *lab) {
  size_t nl = 0;
  for (size_t p = 0; p < nprobe && probe[p] >= 0; p++) {
    const float *rows;
    const idx_t *ids;
    size_t n;
    faiss_IVFFlatView_list(v, (size_t)probe[p], &rows, &ids, &n);
    if (n) lists[nl++] = (flat_list){rows, ids, n, list_codes ? list_codes[probe[p]] : NULL};
  }
  proto_status s = list_codes ? flat_scan_lists_coded(lists, nl, d, q, v->lists_l2, k, dist, lab)
                              : flat_scan_lists(lists, nl, d, q, v->lists_l2, k, dist, lab);
  if (s == PROTO_OK && v->id_map) /* list ids are an IDMap's row numbers */
    for (size_t j = 0; j < k; j++)
      if (lab[j] >= 0) lab[j] = v->id_map[lab[j]];
  return s;
}

proto_status ivf_scan(const FaissIVFFlatView *v, const ivf_codes *codes, size_t d, const float *q,
                      size_t nq, size_t nprobe, size_t k, float *dist, int64_t *lab) {
  if (nq > FLAT_SCAN_MAX_QUERIES || nprobe == 0 || nprobe > v->nlist)
    return proto_fail(PROTO_EINVAL, "ivf_scan: %zu queries, nprobe %zu of %zu lists", nq, nprobe,
                      v->nlist);
  float *cdist = malloc(nq * nprobe * sizeof *cdist);
  int64_t *probe = malloc(nq * nprobe * sizeof *probe);
  flat_list *lists = malloc(nprobe * sizeof *lists);
  proto_status s = PROTO_OK;
  if (!cdist || !probe || !lists) s = proto_fail(PROTO_ENOMEM, "out of memory");
  if (s == PROTO_OK)
    s = flat_scan_coded(codes ? codes->centroids : NULL, v->centroids, NULL, v->nlist, d, q, nq,
                        v->centroids_l2, nprobe, cdist, probe);
  for (size_t i = 0; s == PROTO_OK && i < nq; i++)
    s = scan_probed(v, codes ? codes->lists : NULL, d, q + i * d, probe + i * nprobe, nprobe, lists,
                    k, dist + i * k, lab + i * k);
  free(cdist);
  free(probe);
  free(lists);
  return s;
}
