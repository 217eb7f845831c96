#!/bin/sh
# tests/bench/encoder/kernels.sh - the encoder's products one by one on one
# thread (bench_kernels.c): the F16 few-row kernel over rows and over panels
# against the F32 path (our small kernel, then sgemm). Not run by CI.
#   usage: tests/bench/encoder/kernels.sh [SECONDS=1]   (per shape and row count)
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
build="$root/build-bench-encoder"
[ -d "$build" ] || meson setup "$build" "$root" --buildtype=release >/dev/null
ninja -C "$build" model/libmodel.a >/dev/null
onednn=
! grep -q RETRO_HAVE_ONEDNN "$build/build.ninja" || onednn="-ldnnl -fopenmp"
cc -std=c11 -O2 -D_GNU_SOURCE -I"$root/model" "$root/tests/bench/encoder/bench_kernels.c" \
  "$build/model/libmodel.a" $(pkg-config --libs openblas) $onednn -lm -lpthread -o "$build/bench_kernels"
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$build/bench_kernels" "${1:-1}"
