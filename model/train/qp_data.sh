# qp_data.sh - sourced by train_qp.sh and train_rerank.sh: the steps both
# begin with. Expects ROOT (the repository), W (the work folder) and the
# build folder as $1; sets BUILD, RETRO, CORPUS, INIT and PY from the
# environment (see those scripts) and builds `retro`, then, each once:
#   1. a database of CORPUS with the INIT encoder (`retro index`) and its
#      chunks (`retro neighbours --include-same-doc` dump) in W/db, W/dump;
#   2. qp_mine.py's query -> passage pairs in W/mined (held-out documents,
#      model/default/heldout.txt, give validation pairs only); DOCSTRINGS=1
#      adds the standard library's docstrings as queries (qp_docstrings.py).
BUILD=${1:-$ROOT/build-release}
RETRO=$BUILD/server/retro
CORPUS=${CORPUS:-/usr/share/doc/python3.11/html/_sources}
INIT=${INIT:-$ROOT/model/default/encoder}
PY=${PYTHON:-/usr/bin/python3}
[ -d "$BUILD" ] || meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
ninja -C "$BUILD" server/retro >/dev/null
mkdir -p "$W"

if [ ! -f "$W/dump.done" ]; then
  "$RETRO" index --data "$W/db" --encoder "$INIT" --threads "${THREADS:-2}" "$CORPUS"
  "$RETRO" neighbours --data "$W/db" --out "$W/dump" -k 1 --include-same-doc --threads "${THREADS:-2}"
  touch "$W/dump.done"
fi
if [ ! -f "$W/mined.done" ]; then
  set --
  if [ "${DOCSTRINGS:-0}" = 1 ]; then
    $PY "$ROOT/model/train/qp_docstrings.py" --corpus "$CORPUS" --out "$W/docstrings.json"
    set -- --docstrings "$W/docstrings.json"
  fi
  $PY "$ROOT/model/train/qp_mine.py" --corpus "$CORPUS" --dump "$W/dump" --tokenizer "$INIT" \
    --heldout "$ROOT/model/default/heldout.txt" --out "$W/mined" "$@"
  touch "$W/mined.done"
fi
