// retrod.mjs - a JavaScript client for retrod's own HTTP API: one ES module
// with no dependencies, for Node 18+ and browsers (any runtime with fetch;
// from a web page on another origin the server needs --cors-origins). The
// OpenAI-compatible routes also work with OpenAI's own clients; this one
// covers what they do not: documents, search with its modes and filters,
// metadata patches and bulk updates, deletes by filter, backups, and the
// completions' `retro` attribution. The same methods as the Python client
// (clients/python/retrod.py), in camelCase. TypeScript declarations:
// retrod.d.mts beside it.
//
//   import { Client, RetrodError } from './retrod.mjs';
//   const c = new Client({ url: 'http://127.0.0.1:8080', apiKey: '...' });
//   await c.upsert([{ id: 'a', text: '...', metadata: { lang: 'en' } }]);
//   for (const hit of await c.search('how do I open a file?', { k: 5, filter: { lang: 'en' } }))
//     console.log(hit.score, hit.doc_id);
//   for await (const event of c.stream('The with statement', { max_tokens: 64 }))
//     process.stdout.write(event.choices[0].text);
//
// A 4xx or 5xx answer rejects with RetrodError: .status, .code (the
// server's, e.g. "EDIM"), .serverMessage (the server's message; .message is
// "status code: message"), .requestId and .retryAfter (seconds, or null).

export class RetrodError extends Error {
  constructor(status, code, message, requestId = null, retryAfter = null) {
    super(`${status} ${code}: ${message}`);
    this.name = 'RetrodError';
    Object.assign(this, { status, code, requestId, retryAfter });
    this.serverMessage = message;
  }
}

// Ids that are the names of routes under /v1/documents/ (POST .../get,
// .../delete, .../update) go with their first letter percent-encoded, which
// the server decodes: GET /v1/documents/%67et is the document "get".
const ROUTE_NAMES = new Set(['get', 'delete', 'update']);
const quote = (id) =>
  ROUTE_NAMES.has(id) ? '%' + id.charCodeAt(0).toString(16).toUpperCase() + id.slice(1) : encodeURIComponent(id);

export class Client {
  constructor({ url = 'http://127.0.0.1:8080', apiKey = null, timeoutMs = 120000, fetch: f = globalThis.fetch } = {}) {
    this.url = url.replace(/\/+$/, '');
    this.apiKey = apiKey;
    this.timeoutMs = timeoutMs;
    this.fetch = f;
  }

  // ---- transport ------------------------------------------------------------

  async open(method, path, { body, ctype = 'application/json', query } = {}) {
    let url = this.url + path;
    if (query) {
      const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => [k, String(v)]));
      if ([...q].length) url += '?' + q;
    }
    const headers = { Accept: 'application/json' };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    const init = { method, headers, signal: AbortSignal.timeout(this.timeoutMs) };
    if (body !== undefined) {
      headers['Content-Type'] = ctype;
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
    }
    const r = await this.fetch(url, init);
    if (!r.ok) throw await errorOf(r);
    return r;
  }

  async json(method, path, options) {
    const text = await (await this.open(method, path, options)).text();
    return text ? JSON.parse(text) : null;
  }

  // ---- the server -----------------------------------------------------------

  /** true when the server answers /health. */
  async health() { return (await this.json('GET', '/health')) !== null; }

  /** true once models and indexes are loaded (false while loading or draining). */
  async ready() {
    try { await this.json('GET', '/ready'); return true; } catch (e) { if (e.status === 503) return false; throw e; }
  }

  /** GET /v1/info: models, dimensions, index type, counts. */
  info() { return this.json('GET', '/v1/info'); }

  // ---- documents ------------------------------------------------------------

  /** Stores documents ({id, text, metadata?}) in one request, checked as a whole. */
  upsert(documents, { force = false } = {}) {
    return this.json('POST', '/v1/documents', { body: { documents: [...documents] }, query: force ? { force: true } : null });
  }

  /** Sends documents (any iterable) as NDJSON, one line each. */
  upsertNdjson(documents, { force = false } = {}) {
    let lines = '';
    for (const d of documents) lines += JSON.stringify(d) + '\n';
    return this.json('POST', '/v1/documents', { body: lines, ctype: 'application/x-ndjson', query: force ? { force: true } : null });
  }

  /** One document with its text, chunk ids and metadata. */
  get(id) { return this.json('GET', '/v1/documents/' + quote(id)); }

  /** Up to 1,000 documents by id, read in one transaction: {documents (found, in the order asked), not_found}. */
  getMany(ids, { withText = true } = {}) { return this.json('POST', '/v1/documents/get', { body: { ids: [...ids], with_text: withText } }); }

  /** Merges patch into the document's metadata (null removes a key); the text is not embedded again. */
  patchMetadata(id, patch) {
    return this.json('PATCH', '/v1/documents/' + quote(id), { body: { metadata: patch }, ctype: 'application/merge-patch+json' });
  }

  /** The same patch into each listed document, in one transaction: {updated, not_found}. */
  updateMany(ids, patch) { return this.json('POST', '/v1/documents/update', { body: { ids: [...ids], metadata: patch } }); }

  /** The same patch into every document that passes the filter, in one transaction: {updated}. */
  updateWhere(filter, patch) { return this.json('POST', '/v1/documents/update', { body: { filter, metadata: patch } }); }

  /** Deletes one document (RetrodError 404 when there is none). */
  delete(id) { return this.json('DELETE', '/v1/documents/' + quote(id)); }

  /** Deletes the listed documents in one transaction: {deleted, not_found}. */
  deleteMany(ids) { return this.json('POST', '/v1/documents/delete', { body: { ids: [...ids] } }); }

  /** Deletes every document whose metadata passes the filter, in one transaction: {deleted}. */
  deleteWhere(filter) { return this.json('POST', '/v1/documents/delete', { body: { filter } }); }

  /** Every document in doc_num order, page by page; those passing filter when given; withText: each with its text and n_tokens. */
  async *documents({ filter = null, pageSize = 100, withText = false } = {}) {
    let after = 0;
    while (after !== null) {
      const query = { limit: pageSize, after, filter: filter === null ? null : JSON.stringify(filter), with_text: withText ? 'true' : null };
      const page = await this.json('GET', '/v1/documents', { query });
      yield* page.documents;
      after = page.next_after;
    }
  }

  // ---- search ---------------------------------------------------------------

  /**
   * The nearest chunks of a text, or of { vector } or { chunkId } ("more like
   * this") given as the first argument: the results list (the groups list
   * with group_by: 'document'). options: k, mode, alpha, filter,
   * exclude_docs, include_docs, with_text, group_by, group_size, expand,
   * nprobe, ef_search, rerank (true, or how many of the best chunks the
   * cross-encoder reorders; score is then its relevance).
   */
  async search(what, options = {}) {
    const body = { k: 10, ...options };
    if (typeof what === 'string') body.query = what;
    else if (what && what.vector) body.vector = [...what.vector];
    else if (what && what.chunkId) body.chunk_id = what.chunkId;
    else throw new TypeError('search: give a text, { vector } or { chunkId }');
    const js = await this.json('POST', '/v1/search', { body });
    return js.groups ?? js.results;
  }

  /** Several texts in one request: one result list per query. */
  async searchBatch(queries, options = {}) {
    const js = await this.json('POST', '/v1/search', { body: { k: 10, ...options, queries: [...queries] } });
    return js.batch.map((b) => b.groups ?? b.results);
  }

  /** Embeddings with the server's encoder: a vector for a string, a list of them for a list. */
  async embed(input, { inputType } = {}) {
    const one = typeof input === 'string';
    const body = { input: one ? [input] : [...input] };
    if (inputType) body.input_type = inputType;
    const js = await this.json('POST', '/v1/embeddings', { body });
    const vecs = js.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
    return one ? vecs[0] : vecs;
  }

  /** The reranker's relevance of each text of documents to query, best first: [{ index, relevance_score }]. */
  async rerank(query, documents, { topN } = {}) {
    const body = { query, documents: [...documents] };
    if (topN !== undefined) body.top_n = topN;
    return (await this.json('POST', '/v1/rerank', { body })).results;
  }

  // ---- generation -----------------------------------------------------------

  /** A RETRO completion, whole: choices and retro (the neighbours of each chunk). */
  complete(prompt, options = {}) { return this.json('POST', '/v1/completions', { body: { max_tokens: 64, ...options, prompt } }); }

  /** A streamed completion: each event's object (text in choices[0].text; the last has usage and retro). */
  async *stream(prompt, options = {}) {
    const r = await this.open('POST', '/v1/completions', { body: { max_tokens: 64, ...options, prompt, stream: true } });
    const decoder = new TextDecoder();
    let buf = '';
    for await (const part of r.body) {
      buf += decoder.decode(part, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (!line.startsWith('data: ')) continue;
        if (line === 'data: [DONE]') return;
        yield JSON.parse(line.slice(6));
      }
    }
  }

  // ---- operations -----------------------------------------------------------

  /** A backup into the server's --backup-dir: {backup, path, seconds, manifest}. */
  backup() { return this.json('POST', '/v1/admin/backup', { body: {} }); }
}

async function errorOf(r) {
  const text = await r.text();
  let code = '', message = text.slice(0, 500);
  try {
    const err = JSON.parse(text).error;
    code = err.code ?? '';
    message = err.message ?? '';
  } catch { /* not JSON: the text as it came */ }
  const retry = r.headers.get('Retry-After');
  return new RetrodError(r.status, code, message, r.headers.get('X-Request-Id'), retry && /^\d+$/.test(retry) ? Number(retry) : null);
}
