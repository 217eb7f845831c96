#!/bin/sh
# tiktoken_parity.sh - runs tiktoken_parity.mjs: the C GPT-2 BPE tokenizer
# against OpenAI's tiktoken (npm `tiktoken`, pinned below, installed into
# CACHE on first use) on the GPT-2 vocabulary that package carries. TAP on
# stdout. Exit 77 (skipped) when node, npm or the npm registry is not
# available.
#   tests/tok/tiktoken_parity.sh TOKDUMP SOURCE_ROOT CACHE_DIR
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
TOKDUMP=$1; SRC=$2; CACHE=$3
TIKTOKEN_VERSION=1.0.22
skip() { echo "1..0 # SKIP $*"; exit 77; }
command -v node >/dev/null && command -v npm >/dev/null || skip "node and npm not installed"
PKG="$CACHE/node_modules/tiktoken/package.json"
if [ ! -f "$PKG" ] || ! grep -q "\"version\": \"$TIKTOKEN_VERSION\"" "$PKG"; then
  mkdir -p "$CACHE"
  [ -f "$CACHE/package.json" ] || echo '{"name": "retrod-tiktoken", "private": true}' >"$CACHE/package.json"
  (cd "$CACHE" && timeout 400 npm install --no-audit --no-fund --silent "tiktoken@$TIKTOKEN_VERSION" >npm.log 2>&1) ||
    skip "npm install tiktoken@$TIKTOKEN_VERSION failed (no registry?): $(tail -1 "$CACHE/npm.log")"
fi
# the script imports tiktoken from CACHE's node_modules: run a copy there
cp "$HERE/tiktoken_parity.mjs" "$HERE/../http/tap.mjs" "$CACHE/"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
timeout 500 node "$CACHE/tiktoken_parity.mjs" "$TOKDUMP" "$SRC" "$WORK"
