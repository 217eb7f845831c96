#!/bin/sh
# tests/bench/encoder/run.sh - the encoder benchmark (not run by CI):
# sentences/s at sequence lengths 16, 64, 128 and batch 1 and 32 for a
# 6-layer, 384-wide BERT with random weights, ours (C, model/bert.c) and
# PyTorch (model/train/bert_model.py) and ONNX Runtime (the same model
# exported by torch.onnx.export, run by npm onnxruntime-node's CPU provider)
# on the same weights, inputs and thread count, in the same run; the ratios;
# and our GFLOP/s as a fraction of the machine's sgemm GFLOP/s measured here
# with the same thread count.
#   usage: [MODEL=dir] [TORCH=0] [ORT=0] [ROUNDS=N] tests/bench/encoder/run.sh [THREADS=2] [SECONDS=3]
# MODEL: an encoder directory to measure instead (e.g. model/default/encoder);
# for an F16 file the table adds our F32-weights figure (BERT_F16=0), and on a
# CPU with AVX-512 our figure with the F16 products at AVX2 width.
# ROUNDS=N: then N rounds of ours and ONNX Runtime taking turns on the points
# in POINTS (default 16x1,128x32), each round's ratios and their median: on
# this VM a single run's ratio moves with the minute it ran in.
# TORCH=0 / ORT=0 leave that peer out. ORT_CACHE: where onnxruntime-node
# (pinned below) is installed on first use (default build-bench-encoder/npm).
# Builds the project in build-bench-encoder/ (release) and keeps the model there.
set -eu
# --ignore-scripts: its postinstall only fetches CUDA libraries (from GitHub);
# the CPU provider's library is inside the npm package.
ORT_PACKAGE=onnxruntime-node@1.31.1
root=$(cd "$(dirname "$0")/../../.." && pwd)
build="$root/build-bench-encoder"
threads=${1:-2}
secs=${2:-3}
py=${PYTHON:-/usr/bin/python3}
[ -d "$build" ] || meson setup "$build" "$root" --buildtype=release >/dev/null
ninja -C "$build" model/libmodel.a proto/libproto.a >/dev/null
# a build that found oneDNN does its products with it (model/kernels.c)
onednn=
! grep -q RETRO_HAVE_ONEDNN "$build/build.ninja" || onednn="-ldnnl -fopenmp"
cc -std=c11 -O2 -D_GNU_SOURCE -I"$root/model" -I"$root/proto" $(pkg-config --cflags openblas) \
  "$root/tests/bench/encoder/bench_encoder.c" "$build/model/libmodel.a" "$build/proto/libproto.a" \
  $(pkg-config --libs openblas jansson) $onednn -lm -lpthread -o "$build/bench_encoder"
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
touch "$data/torch.txt" "$data/ort.txt"
[ "${TORCH:-1}" = 0 ] || "$py" "$root/tests/bench/encoder/bench_torch.py" "$model" "$threads" "$secs" > "$data/torch.txt"
# ONNX Runtime: installed once into the cache; the ONNX file is made per run
# (F32 weights, ~28 MB for the default encoder)
ort_skip() { echo "# ONNX Runtime peer left out: $*" >>"$data/ort.txt"; }
if [ "${ORT:-1}" = 0 ]; then
  :
elif ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  ort_skip "node and npm not installed"
else
  cache=${ORT_CACHE:-$build/npm}
  mkdir -p "$cache"
  cache=$(cd "$cache" && pwd) # node's createRequire needs an absolute path
  if [ "$(cat "$cache/.installed" 2>/dev/null)" != "$ORT_PACKAGE" ]; then
    [ -f "$cache/package.json" ] || echo '{"name": "retrod-bench-encoder", "private": true}' >"$cache/package.json"
    (cd "$cache" && timeout 500 npm install --no-audit --no-fund --ignore-scripts "$ORT_PACKAGE" >npm.log 2>&1) &&
      echo "$ORT_PACKAGE" >"$cache/.installed"
  fi
  if [ "$(cat "$cache/.installed" 2>/dev/null)" != "$ORT_PACKAGE" ]; then
    ort_skip "npm install $ORT_PACKAGE failed: $(tail -1 "$cache/npm.log")"
  elif ! "$py" "$root/tests/bench/encoder/export_onnx.py" "$model" "$data/model.onnx" 2>"$data/export.err"; then
    ort_skip "torch.onnx.export failed: $(tail -1 "$data/export.err")"
  else
    vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$model/config.json")
    node "$root/tests/bench/encoder/bench_ort.mjs" "$cache/node_modules" "$data/model.onnx" "$vocab" \
      "$threads" "$secs" >>"$data/ort.txt" || ort_skip "bench_ort.mjs failed"
  fi
fi
grep -h '^#' "$data/torch.txt" "$data/ort.txt" || true
"$py" - "$data/ours.txt" "$data/torch.txt" "$data/ort.txt" <<'PY'
import sys
ours, blas, f32, avx2, torch, ort, peak = {}, {}, {}, {}, {}, {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[0] == "sgemm":
        peak[" ".join(f[1:4])] = float(f[5])
    elif f[0] in ("ours", "blas", "f32", "avx2"):
        {"ours": ours, "blas": blas, "f32": f32, "avx2": avx2}[f[0]][(int(f[1]), int(f[2]))] = tuple(map(float, f[3:8]))
for line in open(sys.argv[2]):
    f = line.split()
    if f[0] == "torch":
        torch[(int(f[1]), int(f[2]))] = tuple(map(float, f[3:7]))
for line in open(sys.argv[3]):
    f = line.split()
    if f and f[0] == "ort":
        ort[(int(f[1]), int(f[2]))] = tuple(map(float, f[3:7]))
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
if ort:
    print(f"\n{'len':>4} {'batch':>5} {'ours sent/s':>12} {'ort sent/s':>11} {'ours/ort':>8}"
          f"  {'per-CPU-s ours/ort':>18}  {'min ms ours/ort':>15} {'ratio':>6}"
          + ("  ours at AVX2: sent/s, min ms, ratio" if avx2 else ""))
    for k in sorted(ours):
        o, r = ours[k], ort.get(k, nan)
        print(f"{k[0]:>4} {k[1]:>5} {o[0]:>12.1f} {r[0]:>11.1f} {o[0] / r[0]:>7.2f}x"
              f"  {o[3]:>8.1f}/{r[2]:<8.1f}{o[3] / r[2]:>5.2f}x  {o[4]:>7.3f}/{r[3]:<7.3f} {r[3] / o[4]:>5.2f}x"
              + (f"  {avx2[k][0]:>10.1f} {avx2[k][4]:>7.3f} {r[3] / avx2[k][4]:>5.2f}x" if k in avx2 else ""))
    print("ort = ONNX Runtime (CPU provider, same threads, inputs and weights as F32);"
          " ours/ort > 1: ours is faster;")
    print("the last ratio is ONNX Runtime's fastest call over ours (latency);"
          " ours at AVX2: the F16 products at AVX2 width instead of AVX-512.")
PY
# alternating rounds (ROUNDS=N): ours, then ONNX Runtime, N times
rounds=${ROUNDS:-0}
if [ "$rounds" -gt 0 ] && [ -f "$data/model.onnx" ]; then
  export POINTS="${POINTS:-16x1,128x32}"
  for r in $(seq 1 "$rounds"); do
    MODES=ours "$build/bench_encoder" "$model" "$threads" "$secs" | sed "s/^/$r /" >>"$data/rounds.txt"
    node "$root/tests/bench/encoder/bench_ort.mjs" "$cache/node_modules" "$data/model.onnx" "$vocab" \
      "$threads" "$secs" | grep '^ort ' | sed "s/^/$r /" >>"$data/rounds.txt"
  done
  "$py" - "$data/rounds.txt" <<'PY'
import statistics
import sys
ours, ort = {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[1] in ("ours", "ort"):  # round, tag, len, batch, sent/s, ms, ..., min ms last
        (ours if f[1] == "ours" else ort)[(int(f[0]), int(f[2]), int(f[3]))] = (float(f[4]), float(f[-1]))
print("\nalternating rounds: ours / ONNX Runtime, sentences/s and fastest call")
for point in sorted({(t, b) for _, t, b in ours}):
    mean_r, min_r = [], []
    for r in sorted({r for r, _, _ in ours}):
        o, x = ours.get((r,) + point), ort.get((r,) + point)
        if o and x:
            mean_r.append(o[0] / x[0])
            min_r.append(x[1] / o[1])
            print(f"  round {r} {point[0]}x{point[1]}: {o[0]:.1f} / {x[0]:.1f} sent/s = {mean_r[-1]:.2f}x,"
                  f" fastest {o[1]:.3f} / {x[1]:.3f} ms = {min_r[-1]:.2f}x")
    if mean_r:
        print(f"{point[0]}x{point[1]}: median over {len(mean_r)} rounds {statistics.median(mean_r):.2f}x"
              f" (sentences/s), {statistics.median(min_r):.2f}x (fastest call)")
PY
fi
