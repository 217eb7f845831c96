#!/usr/bin/python3
"""make_engine_models.py - small random-weight models for the engine tests
(tests/server/test_engine.c, test_ingest_crash.py) and the ingest bench:

    /usr/bin/python3 tests/server/make_engine_models.py OUTDIR [--bench] [--stamp FILE]

writes
  OUTDIR/tok/            byte-level BPE (vocab 512) trained on a slice of the
                         default corpus (or on generated text when it is absent)
  OUTDIR/encoder/        RoBERTa-style encoder, mean pooling, same BPE vocabulary
                         (2 layers x 64; --bench: 6 layers x 384, the issue-3 size)
  OUTDIR/encoder-wp/     BERT encoder with WordPiece (bert-base-uncased vocab.txt
                         from ../shared/data when present, else one made from the
                         corpus): the "embed by text" path
  OUTDIR/decoder/        RETRO decoder (2 layers x 64, RETRO block at layer 2,
                         CCA initialised at random so neighbours change the logits)
  OUTDIR/corpus/         20 documents from the default corpus (or generated)
Random weights: the tests check the engine, not the quality of the text.
Without PyTorch it writes OUTDIR/SKIP (the tests then skip, exit 77) and
exits 0, so that the build does not fail. --stamp FILE is touched at the end
(meson's custom_target output).
"""
import glob
import os
import random
import shutil
import sys


def stamp():
    if "--stamp" in sys.argv:
        with open(sys.argv[sys.argv.index("--stamp") + 1], "w") as f:
            f.write("ok\n")


try:
    import torch
except ImportError:
    print("make_engine_models.py: torch not available", file=sys.stderr)
    os.makedirs(sys.argv[1], exist_ok=True)
    with open(os.path.join(sys.argv[1], "SKIP"), "w") as f:
        f.write("PyTorch is not installed\n")
    stamp()
    sys.exit(0)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "model", "train"))
import bpe_train  # noqa: E402
import bert_model  # noqa: E402
sys.path.insert(0, os.path.join(ROOT, "tests", "http"))
import make_models  # noqa: E402  (save_decoder)

CORPUS = "/usr/share/doc/python3.11/html/_sources"
WORDS = ("retrieval augmented language model chunk neighbour database index search query vector "
         "token encoder decoder attention server request response python documentation module "
         "function class method string number list dictionary file network socket thread").split()


def corpus_docs(out):
    d = os.path.join(out, "corpus")
    os.makedirs(d, exist_ok=True)
    files = sorted(glob.glob(os.path.join(CORPUS, "library", "*.rst.txt")))
    rng = random.Random(5)
    docs = []
    if len(files) >= 20:
        for p in rng.sample(files, 20):
            with open(p, "rb") as f:
                data = f.read()[:1500 + rng.randrange(3000)]
            docs.append((os.path.basename(p).replace(".rst.txt", ".txt"), data))
    else:
        for i in range(20):
            text = " ".join(rng.choice(WORDS) for _ in range(60 + rng.randrange(400))) + "\n"
            docs.append(("gen%02d.txt" % i, text.encode()))
    for name, data in docs:
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    return d


def write_wordpiece_vocab(cdir, path):
    """A WordPiece vocab.txt made here, for a clean clone without
    ../shared/data: BERT's special tokens, every printable ASCII character
    alone and as a continuation (##c, so any word splits), and the corpus's
    600 most frequent lowercase words."""
    counts = {}
    for name in sorted(os.listdir(cdir)):
        with open(os.path.join(cdir, name), encoding="utf-8", errors="replace") as f:
            for w in f.read().lower().split():
                w = "".join(c for c in w if c.isalnum())
                if w.isascii() and w:
                    counts[w] = counts.get(w, 0) + 1
    chars = [chr(c) for c in range(33, 127)]
    words = sorted(counts, key=lambda w: (-counts[w], w))[:600]
    seen, lines = set(), []
    for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars] + words:
        if t not in seen:
            seen.add(t)
            lines.append(t)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main():
    out = sys.argv[1]
    bench = "--bench" in sys.argv[2:]
    os.makedirs(out, exist_ok=True)
    cdir = corpus_docs(out)
    tokdir = os.path.join(out, "tok")
    vocab = bpe_train.train_dir(cdir, 512, tokdir)
    torch.manual_seed(1)

    enc = os.path.join(out, "encoder")
    width, layers, heads = (384, 6, 6) if bench else (64, 2, 4)
    cfg = bert_model.make_config(model_type="roberta", vocab_size=vocab, hidden_size=width,
                                 num_hidden_layers=layers, num_attention_heads=heads,
                                 intermediate_size=4 * width, max_position_embeddings=130,
                                 pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                 retro_pooling="mean")
    bert_model.BertEncoder(cfg).save_pretrained(enc)
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(tokdir, f), os.path.join(enc, f))

    encw = os.path.join(out, "encoder-wp")
    os.makedirs(encw, exist_ok=True)
    wp_vocab = os.path.join(ROOT, "..", "shared", "data", "bert-base-uncased", "vocab.txt")
    if os.path.exists(wp_vocab):
        shutil.copyfile(wp_vocab, os.path.join(encw, "vocab.txt"))
    else:
        write_wordpiece_vocab(cdir, os.path.join(encw, "vocab.txt"))
    n = sum(1 for _ in open(os.path.join(encw, "vocab.txt"), encoding="utf-8"))
    cfg = bert_model.make_config(model_type="bert", vocab_size=n, hidden_size=32,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=128,
                                 retro_pooling="mean")
    bert_model.BertEncoder(cfg).save_pretrained(encw)

    make_models.save_decoder(out, tokdir, vocab, dim=64, heads=4, std=0.3)
    if os.path.exists(os.path.join(out, "SKIP")):
        os.remove(os.path.join(out, "SKIP"))
    stamp()
    print("models in", out)


if __name__ == "__main__":
    main()
