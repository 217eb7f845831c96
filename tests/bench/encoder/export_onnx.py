#!/usr/bin/python3
"""export_onnx.py - writes the ONNX peer of bench_encoder.c: the encoder in
MODEL_DIR, loaded by model/train/bert_model.py (F16 weights become F32, as
ONNX Runtime's CPU provider computes in F32), exported by torch.onnx.export
with the same pooling and L2 normalisation as bert_model.embed, batch and
sequence length left dynamic. torch.onnx serialises in C++: the `onnx`
Python package is not needed.

  export_onnx.py MODEL_DIR OUT.onnx
Inputs: input_ids, attention_mask (int64, batch x tokens); output: embeddings
(float32, batch x hidden). Also writes OUT.onnx.ref.json: two of the bench's
16-token inputs (bench_encoder.c's formula) and PyTorch's embeddings of them,
which bench_ort.mjs checks ONNX Runtime against before timing it.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "model", "train"))
import bert_model  # noqa: E402


class Embed(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.embed(input_ids, attention_mask)


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    model = bert_model.BertEncoder.load(model_dir).eval()
    cls_id, sep_id = 101, 102  # as bench_torch.py
    if model.roberta:
        cls_id = sep_id = model.config.get("bos_token_id", 0)
    span = min(28000, model.config["vocab_size"] - 1000)
    seqs = [[1000 + (i * 7919 + j * 104729) % span for j in range(14)] for i in range(2)]
    full = [bert_model.add_specials(s, cls_id, sep_id, model.max_tokens) for s in seqs]
    ids, mask = bert_model.pad_batch(full, model.config["pad_token_id"])
    with torch.no_grad():
        ref = model.embed(ids, mask)  # before: after the export, embed differs (torch 1.13)
        torch.onnx.export(Embed(model), (ids, mask), out, input_names=["input_ids", "attention_mask"],
                          output_names=["embeddings"], opset_version=14, do_constant_folding=True,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"},
                                        "embeddings": {0: "batch"}})
    with open(out + ".ref.json", "w") as f:
        json.dump({"input_ids": ids.tolist(), "embeddings": ref.tolist()}, f)


if __name__ == "__main__":
    main()
