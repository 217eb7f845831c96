#!/usr/bin/python3
"""rerank_ref.py - PyTorch scores for the C reranker's parity test
(tests/rerank): a random-weight reranker made here, and any trained ones
named, each scoring the same queries and passages.

  rerank_ref.py OUTDIR --tokenizer DIR [--model DIR ...]

writes OUTDIR/random/ (a 2-layer RoBERTa-layout reranker with the
tokenizer of DIR, F32 weights drawn wide enough that every score differs),
OUTDIR/random-bert/ (the same in BERT's layout, with a WordPiece
vocabulary made here) and OUTDIR/cases.json:
  {"torch": "...", "models": [{"dir", "cases": [{"query", "passages",
    "expect": [logits]}]}]}
The inputs are built as model/rerank.c builds them (rerank_train.py's
pair_ids): the query cut to 32 tokens, the passage to what is left.
"""
import argparse
import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bert_model import BertEncoder, make_config  # noqa: E402
from rerank_train import CrossEncoder, batch, bert_pair, pair_ids  # noqa: E402
from tokref import ByteBPE, WordPiece  # noqa: E402

LONG = " ".join("word%d" % i for i in range(150))
CASES = [
    ("How do I open a file for appending?",
     ["Use open(path, 'a') to append to a file; writes go to its end.",
      "The os module provides a portable way of using operating system dependent functionality.",
      "", "caf\u00e9 na\u00efve \u2014 \u4e2d\u6587 \U0001F600 tabs\tand\nnewlines"]),
    ("TypeError: 'NoneType' object is not subscriptable", [LONG, "x[0] where x is None raises it."]),
    (" ".join(["a very long question that goes on"] * 12), ["short passage", LONG]),
]


# A WordPiece vocabulary for the BERT-layout reranker, made here: the
# specials, letters, digits and punctuation whole and as continuations, and
# a few words of the test texts.
WORDPIECE = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
             list("abcdefghijklmnopqrstuvwxyz0123456789.,:;'()[]_-?!\u00e9\u4e2d\u6587") +
             ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"] +
             "how do i open a file for appending use to the os module word type error none".split())


def random_reranker(tokenizer, out, layout="roberta"):
    """A random reranker in out: RoBERTa with the BPE of tokenizer, or BERT
    with the WordPiece vocabulary above (tokenizer unused)."""
    torch.manual_seed(7)
    if layout == "roberta":
        vocab = len(json.load(open(os.path.join(tokenizer, "vocab.json"))))
        cfg = make_config(model_type="roberta", vocab_size=vocab, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=128, max_position_embeddings=60,
                          pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
                          layer_norm_eps=1e-5)
    else:
        cfg = make_config(model_type="bert", vocab_size=len(WORDPIECE), hidden_size=48, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=96, max_position_embeddings=50,
                          type_vocab_size=2)
    m = CrossEncoder(BertEncoder(cfg))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    m.save_pretrained(out, torch.float32)
    if layout == "bert":
        with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in WORDPIECE))
        return
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(tokenizer, f), os.path.join(out, f))


@torch.no_grad()
def expectations(d):
    m = CrossEncoder.load(d).eval()
    out = []
    if m.enc.roberta:
        bpe = ByteBPE(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"))
        bos, eos, pad = bpe.token_id("<s>"), bpe.token_id("</s>"), bpe.token_id("<pad>")
        for q, ps in CASES:
            seqs = [pair_ids(bpe.encode(q), bpe.encode(p), bos, eos, m.enc.max_tokens) for p in ps]
            out.append({"query": q, "passages": ps,
                        "expect": [float(x) for x in m(*batch(seqs, pad, "cpu"))]})
        return out
    wp = WordPiece(os.path.join(d, "vocab.txt"))
    cls, sep = wp.vocab["[CLS]"], wp.vocab["[SEP]"]
    for q, ps in CASES:
        pairs = [bert_pair(wp.encode(q), wp.encode(p), cls, sep, m.enc.max_tokens) for p in ps]
        ids, mask = batch([x for x, _ in pairs], 0, "cpu")
        types, _ = batch([t for _, t in pairs], 0, "cpu")
        out.append({"query": q, "passages": ps, "expect": [float(x) for x in m(ids, mask, types)]})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--tokenizer", required=True, help="folder with vocab.json and merges.txt")
    ap.add_argument("--model", action="append", default=[], help="a trained reranker to check too")
    a = ap.parse_args()
    rnd, rnd_bert = os.path.join(a.out, "random"), os.path.join(a.out, "random-bert")
    random_reranker(a.tokenizer, rnd)
    random_reranker(None, rnd_bert, "bert")
    models = [{"dir": d, "cases": expectations(d)} for d in [rnd, rnd_bert] + a.model]
    with open(os.path.join(a.out, "cases.json"), "w") as f:
        json.dump({"torch": torch.__version__, "models": models}, f, indent=1)


if __name__ == "__main__":
    main()
