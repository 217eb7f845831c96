#!/bin/sh
# bench_bpe.sh - BPE encoding throughput, C (tokdump --bench) against the
# Python reference (tokref.py bench), same vocabulary and text, one thread.
# Not run by `meson test`. Wall-clock and CPU-time MB/s are both printed
# (CPU time is the fairer figure on a loaded machine).
#   tests/tok/bench_bpe.sh BUILD_DIR [VOCAB_DIR] [TEXT_DIR]
# defaults: ../shared/data/gpt2 and /usr/share/doc/python3.11/html/_sources
set -e
build=${1:?usage: bench_bpe.sh BUILD_DIR [VOCAB_DIR] [TEXT_DIR]}
here=$(cd "$(dirname "$0")/../.." && pwd)
vocab=${2:-$here/../shared/data/gpt2}
text=${3:-/usr/share/doc/python3.11/html/_sources}
files=$(find "$text" -name '*.txt' | sort)
echo "C:      $("$build/tests/tok/tokdump" --bench --bpe "$vocab/vocab.json" "$vocab/merges.txt" $files)"
echo "Python: $(/usr/bin/python3 "$here/model/train/tokref.py" bench --bpe "$vocab/vocab.json" "$vocab/merges.txt" $files)"
