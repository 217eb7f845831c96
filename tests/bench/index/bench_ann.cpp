/* bench_ann.cpp - one index over N stored vectors, searched one query at a
 * time on one thread: recall@10 against a given exact top 10 and queries/s.
 * Driven by ann_scale.py (which makes the vectors and the ground truth);
 * prints one JSON object per setting on stdout. Not run by CI.
 *
 *   bench_ann BASE N D QUERIES NQ GT MODE ARGS...
 *     BASE, QUERIES: raw float32 rows (L2-normalised: inner product ranks);
 *     GT: NQ x 10 int32 row numbers of BASE, best first.
 *   MODE flat  NQ_TIMED           our exact int8-coded scan (index/flat_scan.c,
 *                                 what the server's Flat index searches with)
 *   MODE ivf   NLIST PER_CENTROID NITER KFACTOR NPROBE,...
 *                                 FAISS IVF<nlist>,SQ8 (int8 codes) under
 *                                 IndexRefineFlat: the k*KFACTOR best by codes
 *                                 re-ranked exactly from the stored floats
 *                                 (KFACTOR 0: no re-rank); trained on
 *                                 PER_CENTROID * NLIST rows, NITER k-means rounds
 *   MODE ivfcoded NLIST PER_CENTROID NITER NPROBE,...
 *                                 FAISS's IVF clustering (trained as above), each
 *                                 list searched by our exact coded scan (float
 *                                 rows + int8 codes per list): the probed lists'
 *                                 candidates re-ranked exactly from the floats;
 *                                 lists picked by flat_scan over the centroids;
 *                                 then the same lists searched by FAISS
 *                                 (IVF<nlist>,Flat, the server's choice today)
 *   MODE ivfscan NLIST PER_CENTROID NITER NQ_FLAT NPROBE,...
 *                                 the exact coded scan (NQ_FLAT queries timed),
 *                                 then FAISS IVF<nlist>,Flat (trained as above)
 *                                 searched by index/ivf_scan.c over FAISS's
 *                                 own lists (floats; int8 codes; the 4-bit
 *                                 codes idx.c searches below 20 queries),
 *                                 then by FAISS itself
 *   MODE hnsw  M EF_CONSTRUCTION THREADS EF_SEARCH,...
 *                                 FAISS IndexHNSWFlat, built with THREADS
 *
 * Memory per vector: the index's serialised bytes / N (FAISS), codes + rows
 * + ids (flat). Build threads: 2 for IVF training and adds (OpenMP), as the
 * server has; searches: 1. */
extern "C" {
#include "faiss_capi_ext.h"
#include "flat_scan.h"
#include "ivf_scan.h"
}

#include "bench_rows.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexRefine.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>

#include <omp.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

const int K = 10;

std::vector<int> parse_list(const char *s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::atoi(item.c_str()));
  return out;
}

struct Data {
  std::string base; /* the file the rows came from */
  size_t n, d, nq;
  std::vector<float> xb, xq;
  std::vector<int> gt;
};

/* Mean fraction of the exact top 10 found among the k labels of each query. */
double recall_at_10(const Data &data, const std::vector<int64_t> &labels) {
  size_t hits = 0;
  for (size_t i = 0; i < data.nq; i++)
    for (int j = 0; j < K; j++)
      for (int g = 0; g < K; g++)
        if (labels[i * K + j] == data.gt[i * K + g]) hits++;
  return (double)hits / (double)(data.nq * K);
}

size_t serialized_bytes(const faiss::Index *ix) {
  faiss::VectorIOWriter w;
  faiss::write_index(ix, &w);
  return w.data.size();
}

void report(const char *index, const Data &data, const std::string &params, double build_s,
            double bytes_per_vec, double recall, double qps) {
  std::printf(
      "{\"index\": \"%s\", \"n\": %zu, \"params\": \"%s\", \"build_s\": %.2f, "
      "\"bytes_per_vec\": %.1f, \"recall\": %.4f, \"qps\": %.1f}\n",
      index, data.n, params.c_str(), build_s, bytes_per_vec, recall, qps);
  std::fflush(stdout);
}

/* Searches every query alone through fn(i, dist, lab), once untimed (to
 * warm the caches and page tables, as the peers' benches do too), then
 * timed; returns queries/s. */
template <typename F>
double time_queries(const Data &data, size_t nq, std::vector<int64_t> &labels, F fn) {
  std::vector<float> dist(K);
  for (size_t i = 0; i < nq; i++) fn(i, dist.data(), labels.data() + i * K);
  double t0 = bench_now();
  for (size_t i = 0; i < nq; i++) fn(i, dist.data(), labels.data() + i * K);
  return (double)nq / (bench_now() - t0);
}

void run_flat(const Data &data, size_t nq_timed) {
  flat_codes *codes = nullptr;
  double t0 = bench_now();
  if (flat_codes_new(data.d, &codes) || flat_codes_append(codes, data.xb.data(), data.n)) {
    std::fprintf(stderr, "bench_ann: flat codes failed\n");
    std::exit(1);
  }
  double build_s = bench_now() - t0;
  std::vector<int64_t> labels(data.nq * K, -1);
  auto search = [&](size_t i, float *dist, int64_t *lab) {
    flat_scan_coded(codes, data.xb.data(), nullptr, data.n, data.d, data.xq.data() + i * data.d, 1,
                    0, K, dist, lab);
  };
  double qps = time_queries(data, nq_timed, labels, search);
  for (size_t i = nq_timed; i < data.nq; i++)
    search(i, std::vector<float>(K).data(), labels.data() + i * K);
  /* rows (floats) + codes (one byte a value + a scale and figures per row) + an id */
  double per_vec = (double)data.d * 4 + (double)data.d + 12 + 8;
  report("flat-coded", data, "exact", build_s, per_vec, recall_at_10(data, labels), qps);
  flat_codes_free(codes);
}

void run_ivf(const Data &data, int nlist, int per_centroid, int niter, int kfactor,
             const std::vector<int> &nprobes) {
  auto *quantizer = new faiss::IndexFlatIP(data.d);
  auto *ivf = new faiss::IndexIVFScalarQuantizer(
      quantizer, data.d, nlist, faiss::ScalarQuantizer::QT_8bit, faiss::METRIC_INNER_PRODUCT);
  ivf->own_fields = true;
  ivf->cp.niter = niter;
  std::unique_ptr<faiss::Index> top;
  faiss::IndexRefineFlat *refine = nullptr;
  if (kfactor > 0) {
    refine = new faiss::IndexRefineFlat(ivf);
    refine->own_fields = true;
    refine->k_factor = (float)kfactor;
    top.reset(refine);
  } else {
    top.reset(ivf);
  }
  size_t ntrain = std::min(data.n, (size_t)per_centroid * (size_t)nlist);
  omp_set_num_threads(2);
  double t0 = bench_now();
  top->train((faiss::Index::idx_t)ntrain, data.xb.data()); /* rows are in random order */
  double train_s = bench_now() - t0;
  top->add((faiss::Index::idx_t)data.n, data.xb.data());
  double build_s = bench_now() - t0;
  double per_vec = (double)serialized_bytes(top.get()) / (double)data.n;
  omp_set_num_threads(1);
  std::fprintf(stderr, "ivf%d: trained in %.1f s, built in %.1f s\n", nlist, train_s, build_s);
  for (int nprobe : nprobes) {
    ivf->nprobe = (size_t)nprobe;
    std::vector<int64_t> labels(data.nq * K, -1);
    double qps = time_queries(data, data.nq, labels, [&](size_t i, float *dist, int64_t *lab) {
      top->search(1, data.xq.data() + i * data.d, K, dist, lab);
    });
    char params[160];
    std::snprintf(params, sizeof params,
                  "IVF%d,SQ8%s nprobe=%d (train %d/centroid, %d iters, %.0f s)", nlist,
                  kfactor ? (",RFlat k_factor=" + std::to_string(kfactor)).c_str() : "", nprobe,
                  per_centroid, niter, train_s);
    report(kfactor ? "faiss-ivf-sq8-refine" : "faiss-ivf-sq8", data, params, build_s, per_vec,
           recall_at_10(data, labels), qps);
  }
  /* deletes: IVF removes ids from its lists (every list is walked per call) */
  std::vector<faiss::Index::idx_t> gone;
  for (size_t i = 0; i < 1000 && i < data.n; i++)
    gone.push_back((faiss::Index::idx_t)(i * (data.n / 1000)));
  faiss::IDSelectorBatch sel(gone.size(), gone.data());
  t0 = bench_now();
  size_t removed = ivf->remove_ids(sel);
  std::fprintf(stderr, "ivf%d: remove_ids of %zu ids (one call) took %.1f ms\n", nlist, removed,
               (bench_now() - t0) * 1e3);
}

/* One inverted list of IVF-coded: its float rows, their int8 codes, ids. */
struct CodedList {
  const float *rows;
  const int64_t *ids;
  size_t n;
  flat_codes *codes;
};

/* The k best of the nprobe lists nearest q: each list's exact top k by the
 * coded scan, merged. */
void ivfcoded_search(const std::vector<CodedList> &lists, const float *centroids, size_t d,
                     const float *q, int nprobe, float *dist, int64_t *lab) {
  std::vector<float> cd(nprobe), ld(K);
  std::vector<int64_t> probe(nprobe), ll(K);
  flat_scan(centroids, nullptr, lists.size(), d, q, 1, 0, nprobe, cd.data(), probe.data());
  std::vector<std::pair<float, int64_t>> best;
  for (int p = 0; p < nprobe && probe[p] >= 0; p++) {
    const CodedList &l = lists[probe[p]];
    if (!l.n) continue;
    flat_scan_coded(l.codes, l.rows, l.ids, l.n, d, q, 1, 0, K, ld.data(), ll.data());
    for (int j = 0; j < K && ll[j] >= 0; j++) best.emplace_back(-ld[j], ll[j]);
  }
  size_t keep = std::min(best.size(), (size_t)K);
  std::partial_sort(best.begin(), best.begin() + keep, best.end());
  for (size_t j = 0; j < (size_t)K; j++) {
    dist[j] = j < keep ? -best[j].first : -1e30f;
    lab[j] = j < keep ? best[j].second : -1;
  }
}

/* FAISS IVF<nlist>,Flat over inner products (what index_factory makes for
 * idx.c's automatic choice), trained on PER_CENTROID * NLIST rows in NITER
 * k-means rounds, then holding every row; built on 2 threads. */
/* With BENCH_IVF_CACHE=DIR, a built IVF is kept in DIR (its file named from
 * the base's path, N, nlist and the training recipe, with its train and
 * build times beside it) and read back by later runs, so alternating rounds
 * (ann_scale.py --rounds) do not build it again. */
struct IvfFlat {
  faiss::IndexFlatIP quantizer;
  faiss::IndexIVFFlat ivf;
  double train_s, build_s;
  IvfFlat(const Data &data, int nlist, int per_centroid, int niter)
      : quantizer(data.d), ivf(&quantizer, data.d, nlist, faiss::METRIC_INNER_PRODUCT) {
    const char *cache = std::getenv("BENCH_IVF_CACHE");
    std::string file;
    if (cache) {
      file = std::string(cache) + "/ivf-" + bench_file_key(data.base) + "-" +
             std::to_string(data.n) + "-" + std::to_string(nlist) + "-" +
             std::to_string(per_centroid) + "-" + std::to_string(niter) + ".faiss";
      if (read_back(file)) return;
    }
    ivf.cp.niter = niter;
    size_t ntrain = std::min(data.n, (size_t)per_centroid * (size_t)nlist);
    omp_set_num_threads(2);
    double t0 = bench_now();
    ivf.train((faiss::Index::idx_t)ntrain, data.xb.data());
    train_s = bench_now() - t0;
    ivf.add((faiss::Index::idx_t)data.n, data.xb.data());
    build_s = bench_now() - t0;
    omp_set_num_threads(1);
    if (cache) {
      faiss::write_index(&ivf, file.c_str());
      FILE *f = std::fopen((file + ".times").c_str(), "w");
      if (f) {
        std::fprintf(f, "%.3f %.3f\n", train_s, build_s);
        std::fclose(f);
      }
    }
  }

  /* The IVF kept in file, moved into this one; false when there is none. */
  bool read_back(const std::string &file) {
    FILE *f = std::fopen((file + ".times").c_str(), "r");
    if (!f) return false;
    bool timed = std::fscanf(f, "%lf %lf", &train_s, &build_s) == 2;
    std::fclose(f);
    std::unique_ptr<faiss::Index> kept(timed ? faiss::read_index(file.c_str()) : nullptr);
    auto *kept_ivf = dynamic_cast<faiss::IndexIVFFlat *>(kept.get());
    auto *kept_q = kept_ivf ? dynamic_cast<faiss::IndexFlat *>(kept_ivf->quantizer) : nullptr;
    if (!kept_q || kept_ivf->nlist != ivf.nlist || kept_ivf->d != ivf.d) return false;
    quantizer.add(kept_q->ntotal, kept_q->get_xb());
    ivf.replace_invlists(kept_ivf->invlists, true); /* the lists change hands */
    kept_ivf->own_invlists = false;
    ivf.is_trained = true;
    ivf.ntotal = kept_ivf->ntotal;
    std::fprintf(stderr, "ivf%zu: read back from %s\n", ivf.nlist, file.c_str());
    return true;
  }
};

void run_ivfcoded(const Data &data, int nlist, int per_centroid, int niter,
                  const std::vector<int> &nprobes) {
  double t0 = bench_now();
  IvfFlat built(data, nlist, per_centroid, niter);
  faiss::IndexFlatIP &quantizer = built.quantizer;
  faiss::IndexIVFFlat &ivf = built.ivf;
  double train_s = built.train_s;
  std::vector<CodedList> lists(nlist);
  for (int l = 0; l < nlist; l++) {
    CodedList &cl = lists[l];
    cl.n = ivf.invlists->list_size(l);
    cl.rows = (const float *)ivf.invlists->get_codes(l);
    cl.ids = (const int64_t *)ivf.invlists->get_ids(l);
    if (flat_codes_new(data.d, &cl.codes) || flat_codes_append(cl.codes, cl.rows, cl.n))
      std::exit(1);
  }
  double build_s = bench_now() - t0;
  /* floats + codes + scale/figures + id per row; centroids */
  double per_vec = (double)data.d * 5 + 12 + 8 + (double)nlist * data.d * 4 / (double)data.n;
  for (int nprobe : nprobes) {
    std::vector<int64_t> labels(data.nq * K, -1);
    double qps = time_queries(data, data.nq, labels, [&](size_t i, float *dist, int64_t *lab) {
      ivfcoded_search(lists, quantizer.get_xb(), data.d, data.xq.data() + i * data.d, nprobe, dist,
                      lab);
    });
    char params[160];
    std::snprintf(
        params, sizeof params,
        "IVF%d + our coded scan per list, nprobe=%d (train %d/centroid, %d iters, %.0f s)", nlist,
        nprobe, per_centroid, niter, train_s);
    report("ivf-flat-coded", data, params, build_s, per_vec, recall_at_10(data, labels), qps);
    /* the same lists searched by FAISS: IVF{n},Flat, the server's automatic choice above Flat */
    ivf.nprobe = (size_t)nprobe;
    qps = time_queries(data, data.nq, labels, [&](size_t i, float *dist, int64_t *lab) {
      ivf.search(1, data.xq.data() + i * data.d, K, dist, lab);
    });
    std::snprintf(params, sizeof params,
                  "IVF%d,Flat nprobe=%d (train %d/centroid, %d iters, %.0f s)", nlist, nprobe,
                  per_centroid, niter, train_s);
    report("faiss-ivf-flat", data, params, build_s,
           (double)data.d * 4 + 8 + (double)nlist * data.d * 4 / (double)data.n,
           recall_at_10(data, labels), qps);
  }
  for (CodedList &cl : lists) flat_codes_free(cl.codes);
}

/* What idx.c does for an IVF,Flat index below 20 queries: ivf_scan_nib
 * over FAISS's own lists (faiss_Index_ivf_flat_view) and 4-bit codes, one
 * query at a time, at each nprobe; beside it ivf_scan over the floats and
 * over int8 codes, and FAISS's own search of the same index at the same
 * nprobe; and the exact coded scan (the 10x baseline) first, in the same
 * run. */
void run_ivfscan(const Data &data, int nlist, int per_centroid, int niter, size_t flat_timed,
                 const std::vector<int> &nprobes) {
  run_flat(data, std::min(data.nq, flat_timed));
  IvfFlat built(data, nlist, per_centroid, niter);
  std::fprintf(stderr, "ivf%d: trained in %.1f s, built in %.1f s\n", nlist, built.train_s,
               built.build_s);
  FaissIVFFlatView view;
  if (!faiss_Index_ivf_flat_view(reinterpret_cast<const FaissIndex *>(&built.ivf), &view)) {
    std::fprintf(stderr, "bench_ann: no IVFFlat view\n");
    std::exit(1);
  }
  double per_vec = (double)serialized_bytes(&built.ivf) / (double)data.n;
  /* int8 codes of the centroids and of each list, as idx.c keeps them */
  double t0 = bench_now();
  flat_codes *centroid_codes = nullptr;
  std::vector<flat_codes *> list_codes(view.nlist, nullptr);
  bool made = !flat_codes_new(data.d, &centroid_codes) &&
              !flat_codes_append(centroid_codes, view.centroids, view.nlist);
  for (size_t l = 0; l < view.nlist && made; l++) {
    const float *rows;
    const idx_t *ids;
    size_t n;
    faiss_IVFFlatView_list(&view, l, &rows, &ids, &n);
    made = !flat_codes_new(data.d, &list_codes[l]) && !flat_codes_append(list_codes[l], rows, n);
  }
  if (!made) {
    std::fprintf(stderr, "bench_ann: no codes\n");
    std::exit(1);
  }
  double codes_s = bench_now() - t0;
  /* 4-bit codes of the centroids and of each list's residuals: what idx.c
   * keeps and searches (ivf_scan_nib) */
  t0 = bench_now();
  nib_codes *centroid_nib = nullptr;
  std::vector<nib_codes *> list_nib(view.nlist, nullptr);
  made = !nib_codes_new(data.d, &centroid_nib) &&
         !nib_codes_append(centroid_nib, view.centroids, view.nlist, nullptr);
  for (size_t l = 0; l < view.nlist && made; l++) {
    const float *rows;
    const idx_t *ids;
    size_t n;
    faiss_IVFFlatView_list(&view, l, &rows, &ids, &n);
    made = !nib_codes_new(data.d, &list_nib[l]) &&
           !nib_codes_append(list_nib[l], rows, n, view.centroids + l * data.d);
  }
  if (!made) {
    std::fprintf(stderr, "bench_ann: no 4-bit codes\n");
    std::exit(1);
  }
  double nib_s = bench_now() - t0;
  const ivf_nib nib = {centroid_nib, list_nib.data()};
  /* levels, lo, step and norm^2 per row */
  double nib_bytes = (double)nib_query_len(data.d) / 2 + 3.0 * sizeof(float);
  /* codes, scale, bound and norm per row */
  double code_bytes = data.d + 3.0 * sizeof(float);
  const ivf_codes centroids_only = {centroid_codes, nullptr};
  const ivf_codes all_codes = {centroid_codes, list_codes.data()};
  struct variant {
    const char *name, *what;
    const ivf_codes *codes;
    double extra_bytes;
  } variants[] = {
      {"idx-ivf-scan", "floats", nullptr, 0},
      {"idx-ivf-scan-cc", "centroids by their int8 codes, lists by their floats", &centroids_only,
       code_bytes * (double)view.nlist / (double)data.n},
      {"idx-ivf-scan-codes", "centroids and lists by their int8 codes", &all_codes,
       code_bytes * (double)(view.nlist + data.n) / (double)data.n},
  };
  for (int nprobe : nprobes) {
    std::vector<int64_t> labels(data.nq * K, -1);
    char params[240];
    for (const variant &w : variants) {
      double qps = time_queries(data, data.nq, labels, [&](size_t i, float *dist, int64_t *lab) {
        if (ivf_scan(&view, w.codes, data.d, data.xq.data() + i * data.d, 1, (size_t)nprobe, K,
                     dist, lab))
          std::exit(1);
      });
      std::snprintf(params, sizeof params,
                    "IVF%d,Flat searched by ivf_scan (idx.c), %s, nprobe=%d (train %d/centroid, %d "
                    "iters, %.0f s; codes made in %.1f s)",
                    nlist, w.what, nprobe, per_centroid, niter, built.train_s, codes_s);
      report(w.name, data, params, built.build_s, per_vec + w.extra_bytes,
             recall_at_10(data, labels), qps);
    }
    double nib_qps = time_queries(data, data.nq, labels, [&](size_t i, float *dist, int64_t *lab) {
      if (ivf_scan_nib(&view, &nib, data.d, data.xq.data() + i * data.d, 1, (size_t)nprobe,
                       IVF_NIB_MARGIN, K, dist, lab))
        std::exit(1);
    });
    std::snprintf(params, sizeof params,
                  "IVF%d,Flat searched by ivf_scan_nib (idx.c's default), 4-bit codes, "
                  "margin %.1f, nprobe=%d (codes made in %.1f s)",
                  nlist, (double)IVF_NIB_MARGIN, nprobe, nib_s);
    report("idx-ivf-scan-nib", data, params, built.build_s,
           per_vec + nib_bytes * (double)(view.nlist + data.n) / (double)data.n,
           recall_at_10(data, labels), nib_qps);
    built.ivf.nprobe = (size_t)nprobe;
    double qps = time_queries(data, data.nq, labels, [&](size_t i, float *dist, int64_t *lab) {
      built.ivf.search(1, data.xq.data() + i * data.d, K, dist, lab);
    });
    std::snprintf(params, sizeof params, "IVF%d,Flat nprobe=%d, FAISS's own search", nlist, nprobe);
    report("faiss-ivf-flat", data, params, built.build_s, per_vec, recall_at_10(data, labels), qps);
  }
  flat_codes_free(centroid_codes);
  for (flat_codes *c : list_codes) flat_codes_free(c);
  nib_codes_free(centroid_nib);
  for (nib_codes *c : list_nib) nib_codes_free(c);
}

void run_hnsw(const Data &data, int m, int ef_construction, int threads,
              const std::vector<int> &efs) {
  faiss::IndexHNSWFlat ix((int)data.d, m, faiss::METRIC_INNER_PRODUCT);
  ix.hnsw.efConstruction = ef_construction;
  omp_set_num_threads(threads);
  double t0 = bench_now();
  ix.add((faiss::Index::idx_t)data.n, data.xb.data());
  double build_s = bench_now() - t0;
  double per_vec = (double)serialized_bytes(&ix) / (double)data.n;
  omp_set_num_threads(1);
  for (int ef : efs) {
    ix.hnsw.efSearch = ef;
    std::vector<int64_t> labels(data.nq * K, -1);
    double qps = time_queries(data, data.nq, labels, [&](size_t i, float *dist, int64_t *lab) {
      ix.search(1, data.xq.data() + i * data.d, K, dist, lab);
    });
    char params[160];
    std::snprintf(params, sizeof params,
                  "HNSW%d,Flat efConstruction=%d efSearch=%d (%d build threads)", m,
                  ef_construction, ef, threads);
    report("faiss-hnsw", data, params, build_s, per_vec, recall_at_10(data, labels), qps);
  }
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 9) {
    std::fprintf(stderr, "usage: bench_ann BASE N D QUERIES NQ GT MODE ARGS...\n");
    return 2;
  }
  Data data;
  data.base = argv[1];
  data.n = std::strtoul(argv[2], nullptr, 10);
  data.d = std::strtoul(argv[3], nullptr, 10);
  data.nq = std::strtoul(argv[5], nullptr, 10);
  data.xb = bench_read_rows<float>(argv[1], data.n * data.d);
  data.xq = bench_read_rows<float>(argv[4], data.nq * data.d);
  data.gt = bench_read_rows<int>(argv[6], data.nq * K);
  std::string mode = argv[7];
  omp_set_num_threads(1);
  if (mode == "flat") {
    run_flat(data, std::min(data.nq, (size_t)std::atoi(argv[8])));
  } else if (mode == "ivf" && argc >= 13) {
    run_ivf(data, std::atoi(argv[8]), std::atoi(argv[9]), std::atoi(argv[10]), std::atoi(argv[11]),
            parse_list(argv[12]));
  } else if (mode == "ivfcoded" && argc >= 12) {
    run_ivfcoded(data, std::atoi(argv[8]), std::atoi(argv[9]), std::atoi(argv[10]),
                 parse_list(argv[11]));
  } else if (mode == "ivfscan" && argc >= 13) {
    run_ivfscan(data, std::atoi(argv[8]), std::atoi(argv[9]), std::atoi(argv[10]),
                std::strtoul(argv[11], nullptr, 10), parse_list(argv[12]));
  } else if (mode == "hnsw" && argc >= 12) {
    run_hnsw(data, std::atoi(argv[8]), std::atoi(argv[9]), std::atoi(argv[10]),
             parse_list(argv[11]));
  } else {
    std::fprintf(stderr, "bench_ann: unknown mode or missing arguments: %s\n", mode.c_str());
    return 2;
  }
  return 0;
}
