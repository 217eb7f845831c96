"""qp_blend.py - weight-space interpolation between the encoder query
training started from (--init) and the one it produced (--trained):
    theta(l) = (1 - l) * theta_init + l * theta_trained.
(--init may also be another descendant of the same encoder: the default
encoder's second round blends the first round's blend with a run from
stage 2; model/default/README.md, step 7.)
Query training teaches short questions but costs some chunk -> continuation
recall (what RETRO retrieves with); interpolating the two weights trades one
for the other without training again (Wortsman et al. 2022, "Robust
fine-tuning of zero-shot models"). For each --lambdas value it measures
  - query MRR@10 of the validation pairs (held-out documents, qp_mine.py),
    as qp_finetune.py does;
  - continuation recall@10 of chunks of training documents (--train-queries
    sampled) among --pool random chunks plus the queries' own, the selection
    signal: held-out documents are left to the reported evaluation
    (eval_c.sh), so the choice does not look at them.
It chooses the largest l whose training-document continuation recall is at
least --keep times the init's (stopping at the first that is not), and
exports that blend (F16) to --out and the table to OUT/../blend.json.

  /usr/bin/python3 model/train/qp_blend.py --init OLD --trained NEW_EXPORT \
      --mined MINED --dump DUMP --heldout model/default/heldout.txt --out OUT
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import log  # noqa: E402
from bert_model import BertEncoder  # noqa: E402
from qp_finetune import MAX_QUERY, embed, load_dump, validate  # noqa: E402
from tokref import ByteBPE  # noqa: E402


def blend(a, b, lam):
    """State dict (1 - lam) * a + lam * b, in fp32."""
    return {k: (1 - lam) * a[k].float() + lam * b[k].float() if a[k].is_floating_point() else a[k] for k in a}


@torch.no_grad()
def continuation_recall(enc, cands, queries, targets, bos, eos, pad, dev, bs=256):
    """Share of queries (indexes into cands) whose target is among their 10
    nearest candidates, the query itself excluded."""
    enc.eval()
    e = torch.cat([embed(enc, cands[i:i + bs], bos, eos, pad, dev, False) for i in range(0, len(cands), bs)])
    q = torch.as_tensor(queries)
    s = e[q] @ e.T
    s[torch.arange(len(q)), q] = -1e9
    top = s.topk(10, dim=1).indices
    return float((top == torch.as_tensor(targets)[:, None]).any(dim=1).float().mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", required=True, help="the encoder query training started from")
    ap.add_argument("--trained", required=True, help="qp_finetune.py's export")
    ap.add_argument("--mined", required=True)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--out", help="export the chosen blend here")
    ap.add_argument("--lambdas", default="0,0.5,0.6,0.7,0.8,0.9,1",
                    help="ascending; the first value above 0 that fails --keep ends the search")
    ap.add_argument("--keep", type=float, default=0.97,
                    help="least share of the init's training-document continuation recall kept")
    ap.add_argument("--drop-query-prefix", action="store_true",
                    help="validate and export the blend without the trained encoder's query prefix "
                         "(when --init never learned one)")
    ap.add_argument("--train-queries", type=int, default=1500)
    ap.add_argument("--pool", type=int, default=8000, help="random chunks among the continuation candidates")
    ap.add_argument("--val-pool", type=int, default=3000,
                    help="random chunks among the validation candidates (qp_finetune.py's --pool, same seed)")
    common.add_device_args(ap)
    a = ap.parse_args()

    dev = common.start(a)
    bpe = ByteBPE(os.path.join(a.init, "vocab.json"), os.path.join(a.init, "merges.txt"))
    bos, eos, pad = bpe.token_id("<s>"), bpe.token_id("</s>"), bpe.token_id("<pad>")
    held = set(open(a.heldout).read().split())
    val = [json.loads(line) for line in open(os.path.join(a.mined, "val.jsonl"))]
    # queries as the trained encoder learned them (its --query-prefix, if any)
    prefix = json.load(open(os.path.join(a.trained, "config.json"))).get("retro_query_prefix", "")
    if a.drop_query_prefix:
        prefix = ""
    vtok = [bpe.encode(prefix + v["q"])[:MAX_QUERY] for v in val]

    toks, cont, _ = load_dump(a.dump, held)

    def chunk(r):
        return [int(x) for x in toks[r] if x >= 0 and x != pad]
    rs = np.random.RandomState(0)
    qs = [cont[i] for i in rs.choice(len(cont), min(a.train_queries, len(cont)), replace=False)]
    rows = sorted(set(int(r) for r in rs.choice(len(toks), min(a.pool, len(toks)), replace=False)) |
                  set(x for q in qs for x in q))
    pos = {r: i for i, r in enumerate(rows)}
    cands = [chunk(r) for r in rows]
    queries = [pos[x] for x, _ in qs]
    targets = [pos[y] for _, y in qs]
    rng = np.random.RandomState(1)
    vpool = [chunk(int(r)) for r in rng.choice(len(toks), min(a.val_pool, len(toks)), replace=False)]
    log(f"{len(qs)} continuation queries among {len(cands)} chunks; {len(val)} validation queries")

    a_sd = BertEncoder.load(a.init).state_dict()
    b_sd = BertEncoder.load(a.trained).state_dict()
    enc = BertEncoder.load(a.init).to(dev)
    lambdas = [float(x) for x in a.lambdas.split(",")]
    if lambdas[0] != 0 or lambdas != sorted(lambdas):
        sys.exit("qp_blend.py: --lambdas must be ascending from 0 (the init's own recall)")
    table = []
    for lam in lambdas:
        t0 = time.time()
        enc.load_state_dict(blend(a_sd, b_sd, lam))
        rec = continuation_recall(enc, cands, queries, targets, bos, eos, pad, dev)
        q = validate(enc, val, vpool, vtok, bos, eos, pad, dev)
        row = {"lambda": lam, "continuation_recall10_train": round(rec, 4), **q}
        table.append(row)
        log(f"lambda {lam}: {row} ({time.time() - t0:.0f}s)")
        if rec < a.keep * table[0]["continuation_recall10_train"]:
            break  # recall falls as lambda grows: larger ones fail too
    base = table[0]["continuation_recall10_train"]
    ok = [r for r in table if r["continuation_recall10_train"] >= a.keep * base]
    best = max(ok, key=lambda r: r["lambda"])
    log(f"chosen lambda {best['lambda']} (recall >= {a.keep} x {base})")
    if a.out:
        enc.load_state_dict(blend(a_sd, b_sd, best["lambda"]))
        enc.eval()
        enc.set_query_prefix(prefix)
        enc.save_pretrained(a.out, dtype=torch.float16)
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(a.init, f), os.path.join(a.out, f))
        with open(os.path.join(a.out, "..", "blend.json"), "w") as f:
            json.dump({"table": table, "chosen": best}, f, indent=2)
        log(f"exported {a.out}")


if __name__ == "__main__":
    main()
