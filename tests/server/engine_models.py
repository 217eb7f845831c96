"""engine_models.py - for the tests of tests/server that run the models
make_engine_models.py writes."""
import os
import shutil
import sys
import tempfile


def missing(models):
    """True, after printing TAP's skip-all line, when make_engine_models.py
    left a SKIP file in models (no PyTorch) in place of the models."""
    if os.path.exists(os.path.join(models, "SKIP")):
        print("1..0 # SKIP no PyTorch to make the test models")
        return True
    return False


class Tap:
    """TAP output: check() prints one "ok N - what" (or "not ok" with the
    detail's last 15 lines as comments); end() the plan and the exit status."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        self.n += 1
        print(("ok %d - %s" if ok else "not ok %d - %s") % (self.n, what))
        if not ok:
            self.failed += 1
            for line in str(detail).splitlines()[-15:]:
                print("#   " + line)
        return ok

    def end(self):
        print("1..%d" % self.n)
        return 1 if self.failed else 0


def run_test(name, prefix, body):
    """A test's main: argv RETRO MODELS_DIR; body(retro, models, tmp) runs
    with a temporary folder removed afterwards and returns the exit status;
    77 (skipped) without the models."""
    if len(sys.argv) < 3:
        print("usage: %s RETRO MODELS_DIR" % name, file=sys.stderr)
        return 2
    retro, models = sys.argv[1], sys.argv[2]
    if missing(models):
        return 77
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        return body(retro, models, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
