#!/usr/bin/python3
"""e2e_client.py - the Python client (clients/python/retrod.py) against a real
`retro serve` with an API key (TAP; the Server helper and models of
e2e_http.py): every method once, its answers checked against what the
server holds, and errors raised as RetrodError with the server's status,
code and message.

    e2e_client.py RETRO_BINARY WORK_DIR
"""
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))
import e2e_http as E  # noqa: E402
import retrod  # noqa: E402
from retrod import Client, RetrodError  # noqa: E402

ok = E.ok


def raises(fn, status, part):
    """The RetrodError fn raises, if its status and message are as said."""
    try:
        fn()
    except RetrodError as e:
        return e if e.status == status and part in e.message else None
    return None


def value_error(fn):
    """The message of the ValueError fn raises, None when it raises none."""
    try:
        fn()
    except ValueError as e:
        return str(e)
    return None


def run():
    work = E.WORK
    for d in ("client", "client-bk"):
        shutil.rmtree(os.path.join(work, d), ignore_errors=True)
    s = E.Server("client", "--api-key", "rw-key", "--read-key", "ro-key", "--backup-dir",
                 os.path.join(work, "client-bk"))
    try:
        url = "http://127.0.0.1:%d" % s.port
        c, ro = Client(url, api_key="rw-key"), Client(url, api_key="ro-key")
        ok(c.health() and c.ready() and c.info()["documents"] == 0, "health, ready and info")
        docs = [{"id": "cl/%d" % i, "text": E.doc_text(700 + i), "metadata": {"n": i, "lang": "en" if i % 2 else "de"}}
                for i in range(6)]
        js = c.upsert(docs[:4])
        ok(js["documents"] == 4 and js["errors"] == 0 and all(r["status"] == "ok" for r in js["results"]),
           "upsert: four documents", js)
        js = c.upsert_stream(iter(docs[3:]))
        ok(js["documents"] == 3 and [r["status"] for r in js["results"]] == ["unchanged", "ok", "ok"],
           "upsert_stream: NDJSON from an iterator, chunked (one unchanged)", js)
        d = c.get("cl/2")
        ok(d["text"] == docs[2]["text"] and d["metadata"] == docs[2]["metadata"], "get", d)
        many = c.get_many(["cl/3", "cl/x", "cl/2"])
        ok([x["id"] for x in many["documents"]] == ["cl/3", "cl/2"] and many["documents"][1] == d
           and many["not_found"] == ["cl/x"], "get_many: in the order asked, with not_found", many["not_found"])
        ok("text" not in c.get_many(["cl/2"], with_text=False)["documents"][0], "get_many without texts")
        hits = c.search(docs[2]["text"], k=3, mode="dense")
        ok(hits[0]["doc_id"] == "cl/2", "search by text", [h["doc_id"] for h in hits])
        hits = c.search(docs[2]["text"], k=10, filter={"n": {"$gte": 4}}, with_text=False)
        ok(hits and {h["doc_id"] for h in hits} <= {"cl/4", "cl/5"}, "search with a filter",
           [h["doc_id"] for h in hits])
        vec = c.embed(docs[1]["text"])
        ok(len(vec) == c.info()["encoder"]["dim"] and c.search(vector=vec, k=1)[0]["doc_id"] == "cl/1",
           "embed, then search by the vector", len(vec))
        cid = c.get("cl/1")["chunk_ids"][0]
        like = c.search(chunk_id=cid, k=3, with_text=False)
        ok(like and cid not in [h["chunk_id"] for h in like], "search by a stored chunk", like)
        plain = c.search(docs[2]["text"], k=8, mode="lexical", with_text=True)
        rel = c.rerank(docs[2]["text"], [h["text"] for h in plain], top_n=3)
        hits = c.search(docs[2]["text"], k=3, mode="lexical", rerank=8, with_text=False)
        ok(len(rel) == 3 and [h["chunk_id"] for h in hits] == [plain[r["index"]]["chunk_id"] for r in rel]
           and all(0 < r["relevance_score"] < 1 for r in rel),
           "rerank: the relevances /v1/rerank gives order a search's rerank", (rel, hits))
        groups = c.search(docs[0]["text"], k=2, group_by="document", group_size=1)
        ok(len(groups) == 2 and all("hits" in g for g in groups), "search grouped by document", groups)
        batch = c.search_batch([docs[0]["text"], docs[5]["text"]], k=1, mode="dense")
        ok([b[0]["doc_id"] for b in batch] == ["cl/0", "cl/5"], "search_batch", batch)
        now = c.patch_metadata("cl/2", {"lang": None, "reviewed": True})
        ok(now["metadata"] == {"n": 2, "reviewed": True} and "text" not in now, "patch_metadata", now)
        ok(c.update_many(["cl/0", "cl/x"], {"batch": 1}) == {"updated": 1, "not_found": ["cl/x"]} and
           c.get("cl/0")["metadata"]["batch"] == 1, "update_many")
        ok(c.update_where({"n": {"$gte": 4}}, {"late": True})["updated"] == 2 and
           [x["id"] for x in c.documents(filter={"late": True})] == ["cl/4", "cl/5"], "update_where")
        listed = list(c.documents(filter={"lang": "de"}, page_size=1))
        ok([x["id"] for x in listed] == ["cl/0", "cl/4"], "documents: every page of a filtered listing",
           [x["id"] for x in listed])
        ok(len(list(c.documents())) == 6, "documents: all of them")
        texts = list(c.documents(with_text=True, page_size=4))
        ok([x["text"] for x in texts] == [c.get(x["id"])["text"] for x in texts], "documents with_text", len(texts))
        out = io.StringIO()
        cli = subprocess.run([E.RETRO, "export", "--data", s.data], capture_output=True, timeout=60)
        ok(c.export(out) == 6 and cli.returncode == 0 and
           [json.loads(x) for x in out.getvalue().splitlines()] == [json.loads(x) for x in cli.stdout.splitlines()],
           "export: the same JSON lines as `retro export` on the server's data", cli.stderr[-300:])
        out = c.complete("The with statement", max_tokens=8, temperature=0)
        ok(out["choices"][0]["text"] and "chunks" in out["retro"], "complete, with the retro attribution",
           out["choices"][0])
        events = list(c.stream("The with statement", max_tokens=8, temperature=0))
        ok("".join(e["choices"][0]["text"] for e in events) == out["choices"][0]["text"] and
           "usage" in events[-1], "stream: the same text, event by event, usage last", len(events))
        bk = c.backup()
        ok(os.path.isfile(os.path.join(bk["path"], "manifest.json")) and bk["manifest"]["documents"] == 6,
           "backup: its directory and manifest", bk)
        ok(c.delete("cl/5")["deleted"] is True, "delete")
        ok(c.delete_many(["cl/4", "cl/none"]) == {"deleted": 1, "not_found": ["cl/none"]}, "delete_many")
        ok(c.delete_where({"lang": "en"})["deleted"] == 2, "delete_where (cl/1, cl/3)")
        ok(sorted(x["id"] for x in c.documents()) == ["cl/0", "cl/2"], "what is left")
        named = ["get", "delete", "update"]  # the names of routes under /v1/documents/
        c.upsert([{"id": i, "text": "the document named " + i} for i in named])
        got = [c.get(i) for i in named]
        patched = [c.patch_metadata(i, {"named": i}) for i in named]
        gone = [c.delete(i) for i in named]
        ok([d["text"] for d in got] == ["the document named " + i for i in named] and
           [d["metadata"] for d in patched] == [{"named": i} for i in named] and
           all(r["deleted"] is True for r in gone), "get, patch_metadata and delete of documents named get, delete "
           "and update", (got, patched, gone))
        # errors: the server's status, code and message
        e = raises(lambda: c.get("cl/none"), 404, "cl/none")
        ok(e is not None and e.code and e.request_id, "a missing document: RetrodError 404 with code and request id",
           vars(e) if e else None)
        ok(raises(lambda: c.search(vector=[1.0, 2.0]), 422, "dimensional") is not None, "a wrong dimension: 422")
        ok(raises(lambda: ro.upsert(docs[:1]), 403, "read-only key") is not None, "the read-only key cannot write")
        ok(raises(lambda: Client(url).info(), 401, "API key") is not None, "no key: 401")
        ok(raises(lambda: c.search("x", filter={"n": {"$gt": True}}), 400, "filter.n.$gt") is not None,
           "a bad filter: 400 naming it")
        bad = value_error(lambda: c.search("x", vector=[1.0]))
        ok(bad and "exactly one" in bad, "search with two things to search by: ValueError, nothing sent", bad)
    finally:
        s.stop()


class ConnectionCount:
    """Counts the TCP connections http.client opens meanwhile."""

    def __enter__(self):
        self.n, self.real = 0, socket.create_connection

        def counted(*args, **kwargs):
            self.n += 1
            return self.real(*args, **kwargs)
        socket.create_connection = counted
        return self

    def __exit__(self, *exc):
        socket.create_connection = self.real


def run_kept_connections():
    """Each thread's calls share one connection: answers, errors, a stream
    read to its end and a listing of pages; the server closing it while
    idle, a stream left early and threads each get their own."""
    s = E.Server("client-conn", "--idle-timeout", "1")
    try:
        c = Client("http://127.0.0.1:%d" % s.port)
        with ConnectionCount() as count:
            c.upsert([{"id": "k%d" % i, "text": E.doc_text(800 + i)} for i in range(3)])
            for _ in range(5):
                c.search("end801", k=1, mode="lexical")
            raises(lambda: c.get("missing"), 404, "missing")
            events = list(c.stream("The with statement", max_tokens=4, temperature=0))
            listed = list(c.documents(page_size=1))
            ok(len(events) >= 1 and len(listed) == 3 and c.info()["documents"] == 3 and count.n == 1,
               "ten calls, an error answer and a stream on one kept connection", count.n)
            time.sleep(1.6)  # past --idle-timeout: the server closes it
            ok(c.health() and count.n == 2, "a connection the server closed while idle is replaced", count.n)
            time.sleep(1.6)  # and again, now as if it closed just as the request goes out:
            looked = retrod.select.select  # the look before use sees nothing
            retrod.select.select = lambda r, w, x, t: ([], [], [])
            try:
                ok(c.info()["documents"] == 3 and count.n == 3,
                   "... and when the request meets the closed connection, it is sent once more anew", count.n)
            finally:
                retrod.select.select = looked
            for _ in c.stream("The with statement", max_tokens=64, temperature=0):
                break  # left early: its connection cannot be kept
            ok(c.get("k1")["id"] == "k1" and count.n == 4, "... and one a stream left early", count.n)
            answers = []

            def work():
                answers.extend(c.search("end%d" % (800 + i), k=1, mode="lexical")[0]["doc_id"] for i in range(3))
            threads = [threading.Thread(target=work) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ok(sorted(answers) == ["k0", "k0", "k1", "k1", "k2", "k2"] and count.n == 6,
               "two threads, a connection each", (answers, count.n))
            c.close()
            ok(c.health() and count.n == 7, "close() closes this thread's; the next call opens one", count.n)
        refused = value_error(lambda: Client("ftp://127.0.0.1/"))
        ok(refused and "http://" in refused, "a URL that is not http(s) is refused", refused)
    finally:
        s.stop()


def main():
    rc = E.ensure_models()
    if rc is not None:
        return rc
    run()
    run_kept_connections()
    print("1..%d" % E.n_tests)
    return 1 if E.n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
