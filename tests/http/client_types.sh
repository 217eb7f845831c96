#!/bin/sh
# client_types.sh - the Python client's types (clients/python/retrod.py):
# mypy --strict checks the client and client_types.py, which uses every
# method as documented and misuses it on lines ending in `# type: ignore[...]`
# (--warn-unused-ignores, part of --strict, fails such a line when it
# checks). Returning a decoded answer (Any) as its TypedDict is allowed
# (--no-warn-return-any). TAP; exit 77 (skipped) without mypy.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
command -v mypy >/dev/null || { echo "1..0 # SKIP mypy not installed (Debian: mypy)"; exit 77; }
echo "1..1"
CACHE=$(mktemp -d)
trap 'rm -rf "$CACHE"' EXIT
if out=$(cd "$HERE" && MYPYPATH="$HERE/../../clients/python" mypy --strict --no-warn-return-any \
  --cache-dir "$CACHE" "$HERE/../../clients/python/retrod.py" client_types.py 2>&1); then
  echo "ok 1 - mypy --strict: the client and a use of every method check, each marked misuse refused"
else
  echo "not ok 1 - mypy --strict: the client and a use of every method check, each marked misuse refused"
  echo "$out" | sed 's/^/# /'
fi
