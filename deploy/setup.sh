#!/usr/bin/env bash
# setup.sh - the main job on a fresh Debian 12 machine, as root: install the
# dependencies, build retrod, index the default corpus (the Python 3.11
# documentation sources) with the default models, and serve it on
# 127.0.0.1:8080. Re-running is safe: the build is incremental, and indexing
# upserts every document by id, skipping the unchanged ones (seconds). Stop
# the server a previous run started first: one process writes a database.
#   DATA=/var/lib/retro PORT=8080 bash deploy/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA:-$PWD/data}
port=${PORT:-8080}
corpus=/usr/share/doc/python3.11/html/_sources

bash deploy/install-deps.sh
[ -d build-release ] || meson setup build-release --buildtype=release
ninja -C build-release
# A database made with other default models (an older encoder) is refused by
# fingerprint; keep it aside and index again rather than fail.
if [ -d "$data/db" ] && ! ./build-release/server/retro info --data "$data" >/dev/null 2>"$data.check"; then
  if grep -q "mismatch" "$data.check"; then
    old="$data.old-$(date +%Y%m%d-%H%M%S)"
    echo "setup.sh: $(cat "$data.check")"
    echo "setup.sh: moving it to $old and indexing the corpus again"
    mv "$data" "$old"
  fi
fi
rm -f "$data.check"
./build-release/server/retro index --data "$data" "$corpus"
exec ./build-release/server/retro serve --data "$data" --host 127.0.0.1 --port "$port"
