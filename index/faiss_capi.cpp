/* faiss_capi.cpp - the part of FAISS's C API that index/idx.c calls.
 *
 * Debian's libfaiss-dev (1.7.3) installs the C API headers
 * (/usr/include/faiss/c_api) but its libfaiss.a carries no implementation of
 * them. This file implements exactly the declared functions idx.c uses, with
 * the declared signatures (the headers are included so the compiler checks
 * them), plus the few extensions of faiss_capi_ext.h (per-call search
 * parameters). It does not implement the rest of the C API.
 *
 * Every entry point that can fail catches all C++ exceptions, keeps the
 * message in a per-thread buffer readable with faiss_get_last_error(), and
 * returns a negative FaissErrorCode (FAISS_EXCEPT, STD_EXCEPT,
 * UNKNOWN_EXCEPT). No exception ever crosses into C.
 */
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/IndexPreTransform_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/faiss_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "faiss_capi_ext.h"

#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>

#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <typeinfo>
#include <vector>

namespace {

thread_local std::string last_error;

/* Runs f, turning any exception into a status code and a message. */
template <typename F>
int guarded(F f) {
  try {
    f();
    return OK;
  } catch (const faiss::FaissException &e) {
    last_error = e.what();
    return FAISS_EXCEPT;
  } catch (const std::exception &e) {
    last_error = e.what();
    return STD_EXCEPT;
  } catch (...) {
    last_error = "unknown C++ exception";
    return UNKNOWN_EXCEPT;
  }
}

faiss::Index *I(FaissIndex *p) { return reinterpret_cast<faiss::Index *>(p); }
const faiss::Index *I(const FaissIndex *p) { return reinterpret_cast<const faiss::Index *>(p); }
FaissIndex *H(faiss::Index *p) { return reinterpret_cast<FaissIndex *>(p); }

/* Searches index, handing params to the index they were made for: an IDMap
 * searches its sub-index and translates the labels, a PreTransform applies its
 * chain first. Any other index gets params as they are. */
void search_through(const faiss::Index *index, faiss::Index::idx_t n, const float *x,
                    faiss::Index::idx_t k, const faiss::SearchParameters *params, float *distances,
                    faiss::Index::idx_t *labels) {
  if (params) {
    if (auto *m = dynamic_cast<const faiss::IndexIDMap *>(index)) {
      FAISS_THROW_IF_NOT_MSG(params->sel == nullptr,
                             "id selectors are not supported through IDMap");
      search_through(m->index, n, x, k, params, distances, labels);
      for (faiss::Index::idx_t i = 0; i < n * k; i++) {
        if (labels[i] >= 0) labels[i] = m->id_map[labels[i]];
      }
      return;
    }
    if (auto *pt = dynamic_cast<const faiss::IndexPreTransform *>(index)) {
      const float *xt = pt->apply_chain(n, x);
      std::unique_ptr<const float[]> owned(xt == x ? nullptr : xt);
      search_through(pt->index, n, xt, k, params, distances, labels);
      return;
    }
  }
  index->search(n, x, k, distances, labels, params);
}

/* The metric of a flat index or list scan: 1 squared L2, 0 inner product, -1 other. */
int l2_or_ip(faiss::MetricType m) {
  return m == faiss::METRIC_L2 ? 1 : m == faiss::METRIC_INNER_PRODUCT ? 0 : -1;
}

} // namespace

extern "C" {

const char *faiss_get_last_error() { return last_error.c_str(); }

/* Index ------------------------------------------------------------------ */

void faiss_Index_free(FaissIndex *obj) { delete I(obj); }

int faiss_Index_d(const FaissIndex *index) { return I(index)->d; }

int faiss_Index_is_trained(const FaissIndex *index) { return I(index)->is_trained ? 1 : 0; }

idx_t faiss_Index_ntotal(const FaissIndex *index) { return I(index)->ntotal; }

FaissMetricType faiss_Index_metric_type(const FaissIndex *index) {
  return static_cast<FaissMetricType>(I(index)->metric_type);
}

int faiss_Index_train(FaissIndex *index, idx_t n, const float *x) {
  return guarded([&] { I(index)->train(n, x); });
}

int faiss_Index_add(FaissIndex *index, idx_t n, const float *x) {
  return guarded([&] { I(index)->add(n, x); });
}

int faiss_Index_add_with_ids(FaissIndex *index, idx_t n, const float *x, const idx_t *xids) {
  return guarded([&] { I(index)->add_with_ids(n, x, xids); });
}

int faiss_Index_search(const FaissIndex *index, idx_t n, const float *x, idx_t k, float *distances,
                       idx_t *labels) {
  return guarded([&] { I(index)->search(n, x, k, distances, labels); });
}

int faiss_Index_remove_ids(FaissIndex *index, const FaissIDSelector *sel, size_t *n_removed) {
  return guarded([&] {
    size_t r = I(index)->remove_ids(*reinterpret_cast<const faiss::IDSelector *>(sel));
    if (n_removed) *n_removed = r;
  });
}

int faiss_index_factory(FaissIndex **p_index, int d, const char *description,
                        FaissMetricType metric) {
  return guarded([&] {
    *p_index = H(faiss::index_factory(d, description, static_cast<faiss::MetricType>(metric)));
  });
}

/* Downcasts and wrappers ---------------------------------------------------- */

FaissIndexIVF *faiss_IndexIVF_cast(FaissIndex *index) {
  return reinterpret_cast<FaissIndexIVF *>(dynamic_cast<faiss::IndexIVF *>(I(index)));
}

size_t faiss_IndexIVF_nlist(const FaissIndexIVF *index) {
  return reinterpret_cast<const faiss::IndexIVF *>(index)->nlist;
}

FaissIndexIDMap *faiss_IndexIDMap_cast(FaissIndex *index) {
  return reinterpret_cast<FaissIndexIDMap *>(dynamic_cast<faiss::IndexIDMap *>(I(index)));
}

FaissIndex *faiss_IndexIDMap_sub_index(FaissIndexIDMap *index) {
  return H(reinterpret_cast<faiss::IndexIDMap *>(index)->index);
}

FaissIndexPreTransform *faiss_IndexPreTransform_cast(FaissIndex *index) {
  return reinterpret_cast<FaissIndexPreTransform *>(
      dynamic_cast<faiss::IndexPreTransform *>(I(index)));
}

FaissIndex *faiss_IndexPreTransform_index(const FaissIndexPreTransform *index) {
  return H(reinterpret_cast<const faiss::IndexPreTransform *>(index)->index);
}

FaissIndexHNSW *faiss_IndexHNSW_cast(FaissIndex *index) {
  return reinterpret_cast<FaissIndexHNSW *>(dynamic_cast<faiss::IndexHNSW *>(I(index)));
}

int faiss_IndexHNSW_efSearch(const FaissIndexHNSW *index) {
  return reinterpret_cast<const faiss::IndexHNSW *>(index)->hnsw.efSearch;
}

void faiss_IndexHNSW_set_efSearch(FaissIndexHNSW *index, int ef) {
  reinterpret_cast<faiss::IndexHNSW *>(index)->hnsw.efSearch = ef;
}

/* Id selectors -------------------------------------------------------------- */

void faiss_IDSelector_free(FaissIDSelector *obj) {
  delete reinterpret_cast<faiss::IDSelector *>(obj);
}

int faiss_IDSelectorBatch_new(FaissIDSelectorBatch **p_sel, size_t n, const idx_t *indices) {
  return guarded([&] {
    *p_sel = reinterpret_cast<FaissIDSelectorBatch *>(new faiss::IDSelectorBatch(n, indices));
  });
}

/* Search parameters (faiss_capi_ext.h) ------------------------------------- */

void faiss_SearchParameters_free(FaissSearchParameters *obj) {
  delete reinterpret_cast<faiss::SearchParameters *>(obj);
}

int faiss_SearchParameters_new(FaissSearchParameters **p_sp, FaissIDSelector *sel) {
  return guarded([&] {
    auto *sp = new faiss::SearchParameters();
    sp->sel = reinterpret_cast<faiss::IDSelector *>(sel);
    *p_sp = reinterpret_cast<FaissSearchParameters *>(sp);
  });
}

int faiss_SearchParametersIVF_new_with(FaissSearchParametersIVF **p_sp, FaissIDSelector *sel,
                                       size_t nprobe, size_t max_codes) {
  return guarded([&] {
    auto *sp = new faiss::SearchParametersIVF();
    sp->sel = reinterpret_cast<faiss::IDSelector *>(sel);
    sp->nprobe = nprobe;
    sp->max_codes = max_codes;
    /* The struct pointer must be the base's: SearchParameters is its first
     * (and only) base, so the static cast below does not move it. */
    *p_sp =
        reinterpret_cast<FaissSearchParametersIVF *>(static_cast<faiss::SearchParameters *>(sp));
  });
}

int faiss_Index_search_with_params(const FaissIndex *index, idx_t n, const float *x, idx_t k,
                                   const FaissSearchParameters *params, float *distances,
                                   idx_t *labels) {
  return guarded([&] {
    search_through(I(index), n, x, k, reinterpret_cast<const faiss::SearchParameters *>(params),
                   distances, labels);
  });
}

int faiss_Index_set_polysemous_training(FaissIndex *index, int on) {
  return guarded([&] {
    faiss::Index *ix = I(index);
    for (;;) {
      if (auto *m = dynamic_cast<faiss::IndexIDMap *>(ix)) {
        ix = m->index;
        continue;
      }
      if (auto *p = dynamic_cast<faiss::IndexPreTransform *>(ix)) {
        ix = p->index;
        continue;
      }
      break;
    }
    if (auto *ivfpq = dynamic_cast<faiss::IndexIVFPQ *>(ix))
      ivfpq->do_polysemous_training = on != 0;
    if (auto *pq = dynamic_cast<faiss::IndexPQ *>(ix)) pq->do_polysemous_training = on != 0;
  });
}

int faiss_Index_flat_view(const FaissIndex *index, const float **p_xb, const idx_t **p_ids,
                          size_t *p_n) {
  const faiss::Index *ix = I(index);
  const faiss::IndexIDMap *m = dynamic_cast<const faiss::IndexIDMap *>(ix);
  const faiss::IndexFlat *flat = dynamic_cast<const faiss::IndexFlat *>(m ? m->index : ix);
  if (!flat || (m && m->id_map.size() != (size_t)flat->ntotal)) return 0;
  *p_xb = flat->get_xb();
  *p_ids = m ? m->id_map.data() : nullptr;
  *p_n = (size_t)flat->ntotal;
  return 1;
}

int faiss_Index_ivf_flat_view(const FaissIndex *index, FaissIVFFlatView *view) {
  const faiss::Index *ix = I(index);
  const faiss::IndexIDMap *m = dynamic_cast<const faiss::IndexIDMap *>(ix);
  const faiss::Index *core = m ? m->index : ix;
  /* typeid, not dynamic_cast: a subclass (IndexIVFFlatDedup) searches differently */
  if (!core || typeid(*core) != typeid(faiss::IndexIVFFlat)) return 0;
  auto *ivf = static_cast<const faiss::IndexIVFFlat *>(core);
  auto *q = dynamic_cast<const faiss::IndexFlat *>(ivf->quantizer);
  auto *lists = dynamic_cast<const faiss::ArrayInvertedLists *>(ivf->invlists);
  if (!q || !lists || (size_t)q->ntotal != ivf->nlist || lists->nlist != ivf->nlist ||
      lists->code_size != sizeof(float) * (size_t)ivf->d || q->d != ivf->d ||
      l2_or_ip(q->metric_type) < 0 || l2_or_ip(ivf->metric_type) < 0 ||
      (m && m->id_map.size() != (size_t)ivf->ntotal))
    return 0;
  view->lists = lists;
  view->nlist = ivf->nlist;
  view->centroids = q->get_xb();
  view->centroids_l2 = l2_or_ip(q->metric_type);
  view->lists_l2 = l2_or_ip(ivf->metric_type);
  view->id_map = m ? m->id_map.data() : nullptr;
  return 1;
}

void faiss_IVFFlatView_list(const FaissIVFFlatView *view, size_t i, const float **p_rows,
                            const idx_t **p_ids, size_t *p_n) {
  auto *lists = static_cast<const faiss::ArrayInvertedLists *>(view->lists);
  /* ArrayInvertedLists hands out its vectors' data: nothing to release */
  *p_rows = reinterpret_cast<const float *>(lists->codes[i].data());
  *p_ids = lists->ids[i].data();
  *p_n = lists->ids[i].size();
}

size_t faiss_IVFFlatView_list_len(const FaissIVFFlatView *view, size_t i) {
  return static_cast<const faiss::ArrayInvertedLists *>(view->lists)->ids[i].size();
}

/* I/O ------------------------------------------------------------------------ */

int faiss_write_index(const FaissIndex *idx, FILE *f) {
  return guarded([&] { faiss::write_index(I(idx), f); });
}

int faiss_read_index(FILE *f, int io_flags, FaissIndex **p_out) {
  return guarded([&] { *p_out = H(faiss::read_index(f, io_flags)); });
}

} // extern "C"
