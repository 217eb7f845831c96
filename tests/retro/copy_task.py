"""copy_task.py - a learnability check of the RETRO architecture (not run in
CI; needs minutes on a GPU): random token sequences whose chunk-u neighbours
hold chunk u+1 verbatim in their continuation F. A correct RETRO drives the
loss on chunks 1.. towards 0 while RETRO [OFF] stays at ln(V).

    /usr/bin/python3 tests/retro/copy_task.py [steps] [device]
"""
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "model", "train"))
from retro_model import Retro, RetroConfig  # noqa: E402


def batch(B, n, V, m, r, k, dev):
    L = n // m
    t = torch.randint(2, V, (B, n + m), device=dev)
    nb = torch.randint(2, V, (B, L, k, r), device=dev)
    for u in range(L):
        nb[:, u, 0, :2 * m] = t[:, u * m:(u + 2) * m]  # [N, F] = chunk u, chunk u+1
    perm = torch.randperm(k, device=dev)
    return t[:, :n], nb[:, :, perm]


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    dev = sys.argv[2] if len(sys.argv) > 2 else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    cfg = RetroConfig(vocab_size=512, dim=256, n_layers=4, n_heads=4, ffn_dim=1024, max_seq=512,
                      retro_layers=[2, 4], pad_id=0, eos_id=1)
    model = Retro(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    B, n, m = 16, 512, 64
    t0 = time.time()
    for step in range(steps + 1):
        tok, nb = batch(B, n, cfg.vocab_size, m, 128, 2, dev)
        logits = model(tok, nb)
        loss = F.cross_entropy(logits[:, m - 1:-1].reshape(-1, cfg.vocab_size), tok[:, m:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            with torch.no_grad():
                off = model(tok, None)
                loff = F.cross_entropy(off[:, m - 1:-1].reshape(-1, cfg.vocab_size), tok[:, m:].reshape(-1))
            print(f"step {step} loss(chunks 1..) {loss.item():.3f} [OFF] {loff.item():.3f} "
                  f"t={time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
