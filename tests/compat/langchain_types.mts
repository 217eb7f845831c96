// langchain_types.mts - compiled by js_types.mjs with tsc --strict
// against clients/js/retrod_langchain.d.mts and @langchain/core's own types,
// never run: each class used as documented must type-check, and each line
// marked with a ts-expect-error comment is a misuse that must not.
import { Document, type DocumentInterface } from '@langchain/core/documents';
import { Client } from './retrod.mjs';
import { RetrodEmbeddings, RetrodReranker, RetrodRetriever, RetrodVectorStore } from './retrod_langchain.mjs';

const retriever = new RetrodRetriever({ url: 'http://127.0.0.1:8080', apiKey: 'key', k: 4,
  searchOptions: { filter: { lang: 'en' }, expand: 1, mode: 'hybrid' }, tags: ['docs'] });
const docs: DocumentInterface[] = await retriever.invoke('How do I open a file for appending?');
const batched: DocumentInterface[][] = await retriever.batch(['a', 'b']);
const store = new RetrodVectorStore(null, { url: 'http://127.0.0.1:8080', searchOptions: { alpha: 0.5 } });
const ids: string[] = await store.addDocuments([new Document({ pageContent: 'x', metadata: { lang: 'en' } })], { ids: ['notes/1'] });
const scored: [DocumentInterface, number][] = await store.similaritySearchWithScore('open a file', 4, { lang: 'en' });
const plain: DocumentInterface[] = await store.similaritySearch('open a file', 2);
const byVector = await store.similaritySearchVectorWithScore([0.1, 0.2], 3, { year: { $gte: 2020 } });
const diverse: DocumentInterface[] = await store.maxMarginalRelevanceSearch('q', { k: 2, fetchK: 10, lambda: 0.5 });
const asRetriever: DocumentInterface[] = await store.asRetriever({ k: 2, searchType: 'mmr', searchKwargs: { fetchK: 10 } }).invoke('q');
await store.delete({ ids: ['notes/1'] });
await store.delete({ filter: { lang: 'en' } });
const made: RetrodVectorStore = await RetrodVectorStore.fromTexts(['a', 'b'], [{ n: 1 }, { n: 2 }], null, { url: 'http://x', ids: ['t1', 't2'] });
const embeddings = new RetrodEmbeddings({ client: new Client({ url: 'http://127.0.0.1:8080' }) });
const vector: number[] = await embeddings.embedQuery('q');
const vectors: number[][] = await embeddings.embedDocuments(['a', 'b']);
const reranked: DocumentInterface[] = await new RetrodReranker({ url: 'http://x', topN: 2 }).compressDocuments(docs, 'q');

// misuses: each must be a type error
// @ts-expect-error: group_by is refused, a retriever returns chunks
new RetrodRetriever({ searchOptions: { group_by: 'document' } });
// @ts-expect-error: k is the retriever's own field
new RetrodRetriever({ searchOptions: { k: 3 } });
// @ts-expect-error: no such mode
new RetrodVectorStore(null, { searchOptions: { mode: 'semantic' } });
// @ts-expect-error: a filter is a metadata filter object
await store.similaritySearch('q', 4, 'lang = en');
// @ts-expect-error: delete takes ids or a filter
await store.delete({});
// @ts-expect-error: the answers are Documents, not strings
const wrong: string[] = await retriever.invoke('q');

export { batched, ids, scored, plain, byVector, diverse, asRetriever, made, vector, vectors, reranked, wrong };
