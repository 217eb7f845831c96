#!/bin/sh
# run.sh - OpenAI client compatibility: starts `retro serve` (tiny random
# models from tests/http/make_models.py, an API key, a random loopback port)
# and runs openai_client.mjs, which drives it with the official OpenAI Node
# client (npm `openai`, pinned below, installed into CACHE on first use).
# TAP on stdout. Exit 77 (skipped) when node, npm, PyTorch or the npm
# registry is not available; otherwise the client's checks decide.
#   tests/compat/run.sh RETRO_BINARY CACHE_DIR
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
RETRO=$1; CACHE=$2
OPENAI_VERSION=4.104.0
skip() { echo "1..0 # SKIP $*"; exit 77; }
command -v node >/dev/null && command -v npm >/dev/null || skip "node and npm not installed"
if [ ! -f "$CACHE/node_modules/openai/package.json" ] ||
   ! grep -q "\"version\": \"$OPENAI_VERSION\"" "$CACHE/node_modules/openai/package.json"; then
  mkdir -p "$CACHE"
  (cd "$CACHE" && timeout 300 npm install --no-audit --no-fund --silent "openai@$OPENAI_VERSION" >npm.log 2>&1) ||
    skip "npm install openai@$OPENAI_VERSION failed (no registry?): $(tail -1 "$CACHE/npm.log")"
fi
WORK=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$WORK"' EXIT
/usr/bin/python3 "$HERE/../http/make_models.py" "$WORK/models" >/dev/null 2>&1
rc=$?
[ $rc = 77 ] && skip "PyTorch not available for the test models"
[ $rc = 0 ] || { echo "Bail out! make_models.py failed ($rc)"; exit 1; }
"$RETRO" serve --data "$WORK/data" --encoder "$WORK/models/encoder" --decoder "$WORK/models/decoder" \
  --port 0 --threads 1 --api-key compat-key 2>"$WORK/serve.err" &
PID=$!
PORT=
for i in $(seq 300); do
  PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$WORK/serve.err" | head -1)
  [ -n "$PORT" ] && break
  kill -0 $PID 2>/dev/null || break
  sleep 0.1
done
[ -n "$PORT" ] || { echo "Bail out! retro serve did not start: $(cat "$WORK/serve.err")"; exit 1; }
for i in $(seq 300); do
  curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
# the script imports `openai` from CACHE's node_modules: run a copy there
cp "$HERE/openai_client.mjs" "$CACHE/openai_client.mjs"
RETRO_URL="http://127.0.0.1:$PORT/v1" RETRO_KEY=compat-key node "$CACHE/openai_client.mjs"
