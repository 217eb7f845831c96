/* bench_hnswlib.cpp - hnswlib's own C++ (the headers shipped inside npm
 * hnswlib-node), compiled for this CPU (-O3 -march=native: its AVX-512
 * distance), searched one query at a time on one thread with no binding in
 * between: the strongest form of the peer, beside bench_hnswlib.mjs (what
 * a Node program calls). Prints one JSON object per efSearch, like
 * bench_ann. Driven by ann_scale.py. Not run by CI.
 *
 *   [HNSWLIB_CACHE=DIR] bench_hnswlib BASE N D QUERIES NQ GT M EF_CONSTRUCTION EF,...
 *
 * With HNSWLIB_CACHE, a graph that bench_hnswlib.mjs (or this program) built
 * for the same BASE, N, M and efConstruction is read back (the same file
 * format: both call hnswlib's saveIndex), with the build time recorded
 * then; otherwise the graph is built here on one thread. */
#include "bench_rows.h"
#include "hnswlib.h"

#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unordered_set>
#include <vector>

namespace {

const int K = 10;

/* The cache file's name, as bench_hnswlib.mjs makes it. */
std::string cache_file(const char *dir, const std::string &base, size_t n, int m, int efc) {
  return std::string(dir) + "/hnswlib-" + bench_file_key(base) + "-" + std::to_string(n) + "-" +
         std::to_string(m) + "-" + std::to_string(efc) + ".bin";
}

bool exists(const std::string &p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

} // namespace

int main(int argc, char **argv) {
  if (argc < 10) {
    std::fprintf(stderr, "usage: bench_hnswlib BASE N D QUERIES NQ GT M EF_CONSTRUCTION EF,...\n");
    return 2;
  }
  const std::string base = argv[1];
  const size_t n = std::strtoul(argv[2], nullptr, 10), d = std::strtoul(argv[3], nullptr, 10);
  const size_t nq = std::strtoul(argv[5], nullptr, 10);
  const int m = std::atoi(argv[7]), efc = std::atoi(argv[8]);
  std::vector<float> xq = bench_read_rows<float>(argv[4], nq * d);
  std::vector<int> gt = bench_read_rows<int>(argv[6], nq * K);
  hnswlib::InnerProductSpace space(d);
  const char *cache = std::getenv("HNSWLIB_CACHE");
  std::string file = cache ? cache_file(cache, base, n, m, efc) : "/tmp/hnswlib-bench-cpp.bin";
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> ix;
  double build_s = 0;
  if (cache && exists(file) && exists(file + ".json")) {
    ix.reset(new hnswlib::HierarchicalNSW<float>(&space, file));
    std::ifstream meta(file + ".json");
    std::stringstream text;
    text << meta.rdbuf();
    std::string s = text.str(); /* {"build_s":123.4} */
    build_s = std::atof(s.c_str() + s.find(':') + 1);
    std::fprintf(stderr, "hnswlib-cpp: read the graph built earlier from %s\n", file.c_str());
  } else {
    std::vector<float> xb = bench_read_rows<float>(base.c_str(), n * d);
    ix.reset(new hnswlib::HierarchicalNSW<float>(&space, n, m, efc, 100));
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) ix->addPoint(xb.data() + i * d, i);
    build_s = bench_now() - t0;
    ix->saveIndex(file);
    if (cache) std::ofstream(file + ".json") << "{\"build_s\":" << build_s << "}";
  }
  struct stat st;
  stat(file.c_str(), &st);
  const double bytes_per_vec = (double)st.st_size / (double)n;
  if (!cache) std::remove(file.c_str());
  std::stringstream efs(argv[9]);
  std::string item;
  while (std::getline(efs, item, ',')) {
    const int ef = std::atoi(item.c_str());
    ix->setEf(ef);
    std::vector<std::vector<hnswlib::labeltype>> found(nq);
    for (size_t i = 0; i < nq; i++) ix->searchKnn(xq.data() + i * d, K); /* untimed: warms up */
    double t0 = bench_now();
    for (size_t i = 0; i < nq; i++) {
      auto top = ix->searchKnn(xq.data() + i * d, K);
      while (!top.empty()) {
        found[i].push_back(top.top().second);
        top.pop();
      }
    }
    const double qps = (double)nq / (bench_now() - t0);
    size_t hits = 0;
    for (size_t i = 0; i < nq; i++) {
      std::unordered_set<int> truth(gt.begin() + i * K, gt.begin() + (i + 1) * K);
      for (hnswlib::labeltype l : found[i]) hits += truth.count((int)l);
    }
    std::printf(
        "{\"index\": \"hnswlib-cpp\", \"n\": %zu, \"params\": \"M=%d efConstruction=%d "
        "efSearch=%d (C++, -march=native)\", \"build_s\": %.2f, \"bytes_per_vec\": %.1f, "
        "\"recall\": %.4f, \"qps\": %.1f}\n",
        n, m, efc, ef, build_s, bytes_per_vec, (double)hits / (double)(nq * K), qps);
    std::fflush(stdout);
  }
  return 0;
}
