#!/bin/sh
# eval_default.sh - the evaluation table of the committed default models in
# one command: prepares the default corpus with the committed tokenizer and
# held-out list (prep.py), computes the neighbours with the committed encoder
# (neighbours.py), then runs evaluate.py with the committed decoder. The
# decoder was RETRO-fitted with its decoder weights frozen, so the same
# directory with retrieval off is the baseline (RETRO [OFF] == baseline).
# Work files go to ${WORK:-.work/train/evaldefault}. On a GPU it takes about a minute;
# on a 2-core CPU with Debian's torch 1.13 (slow batched matmul) well over half an hour.
#   sh model/train/eval_default.sh
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-/usr/bin/python3}
T=$ROOT/model/train
D=$ROOT/model/default
W=${WORK:-$ROOT/.work/train/evaldefault}
mkdir -p "$W"
[ -f "$W/data/meta.json" ] || $PY "$T/prep.py" --out "$W/data" --tokenizer "$D/decoder"
cmp -s "$W/data/heldout.txt" "$D/heldout.txt" || { echo "held-out split differs from $D/heldout.txt" >&2; exit 1; }
[ -f "$W/nb/heldout_grd.npy" ] || $PY "$T/neighbours.py" --data "$W/data" --encoder "$D/encoder" --out "$W/nb"
$PY "$T/evaluate.py" --data "$W/data" --nb "$W/nb" --baseline "$D/decoder" --retro "$D/decoder" \
    --encoder "$D/encoder" --out "$W/eval" --examples "${EXAMPLES:-4}" "$@"
