"""rerank_train.py - trains a cross-encoder reranker: the retrieval encoder
(its weights as the start) reads a query and a chunk together,
<s> query </s></s> chunk </s>, and a head on the first token's output
(dense, tanh, one output: Hugging Face's RobertaForSequenceClassification
with num_labels 1) scores how well the chunk answers the query.

Data: qp_mine.py's query -> passage pairs, and rerank_mine.py's candidates
for each query (the hybrid search's best chunks of other documents), so it
learns to order what the server's search returns. A step takes --batch
queries, each with its passage and --group - 1 candidates (drawn from the
hybrid's list, BM25 negatives of qp_mine.py where that is short), and
minimises the cross-entropy of the passage among them. The passage is the
chunk as stored half of the time, and without the query's words
(qp_mine.py's "pos") the other half: stored chunks usually hold the words
of a keyword query, while a question's answer need not, and a reranker that
only saw one of the two would learn that words either always or never
matter.

Validation: pairs of held-out documents (qp_mine.py's val.jsonl, the first
--val-per-kind of each kind) rank their stored chunk among their hybrid
candidates; MRR@10 and hit@1, before and after. Runs on the CPU (--threads) or CUDA; checkpoints to OUT/ckpt.pt and
resumes; stops at --steps or --max-minutes; exports OUT/export (F16 by
default) with the encoder's tokenizer files.

  /usr/bin/python3 model/train/rerank_train.py --init model/default/encoder \
      --mined QP_MINE_OUT --cands RERANK_MINE_OUT --dump DUMP --out OUT
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import st  # noqa: E402
from common import log  # noqa: E402
from bert_model import BertEncoder  # noqa: E402
from tokref import ByteBPE  # noqa: E402

MAX_QUERY = 32  # query tokens kept, as model/rerank.c keeps


# The head's tensors by layout (Hugging Face's names): dense, then out_proj.
HEAD_NAMES = {"roberta": ("classifier.dense", "classifier.out_proj"),
              "bert": ("bert.pooler.dense", "classifier")}


class CrossEncoder(nn.Module):
    """RobertaForSequenceClassification (or, for model_type "bert",
    BertForSequenceClassification) with one label: encoder, then dense ->
    tanh -> out_proj on the first token. BERT reads the passage with token
    type 1 (types: the ids' token types, or None for all 0)."""

    def __init__(self, enc):
        super().__init__()
        self.enc = enc
        h = enc.config["hidden_size"]
        self.dense = nn.Linear(h, h)
        self.out_proj = nn.Linear(h, 1)
        for m in (self.dense, self.out_proj):
            nn.init.normal_(m.weight, std=enc.config["initializer_range"])
            nn.init.zeros_(m.bias)
        self.drop = nn.Dropout(enc.config["hidden_dropout_prob"])

    def forward(self, ids, mask, types=None):
        x = self.enc(ids, mask, types)[:, 0]
        x = torch.tanh(self.dense(self.drop(x)))
        return self.out_proj(self.drop(x)).squeeze(-1)

    @classmethod
    def load(cls, path):
        """A directory written by save_pretrained (or Hugging Face's
        Roberta/BertForSequenceClassification with num_labels 1)."""
        enc = BertEncoder.load(path)
        enc.pooler = None  # BERT's pooler is the head's dense layer here
        m = cls(enc)
        sd = st.load(os.path.join(path, "model.safetensors"))
        dense, out = HEAD_NAMES[enc.config["model_type"]]
        with torch.no_grad():
            m.dense.weight.copy_(sd[dense + ".weight"].float())
            m.dense.bias.copy_(sd[dense + ".bias"].float())
            m.out_proj.weight.copy_(sd[out + ".weight"].float())
            m.out_proj.bias.copy_(sd[out + ".bias"].float())
        return m

    def save_pretrained(self, path, dtype):
        os.makedirs(path, exist_ok=True)
        cfg = dict(self.enc.config)
        cfg.pop("retro_pooling", None)
        cfg.pop("retro_query_prefix", None)
        layout = cfg["model_type"]
        cfg["architectures"] = ["RobertaForSequenceClassification" if layout == "roberta"
                                else "BertForSequenceClassification"]
        cfg["num_labels"] = 1
        cfg["id2label"] = {"0": "LABEL_0"}
        cfg["label2id"] = {"LABEL_0": 0}
        cfg["torch_dtype"] = {torch.float32: "float32", torch.float16: "float16"}[dtype]
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
        sd = {layout + "." + k: v for k, v in self.enc.state_dict().items()}
        dense, out = HEAD_NAMES[layout]
        sd.update({dense + ".weight": self.dense.weight, dense + ".bias": self.dense.bias,
                   out + ".weight": self.out_proj.weight, out + ".bias": self.out_proj.bias})
        st.save({k: v.detach().to(dtype) for k, v in sd.items()}, os.path.join(path, "model.safetensors"),
                metadata={"format": "pt"})


def pair_ids(query, passage, bos, eos, max_tokens):
    """<s> query </s></s> passage </s>, the query cut to MAX_QUERY tokens and
    the passage to what is left of max_tokens (the C reranker's rule)."""
    q = list(query)[:MAX_QUERY]
    return [bos] + q + [eos, eos] + list(passage)[:max(0, max_tokens - len(q) - 4)] + [eos]


def batch(seqs, pad, dev):
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    ids = ids.to(dev)
    return ids, (ids != pad).long()


def bert_pair(query, passage, cls, sep, max_tokens):
    """BERT's [CLS] query [SEP] passage [SEP] and its token types, cut as
    pair_ids cuts (model/bert.c's rule)."""
    q = list(query)[:MAX_QUERY]
    p = list(passage)[:max(0, max_tokens - len(q) - 3)]
    return [cls] + q + [sep] + p + [sep], [0] * (len(q) + 2) + [1] * (len(p) + 1)


@torch.no_grad()
def validate(model, val, vcands, vq, chunk, bos, eos, pad, dev):
    """MRR@10 and hit@1 of each validation pair's stored chunk among its
    hybrid candidates."""
    model.eval()
    mrr = hit1 = 0.0
    n = 0
    for p, c, q in zip(val, vcands, vq):
        seqs = [pair_ids(q, chunk(p["row"]), bos, eos, model.enc.max_tokens)]
        seqs += [pair_ids(q, chunk(r), bos, eos, model.enc.max_tokens) for r in c["cands"]]
        s = model(*batch(seqs, pad, dev))
        rank = int((s[1:] > s[0]).sum())
        mrr += 1.0 / (rank + 1) if rank < 10 else 0.0
        hit1 += rank == 0
        n += 1
    model.train()
    n = max(1, n)
    return {"mrr10": round(mrr / n, 4), "hit1": round(hit1 / n, 4), "queries": n}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", required=True, help="exported encoder to start from")
    ap.add_argument("--mined", required=True, help="qp_mine.py output folder")
    ap.add_argument("--cands", required=True, help="rerank_mine.py output folder")
    ap.add_argument("--dump", required=True, help="`retro neighbours` dump the two were made with")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--max-minutes", type=float, default=60)
    ap.add_argument("--ckpt-every", type=int, default=25)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--val-per-kind", type=int, default=30,
                    help="validation pairs kept of each kind (signatures are three quarters of them)")
    ap.add_argument("--export-dtype", default="f16", choices=["f32", "f16"])
    common.add_device_args(ap, seed=1)
    a = ap.parse_args()

    dev = common.start(a)
    log(common.env_info(dev))
    bpe = ByteBPE(os.path.join(a.init, "vocab.json"), os.path.join(a.init, "merges.txt"))
    bos, eos, pad = bpe.token_id("<s>"), bpe.token_id("</s>"), bpe.token_id("<pad>")
    pairs = [json.loads(l) for l in open(os.path.join(a.mined, "pairs.jsonl"))]
    val = [json.loads(l) for l in open(os.path.join(a.mined, "val.jsonl"))]
    cands = [json.loads(l) for l in open(os.path.join(a.cands, "train.jsonl"))]
    vcands = [json.loads(l) for l in open(os.path.join(a.cands, "val.jsonl"))]
    if len(cands) != len(pairs) or len(vcands) != len(val):
        sys.exit("rerank_train.py: the candidates were not mined from these pairs")
    seen = {}
    keep = [i for i, v in enumerate(val) if seen.setdefault(v["kind"], []).append(i) or
            len(seen[v["kind"]]) <= a.val_per_kind]
    val, vcands = [val[i] for i in keep], [vcands[i] for i in keep]
    qtok = [bpe.encode(p["q"].encode("utf-8")) for p in pairs]
    vtok = [bpe.encode(v["q"].encode("utf-8")) for v in val]
    kinds, w = common.kind_weights(pairs)
    log(f"pairs {len(pairs)} by kind {kinds}; validation {len(val)}")
    toks = np.load(os.path.join(a.dump, "tokens.npy"))

    def chunk(r):
        return [int(x) for x in toks[r] if x >= 0 and x != pad]

    model = CrossEncoder(BertEncoder.load(a.init)).to(dev)
    model.train()
    head = list(model.dense.parameters()) + list(model.out_proj.parameters())
    opt = torch.optim.AdamW([{"params": model.enc.parameters(), "lr": a.lr, "peak": a.lr},
                             {"params": head, "lr": a.head_lr, "peak": a.head_lr}], weight_decay=0.01)
    state, ckp = common.resume(a.out, dev, opt, model=model)
    rng = random.Random(a.seed * 7919 + state["step"])
    nrs = np.random.RandomState(a.seed * 31 + state["step"])

    def save():
        common.save_ckpt(ckp, model=model.state_dict(), opt=opt.state_dict(), state=state,
                         rng=common.rng_state())

    def group(i):
        """Query i's passage first, then group - 1 negatives."""
        p = pairs[i]
        pos = chunk(p["row"]) if rng.random() < 0.5 else p["pos"]
        c = cands[i]["cands"]
        negs = [chunk(r) for r in rng.sample(c, min(len(c), a.group - 1))]
        extra = list(p["neg"])
        rng.shuffle(extra)
        negs += extra[:a.group - 1 - len(negs)]
        while len(negs) < a.group - 1:
            negs.append(chunk(rng.randrange(len(toks))))
        return [pair_ids(qtok[i], s, bos, eos, model.enc.max_tokens) for s in [pos] + negs]

    if "before" not in state["results"]:
        state["results"]["before"] = validate(model, val, vcands, vtok, chunk, bos, eos, pad, dev)
        log("validation before:", state["results"]["before"])
        save()
    t0 = time.time()
    while state["step"] < a.steps:
        step = state["step"]
        for g in opt.param_groups:
            g["lr"] = common.lr_at(step, a.steps, g["peak"], min(30, a.steps // 10 + 1))
        sel = nrs.choice(len(pairs), a.batch, replace=False, p=w)
        seqs = [s for i in sel for s in group(i)]
        with common.autocast(dev):
            logits = model(*batch(seqs, pad, dev)).float().view(a.batch, a.group)
        loss = F.cross_entropy(logits, torch.zeros(a.batch, dtype=torch.long, device=dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        over = a.max_minutes and time.time() - t0 > a.max_minutes * 60
        if state["step"] % a.log_every == 0 or over or state["step"] == a.steps:
            log(f"step {state['step']}/{a.steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
        if state["step"] % a.ckpt_every == 0:
            save()
        if over:
            log("time limit reached")
            break
    state["results"]["after"] = validate(model, val, vcands, vtok, chunk, bos, eos, pad, dev)
    state["results"]["steps"] = state["step"]
    log("validation after:", state["results"]["after"])
    save()
    model.eval()
    dtype = torch.float16 if a.export_dtype == "f16" else torch.float32
    common.finish_export(a.out, a.init, state["results"], lambda exp: model.save_pretrained(exp, dtype))


if __name__ == "__main__":
    main()
