#!/bin/sh
# js_types.sh - the JavaScript client's TypeScript declarations
# (clients/js/retrod.d.mts): tsc --strict (TypeScript, pinned below,
# installed into CACHE on first use) compiles js_types.mts, which uses every
# method as documented and misuses it on lines marked @ts-expect-error (tsc
# fails when such a line compiles); and every method of retrod.mjs's Client
# is declared. TAP on stdout; exit 77 (skipped) without node, npm or the npm
# registry.
#   tests/compat/js_types.sh CACHE_DIR
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=$1
skip() { echo "1..0 # SKIP $*"; exit 77; }
. "$HERE/../npm_lib.sh"
npm_package "$CACHE" typescript 5.9.3 300
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$HERE/js_types.mts" "$HERE/../../clients/js/retrod.mjs" "$HERE/../../clients/js/retrod.d.mts" "$WORK/"
echo "1..2"
if out=$(cd "$WORK" && node "$CACHE/node_modules/typescript/bin/tsc" --noEmit --strict --noUnusedLocals false \
  --target es2022 --module nodenext --moduleResolution nodenext --lib es2022,dom,dom.asynciterable js_types.mts 2>&1); then
  echo "ok 1 - js_types.mts type-checks against retrod.d.mts under --strict, each marked misuse refused"
else
  echo "not ok 1 - js_types.mts type-checks against retrod.d.mts under --strict, each marked misuse refused"
  echo "$out" | sed 's/^/# /'
fi
missing=$(cd "$WORK" && node --input-type=module -e "
import fs from 'node:fs';
import { Client } from './retrod.mjs';
const dts = fs.readFileSync('retrod.d.mts', 'utf8');
const names = Object.getOwnPropertyNames(Client.prototype).filter((n) => n !== 'constructor');
console.log(names.filter((n) => !new RegExp('^  ' + n + '\\\\(', 'm').test(dts)).join(' '));
")
if [ -z "$missing" ]; then
  echo "ok 2 - every method of retrod.mjs's Client is declared in retrod.d.mts"
else
  echo "not ok 2 - every method of retrod.mjs's Client is declared in retrod.d.mts: missing $missing"
fi
