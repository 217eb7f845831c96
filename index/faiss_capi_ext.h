/* faiss_capi_ext.h - private to index/: C declarations that Debian's FAISS
 * 1.7.3 C API headers lack. The search-parameter functions follow the names
 * and signatures that later FAISS releases added to their C API
 * (faiss_SearchParameters*, faiss_Index_search_with_params); the HNSW ones
 * are ours. Implemented in faiss_capi.cpp together with the declared
 * functions of /usr/include/faiss/c_api that idx.c calls.
 *
 * All functions returning int return 0 on success and a negative
 * FaissErrorCode on failure, with the message in faiss_get_last_error().
 */
#ifndef RETRO_FAISS_CAPI_EXT_H
#define RETRO_FAISS_CAPI_EXT_H

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/faiss_c.h>

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Search-time parameters; the caller owns them and any selector they hold. */
FAISS_DECLARE_CLASS(SearchParameters)
FAISS_DECLARE_DESTRUCTOR(SearchParameters)
FAISS_DECLARE_CLASS_INHERITED(SearchParametersIVF, SearchParameters)

/* Plain parameters: only an optional id selector (sel may be NULL). */
int faiss_SearchParameters_new(FaissSearchParameters **p_sp, FaissIDSelector *sel);
/* IVF: nprobe inverted lists to visit, max_codes (0 = unlimited). */
int faiss_SearchParametersIVF_new_with(FaissSearchParametersIVF **p_sp, FaissIDSelector *sel,
                                       size_t nprobe, size_t max_codes);

/* Like faiss_Index_search with per-call parameters (params may be NULL).
 * Looks through IndexIDMap/IndexIDMap2 and IndexPreTransform wrappers so the
 * parameters reach the index they are meant for. Does not modify the index:
 * concurrent calls on one index are safe. */
int faiss_Index_search_with_params(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                                   const FaissSearchParameters *params, float *distances,
                                   idx_t *labels);

/* Turns FAISS's polysemous training (a reordering of PQ codes for Hamming
 * pre-filtering, off at search time unless polysemous_ht is set) on or off
 * for the IndexPQ / IndexIVFPQ under any IDMap/PreTransform wrappers. Other
 * indexes are left alone. index_factory turns it on for "PQ<M>" strings. */
int faiss_Index_set_polysemous_training(FaissIndex *index, int on);

/* Downcast to an HNSW index (any IndexHNSW* class); NULL when it is not one. */
FAISS_DECLARE_CLASS_INHERITED(IndexHNSW, Index)
FAISS_DECLARE_INDEX_DOWNCAST(IndexHNSW)
/* efSearch of an HNSW index (the member hnsw.efSearch). FAISS 1.7.3 ignores
 * SearchParametersHNSW::efSearch (measured: recall does not move), so the
 * member is the only knob; setting it races with searches in flight. */
FAISS_DECLARE_GETTER_SETTER(IndexHNSW, int, efSearch)

/* The vectors of an IndexFlat (IP or L2), directly or under an IDMap/IDMap2:
 * the row-major (n, d) matrix and the id of each row (NULL without an
 * IDMap: the row number). Returns 1 and fills the outputs, or 0 for any
 * other index. The pointers stay valid until the index is next modified. */
int faiss_Index_flat_view(const FaissIndex *index, const float **p_xb, const idx_t **p_ids,
                          size_t *p_n);

/* The inverted lists of an IndexIVFFlat (exactly that class: Dedup keeps
 * more than its lists say) with a flat coarse quantizer and in-memory
 * (Array) lists, directly or under an IDMap/IDMap2. An IVFFlat stores each
 * vector's raw floats as its code, so list i is a row-major (n, d) float
 * matrix. Not under a PreTransform: the rows are in the transformed space,
 * which the caller's queries are not. Filled by faiss_Index_ivf_flat_view;
 * the pointers stay valid until the index is next modified. */
typedef struct FaissIVFFlatView {
  const void *lists;      /* the InvertedLists, for faiss_IVFFlatView_list */
  size_t nlist;           /* lists = centroids */
  const float *centroids; /* (nlist, d), row-major */
  int centroids_l2;       /* the quantizer's metric: 1 squared L2, 0 inner product */
  int lists_l2;           /* the index's metric for the lists' rows, likewise */
  const idx_t *id_map;    /* an IDMap's ids, indexed by the list ids; NULL without */
} FaissIVFFlatView;

/* Returns 1 and fills *view for an IVFFlat as described above, else 0. */
int faiss_Index_ivf_flat_view(const FaissIndex *index, FaissIVFFlatView *view);
/* List i < view->nlist: its rows (n, d), their ids, and n. */
void faiss_IVFFlatView_list(const FaissIVFFlatView *view, size_t i, const float **p_rows,
                            const idx_t **p_ids, size_t *p_n);
/* The number of rows in list i < view->nlist. */
size_t faiss_IVFFlatView_list_len(const FaissIVFFlatView *view, size_t i);

#ifdef __cplusplus
}
#endif

#endif
