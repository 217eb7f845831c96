"""bench.py - retrieval quality and latency of a real `retro serve`, per
search mode, beside the peer: plain SQLite FTS5 bm25() over the very same
chunk texts, in the same run. Not part of `meson test`.

  /usr/bin/python3 tests/bench/retrieval/bench.py --data DIR [--retro BIN]
      [--split report|tune|all] [--modes dense,lexical,hybrid] [--alpha 0.3,0.5]
      [--latency N] [--quotes N] [--json OUT]

Starts `retro serve --data DIR` on a free port (or uses --url), asks every
query of queries.jsonl (the chosen split) for its 50 best chunks in each
mode (with --rerank N, also the hybrid's best N reordered by the reranker,
followed by the rest of its 50, and the two orders fused by reciprocal rank), and judges at the level of documents: a query's ranked chunks become
its ranked distinct documents, then
  hit@n   a relevant document among the first n,
  MRR@10  1 / rank of the first relevant document within 10 (else 0),
  nDCG@10 binary gains, ideal = min(relevant, 10) ones.
Printed overall, per query type, and for the queries whose relevant
documents are all held out of encoder training. Also: hubness (the chunk and
the document that appear in the most top-10 lists), search-by-text latency
per mode (p50/p90 over --latency searches, k = 10, one connection, the modes
taking turns on each query), known items (--quotes passages of 12 words
quoted from random places of the corpus, across chunk boundaries too: how
often each mode puts their document first or in the top 3), and the
sizes of the index files.

The peer reads the chunk texts from DIR/lexical.sqlite (the FTS5 table's
content) into an in-memory FTS5 table with the default unicode61 tokenizer
and asks each query's words OR'ed, ranked by bm25(); a second peer row also
indexes the title column ours has (each chunk's document heading and id,
read from the same file), so that neither side has text the other lacks. Tune on "tune", report
"report": never quote a figure tuned on the queries it is reported on.
"""
import argparse
import http.client
import json
import math
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Client:
    def __init__(self, host, port):
        self.c = http.client.HTTPConnection(host, port, timeout=120)

    def req(self, method, path, body=None):
        self.c.request(method, path, json.dumps(body) if body is not None else None,
                       {"content-type": "application/json"})
        r = self.c.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None


def metrics(chunk_docs, relevant):
    """A query's figures from the documents of its ranked chunks: judged on
    the distinct documents in order (hit@n, MRR@10, nDCG@10), and on the
    first 5 chunks as a caller asking for k = 5 gets them ("5 chunks": a
    relevant document among them; "docs in 5": how many documents they
    come from). The document-level figures alone reward a ranking that
    crowds one document's chunks together (docs/RETRIEVAL.md)."""
    rel = set(relevant)
    docs = distinct_docs(chunk_docs)
    first = next((i for i, d in enumerate(docs[:10]) if d in rel), None)
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(docs[:10]) if d in rel)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(rel), 10)))
    return {"hit@1": float(first == 0), "hit@5": float(first is not None and first < 5),
            "hit@10": float(first is not None), "MRR@10": 1 / (first + 1) if first is not None else 0.0,
            "nDCG@10": dcg / idcg, "5 chunks": float(any(d in rel for d in chunk_docs[:5])),
            "docs in 5": float(len(set(chunk_docs[:5])))}


def ranked_hits(answer):
    """A search answer's hits in rank order: with group_by, each document's
    best hit."""
    return [g["hits"][0] for g in answer["groups"]] if "groups" in answer else answer.get("results", [])


def distinct_docs(doc_ids):
    out = []
    for d in doc_ids:
        if d not in out:
            out.append(d)
    return out


def table(title, rows):
    cols = ["hit@1", "hit@5", "hit@10", "MRR@10", "nDCG@10", "5 chunks", "docs in 5"]
    print("\n" + title)
    print("| run | n | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name, ms in rows:
        if not ms:
            continue
        print("| %s | %d | %s |" % (name, len(ms), " | ".join("%.3f" % (sum(m[c] for m in ms) / len(ms)) for c in cols)))


class Peer:
    """Plain FTS5 (unicode61, bm25) over the chunk texts of the database, and
    with title=True over the same title column as ours too (its document's
    first heading and id, as lexical.sqlite holds them)."""

    def __init__(self, lexical_file, title=False):
        src = sqlite3.connect("file:%s?mode=ro" % lexical_file, uri=True)
        src.text_factory = bytes
        cols = "c0, c1" if title else "c0, ''"
        rows = [(i, b.decode("utf-8", "replace"), t.decode("utf-8", "replace") if t else "")
                for i, b, t in src.execute("SELECT id, %s FROM lex_chunks_content" % cols)]
        src.close()
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE t USING fts5(body, title)")
        self.db.executemany("INSERT INTO t(rowid, body, title) VALUES (?, ?, ?)", rows)
        self.n = len(rows)

    def search(self, query, k):
        words = re.findall(r"\w+", query.lower())
        if not words:
            return []
        expr = " OR ".join('"%s"' % w for w in dict.fromkeys(words))
        return [r for (r,) in self.db.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY rank LIMIT ?",
                                              (expr, k))]


def has_title_column(lexical_file):
    """Whether the file is of the schema with titles (a file written before
    2026-12-07 has the body alone)."""
    db = sqlite3.connect("file:%s?mode=ro" % lexical_file, uri=True)
    cols = [r[1] for r in db.execute("PRAGMA table_info(lex_chunks_content)")]
    db.close()
    return "c1" in cols


def reranked(cl, query, n, plain):
    """The hybrid's best n chunks as the reranker orders them (each with
    "rank0", its hybrid rank), then the rest of the plain hybrid list."""
    st, js = cl.req("POST", "/v1/search", {"mode": "hybrid", "query": query, "k": n, "rerank": n,
                                           "with_text": False})
    if st != 200:
        sys.exit("search failed: %s %s" % (st, js))
    hits = [dict(h, rank0=h["retrieval_rank"]) for h in js["results"]]
    seen = {h["chunk_id"] for h in hits}
    return hits + [h for h in plain if h["chunk_id"] not in seen]


def quotes(cl, n, seed=7):
    """n known-item queries: 12 consecutive words of the corpus, starting in
    a random stored chunk (seeded) and running on into its continuation
    where the chunk ends first, as a passage a user copies knows nothing of
    chunk boundaries; each with the chunk's document. A user pasting a
    passage to find where it comes from wants that document first; the
    query set's questions and paraphrases do not test that."""
    rng = random.Random(seed)
    total = cl.req("GET", "/v1/info")[1]["chunks"]
    out = []
    while len(out) < n:
        st, ch = cl.req("GET", "/v1/chunks/%d" % rng.randrange(1, total + 1))
        own = ch["text"].split() if st == 200 else []
        words = (ch["text"] + ch["continuation"]).split() if st == 200 else []
        if not own or len(words) < 12:
            continue
        start = rng.randrange(0, min(len(own), len(words) - 11))
        out.append((" ".join(words[start:start + 12]), ch["doc_id"]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="database folder (starts retro serve on it)")
    ap.add_argument("--retro", default=os.path.join(HERE, "..", "..", "..", "build-release", "server", "retro"))
    ap.add_argument("--encoder", help="serve with this encoder (e.g. an older one for a database it made)")
    ap.add_argument("--url", help="host:port of a running server instead (needs --data for the peer and sizes)")
    ap.add_argument("--queries", default=os.path.join(HERE, "queries.jsonl"))
    ap.add_argument("--split", default="report", choices=["report", "tune", "all"])
    ap.add_argument("--modes", default="dense,lexical,hybrid")
    ap.add_argument("--alpha", default="", help="extra hybrid rows, one per alpha")
    ap.add_argument("--rerank", default="",
                    help="extra rows: the hybrid's best N chunks reordered by the reranker, one per N "
                         "(and the same fused with the hybrid's order by reciprocal rank)")
    ap.add_argument("--reranker", help="serve with this reranker directory")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--latency", type=int, default=200)
    ap.add_argument("--group", action="store_true", help="extra rows: each mode's group_by document ranking")
    ap.add_argument("--quotes", type=int, default=300, help="known-item queries quoted from random chunks (0: none)")
    ap.add_argument("--json")
    a = ap.parse_args()
    qs = [json.loads(l) for l in open(a.queries)]
    qs = [q for q in qs if a.split == "all" or q["split"] == a.split]
    server = None
    if a.url:
        host, port = a.url.rsplit(":", 1)
        port = int(port)
    else:
        host, port = "127.0.0.1", free_port()
        cmd = [a.retro, "serve", "--data", a.data, "--port", str(port), "--log", "/dev/null"]
        if a.encoder:
            cmd += ["--encoder", a.encoder]
        if a.reranker:
            cmd += ["--reranker", a.reranker]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(600):
            try:
                if Client(host, port).req("GET", "/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
    cl = Client(host, port)
    try:
        st, info = cl.req("GET", "/v1/info")
        print("# %d queries (%s split); %d documents, %d chunks; encoder %s" %
              (len(qs), a.split, info["documents"], info["chunks"], info["encoder"]["fingerprint"][:40]),
              file=sys.stderr)
        runs = [(m, {"mode": m}) for m in a.modes.split(",") if m]
        runs += [("hybrid alpha %s" % x, {"mode": "hybrid", "alpha": float(x)}) for x in a.alpha.split(",") if x]
        if a.group:  # documents ranked by the server (group_by), one chunk each
            runs += [("%s group_by" % m, {"mode": m, "group_by": "document", "group_size": 1, "k": 10})
                     for m in a.modes.split(",") if m]
        if a.rerank and "hybrid" not in [n for n, _ in runs]:  # the rerank rows reorder its hits
            runs.append(("hybrid", {"mode": "hybrid"}))
        results = {}
        top10 = {}
        hits_of = {}  # each run's hits, query by query
        for name, conf in runs:
            res = []
            for q in qs:
                st, js = cl.req("POST", "/v1/search", dict({"k": a.k}, **conf, query=q["query"], with_text=False))
                if st != 200:
                    sys.exit("search failed: %s %s" % (st, js))
                hits = ranked_hits(js)
                hits_of.setdefault(name, []).append(hits)
                top10.setdefault(name, []).extend((h["chunk_id"], h["doc_id"]) for h in hits[:10])
                res.append((q, metrics([h["doc_id"] for h in hits], q["relevant"])))
            results[name] = res
        for n in [int(x) for x in a.rerank.split(",") if x]:
            rr, fused = [], []
            for q, plain in zip(qs, hits_of["hybrid"]):
                hits = reranked(cl, q["query"], n, plain)
                ranked = sorted(enumerate(hits[:n]), key=lambda x: -(1 / (61 + x[0]) + 1 / (60 + x[1]["rank0"])))
                for name, order in (("hybrid rerank %d" % n, hits), ("hybrid rerank %d rrf" % n,
                                                                    [h for _, h in ranked] + hits[n:])):
                    top10.setdefault(name, []).extend((h["chunk_id"], h["doc_id"]) for h in order[:10])
                rr.append((q, metrics([h["doc_id"] for h in hits], q["relevant"])))
                fused.append((q, metrics([h["doc_id"] for _, h in ranked] + [h["doc_id"] for h in hits[n:]],
                                         q["relevant"])))
            results["hybrid rerank %d" % n] = rr
            results["hybrid rerank %d rrf" % n] = fused
        peers = [("fts5-bm25", False)] if a.data else []
        if a.data and has_title_column(os.path.join(a.data, "lexical.sqlite")):
            peers.append(("fts5-bm25 +title", True))
        doc_of = {}
        for name, title in peers:
            peer = Peer(os.path.join(a.data, "lexical.sqlite"), title)
            res = []
            for q in qs:
                ids = peer.search(q["query"], a.k)
                for i in ids:
                    if i not in doc_of:
                        doc_of[i] = cl.req("GET", "/v1/chunks/%d" % i)[1]["doc_id"]
                top10.setdefault(name, []).extend((i, doc_of[i]) for i in ids[:10])
                res.append((q, metrics([doc_of[i] for i in ids], q["relevant"])))
            results[name + " (peer)"] = res
        table("all queries (%s split)" % a.split, [(n, [m for _, m in r]) for n, r in results.items()])
        for t in sorted({q["type"] for q in qs}):
            table("type %s" % t, [(n, [m for q, m in r if q["type"] == t]) for n, r in results.items()])
        table("relevant documents held out of encoder training",
              [(n, [m for q, m in r if q.get("heldout")]) for n, r in results.items()])
        if a.quotes:
            print("\nknown items: %d passages of 12 words quoted from random places (seed 7), their "
                  "document" % a.quotes)
            print("| run | first | top 3 | MRR@10 |\n|---|---|---|---|")
            known = quotes(cl, a.quotes)
            for name, conf in runs:
                ranks = []
                for q, doc in known:
                    st, js = cl.req("POST", "/v1/search", dict({"k": a.k}, **conf, query=q, with_text=False))
                    docs = distinct_docs([h["doc_id"] for h in ranked_hits(js)]) if st == 200 else []
                    ranks.append(docs.index(doc) + 1 if doc in docs else 99)
                print("| %s | %.3f | %.3f | %.3f |" % (name, sum(r == 1 for r in ranks) / len(ranks),
                                                      sum(r <= 3 for r in ranks) / len(ranks),
                                                      sum(1 / r for r in ranks if r <= 10) / len(ranks)))
        print("\nhubness: the chunk / document in the most top-10 lists (of %d queries)" % len(qs))
        for name, pairs in top10.items():
            cc, dc = {}, {}
            for cid, did in pairs:
                cc[cid] = cc.get(cid, 0) + 1
            for did in {(i // 10, d) for i, (_, d) in enumerate(pairs)}:
                dc[did[1]] = dc.get(did[1], 0) + 1
            c = max(cc.items(), key=lambda x: x[1]) if cc else (None, 0)
            d = max(dc.items(), key=lambda x: x[1]) if dc else (None, 0)
            print("  %-20s chunk %s in %d; document %s in %d" % (name, c[0], c[1], d[0], d[1]))
        lat = {}
        if a.latency:
            # the modes take turns on each query, so a change in the shared
            # machine's load falls on all of them alike
            print("\nsearch by text, k = 10, one connection, %d searches per mode, modes interleaved:"
                  % a.latency)
            modes = {m: {"mode": m} for m in a.modes.split(",") if m}
            modes.update({"hybrid rerank %s" % n: {"mode": "hybrid", "rerank": int(n)}
                          for n in a.rerank.split(",") if n})
            ts = {m: [] for m in modes}
            for i in range(a.latency):
                q = qs[i % len(qs)]["query"]
                for m, conf in modes.items():
                    t0 = time.perf_counter()
                    cl.req("POST", "/v1/search", dict(conf, query=q, k=10, with_text=False))
                    ts[m].append((time.perf_counter() - t0) * 1000)
            for m in modes:
                t = sorted(ts[m])
                lat[m] = (t[len(t) // 2], t[int(len(t) * 0.9)])
                print("  %-8s p50 %.2f ms  p90 %.2f ms" % (m, *lat[m]))
            if "dense" in lat and "hybrid" in lat:
                print("  hybrid / dense p50: %.2fx" % (lat["hybrid"][0] / lat["dense"][0]))
        if a.data:
            sizes = {f: os.path.getsize(os.path.join(a.data, f)) for f in ("index.faiss", "lexical.sqlite",
                                                                          "lexical.sqlite-wal")
                     if os.path.exists(os.path.join(a.data, f))}
            print("\nindex files: " + ", ".join("%s %.1f MB" % (f, b / 1e6) for f, b in sizes.items()))
        if a.json:
            out = {n: {c: sum(m[c] for _, m in r) / max(1, len(r)) for c in
                       ("hit@1", "hit@5", "hit@10", "MRR@10", "nDCG@10")} for n, r in results.items()}
            json.dump({"split": a.split, "metrics": out, "latency_ms": lat}, open(a.json, "w"), indent=1)
    finally:
        if server:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
