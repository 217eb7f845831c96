#!/bin/sh
# run.sh - the web playground in a real browser: starts `retro serve` (tiny
# random models from tests/http/make_models.py, a read-write and a read-only
# key, a random loopback port, allowing the second's origin with
# --cors-origins) and a second one with --no-webui, then drives
# Debian's chromium headless with puppeteer-core (pinned below, installed into
# CACHE on first use) through browser_test.mjs. TAP on stdout; screenshots in
# SHOTS. Exit 77 (skipped) when chromium, node, npm, PyTorch or the npm
# registry is not available.
#   tests/webui/run.sh RETRO_BINARY CACHE_DIR SHOTS_DIR
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
RETRO=$1; CACHE=$2; SHOTS=$3
PPTR_VERSION=23.11.1  # the last major that runs on Debian 12's node 18
skip() { echo "1..0 # SKIP $*"; exit 77; }
CHROMIUM=$(command -v chromium || command -v chromium-browser) || skip "chromium not installed"
. "$HERE/../npm_lib.sh"
npm_package "$CACHE" puppeteer-core "$PPTR_VERSION" 300
WORK=$(mktemp -d)
PIDS=
trap 'for p in $PIDS; do kill $p 2>/dev/null; done; rm -rf "$WORK"' EXIT
. "$HERE/../http/serve_lib.sh"
make_test_models
serve off --no-webui
OFF=$PORT
# pages from the other server's origin may call this one (--cors-origins)
serve main --api-key rw-key --read-key ro-key --cors-origins "http://127.0.0.1:$OFF"
MAIN=$PORT
# the default (trained) models on one real document, for the attribution of
# generated text: a prompt from the document makes the decoder copy its
# continuation from the neighbours (random test models copy nothing)
ROOT=$(cd "$HERE/../.." && pwd)
DOC=/usr/share/doc/python3.11/html/_sources/tutorial/inputoutput.rst.txt
TRAINED=
if [ -f "$DOC" ] && [ -f "$ROOT/model/default/decoder/model.safetensors" ]; then
  cp "$DOC" "$WORK/inputoutput.rst.txt"
  if "$RETRO" index --data "$WORK/trained" --encoder "$ROOT/model/default/encoder" \
       --decoder "$ROOT/model/default/decoder" "$WORK/inputoutput.rst.txt" >/dev/null 2>"$WORK/trained.err"; then
    name=trained
    "$RETRO" serve --data "$WORK/trained" --port 0 --threads 1 2>"$WORK/$name.err" &
    PIDS="$PIDS $!"
    PORT=
    for i in $(seq 300); do
      PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$WORK/$name.err" | head -1)
      [ -n "$PORT" ] && curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
      sleep 0.1
    done
    TRAINED=$PORT
  fi
fi
mkdir -p "$SHOTS"
cp "$HERE/browser_test.mjs" "$HERE/../http/tap.mjs" "$CACHE/"
RETRO_URL="http://127.0.0.1:$MAIN" RETRO_OFF_URL="http://127.0.0.1:$OFF" TRAINED_PORT="$TRAINED" \
  TRAINED_DOC="$WORK/inputoutput.rst.txt" RW_KEY=rw-key RO_KEY=ro-key \
  CHROMIUM="$CHROMIUM" SHOTS="$SHOTS" CORPUS="$WORK/models/corpus" node "$CACHE/browser_test.mjs"
