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
  6. the synthetic copy task: the loss on tokens present in a neighbour falls
     far below the loss on tokens that are not
  7. model/default/: C loads the committed encoder and decoder and matches
     PyTorch (skipped when the folder is absent)

usage: test_train.py TRAIN_C_DUMP SOURCE_ROOT
"""
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

DUMP, ROOT = sys.argv[1], sys.argv[2]
TRAIN = os.path.join(ROOT, "model", "train")
sys.path.insert(0, TRAIN)
PY = sys.executable
N = 0
FAILED = 0
T0 = time.time()


def ok(cond, desc, detail=""):
    global N, FAILED
    N += 1
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
    out = c_dump("retro", model_dir, payload, tmp)
    if not ok(out is not None, f"{label}: C retro_forward runs"):
        return
    got = np.frombuffer(out, dtype="<f4").reshape(ref.shape)
    diff = float(np.abs(got - ref).max())
    ok(diff <= tol, f"{label}: C logits == PyTorch logits (max |diff| {diff:.2e} <= {tol:g})")


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
    out = c_dump("bert", model_dir, payload, tmp)
    if not ok(out is not None, f"{label}: C bert_embed_ids runs"):
        return
    got = np.frombuffer(out, dtype="<f4").reshape(ref.shape)
    diff = float(np.abs(got - ref).max())
    ok(diff <= tol, f"{label}: C embeddings == PyTorch embeddings (max |diff| {diff:.2e} <= {tol:g})")


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

    # 6. synthetic copy task (CI size)
    import retro_train
    vocab = 64
    hist = retro_train.main(["--mode", "synthetic", "--out", os.path.join(tmp, "syn"), "--steps", "400",
                             "--batch", "8", "--seq", "128", "--dim", "64", "--layers", "2", "--heads", "2",
                             "--retro-layers", "2", "--enc-layers", "0", "--vocab", str(vocab), "--lr", "3e-3",
                             "--warmup", "20", "--eval-every", "10", "--ckpt-every", "100000",
                             "--target-copy-loss", "1.0"] + common_args)
    step, copy_l, other_l = hist[-1]
    ok(copy_l < 0.4 * math.log(vocab) and other_l > 0.9 * math.log(vocab),
       "synthetic copy task: loss on tokens present in a neighbour falls towards zero",
       f"step {step}: copy {copy_l:.3f}, other {other_l:.3f} (log V = {math.log(vocab):.3f})")

    # 7. the committed default models
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
    print(f"1..{N}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
