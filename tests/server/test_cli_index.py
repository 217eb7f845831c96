#!/usr/bin/python3
"""test_cli_index.py - `retro index` over a folder tree, as a user runs it
(TAP output).

    test_cli_index.py RETRO MODELS_DIR

The walk: text files (.txt, .md, .rst) and .jsonl files at any depth are
indexed, ids relative to the folder given (with or without a trailing
slash); names starting with '.' and other files are left out; an empty
subfolder is passed over. An empty folder indexes nothing and exits 0, a
missing path exits 1 naming it. A file holding a NUL byte is indexed and
`retro get` prints it back. `retro export` writes every document as a
JSON line that `retro index` reads back to the same bytes. `retro search
--rerank` reorders with a reranker given by --reranker. Damaged model files (a NaN weight in either
model, a negative layer_norm_eps) are refused naming the tensor or field.
Input with no end (/dev/zero, an endless JSON
line on stdin) stops at 1 GiB with a message. Under the sanitizer build every run is also
checked for undefined behaviour and leaks (CI sets UBSAN_OPTIONS
halt_on_error=1, and LeakSanitizer makes a leaking run exit non-zero): an
empty folder once passed qsort a null pointer. Skips (exit 77) when
MODELS_DIR/SKIP exists.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import threading

import engine_models

TAP = engine_models.Tap()
check = TAP.check


def main():
    return engine_models.run_test("test_cli_index.py", "retro-cli-index-", run)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def poison(path):
    """Writes a NaN over element 0 of the file's largest float tensor, as
    damaged bytes or a diverged training run would; returns its name."""
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        name, t = max(((k, v) for k, v in header.items() if k != "__metadata__" and v["dtype"] in ("F32", "F16")),
                      key=lambda kv: kv[1]["data_offsets"][1] - kv[1]["data_offsets"][0])
        f.seek(8 + n + t["data_offsets"][0])
        f.write(struct.pack("<f", float("nan")) if t["dtype"] == "F32" else b"\x00\x7e")
    return name


def search_rerank(retro, src, models, model_args, tmp):
    """retro search --rerank N --reranker DIR: the best k of the mode's N,
    ordered by the reranker (a random one made by rerank_ref.py), each with
    its rank before; errors exit 1 saying why."""
    rr = os.path.join(tmp, "reranker")
    train = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "model", "train")
    p = subprocess.run(["/usr/bin/python3", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import rerank_ref; "
                        "rerank_ref.random_reranker(sys.argv[2], sys.argv[3])", train,
                        os.path.join(models, "encoder"), rr], capture_output=True, text=True, timeout=120)
    if not check(p.returncode == 0, "a random reranker made (rerank_ref.py)", p.stderr[-300:]):
        return

    def search(*args):
        p = subprocess.run([retro, "search", "--data", src, "--no-text"] + list(args) + model_args + ["a query"],
                           capture_output=True, text=True, timeout=60)
        return p, (json.loads(p.stdout)["batch"][0]["results"] if p.returncode == 0 else None)
    _, plain = search("-k", "8")
    p, hits = search("-k", "3", "--rerank", "8", "--reranker", rr)
    ranks = {h["chunk_id"]: i + 1 for i, h in enumerate(plain or [])}
    check(hits is not None and len(hits) == 3 and all(ranks.get(h["chunk_id"]) == h["retrieval_rank"] for h in hits)
          and all(0 < h["score"] < 1 for h in hits) and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"],
          "retro search --rerank 8: 3 of the plain 8, by relevance, each with its rank before", (hits, p.stderr))
    p, _ = search("-k", "3", "--rerank", "2", "--reranker", rr)
    check(p.returncode == 1 and "in [k," in p.stderr, "retro search --rerank below k: exit 1 saying so", p.stderr)
    p, _ = search("--rerank", "10", "--reranker", "none")
    check(p.returncode == 1 and "no reranker" in p.stderr, "retro search --rerank without a reranker: exit 1",
          p.stderr)


def run(retro, models, tmp):
    tree = os.path.join(tmp, "tree")
    write(os.path.join(tree, "a.txt"), b"alpha text about files and how to read them")
    write(os.path.join(tree, "sub", "b.md"), b"beta markdown about modules and packages")
    write(os.path.join(tree, "sub", "deeper", "c.rst"), b"gamma restructured text about classes")
    write(os.path.join(tree, ".hidden.txt"), b"a dot file is left out")
    write(os.path.join(tree, ".git", "d.txt"), b"so is a dot folder")
    write(os.path.join(tree, "image.png"), b"\x89PNG\r\n\x1a\n")
    write(os.path.join(tree, "notes.jsonl"),
          b'{"id": "j1", "text": "json line one"}\n{"id": "j2", "text": "json line two"}\n')
    os.makedirs(os.path.join(tree, "empty"))
    empty = os.path.join(tmp, "nothing")
    os.makedirs(empty)
    model_args = ["--encoder", os.path.join(models, "encoder"),
                  "--decoder", os.path.join(models, "decoder")]

    def index(data, *paths):
        return subprocess.run([retro, "index", "--data", data, "--quiet"] + model_args + list(paths),
                              capture_output=True, text=True, timeout=240)

    def ids(data):
        p = subprocess.run([retro, "get", "--data", data, "a.txt", "sub/b.md", "sub/deeper/c.rst",
                            "j1", "j2"], capture_output=True, text=True, timeout=60)
        try:
            return p.returncode, sorted(d["id"] for d in json.loads(p.stdout))
        except (ValueError, KeyError, TypeError):
            return p.returncode, p.stdout + p.stderr

    def documents(data):
        p = subprocess.run([retro, "info", "--data", data], capture_output=True, text=True, timeout=60)
        try:
            return json.loads(p.stdout)["documents"]
        except (ValueError, KeyError):
            return p.stdout + p.stderr

    want = ["a.txt", "j1", "j2", "sub/b.md", "sub/deeper/c.rst"]
    for name, arg in (("without", tree), ("with", tree + "/")):
        data = os.path.join(tmp, "data-" + name)
        p = index(data, arg)
        check(p.returncode == 0, "a folder tree, %s a trailing slash: indexed" % name, p.stderr)
        got = ids(data)
        check(got == (0, want), "%s a trailing slash: ids relative to the folder" % name, got)
        n = documents(data)
        check(n == len(want), "%s a trailing slash: dot files, dot folders and other files "
              "left out" % name, n)

    # retro delete: its ids in one transaction; an absent one named, exit 1
    data = os.path.join(tmp, "data-with")
    p = subprocess.run([retro, "delete", "--data", data, "j1", "absent", "sub/b.md"],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 1 and p.stdout == "deleted j1\ndeleted sub/b.md\n" and
          "absent: not found" in p.stderr, "retro delete: two deleted, the absent id named, exit 1",
          (p.returncode, p.stdout, p.stderr))
    p = subprocess.run([retro, "delete", "--data", data, "j2", "x" * 1025], capture_output=True,
                       text=True, timeout=60)
    check(p.returncode == 1 and "nothing deleted" in p.stderr and documents(data) == len(want) - 2,
          "retro delete: an id too long fails them all", (p.returncode, p.stderr))
    bydir = os.path.join(tmp, "data-filter")
    write(os.path.join(tmp, "meta.jsonl"),
          b'{"id": "m1", "text": "one", "metadata": {"src": "x"}}\n'
          b'{"id": "m2", "text": "two", "metadata": {"src": "y"}}\n'
          b'{"id": "m3", "text": "three", "metadata": {"src": ["z", "x"]}}\n')
    index(bydir, os.path.join(tmp, "meta.jsonl"))
    for args, want_err in ((["--filter", "{}"], "--filter: empty"), (["--filter", "{src"], "not valid JSON"),
                           (["--filter", '{"src": {"a": 1}}'], "--filter.src: unknown operator a"),
                           (["--filter", '{"src": "x"}', "m2"], "not both"), ([], "give IDs or --filter")):
        p = subprocess.run([retro, "delete", "--data", bydir] + args, capture_output=True, text=True, timeout=60)
        check(p.returncode == 2 and want_err in p.stderr, "retro delete %s: exit 2 naming the problem" % args,
              (p.returncode, p.stderr))
    p = subprocess.run([retro, "delete", "--data", bydir, "--filter", '{"src": {"$ne": "y"}}'], capture_output=True,
                       text=True, timeout=60)
    check(p.returncode == 0 and p.stdout == "deleted 2 documents\n" and documents(bydir) == 1,
          "retro delete --filter: the matching documents ($ne: a list without the value too)",
          (p.returncode, p.stdout))

    # retro update: a metadata merge patch by ids or by filter
    def meta_of(data, doc_id):
        p = subprocess.run([retro, "get", "--data", data, "--no-text", doc_id], capture_output=True, text=True,
                           timeout=60)
        return json.loads(p.stdout)[0]["metadata"] if p.returncode == 0 else p.stderr

    p = subprocess.run([retro, "update", "--data", bydir, "--metadata", '{"tag": 1}', "m2", "nope"] + model_args,
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 1 and p.stdout == "updated 1 documents\n" and "nope: not found" in p.stderr and
          meta_of(bydir, "m2") == {"src": "y", "tag": 1}, "retro update IDs: merged, a missing id said (exit 1)",
          (p.returncode, p.stdout, p.stderr))
    p = subprocess.run([retro, "update", "--data", bydir, "--metadata", '{"src": null}', "--filter",
                        '{"tag": {"$gte": 1}}'] + model_args, capture_output=True, text=True, timeout=60)
    check(p.returncode == 0 and p.stdout == "updated 1 documents\n" and meta_of(bydir, "m2") == {"tag": 1},
          "retro update --filter: null removes a key", (p.returncode, p.stdout, p.stderr))
    for args, want_err in ((["m2"], "--metadata"), (["--metadata", "[1]", "m2"], "metadata: must be an object"),
                           (["--metadata", "x", "m2"], "--metadata: not valid JSON"),
                           (["--metadata", "{}", "--filter", "{}"], "filter: empty"),
                           (["--metadata", "{}", "--filter", '{"a": 1}', "m2"], "not both")):
        p = subprocess.run([retro, "update", "--data", bydir] + args, capture_output=True, text=True, timeout=60)
        check(p.returncode == 2 and want_err in p.stderr, "retro update %s: exit 2 naming the problem" % args,
              (p.returncode, p.stderr))

    data = os.path.join(tmp, "data-empty")
    p = index(data, empty)
    check(p.returncode == 0 and not p.stderr, "an empty folder: exit 0, nothing on stderr",
          (p.returncode, p.stderr))
    n = documents(data)
    check(n == 0, "an empty folder: no documents", n)

    # a file is bytes: a NUL byte is kept, and the CLI's JSON shows it
    odd = os.path.join(tmp, "odd")
    write(os.path.join(odd, "nul.txt"), b"before \x00 after")
    data = os.path.join(tmp, "data-odd")
    p = index(data, odd)
    check(p.returncode == 0, "a file with a NUL byte: indexed", p.stderr)
    p = subprocess.run([retro, "get", "--data", data, "nul.txt"], capture_output=True, text=True,
                       timeout=60)
    try:
        text = json.loads(p.stdout)[0]["text"]
    except (ValueError, KeyError, IndexError, TypeError):
        text = p.stdout + p.stderr
    check(p.returncode == 0 and text == "before \x00 after", "retro get prints it, NUL and all", text)

    # retro export: every document as a JSON line that retro index reads
    # back; a round trip through a new database gives the same bytes
    long_text = " ".join("word%d" % i for i in range(300))  # several chunks
    rich = [{"id": "r1", "text": "caf\u00e9 \u2014 \U0001f600 tabs\tand \"quotes\"",
             "metadata": {"src": "x", "n": [1, 2.5], "deep": {"k": "\u00e9"}}},
            {"id": "r/2", "text": long_text, "metadata": {"src": "y"}},
            {"id": "r3", "text": "", "metadata": {}}]
    write(os.path.join(tmp, "rich.jsonl"), "".join(json.dumps(d) + "\n" for d in rich).encode())
    src, copy = os.path.join(tmp, "data-rich"), os.path.join(tmp, "data-rich-copy")
    index(src, os.path.join(tmp, "rich.jsonl"))
    p = subprocess.run([retro, "export", "--data", src], capture_output=True, text=True, timeout=60)
    lines = [json.loads(x) for x in p.stdout.splitlines()] if p.returncode == 0 else p.stderr
    check(p.returncode == 0 and lines == rich and "3 documents" in p.stderr,
          "retro export: each document as {id, text, metadata}, in order", (p.returncode, lines))
    out = os.path.join(tmp, "rich-export.jsonl")
    p = subprocess.run([retro, "export", "--data", src, "--out", out], capture_output=True, text=True, timeout=60)
    index(copy, out)
    again = subprocess.run([retro, "export", "--data", copy], capture_output=True, timeout=60)
    with open(out, "rb") as f:
        first = f.read()
    check(p.returncode == 0 and again.returncode == 0 and first == again.stdout and
          not os.path.exists(out + ".partial"),
          "export, index into a new database, export again: the same bytes", (p.stderr, again.stderr))
    p = subprocess.run([retro, "export", "--data", src, "--filter", '{"src": {"$in": ["y"]}}'],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0 and [json.loads(x)["id"] for x in p.stdout.splitlines()] == ["r/2"],
          "retro export --filter: only the documents that pass", (p.stdout[:200], p.stderr))
    for args, want_rc, want_err in ((["--filter", '{"src": {"$gt": null}}'], 2, "--filter.src.$gt"),
                                    (["--out", os.path.join(tmp, "no-dir", "x.jsonl")], 1, "no-dir"),
                                    (["extra"], 2, "no other arguments")):
        p = subprocess.run([retro, "export", "--data", src] + args, capture_output=True, text=True, timeout=60)
        check(p.returncode == want_rc and want_err in p.stderr and not p.stdout,
              "retro export %s: exit %d naming the problem" % (args, want_rc), (p.returncode, p.stderr))
    # retro search --chunk-id: the chunks nearest a stored one, itself left out
    got = json.loads(subprocess.run([retro, "get", "--data", src, "r/2"], capture_output=True, text=True,
                                    timeout=60).stdout)[0]["chunk_ids"]
    p = subprocess.run([retro, "search", "--data", src, "--chunk-id", str(got[0]), "-k", "3", "--no-text"]
                       + model_args, capture_output=True, text=True, timeout=60)
    hits = [h["chunk_id"] for h in json.loads(p.stdout)["batch"][0]["results"]] if p.returncode == 0 else p.stderr
    check(len(got) > 2 and len(hits) == 3 and got[0] not in hits and got[1] in hits,
          "retro search --chunk-id: its nearest chunks, itself left out", (got, hits))
    # --with-vectors: the stored embeddings; a hit's vector, searched by its
    # chunk, scores each of that search's hits by the inner product with them
    def search_vectors(chunk):
        p = subprocess.run([retro, "search", "--data", src, "--chunk-id", str(chunk), "-k", "3", "--no-text",
                            "--with-vectors"] + model_args, capture_output=True, text=True, timeout=60)
        return json.loads(p.stdout)["batch"][0]["results"] if p.returncode == 0 else []
    first = search_vectors(got[0])
    second = search_vectors(first[0]["chunk_id"]) if first else []
    check(first and second and all(abs(sum(a * b for a, b in zip(first[0]["vector"], h["vector"])) - h["score"]) < 1e-5
                                   for h in second),
          "retro search --with-vectors: each hit's stored vector (its inner product with the query's is the score)",
          second[:1])
    p = subprocess.run([retro, "search", "--data", src, "--include", "r/2", "-k", "5", "--no-text", "a query"]
                       + model_args, capture_output=True, text=True, timeout=60)
    docs = {h["doc_id"] for h in json.loads(p.stdout)["batch"][0]["results"]} if p.returncode == 0 else p.stderr
    check(docs == {"r/2"}, "retro search --include: only that document's chunks", docs)
    search_rerank(retro, src, models, model_args, tmp)
    p = subprocess.run([retro, "search", "--data", src, "--chunk-id", "1", "q"] + model_args,
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 2 and "not both" in p.stderr, "retro search --chunk-id with a QUERY: exit 2", p.stderr)
    p = subprocess.run([retro, "export", "--data", os.path.join(tmp, "data-odd")], capture_output=True,
                       text=True, timeout=60)
    check(p.returncode == 0 and json.loads(p.stdout)["text"] == "before \x00 after" and
          'hold a NUL byte (first: "nul.txt")' in p.stderr,
          "retro export of a text with a NUL byte: written, and said", (p.returncode, p.stderr))

    missing = os.path.join(tmp, "no-such-folder")
    p = index(os.path.join(tmp, "data-missing"), missing)
    check(p.returncode == 1 and missing in p.stderr, "a missing path: exit 1 naming it",
          (p.returncode, p.stderr))

    # damaged model files (the tiny models made here): a NaN weight, in the
    # encoder and in the decoder, and an encoder layer_norm_eps below zero are
    # refused naming the tensor or the field; each loaded and answered NaN
    for role in ("encoder", "decoder"):
        bad = os.path.join(tmp, "bad-" + role)
        shutil.copytree(os.path.join(models, role), bad)
        name = poison(os.path.join(bad, "model.safetensors"))
        args = ["embed", "--encoder", bad, "hello"] if role == "encoder" else \
            ["generate", "--data", os.path.join(tmp, "data-without"), "--decoder", bad, "--no-retrieval",
             "--max-tokens", "1", "hello"]
        p = subprocess.run([retro] + args + (model_args[:2] if role == "decoder" else []),
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 1 and ("tensor '%s': element 0 is NaN" % name) in p.stderr,
              "a NaN weight in the %s: exit 1 naming the tensor" % role, (p.returncode, p.stderr[-300:]))
    bad = os.path.join(tmp, "bad-eps")
    shutil.copytree(os.path.join(models, "encoder"), bad)
    with open(os.path.join(bad, "config.json")) as f:
        cfg = json.load(f)
    cfg["layer_norm_eps"] = -1.0
    with open(os.path.join(bad, "config.json"), "w") as f:
        json.dump(cfg, f)
    p = subprocess.run([retro, "embed", "--encoder", bad, "hello"], capture_output=True, text=True, timeout=120)
    check(p.returncode == 1 and "layer_norm_eps" in p.stderr, "an encoder layer_norm_eps below zero: exit 1 naming it",
          (p.returncode, p.stderr[-300:]))

    # input with no end: a path (/dev/zero), and a JSON line on stdin; each
    # stops at 1 GiB naming the limit (it read until the machine ran out of
    # memory, and the kernel killed it), and what came before is kept
    data = os.path.join(tmp, "data-endless")
    p = index(data, "/dev/zero")
    check(p.returncode == 1 and "/dev/zero: larger than 1 GiB" in p.stderr,
          "a path with no end (/dev/zero): exit 1 at 1 GiB, naming the limit", (p.returncode, p.stderr))
    with subprocess.Popen([retro, "index", "--data", data, "--quiet"] + model_args + ["-"],
                          stdin=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        def feed():
            child.stdin.write(b'{"id": "before", "text": "a line before the endless one"}\n{"id": "x", "text": "')
            zeros = b"a" * (1 << 20)
            try:
                while True:
                    child.stdin.write(zeros)
            except (BrokenPipeError, OSError):
                pass
        t = threading.Thread(target=feed, daemon=True)
        t.start()
        err = child.stderr.read().decode(errors="replace")
        rc = child.wait(timeout=240)
    check(rc == 1 and "stdin:2: larger than 1 GiB" in err and "the rest of stdin is not read" in err,
          "an endless JSON line on stdin: exit 1 at 1 GiB, naming the line", (rc, err))
    got = subprocess.run([retro, "get", "--data", data, "before"], capture_output=True, text=True, timeout=60)
    check(got.returncode == 0 and "a line before the endless one" in got.stdout,
          "... and the document before it is stored", got.stdout + got.stderr)
    return TAP.end()


if __name__ == "__main__":
    sys.exit(main())
