#!/usr/bin/python3
"""bpe_train.py - trains a byte-level BPE tokenizer (GPT-2 file format) on a
corpus, writing vocab.json + merges.txt that tokref.ByteBPE and the C
tokenizer (model/tok.c) load.

Vocabulary layout (ids):
  0 "<s>", 1 "<pad>", 2 "</s>", 3 "<unk>", 4 "<mask>", 5 "<|endoftext|>",
  6 .. 261   the 256 byte tokens, in byte order (byte b -> id 6 + b), written
             with GPT-2's bytes_to_unicode characters,
  262 ..     one token per merge, in merge order.
Special tokens are never produced by encoding plain text (the GPT-2
pre-tokeniser splits "<s>" into "<", "s", ">", so no merge can build them,
and a merge whose result equals a special token's string is refused anyway);
they decode to their literal strings.

Training: each file is read as bytes and pre-tokenised with GPT-2's pattern
(tokref.gpt2_pretokenize, so invalid UTF-8 is handled exactly as at encoding
time); distinct pre-tokens are counted once. Then, repeatedly, the most
frequent adjacent pair of symbols (ties: the pair of smallest ids) is merged
everywhere, updating pair counts incrementally through an index pair -> words
that contain it and a lazy max-heap. Two merges that spell the same string
share one id (as Hugging Face's trainer does). Stops at --vocab-size tokens or
when no pair occurs at least --min-count times.

Not here: special-token handling beyond the fixed table, normalisation,
dropout, training on streams larger than memory.

  /usr/bin/python3 model/train/bpe_train.py --vocab-size 8192 --out DIR PATH...
PATH: files or directories (searched recursively for *.txt and *.rst).
"""

import argparse
import heapq
import json
import os
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokref  # noqa: E402

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<|endoftext|>"]
N_BYTE_BASE = len(SPECIALS)


def corpus_files(paths, exts=(".txt", ".rst")):
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for f in sorted(files):
                    if f.endswith(exts):
                        out.append(os.path.join(root, f))
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise FileNotFoundError(p)
    return sorted(set(out))


def count_words(files):
    c = Counter()
    nbytes = 0
    for p in files:
        with open(p, "rb") as f:
            data = f.read()
        nbytes += len(data)
        c.update(tokref.gpt2_pretokenize(data))
    return c, nbytes


def train(word_counts, vocab_size, min_count=2, log=None):
    """word_counts: {bytes: count}. Returns (id_to_str list, merges list of
    (str_a, str_b))."""
    id_to_str = list(SPECIALS) + [tokref.BYTE_ENCODER[b] for b in range(256)]
    str_to_id = {s: i for i, s in enumerate(id_to_str)}
    special_set = set(SPECIALS)
    if vocab_size < len(id_to_str):
        raise ValueError("vocab size must be at least %d" % len(id_to_str))

    words = []   # list of lists of symbol ids
    counts = []  # parallel: occurrences
    for w, n in sorted(word_counts.items()):
        if len(w) >= 2:
            words.append([N_BYTE_BASE + b for b in w])
            counts.append(n)

    pair_count = {}
    where = {}
    for wi, syms in enumerate(words):
        n = counts[wi]
        for i in range(len(syms) - 1):
            p = (syms[i], syms[i + 1])
            pair_count[p] = pair_count.get(p, 0) + n
            s = where.get(p)
            if s is None:
                where[p] = {wi}
            else:
                s.add(wi)
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)

    merges = []
    banned = set()
    t0 = time.time()
    while len(id_to_str) < vocab_size and heap:
        negc, a, b = heapq.heappop(heap)
        p = (a, b)
        c = pair_count.get(p, 0)
        if c != -negc or c <= 0 or p in banned:
            continue  # stale entry
        if c < min_count:
            break
        new_str = id_to_str[a] + id_to_str[b]
        if new_str in special_set:
            banned.add(p)
            continue
        nid = str_to_id.get(new_str)
        if nid is None:
            nid = len(id_to_str)
            id_to_str.append(new_str)
            str_to_id[new_str] = nid
        merges.append((id_to_str[a], id_to_str[b]))
        changed = set()
        for wi in where.pop(p, ()):
            syms = words[wi]
            n = counts[wi]
            # does the word still hold the pair?
            found = False
            for i in range(len(syms) - 1):
                if syms[i] == a and syms[i + 1] == b:
                    found = True
                    break
            if not found:
                continue
            for i in range(len(syms) - 1):
                q = (syms[i], syms[i + 1])
                pair_count[q] -= n
                changed.add(q)
            out = []
            i = 0
            L = len(syms)
            while i < L:
                if i < L - 1 and syms[i] == a and syms[i + 1] == b:
                    out.append(nid)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[wi] = out
            for i in range(len(out) - 1):
                q = (out[i], out[i + 1])
                pair_count[q] = pair_count.get(q, 0) + n
                changed.add(q)
                s = where.get(q)
                if s is None:
                    where[q] = {wi}
                else:
                    s.add(wi)
        pair_count.pop(p, None)
        for q in changed:
            if q == p:
                continue
            cq = pair_count.get(q, 0)
            if cq > 0:
                heapq.heappush(heap, (-cq, q[0], q[1]))
            else:
                pair_count.pop(q, None)
        if log and len(merges) % 1000 == 0:
            log("%d merges, vocab %d, last %r (count %d), %.1f s"
                % (len(merges), len(id_to_str), new_str, c, time.time() - t0))
    return id_to_str, merges


def write(out_dir, id_to_str, merges):
    os.makedirs(out_dir, exist_ok=True)
    vocab = {s: i for i, s in enumerate(id_to_str)}
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8",
              newline="\n") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write("%s %s\n" % (a, b))


def train_dir(corpus_dir, vocab_size, out_dir, min_count=2):
    """Learns a tokenizer of up to vocab_size tokens from corpus_dir's files
    and writes it to out_dir; returns its vocabulary size."""
    counts, _ = count_words(corpus_files([corpus_dir]))
    id_to_str, merges = train(counts, vocab_size, min_count)
    write(out_dir, id_to_str, merges)
    return len(id_to_str)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--min-count", type=int, default=2,
                    help="stop when the best pair occurs fewer times")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("paths", nargs="+", help="corpus files or directories")
    a = ap.parse_args(argv)
    log = None if a.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    t0 = time.time()
    files = corpus_files(a.paths)
    if not files:
        print("bpe_train: no .txt/.rst files under %s" % " ".join(a.paths),
              file=sys.stderr)
        return 2
    wc, nbytes = count_words(files)
    if log:
        log("%d files, %d bytes, %d distinct words, %.1f s"
            % (len(files), nbytes, len(wc), time.time() - t0))
    id_to_str, merges = train(wc, a.vocab_size, a.min_count, log)
    write(a.out, id_to_str, merges)
    if log:
        log("wrote %s: %d tokens, %d merges, %.1f s total"
            % (a.out, len(id_to_str), len(merges), time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
