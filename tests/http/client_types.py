"""client_types.py - type-checked with the Python client by client_types.sh
(mypy --strict), never run: every method used as documented must check,
and each line ending in `# type: ignore[...]` is a misuse that must not
(--warn-unused-ignores makes an ignore with no error to silence an error)."""
from __future__ import annotations

import io
from typing import Dict, List, Optional

from retrod import Client, RetrodError
from retrod import DocumentInput, DocumentView, Group, Hit, IngestResult

c = Client("http://127.0.0.1:8080", api_key="key", timeout=5)
up: IngestResult = c.upsert([{"id": "a", "text": "x", "metadata": {"lang": "en"}}], force=True)
statuses: List[str] = [r["status"] for r in up["results"]]
more: List[DocumentInput] = [{"id": "b", "text": "y"}]
c.upsert_stream(iter(more))
d: DocumentView = c.get("a")
chunk_ids: List[int] = d["chunk_ids"]
missing: List[str] = c.get_many(["a", "b"], with_text=False)["not_found"]
patched: DocumentView = c.patch_metadata("a", {"lang": None, "year": 2024})
updated: Optional[int] = c.update_many(["a"], {"x": 1}).get("updated")
c.update_where({"lang": "en"}, {"x": 2})
deleted: bool = c.delete("a")["deleted"]
gone: Optional[int] = c.delete_many(["b"]).get("deleted")
c.delete_where({"year": {"$lt": 2000}})
for doc in c.documents(filter={"lang": "en"}, page_size=10, with_text=True):
    first: int = doc["first_chunk"]
n: int = c.export(io.StringIO())

hits: List[Hit] = c.search("how do I open a file?", k=5, mode="hybrid", filter={"lang": "en"}, with_vectors=True)
top: float = hits[0]["score"]
dense_rank: Optional[int] = hits[0].get("dense_rank")
by_vector: List[Hit] = c.search(vector=[0.0] * 256, k=3, nprobe=32)
like: List[Hit] = c.search(chunk_id=7, exclude_docs=["a"])
groups: List[Group] = c.search("q", group_by="document", group_size=2)
group_hits: List[Hit] = groups[0]["hits"]
batch: List[List[Hit]] = c.search_batch(["a", "b"], k=1)
grouped_batch: List[List[Group]] = c.search_batch(["a"], group_by="document")
one: List[float] = c.embed("text", input_type="query")
several: List[List[float]] = c.embed(["a", "b"])
rel: float = c.rerank("q", ["a", "b"], top_n=1)[0]["relevance_score"]
out: Dict[str, object] = c.complete("The with statement", max_tokens=8, temperature=0)
for event in c.stream("List comprehensions", max_tokens=16):
    piece: str = event["choices"][0]["text"]
ok: bool = c.health() and c.ready()
path: str = c.backup()["path"]
c.close()
try:
    c.get("none")
except RetrodError as e:
    status: int = e.status
    retry: Optional[int] = e.retry_after

# misuses: each must be a type error
wrong1: List[Group] = c.search("q", k=3)  # type: ignore[assignment]
wrong2: List[Hit] = c.search("q", group_by="document")  # type: ignore[assignment]
c.upsert([{"id": "a"}])  # type: ignore[typeddict-item]
wrong3: List[float] = c.embed(["a", "b"])  # type: ignore[assignment]
c.search(vector="abc")  # type: ignore[arg-type]
c.search(42)  # type: ignore[call-overload]
c.get(3)  # type: ignore[arg-type]
c.rerank("q", ["a"], top_n="1")  # type: ignore[arg-type]
wrong4: str = c.delete("a")["deleted"]  # type: ignore[assignment]
c.fetch_document("a")  # type: ignore[attr-defined]
