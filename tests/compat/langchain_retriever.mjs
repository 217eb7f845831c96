// langchain_retriever.mjs - clients/js/retrod_langchain.mjs with the real
// @langchain/core against a running `retro serve`: documents upserted with
// the read-write key, then found through RetrodRetriever's invoke, batch and
// a chain with the read-only key, their Documents checked against what the
// server stores (text, context, metadata, ids), filters and errors passed
// through; RetrodVectorStore's add, search (by text, by vector, as a
// retriever) and delete, and RetrodEmbeddings. TAP on stdout; run by run.sh from its npm cache, where the client
// modules are copied beside it.
//   RETRO_URL=http://127.0.0.1:PORT/v1 RETRO_KEY=KEY RETRO_RW_KEY=KEY node langchain_retriever.mjs
import { RunnableLambda } from '@langchain/core/runnables';
import { Document } from '@langchain/core/documents';
import { Client, RetrodError } from './retrod.mjs';
import { maximalMarginalRelevance } from '@langchain/core/utils/math';
import { RetrodEmbeddings, RetrodReranker, RetrodRetriever, RetrodVectorStore } from './retrod_langchain.mjs';
import { attempt, done, ok } from './tap.mjs';

const url = process.env.RETRO_URL.replace(/\/v1$/, '');
const rw = new Client({ url, apiKey: process.env.RETRO_RW_KEY });
const ro = new Client({ url, apiKey: process.env.RETRO_KEY });
const words = ['harbour', 'lantern', 'orchard', 'quarry', 'meadow', 'glacier'];
const docs = words.map((w, i) => ({
  id: `lc/${i}`,
  text: Array.from({ length: 60 }, (_, j) => `${w} note ${j} about the ${w} and its ${words[(i + j) % 6]}.`).join(' '),
  metadata: { lang: i % 2 ? 'en' : 'de', n: i },
}));

await attempt('setup', async () => {
  const js = await rw.upsert(docs);
  ok(js.errors === 0 && js.documents === docs.length, 'documents upserted through the client', js);
});

// the text of a stored chunk: as a dense query it finds that very chunk first
const chunkOf = async (id, i) => ro.json('GET', `/v1/chunks/${(await ro.get(id)).chunk_ids[i]}`);

await attempt('invoke', async () => {
  const retriever = new RetrodRetriever({ url, apiKey: process.env.RETRO_KEY, k: 3, searchOptions: { mode: 'dense' } });
  const chunk = await chunkOf('lc/2', 1);
  const got = await retriever.invoke(chunk.text);
  ok(got.length === 3 && got.every((d) => d instanceof Document), 'invoke: k Documents', got.length);
  const first = got[0];
  ok(first.metadata.doc_id === 'lc/2' && first.metadata.chunk_id === chunk.chunk_id && first.id === String(chunk.chunk_id),
    'a stored chunk\'s text finds that chunk first, id = chunk id', [first.metadata, chunk.chunk_id]);
  ok(first.pageContent === chunk.text && first.pageContent.length > 0, 'pageContent is the stored chunk text', first.pageContent.slice(0, 80));
  ok(first.metadata.lang === 'de' && first.metadata.n === 2 && typeof first.metadata.score === 'number' && Number.isInteger(first.metadata.ordinal),
    'metadata: the document\'s own, with score and ordinal', first.metadata);
  const scores = got.map((d) => d.metadata.score);
  ok(scores.every((s, i) => i === 0 || s <= scores[i - 1]), 'Documents in score order', scores);
});

await attempt('options', async () => {
  const en = new RetrodRetriever({ client: ro, k: 5, searchOptions: { filter: { lang: 'en' } } });
  const got = await en.invoke('lantern note about the orchard');
  ok(got.length > 0 && got.every((d) => d.metadata.lang === 'en'), 'a filter passes through (hybrid, the server\'s default)', got.map((d) => d.metadata.doc_id));
  const wide = new RetrodRetriever({ client: ro, k: 1, searchOptions: { expand: 1, mode: 'dense' } });
  const middle = await chunkOf('lc/4', 2);
  const [d] = await wide.invoke(middle.text);
  const [before, after] = [await chunkOf('lc/4', 1), await chunkOf('lc/4', 3)];
  ok(d && d.metadata.chunk_id === middle.chunk_id && d.pageContent === before.text + middle.text + after.text,
    'with expand: 1, pageContent is the chunk with its neighbours on both sides', d && d.pageContent.length);
  const reranked = new RetrodRetriever({ client: ro, k: 3, searchOptions: { rerank: 10 } });
  const rd = await reranked.invoke('lantern note about the orchard');
  const rw = await ro.search('lantern note about the orchard', { k: 3, rerank: 10, with_text: false });
  ok(rd.length === 3 && rd.map((x) => x.metadata.chunk_id).join() === rw.map((h) => h.chunk_id).join() &&
     rd.every((x, i) => x.metadata.score === rw[i].score), 'rerank passes through: the reranked hits, relevance as score', { rd: rd.map((x) => x.metadata), rw });
  const q = 'lantern note about the orchard';
  const wideDocs = await new RetrodRetriever({ client: ro, k: 8 }).invoke(q);
  const want = await ro.rerank(q, wideDocs.map((x) => x.pageContent), { topN: 3 });
  const compressor = new RetrodReranker({ client: ro, topN: 3 });
  const reranked3 = new RetrodRetriever({ client: ro, k: 8 }).pipe(RunnableLambda.from((ds) => compressor.compressDocuments(ds, q)));
  const top = await reranked3.invoke(q);
  ok(top.length === 3 && top.map((x) => x.id).join() === want.map((r) => wideDocs[r.index].id).join() &&
     top.every((x, i) => x.metadata.relevance_score === want[i].relevance_score && x.metadata.doc_id === wideDocs[want[i].index].metadata.doc_id),
     'RetrodReranker: a retriever\'s Documents, the best 3 by /v1/rerank with relevance_score', { top: top.map((x) => x.metadata), want });
  ok((await compressor.compressDocuments([], q)).length === 0, 'RetrodReranker: no Documents, no request');
  const batch = await en.batch(['harbour', 'meadow']);
  ok(batch.length === 2 && batch.every((l) => l.length > 0), 'batch: one list per query', batch.map((l) => l.length));
  const chain = en.pipe(new RunnableLambda({ func: (ds) => ds.map((x) => x.pageContent).join('\n---\n') }));
  const text = await chain.invoke('glacier');
  ok(typeof text === 'string' && text.includes('glacier'), 'in a chain: the retriever piped into a formatter', text.slice(0, 100));
});

await attempt('vector store', async () => {
  const store = new RetrodVectorStore(null, { url, apiKey: process.env.RETRO_RW_KEY });
  const texts = ['The kettle whistles when the water boils over the stove. '.repeat(8),
    'A heron waits in the reeds for a fish to pass below the surface. '.repeat(8)];
  const ids = await store.addDocuments(texts.map((t, i) => new Document({ pageContent: t, metadata: { src: 'lc-store', i } })),
    { ids: ['vs/kettle', 'vs/heron'] });
  const kettle = await ro.get('vs/kettle');
  ok(ids.join() === 'vs/kettle,vs/heron' && kettle.text === texts[0] && kettle.metadata.src === 'lc-store',
    'addDocuments: each Document stored as a document with its id, text and metadata', kettle.metadata);
  const [auto] = await store.addDocuments([new Document({ pageContent: 'no id given here', metadata: {} })]);
  ok(/^[0-9a-f-]{36}$/.test(auto) && (await ro.get(auto)).text === 'no id given here', 'without an id: a new UUID, returned', auto);
  const first = await chunkOf('vs/heron', 0);
  const withScore = await store.similaritySearchWithScore(first.text, 2, { src: 'lc-store' });
  ok(withScore.length === 2 && withScore[0][0].metadata.doc_id === 'vs/heron' && withScore[0][1] === withScore[0][0].metadata.score
    && withScore.every(([d]) => d.metadata.src === 'lc-store'), 'similaritySearchWithScore: text search with a filter, [Document, score]',
  withScore.map(([d, s]) => [d.metadata.doc_id, s]));
  const vec = await new RetrodEmbeddings({ client: ro }).embedDocuments([first.text]);
  const byVec = await store.similaritySearchVectorWithScore(vec[0], 1, { src: 'lc-store' });
  ok(byVec.length === 1 && byVec[0][0].metadata.chunk_id === first.chunk_id && Math.abs(byVec[0][1] - 1) < 1e-4,
    'RetrodEmbeddings + similaritySearchVectorWithScore: a stored chunk\'s embedding finds it, score 1', byVec.map(([d, s]) => [d.metadata.chunk_id, s]));
  const q = await new RetrodEmbeddings({ client: ro }).embedQuery('kettle');
  ok(Array.isArray(q) && q.length === vec[0].length, 'embedQuery: one vector of the encoder\'s dimension', q.length);
  const asRetriever = await store.asRetriever({ k: 1, filter: { src: 'lc-store' } }).invoke(first.text);
  ok(asRetriever.length === 1 && asRetriever[0].metadata.doc_id === 'vs/heron', 'asRetriever: the base class\'s retriever searches through the server',
    asRetriever.map((d) => d.metadata.doc_id));
  // maximal marginal relevance: LangChain's own selection over the server's
  // fetchK hits and their stored vectors, against the query's embedding
  const mmr = await store.maxMarginalRelevanceSearch('kettle heron water', { k: 2, fetchK: 6, lambda: 0.3, filter: { src: 'lc-store' } });
  const pool = await ro.search('kettle heron water', { k: 6, filter: { src: 'lc-store' }, with_vectors: true });
  const qv = await new RetrodEmbeddings({ client: ro }).embedQuery('kettle heron water');
  const want = maximalMarginalRelevance(qv, pool.map((h) => h.vector), 0.3, 2).map((i) => pool[i].chunk_id);
  ok(mmr.length === 2 && JSON.stringify(mmr.map((d) => d.metadata.chunk_id)) === JSON.stringify(want) &&
     pool.every((h) => h.vector.length === qv.length), 'maxMarginalRelevanceSearch: k of the fetchK hits, picked by LangChain\'s MMR',
  { got: mmr.map((d) => d.metadata.chunk_id), want });
  // the two documents repeat one sentence each, so their chunks are near
  // duplicates: the plain best 2 come from one document, MMR's from both
  ok(new Set(pool.slice(0, 2).map((h) => h.doc_id)).size === 1 && new Set(mmr.map((d) => d.metadata.doc_id)).size === 2,
    'MMR trades a near duplicate for the other document', { plain: pool.slice(0, 2).map((h) => h.doc_id), mmr: mmr.map((d) => d.metadata.doc_id) });
  const viaRetriever = await store.asRetriever({ k: 2, searchType: 'mmr', searchKwargs: { fetchK: 6, lambda: 0.3 }, filter: { src: 'lc-store' } })
    .invoke('kettle heron water');
  ok(JSON.stringify(viaRetriever.map((d) => d.metadata.chunk_id)) === JSON.stringify(want), 'asRetriever({ searchType: "mmr" }) uses it',
    viaRetriever.map((d) => d.metadata.chunk_id));
  let err = null;
  try { await store.addVectors([[1, 2]], [new Document({ pageContent: 'x' })]); } catch (e) { err = e; }
  ok(err && /embeds documents itself/.test(err.message), 'addVectors is refused, saying why', err && err.message);
  err = null;
  try { await store.addDocuments([new Document({ pageContent: 'fine' }), new Document({ pageContent: 'too long an id' })], { ids: ['vs/ok', 'i'.repeat(600)] }); } catch (e) { err = e; }
  ok(err && /1 of 2 documents/.test(err.message) && /line 2/.test(err.message) && /id: must be 1 to 512 bytes/.test(err.message),
    'a document the server refuses: addDocuments throws naming it', err && err.message);
  await store.delete({ ids: ['vs/kettle', auto] });
  let gone = null;
  try { await ro.get('vs/kettle'); } catch (e) { gone = e; }
  ok(gone instanceof RetrodError && gone.status === 404, 'delete({ ids }) removes them', gone && gone.message);
  await store.delete({ filter: { src: 'lc-store' } });
  ok((await ro.search('heron', { k: 5, filter: { src: 'lc-store' } })).length === 0, 'delete({ filter }) removes what matches');
  const made = await RetrodVectorStore.fromTexts(['one more text about kettles'], { src: 'from-texts' }, null,
    { url, apiKey: process.env.RETRO_RW_KEY, ids: ['vs/from'] });
  ok(made instanceof RetrodVectorStore && (await ro.get('vs/from')).metadata.src === 'from-texts', 'fromTexts stores and returns a store');
});

await attempt('errors', async () => {
  let err = null;
  try { await new RetrodRetriever({ client: ro, searchOptions: { filter: { n: { $gt: true } } } }).invoke('x'); } catch (e) { err = e; }
  ok(err instanceof RetrodError && err.status === 400 && err.serverMessage.includes('filter.n.$gt'), 'a bad filter rejects with the server\'s 400', err && err.message);
  err = null;
  try { await new RetrodRetriever({ url, apiKey: 'wrong' }).invoke('x'); } catch (e) { err = e; }
  ok(err instanceof RetrodError && err.status === 401, 'a wrong key rejects with 401', err && err.message);
  let thrown = null;
  try { new RetrodRetriever({ client: ro, searchOptions: { group_by: 'document' } }); } catch (e) { thrown = e; }
  ok(thrown instanceof TypeError && /group_by/.test(thrown.message), 'group_by is refused at construction', thrown && thrown.message);
});

done();
