#!/usr/bin/env python3
"""function_length.py - fails when a C function is longer than a limit.

usage: function_length.py [--max N] FILE|DIR...   (a DIR: its *.c and *.h)

A function's length is counted from the first line of its signature (a
signature spread over several lines counts from its first) to the line of
its closing brace, inclusive. Comments, strings and character literals are
blanked first so braces inside them do not count. Prints one line per
function over the limit and exits 1 if there is any; prints the longest
function otherwise, so a log shows how close the code is to the limit.
Before that it checks its own reading of C on samples (self_check), so a
parser that stopped seeing functions fails instead of passing everything.
"""
import glob
import os
import re
import sys


def blank(src):
    """src with comments, strings and char literals replaced by spaces
    (newlines kept, so line numbers stay right)."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + re.sub(r"[^\n]", " ", src[i + 1:j - 1]) + c)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(src):
    """(name, first line, last line) of each function defined in src."""
    text = blank(src)
    # preprocessor lines (and their continuations) are not code here
    lines = text.split("\n")
    in_pp = False
    for k, line in enumerate(lines):
        if in_pp or line.lstrip().startswith("#"):
            in_pp = line.rstrip().endswith("\\")
            lines[k] = " " * len(line)
    text = "\n".join(lines)

    found = []
    depth = 0
    stmt_start = 0  # offset where the current top-level declaration began
    open_at = None
    for i, c in enumerate(text):
        if c == "{":
            if depth == 0:
                head = text[stmt_start:i]
                m = re.search(r"([A-Za-z_]\w*)\s*\([^;]*\)[\s\w()]*$", head, re.S)
                # a function body follows "name(...)"; not "= {", struct, enum
                if m and "=" not in head.split("(")[0] and not re.match(
                        r"\s*(typedef\s+)?(struct|union|enum)\b[^(]*$", head.split("(")[0]):
                    first = stmt_start + len(head) - len(head.lstrip())
                    open_at = (m.group(1), text.count("\n", 0, first) + 1)
                else:
                    open_at = None
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                if open_at:
                    found.append((open_at[0], open_at[1], text.count("\n", 0, i) + 1))
                    open_at = None
                stmt_start = i + 1
        elif c == ";" and depth == 0:
            stmt_start = i + 1
    return found


def self_check():
    """Raises AssertionError when functions() misreads the samples."""
    body = "".join(f"  x += {i};\n" for i in range(10))
    src = (
        "#define M(a) { a }\n"
        "static const int tab[] = {1, 2};\n"
        "typedef struct s { int a; } s;\n"
        "/* not(code) { */\n"
        "static int\nmulti(int a,\n      int b) {\n" + body + "  return '}' + a + b;\n}\n"
        "int one(void) { return \"{\"[0]; }\n"
        "enum e { A, B };\n"
        "void after(void) {\n  if (1) { }\n}\n")
    got = functions(src)
    names = [g[0] for g in got]
    assert names == ["multi", "one", "after"], names
    multi = got[0]
    # from "static int" (line 5) to its closing brace (line 19)
    assert (multi[1], multi[2]) == (5, 19), multi
    assert got[1][1] == got[1][2] == 20, got[1]


def expand(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(glob.glob(os.path.join(p, "*.c")) + glob.glob(os.path.join(p, "*.h")))
        else:
            out.append(p)
    return out


def main(argv):
    self_check()
    limit = 120
    if len(argv) > 2 and argv[1] == "--max":
        limit = int(argv[2])
        argv = argv[2:]
    over, longest = [], ("", "", 0)
    paths = expand(argv[1:])
    if not paths:
        print("no files to check")
        return 1
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for name, a, b in functions(f.read()):
                n = b - a + 1
                if n > limit:
                    over.append(f"{path}:{a}: {name} is {n} lines (limit {limit})")
                if n > longest[2]:
                    longest = (path, name, n)
    for line in over:
        print(line)
    if over:
        return 1
    print(f"ok: the longest function is {longest[1]} in {longest[0]}, {longest[2]} lines (limit {limit})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
