"""retro_model.py - the PyTorch reference of the RETRO decoder (shared by
training and by the C parity tests). Architecture, tensor names, shapes and
config.json fields: model/RETRO_FORMAT.md. The C implementation is
model/retro.c; both must compute the same function.

What it is: a decoder-only pre-LN transformer with rotary self-attention,
RETRO blocks (self-attention -> chunked cross-attention -> feed-forward) at
config "retro_layers", and a 2-layer bidirectional neighbour encoder whose
layers cross-attend to the chunk's decoder activations H_u. Forward is batched
over sequences and chunks (the encoder runs on (B*l*k, r) at once), so it is
meant for training as well as for reference logits.

What it is not: a generator. `forward` recomputes the whole sequence; the
incremental decoder (KV cache, per-chunk neighbour cache) lives in C
(model/retro.c). Runs on CPU (torch >= 1.13) and CUDA unchanged.
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from . import st  # package import (model.train.st)
except ImportError:  # run as a plain script / sys.path entry
    import st

CONFIG_DEFAULTS = {
    "model_type": "retro",
    "vocab_size": 8192,
    "dim": 384,
    "n_layers": 6,
    "n_heads": 6,
    "ffn_dim": 1536,
    "max_seq": 1024,
    "chunk_len": 64,
    "neighbour_len": 128,
    "n_neighbours": 2,
    "enc_layers": 2,
    "retro_layers": [3, 6],
    "rope_theta": 10000.0,
    "layer_norm_eps": 1e-5,
    "tie_embeddings": True,
    "pad_id": 0,
    "eos_id": 0,
}


class RetroConfig:
    """Plain attribute bag over the config.json fields (see RETRO_FORMAT.md)."""

    def __init__(self, **kw):
        unknown = set(kw) - set(CONFIG_DEFAULTS)
        if unknown:
            raise ValueError(f"RetroConfig: unknown fields {sorted(unknown)}")
        d = dict(CONFIG_DEFAULTS)
        d.update(kw)
        for k, v in d.items():
            setattr(self, k, v)
        self.retro_layers = [int(x) for x in self.retro_layers]
        self.validate()

    def validate(self):
        if self.model_type != "retro":
            raise ValueError(f"config: model_type must be 'retro', got {self.model_type!r}")
        if self.dim % self.n_heads:
            raise ValueError("config: dim must be a multiple of n_heads")
        if (self.dim // self.n_heads) % 2:
            raise ValueError("config: head dim (dim / n_heads) must be even (rotary)")
        rl = self.retro_layers
        if rl != sorted(set(rl)) or any(x < 1 or x > self.n_layers for x in rl) or len(rl) > 16:
            raise ValueError(f"config: retro_layers must be sorted unique 1..n_layers (<= 16), got {rl}")
        if self.enc_layers < 0:
            raise ValueError("config: enc_layers must be >= 0")

    def to_dict(self):
        return {k: getattr(self, k) for k in CONFIG_DEFAULTS}


# ---------------------------------------------------------------- helpers

def rope_cos_sin(positions, head_dim, theta):
    """positions: (P,) -> cos, sin: (P, head_dim/2) in float32."""
    half = head_dim // 2
    inv = theta ** (-torch.arange(0, half, dtype=torch.float64, device=positions.device) * 2.0 / head_dim)
    ang = positions.to(torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x, cos, sin):
    """GPT-NeoX half-split rotary. x: (..., P, hd); cos/sin: (P, hd/2)
    broadcastable against x[..., :hd/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def masked_attention(q, k, v, key_mask=None, causal=False):
    """q: (..., H, Tq, hd); k, v: (..., H, Tk, hd); key_mask: bool broadcastable
    to (..., H, Tq, Tk), True = may attend. Rows with no allowed key give 0
    (finite fill value, so neither the output nor the gradient is NaN)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    allow = key_mask
    if causal:
        tq, tk = s.shape[-2], s.shape[-1]
        c = torch.ones(tq, tk, dtype=torch.bool, device=s.device).tril(tk - tq)
        allow = c if allow is None else (allow & c)
    if allow is None:
        return torch.matmul(torch.softmax(s, dim=-1), v)
    s = s.masked_fill(~allow, torch.finfo(s.dtype).min)
    p = torch.softmax(s, dim=-1)
    any_key = allow.any(dim=-1, keepdim=True)
    p = p * any_key.to(p.dtype)
    return torch.matmul(p, v)


def _split_heads(x, n_heads):
    """(..., T, D) -> (..., H, T, hd)"""
    *lead, t, d = x.shape
    return x.reshape(*lead, t, n_heads, d // n_heads).transpose(-2, -3)


def _merge_heads(x):
    """(..., H, T, hd) -> (..., T, D)"""
    x = x.transpose(-2, -3)
    *lead, t, h, hd = x.shape
    return x.reshape(*lead, t, h * hd)


# ---------------------------------------------------------------- modules

class SelfAttention(nn.Module):
    """qkv: Linear(D, 3D) rows [q; k; v], head h = rows h*hd..(h+1)*hd of each.
    Rotary on q and k (whole head dim)."""

    def __init__(self, dim, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, cos, sin, causal, key_mask=None, use_sdpa=False):
        # x: (N, T, D); cos/sin: (T, hd/2); key_mask: (N, T) bool or None
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = apply_rope(_split_heads(q, self.n_heads), cos, sin)  # (N, H, T, hd)
        k = apply_rope(_split_heads(k, self.n_heads), cos, sin)
        v = _split_heads(v, self.n_heads)
        if use_sdpa and key_mask is None and causal:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            km = None if key_mask is None else key_mask[:, None, None, :]
            a = masked_attention(q, k, v, km, causal=causal)
        return self.out(_merge_heads(a))


class CrossAttention(nn.Module):
    """q: Linear(D, D) on the queries; kv: Linear(D, 2D) rows [k; v] on the
    context; out: Linear(D, D)."""

    def __init__(self, dim, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def attend(self, x, ctx, key_mask=None, q_rope=None, k_rope=None):
        """x: (N, Tq, D); ctx: (N, Tk, D); key_mask: (N, Tk) bool or None;
        q_rope/k_rope: (cos, sin) pairs or None. Returns the attention output
        BEFORE the out projection: (N, Tq, D)."""
        q = _split_heads(self.q(x), self.n_heads)
        k, v = self.kv(ctx).chunk(2, dim=-1)
        k = _split_heads(k, self.n_heads)
        v = _split_heads(v, self.n_heads)
        if q_rope is not None:
            q = apply_rope(q, *q_rope)
        if k_rope is not None:
            k = apply_rope(k, *k_rope)
        km = None if key_mask is None else key_mask[:, None, None, :]
        return _merge_heads(masked_attention(q, k, v, km))


class FeedForward(nn.Module):
    def __init__(self, dim, ffn_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class EncoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, eps = cfg.dim, cfg.layer_norm_eps
        self.ln1 = nn.LayerNorm(d, eps=eps)
        self.attn = SelfAttention(d, cfg.n_heads)
        self.lnx = nn.LayerNorm(d, eps=eps)
        self.xattn = CrossAttention(d, cfg.n_heads)
        self.ln2 = nn.LayerNorm(d, eps=eps)
        self.ffn = FeedForward(d, cfg.ffn_dim)

    def forward(self, x, key_mask, cos, sin, h):
        # x: (N, r, D); key_mask: (N, r); h: (N, m, D) the chunk's H_u
        x = x + self.attn(self.ln1(x), cos, sin, causal=False, key_mask=key_mask)
        x = x + self.xattn.out(self.xattn.attend(self.lnx(x), h))
        x = x + self.ffn(self.ln2(x))
        return x


class NeighbourEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.enc_layers)])
        self.ln_f = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps)


class DecoderLayer(nn.Module):
    def __init__(self, cfg, is_retro):
        super().__init__()
        d, eps = cfg.dim, cfg.layer_norm_eps
        self.is_retro = is_retro
        self.ln1 = nn.LayerNorm(d, eps=eps)
        self.attn = SelfAttention(d, cfg.n_heads)
        if is_retro:
            self.lnc = nn.LayerNorm(d, eps=eps)
            self.cca = CrossAttention(d, cfg.n_heads)
        self.ln2 = nn.LayerNorm(d, eps=eps)
        self.ffn = FeedForward(d, cfg.ffn_dim)


class Retro(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        if isinstance(cfg, dict):
            cfg = RetroConfig(**cfg)
        self.cfg = cfg
        retro = set(cfg.retro_layers)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList([DecoderLayer(cfg, (i + 1) in retro) for i in range(cfg.n_layers)])
        self.encoder = NeighbourEncoder(cfg)
        self.ln_f = nn.LayerNorm(cfg.dim, eps=cfg.layer_norm_eps)
        if not cfg.tie_embeddings:
            self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # Use fused attention for the causal decoder self-attention when the
        # torch version has it (training speed); set False for strict parity.
        self.use_sdpa = hasattr(F, "scaled_dot_product_attention")
        self.init_weights()

    # ------------------------------------------------------------ weights

    def init_weights(self, std=0.02, zero_cca=True):
        """GPT-2 style: Linear/Embedding ~ N(0, std), biases 0, LN (1, 0).
        zero_cca=True zeroes every CCA out projection (see zero_cca_out)."""
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, 0.0, std)
                if getattr(mod, "bias", None) is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.LayerNorm):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
        if zero_cca:
            self.zero_cca_out()

    @torch.no_grad()
    def zero_cca_out(self):
        """Zeroes the CCA output projections (weight and bias): the model then
        equals RETRO [OFF] exactly, whatever the neighbours (RETRO-fitting)."""
        for layer in self.layers:
            if layer.is_retro:
                layer.cca.out.weight.zero_()
                layer.cca.out.bias.zero_()

    def retro_parameters(self):
        """The parameters RETRO-fitting trains: every lnc/cca and the encoder."""
        ps = list(self.encoder.parameters())
        for layer in self.layers:
            if layer.is_retro:
                ps += list(layer.lnc.parameters()) + list(layer.cca.parameters())
        return ps

    def decoder_parameters(self):
        """Everything not in retro_parameters (embedding, SA, FFN, LNs, head)."""
        ids = {id(p) for p in self.retro_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    # ------------------------------------------------------------ forward

    def encode_neighbours(self, nb, h, pad_id):
        """nb: (N, r) int64 neighbour tokens; h: (N, m, D) the H_u each
        neighbour is conditioned on. Returns E: (N, r, D) and mask (N, r)."""
        cfg = self.cfg
        mask = nb != pad_id
        x = self.tok_emb(nb)
        r = nb.shape[1]
        cos, sin = rope_cos_sin(torch.arange(r, device=nb.device), cfg.dim // cfg.n_heads, cfg.rope_theta)
        for layer in self.encoder.layers:
            x = layer(x, mask, cos, sin, h)
        return self.encoder.ln_f(x), mask

    def cca(self, layer, x, E, E_mask, rope_q, rope_k):
        """Chunked cross-attention sublayer, output added to the residual.
        x: (B, n, D) = lnc(residual); E: (B, L, k*r, D); E_mask: (B, L, k*r)."""
        cfg = self.cfg
        m = cfg.chunk_len
        B, n, D = x.shape
        L = E.shape[1]
        if L == 0:
            return torch.zeros_like(x)
        # attending positions m-1 .. m-1+L*m-1 (cut at n), grouped by chunk
        q = x[:, m - 1:m - 1 + L * m]
        short = L * m - q.shape[1]
        if short:
            q = F.pad(q, (0, 0, 0, short))
        q = q.reshape(B * L, m, D)
        a = layer.cca.attend(q, E.reshape(B * L, -1, D), E_mask.reshape(B * L, -1),
                             q_rope=rope_q, k_rope=rope_k)
        o = layer.cca.out(a)  # (B*L, m, D)
        o = o * E_mask.reshape(B * L, -1).any(dim=-1).to(o.dtype)[:, None, None]
        o = o.reshape(B, L * m, D)[:, :n - (m - 1)]
        return F.pad(o, (0, 0, m - 1, n - (m - 1) - o.shape[1]))

    def forward(self, tokens, neighbours=None, pad_id=None, retrieval=True, return_hidden=False):
        """tokens: (B, n) int64; neighbours: (B, l, k, r) int64 or None.
        Neighbours of chunk u are used by positions 64u+63 .. 64u+126; chunks
        u >= l (or all, when neighbours is None or retrieval is False) have
        none (RETRO [OFF]: the CCA sublayers are skipped). Chunks beyond the
        last complete chunk of the sequence are ignored. k = 0 is allowed.
        Returns logits (B, n, vocab) (and the final hidden states if asked)."""
        cfg = self.cfg
        m = cfg.chunk_len
        pad = cfg.pad_id if pad_id is None else pad_id
        B, n = tokens.shape
        hd = cfg.dim // cfg.n_heads
        dev = tokens.device
        use_nb = retrieval and neighbours is not None and neighbours.numel() > 0
        L = 0
        if use_nb:
            if neighbours.dim() != 4 or neighbours.shape[0] != B:
                raise ValueError("neighbours must be (B, l, k, r)")
            L = min(neighbours.shape[1], n // m)
            use_nb = L > 0
        cos, sin = rope_cos_sin(torch.arange(n, device=dev), hd, cfg.rope_theta)
        E = E_mask = rope_q = rope_k = None
        if use_nb:
            nb = neighbours[:, :L]
            k, r = nb.shape[2], nb.shape[3]
            rope_q = rope_cos_sin(torch.arange(m, device=dev) + (m - 1), hd, cfg.rope_theta)
            ck, sk = rope_cos_sin(torch.arange(r, device=dev), hd, cfg.rope_theta)
            rope_k = (ck.repeat(k, 1), sk.repeat(k, 1))  # key j of every neighbour: position j
        x = self.tok_emb(tokens)
        for layer in self.layers:
            x = x + layer.attn(layer.ln1(x), cos, sin, causal=True, use_sdpa=self.use_sdpa)
            if layer.is_retro and use_nb:
                xc = layer.lnc(x)
                if E is None:  # first RETRO layer: H_u = lnc(x) of chunk u
                    h = xc[:, :L * m].reshape(B, L, 1, m, cfg.dim).expand(B, L, k, m, cfg.dim)
                    e, msk = self.encode_neighbours(nb.reshape(B * L * k, r),
                                                    h.reshape(B * L * k, m, cfg.dim), pad)
                    E = e.reshape(B, L, k * r, cfg.dim)
                    E_mask = msk.reshape(B, L, k * r)
                x = x + self.cca(layer, xc, E, E_mask, rope_q, rope_k)
            x = x + layer.ffn(layer.ln2(x))
        hid = self.ln_f(x)
        w = self.tok_emb.weight if cfg.tie_embeddings else self.head.weight
        logits = F.linear(hid, w)
        return (logits, hid) if return_hidden else logits

    # ------------------------------------------------------------ files

    def save(self, path, dtype=torch.float32):
        """Writes config.json + model.safetensors into directory path. dtype:
        torch.float32 (default), float16 or bfloat16 (the C loader converts
        to F32). Tied models write no head.weight."""
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(self.cfg.to_dict(), f, indent=2)
            f.write("\n")
        sd = {name: t.detach().to(dtype) for name, t in self.state_dict().items()}
        st.save(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt", "model_type": "retro"})

    @classmethod
    def load(cls, path, map_location="cpu"):
        """Reads a directory written by save(); weights come back as float32."""
        with open(os.path.join(path, "config.json")) as f:
            raw = json.load(f)
        model = cls(RetroConfig(**{k: v for k, v in raw.items() if k in CONFIG_DEFAULTS}))
        sd = {k: v.float() for k, v in st.load(os.path.join(path, "model.safetensors")).items()}
        model.load_state_dict(sd, strict=True)
        return model.to(map_location)


def _smoke():
    """Tiny self-check: shapes, RETRO [OFF] == zero-CCA, causality, save/load."""
    import tempfile
    torch.manual_seed(0)
    cfg = RetroConfig(vocab_size=300, dim=64, n_layers=4, n_heads=4, ffn_dim=128, max_seq=512,
                      retro_layers=[2, 4], pad_id=0, eos_id=1)
    model = Retro(cfg)
    model.init_weights(zero_cca=False)
    model.use_sdpa = False
    model.eval()
    B, n, m = 2, 200, cfg.chunk_len
    tokens = torch.randint(2, 300, (B, n))
    nb = torch.randint(2, 300, (B, n // m, 2, cfg.neighbour_len))
    nb[:, :, 1, 100:] = 0  # padded tails
    nb[0, 1] = 0           # a chunk whose neighbours are all padding
    with torch.no_grad():
        on = model(tokens, nb)
        off = model(tokens, None)
        assert on.shape == (B, n, 300)
        assert torch.allclose(on[:, :m - 1], off[:, :m - 1], atol=1e-6), "first m-1 positions must ignore CCA"
        assert not torch.allclose(on[:, m:], off[:, m:], atol=1e-3), "CCA should change later positions"
        # chunk 1 of batch 0 has only pads: its group (positions 127..190) equals [OFF] up to layer effects
        # causality: changing tokens after position p does not change logits <= p
        t2 = tokens.clone()
        t2[:, 150:] = 5
        on2 = model(t2, nb)
        assert torch.allclose(on[:, :150], on2[:, :150], atol=1e-5), "not causal"
        # neighbours of chunk 1 must not affect positions < 127
        nb2 = nb.clone()
        nb2[:, 1] = 7
        on3 = model(tokens, nb2)
        assert torch.allclose(on[:, :2 * m - 1], on3[:, :2 * m - 1], atol=1e-5), "CCA alignment leaks"
        assert not torch.allclose(on[:, 2 * m - 1:], on3[:, 2 * m - 1:], atol=1e-4)
        model.zero_cca_out()
        z = model(tokens, nb)
        assert torch.allclose(z, off, atol=1e-6), "zero CCA must equal [OFF]"
    with tempfile.TemporaryDirectory() as d:
        model.save(d)
        m2 = Retro.load(d)
        m2.use_sdpa = False
        with torch.no_grad():
            assert torch.equal(m2(tokens, nb), model(tokens, nb))
        model.save(d, dtype=torch.float16)
        m3 = Retro.load(d)
        m3.use_sdpa = False
        with torch.no_grad():
            assert (m3(tokens, nb) - model(tokens, nb)).abs().max() < 5e-2
    # training step works (gradients finite with all-pad neighbours)
    model.train()
    model.init_weights(zero_cca=False)
    logits = model(tokens, nb)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, 300), tokens[:, 1:].reshape(-1))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    print("retro_model smoke test: ok")


if __name__ == "__main__":
    _smoke()
