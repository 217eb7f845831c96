#!/bin/sh
# train_rerank.sh - the default reranker, one command, on 2 CPU cores in
# about an hour (CUDA when present: same command, more steps fit).
#
#   1. a database of the corpus with the committed encoder (`retro index`)
#      and its chunks (`retro neighbours --include-same-doc` dump);
#   2. qp_mine.py: query -> passage pairs from headings, FAQ questions,
#      signatures, glossary and index entries, error lines; held-out
#      documents (model/default/heldout.txt) give validation pairs only;
#   3. rerank_mine.py: each query's hybrid search results from a real
#      `retro serve` on that database, less its own document: the
#      candidates the reranker learns to order;
#   4. rerank_train.py: a cross-encoder from the encoder's weights, trained
#      to pick each query's passage among those candidates; exports F16.
# Re-running resumes: finished steps are skipped, training continues from
# its checkpoint. Progress goes to stdout (and WORK/train.log).
#
#   sh model/train/train_rerank.sh [BUILD_DIR]
# Environment: WORK (default .work/rerank-train), CORPUS (default: the
# Python 3.11 documentation sources), INIT (default model/default/encoder),
# STEPS (default 700), MINUTES (default 60: the training step's time
# limit), THREADS (default 2), LR (default 5e-5).
# The export lands in WORK/rr/export; serve it with --reranker, or copy it
# to model/default/reranker to make it the default. On the default corpus
# it does not beat the hybrid search, so none is installed (docs/MODELS.md,
# "Reranker").
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=${WORK:-$ROOT/.work/rerank-train}
. "$ROOT/model/train/qp_data.sh"  # steps 1 and 2
if [ ! -f "$W/cands.done" ]; then
  $PY "$ROOT/model/train/rerank_mine.py" --data "$W/db" --dump "$W/dump" --mined "$W/mined" \
    --out "$W/cands" --retro "$RETRO"
  touch "$W/cands.done"
fi
$PY "$ROOT/model/train/rerank_train.py" --init "$INIT" --mined "$W/mined" --cands "$W/cands" \
  --dump "$W/dump" --out "$W/rr" --steps "${STEPS:-700}" --max-minutes "${MINUTES:-60}" \
  --lr "${LR:-5e-5}" --threads "${THREADS:-2}" 2>&1 | tee -a "$W/train.log"
