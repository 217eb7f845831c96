#!/usr/bin/python3
"""parity.py - TAP test: the C tokenizers (through tests/tok/tokdump) give the
same ids as the Python reference model/train/tokref.py, line by line and for
whole files, on tests/tok/varied.txt and on random text, for GPT-2 BPE, BERT
WordPiece (uncased and cased), and a small BPE trained here by
model/train/bpe_train.py; the C Unicode tables (NFC, NFD, lower case) agree
with Python's unicodedata, and the GPT-2 classes with tokref's (Unicode 15.0,
model/tok_bpe_classes.txt), on every code point and on random sequences; that
file is what model/unicode_gen.py --extract makes of the Unicode database in
/usr/share/unicode, and tokref's GPT-2 pre-tokens are the `regex` module's
(each skipped when the package is missing: Debian's unicode-data,
python3-regex).

  parity.py TOKDUMP SOURCE_ROOT DATA_DIR WORK_DIR
"""
import os
import random
import subprocess
import sys
import tempfile
import time
import unicodedata

tokdump, src, data, work = sys.argv[1:5]
sys.path.insert(0, os.path.join(src, "model", "train"))
import tokref  # noqa: E402

n = 0
failed = 0


def ok(cond, msg, detail=None):
    global n, failed
    n += 1
    print("%s %d - %s" % ("ok" if cond else "not ok", n, msg))
    if not cond:
        failed += 1
        if detail:
            for line in detail.splitlines()[:12]:
                print("#   " + line[:300])
    sys.stdout.flush()


def skip(msg, why):
    global n
    n += 1
    print("ok %d - %s # SKIP %s" % (n, msg, why))


def run(args):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def compare(name, c_args, py_args, path):
    t0 = time.time()
    rc, cout, cerr = run([tokdump] + c_args + [path])
    t1 = time.time()
    prc, pout, perr = run([sys.executable, os.path.join(src, "model", "train", "tokref.py"),
                           "dump"] + py_args + [path])
    t2 = time.time()
    if rc != 0 or prc != 0:
        ok(False, name, "tokdump rc %d: %s\ntokref rc %d: %s" % (rc, cerr, prc, perr))
        return
    cl, pl = cout.splitlines(), pout.splitlines()
    diff = []
    for i in range(max(len(cl), len(pl))):
        a = cl[i] if i < len(cl) else "<missing>"
        b = pl[i] if i < len(pl) else "<missing>"
        if a != b:
            diff.append("C:  " + a)
            diff.append("py: " + b)
    ok(not diff and len(cl) > 2, "%s: %d lines identical (C %.2f s, Python %.2f s)"
       % (name, len(cl), t1 - t0, t2 - t1), "\n".join(diff))


tmp = tempfile.mkdtemp(prefix="tok_parity_", dir=work if os.path.isdir(work) else None)
varied = os.path.join(src, "tests", "tok", "varied.txt")

# ---- Unicode tables
rng = random.Random(1234)
lines = []
cps = [cp for cp in range(0x110000) if not (0xD800 <= cp <= 0xDFFF) and cp != 10]
for i in range(0, len(cps), 16):
    lines.append("".join(chr(c) for c in cps[i:i + 16]))
marks = [cp for cp in range(0x300, 0x370)] + [0x5B0, 0x5B8, 0x5C1, 0x5C2, 0x93C, 0x94D,
                                              0x1DC0, 0x20D0, 0x302A, 0x3099, 0x309A, 0x0F71, 0x0F72]
starters = [ord(c) for c in "aeiouAEIOUnNcCsSyYwWzZ\u03b1\u03c9\u0391\u0415\u0418\u0928\u0915\u304b\u30cf\u1100\u1161\u11a8\uac00\uac01\u0627\u05e9"]
pool = marks + starters + [0x212B, 0x2126, 0xF900, 0x1E9E, 0x130, 0x3A3, 0xFB01, 0x1F88, 0x1FBC]
for _ in range(20000):
    k = rng.randint(1, 12)
    lines.append("".join(chr(rng.choice(pool)) for _ in range(k)))
uni_path = os.path.join(tmp, "unicode.txt")
with open(uni_path, "wb") as f:
    f.write("\n".join(lines).encode("utf-8", "surrogatepass"))


def hexs(s):
    return ",".join("%X" % ord(c) for c in s)


bpe_version, bpe_cls = tokref.bpe_classes()
want = []
for line in lines:
    want.append("%s %s %s %s" % (hexs(unicodedata.normalize("NFC", line)),
                                 hexs(unicodedata.normalize("NFD", line)),
                                 hexs("".join(c.lower() for c in line)),
                                 "".join(str(bpe_cls[ord(c)]) for c in line)))
rc, out, err = run([tokdump, "--unicode", uni_path])
got = out.splitlines()
bad = [(lines[i], got[i] if i < len(got) else None, want[i]) for i in range(len(want))
       if i >= len(got) or got[i] != want[i]]
ok(rc == 0 and not bad and len(got) == len(want),
   "Unicode NFC/NFD/lower (Python's %s) and GPT-2 classes (Unicode %s) of all %d code "
   "points and 20000 random sequences match" % (unicodedata.unidata_version, bpe_version, len(cps)),
   "\n".join("%r: C %s want %s" % b for b in bad[:6]) + err)

# ---- the GPT-2 classes file against the Unicode database and `regex`
ucd = "/usr/share/unicode"
classes_txt = os.path.join(src, "model", "tok_bpe_classes.txt")
if os.path.exists(os.path.join(ucd, "PropList.txt")):
    extracted = os.path.join(tmp, "classes.txt")
    rc, out, err = run([sys.executable, os.path.join(src, "model", "unicode_gen.py"),
                        "--extract", ucd, extracted])
    if rc != 0 and "is not Unicode" in err:
        skip("tok_bpe_classes.txt == the Unicode database", err.strip())
    else:
        same = False
        if rc == 0:
            with open(classes_txt, "rb") as f1, open(extracted, "rb") as f2:
                same = f1.read() == f2.read()
        ok(same, "tok_bpe_classes.txt is what unicode_gen.py --extract makes of %s" % ucd, err)
else:
    skip("tok_bpe_classes.txt == the Unicode database", "no %s (Debian's unicode-data)" % ucd)

# Unicode 15.0's new letters and digits (unassigned in Python 3.11's 14.0) in
# the contexts where the classes decide GPT-2's split
new15 = [cp for cp in range(0x110000) if bpe_cls[cp] in (1, 2) and not (0xD800 <= cp <= 0xDFFF)
         and unicodedata.category(chr(cp)) == "Cn"]
u15_path = os.path.join(tmp, "unicode15.txt")
with open(u15_path, "wb") as f:
    f.write("\n".join("X%s's 7%s1 %s%s'll" % ((chr(cp),) * 4) for cp in new15).encode("utf-8"))
try:
    import regex
except ImportError:
    regex = None
if regex is None:
    skip("tokref GPT-2 pre-tokens == the regex module's", "no regex module (python3-regex)")
elif not regex.match(r"\p{L}", "\U00011F04") or regex.match(r"\p{L}", "\U0002EBF0"):
    skip("tokref GPT-2 pre-tokens == the regex module's", "its Unicode is not 15.0 (Kawi letter "
         "U+11F04 new in 15.0, CJK U+2EBF0 new in 15.1)")
else:
    gpt2_re = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                            r"""|\s+(?!\S)|\s+""")
    texts = ["\n".join(lines[:len(cps) // 16 + 1]), open(u15_path, encoding="utf-8").read(),
             open(varied, "rb").read().decode("utf-8", "replace")]
    bad = [(i, a, b) for i, t in enumerate(texts)
           for a, b in [([x.encode() for x in gpt2_re.findall(t)], tokref.gpt2_pretokenize(t.encode()))]
           if a != b]
    ok(not bad and len(new15) > 4000,
       "tokref GPT-2 pre-tokens == regex %s's on all code points, varied.txt and the %d letters "
       "and digits new in Unicode 15.0" % (regex.__version__, len(new15)),
       "\n".join("text %d differs" % i for i, _, _ in bad))

# ---- random text
rand_path = os.path.join(tmp, "random.txt")
alphabet = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
            + list(" " * 10) + list("'''.,;:!?-_()[]{}<>|\"\\/@#$%^&*~`")
            + ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "[CLS]", "[SEP]", "[MASK]", "[UNK]",
               "[PAD]", "<|endoftext|>", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\xa0",
               "\u2028", "\u3000", "\u200b", "\x00", "\x07", "\ufffd", "\ufeff",
               "\u00e9", "e\u0301", "\u00c5", "\u212b", "\u0130", "\u03a3", "\u00df", "\ufb01",
               "\u4e2d", "\u6587", "\uac00", "\u1100\u1161", "\u3042", "\U0001f600", "\U0001f44d\U0001f3fd",
               "\u0663", "\u00bd", "\u2167", "\u0301", "\u0308", "\u05b8", "\u2014", "\u2019", "\u00ab"])
rlines = []
for _ in range(3000):
    k = rng.randint(0, 40)
    rlines.append("".join(rng.choice(alphabet) for _ in range(k)).encode("utf-8"))
for _ in range(300):  # random bytes (BPE must agree on invalid UTF-8 too)
    k = rng.randint(0, 30)
    rlines.append(bytes(rng.choice(b"ab '\xc3\xa9\x80\xff\xe4\xb8\xad\xf0\x9f\x98\x80 1.\xed\xa0\t")
                        for _ in range(k)))
with open(rand_path, "wb") as f:
    f.write(b"\n".join(rlines))

# ---- real vocabularies
gv, gm = os.path.join(data, "gpt2", "vocab.json"), os.path.join(data, "gpt2", "merges.txt")
bv = os.path.join(data, "bert-base-uncased", "vocab.txt")
for path, what in ((varied, "varied.txt"), (rand_path, "random text"),
                   (u15_path, "Unicode 15.0's new letters and digits")):
    if os.path.exists(gv):
        compare("GPT-2 BPE, " + what, ["--bpe", gv, gm], ["--bpe", gv, gm], path)
    else:
        skip("GPT-2 BPE, " + what, "no " + gv)
    if os.path.exists(bv):
        compare("BERT WordPiece uncased, " + what, ["--wordpiece", bv], ["--wordpiece", bv], path)
        compare("BERT WordPiece cased, " + what, ["--wordpiece", bv, "--cased"],
                ["--wordpiece", bv, "--cased"], path)
    else:
        skip("BERT WordPiece, " + what, "no " + bv)

# ---- a BPE trained here
bpe_dir = os.path.join(tmp, "bpe")
corpus = [varied, os.path.join(src, "model", "train", "tokref.py"),
          os.path.join(src, "model", "train", "bpe_train.py"), os.path.join(src, "model", "tok.c"),
          os.path.join(src, "tests", "tok", "test_tok.c")]
rc, out, err = run([sys.executable, os.path.join(src, "model", "train", "bpe_train.py"),
                    "--vocab-size", "1000", "--quiet", "--out", bpe_dir] + corpus)
ok(rc == 0 and os.path.exists(os.path.join(bpe_dir, "merges.txt")), "bpe_train.py trains", err)
if rc == 0:
    t = tokref.ByteBPE(os.path.join(bpe_dir, "vocab.json"), os.path.join(bpe_dir, "merges.txt"))
    fixed = [t.token_id(s) for s in ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<|endoftext|>"]]
    ok(fixed == [0, 1, 2, 3, 4, 5] and len(t) == 1000, "trained BPE: specials at 0..5, 1000 tokens",
       "%r %d" % (fixed, len(t)))
    ok(t.encode(b"<s>") != [0] and t.decode([0, 5]) == b"<s><|endoftext|>",
       "trained BPE: special tokens not produced by text, decoded literally")
    rt = all(t.decode(t.encode(x)) == x for x in
             (bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))) for _ in range(300)))
    ok(rt, "trained BPE (Python): decode(encode(x)) == x for random bytes")
    for path, what in ((varied, "varied.txt"), (rand_path, "random text"),
                       (u15_path, "Unicode 15.0's new letters and digits")):
        compare("trained BPE, " + what, ["--dir", bpe_dir], ["--dir", bpe_dir], path)

print("1..%d" % n)
sys.exit(1 if failed else 0)
