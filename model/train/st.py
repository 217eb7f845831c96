"""st.py - read and write safetensors files without the `safetensors` package
(Debian 12 does not ship it). Format: 8-byte little-endian header length, a
JSON header {name: {dtype, shape, data_offsets:[begin, end]}, "__metadata__":
{str: str}}, then the raw little-endian tensor bytes. Works with torch 1.13+.
"""
import json
import struct

import torch

_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int32: "I32", torch.int64: "I64"}
_TORCH = {v: k for k, v in _DTYPES.items()}


def save(tensors, path, metadata=None):
    """Writes a dict name -> tensor (contiguous CPU copies are made)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _DTYPES:
            raise ValueError(f"st.save: tensor {name}: unsupported dtype {t.dtype}")
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # align the data to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def load(path):
    """Returns a dict name -> tensor (copies, CPU)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        buf = bytearray(data[base + begin:base + end])
        t = torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
        out[name] = t.view(_TORCH[info["dtype"]]).reshape(info["shape"]).clone()
    return out
