#!/usr/bin/python3
"""test_bulk_vectors.py - bulk vectors end to end (TAP output):

    test_bulk_vectors.py RETRO MODELS_DIR

`retro chunks --out` on a corpus (text files and a JSONL file with
metadata), model/train/embed_chunks.py (the PyTorch reference encoder)
into a vectors file, `retro index --vectors`; the database must hold the
same documents, chunk ids and vectors (within 1e-4) and answer searches as
one built by plain `retro index`. Both encoder paths: the encoder sharing
the decoder's BPE tokenizer (chunks embedded from their ids) and a
WordPiece encoder (from their text). Then: vectors come from the file, not
the encoder (random vectors, scaled: stored L2-normalised); a file with
another encoder's fingerprint is refused naming both fingerprints; a wrong
dimension, a wrong count, another corpus's digest and a truncated file are
refused; nothing is written on a refusal; a non-finite vector fails its
document only; a second run leaves every document unchanged; stdin is
refused with --vectors; documents that fail their checks are left out
alike by both commands; a document queued as unchanged that changed before
its turn takes its vectors from the file; embed_chunks.py refuses another
encoder's directory. Skips (exit 77) when MODELS_DIR/SKIP exists.
"""
import json
import os
import random
import struct
import subprocess
import sys

import engine_models

HERE = os.path.dirname(os.path.abspath(__file__))
EMBED = os.path.join(HERE, "..", "..", "model", "train", "embed_chunks.py")

TAP = engine_models.Tap()
check = TAP.check


class Env:
    def __init__(self, retro, models, tmp, encoder):
        self.retro, self.tmp = retro, tmp
        self.encoder = os.path.join(models, encoder)
        self.models = ["--encoder", self.encoder, "--decoder", os.path.join(models, "decoder")]

    def run(self, *args, stdin=None):
        return subprocess.run([self.retro] + list(args), input=stdin, capture_output=True, text=True,
                              timeout=240)

    def index(self, data, corpus, *extra):
        return self.run("index", "--data", data, *self.models, "--quiet", *extra, *corpus)

    def chunks(self, data, out, corpus):
        return self.run("chunks", "--data", data, *self.models, "--quiet", "--out", out, *corpus)

    def info(self, data):
        return json.loads(self.run("info", "--data", data).stdout)

    def docs(self, data, ids):
        p = self.run("get", "--data", data, "--no-text", "--vectors", *ids)
        return json.loads(p.stdout) if p.stdout else None

    def search(self, data, mode, queries):
        p = self.run("search", "--data", data, "--mode", mode, "-k", "8", "--no-text", *queries)
        return [[(r["chunk_id"], r["score"]) for r in b["results"]] for b in json.loads(p.stdout)["batch"]]


def make_corpus(models, tmp):
    """The engine models' corpus directory and a JSONL file (metadata, an
    empty text, a document longer than a few chunks)."""
    jl = os.path.join(tmp, "extra.jsonl")
    words = ("retrieval augmented chunk vector encoder decoder python module index search query "
             "token attention server request response network socket thread class method").split()
    rng = random.Random(11)  # no repeated chunks: their near-equal scores would tie
    text = " ".join(rng.choice(words) for _ in range(700))
    with open(jl, "w") as f:
        f.write(json.dumps({"id": "j-meta", "text": "a short one", "metadata": {"lang": "en"}}) + "\n")
        f.write(json.dumps({"id": "j-empty", "text": ""}) + "\n")
        f.write(json.dumps({"id": "j-long", "text": text}) + "\n")
    corpus = [os.path.join(models, "corpus"), jl]
    ids = sorted(os.listdir(corpus[0])) + ["j-meta", "j-empty", "j-long"]
    return corpus, ids


def read_vec(path):
    with open(path, "rb") as f:
        b = f.read()
    magic, ver, dim, count, digest, fl = struct.unpack_from("<8sIIQ32sI", b)
    fp = b[60:60 + fl].decode()
    return dict(dim=dim, count=count, digest=digest, fp=fp, data=b[60 + fl:])


def write_vec(path, dim, count, digest, fp, data):
    fpb = fp.encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<8sIIQ32sI", b"RETROVEC", 1, dim, count, digest, len(fpb)) + fpb + data)


def max_diff(a, b):
    return max((abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v)), default=0.0)


def same_docs(env, a, b, ids, what):
    da, db = env.docs(a, ids), env.docs(b, ids)
    ok = da is not None and db is not None and len(da) == len(db)
    diff = 0.0
    for x, y in zip(da or [], db or []):
        ok = ok and x is not None and y is not None and x["chunk_ids"] == y["chunk_ids"] and \
            x["metadata"] == y["metadata"] and x["n_tokens"] == y["n_tokens"]
        if ok:
            diff = max(diff, max_diff(x["vectors"], y["vectors"]))
    check(ok and diff <= 1e-4, "%s: same documents, chunk ids and vectors (max diff %.2g)" % (what, diff))


def same_search(env, a, b, what):
    queries = ["python module", "the lock is unlocked", "retrieval chunk vector", "source code"]
    for mode in ("dense", "hybrid", "lexical"):
        ra, rb = env.search(a, mode, queries), env.search(b, mode, queries)
        ok = len(ra) == len(rb) == len(queries)
        for la, lb in zip(ra, rb):
            ok = ok and len(la) == len(lb)
            for i, ((ia, sa), (ib, sb)) in enumerate(zip(la, lb)):
                tie = any(abs(sa - la[j][1]) < 1e-4 for j in (i - 1, i + 1) if 0 <= j < len(la))
                ok = ok and abs(sa - sb) <= 1e-4 and (ia == ib or tie)
        check(ok, "%s: %s search answers the same" % (what, mode), "%s\n%s" % (ra, rb))


def refused(env, p, what, needles, data):
    """p failed with exit 1, naming needles, and data holds no document."""
    ok = p.returncode == 1 and all(n in p.stderr for n in needles)
    check(ok, what, "rc %d\n%s" % (p.returncode, p.stderr))
    info = env.info(data)
    check(info["documents"] == 0 and info["chunks"] == 0 and info["index"]["vectors"] == 0,
          what + ": nothing written", json.dumps(info))


def round_trip(env, corpus, ids, tag):
    """chunks -> embed_chunks.py -> index --vectors, against plain index.
    Returns (chunks path, vectors path, plain database)."""
    t = os.path.join(env.tmp, tag)
    os.makedirs(t)
    plain, bulk = os.path.join(t, "plain"), os.path.join(t, "bulk")
    chunks, vec = os.path.join(t, "chunks.jsonl"), os.path.join(t, "v.vec")
    p = env.index(plain, corpus)
    check(p.returncode == 0, "%s: plain retro index" % tag, p.stderr)
    p = env.chunks(os.path.join(t, "fresh"), chunks, corpus)
    check(p.returncode == 0 and os.path.exists(chunks) and not os.path.exists(chunks + ".tmp"),
          "%s: retro chunks --out" % tag, p.stderr)
    with open(chunks) as f:
        lines = f.read().splitlines()
    head = json.loads(lines[0])
    info = env.info(plain)
    check(head["encoder"] == info["encoder"]["fingerprint"] and head["count"] == len(lines) - 1 ==
          info["chunks"] and head["dim"] == info["encoder"]["dim"],
          "%s: chunks header: the database's fingerprint, dim and chunk count" % tag, lines[0])
    rows = [json.loads(x) for x in lines[1:]]
    order = [(r["doc"], r["chunk"]) for r in rows]
    want = [(d["id"], c) for d in env.docs(plain, ids) for c in range(d["n_chunks"])]
    check(order == want, "%s: chunks in the order retro index adds them" % tag)
    p = subprocess.run([sys.executable, EMBED, chunks, env.encoder, vec, "--device", "cpu"],
                       capture_output=True, text=True, timeout=240)
    check(p.returncode == 0, "%s: embed_chunks.py" % tag, p.stderr)
    p = env.index(bulk, corpus, "--vectors", vec)
    check(p.returncode == 0, "%s: retro index --vectors" % tag, p.stderr)
    same_docs(env, bulk, plain, ids, tag)
    same_search(env, bulk, plain, tag)
    p = env.run("index", "--data", bulk, "--vectors", vec, *corpus)
    check(p.returncode == 0 and ", %d unchanged in" % len(ids) in p.stderr,
          "%s: a second run: every document unchanged" % tag, p.stderr)
    return chunks, vec, plain


def from_file(env, corpus, ids, vec):
    """The stored vectors are the file's (random, scaled), L2-normalised."""
    v = read_vec(vec)
    rng = random.Random(3)
    vals = [rng.gauss(0, 1) for _ in range(v["count"] * v["dim"])]
    rnd = os.path.join(env.tmp, "random.vec")
    write_vec(rnd, v["dim"], v["count"], v["digest"], v["fp"], struct.pack("<%df" % len(vals), *[3 * x for x in vals]))
    data = os.path.join(env.tmp, "random")
    p = env.index(data, corpus, "--vectors", rnd)
    check(p.returncode == 0, "random vectors: indexed", p.stderr)
    got = [vv for d in env.docs(data, ids) for vv in d["vectors"]]
    dim, diff = v["dim"], 0.0
    for i, g in enumerate(got):
        u = vals[i * dim:(i + 1) * dim]
        n = sum(x * x for x in u) ** 0.5
        diff = max(diff, max(abs(a - b / n) for a, b in zip(g, u)))
    check(len(got) == v["count"] and diff <= 1e-6,
          "random vectors: stored as given, L2-normalised (max diff %.2g)" % diff)


def refusals(env, corpus, ids, vec, other_vec):
    v = read_vec(vec)
    t = os.path.join(env.tmp, "refused")
    os.makedirs(t)
    n = [0]

    def fresh():
        n[0] += 1
        return os.path.join(t, "d%d" % n[0])

    o = read_vec(other_vec)
    d = fresh()
    refused(env, env.index(d, corpus, "--vectors", other_vec),
            "another encoder's vectors refused, naming both fingerprints", [o["fp"], v["fp"]], d)
    bad = os.path.join(t, "fp.vec")
    fake = "bert-L9-H%d-0123456789abcdef:%d:mean:fake" % (v["dim"], v["dim"])
    write_vec(bad, v["dim"], v["count"], v["digest"], fake, v["data"])
    d = fresh()
    refused(env, env.index(d, corpus, "--vectors", bad),
            "a fingerprint of the same dimension refused, naming both", [fake, v["fp"]], d)
    dim = v["dim"] + 1
    write_vec(bad, dim, v["count"], v["digest"], v["fp"], b"\0" * (4 * dim * v["count"]))
    d = fresh()
    refused(env, env.index(d, corpus, "--vectors", bad), "a wrong dimension refused",
            ["%d-d vectors, the encoder makes %d-d" % (dim, v["dim"])], d)
    row = 4 * v["dim"]
    write_vec(bad, v["dim"], v["count"] - 1, v["digest"], v["fp"], v["data"][:-row])
    d = fresh()
    refused(env, env.index(d, corpus, "--vectors", bad), "a wrong count refused",
            ["holds %d vectors, the corpus has %d chunks" % (v["count"] - 1, v["count"])], d)
    write_vec(bad, v["dim"], v["count"], bytes(32), v["fp"], v["data"])
    d = fresh()
    refused(env, env.index(d, corpus, "--vectors", bad), "another corpus's digest refused",
            ["are not this corpus's"], d)
    write_vec(bad, v["dim"], v["count"], v["digest"], v["fp"], v["data"][:-8])
    d = fresh()
    refused(env, env.index(d, corpus, "--vectors", bad), "a truncated file refused", ["truncated"], d)
    d = fresh()
    refused(env, env.index(d, [corpus[0]], "--vectors", vec), "a subset of the corpus refused",
            ["holds %d vectors" % v["count"]], d)
    p = env.index(fresh(), ["-"], "--vectors", vec)
    check(p.returncode == 2 and "not -" in p.stderr, "stdin refused with --vectors", p.stderr)

    # a NaN in the first document's first vector fails that document only
    nan = bytearray(v["data"])
    struct.pack_into("<f", nan, 0, float("nan"))
    write_vec(bad, v["dim"], v["count"], v["digest"], v["fp"], bytes(nan))
    d = fresh()
    p = env.index(d, corpus, "--vectors", bad)
    docs = env.docs(d, ids) or []
    check(p.returncode == 1 and "not finite" in p.stderr and len(docs) == len(ids) and
          docs[0] is None and all(x is not None for x in docs[1:]),
          "a non-finite vector fails its document only", p.stderr)


def embed_random(env, corpus, tag):
    """retro chunks of corpus, and a vectors file of random vectors for them.
    Returns (chunks process, vectors path, the vectors as rows)."""
    chunks, vec = os.path.join(env.tmp, tag + ".jsonl"), os.path.join(env.tmp, tag + ".vec")
    p = env.chunks(os.path.join(env.tmp, tag + "-db"), chunks, corpus)
    with open(chunks) as f:
        head = json.loads(f.readline())
    rng = random.Random(len(tag))
    rows = [[rng.gauss(0, 1) for _ in range(head["dim"])] for _ in range(head["count"])]
    data = b"".join(struct.pack("<%df" % head["dim"], *r) for r in rows)
    write_vec(vec, head["dim"], head["count"], bytes.fromhex(head["digest"]), head["encoder"], data)
    return p, vec, [[x / sum(y * y for y in r) ** 0.5 for x in r] for r in rows]


def edge_cases(env):
    """Documents left out alike by chunks and index; a document queued as
    unchanged but changed before its turn takes its vectors from the file."""
    t = os.path.join(env.tmp, "edge")
    os.makedirs(t)
    bad = os.path.join(t, "bad.jsonl")
    with open(bad, "w") as f:
        f.write(json.dumps({"id": "b1", "text": "the first good document " * 30}) + "\n")
        f.write("{not json\n")
        f.write(json.dumps({"id": "x" * 600, "text": "an id too long"}) + "\n")
        f.write(json.dumps({"id": "b2", "text": "the second good document " * 30}) + "\n")
    p, vec, rows = embed_random(env, [bad], "bad")
    check(p.returncode == 1 and "document(s) failed" in p.stderr,
          "retro chunks: bad documents left out, exit 1", p.stderr)
    d = os.path.join(t, "bad-db")
    p = env.index(d, [bad], "--vectors", vec)
    docs = env.docs(d, ["b1", "b2"]) or [None, None]
    got = [v for x in docs if x for v in x["vectors"]]
    check(p.returncode == 1 and None not in docs and len(got) == len(rows) and
          max_diff(got, rows) <= 1e-6, "retro index --vectors leaves out the same ones", p.stderr)

    # X is stored as v2; the corpus holds X v1 then X v2: v2 is queued as
    # unchanged, then finds v1 stored when its turn comes (embed_late)
    v1, v2 = os.path.join(t, "v1.jsonl"), os.path.join(t, "v12.jsonl")
    with open(v1, "w") as f:
        f.write(json.dumps({"id": "X", "text": "version two of the text " * 40}) + "\n")
    with open(v2, "w") as f:
        f.write(json.dumps({"id": "X", "text": "version one " * 50}) + "\n")
        f.write(json.dumps({"id": "X", "text": "version two of the text " * 40}) + "\n")
    d = os.path.join(t, "late-db")
    env.index(d, [v1])
    _, vec, rows = embed_random(env, [v2], "late")
    p = env.index(d, [v2], "--vectors", vec)
    x = (env.docs(d, ["X"]) or [None])[0]
    n = len(x["vectors"]) if x else 0
    check(p.returncode == 0 and n > 0 and max_diff(x["vectors"], rows[-n:]) <= 1e-6,
          "a document stored again after being queued unchanged takes the file's vectors", p.stderr)

    chunks = os.path.join(env.tmp, "late.jsonl")
    other = os.path.join(os.path.dirname(env.encoder), "encoder-wp")
    p = subprocess.run([sys.executable, EMBED, chunks, other, os.path.join(t, "wp.vec"), "--device", "cpu"],
                       capture_output=True, text=True, timeout=240)
    check(p.returncode == 1 and "is not the chunks' encoder" in p.stderr and
          not os.path.exists(os.path.join(t, "wp.vec")), "embed_chunks.py refuses another encoder", p.stderr)


def run(retro, models, tmp):
    corpus, ids = make_corpus(models, tmp)
    wp = Env(retro, models, tmp, "encoder-wp")
    _, wp_vec, _ = round_trip(wp, corpus, ids, "by-text")
    env = Env(retro, models, tmp, "encoder")
    _, vec, _ = round_trip(env, corpus, ids, "by-ids")
    from_file(env, corpus, ids, vec)
    refusals(env, corpus, ids, vec, wp_vec)
    edge_cases(env)
    return TAP.end()


def main():
    return engine_models.run_test("test_bulk_vectors.py", "retro-bulk-", run)


if __name__ == "__main__":
    sys.exit(main())
