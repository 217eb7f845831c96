#!/usr/bin/python3
"""make_varied.py - writes tests/tok/varied.txt, the tokenizer parity text:
ASCII, accents (composed and decomposed), CJK, Hangul, emoji, control
characters, unusual whitespace, long words, empty lines, code, numbers,
punctuation, special-token strings, and lines of invalid UTF-8 (for BPE;
WordPiece refuses them). Run once; the output is committed.
  /usr/bin/python3 tests/tok/make_varied.py tests/tok/varied.txt
"""
import sys

lines = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, World! hello world HELLO WORLD",
    "",
    "It's a test: don't, won't, I'm, you're, we've, they'll, he'd. IT'S DON'T 'S 'll",
    "Curly quotes: it\u2019s \u201cquoted\u201d \u2018single\u2019 \u2014 dash \u2013 en\u2026 ellipsis",
    "Accents: caf\u00e9 na\u00efve r\u00e9sum\u00e9 se\u00f1or \u00dcber stra\u00dfe \u00c5ngstr\u00f6m fa\u00e7ade",
    "Decomposed: cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030a o\u0308 \u1e69 s\u0323\u0307 s\u0307\u0323",
    "Vietnamese: Vi\u1ec7t Nam, Ti\u1ebfng Vi\u1ec7t, \u0111\u01b0\u1eddng ph\u1ed1",
    "Greek: \u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u03a3\u0399\u03a3\u03a5\u03a6\u039f\u03a3 \u03bb\u03cc\u03b3\u03bf\u03c2 \u03a3 \u0391\u03a3. \u0391\u03a3\u0392",
    "Turkish: \u0130stanbul I\u011fdir \u0131\u015f\u0131k KELV\u0130N \u212a \u2126 \u212b",
    "German: GR\u00dcSSE Stra\u00dfe \u1e9e \ufb01nancial \ufb02ow \ufb03",
    "Chinese: \u4e2d\u6587\u5206\u8bcd\u6d4b\u8bd5\uff0c\u8fd9\u662f\u4e00\u4e2a\u53e5\u5b50\u3002\u5317\u4eac\u5927\u5b66",
    "Japanese: \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002\u30ab\u30bf\u30ab\u30ca \uff76\uff80\uff76\uff85",
    "Korean: \ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8 \u1112\u1161\u11ab\u1100\u116e\u11a8 \u1100\u1161",
    "CJK compat and ext: \uf900\uf901 \ufa6d \U00020000\U0002a6d6 \U0002f800 \u3400 \u9fff",
    "Emoji: \U0001f600\U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1eb\U0001f1f7 \u2764\ufe0f #\ufe0f\u20e3",
    "Controls: a\x00b c\x01d e\x07f g\x1bh i\x7fj k\u0085l m\u200bn o\ufeffp q\ufffdr s\u00adt",
    "Separators: a\x1cb\x1dc\x1ed\x1fe f\u2028g\u2029h",
    "Tabs\tand\tspaces   multiple    spaces\t\t end  ",
    "CR\rinside and\u00a0nbsp and\u3000ideographic\u2009thin\u202fnarrow\u205fmath",
    "   leading spaces",
    "trailing spaces   ",
    " ",
    "\t",
    "",
    "",
    "a" * 100,
    "b" * 101,
    "unaffable " + "x" * 150 + " antidisestablishmentarianism supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "Code: def f(x): return x**2 + 1  # comment",
    "    if (a != b && c <= d) { printf(\"%d\\n\", a[i++]); }",
    "for i in range(10):\n",
    "\tself.assertEqual(obj.__dict__['key'], {'a': [1, 2, 3]})",
    "https://example.com/path?query=1&b=2#frag user@example.org",
    "Numbers: 3.14159 1,000,000 42nd 1st 2024-01-01 0x1F 1e-9 -7 +8 \u0663\u0664\u0665 \u00bd \u216b \u00b2 \u2460",
    "Punctuation: !!! ??? ... ,,, ;;; ::: --- ___ ((( ))) [[[ ]]] {{{ }}} <<< >>> @#$%^&*~`|\\/",
    "Inverted: \u00bfQu\u00e9? \u00a1Hola! \u00abguillemets\u00bb \u300cbrackets\u300d \u3010lenticular\u3011 \u00a7 \u00b6 \u2022 \u00b7",
    "Symbols: \u00a9 \u00ae \u2122 \u20ac \u00a3 \u00a5 \u00b0 \u00b1 \u00d7 \u00f7 \u221e \u2248 \u2260 \u2192 \u2190",
    "Specials: [CLS] first [SEP] second [SEP] [PAD][PAD] x[MASK]y [UNK] [cls] [ CLS ] [CLS [MASK]]",
    "BPE specials: <|endoftext|> <s> </s> <pad> <unk> <mask> <|endoftext|><|endoftext|>",
    "Full-width: \uff21\uff22\uff23 \uff41\uff42\uff43 \uff11\uff12\uff13 \uff01\uff1f",
    "Arabic: \u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u0627\u0644\u0652\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u064e\u0651\u0629",
    "Hebrew: \u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd \u05e2\u05d5\u05dc\u05dd",
    "Hindi: \u0939\u093f\u0928\u094d\u0926\u0940 \u0928\u092e\u0938\u094d\u0924\u0947 \u0915\u094d\u0937",
    "Thai: \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
    "Russian: \u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0401\u043b\u043a\u0430 \u0419\u043e\u0433\u0443\u0440\u0442",
    "Zalgo: Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034da\u036b\u0357\u0364\u0365\u0309\u030c",
    "Combining only: \u0301\u0302 \u0308 x\u0301\u0301\u0301",
    "Mixed: caf\u00e9\u4e2d\u6587abc123\U0001f600def \u00e9\u00e9\u00e9 ''' \"\"\" `backticks`",
    "'s's 'S 'tis y'all rock'n'roll o'clock ''quoted''",
    "  two leading then\n",
    "end of text",
]
out = "\n".join(lines).encode("utf-8")
invalid = [
    b"Invalid: \xff\xfe bytes",
    b"Lone continuation \x80\x81 and lead \xc3 end",
    b"Overlong \xc0\xaf \xe0\x80\xaf surrogate \xed\xa0\x80 big \xf4\x90\x80\x80",
    b"Truncated emoji \xf0\x9f\x98 then ok \xf0\x9f\x98\x80",
    b"\xe4\xb8 CJK cut \xe4\xb8\xad",
    b"Mixed \xff'sx \xffabc abc\xff 123\xff456 \xff \xff\xff  \xfe",
]
out += b"\n" + b"\n".join(invalid) + b"\n"
with open(sys.argv[1], "wb") as f:
    f.write(out)
