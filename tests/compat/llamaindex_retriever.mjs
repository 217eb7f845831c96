// llamaindex_retriever.mjs - clients/js/retrod_llamaindex.mjs's
// RetrodRetriever with the real llamaindex 0.12.1 against a running `retro
// serve`: documents upserted with the read-write key, then retrieved with
// the read-only key, the nodes checked against what the server stores (text,
// context, metadata, ids, scores), filters and errors passed through, and a
// RetrieverQueryEngine answering through the server's own chat completions
// (@llamaindex/openai pointed at it). TAP on stdout; run by run.sh from its
// npm cache, where the client modules are copied beside it.
//   RETRO_URL=http://127.0.0.1:PORT/v1 RETRO_KEY=KEY RETRO_RW_KEY=KEY node llamaindex_retriever.mjs
import { RetrieverQueryEngine, Settings, TextNode } from 'llamaindex';
import { OpenAI as LIOpenAI } from '@llamaindex/openai';
import { Client, RetrodError } from './retrod.mjs';
import { RetrodReranker, RetrodRetriever } from './retrod_llamaindex.mjs';
import { attempt, done, ok } from './tap.mjs';

const base = process.env.RETRO_URL.replace(/\/v1$/, '');
const rw = new Client({ url: base, apiKey: process.env.RETRO_RW_KEY });
const ro = new Client({ url: base, apiKey: process.env.RETRO_KEY });
const words = ['beacon', 'willow', 'granite', 'harvest', 'comet'];
const docs = words.map((w, i) => ({
  id: `li/${i}`,
  text: Array.from({ length: 50 }, (_, j) => `${w} line ${j} tells of the ${w} and the ${words[(i + j) % 5]}.`).join(' '),
  metadata: { shelf: i % 2 ? 'odd' : 'even', n: i },
}));
// the text of a stored chunk: as a dense query it finds that very chunk first
const chunkOf = async (id, i) => ro.json('GET', `/v1/chunks/${(await ro.get(id)).chunk_ids[i]}`);

await attempt('setup', async () => {
  const js = await rw.upsert(docs);
  ok(js.errors === 0 && js.documents === docs.length, 'documents upserted through the client', js);
});

await attempt('retrieve', async () => {
  const retriever = new RetrodRetriever({ url: base, apiKey: process.env.RETRO_KEY, k: 3, searchOptions: { mode: 'dense' } });
  const chunk = await chunkOf('li/3', 1);
  const got = await retriever.retrieve(chunk.text);
  ok(got.length === 3 && got.every((x) => x.node instanceof TextNode && typeof x.score === 'number'), 'retrieve: k NodeWithScore of TextNodes', got.length);
  const [first] = got;
  ok(first.node.id_ === String(chunk.chunk_id) && first.node.getContent() === chunk.text && first.node.metadata.doc_id === 'li/3',
    'a stored chunk\'s text finds that chunk first: id_, text, doc_id', first.node.metadata);
  ok(first.node.metadata.shelf === 'odd' && first.node.metadata.n === 3 && Number.isInteger(first.node.metadata.ordinal),
    'metadata: the document\'s own, with the ordinal', first.node.metadata);
  const byBundle = await retriever.retrieve({ query: chunk.text });
  ok(byBundle[0].node.id_ === first.node.id_, 'a QueryBundle is read as its text');
  const scores = got.map((x) => x.score);
  ok(scores.every((s, i) => i === 0 || s <= scores[i - 1]), 'nodes in score order', scores);
});

await attempt('options', async () => {
  const odd = new RetrodRetriever({ client: ro, k: 5, searchOptions: { filter: { shelf: 'odd' } } });
  const got = await odd.retrieve('willow line about the comet');
  ok(got.length > 0 && got.every((x) => x.node.metadata.shelf === 'odd'), 'a filter passes through', got.map((x) => x.node.metadata.doc_id));
  const wide = new RetrodRetriever({ client: ro, k: 1, searchOptions: { mode: 'dense', expand: 1 } });
  const middle = await chunkOf('li/2', 2);
  const [x] = await wide.retrieve(middle.text);
  const [before, after] = [await chunkOf('li/2', 1), await chunkOf('li/2', 3)];
  ok(x && x.node.getContent() === before.text + middle.text + after.text, 'with expand: 1, the node holds the chunk with its neighbours', x && x.node.getContent().length);
});

await attempt('query engine', async () => {
  Settings.llm = new LIOpenAI({ apiKey: process.env.RETRO_KEY, baseURL: process.env.RETRO_URL });
  const engine = new RetrieverQueryEngine(new RetrodRetriever({ client: ro, k: 2 }));
  const answer = await engine.query({ query: 'What does the granite line tell?' });
  ok(typeof answer.toString() === 'string' && answer.sourceNodes?.length === 2 &&
     answer.sourceNodes.every((n) => n.node.metadata.doc_id.startsWith('li/')),
  'RetrieverQueryEngine: an answer through the server\'s chat, with the retrieved chunks as its sources', answer.sourceNodes?.map((n) => n.node.metadata.doc_id));
});

await attempt('reranker', async () => {
  const q = 'What does the granite line tell?';
  const nodes = await new RetrodRetriever({ client: ro, k: 6 }).retrieve(q);
  const want = await ro.rerank(q, nodes.map((n) => n.node.getContent()), { topN: 3 });
  const got = await new RetrodReranker({ client: ro, topN: 3 }).postprocessNodes(nodes, q);
  ok(got.length === 3 && got.map((n) => n.node.id_).join() === want.map((r) => nodes[r.index].node.id_).join() &&
     got.every((n, i) => n.score === want[i].relevance_score), 'RetrodReranker: the best 3 nodes by /v1/rerank, scored with its relevance', { got: got.map((n) => [n.node.id_, n.score]), want });
  const engine = new RetrieverQueryEngine(new RetrodRetriever({ client: ro, k: 6 }), undefined, [new RetrodReranker({ client: ro, topN: 2 })]);
  const answer = await engine.query({ query: q });
  ok(answer.sourceNodes?.length === 2 && answer.sourceNodes.map((n) => n.node.id_).join() === got.slice(0, 2).map((n) => n.node.id_).join(),
     'RetrieverQueryEngine with RetrodReranker as its postprocessor: the reranked 2 as sources', answer.sourceNodes?.map((n) => n.node.id_));
});

await attempt('errors', async () => {
  let err = null;
  try { await new RetrodRetriever({ client: ro, searchOptions: { filter: { n: { $gt: true } } } }).retrieve('x'); } catch (e) { err = e; }
  ok(err instanceof RetrodError && err.status === 400 && err.serverMessage.includes('filter.n.$gt'), 'a bad filter rejects with the server\'s 400', err && err.message);
  let thrown = null;
  try { new RetrodRetriever({ client: ro, searchOptions: { group_by: 'document' } }); } catch (e) { thrown = e; }
  ok(thrown instanceof TypeError && /group_by/.test(thrown.message), 'group_by is refused at construction', thrown && thrown.message);
});

done();
