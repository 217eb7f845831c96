"""qp_finetune.py - teaches the retrieval encoder questions: continues from
an exported encoder (the committed default) with a mixed objective,
  query -> passage pairs mined by qp_mine.py: InfoNCE over the batch's
      passages and their BM25 hard negatives (temperature --temp);
  chunk -> its continuation (what RETRO retrieves with): symmetric InfoNCE
      with in-batch negatives, as encoder_train.py's contrastive stage,
so the model learns short queries without losing chunk-to-chunk retrieval.
Kinds of pairs are sampled by 1/sqrt(their count), so the many signatures do
not drown the headings, FAQ questions and error lines. With --query-prefix
every query is embedded as PREFIX + query (passages and chunks as they are),
and the export's config.json says so ("retro_query_prefix"), so the server
embeds a search text the same way; without it queries are embedded as they are.

Runs on the CPU (threads --threads) or CUDA when present; checkpoints every
--ckpt-every steps to OUT/ckpt.pt and resumes from it; stops at --steps or
after --max-minutes; exports OUT/export (F16 by default, vocab and merges
copied from --init). Before and after: MRR@10 and hit@5 of the validation
pairs (mined from held-out documents only) against their passages plus
--pool random chunks, and the largest number of validation queries one
chunk is the top hit of (hubness).

  /usr/bin/python3 model/train/qp_finetune.py --init model/default/encoder \
      --mined OUT_OF_QP_MINE --dump DUMP --heldout model/default/heldout.txt --out OUT
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import log  # noqa: E402
from bert_model import BertEncoder, l2_normalize  # noqa: E402
from tokref import ByteBPE  # noqa: E402

MAX_QUERY = 32  # query tokens kept (the server keeps up to the encoder's 128)


def batch_ids(seqs, bos, eos, pad, dev):
    """Token lists -> (B, T) ids with <s> ... </s> and padding, and the mask."""
    t = max(len(s) for s in seqs) + 2
    ids = torch.full((len(seqs), t), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, 0] = bos
        ids[i, 1:1 + len(s)] = torch.tensor(s, dtype=torch.long)
        ids[i, 1 + len(s)] = eos
    ids = ids.to(dev)
    return ids, (ids != pad).long()


def embed(enc, seqs, bos, eos, pad, dev, grad=True):
    ids, mask = batch_ids(seqs, bos, eos, pad, dev)
    with torch.set_grad_enabled(grad), common.autocast(dev):
        v = enc.embed(ids, mask, pooling="cls", normalize=False).float()
    return l2_normalize(v)


def dump_rows(d):
    """(document name, ordinal) of each row of a `retro neighbours` dump, and
    the rows' chunk ids."""
    names = {}
    for line in open(os.path.join(d, "docs.jsonl")):
        j = json.loads(line)
        names[j["doc_num"]] = j["id"]
    dn = np.load(os.path.join(d, "doc_nums.npy"))
    ords = np.load(os.path.join(d, "ordinals.npy"))
    return [(names[int(x)], int(o)) for x, o in zip(dn, ords)], np.load(os.path.join(d, "chunk_ids.npy"))


def mined_negatives(mined, keys, held):
    """Row -> rows of the training dump (keys: its dump_rows, matched by
    document name and ordinal, so the two dumps may come from different
    databases) that the --cc-mined dump ranks nearest to it, without itself,
    its continuation and held-out chunks."""
    mk, mids = dump_rows(mined)
    row_of_key = {k: r for r, k in enumerate(keys)}
    key_of_id = {int(c): k for c, k in zip(mids, mk)}
    neigh = np.load(os.path.join(mined, "neighbours.npy"))
    out = {}
    for m, (name, o) in enumerate(mk):
        r = row_of_key.get((name, o))
        if r is None or name in held:
            continue
        negs = []
        for c in neigh[m]:
            k = key_of_id.get(int(c)) if c >= 0 else None
            if k is None or k[0] in held or k == (name, o) or k == (name, o + 1) or k not in row_of_key:
                continue
            negs.append(row_of_key[k])
        out[r] = negs
    return out


def load_dump(dump, held):
    """A `retro neighbours` dump's chunk tokens (rows), the (chunk, next
    chunk) row pairs of documents not in held (RETRO's continuation pairs),
    and each row's (document name, ordinal)."""
    toks = np.load(os.path.join(dump, "tokens.npy"))
    keys, _ = dump_rows(dump)
    at = {k: r for r, k in enumerate(keys)}
    cont = [(r, at[(name, o + 1)]) for r, (name, o) in enumerate(keys)
            if name not in held and (name, o + 1) in at]
    return toks, cont, keys


@torch.no_grad()
def validate(enc, val, pool, toks, bos, eos, pad, dev, bs=256):
    """MRR@10, hit@5 of validation queries among their passages + pool chunks,
    and the most validation queries one candidate is the top hit of."""
    enc.eval()
    cands = [v["pos"] for v in val] + pool
    ce = torch.cat([embed(enc, cands[i:i + bs], bos, eos, pad, dev, False) for i in range(0, len(cands), bs)])
    qe = torch.cat([embed(enc, toks[i:i + bs], bos, eos, pad, dev, False) for i in range(0, len(toks), bs)])
    s = qe @ ce.T
    top = s.topk(10, dim=1).indices.cpu().numpy()
    mrr = hit5 = 0.0
    for i, row in enumerate(top):
        where = np.nonzero(row == i)[0]
        if len(where):
            mrr += 1.0 / (where[0] + 1)
            hit5 += where[0] < 5
    wins = np.bincount(top[:, 0], minlength=len(cands)).max()
    enc.train()
    n = max(1, len(val))
    return {"mrr10": round(mrr / n, 4), "hit5": round(hit5 / n, 4), "max_top1_wins": int(wins),
            "queries": len(val), "candidates": len(cands)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", required=True, help="exported encoder to continue from")
    ap.add_argument("--mined", required=True, help="qp_mine.py output folder (pairs.jsonl, val.jsonl)")
    ap.add_argument("--dump", required=True, help="`retro neighbours` dump: chunk tokens and documents")
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-qp", type=int, default=48)
    ap.add_argument("--batch-cc", type=int, default=32)
    ap.add_argument("--cc-weight", type=float, default=1.0)
    ap.add_argument("--cc-hard", type=int, default=0,
                    help="1: each continuation pair also gets a negative from the same document "
                         "(tried from the committed encoder: held-out continuation recall fell, "
                         "model card)")
    ap.add_argument("--cc-mined", default=None,
                    help="a `retro neighbours --include-same-doc` dump of the corpus made with --init: "
                         "each continuation pair also gets one of the chunk's nearest neighbours "
                         "(not the chunk, not its continuation, not held out) as its negative, "
                         "the chunks that outrank the continuation in eval_c.sh's recall@10 "
                         "(tried from the committed encoder: queries improved, that recall fell; model card)")
    ap.add_argument("--anchor", default=None,
                    help="an exported encoder (the chunk-to-chunk stage 2): every chunk embedded in a step "
                         "is also pulled towards its embedding by this frozen encoder (--anchor-weight "
                         "times 1 - cosine), so the chunks keep the geometry RETRO's continuation recall "
                         "comes from while the queries learn to reach them")
    ap.add_argument("--anchor-weight", type=float, default=10.0)
    ap.add_argument("--cc-queue", type=int, default=0,
                    help="keep the continuation embeddings of the last steps (this many, detached) as "
                         "extra negatives of the chunk -> continuation loss: in-batch negatives alone "
                         "make that task easy (loss ~0.1 with 32), while eval_c.sh's recall ranks "
                         "a continuation among all chunks. Refilled after a resume. (Tried from the "
                         "committed encoder: recall and query skill both fell; docs/MODELS.md)")
    ap.add_argument("--query-prefix", default="",
                    help="text put before every query (not before passages or chunks), e.g. 'query: ': "
                         "lets the encoder treat a question apart from the chunks whose geometry RETRO "
                         "needs; written to the export's config.json as retro_query_prefix "
                         "(tried: docs/MODELS.md)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--temp", type=float, default=0.05)
    ap.add_argument("--pool", type=int, default=3000, help="random chunks among the validation candidates")
    ap.add_argument("--max-minutes", type=float, default=110)
    ap.add_argument("--ckpt-every", type=int, default=50)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--export-dtype", default="f16", choices=["f32", "f16"])
    common.add_device_args(ap, seed=1)
    a = ap.parse_args()

    dev = common.start(a)
    log(common.env_info(dev))
    bpe = ByteBPE(os.path.join(a.init, "vocab.json"), os.path.join(a.init, "merges.txt"))
    bos, eos, pad = bpe.token_id("<s>"), bpe.token_id("</s>"), bpe.token_id("<pad>")
    held = set(open(a.heldout).read().split())

    pairs = [json.loads(l) for l in open(os.path.join(a.mined, "pairs.jsonl"))]
    val = [json.loads(l) for l in open(os.path.join(a.mined, "val.jsonl"))]
    if any(p["doc"] in held for p in pairs):
        sys.exit("qp_finetune.py: a training pair comes from a held-out document")
    qtok = [bpe.encode(a.query_prefix + p["q"])[:MAX_QUERY] for p in pairs]
    vtok = [bpe.encode(a.query_prefix + v["q"])[:MAX_QUERY] for v in val]
    kinds, w = common.kind_weights(pairs)
    log(f"pairs {len(pairs)} by kind {kinds}; validation {len(val)}")

    toks, cont, keys = load_dump(a.dump, held)
    # Same-document chunks are what a chunk's true continuation competes with
    # among all chunks (eval_c.sh's recall@10), and in-batch negatives from
    # other documents never show them (--cc-hard; it did not raise that
    # recall when tried, so it is off by default).
    rows_of_doc = {}
    for r, (name, _) in enumerate(keys):
        rows_of_doc.setdefault(name, []).append(r)

    def chunk(r):
        return [int(x) for x in toks[r] if x >= 0 and x != pad]
    rs = np.random.RandomState(a.seed)
    pool = [chunk(int(r)) for r in rs.choice(len(toks), a.pool, replace=False)]
    log(f"continuation pairs {len(cont)}")

    enc = BertEncoder.load(a.init).to(dev)
    enc.train()
    anchor = BertEncoder.load(a.anchor).to(dev).eval() if a.anchor else None

    def anchor_loss(seqs, e):
        """Mean 1 - cosine of the chunk embeddings e to --anchor's."""
        if anchor is None:
            return torch.zeros((), device=dev)
        return (1.0 - (e * embed(anchor, seqs, bos, eos, pad, dev, False)).sum(1)).mean()
    opt = torch.optim.AdamW(enc.parameters(), lr=a.lr, weight_decay=0.01)
    state, ckp = common.resume(a.out, dev, opt, enc=enc)
    rng = random.Random(a.seed * 7919 + state["step"])
    nrs = np.random.RandomState(a.seed * 31 + state["step"])

    mined = mined_negatives(a.cc_mined, keys, held) if a.cc_mined else {}
    if a.cc_mined:
        log(f"mined continuation negatives for {sum(1 for v in mined.values() if v)} chunks")

    def cc_negative(x, y):
        """--cc-mined's neighbour of x, else --cc-hard's same-document chunk."""
        if mined.get(x):
            return rng.choice(mined[x])
        return same_doc_negative(x, y)

    def same_doc_negative(x, y):
        """Another chunk of x's document (neither x nor its continuation y),
        or a random chunk when the document has no third one."""
        others = [r for r in rows_of_doc[keys[x][0]] if r != x and r != y]
        return rng.choice(others) if others else rng.randrange(len(toks))

    # --cc-queue: (embeddings, dump rows) of recent continuations, newest first.
    queue = (torch.zeros(0, enc.config["hidden_size"], device=dev), torch.zeros(0, dtype=torch.long, device=dev))

    def save():
        common.save_ckpt(ckp, enc=enc.state_dict(), opt=opt.state_dict(), state=state, rng=common.rng_state())

    if "before" not in state["results"]:
        state["results"]["before"] = validate(enc, val, pool, vtok, bos, eos, pad, dev)
        log("validation before:", state["results"]["before"])
        save()
    t0 = time.time()
    while state["step"] < a.steps:
        step = state["step"]
        lr = common.lr_at(step, a.steps, a.lr, min(50, a.steps // 10 + 1))
        for g in opt.param_groups:
            g["lr"] = lr
        sel = nrs.choice(len(pairs), a.batch_qp, replace=False, p=w)
        qs = [qtok[i] for i in sel]
        ps = [pairs[i]["pos"] for i in sel]
        ns = [rng.choice(pairs[i]["neg"]) if pairs[i]["neg"] else chunk(rng.randrange(len(toks))) for i in sel]
        eq = embed(enc, qs, bos, eos, pad, dev)
        ep = embed(enc, ps + ns, bos, eos, pad, dev)
        l_an = anchor_loss(ps + ns, ep)
        tgt = torch.arange(len(qs), device=dev)
        l_qp = F.cross_entropy(eq @ ep.T / a.temp, tgt)
        cc = [cont[rng.randrange(len(cont))] for _ in range(a.batch_cc)]
        sa = [chunk(x) for x, _ in cc]
        ea = embed(enc, sa, bos, eos, pad, dev)
        hard = [cc_negative(x, y) for x, y in cc] if a.cc_hard or a.cc_mined else []
        sb = [chunk(y) for _, y in cc] + [chunk(z) for z in hard]
        eb = embed(enc, sb, bos, eos, pad, dev)
        l_an = (l_an + anchor_loss(sa, ea) + anchor_loss(sb, eb)) / 3
        lg = ea @ eb.T / a.temp
        tc = torch.arange(len(cc), device=dev)
        l_cc_back = F.cross_entropy(lg[:, :len(cc)].T, tc)
        if a.cc_queue:
            ys = torch.tensor([y for _, y in cc], device=dev)
            lq = ea @ queue[0].T / a.temp
            # A queued copy of a pair's own continuation is not a negative.
            lg = torch.cat([lg, lq.masked_fill(queue[1][None, :] == ys[:, None], float("-inf"))], 1)
            queue = (torch.cat([eb[:len(cc)].detach(), queue[0]])[:a.cc_queue],
                     torch.cat([ys, queue[1]])[:a.cc_queue])
        l_cc = 0.5 * (F.cross_entropy(lg, tc) + l_cc_back)
        loss = l_qp + a.cc_weight * l_cc + a.anchor_weight * l_an
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        over = a.max_minutes and time.time() - t0 > a.max_minutes * 60
        if state["step"] % a.log_every == 0 or over or state["step"] == a.steps:
            log(f"step {state['step']}/{a.steps} lr {lr:.2e} query {l_qp.item():.4f} "
                f"continuation {l_cc.item():.4f} anchor {l_an.item():.4f}"
                + (f" queue {len(queue[1])}" if a.cc_queue else "") + f" ({time.time() - t0:.0f}s)")
        if state["step"] % a.ckpt_every == 0:
            save()
        if over:
            log("time limit reached")
            break
    state["results"]["after"] = validate(enc, val, pool, vtok, bos, eos, pad, dev)
    state["results"]["steps"] = state["step"]
    log("validation after:", state["results"]["after"])
    save()
    enc.eval()
    enc.set_query_prefix(a.query_prefix)
    dtype = torch.float16 if a.export_dtype == "f16" else torch.float32
    common.finish_export(a.out, a.init, state["results"], lambda exp: enc.save_pretrained(exp, dtype=dtype))


if __name__ == "__main__":
    main()
