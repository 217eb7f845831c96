#!/usr/bin/python3
"""test_ingest_crash.py - crash safety of `retro index` (TAP output).

    test_ingest_crash.py RETRO MODELS_DIR [--rounds N] [--docs N] [--fresh-every N]
                         [--seed S] [--keep]

Writes a JSONL corpus (mostly one-chunk documents, some long ones), then
repeatedly runs `retro index --acks` on it and SIGKILLs it at a random moment
(some rounds finish before the kill). `--acks` prints "ack ID N_CHUNKS" once a
document's transaction has committed. After every kill it restarts the tools
and checks:
  - every document acknowledged so far (in any round) is present, with its
    exact text and chunk count;
  - no partial document exists: every present document is exactly its text;
  - after a restart (a writable open), `retro info`: the FAISS index holds
    exactly the live chunks (vectors + pending == chunks), so does the lexical
    index (its own file, not a private rebuild), and the document count
    matches;
  - acknowledged one-chunk documents are found as their own nearest
    neighbour by `retro search` on their text, and among the 5 best of a
    lexical search (a sample per round); no lexical hit is of a document
    that is not present.
Every --fresh-every rounds (default 5) the database is deleted and the
acknowledged set reset, so kills land in first-time ingests as well as in
replacements. The last round runs to completion and every document must then
be present.
CI runs 20 rounds; tests/bench/ingest/crash_bench.sh runs 200.
Skips (exit 77) when MODELS_DIR/SKIP exists.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import engine_models

WORDS = ("retrieval augmented language model chunk neighbour database index search query vector "
         "token encoder decoder attention server request response python documentation module "
         "function class method string number list dictionary file network socket thread lock "
         "queue heap tree graph byte buffer stream parser format value result error").split()


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print("usage: test_ingest_crash.py RETRO MODELS_DIR [--rounds N] [--docs N] [--seed S]",
              file=sys.stderr)
        return 2
    retro, models = args[0], args[1]

    def opt(name, default):
        return type(default)(args[args.index(name) + 1]) if name in args else default

    rounds, ndocs, seed = opt("--rounds", 20), opt("--docs", 300), opt("--seed", 12345)
    fresh = opt("--fresh-every", 5)
    keep = "--keep" in args
    if engine_models.missing(models):
        return 77
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="retro-crash-")
    data = os.path.join(tmp, "data")
    corpus = os.path.join(tmp, "corpus.jsonl")
    docs = {}
    order = []
    for i in range(ndocs):
        n = rng.randrange(150, 600) if rng.random() < 0.15 else rng.randrange(6, 20)
        text = "doc %d: " % i + " ".join(rng.choice(WORDS) for _ in range(n)) + "."
        did = "doc-%04d" % i
        docs[did] = text
        order.append(did)
    with open(corpus, "w") as f:
        for i, did in enumerate(order):
            f.write(json.dumps({"id": did, "text": docs[did], "metadata": {"i": i}}) + "\n")
    base = [retro, "index", "--data", data, "--encoder", os.path.join(models, "encoder"),
            "--decoder", os.path.join(models, "decoder"), "--acks", "--quiet", "--batch", "8"]

    n = 0
    failed = 0

    def check(ok, what):
        nonlocal n, failed
        n += 1
        print(("ok %d - %s" if ok else "not ok %d - %s") % (n, what))
        sys.stdout.flush()
        if not ok:
            failed += 1
        return ok

    acked = {}  # id -> chunks
    # a first full run measures how long an ingest takes, to spread the kills
    t0 = time.time()
    r = subprocess.run(base + [corpus], capture_output=True, text=True)
    full = time.time() - t0
    check(r.returncode == 0, "a full ingest runs (%.2fs)" % full)
    if r.returncode != 0:
        print("# " + r.stderr.replace("\n", "\n# "))
        print("1..%d" % n)
        return 1
    shutil.rmtree(data)

    for rnd in range(rounds):
        last = rnd == rounds - 1
        if rnd > 0 and fresh > 0 and rnd % fresh == 0:
            shutil.rmtree(data, ignore_errors=True)
            acked = {}
        # restart where the last round stopped: documents not acknowledged
        # yet first, then the acknowledged ones again (replacements)
        todo = [d for d in order if d not in acked] + [d for d in order if d in acked]
        with open(corpus, "w") as f:
            for did in todo:
                f.write(json.dumps({"id": did, "text": docs[did],
                                    "metadata": {"i": order.index(did)}}) + "\n")
        p = subprocess.Popen(base + [corpus], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        lines = []

        def reader():
            for line in p.stdout:
                lines.append(line)

        th = threading.Thread(target=reader)
        th.start()
        delay = rng.uniform(0.0, full * 1.1)
        killed = False
        if not last:
            try:
                p.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                killed = True
        p.wait()
        th.join()
        err = p.stderr.read()
        p.stderr.close()
        if not killed and p.returncode != 0:
            check(False, "round %d: retro index failed: %s" % (rnd, err.strip()[-300:]))
            continue
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ack":
                acked[parts[1]] = int(parts[2])
        if not os.path.isdir(data):  # killed before the database was created
            check(not acked, "round %d: killed after %.2fs, before the database existed" %
                  (rnd, delay))
            continue
        # every document, present or not
        g = subprocess.run([retro, "get", "--data", data] + order, capture_output=True, text=True)
        try:
            got = json.loads(g.stdout)
        except ValueError:
            check(False, "round %d: retro get output is not JSON: %s" % (rnd, g.stderr.strip()[-300:]))
            continue
        present = {}
        for did, d in zip(order, got):
            if d is not None:
                present[did] = d
        missing = [i for i in acked if i not in present]
        wrong_chunks = [i for i in acked if i in present and present[i]["n_chunks"] != acked[i]]
        partial = [i for i, d in present.items() if d["text"] != docs[i]]
        # restart: a writable open brings both derived indexes up to date with LMDB
        r = subprocess.run(base + ["-"], input="", capture_output=True, text=True)
        if r.returncode != 0:
            check(False, "round %d: restart failed: %s" % (rnd, r.stderr.strip()[-300:]))
        info = json.loads(subprocess.run([retro, "info", "--data", data], capture_output=True,
                                         text=True).stdout)
        ix = info["index"]
        lx = info.get("lexical", {})
        # self search on a sample of acknowledged one-chunk documents
        single = sorted(i for i, c in acked.items() if c == 1)
        sample = rng.sample(single, min(25, len(single)))
        lost = []
        if sample:
            s = subprocess.run([retro, "search", "--data", data, "-k", "1", "--no-text"] +
                               [docs[i] for i in sample], capture_output=True, text=True)
            try:
                res = json.loads(s.stdout)["batch"]
                lost = [i for i, q in zip(sample, res) if not q["results"] or q["results"][0]["doc_id"] != i]
            except ValueError:
                lost = sample
            # the lexical index: its own file (not a private rebuild), each sampled
            # document among the 5 best of its own text, and no chunk of a document
            # that is not present
            s = subprocess.run([retro, "search", "--data", data, "-k", "5", "--no-text", "--mode",
                                "lexical"] + [docs[i] for i in sample], capture_output=True, text=True)
            try:
                res = json.loads(s.stdout)["batch"]
                lost += [i for i, q in zip(sample, res) if i not in {h["doc_id"] for h in q["results"]}]
                lost += [h["doc_id"] for q in res for h in q["results"] if h["doc_id"] not in present]
            except ValueError:
                lost += sample
        ok = (not missing and not wrong_chunks and not partial and
              ix["vectors"] + ix["pending"] == info["chunks"] and info["documents"] == len(present) and
              lx.get("chunks") == info["chunks"] and lx.get("private_copy") is False and
              not lost and (not last or len(present) == len(order)))
        check(ok, "round %d: %s after %.2fs: %d acked, %d present, %d chunks, index %d+%d, lexical %s" %
              (rnd, "killed" if killed else "finished", delay, len(acked),
               len(present), info["chunks"], ix["vectors"], ix["pending"], lx.get("chunks")))
        if not ok:
            print("#   missing %s wrong_chunks %s partial %s lost %s lexical %s" %
                  (missing[:5], wrong_chunks[:5], partial[:5], lost[:5], lx))
    print("1..%d" % n)
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("# kept", tmp)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
