// retrod_llamaindex.d.mts - TypeScript declarations of retrod_llamaindex.mjs
// (retrod in LlamaIndex.TS; @llamaindex/core 0.6). tests/compat/js_types.mjs
// compiles a use of each class with tsc --strict against @llamaindex/core,
// with lines that must not compile.
import { BaseRetriever } from '@llamaindex/core/retriever';
import type { BaseNodePostprocessor } from '@llamaindex/core/postprocessor';
import type { MessageContent } from '@llamaindex/core/llms';
import type { QueryBundle } from '@llamaindex/core/query-engine';
import type { NodeWithScore } from '@llamaindex/core/schema';
import type { Client, RerankerInput, RetrieverInput, RetrieverSearchOptions } from './retrod.mjs';

/** The server's search as a retriever: each hit a TextNode (id_ the chunk id, text the chunk or
 * its context with expand, metadata the document's plus doc_id, chunk_id and ordinal) with the
 * hit's score. */
export class RetrodRetriever extends BaseRetriever {
  client: Client;
  k: number;
  searchOptions: RetrieverSearchOptions;
  constructor(fields?: RetrieverInput);
  _retrieve(bundle: QueryBundle): Promise<NodeWithScore[]>;
}

/** The server's reranker (POST /v1/rerank) as a node postprocessor: the topN best nodes, scored
 * with the reranker's relevance. */
export class RetrodReranker implements BaseNodePostprocessor {
  client: Client;
  topN: number;
  constructor(fields?: RerankerInput);
  postprocessNodes(nodes: NodeWithScore[], query?: MessageContent): Promise<NodeWithScore[]>;
}
