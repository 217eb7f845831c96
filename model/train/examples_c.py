"""examples_c.py - completions of held-out documents by the C runtime
(`retro generate --json`, greedy), printed as Markdown: for each document a
prompt (its first PROMPT_CHARS characters, cut before a space), the true
continuation, and the completion with retrieval from the grounded database
(the document itself is indexed), from the no-leakage database (training
documents only) and with retrieval off, each with how many of its leading
characters equal the true continuation, plus the neighbours retrieved for
the prompt's last complete chunk. eval_c.sh runs it after the table.

usage: examples_c.py RETRO DB_GROUNDED DB_NOLEAK HELDOUT_JSONL [--n N] [--tokens T]
"""
import argparse
import json
import subprocess


def generate(retro, db, prompt, tokens, retrieval=True):
    cmd = [retro, "generate", "--data", db, "-t", "0", "-n", str(tokens), "--json", "-"]
    if not retrieval:
        cmd.insert(-1, "--no-retrieval")
    p = subprocess.run(cmd, input=prompt.encode(), stdout=subprocess.PIPE, check=True)
    return json.loads(p.stdout)


def same_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def quote(s, limit=300):
    s = s if len(s) <= limit else s[:limit] + "…"
    return "```text\n" + s.replace("```", "` ``") + "\n```"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("retro")
    ap.add_argument("db_grounded")
    ap.add_argument("db_noleak")
    ap.add_argument("heldout")
    ap.add_argument("--n", type=int, default=3, help="documents")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--prompt-chars", type=int, default=900)
    a = ap.parse_args()
    docs = [json.loads(line) for line in open(a.heldout)]
    docs = [d for d in docs if len(d["text"]) > a.prompt_chars + 400]
    step = max(1, len(docs) // max(1, a.n))
    for d in docs[::step][:a.n]:
        # cut before a space: byte-level BPE starts a word's token with its space
        cut = d["text"].rfind(" ", 0, a.prompt_chars)
        cut = cut if cut > 0 else a.prompt_chars
        prompt, truth = d["text"][:cut], d["text"][cut:]
        print("### `%s`\n" % d["id"])
        print("Prompt (its last 300 characters of %d):\n" % len(prompt))
        print(quote(prompt[-300:]))
        print("True continuation:\n")
        print(quote(truth[:300]))
        runs = [("RETRO [ON] grounded", a.db_grounded, True),
                ("RETRO [ON] no leakage", a.db_noleak, True),
                ("RETRO [OFF]", a.db_noleak, False)]
        for name, db, retrieval in runs:
            r = generate(a.retro, db, prompt, a.tokens, retrieval)
            print("%s — the first %d of its %d characters equal the true continuation:\n"
                  % (name, same_prefix(r["text"], truth), len(r["text"])))
            print(quote(r["text"]))
            chunks = [c for c in r.get("chunks", []) if c.get("in_prompt")]
            if retrieval and chunks:
                nbs = chunks[-1]["neighbors"]
                print("Neighbours of the prompt's last complete chunk: " + ", ".join(
                    "`%s` (%.3f)" % (n["doc_id"], n["score"]) for n in nbs) + "\n")


if __name__ == "__main__":
    main()
