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
    meta.json            {vocab_size, pad_id, eos_id, bos_id, mask_id, ...}
    {split}_tokens.npy   the split's documents, each followed by eos, concatenated (int32)
    {split}_chunkdoc.npy (C, 2) int32: document index of the first and last token of chunk c
    token_bytes.npy      (V,) int32: UTF-8 byte length of every token (0 for specials)
    Chunk c of a split is tokens[64c : 64c+64]; its database value [N, F] is
    tokens[64c : 64c+128] (padded with pad_id at the end of the split)."""

    def __init__(self, folder):
        self.folder = folder
        with open(os.path.join(folder, "meta.json")) as f:
            self.meta = json.load(f)
        self.pad_id = self.meta["pad_id"]
        self.eos_id = self.meta["eos_id"]
        self.vocab_size = self.meta["vocab_size"]
        self.tokens = {}
        self.chunkdoc = {}
        for split in ("train", "heldout"):
            p = os.path.join(folder, f"{split}_tokens.npy")
            if os.path.exists(p):
                self.tokens[split] = np.load(p).astype(np.int64)
                self.chunkdoc[split] = np.load(os.path.join(folder, f"{split}_chunkdoc.npy"))
        self.token_bytes = np.load(os.path.join(folder, "token_bytes.npy"))

    def n_chunks(self, split):
        return len(self.tokens[split]) // CHUNK

    def chunks(self, split):
        """(C, 64) int64 array of the split's complete chunks."""
        c = self.n_chunks(split)
        return self.tokens[split][:c * CHUNK].reshape(c, CHUNK)


class ChunkDB:
    """A retrieval database as one token stream on a device: the value of
    entry j is stream[start[j] : start[j] + 128] ([N, F]). Built from one or
    more splits of a Corpus, in order (entry ids run through the splits)."""

    def __init__(self, corpus, splits, dev, r=2 * CHUNK):
        parts, starts, off = [], [], 0
        pad = corpus.pad_id
        for s in splits:
            t = corpus.tokens[s]
            c = corpus.n_chunks(s)
            parts.append(t)
            parts.append(np.full(r, pad, dtype=np.int64))
            starts.append(off + CHUNK * np.arange(c))
            off += len(t) + r
        self.stream = torch.from_numpy(np.concatenate(parts)).to(dev)
        self.start = torch.from_numpy(np.concatenate(starts)).to(dev)
        self.r = r

    def values(self, ids):
        """ids: (...,) int64 entry ids (on the device) -> (..., r) tokens."""
        pos = self.start[ids].unsqueeze(-1) + torch.arange(self.r, device=ids.device)
        return self.stream[pos]


def cuda_sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def env_info(dev):
    s = f"torch {torch.__version__}, device {dev}"
    if dev.type == "cuda":
        s += f" ({torch.cuda.get_device_name(0)})"
    return s + f", python {sys.version.split()[0]}"
