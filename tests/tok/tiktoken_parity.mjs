// tiktoken_parity.mjs - the C GPT-2 BPE tokenizer (through tests/tok/tokdump)
// against OpenAI's tiktoken (npm `tiktoken`, its Rust core compiled to
// WebAssembly), an implementation we did not write, on the real GPT-2
// vocabulary. That vocabulary ships inside the tiktoken package as ranks
// (base64 token bytes, rank = GPT-2 id); this script turns it back into
// vocab.json and merges.txt, the files `retro` loads, so the check needs
// nothing beside the repository. Compared: random text over many scripts,
// whitespace kinds and GPT-2's contractions, line by line; and the
// repository's own text files, whole. Only valid UTF-8 (a JS string cannot
// hold anything else). TAP on stdout.
//   node tiktoken_parity.mjs TOKDUMP SOURCE_ROOT WORK_DIR   (run from the npm cache)
import { get_encoding } from "tiktoken";
import { execFileSync } from "child_process";
import { createRequire } from "module";
import fs from "fs";
import path from "path";
import { ok, done } from "./tap.mjs";

const [tokdump, srcRoot, work] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const spec = require("tiktoken/encoders/gpt2.json");
const enc = get_encoding("gpt2");

// ranks: token bytes (as a latin1 string, one char per byte) -> rank
const ranks = new Map();
const fields = spec.bpe_ranks.split(" ");
for (let i = 2; i < fields.length; i++) // "! 0" opens the list: offset 0
  ranks.set(Buffer.from(fields[i], "base64").toString("latin1"), i - 2);
ok(ranks.size === 50256 && spec.special_tokens["<|endoftext|>"] === 50256,
  "tiktoken's gpt2 ranks: 50,256 tokens and <|endoftext|> = 50256", ranks.size);

// GPT-2's byte -> printable character table (its vocab.json's alphabet)
function bytesToUnicode() {
  const bs = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const map = new Array(256);
  bs.forEach((b, i) => { map[b] = String.fromCodePoint(cs[i]); });
  return map;
}
const b2u = bytesToUnicode();
const printable = (s) => Array.from(s, (c) => b2u[c.charCodeAt(0)]).join("");

// Each token above the 256 bytes is one merge: byte-pair encoding of its
// bytes with only the merges ranked below it ends in the two halves it joins.
function halves(token, rank) {
  let parts = Array.from(token);
  for (;;) {
    let best = -1, bestRank = rank;
    for (let i = 0; i + 1 < parts.length; i++) {
      const r = ranks.get(parts[i] + parts[i + 1]);
      if (r !== undefined && r < bestRank) { best = i; bestRank = r; }
    }
    if (best < 0) return parts;
    parts = parts.slice(0, best).concat(parts[best] + parts[best + 1], parts.slice(best + 2));
  }
}
const byRank = Array.from(ranks.entries()).sort((a, b) => a[1] - b[1]);
const vocab = {};
const merges = ["#version: 0.2"];
let badMerges = 0;
for (const [token, rank] of byRank) {
  vocab[printable(token)] = rank;
  if (rank < 256) continue;
  const h = halves(token, rank);
  if (h.length !== 2) badMerges++;
  else merges.push(printable(h[0]) + " " + printable(h[1]));
}
vocab["<|endoftext|>"] = 50256;
ok(badMerges === 0 && merges.length === 50001, "every token above the bytes splits into one merge (50,000)",
  { badMerges, merges: merges.length - 1 });
fs.mkdirSync(work, { recursive: true });
const vocabPath = path.join(work, "vocab.json"), mergesPath = path.join(work, "merges.txt");
fs.writeFileSync(vocabPath, JSON.stringify(vocab));
fs.writeFileSync(mergesPath, merges.join("\n") + "\n");

// Our ids by tokdump's tag: for FILE, each line (L1, L2, ...) and the whole
// file (ALL); with "--whole" first and several files, each file whole (F0, F1, ...).
function ours(...files) {
  const mode = files[0] === "--whole" ? [files.shift()] : [];
  const out = execFileSync(tokdump, [...mode, "--bpe", vocabPath, mergesPath, ...files],
    { encoding: "utf8", maxBuffer: 1 << 30 });
  const ids = new Map();
  for (const l of out.split("\n")) {
    const m = /^(L\d+|ALL|F\d+) ?(.*)$/.exec(l);
    if (m) ids.set(m[1], m[2].trim() === "" ? [] : m[2].trim().split(" ").map(Number));
  }
  return ids;
}
const theirs = (text) => Array.from(enc.encode(text, [], [])); // specials are text, as in retro
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
function firstDiff(a, b) {
  let k = 0;
  while (k < a.length && a[k] === b[k]) k++;
  return { at: k, tiktoken: a.slice(k, k + 6), ours: b.slice(k, k + 6) };
}

// Random lines: code points from many blocks (letters, marks, digits of
// other scripts, symbols, emoji, private use, astral planes), Unicode's many
// spaces, and the pieces GPT-2's pattern treats specially.
let seed = 0x9e3779b9;
function rnd(n) { // xorshift32, reproducible
  seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
  return seed % n;
}
const blocks = [[0x20, 0x7e], [0x20, 0x7e], [0x20, 0x7e], [0x20, 0x7e], [0xa0, 0xff], [0x100, 0x24f],
  [0x300, 0x36f], [0x370, 0x3ff], [0x400, 0x4ff], [0x590, 0x5ff], [0x600, 0x6ff], [0x900, 0x97f],
  [0xe00, 0xe7f], [0x1100, 0x11ff], [0x2000, 0x206f], [0x2100, 0x218f], [0x3000, 0x303f],
  [0x4e00, 0x4e80], [0xac00, 0xac40], [0xe000, 0xe010], [0xfb00, 0xfb4f], [0xfe00, 0xfe0f],
  [0xff10, 0xff5a], [0x10000, 0x1007f], [0x1d400, 0x1d7ff], [0x1f1e6, 0x1f1ff], [0x1f300, 0x1f64f],
  [0x20000, 0x20040], [0xe0000, 0xe007f]];
const spaces = [" ", "  ", "   ", "\t", "\r", "\v", "\f", "\u0085", "\u00a0", "\u1680", "\u2000",
  "\u2009", "\u200b", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff"];
const pieces = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "''s", " 's", "don't",
  " the", "123", "4567", "1.5e10", "3,000", "__init__", "...", "--", "->", "http://x.y/z?a=b",
  "<|endoftext|>", "\ufb01", "\u00e9", "e\u0301", "\u{1f468}\u200d\u{1f469}\u200d\u{1f467}"];
function randomLine() {
  let s = "";
  for (let j = 1 + rnd(30); j > 0; j--) {
    const r = rnd(100);
    if (r < 15) s += spaces[rnd(spaces.length)];
    else if (r < 30) s += pieces[rnd(pieces.length)];
    else {
      const [lo, hi] = blocks[rnd(blocks.length)];
      for (let k = 1 + rnd(8); k > 0; k--) {
        const cp = lo + rnd(hi - lo + 1);
        if (cp !== 0x0a && (cp < 0xd800 || cp > 0xdfff)) s += String.fromCodePoint(cp);
      }
    }
  }
  return s;
}
const lines = Array.from({ length: 20000 }, randomLine);
const randomFile = path.join(work, "random.txt");
fs.writeFileSync(randomFile, lines.join("\n"));
const got = ours(randomFile);
let differ = 0, example = null;
lines.forEach((line, i) => {
  const want = theirs(line), have = got.get("L" + (i + 1)) || [];
  if (!same(want, have)) { differ++; example = example || { line, ...firstDiff(want, have) }; }
});
ok(differ === 0, `20,000 random lines: the same ids as tiktoken (${differ} differ)`, example);
const whole = lines.join("\n");
ok(same(theirs(whole), got.get("ALL") || []), "the same lines as one text, newlines included",
  firstDiff(theirs(whole), got.get("ALL") || []));

// Real text: the repository's own documents and sources, each file whole.
const exts = new Set([".md", ".c", ".h", ".py", ".sh", ".json", ".mjs", ".txt", ".html", ".build"]);
function walk(dir, out) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith(".") || e.name.startsWith("build") || e.name === "node_modules") continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (exts.has(path.extname(e.name)) && fs.statSync(p).size < (4 << 20)) out.push(p);
  }
  return out;
}
const files = walk(srcRoot, []).sort();
const decoder = new TextDecoder("utf-8", { fatal: true });
const texts = new Map(); // the UTF-8 ones
for (const f of files) {
  try { texts.set(f, decoder.decode(fs.readFileSync(f))); } catch { } // not UTF-8
}
const oursWhole = ours("--whole", ...texts.keys()); // one process for them all
let fileDiffer = 0, fileExample = null, bytes = 0, i = 0;
for (const [f, text] of texts) {
  bytes += text.length;
  const want = theirs(text), have = oursWhole.get("F" + i++) || [];
  if (!same(want, have)) { fileDiffer++; fileExample = fileExample || { file: f, ...firstDiff(want, have) }; }
}
ok(files.length > 100 && fileDiffer === 0,
  `${files.length} of the repository's files (${(bytes / 1e6).toFixed(1)} M characters), each whole: the same ids (${fileDiffer} differ)`,
  fileExample);
enc.free();
done();
