// js_types.mts - compiled by js_types.mjs with tsc --strict against
// clients/js/retrod.d.mts, never run: every method of the client used as
// documented must type-check, and each line after @ts-expect-error is a
// misuse that must not (tsc fails on an expected error that does not come).
import { Client, RetrodError } from './retrod.mjs';
import type { DocumentView, Group, Hit, IngestResult, Completion, Info } from './retrod.mjs';

const c = new Client({ url: 'http://127.0.0.1:8080', apiKey: 'key', timeoutMs: 5000 });
new Client();

const up: IngestResult = await c.upsert([{ id: 'a', text: 'x', metadata: { lang: 'en' } }], { force: true });
const statuses: ('ok' | 'unchanged' | 'error')[] = up.results.map((r) => r.status);
await c.upsertNdjson(new Set([{ id: 'b', text: 'y' }]));
const d: DocumentView = await c.get('a');
const chunkIds: number[] = d.chunk_ids;
const many = await c.getMany(['a', 'b'], { withText: false });
const missing: string[] = many.not_found;
const patched: DocumentView = await c.patchMetadata('a', { lang: null, year: 2024 });
const updated: number = (await c.updateMany(['a'], { x: 1 })).updated + (await c.updateWhere({ lang: 'en' }, { x: 2 })).updated;
const deleted: boolean = (await c.delete('a')).deleted;
const gone: number = (await c.deleteMany(['b'])).deleted + (await c.deleteWhere({ year: { $lt: 2000 } })).deleted;
for await (const doc of c.documents({ filter: { lang: 'en' }, pageSize: 10, withText: true })) {
  const first: number = doc.first_chunk;
  const text: string | undefined = doc.text;
}

const hits: Hit[] = await c.search('how do I open a file?', { k: 5, mode: 'hybrid', filter: { lang: 'en' }, with_vectors: true });
const top: number | undefined = hits[0]?.vector?.[0];
const phrase: boolean | undefined = hits[0]?.exact_phrase;
const byVector: Hit[] = await c.search({ vector: new Float32Array(256) }, { k: 3, nprobe: 32 });
const like: Hit[] = await c.search({ chunkId: 7 }, { exclude_docs: ['a'] });
const reranked: Hit[] = await c.search('q', { rerank: 20, expand: 1 });
const groups: Group[] = await c.search('q', { group_by: 'document', group_size: 2 });
const groupHits: Hit[] = groups[0].hits;
const batch: Hit[][] = await c.searchBatch(['a', 'b'], { k: 1 });
const groupedBatch: Group[][] = await c.searchBatch(['a'], { group_by: 'document' });
const one: number[] = await c.embed('text', { inputType: 'query' });
const several: number[][] = await c.embed(['a', 'b']);
const rel: number = (await c.rerank('q', ['a', 'b'], { topN: 1 }))[0].relevance_score;

const out: Completion = await c.complete('The with statement', { max_tokens: 8, temperature: 0, stop: ['\n'], retrieval_mode: 'lexical' });
const used: string[] | undefined = out.retro?.chunks.flatMap((ch) => ch.neighbors.map((n) => n.doc_id));
for await (const event of c.stream('List comprehensions', { max_tokens: 16 })) {
  const piece: string = event.choices[0].text;
  const total: number | undefined = event.usage?.total_tokens;
}
const info: Info = await c.info();
const dim: number = info.encoder.dim;
const ok: boolean = (await c.health()) && (await c.ready());
const bk: string = (await c.backup()).path;

try {
  await c.get('none');
} catch (e) {
  if (e instanceof RetrodError) {
    const status: number = e.status;
    const code: string = e.code;
    const retry: number | null = e.retryAfter;
    const id: string | null = e.requestId;
    const said: string = e.serverMessage;
  }
}

// misuses: each must be a type error
// @ts-expect-error: a plain search answers hits, not groups
const wrong1: Group[] = await c.search('q', { k: 3 });
// @ts-expect-error: with group_by it answers groups, not hits
const wrong2: Hit[] = await c.search('q', { group_by: 'document' });
// @ts-expect-error: no such mode
await c.search('q', { mode: 'semantic' });
// @ts-expect-error: a vector of numbers, not a string
await c.search({ vector: 'abc' });
// @ts-expect-error: a text, a vector or a chunk id
await c.search(42);
// @ts-expect-error: a document needs its text
await c.upsert([{ id: 'a' }]);
// @ts-expect-error: several texts give several vectors
const wrong3: number[] = await c.embed(['a', 'b']);
// @ts-expect-error: a misspelt option
await c.complete('p', { max_tokns: 8 });
// @ts-expect-error: k is a number
await c.search('q', { k: '3' });
// @ts-expect-error: no such method
await c.fetchDocument('a');

export { statuses, chunkIds, missing, patched, updated, deleted, gone, top, phrase, byVector, like, reranked, groupHits,
  batch, groupedBatch, one, several, rel, used, dim, ok, bk, wrong1, wrong2, wrong3 };
