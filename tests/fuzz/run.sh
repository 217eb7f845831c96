#!/bin/sh
# run.sh - builds the libFuzzer target on the HTTP dispatcher with clang and
# AddressSanitizer (+UBSan) in build-fuzz/ and runs it for ${FUZZ_SECONDS:-60}
# seconds from the seed corpus, then the differential target on the fast
# search-body parser (fuzz_search_parse) for ${FUZZ_SEARCH_SECONDS:-20} s.
# Exit status non-zero on a crash, a leak or a difference.
#   tests/fuzz/run.sh                  (dispatcher without an engine)
#   FUZZ_ENGINE=1 tests/fuzz/run.sh    (handlers against a real engine, tiny models)
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${FUZZ_BUILD:-$ROOT/build-fuzz}
SECONDS_TO_RUN=${FUZZ_SECONDS:-60}
if [ ! -d "$BUILD" ]; then
  # every C file gets coverage instrumentation (fuzzer-no-link); only the
  # target links libFuzzer's main
  CC=clang CXX=clang++ CFLAGS="-fsanitize=fuzzer-no-link" meson setup "$BUILD" "$ROOT" -Dfuzz=true \
    -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized
fi
ninja -C "$BUILD" tests/http/fuzz_http tests/http/fuzz_search_parse
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/corpus" "$WORK/corpus_search"
cp "$ROOT"/tests/fuzz/corpus/* "$WORK/corpus"/
cp "$ROOT"/tests/fuzz/corpus_search/* "$WORK/corpus_search"/
if [ "${FUZZ_ENGINE:-0}" = 1 ]; then  # handlers against a real engine with tiny models
  /usr/bin/python3 "$ROOT/tests/http/make_models.py" "$WORK/models" >/dev/null
  export RETRO_FUZZ_DATA="$WORK/data" RETRO_FUZZ_ENCODER="$WORK/models/encoder" \
         RETRO_FUZZ_DECODER="$WORK/models/decoder" RETRO_FUZZ_RERANKER="$WORK/models/reranker"
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
"$BUILD"/tests/http/fuzz_http -max_total_time="$SECONDS_TO_RUN" -max_len=8192 \
  -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$WORK/corpus"
# then the fast search-body parser against the jansson path (differential)
"$BUILD"/tests/http/fuzz_search_parse -max_total_time="${FUZZ_SEARCH_SECONDS:-20}" -max_len=4096 \
  -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$WORK/corpus_search"
