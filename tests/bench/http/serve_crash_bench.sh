#!/bin/sh
# tests/bench/http/serve_crash_bench.sh - `retro serve` SIGKILLed 100 times
# under concurrent HTTP ingest (JSON and NDJSON), updates, deletes and
# searches (CI runs 10 rounds): every acknowledged document whole, no partial
# document, deleted documents gone, index counts == live chunks, documents
# found by dense, lexical and hybrid search; retro verify clean at the end.
#
#   tests/bench/http/serve_crash_bench.sh [BUILD_DIR] [ROUNDS]
set -eu
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
exec "$ROOT/tests/bench/crash_rounds.sh" test_serve_crash "${1:-$ROOT/build}" "${2:-100}"
