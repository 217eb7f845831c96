#!/bin/sh
# soak.sh - starts `retro serve` with tiny random models and runs soak.py
# against it for SOAK_SECONDS (default 600): mixed traffic, no 5xx allowed,
# anonymous RSS must stay flat.   tests/bench/http/soak.sh [BUILD_DIR]
# DATA=dir serves an existing data dir instead (e.g. a copy of the README
# main job's, whose index is large enough for the int8 scan codes); MODELS
# then defaults to model/default.
set -eu
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BUILD=${1:-$ROOT/build-bench}
[ -d "$BUILD" ] || meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
ninja -C "$BUILD" server/retro >/dev/null
WORK=$(mktemp -d)
trap 'kill $RPID 2>/dev/null || true; rm -rf "$WORK"' EXIT
RPID=
DATA=${DATA:-}
MODELS=${MODELS:-${DATA:+$ROOT/model/default}}
if [ -z "$MODELS" ]; then
  MODELS=$WORK/models
  /usr/bin/python3 "$ROOT/tests/http/make_models.py" "$MODELS" >/dev/null
fi
PORT=$((30000 + $$ % 10000))
"$BUILD/server/retro" serve --data "${DATA:-$WORK/data}" --encoder "$MODELS/encoder" --decoder "$MODELS/decoder" \
  --port $PORT --gen-slots 1 --gen-queue 8 --log "$WORK/retro.log" &
RPID=$!
for i in $(seq 200); do curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break; sleep 0.2; done
rc=0
/usr/bin/python3 "$ROOT/tests/bench/http/soak.py" $PORT $RPID ${SOAK_SECONDS:-600} || rc=$?
kill -TERM $RPID
src=0; wait $RPID || src=$?
echo "server exit status after SIGTERM: $src"
[ $src -eq 0 ] || rc=1
exit $rc
