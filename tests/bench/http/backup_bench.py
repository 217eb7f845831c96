#!/usr/bin/python3
"""backup_bench.py - POST /v1/admin/backup of a corpus while `retro serve`
answers searches: the backup's time and size, and search latency (p50, p99)
before and during it.

    backup_bench.py RETRO DATA_DIR [--clients N] [--seconds S]

DATA_DIR is used by the server as it is (give it a copy); backups go to a
temporary directory that is removed at the end.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

QUERIES = ["How do I open a file for appending?", "os.path.join", "TypeError: unhashable type",
           "list comprehension", "asyncio event loop", "context manager with statement"]


def main():
    retro, data = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    clients = int(args[args.index("--clients") + 1]) if "--clients" in args else 2
    seconds = float(args[args.index("--seconds") + 1]) if "--seconds" in args else 5
    bdir = tempfile.mkdtemp(prefix="retro-backup-bench-")
    p = subprocess.Popen([retro, "serve", "--data", data, "--port", "0", "--backup-dir", bdir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = None
    for line in p.stderr:
        m = re.search(rb"listening on [^ ]*:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()

    def req(method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        d = r.read()
        c.close()
        return r.status, d

    while req("GET", "/ready")[0] != 200:
        time.sleep(0.2)
    lat, lock, phase = {"before": [], "during": []}, threading.Lock(), ["before"]
    stop = threading.Event()

    def client(i):
        n = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            req("POST", "/v1/search", {"query": QUERIES[(i + n) % len(QUERIES)], "k": 10})
            dt = time.perf_counter() - t0
            with lock:
                if phase[0] in lat:
                    lat[phase[0]].append(dt)
            n += 1

    ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    time.sleep(seconds)
    with lock:
        phase[0] = "during"
    t0 = time.time()
    st, body = req("POST", "/v1/admin/backup", {})
    took = time.time() - t0
    with lock:
        phase[0] = "after"
    stop.set()
    for t in ts:
        t.join()
    p.terminate()
    p.wait()
    js = json.loads(body)
    size = sum(f["bytes"] for f in js["manifest"]["files"]) if st == 200 else 0

    def pct(xs, q):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")

    print("backup: status %d, %.2f s, %.1f MB (%s documents, %s chunks); LMDB copy %.2f s"
          % (st, took, size / 1e6, js["manifest"]["documents"], js["manifest"]["chunks"],
             js["manifest"]["copy_seconds"]))
    for ph in ("before", "during"):
        print("search by text, %d clients, %s: %d requests, p50 %.2f ms, p99 %.2f ms"
              % (clients, ph, len(lat[ph]), pct(lat[ph], 0.5), pct(lat[ph], 0.99)))
    shutil.rmtree(bdir, ignore_errors=True)


if __name__ == "__main__":
    main()
