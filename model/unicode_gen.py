#!/usr/bin/python3
"""unicode_gen.py - generates tok_unicode_tables.h, the Unicode tables of the
C tokenizers (run at build time by meson), from the sources their reference
implementations use, so C and model/train/tokref.py agree:

  * the GPT-2 pre-tokeniser classes (bits 0-1) from model/tok_bpe_classes.txt,
    Unicode 15.0.0: GPT-2's pattern is run by the `regex` module, whose
    tables are Unicode 15.0 in Debian 12's python3-regex (2022.10.31; later
    releases move on to 15.1 and 16.0), not by Python 3.11's unicodedata
    (14.0.0: 4,388 code points, new letters and digits, would differ). The
    file is extracted from the Unicode Character Database with --extract and
    committed, so a build needs no UCD files (nor network: the GPU machines
    build too);
  * everything else (the BERT classes, lower case, NFD/NFC) from Python's
    unicodedata, which Hugging Face's BertTokenizer uses.

Generated (all static const, included by model/tok_unicode.c only):
  tu_stage1[cp >> 7] -> block, tu_stage2[block * 128 + (cp & 127)] -> uint32:
    bits 0-1  GPT-2 pre-tokeniser class: 0 other, 1 letter (L*), 2 number
              (N*), 3 whitespace (Unicode White_Space, the `regex` module's
              \\s), all of Unicode 15.0.0
    bit 2     BERT whitespace (" \\t\\n\\r" or Zs)
    bit 3     BERT control (category C* except \\t \\n \\r)
    bit 4     BERT punctuation (P* or ASCII 33-47, 58-64, 91-96, 123-126)
    bit 5     category Mn
    bit 6     str.isspace()
    bit 7     has a lower-case mapping (str.lower() != itself)
    bit 8     has a canonical decomposition (Hangul syllables excluded: they
              are decomposed algorithmically)
    bits 16-23 canonical combining class
  tu_lower_*: sorted code points -> str.lower() (full mapping, 1-3 cps)
  tu_decomp_*: sorted code points -> full canonical decomposition (NFD)
  tu_comp_*: sorted (first << 21 | second) -> primary composite (pairs whose
             composite is not excluded from NFC; Hangul algorithmic)

It also checks the facts model/tok_unicode.c relies on and fails the build if
a Unicode version breaks them: str.lower() is idempotent, NFC of lower-cased
text is lower-case, and no canonical composition needs more than the tables.

Usage: unicode_gen.py OUTPUT.h
       unicode_gen.py --extract UCD_DIR CLASSES_TXT
--extract writes the classes file from UCD_DIR (Debian 12's unicode-data
package: /usr/share/unicode) and refuses any version but UCD_VERSION: a new
version is a deliberate change (re-extract, check with tests/tok/parity.py
against the `regex` module, commit), never a side effect of a package update.
"""

import os
import sys
import unicodedata as ud

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train"))
import tokref  # noqa: E402  (reads tok_bpe_classes.txt, as the reference does)

UCD_VERSION = "15.0.0"

BLOCK = 128
NCP = 0x110000


def is_hangul_syllable(cp):
    return 0xAC00 <= cp <= 0xD7A3


def props(cp, bpe_classes):
    c = chr(cp)
    cat = ud.category(c)
    f = bpe_classes[cp]
    if c in " \t\n\r" or cat == "Zs":
        f |= 1 << 2
    if c not in "\t\n\r" and cat[0] == "C":
        f |= 1 << 3
    if (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
            or cat[0] == "P"):
        f |= 1 << 4
    if cat == "Mn":
        f |= 1 << 5
    if c.isspace():
        f |= 1 << 6
    if 0xD800 <= cp <= 0xDFFF:
        low = c
    else:
        low = c.lower()
    if low != c:
        f |= 1 << 7
    if not is_hangul_syllable(cp) and not (0xD800 <= cp <= 0xDFFF):
        if ud.normalize("NFD", c) != c:
            f |= 1 << 8
    f |= ud.combining(c) << 16
    return f


def ucd_ranges(path, want):
    """{value: [cp...]} of a UCD property file ("A..B ; value # ...") for the
    values in want; checks the file's version line."""
    out = {v: [] for v in want}
    with open(path, encoding="utf-8") as f:
        first = f.readline()
        if not first.startswith("# ") or ("-%s.txt" % UCD_VERSION) not in first:
            raise SystemExit("unicode_gen: %s is not Unicode %s (%s)"
                             % (path, UCD_VERSION, first.strip()))
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            rng, val = [x.strip() for x in line.split(";")[:2]]
            if val in out:
                a, _, b = rng.partition("..")
                out[val].extend(range(int(a, 16), int(b or a, 16) + 1))
    return out


def extract(ucd_dir, out_path):
    """Writes the GPT-2 classes of Unicode UCD_VERSION: S = White_Space (the
    `regex` module's \\s), L = General_Category L*, N = N*."""
    cats = ["Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No"]
    gc = ucd_ranges(os.path.join(ucd_dir, "extracted", "DerivedGeneralCategory.txt"), cats)
    ws = ucd_ranges(os.path.join(ucd_dir, "PropList.txt"), ["White_Space"])["White_Space"]
    cls = bytearray(NCP)
    for cat in cats:
        for cp in gc[cat]:
            cls[cp] = 1 if cat[0] == "L" else 2
    for cp in ws:
        cls[cp] = 3
    o = ["# tok_bpe_classes.txt - the GPT-2 pre-tokeniser's character classes of",
         "# Unicode %s (S White_Space, L letters, N numbers; the rest: other)," % UCD_VERSION,
         "# written by model/unicode_gen.py --extract from the Unicode Character",
         "# Database (Debian 12's unicode-data). Do not edit.",
         "version %s" % UCD_VERSION]
    start = 0
    for cp in range(1, NCP + 1):
        if cp == NCP or cls[cp] != cls[start]:
            if cls[start]:
                rng = "%04X" % start if cp - 1 == start else "%04X..%04X" % (start, cp - 1)
                o.append("%s %s" % (rng, "?LNS"[cls[start]]))
            start = cp
    with open(out_path, "w", encoding="ascii") as f:
        f.write("\n".join(o) + "\n")


def main(out_path):
    version, bpe_classes = tokref.bpe_classes()
    if version != UCD_VERSION:
        raise SystemExit("unicode_gen: %s is Unicode %s, want %s"
                         % (tokref.BPE_CLASSES, version, UCD_VERSION))
    # properties, two-stage
    blocks = {}
    block_list = []
    stage1 = []
    for b in range(NCP // BLOCK):
        vals = tuple(props(cp, bpe_classes) for cp in range(b * BLOCK, (b + 1) * BLOCK))
        idx = blocks.get(vals)
        if idx is None:
            idx = len(block_list)
            blocks[vals] = idx
            block_list.append(vals)
        stage1.append(idx)

    lower = []
    decomp = []
    for cp in range(NCP):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        low = c.lower()
        if low != c:
            lower.append((cp, [ord(x) for x in low]))
            if low.lower() != low:
                raise SystemExit("unicode_gen: lower() of U+%04X not idempotent" % cp)
        n = ud.normalize("NFC", low)
        if n.lower() != n:
            raise SystemExit("unicode_gen: NFC(lower(U+%04X)) not lower-case" % cp)
        if not is_hangul_syllable(cp):
            d = ud.normalize("NFD", c)
            if d != c:
                decomp.append((cp, [ord(x) for x in d]))

    comp = []
    for cp in range(NCP):
        if 0xD800 <= cp <= 0xDFFF or is_hangul_syllable(cp):
            continue
        d = ud.decomposition(chr(cp))
        if not d or d.startswith("<"):
            continue
        parts = [int(x, 16) for x in d.split()]
        if len(parts) == 2 and ud.normalize("NFC", chr(cp)) == chr(cp):
            a, b = parts
            comp.append(((a << 21) | b, cp))
            la, lb = chr(a), chr(b)
            if la.lower() == la and lb.lower() == lb and chr(cp).lower() != chr(cp):
                raise SystemExit("unicode_gen: composite U+%04X of lower-case parts "
                                 "is not lower-case" % cp)
    comp.sort()

    o = []
    o.append("/* tok_unicode_tables.h - generated by model/unicode_gen.py: GPT-2 "
             "classes of Unicode %s, the rest from Python's unicodedata %s. "
             "Do not edit. */" % (version, ud.unidata_version))
    o.append("#define TU_UNIDATA_VERSION \"%s\"" % ud.unidata_version)
    o.append("#define TU_BPE_UNICODE_VERSION \"%s\"" % version)
    o.append("#define TU_BLOCK %d" % BLOCK)

    def arr(ctype, name, vals, per=12):
        o.append("static const %s %s[%d] = {" % (ctype, name, len(vals)))
        for i in range(0, len(vals), per):
            o.append("  " + ", ".join(str(v) for v in vals[i:i + per]) + ",")
        o.append("};")

    arr("uint16_t", "tu_stage1", stage1, 16)
    flat = [v for blk in block_list for v in blk]
    arr("uint32_t", "tu_stage2", ["%uu" % v for v in flat], 8)

    def mapping(prefix, items):
        cps, offs, lens, pool = [], [], [], []
        for cp, seq in items:
            cps.append(cp)
            offs.append(len(pool))
            lens.append(len(seq))
            pool.extend(seq)
        arr("uint32_t", "tu_%s_cp" % prefix, cps)
        arr("uint16_t", "tu_%s_off" % prefix, offs)
        arr("uint8_t", "tu_%s_len" % prefix, lens, 24)
        arr("uint32_t", "tu_%s_pool" % prefix, pool)
        o.append("#define TU_%s_COUNT %d" % (prefix.upper(), len(cps)))

    mapping("lower", lower)
    mapping("decomp", decomp)
    arr("uint64_t", "tu_comp_key", ["%uull" % k for k, _ in comp], 6)
    arr("uint32_t", "tu_comp_val", [v for _, v in comp])
    o.append("#define TU_COMP_COUNT %d" % len(comp))
    with open(out_path, "w", encoding="ascii") as f:
        f.write("\n".join(o) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--extract":
        extract(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2:
        main(sys.argv[1])
    else:
        raise SystemExit("usage: unicode_gen.py OUTPUT.h | --extract UCD_DIR CLASSES_TXT")
