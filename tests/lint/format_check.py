"""format_check.py - the C and C++ sources of the repository are formatted
as .clang-format says (clang-format --dry-run --Werror on every tracked
*.c, *.h and *.cpp). Fix with:

    clang-format -i $(git ls-files '*.c' '*.h' '*.cpp')

Exits 77 (meson's SKIP) when clang-format or git is missing, saying so.
"""
import os
import shutil
import subprocess
import sys


def main():
    root = sys.argv[1]
    exe = shutil.which("clang-format")
    if not exe or not shutil.which("git") or not os.path.exists(os.path.join(root, ".git")):
        print("SKIP: needs clang-format, git and a git checkout (deploy/install-deps.sh installs clang-format)")
        return 77
    files = subprocess.run(["git", "ls-files", "*.c", "*.h", "*.cpp"], cwd=root, check=True,
                           capture_output=True, text=True).stdout.split()
    if not files:
        print("no sources found: wrong root?")
        return 1
    bad = []
    for f in files:
        r = subprocess.run([exe, "--dry-run", "--Werror", os.path.join(root, f)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            bad.append((f, r.stderr.splitlines()[:4]))
    for f, lines in bad:
        print("not formatted: %s" % f)
        for line in lines:
            print("  " + line)
    print("%d of %d files formatted as .clang-format says" % (len(files) - len(bad), len(files)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
