#!/usr/bin/python3
"""e2e_backup.py - backups that restore (TAP; the Server helper and models of
e2e_http.py): POST /v1/admin/backup while clients ingest (JSON and NDJSON)
and search, then `retro restore` into a fresh directory: every document
acknowledged before the backup began is there and is its own nearest
neighbour (dense and lexical), counts agree with the manifest, the restored
server serves and verifies clean. A truncated, a tampered and a mismatched
backup are refused naming the problem; `retro verify` finds a deleted
index file, a stale index watermark, a missing vector, a vector changed in
place, and a byte changed in a chunk's text or a document's metadata.

    e2e_backup.py RETRO_BINARY WORK_DIR
"""
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_http as E  # noqa: E402

ok, diag, Server = E.ok, E.diag, E.Server

VOCAB = ["w%03d" % i for i in range(400)]


def text_of(doc_id):
    """One chunk of words no other document shares in that order."""
    r = random.Random(doc_id)
    return "%s %s" % (doc_id.replace("-", ""), " ".join(r.choice(VOCAB) for _ in range(6)))


def retro(*args):
    p = subprocess.run([E.RETRO] + list(args), capture_output=True, timeout=300)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def self_nearest(s, ids):
    """Ids that are not their own nearest neighbour (dense) or not found by
    their first word (lexical)."""
    bad = []
    for d in ids:
        t = text_of(d)
        st, js, _, _ = s.req("POST", "/v1/search", {"query": t, "k": 3, "mode": "dense"})
        hits = js["results"] if st == 200 else []
        if not hits or not any(h["doc_id"] == d and h["score"] >= hits[0]["score"] - 1e-5 for h in hits):
            bad.append(("dense", d))
        st, js, _, _ = s.req("POST", "/v1/search", {"query": t.split()[0], "k": 1, "mode": "lexical"})
        if st != 200 or not js["results"] or js["results"][0]["doc_id"] != d:
            bad.append(("lexical", d))
    return bad


def run():
    work = E.WORK
    bdir = os.path.join(work, "bk")
    for d in ("bk", "bk-src", "bk-restored", "bk-bad", "bk-r2"):
        shutil.rmtree(os.path.join(work, d), ignore_errors=True)
    s = Server("bk-src", "--backup-dir", bdir)
    acked = {}  # id -> time its acknowledgement arrived
    lock = threading.Lock()
    stop = threading.Event()

    def client(ci, ndjson):
        i = 0
        while not stop.is_set():
            docs = [{"id": "c%d-%d" % (ci, i + j), "text": text_of("c%d-%d" % (ci, i + j))} for j in range(5)]
            i += 5
            if ndjson:
                body = "".join(json.dumps(d) + "\n" for d in docs)
                st, js, _, _ = s.req("POST", "/v1/documents", body, ctype="application/x-ndjson")
            else:
                st, js, _, _ = s.req("POST", "/v1/documents", {"documents": docs})
            now = time.time()
            if st == 200:
                with lock:
                    for r in js["results"]:
                        if r["status"] == "ok":
                            acked[r["id"]] = now

    def searcher():
        while not stop.is_set():
            s.req("POST", "/v1/search", {"query": "w001 w002", "k": 5})

    try:
        st, js, _, _ = s.req("POST", "/v1/admin/backup", "not json")
        ok(st == 400, "a backup request with a body other than {} is refused", js)
        ts = [threading.Thread(target=client, args=(0, False)), threading.Thread(target=client, args=(1, True)),
              threading.Thread(target=searcher)]
        for t in ts:
            t.start()
        time.sleep(1.5)
        began = time.time()
        st, js, _, _ = s.req("POST", "/v1/admin/backup", {})
        time.sleep(1.0)
        stop.set()
        for t in ts:
            t.join()
        ok(st == 200 and js["backup"].startswith("backup-") and os.path.isdir(os.path.join(bdir, js["backup"])),
           "POST /v1/admin/backup while ingesting writes a backup under --backup-dir", js)
        if st != 200:
            return
        man = js["manifest"]
        before = sorted(d for d, t in acked.items() if t < began)
        ok(len(before) > 0 and len(acked) > len(before),
           "documents were acknowledged before (%d) and after (%d) the backup began"
           % (len(before), len(acked) - len(before)))
        ok(man["documents"] >= len(before) and man["chunks"] == man["documents"]
           and man["files"][0]["sha256"] and man["encoder"],
           "the manifest has the counts, fingerprints and checksums", man)
        backup = os.path.join(bdir, js["backup"])
    finally:
        s.stop()

    restored = os.path.join(work, "bk-restored")
    rc, out, err = retro("restore", backup, "--data", restored)
    ok(rc == 0 and "indexes built" in err, "retro restore into a fresh directory", err)
    rc, out, err = retro("restore", backup, "--data", restored)
    ok(rc == 1 and "not empty" in err, "restore into a non-empty directory is refused", err)
    r = Server("bk-restored", data=restored)
    try:
        st, info, _, _ = r.req("GET", "/v1/info")
        ok(st == 200 and info["documents"] == man["documents"] and info["chunks"] == man["chunks"],
           "the restored server serves the manifest's counts", (info, man))
        missing = [d for d in before if r.req("GET", "/v1/documents/" + d)[0] != 200]
        ok(not missing, "every document acknowledged before the backup began is restored (%d)" % len(before),
           missing[:10])
        bad = self_nearest(r, before)
        ok(not bad, "... each its own nearest neighbour, dense and lexical", bad[:10])
        st, js, _, _ = r.req("POST", "/v1/documents", {"documents": [{"id": "new", "text": text_of("new")}]})
        ok(st == 200 and js["documents"] == 1, "the restored database takes writes", js)
    finally:
        r.stop()
    rc, out, err = retro("verify", "--data", restored)
    ok(rc == 0 and out.strip() == "ok", "retro verify: the restored database is clean", err)
    rc, out, err = retro("verify", "--data", backup)
    ok(rc == 0 and "matches the manifest" in err, "retro verify: the backup matches its manifest", err)

    # damaged and mismatched backups are refused, naming the problem
    mdb_rel = os.path.join("db", "data.mdb")

    def bad_copy(name):
        d = os.path.join(work, "bk-bad", name)
        shutil.copytree(backup, d)
        return d

    d = bad_copy("trunc")
    with open(os.path.join(d, mdb_rel), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(d, mdb_rel)) // 2)
    rc, _, err = retro("restore", d, "--data", os.path.join(work, "bk-r2"))
    ok(rc == 1 and "truncated" in err and not os.path.exists(os.path.join(work, "bk-r2", "db")),
       "a truncated backup is refused and nothing is left behind", err)
    rc, _, err = retro("verify", "--data", d)
    ok(rc == 1 and "truncated" in err, "retro verify names the truncated file", err)
    d = bad_copy("flip")
    with open(os.path.join(d, mdb_rel), "r+b") as f:
        f.seek(8192 + 100)
        b = f.read(1)
        f.seek(8192 + 100)
        f.write(bytes([b[0] ^ 0x55]))
    rc, _, err = retro("restore", d, "--data", os.path.join(work, "bk-r2"))
    ok(rc == 1 and "SHA-256" in err and "altered" in err, "a tampered backup is refused (checksum)", err)
    d = bad_copy("mismatch")
    mp = os.path.join(d, "manifest.json")
    m = json.load(open(mp))
    m["documents"] += 1
    json.dump(m, open(mp, "w"))
    rc, _, err = retro("restore", d, "--data", os.path.join(work, "bk-r2"))
    ok(rc == 1 and "documents" in err and "mismatch" in err, "a backup whose manifest disagrees is refused", err)
    d = bad_copy("nomanifest")
    os.unlink(os.path.join(d, "manifest.json"))
    rc, _, err = retro("restore", d, "--data", os.path.join(work, "bk-r2"))
    ok(rc == 1 and "manifest.json: missing" in err, "a backup without its manifest is refused", err)

    # retro verify: a deleted index file, a stale watermark, a missing vector
    faiss = os.path.join(restored, "index.faiss")
    old = faiss + ".old"
    shutil.copy(faiss, old)
    r = Server("bk-restored", data=restored)
    try:
        r.req("POST", "/v1/documents", {"documents": [{"id": "x%d" % i, "text": text_of("x%d" % i)} for i in range(5)] + [
            {"id": "tamper-text", "text": text_of("t") + " zqxwvTEXTMARK"},
            {"id": "tamper-meta", "text": text_of("m"), "metadata": {"tag": "zqxwvMETAMARK"}},
            {"id": "tamper-tokens", "text": text_of("k")}]})
        chunk = r.req("GET", "/v1/chunks/%d" % r.req("GET", "/v1/documents/tamper-tokens")[1]["chunk_ids"][0])[1]
    finally:
        r.stop()
    rc, out, err = retro("verify", "--data", restored)
    ok(rc == 0 and "contents: " in err and "documents checked against their content hashes" in err,
       "verify is clean after more writes and a clean stop, contents checked", err)
    # LMDB keeps no checksums: a byte changed in a chunk's text or in a
    # document's metadata is found by the content hash each upsert stored
    mdb = os.path.join(restored, "db", "data.mdb")
    shutil.copy(mdb, mdb + ".good")
    raw = bytearray(open(mdb, "rb").read())
    for mark in (b"zqxwvTEXTMARK", b"zqxwvMETAMARK"):
        at = raw.find(mark)
        while at >= 0:
            raw[at] = ord("Z")
            at = raw.find(mark, at + 1)
    open(mdb, "wb").write(raw)
    rc, _, err = retro("verify", "--data", restored)
    named = re.findall(r'document "([^"]+)": its text or metadata is not what was written', err)
    ok(rc == 1 and sorted(named) == ["tamper-meta", "tamper-text"] and "restore a backup" in err,
       "retro verify finds a byte changed in a chunk's text and one in a document's metadata", err)
    # nor does the content hash cover the token ids the decoder reads: a
    # changed id is found by decoding each chunk's ids against its text
    shutil.copy(mdb + ".good", mdb)
    raw = bytearray(open(mdb, "rb").read())
    toks = chunk["tokens"]
    packed, seen = struct.pack("<%di" % len(toks), *toks), 0
    at = raw.find(packed)
    while at >= 0:  # every copy: a freed page may hold an older one
        raw[at + 4:at + 8] = struct.pack("<i", toks[1] ^ 1)
        seen += 1
        at = raw.find(packed, at + 1)
    open(mdb, "wb").write(raw)
    rc, _, err = retro("verify", "--data", restored)
    ok(seen >= 1 and rc == 1 and "tokens: 1 of" in err and "chunk %d)" % chunk["chunk_id"] in err
       and "its text or metadata is not what was written" not in err,
       "retro verify finds a token id changed in a chunk (its text and hash intact)", err)
    shutil.move(mdb + ".good", mdb)
    rc, _, err = retro("verify", "--data", restored)
    ok(rc == 0 and "chunks' token ids checked against their texts" in err, "verify checks every chunk's tokens", err)
    shutil.copy(old, faiss)
    rc, _, err = retro("verify", "--data", restored)
    ok(rc == 1 and "stale watermark" in err and "the next start rebuilds it" in err,
       "retro verify finds a stale index watermark, and says how to mend it", err)
    os.unlink(faiss)
    rc, _, err = retro("verify", "--data", restored)
    ok(rc == 1 and "index.faiss: missing" in err, "retro verify finds a deleted index file", err)
    try:
        import lmdb
    except ImportError:
        diag("no python3-lmdb: the missing-vector check is skipped")
        return
    env = lmdb.open(os.path.join(restored, "db"), max_dbs=8, map_size=1 << 30)
    vecs = env.open_db(b"vectors")
    with env.begin(write=True) as txn:
        key = next(iter(txn.cursor(db=vecs)))[0]
        txn.delete(key, db=vecs)
    env.close()
    rc, _, err = retro("verify", "--data", restored)
    ok(rc == 1 and "has no vector" in err, "retro verify finds a missing vector", err)
    # a flipped exponent bit takes a vector off the unit sphere
    env = lmdb.open(os.path.join(restored, "db"), max_dbs=8, map_size=1 << 30)
    vecs = env.open_db(b"vectors")
    with env.begin(write=True) as txn:
        key, val = list(txn.cursor(db=vecs))[1]
        val = bytearray(val)
        val[-1] ^= 0x40  # the last float's high exponent bit (little-endian)
        txn.put(key, bytes(val), db=vecs)
    env.close()
    rc, _, err = retro("verify", "--data", restored)
    chunk = int.from_bytes(key, "big") if len(key) == 8 else -1
    ok(rc == 1 and re.search(r"vectors: 1 of \d+ are not of unit length \(the first: chunk %d\)" % chunk, err),
       "retro verify finds a vector changed in place", err)


def main():
    rc = E.ensure_models()
    if rc is not None:
        return rc
    run()
    E.report_conformance(every_operation=False)
    print("1..%d" % E.n_tests)
    return 1 if E.n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
