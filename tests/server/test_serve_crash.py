#!/usr/bin/python3
"""test_serve_crash.py - crash safety of `retro serve` under load (TAP).

    test_serve_crash.py RETRO MODELS_DIR [--rounds N] [--seed S] [--keep]

Each round starts `retro serve` on the same data directory and drives it
over HTTP from four clients at once: two upserting batches (one as JSON, one
as NDJSON), each also replacing its own earlier documents with new versions
and deleting some, one searching in every mode, one deleting documents of its
own (one at a time, several ids in one POST /v1/documents/delete, or all
of a metadata group with a filter) and patching their metadata (PATCH, or
several in one POST /v1/documents/update); then SIGKILLs the server at a
random moment. Every client works through
its own ids one request at a time, so the state every id must be in follows
from the answers: the last acknowledged upsert or delete, or, for the
request in flight at the kill, either that one or the one before. After the
restart (the next round's server) it checks:
  - every acknowledged document present with exactly its acknowledged text
    and metadata (no partial document: nothing else is ever present), every
    acknowledged delete gone, every acknowledged patch kept, and a batch
    delete or update in flight at the kill either wholly done or not at all;
  - the FAISS index (vectors + pending) and the lexical index hold exactly
    the live chunks, and /v1/info counts exactly the expected documents;
  - a sample of acknowledged documents found in every mode: dense (its own
    nearest neighbour), lexical and hybrid (first for its unique word).
The last round stops the server with SIGTERM and runs `retro verify`.
CI runs 10 rounds; tests/bench/http/serve_crash_bench.sh runs 100.
Skips (exit 77) when MODELS_DIR/SKIP exists.
"""
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "http"))
import serve_proc  # noqa: E402
import engine_models  # noqa: E402

VOCAB = ["w%03d" % i for i in range(300)]


def meta_of(doc_id, version, patch=0):
    """The deleter's documents also carry a group, which a filter deletes,
    and, once their metadata is patched, the patch's number p."""
    m = re.match(r"r(\d+)c(\d+)$", doc_id)
    meta = {"v": version, "g": "r%sc-%d" % (m.group(1), int(m.group(2)) % 4)} if m else {"v": version}
    if patch:
        meta["p"] = patch
    return meta


def text_of(doc_id, version):
    """One chunk; its first word names the id and version, found by nothing else."""
    r = random.Random("%s/%d" % (doc_id, version))
    return "%sv%d %s" % (doc_id, version, " ".join(r.choice(VOCAB) for _ in range(6)))


class Server(serve_proc.ServeProcess):
    def __init__(self, retro, models, data):
        super().__init__([retro, "serve", "--data", data, "--encoder", os.path.join(models, "encoder"),
                          "--decoder", os.path.join(models, "decoder"), "--port", "0", "--threads", "1",
                          "--log-flush-ms", "0"])

    def req(self, method, path, body=None, ctype="application/json", timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = {}
        if body is not None:
            h["Content-Type"] = ctype
            if not isinstance(body, (str, bytes)):
                body = json.dumps(body)
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        try:
            js = json.loads(data) if data else None
        except ValueError:
            js = None
        return r.status, js


class Model:
    """What each id must be: state[id] = ("doc", version, patch) | ("gone",);
    during a request in flight, maybe[id] holds the state it would leave."""

    def __init__(self):
        self.state, self.maybe = {}, {}
        self.batches = []  # the changes of batch deletes and updates in flight
        self.acks = {"doc": 0, "gone": 0, "patch": 0}
        self.lock = threading.Lock()

    def begin(self, changes, batch=False):
        with self.lock:
            self.maybe.update(changes)
            if batch:
                self.batches.append(dict(changes))

    def done(self, changes, acked):
        with self.lock:
            if changes in self.batches:
                self.batches.remove(changes)
            for k, v in changes.items():
                self.maybe.pop(k, None)
                if acked.get(k):
                    was = self.state.get(k, ("gone",))
                    patch = v[0] == was[0] == "doc" and v[2] > was[2]
                    self.state[k] = v
                    self.acks["patch" if patch else v[0]] += 1

    def allowed(self, k):
        s = [self.state.get(k, ("gone",))]
        if k in self.maybe:
            s.append(self.maybe[k])
        return s


def patch_metadata(s, model, rng, live):
    """A new patch number into the metadata of one document (PATCH) or of
    several in one POST /v1/documents/update (all or none)."""
    ks = rng.sample(live, min(len(live), rng.randint(1, 3)))
    ch = {k: ("doc", model.state[k][1], model.state[k][2] + 1) for k in ks}
    if len(ks) == 1 and rng.random() < 0.5:
        model.begin(ch)
        st, _ = s.req("PATCH", "/v1/documents/" + ks[0], {"metadata": {"p": ch[ks[0]][2]}},
                      ctype="application/merge-patch+json")
        model.done(ch, {ks[0]: st == 200})
        return
    # one patch for all: each gets the number one past the highest of them
    p = max(c[2] for c in ch.values())
    ch = {k: ("doc", c[1], p) for k, c in ch.items()}
    model.begin(ch, batch=True)
    st, js = s.req("POST", "/v1/documents/update", {"ids": ks, "metadata": {"p": p}})
    model.done(ch, {k: st == 200 and js["updated"] == len(ks) for k in ks})


def client(s, model, stop, rnd, name, kind, rng):
    """kind: json | ndjson (upserts, updates, deletes) | deleter | searcher."""
    mine, n = [], 0
    while not stop.is_set():
        try:
            if kind == "searcher":
                q = text_of(rng.choice(mine or ["x"]), 0)
                s.req("POST", "/v1/search", {"query": q, "k": 5, "mode": rng.choice(["dense", "lexical", "hybrid"])})
                continue
            live = [k for k in mine if model.state.get(k, ("gone",))[0] == "doc"]
            if kind == "deleter" or (live and rng.random() < 0.15):
                if not live or (kind == "deleter" and rng.random() < 0.5):
                    k = "r%d%s%d" % (rnd, name, n)
                    n += 1
                    mine.append(k)
                    ch = {k: ("doc", 0, 0)}
                    model.begin(ch)
                    st, js = s.req("POST", "/v1/documents", {"documents": [{"id": k, "text": text_of(k, 0), "metadata": meta_of(k, 0)}]})
                    model.done(ch, {k: st == 200 and js["results"][0]["status"] == "ok"})
                    continue
                how = rng.random() if kind == "deleter" else 0
                if kind == "deleter" and rng.random() < 0.3:
                    patch_metadata(s, model, rng, live)
                    continue
                if how < 0.4:
                    k = rng.choice(live)
                    ch = {k: ("gone",)}
                    model.begin(ch)
                    st, js = s.req("DELETE", "/v1/documents/" + k)
                    model.done(ch, {k: st == 200})
                    continue
                if how < 0.8:
                    ks = rng.sample(live, min(len(live), rng.randint(1, 4)))
                    body = {"ids": ks}
                else:
                    group = meta_of(rng.choice(live), 0)["g"]
                    ks = [k for k in live if meta_of(k, 0)["g"] == group]
                    body = {"filter": {"g": group}}
                ch = {k: ("gone",) for k in ks}
                model.begin(ch, batch=True)
                st, js = s.req("POST", "/v1/documents/delete", body)
                model.done(ch, {k: st == 200 and js["deleted"] == len(ks) for k in ks})
                continue
            batch = []
            for _ in range(rng.randint(1, 8)):
                if live and rng.random() < 0.3:
                    k = rng.choice(live)
                    v = model.state[k][1] + 1
                else:
                    k = "r%d%s%d" % (rnd, name, n)
                    n += 1
                    mine.append(k)
                    v = 0
                if k not in [d["id"] for d in batch]:
                    batch.append({"id": k, "text": text_of(k, v), "metadata": meta_of(k, v)})
            ch = {d["id"]: ("doc", d["metadata"]["v"], 0) for d in batch}
            model.begin(ch)
            if kind == "ndjson":
                body = "".join(json.dumps(d) + "\n" for d in batch)
                st, js = s.req("POST", "/v1/documents", body, ctype="application/x-ndjson")
            else:
                st, js = s.req("POST", "/v1/documents", {"documents": batch})
            acked = {}
            if st == 200:
                acked = {r["id"]: r["status"] == "ok" for r in js["results"]}
            model.done(ch, acked)
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
            return  # the server is gone: what was in flight stays in model.maybe


def check(s, model, rng, sample=40):
    """Problems (strings) found against the model."""
    bad, live_docs = [], 0
    with model.lock:
        ids = sorted(set(model.state) | set(model.maybe))
    found = {}
    for k in ids:
        st, js = s.req("GET", "/v1/documents/" + k)
        if st == 200:
            m = re.match(r"%sv(\d+) " % re.escape(k), js.get("text", ""))
            v = int(m.group(1)) if m else -1
            p = js.get("metadata", {}).get("p", 0)
            got = ("doc", v, p)
            if not m or js["text"] != text_of(k, v) or js["metadata"] != meta_of(k, v, p):
                bad.append("%s: partial or foreign document %r" % (k, js.get("text", "")[:60]))
                continue
            found[k] = v
            live_docs += 1
        elif st == 404:
            got = ("gone",)
        else:
            bad.append("%s: GET answered %d" % (k, st))
            continue
        if got not in model.allowed(k):
            bad.append("%s: is %s, acknowledged %s" % (k, got, model.allowed(k)))
    st, info = s.req("GET", "/v1/info")
    ix, lx = info["index"], info.get("lexical") or {}
    if info["documents"] != live_docs:
        bad.append("/v1/info: %d documents, %d found" % (info["documents"], live_docs))
    if ix["vectors"] + ix["pending"] != info["chunks"] or lx.get("chunks") != info["chunks"]:
        bad.append("index %d+%d, lexical %s, live chunks %d" % (ix["vectors"], ix["pending"], lx.get("chunks"), info["chunks"]))
    for k in rng.sample(sorted(found), min(sample, len(found))):
        t = text_of(k, found[k])
        for mode, q in (("dense", t), ("lexical", t.split()[0]), ("hybrid", t)):
            st, js = s.req("POST", "/v1/search", {"query": q, "k": 3, "mode": mode})
            hits = js["results"] if st == 200 else []
            top = hits[0]["score"] if hits else None
            if mode == "dense":
                good = any(h["doc_id"] == k and h["score"] >= top - 1e-5 for h in hits)
            else:
                good = bool(hits) and hits[0]["doc_id"] == k
            if not good:
                bad.append("%s: not found first by a %s search" % (k, mode))
    return bad, live_docs


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print("usage: test_serve_crash.py RETRO MODELS_DIR [--rounds N] [--seed S] [--keep]", file=sys.stderr)
        return 2
    retro, models = args[0], args[1]
    rounds = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 10
    seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 4242
    if engine_models.missing(models):
        return 77
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="retro-serve-crash-")
    data = os.path.join(work, "data")
    model = Model()
    failed = 0
    print("1..%d" % (rounds + 1))
    s = Server(retro, models, data)
    for rnd in range(rounds):
        stop = threading.Event()
        kinds = [("a", "json"), ("b", "ndjson"), ("c", "deleter"), ("d", "searcher")]
        ts = [threading.Thread(target=client, args=(s, model, stop, rnd, n, k, random.Random(rng.random())))
              for n, k in kinds]
        for t in ts:
            t.start()
        delay = rng.uniform(0.3, 2.5)
        time.sleep(delay)
        s.p.send_signal(signal.SIGKILL)
        s.p.wait()
        stop.set()
        for t in ts:
            t.join(60)
        s = Server(retro, models, data)  # the restart: next round's server
        bad, live = check(s, model, rng)
        # the requests in flight at the kill went one way or the other (check()
        # accepted either): what the restarted server holds is the truth now
        for k in list(model.maybe):
            st, js = s.req("GET", "/v1/documents/" + k)
            model.state[k] = ("doc", js["metadata"]["v"], js["metadata"].get("p", 0)) if st == 200 else ("gone",)
        for batch in model.batches:
            done = [model.state[k] == new for k, new in batch.items()]
            if any(done) and not all(done):
                bad.append("a batch delete or update in flight was done in part: %s" % sorted(batch))
        model.maybe.clear()
        model.batches.clear()
        ok = not bad
        failed += not ok
        print("%sok %d - round %d: SIGKILL after %.2fs; %d documents live; acknowledged so far: %d upserts, "
              "%d deletes, %d metadata patches, all kept" % ("" if ok else "not ", rnd + 1, rnd, delay, live,
                                                             model.acks["doc"], model.acks["gone"],
                                                             model.acks["patch"]))
        for b in bad[:10]:
            print("#   " + b)
        sys.stdout.flush()
    rc = s.p.send_signal(signal.SIGTERM) or s.p.wait(120)
    v = subprocess.run([retro, "verify", "--data", data], capture_output=True, timeout=300)
    ok = rc == 0 and v.returncode == 0
    failed += not ok
    print("%sok %d - after a clean stop, retro verify finds nothing wrong (exit %s, verify %d)"
          % ("" if ok else "not ", rounds + 1, rc, v.returncode))
    if not ok:
        for line in v.stderr.decode().splitlines()[:10]:
            print("#   " + line)
    if "--keep" not in args:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("# kept %s" % work)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
