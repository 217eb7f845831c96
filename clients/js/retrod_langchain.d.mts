// retrod_langchain.d.mts - TypeScript declarations of retrod_langchain.mjs
// (retrod in LangChain.js; @langchain/core 1.x). tests/compat/js_types.mjs
// compiles a use of each class with tsc --strict against @langchain/core,
// with lines that must not compile.
import { BaseRetriever, type BaseRetrieverInput } from '@langchain/core/retrievers';
import { BaseDocumentCompressor } from '@langchain/core/retrievers/document_compressors';
import type { DocumentInterface } from '@langchain/core/documents';
import { Embeddings, type EmbeddingsInterface, type EmbeddingsParams } from '@langchain/core/embeddings';
import { VectorStore, type MaxMarginalRelevanceSearchOptions } from '@langchain/core/vectorstores';
import type { Client, Connection, Filter, RerankerInput, RetrieverInput, RetrieverSearchOptions } from './retrod.mjs';

export interface RetrodRetrieverInput extends RetrieverInput, BaseRetrieverInput {}

/** The server's search as a retriever: each hit a Document (pageContent the chunk, or its
 * context with expand; metadata the document's plus doc_id, chunk_id, ordinal and score). */
export class RetrodRetriever extends BaseRetriever {
  static lc_name(): string;
  lc_namespace: string[];
  client: Client;
  k: number;
  searchOptions: RetrieverSearchOptions;
  constructor(fields?: RetrodRetrieverInput);
  _getRelevantDocuments(query: string): Promise<DocumentInterface[]>;
}

/** The server's encoder: documents as stored chunks are embedded, queries as a search embeds them. */
export class RetrodEmbeddings extends Embeddings {
  client: Client;
  constructor(fields?: Connection & EmbeddingsParams);
  embedDocuments(texts: string[]): Promise<number[][]>;
  embedQuery(text: string): Promise<number[]>;
}

export interface RetrodVectorStoreConfig extends Connection {
  searchOptions?: RetrieverSearchOptions;
  /** fromTexts and fromDocuments: the documents' ids */
  ids?: string[];
}

/** The server as a vector store: documents upserted (the server chunks and embeds them),
 * searched by text (hybrid by default) or vector, deleted by ids or a metadata filter. */
export class RetrodVectorStore extends VectorStore {
  FilterType: Filter;
  client: Client;
  searchOptions: RetrieverSearchOptions;
  constructor(embeddings: EmbeddingsInterface | null, config?: RetrodVectorStoreConfig);
  _vectorstoreType(): string;
  addDocuments(documents: DocumentInterface[], options?: { ids?: string[] }): Promise<string[]>;
  /** refused: the server embeds documents itself */
  addVectors(vectors: number[][], documents: DocumentInterface[]): Promise<never>;
  similaritySearchVectorWithScore(query: number[], k: number, filter?: Filter): Promise<[DocumentInterface, number][]>;
  similaritySearchWithScore(query: string, k?: number, filter?: Filter): Promise<[DocumentInterface, number][]>;
  similaritySearch(query: string, k?: number, filter?: Filter): Promise<DocumentInterface[]>;
  maxMarginalRelevanceSearch(query: string, options: MaxMarginalRelevanceSearchOptions<Filter>): Promise<DocumentInterface[]>;
  delete(params: { ids: string[]; filter?: undefined } | { filter: Filter; ids?: undefined }): Promise<void>;
  static fromTexts(texts: string[], metadatas: object[] | object, embeddings: EmbeddingsInterface | null,
    config?: RetrodVectorStoreConfig): Promise<RetrodVectorStore>;
  static fromDocuments(docs: DocumentInterface[], embeddings: EmbeddingsInterface | null,
    config?: RetrodVectorStoreConfig): Promise<RetrodVectorStore>;
}

/** The server's reranker (POST /v1/rerank) as a document compressor: the topN best Documents,
 * each with metadata.relevance_score. */
export class RetrodReranker extends BaseDocumentCompressor {
  client: Client;
  topN: number;
  constructor(fields?: RerankerInput);
  compressDocuments(documents: DocumentInterface[], query: string): Promise<DocumentInterface[]>;
}
