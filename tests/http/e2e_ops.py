#!/usr/bin/python3
"""e2e_ops.py - operating a corpus, end to end against the real `retro serve`
(TAP; the Server helper and models of e2e_http.py): unchanged documents
skipped without the encoder (JSON and NDJSON, ?force=true, metadata alone
changing), 507 when the LMDB map limit (--max-map-mb) or the disk (a small
tmpfs in a private mount namespace) runs out, with reads going on, nothing
acknowledged lost and writes working again once there is room; the
connection limits (--max-per-ip, --max-connections, --idle-timeout); a
database on a read-only file system (serve --read-only, search, verify); one
writing process per data folder.

    e2e_ops.py RETRO_BINARY WORK_DIR
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_http as E  # noqa: E402  (reads RETRO, WORK from sys.argv)

ok, diag, Server, doc_text, metric = E.ok, E.diag, E.Server, E.doc_text, E.metric_value


def post(s, docs, ndjson=False, query=""):
    if ndjson:
        body = "".join(E.json.dumps(d) + "\n" for d in docs)
        return s.req("POST", "/v1/documents" + query, body, ctype="application/x-ndjson")
    return s.req("POST", "/v1/documents" + query, {"documents": docs})


def run_unchanged():
    s = Server("ops-unchanged")
    try:
        docs = [{"id": "u%d" % i, "text": doc_text(i, 200), "metadata": {"n": i}} for i in range(6)]
        st, js, _, _ = post(s, docs)
        ok(st == 200 and js["documents"] == 6 and js["unchanged"] == 0, "first upsert stores", js)
        emb0 = metric(s, "retro_ingest_embedded_chunks_total")
        ok(emb0 and emb0 >= js["chunks"], "the encoder ran for every chunk", (emb0, js))
        chunks = {r["id"]: r["chunks"] for r in js["results"]}
        for nd in (False, True):
            st, js, _, _ = post(s, docs, ndjson=nd)
            ok(st == 200 and js["unchanged"] == 6
               and all(r["status"] == "unchanged" and r["chunks"] == chunks[r["id"]] for r in js["results"]),
               "unchanged re-upsert (%s) is acknowledged as unchanged" % ("NDJSON" if nd else "JSON"), js)
            ok(metric(s, "retro_ingest_embedded_chunks_total") == emb0,
               "... without the encoder (%s)" % ("NDJSON" if nd else "JSON"))
        ok(metric(s, "retro_ingest_unchanged_total") == 12, "unchanged documents counted in /metrics")
        # metadata alone: the document is updated in place, not embedded
        docs[0]["metadata"] = {"n": 0, "tag": "new"}
        st, js, _, _ = post(s, docs[:2])
        ok(st == 200 and [r["status"] for r in js["results"]] == ["ok", "unchanged"]
           and js["results"][0]["chunks"] == chunks["u0"],
           "changed metadata alone updates the document", js)
        ok(metric(s, "retro_ingest_embedded_chunks_total") == emb0, "... without the encoder")
        st, js, _, _ = s.req("GET", "/v1/documents/u0")
        ok(st == 200 and js["metadata"] == {"n": 0, "tag": "new"}, "... and the new metadata is served", js)
        st, js, _, _ = s.req("POST", "/v1/search", {"query": doc_text(0, 200), "k": 3,
                                                    "filter": {"tag": "new"}, "mode": "dense"})
        ok(st == 200 and js["results"] and js["results"][0]["doc_id"] == "u0",
           "... and the filter finds it by the new metadata", js)
        emb1 = metric(s, "retro_ingest_embedded_chunks_total")
        for nd in (False, True):
            st, js, _, _ = post(s, docs[2:4], ndjson=nd, query="?force=true")
            ok(st == 200 and all(r["status"] == "ok" for r in js["results"]),
               "?force=true re-embeds unchanged documents (%s)" % ("NDJSON" if nd else "JSON"), js)
        ok(metric(s, "retro_ingest_embedded_chunks_total") == emb1 + 2 * (chunks["u2"] + chunks["u3"]),
           "... through the encoder")
        st, js, _, _ = post(s, docs[:1], query="?force=maybe")
        ok(st == 400 and "force" in js["error"]["message"], "?force=maybe is refused naming it", js)
    finally:
        s.stop()


def fill_until_507(s, prefix, words=400, limit=4000, batch=4):
    """Upserts until a 507; returns (acked ids, the 507 answer)."""
    acked = []
    for i in range(0, limit, batch):
        docs = [{"id": "%s%d" % (prefix, i + j), "text": doc_text(i + j, words)} for j in range(batch)]
        st, js, _, _ = post(s, docs)
        if st == 200:
            acked += [r["id"] for r in js["results"] if r["status"] == "ok"]
            continue
        acked += [r["id"] for r in (js or {}).get("results", []) if r["status"] == "ok"]
        return acked, (st, js)
    return acked, None


def check_after_full(s, acked, what):
    st, js, _, _ = s.req("GET", "/v1/documents/" + acked[0])
    ok(st == 200, "reads go on with the %s full" % what)
    st, js, _, _ = s.req("POST", "/v1/search", {"query": doc_text(0, 400), "k": 1})
    ok(st == 200 and js["results"], "searches go on with the %s full" % what, js)
    ok((metric(s, "retro_storage_full_total") or 0) >= 1, "the refusal is counted in /metrics")


def run_map_limit():
    data = os.path.join(E.WORK, "ops-map")
    s = Server("ops-map", "--max-map-mb", "3")
    try:
        acked, full = fill_until_507(s, "m")
        ok(full is not None and full[0] == 507 and "map" in full[1]["error"]["message"],
           "a full LMDB map answers 507 naming the map (%d documents in)" % len(acked), full)
        check_after_full(s, acked, "map")
        # deleting makes room: a delete may take the map a little past the
        # limit (1 MiB here), the writes after it only the pages it freed
        for cycle in (1, 2):
            half = acked[:len(acked) // 2]
            st, js, _, _ = s.req("POST", "/v1/documents/delete", {"ids": half})
            left = [d for d in half if s.req("GET", "/v1/documents/" + d)[0] == 200]
            st1, _, _, _ = s.req("DELETE", "/v1/documents/" + acked[-1])
            ok(st == 200 and js["deleted"] == len(half) and not left and st1 == 200,
               "full map, cycle %d: deleting %d documents in a batch and one alone succeeds" % (cycle, len(half) + 1),
               (st, js, len(left), st1))
            acked = acked[len(half):-1]
            more, full = fill_until_507(s, "m%d-" % cycle)
            mapped = metric(s, "retro_store_map_bytes")
            ok(more and full and full[0] == 507 and mapped <= (3 << 20) + (1 << 20),
               "cycle %d: the room made takes %d new documents, then 507 again; map %s bytes" % (cycle, len(more), mapped),
               (len(more), full and full[0], mapped))
            acked += more
    finally:
        s.stop()
    s = Server("ops-map", "--max-map-mb", "16", data=data)
    try:
        missing = [d for d in acked if s.req("GET", "/v1/documents/" + d)[0] != 200]
        ok(not missing, "no acknowledged document lost (%d)" % len(acked), missing[:5])
        st, js, _, _ = post(s, [{"id": "after", "text": doc_text(9999, 400)}])
        ok(st == 200 and js["documents"] == 1, "writes succeed again with a larger --max-map-mb", js)
    finally:
        s.stop()


def namespace_retro(name, setup):
    """A script that runs the retro binary in a private mount namespace
    (unshare; as root or through a user namespace) after the shell lines
    setup; its path."""
    wrapper = os.path.join(E.WORK, name + ".sh")
    inner = os.path.join(E.WORK, name + "-inner.sh")
    with open(inner, "w") as f:
        f.write("#!/bin/sh\n%s\nexec '%s' \"$@\"\n" % (setup, E.RETRO))
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec unshare -rm '%s' \"$@\"\n" % inner)
    os.chmod(inner, 0o755)
    os.chmod(wrapper, 0o755)
    return wrapper


def server_through(wrapper, name, *args, data):
    """Server(name, *args) started through wrapper instead of the binary."""
    real = E.RETRO
    E.RETRO = wrapper
    try:
        return Server(name, *args, data=data)
    finally:
        E.RETRO = real


def run_disk_full():
    """A tmpfs of 12 MiB in a private mount namespace (unshare; as root or
    through a user namespace), a filler file taking most of it."""
    mnt = os.path.join(E.WORK, "ops-tmpfs")
    os.makedirs(mnt, exist_ok=True)
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs '%s'" % mnt],
                           capture_output=True)
    if probe.returncode != 0:
        diag("skipping the disk-full test: no private tmpfs (%s)" % probe.stderr.decode().strip())
        return
    # the server runs inside the namespace; its tmpfs is reached from here
    # through /proc/PID/root
    wrapper = namespace_retro("ops-tmpfs", "mount -t tmpfs -o size=12m tmpfs '%s' || exit 1\n"
                              "dd if=/dev/zero of='%s/filler' bs=1M count=7 2>/dev/null" % (mnt, mnt))
    s = server_through(wrapper, "x", data=os.path.join(mnt, "data"))
    try:
        # Server() ran: wrapper RETRO serve ...; the wrapper exec'd the binary
        acked, full = fill_until_507(s, "f", words=600)
        ok(full is not None and full[0] == 507 and "disk" in full[1]["error"]["message"],
           "a full disk answers 507 naming the disk (%d documents in)" % len(acked), full)
        if full is None:
            return
        check_after_full(s, acked, "disk")
        filler = "/proc/%d/root%s/filler" % (s.p.pid, mnt)
        os.unlink(filler)
        time.sleep(0.2)
        text = "zzfreed the disk had room again"  # one chunk: its key is its own text
        st, js, _, _ = post(s, [{"id": "after-free", "text": text}])
        ok(st == 200 and js["documents"] == 1, "writes succeed again once space is freed", js)
        missing = [d for d in acked + ["after-free"] if s.req("GET", "/v1/documents/" + d)[0] != 200]
        ok(not missing, "no acknowledged document lost on the full disk (%d)" % len(acked), missing[:5])
        st, js, _, _ = s.req("POST", "/v1/search", {"query": "zzfreed", "k": 1, "mode": "lexical"})
        ok(st == 200 and js["results"] and js["results"][0]["doc_id"] == "after-free",
           "the document written after the refusal is searchable (lexical)", js)
        st, js, _, _ = s.req("POST", "/v1/search", {"query": text, "k": 1, "mode": "dense"})
        ok(st == 200 and js["results"] and js["results"][0]["doc_id"] == "after-free",
           "... and (dense)", js)
    finally:
        s.stop()


def run_read_only_fs():
    """A database on a read-only file system (a read-only bind mount of its
    folder in a private mount namespace): `retro serve --read-only`, `retro
    search` and `retro verify` read it as it is, writes are refused, and
    `retro serve` without --read-only stops naming the file system."""
    data = os.path.join(E.WORK, "ops-ro")
    s = Server("ops-ro")
    try:
        texts = ["walrus kelp tide pool", "volcano basalt ash plume", "violin sonata bow rosin",
                 "comet orbit tail dust"]  # one chunk each: its key is its own text
        docs = [{"id": "ro%d" % i, "text": t} for i, t in enumerate(texts)]
        st, js, _, _ = post(s, docs)
        ok(st == 200 and js["documents"] == 4, "a database to make read-only", js)
    finally:
        s.stop()
    wrapper = namespace_retro("ops-ro", "mount --bind '%s' '%s' && mount -o remount,bind,ro '%s' || exit 1"
                              % (data, data, data))
    probe = subprocess.run([wrapper, "--help"], capture_output=True)
    if probe.returncode != 0:
        diag("skipping the read-only file system test: no private mount (%s)" % probe.stderr.decode().strip())
        return
    before = sorted(os.listdir(data))
    s = server_through(wrapper, "ops-ro", "--read-only", data=data)
    try:
        st, info, _, _ = s.req("GET", "/v1/info")
        ok(st == 200 and info["read_only"] and info["documents"] == 4 and not info["lexical"]["private_copy"],
           "serve --read-only on a read-only file system: the database and its lexical file as they are", info)
        for mode in ("dense", "lexical", "hybrid"):
            st, js, _, _ = s.req("POST", "/v1/search", {"query": texts[2], "k": 1, "mode": mode})
            ok(st == 200 and js["results"] and js["results"][0]["doc_id"] == "ro2",
               "... search finds a document (%s)" % mode, js)
        st, js, _, _ = post(s, [{"id": "new", "text": "x"}])
        ok(st == 403 and "read-only" in js["error"]["message"], "... a write is refused", js)
        st, js, _, _ = s.req("PATCH", "/v1/documents/ro2", {"metadata": {"x": 1}})
        ok(st == 403 and "read-only" in js["error"]["message"], "... so is a metadata patch", js)
    finally:
        s.stop()
    cli = subprocess.run([wrapper, "verify", "--data", data], capture_output=True, text=True, timeout=120)
    ok(cli.returncode == 0, "retro verify reads a database on a read-only file system", cli.stderr[-300:])
    cli = subprocess.run([wrapper, "search", "--data", data, "-k", "1", texts[1]],
                         capture_output=True, text=True, timeout=120)
    ok(cli.returncode == 0 and '"ro1"' in cli.stdout, "retro search too", cli.stderr[-300:])
    cli = subprocess.run([wrapper, "serve", "--data", data, "--port", "0"], capture_output=True, text=True,
                         timeout=120)
    ok(cli.returncode != 0 and "Read-only file system" in cli.stderr and "--read-only serves it" in cli.stderr,
       "retro serve without --read-only stops, naming the file system and --read-only", cli.stderr[-300:])
    ok(sorted(os.listdir(data)) == before, "nothing was written there", (before, os.listdir(data)))


def run_one_writer():
    """One writing process per data folder: beside a running server, `retro
    index`, `retro delete` and a second `retro serve` stop naming the
    server's pid, while readers (`retro search`) go on; once the server is
    gone (stopped, or killed: the lock goes with the process) they write."""
    data = os.path.join(E.WORK, "ops-lock")
    src = os.path.join(E.WORK, "ops-lock-src")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "late.txt"), "w") as f:
        f.write("pelican beak harbour")
    models = ["--encoder", os.path.join(E.MODELS, "encoder"), "--decoder", os.path.join(E.MODELS, "decoder")]

    def cli(*args):
        return subprocess.run([E.RETRO, *args], capture_output=True, text=True, timeout=120)

    for how in ("stop", "kill"):
        s = Server("ops-lock")
        try:
            st, js, _, _ = post(s, [{"id": "first", "text": "walrus kelp tide pool"}])
            ok(st == 200, "a server writing its folder", js)
            pid = "pid %d" % s.p.pid
            for args in (["index", "--data", data, *models, src], ["delete", "--data", data, "first"]):
                p = cli(*args)
                ok(p.returncode == 1 and "in use by another process" in p.stderr and pid in p.stderr,
                   "retro %s beside it stops, naming the server's pid" % args[0], p.stderr[-300:])
            p = cli("serve", "--data", data, *models, "--port", "0")
            ok(p.returncode != 0 and "in use by another process" in p.stderr, "so does a second retro serve",
               p.stderr[-300:])
            p = cli("search", "--data", data, *models, "-k", "1", "walrus kelp tide pool")
            ok(p.returncode == 0 and '"first"' in p.stdout, "retro search reads beside it", p.stderr[-300:])
            ok(s.req("GET", "/v1/documents/first")[0] == 200, "the server goes on", s.log[-3:])
        finally:
            s.stop(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        p = cli("index", "--data", data, *models, src)
        ok(p.returncode == 0, "retro index writes once the server is gone (%s)" % how, p.stderr[-300:])


HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"  # keep-alive: the connection stays open


def hold_connection(port):
    """A connection that has been answered once and stays open (keep-alive)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(HEALTH)
    return c, c.recv(4096).startswith(b"HTTP/1.1 200")


def hold_connections(port, n):
    """n held connections, each answered. A connection the client has closed
    (the readiness check's) still counts until the server's thread sees the
    close, which a loaded machine can delay: a reset then is retried for a
    while, and the limit itself is checked once n are held."""
    for _ in range(40):
        held = []
        try:
            while len(held) < n:
                held.append(hold_connection(port))
            if all(answered for _, answered in held):
                return held
        except OSError:
            pass
        for c, _ in held:
            c.close()
        time.sleep(0.25)
    return [hold_connection(port) for _ in range(n)]


def refused(port):
    """True when a new connection is closed without an answer."""
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(HEALTH)
        got = c.recv(4096)
        c.close()
        return got == b""
    except OSError:  # reset
        return True


def run_connection_limits():
    """--max-per-ip and --max-connections: a connection past either is closed
    at once (libmicrohttpd's way; a warning in the log), the open ones are
    served, and a freed place is taken again."""
    for flag in ("--max-per-ip", "--max-connections"):
        s = Server("ops-conn", flag, "3")
        held = []
        try:
            held = hold_connections(s.port, 3)
            ok(all(answered for _, answered in held), "%s 3: three connections served" % flag)
            ok(refused(s.port), "%s 3: a fourth is closed without an answer" % flag)
            held[0][0].sendall(HEALTH)
            ok(held[0][0].recv(4096).startswith(b"HTTP/1.1 200"), "%s 3: the open ones are still served" % flag)
            held.pop(0)[0].close()
            time.sleep(0.3)
            c, answered = hold_connection(s.port)
            ok(answered, "%s 3: a closed connection's place is taken again" % flag)
            c.close()
        finally:
            for c, _ in held:
                c.close()
            s.stop()
        shutil.rmtree(os.path.join(E.WORK, "ops-conn"), ignore_errors=True)


def run_idle_timeout():
    """--idle-timeout 1: a keep-alive connection left idle is closed by the
    server; one in use is not."""
    s = Server("ops-idle", "--idle-timeout", "1")
    try:
        idle, answered = hold_connection(s.port)
        busy, _ = hold_connection(s.port)
        for _ in range(6):  # 1.8 s of requests, never 1 s apart
            time.sleep(0.3)
            busy.sendall(HEALTH)
            served = busy.recv(4096).startswith(b"HTTP/1.1 200")
        idle.settimeout(5)
        try:
            closed = idle.recv(4096) == b""
        except TimeoutError:  # still open after 5 s
            closed = False
        except OSError:  # reset
            closed = True
        ok(answered and closed, "--idle-timeout 1: an idle connection is closed")
        ok(served, "... and one in use is not")
        idle.close()
        busy.close()
    finally:
        s.stop()
    shutil.rmtree(os.path.join(E.WORK, "ops-idle"), ignore_errors=True)


def run_repairs():
    """Damaged derived indexes at a start: index.faiss deleted and
    lexical.sqlite overwritten with other bytes. The server rebuilds both
    from the store, says so in its log, and finds every document in each
    mode; a clean restart after that says nothing; a read-only server over a
    damaged lexical.sqlite says it built a private copy."""
    s = Server("ops-repair")
    docs = [{"id": "r%d" % i, "text": "marker%d %s" % (i, doc_text(300 + i, 8))} for i in range(8)]
    try:
        st, js, _, _ = post(s, docs)
        ok(st == 200 and js["errors"] == 0 and js["chunks"] == 8, "repairs: documents stored, a chunk each", js)
    finally:
        s.stop()
    data = os.path.join(E.WORK, "ops-repair")
    os.remove(os.path.join(data, "index.faiss"))
    with open(os.path.join(data, "lexical.sqlite"), "wb") as f:
        f.write(b"not a database " * 4096)
    s = Server("ops-repair")
    try:
        ok(s.logged(lambda l: "level=warn" in l and "index.faiss was missing" in l and "(8 vectors)" in l)
           and s.logged(lambda l: "level=warn" in l and "lexical.sqlite was unreadable" in l and "(8 chunks)" in l),
           "a deleted index.faiss and a damaged lexical.sqlite: rebuilt at the start, and logged", s.log[-6:])
        for mode in ("dense", "lexical", "hybrid"):
            found = [s.req("POST", "/v1/search", {"query": d["text"], "k": 1, "mode": mode, "with_text": False})
                     for d in docs]
            ok(all(st == 200 and js["results"][0]["doc_id"] == d["id"] for (st, js, _, _), d in zip(found, docs)),
               "... and every document is its own nearest, %s" % mode)
    finally:
        s.stop()
    s = Server("ops-repair")
    try:
        ok(s.logged(lambda l: 'msg="ready"' in l) and not [l for l in s.log if "level=warn" in l],
           "a clean restart after that logs no repair", s.log[-6:])
    finally:
        s.stop()
    with open(os.path.join(data, "lexical.sqlite"), "wb") as f:
        f.write(b"not a database " * 4096)
    s = Server("ops-repair", "--read-only")
    try:
        st, js, _, _ = s.req("POST", "/v1/search", {"query": docs[3]["text"], "k": 1, "mode": "lexical"})
        ok(s.logged(lambda l: "level=warn" in l and "private copy" in l and "(8 chunks)" in l)
           and st == 200 and js["results"][0]["doc_id"] == "r3",
           "read-only over a damaged lexical.sqlite: a private copy, logged, and searched", s.log[-4:])
        refused = [s.req("POST", "/v1/documents/delete", body)[:2] for body in ({"ids": ["r3"]}, {"filter": {"x": 1}})]
        refused.append(s.req("DELETE", "/v1/documents/r3")[:2])
        ok(all(st == 403 and "read-only" in js["error"]["message"] for st, js in refused)
           and s.req("GET", "/v1/documents/r3")[0] == 200, "read-only: deletes by id and by filter are refused", refused)
    finally:
        s.stop()
    shutil.rmtree(data, ignore_errors=True)


def main():
    rc = E.ensure_models()
    if rc is not None:
        return rc
    for d in ("ops-unchanged", "ops-map", "ops-tmpfs", "ops-ro", "ops-lock", "ops-repair"):
        shutil.rmtree(os.path.join(E.WORK, d), ignore_errors=True)
    run_unchanged()
    run_map_limit()
    run_disk_full()
    run_connection_limits()
    run_idle_timeout()
    run_read_only_fs()
    run_one_writer()
    run_repairs()
    E.report_conformance(every_operation=False)
    print("1..%d" % E.n_tests)
    return 1 if E.n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
