#!/bin/sh
# flat_scan.sh - builds and runs bench_flat_scan (FAISS IndexFlatIP vs
# index/flat_scan.c, one query at a time) for a few sizes. Not run by CI.
#   tests/bench/index/flat_scan.sh [BUILD_DIR]   (default build-bench-index, release)
# INDEX=path/to/index.faiss (a flat one, e.g. a server's data dir's) adds a
# run over its real vectors, its rows as the queries.
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
build=${1:-$root/build-bench-index}
[ -d "$build" ] || meson setup "$build" "$root" --buildtype=release >/dev/null
ninja -C "$build" index/libindex.a proto/libproto.a >/dev/null
cc -std=c11 -O2 -D_GNU_SOURCE -fopenmp -I"$root/index" -I"$root/proto" "$root/tests/bench/index/bench_flat_scan.c" \
  "$build/index/libindex.a" "$build/proto/libproto.a" -lfaiss $(pkg-config --libs openblas) -lstdc++ -lm -lpthread \
  -o "$build/bench_flat_scan"
echo "# $(date -u +%FT%TZ) $(nproc) cores, one thread, 500 queries, k=20"
for cfg in "5000 32" "5000 256" "44370 256" "50000 256" "20000 768"; do
  "$build/bench_flat_scan" $cfg 20 500
done
if [ -n "${INDEX:-}" ]; then "$build/bench_flat_scan" 0 0 20 1000 "$INDEX"; fi
