"""fusion.py - how hybrid search fuses its two lists, tried offline: asks a
real `retro serve` once per query for the dense and the lexical top 50 (and
the server's own hybrid answer, to check that the simulation below is the
server's), then scores fusion rules on a split of queries.jsonl. This is
how the default rule and its constants were chosen: on the "tune" half only;
bench.py reports the chosen rule on the "report" half.

  /usr/bin/python3 tests/bench/retrieval/fusion.py --data DIR [--split tune]
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import Client, distinct_docs, free_port, metrics  # noqa: E402

N = 50  # each list's depth as fetched
DEPTH = 20  # each list's depth in the server's fusion (HYBRID_CANDIDATES)


def fetch(a, qs):
    port = free_port()
    cmd = [a.retro, "serve", "--data", a.data, "--port", str(port), "--log", "/dev/null"]
    if a.encoder:
        cmd += ["--encoder", a.encoder]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                if Client("127.0.0.1", port).req("GET", "/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        cl = Client("127.0.0.1", port)
        out = []
        for q in qs:
            row = {"id": q["id"]}
            for m in ("dense", "lexical", "hybrid"):
                # hybrid at k = 10: a larger k deepens the server's lists past DEPTH
                k = 10 if m == "hybrid" else N
                st, js = cl.req("POST", "/v1/search", {"query": q["query"], "k": k, "mode": m, "with_text": False})
                if st != 200:
                    sys.exit("search failed: %s %s" % (st, js))
                row[m] = [(h["chunk_id"], h["doc_id"], h["score"]) for h in js["results"]]
            out.append(row)
        return out
    finally:
        server.terminate()
        server.wait(timeout=60)


def fused_scores(row, alpha, k=60, depth=DEPTH):
    """Each chunk's weighted reciprocal-rank score over each list's first
    depth chunks, and its document: ({chunk: score}, {chunk: doc})."""
    s, doc = {}, {}
    for w, lst in ((alpha, row["dense"]), (1 - alpha, row["lexical"])):
        for r, (c, d, _) in enumerate(lst[:depth]):
            s[c] = s.get(c, 0.0) + w / (k + r + 1)
            doc[c] = d
    return s, doc


def ranked_docs(row, s, doc, ties="dense"):
    """The documents of the chunks of s, best score first. Equal scores go
    to the higher dense score (a chunk outside the fetched dense list scores
    below all of it: the dense search is exact), or with ties="id" to the
    lower chunk id."""
    cos = {c: sc for c, _, sc in row["dense"]}
    second = (lambda c: -cos.get(c, -2.0)) if ties == "dense" else (lambda c: 0)
    return [doc[c] for c in sorted(s, key=lambda c: (-s[c], second(c), c))]


def rrf(row, alpha, k=60, depth=DEPTH, ties="dense"):
    """Weighted reciprocal-rank fusion of each list's first depth chunks:
    the server's rule (depth DEPTH, k 60)."""
    s, doc = fused_scores(row, alpha, k, depth)
    return ranked_docs(row, s, doc, ties)


def doc_evidence(row, g, others=None):
    """The alpha rule, then each candidate lifted by g times the fused scores
    of its document's other candidates: the best `others` of them, or all
    (None). Tried 2026-12-07 and not adopted (docs/RETRIEVAL.md)."""
    s, doc = fused_scores(row, server_alpha(row))
    of = {}
    for c, v in s.items():
        of.setdefault(doc[c], []).append((v, c))
    for vs in of.values():
        vs.sort(reverse=True)
    f = {c: v + g * sum([x for x, o in of[doc[c]] if o != c][:others]) for c, v in s.items()}
    return ranked_docs(row, f, doc)


def lexical_margin(row):
    """How far the best BM25 chunk is ahead of the tenth, relative to it."""
    lx = row["lexical"]
    if len(lx) < 10:
        return 1.0
    return (lx[0][2] - lx[9][2]) / max(1e-9, lx[0][2])


def server_alpha(row):
    """The server's alpha (server/engine.c srv__hybrid_alpha): 0.2 when the
    best BM25 chunk is more than 0.4 (relative) above the tenth, else 0.5."""
    return 0.2 if lexical_margin(row) > 0.4 else 0.5


def server_rule(row):
    """The server's default fusion."""
    return rrf(row, server_alpha(row))


def evidence_unless_confident(row):
    """Document evidence (the best two others x 0.5) unless the lexical list
    is confident, else the server's rule: passed its rule on the tuning
    queries, then not adopted (it clusters a search's chunks in fewer
    documents; docs/RETRIEVAL.md)."""
    return server_rule(row) if lexical_margin(row) > 0.4 else doc_evidence(row, 0.5, 2)


def rules():
    out = [("rrf alpha %.1f" % al, lambda row, al=al: rrf(row, al)) for al in (0.3, 0.4, 0.5, 0.6)]
    out.append(("server rule, ties by chunk id",
                lambda row: rrf(row, server_alpha(row), ties="id")))
    out += [("rrf alpha 0.5 k %d" % k, lambda row, k=k: rrf(row, 0.5, k)) for k in (10, 30, 100)]
    for t in (0.3, 0.4, 0.5):
        for lo in (0.2, 0.3):
            out.append(("margin>%.1f -> alpha %.1f" % (t, lo),
                        lambda row, t=t, lo=lo: rrf(row, lo if lexical_margin(row) > t else 0.5)))
    # the server's rule over shorter lists, and with smaller k: a chunk deep in
    # both lists otherwise outranks the top of one
    for depth in (10, 20, 30, N):
        for k in (10, 30, 60):
            out.append(("server rule, depth %d k %d" % (depth, k),
                        lambda row, depth=depth, k=k: rrf(row, server_alpha(row), k, depth)))
    out += [("document evidence, all the others x %.2f" % g, lambda row, g=g: doc_evidence(row, g))
            for g in (0.25, 0.5, 1.0)]
    out += [("document evidence, best %d other(s) x %.2f" % (m, g), lambda row, g=g, m=m: doc_evidence(row, g, m))
            for m in (1, 2, 3, 5) for g in (0.25, 0.5)]
    out.append(("document evidence, best 2 x 0.50, unless margin>0.4", evidence_unless_confident))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--retro", default=os.path.join(HERE, "..", "..", "..", "build-release", "server", "retro"))
    ap.add_argument("--encoder", help="serve with this encoder (the one that made the database)")
    ap.add_argument("--queries", default=os.path.join(HERE, "queries.jsonl"))
    ap.add_argument("--split", default="tune", choices=["report", "tune", "all"])
    ap.add_argument("--cache", help="JSON of the fetched lists (read if present, else written)")
    a = ap.parse_args()
    allq = [json.loads(line) for line in open(a.queries)]
    if a.cache and os.path.exists(a.cache):
        rows = json.load(open(a.cache))
    else:
        rows = fetch(a, allq)
        if a.cache:
            json.dump(rows, open(a.cache, "w"))
    byid = {r["id"]: r for r in rows}
    qs = [q for q in allq if a.split == "all" or q["split"] == a.split]
    same = sum(distinct_docs(server_rule(byid[q["id"]])[:10]) ==
               distinct_docs([d for _, d, _ in byid[q["id"]]["hybrid"]][:10]) for q in qs)
    print("# %d queries (%s); the simulated server rule equals the server's hybrid top 10 "
          "documents for %d" % (len(qs), a.split, same))
    types = sorted({q["type"] for q in qs})
    print("| rule | MRR@10 | " + " | ".join(types) + " | 5 chunks | docs in 5 |")
    print("|---|---|" + "---|" * (len(types) + 2))
    lists = [("dense", lambda row: [d for _, d, _ in row["dense"]]),
             ("lexical", lambda row: [d for _, d, _ in row["lexical"]])] + rules()
    for name, f in lists:
        full = [(q, metrics(f(byid[q["id"]]), q["relevant"])) for q in qs]
        ms = [(q, m["MRR@10"]) for q, m in full]
        per = [sum(m for q, m in ms if q["type"] == t) / max(1, sum(q["type"] == t for q, _ in ms)) for t in types]
        five = [sum(m[c] for _, m in full) / len(full) for c in ("5 chunks", "docs in 5")]
        print("| %s | %.3f | %s | %.3f | %.2f |" % (name, sum(m for _, m in ms) / len(ms),
                                                   " | ".join("%.3f" % x for x in per), *five))


if __name__ == "__main__":
    main()
