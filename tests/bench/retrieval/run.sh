#!/bin/sh
# tests/bench/retrieval/run.sh - retrieval quality per search mode against
# SQLite FTS5 bm25() over the same chunks, and search latency (bench.py).
#   DATA=<the main job's data dir> tests/bench/retrieval/run.sh [bench.py options]
# e.g. --split tune --alpha 0.3,0.7 while tuning; the default reports the
# "report" half. RETRO: the binary (default build-release/server/retro).
set -eu
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
exec /usr/bin/python3 "$ROOT/tests/bench/retrieval/bench.py" --data "${DATA:-$ROOT/data}" \
  --retro "${RETRO:-$ROOT/build-release/server/retro}" "$@"
