"""test_train.py - the 'train' suite (TAP): the model/train/ toolchain on a
tiny generated corpus, end to end on CPU, and the C runtime on its exports.

  1. prep.py: held-out split, BPE training, token arrays; tokenizer round
     trip (tokref) and C tokenizer ids == tokref ids
  2. encoder_train.py (RetroMAE + contrastive, a few steps) exports an HF
     RoBERTa directory; C bert_embed_ids == PyTorch embeddings (<= 1e-4)
  3. neighbours.py: shapes, no same-document training neighbour, grounded
     top-1 is the chunk itself
  4. retro_train.py baseline, then RETRO-fit from it, then resume; RETRO
     [OFF] of the fitted model == the baseline exactly; C retro_forward ==
     PyTorch logits with neighbours (<= 1e-4)
  5. evaluate.py prints every row of the table
  6. neighbours from the C database: prep.py --align-chunks, `retro index`
     and `retro neighbours`, c_neighbours.py; the dump's tokens are the
     trainer's chunks, the C [N, F] values are common.ChunkDB's, the rules
     hold, top-1 agrees with neighbours.py, RETRO-fit and evaluate.py run on
     the converted folder (pad targets not scored), C logits == PyTorch
  7. the synthetic copy task: the loss on tokens present in a neighbour falls
     far below the loss on tokens that are not
  8. model/default/: C loads the committed encoder and decoder and matches
     PyTorch (skipped when the folder is absent)
  9. (with part 6's database) qp_mine.py mines query -> passage pairs
     (held-out documents give validation pairs only; the query text is
     removed from its passage), qp_finetune.py trains two steps and exports
     F16; C bert_embed_ids == PyTorch on the export
 10. (the same) rerank_mine.py takes each pair's candidates from a real
     `retro serve`'s hybrid search, rerank_train.py trains two steps and
     exports an F16 reranker; C rerank_score == PyTorch on the export
 11. qp_docstrings.py: the standard library's docstring summaries of a
     corpus's signatures, which qp_mine.py --docstrings makes queries

usage: test_train.py TRAIN_C_DUMP SOURCE_ROOT [RETRO]
(RETRO: the `retro` binary; part 6 is skipped without it)
"""
import contextlib
import json
import math
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

DUMP, ROOT = sys.argv[1], sys.argv[2]
RETRO = sys.argv[3] if len(sys.argv) > 3 else None
TRAIN = os.path.join(ROOT, "model", "train")
sys.path.insert(0, TRAIN)
PY = sys.executable
N = 0
FAILED = 0
T0 = time.time()


def ok(cond, desc, detail=""):
    global N, FAILED
    N += 1
    detail = str(detail).replace("\n", " | ")  # one TAP line, whatever the detail
    print(("ok" if cond else "not ok") + f" {N} - {desc}" + (f" # {detail}" if detail else ""), flush=True)
    if not cond:
        FAILED += 1
    return cond


def note(msg):
    print(f"# [{time.time() - T0:6.1f}s] {msg}", flush=True)


def run(args, name):
    """Runs a training script; returns its output (stdout+stderr)."""
    p = subprocess.run([PY, os.path.join(TRAIN, args[0])] + args[1:], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    out = p.stdout
    if not ok(p.returncode == 0, f"{name} exits 0"):
        print("# " + out[-3000:].replace("\n", "\n# "))
    return out


def c_dump(mode, model_dir, payload, tmp, text=None):
    """Runs train_c_dump; payload: bytes for IN. Returns the OUT bytes or None."""
    inp = os.path.join(tmp, f"c_{mode}.in")
    out = os.path.join(tmp, f"c_{mode}.out")
    with open(inp, "wb") as f:
        f.write(payload)
    p = subprocess.run([DUMP, mode, model_dir, inp, out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if p.returncode != 0:
        print("# train_c_dump: " + p.stdout.strip().replace("\n", "\n# "))
        return None
    with open(out, "rb") as f:
        return f.read()


def i32(*vals):
    return struct.pack(f"<{len(vals)}i", *vals)


WORDS = ("the a function returns value list object module file string number error type class method "
         "argument default keyword raise call import data buffer index key item loop thread lock queue "
         "socket path read write open close parse format encode decode byte stream iterator generator "
         "context manager attribute instance").split()


def make_corpus(folder, n_docs=16, seed=3):
    """Generated documents: random sentences plus sentences shared between
    documents (so that cross-document neighbours exist)."""
    rng = random.Random(seed)
    shared = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."
              for _ in range(30)]
    os.makedirs(folder, exist_ok=True)
    for d in range(n_docs):
        lines = [f"Document {d}", "=" * 12, ""]
        for _ in range(60):
            if rng.random() < 0.3:
                lines.append(rng.choice(shared))
            else:
                lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))).capitalize() + ".")
        with open(os.path.join(folder, f"doc{d:02d}.rst.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")


def compare_dump(kind, fn, what, model_dir, payload, ref, tmp, tol, label):
    """train_c_dump KIND's float32 output (C's fn) against ref, within tol."""
    out = c_dump(kind, model_dir, payload, tmp)
    if not ok(out is not None, f"{label}: C {fn} runs"):
        return
    got = np.frombuffer(out, dtype="<f4").reshape(ref.shape)
    diff = float(np.abs(got - ref).max())
    ok(diff <= tol, f"{label}: C {what} == PyTorch {what} (max |diff| {diff:.2e} <= {tol:g})")


def compare_retro(model_dir, tokens, nb, pad, tmp, tol, label):
    """C vs PyTorch logits for tokens (n,) and neighbours (chunks, k, r)."""
    import torch
    from retro_model import Retro
    m = Retro.load(model_dir)
    m.use_sdpa = False
    m.eval()
    with torch.no_grad():
        ref = m(torch.tensor(tokens)[None].long(), torch.tensor(nb)[None].long(), pad_id=pad)[0].numpy()
    chunks, k, r = nb.shape
    payload = i32(len(tokens), *tokens) + i32(chunks, k, r, pad) + np.asarray(nb, dtype="<i4").tobytes()
    compare_dump("retro", "retro_forward", "logits", model_dir, payload, ref, tmp, tol, label)


def compare_bert(model_dir, seqs, tmp, tol, label):
    import torch
    from bert_model import BertEncoder
    from encoder_train import with_specials
    enc = BertEncoder.load(model_dir).eval()
    cfg = enc.config
    payload = i32(len(seqs))
    refs = []
    for s in seqs:
        payload += i32(len(s), *s)
        ids = with_specials(torch.tensor(s)[None].long(), cfg["bos_token_id"], cfg["eos_token_id"])
        with torch.no_grad():
            refs.append(enc.embed(ids, torch.ones_like(ids))[0].numpy())
    ref = np.stack(refs)
    compare_dump("bert", "bert_embed_ids", "embeddings", model_dir, payload, ref, tmp, tol, label)


def spread_encoder(src, dst, seed=5):
    """A copy of the encoder at src with its embedding and Linear weights
    redrawn at unit-ish scale (as make_random_bert.py draws them). The tiny
    trained encoder maps every chunk to nearly the same vector (cosines >=
    0.9999, top-1/top-2 gaps ~1e-7, below the C-vs-PyTorch rounding), so
    its nearest neighbours are ties; these are not."""
    import shutil
    import torch
    from bert_model import BertEncoder
    m = BertEncoder.load(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, v in m.state_dict().items():
            if v.dim() == 2 and "LayerNorm" not in name:
                scale = 0.5 if "embeddings" in name else math.sqrt(3.0 / v.shape[1])
                v.copy_((torch.rand(v.shape, generator=g) * 2 - 1) * scale)
    m.save_pretrained(dst)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(src, f), os.path.join(dst, f))


def c_route(tmp, corpus_dir, data, base_exp, common_args):
    """Part 6: the trainer on neighbours dumped by the C database."""
    import torch
    import common
    K = 2
    adata = os.path.join(tmp, "adata")
    run(["prep.py", "--corpus", corpus_dir, "--out", adata, "--tokenizer", data, "--heldout", "0.15",
         "--align-chunks"], "prep.py --align-chunks")
    c = common.Corpus(adata)
    names = json.load(open(os.path.join(adata, "docs.json")))
    ctr, cho = c.n_chunks("train"), c.n_chunks("heldout")
    layout_ok = c.aligned and c.ignore_id == c.pad_id
    for split in ("train", "heldout"):
        t, table = c.tokens[split], c.docs[split]
        layout_ok &= len(t) % 64 == 0 and len(table) == len(names[split])
        for i, (first, n) in enumerate(table):
            end = 64 * first + n
            layout_ok &= bool(t[end] == c.eos_id and np.all(t[end + 1:64 * (end // 64 + 1)] == c.pad_id)
                              and np.all(c.chunkdoc[split][first:first + n // 64 + 1] == i))
    ok(layout_ok, "prep --align-chunks: every document starts a chunk, then eos and pad to the chunk end")

    enc = os.path.join(tmp, "enc_spread")
    spread_encoder(os.path.join(tmp, "enc", "export"), enc)
    db, dump, dumpg = (os.path.join(tmp, x) for x in ("cdb", "cdump", "cdump_grd"))
    t0 = time.time()
    steps = [["index", "--data", db, "--encoder", enc, "--decoder", base_exp, "--threads", "1", "-q", corpus_dir],
             ["neighbours", "--data", db, "--out", dump, "-k", str(K + 6), "--threads", "1"],
             ["neighbours", "--data", db, "--out", dumpg, "-k", str(K), "--include-same-doc", "--threads", "1"]]
    for st in steps:
        p = subprocess.run([RETRO] + st, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        label = " ".join(["retro", st[0]] + [x for x in st if x == "--include-same-doc"])
        if not ok(p.returncode == 0, label + " exits 0"):
            print("# " + p.stdout[-2000:].replace("\n", "\n# "))
            return
    note(f"C index + 2 dumps: {time.time() - t0:.2f}s")

    # the dump against the data folder, independently of c_neighbours.py
    ids = np.load(os.path.join(dump, "chunk_ids.npy")).astype(np.int64)
    nums = np.load(os.path.join(dump, "doc_nums.npy")).astype(np.int64)
    ords = np.load(os.path.join(dump, "ordinals.npy")).astype(np.int64)
    toks = np.load(os.path.join(dump, "tokens.npy")).astype(np.int64)
    cdocs = {d["doc_num"]: d["id"] for d in map(json.loads, open(os.path.join(dump, "docs.jsonl")))}
    first = {}
    for split, base in (("train", 0), ("heldout", ctr)):
        for name, (f0, _) in zip(names[split], c.docs[split]):
            first[name] = base + int(f0)
    entry = np.array([first[cdocs[int(n)]] + o for n, o in zip(nums, ords)])
    chunks = np.concatenate([c.chunks("train"), c.chunks("heldout")])
    n_c = (toks >= 0).sum(axis=1)
    same = all(np.array_equal(toks[i, :n_c[i]], chunks[entry[i], :n_c[i]]) and np.all(toks[i, n_c[i]:] == -1)
               for i in range(len(ids)))
    ok(same and len(set(entry.tolist())) == len(entry),
       "C dump tokens == the trainer's chunks (document, ordinal) up to each document's end",
       f"{len(ids)} C chunks, {ctr + cho} trainer chunks")
    # C [N, F] (a chunk, then the next row when it is the next chunk of the same document, srv.h)
    # == common.ChunkDB values
    want = np.full((len(ids), 128), c.pad_id, dtype=np.int64)
    for i in range(len(ids)):
        want[i, :n_c[i]] = toks[i, :n_c[i]]
        j = i + 1
        if j < len(ids) and nums[j] == nums[i] and ords[j] == ords[i] + 1:
            want[i, 64:64 + n_c[j]] = toks[j, :n_c[j]]
    cdb = common.ChunkDB(c, ["train", "heldout"], torch.device("cpu"))
    got = cdb.values(torch.from_numpy(entry)).numpy()
    ok(np.array_equal(got, want), "ChunkDB [N, F] values of aligned data == the C database's neighbour values")

    cnb = os.path.join(tmp, "cnb")
    run(["c_neighbours.py", "--data", adata, "--dump", dump, "--dump-grounded", dumpg, "--out", cnb,
         "--k", str(K)], "c_neighbours.py")
    pnb = os.path.join(tmp, "pnb")
    run(["neighbours.py", "--data", adata, "--encoder", enc, "--out", pnb, "--k", str(K)] + common_args,
        "neighbours.py on the aligned data")
    res = {n: np.load(os.path.join(cnb, n + ".npy")) for n in ("train_knn", "heldout_nolk", "heldout_grd")}
    ref = {n: np.load(os.path.join(pnb, n + ".npy")) for n in res}
    ok(all(res[n].shape == ref[n].shape and res[n].dtype == ref[n].dtype for n in res),
       "c_neighbours.py writes neighbours.py's files (names, shapes, dtypes)")
    knn = res["train_knn"]
    doc = c.chunkdoc["train"][:, 0]
    nxt = np.minimum(np.arange(ctr) + 1, ctr - 1)
    held = (knn >= ctr).sum()
    own = ((knn < ctr) & ((doc[np.minimum(knn, ctr - 1)] == doc[:, None]) |
                          (doc[np.minimum(knn, ctr - 1)] == doc[nxt][:, None]))).sum()
    ok(held == 0 and own == 0 and knn.min() >= 0 and all(len(set(r)) == K for r in knn),
       "train_knn: no neighbour from the chunk's (or the next chunk's) document or a held-out document",
       f"{own} same-document, {held} held-out")
    ok(res["heldout_nolk"].min() >= 0 and res["heldout_nolk"].max() < ctr, "heldout_nolk: training chunks only")
    self_top = float(np.mean(res["heldout_grd"][:, 0] == ctr + np.arange(cho)))
    ok(self_top >= 0.9, "heldout_grd: a held-out chunk's top neighbour is itself", f"{self_top:.2f}")
    # top-1 agreement with exact PyTorch search; neighbours.py embeds a document's last chunk with
    # its eos and padding, the C database without, so compare where both embed the same 64 tokens
    vl = np.concatenate([c.value_lengths("train"), c.value_lengths("heldout")])
    agree = []
    for n, q0 in (("train_knn", 0), ("heldout_nolk", ctr), ("heldout_grd", ctr)):
        full = vl[q0 + np.arange(len(res[n]))] >= 64
        top, top_ref = res[n][:, 0], ref[n][:, 0]
        agree.append((n, float(np.mean(top[full] == top_ref[full])), float(np.mean(top == top_ref))))
    ok(all(a >= 0.95 for _, a, _ in agree), "C top-1 neighbour == neighbours.py's exact top-1 (>= 95%, full chunks)",
       ", ".join(f"{n} {a:.3f} (all rows {b:.3f})" for n, a, b in agree))
    info = json.load(open(os.path.join(cnb, "info.json")))
    note(f"c_neighbours: short rows {info['short_rows']}, borrowed slots {info['borrowed_slots']}, "
         f"{info['chunks_without_c_chunk']} trainer chunks without a C chunk")

    # a dump that is not of the data folder's tokens is refused
    import shutil
    bad = os.path.join(tmp, "cdump_bad")
    shutil.copytree(dump, bad)
    toks[3, 10] = (toks[3, 10] + 1) % c.vocab_size
    np.save(os.path.join(bad, "tokens.npy"), toks.astype("<i4"))
    p = subprocess.run([PY, os.path.join(TRAIN, "c_neighbours.py"), "--data", adata, "--dump", bad, "--out",
                        os.path.join(tmp, "cnb_bad"), "--k", str(K)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    ok(p.returncode != 0 and "differ from the trainer's tokens" in last,
       "c_neighbours.py refuses a dump whose chunk tokens differ from the data folder's", last[:140])

    # RETRO-fit on the converted folder, then evaluation and C parity
    fit = os.path.join(tmp, "cfit")
    out = run(["retro_train.py", "--mode", "retrofit", "--data", adata, "--nb", cnb, "--init", base_exp, "--out", fit,
               "--steps", "2", "--batch", "2", "--seq", "128", "--eval-every", "2", "--eval-windows", "2",
               "--lr", "3e-3", "--warmup", "1"] + common_args, "RETRO-fit on the C neighbours")
    ok("step 2/2" in out and "nolk" in out, "RETRO-fit trains and reports held-out losses on the C neighbours")
    ev_dir = os.path.join(tmp, "ceval")
    run(["evaluate.py", "--data", adata, "--nb", cnb, "--baseline", base_exp, "--retro", os.path.join(fit, "export"),
         "--out", ev_dir, "--seq", "128"] + common_args, "evaluate.py on the C neighbours")
    ev = json.load(open(os.path.join(ev_dir, "eval.json")))
    L = 2
    ho = c.tokens["heldout"]
    tg = np.concatenate([ho[64 * s + 1:64 * s + 129] for s in range(0, cho - L, L)])
    keep = tg != c.pad_id
    rows = ev["rows"]
    ok(rows["baseline"]["tokens"] == int(keep.sum()) and rows["baseline"]["bytes"] == int(c.token_bytes[tg].sum())
       and keep.sum() < len(tg) and abs(rows["baseline"]["bpb"] - rows["RETRO [OFF]"]["bpb"]) < 1e-9,
       "evaluate.py on aligned data: pad targets are not scored; baseline == RETRO [OFF]",
       f"{int(keep.sum())} of {len(tg)} targets")
    nbv = cdb.values(torch.from_numpy(res["heldout_nolk"][:2].astype(np.int64)))  # (2, K, 128)
    compare_retro(os.path.join(fit, "export"), ho[:128].tolist(), nbv.numpy(), c.pad_id, tmp, 1e-4,
                  "RETRO-fit on C neighbours")
    mined = qp_route(tmp, corpus_dir, data, enc, dumpg, set(names["heldout"]), common_args)
    rerank_route(tmp, db, dumpg, mined, enc, common_args)


def rerank_route(tmp, db, dump, mined, enc, common_args):
    """Part 10: a reranker's candidates from the real server's hybrid search
    of the C database (rerank_mine.py), two training steps
    (rerank_train.py), export, C vs PyTorch scores of the export."""
    import torch
    import tokref
    from qp_finetune import dump_rows
    from rerank_train import CrossEncoder, batch, pair_ids
    cands = os.path.join(tmp, "rr_cands")
    run(["rerank_mine.py", "--data", db, "--dump", dump, "--mined", mined, "--out", cands, "--retro", RETRO,
         "-k", "8"], "rerank_mine.py")
    pairs = [json.loads(l) for l in open(os.path.join(mined, "pairs.jsonl"))]
    got = [json.loads(l)["cands"] for l in open(os.path.join(cands, "train.jsonl"))]
    docs = [d for d, _ in dump_rows(dump)[0]]
    ok(len(got) == len(pairs) and any(got) and all(docs[r] != p["doc"] for p, c in zip(pairs, got) for r in c),
       "rerank_mine.py: each pair's hybrid candidates, none of its own document", (len(got), len(pairs)))
    rro = os.path.join(tmp, "rr")
    out = run(["rerank_train.py", "--init", enc, "--mined", mined, "--cands", cands, "--dump", dump, "--out", rro,
               "--steps", "2", "--batch", "2", "--group", "3", "--val-per-kind", "2", "--log-every", "1"]
              + common_args, "rerank_train.py")
    res = json.load(open(os.path.join(rro, "results.json")))
    ok("step 2/2" in out and 0 <= res["after"]["mrr10"] <= 1, "rerank_train.py: two steps, validation MRR", res)
    exp = os.path.join(rro, "export")
    cfg = json.load(open(os.path.join(exp, "config.json")))
    ok(cfg["architectures"] == ["RobertaForSequenceClassification"] and cfg["num_labels"] == 1
       and cfg["torch_dtype"] == "float16", "rerank_train.py: exports a one-label RoBERTa classifier in F16", cfg)
    bpe = tokref.ByteBPE(os.path.join(exp, "vocab.json"), os.path.join(exp, "merges.txt"))
    query = pairs[0]["q"]
    texts = [bpe.decode_str(p["pos"]).replace("\n", " ") for p in pairs[:4]]
    m = CrossEncoder.load(exp).eval()
    bos, eos, pad = bpe.token_id("<s>"), bpe.token_id("</s>"), bpe.token_id("<pad>")
    seqs = [pair_ids(bpe.encode(query), bpe.encode(t), bos, eos, m.enc.max_tokens) for t in texts]
    with torch.no_grad():
        ref = m(*batch(seqs, pad, "cpu")).numpy()
    payload = "\n".join([query] + texts).encode()
    compare_dump("rerank", "rerank_score", "scores", exp, payload, ref, tmp, 1e-4, "trained reranker")


def qp_route(tmp, corpus_dir, data, enc, dump, held, common_args):
    """Part 9: query -> passage pairs mined from the corpus (qp_mine.py) on
    the C database's chunks, two fine-tuning steps (qp_finetune.py), export,
    C vs PyTorch parity of the exported (F16) encoder."""
    import tokref
    mined = os.path.join(tmp, "qp")
    hfile = os.path.join(tmp, "qp_heldout.txt")
    with open(hfile, "w") as f:
        f.write("\n".join(sorted(held)) + "\n")
    out = run(["qp_mine.py", "--corpus", corpus_dir, "--dump", dump, "--tokenizer", data, "--heldout", hfile,
               "--out", mined], "qp_mine.py")
    pairs = [json.loads(l) for l in open(os.path.join(mined, "pairs.jsonl"))]
    val = [json.loads(l) for l in open(os.path.join(mined, "val.jsonl"))]
    ok(len(pairs) >= 10 and val and {p["kind"] for p in pairs} >= {"heading"},
       "qp_mine.py: pairs mined from headings", out.strip()[-300:])
    ok(not any(p["doc"] in held for p in pairs) and all(v["doc"] in held for v in val),
       "qp_mine.py: held-out documents give validation pairs only, never training pairs")
    bpe = tokref.ByteBPE(os.path.join(data, "vocab.json"), os.path.join(data, "merges.txt"))
    leaked = [p for p in pairs + val if p["q"] in bpe.decode_str(p["pos"])]
    ok(not leaked, "qp_mine.py: the query text is removed from its passage", leaked[:1])
    ok(all(n and n != p["pos"] for p in pairs for n in p["neg"]) and any(p["neg"] for p in pairs),
       "qp_mine.py: hard negatives are other chunks")
    qpo = os.path.join(tmp, "qp_enc")
    out = run(["qp_finetune.py", "--init", enc, "--mined", mined, "--dump", dump, "--heldout", hfile, "--out", qpo,
               "--steps", "2", "--batch-qp", "4", "--batch-cc", "4", "--pool", "16", "--log-every", "1", "--cc-hard", "1",
               "--cc-mined", dump, "--anchor", enc, "--cc-queue", "6", "--query-prefix", "query: "] + common_args,
              "qp_finetune.py")
    res = json.load(open(os.path.join(qpo, "results.json")))
    m = re.search(r"mined continuation negatives for (\d+) chunks", out)
    ok(m and int(m.group(1)) > 0, "qp_finetune.py --cc-mined: continuation pairs get their chunk's mined neighbours",
       m.group(0) if m else out.strip()[-300:].replace("\n", " | "))
    m = re.search(r"step 2/2 .* anchor ([0-9.]+)", out)
    ok(m and float(m.group(1)) > 0,
       "qp_finetune.py --anchor: the chunks are pulled towards the anchor encoder's embeddings once they moved",
       m.group(0) if m else out.strip()[-300:].replace("\n", " | "))
    m = re.search(r"step 2/2 .* queue (\d+)", out)
    ok(m and int(m.group(1)) == 6,
       "qp_finetune.py --cc-queue: earlier steps' continuations are kept as negatives, at most the queue's size",
       m.group(0) if m else out.strip()[-300:].replace("\n", " | "))
    ok("step 2/2" in out and 0 <= res["after"]["mrr10"] <= 1 and res["after"]["max_top1_wins"] >= 1,
       "qp_finetune.py: two steps, validation MRR and hubness reported", res)
    exp = os.path.join(qpo, "export")
    cfg = json.load(open(os.path.join(exp, "config.json")))
    ok(cfg["torch_dtype"] == "float16" and os.path.exists(os.path.join(exp, "vocab.json")),
       "qp_finetune.py: exports an F16 encoder with its tokenizer")
    ok(cfg.get("retro_query_prefix") == "query: ",
       "qp_finetune.py --query-prefix: the export tells the server to put the prefix before search texts", cfg)
    seqs = [p["pos"][:20] for p in pairs[:3]] + [bpe.encode(pairs[0]["q"])]
    compare_bert(exp, seqs, tmp, 1e-4, "query-trained encoder")
    bl = os.path.join(qpo, "blend", "export")
    out = run(["qp_blend.py", "--init", enc, "--trained", exp, "--mined", mined, "--dump", dump, "--heldout", hfile,
               "--lambdas", "0,0.5,1", "--keep", "0", "--train-queries", "8", "--pool", "16", "--val-pool", "16",
               "--out", bl] + common_args, "qp_blend.py")
    table = json.load(open(os.path.join(qpo, "blend", "blend.json")))
    ok([r["lambda"] for r in table["table"]] == [0, 0.5, 1] and table["chosen"]["lambda"] == 1
       and all(0 <= r["continuation_recall10_train"] <= 1 for r in table["table"]),
       "qp_blend.py: a row per lambda; with --keep 0 the trained end is chosen", table)
    return mined
    import st
    a, b = (st.load(os.path.join(d, "model.safetensors")) for d in (exp, bl))
    ok(a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a),
       "qp_blend.py: lambda 1 exports the trained weights exactly")
    ok(json.load(open(os.path.join(bl, "config.json"))).get("retro_query_prefix") == "query: ",
       "qp_blend.py: the blend keeps the trained encoder's query prefix")
    bl2 = os.path.join(qpo, "blend2", "export")
    run(["qp_blend.py", "--init", enc, "--trained", exp, "--mined", mined, "--dump", dump, "--heldout", hfile,
         "--lambdas", "0,0.5", "--keep", "0", "--train-queries", "8", "--pool", "16", "--val-pool", "16",
         "--drop-query-prefix", "--out", bl2] + common_args, "qp_blend.py --drop-query-prefix")
    cfg2 = json.load(open(os.path.join(bl2, "config.json")))
    chosen2 = json.load(open(os.path.join(qpo, "blend2", "blend.json")))["chosen"]["lambda"]
    ok("retro_query_prefix" not in cfg2 and chosen2 == 0.5,
       "qp_blend.py --drop-query-prefix: the blend is exported without the prefix", cfg2)


def docstring_route(tmp):
    """Part 11: qp_docstrings.py reads the standard library's docstrings of
    the corpus's signatures, and qp_mine.py makes them queries."""
    folder = os.path.join(tmp, "docstring_corpus")
    os.makedirs(folder)
    with open(os.path.join(folder, "lib.rst.txt"), "w") as f:
        f.write(".. module:: textwrap\n\n.. function:: dedent(text)\n\n   Remove leading whitespace.\n\n"
                ".. function:: no_such_function(x)\n\n   Absent.\n\n"
                ".. module:: time\n\n.. function:: sleep(secs)\n\n   Suspend execution.\n")
    out_file = os.path.join(tmp, "docstrings.json")
    out = run(["qp_docstrings.py", "--corpus", folder, "--out", out_file], "qp_docstrings.py")
    got = json.load(open(out_file)) if os.path.exists(out_file) else {}
    import textwrap
    first = " ".join(textwrap.dedent.__doc__.strip().split("\n\n")[0].split())
    ok(got.get("textwrap.dedent") == first and "textwrap.no_such_function" not in got,
       "qp_docstrings.py: a function's docstring summary; a name the module lacks is left out", (got, out))
    ok(got.get("time.sleep", "").startswith("Delay execution") and "(" not in got.get("time.sleep", "")[:15],
       "qp_docstrings.py: a C function's signature line is not its summary", got.get("time.sleep"))
    from qp_mine import docstring_pairs, mine_doc
    found = mine_doc(open(os.path.join(folder, "lib.rst.txt")).read())
    pairs = docstring_pairs(found, got)
    at = {q: a for k, q, a in found if k == "signature"}
    ok(sorted(pairs) == sorted([("docstring", got["textwrap.dedent"], at["textwrap.dedent"]),
                                ("docstring", got["time.sleep"], at["time.sleep"])]),
       "qp_mine.py --docstrings: each summary is a query for its signature's passage", pairs)


def main():
    import torch
    torch.set_num_threads(1)
    import tokref
    from common import Corpus
    from retro_model import Retro

    tmp = tempfile.mkdtemp(prefix="train_test_")
    corpus_dir = os.path.join(tmp, "corpus")
    make_corpus(corpus_dir)
    data = os.path.join(tmp, "data")
    common_args = ["--device", "cpu", "--threads", "1"]

    # 1. data + tokenizer
    run(["prep.py", "--corpus", corpus_dir, "--out", data, "--vocab-size", "400", "--heldout", "0.15"], "prep.py")
    c = Corpus(data)
    docs = json.load(open(os.path.join(data, "docs.json")))
    ok(len(docs["heldout"]) == 2 and len(docs["train"]) == 14, "held-out split: 2 of 16 documents",
       f"{len(docs['heldout'])} held out")
    again = os.path.join(tmp, "data2")
    run(["prep.py", "--corpus", corpus_dir, "--out", again, "--tokenizer", data, "--heldout", "0.15"], "prep.py again")
    ok(open(os.path.join(again, "heldout.txt")).read() == open(os.path.join(data, "heldout.txt")).read(),
       "held-out split is deterministic")
    bpe = tokref.ByteBPE(os.path.join(data, "vocab.json"), os.path.join(data, "merges.txt"))
    rt_ok, c_ok = True, True
    for name in docs["train"][:3] + docs["heldout"]:
        raw = open(os.path.join(corpus_dir, name), "rb").read()
        ids = bpe.encode(raw)
        rt_ok &= bpe.decode(ids) == raw
        out = c_dump("tok", data, raw, tmp)
        c_ok &= out is not None and list(np.frombuffer(out, dtype="<i4")) == ids
    odd = "naïve → 東京 \x00\x01 tabs\t\tand  spaces\r\n".encode() + b"\xff\xfe"
    rt_ok &= bpe.decode(bpe.encode(odd)) == odd
    ok(rt_ok, "tokenizer round trip decode(encode(x)) == x (documents, UTF-8, invalid bytes)")
    ok(c_ok, "C tokenizer ids == tokref ids on the trained vocabulary")
    toks = c.tokens["train"]
    ok(toks.max() < c.vocab_size and (toks == c.eos_id).sum() == 14, "token arrays: ids in range, one eos per document")

    # 2. encoder
    enc = os.path.join(tmp, "enc")
    out = run(["encoder_train.py", "--data", data, "--out", enc, "--hidden", "32", "--layers", "2", "--heads", "2",
               "--mae-steps", "4", "--mae-batch", "8", "--cl-steps", "4", "--cl-batch", "8", "--log-every", "2"]
              + common_args, "encoder_train.py")
    ok("mae step 4/4" in out and "cl step 4/4" in out, "encoder: RetroMAE and contrastive stages ran")
    exp = os.path.join(enc, "export")
    cfg = json.load(open(os.path.join(exp, "config.json")))
    ok(cfg.get("retro_pooling") == "cls" and cfg["model_type"] == "roberta" and
       all(os.path.exists(os.path.join(exp, f)) for f in ("model.safetensors", "vocab.json", "merges.txt")),
       "encoder export: HF RoBERTa layout, CLS pooling, tokenizer files")
    res = json.load(open(os.path.join(enc, "results.json")))
    ok(0.0 <= res["contrastive"]["heldout"] <= 1.0, "encoder: recall@10 reported",
       f"{res['contrastive']['heldout']:.3f}")
    compare_bert(exp, [list(c.chunks("train")[i]) for i in (0, 5, 9)] + [[7, 8, 9]], tmp, 1e-4, "tiny encoder")

    # 3. neighbours
    nb = os.path.join(tmp, "nb")
    run(["neighbours.py", "--data", data, "--encoder", exp, "--out", nb, "--k", "2"] + common_args, "neighbours.py")
    knn = np.load(os.path.join(nb, "train_knn.npy"))
    grd = np.load(os.path.join(nb, "heldout_grd.npy"))
    ctr, cho = c.n_chunks("train"), c.n_chunks("heldout")
    ok(knn.shape == (ctr, 2) and grd.shape == (cho, 2), "neighbour arrays have the right shapes")
    cd = c.chunkdoc["train"]
    same = 0
    for q in range(ctr):
        lo, hi = cd[q, 0], cd[min(q + 1, ctr - 1), 1]
        for j in knn[q]:
            same += int(cd[j, 0] <= hi and cd[j, 1] >= lo)
    ok(same == 0, "no training neighbour from the same document", f"{same} found")
    self_top = float(np.mean(grd[:, 0] == ctr + np.arange(cho)))
    ok(self_top >= 0.9, "grounded database: a held-out chunk's top neighbour is itself", f"{self_top:.2f}")

    # 4. decoder: baseline, RETRO-fit, resume
    dec_args = ["--data", data, "--batch", "2", "--seq", "128", "--dim", "32", "--layers", "2", "--heads", "2",
                "--retro-layers", "2", "--enc-layers", "1", "--eval-every", "2", "--eval-windows", "2",
                "--lr", "3e-3", "--warmup", "1"] + common_args
    base = os.path.join(tmp, "base")
    out = run(["retro_train.py", "--mode", "baseline", "--out", base, "--steps", "3"] + dec_args, "baseline training")
    ok("held-out: off" in out, "baseline prints held-out loss")
    fit = os.path.join(tmp, "fit")
    fit_args = ["retro_train.py", "--mode", "retrofit", "--nb", nb, "--init", os.path.join(base, "export"),
                "--out", fit] + dec_args
    run(fit_args + ["--steps", "3"], "RETRO-fit training")
    out = run(fit_args + ["--steps", "5"], "RETRO-fit resumed")
    ok("resumed from step 3" in out and "step 5/5" in out, "RETRO-fit resumes from its checkpoint")
    ok("nolk" in out and "planted" in out, "RETRO-fit prints off / no-leakage / planted held-out losses")
    bm, fm = Retro.load(os.path.join(base, "export")), Retro.load(os.path.join(fit, "export"))
    for m in (bm, fm):
        m.use_sdpa = False
        m.eval()
    x = torch.from_numpy(c.tokens["heldout"][:128])[None].long()
    nbt = torch.from_numpy(np.stack([np.stack([c.tokens["train"][64 * j:64 * j + 128] for j in knn[u]])
                                     for u in range(2)]))[None].long()
    with torch.no_grad():
        lb, lo, lon = bm(x), fm(x, None), fm(x, nbt)
    ok(torch.equal(lb, lo), "RETRO-fit: RETRO [OFF] == baseline exactly (decoder frozen)")
    ok(not torch.allclose(lo[:, 63:], lon[:, 63:]), "RETRO-fit: neighbours change the logits after position 63")
    ok(torch.equal(lo[:, :63], lon[:, :63]), "RETRO-fit: the first 63 positions ignore the neighbours")
    compare_retro(os.path.join(fit, "export"), c.tokens["heldout"][:128].tolist(), nbt[0].numpy(), c.pad_id,
                  tmp, 1e-4, "tiny RETRO")
    # same tokenizer files travel with the decoder export
    ok(open(os.path.join(fit, "export", "vocab.json"), "rb").read() == open(os.path.join(data, "vocab.json"), "rb").read(),
       "decoder export carries the trained tokenizer")

    # 5. evaluation table
    out = subprocess.run([PY, os.path.join(TRAIN, "evaluate.py"), "--data", data, "--nb", nb,
                          "--baseline", os.path.join(base, "export"), "--retro", os.path.join(fit, "export"),
                          "--encoder-results", os.path.join(enc, "results.json"), "--out", os.path.join(tmp, "eval"),
                          "--seq", "128", "--examples", "1"] + common_args,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ok(out.returncode == 0, "evaluate.py exits 0")
    rows = ["| baseline |", "| RETRO [OFF] |", "| RETRO [ON] no leakage |", "| RETRO [ON] grounded |",
            "| RETRO [ON] leakage-filtered |", "encoder recall@10"]
    ok(all(r in out.stdout for r in rows), "evaluation table has every row")
    ev = json.load(open(os.path.join(tmp, "eval", "eval.json")))
    ok(abs(ev["rows"]["baseline"]["bpb"] - ev["rows"]["RETRO [OFF]"]["bpb"]) < 1e-9 and ev["rows"]["baseline"]["bpb"] > 0,
       "evaluation: baseline bpb == RETRO [OFF] bpb for a RETRO-fit model")
    note(out.stdout.strip().replace("\n", "\n# "))

    # 6. neighbours from the C database
    if RETRO:
        t6 = time.time()
        c_route(tmp, corpus_dir, data, os.path.join(base, "export"), common_args)
        note(f"part 6 (C neighbours route): {time.time() - t6:.1f}s")
    else:
        note("no retro binary given: C-neighbours checks skipped")

    # 7. synthetic copy task (CI size)
    import retro_train
    vocab = 64
    with contextlib.redirect_stdout(sys.stderr):  # its progress lines are not TAP
        hist = retro_train.main(["--mode", "synthetic", "--out", os.path.join(tmp, "syn"), "--steps", "400",
                                 "--batch", "8", "--seq", "128", "--dim", "64", "--layers", "2", "--heads", "2",
                                 "--retro-layers", "2", "--enc-layers", "0", "--vocab", str(vocab), "--lr", "3e-3",
                                 "--warmup", "20", "--eval-every", "10", "--ckpt-every", "100000",
                                 "--target-copy-loss", "1.0"] + common_args)
    step, copy_l, other_l = hist[-1]
    ok(copy_l < 0.4 * math.log(vocab) and other_l > 0.9 * math.log(vocab),
       "synthetic copy task: loss on tokens present in a neighbour falls towards zero",
       f"step {step}: copy {copy_l:.3f}, other {other_l:.3f} (log V = {math.log(vocab):.3f})")

    # 8. the committed default models
    denc, ddec = os.path.join(ROOT, "model", "default", "encoder"), os.path.join(ROOT, "model", "default", "decoder")
    if os.path.isdir(denc) and os.path.isdir(ddec):
        dbpe = tokref.ByteBPE(os.path.join(ddec, "vocab.json"), os.path.join(ddec, "merges.txt"))
        text = open(os.path.join(corpus_dir, docs["heldout"][0]), "rb").read()
        ids = dbpe.encode(text)
        out = c_dump("tok", ddec, text, tmp)
        ok(out is not None and list(np.frombuffer(out, dtype="<i4")) == ids and dbpe.decode(ids) == text,
           "default tokenizer: C ids == tokref ids, round trip")
        compare_bert(denc, [ids[:64], ids[64:128], ids[5:20]], tmp, 1e-4, "default encoder")
        pad = json.load(open(os.path.join(ddec, "config.json")))["pad_id"]
        nbd = np.array([[ids[128:256], ids[200:328]], [ids[40:168], ids[300:428]]], dtype=np.int64)
        compare_retro(ddec, ids[:192], nbd, pad, tmp, 1e-4, "default decoder")
    else:
        note("model/default/ absent: default-model checks skipped")

    docstring_route(tmp)
    print(f"1..{N}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
