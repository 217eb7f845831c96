"""rerank_mine.py - the candidates a reranker will be asked to order: for
each query -> passage pair of qp_mine.py, the chunks a real `retro serve`
returns for the query (hybrid search, the server's default), less the
chunks of the passage's own document (they may answer it too).

A reranker sees the hybrid's best chunks, so those are its hard negatives:
chunks that share the query's words or sit near it in the encoder's space
and still come from another document. BM25 negatives alone (qp_mine.py's)
teach it only half of that.

  /usr/bin/python3 model/train/rerank_mine.py --data DB --dump DUMP \
      --mined QP_MINE_OUT --out OUT [--retro BIN] [-k 30]
writes OUT/train.jsonl and OUT/val.jsonl, line i for line i of pairs.jsonl
and val.jsonl: {"cands": [dump rows, the server's order]}.
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def request(conn, method, path, body=None):
    conn.request(method, path, json.dumps(body) if body is not None else None,
                 {"content-type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"null")


def start_server(retro, data, port):
    srv = subprocess.Popen([retro, "serve", "--data", data, "--port", str(port), "--log", "/dev/null"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(600):
        try:
            if request(http.client.HTTPConnection("127.0.0.1", port, timeout=5), "GET", "/ready")[0] == 200:
                return srv
        except OSError:
            pass
        time.sleep(0.1)
    srv.terminate()
    sys.exit("rerank_mine.py: the server did not become ready")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the database the dump was made from")
    ap.add_argument("--dump", required=True, help="`retro neighbours --out` folder of that database")
    ap.add_argument("--mined", required=True, help="qp_mine.py output folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--retro", default=os.path.join(HERE, "..", "..", "build-release", "server", "retro"))
    ap.add_argument("-k", type=int, default=30)
    a = ap.parse_args()
    row_of_chunk = {int(c): r for r, c in enumerate(np.load(os.path.join(a.dump, "chunk_ids.npy")))}
    port = free_port()
    srv = start_server(a.retro, a.data, port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    os.makedirs(a.out, exist_ok=True)
    try:
        for src, dst in (("pairs.jsonl", "train.jsonl"), ("val.jsonl", "val.jsonl")):
            n = 0
            with open(os.path.join(a.mined, src)) as fin, open(os.path.join(a.out, dst), "w") as fout:
                for line in fin:
                    p = json.loads(line)
                    st, js = request(conn, "POST", "/v1/search", {"query": p["q"], "k": a.k, "with_text": False})
                    if st != 200:
                        sys.exit("rerank_mine.py: search failed: %s %s" % (st, js))
                    cands = [row_of_chunk[h["chunk_id"]] for h in js["results"]
                             if h["doc_id"] != p["doc"] and h["chunk_id"] in row_of_chunk]
                    fout.write(json.dumps({"cands": cands}) + "\n")
                    n += 1
            print("%s: %d queries" % (dst, n), flush=True)
    finally:
        srv.terminate()
        srv.wait(timeout=60)


if __name__ == "__main__":
    main()
