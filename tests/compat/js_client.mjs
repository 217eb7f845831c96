// js_client.mjs - every method of clients/js/retrod.mjs against a real server
// (js_client.sh starts it: keys js-rw and js-ro), each answer checked against
// what the server holds, errors as RetrodError with the server's status,
// code and message. TAP on stdout.
import { Client, RetrodError } from '../../clients/js/retrod.mjs';
import { ok, attempt, done } from '../http/tap.mjs';
import fs from 'node:fs';

const url = process.env.RETRO_URL;
const c = new Client({ url, apiKey: 'js-rw' });
const ro = new Client({ url, apiKey: 'js-ro' });
const text = (i) => `document ${i} about ${['kettles', 'harbours', 'lanterns', 'orchards', 'glaciers', 'violins'][i]} ` +
  Array.from({ length: 12 }, (_, j) => `w${(i * 37 + j * 11) % 97}`).join(' ');
const docs = Array.from({ length: 6 }, (_, i) => ({ id: `js/${i}`, text: text(i), metadata: { n: i, lang: i % 2 ? 'en' : 'de' } }));
async function rejects(p, status, part) {
  try { await p; } catch (e) { return e instanceof RetrodError && e.status === status && e.serverMessage.includes(part) ? e : null; }
  return null;
}

await attempt('client', async () => {
  ok(await c.health() && await c.ready() && (await c.info()).documents === 0, 'health, ready and info');
  let js = await c.upsert(docs.slice(0, 4));
  ok(js.documents === 4 && js.errors === 0, 'upsert: four documents', js);
  js = await c.upsertNdjson(docs.slice(3));
  ok(js.results.map((r) => r.status).join() === 'unchanged,ok,ok', 'upsertNdjson (one unchanged)', js);
  const d2 = await c.get('js/2');
  ok(d2.text === docs[2].text && d2.metadata.n === 2, 'get', d2);
  const many = await c.getMany(['js/3', 'js/x', 'js/2']);
  ok(many.documents.map((x) => x.id).join() === 'js/3,js/2' && JSON.stringify(many.documents[1]) === JSON.stringify(d2)
    && many.not_found.join() === 'js/x', 'getMany: in the order asked, with not_found', many.not_found);
  ok(!('text' in (await c.getMany(['js/2'], { withText: false })).documents[0]), 'getMany without texts');
  let hits = await c.search(docs[2].text, { k: 3, mode: 'dense' });
  ok(hits[0].doc_id === 'js/2', 'search by text', hits.map((h) => h.doc_id));
  hits = await c.search(docs[2].text, { k: 10, filter: { n: { $gte: 4 } }, with_text: false });
  ok(hits.length && hits.every((h) => ['js/4', 'js/5'].includes(h.doc_id)), 'search with a filter', hits.map((h) => h.doc_id));
  const vec = await c.embed(docs[1].text);
  ok(vec.length === (await c.info()).encoder.dim && (await c.search({ vector: vec }, { k: 1 }))[0].doc_id === 'js/1', 'embed, then search by the vector');
  const cid = (await c.get('js/1')).chunk_ids[0];
  const like = await c.search({ chunkId: cid }, { k: 3, with_text: false });
  ok(like.length && !like.some((h) => h.chunk_id === cid), 'search by a stored chunk', like);
  const plain = await c.search(docs[2].text, { k: 8, mode: 'lexical' });
  const rel = await c.rerank(docs[2].text, plain.map((h) => h.text), { topN: 3 });
  hits = await c.search(docs[2].text, { k: 3, mode: 'lexical', rerank: 8, with_text: false });
  ok(rel.length === 3 && hits.map((h) => h.chunk_id).join() === rel.map((r) => plain[r.index].chunk_id).join(),
    'rerank: its relevances order a search\'s rerank', { rel, hits });
  const groups = await c.search(docs[0].text, { k: 2, group_by: 'document', group_size: 1 });
  ok(groups.length === 2 && groups.every((g) => g.hits), 'search grouped by document', groups);
  const batch = await c.searchBatch([docs[0].text, docs[5].text], { k: 1, mode: 'dense' });
  ok(batch.map((b) => b[0].doc_id).join() === 'js/0,js/5', 'searchBatch', batch);
  const now = await c.patchMetadata('js/2', { lang: null, reviewed: true });
  ok(JSON.stringify(now.metadata) === '{"n":2,"reviewed":true}' && now.text === undefined, 'patchMetadata', now);
  js = await c.updateMany(['js/0', 'js/x'], { batch: 1 });
  ok(js.updated === 1 && js.not_found.join() === 'js/x' && (await c.get('js/0')).metadata.batch === 1, 'updateMany', js);
  js = await c.updateWhere({ n: { $gte: 4 } }, { late: true });
  ok(js.updated === 2, 'updateWhere', js);
  const listed = [];
  for await (const x of c.documents({ filter: { lang: 'de' }, pageSize: 1 })) listed.push(x.id);
  ok(listed.join() === 'js/0,js/4', 'documents: every page of a filtered listing', listed);
  const texts = [];
  for await (const x of c.documents({ withText: true, pageSize: 4 })) texts.push(x);
  ok(texts.length === 6 && (await Promise.all(texts.map(async (x) => (await c.get(x.id)).text === x.text))).every(Boolean),
    'documents with withText: the stored texts', texts.length);
  const out = await c.complete('The with statement', { max_tokens: 8, temperature: 0 });
  ok(out.choices[0].text && out.retro.chunks, 'complete, with the retro attribution', out.choices[0]);
  const events = [];
  for await (const e of c.stream('The with statement', { max_tokens: 8, temperature: 0 })) events.push(e);
  ok(events.map((e) => e.choices[0].text).join('') === out.choices[0].text && events.at(-1).usage,
    'stream: the same text, event by event, usage last', events.length);
  const bk = await c.backup();
  ok(fs.existsSync(`${bk.path}/manifest.json`) && bk.manifest.documents === 6, 'backup', bk.backup);
  ok((await c.delete('js/5')).deleted === true, 'delete');
  js = await c.deleteMany(['js/4', 'js/none']);
  ok(js.deleted === 1 && js.not_found.join() === 'js/none', 'deleteMany', js);
  ok((await c.deleteWhere({ lang: 'en' })).deleted === 2, 'deleteWhere (js/1, js/3)');
  const left = [];
  for await (const x of c.documents()) left.push(x.id);
  ok(left.sort().join() === 'js/0,js/2', 'what is left', left);
  // ids that are the names of routes under /v1/documents/
  const named = ['get', 'delete', 'update'];
  await c.upsert(named.map((id) => ({ id, text: `the document named ${id}` })));
  const got = await Promise.all(named.map((id) => c.get(id)));
  const patched = await Promise.all(named.map((id) => c.patchMetadata(id, { named: id })));
  const gone = await Promise.all(named.map((id) => c.delete(id)));
  ok(got.every((d, i) => d.id === named[i] && d.text === `the document named ${named[i]}`)
    && patched.every((d, i) => d.metadata.named === named[i]) && gone.every((r) => r.deleted === true),
    'get, patchMetadata and delete of documents named get, delete and update', { got, patched, gone });
  const e = await rejects(c.get('js/none'), 404, 'js/none');
  ok(e && e.code && e.requestId, 'a missing document: RetrodError 404 with code and request id', e && { ...e });
  ok(await rejects(c.search({ vector: [1, 2] }), 422, 'dimensional'), 'a wrong dimension: 422');
  ok(await rejects(ro.upsert(docs.slice(0, 1)), 403, 'read-only key'), 'the read-only key cannot write');
  ok(await rejects(new Client({ url }).info(), 401, 'API key'), 'no key: 401');
  ok(await rejects(c.search('x', { filter: { n: { $gt: true } } }), 400, 'filter.n.$gt'), 'a bad filter: 400 naming it');
  let thrown = null;
  try { await c.search({}); } catch (err) { thrown = err; }
  ok(thrown instanceof TypeError, 'search with nothing to search by: TypeError, nothing sent', String(thrown));
});
done();
