#!/bin/sh
# tests/bench/ingest/crash_bench.sh - the crash-safety test of `retro index`
# with 200 SIGKILLs (CI runs 20): every acknowledged document survives whole,
# no partial document, index count == live chunk count, self-search works.
#
#   tests/bench/ingest/crash_bench.sh [BUILD_DIR] [ROUNDS]
set -eu
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
exec "$ROOT/tests/bench/crash_rounds.sh" test_ingest_crash "${1:-$ROOT/build}" "${2:-200}" \
  --docs 1000 --fresh-every 10
