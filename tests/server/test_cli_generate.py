#!/usr/bin/python3
"""test_cli_generate.py - `retro generate` end to end (TAP output).

    test_cli_generate.py RETRO MODELS_DIR

Indexes a few documents with `retro index`, then runs `retro generate` as a
user would: a prompt from the arguments and the same prompt from stdin
(`-`) must give the same greedy completion; an empty stdin prompt starts
from end-of-text (no prompt token); --json has the documented keys and a
given seed; streaming prints the text on stdout and the summary on stderr;
bad flags exit 2 with a message naming the flag. Under the ASan build the
same runs also check that the CLI frees what it reads (LeakSanitizer makes
a leaking run exit non-zero). Skips (exit 77) when MODELS_DIR/SKIP exists.
"""
import json
import os
import subprocess
import sys

import engine_models

TAP = engine_models.Tap()
check = TAP.check


def main():
    return engine_models.run_test("test_cli_generate.py", "retro-cli-gen-", run)


def run(retro, models, tmp):
    data = os.path.join(tmp, "data")
    corpus = os.path.join(tmp, "corpus.jsonl")
    words = ("retrieval augmented model chunk neighbour database index search query vector "
             "token encoder decoder attention server request response python module").split()
    with open(corpus, "w") as f:
        for i in range(12):
            text = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(150))
            f.write(json.dumps({"id": "doc-%d" % i, "text": text}) + "\n")
    p = subprocess.run([retro, "index", "--data", data, "--encoder", os.path.join(models, "encoder"),
                        "--decoder", os.path.join(models, "decoder"), "--quiet", corpus],
                       capture_output=True, text=True, timeout=240)
    check(p.returncode == 0, "retro index", p.stderr)
    if p.returncode != 0:
        return TAP.end()

    gen = [retro, "generate", "--data", data]

    def generate(args, stdin=""):
        return subprocess.run(gen + args, input=stdin.encode(), capture_output=True, timeout=120)

    def as_json(p):
        try:
            return json.loads(p.stdout)
        except ValueError:
            return None

    greedy = ["--json", "--temperature", "0", "--max-tokens", "6"]
    prompt = "retrieval augmented model chunk neighbour database index"
    a = generate(greedy + prompt.split())
    ja = as_json(a)
    check(a.returncode == 0 and ja is not None, "prompt from the arguments", a.stderr)
    keys = {"text", "finish_reason", "prompt_tokens", "completion_tokens", "seed", "chunks",
            "timings"}
    check(ja is not None and keys <= set(ja) and ja["prompt_tokens"] > 0 and
          1 <= ja["completion_tokens"] <= 6, "--json keys and counts", a.stdout)
    b = generate(greedy + ["-"], prompt)
    jb = as_json(b)
    check(b.returncode == 0 and jb is not None and ja is not None and jb["text"] == ja["text"] and
          jb["prompt_tokens"] == ja["prompt_tokens"],
          "the same prompt from stdin gives the same greedy completion", (a.stdout, b.stdout))

    e = generate(greedy + ["-"], "")
    je = as_json(e)
    check(e.returncode == 0 and je is not None and je["prompt_tokens"] == 0 and
          je["completion_tokens"] >= 1 and je["finish_reason"] in ("stop", "length"),
          "an empty prompt on stdin starts from end-of-text", (e.stdout, e.stderr))

    seeded = ["--json", "--temperature", "1", "--max-tokens", "8", "--seed", "4242"]
    s1, s2 = generate(seeded + prompt.split()), generate(seeded + prompt.split())
    j1, j2 = as_json(s1), as_json(s2)
    check(j1 is not None and j2 is not None and j1["seed"] == 4242 and j1["text"] == j2["text"],
          "--seed: reported, and the same seed samples the same text", (s1.stdout, s2.stdout))

    st = generate(["--temperature", "0", "--max-tokens", "4", "--no-retrieval"] + prompt.split())
    err = st.stderr.decode(errors="replace")
    check(st.returncode == 0 and "-- finish:" in err and "-- chunk" not in err,
          "streaming: the text on stdout, the summary on stderr, no chunks without retrieval", err)

    for args, stdin, needle, what in (
            ([], "", "no PROMPT", "no prompt"),
            (["--seed", "x1", "p"], "", "--seed", "a seed that is not a number"),
            (["--retrieval-mode", "fuzzy", "p"], "", "--retrieval-mode", "an unknown retrieval mode"),
            (["--max-tokens", "0", "p"], "", "--max-tokens", "max-tokens 0"),
            (["--top-p", "2", "p"], "", "--top-p", "top-p 2"),
            (["--decoder", "", "p"], "", "--decoder: an empty value", "an empty value (an unset variable)")):
        r = generate(args, stdin)
        msg = r.stderr.decode(errors="replace")
        check(r.returncode == 2 and needle in msg, "exit 2 naming the problem: " + what,
              (r.returncode, msg))
    r = subprocess.run(gen[:2] + ["-"], input=b"x", capture_output=True, timeout=60)
    check(r.returncode == 2 and b"--data" in r.stderr, "exit 2 without --data", r.stderr)

    return TAP.end()


if __name__ == "__main__":
    sys.exit(main())
