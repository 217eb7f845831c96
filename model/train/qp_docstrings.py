"""qp_docstrings.py - the standard library's own docstrings as queries for
the retrieval encoder: the summary of `time.sleep.__doc__` ("Delay
execution for a given number of seconds.") says in other words what the
documentation's `.. function:: sleep(secs)` paragraph says, which is what
a paraphrased question needs and a signature or heading cannot teach.

Reads the corpus's directives the way qp_mine.py does (module context,
`function`/`method`/`class`/`exception`/...), imports each named module in a
subprocess of its own (a few print or open windows on import; those listed
in SKIP are never imported) and writes {"full.name": "summary"} as JSON
for qp_mine.py --docstrings. A summary is the docstring's first paragraph
without the signature lines C functions begin with, 4 to 60 words.

  /usr/bin/python3 model/train/qp_docstrings.py --corpus DIR --out FILE
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qp_mine import mine_doc  # noqa: E402

SKIP = {"antigravity", "this", "idlelib", "turtledemo", "__main__", "__phello__"}

# Run in a fresh interpreter per module: prints {"name": "docstring"} for
# each dotted name read from stdin that resolves inside the module.
LOOKUP = r"""
import importlib, inspect, json, sys
mod_name = sys.argv[1]
mod = importlib.import_module(mod_name)
out = {}
for full in sys.stdin.read().split():
    obj = mod
    try:
        for part in full[len(mod_name) + 1:].split("."):
            obj = getattr(obj, part)
    except AttributeError:
        continue
    if obj is mod or isinstance(obj, (int, float, str, bytes, tuple, list, dict)):
        continue  # a constant's docstring is its type's
    doc = inspect.getdoc(obj)
    if doc:
        out[full] = doc
print(json.dumps(out))
"""


def summary(doc):
    """The docstring's first paragraph that is not a signature, or None."""
    for para in doc.split("\n\n"):
        lines = [ln.strip() for ln in para.strip().split("\n") if ln.strip()]
        # C functions start with their signature: "sleep(seconds)", "f() -> y", "deque(x) --> deque"
        while lines and ("(" in lines[0] and lines[0].endswith((")", "None")) or "->" in lines[0]):
            lines = lines[1:]
        text = " ".join(" ".join(lines).split())
        if not text:
            continue
        n = len(text.split())
        return text if 4 <= n <= 60 else None
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    names = {}  # module -> dotted names under it
    for d, _, fs in os.walk(a.corpus):
        for f in fs:
            if not f.endswith(".txt"):
                continue
            for kind, q, _ in mine_doc(open(os.path.join(d, f), encoding="utf-8").read()):
                if kind != "signature" or " " in q or "(" in q or "." not in q:
                    continue
                parts = q.split(".")
                for cut in range(1, len(parts)):
                    names.setdefault(".".join(parts[:cut]), set()).add(q)
    found = {}
    for mod in sorted(names):
        if mod.split(".")[0] in SKIP:
            continue
        todo = sorted(n for n in names[mod] if n not in found)
        if not todo:
            continue
        try:
            r = subprocess.run([a.python, "-c", LOOKUP, mod], input="\n".join(todo), capture_output=True,
                               text=True, timeout=20)
        except subprocess.TimeoutExpired:
            continue
        if r.returncode != 0:
            continue  # not a module, or one that does not import here
        for full, doc in json.loads(r.stdout.strip().split("\n")[-1]).items():
            s = summary(doc)
            if s:
                found[full] = s
    json.dump(found, open(a.out, "w"), indent=0, sort_keys=True)
    print("qp_docstrings: %d names with a summary, of %d" % (len(found), len({n for v in names.values() for n in v})))


if __name__ == "__main__":
    main()
