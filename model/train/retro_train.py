"""retro_train.py - trains the RETRO decoder of retro_model.py (and its
same-size baseline) and exports it in the C format (model/RETRO_FORMAT.md).

Modes (--mode):
  synthetic  the copy task that proves the recipe: random token sequences
             whose chunk-u neighbours hold chunk u+1 verbatim in their
             continuation; prints the loss on the copyable tokens (positions
             that can see a neighbour) next to the others. No data needed.
  baseline   retrieval off (CCA sublayers skipped) on the corpus: the
             same-size baseline, trained on the same tokens.
  retrofit   starts from a baseline (--init), freezes it, and trains only the
             CCA sublayers and the neighbour encoder (zero-initialised CCA
             output, so step 0 equals the baseline; RETRO [OFF] stays equal
             to the baseline forever).
  joint      trains every weight with retrieval on (from --init or scratch).

Corpus modes read the data folder of prep.py and the neighbour files of
neighbours.py or c_neighbours.py (train_knn.npy: k nearest training chunks
of each training chunk, other documents only). A fraction --plant of the
training sequences get the chunk's true continuation planted among its
neighbours (its own [C_u, C_u+1], or with probability --shift a window
shifted by up to 48 tokens, so reading a neighbour pays and copying must
find the alignment). On chunk-aligned data (prep.py --align-chunks) pad_id
targets are neither trained on nor scored, and neighbour values stop at
their document's end as the C database serves them (common.ChunkDB); a
planted window is the stream itself.
Progress lines show the held-out loss with retrieval off, with real
neighbours (training database only) and with the continuation planted.

Runs on CPU and unchanged on CUDA (bf16 autocast); resumes from
<out>/ckpt.pt; exports <out>/export/ (config.json, model.safetensors,
vocab.json, merges.txt when the data folder has them).
"""
import argparse
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CHUNK, log  # noqa: E402
from retro_model import Retro, RetroConfig  # noqa: E402


# ---------------------------------------------------------------- synthetic

def synthetic_batch(b, n_chunks, k, vocab, dev, gen, r=2 * CHUNK):
    """Random sequences (b, n+1); neighbours (b, L, k, r) where one random
    slot of chunk u is [C_u, C_u+1] and the others random tokens."""
    m = CHUNK
    n = n_chunks * m
    t = torch.randint(2, vocab, (b, n + m), generator=gen)
    nb = torch.randint(2, vocab, (b, n_chunks, k, r), generator=gen)
    slot = torch.randint(0, k, (b, n_chunks), generator=gen)
    for u in range(n_chunks):
        val = t[:, u * m:u * m + r]  # (b, r)
        nb[torch.arange(b), u, slot[:, u]] = val
    return t[:, :n + 1].to(dev), nb.to(dev)


def synthetic_losses(model, x, y, nb, dev):
    with common.autocast(dev):
        logits = model(x, nb)
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                         reduction="none").view(y.shape)
    copy_part = ce[:, CHUNK - 1:].mean()  # targets in chunks >= 1: present in a neighbour
    other = ce[:, :CHUNK - 1].mean()      # first chunk: nothing to read
    return copy_part, other


# ---------------------------------------------------------------- corpus batches

class CorpusBatches:
    """Training windows of the train split (aligned to chunks) with their
    neighbours, and fixed held-out windows for progress lines."""

    def __init__(self, corpus, nbdir, n_chunks, k, dev, need_nb):
        self.c = corpus
        self.dev = dev
        self.L = n_chunks
        self.k = k
        self.db = common.ChunkDB(corpus, ["train", "heldout"], dev)
        self.ignore_id = corpus.ignore_id  # pad_id on aligned data: no loss on padding
        self.tr = torch.from_numpy(corpus.tokens["train"]).to(dev)
        self.ho = torch.from_numpy(corpus.tokens["heldout"]).to(dev)
        self.ctr = corpus.n_chunks("train")
        self.cho = corpus.n_chunks("heldout")
        self.knn = self.ho_nolk = None
        if need_nb:
            self.knn = torch.from_numpy(np.load(os.path.join(nbdir, "train_knn.npy"))).long().to(dev)
            self.ho_nolk = torch.from_numpy(np.load(os.path.join(nbdir, "heldout_nolk.npy"))).long().to(dev)
            if self.knn.shape[0] != self.ctr or self.ho_nolk.shape[0] != self.cho:
                raise SystemExit("neighbour files do not match the data folder "
                                 "(re-run neighbours.py or c_neighbours.py)")

    def window(self, stream, s):
        """s: (B,) first chunk -> x (B, n), y (B, n)."""
        n = self.L * CHUNK
        pos = (CHUNK * s).unsqueeze(1) + torch.arange(n + 1, device=self.dev)
        pos = pos.clamp(max=len(stream) - 1)
        t = stream[pos]
        return t[:, :-1], t[:, 1:]

    def train_batch(self, b, plant, shift, gen):
        hi = self.ctr - self.L
        s = torch.randint(0, hi, (b,), generator=gen).to(self.dev)
        x, y = self.window(self.tr, s)
        if self.knn is None:
            return x, y, None
        u = s.unsqueeze(1) + torch.arange(self.L, device=self.dev)  # (B, L) chunk ids
        ids = self.knn[u][:, :, :self.k]                               # (B, L, k)
        start = self.db.start[ids]                                     # (B, L, k) stream positions
        limit = None if self.db.limit is None else self.db.limit[ids]  # (B, L, k) value lengths
        do = (torch.rand(b, generator=gen) < plant).to(self.dev)       # planted sequences
        slot = torch.randint(0, self.k, (b,), generator=gen).to(self.dev)
        own = self.db.start[u]                                         # (B, L)
        sh = torch.randint(-48, 49, (b, self.L), generator=gen).to(self.dev)
        use_sh = (torch.rand(b, self.L, generator=gen) < shift).to(self.dev)
        own = torch.where(use_sh, (own + sh).clamp(min=0), own)
        sel = do.unsqueeze(1) & (torch.arange(self.k, device=self.dev)[None, :] == slot[:, None])  # (B, k)
        start = torch.where(sel.unsqueeze(1), own.unsqueeze(2), start)
        if limit is not None:  # a planted window is the stream itself, uncut
            limit = limit.masked_fill(sel.unsqueeze(1), 2 * CHUNK)
        return x, y, self.db.values_at(start, limit)

    def heldout_windows(self, count=None):
        w = torch.arange(0, self.cho - self.L, self.L, device=self.dev)
        if count is not None and len(w) > count:
            idx = torch.linspace(0, len(w) - 1, count, device=self.dev).long()
            w = w[idx]
        return w

    def heldout_batch(self, s, regime):
        """regime: 'off' | 'nolk' (training database) | 'planted' (own
        continuation in slot 0, the best training neighbour in slot 1)."""
        x, y = self.window(self.ho, s)
        if regime == "off":
            return x, y, None
        u = s.unsqueeze(1) + torch.arange(self.L, device=self.dev)
        ids = self.ho_nolk[u][:, :, :self.k]
        if regime == "planted":
            ids = ids.clone()
            ids[:, :, 0] = self.ctr + u  # heldout entries follow the train entries
        limit = None if self.db.limit is None else self.db.limit[ids]
        if regime == "planted" and limit is not None:
            limit[:, :, 0] = 2 * CHUNK  # the stream itself, uncut at the document's end, as in training
        return x, y, self.db.values_at(self.db.start[ids], limit)


@torch.no_grad()
def heldout_loss(model, batches, windows, regime, dev, bs=16):
    model.eval()
    tot, cnt = 0.0, 0
    for i in range(0, len(windows), bs):
        x, y, nb = batches.heldout_batch(windows[i:i + bs], regime)
        with common.autocast(dev):
            logits = model(x, nb, retrieval=nb is not None)
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum",
                             ignore_index=batches.ignore_id)
        tot += ce.item()
        cnt += int((y != batches.ignore_id).sum())
    model.train()
    return tot / max(1, cnt)


# ---------------------------------------------------------------- main

def build_model(args, vocab, pad_id, eos_id):
    if args.init:
        model = Retro.load(args.init)
        if args.mode in ("retrofit",):
            model.zero_cca_out()
        return model
    n_seq = max(args.seq, 1024)
    cfg = RetroConfig(vocab_size=vocab, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                      ffn_dim=args.ffn or 4 * args.dim, max_seq=n_seq, n_neighbours=args.k,
                      enc_layers=args.enc_layers, retro_layers=args.retro_layers,
                      pad_id=pad_id, eos_id=eos_id)
    return Retro(cfg)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", required=True, choices=["synthetic", "baseline", "retrofit", "joint"])
    ap.add_argument("--data", help="prep.py data folder (corpus modes)")
    ap.add_argument("--nb", help="neighbours.py / c_neighbours.py folder (retrofit/joint)")
    ap.add_argument("--init", help="model directory to start from (retrofit: the baseline)")
    ap.add_argument("--out", required=True, help="run folder: ckpt.pt, export/")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512, help="tokens per training sequence (multiple of 64)")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--ffn", type=int, default=0)
    ap.add_argument("--enc-layers", type=int, default=2)
    ap.add_argument("--retro-layers", type=lambda s: [int(x) for x in s.split(",")], default=[3, 6])
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--plant", type=float, default=0.5, help="fraction of sequences with the continuation planted")
    ap.add_argument("--shift", type=float, default=0.25, help="planted windows shifted by up to 48 tokens")
    ap.add_argument("--vocab", type=int, default=512, help="synthetic vocabulary")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--keep-best", action="store_true", help="export the weights with the best held-out loss")
    ap.add_argument("--export-dtype", default="f32", choices=["f32", "f16"])
    common.add_device_args(ap, seed=1)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop (and export) after this much time")
    ap.add_argument("--target-copy-loss", type=float, default=0,
                    help="synthetic: stop once the copy loss is below this")
    args = ap.parse_args(argv)

    dev = common.start(args)
    log(common.env_info(dev), "mode", args.mode)
    if args.seq % CHUNK:
        raise SystemExit("--seq must be a multiple of 64")
    L = args.seq // CHUNK
    os.makedirs(args.out, exist_ok=True)

    if args.mode == "synthetic":
        vocab, pad_id, eos_id = args.vocab, 0, 1
        batches = None
    else:
        if not args.data:
            raise SystemExit("--data is required")
        corpus = common.Corpus(args.data)
        vocab, pad_id, eos_id = corpus.vocab_size, corpus.pad_id, corpus.eos_id
        need_nb = args.mode in ("retrofit", "joint")
        if need_nb and not args.nb:
            raise SystemExit("--nb is required for retrofit/joint")
        batches = CorpusBatches(corpus, args.nb, L, args.k, dev, need_nb)
        log(f"train chunks {batches.ctr}, held-out chunks {batches.cho}")

    model = build_model(args, vocab, pad_id, eos_id).to(dev)
    retrieval = args.mode != "baseline"
    if args.mode == "retrofit":
        for p in model.decoder_parameters():
            p.requires_grad_(False)
        params = model.retro_parameters()
    elif args.mode == "baseline":
        params = model.decoder_parameters()
        for p in model.retro_parameters():
            p.requires_grad_(False)
    else:
        params = list(model.parameters())
    n_all = sum(p.numel() for p in model.parameters())
    n_tr = sum(p.numel() for p in params)
    log(f"model {n_all / 1e6:.2f}M parameters, training {n_tr / 1e6:.2f}M; config {model.cfg.to_dict()}")

    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    step, best, best_state, hist = 0, float("inf"), None, []
    ck = common.load_ckpt(os.path.join(args.out, "ckpt.pt"), dev)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, best, best_state, hist = ck["step"], ck["best"], ck["best_state"], ck["hist"]
        common.set_rng_state(ck["rng"])
        log(f"resumed from step {step}")
    gen = torch.Generator().manual_seed(args.seed * 1000 + step)

    def save():
        common.save_ckpt(os.path.join(args.out, "ckpt.pt"), model=model.state_dict(), opt=opt.state_dict(),
                         step=step, best=best, best_state=best_state, hist=hist, rng=common.rng_state(),
                         args=vars(args))

    windows = batches.heldout_windows(args.eval_windows) if batches is not None else None
    model.train()
    t0 = time.time()
    tokens_seen = 0
    while step < args.steps:
        lr = common.lr_at(step, args.steps, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        if args.mode == "synthetic":
            t, nb = synthetic_batch(args.batch, L, args.k, vocab, dev, gen)
            x, y = t[:, :-1], t[:, 1:]
            copy_l, other_l = synthetic_losses(model, x, y, nb, dev)
            loss = (copy_l * (L - 1) + other_l) / L
        else:
            x, y, nb = batches.train_batch(args.batch, args.plant, args.shift, gen)
            with common.autocast(dev):
                logits = model(x, nb, retrieval=retrieval)
            loss = F.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1), ignore_index=batches.ignore_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        tokens_seen += x.numel()
        last = step == args.steps
        elapsed = time.time() - t0
        stop_time = args.max_minutes and elapsed > args.max_minutes * 60
        if step % args.eval_every == 0 or last or stop_time:
            if args.mode == "synthetic":
                msg = f"copy-loss {copy_l.item():.4f} other-loss {other_l.item():.4f}"
                hist.append((step, copy_l.item(), other_l.item()))
                log(f"step {step}/{args.steps} lr {lr:.2e} loss {loss.item():.4f} {msg} "
                    f"({tokens_seen / max(elapsed, 1e-9):.0f} tok/s)")
                if args.target_copy_loss and copy_l.item() < args.target_copy_loss:
                    log(f"copy loss below {args.target_copy_loss}: done")
                    break
            else:
                off = heldout_loss(model, batches, windows, "off", dev)
                row = {"step": step, "train": loss.item(), "off": off}
                if retrieval:
                    row["nolk"] = heldout_loss(model, batches, windows, "nolk", dev)
                    row["planted"] = heldout_loss(model, batches, windows, "planted", dev)
                hist.append(row)
                key = row["nolk"] if retrieval else off
                if args.keep_best and key < best:
                    best = key
                    best_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
                log(f"step {step}/{args.steps} lr {lr:.2e} train {loss.item():.4f} held-out: " +
                    " ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("step", "train")) +
                    f" ({tokens_seen / max(elapsed, 1e-9):.0f} tok/s)")
        if step % args.ckpt_every == 0 or last:
            save()
        if stop_time:
            log(f"time limit reached at step {step}")
            break
    save()
    if args.keep_best and best_state is not None:
        model.load_state_dict(best_state)
        log(f"exporting the best held-out weights ({best:.4f})")
    exp = os.path.join(args.out, "export")
    model.save(exp, dtype=torch.float16 if args.export_dtype == "f16" else torch.float32)
    if args.data:
        for f in ("vocab.json", "merges.txt"):
            p = os.path.join(args.data, f)
            if os.path.exists(p):
                shutil.copy(p, os.path.join(exp, f))
    log(f"exported {exp} after {step} steps, {time.time() - t0:.0f}s")
    return hist


if __name__ == "__main__":
    main()
