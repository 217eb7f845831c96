#!/bin/sh
# tests/bench/index/run.sh - builds and runs the index benchmark (not run by
# CI): recall@10 vs exact search, queries/s and build throughput for each
# factory string on N clustered 384-d vectors, next to plain FAISS
# IndexFlatIP (the peer) in the same run.
#   usage: tests/bench/index/run.sh [N=100000] [NQ=200] [factory ...]
# Builds the project in build-bench-index/ (release) and a temp data dir.
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
build="$root/build-bench-index"
n=${1:-100000}
nq=${2:-200}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
[ -d "$build" ] || meson setup "$build" "$root" --buildtype=release >/dev/null
ninja -C "$build" index/libindex.a storage/libstorage.a proto/libproto.a >/dev/null
cc -std=c11 -O2 -D_GNU_SOURCE -fopenmp -I"$root/index" -I"$root/storage" -I"$root/proto" -I"$root/tests/index" \
  $(pkg-config --cflags openblas) \
  "$root/tests/bench/index/bench_idx.c" \
  "$build/index/libindex.a" "$build/storage/libstorage.a" "$build/proto/libproto.a" \
  -lfaiss $(pkg-config --libs openblas) -llmdb -lstdc++ -lm -lpthread -o "$build/bench_idx"
data=$(mktemp -d /tmp/retro-bench-index-XXXXXX)
trap 'rm -rf "$data"' EXIT
echo "# $(date -u +%FT%TZ) $(nproc) cores, N=$n NQ=$nq, 384-d, k=10"
"$build/bench_idx" "$data" "$n" "$nq" "$@"
