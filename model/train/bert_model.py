"""bert_model.py - a BERT / RoBERTa encoder in plain PyTorch with exactly the
Hugging Face BertModel / RobertaModel tensor names and config.json fields, so
that what it saves loads in Hugging Face and in our C encoder (model/bert.c),
and what Hugging Face saves (model.safetensors) loads here.

What it does: embeddings (word + position + token type, LayerNorm), N
post-LayerNorm transformer layers with exact (erf) GELU, optional pooler,
padding masks, CLS / mean pooling, L2 normalisation, save_pretrained/load
(config.json + model.safetensors through st.py, no `safetensors` package).
What it does not: tokenisation (see model/tok.* and the tokenizer
references), dropout other than the configured probabilities in training
mode, or any of HF's extra heads.

Positions: BERT uses 0..T-1. RoBERTa uses HF's
create_position_ids_from_input_ids: padding_idx + cumsum(id != pad) for
non-pad tokens and padding_idx for pad tokens, so max_position_embeddings
must be at least max_tokens + pad_token_id + 1 (HF uses 514 for 512 tokens).

Runs unchanged on CPU (torch 1.13) and CUDA (torch 2.x uses fused
scaled_dot_product_attention when available).
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # imported as model.train.bert_model or from this folder
    from . import st
except ImportError:  # pragma: no cover
    import st

CONFIG_DEFAULTS = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 6,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
}

ROBERTA_DEFAULTS = {
    "model_type": "roberta",
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}


def make_config(**kw):
    """A full config dict: defaults (RoBERTa's when model_type="roberta")
    overridden by kw. Unknown keys are kept (e.g. "retro_pooling")."""
    cfg = dict(CONFIG_DEFAULTS)
    if kw.get("model_type") == "roberta":
        cfg.update(ROBERTA_DEFAULTS)
    cfg.update(kw)
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise ValueError("hidden_size must be a multiple of num_attention_heads")
    if cfg["hidden_act"] not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu"):
        raise ValueError(f"unsupported hidden_act {cfg['hidden_act']!r}")
    cfg["architectures"] = ["RobertaModel" if cfg["model_type"] == "roberta" else "BertModel"]
    return cfg


def _act(name):
    if name == "gelu":
        return F.gelu  # exact, erf form (HF "gelu")
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    return F.relu


class Embeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        self.roberta = cfg["model_type"] == "roberta"
        self.pad = cfg["pad_token_id"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], h, padding_idx=self.pad)
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], h,
                                                padding_idx=self.pad if self.roberta else None)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def position_ids(self, input_ids):
        if self.roberta:
            mask = input_ids.ne(self.pad).int()
            return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + self.pad
        t = input_ids.shape[1]
        return torch.arange(t, device=input_ids.device).unsqueeze(0).expand_as(input_ids)

    def forward(self, input_ids, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (self.word_embeddings(input_ids)
             + self.position_embeddings(self.position_ids(input_ids))
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.dh = h // self.heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.p_drop = cfg["attention_probs_dropout_prob"]

    def forward(self, x, add_mask):
        # x (B, T, H); add_mask (B, 1, 1, T) additive, 0 or dtype-min
        b, t, _ = x.shape

        def split(y):
            return y.view(b, t, self.heads, self.dh).transpose(1, 2)  # (B, nh, T, dh)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        p = self.p_drop if self.training else 0.0
        if hasattr(F, "scaled_dot_product_attention"):
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=add_mask.to(q.dtype), dropout_p=p)
        else:
            s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.dh) + add_mask.to(q.dtype)
            a = F.dropout(torch.softmax(s, dim=-1), p=p, training=self.training)
            ctx = torch.matmul(a, v)
        return ctx.transpose(1, 2).reshape(b, t, self.heads * self.dh)


class DenseLN(nn.Module):
    """HF BertSelfOutput / BertOutput: LayerNorm(dropout(dense(x)) + residual)."""

    def __init__(self, n_in, cfg):
        super().__init__()
        self.dense = nn.Linear(n_in, cfg["hidden_size"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = DenseLN(cfg["hidden_size"], cfg)

    def forward(self, x, add_mask):
        return self.output(self.self(x, add_mask), x)


class Intermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.act = _act(cfg["hidden_act"])

    def forward(self, x):
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = DenseLN(cfg["intermediate_size"], cfg)

    def forward(self, x, add_mask):
        a = self.attention(x, add_mask)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList([Layer(cfg) for _ in range(cfg["num_hidden_layers"])])

    def forward(self, x, add_mask):
        for layer in self.layer:
            x = layer(x, add_mask)
        return x


class Pooler(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden_size"], cfg["hidden_size"])

    def forward(self, h):
        return torch.tanh(self.dense(h[:, 0]))


class BertEncoder(nn.Module):
    """BertModel / RobertaModel. State-dict keys are HF's without the
    "bert." / "roberta." prefix (as in a saved BertModel)."""

    def __init__(self, cfg, add_pooler=False):
        super().__init__()
        self.config = make_config(**cfg)
        self.embeddings = Embeddings(self.config)
        self.encoder = Encoder(self.config)
        self.pooler = Pooler(self.config) if add_pooler else None
        self.st_pooling = None  # from sentence-transformers' 1_Pooling/config.json (load)
        self.apply(self._init)

    def _init(self, m):
        r = self.config["initializer_range"]
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=r)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=r)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def roberta(self):
        return self.config["model_type"] == "roberta"

    @property
    def max_tokens(self):
        """Longest input including the special tokens."""
        n = self.config["max_position_embeddings"]
        return n - self.config["pad_token_id"] - 1 if self.roberta else n

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """input_ids (B, T) long, attention_mask (B, T) 1/0 -> hidden (B, T, H)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        add_mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        return self.encoder(x, add_mask)

    def pooled_output(self, hidden):
        """HF pooler_output (tanh(dense(CLS))); needs add_pooler=True."""
        if self.pooler is None:
            raise ValueError("model has no pooler")
        return self.pooler(hidden)

    def embed(self, input_ids, attention_mask=None, pooling=None, normalize=True):
        """Sentence vectors (B, H): pooling "cls" | "mean" (default, as the C
        encoder: 1_Pooling/config.json when loaded from a sentence-transformers
        directory, else config "retro_pooling", else "cls"), L2-normalised
        unless normalize=False."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        h = self.forward(input_ids, attention_mask)
        pooling = pooling or self.st_pooling or self.config.get("retro_pooling", "cls")
        v = mean_pool(h, attention_mask) if pooling == "mean" else cls_pool(h)
        return l2_normalize(v) if normalize else v

    def set_query_prefix(self, prefix):
        """config.json's "retro_query_prefix": the text the server puts before a
        search text (model/bert.h); "" removes it."""
        self.config.pop("retro_query_prefix", None)
        if prefix:
            self.config["retro_query_prefix"] = prefix

    def save_pretrained(self, path, dtype=torch.float32, metadata=None):
        """Writes path/config.json and path/model.safetensors (HF names)."""
        os.makedirs(path, exist_ok=True)
        cfg = dict(self.config)
        cfg["torch_dtype"] = {torch.float32: "float32", torch.float16: "float16",
                              torch.bfloat16: "bfloat16"}[dtype]
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
        sd = {k: v.detach().to(dtype) for k, v in self.state_dict().items()}
        st.save(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt", **(metadata or {})})

    @classmethod
    def load(cls, path, map_location="cpu"):
        """Loads a directory written by save_pretrained or by HF (a saved
        BertModel/RobertaModel, or BertForX with a "bert."/"roberta." prefix)."""
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        for k in ("architectures", "torch_dtype", "transformers_version"):
            cfg.pop(k, None)
        sd = st.load(os.path.join(path, "model.safetensors"))
        for prefix in ("bert.", "roberta."):
            if any(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        sd.pop("embeddings.position_ids", None)  # HF buffer, not a weight
        model = cls(cfg, add_pooler=any(k.startswith("pooler.") for k in sd))
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
        pc = os.path.join(path, "1_Pooling", "config.json")
        if os.path.exists(pc):
            with open(pc) as f:
                p = json.load(f)
            if p.get("pooling_mode_cls_token"):
                model.st_pooling = "cls"
            elif p.get("pooling_mode_mean_tokens"):
                model.st_pooling = "mean"
        return model.to(map_location)


def cls_pool(hidden):
    """hidden (B, T, H) -> (B, H): the first token."""
    return hidden[:, 0]


def mean_pool(hidden, attention_mask):
    """hidden (B, T, H), mask (B, T) -> (B, H): mean over non-pad tokens
    (sentence-transformers: specials included, count clamped at 1e-9)."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def l2_normalize(v):
    return F.normalize(v, p=2, dim=-1)


def pad_batch(seqs, pad_id, device=None):
    """List of id lists -> (input_ids (B, T) long, attention_mask (B, T) long)."""
    t = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


def add_specials(ids, cls_id, sep_id, max_tokens):
    """[CLS] ids [SEP] truncated to max_tokens (the C encoder's rule)."""
    return [cls_id] + list(ids)[:max(0, max_tokens - 2)] + [sep_id]


if __name__ == "__main__":  # self-check: save, load, same outputs
    import tempfile

    torch.manual_seed(0)
    for mt in ("bert", "roberta"):
        m = BertEncoder(make_config(model_type=mt, vocab_size=100, hidden_size=32,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64)).eval()
        ids, mask = pad_batch([[5, 6, 7, 8], [9, 10]], m.config["pad_token_id"])
        with torch.no_grad():
            a = m.embed(ids, mask, pooling="mean")
            with tempfile.TemporaryDirectory() as d:
                m.save_pretrained(d)
                m2 = BertEncoder.load(d).eval()
            b = m2.embed(ids, mask, pooling="mean")
            # padding must not change a sequence's output
            c = m.embed(ids[1:, :2], mask[1:, :2], pooling="mean")
        assert torch.allclose(a, b, atol=1e-6), mt
        assert torch.allclose(a[1], c[0], atol=1e-5), mt
        print(mt, "ok", tuple(a.shape))
