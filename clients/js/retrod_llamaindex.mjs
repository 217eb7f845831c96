// retrod_llamaindex.mjs - retrod's search as a LlamaIndex.TS retriever, so a
// query engine (RetrieverQueryEngine) gets the server's hybrid search,
// filters and context windows over documents the server already holds; the
// server embeds the query itself. RetrodReranker: the server's cross-encoder
// (POST /v1/rerank) as a node postprocessor. Needs llamaindex's @llamaindex/core (any
// LlamaIndex.TS app has it; tested with llamaindex 0.12.1) and ./retrod.mjs
// beside it. TypeScript declarations: retrod_llamaindex.d.mts beside it.
//
//   import { RetrieverQueryEngine } from 'llamaindex';
//   import { RetrodRetriever } from './retrod_llamaindex.mjs';
//   const retriever = new RetrodRetriever({ url: 'http://127.0.0.1:8080', apiKey: '...', k: 4,
//     searchOptions: { filter: { lang: 'en' }, expand: 1 } });
//   const nodes = await retriever.retrieve('How do I open a file for appending?');
//   const answer = await new RetrieverQueryEngine(retriever).query({ query: '...' });
//
// Each hit becomes a NodeWithScore: a TextNode whose id_ is the chunk id,
// whose text is the chunk (its context with searchOptions.expand) and whose
// metadata is the document's own plus doc_id, chunk_id, ordinal (those win
// over keys of the same name), and the hit's score. searchOptions are POST
// /v1/search's own (mode, alpha, filter, exclude_docs, include_docs, expand, nprobe,
// ef_search); group_by is refused, since a retriever returns chunks. Errors
// reject with retrod.mjs's RetrodError.
import { BaseRetriever } from '@llamaindex/core/retriever';
import { MetadataMode, TextNode } from '@llamaindex/core/schema';
import { extractText } from '@llamaindex/core/utils';
import { Client } from './retrod.mjs';

export class RetrodRetriever extends BaseRetriever {
  constructor({ client = null, url, apiKey = null, k = 4, searchOptions = {} } = {}) {
    super();
    if ('group_by' in searchOptions) throw new TypeError('RetrodRetriever: group_by is not supported (a retriever returns chunks)');
    if ('k' in searchOptions || 'query' in searchOptions) throw new TypeError('RetrodRetriever: give k as its own option; the query comes from retrieve');
    this.client = client ?? new Client({ url, apiKey });
    this.k = k;
    this.searchOptions = searchOptions;
  }

  async _retrieve(bundle) {
    const hits = await this.client.search(extractText(bundle.query), { ...this.searchOptions, k: this.k, with_text: true });
    return hits.map((h) => ({
      node: new TextNode({
        id_: String(h.chunk_id),
        text: h.context ? h.context.text : h.text,
        metadata: { ...h.metadata, doc_id: h.doc_id, chunk_id: h.chunk_id, ordinal: h.ordinal },
      }),
      score: h.score,
    }));
  }
}

/**
 * The server's reranker as a LlamaIndex node postprocessor:
 * postprocessNodes(nodes, query) answers the topN best nodes for the query,
 * best first, each scored with the reranker's relevance. The server needs a
 * reranker (retro serve --reranker DIR).
 */
export class RetrodReranker {
  constructor({ client = null, url, apiKey = null, topN = 3 } = {}) {
    this.client = client ?? new Client({ url, apiKey });
    this.topN = topN;
  }

  async postprocessNodes(nodes, query) {
    if (query === undefined) throw new TypeError('RetrodReranker: a query is needed to rerank');
    if (!nodes.length) return [];
    const texts = nodes.map((n) => n.node.getContent(MetadataMode.NONE));
    const results = await this.client.rerank(extractText(query), texts, { topN: this.topN });
    return results.map(({ index, relevance_score: score }) => ({ node: nodes[index].node, score }));
  }
}
