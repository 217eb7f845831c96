"""bench_generate.py - the generate bench: greedy generation at batch 1 with
neighbours, the C decoder (bench_generate) against the PyTorch reference on
the same random model, the same prompt and the same fixed neighbour source,
in the same run. Reports time to first token, tokens/s, the ratio, whether the
token streams agree, and where the C time went (neighbour encoding; the
"retrieval" here is a fixed neighbour source - live retrieval through the
encoder, index and store is measured by the server's bench).

PyTorch is timed two ways:
  incremental  - a KV cache for self-attention, each chunk's neighbours
                 encoded once and their CCA keys/values cached (this file,
                 TorchIncremental: the same algorithm as the C code);
  recompute    - the reference Retro.forward over the whole prefix per token
                 (model/train/retro_model.py as it is; one run, slow).
The C decoder runs on an F32 and on an F16 file of the same (F16-representable)
weights; with the F16 file its one-token path reads F16 weights directly. Every
side runs --reps times, interleaved, and the fastest of each is reported (the
machine may be shared); wall-clock and process-CPU times are both given.

    /usr/bin/python3 tests/bench/generate/bench_generate.py --exe BUILD/tests/bench/generate/bench_generate
        [--prompt 100] [--gen 156] [--threads N] [--k 2] [--reps 3] [--no-recompute]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "model", "train"))
from retro_model import Retro, RetroConfig, apply_rope, masked_attention, rope_cos_sin  # noqa: E402


class TorchIncremental:
    """Incremental greedy decoding on a Retro module (batch 1)."""

    def __init__(self, model, max_tokens):
        self.m = model
        cfg = model.cfg
        self.cfg = cfg
        self.hd = cfg.dim // cfg.n_heads
        self.cos, self.sin = rope_cos_sin(torch.arange(max(max_tokens, 2 * cfg.chunk_len, cfg.neighbour_len)),
                                          self.hd, cfg.rope_theta)
        H, T, D = cfg.n_heads, max_tokens, cfg.dim
        self.kc = [torch.zeros(H, T, self.hd) for _ in range(cfg.n_layers)]
        self.vc = [torch.zeros(H, T, self.hd) for _ in range(cfg.n_layers)]
        self.hbuf = torch.zeros(T, D)
        self.first = cfg.retro_layers[0] - 1 if cfg.retro_layers else -1
        self.nb = {}      # chunk -> (k, r) tokens
        self.cca_kv = {}  # (chunk, layer) -> (K (H, k*r, hd), V, mask (k*r))
        self.pos = 0

    def heads(self, x):  # (T, D) -> (H, T, hd)
        return x.reshape(x.shape[0], self.cfg.n_heads, self.hd).transpose(0, 1)

    def encode(self, u):
        cfg, m = self.cfg, self.cfg.chunk_len
        nb = self.nb[u]
        k, r = nb.shape
        h = self.hbuf[u * m:(u + 1) * m][None].expand(k, m, cfg.dim)
        e, mask = self.m.encode_neighbours(nb, h, cfg.pad_id)
        e, mask = e.reshape(k * r, cfg.dim), mask.reshape(k * r)
        ck, sk = self.cos[:r].repeat(k, 1), self.sin[:r].repeat(k, 1)
        for li, layer in enumerate(self.m.layers):
            if layer.is_retro:
                kk, vv = layer.cca.kv(e).chunk(2, dim=-1)
                self.cca_kv[(u, li)] = (apply_rope(self.heads(kk), ck, sk), self.heads(vv), mask)

    @torch.no_grad()
    def forward(self, tokens):
        """tokens: (n,) -> logits of the last position (V,)."""
        cfg, m = self.cfg, self.cfg.chunk_len
        n, P0 = tokens.shape[0], self.pos
        cos, sin = self.cos[P0:P0 + n], self.sin[P0:P0 + n]
        x = self.m.tok_emb(tokens)
        causal = torch.ones(n, P0 + n, dtype=torch.bool).tril(P0)
        for li, layer in enumerate(self.m.layers):
            q, k, v = layer.attn.qkv(layer.ln1(x)).chunk(3, dim=-1)
            self.kc[li][:, P0:P0 + n] = apply_rope(self.heads(k), cos, sin)
            self.vc[li][:, P0:P0 + n] = self.heads(v)
            q = apply_rope(self.heads(q), cos, sin)
            a = masked_attention(q, self.kc[li][:, :P0 + n], self.vc[li][:, :P0 + n],
                                 None if n == 1 else causal)
            x = x + layer.attn.out(a.transpose(0, 1).reshape(n, cfg.dim))
            if layer.is_retro:
                c = layer.lnc(x)
                if li == self.first:
                    self.hbuf[P0:P0 + n] = c
                    for p in range(P0, P0 + n):
                        if p % m == m - 1 and (p // m) in self.nb:
                            self.encode(p // m)
                i = 0
                while i < n:
                    p = P0 + i
                    if p < m - 1:
                        i += 1
                        continue
                    u = (p - (m - 1)) // m
                    end = min(n, (u + 1) * m + m - 1 - P0)
                    if (u, li) in self.cca_kv:
                        K, V, mask = self.cca_kv[(u, li)]
                        g = torch.arange(p, P0 + end) - (m - 1) - u * m + (m - 1)
                        qq = apply_rope(self.heads(layer.cca.q(c[i:end])), self.cos[g], self.sin[g])
                        a = masked_attention(qq, K, V, mask[None, None, :])
                        x[i:end] = x[i:end] + layer.cca.out(a.transpose(0, 1).reshape(end - i, cfg.dim))
                    i = end
            x = x + layer.ffn(layer.ln2(x))
        self.pos += n
        return F.linear(self.m.ln_f(x[-1]), self.m.tok_emb.weight)


def torch_incremental(model, prompt, nb_src, n_gen, total):
    gen = TorchIncremental(model, total)
    m = model.cfg.chunk_len
    out = []
    t0, c0 = time.perf_counter(), time.process_time()
    ttft = ttft_cpu = 0.0
    feed = prompt
    for step in range(n_gen):
        pos = gen.pos
        for u in range(nb_src.shape[0]):
            if u not in gen.nb and pos <= u * m + m - 1 < pos + feed.shape[0]:
                gen.nb[u] = nb_src[u]
        logits = gen.forward(feed)
        tok = int(torch.argmax(logits))
        out.append(tok)
        if step == 0:
            ttft, ttft_cpu = time.perf_counter() - t0, time.process_time() - c0
        feed = torch.tensor([tok])
    return out, ttft, time.perf_counter() - t0, ttft_cpu, time.process_time() - c0


def torch_recompute(model, prompt, nb_src, n_gen):
    seq = prompt.tolist()
    out = []
    t0, c0 = time.perf_counter(), time.process_time()
    ttft = ttft_cpu = 0.0
    with torch.no_grad():
        for step in range(n_gen):
            t = torch.tensor(seq)[None]
            logits = model(t, nb_src[None])[0, -1]
            tok = int(torch.argmax(logits))
            out.append(tok)
            seq.append(tok)
            if step == 0:
                ttft, ttft_cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, ttft, time.perf_counter() - t0, ttft_cpu, time.process_time() - c0


def decode_weight_bytes(model, elem_bytes):
    """Bytes of weights one decoded token reads: the decoder's matrices and the
    output head (tok_emb when tied; of tok_emb otherwise only one row). Vectors
    (biases, LayerNorm) are left out: < 0.1% here."""
    n = 0
    for name, p in model.named_parameters():
        if p.dim() != 2 or name.startswith("encoder.") or ".cca.kv." in name:
            continue
        if name == "tok_emb.weight" and not model.cfg.tie_embeddings:
            n += p.shape[1]
        else:
            n += p.numel()
    return n * elem_bytes


def last_level_cache():
    sizes = []
    for d in sorted(os.listdir("/sys/devices/system/cpu/cpu0/cache") if os.path.isdir(
            "/sys/devices/system/cpu/cpu0/cache") else []):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/{d}/size") as f:
                sizes.append(f.read().strip())
        except OSError:
            pass
    return sizes[-1] if sizes else "unknown"


def stream_bandwidth(exe, threads, mib):
    res = subprocess.run([exe, str(threads), str(mib), "5"], check=True, capture_output=True, text=True)
    return json.loads(res.stdout)


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exe", required=True)
    ap.add_argument("--prompt", type=int, default=100)
    ap.add_argument("--gen", type=int, default=156)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--no-recompute", action="store_true")
    ap.add_argument("--reps", type=int, default=3,
                    help="runs per side (C and PyTorch incremental, interleaved); the best of each is reported")
    ap.add_argument("--keep", help="write the model here instead of a temp dir")
    ap.add_argument("--c-only", action="store_true", help="write the inputs, run only the C side")
    ap.add_argument("--stream", help="the stream_copy binary (default: next to --exe; none: skip)")
    ap.add_argument("--stream-mib", type=int, default=128,
                    help="MiB per array (STREAM's rule: >= 4x the last-level cache)")
    args = ap.parse_args()
    stream_exe = args.stream or os.path.join(os.path.dirname(os.path.abspath(args.exe)), "stream_copy")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = RetroConfig(vocab_size=8192, dim=384, n_layers=6, n_heads=6, ffn_dim=1536, max_seq=1024,
                      retro_layers=[3, 6], enc_layers=2, n_neighbours=args.k, pad_id=0, eos_id=1)
    model = Retro(cfg)
    model.init_weights(std=0.05, zero_cca=False)
    model.use_sdpa = False
    model.eval()
    with torch.no_grad():  # F16-representable weights: the F32 and F16 files hold the same values
        for p in model.parameters():
            p.copy_(p.half().float())
    m, r = cfg.chunk_len, cfg.neighbour_len
    total = args.prompt + args.gen
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(2, cfg.vocab_size, (args.prompt,), generator=g)
    n_chunks = total // m
    nb = torch.randint(2, cfg.vocab_size, (max(n_chunks, 1), args.k, r), generator=g)
    nb[:, -1, 100:] = cfg.pad_id  # some padding, as short documents give
    tmp = tempfile.TemporaryDirectory()
    d = args.keep or tmp.name
    model.save(os.path.join(d, "model"))
    model.save(os.path.join(d, "model_f16"), dtype=torch.float16)
    with open(os.path.join(d, "prompt.i32"), "wb") as f:
        f.write(prompt.to(torch.int32).numpy().tobytes())
    with open(os.path.join(d, "nb.i32"), "wb") as f:
        f.write(nb.to(torch.int32).numpy().tobytes())

    def run_c(sub):
        res = subprocess.run([args.exe, os.path.join(d, sub), os.path.join(d, "prompt.i32"),
                              os.path.join(d, "nb.i32"), str(args.k), str(args.gen), str(args.threads)],
                             check=True, capture_output=True, text=True)
        return json.loads(res.stdout)

    def best_c(runs):  # fastest run for each timing (the machine may be shared)
        b = dict(runs[0])
        for key in ("ttft_s", "ttft_cpu_s", "total_cpu_s", "encode_s", "retrieval_s"):
            b[key] = min(x[key] for x in runs)
        fastest = min(runs, key=lambda x: x["total_s"])
        b["total_s"], b["decode_tok_s"] = fastest["total_s"], fastest["decode_tok_s"]
        b["encode_s"], b["retrieval_s"] = fastest["encode_s"], fastest["retrieval_s"]
        # one token's forward alone: decode steps less their neighbour encoding, fastest run
        b["token_s"] = min((x["total_s"] - x["ttft_s"] - x["decode_encode_s"]) / max(1, x["n_gen"] - 1) for x in runs)
        b["same_tokens_all_runs"] = all(x["tokens"] == runs[0]["tokens"] for x in runs)
        return b

    c32_runs, c_runs, inc_runs = [], [], []
    load_before = os.getloadavg()[0]
    bw = None
    for _ in range(args.reps):
        if os.path.exists(stream_exe):  # each rep, the best kept: the machine may be shared
            x = stream_bandwidth(stream_exe, args.threads, args.stream_mib)
            bw = x if bw is None else dict(x, copy_gb_s=max(x["copy_gb_s"], bw["copy_gb_s"]),
                                           read_gb_s=max(x["read_gb_s"], bw["read_gb_s"]))
        c32_runs.append(run_c("model"))
        c_runs.append(run_c("model_f16"))
        if not args.c_only:
            inc_runs.append(torch_incremental(model, prompt, nb, args.gen, total))
    c32, c = best_c(c32_runs), best_c(c_runs)
    bandwidth = None
    if bw:  # decode against the physical limit: bytes the weights take per token x tokens/s
        bandwidth = dict(bw, loadavg_1min=os.getloadavg()[0])
        for key, x, eb in (("f16_file", c, 2), ("f32_file", c32, 4)):
            b = decode_weight_bytes(model, eb)
            gbs = b / x["token_s"] / 1e9
            bandwidth[key] = {"weight_bytes_per_token": b, "ms_per_token": 1e3 * x["token_s"],
                              "weights_gb_s": gbs, "of_copy": gbs / bw["copy_gb_s"], "of_read": gbs / bw["read_gb_s"]}
    if args.c_only:
        for x in (c32, c):
            x.pop("tokens")
            print(json.dumps(x))
        if bandwidth:
            print(json.dumps({"bandwidth": bandwidth}))
        return 0

    def side(ttft, total, ttft_cpu, total_cpu):
        return {"ttft_ms": ttft * 1e3, "tok_s": args.gen / total,
                "ttft_cpu_ms": ttft_cpu * 1e3, "tok_per_cpu_s": args.gen / total_cpu}

    def ratio(a, b):  # how many times faster a (C) is than b (PyTorch)
        return {"tok_s": a["tok_s"] / b["tok_s"], "ttft": b["ttft_ms"] / a["ttft_ms"],
                "tok_per_cpu_s": a["tok_per_cpu_s"] / b["tok_per_cpu_s"],
                "ttft_cpu": b["ttft_cpu_ms"] / a["ttft_cpu_ms"]}

    inc_tokens = inc_runs[0][0]
    t_inc = [min(x[i] for x in inc_runs) for i in range(1, 5)]
    def c_side(c):
        cs = side(c["ttft_s"], c["total_s"], c["ttft_cpu_s"], c["total_cpu_s"])
        cs.update({"decode_tok_s": c["decode_tok_s"], "encode_share": c["encode_s"] / c["total_s"],
                   "retrieval_share": c["retrieval_s"] / c["total_s"], "chunks_encoded": c["chunks_encoded"]})
        return cs

    cs = c_side(c)
    cs32 = dict(c_side(c32), same_tokens_as_f16_file=c32["tokens"] == c["tokens"])
    results = {
        "config": {"layers": 6, "dim": 384, "heads": 6, "ffn": 1536, "vocab": 8192, "retro_layers": [3, 6],
                   "k": args.k, "prompt": args.prompt, "gen": args.gen, "threads": args.threads,
                   "chunk_boundaries_crossed": total // m - args.prompt // m, "torch": torch.__version__,
                   "loadavg_1min_at_start": load_before, "loadavg_1min_at_end": os.getloadavg()[0],
                   "cpus": os.cpu_count(), "reps_best_of": args.reps},
        "c": cs,
        "c_f32_file": cs32,
        "torch_incremental": dict(side(*t_inc), same_tokens_as_c=first_diff(c["tokens"], inc_tokens) is None
                                  and all(x[0] == inc_tokens for x in inc_runs)),
    }
    if bandwidth:
        results["bandwidth"] = bandwidth
    results["ratio_vs_torch_incremental"] = ratio(cs, results["torch_incremental"])
    results["ratio_f32_file_vs_torch_incremental"] = ratio(cs32, results["torch_incremental"])
    if not args.no_recompute:
        rc_tokens, *t_rc = torch_recompute(model, prompt, nb, args.gen)
        results["torch_recompute"] = dict(side(*t_rc), same_tokens_as_c=first_diff(c["tokens"], rc_tokens) is None)
        results["ratio_vs_torch_recompute"] = ratio(cs, results["torch_recompute"])
    diff = first_diff(c["tokens"], inc_tokens)
    if diff is not None:
        results["first_token_mismatch_vs_incremental"] = diff
    print(json.dumps(results, indent=1))
    ri = results["ratio_vs_torch_incremental"]
    r32 = results["ratio_f32_file_vs_torch_incremental"]
    print(f"# C with the F32 file: {cs32['tok_s']:.1f} tok/s, TTFT {cs32['ttft_ms']:.1f} ms; ratio {r32['tok_s']:.2f}x "
          f"tok/s, {r32['ttft']:.2f}x TTFT (per CPU second: {r32['tok_per_cpu_s']:.2f}x, {r32['ttft_cpu']:.2f}x)")
    print(f"# generate bench (F16 file): C {cs['tok_s']:.1f} tok/s, TTFT {cs['ttft_ms']:.1f} ms; PyTorch incremental "
          f"{results['torch_incremental']['tok_s']:.1f} tok/s, TTFT {results['torch_incremental']['ttft_ms']:.1f} ms; "
          f"ratio {ri['tok_s']:.2f}x tok/s, {ri['ttft']:.2f}x TTFT (per CPU second: {ri['tok_per_cpu_s']:.2f}x, "
          f"{ri['ttft_cpu']:.2f}x)")
    if "torch_recompute" in results:
        rr = results["ratio_vs_torch_recompute"]
        print(f"# vs PyTorch full recompute: {results['torch_recompute']['tok_s']:.2f} tok/s, ratio "
              f"{rr['tok_s']:.1f}x tok/s, {rr['ttft']:.2f}x TTFT (per CPU second {rr['tok_per_cpu_s']:.1f}x)")
    if bandwidth:
        for key in ("f16_file", "f32_file"):
            x = bandwidth[key]
            print(f"# decode vs memory bandwidth ({key}): {x['weight_bytes_per_token'] / 1e6:.1f} MB of weights per "
                  f"token in {x['ms_per_token']:.2f} ms = {x['weights_gb_s']:.1f} GB/s; {100 * x['of_copy']:.0f}% of "
                  f"STREAM copy {bw['copy_gb_s']:.1f} GB/s, {100 * x['of_read']:.0f}% of read {bw['read_gb_s']:.1f} GB/s "
                  f"({args.threads} threads; last-level cache {last_level_cache()}: weights that fit in it "
                  f"can exceed 100%)")
    tmp.cleanup()
    ok = results["torch_incremental"]["same_tokens_as_c"] and cs32["same_tokens_as_f16_file"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
