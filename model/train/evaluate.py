"""evaluate.py - the evaluation table of the default models: bits-per-byte
on the held-out documents (model/default/heldout.txt) for

  baseline                    the same-size decoder, retrieval off
  RETRO [OFF]                 the RETRO model without neighbours
  RETRO [ON] no leakage       neighbours from the training documents only
  RETRO [ON] grounded         held-out documents indexed too (a chunk's own
                              [N, F] entry can be retrieved, so the text being
                              predicted can be in a neighbour's continuation)
  RETRO [ON] leakage-filtered only the chunks whose longest common substring
                              (in tokens) with their k neighbours is <= --alpha
                              (20%) of the chunk, no-leakage database; the
                              baseline on the same tokens is given beside it
plus the encoder's recall@10 (recomputed with --encoder, else read from
encoder_train.py's results.json).

Method: the held-out token stream (documents + eos, concatenated) is cut
into windows of --seq tokens aligned to 64-token chunks; each window is
scored on its own (first token of a window unpredicted); k = 2 neighbours
per chunk from neighbours.py (exact search with the trained encoder) or
c_neighbours.py (the C database's). Bits = cross-entropy / ln 2 summed over
the predicted tokens; bytes = their UTF-8 length (special tokens count 0
bytes but their loss counts). On chunk-aligned data (prep.py
--align-chunks) the pad_id targets between documents are not predicted
tokens: neither their loss nor they count (eos still does, as unaligned).
PyTorch reference models (retro_model.py), on the GPU when present.

With --examples N, also writes greedy 64-token completions of N held-out
prompts (two chunks) with the grounded database, RETRO [ON] next to the
baseline, and the neighbour text they could read.

  /usr/bin/python3 model/train/evaluate.py --data .work/train/data --nb .work/train/nb \
      --baseline model/default/baseline --retro model/default/decoder \
      --encoder-results .work/train/enc/results.json --out .work/train/eval
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CHUNK, log  # noqa: E402
from retro_model import Retro  # noqa: E402


def longest_common_run(a, b):
    """a: (P, m), b: (P, r) token tensors -> (P,) length of the longest common
    contiguous substring of a[i] and b[i]."""
    P, m = a.shape
    r = b.shape[1]
    eq = a[:, :, None] == b[:, None, :]  # (P, m, r)
    run = torch.zeros(P, r, dtype=torch.int32, device=a.device)
    best = torch.zeros(P, dtype=torch.int32, device=a.device)
    for i in range(m):
        prev = torch.cat([torch.zeros(P, 1, dtype=torch.int32, device=a.device), run[:, :-1]], dim=1)
        run = (prev + 1) * eq[:, i].to(torch.int32)
        best = torch.maximum(best, run.max(dim=1).values)
    return best


@torch.no_grad()
def score(model, corpus, db, nb_ids, windows, L, k, dev, bs=16):
    """-> per-target nats (W, n) float64 numpy, targets (W, n). nb_ids: (Cho, K)
    entry ids or None for retrieval off."""
    ho = torch.from_numpy(corpus.tokens["heldout"]).to(dev)
    n = L * CHUNK
    model.eval()
    outs, tgts = [], []
    for i in range(0, len(windows), bs):
        s = windows[i:i + bs]
        pos = (CHUNK * s)[:, None] + torch.arange(n + 1, device=dev)
        t = ho[pos]
        x, y = t[:, :-1], t[:, 1:]
        nb = None
        if nb_ids is not None:
            u = s[:, None] + torch.arange(L, device=dev)
            nb = db.values(nb_ids[u][:, :, :k])
        with common.autocast(dev):
            logits = model(x, nb, retrieval=nb is not None)
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        outs.append(ce.view(y.shape).double().cpu())
        tgts.append(y.cpu())
    return torch.cat(outs).numpy(), torch.cat(tgts).numpy()


def group_of_targets(n):
    """Target index i (predicting window token i+1) -> the neighbour group u
    whose neighbours it reads (i in [64u+63, 64u+126]), -1 for none."""
    i = np.arange(n)
    g = (i - (CHUNK - 1)) // CHUNK
    g[i < CHUNK - 1] = -1
    return g


@torch.no_grad()
def leakage_mask(corpus, db, nb_ids, windows, L, k, alpha, dev):
    """(W, n) bool: targets whose group's target chunk shares at most
    alpha * 64 contiguous tokens with every one of the group's neighbours.
    Targets without a group (first 63) are excluded. Padding of aligned
    data never counts as common."""
    ho = torch.from_numpy(corpus.tokens["heldout"]).to(dev)
    n = L * CHUNK
    W = len(windows)
    u = windows[:, None] + torch.arange(L, device=dev)                    # (W, L) chunk ids
    nbv = db.values(nb_ids[u][:, :, :k])                                 # (W, L, k, r)
    tstart = CHUNK * (u + 1)                                             # chunk u+1 of the stream
    tpos = (tstart[:, :, None] + torch.arange(CHUNK, device=dev)).clamp(max=len(ho) - 1)
    tgt = ho[tpos]                                                       # (W, L, 64)
    if corpus.aligned:  # padding is no text: it must not count as common with a neighbour's
        tgt = tgt.masked_fill(tgt == corpus.pad_id, -1)
    a = tgt[:, :, None, :].expand(W, L, k, CHUNK).reshape(-1, CHUNK)
    b = nbv.reshape(-1, nbv.shape[-1])
    lcs = longest_common_run(a, b).view(W, L, k).max(dim=2).values      # (W, L)
    ok_group = (lcs.float() <= alpha * CHUNK).cpu().numpy()
    g = group_of_targets(n)
    mask = np.zeros((W, n), dtype=bool)
    has = g >= 0
    mask[:, has] = ok_group[:, g[has]]
    return mask, lcs.cpu().numpy()


def bpb(nats, tgts, token_bytes, mask=None, ignore_id=-100):
    """-> (bits per byte, tokens, bytes) over the targets in mask (all when
    None) that are not ignore_id."""
    keep = mask
    if ignore_id >= 0:
        keep = (tgts != ignore_id) if keep is None else keep & (tgts != ignore_id)
    if keep is not None:
        nats, tgts = nats[keep], tgts[keep]
    nbytes = token_bytes[tgts].sum()
    return float(nats.sum() / math.log(2) / max(1, nbytes)), int(np.size(tgts)), int(nbytes)


@torch.no_grad()
def greedy(model, prompt, nb, steps):
    """prompt (1, p) -> generated ids (steps,), recomputing the full forward."""
    x = prompt
    out = []
    for _ in range(steps):
        logits = model(x, nb, retrieval=nb is not None)
        nxt = logits[0, -1].argmax()
        out.append(int(nxt))
        x = torch.cat([x, nxt.view(1, 1)], dim=1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--nb", required=True)
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--retro", required=True)
    ap.add_argument("--encoder-results", help="encoder_train.py results.json (recall@10)")
    ap.add_argument("--encoder", help="encoder directory: recompute recall@10 with it")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=0.2)
    ap.add_argument("--max-windows", type=int, default=0, help="0 = all held-out windows")
    ap.add_argument("--examples", type=int, default=0)
    common.add_device_args(ap)
    args = ap.parse_args(argv)
    dev = common.start(args)
    t0 = time.time()
    corpus = common.Corpus(args.data)
    tb = corpus.token_bytes
    db = common.ChunkDB(corpus, ["train", "heldout"], dev)
    nolk = torch.from_numpy(np.load(os.path.join(args.nb, "heldout_nolk.npy"))).long().to(dev)
    grd = torch.from_numpy(np.load(os.path.join(args.nb, "heldout_grd.npy"))).long().to(dev)
    L = args.seq // CHUNK
    cho = corpus.n_chunks("heldout")
    windows = torch.arange(0, cho - L, L, device=dev)
    if args.max_windows:
        windows = windows[:args.max_windows]
    base = Retro.load(args.baseline).to(dev)
    retro = Retro.load(args.retro).to(dev)
    log(f"{len(windows)} held-out windows of {args.seq} tokens; {common.env_info(dev)}")

    runs = {
        "baseline": score(base, corpus, db, None, windows, L, args.k, dev),
        "RETRO [OFF]": score(retro, corpus, db, None, windows, L, args.k, dev),
        "RETRO [ON] no leakage": score(retro, corpus, db, nolk, windows, L, args.k, dev),
        "RETRO [ON] grounded": score(retro, corpus, db, grd, windows, L, args.k, dev),
    }
    mask_nolk, lcs_nolk = leakage_mask(corpus, db, nolk, windows, L, args.k, args.alpha, dev)
    mask_grd, lcs_grd = leakage_mask(corpus, db, grd, windows, L, args.k, args.alpha, dev)
    res = {"rows": {}, "windows": int(len(windows)), "seq": args.seq, "k": args.k, "alpha": args.alpha}
    ign = corpus.ignore_id
    for name, (nats, tg) in runs.items():
        b, nt, nbytes = bpb(nats, tg, tb, ignore_id=ign)
        res["rows"][name] = {"bpb": b, "tokens": nt, "bytes": nbytes,
                             "nats_per_token": float((nats if ign < 0 else nats[tg != ign]).mean())}
    nats, tg = runs["RETRO [ON] no leakage"]
    b, nt, nbytes = bpb(nats, tg, tb, mask_nolk, ign)
    bb, _, _ = bpb(*runs["baseline"], tb, mask_nolk, ign)
    bo, _, _ = bpb(*runs["RETRO [OFF]"], tb, mask_nolk, ign)
    res["rows"]["RETRO [ON] leakage-filtered"] = {"bpb": b, "tokens": nt, "bytes": nbytes,
                                                  "baseline_same_tokens": bb, "off_same_tokens": bo,
                                                  "database": "no leakage"}
    nats, tg = runs["RETRO [ON] grounded"]
    b, nt, nbytes = bpb(nats, tg, tb, mask_grd, ign)
    bb, _, _ = bpb(*runs["baseline"], tb, mask_grd, ign)
    res["grounded_filtered"] = {"bpb": b, "tokens": nt, "bytes": nbytes, "baseline_same_tokens": bb}
    res["lcs_mean_tokens"] = {"no_leakage": float(lcs_nolk.mean()), "grounded": float(lcs_grd.mean())}
    if args.encoder_results and os.path.exists(args.encoder_results):
        with open(args.encoder_results) as f:
            res["encoder"] = json.load(f)
    if args.encoder:
        from bert_model import BertEncoder
        from encoder_train import evaluate_recall
        encm = BertEncoder.load(args.encoder).to(dev)
        res["encoder"] = {"contrastive": evaluate_recall(encm, corpus, corpus.meta, dev), "encoder": args.encoder}
    base_bpb = res["rows"]["baseline"]["bpb"]
    lines = ["| model | bpb | vs baseline | tokens |", "|---|---|---|---|"]
    for name, r in res["rows"].items():
        extra = ""
        if "baseline_same_tokens" in r:
            extra = f" (baseline on these tokens: {r['baseline_same_tokens']:.4f})"
            ratio = r["bpb"] / r["baseline_same_tokens"]
        else:
            ratio = r["bpb"] / base_bpb
        lines.append(f"| {name} | {r['bpb']:.4f}{extra} | {ratio:.3f}x | {r['tokens']} |")
    if "encoder" in res:
        e = res["encoder"].get("contrastive") or res["encoder"].get("retromae") or {}
        if e:
            lines.append(f"| encoder recall@10 (held-out queries / training queries) | "
                         f"{e['heldout']:.3f} / {e['train']:.3f} | | {e.get('n_candidates', '')} candidates |")
    g = res["grounded_filtered"]
    lines.append("")
    lines.append(f"Grounded database with the same filter: {g['tokens']} tokens left, bpb {g['bpb']:.4f} "
                 f"(baseline {g['baseline_same_tokens']:.4f}). Mean longest common run with the neighbours: "
                 f"no leakage {res['lcs_mean_tokens']['no_leakage']:.1f} tokens, grounded "
                 f"{res['lcs_mean_tokens']['grounded']:.1f} tokens (of 64).")
    table = "\n".join(lines)
    res["table"] = table
    res["seconds"] = time.time() - t0

    if args.examples:
        import tokref
        bpe = tokref.ByteBPE(os.path.join(args.data, "vocab.json"), os.path.join(args.data, "merges.txt"))
        ho = torch.from_numpy(corpus.tokens["heldout"]).to(dev)
        ex = []
        cands = np.linspace(0, cho - 4, args.examples * 3).astype(int)
        for c in cands:
            if len(ex) >= args.examples:
                break
            cd = corpus.chunkdoc["heldout"]
            if not (cd[c, 0] == cd[c + 2, 1]):
                continue  # prompt and continuation within one document
            prompt = ho[CHUNK * c:CHUNK * (c + 2)][None]
            nbt = db.values(grd[torch.tensor([c, c + 1], device=dev)][:, :args.k])[None]  # (1, 2, k, r)
            with common.autocast(dev):
                g_on = greedy(retro, prompt, nbt, CHUNK)
                g_base = greedy(base, prompt, None, CHUNK)
            truth = ho[CHUNK * (c + 2):CHUNK * (c + 3)].tolist()
            ex.append({"chunk": int(c), "prompt": bpe.decode_str(prompt[0].tolist()),
                       "truth": bpe.decode_str(truth), "retro_on_grounded": bpe.decode_str(g_on),
                       "baseline": bpe.decode_str(g_base),
                       "neighbour_1": bpe.decode_str(nbt[0, 1, 0].tolist()),
                       "on_matches_truth": sum(int(a == b) for a, b in zip(g_on, truth)),
                       "base_matches_truth": sum(int(a == b) for a, b in zip(g_base, truth))})
        res["examples"] = ex
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(res, f, indent=2)
    with open(os.path.join(args.out, "eval.md"), "w") as f:
        f.write(table + "\n")
    print(table, flush=True)
    log(f"done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
