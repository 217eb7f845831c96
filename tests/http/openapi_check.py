"""openapi_check.py - checks real responses against the server's own OpenAPI
document (GET /openapi.json), so that a client generated from it reads what
the server sends. For each response of a documented operation: its status
is one the operation lists, its Content-Type one that status lists, and a
JSON body validates against that status's schema (python3-jsonschema); so
does each event of a text/event-stream answer, against the JSON schema of
the same status (OpenAI's stream chunks share it), and the stream ends with
data: [DONE].

The schemas are checked more strictly than OpenAPI requires: an object
schema that lists properties and says nothing of others accepts no others
here, so a field the server sends and the document does not name fails
(open objects, such as metadata, list no properties and stay open).
OpenAPI 3.0's `nullable` becomes a JSON Schema type union, and its boolean
exclusiveMinimum/exclusiveMaximum the numbers JSON Schema takes.

    check = OpenAPICheck(spec)          # the parsed /openapi.json
    check.record(method, path, status, content_type, body_bytes)
    check.problems                      # {(method, template): [text, ...]}
"""
import copy
import json
import re

import jsonschema


def _strict(schema):
    """The schema with `nullable` as a type union and closed objects."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    s = {k: _strict(v) for k, v in schema.items()}
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    for bound in ("Minimum", "Maximum"):  # 3.0's boolean form -> a number, as JSON Schema has it
        if s.get("exclusive" + bound) is True:
            s["exclusive" + bound] = s.pop(bound.lower())
        elif s.get("exclusive" + bound) is False:
            del s["exclusive" + bound]
    if "properties" in s and "additionalProperties" not in s and not any(
            k in s for k in ("allOf", "anyOf", "oneOf")):
        s["additionalProperties"] = False
    return s


# Answered by libmicrohttpd itself, before any route sees the request (431:
# the request's headers exceed its memory pool): not the document's to list.
TRANSPORT_STATUSES = {431}


class OpenAPICheck:
    def __init__(self, spec):
        self.spec = spec
        self.components = _strict(copy.deepcopy(spec.get("components", {})))
        self.ops = []  # (method, template, regex, operation)
        for template, item in spec["paths"].items():
            rx = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
            for method, op in item.items():
                if isinstance(op, dict) and "responses" in op:
                    self.ops.append((method.upper(), template, rx, op))
        self.seen = {}      # (method, template) -> set of statuses
        self.problems = {}  # (method, template) -> [text]
        self.count = 0

    def operation(self, method, path):
        """The operation that answers method + path; a concrete path
        (/v1/documents/delete) is matched before templated ones, as OpenAPI
        says, and is then no {id} of them."""
        path = path.split("?", 1)[0]
        concrete = any(template == path for _, template, _, _ in self.ops)
        for m, template, rx, op in self.ops:
            if m == method and rx.match(path) and (not concrete or template == path):
                return template, op
        return None, None

    def _resolve(self, obj):
        """A response object, following a local $ref ("#/components/...")."""
        while isinstance(obj, dict) and "$ref" in obj:
            node = self.spec
            for part in obj["$ref"].lstrip("#/").split("/"):
                node = node[part]
            obj = node
        return obj

    def _problem(self, key, text):
        self.problems.setdefault(key, []).append(text)

    def record(self, method, path, status, content_type, body, request_type=None, request_body=None):
        """One response, and the request it answers: undocumented operations
        (unknown paths, 405s) are not the document's to describe and are
        passed over. A request the server accepted (2xx) must be one the
        document's requestBody schema accepts."""
        template, op = self.operation(method, path)
        if op is None:
            return
        key = (method, template)
        self.count += 1
        self.seen.setdefault(key, set()).add(status)
        if status in TRANSPORT_STATUSES:
            return
        if 200 <= status < 300 and request_body is not None:
            self._check_request(key, method, path, op, request_type, request_body)
        responses = op["responses"]
        resp = self._resolve(responses.get(str(status), responses.get("default")))
        where = "%s %s -> %d" % (method, path[:80], status)
        if resp is None:
            self._problem(key, "%s: status not documented (documented: %s)" % (where, ", ".join(responses)))
            return
        content = resp.get("content")
        if not content:
            if body:
                self._problem(key, "%s: a body where the document gives none" % where)
            return
        mime = (content_type or "").split(";", 1)[0].strip().lower()
        if mime not in content:
            self._problem(key, "%s: Content-Type %r not documented (documented: %s)"
                          % (where, content_type, ", ".join(content)))
            return
        if mime == "text/event-stream" and "application/json" in content:
            self._check_events(key, where, content["application/json"].get("schema"), body)
            return
        self._check_json(key, where, content, mime, body)

    def _check_json(self, key, where, content, mime, body):
        """body against content[mime]'s schema, when that is JSON."""
        schema = content[mime].get("schema")
        if mime != "application/json" or schema is None:
            return
        try:
            doc = json.loads(body)
        except ValueError as e:
            self._problem(key, "%s: the body is not JSON (%s)" % (where, e))
            return
        self._validate(key, where, schema, doc)

    def _check_events(self, key, where, schema, body):
        """A stream's events: each `data:` line but the final [DONE] is one
        object of the operation's JSON schema (OpenAI's chunks share it)."""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        events = [line[5:].strip() for line in text.split("\n") if line.startswith("data:")]
        if not events or events[-1] != "[DONE]":
            self._problem(key, "%s: the stream does not end with data: [DONE]" % where)
        for i, data in enumerate(e for e in events if e != "[DONE]"):
            try:
                doc = json.loads(data)
            except ValueError:
                self._problem(key, "%s: event %d is not JSON: %r" % (where, i, data[:80]))
                continue
            if schema is not None:
                self._validate(key, "%s, event %d" % (where, i), schema, doc)

    def _validate(self, key, where, schema, doc):
        full = dict(_strict(schema), components=self.components)
        errors = sorted(jsonschema.Draft7Validator(full).iter_errors(doc), key=lambda e: list(e.path))
        for e in errors[:3]:
            at = "/".join(str(p) for p in e.path) or "(the body)"
            self._problem(key, "%s: at %s: %s" % (where, at, e.message[:300]))

    def _check_request(self, key, method, path, op, request_type, request_body):
        where = "%s %s, accepted request" % (method, path[:80])
        mime = (request_type or "").split(";", 1)[0].strip().lower()
        content = self._resolve(op.get("requestBody", {})).get("content", {})
        if mime not in content:
            self._problem(key, "%s: request Content-Type %r not documented (documented: %s)"
                          % (where, request_type, ", ".join(content) or "no body"))
            return
        self._check_json(key, where, content, mime, request_body)

    def summary(self):
        """(operations seen, operations documented)"""
        return len(self.seen), len(self.ops)
