#!/bin/sh
# run.sh - client compatibility: starts `retro serve` (tiny random models from
# tests/http/make_models.py, a read-write and a read-only API key, a random
# loopback port) and a second one with --strict-models, and runs SCRIPT
# (openai_client.mjs: the official OpenAI Node client; clients.mjs: LangChain,
# the Vercel AI SDK, LlamaIndex; langchain_retriever.mjs and
# llamaindex_retriever.mjs: our integrations, clients/js/retrod_langchain.mjs
# and retrod_llamaindex.mjs) against the first with the read-only key
# (RETRO_RW_KEY holds the read-write one), or js_types.mjs, which compiles
# the TypeScript declarations of those and of retrod.mjs and needs no server.
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
# typescript 5.9.3 (js_types.mjs): the last release of the compiler written
# in TypeScript, which @langchain/core 1.4.0's declarations need (5.6
# rejects one of them).
PACKAGES="openai@4.104.0 @langchain/openai@1.6.0 @langchain/core@1.4.0 ai@7.0.185
  @ai-sdk/openai-compatible@3.0.97 llamaindex@0.12.1 @llamaindex/openai@0.4.22 typescript@5.9.3"
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
PIDS=
trap 'for p in $PIDS; do kill $p 2>/dev/null; done; rm -rf "$WORK"' EXIT
. "$HERE/../http/serve_lib.sh"
make_test_models
serve main --api-key compat-rw-key --read-key compat-key; MAIN_PORT=$PORT
serve strict --api-key compat-rw-key --read-key compat-key --strict-models; STRICT_PORT=$PORT
# the script imports the packages from CACHE's node_modules: run a copy there
# (with our client modules beside it)
cp "$HERE/$SCRIPT" "$HERE/../http/tap.mjs" "$HERE"/*.mts "$HERE"/../../clients/js/*.mjs "$HERE"/../../clients/js/*.d.mts "$CACHE/"
RETRO_URL="http://127.0.0.1:$MAIN_PORT/v1" RETRO_STRICT_URL="http://127.0.0.1:$STRICT_PORT/v1" \
  RETRO_KEY=compat-key RETRO_RW_KEY=compat-rw-key timeout 400 node "$CACHE/$SCRIPT"
