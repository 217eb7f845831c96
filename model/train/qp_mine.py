"""qp_mine.py - mines (query, passage) training pairs for the retrieval
encoder from the corpus's own structure, so it learns what users ask:

  heading      a section title (and, for FAQ pages, the question it is)
               -> the chunk of the text under it
  howto        "how do I ..." / "what is ..." rewrites of headings
  signature    `.. function::` / `method` / `class` / `exception` / `data` /
               `attribute` / `c:function` ... names and signatures
               -> the chunk of their description
  glossary     a glossary term -> its definition
  index        `.. index::` entries -> the chunk that follows
  error        "SomethingError: message" lines and exception names
               -> the chunk that explains them
  docstring    with --docstrings (qp_docstrings.py), the standard library's
               docstring summary of a signature's object -> its chunk

Passages are the database's own chunks (tokens from a `retro neighbours`
dump of a database of the corpus, so they are exactly what the server
embeds); the query text is removed from its passage (else the model learns
to copy), and the passage re-tokenised. Hard negatives: the best BM25 chunks
(SQLite FTS5, in memory) of other documents. Documents listed in --heldout
never give training pairs; their pairs go to a separate validation file.

  /usr/bin/python3 model/train/qp_mine.py --corpus DIR --dump DUMP --tokenizer DIR \
      --heldout model/default/heldout.txt --out OUT
writes OUT/pairs.jsonl and OUT/val.jsonl: {"q", "kind", "doc", "pos": [tokens],
"row", "neg": [[tokens], ...]} (tokens: the chunk tokenizer's ids, no specials;
row: the dump row of the passage's chunk, whose tokens still hold the query).
"""
import argparse
import json
import os
import random
import re
import sqlite3
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokref import ByteBPE  # noqa: E402

UNDERLINE = re.compile(r"^([=\-~^*#+\"'`:.])\1{2,}\s*$")
DIRECTIVE = re.compile(r"^\s*\.\. (?:[a-z]+:)?(function|method|class|exception|data|attribute|"
                       r"classmethod|staticmethod|decorator|member|macro|type|var|opcode|"
                       r"cmdoption|envvar|describe)::\s*(.+)$")
MODULE = re.compile(r"^\s*\.\. (?:current)?module::\s*(\S+)")
INDEX = re.compile(r"^\s*\.\. index::\s*(.*)$")
ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?([A-Z]\w*(?:Error|Exception|Warning)):\s+(\S.{5,120})$")
ROLE = re.compile(r":[\w:]+:`~?([^`<]+?)(?:\s*<[^>]+>)?`")


def clean(text):
    """reST roles and markup to plain words: :func:`os.path.join` -> os.path.join."""
    text = ROLE.sub(r"\1", text)
    text = text.replace("``", "").replace("*", "").replace("`", "")
    return " ".join(text.split())


def howto(title):
    """A question a user might type for a heading, or None."""
    t = title.rstrip(".:").strip()
    words = t.split()
    if not words or len(words) > 10 or t.endswith("?"):
        return None
    first = words[0].lower()
    if first.endswith("ing") and len(first) > 5:
        base = first[:-3]
        if len(base) > 2 and base[-1] == base[-2] and base[-1] not in "lsz":
            base = base[:-1]  # running -> run
        elif base.endswith(("at", "iz", "ur", "bl", "ov", "rit", "rv", "um", "ag", "us", "ak")):
            base += "e"       # creating -> create, writing -> write
        return "how do I " + " ".join([base] + words[1:]).lower() + "?"
    if first in ("the", "a", "an") or words[0][:1].isupper():
        return "what is " + t.lower() + "?"
    return None


def lines_at(text):
    """The lines of text, and the byte offset where each starts."""
    lines = text.split("\n")
    offs, o = [], 0
    for ln in lines:
        offs.append(o)
        o += len(ln.encode("utf-8")) + 1
    return lines, offs


def mine_doc(text):
    """(kind, query, byte offset where its passage starts) of one document."""
    lines, offs = lines_at(text)
    out = []
    module = ""
    faq = False
    for i, ln in enumerate(lines):
        m = MODULE.match(ln)
        if m:
            module = m.group(1)
            continue
        # a heading: a text line with an underline of the same length
        if i + 1 < len(lines) and UNDERLINE.match(lines[i + 1]) and ln.strip() and \
                not UNDERLINE.match(ln) and len(lines[i + 1].rstrip()) >= len(ln.rstrip()) - 1:
            title = clean(ln)
            if 3 <= len(title) <= 120:
                at = offs[i + 2] if i + 2 < len(offs) else offs[i]
                out.append(("heading", title, at))
                q = howto(title)
                if q and not title.endswith("?"):
                    out.append(("howto", q, at))
            continue
        m = DIRECTIVE.match(ln)
        if m:
            sig = clean(m.group(2))
            name = re.split(r"[\s(\[]", sig, 1)[0]
            if name and len(name) <= 80:
                at = offs[i + 1] if i + 1 < len(offs) else offs[i]
                full = name if "." in name or not module or m.group(1) in ("cmdoption", "envvar") \
                    else module + "." + name
                out.append(("signature", full, at))
                if sig != name and len(sig) <= 120:
                    out.append(("signature", sig, at))
                if m.group(1) == "exception":
                    out.append(("error", name, at))
            continue
        m = INDEX.match(ln)
        if m:
            for entry in re.split(r"[;,]", m.group(1)):
                entry = clean(re.sub(r"^\s*(single|pair|triple|see|seealso|module|keyword|"
                                     r"operator|object|exception|statement|builtin)\s*:\s*", "", entry))
                if 3 <= len(entry) <= 60 and not entry.startswith("!"):
                    out.append(("index", entry, offs[i]))
            continue
        m = ERROR_LINE.match(ln)
        if m:
            out.append(("error", clean(m.group(1) + ": " + m.group(2)), offs[i]))
    return out


def docstring_pairs(found, summaries):
    """("docstring", summary, at) for each signature among found (mine_doc's
    triples) whose object has a docstring summary (qp_docstrings.py)."""
    return [("docstring", summaries[q], at) for k, q, at in found if k == "signature" and q in summaries]


def glossary_pairs(text):
    """Terms at three spaces' indent in the glossary, each followed by its
    indented definition."""
    lines, offs = lines_at(text)
    out = []
    for i, ln in enumerate(lines[:-1]):
        if re.match(r"^   \S", ln) and re.match(r"^      \S", lines[i + 1]):
            term = clean(ln)
            if 2 <= len(term) <= 60:
                out.append(("glossary", term, offs[i + 1]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, help="the documents' root folder")
    ap.add_argument("--dump", required=True, help="`retro neighbours --out` folder of a database of the corpus")
    ap.add_argument("--tokenizer", required=True, help="folder with vocab.json and merges.txt")
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--negatives", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--docstrings", default=None,
                    help="qp_docstrings.py's JSON: each signature's docstring summary is a query too")
    a = ap.parse_args()
    summaries = json.load(open(a.docstrings)) if a.docstrings else {}
    rng = random.Random(a.seed)
    bpe = ByteBPE(os.path.join(a.tokenizer, "vocab.json"), os.path.join(a.tokenizer, "merges.txt"))
    held = set(open(a.heldout).read().split())
    tokens = np.load(os.path.join(a.dump, "tokens.npy"))
    doc_nums = np.load(os.path.join(a.dump, "doc_nums.npy"))
    ordinals = np.load(os.path.join(a.dump, "ordinals.npy"))
    names = {}
    for line in open(os.path.join(a.dump, "docs.jsonl")):
        d = json.loads(line)
        names[d["doc_num"]] = d["id"]
    pad = bpe.token_id("<pad>")
    rows_of = {}
    for r in np.lexsort((ordinals, doc_nums)):
        rows_of.setdefault(names[int(doc_nums[r])], []).append(int(r))

    def chunk_ids(r):
        t = tokens[r]
        return [int(x) for x in t if x != pad and x >= 0]

    # chunk texts, and a BM25 index of them for hard negatives
    texts = [bpe.decode(chunk_ids(r)) for r in range(len(tokens))]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE c USING fts5(body, tokenize='porter unicode61')")
    db.executemany("INSERT INTO c(rowid, body) VALUES (?, ?)",
                   ((r + 1, t.decode("utf-8", "replace")) for r, t in enumerate(texts)))
    row_doc = [names[int(d)] for d in doc_nums]

    def negatives(q, doc):
        words = re.findall(r"\w+", q.lower())
        if not words:
            return []
        expr = " OR ".join('"%s"' % w for w in words[:16])
        got = [r - 1 for (r,) in db.execute(
            "SELECT rowid FROM c WHERE c MATCH ? ORDER BY rank LIMIT 12", (expr,))]
        got = [r for r in got if row_doc[r] != doc]
        rng.shuffle(got)
        return got[:a.negatives]

    os.makedirs(a.out, exist_ok=True)
    counts = {}
    with open(os.path.join(a.out, "pairs.jsonl"), "w") as ft, open(os.path.join(a.out, "val.jsonl"), "w") as fv:
        for doc, rows in sorted(rows_of.items()):
            path = os.path.join(a.corpus, doc)
            if not os.path.isfile(path):
                continue
            src = open(path, encoding="utf-8").read()
            found = glossary_pairs(src) if doc == "glossary.rst.txt" else []
            found += mine_doc(src)
            found += docstring_pairs(found, summaries)
            if doc.startswith("faq/"):
                found = [("faq" if k == "heading" and q.endswith("?") else k, q, at) for k, q, at in found]
            # byte offset -> chunk row
            starts, o = [], 0
            for r in rows:
                starts.append(o)
                o += len(texts[r])
            seen = set()
            for kind, q, at in found:
                if (q, at) in seen:
                    continue
                seen.add((q, at))
                j = max(0, np.searchsorted(starts, at, side="right") - 1)
                r = rows[j]
                # the passage without the query's words in it, the longest
                # form first (a set's order would change with the hash seed)
                body = texts[r].decode("utf-8", "replace")
                for variant in sorted({q, q.rstrip("?"), q.split(": ", 1)[-1]}, key=lambda v: (-len(v), v)):
                    if len(variant) >= 3:
                        body = body.replace(variant, " ")
                pos = bpe.encode(body.encode("utf-8"))[:64]
                if len(pos) < 8:
                    continue
                rec = {"q": q, "kind": kind, "doc": doc, "pos": pos, "row": r,
                       "neg": [chunk_ids(n) for n in negatives(q, doc)]}
                (fv if doc in held else ft).write(json.dumps(rec) + "\n")
                key = ("val " if doc in held else "train ") + kind
                counts[key] = counts.get(key, 0) + 1
    print(json.dumps(counts, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
