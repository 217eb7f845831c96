#!/usr/bin/python3
"""lint.py - static checks of the web playground's source (server/webui/
index.html): its script parses (node --check), every form control has a
label, and nothing is loaded from elsewhere (no src/href to another origin,
no @import, no url() but data:). TAP. Exit 77 when node is missing.

    python3 tests/webui/lint.py server/webui/index.html
"""
import html.parser
import re
import shutil
import subprocess
import sys
import tempfile

n = failed = 0


def ok(cond, name, detail=""):
    global n, failed
    n += 1
    failed += not cond
    print("%s %d - %s" % ("ok" if cond else "not ok", n, name))
    if not cond and detail:
        print("# " + str(detail)[:500])


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.controls, self.label_for, self.refs = [], [], set(), []
        self.in_script, self.label_depth = False, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href", "action"):
            if k in a:
                self.refs.append(a[k])
        if tag == "script":
            self.in_script = True
            self.scripts.append("")
        if tag == "label":
            self.label_depth += 1
            if "for" in a:
                self.label_for.add(a["for"])
        if tag in ("input", "select", "textarea"):
            self.controls.append((a.get("id"), self.label_depth > 0))

    def handle_endtag(self, tag):
        if tag == "script":
            self.in_script = False
        if tag == "label":
            self.label_depth -= 1

    def handle_data(self, data):
        if self.in_script:
            self.scripts[-1] += data


def main():
    src = open(sys.argv[1], encoding="utf-8").read()
    p = Page()
    p.feed(src)
    node = shutil.which("node")
    if not node:
        print("1..0 # SKIP node not installed")
        return 77
    with tempfile.NamedTemporaryFile("w", suffix=".js") as f:
        f.write("\n".join(p.scripts))
        f.flush()
        r = subprocess.run([node, "--check", f.name], capture_output=True, text=True)
    ok(len(p.scripts) == 1 and r.returncode == 0, "the page's script parses (node --check)", r.stderr)
    unlabelled = [i for i, inside in p.controls if not inside and i not in p.label_for]
    ok(p.controls and not unlabelled, "every form control (%d) has a label" % len(p.controls), unlabelled)
    foreign = [r for r in p.refs if not (r.startswith("data:") or r.startswith("#"))]
    ok(not foreign, "no src/href to another resource", foreign)
    css_urls = [u for u in re.findall(r"url\(([^)]*)\)", src) if not u.strip("'\" ").startswith("data:")]
    ok("@import" not in src and not css_urls, "no @import or url() in the styles", css_urls)
    ok(not re.search(r"https?://", src), "no absolute URL anywhere in the page")
    ok("localStorage" not in src and "sessionStorage" in src, "the key is kept in sessionStorage only")
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
