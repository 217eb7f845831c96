#!/bin/sh
# run.sh - client compatibility: starts `retro serve` (tiny random models from
# tests/http/make_models.py, a read-write and a read-only API key, a random
# loopback port) and a second one with --strict-models, and runs SCRIPT
# (openai_client.mjs: the official OpenAI Node client; clients.mjs: LangChain,
# the Vercel AI SDK, LlamaIndex) against the first with the read-only key.
# The npm packages, pinned below, are installed into CACHE on first use.
# TAP on stdout. Exit 77 (skipped) when node, npm, PyTorch or the npm
# registry is not available; otherwise the script's checks decide.
#   tests/compat/run.sh RETRO_BINARY CACHE_DIR SCRIPT
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
RETRO=$1; CACHE=$2; SCRIPT=${3:-openai_client.mjs}
# @llamaindex/openai 0.4.22: the one built on llamaindex 0.12.1's @llamaindex/core
# (0.6.22); 0.4.23 brings a second copy of it. The AI SDK and LangChain ask for
# node >= 22 and work on Debian 12's node 20 for what is tested here.
PACKAGES="openai@4.104.0 @langchain/openai@1.6.0 @langchain/core@1.4.0 ai@7.0.185
  @ai-sdk/openai-compatible@3.0.97 llamaindex@0.12.1 @llamaindex/openai@0.4.22"
skip() { echo "1..0 # SKIP $*"; exit 77; }
command -v node >/dev/null && command -v npm >/dev/null || skip "node and npm not installed"
# one install at a time into CACHE (the compat tests share it)
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 2>/dev/null || true
if [ "$(cat "$CACHE/.installed" 2>/dev/null)" != "$PACKAGES" ]; then
  [ -f "$CACHE/package.json" ] || echo '{"name": "retrod-compat", "private": true}' >"$CACHE/package.json"
  # shellcheck disable=SC2086
  (cd "$CACHE" && timeout 500 npm install --no-audit --no-fund --silent $PACKAGES >npm.log 2>&1) ||
    skip "npm install failed (no registry?): $(tail -1 "$CACHE/npm.log")"
  echo "$PACKAGES" >"$CACHE/.installed"
fi
flock -u 9 2>/dev/null || true
WORK=$(mktemp -d)
PID=; PID2=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; [ -n "$PID2" ] && kill $PID2 2>/dev/null; rm -rf "$WORK"' EXIT
/usr/bin/python3 "$HERE/../http/make_models.py" "$WORK/models" >/dev/null 2>&1
rc=$?
[ $rc = 77 ] && skip "PyTorch not available for the test models"
[ $rc = 0 ] || { echo "Bail out! make_models.py failed ($rc)"; exit 1; }
# start NAME ARGS...: serves $WORK/NAME, sets PORT
start() {
  name=$1; shift
  "$RETRO" serve --data "$WORK/$name" --encoder "$WORK/models/encoder" --decoder "$WORK/models/decoder" \
    --port 0 --threads 1 --api-key compat-rw-key --read-key compat-key "$@" 2>"$WORK/$name.err" &
  LAST=$!
  PORT=
  for i in $(seq 300); do
    PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$WORK/$name.err" | head -1)
    [ -n "$PORT" ] && break
    kill -0 $LAST 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$PORT" ] || { echo "Bail out! retro serve did not start: $(cat "$WORK/$name.err")"; exit 1; }
  for i in $(seq 300); do
    curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
}
start main; PID=$LAST; MAIN_PORT=$PORT
start strict --strict-models; PID2=$LAST; STRICT_PORT=$PORT
# the script imports the packages from CACHE's node_modules: run a copy there
cp "$HERE/$SCRIPT" "$CACHE/$SCRIPT"
RETRO_URL="http://127.0.0.1:$MAIN_PORT/v1" RETRO_STRICT_URL="http://127.0.0.1:$STRICT_PORT/v1" \
  RETRO_KEY=compat-key timeout 400 node "$CACHE/$SCRIPT"
