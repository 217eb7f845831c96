#!/usr/bin/python3
"""make_models.py - tiny random-weight models for the HTTP end-to-end tests:

    /usr/bin/python3 tests/http/make_models.py OUTDIR

OUTDIR/encoder: a 2-layer, 32-wide RoBERTa-style encoder (mean pooling),
OUTDIR/decoder: a 2-layer, 32-wide RETRO decoder (one RETRO layer) and
OUTDIR/reranker: a 2-layer, 64-wide cross-encoder reranker, all with the
same byte-level BPE vocabulary trained here on a small generated corpus.
Random weights: the tests check the API, not the quality of the text.
Exit status 77 when PyTorch is missing (the test is then skipped).
"""
import os
import random
import shutil
import sys

try:
    import torch
except ImportError:
    print("make_models.py: torch not available", file=sys.stderr)
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(HERE, "..", "..", "model", "train")
sys.path.insert(0, TRAIN)
import bpe_train  # noqa: E402
import bert_model  # noqa: E402
import rerank_ref  # noqa: E402
from retro_model import Retro, RetroConfig  # noqa: E402

WORDS = ("retrieval augmented language model chunk neighbour database index search query vector "
         "token encoder decoder attention server request response python documentation module "
         "function class method string number list dictionary file network socket thread").split()


def save_decoder(out, tokdir, vocab, dim, heads, std):
    """OUTDIR/decoder: a random 2-layer RETRO decoder (RETRO layer 2, feed-
    forward 2 * dim wide, weights of std std) with the tokenizer in tokdir."""
    dec = os.path.join(out, "decoder")
    rc = RetroConfig(vocab_size=vocab, dim=dim, n_layers=2, n_heads=heads, ffn_dim=2 * dim, max_seq=512,
                     retro_layers=[2], enc_layers=1, pad_id=1, eos_id=5, n_neighbours=2)
    r = Retro(rc)
    r.init_weights(std=std, zero_cca=False)
    r.save(dec)
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(tokdir, f), os.path.join(dec, f))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(7)
    corpus = os.path.join(out, "corpus")
    os.makedirs(corpus, exist_ok=True)
    with open(os.path.join(corpus, "c.txt"), "w") as f:
        for _ in range(400):
            f.write(" ".join(rng.choice(WORDS) for _ in range(12)) + ".\n")
    tokdir = os.path.join(out, "tok")
    vocab = bpe_train.train_dir(corpus, 400, tokdir)
    torch.manual_seed(1)

    enc = os.path.join(out, "encoder")
    cfg = bert_model.make_config(model_type="roberta", vocab_size=vocab, hidden_size=32,
                                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
                                 eos_token_id=2, retro_pooling="mean")
    m = bert_model.BertEncoder(cfg)
    m.save_pretrained(enc)
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(tokdir, f), os.path.join(enc, f))

    save_decoder(out, tokdir, vocab, dim=32, heads=2, std=0.5)
    rerank_ref.random_reranker(tokdir, os.path.join(out, "reranker"))
    print("models in", out)


if __name__ == "__main__":
    main()
