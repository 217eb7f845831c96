"""neighbours.py - the RETRO training/evaluation neighbours, computed in
PyTorch with the trained encoder: exact inner-product search over the
L2-normalised [CLS] embeddings of every 64-token chunk (what the C database
stores as keys), on the GPU when there is one.

Writes into --out (entry ids: training chunks 0..Ctr-1, then held-out
chunks Ctr..Ctr+Cho-1, as common.ChunkDB(corpus, ["train", "heldout"])):
  train_knn.npy     (Ctr, K) for every training chunk, its K nearest training
                    chunks from other documents (a chunk whose document range
                    meets that of the query chunk or of the chunk after it is
                    excluded: the paper's same-document rule)
  heldout_nolk.npy  (Cho, K) nearest training chunks of each held-out chunk
                    ("no leakage": the database holds training documents only)
  heldout_grd.npy   (Cho, K) nearest chunks among training + held-out chunks
                    ("grounded": the held-out documents are indexed too; the
                    chunk's own entry is allowed, so its continuation can be read)
  info.json         counts, timing, the encoder used

Not here: the C database (`retro index`) - this is the fallback the issue
allows while the C `retro neighbours` command is not available.

  /usr/bin/python3 model/train/neighbours.py --data .work/train/data \
      --encoder .work/train/enc/export --out .work/train/nb
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import log  # noqa: E402
from bert_model import BertEncoder  # noqa: E402
from encoder_train import embed_chunks  # noqa: E402


@torch.no_grad()
def knn(q_emb, db_emb, k, exclude=None, bs=4096):
    """q_emb (Q, H), db_emb (N, H) -> (Q, k) int64 ids by inner product.
    exclude(i0, i1) -> (i1-i0, N) bool mask of forbidden entries, or None."""
    out = []
    for i in range(0, len(q_emb), bs):
        s = q_emb[i:i + bs] @ db_emb.T
        if exclude is not None:
            s.masked_fill_(exclude(i, min(i + bs, len(q_emb))), float("-inf"))
        out.append(s.topk(k, dim=1).indices)
    return torch.cat(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--encoder", required=True, help="exported encoder directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", type=int, default=4)
    common.add_device_args(ap)
    args = ap.parse_args(argv)
    dev = common.start(args)
    t0 = time.time()
    corpus = common.Corpus(args.data)
    meta = corpus.meta
    enc = BertEncoder.load(args.encoder).to(dev)
    tr, ho = corpus.chunks("train"), corpus.chunks("heldout")
    ctr = len(tr)
    e_tr = embed_chunks(enc, tr, meta["bos_id"], meta["sep_id"], dev)
    e_ho = embed_chunks(enc, ho, meta["bos_id"], meta["sep_id"], dev)
    log(f"embedded {ctr} + {len(ho)} chunks in {time.time() - t0:.1f}s")

    cd = torch.from_numpy(corpus.chunkdoc["train"]).long().to(dev)  # (Ctr, 2) first/last doc
    nxt_last = torch.cat([cd[1:, 1], cd[-1:, 1]])                     # last doc of chunk c+1

    def exclude(i0, i1):
        lo = cd[i0:i1, 0:1]
        hi = nxt_last[i0:i1, None]
        return (cd[None, :, 0] <= hi) & (cd[None, :, 1] >= lo)

    os.makedirs(args.out, exist_ok=True)
    res = {}
    res["train_knn"] = knn(e_tr, e_tr, args.k, exclude)
    res["heldout_nolk"] = knn(e_ho, e_tr, args.k)
    res["heldout_grd"] = knn(e_ho, torch.cat([e_tr, e_ho]), args.k)
    for name, v in res.items():
        np.save(os.path.join(args.out, name + ".npy"), v.cpu().numpy().astype(np.int32))
    g = res["heldout_grd"][:, 0].cpu().numpy()
    self_top = float(np.mean(g == ctr + np.arange(len(ho))))
    info = {"k": args.k, "train_chunks": ctr, "heldout_chunks": len(ho), "encoder": args.encoder,
            "seconds": time.time() - t0, "grounded_top1_is_self": self_top, "method": "exact inner product, PyTorch"}
    with open(os.path.join(args.out, "info.json"), "w") as f:
        json.dump(info, f, indent=2)
    log("neighbours written:", info)


if __name__ == "__main__":
    main()
