#!/usr/bin/python3
"""embed_chunks.py - embeds the chunks that `retro chunks` wrote, with the
PyTorch reference encoder (bert_model.py), into a vectors file for
`retro index --vectors` (docs/OPERATIONS.md, "Bulk vectors"):

    /usr/bin/python3 model/train/embed_chunks.py CHUNKS.jsonl ENCODER_DIR OUT.vec
        [--batch 256] [--device cuda|cpu]

ENCODER_DIR must be the encoder the chunks were made for (the one the
database records): the vectors file carries the chunks file's fingerprint,
which `retro index --vectors` checks against the database; this script
checks what it can of the directory against that fingerprint (model type,
layers, width, dimension) and refuses a mismatch.

Each chunk's "ids" are the encoder's input without the special tokens: as
the C encoder does, [CLS] ids [SEP] (the header's cls_id, sep_id), cut to
max_tokens, pooled as the header's "pooling" says and L2-normalised. CUDA
when present (--device to choose). Output, little-endian: "RETROVEC", u32
version 1, u32 dim, u64 count, 32 bytes digest, u32 fingerprint length,
the fingerprint, then count x dim float32 - written to OUT.tmp and renamed
when complete.
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bert_model  # noqa: E402

MAGIC = b"RETROVEC"


def fail(msg):
    print("embed_chunks.py: " + msg, file=sys.stderr)
    sys.exit(1)


def check_encoder(model, head):
    """The directory against the fingerprint "bert-L2-H64-<hash>:64:mean:<tok>"."""
    m = re.match(r"^(bert|roberta)-L(\d+)-H(\d+)-", head["encoder"])
    cfg = model.config
    got = (cfg["model_type"], cfg["num_hidden_layers"], cfg["hidden_size"])
    if not m or (m.group(1), int(m.group(2)), int(m.group(3))) != got or cfg["hidden_size"] != head["dim"]:
        fail("the encoder directory (%s, %d layers, width %d) is not the chunks' encoder %s"
             % (got + (head["encoder"],)))


def header_bytes(head):
    fp = head["encoder"].encode()
    digest = bytes.fromhex(head["digest"])
    return struct.pack("<8sIIQ32sI", MAGIC, 1, head["dim"], head["count"], digest, len(fp)) + fp


def embed_batch(model, head, seqs, device):
    full = [bert_model.add_specials(s, head["cls_id"], head["sep_id"], head["max_tokens"]) for s in seqs]
    ids, mask = bert_model.pad_batch(full, model.config["pad_token_id"], device)
    with torch.no_grad():
        v = model.embed(ids, mask, pooling=head["pooling"], normalize=True)
    return v.float().cpu().numpy().astype("<f4")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("chunks")
    ap.add_argument("encoder")
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()

    with open(a.chunks, encoding="utf-8") as f:
        head = json.loads(f.readline())
        if head.get("format") != "retro-chunks" or head.get("version") != 1:
            fail("%s: not a retro chunks file (version 1)" % a.chunks)
        model = bert_model.BertEncoder.load(a.encoder, map_location=a.device).eval()
        check_encoder(model, head)
        tmp = a.out + ".tmp"
        n = 0
        with open(tmp, "wb") as out:
            out.write(header_bytes(head))
            seqs = []
            for line in f:
                if not line.strip():
                    continue
                seqs.append(json.loads(line)["ids"])
                if len(seqs) == a.batch:
                    out.write(embed_batch(model, head, seqs, a.device).tobytes())
                    n += len(seqs)
                    seqs = []
            if seqs:
                out.write(embed_batch(model, head, seqs, a.device).tobytes())
                n += len(seqs)
    if n != head["count"]:
        os.remove(tmp)
        fail("%s: the header says %d chunks, the file holds %d (truncated?)" % (a.chunks, head["count"], n))
    os.replace(tmp, a.out)
    print("embed_chunks.py: %d vectors of %d on %s in %s" % (n, head["dim"], a.device, a.out), file=sys.stderr)


if __name__ == "__main__":
    main()
