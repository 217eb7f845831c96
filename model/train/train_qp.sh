#!/bin/sh
# train_qp.sh - the default encoder's query training, one command, on 2 CPU
# cores in under two hours (CUDA when present: same command, more steps fit).
#
#   1. a database of the corpus with the current encoder (`retro index`) and
#      its chunks (`retro neighbours --include-same-doc` dump): the passages
#      are exactly the chunks the server stores;
#   2. qp_mine.py: query -> passage pairs from headings, FAQ questions,
#      signatures, glossary and index entries, error lines; held-out
#      documents (model/default/heldout.txt) give validation pairs only;
#   3. qp_finetune.py: continues from INIT with query -> passage and chunk ->
#      continuation InfoNCE, checkpoints, resumes, exports F16;
#   4. qp_blend.py: interpolates INIT's and the trained weights, and keeps the
#      largest share of the trained ones that holds chunk -> continuation
#      recall of training documents at KEEP (default 0.98) of INIT's.
# Re-running resumes: finished steps are skipped, training continues from its
# checkpoint. Progress goes to stdout (and WORK/train.log).
#
#   sh model/train/train_qp.sh [BUILD_DIR]
# Environment: WORK (default .work/qp-train), CORPUS (default: the Python
# 3.11 documentation sources), INIT (default model/default/encoder), STEPS
# (default 450), MINUTES (default 90: the training step's time limit),
# THREADS (default 2), LR (default 8e-5), KEEP (default 0.98), DOCSTRINGS=1
# (the standard library's docstrings as more queries; tried, docs/RETRIEVAL.md).
# The second round (model card, step 7) also sets: PREFIX (qp_finetune.py
# --query-prefix), ANCHOR and ANCHOR_WEIGHT (--anchor, --anchor-weight 30:
# chunks held near that encoder's embeddings), BASE (the encoder blended
# with the trained one; default INIT), LAMBDAS (qp_blend.py --lambdas) and
# DROP_PREFIX=1 (the blend is exported without the query prefix).
# The export lands in WORK/blend/export (WORK/blend/blend.json: the table it chose
# from); copy it to model/default/encoder to
# make it the default (databases made with the old encoder are then refused
# by fingerprint, and deploy/setup.sh re-indexes).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=${WORK:-$ROOT/.work/qp-train}
. "$ROOT/model/train/qp_data.sh"  # steps 1 and 2
set --
[ -z "${PREFIX:-}" ] || set -- "$@" --query-prefix "$PREFIX"
[ -z "${ANCHOR:-}" ] || set -- "$@" --anchor "$ANCHOR" --anchor-weight "${ANCHOR_WEIGHT:-30}"
$PY "$ROOT/model/train/qp_finetune.py" --init "$INIT" --mined "$W/mined" --dump "$W/dump" \
  --heldout "$ROOT/model/default/heldout.txt" --out "$W/enc" --steps "${STEPS:-450}" \
  --max-minutes "${MINUTES:-90}" --lr "${LR:-8e-5}" --threads "${THREADS:-2}" "$@" 2>&1 |
  tee -a "$W/train.log"
set --
[ -z "${LAMBDAS:-}" ] || set -- "$@" --lambdas "$LAMBDAS"
[ "${DROP_PREFIX:-0}" = 0 ] || set -- "$@" --drop-query-prefix
$PY "$ROOT/model/train/qp_blend.py" --init "${BASE:-$INIT}" --trained "$W/enc/export" --mined "$W/mined" \
  --dump "$W/dump" --heldout "$ROOT/model/default/heldout.txt" --keep "${KEEP:-0.98}" \
  --threads "${THREADS:-2}" --out "$W/blend/export" "$@" 2>&1 | tee -a "$W/train.log"
