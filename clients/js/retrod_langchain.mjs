// retrod_langchain.mjs - retrod's search as a LangChain.js retriever, so a
// chain gets the server's hybrid search, filters and context windows instead
// of a vector store's plain nearest neighbours. The server embeds the query
// itself: no embeddings object is needed. Needs @langchain/core (a peer of
// any LangChain.js app; tested with 1.4.0) and ./retrod.mjs beside it.
//
//   import { RetrodRetriever } from './retrod_langchain.mjs';
//   const retriever = new RetrodRetriever({ url: 'http://127.0.0.1:8080', apiKey: '...', k: 4,
//     searchOptions: { filter: { lang: 'en' }, expand: 1 } });
//   const docs = await retriever.invoke('How do I open a file for appending?');
//
// Each hit becomes a Document: pageContent is the chunk's text, or with
// searchOptions.expand its context (the chunks around it, merged); metadata
// is the document's own metadata plus doc_id, chunk_id, ordinal and score
// (those four win over keys of the same name); id is the chunk id.
// searchOptions are POST /v1/search's own (mode, alpha, filter,
// exclude_docs, expand, nprobe, ef_search); group_by is refused, since a
// retriever returns chunks. Errors reject with retrod.mjs's RetrodError.
import { BaseRetriever } from '@langchain/core/retrievers';
import { Document } from '@langchain/core/documents';
import { Client } from './retrod.mjs';

export class RetrodRetriever extends BaseRetriever {
  static lc_name() { return 'RetrodRetriever'; }

  lc_namespace = ['retrod', 'retrievers'];

  constructor({ client = null, url, apiKey = null, k = 4, searchOptions = {}, ...fields } = {}) {
    super(fields);
    if ('group_by' in searchOptions) throw new TypeError('RetrodRetriever: group_by is not supported (a retriever returns chunks)');
    if ('k' in searchOptions || 'query' in searchOptions) throw new TypeError('RetrodRetriever: give k as its own option; the query comes from invoke');
    this.client = client ?? new Client({ url, apiKey });
    this.k = k;
    this.searchOptions = searchOptions;
  }

  async _getRelevantDocuments(query) {
    const hits = await this.client.search(query, { ...this.searchOptions, k: this.k, with_text: true });
    return hits.map((h) => new Document({
      id: String(h.chunk_id),
      pageContent: h.context ? h.context.text : h.text,
      metadata: { ...h.metadata, doc_id: h.doc_id, chunk_id: h.chunk_id, ordinal: h.ordinal, score: h.score },
    }));
  }
}
