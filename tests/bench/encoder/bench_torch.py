#!/usr/bin/python3
"""bench_torch.py - the PyTorch peer of bench_encoder.c: the same model
directory through model/train/bert_model.py, the same inputs, the same
thread count. Prints "torch LEN BATCH sent_per_s ms_per_call sent_per_cpu_s min_ms_per_call" lines and a
"# blas ..." line saying which BLAS library torch has loaded.

  bench_torch.py MODEL_DIR THREADS SECONDS
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "model", "train"))
import bert_model  # noqa: E402


def main():
    model_dir, threads, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    torch.set_num_threads(threads)
    model = bert_model.BertEncoder.load(model_dir).eval()
    cls_id, sep_id = 101, 102
    if model.roberta:
        cls_id = sep_id = model.config.get("bos_token_id", 0)
    with torch.no_grad():
        torch.ones(64, 64) @ torch.ones(64, 64)
    libs = sorted({line.split()[-1] for line in open("/proc/self/maps")
                   if "blas" in line.lower() or "mkl" in line.lower()})
    print("# blas " + (" ".join(libs) or "none found"), flush=True)
    print(f"# torch {torch.__version__} threads {torch.get_num_threads()}", flush=True)
    for t in (16, 64, 128):
        for b in (1, 32):
            span = min(28000, model.config["vocab_size"] - 1000)
            seqs = [[1000 + (i * 7919 + j * 104729) % span for j in range(t - 2)] for i in range(b)]
            full = [bert_model.add_specials(s, cls_id, sep_id, model.max_tokens) for s in seqs]
            ids, mask = bert_model.pad_batch(full, model.config["pad_token_id"])
            with torch.no_grad():
                model.embed(ids, mask)
                it, t0, c0, best = 0, time.perf_counter(), time.process_time(), 1e30
                while True:
                    t1 = time.perf_counter()
                    model.embed(ids, mask)
                    t2 = time.perf_counter()
                    best = min(best, t2 - t1)
                    it += 1
                    el = t2 - t0
                    if el >= secs and it >= 3:
                        break
            cpu = time.process_time() - c0
            print(f"torch {t} {b} {b * it / el:.1f} {1e3 * el / it:.3f} {b * it / cpu:.1f} {1e3 * best:.3f}", flush=True)


if __name__ == "__main__":
    main()
