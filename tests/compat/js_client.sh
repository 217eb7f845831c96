#!/bin/sh
# js_client.sh - the JavaScript client (clients/js/retrod.mjs) against a real
# `retro serve` (tiny random test models, a read-write and a read-only API
# key, a backup folder): js_client.mjs calls every method. Needs node (18+:
# fetch) and no npm package. TAP on stdout; exit 77 (skipped) without node
# or PyTorch.
#   tests/compat/js_client.sh RETRO_BINARY
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
RETRO=$1
skip() { echo "1..0 # SKIP $*"; exit 77; }
command -v node >/dev/null || skip "node not installed"
WORK=$(mktemp -d)
PIDS=
trap 'for p in $PIDS; do kill $p 2>/dev/null; done; rm -rf "$WORK"' EXIT
. "$HERE/../http/serve_lib.sh"
make_test_models
serve main --api-key js-rw --read-key js-ro --backup-dir "$WORK/backups"
RETRO_URL="http://127.0.0.1:$PORT" timeout 300 node "$HERE/js_client.mjs"
