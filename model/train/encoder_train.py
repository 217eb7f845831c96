"""encoder_train.py - trains the retrieval encoder (RoBERTa layout of
bert_model.py, byte-level BPE shared with the decoder) on 64-token chunks of
the corpus, and exports it in the Hugging Face layout the C encoder loads.

Stage 1, RetroMAE pre-training: the encoder sees the chunk with --enc-mask
(default 30%) of its tokens masked (80% <mask>, 10% random, 10% kept) and
gets an MLM loss; its [CLS] state h feeds a one-layer decoder with enhanced
decoding: query stream H1 = h + p_i, key/value stream H2 = [h, e(x_i) + p_i],
and a position-specific attention mask where row i sees position 0 and a
random (1 - --dec-mask) share of the other positions, never itself; every
token is reconstructed (cross-entropy summed with the MLM loss).
Stage 2, contrastive fine-tuning: InfoNCE with in-batch negatives
(symmetric, --temp) on pairs (chunk, its continuation in the same document)
and, for a share --views of the pairs, two random crops of one chunk.

After each stage: recall@10 of a chunk's true continuation among all chunks
(train + held-out, the query itself excluded), for held-out queries and a
sample of training queries. Resumes from <out>/ckpt.pt. Exports
<out>/export (config.json with "retro_pooling": "cls", model.safetensors,
vocab.json, merges.txt). Not here: the RetroMAE decoder/MLM head are not
exported (training-only), DupMAE's bag-of-words loss is not used.

  /usr/bin/python3 model/train/encoder_train.py --data .work/train/data --out .work/train/enc
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CHUNK, log  # noqa: E402
from bert_model import BertEncoder, make_config, l2_normalize  # noqa: E402


class MLMHead(nn.Module):
    """dense -> gelu -> LayerNorm -> tied decoder (+ bias), as HF's LM head."""

    def __init__(self, enc):
        super().__init__()
        h = enc.config["hidden_size"]
        self.dense = nn.Linear(h, h)
        self.ln = nn.LayerNorm(h, eps=enc.config["layer_norm_eps"])
        self.bias = nn.Parameter(torch.zeros(enc.config["vocab_size"]))
        self.emb = enc.embeddings.word_embeddings

    def forward(self, x):
        return F.linear(self.ln(F.gelu(self.dense(x))), self.emb.weight, self.bias)


class EnhancedDecoder(nn.Module):
    """One post-LN transformer layer where the queries (H1) and keys/values
    (H2) are different streams and the attention mask is per position."""

    def __init__(self, enc):
        super().__init__()
        c = enc.config
        h = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.q = nn.Linear(h, h)
        self.k = nn.Linear(h, h)
        self.v = nn.Linear(h, h)
        self.o = nn.Linear(h, h)
        self.ln1 = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.fc1 = nn.Linear(h, c["intermediate_size"])
        self.fc2 = nn.Linear(c["intermediate_size"], h)
        self.ln2 = nn.LayerNorm(h, eps=c["layer_norm_eps"])

    def forward(self, h1, h2, allow):
        # h1, h2: (B, T, H); allow: (B, T, T) bool, row = query position
        b, t, d = h1.shape
        nh, dh = self.heads, d // self.heads
        q = self.q(h1).view(b, t, nh, dh).transpose(1, 2)
        k = self.k(h2).view(b, t, nh, dh).transpose(1, 2)
        v = self.v(h2).view(b, t, nh, dh).transpose(1, 2)
        s = torch.matmul(q, k.transpose(-1, -2)) / dh ** 0.5
        s = s.masked_fill(~allow[:, None], torch.finfo(s.dtype).min)
        a = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(b, t, d)
        x = self.ln1(h1 + self.o(a))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


def with_specials(chunks, bos, eos):
    """(B, L) -> (B, L+2): <s> chunk </s>."""
    b = chunks.shape[0]
    return torch.cat([torch.full((b, 1), bos, device=chunks.device, dtype=chunks.dtype), chunks,
                      torch.full((b, 1), eos, device=chunks.device, dtype=chunks.dtype)], dim=1)


def mlm_mask(ids, rate, mask_id, vocab, n_special, gen):
    """BERT masking of the inner tokens (not <s>/</s>). Returns (input, labels
    with -100 where not masked)."""
    dev = ids.device
    prob = torch.rand(ids.shape, generator=gen).to(dev)
    prob[:, 0] = 1.0
    prob[:, -1] = 1.0
    sel = prob < rate
    labels = torch.where(sel, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=gen).to(dev)
    inp = ids.clone()
    inp[sel & (r < 0.8)] = mask_id
    rnd = torch.randint(n_special, vocab, ids.shape, generator=gen).to(dev)
    swap = sel & (r >= 0.8) & (r < 0.9)
    inp[swap] = rnd[swap]
    return inp, labels


@torch.no_grad()
def embed_chunks(enc, chunks, bos, eos, dev, bs=1024):
    """chunks: (C, 64) int64 numpy/tensor -> (C, H) float32 L2-normalised (CLS)."""
    enc.eval()
    out = []
    t = torch.as_tensor(chunks)
    for i in range(0, len(t), bs):
        ids = with_specials(t[i:i + bs].to(dev), bos, eos)
        with common.autocast(dev):
            v = enc.embed(ids, torch.ones_like(ids), pooling="cls", normalize=False)
        out.append(l2_normalize(v.float()))
    enc.train()
    return torch.cat(out)


@torch.no_grad()
def recall_at(emb, queries, targets, k=10, bs=2048):
    """Share of queries whose target is among the top k by inner product
    (the query itself excluded)."""
    hits = 0
    for i in range(0, len(queries), bs):
        q = queries[i:i + bs]
        s = emb[q] @ emb.T
        s[torch.arange(len(q), device=s.device), q] = -1e9
        top = s.topk(k, dim=1).indices
        hits += (top == targets[i:i + bs, None]).any(dim=1).sum().item()
    return hits / max(1, len(queries))


def continuation_pairs(chunkdoc):
    """Chunk ids c whose chunk c+1 lies in the same document."""
    cd = chunkdoc
    ok = (cd[:-1, 0] == cd[:-1, 1]) & (cd[1:, 0] == cd[:-1, 1]) & (cd[1:, 1] == cd[:-1, 1])
    return np.nonzero(ok)[0]


def evaluate_recall(enc, corpus, meta, dev, n_train_q=2000):
    """recall@10 (held-out queries, sampled training queries), all chunks as candidates."""
    tr, ho = corpus.chunks("train"), corpus.chunks("heldout")
    emb = embed_chunks(enc, np.concatenate([tr, ho]), meta["bos_id"], meta["sep_id"], dev)
    ctr = len(tr)
    qh = continuation_pairs(corpus.chunkdoc["heldout"]) + ctr
    qt = continuation_pairs(corpus.chunkdoc["train"])
    rs = np.random.RandomState(0)
    qt = qt[rs.choice(len(qt), min(n_train_q, len(qt)), replace=False)]
    res = {}
    for name, q in (("heldout", qh), ("train", qt)):
        qq = torch.from_numpy(q).long().to(dev)
        res[name] = recall_at(emb, qq, qq + 1)
    res["n_candidates"] = int(emb.shape[0])
    res["n_heldout_queries"] = int(len(qh))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=0)
    ap.add_argument("--mae-steps", type=int, default=2000)
    ap.add_argument("--mae-batch", type=int, default=256)
    ap.add_argument("--mae-lr", type=float, default=5e-4)
    ap.add_argument("--enc-mask", type=float, default=0.3)
    ap.add_argument("--dec-mask", type=float, default=0.6)
    ap.add_argument("--cl-steps", type=int, default=1000)
    ap.add_argument("--cl-batch", type=int, default=512)
    ap.add_argument("--cl-lr", type=float, default=1e-4)
    ap.add_argument("--temp", type=float, default=0.05)
    ap.add_argument("--views", type=float, default=0.25)
    ap.add_argument("--max-minutes", type=float, default=0, help="per stage: stop early after this much time")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--export-dtype", default="f32", choices=["f32", "f16"])
    common.add_device_args(ap, seed=1)
    args = ap.parse_args(argv)

    dev = common.start(args)
    log(common.env_info(dev))
    corpus = common.Corpus(args.data)
    meta = corpus.meta
    vocab = corpus.vocab_size
    bos, sep, pad, mask_id = meta["bos_id"], meta["sep_id"], meta["pad_id"], meta["mask_id"]
    n_special = 6
    cfg = make_config(model_type="roberta", vocab_size=vocab, hidden_size=args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      intermediate_size=args.ffn or 4 * args.hidden,
                      max_position_embeddings=CHUNK * 2 + pad + 1, pad_token_id=pad,
                      bos_token_id=bos, eos_token_id=sep, retro_pooling="cls")
    enc = BertEncoder(cfg).to(dev)
    head = MLMHead(enc).to(dev)
    dec = EnhancedDecoder(enc).to(dev)
    log(f"encoder {sum(p.numel() for p in enc.parameters()) / 1e6:.2f}M parameters; "
        f"chunks: train {corpus.n_chunks('train')}, held-out {corpus.n_chunks('heldout')}")
    chunks = torch.from_numpy(corpus.chunks("train")).to(dev)
    pairs = torch.from_numpy(continuation_pairs(corpus.chunkdoc["train"])).long().to(dev)
    C = chunks.shape[0]

    # the MLM head shares the word embeddings: list every parameter once
    mae_params = list({id(p): p for m in (enc, head, dec) for p in m.parameters()}.values())
    opt_mae = torch.optim.AdamW(mae_params, lr=args.mae_lr, weight_decay=0.01)
    opt_cl = torch.optim.AdamW(enc.parameters(), lr=args.cl_lr, weight_decay=0.01)
    state = {"stage": "mae", "step": 0, "results": {}}
    ckp = os.path.join(args.out, "ckpt.pt")
    ck = common.load_ckpt(ckp, dev)
    if ck is not None:
        enc.load_state_dict(ck["enc"])
        head.load_state_dict(ck["head"])
        dec.load_state_dict(ck["dec"])
        opt_mae.load_state_dict(ck["opt_mae"])
        opt_cl.load_state_dict(ck["opt_cl"])
        state = ck["state"]
        common.set_rng_state(ck["rng"])
        log(f"resumed: stage {state['stage']} step {state['step']}")
    gen = torch.Generator().manual_seed(args.seed * 7919 + state["step"] + (0 if state["stage"] == "mae" else 10 ** 6))

    def save():
        common.save_ckpt(ckp, enc=enc.state_dict(), head=head.state_dict(), dec=dec.state_dict(),
                         opt_mae=opt_mae.state_dict(), opt_cl=opt_cl.state_dict(), state=state,
                         rng=common.rng_state())

    if "random_init" not in state["results"] and state["stage"] == "mae" and state["step"] == 0:
        state["results"]["random_init"] = evaluate_recall(enc, corpus, meta, dev)
        log("recall@10 before training:", state["results"]["random_init"])

    # ---------------- stage 1: RetroMAE
    t0 = time.time()
    enc.train()
    while state["stage"] == "mae" and state["step"] < args.mae_steps:
        step = state["step"]
        lr = common.lr_at(step, args.mae_steps, args.mae_lr, min(200, args.mae_steps // 10 + 1))
        for g in opt_mae.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, C, (args.mae_batch,), generator=gen).to(dev)
        ids = with_specials(chunks[idx], bos, sep)                   # (B, T)
        b, t = ids.shape
        inp, labels = mlm_mask(ids, args.enc_mask, mask_id, vocab, n_special, gen)
        with common.autocast(dev):
            hid = enc(inp, torch.ones_like(inp))                     # (B, T, H)
            mlm = F.cross_entropy(head(hid).float().reshape(-1, vocab), labels.reshape(-1), ignore_index=-100)
            h = hid[:, :1]                                           # (B, 1, H) [CLS]
            posids = enc.embeddings.position_ids(ids)
            p = enc.embeddings.position_embeddings(posids)           # (B, T, H)
            h1 = h + p
            e = enc.embeddings(ids)                                  # e(x_i) + p_i, LayerNorm
            h2 = torch.cat([h, e[:, 1:]], dim=1)
            see = torch.rand(b, t, t, generator=gen).to(dev) >= args.dec_mask
            see[:, :, 0] = True
            see &= ~torch.eye(t, dtype=torch.bool, device=dev)[None]
            see[:, 0, 0] = True  # row 0 (predicting <s>) needs some key; its loss is not counted
            out = dec(h1, h2, see)
            dl = F.cross_entropy(head(out[:, 1:]).float().reshape(-1, vocab), ids[:, 1:].reshape(-1))
        loss = mlm + dl
        opt_mae.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mae_params, 1.0)
        opt_mae.step()
        state["step"] += 1
        over = args.max_minutes and time.time() - t0 > args.max_minutes * 60
        if state["step"] % args.log_every == 0 or state["step"] == args.mae_steps or over:
            log(f"mae step {state['step']}/{args.mae_steps} lr {lr:.2e} mlm {mlm.item():.4f} "
                f"dec {dl.item():.4f} ({(time.time() - t0) / state['step']:.3f}s/step incl. resume)")
        if state["step"] % args.ckpt_every == 0:
            save()
        if over:
            log("stage time limit reached")
            break
    if state["stage"] == "mae":
        state["results"]["retromae"] = evaluate_recall(enc, corpus, meta, dev)
        state["results"]["mae_steps"] = state["step"]
        log("recall@10 after RetroMAE:", state["results"]["retromae"])
        state["stage"], state["step"] = "cl", 0
        save()

    # ---------------- stage 2: contrastive
    t0 = time.time()
    enc.train()
    P = len(pairs)
    crop_min = CHUNK // 2
    while state["stage"] == "cl" and state["step"] < args.cl_steps:
        step = state["step"]
        lr = common.lr_at(step, args.cl_steps, args.cl_lr, min(100, args.cl_steps // 10 + 1))
        for g in opt_cl.param_groups:
            g["lr"] = lr
        bsz = args.cl_batch
        c = pairs[torch.randint(0, P, (bsz,), generator=gen).to(dev)]
        a = chunks[c]
        bpos = chunks[c + 1].clone()
        nv = int(round(args.views * bsz))
        if nv:
            # two random crops (>= 32 tokens) of the same chunk, padded
            va, vb = [], []
            for src in (a[:nv], a[:nv]):
                ln = torch.randint(crop_min, CHUNK + 1, (nv,), generator=gen).to(dev)
                st = (torch.rand(nv, generator=gen).to(dev) * (CHUNK - ln + 1).float()).long()
                j = torch.arange(CHUNK, device=dev)[None]
                keep = j < ln[:, None]
                g_ = (st[:, None] + j).clamp(max=CHUNK - 1)
                v = torch.where(keep, src.gather(1, g_), torch.full_like(src, pad))
                (va if not va else vb).append(v)
            a = torch.cat([va[0], a[nv:]])
            bpos = torch.cat([vb[0], bpos[nv:]])
        ia, ib = with_specials(a, bos, sep), with_specials(bpos, bos, sep)
        # move </s> to the end of the real tokens for padded crops
        for ids in (ia, ib):
            if nv:
                real = (ids[:nv, 1:-1] != pad).sum(1)
                ids[:nv, -1] = pad
                ids[torch.arange(nv, device=dev), real + 1] = sep
        ma, mb = (ia != pad).long(), (ib != pad).long()
        with common.autocast(dev):
            ea = enc.embed(ia, ma, pooling="cls", normalize=False).float()
            eb = enc.embed(ib, mb, pooling="cls", normalize=False).float()
        ea, eb = l2_normalize(ea), l2_normalize(eb)
        logits = ea @ eb.T / args.temp
        tgt = torch.arange(bsz, device=dev)
        loss = 0.5 * (F.cross_entropy(logits, tgt) + F.cross_entropy(logits.T, tgt))
        opt_cl.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt_cl.step()
        state["step"] += 1
        over = args.max_minutes and time.time() - t0 > args.max_minutes * 60
        if state["step"] % args.log_every == 0 or state["step"] == args.cl_steps or over:
            acc = (logits.argmax(1) == tgt).float().mean().item()
            log(f"cl step {state['step']}/{args.cl_steps} lr {lr:.2e} infonce {loss.item():.4f} "
                f"in-batch acc {acc:.3f} ({(time.time() - t0) / state['step']:.3f}s/step)")
        if state["step"] % args.ckpt_every == 0:
            save()
        if over:
            log("stage time limit reached")
            break
    if state["stage"] == "cl":
        state["results"]["contrastive"] = evaluate_recall(enc, corpus, meta, dev)
        state["results"]["cl_steps"] = state["step"]
        log("recall@10 after contrastive fine-tuning:", state["results"]["contrastive"])
        state["stage"] = "done"
        save()

    exp = os.path.join(args.out, "export")
    enc.eval()
    enc.save_pretrained(exp, dtype=torch.float16 if args.export_dtype == "f16" else torch.float32)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(args.data, f), os.path.join(exp, f))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(state["results"], f, indent=2)
    log(f"exported {exp}; results {state['results']}")


if __name__ == "__main__":
    main()
