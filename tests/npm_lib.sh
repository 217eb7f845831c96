# npm_lib.sh - sourced by the test scripts that run an npm package; they
# define skip() (print a TAP skip, exit 77) first.
#
# npm_package CACHE PACKAGE VERSION TIMEOUT: PACKAGE@VERSION in
# CACHE/node_modules, installed on first use (within TIMEOUT seconds); skips
# when node or npm is not installed or the install fails (no registry).
npm_package() {
  command -v node >/dev/null && command -v npm >/dev/null || skip "node and npm not installed"
  pkg_json="$1/node_modules/$2/package.json"
  [ -f "$pkg_json" ] && grep -q "\"version\": \"$3\"" "$pkg_json" && return 0
  mkdir -p "$1"
  [ -f "$1/package.json" ] || echo '{"name": "retrod-test-npm", "private": true}' >"$1/package.json"
  (cd "$1" && timeout "$4" npm install --no-audit --no-fund --silent "$2@$3" >npm.log 2>&1) ||
    skip "npm install $2@$3 failed (no registry?): $(tail -1 "$1/npm.log")"
}
