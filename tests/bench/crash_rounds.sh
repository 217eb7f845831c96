#!/bin/sh
# tests/bench/crash_rounds.sh - runs one of the crash-safety tests of
# tests/server for ROUNDS rounds (more than CI does), after building `retro`
# and the test models in BUILD_DIR. Used by tests/bench/ingest/crash_bench.sh
# and tests/bench/http/serve_crash_bench.sh.
#
#   tests/bench/crash_rounds.sh TEST BUILD_DIR ROUNDS [TEST_ARGS...]
#   (TEST: test_ingest_crash or test_serve_crash)
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TEST=$1; BUILD=$2; ROUNDS=$3
shift 3
ninja -C "$BUILD" server/retro tests/server/engine-models.stamp >/dev/null
exec /usr/bin/python3 "$ROOT/tests/server/$TEST.py" "$BUILD/server/retro" \
  "$BUILD/tests/server/engine-models" --rounds "$ROUNDS" "$@"
