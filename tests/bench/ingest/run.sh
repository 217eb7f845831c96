#!/bin/sh
# tests/bench/ingest/run.sh - ingest pipeline chunks/s against the encoder alone
# on the same chunks (issue 2 goal: ratio >= 0.9). Not part of `meson test`.
#
#   tests/bench/ingest/run.sh [BUILD_DIR] [-- bench_ingest options]
#
# Makes a random 6-layer, 384-wide RoBERTa-style encoder (and the BPE
# tokenizer it shares with the decoder) with tests/server/make_engine_models.py
# --bench into BUILD_DIR/bench-models (once), builds bench_ingest and runs it
# on the default corpus (Python 3.11 docs) at 2 threads and at all CPUs.
set -eu
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BUILD=${1:-$ROOT/build}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
CORPUS=${RETRO_CORPUS:-/usr/share/doc/python3.11/html/_sources}
MODELS=$BUILD/bench-models
if [ ! -f "$MODELS/encoder/model.safetensors" ]; then
  /usr/bin/python3 "$ROOT/tests/server/make_engine_models.py" "$MODELS" --bench
fi
ninja -C "$BUILD" tests/server/bench_ingest >/dev/null
for t in 2 0; do
  "$BUILD/tests/server/bench_ingest" "$MODELS/encoder" "$MODELS/decoder" "$CORPUS" \
    --chunks 3000 --threads $t "$@"
done
