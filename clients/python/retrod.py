"""retrod.py - a Python client for retrod's own HTTP API, in one file that
needs nothing but the standard library (copy it next to your code, or put
clients/python on PYTHONPATH). The OpenAI-compatible routes (embeddings,
completions, chat) also work with OpenAI's own clients; this one covers what
they do not: documents, search with its modes and filters, metadata patches,
deletes by filter, backups, and the completions' `retro` attribution.

    from retrod import Client, RetrodError
    c = Client("http://127.0.0.1:8080", api_key="...")
    c.upsert([{"id": "a", "text": "...", "metadata": {"lang": "en"}}])
    for hit in c.search("how do I open a file?", k=5, filter={"lang": "en"}):
        print(hit["score"], hit["doc_id"], hit["text"][:60])
    c.patch_metadata("a", {"reviewed": True})
    c.delete_where({"lang": {"$ne": "en"}})

Every method returns the decoded JSON of the answer (or the part of it named
in its docstring), typed by the TypedDicts below (the shapes of
server/openapi.json), which type checkers read: tests/http/client_types.sh
checks this file and a use of every method with mypy --strict. A 4xx or 5xx
answer raises RetrodError with the server's status, error code and message;
a 429 or 503 carries retry_after (seconds).
"""
from __future__ import annotations

import http.client
import json
import select
import ssl
import threading
import urllib.parse
from typing import IO, Any, Dict, Iterable, Iterator, List, Literal, Optional, Tuple, TypedDict, Union, overload

__all__ = ["Client", "RetrodError", "DocumentInput", "IngestItem", "IngestResult", "DocumentView", "DocumentListed",
           "Hit", "Group", "Context", "GetMany", "Updated", "Deleted", "DeletedOne", "Relevance", "Backup"]

Metadata = Dict[str, Any]
Filter = Dict[str, Any]  # a metadata filter (docs/API.md, "Metadata filters")
Json = Any  # a decoded answer that the types below do not describe


class _DocumentInputBase(TypedDict):
    id: str
    text: str


class DocumentInput(_DocumentInputBase, total=False):
    metadata: Optional[Metadata]


class _ItemError(TypedDict):
    code: str
    message: str


class _IngestItemBase(TypedDict):
    status: Literal["ok", "unchanged", "error"]


class IngestItem(_IngestItemBase, total=False):
    index: int
    line: int
    id: str
    doc_num: int
    chunks: int
    indexed: bool
    error: _ItemError


class _IngestResultBase(TypedDict):
    documents: int
    unchanged: int
    chunks: int
    errors: int
    indexed: bool
    truncated: bool
    results: List[IngestItem]


class IngestResult(_IngestResultBase, total=False):
    error: _ItemError


class _DocumentViewBase(TypedDict):
    id: str
    doc_num: int
    n_chunks: int
    chunk_ids: List[int]


class DocumentView(_DocumentViewBase, total=False):
    metadata: Metadata
    n_tokens: int
    text: str  # absent from patch_metadata's answer and from get_many without texts


class _DocumentListedBase(TypedDict):
    id: str
    doc_num: int
    n_chunks: int
    first_chunk: int


class DocumentListed(_DocumentListedBase, total=False):
    metadata: Metadata
    n_tokens: int
    text: str


class Context(TypedDict):
    first_ordinal: int
    last_ordinal: int
    text: str


class _HitBase(TypedDict):
    score: float
    chunk_id: int
    doc_id: str
    doc_num: int
    ordinal: int


class Hit(_HitBase, total=False):
    metadata: Metadata
    text: str
    continuation: str
    dense_score: float
    dense_rank: Optional[int]
    lexical_score: Optional[float]
    lexical_rank: Optional[int]
    exact_phrase: bool
    retrieval_score: float
    retrieval_rank: int
    context: Context
    vector: List[float]


class Group(TypedDict):
    doc_id: str
    doc_num: int
    score: float
    hits: List[Hit]


class GetMany(TypedDict):
    documents: List[DocumentView]
    not_found: List[str]


class Updated(TypedDict, total=False):
    updated: int
    not_found: List[str]


class Deleted(TypedDict, total=False):
    deleted: int
    not_found: List[str]


class DeletedOne(TypedDict):
    id: str
    deleted: bool


class Relevance(TypedDict):
    index: int
    relevance_score: float


class Backup(TypedDict):
    backup: str
    path: str
    seconds: float
    manifest: Dict[str, Any]


class RetrodError(Exception):
    """An answer with an error status: .status (HTTP), .code (the server's
    error code, e.g. "EDIM"), .message, .request_id and .retry_after (None
    unless the server set Retry-After)."""

    def __init__(self, status: int, code: str, message: str, request_id: Optional[str] = None,
                 retry_after: Optional[int] = None) -> None:
        super().__init__("%d %s: %s" % (status, code, message))
        self.status, self.code, self.message = status, code, message
        self.request_id, self.retry_after = request_id, retry_after


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8080", api_key: Optional[str] = None, timeout: float = 120,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        """url: http://, or https:// for a server with --tls-cert; its
        certificate is checked against the system's authorities unless
        ssl_context says otherwise, e.g. ssl.create_default_context(cafile=
        "ca.pem") for a private authority. Each thread keeps its connection
        open between calls (no new TCP connection, or TLS handshake, per
        call); close() closes the calling thread's."""
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.ssl_context = ssl_context
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be http://HOST[:PORT][/PATH] or https://...: %r" % url)
        self._https = parts.scheme == "https"
        self._host, self._port, self._prefix = parts.hostname, parts.port, parts.path
        self._local = threading.local()  # .idle: this thread's open connection, between calls

    def close(self) -> None:
        """Closes the calling thread's kept connection (the next call opens
        another)."""
        conn = getattr(self._local, "idle", None)
        self._local.idle = None
        if conn is not None:
            conn.close()

    # ---- transport --------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=self.ssl_context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _take(self) -> Tuple[http.client.HTTPConnection, bool]:
        """This thread's kept connection when the server has not closed it
        meanwhile (it closes idle ones after --idle-timeout), else a new one;
        and whether it was kept."""
        conn = getattr(self._local, "idle", None)
        self._local.idle = None
        if conn is not None and conn.sock is not None:
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if not readable:  # a kept connection has nothing to read unless it was closed
                return conn, True
        if conn is not None:
            conn.close()
        return self._connect(), False

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        """Keeps conn for this thread's next call (one at a time)."""
        if getattr(self._local, "idle", None) is None:
            self._local.idle = conn
        else:
            conn.close()

    def _open(self, method: str, path: str, body: Any = None, ctype: str = "application/json",
              query: Optional[Dict[str, Any]] = None) -> "_Answer":
        """body: an object sent as JSON, or bytes or an iterator of bytes
        (sent chunked) as they are."""
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        data, chunked = None, False
        if body is not None:
            chunked = hasattr(body, "__next__")
            data = body if chunked or isinstance(body, bytes) else json.dumps(body).encode("utf-8")
            headers["Content-Type"] = ctype
        while True:
            conn, kept = self._take() if not chunked else (self._connect(), False)
            try:
                conn.request(method, target, body=data, headers=headers, encode_chunked=chunked)
                r = conn.getresponse()
                break
            except (ConnectionError, ssl.SSLEOFError):  # RemoteDisconnected is a ConnectionResetError
                conn.close()
                if not kept:  # the server closed a kept connection as it was reused: once more, anew
                    raise
        if r.status >= 400:
            raw = r.read()
            self._release(conn, r)
            raise _error(r.status, r.getheader("Retry-After"), r.getheader("X-Request-Id"), raw)
        return _Answer(self, conn, r)

    def _release(self, conn: http.client.HTTPConnection, r: http.client.HTTPResponse) -> None:
        """After an answer: its connection kept when the answer was read to
        its end and the server keeps it open, else closed."""
        if r.isclosed() and not r.will_close:
            self._give_back(conn)
        else:
            conn.close()

    def _json(self, method: str, path: str, body: Any = None, ctype: str = "application/json",
              query: Optional[Dict[str, Any]] = None) -> Any:
        with self._open(method, path, body, ctype, query) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    # ---- the server -------------------------------------------------------

    def health(self) -> bool:
        """True when the server answers /health."""
        return self._json("GET", "/health") is not None

    def ready(self) -> bool:
        """True once models and indexes are loaded (False while loading or
        shutting down)."""
        try:
            self._json("GET", "/ready")
            return True
        except RetrodError as e:
            if e.status == 503:
                return False
            raise

    def info(self) -> Json:
        """GET /v1/info: models, dimensions, index type, counts."""
        return self._json("GET", "/v1/info")

    # ---- documents --------------------------------------------------------

    def upsert(self, documents: Iterable[DocumentInput], force: bool = False) -> IngestResult:
        """Stores documents ({"id", "text", "metadata"?} each) in one request,
        checked as a whole; returns the answer (per-document "results" with
        "status" ok, unchanged or error). force: embed unchanged ones too."""
        return self._json("POST", "/v1/documents", {"documents": list(documents)},
                          query={"force": "true"} if force else None)

    def upsert_stream(self, documents: Iterable[DocumentInput], force: bool = False) -> IngestResult:
        """Streams documents as NDJSON, one line each (an iterable of any
        length: a generator reading a large file is fine); returns the answer."""
        lines = (json.dumps(d).encode("utf-8") + b"\n" for d in documents)
        return self._json("POST", "/v1/documents", lines, "application/x-ndjson",
                          query={"force": "true"} if force else None)

    def get(self, doc_id: str) -> DocumentView:
        """One document with its text, chunk ids and metadata."""
        return self._json("GET", "/v1/documents/" + _quote(doc_id))

    def get_many(self, ids: Iterable[str], with_text: bool = True) -> GetMany:
        """Up to 1,000 documents by id, read in one transaction: {"documents"
        (those found, in the order asked), "not_found"}."""
        return self._json("POST", "/v1/documents/get", {"ids": list(ids), "with_text": with_text})

    def patch_metadata(self, doc_id: str, patch: Metadata) -> DocumentView:
        """Merges patch into the document's metadata (JSON Merge Patch: a key
        set to None is removed); its text is not embedded again. Returns the
        document as stored now, without its text."""
        return self._json("PATCH", "/v1/documents/" + _quote(doc_id), {"metadata": patch},
                          "application/merge-patch+json")

    def update_many(self, ids: Iterable[str], patch: Metadata) -> Updated:
        """Merges patch into each listed document's metadata, in one
        transaction; returns {"updated", "not_found"}."""
        return self._json("POST", "/v1/documents/update", {"ids": list(ids), "metadata": patch})

    def update_where(self, filter: Filter, patch: Metadata) -> Updated:
        """Merges patch into the metadata of every document that passes the
        filter, in one transaction; returns {"updated"}."""
        return self._json("POST", "/v1/documents/update", {"filter": filter, "metadata": patch})

    def delete(self, doc_id: str) -> DeletedOne:
        """Deletes one document; RetrodError 404 when there is none."""
        return self._json("DELETE", "/v1/documents/" + _quote(doc_id))

    def delete_many(self, ids: Iterable[str]) -> Deleted:
        """Deletes the documents in one transaction; returns {"deleted",
        "not_found"}."""
        return self._json("POST", "/v1/documents/delete", {"ids": list(ids)})

    def delete_where(self, filter: Filter) -> Deleted:
        """Deletes every document whose metadata passes the filter (a search
        filter, at least one key), in one transaction; returns {"deleted"}."""
        return self._json("POST", "/v1/documents/delete", {"filter": filter})

    def documents(self, filter: Optional[Filter] = None, page_size: int = 100,
                  with_text: bool = False) -> Iterator[DocumentListed]:
        """Yields every document in doc_num order, page by page, those
        passing filter when given; with_text: each with its text and
        n_tokens."""
        after = 0
        while after is not None:
            page = self._json("GET", "/v1/documents", query={
                "limit": page_size, "after": after,
                "filter": json.dumps(filter) if filter is not None else None,
                "with_text": "true" if with_text else None})
            for d in page["documents"]:
                yield d
            after = page["next_after"]

    def export(self, out: IO[str], filter: Optional[Filter] = None) -> int:
        """Writes every document (passing filter) to out, a file opened for
        text, as the JSON lines `retro export` writes and `retro index`
        reads ({"id", "text", "metadata"}); returns how many."""
        n = 0
        for d in self.documents(filter=filter, page_size=1000, with_text=True):
            out.write(json.dumps({"id": d["id"], "text": d["text"], "metadata": d["metadata"]},
                                 ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
        return n

    # ---- search -----------------------------------------------------------

    @overload
    def search(self, query: Optional[str] = None, *, vector: Optional[Iterable[float]] = None,
               chunk_id: Optional[int] = None, k: int = 10, group_by: Literal["document"],
               **options: Any) -> List[Group]: ...

    @overload
    def search(self, query: Optional[str] = None, *, vector: Optional[Iterable[float]] = None,
               chunk_id: Optional[int] = None, k: int = 10, group_by: None = None,
               **options: Any) -> List[Hit]: ...

    def search(self, query: Optional[str] = None, *, vector: Optional[Iterable[float]] = None,
               chunk_id: Optional[int] = None, k: int = 10, group_by: Optional[str] = None,
               **options: Any) -> Union[List[Hit], List[Group]]:
        """The nearest chunks of a text (query), a vector, or a stored chunk
        (chunk_id: "more like this"): the "results" list, or the "groups"
        list with group_by="document". options: mode ("dense", "lexical",
        "hybrid"), alpha, filter, exclude_docs, include_docs, with_text,
        with_vectors (each hit's stored embedding as "vector"), group_by,
        group_size, expand, nprobe, ef_search, rerank (True, or how many of the
        best chunks the cross-encoder reorders; score is then its relevance)."""
        if sum(x is not None for x in (query, vector, chunk_id)) != 1:
            raise ValueError("give exactly one of query, vector, chunk_id")
        body: Dict[str, Any] = dict(options, k=k)
        if group_by is not None:
            body["group_by"] = group_by
        if query is not None:
            body["query"] = query
        elif vector is not None:
            body["vector"] = list(vector)
        else:
            body["chunk_id"] = chunk_id
        js = self._json("POST", "/v1/search", body)
        return js["groups"] if "groups" in js else js["results"]

    @overload
    def search_batch(self, queries: Iterable[str], k: int = 10, *, group_by: Literal["document"],
                     **options: Any) -> List[List[Group]]: ...

    @overload
    def search_batch(self, queries: Iterable[str], k: int = 10, *, group_by: None = None,
                     **options: Any) -> List[List[Hit]]: ...

    def search_batch(self, queries: Iterable[str], k: int = 10, *, group_by: Optional[str] = None,
                     **options: Any) -> Union[List[List[Hit]], List[List[Group]]]:
        """Several texts in one request: one result list per query."""
        body: Dict[str, Any] = dict(options, queries=list(queries), k=k)
        if group_by is not None:
            body["group_by"] = group_by
        js = self._json("POST", "/v1/search", body)
        return [b.get("groups", b.get("results")) for b in js["batch"]]

    # A str is an Iterable[str] too: mypy calls the two overloads overlapping,
    # and the first, which a str matches, is the one that applies to it.
    @overload
    def embed(self, texts: str,  # type: ignore[misc]
              input_type: Optional[Literal["query", "document"]] = None) -> List[float]: ...

    @overload
    def embed(self, texts: Iterable[str],
              input_type: Optional[Literal["query", "document"]] = None) -> List[List[float]]: ...

    def embed(self, texts: Union[str, Iterable[str]],
              input_type: Optional[Literal["query", "document"]] = None) -> Union[List[float], List[List[float]]]:
        """Embeddings of texts with the server's encoder: a vector for a
        string, a list of vectors for a list. input_type "query" embeds them
        as a search embeds its query."""
        one = isinstance(texts, str)
        body: Dict[str, Any] = {"input": [texts] if one else list(texts)}
        if input_type:
            body["input_type"] = input_type
        js = self._json("POST", "/v1/embeddings", body)
        vecs = [d["embedding"] for d in sorted(js["data"], key=lambda d: int(d["index"]))]
        return vecs[0] if one else vecs

    def rerank(self, query: str, documents: Iterable[str], top_n: Optional[int] = None) -> List[Relevance]:
        """The reranker's relevance of each text of documents to query, best
        first: [{"index" (into documents), "relevance_score" in (0, 1)}]."""
        body: Dict[str, Any] = {"query": query, "documents": list(documents)}
        if top_n is not None:
            body["top_n"] = top_n
        return self._json("POST", "/v1/rerank", body)["results"]

    # ---- generation -------------------------------------------------------

    def complete(self, prompt: str, max_tokens: int = 64, **options: Any) -> Json:
        """A RETRO completion: the whole answer, with "choices" and "retro"
        (per chunk, the neighbours it was given)."""
        return self._json("POST", "/v1/completions", dict(options, prompt=prompt, max_tokens=max_tokens))

    def stream(self, prompt: str, max_tokens: int = 64, **options: Any) -> Iterator[Json]:
        """A streamed completion: yields each event's object (the text in
        event["choices"][0]["text"]; the last carries "usage" and "retro")."""
        body = dict(options, prompt=prompt, max_tokens=max_tokens, stream=True)
        with self._open("POST", "/v1/completions", body) as r:
            for raw in r:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    r.read()  # the stream's end, so that its connection can be kept
                    return
                yield json.loads(line[6:])

    # ---- operations -------------------------------------------------------

    def backup(self) -> Backup:
        """A backup into the server's --backup-dir: {"backup" (its name),
        "path", "seconds", "manifest"}."""
        return self._json("POST", "/v1/admin/backup", {})


# Ids that are the names of routes under /v1/documents/ (POST .../get,
# .../delete, .../update) go with their first letter percent-encoded, which
# the server decodes: GET /v1/documents/%67et is the document "get".
_ROUTE_NAMES = ("get", "delete", "update")


def _quote(doc_id: str) -> str:
    if doc_id in _ROUTE_NAMES:
        return "%%%02X" % ord(doc_id[0]) + doc_id[1:]
    return urllib.parse.quote(doc_id, safe="")


class _Answer:
    """An answer being read (a context manager, iterable by lines); its
    connection goes back to the client when it is closed."""

    def __init__(self, client: Client, conn: http.client.HTTPConnection, r: http.client.HTTPResponse) -> None:
        self._client, self._conn, self._r = client, conn, r

    def read(self) -> bytes:
        return self._r.read()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._r)

    def __enter__(self) -> "_Answer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._client._release(self._conn, self._r)


def _error(status: int, retry: Optional[str], request_id: Optional[str], raw: bytes) -> RetrodError:
    """RetrodError from an error answer, with the server's code and message."""
    try:
        err = json.loads(raw)["error"]
        code, message = err.get("code", ""), err.get("message", "")
    except (ValueError, KeyError, TypeError):
        code, message = "", raw.decode("utf-8", "replace")[:500]
    return RetrodError(status, code, message, request_id, int(retry) if retry and retry.isdigit() else None)
