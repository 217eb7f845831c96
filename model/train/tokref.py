#!/usr/bin/python3
"""tokref.py - reference tokenizers in pure Python (stdlib only), the oracle
that the C tokenizers in model/tok.c are tested against.

Written from the published algorithms:

* WordPiece as Hugging Face's (slow) BertTokenizer does it: special tokens
  written in the text are kept whole; with do_lower_case every other character
  is lower-cased on its own (str.lower, full mapping, no context: a final
  capital sigma becomes σ, not ς, as in HF's tokenize()); then the
  basic tokenizer: clean text (drop NUL, U+FFFD and category C* except
  \\t \\n \\r; whitespace -> space), pad CJK ideographs with spaces, NFC,
  split on str.isspace, lower-case / strip accents (NFD, drop Mn), split
  punctuation (Unicode P* plus ASCII symbols); then greedy longest-match-first
  WordPiece with "##" continuations, words over 100 characters -> [UNK].

* GPT-2 byte-level BPE: text is bytes. Pre-tokenisation follows GPT-2's pattern
    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
  evaluated with the stdlib `re` module on the character classes of Unicode
  15.0 in model/tok_bpe_classes.txt (\\s = White_Space, \\p{L}, \\p{N}: the
  `regex` module's, whose Unicode is 15.0 where unicodedata's is 14.0 in
  Python 3.11; tests/tok/parity.py compares them). Invalid UTF-8: the bytes
  are decoded one code point at a time; every byte that does not start a
  well-formed UTF-8 sequence (Unicode Table 3-7: no overlongs, no surrogates,
  <= U+10FFFF) is one "invalid" unit of its own, classed as a symbol (like
  U+FFFD, which is So): it belongs to [^\\s\\p{L}\\p{N}] and groups with neighbouring
  punctuation. (This is Python's errors='surrogateescape'.) Each pre-token's
  bytes are mapped through GPT-2's bytes_to_unicode table and merged by merge
  rank (lowest rank first, all occurrences left to right), then looked up in
  vocab.json. Special tokens ("<|endoftext|>", "<s>", ...) are never produced
  by encoding text: written in the text they are encoded as plain text. They
  decode to their literal strings.

Not here: adding [CLS]/[SEP] or <s>/</s> around sequences, truncation (the
models do that), the clean-up of spaces in HF's decode.

Command line (used by tests/tok/parity.py):
  tokref.py dump (--bpe VOCAB_JSON MERGES_TXT | --wordpiece VOCAB_TXT [--cased]) FILE
prints, for each line of FILE (split on b"\\n"), "L<n> <ids...>" (or "L<n> ERR"
for text WordPiece refuses: invalid UTF-8), then "ALL <ids...>" for the whole
file encoded at once, "VALID <ids...>" for its valid UTF-8 lines joined by
newlines, and "FP <fingerprint>".
"""

import json
import os
import re
import sys
import unicodedata

# --------------------------------------------------------------------------
# Unicode classes for the GPT-2 pattern


def _ranges_to_class(pred):
    """A `re` character class body for all code points where pred(cp)."""
    out = []
    start = None
    for cp in range(0x110000 + 1):
        ok = cp < 0x110000 and pred(cp)
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            end = cp - 1
            if start == end:
                out.append(re.escape(chr(start)))
            else:
                out.append(re.escape(chr(start)) + "-" + re.escape(chr(end)))
            start = None
    return "".join(out)


BPE_CLASSES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                           "tok_bpe_classes.txt")
_BPE_CLASSES = None


def bpe_classes():
    """(Unicode version, bytearray cp -> class) from model/tok_bpe_classes.txt:
    0 other, 1 letter (L*), 2 number (N*), 3 whitespace (White_Space). The
    `regex` module's Unicode 15.0, not unicodedata's (14.0 in Python 3.11);
    model/unicode_gen.py explains. The C tables are built from the same file."""
    global _BPE_CLASSES
    if _BPE_CLASSES is None:
        cls = bytearray(0x110000)
        version = None
        with open(BPE_CLASSES, encoding="ascii") as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                key, val = line.split()
                if key == "version":
                    version = val
                    continue
                a, _, b = key.partition("..")
                k = "LNS".index(val) + 1
                for cp in range(int(a, 16), int(b or a, 16) + 1):
                    cls[cp] = k
        if version is None:
            raise ValueError("%s: no version line" % BPE_CLASSES)
        _BPE_CLASSES = (version, cls)
    return _BPE_CLASSES


def bpe_char_class(cp):
    """0 other, 1 letter, 2 number, 3 whitespace (surrogates -> other)."""
    return bpe_classes()[1][cp]


_GPT2_RE = None


def gpt2_pattern():
    global _GPT2_RE
    if _GPT2_RE is None:
        cls = bpe_classes()[1]
        L = _ranges_to_class(lambda cp: cls[cp] == 1)
        N = _ranges_to_class(lambda cp: cls[cp] == 2)
        S = _ranges_to_class(lambda cp: cls[cp] == 3)
        pat = (r"'s|'t|'re|'ve|'m|'ll|'d"
               r"| ?[" + L + r"]+"
               r"| ?[" + N + r"]+"
               r"| ?[^" + S + L + N + r"]+"
               r"|[" + S + r"]+(?![^" + S + r"])"
               r"|[" + S + r"]+")
        _GPT2_RE = re.compile(pat)
    return _GPT2_RE


def gpt2_pretokenize(data):
    """bytes -> list of bytes pre-tokens (concatenation == data)."""
    text = data.decode("utf-8", errors="surrogateescape")
    return [m.encode("utf-8", errors="surrogateescape")
            for m in gpt2_pattern().findall(text)]


def bytes_to_unicode():
    """GPT-2's reversible map byte -> printable character."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {c: b for b, c in BYTE_ENCODER.items()}


def token_to_bytes(tok):
    """A vocab string -> its bytes (chars outside the byte map: their UTF-8)."""
    out = bytearray()
    for ch in tok:
        b = BYTE_DECODER.get(ch)
        if b is None:
            out += ch.encode("utf-8", errors="surrogatepass")
        else:
            out.append(b)
    return bytes(out)


def fingerprint(paths, extra=b""):
    """The tokenizer fingerprint tok_fingerprint() gives: SHA-256 (hex) of the
    files' bytes concatenated (BPE: vocab.json then merges.txt; WordPiece:
    vocab.txt then "\\nlower=L strip=S")."""
    import hashlib
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    h.update(extra)
    return h.hexdigest()


class ByteBPE:
    """GPT-2 byte-level BPE from vocab.json + merges.txt."""

    def __init__(self, vocab_json, merges_txt):
        with open(vocab_json, "rb") as f:
            self.vocab = json.loads(f.read().decode("utf-8"))
        if not isinstance(self.vocab, dict):
            raise ValueError("%s: not a JSON object" % vocab_json)
        self.id_to_tok = {}
        for k, v in self.vocab.items():
            if not isinstance(v, int) or v < 0:
                raise ValueError("%s: bad id for %r" % (vocab_json, k))
            self.id_to_tok[v] = k
        self.ranks = {}
        with open(merges_txt, "rb") as f:
            lines = f.read().decode("utf-8").split("\n")
        rank = 0
        for i, line in enumerate(lines):
            if line.endswith("\r"):
                line = line[:-1]
            if i == 0 and line.startswith("#version"):
                continue
            if line == "":
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise ValueError("%s:%d: expected two tokens" % (merges_txt, i + 1))
            pair = (parts[0], parts[1])
            if pair not in self.ranks:
                self.ranks[pair] = rank
            rank += 1
        for b in range(256):
            if BYTE_ENCODER[b] not in self.vocab:
                raise ValueError("%s: no token for byte 0x%02x" % (vocab_json, b))
        self.cache = {}
        self.fingerprint = fingerprint([vocab_json, merges_txt])
        self.id_bytes = {i: token_to_bytes(t) for i, t in self.id_to_tok.items()}

    def bpe(self, word):
        """word: a str of byte-map characters -> list of merged symbols."""
        syms = list(word)
        ranks = self.ranks
        while len(syms) > 1:
            best = None
            best_rank = None
            for i in range(len(syms) - 1):
                r = ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank = r
                    best = (syms[i], syms[i + 1])
            if best is None:
                break
            a, b = best
            out = []
            i = 0
            n = len(syms)
            while i < n:
                if i < n - 1 and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            syms = out
        return syms

    def encode_word(self, piece):
        """piece: bytes of one pre-token -> list of ids."""
        ids = self.cache.get(piece)
        if ids is not None:
            return ids
        word = "".join(BYTE_ENCODER[b] for b in piece)
        ids = []
        for s in self.bpe(word):
            i = self.vocab.get(s)
            if i is None:
                # A merge result missing from the vocabulary: its bytes.
                for ch in s:
                    j = self.vocab.get(ch)
                    if j is None:
                        raise ValueError("byte %r not in vocabulary" % ch)
                    ids.append(j)
            else:
                ids.append(i)
        self.cache[piece] = ids
        return ids

    def encode(self, text):
        if isinstance(text, str):
            text = text.encode("utf-8", errors="surrogateescape")
        out = []
        for piece in gpt2_pretokenize(text):
            out.extend(self.encode_word(piece))
        return out

    def decode(self, ids):
        """ids -> bytes."""
        try:
            return b"".join(self.id_bytes[i] for i in ids)
        except KeyError as e:
            raise ValueError("unknown id %s" % e) from None

    def decode_str(self, ids):
        return self.decode(ids).decode("utf-8", errors="replace")

    def token_id(self, tok):
        return self.vocab.get(tok, -1)

    def __len__(self):
        return len(self.id_to_tok)


# --------------------------------------------------------------------------
# WordPiece (HF BertTokenizer)

WP_SPECIALS = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")


def wp_is_whitespace(ch):
    if ch in " \t\n\r":
        return True
    return unicodedata.category(ch) == "Zs"


def wp_is_control(ch):
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch)[0] == "C"


def wp_is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch)[0] == "P"


def wp_is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF
            or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def wp_strip_accents(text):
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn")


class WordPiece:
    """BERT WordPiece from vocab.txt, as HF's BertTokenizer."""

    def __init__(self, vocab_txt, lowercase=True, strip_accents=None,
                 max_chars=100):
        with open(vocab_txt, "r", encoding="utf-8") as f:  # universal newlines
            lines = f.readlines()
        self.vocab = {}
        self.id_to_tok = []
        for i, line in enumerate(lines):
            t = line.rstrip("\n")
            self.vocab[t] = i
            self.id_to_tok.append(t)
        if "[UNK]" not in self.vocab:
            raise ValueError("%s: no [UNK] token" % vocab_txt)
        self.lowercase = bool(lowercase)
        if strip_accents is None or strip_accents == -1:
            self.strip = self.lowercase
        else:
            self.strip = bool(strip_accents)
        self.max_chars = max_chars
        self.unk = self.vocab["[UNK]"]
        self.specials = list(WP_SPECIALS)
        self.fingerprint = fingerprint(
            [vocab_txt], b"\nlower=%d strip=%d" % (self.lowercase, self.strip))

    def split_specials(self, text):
        """-> list of (is_special, str), leftmost-longest special matches."""
        out = []
        i = 0
        start = 0
        n = len(text)
        while i < n:
            best = None
            if text[i] == "[":
                for s in self.specials:
                    if text.startswith(s, i) and (best is None or len(s) > len(best)):
                        best = s
            if best is not None:
                if start < i:
                    out.append((False, text[start:i]))
                out.append((True, best))
                i += len(best)
                start = i
            else:
                i += 1
        if start < n:
            out.append((False, text[start:]))
        return out

    def basic(self, text):
        # clean text
        buf = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or wp_is_control(ch):
                continue
            buf.append(" " if wp_is_whitespace(ch) else ch)
        # CJK
        buf2 = []
        for ch in buf:
            if wp_is_cjk(ord(ch)):
                buf2.append(" ")
                buf2.append(ch)
                buf2.append(" ")
            else:
                buf2.append(ch)
        text = unicodedata.normalize("NFC", "".join(buf2))
        out = []
        for tok in text.split():
            if tok in WP_SPECIALS:  # never_split
                out.append(tok)
                continue
            if self.lowercase:
                tok = tok.lower()
            if self.strip:
                tok = wp_strip_accents(tok)
            cur = []
            for ch in tok:
                if wp_is_punctuation(ch):
                    if cur:
                        out.append("".join(cur))
                        cur = []
                    out.append(ch)
                else:
                    cur.append(ch)
            if cur:
                out.append("".join(cur))
        # whitespace_tokenize(" ".join(split_tokens)): drops empty pieces and
        # splits pieces that still contain whitespace.
        res = []
        for t in out:
            res.extend(t.split())
        return res

    def wordpiece(self, word):
        if len(word) > self.max_chars:
            return [self.unk]
        ids = []
        start = 0
        n = len(word)
        while start < n:
            end = n
            cur = None
            while start < end:
                sub = word[start:end]
                if start > 0:
                    sub = "##" + sub
                j = self.vocab.get(sub)
                if j is not None:
                    cur = j
                    break
                end -= 1
            if cur is None:
                return [self.unk]
            ids.append(cur)
            start = end
        return ids

    def encode(self, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8")  # UnicodeDecodeError for invalid
        ids = []
        for special, seg in self.split_specials(text):
            if special:
                ids.append(self.vocab.get(seg, self.unk))
                continue
            if self.lowercase:
                # HF lowercases the text outside special tokens char by char
                # ('.' does not match a newline, which stays as it is).
                seg = "".join(c if c == "\n" else c.lower() for c in seg)
            for w in self.basic(seg):
                ids.extend(self.wordpiece(w))
        return ids

    def tokens(self, ids):
        try:
            return [self.id_to_tok[i] if i >= 0 else None for i in ids]
        except IndexError:
            raise ValueError("unknown id") from None

    def decode(self, ids):
        """HF convert_tokens_to_string: ' '.join, ' ##' removed, stripped."""
        toks = self.tokens(ids)
        if any(t is None for t in toks):
            raise ValueError("unknown id")
        return " ".join(toks).replace(" ##", "").strip()

    def token_id(self, tok):
        return self.vocab.get(tok, -1)

    def __len__(self):
        return len(self.id_to_tok)


def load_dir(path):
    """A model directory: vocab.json + merges.txt (BPE) or vocab.txt."""
    vj = os.path.join(path, "vocab.json")
    mt = os.path.join(path, "merges.txt")
    if os.path.exists(vj) and os.path.exists(mt):
        return ByteBPE(vj, mt)
    vt = os.path.join(path, "vocab.txt")
    if os.path.exists(vt):
        lower, strip = True, None
        cfg = os.path.join(path, "tokenizer_config.json")
        if os.path.exists(cfg):
            with open(cfg, "rb") as f:
                c = json.loads(f.read().decode("utf-8"))
            if isinstance(c.get("do_lower_case"), bool):
                lower = c["do_lower_case"]
            if isinstance(c.get("strip_accents"), bool):
                strip = c["strip_accents"]
        return WordPiece(vt, lower, strip)
    raise FileNotFoundError("%s: no vocab.json+merges.txt or vocab.txt" % path)


def _main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="reference tokenizers")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump", help="print ids per line and for the whole file")
    d.add_argument("--bpe", nargs=2, metavar=("VOCAB_JSON", "MERGES_TXT"))
    d.add_argument("--wordpiece", metavar="VOCAB_TXT")
    d.add_argument("--cased", action="store_true")
    d.add_argument("--dir")
    d.add_argument("file")
    e = sub.add_parser("bench", help="time BPE encoding of files")
    e.add_argument("--bpe", nargs=2, required=True)
    e.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    if a.cmd == "bench":
        import time
        t = ByteBPE(*a.bpe)
        total = 0
        n = 0
        gpt2_pattern()
        t0, c0 = time.time(), time.process_time()
        for p in a.files:
            with open(p, "rb") as f:
                data = f.read()
            total += len(data)
            n += len(t.encode(data))
        dt, dc = time.time() - t0, time.process_time() - c0
        print("%d bytes %d tokens %.2f s %.3f MB/s; cpu %.2f s %.3f MB/s"
              % (total, n, dt, total / dt / 1e6, dc, total / dc / 1e6))
        return 0
    if a.bpe:
        t = ByteBPE(*a.bpe)
    elif a.wordpiece:
        t = WordPiece(a.wordpiece, not a.cased, None)
    elif a.dir:
        t = load_dir(a.dir)
    else:
        ap.error("one of --bpe, --wordpiece, --dir")
    with open(a.file, "rb") as f:
        data = f.read()
    out = []
    for i, line in enumerate(data.split(b"\n")):
        try:
            ids = t.encode(line)
            out.append("L%d %s" % (i + 1, " ".join(map(str, ids))))
        except UnicodeDecodeError:
            out.append("L%d ERR" % (i + 1))
    try:
        out.append("ALL %s" % " ".join(map(str, t.encode(data))))
    except UnicodeDecodeError:
        out.append("ALL ERR")
    valid = []
    for line in data.split(b"\n"):
        try:
            line.decode("utf-8")
            valid.append(line)
        except UnicodeDecodeError:
            pass
    out.append("VALID %s" % " ".join(map(str, t.encode(b"\n".join(valid)))))
    out.append("FP %s" % t.fingerprint)
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
