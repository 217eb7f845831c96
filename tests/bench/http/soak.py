#!/usr/bin/python3
"""soak.py - mixed traffic against a running `retro serve` for a while:
NDJSON ingest (upserts over a bounded id space), deletes, search by text and
by vector, embeddings, document/chunk reads, completions (whole and
streamed) and /metrics, from several threads. Samples the server's anonymous
RSS (RssAnon: LMDB's file pages excluded) every 10 s. Fails (exit 1) on any
5xx or when anonymous memory in the last quarter exceeds the second quarter
by more than 25 % + 8 MiB.

    soak.py PORT SERVER_PID SECONDS [--no-generate]
"""
import http.client
import json
import random
import sys
import threading
import time
from collections import Counter

PORT, PID, SECONDS = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
GENERATE = "--no-generate" not in sys.argv
WORDS = "alpha beta gamma delta retrieval chunk vector index search query model token server".split()
codes = Counter()
lock = threading.Lock()
stop = threading.Event()


def rss_anon_kb():
    with open("/proc/%d/status" % PID) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return -1


def req(c, method, path, body=None, ctype="application/json"):
    h = {"Content-Type": ctype} if body is not None else {}
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    with lock:
        codes[r.status] += 1
    return r.status, data


def text(r, n=40):
    return " ".join(r.choice(WORDS) for _ in range(n))


def worker(seed):
    r = random.Random(seed)
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    vec = None
    while not stop.is_set():
        try:
            op = r.random()
            if op < 0.15:
                body = "".join(json.dumps({"id": "s%d" % r.randrange(2000), "text": text(r, 80)}) + "\n"
                               for _ in range(20))
                req(c, "POST", "/v1/documents", body, "application/x-ndjson")
            elif op < 0.20:
                req(c, "DELETE", "/v1/documents/s%d" % r.randrange(2000))
            elif op < 0.40:
                req(c, "POST", "/v1/search", json.dumps({"query": text(r, 8), "k": 5}))
            elif op < 0.60:
                if vec is None:
                    st, d = req(c, "POST", "/v1/embeddings", json.dumps({"input": text(r, 8)}))
                    if st == 200:
                        vec = json.loads(d)["data"][0]["embedding"]
                else:
                    req(c, "POST", "/v1/search", json.dumps({"vector": vec, "k": 10}))
            elif op < 0.70:
                req(c, "GET", "/v1/documents/s%d" % r.randrange(2000))
            elif op < 0.75:
                req(c, "GET", "/v1/chunks/%d" % r.randrange(1, 5000))
            elif op < 0.80:
                req(c, "GET", "/metrics")
            elif op < 0.88 and GENERATE:
                req(c, "POST", "/v1/completions", json.dumps(
                    {"prompt": text(r, 30), "max_tokens": 32, "stream": r.random() < 0.5}))
            else:
                req(c, "POST", "/v1/search", json.dumps({"query": "x", "k": 0}))  # a 422
        except (OSError, http.client.HTTPException) as e:
            with lock:
                codes["conn-error " + type(e).__name__] += 1
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)


def main():
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    samples = []
    t0 = time.time()
    while time.time() - t0 < SECONDS:
        time.sleep(min(10, SECONDS / 8))
        samples.append((time.time() - t0, rss_anon_kb()))
        with lock:
            print("t=%5.0fs RssAnon=%d KiB %s" % (samples[-1][0], samples[-1][1], dict(codes)), flush=True)
    stop.set()
    for t in threads:
        t.join()
    q = max(1, len(samples) // 4)
    second = max(s for _, s in samples[q:2 * q]) if len(samples) >= 4 else samples[0][1]
    last = max(s for _, s in samples[-q:])
    five = sum(n for k, n in codes.items() if isinstance(k, int) and k >= 500)
    errs = sum(n for k, n in codes.items() if not isinstance(k, int))
    grew = last > second * 1.25 + 8192
    print("soak: %.0f s, %d requests, status counts %s; 5xx: %d; connection errors: %d; "
          "RssAnon 2nd quarter max %d KiB, last quarter max %d KiB%s"
          % (SECONDS, sum(codes.values()), dict(codes), five, errs, second, last,
             " (GREW)" if grew else ""))
    return 1 if five or errs or grew else 0


if __name__ == "__main__":
    sys.exit(main())
