"""common.py - small helpers shared by the training scripts of model/train/:
device choice, progress printing, learning-rate schedule, atomic checkpoint
save/resume, and the corpus arrays written by prep.py.

What it does not: model definitions (bert_model.py, retro_model.py),
tokenisation (tokref.py) or any training loop.
"""
import json
import math
import os
import random
import shutil
import sys
import time

import numpy as np
import torch

CHUNK = 64  # RETRO chunk length m


def device(name=None):
    """'cuda' when a GPU is present (or name says so), else 'cpu'."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def setup_torch(dev, threads=0):
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif threads:
        torch.set_num_threads(threads)


def add_device_args(ap, seed=None):
    """--device and --threads (and --seed, defaulting to seed, when given),
    for start()."""
    ap.add_argument("--device")
    ap.add_argument("--threads", type=int, default=0)
    if seed is not None:
        ap.add_argument("--seed", type=int, default=seed)


def start(args):
    """The device add_device_args' options name, set up (and seeded when
    there is a --seed)."""
    dev = device(args.device)
    setup_torch(dev, args.threads)
    if getattr(args, "seed", None) is not None:
        seed_all(args.seed)
    return dev


def autocast(dev):
    """bf16 autocast on CUDA, a no-op context on CPU."""
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


_T0 = time.time()


def log(*a):
    print(f"[{time.time() - _T0:7.1f}s]", *a, flush=True)


def lr_at(step, total, peak, warmup, floor=0.1):
    """Linear warm-up then cosine decay to floor * peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def save_ckpt(path, **state):
    """Atomic torch.save (write to .tmp, then rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_ckpt(path, dev):
    if path and os.path.exists(path):
        return torch.load(path, map_location=dev)
    return None


def resume(out, dev, opt, **modules):
    """OUT/ckpt.pt's training state when there is one, loaded into opt, the
    named modules (the names they were saved under) and the random
    generators; else a fresh state. Returns (state, the checkpoint's path)."""
    ckp = os.path.join(out, "ckpt.pt")
    os.makedirs(out, exist_ok=True)
    ck = load_ckpt(ckp, dev)
    if ck is None:
        return {"step": 0, "results": {}}, ckp
    for name, m in modules.items():
        m.load_state_dict(ck[name])
    opt.load_state_dict(ck["opt"])
    set_rng_state(ck["rng"])
    log(f"resumed at step {ck['state']['step']}")
    return ck["state"], ckp


def kind_weights(pairs):
    """Sampling weights of mined query -> passage pairs (qp_mine.py): each
    kind by 1 / sqrt(its count), so the many signatures do not drown the
    headings, FAQ questions and error lines. Returns (count of each kind,
    the weights, summing to 1)."""
    kinds = {}
    for p in pairs:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    w = np.array([1.0 / math.sqrt(kinds[p["kind"]]) for p in pairs])
    return kinds, w / w.sum()


def finish_export(out, init, results, save):
    """The end of a training script: save(OUT/export) writes the model,
    INIT's tokenizer files join it, and OUT/results.json gets results.
    Returns the export's path."""
    exp = os.path.join(out, "export")
    save(exp)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(init, f), os.path.join(exp, f))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    log(f"exported {exp}")
    return exp


def rng_state():
    st = {"py": random.getstate(), "np": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st):
    random.setstate(st["py"])
    np.random.set_state(st["np"])
    torch.set_rng_state(st["torch"].cpu() if hasattr(st["torch"], "cpu") else st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


class Corpus:
    """The arrays prep.py writes into a data folder:
    meta.json            {vocab_size, pad_id, eos_id, bos_id, mask_id, align_chunks, ...}
    {split}_tokens.npy   the split's documents, each followed by eos, concatenated (int32);
                         chunk-aligned data (prep.py --align-chunks): each document's
                         eos is followed by pad_id up to the next multiple of 64
    {split}_chunkdoc.npy (C, 2) int32: document index of the first and last token of chunk c
    {split}_docs.npy     aligned data only: (D, 2) int64 [first chunk, tokens without eos]
                         of every document of the split (docs.json order)
    token_bytes.npy      (V,) int32: UTF-8 byte length of every token (0 for specials)
    Chunk c of a split is tokens[64c : 64c+64]; its database value [N, F] is
    tokens[64c : 64c+128] (padded with pad_id at the end of the split; for
    aligned data cut with pad_id at the end of its document, see ChunkDB).
    `aligned` says whether the data is chunk-aligned; `ignore_id` is the
    target id losses skip (pad_id when aligned, else -100 = none)."""

    def __init__(self, folder):
        self.folder = folder
        with open(os.path.join(folder, "meta.json")) as f:
            self.meta = json.load(f)
        self.pad_id = self.meta["pad_id"]
        self.eos_id = self.meta["eos_id"]
        self.vocab_size = self.meta["vocab_size"]
        self.aligned = bool(self.meta.get("align_chunks", False))
        self.ignore_id = self.pad_id if self.aligned else -100
        self.tokens = {}
        self.chunkdoc = {}
        self.docs = {}
        for split in ("train", "heldout"):
            p = os.path.join(folder, f"{split}_tokens.npy")
            if os.path.exists(p):
                self.tokens[split] = np.load(p).astype(np.int64)
                self.chunkdoc[split] = np.load(os.path.join(folder, f"{split}_chunkdoc.npy"))
                if self.aligned:
                    self.docs[split] = np.load(os.path.join(folder, f"{split}_docs.npy"))
        self.token_bytes = np.load(os.path.join(folder, "token_bytes.npy"))

    def value_lengths(self, split):
        """Aligned data: (C,) int64, how many of the 128 tokens of each chunk's
        [N, F] value lie inside its document (eos and padding excluded),
        as the C database serves them. None for unaligned data."""
        if not self.aligned:
            return None
        table = self.docs[split]
        doc = self.chunkdoc[split][:, 0].astype(np.int64)
        ordinal = np.arange(len(doc)) - table[doc, 0]
        return np.clip(table[doc, 1] - CHUNK * ordinal, 0, 2 * CHUNK)

    def n_chunks(self, split):
        return len(self.tokens[split]) // CHUNK

    def chunks(self, split):
        """(C, 64) int64 array of the split's complete chunks."""
        c = self.n_chunks(split)
        return self.tokens[split][:c * CHUNK].reshape(c, CHUNK)


class ChunkDB:
    """A retrieval database as one token stream on a device: the value of
    entry j is stream[start[j] : start[j] + 128] ([N, F]). Built from one or
    more splits of a Corpus, in order (entry ids run through the splits).
    For chunk-aligned data the value stops at the end of the entry's document
    (positions >= limit[j] read pad_id): N without the eos, F only from the
    same document, as the C database serves neighbours."""

    def __init__(self, corpus, splits, dev, r=2 * CHUNK):
        parts, starts, limits, off = [], [], [], 0
        pad = corpus.pad_id
        for s in splits:
            t = corpus.tokens[s]
            c = corpus.n_chunks(s)
            parts.append(t)
            parts.append(np.full(r, pad, dtype=np.int64))
            starts.append(off + CHUNK * np.arange(c))
            if corpus.aligned:
                limits.append(corpus.value_lengths(s))
            off += len(t) + r
        self.stream = torch.from_numpy(np.concatenate(parts)).to(dev)
        self.start = torch.from_numpy(np.concatenate(starts)).to(dev)
        self.limit = torch.from_numpy(np.concatenate(limits)).to(dev) if corpus.aligned else None
        self.pad_id = pad
        self.r = r

    def values(self, ids):
        """ids: (...,) int64 entry ids (on the device) -> (..., r) tokens."""
        return self.values_at(self.start[ids], None if self.limit is None else self.limit[ids])

    def values_at(self, start, limit=None):
        """start: (...,) stream positions -> (..., r) tokens; positions
        >= limit (same shape as start, or None for no cut) read pad_id."""
        off = torch.arange(self.r, device=start.device)
        v = self.stream[start.unsqueeze(-1) + off]
        if limit is not None:
            v = v.masked_fill(off >= limit.unsqueeze(-1), self.pad_id)
        return v


def cuda_sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def env_info(dev):
    s = f"torch {torch.__version__}, device {dev}"
    if dev.type == "cuda":
        s += f" ({torch.cuda.get_device_name(0)})"
    return s + f", python {sys.version.split()[0]}"
