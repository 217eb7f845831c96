#!/usr/bin/python3
"""ann_scale.py - approximate search at scale (issue 19): recall@10 and
single-query throughput of the candidate indexes for large corpora, against
our exact int8-coded scan (the baseline of the "10x") and hnswlib (the
peer), on N vectors with the geometry of real embeddings. Not run by CI.

  nice -n 10 /usr/bin/python3 tests/bench/index/ann_scale.py DATA_DIR_COPY \\
      [--sizes 200000,1000000] [--hnsw-max 200000] [--hnswlib-max 1000000]
      [--skip flat,ivf,ivfcoded,ivfscan,faiss-hnsw,hnswlib,hnswlib-cpp] [--table-only] [--work /tmp/ann-work]
      [--hnswlib-cache DIR] [--ivf-cache DIR] [--rounds N]

DATA_DIR_COPY: a COPY of a server data directory (its db/ is read with
python3-lmdb without a lock, so it must not be live), e.g.
  cp -r .work/data-blend /tmp/ann-src
The default corpus (44,370 chunks, 256-d, default encoder) is the source.

The vectors. Each generated vector is
  normalize(x_i + s (x_j - x_i) + tau L z)
with x_i a real embedding drawn uniformly, x_j one of its 10 real nearest
neighbours, s ~ U(0, 0.5), z ~ N(0, I) and L L^T the covariance of the real
set (so the noise lies along the directions real embeddings vary in, not
isotropic), tau = 0.35 (chosen so a 10,000-vector sample of generated vectors
has the nearest-neighbour distances of a 10,000-vector sample of real ones;
the script prints both). The base set is the first N generated rows (a
random order, so each smaller size is a random subset of the larger); the
1,000 queries are generated apart the same way. Exact top 10 by inner
product with numpy (BLAS).

The indexes: our exact int8-coded scan (index/flat_scan.c, the server's
Flat); FAISS IVF{n},SQ8 under IndexRefineFlat (k_factor 4: re-ranked from
the floats); IVF{n} with each probed list searched by our coded scan (exact
within the lists: IVF clustering + our codes + float re-rank); FAISS
IVF{n},Flat searched as the server searches it below 20 queries
(index/ivf_scan.c over FAISS's own lists, with the exact coded scan again in
the same job); FAISS HNSW16,Flat; hnswlib M=16, through its Node binding and
as its own C++ built for this CPU (the same graph: with --hnswlib-cache the
one-thread build, most of an hour at 4M, is done once; hnswlib runs up to
--hnswlib-max vectors). n is index/idx.c's automatic nlist (4 sqrt N to a
power of two); k-means on 39 rows per centroid, 10 rounds (the server
trains on up to 64 per centroid, 25 rounds: slower, not better by much).
Each index is built and searched by bench_ann.cpp (FAISS C++, as Debian's
libfaiss 1.7.3 the server links; our flat_scan.c), bench_hnswlib.mjs
(npm hnswlib-node, pinned below, installed into build-bench-index/npm) or
bench_hnswlib.cpp (the hnswlib headers inside that package, -march=native); the
table at the end gives per setting the build time, bytes per vector,
recall@10, queries/s, the ratio to the exact coded scan and to either hnswlib
at the same recall (its q/s interpolated on its efSearch curve).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np

HNSWLIB_PACKAGE = "hnswlib-node@3.0.0"
TAU = 0.35
K = 10
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
HERE = os.path.join(ROOT, "tests", "bench", "index")
BUILD = os.path.join(ROOT, "build-bench-index")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def read_real(data_dir):
    import lmdb

    env = lmdb.open(os.path.join(data_dir, "db"), max_dbs=16, readonly=True, lock=False)
    db = env.open_db(b"vectors", create=False)
    with env.begin() as txn:
        rows = [np.frombuffer(v, dtype="<f4") for _, v in txn.cursor(db)]
    return np.stack(rows)


def top_k(queries, base, k, skip_self=False):
    """Exact top k by inner product: (indices, scores), best first."""
    block = max(1, int(5e7) // len(base))  # score matrices of 200 MB at most
    idx = np.empty((len(queries), k), np.int32)
    val = np.empty((len(queries), k), np.float32)
    for s in range(0, len(queries), block):
        sc = queries[s : s + block] @ base.T
        if skip_self:
            sc[np.arange(len(sc)), np.arange(s, s + len(sc))] = -np.inf
        part = np.argpartition(-sc, k, axis=1)[:, :k]
        pv = np.take_along_axis(sc, part, 1)
        order = np.argsort(-pv, axis=1, kind="stable")
        idx[s : s + block] = np.take_along_axis(part, order, 1)
        val[s : s + block] = np.take_along_axis(pv, order, 1)
    return idx, val


class Generator:
    def __init__(self, real, real_nn):
        self.real, self.nn = real, real_nn
        cov = np.cov((real - real.mean(0)).T)
        w, u = np.linalg.eigh(cov)
        self.noise = (u * np.sqrt(np.maximum(w, 0))).T.astype(np.float32)  # z @ noise ~ N(0, cov)

    def make(self, n, rng):
        i = rng.integers(0, len(self.real), n)
        j = self.nn[i, rng.integers(0, K, n)]
        s = rng.uniform(0, 0.5, n).astype(np.float32)[:, None]
        z = rng.standard_normal((n, self.real.shape[1]), dtype=np.float32)
        v = self.real[i] + s * (self.real[j] - self.real[i]) + TAU * (z @ self.noise)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def nn_distances(x):
    """L2 distances (unit vectors) to the 1st and 10th nearest other row."""
    _, val = top_k(x, x, K, skip_self=True)
    return np.sqrt(np.maximum(0, 2 - 2 * val[:, [0, K - 1]]))


def describe(name, d):
    pct = lambda a: " ".join(f"{v:.3f}" for v in np.percentile(a, [5, 25, 50, 75, 95]))
    print(f"  {name:<34} 1st NN {pct(d[:, 0])} | 10th NN {pct(d[:, 1])}")


def calibration(real, generated, gen_queries, w):
    """IVF recall at the real corpus's size on real vectors (held-out real
    chunks as queries) and on as many generated ones (generated queries):
    the generator should not flatter the index."""
    perm = np.random.default_rng(7).permutation(len(real))
    nq = len(gen_queries)
    sets = {"real": (real[perm[nq:]], real[perm[:nq]]), "generated": (generated, gen_queries)}
    print(f"calibration, IVF{nlist_for(len(generated))} + coded lists at N={len(generated)}:")
    for name, (base, queries) in sets.items():
        files = [w(f"cal-{name}-{x}") for x in ("base.f32", "queries.f32", "gt.i32")]
        base.astype(np.float32).tofile(files[0])
        queries.astype(np.float32).tofile(files[1])
        top_k(queries, base, K)[0].tofile(files[2])
        out = subprocess.run([f"{BUILD}/bench_ann", files[0], str(len(base)), str(base.shape[1]), files[1],
                              str(nq), files[2], "ivfcoded", str(nlist_for(len(base))), "39", "10", "4,8,16,32"],
                             capture_output=True, text=True, check=True).stdout
        rows = [json.loads(l) for l in out.splitlines()]
        recalls = [f"nprobe {r['params'].split('nprobe=')[1].split(' ')[0]}: {r['recall']:.3f}"
                   for r in rows if r["index"] == "ivf-flat-coded"]
        print(f"  {name:<10} recall@10 " + ", ".join(recalls))


def make_data(args):
    """Writes base.f32 (max size rows), queries.f32 and gt-N.i32 into args.work."""
    os.makedirs(args.work, exist_ok=True)
    w = lambda name: os.path.join(args.work, name)
    real = read_real(args.data)
    if os.path.exists(w("real_nn.npy")) and len(np.load(w("real_nn.npy"))) == len(real):
        real_nn = np.load(w("real_nn.npy"))
    else:
        log(f"real set {real.shape}: its 10 nearest neighbours ...")
        real_nn = top_k(real, real, K, skip_self=True)[0]
        np.save(w("real_nn.npy"), real_nn)
    gen = Generator(real, real_nn)
    rng = np.random.default_rng(19)
    print("nearest-neighbour L2 distances, percentiles 5 25 50 75 95 (unit vectors):")
    describe("real, 10,000 sample", nn_distances(real[rng.choice(len(real), 10000, replace=False)]))
    describe("generated, 10,000 sample", nn_distances(gen.make(10000, rng)))
    n_max = max(args.sizes)
    queries = gen.make(args.nq, rng)
    queries.tofile(w("queries.f32"))
    calibration(real, gen.make(len(real) - args.nq, np.random.default_rng(8)), queries, w)
    if not (os.path.exists(w("base.f32")) and os.path.getsize(w("base.f32")) == n_max * 256 * 4):
        log(f"generating {n_max} vectors ...")
        with open(w("base.f32"), "wb") as f:
            for s in range(0, n_max, 100000):
                gen.make(min(100000, n_max - s), rng).tofile(f)
    base = np.memmap(w("base.f32"), dtype=np.float32, mode="r").reshape(n_max, real.shape[1])
    for n in args.sizes:
        t0 = time.time()
        idx, val = top_k(queries, np.asarray(base[:n]), K)
        idx.tofile(w(f"gt-{n}.i32"))
        log(f"exact top {K} at N={n}: {time.time() - t0:.0f} s")
        describe(f"queries -> generated base, N={n}", np.sqrt(np.maximum(0, 2 - 2 * val[:, [0, K - 1]])))
    return real.shape[1]


def build_tools():
    subprocess.run(["meson", "setup", BUILD, ROOT, "--buildtype=release"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", BUILD, "-j1", "index/libindex.a", "proto/libproto.a"], check=True,
                   stdout=subprocess.DEVNULL)
    blas = subprocess.run(["pkg-config", "--libs", "openblas"], capture_output=True, text=True,
                          check=True).stdout.split()
    subprocess.run(["g++", "-std=c++17", "-O2", "-fopenmp", f"-I{ROOT}/index", f"-I{ROOT}/proto",
                    f"{HERE}/bench_ann.cpp", f"{BUILD}/index/libindex.a", f"{BUILD}/proto/libproto.a",
                    "-lfaiss", *blas, "-lm", "-lpthread", "-o", f"{BUILD}/bench_ann"], check=True)
    npm = os.path.join(BUILD, "npm")
    if not os.path.exists(os.path.join(npm, "node_modules", "hnswlib-node")):
        os.makedirs(npm, exist_ok=True)
        # builds the addon with node-gyp against the system's node headers
        subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund", HNSWLIB_PACKAGE],
                       cwd=npm, check=True, env={**os.environ, "npm_config_nodedir": "/usr"})
    # hnswlib's own C++, from the headers inside that package, for this CPU
    subprocess.run(["g++", "-std=c++17", "-O3", "-march=native",
                    f"-I{npm}/node_modules/hnswlib-node/src/hnswlib", f"{HERE}/bench_hnswlib.cpp",
                    "-o", f"{BUILD}/bench_hnswlib"], check=True)
    return npm


def run(cmd, env=None):
    log("$", " ".join(cmd))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    sys.stderr.write(out.stderr)
    if out.returncode:
        log(f"failed ({out.returncode})")
    rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    for r in rows:
        log("  ", json.dumps(r))
    return rows


def nlist_for(n):
    """index/idx.c's automatic nlist: 4 sqrt(n) to a power of two, at most 4096."""
    want, p = 4 * np.sqrt(n), 1
    while p * 2 <= want * 1.41421356 and p * 2 <= 4096:
        p *= 2
    return p


def hnswlib_qps_at(rows, recall):
    """hnswlib's q/s at a recall, linear between its efSearch points (None outside), on
    the best it showed: a point slower than one of equal or higher recall is dropped."""
    pts = sorted((r["recall"], r["qps"]) for r in rows)
    pts = [p for p in pts if not any(o[0] >= p[0] and o[1] > p[1] for o in pts)]
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= recall <= r1:
            return q0 if r1 == r0 else q0 + (q1 - q0) * (recall - r0) / (r1 - r0)
    return None


def table(rows):
    print("| N | index | settings | build s | bytes/vector | recall@10 | q/s | x exact scan "
          "| x hnswlib (Node) at that recall | x hnswlib (C++) at that recall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        flat = [f for f in rows if f["index"] == "flat-coded" and f["n"] == r["n"]]
        vs_flat = f"{r['qps'] / flat[0]['qps']:.1f}" if flat else "-"
        vs_peers = []
        for peer_index in ("hnswlib", "hnswlib-cpp"):
            peer = hnswlib_qps_at([h for h in rows if h["index"] == peer_index and h["n"] == r["n"]],
                                  r["recall"])
            vs_peers.append(f"{r['qps'] / peer:.2f}" if peer else "-")
        print(f"| {r['n']:,} | {r['index']} | {r['params']} | {r['build_s']:.1f} | {r['bytes_per_vec']:.0f} "
              f"| {r['recall']:.3f} | {r['qps']:.0f} | {vs_flat} | {' | '.join(vs_peers)} |")


def setting(r):
    """A row's setting: its N, index and parameters less the trailing note in parentheses
    (build and code times, which differ from round to round)."""
    return r["n"], r["index"], re.sub(r" \([^()]*\)$", "", r["params"])


def round_medians(rounds):
    """Per setting, the median (and range) over the rounds of its q/s ratio to each hnswlib
    at the same recall, each round's peer rows against that round's own."""
    print("| N | index | settings | recall@10 | x hnswlib (Node): median (range), rounds "
          "| x hnswlib (C++): median (range), rounds |")
    print("|---|---|---|---|---|---|")
    for r in rounds[0]:
        if r["index"] in ("hnswlib", "hnswlib-cpp", "flat-coded"):
            continue
        cells = []
        for peer_index in ("hnswlib", "hnswlib-cpp"):
            ratios = []
            for rows in rounds:
                mine = [x for x in rows if setting(x) == setting(r)]
                peers = [h for h in rows if h["index"] == peer_index and h["n"] == r["n"]]
                peer = hnswlib_qps_at(peers, mine[0]["recall"]) if mine else None
                if peer:
                    ratios.append(mine[0]["qps"] / peer)
            cells.append(f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}), "
                         f"{len(ratios)}" if ratios else "-")
        print(f"| {r['n']:,} | {r['index']} | {setting(r)[2]} | {r['recall']:.3f} "
              f"| {' | '.join(cells)} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="a copy of a server data directory")
    ap.add_argument("--sizes", default="200000,1000000")
    ap.add_argument("--hnsw-max", type=int, default=200000, help="largest N for FAISS HNSW (slow adds)")
    ap.add_argument("--hnswlib-max", type=int, default=1000000, help="largest N for hnswlib")
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--flat-timed", type=int, default=200, help="queries timed on the exact scan")
    ap.add_argument("--nprobe", default="16,32,64,128,256")
    ap.add_argument("--ef", default="16,32,64,128,256")
    ap.add_argument("--skip", default="",
                    help="comma list of: flat,ivf,ivfcoded,ivfscan,faiss-hnsw,hnswlib,hnswlib-cpp")
    ap.add_argument("--work", default="/tmp/ann-work")
    ap.add_argument("--hnswlib-cache", help="keep hnswlib's graphs here and read them back in later runs "
                    "(the build time reported is the one measured when it was built)")
    ap.add_argument("--ivf-cache", help="keep bench_ann's built IVFs here and read them back in later "
                    "runs and rounds (the build time reported is the one measured when it was built)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every job this many times, alternating, and print each setting's median "
                    "ratio to hnswlib over the rounds (this VM's speed moves between minutes)")
    ap.add_argument("--table-only", action="store_true",
                    help="print the table of WORK/results.jsonl (every run's rows, the latest per setting)")
    args = ap.parse_args()
    if args.table_only:
        latest = {}
        with open(os.path.join(args.work, "results.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                latest[(r["n"], r["index"], r["params"])] = r
        table(sorted(latest.values(), key=lambda r: (r["n"], r["index"] != "flat-coded", r["index"])))
        return
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    skip = set(args.skip.split(","))
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, searches on one thread, {args.nq} queries, k={K}")
    npm = build_tools()
    d = make_data(args)
    w = lambda name: os.path.join(args.work, name)
    jobs = []  # (n, command, env): the cheap ones first, hnswlib at the largest N last
    for n in args.sizes:
        common = [w("base.f32"), str(n), str(d), w("queries.f32"), str(args.nq), w(f"gt-{n}.i32")]
        if "flat" not in skip:
            jobs.append([f"{BUILD}/bench_ann", *common, "flat", str(args.flat_timed)])
        if "ivf" not in skip:
            jobs.append([f"{BUILD}/bench_ann", *common, "ivf", str(nlist_for(n)), "39", "10", "4", args.nprobe])
        if "ivfcoded" not in skip:
            jobs.append([f"{BUILD}/bench_ann", *common, "ivfcoded", str(nlist_for(n)), "39", "10", args.nprobe])
        if "ivfscan" not in skip:
            jobs.append([f"{BUILD}/bench_ann", *common, "ivfscan", str(nlist_for(n)), "39", "10",
                         str(args.flat_timed), args.nprobe])
        if n <= args.hnsw_max and "faiss-hnsw" not in skip:
            jobs.append([f"{BUILD}/bench_ann", *common, "hnsw", "16", "100", "2", args.ef])
    for n in args.sizes:
        common = [w("base.f32"), str(n), str(d), w("queries.f32"), str(args.nq), w(f"gt-{n}.i32")]
        if n <= args.hnswlib_max and "hnswlib" not in skip:
            jobs.append(["node", f"{HERE}/bench_hnswlib.mjs", *common, "16", "100", args.ef])
        if n <= args.hnswlib_max and "hnswlib-cpp" not in skip:
            jobs.append([f"{BUILD}/bench_hnswlib", *common, "16", "100", args.ef])
    env = {**os.environ, "HNSWLIB_DIR": npm}
    if args.hnswlib_cache:
        os.makedirs(args.hnswlib_cache, exist_ok=True)
        env["HNSWLIB_CACHE"] = os.path.abspath(args.hnswlib_cache)
    if args.ivf_cache:
        os.makedirs(args.ivf_cache, exist_ok=True)
        env["BENCH_IVF_CACHE"] = os.path.abspath(args.ivf_cache)
    rounds = []
    with open(w("results.jsonl"), "a") as results:  # rows as they come: a long run can be cut short
        for k in range(args.rounds):
            rows = []
            for cmd in jobs:
                for r in run(cmd, env):
                    rows.append(r)
                    results.write(json.dumps(r) + "\n")
                    results.flush()
            if args.rounds > 1:
                print(f"\nround {k + 1} of {args.rounds}")
            table(rows)
            rounds.append(rows)
    if args.rounds > 1:
        print(f"\nmedians over {args.rounds} rounds")
        round_medians(rounds)


if __name__ == "__main__":
    main()
