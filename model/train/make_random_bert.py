#!/usr/bin/python3
"""make_random_bert.py - random-weight BERT / RoBERTa models and their PyTorch
outputs, for the C encoder's parity test (tests/bert) and benchmark
(tests/bench/encoder).

  make_random_bert.py OUTDIR [--set test|tiny|bench] [--vocab-dir DATA]

writes OUTDIR/<model>/{config.json, model.safetensors, vocab files,
[1_Pooling/config.json]} for each model of the set, and OUTDIR/cases.json:

  {"torch": "1.13...", "models": [{"name", "dir", "dim", "pooling",
    "max_tokens", "tensors": [{"name", "shape", "seed", "scale", "offset"}],
    "config": {...}, "vocab": "wordpiece"|"bpe",
    "ids": [[...]], "expect_ids": [[...]], "expect_ids_raw": [[...]],
    "texts": [...], "expect_texts": [[...]]}]}

ids are token ids without special tokens; the expectations are what
BertEncoder (bert_model.py, HF semantics) gives after adding [CLS]/[SEP] (or
the RoBERTa ones), truncating to max_tokens and padding the batch: expect_*
L2-normalised, expect_ids_raw before normalisation. Texts are tokenised with
tokref.py (the tokenizer reference) when it loads.

Weights are not torch.randn: every tensor is offset + scale * u, u in
[-1, 1) from an integer hash of (element index, seed) (det_uniform below), so
that the C test can rebuild the "tiny" model from the "tensors" list alone
when PyTorch is missing (tests/bert/tiny_expected.json is that set's
cases.json, committed). The hash is repeated in tests/bert/test_bert.c.
"""
import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bert_model  # noqa: E402
import st  # noqa: E402

MASK32 = 0xFFFFFFFF

# name, model_type, layers, hidden, heads, intermediate, max_pos, pooling source, dtype, prefix
SETS = {
    "tiny": [
        dict(name="tiny-bert", model_type="bert", layers=2, hidden=32, heads=4, inter=64,
             max_pos=40, pooling=("config", "mean"), dtype="F32"),
        dict(name="tiny-roberta", model_type="roberta", layers=2, hidden=32, heads=2, inter=48,
             max_pos=42, pooling=("default", "cls"), dtype="F32"),
    ],
    "test": [
        dict(name="bert-L2-H128-cls", model_type="bert", layers=2, hidden=128, heads=2,
             inter=512, max_pos=64, pooling=("default", "cls"), dtype="F32"),
        dict(name="bert-L6-H384-mean", model_type="bert", layers=6, hidden=384, heads=6,
             inter=1536, max_pos=128, pooling=("st", "mean"), dtype="F32"),
        dict(name="roberta-L2-H128-mean", model_type="roberta", layers=2, hidden=128, heads=4,
             inter=256, max_pos=66, pooling=("config", "mean"), dtype="F16"),
        dict(name="roberta-L6-H128-cls", model_type="roberta", layers=6, hidden=128, heads=2,
             inter=512, max_pos=130, pooling=("st", "cls"), dtype="F32"),
        dict(name="bert-L2-H128-bf16-prefixed", model_type="bert", layers=2, hidden=128,
             heads=8, inter=256, max_pos=48, pooling=("config", "cls"), dtype="BF16",
             prefix="bert."),
    ],
    "bench": [
        dict(name="bench-bert-L6-H384", model_type="bert", layers=6, hidden=384, heads=6,
             inter=1536, max_pos=512, pooling=("config", "cls"), dtype="F32"),
    ],
}

TEXTS = [
    "",
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u2014 \"quoted\" words, numbers 12345 and symbols #@!",
    "\u4e2d\u6587\u5b57\u7b26 and emoji \U0001F600 mixed with text",
    " ".join(["retrieval augmented transformers read neighbours from a database"] * 12),
    "def f(x):\n    return x * 2  # a comment\n",
]


def det_uniform(n, seed):
    """n values in [-1, 1) from a 32-bit integer hash of (index, seed)
    (uint32 arithmetic, wrapping; tests/bert/test_bert.c has the same)."""
    with np.errstate(over="ignore"):
        h = np.arange(n, dtype=np.uint32) * np.uint32(0x7FEB352D) + np.uint32((seed * 0x5BD1E995) & MASK32)
        h ^= h >> np.uint32(15)
        h *= np.uint32(0x2C1B3C6D)
        h ^= h >> np.uint32(12)
        h *= np.uint32(0x297A2D39)
        h ^= h >> np.uint32(15)
        u = (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 8388608.0) - np.float32(1.0)
    return u  # exact: 24-bit integers scaled by a power of two


def det_tensor(shape, seed, scale, offset):
    n = 1
    for d in shape:
        n *= d
    u = det_uniform(n, seed)
    u *= np.float32(scale)
    u += np.float32(offset)
    return torch.from_numpy(u.reshape(shape))


def tensor_specs(model, seed_base):
    """(name, shape, seed, scale, offset) for every weight, sorted by name."""
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    out = []
    for idx, name in enumerate(sorted(shapes)):
        shape = shapes[name]
        if "LayerNorm.weight" in name:
            scale, offset = 0.2, 1.0
        elif "LayerNorm.bias" in name or name.endswith(".bias"):
            scale, offset = 0.1, 0.0
        elif "embeddings" in name:
            scale, offset = 0.5, 0.0
        else:  # Linear (out, in)
            scale, offset = math.sqrt(3.0 / shape[1]), 0.0
        out.append(dict(name=name, shape=shape, seed=seed_base * 1000 + idx,
                        scale=scale, offset=offset))
    return out


def copy_vocab(kind, data_dir, d):
    if kind == "wordpiece":
        shutil.copyfile(os.path.join(data_dir, "bert-base-uncased", "vocab.txt"),
                        os.path.join(d, "vocab.txt"))
    else:
        for f in ("vocab.json", "merges.txt"):
            shutil.copyfile(os.path.join(data_dir, "gpt2", f), os.path.join(d, f))


def make_model(spec, seed_base, out_dir, data_dir, ids_rng):
    roberta = spec["model_type"] == "roberta"
    kind = "bpe" if roberta else "wordpiece"
    vocab = 50257 if roberta else 30522
    cfg = dict(model_type=spec["model_type"], vocab_size=vocab, hidden_size=spec["hidden"],
               num_hidden_layers=spec["layers"], num_attention_heads=spec["heads"],
               intermediate_size=spec["inter"], max_position_embeddings=spec["max_pos"],
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if roberta:  # GPT-2's vocabulary has no <s>/</s>: use <|endoftext|> via bos/eos ids
        cfg.update(pad_token_id=1, bos_token_id=50256, eos_token_id=50256)
    src, pool = spec["pooling"]
    if src == "config":
        cfg["retro_pooling"] = pool
    model = bert_model.BertEncoder(bert_model.make_config(**cfg)).eval()
    specs = tensor_specs(model, seed_base)
    sd = {s["name"]: det_tensor(s["shape"], s["seed"], s["scale"], s["offset"]) for s in specs}
    tdt = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[spec["dtype"]]
    sd = {k: v.to(tdt).float() for k, v in sd.items()}  # the reference sees the rounding
    model.load_state_dict(sd, strict=True)

    d = os.path.join(out_dir, spec["name"])
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, dtype=tdt)
    prefix = spec.get("prefix", "")
    if prefix:  # as BertForMaskedLM & co. save it
        st.save({prefix + k: v.to(tdt) for k, v in sd.items()},
                os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    if src == "st":
        os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
        with open(os.path.join(d, "1_Pooling", "config.json"), "w") as f:
            json.dump({"word_embedding_dimension": spec["hidden"],
                       "pooling_mode_cls_token": pool == "cls",
                       "pooling_mode_mean_tokens": pool == "mean",
                       "pooling_mode_max_tokens": False,
                       "pooling_mode_mean_sqrt_len_tokens": False}, f, indent=2)
    copy_vocab(kind, data_dir, d)

    if roberta:
        cls_id = sep_id = 50256
    else:
        cls_id, sep_id = 101, 102
    max_tokens = model.max_tokens
    pad = model.config["pad_token_id"]

    def run(seqs):
        full = [bert_model.add_specials(s, cls_id, sep_id, max_tokens) for s in seqs]
        ids, mask = bert_model.pad_batch(full, pad)
        with torch.no_grad():
            raw = model.embed(ids, mask, pooling=pool, normalize=False)
        return raw, bert_model.l2_normalize(raw)

    # mixed lengths, one over the limit; RoBERTa inputs include the pad id
    # (GPT-2 '"' is id 1) to check HF's position rule
    lengths = [0, 1, 3, 7, 16, 33, max_tokens - 2, max_tokens + 9]
    seqs = []
    for n in lengths:
        s = torch.randint(0, vocab - 1, (n,), generator=ids_rng).tolist()
        if roberta and n >= 3:
            s[1] = 1
        seqs.append(s)
    raw, norm = run(seqs)
    case = dict(name=spec["name"], dir=spec["name"], dim=spec["hidden"], pooling=pool,
                max_tokens=max_tokens, vocab=kind, config=json.load(open(os.path.join(d, "config.json"))),
                dtype=spec["dtype"], tensors=specs, ids=seqs,
                expect_ids=norm.tolist(), expect_ids_raw=raw.tolist())
    try:
        import functools
        import tokref
        if not hasattr(tokref.gpt2_pattern, "cache_info"):  # built once, not per text
            tokref.gpt2_pattern = functools.lru_cache(None)(tokref.gpt2_pattern)
        tk = tokref.load_dir(d)
        tseqs = [tk.encode(t) for t in TEXTS]
        _, tnorm = run(tseqs)
        case.update(texts=TEXTS, text_ids=tseqs, expect_texts=tnorm.tolist())
    except Exception as e:  # noqa: BLE001 - the reference is optional here
        print(f"make_random_bert: texts skipped for {spec['name']}: {e}", file=sys.stderr)
    return case


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--set", default="test", choices=sorted(SETS))
    ap.add_argument("--vocab-dir", default=os.path.join(HERE, "..", "..", "..", "shared", "data"))
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    rng = torch.Generator().manual_seed(1234)
    cases = [make_model(s, i + 1, a.out, a.vocab_dir, rng) for i, s in enumerate(SETS[a.set])]
    with open(os.path.join(a.out, "cases.json"), "w") as f:
        json.dump({"torch": torch.__version__, "set": a.set, "models": cases}, f)
    print(f"make_random_bert: {len(cases)} models in {a.out}")


if __name__ == "__main__":
    main()
