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
. "$HERE/../npm_lib.sh"
npm_package "$CACHE" tiktoken "$TIKTOKEN_VERSION" 400
# the script imports tiktoken from CACHE's node_modules: run a copy there
cp "$HERE/tiktoken_parity.mjs" "$HERE/../http/tap.mjs" "$CACHE/"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
timeout 500 node "$CACHE/tiktoken_parity.mjs" "$TOKDUMP" "$SRC" "$WORK"
