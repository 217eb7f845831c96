#!/usr/bin/python3
"""e2e_http.py - end-to-end tests of `retro serve` (TAP): the real binary on a
random loopback port, tiny random models (make_models.py), driven through
http.client. Covers every route's success path, bad input (4xx and the
server keeps serving), the auth matrix with both header forms, ingest then
search then delete, streamed NDJSON bodies, SSE completions (stop,
max_tokens, seed determinism, bad parameters), 429 with Retry-After on a
full queue, a client hanging up while queued (not executed, 499), SIGHUP and
SIGTERM reaching threads other than the one that waits for them, and SIGTERM
during ingest losing no acknowledged document. Every response Server.req
reads, here and in the suites that import this one, is checked against the
server's openapi.json (openapi_check.py); one line per operation at the end.

    e2e_http.py RETRO_BINARY WORK_DIR
"""
import base64
import collections
import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

import serve_proc

try:
    import openapi_check
except ImportError:  # python3-jsonschema missing: the conformance lines say SKIP
    openapi_check = None

HERE = os.path.dirname(os.path.abspath(__file__))
RETRO, WORK = sys.argv[1], sys.argv[2]
MODELS = os.path.join(WORK, "models")
n_tests = 0
n_failed = 0
CONFORMANCE = None  # an openapi_check.OpenAPICheck, made when the first Server starts


def ok(cond, name, detail=""):
    global n_tests, n_failed
    n_tests += 1
    if cond:
        print("ok %d - %s" % (n_tests, name))
    else:
        n_failed += 1
        print("not ok %d - %s" % (n_tests, name))
        if detail:
            for line in str(detail)[:2000].splitlines():
                print("#   " + line)
    sys.stdout.flush()
    return cond


def diag(msg):
    print("# " + msg)
    sys.stdout.flush()


class Server(serve_proc.ServeProcess):
    def __init__(self, name, *args, data=None, ssl_context=None):
        self.data = data or os.path.join(WORK, name)
        cmd = [RETRO, "serve", "--data", self.data, "--encoder", os.path.join(MODELS, "encoder"),
               "--decoder", os.path.join(MODELS, "decoder"), "--port", "0", "--threads", "1"]
        if "--reranker" not in args:
            cmd += ["--reranker", os.path.join(MODELS, "reranker")]
        cmd += list(args)
        logfile = args[list(args).index("--log") + 1] if "--log" in args else None
        super().__init__(cmd, logfile, ssl_context=ssl_context)
        global CONFORMANCE
        if openapi_check and CONFORMANCE is None:  # every response req reads from here on is checked
            CONFORMANCE = openapi_check.OpenAPICheck(self.req("GET", "/openapi.json")[1])

    def req(self, method, path, body=None, headers=None, ctype="application/json", timeout=60):
        c = self.connection(timeout)
        h = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)) and not hasattr(body, "__iter__"):
            body = json.dumps(body)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if body is not None and ctype and "Content-Type" not in h:
            h["Content-Type"] = ctype
        chunked = body is not None and not isinstance(body, (bytes, str))
        c.request(method, path, body=body, headers=h, encode_chunked=chunked)
        r = c.getresponse()
        data = r.read()
        c.close()
        if CONFORMANCE:
            CONFORMANCE.record(method, path, r.status, r.getheader("Content-Type"), data,
                               h.get("Content-Type"), body if isinstance(body, (bytes, str)) else None)
        try:
            js = json.loads(data) if data and r.getheader("Content-Type", "").startswith("application/json") else None
        except ValueError:
            js = None
        return r.status, js, data, r

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        self.t.join(5)
        return rc


def healthy(s):
    try:
        st, js, _, _ = s.req("GET", "/health", timeout=10)
        return st == 200
    except OSError:
        return False


WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def doc_text(i, n_words=8):
    # distinct, deterministic documents
    return " ".join(WORDS[(i * 7 + j * (i % 5 + 1)) % len(WORDS)] for j in range(n_words)) + " end%d" % i


def ensure_models():
    """Makes the tiny test models once (make_models.py). None when they are
    there; else the exit status, after the TAP skip (no PyTorch) or bail-out
    line."""
    if os.path.isdir(os.path.join(MODELS, "reranker")):
        return None
    rc = subprocess.call([sys.executable, os.path.join(HERE, "make_models.py"), MODELS],
                         stdout=subprocess.DEVNULL)
    if rc == 77:
        print("1..0 # SKIP torch not available")
        return 0
    if rc != 0:
        print("Bail out! make_models.py failed")
        return 1
    return None


def main():
    rc = ensure_models()
    if rc is not None:
        return rc
    for d in ("main", "auth", "busy", "gone", "term", "nowebui", "textpage", "incl-ivf", "cors", "cors-any", "refused",
              "norerank"):
        shutil.rmtree(os.path.join(WORK, d), ignore_errors=True)

    # --- refuses a public address without a key; bad flags -> 2 ------------
    rc = subprocess.call([RETRO, "serve", "--data", os.path.join(WORK, "x"), "--host", "0.0.0.0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    ok(rc == 2, "non-loopback --host without a key is refused (exit 2)", rc)
    rc = subprocess.call([RETRO, "serve", "--data", "x", "--port", "70000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    ok(rc == 2, "--port out of range is a usage error", rc)
    out = subprocess.run([RETRO, "serve", "--help"], capture_output=True, timeout=30)
    ok(out.returncode == 0 and b"RETRO_API_KEY" in out.stdout and b"Precedence" in out.stdout,
       "serve --help documents flags, environment and precedence")

    s = Server("main", "--max-body", "65536")
    try:
        run_main(s)
        run_modes(s)
        run_rerank(s)
        run_completions(s)
        run_listing_and_page(s)
        run_null_fields(s)
        run_array_bounds(s)
        run_framing(s)
        run_batch_delete(s)
        run_patch(s)
    except Exception:
        time.sleep(0.5)
        for line in s.log[-30:]:
            diag("server: " + line.rstrip())
        diag("server exit status: %s" % s.p.poll())
        raise
    finally:
        rc = s.stop()
    ok(rc == 0, "SIGTERM -> exit 0", rc)
    ok(any("level=info" in l and "stopped" in l for l in s.log), "shutdown logged")
    reqlines = [l for l in s.log if l.startswith("time=") and " method=" in l]
    ok(len(reqlines) > 50 and all(re.search(r"status=\d{3} ms=[0-9.]+ peer=\S+ id=\S+", l) for l in reqlines),
       "one structured log line per request (time, method, path, status, ms, peer, request id)", reqlines[:3])
    ok(any(" id=client-id.42:x" in l and 'path="/v1/info"' in l for l in reqlines),
       "the log line carries the client's X-Request-Id")

    run_auth()
    run_text_page_budget()
    run_include_direct()
    run_no_reranker()
    run_no_webui()
    run_cors()
    run_query_prefix()
    run_busy()
    run_client_gone()
    run_search_placement()
    run_sequential_one_worker()
    run_signal_to_any_thread()
    run_sigterm_ingest()
    report_conformance()
    print("1..%d" % n_tests)
    return 1 if n_failed else 0


def report_conformance(every_operation=True):
    """One line per documented operation (or per operation this run reached):
    its responses in this run (every server's, through Server.req) conform to
    openapi.json."""
    if not CONFORMANCE:
        ok(True, "responses conform to openapi.json # SKIP python3-jsonschema not installed")
        return
    for method, template, _, _ in CONFORMANCE.ops:
        key = (method, template)
        if not every_operation and key not in CONFORMANCE.seen:
            continue
        statuses = ", ".join(str(st) for st in sorted(CONFORMANCE.seen.get(key, ())))
        ok(key in CONFORMANCE.seen and key not in CONFORMANCE.problems,
           "%s %s: responses conform to openapi.json (statuses seen: %s)" % (method, template, statuses or "none"),
           "\n".join(CONFORMANCE.problems.get(key, ["no response seen"])[:8]))


def check_exposition(text):
    """/metrics read by Prometheus's own Python client's parser (Debian
    python3-prometheus-client): every family typed and described, counters
    as _total, each histogram's buckets rising to le="+Inf", which is its
    _count."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        ok(True, "/metrics parses as Prometheus text # SKIP python3-prometheus-client not installed")
        return
    problems = []
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and others on bad input
        ok(False, "/metrics parses as Prometheus text", repr(e))
        return
    for f in families:
        if f.type not in ("counter", "gauge", "histogram", "summary") or not f.documentation:
            problems.append("%s: type %s, help %r" % (f.name, f.type, f.documentation))
        if f.type == "counter" and not all(x.name.endswith(("_total", "_created")) for x in f.samples):
            problems.append("%s: a counter sample without _total" % f.name)
        if f.type == "histogram":
            series = collections.defaultdict(list)
            counts = {}
            for x in f.samples:
                labels = tuple(sorted((k, v) for k, v in x.labels.items() if k != "le"))
                if x.name.endswith("_bucket"):
                    series[labels].append((float(x.labels["le"]), x.value))
                elif x.name.endswith("_count"):
                    counts[labels] = x.value
            for labels, buckets in series.items():
                values = [v for _, v in sorted(buckets)]
                if sorted(buckets)[-1][0] != float("inf") or values != sorted(values) \
                        or values[-1] != counts.get(labels):
                    problems.append("%s %s: buckets %s, count %s" % (f.name, labels, buckets, counts.get(labels)))
    ok(len(families) > 20 and not problems,
       "/metrics parses as Prometheus text (%d families): typed, described, counters as _total, "
       "histogram buckets cumulative up to +Inf = _count" % len(families), problems[:5])


# a request each operation accepts, to which one field at a time is added as null
NULL_BASE = {
    "/v1/documents": {"documents": [{"id": "null-doc", "text": "null fields " + doc_text(3)}]},
    "/v1/search": {"query": "alpha bravo"},
    "/v1/embeddings": {"input": "alpha"},
    "/v1/completions": {"prompt": "alpha bravo", "max_tokens": 1},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "alpha"}], "max_tokens": 1},
    "/tokenize": {"content": "alpha"},
    "/detokenize": {"tokens": [1]},
}


def run_null_fields(s):
    """A field given as null is taken as absent exactly where openapi.json
    marks it nullable: every property of each JSON request body (and of a
    document), sent as null one at a time."""
    _, spec, _, _ = s.req("GET", "/openapi.json")

    def resolve(x):
        while "$ref" in x:
            x = spec["components"]["schemas"][x["$ref"].rsplit("/", 1)[1]]
        return x

    def nullable(v):
        return v.get("nullable", False) or any(o.get("nullable") for o in v.get("oneOf", ()))

    for path, base in NULL_BASE.items():
        st, _, _, _ = s.req("POST", path, base)
        props = resolve(spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"])
        cases = [(k, v, dict(base, **{k: None})) for k, v in props["properties"].items()]
        if path == "/v1/documents":
            doc_props = resolve(props["properties"]["documents"]["items"])["properties"]
            cases += [("documents[0]." + k, v, {"documents": [dict(base["documents"][0], **{k: None})]})
                      for k, v in doc_props.items()]
        wrong = []
        for name, v, body in cases:
            st2, js2, _, _ = s.req("POST", path, body)
            if (200 <= st2 < 300) != bool(nullable(resolve(v))):
                wrong.append("%s: null -> %d, nullable: %s %s" % (name, st2, nullable(resolve(v)), js2))
        ok(st == 200 and not wrong,
           "POST %s: null is taken as absent exactly for the fields openapi.json marks nullable" % path,
           "\n".join(wrong) or "the request without nulls -> %d" % st)


def run_array_bounds(s):
    """openapi.json's minItems/maxItems are the server's: for each bounded
    array of a request body, the largest and smallest sizes it allows are
    accepted, one more or one fewer refused with a 422 naming the field."""
    _, spec, _, _ = s.req("GET", "/openapi.json")

    def schema(path, prop):
        p = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"][prop]
        return next((o for o in p.get("oneOf", [p]) if o.get("type") == "array"), p)
    cases = [("/v1/search", {"query": "alpha", "k": 1, "with_text": False}, "exclude_docs", lambda i: "d%d" % i),
             ("/v1/search", {"query": "alpha", "k": 1, "with_text": False}, "include_docs", lambda i: "d%d" % i),
             ("/v1/search", {"k": 1, "with_text": False}, "queries", lambda i: "q%d" % i),
             ("/v1/completions", {"prompt": "a", "max_tokens": 1}, "exclude_docs", lambda i: "d%d" % i),
             ("/v1/completions", {"prompt": "a", "max_tokens": 1}, "stop", lambda i: "s%d" % i),
             ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}], "max_tokens": 1}, "stop",
              lambda i: "s%d" % i),
             ("/v1/embeddings", {}, "input", lambda i: "e%d" % i)]
    for path, base, prop, item in cases:
        a = schema(path, prop)
        lo, hi = a.get("minItems", 0), a.get("maxItems")
        wrong = []
        for n, want_ok in ((lo, True), (hi, True), (hi + 1 if hi else None, False), (lo - 1 if lo else None, False)):
            if n is None:
                continue
            st, js, _, _ = s.req("POST", path, dict(base, **{prop: [item(i) for i in range(n)]}))
            if (st == 200) != want_ok or (not want_ok and (st != 422 or prop not in js["error"]["message"])):
                wrong.append("%d items -> %d %s" % (n, st, js))
        ok(hi is not None and not wrong, "POST %s %s: the documented %s..%s items are the server's"
           % (path, prop, lo, hi), "\n".join(wrong) or "no maxItems in openapi.json")


def run_batch_delete(s):
    """POST /v1/documents/delete: many ids, or a metadata filter, in one
    transaction; absent ids are reported, bad bodies refused with nothing
    deleted; the deleted documents leave every search mode at once."""
    docs = [{"id": "bd-%d" % i, "text": doc_text(600 + i, 40)} for i in range(4)] + \
           [{"id": "delete", "text": doc_text(610, 40)}]
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": docs})
    ok(st == 200 and js["errors"] == 0, "batch delete: documents ingested", js)
    for body, want, field in [({}, 400, "ids: missing field (give ids or filter)"), ({"ids": []}, 422, "at least one"),
                              ({"ids": "bd-0"}, 400, "ids: must be an array"), ({"ids": [1]}, 400, "ids[0]"),
                              ({"ids": [""]}, 422, "ids[0]: empty"),
                              ({"ids": ["bd-0", "bd-1", "bd-0"]}, 400, "ids[2]: given twice (also ids[0])"),
                              ({"ids": ["bd-0", "x" * 1025]}, 422, "ids[1]"),
                              ({"ids": ["bd-0"], "where": {}}, 400, "where")]:
        st, js, raw, _ = s.req("POST", "/v1/documents/delete", body)
        ok(st == want and field in js["error"]["message"], "batch delete %s -> %d naming %r" % (str(body)[:60], want, field),
           (st, raw[:200]))
    st, _, _, _ = s.req("GET", "/v1/documents/bd-0")
    ok(st == 200, "a refused batch deletes nothing")
    st, js, _, _ = s.req("POST", "/v1/documents/delete", {"ids": ["bd-0", "nope", "bd-2"]})
    ok(st == 200 and js == {"deleted": 2, "not_found": ["nope"]}, "batch delete: counts and names the absent ids", js)
    gone = [s.req("GET", "/v1/documents/" + i)[0] for i in ("bd-0", "bd-1", "bd-2", "bd-3")]
    ok(gone == [404, 200, 404, 200], "exactly the listed documents are gone", gone)
    seen = []
    for mode in ("dense", "lexical", "hybrid"):
        st, js, _, _ = s.req("POST", "/v1/search", {"query": doc_text(600, 40), "mode": mode, "k": 50})
        seen += [(mode, h["doc_id"]) for h in js["results"] if h["doc_id"] in ("bd-0", "bd-2")]
    ok(not seen, "their chunks left the dense and lexical indexes before the answer", seen)
    st, js, _, r = s.req("GET", "/v1/documents/delete")
    ok(st == 405 and r.getheader("Allow") == "POST", "GET /v1/documents/delete: 405 (the route, not a document)", st)
    st, js, _, _ = s.req("GET", "/v1/documents/%64elete")
    ok(st == 200 and js["id"] == "delete", "a document named 'delete' is reached percent-encoded", st)
    st, js, _, _ = s.req("POST", "/v1/documents/delete", {"ids": ["delete", "bd-1", "bd-3"]})
    ok(st == 200 and js == {"deleted": 3, "not_found": []}, "and deleted by the batch", js)
    st, js, _, _ = s.req("POST", "/v1/documents/delete", {"ids": ["bd-1"]})
    ok(st == 200 and js == {"deleted": 0, "not_found": ["bd-1"]}, "deleting again finds nothing", js)

    # by metadata: the test of a search's filter
    meta = [{"bdgroup": "a"}, {"bdgroup": "b", "n": 1}, {"bdgroup": ["c", "a"]}, {"bdgroup": "c", "n": 1.0}]
    docs = [{"id": "bf-%d" % i, "text": doc_text(620 + i, 40), "metadata": m} for i, m in enumerate(meta)]
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": docs})
    ok(st == 200 and js["errors"] == 0, "delete by filter: documents with metadata ingested", js)
    for body, want, field in [({"filter": {}}, 422, "filter: empty"), ({"filter": []}, 400, "filter: must be an object"),
                              ({"filter": {"bdgroup": {"x": 1}}}, 400, "filter.bdgroup"),
                              ({"ids": ["bf-0"], "filter": {"bdgroup": "a"}}, 400, "only one of ids, filter"),
                              ({"ids": None, "filter": None}, 400, "give ids or filter")]:
        st, js, raw, _ = s.req("POST", "/v1/documents/delete", body)
        ok(st == want and field in js["error"]["message"], "delete %s -> %d naming %r" % (body, want, field), (st, raw[:200]))
    # listing by the same filter shows what it would delete, page by page
    q = lambda f: "/v1/documents?filter=" + urllib.parse.quote(json.dumps(f))
    st, js, _, _ = s.req("GET", q({"bdgroup": "a"}))
    ok(st == 200 and [d["id"] for d in js["documents"]] == ["bf-0", "bf-2"] and js["next_after"] is None,
       "GET /v1/documents?filter=: only the documents that pass", js)
    pages, after = [], 0
    while after is not None and len(pages) < 5:
        st, js, _, _ = s.req("GET", q({"bdgroup": ["a", "b"]}) + "&limit=2&after=%d" % after)
        pages.append([d["id"] for d in js["documents"]])
        after = js["next_after"]
    ok(pages[:2] == [["bf-0", "bf-1"], ["bf-2"]] and after is None,
       "filtered pages of 2 follow next_after to the end", pages)
    st, js, _, _ = s.req("GET", "/v1/documents?filter=" + urllib.parse.quote_plus('{"bdgroup": "b"}'))
    ok(st == 200 and [d["id"] for d in js["documents"]] == ["bf-1"], "form encoding ('+' for a space) is read", js)
    st, all_js, _, _ = s.req("GET", "/v1/documents?limit=3")
    st, js, _, _ = s.req("GET", "/v1/documents?limit=3&filter=%7B%7D")
    ok(st == 200 and js == all_js, "filter={} lists every document", js)
    for raw, want, field in [("%7Bx", 400, "filter: not valid JSON"), ("%5B1%5D", 400, "filter: must be an object"),
                             ("%ff", 400, "filter: bad percent-encoding"),
                             (urllib.parse.quote('{"a": {"b": 1}}'), 400, "filter.a")]:
        st, js, raw_body, _ = s.req("GET", "/v1/documents?filter=" + raw)
        ok(st == want and field in js["error"]["message"], "?filter=%s -> %d naming %r" % (raw, want, field),
           (st, raw_body[:200]))
    st, js, _, _ = s.req("GET", q({"bdgroup": {"$exists": True}, "$or": [{"n": {"$gte": 1}}, {"bdgroup": {"$in": ["z", "a"]}}]}))
    ok(st == 200 and [d["id"] for d in js["documents"]] == ["bf-0", "bf-1", "bf-2", "bf-3"],
       "GET /v1/documents?filter= with $or and operators", js)
    st, js, _, _ = s.req("GET", q({"n": {"$exists": True}, "bdgroup": {"$exists": True}}))
    ok(st == 200 and [d["id"] for d in js["documents"]] == ["bf-1", "bf-3"], "?filter= with $exists", js)
    st, js, _, _ = s.req("POST", "/v1/documents/delete", {"filter": {"bdgroup": "a"}})
    ok(st == 200 and js == {"deleted": 2, "not_found": []}, "delete by filter: a value, also inside a list", js)
    st, js, _, _ = s.req("POST", "/v1/documents/delete", {"filter": {"bdgroup": ["b"], "n": 1}, "ids": None})
    ok(st == 200 and js == {"deleted": 1, "not_found": []}, "every key must match; numbers by value", js)
    st, js, _, _ = s.req("POST", "/v1/documents/delete", {"filter": {"bdgroup": {"$exists": True},
                                                                  "$or": [{"n": {"$gt": 0.5}}, {"bdgroup": "zz"}]}})
    ok(st == 200 and js == {"deleted": 1, "not_found": []}, "delete by filter with $or and a bound", js)
    gone = [s.req("GET", "/v1/documents/bf-%d" % i)[0] for i in range(4)]
    seen = []
    for mode in ("dense", "lexical", "hybrid"):
        st, js, _, _ = s.req("POST", "/v1/search", {"query": doc_text(620, 40), "mode": mode, "k": 50})
        seen += [(mode, h["doc_id"]) for h in js["results"] if h["doc_id"].startswith("bf-")]
    ok(gone == [404] * 4 and not seen, "the matched documents are gone from storage and every search mode",
       (gone, seen))
    st, js, _, _ = s.req("POST", "/v1/documents/delete", {"filter": {"bdgroup": "a"}})
    ok(st == 200 and js == {"deleted": 0, "not_found": []}, "a filter matching nothing deletes nothing", js)


def run_patch(s):
    """PATCH /v1/documents/{id}: a merge patch of the metadata alone, the
    text and chunks untouched, seen by filters at once, and hashed as an
    upsert of the same metadata would be."""
    text = doc_text(640, 90)
    meta = {"a": 1, "b": {"c": 2, "d": 3}, "tags": ["x"]}
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": [{"id": "pm/1", "text": text, "metadata": meta}]})
    st, before, _, _ = s.req("GET", "/v1/documents/pm%2F1")
    ok(st == 200 and before["metadata"] == meta, "PATCH: a document to patch", before)
    st, js, _, _ = s.req("PATCH", "/v1/documents/pm%2F1", {"metadata": {"a": None, "b": {"c": 5}, "new": "v"}})
    want = {"b": {"c": 5, "d": 3}, "tags": ["x"], "new": "v"}
    ok(st == 200 and js["metadata"] == want and js["chunk_ids"] == before["chunk_ids"] and "text" not in js,
       "PATCH merges (null removes, objects merge, values replace) and answers the document without text", js)
    st, after, _, _ = s.req("GET", "/v1/documents/pm%2F1")
    ok(st == 200 and after["metadata"] == want and after["text"] == text and after["doc_num"] == before["doc_num"],
       "the text, doc_num and chunks stay", after)
    found = lambda flt: [h["doc_id"] for h in s.req("POST", "/v1/search", {"query": text, "k": 5, "filter": flt,
                                                                            "with_text": False})[1]["results"]]
    ok(found({"new": "v"})[:1] == ["pm/1"] and "pm/1" not in found({"a": 1}),
       "searches filter on the patched metadata at once", (found({"new": "v"}), found({"a": 1})))
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": [{"id": "pm/1", "text": text, "metadata": want}]})
    ok(st == 200 and js["results"][0]["status"] == "unchanged",
       "an upsert of the same text and the patched metadata is unchanged (the content hash followed)", js)
    st, js, _, _ = s.req("PATCH", "/v1/documents/pm%2F1", {"metadata": {"tags": None, "n": 2}},
                         ctype="application/merge-patch+json")
    ok(st == 200 and js["metadata"] == {"b": {"c": 5, "d": 3}, "new": "v", "n": 2},
       "Content-Type application/merge-patch+json", js)
    for body, ctype, want_st, field in [
            ({}, "application/json", 400, "metadata: missing"),
            ({"metadata": None}, "application/json", 400, "metadata: missing"),
            ({"metadata": [1]}, "application/json", 400, "metadata: must be an object"),
            ({"metadata": {}, "text": "x"}, "application/json", 400, "unknown field 'text'"),
            ("{\"metadata\": {\"a\": 1, \"a\": 2}}", "application/json", 400, "duplicate"),
            ("{\"metadata\": {", "application/json", 400, "body: malformed JSON"),
            (b"{\"metadata\": {\"a\": \"\xff\"}}", "application/json", 400, "invalid UTF-8"),
            ({"metadata": {"a": 1}}, "text/plain", 415, "application/merge-patch+json")]:
        st, js, raw, _ = s.req("PATCH", "/v1/documents/pm%2F1", body, ctype=ctype)
        ok(st == want_st and field in js["error"]["message"],
           "PATCH %r (%s) -> %d naming %r" % (body, ctype, want_st, field), (st, raw[:200]))
    st, js, _, _ = s.req("GET", "/v1/documents/pm%2F1")
    ok(js["metadata"] == {"b": {"c": 5, "d": 3}, "new": "v", "n": 2}, "refused patches changed nothing", js)
    st, js, _, _ = s.req("PATCH", "/v1/documents/pm-none", {"metadata": {"a": 1}})
    ok(st == 404 and "pm-none" in js["error"]["message"], "PATCH of no document: 404 naming it", js)
    # many documents at once: POST /v1/documents/update, by ids or by filter
    docs = [{"id": "bu-%d" % i, "text": doc_text(660 + i, 30), "metadata": {"grp": "ab"[i // 2], "n": i}}
            for i in range(4)]
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": docs})
    st, js, _, _ = s.req("POST", "/v1/documents/update",
                         {"ids": ["bu-0", "bu-1", "bu-none"], "metadata": {"tag": "x", "n": None}})
    metas = [s.req("GET", "/v1/documents/bu-%d" % i)[1]["metadata"] for i in range(4)]
    ok(st == 200 and js == {"updated": 2, "not_found": ["bu-none"]} and
       metas[:2] == [{"grp": "a", "tag": "x"}] * 2 and metas[2] == docs[2]["metadata"],
       "POST /v1/documents/update by ids: merged into the listed documents only", (js, metas))
    st, js, _, _ = s.req("POST", "/v1/documents/update", {"filter": {"grp": "b"}, "metadata": {"grp": "c"}})
    st2, found, _, _ = s.req("POST", "/v1/search", {"query": doc_text(662, 30), "k": 20, "with_text": False,
                                                    "filter": {"grp": "c"}})
    ok(st == 200 and js == {"updated": 2, "not_found": []} and
       {h["doc_id"] for h in found["results"]} == {"bu-2", "bu-3"},
       "... by filter: the matching documents, which searches see at once", (js, found))
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": [dict(docs[0], metadata={"grp": "a", "tag": "x"})]})
    ok(st == 200 and js["results"][0]["status"] == "unchanged", "... with the content hash following", js)
    for body, want_st, field in [({"ids": ["bu-0"]}, 400, "metadata: missing"),
                                 ({"ids": [], "metadata": {}}, 422, "ids"),
                                 ({"filter": {}, "metadata": {}}, 422, "filter: empty"),
                                 ({"ids": ["bu-0"], "filter": {"a": 1}, "metadata": {}}, 400, "only one of ids, filter"),
                                 ({"ids": ["bu-0"], "metadata": [1]}, 400, "metadata: must be an object"),
                                 ({"ids": ["bu-0"], "metadata": {}, "text": "x"}, 400, "unknown field 'text'")]:
        st, js, _, _ = s.req("POST", "/v1/documents/update", body)
        ok(st == want_st and field in js["error"]["message"], "update %s -> %d naming %r" % (body, want_st, field),
           (st, js))
    st, js, _, r = s.req("PUT", "/v1/documents/pm%2F1", {"metadata": {}})
    ok(st == 405 and r.getheader("Allow") == "GET, HEAD, PATCH, DELETE", "405 names PATCH in Allow",
       (st, r.getheader("Allow")))


def run_framing(s):
    """A body whose end a proxy could place elsewhere than the server does
    (request smuggling): Content-Length twice with different values, or
    beside Transfer-Encoding. A 400 naming it, the connection closed, and
    the request hidden after the body never answered. And the Host header:
    missing in HTTP/1.1 or given twice, a 400 naming it."""
    body = b'{"query": "alpha", "k": 1, "with_text": false}'
    smuggled = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    head = b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    cases = [("Content-Length twice", head + b"Content-Length: %d\r\nContent-Length: 3\r\n\r\n" % len(body)
              + body + smuggled, "Content-Length: given twice"),
             ("Content-Length and Transfer-Encoding",
              head + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
              % (len(body), body) + smuggled, "Content-Length and Transfer-Encoding")]
    for name, raw, want in cases:
        sk = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        sk.sendall(raw)
        out = b""
        try:
            while True:
                piece = sk.recv(65536)
                if not piece:
                    break
                out += piece
        except socket.timeout:
            out += b"[still open]"
        sk.close()
        ok(out.startswith(b"HTTP/1.1 400") and want.encode() in out and out.count(b"HTTP/1.1 ") == 1
           and b"[still open]" not in out,
           "%s: 400 naming it, closed, the request after the body not answered" % name, out[-300:])
    ok(healthy(s), "... and the server serves on")
    # the host: HTTP/1.1 needs exactly one Host (RFC 9112 3.2); HTTP/1.0 may omit it
    for name, raw, want in [("HTTP/1.1 without Host", b"GET /health HTTP/1.1\r\n\r\n", b"HTTP/1.1 400"),
                            ("two Host headers", b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                             b"HTTP/1.1 400"),
                            ("HTTP/1.0 without Host", b"GET /health HTTP/1.0\r\n\r\n", b"HTTP/1.1 200")]:
        sk = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        sk.sendall(raw)
        out = b""
        try:
            while b"}" not in out:  # both answers are JSON
                piece = sk.recv(65536)
                if not piece:
                    break
                out += piece
        except socket.timeout:
            pass
        sk.close()
        good = out.startswith(want) and (want.endswith(b"200") or b"Host:" in out)
        ok(good, "%s: %s" % (name, want.decode()[9:]), out[-300:])


def run_main(s):
    st, js, _, _ = s.req("GET", "/health")
    ok(st == 200 and js == {"status": "ok"}, "GET /health")
    st, js, _, _ = s.req("GET", "/ready")
    ok(st == 200, "GET /ready")
    st, js, _, _ = s.req("GET", "/v1/info")
    ok(st == 200 and js["encoder"]["dim"] == 32 and js["decoder"] is not None, "GET /v1/info", js)
    dim = js["encoder"]["dim"]
    st, js, raw, _ = s.req("GET", "/openapi.json")
    ok(st == 200 and js and js.get("openapi", "").startswith("3."), "GET /openapi.json")
    # every documented route answers something other than "no route" / 405
    for path, ops in js["paths"].items():
        for method in ops:
            p = path.replace("{id}", "1" if "chunks" in path else "nosuchdoc")
            body = "{}" if method == "post" else None
            st2, js2, _, _ = s.req(method.upper(), p, body=body)
            ok(st2 != 405 and not (st2 == 404 and js2 and js2["error"]["message"].startswith("no route")),
               "documented route exists: %s %s (%d)" % (method.upper(), path, st2), js2)

    # --- ingest: JSON object form ------------------------------------------
    docs = [{"id": "doc-%d" % i, "text": doc_text(i), "metadata": {"n": i}} for i in range(20)]
    docs.append({"id": "odd id/ü?#", "text": "an id that needs percent-encoding " + doc_text(99)})
    docs += [{"id": "long-%d" % i, "text": doc_text(200 + i, 90)} for i in range(4)]  # several chunks each
    st, js, _, _ = s.req("POST", "/v1/documents?wait=true", {"documents": docs})
    ok(st == 200 and js["documents"] == 25 and js["errors"] == 0 and len(js["results"]) == 25,
       "POST /v1/documents (JSON) stores all", js)
    # --- ingest: NDJSON streamed in pieces (chunked transfer encoding) ------
    lines = [json.dumps({"id": "nd-%d" % i, "text": doc_text(100 + i)}) + "\n" for i in range(150)]

    def gen():
        blob = "".join(lines).encode()
        for i in range(0, len(blob), 977):  # pieces that cut lines and characters
            yield blob[i:i + 977]
    st, js, _, _ = s.req("POST", "/v1/documents", gen(), ctype="application/x-ndjson")
    ok(st == 200 and js["documents"] == 150 and js["errors"] == 0, "POST /v1/documents (NDJSON, chunked) stores all",
       js and {k: v for k, v in js.items() if k != "results"})
    ok(js is not None and sorted(r["line"] for r in js["results"]) == list(range(1, 151)),
       "NDJSON results name every line")
    # ?wait is accepted by both body forms, in any case or with no value (every
    # answer comes after the documents are durable and searchable anyway)
    st, js, _, _ = s.req("POST", "/v1/documents?wait=TRUE", '{"id":"w-1","text":"waited for"}\n',
                         ctype="application/x-ndjson")
    ok(st == 200 and js["documents"] == 1 and js.get("indexed") is True, "NDJSON ?wait=TRUE accepted", js)
    st, js, _, _ = s.req("POST", "/v1/documents?wait", {"documents": [{"id": "w-2", "text": "waited too"}]})
    ok(st == 200 and js["documents"] == 1 and js.get("indexed") is True, "?wait with no value accepted", js)
    # NDJSON with bad lines: the good ones are stored, the bad ones reported by line
    body = ('{"id":"mix-1","text":"one"}\n{"id":"mix-2"}\nnot json\n{"id":"mix-3","text":"three"}\n'
            '{"id":"mix-4","text":"x","extra":1}\n')
    st, js, _, _ = s.req("POST", "/v1/documents", body, ctype="application/x-ndjson")
    bad = {r["line"]: r for r in js["results"] if r["status"] == "error"} if js else {}
    ok(st == 400 and js["documents"] == 2 and set(bad) == {2, 3, 5} and "text" in bad[2]["error"]["message"]
       and "extra" in bad[5]["error"]["message"], "NDJSON: bad lines reported with their field, good ones stored", js)
    st, _, _, _ = s.req("GET", "/v1/documents/mix-3")
    ok(st == 200, "NDJSON: good line after bad ones stored")
    # a line longer than max-body is reported, the rest goes on
    body = '{"id":"long","text":"%s"}\n{"id":"after-long","text":"fine"}\n' % ("x" * 70000)
    st, js, _, _ = s.req("POST", "/v1/documents", body, ctype="application/x-ndjson")
    ok(st == 413 and js["documents"] == 1, "NDJSON: over-long line -> 413 for it, next line stored", js)

    # --- documents / chunks --------------------------------------------------
    st, js, _, _ = s.req("GET", "/v1/documents/doc-3")
    ok(st == 200 and js["id"] == "doc-3" and js["metadata"] == {"n": 3} and js["text"] == doc_text(3),
       "GET /v1/documents/{id}", js)
    chunk_id = js["chunk_ids"][0] if js else 1
    st, js, _, _ = s.req("GET", "/v1/documents/odd%20id%2F%C3%BC%3F%23")
    ok(st == 200 and js["id"] == "odd id/ü?#", "GET /v1/documents/{id} with a percent-encoded id", js)
    st, js, _, _ = s.req("GET", "/v1/chunks/%d" % chunk_id)
    ok(st == 200 and js["doc_id"] == "doc-3" and "continuation" in js and js["tokens"], "GET /v1/chunks/{id}", js)

    # --- search ---------------------------------------------------------------
    st, js, _, _ = s.req("POST", "/v1/search", {"query": doc_text(7), "k": 3})
    ok(st == 200 and js["results"][0]["doc_id"] == "doc-7" and len(js["results"]) == 3,
       "search by text finds the ingested document first", js and [r["doc_id"] for r in js["results"]])
    hit = js["results"][0] if js else {}
    ok(all(k in hit for k in ("score", "chunk_id", "doc_id", "metadata", "text", "continuation")),
       "search hits carry score, ids, metadata, text and continuation", hit)
    st, js, _, _ = s.req("POST", "/v1/search", {"queries": [doc_text(5), doc_text(105)], "k": 2, "with_text": False})
    ok(st == 200 and [b["results"][0]["doc_id"] for b in js["batch"]] == ["doc-5", "nd-5"]
       and "text" not in js["batch"][0]["results"][0], "search with a batch of queries, with_text false", js)
    st, emb, _, _ = s.req("POST", "/v1/embeddings", {"input": [doc_text(9), "x"]})
    ok(st == 200 and emb["object"] == "list" and len(emb["data"]) == 2 and len(emb["data"][0]["embedding"]) == dim
       and emb["data"][1]["index"] == 1 and emb["usage"]["total_tokens"] > 0, "POST /v1/embeddings (OpenAI shape)")
    st, js, _, _ = s.req("POST", "/v1/embeddings", {"input": "single", "model": emb["model"]})
    ok(st == 200 and len(js["data"]) == 1, "embeddings: single string, model named as reported")
    # this encoder has no query prefix, so a query embeds as a document does
    st, js, _, _ = s.req("POST", "/v1/embeddings", {"input": [doc_text(9), "x"], "input_type": "query"})
    ok(st == 200 and [d["embedding"] for d in js["data"]] == [d["embedding"] for d in emb["data"]],
       "embeddings: input_type query, without a query prefix the same vectors", st)
    # encoding_format "base64", what OpenAI's Python client sends unless told
    # otherwise: the little-endian float32 bytes of the very same vectors
    st, b64, _, _ = s.req("POST", "/v1/embeddings", {"input": [doc_text(9), "x"], "encoding_format": "base64",
                                                     "dimensions": dim})
    got = [list(struct.unpack("<%df" % dim, base64.b64decode(d["embedding"]))) for d in b64["data"]] \
        if st == 200 else None
    want = [list(struct.unpack("<%df" % dim, struct.pack("<%df" % dim, *d["embedding"]))) for d in emb["data"]]
    ok(got == want, "embeddings as base64 decode to the float response's vectors", (st, b64))
    vec = emb["data"][0]["embedding"]
    st, js, _, _ = s.req("POST", "/v1/search", {"vector": vec, "k": 1})
    ok(st == 200 and js["results"][0]["doc_id"] == "doc-9", "search by vector", js)
    st, js, _, _ = s.req("POST", "/v1/search", {"vector": vec, "k": 1, "exclude_docs": ["doc-9"]})
    ok(st == 200 and js["results"][0]["doc_id"] != "doc-9", "exclude_docs skips a document", js)
    st, js, _, _ = s.req("POST", "/v1/search", {"vector": vec, "k": 2, "nprobe": 4, "ef_search": 16})
    ok(st == 200, "nprobe / ef_search accepted")
    # more like this: a stored chunk's nearest chunks, by its vector, itself left out
    st, d9, _, _ = s.req("GET", "/v1/documents/doc-9")
    cid = d9["chunk_ids"][0]
    st, byvec, _, _ = s.req("POST", "/v1/search", {"vector": vec, "k": 6, "with_text": False})
    st2, like, _, _ = s.req("POST", "/v1/search", {"chunk_id": cid, "k": 5, "with_text": False})
    want = [(h["chunk_id"], round(h["score"], 5)) for h in byvec["results"] if h["chunk_id"] != cid][:5]
    got = [(h["chunk_id"], round(h["score"], 5)) for h in like["results"]] if st2 == 200 else like
    ok(len(d9["chunk_ids"]) == 1 and byvec["results"][0]["chunk_id"] == cid and got == want,
       "chunk_id: the search by that chunk's stored vector, the chunk itself left out", (got, want))
    st, js, _, _ = s.req("POST", "/v1/search", {"chunk_id": cid, "k": 50, "filter": {"n": {"$gte": 15}},
                                                "exclude_docs": ["doc-16"], "with_text": False})
    ids = {h["doc_id"] for h in js["results"]} if st == 200 else js
    ok(ids == {"doc-15", "doc-17", "doc-18", "doc-19"}, "chunk_id with a filter and exclude_docs", ids)
    for body, want_st, field in [({"chunk_id": 0}, 400, "chunk_id: must be a positive integer"),
                                 ({"chunk_id": "7"}, 400, "chunk_id: must be a positive integer"),
                                 ({"chunk_id": cid, "query": "x"}, 400, "only one of query, queries, vector, chunk_id"),
                                 ({"chunk_id": 999999999}, 404, "chunk_id: no chunk 999999999"),
                                 ({"chunk_id": cid, "mode": "lexical"}, 400, "mode")]:
        st, js, _, _ = s.req("POST", "/v1/search", body)
        ok(st == want_st and field in js["error"]["message"], "search %s -> %d naming %r" % (body, want_st, field),
           (st, js))

    # --- metadata filter ------------------------------------------------------
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": [
        {"id": "tag-1", "text": doc_text(301), "metadata": {"tags": ["red", "blue"], "n": 100}},
        {"id": "tag-2", "text": doc_text(302), "metadata": {"tags": ["green"], "n": 101}}]})
    ok(st == 200 and js["errors"] == 0, "documents with list metadata stored", js)

    def filtered(flt, k=50, **extra):
        st, js, _, _ = s.req("POST", "/v1/search", dict({"vector": vec, "k": k, "filter": flt, "with_text": False},
                                                        **extra))
        return st, ({h["doc_id"] for h in js["results"]} if st == 200 else js)
    st, ids = filtered({"n": 5})
    ok(st == 200 and ids == {"doc-5"}, "filter: one value keeps only that document", ids)
    st, ids = filtered({"n": [3, 5.0, 17]})
    ok(st == 200 and ids == {"doc-3", "doc-5", "doc-17"}, "filter: a list of values, numbers by value", ids)
    st, ids = filtered({"tags": "red"})
    ok(st == 200 and ids == {"tag-1"}, "filter: a metadata list matches any of its elements", ids)
    st, ids = filtered({"tags": ["green", "red"], "n": 101})
    ok(st == 200 and ids == {"tag-2"}, "filter: every key must match", ids)
    st, ids = filtered({"n": None}, k=1000)
    ok(st == 200 and ids and not any(i.startswith(("doc-", "tag-")) for i in ids),
       "filter: null keeps documents without the key", sorted(ids)[:5] if st == 200 else ids)
    st, ids = filtered({"n": [5, 6]}, exclude_docs=["doc-5"])
    ok(st == 200 and ids == {"doc-6"}, "filter with exclude_docs", ids)
    # include_docs: only the chunks of the named documents
    st, ids = filtered(None, include_docs=["doc-3", "doc-7", "no-such-doc"])
    ok(st == 200 and ids == {"doc-3", "doc-7"}, "include_docs: only those documents (unknown ids name none)", ids)
    st, ids = filtered({"n": [3, 4]}, include_docs=["doc-3", "doc-7"])
    ok(st == 200 and ids == {"doc-3"}, "include_docs with a filter: both hold", ids)
    st, ids = filtered(None, include_docs=["doc-3", "doc-7"], exclude_docs=["doc-7"])
    ok(st == 200 and ids == {"doc-3"}, "include_docs with exclude_docs: the excluded stay out", ids)
    by_incl = s.req("POST", "/v1/search", {"vector": vec, "k": 20, "include_docs": ["doc-3", "doc-7"],
                                           "with_text": False})[1]["results"]
    by_flt = s.req("POST", "/v1/search", {"vector": vec, "k": 20, "filter": {"n": [3, 7]},
                                          "with_text": False})[1]["results"]
    ok(len(by_incl) == len(by_flt) > 0 and [h["chunk_id"] for h in by_incl] == [h["chunk_id"] for h in by_flt]
       and all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(by_incl, by_flt)),
       "include_docs (scored from the stored vectors) and the same documents by filter (the index): "
       "the same hits and scores", ([h["chunk_id"] for h in by_incl], [h["chunk_id"] for h in by_flt]))
    st, ids = filtered(None, include_docs=["no-such-doc"])
    ok(st == 200 and ids == set(), "include_docs naming no document: no results", ids)
    for mode in ("lexical", "hybrid"):
        st2, js2, _, _ = s.req("POST", "/v1/search", {"query": doc_text(5), "k": 10, "mode": mode,
                                                     "include_docs": ["doc-5", "doc-6"], "with_text": False})
        got = {h["doc_id"] for h in js2["results"]} if st2 == 200 else js2
        ok(st2 == 200 and got and got <= {"doc-5", "doc-6"}, "include_docs in a %s search" % mode, got)
        by_flt = s.req("POST", "/v1/search", {"query": doc_text(5), "k": 10, "mode": mode, "filter": {"n": [5, 6]},
                                              "with_text": False})[1]["results"]
        ok([(h["chunk_id"], round(h["score"], 5)) for h in js2["results"]] ==
           [(h["chunk_id"], round(h["score"], 5)) for h in by_flt],
           "include_docs in a %s search: the same hits and scores as those documents by filter" % mode,
           ([h["chunk_id"] for h in js2["results"]], [h["chunk_id"] for h in by_flt]))
    st2, js2, _, _ = s.req("POST", "/v1/search", {"query": "a", "include_docs": []})
    ok(st2 == 422 and "include_docs" in js2["error"]["message"], "include_docs empty -> 422 naming it", js2)
    st, ids = filtered({"n": 12345})
    ok(st == 200 and ids == set(), "filter matching nothing: no results", ids)
    st2, js2, _, _ = s.req("POST", "/v1/search", {"query": doc_text(5), "k": 3, "filter": {"n": 5}})
    ok(st2 == 200 and {h["doc_id"] for h in js2["results"]} == {"doc-5"}, "filter on a search by text", js2)
    # operators, $and and $or (the grammar's own cases are test_filter's)
    st, ids = filtered({"n": {"$gte": 3, "$lt": 6}})
    ok(st == 200 and ids == {"doc-3", "doc-4", "doc-5"}, "filter: a range of numbers", ids)
    st, ids = filtered({"n": {"$gt": 17.5}})
    ok(st == 200 and ids == {"doc-18", "doc-19", "tag-1", "tag-2"}, "filter: $gt by value", ids)
    st, ids = filtered({"n": {"$lte": 19, "$nin": [0, 1, 2]}, "tags": {"$exists": False}}, k=1000)
    ok(st == 200 and ids == {"doc-%d" % i for i in range(3, 20)},
       "filter: $nin and $exists beside a bound", sorted(ids) if st == 200 else ids)
    st, ids = filtered({"$or": [{"n": 2}, {"tags": "green"}, {"$and": [{"n": {"$gt": 10}}, {"n": {"$lt": 12}}]}]})
    ok(st == 200 and ids == {"doc-2", "tag-2", "doc-11"}, "filter: $or of a value, a list element and an $and", ids)
    st, ids = filtered({"tags": {"$ne": "red"}, "n": {"$gte": 100}})
    ok(st == 200 and ids == {"tag-2"}, "filter: $ne on a metadata list", ids)
    for mode in ("lexical", "hybrid"):
        st2, js2, _, _ = s.req("POST", "/v1/search", {"query": doc_text(5), "k": 3, "mode": mode,
                                                      "filter": {"n": {"$in": [4, 5]}}})
        ok(st2 == 200 and {h["doc_id"] for h in js2["results"]} <= {"doc-4", "doc-5"} and js2["results"],
           "filter with an operator, %s search" % mode, js2)
    for flt, want, field in [({"n": {"$gt": True}}, 400, "filter.n.$gt: must be a number or a string"),
                             ({"n": {"$near": 1}}, 400, "filter.n: unknown operator $near"),
                             ({"$or": []}, 422, "filter.$or: list 1 to 16"),
                             ({"$nor": [{"n": 1}]}, 400, "filter.$nor: unknown operator")]:
        st, js = filtered(flt)
        ok(st == want and field in js["error"]["message"], "filter %s -> %d naming %r" % (flt, want, field), js)

    # --- delete removes from results ----------------------------------------
    st, js, _, _ = s.req("DELETE", "/v1/documents/doc-9")
    ok(st == 200 and js["deleted"] is True, "DELETE /v1/documents/{id}")
    st, js, _, _ = s.req("POST", "/v1/search", {"vector": vec, "k": 50})
    ok(st == 200 and all(r["doc_id"] != "doc-9" for r in js["results"]), "deleted document gone from search")
    st, js, _, _ = s.req("GET", "/v1/documents/doc-9")
    ok(st == 404 and js["error"]["code"] == "ENOTFOUND", "GET deleted document -> 404")
    st, js, _, _ = s.req("DELETE", "/v1/documents/doc-9")
    ok(st == 404, "DELETE missing document -> 404")
    # upsert replaces
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": [{"id": "doc-4", "text": "replaced text"}]})
    st, js, _, _ = s.req("GET", "/v1/documents/doc-4")
    ok(st == 200 and js["text"] == "replaced text", "upsert replaces a document", js)

    # --- bad input: 4xx naming the field, server keeps serving -------------
    big = json.dumps({"query": "x" * 70000})
    cases = [
        ("POST", "/v1/search", '{"query": "a", "k": 0}', "application/json", 422, "k"),
        ("POST", "/v1/search", '{"query": "a", "k": 1001}', "application/json", 422, "k"),
        ("POST", "/v1/search", '{"query": "a", "k": "5"}', "application/json", 400, "k"),
        ("POST", "/v1/search", '{"query": "a", "k": 2.5}', "application/json", 400, "k"),
        ("POST", "/v1/search", '{"query": "a", "bogus": 1}', "application/json", 400, "bogus"),
        ("POST", "/v1/search", '{"query": "a", "query": "b"}', "application/json", 400, "duplicate"),
        ("POST", "/v1/search", '{"k": 3}', "application/json", 400, "query"),
        ("POST", "/v1/search", '{"query": 5}', "application/json", 400, "query"),
        ("POST", "/v1/search", '{"queries": []}', "application/json", 422, "queries"),
        ("POST", "/v1/search", '{"queries": ["a", 3]}', "application/json", 400, "queries[1]"),
        ("POST", "/v1/search", '{"query": ""}', "application/json", 422, "query: empty"),
        ("POST", "/v1/search", '{"query": " \\n\\t "}', "application/json", 422, "query: empty"),
        ("POST", "/v1/search", '{"queries": ["a", "  "]}', "application/json", 422, "queries[1]: empty"),
        ("POST", "/v1/search", '{"vector": [1, 2, 3]}', "application/json", 422, "vector"),
        ("POST", "/v1/search", '{"vector": [%s]}' % ", ".join(["0"] * 31 + ["-0.0"]), "application/json", 422,
         "vector: all zeros"),
        ("POST", "/v1/search", '{"vector": [1, "a"]}', "application/json", 400, "vector[1]"),
        ("POST", "/v1/search", '{"query": "a", "nprobe": -1}', "application/json", 422, "nprobe"),
        ("POST", "/v1/embeddings", '{"input": ""}', "application/json", 422, "input: empty string"),
        ("POST", "/v1/embeddings", '{"input": ["a", ""]}', "application/json", 422, "input[1]: empty string"),
        ("POST", "/v1/search", '{"query": "a", "exclude_docs": "x"}', "application/json", 400, "exclude_docs"),
        ("POST", "/v1/search", '{"query": "a", "with_text": 1}', "application/json", 400, "with_text"),
        ("POST", "/v1/search", '{"query": "a", "filter": [1]}', "application/json", 400, "filter"),
        ("POST", "/v1/search", '{"query": "a", "filter": {"n": {"gt": 1}}}', "application/json", 400, "filter.n"),
        ("POST", "/v1/search", '{"query": "a", "filter": {"n": []}}', "application/json", 422, "filter.n"),
        ("POST", "/v1/search", '{"query": "a", "filter": {"n": [[1]]}}', "application/json", 400, "filter.n[0]"),
        ("POST", "/v1/search", '{"query": "a", "filter": {"": 1}}', "application/json", 400, "filter"),
        ("POST", "/v1/search", '{"query": "a"', "application/json", 400, "JSON"),
        ("POST", "/v1/search", '[1, 2]', "application/json", 400, "object"),
        ("POST", "/v1/search", b'{"query": "\xff\xfe"}', "application/json", 400, "UTF-8"),
        ("POST", "/v1/search", b'\xef\xbb\xbf{"query": "a"}', "application/json", 400, "byte order mark"),
        ("POST", "/v1/search", '{"query": "a\\u0000b"}', "application/json", 400, "\\u0000 (NUL)"),
        ("POST", "/v1/search", '{"query": "a"}', "text/plain", 415, "Content-Type"),
        ("POST", "/v1/search", big, "application/json", 413, "body"),
        ("POST", "/v1/search", '', "application/json", 400, "JSON"),
        ("POST", "/v1/embeddings", '{}', "application/json", 400, "input"),
        ("POST", "/v1/embeddings", '{"input": 3}', "application/json", 400, "input"),
        ("POST", "/v1/embeddings", '{"input": [[9906, 1917]]}', "application/json", 400, "token ids"),
        ("POST", "/v1/embeddings", '{"input": [9906, 1917]}', "application/json", 400, "token ids"),
        ("POST", "/v1/embeddings", '{"input": "a", "encoding_format": "int8"}', "application/json", 422, "encoding_format"),
        ("POST", "/v1/embeddings", '{"input": "a", "dimensions": 8}', "application/json", 422, "dimensions"),
        ("POST", "/v1/embeddings", '{"input": "a", "dimensions": "32"}', "application/json", 400, "dimensions"),
        ("POST", "/v1/embeddings", '{"input": "a", "input_type": "passage"}', "application/json", 422, "input_type"),
        ("POST", "/v1/embeddings", '{"input": "a", "input_type": 1}', "application/json", 400, "input_type"),
        ("POST", "/v1/documents", '{"documents": [{"text": "a"}]}', "application/json", 400, "documents[0].id"),
        ("POST", "/v1/documents", '{"documents": [{"id": "a", "text": 1}]}', "application/json", 400, "documents[0].text"),
        ("POST", "/v1/documents", '{"documents": [{"id": "%s", "text": "a"}]}' % ("i" * 600), "application/json", 422, "id"),
        ("POST", "/v1/documents", '{"documents": [{"id": "a", "text": "b", "metadata": [1]}]}', "application/json", 400, "metadata"),
        ("POST", "/v1/documents", '{"documents": [{"id": "..", "text": "a"}]}', "application/json", 400, "documents[0].id: '.' and '..'"),
        ("POST", "/v1/documents", '{"documents": [{"id": "a", "text": "b"}, {"id": ".", "text": "c"}]}', "application/json", 400, "documents[1].id"),
        ("POST", "/v1/documents", '{"documents": {}}', "application/json", 400, "documents"),
        ("POST", "/v1/documents", '{"docs": []}', "application/json", 400, "docs"),
        ("POST", "/v1/documents", '{"documents": []}', "text/csv", 415, "Content-Type"),
        ("POST", "/v1/completions", '{"prompt": "a", "temperature": -1}', "application/json", 422, "temperature"),
        ("POST", "/v1/completions", '{"prompt": "a", "top_p": 1.5}', "application/json", 422, "top_p"),
        ("POST", "/v1/completions", '{"prompt": "a", "top_p": 0}', "application/json", 422, "top_p"),
        ("POST", "/v1/completions", '{"prompt": "a", "n": 2}', "application/json", 422, "n"),
        ("POST", "/v1/completions", '{"prompt": "a", "max_tokens": 0}', "application/json", 422, "max_tokens"),
        ("POST", "/v1/completions", '{"prompt": "a", "stop": [1]}', "application/json", 400, "stop[0]"),
        ("POST", "/v1/completions", '{"prompt": "a", "stop": ["a","b","c","d","e"]}', "application/json", 422, "stop"),
        ("POST", "/v1/completions", '{"prompt": "a", "logprobs": 9}', "application/json", 422, "logprobs"),
        ("POST", "/v1/completions", '{"prompt": "a", "stream": "yes"}', "application/json", 400, "stream"),
        ("POST", "/v1/completions", '{"prompt": "a", "frequency_penalty": 1}', "application/json", 422, "frequency_penalty"),
        ("POST", "/v1/completions", '{"prompt": "a", "presence_penalty": "0"}', "application/json", 400, "presence_penalty"),
        ("POST", "/v1/completions", '{"prompt": "a", "best_of": 2}', "application/json", 422, "best_of"),
        ("POST", "/v1/completions", '{"prompt": "a", "echo": true, "stream": true}', "application/json", 422, "echo"),
        ("POST", "/v1/completions", '{"prompt": "a", "logit_bias": {"50256": -100}}', "application/json", 422, "logit_bias"),
        ("POST", "/v1/completions", '{"prompt": "a", "suffix": "b"}', "application/json", 422, "suffix"),
        ("POST", "/v1/completions", '{"prompt": "a", "stream_options": {"x": 1}}', "application/json", 400, "stream_options"),
        ("POST", "/v1/completions", '{"prompt": "a", "bogus": 1}', "application/json", 400, "bogus"),
        ("POST", "/v1/completions", '{"max_tokens": 3}', "application/json", 400, "prompt"),
        ("GET", "/v1/chunks/abc", None, None, 400, "id"),
        ("GET", "/v1/chunks/0", None, None, 400, "id"),
        ("GET", "/v1/chunks/99999999", None, None, 404, "chunk"),
        ("GET", "/v1/documents/%ZZ", None, None, 400, "id"),
        ("GET", "/v1/documents/a%00b", None, None, 400, "id"),
        ("GET", "/v1/documents/%ff", None, None, 400, "id"),
        ("GET", "/nope", None, None, 404, "route"),
        ("PUT", "/v1/search", None, None, 405, "method"),
        ("GET", "/v1/search", None, None, 405, "method"),
        ("POST", "/health", "{}", "application/json", 405, "method"),
        # query parameters: only POST /v1/documents takes one (wait)
        ("POST", "/v1/documents?wait=maybe", '{"documents": []}', "application/json", 400, "wait"),
        ("POST", "/v1/documents?wait=maybe", "", "application/x-ndjson", 400, "wait"),
        ("POST", "/v1/documents?wiat=true", '{"documents": []}', "application/json", 400, "wiat"),
        ("POST", "/v1/documents?wait=1&wait=0", '{"documents": []}', "application/json", 400, "twice"),
        ("POST", "/v1/search?k=3", '{"query": "a"}', "application/json", 400, "'k'"),
        ("GET", "/v1/info?verbose", None, None, 400, "verbose"),
        ("GET", "/v1/documents/doc-1?x=%ff", None, None, 400, "'x'"),
        # search modes and result shaping
        ("POST", "/v1/search", '{"query": "a", "mode": "fuzzy"}', "application/json", 400, "mode"),
        ("POST", "/v1/search", '{"query": "a", "mode": 2}', "application/json", 400, "mode"),
        ("POST", "/v1/search", '{"vector": [%s], "mode": "lexical"}' % ",".join(["0.1"] * 32), "application/json", 400, "mode"),
        ("POST", "/v1/search", '{"query": "a", "alpha": 0}', "application/json", 422, "alpha"),
        ("POST", "/v1/search", '{"query": "a", "alpha": 1.5}', "application/json", 422, "alpha"),
        ("POST", "/v1/search", '{"query": "a", "alpha": "x"}', "application/json", 400, "alpha"),
        ("POST", "/v1/search", '{"query": "a", "mode": "dense", "alpha": 0.5}', "application/json", 400, "alpha"),
        ("POST", "/v1/search", '{"query": "a", "group_by": "chunk"}', "application/json", 400, "group_by"),
        ("POST", "/v1/search", '{"query": "a", "group_size": 2}', "application/json", 400, "group_size"),
        ("POST", "/v1/search", '{"query": "a", "group_by": "document", "group_size": 0}', "application/json", 422, "group_size"),
        ("POST", "/v1/search", '{"query": "a", "expand": 17}', "application/json", 422, "expand"),
        ("POST", "/v1/search", '{"query": "a", "expand": true}', "application/json", 400, "expand"),
        ("POST", "/v1/completions", '{"prompt": "a", "retrieval_mode": "bm25"}', "application/json", 400, "retrieval_mode"),
    ]
    for method, path, body, ctype, want, field in cases:
        st, js, raw, r = s.req(method, path, body, ctype=ctype)
        good = st == want and js is not None and field.lower() in js["error"]["message"].lower()
        ok(good and healthy(s), "%s %s %r -> %d naming %r" % (method, path, (body or "")[:50], want, field),
           "%d %s" % (st, raw[:300]))
    st, js, raw, r = s.req("PUT", "/v1/search")
    ok(r.getheader("Allow") == "POST", "405 carries Allow")
    # a compressed body is refused, not read as (malformed) JSON; identity is the body as sent
    before = s.req("GET", "/v1/info")[1]["documents"]
    for path, body, ctype in [("/v1/search", gzip.compress(b'{"query": "a"}'), "application/json"),
                              ("/v1/documents", gzip.compress(b'{"id": "gz", "text": "zipped"}\n'),
                               "application/x-ndjson"),
                              ("/v1/documents", b'{"documents": [{"id": "gz", "text": "plain"}]}', "application/json")]:
        for coding in ("gzip", "br", "gzip, identity"):
            st, js, raw, r = s.req("POST", path, body, headers={"Content-Encoding": coding}, ctype=ctype)
            ok(st == 415 and "Content-Encoding: '%s' is not accepted" % coding.replace(" ", "%20") in js["error"]["message"],
               "POST %s with Content-Encoding: %s -> 415 naming it" % (path, coding), raw[:200])
    ok(s.req("GET", "/v1/info")[1]["documents"] == before, "nothing was ingested from the refused bodies")
    st, js, _, _ = s.req("POST", "/v1/search", '{"query": "a", "k": 1}', headers={"Content-Encoding": " Identity"})
    ok(st == 200 and len(js["results"]) == 1, "Content-Encoding: identity is the body as sent", js)
    # a chunked body (no Content-Length) over max-body: 413 once it ends
    st, js, raw, r = s.req("POST", "/v1/search", (big[i:i + 8192].encode() for i in range(0, len(big), 8192)))
    ok(st == 413 and "body" in js["error"]["message"] and healthy(s), "chunked body over max-body -> 413", raw[:200])
    # header limit: a huge header -> 4xx (MHD), server fine
    try:
        st, js, raw, r = s.req("GET", "/health", headers={"X-Big": "a" * 100000})
    except (OSError, http.client.HTTPException):
        st = 431
    ok(400 <= st < 500 and healthy(s), "oversized headers -> 4xx, server keeps serving", st)

    # --- X-Request-Id: the client's is echoed (and logged), else one is made --
    ids = [s.req("GET", "/health")[3].getheader("X-Request-Id") for _ in range(3)]
    ok(all(ids) and len(set(ids)) == 3, "every answer carries its own X-Request-Id", ids)
    st, _, _, r = s.req("GET", "/v1/info", headers={"X-Request-Id": "client-id.42:x"})
    ok(r.getheader("X-Request-Id") == "client-id.42:x", "a client's X-Request-Id is echoed")
    for bad in ["has space", "x" * 65, "quote\"d"]:
        st, _, _, r = s.req("GET", "/health", headers={"X-Request-Id": bad})
        ok(r.getheader("X-Request-Id") not in (None, bad), "an unusable X-Request-Id is replaced: %r" % bad[:10])
    st, js, _, r = s.req("POST", "/v1/search", "{", headers={"X-Request-Id": "err-1"})
    ok(st == 400 and r.getheader("X-Request-Id") == "err-1", "error answers carry it too")

    # --- models, as OpenAI clients list them ------------------------------------
    st, models, _, _ = s.req("GET", "/v1/models")
    st_i, info, _, _ = s.req("GET", "/v1/info")
    byid = {m["id"]: m for m in models["data"]} if st == 200 else {}
    ok(st == 200 and models["object"] == "list" and len(models["data"]) == 3
       and byid.get(info["encoder"]["name"], {}).get("kind") == "embeddings"
       and byid.get(info["decoder"]["name"], {}).get("kind") == "completions"
       and byid.get(info["reranker"]["name"], {}).get("kind") == "rerank"
       and all(m["object"] == "model" and m["owned_by"] and m["created"] > 0 for m in models["data"]),
       "GET /v1/models lists the encoder, the decoder and the reranker", models)
    uses = {"embeddings": ("/v1/embeddings", {"input": "a"}),
            "completions": ("/v1/completions", {"prompt": "a", "max_tokens": 1}),
            "rerank": ("/v1/rerank", {"query": "a", "documents": ["a b"]})}
    for m in models["data"] if st == 200 else []:
        st, one, _, _ = s.req("GET", "/v1/models/" + urllib.parse.quote(m["id"], safe=""))
        ok(st == 200 and one == m, "GET /v1/models/%s" % m["id"], one)
        route, body = uses[m["kind"]]
        st, js, _, _ = s.req("POST", route, dict(body, model=m["id"]))
        ok(st == 200, "the listed id %s is accepted by %s" % (m["id"], route), js)
    st, js, _, _ = s.req("GET", "/v1/models/gpt-9")
    ok(st == 404 and all(x in js["error"]["message"] for x in ("gpt-9", info["encoder"]["name"],
                                                             info["reranker"]["name"])),
       "GET /v1/models/gpt-9 -> 404 naming it and the models there are", js)
    st, js, _, _ = s.req("POST", "/v1/models", "{}")
    ok(st == 405, "POST /v1/models -> 405", js)

    # --- metrics --------------------------------------------------------------
    st, js, raw, r = s.req("GET", "/metrics")
    text = raw.decode()
    ok(st == 200 and 'retro_http_requests_total{route="/v1/search",method="POST",status="200"}' in text
       and 'retro_http_request_duration_seconds_bucket{route="/v1/search",method="POST",status="200",le="+Inf"}' in text
       and re.search(r"^retro_documents \d+", text, re.M) and re.search(r"^retro_chunks \d+", text, re.M)
       and "retro_index_vectors" in text and "retro_ingested_documents_total" in text
       and 'retro_http_queue_depth{pool="work"}' in text, "GET /metrics (Prometheus text)", text[:500])
    check_exposition(text)
    m = re.search(r"^retro_documents (\d+)", text, re.M)
    st, info, _, _ = s.req("GET", "/v1/info")
    ok(m and int(m.group(1)) == info["documents"], "metrics and info agree on the document count")
    calls = re.search(r"^retro_query_embed_calls_total (\d+)", text, re.M)
    texts = re.search(r"^retro_query_embed_texts_total (\d+)", text, re.M)
    ok(calls and texts and 0 < int(calls.group(1)) <= int(texts.group(1)),
       "metrics count query encoder calls and the texts in them", (calls, texts))

    def metric(name):
        g = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
        return float(g.group(1)) if g else None
    st_kb = [int(l.split()[1]) for l in open("/proc/%d/status" % s.p.pid) if l.startswith("VmRSS:")]
    rss, start = metric("process_resident_memory_bytes"), metric("process_start_time_seconds")
    ok(rss and st_kb and 0.5 < rss / (st_kb[0] * 1024) < 2, "process_resident_memory_bytes ~ VmRSS", (rss, st_kb))
    ok(start and time.time() - 3600 < start <= time.time(), "process_start_time_seconds is this run's", start)
    fds, max_fds = metric("process_open_fds"), metric("process_max_fds")
    ok(fds and max_fds and 3 < fds < max_fds, "process_open_fds below process_max_fds", (fds, max_fds))
    ok(metric("process_cpu_seconds_total") and metric("process_virtual_memory_bytes") >= rss,
       "process CPU seconds and virtual memory")
    used, mapped = metric("retro_store_used_bytes"), metric("retro_store_map_bytes")
    ok(used and mapped and 0 < used <= mapped, "retro_store_used_bytes within the map", (used, mapped))
    ok('retro_build_info{version="%s"} 1' % info["version"] in text, "retro_build_info names /v1/info's version")
    # the index scan's share of a search: one scan per search by vector (or
    # dense search by text), none for a lexical one; one scan in 16 timed
    scans0, timed0 = metric("retro_index_scans_total"), metric("retro_index_scan_cpu_seconds_count")
    cpu0 = metric("retro_index_scan_cpu_seconds_sum")
    ok(scans0 and scans0 >= 1 and timed0 == sum(1 for n in range(int(scans0)) if n % 16 == 0)
       and cpu0 is not None and cpu0 >= 0,
       "/metrics: retro_index_scans_total and the retro_index_scan_cpu_seconds summary", (scans0, timed0, cpu0))
    for _ in range(40):
        s.req("POST", "/v1/search", {"vector": vec, "k": 3, "with_text": False})
    s.req("POST", "/v1/search", {"query": doc_text(3), "mode": "lexical", "k": 3})
    st, _, raw, _ = s.req("GET", "/metrics")
    text = raw.decode()
    scans1, timed1 = metric("retro_index_scans_total"), metric("retro_index_scan_cpu_seconds_count")
    cpu1 = metric("retro_index_scan_cpu_seconds_sum")
    ok(scans1 == scans0 + 40 and timed1 == timed0 + sum(1 for n in range(int(scans0), int(scans1)) if n % 16 == 0),
       "40 searches by vector: 40 scans, one in 16 of them timed (a lexical search scans nothing)",
       (scans0, scans1, timed0, timed1))
    ok(0 <= cpu1 - cpu0 < metric("process_cpu_seconds_total"), "the timed scans' CPU seconds grow, below the process's",
       (cpu0, cpu1))

    # --- a slow request does not block others --------------------------------
    big_lines = "".join(json.dumps({"id": "slow-%d" % i, "text": doc_text(i, 300)}) + "\n" for i in range(300))
    res = {}

    def slow():
        res["slow"] = s.req("POST", "/v1/documents", big_lines, ctype="application/x-ndjson", timeout=120)[0]
    t = threading.Thread(target=slow)
    t0 = time.time()
    t.start()
    time.sleep(0.2)
    lat = []
    while t.is_alive():
        t1 = time.time()
        healthy(s)
        s.req("GET", "/v1/documents/doc-1")
        if t.is_alive():  # answered while the slow request was still running
            lat.append(time.time() - t1)
        time.sleep(0.02)
    t.join()
    took = time.time() - t0
    lat.sort()
    med = lat[len(lat) // 2] if lat else 99
    # blocked requests would all finish after the ingest: few, and as slow as it
    ok(res.get("slow") == 200 and len(lat) >= 5 and med < min(0.25, took / 4),
       "fast requests answered during a slow ingest (%d in %.1fs, median %.3fs)" % (len(lat), took, med), res)


def run_modes(s):
    """Search modes (dense, lexical, hybrid), upserts and deletes seen by
    each, filter and exclude_docs in each, group_by and expand."""
    def search(**body):
        body.setdefault("k", 10)
        body.setdefault("with_text", False)
        st, js, _, _ = s.req("POST", "/v1/search", body)
        return st, js
    docs = [{"id": "lex-a", "text": "the zanzibar quokka calls os.path.join with __init__ arguments",
             "metadata": {"grp": 1}},
            {"id": "lex-b", "text": "a TypeError is raised when the quokka is wrong", "metadata": {"grp": 2}}]
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": docs})
    ok(st == 200 and js["errors"] == 0, "mode documents stored", js)
    st, js = search(query="zanzibar")
    ok(st == 200 and js["mode"] == "hybrid", "a search by text is hybrid by default", js)
    st, js = search(query="zanzibar", alpha=0.3)
    top = js["results"][0] if st == 200 and js["results"] else {}
    ok(top.get("doc_id") == "lex-a" and top.get("lexical_rank") == 1 and isinstance(top.get("dense_score"), float),
       "hybrid: the document with the rare word first, with its dense and lexical scores and ranks", top)
    ok(st == 200 and all(h["dense_rank"] is None or h["dense_rank"] >= 1 for h in js["results"])
       and all((h["lexical_rank"] is None) == (h["lexical_score"] is None) for h in js["results"]),
       "hybrid: a rank is null exactly when the hit is not in that list", js["results"][:3] if st == 200 else js)
    # the scores and ranks a hybrid hit reports are those of the two lists
    q = "quokka " + doc_text(3)
    st1, lexl = search(query=q, mode="lexical", k=50)
    st2, denl = search(query=q, mode="dense", k=50)
    st3, hyb = search(query=q, mode="hybrid", k=20)
    lpos = {h["chunk_id"]: (i + 1, h["score"]) for i, h in enumerate(lexl["results"])} if st1 == 200 else {}
    dpos = {h["chunk_id"]: (i + 1, h["score"]) for i, h in enumerate(denl["results"])} if st2 == 200 else {}
    bad = [h for h in (hyb["results"] if st3 == 200 else [None])
           if h is None or (h["lexical_rank"] is not None and (h["lexical_rank"], h["lexical_score"]) != lpos.get(h["chunk_id"]))
           or (h["lexical_rank"] is None and h["chunk_id"] in lpos)
           or (h["dense_rank"] is not None and (h["dense_rank"], h["dense_score"]) != dpos.get(h["chunk_id"]))
           or (h["chunk_id"] in dpos and abs(h["dense_score"] - dpos[h["chunk_id"]][1]) > 1e-5)]
    ok(not bad and lpos and dpos, "hybrid: each hit's dense and lexical scores and ranks are those of the two lists",
       bad[:2])
    # equal fused scores (a list's first against the other's first at alpha
    # 0.5) are ordered by dense score, not by chunk id
    ties, misordered = 0, []
    for i in range(12):
        st, js = search(query="end%d" % i, mode="hybrid", alpha=0.5, k=20)
        hits = js["results"] if st == 200 else []
        for a, b in zip(hits, hits[1:]):
            if a["score"] == b["score"]:
                ties += 1
                if a["dense_score"] < b["dense_score"]:
                    misordered.append((a, b))
    ok(ties > 0 and not misordered, "hybrid: equal fused scores go to the higher dense score (%d ties)" % ties,
       misordered[:1])
    run_phrase(s, search)
    run_with_vectors(s, search)
    st, js, _, _ = s.req("POST", "/v1/search", {"vector": [0.1] * 32, "k": 2})
    ok(st == 200 and js["mode"] == "dense", "a search by vector is dense", js)
    for q, want in (("os.path.join", "lex-a"), ("join", "lex-a"), ("__init__", "lex-a"), ("init", "lex-a"),
                    ("TypeError", "lex-b"), ("type error", "lex-b")):
        st, js = search(query=q, mode="lexical")
        ok(st == 200 and js["mode"] == "lexical" and js["results"] and js["results"][0]["doc_id"] == want
           and "dense_rank" not in js["results"][0],
           "lexical: %r finds %s first" % (q, want), js)
    st, js = search(query="zanzibar", mode="lexical", exclude_docs=["lex-a"])
    ok(st == 200 and all(h["doc_id"] != "lex-a" for h in js["results"]), "lexical: exclude_docs", js)
    st, js = search(query="quokka", mode="lexical", filter={"grp": 2})
    ok(st == 200 and [h["doc_id"] for h in js["results"]] == ["lex-b"], "lexical: filter", js)
    st, js = search(query="quokka", mode="hybrid", filter={"grp": 2})
    ok(st == 200 and {h["doc_id"] for h in js["results"]} == {"lex-b"}, "hybrid: filter", js)
    st, js = search(query="quokka", mode="hybrid", alpha=0.9)
    ok(st == 200 and js["results"], "hybrid: alpha accepted", js)
    # an upsert and a delete are seen by every mode at once
    st, js = search(query="zanzibar", mode="lexical")
    old_ids = {h["chunk_id"] for h in js["results"] if h["doc_id"] == "lex-a"} if st == 200 else set()
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": [{"id": "lex-a", "text": "a platypus now"}]})
    st2, js2, _, _ = s.req("DELETE", "/v1/documents/lex-b")
    ok(st == 200 and st2 == 200, "upsert and delete acknowledged")
    stale = []
    for mode in ("dense", "lexical", "hybrid"):
        for q in ("zanzibar quokka os.path.join", "TypeError quokka"):
            st, js = search(query=q, mode=mode, k=50)
            stale += [(mode, q, h) for h in js["results"]
                      if h["chunk_id"] in old_ids or h["doc_id"] == "lex-b"] if st == 200 else [(mode, q, js)]
    ok(not stale and old_ids, "no mode returns a replaced or deleted chunk", stale[:3])
    st, js = search(query="platypus", mode="lexical")
    ok(st == 200 and js["results"] and js["results"][0]["doc_id"] == "lex-a", "lexical: the upserted text is found", js)
    # group_by document: k documents, each with its best group_size chunks
    st, js = search(query=doc_text(201, 30), k=3, group_by="document", group_size=2)
    groups = js.get("groups", []) if st == 200 else []
    ok(st == 200 and "results" not in js and 1 <= len(groups) <= 3
       and len({g["doc_id"] for g in groups}) == len(groups)
       and all(1 <= len(g["hits"]) <= 2 and all(h["doc_id"] == g["doc_id"] for h in g["hits"]) for g in groups)
       and all(groups[i]["score"] >= groups[i + 1]["score"] for i in range(len(groups) - 1))
       and all(g["score"] == g["hits"][0]["score"] and all(
           g["hits"][i]["score"] >= g["hits"][i + 1]["score"] for i in range(len(g["hits"]) - 1)) for g in groups),
       "group_by document: distinct documents, best first, at most group_size hits each", js)
    # k x group_size beyond what one index search returns (4 x 10 x 30 candidates > 1000): served
    for mode in ("dense", "lexical", "hybrid"):
        st, js = search(query=doc_text(201, 30), k=10, group_by="document", group_size=30, mode=mode)
        ok(st == 200 and js.get("groups"), "group_by document, k 10 x group_size 30, %s: served" % mode, js)
    # the answer's size is bounded before any work: 8 x 1000 hits x 35 texts is refused, naming it
    st, js = search(queries=["q%d" % i for i in range(8)], k=1000, expand=16, with_text=True)
    ok(st == 422 and "280000 chunk texts" in js["error"]["message"] and "at most 100000" in js["error"]["message"],
       "a search asking for 280,000 chunk texts: 422 naming the count and the limit", js)
    st, js = search(queries=["q%d" % i for i in range(8)], k=1000, with_text=False)
    ok(st == 200 and len(js.get("batch", [])) == 8, "... the same hits without texts: served", js)
    # expand: each hit with its neighbouring chunks, windows merged
    st, js = search(query=doc_text(202, 90), k=4, expand=1, with_text=True, mode="dense")
    hits = js["results"] if st == 200 else []
    good = bool(hits)
    for h in hits:
        c = h.get("context", {})
        good &= c.get("first_ordinal", 99) <= h["ordinal"] <= c.get("last_ordinal", -1) and h["text"] in c["text"]
        good &= c["first_ordinal"] >= max(0, h["ordinal"] - 1) or any(
            o["doc_id"] == h["doc_id"] and o is not h for o in hits)
    ok(good, "expand: each hit's context holds its own text and its neighbours", hits[:2])
    same = [h for h in hits if h["doc_id"] == "long-2"]
    ok(len(same) < 2 or len({(h["context"]["first_ordinal"], h["context"]["last_ordinal"]) for h in same}) == 1
       or any(a["context"]["last_ordinal"] + 1 < b["context"]["first_ordinal"]
              or b["context"]["last_ordinal"] + 1 < a["context"]["first_ordinal"] for a in same for b in same),
       "expand: windows of one document that overlap or touch are merged", same)


    # one JSON vocabulary: the CLI prints the objects the API answers with
    qs = ["zanzibar quokka", doc_text(202, 40)]
    for mode, extra in (("hybrid", []), ("dense", ["--group-size", "2"])):
        body = {"queries": qs, "k": 3, "mode": mode, "with_text": True}
        if extra:
            body.update(group_by="document", group_size=2)
        st, js = search(**body)
        cli = subprocess.run([RETRO, "search", "--data", s.data, "-k", "3", "--mode", mode] + extra + qs,
                             capture_output=True, text=True, timeout=60)
        try:
            got = json.loads(cli.stdout)
        except ValueError:
            got = {"stderr": cli.stderr[-300:]}

        def keys(v):  # the field names at every level, scores rounded
            if isinstance(v, dict):
                return {k: keys(x) for k, x in v.items()}
            if isinstance(v, list):
                return [keys(x) for x in v]
            return round(v, 4) if isinstance(v, float) else v
        ok(st == 200 and keys(got) == keys(js),
           "retro search prints what POST /v1/search answers (%s)" % mode, (got, js))
    cli = subprocess.run([RETRO, "search", "--data", s.data, "zanzibar", " \t"],
                         capture_output=True, text=True, timeout=60)
    ok(cli.returncode == 2 and not cli.stdout and "QUERY 2 is empty" in cli.stderr,
       "retro search refuses a blank query, naming it, as the API does", (cli.returncode, cli.stderr))
    st, info, _, _ = s.req("GET", "/v1/info")
    cli = subprocess.run([RETRO, "info", "--data", s.data], capture_output=True, text=True, timeout=60)
    got = json.loads(cli.stdout) if cli.returncode == 0 else {}
    ok(st == 200 and set(got) == set(info) and set(got["index"]) == set(info["index"])
       and got["index"]["vectors"] + got["index"]["pending"] == info["chunks"] == got["chunks"],
       "retro info prints GET /v1/info's object", (got, info))
    st, doc, _, _ = s.req("GET", "/v1/documents/lex-a")
    cli = subprocess.run([RETRO, "get", "--data", s.data, "lex-a"], capture_output=True, text=True, timeout=60)
    ok(st == 200 and cli.returncode == 0 and json.loads(cli.stdout) == [doc],
       "retro get prints GET /v1/documents/{id}'s object", cli.stdout[:300])
    cli = subprocess.run([RETRO, "get", "--data", s.data, "lex-a", "no-such-doc"], capture_output=True, text=True, timeout=60)
    ok(cli.returncode == 1 and json.loads(cli.stdout)[1] is None and "no-such-doc: not found" in cli.stderr,
       "retro get of a missing id: null in its place, exit 1, named on stderr", (cli.returncode, cli.stderr))

def read_sse(s, body):
    c = s.connection(60)
    c.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    events = []
    if r.status == 200:
        buf = b""
        while True:
            piece = r.read1(65536) if hasattr(r, "read1") else r.read(1)
            if not piece:
                break
            buf += piece
        for block in buf.decode().split("\n\n"):
            if block.startswith("data: "):
                events.append(block[6:])
        if CONFORMANCE:
            CONFORMANCE.record("POST", "/v1/completions", r.status, r.getheader("Content-Type"), buf,
                               "application/json", json.dumps(body))
    c.close()
    return r.status, r.getheader("Content-Type"), events


def run_completions(s):
    long_prompt = doc_text(201, 50)  # about four 64-token chunks -> neighbours for the prompt
    body = {"prompt": long_prompt, "max_tokens": 70, "temperature": 0.8, "seed": 42, "k": 2}
    st, js, raw, _ = s.req("POST", "/v1/completions", body)
    ok(st == 200 and js["object"] == "text_completion" and js["choices"][0]["index"] == 0
       and js["usage"]["completion_tokens"] <= 70 and js["choices"][0]["finish_reason"] in ("length", "stop"),
       "POST /v1/completions (OpenAI shape)", raw[:500])
    # OpenAI's options at the values that change nothing (LangChain sends them on every call):
    # accepted, and the same completion comes back
    neutral = dict(body, frequency_penalty=0, presence_penalty=0.0, best_of=1, echo=False, logit_bias={},
                   suffix=None, n=1, user="u", stream_options={"include_usage": True})
    st, jsn, _, _ = s.req("POST", "/v1/completions", neutral)
    ok(st == 200 and jsn["choices"][0]["text"] == js["choices"][0]["text"],
       "neutral OpenAI options accepted, same completion", jsn)
    for mode in ("lexical", "hybrid"):
        st, jsm, _, _ = s.req("POST", "/v1/completions", dict(body, retrieval_mode=mode))
        cm = jsm["retro"]["chunks"] if st == 200 else []
        ok(st == 200 and len(cm) >= 2 and all(len(c["neighbors"]) >= 1 for c in cm),
           "completions with retrieval_mode %s: neighbours for every chunk" % mode, jsm)
    chunks = js["retro"]["chunks"] if js else []
    ok(len(chunks) >= 2 and all(len(c["neighbors"]) >= 1 for c in chunks), "retro: neighbours for every chunk",
       chunks[:1])
    nb_ok = True
    for c in chunks:
        for nb in c["neighbors"]:
            st2, ch, _, _ = s.req("GET", "/v1/chunks/%d" % nb["chunk_id"])
            nb_ok &= st2 == 200 and ch["text"] == nb["text"] and ch["doc_id"] == nb["doc_id"]
    ok(nb_ok, "reported neighbours are stored chunks with their text and document")
    st, js2, _, _ = s.req("POST", "/v1/completions", body)
    ok(st == 200 and js2["choices"][0]["text"] == js["choices"][0]["text"], "same seed -> same text")
    st, js3, _, _ = s.req("POST", "/v1/completions", dict(body, seed=43))
    diag("seed 42 vs 43 texts differ: %s" % (js3["choices"][0]["text"] != js["choices"][0]["text"]))
    st, js4, _, _ = s.req("POST", "/v1/completions", dict(body, max_tokens=5))
    ok(st == 200 and js4["usage"]["completion_tokens"] <= 5, "max_tokens bounds the completion")
    st, js5, _, _ = s.req("POST", "/v1/completions", dict(body, exclude_docs=["long-1"], max_tokens=3))
    ok(st == 200 and all(nb["doc_id"] != "long-1" for c in js5["retro"]["chunks"] for nb in c["neighbors"]),
       "exclude_docs honoured in retrieval")
    st, jsi, _, _ = s.req("POST", "/v1/completions", dict(body, include_docs=["doc-2"], max_tokens=3))
    nbs = [nb["doc_id"] for c in jsi["retro"]["chunks"] for nb in c["neighbors"]] if st == 200 else None
    ok(nbs and set(nbs) == {"doc-2"}, "include_docs honoured in retrieval: every neighbour from that document",
       nbs or jsi)
    st, jsf, _, _ = s.req("POST", "/v1/completions", dict(body, filter={"n": [1, 2]}, max_tokens=3))
    nbs = [nb["doc_id"] for c in jsf["retro"]["chunks"] for nb in c["neighbors"]] if st == 200 else None
    ok(nbs and set(nbs) <= {"doc-1", "doc-2"}, "filter honoured in retrieval", nbs or jsf)
    st, jsf, _, _ = s.req("POST", "/v1/completions",
                          dict(body, filter={"$or": [{"n": 1}, {"n": {"$gt": 1.5, "$lt": 2.5}}]}, max_tokens=3))
    nbs = [nb["doc_id"] for c in jsf["retro"]["chunks"] for nb in c["neighbors"]] if st == 200 else None
    ok(nbs and set(nbs) <= {"doc-1", "doc-2"}, "a filter with $or and bounds honoured in retrieval", nbs or jsf)
    st, js6, _, _ = s.req("POST", "/v1/completions", dict(body, retrieval=False, max_tokens=3))
    ok(st == 200 and js6["retro"]["retrieval"] is False and all(not c["neighbors"] for c in js6["retro"]["chunks"]),
       "retrieval: false uses no neighbours", js6 and js6["retro"])
    st, js7, _, _ = s.req("POST", "/v1/completions", dict(body, logprobs=2, max_tokens=4))
    lp = js7["choices"][0]["logprobs"] if js7 else None
    ok(st == 200 and lp and len(lp["token_logprobs"]) == js7["usage"]["completion_tokens"]
       and len(lp["top_logprobs"][0]) <= 2, "logprobs", lp)
    # stop: cut at a piece of the text the same seed produced
    text = js["choices"][0]["text"]
    cut = text[len(text) // 2:len(text) // 2 + 3]
    if cut.strip() and "\ufffd" not in cut:
        st, js8, _, _ = s.req("POST", "/v1/completions", dict(body, stop=[cut]))
        ok(st == 200 and js8["choices"][0]["finish_reason"] == "stop" and cut not in js8["choices"][0]["text"]
           and text.startswith(js8["choices"][0]["text"]), "stop sequence ends the text before it", (cut, js8))
    else:
        ok(True, "stop sequence (no usable cut in this text) # SKIP")
    # streamed: same shape, same text, ends with [DONE]
    st, ctype, events = read_sse(s, dict(body, stream=True))
    ok(st == 200 and ctype.startswith("text/event-stream") and events and events[-1] == "[DONE]",
       "stream: text/event-stream ending data: [DONE]", events[-2:])
    objs = [json.loads(e) for e in events[:-1]]
    streamed = "".join(o["choices"][0]["text"] for o in objs)
    ok(streamed == js["choices"][0]["text"], "stream: joined pieces equal the whole completion")
    ok(all(o["object"] == "text_completion" for o in objs) and objs[-1]["choices"][0]["finish_reason"] is not None
       and any("retro" in o and o["retro"].get("chunks") for o in objs), "stream: chunks in the same shape, with neighbours")
    # disconnect mid-stream: generation is cancelled and the server keeps serving
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    c.request("POST", "/v1/completions", body=json.dumps(dict(body, stream=True, max_tokens=400)),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read1(100)
    c.sock.close()
    c.close()
    time.sleep(0.5)
    ok(healthy(s), "client disconnect mid-stream: server keeps serving")


def list_pages(s, query):
    """Every page of GET /v1/documents?<query>, following next_after."""
    pages, after = [], 0
    while after is not None and len(pages) < 1000:
        st, js, _, _ = s.req("GET", "/v1/documents?%s&after=%d" % (query, after))
        if st != 200:
            return pages, st
        pages.append(js)
        after = js["next_after"]
    return pages, 200


def run_listing_with_text(s, seen):
    # --- ?with_text=true: the corpus read back over HTTP ----------------------
    pages, st = list_pages(s, "limit=7&with_text=true")
    docs = [d for p in pages for d in p["documents"]]
    ok(st == 200 and [d["doc_num"] for d in docs] == [d["doc_num"] for d in seen]
       and all(d["metadata"] == o["metadata"] and d["first_chunk"] == o["first_chunk"] for d, o in zip(docs, seen)),
       "with_text pages list the same documents as without, in the same pages", (st, len(docs), len(seen)))
    same = []
    for d in docs:
        st, one, _, _ = s.req("GET", "/v1/documents/" + urllib.parse.quote(d["id"], safe=""))
        same.append(st == 200 and one["text"] == d["text"] and one["n_tokens"] == d["n_tokens"])
    ok(docs and all(same), "each listed text and n_tokens equals GET /v1/documents/{id}'s (%d documents)" % len(docs),
       same.count(False))
    st, js, _, _ = s.req("GET", "/v1/documents?limit=3&with_text=false")
    ok(st == 200 and js["documents"] and all("text" not in d and "n_tokens" not in d for d in js["documents"]),
       "with_text=false: no text", js)
    st, js, _, _ = s.req("GET", "/v1/documents?limit=3&with_text")
    ok(st == 200 and all("text" in d for d in js["documents"]), "?with_text alone asks for texts", js)
    st, js, _, _ = s.req("GET", "/v1/documents?with_text=maybe")
    ok(st == 400 and "with_text" in js["error"]["message"], "with_text=maybe -> 400 naming it", (st, js))


def run_listing_and_page(s):
    # --- GET /v1/documents: cursor pagination by doc_num ---------------------
    seen, after, pages = [], 0, 0
    while after is not None and pages < 100:
        st, js, _, _ = s.req("GET", "/v1/documents?limit=7&after=%d" % after)
        if st != 200:
            break
        ok(len(js["documents"]) <= 7, "a page holds at most limit documents", len(js["documents"]))
        seen += js["documents"]
        after = js["next_after"]
        ok(after is None or after == js["documents"][-1]["doc_num"],
           "next_after is the last doc_num of a full page", js)
        pages += 1
    st, info, _, _ = s.req("GET", "/v1/info")
    nums = [d["doc_num"] for d in seen]
    ok(st == 200 and after is None and len(seen) == info["documents"] and nums == sorted(set(nums)),
       "paging to the end lists every document once, in doc_num order (%d in %d pages)" % (len(seen), pages),
       (len(seen), info.get("documents")))
    doc = seen[0]
    st, one, _, _ = s.req("GET", "/v1/documents/" + urllib.parse.quote(doc["id"], safe=""))
    ok(st == 200 and one["doc_num"] == doc["doc_num"] and one["n_chunks"] == doc["n_chunks"]
       and one["chunk_ids"][0] == doc["first_chunk"] and one["metadata"] == doc["metadata"],
       "a listed document matches GET /v1/documents/{id}", (doc, one))
    run_listing_with_text(s, seen)
    run_docs_get(s, seen)
    st, js, _, _ = s.req("GET", "/v1/documents")
    ok(st == 200 and len(js["documents"]) == min(50, len(seen)), "limit defaults to 50")
    st, js, _, _ = s.req("GET", "/v1/documents?after=%d" % nums[-1])
    ok(st == 200 and js == {"documents": [], "next_after": None}, "after the last doc_num: empty page", js)
    st, js, _, _ = s.req("GET", "/v1/documents?limit=1000&after=18446744073709551615")
    ok(st == 200 and js["documents"] == [], "after = 2^64-1: empty page", js)
    for q, word in [("limit=0", "limit"), ("limit=1001", "limit"), ("limit=-1", "limit"), ("limit=abc", "limit"),
                    ("limit=", "limit"), ("after=x", "after"), ("after=-3", "after"),
                    ("after=18446744073709551616", "after"), ("limit=2&limit=3", "limit"),
                    ("wait=true", "wait"), ("cursor=3", "cursor")]:
        st, js, _, _ = s.req("GET", "/v1/documents?" + q)
        ok(st == 400 and js and word in js["error"]["message"], "GET /v1/documents?%s -> 400 naming %s" % (q, word), (st, js))
    st, js, _, r = s.req("PUT", "/v1/documents")
    ok(st == 405 and r.getheader("Allow") == "GET, HEAD, POST", "PUT /v1/documents -> 405 Allow: GET, HEAD, POST",
       (st, r.getheader("Allow")))

    # --- the web playground at / ---------------------------------------------
    st, _, page, r = s.req("GET", "/")
    ok(st == 200 and r.getheader("Content-Type").startswith("text/html") and r.getheader("Content-Encoding") is None
       and page.startswith(b"<!doctype html>") and b"retrod playground" in page,
       "GET / serves the page (plain without Accept-Encoding)", (st, r.getheaders()))
    ok(b"<script src" not in page and b"https://" not in page and b"http://" not in page,
       "the page loads nothing from elsewhere")
    csp = r.getheader("Content-Security-Policy") or ""
    own = ["'sha256-%s'" % base64.b64encode(hashlib.sha256(body).digest()).decode()
           for tag in (b"script", b"style") for body in re.findall(b"<%s>(.*?)</%s>" % (tag, tag), page, re.S)]
    ok(csp.startswith("default-src 'none';") and "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp
       and len(own) == 2 and all(h in csp for h in own) and "unsafe" not in csp
       and r.getheader("X-Frame-Options") == "DENY" and r.getheader("X-Content-Type-Options") == "nosniff"
       and r.getheader("Referrer-Policy") == "no-referrer",
       "GET /: a Content-Security-Policy allowing the page's own script and style by hash, no framing",
       (csp, own))
    for ae in ("gzip", "deflate, gzip;q=0.5", "br, *"):
        st, _, gz, r = s.req("GET", "/", headers={"Accept-Encoding": ae})
        ok(st == 200 and r.getheader("Content-Encoding") == "gzip" and gzip.decompress(gz) == page
           and len(gz) < len(page) / 2 and r.getheader("Vary") == "Accept-Encoding",
           "GET / with Accept-Encoding: %s -> the same page gzip-compressed (%d of %d bytes)" % (ae, len(gz), len(page)))
    for ae in ("gzip;q=0", "identity", "br"):
        st, _, body, r = s.req("GET", "/", headers={"Accept-Encoding": ae})
        ok(st == 200 and r.getheader("Content-Encoding") is None and body == page,
           "GET / with Accept-Encoding: %s -> plain" % ae)
    st, _, body, r = s.req("HEAD", "/")
    ok(st == 200 and body == b"", "HEAD /")
    st, js, _, _ = s.req("POST", "/", body="{}")
    ok(st == 405, "POST / -> 405")


def run_docs_get(s, seen):
    # --- POST /v1/documents/get: many documents by id, in one read ---------
    ids = [seen[2]["id"], "get/none", seen[0]["id"]]
    st, js, _, _ = s.req("POST", "/v1/documents/get", {"ids": ids})
    singles = [s.req("GET", "/v1/documents/" + urllib.parse.quote(i, safe=""))[1] for i in (ids[0], ids[2])]
    ok(st == 200 and js["documents"] == singles and js["not_found"] == ["get/none"],
       "documents/get: the documents found, in the order asked, each as GET /v1/documents/{id}; not_found",
       (st, js.get("not_found") if js else js))
    st, js, _, _ = s.req("POST", "/v1/documents/get", {"ids": ids[:1], "with_text": False})
    want = {k: v for k, v in singles[0].items() if k != "text"}
    ok(st == 200 and js["documents"] == [want], "documents/get with_text false: the same without the text", js)
    st, js, _, _ = s.req("POST", "/v1/documents/get", {"ids": ["get/none"], "with_text": None})
    ok(st == 200 and js == {"documents": [], "not_found": ["get/none"]}, "documents/get: none found", js)
    for body, word, status in [({}, "ids", 400), ({"ids": []}, "ids", None), ({"ids": "a"}, "ids", 400),
                               ({"ids": ["a", "b", "a"]}, "given twice", 400), ({"ids": [""]}, "ids", None),
                               ({"ids": ["x%d" % i for i in range(1001)]}, "ids", None),
                               ({"ids": ["a"], "with_text": "yes"}, "with_text", 400),
                               ({"ids": ["a"], "filter": {"a": 1}}, "filter", 400)]:
        st, js, _, _ = s.req("POST", "/v1/documents/get", body)
        ok((st == status if status else 400 <= st < 500) and js and word in js["error"]["message"],
           "documents/get %s -> %s naming %s" % (json.dumps(body)[:60], status or "4xx", word), (st, js))
    st, js, _, r = s.req("GET", "/v1/documents/get")
    ok(st == 405 and r.getheader("Allow") == "POST", "GET /v1/documents/get -> 405 (a document named get is %67et)",
       (st, r.getheader("Allow")))
    st, js, _, _ = s.req("GET", "/v1/documents/%67et")
    ok(st == 404, "GET /v1/documents/%67et: the document named get (none here)", (st, js))


def torch_relevances(query, texts):
    """The reranker's relevances by PyTorch (model/train/rerank_train.py) on
    the test models' weights: sigmoid of its logits."""
    sys.path.insert(0, os.path.join(HERE, "..", "..", "model", "train"))
    import torch
    from rerank_train import CrossEncoder, batch, pair_ids
    from tokref import ByteBPE
    d = os.path.join(MODELS, "reranker")
    m = CrossEncoder.load(d).eval()
    bpe = ByteBPE(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"))
    bos, eos, pad = bpe.token_id("<s>"), bpe.token_id("</s>"), bpe.token_id("<pad>")
    seqs = [pair_ids(bpe.encode(query), bpe.encode(t), bos, eos, m.enc.max_tokens) for t in texts]
    with torch.no_grad():
        return [float(x) for x in torch.sigmoid(m(*batch(seqs, pad, "cpu")))]


def metric_value(s, name):
    """The integer value of metric name in s's /metrics, None when absent."""
    st, _, data, _ = s.req("GET", "/metrics")
    m = re.search(r"^%s (\d+)" % re.escape(name), data.decode(), re.M) if st == 200 else None
    return int(m.group(1)) if m else None


def run_rerank(s):
    """POST /v1/rerank against PyTorch on the same weights; a search's
    rerank reorders exactly the mode's best N chunks by the same relevances;
    bad input."""
    def search(**body):
        body.setdefault("with_text", True)
        st, js, _, _ = s.req("POST", "/v1/search", body)
        return st, js
    q = "quokka " + doc_text(3)
    texts = [doc_text(i, 12) for i in range(6)] + ["caf\u00e9 \u4e2d\u6587 " + doc_text(9, 200)]
    pairs0 = metric_value(s, "retro_rerank_pairs_total")
    st, js, _, _ = s.req("POST", "/v1/rerank", {"query": q, "documents": texts, "return_documents": True})
    ok(st == 200 and js["model"] == "reranker" and len(js["results"]) == len(texts), "rerank: one result a document",
       js)
    res = js["results"] if st == 200 else []
    want = torch_relevances(q, texts)
    worst = max((abs(r["relevance_score"] - want[r["index"]]) for r in res), default=1)
    ok(worst <= 1e-5, "rerank: relevances = sigmoid of PyTorch's scores on the same weights", worst)
    ok([r["index"] for r in res] == sorted(range(len(texts)), key=lambda i: -want[i]),
       "rerank: best first", [r["index"] for r in res])
    ok(all(r["document"]["text"] == texts[r["index"]] for r in res), "rerank: return_documents repeats each text")
    ok(metric_value(s, "retro_rerank_pairs_total") == pairs0 + len(texts), "rerank: counted in /metrics",
       (pairs0, metric_value(s, "retro_rerank_pairs_total")))
    st, js, _, _ = s.req("POST", "/v1/rerank", {"query": q, "documents": texts, "top_n": 2, "model": "any"})
    ok(st == 200 and [r["index"] for r in js["results"]] == [r["index"] for r in res[:2]]
       and "document" not in js["results"][0], "rerank: top_n keeps the best, without texts by default", js)
    for body, code, word in [({"documents": ["a"]}, 400, "query"), ({"query": " ", "documents": ["a"]}, 422, "query"),
                             ({"query": "a", "documents": "a"}, 400, "documents"),
                             ({"query": "a", "documents": []}, 422, "documents"),
                             ({"query": "a", "documents": ["a", 3]}, 400, "documents[1]"),
                             ({"query": "a", "documents": ["a"] * 1001}, 422, "documents"),
                             ({"query": "a", "documents": ["a"], "top_n": 0}, 422, "top_n"),
                             ({"query": "a", "documents": ["a"], "rank_fields": ["x"]}, 400, "rank_fields")]:
        st, js, _, _ = s.req("POST", "/v1/rerank", body)
        ok(st == code and word in js["error"]["message"], "rerank: %s refused, naming it" % word, (st, js))

    # a search's rerank: the mode's best N, reordered by /v1/rerank's relevances
    # hybrid with 30 is deeper than its lists of 20: both lists must go as deep
    # as the window (40 documents share a word, so the lexical list is long)
    zeb = [{"id": "rr-zeb-%d" % i, "text": "zebulon " + doc_text(500 + i, 10)} for i in range(40)]
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": zeb})
    ok(st == 200 and js["errors"] == 0, "rerank: 40 documents sharing a word stored", js)
    for mode, n, text in (("hybrid", 12, q), ("hybrid", 30, "zebulon"), ("dense", 12, q), ("lexical", 12, q)):
        st1, plain = search(query=text, mode=mode, k=n)
        st2, rr = search(query=text, mode=mode, k=5, rerank=n)
        if not ok(st1 == 200 and st2 == 200, "%s search with rerank %d answers" % (mode, n), (st1, plain, st2, rr)):
            continue
        ph, hits = plain["results"], rr["results"]
        st, rel, _, _ = s.req("POST", "/v1/rerank", {"query": text, "documents": [h["text"] for h in ph]})
        order = [ph[r["index"]]["chunk_id"] for r in rel["results"]]
        ok([h["chunk_id"] for h in hits] == order[:5], "%s rerank: the best 5 of the plain %d by relevance" % (mode, n),
           ([h["chunk_id"] for h in hits], order))
        score = {ph[r["index"]]["chunk_id"]: r["relevance_score"] for r in rel["results"]}
        rank = {h["chunk_id"]: (i + 1, h["score"]) for i, h in enumerate(ph)}
        ok(all(abs(h["score"] - score[h["chunk_id"]]) < 1e-6 and
               (h["retrieval_rank"], h["retrieval_score"]) == rank[h["chunk_id"]] for h in hits),
           "%s rerank %d: score = relevance, retrieval_score/rank = the plain search's" % (mode, n), hits[:2])
    st, js = search(query=q, rerank=True, k=3, expand=1)
    ok(st == 200 and len(js["results"]) == 3 and all(h["retrieval_rank"] <= 30 and "context" in h
                                                     for h in js["results"]),
       "rerank true: the best 3 of 30, with expand", js)
    # with group_by: the reranked window grouped, documents by their most relevant chunk
    st1, plain = search(query="zebulon", k=12)
    st2, grouped = search(query="zebulon", k=3, rerank=12, group_by="document", group_size=2)
    if ok(st1 == 200 and st2 == 200, "rerank with group_by answers", (st1, plain, st2, grouped)):
        ph = plain["results"]
        st, rel, _, _ = s.req("POST", "/v1/rerank", {"query": "zebulon", "documents": [h["text"] for h in ph]})
        want = {}
        for r in rel["results"]:
            h = ph[r["index"]]
            if h["doc_id"] in want or len(want) < 3:
                want.setdefault(h["doc_id"], [])
                if len(want[h["doc_id"]]) < 2:
                    want[h["doc_id"]].append(h["chunk_id"])
        got = [(g["doc_id"], [h["chunk_id"] for h in g["hits"]]) for g in grouped["groups"]]
        ok(got == list(want.items()) and all(g["score"] == g["hits"][0]["score"] for g in grouped["groups"]),
           "rerank with group_by: the plain 12 by relevance, grouped", (got, want))
    st, js = search(queries=[q, "alpha bravo"], rerank=10, k=2)
    ok(st == 200 and all(len(b["results"]) == 2 and b["results"][0]["score"] >= b["results"][1]["score"]
                         for b in js["batch"]), "rerank: each query of a batch", js)
    for body, code, word in [({"vector": [0.1] * 32, "rerank": True}, 400, "rerank"),
                             ({"query": q, "k": 10, "rerank": 5}, 422, "rerank"),
                             ({"query": q, "rerank": 201}, 422, "rerank"),
                             ({"query": q, "rerank": "yes"}, 400, "rerank")]:
        st, js = search(**body)
        ok(st == code and word in js["error"]["message"], "search: rerank %s refused" % json.dumps(body)[:60],
           (st, js))


def run_phrase(s, search):
    """A hybrid search whose whole text (five words or more) stands word for
    word in the lexical list's first chunk puts that chunk first, its fused
    score raised by 1; shorter, reordered or partial phrases do not."""
    text = "Wombat, quasar zeppelin marmalade tuba!"  # one chunk of the tests' byte-level tokenizer
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": [{"id": "phrase-src", "text": text}]})
    ok(st == 200 and js["errors"] == 0, "phrase: the source document stored", js)
    pinned0 = metric_value(s, "retro_search_exact_phrases_total")
    st, js = search(query="wombat QUASAR zeppelin, marmalade tuba", k=5)
    hits = js["results"] if st == 200 else []
    ok(metric_value(s, "retro_search_exact_phrases_total") == pinned0 + 1, "phrase: counted in /metrics",
       (pinned0, metric_value(s, "retro_search_exact_phrases_total")))
    ok(hits and hits[0]["doc_id"] == "phrase-src" and hits[0]["lexical_rank"] == 1
       and 1 < hits[0]["score"] < 1 + 2 / 61 and all(h["score"] < 1 for h in hits[1:])
       and [h["exact_phrase"] for h in hits] == [True] + [False] * (len(hits) - 1),
       "phrase: the quoted chunk first, its fused score + 1, marked exact_phrase", hits[:2])
    for q in ("quasar zeppelin marmalade tuba", "zeppelin wombat quasar marmalade tuba",
              "wombat quasar zeppelin marmalade tub"):
        st, js = search(query=q, k=5)
        ok(st == 200 and all(h["score"] < 1 and h["exact_phrase"] is False for h in js["results"]),
           "phrase: no boost for %r" % q, js)
    st, js = search(query="wombat QUASAR zeppelin, marmalade tuba", mode="lexical", k=3)
    ok(st == 200 and hits and js["results"][0]["chunk_id"] == hits[0]["chunk_id"]
       and abs(js["results"][0]["score"] - hits[0]["lexical_score"]) < 1e-4,
       "phrase: lexical mode unchanged (its score is the BM25 the hybrid hit reports)", js)
    # the chunk that holds the phrase need not be BM25's first: another with
    # the same words, out of order and more often, outranks it there
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": [
        {"id": "phrase-mix", "text": "tuba marmalade zeppelin quasar wombat " * 3}]})
    ok(st == 200 and js["errors"] == 0, "phrase: a document with the words out of order stored", js)
    st, js = search(query="wombat QUASAR zeppelin, marmalade tuba", k=5)
    hits = js["results"] if st == 200 else []
    ok(hits and hits[0]["doc_id"] == "phrase-src" and hits[0]["lexical_rank"] == 2 and hits[0]["exact_phrase"]
       and any(h["doc_id"] == "phrase-mix" and h["lexical_rank"] == 1 and not h["exact_phrase"] for h in hits),
       "phrase: BM25's second chunk holds it, BM25's first does not: the second first", hits[:3])
    s.req("DELETE", "/v1/documents/phrase-mix")
    s.req("DELETE", "/v1/documents/phrase-src")
    # a phrase that a chunk boundary cuts (here inside "tuba": the chunks are
    # ~80 bytes of the tests' tokenizer) is found from the chunk it starts in
    text = doc_text(811, 5) + " the Wombat, quasar zeppelin marmalade tuba! " + doc_text(812, 5)
    st, js, _, _ = s.req("POST", "/v1/documents", {"documents": [{"id": "phrase-cut", "text": text}]})
    ok(st == 200 and js["errors"] == 0, "phrase: the cut document stored", js)
    st, js = search(query="wombat quasar zeppelin marmalade tuba", k=5)
    hits = js["results"] if st == 200 else []
    first = s.req("GET", "/v1/chunks/%d" % hits[0]["chunk_id"])[1] if hits else {}
    ok(hits and hits[0]["doc_id"] == "phrase-cut" and 1 < hits[0]["score"] < 1 + 2 / 61 and hits[0]["exact_phrase"]
       and "tuba" not in first.get("text", "tuba"),
       "phrase: cut by a chunk boundary, still first, + 1", (hits[:1], first))
    s.req("DELETE", "/v1/documents/phrase-cut")


def run_with_vectors(s, search):
    """with_vectors: each hit carries its stored embedding. By vector, its
    inner product with the query is the hit's score; in a hybrid search,
    with the query text's embedding, the hit's dense score."""
    q = [((i * 7) % 11 - 5) / 10 for i in range(32)]
    st, js = search(vector=q, k=5, with_vectors=True)
    hits = js["results"] if st == 200 else []
    ok(hits and all(len(h["vector"]) == 32 and abs(sum(a * b for a, b in zip(q, h["vector"])) - h["score"]) < 1e-5
                    for h in hits), "with_vectors: each hit's vector, its inner product with the query the score",
       hits[:1])
    text = "quokka " + doc_text(3)
    st, emb, _, _ = s.req("POST", "/v1/embeddings", {"input": text})
    qv = emb["data"][0]["embedding"] if st == 200 else []
    st, js = search(query=text, k=5, with_vectors=True)
    hits = js["results"] if st == 200 else []
    ok(hits and qv and all(abs(sum(a * b for a, b in zip(qv, h["vector"])) - h["dense_score"]) < 1e-4 for h in hits),
       "with_vectors: hybrid hits' vectors give their dense scores with the query's embedding", hits[:1])
    st, js = search(query=text, k=3)
    ok(st == 200 and all("vector" not in h for h in js["results"]), "with_vectors: none by default", js)
    st, js = search(queries=["a b"] * 11, k=1000, with_vectors=True)
    ok(st == 422 and "with_vectors" in js["error"]["message"] and "11000" in js["error"]["message"],
       "with_vectors: more than 10,000 vectors in one answer refused, naming the count", js)
    st, js = search(query=text, with_vectors="yes")
    ok(st == 400 and "with_vectors" in js["error"]["message"], "with_vectors: not a boolean is refused", js)


def run_no_reranker():
    """A server started with --reranker none answers reranking with 503,
    saying how to get one, and searches without it as before."""
    s = Server("norerank", "--reranker", "none")
    try:
        st, js, _, _ = s.req("POST", "/v1/rerank", {"query": "a", "documents": ["a"]})
        ok(st == 503 and "--reranker" in js["error"]["message"], "no reranker: /v1/rerank is a 503", (st, js))
        st, js, _, _ = s.req("POST", "/v1/search", {"query": "a", "rerank": True})
        ok(st == 503 and "reranker" in js["error"]["message"], "no reranker: a search's rerank is a 503", (st, js))
        st, js, _, _ = s.req("POST", "/v1/search", {"query": "a"})
        ok(st == 200, "no reranker: searches answer", (st, js))
        st, js, _, _ = s.req("GET", "/v1/info")
        ok(st == 200 and js.get("reranker") is None, "no reranker: /v1/info says none", js)
        st, js, _, _ = s.req("GET", "/v1/models")
        ok(st == 200 and [m["kind"] for m in js["data"]] == ["embeddings", "completions"],
           "no reranker: /v1/models lists none", js)
    finally:
        s.stop()


def run_include_direct():
    """include_docs is scored from the named documents' stored vectors: on
    an approximate index (IVF probing one list of 8) it still returns their
    exact best chunks, with the scores the vectors give."""
    s = Server("incl-ivf", "--index", "IVF8,Flat")
    try:
        docs = [{"id": "iv-%d" % i, "text": " ".join(doc_text(i * 31 + j, 12) for j in range(40))}
                for i in range(12)]
        st, js, _, _ = s.req("POST", "/v1/documents", {"documents": docs})
        ok(st == 200 and js["errors"] == 0, "IVF server: documents stored", js)
        st, info, _, _ = s.req("GET", "/v1/info")
        ix = info["index"]
        diag("IVF server: %s, %d vectors, trained %s, %d pending" % (ix["factory"], ix["vectors"], ix["trained"],
                                                                     ix["pending"]))
        vecs = {}
        got_docs = subprocess.run([RETRO, "get", "--data", s.data, "--vectors", "--no-text", "iv-3", "iv-8"],
                                  capture_output=True, text=True, timeout=60)
        for d in json.loads(got_docs.stdout):
            for j, v in enumerate(d["vectors"]):
                vecs[d["chunk_ids"][j]] = v
        st, js, _, _ = s.req("POST", "/v1/embeddings", {"input": doc_text(5 * 31 + 3, 12), "input_type": "query"})
        q = js["data"][0]["embedding"]
        want = sorted(vecs, key=lambda c: -sum(a * b for a, b in zip(q, vecs[c])))[:10]
        body = {"vector": q, "k": 10, "nprobe": 1, "with_text": False}

        def scans():
            text = s.req("GET", "/metrics")[2].decode()
            return float(re.search(r"^retro_index_scans_total (\S+)$", text, re.M).group(1))
        before = scans()
        st, js, _, _ = s.req("POST", "/v1/search", dict(body, include_docs=["iv-3", "iv-8", "iv-3"]))
        got = [(h["chunk_id"], h["score"]) for h in js["results"]] if st == 200 else js
        ok(st == 200 and [c for c, _ in got] == want and
           all(abs(sc - sum(a * b for a, b in zip(q, vecs[c]))) < 1e-4 for c, sc in got),
           "include_docs on IVF with nprobe 1: the exact best chunks of those documents, once each, "
           "scored from their vectors", (got, want))
        between = scans()
        st, js, _, _ = s.req("POST", "/v1/search", dict(body, exclude_docs=[
            "iv-%d" % i for i in range(12) if i not in (3, 8)]))
        ok(before == between < scans(), "include_docs read the documents' vectors, not the index "
           "(retro_index_scans_total unchanged; a search with exclude_docs scans it)", (before, between, scans()))
        diag("the same through the index: %d of the exact 10" %
             len({h["chunk_id"] for h in js.get("results", [])} & set(want)))
        others = ["iv-%d" % i for i in range(12) if i not in (3, 8)]
        for mode in ("lexical", "hybrid"):
            text = {"query": doc_text(3 * 31 + 5, 12), "k": 20, "mode": mode, "with_text": False}
            a = s.req("POST", "/v1/search", dict(text, include_docs=["iv-8", "iv-3"]))[1]["results"]
            b = s.req("POST", "/v1/search", dict(text, exclude_docs=others))[1]["results"]
            ok(len(a) > 10 and [(h["chunk_id"], round(h["score"], 5)) for h in a] ==
               [(h["chunk_id"], round(h["score"], 5)) for h in b],
               "include_docs, %s: the same hits and scores as excluding every other document (%d)" % (mode, len(a)),
               ([h["chunk_id"] for h in a], [h["chunk_id"] for h in b]))
    finally:
        s.stop()


def run_text_page_budget():
    """A page listed with texts ends after the document that takes its texts
    to 4 MiB, whatever limit asked (a server with the default --max-body, so
    that a 4.4 MB document can be sent)."""
    s = Server("textpage")
    try:
        big = " ".join("word%d" % (i % 977) for i in range(560000))
        st, js, _, _ = s.req("POST", "/v1/documents", {"documents": [
            {"id": "list/big", "text": big, "metadata": {"big": True}}, {"id": "list/after-big", "text": "small one"}]},
            timeout=280)  # 50,000 chunks to embed: seconds here, minutes under ThreadSanitizer
        ok(st == 200 and all(r["status"] == "ok" for r in js["results"]), "a 4.4 MB document stored", (st, js))
        st, one, _, _ = s.req("GET", "/v1/documents/list%2Fbig")
        st2, js, _, _ = s.req("GET", "/v1/documents?limit=100&with_text=true&after=%d" % (one["doc_num"] - 1))
        ok(st2 == 200 and [d["id"] for d in js["documents"]] == ["list/big"] and js["documents"][0]["text"] == big
           and js["next_after"] == one["doc_num"], "a page whose texts reach 4 MiB ends there, next_after set",
           (st2, [d["id"] for d in js.get("documents", [])], js.get("next_after")))
        st, js, _, _ = s.req("GET", "/v1/documents?limit=100&with_text=true&after=%d" % one["doc_num"])
        ok(st == 200 and [d["id"] for d in js["documents"]] == ["list/after-big"], "the next page goes on after it",
           (st, js))
        st, js, _, _ = s.req("GET", "/v1/documents?limit=100&after=%d" % (one["doc_num"] - 1))
        ok(st == 200 and [d["id"] for d in js["documents"]] == ["list/big", "list/after-big"],
           "without texts the same page holds both", (st, js))
    finally:
        s.stop()


def run_no_webui():
    s = Server("nowebui", "--no-webui", "--api-key", "k")
    try:
        st, js, _, _ = s.req("GET", "/")
        ok(st == 404 and js and "--no-webui" in js["error"]["message"], "--no-webui: GET / -> 404", (st, js))
        st, _, _, _ = s.req("GET", "/health")
        ok(st == 200, "--no-webui: the API still answers")
        st, _, _, _ = s.req("GET", "/v1/documents")
        ok(st == 401, "GET /v1/documents needs a key")
        st, js, _, r = preflight(s, "/v1/search", "POST")
        ok(st == 403 and "cross-origin requests are off" in js["error"]["message"]
           and r.getheader("Access-Control-Allow-Origin") is None and not r.msg.get_all("Vary"),
           "without --cors-origins: a preflight gets a 403 saying so", (st, js))
        st, _, _, r = s.req("GET", "/health", headers={"Origin": CORS_APP})
        ok(st == 200 and r.getheader("Access-Control-Allow-Origin") is None,
           "without --cors-origins: no Access-Control-Allow-Origin", r.getheaders())
    finally:
        s.stop()


CORS_APP = "http://app.test:3000"


def serve_refused(*args):
    """`retro serve ARGS` on a fresh data directory: its exit status and stderr."""
    out = subprocess.run([RETRO, "serve", "--data", os.path.join(WORK, "refused"), "--port", "0"] + list(args),
                         capture_output=True, timeout=30)
    return out.returncode, out.stderr.decode(errors="replace")


def preflight(s, path, method, origin=CORS_APP, headers="content-type,authorization"):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return s.req("OPTIONS", path, headers=h)


def run_cors():
    """--cors-origins: which pages on other origins may call the API from a
    browser. Preflights answered without a key; every answer to an allowed
    origin carries Access-Control-Allow-Origin; the list is checked at start."""
    for args, want in [(["--cors-origins", "*"], "needs --api-key"),
                       (["--cors-origins", "http://a.test/"], "'http://a.test/' is not an origin"),
                       (["--cors-origins", "a.test"], "'a.test' is not an origin"),
                       (["--cors-origins", "null"], "'null' is not accepted"),
                       (["--cors-origins", "ftp://a.test"], "'ftp://a.test' is not an origin"),
                       (["--cors-origins", "http://a.test:123456"], "is not an origin"),
                       (["--cors-origins", "http://a.test,,http://b.test"], "'' is not an origin"),
                       (["--cors-origins", "*, http://a.test", "--api-key", "k"], "* stands alone")]:
        rc, err = serve_refused(*args)
        ok(rc == 2 and want in err, "serve %s: exit 2 naming the problem" % " ".join(args), (rc, err))
    s = Server("cors", "--api-key", "rw-secret", "--cors-origins", CORS_APP + ", https://b.test, http://[::1]:8000")
    try:
        st, _, body, r = preflight(s, "/v1/search", "POST")
        ok(st == 204 and not body and r.getheader("Access-Control-Allow-Origin") == CORS_APP
           and r.getheader("Access-Control-Allow-Methods") == "POST"
           and "Authorization" in r.getheader("Access-Control-Allow-Headers", "")
           and r.getheader("Access-Control-Max-Age") == "600" and "Origin" in r.msg.get_all("Vary", []),
           "preflight from an allowed origin, without a key: 204 allowing POST, Authorization, Content-Type",
           (st, r.getheaders()))
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        c.request("OPTIONS", "/v1/search", headers={"Origin": CORS_APP, "Access-Control-Request-Method": "POST"})
        r = c.getresponse()
        r.read()
        c.request("POST", "/v1/search", body='{"query": "alpha", "k": 1}',
                  headers={"Origin": CORS_APP, "Content-Type": "application/json", "api-key": "rw-secret"})
        r2 = c.getresponse()
        r2.read()
        c.close()
        ok(r.status == 204 and (r.getheader("Connection") or "").lower() != "close" and r2.status == 200,
           "the preflight's connection stays open for the request that follows", (r.getheaders(), r2.status))
        st, _, _, r = preflight(s, "/v1/documents/x%20y", "PATCH", origin="http://[::1]:8000", headers=None)
        ok(st == 204 and r.getheader("Access-Control-Allow-Methods") == "GET, HEAD, PATCH, DELETE"
           and r.getheader("Access-Control-Allow-Origin") == "http://[::1]:8000",
           "preflight for a document: the path's methods", r.getheaders())
        for origin, method, hdrs, want in [
                ("http://evil.test", "POST", None, "'http://evil.test' is not in --cors-origins"),
                ("http://app.test:3001", "POST", None, "is not in --cors-origins"),
                ("HTTP://APP.TEST:3000", "POST", None, "is not in --cors-origins"),
                (CORS_APP, "DELETE", None, "DELETE is not allowed here (allowed: POST)"),
                (CORS_APP, "POST", "content-type, x-secret", "'x-secret' is not one this server reads")]:
            st, js, _, r = preflight(s, "/v1/search", method, origin, hdrs)
            ok(st == 403 and want in js["error"]["message"]
               and (origin != CORS_APP or r.getheader("Access-Control-Allow-Origin") == CORS_APP)
               and (origin == CORS_APP or r.getheader("Access-Control-Allow-Origin") is None),
               "preflight refused, naming why: %s %s %s" % (origin, method, hdrs or ""), (st, js, r.getheaders()))
        st, _, _, _ = preflight(s, "/v1/nothing", "POST")
        ok(st == 404, "preflight for a path that does not exist: 404", st)
        st, _, _, r = s.req("OPTIONS", "/v1/search")
        ok(st == 405 and r.getheader("Allow") == "POST", "OPTIONS that is not a preflight: 405 as before", st)
        key = {"Authorization": "Bearer rw-secret"}
        st, js, _, r = s.req("POST", "/v1/search", {"query": "alpha", "k": 1}, headers=dict(key, Origin="https://b.test"))
        ok(st == 200 and r.getheader("Access-Control-Allow-Origin") == "https://b.test"
           and "X-Request-Id" in r.getheader("Access-Control-Expose-Headers", "")
           and "Origin" in r.msg.get_all("Vary", []),
           "a search from an allowed origin: Access-Control-Allow-Origin, X-Request-Id exposed", r.getheaders())
        st, _, _, r = s.req("POST", "/v1/search", {"query": "alpha", "k": 1}, headers={"Origin": CORS_APP})
        ok(st == 401 and r.getheader("Access-Control-Allow-Origin") == CORS_APP
           and "WWW-Authenticate" in r.getheader("Access-Control-Expose-Headers", ""),
           "a 401 to an allowed origin is readable by its page", r.getheaders())
        st, _, _, r = s.req("GET", "/v1/info", headers=dict(key, Origin="http://evil.test"))
        ok(st == 200 and r.getheader("Access-Control-Allow-Origin") is None and "Origin" in r.msg.get_all("Vary", []),
           "another origin: answered as before, without Access-Control-Allow-Origin, Vary: Origin", r.getheaders())
        st, _, _, r = s.req("GET", "/v1/info", headers=key)
        ok(st == 200 and r.getheader("Access-Control-Allow-Origin") is None and "Origin" in r.msg.get_all("Vary", []),
           "no Origin: no Access-Control-Allow-Origin, Vary: Origin for caches", r.getheaders())
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        c.request("POST", "/v1/completions", body=json.dumps({"prompt": "alpha", "max_tokens": 2, "stream": True}),
                  headers=dict(key, Origin=CORS_APP, **{"Content-Type": "application/json"}))
        r = c.getresponse()
        data = r.read()
        c.close()
        ok(r.status == 200 and r.getheader("Access-Control-Allow-Origin") == CORS_APP and data.endswith(b"data: [DONE]\n\n"),
           "a streamed completion to an allowed origin carries Access-Control-Allow-Origin", (r.status, r.getheaders()))
    finally:
        s.stop()
    s = Server("cors-any", "--read-key", "ro", "--cors-origins", "*")
    try:
        st, _, _, r = preflight(s, "/v1/embeddings", "POST", origin="https://anywhere.test")
        ok(st == 204 and r.getheader("Access-Control-Allow-Origin") == "*" and not r.msg.get_all("Vary"),
           "--cors-origins '*' with a key: any origin, Access-Control-Allow-Origin: *", r.getheaders())
        st, _, _, r = s.req("GET", "/v1/info", headers={"Origin": "https://anywhere.test", "api-key": "ro"})
        ok(st == 200 and r.getheader("Access-Control-Allow-Origin") == "*", "and on answers", r.getheaders())
    finally:
        s.stop()


def run_query_prefix():
    """An encoder whose config.json has a query prefix: searches by text and
    input_type "query" embed behind it, plain embeddings do not, and the
    input-length check counts it."""
    enc = os.path.join(WORK, "enc-prefix")
    shutil.rmtree(enc, ignore_errors=True)
    shutil.copytree(os.path.join(MODELS, "encoder"), enc)
    cfg = json.load(open(os.path.join(enc, "config.json")))
    cfg["retro_query_prefix"] = "query: "
    json.dump(cfg, open(os.path.join(enc, "config.json"), "w"))
    s = Server("qprefix", "--encoder", enc)
    try:
        st, _, _, _ = s.req("POST", "/v1/documents?wait=true",
                            {"documents": [{"id": "p-%d" % i, "text": doc_text(i, 30)} for i in range(6)]})
        ok(st == 200, "query prefix: documents ingested", st)
        q = doc_text(3)
        vec = {}
        for name, body in (("plain", {"input": q}), ("query", {"input": q, "input_type": "query"}),
                           ("prefixed", {"input": "query: " + q})):
            st, js, _, _ = s.req("POST", "/v1/embeddings", body)
            vec[name] = js["data"][0]["embedding"] if st == 200 else None
        ok(vec["query"] is not None and vec["query"] == vec["prefixed"] and vec["query"] != vec["plain"],
           "query prefix: input_type query embeds behind the prefix, a plain input without it")
        st, by_text, _, _ = s.req("POST", "/v1/search", {"query": q, "mode": "dense", "k": 3, "with_text": False})
        st2, by_vec, _, _ = s.req("POST", "/v1/search", {"vector": vec["query"], "k": 3, "with_text": False})
        hits = lambda js: [(h["chunk_id"], round(h["score"], 5)) for h in js["results"]] if js else None
        ok(st == 200 and st2 == 200 and hits(by_text) == hits(by_vec),
           "query prefix: a search by text is the search by its prefixed vector", (hits(by_text), hits(by_vec)))
        # an input of exactly the encoder's limit fits as a document, not behind the prefix
        st, js, _, _ = s.req("POST", "/v1/embeddings", {"input": doc_text(0, 400)})
        m = re.search(r"limit of (\d+)", js["error"]["message"]) if st == 422 else None
        limit = int(m.group(1)) if m else 0
        words = ["a"] * limit
        while words and len(s.req("POST", "/tokenize", {"content": " ".join(words), "model": "encoder"})[1]["tokens"]) > limit:
            words.pop()
        text = " ".join(words)
        st, _, _, _ = s.req("POST", "/v1/embeddings", {"input": text})
        st2, js, _, _ = s.req("POST", "/v1/embeddings", {"input": text, "input_type": "query"})
        ok(limit > 0 and st == 200 and st2 == 422 and "query prefix" in js["error"]["message"],
           "query prefix: the length check counts the prefix of a query", (limit, st, st2, js))
    finally:
        s.stop()


def auth_server():
    return Server("auth", "--api-key", "rw-secret", "--read-key", "ro-secret")


def run_auth():
    s = auth_server()
    try:
        write_body = {"documents": [{"id": "auth-doc", "text": "auth text"}]}
        forms = [lambda k: {"Authorization": "Bearer " + k}, lambda k: {"api-key": k}]
        for fi, form in enumerate(forms):
            fname = ["Authorization: Bearer", "api-key"][fi]
            for key, read_want, write_want in [(None, 401, 401), ("wrong", 401, 401),
                                               ("ro-secret", 200, 403), ("rw-secret", 200, 200)]:
                h = form(key) if key else {}
                st_r, js, _, _ = s.req("GET", "/v1/info", headers=h)
                st_w, js2, _, _ = s.req("POST", "/v1/documents", write_body, headers=h)
                st_s, _, _, _ = s.req("POST", "/v1/search", {"query": "auth", "k": 1}, headers=h)
                st_d, _, _, _ = s.req("DELETE", "/v1/documents/none", headers=h)
                want_d = 404 if write_want == 200 else write_want
                ok(st_r == read_want and st_s == read_want and st_w == write_want and st_d == want_d,
                   "auth %s key=%s: read %d write %d" % (fname, key, read_want, write_want),
                   (st_r, st_s, st_w, st_d, js2))
        st, _, _, r = s.req("GET", "/v1/info", headers={"Authorization": "Bearer wrong"})
        ok(st == 401 and r.getheader("WWW-Authenticate"), "401 carries WWW-Authenticate")
        st, _, _, _ = s.req("GET", "/health")
        st2, _, _, _ = s.req("GET", "/openapi.json")
        st3, _, _, _ = s.req("GET", "/")
        ok(st == 200 and st2 == 200 and st3 == 200, "/health, /openapi.json and the page at / need no key")
        st, _, _, _ = s.req("GET", "/metrics")
        ok(st == 401, "/metrics needs a key")
        # the auth matrix as openapi.json states it (test_http checks it is
        # the route table's): no key, then the read-only key, on every operation
        _, spec, _, _ = s.req("GET", "/openapi.json")
        wrong = []
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                url, need = path.replace("{id}", "7"), op["x-retro-access"]
                body = {} if method == "post" else None
                st_none, _, _, _ = s.req(method.upper(), url, body)
                st_ro, _, _, _ = s.req(method.upper(), url, body, headers={"api-key": "ro-secret"})
                good = ((st_none == 401) == (need != "open") and
                        (st_ro == 403) == (need == "write") and st_ro != 401)
                if not good:
                    wrong.append((method, path, need, st_none, st_ro))
        ok(not wrong and len(spec["paths"]) >= 15,
           "every operation answers no key and the read-only key as its x-retro-access says", wrong)
        st, _, _, _ = s.req("GET", "/v1/models")
        st2, _, _, _ = s.req("GET", "/v1/models", headers={"api-key": "ro-secret"})
        ok(st == 401 and st2 == 200, "/v1/models needs a key, the read-only one will do", (st, st2))
    finally:
        s.stop()
    # configuration precedence: flag > environment > config file
    conf = os.path.join(WORK, "retro.conf")
    with open(conf, "w") as f:
        f.write("# test config\napi-key = from-file\nread_key = \"ro-file\"\nmax-body = 2048\n")
    env = dict(os.environ, RETRO_READ_KEY="ro-env")
    s = Server.__new__(Server)
    old = os.environ.copy()
    os.environ.update(env)
    try:
        s.__init__("auth", "--config", conf, "--max-body", "4096")
    finally:
        os.environ.clear()
        os.environ.update(old)
    try:
        st1, _, _, _ = s.req("GET", "/v1/info", headers={"api-key": "from-file"})
        st2, _, _, _ = s.req("GET", "/v1/info", headers={"api-key": "ro-file"})
        st3, _, _, _ = s.req("GET", "/v1/info", headers={"api-key": "ro-env"})
        st4, _, _, _ = s.req("POST", "/v1/search", {"query": "x" * 3000}, headers={"api-key": "from-file"})
        ok(st1 == 200 and st2 == 401 and st3 == 200 and st4 == 200,
           "config file < environment < flags", (st1, st2, st3, st4))
    finally:
        s.stop()


def run_busy():
    log = os.path.join(WORK, "busy.log")
    for f in (log, log + ".1"):
        if os.path.exists(f):
            os.remove(f)
    s = Server("busy", "--gen-slots", "1", "--gen-queue", "0", "--log", log, "--log-flush-ms", "60000",
               data=os.path.join(WORK, "main"))
    try:
        res = []
        lock = threading.Lock()

        def one():
            st, js, raw, r = s.req("POST", "/v1/completions",
                                   {"prompt": doc_text(1, 60), "max_tokens": 400, "temperature": 1.0})
            with lock:
                res.append((st, r.getheader("Retry-After")))
        ts = [threading.Thread(target=one) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        codes = sorted(r[0] for r in res)
        ok(codes.count(200) >= 1 and codes.count(429) >= 1 and set(codes) <= {200, 429}
           and all(ra == "1" for st, ra in res if st == 429), "full generation queue -> 429 with Retry-After", res)
        ok(healthy(s), "server fine after 429s")
        # SIGHUP reopens the log file (logrotate: rename, then HUP)
        os.rename(log, log + ".1")
        s.p.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        s.req("GET", "/v1/info")
        for _ in range(20):
            s.req("GET", "/v1/chunks/987654321")
    finally:
        s.stop()
    # --log-flush-ms 60000: only the reopen and the shutdown wrote the lines
    with open(log) as f:
        new = f.read()
    with open(log + ".1") as f:
        old = f.read()
    ok('path="/v1/info"' in new and "status=429" in old and "status=429" not in new,
       "SIGHUP writes the buffered lines to the old file and reopens", new[:300])
    lines = [l for l in new.splitlines() if 'path="/v1/chunks/987654321"' in l and "status=404" in l]
    ok(len(lines) == 20, "SIGTERM writes out every buffered request line", len(lines))


def run_client_gone():
    """A request whose client hangs up while it waits in the worker queue is
    never executed: the worker sees the closed socket and logs status 499."""
    s = Server("gone", "--workers", "1", data=os.path.join(WORK, "main"))
    try:
        heavy = {"input": [doc_text(i, 400) for i in range(256)], "truncate": True}
        small = json.dumps({"input": "the abandoned request"}).encode()
        raw = (b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(small)) + small
        seen = False
        for attempt in range(5):  # the abandoned request must still be queued when it hangs up
            t = threading.Thread(target=lambda: s.req("POST", "/v1/embeddings", heavy))
            t.start()
            time.sleep(0.05)
            sk = socket.create_connection(("127.0.0.1", s.port))
            sk.sendall(raw)
            time.sleep(0.02)
            sk.close()
            t.join()
            time.sleep(0.2)
            if any('path="/v1/embeddings"' in l and "status=499" in l for l in s.log):
                seen = True
                break
        ok(seen, "client gone while queued -> not executed, logged as 499",
           [l for l in s.log if "embeddings" in l][-4:])
        ok(healthy(s), "server fine after a client hung up")
    finally:
        s.stop()


def run_sequential_one_worker():
    """A client that sends each request once it has read the previous answer
    always finds the worker free, even with one worker and no queue (the
    worker counts as free once it hands its answer over; before, about 1 in
    150 such requests got a 429 here)."""
    s = Server("seq", "--workers", "1", "--queue", "0", "--gen-slots", "1", "--gen-queue", "0",
               data=os.path.join(WORK, "main"))
    try:
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        codes = collections.Counter()
        for i in range(500):
            c.request("POST", "/v1/embeddings", json.dumps({"input": "alpha beta %d" % i}),
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            codes[r.status] += 1
        for i in range(30):
            c.request("POST", "/v1/completions", json.dumps({"prompt": "alpha %d" % i, "max_tokens": 2}),
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            codes[r.status] += 1
        c.close()
        ok(codes == {200: 530}, "530 sequential requests, one worker and one generation slot, no queue -> all 200",
           dict(codes))
    finally:
        s.stop()


def run_search_placement():
    """--inline-search-floats: a search by vector on an index larger than it
    goes to the workers (so with the only worker busy and no queue it gets
    429); within it, it is answered on the HTTP thread (200 meanwhile)."""
    heavy = {"input": [doc_text(i, 400) for i in range(256)], "truncate": True}
    for limit, want in (("0", 429), ("1048576", 200)):
        s = Server("place" + limit, "--workers", "1", "--queue", "0", "--inline-search-floats", limit,
                   data=os.path.join(WORK, "main"))
        try:
            st, info, _, _ = s.req("GET", "/v1/info")
            vec = {"vector": [0.1] * info["encoder"]["dim"], "k": 3, "with_text": False}
            got = []
            for attempt in range(5):  # the search must arrive while the worker is busy
                t = threading.Thread(target=lambda: s.req("POST", "/v1/embeddings", heavy))
                t.start()
                time.sleep(0.05)
                got.append(s.req("POST", "/v1/search", vec)[0])
                t.join()
                if want == 429 and want in got:
                    break
            # inline: all five answered while the worker was busy; on the workers: a 429
            ok(want in got and set(got) <= ({200, 429} if want == 429 else {200}),
               "search by vector with --inline-search-floats %s while the only worker is busy -> %d"
               % (limit, want), got)
            ok(s.req("POST", "/v1/search", vec)[0] == 200, "... and 200 once it is free")
        finally:
            s.stop()


def tgkill(pid, tid, sig):
    """Sends sig to one thread of another process (tgkill(2))."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(234, pid, tid, sig)  # SYS_tgkill on x86-64


def unblocked_threads(pid, sig):
    """The threads of pid that do not block sig (/proc: SigBlk)."""
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            blk = int(next(l for l in f if l.startswith("SigBlk:")).split()[1], 16)
        if not blk & (1 << (sig - 1)):
            out.append(int(tid))
    return out


def run_signal_to_any_thread():
    """A signal the kernel gives to a thread other than the one waiting for
    it (threads started before the server blocked its signals, such as
    OpenBLAS's) is passed on, not taken with its default action: SIGHUP
    reopens the log and the server goes on; SIGTERM drains, exit 0."""
    if os.uname().machine != "x86_64":
        ok(True, "signals to any thread # SKIP tgkill's number is x86-64's")
        return
    s = Server("sigthreads")
    try:
        tids = unblocked_threads(s.p.pid, signal.SIGHUP)
        for n, tid in enumerate(tids):  # one at a time: two pending SIGHUPs would be one
            tgkill(s.p.pid, tid, signal.SIGHUP)
            deadline = time.time() + 10
            while time.time() < deadline and sum("SIGHUP: log reopened" in l for l in s.log) <= n:
                time.sleep(0.05)
        ok(tids and s.p.poll() is None and healthy(s)
           and sum("SIGHUP: log reopened" in l for l in s.log) == len(tids),
           "SIGHUP to each of %d threads that do not block it: each passed on, the server goes on" % len(tids),
           (tids, s.p.poll()))
        tids = unblocked_threads(s.p.pid, signal.SIGTERM) if s.p.poll() is None else []
        if tids:
            tgkill(s.p.pid, tids[0], signal.SIGTERM)
        rc = s.p.wait(60) if tids else None
        ok(rc == 0 and s.logged(lambda l: "SIGTERM: draining" in l),
           "SIGTERM to such a thread: drained, exit 0", rc)
    finally:
        s.stop()


def run_sigterm_ingest():
    s = Server("term")
    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(ci):
        i = 0
        while not stop.is_set():
            docs = [{"id": "t%d-%d" % (ci, i + j), "text": doc_text(i + j, 80)} for j in range(10)]
            i += 10
            try:
                st, js, _, _ = s.req("POST", "/v1/documents", {"documents": docs}, timeout=60)
            except (OSError, http.client.HTTPException):
                return
            if st == 200:
                with lock:
                    acked.extend(r["id"] for r in js["results"] if r["status"] == "ok")
    ts = [threading.Thread(target=client, args=(ci,)) for ci in range(3)]
    for t in ts:
        t.start()
    time.sleep(2.0)
    s.p.send_signal(signal.SIGTERM)
    rc = s.p.wait(120)
    stop.set()
    for t in ts:
        t.join()
    ok(rc == 0, "SIGTERM during ingest: exit 0 after draining", rc)
    ok(len(acked) > 0, "some documents were acknowledged before SIGTERM (%d)" % len(acked))
    s2 = Server("term")
    try:
        missing = [d for d in acked if s2.req("GET", "/v1/documents/" + d)[0] != 200]
        ok(not missing, "no acknowledged document lost across SIGTERM", missing[:10])
        st, js, _, _ = s2.req("POST", "/v1/search", {"query": doc_text(0, 80), "k": 1})
        ok(st == 200 and js["results"], "index usable after restart")
    finally:
        s2.stop()


if __name__ == "__main__":
    sys.exit(main())
