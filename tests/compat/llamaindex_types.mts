// llamaindex_types.mts - compiled by js_types.mjs with tsc --strict
// against clients/js/retrod_llamaindex.d.mts and llamaindex's own types
// (their own declaration files unchecked: llamaindex 0.12.1's name a package
// it does not install), never run: each class used as documented must
// type-check, and each line marked with a ts-expect-error comment is a
// misuse that must not.
import { RetrieverQueryEngine } from 'llamaindex';
import type { NodeWithScore } from '@llamaindex/core/schema';
import { Client } from './retrod.mjs';
import { RetrodReranker, RetrodRetriever } from './retrod_llamaindex.mjs';

const retriever = new RetrodRetriever({ url: 'http://127.0.0.1:8080', apiKey: 'key', k: 3,
  searchOptions: { filter: { lang: 'en' }, expand: 1, mode: 'hybrid' } });
const nodes: NodeWithScore[] = await retriever.retrieve('How do I open a file?');
const bundled: NodeWithScore[] = await retriever.retrieve({ query: 'How do I open a file?' });
const reranker = new RetrodReranker({ client: new Client(), topN: 2 });
const best: NodeWithScore[] = await reranker.postprocessNodes(nodes, 'How do I open a file?');
const engine = new RetrieverQueryEngine(retriever, undefined, [reranker]);

// misuses: each must be a type error
// @ts-expect-error: group_by is refused, a retriever returns chunks
new RetrodRetriever({ searchOptions: { group_by: 'document' } });
// @ts-expect-error: k is the retriever's own option
new RetrodRetriever({ searchOptions: { k: 3 } });
// @ts-expect-error: the answers are nodes with scores, not strings
const wrong: string[] = await retriever.retrieve('q');
// @ts-expect-error: topN is a number
new RetrodReranker({ topN: '2' });

export { bundled, best, engine, wrong };
