"""prep.py - prepares the training data: lists the corpus documents, makes
the deterministic held-out split, trains the byte-level BPE tokenizer
(bpe_train.py) on the training documents, and writes the tokenised corpus
as arrays for the trainers (common.Corpus describes them).

Held-out split: documents sorted by the SHA-1 of their path relative to the
corpus root; the first round(--heldout * count) are held out. The list is
written to --heldout-list (model/default/heldout.txt for the default models).

--align-chunks lays every document out chunk-aligned: its tokens, eos, then
pad_id up to the next multiple of 64, so each document starts a chunk and
trainer chunk (document, ordinal) is chunk (document, ordinal) of the C
database (`retro index` chunks each document on its own; when a document's
length is a multiple of 64 the trainer has one extra eos/pad chunk). It
also writes {split}_docs.npy, and meta.json records "align_chunks": true;
c_neighbours.py then turns a `retro neighbours` dump into neighbour files.
Without it the documents are simply concatenated (the default models).

Not here: model training, neighbour search, evaluation.

  /usr/bin/python3 model/train/prep.py --out .work/train/data \
      [--corpus /usr/share/doc/python3.11/html/_sources] [--vocab-size 8192] \
      [--align-chunks]
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe_train  # noqa: E402
import tokref  # noqa: E402
from common import CHUNK, log  # noqa: E402

DEFAULT_CORPUS = "/usr/share/doc/python3.11/html/_sources"


def list_docs(root, suffix):
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(suffix):
                out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


def split_docs(docs, frac):
    order = sorted(docs, key=lambda p: hashlib.sha1(p.encode()).hexdigest())
    n = int(round(frac * len(docs)))
    held = set(order[:n])
    return [d for d in docs if d not in held], [d for d in docs if d in held]


def tokenise(bpe, root, docs, eos, pad=None):
    """-> (tokens int32, chunkdoc (C, 2) int32, doc table (D, 2) int64) for
    docs in order, each followed by eos; with pad (chunk-aligned layout) also
    by pad up to the next multiple of 64. Doc table row i: [first chunk of
    document i, its token count without eos] (first chunk meaningful only
    when aligned)."""
    toks, owner, table = [], [], []
    for i, d in enumerate(docs):
        with open(os.path.join(root, d), "rb") as f:
            ids = bpe.encode(f.read())
        table.append((len(toks) // CHUNK, len(ids)))
        ids.append(eos)
        if pad is not None:
            ids.extend([pad] * (-len(ids) % CHUNK))
        toks.extend(ids)
        owner.extend([i] * len(ids))
    toks = np.asarray(toks, dtype=np.int32)
    owner = np.asarray(owner, dtype=np.int32)
    c = len(toks) // CHUNK
    ow = owner[:c * CHUNK].reshape(c, CHUNK)
    return (toks, np.stack([ow[:, 0], ow[:, -1]], axis=1).astype(np.int32),
            np.asarray(table, dtype=np.int64).reshape(-1, 2))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=DEFAULT_CORPUS)
    ap.add_argument("--suffix", default=".rst.txt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--heldout", type=float, default=0.05)
    ap.add_argument("--heldout-list", help="write the held-out paths here too")
    ap.add_argument("--tokenizer", help="use this vocab.json/merges.txt folder instead of training one")
    ap.add_argument("--align-chunks", action="store_true",
                    help="start every document at a chunk boundary (eos, then pad to a multiple of 64)")
    args = ap.parse_args(argv)

    docs = list_docs(args.corpus, args.suffix)
    if len(docs) < 2:
        raise SystemExit(f"{args.corpus}: fewer than 2 documents ending in {args.suffix}")
    train, held = split_docs(docs, args.heldout)
    if not held:
        held, train = train[-1:], train[:-1]
    os.makedirs(args.out, exist_ok=True)
    log(f"{len(docs)} documents: {len(train)} train, {len(held)} held out")
    lst = "".join(d + "\n" for d in held)
    for p in [os.path.join(args.out, "heldout.txt")] + ([args.heldout_list] if args.heldout_list else []):
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
        with open(p, "w") as f:
            f.write(lst)

    if args.tokenizer:
        tdir = args.tokenizer
        for f in ("vocab.json", "merges.txt"):
            with open(os.path.join(tdir, f), "rb") as src, open(os.path.join(args.out, f), "wb") as dst:
                dst.write(src.read())
    else:
        t0 = time.time()
        counts, nbytes = bpe_train.count_words([os.path.join(args.corpus, d) for d in train])
        id_to_str, merges = bpe_train.train(counts, args.vocab_size)
        bpe_train.write(args.out, id_to_str, merges)
        log(f"BPE: {len(id_to_str)} tokens from {nbytes} bytes in {time.time() - t0:.1f}s")
    bpe = tokref.ByteBPE(os.path.join(args.out, "vocab.json"), os.path.join(args.out, "merges.txt"))
    specials = {s: bpe.token_id(s) for s in ("<s>", "<pad>", "</s>", "<mask>", "<|endoftext|>")}
    if min(specials.values()) < 0:
        raise SystemExit(f"tokenizer lacks special tokens: {specials}")
    eos = specials["<|endoftext|>"]
    vocab = max(bpe.id_to_tok) + 1
    tb = np.zeros(vocab, dtype=np.int32)
    for i, b in bpe.id_bytes.items():
        tb[i] = len(b)
    for i in specials.values():
        tb[i] = 0
    np.save(os.path.join(args.out, "token_bytes.npy"), tb)
    meta = {"vocab_size": vocab, "pad_id": specials["<pad>"], "eos_id": eos, "bos_id": specials["<s>"],
            "sep_id": specials["</s>"], "mask_id": specials["<mask>"], "corpus": args.corpus,
            "n_train_docs": len(train), "n_heldout_docs": len(held), "tokenizer_fingerprint": bpe.fingerprint,
            "align_chunks": bool(args.align_chunks)}
    for split, lst_ in (("train", train), ("heldout", held)):
        t0 = time.time()
        toks, cd, table = tokenise(bpe, args.corpus, lst_, eos, specials["<pad>"] if args.align_chunks else None)
        np.save(os.path.join(args.out, f"{split}_tokens.npy"), toks)
        np.save(os.path.join(args.out, f"{split}_chunkdoc.npy"), cd)
        if args.align_chunks:
            np.save(os.path.join(args.out, f"{split}_docs.npy"), table)
            meta[f"{split}_pad_tokens"] = int(len(toks) - table[:, 1].sum() - len(table))
        nbytes = int(tb[toks].sum())
        meta[f"{split}_tokens"] = int(len(toks))
        meta[f"{split}_bytes"] = nbytes
        meta[f"{split}_chunks"] = int(len(cd))
        log(f"{split}: {len(lst_)} docs, {len(toks)} tokens, {nbytes} bytes "
            f"({nbytes / len(toks):.2f} bytes/token), {len(cd)} chunks, {time.time() - t0:.1f}s")
    with open(os.path.join(args.out, "docs.json"), "w") as f:
        json.dump({"train": train, "heldout": held}, f, indent=0)
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    log("wrote", args.out)


if __name__ == "__main__":
    main()
