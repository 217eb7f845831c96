/* bench_rows.h - what bench_ann.cpp and bench_hnswlib.cpp share: a
 * monotonic clock, reading raw rows (float32 vectors, int32 ground truth)
 * from the files ann_scale.py writes, and the base's path as part of a
 * cache file's name. */
#ifndef RETRO_BENCH_ROWS_H
#define RETRO_BENCH_ROWS_H

#include <time.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

inline double bench_now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* path made fit for a cache file's name, as bench_hnswlib.mjs makes it:
 * every character outside [A-Za-z0-9_] replaced by '_'. */
inline std::string bench_file_key(const std::string &path) {
  std::string key = path;
  for (char &c : key)
    if (!std::isalnum((unsigned char)c) && c != '_') c = '_';
  return key;
}

/* The first count values of type T in path; exits with a message if the
 * file is shorter. */
template <typename T>
std::vector<T> bench_read_rows(const char *path, size_t count) {
  std::vector<T> v(count);
  FILE *f = std::fopen(path, "rb");
  if (!f || std::fread(v.data(), sizeof(T), count, f) != count) {
    std::fprintf(stderr, "cannot read %zu values from %s\n", count, path);
    std::exit(1);
  }
  std::fclose(f);
  return v;
}

#endif
