#!/usr/bin/env bash
# install-deps.sh - installs the Debian 12 packages retrod needs to build, test
# and train. Run as root. Idempotent: apt-get skips what is installed.
set -euo pipefail
packages=(
  # build
  meson ninja-build pkg-config gcc g++ clang
  # libraries
  libmicrohttpd-dev libgnutls28-dev libjansson-dev liblmdb-dev libsqlite3-dev libfaiss-dev libopenblas-dev libopenblas0
  # the encoder's and decoder's matrix products (oneDNN; optional in meson.build)
  libdnnl-dev
  # tests, training and parity references
  python3 python3-torch python3-numpy python3-lmdb curl lmdb-utils
  # the end-to-end tests check every response against openapi.json (tests/http/openapi_check.py)
  # and read /metrics with Prometheus's own parser
  python3-jsonschema python3-prometheus-client
  # the format check (tests/lint/format_check.py); the Python client's types (tests/http/client_types.sh)
  clang-format mypy
  # tokenizer parity: the Unicode 15.0 database and the `regex` module (tests/tok/parity.py)
  unicode-data python3-regex
  # the HTTPS tests make their own certificate authority and certificates (tests/http/e2e_tls.py)
  openssl
  # benchmarks (tests/bench/http)
  wrk
  # the default corpus: Python 3.11 documentation sources
  python3.11-doc
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
