"""c_neighbours.py - turns `retro neighbours` dumps of the C database into
the neighbour files of neighbours.py (train_knn.npy, heldout_nolk.npy,
heldout_grd.npy, info.json: same names, shapes, dtypes and meaning, entry
ids in common.ChunkDB(corpus, ["train", "heldout"]) numbering), so that
retro_train.py --nb and evaluate.py --nb read the C engine's neighbours.

It needs chunk-aligned data (prep.py --align-chunks): there every document
starts a chunk, so C chunk (document, ordinal) is trainer chunk (document,
ordinal). Documents are matched by id: the id `retro index` gives a file is
its path relative to the directory given, which is prep.py's path relative
to the corpus root when that same directory is indexed (or index a JSONL
whose ids are prep's paths). The conversion fails, naming the document,
when a document of the data folder is missing from the dump, has another
number of chunks, or a chunk's tokens differ from the trainer's (they come
from the same BPE; the C tokenizer is tested identical to tokref's).

Route (one database with the training AND held-out documents):

  retro index --data DB --encoder ENC --decoder DEC CORPUS
  retro neighbours --data DB --out DUMP -k $((K + 16))              # other documents only
  retro neighbours --data DB --out DUMPG -k K --include-same-doc    # grounded regime
  /usr/bin/python3 model/train/c_neighbours.py --data DATA --dump DUMP \\
      --dump-grounded DUMPG --out NB --k K

(DEC: any decoder directory with the data folder's tokenizer, e.g. the
baseline export; it sets the chunking.) From DUMP, the K + margin
candidates of each chunk are filtered:
  train_knn     training chunks only, not from the chunk's own document nor
                from the document of the chunk after it (neighbours.py's
                rule: the neighbours of chunk u are read while predicting
                chunk u+1, which starts the next document after a last chunk)
  heldout_nolk  training chunks only (the "no leakage" database)
and from DUMPG (every stored chunk may be a neighbour, itself included):
  heldout_grd   training + held-out chunks ("grounded")
Neighbours in documents the data folder does not know are dropped too.
A row left with fewer than K (the margin ran out, or a trainer chunk the C
database has no chunk for: the eos/pad-only chunk after a document whose
length is a multiple of 64, or an empty document) is filled, in order, with
the allowed candidates of the nearest earlier chunk of the same split, then
of later ones; info.json counts such rows ("short_rows") and the slots
filled ("borrowed_slots"). Without --dump-grounded, heldout_grd.npy is not
written (retro_train.py does not need it; evaluate.py does).

Not here: the search itself (server/engine_nb.c), or PyTorch embeddings
(neighbours.py computes the same files with exact PyTorch search).
"""
import argparse
import itertools
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import CHUNK, log  # noqa: E402

DUMP_FILES = ("chunk_ids.npy", "doc_nums.npy", "ordinals.npy", "tokens.npy", "neighbours.npy", "docs.jsonl")


class Layout:
    """The data folder's entries: ids 0..Ctr-1 training chunks, Ctr.. held-out
    chunks; every entry's document (global: training documents first) and
    tokens; every document's first entry and token count."""

    def __init__(self, corpus, names):
        self.ctr, self.cho = corpus.n_chunks("train"), corpus.n_chunks("heldout")
        self.n = self.ctr + self.cho
        self.tokens = np.concatenate([corpus.chunks("train"), corpus.chunks("heldout")])  # (E, 64)
        self.names = names["train"] + names["heldout"]
        dtr = len(names["train"])
        t_tr, t_ho = corpus.docs["train"], corpus.docs["heldout"]
        if len(t_tr) != dtr or len(t_ho) != len(names["heldout"]):
            raise SystemExit(f"{corpus.folder}: docs.json and the {{split}}_docs.npy tables disagree")
        self.first = np.concatenate([t_tr[:, 0], self.ctr + t_ho[:, 0]])  # (D,) first entry
        self.length = np.concatenate([t_tr[:, 1], t_ho[:, 1]])             # (D,) tokens without eos
        self.doc = np.concatenate([corpus.chunkdoc["train"][:, 0].astype(np.int64),
                                   dtr + corpus.chunkdoc["heldout"][:, 0].astype(np.int64)])  # (E,)
        self.index = {name: i for i, name in enumerate(self.names)}
        if len(self.index) != len(self.names):
            raise SystemExit(f"{corpus.folder}: docs.json lists a document twice")


class Dump:
    """One `retro neighbours` output folder mapped onto the trainer's entries:
    row_entry (n,) the trainer entry of every C chunk (-1: a document the
    data folder does not know); cand (n, k) the trainer entries of its
    neighbours (-1: none, or unknown); entry_row (E,) the C row of every
    trainer entry (-1: none). Checks the chunks against the data folder."""

    def __init__(self, folder, lay, pad_id, eos_id):
        for f in DUMP_FILES:
            if not os.path.exists(os.path.join(folder, f)):
                raise SystemExit(f"{folder}: no {f} (not a `retro neighbours` output folder)")
        self.folder = folder
        self.chunk_ids = np.load(os.path.join(folder, "chunk_ids.npy")).astype(np.int64)
        doc_nums = np.load(os.path.join(folder, "doc_nums.npy")).astype(np.int64)
        ordinals = np.load(os.path.join(folder, "ordinals.npy")).astype(np.int64)
        toks = np.load(os.path.join(folder, "tokens.npy")).astype(np.int64)
        nb = np.load(os.path.join(folder, "neighbours.npy")).astype(np.int64)
        n = len(self.chunk_ids)
        if toks.shape != (n, CHUNK) or nb.ndim != 2 or len(nb) != n or np.any(np.diff(self.chunk_ids) <= 0):
            raise SystemExit(f"{folder}: inconsistent dump arrays")
        self.k = nb.shape[1]
        by_num = {}
        with open(os.path.join(folder, "docs.jsonl")) as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    by_num[d["doc_num"]] = d
        # C document -> global trainer document (-1 unknown)
        self.unknown_docs = 0
        num_doc = {}
        seen = set()
        for num, d in by_num.items():
            g = lay.index.get(d["id"], -1)
            num_doc[num] = g
            if g < 0:
                self.unknown_docs += 1
                continue
            seen.add(g)
            want = -(-int(lay.length[g]) // CHUNK)
            if d["n_chunks"] != want:
                raise SystemExit(f"{folder}: document {d['id']!r} has {d['n_chunks']} chunks in the database, "
                                 f"{want} in the data folder ({lay.length[g]} tokens): different text or tokenizer")
        missing = [lay.names[g] for g in range(len(lay.names)) if g not in seen and lay.length[g] > 0]
        if missing:
            raise SystemExit(f"{folder}: {len(missing)} document(s) of the data folder are not in the database, "
                             f"e.g. {missing[0]!r} (index the corpus directory prep.py read, or a JSONL with "
                             f"prep's paths as ids)")
        try:
            gdoc = np.array([num_doc[int(x)] for x in doc_nums], dtype=np.int64)
        except KeyError as e:
            raise SystemExit(f"{folder}: doc_num {e} missing from docs.jsonl")
        known = gdoc >= 0
        if np.any(ordinals[known] >= -(-lay.length[gdoc[known]] // CHUNK)):
            raise SystemExit(f"{folder}: a chunk ordinal beyond its document's chunks")
        self.row_entry = np.where(known, lay.first[np.maximum(gdoc, 0)] + ordinals, -1)
        if len(np.unique(self.row_entry[known])) != known.sum():
            raise SystemExit(f"{folder}: two chunks with the same document and ordinal")
        # tokens: the C chunk is the trainer chunk up to the document's end (-1 after it)
        r = np.flatnonzero(known)
        ctoks, ttoks = toks[r], lay.tokens[self.row_entry[r]]
        inside = np.arange(CHUNK)[None, :] < (lay.length[gdoc[r]] - CHUNK * ordinals[r])[:, None]
        diff = np.where(inside, ctoks != ttoks, ctoks != -1)  # (R, 64)
        bad = np.flatnonzero(diff.any(axis=1))
        if len(bad):
            i, pos = r[bad[0]], int(np.argmax(diff[bad[0]]))
            raise SystemExit(f"{folder}: {len(bad)} chunk(s) differ from the trainer's tokens; first: document "
                             f"{lay.names[gdoc[i]]!r} chunk {ordinals[i]} token {pos}: C {toks[i, pos]}, "
                             f"trainer {lay.tokens[self.row_entry[i], pos]} (same tokenizer? same text?)")
        self.entry_row = np.full(lay.n, -1, dtype=np.int64)
        self.entry_row[self.row_entry[r]] = r
        lone = np.flatnonzero(self.entry_row < 0)
        tail = lay.tokens[lone]
        if np.any((tail[:, 0] != eos_id) | np.any(tail[:, 1:] != pad_id, axis=1)):
            raise SystemExit(f"{folder}: a trainer chunk with text has no chunk in the database")
        self.lone_entries = len(lone)
        # neighbour chunk ids -> trainer entries
        pos = np.searchsorted(self.chunk_ids, nb).clip(max=max(n - 1, 0))
        hit = (nb > 0) & (self.chunk_ids[pos] == nb)
        self.cand = np.where(hit, self.row_entry[pos], -1)
        if np.any((nb > 0) & ~hit):
            raise SystemExit(f"{folder}: a neighbour id that is not a dumped chunk")
        self.same_doc = int(np.sum(hit & (gdoc[pos] == gdoc[:, None]) & known[:, None]))

    def candidates(self, entries):
        """(Q,) trainer entries -> (Q, k) candidate entries (-1 where none)."""
        row = self.entry_row[entries]
        c = self.cand[np.maximum(row, 0)]
        return np.where(row[:, None] >= 0, c, -1)


def select(entries, dump, allowed, k, lo, hi):
    """For each query entry (ascending, all in [lo, hi)), its first k allowed
    candidates; short rows borrow from the nearest earlier query entries,
    then later ones. allowed(q (Q,), c (Q, kc)) -> bool (Q, kc).
    -> (Q, k) int32, number of short rows, number of borrowed slots."""
    cand = dump.candidates(entries)
    ok = allowed(entries, cand) & (cand >= 0)
    order = np.argsort(~ok, axis=1, kind="stable")[:, :k]
    out = np.take_along_axis(cand, order, axis=1)
    got = ok.sum(axis=1)
    short = np.flatnonzero(got < k)
    borrowed = 0
    for i in short:
        q = entries[i]
        row = [int(x) for x in out[i, :got[i]]]
        for j in itertools.chain(range(q - 1, lo - 1, -1), range(q + 1, hi)):
            if len(row) >= k:
                break
            c = dump.candidates(np.array([j]))
            a = allowed(np.array([q]), c) & (c >= 0)
            for x in c[a]:
                if len(row) < k and int(x) not in row:
                    row.append(int(x))
                    borrowed += 1
        if len(row) < k:
            raise SystemExit(f"entry {q}: fewer than {k} allowed neighbours in the whole dump")
        out[i] = row
    return out.astype(np.int32), int(len(short)), borrowed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="chunk-aligned prep.py data folder")
    ap.add_argument("--dump", required=True, help="`retro neighbours` output, other documents only, k >= K + margin")
    ap.add_argument("--dump-grounded", help="`retro neighbours --include-same-doc` output of the same database")
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args(argv)
    t0 = time.time()
    corpus = common.Corpus(args.data)
    if not corpus.aligned:
        raise SystemExit(f"{args.data}: not chunk-aligned; run prep.py with --align-chunks")
    with open(os.path.join(args.data, "docs.json")) as f:
        lay = Layout(corpus, json.load(f))
    pad, eos = corpus.pad_id, corpus.eos_id
    dx = Dump(args.dump, lay, pad, eos)
    if dx.k < args.k:
        raise SystemExit(f"{args.dump}: k = {dx.k} < --k {args.k}; dump with a margin (-k {args.k + 16})")
    dg = None
    if args.dump_grounded:
        dg = Dump(args.dump_grounded, lay, pad, eos)
        if not np.array_equal(dg.chunk_ids, dx.chunk_ids):
            raise SystemExit(f"{args.dump} and {args.dump_grounded} are not dumps of the same database")
        if dg.k < args.k:
            raise SystemExit(f"{args.dump_grounded}: k = {dg.k} < --k {args.k}")
        if dg.same_doc == 0:
            log(f"warning: {args.dump_grounded} has no same-document neighbour: dumped without --include-same-doc?")
    log(f"dump: {len(dx.chunk_ids)} chunks, k = {dx.k}; data: {lay.ctr} + {lay.cho} chunks "
        f"({dx.lone_entries} eos/pad-only chunks with no C chunk, {dx.unknown_docs} unknown documents)")

    ctr, doc = lay.ctr, lay.doc
    tr = np.arange(ctr)
    ho = np.arange(ctr, lay.n)
    nxt = np.minimum(np.arange(lay.n) + 1, np.where(np.arange(lay.n) < ctr, ctr - 1, lay.n - 1))

    def train_rule(q, c):
        cd = doc[np.maximum(c, 0)]
        return (c < ctr) & (cd != doc[q][:, None]) & (cd != doc[nxt[q]][:, None])

    res, stats = {}, {}
    res["train_knn"], *stats["train_knn"] = select(tr, dx, train_rule, args.k, 0, ctr)
    res["heldout_nolk"], *stats["heldout_nolk"] = select(ho, dx, lambda q, c: c < ctr, args.k, ctr, lay.n)
    if dg is not None:
        res["heldout_grd"], *stats["heldout_grd"] = select(ho, dg, lambda q, c: c >= 0, args.k, ctr, lay.n)
    os.makedirs(args.out, exist_ok=True)
    for name in ("train_knn", "heldout_nolk", "heldout_grd"):
        p = os.path.join(args.out, name + ".npy")
        if name in res:
            np.save(p, res[name])
        elif os.path.exists(p):
            os.remove(p)  # never leave a stale file of another run beside these
    info = {"k": args.k, "train_chunks": ctr, "heldout_chunks": lay.cho, "dump": args.dump,
            "dump_grounded": args.dump_grounded, "dump_k": dx.k, "c_chunks": int(len(dx.chunk_ids)),
            "chunks_without_c_chunk": dx.lone_entries, "unknown_c_documents": dx.unknown_docs,
            "short_rows": {n: s[0] for n, s in stats.items()},
            "borrowed_slots": {n: s[1] for n, s in stats.items()},
            "seconds": time.time() - t0, "method": "C database (retro neighbours), converted by c_neighbours.py"}
    if "heldout_grd" in res:
        info["grounded_top1_is_self"] = float(np.mean(res["heldout_grd"][:, 0] == ho))
    with open(os.path.join(args.out, "info.json"), "w") as f:
        json.dump(info, f, indent=2)
    log("neighbours written:", info)


if __name__ == "__main__":
    main()
