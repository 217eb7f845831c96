#!/bin/sh
# eval_c.sh - the evaluation table of the README, computed by the C runtime
# (`retro index`, `retro eval`, `retro neighbours`) on the default corpus with
# the committed default models. No PyTorch: runs on any machine that built
# retrod (about 15 minutes on 2 cores).
#
#   1. splits the corpus by model/default/heldout.txt into train / held-out
#      JSONL files (ids = paths relative to the corpus root, as prep.py);
#   2. no-leakage database: `retro index` of the training documents;
#      grounded database: a copy of it plus the held-out documents;
#   3. `retro eval` on the held-out documents, once per neighbour mode in
#      MODES (default "dense lexical hybrid": neighbours by embedding, by
#      BM25 over the chunk's text, or both fused): RETRO [ON] on the no-leakage
#      database with --compare-off (RETRO [OFF] on the same windows, and the
#      leakage-filtered figure: chunks whose longest common substring with
#      their neighbours is <= 20% of the chunk, with [OFF] on the same kept
#      tokens), RETRO [ON] on the grounded database. The
#      committed decoder was RETRO-fitted with its decoder weights frozen, so
#      RETRO [OFF] is the baseline: the same weights, the same computation;
#   4. encoder recall@10: `retro neighbours --include-same-doc` on the
#      grounded database; a chunk's true continuation (the next chunk of its
#      document) must be among its 10 nearest other chunks.
#   5. EXAMPLES (default 3) greedy completions of held-out documents by
#      `retro generate` (model/train/examples_c.py).
# Prints Markdown; the JSON of each run stays in the work folder.
#   sh model/train/eval_c.sh [BUILD_DIR]     (default: build-release, made if missing)
# Environment: WORK (default .work/evalc), CORPUS (default: the Python 3.11
# documentation sources), THREADS (default: all CPUs), MODES (default
# "dense lexical hybrid").
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$ROOT/build-release}
RETRO=$BUILD/server/retro
W=${WORK:-$ROOT/.work/evalc}
CORPUS=${CORPUS:-/usr/share/doc/python3.11/html/_sources}
THREADS=${THREADS:-0}
MODES=${MODES:-dense lexical hybrid}
PY=${PYTHON:-/usr/bin/python3}
[ -d "$BUILD" ] || meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
ninja -C "$BUILD" server/retro >/dev/null
mkdir -p "$W"
T=""
[ "$THREADS" -gt 0 ] && T="--threads $THREADS"

# 1. the split
$PY - "$CORPUS" "$ROOT/model/default/heldout.txt" "$W" <<'PY'
import json, os, sys
root, held_list, out = sys.argv[1:4]
held = set(open(held_list).read().split())
files = sorted(os.path.relpath(os.path.join(d, f), root)
               for d, _, fs in os.walk(root) for f in fs if f.endswith((".txt", ".rst", ".md")))
missing = held - set(files)
if missing:
    sys.exit("eval_c.sh: held-out documents missing from %s: %s" % (root, sorted(missing)[:3]))
for name, keep in (("train", lambda f: f not in held), ("heldout", lambda f: f in held)):
    with open(os.path.join(out, name + ".jsonl"), "w") as o:
        for f in files:
            if keep(f):
                text = open(os.path.join(root, f), encoding="utf-8").read()
                o.write(json.dumps({"id": f, "text": text}) + "\n")
PY

# 2. the databases (kept between runs: indexing upserts by id)
if [ ! -f "$W/db_train.done" ]; then
  "$RETRO" index --data "$W/db_train" $T "$W/train.jsonl"
  touch "$W/db_train.done"
fi
if [ ! -f "$W/db_grd.done" ]; then
  rm -rf "$W/db_grd"
  cp -a "$W/db_train" "$W/db_grd"
  "$RETRO" index --data "$W/db_grd" $T "$W/heldout.jsonl"
  touch "$W/db_grd.done"
fi

# 3. bits per byte, per neighbour mode
for m in $MODES; do
  "$RETRO" eval --data "$W/db_train" $T --retrieval-mode "$m" --compare-off "$W/heldout.jsonl" \
    > "$W/eval_nolk_$m.json"
  "$RETRO" eval --data "$W/db_grd" $T --retrieval-mode "$m" "$W/heldout.jsonl" > "$W/eval_grd_$m.json"
done

# 4. recall@10
"$RETRO" neighbours --data "$W/db_grd" --out "$W/nb_grd" -k 11 --include-same-doc

$PY - "$W" $MODES <<'PY'
import json, os, sys
import numpy as np
w, modes = sys.argv[1], sys.argv[2:]
ev = {(r, m): json.load(open(os.path.join(w, "eval_%s_%s.json" % (r, m))))
      for r in ("nolk", "grd") for m in modes}
nb = os.path.join(w, "nb_grd")
chunk_ids = np.load(os.path.join(nb, "chunk_ids.npy"))
doc_nums = np.load(os.path.join(nb, "doc_nums.npy"))
ordinals = np.load(os.path.join(nb, "ordinals.npy"))
neigh = np.load(os.path.join(nb, "neighbours.npy"))
held = set(json.loads(l)["id"] for l in open(os.path.join(w, "heldout.jsonl")))
docs = {}
for l in open(os.path.join(nb, "docs.jsonl")):
    d = json.loads(l)
    docs[d["doc_num"]] = d["id"]
# the true continuation of a chunk: the chunk with the same document and the next ordinal
nxt = {}
for cid, dn, o in zip(chunk_ids, doc_nums, ordinals):
    nxt[(int(dn), int(o))] = int(cid)
hits = {True: [0, 0], False: [0, 0]}
for row, (cid, dn, o) in enumerate(zip(chunk_ids, doc_nums, ordinals)):
    want = nxt.get((int(dn), int(o) + 1))
    if want is None:
        continue
    others = [int(x) for x in neigh[row] if x >= 0 and int(x) != int(cid)][:10]
    h = hits[docs[int(dn)] in held]
    h[0] += want in others
    h[1] += 1
nolk = ev[("nolk", modes[0])]
base = nolk["off_bpb"]


def cells(row):
    out = []
    for m in modes:
        n, g = ev[("nolk", m)], ev[("grd", m)]
        lf = n["leakage_filtered"]
        v, ref = {"off": (n["off_bpb"], base), "on": (n["bpb"], base), "grd": (g["bpb"], base),
                  "lf": (lf["bpb"], lf["off_bpb"])}[row]
        extra = " (%d of %d chunks, [OFF] %.4f)" % (lf["chunks_kept"], lf["chunks"], lf["off_bpb"]) if row == "lf" else ""
        out.append("%.4f (%.3fx)%s" % (v, v / ref, extra))
    return out


print("| model | " + " | ".join("%s neighbours" % m for m in modes) + " |")
print("|---|" + "---|" * len(modes))
print("| baseline | " + " | ".join("%.4f (1.000x)" % base for _ in modes) + " |")
for name, row in (("RETRO [OFF]", "off"), ("RETRO [ON] no leakage", "on"), ("RETRO [ON] grounded", "grd"),
                  ("RETRO [ON] leakage-filtered", "lf")):
    print("| %s | %s |" % (name, " | ".join(cells(row))))
print()
print("bpb (vs baseline; the leakage-filtered row vs [OFF] on the same kept tokens, which differ per mode).")
print("baseline = RETRO [OFF]: the decoder was RETRO-fitted with its decoder weights frozen.")
print("held-out: %d documents, %d tokens, %d bytes; k = %s neighbours per chunk"
      % (nolk["docs"], nolk["tokens"], nolk["bytes"], nolk.get("k") or "the model's"))
print("encoder recall@10 of the true continuation among all %d chunks: held-out queries %.3f (%d), "
      "training queries %.3f (%d)" % (len(chunk_ids), hits[True][0] / max(1, hits[True][1]), hits[True][1],
                                      hits[False][0] / max(1, hits[False][1]), hits[False][1]))
PY

# 5. examples: greedy completions of held-out documents (EXAMPLES=0: none)
if [ "${EXAMPLES:-3}" -gt 0 ]; then
  echo
  $PY "$ROOT/model/train/examples_c.py" "$RETRO" "$W/db_grd" "$W/db_train" "$W/heldout.jsonl" \
    --n "${EXAMPLES:-3}"
fi
