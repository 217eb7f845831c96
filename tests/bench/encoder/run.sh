#!/bin/sh
# tests/bench/encoder/run.sh - the encoder benchmark (not run by CI):
# sentences/s at sequence lengths 16, 64, 128 and batch 1 and 32 for a
# 6-layer, 384-wide BERT with random weights, ours (C, model/bert.c) and
# PyTorch (model/train/bert_model.py) on the same weights, inputs and thread
# count, in the same run; the ratio; and our GFLOP/s as a fraction of the
# machine's sgemm GFLOP/s measured here with the same thread count.
#   usage: [MODEL=dir] tests/bench/encoder/run.sh [THREADS=2] [SECONDS=3]
# MODEL: an encoder directory to measure instead (e.g. model/default/encoder);
# for an F16 file the table adds our F32-weights figure (BERT_F16=0).
# Builds the project in build-bench-encoder/ (release) and keeps the model there.
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
build="$root/build-bench-encoder"
threads=${1:-2}
secs=${2:-3}
py=${PYTHON:-/usr/bin/python3}
[ -d "$build" ] || meson setup "$build" "$root" --buildtype=release >/dev/null
ninja -C "$build" model/libmodel.a proto/libproto.a >/dev/null
cc -std=c11 -O2 -D_GNU_SOURCE -I"$root/model" -I"$root/proto" $(pkg-config --cflags openblas) \
  "$root/tests/bench/encoder/bench_encoder.c" "$build/model/libmodel.a" "$build/proto/libproto.a" \
  $(pkg-config --libs openblas jansson) -lm -lpthread -o "$build/bench_encoder"
data=$(mktemp -d /tmp/retro-bench-encoder-XXXXXX)
trap 'rm -rf "$data"' EXIT
# the model (random weights, ~90 MB) is made once and kept in the build dir
model=${MODEL:-$build/bench-model/bench-bert-L6-H384}
[ -f "$model/model.safetensors" ] || "$py" "$root/model/train/make_random_bert.py" \
  "$build/bench-model" --set bench --vocab-dir "$root/../shared/data" >/dev/null
echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), threads=$threads, ${secs}s per point"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
export OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads"
"$build/bench_encoder" "$model" "$threads" "$secs" > "$data/ours.txt"
"$py" "$root/tests/bench/encoder/bench_torch.py" "$model" "$threads" "$secs" > "$data/torch.txt"
grep '^#' "$data/torch.txt"
"$py" - "$data/ours.txt" "$data/torch.txt" <<'PY'
import sys
ours, blas, f32, torch, peak = {}, {}, {}, {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "sgemm":
        peak[" ".join(f[1:4])] = float(f[5])
    elif f[0] in ("ours", "blas", "f32"):
        {"ours": ours, "blas": blas, "f32": f32}[f[0]][(int(f[1]), int(f[2]))] = tuple(map(float, f[3:8]))
for line in open(sys.argv[2]):
    f = line.split()
    if f[0] == "torch":
        torch[(int(f[1]), int(f[2]))] = tuple(map(float, f[3:7]))
for k, v in peak.items():
    print(f"sgemm {k}: {v:.1f} GFLOP/s")
ref = peak.get("2048 2048 2048", max(peak.values()))
nan = (float("nan"),) * 5
print(f"{'len':>4} {'batch':>5} {'ours sent/s':>12} {'ours ms':>9} {'torch sent/s':>13} "
      f"{'torch ms':>9} {'ratio':>6} {'GFLOP/s':>8} {'of sgemm':>8}  {'blas-threads sent/s':>19}"
      f"  {'per-CPU-s ours/torch':>20}  {'min ms ours/torch':>17}" + ("  ours with F32 weights: sent/s, min ms" if f32 else ""))
for k in sorted(ours):
    o, t, b = ours[k], torch.get(k, nan), blas.get(k, nan)
    print(f"{k[0]:>4} {k[1]:>5} {o[0]:>12.1f} {o[1]:>9.3f} {t[0]:>13.1f} {t[1]:>9.3f} "
          f"{o[0] / t[0]:>6.2f} {o[2]:>8.1f} {100 * o[2] / ref:>7.0f}%  {b[0]:>19.1f}"
          f"  {o[3]:>9.1f}/{t[2]:<9.1f}{o[3] / t[2]:>5.2f}x  {o[4]:>8.2f}/{t[3]:<8.2f}"
          + (f"  {f32[k][0]:>10.1f} {f32[k][4]:>8.2f}" if k in f32 else ""))
print("ratio = ours / torch; of sgemm = our GFLOP/s / sgemm 2048^3 GFLOP/s (same threads);")
print("blas-threads = the alternative design (pool of 1, OpenBLAS with THREADS threads);")
print("per-CPU-s = sentences per second of process CPU time (less distorted by a busy machine);")
print("min ms = the fastest single call (latency when not preempted).")
PY
