#!/bin/sh
# openapi_lint.sh - lints server/openapi.json with Redocly's CLI (npm
# `@redocly/cli`, pinned below, installed into CACHE on first use) under its
# `recommended` rules: any error fails (warnings are printed). TAP on stdout.
# Exit 77 (skipped) when node, npm or the npm registry is not available.
#   tests/compat/openapi_lint.sh OPENAPI_JSON CACHE_DIR
set -u
DOC=$1; CACHE=$2
REDOCLY_VERSION=2.77.0
skip() { echo "1..0 # SKIP $*"; exit 77; }
. "$(cd "$(dirname "$0")" && pwd)/../npm_lib.sh"
npm_package "$CACHE" @redocly/cli "$REDOCLY_VERSION" 400
echo "1..1"
out=$("$CACHE/node_modules/.bin/redocly" lint --extends=recommended --format=summary "$DOC" 2>&1)
rc=$?
echo "$out" | sed 's/^/# /'
if [ $rc = 0 ]; then echo "ok 1 - redocly lint (recommended): no errors"
else echo "not ok 1 - redocly lint (recommended) found errors (exit $rc)"; exit 1; fi
