"""gen_ref.py - writes a random RETRO model and PyTorch reference logits for
the C parity test (tests/retro/test_retro.c).

    /usr/bin/python3 tests/retro/gen_ref.py OUTDIR [--small]

OUTDIR gets:
  model/            config.json + model.safetensors (F32)
  model_f16/        the same weights exported as F16
  bad_shape/        a copy with one tensor of the wrong shape
  bad_missing/      a copy with one tensor missing
  bad_nan/          a copy with a NaN in one weight
  bad_huge/         a copy whose config asks for max_seq 2^30
  tokens.i32        (n) int32 token ids
  neighbours.i32    (l, k, r) int32 neighbour tokens (pad = meta pad_id)
  nb_k.i32          (l) int32: how many neighbours to pass to C per chunk
                    (trailing all-pad neighbours may be left out: same function)
  logits_on.f32     (n, V) float32, retrieval on (reference computed in float64)
  logits_off.f32    (n, V) float32, RETRO [OFF]
  logits_f16.f32    (n, V) float32, retrieval on, weights rounded to F16
  meta.json         sizes and the sensitivity checks below

Exit status 77 when torch is missing (the C test then uses tests/retro/recorded/).

The weights are drawn larger than training init (std 0.15, random biases and
LayerNorm gains) so that every part matters to the logits; the script checks
that retrieval on/off, the neighbours of each chunk and the H_u conditioning
each change the logits by far more than the 1e-4 tolerance, so the C test
cannot pass with any of them missing.
"""
import json
import os
import sys

try:
    import torch
except ImportError:
    print("gen_ref.py: torch not available", file=sys.stderr)
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "model", "train"))
import st  # noqa: E402
from retro_model import Retro, RetroConfig  # noqa: E402


def randomise(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.1)
            elif ".ln" in name or name.startswith("ln_f") or "ln_f" in name:
                p.copy_(1.0 + torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.2)
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * (1.5 / fan_in ** 0.5))
        model.tok_emb.weight.mul_(0.5)


def logits(model, tokens, nb, pad):
    with torch.no_grad():
        return model(tokens[None], None if nb is None else nb[None], pad_id=pad)[0]


def write(path, t, dtype):
    with open(path, "wb") as f:
        f.write(t.detach().to(dtype).contiguous().numpy().tobytes())


def main():
    out = sys.argv[1]
    small = "--small" in sys.argv
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    if small:
        cfg = RetroConfig(vocab_size=64, dim=32, n_layers=4, n_heads=2, ffn_dim=48, max_seq=512,
                          retro_layers=[2, 4], pad_id=0, eos_id=1, n_neighbours=2)
        n = 260
    else:
        # dim 128: a tile of the decoder's few-row products sums into out in
        # more than one 64-column block (model/retro.c few_rows)
        cfg = RetroConfig(vocab_size=300, dim=128, n_layers=4, n_heads=4, ffn_dim=256, max_seq=512,
                          retro_layers=[2, 4], pad_id=0, eos_id=1, n_neighbours=2)
        n = 300
    torch.manual_seed(1234)
    model = Retro(cfg)
    model.use_sdpa = False
    randomise(model, gen)
    model.eval()
    V, m, r, pad = cfg.vocab_size, cfg.chunk_len, cfg.neighbour_len, cfg.pad_id
    l, k = n // m, 3
    tokens = torch.randint(2, V, (n,), generator=gen)
    nb = torch.randint(2, V, (l, k, r), generator=gen)
    nb_k = [2] * l
    nb[1:, 2] = pad                # only chunk 0 has a third neighbour (more than n_neighbours = 2)
    nb_k[0] = 3
    nb[0, 1, 90:] = pad            # chunk 0: second neighbour padded at the tail
    nb[1] = pad                    # chunk 1: all padding (attends to nothing)
    nb[2, 1:] = pad                # chunk 2: one neighbour only
    nb_k[2] = 1
    nb[3, 0, 40:50] = pad          # chunk 3: pads in the middle
    nb[3, 0, 0:64] = tokens[192:256]  # plausible [N, F]: the chunk itself as N
    # chunk 3's group extends past n only for n < 319: fine either way
    md = model.double()
    on = logits(md, tokens, nb, pad)
    off = logits(md, tokens, None, pad)

    # sensitivity: each ingredient must matter far beyond the tolerance
    checks = {}
    checks["on_vs_off"] = (on - off).abs().max().item()
    checks["first_m_minus_1_equal"] = (on[:m - 1] - off[:m - 1]).abs().max().item()
    for u in range(l):
        nb2 = nb.clone()
        if u != 1:
            nb2[u, 0, 5] = (nb2[u, 0, 5] + 1 - 2) % (V - 2) + 2
            d = (logits(md, tokens, nb2, pad) - on).abs()
            checks[f"chunk{u}_before_group"] = d[:m * u + m - 1].max().item() if u > 0 else 0.0
            checks[f"chunk{u}_in_group"] = d[m * u + m - 1:m * u + 2 * m - 1].max().item()
    saved = [layer.xattn.out.weight.clone() for layer in md.encoder.layers]
    with torch.no_grad():
        for layer in md.encoder.layers:
            layer.xattn.out.weight.zero_()
    checks["h_u_conditioning"] = (logits(md, tokens, nb, pad) - on).abs().max().item()
    with torch.no_grad():
        for layer, w in zip(md.encoder.layers, saved):
            layer.xattn.out.weight.copy_(w)
    print("gen_ref sensitivities:", json.dumps(checks))
    assert checks["on_vs_off"] > 1e-2 and checks["first_m_minus_1_equal"] == 0.0
    assert checks["h_u_conditioning"] > 1e-2
    for u in range(l):
        if u != 1:
            assert checks[f"chunk{u}_before_group"] == 0.0, f"chunk {u} leaks before its group"
            assert checks[f"chunk{u}_in_group"] > 1e-3, f"chunk {u} neighbours do not matter"

    model = md.float()
    model.save(os.path.join(out, "model"))
    model.save(os.path.join(out, "model_f16"), dtype=torch.float16)
    m16 = Retro.load(os.path.join(out, "model_f16")).double()
    m16.use_sdpa = False
    m16.eval()
    on16 = logits(m16, tokens, nb, pad)

    sd = {kk: v.float() for kk, v in model.state_dict().items()}
    bad = dict(sd)
    bad["layers.1.ffn.fc1.weight"] = bad["layers.1.ffn.fc1.weight"][:, :-1].contiguous()
    os.makedirs(os.path.join(out, "bad_shape"), exist_ok=True)
    st.save(bad, os.path.join(out, "bad_shape", "model.safetensors"))
    bad = dict(sd)
    del bad["layers.3.cca.kv.bias"]
    os.makedirs(os.path.join(out, "bad_missing"), exist_ok=True)
    st.save(bad, os.path.join(out, "bad_missing", "model.safetensors"))
    bad = dict(sd)
    bad["layers.2.attn.qkv.weight"] = bad["layers.2.attn.qkv.weight"].clone()
    bad["layers.2.attn.qkv.weight"][0, 5] = float("nan")
    os.makedirs(os.path.join(out, "bad_nan"), exist_ok=True)
    st.save(bad, os.path.join(out, "bad_nan", "model.safetensors"))
    os.makedirs(os.path.join(out, "bad_huge"), exist_ok=True)
    st.save(sd, os.path.join(out, "bad_huge", "model.safetensors"))
    for d in ("bad_shape", "bad_missing", "bad_nan", "bad_huge"):
        with open(os.path.join(out, d, "config.json"), "w") as f:
            json.dump(dict(cfg.to_dict(), **({"max_seq": 1 << 30} if d == "bad_huge" else {})), f)

    write(os.path.join(out, "tokens.i32"), tokens, torch.int32)
    write(os.path.join(out, "neighbours.i32"), nb, torch.int32)
    write(os.path.join(out, "nb_k.i32"), torch.tensor(nb_k), torch.int32)
    write(os.path.join(out, "logits_on.f32"), on, torch.float32)
    write(os.path.join(out, "logits_off.f32"), off, torch.float32)
    write(os.path.join(out, "logits_f16.f32"), on16, torch.float32)
    meta = {"n": n, "l": l, "k": k, "r": r, "vocab": V, "pad_id": pad, "chunk_len": m,
            "torch": torch.__version__, "sensitivities": checks}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"gen_ref.py: wrote {out} (n={n}, V={V}, dim={cfg.dim})")


if __name__ == "__main__":
    main()
