#!/bin/sh
# tests/bench/ingest/crash_bench.sh - the crash-safety test of `retro index`
# with 200 SIGKILLs (CI runs 20): every acknowledged document survives whole,
# no partial document, index count == live chunk count, self-search works.
#
#   tests/bench/ingest/crash_bench.sh [BUILD_DIR] [ROUNDS]
set -eu
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BUILD=${1:-$ROOT/build}
ROUNDS=${2:-200}
ninja -C "$BUILD" server/retro tests/server/engine-models.stamp >/dev/null
exec /usr/bin/python3 "$ROOT/tests/server/test_ingest_crash.py" "$BUILD/server/retro" \
  "$BUILD/tests/server/engine-models" --rounds "$ROUNDS" --docs 1000 --fresh-every 10
