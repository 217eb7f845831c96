// clients.mjs - the JavaScript LLM frameworks people use, each constructed
// with its defaults plus a base URL and an API key only (their default model
// names, their default request options), against a running `retro serve`
// (with a read-only key): LangChain (@langchain/openai: OpenAIEmbeddings,
// OpenAI, ChatOpenAI: invoke, stream, batch), the Vercel AI SDK (ai +
// @ai-sdk/openai-compatible: the default chat model, the completion model,
// embed/embedMany), LlamaIndex (llamaindex + @llamaindex/openai:
// OpenAIEmbedding, the OpenAI LLM's complete and chat, a VectorStoreIndex
// round trip) and the official `openai` client's chat.completions.create
// whole and streamed. TAP on stdout.
//   RETRO_URL=http://127.0.0.1:PORT/v1 RETRO_KEY=KEY node clients.mjs
import OpenAIClient from 'openai';
import { OpenAIEmbeddings, OpenAI as LCOpenAI, ChatOpenAI } from '@langchain/openai';
import { generateText, streamText, embed, embedMany } from 'ai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { OpenAI as LIOpenAI, OpenAIEmbedding } from '@llamaindex/openai';
import { Document, VectorStoreIndex, Settings } from 'llamaindex';

const baseURL = process.env.RETRO_URL;
const apiKey = process.env.RETRO_KEY;
let n = 0, failed = 0;
function ok(cond, name, detail) {
  n++;
  if (cond) console.log(`ok ${n} - ${name}`);
  else {
    failed++;
    console.log(`not ok ${n} - ${name}`);
    if (detail !== undefined) for (const l of JSON.stringify(detail).slice(0, 1500).split('\n')) console.log(`#   ${l}`);
  }
}
async function attempt(name, fn) {
  try { await fn(); } catch (e) {
    ok(false, `${name}: threw`, { message: String(e && e.message), status: e && e.status, cause: String(e && e.cause) });
  }
}
const isVec = (v) => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number' && Number.isFinite(x));

// the served names, to check that answers name the real model
const info = await (await fetch(baseURL.replace(/\/v1$/, '') + '/v1/info', { headers: { Authorization: `Bearer ${apiKey}` } })).json();
const encName = info.encoder.name, decName = info.decoder.name;

// ---- LangChain -------------------------------------------------------------
const lcOpts = { apiKey, configuration: { baseURL } };
await attempt('langchain OpenAIEmbeddings', async () => {
  const e = new OpenAIEmbeddings(lcOpts);
  const q = await e.embedQuery('retrieval augmented language model');
  const d = await e.embedDocuments(['first document', 'second document']);
  ok(isVec(q) && q.length === info.encoder.dim && d.length === 2 && d.every(isVec),
     `langchain OpenAIEmbeddings (default model ${e.model}): embedQuery, embedDocuments`, { q: q.length, d: d.length });
});
await attempt('langchain OpenAI', async () => {
  const llm = new LCOpenAI(lcOpts);
  const t = await llm.invoke('The Python standard library');
  ok(typeof t === 'string', `langchain OpenAI (default model ${llm.model}): invoke`, t);
  let s = '';
  for await (const piece of await llm.stream('The Python standard library')) s += piece;
  ok(typeof s === 'string', 'langchain OpenAI: stream', s);
  const b = await llm.batch(['import os', 'def f(x):']);
  ok(b.length === 2 && b.every((x) => typeof x === 'string'), 'langchain OpenAI: batch', b);
});
await attempt('langchain ChatOpenAI', async () => {
  const chat = new ChatOpenAI(lcOpts);
  const m = await chat.invoke([['system', 'You know Python.'], ['human', 'What does os.path.join do?']]);
  ok(typeof m.content === 'string' && m.response_metadata?.model_name === decName,
     `langchain ChatOpenAI (default model ${chat.model}): invoke, answered by ${decName}`, m);
  let s = '', chunks = 0;
  for await (const c of await chat.stream('What is a list?')) { s += c.content; chunks++; }
  ok(chunks > 0 && typeof s === 'string', `langchain ChatOpenAI: stream (${chunks} chunks)`, s);
  const b = await chat.batch(['What is a dict?', 'What is a set?']);
  ok(b.length === 2 && b.every((x) => typeof x.content === 'string'), 'langchain ChatOpenAI: batch', b);
});

// ---- Vercel AI SDK ---------------------------------------------------------
const provider = createOpenAICompatible({ name: 'retrod', baseURL, apiKey });
await attempt('ai-sdk chat model', async () => {
  const r = await generateText({ model: provider('gpt-4o-mini'), prompt: 'What does os.path.join do?' });
  ok(typeof r.text === 'string' && r.response?.modelId === decName && r.usage?.inputTokens > 0,
     'ai-sdk: generateText with the default (chat) model', { text: r.text, usage: r.usage, model: r.response?.modelId });
  const st = streamText({ model: provider('gpt-4o-mini'), prompt: 'What is a list?' });
  let s = '';
  for await (const piece of st.textStream) s += piece;
  ok(typeof s === 'string' && (await st.finishReason) !== undefined, 'ai-sdk: streamText with the chat model', s);
});
await attempt('ai-sdk completion model', async () => {
  const r = await generateText({ model: provider.completionModel('gpt-3.5-turbo-instruct'), prompt: 'import os' });
  ok(typeof r.text === 'string' && r.response?.modelId === decName, 'ai-sdk: generateText with the completion model',
     { text: r.text, model: r.response?.modelId });
});
await attempt('ai-sdk embeddings', async () => {
  const m = provider.embeddingModel('text-embedding-3-small');
  const one = await embed({ model: m, value: 'retrieval augmented language model' });
  const many = await embedMany({ model: m, values: ['first document', 'second document', 'third'] });
  ok(isVec(one.embedding) && one.embedding.length === info.encoder.dim && many.embeddings.length === 3 &&
     many.embeddings.every(isVec), 'ai-sdk: embed and embedMany', { one: one.embedding.length, many: many.embeddings.length });
});

// ---- LlamaIndex ------------------------------------------------------------
const liOpts = { apiKey, baseURL };
await attempt('llamaindex OpenAIEmbedding', async () => {
  const e = new OpenAIEmbedding(liOpts);
  const v = await e.getTextEmbedding('retrieval augmented language model');
  const q = await e.getQueryEmbedding({ type: 'text', text: 'what is retrieval?' });
  ok(isVec(v) && v.length === info.encoder.dim && isVec(q), `llamaindex OpenAIEmbedding (default model ${e.model})`,
     { v: v && v.length });
});
await attempt('llamaindex OpenAI', async () => {
  const llm = new LIOpenAI(liOpts);
  const c = await llm.complete({ prompt: 'The Python standard library' });
  ok(typeof c.text === 'string', `llamaindex OpenAI (default model ${llm.model}): complete`, c.text);
  const r = await llm.chat({ messages: [{ role: 'system', content: 'You know Python.' }, { role: 'user', content: 'What is a tuple?' }] });
  ok(r.message.role === 'assistant' && typeof r.message.content === 'string', 'llamaindex OpenAI: chat', r.message);
  let s = '', k = 0;
  for await (const d of await llm.chat({ messages: [{ role: 'user', content: 'What is a set?' }], stream: true })) { s += d.delta; k++; }
  ok(k > 0, `llamaindex OpenAI: chat streamed (${k} deltas)`, s);
});
await attempt('llamaindex VectorStoreIndex', async () => {
  Settings.llm = new LIOpenAI(liOpts);
  Settings.embedModel = new OpenAIEmbedding(liOpts);
  const texts = ['The os.path module joins, splits and normalises file system paths.',
                 'The json module encodes and decodes JSON documents.',
                 'The re module matches regular expressions against strings.'];
  const index = await VectorStoreIndex.fromDocuments(texts.map((t, i) => new Document({ text: t, id_: `d${i}` })));
  const nodes = await index.asRetriever({ similarityTopK: 1 }).retrieve({ query: texts[1] });
  ok(nodes.length === 1 && nodes[0].node.getContent().includes('json module'),
     'llamaindex VectorStoreIndex: a document retrieves itself through retrod embeddings', nodes.map((x) => x.node.getContent()));
  const answer = await index.asQueryEngine().query({ query: 'Which module encodes JSON?' });
  ok(typeof answer.toString() === 'string' && answer.sourceNodes?.length > 0,
     'llamaindex VectorStoreIndex: query engine answers through retrod chat', answer.toString());
});

// ---- the official client's chat ----------------------------------------------
const client = new OpenAIClient({ apiKey, baseURL });
await attempt('openai chat.completions', async () => {
  const r = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'What is a list?' }], max_tokens: 12 });
  ok(r.object === 'chat.completion' && r.model === decName && r.choices[0].message.role === 'assistant' &&
     typeof r.choices[0].message.content === 'string' && r.usage.completion_tokens <= 12 && r.retro,
     'openai chat.completions.create (whole)', r);
  const stream = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'What is a list?' }],
                                                        max_tokens: 12, stream: true, stream_options: { include_usage: true } });
  let s = '', finish = null, usage = null;
  for await (const c of stream) {
    if (c.choices?.[0]?.delta?.content) s += c.choices[0].delta.content;
    if (c.choices?.[0]?.finish_reason) finish = c.choices[0].finish_reason;
    if (c.usage) usage = c.usage;
  }
  ok(finish && usage && usage.completion_tokens <= 12, 'openai chat.completions.create (stream)', { s, finish, usage });
});

// ---- --strict-models (a second server) ----------------------------------------
if (process.env.RETRO_STRICT_URL) {
  const strict = new OpenAIClient({ apiKey, baseURL: process.env.RETRO_STRICT_URL });
  for (const [what, call, served] of [
    ['embeddings', () => strict.embeddings.create({ model: 'text-embedding-ada-002', input: 'x' }), encName],
    ['chat', () => strict.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }), decName]]) {
    try {
      await call();
      ok(false, `--strict-models: ${what} with a foreign model name is an error`);
    } catch (e) {
      ok(e instanceof OpenAIClient.APIError && e.status === 404 && e.message.includes(served),
         `--strict-models: ${what} -> APIError 404 naming the served model`, { status: e.status, message: e.message });
    }
  }
}
console.log(`1..${n}`);
process.exit(failed ? 1 : 0);
