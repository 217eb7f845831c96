// retrod.d.mts - TypeScript declarations of retrod.mjs, the JavaScript
// client, so that TypeScript code gets its methods, options and answers
// checked (the shapes are server/openapi.json's). tests/compat/js_types.mjs
// compiles a use of every method under --strict, with lines that must not
// compile, and checks that every method of the module is declared here.

/** A document's metadata: a JSON object. */
export type Metadata = { [key: string]: unknown };

/** A metadata filter (docs/API.md, "Metadata filters"): values, lists of
 * values, operators such as $gte, and $and / $or. */
export type Filter = { [key: string]: unknown };

/** A document to store. */
export interface DocumentInput {
  id: string;
  text: string;
  metadata?: Metadata | null;
}

/** One document's result of an upsert. */
export interface IngestItem {
  index?: number;
  line?: number;
  id?: string;
  status: 'ok' | 'unchanged' | 'error';
  doc_num?: number;
  chunks?: number;
  indexed?: boolean;
  error?: { code: string; message: string };
}

export interface IngestResult {
  documents: number;
  unchanged: number;
  chunks: number;
  errors: number;
  indexed: boolean;
  truncated: boolean;
  results: IngestItem[];
  error?: { code: string; message: string };
}

/** A stored document: get, getMany, patchMetadata. */
export interface DocumentView {
  id: string;
  doc_num: number;
  metadata?: Metadata;
  n_chunks: number;
  n_tokens?: number;
  chunk_ids: number[];
  /** absent from patchMetadata's answer and from getMany without texts */
  text?: string;
}

/** A document as a listing (documents()) gives it. */
export interface DocumentListed {
  id: string;
  doc_num: number;
  metadata?: Metadata;
  n_chunks: number;
  first_chunk: number;
  n_tokens?: number;
  text?: string;
}

/** A chunk a search found. */
export interface Hit {
  score: number;
  chunk_id: number;
  doc_id: string;
  doc_num: number;
  ordinal: number;
  metadata?: Metadata;
  text?: string;
  continuation?: string;
  dense_score?: number;
  dense_rank?: number | null;
  lexical_score?: number | null;
  lexical_rank?: number | null;
  exact_phrase?: boolean;
  retrieval_score?: number;
  retrieval_rank?: number;
  context?: { first_ordinal: number; last_ordinal: number; text: string };
  vector?: number[];
}

/** A document of a search with group_by: 'document', with its best hits. */
export interface Group {
  doc_id: string;
  doc_num: number;
  score: number;
  hits: Hit[];
}

/** What a search looks for: a text, a vector, or a stored chunk ("more like this"). */
export type SearchTarget = string | { vector: Iterable<number> } | { chunkId: number };

export interface SearchOptions {
  k?: number;
  mode?: 'dense' | 'lexical' | 'hybrid';
  alpha?: number;
  filter?: Filter;
  exclude_docs?: string[];
  include_docs?: string[];
  with_text?: boolean;
  with_vectors?: boolean;
  expand?: number;
  nprobe?: number;
  ef_search?: number;
  /** true, or how many of the best chunks the cross-encoder reorders */
  rerank?: boolean | number;
  group_by?: undefined;
}

export interface GroupedSearchOptions extends Omit<SearchOptions, 'group_by'> {
  group_by: 'document';
  group_size?: number;
}

/** The server an integration (retrod_langchain.mjs, retrod_llamaindex.mjs)
 * talks to: a Client, or its url and key. */
export interface Connection {
  client?: Client | null;
  url?: string;
  apiKey?: string | null;
}

/** A retriever's search options: the search's own, without k (the
 * retriever's own option), group_by (it returns chunks), with_text and
 * with_vectors (it sets them). */
export type RetrieverSearchOptions = Omit<SearchOptions, 'k' | 'group_by' | 'with_text' | 'with_vectors'>;

/** The options of both integrations' RetrodRetriever: its server, how many
 * chunks it returns (k) and its search options. */
export interface RetrieverInput extends Connection {
  k?: number;
  searchOptions?: RetrieverSearchOptions;
}

/** The options of both integrations' RetrodReranker: its server and how
 * many of the best it keeps. */
export interface RerankerInput extends Connection {
  topN?: number;
}

/** A completion's neighbours, chunk by chunk. */
export interface Neighbor {
  chunk_id: number;
  doc_id: string;
  doc_num: number;
  score: number;
  text: string;
  continuation: string;
}

export interface Retro {
  retrieval: boolean;
  seed?: number;
  chunks: { chunk: number; in_prompt: boolean; neighbors: Neighbor[] }[];
  timings?: { queue_s?: number; first_token_s?: number; retrieval_s?: number; total_s: number };
  prompt_scoring?: { tokens: number; bytes: number; bits: number; bpb: number | null };
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface CompletionChoice {
  index: number;
  text: string;
  finish_reason: string | null;
  logprobs?: {
    tokens: string[];
    token_logprobs: (number | null)[];
    top_logprobs: ({ [token: string]: number } | null)[];
    text_offset: number[];
  } | null;
}

export interface Completion {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: CompletionChoice[];
  usage?: Usage;
  retro?: Retro;
}

export interface CompletionOptions {
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  seed?: number;
  stop?: string | string[];
  logprobs?: number;
  echo?: boolean;
  retrieval?: boolean;
  k?: number;
  exclude_docs?: string[];
  include_docs?: string[];
  filter?: Filter;
  retrieval_mode?: 'dense' | 'lexical' | 'hybrid';
  model?: string;
}

/** GET /v1/info: models, dimensions, index type, counts (more fields than named here). */
export interface Info {
  version: string;
  encoder: { name: string; fingerprint: string; path: string; dim: number; [key: string]: unknown };
  decoder: { [key: string]: unknown } | null;
  reranker: { [key: string]: unknown } | null;
  index: { factory: string; vectors: number; [key: string]: unknown };
  documents: number;
  chunks: number;
  read_only: boolean;
  [key: string]: unknown;
}

/** A 4xx or 5xx answer. */
export class RetrodError extends Error {
  constructor(status: number, code: string, message: string, requestId?: string | null, retryAfter?: number | null);
  status: number;
  /** the server's code, e.g. "EDIM" */
  code: string;
  /** the server's message (message is "status code: message") */
  serverMessage: string;
  requestId: string | null;
  /** seconds, or null */
  retryAfter: number | null;
}

export interface ClientOptions {
  url?: string;
  apiKey?: string | null;
  timeoutMs?: number;
  fetch?: typeof globalThis.fetch;
}

export class Client {
  constructor(options?: ClientOptions);
  url: string;
  apiKey: string | null;
  timeoutMs: number;

  open(method: string, path: string, options?: { body?: unknown; ctype?: string; query?: { [key: string]: unknown } }): Promise<Response>;
  json(method: string, path: string, options?: { body?: unknown; ctype?: string; query?: { [key: string]: unknown } }): Promise<any>;

  health(): Promise<boolean>;
  ready(): Promise<boolean>;
  info(): Promise<Info>;

  upsert(documents: Iterable<DocumentInput>, options?: { force?: boolean }): Promise<IngestResult>;
  upsertNdjson(documents: Iterable<DocumentInput>, options?: { force?: boolean }): Promise<IngestResult>;
  get(id: string): Promise<DocumentView>;
  getMany(ids: Iterable<string>, options?: { withText?: boolean }): Promise<{ documents: DocumentView[]; not_found: string[] }>;
  patchMetadata(id: string, patch: Metadata): Promise<DocumentView>;
  updateMany(ids: Iterable<string>, patch: Metadata): Promise<{ updated: number; not_found: string[] }>;
  updateWhere(filter: Filter, patch: Metadata): Promise<{ updated: number }>;
  delete(id: string): Promise<{ id: string; deleted: boolean }>;
  deleteMany(ids: Iterable<string>): Promise<{ deleted: number; not_found: string[] }>;
  deleteWhere(filter: Filter): Promise<{ deleted: number }>;
  documents(options?: { filter?: Filter | null; pageSize?: number; withText?: boolean }): AsyncGenerator<DocumentListed, void, undefined>;

  search(what: SearchTarget, options: GroupedSearchOptions): Promise<Group[]>;
  search(what: SearchTarget, options?: SearchOptions): Promise<Hit[]>;
  searchBatch(queries: Iterable<string>, options: GroupedSearchOptions): Promise<Group[][]>;
  searchBatch(queries: Iterable<string>, options?: SearchOptions): Promise<Hit[][]>;
  embed(input: string, options?: { inputType?: 'query' | 'document' }): Promise<number[]>;
  embed(input: Iterable<string>, options?: { inputType?: 'query' | 'document' }): Promise<number[][]>;
  rerank(query: string, documents: Iterable<string>, options?: { topN?: number }): Promise<{ index: number; relevance_score: number }[]>;

  complete(prompt: string, options?: CompletionOptions): Promise<Completion>;
  stream(prompt: string, options?: CompletionOptions): AsyncGenerator<Completion, void, undefined>;

  backup(): Promise<{ backup: string; path: string; seconds: number; manifest: { [key: string]: unknown } }>;
}
