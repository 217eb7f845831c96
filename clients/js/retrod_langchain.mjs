// retrod_langchain.mjs - retrod in LangChain.js: RetrodRetriever (the
// server's search as a retriever, so a chain gets the hybrid search, filters
// and context windows), RetrodVectorStore (documents added, searched and
// deleted through the server, which chunks and embeds them itself) and
// RetrodEmbeddings (the server's encoder) and RetrodReranker (the
// server's cross-encoder as a document compressor: any retriever's Documents
// reordered by POST /v1/rerank, for a ContextualCompressionRetriever). Needs @langchain/core (a peer of
// any LangChain.js app; tested with 1.4.0) and ./retrod.mjs beside it.
// TypeScript declarations: retrod_langchain.d.mts beside it.
//
//   import { RetrodRetriever, RetrodVectorStore } from './retrod_langchain.mjs';
//   const retriever = new RetrodRetriever({ url: 'http://127.0.0.1:8080', apiKey: '...', k: 4,
//     searchOptions: { filter: { lang: 'en' }, expand: 1 } });
//   const docs = await retriever.invoke('How do I open a file for appending?');
//   const store = new RetrodVectorStore(null, { url: 'http://127.0.0.1:8080', apiKey: '...' });
//   await store.addDocuments([new Document({ pageContent: '...', metadata: { lang: 'en' } })], { ids: ['notes/1'] });
//   const hits = await store.similaritySearchWithScore('open a file', 4, { lang: 'en' });
//
// Each hit becomes a Document: pageContent is the chunk's text, or with
// searchOptions.expand its context (the chunks around it, merged); metadata
// is the document's own metadata plus doc_id, chunk_id, ordinal and score
// (those four win over keys of the same name); id is the chunk id.
// searchOptions are POST /v1/search's own (mode, alpha, filter,
// exclude_docs, include_docs, expand, nprobe, ef_search); group_by is
// refused, since a retriever returns chunks. Errors reject with retrod.mjs's
// RetrodError.
import { BaseRetriever } from '@langchain/core/retrievers';
import { BaseDocumentCompressor } from '@langchain/core/retrievers/document_compressors';
import { Document } from '@langchain/core/documents';
import { Embeddings } from '@langchain/core/embeddings';
import { maximalMarginalRelevance } from '@langchain/core/utils/math';
import { VectorStore } from '@langchain/core/vectorstores';
import { Client } from './retrod.mjs';

/** A search hit as a LangChain Document. */
function documentOf(h) {
  return new Document({
    id: String(h.chunk_id),
    pageContent: h.context ? h.context.text : h.text,
    metadata: { ...h.metadata, doc_id: h.doc_id, chunk_id: h.chunk_id, ordinal: h.ordinal, score: h.score },
  });
}

function checkedOptions(who, searchOptions) {
  if ('group_by' in searchOptions) throw new TypeError(`${who}: group_by is not supported (hits are chunks)`);
  if ('k' in searchOptions || 'query' in searchOptions) throw new TypeError(`${who}: give k as its own argument; the query comes from the call`);
  return searchOptions;
}

export class RetrodRetriever extends BaseRetriever {
  static lc_name() { return 'RetrodRetriever'; }

  lc_namespace = ['retrod', 'retrievers'];

  constructor({ client = null, url, apiKey = null, k = 4, searchOptions = {}, ...fields } = {}) {
    super(fields);
    this.client = client ?? new Client({ url, apiKey });
    this.k = k;
    this.searchOptions = checkedOptions('RetrodRetriever', searchOptions);
  }

  async _getRelevantDocuments(query) {
    const hits = await this.client.search(query, { ...this.searchOptions, k: this.k, with_text: true });
    return hits.map(documentOf);
  }
}

/** The server's encoder: documents embedded as stored chunks are, queries as a search embeds them. */
export class RetrodEmbeddings extends Embeddings {
  constructor({ client = null, url, apiKey = null, ...params } = {}) {
    super(params);
    this.client = client ?? new Client({ url, apiKey });
  }

  embedDocuments(texts) { return this.client.embed(texts); }

  embedQuery(text) { return this.client.embed(text, { inputType: 'query' }); }
}

/**
 * The server as a LangChain vector store. addDocuments upserts each Document
 * as one retrod document (its id: options.ids[i], else the Document's id,
 * else a new UUID), which the server chunks and embeds; similaritySearch and
 * similaritySearchWithScore send the text, so they get the server's default
 * mode (hybrid) and searchOptions; a filter is a retrod metadata filter;
 * delete takes { ids } or { filter }. addVectors is refused: the server
 * embeds documents itself. embeddings may be null (the server's encoder,
 * RetrodEmbeddings, is used for similaritySearchVectorWithScore's callers).
 */
export class RetrodVectorStore extends VectorStore {
  _vectorstoreType() { return 'retrod'; }

  constructor(embeddings, { client = null, url, apiKey = null, searchOptions = {} } = {}) {
    const c = client ?? new Client({ url, apiKey });
    super(embeddings ?? new RetrodEmbeddings({ client: c }), {});
    this.client = c;
    this.searchOptions = checkedOptions('RetrodVectorStore', searchOptions);
  }

  async addDocuments(documents, options = {}) {
    const ids = documents.map((d, i) => options.ids?.[i] ?? d.id ?? globalThis.crypto.randomUUID());
    const js = await this.client.upsertNdjson(documents.map((d, i) => ({ id: ids[i], text: d.pageContent, metadata: d.metadata ?? {} })));
    if (js.errors) {
      const bad = js.results.find((r) => r.status === 'error');
      throw new Error(`RetrodVectorStore: ${js.errors} of ${documents.length} documents not stored` +
        (bad ? ` (the first, ${bad.id !== undefined ? JSON.stringify(bad.id) : 'line ' + bad.line}: ${bad.error.message})` : ''));
    }
    return ids;
  }

  async addVectors() {
    throw new Error('RetrodVectorStore: the server embeds documents itself; use addDocuments (precomputed vectors go in with `retro index --vectors`)');
  }

  async similaritySearchVectorWithScore(query, k, filter) {
    const { alpha, mode, rerank, ...options } = this.searchOptions; // a search by vector is dense, with no text to rerank by
    const hits = await this.client.search({ vector: query }, { ...options, k, filter, with_text: true });
    return hits.map((h) => [documentOf(h), h.score]);
  }

  async similaritySearchWithScore(query, k = 4, filter = undefined) {
    const hits = await this.client.search(query, { ...this.searchOptions, k, filter, with_text: true });
    return hits.map((h) => [documentOf(h), h.score]);
  }

  async similaritySearch(query, k = 4, filter = undefined) {
    return (await this.similaritySearchWithScore(query, k, filter)).map(([d]) => d);
  }

  /**
   * Maximal marginal relevance (asRetriever({ searchType: 'mmr' })): the
   * server's best fetchK hits for the text, with their stored vectors
   * (with_vectors), and k of them picked by LangChain's own
   * maximalMarginalRelevance against the query embedded by the server's
   * encoder, so that relevance and diversity are measured in one space.
   */
  async maxMarginalRelevanceSearch(query, { k = 4, fetchK = 20, lambda = 0.5, filter } = {}) {
    const [qv, hits] = await Promise.all([
      this.client.embed(query, { inputType: 'query' }),
      this.client.search(query, { ...this.searchOptions, k: Math.max(k, fetchK), filter, with_text: true, with_vectors: true }),
    ]);
    if (!hits.length) return [];
    return maximalMarginalRelevance(qv, hits.map((h) => h.vector), lambda, k).map((i) => documentOf(hits[i]));
  }

  async delete({ ids, filter } = {}) {
    if (ids && filter) throw new TypeError('RetrodVectorStore.delete: give ids or filter, not both');
    if (ids) await this.client.deleteMany(ids);
    else if (filter) await this.client.deleteWhere(filter);
    else throw new TypeError('RetrodVectorStore.delete: give { ids } or { filter }');
  }

  static async fromTexts(texts, metadatas, embeddings, config) {
    const metas = Array.isArray(metadatas) ? metadatas : texts.map(() => metadatas);
    return RetrodVectorStore.fromDocuments(texts.map((t, i) => new Document({ pageContent: t, metadata: metas[i] ?? {} })), embeddings, config);
  }

  static async fromDocuments(docs, embeddings, config) {
    const store = new RetrodVectorStore(embeddings, config);
    await store.addDocuments(docs, { ids: config?.ids });
    return store;
  }
}

/**
 * The server's reranker (POST /v1/rerank) as a LangChain document
 * compressor: compressDocuments(documents, query) answers the topN best
 * Documents for the query, best first, each with metadata.relevance_score.
 * The server needs a reranker (retro serve --reranker DIR).
 */
export class RetrodReranker extends BaseDocumentCompressor {
  constructor({ client = null, url, apiKey = null, topN = 3 } = {}) {
    super();
    this.client = client ?? new Client({ url, apiKey });
    this.topN = topN;
  }

  async compressDocuments(documents, query) {
    if (!documents.length) return [];
    const results = await this.client.rerank(query, documents.map((d) => d.pageContent), { topN: this.topN });
    return results.map(({ index, relevance_score: score }) => {
      const d = documents[index];
      return new Document({ id: d.id, pageContent: d.pageContent, metadata: { ...d.metadata, relevance_score: score } });
    });
  }
}
