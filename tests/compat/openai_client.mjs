// openai_client.mjs - the official OpenAI Node client (npm `openai`, v4)
// against a running `retro serve`: lists the models, embeds (with the
// client's default base64 transfer and with floats), completes whole and
// streamed, and checks that errors come back as the client's APIError with
// our message. Prints TAP.
//   RETRO_URL=http://127.0.0.1:PORT/v1 RETRO_KEY=KEY node openai_client.mjs
import OpenAI from 'openai';
import { attempt, done, ok } from './tap.mjs';

const client = new OpenAI({ baseURL: process.env.RETRO_URL, apiKey: process.env.RETRO_KEY,
                            maxRetries: 0, timeout: 60000 });

let encoder, decoder;
await attempt('models.list', async () => {
  const models = [];
  for await (const m of client.models.list()) models.push(m);
  encoder = models.find((m) => m.kind === 'embeddings');
  decoder = models.find((m) => m.kind === 'completions');
  ok(encoder && decoder && models.every((m) => m.object === 'model'), 'models.list: encoder and decoder', models);
  const one = await client.models.retrieve(encoder.id);
  ok(one.id === encoder.id, 'models.retrieve', one);
});

const texts = ['retrieval augmented language model', 'a second, different input'];
await attempt('embeddings', async () => {
  const b64 = await client.embeddings.create({ model: encoder.id, input: texts }); // base64 by default
  const flt = await client.embeddings.create({ model: encoder.id, input: texts, encoding_format: 'float' });
  const dim = flt.data[0].embedding.length;
  ok(dim > 0 && b64.data.length === 2 && b64.data.every((d) => d.embedding.length === dim),
     'embeddings.create (client default: base64) gives vectors of the float size', { dim });
  const same = b64.data.every((d, i) => d.embedding.every((v, j) => v === Math.fround(flt.data[i].embedding[j])));
  ok(same, 'base64 and float embeddings are the same float32 values');
  ok(b64.model === encoder.id && b64.usage.total_tokens > 0, 'embeddings: model and usage', b64.usage);
});

await attempt('completions', async () => {
  const c = await client.completions.create({ model: decoder.id, prompt: 'retrieval augmented', max_tokens: 8,
                                              temperature: 0 });
  ok(c.object === 'text_completion' && c.choices.length === 1 && typeof c.choices[0].text === 'string'
     && c.usage.completion_tokens > 0, 'completions.create', c);
  const stream = await client.completions.create({ model: decoder.id, prompt: 'retrieval augmented',
                                                   max_tokens: 8, temperature: 0, stream: true,
                                                   stream_options: { include_usage: true } });
  let text = '', events = 0, usage = null;
  for await (const part of stream) {
    events++;
    text += part.choices[0]?.text ?? '';
    if (part.usage) usage = part.usage;
  }
  ok(events > 0 && text === c.choices[0].text, 'completions.create stream: same text as whole (temperature 0)',
     { text, whole: c.choices[0].text });
  ok(usage && usage.completion_tokens === c.usage.completion_tokens, 'stream_options.include_usage: usage streamed',
     usage);
  // the options LangChain's OpenAI LLM sends on every call, at their neutral values
  const lc = await client.completions.create({ model: decoder.id, prompt: ['retrieval augmented'], max_tokens: 8,
                                               temperature: 0, top_p: 1, frequency_penalty: 0, presence_penalty: 0,
                                               n: 1, best_of: 1, logit_bias: {} });
  ok(lc.choices[0].text === c.choices[0].text, 'neutral OpenAI options and a one-prompt array: same completion', lc);
});

await attempt('errors', async () => {
  // any model name is served by the one encoder (--strict-models: 404, clients.mjs)
  const other = await client.embeddings.create({ model: 'gpt-9', input: 'x' });
  ok(other.model === encoder.id && other.data.length === 1, 'another model name is served by the encoder, named in the answer',
     { model: other.model });
  try {
    await client.completions.create({ model: decoder.id, prompt: 'x', max_tokens: 0 });
    ok(false, 'max_tokens 0 is an error');
  } catch (e) {
    ok(e instanceof OpenAI.APIError && e.status === 422 && /max_tokens/.test(e.message),
       'bad max_tokens: APIError 422 naming it', { status: e.status, message: e.message });
  }
  const bad = new OpenAI({ baseURL: process.env.RETRO_URL, apiKey: 'wrong', maxRetries: 0 });
  try {
    await bad.models.list();
    ok(false, 'a wrong key is an error');
  } catch (e) {
    ok(e instanceof OpenAI.AuthenticationError, 'wrong key: AuthenticationError (401)', { status: e.status });
  }
});

done();
